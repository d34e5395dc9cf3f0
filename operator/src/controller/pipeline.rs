//! The EventPipeline reconciler: declares the spec on RabbitMQ and Redis, removes what left it,
//! reports conditions, and on deletion honours `deletionPolicy`.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::finalizer::{Event as Finalizer, finalizer};
use kube::{Resource, ResourceExt};
use sagaflow_runtime::bus::topology::dlq_name;
use serde_json::json;

use crate::conditions::{self, Verdict};
use crate::context::{Ctx, Failure};
use crate::crd::condition::{RABBITMQ_READY, READY, REDIS_READY};
use crate::crd::pipeline::{DeletionPolicy, EventPipeline, EventPipelineSpec};
use crate::crd::{Declared, PipelineStatus};
use crate::desired::{self, POLICY_PREFIX};
use crate::rabbitmq::{Rabbit, RabbitError};
use crate::redis_streams::{RedisError, Streams};

/// Kept on every EventPipeline until its broker objects are dealt with.
pub const FINALIZER: &str = "sagaflow.dev/broker-objects";
/// How often a Ready pipeline is declared again (a queue deleted by hand comes back).
pub const RESYNC: Duration = Duration::from_secs(300);
pub const KIND: &str = "EventPipeline";

/// The queue arguments the services declare their queues with (they must match).
fn queue_arguments() -> serde_json::Value {
    json!({"x-single-active-consumer": true})
}

impl From<RabbitError> for Failure {
    fn from(e: RabbitError) -> Self {
        Failure::new(e.reason(), e.to_string())
    }
}

impl From<RedisError> for Failure {
    fn from(e: RedisError) -> Self {
        Failure::new(e.reason(), e.to_string())
    }
}

pub fn key(p: &EventPipeline) -> String {
    format!(
        "{KIND}/{}/{}",
        p.namespace().unwrap_or_default(),
        p.name_any()
    )
}

pub async fn reconcile(p: Arc<EventPipeline>, ctx: Arc<Ctx>) -> Result<Action, Failure> {
    let ns = p
        .namespace()
        .ok_or_else(|| Failure::new("NotNamespaced", "an EventPipeline without a namespace"))?;
    let api: Api<EventPipeline> = Api::namespaced(ctx.client.clone(), &ns);
    let key = key(&p);
    let outcome = finalizer(&api, FINALIZER, p, |event| async {
        match event {
            Finalizer::Apply(p) => apply(&api, &p, &ctx).await,
            Finalizer::Cleanup(p) => cleanup(&p, &ctx).await,
        }
    })
    .await
    .map_err(|e| match e {
        kube::runtime::finalizer::Error::ApplyFailed(f)
        | kube::runtime::finalizer::Error::CleanupFailed(f) => f,
        other => Failure::new("FinalizerFailed", other.to_string()),
    });
    if outcome.is_ok() {
        ctx.succeeded(&key);
    }
    outcome
}

/// What declaring on one broker gave.
struct Side {
    verdict: Verdict,
    failure: Option<Failure>,
}

impl Side {
    fn of(type_: &'static str, done: Result<String, Failure>) -> Self {
        match done {
            Ok(message) => Self {
                verdict: Verdict::ok(type_, "Declared", message),
                failure: None,
            },
            Err(f) => Self {
                verdict: Verdict::failed(type_, f.reason, f.message.clone()),
                failure: Some(f),
            },
        }
    }
}

async fn apply(api: &Api<EventPipeline>, p: &EventPipeline, ctx: &Ctx) -> Result<Action, Failure> {
    let ns = p.namespace().unwrap_or_default();
    let previous = p
        .status
        .as_ref()
        .and_then(|s| s.declared.clone())
        .unwrap_or_default();
    let problems = desired::problems(&p.spec);
    if !problems.is_empty() {
        let message = problems.join("; ");
        let verdicts = [
            Verdict::failed(READY, "InvalidSpec", message.clone()),
            Verdict::failed(
                RABBITMQ_READY,
                "InvalidSpec",
                "nothing declared: the spec is invalid",
            ),
            Verdict::failed(
                REDIS_READY,
                "InvalidSpec",
                "nothing declared: the spec is invalid",
            ),
        ];
        write_status(api, p, ctx, &verdicts, previous).await?;
        // A spec change is what fixes it: no retry until then.
        return Ok(Action::await_change());
    }

    let mut declared = previous.clone();
    let rabbit = Side::of(
        RABBITMQ_READY,
        declare_rabbitmq(ctx, &ns, &p.spec, &previous, &mut declared).await,
    );
    let redis = Side::of(
        REDIS_READY,
        declare_redis(ctx, &ns, &p.spec, &previous, &mut declared).await,
    );
    let ready = match (&rabbit.failure, &redis.failure) {
        (None, None) => Verdict::ok(
            READY,
            "Declared",
            format!(
                "{} exchanges, {} queues and {} streams declared",
                p.spec.exchanges.len(),
                p.spec.queues.len(),
                p.spec.streams.len()
            ),
        ),
        (Some(f), _) | (None, Some(f)) => Verdict::failed(READY, f.reason, f.message.clone()),
    };
    write_status(
        api,
        p,
        ctx,
        &[rabbit.verdict, redis.verdict, ready],
        declared,
    )
    .await?;
    match rabbit.failure.or(redis.failure) {
        Some(f) => Err(f),
        None => Ok(Action::requeue(RESYNC)),
    }
}

