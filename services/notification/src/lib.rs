//! The notification service (port 3006): the saga's mails (SPEC section 5), their history, and
//! their compensation.
//!
//! Consuming a complaint event only plans mails (committed with the inbox record); the sender
//! sends what is due and records each outcome with its NOTIFICATION_SENT or NOTIFICATION_FAILED.
//! So a compensation can still cancel what was not sent, and a crash never loses a mail.
//!
//! - [`store`]: the notification store port and its embedded adapter.
//! - [`mailer`]: the mailer port and the embedded mailbox.
//! - [`sender`]: sends due mails with retries.

pub mod mailer;
pub mod sender;
pub mod store;

use std::sync::Arc;

use async_trait::async_trait;
use axum::extract::{RawQuery, State};
use axum::routing::get;
use axum::{Json, Router};
use sagaflow_runtime::bus::topology::NOTIFICATION_SERVICE;
use sagaflow_runtime::consumer::{Failure, Handler, Incoming};
use sagaflow_runtime::event_log::StoreError;
use sagaflow_runtime::http::ApiError;
use sagaflow_runtime::http::health::{HealthState, check};
use sagaflow_runtime::http::query::{self, number, pairs};
use sagaflow_runtime::metrics::Metrics;
use sagaflow_runtime::pipeline::Pipeline;
use sagaflow_runtime::tasks::Tasks;
use tokio::sync::Notify;

use crate::mailer::Mailer;
use crate::store::{Addressing, NotificationStore, Planned, SqliteNotifications};

pub const SERVICE: &str = NOTIFICATION_SERVICE;
pub const DEFAULT_PORT: u16 = 3006;
pub const EXCHANGE: &str = "notifications.events";

struct Planner {
    store: Arc<dyn NotificationStore>,
    addressing: Addressing,
    sender: Arc<Notify>,
    relay: Arc<Notify>,
    metrics: Metrics,
}

#[async_trait]
impl Handler for Planner {
    async fn handle(&self, incoming: &Incoming) -> Result<(), Failure> {
        let event = incoming.traced();
        let planned = self.store.plan(&event, &self.addressing).await;
        self.settle(&event, planned)
    }

    async fn handle_all(&self, batch: &[Incoming]) -> Vec<Result<(), Failure>> {
        let events: Vec<sagaflow_domain::Envelope> = batch.iter().map(Incoming::traced).collect();
        let planned = self.store.plan_all(&events, &self.addressing).await;
        events
            .iter()
            .zip(planned)
            .map(|(event, p)| self.settle(event, p))
            .collect()
    }
}

impl Planner {
    fn settle(
        &self,
        event: &sagaflow_domain::Envelope,
        planned: Result<Planned, StoreError>,
    ) -> Result<(), Failure> {
        match planned {
            Ok(Planned::New { mails, events }) => {
                if mails > 0 {
                    self.sender.notify_one();
                }
                if events > 0 {
                    self.metrics.event_published("NOTIFICATION_COMPENSATION");
                    self.relay.notify_one();
                }
                Ok(())
            }
            Ok(Planned::Duplicate) => Ok(()),
            Ok(Planned::TooEarly { expected }) => Err(Failure::Transient(format!(
                "waiting for version {expected} of {}",
                event.aggregate_id
            ))),
            Ok(Planned::UnknownComplaint(id)) => Err(Failure::Business(format!(
                "complaint {id} was never created"
            ))),
            Err(StoreError::Unavailable(e)) => Err(Failure::Transient(e)),
            Err(StoreError::Corrupt(e)) => Err(Failure::Business(e)),
        }
    }
}

enum Stores {
    Sqlite(SqliteNotifications),
    Postgres(store::postgres::PgNotifications),
}

pub struct NotificationService {
    pub store: Arc<dyn NotificationStore>,
    pub metrics: Metrics,
    stores: Stores,
    pipeline: Pipeline,
    tasks: Tasks,
}

