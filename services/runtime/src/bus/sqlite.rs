//! The embedded message bus: one SQLite file; a row per message per queue.
//!
//! Messages with the same ordering key (the aggregate id) are handed out one at a time in
//! publication order, so a message waiting for its retry holds back the later ones of its
//! aggregate and events take effect in version order. Only one process opens the file (the data
//! directory is locked), so deliveries left unsettled by a previous process are handed out again
//! when it opens.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use sqlx::sqlite::SqliteRow;
use sqlx::{QueryBuilder, Row, Sqlite};
use tokio::sync::Notify;

use super::topology::{dlq_name, topic_matches};
use super::{BusError, DeadLetter, Delivery, Message, MessageBus, QueueSpec, headers};
use crate::sqlite::Db;

const SCHEMA: &str = r#"
CREATE TABLE IF NOT EXISTS queues (
    name     TEXT NOT NULL,
    exchange TEXT NOT NULL,
    pattern  TEXT NOT NULL,
    PRIMARY KEY (name, pattern)
);
CREATE TABLE IF NOT EXISTS messages (
    tag          INTEGER PRIMARY KEY AUTOINCREMENT,
    queue        TEXT NOT NULL,
    message_id   TEXT NOT NULL,
    exchange     TEXT NOT NULL,
    routing_key  TEXT NOT NULL,
    ordering_key TEXT,
    headers      TEXT NOT NULL,
    body         TEXT NOT NULL,
    attempts     INTEGER NOT NULL DEFAULT 0,
    available_at INTEGER NOT NULL,
    leased_until INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS messages_queue ON messages (queue, tag);
CREATE INDEX IF NOT EXISTS messages_order ON messages (queue, ordering_key, tag);
CREATE TABLE IF NOT EXISTS dead_letters (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    exchange     TEXT NOT NULL,
    queue        TEXT NOT NULL,
    message_id   TEXT NOT NULL,
    routing_key  TEXT NOT NULL,
    ordering_key TEXT,
    headers      TEXT NOT NULL,
    body         TEXT NOT NULL,
    attempts     INTEGER NOT NULL,
    last_error   TEXT NOT NULL,
    dead_at      INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS dead_letters_exchange ON dead_letters (exchange, id);
"#;

/// How long a delivery may stay unsettled before it is handed out again.
const LEASE: Duration = Duration::from_secs(120);

#[derive(Debug, Clone)]
pub struct SqliteBus {
    db: Db,
    queues: Arc<RwLock<Vec<QueueSpec>>>,
    /// One per queue: a publish or a settlement wakes the receivers of its queues only.
    wakes: Arc<std::sync::Mutex<std::collections::HashMap<String, Arc<Notify>>>>,
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

fn ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

fn unavailable(context: &'static str) -> impl Fn(sqlx::Error) -> BusError {
    move |e| BusError::Unavailable(format!("{context}: {e}"))
}

fn message_of(row: &SqliteRow) -> Message {
    let headers: String = row.get("headers");
    Message {
        message_id: row.get("message_id"),
        exchange: row.get("exchange"),
        routing_key: row.get("routing_key"),
        ordering_key: row.get("ordering_key"),
        headers: serde_json::from_str(&headers).unwrap_or_default(),
        body: row.get("body"),
    }
}

fn headers_json(h: &BTreeMap<String, String>) -> String {
    serde_json::to_string(h).unwrap_or_else(|_| "{}".into())
}

fn u64_of(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

impl SqliteBus {
    pub async fn open(path: &Path) -> Result<Self, BusError> {
        let db = Db::open(path, &[SCHEMA])
            .await
            .map_err(|e| BusError::Unavailable(format!("opening {}: {e}", path.display())))?;
        // Deliveries of a previous process were never settled: hand them out again.
        sqlx::query("UPDATE messages SET leased_until = 0")
            .execute(&db.writer)
            .await
            .map_err(unavailable("releasing old deliveries"))?;
        let bus = Self {
            db,
            queues: Arc::new(RwLock::new(Vec::new())),
            wakes: Arc::default(),
        };
        bus.load_queues().await?;
        Ok(bus)
    }

    async fn load_queues(&self) -> Result<(), BusError> {
        let rows = sqlx::query("SELECT name, exchange, pattern FROM queues ORDER BY name")
            .fetch_all(&self.db.writer)
            .await
            .map_err(unavailable("reading queues"))?;
        let mut specs: Vec<QueueSpec> = Vec::new();
        for row in rows {
            let name: String = row.get(0);
            let pattern: String = row.get(2);
            match specs.iter_mut().find(|q| q.name == name) {
                Some(q) => q.bindings.push(pattern),
                None => specs.push(QueueSpec {
                    name,
                    exchange: row.get(1),
                    bindings: vec![pattern],
                }),
            }
        }
        if let Ok(mut queues) = self.queues.write() {
            *queues = specs;
        }
        Ok(())
    }

    fn targets(&self, message: &Message) -> Vec<String> {
        self.queues
            .read()
            .map(|queues| {
                queues
                    .iter()
                    .filter(|q| {
                        q.exchange == message.exchange
                            && q.bindings
                                .iter()
                                .any(|p| topic_matches(p, &message.routing_key))
                    })
                    .map(|q| q.name.clone())
                    .collect()
            })
            .unwrap_or_default()
    }

    async fn claim(
        &self,
        queue: &str,
        max: usize,
    ) -> Result<(Vec<Delivery>, Option<i64>), BusError> {
        let now = now_ms();
        let mut tx = self
            .db
            .writer
            .begin()
            .await
            .map_err(unavailable("claiming messages"))?;
        let rows = sqlx::query(
            "SELECT * FROM messages m WHERE queue = ?1 AND available_at <= ?2 AND leased_until <= ?2 \
             AND (ordering_key IS NULL OR NOT EXISTS (SELECT 1 FROM messages o \
                  WHERE o.queue = m.queue AND o.ordering_key = m.ordering_key AND o.tag < m.tag)) \
             ORDER BY tag LIMIT ?3",
        )
        .bind(queue)
        .bind(now)
        .bind(i64::try_from(max).unwrap_or(i64::MAX))
        .fetch_all(&mut *tx)
        .await
        .map_err(unavailable("claiming messages"))?;
        let deliveries: Vec<Delivery> = rows
            .iter()
            .map(|row| Delivery {
                tag: u64_of(row.get("tag")),
                queue: queue.to_owned(),
                message: message_of(row),
                attempts: u32::try_from(row.get::<i64, _>("attempts")).unwrap_or(u32::MAX),
            })
            .collect();
        let next = if deliveries.is_empty() {
            sqlx::query_scalar::<_, Option<i64>>(
                "SELECT MIN(MAX(available_at, leased_until)) FROM messages WHERE queue = ?",
            )
            .bind(queue)
            .fetch_one(&mut *tx)
            .await
            .map_err(unavailable("reading the next due message"))?
        } else {
            let mut q: QueryBuilder<Sqlite> =
                QueryBuilder::new("UPDATE messages SET leased_until = ");
            q.push_bind(now + ms(LEASE)).push(" WHERE tag IN (");
            let mut list = q.separated(", ");
            for d in &deliveries {
                list.push_bind(i64::try_from(d.tag).unwrap_or(i64::MAX));
            }
            q.push(")");
            q.build()
                .execute(&mut *tx)
                .await
                .map_err(unavailable("leasing messages"))?;
            None
        };
        tx.commit()
            .await
            .map_err(unavailable("claiming messages"))?;
        Ok((deliveries, next))
    }

    fn waker(&self, queue: &str) -> Arc<Notify> {
        let mut wakes = self
            .wakes
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        wakes.entry(queue.to_owned()).or_default().clone()
    }

    /// Wakes the receivers of these queues.
    fn wake<'q>(&self, queues: impl IntoIterator<Item = &'q str>) {
        let mut seen = std::collections::HashSet::new();
        for q in queues {
            if seen.insert(q) {
                self.waker(q).notify_waiters();
            }
        }
    }

    pub async fn close(&self) {
        self.db.close().await;
    }
}

#[async_trait]
impl MessageBus for SqliteBus {
    async fn declare(&self, queues: &[QueueSpec]) -> Result<(), BusError> {
        let mut tx = self
            .db
            .writer
            .begin()
            .await
            .map_err(unavailable("declaring queues"))?;
        for q in queues {
            for pattern in &q.bindings {
                sqlx::query(
                    "INSERT OR IGNORE INTO queues (name, exchange, pattern) VALUES (?, ?, ?)",
                )
                .bind(&q.name)
                .bind(&q.exchange)
                .bind(pattern)
                .execute(&mut *tx)
                .await
                .map_err(unavailable("declaring a queue"))?;
            }
        }
        tx.commit().await.map_err(unavailable("declaring queues"))?;
        self.load_queues().await
    }

    async fn publish(&self, message: &Message) -> Result<(), BusError> {
        self.publish_all(std::slice::from_ref(message)).await
    }

    async fn publish_all(&self, messages: &[Message]) -> Result<(), BusError> {
        let routed: Vec<(&Message, Vec<String>)> = messages
            .iter()
            .map(|m| (m, self.targets(m)))
            .filter(|(m, targets)| {
                if targets.is_empty() {
                    tracing::debug!(exchange = %m.exchange, routingKey = %m.routing_key, "no queue bound; message dropped by routing");
                }
                !targets.is_empty()
            })
            .collect();
        if routed.is_empty() {
            return Ok(());
        }
        let now = now_ms();
        let mut tx = self
            .db
            .writer
            .begin()
            .await
            .map_err(unavailable("publishing"))?;
        let mut touched = Vec::new();
        for (message, targets) in routed {
            let headers = headers_json(&message.headers);
            for queue in targets {
                touched.push(queue.clone());
                sqlx::query(
                    "INSERT INTO messages (queue, message_id, exchange, routing_key, ordering_key, headers, body, available_at) \
                     VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                )
                .bind(queue)
                .bind(&message.message_id)
                .bind(&message.exchange)
                .bind(&message.routing_key)
                .bind(&message.ordering_key)
                .bind(&headers)
                .bind(&message.body)
                .bind(now)
                .execute(&mut *tx)
                .await
                .map_err(unavailable("publishing"))?;
            }
        }
        tx.commit().await.map_err(unavailable("publishing"))?;
        self.wake(touched.iter().map(String::as_str));
        Ok(())
    }

    async fn receive(
        &self,
        queue: &str,
        max: usize,
        wait: Duration,
    ) -> Result<Vec<Delivery>, BusError> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let waker = self.waker(queue);
            let woken = waker.notified();
            let (deliveries, next_due) = self.claim(queue, max).await?;
            if !deliveries.is_empty() {
                return Ok(deliveries);
            }
            let now = tokio::time::Instant::now();
            if now >= deadline {
                return Ok(Vec::new());
            }
            let until_due = next_due
                .map(|due| Duration::from_millis(u64::try_from(due - now_ms()).unwrap_or(0).max(1)))
                .unwrap_or(wait);
            let sleep = until_due.min(deadline - now);
            let _ = tokio::time::timeout(sleep, woken).await;
        }
    }

    async fn ack(&self, delivery: &Delivery) -> Result<(), BusError> {
        self.ack_all(std::slice::from_ref(delivery)).await
    }

    async fn ack_all(&self, deliveries: &[Delivery]) -> Result<(), BusError> {
        if deliveries.is_empty() {
            return Ok(());
        }
        let mut tx = self
            .db
            .writer
            .begin()
            .await
            .map_err(unavailable("acking"))?;
        for d in deliveries {
            sqlx::query("DELETE FROM messages WHERE tag = ?")
                .bind(i64::try_from(d.tag).unwrap_or(i64::MAX))
                .execute(&mut *tx)
                .await
                .map_err(unavailable("acking"))?;
        }
        tx.commit().await.map_err(unavailable("acking"))?;
        self.wake(deliveries.iter().map(|d| d.queue.as_str()));
        Ok(())
    }

    async fn retry(
        &self,
        delivery: &Delivery,
        delay: Duration,
        error: &str,
    ) -> Result<(), BusError> {
        let mut headers = delivery.message.headers.clone();
        headers.insert(headers::LAST_ERROR.into(), error.to_owned());
        sqlx::query("UPDATE messages SET attempts = attempts + 1, available_at = ?, leased_until = 0, headers = ? WHERE tag = ?")
            .bind(now_ms() + ms(delay))
            .bind(headers_json(&headers))
            .bind(i64::try_from(delivery.tag).unwrap_or(i64::MAX))
            .execute(&self.db.writer)
            .await
            .map_err(unavailable("scheduling a retry"))?;
        self.wake([delivery.queue.as_str()]);
        Ok(())
    }

    async fn dead_letter(&self, delivery: &Delivery, error: &str) -> Result<(), BusError> {
        let now = now_ms();
        let attempts = delivery.attempts + 1;
        let m = &delivery.message;
        let mut h = m.headers.clone();
        h.insert(headers::QUEUE.into(), delivery.queue.clone());
        h.insert(headers::ATTEMPTS.into(), attempts.to_string());
        h.insert(headers::LAST_ERROR.into(), error.to_owned());
        h.insert(headers::DEAD_LETTERED_AT.into(), now.to_string());
        let mut tx = self
            .db
            .writer
            .begin()
            .await
            .map_err(unavailable("dead-lettering"))?;
        sqlx::query(
            "INSERT INTO dead_letters (exchange, queue, message_id, routing_key, ordering_key, headers, body, attempts, last_error, dead_at) \
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(&m.exchange)
        .bind(&delivery.queue)
        .bind(&m.message_id)
        .bind(&m.routing_key)
        .bind(&m.ordering_key)
        .bind(headers_json(&h))
        .bind(&m.body)
        .bind(i64::from(attempts))
        .bind(error)
        .bind(now)
        .execute(&mut *tx)
        .await
        .map_err(unavailable("dead-lettering"))?;
        sqlx::query("DELETE FROM messages WHERE tag = ?")
            .bind(i64::try_from(delivery.tag).unwrap_or(i64::MAX))
            .execute(&mut *tx)
            .await
            .map_err(unavailable("dead-lettering"))?;
        tx.commit().await.map_err(unavailable("dead-lettering"))?;
        self.wake([delivery.queue.as_str()]);
        tracing::warn!(queue = %delivery.queue, dlq = %dlq_name(&m.exchange), messageId = %m.message_id, error, "dead-lettered");
        Ok(())
    }

    async fn dead_letters(
        &self,
        exchange: &str,
        limit: usize,
    ) -> Result<Vec<DeadLetter>, BusError> {
        let rows = sqlx::query("SELECT * FROM dead_letters WHERE exchange = ? ORDER BY id LIMIT ?")
            .bind(exchange)
            .bind(i64::try_from(limit).unwrap_or(i64::MAX))
            .fetch_all(&self.db.reader)
            .await
            .map_err(unavailable("listing dead letters"))?;
        Ok(rows
            .iter()
            .map(|row| DeadLetter {
                id: u64_of(row.get("id")),
                queue: row.get("queue"),
                message: message_of(row),
                attempts: u32::try_from(row.get::<i64, _>("attempts")).unwrap_or(u32::MAX),
                last_error: row.get("last_error"),
                dead_at: row.get("dead_at"),
            })
            .collect())
    }

    async fn redrive(&self, exchange: &str) -> Result<usize, BusError> {
        let mut tx = self
            .db
            .writer
            .begin()
            .await
            .map_err(unavailable("redriving"))?;
        let moved = sqlx::query(
            "INSERT INTO messages (queue, message_id, exchange, routing_key, ordering_key, headers, body, available_at) \
             SELECT queue, message_id, exchange, routing_key, ordering_key, \
                    json_remove(headers, '$.\"x-queue\"', '$.\"x-attempts\"', '$.\"x-last-error\"', '$.\"x-dead-lettered-at\"'), \
                    body, ? FROM dead_letters WHERE exchange = ? ORDER BY id",
        )
        .bind(now_ms())
        .bind(exchange)
        .execute(&mut *tx)
        .await
        .map_err(unavailable("redriving"))?
        .rows_affected();
        sqlx::query("DELETE FROM dead_letters WHERE exchange = ?")
            .bind(exchange)
            .execute(&mut *tx)
            .await
            .map_err(unavailable("redriving"))?;
        tx.commit().await.map_err(unavailable("redriving"))?;
        let all: Vec<Arc<Notify>> = self
            .wakes
            .lock()
            .map(|w| w.values().cloned().collect())
            .unwrap_or_default();
        for w in all {
            w.notify_waiters();
        }
        Ok(usize::try_from(moved).unwrap_or(usize::MAX))
    }

    async fn depth(&self, queue: &str) -> Result<u64, BusError> {
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM messages WHERE queue = ?")
            .bind(queue)
            .fetch_one(&self.db.reader)
            .await
            .map_err(unavailable("counting messages"))?;
        Ok(u64_of(n))
    }

    async fn ping(&self) -> Result<(), BusError> {
        sqlx::query("SELECT 1")
            .execute(&self.db.reader)
            .await
            .map_err(unavailable("pinging the bus"))?;
        Ok(())
    }
}
