//! The tokio driver: one task per peer runs a [`SessionFsm`] over a real TCP connection, and
//! [`Speaker`] is the handle the Cairn speaker uses to add and remove peers, announce and
//! withdraw prefixes, and read per-session statistics.
//!
//! Connections are active only (to the peer's port 179), with optional source address,
//! TTL (`ebgp_multihop`; eBGP defaults to TTL 1, iBGP to the system default) and TCP MD5
//! (RFC 2385). Connect retry and its exponential backoff are the FSM's. Removing a peer or
//! shutting down sends a Cease / Administrative Shutdown NOTIFICATION (RFC 4486 §4) before
//! closing. This module holds no protocol logic: every decision is the FSM's.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::AsRawFd;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ipnet::IpNet;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::fsm::{Event, SessionConfig, SessionFsm, SessionStats, State};
use crate::sockopt;
use crate::update::RouteAttrs;

/// The BGP port.
pub const BGP_PORT: u16 = 179;

/// How to reach one peer and what session to run with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerConfig {
    /// The peer's address (the key of the peer in [`Speaker`]).
    pub address: IpAddr,
    /// The peer's TCP port (179 normally).
    pub port: u16,
    /// Session parameters.
    pub session: SessionConfig,
    /// Source address to bind before connecting.
    pub local_address: Option<IpAddr>,
    /// TTL of outgoing packets (eBGP multihop); `None` means 1 for eBGP and the system default
    /// for iBGP.
    pub ebgp_multihop: Option<u8>,
    /// TCP MD5 password (at most 80 bytes).
    pub md5_password: Option<String>,
}

impl PeerConfig {
    /// A peer on port 179 with no source address, default TTL and no MD5.
    pub fn new(address: IpAddr, session: SessionConfig) -> Self {
        Self {
            address,
            port: BGP_PORT,
            session,
            local_address: None,
            ebgp_multihop: None,
            md5_password: None,
        }
    }
}

/// Which peers a prefix goes to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Peers {
    /// Every peer, including peers added later.
    All,
    /// Only these peers (by address).
    Only(Vec<IpAddr>),
}

impl Peers {
    fn includes(&self, peer: &IpAddr) -> bool {
        match self {
            Peers::All => true,
            Peers::Only(list) => list.contains(peer),
        }
    }
}

/// Statistics of one peer's session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerStats {
    /// The peer's address.
    pub peer: IpAddr,
    /// Time since the session reached Established, when it is Established.
    pub uptime: Option<Duration>,
    /// State, counters and last error.
    pub session: SessionStats,
}

/// Errors from [`Speaker`] calls.
#[derive(Debug, thiserror::Error)]
pub enum SpeakerError {
    /// `add_peer` for an address that already has a peer.
    #[error("peer {0} already exists")]
    DuplicatePeer(IpAddr),
    /// `remove_peer` for an address without a peer.
    #[error("no peer {0}")]
    UnknownPeer(IpAddr),
    /// The MD5 password is longer than the kernel accepts.
    #[error("TCP MD5 password of {0} bytes, at most 80")]
    Md5PasswordTooLong(usize),
}

enum Command {
    Announce(IpNet, RouteAttrs),
    Withdraw(IpNet),
    Stop,
}

struct PeerHandle {
    commands: mpsc::UnboundedSender<Command>,
    stats: Arc<Mutex<SessionStats>>,
    task: JoinHandle<()>,
}

#[derive(Default)]
struct Inner {
    /// prefix → (attributes, which peers).
    routes: BTreeMap<IpNet, (RouteAttrs, Peers)>,
    /// peer address → its task.
    peers: HashMap<IpAddr, PeerHandle>,
}

/// A set of BGP sessions sharing one table of announced prefixes. Cheap to clone (a handle).
///
/// Methods other than `remove_peer` and `shutdown` never wait: they record the change and the
/// peer tasks send it. Peer tasks run on the runtime `new` was called in (which needs time and
/// IO enabled); the methods may be called from any thread.
#[derive(Clone)]
pub struct Speaker {
    inner: Arc<Mutex<Inner>>,
    runtime: tokio::runtime::Handle,
}

impl Default for Speaker {
    /// Same as [`Speaker::new`].
    fn default() -> Self {
        Self::new()
    }
}

