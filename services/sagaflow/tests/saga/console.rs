//! The web console in a real browser: Debian's headless Chromium, driven by playwright-core
//! (`scripts/browser` installs both), against the all-in-one. Each test runs one scenario of
//! `tests/console/console.mjs`, which clicks through the pages and fails with what it saw.
//! Screenshots go to `TEST_CONSOLE_SCREENSHOTS` when set (the ones in `docs/console/` were taken
//! so), else to a temporary directory.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use sagaflow_runtime::bus::Message;
use serde_json::json;

use crate::helpers::{System, eventually, start_with};

fn tool(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        panic!(
            "{name} is not set: run `scripts/browser` (it installs Debian's chromium and playwright-core and prints CHROMIUM=, NODE= and PLAYWRIGHT_CORE=) and export each as TEST_<NAME> (./scripts/test does both)"
        )
    })
}

/// Runs `scenario` of the browser script against `sys`; its output is printed, and a failure
/// shows what the script saw.
async fn browse(sys: &System, scenario: &str) {
    let chromium = tool("TEST_CHROMIUM");
    let node = tool("TEST_NODE");
    let playwright = tool("TEST_PLAYWRIGHT_CORE");
    let temp = tempfile::tempdir().expect("temp dir");
    let shots = std::env::var("TEST_CONSOLE_SCREENSHOTS")
        .map(PathBuf::from)
        .unwrap_or_else(|_| temp.path().to_owned());
    let script = crate::repo::root().join("services/sagaflow/tests/console/console.mjs");
    let run = tokio::process::Command::new(&node)
        .arg(&script)
        .arg(scenario)
        .env("CONSOLE_URL", &sys.complaint)
        .env("CHROMIUM", &chromium)
        .env("PLAYWRIGHT_CORE", &playwright)
        .env("SCREENSHOTS", &shots)
        .env("BROWSER_PROFILE", temp.path().join("profile"))
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(100), run)
        .await
        .unwrap_or_else(|_| panic!("the {scenario} scenario did not finish within 100 s"))
        .expect("node runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("{stdout}");
    assert!(
        out.status.success(),
        "the browser scenario {scenario} failed ({}):\n{stdout}\n{stderr}",
        out.status
    );
    assert!(
        stdout.contains(&format!("scenario {scenario}: passed")),
        "the script did not report the scenario as passed:\n{stdout}"
    );
}

/// Create through the form (typed with the keyboard, sent with Enter), then assign, start
/// work, resolve and close by clicking, the timeline, mails and audit trail filling in as the
/// saga runs, to COMPLETED; then find it again with the list's filters and paging.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_a_browser_an_agent_takes_a_complaint_through_its_whole_life() {
    let sys = start_with(|_| {}).await;
    browse(&sys, "life").await;
    sys.stop().await;
}

/// An empty title is refused by the API and shown at the field; two agents on one complaint
/// get an explained version conflict; an agent undoes an assignment (compensation); every
/// control is labelled, text has 4.5:1 contrast, and the page works on a phone's width.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_a_browser_validation_errors_and_version_conflicts_are_explained() {
    let sys = start_with(|_| {}).await;
    browse(&sys, "errors").await;
    sys.stop().await;
}

/// The operator's view: four ready services, saga figures and an escalation, the dead letters
/// of a poison message with their headers, and a redrive that sends them back to their queues
/// (being poison, they come back to the DLQ at once, as new entries).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_a_browser_an_operator_sees_the_sagas_and_redrives_a_dead_letter() {
    let sys = start_with(|c| {
        c.saga.deadlines.critical = Duration::from_millis(300);
        c.saga.escalation_interval = Duration::from_millis(50);
    })
    .await;
    // One escalated complaint, and one saga completed.
    let late = sys.create("late-user", "CRITICAL", "console-late").await;
    let done = sys.create("done-user", "LOW", "console-done").await;
    for (action, body) in [
        ("assign", json!({"assignedTo": "agent-1"})),
        ("process", json!({"resolution": "refunded"})),
        ("close", json!({})),
    ] {
        sys.command(&done, action, body, "console-done").await;
    }
    eventually("the escalation and the completed saga", || async {
        let late = sys.view(&late).await;
        let done = sys.view(&done).await;
        (late["escalatedAt"].is_string() && done["sagaStatus"] == "COMPLETED").then_some(())
    })
    .await;
    // A poison message: both consumers of complaints.events dead-letter it at once.
    let bus = sys.app.as_ref().expect("running").pipeline.bus.clone();
    bus.publish(&Message {
        message_id: "console-poison-1".into(),
        exchange: "complaints.events".into(),
        routing_key: "complaint.created".into(),
        ordering_key: None,
        headers: BTreeMap::from([("x-correlation-id".into(), "console-poison".into())]),
        body: "{\"this is\": \"not an event\"}".into(),
    })
    .await
    .expect("publish");
    let letters = || async {
        let d = sys
            .get(format!("{}/api/dlq/complaints.events", sys.complaint))
            .await;
        let ids: Vec<u64> = d["items"]
            .as_array()
            .map(|items| items.iter().filter_map(|l| l["id"].as_u64()).collect())
            .unwrap_or_default();
        ids
    };
    let before = eventually("both consumers to dead-letter it", || async {
        let ids = letters().await;
        (ids.len() == 2).then_some(ids)
    })
    .await;
    browse(&sys, "operations").await;
    let newest = before.iter().max().copied().unwrap_or(0);
    eventually(
        "the redriven letters back in the DLQ as new entries",
        || async {
            let ids = letters().await;
            (ids.len() == 2 && ids.iter().all(|id| *id > newest)).then_some(())
        },
    )
    .await;
    sys.stop().await;
}
