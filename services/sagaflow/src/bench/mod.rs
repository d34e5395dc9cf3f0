//! `sagaflow bench` (SPEC section 10): drives a running system over HTTP, or an all-in-one it
//! starts itself, and measures it against a baseline taken in the same run on the same store.
//!
//! - [`baseline`]: bare transactions of the command path's shape.
//! - [`load`]: the scenarios' clients.
//! - [`system`]: the targets, and the all-in-one started with `--embedded`.
//! - [`stats`]: percentiles, rates and ratios.

pub mod baseline;
pub mod load;
pub mod stats;
pub mod system;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use serde::Serialize;

use stats::{Percentiles, rate, ratio};
use system::{Embedded, Targets, loopback};

/// The scenarios, in the order they run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Scenario {
    Create,
    Saga,
    Lag,
    /// The highest arrival rate at which lag p99 stays within 100 ms (a search of lag runs).
    Sustained,
    List,
    /// With --embedded: creates on a second all-in-one whose relays are paused, so that only
    /// the command path runs (what a bare command benchmark measures).
    CreateAlone,
}

/// The sustained rate's bound on lag p99 (SPEC section 10).
pub const SUSTAINED_P99_MS: f64 = 100.0;

#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// Start the all-in-one (this executable) and measure it. Its environment is this one's:
    /// DATABASE_URL, RABBITMQ_URL, REDIS_URL, MONGODB_URL and SMTP_URL choose its backends.
    #[arg(long)]
    pub embedded: bool,
    /// With --embedded: its data directory (default: a new one under the temporary directory,
    /// removed afterwards). Without: where the SQLite baseline is written.
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// The complaint service of a running system.
    #[arg(long, default_value = "http://127.0.0.1:3005")]
    pub complaint_url: String,
    #[arg(long, default_value = "http://127.0.0.1:3006")]
    pub notification_url: String,
    #[arg(long, default_value = "http://127.0.0.1:3007")]
    pub audit_url: String,
    #[arg(long, default_value = "http://127.0.0.1:3008")]
    pub event_store_url: String,
    /// The PostgreSQL the system writes to, for the baseline [env: DATABASE_URL]; without it
    /// the baseline runs on SQLite as the embedded stores do.
    #[arg(long, value_name = "URL")]
    pub database_url: Option<String>,
    /// Concurrent clients of the create and saga scenarios (and of the baseline).
    #[arg(long, default_value_t = 32)]
    pub concurrency: usize,
    /// How long each scenario (and the baseline) runs, e.g. 10s.
    #[arg(long, default_value = "10s")]
    pub duration: String,
    /// At most this many requests (sagas, transactions) per scenario.
    #[arg(long, default_value_t = 1_000_000)]
    pub max_requests: u64,
    /// Which scenarios run.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "create,saga,lag,sustained,list,create-alone"
    )]
    pub scenarios: Vec<Scenario>,
    /// How many lag runs the sustained search makes (a bisection below the create rate).
    #[arg(long, default_value_t = 5)]
    pub sustained_probes: u32,
    /// The lag scenario's arrival rate per second (default: half the create scenario's rate).
    #[arg(long)]
    pub rate: Option<f64>,
    /// Store sizes (complaints created by this run) at which the list scenario measures.
    #[arg(long, value_delimiter = ',', default_value = "1000,10000")]
    pub list_sizes: Vec<u64>,
    /// How long to wait for the pipeline to finish what the load started.
    #[arg(long, default_value = "120s")]
    pub drain_timeout: String,
    /// Print the report as JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// The report (`--json` prints it as it is).
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Report {
    pub system: SystemInfo,
    pub baseline: BaselineReport,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub create: Option<RateReport>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub saga: Option<SagaReport>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lag: Option<LagReport>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sustained: Option<SustainedReport>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub list: Vec<ListReport>,
    /// Creates with the relays paused: the command path alone.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub create_alone: Option<RateReport>,
    /// The last list size's p99 over the first's.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub list_p99_growth: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub memory: Option<MemoryReport>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SystemInfo {
    /// `embedded` (started by the bench) or `running`.
    pub mode: &'static str,
    pub complaint_url: String,
    pub concurrency: usize,
    pub duration_seconds: f64,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct BaselineReport {
    pub store: &'static str,
    pub transactions: u64,
    pub per_second: f64,
    #[serde(flatten)]
    pub latency: Option<Percentiles>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RateReport {
    pub requests: u64,
    pub errors: u64,
    pub per_second: f64,
    #[serde(flatten)]
    pub latency: Option<Percentiles>,
    pub ratio_to_baseline: Option<f64>,
    #[serde(skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub error_kinds: std::collections::BTreeMap<String, u64>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SagaReport {
    /// Sagas whose four commands were acknowledged.
    pub sagas: u64,
    pub errors: u64,
    /// Sagas per second, from the first command to the last saga COMPLETED (its closing mail
    /// sent): the pipeline's pace, not only the commands'.
    pub per_second: f64,
    /// Sagas per second counting only the four commands.
    pub commands_per_second: f64,
    /// p50/p99/max of one saga's four commands.
    #[serde(flatten)]
    pub latency: Option<Percentiles>,
    pub drained_seconds: Option<f64>,
    pub ratio_to_baseline: Option<f64>,
    #[serde(skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub error_kinds: std::collections::BTreeMap<String, u64>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct LagReport {
    /// The arrival rate asked for.
    pub rate: f64,
    /// The rate acknowledged.
    pub per_second: f64,
    pub complaints: u64,
    pub errors: u64,
    pub late: u64,
    pub unfinished: usize,
    #[serde(flatten)]
    pub lag: Option<Percentiles>,
    /// Each stage alone, from the 201: so that a slow stage names itself.
    pub stages: LagStages,
    /// The creates' own latency at that rate.
    pub create_latency: Option<Percentiles>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct LagStages {
    /// Seen on the event store's global feed.
    pub archived: Option<Percentiles>,
    /// The audit entry's `recordedAt`.
    pub audited: Option<Percentiles>,
    /// The last of its mails' `sentAt`.
    pub notified: Option<Percentiles>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SustainedReport {
    /// The highest arrival rate of the search whose lag p99 was within the bound with
    /// nothing unfinished, late or failed (0 when none was).
    pub per_second: f64,
    pub ratio_to_baseline: Option<f64>,
    pub p99_bound_ms: f64,
    /// Every lag run of the search, in order.
    pub probes: Vec<LagReport>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ListReport {
    /// Complaints this run had created when it measured.
    pub complaints: u64,
    pub filter: &'static str,
    pub requests: usize,
    /// Whether the pipeline had drained before the measure.
    pub quiesced: bool,
    #[serde(flatten)]
    pub latency: Option<Percentiles>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct MemoryReport {
    pub peak_rss_mib: f64,
    pub rss_mib: f64,
}

fn seconds(d: Duration) -> f64 {
    (d.as_secs_f64() * 100.0).round() / 100.0
}

/// Runs the bench.
pub async fn run(args: Args) -> anyhow::Result<Report> {
    let duration = sagaflow_runtime::config::duration("--duration", &args.duration)
        .map_err(|e| anyhow::anyhow!("{}", e.problem))?;
    let drain = sagaflow_runtime::config::duration("--drain-timeout", &args.drain_timeout)
        .map_err(|e| anyhow::anyhow!("{}", e.problem))?;
    if args.concurrency == 0 || args.concurrency > 1024 {
        bail!(
            "--concurrency: expected 1 to 1024, got {}",
            args.concurrency
        );
    }
    if args.rate.is_some_and(|r| !(r > 0.0 && r <= 100_000.0)) {
        bail!("--rate: expected more than 0 and at most 100000");
    }
    let postgres = match &args.database_url {
        Some(url) => match sagaflow_runtime::config::database_url(url)
            .map_err(|e| anyhow::anyhow!("DATABASE_URL {}", e.problem))?
        {
            sagaflow_runtime::config::DatabaseUrl::Postgres(url) => Some(url),
            sagaflow_runtime::config::DatabaseUrl::Sqlite(_) => None,
        },
        None => None,
    };
    let (embedded, targets) = if args.embedded {
        let (e, t) = Embedded::start(args.data_dir.as_deref()).await?;
        (Some(e), t)
    } else {
        let targets = Targets {
            complaint: loopback("--complaint-url", &args.complaint_url)?,
            notification: loopback("--notification-url", &args.notification_url)?,
            audit: loopback("--audit-url", &args.audit_url)?,
            event_store: loopback("--event-store-url", &args.event_store_url)?,
        };
        system::wait_ready(&targets, None, Duration::from_secs(5))
            .await
            .context("the system to measure is not running (start it, or use --embedded)")?;
        (None, targets)
    };
    let mut result = measure(
        &args,
        duration,
        drain,
        postgres.as_deref(),
        embedded.as_ref(),
        targets,
    )
    .await;
    let was_embedded = embedded.is_some();
    if let Some(e) = embedded {
        e.stop().await;
    }
    if let Ok(report) = &mut result
        && args.scenarios.contains(&Scenario::CreateAlone)
    {
        if was_embedded {
            if !args.json {
                eprintln!(
                    "bench: create-alone: POST /api/complaints on an all-in-one with its relays paused"
                );
            }
            report.create_alone = Some(
                create_alone(
                    &args,
                    duration,
                    report.baseline.per_second,
                    postgres.as_deref(),
                )
                .await?,
            );
        } else if !args.json {
            eprintln!(
                "bench: create-alone needs --embedded (it starts its own all-in-one); not run"
            );
        }
    }
    result
}

async fn measure(
    args: &Args,
    duration: Duration,
    drain: Duration,
    postgres: Option<&str>,
    embedded: Option<&Embedded>,
    targets: Targets,
) -> anyhow::Result<Report> {
    let c = args.concurrency;
    let say = |line: String| {
        if !args.json {
            eprintln!("bench: {line}");
        }
    };
    // Peak memory is the kernel's high-water mark; sampling also catches a run that ends small.
    say(format!(
        "baseline: bare event + outbox transactions, {c} clients, {}",
        args.duration
    ));
    let base = match postgres {
        Some(url) => baseline::postgres(url, c, duration, args.max_requests).await?,
        None => {
            let dir = match (embedded, &args.data_dir) {
                (Some(e), _) => e.data_dir.clone(),
                (None, Some(d)) => d.clone(),
                (None, None) => std::env::temp_dir(),
            };
            baseline::sqlite(&dir, c, duration, args.max_requests).await?
        }
    };
    let base_rate = rate(base.transactions, base.elapsed);
    let driver = load::Driver::new(targets.clone(), c)?;
    let mut report = Report {
        system: SystemInfo {
            mode: if embedded.is_some() {
                "embedded"
            } else {
                "running"
            },
            complaint_url: targets.complaint.clone(),
            concurrency: c,
            duration_seconds: seconds(duration),
        },
        baseline: BaselineReport {
            store: base.store,
            transactions: base.transactions,
            per_second: base_rate,
            latency: base.latencies.percentiles(),
        },
        create: None,
        saga: None,
        lag: None,
        sustained: None,
        list: Vec::new(),
        create_alone: None,
        list_p99_growth: None,
        memory: None,
    };
    let wants = |s: Scenario| args.scenarios.contains(&s);
    if wants(Scenario::Create) {
        say(format!("create: POST /api/complaints, {c} clients"));
        report.create = Some(creates(&driver, c, duration, args.max_requests, base_rate).await);
        driver.quiesce(drain).await?;
    }
    if wants(Scenario::Saga) {
        say(format!("saga: create, assign, resolve, close; {c} clients"));
        let d = driver.clone();
        let started = Instant::now();
        let (phase, ids) = load::closed_loop(c, duration, args.max_requests, move || {
            let d = d.clone();
            async move { d.saga().await }
        })
        .await;
        let commands_done = started.elapsed();
        let completed = load::sagas_completed(&driver, ids, drain).await?;
        let total = completed.map(|at| at - started);
        let per_second = total.map_or(0.0, |t| rate(phase.ok, t));
        report.saga = Some(SagaReport {
            sagas: phase.ok,
            errors: phase.error_count(),
            per_second,
            commands_per_second: rate(phase.ok, commands_done),
            latency: phase.latencies.percentiles(),
            drained_seconds: completed.map(|at| seconds(at - started - commands_done)),
            ratio_to_baseline: ratio(per_second, base_rate),
            error_kinds: phase.errors,
        });
    }
    if wants(Scenario::Lag) {
        let r = match (args.rate, &report.create) {
            (Some(r), _) => r,
            (None, Some(create)) if create.per_second > 0.0 => create.per_second / 2.0,
            _ => bail!("the lag scenario needs --rate, or the create scenario to run first"),
        };
        say(format!(
            "lag: creates at {r:.0}/s, 201 → archived, audited, notified"
        ));
        let lag = load::lag(&driver, r, duration, args.max_requests, c * 4, drain).await?;
        report.lag = Some(lag_report(&lag));
        driver.quiesce(drain).await?;
    }
    if wants(Scenario::Sustained) {
        let top = report
            .create
            .as_ref()
            .map(|c| c.per_second)
            .filter(|r| *r > 0.0)
            .unwrap_or(base_rate);
        let (mut good, mut bad) = (0.0_f64, top);
        let mut probes = Vec::new();
        let mut r = top / 2.0;
        for _ in 0..args.sustained_probes {
            say(format!(
                "sustained: creates at {r:.0}/s, lag p99 within {SUSTAINED_P99_MS} ms?"
            ));
            let lag = load::lag(&driver, r, duration, args.max_requests, c * 4, drain).await?;
            let probe = lag_report(&lag);
            if keeps_up(&probe) {
                good = r;
            } else {
                bad = r;
            }
            probes.push(probe);
            driver.quiesce(drain).await?;
            r = (good + bad) / 2.0;
        }
        let best = (good * 10.0).round() / 10.0;
        report.sustained = Some(SustainedReport {
            per_second: best,
            ratio_to_baseline: ratio(best, base_rate),
            p99_bound_ms: SUSTAINED_P99_MS,
            probes,
        });
    }
    if wants(Scenario::List) {
        let mut sizes = args.list_sizes.clone();
        sizes.sort_unstable();
        sizes.dedup();
        for size in sizes {
            let have = driver.created.load(std::sync::atomic::Ordering::Relaxed);
            if have < size {
                say(format!("list: filling to {size} complaints ({c} clients)"));
                let d = driver.clone();
                let (phase, _) =
                    load::closed_loop(c, Duration::from_secs(24 * 3600), size - have, move || {
                        let d = d.clone();
                        async move { d.create().await.map(|_| ()) }
                    })
                    .await;
                if phase.error_count() > 0 {
                    bail!("filling the store failed: {:?}", phase.errors);
                }
            }
            let quiesced = driver.quiesce(drain).await?;
            say(format!(
                "list: GET /api/complaints?{} at {size}",
                load::LIST_FILTER
            ));
            let samples = load::list(&driver, 200, duration).await?;
            report.list.push(ListReport {
                complaints: driver.created.load(std::sync::atomic::Ordering::Relaxed),
                filter: load::LIST_FILTER,
                requests: samples.len(),
                quiesced,
                latency: samples.percentiles(),
            });
        }
        if let (Some(first), Some(last)) = (
            report.list.first().and_then(|l| l.latency),
            report.list.last().and_then(|l| l.latency),
        ) && report.list.len() > 1
        {
            report.list_p99_growth = ratio(last.p99_ms, first.p99_ms);
        }
    }
    report.memory = embedded
        .and_then(Embedded::memory)
        .map(|(peak, now)| MemoryReport {
            peak_rss_mib: peak,
            rss_mib: now,
        });
    Ok(report)
}

/// The command path alone: creates on a second all-in-one (a data directory of its own; on
/// PostgreSQL, a scratch database on the same server, dropped afterwards) whose relays are
/// paused, from the same clients for the same time. It runs last, after the system measured
/// above has stopped.
async fn create_alone(
    args: &Args,
    duration: Duration,
    base_rate: f64,
    postgres: Option<&str>,
) -> anyhow::Result<RateReport> {
    let dir = std::env::temp_dir().join(format!("sagaflow-bench-alone-{}", std::process::id()));
    let scratch = match postgres {
        Some(url) => Some(baseline::scratch_database(url, "sagaflow_bench_alone").await?),
        None => None,
    };
    let env: Vec<(&str, &str)> = scratch
        .as_ref()
        .map(|db| vec![("DATABASE_URL", db.url.as_str())])
        .unwrap_or_default();
    let started = Embedded::start_with(Some(&dir), &["--relays-paused"], &env).await;
    let result = match started {
        Ok((alone, targets)) => {
            let measured = match load::Driver::new(targets, args.concurrency) {
                Ok(driver) => Ok(creates(
                    &driver,
                    args.concurrency,
                    duration,
                    args.max_requests,
                    base_rate,
                )
                .await),
                Err(e) => Err(e),
            };
            alone.stop().await;
            measured
        }
        Err(e) => Err(e),
    };
    let _ = std::fs::remove_dir_all(&dir);
    if let Some(db) = scratch {
        db.drop().await?;
    }
    result
}

/// `POST /api/complaints` from `c` clients in closed loops for `duration`.
async fn creates(
    driver: &load::Driver,
    c: usize,
    duration: Duration,
    max: u64,
    base_rate: f64,
) -> RateReport {
    let d = driver.clone();
    let (phase, _) = load::closed_loop(c, duration, max, move || {
        let d = d.clone();
        async move { d.create().await.map(|_| ()) }
    })
    .await;
    let per_second = rate(phase.ok, phase.elapsed);
    RateReport {
        requests: phase.ok,
        errors: phase.error_count(),
        per_second,
        latency: phase.latencies.percentiles(),
        ratio_to_baseline: ratio(per_second, base_rate),
        error_kinds: phase.errors,
    }
}

fn lag_report(lag: &load::Lag) -> LagReport {
    LagReport {
        rate: (lag.rate * 10.0).round() / 10.0,
        per_second: rate(lag.load.ok, lag.load.elapsed),
        complaints: lag.load.ok,
        errors: lag.load.error_count(),
        late: lag.late,
        unfinished: lag.unfinished,
        lag: lag.lags.percentiles(),
        stages: LagStages {
            archived: lag.archived.percentiles(),
            audited: lag.audited.percentiles(),
            notified: lag.notified.percentiles(),
        },
        create_latency: lag.load.latencies.percentiles(),
    }
}

/// Whether a lag run kept up: every create answered on time and settled, lag p99 within the
/// bound.
pub fn keeps_up(l: &LagReport) -> bool {
    l.complaints > 0
        && l.errors == 0
        && l.late == 0
        && l.unfinished == 0
        && l.lag.is_some_and(|p| p.p99_ms <= SUSTAINED_P99_MS)
}

/// The report as a table.
pub fn table(r: &Report) -> String {
    let mut out = String::new();
    let ms = |p: &Option<Percentiles>| {
        p.map_or_else(
            || format!("{:>9} {:>9} {:>9}", "-", "-", "-"),
            |p| format!("{:>9.2} {:>9.2} {:>9.2}", p.p50_ms, p.p99_ms, p.max_ms),
        )
    };
    let x = |v: Option<f64>| v.map_or_else(|| "-".to_owned(), |v| format!("{v:.2}×"));
    out.push_str(&format!(
        "sagaflow bench: {} system at {}, {} clients, {} s per scenario\n\n",
        r.system.mode, r.system.complaint_url, r.system.concurrency, r.system.duration_seconds
    ));
    out.push_str(&format!(
        "{:<34} {:>10} {:>9} {:>9} {:>9} {:>12}\n",
        "scenario", "per second", "p50 ms", "p99 ms", "max ms", "vs baseline"
    ));
    let b = &r.baseline;
    out.push_str(&format!(
        "{:<34} {:>10.1} {} {:>12}\n",
        format!("baseline ({} event+outbox txn)", b.store),
        b.per_second,
        ms(&b.latency),
        "1.00×"
    ));
    if let Some(c) = &r.create {
        out.push_str(&format!(
            "{:<34} {:>10.1} {} {:>12}\n",
            format!("create ({} ok, {} errors)", c.requests, c.errors),
            c.per_second,
            ms(&c.latency),
            x(c.ratio_to_baseline)
        ));
    }
    if let Some(s) = &r.saga {
        out.push_str(&format!(
            "{:<34} {:>10.1} {} {:>12}\n",
            format!("saga to COMPLETED ({} ok, {} err)", s.sagas, s.errors),
            s.per_second,
            ms(&s.latency),
            x(s.ratio_to_baseline)
        ));
        out.push_str(&format!(
            "{:<34} {:>10.1}   (pipeline drained {} s after the last command)\n",
            "saga, commands only",
            s.commands_per_second,
            s.drained_seconds
                .map_or_else(|| "not".to_owned(), |d| format!("{d:.2}"))
        ));
    }
    if let Some(l) = &r.lag {
        out.push_str(&format!(
            "{:<34} {:>10.1} {} {:>12}\n",
            format!("lag 201→archived+audited+notified"),
            l.per_second,
            ms(&l.lag),
            format!("{} unfinished", l.unfinished)
        ));
        for (stage, p) in [
            ("archived", &l.stages.archived),
            ("audited", &l.stages.audited),
            ("notified", &l.stages.notified),
        ] {
            out.push_str(&format!(
                "{:<34} {:>10} {}\n",
                format!("  lag 201→{stage}"),
                "",
                ms(p)
            ));
        }
    }
    if let Some(s) = &r.sustained {
        out.push_str(&format!(
            "{:<34} {:>10.1} {:>29} {:>12}\n",
            format!("sustained (lag p99 ≤ {} ms)", s.p99_bound_ms),
            s.per_second,
            "",
            x(s.ratio_to_baseline)
        ));
        for p in &s.probes {
            out.push_str(&format!(
                "{:<34} {:>10.1} {} {:>12}\n",
                format!("  probe at {}/s", p.rate),
                p.per_second,
                ms(&p.lag),
                if keeps_up(p) {
                    "kept up".to_owned()
                } else {
                    format!("no ({} unfinished)", p.unfinished)
                }
            ));
        }
    }
    for l in &r.list {
        out.push_str(&format!(
            "{:<34} {:>10} {}\n",
            format!("list p50/p99 at {} complaints", l.complaints),
            "",
            ms(&l.latency)
        ));
    }
    if let Some(g) = r.list_p99_growth {
        out.push_str(&format!("list p99, largest over smallest store: {g:.2}×\n"));
    }
    if let Some(c) = &r.create_alone {
        out.push_str(&format!(
            "{:<34} {:>10.1} {} {:>12}\n",
            format!("create, relays paused ({} ok)", c.requests),
            c.per_second,
            ms(&c.latency),
            x(c.ratio_to_baseline)
        ));
    }
    if let Some(m) = &r.memory {
        out.push_str(&format!(
            "all-in-one resident memory: peak {:.1} MiB, at the end {:.1} MiB\n",
            m.peak_rss_mib, m.rss_mib
        ));
    }
    out
}
