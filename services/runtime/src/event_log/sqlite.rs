//! The embedded event log: one SQLite file, WAL, `synchronous=FULL`.
//!
//! SQLite through sqlx: the store the rest of the project already speaks (sqlx is also the
//! PostgreSQL driver), ACID on one file, and crash-safe for every commit it acknowledged.

use std::path::Path;

use async_trait::async_trait;
use sagaflow_domain::Envelope;
use sqlx::Row;

use super::{
    AppendError, AppendRequest, Appended, EventLog, IdempotencyRecord, OutboxRow, Positioned,
    StoreError,
};
use crate::sqlite::Db;
use rusqlite::OptionalExtension as _;

/// The event log's tables (the outbox's are [`crate::outbox::SCHEMA`]).
pub const SCHEMA: &str = r#"
CREATE TABLE IF NOT EXISTS events (
    position    INTEGER PRIMARY KEY AUTOINCREMENT,
    event_id    TEXT NOT NULL UNIQUE,
    stream_id   TEXT NOT NULL,
    version     INTEGER NOT NULL CHECK (version >= 1),
    event_type  TEXT NOT NULL,
    envelope    TEXT NOT NULL,
    UNIQUE (stream_id, version)
);
CREATE TABLE IF NOT EXISTS idempotency_keys (
    key         TEXT PRIMARY KEY,
    stream_id   TEXT NOT NULL,
    fingerprint TEXT NOT NULL
);
"#;

/// The embedded [`EventLog`].
#[derive(Debug, Clone)]
pub struct SqliteEventLog {
    db: Db,
}

impl SqliteEventLog {
    /// The outbox of this log, for the relay.
    pub fn outbox(&self) -> crate::outbox::SqliteOutbox {
        crate::outbox::SqliteOutbox::new(self.db.clone())
    }
}

fn unavailable(context: &str) -> impl Fn(sqlx::Error) -> StoreError + '_ {
    move |e| StoreError::Unavailable(format!("{context}: {e}"))
}

fn decode(text: &str) -> Result<Envelope, StoreError> {
    Envelope::from_slice(text.as_bytes()).map_err(|e| StoreError::Corrupt(e.to_string()))
}

fn to_u64(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

fn to_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

impl SqliteEventLog {
    /// Opens or creates the log in `path`.
    pub async fn open(path: &Path) -> Result<Self, StoreError> {
        let db = Db::open(path, &[SCHEMA, crate::outbox::SCHEMA])
            .await
            .map_err(|e| StoreError::Unavailable(format!("opening {}: {e}", path.display())))?;
        Ok(Self { db })
    }

    /// Opens a `sqlite://` URL.
    pub async fn open_url(url: &str) -> Result<Self, StoreError> {
        let db = Db::open_url(url, &[SCHEMA, crate::outbox::SCHEMA])
            .await
            .map_err(|e| StoreError::Unavailable(format!("opening the event log: {e}")))?;
        Ok(Self { db })
    }

    pub async fn close(&self) {
        self.db.close().await;
    }
}

/// Appends one request inside the writer's transaction (its version and idempotency checks
/// see what the same transaction wrote before).
fn append_in(
    conn: &rusqlite::Connection,
    request: &AppendRequest,
) -> Result<Appended, AppendError> {
    let fail = |context: &'static str| {
        move |e: rusqlite::Error| {
            AppendError::from(StoreError::Unavailable(format!("{context}: {e}")))
        }
    };
    super::check_batch(request)?;

    let actual: i64 = conn
        .prepare_cached("SELECT COALESCE(MAX(version), 0) FROM events WHERE stream_id = ?1")
        .and_then(|mut q| q.query_row([&request.stream_id], |r| r.get(0)))
        .map_err(fail("reading the stream version"))?;
    if to_u64(actual) != request.expected.0 {
        return Err(AppendError::Conflict {
            stream_id: request.stream_id.clone(),
            expected: request.expected.0,
            actual: to_u64(actual),
        });
    }
    if let Some(idem) = &request.idempotency {
        let existing = conn
            .prepare_cached("SELECT stream_id, fingerprint FROM idempotency_keys WHERE key = ?1")
            .and_then(|mut q| {
                q.query_row([&idem.key], |r| Ok((r.get(0)?, r.get(1)?)))
                    .optional()
            })
            .map_err(fail("reading an idempotency key"))?;
        if let Some((stream_id, fingerprint)) = existing {
            return Err(AppendError::DuplicateIdempotencyKey(IdempotencyRecord {
                key: idem.key.clone(),
                stream_id,
                fingerprint,
            }));
        }
        conn.prepare_cached(
            "INSERT INTO idempotency_keys (key, stream_id, fingerprint) VALUES (?1, ?2, ?3)",
        )
        .and_then(|mut q| q.execute([&idem.key, &idem.stream_id, &idem.fingerprint]))
        .map_err(fail("storing an idempotency key"))?;
    }
    let mut last_position = 0;
    let mut insert = conn
        .prepare_cached(
            "INSERT INTO events (event_id, stream_id, version, event_type, envelope) VALUES (?1, ?2, ?3, ?4, ?5)",
        )
        .map_err(fail("appending an event"))?;
    for event in &request.events {
        let json = event.to_stored_json();
        let inserted = insert.execute(rusqlite::params![
            event.event_id,
            request.stream_id,
            to_i64(event.metadata.version),
            event.event_type,
            json,
        ]);
        match inserted {
            Ok(_) => last_position = to_u64(conn.last_insert_rowid()),
            Err(rusqlite::Error::SqliteFailure(e, _))
                if e.code == rusqlite::ErrorCode::ConstraintViolation =>
            {
                return Err(AppendError::Invalid(format!(
                    "event id {} is already in the log",
                    event.event_id
                )));
            }
            Err(e) => return Err(fail("appending an event")(e)),
        }
        crate::outbox::write(conn, event, &json).map_err(fail("writing an outbox row"))?;
    }
    Ok(Appended {
        version: request.expected.0 + request.events.len() as u64,
        last_position,
    })
}

