//! The IO layer: per interface, an ARP socket and a Neighbor Solicitation socket driven by tokio
//! `AsyncFd`, the announcement schedule, the owned address set and the counters; plus one
//! rtnetlink subscription reporting link up/down.
//!
//! Decisions are made by the pure cores (`respond::respond`, `schedule::AnnounceSchedule`); this
//! module only moves frames and keeps state. It must not spin (every wait is on a socket,
//! a `Notify` or the schedule's next deadline), must not put an interface in promiscuous mode,
//! and must not answer for an address after `withdraw` has returned: the owned set is read and the
//! reply sent under the same lock that `withdraw` takes.
//!
//! Self-fencing: every frame claiming a VIP (reply, solicited NA, gratuitous ARP, unsolicited NA)
//! is checked against the announcer's [`ClaimDeadline`] on the clock immediately before it is
//! sent, so a request queued in the socket while the process was frozen is judged when it is
//! answered, not when it arrived. A frame the gate refuses is dropped and counted
//! (`Counters::fenced_suppressed`); the VIP stays owned until `withdraw`.
//!
//! IPv6: NS reach the node at the VIP's solicited-node group. Each group is joined in two ways:
//! PACKET_ADD_MEMBERSHIP of its 33:33:ff:xx:xx:xx MAC on the NDP socket puts it in the
//! interface's receive filter, and IPV6_JOIN_GROUP on an AF_INET6 socket makes the kernel send
//! MLD reports, so switches that snoop MLD forward the solicitations to this port (best effort:
//! the kernel caps one socket's groups by `net.core.optmem_max`; a refusal is logged). Both kernel
//! lists are linear, so joining costs grow with the square of the group count; past
//! `L2Config::group_join_limit` groups on an interface (default 1024, where NIC filters overflow
//! anyway) further groups are not joined one by one: the NDP socket instead puts the interface in
//! all-multicast mode (PACKET_MR_ALLMULTI; not promiscuous: unicast to other hosts is still
//! filtered, and the BPF filter keeps the socket to NS), undone once every remaining group is
//! joined individually again. Groups are reference-counted here, as two VIPs can share one group
//! and a socket may join a group only once.
//!
//! Link state comes from an RTMGRP_LINK netlink subscription (no polling); a lost-notification
//! overflow is repaired with a link dump.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::io;
use std::net::{IpAddr, Ipv6Addr};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use tokio::io::unix::{AsyncFd, AsyncFdReadyGuard};
use tokio::io::Interest;
use tokio::sync::{broadcast, Notify};
use tokio::task::JoinHandle;

use crate::frames;
use crate::gate::{ClaimDeadline, Claims};
use crate::respond::{respond, Verdict};
use crate::schedule::{AnnounceSchedule, BurstConfig};
use crate::sys::{self, GroupSocket, Interface, LinkMonitor, PacketSocket};
use crate::wire::ndisc::solicited_node;
use crate::wire::MacAddr;

/// Which interfaces to serve.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InterfaceSelection {
    /// These interfaces, by name; each must exist and have an Ethernet address (it may be down).
    Named(Vec<String>),
    /// Every interface that is up, broadcast-capable, not loopback and not a bond slave, as found
    /// when the announcer is created.
    AllEligible,
}

/// Configuration of an `L2Announcer`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct L2Config {
    /// Interfaces to serve.
    pub interfaces: InterfaceSelection,
    /// Gratuitous burst and refresh schedule.
    pub burst: BurstConfig,
    /// Solicited-node groups joined one by one per interface before the interface is put in
    /// all-multicast mode instead (see the module documentation).
    pub group_join_limit: usize,
}

/// Default `L2Config::group_join_limit`.
pub const DEFAULT_GROUP_JOIN_LIMIT: usize = 1024;

impl L2Config {
    /// The given interfaces with the default burst and group join limit.
    pub fn new(interfaces: InterfaceSelection) -> Self {
        Self {
            interfaces,
            burst: BurstConfig::default(),
            group_join_limit: DEFAULT_GROUP_JOIN_LIMIT,
        }
    }
}

