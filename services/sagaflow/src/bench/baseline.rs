//! The baseline: bare transactions of the command path's shape (insert one event row and one
//! outbox row, commit) on the same store, at the same concurrency, in the same run. Nothing of
//! sagaflow runs in them but the tables: the same schema the event log creates.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use sagaflow_runtime::event_log;
use sqlx::{PgPool, SqlitePool};

use super::stats::Samples;

/// The PostgreSQL schema the baseline writes in (dropped afterwards).
const PG_SCHEMA: &str = "sagaflow_bench_baseline";

/// What the baseline measured.
#[derive(Debug)]
pub struct Measured {
    pub store: &'static str,
    pub transactions: u64,
    pub elapsed: Duration,
    pub latencies: Samples,
}

/// A representative envelope: the size of a COMPLAINT_CREATED event.
fn envelope(event_id: &str, stream_id: &str) -> String {
    serde_json::json!({
        "eventId": event_id,
        "eventType": "COMPLAINT_CREATED",
        "aggregateId": stream_id,
        "aggregateType": "COMPLAINT",
        "timestamp": "2026-01-01T00:00:00.000Z",
        "payload": {
            "complaintId": stream_id,
            "userId": "bench-user",
            "title": "Bench complaint",
            "description": "The kettle leaks when it boils; the base is wet and the switch trips.",
            "priority": "HIGH",
            "category": "appliances"
        },
        "metadata": {"version": 1, "correlationId": event_id, "causationId": event_id, "userId": "bench-user"}
    })
    .to_string()
}

/// Runs `concurrency` writers until `duration` or `max` transactions, whichever first.
async fn drive<F, Fut>(
    concurrency: usize,
    duration: Duration,
    max: u64,
    one: F,
) -> anyhow::Result<(u64, Duration, Samples)>
where
    F: Fn(String, String) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = anyhow::Result<()>> + Send,
{
    let one = Arc::new(one);
    let issued = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let deadline = started + duration;
    let mut writers = tokio::task::JoinSet::new();
    for _ in 0..concurrency {
        let (one, issued) = (one.clone(), issued.clone());
        writers.spawn(async move {
            let mut samples = Samples::default();
            while Instant::now() < deadline && issued.fetch_add(1, Ordering::Relaxed) < max {
                let (event_id, stream_id) = (
                    uuid::Uuid::new_v4().to_string(),
                    uuid::Uuid::new_v4().to_string(),
                );
                let t = Instant::now();
                one(event_id, stream_id).await?;
                samples.push(t.elapsed());
            }
            anyhow::Ok(samples)
        });
    }
    let mut all = Samples::default();
    while let Some(done) = writers.join_next().await {
        all.extend(done.context("a baseline writer panicked")??);
    }
    Ok((all.len() as u64, started.elapsed(), all))
}

/// On PostgreSQL at `url`, in a scratch schema with the event log's tables.
pub async fn postgres(
    url: &str,
    concurrency: usize,
    duration: Duration,
    max: u64,
) -> anyhow::Result<Measured> {
    let pool = sagaflow_runtime::postgres::open(
        url,
        PG_SCHEMA,
        event_log::postgres::MIGRATIONS,
        u32::try_from(concurrency).unwrap_or(u32::MAX).max(1),
    )
    .await
    .with_context(|| {
        format!(
            "opening the baseline's schema on {}",
            sagaflow_runtime::config::redact(url)
        )
    })?;
    sqlx::raw_sql("TRUNCATE events, outbox")
        .execute(&pool)
        .await
        .context("emptying the baseline's tables")?;
    let writer = pool.clone();
    let (transactions, elapsed, latencies) =
        drive(concurrency, duration, max, move |event_id, stream_id| {
            pg_transaction(writer.clone(), event_id, stream_id)
        })
        .await?;
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "DROP SCHEMA {PG_SCHEMA} CASCADE"
    )))
    .execute(&pool)
    .await
    .context("dropping the baseline's schema")?;
    pool.close().await;
    Ok(Measured {
        store: "postgres",
        transactions,
        elapsed,
        latencies,
    })
}

