//! The lab: Cairn's whole world on one machine, in network namespaces with fixed names, that
//! outlives the command that made it (`cargo xtask lab up|down|status`, the demo, the e2e tests).
//!
//! Topology (all addresses from the documentation ranges; `P` is the name prefix, `cairn` for the
//! user's lab, something like `cairn-t<pid>` for a test's own lab):
//!
//! ```text
//!   P-lab-client 198.51.100.100 / 2001:db8:4::100 (eth0, default via the router)
//!        |
//!   P-lab-router  eth1 198.51.100.1 / 2001:db8:4::1     FRR (zebra + bgpd), AS 64500
//!                 eth0 192.0.2.1 / 2001:db8:2::1        eBGP to the nodes, TCP MD5, ECMP 8
//!        |
//!   P-lab-sw      br0 (the node segment 192.0.2.0/24, 2001:db8:2::/64; nothing else)
//!        |            |            |            |
//!   P-n1 .11     P-n2 .12     P-n3 .13     P-lab-l2client .100   (each on its eth0)
//! ```
//!
//! Processes: FRR in the router namespace; the lab API server (`cairn-lab-apiserver`) in the host
//! namespace on 127.0.0.1, writing `<dir>/kubeconfig`; `cairn-lab-forward`, which makes that same
//! address answer inside the node namespaces (so the one kubeconfig works there too); one
//! `cairn-lab-echo` per node namespace on port 8080 (the backends). The lab also plays kubelet
//! and endpoint controller: it creates the Nodes `cairn-n1..3` and, on request
//! ([`create_service`]), a Service with its EndpointSlices.
//!
//! Cairn itself (see `lab/cairn.rs`): the lab installs the CRDs and namespace `cairn-system`
//! from `manifests/`, and, when [`LabConfig::start_cairn`] says so, starts `cairn-allocator` in
//! the host namespace and one `cairn-speaker` per node namespace, recorded like the lab's own
//! processes (`allocator`, `speaker-n1`…) so that `status` lists them and `down` stops them
//! (first, while the API server still answers). [`Lab::stop_speaker`] / [`Lab::start_speaker`]
//! drive failovers. The lab also stands in for kube-proxy: every node delivers [`VIP_RANGES`]
//! to its echo server, and only Cairn answers ARP/NDP for those addresses.
//!
//! Everything the lab makes lives under its directory (`target/lab/` for the user's lab): logs in
//! `logs/`, one pid file per process in `pids/`, the kubeconfig, the API server's state, and a
//! link to FRR's directory. [`Lab::down`] finds what to remove by the fixed namespace names and
//! the pid files, so it also cleans up after a crashed run. This module never touches the host's
//! interfaces: every link is created inside the lab's namespaces.

use std::ffi::OsStr;
use std::fs::File;
use std::mem::ManuallyDrop;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Node, Service};
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointConditions, EndpointPort, EndpointSlice};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};

use crate::netns::{self, Netns, NetnsError};
use crate::routers::{Frr, Neighbor, RouterConfig, RouterError};

mod cairn;
pub mod demo;

pub use cairn::{manifests_dir, Dataplane, Signal, VIP_RANGES};

/// The router's AS.
pub const ROUTER_ASN: u32 = 64500;
/// The nodes' AS (manifests/examples/bgp.yaml).
pub const NODE_ASN: u32 = 64512;
/// The TCP MD5 password of the BGP sessions (Secret `tor-bgp-password` in the manifests).
pub const BGP_PASSWORD: &str = "lab-only-password";
/// The router's address on the node segment.
pub const ROUTER_V4: &str = "192.0.2.1";
/// The router's IPv6 address on the node segment.
pub const ROUTER_V6: &str = "2001:db8:2::1";
/// The external client's address (behind the router).
pub const CLIENT_V4: &str = "198.51.100.100";
/// The external client's IPv6 address.
pub const CLIENT_V6: &str = "2001:db8:4::100";
/// The L2 client's address (on the node segment).
pub const L2CLIENT_V4: &str = "192.0.2.100";
/// The L2 client's IPv6 address.
pub const L2CLIENT_V6: &str = "2001:db8:2::100";
/// The port of the echo servers (TCP and UDP).
pub const ECHO_PORT: u16 = 8080;

/// A node of the lab.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LabNode {
    /// Its Kubernetes name (`cairn-n1`…), also what its echo server reports.
    pub name: &'static str,
    /// The suffix of its namespace name (`n1` → `<prefix>-n1`).
    pub short: &'static str,
    /// Its address on the node segment.
    pub v4: &'static str,
    /// Its IPv6 address on the node segment.
    pub v6: &'static str,
}

/// The three nodes.
pub const NODES: [LabNode; 3] = [
    LabNode {
        name: "cairn-n1",
        short: "n1",
        v4: "192.0.2.11",
        v6: "2001:db8:2::11",
    },
    LabNode {
        name: "cairn-n2",
        short: "n2",
        v4: "192.0.2.12",
        v6: "2001:db8:2::12",
    },
    LabNode {
        name: "cairn-n3",
        short: "n3",
        v4: "192.0.2.13",
        v6: "2001:db8:2::13",
    },
];

