//! `cargo xtask lab up|down|status`: the user's lab (`cairn_e2e::lab`, prefix `cairn`, files in
//! `target/lab/`, with the allocator and one speaker per node). `up` builds the binaries first;
//! `status` also shows `cairnctl status`. Nothing here runs without root.

use std::path::Path;

use anyhow::{bail, Result};
use cairn_e2e::lab::{Dataplane, Lab, LabConfig, UpOutcome};

/// What to do with the lab.
#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub enum Action {
    /// Build the binaries and bring the lab up (nothing changes if it is already up)
    Up,
    /// Remove every namespace, process and file of the lab
    Down,
    /// Show the namespaces, the processes and FRR's BGP summary
    Status,
}

/// The speakers' `--dataplane`.
#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub enum DataplaneArg {
    /// The kernel delivers VIP traffic (the lab's kube-proxy stand-in)
    Kernel,
    /// The speakers' XDP stage forwards VIP traffic
    Xdp,
}

impl From<DataplaneArg> for Dataplane {
    fn from(arg: DataplaneArg) -> Self {
        match arg {
            DataplaneArg::Kernel => Dataplane::Kernel,
            DataplaneArg::Xdp => Dataplane::Xdp,
        }
    }
}

/// How `up` makes the lab.
#[derive(Debug, clap::Args)]
pub struct Options {
    /// How the speakers deliver VIP traffic
    #[arg(long, value_enum, default_value = "kernel")]
    dataplane: DataplaneArg,
    /// Leave Cairn's own processes (allocator, speakers) out, to run them by hand
    #[arg(long)]
    no_cairn: bool,
}

pub fn run(root: &Path, action: Action, options: &Options) -> Result<()> {
    if !cairn_e2e::netns::is_root() {
        bail!(
            "the lab lives in network namespaces, which need root: run `cargo xtask lab` as root"
        );
    }
    let mut config = LabConfig::user(root);
    config.dataplane = options.dataplane.into();
    config.start_cairn = !options.no_cairn;
    let lab = Lab::new(config);
    match action {
        Action::Up => {
            crate::run(root, "cargo", &["build", "--workspace", "--bins"])?;
            match lab.up()? {
                UpOutcome::AlreadyUp => println!("the lab is already up"),
                UpOutcome::Created(made) => {
                    println!("lab up:");
                    for line in made {
                        println!("  {line}");
                    }
                }
            }
            println!(
                "try: kubectl --kubeconfig {} get nodes",
                lab.kubeconfig().display()
            );
        }
        Action::Down => {
            let removed = lab.down()?;
            if removed.is_empty() {
                println!("no lab to remove");
            }
            for line in removed {
                println!("removed {line}");
            }
        }
        Action::Status => status(&lab),
    }
    Ok(())
}

fn status(lab: &Lab) {
    let status = lab.status();
    println!("namespaces:");
    for (name, exists) in &status.namespaces {
        println!(
            "  {name:<24} {}",
            if *exists { "present" } else { "missing" }
        );
    }
    println!("processes:");
    if status.processes.is_empty() {
        println!("  none recorded");
    }
    for p in &status.processes {
        println!(
            "  {:<16} pid {:<8} {}",
            p.name,
            p.pid,
            if p.alive { "running" } else { "dead" }
        );
    }
    match &status.bgp_summary {
        Some(summary) => println!("FRR BGP summary:\n{summary}"),
        None => println!("FRR: not answering"),
    }
    let cairnctl = lab.config().bin_dir.join("cairnctl");
    if cairnctl.exists() && lab.kubeconfig().exists() {
        let out = std::process::Command::new(&cairnctl)
            .arg("--kubeconfig")
            .arg(lab.kubeconfig())
            .arg("status")
            .output();
        match out {
            Ok(out) if out.status.success() => {
                println!("cairnctl status:\n{}", String::from_utf8_lossy(&out.stdout));
            }
            Ok(out) => println!("cairnctl status: {}", String::from_utf8_lossy(&out.stderr)),
            Err(e) => println!("cairnctl status: cannot run {}: {e}", cairnctl.display()),
        }
    }
    println!(
        "lab: {}",
        if status.healthy() {
            "up"
        } else {
            "not (fully) up"
        }
    );
}
