//! ComplaintSaga: the four services' objects, drift repaired, changes applied, deletion; and two
//! operator processes, of which only the leader reconciles.

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{ConfigMap, Service};
use kube::api::{DeleteParams, Patch, PatchParams};
use sagaflow_operator::crd::pipeline::EventPipeline;
use sagaflow_operator::crd::saga::ComplaintSaga;
use serde_json::json;

use crate::helpers::*;
use crate::pipeline::{secrets, wait_condition};

const SERVICES: [(&str, i32); 4] = [
    ("complaint", 3005),
    ("notification", 3006),
    ("audit", 3007),
    ("event-store", 3008),
];

async fn deployment(k: &Kube, name: &str) -> Option<Deployment> {
    k.api::<Deployment>().get_opt(name).await.ok()?
}

fn replicas_and_image(d: &Deployment) -> (i32, String) {
    let spec = d.spec.as_ref().expect("spec");
    let c = &spec.template.spec.as_ref().expect("pod").containers[0];
    (
        spec.replicas.unwrap_or(1),
        c.image.clone().unwrap_or_default(),
    )
}

async fn saga_condition(k: &Kube, name: &str, type_: &str) -> Option<(String, String)> {
    let s = k.api::<ComplaintSaga>().get_opt(name).await.ok()??;
    s.status?
        .conditions
        .into_iter()
        .find(|c| c.type_ == type_)
        .map(|c| (c.status, c.reason))
}

