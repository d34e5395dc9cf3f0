//! The embedded stream log: one SQLite file with entries, groups and pending entries.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use sqlx::Row;
use sqlx::sqlite::SqliteRow;
use tokio::sync::Notify;

use super::{Entry, GroupStart, StreamError, StreamLog, parse_id};
use crate::sqlite::Db;
use crate::sqlite::writer::{WriteError, rusqlite};
use rusqlite::OptionalExtension as _;

const SCHEMA: &str = r#"
CREATE TABLE IF NOT EXISTS entries (
    stream TEXT NOT NULL,
    ms     INTEGER NOT NULL,
    seq    INTEGER NOT NULL,
    fields TEXT NOT NULL,
    PRIMARY KEY (stream, ms, seq)
);
CREATE TABLE IF NOT EXISTS groups (
    stream  TEXT NOT NULL,
    grp     TEXT NOT NULL,
    last_ms INTEGER NOT NULL,
    last_seq INTEGER NOT NULL,
    PRIMARY KEY (stream, grp)
);
CREATE TABLE IF NOT EXISTS pending (
    stream       TEXT NOT NULL,
    grp          TEXT NOT NULL,
    ms           INTEGER NOT NULL,
    seq          INTEGER NOT NULL,
    consumer     TEXT NOT NULL,
    delivered_at INTEGER NOT NULL,
    deliveries   INTEGER NOT NULL,
    PRIMARY KEY (stream, grp, ms, seq)
);
"#;

#[derive(Debug, Clone)]
pub struct SqliteStreams {
    db: Db,
    /// One per stream: an append wakes the readers of its stream only.
    wakes: Arc<std::sync::Mutex<std::collections::HashMap<String, Arc<Notify>>>>,
    /// Appends per stream since its length was last counted (counting is a scan: it is done
    /// once every twentieth of the cap, not on every append).
    since_count: Arc<std::sync::Mutex<std::collections::HashMap<String, u64>>>,
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

fn unavailable(context: &'static str) -> impl Fn(sqlx::Error) -> StreamError {
    move |e| StreamError::Unavailable(format!("{context}: {e}"))
}

fn entry(row: &SqliteRow) -> Entry {
    let fields: String = row.get("fields");
    Entry {
        id: format!("{}-{}", row.get::<i64, _>("ms"), row.get::<i64, _>("seq")),
        fields: serde_json::from_str(&fields).unwrap_or_default(),
    }
}

impl SqliteStreams {
    pub async fn open(path: &Path) -> Result<Self, StreamError> {
        let db = Db::open(path, &[SCHEMA])
            .await
            .map_err(|e| StreamError::Unavailable(format!("opening {}: {e}", path.display())))?;
        Ok(Self {
            db,
            wakes: Arc::default(),
            since_count: Arc::default(),
        })
    }

    pub async fn close(&self) {
        self.db.close().await;
    }

    fn waker(&self, stream: &str) -> Arc<Notify> {
        self.wakes
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .entry(stream.to_owned())
            .or_default()
            .clone()
    }

