//! The stream log on Redis Streams: XADD with `MAXLEN ~`, consumer groups, XAUTOCLAIM.
//!
//! Blocking reads get a connection of their own, so a `BLOCK` never holds up the shared one.

use std::collections::BTreeMap;
use std::time::Duration;

use async_trait::async_trait;
use redis::aio::ConnectionManager;
use redis::streams::{
    StreamAutoClaimReply, StreamId, StreamInfoGroupsReply, StreamPendingReply, StreamRangeReply,
    StreamReadReply,
};

use super::{Entry, GroupStart, StreamError, StreamLog, parse_id};
use crate::config::redact;

#[derive(Clone)]
pub struct RedisStreams {
    client: redis::Client,
    conn: ConnectionManager,
    /// Put before every key (tests use one per test; production none).
    prefix: String,
}

impl std::fmt::Debug for RedisStreams {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStreams")
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

fn unavailable(e: redis::RedisError) -> StreamError {
    StreamError::Unavailable(redact(&e.to_string()))
}

fn entry(id: &StreamId) -> Entry {
    let fields = id
        .map
        .keys()
        .filter_map(|k| id.get::<String>(k).map(|v| (k.clone(), v)))
        .collect::<BTreeMap<_, _>>();
    Entry {
        id: id.id.clone(),
        fields,
    }
}

impl RedisStreams {
    /// Connects to `url` (`redis://host:port/db`); keys are `prefix` + stream name.
    pub async fn open(url: &str, prefix: &str) -> Result<Self, StreamError> {
        let client = redis::Client::open(url).map_err(|e| {
            StreamError::Unavailable(format!("REDIS_URL: {}", redact(&e.to_string())))
        })?;
        // One plain connection first: a server that is not there fails at once, while the
        // manager below keeps reconnecting (with backoff) once the service runs.
        let probe = tokio::time::timeout(
            Duration::from_secs(10),
            client.get_multiplexed_async_connection(),
        )
        .await
        .map_err(|_| StreamError::Unavailable("connecting to Redis timed out".into()))?
        .map_err(unavailable)?;
        drop(probe);
        let conn = tokio::time::timeout(Duration::from_secs(10), client.get_connection_manager())
            .await
            .map_err(|_| StreamError::Unavailable("connecting to Redis timed out".into()))?
            .map_err(unavailable)?;
        Ok(Self {
            client,
            conn,
            prefix: prefix.to_owned(),
        })
    }

    /// `XADD key [MAXLEN ~ n] * field value …`.
    fn xadd(
        &self,
        stream: &str,
        fields: &BTreeMap<String, String>,
        max_len: Option<u64>,
    ) -> redis::Cmd {
        let mut cmd = redis::cmd("XADD");
        cmd.arg(self.key(stream));
        if let Some(n) = max_len {
            cmd.arg("MAXLEN").arg("~").arg(n);
        }
        cmd.arg("*");
        for (k, v) in fields {
            cmd.arg(k).arg(v);
        }
        cmd
    }

    fn key(&self, stream: &str) -> String {
        format!("{}{stream}", self.prefix)
    }

    fn no_group(&self, stream: &str, group: &str, e: redis::RedisError) -> StreamError {
        if e.code() == Some("NOGROUP") {
            StreamError::NoGroup {
                stream: stream.into(),
                group: group.into(),
            }
        } else {
            unavailable(e)
        }
    }
}

#[async_trait]
impl StreamLog for RedisStreams {
    async fn append(
        &self,
        stream: &str,
        fields: &BTreeMap<String, String>,
        max_len: Option<u64>,
    ) -> Result<String, StreamError> {
        self.xadd(stream, fields, max_len)
            .query_async(&mut self.conn.clone())
            .await
            .map_err(unavailable)
    }

    /// One round trip: the XADDs pipelined.
    async fn append_all(
        &self,
        entries: &[(String, BTreeMap<String, String>)],
        max_len: Option<u64>,
    ) -> Result<(), StreamError> {
        if entries.is_empty() {
            return Ok(());
        }
        let mut pipe = redis::pipe();
        for (stream, fields) in entries {
            pipe.add_command(self.xadd(stream, fields, max_len))
                .ignore();
        }
        pipe.query_async::<()>(&mut self.conn.clone())
            .await
            .map_err(unavailable)
    }

    async fn create_group(
        &self,
        stream: &str,
        group: &str,
        start: GroupStart,
    ) -> Result<(), StreamError> {
        let from = match start {
            GroupStart::Beginning => "0",
            GroupStart::End => "$",
        };
        let done: redis::RedisResult<()> = redis::cmd("XGROUP")
            .arg("CREATE")
            .arg(self.key(stream))
            .arg(group)
            .arg(from)
            .arg("MKSTREAM")
            .query_async(&mut self.conn.clone())
            .await;
        match done {
            Err(e) if e.code() != Some("BUSYGROUP") => Err(unavailable(e)),
            _ => Ok(()),
        }
    }

