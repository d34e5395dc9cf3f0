//! The all-in-one: the four services in one process on the embedded backends, state under one
//! data directory (locked, so two processes never share it).

pub mod bench;

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use axum::http::HeaderName;
use sagaflow_audit::AuditService;
use sagaflow_complaint::{ComplaintService, SagaSettings, Storage};
use sagaflow_event_store::EventStoreService;
use sagaflow_notification::NotificationService;
use sagaflow_notification::mailer::Mailer;
use sagaflow_notification::mailer::mailbox::Mailbox;
use sagaflow_notification::store::Addressing;
use sagaflow_runtime::config::DatabaseUrl;
use sagaflow_runtime::consumer::RetryPolicy;
use sagaflow_runtime::pipeline::Pipeline;
use tokio::task::JoinHandle;

/// The four ports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ports {
    pub complaint: u16,
    pub notification: u16,
    pub audit: u16,
    pub event_store: u16,
}

impl Default for Ports {
    fn default() -> Self {
        Self {
            complaint: 3005,
            notification: 3006,
            audit: 3007,
            event_store: 3008,
        }
    }
}

/// Everything the all-in-one can be told.
#[derive(Clone)]
pub struct Config {
    pub data_dir: PathBuf,
    pub host: IpAddr,
    pub ports: Ports,
    /// `DATABASE_URL`: `sqlite://…` for the complaint service instead of its embedded files, or
    /// `postgres://…` for the complaint, notification and audit services (a schema each).
    pub database: Option<DatabaseUrl>,
    /// `RABBITMQ_URL` and `REDIS_URL`: the real pipeline instead of the embedded one.
    pub rabbitmq_url: Option<String>,
    pub redis_url: Option<String>,
    /// `MONGODB_URL`: the event store's archive.
    pub mongodb_url: Option<String>,
    /// `SMTP_URL`: the mail relay instead of the mailbox.
    pub smtp_url: Option<String>,
    /// `STREAM_PREFIX`: put before every stream key (deployments sharing one Redis).
    pub stream_prefix: String,
    /// `TOPOLOGY`: `declare` (the default) declares the RabbitMQ topology at start; `external`
    /// leaves it to an EventPipeline.
    pub declare_topology: bool,
    pub correlation_header: HeaderName,
    pub retry: RetryPolicy,
    pub saga: SagaSettings,
    pub addressing: Addressing,
    pub stream_max_len: u64,
    /// How long a stream entry stays pending before another consumer takes it over.
    pub reclaim_after: Duration,
    /// `CONSUMER_NAME`: this process's name in the event store's consumer group (each replica
    /// needs its own; the operator gives each pod its name).
    pub consumer_name: String,
    /// The mailer; the mailbox under the data directory when `None`.
    pub mailer: Option<Arc<dyn Mailer>>,
    /// Run only this service (its name, e.g. `audit-service`); all four when `None`.
    pub only: Option<&'static str>,
    /// `NOTIFICATION_SERVICE_URL`, `AUDIT_SERVICE_URL`, `EVENT_STORE_SERVICE_URL`: where the
    /// console (on the complaint service) reaches the services that do not run in this process.
    pub peers: sagaflow_complaint::console::Peers,
    /// Benchmarking only: record commands without relaying the outbox (`--relays-paused`).
    pub relays_paused: bool,
}

impl Config {
    pub fn new(data_dir: PathBuf) -> Self {
        Self {
            data_dir,
            host: IpAddr::from([127, 0, 0, 1]),
            ports: Ports::default(),
            database: None,
            rabbitmq_url: None,
            redis_url: None,
            mongodb_url: None,
            smtp_url: None,
            stream_prefix: String::new(),
            declare_topology: true,
            correlation_header: HeaderName::from_static("x-correlation-id"),
            retry: RetryPolicy::default(),
            saga: SagaSettings::default(),
            addressing: Addressing {
                email_domain: "example.com".into(),
                admin_email: "admin@example.com".into(),
                from: "sagaflow@example.com".into(),
            },
            stream_max_len: 1_000_000,
            reclaim_after: Duration::from_secs(30),
            consumer_name: "event-store-1".into(),
            mailer: None,
            only: None,
            peers: Default::default(),
            relays_paused: false,
        }
    }

    pub fn mailbox_dir(&self) -> PathBuf {
        self.data_dir.join("mailbox")
    }
}

/// A service that runs.
enum Running {
    Complaint(ComplaintService),
    Notification(NotificationService),
    Audit(AuditService),
    EventStore(EventStoreService),
}

