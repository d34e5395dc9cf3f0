//! The PostgreSQL event log passes the port's conformance suite, and its outbox's lease keeps
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
    log_and_schema().await.0
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

/// A log in a schema of its own, and that schema's name.
async fn log_and_schema() -> (PostgresEventLog, String) {
    let schema = format!("t_{}", uuid::Uuid::new_v4().simple());
    let log = PostgresEventLog::open(&url(), &schema)
        .await
        .unwrap_or_else(|e| {
            panic!(
                "PostgreSQL is not answering at {}: {e}. Start it with scripts/backends postgres",
                url()
            )
        });
    (log, schema)
}

async fn append_one(log: &PostgresEventLog, stream: &str, version: u64) {
    use sagaflow_runtime::event_log::conformance::event;
    log.append(AppendRequest {
        stream_id: stream.into(),
        expected: ExpectedVersion(version - 1),
        events: vec![event(stream, version)],
        idempotency: None,
    })
    .await
    .expect("append");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_relays_never_claim_the_same_outbox_row() {
    let (log, schema) = log_and_schema().await;
    for s in 0..10 {
        append_one(&log, &format!("s{s}"), 1).await;
    }
    let (one, two) = (log.outbox(), log.outbox());
    let (a, b) = tokio::join!(one.pending(6), two.pending(6));
    let (a, b) = (a.expect("claim"), b.expect("claim"));
    assert!(
        a.is_empty() != b.is_empty(),
        "one relay holds the lease and the other gets nothing: {} and {} rows",
        a.len(),
        b.len()
    );
    let (holder, other, first) = if a.is_empty() {
        (&two, &one, b)
    } else {
        (&one, &two, a)
    };
    assert_eq!(first.len(), 6);
    let rest = holder.pending(10).await.expect("claim");
    assert_eq!(rest.len(), 4, "rows in flight are not handed out again");
    assert!(
        first.iter().all(|r| !rest.iter().any(|o| o.id == r.id)),
        "no row handed out twice"
    );
    assert!(
        other.pending(10).await.expect("claim").is_empty(),
        "the other relay waits while the lease is renewed"
    );
    holder
        .mark_published(&first.iter().map(|r| r.id).collect::<Vec<_>>())
        .await
        .expect("mark");
    assert_eq!(holder.backlog().await.expect("backlog"), 4);

    // Rows given back after a failed publish are handed out again at once.
    let ids: Vec<u64> = rest.iter().map(|r| r.id).collect();
    holder.release(&ids).await.expect("release");
    let again = holder.pending(10).await.expect("claim");
    assert_eq!(again.iter().map(|r| r.id).collect::<Vec<_>>(), ids);

    // A holder that stops renewing (it died) loses the lease once it expires: the other relay
    // then takes the unpublished rows, the dead one's in-flight rows included.
    let pool = sqlx::PgPool::connect(&url()).await.expect("connect");
    // The schema's name is this test's own (`t_` and a UUID's hex digits).
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "UPDATE \"{schema}\".outbox_relay SET expires_at = now() - interval '1 second'"
    )))
    .execute(&pool)
    .await
    .expect("expire the lease");
    let taken = other.pending(10).await.expect("claim");
    assert_eq!(taken.iter().map(|r| r.id).collect::<Vec<_>>(), ids);
    // The old holder gives its rows back (its publish failed, say): it still reads nothing,
    // although it renewed the lease a moment ago by its own clock.
    holder.release(&ids).await.expect("release");
    assert!(
        holder.pending(10).await.expect("claim").is_empty(),
        "the relay that lost the lease gets nothing"
    );
}

/// An aggregate's later row is not handed out while an earlier one is in flight: events leave
/// in version order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_relay_takes_an_aggregate_s_later_row_while_another_holds_an_earlier_one() {
    let (log, _) = log_and_schema().await;
    for (stream, versions) in [("x", 1..=3u64), ("y", 1..=1)] {
        for v in versions {
            append_one(&log, stream, v).await;
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
        "x's later rows wait while x's first is in flight"
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
