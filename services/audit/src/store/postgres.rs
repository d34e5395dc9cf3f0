//! The audit log on PostgreSQL, in the audit service's schema.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sagaflow_domain::Envelope;
use sagaflow_runtime::event_log::StoreError;
use sagaflow_runtime::inbox::Claim;
use sagaflow_runtime::outbox::pg::PgOutbox;
use sagaflow_runtime::postgres::Migration;
use serde_json::{Value, json};
use sqlx::postgres::{PgPool, PgRow};
use sqlx::{Postgres, QueryBuilder, Row};

use super::{AuditLog, Recorded, Search};

pub const MIGRATIONS: &[Migration] = &[
    (
        1,
        r#"
CREATE TABLE entries (
    seq              BIGSERIAL PRIMARY KEY,
    event_id         TEXT NOT NULL UNIQUE,
    event_type       TEXT NOT NULL,
    aggregate_id     TEXT NOT NULL,
    aggregate_type   TEXT NOT NULL,
    complaint_id     TEXT,
    trigger_event_id TEXT,
    version          BIGINT NOT NULL,
    correlation_id   TEXT NOT NULL,
    user_id          TEXT,
    timestamp        BIGINT NOT NULL,
    recorded_at      BIGINT NOT NULL,
    compensated      BOOLEAN NOT NULL DEFAULT FALSE,
    compensated_by   TEXT,
    envelope         TEXT NOT NULL
);
CREATE INDEX entries_aggregate ON entries (aggregate_id, version);
CREATE INDEX entries_type ON entries (event_type, seq);
CREATE INDEX entries_correlation ON entries (correlation_id, seq);
CREATE INDEX entries_user ON entries (user_id, seq);
CREATE INDEX entries_trigger ON entries (trigger_event_id);
"#,
    ),
    (2, sagaflow_runtime::inbox::pg::SCHEMA),
    (3, sagaflow_runtime::outbox::pg::SCHEMA),
    (4, sagaflow_runtime::outbox::pg::SCHEMA_BY_AGGREGATE),
    (5, sagaflow_runtime::outbox::pg::SCHEMA_RELAY_LEASE),
];

#[derive(Debug, Clone)]
pub struct PgAudit {
    pool: PgPool,
}

fn unavailable(context: &'static str) -> impl Fn(sqlx::Error) -> StoreError {
    move |e| StoreError::Unavailable(format!("{context}: {e}"))
}

fn entry(row: &PgRow) -> Value {
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
        "compensated": row.get::<bool, _>("compensated"),
        "compensatedBy": row.get::<Option<String>, _>("compensated_by"),
    })
}

impl PgAudit {
    /// Connects, creating the schema and its tables when needed.
    pub async fn open(url: &str, schema: &str) -> Result<Self, StoreError> {
        let pool = sagaflow_runtime::postgres::open(url, schema, MIGRATIONS, 8)
            .await
            .map_err(|e| {
                StoreError::Unavailable(format!(
                    "connecting to PostgreSQL: {}",
                    sagaflow_runtime::config::redact(&e.to_string())
                ))
            })?;
        Ok(Self { pool })
    }

    pub fn outbox(&self) -> PgOutbox {
        PgOutbox::new(self.pool.clone())
    }

    pub async fn close(&self) {
        self.pool.close().await;
    }
}

/// Inserts the entries of `events` (claimed new) with one statement, in order.
async fn insert_entries(
    tx: &mut sqlx::PgConnection,
    events: &[&Envelope],
) -> Result<(), sqlx::Error> {
    if events.is_empty() {
        return Ok(());
    }
    let links: Vec<(Option<String>, Option<String>)> =
        events.iter().map(|e| super::links(e)).collect();
    let now = Utc::now().timestamp_millis();
    sqlx::query(
            "INSERT INTO entries (event_id, event_type, aggregate_id, aggregate_type, complaint_id, trigger_event_id, version, \
             correlation_id, user_id, timestamp, recorded_at, envelope) \
             SELECT e, t, a, at, c, tr, v, co, u, ts, $11, env FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], \
             $5::text[], $6::text[], $7::bigint[], $8::text[], $9::text[], $10::bigint[], $12::text[]) \
             WITH ORDINALITY AS x(e, t, a, at, c, tr, v, co, u, ts, env, n) ORDER BY n",
        )
        .bind(events.iter().map(|e| e.event_id.as_str()).collect::<Vec<_>>())
        .bind(events.iter().map(|e| e.event_type.as_str()).collect::<Vec<_>>())
        .bind(events.iter().map(|e| e.aggregate_id.as_str()).collect::<Vec<_>>())
        .bind(events.iter().map(|e| e.aggregate_type.as_str()).collect::<Vec<_>>())
        .bind(links.iter().map(|(c, _)| c.as_deref()).collect::<Vec<_>>())
        .bind(links.iter().map(|(_, t)| t.as_deref()).collect::<Vec<_>>())
        .bind(
            events.iter()
                .map(|e| i64::try_from(e.metadata.version).unwrap_or(i64::MAX))
                .collect::<Vec<_>>(),
        )
        .bind(events.iter().map(|e| e.metadata.correlation_id.as_str()).collect::<Vec<_>>())
        .bind(events.iter().map(|e| e.metadata.user_id.as_deref()).collect::<Vec<_>>())
        .bind(
            events.iter()
                .map(|e| e.metadata.timestamp.timestamp_millis())
                .collect::<Vec<_>>(),
        )
        .bind(now)
        .bind(events.iter().map(|e| e.to_json()).collect::<Vec<_>>())
        .execute(&mut *tx)
        .await?;
    Ok(())
}

