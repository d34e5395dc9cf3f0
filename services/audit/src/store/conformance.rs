//! The conformance suite of the [`AuditLog`] port, run on every adapter through
//! [`audit_conformance!`](crate::audit_conformance).

use std::sync::Arc;

use chrono::{DateTime, Utc};
use sagaflow_domain::complaint::Command;
use sagaflow_domain::values::{Category, Description, Reason, Title, UserId};
use sagaflow_domain::{Envelope, Priority};

use super::{AuditLog, Recorded, Search};

fn p<T>(r: Result<T, sagaflow_domain::FieldError>) -> T {
    r.unwrap_or_else(|e| panic!("{e}"))
}

/// A complaint's events: created, assigned, then a compensation of the assignment.
pub fn history(id: &str) -> Vec<Envelope> {
    let at = DateTime::<Utc>::from_timestamp(1_767_225_600, 0).unwrap_or_default();
    let commands = [
        Command::Create {
            complaint_id: id.into(),
            user_id: p(UserId::parse("u", "alice")),
            title: p(Title::parse("t", "t")),
            description: p(Description::parse("d", "d")),
            priority: Priority::Low,
            category: p(Category::parse("c", "c")),
        },
        Command::Assign {
            assigned_to: p(UserId::parse("a", "bob")),
        },
        Command::Compensate {
            reason: p(Reason::parse("r", "wrong agent")),
            failed_event_id: None,
        },
    ];
    sagaflow_domain::complaint::script(id, &commands, at, &format!("corr-{id}"))
        .unwrap_or_else(|e| panic!("{e}"))
}

pub async fn each_event_is_recorded_once_and_in_order(log: Arc<dyn AuditLog>) {
    let h = history("c1");
    assert!(matches!(
        log.record(&h[1]).await.expect("record"),
        Recorded::TooEarly { expected: 1 }
    ));
    assert!(matches!(
        log.record(&h[0]).await.expect("record"),
        Recorded::New { compensation: None }
    ));
    assert_eq!(
        log.record(&h[0]).await.expect("record"),
        Recorded::Duplicate
    );
    log.record(&h[1]).await.expect("record");
    let trail = log.trail("c1").await.expect("trail");
    let types: Vec<&str> = trail
        .iter()
        .map(|e| e["eventType"].as_str().expect("type"))
        .collect();
    assert_eq!(types, ["COMPLAINT_CREATED", "COMPLAINT_ASSIGNED"]);
    assert_eq!(trail[0]["correlationId"], "corr-c1");
    assert_eq!(trail[0]["compensated"], false);
}

/// `record_all` answers each event of a batch as `record` would, one after the other: an
/// event sees the ones before it in the batch.
pub async fn a_batch_is_answered_as_its_events_one_after_the_other(log: Arc<dyn AuditLog>) {
    let (h, other) = (history("b1"), history("b2"));
    let answers: Vec<Recorded> = log
        .record_all(&[
            h[1].clone(),
            h[0].clone(),
            h[0].clone(),
            h[1].clone(),
            other[0].clone(),
        ])
        .await
        .into_iter()
        .map(|r| r.expect("record"))
        .collect();
    let new = Recorded::New { compensation: None };
    assert_eq!(
        answers,
        [
            Recorded::TooEarly { expected: 1 },
            new.clone(),
            Recorded::Duplicate,
            new.clone(),
            new,
        ]
    );
    let again: Vec<Recorded> = log
        .record_all(&[h[0].clone(), h[1].clone()])
        .await
        .into_iter()
        .map(|r| r.expect("record"))
        .collect();
    assert_eq!(
        again,
        [Recorded::Duplicate, Recorded::Duplicate],
        "a redelivered batch"
    );
    let types = |trail: Vec<serde_json::Value>| -> Vec<String> {
        trail
            .iter()
            .map(|e| e["eventType"].as_str().expect("type").to_owned())
            .collect()
    };
    assert_eq!(
        types(log.trail("b1").await.expect("trail")),
        ["COMPLAINT_CREATED", "COMPLAINT_ASSIGNED"]
    );
    assert_eq!(
        types(log.trail("b2").await.expect("trail")),
        ["COMPLAINT_CREATED"]
    );
    let trail = log.trail("b1").await.expect("trail");
    assert_eq!(trail[0]["correlationId"], "corr-b1");
    assert_eq!(trail[1]["version"], 2);
}

pub async fn a_compensation_marks_the_undone_step_and_records_its_event(log: Arc<dyn AuditLog>) {
    let h = history("c1");
    for e in &h[..2] {
        log.record(e).await.expect("record");
    }
    let Recorded::New {
        compensation: Some(out),
    } = log.record(&h[2]).await.expect("record")
    else {
        panic!("the compensation records AUDIT_COMPENSATION");
    };
    assert_eq!(
        (
            out.event_type.as_str(),
            out.aggregate_id.as_str(),
            out.metadata.version
        ),
        ("AUDIT_COMPENSATION", "c1:audit", 1)
    );
    assert_eq!(
        out.event_data["compensatedEventIds"],
        serde_json::json!(["c1-2"])
    );
    let marked = log
        .search(&Search {
            compensated: Some(true),
            limit: 10,
            ..Search::default()
        })
        .await
        .expect("search")
        .0;
    let ids: Vec<&str> = marked
        .iter()
        .map(|e| e["eventId"].as_str().expect("id"))
        .collect();
    assert_eq!(ids, ["c1-2"]);
}

pub async fn search_filters_and_pages(log: Arc<dyn AuditLog>) {
    for id in ["a", "b"] {
        for e in &history(id)[..2] {
            log.record(e).await.expect("record");
        }
    }
    let by_type = Search {
        event_type: Some("COMPLAINT_ASSIGNED".into()),
        limit: 10,
        ..Search::default()
    };
    assert_eq!(log.search(&by_type).await.expect("search").0.len(), 2);
    let by_corr = Search {
        correlation_id: Some("corr-b".into()),
        limit: 10,
        ..Search::default()
    };
    assert_eq!(log.search(&by_corr).await.expect("search").0.len(), 2);
    let (page, next) = log
        .search(&Search {
            limit: 3,
            ..Search::default()
        })
        .await
        .expect("search");
    assert_eq!(page.len(), 3);
    let rest = log
        .search(&Search {
            limit: 3,
            after: next.expect("a next page"),
            ..Search::default()
        })
        .await
        .expect("search");
    assert_eq!((rest.0.len(), rest.1), (1, None));
}

#[macro_export]
macro_rules! audit_conformance {
    ($new:expr) => {
        $crate::audit_conformance!(@tests $new;
            each_event_is_recorded_once_and_in_order,
            a_batch_is_answered_as_its_events_one_after_the_other,
            a_compensation_marks_the_undone_step_and_records_its_event,
            search_filters_and_pages,
        );
    };
    (@tests $new:expr; $($name:ident),+ $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                $crate::store::conformance::$name($new.await).await;
            }
        )+
    };
}
