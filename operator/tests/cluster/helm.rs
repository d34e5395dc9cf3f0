//! The Helm chart (`charts/sagaflow`) with the real helm 3 (`scripts/kube` installs it and
//! prints HELM=…) against the real API server: lint, render, the server's own validation of
//! every rendered object (custom resources against their CRDs), the values schema refusing
//! wrong values, and install / upgrade / uninstall. What it renders also goes through the
//! validators `scripts/kit-tools` installs (it prints KUBERNETES_VALIDATE=… and
//! KIT_NODE_MODULES=…): kubernetes-validate against the Kubernetes schemas, and
//! `scripts/check/monitoring.mjs` (prometheus-operator's validators) for the ServiceMonitors and
//! the PrometheusRule.

use std::collections::BTreeMap;
use std::process::{Command, Output, Stdio};

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::ServiceAccount;
use k8s_openapi::api::networking::v1::Ingress;
use k8s_openapi::api::rbac::v1::{ClusterRole, Role};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, ApiResource, DynamicObject};
use serde_json::{Value, json};

use crate::helpers::*;
use crate::repo::RepoDir;

static ROOT: RepoDir = RepoDir::new("");
static CHART: RepoDir = RepoDir::new("charts/sagaflow");

/// The kinds kubernetes-validate has no schema for, left out of its input by name: ours (the API
/// server checks them against crds/) and prometheus-operator's (scripts/check/monitoring.mjs).
const NO_SCHEMA: [&str; 4] = [
    "EventPipeline",
    "ComplaintSaga",
    "ServiceMonitor",
    "PrometheusRule",
];

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
    let path = format!("{ROOT}/examples/{file}");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let doc: serde_json::Value = serde_yaml::from_str(&text).expect("an example");
    doc["spec"].to_string()
}

/// `helm template` with the examples' EventPipeline and ComplaintSaga on, and `extra`.
fn render_with_examples(namespace: &str, extra: &[&str]) -> String {
    let pipeline = format!("pipeline.spec={}", example_spec("10-eventpipeline.yaml"));
    let saga = format!("saga.spec={}", example_spec("20-complaintsaga.yaml"));
    let mut args = vec![
        "template",
        "r1",
        CHART.as_str(),
        "--namespace",
        namespace,
        "--set",
        "pipeline.enabled=true",
        "--set",
        "saga.enabled=true",
        "--set-json",
        &pipeline,
        "--set-json",
        &saga,
    ];
    args.extend_from_slice(extra);
    ok("helm template", &helm(&args))
}

fn rules(yaml: &str, kind: &str) -> serde_json::Value {
    yaml.split("\n---")
        .filter_map(|d| serde_yaml::from_str::<serde_json::Value>(d).ok())
        .find(|d| d["kind"] == kind)
        .map(|d| d["rules"].clone())
        .unwrap_or_else(|| panic!("no {kind}"))
}

/// Every document of a rendered manifest (empty ones left out).
fn documents(yaml: &str) -> Vec<Value> {
    serde_yaml::Deserializer::from_str(yaml)
        .map(|d| {
            <Value as serde::Deserialize>::deserialize(d)
                .unwrap_or_else(|e| panic!("a YAML document: {e}\n{yaml}"))
        })
        .filter(|d| !d.is_null())
        .collect()
}

/// The documents of that kind.
fn of_kind<'a>(docs: &'a [Value], kind: &str) -> Vec<&'a Value> {
    docs.iter().filter(|d| d["kind"] == kind).collect()
}

/// The document of that kind and name.
fn object<'a>(docs: &'a [Value], kind: &str, name: &str) -> &'a Value {
    docs.iter()
        .find(|d| d["kind"] == kind && d["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no {kind} {name} rendered"))
}

/// A tool that `scripts/kit-tools` installs and prints as `{printed}=<path>`.
fn kit_tool(var: &str, printed: &str) -> String {
    std::env::var(var).unwrap_or_else(|_| {
        panic!("{var} is not set: `scripts/kit-tools` installs the chart's validators and prints {printed}=<path>; export it as {var} (./scripts/test does)")
    })
}

