//! The load and the history check of the fault tests, Jepsen-style: clients record every
//! command that got a 2xx; after the faults, the system is left to settle and the history is
//! checked against what every service shows.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

/// What the clients were told.
#[derive(Default)]
pub struct Ledger {
    /// Complaint id → the highest version a 2xx acknowledged.
    pub acked: Mutex<BTreeMap<String, u64>>,
    /// Complaints whose `close` was acknowledged.
    pub closed: Mutex<BTreeSet<String>>,
    pub commands: AtomicUsize,
    pub failed_attempts: AtomicUsize,
}

impl Ledger {
    fn ack(&self, id: &str, version: u64) {
        let mut acked = self.acked.lock().expect("ledger");
        let v = acked.entry(id.to_owned()).or_insert(0);
        *v = (*v).max(version);
        self.commands.fetch_add(1, Ordering::SeqCst);
    }
}

/// Where the clients send commands: any replica of the complaint service.
pub struct Targets {
    pub complaint: Vec<String>,
    next: AtomicUsize,
}

impl Targets {
    pub fn new(complaint: Vec<String>) -> Self {
        Self {
            complaint,
            next: AtomicUsize::new(0),
        }
    }

    fn pick(&self) -> &str {
        let i = self.next.fetch_add(1, Ordering::Relaxed);
        &self.complaint[i % self.complaint.len()]
    }
}

/// A pause between a failed attempt and the next (the server may be down or restarting).
const BACKOFF: Duration = Duration::from_millis(50);

/// Tells the clients to stop.
#[derive(Clone, Default)]
pub struct Stop(Arc<std::sync::atomic::AtomicBool>);

impl Stop {
    pub fn now(&self) {
        self.0.store(true, Ordering::SeqCst);
    }

    fn running(&self) -> bool {
        !self.0.load(Ordering::SeqCst)
    }
}

/// `workers` clients, each running sagas (create → assign → process → close) until `stop`,
/// every command sent with the version it read (`If-Match`), a create with an idempotency key
/// so that a create whose answer was lost can be sent again safely.
pub async fn drive(targets: Arc<Targets>, workers: usize, stop: Stop, ledger: Arc<Ledger>) {
    let mut tasks = Vec::new();
    for w in 0..workers {
        let (targets, ledger, stop) = (targets.clone(), ledger.clone(), stop.clone());
        tasks.push(tokio::spawn(async move {
            let client = reqwest::Client::builder()
                .timeout(Duration::from_secs(5))
                .build()
                .expect("a client");
            let mut n = 0;
            while stop.running() {
                n += 1;
                run_saga(&client, &targets, &ledger, &stop, &format!("u{w}x{n}")).await;
            }
        }));
    }
    for t in tasks {
        t.await.expect("a client task");
    }
}

async fn run_saga(
    client: &reqwest::Client,
    targets: &Targets,
    ledger: &Ledger,
    stop: &Stop,
    user: &str,
) {
    let key = uuid::Uuid::new_v4().to_string();
    let body = json!({"userId": user, "title": format!("Complaint of {user}"),
        "description": "Fault test", "priority": "LOW", "category": "faults"});
    let id = loop {
        if !stop.running() {
            return;
        }
        let sent = client
            .post(format!("{}/api/complaints", targets.pick()))
            .header("Idempotency-Key", &key)
            .json(&body)
            .send()
            .await;
        match sent {
            Ok(r) if r.status() == 201 => {
                let view: Value = match r.json().await {
                    Ok(v) => v,
                    Err(_) => continue,
                };
                let id = view["id"].as_str().expect("an id").to_owned();
                ledger.ack(&id, view["version"].as_u64().unwrap_or(1));
                break id;
            }
            _ => {
                ledger.failed_attempts.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(BACKOFF).await;
            }
        }
    };
    while stop.running() {
        let base = targets.pick();
        let view: Value = match client
            .get(format!("{base}/api/complaints/{id}"))
            .send()
            .await
        {
            Ok(r) if r.status() == 200 => match r.json().await {
                Ok(v) => v,
                Err(_) => continue,
            },
            _ => {
                ledger.failed_attempts.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(BACKOFF).await;
                continue;
            }
        };
        let (action, body) = match view["status"].as_str() {
            Some("OPEN") => ("assign", json!({"assignedTo": "agent-7"})),
            Some("ASSIGNED") => ("process", json!({"resolution": "Refunded"})),
            Some("RESOLVED") => ("close", json!({})),
            _ => return,
        };
        let version = view["version"].as_u64().unwrap_or(0);
        let sent = client
            .put(format!("{base}/api/complaints/{id}/{action}"))
            .header("If-Match", format!("\"{version}\""))
            .json(&body)
            .send()
            .await;
        match sent {
            Ok(r) if r.status() == 200 => {
                if let Ok(v) = r.json::<Value>().await {
                    ledger.ack(&id, v["version"].as_u64().unwrap_or(version + 1));
                    if action == "close" {
                        ledger.closed.lock().expect("ledger").insert(id.clone());
                    }
                }
            }
            // Someone else (a retry whose answer was lost) moved it: read again.
            Ok(r) if r.status() == 412 || r.status() == 409 => {}
            _ => {
                ledger.failed_attempts.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(BACKOFF).await;
            }
        }
    }
}

