//! `sagaflow bench` end to end: the report has every figure SPEC section 10 lists, measured in
//! this run (the ratios are the rates divided by the same run's baseline), on the embedded
//! all-in-one and on the real backends. Short runs: the figures themselves are not judged here
//! (docs/performance.md has the long runs), only that they were measured.

#[path = "support/backends.rs"]
mod backends;

use std::process::Command;

use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_sagaflow");

fn bench(args: &[&str], env: &[(String, String)]) -> Value {
    let out = Command::new(BIN)
        .arg("bench")
        .args(args)
        .arg("--json")
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .env_remove("RUST_LOG")
        .output()
        .expect("running sagaflow bench");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "sagaflow bench failed: {}\n{stdout}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {stdout}"))
}

fn f(v: &Value) -> f64 {
    v.as_f64().unwrap_or_else(|| panic!("not a number: {v}"))
}

/// p50 ≤ p99 ≤ max, all present.
fn ordered(v: &Value, what: &str) {
    let (p50, p99, max) = (f(&v["p50Ms"]), f(&v["p99Ms"]), f(&v["maxMs"]));
    assert!(
        0.0 <= p50 && p50 <= p99 && p99 <= max,
        "{what}: {p50} {p99} {max}"
    );
}

fn ratio_of(rate: &Value, base: f64) -> f64 {
    (f(rate) / base * 100.0).round() / 100.0
}

