//! `crds/crds.yaml` is exactly what the types generate, and the CRDs carry what
//! `kubectl get`, `kubectl explain` and `kubectl wait` need.

use serde_json::Value;

#[path = "../../services/sagaflow/tests/support/markdown.rs"]
mod markdown;
#[path = "../../services/sagaflow/tests/support/repo.rs"]
mod repo;

fn crds() -> Vec<Value> {
    let text = sagaflow_operator::crd::yaml().expect("render");
    text.split("\n---\n")
        .skip(1)
        .map(|doc| serde_yaml::from_str::<Value>(doc).expect("a YAML document"))
        .collect()
}

#[test]
fn the_committed_crds_are_what_the_types_generate() {
    let generated = sagaflow_operator::crd::yaml().expect("render");
    let committed = include_str!("../../crds/crds.yaml");
    assert!(
        generated == committed,
        "crds/crds.yaml is stale: regenerate it with `cargo run -p sagaflow-operator -- crdgen > crds/crds.yaml`"
    );
}

#[test]
fn both_kinds_are_namespaced_with_short_names_status_and_printer_columns() {
    let crds = crds();
    let names: Vec<&str> = crds
        .iter()
        .map(|c| c["metadata"]["name"].as_str().expect("name"))
        .collect();
    assert_eq!(
        names,
        ["eventpipelines.sagaflow.dev", "complaintsagas.sagaflow.dev"]
    );
    for (crd, short) in crds.iter().zip(["evp", "csaga"]) {
        let spec = &crd["spec"];
        assert_eq!(
            (spec["group"].as_str(), spec["scope"].as_str()),
            (Some("sagaflow.dev"), Some("Namespaced"))
        );
        assert_eq!(spec["names"]["shortNames"][0], short);
        let version = &spec["versions"][0];
        assert_eq!(version["name"], "v1alpha1");
        assert!(
            version["subresources"]["status"].is_object(),
            "a status subresource"
        );
        let columns: Vec<&str> = version["additionalPrinterColumns"]
            .as_array()
            .expect("columns")
            .iter()
            .map(|c| c["name"].as_str().expect("name"))
            .collect();
        assert_eq!(columns.first(), Some(&"Ready"));
        assert_eq!(columns.last(), Some(&"Age"));
        let status = &version["schema"]["openAPIV3Schema"]["properties"]["status"]["properties"];
        assert!(status["conditions"].is_object() && status["observedGeneration"].is_object());
    }
}

/// Every field a user writes has a description, so `kubectl explain` teaches it.
#[test]
fn every_spec_field_is_described() {
    fn walk(path: &str, schema: &Value, missing: &mut Vec<String>) {
        if let Some(props) = schema["properties"].as_object() {
            for (name, field) in props {
                let here = format!("{path}.{name}");
                if field["description"].as_str().is_none_or(str::is_empty) {
                    missing.push(here.clone());
                }
                walk(&here, field, missing);
            }
        }
        if schema["items"].is_object() {
            walk(path, &schema["items"], missing);
        }
    }
    for crd in crds() {
        let spec = &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"];
        let mut missing = Vec::new();
        walk("spec", spec, &mut missing);
        // Kubernetes' own types (resources) describe themselves; ours must too.
        missing.retain(|p| !p.contains(".resources."));
        assert!(
            missing.is_empty(),
            "{}: fields without a description: {missing:?}",
            crd["metadata"]["name"]
        );
    }
}

#[test]
fn the_defaults_are_the_topology_of_the_contract() {
    let crds = crds();
    let spec = &crds[0]["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"];
    assert_eq!(spec["deletionPolicy"]["default"], "Retain");
    assert_eq!(
        spec["deletionPolicy"]["enum"],
        serde_json::json!(["Retain", "Delete"])
    );
    let queues: Vec<&str> = spec["queues"]["default"]
        .as_array()
        .expect("queues")
        .iter()
        .map(|q| q["name"].as_str().expect("name"))
        .collect();
    assert!(
        queues.contains(&"complaints.events.notification-service") && queues.len() == 6,
        "{queues:?}"
    );
    let retry = &spec["queues"]["items"]["properties"]["retry"]["properties"];
    assert_eq!(
        (
            retry["maxAttempts"]["default"].as_u64(),
            retry["maxAttempts"]["minimum"].as_f64()
        ),
        (Some(5), Some(1.0))
    );
    let saga = &crds[1]["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"];
    let required: Vec<&str> = saga["required"]
        .as_array()
        .expect("required")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    for field in ["pipeline", "image", "database", "mongodb", "smtp"] {
        assert!(
            required.contains(&field),
            "{field} is required: {required:?}"
        );
    }
}

/// `docs/reference/operator-cli.md` is what `sagaflow-operator … --help` prints
/// (`UPDATE_DOCS=1 cargo test -p sagaflow-operator --test crds` writes it again).
#[test]
fn the_operator_command_line_reference_is_what_help_prints() {
    let mut text = String::from(
        "# Command line: sagaflow-operator\n\nGenerated from `sagaflow-operator … --help` by `operator/tests/crds.rs`, which fails when this page differs; `UPDATE_DOCS=1 cargo test -p sagaflow-operator --test crds` writes it again. What each setting does: [operator.md](../operator.md#running-it).\n",
    );
    for args in [
        &["--help"][..],
        &["run", "--help"][..],
        &["crdgen", "--help"][..],
    ] {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_sagaflow-operator"))
            .args(args)
            .output()
            .expect("sagaflow-operator");
        assert!(out.status.success(), "{args:?}");
        text.push_str(&format!(
            "\n## `sagaflow-operator {}`\n\n```text\n{}\n```\n",
            args.join(" "),
            String::from_utf8_lossy(&out.stdout).trim_end()
        ));
    }
    markdown::generated(
        &repo::root().join("docs/reference/operator-cli.md"),
        &text,
        "UPDATE_DOCS=1 cargo test -p sagaflow-operator --test crds",
    );
}
