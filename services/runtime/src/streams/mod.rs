//! The stream log port, with Redis Streams' semantics: append with an approximate cap,
//! consumer groups, pending entries reclaimed from a dead consumer, reading from any position.
//!
//! - [`sqlite`]: the embedded adapter.
//! - [`redis`]: the Redis Streams adapter.
//! - [`conformance`]: the tests every adapter must pass.

pub mod conformance;
pub mod redis;
pub mod sqlite;

use std::collections::BTreeMap;
use std::time::Duration;

use async_trait::async_trait;

/// An entry: its id (`<ms>-<seq>`, increasing) and its fields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub id: String,
    pub fields: BTreeMap<String, String>,
}

/// Where a new consumer group starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupStart {
    /// With the first entry still in the stream.
    Beginning,
    /// With the next entry appended.
    End,
}

#[derive(Debug, thiserror::Error)]
pub enum StreamError {
    #[error("stream log unavailable: {0}")]
    Unavailable(String),
    #[error("no consumer group {group} on {stream}")]
    NoGroup { stream: String, group: String },
    #[error("malformed entry id {0:?}")]
    BadId(String),
}

#[async_trait]
pub trait StreamLog: Send + Sync + 'static {
    /// Appends an entry; keeps about `max_len` entries (the oldest go first).
    async fn append(
        &self,
        stream: &str,
        fields: &BTreeMap<String, String>,
        max_len: Option<u64>,
    ) -> Result<String, StreamError>;

    /// Creates a consumer group if it does not exist.
    /// Appends entries to their streams, in order, as one write where the adapter can. A
    /// failure may leave some appended: the caller appends them again, and consumers are
    /// idempotent.
    async fn append_all(
        &self,
        entries: &[(String, BTreeMap<String, String>)],
        max_len: Option<u64>,
    ) -> Result<(), StreamError> {
        for (stream, fields) in entries {
            self.append(stream, fields, max_len).await?;
        }
        Ok(())
    }

    async fn create_group(
        &self,
        stream: &str,
        group: &str,
        start: GroupStart,
    ) -> Result<(), StreamError>;

    /// Up to `count` entries no consumer of the group has received, waiting up to `block`;
    /// they stay pending for `consumer` until acked.
    async fn read_group(
        &self,
        stream: &str,
        group: &str,
        consumer: &str,
        count: usize,
        block: Duration,
    ) -> Result<Vec<Entry>, StreamError>;

    /// Acknowledges entries; returns how many were pending.
    async fn ack(&self, stream: &str, group: &str, ids: &[String]) -> Result<u64, StreamError>;

    /// Takes over entries pending for longer than `min_idle` (their consumer is presumed dead).
    async fn claim_idle(
        &self,
        stream: &str,
        group: &str,
        consumer: &str,
        min_idle: Duration,
        count: usize,
    ) -> Result<Vec<Entry>, StreamError>;

    /// Entries still pending for `consumer` itself (what it received and did not ack before it
    /// restarted), oldest first.
    async fn own_pending(
        &self,
        stream: &str,
        group: &str,
        consumer: &str,
        count: usize,
    ) -> Result<Vec<Entry>, StreamError>;

    /// Entries after `after` (exclusive; `None` for the first), oldest first.
    async fn range(
        &self,
        stream: &str,
        after: Option<&str>,
        count: usize,
    ) -> Result<Vec<Entry>, StreamError>;

    /// Entries pending in the group.
    async fn pending(&self, stream: &str, group: &str) -> Result<u64, StreamError>;

    /// How far the group is behind: entries not yet delivered to it plus those delivered and
    /// not acknowledged (pending). An error when the log cannot tell.
    async fn waiting(&self, stream: &str, group: &str) -> Result<u64, StreamError>;

    async fn len(&self, stream: &str) -> Result<u64, StreamError>;

    async fn ping(&self) -> Result<(), StreamError>;
}

/// Parses `<ms>-<seq>`.
pub fn parse_id(id: &str) -> Result<(i64, i64), StreamError> {
    let bad = || StreamError::BadId(id.to_owned());
    let (ms, seq) = id.split_once('-').ok_or_else(bad)?;
    Ok((
        ms.parse().map_err(|_| bad())?,
        seq.parse().map_err(|_| bad())?,
    ))
}