#[tokio::test]
async fn a_complaint_saga_owns_its_services_repairs_drift_applies_changes_and_cleans_up() {
    let k = Kube::new("saga", 14).await;
    secrets(&k).await;
    k.secret("pg", "postgres://app:pw@postgres:5432/sagaflow")
        .await;
    k.secret("mongo", "mongodb://mongo:27017").await;
    k.secret("mail", "smtp://mail:25").await;
    let _operator = Operator::start(&k.ns, "op-saga");
    k.create_raw(
        "EventPipeline",
        "main",
        json!({"rabbitmq": {"name": "rabbit"}, "redis": {"name": "redis"}}),
    )
    .await
    .expect("create the pipeline");
    let saga = k
        .create_raw(
            "ComplaintSaga",
            "demo",
            json!({"pipeline": "main", "image": "sagaflow:1.0", "database": {"name": "pg"},
                "mongodb": {"name": "mongo"}, "smtp": {"name": "mail"},
                "deadlines": {"critical": "5m"},
                "services": {"notification": {"replicas": 2, "env": {"NOTIFY_ADMIN_EMAIL": "ops@example.com"}}}}),
        )
        .await
        .expect("create the saga");
    let uid = saga.metadata.uid.clone().expect("a uid");

    for (service, port) in SERVICES {
        let name = format!("demo-{service}");
        let d = eventually(&format!("the Deployment {name}"), 60, || {
            deployment(&k, &name)
        })
        .await;
        let owner = &d.metadata.owner_references.as_ref().expect("owned")[0];
        assert_eq!(
            (owner.kind.as_str(), owner.uid.as_str(), owner.controller),
            ("ComplaintSaga", uid.as_str(), Some(true))
        );
        let pod = d
            .spec
            .as_ref()
            .expect("spec")
            .template
            .spec
            .as_ref()
            .expect("pod");
        let c = &pod.containers[0];
        assert_eq!(
            c.args.as_deref(),
            Some(&["serve".to_owned(), service.to_owned()][..])
        );
        assert_eq!(c.image.as_deref(), Some("sagaflow:1.0"));
        assert_eq!(c.ports.as_ref().expect("ports")[0].container_port, port);
        assert_eq!(
            c.readiness_probe
                .as_ref()
                .and_then(|p| p.http_get.as_ref())
                .and_then(|h| h.path.as_deref()),
            Some("/health/ready")
        );
        let secrets: Vec<(String, String)> = c
            .env
            .as_ref()
            .expect("env")
            .iter()
            .filter_map(|e| {
                Some((
                    e.name.clone(),
                    e.value_from.as_ref()?.secret_key_ref.as_ref()?.name.clone(),
                ))
            })
            .collect();
        assert!(
            secrets.contains(&("RABBITMQ_URL".into(), "rabbit".into())),
            "{secrets:?}"
        );
        assert!(
            secrets.contains(&("REDIS_URL".into(), "redis".into())),
            "{secrets:?}"
        );
        let annotations = d
            .spec
            .as_ref()
            .expect("spec")
            .template
            .metadata
            .as_ref()
            .expect("meta")
            .annotations
            .clone()
            .expect("annotations");
        assert_eq!(annotations["prometheus.io/port"], port.to_string());
        let svc = k.api::<Service>().get(&name).await.expect("its Service");
        assert_eq!(svc.spec.expect("spec").ports.expect("ports")[0].port, port);
        let cm = k
            .api::<ConfigMap>()
            .get(&name)
            .await
            .expect("its ConfigMap");
        assert_eq!(cm.data.expect("data")["PORT"], port.to_string());
    }
    let complaint = k
        .api::<ConfigMap>()
        .get("demo-complaint")
        .await
        .expect("cm")
        .data
        .expect("data");
    assert_eq!(
        (
            complaint["DEADLINE_CRITICAL"].as_str(),
            complaint["DEADLINE_LOW"].as_str()
        ),
        ("5m", "24h")
    );
    let notification = deployment(&k, "demo-notification").await.expect("d");
    assert_eq!(replicas_and_image(&notification).0, 2);

    // Status: the pipeline is Ready; no kubelet runs here, so no Deployment becomes available.
    eventually("PipelineReady", 60, || async {
        (saga_condition(&k, "demo", "PipelineReady").await?.0 == "True").then_some(())
    })
    .await;
    let s = k
        .api::<ComplaintSaga>()
        .get("demo")
        .await
        .expect("saga")
        .status
        .expect("status");
    assert_eq!(s.ready_services.as_deref(), Some("0/4"));
    assert_eq!(s.services.len(), 4);
    assert_eq!(
        saga_condition(&k, "demo", "Ready").await.map(|c| c.1),
        Some("DeploymentsNotAvailable".into())
    );

    // A hand edit of a Deployment is put back.
    k.api::<Deployment>()
        .patch(
            "demo-audit",
            &PatchParams::default(),
            &Patch::Strategic(json!({"spec": {"replicas": 5, "template": {"spec": {"containers": [{"name": "sagaflow", "image": "someone/else:latest"}]}}}})),
        )
        .await
        .expect("edit by hand");
    eventually("the hand edit repaired", 60, || async {
        let d = deployment(&k, "demo-audit").await?;
        (replicas_and_image(&d) == (1, "sagaflow:1.0".into())).then_some(())
    })
    .await;

    // A replica change is applied; a retry change in the pipeline rolls the consumers' pods.
    k.api::<ComplaintSaga>()
        .patch(
            "demo",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"services": {"audit": {"replicas": 3}}}})),
        )
        .await
        .expect("scale");
    eventually("3 audit replicas", 60, || async {
        let d = deployment(&k, "demo-audit").await?;
        (replicas_and_image(&d).0 == 3).then_some(())
    })
    .await;
    let hash = |d: &Deployment| {
        d.spec
            .as_ref()
            .and_then(|s| s.template.metadata.as_ref())
            .and_then(|m| m.annotations.as_ref())
            .and_then(|a| a.get("sagaflow.dev/config-hash").cloned())
    };
    let before = hash(&deployment(&k, "demo-notification").await.expect("d"));
    let pipelines = k.api::<EventPipeline>();
    let mut spec = pipelines.get("main").await.expect("pipeline").spec;
    for q in &mut spec.queues {
        q.retry.max_attempts = 8;
    }
    pipelines
        .patch(
            "main",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": spec})),
        )
        .await
        .expect("retry");
    eventually(
        "RETRY_MAX_ATTEMPTS=8 in the notification service's ConfigMap",
        60,
        || async {
            let cm = k.api::<ConfigMap>().get("demo-notification").await.ok()?;
            (cm.data?.get("RETRY_MAX_ATTEMPTS").map(String::as_str) == Some("8")).then_some(())
        },
    )
    .await;
    // The Deployment is applied after its ConfigMap, in the same reconcile.
    eventually(
        "the pod template's config hash to change, so the pods roll",
        60,
        || async {
            let after = hash(&deployment(&k, "demo-notification").await?);
            (after != before).then_some(())
        },
    )
    .await;

    // A missing Secret is a condition, not a crash.
    k.create_raw(
        "ComplaintSaga",
        "broken",
        json!({"pipeline": "main", "image": "sagaflow:1.0", "database": {"name": "pg"},
            "mongodb": {"name": "mongo"}, "smtp": {"name": "no-such-secret"}}),
    )
    .await
    .expect("create");
    let (status, reason) = eventually("the missing Secret reported", 60, || {
        saga_condition(&k, "broken", "Ready")
    })
    .await;
    assert_eq!(
        (status.as_str(), reason.as_str()),
        ("False", "SecretNotFound")
    );
    assert!(
        deployment(&k, "broken-complaint").await.is_none(),
        "nothing deployed without its Secrets"
    );

    // Deleting the saga removes what it owns (the controller-manager's garbage collector).
    k.api::<ComplaintSaga>()
        .delete("demo", &DeleteParams::foreground())
        .await
        .expect("delete");
    for (service, _) in SERVICES {
        let name = format!("demo-{service}");
        eventually(&format!("{name} garbage-collected"), 90, || async {
            let gone = deployment(&k, &name).await.is_none()
                && k.api::<Service>().get_opt(&name).await.ok()?.is_none()
                && k.api::<ConfigMap>().get_opt(&name).await.ok()?.is_none();
            gone.then_some(())
        })
        .await;
    }
    k.cleanup().await;
}