/// Errors from the announcer.
#[derive(Debug, thiserror::Error)]
pub enum L2Error {
    /// `L2Announcer::new` was called outside a tokio runtime with IO and time enabled.
    #[error("L2Announcer must be created inside a tokio runtime")]
    NoRuntime,
    /// A named interface does not exist in this network namespace.
    #[error("interface {0} not found")]
    NoSuchInterface(String),
    /// A named interface has no 6-byte hardware address.
    #[error("interface {0} has no Ethernet address")]
    NotEthernet(String),
    /// `AllEligible` found nothing.
    #[error("no eligible interface (up, broadcast, not loopback, not a bond slave)")]
    NoEligibleInterface,
    /// `announce`/`withdraw` named an interface this announcer does not serve.
    #[error("interface {0} is not served by this announcer")]
    NotServed(String),
    /// IPv6 VIP announced while the kernel has IPv6 disabled.
    #[error("IPv6 is unavailable in this network namespace")]
    Ipv6Unavailable,
    /// A system call failed.
    #[error("{what} on {interface}: {source}")]
    Io {
        /// The operation.
        what: &'static str,
        /// The interface (or "*" for namespace-wide calls).
        interface: String,
        /// The OS error.
        source: io::Error,
    },
}

/// A link of a served interface went up or down (administratively or carrier).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkEvent {
    /// Interface name.
    pub interface: String,
    /// Interface index.
    pub index: u32,
    /// Up and running after the change.
    pub up: bool,
}

/// Counter values of one interface.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Counters {
    /// Well-formed ARP requests and Neighbor Solicitations received, owned target or not.
    pub requests_received: u64,
    /// ARP replies and solicited Neighbor Advertisements sent.
    pub replies_sent: u64,
    /// Gratuitous frames sent: two per IPv4 round (request and reply), one per IPv6 round.
    pub gratuitous_sent: u64,
    /// Frames dropped as malformed (truncated, wrong types or lengths, bad checksum, hop limit
    /// other than 255, bad options).
    pub malformed_dropped: u64,
    /// Replies and gratuitous frames not sent because the claim deadline had passed
    /// ([`L2Announcer::set_claim_deadline`]).
    pub fenced_suppressed: u64,
}

#[derive(Debug, Default)]
struct AtomicCounters {
    requests_received: AtomicU64,
    replies_sent: AtomicU64,
    gratuitous_sent: AtomicU64,
    malformed_dropped: AtomicU64,
    fenced_suppressed: AtomicU64,
}

impl AtomicCounters {
    fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    fn snapshot(&self) -> Counters {
        Counters {
            requests_received: self.requests_received.load(Ordering::Relaxed),
            replies_sent: self.replies_sent.load(Ordering::Relaxed),
            gratuitous_sent: self.gratuitous_sent.load(Ordering::Relaxed),
            malformed_dropped: self.malformed_dropped.load(Ordering::Relaxed),
            fenced_suppressed: self.fenced_suppressed.load(Ordering::Relaxed),
        }
    }
}

/// Status of one served interface.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InterfaceStatus {
    /// Name.
    pub name: String,
    /// Kernel index.
    pub index: u32,
    /// MAC used as sender address.
    pub mac: MacAddr,
    /// Up and running, as last reported by the kernel.
    pub up: bool,
    /// Addresses currently owned (answered and announced) on it.
    pub owned: Vec<IpAddr>,
}

#[derive(Debug, Clone, Copy)]
struct GroupRef {
    /// Owned IPv6 VIPs mapping to the group.
    vips: u32,
    /// Joined individually (its MAC is in the filter), rather than covered by all-multicast.
    joined: bool,
    /// Whether IPV6_JOIN_GROUP succeeded (and must be undone).
    mld: bool,
}

/// Solicited-node memberships of one interface.
#[derive(Debug, Default)]
struct Groups {
    // solicited-node group -> its membership
    by_group: HashMap<Ipv6Addr, GroupRef>,
    /// Groups with `joined` set.
    joined: usize,
    /// Groups without `joined` (covered by all-multicast).
    uncovered: usize,
    /// All-multicast membership held by the NDP socket.
    all_multicast: bool,
}

