//! The console's page and assets, and its routes when the other services are not configured
//! or do not answer (the all-in-one's saga tests and the browser scenarios cover them running).

use reqwest::StatusCode;
use sagaflow_complaint::console::Peers;
use serde_json::json;

use crate::helpers::{new_complaint, spawn_app, spawn_with_peers};

#[tokio::test]
async fn the_page_and_its_files_are_served_with_a_strict_policy() {
    let app = spawn_app().await;
    for (path, content_type, starts) in [
        ("/", "text/html; charset=utf-8", "<!doctype html>"),
        ("/console/app.js", "text/javascript; charset=utf-8", "//"),
        ("/console/app.css", "text/css; charset=utf-8", "/*"),
        ("/console/icon.svg", "image/svg+xml", "<svg"),
    ] {
        let res = app.client.get(app.url(path)).send().await.expect("request");
        assert_eq!(res.status(), StatusCode::OK, "{path}");
        let h = res.headers().clone();
        assert_eq!(h["content-type"], content_type, "{path}");
        let csp = h["content-security-policy"].to_str().expect("ascii");
        assert!(csp.contains("default-src 'self'"), "{path}: {csp}");
        assert_eq!(h["x-content-type-options"], "nosniff");
        assert!(h.contains_key("x-correlation-id"), "{path}");
        let body = res.text().await.expect("body");
        assert!(
            body.starts_with(starts),
            "{path}: {}",
            &body[..40.min(body.len())]
        );
        // Nothing from another origin: the console works offline.
        assert!(
            !body.contains("http://") || path == "/console/icon.svg",
            "{path} links outside"
        );
        assert!(!body.contains("https://"), "{path} links outside");
    }
    let (status, _, body) = app.get("/console/../Cargo.toml").await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    let (status, _, body) = app.get("/console/nothing.js").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(body["error"]["code"], "NOT_FOUND");
    app.stop().await;
}

#[tokio::test]
async fn the_saga_summary_counts_the_newest_complaints_and_refuses_a_bad_window() {
    let app = spawn_app().await;
    for _ in 0..3 {
        app.create(new_complaint()).await;
    }
    // The read model answers the writes it acknowledged.
    let (status, _, summary) = app.get("/api/sagas/summary").await;
    assert_eq!(status, StatusCode::OK, "{summary}");
    assert_eq!(summary["summary"]["complaints"], 3);
    assert_eq!(summary["window"], 500);
    assert_eq!(summary["summary"]["sagas"]["RUNNING"], 3);
    assert_eq!(summary["summary"]["statuses"]["OPEN"], 3);
    assert_eq!(summary["summary"]["completed"]["count"], 0);
    let (status, _, two) = app.get("/api/sagas/summary?window=2").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(two["summary"]["complaints"], 2, "the newest two only");
    for (query, field) in [
        ("window=0", "window"),
        ("window=5001", "window"),
        ("window=many", "window"),
        ("size=3", "size"),
    ] {
        let (status, _, body) = app.get(&format!("/api/sagas/summary?{query}")).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{query}: {body}");
        assert_eq!(body["error"]["field"], field, "{query}");
    }
    app.stop().await;
}

#[tokio::test]
async fn services_that_are_not_configured_or_do_not_answer_are_named_not_guessed() {
    // A port nothing listens on: bound, then closed.
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr").port()
    };
    let app = spawn_with_peers(Peers {
        complaint: None,
        notification: Some(format!("http://127.0.0.1:{closed}")),
        audit: None,
        event_store: None,
    })
    .await;
    let (status, _, body) = app.get("/api/console/services").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let states: Vec<(String, String)> = body["services"]
        .as_array()
        .expect("services")
        .iter()
        .map(|s| {
            (
                s["service"].as_str().unwrap_or("?").to_owned(),
                s["state"].as_str().unwrap_or("?").to_owned(),
            )
        })
        .collect();
    assert_eq!(
        states,
        [
            ("complaint-service".into(), "not configured".into()),
            ("notification-service".into(), "unreachable".into()),
            ("audit-service".into(), "not configured".into()),
            ("event-store".into(), "not configured".into()),
        ]
    );
    // An owner not configured still names its exchange, so the console shows that DLQ as not
    // available rather than leaving it out.
    assert_eq!(body["services"][2]["exchange"], "audit.events", "{body}");
    assert_eq!(
        body["services"][1]["url"],
        format!("http://127.0.0.1:{closed}")
    );
    let (status, headers, body) = app.get("/api/console/dlq/notifications.events").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert!(headers.contains_key("retry-after"));
    let message = body["error"]["message"].as_str().expect("message");
    assert!(message.contains("notification-service"), "{message}");
    let (status, _, body) = app.get("/api/console/dlq/audit.events").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("not configured")),
        "{body}"
    );
    let (status, _, body) = app.get("/api/console/dlq/payments.events").await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    let (status, _, _) = app
        .send(
            reqwest::Method::POST,
            "/api/console/dlq/notifications.events/redrive",
            Some(json!({})),
            &[],
        )
        .await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    let (status, _, body) = app.get("/api/console/audit/some-id").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    app.stop().await;
}
