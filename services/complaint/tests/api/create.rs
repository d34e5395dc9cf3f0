use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::helpers::{etag, new_complaint, spawn_app};

#[tokio::test]
async fn create_answers_201_with_location_etag_and_the_whole_view() {
    let app = spawn_app().await;
    let (status, headers, view) = app.post("/api/complaints", new_complaint()).await;
    assert_eq!(status, StatusCode::CREATED);
    let id = view["id"].as_str().expect("id");
    assert_eq!(
        headers["location"],
        format!("/api/complaints/{id}").as_str()
    );
    assert_eq!(etag(&headers), "\"1\"");
    for (field, value) in [
        ("userId", json!("alice")),
        ("title", json!("Kettle leaks")),
        ("description", json!("Water everywhere after two days.")),
        ("status", json!("OPEN")),
        ("priority", json!("HIGH")),
        ("category", json!("appliances")),
        ("assignedTo", json!(null)),
        ("resolution", json!(null)),
        ("closedAt", json!(null)),
        ("version", json!(1)),
        ("sagaStatus", json!("RUNNING")),
        ("notifications", json!([])),
        ("auditTrail", json!([])),
    ] {
        assert_eq!(view[field], value, "{field}");
    }
    assert!(view["createdAt"].as_str().is_some_and(|t| t.ends_with('Z')));
    assert_eq!(view["createdAt"], view["updatedAt"]);
    assert_eq!(view["timeline"][0]["eventType"], "COMPLAINT_CREATED");

    let (status, headers, fetched) = app.get(&format!("/api/complaints/{id}")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(etag(&headers), "\"1\"");
    assert_eq!(fetched, view);
    app.stop().await;
}

#[tokio::test]
async fn the_correlation_id_is_echoed_and_carried_into_the_events() {
    let app = spawn_app().await;
    let (_, headers, view) = app
        .send(
            Method::POST,
            "/api/complaints",
            Some(new_complaint()),
            &[("X-Correlation-ID", "saga-42"), ("X-User-ID", "agent-7")],
        )
        .await;
    assert_eq!(headers["x-correlation-id"], "saga-42");
    assert_eq!(view["timeline"][0]["correlationId"], "saga-42");
    assert_eq!(view["timeline"][0]["userId"], "agent-7");
    let id = view["id"].as_str().expect("id");
    let events = app.log.read_stream(id, 1).await.expect("read");
    let meta = &events[0].metadata;
    assert_eq!(
        (
            meta.correlation_id.as_str(),
            meta.user_id.as_deref(),
            meta.version
        ),
        ("saga-42", Some("agent-7"), 1)
    );
    assert!(
        meta.causation_id.as_deref().is_some_and(|c| !c.is_empty()),
        "the request id causes the event"
    );
    assert_eq!(events[0].aggregate_type, "Complaint");

    let (_, headers, _) = app.get("/api/complaints").await;
    let generated = headers["x-correlation-id"].to_str().expect("text");
    assert_eq!(
        generated.len(),
        36,
        "a UUID is generated when the request has none: {generated}"
    );
    app.stop().await;
}

#[tokio::test]
async fn an_idempotency_key_makes_a_repeated_post_return_the_same_complaint() {
    let app = spawn_app().await;
    let key = [("Idempotency-Key", "order-123-complaint")];
    let (s1, h1, first) = app
        .send(Method::POST, "/api/complaints", Some(new_complaint()), &key)
        .await;
    let (s2, h2, second) = app
        .send(Method::POST, "/api/complaints", Some(new_complaint()), &key)
        .await;
    assert_eq!((s1, s2), (StatusCode::CREATED, StatusCode::CREATED));
    assert_eq!(first["id"], second["id"]);
    assert_eq!(h1["location"], h2["location"]);
    assert_eq!(h2["idempotent-replayed"], "true");
    let (_, _, page) = app.get("/api/complaints").await;
    assert_eq!(
        page["items"].as_array().expect("items").len(),
        1,
        "one complaint, not two"
    );

    let mut other = new_complaint();
    other["title"] = json!("Something else");
    let (status, _, body) = app
        .send(Method::POST, "/api/complaints", Some(other), &key)
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(body["error"]["code"], "IDEMPOTENCY_KEY_REUSED");
    app.stop().await;
}

#[tokio::test]
async fn racing_posts_with_one_idempotency_key_create_one_complaint() {
    let app = spawn_app().await;
    let key = [("Idempotency-Key", "race-key")];
    let (a, b, c) = tokio::join!(
        app.send(Method::POST, "/api/complaints", Some(new_complaint()), &key),
        app.send(Method::POST, "/api/complaints", Some(new_complaint()), &key),
        app.send(Method::POST, "/api/complaints", Some(new_complaint()), &key),
    );
    for (status, _, _) in [&a, &b, &c] {
        assert_eq!(*status, StatusCode::CREATED);
    }
    assert_eq!(a.2["id"], b.2["id"]);
    assert_eq!(b.2["id"], c.2["id"]);
    let (_, _, page) = app.get("/api/complaints").await;
    assert_eq!(page["items"].as_array().expect("items").len(), 1);
    app.stop().await;
}
