//! The archive port: every event once (by event id), a stream by version, a global position.
//!
//! - [`sqlite`]: the embedded adapter.
//! - [`mongo`]: the MongoDB adapter.
//! - [`conformance`]: the tests every adapter must pass.

pub mod conformance;
pub mod mongo;
pub mod sqlite;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sagaflow_domain::Envelope;
use sagaflow_runtime::event_log::StoreError;

pub use sqlite::SqliteArchive;

/// An archived event: its global position, when the archive stored it, the event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Archived {
    pub position: u64,
    pub archived_at: DateTime<Utc>,
    pub envelope: Envelope,
}

#[async_trait]
pub trait Archive: Send + Sync + 'static {
    /// Stores the event unless its id is there already; true when it was new. Another event at
    /// a version its stream already has is refused (`Corrupt`): the archive never holds two.
    async fn append(&self, event: &Envelope) -> Result<bool, StoreError>;
    /// Archives a batch in order, in one commit where the store can; one answer per event.
    async fn append_all(&self, events: &[Envelope]) -> Vec<Result<bool, StoreError>> {
        let mut results = Vec::with_capacity(events.len());
        for e in events {
            results.push(self.append(e).await);
        }
        results
    }
    /// A stream's events with `version >= from_version`, by version.
    async fn stream(
        &self,
        aggregate_id: &str,
        from_version: u64,
    ) -> Result<Vec<Envelope>, StoreError>;
    /// Whether the archive holds version `version` of stream `aggregate_id`.
    async fn has_version(&self, aggregate_id: &str, version: u64) -> Result<bool, StoreError> {
        Ok(self
            .stream(aggregate_id, version)
            .await?
            .first()
            .is_some_and(|e| e.metadata.version == version))
    }
    /// Events after global position `after`, in global order, with when each was archived.
    async fn all(&self, after: u64, limit: usize) -> Result<Vec<Archived>, StoreError>;
    async fn count(&self) -> Result<u64, StoreError>;
    async fn ping(&self) -> Result<(), StoreError>;
}

/// The error for a second event at a version its stream already has.
pub fn version_taken(event: &Envelope) -> StoreError {
    StoreError::Corrupt(format!(
        "stream {} already has a version {} (event {} refused)",
        event.aggregate_id, event.metadata.version, event.event_id
    ))
}
