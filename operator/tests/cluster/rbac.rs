//! `deploy/operator.yaml`: applied to the API server as it is, and the operator run with its
//! ServiceAccount's own token reconciles both kinds: the RBAC grants what it uses, and no more
//! than it needs.

use std::process::Command;

use k8s_openapi::api::core::v1::{Secret, ServiceAccount};
use kube::api::{Api, DeleteParams};
use sagaflow_operator::crd::pipeline::EventPipeline;
use serde_json::json;

use crate::helpers::*;
use crate::pipeline::{secrets, wait_condition};

fn kubectl(args: &[&str]) -> (bool, String) {
    let out = Command::new("kubectl")
        .args(args)
        .env("KUBECONFIG", kubeconfig())
        .output()
        .expect("kubectl runs (it comes with the machine; see docs/development.md)");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[tokio::test]
async fn the_operator_runs_on_the_least_privilege_rbac_of_its_manifest() {
    let k = Kube::new("rbac", 10).await;
    let manifest = crate::repo::root().join("deploy/operator.yaml");
    let manifest = manifest.to_str().expect("a UTF-8 path");
    let (ok, out) = kubectl(&["apply", "-f", manifest]);
    assert!(ok, "kubectl apply -f deploy/operator.yaml: {out}");

    // The ServiceAccount's token (the controller-manager's token controller writes it).
    let sas: Api<ServiceAccount> = Api::namespaced(k.client.clone(), "sagaflow-system");
    let secret_name = eventually("the ServiceAccount's token Secret", 60, || async {
        sas.get("sagaflow-operator")
            .await
            .ok()?
            .secrets?
            .first()?
            .name
            .clone()
    })
    .await;
    let token = eventually("the token", 60, || async {
        let s = Api::<Secret>::namespaced(k.client.clone(), "sagaflow-system")
            .get(&secret_name)
            .await
            .ok()?;
        Some(String::from_utf8_lossy(&s.data?.get("token")?.0).into_owned())
    })
    .await;
    let admin = std::fs::read_to_string(kubeconfig()).expect("TEST_KUBECONFIG");
    let own: String = admin
        .lines()
        .map(|l| {
            if l.trim_start().starts_with("token:") {
                format!("    token: {token}")
            } else {
                l.to_owned()
            }
        })
        .collect::<Vec<_>>()
        .join("\n");
    let dir = tempfile::tempdir().expect("a temp dir");
    let path = dir.path().join("kubeconfig");
    std::fs::write(&path, own).expect("write the kubeconfig");
    let path = path.to_str().expect("a path").to_owned();

    let sa = "system:serviceaccount:sagaflow-system:sagaflow-operator";
    for (verb, resource, ns, allowed) in [
        ("get", "secrets", k.ns.as_str(), true),
        ("patch", "deployments", k.ns.as_str(), true),
        ("delete", "deployments", k.ns.as_str(), false),
        ("delete", "secrets", k.ns.as_str(), false),
        ("create", "pods", k.ns.as_str(), false),
        ("update", "leases", "sagaflow-system", true),
        ("update", "leases", "kube-system", false),
    ] {
        let (yes, out) = kubectl(&["auth", "can-i", verb, resource, "-n", ns, "--as", sa]);
        assert_eq!(
            yes, allowed,
            "can the operator {verb} {resource} in {ns}? kubectl says {out}"
        );
    }

    secrets(&k).await;
    k.secret("pg", "postgres://app:pw@postgres:5432/sagaflow")
        .await;
    k.secret("mongo", "mongodb://mongo:27017").await;
    k.secret("mail", "smtp://mail:25").await;
    let operator = Operator::start_with(
        &k.ns,
        "op-rbac",
        &path,
        &[
            "--lease-namespace",
            "sagaflow-system",
            "--lease-name",
            &k.ns,
        ],
    );
    k.create_raw("EventPipeline", "main", json!({"rabbitmq": {"name": "rabbit"}, "redis": {"name": "redis"}, "deletionPolicy": "Delete"}))
        .await
        .expect("create the pipeline");
    k.create_raw(
        "ComplaintSaga",
        "demo",
        json!({"pipeline": "main", "image": "sagaflow:1", "database": {"name": "pg"},
            "mongodb": {"name": "mongo"}, "smtp": {"name": "mail"}}),
    )
    .await
    .expect("create the saga");
    wait_condition(&k, "main", "Ready", "True", 1).await;
    eventually("the saga's Deployments", 60, || async {
        let n = k
            .api::<k8s_openapi::api::apps::v1::Deployment>()
            .list(&Default::default())
            .await
            .ok()?
            .items
            .len();
        (n == 4).then_some(())
    })
    .await;
    eventually("Events published", 30, || async {
        (!k.events("main").await.is_empty()).then_some(())
    })
    .await;
    let pipelines = k.api::<EventPipeline>();
    pipelines
        .delete("main", &DeleteParams::default())
        .await
        .expect("delete");
    eventually("the finalizer removed", 60, || async {
        pipelines
            .get_opt("main")
            .await
            .ok()?
            .is_none()
            .then_some(())
    })
    .await;
    let log = operator.log();
    assert!(!log.contains("forbidden"), "nothing was forbidden:\n{log}");
    k.cleanup().await;
}