#[derive(Debug)]
struct LinkState {
    // owned addresses on this interface
    owned: HashSet<IpAddr>,
    schedule: AnnounceSchedule,
    // (vip, frame) announcements built but not yet accepted by the socket
    pending: VecDeque<(IpAddr, Vec<u8>)>,
    groups: Groups,
    up: bool,
}

#[derive(Debug)]
struct Link {
    name: String,
    index: u32,
    mac: MacAddr,
    /// ETH_P_ARP socket; also sends every frame (with the right ethertype per frame).
    arp: AsyncFd<PacketSocket>,
    /// ETH_P_IPV6 socket filtered down to Neighbor Solicitations.
    ndp: AsyncFd<PacketSocket>,
    state: Mutex<LinkState>,
    counters: AtomicCounters,
    wake: Notify,
    /// Claims are sent only while this allows them (shared by every link of an announcer).
    gate: ClaimDeadline,
}

/// Marker for the socket wrappers of `sys`, which own their descriptor (an `OwnedFd` field set
/// at construction and never replaced).
trait OwnsFd: AsRawFd {}
impl OwnsFd for PacketSocket {}
impl OwnsFd for LinkMonitor {}

/// Registers a socket with the current runtime's reactor.
fn register<T: OwnsFd>(socket: T, interest: Interest) -> io::Result<AsyncFd<T>> {
    // SAFETY: `OwnsFd` types hold their descriptor in an `OwnedFd` that stays open and unchanged
    // until they drop, which is when the `AsyncFd` drops.
    unsafe { AsyncFd::register_with_interest(socket, interest) }.map_err(io::Error::from)
}

/// How many frames one wake-up reads before the timers get a turn.
const RECV_BATCH: usize = 256;
const FRAME_BUF: usize = 2048;

fn ethertype_of(vip: IpAddr) -> u16 {
    match vip {
        IpAddr::V4(_) => sys::ETH_P_ARP,
        IpAddr::V6(_) => sys::ETH_P_IPV6,
    }
}

