//! `sagaflow-operator`: `crdgen` prints the CustomResourceDefinitions that `crds/crds.yaml` holds.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

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
    match cli.command {
        Commands::Crdgen => match sagaflow_operator::crd::yaml() {
            Ok(yaml) => {
                print!("{yaml}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("sagaflow-operator: rendering the CRDs: {e}");
                ExitCode::FAILURE
            }
        },
    }
}
