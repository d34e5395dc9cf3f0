//! `sagaflow`: the four services in one process on the embedded default (`all-in-one`), or one
//! service at a time (`serve`). This file only wires.

use std::net::IpAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use sagaflow::{AllInOne, Config, Ports, apply_env};
use sagaflow_runtime::config::{self, CommonSettings, ConfigError};
use sagaflow_runtime::{shutdown, telemetry};

#[derive(Debug, Parser)]
#[command(
    name = "sagaflow",
    version,
    about = "Event-driven complaint handling with choreographed sagas"
)]
struct Cli {
    #[command(subcommand)]
    command: Commands,
}

#[derive(Debug, Subcommand)]
enum Commands {
    /// Run the four services in this process on the embedded backends, state kept under DIR.
    AllInOne {
        /// Where state is kept [env: SAGAFLOW_DATA_DIR] [default: ./sagaflow-data]
        #[arg(long, value_name = "DIR")]
        data_dir: Option<PathBuf>,
        /// The address to listen on.
        #[arg(long, default_value = "127.0.0.1")]
        host: IpAddr,
        /// The complaint service's port (0 picks a free one).
        #[arg(long, default_value_t = 3005)]
        complaint_port: u16,
        /// The notification service's port.
        #[arg(long, default_value_t = 3006)]
        notification_port: u16,
        /// The audit service's port.
        #[arg(long, default_value_t = 3007)]
        audit_port: u16,
        /// The event store's port.
        #[arg(long, default_value_t = 3008)]
        event_store_port: u16,
        /// Benchmarking only: commands are recorded but no relay publishes the outbox, so that
        /// `sagaflow bench` can measure the command path alone. Nothing is lost: the next start
        /// without it relays what accumulated.
        #[arg(long, hide = true)]
        relays_paused: bool,
    },
    /// Run one service; PORT sets its port, and RABBITMQ_URL with REDIS_URL its pipeline (the
    /// embedded one under SAGAFLOW_DATA_DIR without them).
    Serve {
        service: Service,
        /// The address to listen on.
        #[arg(long, default_value = "0.0.0.0")]
        host: IpAddr,
    },
    /// Measure a running system (or, with --embedded, an all-in-one started for the purpose)
    /// against bare transactions on the same store, in the same run (docs/performance.md).
    Bench(Box<sagaflow::bench::Args>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Service {
    Complaint,
    Notification,
    Audit,
    EventStore,
}

/// Exits 2 with one line, as every configuration problem does.
fn fail(line: impl std::fmt::Display) -> ExitCode {
    eprintln!("sagaflow: {line}");
    ExitCode::from(2)
}

/// mimalloc rather than glibc's malloc: under load, glibc's allocator (its free-list
/// consolidation above all) took about a quarter of the process's CPU samples.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e)
            if matches!(
                e.kind(),
                clap::error::ErrorKind::DisplayHelp | clap::error::ErrorKind::DisplayVersion
            ) =>
        {
            let _ = e.print();
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            let text = e.to_string();
            let line = text
                .lines()
                .next()
                .unwrap_or("invalid arguments")
                .trim_start_matches("error: ");
            return fail(format!("{line} (see sagaflow --help)"));
        }
    };
    if let Commands::Bench(args) = cli.command {
        return bench(*args);
    }
    let env = |name: &str| std::env::var(name).ok();
    let settings = match CommonSettings::from_env(&env) {
        Ok(s) => s,
        Err(e) => return fail(e),
    };
    let (config, only) = match plan(&cli.command, &settings, &env) {
        Ok(p) => p,
        Err(e) => return fail(e),
    };
    let telemetry = match telemetry::init(
        only.map_or("sagaflow", service_name),
        settings.log_level,
        settings.log_format,
        settings.traces.as_ref(),
    ) {
        Ok(t) => t,
        Err(e) => return fail(e),
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => return fail(format!("starting the async runtime: {e}")),
    };
    let code = match runtime.block_on(run(config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = format!("{e:#}"), "stopped");
            eprintln!("sagaflow: {e:#}");
            ExitCode::FAILURE
        }
    };
    drop(runtime);
    telemetry.shutdown();
    code
}