impl Link {
    fn lock(&self) -> MutexGuard<'_, LinkState> {
        // A panic while holding the lock cannot leave LinkState half-updated in a way that
        // matters more than stopping the responder would, so keep serving.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queues the rounds due now and sends what the socket takes; true when the socket pushed
    /// back (wait for writability).
    fn flush(&self) -> bool {
        let mut state = self.lock();
        let now = Instant::now();
        while let Some(vip) = state.schedule.poll_transmit(now) {
            for frame in frames::announcement(self.mac, vip) {
                state.pending.push_back((vip, frame));
            }
        }
        while let Some((vip, frame)) = state.pending.front() {
            if !self.gate.allows_now() {
                AtomicCounters::bump(&self.counters.fenced_suppressed);
                state.pending.pop_front();
                continue;
            }
            match self.arp.get_ref().send(frame, ethertype_of(*vip)) {
                Ok(()) => {
                    AtomicCounters::bump(&self.counters.gratuitous_sent);
                    state.pending.pop_front();
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return true,
                Err(e) => {
                    tracing::warn!(interface = %self.name, vip = %vip, error = %e, "gratuitous send failed");
                    state.pending.pop_front();
                }
            }
        }
        false
    }

    /// Reads and answers up to a batch of frames from one socket.
    fn drain(&self, buf: &mut [u8], ready: &mut AsyncFdReadyGuard<'_, PacketSocket>) {
        for _ in 0..RECV_BATCH {
            match ready.try_io(|fd| fd.get_ref().recv(buf)) {
                Ok(Ok(received)) => {
                    if !received.is_outgoing() {
                        self.handle(&buf[..received.len.min(buf.len())]);
                    }
                }
                Ok(Err(e)) => {
                    tracing::warn!(interface = %self.name, error = %e, "receive failed");
                    return;
                }
                Err(_would_block) => return,
            }
        }
    }

    fn handle(&self, frame: &[u8]) {
        let state = self.lock();
        let verdict = respond(frame, self.mac, |ip| state.owned.contains(&ip));
        if verdict.is_request() {
            AtomicCounters::bump(&self.counters.requests_received);
        }
        match verdict {
            Verdict::Reply { vip, .. } if !self.gate.allows_now() => {
                AtomicCounters::bump(&self.counters.fenced_suppressed);
                tracing::debug!(interface = %self.name, vip = %vip, "reply suppressed: claim deadline passed");
            }
            Verdict::Reply { vip, frame } => {
                // Sent while holding the lock: `withdraw` cannot return in between.
                match self.arp.get_ref().send(&frame, ethertype_of(vip)) {
                    Ok(()) => AtomicCounters::bump(&self.counters.replies_sent),
                    Err(e) => {
                        tracing::debug!(interface = %self.name, vip = %vip, error = %e, "reply dropped")
                    }
                }
            }
            Verdict::Malformed(error) => {
                AtomicCounters::bump(&self.counters.malformed_dropped);
                tracing::debug!(interface = %self.name, %error, "malformed frame dropped");
            }
            Verdict::Ignore(_) => {}
        }
    }
}

async fn serve_link(link: Arc<Link>) {
    let mut buf = vec![0u8; FRAME_BUF];
    let mut blocked = false;
    loop {
        if !blocked {
            blocked = link.flush();
        }
        let deadline = link.lock().schedule.poll_timeout();
        let sleep = async {
            match deadline {
                Some(at) => tokio::time::sleep_until(tokio::time::Instant::from_std(at)).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            ready = link.arp.readable() => match ready {
                Ok(mut ready) => link.drain(&mut buf, &mut ready),
                Err(e) => {
                    // Only a runtime shutting down makes readiness fail: stop, do not spin.
                    tracing::error!(interface = %link.name, error = %e, "ARP socket failed; interface no longer served");
                    return;
                }
            },
            ready = link.ndp.readable() => match ready {
                Ok(mut ready) => link.drain(&mut buf, &mut ready),
                Err(e) => {
                    tracing::error!(interface = %link.name, error = %e, "NDP socket failed; interface no longer served");
                    return;
                }
            },
            writable = link.arp.writable(), if blocked => {
                if let Ok(mut writable) = writable {
                    writable.clear_ready();
                }
                blocked = link.flush();
            },
            () = link.wake.notified() => {},
            () = sleep => {},
        }
    }
}

async fn monitor_links(
    monitor: AsyncFd<LinkMonitor>,
    links: HashMap<u32, Arc<Link>>,
    events: broadcast::Sender<LinkEvent>,
) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let mut ready = match monitor.readable().await {
            Ok(ready) => ready,
            Err(e) => {
                tracing::error!(error = %e, "link monitor failed; link changes are no longer reported");
                return;
            }
        };
        let changes = match ready.try_io(|fd| fd.get_ref().recv(&mut buf)) {
            Ok(Ok(changes)) => changes,
            Ok(Err(e)) if e.raw_os_error() == Some(libc::ENOBUFS) => {
                tracing::warn!("link notifications lost; asking for a full link dump");
                if let Err(e) = monitor.get_ref().request_dump() {
                    tracing::error!(error = %e, "link dump request failed");
                }
                continue;
            }
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "link monitor receive failed");
                continue;
            }
            Err(_would_block) => continue,
        };
        for change in changes {
            let Some(link) = links.get(&change.index) else {
                continue;
            };
            let up = change.is_up();
            {
                let mut state = link.lock();
                if state.up == up {
                    continue;
                }
                state.up = up;
                if up {
                    // Neighbours may have flushed entries while the link was down: announce again.
                    let now = Instant::now();
                    let owned: Vec<IpAddr> = state.owned.iter().copied().collect();
                    for vip in owned {
                        state.schedule.start(now, vip);
                    }
                }
            }
            link.wake.notify_one();
            tracing::info!(interface = %link.name, up, "link state changed");
            // No receiver is not an error: the caller may not listen.
            let _ = events.send(LinkEvent {
                interface: link.name.clone(),
                index: link.index,
                up,
            });
        }
    }
}

