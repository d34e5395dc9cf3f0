//! The events-and-sagas dashboard (`grafana/sagaflow-events.json`): a valid dashboard model,
//! every query parsed by promtool, and every metric it and the alerts use exposed by the
//! services once a saga has run through them; and every dashboard of `grafana/` against
//! Grafana's own schema.

use serde_json::json;

use crate::dashboard_checks as dashboards;
use crate::helpers::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_metric_the_dashboard_and_the_alerts_query_is_exposed_after_a_saga() {
    let d = dashboards::load(dashboards::root(), "sagaflow-events.json");
    dashboards::check_structure(&d);
    let exprs = dashboards::exprs(&d);
    assert!(exprs.len() >= 10, "{} queries", exprs.len());
    dashboards::promtool_parses(&exprs);

    let s = start().await;
    let id = s.create("dash", "HIGH", "dash-1").await;
    s.command(&id, "assign", json!({"assignedTo": "agent-d"}), "dash-1")
        .await;
    s.command(&id, "process", json!({"resolution": "Fixed"}), "dash-1")
        .await;
    s.command(&id, "close", json!({}), "dash-1").await;
    eventually("the saga COMPLETED", || async {
        (s.view(&id).await["sagaStatus"] == "COMPLETED").then_some(())
    })
    .await;
    let exposed = dashboards::exposed(&s.metrics().await);
    for expr in &exprs {
        let used = dashboards::metrics(expr);
        assert!(!used.is_empty(), "no metric found in {expr}");
        for m in used {
            let family = dashboards::family(&m);
            assert!(
                exposed.contains(&family),
                "the dashboard queries {m}, which no service exposes (exposed: {exposed:?})"
            );
        }
    }
    // The alerts too, but for the operator's (its own test) and Prometheus's or
    // kube-state-metrics' series.
    assert_eq!(
        dashboards::selected(
            r#"sum by (namespace, le) (rate(a_total{status="x"}[5m])) > 0.1 * b or absent(c) unless on (pod) up"#
        ),
        ["a_total", "b", "c", "up"].map(str::to_owned).into(),
        "the metric finder"
    );
    for (alert, expr) in dashboards::alert_exprs(dashboards::root()) {
        let used = dashboards::selected(&expr);
        assert!(!used.is_empty(), "{alert}: no metric found in {expr}");
        for m in used {
            if dashboards::from_the_platform(&m) || m.starts_with("sagaflow_operator_") {
                continue;
            }
            assert!(
                exposed.contains(&dashboards::family(&m)),
                "{alert} selects {m}, which no service exposes (exposed: {exposed:?})"
            );
        }
    }
    s.stop().await;
}

/// Every dashboard of `grafana/` (and so the chart's copies, the same bytes) is what
/// @grafana/schema's types describe: `scripts/check/dashboards.mjs`. It refuses a dashboard that
/// is not, saying where.
#[test]
fn every_dashboard_is_what_grafanas_schema_describes() {
    for file in ["sagaflow-events.json", "sagaflow-operator.json"] {
        dashboards::load(dashboards::root(), file);
    }
    let out = dashboards::grafana_schema_check(dashboards::root(), &[]);
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "scripts/check/dashboards.mjs refused grafana/:\n{said}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for file in ["sagaflow-events.json", "sagaflow-operator.json"] {
        assert!(said.contains(&format!("ok grafana/{file}")), "{said}");
    }

    // A broken copy of the operator's dashboard (panel 1 is a stat, panel 2 a time series).
    let mut d = dashboards::load(dashboards::root(), "sagaflow-operator.json");
    d["style"] = json!("dark");
    d["templating"]["list"][1]["current"] = json!({});
    d["panels"][1]["gridPos"]["w"] = json!("6");
    d["panels"][1]["options"]["colorMode"] = json!("rainbow");
    d["panels"][2]["options"]["legend"]["displayMod"] = json!("table");
    d["panels"][2]["datasource"] = json!("prometheus");
    let dir = tempfile::tempdir().expect("a directory");
    let path = dir.path().join("broken.json");
    std::fs::write(&path, d.to_string()).expect("writing the dashboard");
    let out = dashboards::grafana_schema_check(dashboards::root(), &[path.as_path()]);
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        !out.status.success(),
        "a broken dashboard accepted:\n{said}"
    );
    for wanted in [
        "$.style: not a field of this type",
        "$.templating.list[1].current.text: required, missing",
        "$.panels[1].gridPos.w: must be number",
        "$.panels[1].options.colorMode: must be one of",
        "$.panels[2].options.legend.displayMod: not a field of this type",
        "$.panels[2].datasource: must be object",
    ] {
        assert!(said.contains(wanted), "no {wanted:?} in:\n{said}");
    }
}
