use std::collections::BTreeMap;

use sagaflow_runtime::bus::{Message, headers};
use serde_json::json;

use crate::helpers::{System, eventually, start};

async fn completed_saga(sys: &System) -> String {
    let id = sys.create("ivy", "LOW", "saga-replay").await;
    sys.command(&id, "assign", json!({"assignedTo": "jon"}), "saga-replay")
        .await;
    sys.command(&id, "process", json!({"resolution": "ok"}), "saga-replay")
        .await;
    sys.command(&id, "close", json!({}), "saga-replay").await;
    eventually("the saga to complete", || async {
        (sys.view(&id).await["sagaStatus"] == "COMPLETED").then_some(())
    })
    .await;
    eventually("the archive", || async {
        (sys.archived(&id).await.len() == 4).then_some(())
    })
    .await;
    // And the notification events of its six mails, which travel a stream of their own.
    let notifications = sagaflow_domain::saga::notification_stream(&id);
    eventually("the notification events archived", || async {
        (sys.archived(&notifications).await.len() == 6).then_some(())
    })
    .await;
    sys.drained().await;
    id
}

/// What the saga did, to compare before and after.
async fn effects(sys: &System, id: &str) -> (usize, usize, usize, usize) {
    let all = sys
        .get(format!("{}/api/events/all?limit=1000", sys.event_store))
        .await;
    (
        sys.mails_of(id).len(),
        sys.trail(id).await.len(),
        sys.archived(id).await.len(),
        all["events"].as_array().expect("events").len(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replay_causes_no_second_mail_audit_entry_or_archived_event() {
    let sys = start().await;
    let id = completed_saga(&sys).await;
    let before = effects(&sys, &id).await;
    assert_eq!((before.0, before.1, before.2), (6, 4, 4));

    let res = sys
        .client
        .post(format!("{}/api/events/replay/{id}", sys.event_store))
        .send()
        .await
        .expect("replay");
    assert_eq!(res.status(), 202);
    let body: serde_json::Value = res.json().await.expect("json");
    assert_eq!(body["replayed"], 4);
    sys.drained().await;
    assert_eq!(effects(&sys, &id).await, before);
    let missing = sys
        .client
        .post(format!(
            "{}/api/events/replay/no-such-stream",
            sys.event_store
        ))
        .send()
        .await
        .expect("replay");
    assert_eq!(missing.status(), 404);
    sys.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redelivered_message_changes_nothing() {
    let sys = start().await;
    let id = completed_saga(&sys).await;
    let before = effects(&sys, &id).await;
    let bus = sys.app.as_ref().expect("running").pipeline.bus.clone();
    for event in sys.archived(&id).await {
        let message = Message {
            message_id: event["eventId"].as_str().expect("id").to_owned(),
            exchange: "complaints.events".into(),
            routing_key: sagaflow_domain::events::routing_key(
                event["eventType"].as_str().expect("type"),
            ),
            ordering_key: Some(id.clone()),
            headers: BTreeMap::from([(
                headers::CORRELATION_ID.to_owned(),
                "saga-replay".to_owned(),
            )]),
            body: event.to_string(),
        };
        bus.publish(&message).await.expect("publish again");
    }
    sys.drained().await;
    assert_eq!(effects(&sys, &id).await, before);
    sys.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_poison_message_is_dead_lettered_at_once_and_listed_with_its_headers() {
    let sys = start().await;
    let bus = sys.app.as_ref().expect("running").pipeline.bus.clone();
    let poison = Message {
        message_id: "poison-1".into(),
        exchange: "complaints.events".into(),
        routing_key: "complaint.created".into(),
        ordering_key: None,
        headers: BTreeMap::new(),
        body: "this is not JSON".into(),
    };
    bus.publish(&poison).await.expect("publish");
    let letters = eventually("both consumers to dead-letter it", || async {
        let d = sys
            .get(format!("{}/api/dlq/complaints.events", sys.complaint))
            .await;
        let items = d["items"].as_array().expect("items").clone();
        (items.len() == 2).then_some(items)
    })
    .await;
    let mut queues: Vec<&str> = letters
        .iter()
        .map(|l| l["headers"][headers::QUEUE].as_str().expect("queue"))
        .collect();
    queues.sort();
    assert_eq!(
        queues,
        [
            "complaints.events.audit-service",
            "complaints.events.notification-service"
        ]
    );
    for l in &letters {
        assert_eq!(l["attempts"], 1, "no retry for a poison message");
        assert_eq!(l["headers"][headers::ATTEMPTS], "1");
        assert!(
            l["lastError"]
                .as_str()
                .expect("error")
                .starts_with("poison message"),
            "{l}"
        );
        assert_eq!(l["body"], "this is not JSON");
    }
    let other = sys
        .client
        .get(format!("{}/api/dlq/complaints.events", sys.audit))
        .send()
        .await
        .expect("request");
    assert_eq!(
        other.status(),
        404,
        "the DLQ is served by the service that owns the exchange"
    );
    sys.stop().await;
}