/// Announces and defends VIPs at layer 2 on a set of interfaces.
///
/// Create it inside a tokio runtime (IO and time drivers enabled); every socket is opened in
/// `new`, in the network namespace of the calling thread, and later calls only use those
/// sockets, so they may come from any thread. Dropping it stops all its tasks and closes the
/// sockets (which also leaves the multicast groups).
///
/// ```no_run
/// # async fn demo() -> Result<(), cairn_arp::L2Error> {
/// use cairn_arp::{InterfaceSelection, L2Announcer, L2Config};
/// let l2 = L2Announcer::new(L2Config::new(InterfaceSelection::Named(vec!["eth0".into()])))?;
/// let mut links = l2.link_events();
/// l2.announce("eth0", "192.0.2.100".parse().unwrap())?;
/// // ... ownership lost:
/// l2.withdraw("eth0", "192.0.2.100".parse().unwrap())?;
/// if let Ok(event) = links.recv().await {
///     println!("{} is {}", event.interface, if event.up { "up" } else { "down" });
/// }
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct L2Announcer {
    // interface name -> its sockets and state
    links: BTreeMap<String, Arc<Link>>,
    events: broadcast::Sender<LinkEvent>,
    tasks: Vec<JoinHandle<()>>,
    /// Holds the MLD-reporting memberships; `None` when IPv6 is disabled.
    groups: Option<GroupSocket>,
    group_join_limit: usize,
    /// The claim gate every link checks before each claim.
    gate: ClaimDeadline,
}

fn io_error<'a>(what: &'static str, interface: &'a str) -> impl FnOnce(io::Error) -> L2Error + 'a {
    move |source| L2Error::Io {
        what,
        interface: interface.to_owned(),
        source,
    }
}

fn select_interfaces(selection: &InterfaceSelection) -> Result<Vec<(Interface, MacAddr)>, L2Error> {
    let all = sys::interfaces().map_err(io_error("getifaddrs", "*"))?;
    match selection {
        InterfaceSelection::Named(names) => names
            .iter()
            .map(|name| {
                let iface = all
                    .iter()
                    .find(|i| &i.name == name)
                    .ok_or_else(|| L2Error::NoSuchInterface(name.clone()))?;
                let mac = iface
                    .mac
                    .ok_or_else(|| L2Error::NotEthernet(name.clone()))?;
                Ok((iface.clone(), mac))
            })
            .collect(),
        InterfaceSelection::AllEligible => {
            let chosen: Vec<_> = all
                .into_iter()
                .filter(Interface::is_eligible)
                .filter_map(|i| i.mac.map(|mac| (i, mac)))
                .collect();
            if chosen.is_empty() {
                Err(L2Error::NoEligibleInterface)
            } else {
                Ok(chosen)
            }
        }
    }
}

