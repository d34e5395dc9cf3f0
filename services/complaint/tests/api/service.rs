use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{new_complaint, spawn_app, spawn_on};

#[tokio::test]
async fn health_routes_answer() {
    let app = spawn_app().await;
    let (status, _, body) = app.get("/health/live").await;
    assert_eq!(
        (status, body["status"].as_str()),
        (StatusCode::OK, Some("ok"))
    );
    let (status, _, body) = app.get("/health/ready").await;
    assert_eq!(
        (status, body["status"].as_str()),
        (StatusCode::OK, Some("ready"))
    );
    app.stop().await;
}

#[tokio::test]
async fn metrics_count_published_events_and_requests_by_route_and_status() {
    let app = spawn_app().await;
    let id = app.create(new_complaint()).await["id"]
        .as_str()
        .expect("id")
        .to_owned();
    app.command(&id, "assign", json!({"assignedTo": "bob"}))
        .await;
    app.get("/api/complaints/missing").await;
    let text = app
        .client
        .get(app.url("/metrics"))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    for line in [
        "events_published_total{event_type=\"COMPLAINT_CREATED\",service=\"complaint-service\"} 1",
        "events_published_total{event_type=\"COMPLAINT_ASSIGNED\",service=\"complaint-service\"} 1",
        "http_requests_total{method=\"POST\",route=\"/api/complaints\",service=\"complaint-service\",status=\"201\"} 1",
        "http_requests_total{method=\"GET\",route=\"/api/complaints/{id}\",service=\"complaint-service\",status=\"404\"} 1",
    ] {
        assert!(
            text.lines().any(|l| l == line),
            "missing {line:?} in\n{text}"
        );
    }
    assert!(text.contains("http_request_duration_seconds_bucket"));
    app.stop().await;
}

/// Every route the document names answers (not the router's 404), and every route the API
/// has is in the document with the errors it really gives.
#[tokio::test]
async fn the_openapi_document_describes_the_routes_that_exist() {
    let app = spawn_app().await;
    let (status, _, doc) = app.get("/openapi.json").await;
    assert_eq!(status, StatusCode::OK);
    assert!(doc["openapi"].as_str().is_some_and(|v| v.starts_with("3.")));
    let paths = doc["paths"].as_object().expect("paths");
    let expected = [
        ("/api/complaints", "get"),
        ("/api/complaints", "post"),
        ("/api/complaints/{id}", "get"),
        ("/api/complaints/{id}/assign", "put"),
        ("/api/complaints/{id}/process", "put"),
        ("/api/complaints/{id}/close", "put"),
        ("/api/complaints/{id}/compensate", "put"),
        ("/health/live", "get"),
        ("/health/ready", "get"),
        ("/metrics", "get"),
        ("/openapi.json", "get"),
        ("/api/dlq/{exchange}", "get"),
        ("/api/dlq/{exchange}/redrive", "post"),
        ("/", "get"),
        ("/console/{asset}", "get"),
        ("/api/sagas/summary", "get"),
        ("/api/console/services", "get"),
        ("/api/console/audit/{aggregateId}", "get"),
        ("/api/console/dlq/{exchange}", "get"),
        ("/api/console/dlq/{exchange}/redrive", "post"),
    ];
    let mut documented = Vec::new();
    for (path, item) in paths {
        for method in item
            .as_object()
            .expect("path item")
            .keys()
            .filter(|k| *k != "parameters")
        {
            documented.push((path.clone(), method.clone()));
            let url = app.url(
                &path
                    .replace("{id}", "00000000-0000-0000-0000-000000000000")
                    .replace("{exchange}", "complaints.events")
                    .replace("{asset}", "app.js")
                    .replace("{aggregateId}", "x"),
            );
            let res = app
                .client
                .request(method.to_uppercase().parse().expect("method"), url)
                .send()
                .await
                .expect("request");
            let status = res.status();
            let body: Value = res.json().await.unwrap_or(Value::Null);
            assert!(
                !(status == StatusCode::NOT_FOUND && body["error"]["message"] == "no such route")
                    && status != StatusCode::METHOD_NOT_ALLOWED,
                "{method} {path} is documented but not routed"
            );
            let responses = item[method]["responses"].as_object().expect("responses");
            if method != "get" || path.starts_with("/api/complaints/") {
                for code in ["400", "404"]
                    .iter()
                    .filter(|_| path.starts_with("/api/complaints/"))
                {
                    assert!(
                        responses.contains_key(*code),
                        "{method} {path} lacks {code}"
                    );
                }
            }
        }
    }
    let mut expected: Vec<(String, String)> = expected
        .iter()
        .map(|(p, m)| (p.to_string(), m.to_string()))
        .collect();
    expected.sort();
    documented.sort();
    assert_eq!(documented, expected);
    for code in ["400", "409", "412", "413", "415", "503"] {
        assert!(
            doc["paths"]["/api/complaints/{id}/assign"]["put"]["responses"]
                .get(code)
                .is_some(),
            "assign lacks {code}"
        );
    }
    app.stop().await;
}

#[tokio::test]
async fn a_restart_on_the_same_directory_brings_everything_back() {
    let dir = tempfile::tempdir().expect("temp dir");
    let app = spawn_on(dir.path()).await;
    let a = app.create(new_complaint()).await["id"]
        .as_str()
        .expect("id")
        .to_owned();
    let b = app.create(new_complaint()).await["id"]
        .as_str()
        .expect("id")
        .to_owned();
    app.command(&a, "assign", json!({"assignedTo": "bob"}))
        .await;
    app.command(&a, "process", json!({"resolution": "done"}))
        .await;
    app.command(&b, "close", json!({"reason": "spam"})).await;
    let (_, _, before) = app.get("/api/complaints").await;
    let events_before = app.log.read_all(0, 100).await.expect("read");
    app.stop().await;

    let app = spawn_on(dir.path()).await;
    let (_, _, after) = app.get("/api/complaints").await;
    assert_eq!(after, before);
    let (_, headers, view) = app.get(&format!("/api/complaints/{a}")).await;
    assert_eq!(
        (view["status"].as_str(), view["version"].as_u64()),
        (Some("RESOLVED"), Some(3))
    );
    assert_eq!(headers["etag"], "\"3\"");
    assert_eq!(app.log.read_all(0, 100).await.expect("read"), events_before);
    // And it goes on from there.
    let view = app.command(&a, "close", json!({})).await;
    assert_eq!(view["version"], 4);
    app.stop().await;
}

#[tokio::test]
async fn a_read_model_deleted_while_stopped_is_rebuilt_from_the_events() {
    let dir = tempfile::tempdir().expect("temp dir");
    let app = spawn_on(dir.path()).await;
    let id = app.create(new_complaint()).await["id"]
        .as_str()
        .expect("id")
        .to_owned();
    app.command(&id, "assign", json!({"assignedTo": "bob"}))
        .await;
    let (_, _, before) = app.get(&format!("/api/complaints/{id}")).await;
    app.stop().await;
    for file in ["views.db", "views.db-wal", "views.db-shm"] {
        let _ = std::fs::remove_file(dir.path().join("complaint").join(file));
    }
    let app = spawn_on(dir.path()).await;
    let (status, _, after) = app.get(&format!("/api/complaints/{id}")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(after, before);
    app.stop().await;
}
