//! The consumer loop every service shares: parse, hand to the service's handler, then settle.
//!
//! - A poison message (not JSON, not a valid envelope) is dead-lettered at once.
//! - A business error (an unknown aggregate, a refused transition) is dead-lettered at once: it
//!   would fail the same way again.
//! - A transient failure is retried after `base`, `2·base`, `4·base` … (capped), and
//!   dead-lettered with its last error after `max_attempts` attempts.
//! - A handled message is acked only after the handler committed its effect; handlers are
//!   idempotent by event id (see [`inbox`](crate::inbox)), so a redelivery changes nothing.

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use sagaflow_domain::Envelope;
use tracing::Instrument;

use crate::bus::{Delivery, MessageBus, headers};
use crate::metrics::Metrics;
use crate::streams::{Entry, GroupStart, StreamLog};

/// The longest pause between two attempts to reach a backend that went away: short enough
/// that a service resumes within seconds of the backend's return.
pub const RECONNECT_CAP: Duration = Duration::from_secs(3);

/// When to try a failed message again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    pub base: Duration,
    pub cap: Duration,
    pub max_attempts: u32,
}

impl Default for RetryPolicy {
    /// 1 s, 2 s, 4 s, 8 s … capped at 60 s, 5 attempts.
    fn default() -> Self {
        Self {
            base: Duration::from_secs(1),
            cap: Duration::from_secs(60),
            max_attempts: 5,
        }
    }
}

impl RetryPolicy {
    /// The delay before attempt `failed + 1`, after `failed` failures (1-based).
    pub fn delay(&self, failed: u32) -> Duration {
        let factor = 1u32
            .checked_shl(failed.saturating_sub(1))
            .unwrap_or(u32::MAX);
        self.base.saturating_mul(factor).min(self.cap)
    }
}

/// Why a handler did not apply an event.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Failure {
    /// Worth trying again: a backend is away. Retried; on a queue it counts as an attempt (SPEC
    /// §6, then the DLQ, from which it can be redriven), on a stream never (a stream's DLQ has
    /// no redrive: an outage must not empty the stream into it).
    #[error("transient: {0}")]
    Transient(String),
    /// An earlier version of the aggregate is not applied yet: retried, then dead-lettered
    /// after the last attempt, on queues and streams alike.
    #[error("out of order: {0}")]
    OutOfOrder(String),
    /// Will fail the same way every time.
    #[error("business: {0}")]
    Business(String),
}

/// A message as the handler sees it.
#[derive(Debug, Clone)]
pub struct Incoming {
    pub envelope: Envelope,
    /// Re-emitted by the event store's replay.
    pub replay: bool,
    /// The `traceparent` of the span handling it: the events and mails it causes carry it,
    /// so their handling continues the trace.
    pub traceparent: Option<String>,
}

impl Incoming {
    /// The envelope with the handling span's trace context, for a handler that records events
    /// or work caused by it (they continue the trace). What a handler keeps of the envelope
    /// itself is its published form ([`Envelope::to_json`]), which has no trace context.
    pub fn traced(&self) -> Envelope {
        let mut event = self.envelope.clone();
        if self.traceparent.is_some() {
            event.metadata.traceparent = self.traceparent.clone();
        }
        event
    }
}

/// What became of an event, on its span (a dead letter is an error there).
fn settled(span: &tracing::Span, outcome: Outcome) {
    span.record("outcome", outcome.as_str());
    if outcome == Outcome::DeadLettered {
        span.record("otel.status_code", "ERROR");
    }
}

/// The span the handler runs in: the event's own when the batch holds one, else one for the
/// logs only (each event has its own exported span already).
fn batch_span(events: &[tracing::Span], service: &'static str, source: &str) -> tracing::Span {
    match events {
        [one] => one.clone(),
        _ => {
            tracing::info_span!(target: crate::trace::LOG_ONLY, "events", service, source = %source, count = events.len())
        }
    }
}

/// The span of one event handled: a child of the span that recorded the event, named by
/// the message's `traceparent` (header or stream field), else by the envelope's. Answers the
/// span and the `traceparent` it passes on.
fn event_span(
    service: &'static str,
    source: &str,
    envelope: &Envelope,
    carried: Option<&str>,
) -> (tracing::Span, Option<String>) {
    let span = tracing::info_span!(
        parent: None,
        "event",
        otel.name = %format!("handle {}", envelope.event_type),
        otel.kind = "consumer",
        service,
        eventType = %envelope.event_type,
        eventId = %envelope.event_id,
        aggregateId = %envelope.aggregate_id,
        correlationId = %envelope.metadata.correlation_id,
        source = %source,
        outcome = tracing::field::Empty,
        otel.status_code = tracing::field::Empty,
    );
    let parent = carried
        .filter(|t| crate::trace::valid(t))
        .or(envelope.metadata.traceparent.as_deref());
    let passed = crate::trace::continue_from(&span, parent);
    (span, passed)
}