impl Speaker {
    /// A speaker with no peers and no routes, running its sessions on the current tokio runtime.
    ///
    /// # Panics
    ///
    /// When called outside a tokio runtime.
    pub fn new() -> Self {
        Self {
            inner: Arc::default(),
            runtime: tokio::runtime::Handle::current(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Starts a session to a new peer; it receives every route announced for it so far.
    pub fn add_peer(&self, config: PeerConfig) -> Result<(), SpeakerError> {
        if let Some(password) = &config.md5_password {
            if password.len() > sockopt::MD5_MAX_KEY_LEN {
                return Err(SpeakerError::Md5PasswordTooLong(password.len()));
            }
        }
        let mut inner = self.lock();
        if inner.peers.contains_key(&config.address) {
            return Err(SpeakerError::DuplicatePeer(config.address));
        }
        let mut fsm = SessionFsm::new(config.session.clone());
        for (prefix, (attrs, peers)) in &inner.routes {
            if peers.includes(&config.address) {
                fsm.announce(*prefix, attrs.clone());
            }
        }
        let stats = Arc::new(Mutex::new(fsm.stats()));
        let (commands, rx) = mpsc::unbounded_channel();
        let address = config.address;
        let task = self
            .runtime
            .spawn(run_peer(config, fsm, rx, Arc::clone(&stats)));
        inner.peers.insert(
            address,
            PeerHandle {
                commands,
                stats,
                task,
            },
        );
        Ok(())
    }

    /// Ends the session to a peer with a Cease NOTIFICATION and waits for its task to finish.
    pub async fn remove_peer(&self, address: IpAddr) -> Result<(), SpeakerError> {
        let handle = self
            .lock()
            .peers
            .remove(&address)
            .ok_or(SpeakerError::UnknownPeer(address))?;
        stop_and_join(handle).await;
        Ok(())
    }

    /// Announces `prefix` with `attrs` to `peers` (replacing earlier attributes; peers no
    /// longer selected get a withdrawal).
    pub fn announce(&self, prefix: IpNet, attrs: RouteAttrs, peers: Peers) {
        let prefix = prefix.trunc();
        let mut inner = self.lock();
        for (address, handle) in &inner.peers {
            let command = if peers.includes(address) {
                Command::Announce(prefix, attrs.clone())
            } else {
                Command::Withdraw(prefix)
            };
            // A send error means the task ended (only after remove_peer/shutdown).
            let _ = handle.commands.send(command);
        }
        inner.routes.insert(prefix, (attrs, peers));
    }

    /// Withdraws `prefix` from every peer.
    pub fn withdraw(&self, prefix: IpNet) {
        let prefix = prefix.trunc();
        let mut inner = self.lock();
        if inner.routes.remove(&prefix).is_some() {
            for handle in inner.peers.values() {
                let _ = handle.commands.send(Command::Withdraw(prefix));
            }
        }
    }

    /// State and counters of every peer's session, ordered by peer address.
    pub fn peer_stats(&self) -> Vec<PeerStats> {
        let now = Instant::now().into_std();
        let inner = self.lock();
        let mut all: Vec<PeerStats> = inner
            .peers
            .iter()
            .map(|(peer, handle)| {
                let session = handle
                    .stats
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .clone();
                PeerStats {
                    peer: *peer,
                    uptime: session
                        .established_since
                        .map(|since| now.saturating_duration_since(since)),
                    session,
                }
            })
            .collect();
        all.sort_by_key(|s| s.peer);
        all
    }

    /// Ends every session with a Cease NOTIFICATION and waits for the tasks to finish.
    pub async fn shutdown(&self) {
        let handles: Vec<PeerHandle> = self.lock().peers.drain().map(|(_, h)| h).collect();
        for handle in handles {
            stop_and_join(handle).await;
        }
    }
}

async fn stop_and_join(handle: PeerHandle) {
    let _ = handle.commands.send(Command::Stop);
    // The task ends by itself after the Cease; a panic inside it is already reported.
    let _ = handle.task.await;
}

type Connecting = Pin<Box<dyn Future<Output = io::Result<TcpStream>> + Send>>;

/// What woke the peer task.
enum Wake {
    Command(Option<Command>),
    Read(io::Result<usize>),
    Connected(io::Result<TcpStream>),
    Timer,
}

async fn run_peer(
    config: PeerConfig,
    mut fsm: SessionFsm,
    mut commands: mpsc::UnboundedReceiver<Command>,
    stats: Arc<Mutex<SessionStats>>,
) {
    let mut conn: Option<(OwnedReadHalf, OwnedWriteHalf)> = None;
    let mut connecting: Option<Connecting> = None;
    let mut buf = vec![0u8; 64 * 1024];
    let mut stopping = false;
    fsm.handle_start(Instant::now().into_std());
    loop {
        drive_output(&config, &mut fsm, &mut conn, &mut connecting).await;
        *stats.lock().unwrap_or_else(|e| e.into_inner()) = fsm.stats();
        if stopping && matches!(fsm.state(), State::Idle) {
            return;
        }
        let deadline = fsm.poll_timeout().map(Instant::from_std);
        let wake = tokio::select! {
            command = commands.recv() => Wake::Command(command),
            read = async {
                match conn.as_mut() {
                    Some((reader, _)) => reader.read(&mut buf).await,
                    None => std::future::pending().await,
                }
            } => Wake::Read(read),
            done = async {
                match connecting.as_mut() {
                    Some(attempt) => attempt.await,
                    None => std::future::pending().await,
                }
            } => Wake::Connected(done),
            () = async {
                match deadline {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            } => Wake::Timer,
        };
        let now = Instant::now().into_std();
        match wake {
            Wake::Command(command) => {
                let mut next = command;
                // Take every queued command before sending, so bulk changes pack together.
                loop {
                    match next {
                        Some(Command::Announce(prefix, attrs)) => fsm.announce(prefix, attrs),
                        Some(Command::Withdraw(prefix)) => fsm.withdraw(&prefix),
                        Some(Command::Stop) | None => {
                            stopping = true;
                            fsm.handle_stop(now);
                            break;
                        }
                    }
                    match commands.try_recv() {
                        Ok(command) => next = Some(command),
                        Err(_) => break,
                    }
                }
            }
            Wake::Read(Ok(0)) => {
                // The socket is finished whatever the FSM makes of it.
                conn = None;
                fsm.handle_closed(now, "closed by peer".to_owned());
            }
            Wake::Read(Ok(n)) => fsm.handle_bytes(now, &buf[..n]),
            Wake::Read(Err(e)) => {
                conn = None;
                fsm.handle_closed(now, e.to_string());
            }
            Wake::Connected(result) => {
                connecting = None;
                match result.and_then(|s| s.local_addr().map(|a| (s, a))) {
                    Ok((stream, local)) => {
                        if fsm.handle_connected(now, local) {
                            let _ = stream.set_nodelay(true);
                            conn = Some(stream.into_split());
                        }
                    }
                    Err(e) => fsm.handle_connect_failed(now, e.to_string()),
                }
            }
            Wake::Timer => fsm.handle_timeout(now),
        }
    }
}

/// Writes every pending message, then acts on every event, until the FSM has nothing more.
async fn drive_output(
    config: &PeerConfig,
    fsm: &mut SessionFsm,
    conn: &mut Option<(OwnedReadHalf, OwnedWriteHalf)>,
    connecting: &mut Option<Connecting>,
) {
    loop {
        let now = Instant::now().into_std();
        let mut out = Vec::new();
        while let Some(msg) = fsm.poll_transmit(now) {
            out.extend_from_slice(&msg);
        }
        if !out.is_empty() {
            if let Some((_, writer)) = conn.as_mut() {
                if let Err(e) = writer.write_all(&out).await {
                    *conn = None;
                    fsm.handle_closed(Instant::now().into_std(), e.to_string());
                }
            }
        }
        let mut any = false;
        while let Some(event) = fsm.poll_event() {
            any = true;
            match event {
                Event::Connect => {
                    *conn = None;
                    *connecting = Some(Box::pin(connect(config.clone())));
                }
                Event::Disconnect => {
                    if let Some((_, mut writer)) = conn.take() {
                        let _ = writer.shutdown().await;
                    }
                    *connecting = None;
                }
                Event::StateChanged { from, to, reason } => {
                    tracing::info!(peer = %config.address, ?from, ?to, ?reason, "BGP state change");
                }
            }
        }
        if !any && out.is_empty() {
            return;
        }
    }
}

/// Opens the TCP connection with the configured source address, TTL and MD5 key.
async fn connect(config: PeerConfig) -> io::Result<TcpStream> {
    let peer = SocketAddr::new(config.address, config.port);
    let socket = match peer {
        SocketAddr::V4(_) => TcpSocket::new_v4()?,
        SocketAddr::V6(_) => TcpSocket::new_v6()?,
    };
    if let Some(password) = &config.md5_password {
        sockopt::set_tcp_md5(socket.as_raw_fd(), config.address, password.as_bytes())?;
    }
    let ebgp = config.session.local_as != config.session.peer_as;
    let ttl = config.ebgp_multihop.or(ebgp.then_some(1));
    if let Some(ttl) = ttl {
        sockopt::set_ttl(socket.as_raw_fd(), peer.is_ipv6(), ttl)?;
    }
    if let Some(local) = config.local_address {
        socket.bind(SocketAddr::new(local, 0))?;
    }
    socket.connect(peer).await
}
