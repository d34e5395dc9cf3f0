//! The read model port: complaint views, kept up to date by the projector, queried by the API.
//!
//! - [`sqlite`]: the embedded adapter.
//! - [`postgres`]: the PostgreSQL adapter.
//! - [`conformance`]: the tests every adapter must pass.

pub mod conformance;
pub mod postgres;
pub mod sqlite;

use std::collections::HashMap;

use async_trait::async_trait;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use sagaflow_domain::{ComplaintProjection, ComplaintView, Priority, Status};
use sagaflow_runtime::event_log::StoreError;

/// A projection as stored, with its place in the list order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredProjection {
    /// The global position of the complaint's creation: the list is ordered by it, newest first.
    pub seq: u64,
    pub projection: ComplaintProjection,
}

/// The filters of `GET /api/complaints`; `None` matches everything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ListFilter {
    pub status: Option<Status>,
    pub priority: Option<Priority>,
    pub category: Option<String>,
    pub assigned_to: Option<String>,
    pub user_id: Option<String>,
}

/// Where a page starts: after the complaint created at `seq` (exclusive), going back in time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cursor {
    pub before_seq: u64,
}

impl Cursor {
    const PREFIX: &'static str = "v1:";

    /// The opaque text clients send back.
    pub fn encode(self) -> String {
        URL_SAFE_NO_PAD.encode(format!("{}{}", Self::PREFIX, self.before_seq))
    }

    pub fn decode(text: &str) -> Option<Self> {
        let bytes = URL_SAFE_NO_PAD.decode(text.trim()).ok()?;
        let text = String::from_utf8(bytes).ok()?;
        let seq = text.strip_prefix(Self::PREFIX)?.parse().ok()?;
        Some(Self { before_seq: seq })
    }
}

/// One page of views.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page {
    pub items: Vec<ComplaintView>,
    pub next: Option<Cursor>,
}

/// The store of complaint views.
#[async_trait]
pub trait ComplaintViews: Send + Sync + 'static {
    /// The global position of the last event the stored views include.
    async fn checkpoint(&self) -> Result<u64, StoreError>;

    /// The stored projections of these complaints (absent ones are left out).
    async fn load(&self, ids: &[String]) -> Result<HashMap<String, StoredProjection>, StoreError>;

    /// Stores these projections and the new checkpoint in one transaction.
    async fn save(
        &self,
        projections: &[(String, StoredProjection)],
        checkpoint: u64,
    ) -> Result<(), StoreError>;

    /// [`save`](Self::save) for projections folded from the event log alone (no other
    /// service's facts in them): an adapter may commit these without waiting for the disk,
    /// since the event log holds what they derive from and the service projects again what a
    /// crash lost before it serves.
    async fn save_projected(
        &self,
        projections: &[(String, StoredProjection)],
        checkpoint: u64,
    ) -> Result<(), StoreError> {
        self.save(projections, checkpoint).await
    }

    async fn get(&self, id: &str) -> Result<Option<ComplaintView>, StoreError>;

    /// Newest first, `limit` at most, from `cursor`.
    async fn list(
        &self,
        filter: &ListFilter,
        limit: u32,
        cursor: Option<Cursor>,
    ) -> Result<Page, StoreError>;

    /// Open complaints of `priority`, never escalated, created at or before
    /// `created_before_ms`: `(id, created_ms)`.
    async fn due_for_escalation(
        &self,
        priority: Priority,
        created_before_ms: i64,
        limit: u32,
    ) -> Result<Vec<(String, i64)>, StoreError>;

    async fn ping(&self) -> Result<(), StoreError>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_refuse_junk() {
        let c = Cursor { before_seq: 42 };
        assert_eq!(Cursor::decode(&c.encode()), Some(c));
        assert_eq!(Cursor::decode("42"), None);
        assert_eq!(Cursor::decode("!!!"), None);
        assert_eq!(Cursor::decode(&URL_SAFE_NO_PAD.encode("v1:x")), None);
    }
}