/// Runs `command` with `input` on its standard input (written from a thread of its own, so that
/// a command that answers before reading everything cannot block it).
fn with_stdin(mut command: Command, input: &str) -> Output {
    let what = format!("{command:?}");
    let mut child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("running {what}: {e}"));
    let mut stdin = child.stdin.take().expect("stdin");
    let input = input.to_owned();
    let writer = std::thread::spawn(move || {
        use std::io::Write as _;
        // A command that exits early closes its end: its status tells why.
        let _ = stdin.write_all(input.as_bytes());
    });
    let out = child.wait_with_output().expect("waiting for the command");
    writer.join().expect("the writer thread");
    out
}

/// `scripts/check/monitoring.mjs` on `yaml` (prometheus-operator's validators, from
/// TEST_KIT_NODE_MODULES), with `args` (`--expect KIND=COUNT`…).
fn monitoring_check(yaml: &str, args: &[&str]) -> Output {
    let modules = kit_tool("TEST_KIT_NODE_MODULES", "KIT_NODE_MODULES");
    let mut command = Command::new("node");
    command
        .arg(format!("{ROOT}/scripts/check/monitoring.mjs"))
        .args(args)
        .env("KIT_NODE_MODULES", modules);
    with_stdin(command, yaml)
}

/// kubernetes-validate --strict (TEST_KUBERNETES_VALIDATE) on every document but the kinds it
/// has no schema for, against the oldest schemas it ships (1.25: the chart says >= 1.20, which
/// the API server's dry run covers) and 1.33's. Returns its output and how many documents it was
/// given.
fn kubernetes_validate(docs: &[Value]) -> (Output, usize) {
    let bin = kit_tool("TEST_KUBERNETES_VALIDATE", "KUBERNETES_VALIDATE");
    let kept: Vec<&Value> = docs
        .iter()
        .filter(|d| !NO_SCHEMA.iter().any(|k| d["kind"] == *k))
        .collect();
    let dir = tempfile::tempdir().expect("a directory");
    let path = dir.path().join("rendered.yaml");
    let text: String = kept
        .iter()
        .map(|d| format!("---\n{}", serde_yaml::to_string(d).expect("YAML")))
        .collect();
    std::fs::write(&path, text).expect("writing the manifests");
    let out = Command::new(&bin)
        .args(["--strict", "-k", "1.25.0", "-k", "1.33.0"])
        .arg(path)
        .output()
        .unwrap_or_else(|e| panic!("running {bin}: {e}"));
    (out, kept.len())
}

/// kubernetes-validate accepted every document it was given, for both versions, and met no kind
/// it has no schema for (it only warns of those: here that fails).
fn assert_kubernetes_valid(docs: &[Value]) {
    let (out, n) = kubernetes_validate(docs);
    let stdout = ok("kubernetes-validate of what the chart renders", &out);
    assert!(
        !stdout.contains("WARN") && !stdout.contains("ERROR"),
        "kubernetes-validate met a kind it has no schema for (add it to NO_SCHEMA only if it is a custom resource checked elsewhere):\n{stdout}"
    );
    let passed = stdout
        .lines()
        .filter(|l| l.contains(" passed for resource "))
        .count();
    assert_eq!(
        passed,
        2 * n,
        "every document, for 1.25 and 1.33:\n{stdout}"
    );
}

/// prometheus-operator's ServiceMonitor and PrometheusRule as CRDs that keep any spec: no
/// registry ships the real CRDs (INFRA.md), and scripts/check/monitoring.mjs checks the objects
/// against prometheus-operator's own types; the API server checks their metadata and stores them.
async fn install_monitoring_crds(client: &kube::Client) {
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    for (kind, plural) in [
        ("ServiceMonitor", "servicemonitors"),
        ("PrometheusRule", "prometheusrules"),
    ] {
        let name = format!("{plural}.monitoring.coreos.com");
        let crd: CustomResourceDefinition = serde_json::from_value(json!({
            "apiVersion": "apiextensions.k8s.io/v1",
            "kind": "CustomResourceDefinition",
            "metadata": {"name": name},
            "spec": {
                "group": "monitoring.coreos.com",
                "scope": "Namespaced",
                "names": {
                    "kind": kind,
                    "listKind": format!("{kind}List"),
                    "plural": plural,
                    "singular": kind.to_lowercase(),
                },
                "versions": [{
                    "name": "v1",
                    "served": true,
                    "storage": true,
                    "schema": {"openAPIV3Schema": {
                        "type": "object",
                        "required": ["spec"],
                        "properties": {"spec": {
                            "type": "object",
                            "x-kubernetes-preserve-unknown-fields": true,
                        }},
                    }},
                }],
            },
        }))
        .expect("a CRD");
        apply_crd(&api, &crd).await;
    }
}