/// Records one event inside `tx` (with its inbox claim and any compensation it carries).
async fn record_in(tx: &mut sqlx::PgConnection, event: &Envelope) -> Result<Recorded, StoreError> {
    let fail = unavailable("recording an audit entry");
    match sagaflow_runtime::inbox::pg::claim(&mut *tx, event)
        .await
        .map_err(&fail)?
    {
        Claim::Duplicate => return Ok(Recorded::Duplicate),
        Claim::TooEarly { expected } => return Ok(Recorded::TooEarly { expected }),
        Claim::New => {}
    }
    insert_entries(&mut *tx, &[event]).await.map_err(&fail)?;
    let mut compensation = None;
    if let Some((ids, stream, data, ctx)) = super::compensation(event) {
        sqlx::query("UPDATE entries SET compensated = TRUE, compensated_by = $1 WHERE event_id = ANY($2) OR trigger_event_id = ANY($2)")
            .bind(&event.event_id)
            .bind(&ids)
            .execute(&mut *tx)
            .await
            .map_err(&fail)?;
        let out = sagaflow_runtime::outbox::pg::record(&mut *tx, &stream, &data, &ctx)
            .await
            .map_err(&fail)?;
        compensation = Some(Box::new(out));
    }
    Ok(Recorded::New { compensation })
}

impl PgAudit {
    /// A batch without compensations: the inbox claims at once, then one insert of every new
    /// entry.
    async fn record_set(
        &self,
        events: &[Envelope],
    ) -> Result<Vec<Result<Recorded, StoreError>>, sqlx::Error> {
        let mut tx = self.pool.begin().await?;
        let claims = sagaflow_runtime::inbox::pg::claim_all(&mut tx, events).await?;
        let new: Vec<&Envelope> = events
            .iter()
            .zip(&claims)
            .filter(|(_, c)| **c == Claim::New)
            .map(|(e, _)| e)
            .collect();
        insert_entries(&mut tx, &new).await?;
        tx.commit().await?;
        Ok(claims
            .into_iter()
            .map(|c| {
                Ok(match c {
                    Claim::New => Recorded::New { compensation: None },
                    Claim::Duplicate => Recorded::Duplicate,
                    Claim::TooEarly { expected } => Recorded::TooEarly { expected },
                })
            })
            .collect())
    }
}

#[async_trait]
impl AuditLog for PgAudit {
    async fn record(&self, event: &Envelope) -> Result<Recorded, StoreError> {
        let fail = unavailable("recording an audit entry");
        let mut tx = self.pool.begin().await.map_err(&fail)?;
        let recorded = record_in(&mut tx, event).await?;
        tx.commit().await.map_err(&fail)?;
        Ok(recorded)
    }

    /// One transaction for the batch, in a few statements whatever its size (`record_set`).
    /// A batch that carries a compensation, or that the database refuses, is recorded event by
    /// event instead (see `in_savepoints!`: one refused event leaves the others in).
    async fn record_all(&self, events: &[Envelope]) -> Vec<Result<Recorded, StoreError>> {
        if !events.iter().any(|e| super::compensation(e).is_some()) {
            match self.record_set(events).await {
                Ok(done) => return done,
                Err(e) => {
                    tracing::debug!(error = %e, "recording audit entries as a set; again one by one")
                }
            }
        }
        let done =
            sagaflow_runtime::in_savepoints!(begin = self.pool.begin(), events, |conn, event| {
                record_in(conn, event)
            });
        done.unwrap_or_else(|e| {
            sagaflow_runtime::event_log::failed_all(
                events.len(),
                &unavailable("recording audit entries")(e),
            )
        })
    }

    async fn trail(&self, aggregate_id: &str) -> Result<Vec<Value>, StoreError> {
        let rows =
            sqlx::query("SELECT * FROM entries WHERE aggregate_id = $1 ORDER BY version, seq")
                .bind(aggregate_id)
                .fetch_all(&self.pool)
                .await
                .map_err(unavailable("reading a trail"))?;
        Ok(rows.iter().map(entry).collect())
    }

    async fn search(&self, s: &Search) -> Result<(Vec<Value>, Option<u64>), StoreError> {
        let mut q: QueryBuilder<Postgres> = QueryBuilder::new("SELECT * FROM entries WHERE seq > ");
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
            q.push(" AND compensated = ").push_bind(c);
        }
        q.push(" ORDER BY seq LIMIT ")
            .push_bind(i64::from(s.limit) + 1);
        let rows = q
            .build()
            .fetch_all(&self.pool)
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
            .execute(&self.pool)
            .await
            .map_err(unavailable("pinging PostgreSQL"))?;
        Ok(())
    }
}