    /// Whether this append of `stream` is the one that counts the stream's length (counting
    /// is a scan: it is done once every twentieth of the cap, not on every append).
    fn count_due(&self, stream: &str, cap: u64) -> bool {
        let mut counts = self
            .since_count
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let n = counts.entry(stream.to_owned()).or_insert(u64::MAX - 1);
        *n = n.saturating_add(1);
        if *n >= (cap / 20).max(1) {
            *n = 0;
            true
        } else {
            false
        }
    }
    async fn read_new(
        &self,
        stream: &str,
        group: &str,
        consumer: &str,
        count: usize,
    ) -> Result<Vec<Entry>, StreamError> {
        let (stream, group, consumer) = (stream.to_owned(), group.to_owned(), consumer.to_owned());
        let count = i64::try_from(count).unwrap_or(i64::MAX);
        self.db
            .jobs
            .run(move |conn| {
                let (ms, seq) = group_position(conn, &stream, &group)?;
                let rows: Vec<(i64, i64, String)> = conn
                    .prepare_cached("SELECT ms, seq, fields FROM entries WHERE stream = ?1 AND (ms, seq) > (?2, ?3) ORDER BY ms, seq LIMIT ?4")
                    .and_then(|mut q| {
                        q.query_map(rusqlite::params![stream, ms, seq, count], |r| {
                            Ok((r.get(0)?, r.get(1)?, r.get(2)?))
                        })?
                        .collect()
                    })
                    .map_err(failed("reading a group"))?;
                if let Some(&(last_ms, last_seq, _)) = rows.last() {
                    let now = now_ms();
                    let mut pend = conn
                        .prepare_cached("INSERT OR REPLACE INTO pending (stream, grp, ms, seq, consumer, delivered_at, deliveries) VALUES (?1, ?2, ?3, ?4, ?5, ?6, 1)")
                        .map_err(failed("recording pending entries"))?;
                    for (ms, seq, _) in &rows {
                        pend.execute(rusqlite::params![stream, group, ms, seq, consumer, now])
                            .map_err(failed("recording pending entries"))?;
                    }
                    conn.prepare_cached("UPDATE groups SET last_ms = ?1, last_seq = ?2 WHERE stream = ?3 AND grp = ?4")
                        .and_then(|mut q| q.execute(rusqlite::params![last_ms, last_seq, stream, group]))
                        .map_err(failed("moving a group"))?;
                }
                Ok(rows
                    .into_iter()
                    .map(|(ms, seq, fields)| entry_of(ms, seq, &fields))
                    .collect())
            })
            .await
    }
}

fn failed(context: &'static str) -> impl Fn(rusqlite::Error) -> StreamError {
    move |e| StreamError::Unavailable(format!("{context}: {e}"))
}

impl From<WriteError> for StreamError {
    fn from(e: WriteError) -> Self {
        Self::Unavailable(e.0)
    }
}

fn entry_of(ms: i64, seq: i64, fields: &str) -> Entry {
    Entry {
        id: format!("{ms}-{seq}"),
        fields: serde_json::from_str(fields).unwrap_or_default(),
    }
}

fn group_position(
    conn: &rusqlite::Connection,
    stream: &str,
    group: &str,
) -> Result<(i64, i64), StreamError> {
    conn.prepare_cached("SELECT last_ms, last_seq FROM groups WHERE stream = ?1 AND grp = ?2")
        .and_then(|mut q| {
            q.query_row([stream, group], |r| Ok((r.get(0)?, r.get(1)?)))
                .optional()
        })
        .map_err(failed("reading a group"))?
        .ok_or_else(|| StreamError::NoGroup {
            stream: stream.into(),
            group: group.into(),
        })
}

/// Appends one entry inside the writer's transaction; with `trim_to`, trims the stream to
/// about that many entries (like MAXLEN ~: only once it is 10% over).
fn append_in(
    conn: &rusqlite::Connection,
    stream: &str,
    fields: &str,
    trim_to: Option<i64>,
) -> Result<String, StreamError> {
    let fail = failed("appending");
    let last: Option<(i64, i64)> = conn
        .prepare_cached(
            "SELECT ms, seq FROM entries WHERE stream = ?1 ORDER BY ms DESC, seq DESC LIMIT 1",
        )
        .and_then(|mut q| {
            q.query_row([stream], |r| Ok((r.get(0)?, r.get(1)?)))
                .optional()
        })
        .map_err(&fail)?;
    let now = now_ms();
    let (ms, seq) = match last {
        Some((ms, seq)) if ms >= now => (ms, seq + 1),
        _ => (now, 0),
    };
    conn.prepare_cached("INSERT INTO entries (stream, ms, seq, fields) VALUES (?1, ?2, ?3, ?4)")
        .and_then(|mut q| q.execute(rusqlite::params![stream, ms, seq, fields]))
        .map_err(&fail)?;
    if let Some(cap) = trim_to {
        let trim = failed("trimming");
        let len: i64 = conn
            .prepare_cached("SELECT COUNT(*) FROM entries WHERE stream = ?1")
            .and_then(|mut q| q.query_row([stream], |r| r.get(0)))
            .map_err(&trim)?;
        if len > cap + cap / 10 {
            conn.prepare_cached("DELETE FROM entries WHERE stream = ?1 AND (ms, seq) IN (SELECT ms, seq FROM entries WHERE stream = ?1 ORDER BY ms, seq LIMIT ?2)")
                .and_then(|mut q| q.execute(rusqlite::params![stream, len - cap]))
                .map_err(&trim)?;
        }
    }
    Ok(format!("{ms}-{seq}"))
}

#[async_trait]
impl StreamLog for SqliteStreams {
    async fn append(
        &self,
        stream: &str,
        fields: &BTreeMap<String, String>,
        max_len: Option<u64>,
    ) -> Result<String, StreamError> {
        let json =
            serde_json::to_string(fields).map_err(|e| StreamError::Unavailable(e.to_string()))?;
        let trim_to = max_len
            .filter(|cap| self.count_due(stream, *cap))
            .map(|cap| i64::try_from(cap).unwrap_or(i64::MAX));
        let owned = stream.to_owned();
        let id = self
            .db
            .jobs
            .run(move |conn| append_in(conn, &owned, &json, trim_to))
            .await?;
        self.waker(stream).notify_waiters();
        Ok(id)
    }