impl NotificationService {
    /// Opens the store: on PostgreSQL (schema `notification`) when `database_url` is given,
    /// else under `dir`; then starts the relay, the sender and the consumer.
    pub async fn open(
        dir: &std::path::Path,
        database_url: Option<&str>,
        pipeline: Pipeline,
        mailer: Arc<dyn Mailer>,
        addressing: Addressing,
    ) -> Result<Self, StoreError> {
        let metrics = Metrics::new(SERVICE)
            .map_err(|e| StoreError::Unavailable(format!("registering metrics: {e}")))?;
        let (store, outbox, stores): (
            Arc<dyn NotificationStore>,
            Arc<dyn sagaflow_runtime::outbox::Outbox>,
            Stores,
        ) = match database_url {
            Some(url) => {
                let pg = store::postgres::PgNotifications::open(url, "notification").await?;
                (
                    Arc::new(pg.clone()),
                    Arc::new(pg.outbox()),
                    Stores::Postgres(pg),
                )
            }
            None => {
                std::fs::create_dir_all(dir).map_err(|e| {
                    StoreError::Unavailable(format!("creating {}: {e}", dir.display()))
                })?;
                let sqlite = SqliteNotifications::open(&dir.join("notification.db")).await?;
                (
                    Arc::new(sqlite.clone()),
                    Arc::new(sqlite.outbox()),
                    Stores::Sqlite(sqlite),
                )
            }
        };
        let mut tasks = Tasks::default();
        let relay = pipeline.start_relay(&mut tasks, outbox, &metrics);
        let sender = Arc::new(sender::Sender {
            store: store.clone(),
            mailer,
            from: addressing.from.clone(),
            policy: pipeline.retry,
            relay: relay.clone(),
            wake: Arc::new(Notify::new()),
            metrics: metrics.clone(),
        });
        let handler = Arc::new(Planner {
            store: store.clone(),
            addressing,
            sender: sender.wake.clone(),
            relay,
            metrics: metrics.clone(),
        });
        tasks.spawn(sender.run(pipeline.relay_tick));
        pipeline.start_consumers(&mut tasks, SERVICE, handler, &metrics);
        pipeline.watch_dlq(&mut tasks, EXCHANGE, &metrics);
        Ok(Self {
            store,
            metrics,
            stores,
            pipeline,
            tasks,
        })
    }

    pub fn router(&self, correlation_header: axum::http::HeaderName) -> Router {
        let store = self.store.clone();
        let mut checks = vec![check("notification-store", move || {
            let s = store.clone();
            async move { s.ping().await }
        })];
        checks.extend(self.pipeline.checks());
        let health = HealthState {
            checks: Arc::new(checks),
            metrics: self.metrics.clone(),
        };
        let router = Router::new()
            .route("/api/notifications", get(history))
            .with_state(self.store.clone())
            .merge(sagaflow_runtime::http::dlq::routes(
                self.pipeline.bus.clone(),
                EXCHANGE,
            ))
            .merge(sagaflow_runtime::http::health::routes(health))
            .merge(sagaflow_runtime::http::openapi_route(include_str!(
                "../openapi.json"
            )));
        sagaflow_runtime::http::finish(router, correlation_header, &self.metrics)
    }

    pub async fn close(mut self) {
        self.tasks.stop().await;
        match &self.stores {
            Stores::Sqlite(s) => s.close().await,
            Stores::Postgres(p) => p.close().await,
        }
    }
}

async fn history(
    State(store): State<Arc<dyn NotificationStore>>,
    RawQuery(raw): RawQuery,
) -> Result<Json<serde_json::Value>, ApiError> {
    let (mut complaint, mut limit) = (None, 200);
    for (name, value) in pairs(raw.as_deref())? {
        match name.as_str() {
            "complaintId" => complaint = Some(value),
            "limit" => limit = u32::try_from(number("limit", &value, 1, 1000)?).unwrap_or(1000),
            other => return Err(query::unknown(other, "complaintId, limit")),
        }
    }
    let items = store
        .history(complaint.as_deref(), limit)
        .await
        .map_err(|e| match e {
            StoreError::Unavailable(e) => {
                tracing::warn!(error = %e, "the notification store is unavailable");
                ApiError::unavailable("the notification store is unavailable; retry later")
            }
            StoreError::Corrupt(e) => ApiError::internal(e),
        })?;
    Ok(Json(
        serde_json::json!({ "complaintId": complaint, "items": items }),
    ))
}
