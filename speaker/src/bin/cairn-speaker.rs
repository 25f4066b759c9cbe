//! `cairn-speaker`: announces LoadBalancer addresses from one node (DaemonSet, host network),
//! by L2 (gratuitous ARP / NDP and answering ARP / NS) and BGP. See
//! [`cairn_speaker::runtime`] for what it does; this file only reads flags, sets up logging,
//! the metrics endpoint and signals, and runs it.
//!
//! With `--dataplane xdp` the XDP load balancer (which also strips tunnels to this node's
//! endpoints) is attached to `--xdp-interface`.
//!
//! SIGTERM / SIGINT: every announcement is withdrawn, the Lease released, `speaker stopped`
//! logged, exit status 0.

use std::io::IsTerminal;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use cairn_arp::{InterfaceSelection, L2Announcer, L2Config, L2Error};
use cairn_speaker::dataplane::{XdpConfig, XdpProgrammer};
use cairn_speaker::metrics::{self, Health, Metrics};
use cairn_speaker::runtime::{self, Config};
use cairn_xdp::DataplaneConfig;
use clap::{Parser, ValueEnum};
use k8s_openapi::api::core::v1::Node;
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::Api;
use kube::Client;
use tokio::sync::watch;

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Dataplane {
    /// Packets to VIPs reach the node's kernel (kube-proxy or equivalent forwards them)
    Kernel,
    /// An XDP program forwards packets to VIPs to the backends
    Xdp,
}

#[derive(Parser)]
#[command(
    version,
    about = "Cairn's speaker: announces LoadBalancer addresses from this node by L2 and BGP"
)]
struct Args {
    /// This node's name (from the downward API)
    #[arg(long, env = "NODE_NAME")]
    node_name: String,
    /// This speaker's identity in its Lease (default: the node name)
    #[arg(long, env = "POD_NAME")]
    identity: Option<String>,
    /// Namespace of the speaker Leases, the Cairn resources and the BGP password Secrets
    #[arg(long, default_value = "cairn-system")]
    namespace: String,
    /// Announce Services with this spec.loadBalancerClass (and those with none)
    #[arg(long, default_value = cairn_api::annotations::DEFAULT_LOAD_BALANCER_CLASS)]
    lb_class: String,
    /// How long this node's Lease lasts without renewal (whole seconds)
    #[arg(long, default_value = "3s", value_parser = duration)]
    lease_duration: Duration,
    /// How often the Lease is renewed
    #[arg(long, default_value = "1s", value_parser = duration)]
    renew_interval: Duration,
    /// Address of /metrics, /healthz and /readyz
    #[arg(long, default_value = "0.0.0.0:7473")]
    metrics_addr: SocketAddr,
    /// Kubeconfig to use instead of $KUBECONFIG or the in-cluster configuration
    #[arg(long)]
    kubeconfig: Option<std::path::PathBuf>,
    /// Log format
    #[arg(long, value_enum, default_value = "text")]
    log_format: LogFormat,
    /// How packets to VIPs are delivered on this node
    #[arg(long, value_enum, default_value = "kernel")]
    dataplane: Dataplane,
    /// With --dataplane xdp: the uplink the XDP program is attached to (VIP packets arrive and
    /// tunnels leave there; tunnels to this node's endpoints are stripped there too)
    #[arg(long, required_if_eq("dataplane", "xdp"))]
    xdp_interface: Option<String>,
    /// With --dataplane xdp: bpffs directory to pin the XDP maps and links in, so that a
    /// restarted speaker keeps forwarding (one directory per node); none: detached on exit
    #[arg(long)]
    xdp_pin_dir: Option<std::path::PathBuf>,
}