#[async_trait]
pub trait Handler: Send + Sync + 'static {
    /// Applies the event and commits its effect with the inbox record, or says why not.
    async fn handle(&self, incoming: &Incoming) -> Result<(), Failure>;

    /// Applies a batch, in order (at most one event per aggregate when it comes from a queue),
    /// answering for each. Handlers whose store can commit the lot in one transaction do so;
    /// by default, one `handle` after the other.
    async fn handle_all(&self, batch: &[Incoming]) -> Vec<Result<(), Failure>> {
        let mut results = Vec::with_capacity(batch.len());
        for incoming in batch {
            results.push(self.handle(incoming).await);
        }
        results
    }
}

/// One queue's consumer.
pub struct QueueConsumer {
    pub bus: Arc<dyn MessageBus>,
    pub queue: String,
    pub handler: Arc<dyn Handler>,
    pub policy: RetryPolicy,
    pub metrics: Metrics,
}

/// What became of a delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Acked,
    Retried,
    DeadLettered,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Acked => "ok",
            Self::Retried => "retried",
            Self::DeadLettered => "dead_lettered",
        }
    }
}

impl QueueConsumer {
    /// Consumes until the task is dropped.
    pub async fn run(self) {
        let mut failures = 0u32;
        loop {
            match self
                .bus
                .receive(&self.queue, 32, Duration::from_secs(1))
                .await
            {
                Ok(deliveries) => {
                    failures = 0;
                    if let Err(e) = self.process_all(deliveries).await {
                        tracing::warn!(queue = %self.queue, error = %e, "settling deliveries; they will come back");
                    }
                }
                Err(e) => {
                    failures = failures.saturating_add(1);
                    let pause = self.policy.delay(failures).min(RECONNECT_CAP);
                    tracing::warn!(queue = %self.queue, error = %e, "receiving; retrying");
                    tokio::time::sleep(pause).await;
                }
            }
        }
    }

    /// Handles a batch (one call of the handler, which may commit it at once), then settles
    /// each delivery: the handled ones acked together, the others retried or dead-lettered.
    /// An ack lost to a crash only means a redelivery, which the handler's inbox skips.
    pub async fn process_all(
        &self,
        deliveries: Vec<Delivery>,
    ) -> Result<Vec<Outcome>, crate::bus::BusError> {
        let started = Instant::now();
        let mut outcomes = Vec::with_capacity(deliveries.len());
        let mut parsed = Vec::with_capacity(deliveries.len());
        for d in deliveries {
            match Envelope::from_slice(d.message.body.as_bytes()) {
                Ok(envelope) => parsed.push((d, envelope)),
                Err(e) => {
                    self.bus
                        .dead_letter(&d, &format!("poison message: {e}"))
                        .await?;
                    self.metrics.settled(&self.queue, "dead_lettered");
                    outcomes.push(Outcome::DeadLettered);
                }
            }
        }
        if parsed.is_empty() {
            return Ok(outcomes);
        }
        let mut spans = Vec::with_capacity(parsed.len());
        let incoming: Vec<Incoming> = parsed
            .iter()
            .map(|(d, envelope)| {
                let (span, traceparent) = event_span(
                    self.metrics.service,
                    &self.queue,
                    envelope,
                    d.message
                        .headers
                        .get(headers::TRACEPARENT)
                        .map(String::as_str),
                );
                spans.push(span);
                Incoming {
                    envelope: envelope.clone(),
                    replay: d
                        .message
                        .headers
                        .get(headers::REPLAY)
                        .is_some_and(|v| v == "true"),
                    traceparent,
                }
            })
            .collect();
        let results = self
            .handler
            .handle_all(&incoming)
            .instrument(batch_span(&spans, self.metrics.service, &self.queue))
            .await;
        let took = started.elapsed();
        let mut results = results.into_iter();
        let mut handled = Vec::new();
        for ((d, envelope), span) in parsed.into_iter().zip(&spans) {
            let result = results
                .next()
                .unwrap_or_else(|| Err(Failure::Transient("the handler gave no answer".into())));
            match result {
                Ok(()) => handled.push((d, envelope.event_type, span)),
                Err(failure) => {
                    let outcome = self.settle_failure(&d, &envelope, failure).await?;
                    settled(span, outcome);
                    outcomes.push(outcome);
                }
            }
        }
        let acks: Vec<Delivery> = handled.iter().map(|(d, _, _)| d.clone()).collect();
        self.bus.ack_all(&acks).await?;
        for (_, event_type, span) in &handled {
            settled(span, Outcome::Acked);
            self.metrics.settled(&self.queue, "ok");
            self.metrics.processed(event_type, "ok", took);
            outcomes.push(Outcome::Acked);
        }
        Ok(outcomes)
    }

