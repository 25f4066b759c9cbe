//! `cargo xtask lab up|down|status`: the user's lab (`cairn_e2e::lab`, prefix `cairn`, files in
//! `target/lab/`). `up` builds the lab's binaries first; nothing here runs without root.

use std::path::Path;

use anyhow::{bail, Result};
use cairn_e2e::lab::{Lab, LabConfig, UpOutcome};

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

pub fn run(root: &Path, action: Action) -> Result<()> {
    if !cairn_e2e::netns::is_root() {
        bail!(
            "the lab lives in network namespaces, which need root: run `cargo xtask lab` as root"
        );
    }
    let lab = Lab::new(LabConfig::user(root));
    match action {
        Action::Up => {
            crate::run(root, "cargo", &["build", "--bins", "-p", "cairn-e2e"])?;
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
    println!(
        "lab: {}",
        if status.healthy() {
            "up"
        } else {
            "not (fully) up"
        }
    );
}