/// Errors from bringing the lab up or down.
#[derive(Debug, thiserror::Error)]
pub enum LabError {
    /// A namespace command failed.
    #[error(transparent)]
    Netns(#[from] NetnsError),
    /// FRR could not be started or queried.
    #[error(transparent)]
    Router(#[from] RouterError),
    /// File or process work failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// The kubeconfig could not be loaded.
    #[error("loading the lab kubeconfig: {0}")]
    Kubeconfig(#[from] kube::config::KubeconfigError),
    /// A request to the lab API server failed.
    #[error("{what}: {source}")]
    Kube {
        /// The request.
        what: String,
        /// The client's error.
        source: kube::Error,
    },
    /// Something did not become ready in time.
    #[error("{what} did not become ready in time{detail}")]
    NotReady {
        /// What was awaited.
        what: String,
        /// Context, such as the end of a log.
        detail: String,
    },
    /// The request makes no sense for the lab (unknown node, bad Service).
    #[error("{0}")]
    Invalid(String),
}

fn io_error(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> LabError {
    let what = what.into();
    move |source| LabError::Io { what, source }
}

fn kube_error(what: impl Into<String>) -> impl FnOnce(kube::Error) -> LabError {
    let what = what.into();
    move |source| LabError::Kube { what, source }
}

/// Where and under which names a lab lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LabConfig {
    /// Prefix of every namespace name (`cairn` → `cairn-n1`, `cairn-lab-router`, …).
    pub prefix: String,
    /// The lab's directory: logs, pid files, kubeconfig, API server state.
    pub dir: PathBuf,
    /// Where the `cairn-lab-*` binaries are (`target/debug`).
    pub bin_dir: PathBuf,
    /// The lab API server's port on 127.0.0.1.
    pub api_port: u16,
    /// Whether `up` starts Cairn's own processes (the allocator and one speaker per node).
    /// Tests that drive speakers themselves turn it off; the CRDs and `cairn-system` are
    /// installed either way.
    pub start_cairn: bool,
    /// The speakers' `--dataplane`.
    pub dataplane: Dataplane,
}

impl LabConfig {
    /// The user's lab of the workspace at `root`: prefix `cairn`, directory `target/lab`,
    /// binaries from `target/debug`, API server on 127.0.0.1:16443.
    pub fn user(root: &Path) -> Self {
        Self {
            prefix: "cairn".into(),
            dir: root.join("target/lab"),
            bin_dir: root.join("target/debug"),
            api_port: 16443,
            start_cairn: true,
            dataplane: Dataplane::Kernel,
        }
    }

    /// A test's own lab: prefix `cairn-t<pid><tag>` (short enough for interface names), its
    /// directory `<tmp>/lab-<pid><tag>`, binaries from `bin_dir` (the directory of a
    /// `CARGO_BIN_EXE_…`), a free API port, Cairn's processes started.
    pub fn for_test(tag: &str, bin_dir: &Path, tmp: &Path) -> Result<Self, LabError> {
        let pid = std::process::id();
        let api_port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map_err(io_error("finding a free port"))?
            .port();
        Ok(Self {
            prefix: format!("cairn-t{pid}{tag}"),
            dir: tmp.join(format!("lab-{pid}{tag}")),
            bin_dir: bin_dir.to_path_buf(),
            api_port,
            start_cairn: true,
            dataplane: Dataplane::Kernel,
        })
    }
}

/// What [`Lab::up`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UpOutcome {
    /// The lab was already up and healthy; nothing was changed.
    AlreadyUp,
    /// The lab was created; the lines say what was made.
    Created(Vec<String>),
}

/// One process the lab recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcessStatus {
    /// The lab's name for it (`apiserver`, `echo-n1`, `frr-bgpd`, …).
    pub name: String,
    /// Its pid.
    pub pid: u32,
    /// Whether it still runs (same program at that pid, not a zombie).
    pub alive: bool,
}

/// The lab's state as found on the machine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LabStatus {
    /// Each namespace of the lab and whether it exists.
    pub namespaces: Vec<(String, bool)>,
    /// The recorded processes.
    pub processes: Vec<ProcessStatus>,
    /// FRR's `show bgp summary`, when it answers.
    pub bgp_summary: Option<String>,
}

impl LabStatus {
    /// True when every namespace exists and every recorded process runs.
    pub fn healthy(&self) -> bool {
        self.namespaces.iter().all(|(_, exists)| *exists)
            && !self.processes.is_empty()
            && self.processes.iter().all(|p| p.alive)
    }
}

/// A lab, by its configuration; the machine holds its state, so any number of `Lab` values (in
/// any number of processes) may refer to the same lab.
pub struct Lab {
    config: LabConfig,
    /// Processes this value started, kept so that `down` can reap them.
    children: Mutex<Vec<Child>>,
}

impl Lab {
    /// The lab described by `config` (nothing is created until [`Lab::up`]).
    pub fn new(config: LabConfig) -> Self {
        Self {
            config,
            children: Mutex::new(Vec::new()),
        }
    }

    /// Its configuration.
    pub fn config(&self) -> &LabConfig {
        &self.config
    }

    /// The namespace holding the node segment's bridge.
    pub fn switch_namespace(&self) -> String {
        format!("{}-lab-sw", self.config.prefix)
    }

