use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::helpers::{assert_error, new_complaint, spawn_app};

#[tokio::test]
async fn a_missing_field_is_a_400_naming_it() {
    let app = spawn_app().await;
    for field in ["userId", "title", "description", "priority", "category"] {
        let mut body = new_complaint();
        body.as_object_mut().expect("object").remove(field);
        let (status, headers, body) = app.post("/api/complaints", body).await;
        let error = assert_error(
            status,
            &headers,
            &body,
            StatusCode::BAD_REQUEST,
            "VALIDATION_ERROR",
        );
        assert_eq!(error["field"], field);
        assert!(error["message"].as_str().expect("message").contains(field));
    }
    app.stop().await;
}

#[tokio::test]
async fn a_wrong_type_is_a_400_naming_the_field() {
    let app = spawn_app().await;
    for (field, value) in [
        ("userId", json!(7)),
        ("title", json!(["a"])),
        ("description", json!({"a": 1})),
        ("priority", json!(true)),
        ("category", json!(1.5)),
    ] {
        let mut body = new_complaint();
        body[field] = value;
        let (status, headers, body) = app.post("/api/complaints", body).await;
        let error = assert_error(
            status,
            &headers,
            &body,
            StatusCode::BAD_REQUEST,
            "VALIDATION_ERROR",
        );
        assert_eq!(error["field"], field);
        assert!(
            error["message"]
                .as_str()
                .expect("message")
                .contains("must be a string"),
            "{error}"
        );
    }
    app.stop().await;
}

#[tokio::test]
async fn too_long_or_empty_text_is_a_400_naming_the_field() {
    let app = spawn_app().await;
    for (field, value) in [
        ("title", "t".repeat(201)),
        ("description", "d".repeat(5001)),
        ("category", "c".repeat(101)),
        ("title", String::new()),
        ("category", "   ".into()),
        ("userId", String::new()),
    ] {
        let mut body = new_complaint();
        body[field] = Value::String(value);
        let (status, headers, body) = app.post("/api/complaints", body).await;
        let error = assert_error(
            status,
            &headers,
            &body,
            StatusCode::BAD_REQUEST,
            "VALIDATION_ERROR",
        );
        assert_eq!(error["field"], field);
    }
    // The limits themselves are accepted.
    let mut body = new_complaint();
    body["title"] = Value::String("t".repeat(200));
    body["description"] = Value::String("d".repeat(5000));
    body["category"] = Value::String("c".repeat(100));
    assert_eq!(
        app.post("/api/complaints", body).await.0,
        StatusCode::CREATED
    );
    app.stop().await;
}

#[tokio::test]
async fn an_unknown_priority_is_a_400_listing_the_allowed_values() {
    let app = spawn_app().await;
    let mut body = new_complaint();
    body["priority"] = json!("URGENT");
    let (status, headers, body) = app.post("/api/complaints", body).await;
    let error = assert_error(
        status,
        &headers,
        &body,
        StatusCode::BAD_REQUEST,
        "VALIDATION_ERROR",
    );
    assert_eq!(error["field"], "priority");
    assert!(
        error["message"]
            .as_str()
            .expect("message")
            .contains("LOW, MEDIUM, HIGH, CRITICAL")
    );
    app.stop().await;
}

async fn raw(
    app: &crate::helpers::TestApp,
    content_type: Option<&str>,
    body: Vec<u8>,
) -> (StatusCode, reqwest::header::HeaderMap, Value) {
    let mut req = app.client.post(app.url("/api/complaints")).body(body);
    if let Some(t) = content_type {
        req = req.header("content-type", t);
    }
    let res = req.send().await.expect("request");
    let status = res.status();
    let headers = res.headers().clone();
    (
        status,
        headers,
        res.json().await.expect("a JSON error body"),
    )
}

#[tokio::test]
async fn malformed_json_is_a_400() {
    let app = spawn_app().await;
    let (status, headers, body) =
        raw(&app, Some("application/json"), b"{\"title\": ".to_vec()).await;
    assert_error(
        status,
        &headers,
        &body,
        StatusCode::BAD_REQUEST,
        "MALFORMED_JSON",
    );
    let (status, headers, body) = raw(&app, Some("application/json"), b"[1, 2]".to_vec()).await;
    let error = assert_error(
        status,
        &headers,
        &body,
        StatusCode::BAD_REQUEST,
        "VALIDATION_ERROR",
    );
    assert_eq!(error["field"], "body");
    let (status, headers, body) = raw(&app, Some("application/json"), vec![0xff, 0xfe, b'{']).await;
    assert_error(
        status,
        &headers,
        &body,
        StatusCode::BAD_REQUEST,
        "MALFORMED_JSON",
    );
    app.stop().await;
}

#[tokio::test]
async fn a_body_over_64_kib_is_a_413() {
    let app = spawn_app().await;
    let mut body = new_complaint();
    body["padding"] = Value::String("x".repeat(70 * 1024));
    let (status, headers, body) = raw(
        &app,
        Some("application/json"),
        body.to_string().into_bytes(),
    )
    .await;
    assert_error(
        status,
        &headers,
        &body,
        StatusCode::PAYLOAD_TOO_LARGE,
        "PAYLOAD_TOO_LARGE",
    );

    // Without a Content-Length (chunked), the limit still holds.
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
        (0..80).map(|_| Ok(vec![b' '; 1024])).collect();
    let res = app
        .client
        .post(app.url("/api/complaints"))
        .header("content-type", "application/json")
        .body(reqwest::Body::wrap_stream(futures::stream::iter(chunks)))
        .send()
        .await
        .expect("request");
    assert_eq!(res.status(), StatusCode::PAYLOAD_TOO_LARGE);
    app.stop().await;
}

