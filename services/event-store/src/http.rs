//! The event store's HTTP API (SPEC section 7).

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::{RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use sagaflow_domain::{AggregateType, ComplaintProjection, Envelope, fold};
use sagaflow_runtime::bus::{Message, MessageBus, headers};
use sagaflow_runtime::event_log::StoreError;
use sagaflow_runtime::http::query::{self, number, pairs};
use sagaflow_runtime::http::{ApiError, PathId};
use serde_json::json;

use crate::archive::Archive;

#[derive(Clone)]
struct Api {
    archive: Arc<dyn Archive>,
    bus: Arc<dyn MessageBus>,
}

pub fn routes(archive: Arc<dyn Archive>, bus: Arc<dyn MessageBus>) -> Router {
    Router::new()
        .route("/api/events/stream/{streamId}", get(stream))
        .route("/api/events/all", get(all))
        .route("/api/events/replay/{streamId}", post(replay))
        .route("/api/events/state/{aggregateId}", get(state))
        .with_state(Api { archive, bus })
}

fn store(e: StoreError) -> ApiError {
    match e {
        StoreError::Unavailable(e) => {
            tracing::warn!(error = %e, "the archive is unavailable");
            ApiError::unavailable("the archive is unavailable; retry later")
        }
        StoreError::Corrupt(e) => ApiError::internal(e),
    }
}

async fn stream(
    State(api): State<Api>,
    PathId(id): PathId,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    let mut from = 1;
    for (name, value) in pairs(raw.as_deref())? {
        match name.as_str() {
            "fromVersion" => from = number("fromVersion", &value, 1, i64::MAX as u64)?,
            other => return Err(query::unknown(other, "fromVersion")),
        }
    }
    let events = api.archive.stream(&id, from).await.map_err(store)?;
    Ok(Json(json!({ "streamId": id, "fromVersion": from, "events": events })).into_response())
}

async fn all(State(api): State<Api>, RawQuery(raw): RawQuery) -> Result<Response, ApiError> {
    let (mut after, mut limit) = (0, 100);
    for (name, value) in pairs(raw.as_deref())? {
        match name.as_str() {
            "after" => after = number("after", &value, 0, i64::MAX as u64)?,
            "limit" => limit = number("limit", &value, 1, 1000)?,
            other => return Err(query::unknown(other, "after, limit")),
        }
    }
    let events = api
        .archive
        .all(after, usize::try_from(limit).unwrap_or(1000))
        .await
        .map_err(store)?;
    let next = events.last().map(|p| p.position);
    let items: Vec<_> = events
        .into_iter()
        .map(|p| {
            json!({
                "position": p.position,
                "archivedAt": sagaflow_domain::time::format(&p.archived_at),
                "event": p.envelope,
            })
        })
        .collect();
    Ok(Json(json!({ "events": items, "nextAfter": next })).into_response())
}

/// Re-publishes a stream's events, marked as replays: projections that reset their inbox
/// rebuild from them; every other consumer sees ids it applied already and does nothing.
async fn replay(State(api): State<Api>, PathId(id): PathId) -> Result<Response, ApiError> {
    let events = api.archive.stream(&id, 1).await.map_err(store)?;
    if events.is_empty() {
        return Err(ApiError::not_found(format!("no events in stream {id}")));
    }
    for e in &events {
        let Some(aggregate) = e.aggregate() else {
            continue;
        };
        let message = Message {
            message_id: e.event_id.clone(),
            exchange: aggregate.exchange().to_owned(),
            routing_key: e.routing_key(),
            ordering_key: Some(e.aggregate_id.clone()),
            headers: BTreeMap::from([
                (
                    headers::CORRELATION_ID.to_owned(),
                    e.metadata.correlation_id.clone(),
                ),
                (headers::REPLAY.to_owned(), "true".to_owned()),
            ]),
            body: e.to_json(),
        };
        api.bus.publish(&message).await.map_err(|e| {
            tracing::warn!(error = %e, "replaying");
            ApiError::unavailable("the message bus is unavailable; retry later")
        })?;
    }
    tracing::info!(streamId = %id, replayed = events.len(), "stream replayed");
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({ "streamId": id, "replayed": events.len() })),
    )
        .into_response())
}

/// Folds the archived stream with the domain's aggregate. A gap, a repeat or a refused
/// transition makes the answer `consistent: false` with the problem, never a guess.
async fn state(State(api): State<Api>, PathId(id): PathId) -> Result<Response, ApiError> {
    let events = api.archive.stream(&id, 1).await.map_err(store)?;
    let Some(first) = events.first() else {
        return Err(ApiError::not_found(format!("no events in stream {id}")));
    };
    let aggregate_type = first.aggregate_type.clone();
    let (consistent, problem, state) =
        rebuild(&events, first.aggregate() == Some(AggregateType::Complaint));
    let version = events.last().map_or(0, |e| e.metadata.version);
    Ok(Json(json!({
        "aggregateId": id,
        "aggregateType": aggregate_type,
        "version": version,
        "events": events.len(),
        "consistent": consistent,
        "problem": problem,
        "state": state,
    }))
    .into_response())
}

fn rebuild(events: &[Envelope], complaint: bool) -> (bool, Option<String>, serde_json::Value) {
    if complaint {
        if let Err(e) = fold(events) {
            return (false, Some(e.to_string()), serde_json::Value::Null);
        }
        let mut projection = ComplaintProjection::default();
        for e in events {
            if let Err(e) = projection.apply(e) {
                return (false, Some(e.to_string()), serde_json::Value::Null);
            }
        }
        let view = projection
            .view()
            .map(|v| serde_json::to_value(v).unwrap_or_default())
            .unwrap_or_default();
        return (true, None, view);
    }
    for (i, e) in events.iter().enumerate() {
        if e.metadata.version != i as u64 + 1 {
            let problem = format!(
                "event {} has version {}, expected {}: the stream has a gap or a repeat",
                e.event_id,
                e.metadata.version,
                i + 1
            );
            return (false, Some(problem), serde_json::Value::Null);
        }
    }
    (true, None, serde_json::Value::Null)
}
