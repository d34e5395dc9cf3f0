//! Nothing lost, nothing doubled, under faults. Bounded load over HTTP (loopback) while
//! processes are killed with SIGKILL at random moments (and, on the real backends, the backends
//! restarted), then the history is checked (`history.rs`). Each run prints its figures.
//!
//! `FAULTS_SECONDS` sets how long load and faults last (default 10; the README names the long
//! run).

#[path = "../support/backends.rs"]
mod backends;
mod cluster;
mod history;
#[path = "../support/repo.rs"]
mod repo;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use history::{Ledger, Services, Stop, Targets};
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_sagaflow");

pub fn seconds() -> u64 {
    std::env::var("FAULTS_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(10)
}

/// A pseudo-random pause in [lo, hi) milliseconds.
pub fn pause(lo: u64, hi: u64) -> Duration {
    let r = u64::from(uuid::Uuid::new_v4().as_bytes()[0]) << 8
        | u64::from(uuid::Uuid::new_v4().as_bytes()[1]);
    Duration::from_millis(lo + r % (hi - lo).max(1))
}

/// Ports nobody uses now, below the kernel's ephemeral range (32768 and up on Linux), so that
/// the many client connections of a run cannot take one between this choice and the
/// service's bind (restarted services bind the same ports again).
pub fn free_ports(n: usize) -> Vec<u16> {
    let mut ports = Vec::new();
    while ports.len() < n {
        let candidate = 20_000 + (pause(0, 12_000).as_millis() as u16);
        if !ports.contains(&candidate)
            && std::net::TcpListener::bind(("127.0.0.1", candidate)).is_ok()
        {
            ports.push(candidate);
        }
    }
    ports
}

/// A `sagaflow` process, killed when dropped.
pub struct Proc {
    child: Child,
}

impl Proc {
    /// Starts `sagaflow args` and waits (60 s at most) for `services` "listening" lines.
    pub fn start(args: &[&str], env: &[(String, String)], services: usize) -> Self {
        let mut cmd = Command::new(BIN);
        cmd.args(args)
            .env("LOG_FORMAT", "json")
            .env("RETRY_BASE_DELAY", "100ms")
            .env_remove("DATABASE_URL")
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
                    // Nobody listens any more: keep draining so the process never blocks.
                    continue;
                }
            }
        });
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut listening = 0;
        let mut said = Vec::new();
        while listening < services {
            let left = deadline.saturating_duration_since(Instant::now());
            let Ok(line) = rx.recv_timeout(left) else {
                let _ = child.kill();
                let status = child.wait();
                panic!(
                    "sagaflow {args:?} did not listen within 60 s ({status:?}); it said:\n{}",
                    said.join("\n")
                );
            };
            if serde_json::from_str::<Value>(&line).is_ok_and(|l| l["message"] == "listening") {
                listening += 1;
            }
            said.push(line);
        }
        Self { child }
    }

    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}

fn print(kind: &str, report: &history::Report, faults: usize, failed: usize, settled: Duration) {
    println!(
        "{kind}: {} sagas, {} acknowledged commands ({failed} attempts failed during faults), {faults} faults injected, \
         events lost {}, effects doubled {}, mails delivered again under their own Message-ID {}, \
         settled in {} ms",
        report.sagas,
        report.commands,
        report.lost,
        report.doubled,
        report.resent,
        settled.as_millis()
    );
}

fn assert_clean(report: &history::Report) {
    assert!(
        report.lost == 0 && report.doubled == 0 && report.problems.is_empty(),
        "lost {}, doubled {}: {:#?}",
        report.lost,
        report.doubled,
        report.problems.iter().take(20).collect::<Vec<_>>()
    );
    assert!(
        report.sagas >= 5,
        "only {} sagas ran: nothing was tested",
        report.sagas
    );
}

/// The all-in-one, killed with SIGKILL again and again under load and restarted on the same
/// data directory.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_all_in_one_killed_again_and_again_under_load_loses_and_doubles_nothing() {
    let dir = tempfile::tempdir().expect("temp dir");
    let data = dir.path().to_str().expect("a path").to_owned();
    let ports = free_ports(4);
    let p: Vec<String> = ports.iter().map(u16::to_string).collect();
    let args = [
        "all-in-one",
        "--data-dir",
        &data,
        "--complaint-port",
        &p[0],
        "--notification-port",
        &p[1],
        "--audit-port",
        &p[2],
        "--event-store-port",
        &p[3],
    ];
    let url = |i: usize| format!("http://127.0.0.1:{}", ports[i]);
    let mut running = Proc::start(&args, &[], 4);

    let ledger = Arc::new(Ledger::default());
    let until = Instant::now() + Duration::from_secs(seconds());
    let stop = Stop::default();
    let load = tokio::spawn(history::drive(
        Arc::new(Targets::new(vec![url(0)])),
        6,
        stop.clone(),
        ledger.clone(),
    ));
    let mut faults = 0;
    while Instant::now() + Duration::from_millis(500) < until {
        tokio::time::sleep(pause(300, 2000)).await;
        running.kill();
        faults += 1;
        running = Proc::start(&args, &[], 4);
    }
    stop.now();
    load.await.expect("the load");
    let settling = Instant::now();
    let services = Services {
        complaint: url(0),
        notification: url(1),
        audit: url(2),
        event_store: url(3),
    };
    let mailbox_dir = dir.path().join("mailbox");
    let mails = move || -> history::futures_like::BoxMails {
        let dir = mailbox_dir.clone();
        Box::pin(async move {
            let mut by: BTreeMap<String, Vec<(String, String)>> = BTreeMap::new();
            let mailbox =
                sagaflow_notification::mailer::mailbox::Mailbox::open(&dir).expect("mailbox");
            for m in mailbox.read_all().unwrap_or_default() {
                if let (Some(id), Some(t)) =
                    (m.header("X-Complaint-ID"), m.header("X-Sagaflow-Template"))
                {
                    let message_id = m.header("Message-ID").unwrap_or_default().to_owned();
                    by.entry(id.to_owned())
                        .or_default()
                        .push((t.to_owned(), message_id));
                }
            }
            by
        })
    };
    let report = history::check(&services, &ledger, mails, Duration::from_secs(60)).await;
    print(
        "all-in-one",
        &report,
        faults,
        ledger
            .failed_attempts
            .load(std::sync::atomic::Ordering::SeqCst),
        settling.elapsed(),
    );
    assert!(faults >= 3, "only {faults} kills");
    assert_clean(&report);
}
