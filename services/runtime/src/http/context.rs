//! Per-request context: the correlation id (echoed or generated), a request id, the caller's
//! user id, and the middleware that sets them, times the request and counts it.

use std::sync::Arc;
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderName, HeaderValue};
use axum::middleware::Next;
use axum::response::Response;
use tracing::Instrument;

use crate::metrics::HttpMetrics;

tokio::task_local! {
    static CORRELATION_ID: String;
}

/// The correlation id of the request being served, or an empty string outside one.
pub fn current_correlation_id() -> String {
    CORRELATION_ID.try_with(Clone::clone).unwrap_or_default()
}

/// What a handler knows about the request it serves.
#[derive(Debug, Clone)]
pub struct RequestContext {
    pub correlation_id: String,
    /// A fresh id for this request: the `causationId` of the events it records.
    pub request_id: String,
    /// `X-User-ID`, when the caller (a gateway) says who it is.
    pub user_id: Option<String>,
    /// The request span's `traceparent` (or the caller's, when traces are not exported): the
    /// events the request records carry it.
    pub traceparent: Option<String>,
}

/// The header names and metrics the middleware uses.
#[derive(Debug, Clone)]
pub struct Observe {
    pub correlation_header: HeaderName,
    pub metrics: Arc<HttpMetrics>,
}

/// Accepts a client's id only when it is short, visible ASCII; otherwise a new one is made.
fn usable(value: &HeaderValue) -> Option<String> {
    let s = value.to_str().ok()?.trim();
    let ok = !s.is_empty() && s.len() <= 128 && s.bytes().all(|b| b.is_ascii_graphic());
    ok.then(|| s.to_owned())
}

pub async fn observe(State(observe): State<Observe>, mut req: Request, next: Next) -> Response {
    let started = Instant::now();
    let correlation_id = req
        .headers()
        .get(&observe.correlation_header)
        .and_then(usable)
        .unwrap_or_else(|| uuid::Uuid::now_v7().to_string());
    let user_id = req.headers().get("x-user-id").and_then(usable);
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let method = req.method().clone();
    // Probes and scrapes are logged, not traced: one trace every few seconds per pod says
    // nothing.
    let span = if route.starts_with("/health/") || route == "/metrics" {
        tracing::info_span!(
            target: crate::trace::LOG_ONLY,
            "request",
            service = observe.metrics.service(),
            method = %method,
            route = %route,
            correlationId = %correlation_id,
            status = tracing::field::Empty,
        )
    } else {
        tracing::info_span!(
            "request",
            otel.name = %format!("{method} {route}"),
            otel.kind = "server",
            otel.status_code = tracing::field::Empty,
            service = observe.metrics.service(),
            method = %method,
            route = %route,
            correlationId = %correlation_id,
            status = tracing::field::Empty,
        )
    };
    let caller_trace = req
        .headers()
        .get(crate::bus::headers::TRACEPARENT)
        .and_then(|v| v.to_str().ok())
        .map(str::trim);
    let traceparent = crate::trace::continue_from(&span, caller_trace);
    req.extensions_mut().insert(RequestContext {
        correlation_id: correlation_id.clone(),
        request_id: uuid::Uuid::now_v7().to_string(),
        user_id,
        traceparent,
    });
    let mut response = CORRELATION_ID
        .scope(
            correlation_id.clone(),
            next.run(req).instrument(span.clone()),
        )
        .await;
    if let Ok(value) = HeaderValue::from_str(&correlation_id) {
        response
            .headers_mut()
            .insert(observe.correlation_header.clone(), value);
    }
    let status = response.status();
    let elapsed = started.elapsed();
    observe
        .metrics
        .observe(method.as_str(), &route, status.as_u16(), elapsed);
    span.record("status", status.as_u16());
    if status.is_server_error() {
        span.record("otel.status_code", "ERROR");
    }
    span.in_scope(|| {
        tracing::info!(
            status = status.as_u16(),
            latencyMs = elapsed.as_secs_f64() * 1000.0,
            "request served"
        );
    });
    response
}
