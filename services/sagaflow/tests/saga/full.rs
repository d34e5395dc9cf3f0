use serde_json::json;

use crate::helpers::{eventually, start};

/// create → assign → process → resolve → close: 5 archived events with versions 1–5 and the
/// request's correlation id, 5 audit entries in order, the mails of SPEC section 5, sagaStatus
/// COMPLETED, and the event store's rebuilt state equal to the view.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_complaint_saga_runs_end_to_end() {
    let sys = start().await;
    let corr = "saga-e2e-1";
    let id = sys.create("alice", "HIGH", corr).await;
    sys.command(&id, "assign", json!({"assignedTo": "bob"}), corr)
        .await;
    sys.command(&id, "process", json!({}), corr).await;
    sys.command(
        &id,
        "process",
        json!({"resolution": "Replaced the kettle"}),
        corr,
    )
    .await;
    sys.command(&id, "close", json!({}), corr).await;

    eventually("the saga to complete", || async {
        let v = sys.view(&id).await;
        (v["sagaStatus"] == "COMPLETED").then_some(())
    })
    .await;

    let archived = eventually("5 archived events", || async {
        let a = sys.archived(&id).await;
        (a.len() == 5).then_some(a)
    })
    .await;
    let versions: Vec<u64> = archived
        .iter()
        .map(|e| e["metadata"]["version"].as_u64().expect("v"))
        .collect();
    assert_eq!(versions, [1, 2, 3, 4, 5]);
    assert!(
        archived
            .iter()
            .all(|e| e["metadata"]["correlationId"] == corr)
    );

    let trail = eventually("5 audit entries", || async {
        let t = sys.trail(&id).await;
        (t.len() == 5).then_some(t)
    })
    .await;
    let types: Vec<&str> = trail
        .iter()
        .map(|e| e["eventType"].as_str().expect("type"))
        .collect();
    assert_eq!(
        types,
        [
            "COMPLAINT_CREATED",
            "COMPLAINT_ASSIGNED",
            "COMPLAINT_PROCESSED",
            "COMPLAINT_PROCESSED",
            "COMPLAINT_CLOSED"
        ]
    );

    // CREATED: user + admin; ASSIGNED: assignee + user; PROCESSED ×2, CLOSED: user.
    sys.drained().await;
    let mails = sys.mails_of(&id);
    let mut sent: Vec<(String, String)> = mails
        .iter()
        .map(|m| {
            (
                m.header("X-Sagaflow-Template")
                    .expect("template")
                    .to_owned(),
                m.header("To").expect("to").to_owned(),
            )
        })
        .collect();
    sent.sort();
    assert_eq!(
        sent,
        [
            ("complaint-assigned-assignee", "bob@example.com"),
            ("complaint-assigned-user", "alice@example.com"),
            ("complaint-closed-user", "alice@example.com"),
            ("complaint-created-admin", "admin@example.com"),
            ("complaint-created-user", "alice@example.com"),
            ("complaint-processed-user", "alice@example.com"),
            ("complaint-processed-user", "alice@example.com"),
        ]
        .map(|(a, b)| (a.to_owned(), b.to_owned()))
    );
    assert!(
        mails
            .iter()
            .all(|m| m.header("X-Correlation-ID") == Some(corr))
    );
    let notifications = sys
        .get(format!(
            "{}/api/notifications?complaintId={id}",
            sys.notification
        ))
        .await;
    assert_eq!(notifications["items"].as_array().expect("items").len(), 7);
    assert!(
        notifications["items"]
            .as_array()
            .expect("items")
            .iter()
            .all(|n| n["status"] == "SENT")
    );

    let view = sys.view(&id).await;
    assert_eq!(
        view["notifications"]
            .as_array()
            .expect("notifications")
            .len(),
        7
    );
    let state = sys
        .get(format!("{}/api/events/state/{id}", sys.event_store))
        .await;
    assert_eq!(state["consistent"], true);
    for field in [
        "id",
        "status",
        "assignedTo",
        "resolution",
        "version",
        "createdAt",
        "closedAt",
        "priority",
        "timeline",
    ] {
        assert_eq!(state["state"][field], view[field], "{field}");
    }
    let metrics = sys.metrics_of(&sys.complaint).await;
    assert!(
        metrics.contains(
            "saga_execution_duration_seconds_count{saga_type=\"complaint\",status=\"completed\"} 1"
        ),
        "{metrics}"
    );

    // SPEC section 8, family by family with its labels, on the four services after a saga.
    let exposed = sys.metrics().await;
    let series = |family: &str, labels: &[&str]| {
        exposed.lines().any(|l| {
            l.strip_prefix(family).is_some_and(|rest| {
                rest.starts_with('{') && labels.iter().all(|k| rest.contains(&format!("{k}=\"")))
            })
        })
    };
    for (family, labels) in [
        (
            "event_processing_duration_seconds_bucket",
            &["event_type", "service", "status"][..],
        ),
        ("events_published_total", &["event_type", "service"]),
        (
            "saga_execution_duration_seconds_bucket",
            &["saga_type", "status"],
        ),
        // consumed, retried and dead-lettered per queue: one family, by outcome
        ("events_consumed_total", &["queue", "status"]),
        ("dlq_depth", &["queue"]),
        // consumer lag
        ("queue_depth", &["queue", "service"]),
        ("outbox_backlog", &["service"]),
        ("event_store_append_duration_seconds_bucket", &["service"]),
        ("event_store_events", &["service"]),
        ("http_requests_total", &["route", "status", "service"]),
        (
            "http_request_duration_seconds_bucket",
            &["route", "service"],
        ),
    ] {
        assert!(
            series(family, labels),
            "no {family} with {labels:?} on /metrics:\n{exposed}"
        );
    }
    // The event store's lag on each stream it reads, beside the queues' (0 once it has
    // archived everything).
    eventually("the event store's lag on both streams", || async {
        let text = sys.metrics_of(&sys.event_store).await;
        ["complaints-stream", "notifications-stream"]
            .iter()
            .all(|s| {
                text.contains(&format!(
                    "queue_depth{{queue=\"{s}\",service=\"event-store\"}} 0"
                ))
            })
            .then_some(())
    })
    .await;
    sys.stop().await;
}