fn duration(text: &str) -> Result<Duration, String> {
    cairn_api::validation::parse_duration(text)
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

/// The announcer of every eligible interface, or `None` (BGP only) when the node has none.
fn l2_announcer() -> Result<Option<L2Announcer>> {
    match L2Announcer::new(L2Config::new(InterfaceSelection::AllEligible)) {
        Ok(l2) => {
            let names: Vec<String> = l2.interfaces().into_iter().map(|i| i.name).collect();
            tracing::info!(interfaces = ?names, "serving L2 on these interfaces");
            Ok(Some(l2))
        }
        Err(L2Error::NoEligibleInterface) => {
            tracing::warn!(
                "no interface can announce by L2 (none up, Ethernet, not loopback); BGP only"
            );
            Ok(None)
        }
        Err(e) => Err(e).context("opening the L2 announcer"),
    }
}

/// Loads the XDP data plane with this node's InternalIPs as tunnel sources and attaches it.
async fn xdp_programmer(args: &Args, client: &Client) -> Result<XdpProgrammer> {
    let Some(ifname) = args.xdp_interface.as_deref() else {
        bail!("--dataplane xdp needs --xdp-interface");
    };
    let node = Api::<Node>::all(client.clone())
        .get(&args.node_name)
        .await
        .with_context(|| format!("reading Node {} for its InternalIPs", args.node_name))?;
    let internal: Vec<IpAddr> = node
        .status
        .iter()
        .flat_map(|s| s.addresses.iter().flatten())
        .filter(|a| a.type_ == "InternalIP")
        .filter_map(|a| a.address.parse().ok())
        .collect();
    let local_v4 = internal.iter().find_map(|ip| match ip {
        IpAddr::V4(v4) => Some(*v4),
        IpAddr::V6(_) => None,
    });
    let local_v6 = internal.iter().find_map(|ip| match ip {
        IpAddr::V6(v6) => Some(*v6),
        IpAddr::V4(_) => None,
    });
    if local_v4.is_none() && local_v6.is_none() {
        bail!("Node {} has no InternalIP to tunnel from", args.node_name);
    }
    if let Some(dir) = &args.xdp_pin_dir {
        for sub in ["lb", "decap"] {
            let path = dir.join(sub);
            std::fs::create_dir_all(&path)
                .with_context(|| format!("creating the pin directory {}", path.display()))?;
        }
    }
    let config = XdpConfig {
        balancer: DataplaneConfig {
            pin_dir: args.xdp_pin_dir.as_ref().map(|d| d.join("lb")),
            local_v4,
            local_v6,
            ..DataplaneConfig::default()
        },
        decap_pin_dir: args.xdp_pin_dir.as_ref().map(|d| d.join("decap")),
    };
    let mut xdp = XdpProgrammer::load(config).context("loading the XDP programs")?;
    let mode = xdp
        .attach_balancer(ifname)
        .with_context(|| format!("attaching XDP to {ifname}"))?;
    tracing::info!(
        interface = ifname,
        ?mode,
        ?local_v4,
        ?local_v6,
        "XDP data plane attached"
    );
    Ok(xdp)
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
        LogFormat::Text => tracing_subscriber::fmt()
            .with_env_filter(filter)
            // Colours only on a terminal, so log files stay plain text.
            .with_ansi(std::io::stdout().is_terminal())
            .init(),
    }
    let identity = args
        .identity
        .clone()
        .unwrap_or_else(|| args.node_name.clone());
    let mut config = Config::new(args.node_name.clone(), identity);
    config.namespace = args.namespace.clone();
    config.lb_class = args.lb_class.clone();
    config.lease.lease_duration = args.lease_duration;
    config.lease.renew_interval = args.renew_interval;
    config
        .lease
        .validate()
        .context("--lease-duration / --renew-interval")?;
    // Signals first: a SIGTERM during start-up still ends in a clean release.
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("listening for SIGTERM")?;
    let (shutdown_tx, shutdown) = watch::channel(false);
    tokio::spawn(async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
        tracing::info!("shutting down: withdrawing everything and releasing the lease");
        shutdown_tx.send_replace(true);
    });
    let client = client(&args).await?;
    let metrics = Arc::new(Metrics::new());
    let health = Arc::new(Health::default());
    let (bound, _server) = metrics::serve(args.metrics_addr, metrics.clone(), health.clone())
        .await
        .with_context(|| format!("listening on {}", args.metrics_addr))?;
    tracing::info!(%bound, "serving /metrics, /healthz, /readyz");
    let l2 = l2_announcer()?;
    let xdp = match args.dataplane {
        Dataplane::Kernel => None,
        Dataplane::Xdp => Some(xdp_programmer(&args, &client).await?),
    };
    runtime::run(client, config, l2, xdp, metrics, health, shutdown)
        .await
        .context("the speaker stopped")?;
    Ok(())
}