    async fn append_all(
        &self,
        entries: &[(String, BTreeMap<String, String>)],
        max_len: Option<u64>,
    ) -> Result<(), StreamError> {
        if entries.is_empty() {
            return Ok(());
        }
        let mut rows = Vec::with_capacity(entries.len());
        for (stream, fields) in entries {
            let json = serde_json::to_string(fields)
                .map_err(|e| StreamError::Unavailable(e.to_string()))?;
            let trim_to = max_len
                .filter(|cap| self.count_due(stream, *cap))
                .map(|cap| i64::try_from(cap).unwrap_or(i64::MAX));
            rows.push((stream.clone(), json, trim_to));
        }
        self.db
            .jobs
            .run(move |conn| {
                for (stream, json, trim_to) in &rows {
                    append_in(conn, stream, json, *trim_to)?;
                }
                Ok::<_, StreamError>(())
            })
            .await?;
        let streams: std::collections::BTreeSet<&str> =
            entries.iter().map(|(s, _)| s.as_str()).collect();
        for stream in streams {
            self.waker(stream).notify_waiters();
        }
        Ok(())
    }

    async fn create_group(
        &self,
        stream: &str,
        group: &str,
        start: GroupStart,
    ) -> Result<(), StreamError> {
        let (stream, group) = (stream.to_owned(), group.to_owned());
        self.db
            .jobs
            .run(move |conn| {
                let fail = failed("creating a group");
                let (ms, seq): (i64, i64) = match start {
                    GroupStart::Beginning => (-1, -1),
                    GroupStart::End => conn
                        .prepare_cached("SELECT ms, seq FROM entries WHERE stream = ?1 ORDER BY ms DESC, seq DESC LIMIT 1")
                        .and_then(|mut q| q.query_row([&stream], |r| Ok((r.get(0)?, r.get(1)?))).optional())
                        .map_err(&fail)?
                        .unwrap_or((-1, -1)),
                };
                conn.prepare_cached("INSERT OR IGNORE INTO groups (stream, grp, last_ms, last_seq) VALUES (?1, ?2, ?3, ?4)")
                    .and_then(|mut q| q.execute(rusqlite::params![stream, group, ms, seq]))
                    .map_err(&fail)?;
                Ok(())
            })
            .await
    }

    async fn read_group(
        &self,
        stream: &str,
        group: &str,
        consumer: &str,
        count: usize,
        block: Duration,
    ) -> Result<Vec<Entry>, StreamError> {
        let deadline = tokio::time::Instant::now() + block;
        let waker = self.waker(stream);
        loop {
            let woken = waker.notified();
            let got = self.read_new(stream, group, consumer, count).await?;
            let now = tokio::time::Instant::now();
            if !got.is_empty() || now >= deadline {
                return Ok(got);
            }
            let _ = tokio::time::timeout(deadline - now, woken).await;
        }
    }

    async fn ack(&self, stream: &str, group: &str, ids: &[String]) -> Result<u64, StreamError> {
        let ids = ids
            .iter()
            .map(|id| parse_id(id))
            .collect::<Result<Vec<_>, _>>()?;
        let (stream, group) = (stream.to_owned(), group.to_owned());
        self.db
            .jobs
            .run(move |conn| {
                let mut delete = conn
                    .prepare_cached("DELETE FROM pending WHERE stream = ?1 AND grp = ?2 AND ms = ?3 AND seq = ?4")
                    .map_err(failed("acking"))?;
                let mut acked = 0;
                for (ms, seq) in ids {
                    acked += delete
                        .execute(rusqlite::params![stream, group, ms, seq])
                        .map_err(failed("acking"))? as u64;
                }
                Ok(acked)
            })
            .await
    }

