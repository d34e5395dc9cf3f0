//! `sagaflow`: the four services in one process on the embedded default (`all-in-one`), or one
//! service on the backends its environment names (`serve`). This file only wires.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Parser, Subcommand, ValueEnum};
use sagaflow_complaint::{ComplaintService, Storage};
use sagaflow_runtime::config::{self, CommonSettings, ConfigError, DatabaseUrl};
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
    /// Run every service in this process on the embedded backends, state kept under DIR.
    AllInOne {
        /// Where state is kept [env: SAGAFLOW_DATA_DIR] [default: ./sagaflow-data]
        #[arg(long, value_name = "DIR")]
        data_dir: Option<PathBuf>,
        /// The address to listen on.
        #[arg(long, default_value = "127.0.0.1")]
        host: std::net::IpAddr,
        /// The complaint service's port (0 picks a free one).
        #[arg(long, default_value_t = sagaflow_complaint::DEFAULT_PORT)]
        complaint_port: u16,
    },
    /// Run one service on the backends named by its environment (DATABASE_URL …); PORT sets its port.
    Serve {
        service: Service,
        /// The address to listen on.
        #[arg(long, default_value = "0.0.0.0")]
        host: std::net::IpAddr,
    },
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Service {
    Complaint,
}

/// Exits 2 with one line, as every configuration problem does.
fn fail(line: impl std::fmt::Display) -> ExitCode {
    eprintln!("sagaflow: {line}");
    ExitCode::from(2)
}

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
    let env = |name: &str| std::env::var(name).ok();
    let settings = match CommonSettings::from_env(&env) {
        Ok(s) => s,
        Err(e) => return fail(e),
    };
    let plan = match plan(&cli.command, &settings, &env) {
        Ok(p) => p,
        Err(e) => return fail(e),
    };
    telemetry::init(
        sagaflow_complaint::SERVICE,
        settings.log_level,
        settings.log_format,
    );
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => return fail(format!("starting the async runtime: {e}")),
    };
    match runtime.block_on(run(plan, settings)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = format!("{e:#}"), "stopped");
            eprintln!("sagaflow: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// What to run, with every setting checked before anything starts.
struct Plan {
    storage: Storage,
    complaint: SocketAddr,
}

fn plan(
    command: &Commands,
    settings: &CommonSettings,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Plan, ConfigError> {
    let database = config::var(env, "DATABASE_URL")
        .map(|u| config::database_url(&u))
        .transpose()?;
    match command {
        Commands::AllInOne {
            data_dir,
            host,
            complaint_port,
        } => {
            let dir = data_dir
                .clone()
                .or_else(|| config::var(env, "SAGAFLOW_DATA_DIR").map(PathBuf::from))
                .unwrap_or_else(|| PathBuf::from("./sagaflow-data"));
            let storage = match database {
                Some(DatabaseUrl::Sqlite(url)) => Storage::SqliteUrl(url),
                None => Storage::DataDir(dir),
            };
            Ok(Plan {
                storage,
                complaint: SocketAddr::new(*host, *complaint_port),
            })
        }
        Commands::Serve {
            service: Service::Complaint,
            host,
        } => {
            let Some(DatabaseUrl::Sqlite(url)) = database else {
                return Err(ConfigError {
                    var: "DATABASE_URL",
                    problem: "is required by the complaint service (sqlite://PATH)".into(),
                });
            };
            let port = settings.port.unwrap_or(sagaflow_complaint::DEFAULT_PORT);
            Ok(Plan {
                storage: Storage::SqliteUrl(url),
                complaint: SocketAddr::new(*host, port),
            })
        }
    }
}

async fn run(plan: Plan, settings: CommonSettings) -> anyhow::Result<()> {
    if let Storage::DataDir(dir) = &plan.storage {
        tracing::info!(dataDir = %dir.display(), "embedded state directory");
    }
    let service = ComplaintService::open(&plan.storage)
        .await
        .context("opening the complaint service's stores")?;
    let listener = tokio::net::TcpListener::bind(plan.complaint)
        .await
        .with_context(|| format!("listening on {}", plan.complaint))?;
    let addr = listener.local_addr().context("reading the bound address")?;
    tracing::info!(service = sagaflow_complaint::SERVICE, addr = %addr, "listening");
    let router = service.router(settings.correlation_header.clone());
    axum::serve(listener, router)
        .with_graceful_shutdown(shutdown::signal())
        .await
        .context("serving HTTP")?;
    service.close().await;
    tracing::info!("stopped cleanly");
    Ok(())
}