    /// Retries or dead-letters a delivery its handler did not apply.
    async fn settle_failure(
        &self,
        d: &Delivery,
        envelope: &Envelope,
        failure: Failure,
    ) -> Result<Outcome, crate::bus::BusError> {
        let started = Instant::now();
        let (outcome, status) = match failure {
            Failure::Business(e) => {
                self.bus
                    .dead_letter(d, &format!("business error: {e}"))
                    .await?;
                (Outcome::DeadLettered, "dead_lettered")
            }
            Failure::Transient(e) | Failure::OutOfOrder(e)
                if d.attempts + 1 >= self.policy.max_attempts =>
            {
                self.bus.dead_letter(d, &e).await?;
                (Outcome::DeadLettered, "dead_lettered")
            }
            Failure::Transient(e) | Failure::OutOfOrder(e) => {
                let delay = self.policy.delay(d.attempts + 1);
                tracing::info!(queue = %self.queue, eventType = %envelope.event_type, aggregateId = %envelope.aggregate_id,
                    correlationId = %envelope.metadata.correlation_id, attempt = d.attempts + 1,
                    delayMs = delay.as_millis() as u64, error = %e, "retrying");
                self.bus.retry(d, delay, &e).await?;
                (Outcome::Retried, "retried")
            }
        };
        self.metrics.settled(&self.queue, status);
        self.metrics
            .processed(&envelope.event_type, status, started.elapsed());
        Ok(outcome)
    }
}

/// One stream's consumer in a consumer group; entries a dead consumer left pending are
/// reclaimed after `min_idle`. An entry that is not an event, that the handler refuses for
/// good, or that failed `max_attempts` times, is moved to `<stream>.dlq` with its error, then
/// acked.
pub struct StreamConsumer {
    pub streams: Arc<dyn StreamLog>,
    pub stream: String,
    pub group: String,
    pub consumer: String,
    pub handler: Arc<dyn Handler>,
    pub min_idle: Duration,
    pub max_attempts: u32,
    /// Failed attempts by entry id, in this process (a restart starts counting again).
    pub attempts: std::sync::Mutex<std::collections::HashMap<String, u32>>,
    pub metrics: Metrics,
}

impl StreamConsumer {
    pub async fn run(self) {
        let mut failures = 0u32;
        let mut recovered = false;
        loop {
            if !recovered {
                // What this consumer received before a restart and never acked comes first.
                recovered = self.recover().await.is_ok();
            }
            match self.poll().await {
                Ok(_) => failures = 0,
                Err(e) => {
                    failures = failures.saturating_add(1);
                    // The group is made again after any failure (a Redis that lost the stream
                    // lost its group too), not on every poll.
                    recovered = false;
                    let pause = Duration::from_millis(100u64.saturating_mul(1 << failures.min(8)))
                        .min(RECONNECT_CAP);
                    tracing::warn!(stream = %self.stream, error = %e, "reading the stream; retrying");
                    tokio::time::sleep(pause).await;
                }
            }
        }
    }

    async fn recover(&self) -> Result<(), crate::streams::StreamError> {
        self.streams
            .create_group(&self.stream, &self.group, GroupStart::Beginning)
            .await?;
        loop {
            let entries = self
                .streams
                .own_pending(&self.stream, &self.group, &self.consumer, 64)
                .await?;
            if entries.is_empty() {
                return Ok(());
            }
            let before = entries.len();
            self.process_all(&entries).await?;
            // Entries that failed transiently stay pending; leave them to the idle reclaim.
            let after = self
                .streams
                .own_pending(&self.stream, &self.group, &self.consumer, 64)
                .await?
                .len();
            if after >= before {
                return Ok(());
            }
        }
    }

    /// Takes over idle entries, reads new ones (waiting up to a second), handles them. The
    /// group exists ([`Self::recover`] made it).
    pub async fn poll(&self) -> Result<usize, crate::streams::StreamError> {
        let mut entries = self
            .streams
            .claim_idle(&self.stream, &self.group, &self.consumer, self.min_idle, 64)
            .await?;
        if entries.is_empty() {
            entries = self
                .streams
                .read_group(
                    &self.stream,
                    &self.group,
                    &self.consumer,
                    64,
                    Duration::from_secs(1),
                )
                .await?;
        }
        let n = entries.len();
        self.process_all(&entries).await?;
        Ok(n)
    }

