//! What every service's HTTP side shares.
//!
//! - [`error`]: `ApiError`, the contract's JSON errors.
//! - [`body`]: the strict JSON body reader (415, 413, 400 naming the field).
//! - [`context`]: correlation id, request context, request metrics and logs.
//! - [`path`]: path parameters whose rejection is a JSON 400.
//! - [`health`]: liveness, readiness and `/metrics`.

pub mod body;
pub mod context;
pub mod dlq;
pub mod error;
pub mod health;
pub mod path;
pub mod query;

use axum::Router;
use axum::http::HeaderName;

pub use body::JsonObject;
pub use context::{Observe, RequestContext};
pub use error::ApiError;
pub use path::PathId;

use crate::metrics::Metrics;

/// `GET /openapi.json` serving a service's document.
pub fn openapi_route(document: &'static str) -> Router {
    Router::new().route(
        "/openapi.json",
        axum::routing::get(move || async move {
            (
                [(axum::http::header::CONTENT_TYPE, "application/json")],
                document,
            )
        }),
    )
}

/// Wraps a service's router with what every service has: JSON 404 and 405, the request
/// middleware (correlation id, span, metrics).
pub fn finish(router: Router, correlation_header: HeaderName, metrics: &Metrics) -> Router {
    router
        .fallback(|| async { ApiError::not_found("no such route") })
        .method_not_allowed_fallback(|| async { ApiError::method_not_allowed() })
        .layer(axum::middleware::from_fn_with_state(
            Observe {
                correlation_header,
                metrics: metrics.http.clone(),
            },
            context::observe,
        ))
}
