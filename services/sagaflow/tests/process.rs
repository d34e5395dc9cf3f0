//! The `sagaflow` binary as a user runs it: configuration errors, `kill -9` and SIGTERM, restart
//! on the same data directory.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

const BIN: &str = env!("CARGO_BIN_EXE_sagaflow");

struct Running {
    child: Child,
    /// The complaint service's base URL (or the one service's, for `serve`).
    base: String,
    /// Every service's base URL, by service name.
    urls: std::collections::HashMap<String, String>,
    lines: mpsc::Receiver<String>,
}

impl Running {
    fn url(&self, service: &str) -> String {
        self.urls
            .get(service)
            .cloned()
            .unwrap_or_else(|| panic!("{service} is not running"))
    }
}

impl Drop for Running {
    /// A test that fails leaves no server behind.
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts the binary with `args` and waits (30 s at most) for `services` "listening" lines.
#[allow(clippy::zombie_processes)] // `Running`'s Drop reaps the child
fn start(args: &[&str], env: &[(&str, &str)], services: usize) -> Running {
    let mut cmd = Command::new(BIN);
    cmd.args(args)
        .env("LOG_FORMAT", "json")
        .env_remove("DATABASE_URL")
        .env_remove("PORT")
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().expect("spawn sagaflow");
    let stderr = child.stderr.take().expect("stderr");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut base = None;
    let mut urls = std::collections::HashMap::new();
    let mut listening = 0;
    while listening < services {
        let left = deadline.saturating_duration_since(Instant::now());
        let line = rx.recv_timeout(left).unwrap_or_else(|_| {
            panic!("sagaflow {args:?} did not say it was listening within 30 s")
        });
        let Ok(log) = serde_json::from_str::<Value>(&line) else {
            continue;
        };
        if log["message"] == "listening" {
            listening += 1;
            let addr = log["addr"].as_str().expect("addr").to_owned();
            urls.insert(
                log["service"].as_str().unwrap_or("").to_owned(),
                format!("http://{addr}"),
            );
            if base.is_none() || log["service"] == "complaint-service" {
                base = Some(format!("http://{addr}"));
            }
        }
    }
    Running {
        child,
        base: base.expect("an address"),
        urls,
        lines: rx,
    }
}

/// The all-in-one on `dir`, every port picked by the system.
fn all_in_one(dir: &Path) -> Running {
    let dir = dir.to_str().expect("utf-8 path");
    let mut args = vec!["all-in-one", "--data-dir", dir];
    args.extend([
        "--complaint-port",
        "0",
        "--notification-port",
        "0",
        "--audit-port",
        "0",
        "--event-store-port",
        "0",
    ]);
    start(&args, &[], 4)
}

/// Runs the binary to its end (10 s at most) and returns its exit code and stderr.
fn run_to_end(args: &[&str], env: &[(&str, &str)]) -> (i32, String) {
    let mut cmd = Command::new(BIN);
    cmd.args(args)
        .env_remove("DATABASE_URL")
        .env_remove("PORT")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().expect("spawn");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(status) = child.try_wait().expect("wait") {
            let out = child.wait_with_output().expect("output");
            return (
                status.code().unwrap_or(-1),
                String::from_utf8_lossy(&out.stderr).into_owned(),
            );
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("sagaflow {args:?} did not exit within 10 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn complaint(n: usize) -> Value {
    json!({"userId": format!("user-{n}"), "title": format!("Complaint {n}"), "description": "d", "priority": "MEDIUM", "category": "c"})
}

async fn create(client: &reqwest::Client, base: &str, n: usize) -> reqwest::Result<Value> {
    let res = client
        .post(format!("{base}/api/complaints"))
        .json(&complaint(n))
        .send()
        .await?;
    assert_eq!(res.status(), 201);
    res.json().await
}

#[tokio::test]
async fn kill_9_right_after_a_201_loses_nothing() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut running = all_in_one(dir.path());
    let client = reqwest::Client::new();
    let mut made = Vec::new();
    for n in 0..20 {
        made.push(
            create(&client, &running.base, n).await.expect("create")["id"]
                .as_str()
                .expect("id")
                .to_owned(),
        );
    }
    let assigned = client
        .put(format!(
            "{}/api/complaints/{}/assign",
            running.base, made[0]
        ))
        .json(&json!({"assignedTo": "bob"}))
        .send()
        .await
        .expect("assign");
    assert_eq!(assigned.status(), 200);
    let last = create(&client, &running.base, 20).await.expect("create");
    running.child.kill().expect("SIGKILL"); // right after the 201
    running.child.wait().expect("reaped");
    made.push(last["id"].as_str().expect("id").to_owned());

    let mut again = all_in_one(dir.path());
    for (n, id) in made.iter().enumerate() {
        let view: Value = client
            .get(format!("{}/api/complaints/{id}", again.base))
            .send()
            .await
            .expect("get")
            .json()
            .await
            .expect("json");
        assert_eq!(view["title"], format!("Complaint {n}"));
        assert_eq!(view["timeline"][0]["eventType"], "COMPLAINT_CREATED");
    }
    let first: Value = client
        .get(format!("{}/api/complaints/{}", again.base, made[0]))
        .send()
        .await
        .expect("get")
        .json()
        .await
        .expect("json");
    assert_eq!(
        (first["status"].as_str(), first["version"].as_u64()),
        (Some("ASSIGNED"), Some(2))
    );
    again.child.kill().expect("kill");
    let _ = again.child.wait();
}

#[tokio::test]
async fn sigterm_drains_in_flight_requests_and_exits_cleanly() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut running = all_in_one(dir.path());
    // A fresh connection per request, so that no request rides on a keep-alive connection the
    // server is closing. Connections still in the kernel's backlog when the server stops
    // accepting are reset; those requests get no answer at all, which a client retries. What
    // must never happen is an answer cut short or a 5xx.
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .expect("client");
    let base = running.base.clone();
    let (done_tx, mut done) = tokio::sync::mpsc::unbounded_channel();
    for n in 0..200 {
        let (client, base, done_tx) = (client.clone(), base.clone(), done_tx.clone());
        tokio::spawn(async move {
            let _ = done_tx.send(create(&client, &base, n).await);
        });
    }
    drop(done_tx);
    // SIGTERM once the server is busy: a few answered, the rest in flight.
    let mut answered = Vec::new();
    while answered.len() < 5 {
        let view = done
            .recv()
            .await
            .expect("a result")
            .expect("served before SIGTERM");
        answered.push(view["id"].as_str().expect("id").to_owned());
    }
    let pid = running.child.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .expect("kill")
            .success()
    );
    while let Some(result) = done.recv().await {
        match result {
            Ok(view) => answered.push(view["id"].as_str().expect("id").to_owned()),
            Err(e) => assert!(
                !e.is_decode() && !e.is_body() && e.status().is_none(),
                "an answer was cut short: {e}"
            ),
        }
    }
    let deadline = Instant::now() + Duration::from_secs(15);
    let status = loop {
        if let Some(status) = running.child.try_wait().expect("wait") {
            break status;
        }
        assert!(Instant::now() < deadline, "no exit within 15 s of SIGTERM");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success(), "exit status {status}");
    let logs: Vec<String> = running.lines.try_iter().collect();
    assert!(
        logs.iter().any(|l| l.contains("stopped cleanly")),
        "{logs:?}"
    );