    /// The router's namespace.
    pub fn router_namespace(&self) -> String {
        format!("{}-lab-router", self.config.prefix)
    }

    /// The external client's namespace.
    pub fn client_namespace(&self) -> String {
        format!("{}-lab-client", self.config.prefix)
    }

    /// The L2 client's namespace.
    pub fn l2client_namespace(&self) -> String {
        format!("{}-lab-l2client", self.config.prefix)
    }

    /// The namespace of `node`.
    pub fn node_namespace(&self, node: &LabNode) -> String {
        format!("{}-{}", self.config.prefix, node.short)
    }

    /// The MAC address of `node`'s interface on the L2 segment.
    pub fn node_mac(&self, node: &LabNode) -> Result<cairn_arp::MacAddr, NetnsError> {
        Netns::adopt(&self.node_namespace(node))
            .mac("eth0")
            .map(cairn_arp::MacAddr)
    }

    /// The name of the node whose L2 interface has `mac`, or the MAC itself when none has.
    pub fn name_of_mac(&self, mac: cairn_arp::MacAddr) -> String {
        NODES
            .iter()
            .find(|n| self.node_mac(n).ok() == Some(mac))
            .map_or_else(|| mac.to_string(), |n| n.name.to_owned())
    }

    /// Every namespace of the lab.
    pub fn namespaces(&self) -> Vec<String> {
        let mut names = vec![self.switch_namespace(), self.router_namespace()];
        names.extend(NODES.iter().map(|n| self.node_namespace(n)));
        names.push(self.client_namespace());
        names.push(self.l2client_namespace());
        names
    }

    /// The kubeconfig of the lab API server.
    pub fn kubeconfig(&self) -> PathBuf {
        self.config.dir.join("kubeconfig")
    }

    /// The directory of the logs.
    pub fn log_dir(&self) -> PathBuf {
        self.config.dir.join("logs")
    }

    /// Copies the lab's logs to `to` (created if needed), for a failed test or benchmark: `down`
    /// removes the lab's directory with them.
    pub fn keep_logs(&self, to: &Path) -> std::io::Result<()> {
        std::fs::create_dir_all(to)?;
        for entry in std::fs::read_dir(self.log_dir())? {
            let entry = entry?;
            std::fs::copy(entry.path(), to.join(entry.file_name()))?;
        }
        Ok(())
    }

    /// Where the speakers pin their XDP maps and links with `--dataplane xdp`, one directory per
    /// node: a bpffs instance of the lab's own, since `ip netns exec` hides the host's
    /// `/sys/fs/bpf` (it remounts `/sys`).
    pub fn bpf_pin_dir(&self) -> PathBuf {
        self.config.dir.join("bpffs")
    }

    fn mount_bpffs(&self) -> Result<(), LabError> {
        let dir = self.bpf_pin_dir();
        std::fs::create_dir_all(&dir).map_err(io_error(format!("creating {}", dir.display())))?;
        if !is_mount_point(&dir) {
            run_command(Command::new("mount").args(["-t", "bpf", "bpf"]).arg(&dir))?;
        }
        Ok(())
    }

    fn pid_dir(&self) -> PathBuf {
        self.config.dir.join("pids")
    }

    /// FRR's directory (config, vty sockets, logs), as recorded by `up`.
    fn frr_dir(&self) -> Option<PathBuf> {
        std::fs::read_link(self.config.dir.join("frr")).ok()
    }

    /// Brings the lab up. An already healthy lab is left alone ([`UpOutcome::AlreadyUp`]); a
    /// partial one (a crashed run) is torn down first and made again.
    pub fn up(&self) -> Result<UpOutcome, LabError> {
        if self.status().healthy() && self.kubeconfig().exists() {
            return Ok(UpOutcome::AlreadyUp);
        }
        self.down()?;
        let mut made = Vec::new();
        let result = self.create(&mut made);
        match result {
            Ok(()) => Ok(UpOutcome::Created(made)),
            Err(e) => {
                // Leave nothing half-made behind; the error is what matters.
                let _ = self.down();
                Err(e)
            }
        }
    }

