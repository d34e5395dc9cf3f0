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

/// The same suite through group commit.
mod group_commit {
    use super::*;
    use sagaflow_runtime::event_log::group::GroupCommit;

    async fn grouped() -> Arc<dyn EventLog> {
        Arc::new(GroupCommit::new(fresh().await))
    }

    sagaflow_runtime::event_log_conformance!(grouped());

    /// Appends made at once share commits, and each gets its own answer.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_appends_are_each_answered_once_committed() {
        let log = grouped().await;
        let mut tasks = tokio::task::JoinSet::new();
        for n in 0..64 {
            let log = log.clone();
            tasks.spawn(async move {
                let stream = format!("g{n}");
                log.append(sagaflow_runtime::event_log::AppendRequest {
                    stream_id: stream.clone(),
                    expected: sagaflow_runtime::event_log::ExpectedVersion(0),
                    events: vec![sagaflow_runtime::event_log::conformance::event(&stream, 1)],
                    idempotency: None,
                })
                .await
            });
        }
        let mut positions = Vec::new();
        while let Some(done) = tasks.join_next().await {
            positions.push(done.expect("task").expect("append").last_position);
        }
        positions.sort_unstable();
        positions.dedup();
        assert_eq!(positions.len(), 64, "one position each");
        assert_eq!(log.read_all(0, 100).await.expect("read").len(), 64);
        assert_eq!(log.pending_outbox(100).await.expect("outbox").len(), 64);
    }
}

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

/// With several relays, an aggregate's later row is not published while another relay holds an
/// earlier one (it may have died holding it): events leave in version order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_relay_takes_an_aggregate_s_later_row_while_another_holds_an_earlier_one() {
    use sagaflow_runtime::event_log::conformance::event;
    let log = log().await;
    for (stream, versions) in [("x", 1..=3u64), ("y", 1..=1)] {
        for v in versions {
            log.append(AppendRequest {
                stream_id: stream.into(),
                expected: ExpectedVersion(v - 1),
                events: vec![event(stream, v)],
                idempotency: None,
            })
            .await
            .expect("append");
        }
    }
    let outbox = log.outbox();
    let a = outbox.pending(1).await.expect("claim");
    assert_eq!(a.len(), 1);
    assert_eq!(a[0].aggregate_id, "x", "the oldest row: x's first");
    let b = outbox.pending(10).await.expect("claim");
    assert_eq!(
        b.iter()
            .map(|r| r.aggregate_id.as_str())
            .collect::<Vec<_>>(),
        ["y"],
        "x's later rows wait while x's first is held"
    );
    outbox.mark_published(&[a[0].id]).await.expect("mark");
    let c = outbox.pending(10).await.expect("claim");
    assert_eq!(
        c.iter()
            .map(|r| r.aggregate_id.as_str())
            .collect::<Vec<_>>(),
        ["x", "x"],
        "once it is published, the rest of x goes, in order"
    );
}

#[tokio::test]
async fn a_password_never_shows_in_the_error() {
    let err = PostgresEventLog::open("postgres://app:hunter2@127.0.0.1:1/test", "t_x")
        .await
        .expect_err("nothing listens there");
    assert!(!err.to_string().contains("hunter2"), "{err}");
}
