//! The Redis Streams adapter passes the stream log's conformance suite. Needs Redis:
//! `scripts/backends redis` starts it (`TEST_REDIS_URL` overrides `redis://127.0.0.1:6379`).

use std::sync::Arc;

use sagaflow_runtime::streams::StreamLog;
use sagaflow_runtime::streams::redis::RedisStreams;

fn url() -> String {
    std::env::var("TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

/// Streams under a key prefix of their own.
async fn fresh() -> Arc<dyn StreamLog> {
    let prefix = format!("t{}:", uuid::Uuid::new_v4().simple());
    Arc::new(
        RedisStreams::open(&url(), &prefix)
            .await
            .unwrap_or_else(|e| {
                panic!(
                    "Redis is not answering at {}: {e}. Start it with scripts/backends redis",
                    url()
                )
            }),
    )
}

sagaflow_runtime::streams_conformance!(fresh());

#[tokio::test]
async fn a_password_never_shows_in_the_error() {
    let err = RedisStreams::open("redis://:hunter2@127.0.0.1:1/0", "x:")
        .await
        .expect_err("nothing listens there");
    assert!(!err.to_string().contains("hunter2"), "{err}");
}
