//! The outbox relay: publishes committed outbox rows to their exchange and their stream, then
//! marks them published. A crash in between publishes a row again; every consumer is
//! idempotent by event id, so that costs nothing but a duplicate delivery.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;

use crate::bus::{Message, MessageBus, headers};
use crate::event_log::{OutboxRow, StoreError};
use crate::metrics::Metrics;
use crate::outbox::Outbox;
use crate::streams::StreamLog;

const BATCH: usize = 256;

#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Bus(#[from] crate::bus::BusError),
    #[error(transparent)]
    Stream(#[from] crate::streams::StreamError),
}

pub struct Relay {
    outbox: Arc<dyn Outbox>,
    bus: Arc<dyn MessageBus>,
    streams: Arc<dyn StreamLog>,
    stream_max_len: Option<u64>,
    wake: Arc<Notify>,
    metrics: Metrics,
}

/// What an outbox row is published as: the envelope exactly as the contract has it, and the
/// `traceparent` it travels with: the one its envelope was recorded under (the span of the
/// request or event that caused it), else one made from its correlation id (events recorded
/// without a trace, or before traces existed).
pub fn published(row: &OutboxRow) -> (String, String) {
    // Most rows of a process that exports no traces carry none: no parse for them.
    if row.payload.contains("\"traceparent\"")
        && let Ok(envelope) = sagaflow_domain::Envelope::from_slice(row.payload.as_bytes())
    {
        let traceparent = envelope
            .metadata
            .traceparent
            .as_deref()
            .and_then(crate::trace::canonical)
            .unwrap_or_else(|| traceparent(&row.correlation_id, &row.event_id));
        return (envelope.to_json(), traceparent);
    }
    (
        row.payload.clone(),
        traceparent(&row.correlation_id, &row.event_id),
    )
}

/// A W3C `traceparent` made up for an event recorded without one, the same for every
/// publication of the row: a saga's events share the trace id of its correlation id (the UUID
/// itself when it is one).
pub fn traceparent(correlation_id: &str, event_id: &str) -> String {
    let id128 = |s: &str| {
        uuid::Uuid::parse_str(s).map_or_else(
            |_| format!("{:016x}{:016x}", fnv(s, 0), fnv(s, 1)),
            |u| u.simple().to_string(),
        )
    };
    let trace = id128(correlation_id);
    let span = &id128(event_id)[..16];
    // An all-zero id is not a valid trace context.
    let nonzero = |h: &str, len: usize| {
        if h.bytes().all(|b| b == b'0') {
            format!("{:0>len$}", 1)
        } else {
            h.to_owned()
        }
    };
    format!("00-{}-{}-01", nonzero(&trace, 32), nonzero(span, 16))
}

/// FNV-1a, 64 bits, with a seed: stable across processes and versions.
fn fnv(s: &str, seed: u8) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in std::iter::once(seed).chain(s.bytes()) {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// The message a row becomes.
pub fn message_of(row: &OutboxRow) -> Message {
    let (body, traceparent) = published(row);
    message_with(row, body, traceparent)
}

fn message_with(row: &OutboxRow, body: String, traceparent: String) -> Message {
    Message {
        message_id: row.event_id.clone(),
        exchange: row.exchange.clone(),
        routing_key: row.routing_key.clone(),
        ordering_key: Some(row.aggregate_id.clone()),
        headers: BTreeMap::from([
            (
                headers::CORRELATION_ID.to_owned(),
                row.correlation_id.clone(),
            ),
            (headers::TRACEPARENT.to_owned(), traceparent),
        ]),
        body,
    }
}

/// The stream entry a row becomes: `event` = the envelope, plus `eventId`, `eventType` and
/// `traceparent`.
pub fn entry_of(row: &OutboxRow) -> BTreeMap<String, String> {
    let (body, traceparent) = published(row);
    entry_with(row, body, traceparent)
}

fn entry_with(row: &OutboxRow, body: String, traceparent: String) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("event".to_owned(), body),
        ("eventId".to_owned(), row.event_id.clone()),
        ("eventType".to_owned(), row.event_type.clone()),
        (headers::TRACEPARENT.to_owned(), traceparent),
    ])
}

impl Relay {
    pub fn new(
        outbox: Arc<dyn Outbox>,
        bus: Arc<dyn MessageBus>,
        streams: Arc<dyn StreamLog>,
        stream_max_len: Option<u64>,
        metrics: Metrics,
    ) -> Self {
        Self {
            outbox,
            bus,
            streams,
            stream_max_len,
            wake: Arc::new(Notify::new()),
            metrics,
        }
    }

    /// Wake the relay (after a commit) instead of waiting for its next tick.
    pub fn waker(&self) -> Arc<Notify> {
        self.wake.clone()
    }

