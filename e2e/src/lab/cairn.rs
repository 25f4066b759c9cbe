//! Cairn's own processes in the lab, and what the lab does in their place for the rest of a
//! cluster.
//!
//! - [`Lab::apply_manifests`]: the CRDs and the `cairn-system` namespace from `manifests/`, with
//!   `kubectl apply`, as an operator would install them.
//! - The allocator (`cairn-allocator`, host namespace) and one speaker per node namespace
//!   (`cairn-speaker --node-name cairn-nX`), real processes of the real binaries from
//!   [`super::LabConfig::bin_dir`], with the manifests' settings (leases: allocator 10 s / 2 s,
//!   speaker 3 s / 1 s; JSON logs) and `--dataplane` from [`super::LabConfig::dataplane`]; logs
//!   in `logs/allocator.log` and `logs/speaker-nX.log`; recorded as processes `allocator` and
//!   `speaker-nX` so that `status` lists them and `down` stops them. The allocator's metrics
//!   listen on a free port of the host's loopback (several labs may run at once), each
//!   speaker's on port 7473 of its node namespace.
//! - The kube-proxy stand-in ([`install_kube_proxy_standin`]): in each node namespace, `local`
//!   routes on `lo` for [`VIP_RANGES`], so a packet for a VIP that reaches a node is delivered to
//!   the node's echo server, as kube-proxy's rules would deliver it to a pod. `arp_ignore=1`
//!   keeps the kernel from answering ARP for those addresses (they are routes, not addresses of
//!   `eth0`), and the kernel never answers neighbour solicitations for a route, so only Cairn's
//!   responder answers ARP and NDP for a VIP.
//!
//! Nothing here decides anything Cairn decides: which node owns or announces a VIP is left
//! entirely to the speakers.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

use super::{io_error, not_ready, wait_until, Lab, LabError, LabNode, NODES};
use crate::netns::Netns;

/// The address ranges the kube-proxy stand-in delivers locally on every node. They hold the
/// pools of `manifests/examples` (`l2-pool` 192.0.2.200-239 and 2001:db8:2::c8-ef, `bgp-pool`
/// 203.0.113.0/26 and 2001:db8:3::/120) with room for tests' own pools, and none of the lab's
/// own addresses (nodes .11-.13, router .1, L2 client .100 and ::100).
pub const VIP_RANGES: [&str; 4] = [
    "192.0.2.128/25",
    "2001:db8:2::80/121",
    "203.0.113.0/24",
    "2001:db8:3::/64",
];

/// The speakers' `--dataplane`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Dataplane {
    /// The kernel forwards VIP traffic (the speakers' default).
    #[default]
    Kernel,
    /// The XDP stage forwards VIP traffic.
    Xdp,
}

impl Dataplane {
    /// The flag's value.
    pub fn as_str(self) -> &'static str {
        match self {
            Dataplane::Kernel => "kernel",
            Dataplane::Xdp => "xdp",
        }
    }
}

/// A signal to send to a speaker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    /// SIGTERM: graceful handover; [`Lab::stop_speaker`] waits for the exit.
    Term,
    /// SIGKILL: a crash; [`Lab::stop_speaker`] waits for the exit.
    Kill,
    /// SIGSTOP: a frozen process; it keeps its pid.
    Stop,
    /// SIGCONT: resumes a stopped process.
    Cont,
}

impl Signal {
    fn raw(self) -> i32 {
        match self {
            Signal::Term => libc::SIGTERM,
            Signal::Kill => libc::SIGKILL,
            Signal::Stop => libc::SIGSTOP,
            Signal::Cont => libc::SIGCONT,
        }
    }
}

/// The repository's `manifests/` folder.
pub fn manifests_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../manifests")
}

/// Makes `ns` deliver [`VIP_RANGES`] locally (routes on `lo`) without the kernel answering ARP
/// or NDP for them. UDP replies from such an address need nonlocal binding for IPv6.
pub(super) fn install_kube_proxy_standin(ns: &Netns) -> Result<(), LabError> {
    for key in [
        "net.ipv4.conf.all.arp_ignore=1",
        "net.ipv4.conf.eth0.arp_ignore=1",
        "net.ipv4.conf.all.arp_announce=2",
        "net.ipv4.conf.eth0.arp_announce=2",
        "net.ipv4.ip_nonlocal_bind=1",
        "net.ipv6.ip_nonlocal_bind=1",
    ] {
        ns.exec(&["sysctl", "-qw", key])?;
    }
    for range in VIP_RANGES {
        let family = if range.contains(':') { "-6" } else { "-4" };
        ns.ip(&[family, "route", "add", "local", range, "dev", "lo"])?;
    }
    Ok(())
}

