//! The Helm chart (`charts/sagaflow`) with the real helm 3 (`scripts/kube` installs it and
//! prints HELM=…) against the real API server: lint, render, the server's own validation of
//! every rendered object (custom resources against their CRDs), the values schema refusing
//! wrong values, and install / upgrade / uninstall.

use std::process::{Command, Output, Stdio};

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::ServiceAccount;
use k8s_openapi::api::rbac::v1::{ClusterRole, Role};
use kube::api::Api;

use crate::helpers::*;

const CHART: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../charts/sagaflow");

fn helm(args: &[&str]) -> Output {
    let bin = std::env::var("TEST_HELM").unwrap_or_else(|_| {
        panic!("TEST_HELM is not set: `scripts/kube` installs helm and prints HELM=<path>; export it as TEST_HELM (./scripts/test does)")
    });
    Command::new(&bin)
        .args(args)
        .env("KUBECONFIG", kubeconfig())
        .env(
            "HELM_CACHE_HOME",
            std::env::temp_dir().join("sagaflow-helm-cache"),
        )
        .env(
            "HELM_CONFIG_HOME",
            std::env::temp_dir().join("sagaflow-helm-config"),
        )
        .env(
            "HELM_DATA_HOME",
            std::env::temp_dir().join("sagaflow-helm-data"),
        )
        .output()
        .unwrap_or_else(|e| panic!("running {bin}: {e}"))
}

