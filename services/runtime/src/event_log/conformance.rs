//! The conformance suite of the [`EventLog`] port. Every adapter runs it through
//! [`event_log_conformance!`](crate::event_log_conformance), which turns each check below into
//! its own test:
//!
//! ```text
//! sagaflow_runtime::event_log_conformance!(async { Arc::new(open_a_fresh_log().await) as Arc<dyn EventLog> });
//! ```

use std::sync::Arc;

use chrono::{DateTime, Utc};
use sagaflow_domain::events::ComplaintClosed;
use sagaflow_domain::{Context, Envelope, Payload};

use super::{AppendError, AppendRequest, EventLog, ExpectedVersion, IdempotencyRecord};

/// A valid event of `stream` at `version`.
pub fn event(stream: &str, version: u64) -> Envelope {
    let at = DateTime::<Utc>::from_timestamp(1_767_225_600 + version as i64, 0).unwrap_or_default();
    let ctx = Context {
        correlation_id: format!("corr-{stream}"),
        causation_id: None,
        user_id: None,
        at,
        traceparent: None,
    };
    let payload = Payload::ComplaintClosed(ComplaintClosed {
        complaint_id: stream.to_owned(),
        reason: Some(format!("v{version}")),
        closed_at: at,
    });
    Envelope::new(
        format!("{stream}-e{version}"),
        stream,
        version,
        &payload,
        &ctx,
    )
}

fn request(stream: &str, expected: u64, count: u64) -> AppendRequest {
    AppendRequest {
        stream_id: stream.to_owned(),
        expected: ExpectedVersion(expected),
        events: (expected + 1..=expected + count)
            .map(|v| event(stream, v))
            .collect(),
        idempotency: None,
    }
}

pub async fn appends_and_reads_back_in_version_order(log: Arc<dyn EventLog>) {
    let done = log.append(request("s1", 0, 3)).await.expect("append");
    assert_eq!(done.version, 3);
    log.append(request("s1", 3, 1))
        .await
        .expect("second append");
    let events = log.read_stream("s1", 1).await.expect("read");
    let versions: Vec<u64> = events.iter().map(|e| e.metadata.version).collect();
    assert_eq!(versions, [1, 2, 3, 4]);
    assert_eq!(
        events[0],
        event("s1", 1),
        "events come back exactly as appended"
    );
    let tail = log.read_stream("s1", 3).await.expect("read from 3");
    assert_eq!(tail.len(), 2);
    assert!(
        log.read_stream("nothing", 1)
            .await
            .expect("read")
            .is_empty()
    );
}

pub async fn a_stale_expected_version_is_a_conflict_that_writes_nothing(log: Arc<dyn EventLog>) {
    log.append(request("s1", 0, 2)).await.expect("append");
    let mut stale = request("s1", 1, 1);
    stale.events[0] = event("s1", 2);
    stale.events[0].event_id = "other".into();
    match log.append(stale).await {
        Err(AppendError::Conflict {
            expected: 1,
            actual: 2,
            ..
        }) => {}
        other => panic!("expected a conflict at version 2, got {other:?}"),
    }
    assert_eq!(log.read_stream("s1", 1).await.expect("read").len(), 2);
    assert_eq!(
        log.pending_outbox(100).await.expect("outbox").len(),
        2,
        "no outbox row for a refused append"
    );
    let ahead = request("s2", 5, 1);
    assert!(matches!(
        log.append(ahead).await,
        Err(AppendError::Conflict { actual: 0, .. })
    ));
}

pub async fn racing_appends_at_one_version_let_exactly_one_through(log: Arc<dyn EventLog>) {
    log.append(request("s1", 0, 1)).await.expect("append");
    let mut tasks = Vec::new();
    for i in 0..8 {
        let log = log.clone();
        tasks.push(tokio::spawn(async move {
            let mut r = request("s1", 1, 1);
            r.events[0].event_id = format!("racer-{i}");
            log.append(r).await
        }));
    }
    let mut won = 0;
    for t in tasks {
        match t.await.expect("task") {
            Ok(_) => won += 1,
            Err(AppendError::Conflict { .. }) => {}
            Err(e) => panic!("unexpected error {e}"),
        }
    }
    assert_eq!(won, 1);
    let versions: Vec<u64> = log
        .read_stream("s1", 1)
        .await
        .expect("read")
        .iter()
        .map(|e| e.metadata.version)
        .collect();
    assert_eq!(versions, [1, 2]);
}