    fn create(&self, made: &mut Vec<String>) -> Result<(), LabError> {
        for dir in [self.log_dir(), self.pid_dir()] {
            std::fs::create_dir_all(&dir)
                .map_err(io_error(format!("creating {}", dir.display())))?;
        }
        let sw = Netns::create_named(&self.switch_namespace())?;
        let router = Netns::create_named(&self.router_namespace())?;
        let client_ns = Netns::create_named(&self.client_namespace())?;
        let l2client = Netns::create_named(&self.l2client_namespace())?;
        let nodes = NODES
            .iter()
            .map(|n| Netns::create_named(&self.node_namespace(n)))
            .collect::<Result<Vec<_>, _>>()?;
        made.push(format!("namespaces: {}", self.namespaces().join(" ")));

        // The node segment: br0 in the switch namespace, one port per member, each member's
        // side named eth0 (the manifests announce on eth0).
        sw.add_bridge("br0")?;
        let mut members: Vec<(&Netns, String, &str, &str)> =
            vec![(&router, "router".into(), ROUTER_V4, ROUTER_V6)];
        for (ns, node) in nodes.iter().zip(NODES.iter()) {
            members.push((ns, node.short.into(), node.v4, node.v6));
        }
        members.push((&l2client, "l2client".into(), L2CLIENT_V4, L2CLIENT_V6));
        for (ns, port, v4, v6) in &members {
            sw.veth(port, ns, "eth0")?;
            sw.ip(&["link", "set", port, "master", "br0"])?;
            ns.addr("eth0", &format!("{v4}/24"))?;
            ns.addr("eth0", &format!("{v6}/64"))?;
            ns.disable_tx_checksum_offload("eth0")?;
        }
        for ns in &nodes {
            cairn::install_kube_proxy_standin(ns)?;
        }
        made.push(format!(
            "kube-proxy stand-in: {} delivered locally on every node (routes on lo, no kernel \
             ARP/NDP answers for them)",
            VIP_RANGES.join(" ")
        ));
        for ns in nodes.iter().chain([&l2client]) {
            ns.ip(&["route", "add", "default", "via", ROUTER_V4])?;
            ns.ip(&["-6", "route", "add", "default", "via", ROUTER_V6])?;
        }
        made.push(format!(
            "node segment: bridge br0 in {}, router {ROUTER_V4}, nodes {}, L2 client {L2CLIENT_V4}",
            self.switch_namespace(),
            NODES.map(|n| n.v4).join(" ")
        ));

        // The external net.
        router.veth("eth1", &client_ns, "eth0")?;
        router.disable_tx_checksum_offload("eth1")?;
        client_ns.disable_tx_checksum_offload("eth0")?;
        router.addr("eth1", "198.51.100.1/24")?;
        router.addr("eth1", "2001:db8:4::1/64")?;
        client_ns.addr("eth0", &format!("{CLIENT_V4}/24"))?;
        client_ns.addr("eth0", &format!("{CLIENT_V6}/64"))?;
        client_ns.ip(&["route", "add", "default", "via", "198.51.100.1"])?;
        client_ns.ip(&["-6", "route", "add", "default", "via", "2001:db8:4::1"])?;
        for key in [
            "net.ipv4.ip_forward=1",
            "net.ipv6.conf.all.forwarding=1",
            "net.ipv4.conf.all.arp_accept=1",
            "net.ipv4.conf.eth0.arp_accept=1",
        ] {
            router.exec(&["sysctl", "-qw", key])?;
        }
        for key in [
            "net.ipv4.conf.all.arp_accept=1",
            "net.ipv4.conf.eth0.arp_accept=1",
        ] {
            l2client.exec(&["sysctl", "-qw", key])?;
        }
        made.push(format!(
            "external net: router 198.51.100.1 <-> client {CLIENT_V4} in {}",
            self.client_namespace()
        ));

        self.start_frr(&router)?;
        made.push(format!(
            "FRR in {}: AS {ROUTER_ASN}, eBGP (MD5) to {} AS {NODE_ASN}; logs in {}",
            self.router_namespace(),
            NODES.map(|n| n.v4).join(" "),
            self.config.dir.join("frr").display()
        ));

        self.start_apiserver()?;
        made.push(format!(
            "lab API server on 127.0.0.1:{}; kubeconfig {}",
            self.config.api_port,
            self.kubeconfig().display()
        ));

        self.start_forward()?;
        made.push(format!(
            "the API server also answers on 127.0.0.1:{} inside the node namespaces",
            self.config.api_port
        ));

        for node in &NODES {
            self.start_echo(node)?;
        }
        made.push(format!(
            "echo servers (TCP+UDP {ECHO_PORT}) in {}",
            NODES
                .iter()
                .map(|n| self.node_namespace(n))
                .collect::<Vec<_>>()
                .join(" ")
        ));

        let kubeconfig = self.kubeconfig();
        block_on(async move {
            let api = client(&kubeconfig).await?;
            create_nodes(&api).await
        })?;
        made.push(format!("Nodes {}", NODES.map(|n| n.name).join(" ")));

        self.apply_manifests()?;
        made.push("Cairn's CRDs and namespace cairn-system (manifests/)".into());
        if self.config.dataplane == Dataplane::Xdp {
            self.mount_bpffs()?;
            self.start_xdp_pass()?;
            made.push(format!(
                "xdp_pass on the switch side of {} (veths deliver XDP_TX frames only to a peer \
                 with an XDP program)",
                NODES.map(|n| n.short).join(" ")
            ));
        }
        if self.config.start_cairn {
            self.start_cairn(made)?;
        }
        Ok(())
    }

