//! The events-and-sagas dashboard (`grafana/sagaflow-events.json`): a valid dashboard model,
//! every query parsed by promtool, and every metric it uses exposed by the services once a saga
//! has run through them; and every dashboard of `grafana/` against Grafana's own schema.

use serde_json::json;

use crate::dashboard_checks as dashboards;
use crate::helpers::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_metric_the_dashboard_queries_is_exposed_after_a_saga() {
    let d = dashboards::load(dashboards::ROOT, "sagaflow-events.json");
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
    s.stop().await;
}

/// Every dashboard of `grafana/` (and so the chart's copies, the same bytes) is what
/// @grafana/schema's types describe: `scripts/check/dashboards.mjs`. It refuses a dashboard that
/// is not, saying where.
#[test]
fn every_dashboard_is_what_grafanas_schema_describes() {
    for file in ["sagaflow-events.json", "sagaflow-operator.json"] {
        dashboards::load(dashboards::ROOT, file);
    }
    let out = dashboards::grafana_schema_check(dashboards::ROOT, &[]);
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
    let mut d = dashboards::load(dashboards::ROOT, "sagaflow-operator.json");
    d["style"] = json!("dark");
    d["templating"]["list"][1]["current"] = json!({});
    d["panels"][1]["gridPos"]["w"] = json!("6");
    d["panels"][1]["options"]["colorMode"] = json!("rainbow");
    d["panels"][2]["options"]["legend"]["displayMod"] = json!("table");
    d["panels"][2]["datasource"] = json!("prometheus");
    let dir = tempfile::tempdir().expect("a directory");
    let path = dir.path().join("broken.json");
    std::fs::write(&path, d.to_string()).expect("writing the dashboard");
    let out = dashboards::grafana_schema_check(dashboards::ROOT, &[path.as_path()]);
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