    let mut again = all_in_one(dir.path());
    for id in &answered {
        let res = client
            .get(format!("{}/api/complaints/{id}", again.base))
            .send()
            .await
            .expect("get");
        assert_eq!(
            res.status(),
            200,
            "complaint {id} was answered 201 before the stop"
        );
    }
    again.child.kill().expect("kill");
    let _ = again.child.wait();
}

#[tokio::test]
async fn serve_complaint_runs_on_database_url_and_port() {
    let dir = tempfile::tempdir().expect("temp dir");
    let url = format!("sqlite://{}", dir.path().join("complaint.db").display());
    let data = dir.path().join("data");
    let data = data.to_str().expect("utf-8 path");
    let mut running = start(
        &["serve", "complaint", "--host", "127.0.0.1"],
        &[
            ("DATABASE_URL", &url),
            ("PORT", "0"),
            ("SAGAFLOW_DATA_DIR", data),
        ],
        1,
    );
    let client = reqwest::Client::new();
    let view = create(&client, &running.base, 1).await.expect("create");
    let ready = client
        .get(format!("{}/health/ready", running.base))
        .send()
        .await
        .expect("ready");
    assert_eq!(ready.status(), 200);
    assert_eq!(view["version"], 1);
    running.child.kill().expect("kill");
    let _ = running.child.wait();
}

