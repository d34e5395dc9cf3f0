//! The operator against a real Kubernetes API server (`scripts/kube`) and the real RabbitMQ and
//! Redis (`scripts/backends`): `./scripts/test` starts them and sets TEST_KUBECONFIG,
//! TEST_RABBITMQ_URL and TEST_REDIS_URL. Each test has its own namespace, RabbitMQ virtual host
//! and Redis database, and runs `sagaflow-operator run` as a real process.

#[path = "../../../services/sagaflow/tests/support/dashboards.rs"]
mod dashboard_checks;
mod helm;
mod helpers;
#[path = "../../../services/sagaflow/tests/support/markdown.rs"]
mod markdown;
mod pipeline;
mod rbac;
#[path = "../../../services/sagaflow/tests/support/repo.rs"]
mod repo;
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
    let examples = repo::root().join("examples");
    let examples = examples.to_str().expect("a UTF-8 path");
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

/// The read-only `kubectl get` and `kubectl explain` lines the docs show (in blocks not run by
/// `services/sagaflow/tests/docs.rs`, which has no cluster) work against the API server with
/// the CRDs: resource names, short names, label and field selectors, output formats.
#[tokio::test]
async fn the_kubectl_get_and_explain_lines_of_the_docs_work() {
    let k = Kube::new("docs", 9).await;
    let root = repo::root();
    let mut ran = 0;
    for page in markdown::pages(root) {
        let text = std::fs::read_to_string(&page).expect("page");
        let sh: String = markdown::blocks(&text)
            .into_iter()
            .filter(|b| b.info == "sh")
            .map(|b| b.code)
            .collect();
        for line in sh.lines() {
            let command = line.split(['|', '#']).next().unwrap_or("").trim();
            let words: Vec<&str> = command.split_whitespace().collect();
            // The first word that is neither a flag nor the value of `-n`.
            let verb = words
                .iter()
                .enumerate()
                .skip(1)
                .find(|(i, w)| !w.starts_with('-') && words[i - 1] != "-n")
                .map(|(_, w)| w);
            let read_only = matches!(verb, Some(&"get") | Some(&"explain"));
            if words.first() != Some(&"kubectl") || !read_only || line.ends_with('\\') {
                continue;
            }
            // The docs' placeholders: the namespace, the ComplaintSaga, a resource's name.
            let args: Vec<String> = words[1..]
                .iter()
                .map(|w| {
                    w.replace("NAMESPACE", &k.ns)
                        .replace("SAGA", "complaints")
                        .replace("=NAME", "=complaints")
                })
                .collect();
            let out = std::process::Command::new("kubectl")
                .args(&args)
                .arg("--request-timeout=10s")
                .env("KUBECONFIG", kubeconfig())
                .output()
                .expect("kubectl runs");
            assert!(
                out.status.success(),
                "{}: `{command}` failed: {}",
                page.display(),
                String::from_utf8_lossy(&out.stderr)
            );
            ran += 1;
        }
    }
    println!("{ran} kubectl lines run");
    assert!(ran >= 10, "only {ran} kubectl get/explain lines found");
    k.cleanup().await;
}