async fn pg_transaction(pool: PgPool, event_id: String, stream_id: String) -> anyhow::Result<()> {
    let json = envelope(&event_id, &stream_id);
    let mut tx = pool.begin().await.context("beginning")?;
    sqlx::query(
        "INSERT INTO events (event_id, stream_id, version, event_type, envelope) VALUES ($1, $2, 1, 'COMPLAINT_CREATED', $3)",
    )
    .bind(&event_id)
    .bind(&stream_id)
    .bind(&json)
    .execute(&mut *tx)
    .await
    .context("inserting the event row")?;
    sqlx::query(
        "INSERT INTO outbox (event_id, aggregate_id, correlation_id, event_type, exchange, routing_key, stream, payload) \
         VALUES ($1, $2, $1, 'COMPLAINT_CREATED', 'complaints.events', 'complaint.created', 'complaints-stream', $3)",
    )
    .bind(&event_id)
    .bind(&stream_id)
    .bind(&json)
    .execute(&mut *tx)
    .await
    .context("inserting the outbox row")?;
    tx.commit().await.context("committing")?;
    Ok(())
}

/// In a fresh SQLite file in `dir`, opened as the embedded stores open theirs (WAL,
/// `synchronous=FULL`, one writer connection).
pub async fn sqlite(
    dir: &Path,
    concurrency: usize,
    duration: Duration,
    max: u64,
) -> anyhow::Result<Measured> {
    let path = dir.join("bench-baseline.db");
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
    }
    let db = sagaflow_runtime::sqlite::Db::open(
        &path,
        &[event_log::sqlite::SCHEMA, sagaflow_runtime::outbox::SCHEMA],
    )
    .await
    .with_context(|| format!("opening {}", path.display()))?;
    let writer = db.writer.clone();
    let measured = drive(concurrency, duration, max, move |event_id, stream_id| {
        sqlite_transaction(writer.clone(), event_id, stream_id)
    })
    .await;
    db.close().await;
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
    }
    let (transactions, elapsed, latencies) = measured?;
    Ok(Measured {
        store: "sqlite",
        transactions,
        elapsed,
        latencies,
    })
}

async fn sqlite_transaction(
    pool: SqlitePool,
    event_id: String,
    stream_id: String,
) -> anyhow::Result<()> {
    let json = envelope(&event_id, &stream_id);
    let mut tx = pool.begin().await.context("beginning")?;
    sqlx::query(
        "INSERT INTO events (event_id, stream_id, version, event_type, envelope) VALUES (?, ?, 1, 'COMPLAINT_CREATED', ?)",
    )
    .bind(&event_id)
    .bind(&stream_id)
    .bind(&json)
    .execute(&mut *tx)
    .await
    .context("inserting the event row")?;
    sqlx::query(
        "INSERT INTO outbox (event_id, aggregate_id, correlation_id, event_type, exchange, routing_key, stream, payload) \
         VALUES (?, ?, ?, 'COMPLAINT_CREATED', 'complaints.events', 'complaint.created', 'complaints-stream', ?)",
    )
    .bind(&event_id)
    .bind(&stream_id)
    .bind(&event_id)
    .bind(&json)
    .execute(&mut *tx)
    .await
    .context("inserting the outbox row")?;
    tx.commit().await.context("committing")?;
    Ok(())
}

/// A database of the bench's own on the PostgreSQL server of `url`, dropped by [`Scratch::drop`].
pub struct Scratch {
    pub url: String,
    admin: String,
    name: String,
}

/// Creates `name` (dropping a leftover of an interrupted run first) on `url`'s server.
pub async fn scratch_database(url: &str, name: &str) -> anyhow::Result<Scratch> {
    let mut scratch = reqwest::Url::parse(url).context("parsing DATABASE_URL")?;
    scratch.set_path(&format!("/{name}"));
    let mut conn = <sqlx::PgConnection as sqlx::Connection>::connect(url)
        .await
        .with_context(|| format!("connecting to {}", sagaflow_runtime::config::redact(url)))?;
    // Names from the code, never from outside.
    for sql in [
        format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"),
        format!("CREATE DATABASE {name}"),
    ] {
        sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
            .execute(&mut conn)
            .await
            .with_context(|| format!("creating the scratch database {name} (CREATEDB needed)"))?;
    }
    Ok(Scratch {
        url: scratch.to_string(),
        admin: url.to_owned(),
        name: name.to_owned(),
    })
}

impl Scratch {
    pub async fn drop(self) -> anyhow::Result<()> {
        let mut conn = <sqlx::PgConnection as sqlx::Connection>::connect(&self.admin)
            .await
            .context("connecting to drop the scratch database")?;
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
            "DROP DATABASE IF EXISTS {} WITH (FORCE)",
            self.name
        )))
        .execute(&mut conn)
        .await
        .with_context(|| format!("dropping the scratch database {}", self.name))?;
        Ok(())
    }
}
