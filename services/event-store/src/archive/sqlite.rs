//! The embedded archive: one SQLite file.

use std::path::Path;

use async_trait::async_trait;
use sagaflow_domain::Envelope;
use sagaflow_runtime::event_log::StoreError;

use super::{Archive, Archived};
use rusqlite::OptionalExtension as _;
use sagaflow_runtime::sqlite::Db;
use sagaflow_runtime::sqlite::writer::rusqlite;
use sqlx::Row;

const SCHEMA: &str = r#"
CREATE TABLE IF NOT EXISTS events (
    position       INTEGER PRIMARY KEY AUTOINCREMENT,
    event_id       TEXT NOT NULL UNIQUE,
    aggregate_id   TEXT NOT NULL,
    aggregate_type TEXT NOT NULL,
    event_type     TEXT NOT NULL,
    version        INTEGER NOT NULL,
    envelope       TEXT NOT NULL,
    archived_at    INTEGER NOT NULL
);
CREATE UNIQUE INDEX IF NOT EXISTS events_stream ON events (aggregate_id, version);
"#;

#[derive(Debug, Clone)]
pub struct SqliteArchive {
    db: Db,
}

fn unavailable(context: &'static str) -> impl Fn(sqlx::Error) -> StoreError {
    move |e| StoreError::Unavailable(format!("{context}: {e}"))
}

fn decode(text: &str) -> Result<Envelope, StoreError> {
    Envelope::from_slice(text.as_bytes()).map_err(|e| StoreError::Corrupt(e.to_string()))
}

impl SqliteArchive {
    pub async fn open(path: &Path) -> Result<Self, StoreError> {
        let db = Db::open(path, &[SCHEMA])
            .await
            .map_err(|e| StoreError::Unavailable(format!("opening {}: {e}", path.display())))?;
        Ok(Self { db })
    }

    pub async fn close(&self) {
        self.db.close().await;
    }
}

/// Archives one event inside the writer's transaction.
fn append_in(conn: &rusqlite::Connection, event: &Envelope) -> Result<bool, StoreError> {
    let fail = |e: rusqlite::Error| StoreError::Unavailable(format!("archiving an event: {e}"));
    let known: Option<i64> = conn
        .prepare_cached("SELECT 1 FROM events WHERE event_id = ?1")
        .and_then(|mut q| q.query_row([&event.event_id], |r| r.get(0)).optional())
        .map_err(fail)?;
    if known.is_some() {
        return Ok(false);
    }
    let done = conn
        .prepare_cached(
            "INSERT INTO events (event_id, aggregate_id, aggregate_type, event_type, version, envelope, archived_at) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        )
        .and_then(|mut q| {
            q.execute(rusqlite::params![
                event.event_id,
                event.aggregate_id,
                event.aggregate_type,
                event.event_type,
                i64::try_from(event.metadata.version).unwrap_or(i64::MAX),
                event.to_json(),
                chrono_now_ms(),
            ])
        });
    match done {
        Ok(_) => Ok(true),
        // The event id was checked above: a unique violation is its (aggregate, version).
        Err(rusqlite::Error::SqliteFailure(e, _))
            if e.code == rusqlite::ErrorCode::ConstraintViolation =>
        {
            Err(super::version_taken(event))
        }
        Err(e) => Err(fail(e)),
    }
}

#[async_trait]
impl Archive for SqliteArchive {
    async fn append(&self, event: &Envelope) -> Result<bool, StoreError> {
        self.append_all(std::slice::from_ref(event))
            .await
            .pop()
            .unwrap_or_else(|| Err(StoreError::Unavailable("no answer to an append".into())))
    }

    /// One job of the writer's next transaction for the batch, each event in its own
    /// savepoint (one refused leaves the others in).
    async fn append_all(&self, events: &[Envelope]) -> Vec<Result<bool, StoreError>> {
        self.db
            .jobs
            .run_each(
                "archiving events",
                events.to_vec(),
                append_in,
                Result::is_ok,
            )
            .await
    }

    async fn stream(
        &self,
        aggregate_id: &str,
        from_version: u64,
    ) -> Result<Vec<Envelope>, StoreError> {
        let rows: Vec<String> = sqlx::query_scalar(
            "SELECT envelope FROM events WHERE aggregate_id = ? AND version >= ? ORDER BY version, position",
        )
        .bind(aggregate_id)
        .bind(i64::try_from(from_version).unwrap_or(i64::MAX))
        .fetch_all(&self.db.reader)
        .await
        .map_err(unavailable("reading a stream"))?;
        rows.iter().map(|r| decode(r)).collect()
    }

    async fn has_version(&self, aggregate_id: &str, version: u64) -> Result<bool, StoreError> {
        let found: Option<i64> =
            sqlx::query_scalar("SELECT 1 FROM events WHERE aggregate_id = ? AND version = ?")
                .bind(aggregate_id)
                .bind(i64::try_from(version).unwrap_or(i64::MAX))
                .fetch_optional(&self.db.reader)
                .await
                .map_err(unavailable("looking up a version"))?;
        Ok(found.is_some())
    }

    async fn all(&self, after: u64, limit: usize) -> Result<Vec<Archived>, StoreError> {
        let rows = sqlx::query(
            "SELECT position, envelope, archived_at FROM events WHERE position > ? ORDER BY position LIMIT ?",
        )
        .bind(i64::try_from(after).unwrap_or(i64::MAX))
        .bind(i64::try_from(limit).unwrap_or(i64::MAX))
        .fetch_all(&self.db.reader)
        .await
        .map_err(unavailable("reading all events"))?;
        rows.iter()
            .map(|row| {
                Ok(Archived {
                    position: u64::try_from(row.get::<i64, _>(0)).unwrap_or(0),
                    archived_at: chrono::DateTime::from_timestamp_millis(row.get(2))
                        .unwrap_or_default(),
                    envelope: decode(row.get(1))?,
                })
            })
            .collect()
    }

    async fn count(&self) -> Result<u64, StoreError> {
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM events")
            .fetch_one(&self.db.reader)
            .await
            .map_err(unavailable("counting events"))?;
        Ok(u64::try_from(n).unwrap_or(0))
    }

    async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1")
            .execute(&self.db.reader)
            .await
            .map_err(unavailable("pinging the archive"))?;
        Ok(())
    }
}

fn chrono_now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}
