//! Debian packages the tests, benchmarks and lab need, installed when missing.
//!
//! `apt-get update` runs once, and only when something is missing, so a prepared machine starts
//! testing at once. `kubectl` may already come from another package than Debian's
//! `kubernetes-client` (the two conflict), so that one is judged by the command being present.

use std::process::Command;

use anyhow::{bail, Context, Result};

/// (package, why it is needed)
const PACKAGES: &[(&str, &str)] = &[
    ("clang", "compiles the XDP programs (clang -target bpf)"),
    ("llvm", "llvm-objdump for inspecting BPF objects"),
    ("libbpf-dev", "BPF helper headers"),
    ("bpftool", "inspecting loaded programs and maps"),
    ("iproute2", "network namespaces, veth, bridges"),
    ("iputils-ping", "reachability checks in the lab"),
    ("procps", "sysctl inside namespaces"),
    ("frr", "the top-of-rack router (zebra + bgpd)"),
    ("gobgpd", "the second BGP implementation tested against"),
    (
        "netsniff-ng",
        "trafgen, the packet generator for throughput benchmarks",
    ),
    ("tcpdump", "capturing lab traffic"),
    ("arping", "ARP requests from the client namespace"),
    (
        "ndisc6",
        "neighbour solicitations from the client namespace",
    ),
    ("nftables", "the DNAT baseline for the XDP benchmark"),
];

fn installed(package: &str) -> bool {
    Command::new("dpkg-query")
        .args(["-W", "-f=${Status}", package])
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("install ok installed"))
}

fn command_exists(name: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|dir| dir.join(name).is_file()))
}

/// Installs whatever is missing from [`PACKAGES`] (and `kubernetes-client` when no `kubectl`).
pub fn ensure_installed() -> Result<()> {
    let mut missing: Vec<&str> = PACKAGES
        .iter()
        .map(|(p, _)| *p)
        .filter(|p| !installed(p))
        .collect();
    if !command_exists("kubectl") {
        missing.push("kubernetes-client");
    }
    if missing.is_empty() {
        eprintln!("==> Debian packages: all present");
        return Ok(());
    }
    eprintln!("==> installing Debian packages: {}", missing.join(" "));
    let apt = |args: &[&str]| -> Result<()> {
        let status = Command::new("apt-get")
            .args(args)
            .env("DEBIAN_FRONTEND", "noninteractive")
            .status()
            .context("could not run apt-get (is this Debian, and are we root?)")?;
        if !status.success() {
            bail!("apt-get {} failed ({status})", args.join(" "));
        }
        Ok(())
    };
    apt(&["update", "-qq"])?;
    let mut args = vec!["install", "-y", "-qq", "--no-install-recommends"];
    args.extend(&missing);
    apt(&args)
}