#[test]
fn every_malformed_setting_exits_2_with_one_line_naming_it() {
    for (args, env, var) in [
        (
            &["all-in-one"][..],
            &[("LOG_LEVEL", "loud")][..],
            "LOG_LEVEL",
        ),
        (
            &["all-in-one"][..],
            &[("LOG_FORMAT", "xml")][..],
            "LOG_FORMAT",
        ),
        (&["all-in-one"][..], &[("TOPOLOGY", "mine")][..], "TOPOLOGY"),
        (
            &["all-in-one"][..],
            &[("CORRELATION_ID_HEADER", "a b")][..],
            "CORRELATION_ID_HEADER",
        ),
        (
            &["serve", "complaint"][..],
            &[("PORT", "http"), ("DATABASE_URL", "sqlite:///tmp/x.db")][..],
            "PORT",
        ),
        (&["serve", "complaint"][..], &[][..], "DATABASE_URL"),
        (
            &["all-in-one"][..],
            &[("DATABASE_URL", "mysql://root:hunter2@db/x")][..],
            "DATABASE_URL",
        ),
        (
            &["serve", "complaint"][..],
            &[("DATABASE_URL", "postgres://app:hunter2@/app")][..],
            "DATABASE_URL",
        ),
        (
            &["all-in-one"][..],
            &[("RABBITMQ_URL", "http://guest:hunter2@127.0.0.1")][..],
            "RABBITMQ_URL",
        ),
        (
            &["all-in-one"][..],
            &[("RABBITMQ_URL", "amqp://guest:hunter2@127.0.0.1:5672/%2f")][..],
            "REDIS_URL",
        ),
        (
            &["all-in-one"][..],
            &[("MONGODB_URL", "mongo://x")][..],
            "MONGODB_URL",
        ),
        (
            &["all-in-one"][..],
            &[("SMTP_URL", "smtps://u:hunter2@relay")][..],
            "SMTP_URL",
        ),
        (
            &["all-in-one"][..],
            &[("AUDIT_SERVICE_URL", "audit:3007")][..],
            "AUDIT_SERVICE_URL",
        ),
        (
            &["serve", "complaint"][..],
            &[
                ("DATABASE_URL", "sqlite:///tmp/x.db"),
                ("NOTIFICATION_SERVICE_URL", "ftp://u:hunter2@n"),
            ][..],
            "NOTIFICATION_SERVICE_URL",
        ),
    ] {
        let (code, stderr) = run_to_end(args, env);
        assert_eq!(code, 2, "{args:?} {env:?}: {stderr}");
        let lines: Vec<&str> = stderr.lines().collect();
        assert_eq!(lines.len(), 1, "one line: {stderr}");
        assert!(lines[0].contains(var), "{stderr}");
        assert!(!stderr.contains("hunter2"), "a password leaked: {stderr}");
    }
}

#[test]
fn a_backend_that_does_not_answer_stops_the_service_without_showing_its_password() {
    let dir = tempfile::tempdir().expect("temp dir");
    let data = dir.path().to_str().expect("utf-8 path");
    let (code, stderr) = run_to_end(
        &["serve", "complaint"],
        &[
            ("DATABASE_URL", "postgres://app:hunter2@127.0.0.1:1/app"),
            ("LOG_FORMAT", "json"),
            ("SAGAFLOW_DATA_DIR", data),
        ],
    );
    assert_ne!(code, 0, "{stderr}");
    assert!(stderr.contains("PostgreSQL"), "{stderr}");
    assert!(!stderr.contains("hunter2"), "a password leaked: {stderr}");
}

#[test]
fn bad_flags_exit_2_with_one_line() {
    for args in [
        &["all-in-one", "--bogus"][..],
        &["frobnicate"][..],
        &["all-in-one", "--complaint-port", "high"][..],
        &["serve", "kitchen"][..],
        &[][..],
    ] {
        let (code, stderr) = run_to_end(args, &[]);
        assert_eq!(code, 2, "{args:?}: {stderr}");
        assert_eq!(stderr.lines().count(), 1, "{args:?}: {stderr}");
    }
    let (code, _) = run_to_end(&["--help"], &[]);
    assert_eq!(code, 0);
}

