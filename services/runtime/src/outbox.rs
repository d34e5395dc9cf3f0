//! The transactional outbox: rows written in the same transaction as the state change that
//! caused them, published later by the [`relay`](crate::relay).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use async_trait::async_trait;
use sagaflow_domain::{AggregateType, Envelope};
use sqlx::Row;

use crate::event_log::{OutboxRow, StoreError};
use crate::sqlite::Db;

/// The outbox table; include it in the schema of any database that records events.
pub const SCHEMA: &str = r#"
CREATE TABLE IF NOT EXISTS outbox (
    id             INTEGER PRIMARY KEY AUTOINCREMENT,
    event_id       TEXT NOT NULL UNIQUE,
    aggregate_id   TEXT NOT NULL,
    correlation_id TEXT NOT NULL,
    event_type     TEXT NOT NULL,
    exchange       TEXT NOT NULL,
    routing_key    TEXT NOT NULL,
    stream         TEXT NOT NULL,
    payload        TEXT NOT NULL,
    published_at   INTEGER
);
CREATE INDEX IF NOT EXISTS outbox_pending ON outbox (id) WHERE published_at IS NULL;
CREATE TABLE IF NOT EXISTS own_streams (
    aggregate_id TEXT PRIMARY KEY,
    version      INTEGER NOT NULL
);
"#;

/// Records a new event of a stream this service writes on its own (a complaint's notification
/// or audit stream): the stream's next version, and its outbox row, inside the writer's
/// transaction ([`crate::sqlite::writer`]).
pub fn record(
    conn: &rusqlite::Connection,
    stream: &str,
    payload: &sagaflow_domain::Payload,
    ctx: &sagaflow_domain::Context,
) -> Result<Envelope, rusqlite::Error> {
    let version: i64 = conn
        .prepare_cached(
            "INSERT INTO own_streams (aggregate_id, version) VALUES (?1, 1) \
             ON CONFLICT (aggregate_id) DO UPDATE SET version = version + 1 RETURNING version",
        )?
        .query_row([stream], |r| r.get(0))?;
    let event = Envelope::new(
        uuid::Uuid::now_v7().to_string(),
        stream,
        u64::try_from(version).unwrap_or(1),
        payload,
        ctx,
    );
    write(conn, &event, &event.to_stored_json())?;
    Ok(event)
}

/// Writes the outbox row of `event` inside the writer's transaction.
pub fn write(
    conn: &rusqlite::Connection,
    event: &Envelope,
    payload: &str,
) -> Result<(), rusqlite::Error> {
    let aggregate = event.aggregate().unwrap_or(AggregateType::Complaint);
    conn.prepare_cached(
        "INSERT INTO outbox (event_id, aggregate_id, correlation_id, event_type, exchange, routing_key, stream, payload) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
    )?
    .execute(rusqlite::params![
        event.event_id,
        event.aggregate_id,
        event.metadata.correlation_id,
        event.event_type,
        aggregate.exchange(),
        event.routing_key(),
        aggregate.stream(),
        payload,
    ])?;
    Ok(())
}

/// Where the relay takes rows from.
#[async_trait]
pub trait Outbox: Send + Sync + 'static {
    /// Up to `limit` rows not yet published, oldest first.
    async fn pending(&self, limit: usize) -> Result<Vec<OutboxRow>, StoreError>;
    /// Marks rows published (they are kept for inspection).
    async fn mark_published(&self, ids: &[u64]) -> Result<(), StoreError>;
    /// Rows not yet published.
    async fn backlog(&self) -> Result<u64, StoreError>;
    /// Gives back rows taken by `pending` that were not published (a publish failed), so that
    /// they are retried at once rather than when the claim runs out.
    async fn release(&self, _ids: &[u64]) -> Result<(), StoreError> {
        Ok(())
    }
}

/// The outbox of an embedded database.
#[derive(Debug, Clone)]
pub struct SqliteOutbox {
    db: Db,
    /// Every row up to this id is published (marked or about to be): the relay reads after
    /// it, so a mark can be written behind, with the next commit of the file, instead of
    /// costing the relay a commit of its own. A mark lost to a crash only means a row
    /// published again, which consumers skip by event id.
    published_through: Arc<AtomicU64>,
}

