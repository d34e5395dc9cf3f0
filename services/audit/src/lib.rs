//! The audit service (port 3007): every event of every aggregate recorded once, trails,
//! search, and compensation marks with their AUDIT_COMPENSATION event.
//!
//! - [`store`]: the audit log port and its embedded adapter.
//! - [`http`]: routes and handlers.

pub mod http;
pub mod store;

use std::sync::Arc;

use async_trait::async_trait;
use sagaflow_runtime::bus::topology::AUDIT_SERVICE;
use sagaflow_runtime::consumer::{Failure, Handler, Incoming};
use sagaflow_runtime::event_log::StoreError;
use sagaflow_runtime::http::health::{HealthState, check};
use sagaflow_runtime::metrics::Metrics;
use sagaflow_runtime::pipeline::Pipeline;
use sagaflow_runtime::tasks::Tasks;
use tokio::sync::Notify;

use crate::store::{AuditLog, Recorded, SqliteAudit};

pub const SERVICE: &str = AUDIT_SERVICE;
pub const DEFAULT_PORT: u16 = 3007;
pub const EXCHANGE: &str = "audit.events";

struct Recorder {
    log: Arc<dyn AuditLog>,
    relay: Arc<Notify>,
    metrics: Metrics,
}

#[async_trait]
impl Handler for Recorder {
    // The audit log keeps each envelope as published (`to_json`); the trace context only
    // reaches the AUDIT_COMPENSATION it may record.
    async fn handle(&self, incoming: &Incoming) -> Result<(), Failure> {
        let event = incoming.traced();
        let recorded = self.log.record(&event).await;
        self.settle(&event, recorded)
    }

    async fn handle_all(&self, batch: &[Incoming]) -> Vec<Result<(), Failure>> {
        let events: Vec<sagaflow_domain::Envelope> = batch.iter().map(Incoming::traced).collect();
        let recorded = self.log.record_all(&events).await;
        events
            .iter()
            .zip(recorded)
            .map(|(event, r)| self.settle(event, r))
            .collect()
    }
}

impl Recorder {
    fn settle(
        &self,
        event: &sagaflow_domain::Envelope,
        recorded: Result<Recorded, StoreError>,
    ) -> Result<(), Failure> {
        match recorded {
            Ok(Recorded::New { compensation }) => {
                if let Some(event) = compensation {
                    self.metrics.event_published(&event.event_type);
                    tracing::info!(failedEventId = %event.event_data["failedEventId"], "audit entries marked compensated");
                    self.relay.notify_one();
                }
                Ok(())
            }
            Ok(Recorded::Duplicate) => Ok(()),
            Ok(Recorded::TooEarly { expected }) => Err(Failure::Transient(format!(
                "waiting for version {expected} of {}",
                event.aggregate_id
            ))),
            Err(StoreError::Unavailable(e)) => Err(Failure::Transient(e)),
            Err(StoreError::Corrupt(e)) => Err(Failure::Business(e)),
        }
    }
}

enum Stores {
    Sqlite(SqliteAudit),
    Postgres(store::postgres::PgAudit),
}

pub struct AuditService {
    pub log: Arc<dyn AuditLog>,
    pub metrics: Metrics,
    stores: Stores,
    pipeline: Pipeline,
    tasks: Tasks,
}

impl AuditService {
    /// Opens the audit log: on PostgreSQL (schema `audit`) when `database_url` is given, else
    /// under `dir`; then starts the relay and the consumers.
    pub async fn open(
        dir: &std::path::Path,
        database_url: Option<&str>,
        pipeline: Pipeline,
    ) -> Result<Self, StoreError> {
        let metrics = Metrics::new(SERVICE)
            .map_err(|e| StoreError::Unavailable(format!("registering metrics: {e}")))?;
        let (log, outbox, stores): (
            Arc<dyn AuditLog>,
            Arc<dyn sagaflow_runtime::outbox::Outbox>,
            Stores,
        ) = match database_url {
            Some(url) => {
                let pg = store::postgres::PgAudit::open(url, "audit").await?;
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
                let sqlite = SqliteAudit::open(&dir.join("audit.db")).await?;
                (
                    Arc::new(sqlite.clone()),
                    Arc::new(sqlite.outbox()),
                    Stores::Sqlite(sqlite),
                )
            }
        };
        let mut tasks = Tasks::default();
        let relay = pipeline.start_relay(&mut tasks, outbox, &metrics);
        let handler = Arc::new(Recorder {
            log: log.clone(),
            relay,
            metrics: metrics.clone(),
        });
        pipeline.start_consumers(&mut tasks, SERVICE, handler, &metrics);
        pipeline.watch_dlq(&mut tasks, EXCHANGE, &metrics);
        Ok(Self {
            log,
            metrics,
            stores,
            pipeline,
            tasks,
        })
    }

    pub fn router(&self, correlation_header: axum::http::HeaderName) -> axum::Router {
        let log = self.log.clone();
        let mut checks = vec![check("audit-log", move || {
            let l = log.clone();
            async move { l.ping().await }
        })];
        checks.extend(self.pipeline.checks());
        let health = HealthState {
            checks: Arc::new(checks),
            metrics: self.metrics.clone(),
        };
        let router = http::routes(self.log.clone())
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
