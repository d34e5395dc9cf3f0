//! EventPipeline: declared on the real RabbitMQ and Redis, edited, failing and fixed, deleted.

use std::collections::BTreeSet;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::api::{DeleteParams, Patch, PatchParams};
use sagaflow_operator::crd::pipeline::EventPipeline;
use serde_json::{Value, json};

use crate::helpers::*;

const EXCHANGES: [&str; 3] = ["complaints.events", "notifications.events", "audit.events"];
const QUEUES: [&str; 6] = [
    "complaints.events.notification-service",
    "complaints.events.audit-service",
    "notifications.events.audit-service",
    "audit.events.audit-service",
    "notifications.events.complaint-service",
    "audit.events.complaint-service",
];

pub async fn condition(k: &Kube, name: &str, type_: &str) -> Option<Condition> {
    let p = k.api::<EventPipeline>().get_opt(name).await.ok()??;
    p.status?.conditions.into_iter().find(|c| c.type_ == type_)
}

/// Waits until the pipeline's condition `type_` has `status` for generation `generation`.
pub async fn wait_condition(
    k: &Kube,
    name: &str,
    type_: &str,
    status: &str,
    generation: i64,
) -> Condition {
    eventually(
        &format!("EventPipeline {name}: {type_}={status} at generation {generation}"),
        60,
        || async {
            condition(k, name, type_)
                .await
                .filter(|c| c.status == status && c.observed_generation == Some(generation))
        },
    )
    .await
}

pub async fn secrets(k: &Kube) {
    k.secret("rabbit", &k.amqp_url(None)).await;
    k.secret("redis", &k.redis_url()).await;
}

async fn our_exchanges(k: &Kube) -> BTreeSet<String> {
    k.rabbit("exchanges/{vhost}")
        .await
        .expect("the vhost")
        .as_array()
        .expect("a list")
        .iter()
        .filter(|e| {
            let n = e["name"].as_str().unwrap_or("");
            !n.is_empty() && !n.starts_with("amq.")
        })
        .map(|e| {
            assert_eq!(
                (e["type"].as_str(), e["durable"].as_bool()),
                (Some("topic"), Some(true)),
                "{e}"
            );
            e["name"].as_str().unwrap_or("").to_owned()
        })
        .collect()
}

async fn queues(k: &Kube) -> BTreeSet<String> {
    k.rabbit("queues/{vhost}")
        .await
        .expect("the vhost")
        .as_array()
        .expect("a list")
        .iter()
        .map(|q| q["name"].as_str().unwrap_or("").to_owned())
        .collect()
}

async fn bindings(k: &Kube) -> BTreeSet<(String, String, String)> {
    k.rabbit("bindings/{vhost}")
        .await
        .expect("the vhost")
        .as_array()
        .expect("a list")
        .iter()
        .filter(|b| b["source"] != "")
        .map(|b| {
            let s = |f: &str| b[f].as_str().unwrap_or("").to_owned();
            (s("source"), s("destination"), s("routing_key"))
        })
        .collect()
}

async fn groups(k: &Kube, stream: &str) -> Vec<String> {
    let mut conn = k.redis().await;
    let exists: i64 = redis::cmd("EXISTS")
        .arg(stream)
        .query_async(&mut conn)
        .await
        .expect("EXISTS");
    if exists == 0 {
        return Vec::new();
    }
    let info: Vec<std::collections::HashMap<String, redis::Value>> = redis::cmd("XINFO")
        .arg("GROUPS")
        .arg(stream)
        .query_async(&mut conn)
        .await
        .expect("XINFO GROUPS");
    info.iter()
        .filter_map(|g| match g.get("name") {
            Some(redis::Value::BulkString(b)) => Some(String::from_utf8_lossy(b).into_owned()),
            _ => None,
        })
        .collect()
}

async fn messages(k: &Kube, queue: &str, n: u64) {
    eventually(&format!("{queue} to hold {n} messages"), 30, || async {
        let q = k.rabbit(&format!("queues/{{vhost}}/{queue}")).await?;
        (q["messages"].as_u64() == Some(n)).then_some(())
    })
    .await;
}

