//! Two replicas of each service as `sagaflow serve` processes on the real backends, under load,
//! while replicas are killed with SIGKILL and RabbitMQ, Redis, PostgreSQL and the MongoDB wire
//! server are restarted one at a time. Run alone (it stops shared servers).

use std::collections::BTreeMap;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::backends;
use crate::history::{self, Ledger, Services, Stop, Targets};
use crate::{Proc, free_ports, pause, seconds};

const SERVICES: [&str; 4] = ["complaint", "notification", "audit", "event-store"];

struct Replica {
    args: Vec<String>,
    env: Vec<(String, String)>,
    proc: Proc,
    _dir: tempfile::TempDir,
}

impl Replica {
    fn start(service: &str, port: u16, index: usize, base: &[(String, String)]) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut env = base.to_vec();
        env.push(("PORT".into(), port.to_string()));
        env.push((
            "SAGAFLOW_DATA_DIR".into(),
            dir.path().to_str().expect("a path").to_owned(),
        ));
        env.push(("CONSUMER_NAME".into(), format!("{service}-{index}")));
        let args = vec![
            "serve".to_owned(),
            service.to_owned(),
            "--host".into(),
            "127.0.0.1".into(),
        ];
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        let proc = Proc::start(&refs, &env, 1);
        Self {
            args,
            env,
            proc,
            _dir: dir,
        }
    }

    fn restart(&mut self) {
        self.proc.kill();
        let refs: Vec<&str> = self.args.iter().map(String::as_str).collect();
        self.proc = Proc::start(&refs, &self.env, 1);
    }
}

/// Runs a shell command of the machine's own tools, failing the test if it fails.
fn sh(what: &str, script: &str) {
    let root = crate::repo::root();
    let out = Command::new("bash")
        .args(["-c", script])
        .current_dir(root)
        .output()
        .unwrap_or_else(|e| panic!("{what}: {e}"));
    assert!(
        out.status.success(),
        "{what} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Stops one backend and starts it again with `scripts/backends`.
fn restart_backend(name: &str) {
    let stop = match name {
        "rabbitmq" => {
            "rabbitmqctl -q stop_app && rabbitmqctl -q start_app && rabbitmqctl -q await_startup"
        }
        "redis" => "redis-cli -h 127.0.0.1 -p 6379 shutdown || true",
        "postgres" => {
            "pg_ctlcluster $(ls /usr/lib/postgresql | sort -n | tail -1) main stop -m fast"
        }
        _ => {
            // Waits (5 s at most) until the old server is gone, or the start would find it
            // still answering.
            "pid=$(cat ${SAGAFLOW_BACKENDS_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/sagaflow/backends}/mongodb.pid) && kill $pid \
             && for _ in $(seq 50); do kill -0 $pid 2>/dev/null || exit 0; sleep 0.1; done; exit 1"
        }
    };
    sh(&format!("stopping {name}"), stop);
    sh(
        &format!("starting {name}"),
        &format!("scripts/backends {name} >/dev/null"),
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "restarts the shared backends: scripts/test runs it alone, after the other tests"]
async fn two_replicas_each_through_kills_and_backend_restarts_lose_and_double_nothing() {
    let run = backends::run().await;
    let mut env = run.env.clone();
    let domain = format!("{}.example.com", run.id);
    env.push(("NOTIFY_ADMIN_EMAIL".into(), format!("admin@{domain}")));
    // Stream entries left by a killed replica are taken over after 2 s (30 s by default).
    env.push(("STREAM_RECLAIM_AFTER".into(), "2s".into()));
    let ports = free_ports(8);
    let mut replicas: Vec<Replica> = Vec::new();
    for (s, service) in SERVICES.iter().enumerate() {
        for i in 0..2 {
            replicas.push(Replica::start(service, ports[2 * s + i], i, &env));
        }
    }
    let url = |s: usize, i: usize| format!("http://127.0.0.1:{}", ports[2 * s + i]);

    let ledger = Arc::new(Ledger::default());
    let until = Instant::now() + Duration::from_secs(seconds());
    let stop = Stop::default();
    let load = tokio::spawn(history::drive(
        Arc::new(Targets::new(vec![url(0, 0), url(0, 1)])),
        6,
        stop.clone(),
        ledger.clone(),
    ));
    // Faults, one at a time: a replica killed (and restarted after a pause), then one backend
    // restarted, in turn, until every backend was restarted once and the time is up.
    let mut faults = 0;
    let mut notification_kills = 0;
    let mut backends_restarted = 0;
    let backends = ["rabbitmq", "redis", "postgres", "mongodb"];
    while backends_restarted < backends.len() || Instant::now() < until {
        tokio::time::sleep(pause(500, 2000)).await;
        let victim = (pause(0, 1000).as_millis() as usize) % replicas.len();
        replicas[victim].proc.kill();
        // Replicas 2 and 3 are the notification service's.
        if victim == 2 || victim == 3 {
            notification_kills += 1;
        }
        tokio::time::sleep(pause(100, 1000)).await;
        replicas[victim].restart();
        faults += 1;
        tokio::time::sleep(pause(500, 2000)).await;
        let b = backends[backends_restarted % backends.len()];
        tokio::task::spawn_blocking(move || restart_backend(b))
            .await
            .expect("a backend restart");
        faults += 1;
        backends_restarted += 1;
    }
    stop.now();
    load.await.expect("the load");
    let settling = Instant::now();
    let services = Services {
        complaint: url(0, 0),
        notification: url(1, 0),
        audit: url(2, 0),
        event_store: url(3, 0),
    };
    let sink = backends::env_or("TEST_SMTP_SINK", "http://127.0.0.1:8025");
    let mails = move || -> history::futures_like::BoxMails {
        let url = format!("{sink}/messages?domain={domain}");
        Box::pin(async move {
            let mut by: BTreeMap<String, Vec<(String, String)>> = BTreeMap::new();
            let Ok(r) = reqwest::get(&url).await else {
                return by;
            };
            let all: Vec<Value> = r.json().await.unwrap_or_default();
            for m in all {
                let h = &m["headers"];
                if let (Some(id), Some(t)) = (
                    h["X-Complaint-ID"].as_str(),
                    h["X-Sagaflow-Template"].as_str(),
                ) {
                    let message_id = h["Message-ID"].as_str().unwrap_or_default().to_owned();
                    by.entry(id.to_owned())
                        .or_default()
                        .push((t.to_owned(), message_id));
                }
            }
            by
        })
    };
    let report = history::check(&services, &ledger, mails, Duration::from_secs(60)).await;
    crate::print(
        &format!("two replicas per service, {backends_restarted} backend restarts"),
        &report,
        faults,
        ledger
            .failed_attempts
            .load(std::sync::atomic::Ordering::SeqCst),
        settling.elapsed(),
    );
    assert!(
        backends_restarted >= 4,
        "only {backends_restarted} backend restarts"
    );
    crate::assert_clean(&report);
    // A sender killed after the relay accepted its batch and before recording it sends that
    // batch again (same Message-IDs): at most one batch per kill.
    let batch = sagaflow_notification::sender::BATCH;
    assert!(
        report.resent <= notification_kills * batch,
        "{} mails delivered again, but only {notification_kills} notification replicas were killed (at most {batch} each)",
        report.resent
    );
    drop(replicas);
    run.clean().await;
}
