//! `GET /openapi.json`: the OpenAPI 3 document of this service, kept beside the code and
//! checked against the router by the tests.

use axum::Router;
use axum::http::header;
use axum::routing::get;

/// The document, as committed in `openapi.json`.
pub const DOCUMENT: &str = include_str!("../openapi.json");

pub fn routes() -> Router {
    Router::new().route(
        "/openapi.json",
        get(|| async { ([(header::CONTENT_TYPE, "application/json")], DOCUMENT) }),
    )
}
