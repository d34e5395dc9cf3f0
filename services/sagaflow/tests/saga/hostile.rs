//! Hostile messages on every queue and stream the services read: not JSON, JSON that is no
//! envelope, an unknown event type, a huge payload, a known eventId with other content, a
//! version from the future. Each is dead-lettered or handled as the contract says, every
//! consumer goes on, and nothing else is affected: a saga run afterwards has exactly its
//! effects, and the earlier saga keeps exactly its own.

use std::collections::BTreeMap;

use sagaflow_runtime::bus::Message;
use serde_json::{Value, json};

use std::time::Duration;

use crate::helpers::{System, eventually, start_with};

const EXCHANGES: [&str; 3] = ["complaints.events", "notifications.events", "audit.events"];
const STREAMS: [&str; 2] = ["complaints-stream", "notifications-stream"];

/// Who owns each exchange's DLQ route.
fn owner(sys: &System, exchange: &str) -> String {
    match exchange {
        "complaints.events" => sys.complaint.clone(),
        "notifications.events" => sys.notification.clone(),
        _ => sys.audit.clone(),
    }
}

async fn saga(sys: &System, user: &str) -> String {
    let id = sys.create(user, "LOW", &format!("saga-{user}")).await;
    sys.command(&id, "assign", json!({"assignedTo": "jon"}), "c")
        .await;
    sys.command(&id, "process", json!({"resolution": "ok"}), "c")
        .await;
    sys.command(&id, "close", json!({}), "c").await;
    eventually("the saga to complete", || async {
        (sys.view(&id).await["sagaStatus"] == "COMPLETED").then_some(())
    })
    .await;
    eventually("its 4 events archived", || async {
        (sys.archived(&id).await.len() == 4).then_some(())
    })
    .await;
    sys.drained().await;
    id
}

/// Everything the saga of `id` caused.
async fn effects(sys: &System, id: &str) -> (usize, usize, usize, Value) {
    let view = sys.view(id).await;
    (
        sys.mails_of(id).len(),
        sys.trail(id).await.len(),
        sys.archived(id).await.len(),
        json!({"status": view["status"], "version": view["version"], "saga": view["sagaStatus"],
            "notifications": view["notifications"].as_array().map(Vec::len),
            "audit": view["auditTrail"].as_array().map(Vec::len)}),
    )
}