async fn metric(address: &str, name: &str) -> f64 {
    let text = reqwest::get(format!("http://{address}/metrics"))
        .await
        .expect("the metrics route answers")
        .text()
        .await
        .expect("text");
    text.lines()
        .filter(|l| l.starts_with(name))
        .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
        .sum()
}

async fn holder(k: &Kube) -> Option<String> {
    k.api::<Lease>()
        .get_opt("sagaflow-operator")
        .await
        .ok()??
        .spec?
        .holder_identity
}

#[tokio::test]
async fn of_two_operators_only_the_leader_reconciles_and_killing_it_hands_over() {
    let k = Kube::new("leader", 15).await;
    secrets(&k).await;
    let mut a = Operator::start(&k.ns, "op-a");
    let first = eventually("a Lease holder", 30, || holder(&k)).await;
    let mut b = Operator::start(&k.ns, "op-b");
    assert_eq!(first, "op-a", "the first process takes the Lease");
    let (a_addr, b_addr) = (a.address().await, b.address().await);
    k.create_raw(
        "EventPipeline",
        "one",
        json!({"rabbitmq": {"name": "rabbit"}, "redis": {"name": "redis"}}),
    )
    .await
    .expect("create");
    wait_condition(&k, "one", "Ready", "True", 1).await;
    assert_eq!(metric(&a_addr, "sagaflow_operator_leader").await, 1.0);
    // Counted once the reconcile returns, just after it wrote the status.
    eventually("a reconcile counted by the leader", 30, || async {
        (metric(&a_addr, "sagaflow_operator_reconciles_total").await >= 1.0).then_some(())
    })
    .await;
    assert_eq!(metric(&b_addr, "sagaflow_operator_leader").await, 0.0);
    assert_eq!(
        metric(&b_addr, "sagaflow_operator_reconciles_total").await,
        0.0,
        "the standby reconciles nothing"
    );
    let ready = reqwest::get(format!("http://{b_addr}/health/ready"))
        .await
        .expect("ready route");
    assert!(ready.status().is_success(), "a standby is healthy");

    // SIGKILL: no release; the standby takes over once the 3 s Lease expires.
    a.kill();
    let killed = std::time::Instant::now();
    eventually("op-b to hold the Lease", 30, || async {
        (holder(&k).await? == "op-b").then_some(())
    })
    .await;
    println!(
        "leadership handed over {} ms after the leader was killed",
        killed.elapsed().as_millis()
    );
    k.create_raw(
        "EventPipeline",
        "two",
        json!({"rabbitmq": {"name": "rabbit"}, "redis": {"name": "redis"}}),
    )
    .await
    .expect("create");
    wait_condition(&k, "two", "Ready", "True", 1).await;
    assert!(b.log().contains("leading: reconciling"));

    // SIGTERM: a clean stop that releases the Lease.
    let status = b.terminate().await;
    assert!(status.success(), "a clean stop exits 0, got {status:?}");
    assert_eq!(holder(&k).await, None, "the Lease is released");
    k.cleanup().await;
}