#[tokio::test]
async fn a_default_pipeline_declares_the_contract_topology_follows_edits_and_delete_removes_it() {
    let k = Kube::new("pipeline", 11).await;
    secrets(&k).await;
    let _operator = Operator::start(&k.ns, "op-pipeline");
    k.create_raw(
        "EventPipeline",
        "main",
        json!({"rabbitmq": {"name": "rabbit"}, "redis": {"name": "redis"}, "deletionPolicy": "Delete"}),
    )
    .await
    .expect("create the pipeline (the API server fills in the defaults)");
    let started = std::time::Instant::now();
    let ready = wait_condition(&k, "main", "Ready", "True", 1).await;
    println!(
        "a new EventPipeline was Ready {} ms after it was created",
        started.elapsed().as_millis()
    );
    for c in ["RabbitMQReady", "RedisReady"] {
        assert_eq!(
            condition(&k, "main", c).await.map(|c| c.status),
            Some("True".into()),
            "{c}"
        );
    }

    // Exactly the contract's topology, read back from the brokers.
    assert_eq!(our_exchanges(&k).await, EXCHANGES.map(String::from).into());
    let mut want_queues: BTreeSet<String> = QUEUES.map(String::from).into();
    want_queues.extend(EXCHANGES.map(|e| format!("{e}.dlq")));
    assert_eq!(queues(&k).await, want_queues);
    let want_bindings: BTreeSet<(String, String, String)> = QUEUES
        .iter()
        .map(|q| {
            let ex = EXCHANGES
                .iter()
                .find(|e| q.starts_with(&format!("{e}.")))
                .expect("an exchange");
            ((*ex).to_owned(), (*q).to_owned(), "#".to_owned())
        })
        .collect();
    assert_eq!(bindings(&k).await, want_bindings);
    for q in QUEUES {
        let queue = k
            .rabbit(&format!("queues/{{vhost}}/{q}"))
            .await
            .expect("the queue");
        assert_eq!(queue["durable"], true);
        assert_eq!(
            queue["arguments"]["x-single-active-consumer"], true,
            "the services' own arguments"
        );
        let policy = k
            .rabbit(&format!("policies/{{vhost}}/sagaflow.{q}"))
            .await
            .expect("its policy");
        let dlq = format!("{}.dlq", q.rsplit_once('.').map(|(e, _)| e).unwrap_or(q));
        assert_eq!(
            policy["definition"]["dead-letter-routing-key"],
            Value::from(dlq)
        );
    }
    for stream in ["complaints-stream", "notifications-stream"] {
        assert_eq!(groups(&k, stream).await, ["event-store"], "{stream}");
    }
    // The Event follows the status write.
    eventually("a Declared Event", 30, || async {
        k.events("main")
            .await
            .iter()
            .any(|(t, r, _)| t == "Normal" && r == "Declared")
            .then_some(())
    })
    .await;

    // An edit: one queue less, another bound to fewer keys, a new stream group.
    let api = k.api::<EventPipeline>();
    let mut spec = api.get("main").await.expect("the pipeline").spec;
    spec.queues
        .retain(|q| q.name != "complaints.events.audit-service");
    let n = spec
        .queues
        .iter()
        .position(|q| q.name == "complaints.events.notification-service")
        .expect("q");
    spec.queues[n].bindings = vec!["complaint.created".into(), "complaint.resolved".into()];
    spec.streams[0].consumer_groups.push("analytics".into());
    api.patch(
        "main",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": spec})),
    )
    .await
    .expect("edit the spec");
    wait_condition(&k, "main", "Ready", "True", 2).await;
    assert!(
        !queues(&k).await.contains("complaints.events.audit-service"),
        "the removed queue is gone"
    );
    assert!(
        k.rabbit("policies/{vhost}/sagaflow.complaints.events.audit-service")
            .await
            .is_none()
    );
    let b = bindings(&k).await;
    let notification: BTreeSet<&str> = b
        .iter()
        .filter(|(_, d, _)| d == "complaints.events.notification-service")
        .map(|(_, _, k)| k.as_str())
        .collect();
    assert_eq!(
        notification,
        BTreeSet::from(["complaint.created", "complaint.resolved"])
    );
    assert_eq!(groups(&k, "complaints-stream").await.len(), 2);

    // A retry change is applied in place: the queue and its messages stay.
    k.publish("complaints.events.notification-service", 3).await;
    messages(&k, "complaints.events.notification-service", 3).await;
    let mut spec = api.get("main").await.expect("the pipeline").spec;
    spec.queues[n].retry.max_attempts = 9;
    spec.queues[n].retry.max_delay_seconds = 120;
    api.patch(
        "main",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": spec})),
    )
    .await
    .expect("change the retry policy");
    let after = wait_condition(&k, "main", "Ready", "True", 3).await;
    assert_eq!(
        after.last_transition_time, ready.last_transition_time,
        "Ready never went away"
    );
    messages(&k, "complaints.events.notification-service", 3).await;

    // Deletion with Delete removes exchanges, queues (messages and all), policies and streams.
    api.delete("main", &DeleteParams::default())
        .await
        .expect("delete");
    eventually(
        "the pipeline to be gone (its finalizer done)",
        60,
        || async { api.get_opt("main").await.ok()?.is_none().then_some(()) },
    )
    .await;
    assert!(our_exchanges(&k).await.is_empty());
    assert!(queues(&k).await.is_empty(), "{:?}", queues(&k).await);
    assert!(groups(&k, "complaints-stream").await.is_empty());
    let mut conn = k.redis().await;
    let exists: i64 = redis::cmd("EXISTS")
        .arg("complaints-stream")
        .arg("notifications-stream")
        .query_async(&mut conn)
        .await
        .expect("EXISTS");
    assert_eq!(exists, 0, "the streams are deleted");
    assert!(
        k.events("main")
            .await
            .iter()
            .any(|(_, r, _)| r == "Deleted")
    );
    k.cleanup().await;
}

