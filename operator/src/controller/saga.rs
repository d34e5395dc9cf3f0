//! The ComplaintSaga reconciler: applies each service's ConfigMap, Deployment and Service
//! (server-side apply, forced, so a hand edit of a field the operator sets is put back), and
//! reports each service's readiness from its Deployment. Deleting the ComplaintSaga removes them
//! through their owner references.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Service};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::{Resource, ResourceExt};
use serde_json::json;

use crate::conditions::{self, Verdict};
use crate::context::{Ctx, Failure, MANAGER};
use crate::crd::condition::{DEPLOYMENTS_READY, PIPELINE_READY, READY};
use crate::crd::pipeline::EventPipeline;
use crate::crd::saga::ComplaintSaga;
use crate::crd::{SagaStatus, ServiceStatus};
use crate::workloads;

pub const KIND: &str = "ComplaintSaga";
/// How often a saga is applied again even when nothing was watched changing.
pub const RESYNC: Duration = Duration::from_secs(300);
/// While a referenced object is missing, how often it is looked for again (its appearance is
/// also watched).
const MISSING_RETRY: Duration = Duration::from_secs(30);

pub fn key(s: &ComplaintSaga) -> String {
    format!(
        "{KIND}/{}/{}",
        s.namespace().unwrap_or_default(),
        s.name_any()
    )
}

pub async fn reconcile(s: Arc<ComplaintSaga>, ctx: Arc<Ctx>) -> Result<Action, Failure> {
    let ns = s
        .namespace()
        .ok_or_else(|| Failure::new("NotNamespaced", "a ComplaintSaga without a namespace"))?;
    let api: Api<ComplaintSaga> = Api::namespaced(ctx.client.clone(), &ns);
    if s.metadata.deletion_timestamp.is_some() {
        // The garbage collector removes what the saga owns.
        return Ok(Action::await_change());
    }
    let pipelines: Api<EventPipeline> = Api::namespaced(ctx.client.clone(), &ns);
    let pipeline = pipelines
        .get_opt(&s.spec.pipeline)
        .await
        .map_err(|e| Failure::kube("reading the EventPipeline", &e))?;
    let Some(pipeline) = pipeline else {
        let message = format!(
            "the EventPipeline {:?} does not exist in namespace {ns:?}",
            s.spec.pipeline
        );
        let verdicts = [
            Verdict::failed(PIPELINE_READY, "PipelineNotFound", message.clone()),
            Verdict::failed(READY, "PipelineNotFound", message),
        ];
        write_status(&api, &s, &ctx, &verdicts, None).await?;
        return Ok(Action::requeue(MISSING_RETRY));
    };

    // Every Secret the pods will read must be there, or they would never start.
    let p = &pipeline.spec;
    for (what, reference) in [
        ("spec.database", &s.spec.database),
        ("spec.mongodb", &s.spec.mongodb),
        ("spec.smtp", &s.spec.smtp),
        ("the pipeline's rabbitmq", &p.rabbitmq),
        ("the pipeline's redis", &p.redis),
    ] {
        if let Err(f) = ctx.check_secret(&ns, reference).await {
            if f.reason == "KubernetesApiError" {
                return Err(f);
            }
            let message = format!("{what}: {}", f.message);
            let verdicts = [Verdict::failed(READY, f.reason, message)];
            write_status(&api, &s, &ctx, &verdicts, None).await?;
            return Ok(Action::requeue(MISSING_RETRY));
        }
    }

    let owner = s
        .controller_owner_ref(&())
        .ok_or_else(|| Failure::new("NoUid", "the ComplaintSaga has no uid yet"))?;
    let params = PatchParams::apply(MANAGER).force();
    let configs: Api<ConfigMap> = Api::namespaced(ctx.client.clone(), &ns);
    let deployments: Api<Deployment> = Api::namespaced(ctx.client.clone(), &ns);
    let services: Api<Service> = Api::namespaced(ctx.client.clone(), &ns);
    let mut statuses = Vec::new();
    for w in workloads::workloads(&s.name_any(), &ns, &owner, &s.spec, p) {
        let name = workloads::object_name(&s.name_any(), w.kind.name);
        configs
            .patch(&name, &params, &Patch::Apply(&w.config))
            .await
            .map_err(|e| Failure::kube(&format!("applying the ConfigMap {name:?}"), &e))?;
        services
            .patch(&name, &params, &Patch::Apply(&w.service))
            .await
            .map_err(|e| Failure::kube(&format!("applying the Service {name:?}"), &e))?;
        let applied = deployments
            .patch(&name, &params, &Patch::Apply(&w.deployment))
            .await
            .map_err(|e| Failure::kube(&format!("applying the Deployment {name:?}"), &e))?;
        let replicas = applied.spec.as_ref().and_then(|d| d.replicas).unwrap_or(1);
        let st = applied.status.unwrap_or_default();
        let available = st.available_replicas.unwrap_or(0);
        let observed = st.observed_generation >= applied.metadata.generation;
        statuses.push(ServiceStatus {
            name: w.kind.name.to_owned(),
            deployment: name,
            replicas,
            ready_replicas: st.ready_replicas.unwrap_or(0),
            ready: observed
                && available >= replicas
                && st.updated_replicas.unwrap_or(0) >= replicas,
        });
    }
    let pipeline_ready = conditions::is_true(
        &pipeline.status.clone().unwrap_or_default().conditions,
        READY,
    );
    let waiting: Vec<&str> = statuses
        .iter()
        .filter(|x| !x.ready)
        .map(|x| x.name.as_str())
        .collect();
    let deployments_verdict = if waiting.is_empty() {
        Verdict::ok(DEPLOYMENTS_READY, "Available", "every service is available")
    } else {
        Verdict::failed(
            DEPLOYMENTS_READY,
            "DeploymentsNotAvailable",
            format!("waiting for {}", waiting.join(", ")),
        )
    };
    let pipeline_verdict = if pipeline_ready {
        Verdict::ok(
            PIPELINE_READY,
            "Ready",
            format!("EventPipeline {:?} is Ready", s.spec.pipeline),
        )
    } else {
        Verdict::failed(
            PIPELINE_READY,
            "PipelineNotReady",
            format!(
                "EventPipeline {:?} is not Ready (see its conditions)",
                s.spec.pipeline
            ),
        )
    };
    let ready = match (pipeline_verdict.ok, deployments_verdict.ok) {
        (true, true) => Verdict::ok(READY, "Available", "the saga's four services are available"),
        (false, _) => Verdict::failed(
            READY,
            &pipeline_verdict.reason,
            pipeline_verdict.message.clone(),
        ),
        (true, false) => Verdict::failed(
            READY,
            &deployments_verdict.reason,
            deployments_verdict.message.clone(),
        ),
    };
    write_status(
        &api,
        &s,
        &ctx,
        &[pipeline_verdict, deployments_verdict, ready],
        Some(statuses),
    )
    .await?;
    ctx.succeeded(&key(&s));
    Ok(Action::requeue(RESYNC))
}