    fn start_frr(&self, router: &Netns) -> Result<(), LabError> {
        let neighbors = NODES
            .iter()
            .map(|n| {
                let address: IpAddr =
                    n.v4.parse()
                        .map_err(|e| LabError::Invalid(format!("node address {}: {e}", n.v4)))?;
                Ok(Neighbor {
                    address,
                    remote_as: NODE_ASN,
                    password: Some(BGP_PASSWORD.into()),
                })
            })
            .collect::<Result<Vec<_>, LabError>>()?;
        let config = RouterConfig {
            asn: ROUTER_ASN,
            router_id: Ipv4Addr::new(192, 0, 2, 1),
            neighbors,
        };
        // The nodes announce IPv6 prefixes over their IPv4 sessions (the manifests name one
        // peer, 192.0.2.1), and the plan's hold time is 9 s.
        let mut conf = Frr::bgpd_conf(&config);
        for n in &NODES {
            conf.push_str(&format!(" neighbor {} timers 3 9\n", n.v4));
        }
        conf.push_str(" address-family ipv6 unicast\n");
        for n in &NODES {
            conf.push_str(&format!("  neighbor {} activate\n", n.v4));
        }
        conf.push_str(" exit-address-family\n");
        // The lab outlives this process: FRR must keep running when this handle goes away, so
        // its drop (which stops bgpd and removes its directory) must not run. `down` does that.
        let frr = ManuallyDrop::new(Frr::start(router, &conf)?);
        let frr_dir = frr.dir().to_path_buf();
        let link = self.config.dir.join("frr");
        std::os::unix::fs::symlink(&frr_dir, &link)
            .map_err(io_error(format!("linking {}", link.display())))?;
        for daemon in ["zebra", "bgpd"] {
            let pid_file = frr_dir.join(format!("{daemon}.pid"));
            let pid = std::fs::read_to_string(&pid_file)
                .ok()
                .and_then(|t| t.trim().parse::<u32>().ok())
                .ok_or_else(|| LabError::NotReady {
                    what: format!("{daemon}'s pid file {}", pid_file.display()),
                    detail: String::new(),
                })?;
            self.record(
                &format!("frr-{daemon}"),
                pid,
                &format!("/usr/lib/frr/{daemon}"),
            )?;
        }
        Ok(())
    }

    fn start_apiserver(&self) -> Result<(), LabError> {
        let bin = self.config.bin_dir.join("cairn-lab-apiserver");
        let listen = format!("127.0.0.1:{}", self.config.api_port);
        let kubeconfig = self.kubeconfig();
        let state = self.config.dir.join("apiserver-state.json");
        let argv: [&OsStr; 7] = [
            bin.as_os_str(),
            "--listen".as_ref(),
            listen.as_ref(),
            "--kubeconfig-out".as_ref(),
            kubeconfig.as_os_str(),
            "--state-file".as_ref(),
            state.as_os_str(),
        ];
        let log = self.log_dir().join("apiserver.log");
        self.start_process("apiserver", None, &argv, &log)?;
        let addr = SocketAddr::from(([127, 0, 0, 1], self.config.api_port));
        wait_until(Duration::from_secs(20), || {
            self.kubeconfig().exists()
                && TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok()
        })
        .then_some(())
        .ok_or_else(|| not_ready("the lab API server", &log))
    }

    /// Holds `xdp_pass` on the switch ports of the nodes, for the speakers' XDP_TX frames.
    fn start_xdp_pass(&self) -> Result<(), LabError> {
        let mut argv = vec![self
            .config
            .bin_dir
            .join("cairn-lab-xdp-pass")
            .display()
            .to_string()];
        argv.extend(NODES.iter().map(|n| n.short.to_string()));
        let log = self.log_dir().join("xdp-pass.log");
        let ns = self.switch_namespace();
        self.start_process("xdp-pass", Some(&ns), &argv, &log)?;
        wait_until(Duration::from_secs(10), || {
            std::fs::read_to_string(&log).is_ok_and(|t| t.contains("attached"))
        })
        .then_some(())
        .ok_or_else(|| not_ready("xdp_pass on the switch ports", &log))
    }

    fn start_forward(&self) -> Result<(), LabError> {
        let mut argv: Vec<String> = vec![
            self.config
                .bin_dir
                .join("cairn-lab-forward")
                .display()
                .to_string(),
            "--port".into(),
            self.config.api_port.to_string(),
            "--to".into(),
            format!("127.0.0.1:{}", self.config.api_port),
        ];
        for node in &NODES {
            argv.push("--netns".into());
            argv.push(self.node_namespace(node));
        }
        let log = self.log_dir().join("forward.log");
        self.start_process("forward", None, &argv, &log)?;
        wait_until(Duration::from_secs(10), || {
            std::fs::read_to_string(&log).is_ok_and(|t| t.contains("relaying"))
        })
        .then_some(())
        .ok_or_else(|| not_ready("the API forwarder", &log))
    }

    fn start_echo(&self, node: &LabNode) -> Result<(), LabError> {
        let bin = self.config.bin_dir.join("cairn-lab-echo");
        let port = ECHO_PORT.to_string();
        let argv: [&OsStr; 5] = [
            bin.as_os_str(),
            "--name".as_ref(),
            node.name.as_ref(),
            "--port".as_ref(),
            port.as_ref(),
        ];
        let log = self.log_dir().join(format!("echo-{}.log", node.short));
        let ns = self.node_namespace(node);
        self.start_process(&format!("echo-{}", node.short), Some(&ns), &argv, &log)?;
        wait_until(Duration::from_secs(10), || {
            std::fs::read_to_string(&log).is_ok_and(|t| t.contains("serving on port"))
        })
        .then_some(())
        .ok_or_else(|| not_ready(&format!("the echo server in {ns}"), &log))
    }

