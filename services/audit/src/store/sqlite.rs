//! The embedded audit log: one SQLite file.

use std::path::Path;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sagaflow_domain::Envelope;
use sagaflow_runtime::event_log::StoreError;
use sagaflow_runtime::inbox::{self, Claim};
use sagaflow_runtime::outbox::SqliteOutbox;
use sagaflow_runtime::sqlite::Db;
use sagaflow_runtime::sqlite::writer::rusqlite;
use serde_json::{Value, json};
use sqlx::sqlite::SqliteRow;
use sqlx::{QueryBuilder, Row, Sqlite};

use super::{AuditLog, Recorded, Search};

const SCHEMA: &str = r#"
CREATE TABLE IF NOT EXISTS entries (
    seq              INTEGER PRIMARY KEY AUTOINCREMENT,
    event_id         TEXT NOT NULL UNIQUE,
    event_type       TEXT NOT NULL,
    aggregate_id     TEXT NOT NULL,
    aggregate_type   TEXT NOT NULL,
    complaint_id     TEXT,
    trigger_event_id TEXT,
    version          INTEGER NOT NULL,
    correlation_id   TEXT NOT NULL,
    user_id          TEXT,
    timestamp        INTEGER NOT NULL,
    recorded_at      INTEGER NOT NULL,
    compensated      INTEGER NOT NULL DEFAULT 0,
    compensated_by   TEXT,
    envelope         TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS entries_aggregate ON entries (aggregate_id, version);
CREATE INDEX IF NOT EXISTS entries_type ON entries (event_type, seq);
CREATE INDEX IF NOT EXISTS entries_correlation ON entries (correlation_id, seq);
CREATE INDEX IF NOT EXISTS entries_user ON entries (user_id, seq);
CREATE INDEX IF NOT EXISTS entries_trigger ON entries (trigger_event_id);
"#;

#[derive(Debug, Clone)]
pub struct SqliteAudit {
    db: Db,
}

fn unavailable(context: &'static str) -> impl Fn(sqlx::Error) -> StoreError {
    move |e| StoreError::Unavailable(format!("{context}: {e}"))
}

fn entry(row: &SqliteRow) -> Value {
    let ts =
        |ms: i64| DateTime::from_timestamp_millis(ms).map(|t| sagaflow_domain::time::format(&t));
    json!({
        "seq": row.get::<i64, _>("seq"),
        "eventId": row.get::<String, _>("event_id"),
        "eventType": row.get::<String, _>("event_type"),
        "aggregateId": row.get::<String, _>("aggregate_id"),
        "aggregateType": row.get::<String, _>("aggregate_type"),
        "complaintId": row.get::<Option<String>, _>("complaint_id"),
        "version": row.get::<i64, _>("version"),
        "correlationId": row.get::<String, _>("correlation_id"),
        "userId": row.get::<Option<String>, _>("user_id"),
        "timestamp": ts(row.get("timestamp")),
        "recordedAt": ts(row.get("recorded_at")),
        "compensated": row.get::<i64, _>("compensated") != 0,
        "compensatedBy": row.get::<Option<String>, _>("compensated_by"),
    })
}

impl SqliteAudit {
    pub async fn open(path: &Path) -> Result<Self, StoreError> {
        let db = Db::open(
            path,
            &[
                SCHEMA,
                sagaflow_runtime::inbox::SCHEMA,
                sagaflow_runtime::outbox::SCHEMA,
            ],
        )
        .await
        .map_err(|e| StoreError::Unavailable(format!("opening {}: {e}", path.display())))?;
        Ok(Self { db })
    }

    pub fn outbox(&self) -> SqliteOutbox {
        SqliteOutbox::new(self.db.clone())
    }

    pub async fn close(&self) {
        self.db.close().await;
    }
}

/// Records one event inside the writer's transaction (with its inbox claim and any
/// compensation it carries).
fn record_in(conn: &rusqlite::Connection, event: &Envelope) -> Result<Recorded, StoreError> {
    let fail =
        |e: rusqlite::Error| StoreError::Unavailable(format!("recording an audit entry: {e}"));
    match inbox::claim(conn, event).map_err(fail)? {
        Claim::Duplicate => return Ok(Recorded::Duplicate),
        Claim::TooEarly { expected } => return Ok(Recorded::TooEarly { expected }),
        Claim::New => {}
    }
    let (complaint_id, trigger) = super::links(event);
    conn.prepare_cached(
        "INSERT INTO entries (event_id, event_type, aggregate_id, aggregate_type, complaint_id, trigger_event_id, version, \
         correlation_id, user_id, timestamp, recorded_at, envelope) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
    )
    .and_then(|mut q| {
        q.execute(rusqlite::params![
            event.event_id,
            event.event_type,
            event.aggregate_id,
            event.aggregate_type,
            complaint_id,
            trigger,
            i64::try_from(event.metadata.version).unwrap_or(i64::MAX),
            event.metadata.correlation_id,
            event.metadata.user_id,
            event.metadata.timestamp.timestamp_millis(),
            Utc::now().timestamp_millis(),
            event.to_json(),
        ])
    })
    .map_err(fail)?;

    let mut compensation = None;
    if let Some((ids, stream, data, ctx)) = super::compensation(event) {
        // The undone steps' entries, and the notifications they caused.
        let mut mark = conn
            .prepare_cached(
                "UPDATE entries SET compensated = 1, compensated_by = ?1 \
                 WHERE event_id = ?2 OR trigger_event_id = ?2",
            )
            .map_err(fail)?;
        for id in &ids {
            mark.execute([&event.event_id, id]).map_err(fail)?;
        }
        let out = sagaflow_runtime::outbox::record(conn, &stream, &data, &ctx).map_err(fail)?;
        compensation = Some(Box::new(out));
    }
    Ok(Recorded::New { compensation })
}

#[async_trait]
impl AuditLog for SqliteAudit {
    async fn record(&self, event: &Envelope) -> Result<Recorded, StoreError> {
        self.record_all(std::slice::from_ref(event))
            .await
            .pop()
            .unwrap_or_else(|| Err(StoreError::Unavailable("no answer to a record".into())))
    }

    /// One job of the writer's next transaction for the batch, each event in its own
    /// savepoint (one refused leaves the others in).
    async fn record_all(&self, events: &[Envelope]) -> Vec<Result<Recorded, StoreError>> {
        self.db
            .jobs
            .run_each(
                "recording audit entries",
                events.to_vec(),
                record_in,
                Result::is_ok,
            )
            .await
    }

    async fn trail(&self, aggregate_id: &str) -> Result<Vec<Value>, StoreError> {
        let rows =
            sqlx::query("SELECT * FROM entries WHERE aggregate_id = ? ORDER BY version, seq")
                .bind(aggregate_id)
                .fetch_all(&self.db.reader)
                .await
                .map_err(unavailable("reading a trail"))?;
        Ok(rows.iter().map(entry).collect())
    }

    async fn search(&self, s: &Search) -> Result<(Vec<Value>, Option<u64>), StoreError> {
        let mut q: QueryBuilder<Sqlite> = QueryBuilder::new("SELECT * FROM entries WHERE seq > ");
        q.push_bind(i64::try_from(s.after).unwrap_or(i64::MAX));
        for (column, value) in [
            ("event_type", &s.event_type),
            ("aggregate_id", &s.aggregate_id),
            ("user_id", &s.user_id),
            ("correlation_id", &s.correlation_id),
        ] {
            if let Some(v) = value {
                q.push(format!(" AND {column} = ")).push_bind(v.clone());
            }
        }
        if let Some(from) = s.from {
            q.push(" AND timestamp >= ")
                .push_bind(from.timestamp_millis());
        }
        if let Some(to) = s.to {
            q.push(" AND timestamp <= ")
                .push_bind(to.timestamp_millis());
        }
        if let Some(c) = s.compensated {
            q.push(" AND compensated = ").push_bind(i64::from(c));
        }
        q.push(" ORDER BY seq LIMIT ")
            .push_bind(i64::from(s.limit) + 1);
        let rows = q
            .build()
            .fetch_all(&self.db.reader)
            .await
            .map_err(unavailable("searching"))?;
        let more = rows.len() > s.limit as usize;
        let items: Vec<Value> = rows.iter().take(s.limit as usize).map(entry).collect();
        let next = if more {
            items.last().and_then(|v| v["seq"].as_u64())
        } else {
            None
        };
        Ok((items, next))
    }

    async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1")
            .execute(&self.db.reader)
            .await
            .map_err(unavailable("pinging the audit log"))?;
        Ok(())
    }
}
