//! The complaint service (port 3005): the event-sourced complaint aggregate's commands, its
//! read model, and its HTTP API.
//!
//! - [`app`]: the use cases (create, commands with optimistic concurrency, queries).
//! - [`projector`]: folds the event log into the read model.
//! - [`read_model`]: the views port and its embedded adapter.
//! - [`saga`]: reactions to the notification and audit events (compensation, completion).
//! - [`http`]: routes and handlers.
//! - [`console`]: the web console at `/`, and the routes it reads the other services through.
//! - [`openapi`]: the OpenAPI document served at `/openapi.json`.

pub mod app;
pub mod console;
pub mod http;
pub mod openapi;
pub mod projector;
pub mod read_model;
pub mod saga;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::http::HeaderName;
use sagaflow_runtime::event_log::sqlite::SqliteEventLog;
use sagaflow_runtime::event_log::{EventLog, StoreError};
use sagaflow_runtime::http::health::{HealthState, ReadinessCheck, check};
use sagaflow_runtime::metrics::Metrics;

use sagaflow_runtime::outbox::Outbox;
use sagaflow_runtime::pipeline::Pipeline;
use sagaflow_runtime::tasks::Tasks;

use crate::app::{ComplaintApp, Deadlines};
use crate::read_model::ComplaintViews;
use crate::read_model::sqlite::SqliteViews;

pub const SERVICE: &str = "complaint-service";
pub const DEFAULT_PORT: u16 = 3005;

/// Where the service keeps its state.
#[derive(Debug, Clone)]
pub enum Storage {
    /// The embedded default: files under this directory.
    DataDir(PathBuf),
    /// `DATABASE_URL` (`sqlite://…`): events, outbox and views in that one database.
    SqliteUrl(String),
    /// `DATABASE_URL` (`postgres://…`): the schema `complaint` of that database.
    Postgres(String),
}

/// The stores the service opened, to close them.
enum Stores {
    Sqlite(SqliteEventLog, SqliteViews),
    Postgres(
        sagaflow_runtime::event_log::postgres::PostgresEventLog,
        sqlx::PgPool,
    ),
}

impl Stores {
    async fn close(&self) {
        match self {
            Stores::Sqlite(log, views) => {
                log.close().await;
                views.close().await;
            }
            Stores::Postgres(log, views) => {
                log.close().await;
                views.close().await;
            }
        }
    }
}

/// The PostgreSQL schema of the complaint service.
pub const SCHEMA: &str = "complaint";

/// The running service's parts.
pub const EXCHANGE: &str = "complaints.events";

/// The saga's timing.
#[derive(Debug, Clone, Copy)]
pub struct SagaSettings {
    pub deadlines: Deadlines,
    /// How often complaints past their deadline are looked for.
    pub escalation_interval: Duration,
}

impl Default for SagaSettings {
    fn default() -> Self {
        Self {
            deadlines: Deadlines::default(),
            escalation_interval: Duration::from_secs(5),
        }
    }
}

pub struct ComplaintService {
    pub app: Arc<ComplaintApp>,
    pub metrics: Metrics,
    stores: Stores,
    pipeline: Pipeline,
    tasks: Tasks,
}

