//! Network namespaces for tests and the lab: create, wire, run code inside, clean up.
//!
//! Every namespace made here is named `cairn-<tag>-<pid>-<n>` (unique per process, so parallel
//! tests never collide) and removed on drop, together with every process started in it, even when
//! the test panics. Nothing here touches the host's own interfaces: links are created inside the
//! namespaces (veth pairs are created in one namespace and moved to the other).
//!
//! [`sweep_stale`] removes namespaces left behind by a process that was killed before its drops
//! ran.

use std::ffi::OsStr;
use std::fs::File;
use std::os::fd::AsRawFd;
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Mutex;

/// Errors from namespace plumbing; each names the command or call that failed.
#[derive(Debug, thiserror::Error)]
pub enum NetnsError {
    /// A command could not be started at all (missing binary, usually).
    #[error("could not run `{command}`: {source}")]
    Spawn {
        command: String,
        source: std::io::Error,
    },
    /// A command ran and exited non-zero.
    #[error("`{command}` failed ({status}): {stderr}")]
    Failed {
        command: String,
        status: std::process::ExitStatus,
        stderr: String,
    },
    /// `setns(2)` or opening the namespace file failed.
    #[error("entering namespace {name}: {source}")]
    Enter {
        name: String,
        source: std::io::Error,
    },
    /// An ioctl on an interface failed.
    #[error("{what} on {ifname}: {source}")]
    Ioctl {
        what: &'static str,
        ifname: String,
        source: std::io::Error,
    },
}

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// ETHTOOL_STXCSUM off on `ifname` (shorter than IFNAMSIZ) in the calling thread's namespace.
fn disable_tx_checksum(ifname: &str) -> std::io::Result<()> {
    #[repr(C)]
    struct EthtoolValue {
        cmd: u32,
        data: u32,
    }
    #[repr(C)]
    struct IfReq {
        name: [u8; libc::IFNAMSIZ],
        data: *mut EthtoolValue,
        pad: [u8; 16],
    }
    const ETHTOOL_STXCSUM: u32 = 0x17;
    const SIOCETHTOOL: libc::c_ulong = 0x8946;
    let mut value = EthtoolValue {
        cmd: ETHTOOL_STXCSUM,
        data: 0,
    };
    let mut req = IfReq {
        name: [0; libc::IFNAMSIZ],
        data: &mut value,
        pad: [0; 16],
    };
    req.name[..ifname.len()].copy_from_slice(ifname.as_bytes());
    // SAFETY: socket(2)/ioctl(2)/close(2) with a properly laid out ifreq that outlives the
    // call; the fd is closed on every path.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_DGRAM, 0);
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        let rc = libc::ioctl(fd, SIOCETHTOOL, &mut req);
        let err = std::io::Error::last_os_error();
        libc::close(fd);
        if rc < 0 {
            return Err(err);
        }
    }
    Ok(())
}

/// A network namespace. Those made by [`Netns::new`] are owned by this process and deleted (with
/// their processes) on drop; those made by [`Netns::create_named`] or [`Netns::adopt`] persist,
/// with their processes, until someone deletes them (the lab's `down`).
pub struct Netns {
    name: String,
    children: Mutex<Vec<Child>>,
    delete_on_drop: bool,
}

impl Netns {
    /// Creates `cairn-<tag>-<pid>-<n>`, brings its loopback up and disables DAD (which would
    /// otherwise delay IPv6 addresses by seconds, see DESIGN.md).
    pub fn new(tag: &str) -> Result<Self, NetnsError> {
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let name = format!("cairn-{tag}-{}-{n}", std::process::id());
        Self::add(name, true)
    }

    /// Creates the namespace `name` exactly (loopback up, DAD off, as [`Netns::new`]) and leaves
    /// it, and the processes started in it, in place on drop. For the lab, whose namespaces have
    /// fixed names and outlive the process that made them.
    pub fn create_named(name: &str) -> Result<Self, NetnsError> {
        Self::add(name.to_owned(), false)
    }

    /// A handle on an existing namespace `name`, left in place on drop (as is everything started
    /// in it through this handle).
    pub fn adopt(name: &str) -> Self {
        Self {
            name: name.to_owned(),
            children: Mutex::new(Vec::new()),
            delete_on_drop: false,
        }
    }

    fn add(name: String, delete_on_drop: bool) -> Result<Self, NetnsError> {
        run_checked(Command::new("ip").args(["netns", "add", &name]))?;
        let ns = Self {
            name,
            children: Mutex::new(Vec::new()),
            delete_on_drop,
        };
        ns.ip(&["link", "set", "lo", "up"])?;
        for key in [
            "net.ipv6.conf.all.accept_dad=0",
            "net.ipv6.conf.default.accept_dad=0",
        ] {
            ns.exec(&["sysctl", "-qw", key])?;
        }
        Ok(ns)
    }

