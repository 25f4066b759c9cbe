//! `cairn-allocator`: gives LoadBalancer Services stable addresses from `IPAddressPool`s.
//! Run two replicas; one leads (Lease `cairn-allocator` in `--namespace`).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use cairn_allocator::controller::{self, Health};
use cairn_allocator::metrics::{self, Metrics};
use clap::{Parser, ValueEnum};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::Client;
use tokio::sync::watch;

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Parser)]
#[command(
    version,
    about = "Cairn's allocator: stable LoadBalancer addresses from IPAddressPools"
)]
struct Args {
    /// Handle Services with this spec.loadBalancerClass (and those with none)
    #[arg(long, default_value = cairn_api::annotations::DEFAULT_LOAD_BALANCER_CLASS)]
    lb_class: String,
    /// Namespace of the IPAddressPools and of the leader Lease
    #[arg(long, default_value = "cairn-system")]
    namespace: String,
    /// Name of the leader Lease
    #[arg(long, default_value = "cairn-allocator")]
    lease_name: String,
    /// This replica's identity in the Lease (default: $POD_NAME, else host name and pid)
    #[arg(long)]
    identity: Option<String>,
    /// How long the leader's Lease lasts without renewal
    #[arg(long, default_value = "10s", value_parser = duration)]
    lease_duration: Duration,
    /// How often the Lease is read and renewed
    #[arg(long, default_value = "2s", value_parser = duration)]
    renew_interval: Duration,
    /// Address of /metrics, /healthz and /readyz
    #[arg(long, default_value = "0.0.0.0:7472")]
    metrics_addr: SocketAddr,
    /// Log format
    #[arg(long, value_enum, default_value = "text")]
    log_format: LogFormat,
    /// Kubeconfig to use instead of $KUBECONFIG or the in-cluster configuration
    #[arg(long)]
    kubeconfig: Option<std::path::PathBuf>,
}

fn duration(text: &str) -> Result<Duration, String> {
    cairn_api::validation::parse_duration(text)
}

fn identity(args: &Args) -> String {
    args.identity
        .clone()
        .or_else(|| std::env::var("POD_NAME").ok())
        .unwrap_or_else(|| {
            let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
            format!("{}-{}", host.trim(), std::process::id())
        })
}

async fn client(args: &Args) -> Result<Client> {
    match &args.kubeconfig {
        Some(path) => {
            let kubeconfig = Kubeconfig::read_from(path)
                .with_context(|| format!("reading kubeconfig {}", path.display()))?;
            let config =
                kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
                    .await
                    .context("loading the kubeconfig")?;
            Client::try_from(config).context("building the API client")
        }
        None => Client::try_default()
            .await
            .context("no kubeconfig: set --kubeconfig or $KUBECONFIG, or run in a cluster"),
    }
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    match args.log_format {
        LogFormat::Json => tracing_subscriber::fmt()
            .json()
            .with_env_filter(filter)
            .init(),
        LogFormat::Text => tracing_subscriber::fmt().with_env_filter(filter).init(),
    }
    let client = client(&args).await?;
    let metrics = Arc::new(Metrics::new());
    let health = Arc::new(Health::default());
    let (bound, _server) = metrics::serve(args.metrics_addr, metrics.clone(), health.clone())
        .await
        .with_context(|| format!("listening on {}", args.metrics_addr))?;
    tracing::info!(%bound, "serving /metrics, /healthz, /readyz");
    let (shutdown_tx, shutdown) = watch::channel(false);
    tokio::spawn(async move {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(term) => term,
                Err(e) => {
                    tracing::error!(error = %e, "cannot listen for SIGTERM");
                    return;
                }
            };
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
        tracing::info!("shutting down: releasing leadership");
        shutdown_tx.send_replace(true);
    });
    let config = controller::Config {
        lb_class: args.lb_class.clone(),
        namespace: args.namespace.clone(),
        lease_name: args.lease_name.clone(),
        identity: identity(&args),
        lease_duration: args.lease_duration,
        renew_interval: args.renew_interval,
        write_concurrency: 16,
    };
    controller::run(client, config, metrics, health, shutdown)
        .await
        .context("the controller stopped")?;
    Ok(())
}