#[test]
fn help_describes_every_command_and_flag() {
    let out = Command::new(BIN).arg("--help").output().expect("run");
    let text = String::from_utf8_lossy(&out.stdout);
    for word in ["all-in-one", "serve"] {
        assert!(text.contains(word), "{text}");
    }
    let out = Command::new(BIN)
        .args(["all-in-one", "--help"])
        .output()
        .expect("run");
    let text = String::from_utf8_lossy(&out.stdout);
    for word in [
        "--data-dir",
        "SAGAFLOW_DATA_DIR",
        "--host",
        "--complaint-port",
        "--notification-port",
        "--audit-port",
        "--event-store-port",
    ] {
        assert!(text.contains(word), "{text}");
    }
}

/// Takes a complaint one step further along create → assign → resolve → close, from the status
/// its view shows; returns false once it is closed.
async fn advance(client: &reqwest::Client, base: &str, id: &str) -> reqwest::Result<bool> {
    let view: Value = client
        .get(format!("{base}/api/complaints/{id}"))
        .send()
        .await?
        .json()
        .await?;
    let (action, body) = match view["status"].as_str() {
        Some("OPEN") => ("assign", json!({"assignedTo": "agent-7"})),
        Some("ASSIGNED") => ("process", json!({"resolution": "Refunded"})),
        Some("RESOLVED") => ("close", json!({})),
        _ => return Ok(false),
    };
    client
        .put(format!("{base}/api/complaints/{id}/{action}"))
        .json(&body)
        .send()
        .await?
        .error_for_status()?;
    Ok(true)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_in_the_middle_of_sagas_loses_and_doubles_nothing() {
    use std::sync::{Arc, Mutex};
    let dir = tempfile::tempdir().expect("temp dir");
    let mut running = all_in_one(dir.path());
    let client = reqwest::Client::new();
    let created = Arc::new(Mutex::new(Vec::<String>::new()));
    let steps = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut sagas = Vec::new();
    for n in 0..12 {
        let (client, base, created, steps) = (
            client.clone(),
            running.base.clone(),
            created.clone(),
            steps.clone(),
        );
        sagas.push(tokio::spawn(async move {
            let Ok(view) = create(&client, &base, n).await else {
                return;
            };
            let id = view["id"].as_str().expect("id").to_owned();
            created.lock().expect("lock").push(id.clone());
            steps.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            while let Ok(true) = advance(&client, &base, &id).await {
                steps.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            }
        }));
    }
    // Kill once the sagas are well under way (some done, most in flight).
    let deadline = Instant::now() + Duration::from_secs(30);
    while steps.load(std::sync::atomic::Ordering::SeqCst) < 20 {
        assert!(Instant::now() < deadline, "the sagas made no progress");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    running.child.kill().expect("SIGKILL");
    running.child.wait().expect("reaped");
    let at_kill = steps.load(std::sync::atomic::Ordering::SeqCst);
    for s in sagas {
        s.await.expect("saga task");
    }
    let ids = created.lock().expect("lock").clone();
    assert!(ids.len() >= 5, "only {} sagas started", ids.len());
    let answered = steps.load(std::sync::atomic::Ordering::SeqCst);
    assert!(
        answered < ids.len() * 4,
        "every saga had finished before the kill: nothing was tested"
    );
    println!(
        "{} sagas started, killed after {at_kill} acknowledged commands ({answered} answered in all)",
        ids.len()
    );

    let again = all_in_one(dir.path());
    for id in &ids {
        while advance(&client, &again.base, id)
            .await
            .expect("advance after restart")
        {}
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    for id in &ids {
        loop {
            let view: Value = client
                .get(format!("{}/api/complaints/{id}", again.base))
                .send()
                .await
                .expect("get")
                .json()
                .await
                .expect("json");
            if view["sagaStatus"] == "COMPLETED" {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "saga {id} did not complete: {view}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    // Every effect exactly once: 4 archived events with versions 1–4, 4 audit entries, 6 mails.
    let addr = |service: &str| again.url(service);
    let mailbox =
        sagaflow_notification::mailer::mailbox::Mailbox::open(&dir.path().join("mailbox"))
            .expect("mailbox");
    let deadline = Instant::now() + Duration::from_secs(60);
    for id in &ids {
        loop {
            let archived: Value = client
                .get(format!("{}/api/events/stream/{id}", addr("event-store")))
                .send()
                .await
                .expect("get")
                .json()
                .await
                .expect("json");
            let trail: Value = client
                .get(format!("{}/api/audit/trail/{id}", addr("audit-service")))
                .send()
                .await
                .expect("get")
                .json()
                .await
                .expect("json");
            let versions: Vec<u64> = archived["events"]
                .as_array()
                .expect("events")
                .iter()
                .map(|e| e["metadata"]["version"].as_u64().expect("v"))
                .collect();
            let audited: Vec<u64> = trail["entries"]
                .as_array()
                .expect("entries")
                .iter()
                .map(|e| e["version"].as_u64().expect("v"))
                .collect();
            let mails = mailbox
                .read_all()
                .expect("mailbox")
                .into_iter()
                .filter(|m| m.header("X-Complaint-ID") == Some(id.as_str()))
                .count();
            if versions == [1, 2, 3, 4] && audited == [1, 2, 3, 4] && mails == 6 {
                break;
            }
            assert!(
                versions.len() <= 4 && audited.len() <= 4 && mails <= 6,
                "an effect was doubled for {id}: {versions:?} {audited:?} {mails} mails"
            );
            assert!(
                Instant::now() < deadline,
                "effects of {id} incomplete: {versions:?} {audited:?} {mails} mails"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// Schemathesis (PyPI, installed by `scripts/backends` into its Python environment) generates
/// requests from each service's `/openapi.json`, valid and invalid, including stateful
/// sequences, against the running all-in-one: no 5xx, every status code, content type, header
/// and body as the document says, and invalid input refused.
#[test]
fn schemathesis_finds_no_server_error_and_no_answer_outside_the_documents() {
    let tool = std::env::var("TEST_SCHEMATHESIS").unwrap_or_else(|_| {
        panic!("TEST_SCHEMATHESIS is not set: run `scripts/backends` (it installs schemathesis and prints SCHEMATHESIS=<path>) and export it as TEST_SCHEMATHESIS (./scripts/test does both)")
    });
    let examples = std::env::var("TEST_SCHEMATHESIS_EXAMPLES").unwrap_or_else(|_| "40".into());
    let dir = tempfile::tempdir().expect("temp dir");
    let running = all_in_one(dir.path());
    for service in [
        "complaint-service",
        "notification-service",
        "audit-service",
        "event-store",
    ] {
        let run = || {
            Command::new(&tool)
            .args([
                "run",
                &format!("{}/openapi.json", running.url(service)),
                "--checks",
                "not_a_server_error,status_code_conformance,content_type_conformance,response_headers_conformance,response_schema_conformance,negative_data_rejection",
                "--max-examples",
                &examples,
                "--workers",
                "2",
                // A request that hangs is a failure naming it, not a test that times out.
                "--request-timeout",
                "15",
                "--seed",
                "20261125",
                "--no-color",
            ])
            .env("SCHEMATHESIS_HOOKS", "")
            .output()
            .expect("schemathesis runs")
        };
        let mut out = run();
        // Hypothesis, under schemathesis's worker threads, sometimes fails to describe one of
        // its own lambdas (Python's ast module: "AST constructor recursion depth mismatch") and
        // schemathesis reports that as an error of the operation it was generating for. That
        // is the tool's defect, not a finding: such a run is made once more, and whatever the
        // second run finds fails the test.
        if !out.status.success()
            && String::from_utf8_lossy(&out.stdout)
                .contains("AST constructor recursion depth mismatch")
        {
            println!("schemathesis {service}: the tool's own AST error; running it again");
            out = run();
        }
        let text = String::from_utf8_lossy(&out.stdout);
        let summary = text
            .lines()
            .filter(|l| {
                l.contains(" generated, ") || (l.starts_with("=====") && l.contains(" in "))
            })
            .map(|l| l.trim_matches(|c: char| c == '=' || c.is_whitespace()))
            .collect::<Vec<_>>()
            .join(" | ");
        println!("schemathesis {service}: {summary}");
        assert!(
            out.status.success(),
            "schemathesis found failures on {service}:\n{text}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
