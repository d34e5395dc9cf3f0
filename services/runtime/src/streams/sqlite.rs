//! The embedded stream log: one SQLite file with entries, groups and pending entries.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use sqlx::sqlite::SqliteRow;
use sqlx::{QueryBuilder, Row, Sqlite};
use tokio::sync::Notify;

use super::{Entry, GroupStart, StreamError, StreamLog, parse_id};
use crate::sqlite::Db;

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
    wake: Arc<Notify>,
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
            wake: Arc::new(Notify::new()),
            since_count: Arc::default(),
        })
    }

    pub async fn close(&self) {
        self.db.close().await;
    }

    async fn group_position(
        &self,
        tx: &mut sqlx::SqliteConnection,
        stream: &str,
        group: &str,
    ) -> Result<(i64, i64), StreamError> {
        let row = sqlx::query("SELECT last_ms, last_seq FROM groups WHERE stream = ? AND grp = ?")
            .bind(stream)
            .bind(group)
            .fetch_optional(&mut *tx)
            .await
            .map_err(unavailable("reading a group"))?;
        row.map(|r| (r.get(0), r.get(1)))
            .ok_or_else(|| StreamError::NoGroup {
                stream: stream.into(),
                group: group.into(),
            })
    }

    /// Appends one entry inside `tx`; trims the stream to about `max_len`.
    async fn append_in(
        &self,
        tx: &mut sqlx::SqliteConnection,
        stream: &str,
        fields: &BTreeMap<String, String>,
        max_len: Option<u64>,
    ) -> Result<String, StreamError> {
        let json =
            serde_json::to_string(fields).map_err(|e| StreamError::Unavailable(e.to_string()))?;
        let last: Option<(i64, i64)> = sqlx::query(
            "SELECT ms, seq FROM entries WHERE stream = ? ORDER BY ms DESC, seq DESC LIMIT 1",
        )
        .bind(stream)
        .fetch_optional(&mut *tx)
        .await
        .map_err(unavailable("appending"))?
        .map(|r| (r.get(0), r.get(1)));
        let now = now_ms();
        let (ms, seq) = match last {
            Some((ms, seq)) if ms >= now => (ms, seq + 1),
            _ => (now, 0),
        };
        sqlx::query("INSERT INTO entries (stream, ms, seq, fields) VALUES (?, ?, ?, ?)")
            .bind(stream)
            .bind(ms)
            .bind(seq)
            .bind(json)
            .execute(&mut *tx)
            .await
            .map_err(unavailable("appending"))?;
        if let Some(cap) = max_len {
            let due = {
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
            };
            // Approximate, like MAXLEN ~: trim only once the stream is 10% over its cap.
            if due {
                let len: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM entries WHERE stream = ?")
                    .bind(stream)
                    .fetch_one(&mut *tx)
                    .await
                    .map_err(unavailable("trimming"))?;
                let cap = i64::try_from(cap).unwrap_or(i64::MAX);
                if len > cap + cap / 10 {
                    sqlx::query("DELETE FROM entries WHERE stream = ? AND (ms, seq) IN (SELECT ms, seq FROM entries WHERE stream = ? ORDER BY ms, seq LIMIT ?)")
                        .bind(stream)
                        .bind(stream)
                        .bind(len - cap)
                        .execute(&mut *tx)
                        .await
                        .map_err(unavailable("trimming"))?;
                }
            }
        }
        Ok(format!("{ms}-{seq}"))
    }

    async fn read_new(
        &self,
        stream: &str,
        group: &str,
        consumer: &str,
        count: usize,
    ) -> Result<Vec<Entry>, StreamError> {
        let mut tx = self
            .db
            .writer
            .begin()
            .await
            .map_err(unavailable("reading a group"))?;
        let (ms, seq) = self.group_position(&mut tx, stream, group).await?;
        let rows = sqlx::query("SELECT ms, seq, fields FROM entries WHERE stream = ? AND (ms, seq) > (?, ?) ORDER BY ms, seq LIMIT ?")
            .bind(stream)
            .bind(ms)
            .bind(seq)
            .bind(i64::try_from(count).unwrap_or(i64::MAX))
            .fetch_all(&mut *tx)
            .await
            .map_err(unavailable("reading a group"))?;
        if let Some(last) = rows.last() {
            let now = now_ms();
            for row in &rows {
                sqlx::query("INSERT OR REPLACE INTO pending (stream, grp, ms, seq, consumer, delivered_at, deliveries) VALUES (?, ?, ?, ?, ?, ?, 1)")
                    .bind(stream)
                    .bind(group)
                    .bind(row.get::<i64, _>("ms"))
                    .bind(row.get::<i64, _>("seq"))
                    .bind(consumer)
                    .bind(now)
                    .execute(&mut *tx)
                    .await
                    .map_err(unavailable("recording pending entries"))?;
            }
            sqlx::query("UPDATE groups SET last_ms = ?, last_seq = ? WHERE stream = ? AND grp = ?")
                .bind(last.get::<i64, _>("ms"))
                .bind(last.get::<i64, _>("seq"))
                .bind(stream)
                .bind(group)
                .execute(&mut *tx)
                .await
                .map_err(unavailable("moving a group"))?;
        }
        tx.commit().await.map_err(unavailable("reading a group"))?;
        Ok(rows.iter().map(entry).collect())
    }
}