    /// Starts a long-running process of the lab, in namespace `netns` (through `ip netns exec`)
    /// or in the host namespace, with stdout and stderr appended to `log`, in its own process
    /// group (so a Ctrl-C in the terminal that ran `up` does not reach it). Its pid is recorded
    /// as `name`: [`Lab::status`] reports it and [`Lab::down`] stops it. This is how the
    /// allocator and the speakers join the lab.
    pub fn start_process<S: AsRef<OsStr>>(
        &self,
        name: &str,
        netns: Option<&str>,
        argv: &[S],
        log: &Path,
    ) -> Result<u32, LabError> {
        let Some((program, args)) = argv.split_first() else {
            return Err(LabError::Invalid(format!("no command given for {name}")));
        };
        let mut command = match netns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns]).arg(program);
                c
            }
            None => Command::new(program),
        };
        command.args(args);
        let out = File::options()
            .create(true)
            .append(true)
            .open(log)
            .map_err(io_error(format!("opening {}", log.display())))?;
        let err = out
            .try_clone()
            .map_err(io_error(format!("opening {}", log.display())))?;
        command
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .process_group(0);
        let child = command
            .spawn()
            .map_err(io_error(format!("starting {name}")))?;
        let pid = child.id();
        self.children
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(child);
        self.record(name, pid, &program.as_ref().to_string_lossy())?;
        Ok(pid)
    }

    /// Writes `pids/<name>.pid`: the pid and the program, so that a later `status` or `down`
    /// can tell the process from an unrelated one that reused the pid.
    fn record(&self, name: &str, pid: u32, program: &str) -> Result<(), LabError> {
        let path = self.pid_dir().join(format!("{name}.pid"));
        std::fs::write(&path, format!("{pid} {program}\n"))
            .map_err(io_error(format!("writing {}", path.display())))
    }

    fn recorded(&self) -> Vec<(String, u32, String)> {
        let Ok(entries) = std::fs::read_dir(self.pid_dir()) else {
            return Vec::new();
        };
        let mut found: Vec<(String, u32, String)> = entries
            .flatten()
            .filter_map(|entry| {
                let path = entry.path();
                let name = path.file_stem()?.to_str()?.to_owned();
                let text = std::fs::read_to_string(&path).ok()?;
                let (pid, program) = text.trim().split_once(' ')?;
                Some((name, pid.parse().ok()?, program.to_owned()))
            })
            .collect();
        found.sort();
        found
    }

    /// The lab as found on the machine: namespaces, recorded processes, FRR's BGP summary.
    pub fn status(&self) -> LabStatus {
        let existing = existing_namespaces();
        LabStatus {
            namespaces: self
                .namespaces()
                .into_iter()
                .map(|n| {
                    let exists = existing.contains(&n);
                    (n, exists)
                })
                .collect(),
            processes: self
                .recorded()
                .into_iter()
                .map(|(name, pid, program)| ProcessStatus {
                    alive: self.reap_or_alive(pid, &program),
                    name,
                    pid,
                })
                .collect(),
            bgp_summary: self.router_vtysh("show bgp summary").ok(),
        }
    }

    /// Runs a vtysh command against the lab's FRR and returns its output.
    pub fn router_vtysh(&self, command: &str) -> Result<String, LabError> {
        let dir = self.frr_dir().ok_or_else(|| LabError::NotReady {
            what: "FRR".into(),
            detail: " (the lab is not up)".into(),
        })?;
        let router = Netns::adopt(&self.router_namespace());
        let dir = dir.display().to_string();
        let out = router.exec(&["vtysh", "--vty_socket", &dir, "-c", command])?;
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Tears the lab down: stops every recorded process (SIGTERM, then SIGKILL), kills whatever
    /// else runs in its namespaces, deletes the namespaces, FRR's directory and the lab's
    /// directory. Works from any process, also after a crash. Returns what it removed.
    pub fn down(&self) -> Result<Vec<String>, LabError> {
        let mut removed = Vec::new();
        // Cairn's processes first, all at once, while the API server still answers their
        // goodbyes (speakers release their Leases on SIGTERM); then the lab's own.
        let (cairn, rest): (Vec<_>, Vec<_>) = self
            .recorded()
            .into_iter()
            .filter(|(_, pid, program)| self.reap_or_alive(*pid, program))
            .partition(|(name, _, _)| name == "allocator" || name.starts_with("speaker-"));
        self.stop_all(&cairn);
        for (name, pid, _) in cairn {
            removed.push(format!("process {name} ({pid})"));
        }
        for (name, pid, program) in rest {
            self.stop(pid, &program);
            removed.push(format!("process {name} ({pid})"));
        }
        let existing = existing_namespaces();
        for ns in self.namespaces() {
            if existing.contains(&ns) {
                netns::kill_pids_in(&ns);
                let quiet = wait_until(Duration::from_secs(5), || namespace_pids(&ns).is_empty());
                if !quiet {
                    return Err(LabError::NotReady {
                        what: format!("the processes of {ns} to exit"),
                        detail: String::new(),
                    });
                }
                let mut del = Command::new("ip");
                del.args(["netns", "del", &ns]);
                let status = del
                    .status()
                    .map_err(io_error(format!("deleting namespace {ns}")))?;
                if !status.success() {
                    return Err(LabError::Io {
                        what: format!("deleting namespace {ns}"),
                        source: std::io::Error::other(format!("ip netns del: {status}")),
                    });
                }
                removed.push(format!("namespace {ns}"));
            }
        }
        self.reap_children();
        let pins = self.bpf_pin_dir();
        if is_mount_point(&pins) {
            // Unpinning the links detaches the XDP programs the speakers left forwarding.
            run_command(Command::new("umount").arg(&pins))?;
            removed.push(format!("BPF pins under {}", pins.display()));
        }
        if let Some(frr_dir) = self.frr_dir() {
            let _ = std::fs::remove_dir_all(&frr_dir);
            removed.push(format!("FRR directory {}", frr_dir.display()));
        }
        if self.config.dir.exists() {
            std::fs::remove_dir_all(&self.config.dir)
                .map_err(io_error(format!("removing {}", self.config.dir.display())))?;
            removed.push(format!("directory {}", self.config.dir.display()));
        }
        Ok(removed)
    }

    /// True when `pid` runs `program` and is not a zombie; reaps it first when it is a child of
    /// this value.
    fn reap_or_alive(&self, pid: u32, program: &str) -> bool {
        self.reap_children();
        let mut status = 0;
        // SAFETY: a non-blocking waitpid; it fails with ECHILD when `pid` is not our child.
        unsafe { libc::waitpid(pid as i32, &mut status, libc::WNOHANG) };
        process_runs(pid, program)
    }

    fn reap_children(&self) {
        let mut children = self.children.lock().unwrap_or_else(|e| e.into_inner());
        children.retain_mut(|c| matches!(c.try_wait(), Ok(None)));
    }

    /// Stops several processes at once: SIGTERM (and SIGCONT) to all, then SIGKILL to those
    /// left after 5 s.
    fn stop_all(&self, processes: &[(String, u32, String)]) {
        for signal in [libc::SIGTERM, libc::SIGKILL] {
            for (_, pid, program) in processes {
                if self.reap_or_alive(*pid, program) {
                    // SAFETY: kill(2) on a pid that was just checked to run the lab's program;
                    // SIGCONT lets a stopped (SIGSTOP) speaker act on its SIGTERM.
                    unsafe {
                        libc::kill(*pid as i32, signal);
                        libc::kill(*pid as i32, libc::SIGCONT);
                    }
                }
            }
            if wait_until(Duration::from_secs(5), || {
                processes
                    .iter()
                    .all(|(_, pid, program)| !self.reap_or_alive(*pid, program))
            }) {
                return;
            }
        }
    }

    fn stop(&self, pid: u32, program: &str) {
        for (signal, grace) in [(libc::SIGTERM, 5), (libc::SIGKILL, 5)] {
            // SAFETY: kill(2) on a pid that was just checked to run the lab's program.
            unsafe { libc::kill(pid as i32, signal) };
            if wait_until(Duration::from_secs(grace), || {
                !self.reap_or_alive(pid, program)
            }) {
                return;
            }
        }
    }
}

