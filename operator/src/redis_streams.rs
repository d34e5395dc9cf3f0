//! Redis: the streams and consumer groups of an EventPipeline, created idempotently (a group
//! reads its stream from the beginning: streams are the replay log), read back, and removed.

use std::time::Duration;

use redis::aio::MultiplexedConnection;

/// Why Redis did not do what was asked; each maps to a condition reason.
#[derive(Debug, thiserror::Error)]
pub enum RedisError {
    #[error("{0}")]
    BadUrl(String),
    #[error("Redis does not answer: {0}")]
    Unreachable(String),
    #[error("Redis refused the credentials of the Secret: {0}")]
    Unauthorized(String),
    #[error("Redis refused: {0}")]
    Refused(String),
}

impl RedisError {
    pub fn reason(&self) -> &'static str {
        match self {
            Self::BadUrl(_) => "InvalidRedisUrl",
            Self::Unreachable(_) => "RedisUnreachable",
            Self::Unauthorized(_) => "RedisUnauthorized",
            Self::Refused(_) => "RedisRefused",
        }
    }
}

const TIMEOUT: Duration = Duration::from_secs(5);

fn classify(e: &redis::RedisError) -> RedisError {
    let text = e.to_string();
    if matches!(e.code(), Some("NOAUTH" | "WRONGPASS"))
        || text.contains("WRONGPASS")
        || text.contains("NOAUTH")
    {
        RedisError::Unauthorized(text)
    } else if e.is_io_error()
        || e.is_connection_refusal()
        || e.is_timeout()
        || e.is_connection_dropped()
    {
        RedisError::Unreachable(text)
    } else {
        RedisError::Refused(text)
    }
}

/// A connection to one Redis database.
pub struct Streams {
    conn: MultiplexedConnection,
}

impl Streams {
    pub async fn connect(url: &str) -> Result<Self, RedisError> {
        if !matches!(
            url.trim().split_once("://").map(|(s, _)| s),
            Some("redis" | "rediss")
        ) {
            return Err(RedisError::BadUrl(
                "the Redis URL must be redis://[user:password@]host:6379/db".into(),
            ));
        }
        let client = redis::Client::open(url.trim()).map_err(|e| {
            RedisError::BadUrl(format!(
                "the Redis URL is not valid ({:?}); expected redis://[user:password@]host:6379/db",
                e.kind()
            ))
        })?;
        let conn = tokio::time::timeout(TIMEOUT, client.get_multiplexed_async_connection())
            .await
            .map_err(|_| RedisError::Unreachable(format!("no connection within {TIMEOUT:?}")))?
            .map_err(|e| classify(&e))?;
        let mut s = Self { conn };
        let _: String = s.run(redis::cmd("PING")).await?;
        Ok(s)
    }

    async fn run<T: redis::FromRedisValue>(&mut self, cmd: redis::Cmd) -> Result<T, RedisError> {
        tokio::time::timeout(TIMEOUT, cmd.query_async(&mut self.conn))
            .await
            .map_err(|_| RedisError::Unreachable(format!("no answer within {TIMEOUT:?}")))?
            .map_err(|e| classify(&e))
    }

    /// Creates `stream` (when missing) and the consumer group `group` on it, reading from the
    /// beginning; an existing group is left as it is.
    pub async fn ensure_group(&mut self, stream: &str, group: &str) -> Result<(), RedisError> {
        let mut cmd = redis::cmd("XGROUP");
        cmd.arg("CREATE")
            .arg(stream)
            .arg(group)
            .arg("0")
            .arg("MKSTREAM");
        match self.run::<()>(cmd).await {
            Err(RedisError::Refused(text)) if text.contains("BUSYGROUP") => Ok(()),
            other => other,
        }
    }

    /// Creates `stream` when it does not exist, without a group (an empty stream needs one, so
    /// a group is created and destroyed).
    pub async fn ensure_stream(&mut self, stream: &str) -> Result<(), RedisError> {
        let exists: i64 = self.run(redis::cmd("EXISTS").arg(stream).clone()).await?;
        if exists == 0 {
            self.ensure_group(stream, "sagaflow-operator").await?;
            let _: i64 = self
                .run(
                    redis::cmd("XGROUP")
                        .arg("DESTROY")
                        .arg(stream)
                        .arg("sagaflow-operator")
                        .clone(),
                )
                .await?;
        }
        Ok(())
    }

    /// The consumer groups of `stream` (empty when the stream does not exist).
    pub async fn groups(&mut self, stream: &str) -> Result<Vec<String>, RedisError> {
        let exists: i64 = self.run(redis::cmd("EXISTS").arg(stream).clone()).await?;
        if exists == 0 {
            return Ok(Vec::new());
        }
        let info: Vec<std::collections::HashMap<String, redis::Value>> = self
            .run(redis::cmd("XINFO").arg("GROUPS").arg(stream).clone())
            .await?;
        Ok(info
            .into_iter()
            .filter_map(|g| match g.get("name") {
                Some(redis::Value::BulkString(b)) => Some(String::from_utf8_lossy(b).into_owned()),
                Some(redis::Value::SimpleString(s)) => Some(s.clone()),
                _ => None,
            })
            .collect())
    }

    pub async fn delete_stream(&mut self, stream: &str) -> Result<(), RedisError> {
        let _: i64 = self.run(redis::cmd("DEL").arg(stream).clone()).await?;
        Ok(())
    }
}
