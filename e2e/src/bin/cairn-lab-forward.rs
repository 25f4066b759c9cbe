//! `cairn-lab-forward`: makes the lab API server, which listens on the host's loopback, reachable
//! at the same address from inside the node namespaces, so that the one kubeconfig of the lab
//! works for processes in those namespaces (the speakers) as it does for `kubectl` on the host.
//!
//! One process holds a listener on `127.0.0.1:<port>` inside each named namespace (bound from a
//! thread that entered it) and relays every connection to `--to` from the host namespace. It
//! relays bytes only, never reads or changes them, and never listens outside loopback.

use std::fs::File;
use std::net::{Ipv4Addr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::process::ExitCode;

use clap::Parser;

/// Relay TCP from loopback inside network namespaces to an address in the host namespace.
#[derive(Debug, Parser)]
#[command(name = "cairn-lab-forward", version)]
struct Args {
    /// Namespace (as `ip netns` names it) to listen in; repeat for several.
    #[arg(long = "netns", required = true)]
    namespaces: Vec<String>,
    /// Port to listen on, on 127.0.0.1 in each namespace.
    #[arg(long)]
    port: u16,
    /// Where to relay connections to, from the host namespace.
    #[arg(long)]
    to: SocketAddr,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let mut listeners = Vec::new();
    for ns in &args.namespaces {
        match listen_in(ns, args.port) {
            Ok(listener) => listeners.push(listener),
            Err(e) => {
                eprintln!("cairn-lab-forward: listening in {ns}: {e}");
                return ExitCode::FAILURE;
            }
        }
    }
    println!(
        "relaying 127.0.0.1:{} in {} to {}",
        args.port,
        args.namespaces.join(" "),
        args.to
    );
    let to = args.to;
    let threads: Vec<_> = listeners
        .into_iter()
        .map(|listener| std::thread::spawn(move || accept(&listener, to)))
        .collect();
    for thread in threads {
        let _ = thread.join();
    }
    eprintln!("cairn-lab-forward: a listener stopped");
    ExitCode::FAILURE
}

/// Binds `127.0.0.1:port` inside `ns`, from a thread that enters it; the socket stays there.
fn listen_in(ns: &str, port: u16) -> std::io::Result<TcpListener> {
    let file = File::open(format!("/run/netns/{ns}"))?;
    std::thread::scope(|scope| {
        scope
            .spawn(|| {
                // SAFETY: setns on a namespace fd we own; it affects only this thread.
                if unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                TcpListener::bind((Ipv4Addr::LOCALHOST, port))
            })
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    })
}

/// Accepts connections (threads started from the main thread stay in the host namespace, so the
/// outgoing connections are made there).
fn accept(listener: &TcpListener, to: SocketAddr) {
    for stream in listener.incoming() {
        match stream {
            Ok(inside) => {
                std::thread::spawn(move || relay(inside, to));
            }
            Err(e) => eprintln!("cairn-lab-forward: accept: {e}"),
        }
    }
}

fn relay(inside: TcpStream, to: SocketAddr) {
    let outside = match TcpStream::connect(to) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("cairn-lab-forward: connecting to {to}: {e}");
            return;
        }
    };
    let (Ok(inside_read), Ok(outside_write)) = (inside.try_clone(), outside.try_clone()) else {
        return;
    };
    let upstream = std::thread::spawn(move || copy(inside_read, outside_write));
    copy(outside, inside);
    let _ = upstream.join();
}

/// Copies until end of stream, then passes the end on.
fn copy(mut from: TcpStream, mut to: TcpStream) {
    let _ = std::io::copy(&mut from, &mut to);
    let _ = to.shutdown(Shutdown::Write);
}