/// Whether `dir` is a mount point (listed in `/proc/self/mounts`).
fn is_mount_point(dir: &Path) -> bool {
    std::fs::read_to_string("/proc/self/mounts").is_ok_and(|mounts| {
        mounts
            .lines()
            .filter_map(|line| line.split(' ').nth(1))
            .any(|point| Path::new(point) == dir)
    })
}

/// Runs a host command; fails with its stderr when it exits non-zero.
fn run_command(command: &mut Command) -> Result<(), LabError> {
    let what = format!("{command:?}");
    let out = command.output().map_err(io_error(what.clone()))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(LabError::Io {
            what,
            source: std::io::Error::other(String::from_utf8_lossy(&out.stderr).trim().to_owned()),
        })
    }
}

fn not_ready(what: &str, log: &Path) -> LabError {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    LabError::NotReady {
        what: what.into(),
        detail: format!(
            "; {} ends with:\n{}",
            log.display(),
            lines[lines.len().saturating_sub(20)..].join("\n")
        ),
    }
}

fn wait_until(timeout: Duration, mut ready: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if ready() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// True when `pid` exists, is not a zombie, and its command line starts with `program` (or a
/// program of the same file name).
fn process_runs(pid: u32, program: &str) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    if stat
        .rsplit_once(')')
        .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z'))
    {
        return false;
    }
    let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
        return false;
    };
    let first = cmdline.split(|b| *b == 0).next().unwrap_or_default();
    let base =
        |p: &[u8]| -> Vec<u8> { p.rsplit(|b| *b == b'/').next().unwrap_or_default().to_vec() };
    base(first) == base(program.as_bytes())
}

fn existing_namespaces() -> Vec<String> {
    let Ok(out) = Command::new("ip").args(["netns", "list"]).output() else {
        return Vec::new();
    };
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next().map(str::to_owned))
        .collect()
}

fn namespace_pids(ns: &str) -> Vec<u32> {
    let Ok(out) = Command::new("ip").args(["netns", "pids", ns]).output() else {
        return Vec::new();
    };
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .filter(|pid: &u32| {
            std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
                !s.rsplit_once(')')
                    .is_some_and(|(_, r)| r.trim_start().starts_with('Z'))
            })
        })
        .collect()
}

