//! The operator against a real Kubernetes API server (`scripts/kube`) and the real RabbitMQ and
//! Redis (`scripts/backends`): `./scripts/test` starts them and sets TEST_KUBECONFIG,
//! TEST_RABBITMQ_URL and TEST_REDIS_URL. Each test has its own namespace, RabbitMQ virtual host
//! and Redis database, and runs `sagaflow-operator run` as a real process.

#[path = "../../../services/sagaflow/tests/support/dashboards.rs"]
mod dashboard_checks;
mod helm;
mod helpers;
mod pipeline;
mod rbac;
mod saga;

use helpers::*;

#[tokio::test]
async fn the_crds_apply_kubectl_explain_teaches_and_invalid_resources_are_refused() {
    let k = Kube::new("crd", 10).await;
    let out = std::process::Command::new("kubectl")
        .args(["explain", "eventpipeline.spec.queues.retry.maxAttempts"])
        .env("KUBECONFIG", kubeconfig())
        .output()
        .expect("kubectl runs (it comes with the machine; see docs/development.md)");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "kubectl explain failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("Attempts before a message is dead-lettered"),
        "{text}"
    );

    let secret = serde_json::json!({"name": "s"});
    for (what, spec) in [
        (
            "maxAttempts 0",
            serde_json::json!({"rabbitmq": secret, "redis": secret,
            "queues": [{"name": "q", "exchange": "e", "retry": {"maxAttempts": 0}}]}),
        ),
        (
            "an unknown deletionPolicy",
            serde_json::json!({"rabbitmq": secret, "redis": secret, "deletionPolicy": "Maybe"}),
        ),
        ("no rabbitmq Secret", serde_json::json!({"redis": secret})),
        (
            "a stream cap under 1000",
            serde_json::json!({"rabbitmq": secret, "redis": secret,
            "streams": [{"name": "s", "maxLength": 10}]}),
        ),
    ] {
        let refused = k.create_raw("EventPipeline", "bad", spec).await;
        assert!(
            matches!(&refused, Err(kube::Error::Api(e)) if e.code == 422),
            "{what} must be refused by the API server, got {refused:?}"
        );
    }
    let refused = k
        .create_raw(
            "ComplaintSaga",
            "bad",
            serde_json::json!({"pipeline": "p", "image": "i", "database": secret, "mongodb": secret,
                "smtp": secret, "deadlines": {"critical": "soon"}}),
        )
        .await;
    assert!(
        matches!(&refused, Err(kube::Error::Api(e)) if e.code == 422),
        "a deadline that is no duration must be refused, got {refused:?}"
    );

    // examples/ is accepted as it is by the API server (schemas, CRDs, defaults).
    let examples = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples");
    let out = std::process::Command::new("kubectl")
        .args(["apply", "--dry-run=server", "-n", &k.ns, "-f", examples])
        .env("KUBECONFIG", kubeconfig())
        .output()
        .expect("kubectl runs");
    assert!(
        out.status.success(),
        "kubectl apply --dry-run=server -f examples/: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let applied = String::from_utf8_lossy(&out.stdout);
    for what in [
        "eventpipeline.sagaflow.dev/complaints",
        "complaintsaga.sagaflow.dev/complaints",
        "secret/sagaflow-smtp",
    ] {
        assert!(applied.contains(what), "{what} in {applied}");
    }
    k.cleanup().await;
}
