//! The load: closed loops of clients (create, saga, fill), an open loop at a fixed rate
//! (pipeline lag), and paged list queries. Every request goes over HTTP to loopback.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime};

use anyhow::Context as _;
use reqwest::StatusCode;
use serde_json::{Value, json};

use super::stats::Samples;
use super::system::Targets;

const PRIORITIES: [&str; 4] = ["LOW", "MEDIUM", "HIGH", "CRITICAL"];
/// Complaints spread over this many categories (the list filter picks one).
const CATEGORIES: u64 = 7;
/// How long the feed reader waits for a missing position before it reads past it.
const GAP_WAIT: Duration = Duration::from_millis(500);
/// The lag scenario's feed reader reads a page this long, and waits this long after a page
/// that was not full. The archive says when it stored each event (`archivedAt`), so reading
/// often buys no precision: it would only load the archive's store (on a MongoDB stand-in that
/// serves one request at a time, a 2 ms poll took most of its capacity).
const FEED_PAGE: u32 = 1000;
const FEED_POLL: Duration = Duration::from_millis(100);

/// Where the lag scenario's reader of the event store's feed reads from. Positions are taken
/// before their events commit, and on MongoDB two stream consumers append at once: a lower
/// position can appear after a higher one was read. So it reads from the first position it has
/// not seen, and passes a missing one only after `GAP_WAIT` (a position whose write failed never
/// comes).
struct Feed {
    /// Every position up to this one was seen (or given up on).
    contiguous: u64,
    /// Positions seen above `contiguous`.
    ahead: std::collections::BTreeSet<u64>,
    gap_since: Option<Instant>,
}

impl Feed {
    fn new(start: u64) -> Self {
        Self {
            contiguous: start,
            ahead: Default::default(),
            gap_since: None,
        }
    }

    fn after(&self) -> u64 {
        self.contiguous
    }

    /// Records the positions of a read; answers whether any was new.
    fn saw(&mut self, positions: impl Iterator<Item = u64>, now: Instant) -> bool {
        let mut moved = false;
        for p in positions.filter(|p| *p > self.contiguous) {
            moved |= self.ahead.insert(p);
        }
        loop {
            while self.ahead.remove(&(self.contiguous + 1)) {
                self.contiguous += 1;
            }
            let Some(&first) = self.ahead.first() else {
                self.gap_since = None;
                return moved;
            };
            let since = *self.gap_since.get_or_insert(now);
            if now.duration_since(since) < GAP_WAIT {
                return moved;
            }
            self.contiguous = first - 1;
            self.gap_since = None;
        }
    }
}
/// The list scenario's filter: about one complaint in 28.
pub const LIST_FILTER: &str = "priority=HIGH&category=bench-3";

/// The n-th complaint the bench creates.
fn complaint(n: u64) -> Value {
    json!({
        "userId": format!("bench-user-{}", n % 1000),
        "title": format!("Bench complaint {n}"),
        "description": "The kettle leaks when it boils; the base is wet and the switch trips.",
        "priority": PRIORITIES[(n % 4) as usize],
        "category": format!("bench-{}", n % CATEGORIES),
    })
}

/// The HTTP client and the services it drives.
#[derive(Clone)]
pub struct Driver {
    http: reqwest::Client,
    pub targets: Targets,
    /// Complaints this run created (every phase).
    pub created: Arc<AtomicU64>,
    sequence: Arc<AtomicU64>,
}

/// What a closed or open loop did.
#[derive(Debug, Default)]
pub struct Phase {
    pub ok: u64,
    pub errors: BTreeMap<String, u64>,
    pub elapsed: Duration,
    pub latencies: Samples,
}

impl Phase {
    pub fn error_count(&self) -> u64 {
        self.errors.values().sum()
    }
}

fn failure(what: &str, e: impl std::fmt::Display) -> String {
    format!("{what}: {e}")
}