impl Running {
    async fn close(self) {
        match self {
            Running::Complaint(s) => s.close().await,
            Running::Notification(s) => s.close().await,
            Running::Audit(s) => s.close().await,
            Running::EventStore(s) => s.close().await,
        }
    }
}

/// The running system. An address is `None` for a service not started.
pub struct AllInOne {
    pub complaint: Option<SocketAddr>,
    pub notification: Option<SocketAddr>,
    pub audit: Option<SocketAddr>,
    pub event_store: Option<SocketAddr>,
    pub pipeline: Pipeline,
    stop: tokio::sync::watch::Sender<bool>,
    servers: Vec<JoinHandle<()>>,
    services: Vec<Running>,
    closers: Option<(
        sagaflow_runtime::bus::sqlite::SqliteBus,
        sagaflow_runtime::streams::sqlite::SqliteStreams,
    )>,
    _lock: Option<std::fs::File>,
}

/// Locks the data directory for this process.
fn lock(dir: &std::path::Path) -> anyhow::Result<std::fs::File> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let path = dir.join(".lock");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .with_context(|| format!("opening {}", path.display()))?;
    file.try_lock()
        .map_err(|_| anyhow::anyhow!("another sagaflow process is using {}", dir.display()))?;
    Ok(file)
}

async fn serve(
    service: &'static str,
    listener: tokio::net::TcpListener,
    router: axum::Router,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    // "listening" means answering: the service behind it is open.
    if let Ok(addr) = listener.local_addr() {
        tracing::info!(service, addr = %addr, "listening");
    }
    let shutdown = async move {
        let _ = stop.wait_for(|s| *s).await;
    };
    if let Err(e) = axum::serve(listener, router)
        .with_graceful_shutdown(shutdown)
        .await
    {
        tracing::error!(error = %e, "serving HTTP");
    }
}

async fn bind(
    host: IpAddr,
    port: u16,
    service: &str,
) -> anyhow::Result<(tokio::net::TcpListener, SocketAddr)> {
    let addr = SocketAddr::new(host, port);
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("{service}: listening on {addr}"))?;
    let bound = listener.local_addr().context("reading the bound address")?;
    Ok((listener, bound))
}

/// The address to reach a listener at: loopback for one bound to every interface.
fn reachable(addr: SocketAddr) -> SocketAddr {
    match addr.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => SocketAddr::from(([127, 0, 0, 1], addr.port())),
        IpAddr::V6(ip) if ip.is_unspecified() => {
            SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, addr.port()))
        }
        _ => addr,
    }
}