    /// The namespace's name, as `ip netns` knows it.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Runs `ip <args>` inside the namespace and checks its status.
    pub fn ip(&self, args: &[&str]) -> Result<Output, NetnsError> {
        let mut command = Command::new("ip");
        command.args(["-n", &self.name]).args(args);
        run_checked(&mut command)
    }

    /// Runs a command inside the namespace and checks its status.
    pub fn exec<S: AsRef<OsStr>>(&self, argv: &[S]) -> Result<Output, NetnsError> {
        run_checked(&mut self.command(argv))
    }

    /// A `Command` that will run inside the namespace (via `ip netns exec`).
    pub fn command<S: AsRef<OsStr>>(&self, argv: &[S]) -> Command {
        let mut command = Command::new("ip");
        command.args(["netns", "exec", &self.name]).args(argv);
        command
    }

    /// Starts a long-running process inside the namespace; it is killed when the namespace drops
    /// (unless the namespace persists, see [`Netns::create_named`]).
    /// Its stdout and stderr go to `log` when given, otherwise they are discarded.
    pub fn spawn<S: AsRef<OsStr>>(
        &self,
        argv: &[S],
        log: Option<&std::path::Path>,
    ) -> Result<u32, NetnsError> {
        let mut command = self.command(argv);
        command.stdin(Stdio::null());
        match log {
            Some(path) => {
                let file = File::create(path).map_err(|source| NetnsError::Spawn {
                    command: describe(&command),
                    source,
                })?;
                let err = file.try_clone().map_err(|source| NetnsError::Spawn {
                    command: describe(&command),
                    source,
                })?;
                command.stdout(file).stderr(err);
            }
            None => {
                command.stdout(Stdio::null()).stderr(Stdio::null());
            }
        }
        let child = command.spawn().map_err(|source| NetnsError::Spawn {
            command: describe(&command),
            source,
        })?;
        let pid = child.id();
        self.children
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(child);
        Ok(pid)
    }

    /// Runs `f` on a fresh thread that has entered this namespace, and returns its result.
    /// Sockets opened by `f` live in this namespace for their whole life, wherever they are used
    /// afterwards. A tokio runtime built inside `f` runs entirely in the namespace.
    pub fn run<F, R>(&self, f: F) -> Result<R, NetnsError>
    where
        F: FnOnce() -> R + Send,
        R: Send,
    {
        let path = format!("/run/netns/{}", self.name);
        let file = File::open(&path).map_err(|source| NetnsError::Enter {
            name: self.name.clone(),
            source,
        })?;
        std::thread::scope(|scope| {
            scope
                .spawn(move || {
                    // SAFETY: setns on a namespace fd we own; it affects only this thread.
                    let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
                    if rc != 0 {
                        return Err(NetnsError::Enter {
                            name: self.name.clone(),
                            source: std::io::Error::last_os_error(),
                        });
                    }
                    Ok(f())
                })
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
        })
    }

    /// Creates bridge `name` in this namespace, up, with multicast snooping off: there is no MLD
    /// querier on a lab segment, so multicast (IPv6 neighbour discovery) must flood.
    pub fn add_bridge(&self, name: &str) -> Result<(), NetnsError> {
        self.ip(&["link", "add", name, "type", "bridge", "mcast_snooping", "0"])?;
        self.ip(&["link", "set", name, "up"]).map(drop)
    }

    /// Creates a veth pair `here` (in this namespace) ↔ `there` (in `peer`), both up.
    pub fn veth(&self, here: &str, peer: &Netns, there: &str) -> Result<(), NetnsError> {
        self.ip(&[
            "link", "add", here, "type", "veth", "peer", "name", there, "netns", &peer.name,
        ])?;
        self.ip(&["link", "set", here, "up"])?;
        peer.ip(&["link", "set", there, "up"])?;
        Ok(())
    }

    /// Adds an address (`192.0.2.1/24`, `2001:db8::1/64`) to an interface in this namespace.
    pub fn addr(&self, dev: &str, cidr: &str) -> Result<(), NetnsError> {
        self.ip(&["addr", "add", cidr, "dev", dev]).map(drop)
    }

    /// Turns off transmit checksum offload on `ifname` (ETHTOOL_STXCSUM through SIOCETHTOOL), as
    /// a real NIC behaves: a veth leaves the checksum of locally sent packets to "hardware", a
    /// promise lost when an XDP program forwards the frame on (a real NIC has computed it before
    /// any receiver's XDP sees the frame).
    pub fn disable_tx_checksum_offload(&self, ifname: &str) -> Result<(), NetnsError> {
        let error = |source| NetnsError::Ioctl {
            what: "ETHTOOL_STXCSUM",
            ifname: ifname.to_owned(),
            source,
        };
        if ifname.len() >= libc::IFNAMSIZ {
            return Err(error(std::io::Error::from(
                std::io::ErrorKind::InvalidInput,
            )));
        }
        self.run(|| disable_tx_checksum(ifname))?.map_err(error)
    }