fn monitoring_api(client: &kube::Client, ns: &str, kind: &str, plural: &str) -> Api<DynamicObject> {
    let ar = ApiResource {
        group: "monitoring.coreos.com".into(),
        version: "v1".into(),
        api_version: "monitoring.coreos.com/v1".into(),
        kind: kind.into(),
        plural: plural.into(),
    };
    Api::namespaced_with(client.clone(), ns, &ar)
}

#[tokio::test]
async fn the_chart_lints_renders_valid_objects_refuses_wrong_values_and_installs_upgrades_uninstalls()
 {
    let k = Kube::new("helm", 10).await;
    ok("helm lint", &helm(&["lint", "--strict", CHART.as_str()]));
    let committed = std::fs::read_to_string(format!("{CHART}/crds/crds.yaml")).expect("chart CRDs");
    assert_eq!(
        committed,
        include_str!("../../../crds/crds.yaml"),
        "charts/sagaflow/crds/crds.yaml differs from crds/crds.yaml: copy it again"
    );

    // Everything the chart can render, checked by the API server itself.
    let rendered = render_with_examples(
        &k.ns,
        &[
            "--set",
            "ingress.enabled=true",
            "--set",
            "metrics.serviceMonitor.enabled=true",
            "--set",
            "metrics.prometheusRule.enabled=true",
        ],
    );
    for kind in [
        "Deployment",
        "ServiceAccount",
        "ClusterRole",
        "ClusterRoleBinding",
        "Role",
        "RoleBinding",
        "Service",
        "ConfigMap",
        "EventPipeline",
        "ComplaintSaga",
        "Ingress",
        "ServiceMonitor",
        "PrometheusRule",
    ] {
        assert!(
            rendered.contains(&format!("kind: {kind}\n")),
            "no {kind} rendered"
        );
    }
    // The API server has no prometheus-operator: CRDs that keep any spec stand in for its.
    install_monitoring_crds(&k.client).await;
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
        ("operator.leaseDuration=2s", "operator.leaseDuration"),
        ("operator.leaseDuration=2999ms", "operator.leaseDuration"),
        ("image.pullPolicy=Sometimes", "image.pullPolicy"),
        ("operator.env.LOG_LEVEL=debug", "operator.env"),
        ("operator.env.bad-name=x", "operator.env"),
    ] {
        let out = helm(&["template", "r1", CHART.as_str(), "--set", set]);
        assert!(!out.status.success(), "{set} was accepted");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(says), "{set}: {err}");
    }

    // Install, upgrade, uninstall on the real API server.
    let release = "r1";
    let notes = ok(
        "helm install",
        &helm(&[
            "install",
            release,
            CHART.as_str(),
            "--namespace",
            &k.ns,
            "--set",
            "ingress.enabled=true",
            "--set",
            "ingress.sagaName=complaints",
            "--set",
            "ingress.host=complaints.example.com",
            "--set",
            "metrics.serviceMonitor.enabled=true",
            "--set",
            "operator.env.OTEL_EXPORTER_OTLP_ENDPOINT=http://otel-collector.monitoring:4318",
        ]),
    );
    assert!(
        notes.contains("kubectl get eventpipelines,complaintsagas"),
        "{notes}"
    );
    assert!(
        notes.contains("http://complaints.example.com/api/complaints")
            && notes.contains("http://complaints.example.com/"),
        "the notes say where the console and the API are: {notes}"
    );
    assert!(
        notes.contains("set metrics.serviceMonitor.labels.release")
            && notes.contains(&format!("serviceMonitor/{}/r1-sagaflow-services/0", k.ns))
            && notes.contains("grafana_dashboard=\"1\""),
        "the notes say how Prometheus and Grafana find the monitors and dashboards: {notes}"
    );
    let ingress = Api::<Ingress>::namespaced(k.client.clone(), &k.ns)
        .get("complaints-complaint")
        .await
        .expect("the Ingress");
    let ingress_rules = ingress.spec.expect("a spec").rules.expect("rules");
    let rule = &ingress_rules[0];
    assert_eq!(rule.host.as_deref(), Some("complaints.example.com"));
    let backend = rule.http.as_ref().expect("http").paths[0]
        .backend
        .service
        .clone()
        .expect("a Service backend");
    assert_eq!(backend.name, "complaints-complaint");
    assert_eq!(backend.port.and_then(|p| p.name).as_deref(), Some("http"));
    for name in [
        format!("{release}-sagaflow-operator"),
        format!("{release}-sagaflow-services"),
    ] {
        monitoring_api(&k.client, &k.ns, "ServiceMonitor", "servicemonitors")
            .get(&name)
            .await
            .unwrap_or_else(|e| panic!("the ServiceMonitor {name}: {e}"));
    }
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
    let env = container.env.clone().unwrap_or_default();
    assert!(
        env.iter().any(|e| e.name == "OTEL_EXPORTER_OTLP_ENDPOINT"
            && e.value.as_deref() == Some("http://otel-collector.monitoring:4318")),
        "operator.env reaches the operator: {env:?}"
    );
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
            CHART.as_str(),
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