/// Runs `future` to completion on a fresh thread with its own runtime, so that it works from
/// synchronous code and from inside another runtime alike.
fn block_on<F, T>(future: F) -> Result<T, LabError>
where
    F: std::future::Future<Output = Result<T, LabError>> + Send,
    T: Send,
{
    std::thread::scope(|scope| {
        scope
            .spawn(|| {
                tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .map_err(io_error("building a runtime"))?
                    .block_on(future)
            })
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    })
}

/// A client of the lab API server described by `kubeconfig`.
pub async fn client(kubeconfig: &Path) -> Result<kube::Client, LabError> {
    let kc = Kubeconfig::read_from(kubeconfig)?;
    let config = kube::Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default()).await?;
    kube::Client::try_from(config).map_err(kube_error("building the client"))
}

/// Creates the Nodes `cairn-n1..3` as a kubelet would: hostname label, addresses, Ready.
pub async fn create_nodes(client: &kube::Client) -> Result<(), LabError> {
    let api: Api<Node> = Api::all(client.clone());
    for node in &NODES {
        let object: Node = serde_json::from_value(serde_json::json!({
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {
                "name": node.name,
                "labels": {
                    "kubernetes.io/hostname": node.name,
                    "kubernetes.io/os": "linux",
                },
            },
        }))
        .map_err(|e| LabError::Invalid(format!("Node {}: {e}", node.name)))?;
        api.create(&PostParams::default(), &object)
            .await
            .map_err(kube_error(format!("creating Node {}", node.name)))?;
        let status = serde_json::json!({
            "status": {
                "addresses": [
                    {"type": "InternalIP", "address": node.v4},
                    {"type": "InternalIP", "address": node.v6},
                    {"type": "Hostname", "address": node.name},
                ],
                "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady"}],
            }
        });
        api.patch_status(node.name, &PatchParams::default(), &Patch::Merge(&status))
            .await
            .map_err(kube_error(format!(
                "setting the status of Node {}",
                node.name
            )))?;
    }
    Ok(())
}

/// Creates `service` and, as the endpoint controller would, one EndpointSlice per IP family of
/// the Service with one ready endpoint per node in `nodes` (Kubernetes names, `cairn-n1`…):
/// the node's address, `nodeName`, and the Service's ports (their numeric `targetPort`, else
/// `port`). Backends are the echo servers, so the ports should be [`ECHO_PORT`].
pub async fn create_service(
    client: &kube::Client,
    service: &Service,
    nodes: &[&str],
) -> Result<Service, LabError> {
    let namespace = service
        .metadata
        .namespace
        .clone()
        .unwrap_or_else(|| "default".into());
    let name = service
        .metadata
        .name
        .clone()
        .ok_or_else(|| LabError::Invalid("the Service has no name".into()))?;
    let backends = nodes
        .iter()
        .map(|wanted| {
            NODES
                .iter()
                .find(|n| n.name == *wanted)
                .ok_or_else(|| LabError::Invalid(format!("no lab node named {wanted}")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let services: Api<Service> = Api::namespaced(client.clone(), &namespace);
    let created = services
        .create(&PostParams::default(), service)
        .await
        .map_err(kube_error(format!("creating Service {namespace}/{name}")))?;
    let spec = service.spec.clone().unwrap_or_default();
    let families = spec
        .ip_families
        .clone()
        .filter(|f| !f.is_empty())
        .unwrap_or_else(|| vec!["IPv4".into()]);
    let ports: Vec<EndpointPort> = spec
        .ports
        .unwrap_or_default()
        .into_iter()
        .map(|p| EndpointPort {
            name: p.name,
            port: Some(match p.target_port {
                Some(k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::Int(n)) => n,
                _ => p.port,
            }),
            protocol: p.protocol,
            app_protocol: None,
        })
        .collect();
    let slices: Api<EndpointSlice> = Api::namespaced(client.clone(), &namespace);
    for family in &families {
        let v6 = family == "IPv6";
        let slice = EndpointSlice {
            metadata: ObjectMeta {
                name: Some(format!("{name}-{}", if v6 { "v6" } else { "v4" })),
                namespace: Some(namespace.clone()),
                labels: Some(
                    [
                        ("kubernetes.io/service-name".to_owned(), name.clone()),
                        (
                            "endpointslice.kubernetes.io/managed-by".to_owned(),
                            "cairn-lab".to_owned(),
                        ),
                    ]
                    .into(),
                ),
                ..ObjectMeta::default()
            },
            address_type: family.clone(),
            endpoints: backends
                .iter()
                .map(|n| Endpoint {
                    addresses: vec![if v6 { n.v6 } else { n.v4 }.to_owned()],
                    conditions: Some(EndpointConditions {
                        ready: Some(true),
                        serving: Some(true),
                        terminating: Some(false),
                    }),
                    node_name: Some(n.name.to_owned()),
                    hostname: None,
                    target_ref: None,
                    zone: None,
                    hints: None,
                    deprecated_topology: None,
                })
                .collect(),
            ports: Some(ports.clone()),
        };
        slices
            .create(&PostParams::default(), &slice)
            .await
            .map_err(kube_error(format!(
                "creating the {family} EndpointSlice of {namespace}/{name}"
            )))?;
    }
    Ok(created)
}