pub async fn a_batch_whose_versions_do_not_follow_is_refused(log: Arc<dyn EventLog>) {
    let mut r = request("s1", 0, 2);
    r.events[1].metadata.version = 3;
    assert!(matches!(log.append(r).await, Err(AppendError::Invalid(_))));
    let empty = AppendRequest {
        events: vec![],
        ..request("s1", 0, 1)
    };
    assert!(matches!(
        log.append(empty).await,
        Err(AppendError::Invalid(_))
    ));
    let mut foreign = request("s1", 0, 1);
    foreign.events[0].aggregate_id = "s2".into();
    assert!(matches!(
        log.append(foreign).await,
        Err(AppendError::Invalid(_))
    ));
    assert!(log.read_stream("s1", 1).await.expect("read").is_empty());
}

pub async fn a_reused_event_id_is_refused_and_writes_nothing(log: Arc<dyn EventLog>) {
    log.append(request("s1", 0, 1)).await.expect("append");
    let mut r = request("s2", 0, 2);
    r.events[1].event_id = "s1-e1".into();
    assert!(matches!(log.append(r).await, Err(AppendError::Invalid(_))));
    assert!(
        log.read_stream("s2", 1).await.expect("read").is_empty(),
        "the whole batch is rolled back"
    );
}

pub async fn every_event_gets_an_outbox_row_in_the_same_commit(log: Arc<dyn EventLog>) {
    log.append(request("s1", 0, 2)).await.expect("append");
    log.append(request("s2", 0, 1)).await.expect("append");
    let rows = log.pending_outbox(10).await.expect("outbox");
    let ids: Vec<&str> = rows.iter().map(|r| r.event_id.as_str()).collect();
    assert_eq!(ids, ["s1-e1", "s1-e2", "s2-e1"]);
    let row = &rows[0];
    assert_eq!(
        (
            row.exchange.as_str(),
            row.routing_key.as_str(),
            row.stream.as_str()
        ),
        ("complaints.events", "complaint.closed", "complaints-stream")
    );
    assert_eq!(
        Envelope::from_slice(row.payload.as_bytes()).expect("payload"),
        event("s1", 1)
    );
    assert_eq!(
        log.pending_outbox(2).await.expect("outbox").len(),
        2,
        "limit is honoured"
    );
}

pub async fn read_all_is_in_commit_order_from_any_position(log: Arc<dyn EventLog>) {
    log.append(request("a", 0, 2)).await.expect("append");
    log.append(request("b", 0, 1)).await.expect("append");
    log.append(request("a", 2, 1)).await.expect("append");
    let all = log.read_all(0, 100).await.expect("read all");
    let ids: Vec<&str> = all.iter().map(|p| p.envelope.event_id.as_str()).collect();
    assert_eq!(ids, ["a-e1", "a-e2", "b-e1", "a-e3"]);
    assert!(all.windows(2).all(|w| w[0].position < w[1].position));
    let after = log.read_all(all[1].position, 1).await.expect("read after");
    assert_eq!(after.len(), 1);
    assert_eq!(after[0].envelope.event_id, "b-e1");
    assert!(
        log.read_all(all[3].position, 10)
            .await
            .expect("read")
            .is_empty()
    );
}

pub async fn an_idempotency_key_is_stored_with_its_append_and_only_once(log: Arc<dyn EventLog>) {
    let record = IdempotencyRecord {
        key: "k1".into(),
        stream_id: "s1".into(),
        fingerprint: "f1".into(),
    };
    assert_eq!(log.find_idempotency_key("k1").await.expect("find"), None);
    let mut r = request("s1", 0, 1);
    r.idempotency = Some(record.clone());
    log.append(r).await.expect("append");
    assert_eq!(
        log.find_idempotency_key("k1").await.expect("find"),
        Some(record.clone())
    );

    let mut again = request("s2", 0, 1);
    again.idempotency = Some(IdempotencyRecord {
        stream_id: "s2".into(),
        ..record.clone()
    });
    match log.append(again).await {
        Err(AppendError::DuplicateIdempotencyKey(found)) => assert_eq!(found, record),
        other => panic!("expected a duplicate key, got {other:?}"),
    }
    assert!(
        log.read_stream("s2", 1).await.expect("read").is_empty(),
        "nothing written for the duplicate"
    );

    // A refused append does not keep its key.
    let mut stale = request("s1", 0, 1);
    stale.events[0].event_id = "x".into();
    stale.idempotency = Some(IdempotencyRecord {
        key: "k2".into(),
        stream_id: "s1".into(),
        fingerprint: "f".into(),
    });
    assert!(log.append(stale).await.is_err());
    assert_eq!(log.find_idempotency_key("k2").await.expect("find"), None);
}