fn ok(what: &str, out: &Output) -> String {
    assert!(
        out.status.success(),
        "{what} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The example specs, as `--set-json` values.
fn example_spec(file: &str) -> String {
    let path = format!("{}/../examples/{file}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let doc: serde_json::Value = serde_yaml::from_str(&text).expect("an example");
    doc["spec"].to_string()
}

fn rules(yaml: &str, kind: &str) -> serde_json::Value {
    yaml.split("\n---")
        .filter_map(|d| serde_yaml::from_str::<serde_json::Value>(d).ok())
        .find(|d| d["kind"] == kind)
        .map(|d| d["rules"].clone())
        .unwrap_or_else(|| panic!("no {kind}"))
}

#[tokio::test]
async fn the_chart_lints_renders_valid_objects_refuses_wrong_values_and_installs_upgrades_uninstalls()
 {
    let k = Kube::new("helm", 10).await;
    ok("helm lint", &helm(&["lint", "--strict", CHART]));
    let committed = std::fs::read_to_string(format!("{CHART}/crds/crds.yaml")).expect("chart CRDs");
    assert_eq!(
        committed,
        include_str!("../../../crds/crds.yaml"),
        "charts/sagaflow/crds/crds.yaml differs from crds/crds.yaml: copy it again"
    );

    // Everything the chart can render, checked by the API server itself.
    let pipeline = format!("pipeline.spec={}", example_spec("10-eventpipeline.yaml"));
    let saga = format!("saga.spec={}", example_spec("20-complaintsaga.yaml"));
    let rendered = ok(
        "helm template",
        &helm(&[
            "template",
            "r1",
            CHART,
            "--namespace",
            &k.ns,
            "--set",
            "pipeline.enabled=true",
            "--set",
            "saga.enabled=true",
            "--set-json",
            &pipeline,
            "--set-json",
            &saga,
        ]),
    );
    for kind in [
        "Deployment",
        "ServiceAccount",
        "ClusterRole",
        "ClusterRoleBinding",
        "Role",
        "RoleBinding",
        "Service",
        "EventPipeline",
        "ComplaintSaga",
    ] {
        assert!(
            rendered.contains(&format!("kind: {kind}\n")),
            "no {kind} rendered"
        );
    }
    let mut apply = Command::new("kubectl")
        .args(["apply", "--dry-run=server", "-n", &k.ns, "-f", "-"])
        .env("KUBECONFIG", kubeconfig())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("kubectl runs");
    {
        use std::io::Write as _;
        apply
            .stdin
            .take()
            .expect("stdin")
            .write_all(rendered.as_bytes())
            .expect("writing to kubectl");
    }
    ok(
        "kubectl apply --dry-run=server",
        &apply.wait_with_output().expect("kubectl"),
    );

    // Least privilege: the chart grants exactly what deploy/operator.yaml grants (rbac.rs
    // checks those rules against the operator's needs).
    let plain = include_str!("../../../deploy/operator.yaml");
    assert_eq!(rules(&rendered, "ClusterRole"), rules(plain, "ClusterRole"));
    assert_eq!(rules(&rendered, "Role"), rules(plain, "Role"));

    // The values schema refuses wrong values before anything reaches the cluster.
    for (set, says) in [
        ("operator.replicas=0", "operator.replicas"),
        ("operator.replica=2", "replica is not allowed"),
        ("operator.leaseDuration=soon", "operator.leaseDuration"),
        ("image.pullPolicy=Sometimes", "image.pullPolicy"),
    ] {
        let out = helm(&["template", "r1", CHART, "--set", set]);
        assert!(!out.status.success(), "{set} was accepted");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(says), "{set}: {err}");
    }

    // Install, upgrade, uninstall on the real API server.
    let release = "r1";
    let notes = ok(
        "helm install",
        &helm(&["install", release, CHART, "--namespace", &k.ns]),
    );
    assert!(
        notes.contains("kubectl get eventpipelines,complaintsagas"),
        "{notes}"
    );
    let name = "r1-sagaflow-operator";
    let cluster_name = format!("{}-r1-sagaflow-operator", k.ns);
    let deployments: Api<Deployment> = Api::namespaced(k.client.clone(), &k.ns);
    let d = deployments
        .get(name)
        .await
        .expect("the operator's Deployment");
    let spec = d.spec.expect("a spec");
    assert_eq!(spec.replicas, Some(2));
    let pod = spec.template.spec.expect("a pod spec");
    assert_eq!(pod.service_account_name.as_deref(), Some(name));
    assert_eq!(
        pod.security_context.and_then(|s| s.run_as_non_root),
        Some(true)
    );
    let container = &pod.containers[0];
    let security = container
        .security_context
        .clone()
        .expect("a container security context");
    assert_eq!(security.read_only_root_filesystem, Some(true));
    assert_eq!(security.allow_privilege_escalation, Some(false));
    assert!(container.liveness_probe.is_some() && container.readiness_probe.is_some());
    assert!(
        container
            .resources
            .as_ref()
            .and_then(|r| r.limits.as_ref())
            .is_some()
    );
    assert_eq!(container.image.as_deref(), Some("sagaflow-operator:0.1.0"));
    let args = container.args.clone().unwrap_or_default();
    assert!(args.contains(&format!("--lease-name={name}")), "{args:?}");
    Api::<ServiceAccount>::namespaced(k.client.clone(), &k.ns)
        .get(name)
        .await
        .expect("the ServiceAccount");
    Api::<Role>::namespaced(k.client.clone(), &k.ns)
        .get(&format!("{name}-leader"))
        .await
        .expect("the leader Role");
    let cluster_roles: Api<ClusterRole> = Api::all(k.client.clone());
    cluster_roles
        .get(&cluster_name)
        .await
        .expect("the ClusterRole");

    ok(
        "helm upgrade",
        &helm(&[
            "upgrade",
            release,
            CHART,
            "--namespace",
            &k.ns,
            "--set",
            "operator.replicas=3",
        ]),
    );
    let d = deployments
        .get(name)
        .await
        .expect("the operator's Deployment");
    assert_eq!(d.spec.and_then(|s| s.replicas), Some(3));

    ok(
        "helm uninstall",
        &helm(&["uninstall", release, "--namespace", &k.ns]),
    );
    assert!(deployments.get_opt(name).await.expect("reading").is_none());
    assert!(
        cluster_roles
            .get_opt(&cluster_name)
            .await
            .expect("reading")
            .is_none()
    );
    k.cleanup().await;
}

fn promtool(args: &[&str], dir: &std::path::Path) -> Output {
    let bin = std::env::var("TEST_PROMTOOL").unwrap_or_else(|_| {
        panic!("TEST_PROMTOOL is not set: `scripts/kube` installs promtool and prints PROMTOOL=<path>; export it as TEST_PROMTOOL (./scripts/test does)")
    });
    Command::new(&bin)
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap_or_else(|e| panic!("running {bin}: {e}"))
}

/// The chart's PrometheusRule carries the rules file as it is; promtool accepts every rule and
/// the scenarios of `rules/sagaflow.rules.test.yaml` fire (and stay quiet) as they say.
#[test]
fn the_alert_rules_parse_and_fire_as_their_scenarios_say() {
    let rendered = ok(
        "helm template",
        &helm(&[
            "template",
            "r1",
            CHART,
            "--set",
            "metrics.prometheusRule.enabled=true",
            "--set",
            "metrics.serviceMonitor.enabled=true",
            "--show-only",
            "templates/prometheusrule.yaml",
        ]),
    );
    let rule: serde_json::Value = serde_yaml::from_str(&rendered).expect("a PrometheusRule");
    assert_eq!(rule["kind"], "PrometheusRule");
    let file = format!("{CHART}/rules/sagaflow.rules.yaml");
    let text = std::fs::read_to_string(&file).expect("the rules file");
    let groups: serde_json::Value = serde_yaml::from_str(&text).expect("a rule file");
    assert_eq!(
        rule["spec"], groups,
        "the PrometheusRule's spec is the rules file"
    );
    let alerts: Vec<&str> = groups["groups"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|g| g["rules"].as_array().into_iter().flatten())
        .filter_map(|r| r["alert"].as_str())
        .collect();
    for wanted in [
        "SagaflowDeadLetters",
        "SagaflowOutboxBacklogGrowing",
        "SagaflowConsumerRetrying",
        "SagaflowCompensationRatioHigh",
        "SagaflowEscalations",
        "SagaflowServiceDown",
        "SagaflowOperatorReconcileFailing",
    ] {
        assert!(alerts.contains(&wanted), "no {wanted} in {alerts:?}");
    }
    // promtool reads what the chart renders, not only the source file.
    let dir = tempfile::tempdir().expect("a directory");
    std::fs::write(
        dir.path().join("rendered.yaml"),
        serde_yaml::to_string(&rule["spec"]).expect("YAML"),
    )
    .expect("writing");
    ok(
        "promtool check rules",
        &promtool(&["check", "rules", "rendered.yaml"], dir.path()),
    );
    let rules_dir = std::path::Path::new(CHART).join("rules");
    ok(
        "promtool test rules",
        &promtool(&["test", "rules", "sagaflow.rules.test.yaml"], &rules_dir),
    );
}

/// The operator's dashboard (`grafana/sagaflow-operator.json`): a valid model, every query
/// parsed by promtool, every metric it uses exposed by a running operator once it has
/// reconciled (and failed to: an EventPipeline whose Secret does not exist).
#[tokio::test]
async fn every_metric_the_operator_dashboard_queries_is_exposed() {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/..");
    let d = crate::dashboard_checks::load(root, "sagaflow-operator.json");
    crate::dashboard_checks::check_structure(&d);
    let exprs = crate::dashboard_checks::exprs(&d);
    crate::dashboard_checks::promtool_parses(&exprs);

    let k = Kube::new("dash", 10).await;
    let mut operator = Operator::start(&k.ns, "dash-1");
    k.create_raw(
        "EventPipeline",
        "no-secret",
        serde_json::json!({"rabbitmq": {"name": "missing"}, "redis": {"name": "missing"}}),
    )
    .await
    .expect("an EventPipeline");
    let address = operator.address().await;
    let wanted: std::collections::BTreeSet<String> = exprs
        .iter()
        .flat_map(|e| crate::dashboard_checks::metrics(e))
        .map(|m| crate::dashboard_checks::family(&m))
        .collect();
    let exposed = eventually("every family on /metrics", 30, || async {
        let text = reqwest::get(format!("http://{address}/metrics"))
            .await
            .ok()?
            .text()
            .await
            .ok()?;
        let exposed = crate::dashboard_checks::exposed(&text);
        wanted.is_subset(&exposed).then_some(exposed)
    })
    .await;
    assert!(wanted.is_subset(&exposed));
    operator.kill();
    k.cleanup().await;
}
