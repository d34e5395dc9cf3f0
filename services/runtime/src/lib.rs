//! What every sagaflow service stands on: ports with their adapters, and the shared plumbing.
//!
//! - [`event_log`]: the event log port (events + outbox rows, atomically), its embedded SQLite
//!   adapter and its conformance suite.
//! - [`bus`]: the message bus port (RabbitMQ's semantics), its embedded adapter and conformance suite.
//! - [`streams`]: the stream log port (Redis Streams' semantics), its embedded adapter and conformance suite.
//! - [`outbox`], [`relay`]: the transactional outbox and the relay that publishes it.
//! - [`consumer`], [`inbox`]: the consumer loop (retries, dead letters) and idempotent handling.
//! - [`sqlite`]: opening an embedded database safely.
//! - [`http`]: the contract's errors, strict JSON bodies, request context, health and metrics routes.
//! - [`metrics`]: the Prometheus registry of a service.
//! - [`config`]: settings from the environment, errors naming the variable, URL redaction.
//! - [`telemetry`]: JSON log lines with the request's fields.
//! - [`shutdown`]: SIGTERM and Ctrl-C.

pub mod bus;
pub mod config;
pub mod consumer;
pub mod event_log;
pub mod http;
pub mod inbox;
pub mod metrics;
pub mod outbox;
pub mod pipeline;
pub mod postgres;
pub mod relay;
pub mod shutdown;
pub mod sqlite;
pub mod streams;
pub mod tasks;
pub mod telemetry;