async fn write_status(
    api: &Api<ComplaintSaga>,
    s: &ComplaintSaga,
    ctx: &Ctx,
    verdicts: &[Verdict],
    services: Option<Vec<ServiceStatus>>,
) -> Result<(), Failure> {
    let old = s.status.clone().unwrap_or_default();
    let now = Time(k8s_openapi::jiff::Timestamp::now());
    let services = services.unwrap_or(old.services.clone());
    let ready = services.iter().filter(|x| x.ready).count();
    let status = SagaStatus {
        observed_generation: s.metadata.generation,
        conditions: conditions::apply(&old.conditions, verdicts, s.metadata.generation, now),
        ready_services: Some(format!("{ready}/{}", workloads::SERVICES.len())),
        services,
    };
    if s.status.as_ref() == Some(&status) {
        return Ok(());
    }
    api.patch_status(
        &s.name_any(),
        &PatchParams::default(),
        &Patch::Merge(json!({ "status": status })),
    )
    .await
    .map_err(|e| Failure::kube("writing the ComplaintSaga's status", &e))?;
    let reference = s.object_ref(&());
    for v in verdicts.iter().filter(|v| v.type_ == READY) {
        let before = old.conditions.iter().find(|c| c.type_ == v.type_);
        if before.is_none_or(|c| (c.status == "True") != v.ok || c.reason != v.reason) {
            ctx.event(
                &reference,
                !v.ok && v.reason != "DeploymentsNotAvailable",
                &v.reason,
                v.message.clone(),
            )
            .await;
        }
    }
    Ok(())
}
