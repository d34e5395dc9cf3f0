//! The events-and-sagas dashboard (`grafana/sagaflow-events.json`): a valid dashboard model,
//! every query parsed by promtool, and every metric it uses exposed by the services once a saga
//! has run through them.

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
    let mut exposed = std::collections::BTreeSet::new();
    for base in [&s.complaint, &s.notification, &s.audit, &s.event_store] {
        let text = s
            .client
            .get(format!("{base}/metrics"))
            .send()
            .await
            .expect("metrics")
            .text()
            .await
            .expect("text");
        exposed.extend(dashboards::exposed(&text));
    }
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