    async fn read_group(
        &self,
        stream: &str,
        group: &str,
        consumer: &str,
        count: usize,
        block: Duration,
    ) -> Result<Vec<Entry>, StreamError> {
        let mut cmd = redis::cmd("XREADGROUP");
        cmd.arg("GROUP")
            .arg(group)
            .arg(consumer)
            .arg("COUNT")
            .arg(count);
        if !block.is_zero() {
            cmd.arg("BLOCK")
                .arg(u64::try_from(block.as_millis()).unwrap_or(u64::MAX));
        }
        cmd.arg("STREAMS").arg(self.key(stream)).arg(">");
        let reply: Option<StreamReadReply> = if block.is_zero() {
            cmd.query_async(&mut self.conn.clone()).await
        } else {
            // A blocking read holds its connection, so it gets its own, and an answer may take
            // the whole block: the default response timeout (half a second) would give up on
            // it, and the entries the server handed over meanwhile would wait, pending, for
            // the idle reclaim.
            let config = redis::AsyncConnectionConfig::new()
                .set_response_timeout(Some(block + Duration::from_secs(5)));
            let mut own = self
                .client
                .get_multiplexed_async_connection_with_config(&config)
                .await
                .map_err(unavailable)?;
            cmd.query_async(&mut own).await
        }
        .map_err(|e| self.no_group(stream, group, e))?;
        Ok(reply
            .map(|r| {
                r.keys
                    .iter()
                    .flat_map(|k| k.ids.iter().map(entry))
                    .collect()
            })
            .unwrap_or_default())
    }

    async fn ack(&self, stream: &str, group: &str, ids: &[String]) -> Result<u64, StreamError> {
        if ids.is_empty() {
            return Ok(0);
        }
        redis::cmd("XACK")
            .arg(self.key(stream))
            .arg(group)
            .arg(ids)
            .query_async(&mut self.conn.clone())
            .await
            .map_err(unavailable)
    }

    async fn claim_idle(
        &self,
        stream: &str,
        group: &str,
        consumer: &str,
        min_idle: Duration,
        count: usize,
    ) -> Result<Vec<Entry>, StreamError> {
        let reply: StreamAutoClaimReply = redis::cmd("XAUTOCLAIM")
            .arg(self.key(stream))
            .arg(group)
            .arg(consumer)
            .arg(u64::try_from(min_idle.as_millis()).unwrap_or(u64::MAX))
            .arg("0-0")
            .arg("COUNT")
            .arg(count)
            .query_async(&mut self.conn.clone())
            .await
            .map_err(|e| self.no_group(stream, group, e))?;
        Ok(reply.claimed.iter().map(entry).collect())
    }

    async fn own_pending(
        &self,
        stream: &str,
        group: &str,
        consumer: &str,
        count: usize,
    ) -> Result<Vec<Entry>, StreamError> {
        let reply: Option<StreamReadReply> = redis::cmd("XREADGROUP")
            .arg("GROUP")
            .arg(group)
            .arg(consumer)
            .arg("COUNT")
            .arg(count)
            .arg("STREAMS")
            .arg(self.key(stream))
            .arg("0")
            .query_async(&mut self.conn.clone())
            .await
            .map_err(|e| self.no_group(stream, group, e))?;
        Ok(reply
            .map(|r| {
                r.keys
                    .iter()
                    .flat_map(|k| k.ids.iter().map(entry))
                    .collect()
            })
            .unwrap_or_default())
    }

    async fn range(
        &self,
        stream: &str,
        after: Option<&str>,
        count: usize,
    ) -> Result<Vec<Entry>, StreamError> {
        let start = match after {
            Some(id) => {
                parse_id(id)?;
                format!("({id}")
            }
            None => "-".to_owned(),
        };
        let reply: StreamRangeReply = redis::cmd("XRANGE")
            .arg(self.key(stream))
            .arg(start)
            .arg("+")
            .arg("COUNT")
            .arg(count)
            .query_async(&mut self.conn.clone())
            .await
            .map_err(unavailable)?;
        Ok(reply.ids.iter().map(entry).collect())
    }

    async fn pending(&self, stream: &str, group: &str) -> Result<u64, StreamError> {
        let reply: StreamPendingReply = redis::cmd("XPENDING")
            .arg(self.key(stream))
            .arg(group)
            .query_async(&mut self.conn.clone())
            .await
            .map_err(|e| self.no_group(stream, group, e))?;
        Ok(reply.count() as u64)
    }

    async fn waiting(&self, stream: &str, group: &str) -> Result<u64, StreamError> {
        // XINFO GROUPS: each group's `pending` and `lag` (Redis 7: entries not yet delivered;
        // nil when Redis cannot tell, after entries were deleted from the middle).
        let reply: StreamInfoGroupsReply = redis::cmd("XINFO")
            .arg("GROUPS")
            .arg(self.key(stream))
            .query_async(&mut self.conn.clone())
            .await
            .map_err(unavailable)?;
        let info = reply
            .groups
            .iter()
            .find(|g| g.name == group)
            .ok_or_else(|| StreamError::NoGroup {
                stream: stream.into(),
                group: group.into(),
            })?;
        let lag = info.lag.ok_or_else(|| {
            StreamError::Unavailable(format!("Redis cannot tell {stream}'s lag for {group}"))
        })?;
        Ok((lag as u64).saturating_add(info.pending as u64))
    }

    async fn len(&self, stream: &str) -> Result<u64, StreamError> {
        redis::cmd("XLEN")
            .arg(self.key(stream))
            .query_async(&mut self.conn.clone())
            .await
            .map_err(unavailable)
    }

    async fn ping(&self) -> Result<(), StreamError> {
        let _: String = redis::cmd("PING")
            .query_async(&mut self.conn.clone())
            .await
            .map_err(unavailable)?;
        Ok(())
    }
}
