//! The audit log port. Recording an event, its compensation marks, the AUDIT_COMPENSATION
//! event's outbox row and the inbox record commit in one transaction.
//!
//! - [`sqlite`]: the embedded adapter.
//! - [`postgres`]: the PostgreSQL adapter.

pub mod conformance;
pub mod postgres;
pub mod sqlite;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sagaflow_domain::events::{AuditCompensation, Payload};
use sagaflow_domain::saga::{audit_stream, compensated_event_ids};
use sagaflow_domain::{Context, Envelope};
use sagaflow_runtime::event_log::StoreError;
use serde_json::Value;

pub use sqlite::SqliteAudit;

/// What recording an event did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Recorded {
    New { compensation: Option<Box<Envelope>> },
    Duplicate,
    TooEarly { expected: u64 },
}

/// The filters of `GET /api/audit/search`.
#[derive(Debug, Clone, Default)]
pub struct Search {
    pub event_type: Option<String>,
    pub aggregate_id: Option<String>,
    pub user_id: Option<String>,
    pub correlation_id: Option<String>,
    pub from: Option<DateTime<Utc>>,
    pub to: Option<DateTime<Utc>>,
    pub compensated: Option<bool>,
    pub after: u64,
    pub limit: u32,
}

#[async_trait]
pub trait AuditLog: Send + Sync + 'static {
    async fn record(&self, event: &Envelope) -> Result<Recorded, StoreError>;
    /// Records a batch, in order, in one commit where the store can; one answer per event.
    async fn record_all(&self, events: &[Envelope]) -> Vec<Result<Recorded, StoreError>> {
        let mut results = Vec::with_capacity(events.len());
        for e in events {
            results.push(self.record(e).await);
        }
        results
    }
    /// An aggregate's entries by version.
    async fn trail(&self, aggregate_id: &str) -> Result<Vec<Value>, StoreError>;
    /// Entries matching, in recording order, after `search.after`; with the last seq.
    async fn search(&self, search: &Search) -> Result<(Vec<Value>, Option<u64>), StoreError>;
    async fn ping(&self) -> Result<(), StoreError>;
}

/// The complaint an event concerns, and the event that caused it (for a notification).
pub(crate) fn links(event: &Envelope) -> (Option<String>, Option<String>) {
    let complaint = match event.aggregate() {
        Some(sagaflow_domain::AggregateType::Complaint) => Some(event.aggregate_id.clone()),
        _ => event
            .event_data
            .get("complaintId")
            .and_then(Value::as_str)
            .map(str::to_owned),
    };
    let trigger = event
        .event_data
        .get("triggerEventId")
        .and_then(Value::as_str)
        .map(str::to_owned);
    (complaint, trigger)
}

/// For a COMPLAINT_COMPENSATION_REQUIRED: the event ids to mark, and the AUDIT_COMPENSATION to
/// record (its stream, data and context).
pub(crate) fn compensation(event: &Envelope) -> Option<(Vec<String>, String, Payload, Context)> {
    let Ok(Payload::ComplaintCompensationRequired(required)) = event.payload() else {
        return None;
    };
    let ids = compensated_event_ids(&required, sagaflow_runtime::bus::topology::AUDIT_SERVICE);
    let ctx = Context {
        correlation_id: event.metadata.correlation_id.clone(),
        causation_id: Some(event.event_id.clone()),
        user_id: None,
        at: Utc::now(),
        // The audit service's span for the request (`Incoming::traced`).
        traceparent: event.metadata.traceparent.clone(),
    };
    let data = Payload::AuditCompensation(AuditCompensation {
        complaint_id: required.complaint_id.clone(),
        failed_event_id: required.failed_event_id.clone(),
        compensated_event_ids: ids.clone(),
    });
    Some((ids, audit_stream(&required.complaint_id), data, ctx))
}
