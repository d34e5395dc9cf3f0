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

/// The `traceparent` an outbox row travels with: the one its envelope was recorded under
/// (the span of the request or event that caused it), else one made from its correlation id
/// (events recorded without a trace, or before traces existed).
pub fn row_traceparent(row: &OutboxRow) -> String {
    #[derive(serde::Deserialize)]
    struct Meta {
        traceparent: Option<String>,
    }
    #[derive(serde::Deserialize)]
    struct Traced {
        metadata: Meta,
    }
    serde_json::from_str::<Traced>(&row.payload)
        .ok()
        .and_then(|t| t.metadata.traceparent)
        .filter(|t| crate::trace::valid(t))
        .unwrap_or_else(|| traceparent(&row.correlation_id, &row.event_id))
}

/// A W3C `traceparent` made up for an event recorded without one: a saga whose correlation
/// id is a UUID keeps one trace id.
pub fn traceparent(correlation_id: &str, event_id: &str) -> String {
    let trace = uuid::Uuid::parse_str(correlation_id).unwrap_or_else(|_| uuid::Uuid::new_v4());
    let span = uuid::Uuid::parse_str(event_id).unwrap_or_else(|_| uuid::Uuid::new_v4());
    let span_hex = span.simple().to_string();
    format!("00-{}-{}-01", trace.simple(), &span_hex[..16])
}

/// The message a row becomes.
pub fn message_of(row: &OutboxRow) -> Message {
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
            (headers::TRACEPARENT.to_owned(), row_traceparent(row)),
        ]),
        body: row.payload.clone(),
    }
}

/// The stream entry a row becomes: `event` = the envelope, plus `eventId`, `eventType` and
/// `traceparent`.
pub fn entry_of(row: &OutboxRow) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("event".to_owned(), row.payload.clone()),
        ("eventId".to_owned(), row.event_id.clone()),
        ("eventType".to_owned(), row.event_type.clone()),
        (headers::TRACEPARENT.to_owned(), row_traceparent(row)),
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
        let messages: Vec<Message> = rows.iter().map(message_of).collect();
        let entries: Vec<(String, BTreeMap<String, String>)> = rows
            .iter()
            .map(|row| (row.stream.clone(), entry_of(row)))
            .collect();
        let sent = async {
            self.bus.publish_all(&messages).await?;
            self.streams
                .append_all(&entries, self.stream_max_len)
                .await?;
            Ok::<(), RelayError>(())
        }
        .await;
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
        let traced = row(&format!(
            r#"{{"eventId":"e","metadata":{{"version":1,"traceparent":"{t}"}}}}"#
        ));
        assert_eq!(message_of(&traced).headers[headers::TRACEPARENT], t);
        assert_eq!(entry_of(&traced)[headers::TRACEPARENT], t);
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