    /// The MAC address of an interface in this namespace.
    pub fn mac(&self, dev: &str) -> Result<[u8; 6], NetnsError> {
        let out = self.exec(&["cat", &format!("/sys/class/net/{dev}/address")])?;
        let text = String::from_utf8_lossy(&out.stdout);
        let mut mac = [0u8; 6];
        let mut parts = text.trim().split(':');
        for byte in &mut mac {
            *byte = parts
                .next()
                .and_then(|p| u8::from_str_radix(p, 16).ok())
                .ok_or_else(|| NetnsError::Failed {
                    command: format!("read MAC of {dev}"),
                    status: out.status,
                    stderr: format!("unexpected address {text:?}"),
                })?;
        }
        Ok(mac)
    }

    /// Kills the processes started with `spawn` (SIGKILL) and waits for them.
    pub fn kill_all(&self) {
        let mut children = self.children.lock().unwrap_or_else(|e| e.into_inner());
        for child in children.iter_mut() {
            let _ = child.kill();
            let _ = child.wait();
        }
        children.clear();
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        if !self.delete_on_drop {
            return;
        }
        self.kill_all();
        kill_pids_in(&self.name);
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .stderr(Stdio::null())
            .status();
    }
}

/// Kills every process still inside the named namespace (those not started through `spawn`,
/// such as daemons that fork).
pub fn kill_pids_in(name: &str) {
    if let Ok(out) = Command::new("ip").args(["netns", "pids", name]).output() {
        for pid in String::from_utf8_lossy(&out.stdout).split_whitespace() {
            if let Ok(pid) = pid.parse::<i32>() {
                // SAFETY: plain kill(2) on a pid the kernel reported inside our namespace.
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
        }
    }
}

/// Removes namespaces named `cairn-<tag>-<pid>-<n>` whose creating process is gone (left behind
/// by a test run that was killed before its drops ran).
pub fn sweep_stale() {
    let Ok(out) = Command::new("ip").args(["netns", "list"]).output() else {
        return;
    };
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let Some(name) = line.split_whitespace().next() else {
            continue;
        };
        if !name.starts_with("cairn-") {
            continue;
        }
        let mut parts = name.rsplitn(3, '-');
        let (Some(counter), Some(pid)) = (parts.next(), parts.next()) else {
            continue;
        };
        let (Ok(_), Ok(pid)) = (counter.parse::<u32>(), pid.parse::<u32>()) else {
            continue;
        };
        if !std::path::Path::new(&format!("/proc/{pid}")).exists() {
            kill_pids_in(name);
            let _ = Command::new("ip").args(["netns", "del", name]).status();
        }
    }
}

/// True when running as root (namespaces need it).
pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

fn describe(command: &Command) -> String {
    let mut text = command.get_program().to_string_lossy().into_owned();
    for arg in command.get_args() {
        text.push(' ');
        text.push_str(&arg.to_string_lossy());
    }
    text
}

fn run_checked(command: &mut Command) -> Result<Output, NetnsError> {
    let output = command.output().map_err(|source| NetnsError::Spawn {
        command: describe(command),
        source,
    })?;
    if output.status.success() {
        Ok(output)
    } else {
        Err(NetnsError::Failed {
            command: describe(command),
            status: output.status,
            stderr: String::from_utf8_lossy(&output.stderr).trim().to_owned(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn two_namespaces_joined_by_veth_can_ping_and_are_removed_on_drop() {
        assert!(is_root(), "network namespace tests need root");
        let name;
        {
            let a = Netns::new("selftest").expect("namespace a");
            let b = Netns::new("selftest").expect("namespace b");
            name = a.name().to_owned();
            a.veth("v0", &b, "v1").expect("veth");
            a.addr("v0", "192.0.2.1/24").expect("addr a");
            b.addr("v1", "192.0.2.2/24").expect("addr b");
            a.exec(&["ping", "-c1", "-W2", "192.0.2.2"])
                .expect("ping across the veth");
            let mac = b.mac("v1").expect("mac");
            assert_ne!(mac, [0; 6]);
            let index_of_v1 = || {
                // SAFETY: a NUL-terminated literal name.
                unsafe { libc::if_nametoindex(c"v1".as_ptr()) }
            };
            let in_b = b.run(index_of_v1).expect("enter b");
            assert_ne!(in_b, 0, "v1 exists inside b");
            assert_eq!(index_of_v1(), 0, "v1 is not visible outside b");
        }
        let list = Command::new("ip").args(["netns", "list"]).output().unwrap();
        assert!(!String::from_utf8_lossy(&list.stdout).contains(&name));
    }
}
