use reqwest::StatusCode;
use serde_json::Value;

use crate::helpers::start;

/// Each service's document names only routes that exist, and every route listed here.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_service_documents_the_routes_it_has() {
    let sys = start().await;
    let common = [
        "get /health/live",
        "get /health/ready",
        "get /metrics",
        "get /openapi.json",
    ];
    for (base, own) in [
        (
            &sys.notification,
            vec![
                "get /api/notifications",
                "get /api/dlq/{exchange}",
                "post /api/dlq/{exchange}/redrive",
            ],
        ),
        (
            &sys.audit,
            vec![
                "get /api/audit/trail/{aggregateId}",
                "get /api/audit/search",
                "get /api/audit/events",
                "get /api/dlq/{exchange}",
                "post /api/dlq/{exchange}/redrive",
            ],
        ),
        (
            &sys.event_store,
            vec![
                "get /api/events/stream/{streamId}",
                "get /api/events/all",
                "post /api/events/replay/{streamId}",
                "get /api/events/state/{aggregateId}",
            ],
        ),
    ] {
        let doc = sys.get(format!("{base}/openapi.json")).await;
        assert!(doc["openapi"].as_str().is_some_and(|v| v.starts_with("3.")));
        let mut documented = Vec::new();
        for (path, item) in doc["paths"].as_object().expect("paths") {
            for method in item.as_object().expect("item").keys() {
                documented.push(format!("{method} {path}"));
                let exchange = match base {
                    b if b == &sys.notification => "notifications.events",
                    _ => "audit.events",
                };
                let url = format!(
                    "{base}{}",
                    path.replace("{exchange}", exchange)
                        .replace("{streamId}", "x")
                        .replace("{aggregateId}", "x")
                );
                let res = sys
                    .client
                    .request(method.to_uppercase().parse().expect("method"), url)
                    .send()
                    .await
                    .expect("request");
                let status = res.status();
                let body: Value = res.json().await.unwrap_or(Value::Null);
                let unrouted = status == StatusCode::METHOD_NOT_ALLOWED
                    || body["error"]["message"] == "no such route";
                assert!(
                    !unrouted,
                    "{method} {path} on {base} is documented but not routed"
                );
            }
        }
        let mut expected: Vec<String> = own
            .iter()
            .chain(common.iter())
            .map(|s| s.to_string())
            .collect();
        expected.sort();
        documented.sort();
        assert_eq!(documented, expected, "{base}");
    }
    sys.stop().await;
}

/// Bad input to the new APIs is a 400 naming the parameter, never a 500.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_query_parameters_are_400s_naming_them() {
    let sys = start().await;
    for (url, field) in [
        (
            format!("{}/api/events/all?limit=0", sys.event_store),
            "limit",
        ),
        (
            format!("{}/api/events/all?after=-1", sys.event_store),
            "after",
        ),
        (
            format!("{}/api/events/stream/x?fromVersion=zero", sys.event_store),
            "fromVersion",
        ),
        (
            format!("{}/api/audit/search?from=yesterday", sys.audit),
            "from",
        ),
        (
            format!("{}/api/audit/search?compensated=maybe", sys.audit),
            "compensated",
        ),
        (
            format!("{}/api/audit/search?cursor=abc", sys.audit),
            "cursor",
        ),
        (
            format!("{}/api/audit/search?colour=red", sys.audit),
            "colour",
        ),
        (
            format!("{}/api/notifications?limit=5000", sys.notification),
            "limit",
        ),
    ] {
        let res = sys.client.get(&url).send().await.expect("request");
        assert_eq!(res.status(), StatusCode::BAD_REQUEST, "{url}");
        let body: Value = res.json().await.expect("json");
        assert_eq!(body["error"]["field"], field, "{url}");
    }
    sys.stop().await;
}