fn bench(mut args: sagaflow::bench::Args) -> ExitCode {
    if args.database_url.is_none() {
        args.database_url = std::env::var("DATABASE_URL").ok();
    }
    // The bench measures; it exports no traces of its own.
    let _telemetry = telemetry::init(
        "sagaflow-bench",
        config::LogLevel::Warn,
        config::LogFormat::Pretty,
        None,
    );
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => return fail(format!("starting the async runtime: {e}")),
    };
    let json = args.json;
    match runtime.block_on(sagaflow::bench::run(args)) {
        Ok(report) if json => match serde_json::to_string_pretty(&report) {
            Ok(text) => {
                println!("{text}");
                ExitCode::SUCCESS
            }
            Err(e) => fail(format!("writing the report: {e}")),
        },
        Ok(report) => {
            print!("{}", sagaflow::bench::table(&report));
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("sagaflow bench: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn service_name(s: Service) -> &'static str {
    match s {
        Service::Complaint => sagaflow_complaint::SERVICE,
        Service::Notification => sagaflow_notification::SERVICE,
        Service::Audit => sagaflow_audit::SERVICE,
        Service::EventStore => sagaflow_event_store::SERVICE,
    }
}

/// The configuration, every setting checked before anything starts.
fn plan(
    command: &Commands,
    settings: &CommonSettings,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<(Config, Option<Service>), ConfigError> {
    let database = config::var(env, "DATABASE_URL")
        .map(|u| config::database_url(&u))
        .transpose()?;
    let env_dir = || {
        config::var(env, "SAGAFLOW_DATA_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("./sagaflow-data"))
    };
    let (mut cfg, only) = match command {
        Commands::AllInOne {
            data_dir,
            host,
            complaint_port,
            notification_port,
            audit_port,
            event_store_port,
            relays_paused,
        } => {
            let mut cfg = Config::new(data_dir.clone().unwrap_or_else(env_dir));
            cfg.relays_paused = *relays_paused;
            cfg.host = *host;
            cfg.ports = Ports {
                complaint: *complaint_port,
                notification: *notification_port,
                audit: *audit_port,
                event_store: *event_store_port,
            };
            (cfg, None)
        }
        Commands::Serve { service, host } => {
            if *service == Service::Complaint && database.is_none() {
                return Err(ConfigError {
                    var: "DATABASE_URL",
                    problem: "is required by the complaint service (postgres://… or sqlite://PATH)"
                        .into(),
                });
            }
            let mut cfg = Config::new(env_dir());
            cfg.host = *host;
            cfg.only = Some(service_name(*service));
            if let Some(port) = settings.port {
                cfg.ports = Ports {
                    complaint: port,
                    notification: port,
                    audit: port,
                    event_store: port,
                };
            }
            (cfg, Some(*service))
        }
        Commands::Bench(_) => {
            return Err(ConfigError {
                var: "command",
                problem: "bench has no service configuration".into(),
            });
        }
    };
    cfg.database = database;
    cfg.correlation_header = settings.correlation_header.clone();
    apply_env(&mut cfg, env)?;
    Ok((cfg, only))
}

async fn run(config: Config) -> anyhow::Result<()> {
    tracing::info!(dataDir = %config.data_dir.display(), "embedded state directory");
    // The handlers are in place before anything answers: a SIGTERM during the start stops the
    // system cleanly once it is up, instead of killing it.
    let signalled = tokio::spawn(shutdown::signal());
    let system = AllInOne::start(config).await?;
    let _ = signalled.await;
    system.stop().await;
    tracing::info!("stopped cleanly");
    Ok(())
}
