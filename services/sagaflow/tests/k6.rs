//! The k6 load tests of `k6/` against the all-in-one as a user starts it (this workspace's
//! `sagaflow` binary, embedded backends, ports picked by the system): each script's smoke
//! profile (`K6_PROFILE=smoke`, seconds and a few VUs) must hold its thresholds, and its
//! summary must show that it did the work — iterations ran, every check passed, sagas completed,
//! events became visible, replays were answered. The full profiles (minutes of ramping load)
//! are run by hand (docs/load-testing.md). k6 is `TEST_K6` (installed by `scripts/kit-tools`).
//!
//! Its latency thresholds assume nothing else loads the two cores, so the test is `#[ignore]`d
//! in the parallel pass and `scripts/test` runs it in the one-at-a-time pass after the others
//! (`TEST_K6=… cargo test -p sagaflow --test k6 -- --ignored` by hand).

/// The all-in-one this test starts runs on the embedded backends.
const REAL: bool = false;

// The saga tests' helpers need `backends`.
#[path = "support/backends.rs"]
mod backends;
// This test uses only `eventually` of the saga tests' helpers.
#[allow(dead_code)]
#[path = "saga/helpers.rs"]
mod helpers;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::Value;

use helpers::eventually;

const BIN: &str = env!("CARGO_BIN_EXE_sagaflow");
#[path = "support/repo.rs"]
mod repo;

static ROOT: repo::RepoDir = repo::RepoDir::new("");
/// A smoke run takes 10–20 s (setup and teardown included); a k6 that takes this long hangs.
const K6_TIMEOUT: Duration = Duration::from_secs(300);

/// The services' names in the all-in-one's "listening" log lines, and the k6 variable that
/// takes each one's base URL.
const SERVICES: [(&str, &str); 4] = [
    ("complaint-service", "BASE_URL"),
    ("notification-service", "NOTIFICATION_URL"),
    ("audit-service", "AUDIT_URL"),
    ("event-store", "EVENT_STORE_URL"),
];

/// The all-in-one, started from the binary on a fresh data directory; killed (and its
/// directory removed) when dropped, so a failing test leaves nothing behind.
struct System {
    child: Child,
    log: PathBuf,
    /// Base URL by service name.
    urls: BTreeMap<String, String>,
    _dir: tempfile::TempDir,
}

impl Drop for System {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The services' addresses the log at `log` announced so far.
fn listening(log: &Path) -> BTreeMap<String, String> {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    text.lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|l| l["message"] == "listening")
        .filter_map(|l| {
            Some((
                l["service"].as_str()?.to_owned(),
                format!("http://{}", l["addr"].as_str()?),
            ))
        })
        .collect()
}

impl System {
    /// `sagaflow all-in-one --data-dir <tempdir>/data` on ports picked by the system (0), its
    /// log (JSON) beside the data; answers once every service said where it listens and
    /// answers 200 on `/health/ready`.
    #[allow(clippy::zombie_processes)] // `System`'s Drop reaps the child
    async fn start() -> System {
        let dir = tempfile::tempdir().expect("a temporary data directory");
        let data = dir.path().join("data");
        let log = dir.path().join("all-in-one.log");
        let log_file = std::fs::File::create(&log).expect("the all-in-one's log file");
        let mut cmd = Command::new(BIN);
        cmd.arg("all-in-one")
            .arg("--data-dir")
            .arg(&data)
            .args(["--complaint-port", "0", "--notification-port", "0"])
            .args(["--audit-port", "0", "--event-store-port", "0"])
            .env("LOG_FORMAT", "json")
            .env("LOG_LEVEL", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(log_file));
        // The embedded default, whatever the environment names.
        for var in [
            "DATABASE_URL",
            "RABBITMQ_URL",
            "REDIS_URL",
            "MONGODB_URL",
            "SMTP_URL",
            "PORT",
        ] {
            cmd.env_remove(var);
        }
        let child = cmd.spawn().expect("starting sagaflow all-in-one");
        let mut system = System {
            child,
            log,
            urls: BTreeMap::new(),
            _dir: dir,
        };
        let (child, log) = (&mut system.child, system.log.clone());
        let urls = eventually("the all-in-one to listen on its four ports", || {
            if let Some(status) = child.try_wait().expect("polling the all-in-one") {
                panic!(
                    "the all-in-one exited ({status}) before it listened:\n{}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                );
            }
            let urls = listening(&log);
            let all = SERVICES.iter().all(|(s, _)| urls.contains_key(*s));
            std::future::ready(all.then_some(urls))
        })
        .await;
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(2))
            .build()
            .expect("an HTTP client");
        eventually("every service to answer 200 on /health/ready", || {
            let (client, urls) = (client.clone(), urls.clone());
            async move {
                for base in urls.values() {
                    let r = client
                        .get(format!("{base}/health/ready"))
                        .send()
                        .await
                        .ok()?;
                    if r.status() != reqwest::StatusCode::OK {
                        return None;
                    }
                }
                Some(())
            }
        })
        .await;
        system.urls = urls;
        system
    }
}

/// The warnings and errors the all-in-one logged (the last 50), for a failure's message.
fn problems(log: &Path) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text
        .lines()
        .filter(|l| {
            serde_json::from_str::<Value>(l)
                .map(|v| v["level"] == "warn" || v["level"] == "error")
                .unwrap_or(true)
        })
        .collect();
    lines[lines.len().saturating_sub(50)..].join("\n")
}