/// The hostile bodies, by name, built around a completed saga's first event.
fn hostile(template: &Value, id: &str) -> Vec<(&'static str, String)> {
    let mut unknown = template.clone();
    unknown["eventId"] = json!(uuid::Uuid::new_v4().to_string());
    unknown["eventType"] = json!("COMPLAINT_TELEPORTED");
    unknown["aggregateId"] = json!(format!("ghost-{}", uuid::Uuid::new_v4()));
    let mut huge = template.clone();
    huge["eventId"] = json!(uuid::Uuid::new_v4().to_string());
    huge["aggregateId"] = json!(format!("ghost-{}", uuid::Uuid::new_v4()));
    huge["eventData"]["description"] = json!("x".repeat(2 * 1024 * 1024));
    let mut twin = template.clone();
    twin["eventData"]["title"] = json!("Not what was said");
    let mut future = template.clone();
    future["eventId"] = json!(uuid::Uuid::new_v4().to_string());
    future["eventType"] = json!("COMPLAINT_ASSIGNED");
    future["eventData"] = json!({"complaintId": id, "assignedTo": "mallory", "assignedAt": template["metadata"]["timestamp"]});
    future["metadata"]["version"] = json!(99);
    vec![
        ("not JSON", "this is not JSON {".to_owned()),
        ("no envelope", json!({"hello": "world"}).to_string()),
        ("unknown type", unknown.to_string()),
        ("huge payload", huge.to_string()),
        ("known eventId, other content", twin.to_string()),
        ("version from the future", future.to_string()),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_messages_on_every_queue_and_stream_affect_nothing_else() {
    // Stream entries that failed are taken up again after 200 ms (30 s by default).
    let sys = start_with(|c| c.reclaim_after = Duration::from_millis(200)).await;
    let first = saga(&sys, "ivy").await;
    let before = effects(&sys, &first).await;
    let template = sys.archived(&first).await[0].clone();
    let app = sys.app.as_ref().expect("running");
    let (bus, streams) = (app.pipeline.bus.clone(), app.pipeline.streams.clone());

    for exchange in EXCHANGES {
        for (i, (name, body)) in hostile(&template, &first).into_iter().enumerate() {
            let message = Message {
                message_id: format!("hostile-{exchange}-{i}"),
                exchange: exchange.into(),
                routing_key: "complaint.created".into(),
                ordering_key: Some(first.clone()),
                headers: BTreeMap::new(),
                body,
            };
            bus.publish(&message)
                .await
                .unwrap_or_else(|e| panic!("publish {name} on {exchange}: {e}"));
        }
    }
    for stream in STREAMS {
        for (name, body) in hostile(&template, &first) {
            let fields = BTreeMap::from([
                ("event".to_owned(), body),
                ("eventType".to_owned(), name.to_owned()),
            ]);
            streams
                .append(stream, &fields, None)
                .await
                .unwrap_or_else(|e| panic!("append {name} to {stream}: {e}"));
        }
        streams
            .append(
                stream,
                &BTreeMap::from([("nothing".to_owned(), "here".to_owned())]),
                None,
            )
            .await
            .expect("append an entry without an event");
    }

    // Every consumer goes on: a new saga has exactly its effects.
    let second = saga(&sys, "zoe").await;
    let after_second = effects(&sys, &second).await;
    assert_eq!(
        after_second.0, before.0,
        "the same mails as the first saga had"
    );
    assert_eq!(after_second.1, before.1, "the same audit entries");
    assert_eq!(after_second.2, 4);

    // Every queue consumer dead-lettered what is no envelope at once, and an event whose
    // predecessor never comes after its last attempt.
    for exchange in EXCHANGES {
        let d = sys
            .get(format!("{}/api/dlq/{exchange}", owner(&sys, exchange)))
            .await;
        let items = d["items"].as_array().cloned().unwrap_or_default();
        let consumers: std::collections::BTreeSet<String> =
            sagaflow_runtime::bus::topology::default_queues()
                .into_iter()
                .filter(|q| q.exchange == exchange)
                .map(|q| q.name)
                .collect();
        for queue in &consumers {
            for (i, why) in [
                (0, "poison message: not JSON"),
                (1, "poison message: not a valid event envelope"),
            ] {
                let id = format!("hostile-{exchange}-{i}");
                let letter = items
                    .iter()
                    .find(|l| {
                        l["messageId"] == id.as_str() && l["headers"]["x-queue"] == queue.as_str()
                    })
                    .unwrap_or_else(|| panic!("{id} not dead-lettered by {queue}: {items:#?}"));
                assert_eq!(letter["attempts"], 1, "no retry for poison");
                assert!(
                    letter["lastError"].as_str().unwrap_or("").starts_with(why),
                    "{letter}"
                );
            }
        }
        if exchange == "complaints.events" {
            for queue in &consumers {
                let id = format!("hostile-{exchange}-5");
                let letter = items
                    .iter()
                    .find(|l| {
                        l["messageId"] == id.as_str() && l["headers"]["x-queue"] == queue.as_str()
                    })
                    .unwrap_or_else(|| {
                        panic!("the future version not dead-lettered by {queue}: {items:#?}")
                    });
                assert_eq!(letter["attempts"], 5, "after its last attempt");
                assert!(
                    letter["lastError"]
                        .as_str()
                        .unwrap_or("")
                        .contains("waiting for version"),
                    "{letter}"
                );
            }
        }
    }
    // The event store moved what is no event, and the version it waited for in vain, to each
    // stream's DLQ.
    for stream in STREAMS {
        let letters = eventually(&format!("{stream}.dlq"), || {
            let streams = streams.clone();
            async move {
                let e = streams
                    .range(&format!("{stream}.dlq"), None, 100)
                    .await
                    .ok()?;
                (e.len() >= 4).then_some(e)
            }
        })
        .await;
        let errors: Vec<&str> = letters
            .iter()
            .filter_map(|e| e.fields.get("error").map(String::as_str))
            .collect();
        for expected in [
            "not JSON",
            "no `event` field",
            "missing field",
            "gave up after 5 attempts: waiting for version 98",
        ] {
            assert!(
                errors.iter().any(|e| e.contains(expected)),
                "{stream}.dlq lacks {expected:?}: {errors:#?}"
            );
        }
    }
    sys.drained().await;
    assert_eq!(
        effects(&sys, &first).await,
        before,
        "the first saga is untouched"
    );
    sys.stop().await;
}
