//! The conformance suite of the [`ComplaintViews`] port, run on every adapter through
//! [`views_conformance!`](crate::views_conformance).

use std::sync::Arc;

use chrono::{DateTime, Duration, Utc};
use sagaflow_domain::complaint::Command;
use sagaflow_domain::values::{Category, Description, Title, UserId};
use sagaflow_domain::{ComplaintProjection, Context, Envelope, Priority, Status, decide};

use super::{ComplaintViews, Cursor, ListFilter, StoredProjection};

fn t0() -> DateTime<Utc> {
    DateTime::from_timestamp(1_767_225_600, 0).unwrap_or_default()
}

/// A complaint's projection: created by `user` at `t0 + minutes`, then assigned to `agent`.
pub fn complaint(
    id: &str,
    user: &str,
    priority: Priority,
    category: &str,
    agent: Option<&str>,
    minutes: i64,
) -> ComplaintProjection {
    let mut p = ComplaintProjection::default();
    let at = t0() + Duration::minutes(minutes);
    let mut commands = vec![Command::Create {
        complaint_id: id.into(),
        user_id: UserId::parse("userId", user).unwrap_or_else(|e| panic!("{e}")),
        title: Title::parse("title", "t").unwrap_or_else(|e| panic!("{e}")),
        description: Description::parse("description", "d").unwrap_or_else(|e| panic!("{e}")),
        priority,
        category: Category::parse("category", category).unwrap_or_else(|e| panic!("{e}")),
    }];
    if let Some(a) = agent {
        commands.push(Command::Assign {
            assigned_to: UserId::parse("assignedTo", a).unwrap_or_else(|e| panic!("{e}")),
        });
    }
    for c in commands {
        for payload in decide(&p.state, &c, at).unwrap_or_else(|e| panic!("{e}")) {
            let ctx = Context {
                correlation_id: "corr".into(),
                causation_id: None,
                user_id: None,
                at,
                traceparent: None,
            };
            let env = Envelope::new(
                format!("{id}-{}", p.state.version + 1),
                id,
                p.state.version + 1,
                &payload,
                &ctx,
            );
            p.apply(&env).unwrap_or_else(|e| panic!("{e}"));
        }
    }
    p
}

async fn put(v: &Arc<dyn ComplaintViews>, id: &str, seq: u64, p: ComplaintProjection) {
    v.save(
        &[(id.to_owned(), StoredProjection { seq, projection: p })],
        seq,
    )
    .await
    .expect("save");
}

pub async fn a_saved_projection_comes_back_with_its_view_and_checkpoint(
    v: Arc<dyn ComplaintViews>,
) {
    assert_eq!(v.checkpoint().await.expect("checkpoint"), 0);
    let p = complaint("c1", "alice", Priority::High, "billing", Some("bob"), 0);
    put(&v, "c1", 7, p.clone()).await;
    assert_eq!(v.checkpoint().await.expect("checkpoint"), 7);
    assert_eq!(v.get("c1").await.expect("get"), p.view());
    let loaded = v.load(&["c1".into(), "nope".into()]).await.expect("load");
    assert_eq!(loaded.len(), 1);
    assert_eq!(
        loaded["c1"],
        StoredProjection {
            seq: 7,
            projection: p
        }
    );
    assert_eq!(v.get("nope").await.expect("get"), None);
}

pub async fn the_list_filters_pages_and_puts_the_newest_first(v: Arc<dyn ComplaintViews>) {
    let rows = [
        ("c1", "alice", Priority::Low, "billing", None),
        ("c2", "bob", Priority::High, "billing", Some("agent")),
        ("c3", "alice", Priority::High, "delivery", None),
        ("c4", "alice", Priority::High, "billing", Some("agent")),
    ];
    for (n, (id, user, priority, category, agent)) in rows.iter().enumerate() {
        put(
            &v,
            id,
            n as u64 + 1,
            complaint(id, user, *priority, category, *agent, n as i64),
        )
        .await;
    }
    let ids = |page: super::Page| page.items.into_iter().map(|c| c.id).collect::<Vec<_>>();
    let all = ListFilter::default();
    assert_eq!(
        ids(v.list(&all, 10, None).await.expect("list")),
        ["c4", "c3", "c2", "c1"]
    );
    let f = ListFilter {
        user_id: Some("alice".into()),
        priority: Some(Priority::High),
        ..ListFilter::default()
    };
    assert_eq!(ids(v.list(&f, 10, None).await.expect("list")), ["c4", "c3"]);
    let f = ListFilter {
        status: Some(Status::Assigned),
        category: Some("billing".into()),
        ..ListFilter::default()
    };
    assert_eq!(ids(v.list(&f, 10, None).await.expect("list")), ["c4", "c2"]);
    let f = ListFilter {
        assigned_to: Some("agent".into()),
        ..ListFilter::default()
    };
    assert_eq!(ids(v.list(&f, 10, None).await.expect("list")), ["c4", "c2"]);

    let first = v.list(&all, 3, None).await.expect("list");
    let next = first.next.expect("a next page");
    assert_eq!(ids(first), ["c4", "c3", "c2"]);
    let second = v.list(&all, 3, Some(next)).await.expect("list");
    assert_eq!(second.next, None);
    assert_eq!(ids(second), ["c1"]);
    assert!(
        v.list(&all, 3, Some(Cursor { before_seq: 1 }))
            .await
            .expect("list")
            .items
            .is_empty()
    );
}

pub async fn open_complaints_past_their_deadline_are_found(v: Arc<dyn ComplaintViews>) {
    put(
        &v,
        "old",
        1,
        complaint("old", "u", Priority::High, "c", None, 0),
    )
    .await;
    put(
        &v,
        "new",
        2,
        complaint("new", "u", Priority::High, "c", None, 60),
    )
    .await;
    put(
        &v,
        "taken",
        3,
        complaint("taken", "u", Priority::High, "c", Some("agent"), 0),
    )
    .await;
    put(
        &v,
        "low",
        4,
        complaint("low", "u", Priority::Low, "c", None, 0),
    )
    .await;
    let cutoff = (t0() + Duration::minutes(30)).timestamp_millis();
    let due = v
        .due_for_escalation(Priority::High, cutoff, 10)
        .await
        .expect("due");
    assert_eq!(due, vec![("old".to_owned(), t0().timestamp_millis())]);
}

pub async fn answers_ping(v: Arc<dyn ComplaintViews>) {
    v.ping().await.expect("ping");
}

#[macro_export]
macro_rules! views_conformance {
    ($new:expr) => {
        $crate::views_conformance!(@tests $new;
            a_saved_projection_comes_back_with_its_view_and_checkpoint,
            the_list_filters_pages_and_puts_the_newest_first,
            open_complaints_past_their_deadline_are_found,
            answers_ping,
        );
    };
    (@tests $new:expr; $($name:ident),+ $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                $crate::read_model::conformance::$name($new.await).await;
            }
        )+
    };
}
