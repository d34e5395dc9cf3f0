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

impl Claim {
    /// What the inbox says of an event at `version`, given whether its id was seen and the
    /// last version applied of its aggregate: the one rule every adapter carries out.
    pub fn of(seen: bool, last: u64, version: u64) -> Self {
        if seen || version <= last {
            Claim::Duplicate
        } else if version > last + 1 {
            Claim::TooEarly { expected: last + 1 }
        } else {
            Claim::New
        }
    }
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
    let version = event.metadata.version;
    let claim = Claim::of(seen.is_some(), u64::try_from(last).unwrap_or(0), version);
    if claim != Claim::New {
        return Ok(claim);
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
        Ok(claim_all(tx, std::slice::from_ref(event))
            .await?
            .pop()
            .unwrap_or(Claim::Duplicate))
    }

    /// [`claim`] for a batch, in a handful of statements whatever its size: the batch's
    /// aggregates are locked (in one order, so two replicas' batches take turns instead of
    /// deadlocking), what the inbox knows of them and of the events is read at once, each event
    /// is decided in order (an event sees the ones before it), and the new ones are recorded
    /// with two statements. One answer per event, as `claim` would give one after the other.
    pub async fn claim_all(
        tx: &mut PgConnection,
        events: &[Envelope],
    ) -> Result<Vec<Claim>, sqlx::Error> {
        use std::collections::{BTreeSet, HashMap, HashSet};
        let aggregates: Vec<&str> = events
            .iter()
            .map(|e| e.aggregate_id.as_str())
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        sqlx::query(
            "INSERT INTO inbox_versions (aggregate_id, version) SELECT a, 0 FROM UNNEST($1::text[]) AS a \
             ON CONFLICT (aggregate_id) DO NOTHING",
        )
        .bind(&aggregates)
        .execute(&mut *tx)
        .await?;
        let mut last: HashMap<String, u64> = sqlx::query_as::<_, (String, i64)>(
            "SELECT aggregate_id, version FROM inbox_versions WHERE aggregate_id = ANY($1) \
             ORDER BY aggregate_id FOR UPDATE",
        )
        .persistent(false)
        .bind(&aggregates)
        .fetch_all(&mut *tx)
        .await?
        .into_iter()
        .map(|(a, v)| (a, u64::try_from(v).unwrap_or(0)))
        .collect();
        let ids: Vec<&str> = events.iter().map(|e| e.event_id.as_str()).collect();
        let mut seen: HashSet<String> =
            sqlx::query_scalar::<_, String>("SELECT event_id FROM inbox WHERE event_id = ANY($1)")
                .persistent(false)
                .bind(&ids)
                .fetch_all(&mut *tx)
                .await?
                .into_iter()
                .collect();
        let mut claims = Vec::with_capacity(events.len());
        let mut new_ids = Vec::new();
        for event in events {
            let reached = last.get(&event.aggregate_id).copied().unwrap_or(0);
            let version = event.metadata.version;
            let claim = Claim::of(seen.contains(&event.event_id), reached, version);
            if claim == Claim::New {
                seen.insert(event.event_id.clone());
                last.insert(event.aggregate_id.clone(), version);
                new_ids.push(event.event_id.as_str());
            }
            claims.push(claim);
        }
        if !new_ids.is_empty() {
            sqlx::query("INSERT INTO inbox (event_id) SELECT * FROM UNNEST($1::text[])")
                .bind(&new_ids)
                .execute(&mut *tx)
                .await?;
            let (moved, versions): (Vec<&str>, Vec<i64>) = aggregates
                .iter()
                .filter_map(|a| {
                    last.get(*a)
                        .map(|v| (*a, i64::try_from(*v).unwrap_or(i64::MAX)))
                })
                .unzip();
            // An upsert, not an UPDATE … FROM UNNEST: its conflict check always goes through
            // the key's index, where a join's plan kept from an empty table scans it all.
            sqlx::query(
                "INSERT INTO inbox_versions (aggregate_id, version) SELECT * FROM UNNEST($1::text[], $2::bigint[]) \
                 ON CONFLICT (aggregate_id) DO UPDATE SET version = excluded.version \
                 WHERE inbox_versions.version <> excluded.version",
            )
            .bind(&moved)
            .bind(&versions)
            .execute(&mut *tx)
            .await?;
        }
        Ok(claims)
    }
}