/// Base URLs of one replica of each service, for the check.
pub struct Services {
    pub complaint: String,
    pub notification: String,
    pub audit: String,
    pub event_store: String,
}

/// What the check found.
#[derive(Debug, Default)]
pub struct Report {
    pub sagas: usize,
    pub commands: usize,
    /// Acknowledged versions missing from the archive or the audit trail, mails never sent.
    pub lost: usize,
    /// Events archived or audited twice, a mail planned twice (a second Message-ID).
    pub doubled: usize,
    /// Mails delivered again with their own Message-ID: a sender killed between the relay's
    /// acceptance and its own record of it (SMTP cannot be exactly-once; the receiver keeps one
    /// copy by Message-ID).
    pub resent: usize,
    pub problems: Vec<String>,
}

fn expected_templates(event_type: &str) -> &'static [&'static str] {
    match event_type {
        "COMPLAINT_CREATED" => &["complaint-created-admin", "complaint-created-user"],
        "COMPLAINT_ASSIGNED" => &["complaint-assigned-assignee", "complaint-assigned-user"],
        "COMPLAINT_PROCESSED" => &["complaint-processed-user"],
        "COMPLAINT_CLOSED" => &["complaint-closed-user"],
        _ => &[],
    }
}

async fn get(client: &reqwest::Client, url: String) -> Option<Value> {
    let r = client.get(&url).send().await.ok()?;
    if !r.status().is_success() {
        return None;
    }
    r.json().await.ok()
}

/// One complaint's history against the services: Ok when it is complete and single.
async fn check_one(
    client: &reqwest::Client,
    s: &Services,
    id: &str,
    acked: u64,
    closed: bool,
    mails: &[(String, String)],
) -> Result<(), (usize, usize, String)> {
    let pending = |what: String| Err((0, 0, what));
    let Some(view) = get(client, format!("{}/api/complaints/{id}", s.complaint)).await else {
        return pending(format!("{id}: no view"));
    };
    let version = view["version"].as_u64().unwrap_or(0);
    if version < acked {
        return Err((
            (acked - version) as usize,
            0,
            format!("{id}: acknowledged version {acked}, the complaint is at {version}"),
        ));
    }
    let Some(archived) = get(client, format!("{}/api/events/stream/{id}", s.event_store)).await
    else {
        return pending(format!("{id}: no archive"));
    };
    let events = archived["events"].as_array().cloned().unwrap_or_default();
    let versions: Vec<u64> = events
        .iter()
        .filter_map(|e| e["metadata"]["version"].as_u64())
        .collect();
    let ids: BTreeSet<&str> = events
        .iter()
        .filter_map(|e| e["eventId"].as_str())
        .collect();
    let want: Vec<u64> = (1..=version).collect();
    if ids.len() != events.len() || versions.len() > want.len() {
        return Err((
            0,
            events.len().saturating_sub(want.len()).max(1),
            format!("{id}: archived {versions:?}"),
        ));
    }
    if versions != want {
        return pending(format!("{id}: archived {versions:?}, want {want:?}"));
    }
    let Some(trail) = get(client, format!("{}/api/audit/trail/{id}", s.audit)).await else {
        return pending(format!("{id}: no audit trail"));
    };
    let audited: Vec<u64> = trail["entries"]
        .as_array()
        .map(|e| e.iter().filter_map(|x| x["version"].as_u64()).collect())
        .unwrap_or_default();
    if audited.len() > want.len() {
        return Err((
            0,
            audited.len() - want.len(),
            format!("{id}: audited {audited:?}"),
        ));
    }
    if audited != want {
        return pending(format!("{id}: audited {audited:?}, want {want:?}"));
    }
    let mut expected: Vec<&str> = events
        .iter()
        .filter_map(|e| e["eventType"].as_str())
        .flat_map(|t| expected_templates(t).iter().copied())
        .collect();
    expected.sort_unstable();
    // One mail per Message-ID: a copy delivered again under the same id is counted apart.
    let distinct: BTreeSet<(&str, &str)> = mails
        .iter()
        .map(|(t, m)| (t.as_str(), m.as_str()))
        .collect();
    let mut got: Vec<&str> = distinct.iter().map(|(t, _)| *t).collect();
    got.sort_unstable();
    let per_template: BTreeMap<&str, usize> = got.iter().fold(BTreeMap::new(), |mut m, t| {
        *m.entry(*t).or_default() += 1;
        m
    });
    let want_per: BTreeMap<&str, usize> = expected.iter().fold(BTreeMap::new(), |mut m, t| {
        *m.entry(*t).or_default() += 1;
        m
    });
    let extra: usize = per_template
        .iter()
        .map(|(t, n)| n.saturating_sub(*want_per.get(t).unwrap_or(&0)))
        .sum();
    if extra > 0 {
        return Err((0, extra, format!("{id}: mails {got:?}, want {expected:?}")));
    }
    if got != expected {
        return pending(format!("{id}: mails {got:?}, want {expected:?}"));
    }
    let saga = view["sagaStatus"].as_str().unwrap_or("");
    if closed && saga != "COMPLETED" {
        return pending(format!("{id}: closed, saga {saga}"));
    }
    if !matches!(saga, "COMPLETED" | "RUNNING") {
        return Err((0, 0, format!("{id}: saga {saga}")));
    }
    Ok(())
}

