//! The conformance suite of the [`NotificationStore`] port, run on every adapter through
//! [`notification_conformance!`](crate::notification_conformance).

use std::sync::Arc;

use chrono::{DateTime, Utc};
use sagaflow_domain::complaint::Command;
use sagaflow_domain::values::{Category, Description, Reason, Title, UserId};
use sagaflow_domain::{Envelope, Priority};

use super::{Addressing, NotificationStore, Planned};

fn p<T>(r: Result<T, sagaflow_domain::FieldError>) -> T {
    r.unwrap_or_else(|e| panic!("{e}"))
}

/// A complaint's events: created by alice, assigned to bob, then the assignment compensated.
pub fn history(id: &str) -> Vec<Envelope> {
    let at = DateTime::<Utc>::from_timestamp(1_767_225_600, 0).unwrap_or_default();
    let commands = [
        Command::Create {
            complaint_id: id.into(),
            user_id: p(UserId::parse("u", "alice")),
            title: p(Title::parse("t", "Kettle")),
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

fn addressing() -> Addressing {
    Addressing {
        email_domain: "example.com".into(),
        admin_email: "admin@example.com".into(),
        from: "s@example.com".into(),
    }
}

async fn statuses(store: &Arc<dyn NotificationStore>, id: &str) -> Vec<(String, String, String)> {
    store
        .history(Some(id), 100)
        .await
        .expect("history")
        .iter()
        .map(|n| {
            (
                n["template"].as_str().unwrap_or("").to_owned(),
                n["recipient"].as_str().unwrap_or("").to_owned(),
                n["status"].as_str().unwrap_or("").to_owned(),
            )
        })
        .collect()
}

/// Without a complaint, the history is the latest mails of all complaints, newest first.
pub async fn the_whole_history_lists_the_latest_mails(store: Arc<dyn NotificationStore>) {
    for id in ["c1", "c2"] {
        store
            .plan(&history(id)[0], &addressing())
            .await
            .expect("plan");
    }
    let all = store.history(None, 10).await.expect("the whole history");
    assert_eq!(all.len(), 4, "{all:?}");
    assert_eq!(all[0]["complaintId"], "c2", "newest first");
    let latest = store.history(None, 1).await.expect("limited");
    assert_eq!(latest.len(), 1);
    assert_eq!(latest[0], all[0]);
}

pub async fn an_event_plans_its_mails_once(store: Arc<dyn NotificationStore>) {
    let h = history("c1");
    assert_eq!(
        store.plan(&h[1], &addressing()).await.expect("plan"),
        Planned::TooEarly { expected: 1 }
    );
    assert_eq!(
        store.plan(&h[0], &addressing()).await.expect("plan"),
        Planned::New {
            mails: 2,
            events: 0
        }
    );
    assert_eq!(
        store.plan(&h[0], &addressing()).await.expect("plan"),
        Planned::Duplicate
    );
    let mut got = statuses(&store, "c1").await;
    got.sort();
    assert_eq!(
        got,
        [
            (
                "complaint-created-admin".into(),
                "admin@example.com".into(),
                "PENDING".into()
            ),
            (
                "complaint-created-user".into(),
                "alice@example.com".into(),
                "PENDING".into()
            )
        ]
    );
}

/// `plan_all` answers each event of a batch as `plan` would, one after the other (an event
/// sees the ones before it), a refused event leaves nothing behind, and `sent_all` records
/// each mail once.
pub async fn a_batch_is_planned_and_sent_as_its_events_one_after_the_other(
    store: Arc<dyn NotificationStore>,
) {
    // The same events one by one, on a complaint of their own, say what to expect.
    let single = history("one");
    store.plan(&single[0], &addressing()).await.expect("plan");
    let Planned::New {
        mails: assigned, ..
    } = store.plan(&single[1], &addressing()).await.expect("plan")
    else {
        panic!("the assignment is new");
    };
    let (h, other) = (history("b1"), history("b2"));
    let answers: Vec<Planned> = store
        .plan_all(
            &[
                h[1].clone(),
                h[0].clone(),
                h[0].clone(),
                h[1].clone(),
                other[0].clone(),
            ],
            &addressing(),
        )
        .await
        .into_iter()
        .map(|r| r.expect("plan"))
        .collect();
    let created = Planned::New {
        mails: 2,
        events: 0,
    };
    assert_eq!(
        answers,
        [
            Planned::TooEarly { expected: 1 },
            created.clone(),
            Planned::Duplicate,
            Planned::New {
                mails: assigned,
                events: 0
            },
            created.clone(),
        ]
    );
    assert_eq!(statuses(&store, "b1").await.len(), 2 + assigned);

    // An event of a complaint never created is refused, and its inbox record goes with it;
    // the rest of its batch is planned.
    let mut ghost = history("ghost")[1].clone();
    ghost.metadata.version = 1;
    let third = history("b3");
    let answers: Vec<Planned> = store
        .plan_all(&[ghost.clone(), third[0].clone()], &addressing())
        .await
        .into_iter()
        .map(|r| r.expect("plan"))
        .collect();
    assert_eq!(
        answers,
        [Planned::UnknownComplaint("ghost".into()), created]
    );
    assert_eq!(
        store.plan(&ghost, &addressing()).await.expect("plan"),
        Planned::UnknownComplaint("ghost".into()),
        "not recorded as done"
    );

    let due = store.due(100).await.expect("due");
    store.sent_all(&due).await.expect("sent");
    // Recorded once: a second report of the same mails (a sender that lost its claim) changes
    // nothing.
    store.sent_all(&due).await.expect("sent again");
    for id in ["one", "b1", "b2", "b3"] {
        let mails = store.history(Some(id), 100).await.expect("history");
        assert!(!mails.is_empty(), "{id} has mails");
        for m in mails {
            assert_eq!(
                (m["status"].as_str(), m["attempts"].as_i64()),
                (Some("SENT"), Some(1)),
                "{m}"
            );
        }
    }
}

pub async fn sent_and_failed_mails_are_recorded(store: Arc<dyn NotificationStore>) {
    store
        .plan(&history("c1")[0], &addressing())
        .await
        .expect("plan");
    let due = store.due(10).await.expect("due");
    assert_eq!(due.len(), 2);
    store.sent(&due[0]).await.expect("sent");
    store
        .retry_at(
            &due[1],
            "451 later",
            Utc::now() + chrono::Duration::hours(1),
        )
        .await
        .expect("retry");
    assert!(
        store.due(10).await.expect("due").is_empty(),
        "a retried mail waits for its time"
    );
    store
        .failed(&due[1], "550 no such user")
        .await
        .expect("failed");
    let history = store.history(Some("c1"), 10).await.expect("history");
    let by_id = |id: &str| {
        history
            .iter()
            .find(|n| n["notificationId"] == id)
            .cloned()
            .expect("entry")
    };
    assert_eq!(by_id(&due[0].notification_id)["status"], "SENT");
    assert!(by_id(&due[0].notification_id)["sentAt"].is_string());
    let failed = by_id(&due[1].notification_id);
    assert_eq!(
        (failed["status"].as_str(), failed["attempts"].as_i64()),
        (Some("FAILED"), Some(2))
    );
}

pub async fn a_compensation_cancels_what_is_pending_and_corrects_who_was_told(
    store: Arc<dyn NotificationStore>,
) {
    let h = history("c1");
    store.plan(&h[0], &addressing()).await.expect("plan");
    store.plan(&h[1], &addressing()).await.expect("plan");
    // The user's assignment mail went out; the assignee's was refused for now (451), so it
    // waits. (A mail being sent when the compensation arrives counts as told.)
    for d in store.due(10).await.expect("due") {
        if d.recipient == "alice@example.com" {
            store.sent(&d).await.expect("sent");
        } else {
            store
                .retry_at(&d, "451 later", Utc::now() + chrono::Duration::hours(1))
                .await
                .expect("retry");
        }
    }
    assert_eq!(
        store.plan(&h[2], &addressing()).await.expect("plan"),
        Planned::New {
            mails: 0,
            events: 1
        }
    );
    let got = statuses(&store, "c1").await;
    assert!(
        got.contains(&(
            "complaint-assigned-assignee".into(),
            "bob@example.com".into(),
            "CANCELLED".into()
        )),
        "{got:?}"
    );
    assert!(
        got.contains(&(
            "compensation-correction".into(),
            "alice@example.com".into(),
            "PENDING".into()
        )),
        "{got:?}"
    );
    assert!(
        !got.iter()
            .any(|(t, to, _)| t == "compensation-correction" && to == "bob@example.com"),
        "bob was never told"
    );
}

pub async fn a_due_mail_is_handed_to_one_sender_at_a_time(store: Arc<dyn NotificationStore>) {
    store
        .plan(&history("c1")[0], &addressing())
        .await
        .expect("plan");
    let (a, b) = tokio::join!(store.due(10), store.due(10));
    assert_eq!(
        a.expect("due").len() + b.expect("due").len(),
        2,
        "each mail claimed once"
    );
    assert!(
        store.due(10).await.expect("due").is_empty(),
        "claimed mails are not due again at once"
    );
}

pub async fn an_event_of_an_unknown_complaint_is_refused(store: Arc<dyn NotificationStore>) {
    let mut e = history("ghost")[1].clone();
    e.metadata.version = 1;
    assert_eq!(
        store.plan(&e, &addressing()).await.expect("plan"),
        Planned::UnknownComplaint("ghost".into())
    );
}

#[macro_export]
macro_rules! notification_conformance {
    ($new:expr) => {
        $crate::notification_conformance!(@tests $new;
            the_whole_history_lists_the_latest_mails,
            an_event_plans_its_mails_once,
            a_batch_is_planned_and_sent_as_its_events_one_after_the_other,
            sent_and_failed_mails_are_recorded,
            a_compensation_cancels_what_is_pending_and_corrects_who_was_told,
            a_due_mail_is_handed_to_one_sender_at_a_time,
            an_event_of_an_unknown_complaint_is_refused,
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
