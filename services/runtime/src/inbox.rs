//! The inbox: which events a consumer has applied, and how far each aggregate got, recorded in
//! the same transaction as the consumer's effect.

use sagaflow_domain::Envelope;

pub const SCHEMA: &str = r#"
CREATE TABLE IF NOT EXISTS inbox (
    event_id     TEXT PRIMARY KEY,
    processed_at INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS inbox_versions (
    aggregate_id TEXT PRIMARY KEY,
    version      INTEGER NOT NULL
);
"#;

/// What the inbox says of an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Claim {
    /// Apply it; the inbox now records it (commit with the effect).
    New,
    /// Applied already (a redelivery or a replay): skip it.
    Duplicate,
    /// An earlier version of its aggregate has not been applied yet.
    TooEarly { expected: u64 },
}

/// Checks and records `event` inside the writer's transaction ([`crate::sqlite::writer`]).
pub fn claim(conn: &rusqlite::Connection, event: &Envelope) -> Result<Claim, rusqlite::Error> {
    // Whether the event was seen, and how far its aggregate got, in one statement.
    let (seen, last): (Option<i64>, i64) = conn
        .prepare_cached(
            "SELECT (SELECT 1 FROM inbox WHERE event_id = ?1), \
                    COALESCE((SELECT version FROM inbox_versions WHERE aggregate_id = ?2), 0)",
        )?
        .query_row([&event.event_id, &event.aggregate_id], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })?;
    if seen.is_some() {
        return Ok(Claim::Duplicate);
    }
    let last = u64::try_from(last).unwrap_or(0);
    let version = event.metadata.version;
    if version <= last {
        return Ok(Claim::Duplicate);
    }
    if version > last + 1 {
        return Ok(Claim::TooEarly { expected: last + 1 });
    }
    conn.prepare_cached("INSERT INTO inbox (event_id, processed_at) VALUES (?1, ?2)")?
        .execute(rusqlite::params![
            event.event_id,
            chrono::Utc::now().timestamp_millis()
        ])?;
    conn.prepare_cached(
        "INSERT INTO inbox_versions (aggregate_id, version) VALUES (?1, ?2) \
         ON CONFLICT (aggregate_id) DO UPDATE SET version = excluded.version",
    )?
    .execute(rusqlite::params![
        event.aggregate_id,
        i64::try_from(version).unwrap_or(i64::MAX)
    ])?;
    Ok(Claim::New)
}

/// The inbox on PostgreSQL.
pub mod pg {
    use sagaflow_domain::Envelope;
    use sqlx::PgConnection;

    use super::Claim;

    pub const SCHEMA: &str = r#"
CREATE TABLE IF NOT EXISTS inbox (
    event_id     TEXT PRIMARY KEY,
    processed_at TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE TABLE IF NOT EXISTS inbox_versions (
    aggregate_id TEXT PRIMARY KEY,
    version      BIGINT NOT NULL
);
"#;

    /// Checks and records `event` inside the caller's transaction. The aggregate's row is
    /// locked, so two replicas handling events of one aggregate take turns.
    pub async fn claim(tx: &mut PgConnection, event: &Envelope) -> Result<Claim, sqlx::Error> {
        sqlx::query("INSERT INTO inbox_versions (aggregate_id, version) VALUES ($1, 0) ON CONFLICT (aggregate_id) DO NOTHING")
            .bind(&event.aggregate_id)
            .execute(&mut *tx)
            .await?;
        let last: i64 = sqlx::query_scalar(
            "SELECT version FROM inbox_versions WHERE aggregate_id = $1 FOR UPDATE",
        )
        .bind(&event.aggregate_id)
        .fetch_one(&mut *tx)
        .await?;
        let seen: Option<i32> = sqlx::query_scalar("SELECT 1 FROM inbox WHERE event_id = $1")
            .bind(&event.event_id)
            .fetch_optional(&mut *tx)
            .await?;
        let last = u64::try_from(last).unwrap_or(0);
        let version = event.metadata.version;
        if seen.is_some() || version <= last {
            return Ok(Claim::Duplicate);
        }
        if version > last + 1 {
            return Ok(Claim::TooEarly { expected: last + 1 });
        }
        sqlx::query("INSERT INTO inbox (event_id) VALUES ($1)")
            .bind(&event.event_id)
            .execute(&mut *tx)
            .await?;
        sqlx::query("UPDATE inbox_versions SET version = $2 WHERE aggregate_id = $1")
            .bind(&event.aggregate_id)
            .bind(i64::try_from(version).unwrap_or(i64::MAX))
            .execute(&mut *tx)
            .await?;
        Ok(Claim::New)
    }
}