impl AllInOne {
    pub async fn start(config: Config) -> anyhow::Result<Self> {
        let dir = &config.data_dir;
        let postgres = match &config.database {
            Some(DatabaseUrl::Postgres(url)) => Some(url.as_str()),
            _ => None,
        };
        let real_pipeline = config
            .rabbitmq_url
            .as_deref()
            .zip(config.redis_url.as_deref());
        // Anything embedded keeps its state under the data directory, which one process owns.
        let embedded = real_pipeline.is_none()
            || postgres.is_none()
            || config.mongodb_url.is_none()
            || config.smtp_url.is_none();
        let lock = if embedded { Some(lock(dir)?) } else { None };
        let (mut pipeline, closers) = match real_pipeline {
            Some((rabbitmq, redis)) => (
                Pipeline::real(
                    rabbitmq,
                    redis,
                    &config.stream_prefix,
                    config.retry,
                    config.declare_topology,
                )
                .await
                .map_err(|e| anyhow::anyhow!(e))?,
                None,
            ),
            None => {
                let (p, bus, streams) = Pipeline::embedded(dir, config.retry)
                    .await
                    .map_err(|e| anyhow::anyhow!(e))?;
                (p, Some((bus, streams)))
            }
        };
        pipeline.stream_max_len = Some(config.stream_max_len);
        pipeline.relays_paused = config.relays_paused;
        let storage = match &config.database {
            Some(DatabaseUrl::Sqlite(url)) => Storage::SqliteUrl(url.clone()),
            Some(DatabaseUrl::Postgres(url)) => Storage::Postgres(url.clone()),
            None => Storage::DataDir(dir.clone()),
        };
        let want = |service: &str| config.only.is_none_or(|o| o == service);
        let h = config.correlation_header.clone();
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let mut servers = Vec::new();
        let mut services = Vec::new();
        // Every listener first, so that the console knows where each service answers.
        let mut listeners = [None, None, None, None];
        for (i, (service, port)) in [
            (sagaflow_complaint::SERVICE, config.ports.complaint),
            (sagaflow_notification::SERVICE, config.ports.notification),
            (sagaflow_audit::SERVICE, config.ports.audit),
            (sagaflow_event_store::SERVICE, config.ports.event_store),
        ]
        .into_iter()
        .enumerate()
        {
            if want(service) {
                listeners[i] = Some(bind(config.host, port, service).await?);
            }
        }
        let addrs = listeners
            .each_ref()
            .map(|l| l.as_ref().map(|(_, addr)| *addr));
        let local = |i: usize| addrs[i].map(|a: SocketAddr| format!("http://{}", reachable(a)));
        let peers = sagaflow_complaint::console::Peers {
            complaint: local(0),
            notification: local(1).or_else(|| config.peers.notification.clone()),
            audit: local(2).or_else(|| config.peers.audit.clone()),
            event_store: local(3).or_else(|| config.peers.event_store.clone()),
        };
        let [complaint_l, notification_l, audit_l, event_store_l] = listeners;
        if let Some((listener, _)) = complaint_l {
            let s = ComplaintService::open(&storage, pipeline.clone(), config.saga)
                .await
                .context("starting the complaint service")?;
            servers.push(tokio::spawn(serve(
                sagaflow_complaint::SERVICE,
                listener,
                s.router_with(h.clone(), peers),
                stopped.clone(),
            )));
            services.push(Running::Complaint(s));
        }
        if let Some((listener, _)) = notification_l {
            let mailer: Arc<dyn Mailer> = match (&config.mailer, &config.smtp_url) {
                (Some(m), _) => m.clone(),
                (None, Some(url)) => Arc::new(sagaflow_notification::mailer::smtp::Smtp::new(url)?),
                (None, None) => Arc::new(
                    Mailbox::open(&config.mailbox_dir())
                        .with_context(|| format!("creating {}", config.mailbox_dir().display()))?,
                ),
            };
            let s = NotificationService::open(
                &dir.join("notification"),
                postgres,
                pipeline.clone(),
                mailer,
                config.addressing.clone(),
            )
            .await
            .context("starting the notification service")?;
            servers.push(tokio::spawn(serve(
                sagaflow_notification::SERVICE,
                listener,
                s.router(h.clone()),
                stopped.clone(),
            )));
            services.push(Running::Notification(s));
        }
        if let Some((listener, _)) = audit_l {
            let s = AuditService::open(&dir.join("audit"), postgres, pipeline.clone())
                .await
                .context("starting the audit service")?;
            servers.push(tokio::spawn(serve(
                sagaflow_audit::SERVICE,
                listener,
                s.router(h.clone()),
                stopped.clone(),
            )));
            services.push(Running::Audit(s));
        }
        if let Some((listener, _)) = event_store_l {
            let s = EventStoreService::open(
                &dir.join("event-store"),
                config.mongodb_url.as_deref(),
                pipeline.bus.clone(),
                pipeline.streams.clone(),
                &config.consumer_name,
                config.reclaim_after,
                config.retry.max_attempts,
            )
            .await
            .context("starting the event store")?;
            servers.push(tokio::spawn(serve(
                sagaflow_event_store::SERVICE,
                listener,
                s.router(h.clone()),
                stopped.clone(),
            )));
            services.push(Running::EventStore(s));
        }
        Ok(Self {
            complaint: addrs[0],
            notification: addrs[1],
            audit: addrs[2],
            event_store: addrs[3],
            pipeline,
            stop,
            servers,
            services,
            closers,
            _lock: lock,
        })
    }

    /// The complaint service's use cases, when it runs here.
    pub fn complaint_app(&self) -> Option<Arc<sagaflow_complaint::app::ComplaintApp>> {
        self.services.iter().find_map(|s| match s {
            Running::Complaint(c) => Some(c.app.clone()),
            _ => None,
        })
    }

    /// Stops accepting, drains in-flight requests, stops background work, closes the stores.
    pub async fn stop(mut self) {
        let _ = self.stop.send(true);
        for s in self.servers.drain(..) {
            let _ = s.await;
        }
        for s in self.services.drain(..) {
            s.close().await;
        }
        if let Some((bus, streams)) = self.closers.take() {
            bus.close().await;
            streams.close().await;
        }
    }
}