#[tokio::test]
async fn retain_keeps_the_broker_objects_and_their_messages() {
    let k = Kube::new("retain", 12).await;
    secrets(&k).await;
    let _operator = Operator::start(&k.ns, "op-retain");
    k.create_raw(
        "EventPipeline",
        "main",
        json!({"rabbitmq": {"name": "rabbit"}, "redis": {"name": "redis"}}),
    )
    .await
    .expect("create");
    wait_condition(&k, "main", "Ready", "True", 1).await;
    k.publish("audit.events.audit-service", 2).await;
    messages(&k, "audit.events.audit-service", 2).await;
    let api = k.api::<EventPipeline>();
    assert_eq!(
        api.get("main").await.expect("get").spec.deletion_policy,
        sagaflow_operator::crd::pipeline::DeletionPolicy::Retain,
        "Retain is the default"
    );
    api.delete("main", &DeleteParams::default())
        .await
        .expect("delete");
    eventually("the pipeline to be gone", 60, || async {
        api.get_opt("main").await.ok()?.is_none().then_some(())
    })
    .await;
    assert_eq!(our_exchanges(&k).await.len(), 3);
    assert_eq!(queues(&k).await.len(), 9);
    messages(&k, "audit.events.audit-service", 2).await;
    assert_eq!(groups(&k, "complaints-stream").await, ["event-store"]);
    assert!(
        k.events("main")
            .await
            .iter()
            .any(|(_, r, _)| r == "Retained")
    );
    k.cleanup().await;
}

#[tokio::test]
async fn a_wrong_password_or_a_silent_broker_is_a_false_condition_and_an_event_until_fixed() {
    let k = Kube::new("password", 13).await;
    let password = "not-the-password-4711";
    k.secret("rabbit", &k.amqp_url(Some(password))).await;
    k.secret("redis", &k.redis_url()).await;
    let mut operator = Operator::start(&k.ns, "op-password");
    k.create_raw(
        "EventPipeline",
        "main",
        json!({"rabbitmq": {"name": "rabbit"}, "redis": {"name": "redis"}}),
    )
    .await
    .expect("create");
    let failed = wait_condition(&k, "main", "RabbitMQReady", "False", 1).await;
    assert_eq!(failed.reason, "RabbitMQUnauthorized");
    assert!(
        !failed.message.contains(password),
        "no password in {:?}",
        failed.message
    );
    assert_eq!(
        condition(&k, "main", "Ready").await.map(|c| c.status),
        Some("False".into())
    );
    assert_eq!(
        condition(&k, "main", "RedisReady").await.map(|c| c.status),
        Some("True".into())
    );
    let warning = eventually("a Warning Event", 30, || async {
        k.events("main")
            .await
            .into_iter()
            .find(|(t, r, _)| t == "Warning" && r == "RabbitMQUnauthorized")
    })
    .await;
    assert!(!warning.2.contains(password), "{warning:?}");

    // A management API that does not answer.
    k.secret("mgmt", "http://127.0.0.1:1").await;
    k.api::<EventPipeline>()
        .patch(
            "main",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"rabbitmqManagement": {"name": "mgmt"}}})),
        )
        .await
        .expect("point at a silent management API");
    let silent = wait_condition(&k, "main", "RabbitMQReady", "False", 2).await;
    assert_eq!(silent.reason, "RabbitMQUnreachable");

    // Fixing the Secrets makes it Ready, with the same operator process.
    let pid = operator.pid();
    k.secret("mgmt", &format!("{}/", management())).await;
    k.secret("rabbit", &k.amqp_url(None)).await;
    wait_condition(&k, "main", "Ready", "True", 2).await;
    assert!(
        operator.alive() && operator.pid() == pid,
        "no restart of the operator"
    );
    assert!(
        !operator.log().contains(password),
        "no password in the operator's log"
    );
    k.cleanup().await;
}