pub async fn answers_ping(log: Arc<dyn EventLog>) {
    log.ping().await.expect("ping");
}

/// A batch commits together; a request refused inside it (a stale version, a reused event id,
/// a reused idempotency key) leaves nothing behind and the others in.
pub async fn a_batch_commits_together_and_a_refused_request_leaves_the_others_in(
    log: Arc<dyn EventLog>,
) {
    let keyed = |stream: &str| AppendRequest {
        idempotency: Some(IdempotencyRecord {
            key: "k-batch".into(),
            stream_id: stream.into(),
            fingerprint: "f".into(),
        }),
        ..request(stream, 0, 1)
    };
    let mut reused = request("b3", 0, 1);
    reused.events[0] = Envelope {
        event_id: "b1-e1".into(),
        ..reused.events[0].clone()
    };
    let results = log
        .append_batch(vec![
            request("b1", 0, 2),
            request("b1", 0, 1),
            reused,
            keyed("b4"),
            keyed("b5"),
            request("b1", 2, 1),
        ])
        .await;
    assert_eq!(results.len(), 6);
    assert_eq!(results[0].as_ref().map(|a| a.version).ok(), Some(2));
    assert!(
        matches!(results[1], Err(AppendError::Conflict { actual: 2, .. })),
        "the second append at version 0 sees the first: {:?}",
        results[1]
    );
    assert!(
        matches!(results[2], Err(AppendError::Invalid(_))),
        "{:?}",
        results[2]
    );
    assert!(results[3].is_ok(), "{:?}", results[3]);
    assert!(
        matches!(&results[4], Err(AppendError::DuplicateIdempotencyKey(r)) if r.stream_id == "b4"),
        "{:?}",
        results[4]
    );
    assert_eq!(results[5].as_ref().map(|a| a.version).ok(), Some(3));
    let b1: Vec<u64> = log
        .read_stream("b1", 1)
        .await
        .expect("read")
        .iter()
        .map(|e| e.metadata.version)
        .collect();
    assert_eq!(b1, [1, 2, 3]);
    for nothing in ["b3", "b5"] {
        assert!(log.read_stream(nothing, 1).await.expect("read").is_empty());
    }
    assert_eq!(log.read_stream("b4", 1).await.expect("read").len(), 1);
    let outbox = log.pending_outbox(100).await.expect("outbox");
    assert_eq!(outbox.len(), 4, "one row per event that went in");
    let positions: Vec<u64> = log
        .read_all(0, 100)
        .await
        .expect("read all")
        .iter()
        .map(|p| p.position)
        .collect();
    assert_eq!(positions.len(), 4);
    assert!(positions.windows(2).all(|w| w[0] < w[1]));
}

/// Declares one `#[tokio::test]` per conformance check; `$new` is an expression giving a
/// future of a fresh, empty `Arc<dyn EventLog>`.
#[macro_export]
macro_rules! event_log_conformance {
    ($new:expr) => {
        $crate::event_log_conformance!(@tests $new;
            appends_and_reads_back_in_version_order,
            a_stale_expected_version_is_a_conflict_that_writes_nothing,
            racing_appends_at_one_version_let_exactly_one_through,
            a_batch_whose_versions_do_not_follow_is_refused,
            a_reused_event_id_is_refused_and_writes_nothing,
            every_event_gets_an_outbox_row_in_the_same_commit,
            read_all_is_in_commit_order_from_any_position,
            an_idempotency_key_is_stored_with_its_append_and_only_once,
            a_batch_commits_together_and_a_refused_request_leaves_the_others_in,
            answers_ping,
        );
    };
    (@tests $new:expr; $($name:ident),+ $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                $crate::event_log::conformance::$name($new.await).await;
            }
        )+
    };
}
