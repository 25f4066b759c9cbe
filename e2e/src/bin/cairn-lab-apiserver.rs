//! `cairn-lab-apiserver`: runs the lab API server (`cairn_e2e::apiserver`) as its own process for
//! the demo and for tests that fault it from outside (`POST /debug/faults`). Prints the bound
//! address on stdout as `listening on http://ADDR`, writes a kubeconfig when asked, persists
//! objects to a state file when asked, and stops on SIGINT/SIGTERM after a last state write.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use cairn_e2e::apiserver::{LabApiServer, Options};
use clap::Parser;

/// A lab-only stand-in for kube-apiserver (plain HTTP, no auth).
#[derive(Debug, Parser)]
#[command(name = "cairn-lab-apiserver", version)]
struct Args {
    /// Address to listen on; port 0 picks a free port (the chosen address is printed).
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    /// Write a kubeconfig for this server to PATH (kubectl and kube load it).
    #[arg(long, value_name = "PATH")]
    kubeconfig_out: Option<PathBuf>,
    /// Persist objects to PATH on change and reload them at start.
    #[arg(long, value_name = "PATH")]
    state_file: Option<PathBuf>,
    /// Change events kept for watch resumption; older resume points get 410 Gone.
    #[arg(long, default_value_t = 100_000)]
    history_window: usize,
    /// Seconds between watch bookmarks.
    #[arg(long, default_value_t = 5)]
    bookmark_interval_secs: u64,
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    let options = Options {
        listen: args.listen,
        state_file: args.state_file,
        history_window: args.history_window,
        bookmark_interval: Duration::from_secs(args.bookmark_interval_secs.max(1)),
    };
    let server = match LabApiServer::start(options).await {
        Ok(s) => s,
        Err(e) => {
            eprintln!("cairn-lab-apiserver: {e}");
            return ExitCode::FAILURE;
        }
    };
    if let Some(path) = &args.kubeconfig_out {
        if let Err(e) = server.write_kubeconfig(path) {
            eprintln!("cairn-lab-apiserver: {e}");
            return ExitCode::FAILURE;
        }
    }
    println!("listening on {}", server.url());
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("cairn-lab-apiserver: cannot handle SIGTERM: {e}");
            return ExitCode::FAILURE;
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    match server.shutdown().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("cairn-lab-apiserver: {e}");
            ExitCode::FAILURE
        }
    }
}