#[async_trait]
impl EventLog for SqliteEventLog {
    async fn append(&self, request: AppendRequest) -> Result<Appended, AppendError> {
        self.append_batch(vec![request])
            .await
            .pop()
            .unwrap_or_else(|| Err(StoreError::Unavailable("no answer to an append".into()).into()))
    }

    /// One job of the writer's next transaction for the lot; each request in its own savepoint,
    /// so one refused (a version conflict) leaves the others in.
    async fn append_batch(
        &self,
        requests: Vec<AppendRequest>,
    ) -> Vec<Result<Appended, AppendError>> {
        self.db
            .jobs
            .run_each("appending", requests, append_in, Result::is_ok)
            .await
    }

    async fn read_stream(
        &self,
        stream_id: &str,
        from_version: u64,
    ) -> Result<Vec<Envelope>, StoreError> {
        let rows: Vec<String> = sqlx::query_scalar(
            "SELECT envelope FROM events WHERE stream_id = ? AND version >= ? ORDER BY version",
        )
        .bind(stream_id)
        .bind(to_i64(from_version))
        .fetch_all(&self.db.reader)
        .await
        .map_err(unavailable("reading a stream"))?;
        rows.iter().map(|r| decode(r)).collect()
    }

    async fn read_all(&self, after: u64, limit: usize) -> Result<Vec<Positioned>, StoreError> {
        let rows = sqlx::query(
            "SELECT position, envelope FROM events WHERE position > ? ORDER BY position LIMIT ?",
        )
        .bind(to_i64(after))
        .bind(i64::try_from(limit).unwrap_or(i64::MAX))
        .fetch_all(&self.db.reader)
        .await
        .map_err(unavailable("reading all events"))?;
        rows.iter()
            .map(|row| {
                Ok(Positioned {
                    position: to_u64(row.get(0)),
                    envelope: decode(row.get(1))?,
                })
            })
            .collect()
    }

    async fn find_idempotency_key(
        &self,
        key: &str,
    ) -> Result<Option<IdempotencyRecord>, StoreError> {
        let row = sqlx::query("SELECT stream_id, fingerprint FROM idempotency_keys WHERE key = ?")
            .bind(key)
            .fetch_optional(&self.db.reader)
            .await
            .map_err(unavailable("reading an idempotency key"))?;
        Ok(row.map(|row| IdempotencyRecord {
            key: key.to_owned(),
            stream_id: row.get(0),
            fingerprint: row.get(1),
        }))
    }

    async fn pending_outbox(&self, limit: usize) -> Result<Vec<OutboxRow>, StoreError> {
        crate::outbox::pending(&self.db.reader, limit).await
    }

    async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1")
            .execute(&self.db.reader)
            .await
            .map_err(unavailable("pinging the event log"))?;
        Ok(())
    }
}