impl SqliteOutbox {
    pub fn new(db: Db) -> Self {
        Self {
            db,
            published_through: Arc::default(),
        }
    }
}

fn unavailable(context: &'static str) -> impl Fn(sqlx::Error) -> StoreError {
    move |e| StoreError::Unavailable(format!("{context}: {e}"))
}

/// Reads pending rows from any pool that holds an outbox.
pub async fn pending(pool: &sqlx::SqlitePool, limit: usize) -> Result<Vec<OutboxRow>, StoreError> {
    pending_after(pool, 0, limit).await
}

/// Reads pending rows with an id above `after`.
async fn pending_after(
    pool: &sqlx::SqlitePool,
    after: u64,
    limit: usize,
) -> Result<Vec<OutboxRow>, StoreError> {
    let rows = sqlx::query(
        "SELECT id, event_id, aggregate_id, correlation_id, event_type, exchange, routing_key, stream, payload FROM outbox \
         WHERE published_at IS NULL AND id > ? ORDER BY id LIMIT ?",
    )
    .bind(i64::try_from(after).unwrap_or(i64::MAX))
    .bind(i64::try_from(limit).unwrap_or(i64::MAX))
    .fetch_all(pool)
    .await
    .map_err(unavailable("reading the outbox"))?;
    Ok(rows
        .iter()
        .map(|row| OutboxRow {
            id: u64::try_from(row.get::<i64, _>("id")).unwrap_or(0),
            event_id: row.get("event_id"),
            aggregate_id: row.get("aggregate_id"),
            correlation_id: row.get("correlation_id"),
            event_type: row.get("event_type"),
            exchange: row.get("exchange"),
            routing_key: row.get("routing_key"),
            stream: row.get("stream"),
            payload: row.get("payload"),
        })
        .collect())
}

#[async_trait]
impl Outbox for SqliteOutbox {
    async fn pending(&self, limit: usize) -> Result<Vec<OutboxRow>, StoreError> {
        // A reader sees every commit once it returned (WAL); the writer stays free for the
        // commands and consumers that share this file.
        let after = self.published_through.load(Ordering::Acquire);
        pending_after(&self.db.reader, after, limit).await
    }

    async fn mark_published(&self, ids: &[u64]) -> Result<(), StoreError> {
        // The relay publishes what `pending` gave it, lowest ids first, all or nothing.
        if let Some(&last) = ids.iter().max() {
            self.published_through.fetch_max(last, Ordering::AcqRel);
        }
        let ids: Vec<i64> = ids
            .iter()
            .map(|id| i64::try_from(*id).unwrap_or(i64::MAX))
            .collect();
        self.db.jobs.run_behind("marking the outbox", move |conn| {
            let now = chrono::Utc::now().timestamp_millis();
            let mut mark =
                conn.prepare_cached("UPDATE outbox SET published_at = ?1 WHERE id = ?2")?;
            for id in ids {
                mark.execute([now, id])?;
            }
            Ok(())
        });
        Ok(())
    }

    async fn backlog(&self) -> Result<u64, StoreError> {
        let after = self.published_through.load(Ordering::Acquire);
        let n: i64 =
            sqlx::query_scalar("SELECT COUNT(*) FROM outbox WHERE published_at IS NULL AND id > ?")
                .bind(i64::try_from(after).unwrap_or(i64::MAX))
                .fetch_one(&self.db.reader)
                .await
                .map_err(unavailable("counting the outbox"))?;
        Ok(u64::try_from(n).unwrap_or(0))
    }
}

/// The outbox on PostgreSQL: the same rows, published by one relay at a time per schema (the
/// holder of a lease that it renews at every round), so that several relays never publish one
/// row at once and each aggregate's rows leave in order.
pub mod pg {
    use async_trait::async_trait;
    use sagaflow_domain::{AggregateType, Context, Envelope, Payload};
    use sqlx::postgres::{PgPool, PgRow};
    use sqlx::{PgConnection, Row};

    use crate::event_log::{OutboxRow, StoreError};

