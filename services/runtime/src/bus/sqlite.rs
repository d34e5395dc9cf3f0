//! The embedded message bus: one SQLite file; a row per message per queue.
//!
//! Messages with the same ordering key (the aggregate id) are handed out one at a time in
//! publication order, so a message waiting for its retry holds back the later ones of its
//! aggregate and events take effect in version order. Only one process opens the file (the data
//! directory is locked), so the process keeps an index of each queue's first messages in memory
//! (a window of [`WINDOW`]), with which are out (their leases): a claim reads no file and writes
//! nothing, and deliveries left unsettled by a previous process are handed out again when it
//! opens. Every change goes through the file's writer ([`crate::sqlite::writer`]) and reaches
//! the index once committed, in commit order.
//!
//! A backlog longer than the window waits in the file only, so memory does not grow with it:
//! once the window is half empty, the next messages of the queue are read from the file, in
//! publication order, by a job of the writer (so that no commit falls between what the read saw
//! and what the index learns). Messages past the window are never handed out before those in
//! it, which keeps the order of every key.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use sqlx::Row;
use sqlx::sqlite::SqliteRow;
use tokio::sync::Notify;

use super::topology::{dlq_name, topic_matches};
use super::{BusError, DeadLetter, Delivery, Message, MessageBus, QueueSpec, headers};
use crate::sqlite::Db;
use crate::sqlite::writer::{WriteError, rusqlite};

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

/// A message of a queue, as the index holds it.
#[derive(Debug, Clone)]
struct Queued {
    message: Message,
    attempts: u32,
    /// Not handed out before (ms since the epoch): a retry's delay.
    available_at: i64,
    /// Handed out until then (ms), unless settled before.
    leased_until: Option<i64>,
}

/// Messages of one queue held in memory at most; the rest of a backlog waits in the file.
pub const WINDOW: usize = 1024;

/// What the process knows of one queue.
#[derive(Debug, Default)]
struct QueueIndex {
    /// The queue's unsettled messages up to tag `loaded_to`, by tag (publication order).
    window: BTreeMap<i64, Queued>,
    loaded_to: i64,
    /// Messages past `loaded_to` wait in the file (the window was full when they came).
    spilled: bool,
    /// A read of the next messages from the file is under way.
    refilling: bool,
    /// Unsettled messages, in the window or not.
    depth: u64,
}

/// The queues' messages, by queue.
type Index = HashMap<String, QueueIndex>;

