//! `cargo xtask <task>`: the project's tasks, so that CI and people run exactly the same steps.
//!
//! - `test`: install missing Debian packages, then fmt, clippy and every test (root only).
//! - `bench [NAME...]`: release-mode benchmarks, one `bench <metric> <value> <unit>` line each.
//! - `crds`: regenerate `manifests/crds/` from the types in `api/`.
//! - `lab up|down|status`: the lab of network namespaces the demo runs in (see `lab.rs`).
//! - `demo [--keep]`: Cairn working end to end in the lab (see `demo.rs`).

mod bench;
mod demo;
mod lab;
mod packages;

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(about = "Cairn's project tasks")]
struct Cli {
    #[command(subcommand)]
    task: Task,
}

#[derive(Subcommand)]
enum Task {
    /// fmt, clippy -D warnings, unit and e2e tests (installs missing Debian packages; needs root)
    Test,
    /// Run benchmarks in release mode and print one `bench <metric> <value> <unit>` line each
    Bench {
        /// Benchmarks to run (default: all): allocator, controller, apiserver, arp, bgp, xdp, ownership, leases
        names: Vec<String>,
    },
    /// Regenerate manifests/crds/*.yaml from the Rust types
    Crds,
    /// Show Cairn working on this machine (needs root)
    Demo {
        /// Leave the lab up afterwards
        #[arg(long)]
        keep: bool,
        /// How the speakers deliver VIP traffic
        #[arg(long, value_enum, default_value = "kernel")]
        dataplane: lab::DataplaneArg,
    },
    /// Bring the lab (namespaces, FRR, lab API server, backends, Cairn) up or down (needs root)
    Lab {
        /// up, down or status
        #[arg(value_enum)]
        action: lab::Action,
        #[command(flatten)]
        options: lab::Options,
    },
}

fn main() -> Result<()> {
    let root = workspace_root();
    match Cli::parse().task {
        Task::Test => test(&root),
        Task::Bench { names } => bench::run(&root, &names),
        Task::Crds => crds(&root),
        Task::Demo { keep, dataplane } => demo::run(&root, keep, dataplane.into()),
        Task::Lab { action, options } => lab::run(&root, action, &options),
    }
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

/// Runs a command from the workspace root, failing with its name when it fails.
fn run(root: &Path, program: &str, args: &[&str]) -> Result<()> {
    eprintln!("==> {program} {}", args.join(" "));
    let status = Command::new(program)
        .args(args)
        .current_dir(root)
        .status()
        .with_context(|| format!("could not start {program}"))?;
    if !status.success() {
        bail!("`{program} {}` failed ({status})", args.join(" "));
    }
    Ok(())
}

fn test(root: &Path) -> Result<()> {
    if !cairn_e2e::netns::is_root() {
        bail!(
            "cargo xtask test runs the end-to-end tests in network namespaces, which need root. \
             Run it as root; it never skips them."
        );
    }
    packages::ensure_installed()?;
    cairn_e2e::netns::sweep_stale();
    run(root, "cargo", &["fmt", "--all", "--check"])?;
    run(
        root,
        "cargo",
        &[
            "clippy",
            "--workspace",
            "--all-targets",
            "--",
            "-D",
            "warnings",
        ],
    )?;
    // The e2e tests start the binaries (allocator, speakers, cairnctl) from target/debug.
    run(root, "cargo", &["build", "--workspace", "--bins"])?;
    run(root, "cargo", &["test", "--workspace"])?;
    cairn_e2e::netns::sweep_stale();
    Ok(())
}

fn crds(root: &Path) -> Result<()> {
    let dir = root.join("manifests/crds");
    std::fs::create_dir_all(&dir)?;
    for (file, crd) in cairn_api::crds() {
        let path = dir.join(file);
        std::fs::write(&path, cairn_api::crd_yaml(&crd)?)
            .with_context(|| format!("writing {}", path.display()))?;
        println!("wrote {}", path.display());
    }
    Ok(())
}