    /// The outbox tables; a migration of any schema that records events.
    pub const SCHEMA: &str = r#"
CREATE TABLE IF NOT EXISTS outbox (
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
CREATE INDEX IF NOT EXISTS outbox_pending ON outbox (id) WHERE published_at IS NULL;
CREATE TABLE IF NOT EXISTS own_streams (
    aggregate_id TEXT PRIMARY KEY,
    version      BIGINT NOT NULL
);
"#;

    /// A later migration of the same schemas: finds an aggregate's unpublished rows at once.
    pub const SCHEMA_BY_AGGREGATE: &str = r#"
CREATE INDEX IF NOT EXISTS outbox_unpublished_by_aggregate ON outbox (aggregate_id, id)
    WHERE published_at IS NULL;
"#;

    /// A later migration of the same schemas: the relay's lease (one relay publishes a
    /// schema's outbox at a time), in place of a claim written on every row.
    pub const SCHEMA_RELAY_LEASE: &str = r#"
CREATE TABLE IF NOT EXISTS outbox_relay (
    name       TEXT PRIMARY KEY,
    holder     TEXT NOT NULL,
    expires_at TIMESTAMPTZ NOT NULL
);
DROP INDEX IF EXISTS outbox_unpublished_by_aggregate;
"#;

    /// How long a relay holds the lease without renewing it; it renews it at every round (at
    /// least every relay tick), so another replica's relay takes over this long after the
    /// holder died.
    const LEASE_SECONDS: f64 = 10.0;

    /// Writes the outbox row of `event` inside the caller's transaction.
    pub async fn write(
        tx: &mut PgConnection,
        event: &Envelope,
        payload: &str,
    ) -> Result<(), sqlx::Error> {
        let aggregate = event.aggregate().unwrap_or(AggregateType::Complaint);
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
        .bind(payload)
        .execute(&mut *tx)
        .await?;
        Ok(())
    }

    /// Writes the outbox rows of `events` (each with its JSON) with one statement, in order,
    /// inside the caller's transaction.
    pub async fn write_all(
        tx: &mut PgConnection,
        events: &[(&Envelope, String)],
    ) -> Result<(), sqlx::Error> {
        let aggregate = |e: &Envelope| e.aggregate().unwrap_or(AggregateType::Complaint);
        sqlx::query(
            "INSERT INTO outbox (event_id, aggregate_id, correlation_id, event_type, exchange, routing_key, stream, payload) \
             SELECT e, a, c, t, x, r, s, p FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[], $8::text[]) \
             WITH ORDINALITY AS u(e, a, c, t, x, r, s, p, n) ORDER BY n",
        )
        .bind(events.iter().map(|(e, _)| e.event_id.as_str()).collect::<Vec<_>>())
        .bind(events.iter().map(|(e, _)| e.aggregate_id.as_str()).collect::<Vec<_>>())
        .bind(events.iter().map(|(e, _)| e.metadata.correlation_id.as_str()).collect::<Vec<_>>())
        .bind(events.iter().map(|(e, _)| e.event_type.as_str()).collect::<Vec<_>>())
        .bind(events.iter().map(|(e, _)| aggregate(e).exchange()).collect::<Vec<_>>())
        .bind(events.iter().map(|(e, _)| e.routing_key()).collect::<Vec<_>>())
        .bind(events.iter().map(|(e, _)| aggregate(e).stream()).collect::<Vec<_>>())
        .bind(events.iter().map(|(_, json)| json.as_str()).collect::<Vec<_>>())
        .execute(&mut *tx)
        .await?;
        Ok(())
    }

    /// Records a new event of a service's own stream (next version + outbox row), in the
    /// caller's transaction; the row lock on the counter serialises writers of one stream.
    pub async fn record(
        tx: &mut PgConnection,
        stream: &str,
        payload: &Payload,
        ctx: &Context,
    ) -> Result<Envelope, sqlx::Error> {
        record_all(tx, &[(stream, payload, ctx)])
            .await?
            .pop()
            .ok_or_else(|| sqlx::Error::Protocol("no event recorded".into()))
    }

    /// [`record`] for a batch, in two statements whatever its size: each stream's counter
    /// moves once by its number of events (the streams locked in one order, so that two
    /// batches never wait on each other in a cycle), and the outbox rows go in one insert. A
    /// stream's events take its versions in the order given.
    pub async fn record_all(
        tx: &mut PgConnection,
        items: &[(&str, &Payload, &Context)],
    ) -> Result<Vec<Envelope>, sqlx::Error> {
        use std::collections::BTreeMap;
        if items.is_empty() {
            return Ok(Vec::new());
        }
        let mut counts: BTreeMap<&str, i64> = BTreeMap::new();
        for (stream, _, _) in items {
            *counts.entry(stream).or_default() += 1;
        }
        let (streams, added): (Vec<&str>, Vec<i64>) = counts.iter().map(|(s, n)| (*s, *n)).unzip();
        let reached: BTreeMap<String, i64> = sqlx::query_as::<_, (String, i64)>(
            "INSERT INTO own_streams (aggregate_id, version) \
             SELECT a, n FROM UNNEST($1::text[], $2::bigint[]) AS u(a, n) ORDER BY a \
             ON CONFLICT (aggregate_id) DO UPDATE SET version = own_streams.version + excluded.version \
             RETURNING aggregate_id, version",
        )
        .bind(&streams)
        .bind(&added)
        .fetch_all(&mut *tx)
        .await?
        .into_iter()
        .collect();
        // The next version of each stream: its new end less what this batch added.
        let mut next: BTreeMap<&str, i64> = counts
            .iter()
            .map(|(s, n)| (*s, reached.get(*s).copied().unwrap_or(*n) - n + 1))
            .collect();
        let mut events = Vec::with_capacity(items.len());
        for (stream, payload, ctx) in items {
            let version = next.get(stream).copied().unwrap_or(1);
            next.insert(stream, version + 1);
            events.push(Envelope::new(
                uuid::Uuid::now_v7().to_string(),
                stream,
                u64::try_from(version).unwrap_or(1),
                payload,
                ctx,
            ));
        }
        let rows: Vec<(&Envelope, String)> =
            events.iter().map(|e| (e, e.to_stored_json())).collect();
        write_all(tx, &rows).await?;
        Ok(events)
    }

    fn unavailable(context: &'static str) -> impl Fn(sqlx::Error) -> StoreError {
        move |e| StoreError::Unavailable(format!("{context}: {e}"))
    }

    pub(crate) fn row(row: &PgRow) -> OutboxRow {
        OutboxRow {
            id: u64::try_from(row.get::<i64, _>("id")).unwrap_or(0),
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

    /// One relay's view of a schema's outbox. Each value is a relay of its own (its own lease
    /// holder): a relay publishes only while it holds the schema's lease, so relays never
    /// publish one row at once, and each aggregate's rows leave in id order, which is version
    /// order. The rows it handed out and has not yet marked or given back are in flight: not
    /// handed out again, and no later row of their aggregates either.
    #[derive(Debug, Clone)]
    pub struct PgOutbox {
        pool: PgPool,
        holder: String,
        in_flight: std::sync::Arc<std::sync::Mutex<std::collections::BTreeMap<u64, String>>>,
        /// When this relay last took or renewed the lease (its own monotonic clock).
        renewed: std::sync::Arc<std::sync::Mutex<Option<std::time::Instant>>>,
    }

    impl PgOutbox {
        pub fn new(pool: PgPool) -> Self {
            Self {
                pool,
                holder: uuid::Uuid::now_v7().to_string(),
                in_flight: Default::default(),
                renewed: Default::default(),
            }
        }

        fn in_flight(&self) -> std::sync::MutexGuard<'_, std::collections::BTreeMap<u64, String>> {
            // A panic elsewhere while holding this map leaves it whole: every update is one call.
            self.in_flight
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
        }

        /// Whether this relay may read: renewed within the last third of the lease's length,
        /// yes (the read checks the lease again); otherwise it takes or renews the lease now,
        /// which fails while another relay holds it.
        async fn holds_lease(&self) -> Result<bool, StoreError> {
            let fresh = |at: &Option<std::time::Instant>| {
                at.is_some_and(|t| t.elapsed().as_secs_f64() < LEASE_SECONDS / 3.0)
            };
            if self.renewed.lock().is_ok_and(|at| fresh(&at)) {
                return Ok(true);
            }
            let before = std::time::Instant::now();
            let held: Option<String> = sqlx::query_scalar(
                "INSERT INTO outbox_relay (name, holder, expires_at) VALUES ('relay', $1, now() + make_interval(secs => $2)) \
                 ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, expires_at = excluded.expires_at \
                 WHERE outbox_relay.holder = excluded.holder OR outbox_relay.expires_at < now() \
                 RETURNING holder",
            )
            .bind(&self.holder)
            .bind(LEASE_SECONDS)
            .fetch_optional(&self.pool)
            .await
            .map_err(unavailable("taking the outbox relay's lease"))?;
            if let Ok(mut at) = self.renewed.lock() {
                // Counted from before the statement: the lease may have started then.
                *at = held.is_some().then_some(before);
            }
            Ok(held.is_some())
        }

        fn settle(&self, ids: &[u64]) {
            let mut in_flight = self.in_flight();
            for id in ids {
                in_flight.remove(id);
            }
        }
    }

    #[async_trait]
    impl super::Outbox for PgOutbox {
        /// Reads the oldest unpublished rows while this relay holds the lease, renewed every
        /// third of its length (a write, and a commit that waits for the disk, only then):
        /// nothing is written on the rows themselves (a claim per row cost an update, index
        /// entries and, for the next claim, dead ones to step over). Without the lease (another
        /// relay holds it and renewed it in time), nothing.
        async fn pending(&self, limit: usize) -> Result<Vec<OutboxRow>, StoreError> {
            if !self.holds_lease().await? {
                return Ok(Vec::new());
            }
            let (ids, aggregates): (Vec<i64>, Vec<String>) = self
                .in_flight()
                .iter()
                .map(|(id, aggregate)| (i64::try_from(*id).unwrap_or(i64::MAX), aggregate.clone()))
                .unzip();
            // The lease is checked again as the rows are read (a read of one row): a relay
            // whose lease expired and was taken over reads nothing, whatever its clock says.
            let rows = sqlx::query(
                "SELECT id, event_id, aggregate_id, correlation_id, event_type, exchange, routing_key, stream, payload \
                 FROM outbox WHERE published_at IS NULL \
                   AND EXISTS (SELECT 1 FROM outbox_relay WHERE name = 'relay' AND holder = $4 AND expires_at > now()) \
                   AND id <> ALL($1) AND aggregate_id <> ALL($2) \
                 ORDER BY id LIMIT $3",
            )
            // Not a prepared statement: a plan kept from the first rounds of a new database
            // (an empty table) would scan and sort the whole table once it has grown.
            .persistent(false)
            .bind(&ids)
            .bind(&aggregates)
            .bind(i64::try_from(limit).unwrap_or(i64::MAX))
            .bind(&self.holder)
            .fetch_all(&self.pool)
            .await
            .map_err(unavailable("reading the outbox"))?;
            let out: Vec<OutboxRow> = rows.iter().map(row).collect();
            let mut in_flight = self.in_flight();
            for r in &out {
                in_flight.insert(r.id, r.aggregate_id.clone());
            }
            Ok(out)
        }

        async fn mark_published(&self, ids: &[u64]) -> Result<(), StoreError> {
            let marked: Vec<i64> = ids
                .iter()
                .map(|i| i64::try_from(*i).unwrap_or(i64::MAX))
                .collect();
            // Planned with its values each time (see `pending`).
            let marking = sqlx::query("UPDATE outbox SET published_at = now() WHERE id = ANY($1)")
                .persistent(false)
                .bind(&marked)
                .execute(&self.pool)
                .await;
            // Out of flight whatever the answer: rows whose mark did not land are unpublished
            // still, and the next round hands them out again (consumers skip what they saw).
            // Kept in flight, they and their aggregates' later rows would wait forever.
            self.settle(ids);
            marking.map_err(unavailable("marking outbox rows"))?;
            Ok(())
        }

        /// Rows given back are unpublished still: the next round hands them out again.
        async fn release(&self, ids: &[u64]) -> Result<(), StoreError> {
            self.settle(ids);
            Ok(())
        }

        async fn backlog(&self) -> Result<u64, StoreError> {
            let n: i64 =
                sqlx::query_scalar("SELECT COUNT(*) FROM outbox WHERE published_at IS NULL")
                    .fetch_one(&self.pool)
                    .await
                    .map_err(unavailable("counting the outbox"))?;
            Ok(u64::try_from(n).unwrap_or(0))
        }
    }
}