/// Runs `k6/<script>` with the smoke profile against `system`; asserts that k6 exited 0 (every
/// threshold held) and answers its summary (`--summary-export`).
async fn k6(system: &System, script: &str) -> Value {
    let k6 = std::env::var("TEST_K6").unwrap_or_else(|_| {
        panic!(
            "TEST_K6 is not set: run scripts/kit-tools (it installs k6 and prints K6=<path>); ./scripts/test exports TEST_K6"
        )
    });
    let out_dir = tempfile::tempdir().expect("a directory for the summary");
    let summary = out_dir.path().join("summary.json");
    let path = format!("{ROOT}/k6/{script}");
    let mut cmd = tokio::process::Command::new(&k6);
    cmd.arg("run")
        .args(["--quiet", "--no-color", "--no-usage-report"])
        // No REST API server: nothing listens, nothing collides with a parallel k6.
        .args(["--address", ""])
        .arg("--summary-export")
        .arg(&summary)
        .arg(&path)
        .current_dir(ROOT.as_str())
        .env("K6_PROFILE", "smoke")
        // k6 sends nothing anywhere but to the system under test.
        .env("K6_NO_USAGE_REPORT", "true")
        .stdin(Stdio::null())
        .kill_on_drop(true);
    for (service, var) in SERVICES {
        cmd.env(var, &system.urls[service]);
    }
    let out = tokio::time::timeout(K6_TIMEOUT, cmd.output())
        .await
        .unwrap_or_else(|_| panic!("k6 run {script} did not finish within {K6_TIMEOUT:?}"))
        .unwrap_or_else(|e| panic!("running {k6}: {e}"));
    let said = format!(
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "k6 run {script} failed ({}): a threshold was crossed or the script broke:\n{said}\nthe all-in-one's warnings and errors:\n{}",
        out.status,
        problems(&system.log)
    );
    let text = std::fs::read_to_string(&summary)
        .unwrap_or_else(|e| panic!("k6 wrote no summary for {script} ({e}):\n{said}"));
    let summary: Value = serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("the summary of {script} is not JSON ({e}): {text}"));
    let metrics = &summary["metrics"];
    // Every threshold, as the summary records it (`true` = crossed), held.
    for (name, m) in metrics.as_object().expect("the summary's metrics") {
        for (threshold, crossed) in m["thresholds"].as_object().into_iter().flatten() {
            assert_eq!(
                crossed,
                &Value::Bool(false),
                "{script}: {name} {threshold} crossed"
            );
        }
    }
    let iterations = count(metrics, "iterations", script);
    let (passes, fails) = (
        metrics["checks"]["passes"].as_u64().unwrap_or(0),
        metrics["checks"]["fails"].as_u64().unwrap_or(u64::MAX),
    );
    assert!(iterations > 0, "{script} ran no iteration");
    assert!(
        passes > 0 && fails == 0,
        "{script}: {passes} checks passed, {fails} failed"
    );
    assert_eq!(
        count(metrics, "iteration_errors", script),
        0,
        "{script}: iterations threw:\n{said}"
    );
    println!(
        "k6 {script}: {iterations} iterations, {passes} checks passed, http_req_duration p95 {} ms",
        metrics["http_req_duration"]["p(95)"]
    );
    summary
}

/// A Counter's count, or a Trend's number of samples (the scripts put `count` in their
/// summaryTrendStats), in a summary.
fn count(metrics: &Value, name: &str, script: &str) -> u64 {
    metrics[name]["count"]
        .as_u64()
        .unwrap_or_else(|| panic!("{script}: no count of {name} in the summary"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "load with latency thresholds: scripts/test runs it alone, after the other tests"]
async fn the_k6_scenarios_hold_their_thresholds_against_the_all_in_one() {
    let system = System::start().await;

    // One script at a time: they share two cores with the all-in-one, and their latency
    // thresholds assume nothing else loads it.
    let script = "event-publishing-load.js";
    let s = k6(&system, script).await;
    let m = &s["metrics"];
    assert!(
        count(m, "http_req_duration{op:create}", script) > 0,
        "no create"
    );
    assert!(
        count(m, "event_visible_lag", script) > 0,
        "no creation's lag measured"
    );
    assert_eq!(
        count(m, "events_not_visible", script),
        0,
        "creations never visible"
    );
    assert!(
        count(m, "idempotent_replays", script) > 0,
        "no idempotent replay"
    );

    let script = "saga-coordination-stress.js";
    let s = k6(&system, script).await;
    let m = &s["metrics"];
    assert!(count(m, "sagas_completed", script) > 0, "no saga completed");
    assert!(count(m, "saga_completion", script) > 0);
    assert_eq!(count(m, "sagas_not_completed", script), 0);
    assert_eq!(count(m, "sagas_effects_missing", script), 0);
    assert!(count(m, "sagas_compensated", script) > 0, "no compensation");
    assert!(
        count(m, "stale_if_match_refused", script) > 0,
        "no stale If-Match refused"
    );
    assert_eq!(
        (
            m["saga_checks"]["fails"].as_u64(),
            m["saga_checks"]["passes"].as_u64().is_some_and(|p| p > 0)
        ),
        (Some(0), true),
        "saga checks: {}",
        m["saga_checks"]
    );

    let script = "event-store-performance.js";
    let s = k6(&system, script).await;
    let m = &s["metrics"];
    for op in ["feed", "stream", "state", "replay"] {
        assert!(
            count(m, &format!("http_req_duration{{op:{op}}}"), script) > 0,
            "no {op} request"
        );
    }
    assert!(
        count(m, "feed_events_read", script) > 0,
        "the feed read nothing"
    );
    assert!(count(m, "events_replayed", script) > 0, "nothing replayed");
}
