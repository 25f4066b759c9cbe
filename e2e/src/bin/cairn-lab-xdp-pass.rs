//! `cairn-lab-xdp-pass`: holds `xdp_pass` on the switch side of the node veths while the lab runs
//! with `--dataplane xdp`.
//!
//! A node's XDP load balancer sends tunnelled frames back out of its `eth0` (XDP_TX); on a veth
//! such frames reach the peer only if the peer has an XDP program of its own (DESIGN.md, "The
//! machines"), or they are counted as dropped. Physical switches need nothing of the kind, so this
//! is lab plumbing only: it passes every frame unchanged. The programs stay attached while the
//! process lives (bpf_link) and go with it; it runs until SIGTERM/SIGINT.

use std::process::ExitCode;

use cairn_xdp::{Sink, SinkKind};
use clap::Parser;

/// Attach `xdp_pass` to interfaces of the current network namespace until stopped.
#[derive(Debug, Parser)]
#[command(name = "cairn-lab-xdp-pass", version)]
struct Args {
    /// Interfaces to attach to.
    #[arg(required = true)]
    interfaces: Vec<String>,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let mut held = Vec::new();
    for ifname in &args.interfaces {
        match Sink::attach(SinkKind::Pass, ifname) {
            Ok((sink, mode)) => held.push((sink, mode)),
            Err(e) => {
                eprintln!("cairn-lab-xdp-pass: attaching to {ifname}: {e}");
                return ExitCode::FAILURE;
            }
        }
    }
    println!(
        "xdp_pass attached to {} ({:?})",
        args.interfaces.join(" "),
        held.iter().map(|(_, mode)| *mode).collect::<Vec<_>>()
    );
    wait_for_any(&[libc::SIGTERM, libc::SIGINT]);
    drop(held);
    ExitCode::SUCCESS
}

/// Blocks the calling thread until one of `signals` arrives.
fn wait_for_any(signals: &[libc::c_int]) {
    // SAFETY: sigset_t is plain data initialised by sigemptyset; the signals are blocked before
    // sigwait so they are only consumed here (single-threaded process).
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for &s in signals {
            libc::sigaddset(&mut set, s);
        }
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        let mut received: libc::c_int = 0;
        libc::sigwait(&set, &mut received);
    }
}