/// Waits until every acknowledged complaint's history is complete and single, and the DLQs are
/// empty, as long as the system makes progress: it gives up when nothing settled for `stalled`
/// (or after 15 minutes in all), and reports what was still lost or doubled then.
pub async fn check(
    services: &Services,
    ledger: &Ledger,
    mails: impl Fn() -> futures_like::BoxMails,
    stalled: Duration,
) -> Report {
    let client = reqwest::Client::new();
    let acked = ledger.acked.lock().expect("ledger").clone();
    let closed = ledger.closed.lock().expect("ledger").clone();
    let started = Instant::now();
    let mut last_progress = Instant::now();
    let mut fewest = usize::MAX;
    // Histories already complete are not read again until the final pass, which reads them all
    // (an effect doubled late is still seen).
    let mut complete: BTreeSet<String> = BTreeSet::new();
    let mut final_pass = false;
    loop {
        let by_complaint = mails().await;
        let resent = by_complaint
            .values()
            .map(|m| m.len() - m.iter().collect::<BTreeSet<_>>().len())
            .sum();
        let mut report = Report {
            sagas: acked.len(),
            commands: ledger.commands.load(Ordering::SeqCst),
            resent,
            ..Report::default()
        };
        let mut done = true;
        let mut pending = 0;
        for (id, version) in &acked {
            if !final_pass && complete.contains(id) {
                continue;
            }
            let none = Vec::new();
            let m = by_complaint.get(id).unwrap_or(&none);
            match check_one(&client, services, id, *version, closed.contains(id), m).await {
                Ok(()) => {
                    complete.insert(id.clone());
                }
                Err((lost, doubled, what)) => {
                    done = false;
                    if lost == 0 && doubled == 0 {
                        pending += 1;
                    }
                    report.lost += lost;
                    report.doubled += doubled;
                    report.problems.push(what);
                }
            }
        }
        for (exchange, owner) in [
            ("complaints.events", &services.complaint),
            ("notifications.events", &services.notification),
            ("audit.events", &services.audit),
        ] {
            let d = get(&client, format!("{owner}/api/dlq/{exchange}")).await;
            let n = d
                .as_ref()
                .and_then(|d| d["items"].as_array().map(Vec::len))
                .unwrap_or(usize::MAX);
            if n != 0 {
                done = false;
                report
                    .problems
                    .push(format!("{exchange}.dlq holds {n} letters"));
            }
        }
        if done && !final_pass {
            final_pass = true;
            continue;
        }
        if report.problems.len() < fewest {
            fewest = report.problems.len();
            last_progress = Instant::now();
        }
        let given_up =
            last_progress.elapsed() >= stalled || started.elapsed() >= Duration::from_secs(900);
        if done || given_up {
            // What was still missing when the system stopped settling is lost.
            report.lost += pending;
            return report;
        }
        final_pass = false;
        if std::env::var("FAULTS_DEBUG").is_ok() {
            eprintln!(
                "{} pending: {:?}",
                report.problems.len(),
                report.problems.iter().take(3).collect::<Vec<_>>()
            );
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Mails by complaint id: the templates sent.
pub mod futures_like {
    use std::collections::BTreeMap;
    use std::future::Future;
    use std::pin::Pin;

    /// Complaint id → (template, Message-ID) of every mail delivered.
    pub type BoxMails =
        Pin<Box<dyn Future<Output = BTreeMap<String, Vec<(String, String)>>> + Send>>;
}
