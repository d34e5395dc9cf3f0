//! The event log port: a complaint's events and their outbox rows, appended atomically.
//!
//! - [`sqlite`]: the embedded adapter (one file under the data directory).
//! - [`postgres`]: the PostgreSQL adapter.
//! - [`group`]: group commit in front of either: concurrent appends share one commit.
//! - [`conformance`]: the tests every adapter must pass.

pub mod conformance;
pub mod group;
pub mod postgres;
pub mod sqlite;

use async_trait::async_trait;
use sagaflow_domain::Envelope;

/// What the stream's version must be for an append to go through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExpectedVersion(pub u64);

/// An idempotency key stored with the append that first used it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdempotencyRecord {
    pub key: String,
    /// The stream the key's request created or changed.
    pub stream_id: String,
    /// A digest of the request, to tell a retry from a different request reusing the key.
    pub fingerprint: String,
}

/// One command's worth of events for one stream.
#[derive(Debug, Clone)]
pub struct AppendRequest {
    pub stream_id: String,
    pub expected: ExpectedVersion,
    /// Versions `expected + 1`, `expected + 2`, … in order.
    pub events: Vec<Envelope>,
    pub idempotency: Option<IdempotencyRecord>,
}

/// What an append committed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Appended {
    /// The stream's version after the append.
    pub version: u64,
    /// The global position of the last event appended.
    pub last_position: u64,
}

/// A committed event with its global position (1-based, increasing in commit order).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Positioned {
    pub position: u64,
    pub envelope: Envelope,
}

/// An outbox row: one event to publish to its exchange and stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxRow {
    pub id: u64,
    pub event_id: String,
    /// Messages of one aggregate are delivered in order.
    pub aggregate_id: String,
    pub correlation_id: String,
    pub event_type: String,
    pub exchange: String,
    pub routing_key: String,
    pub stream: String,
    pub payload: String,
}

/// The store could not do its part; nothing about the request is wrong.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("event store unavailable: {0}")]
    Unavailable(String),
    #[error("event store holds data it cannot read: {0}")]
    Corrupt(String),
}

#[derive(Debug, thiserror::Error)]
pub enum AppendError {
    /// Somebody else appended first: the stream is at `actual`, not at the expected version.
    #[error("stream {stream_id} is at version {actual}, expected {expected}")]
    Conflict {
        stream_id: String,
        expected: u64,
        actual: u64,
    },
    /// The idempotency key was stored by an earlier append.
    #[error("idempotency key already used")]
    DuplicateIdempotencyKey(IdempotencyRecord),
    /// The request itself is malformed (versions not following `expected`, a reused event id).
    #[error("invalid append: {0}")]
    Invalid(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The event log. Every method's promise holds across a crash: what `append` acknowledged is
/// on disk.
#[async_trait]
pub trait EventLog: Send + Sync + 'static {
    /// Appends the events and one outbox row per event in one transaction, and stores the
    /// idempotency key with them. Fails with `Conflict` (and writes nothing) when the stream is
    /// not at the expected version, so a stale writer never overwrites.
    async fn append(&self, request: AppendRequest) -> Result<Appended, AppendError>;

    /// Appends several requests in one commit where the adapter can (group commit: one disk
    /// flush for the lot), each with `append`'s checks and answer, in order. When it returns,
    /// every `Ok` is on disk.
    async fn append_batch(
        &self,
        requests: Vec<AppendRequest>,
    ) -> Vec<Result<Appended, AppendError>> {
        let mut results = Vec::with_capacity(requests.len());
        for r in requests {
            results.push(self.append(r).await);
        }
        results
    }

    /// The stream's events with `version >= from_version`, in version order.
    async fn read_stream(
        &self,
        stream_id: &str,
        from_version: u64,
    ) -> Result<Vec<Envelope>, StoreError>;

    /// Up to `limit` events of every stream after global position `after`, in commit order.
    async fn read_all(&self, after: u64, limit: usize) -> Result<Vec<Positioned>, StoreError>;

    /// The record stored with an idempotency key, if the key was used.
    async fn find_idempotency_key(
        &self,
        key: &str,
    ) -> Result<Option<IdempotencyRecord>, StoreError>;

    /// Up to `limit` outbox rows not yet marked published, oldest first.
    async fn pending_outbox(&self, limit: usize) -> Result<Vec<OutboxRow>, StoreError>;

    /// Answers when the store is reachable.
    async fn ping(&self) -> Result<(), StoreError>;
}

impl From<crate::sqlite::writer::WriteError> for AppendError {
    fn from(e: crate::sqlite::writer::WriteError) -> Self {
        Self::Store(e.into())
    }
}

/// The same failure for each of `n` items of a batch that did not commit.
pub fn failed_all<T, E: From<StoreError>>(n: usize, e: &StoreError) -> Vec<Result<T, E>> {
    let text = match e {
        StoreError::Unavailable(m) | StoreError::Corrupt(m) => m,
    };
    (0..n)
        .map(|_| Err(StoreError::Unavailable(text.clone()).into()))
        .collect()
}

/// Refuses a batch whose versions do not follow `expected` or that belongs to another stream.
pub(crate) fn check_batch(request: &AppendRequest) -> Result<(), AppendError> {
    if request.events.is_empty() {
        return Err(AppendError::Invalid("no events to append".into()));
    }
    for (i, e) in request.events.iter().enumerate() {
        let want = request.expected.0 + 1 + i as u64;
        if e.metadata.version != want {
            return Err(AppendError::Invalid(format!(
                "event {} has version {}, expected {want}",
                e.event_id, e.metadata.version
            )));
        }
        if e.aggregate_id != request.stream_id {
            return Err(AppendError::Invalid(format!(
                "event {} belongs to {}, not {}",
                e.event_id, e.aggregate_id, request.stream_id
            )));
        }
    }
    Ok(())
}