impl L2Announcer {
    /// Opens the sockets for the selected interfaces and starts serving them. No VIP is owned
    /// yet: nothing is answered or announced until `announce`.
    pub fn new(config: L2Config) -> Result<Self, L2Error> {
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| L2Error::NoRuntime)?;
        let _guard = runtime.enter();
        // Subscribe before listing, so no change between the two is missed.
        let monitor = LinkMonitor::open()
            .and_then(|monitor| register(monitor, Interest::READABLE))
            .map_err(io_error("netlink link subscription", "*"))?;
        let chosen = select_interfaces(&config.interfaces)?;
        let groups = match GroupSocket::open() {
            Ok(groups) => Some(groups),
            Err(e) => {
                tracing::warn!(error = %e, "IPv6 unavailable; only IPv4 VIPs can be announced");
                None
            }
        };
        let gate = ClaimDeadline::new(Claims::Unbounded);
        let mut links = BTreeMap::new();
        for (iface, mac) in chosen {
            let arp = PacketSocket::open(iface.index, sys::ETH_P_ARP, None)
                .and_then(|socket| register(socket, Interest::READABLE | Interest::WRITABLE))
                .map_err(io_error("open ARP socket", &iface.name))?;
            let ndp = PacketSocket::open(
                iface.index,
                sys::ETH_P_IPV6,
                Some(&sys::NEIGHBOR_SOLICIT_FILTER),
            )
            .and_then(|socket| register(socket, Interest::READABLE))
            .map_err(io_error("open NDP socket", &iface.name))?;
            let link = Link {
                name: iface.name.clone(),
                index: iface.index,
                mac,
                arp,
                ndp,
                state: Mutex::new(LinkState {
                    owned: HashSet::new(),
                    schedule: AnnounceSchedule::new(config.burst),
                    pending: VecDeque::new(),
                    groups: Groups::default(),
                    up: iface.is_up(),
                }),
                counters: AtomicCounters::default(),
                wake: Notify::new(),
                gate: gate.clone(),
            };
            links.insert(iface.name, Arc::new(link));
        }
        let (events, _) = broadcast::channel(64);
        let mut tasks: Vec<JoinHandle<()>> = links
            .values()
            .map(|link| runtime.spawn(serve_link(Arc::clone(link))))
            .collect();
        let by_index = links
            .values()
            .map(|link| (link.index, Arc::clone(link)))
            .collect();
        tasks.push(runtime.spawn(monitor_links(monitor, by_index, events.clone())));
        Ok(Self {
            links,
            events,
            tasks,
            groups,
            group_join_limit: config.group_join_limit,
            gate,
        })
    }

    fn link(&self, interface: &str) -> Result<&Arc<Link>, L2Error> {
        self.links
            .get(interface)
            .ok_or_else(|| L2Error::NotServed(interface.to_owned()))
    }

    /// Adds one VIP to its solicited-node group on `link`, joining the group if it is new.
    fn join_group(&self, link: &Link, groups: &mut Groups, group: Ipv6Addr) -> Result<(), L2Error> {
        if let Some(entry) = groups.by_group.get_mut(&group) {
            entry.vips += 1;
            return Ok(());
        }
        let mld_socket = self.groups.as_ref().ok_or(L2Error::Ipv6Unavailable)?;
        let ndp = link.ndp.get_ref();
        let entry = if groups.joined < self.group_join_limit {
            ndp.add_multicast(MacAddr::ipv6_multicast(group))
                .map_err(io_error("add multicast MAC", &link.name))?;
            let mld = match mld_socket.join(group, link.index) {
                Ok(()) => true,
                Err(e) => {
                    tracing::debug!(interface = %link.name, %group, error = %e,
                        "IPV6_JOIN_GROUP refused; no MLD report for this group");
                    false
                }
            };
            groups.joined += 1;
            GroupRef {
                vips: 1,
                joined: true,
                mld,
            }
        } else {
            if !groups.all_multicast {
                ndp.set_all_multicast(true)
                    .map_err(io_error("enable all-multicast", &link.name))?;
                groups.all_multicast = true;
                tracing::info!(interface = %link.name, limit = self.group_join_limit,
                    "solicited-node group limit reached; interface now receives all multicast");
            }
            groups.uncovered += 1;
            GroupRef {
                vips: 1,
                joined: false,
                mld: false,
            }
        };
        groups.by_group.insert(group, entry);
        Ok(())
    }

    /// Removes one VIP from its solicited-node group on `link`, leaving the group when it was
    /// the last one.
    fn leave_group(
        &self,
        link: &Link,
        groups: &mut Groups,
        group: Ipv6Addr,
    ) -> Result<(), L2Error> {
        let Some(entry) = groups.by_group.get_mut(&group) else {
            return Ok(());
        };
        if entry.vips > 1 {
            entry.vips -= 1;
            return Ok(());
        }
        let entry = *entry;
        groups.by_group.remove(&group);
        let ndp = link.ndp.get_ref();
        if entry.joined {
            groups.joined -= 1;
            if let (true, Some(mld_socket)) = (entry.mld, &self.groups) {
                mld_socket
                    .leave(group, link.index)
                    .map_err(io_error("leave solicited-node group", &link.name))?;
            }
            ndp.drop_multicast(MacAddr::ipv6_multicast(group))
                .map_err(io_error("drop multicast MAC", &link.name))?;
        } else {
            groups.uncovered -= 1;
        }
        if groups.all_multicast && groups.uncovered == 0 {
            ndp.set_all_multicast(false)
                .map_err(io_error("disable all-multicast", &link.name))?;
            groups.all_multicast = false;
        }
        Ok(())
    }

    /// Takes ownership of `vip` on `interface`: from now on requests for it are answered there,
    /// and its gratuitous burst starts at once (restarting if it was already owned). For an IPv6
    /// VIP the solicited-node group is joined before this returns.
    pub fn announce(&self, interface: &str, vip: IpAddr) -> Result<(), L2Error> {
        let link = self.link(interface)?;
        {
            let mut state = link.lock();
            if let IpAddr::V6(v6) = vip {
                if !state.owned.contains(&vip) {
                    self.join_group(link, &mut state.groups, solicited_node(v6))?;
                }
            }
            state.owned.insert(vip);
            state.schedule.start(Instant::now(), vip);
        }
        link.wake.notify_one();
        Ok(())
    }

    /// Gives up `vip` on `interface`. When this returns, no further reply or gratuitous frame
    /// for it is sent from this interface (its burst is cancelled and unsent frames dropped).
    /// Returns whether it was owned.
    pub fn withdraw(&self, interface: &str, vip: IpAddr) -> Result<bool, L2Error> {
        let link = self.link(interface)?;
        let mut state = link.lock();
        let was_owned = state.owned.remove(&vip);
        state.schedule.cancel(vip);
        state.pending.retain(|(pending, _)| *pending != vip);
        if let (true, IpAddr::V6(v6)) = (was_owned, vip) {
            self.leave_group(link, &mut state.groups, solicited_node(v6))?;
        }
        Ok(was_owned)
    }

    /// Bounds every claim (reply, NA, gratuitous frame) from now on: one is sent only if the
    /// clock at send time is before `deadline`; `None` closes the gate (no claim at all) until a
    /// deadline is set again. A new announcer is unbounded (never fenced) until this is called.
    /// Owned VIPs stay owned: a refused frame is counted in `Counters::fenced_suppressed`.
    pub fn set_claim_deadline(&self, deadline: Option<Instant>) {
        self.gate.set(deadline);
    }

    /// The shared handle of this announcer's claim gate: whoever holds it (the speaker's lease
    /// driver) moves the deadline without going through the announcer.
    pub fn claim_deadline(&self) -> ClaimDeadline {
        self.gate.clone()
    }

    /// Counters per served interface, by name.
    pub fn counters(&self) -> BTreeMap<String, Counters> {
        self.links
            .iter()
            .map(|(name, link)| (name.clone(), link.counters.snapshot()))
            .collect()
    }

    /// The served interfaces, their MACs, link state and owned addresses.
    pub fn interfaces(&self) -> Vec<InterfaceStatus> {
        self.links
            .values()
            .map(|link| {
                let state = link.lock();
                let mut owned: Vec<IpAddr> = state.owned.iter().copied().collect();
                owned.sort();
                InterfaceStatus {
                    name: link.name.clone(),
                    index: link.index,
                    mac: link.mac,
                    up: state.up,
                    owned,
                }
            })
            .collect()
    }

    /// A stream of link up/down changes of the served interfaces, from now on. On link up,
    /// owned VIPs are announced again by the announcer itself; on link down the caller decides
    /// (the speaker gives up ownership).
    pub fn link_events(&self) -> broadcast::Receiver<LinkEvent> {
        self.events.subscribe()
    }
}

impl Drop for L2Announcer {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn announcer_can_be_shared_across_threads_and_tasks() {
        // Fails to compile, rather than at run time, if a field stops being Send or Sync.
        fn shareable<T: Send + Sync + 'static>() {}
        shareable::<L2Announcer>();
    }

    #[test]
    fn creating_outside_a_runtime_is_an_error_not_a_panic() {
        let result = L2Announcer::new(L2Config::new(InterfaceSelection::AllEligible));
        assert!(matches!(result, Err(L2Error::NoRuntime)), "{result:?}");
    }
}