#[derive(Debug, Clone)]
pub struct SqliteBus {
    db: Db,
    index: Arc<std::sync::Mutex<Index>>,
    /// Messages per queue held in memory ([`WINDOW`], smaller in tests).
    window: usize,
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

fn written(context: &'static str) -> impl Fn(WriteError) -> BusError {
    move |e| BusError::Unavailable(format!("{context}: {e}"))
}

fn queued_of(row: &SqliteRow) -> Queued {
    Queued {
        message: message_of(row),
        attempts: u32::try_from(row.get::<i64, _>("attempts")).unwrap_or(u32::MAX),
        available_at: row.get("available_at"),
        leased_until: None,
    }
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

/// The message of a row read on the writer's connection whose columns are `tag, queue,
/// message_id, exchange, routing_key, ordering_key, headers, body` first.
fn message_at(r: &rusqlite::Row<'_>) -> rusqlite::Result<Message> {
    let headers: String = r.get(6)?;
    Ok(Message {
        message_id: r.get(2)?,
        exchange: r.get(3)?,
        routing_key: r.get(4)?,
        ordering_key: r.get(5)?,
        headers: serde_json::from_str(&headers).unwrap_or_default(),
        body: r.get(7)?,
    })
}

fn headers_json(h: &BTreeMap<String, String>) -> String {
    serde_json::to_string(h).unwrap_or_else(|_| "{}".into())
}

fn u64_of(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

impl SqliteBus {
    pub async fn open(path: &Path) -> Result<Self, BusError> {
        Self::open_with_window(path, WINDOW).await
    }

    /// [`Self::open`] holding at most `window` messages of each queue in memory.
    pub async fn open_with_window(path: &Path, window: usize) -> Result<Self, BusError> {
        let window = window.max(2);
        let db = Db::open(path, &[SCHEMA])
            .await
            .map_err(|e| BusError::Unavailable(format!("opening {}: {e}", path.display())))?;
        // The index: each queue's first messages, none out (what a previous process had out
        // and never settled is handed out again; `leased_until` is a column of earlier versions).
        let depths: Vec<(String, i64)> =
            sqlx::query_as("SELECT queue, COUNT(*) FROM messages GROUP BY queue")
                .fetch_all(&db.reader)
                .await
                .map_err(unavailable("counting the queues' messages"))?;
        let mut index = Index::new();
        for (queue, depth) in depths {
            let rows = sqlx::query("SELECT * FROM messages WHERE queue = ? ORDER BY tag LIMIT ?")
                .bind(&queue)
                .bind(i64::try_from(window).unwrap_or(i64::MAX))
                .fetch_all(&db.reader)
                .await
                .map_err(unavailable("reading the queues' messages"))?;
            let q = index.entry(queue).or_default();
            q.depth = u64_of(depth);
            q.spilled = u64_of(depth) > rows.len() as u64;
            for row in &rows {
                let tag: i64 = row.get("tag");
                q.loaded_to = q.loaded_to.max(tag);
                q.window.insert(tag, queued_of(row));
            }
        }
        let bus = Self {
            db,
            index: Arc::new(std::sync::Mutex::new(index)),
            window,
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

    fn index(&self) -> std::sync::MutexGuard<'_, Index> {
        self.index
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Hands out up to `max` messages: the first of each ordering key, due, not out already.
    /// Answers when the next one may be due when there is none now.
    fn claim(&self, queue: &str, max: usize) -> (Vec<Delivery>, Option<i64>) {
        let now = now_ms();
        let mut index = self.index();
        let Some(messages) = index.get_mut(queue).map(|q| &mut q.window) else {
            return (Vec::new(), None);
        };
        let mut held: std::collections::HashSet<String> = Default::default();
        let (mut out, mut next) = (Vec::new(), None::<i64>);
        for (tag, q) in messages.iter_mut() {
            if out.len() >= max {
                break;
            }
            let key = q.message.ordering_key.as_deref();
            if key.is_some_and(|k| held.contains(k)) {
                continue;
            }
            let waits_until = match q.leased_until {
                Some(until) if until > now => Some(until),
                _ if q.available_at > now => Some(q.available_at),
                _ => None,
            };
            if let Some(k) = key {
                // Later messages of a key wait for its first.
                held.insert(k.to_owned());
            }
            if let Some(at) = waits_until {
                next = Some(next.map_or(at, |n| n.min(at)));
                continue;
            }
            q.leased_until = Some(now + ms(LEASE));
            out.push(Delivery {
                tag: u64_of(*tag),
                queue: queue.to_owned(),
                message: q.message.clone(),
                attempts: q.attempts,
            });
        }
        let next = if out.is_empty() { next } else { None };
        (out, next)
    }

    /// Takes settled deliveries out of the index (after their settlement committed).
    fn remove<'d>(&self, deliveries: impl IntoIterator<Item = &'d Delivery>) {
        let mut index = self.index();
        for d in deliveries {
            if let Some(q) = index.get_mut(&d.queue)
                && q.window
                    .remove(&i64::try_from(d.tag).unwrap_or(i64::MAX))
                    .is_some()
            {
                q.depth = q.depth.saturating_sub(1);
            }
        }
    }

    /// Adds committed messages to the index (from the writer's thread, in commit order): to
    /// the window while nothing waits in the file and there is room, else to the file only.
    fn add(index: &std::sync::Mutex<Index>, window: usize, rows: Vec<(String, i64, Message, i64)>) {
        let mut index = index
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        for (queue, tag, message, available_at) in rows {
            let q = index.entry(queue).or_default();
            q.depth += 1;
            if q.spilled || q.window.len() >= window {
                q.spilled = true;
                continue;
            }
            q.loaded_to = q.loaded_to.max(tag);
            q.window.insert(
                tag,
                Queued {
                    message,
                    attempts: 0,
                    available_at,
                    leased_until: None,
                },
            );
        }
    }

    /// Reads the next messages of `queue` from the file into its window once the window is
    /// half empty and messages wait in the file. The read is a job of the writer: every
    /// message committed before it is in what it reads or in the window already, and every one
    /// committed after it reaches the index after it (in commit order).
    async fn refill(&self, queue: &str) -> Result<(), BusError> {
        {
            let mut index = self.index();
            let Some(q) = index.get_mut(queue) else {
                return Ok(());
            };
            if !q.spilled || q.refilling || q.window.len() > self.window / 2 {
                return Ok(());
            }
            q.refilling = true;
        }
        let (read_index, index, window) = (self.index.clone(), self.index.clone(), self.window);
        let (read_queue, name) = (queue.to_owned(), queue.to_owned());
        let read = self
            .db
            .jobs
            .run_committed(
                move |conn| {
                    let (after, room) = {
                        let index = read_index
                            .lock()
                            .unwrap_or_else(std::sync::PoisonError::into_inner);
                        index.get(&read_queue).map_or((0, window), |q| {
                            (q.loaded_to, window.saturating_sub(q.window.len()).max(1))
                        })
                    };
                    let rows = conn
                        .prepare_cached(
                            "SELECT tag, queue, message_id, exchange, routing_key, ordering_key, headers, body, attempts, available_at \
                             FROM messages WHERE queue = ?1 AND tag > ?2 ORDER BY tag LIMIT ?3",
                        )?
                        .query_map(
                            rusqlite::params![read_queue, after, i64::try_from(room).unwrap_or(i64::MAX)],
                            |r| {
                                Ok((
                                    r.get::<_, i64>(0)?,
                                    Queued {
                                        message: message_at(r)?,
                                        attempts: u32::try_from(r.get::<_, i64>(8)?)
                                            .unwrap_or(u32::MAX),
                                        available_at: r.get(9)?,
                                        leased_until: None,
                                    },
                                ))
                            },
                        )?
                        .collect::<Result<Vec<_>, _>>()?;
                    Ok::<_, WriteError>((rows, room))
                },
                move |(rows, room): (Vec<(i64, Queued)>, usize)| {
                    let mut index = index
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner);
                    let q = index.entry(name).or_default();
                    // Fewer than asked for: the file holds nothing past them.
                    if rows.len() < room {
                        q.spilled = false;
                    }
                    for (tag, queued) in rows {
                        if tag > q.loaded_to {
                            q.loaded_to = tag;
                            q.window.insert(tag, queued);
                        }
                    }
                    q.refilling = false;
                },
            )
            .await;
        if read.is_err()
            && let Some(q) = self.index().get_mut(queue)
        {
            q.refilling = false;
        }
        read.map_err(written("reading a queue's next messages"))
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
        let rows: Vec<(String, Message)> = routed
            .into_iter()
            .flat_map(|(m, targets)| targets.into_iter().map(move |q| (q, m.clone())))
            .collect();
        let touched: Vec<String> = rows.iter().map(|(q, _)| q.clone()).collect();
        let (index, window) = (self.index.clone(), self.window);
        self.db
            .jobs
            .run_committed(
                move |conn| {
                    let mut insert = conn.prepare_cached(
                        "INSERT INTO messages (queue, message_id, exchange, routing_key, ordering_key, headers, body, available_at) \
                         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                    )?;
                    let mut added = Vec::with_capacity(rows.len());
                    for (queue, m) in rows {
                        insert.execute(rusqlite::params![
                            queue,
                            m.message_id,
                            m.exchange,
                            m.routing_key,
                            m.ordering_key,
                            headers_json(&m.headers),
                            m.body,
                            now,
                        ])?;
                        added.push((queue, conn.last_insert_rowid(), m, now));
                    }
                    Ok::<_, WriteError>(added)
                },
                move |added| Self::add(&index, window, added),
            )
            .await
            .map_err(written("publishing"))?;
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
            self.refill(queue).await?;
            let (deliveries, next_due) = self.claim(queue, max);
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

    /// Settles at once in memory, and deletes behind, with the file's next commit: an ack
    /// lost to a crash only hands the message out again, which its consumer skips.
    async fn ack_all(&self, deliveries: &[Delivery]) -> Result<(), BusError> {
        if deliveries.is_empty() {
            return Ok(());
        }
        self.remove(deliveries);
        let tags: Vec<i64> = deliveries
            .iter()
            .map(|d| i64::try_from(d.tag).unwrap_or(i64::MAX))
            .collect();
        self.db.jobs.run_behind("acking", move |conn| {
            let mut delete = conn.prepare_cached("DELETE FROM messages WHERE tag = ?1")?;
            for tag in tags {
                delete.execute([tag])?;
            }
            Ok(())
        });
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
        let (at, headers) = (now_ms() + ms(delay), headers_json(&headers));
        let tag = i64::try_from(delivery.tag).unwrap_or(i64::MAX);
        self.db
            .jobs
            .run(move |conn| {
                conn.prepare_cached(
                    "UPDATE messages SET attempts = attempts + 1, available_at = ?1, headers = ?2 WHERE tag = ?3",
                )?
                .execute(rusqlite::params![at, headers, tag])?;
                Ok::<_, WriteError>(())
            })
            .await
            .map_err(written("scheduling a retry"))?;
        if let Some(q) = self
            .index()
            .get_mut(&delivery.queue)
            .and_then(|q| q.window.get_mut(&tag))
        {
            q.attempts = q.attempts.saturating_add(1);
            q.available_at = at;
            q.message
                .headers
                .insert(headers::LAST_ERROR.into(), error.to_owned());
            q.leased_until = None;
        }
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
        let (queue, msg, headers) = (delivery.queue.clone(), m.clone(), headers_json(&h));
        let (error_text, tag) = (
            error.to_owned(),
            i64::try_from(delivery.tag).unwrap_or(i64::MAX),
        );
        self.db
            .jobs
            .run(move |conn| {
                conn.prepare_cached(
                    "INSERT INTO dead_letters (exchange, queue, message_id, routing_key, ordering_key, headers, body, attempts, last_error, dead_at) \
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
                )?
                .execute(rusqlite::params![
                    msg.exchange,
                    queue,
                    msg.message_id,
                    msg.routing_key,
                    msg.ordering_key,
                    headers,
                    msg.body,
                    i64::from(attempts),
                    error_text,
                    now,
                ])?;
                conn.prepare_cached("DELETE FROM messages WHERE tag = ?1")?
                    .execute([tag])?;
                Ok::<_, WriteError>(())
            })
            .await
            .map_err(written("dead-lettering"))?;
        self.remove([delivery]);
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

    async fn dead_letter_count(&self, exchange: &str) -> Result<u64, BusError> {
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM dead_letters WHERE exchange = ?")
            .bind(exchange)
            .fetch_one(&self.db.reader)
            .await
            .map_err(unavailable("counting dead letters"))?;
        Ok(u64_of(n))
    }

    async fn redrive(&self, exchange: &str) -> Result<usize, BusError> {
        let (exchange, now, index, window) = (
            exchange.to_owned(),
            now_ms(),
            self.index.clone(),
            self.window,
        );
        let moved = self
            .db
            .jobs
            .run_committed(
                move |conn| {
                    let rows = conn
                        .prepare_cached(
                            "INSERT INTO messages (queue, message_id, exchange, routing_key, ordering_key, headers, body, available_at) \
                             SELECT queue, message_id, exchange, routing_key, ordering_key, \
                                    json_remove(headers, '$.\"x-queue\"', '$.\"x-attempts\"', '$.\"x-last-error\"', '$.\"x-dead-lettered-at\"'), \
                                    body, ?1 FROM dead_letters WHERE exchange = ?2 ORDER BY id \
                             RETURNING tag, queue, message_id, exchange, routing_key, ordering_key, headers, body",
                        )?
                        .query_map(rusqlite::params![now, exchange], |r| {
                            Ok((r.get::<_, String>(1)?, r.get::<_, i64>(0)?, message_at(r)?, now))
                        })?
                        .collect::<Result<Vec<_>, _>>()?;
                    conn.prepare_cached("DELETE FROM dead_letters WHERE exchange = ?1")?
                        .execute([&exchange])?;
                    Ok::<_, WriteError>(rows)
                },
                move |rows| {
                    let moved = rows.len();
                    Self::add(&index, window, rows);
                    moved
                },
            )
            .await
            .map_err(written("redriving"))?;
        let all: Vec<Arc<Notify>> = self
            .wakes
            .lock()
            .map(|w| w.values().cloned().collect())
            .unwrap_or_default();
        for w in all {
            w.notify_waiters();
        }
        Ok(moved)
    }

    async fn depth(&self, queue: &str) -> Result<u64, BusError> {
        Ok(self.index().get(queue).map_or(0, |q| q.depth))
    }

    async fn ping(&self) -> Result<(), BusError> {
        sqlx::query("SELECT 1")
            .execute(&self.db.reader)
            .await
            .map_err(unavailable("pinging the bus"))?;
        Ok(())
    }
}
