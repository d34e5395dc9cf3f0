//! Checks of the Grafana dashboards in `grafana/`, shared by the services' test (which scrapes
//! the all-in-one after a saga, and checks every dashboard against Grafana's schema) and the
//! operator's (which scrapes a running operator).

// Each test binary that includes this module uses part of it.
#![allow(dead_code)]

use std::collections::BTreeSet;
use std::process::Command;

use serde_json::Value;

/// The repository, where `grafana/`, `charts/` and `scripts/check/` are.
pub fn root() -> &'static str {
    crate::repo::root()
        .to_str()
        .expect("the repository's path is UTF-8")
}

/// `grafana/<file>`, parsed; the chart's copy must be the same bytes.
pub fn load(root: &str, file: &str) -> Value {
    let path = format!("{root}/grafana/{file}");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let copy = std::fs::read_to_string(format!("{root}/charts/sagaflow/dashboards/{file}"))
        .unwrap_or_else(|e| panic!("the chart's copy of {file}: {e}"));
    assert_eq!(
        text, copy,
        "charts/sagaflow/dashboards/{file} differs from grafana/{file}: copy it again"
    );
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path} is not JSON: {e}"))
}

fn panels(d: &Value) -> Vec<&Value> {
    let mut all = Vec::new();
    for p in d["panels"].as_array().into_iter().flatten() {
        all.push(p);
        all.extend(p["panels"].as_array().into_iter().flatten());
    }
    all
}

/// The dashboard model Grafana loads: identity, a data source variable every panel and query
/// uses, unique panel ids, a place on the grid, and a query in every non-row panel.
pub fn check_structure(d: &Value) {
    for field in ["uid", "title"] {
        assert!(
            d[field].as_str().is_some_and(|s| !s.is_empty()),
            "no {field}"
        );
    }
    assert!(d["schemaVersion"].as_u64() >= Some(36), "schemaVersion");
    let vars: Vec<&str> = d["templating"]["list"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|v| v["name"].as_str())
        .collect();
    assert!(
        vars.contains(&"datasource") && vars.contains(&"namespace"),
        "{vars:?}"
    );
    let mut ids = BTreeSet::new();
    for p in panels(d) {
        let title = p["title"].as_str().unwrap_or_default();
        assert!(
            ids.insert(p["id"].as_u64().expect("a panel id")),
            "duplicate id at {title}"
        );
        for k in ["x", "y", "w", "h"] {
            assert!(p["gridPos"][k].is_u64(), "{title}: gridPos.{k}");
        }
        if p["type"] == "row" {
            continue;
        }
        assert_eq!(p["datasource"]["uid"], "${datasource}", "{title}");
        let targets = p["targets"].as_array().expect("targets");
        assert!(!targets.is_empty(), "{title} has no query");
        for t in targets {
            assert!(
                t["refId"].is_string() && t["expr"].is_string(),
                "{title}: {t}"
            );
        }
    }
}

/// Every PromQL expression of the dashboard.
pub fn exprs(d: &Value) -> Vec<String> {
    panels(d)
        .into_iter()
        .flat_map(|p| p["targets"].as_array().into_iter().flatten())
        .filter_map(|t| t["expr"].as_str().map(str::to_owned))
        .collect()
}

/// The metric names an expression selects: each written with a label matcher (`name{…}`), a
/// convention this check enforces by finding them that way.
pub fn metrics(expr: &str) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    let (mut token, mut quoted) = (String::new(), false);
    for c in expr.chars() {
        if c == '"' {
            quoted = !quoted;
            token.clear();
            continue;
        }
        if quoted {
            continue;
        }
        if c.is_ascii_alphanumeric() || c == '_' || c == ':' {
            token.push(c);
            continue;
        }
        if c == '{' && !token.is_empty() {
            found.insert(token.clone());
        }
        token.clear();
    }
    found
}

/// Every alert of `charts/sagaflow/rules/sagaflow.rules.yaml`, with its expression.
pub fn alert_exprs(root: &str) -> Vec<(String, String)> {
    let path = format!("{root}/charts/sagaflow/rules/sagaflow.rules.yaml");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let file: Value = serde_yaml::from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}"));
    let alerts: Vec<(String, String)> = file["groups"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|g| g["rules"].as_array().into_iter().flatten())
        .filter_map(|r| {
            Some((
                r["alert"].as_str()?.to_owned(),
                r["expr"].as_str()?.to_owned(),
            ))
        })
        .collect();
    assert!(alerts.len() >= 10, "{} alerts in {path}", alerts.len());
    alerts
}