/// The Ingress routes to the complaint Service the operator makes, the services' ServiceMonitor
/// selects the Services the operator makes and keeps the services' own `service` label, and
/// everything rendered passes kubernetes-validate and prometheus-operator's validators, which
/// refuse a broken object.
#[test]
fn the_ingress_and_the_service_monitors_fit_the_operators_services_and_pass_the_validators() {
    let rendered = render_with_examples(
        "shop",
        &[
            "--set",
            "saga.name=complaints",
            "--set",
            "ingress.enabled=true",
            "--set",
            "ingress.host=complaints.example.com",
            "--set-json",
            r#"ingress.tls=[{"secretName":"complaints-tls"}]"#,
            "--set-json",
            r#"ingress.annotations={"nginx.ingress.kubernetes.io/proxy-body-size":"1m"}"#,
            "--set",
            "metrics.serviceMonitor.enabled=true",
            "--set",
            "metrics.serviceMonitor.interval=15s",
            "--set-json",
            r#"metrics.serviceMonitor.labels={"release":"kube-prometheus-stack"}"#,
            "--set",
            "metrics.prometheusRule.enabled=true",
        ],
    );
    let docs = documents(&rendered);
    let services = sagaflow_operator::workloads::SERVICES;
    let complaint = services
        .iter()
        .find(|s| s.name == "complaint")
        .expect("the complaint service");
    assert_eq!(complaint.port, 3005);

    // The Ingress: the complaint service's Service, as the operator names it, port `http`.
    let ingress = object(&docs, "Ingress", "complaints-complaint");
    assert_eq!(ingress["apiVersion"], "networking.k8s.io/v1");
    assert_eq!(ingress["metadata"]["namespace"], "shop");
    assert_eq!(
        ingress["metadata"]["annotations"]["nginx.ingress.kubernetes.io/proxy-body-size"],
        "1m"
    );
    let spec = &ingress["spec"];
    assert_eq!(spec["ingressClassName"], "nginx");
    assert_eq!(
        spec["tls"],
        json!([{"secretName": "complaints-tls", "hosts": ["complaints.example.com"]}])
    );
    let rule = &spec["rules"][0];
    assert_eq!(rule["host"], "complaints.example.com");
    let path = &rule["http"]["paths"][0];
    assert_eq!(path["path"], "/");
    assert_eq!(path["pathType"], "Prefix");
    assert_eq!(
        path["backend"]["service"]["name"],
        sagaflow_operator::workloads::object_name("complaints", complaint.name).as_str()
    );
    assert_eq!(path["backend"]["service"]["port"], json!({"name": "http"}));

    // Both ServiceMonitors take the interval and the labels.
    let monitors = of_kind(&docs, "ServiceMonitor");
    assert_eq!(monitors.len(), 2, "the operator's and the services'");
    for m in &monitors {
        assert_eq!(m["metadata"]["labels"]["release"], "kube-prometheus-stack");
        assert_eq!(m["metadata"]["namespace"], "shop");
        assert_eq!(m["spec"]["endpoints"][0]["interval"], "15s");
    }
    let monitor = object(&docs, "ServiceMonitor", "r1-sagaflow-services");
    let selector = monitor["spec"]["selector"]["matchLabels"]
        .as_object()
        .expect("matchLabels");
    assert!(
        monitor["spec"].get("namespaceSelector").is_none(),
        "the release's namespace by default"
    );
    let endpoint = &monitor["spec"]["endpoints"][0];
    assert_eq!(endpoint["port"], "http");
    assert_eq!(endpoint["path"], "/metrics");
    assert_eq!(
        endpoint["honorLabels"],
        json!(true),
        "the services' own `service` label is kept as scraped"
    );
    // What the services name themselves in their metrics' `service` label (each service's
    // SERVICE constant), which the rules and the dashboards group by.
    let metric_service = BTreeMap::from([
        ("complaint", "complaint-service"),
        ("notification", "notification-service"),
        ("audit", "audit-service"),
        ("event-store", "event-store"),
    ]);
    let relabelings = endpoint["relabelings"].as_array().expect("relabelings");
    for kind in &services {
        // The selector picks each of the four Services the operator makes…
        let labels = sagaflow_operator::workloads::labels("complaints", kind.name);
        for (k, v) in selector {
            assert_eq!(
                labels.get(k).map(String::as_str),
                v.as_str(),
                "{k} on the {} Service",
                kind.name
            );
        }
        // …and the target's `service` becomes the name its series carry: Prometheus's
        // relabelling, for these rules (anchored regexes of literals and one group).
        let component = labels
            .get("app.kubernetes.io/component")
            .expect("a component label")
            .as_str();
        let mut target_service = None;
        for r in relabelings.iter().filter(|r| r["targetLabel"] == "service") {
            assert_eq!(
                r["sourceLabels"],
                json!(["__meta_kubernetes_service_label_app_kubernetes_io_component"])
            );
            let regex = r["regex"].as_str().expect("a regex");
            let alternatives = regex.trim_start_matches('(').trim_end_matches(')');
            assert!(
                alternatives
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c == '-' || c == '|'),
                "a regex of literals: {regex}"
            );
            if alternatives.split('|').any(|a| a == component) {
                let replacement = r["replacement"].as_str().expect("a replacement");
                target_service = Some(replacement.replace("${1}", component));
            }
        }
        assert_eq!(
            target_service.as_deref(),
            metric_service.get(kind.name).copied(),
            "the target's `service` for {}",
            kind.name
        );
    }
    assert!(
        relabelings.iter().any(|r| r["targetLabel"] == "saga"
            && r["sourceLabels"]
                == json!(["__meta_kubernetes_service_label_app_kubernetes_io_instance"])),
        "{relabelings:?}"
    );
    // The operator's own Service is not one of them.
    let operator_service = object(&docs, "Service", "r1-sagaflow-operator");
    assert!(
        selector
            .iter()
            .any(|(k, v)| operator_service["metadata"]["labels"][k] != *v)
    );

    // prometheus-operator's validators accept the three objects…
    let out = monitoring_check(
        &rendered,
        &[
            "--expect",
            "ServiceMonitor=2",
            "--expect",
            "PrometheusRule=1",
        ],
    );
    let said = ok(
        "scripts/check/monitoring.mjs on what the chart renders",
        &out,
    );
    assert_eq!(
        said.lines().filter(|l| l.starts_with("ok ")).count(),
        3,
        "{said}"
    );
    // …and refuse broken ones: a port that is no name, a misspelt field (the validators alone
    // let that through; Kubernetes would drop it), a rule without expr.
    let mut broken = monitor.clone();
    broken["spec"]["endpoints"][0]["port"] = json!(3005);
    broken["spec"]["endpoints"][0]["honorLabel"] = json!(true);
    let mut rule = object(&docs, "PrometheusRule", "r1-sagaflow-operator").clone();
    let first = &mut rule["spec"]["groups"][0]["rules"][0];
    first
        .as_object_mut()
        .expect("a rule")
        .remove("expr")
        .expect("an expr");
    let text = format!(
        "{}\n---\n{}",
        serde_yaml::to_string(&broken).expect("YAML"),
        serde_yaml::to_string(&rule).expect("YAML")
    );
    let out = monitoring_check(&text, &[]);
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success(), "broken objects accepted:\n{said}");
    for wanted in [
        "$.spec.endpoints[0].port: must be string",
        "$.spec.endpoints[0].honorLabel: not a field of this type",
        "$.spec.groups[0].rules[0].expr: required, missing",
    ] {
        assert!(said.contains(wanted), "no {wanted:?} in:\n{said}");
    }
    // An expected kind that is not there fails too.
    let out = monitoring_check(&rendered, &["--expect", "PodMonitor"]);
    assert!(
        !out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );

    // The Kubernetes schemas accept everything else the chart renders…
    assert_kubernetes_valid(&docs);
    // …and refuse a broken Ingress (a misspelt field).
    let mut broken = ingress.clone();
    let spec = broken["spec"].as_object_mut().expect("a spec");
    let class = spec.remove("ingressClassName").expect("a class");
    spec.insert("ingressClass".into(), class);
    let (out, _) = kubernetes_validate(&[broken]);
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        !out.status.success() && said.contains("ingressClass"),
        "a broken Ingress accepted:\n{said}"
    );

    // Without a ComplaintSaga to route to, the Ingress is refused, saying what to set; with one
    // named, it routes to that one's Service.
    let out = helm(&[
        "template",
        "r1",
        CHART.as_str(),
        "--set",
        "ingress.enabled=true",
    ]);
    assert!(!out.status.success(), "an Ingress to no saga was rendered");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("saga.enabled=true") && err.contains("ingress.sagaName"),
        "{err}"
    );
    let rendered = ok(
        "helm template",
        &helm(&[
            "template",
            "r1",
            CHART.as_str(),
            "--set",
            "ingress.enabled=true",
            "--set",
            "ingress.sagaName=elsewhere",
            "--set",
            "ingress.className=",
            "--set",
            "metrics.serviceMonitor.enabled=true",
            "--set",
            "metrics.serviceMonitor.services.enabled=false",
        ]),
    );
    let docs = documents(&rendered);
    let ingress = object(&docs, "Ingress", "elsewhere-complaint");
    assert_eq!(
        ingress["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"]["name"],
        "elsewhere-complaint"
    );
    assert!(ingress["spec"].get("ingressClassName").is_none());
    assert!(
        ingress["spec"]["rules"][0].get("host").is_none(),
        "any host"
    );
    assert_eq!(
        of_kind(&docs, "ServiceMonitor").len(),
        1,
        "the operator's only"
    );
    assert_kubernetes_valid(&docs);
    let rendered = ok(
        "helm template",
        &helm(&[
            "template",
            "r1",
            CHART.as_str(),
            "--set",
            "metrics.serviceMonitor.enabled=true",
            "--set-json",
            r#"metrics.serviceMonitor.services.namespaceSelector={"any":true}"#,
        ]),
    );
    let docs = documents(&rendered);
    assert_eq!(
        object(&docs, "ServiceMonitor", "r1-sagaflow-services")["spec"]["namespaceSelector"],
        json!({"any": true})
    );
    ok(
        "monitoring.mjs",
        &monitoring_check(&rendered, &["--expect", "ServiceMonitor=2"]),
    );

    // The values schema refuses wrong Ingress and ServiceMonitor values.
    for (set, says) in [
        ("ingress.host=Not_A_Host", "ingress.host"),
        ("ingress.hosts=a.example.com", "hosts is not allowed"),
        ("ingress.path=api", "ingress.path"),
        ("ingress.pathType=Regex", "ingress.pathType"),
        ("ingress.sagaName=Complaints", "ingress.sagaName"),
        (
            "metrics.serviceMonitor.services.namespaceSelector.names=shop",
            "names is not allowed",
        ),
        (
            "metrics.serviceMonitor.services.enable=true",
            "enable is not allowed",
        ),
    ] {
        let out = helm(&["template", "r1", CHART.as_str(), "--set", set]);
        assert!(!out.status.success(), "{set} was accepted");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(says), "{set}: {err}");
    }
    let out = helm(&[
        "template",
        "r1",
        CHART.as_str(),
        "--set-json",
        r#"ingress.tls=[{"hosts":["a.example.com"]}]"#,
    ]);
    assert!(
        !out.status.success(),
        "a TLS entry without secretName was accepted"
    );
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

