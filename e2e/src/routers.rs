//! Real routing daemons in network namespaces: FRR (zebra + bgpd) and GoBGP (gobgpd), started,
//! configured and queried as JSON, for the BGP tests, the benchmarks, the lab and the demo.
//!
//! FRR runs one instance per namespace without systemd: zebra and bgpd get their own directory
//! (owned by user `frr`) for config, pid files, the zserv socket and the vty sockets, with the
//! vty TCP ports disabled (`-P 0`); bgpd starts once zebra answers and knows the namespace's
//! link-local addresses (DESIGN.md). GoBGP runs `gobgpd` with its gRPC API on
//! `127.0.0.1:50051` inside the namespace and is queried with `gobgp -j` in the same namespace;
//! its zebra integration is never used (it crashes against FRR 8.4's zebra).
//!
//! Daemons are processes of the [`Netns`] and die with it. This module never touches the host's
//! network; its files live under `/tmp/cairn-routers/<namespace>-frr/` (or `-gobgp/`) and are
//! removed on drop.

use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::netns::{Netns, NetnsError};

/// Errors from starting or querying a router.
#[derive(Debug, thiserror::Error)]
pub enum RouterError {
    /// A namespace command failed.
    #[error(transparent)]
    Netns(#[from] NetnsError),
    /// File system work for the daemon's directory failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// A query's output was not the JSON expected.
    #[error("`{command}` returned invalid JSON: {source}")]
    Json {
        /// The query.
        command: String,
        /// The parse error.
        source: serde_json::Error,
    },
    /// A daemon did not become ready in time; `log` is the end of its log.
    #[error("{daemon} did not become ready in time; its log ends with:\n{log}")]
    NotReady {
        /// The daemon.
        daemon: &'static str,
        /// The last lines of its log file.
        log: String,
    },
}

/// A BGP neighbour in a router's configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Neighbor {
    /// The neighbour's address.
    pub address: IpAddr,
    /// The neighbour's AS.
    pub remote_as: u32,
    /// TCP MD5 password.
    pub password: Option<String>,
}

impl Neighbor {
    /// A neighbour without password.
    pub fn new(address: IpAddr, remote_as: u32) -> Self {
        Self {
            address,
            remote_as,
            password: None,
        }
    }
}

/// The BGP part of a router's configuration, rendered for FRR or GoBGP.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouterConfig {
    /// The router's AS.
    pub asn: u32,
    /// The router's BGP identifier.
    pub router_id: Ipv4Addr,
    /// Its neighbours.
    pub neighbors: Vec<Neighbor>,
}

fn io_error(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> RouterError {
    let what = what.into();
    move |source| RouterError::Io { what, source }
}

fn router_dir(ns: &Netns, daemon: &str) -> Result<PathBuf, RouterError> {
    let dir = Path::new("/tmp/cairn-routers").join(format!("{}-{daemon}", ns.name()));
    std::fs::create_dir_all(&dir).map_err(io_error(format!("creating {}", dir.display())))?;
    Ok(dir)
}

/// Polls `check` every 100 ms until it returns `Some` or `timeout` passes.
pub fn wait_for<T>(timeout: Duration, mut check: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = check() {
            return Some(value);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The kernel's routes in a namespace (`ip -j [-6] route show [prefix]`), as JSON.
pub fn kernel_routes(
    ns: &Netns,
    ipv6: bool,
    prefix: &str,
) -> Result<serde_json::Value, RouterError> {
    let mut args = vec!["-j"];
    if ipv6 {
        args.push("-6");
    }
    args.extend(["route", "show"]);
    if !prefix.is_empty() {
        args.push(prefix);
    }
    let out = ns.ip(&args)?;
    parse_json("ip route", &out.stdout)
}

/// The next hops of a kernel route (`gateway` of each `nexthops` entry, or of the route itself).
/// Empty when the route is absent.
pub fn kernel_next_hops(ns: &Netns, prefix: &str) -> Result<Vec<String>, RouterError> {
    let routes = kernel_routes(ns, prefix.contains(':'), prefix)?;
    let mut hops = Vec::new();
    for route in routes.as_array().into_iter().flatten() {
        if let Some(gw) = route.get("gateway").and_then(|g| g.as_str()) {
            hops.push(gw.to_owned());
        }
        for nh in route
            .get("nexthops")
            .and_then(|n| n.as_array())
            .into_iter()
            .flatten()
        {
            if let Some(gw) = nh.get("gateway").and_then(|g| g.as_str()) {
                hops.push(gw.to_owned());
            }
        }
    }
    hops.sort();
    Ok(hops)
}

fn not_ready(daemon: &'static str, log: &Path) -> RouterError {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    let tail = lines[lines.len().saturating_sub(20)..].join("\n");
    RouterError::NotReady { daemon, log: tail }
}

fn parse_json(command: &str, bytes: &[u8]) -> Result<serde_json::Value, RouterError> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(serde_json::Value::Null);
    }
    serde_json::from_slice(bytes).map_err(|source| RouterError::Json {
        command: command.to_owned(),
        source,
    })
}

/// An FRR instance (zebra + bgpd) in a namespace.
pub struct Frr<'a> {
    ns: &'a Netns,
    dir: PathBuf,
    bgpd_pid: Option<u32>,
}