/// Reads the saga's settings from the environment into `config` (SPEC section 2 and the
/// additions in docs/configuration.md); each problem names its variable.
pub fn apply_env(
    config: &mut Config,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<(), sagaflow_runtime::config::ConfigError> {
    use sagaflow_runtime::config::{ConfigError, duration, var};
    let bad = |var: &'static str, problem: String| ConfigError { var, problem };
    if let Some(domain) = var(env, "NOTIFY_EMAIL_DOMAIN") {
        if domain.contains(['@', ' ']) {
            return Err(bad(
                "NOTIFY_EMAIL_DOMAIN",
                format!("expected a domain such as example.com, got {domain:?}"),
            ));
        }
        config.addressing.admin_email = format!("admin@{domain}");
        config.addressing.from = format!("sagaflow@{domain}");
        config.addressing.email_domain = domain;
    }
    if let Some(admin) = var(env, "NOTIFY_ADMIN_EMAIL") {
        if !admin.contains('@') || admin.contains(' ') {
            return Err(bad(
                "NOTIFY_ADMIN_EMAIL",
                format!("expected an e-mail address, got {admin:?}"),
            ));
        }
        config.addressing.admin_email = admin;
    }
    let url = |name: &'static str, schemes: &[&str]| {
        var(env, name)
            .map(|v| sagaflow_runtime::config::backend_url(name, &v, schemes))
            .transpose()
    };
    config.rabbitmq_url = url("RABBITMQ_URL", &["amqp", "amqps"])?;
    config.redis_url = url("REDIS_URL", &["redis", "rediss"])?;
    config.mongodb_url = url("MONGODB_URL", &["mongodb", "mongodb+srv"])?;
    config.smtp_url = url("SMTP_URL", &["smtp"])?;
    let peer = |name: &'static str| {
        url(name, &["http", "https"]).map(|u| u.map(|u| u.trim_end_matches('/').to_owned()))
    };
    config.peers.notification = peer("NOTIFICATION_SERVICE_URL")?;
    config.peers.audit = peer("AUDIT_SERVICE_URL")?;
    config.peers.event_store = peer("EVENT_STORE_SERVICE_URL")?;
    match (&config.rabbitmq_url, &config.redis_url) {
        (Some(_), None) => {
            return Err(bad(
                "REDIS_URL",
                "is required with RABBITMQ_URL (the pipeline needs both)".into(),
            ));
        }
        (None, Some(_)) => {
            return Err(bad(
                "RABBITMQ_URL",
                "is required with REDIS_URL (the pipeline needs both)".into(),
            ));
        }
        _ => {}
    }
    match var(env, "TOPOLOGY").as_deref() {
        None | Some("declare") => config.declare_topology = true,
        Some("external") => config.declare_topology = false,
        Some(other) => {
            return Err(bad(
                "TOPOLOGY",
                format!("expected declare or external, got {other:?}"),
            ));
        }
    }
    if let Some(name) = var(env, "CONSUMER_NAME") {
        if name.is_empty()
            || name.len() > 200
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_:.".contains(c))
        {
            return Err(bad(
                "CONSUMER_NAME",
                format!("1-200 letters, digits and -_:. only, got {name:?}"),
            ));
        }
        config.consumer_name = name;
    }
    if let Some(prefix) = var(env, "STREAM_PREFIX") {
        if !prefix
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_:.".contains(c))
        {
            return Err(bad(
                "STREAM_PREFIX",
                format!("letters, digits and -_:. only, got {prefix:?}"),
            ));
        }
        config.stream_prefix = prefix;
    }
    for (name, slot) in [
        ("DEADLINE_LOW", &mut config.saga.deadlines.low),
        ("DEADLINE_MEDIUM", &mut config.saga.deadlines.medium),
        ("DEADLINE_HIGH", &mut config.saga.deadlines.high),
        ("DEADLINE_CRITICAL", &mut config.saga.deadlines.critical),
        ("ESCALATION_INTERVAL", &mut config.saga.escalation_interval),
        ("RETRY_BASE_DELAY", &mut config.retry.base),
        ("RETRY_MAX_DELAY", &mut config.retry.cap),
        ("STREAM_RECLAIM_AFTER", &mut config.reclaim_after),
    ] {
        if let Some(v) = var(env, name) {
            let d = duration(name, &v)?;
            if d.is_zero() {
                return Err(bad(name, "must be more than zero".into()));
            }
            *slot = d;
        }
    }
    if let Some(v) = var(env, "RETRY_MAX_ATTEMPTS") {
        config.retry.max_attempts = v
            .trim()
            .parse()
            .ok()
            .filter(|n| (1..=100).contains(n))
            .ok_or_else(|| {
                bad(
                    "RETRY_MAX_ATTEMPTS",
                    format!("expected a number from 1 to 100, got {v:?}"),
                )
            })?;
    }
    if let Some(v) = var(env, "STREAM_MAX_LEN") {
        config.stream_max_len = v
            .trim()
            .parse()
            .ok()
            .filter(|n| *n >= 1000)
            .ok_or_else(|| {
                bad(
                    "STREAM_MAX_LEN",
                    format!("expected a number of at least 1000, got {v:?}"),
                )
            })?;
    }
    Ok(())
}