    /// Publishes one batch; returns how many rows it published.
    pub async fn relay_once(&self) -> Result<usize, RelayError> {
        let rows = self.outbox.pending(BATCH).await?;
        if rows.is_empty() {
            return Ok(0);
        }
        let mut messages = Vec::with_capacity(rows.len());
        let mut entries = Vec::with_capacity(rows.len());
        for row in &rows {
            let (body, traceparent) = published(row);
            entries.push((
                row.stream.clone(),
                entry_with(row, body.clone(), traceparent.clone()),
            ));
            messages.push(message_with(row, body, traceparent));
        }
        // The exchange and the stream are written at once: neither waits for the other's
        // commit (or confirm).
        let sent = futures::future::try_join(
            async {
                self.bus
                    .publish_all(&messages)
                    .await
                    .map_err(RelayError::from)
            },
            async {
                self.streams
                    .append_all(&entries, self.stream_max_len)
                    .await
                    .map_err(RelayError::from)
            },
        )
        .await
        .map(|_| ());
        let ids: Vec<u64> = rows.iter().map(|r| r.id).collect();
        if let Err(e) = sent {
            // Give the batch back for the next attempt (by any relay); what went out already
            // goes out again, and consumers skip it by event id.
            self.outbox.release(&ids).await?;
            return Err(e);
        }
        self.outbox.mark_published(&ids).await?;
        for row in &rows {
            self.metrics.relayed(&row.event_type);
        }
        Ok(ids.len())
    }

    /// Relays until the task is dropped: at once when woken, else every `tick`.
    pub async fn run(self: Arc<Self>, tick: Duration) {
        let mut failures = 0u32;
        loop {
            let woken = self.wake.notified();
            match self.relay_once().await {
                Ok(0) => {
                    failures = 0;
                    self.report_backlog().await;
                    let _ = tokio::time::timeout(tick, woken).await;
                }
                Ok(_) => failures = 0,
                Err(e) => {
                    failures = failures.saturating_add(1);
                    let pause = Duration::from_millis(100u64.saturating_mul(1 << failures.min(9)))
                        .min(crate::consumer::RECONNECT_CAP);
                    tracing::warn!(error = %e, retryInMs = pause.as_millis() as u64, "relaying the outbox");
                    self.report_backlog().await;
                    tokio::time::sleep(pause).await;
                }
            }
        }
    }

    /// Sets `outbox_backlog`; counted when idle or failing, not once per busy batch.
    async fn report_backlog(&self) {
        if let Ok(n) = self.outbox.backlog().await {
            self.metrics
                .outbox_backlog
                .set(i64::try_from(n).unwrap_or(i64::MAX));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(payload: &str) -> OutboxRow {
        OutboxRow {
            id: 1,
            event_id: "5f0c3e2a-8b1d-4c7e-9a6f-2d4b8e1c7a90".into(),
            aggregate_id: "c1".into(),
            correlation_id: "0b7e4f2c-1d3a-4e5b-8c6d-9f0a1b2c3d4e".into(),
            event_type: "COMPLAINT_CREATED".into(),
            exchange: "complaints.events".into(),
            routing_key: "complaint.created".into(),
            stream: "complaints-stream".into(),
            payload: payload.into(),
        }
    }

    #[test]
    fn the_message_header_and_the_stream_field_carry_the_envelopes_traceparent() {
        let t = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let ctx = sagaflow_domain::Context {
            correlation_id: "corr".into(),
            causation_id: None,
            user_id: None,
            at: chrono::Utc::now(),
            traceparent: Some(t.into()),
        };
        let payload = sagaflow_domain::events::Payload::ComplaintClosed(
            sagaflow_domain::events::ComplaintClosed {
                complaint_id: "c1".into(),
                reason: None,
                closed_at: chrono::Utc::now(),
            },
        );
        let envelope = sagaflow_domain::Envelope::new("e1".into(), "c1", 1, &payload, &ctx);
        let traced = row(&envelope.to_stored_json());
        let message = message_of(&traced);
        assert_eq!(message.headers[headers::TRACEPARENT], t);
        assert_eq!(entry_of(&traced)[headers::TRACEPARENT], t);
        // The published envelope is the contract's, without the trace context.
        assert_eq!(message.body, envelope.to_json());
        assert_eq!(entry_of(&traced)["event"], envelope.to_json());
        assert!(!message.body.contains("traceparent"));
    }

    #[test]
    fn a_made_up_traceparent_is_the_same_on_every_publication() {
        let r = row(r#"{"metadata":{"version":1}}"#);
        let mut other = row(r#"{"metadata":{"version":1}}"#);
        other.correlation_id = "saga-42".into();
        let made = message_of(&other).headers[headers::TRACEPARENT].clone();
        assert_eq!(made, entry_of(&other)[headers::TRACEPARENT]);
        assert_eq!(made, message_of(&other).headers[headers::TRACEPARENT]);
        assert!(crate::trace::valid(&made), "{made}");
        assert_ne!(made, message_of(&r).headers[headers::TRACEPARENT]);
    }

    #[test]
    fn an_event_recorded_without_a_trace_gets_one_made_from_its_correlation_id() {
        for payload in [
            r#"{"metadata":{"version":1}}"#,
            r#"{"metadata":{"version":1,"traceparent":"00-garbage"}}"#,
            "not json",
        ] {
            let r = row(payload);
            let made = traceparent(&r.correlation_id, &r.event_id);
            assert_eq!(
                made,
                "00-0b7e4f2c1d3a4e5b8c6d9f0a1b2c3d4e-5f0c3e2a8b1d4c7e-01"
            );
            assert_eq!(message_of(&r).headers[headers::TRACEPARENT], made);
            assert_eq!(entry_of(&r)[headers::TRACEPARENT], made);
        }
    }
}
