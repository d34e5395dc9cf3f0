//! `sagaflow-operator`: `run` reconciles EventPipelines and ComplaintSagas; `crdgen` prints the
//! CustomResourceDefinitions that `crds/crds.yaml` holds.

use std::net::IpAddr;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use sagaflow_operator::run::Settings;
use sagaflow_runtime::config::{self, CommonSettings};
use sagaflow_runtime::telemetry;

#[derive(Debug, Parser)]
#[command(
    name = "sagaflow-operator",
    version,
    about = "The sagaflow Kubernetes operator"
)]
struct Cli {
    #[command(subcommand)]
    command: Commands,
}

#[derive(Debug, Subcommand)]
enum Commands {
    /// Print the EventPipeline and ComplaintSaga CRDs as YAML (what crds/crds.yaml holds).
    Crdgen,
    /// Reconcile EventPipelines and ComplaintSagas (in-cluster, or with KUBECONFIG).
    Run {
        /// Watch only this namespace [env: WATCH_NAMESPACE] [default: all namespaces]
        #[arg(long)]
        namespace: Option<String>,
        /// The namespace of the leader Lease [env: POD_NAMESPACE] [default: the watched
        /// namespace, else `default`]
        #[arg(long)]
        lease_namespace: Option<String>,
        /// The leader Lease's name.
        #[arg(long, default_value = "sagaflow-operator")]
        lease_name: String,
        /// This process's name in the Lease [env: POD_NAME] [default: the host name and pid]
        #[arg(long)]
        identity: Option<String>,
        /// How long a Lease lives without renewal (renewed every third of it), e.g. 15s.
        #[arg(long, default_value = "15s")]
        lease_duration: String,
        /// Address of the health and metrics routes.
        #[arg(long, default_value = "0.0.0.0")]
        host: IpAddr,
        /// Port of the health and metrics routes (/health/live, /health/ready, /metrics).
        #[arg(long, default_value_t = 8080)]
        port: u16,
    },
}

fn fail(message: impl std::fmt::Display) -> ExitCode {
    eprintln!("sagaflow-operator: {message}");
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
            eprintln!(
                "sagaflow-operator: {}",
                text.lines()
                    .next()
                    .unwrap_or("invalid arguments")
                    .trim_start_matches("error: ")
            );
            return ExitCode::from(2);
        }
    };
    let telemetry;
    let command = match cli.command {
        Commands::Run {
            namespace,
            lease_namespace,
            lease_name,
            identity,
            lease_duration,
            host,
            port,
        } => {
            let env = |name: &str| std::env::var(name).ok();
            let settings = match CommonSettings::from_env(&env) {
                Ok(s) => s,
                Err(e) => return fail(e),
            };
            let lease_duration = match config::duration("--lease-duration", &lease_duration) {
                Ok(d) if d.as_secs() >= 3 => d,
                Ok(_) => return fail("--lease-duration: at least 3s"),
                Err(e) => return fail(e),
            };
            let namespace = namespace.or_else(|| config::var(&env, "WATCH_NAMESPACE"));
            let lease_namespace = lease_namespace
                .or_else(|| config::var(&env, "POD_NAMESPACE"))
                .or_else(|| namespace.clone())
                .unwrap_or_else(|| "default".into());
            let identity = identity
                .or_else(|| config::var(&env, "POD_NAME"))
                .unwrap_or_else(|| {
                    let host = config::var(&env, "HOSTNAME").unwrap_or_else(|| "operator".into());
                    format!("{host}-{}", std::process::id())
                });
            telemetry = match telemetry::init(
                "sagaflow-operator",
                settings.log_level,
                settings.log_format,
                settings.traces.as_ref(),
            ) {
                Ok(t) => t,
                Err(e) => return fail(e),
            };
            Settings {
                namespace,
                lease_namespace,
                lease_name,
                identity,
                lease_duration,
                host,
                port,
            }
        }
        Commands::Crdgen => return crdgen(),
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => return fail(format!("starting the async runtime: {e}")),
    };
    let code = match runtime.block_on(sagaflow_operator::run::run(command)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = format!("{e:#}"), "stopped");
            eprintln!("sagaflow-operator: {e:#}");
            ExitCode::FAILURE
        }
    };
    drop(runtime);
    telemetry.shutdown();
    code
}

fn crdgen() -> ExitCode {
    match sagaflow_operator::crd::yaml() {
        Ok(yaml) => {
            print!("{yaml}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("sagaflow-operator: rendering the CRDs: {e}");
            ExitCode::FAILURE
        }
    }
}