impl Lab {
    /// A client of the lab API server.
    pub async fn client(&self) -> Result<kube::Client, LabError> {
        super::client(&self.kubeconfig()).await
    }

    /// Runs `argv` in namespace `ns` and returns its output; fails when it exits non-zero.
    pub fn run_in<S: AsRef<std::ffi::OsStr>>(
        &self,
        ns: &str,
        argv: &[S],
    ) -> Result<Output, LabError> {
        Ok(Netns::adopt(ns).exec(argv)?)
    }

    /// Runs `kubectl --kubeconfig <lab> <args>` from the host and returns its stdout.
    pub fn kubectl(&self, args: &[&str]) -> Result<String, LabError> {
        let out = std::process::Command::new("kubectl")
            .arg("--kubeconfig")
            .arg(self.kubeconfig())
            .arg("--cache-dir")
            .arg(self.config.dir.join("kubectl-cache"))
            .args(args)
            .output()
            .map_err(io_error("running kubectl"))?;
        if !out.status.success() {
            return Err(LabError::Io {
                what: format!("kubectl {}", args.join(" ")),
                source: std::io::Error::other(String::from_utf8_lossy(&out.stderr).into_owned()),
            });
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Installs Cairn's CRDs and the `cairn-system` namespace from `manifests/`.
    pub fn apply_manifests(&self) -> Result<(), LabError> {
        let dir = manifests_dir();
        for part in ["crds", "namespace.yaml"] {
            let path = dir.join(part);
            self.kubectl(&["apply", "-f", &path.to_string_lossy()])?;
        }
        Ok(())
    }

    fn binary(&self, name: &str) -> Result<PathBuf, LabError> {
        let path = self.config.bin_dir.join(name);
        if path.exists() {
            Ok(path)
        } else {
            Err(LabError::Invalid(format!(
                "{} is missing: build it with `cargo build --workspace --bins`",
                path.display()
            )))
        }
    }

    /// Starts `cairn-allocator` in the host namespace and waits until it leads.
    pub(super) fn start_allocator(&self) -> Result<u32, LabError> {
        let bin = self.binary("cairn-allocator")?;
        let kubeconfig = self.kubeconfig();
        let argv: Vec<OsString> = vec![
            bin.into(),
            "--kubeconfig".into(),
            kubeconfig.into(),
            "--namespace=cairn-system".into(),
            "--identity=cairn-allocator-lab".into(),
            "--lease-duration=10s".into(),
            "--renew-interval=2s".into(),
            // Several labs may run at once: any free port on the host's loopback.
            "--metrics-addr=127.0.0.1:0".into(),
            "--log-format=json".into(),
        ];
        let log = self.log_dir().join("allocator.log");
        let pid = self.start_process("allocator", None, &argv, &log)?;
        wait_until(Duration::from_secs(30), || {
            std::fs::read_to_string(&log).is_ok_and(|t| t.contains("\"leader\":true"))
        })
        .then_some(pid)
        .ok_or_else(|| not_ready("the allocator", &log))
    }

    /// True once `pid` (a child of this value, possibly still `ip netns exec` about to exec
    /// the program) is gone or a zombie.
    fn exited(&self, pid: u32) -> bool {
        self.reap_children();
        std::fs::read_to_string(format!("/proc/{pid}/stat")).map_or(true, |stat| {
            stat.rsplit_once(')')
                .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z'))
        })
    }

    fn speaker_name(node: &LabNode) -> String {
        format!("speaker-{}", node.short)
    }

    fn lab_node(name: &str) -> Result<&'static LabNode, LabError> {
        NODES
            .iter()
            .find(|n| n.name == name || n.short == name)
            .ok_or_else(|| LabError::Invalid(format!("no lab node named {name}")))
    }

    /// The log of `node`'s speaker (`cairn-n1` or `n1`).
    pub fn speaker_log(&self, node: &str) -> Result<PathBuf, LabError> {
        let node = Self::lab_node(node)?;
        Ok(self
            .log_dir()
            .join(format!("{}.log", Self::speaker_name(node))))
    }

    /// The pid of `node`'s speaker (`cairn-n1` or `n1`), if it runs.
    pub fn speaker_pid(&self, node: &str) -> Option<u32> {
        let node = Self::lab_node(node).ok()?;
        let name = Self::speaker_name(node);
        self.recorded()
            .into_iter()
            .find(|(n, _, _)| *n == name)
            .filter(|(_, pid, program)| self.reap_or_alive(*pid, program))
            .map(|(_, pid, _)| pid)
    }

    /// Starts `node`'s speaker (`cairn-n1` or `n1`) in its namespace, unless one runs already,
    /// and waits until it reports itself ready (caches synced, Lease held). Returns its pid.
    pub fn start_speaker(&self, node: &str) -> Result<u32, LabError> {
        let node = Self::lab_node(node)?;
        if let Some(pid) = self.speaker_pid(node.name) {
            return Ok(pid);
        }
        let bin = self.binary("cairn-speaker")?;
        let mut argv: Vec<OsString> = vec![
            bin.into(),
            "--node-name".into(),
            node.name.into(),
            "--kubeconfig".into(),
            self.kubeconfig().into(),
            "--namespace=cairn-system".into(),
            "--lease-duration=3s".into(),
            "--renew-interval=1s".into(),
            "--metrics-addr=0.0.0.0:7473".into(),
            format!("--dataplane={}", self.config.dataplane.as_str()).into(),
            "--log-format=json".into(),
        ];
        if self.config.dataplane == Dataplane::Xdp {
            // Pinned, as in production: a stopped or killed speaker leaves its node forwarding
            // and decapsulating for its endpoints; `down` removes the pins.
            argv.push("--xdp-interface=eth0".into());
            let pins = self.bpf_pin_dir().join(node.short);
            argv.push(format!("--xdp-pin-dir={}", pins.display()).into());
        }
        let log = self
            .log_dir()
            .join(format!("{}.log", Self::speaker_name(node)));
        // Readiness is the first `speaker ready` after this start, not one from a previous run.
        let before = std::fs::read_to_string(&log)
            .map(|t| t.matches("speaker ready").count())
            .unwrap_or(0);
        let ns = self.node_namespace(node);
        let pid = self.start_process(&Self::speaker_name(node), Some(&ns), &argv, &log)?;
        wait_until(Duration::from_secs(30), || {
            std::fs::read_to_string(&log).is_ok_and(|t| t.matches("speaker ready").count() > before)
                || self.exited(pid)
        });
        let ready = std::fs::read_to_string(&log)
            .is_ok_and(|t| t.matches("speaker ready").count() > before);
        if ready {
            return Ok(pid);
        }
        let what = if self.exited(pid) {
            format!("the speaker of {} (it exited)", node.name)
        } else {
            format!("the speaker of {}", node.name)
        };
        Err(not_ready(&what, &log))
    }

    /// Sends `signal` to `node`'s speaker; for [`Signal::Term`] and [`Signal::Kill`] waits (up to
    /// 10 s) until it has exited. Returns the pid it signalled.
    pub fn stop_speaker(&self, node: &str, signal: Signal) -> Result<u32, LabError> {
        let lab_node = Self::lab_node(node)?;
        let pid = self
            .speaker_pid(lab_node.name)
            .ok_or_else(|| LabError::Invalid(format!("no speaker runs on {}", lab_node.name)))?;
        // SAFETY: kill(2) on the pid of a speaker this lab started, checked to still run it.
        unsafe { libc::kill(pid as i32, signal.raw()) };
        if matches!(signal, Signal::Term | Signal::Kill) {
            let program = self.config.bin_dir.join("cairn-speaker");
            let program = program.to_string_lossy();
            if !wait_until(Duration::from_secs(10), || {
                !self.reap_or_alive(pid, &program)
            }) {
                return Err(LabError::NotReady {
                    what: format!("the speaker of {} to exit", lab_node.name),
                    detail: String::new(),
                });
            }
        }
        Ok(pid)
    }

    /// Starts the allocator and the three speakers (after [`Lab::apply_manifests`]).
    pub(super) fn start_cairn(&self, made: &mut Vec<String>) -> Result<(), LabError> {
        let pid = self.start_allocator()?;
        made.push(format!(
            "cairn-allocator (pid {pid}) leading; log {}",
            self.log_dir().join("allocator.log").display()
        ));
        for node in &NODES {
            let pid = self.start_speaker(node.name)?;
            made.push(format!(
                "cairn-speaker --node-name {} (pid {pid}, --dataplane {}) ready in {}",
                node.name,
                self.config.dataplane.as_str(),
                self.node_namespace(node)
            ));
        }
        Ok(())
    }
}