#[async_trait]
impl StreamLog for SqliteStreams {
    async fn append(
        &self,
        stream: &str,
        fields: &BTreeMap<String, String>,
        max_len: Option<u64>,
    ) -> Result<String, StreamError> {
        let mut tx = self
            .db
            .writer
            .begin()
            .await
            .map_err(unavailable("appending"))?;
        let id = self.append_in(&mut tx, stream, fields, max_len).await?;
        tx.commit().await.map_err(unavailable("appending"))?;
        self.wake.notify_waiters();
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
        let mut tx = self
            .db
            .writer
            .begin()
            .await
            .map_err(unavailable("appending"))?;
        for (stream, fields) in entries {
            self.append_in(&mut tx, stream, fields, max_len).await?;
        }
        tx.commit().await.map_err(unavailable("appending"))?;
        self.wake.notify_waiters();
        Ok(())
    }

    async fn create_group(
        &self,
        stream: &str,
        group: &str,
        start: GroupStart,
    ) -> Result<(), StreamError> {
        let (ms, seq): (i64, i64) = match start {
            GroupStart::Beginning => (-1, -1),
            GroupStart::End => sqlx::query(
                "SELECT ms, seq FROM entries WHERE stream = ? ORDER BY ms DESC, seq DESC LIMIT 1",
            )
            .bind(stream)
            .fetch_optional(&self.db.writer)
            .await
            .map_err(unavailable("creating a group"))?
            .map_or((-1, -1), |r| (r.get::<i64, _>(0), r.get::<i64, _>(1))),
        };
        sqlx::query(
            "INSERT OR IGNORE INTO groups (stream, grp, last_ms, last_seq) VALUES (?, ?, ?, ?)",
        )
        .bind(stream)
        .bind(group)
        .bind(ms)
        .bind(seq)
        .execute(&self.db.writer)
        .await
        .map_err(unavailable("creating a group"))?;
        Ok(())
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
        loop {
            let woken = self.wake.notified();
            let got = self.read_new(stream, group, consumer, count).await?;
            let now = tokio::time::Instant::now();
            if !got.is_empty() || now >= deadline {
                return Ok(got);
            }
            let _ = tokio::time::timeout(deadline - now, woken).await;
        }
    }

    async fn ack(&self, stream: &str, group: &str, ids: &[String]) -> Result<u64, StreamError> {
        let mut acked = 0;
        let mut tx = self
            .db
            .writer
            .begin()
            .await
            .map_err(unavailable("acking"))?;
        for id in ids {
            let (ms, seq) = parse_id(id)?;
            acked += sqlx::query(
                "DELETE FROM pending WHERE stream = ? AND grp = ? AND ms = ? AND seq = ?",
            )
            .bind(stream)
            .bind(group)
            .bind(ms)
            .bind(seq)
            .execute(&mut *tx)
            .await
            .map_err(unavailable("acking"))?
            .rows_affected();
        }
        tx.commit().await.map_err(unavailable("acking"))?;
        Ok(acked)
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
        let mut tx = self
            .db
            .writer
            .begin()
            .await
            .map_err(unavailable("claiming"))?;
        let rows = sqlx::query(
            "SELECT e.ms, e.seq, e.fields FROM pending p LEFT JOIN entries e ON e.stream = p.stream AND e.ms = p.ms AND e.seq = p.seq \
             WHERE p.stream = ? AND p.grp = ? AND p.delivered_at <= ? ORDER BY p.ms, p.seq LIMIT ?",
        )
        .bind(stream)
        .bind(group)
        .bind(idle_before)
        .bind(i64::try_from(count).unwrap_or(i64::MAX))
        .fetch_all(&mut *tx)
        .await
        .map_err(unavailable("claiming"))?;
        let mut out = Vec::new();
        let mut ids: Vec<(i64, i64)> = Vec::new();
        for row in &rows {
            // An entry trimmed away while pending has nothing left to hand out.
            if let (Ok(ms), Ok(seq)) = (row.try_get::<i64, _>("ms"), row.try_get::<i64, _>("seq")) {
                ids.push((ms, seq));
                out.push(entry(row));
            }
        }
        if !ids.is_empty() {
            let mut q: QueryBuilder<Sqlite> = QueryBuilder::new("UPDATE pending SET consumer = ");
            q.push_bind(consumer)
                .push(", delivered_at = ")
                .push_bind(now)
                .push(", deliveries = deliveries + 1 WHERE stream = ");
            q.push_bind(stream)
                .push(" AND grp = ")
                .push_bind(group)
                .push(" AND (ms, seq) IN (");
            let mut list = q.separated(", ");
            for (ms, seq) in &ids {
                list.push(format!("({ms}, {seq})"));
            }
            q.push(")");
            q.build()
                .execute(&mut *tx)
                .await
                .map_err(unavailable("claiming"))?;
        }
        tx.commit().await.map_err(unavailable("claiming"))?;
        Ok(out)
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
        .fetch_all(&self.db.writer)
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