impl Driver {
    pub fn new(targets: Targets, concurrency: usize) -> anyhow::Result<Self> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .pool_max_idle_per_host(concurrency.max(8) * 2)
            .tcp_nodelay(true)
            .build()
            .context("building the HTTP client")?;
        Ok(Self {
            http,
            targets,
            created: Arc::new(AtomicU64::new(0)),
            sequence: Arc::new(AtomicU64::new(0)),
        })
    }

    /// Creates one complaint; answers its id.
    pub async fn create(&self) -> Result<String, String> {
        let n = self.sequence.fetch_add(1, Ordering::Relaxed);
        let r = self
            .http
            .post(format!("{}/api/complaints", self.targets.complaint))
            .json(&complaint(n))
            .send()
            .await
            .map_err(|e| failure("create", e))?;
        if r.status() != StatusCode::CREATED {
            return Err(format!("create answered {}", r.status().as_u16()));
        }
        let view: Value = r.json().await.map_err(|e| failure("create body", e))?;
        self.created.fetch_add(1, Ordering::Relaxed);
        view["id"]
            .as_str()
            .map(str::to_owned)
            .ok_or_else(|| "create answered no id".to_owned())
    }

    async fn command(
        &self,
        id: &str,
        action: &str,
        version: u64,
        body: Value,
    ) -> Result<(), String> {
        let r = self
            .http
            .put(format!(
                "{}/api/complaints/{id}/{action}",
                self.targets.complaint
            ))
            .header("if-match", format!("\"{version}\""))
            .json(&body)
            .send()
            .await
            .map_err(|e| failure(action, e))?;
        if r.status() != StatusCode::OK {
            return Err(format!("{action} answered {}", r.status().as_u16()));
        }
        Ok(())
    }

    /// One saga's four commands: create, assign, resolve, close.
    pub async fn saga(&self) -> Result<String, String> {
        let id = self.create().await?;
        self.command(&id, "assign", 1, json!({"assignedTo": "bench-agent"}))
            .await?;
        self.command(
            &id,
            "process",
            2,
            json!({"resolution": "Replaced the kettle"}),
        )
        .await?;
        self.command(&id, "close", 3, json!({})).await?;
        Ok(id)
    }

    async fn get(&self, url: &str) -> anyhow::Result<Value> {
        let r = self
            .http
            .get(url)
            .send()
            .await
            .with_context(|| format!("GET {url}"))?;
        let status = r.status();
        if !status.is_success() {
            anyhow::bail!("GET {url} answered {status}");
        }
        r.json().await.with_context(|| format!("reading GET {url}"))
    }

    /// The saga status of complaint `id`.
    pub async fn saga_status(&self, id: &str) -> anyhow::Result<String> {
        let view = self
            .get(&format!("{}/api/complaints/{id}", self.targets.complaint))
            .await?;
        Ok(view["sagaStatus"].as_str().unwrap_or_default().to_owned())
    }

    /// One page of the list scenario.
    pub async fn list_page(&self, cursor: Option<&str>) -> anyhow::Result<Option<String>> {
        let mut url = format!(
            "{}/api/complaints?{LIST_FILTER}&limit=50",
            self.targets.complaint
        );
        if let Some(c) = cursor {
            url.push_str("&cursor=");
            url.push_str(c);
        }
        let page = self.get(&url).await?;
        Ok(page["nextCursor"].as_str().map(str::to_owned))
    }

    /// Archived events after `after` (the event store's global order).
    async fn archived_after(&self, after: u64, limit: u32) -> anyhow::Result<Vec<Value>> {
        let page = self
            .get(&format!(
                "{}/api/events/all?after={after}&limit={limit}",
                self.targets.event_store
            ))
            .await?;
        Ok(page["events"].as_array().cloned().unwrap_or_default())
    }

    /// The event store's last global position, by bisection over `after`.
    pub async fn archive_end(&self) -> anyhow::Result<u64> {
        self.end_of(|after| async move { Ok(!self.archived_after(after, 1).await?.is_empty()) })
            .await
    }

    /// The audit log's last entry (its `seq`), by bisection over the search's cursor.
    async fn audit_end(&self) -> anyhow::Result<u64> {
        self.end_of(|after| async move {
            let page = self
                .get(&format!(
                    "{}/api/audit/search?cursor={after}&limit=1",
                    self.targets.audit
                ))
                .await?;
            Ok(page["items"].as_array().is_some_and(|i| !i.is_empty()))
        })
        .await
    }

    /// The last position of a log whose `beyond(n)` says whether anything comes after `n`.
    async fn end_of<F, Fut>(&self, beyond: F) -> anyhow::Result<u64>
    where
        F: Fn(u64) -> Fut,
        Fut: std::future::Future<Output = anyhow::Result<bool>>,
    {
        let mut hi = 1u64;
        while beyond(hi).await? {
            hi = hi.saturating_mul(2);
        }
        let mut lo = 0u64;
        // Invariant: something after lo (or lo = 0), nothing after hi.
        if !beyond(0).await? {
            return Ok(0);
        }
        while hi - lo > 1 {
            let mid = lo + (hi - lo) / 2;
            if beyond(mid).await? {
                lo = mid;
            } else {
                hi = mid;
            }
        }
        Ok(hi)
    }

    /// Waits until the event store's last position and the audit log's last entry hold still
    /// for a second (the pipeline has drained: a mail still to send, or an event still to
    /// settle, would move one of them), at most `timeout`. Answers whether they did.
    pub async fn quiesce(&self, timeout: Duration) -> anyhow::Result<bool> {
        let deadline = Instant::now() + timeout;
        let ends = || async {
            Ok::<_, anyhow::Error>((self.archive_end().await?, self.audit_end().await?))
        };
        let mut last = (ends().await?, Instant::now());
        while Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(250)).await;
            let now = ends().await?;
            if now != last.0 {
                last = (now, Instant::now());
            } else if last.1.elapsed() >= Duration::from_secs(1) {
                return Ok(true);
            }
        }
        Ok(false)
    }
}

