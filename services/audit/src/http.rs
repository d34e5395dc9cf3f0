//! The audit service's HTTP API (SPEC section 7).

use std::sync::Arc;

use axum::extract::{RawQuery, State};
use axum::routing::get;
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use sagaflow_runtime::event_log::StoreError;
use sagaflow_runtime::http::query::{self, number, pairs};
use sagaflow_runtime::http::{ApiError, PathId};
use serde_json::{Value, json};

use crate::store::{AuditLog, Search};

pub fn routes(log: Arc<dyn AuditLog>) -> Router {
    Router::new()
        .route("/api/audit/trail/{aggregateId}", get(trail))
        .route("/api/audit/search", get(search))
        .route("/api/audit/events", get(events))
        .with_state(log)
}

fn store(e: StoreError) -> ApiError {
    match e {
        StoreError::Unavailable(e) => {
            tracing::warn!(error = %e, "the audit log is unavailable");
            ApiError::unavailable("the audit log is unavailable; retry later")
        }
        StoreError::Corrupt(e) => ApiError::internal(e),
    }
}

async fn trail(
    State(log): State<Arc<dyn AuditLog>>,
    PathId(id): PathId,
) -> Result<Json<Value>, ApiError> {
    let entries = log.trail(&id).await.map_err(store)?;
    Ok(Json(json!({ "aggregateId": id, "entries": entries })))
}

fn time(name: &str, value: &str) -> Result<DateTime<Utc>, ApiError> {
    DateTime::parse_from_rfc3339(value)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|_| {
            ApiError::invalid_field(
                name,
                format!("must be an RFC 3339 time such as 2026-01-15T10:30:00Z, got {value:?}"),
            )
        })
}

fn cursor(value: &str) -> Result<u64, ApiError> {
    value
        .parse()
        .map_err(|_| ApiError::invalid_field("cursor", "is not a cursor this API gave"))
}

const SEARCH_PARAMS: &str =
    "eventType, aggregateId, userId, correlationId, from, to, compensated, limit, cursor";

async fn search(
    State(log): State<Arc<dyn AuditLog>>,
    RawQuery(raw): RawQuery,
) -> Result<Json<Value>, ApiError> {
    let mut s = Search {
        limit: 50,
        ..Search::default()
    };
    for (name, value) in pairs(raw.as_deref())? {
        match name.as_str() {
            "eventType" => s.event_type = Some(value),
            "aggregateId" => s.aggregate_id = Some(value),
            "userId" => s.user_id = Some(value),
            "correlationId" => s.correlation_id = Some(value),
            "from" => s.from = Some(time("from", &value)?),
            "to" => s.to = Some(time("to", &value)?),
            "compensated" => {
                s.compensated = Some(match value.as_str() {
                    "true" => true,
                    "false" => false,
                    _ => {
                        return Err(ApiError::invalid_field(
                            "compensated",
                            "must be true or false",
                        ));
                    }
                })
            }
            "limit" => s.limit = u32::try_from(number("limit", &value, 1, 200)?).unwrap_or(200),
            "cursor" => s.after = cursor(&value)?,
            other => return Err(query::unknown(other, SEARCH_PARAMS)),
        }
    }
    let (items, next) = log.search(&s).await.map_err(store)?;
    Ok(Json(
        json!({ "items": items, "nextCursor": next.map(|n| n.to_string()) }),
    ))
}

async fn events(
    State(log): State<Arc<dyn AuditLog>>,
    RawQuery(raw): RawQuery,
) -> Result<Json<Value>, ApiError> {
    let mut s = Search {
        limit: 50,
        ..Search::default()
    };
    for (name, value) in pairs(raw.as_deref())? {
        match name.as_str() {
            "limit" => s.limit = u32::try_from(number("limit", &value, 1, 200)?).unwrap_or(200),
            "cursor" => s.after = cursor(&value)?,
            other => return Err(query::unknown(other, "limit, cursor")),
        }
    }
    let (items, next) = log.search(&s).await.map_err(store)?;
    Ok(Json(
        json!({ "items": items, "nextCursor": next.map(|n| n.to_string()) }),
    ))
}
