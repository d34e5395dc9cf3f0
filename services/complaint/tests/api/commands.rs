use reqwest::StatusCode;
use serde_json::json;

use crate::helpers::{assert_error, etag, new_complaint, spawn_app};

#[tokio::test]
async fn a_complaint_lives_from_open_to_closed() {
    let app = spawn_app().await;
    let id = app.create(new_complaint()).await["id"]
        .as_str()
        .expect("id")
        .to_owned();

    let view = app
        .command(&id, "assign", json!({"assignedTo": "bob"}))
        .await;
    assert_eq!(
        (
            view["status"].as_str(),
            view["assignedTo"].as_str(),
            view["version"].as_u64()
        ),
        (Some("ASSIGNED"), Some("bob"), Some(2))
    );

    let view = app.command(&id, "process", json!({})).await;
    assert_eq!(
        (view["status"].as_str(), view["version"].as_u64()),
        (Some("IN_PROGRESS"), Some(3))
    );

    let view = app
        .command(&id, "process", json!({"resolution": "Replaced the kettle"}))
        .await;
    assert_eq!(
        (view["status"].as_str(), view["resolution"].as_str()),
        (Some("RESOLVED"), Some("Replaced the kettle"))
    );

    let (status, headers, view) = app
        .put(&format!("/api/complaints/{id}/close"), json!({}))
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(etag(&headers), "\"5\"");
    assert_eq!(view["status"], "CLOSED");
    assert!(view["closedAt"].as_str().is_some());
    let types: Vec<&str> = view["timeline"]
        .as_array()
        .expect("timeline")
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
    let versions: Vec<u64> = view["timeline"]
        .as_array()
        .expect("timeline")
        .iter()
        .map(|e| e["version"].as_u64().expect("v"))
        .collect();
    assert_eq!(versions, [1, 2, 3, 4, 5]);

    let (status, headers, body) = app
        .put(
            &format!("/api/complaints/{id}/assign"),
            json!({"assignedTo": "carol"}),
        )
        .await;
    assert_error(
        status,
        &headers,
        &body,
        StatusCode::CONFLICT,
        "INVALID_TRANSITION",
    );
    app.stop().await;
}

#[tokio::test]
async fn an_empty_body_is_an_empty_command() {
    let app = spawn_app().await;
    let id = app.create(new_complaint()).await["id"]
        .as_str()
        .expect("id")
        .to_owned();
    app.command(&id, "assign", json!({"assignedTo": "bob"}))
        .await;
    let res = app
        .client
        .put(app.url(&format!("/api/complaints/{id}/process")))
        .send()
        .await
        .expect("request");
    assert_eq!(res.status(), StatusCode::OK);
    app.stop().await;
}

#[tokio::test]
async fn close_with_a_reason_works_from_open() {
    let app = spawn_app().await;
    let id = app.create(new_complaint()).await["id"]
        .as_str()
        .expect("id")
        .to_owned();
    let view = app
        .command(&id, "close", json!({"reason": "Duplicate of another"}))
        .await;
    assert_eq!(view["status"], "CLOSED");
    app.stop().await;
}

#[tokio::test]
async fn compensate_records_the_required_compensation_and_holds_other_commands() {
    let app = spawn_app().await;
    let id = app.create(new_complaint()).await["id"]
        .as_str()
        .expect("id")
        .to_owned();
    let assigned = app
        .command(&id, "assign", json!({"assignedTo": "bob"}))
        .await;
    let assign_event = assigned["timeline"][1]["eventId"]
        .as_str()
        .expect("event id")
        .to_owned();

    let view = app
        .command(
            &id,
            "compensate",
            json!({"reason": "The assignee never got the mail", "failedEventId": assign_event}),
        )
        .await;
    assert_eq!(view["sagaStatus"], "COMPENSATING");
    assert_eq!(view["version"], 3);
    assert_eq!(
        view["timeline"][2]["eventType"],
        "COMPLAINT_COMPENSATION_REQUIRED"
    );
    let events = app.log.read_stream(&id, 3).await.expect("read");
    let data = &events[0].event_data;
    assert_eq!(
        (data["failedStep"].as_str(), data["failedEventId"].as_str()),
        (Some("COMPLAINT_ASSIGNED"), Some(assign_event.as_str()))
    );
    let actions: Vec<(u64, &str, &str)> = data["actions"]
        .as_array()
        .expect("actions")
        .iter()
        .map(|a| {
            (
                a["order"].as_u64().expect("order"),
                a["service"].as_str().expect("service"),
                a["action"].as_str().expect("action"),
            )
        })
        .collect();
    assert_eq!(
        actions,
        [
            (
                1,
                "notification-service",
                "CANCEL_AND_CORRECT_NOTIFICATIONS"
            ),
            (2, "audit-service", "MARK_COMPENSATED"),
            (3, "complaint-service", "RESTORE_STATUS"),
        ]
    );
    assert_eq!(data["actions"][2]["parameters"]["restoredStatus"], "OPEN");

    let (status, headers, body) = app
        .put(
            &format!("/api/complaints/{id}/assign"),
            json!({"assignedTo": "carol"}),
        )
        .await;
    let error = assert_error(
        status,
        &headers,
        &body,
        StatusCode::CONFLICT,
        "INVALID_TRANSITION",
    );
    assert!(
        error["message"]
            .as_str()
            .expect("message")
            .contains("compensation"),
        "{error}"
    );
    app.stop().await;
}