impl<'a> Frr<'a> {
    /// Starts zebra and, once zebra is ready, bgpd with `config` (bgpd.conf text, see
    /// [`Frr::bgpd_conf`]). Logs go to `zebra.log` and `bgpd.log` in [`Frr::dir`].
    pub fn start(ns: &'a Netns, bgpd_conf: &str) -> Result<Self, RouterError> {
        let dir = router_dir(ns, "frr")?;
        std::fs::write(dir.join("zebra.conf"), "hostname zebra\n")
            .map_err(io_error("writing zebra.conf"))?;
        std::fs::write(dir.join("bgpd.conf"), bgpd_conf).map_err(io_error("writing bgpd.conf"))?;
        let dir_text = dir.display().to_string();
        chown_to_frr(&dir)?;
        ns.spawn(
            &daemon_args("zebra", &dir_text),
            Some(&dir.join("zebra.log")),
        )?;
        let mut frr = Self {
            ns,
            dir,
            bgpd_pid: None,
        };
        // zebra is ready when it lists the namespace's interfaces with their fe80:: addresses.
        let links = interfaces_with_link_local(ns)?;
        wait_for(Duration::from_secs(15), || {
            let json = frr.vtysh_json("show interface json").ok()?;
            links
                .iter()
                .all(|link| {
                    json[link.as_str()]["ipAddresses"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .filter_map(|a| a["address"].as_str())
                        .any(|a| a.starts_with("fe80"))
                })
                .then_some(())
        })
        .ok_or_else(|| not_ready("zebra", &frr.dir.join("zebra.log")))?;
        frr.start_bgpd()?;
        Ok(frr)
    }

    /// The instance's directory (config, sockets, logs).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Starts bgpd (again, after [`Frr::stop_bgpd`]) and waits until it answers.
    pub fn start_bgpd(&mut self) -> Result<(), RouterError> {
        let dir_text = self.dir.display().to_string();
        let pid = self.ns.spawn(
            &daemon_args("bgpd", &dir_text),
            Some(&self.dir.join("bgpd.log")),
        )?;
        self.bgpd_pid = Some(pid);
        wait_for(Duration::from_secs(15), || {
            self.vtysh_json("show bgp summary json")
                .ok()
                .filter(serde_json::Value::is_object)
        })
        .map(drop)
        .ok_or_else(|| not_ready("bgpd", &self.dir.join("bgpd.log")))
    }

    /// Kills bgpd (SIGKILL, as a crash would) and waits until it is gone.
    pub fn stop_bgpd(&mut self) {
        if let Some(pid) = self.bgpd_pid.take() {
            // SAFETY: kill(2) on the pid of the bgpd this instance started.
            unsafe { libc::kill(pid as i32, libc::SIGKILL) };
            wait_for(Duration::from_secs(5), || {
                (!Path::new(&format!("/proc/{pid}/cmdline")).exists()
                    || std::fs::read_to_string(format!("/proc/{pid}/stat"))
                        .is_ok_and(|s| s.contains(") Z")))
                .then_some(())
            });
        }
    }

    /// Freezes (`pause = true`, SIGSTOP) or resumes (SIGCONT) bgpd: a router that stops
    /// talking without closing its sessions.
    pub fn pause_bgpd(&self, pause: bool) {
        if let Some(pid) = self.bgpd_pid {
            let signal = if pause { libc::SIGSTOP } else { libc::SIGCONT };
            // SAFETY: kill(2) on the pid of the bgpd this instance started.
            unsafe { libc::kill(pid as i32, signal) };
        }
    }

    /// Runs one vtysh command against this instance and returns its output.
    pub fn vtysh(&self, command: &str) -> Result<String, RouterError> {
        let dir = self.dir.display().to_string();
        let out = self
            .ns
            .exec(&["vtysh", "--vty_socket", &dir, "-c", command])?;
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Runs a vtysh `... json` command and parses the output.
    pub fn vtysh_json(&self, command: &str) -> Result<serde_json::Value, RouterError> {
        let text = self.vtysh(command)?;
        parse_json(command, text.as_bytes())
    }

    /// The BGP state of a neighbour ("Established", "Active", …), if bgpd knows it.
    pub fn neighbor_state(&self, neighbor: IpAddr) -> Option<String> {
        let json = self
            .vtysh_json(&format!("show bgp neighbors {neighbor} json"))
            .ok()?;
        json.get(neighbor.to_string())?
            .get("bgpState")?
            .as_str()
            .map(str::to_owned)
    }

    /// The BGP RIB entry of a prefix (`show bgp ipv4|ipv6 unicast PREFIX json`).
    pub fn bgp_route(&self, prefix: &str) -> Result<serde_json::Value, RouterError> {
        let afi = if prefix.contains(':') { "ipv6" } else { "ipv4" };
        self.vtysh_json(&format!("show bgp {afi} unicast {prefix} json"))
    }

    /// Number of prefixes in the BGP RIB of a family.
    pub fn bgp_prefix_count(&self, ipv6: bool) -> Result<u64, RouterError> {
        let afi = if ipv6 { "ipv6" } else { "ipv4" };
        let json = self.vtysh_json(&format!("show bgp {afi} unicast summary json"))?;
        Ok(json
            .get("peers")
            .and_then(|peers| peers.as_object())
            .map(|peers| {
                peers
                    .values()
                    .filter_map(|p| p.get("pfxRcd").and_then(|n| n.as_u64()))
                    .sum()
            })
            .unwrap_or(0))
    }

    /// Prefixes received from one neighbour in a family (`pfxRcd`), if it is a neighbour.
    pub fn neighbor_prefixes(
        &self,
        neighbor: IpAddr,
        ipv6: bool,
    ) -> Result<Option<u64>, RouterError> {
        let afi = if ipv6 { "ipv6" } else { "ipv4" };
        let json = self.vtysh_json(&format!("show bgp {afi} unicast summary json"))?;
        Ok(json["peers"][neighbor.to_string()]["pfxRcd"].as_u64())
    }

    /// A bgpd.conf for `config`: no eBGP policy requirement, IPv4 and IPv6 unicast activated
    /// per neighbour (by its address family), neighbour changes logged with millisecond
    /// timestamps to `bgpd.log`, ECMP over up to 8 paths for eBGP and iBGP
    /// (with as-path multipath-relax, so paths from different ASes combine), connect retry 1 s.
    pub fn bgpd_conf(config: &RouterConfig) -> String {
        let mut c = String::new();
        let _ = writeln!(
            c,
            "hostname bgpd\nlog stdout debugging\nlog timestamp precision 3\n!"
        );
        let _ = writeln!(c, "router bgp {}", config.asn);
        let _ = writeln!(c, " bgp router-id {}", config.router_id);
        let _ = writeln!(c, " bgp log-neighbor-changes");
        let _ = writeln!(c, " no bgp ebgp-requires-policy");
        let _ = writeln!(c, " no bgp default ipv4-unicast");
        let _ = writeln!(c, " bgp bestpath as-path multipath-relax");
        for n in &config.neighbors {
            let _ = writeln!(c, " neighbor {} remote-as {}", n.address, n.remote_as);
            let _ = writeln!(c, " neighbor {} timers connect 1", n.address);
            if let Some(password) = &n.password {
                let _ = writeln!(c, " neighbor {} password {password}", n.address);
            }
        }
        for (afi, v6) in [("ipv4", false), ("ipv6", true)] {
            let _ = writeln!(c, " address-family {afi} unicast");
            let _ = writeln!(c, "  maximum-paths 8");
            let _ = writeln!(c, "  maximum-paths ibgp 8");
            for n in config
                .neighbors
                .iter()
                .filter(|n| n.address.is_ipv6() == v6)
            {
                let _ = writeln!(c, "  neighbor {} activate", n.address);
            }
            let _ = writeln!(c, " exit-address-family");
        }
        c
    }
}

impl Drop for Frr<'_> {
    fn drop(&mut self) {
        self.stop_bgpd();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn daemon_args(daemon: &str, dir: &str) -> Vec<String> {
    [
        format!("/usr/lib/frr/{daemon}"),
        "-f".into(),
        format!("{dir}/{daemon}.conf"),
        "-i".into(),
        format!("{dir}/{daemon}.pid"),
        "-z".into(),
        format!("{dir}/zserv.api"),
        "--vty_socket".into(),
        dir.into(),
        "-P".into(),
        "0".into(),
        "-u".into(),
        "frr".into(),
        "-g".into(),
        "frr".into(),
    ]
    .into()
}

fn chown_to_frr(dir: &Path) -> Result<(), RouterError> {
    let out = std::process::Command::new("chown")
        .args(["-R", "frr:frr"])
        .arg(dir)
        .output()
        .map_err(io_error("running chown"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(RouterError::Io {
            what: format!("chown frr {}", dir.display()),
            source: std::io::Error::other(String::from_utf8_lossy(&out.stderr).into_owned()),
        })
    }
}

/// Names of the namespace's interfaces that have an fe80:: address.
fn interfaces_with_link_local(ns: &Netns) -> Result<Vec<String>, RouterError> {
    let out = ns.ip(&["-j", "-6", "addr", "show", "scope", "link"])?;
    let json = parse_json("ip addr", &out.stdout)?;
    Ok(json
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|l| l.get("ifname").and_then(|n| n.as_str()).map(str::to_owned))
        .collect())
}

/// A gobgpd instance in a namespace, API on 127.0.0.1:50051 there.
pub struct Gobgp<'a> {
    ns: &'a Netns,
    dir: PathBuf,
    pid: Option<u32>,
}

impl<'a> Gobgp<'a> {
    /// Starts gobgpd with `toml` (see [`Gobgp::config_toml`]) and waits until its API answers.
    /// Logs go to `gobgpd.log` in [`Gobgp::dir`].
    pub fn start(ns: &'a Netns, toml: &str) -> Result<Self, RouterError> {
        let dir = router_dir(ns, "gobgp")?;
        std::fs::write(dir.join("gobgpd.toml"), toml).map_err(io_error("writing gobgpd.toml"))?;
        let mut gobgp = Self { ns, dir, pid: None };
        gobgp.start_daemon()?;
        Ok(gobgp)
    }

    /// The instance's directory (config, log).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Starts gobgpd (again, after [`Gobgp::stop`]) and waits until its API answers.
    pub fn start_daemon(&mut self) -> Result<(), RouterError> {
        let config = self.dir.join("gobgpd.toml").display().to_string();
        let pid = self.ns.spawn(
            &[
                "gobgpd",
                "-f",
                &config,
                "-t",
                "toml",
                "-p",
                "--api-hosts",
                "127.0.0.1:50051",
                "--pprof-disable",
            ],
            Some(&self.dir.join("gobgpd.log")),
        )?;
        self.pid = Some(pid);
        wait_for(Duration::from_secs(15), || self.cli(&["global"]).ok())
            .map(drop)
            .ok_or_else(|| not_ready("gobgpd", &self.dir.join("gobgpd.log")))
    }

    /// Kills gobgpd (SIGKILL).
    pub fn stop(&mut self) {
        if let Some(pid) = self.pid.take() {
            // SAFETY: kill(2) on the pid of the gobgpd this instance started.
            unsafe { libc::kill(pid as i32, libc::SIGKILL) };
            wait_for(Duration::from_secs(5), || {
                self.cli(&["global"]).is_err().then_some(())
            });
        }
    }

    /// Runs the `gobgp` CLI in the namespace and returns its output.
    pub fn cli(&self, args: &[&str]) -> Result<String, RouterError> {
        let mut argv = vec!["gobgp"];
        argv.extend_from_slice(args);
        let out = self.ns.exec(&argv)?;
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Runs `gobgp -j ARGS` and parses the output.
    pub fn cli_json(&self, args: &[&str]) -> Result<serde_json::Value, RouterError> {
        let mut argv = vec!["-j"];
        argv.extend_from_slice(args);
        let text = self.cli(&argv)?;
        parse_json(&format!("gobgp {}", args.join(" ")), text.as_bytes())
    }

    /// The session state of a neighbour as gobgp reports it (6 or "established" when up).
    pub fn neighbor_established(&self, neighbor: IpAddr) -> bool {
        let Ok(json) = self.cli_json(&["neighbor", &neighbor.to_string()]) else {
            return false;
        };
        let state = &json["state"]["session_state"];
        state.as_u64() == Some(6)
            || state
                .as_str()
                .is_some_and(|s| s.eq_ignore_ascii_case("established"))
    }

    /// The paths of one prefix in the global RIB (`gobgp -j global rib [-a ipv6] PREFIX`).
    pub fn rib_paths(&self, prefix: &str) -> Result<Vec<serde_json::Value>, RouterError> {
        let family = if prefix.contains(':') { "ipv6" } else { "ipv4" };
        let json = self.cli_json(&["global", "rib", "-a", family, prefix])?;
        Ok(json
            .as_object()
            .and_then(|o| o.values().next())
            .and_then(|paths| paths.as_array())
            .cloned()
            .unwrap_or_default())
    }

    /// A gobgpd.toml for `config`, each neighbour with IPv4 and IPv6 unicast.
    pub fn config_toml(config: &RouterConfig) -> String {
        let mut c = String::new();
        let _ = writeln!(
            c,
            "[global.config]\n  as = {}\n  router-id = \"{}\"\n",
            config.asn, config.router_id
        );
        for n in &config.neighbors {
            let _ = writeln!(
                c,
                "[[neighbors]]\n  [neighbors.config]\n    neighbor-address = \"{}\"\n    peer-as = {}",
                n.address, n.remote_as
            );
            if let Some(password) = &n.password {
                let _ = writeln!(c, "    auth-password = \"{password}\"");
            }
            let _ = writeln!(c, "  [neighbors.timers.config]\n    connect-retry = 1");
            for family in ["ipv4-unicast", "ipv6-unicast"] {
                let _ = writeln!(
                    c,
                    "  [[neighbors.afi-safis]]\n    [neighbors.afi-safis.config]\n      afi-safi-name = \"{family}\""
                );
            }
            c.push('\n');
        }
        c
    }
}

impl Drop for Gobgp<'_> {
    fn drop(&mut self) {
        if let Some(pid) = self.pid.take() {
            // SAFETY: kill(2) on the pid of the gobgpd this instance started.
            unsafe { libc::kill(pid as i32, libc::SIGKILL) };
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