/// The metric names an expression selects, with or without label matchers: every name outside
/// strings, matchers `{…}`, ranges `[…]` and label lists (`by (…)`, `on (…)` …) that is not
/// a function, an aggregation, a keyword or a number.
pub fn selected(expr: &str) -> BTreeSet<String> {
    const LISTS: [&str; 6] = [
        "by",
        "without",
        "on",
        "ignoring",
        "group_left",
        "group_right",
    ];
    // Keywords, and the aggregations (which may come before their `by (…)`).
    const WORDS: [&str; 20] = [
        "and",
        "or",
        "unless",
        "bool",
        "offset",
        "inf",
        "nan",
        "sum",
        "min",
        "max",
        "avg",
        "count",
        "group",
        "stddev",
        "stdvar",
        "topk",
        "bottomk",
        "quantile",
        "count_values",
        "limitk",
    ];
    let chars: Vec<char> = expr.chars().collect();
    let mut found = BTreeSet::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c == '"' || c == '\'' {
            i += 1;
            while i < chars.len() && chars[i] != c {
                i += if chars[i] == '\\' { 2 } else { 1 };
            }
            i += 1;
        } else if c == '{' || c == '[' {
            let close = if c == '{' { '}' } else { ']' };
            while i < chars.len() && chars[i] != close {
                i += 1;
            }
            i += 1;
        } else if c.is_ascii_alphabetic() || c == '_' || c == ':' {
            let start = i;
            while i < chars.len()
                && (chars[i].is_ascii_alphanumeric() || chars[i] == '_' || chars[i] == ':')
            {
                i += 1;
            }
            let word: String = chars[start..i].iter().collect();
            let mut next = i;
            while next < chars.len() && chars[next].is_whitespace() {
                next += 1;
            }
            let call = chars.get(next) == Some(&'(');
            if call && LISTS.contains(&word.as_str()) {
                while i < chars.len() && chars[i] != ')' {
                    i += 1;
                }
            } else if !call
                && !WORDS.contains(&word.to_ascii_lowercase().as_str())
                && !LISTS.contains(&word.as_str())
            {
                found.insert(word);
            }
        } else if c.is_ascii_digit() || c == '.' {
            // A number, its exponent included (1e3).
            while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '.') {
                i += 1;
            }
        } else {
            i += 1;
        }
    }
    found
}

/// Whether a metric an alert selects comes from Prometheus itself (`up`) or from
/// kube-state-metrics (`kube_*`) rather than from sagaflow.
pub fn from_the_platform(metric: &str) -> bool {
    metric == "up" || metric.starts_with("kube_")
}

/// The family a series name belongs to (a histogram's `_bucket`, `_count` and `_sum`).
pub fn family(name: &str) -> String {
    for suffix in ["_bucket", "_count", "_sum"] {
        if let Some(base) = name.strip_suffix(suffix) {
            return base.to_owned();
        }
    }
    name.to_owned()
}

/// The families a `/metrics` exposition declares.
pub fn exposed(text: &str) -> BTreeSet<String> {
    text.lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_owned)
        .collect()
}

/// Every expression parses: promtool checks them as recording rules, Grafana's variables
/// replaced by what they stand for.
pub fn promtool_parses(exprs: &[String]) {
    let bin = std::env::var("TEST_PROMTOOL").unwrap_or_else(|_| {
        panic!("TEST_PROMTOOL is not set: `scripts/kube` installs promtool and prints PROMTOOL=<path>; export it as TEST_PROMTOOL (./scripts/test does)")
    });
    let rules: Vec<Value> = exprs
        .iter()
        .enumerate()
        .map(|(i, e)| {
            let e = e
                .replace("$__rate_interval", "5m")
                .replace("$namespace", ".*");
            serde_json::json!({"record": format!("dashboard:expr_{i}"), "expr": e})
        })
        .collect();
    let file = serde_json::json!({"groups": [{"name": "dashboard", "rules": rules}]});
    let dir = tempfile::tempdir().expect("a directory");
    let path = dir.path().join("dashboard.rules.yaml");
    std::fs::write(&path, file.to_string()).expect("writing the rules");
    let out = Command::new(&bin)
        .args(["check", "rules"])
        .arg(&path)
        .output()
        .unwrap_or_else(|e| panic!("running {bin}: {e}"));
    assert!(
        out.status.success(),
        "promtool refused a dashboard expression:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `scripts/check/dashboards.mjs` on `files`, or on every `grafana/*.json` when there are none:
/// each dashboard, panel and panel's options against the JSON Schema of @grafana/schema's
/// types, with the node_modules that `scripts/kit-tools` installs (TEST_KIT_NODE_MODULES).
pub fn grafana_schema_check(root: &str, files: &[&std::path::Path]) -> std::process::Output {
    let modules = std::env::var("TEST_KIT_NODE_MODULES").unwrap_or_else(|_| {
        panic!("TEST_KIT_NODE_MODULES is not set: `scripts/kit-tools` installs the dashboard checks and prints KIT_NODE_MODULES=<path>; export it as TEST_KIT_NODE_MODULES (./scripts/test does)")
    });
    let script = format!("{root}/scripts/check/dashboards.mjs");
    Command::new("node")
        .arg(&script)
        .args(files)
        .env("KIT_NODE_MODULES", modules)
        .output()
        .unwrap_or_else(|e| panic!("running node {script} (node 20 or later): {e}"))
}