/// Runs `concurrency` clients, each calling `op` again as soon as it answers, until
/// `duration` has passed or `max` calls were made.
pub async fn closed_loop<T, F, Fut>(
    concurrency: usize,
    duration: Duration,
    max: u64,
    op: F,
) -> (Phase, Vec<T>)
where
    T: Send + 'static,
    F: Fn() -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = Result<T, String>> + Send,
{
    let op = Arc::new(op);
    let issued = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let deadline = started + duration;
    let mut clients = tokio::task::JoinSet::new();
    for _ in 0..concurrency.max(1) {
        let (op, issued) = (op.clone(), issued.clone());
        clients.spawn(async move {
            let mut phase = Phase::default();
            let mut outputs = Vec::new();
            while Instant::now() < deadline && issued.fetch_add(1, Ordering::Relaxed) < max {
                let t = Instant::now();
                match op().await {
                    Ok(out) => {
                        phase.latencies.push(t.elapsed());
                        phase.ok += 1;
                        outputs.push(out);
                    }
                    Err(e) => *phase.errors.entry(e).or_default() += 1,
                }
            }
            (phase, outputs)
        });
    }
    let mut total = Phase::default();
    let mut outputs = Vec::new();
    while let Some(done) = clients.join_next().await {
        match done {
            Ok((phase, out)) => {
                total.ok += phase.ok;
                total.latencies.extend(phase.latencies);
                for (e, n) in phase.errors {
                    *total.errors.entry(e).or_default() += n;
                }
                outputs.extend(out);
            }
            Err(e) => {
                *total
                    .errors
                    .entry(format!("client panicked: {e}"))
                    .or_default() += 1
            }
        }
    }
    total.elapsed = started.elapsed();
    (total, outputs)
}