#[tokio::test]
async fn a_body_that_is_not_json_is_a_415() {
    let app = spawn_app().await;
    let json = new_complaint().to_string().into_bytes();
    for content_type in [
        Some("text/plain"),
        Some("application/x-www-form-urlencoded"),
        None,
    ] {
        let (status, headers, body) = raw(&app, content_type, json.clone()).await;
        assert_error(
            status,
            &headers,
            &body,
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "UNSUPPORTED_MEDIA_TYPE",
        );
    }
    let (status, _, _) = raw(&app, Some("application/json; charset=utf-8"), json).await;
    assert_eq!(status, StatusCode::CREATED);
    app.stop().await;
}

#[tokio::test]
async fn unknown_complaints_and_routes_are_404s_and_wrong_methods_405s() {
    let app = spawn_app().await;
    let (status, headers, body) = app.get("/api/complaints/no-such-id").await;
    assert_error(status, &headers, &body, StatusCode::NOT_FOUND, "NOT_FOUND");
    let (status, headers, body) = app
        .put(
            "/api/complaints/no-such-id/assign",
            json!({"assignedTo": "bob"}),
        )
        .await;
    assert_error(status, &headers, &body, StatusCode::NOT_FOUND, "NOT_FOUND");
    let (status, headers, body) = app.get("/api/complaints/%FF%FE").await;
    let error = assert_error(
        status,
        &headers,
        &body,
        StatusCode::BAD_REQUEST,
        "VALIDATION_ERROR",
    );
    assert_eq!(error["field"], "id");
    let (status, headers, body) = app.get("/api/nothing-here").await;
    assert_error(status, &headers, &body, StatusCode::NOT_FOUND, "NOT_FOUND");
    let (status, headers, body) = app.send(Method::DELETE, "/api/complaints", None, &[]).await;
    assert_error(
        status,
        &headers,
        &body,
        StatusCode::METHOD_NOT_ALLOWED,
        "METHOD_NOT_ALLOWED",
    );
    app.stop().await;
}

#[tokio::test]
async fn an_invalid_transition_is_a_409() {
    let app = spawn_app().await;
    let id = app.create(new_complaint()).await["id"]
        .as_str()
        .expect("id")
        .to_owned();
    let (status, headers, body) = app
        .put(&format!("/api/complaints/{id}/process"), json!({}))
        .await;
    let error = assert_error(
        status,
        &headers,
        &body,
        StatusCode::CONFLICT,
        "INVALID_TRANSITION",
    );
    assert!(
        error["message"].as_str().expect("message").contains("OPEN"),
        "{error}"
    );
    let (status, headers, body) = app
        .put(&format!("/api/complaints/{id}/close"), json!({}))
        .await;
    assert_error(
        status,
        &headers,
        &body,
        StatusCode::CONFLICT,
        "INVALID_TRANSITION",
    );
    let (status, headers, body) = app
        .put(
            &format!("/api/complaints/{id}/compensate"),
            json!({"reason": "oops"}),
        )
        .await;
    assert_error(
        status,
        &headers,
        &body,
        StatusCode::CONFLICT,
        "INVALID_TRANSITION",
    );
    let (_, _, view) = app.get(&format!("/api/complaints/{id}")).await;
    assert_eq!(view["version"], 1, "refused commands change nothing");
    app.stop().await;
}

#[tokio::test]
async fn a_stale_if_match_is_a_412_and_a_malformed_one_a_400() {
    let app = spawn_app().await;
    let id = app.create(new_complaint()).await["id"]
        .as_str()
        .expect("id")
        .to_owned();
    let path = format!("/api/complaints/{id}/assign");
    let (status, headers, body) = app
        .send(
            Method::PUT,
            &path,
            Some(json!({"assignedTo": "bob"})),
            &[("If-Match", "\"7\"")],
        )
        .await;
    let error = assert_error(
        status,
        &headers,
        &body,
        StatusCode::PRECONDITION_FAILED,
        "VERSION_CONFLICT",
    );
    assert!(
        error["message"].as_str().expect("message").contains('1'),
        "names the current version: {error}"
    );
    let (status, headers, body) = app
        .send(
            Method::PUT,
            &path,
            Some(json!({"assignedTo": "bob"})),
            &[("If-Match", "yesterday")],
        )
        .await;
    let error = assert_error(
        status,
        &headers,
        &body,
        StatusCode::BAD_REQUEST,
        "VALIDATION_ERROR",
    );
    assert_eq!(error["field"], "If-Match");
    let (status, headers, _) = app
        .send(
            Method::PUT,
            &path,
            Some(json!({"assignedTo": "bob"})),
            &[("If-Match", "\"1\"")],
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers["etag"], "\"2\"");
    app.stop().await;
}

#[tokio::test]
async fn command_bodies_are_validated_by_field() {
    let app = spawn_app().await;
    let id = app.create(new_complaint()).await["id"]
        .as_str()
        .expect("id")
        .to_owned();
    for (action, body, field) in [
        ("assign", json!({}), "assignedTo"),
        ("assign", json!({"assignedTo": 3}), "assignedTo"),
        ("assign", json!({"assignedTo": ""}), "assignedTo"),
        ("process", json!({"resolution": false}), "resolution"),
        ("close", json!({"reason": "r".repeat(2001)}), "reason"),
        ("compensate", json!({}), "reason"),
        (
            "compensate",
            json!({"reason": "x", "failedEventId": 5}),
            "failedEventId",
        ),
    ] {
        let (status, headers, body) = app
            .put(&format!("/api/complaints/{id}/{action}"), body)
            .await;
        let error = assert_error(
            status,
            &headers,
            &body,
            StatusCode::BAD_REQUEST,
            "VALIDATION_ERROR",
        );
        assert_eq!(error["field"], field, "{action}");
    }
    app.stop().await;
}