#[test]
fn an_embedded_run_reports_every_figure_against_its_own_baseline() {
    let data = tempfile::tempdir().expect("a temporary directory");
    let data_dir = data.path().join("system");
    let r = bench(
        &[
            "--embedded",
            "--data-dir",
            data_dir.to_str().expect("utf-8 path"),
            "--duration",
            "1s",
            "--concurrency",
            "4",
            "--list-sizes",
            "60,200",
            "--drain-timeout",
            "60s",
        ],
        &[],
    );
    assert_eq!(r["system"]["mode"], "embedded");
    assert_eq!(r["baseline"]["store"], "sqlite");
    let base = f(&r["baseline"]["perSecond"]);
    assert!(base > 0.0 && r["baseline"]["transactions"].as_u64() > Some(0));
    ordered(&r["baseline"], "baseline");

    let create = &r["create"];
    assert!(create["requests"].as_u64() > Some(0), "{create}");
    assert_eq!(create["errors"], 0, "{create}");
    ordered(create, "create");
    assert_eq!(
        f(&create["ratioToBaseline"]),
        ratio_of(&create["perSecond"], base)
    );

    let saga = &r["saga"];
    assert!(saga["sagas"].as_u64() > Some(0), "{saga}");
    assert_eq!(saga["errors"], 0, "{saga}");
    assert!(
        saga["drainedSeconds"].is_number(),
        "sagas never completed: {saga}"
    );
    assert!(
        f(&saga["perSecond"]) <= f(&saga["commandsPerSecond"]),
        "{saga}"
    );
    assert_eq!(
        f(&saga["ratioToBaseline"]),
        ratio_of(&saga["perSecond"], base)
    );

    let lag = &r["lag"];
    assert_eq!(
        f(&lag["rate"]),
        (f(&create["perSecond"]) / 2.0 * 10.0).round() / 10.0
    );
    assert!(lag["complaints"].as_u64() > Some(0), "{lag}");
    assert_eq!(lag["unfinished"], 0, "{lag}");
    ordered(lag, "lag");
    for stage in ["archived", "audited", "notified"] {
        ordered(&lag["stages"][stage], stage);
        assert!(
            f(&lag["stages"][stage]["p99Ms"]) <= f(&lag["p99Ms"]),
            "a stage lags more than the whole: {lag}"
        );
    }

    // The sustained rate: a bisection of lag runs below the create rate, the best one that
    // kept up (lag p99 within 100 ms, nothing unfinished, late or failed).
    let sustained = &r["sustained"];
    let probes = sustained["probes"].as_array().expect("the search's runs");
    assert_eq!(probes.len(), 5, "{sustained}");
    assert_eq!(
        f(&probes[0]["rate"]),
        (f(&create["perSecond"]) / 2.0 * 10.0).round() / 10.0
    );
    let kept: Vec<f64> = probes
        .iter()
        .filter(|p| {
            p["unfinished"] == 0 && p["late"] == 0 && p["errors"] == 0 && f(&p["p99Ms"]) <= 100.0
        })
        .map(|p| f(&p["rate"]))
        .collect();
    let best = kept.iter().copied().fold(0.0, f64::max);
    assert_eq!(f(&sustained["perSecond"]), best, "{sustained}");
    assert_eq!(
        f(&sustained["ratioToBaseline"]),
        ratio_of(&sustained["perSecond"], base)
    );

    // The command path alone, on an all-in-one of its own with the relays paused.
    let alone = &r["createAlone"];
    assert!(alone["requests"].as_u64() > Some(0), "{alone}");
    assert_eq!(alone["errors"], 0, "{alone}");
    ordered(alone, "create-alone");
    assert_eq!(
        f(&alone["ratioToBaseline"]),
        ratio_of(&alone["perSecond"], base)
    );

    let list = r["list"].as_array().expect("list figures");
    assert_eq!(list.len(), 2, "{list:?}");
    assert!(list[0]["complaints"].as_u64() >= Some(60));
    assert!(list[1]["complaints"].as_u64() >= Some(200));
    for l in list {
        ordered(l, "list");
        assert!(l["requests"].as_u64() > Some(0));
    }
    assert!(r["listP99Growth"].is_number());
    let mem = &r["memory"];
    assert!(
        f(&mem["peakRssMib"]) >= f(&mem["rssMib"]) && f(&mem["rssMib"]) > 0.0,
        "{mem}"
    );
    // The data directory was the user's: kept, with the system's log.
    assert!(data_dir.join("bench-system.log").exists());
    assert!(
        !data_dir.join("bench-baseline.db").exists(),
        "baseline file left behind"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn on_the_real_backends_the_baseline_is_postgresql() {
    let run = backends::run().await;
    let database = run
        .env
        .iter()
        .find(|(k, _)| k == "DATABASE_URL")
        .map(|(_, v)| v.clone())
        .expect("a database");
    let env = run.env.clone();
    let r = tokio::task::spawn_blocking(move || {
        bench(
            &[
                "--embedded",
                "--duration",
                "1s",
                "--concurrency",
                "4",
                "--scenarios",
                "create,lag",
                "--drain-timeout",
                "60s",
            ],
            &env,
        )
    })
    .await
    .expect("the bench");
    assert_eq!(r["baseline"]["store"], "postgres");
    let base = f(&r["baseline"]["perSecond"]);
    assert_eq!(
        f(&r["create"]["ratioToBaseline"]),
        ratio_of(&r["create"]["perSecond"], base)
    );
    assert_eq!(r["lag"]["unfinished"], 0, "{}", r["lag"]);
    assert!(r["saga"].is_null() && r["list"].is_null());
    // The baseline's scratch schema is gone.
    let mut conn = <sqlx::PgConnection as sqlx::Connection>::connect(&database)
        .await
        .expect("connecting");
    let left: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM information_schema.schemata WHERE schema_name = 'sagaflow_bench_baseline'",
    )
    .fetch_one(&mut conn)
    .await
    .expect("counting schemas");
    assert_eq!(left, 0);
    run.clean().await;
}

#[test]
fn it_refuses_to_load_another_machine_and_explains_a_stopped_system() {
    let out = Command::new(BIN)
        .args(["bench", "--complaint-url", "http://10.1.2.3:3005"])
        .output()
        .expect("running sagaflow bench");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("only drives loopback"), "{err}");

    let out = Command::new(BIN)
        .args([
            "bench",
            "--complaint-url",
            "http://127.0.0.1:1",
            "--duration",
            "1s",
        ])
        .output()
        .expect("running sagaflow bench");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("not running"), "{err}");

    let out = Command::new(BIN)
        .args(["bench", "--embedded", "--duration", "soon"])
        .output()
        .expect("running sagaflow bench");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("duration"), "{err}");
}