/// Waits until every saga in `ids` is COMPLETED; answers when the last one was seen so, or
/// `None` at `timeout`.
pub async fn sagas_completed(
    driver: &Driver,
    ids: Vec<String>,
    timeout: Duration,
) -> anyhow::Result<Option<Instant>> {
    let deadline = Instant::now() + timeout;
    let mut pending = ids;
    while !pending.is_empty() {
        if Instant::now() > deadline {
            return Ok(None);
        }
        let mut still = Vec::new();
        for id in pending {
            if driver.saga_status(&id).await? != "COMPLETED" {
                still.push(id);
            }
        }
        pending = still;
        if !pending.is_empty() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    Ok(Some(Instant::now()))
}

/// A created complaint, and when its 201 arrived.
struct Acknowledged {
    id: String,
    wall_ms: i64,
}

fn wall_ms(t: SystemTime) -> i64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

fn parse_ms(v: &Value) -> Option<i64> {
    chrono::DateTime::parse_from_rfc3339(v.as_str()?)
        .ok()
        .map(|t| t.timestamp_millis())
}

/// What the lag scenario measured.
#[derive(Debug)]
pub struct Lag {
    pub rate: f64,
    pub load: Phase,
    /// Creates the open loop could not issue on time (too many in flight).
    pub late: u64,
    /// The last of the three stages, per complaint.
    pub lags: Samples,
    /// Each stage alone: so that a slow stage names itself.
    pub archived: Samples,
    pub audited: Samples,
    pub notified: Samples,
    /// Complaints whose pipeline did not finish within the drain timeout.
    pub unfinished: usize,
}

/// Creates complaints at `rate` per second for `duration` (an open loop: a slow answer does
/// not slow the arrivals), then measures, for each, the time from its 201 to its creation
/// being archived (seen on the event store's global feed as it happens), audited (the
/// audit entry's `recordedAt`) and notified (the last of its mails' `sentAt`).
pub async fn lag(
    driver: &Driver,
    rate: f64,
    duration: Duration,
    max: u64,
    max_in_flight: usize,
    drain: Duration,
) -> anyhow::Result<Lag> {
    let start_position = driver.archive_end().await?;
    // Per complaint: when its creation was archived (Unix ms) and the creation's event id.
    let seen: Arc<std::sync::Mutex<HashMap<String, (i64, String)>>> = Arc::default();
    let (stop_tail, mut tail_stopped) = tokio::sync::watch::channel(false);
    let tail = {
        let (driver, seen) = (driver.clone(), seen.clone());
        tokio::spawn(async move {
            let mut feed = Feed::new(start_position);
            loop {
                let events = driver.archived_after(feed.after(), FEED_PAGE).await?;
                let now = Instant::now();
                let wall = wall_ms(SystemTime::now());
                feed.saw(events.iter().filter_map(|e| e["position"].as_u64()), now);
                {
                    let mut seen = seen.lock().map_err(|_| anyhow::anyhow!("poisoned"))?;
                    for e in &events {
                        let event = &e["event"];
                        if event["eventType"] == "COMPLAINT_CREATED"
                            && let (Some(id), Some(event_id)) =
                                (event["aggregateId"].as_str(), event["eventId"].as_str())
                        {
                            // The archive's own time; a server without it, the time seen.
                            let at = parse_ms(&e["archivedAt"]).unwrap_or(wall);
                            seen.entry(id.to_owned())
                                .or_insert((at, event_id.to_owned()));
                        }
                    }
                }
                if events.len() < FEED_PAGE as usize {
                    tokio::select! {
                        _ = tail_stopped.wait_for(|s| *s) => return anyhow::Ok(()),
                        _ = tokio::time::sleep(FEED_POLL) => {}
                    }
                }
            }
        })
    };
    let interval = Duration::from_secs_f64(1.0 / rate.max(0.1));
    let in_flight = Arc::new(AtomicUsize::new(0));
    let acked: Arc<std::sync::Mutex<Vec<Acknowledged>>> = Arc::default();
    let errors: Arc<std::sync::Mutex<BTreeMap<String, u64>>> = Arc::default();
    let latencies: Arc<std::sync::Mutex<Samples>> = Arc::default();
    let started = Instant::now();
    let end = started + duration;
    let mut next = started;
    let (mut issued, mut late) = (0u64, 0u64);
    let mut requests = tokio::task::JoinSet::new();
    while next < end && issued < max {
        tokio::time::sleep_until(next.into()).await;
        next += interval;
        if in_flight.load(Ordering::Acquire) >= max_in_flight {
            late += 1;
            continue;
        }
        issued += 1;
        in_flight.fetch_add(1, Ordering::AcqRel);
        let (driver, in_flight) = (driver.clone(), in_flight.clone());
        let (acked, errors, latencies) = (acked.clone(), errors.clone(), latencies.clone());
        requests.spawn(async move {
            let t = Instant::now();
            let result = driver.create().await;
            let (at, wall) = (Instant::now(), wall_ms(SystemTime::now()));
            in_flight.fetch_sub(1, Ordering::AcqRel);
            match result {
                Ok(id) => {
                    if let Ok(mut l) = latencies.lock() {
                        l.push(at - t);
                    }
                    if let Ok(mut a) = acked.lock() {
                        a.push(Acknowledged { id, wall_ms: wall });
                    }
                }
                Err(e) => {
                    if let Ok(mut errors) = errors.lock() {
                        *errors.entry(e).or_default() += 1;
                    }
                }
            }
        });
    }
    while requests.join_next().await.is_some() {}
    let elapsed = started.elapsed();
    let acked = std::mem::take(&mut *acked.lock().map_err(|_| anyhow::anyhow!("poisoned"))?);

    // Archived: wait for the feed to have shown every acknowledged creation.
    let deadline = Instant::now() + drain;
    loop {
        let missing = {
            let seen = seen.lock().map_err(|_| anyhow::anyhow!("poisoned"))?;
            acked.iter().filter(|a| !seen.contains_key(&a.id)).count()
        };
        if missing == 0 || Instant::now() > deadline || tail.is_finished() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let _ = stop_tail.send(true);
    tail.await
        .context("the event store feed reader panicked")??;
    let seen = std::mem::take(&mut *seen.lock().map_err(|_| anyhow::anyhow!("poisoned"))?);

    // Audited and notified: the services' own times, read once each has finished. They get a
    // drain timeout of their own: a slow archive must not make every later stage look unfinished.
    let deadline = Instant::now() + drain;
    let mut lags = Samples::default();
    let (mut archived_lags, mut audited_lags, mut notified_lags) =
        (Samples::default(), Samples::default(), Samples::default());
    let mut unfinished = 0;
    for a in &acked {
        let Some((archived_ms, event_id)) = seen.get(&a.id) else {
            unfinished += 1;
            continue;
        };
        match finished_at(driver, &a.id, event_id, deadline).await? {
            Some((audited_ms, notified_ms)) => {
                let own =
                    |ms: i64| Duration::from_millis(u64::try_from(ms - a.wall_ms).unwrap_or(0));
                let (archived, audited, notified) =
                    (own(*archived_ms), own(audited_ms), own(notified_ms));
                archived_lags.push(archived);
                audited_lags.push(audited);
                notified_lags.push(notified);
                lags.push(archived.max(audited).max(notified));
            }
            None => unfinished += 1,
        }
    }
    let load = Phase {
        ok: acked.len() as u64,
        errors: std::mem::take(&mut *errors.lock().map_err(|_| anyhow::anyhow!("poisoned"))?),
        elapsed,
        latencies: std::mem::take(&mut *latencies.lock().map_err(|_| anyhow::anyhow!("poisoned"))?),
    };
    Ok(Lag {
        rate,
        load,
        late,
        lags,
        archived: archived_lags,
        audited: audited_lags,
        notified: notified_lags,
        unfinished,
    })
}

/// When complaint `id`'s creation (event `event_id`) was audited and its last mail sent, in
/// Unix milliseconds; `None` when that has not happened by `deadline`.
async fn finished_at(
    driver: &Driver,
    id: &str,
    event_id: &str,
    deadline: Instant,
) -> anyhow::Result<Option<(i64, i64)>> {
    loop {
        let trail = driver
            .get(&format!("{}/api/audit/trail/{id}", driver.targets.audit))
            .await?;
        let audited = trail["entries"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|e| e["eventId"] == event_id)
            .and_then(|e| parse_ms(&e["recordedAt"]));
        let mails = driver
            .get(&format!(
                "{}/api/notifications?complaintId={id}",
                driver.targets.notification
            ))
            .await?;
        let mails: Vec<&Value> = mails["items"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|m| m["triggerEventId"] == event_id)
            .collect();
        let notified = if !mails.is_empty() && mails.iter().all(|m| m["status"] == "SENT") {
            mails.iter().filter_map(|m| parse_ms(&m["sentAt"])).max()
        } else {
            None
        };
        if let (Some(a), Some(n)) = (audited, notified) {
            return Ok(Some((a, n)));
        }
        if Instant::now() > deadline {
            return Ok(None);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Follows the list scenario's pages (first page, then up to four more through `nextCursor`)
/// `chains` times, one request at a time; every request's latency is a sample.
pub async fn list(driver: &Driver, chains: u32, duration: Duration) -> anyhow::Result<Samples> {
    let mut samples = Samples::default();
    let deadline = Instant::now() + duration;
    for _ in 0..chains {
        if Instant::now() > deadline {
            break;
        }
        let mut cursor = None;
        for _ in 0..5 {
            let t = Instant::now();
            cursor = driver.list_page(cursor.as_deref()).await?;
            samples.push(t.elapsed());
            if cursor.is_none() {
                break;
            }
        }
    }
    Ok(samples)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_feed_reads_again_from_a_missing_position_until_it_comes() {
        let t0 = Instant::now();
        let mut feed = Feed::new(10);
        assert!(feed.saw([11, 13].into_iter(), t0));
        assert_eq!(feed.after(), 11, "12 is missing: read from there");
        assert!(!feed.saw([13].into_iter(), t0), "nothing new");
        assert!(feed.saw([12, 13, 14].into_iter(), t0 + Duration::from_millis(100)));
        assert_eq!(feed.after(), 14);
    }

    #[test]
    fn the_feed_passes_a_position_that_never_comes() {
        let t0 = Instant::now();
        let mut feed = Feed::new(0);
        feed.saw([1, 3].into_iter(), t0);
        assert_eq!(feed.after(), 1);
        feed.saw([3].into_iter(), t0 + GAP_WAIT / 2);
        assert_eq!(feed.after(), 1, "still waiting for 2");
        feed.saw([3].into_iter(), t0 + GAP_WAIT);
        assert_eq!(feed.after(), 3);
    }
}