/// The chart's PrometheusRule carries the rules file as it is (each runbook_url under
/// `runbookBaseUrl` when it is set); promtool accepts every rule and the scenarios of
/// `rules/sagaflow.rules.test.yaml` fire (and stay quiet) as they say.
#[test]
fn the_alert_rules_parse_and_fire_as_their_scenarios_say() {
    let render = |value: &str| {
        ok(
            "helm template",
            &helm(&[
                "template",
                "r1",
                CHART.as_str(),
                "--set",
                "metrics.prometheusRule.enabled=true",
                "--set",
                value,
                "--show-only",
                "templates/prometheusrule.yaml",
            ]),
        )
    };
    let rendered = render("metrics.serviceMonitor.enabled=true");
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
        "SagaflowConsumerLagging",
        "SagaflowCompensationRatioHigh",
        "SagaflowEscalations",
        "SagaflowServiceDown",
        "SagaflowServiceNotReady",
        "SagaflowOperatorReconcileFailing",
    ] {
        assert!(alerts.contains(&wanted), "no {wanted} in {alerts:?}");
    }
    // With runbookBaseUrl, each alert's runbook_url is <base>/<alert>.md.
    let based = render("metrics.prometheusRule.runbookBaseUrl=https://docs.example.com/runbooks");
    let based: serde_json::Value = serde_yaml::from_str(&based).expect("a PrometheusRule");
    let urls: Vec<(String, String)> = based["spec"]["groups"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|g| g["rules"].as_array().into_iter().flatten())
        .map(|r| {
            (
                r["alert"].as_str().unwrap_or("?").to_owned(),
                r["annotations"]["runbook_url"]
                    .as_str()
                    .unwrap_or("none")
                    .to_owned(),
            )
        })
        .collect();
    assert_eq!(urls.len(), alerts.len());
    for (alert, url) in &urls {
        assert_eq!(
            url,
            &format!("https://docs.example.com/runbooks/{alert}.md")
        );
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
    let rules_dir = std::path::Path::new(CHART.as_str()).join("rules");
    let scenarios = std::fs::read_to_string(rules_dir.join("sagaflow.rules.test.yaml"))
        .expect("the rules' scenarios");
    for alert in &alerts {
        assert!(
            scenarios.contains(&format!("alertname: {alert}\n")),
            "{alert} has no scenario in rules/sagaflow.rules.test.yaml"
        );
    }
    ok(
        "promtool test rules",
        &promtool(&["test", "rules", "sagaflow.rules.test.yaml"], &rules_dir),
    );
}

/// The operator's dashboard (`grafana/sagaflow-operator.json`): a valid model, every query
/// parsed by promtool, every metric it and the operator's alerts use exposed by a running
/// operator once it has reconciled (and failed to: an EventPipeline whose Secret does not exist).
#[tokio::test]
async fn every_metric_the_operator_dashboard_and_alerts_query_is_exposed() {
    let root = ROOT.as_str();
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
    // The operator's metrics the alerts select, too.
    let alerted = crate::dashboard_checks::alert_exprs(root)
        .into_iter()
        .flat_map(|(_, e)| crate::dashboard_checks::selected(&e))
        .filter(|m| m.starts_with("sagaflow_operator_"))
        .collect::<Vec<_>>();
    assert!(alerted.len() >= 2, "{alerted:?}");
    let wanted: std::collections::BTreeSet<String> = exprs
        .iter()
        .flat_map(|e| crate::dashboard_checks::metrics(e))
        .chain(alerted)
        .map(|m| crate::dashboard_checks::family(&m))
        .collect();
    eventually("every family on /metrics", 30, || async {
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
    operator.kill();
    k.cleanup().await;
}