    async fn claim_idle(
        &self,
        stream: &str,
        group: &str,
        consumer: &str,
        min_idle: Duration,
        count: usize,
    ) -> Result<Vec<Entry>, StreamError> {
        let now = now_ms();
        let idle_before = now - i64::try_from(min_idle.as_millis()).unwrap_or(i64::MAX);
        let (stream, group, consumer) = (stream.to_owned(), group.to_owned(), consumer.to_owned());
        let count = i64::try_from(count).unwrap_or(i64::MAX);
        self.db
            .jobs
            .run(move |conn| {
                let fail = failed("claiming");
                let rows: Vec<(Option<i64>, Option<i64>, Option<String>)> = conn
                    .prepare_cached(
                        "SELECT e.ms, e.seq, e.fields FROM pending p LEFT JOIN entries e ON e.stream = p.stream AND e.ms = p.ms AND e.seq = p.seq \
                         WHERE p.stream = ?1 AND p.grp = ?2 AND p.delivered_at <= ?3 ORDER BY p.ms, p.seq LIMIT ?4",
                    )
                    .and_then(|mut q| {
                        q.query_map(rusqlite::params![stream, group, idle_before, count], |r| {
                            Ok((r.get(0)?, r.get(1)?, r.get(2)?))
                        })?
                        .collect()
                    })
                    .map_err(&fail)?;
                let mut out = Vec::new();
                let mut take = conn
                    .prepare_cached("UPDATE pending SET consumer = ?1, delivered_at = ?2, deliveries = deliveries + 1 \
                                     WHERE stream = ?3 AND grp = ?4 AND ms = ?5 AND seq = ?6")
                    .map_err(&fail)?;
                for row in rows {
                    // An entry trimmed away while pending has nothing left to hand out.
                    if let (Some(ms), Some(seq), Some(fields)) = row {
                        take.execute(rusqlite::params![consumer, now, stream, group, ms, seq])
                            .map_err(&fail)?;
                        out.push(entry_of(ms, seq, &fields));
                    }
                }
                Ok(out)
            })
            .await
    }

    async fn own_pending(
        &self,
        stream: &str,
        group: &str,
        consumer: &str,
        count: usize,
    ) -> Result<Vec<Entry>, StreamError> {
        let rows = sqlx::query(
            "SELECT e.ms, e.seq, e.fields FROM pending p JOIN entries e ON e.stream = p.stream AND e.ms = p.ms AND e.seq = p.seq \
             WHERE p.stream = ? AND p.grp = ? AND p.consumer = ? ORDER BY p.ms, p.seq LIMIT ?",
        )
        .bind(stream)
        .bind(group)
        .bind(consumer)
        .bind(i64::try_from(count).unwrap_or(i64::MAX))
        .fetch_all(&self.db.reader)
        .await
        .map_err(unavailable("reading own pending entries"))?;
        Ok(rows.iter().map(entry).collect())
    }

    async fn range(
        &self,
        stream: &str,
        after: Option<&str>,
        count: usize,
    ) -> Result<Vec<Entry>, StreamError> {
        let (ms, seq) = after.map(parse_id).transpose()?.unwrap_or((-1, -1));
        let rows = sqlx::query("SELECT ms, seq, fields FROM entries WHERE stream = ? AND (ms, seq) > (?, ?) ORDER BY ms, seq LIMIT ?")
            .bind(stream)
            .bind(ms)
            .bind(seq)
            .bind(i64::try_from(count).unwrap_or(i64::MAX))
            .fetch_all(&self.db.reader)
            .await
            .map_err(unavailable("reading a range"))?;
        Ok(rows.iter().map(entry).collect())
    }

    async fn pending(&self, stream: &str, group: &str) -> Result<u64, StreamError> {
        let n: i64 =
            sqlx::query_scalar("SELECT COUNT(*) FROM pending WHERE stream = ? AND grp = ?")
                .bind(stream)
                .bind(group)
                .fetch_one(&self.db.reader)
                .await
                .map_err(unavailable("counting pending entries"))?;
        Ok(u64::try_from(n).unwrap_or(0))
    }

    async fn waiting(&self, stream: &str, group: &str) -> Result<u64, StreamError> {
        // After the group's position, plus delivered and not acked; no row: no such group.
        let n: Option<i64> = sqlx::query_scalar(
            "SELECT (SELECT COUNT(*) FROM entries e WHERE e.stream = g.stream \
                       AND (e.ms, e.seq) > (g.last_ms, g.last_seq)) \
                  + (SELECT COUNT(*) FROM pending p WHERE p.stream = g.stream AND p.grp = g.grp) \
             FROM groups g WHERE g.stream = ? AND g.grp = ?",
        )
        .bind(stream)
        .bind(group)
        .fetch_optional(&self.db.reader)
        .await
        .map_err(unavailable("counting what a group has not acked"))?;
        n.map(|n| u64::try_from(n).unwrap_or(0))
            .ok_or_else(|| StreamError::NoGroup {
                stream: stream.into(),
                group: group.into(),
            })
    }

    async fn len(&self, stream: &str) -> Result<u64, StreamError> {
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM entries WHERE stream = ?")
            .bind(stream)
            .fetch_one(&self.db.reader)
            .await
            .map_err(unavailable("counting entries"))?;
        Ok(u64::try_from(n).unwrap_or(0))
    }

    async fn ping(&self) -> Result<(), StreamError> {
        sqlx::query("SELECT 1")
            .execute(&self.db.reader)
            .await
            .map_err(unavailable("pinging the stream log"))?;
        Ok(())
    }
}