impl ComplaintService {
    /// Opens the stores, brings the read model up to date, and keeps it so in the background.
    pub async fn open(
        storage: &Storage,
        pipeline: Pipeline,
        saga: SagaSettings,
    ) -> Result<Self, StoreError> {
        let metrics = Metrics::new(SERVICE)
            .map_err(|e| StoreError::Unavailable(format!("registering metrics: {e}")))?;
        type Opened = (
            Arc<dyn EventLog>,
            Arc<dyn ComplaintViews>,
            Arc<dyn Outbox>,
            Stores,
        );
        let (log, views, outbox, stores): Opened = match storage {
            Storage::DataDir(dir) => {
                let dir = dir.join("complaint");
                std::fs::create_dir_all(&dir).map_err(|e| {
                    StoreError::Unavailable(format!("creating {}: {e}", dir.display()))
                })?;
                let log = SqliteEventLog::open(&dir.join("events.db")).await?;
                let views = SqliteViews::open(&dir.join("views.db")).await?;
                (
                    Arc::new(log.clone()),
                    Arc::new(views.clone()),
                    Arc::new(log.outbox()),
                    Stores::Sqlite(log, views),
                )
            }
            Storage::SqliteUrl(url) => {
                let log = SqliteEventLog::open_url(url).await?;
                let path = url
                    .trim_start_matches("sqlite://")
                    .split('?')
                    .next()
                    .unwrap_or_default();
                let views = SqliteViews::open(std::path::Path::new(path)).await?;
                (
                    Arc::new(log.clone()),
                    Arc::new(views.clone()),
                    Arc::new(log.outbox()),
                    Stores::Sqlite(log, views),
                )
            }
            Storage::Postgres(url) => {
                let log =
                    sagaflow_runtime::event_log::postgres::PostgresEventLog::open(url, SCHEMA)
                        .await?;
                let pool = sagaflow_runtime::postgres::open(
                    url,
                    SCHEMA,
                    read_model::postgres::MIGRATIONS,
                    8,
                )
                .await
                .map_err(|e| {
                    StoreError::Unavailable(format!(
                        "connecting to PostgreSQL: {}",
                        sagaflow_runtime::config::redact(&e.to_string())
                    ))
                })?;
                let views = read_model::postgres::PgViews::new(pool.clone());
                (
                    Arc::new(log.clone()),
                    Arc::new(views),
                    Arc::new(log.outbox()),
                    Stores::Postgres(log, pool),
                )
            }
        };
        // Commands that arrive together share one commit (group commit: same durability). The
        // embedded log's writer thread groups every write of its file already.
        let log: Arc<dyn EventLog> = match &stores {
            Stores::Postgres(..) => {
                Arc::new(sagaflow_runtime::event_log::group::GroupCommit::new(log))
            }
            Stores::Sqlite(..) => log,
        };
        let app = Arc::new(ComplaintApp::new(log, views, metrics.clone()));
        // Another replica may be projecting the same events at the same moment; a transient
        // failure (a serialisation conflict, the database restarting) is retried, not fatal.
        let started = std::time::Instant::now();
        let mut delay = Duration::from_millis(100);
        let caught = loop {
            match app.projector().catch_up().await {
                Ok(n) => break n,
                Err(StoreError::Unavailable(e)) if started.elapsed() < Duration::from_secs(30) => {
                    tracing::warn!(error = %e, "bringing the read model up to date; retrying");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(2));
                }
                Err(e) => return Err(e),
            }
        };
        tracing::info!(events = caught, "read model up to date");
        let mut tasks = Tasks::default();
        let projector = app.projector();
        let appended = app.appended();
        // Commands answer without waiting for their views: this task projects what they
        // append as soon as they append it (appends made during a round share the next one),
        // and every second what other replicas appended.
        tasks.spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            loop {
                tokio::select! {
                    _ = tick.tick() => {}
                    _ = appended.notified() => {}
                }
                if let Err(e) = projector.catch_up().await {
                    tracing::warn!(error = %e, "projecting complaint views");
                }
            }
        });
        app.set_relay(pipeline.start_relay(&mut tasks, outbox, &metrics));
        pipeline.start_consumers(
            &mut tasks,
            SERVICE,
            Arc::new(saga::Reactions { app: app.clone() }),
            &metrics,
        );
        pipeline.watch_dlq(&mut tasks, EXCHANGE, &metrics);
        let escalating = app.clone();
        tasks.spawn(async move {
            let mut tick = tokio::time::interval(saga.escalation_interval);
            loop {
                tick.tick().await;
                match escalating.escalate_due(&saga.deadlines).await {
                    Ok(0) => {}
                    Ok(n) => tracing::info!(escalated = n, "complaints escalated"),
                    Err(e) => tracing::warn!(error = %e, "escalating complaints"),
                }
            }
        });
        Ok(Self {
            app,
            metrics,
            stores,
            pipeline,
            tasks,
        })
    }

    /// The whole HTTP API, with health, metrics and the OpenAPI document; the console knows
    /// no other service.
    pub fn router(&self, correlation_header: HeaderName) -> Router {
        self.router_with(correlation_header, console::Peers::default())
    }

    /// The whole HTTP API, the console reaching the other services at `peers`.
    pub fn router_with(&self, correlation_header: HeaderName, peers: console::Peers) -> Router {
        let mut checks: Vec<Arc<dyn ReadinessCheck>> = vec![
            check("event-log", {
                let log = self.app.log();
                move || {
                    let log = log.clone();
                    async move { log.ping().await }
                }
            }),
            check("read-model", {
                let views = self.app.views();
                move || {
                    let views = views.clone();
                    async move { views.ping().await }
                }
            }),
        ];
        checks.extend(self.pipeline.checks());
        let health = HealthState {
            checks: Arc::new(checks),
            metrics: self.metrics.clone(),
        };
        let router = http::routes(self.app.clone())
            .merge(sagaflow_runtime::http::dlq::routes(
                self.pipeline.bus.clone(),
                EXCHANGE,
            ))
            .merge(sagaflow_runtime::http::health::routes(health))
            .merge(openapi::routes())
            .merge(console::routes(
                self.app.clone(),
                peers,
                correlation_header.clone(),
            ));
        sagaflow_runtime::http::finish(router, correlation_header, &self.metrics)
    }

    /// Stops the background work and closes the stores.
    pub async fn close(mut self) {
        self.tasks.stop().await;
        self.stores.close().await;
    }
}
