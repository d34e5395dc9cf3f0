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
