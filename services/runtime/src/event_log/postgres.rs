//! The event log on PostgreSQL, in the complaint service's schema.
//!
//! Appends take a transaction-scoped advisory lock, so global positions become visible in the
//! order they are assigned: a reader that saw position N never sees N-1 appear later (a
//! sequence alone would allow that, and the projector would skip an event). The outbox is
//! claimed with `FOR UPDATE SKIP LOCKED`, so several relays never publish one row at once.

use async_trait::async_trait;
use sagaflow_domain::Envelope;
use sqlx::Row;
use sqlx::postgres::PgPool;

use super::{
    AppendError, AppendRequest, Appended, EventLog, IdempotencyRecord, OutboxRow, Positioned,
    StoreError,
};
use crate::postgres::Migration;

pub const MIGRATIONS: &[Migration] = &[(
    1,
    r#"
CREATE TABLE events (
    position   BIGSERIAL PRIMARY KEY,
    event_id   TEXT NOT NULL UNIQUE,
    stream_id  TEXT NOT NULL,
    version    BIGINT NOT NULL CHECK (version >= 1),
    event_type TEXT NOT NULL,
    envelope   TEXT NOT NULL,
    CONSTRAINT events_stream_version UNIQUE (stream_id, version)
);
CREATE TABLE idempotency_keys (
    key         TEXT PRIMARY KEY,
    stream_id   TEXT NOT NULL,
    fingerprint TEXT NOT NULL
);
CREATE TABLE outbox (
    id             BIGSERIAL PRIMARY KEY,
    event_id       TEXT NOT NULL UNIQUE,
    aggregate_id   TEXT NOT NULL,
    correlation_id TEXT NOT NULL,
    event_type     TEXT NOT NULL,
    exchange       TEXT NOT NULL,
    routing_key    TEXT NOT NULL,
    stream         TEXT NOT NULL,
    payload        TEXT NOT NULL,
    claimed_until  TIMESTAMPTZ,
    published_at   TIMESTAMPTZ
);
CREATE INDEX outbox_pending ON outbox (id) WHERE published_at IS NULL;
"#,
)];

/// How long a relay owns the rows it claimed.
const CLAIM_SECONDS: i64 = 30;

#[derive(Debug, Clone)]
pub struct PostgresEventLog {
    pool: PgPool,
}

fn unavailable(context: &'static str) -> impl Fn(sqlx::Error) -> StoreError {
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

impl PostgresEventLog {
    /// Connects, creating the schema and its tables when needed.
    pub async fn open(url: &str, schema: &str) -> Result<Self, StoreError> {
        let pool = crate::postgres::open(url, schema, MIGRATIONS, 16)
            .await
            .map_err(|e| {
                StoreError::Unavailable(format!(
                    "connecting to PostgreSQL: {}",
                    crate::config::redact(&e.to_string())
                ))
            })?;
        Ok(Self { pool })
    }

    pub async fn close(&self) {
        self.pool.close().await;
    }
}

#[async_trait]
impl EventLog for PostgresEventLog {
    async fn append(&self, request: AppendRequest) -> Result<Appended, AppendError> {
        super::check_batch(&request)?;
        let fail = unavailable("appending");
        let mut tx = self.pool.begin().await.map_err(&fail)?;
        sqlx::query("SELECT pg_advisory_xact_lock(hashtext('sagaflow-event-log'))")
            .execute(&mut *tx)
            .await
            .map_err(&fail)?;
        let actual: i64 =
            sqlx::query_scalar("SELECT COALESCE(MAX(version), 0) FROM events WHERE stream_id = $1")
                .bind(&request.stream_id)
                .fetch_one(&mut *tx)
                .await
                .map_err(&fail)?;
        if to_u64(actual) != request.expected.0 {
            return Err(AppendError::Conflict {
                stream_id: request.stream_id,
                expected: request.expected.0,
                actual: to_u64(actual),
            });
        }
        if let Some(idem) = &request.idempotency {
            let existing =
                sqlx::query("SELECT stream_id, fingerprint FROM idempotency_keys WHERE key = $1")
                    .bind(&idem.key)
                    .fetch_optional(&mut *tx)
                    .await
                    .map_err(&fail)?;
            if let Some(row) = existing {
                return Err(AppendError::DuplicateIdempotencyKey(IdempotencyRecord {
                    key: idem.key.clone(),
                    stream_id: row.get(0),
                    fingerprint: row.get(1),
                }));
            }
            sqlx::query(
                "INSERT INTO idempotency_keys (key, stream_id, fingerprint) VALUES ($1, $2, $3)",
            )
            .bind(&idem.key)
            .bind(&idem.stream_id)
            .bind(&idem.fingerprint)
            .execute(&mut *tx)
            .await
            .map_err(&fail)?;
        }
        let mut last_position = 0;
        for event in &request.events {
            let json = event.to_json();
            let inserted = sqlx::query_scalar::<_, i64>(
                "INSERT INTO events (event_id, stream_id, version, event_type, envelope) VALUES ($1, $2, $3, $4, $5) RETURNING position",
            )
            .bind(&event.event_id)
            .bind(&request.stream_id)
            .bind(to_i64(event.metadata.version))
            .bind(&event.event_type)
            .bind(&json)
            .fetch_one(&mut *tx)
            .await;
            match inserted {
                Ok(position) => last_position = to_u64(position),
                Err(sqlx::Error::Database(db))
                    if db.is_unique_violation()
                        && db.constraint() == Some("events_stream_version") =>
                {
                    return Err(AppendError::Conflict {
                        stream_id: request.stream_id.clone(),
                        expected: request.expected.0,
                        actual: request.expected.0 + 1,
                    });
                }
                Err(sqlx::Error::Database(db)) if db.is_unique_violation() => {
                    return Err(AppendError::Invalid(format!(
                        "event id {} is already in the log",
                        event.event_id
                    )));
                }
                Err(e) => return Err(fail(e).into()),
            }
            let aggregate = event
                .aggregate()
                .unwrap_or(sagaflow_domain::AggregateType::Complaint);
            sqlx::query(
                "INSERT INTO outbox (event_id, aggregate_id, correlation_id, event_type, exchange, routing_key, stream, payload) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
            )
            .bind(&event.event_id)
            .bind(&event.aggregate_id)
            .bind(&event.metadata.correlation_id)
            .bind(&event.event_type)
            .bind(aggregate.exchange())
            .bind(event.routing_key())
            .bind(aggregate.stream())
            .bind(&json)
            .execute(&mut *tx)
            .await
            .map_err(&fail)?;
        }
        tx.commit().await.map_err(&fail)?;
        Ok(Appended {
            version: request.expected.0 + request.events.len() as u64,
            last_position,
        })
    }

    async fn read_stream(
        &self,
        stream_id: &str,
        from_version: u64,
    ) -> Result<Vec<Envelope>, StoreError> {
        let rows: Vec<String> = sqlx::query_scalar(
            "SELECT envelope FROM events WHERE stream_id = $1 AND version >= $2 ORDER BY version",
        )
        .bind(stream_id)
        .bind(to_i64(from_version))
        .fetch_all(&self.pool)
        .await
        .map_err(unavailable("reading a stream"))?;
        rows.iter().map(|r| decode(r)).collect()
    }

    async fn read_all(&self, after: u64, limit: usize) -> Result<Vec<Positioned>, StoreError> {
        let rows = sqlx::query(
            "SELECT position, envelope FROM events WHERE position > $1 ORDER BY position LIMIT $2",
        )
        .bind(to_i64(after))
        .bind(i64::try_from(limit).unwrap_or(i64::MAX))
        .fetch_all(&self.pool)
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
        let row = sqlx::query("SELECT stream_id, fingerprint FROM idempotency_keys WHERE key = $1")
            .bind(key)
            .fetch_optional(&self.pool)
            .await
            .map_err(unavailable("reading an idempotency key"))?;
        Ok(row.map(|row| IdempotencyRecord {
            key: key.to_owned(),
            stream_id: row.get(0),
            fingerprint: row.get(1),
        }))
    }

    async fn pending_outbox(&self, limit: usize) -> Result<Vec<OutboxRow>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, event_id, aggregate_id, correlation_id, event_type, exchange, routing_key, stream, payload \
             FROM outbox WHERE published_at IS NULL ORDER BY id LIMIT $1",
        )
        .bind(i64::try_from(limit).unwrap_or(i64::MAX))
        .fetch_all(&self.pool)
        .await
        .map_err(unavailable("reading the outbox"))?;
        Ok(rows.iter().map(outbox_row).collect())
    }

    async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1")
            .execute(&self.pool)
            .await
            .map_err(unavailable("pinging PostgreSQL"))?;
        Ok(())
    }
}

