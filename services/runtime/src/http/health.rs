//! `GET /health/live`, `GET /health/ready` and `GET /metrics`, the same on every service.

use std::sync::Arc;

use async_trait::async_trait;
use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use crate::metrics::Metrics;

/// A backend whose answer decides readiness.
#[async_trait]
pub trait ReadinessCheck: Send + Sync + 'static {
    /// The backend's name, as the 503 body shows it.
    fn name(&self) -> &'static str;
    async fn check(&self) -> Result<(), String>;
}

#[derive(Clone)]
pub struct HealthState {
    pub checks: Arc<Vec<Arc<dyn ReadinessCheck>>>,
    pub metrics: Metrics,
}

/// The three routes, ready to be merged into a service's router.
pub fn routes<S: Clone + Send + Sync + 'static>(state: HealthState) -> Router<S> {
    Router::new()
        .route(
            "/health/live",
            get(|| async { axum::Json(serde_json::json!({"status": "ok"})) }),
        )
        .route("/health/ready", get(ready))
        .route("/metrics", get(metrics))
        .with_state(state)
}

async fn ready(State(state): State<HealthState>) -> Response {
    let mut failing = Vec::new();
    for check in state.checks.iter() {
        if let Err(error) = check.check().await {
            failing.push(serde_json::json!({"backend": check.name(), "error": error}));
        }
    }
    if failing.is_empty() {
        axum::Json(serde_json::json!({"status": "ready"})).into_response()
    } else {
        let body = serde_json::json!({"status": "unavailable", "failing": failing});
        (
            StatusCode::SERVICE_UNAVAILABLE,
            [(header::RETRY_AFTER, "1")],
            axum::Json(body),
        )
            .into_response()
    }
}

async fn metrics(State(state): State<HealthState>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        state.metrics.render(),
    )
        .into_response()
}

type CheckFn = dyn Fn() -> futures::future::BoxFuture<'static, Result<(), String>> + Send + Sync;

struct FnCheck {
    name: &'static str,
    check: Box<CheckFn>,
}

#[async_trait]
impl ReadinessCheck for FnCheck {
    fn name(&self) -> &'static str {
        self.name
    }
    async fn check(&self) -> Result<(), String> {
        (self.check)().await
    }
}

/// A readiness check from a closure that pings a backend.
pub fn check<F, Fut, E>(name: &'static str, ping: F) -> Arc<dyn ReadinessCheck>
where
    F: Fn() -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = Result<(), E>> + Send + 'static,
    E: std::fmt::Display,
{
    Arc::new(FnCheck {
        name,
        check: Box::new(move || {
            let fut = ping();
            Box::pin(async move { fut.await.map_err(|e| e.to_string()) })
        }),
    })
}
