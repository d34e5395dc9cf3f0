//! The PostgreSQL event log passes the port's conformance suite, and its outbox claims keep
//! two relays off the same rows. Needs PostgreSQL: `scripts/backends postgres` starts it
//! (`TEST_DATABASE_URL` overrides `postgres://postgres@127.0.0.1:5432/test`).

use std::sync::Arc;

use sagaflow_runtime::event_log::postgres::PostgresEventLog;
use sagaflow_runtime::event_log::{AppendRequest, EventLog, ExpectedVersion};
use sagaflow_runtime::outbox::Outbox;

fn url() -> String {
    std::env::var("TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into())
}

/// A log in a schema of its own.
async fn log() -> PostgresEventLog {
    let schema = format!("t_{}", uuid::Uuid::new_v4().simple());
    PostgresEventLog::open(&url(), &schema)
        .await
        .unwrap_or_else(|e| {
            panic!(
                "PostgreSQL is not answering at {}: {e}. Start it with scripts/backends postgres",
                url()
            )
        })
}

async fn fresh() -> Arc<dyn EventLog> {
    Arc::new(log().await)
}

sagaflow_runtime::event_log_conformance!(fresh());

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_relays_never_claim_the_same_outbox_row() {
    use sagaflow_runtime::event_log::conformance::event;
    let log = log().await;
    for s in 0..10 {
        let stream = format!("s{s}");
        log.append(AppendRequest {
            stream_id: stream.clone(),
            expected: ExpectedVersion(0),
            events: vec![event(&stream, 1)],
            idempotency: None,
        })
        .await
        .expect("append");
    }
    let outbox = log.outbox();
    let (a, b) = tokio::join!(outbox.pending(6), outbox.pending(6));
    let (a, b) = (a.expect("claim"), b.expect("claim"));
    assert_eq!(a.len() + b.len(), 10, "every row claimed once");
    assert!(
        a.iter().all(|r| !b.iter().any(|o| o.id == r.id)),
        "no row claimed twice"
    );
    assert!(
        outbox.pending(10).await.expect("claim").is_empty(),
        "claimed rows are not handed out again"
    );
    outbox
        .mark_published(&a.iter().map(|r| r.id).collect::<Vec<_>>())
        .await
        .expect("mark");
    assert_eq!(outbox.backlog().await.expect("backlog"), b.len() as u64);

    // Rows given back after a failed publish are handed out again at once, not after the claim.
    let ids: Vec<u64> = b.iter().map(|r| r.id).collect();
    outbox.release(&ids).await.expect("release");
    let again = outbox.pending(10).await.expect("claim");
    assert_eq!(again.iter().map(|r| r.id).collect::<Vec<_>>(), ids);
}

#[tokio::test]
async fn a_password_never_shows_in_the_error() {
    let err = PostgresEventLog::open("postgres://app:hunter2@127.0.0.1:1/test", "t_x")
        .await
        .expect_err("nothing listens there");
    assert!(!err.to_string().contains("hunter2"), "{err}");
}
