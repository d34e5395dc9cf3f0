//! The embedded event log passes the port's conformance suite, and keeps what it acknowledged
//! across a reopen.

use std::sync::Arc;

use sagaflow_runtime::event_log::conformance::event;
use sagaflow_runtime::event_log::sqlite::SqliteEventLog;
use sagaflow_runtime::event_log::{AppendRequest, EventLog, ExpectedVersion};

async fn fresh() -> Arc<dyn EventLog> {
    let dir = tempfile::tempdir().expect("temp dir").keep();
    Arc::new(
        SqliteEventLog::open(&dir.join("events.db"))
            .await
            .expect("open"),
    )
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

#[tokio::test]
async fn what_was_appended_is_there_after_reopening() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("events.db");
    let log = SqliteEventLog::open(&path).await.expect("open");
    log.append(AppendRequest {
        stream_id: "s1".into(),
        expected: ExpectedVersion(0),
        events: vec![event("s1", 1), event("s1", 2)],
        idempotency: None,
    })
    .await
    .expect("append");
    log.close().await;

    let again = SqliteEventLog::open(&path).await.expect("reopen");
    assert_eq!(
        again.read_stream("s1", 1).await.expect("read"),
        vec![event("s1", 1), event("s1", 2)]
    );
    assert_eq!(again.pending_outbox(10).await.expect("outbox").len(), 2);
}

#[tokio::test]
async fn a_path_that_cannot_be_opened_is_an_unavailable_store_not_a_panic() {
    let err = SqliteEventLog::open(std::path::Path::new("/proc/no/such/dir/events.db"))
        .await
        .expect_err("cannot open");
    assert!(err.to_string().contains("/proc/no/such/dir"), "{err}");
}
