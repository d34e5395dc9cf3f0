//! `sagaflow-operator run`: health and metrics routes, leader election, the controllers, and a
//! graceful stop (running reconciles finish, the Lease is released so a standby takes over at
//! once).

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::Context as _;
use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use kube::Client;
use kube::runtime::events::{Recorder, Reporter};
use prometheus::{Encoder, TextEncoder};
use sagaflow_runtime::shutdown;

use crate::context::{Ctx, MANAGER, Metrics};
use crate::controller;
use crate::leader::Election;

/// How the operator runs.
#[derive(Clone, Debug)]
pub struct Settings {
    /// Only this namespace is watched; all namespaces when None.
    pub namespace: Option<String>,
    pub lease_namespace: String,
    pub lease_name: String,
    pub identity: String,
    pub lease_duration: Duration,
    pub host: IpAddr,
    pub port: u16,
}

#[derive(Clone)]
struct Web {
    metrics: Metrics,
    client: Client,
    started: Arc<AtomicBool>,
}

async fn live() -> &'static str {
    "ok"
}

/// Ready once the API server has answered; a standby is ready too (it is healthy, it waits).
async fn ready(State(web): State<Web>) -> impl IntoResponse {
    if web.started.load(Ordering::Relaxed) {
        return (StatusCode::OK, "ok".to_owned());
    }
    match web.client.apiserver_version().await {
        Ok(_) => {
            web.started.store(true, Ordering::Relaxed);
            (StatusCode::OK, "ok".to_owned())
        }
        Err(e) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("the Kubernetes API does not answer: {e}"),
        ),
    }
}

async fn render_metrics(State(web): State<Web>) -> impl IntoResponse {
    let mut out = Vec::new();
    match TextEncoder::new().encode(&web.metrics.registry.gather(), &mut out) {
        Ok(()) => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
            out,
        ),
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            [(header::CONTENT_TYPE, "text/plain")],
            e.to_string().into_bytes(),
        ),
    }
}

pub async fn run(settings: Settings) -> anyhow::Result<()> {
    let metrics = Metrics::new().context("registering the metrics")?;
    let client = Client::try_default()
        .await
        .context("connecting to the Kubernetes API (in-cluster, or KUBECONFIG)")?;
    let web = Web {
        metrics: metrics.clone(),
        client: client.clone(),
        started: Arc::new(AtomicBool::new(false)),
    };
    let app = Router::new()
        .route("/health/live", get(live))
        .route("/health/ready", get(ready))
        .route("/metrics", get(render_metrics))
        .with_state(web);
    let addr = SocketAddr::new(settings.host, settings.port);
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("listening on {addr}"))?;
    tracing::info!(address = %listener.local_addr().unwrap_or(addr), "health and metrics listening");
    let server = tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!(error = %e, "the health and metrics server stopped");
        }
    });

    let election = Election::new(
        client.clone(),
        &settings.lease_namespace,
        &settings.lease_name,
        &settings.identity,
        settings.lease_duration,
    );
    tracing::info!(lease = %settings.lease_name, namespace = %settings.lease_namespace, identity = %settings.identity, "waiting for the leader Lease");
    let signal = shutdown::signal();
    tokio::pin!(signal);
    tokio::select! {
        () = election.acquire() => {}
        () = &mut signal => {
            server.abort();
            return Ok(());
        }
    }
    metrics.leader.set(1);
    tracing::info!(identity = %settings.identity, watching = settings.namespace.as_deref().unwrap_or("all namespaces"), "leading: reconciling");

    let recorder = Recorder::new(
        client.clone(),
        Reporter {
            controller: MANAGER.into(),
            instance: Some(settings.identity.clone()),
        },
    );
    let ctx = Arc::new(Ctx::new(client, recorder, metrics.clone()));
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut controllers = tokio::spawn(controller::run(ctx, settings.namespace.clone(), stop_rx));
    let outcome = tokio::select! {
        lost = election.hold() => Err(anyhow::anyhow!("lost the leader Lease: {lost}")),
        () = &mut signal => Ok(()),
        done = &mut controllers => Err(anyhow::anyhow!("the controllers stopped by themselves: {done:?}")),
    };
    metrics.leader.set(0);
    if outcome.is_err() {
        // Someone else may lead now: not one more write.
        controllers.abort();
    } else {
        let _ = stop_tx.send(true);
        if tokio::time::timeout(Duration::from_secs(20), &mut controllers)
            .await
            .is_err()
        {
            tracing::warn!("reconciles did not finish within 20 s; stopping anyway");
            controllers.abort();
        }
    }
    if outcome.is_ok() {
        election.release().await;
        tracing::info!("stopped cleanly; the Lease is released");
    }
    server.abort();
    outcome
}
