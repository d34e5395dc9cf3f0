use std::path::Path;

use reqwest::{Method, StatusCode};
use sagaflow_complaint::{ComplaintService, Storage};
use serde_json::{Value, json};

pub struct TestApp {
    pub base: String,
    pub client: reqwest::Client,
    /// The service's event log, to check what was recorded.
    pub log: std::sync::Arc<dyn sagaflow_runtime::event_log::EventLog>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    served: Option<tokio::task::JoinHandle<()>>,
    _temp: Option<tempfile::TempDir>,
}

/// A service on a fresh data directory.
pub async fn spawn_app() -> TestApp {
    let temp = tempfile::tempdir().expect("temp dir");
    let mut app = spawn_on(temp.path()).await;
    app._temp = Some(temp);
    app
}

/// A service on a fresh data directory whose console reaches the other services at `peers`.
pub async fn spawn_with_peers(peers: sagaflow_complaint::console::Peers) -> TestApp {
    let temp = tempfile::tempdir().expect("temp dir");
    let mut app = spawn_on_with(temp.path(), peers).await;
    app._temp = Some(temp);
    app
}

/// A service on `dir` (which the caller keeps).
pub async fn spawn_on(dir: &Path) -> TestApp {
    spawn_on_with(dir, Default::default()).await
}

async fn spawn_on_with(dir: &Path, peers: sagaflow_complaint::console::Peers) -> TestApp {
    let (pipeline, bus, streams) =
        sagaflow_runtime::pipeline::Pipeline::embedded(dir, Default::default())
            .await
            .expect("open the pipeline");
    let service = ComplaintService::open(
        &Storage::DataDir(dir.to_owned()),
        pipeline,
        Default::default(),
    )
    .await
    .expect("open the service");
    let log = service.app.log();
    let router = service.router_with(
        axum::http::HeaderName::from_static("x-correlation-id"),
        peers,
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let served = tokio::spawn(async move {
        axum::serve(listener, router)
            .with_graceful_shutdown(async {
                let _ = stopped.await;
            })
            .await
            .expect("serve");
        service.close().await;
        bus.close().await;
        streams.close().await;
    });
    TestApp {
        base: format!("http://{addr}"),
        client: reqwest::Client::new(),
        log,
        stop: Some(stop),
        served: Some(served),
        _temp: None,
    }
}

pub fn new_complaint() -> Value {
    json!({
        "userId": "alice",
        "title": "Kettle leaks",
        "description": "Water everywhere after two days.",
        "priority": "HIGH",
        "category": "appliances"
    })
}

impl TestApp {
    /// Stops serving (draining) and closes the stores.
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(served) = self.served.take() {
            served.await.expect("server task");
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
        headers: &[(&str, &str)],
    ) -> (StatusCode, reqwest::header::HeaderMap, Value) {
        let mut req = self.client.request(method, self.url(path));
        if let Some(body) = body {
            req = req
                .header("content-type", "application/json")
                .body(body.to_string());
        }
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let res = req.send().await.expect("request");
        let status = res.status();
        let headers = res.headers().clone();
        let text = res.text().await.expect("body");
        let json = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        };
        (status, headers, json)
    }

    pub async fn get(&self, path: &str) -> (StatusCode, reqwest::header::HeaderMap, Value) {
        self.send(Method::GET, path, None, &[]).await
    }

    pub async fn post(
        &self,
        path: &str,
        body: Value,
    ) -> (StatusCode, reqwest::header::HeaderMap, Value) {
        self.send(Method::POST, path, Some(body), &[]).await
    }

    pub async fn put(
        &self,
        path: &str,
        body: Value,
    ) -> (StatusCode, reqwest::header::HeaderMap, Value) {
        self.send(Method::PUT, path, Some(body), &[]).await
    }

    /// Creates a complaint and returns its view.
    pub async fn create(&self, body: Value) -> Value {
        let (status, _, view) = self.post("/api/complaints", body).await;
        assert_eq!(status, StatusCode::CREATED, "{view}");
        view
    }

    pub async fn command(&self, id: &str, action: &str, body: Value) -> Value {
        let (status, _, view) = self
            .put(&format!("/api/complaints/{id}/{action}"), body)
            .await;
        assert_eq!(status, StatusCode::OK, "{action}: {view}");
        view
    }
}

/// Asserts the contract's error shape and returns the error object.
pub fn assert_error(
    status: StatusCode,
    headers: &reqwest::header::HeaderMap,
    body: &Value,
    want: StatusCode,
    code: &str,
) -> Value {
    assert_eq!(status, want, "{body}");
    let error = &body["error"];
    assert_eq!(error["code"], code, "{body}");
    assert!(
        error["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{body}"
    );
    let echoed = headers
        .get("x-correlation-id")
        .and_then(|v| v.to_str().ok())
        .expect("correlation id header");
    assert_eq!(
        error["correlationId"], echoed,
        "the body carries the echoed correlation id"
    );
    error.clone()
}

pub fn etag(headers: &reqwest::header::HeaderMap) -> String {
    headers
        .get("etag")
        .and_then(|v| v.to_str().ok())
        .expect("ETag")
        .to_owned()
}
