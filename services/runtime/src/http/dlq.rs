//! `GET /api/dlq/:exchange` and `POST /api/dlq/:exchange/redrive`, on the service that owns the
//! exchange.

use std::sync::Arc;

use axum::extract::State;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::json;

use super::error::ApiError;
use super::path::PathId;
use crate::bus::MessageBus;

#[derive(Clone)]
struct Dlq {
    bus: Arc<dyn MessageBus>,
    exchange: &'static str,
}

pub fn routes(bus: Arc<dyn MessageBus>, exchange: &'static str) -> Router {
    Router::new()
        .route("/api/dlq/{exchange}", get(list))
        .route("/api/dlq/{exchange}/redrive", post(redrive))
        .with_state(Dlq { bus, exchange })
}

fn owned(dlq: &Dlq, exchange: &str) -> Result<(), ApiError> {
    if exchange == dlq.exchange {
        Ok(())
    } else {
        Err(ApiError::not_found(format!(
            "this service owns the DLQ of {}, not of {exchange}",
            dlq.exchange
        )))
    }
}

fn unavailable(e: crate::bus::BusError) -> ApiError {
    tracing::warn!(error = %e, "the message bus is unavailable");
    ApiError::unavailable("the message bus is unavailable; retry later")
}

async fn list(
    State(dlq): State<Dlq>,
    PathId(exchange): PathId,
) -> Result<Json<serde_json::Value>, ApiError> {
    owned(&dlq, &exchange)?;
    let letters = dlq
        .bus
        .dead_letters(&exchange, 1000)
        .await
        .map_err(unavailable)?;
    let items: Vec<serde_json::Value> = letters
        .iter()
        .map(|d| {
            json!({
                "id": d.id,
                "queue": d.queue,
                "messageId": d.message.message_id,
                "routingKey": d.message.routing_key,
                "attempts": d.attempts,
                "lastError": d.last_error,
                "deadLetteredAt": chrono::DateTime::from_timestamp_millis(d.dead_at).map(|t| sagaflow_domain::time::format(&t)),
                "headers": d.message.headers,
                "body": d.message.body,
            })
        })
        .collect();
    Ok(Json(
        json!({ "exchange": exchange, "dlq": crate::bus::topology::dlq_name(&exchange), "items": items }),
    ))
}

async fn redrive(
    State(dlq): State<Dlq>,
    PathId(exchange): PathId,
) -> Result<Json<serde_json::Value>, ApiError> {
    owned(&dlq, &exchange)?;
    let n = dlq.bus.redrive(&exchange).await.map_err(unavailable)?;
    tracing::info!(exchange = %exchange, redriven = n, "dead letters redriven");
    Ok(Json(json!({ "exchange": exchange, "redriven": n })))
}