/// Declares exchanges, dead-letter queues, queues, bindings and policies; removes the queues and
/// exchanges that left the spec (a queue that still holds messages is kept until it is empty).
async fn declare_rabbitmq(
    ctx: &Ctx,
    ns: &str,
    spec: &EventPipelineSpec,
    previous: &Declared,
    declared: &mut Declared,
) -> Result<String, Failure> {
    let amqp = ctx.secret(ns, &spec.rabbitmq).await?;
    let management = match &spec.rabbitmq_management {
        Some(r) => Some(ctx.secret(ns, r).await?),
        None => None,
    };
    let rabbit = Rabbit::new(&amqp, management.as_deref())?;
    rabbit.check().await?;
    for ex in &spec.exchanges {
        rabbit.declare_exchange(ex).await?;
        rabbit.declare_queue(&dlq_name(ex), json!({})).await?;
    }
    for q in &spec.queues {
        rabbit.declare_queue(&q.name, queue_arguments()).await?;
        let existing = rabbit.bindings(&q.name).await?;
        for key in &q.bindings {
            if !existing
                .iter()
                .any(|b| b.source == q.exchange && &b.routing_key == key)
            {
                rabbit.bind(&q.exchange, &q.name, key).await?;
            }
        }
        for b in &existing {
            if b.source != q.exchange || !q.bindings.contains(&b.routing_key) {
                rabbit.unbind(&q.name, b).await?;
            }
        }
    }
    for policy in desired::policies(spec) {
        rabbit.put_policy(&policy).await?;
    }

    let mut notes = Vec::new();
    let wanted: BTreeSet<&str> = spec.queues.iter().map(|q| q.name.as_str()).collect();
    let mut queues: BTreeSet<String> = wanted.iter().map(|s| (*s).to_owned()).collect();
    for gone in previous
        .queues
        .iter()
        .filter(|q| !wanted.contains(q.as_str()))
    {
        rabbit
            .delete_policy(&format!("{POLICY_PREFIX}{gone}"))
            .await?;
        if !rabbit.delete_queue(gone, true).await? {
            notes.push(format!(
                "queue {gone:?} left the spec but holds messages: kept until it is empty"
            ));
            queues.insert(gone.clone());
        }
    }
    let wanted_ex: BTreeSet<&str> = spec.exchanges.iter().map(String::as_str).collect();
    let mut exchanges: BTreeSet<String> = wanted_ex.iter().map(|s| (*s).to_owned()).collect();
    for gone in previous
        .exchanges
        .iter()
        .filter(|e| !wanted_ex.contains(e.as_str()))
    {
        if rabbit.delete_queue(&dlq_name(gone), true).await? {
            rabbit.delete_exchange(gone).await?;
        } else {
            notes.push(format!(
                "{:?} holds dead letters: exchange {gone:?} kept until it is empty",
                dlq_name(gone)
            ));
            exchanges.insert(gone.clone());
        }
    }
    declared.queues = queues.into_iter().collect();
    declared.exchanges = exchanges.into_iter().collect();
    let mut message = format!(
        "{} exchanges, {} queues, their bindings, dead-letter queues and policies on virtual host {:?}",
        spec.exchanges.len(),
        spec.queues.len(),
        rabbit.vhost()
    );
    for n in notes {
        message.push_str("; ");
        message.push_str(&n);
    }
    Ok(message)
}

/// Creates the streams and consumer groups. A stream that leaves the spec is kept: it is the
/// replay log (`deletionPolicy: Delete` removes it with the pipeline).
async fn declare_redis(
    ctx: &Ctx,
    ns: &str,
    spec: &EventPipelineSpec,
    previous: &Declared,
    declared: &mut Declared,
) -> Result<String, Failure> {
    let url = ctx.secret(ns, &spec.redis).await?;
    let mut redis = Streams::connect(&url).await?;
    let mut groups = 0;
    for s in &spec.streams {
        if s.consumer_groups.is_empty() {
            redis.ensure_stream(&s.name).await?;
        }
        for g in &s.consumer_groups {
            redis.ensure_group(&s.name, g).await?;
            groups += 1;
        }
    }
    let mut streams: BTreeSet<String> = previous.streams.iter().cloned().collect();
    streams.extend(spec.streams.iter().map(|s| s.name.clone()));
    declared.streams = streams.into_iter().collect();
    Ok(format!(
        "{} streams and {groups} consumer groups",
        spec.streams.len()
    ))
}

