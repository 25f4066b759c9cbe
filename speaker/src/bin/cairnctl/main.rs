//! `cairnctl`: what Cairn is doing in a cluster, read from the API server only.
//!
//! - `cairnctl status`: pools with their usage, each LoadBalancer Service's addresses with the
//!   pool, the L2 owner node, the protocol (L2/BGP) and the BGP peers with the nodes announcing
//!   to them, and the speakers (`status.rs`).
//! - `cairnctl why <namespace>/<service>`: why the Service has no address, or why each node
//!   does or does not announce each of its addresses, computed with the speakers' own code
//!   (`why.rs`).
//!
//! Both print aligned tables, or JSON with `-o json`. The kubeconfig is found like kubectl finds
//! it: `--kubeconfig`, else `$KUBECONFIG`, else `~/.kube/config`, else the in-cluster service
//! account. `cairnctl` never writes to the API server.

mod cluster;
mod status;
mod table;
mod why;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::SystemTime;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand, ValueEnum};
use kube::config::{KubeConfigOptions, Kubeconfig};

#[derive(Parser)]
#[command(
    name = "cairnctl",
    version,
    about = "What Cairn is doing in the cluster"
)]
struct Cli {
    /// Kubeconfig file (default: $KUBECONFIG, ~/.kube/config, or in-cluster)
    #[arg(long, global = true)]
    kubeconfig: Option<PathBuf>,
    /// Namespace of Cairn's resources and of the speakers' Leases
    #[arg(long, global = true, default_value = "cairn-system")]
    cairn_namespace: String,
    /// The spec.loadBalancerClass Cairn handles (besides Services without a class)
    #[arg(long, global = true, default_value = cairn_api::annotations::DEFAULT_LOAD_BALANCER_CLASS)]
    lb_class: String,
    /// Output format
    #[arg(short = 'o', long, global = true, value_enum, default_value = "table")]
    output: Output,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum Output {
    Table,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Pools, Services with their addresses and announcing nodes, speakers
    Status,
    /// Why a Service has no address, or why each node does or does not announce it
    Why {
        /// The Service, as <namespace>/<name>
        service: String,
    },
}

async fn client(kubeconfig: Option<&PathBuf>) -> Result<kube::Client> {
    let config = match kubeconfig {
        Some(path) => {
            let kc = Kubeconfig::read_from(path)
                .with_context(|| format!("reading kubeconfig {}", path.display()))?;
            kube::Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
                .await
                .context("loading the kubeconfig")?
        }
        None => kube::Config::infer()
            .await
            .context("finding a kubeconfig ($KUBECONFIG, ~/.kube/config or in-cluster)")?,
    };
    kube::Client::try_from(config).context("building the API client")
}

fn print<T: serde::Serialize>(output: Output, value: &T, text: impl FnOnce(&T) -> String) {
    match output {
        Output::Json => match serde_json::to_string_pretty(value) {
            Ok(json) => println!("{json}"),
            Err(e) => eprintln!("cairnctl: cannot print JSON: {e}"),
        },
        Output::Table => print!("{}", text(value)),
    }
}

async fn run(cli: Cli) -> Result<()> {
    let client = client(cli.kubeconfig.as_ref()).await?;
    let cluster = cluster::Cluster::fetch(&client, &cli.cairn_namespace).await?;
    let now = SystemTime::now();
    match &cli.command {
        Command::Status => {
            let report = status::report(&cluster, now);
            print(cli.output, &report, status::render);
        }
        Command::Why { service } => {
            let report = why::report(&cluster, service, &cli.lb_class, now)?;
            print(cli.output, &report, why::render);
        }
    }
    Ok(())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cairnctl: cannot start a runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("cairnctl: {e:#}");
            ExitCode::FAILURE
        }
    }
}
