//! The conformance suite of the [`Archive`] port, run on every adapter through
//! [`archive_conformance!`](crate::archive_conformance).

use std::sync::Arc;

use sagaflow_domain::events::ComplaintClosed;
use sagaflow_domain::{Context, Envelope, Payload};
use sagaflow_runtime::event_log::StoreError;

use super::Archive;

pub fn event(stream: &str, version: u64, id: &str) -> Envelope {
    let at =
        chrono::DateTime::from_timestamp(1_767_225_600 + version as i64, 0).unwrap_or_default();
    let ctx = Context {
        correlation_id: format!("corr-{stream}"),
        causation_id: None,
        user_id: None,
        at,
        traceparent: None,
    };
    let payload = Payload::ComplaintClosed(ComplaintClosed {
        complaint_id: stream.into(),
        reason: Some(format!("v{version}")),
        closed_at: at,
    });
    Envelope::new(id.to_owned(), stream, version, &payload, &ctx)
}

pub async fn an_event_is_archived_once_by_its_id(a: Arc<dyn Archive>) {
    assert!(a.append(&event("s1", 1, "e1")).await.expect("append"));
    assert!(
        !a.append(&event("s1", 1, "e1")).await.expect("append again"),
        "a redelivery is not new"
    );
    assert_eq!(a.count().await.expect("count"), 1);
    assert_eq!(
        a.stream("s1", 1).await.expect("stream"),
        vec![event("s1", 1, "e1")],
        "kept exactly"
    );
}

pub async fn a_stream_reads_by_version_from_any_version(a: Arc<dyn Archive>) {
    for (v, id) in [(2, "e2"), (1, "e1"), (3, "e3")] {
        a.append(&event("s1", v, id)).await.expect("append");
    }
    a.append(&event("s2", 1, "x1")).await.expect("append");
    let versions = |es: Vec<Envelope>| es.iter().map(|e| e.metadata.version).collect::<Vec<_>>();
    assert_eq!(
        versions(a.stream("s1", 1).await.expect("stream")),
        [1, 2, 3],
        "by version, not arrival"
    );
    assert_eq!(versions(a.stream("s1", 2).await.expect("stream")), [2, 3]);
    assert!(a.stream("none", 1).await.expect("stream").is_empty());
}

pub async fn all_is_in_archive_order_after_any_position(a: Arc<dyn Archive>) {
    let before = chrono::Utc::now() - chrono::Duration::milliseconds(1);
    for (s, v, id) in [("a", 1, "a1"), ("b", 1, "b1"), ("a", 2, "a2")] {
        a.append(&event(s, v, id)).await.expect("append");
    }
    let after_appends = chrono::Utc::now() + chrono::Duration::milliseconds(1);
    let all = a.all(0, 10).await.expect("all");
    assert!(
        all.iter()
            .all(|p| p.archived_at >= before && p.archived_at <= after_appends),
        "each event carries when it was archived: {:?}",
        all.iter().map(|p| p.archived_at).collect::<Vec<_>>()
    );
    assert_eq!(
        all.iter()
            .map(|p| p.envelope.event_id.as_str())
            .collect::<Vec<_>>(),
        ["a1", "b1", "a2"]
    );
    assert!(all.windows(2).all(|w| w[0].position < w[1].position));
    let after = a.all(all[0].position, 1).await.expect("all");
    assert_eq!(
        after
            .iter()
            .map(|p| p.envelope.event_id.as_str())
            .collect::<Vec<_>>(),
        ["b1"]
    );
    assert!(a.all(all[2].position, 10).await.expect("all").is_empty());
}

pub async fn a_version_is_known_once_archived(a: Arc<dyn Archive>) {
    assert!(!a.has_version("s1", 1).await.expect("has_version"));
    for (v, id) in [(1, "e1"), (2, "e2")] {
        a.append(&event("s1", v, id)).await.expect("append");
    }
    assert!(a.has_version("s1", 1).await.expect("has_version"));
    assert!(a.has_version("s1", 2).await.expect("has_version"));
    assert!(!a.has_version("s1", 3).await.expect("has_version"));
    assert!(!a.has_version("s2", 1).await.expect("has_version"));
}

pub async fn a_second_event_at_a_taken_version_is_refused(a: Arc<dyn Archive>) {
    a.append(&event("s1", 1, "e1")).await.expect("append");
    let err = a
        .append(&event("s1", 1, "other"))
        .await
        .expect_err("the version is taken");
    assert!(matches!(err, StoreError::Corrupt(_)), "{err}");
    assert_eq!(a.count().await.expect("count"), 1);
}

pub async fn a_batch_archives_each_new_event_once_and_refuses_a_taken_version(a: Arc<dyn Archive>) {
    a.append(&event("s0", 1, "e0")).await.expect("append");
    let results = a
        .append_all(&[
            event("s1", 1, "e1"),
            event("s2", 1, "e2"),
            event("s1", 1, "e1"),
            event("s0", 1, "taken"),
            event("s0", 1, "e0"),
            event("s1", 2, "e3"),
        ])
        .await;
    let shape: Vec<Result<bool, bool>> = results
        .into_iter()
        .map(|r| r.map_err(|e| matches!(e, StoreError::Corrupt(_))))
        .collect();
    assert_eq!(
        shape,
        [
            Ok(true),
            Ok(true),
            Ok(false),
            Err(true),
            Ok(false),
            Ok(true)
        ],
        "new, new, a copy in the batch, a taken version, archived before, new"
    );
    assert_eq!(a.count().await.expect("count"), 4);
    let all = a.all(0, 100).await.expect("all");
    let ids: Vec<&str> = all.iter().map(|p| p.envelope.event_id.as_str()).collect();
    assert_eq!(ids, ["e0", "e1", "e2", "e3"], "in the batch's order");
    assert!(all.windows(2).all(|w| w[0].position < w[1].position));
}

pub async fn answers_ping(a: Arc<dyn Archive>) {
    a.ping().await.expect("ping");
}

#[macro_export]
macro_rules! archive_conformance {
    ($new:expr) => {
        $crate::archive_conformance!(@tests $new;
            an_event_is_archived_once_by_its_id,
            a_stream_reads_by_version_from_any_version,
            all_is_in_archive_order_after_any_position,
            a_version_is_known_once_archived,
            a_second_event_at_a_taken_version_is_refused,
            a_batch_archives_each_new_event_once_and_refuses_a_taken_version,
            answers_ping,
        );
    };
    (@tests $new:expr; $($name:ident),+ $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                $crate::archive::conformance::$name($new.await).await;
            }
        )+
    };
}
