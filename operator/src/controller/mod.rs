//! The two controllers, run while this process leads.
//!
//! - [`pipeline`]: EventPipeline → RabbitMQ and Redis.
//! - [`saga`]: ComplaintSaga → a ConfigMap, a Deployment and a Service per service.
//!
//! Both watch what they depend on: a Secret or an EventPipeline that changes reconciles the
//! resources that reference it at once (a fixed password makes a pipeline Ready without waiting
//! for its backoff).

pub mod pipeline;
pub mod saga;

use std::future::Future;
use std::sync::Arc;

use futures::StreamExt;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Secret, Service};
use kube::api::Api;
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use kube::{Client, ResourceExt};

use crate::context::{Ctx, Failure};
use crate::crd::pipeline::EventPipeline;
use crate::crd::saga::ComplaintSaga;

fn api<K>(client: &Client, namespace: Option<&str>) -> Api<K>
where
    K: kube::Resource<Scope = kube::core::NamespaceResourceScope>,
    <K as kube::Resource>::DynamicType: Default,
{
    match namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    }
}

/// Runs a reconcile with its metrics.
async fn measured<F>(kind: &'static str, ctx: &Ctx, run: F) -> Result<Action, Failure>
where
    F: Future<Output = Result<Action, Failure>>,
{
    let timer = ctx
        .metrics
        .duration
        .with_label_values(&[kind])
        .start_timer();
    let result = run.await;
    timer.observe_duration();
    match &result {
        Ok(_) => ctx
            .metrics
            .reconciles
            .with_label_values(&[kind, "ok"])
            .inc(),
        Err(f) => {
            ctx.metrics
                .reconciles
                .with_label_values(&[kind, "error"])
                .inc();
            ctx.metrics
                .failures
                .with_label_values(&[kind, f.reason])
                .inc();
            tracing::warn!(kind, reason = f.reason, error = %f.message, "reconcile failed");
        }
    }
    result
}

/// Resolves once `true` is sent (or the sender is gone).
async fn stopped(mut stop: tokio::sync::watch::Receiver<bool>) {
    let _ = stop.wait_for(|v| *v).await;
}

/// Runs both controllers until `true` is sent on `stop`, then lets running reconciles finish.
pub async fn run(
    ctx: Arc<Ctx>,
    namespace: Option<String>,
    stop: tokio::sync::watch::Receiver<bool>,
) {
    let client = ctx.client.clone();
    let ns = namespace.as_deref();
    let config = watcher::Config::default();

    let pipelines = Controller::new(api::<EventPipeline>(&client, ns), config.clone());
    let pipeline_store = pipelines.store();
    let pipelines = pipelines
        .watches(api::<Secret>(&client, ns), config.clone(), move |secret| {
            let (name, ns) = (secret.name_any(), secret.namespace());
            pipeline_store
                .state()
                .into_iter()
                .filter(|p| {
                    p.namespace() == ns
                        && [
                            Some(&p.spec.rabbitmq),
                            Some(&p.spec.redis),
                            p.spec.rabbitmq_management.as_ref(),
                        ]
                        .into_iter()
                        .flatten()
                        .any(|r| r.name == name)
                })
                .map(|p| ObjectRef::from_obj(&*p))
                .collect::<Vec<_>>()
        })
        .graceful_shutdown_on(stopped(stop.clone()))
        .run(
            |p, ctx| async move {
                let c = ctx.clone();
                measured(pipeline::KIND, &c, pipeline::reconcile(p, ctx)).await
            },
            |p, _failure, ctx| ctx.backoff(&pipeline::key(&p)),
            ctx.clone(),
        )
        .for_each(|_| async {});

    let sagas = Controller::new(api::<ComplaintSaga>(&client, ns), config.clone());
    let by_pipeline = sagas.store();
    let by_secret = sagas.store();
    let sagas = sagas
        .owns(api::<Deployment>(&client, ns), config.clone())
        .owns(api::<Service>(&client, ns), config.clone())
        .owns(api::<ConfigMap>(&client, ns), config.clone())
        .watches(
            api::<EventPipeline>(&client, ns),
            config.clone(),
            move |p| {
                let (name, ns) = (p.name_any(), p.namespace());
                by_pipeline
                    .state()
                    .into_iter()
                    .filter(|s| s.namespace() == ns && s.spec.pipeline == name)
                    .map(|s| ObjectRef::from_obj(&*s))
                    .collect::<Vec<_>>()
            },
        )
        .watches(api::<Secret>(&client, ns), config, move |secret| {
            let (name, ns) = (secret.name_any(), secret.namespace());
            by_secret
                .state()
                .into_iter()
                .filter(|s| {
                    s.namespace() == ns
                        && [&s.spec.database, &s.spec.mongodb, &s.spec.smtp]
                            .iter()
                            .any(|r| r.name == name)
                })
                .map(|s| ObjectRef::from_obj(&*s))
                .collect::<Vec<_>>()
        })
        .graceful_shutdown_on(stopped(stop))
        .run(
            |s, ctx| async move {
                let c = ctx.clone();
                measured(saga::KIND, &c, saga::reconcile(s, ctx)).await
            },
            |s, _failure, ctx| ctx.backoff(&saga::key(&s)),
            ctx,
        )
        .for_each(|_| async {});

    futures::join!(pipelines, sagas);
}