/// Writes the status when it changed, and publishes an Event for each condition that changed.
async fn write_status(
    api: &Api<EventPipeline>,
    p: &EventPipeline,
    ctx: &Ctx,
    verdicts: &[Verdict],
    declared: Declared,
) -> Result<(), Failure> {
    let old = p.status.clone().unwrap_or_default();
    let now =
        k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(k8s_openapi::jiff::Timestamp::now());
    let status = PipelineStatus {
        observed_generation: p.metadata.generation,
        conditions: conditions::apply(&old.conditions, verdicts, p.metadata.generation, now),
        declared: Some(declared),
    };
    if p.status.as_ref() == Some(&status) {
        return Ok(());
    }
    api.patch_status(
        &p.name_any(),
        &PatchParams::default(),
        &Patch::Merge(json!({ "status": status })),
    )
    .await
    .map_err(|e| Failure::kube("writing the EventPipeline's status", &e))?;
    let reference = p.object_ref(&());
    for v in verdicts {
        let before = old.conditions.iter().find(|c| c.type_ == v.type_);
        let changed = before.is_none_or(|c| (c.status == "True") != v.ok || c.reason != v.reason);
        let new_generation = old.observed_generation != p.metadata.generation;
        // Ready is reported on each change and each new generation; the parts only when they fail.
        let report = if v.type_ == READY {
            changed || new_generation
        } else {
            changed && !v.ok
        };
        if report {
            ctx.event(
                &reference,
                !v.ok,
                &v.reason,
                format!("{}: {}", v.type_, v.message),
            )
            .await;
        }
    }
    Ok(())
}

/// The pipeline is being deleted: Retain leaves the broker objects, Delete removes them (the
/// finalizer stays until that worked, so nothing is left behind silently).
async fn cleanup(p: &EventPipeline, ctx: &Ctx) -> Result<Action, Failure> {
    let reference = p.object_ref(&());
    if p.spec.deletion_policy == DeletionPolicy::Retain {
        ctx.event(
            &reference,
            false,
            "Retained",
            "deletionPolicy Retain: exchanges, queues, streams and their messages are kept".into(),
        )
        .await;
        return Ok(Action::await_change());
    }
    let ns = p.namespace().unwrap_or_default();
    let declared = p
        .status
        .as_ref()
        .and_then(|s| s.declared.clone())
        .unwrap_or_default();
    let done = async {
        let amqp = ctx.secret(&ns, &p.spec.rabbitmq).await?;
        let management = match &p.spec.rabbitmq_management {
            Some(r) => Some(ctx.secret(&ns, r).await?),
            None => None,
        };
        let rabbit = Rabbit::new(&amqp, management.as_deref())?;
        let queues: BTreeSet<&str> = p
            .spec
            .queues
            .iter()
            .map(|q| q.name.as_str())
            .chain(declared.queues.iter().map(String::as_str))
            .collect();
        for q in &queues {
            rabbit.delete_policy(&format!("{POLICY_PREFIX}{q}")).await?;
            rabbit.delete_queue(q, false).await?;
        }
        let exchanges: BTreeSet<&str> = p
            .spec
            .exchanges
            .iter()
            .map(String::as_str)
            .chain(declared.exchanges.iter().map(String::as_str))
            .collect();
        for ex in &exchanges {
            rabbit.delete_queue(&dlq_name(ex), false).await?;
            rabbit.delete_exchange(ex).await?;
        }
        let url = ctx.secret(&ns, &p.spec.redis).await?;
        let mut redis = Streams::connect(&url).await?;
        let streams: BTreeSet<&str> = p
            .spec
            .streams
            .iter()
            .map(|s| s.name.as_str())
            .chain(declared.streams.iter().map(String::as_str))
            .collect();
        for s in &streams {
            redis.delete_stream(s).await?;
        }
        Ok::<_, Failure>(format!(
            "deletionPolicy Delete: {} queues, {} exchanges and {} streams deleted",
            queues.len(),
            exchanges.len(),
            streams.len()
        ))
    }
    .await;
    match done {
        Ok(note) => {
            ctx.event(&reference, false, "Deleted", note).await;
            Ok(Action::await_change())
        }
        // The Secret went first (a namespace being deleted takes it away): nothing can reach
        // the brokers any more; the pipeline goes, its broker objects stay, and an Event says so.
        Err(f) if f.reason == "SecretNotFound" || f.reason == "SecretKeyMissing" => {
            ctx.event(
                &reference,
                true,
                "BrokerObjectsLeft",
                format!(
                    "deletionPolicy Delete, but {}: the broker objects are left in place",
                    f.message
                ),
            )
            .await;
            Ok(Action::await_change())
        }
        Err(f) => {
            ctx.event(
                &reference,
                true,
                f.reason,
                format!(
                    "deleting the broker objects failed ({}); retrying. To let the pipeline go without deleting them, set deletionPolicy: Retain",
                    f.message
                ),
            )
            .await;
            Err(f)
        }
    }
}