    /// Handles entries as one batch (one call of the handler), then acks the handled ones
    /// with one XACK; the others stay pending or go to the stream's DLQ.
    async fn process_all(&self, entries: &[Entry]) -> Result<(), crate::streams::StreamError> {
        let started = Instant::now();
        let mut parsed = Vec::with_capacity(entries.len());
        for entry in entries {
            let envelope = entry
                .fields
                .get("event")
                .ok_or_else(|| "no `event` field".to_owned())
                .and_then(|e| Envelope::from_slice(e.as_bytes()).map_err(|e| e.to_string()));
            match envelope {
                Ok(envelope) => parsed.push((entry, envelope)),
                Err(e) => {
                    self.dead_letter(entry, &format!("poison entry: {e}"), "unknown", started)
                        .await?
                }
            }
        }
        if parsed.is_empty() {
            return Ok(());
        }
        let mut spans = Vec::with_capacity(parsed.len());
        let incoming: Vec<Incoming> = parsed
            .iter()
            .map(|(entry, envelope)| {
                let (span, traceparent) = event_span(
                    self.metrics.service,
                    &self.stream,
                    envelope,
                    entry.fields.get(headers::TRACEPARENT).map(String::as_str),
                );
                spans.push(span);
                Incoming {
                    envelope: envelope.clone(),
                    replay: false,
                    traceparent,
                }
            })
            .collect();
        let results = self
            .handler
            .handle_all(&incoming)
            .instrument(batch_span(&spans, self.metrics.service, &self.stream))
            .await;
        let took = started.elapsed();
        let mut results = results.into_iter();
        let mut handled = Vec::new();
        for ((entry, envelope), span) in parsed.into_iter().zip(&spans) {
            let result = results
                .next()
                .unwrap_or_else(|| Err(Failure::Transient("the handler gave no answer".into())));
            let event_type = envelope.event_type.as_str();
            match result {
                Ok(()) => handled.push((entry.id.clone(), envelope.event_type.clone(), span)),
                Err(Failure::Transient(e)) => {
                    settled(span, Outcome::Retried);
                    // A backend away: retried until it is back, never dead-lettered.
                    tracing::warn!(stream = %self.stream, entry = %entry.id, error = %e, "will retry");
                    self.metrics.settled(&self.stream, "retried");
                    self.metrics.processed(event_type, "retried", took);
                }
                Err(Failure::OutOfOrder(e)) => {
                    let attempts = {
                        let mut all = self
                            .attempts
                            .lock()
                            .unwrap_or_else(std::sync::PoisonError::into_inner);
                        let n = all.entry(entry.id.clone()).or_insert(0);
                        *n += 1;
                        *n
                    };
                    if attempts >= self.max_attempts {
                        self.dead_letter(
                            entry,
                            &format!("gave up after {attempts} attempts: {e}"),
                            event_type,
                            started,
                        )
                        .await?;
                        settled(span, Outcome::DeadLettered);
                    } else {
                        settled(span, Outcome::Retried);
                        // Left pending: reclaimed and tried again after `min_idle`.
                        tracing::warn!(stream = %self.stream, entry = %entry.id, attempts, error = %e, "will retry");
                        self.metrics.settled(&self.stream, "retried");
                        self.metrics.processed(event_type, "retried", took);
                    }
                }
                Err(Failure::Business(e)) => {
                    self.dead_letter(entry, &e, event_type, started).await?;
                    settled(span, Outcome::DeadLettered);
                }
            }
        }
        if !handled.is_empty() {
            let ids: Vec<String> = handled.iter().map(|(id, _, _)| id.clone()).collect();
            self.streams.ack(&self.stream, &self.group, &ids).await?;
            let mut attempts = self
                .attempts
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            for (id, event_type, span) in &handled {
                settled(span, Outcome::Acked);
                attempts.remove(id);
                self.metrics.settled(&self.stream, "ok");
                self.metrics.processed(event_type, "ok", took);
            }
        }
        Ok(())
    }

    async fn dead_letter(
        &self,
        entry: &Entry,
        error: &str,
        event_type: &str,
        started: Instant,
    ) -> Result<(), crate::streams::StreamError> {
        let mut fields = entry.fields.clone();
        fields.insert("error".into(), error.to_owned());
        fields.insert("entryId".into(), entry.id.clone());
        self.streams
            .append(&format!("{}.dlq", self.stream), &fields, None)
            .await?;
        self.streams
            .ack(&self.stream, &self.group, std::slice::from_ref(&entry.id))
            .await?;
        self.attempts
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(&entry.id);
        tracing::error!(stream = %self.stream, entry = %entry.id, error, "moved to the stream's DLQ");
        self.metrics.settled(&self.stream, "dead_lettered");
        self.metrics
            .processed(event_type, "dead_lettered", started.elapsed());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_backoff_doubles_from_one_second_to_sixty() {
        let p = RetryPolicy::default();
        let delays: Vec<u64> = (1..=8).map(|n| p.delay(n).as_secs()).collect();
        assert_eq!(delays, [1, 2, 4, 8, 16, 32, 60, 60]);
        assert_eq!(p.delay(200).as_secs(), 60);
        assert_eq!(p.max_attempts, 5);
    }
}
