//! The message bus port, with RabbitMQ's semantics: topic exchanges, durable queues, manual
//! acks, delayed retries and a dead-letter queue per exchange.
//!
//! - [`topology`]: the default exchanges, queues and bindings; topic matching.
//! - [`sqlite`]: the embedded adapter.
//! - [`rabbitmq`]: the RabbitMQ adapter.
//! - [`conformance`]: the tests every adapter must pass.

pub mod conformance;
pub mod rabbitmq;
pub mod sqlite;
pub mod topology;

use std::collections::BTreeMap;
use std::time::Duration;

use async_trait::async_trait;

pub use topology::QueueSpec;

/// Header names carried with messages and dead letters.
pub mod headers {
    pub const CORRELATION_ID: &str = "x-correlation-id";
    pub const TRACEPARENT: &str = "traceparent";
    /// Set on events the event store re-emits.
    pub const REPLAY: &str = "x-sagaflow-replay";
    pub const QUEUE: &str = "x-queue";
    pub const ATTEMPTS: &str = "x-attempts";
    pub const LAST_ERROR: &str = "x-last-error";
    pub const DEAD_LETTERED_AT: &str = "x-dead-lettered-at";
}

/// A message as published.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// The event id.
    pub message_id: String,
    pub exchange: String,
    pub routing_key: String,
    /// Messages with the same key are delivered in publication order (the aggregate id).
    pub ordering_key: Option<String>,
    pub headers: BTreeMap<String, String>,
    pub body: String,
}

/// A message handed to a consumer; it stays in the queue until acked, retried or
/// dead-lettered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    pub tag: u64,
    pub queue: String,
    pub message: Message,
    /// Failed attempts so far.
    pub attempts: u32,
}

/// A message moved to `<exchange>.dlq`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetter {
    pub id: u64,
    /// The queue it came from.
    pub queue: String,
    pub message: Message,
    pub attempts: u32,
    pub last_error: String,
    /// Milliseconds since the epoch.
    pub dead_at: i64,
}

#[derive(Debug, thiserror::Error)]
pub enum BusError {
    #[error("message bus unavailable: {0}")]
    Unavailable(String),
    #[error("no such queue {0}")]
    NoSuchQueue(String),
}

#[async_trait]
pub trait MessageBus: Send + Sync + 'static {
    /// Declares exchanges, queues and bindings; declaring again changes nothing.
    async fn declare(&self, queues: &[QueueSpec]) -> Result<(), BusError>;

    /// Routes the message to every queue bound to its exchange whose pattern matches its routing
    /// key. When it returns, the message is durable (a publisher confirm).
    async fn publish(&self, message: &Message) -> Result<(), BusError>;

    /// Publishes every message, in order; when it returns, every one is durable. Adapters do it
    /// as one write (one transaction, or confirms awaited together). A failure may leave some
    /// published: the caller publishes them again, and consumers are idempotent.
    async fn publish_all(&self, messages: &[Message]) -> Result<(), BusError> {
        for m in messages {
            self.publish(m).await?;
        }
        Ok(())
    }

    /// Up to `max` messages ready on `queue`, waiting up to `wait` for the first. A message is not
    /// handed out again until its delivery is settled or the consumer dies. A broker that pushes
    /// deliveries may take a moment to hand over a message just published: wait for it.
    async fn receive(
        &self,
        queue: &str,
        max: usize,
        wait: Duration,
    ) -> Result<Vec<Delivery>, BusError>;

    /// Removes a handled message.
    async fn ack(&self, delivery: &Delivery) -> Result<(), BusError>;

    /// Removes handled messages, as one write where the adapter can.
    async fn ack_all(&self, deliveries: &[Delivery]) -> Result<(), BusError> {
        for d in deliveries {
            self.ack(d).await?;
        }
        Ok(())
    }

    /// Hands the message out again after `delay`, counting one more failed attempt.
    async fn retry(
        &self,
        delivery: &Delivery,
        delay: Duration,
        error: &str,
    ) -> Result<(), BusError>;

    /// Moves the message to its exchange's dead-letter queue, with the queue, the attempts and
    /// the error in its headers.
    async fn dead_letter(&self, delivery: &Delivery, error: &str) -> Result<(), BusError>;

    /// The dead letters of `exchange`, oldest first.
    async fn dead_letters(&self, exchange: &str, limit: usize)
    -> Result<Vec<DeadLetter>, BusError>;

    /// How many dead letters `exchange` holds (the `dlq_depth` gauge), without reading them.
    async fn dead_letter_count(&self, exchange: &str) -> Result<u64, BusError> {
        Ok(self.dead_letters(exchange, usize::MAX).await?.len() as u64)
    }

    /// Sends every dead letter of `exchange` back to the queue it came from, with its attempts
    /// reset; returns how many.
    async fn redrive(&self, exchange: &str) -> Result<usize, BusError>;

    /// Messages waiting in `queue` (ready, delayed or in flight).
    async fn depth(&self, queue: &str) -> Result<u64, BusError>;

    async fn ping(&self) -> Result<(), BusError>;
}