fn outbox_row(row: &sqlx::postgres::PgRow) -> OutboxRow {
    OutboxRow {
        id: to_u64(row.get("id")),
        event_id: row.get("event_id"),
        aggregate_id: row.get("aggregate_id"),
        correlation_id: row.get("correlation_id"),
        event_type: row.get("event_type"),
        exchange: row.get("exchange"),
        routing_key: row.get("routing_key"),
        stream: row.get("stream"),
        payload: row.get("payload"),
    }
}

#[async_trait]
impl crate::outbox::Outbox for PostgresEventLog {
    /// Claims up to `limit` unpublished rows no other relay holds, for `CLAIM_SECONDS`.
    async fn pending(&self, limit: usize) -> Result<Vec<OutboxRow>, StoreError> {
        let rows = sqlx::query(
            "UPDATE outbox SET claimed_until = now() + make_interval(secs => $2) WHERE id IN ( \
               SELECT id FROM outbox WHERE published_at IS NULL AND (claimed_until IS NULL OR claimed_until < now()) \
               ORDER BY id LIMIT $1 FOR UPDATE SKIP LOCKED) \
             RETURNING id, event_id, aggregate_id, correlation_id, event_type, exchange, routing_key, stream, payload",
        )
        .bind(i64::try_from(limit).unwrap_or(i64::MAX))
        .bind(CLAIM_SECONDS as f64)
        .fetch_all(&self.pool)
        .await
        .map_err(unavailable("claiming outbox rows"))?;
        let mut out: Vec<OutboxRow> = rows.iter().map(outbox_row).collect();
        out.sort_by_key(|r| r.id);
        Ok(out)
    }

    async fn mark_published(&self, ids: &[u64]) -> Result<(), StoreError> {
        let ids: Vec<i64> = ids.iter().map(|i| to_i64(*i)).collect();
        sqlx::query("UPDATE outbox SET published_at = now() WHERE id = ANY($1)")
            .bind(&ids)
            .execute(&self.pool)
            .await
            .map_err(unavailable("marking outbox rows"))?;
        Ok(())
    }

    async fn backlog(&self) -> Result<u64, StoreError> {
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM outbox WHERE published_at IS NULL")
            .fetch_one(&self.pool)
            .await
            .map_err(unavailable("counting the outbox"))?;
        Ok(to_u64(n))
    }
}
