//! The sans-IO BGP session state machine of one peer (RFC 4271 §8), with its Adj-RIB-Out.
//!
//! [`SessionFsm`] contains no networking code and reads no clock: the driver feeds it events
//! through `handle_*(now, …)` and collects what it must do through, in this order after every
//! input:
//!
//! 1. [`SessionFsm::poll_transmit`] until `None`: messages to write, in priority order
//!    NOTIFICATION, OPEN, KEEPALIVE, UPDATE;
//! 2. [`SessionFsm::poll_event`] until `None`: state changes, and requests to open
//!    ([`Event::Connect`]) or close ([`Event::Disconnect`]) the TCP connection — a close comes
//!    after the NOTIFICATION explaining it has been handed out by `poll_transmit`;
//! 3. [`SessionFsm::poll_timeout`]: when to call [`SessionFsm::handle_timeout`] next.
//!
//! Only the active side is implemented (the driver connects to the peer; the peer's own connection
//! attempts are refused), so there is no connection collision (§6.8). Automatic restart: after any
//! error the session goes to Idle and reconnects when the connect-retry timer fires, with the
//! interval doubling up to a maximum and reset once Established (DampPeerOscillations, §8.1.1).
//!
//! Every state change goes through `transition` with a [`Reason`] from a closed set. Received
//! UPDATEs are only length-checked: this speaker announces and never imports.

use std::collections::VecDeque;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::{Duration, Instant};

use ipnet::IpNet;

use crate::error::{DownReason, OpenError, SessionError};
use crate::rib::AdjRibOut;
use crate::update::{self, RouteAttrs, SessionAttrs};
use crate::wire::{
    self, GracefulRestart, MessageType, Notification, Open, AFI_IPV4, AFI_IPV6, HEADER_LEN,
    SAFI_UNICAST,
};

/// Hold time used while waiting for the peer's OPEN (RFC 4271 §8.2.2 suggests 4 minutes).
const OPEN_HOLD_TIME: Duration = Duration::from_secs(240);

/// Configuration of one session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionConfig {
    /// Our AS.
    pub local_as: u32,
    /// The peer's AS; equal to `local_as` makes the session iBGP.
    pub peer_as: u32,
    /// Our BGP identifier.
    pub router_id: Ipv4Addr,
    /// Hold time we propose, in seconds (0 disables keepalives, otherwise ≥ 3).
    pub hold_time: u16,
    /// First connect-retry interval; doubles after each failure.
    pub connect_retry: Duration,
    /// Largest connect-retry interval.
    pub connect_retry_max: Duration,
    /// Advertise graceful restart and send End-of-RIB after the initial table.
    pub graceful_restart: Option<GracefulRestart>,
    /// IPv4 next hop to send instead of the session's local address (needed for IPv4 prefixes
    /// over an IPv6 session).
    pub next_hop_v4: Option<Ipv4Addr>,
    /// IPv6 global next hop to send instead of the session's local address (needed for IPv6
    /// prefixes over an IPv4 session or a link-local one).
    pub next_hop_v6: Option<Ipv6Addr>,
}

impl SessionConfig {
    /// A configuration with hold time 90 s, connect retry 1 s doubling up to 60 s, no graceful
    /// restart and next-hop self.
    pub fn new(local_as: u32, peer_as: u32, router_id: Ipv4Addr) -> Self {
        Self {
            local_as,
            peer_as,
            router_id,
            hold_time: 90,
            connect_retry: Duration::from_secs(1),
            connect_retry_max: Duration::from_secs(60),
            graceful_restart: None,
            next_hop_v4: None,
            next_hop_v6: None,
        }
    }

    fn ibgp(&self) -> bool {
        self.local_as == self.peer_as
    }
}

/// Session states (RFC 4271 §8.2.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum State {
    /// Not trying, or waiting for the connect-retry timer after an error.
    Idle,
    /// A TCP connection attempt is in progress.
    Connect,
    /// The last attempt failed; waiting for the connect-retry timer.
    Active,
    /// OPEN sent, waiting for the peer's.
    OpenSent,
    /// OPENs exchanged, waiting for the peer's KEEPALIVE.
    OpenConfirm,
    /// Routes flow.
    Established,
}

/// Why a state changed: a closed set, reported with every [`Event::StateChanged`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Reason {
    /// [`SessionFsm::handle_start`].
    ManualStart,
    /// [`SessionFsm::handle_stop`].
    ManualStop,
    /// The connect-retry timer fired.
    ConnectRetryExpired,
    /// The TCP connection came up.
    TcpConnected,
    /// The TCP connection attempt failed.
    TcpFailed,
    /// The established TCP connection closed or broke.
    TcpClosed,
    /// The peer's OPEN was acceptable.
    OpenAccepted,
    /// The peer's KEEPALIVE confirmed the session.
    KeepaliveReceived,
    /// The peer sent a NOTIFICATION.
    NotificationReceived,
    /// The hold timer expired.
    HoldTimerExpired,
    /// We detected a protocol error and sent a NOTIFICATION.
    ProtocolError,
}

/// What the driver must do or may report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// The state changed.
    StateChanged {
        /// Previous state.
        from: State,
        /// New state.
        to: State,
        /// Why.
        reason: Reason,
    },
    /// Open a TCP connection to the peer, then call `handle_connected` or
    /// `handle_connect_failed`. Any earlier connection or attempt is abandoned.
    Connect,
    /// Close the TCP connection (after writing everything `poll_transmit` returned).
    Disconnect,
}

/// The session timers (RFC 4271 §10), a closed set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Timer {
    ConnectRetry,
    Hold,
    Keepalive,
}

impl Timer {
    const ALL: [Timer; 3] = [Timer::ConnectRetry, Timer::Hold, Timer::Keepalive];

    fn index(self) -> usize {
        match self {
            Timer::ConnectRetry => 0,
            Timer::Hold => 1,
            Timer::Keepalive => 2,
        }
    }
}

/// Deadline per timer; `None` is stopped.
#[derive(Debug, Default, Clone)]
struct TimerTable([Option<Instant>; 3]);

impl TimerTable {
    fn set(&mut self, timer: Timer, at: Instant) {
        self.0[timer.index()] = Some(at);
    }

    fn stop(&mut self, timer: Timer) {
        self.0[timer.index()] = None;
    }

    fn get(&self, timer: Timer) -> Option<Instant> {
        self.0[timer.index()]
    }

    fn next_timeout(&self) -> Option<Instant> {
        self.0.iter().flatten().min().copied()
    }
}

/// What the two OPENs settled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Negotiated {
    /// Hold time in seconds (0: no hold timer, no keepalives).
    pub hold_time: u16,
    /// IPv4 unicast may be sent.
    pub ipv4: bool,
    /// IPv6 unicast may be sent.
    pub ipv6: bool,
    /// The peer handles four-octet AS numbers.
    pub four_octet_as: bool,
    /// The peer's BGP identifier.
    pub peer_router_id: Ipv4Addr,
}

/// Counters and state of one session, for metrics and `cairnctl`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionStats {
    /// Current state.
    pub state: State,
    /// When the session last reached Established (None unless Established now).
    pub established_since: Option<Instant>,
    /// Prefixes the peer currently has from us.
    pub prefixes_advertised: usize,
    /// Prefixes wanted but not sendable (family not negotiated, no next hop of that family,
    /// or attributes too large for an UPDATE).
    pub prefixes_unsendable: usize,
    /// Messages received, all types.
    pub messages_in: u64,
    /// Messages sent, all types.
    pub messages_out: u64,
    /// UPDATE messages sent.
    pub updates_out: u64,
    /// Why the session last went down.
    pub last_error: Option<DownReason>,
}

/// One BGP session, without IO. See the module documentation for the polling order.
#[derive(Debug)]
pub struct SessionFsm {
    config: SessionConfig,
    state: State,
    /// Whether the session is administratively started (automatic restart after errors).
    started: bool,
    timers: TimerTable,
    retry_interval: Duration,
    /// Local address of the current TCP connection.
    local_addr: Option<SocketAddr>,
    negotiated: Option<Negotiated>,
    rx: Vec<u8>,
    tx_notification: Option<Vec<u8>>,
    tx_open: Option<Vec<u8>>,
    tx_keepalive: bool,
    tx_updates: VecDeque<Vec<u8>>,
    /// The Adj-RIB-Out changed (or a session came up) since UPDATEs were last generated.
    rib_dirty: bool,
    end_of_rib_sent: bool,
    events: VecDeque<Event>,
    rib: AdjRibOut,
    stats: SessionStats,
}

impl SessionFsm {
    /// A session in Idle, not started.
    pub fn new(config: SessionConfig) -> Self {
        Self {
            retry_interval: config.connect_retry,
            config,
            state: State::Idle,
            started: false,
            timers: TimerTable::default(),
            local_addr: None,
            negotiated: None,
            rx: Vec::new(),
            tx_notification: None,
            tx_open: None,
            tx_keepalive: false,
            tx_updates: VecDeque::new(),
            rib_dirty: false,
            end_of_rib_sent: false,
            events: VecDeque::new(),
            rib: AdjRibOut::default(),
            stats: SessionStats {
                state: State::Idle,
                established_since: None,
                prefixes_advertised: 0,
                prefixes_unsendable: 0,
                messages_in: 0,
                messages_out: 0,
                updates_out: 0,
                last_error: None,
            },
        }
    }

    /// Current state.
    pub fn state(&self) -> State {
        self.state
    }

    /// The configuration.
    pub fn config(&self) -> &SessionConfig {
        &self.config
    }

    /// What the OPENs settled, while OpenConfirm or Established.
    pub fn negotiated(&self) -> Option<&Negotiated> {
        self.negotiated.as_ref()
    }

    /// Counters and state.
    pub fn stats(&self) -> SessionStats {
        let mut stats = self.stats.clone();
        stats.state = self.state;
        stats.prefixes_advertised = self.rib.advertised();
        stats
    }

    /// Starts the session (ManualStart with automatic restart): asks the driver to connect.
    pub fn handle_start(&mut self, now: Instant) {
        if self.started {
            return;
        }
        self.started = true;
        self.retry_interval = self.config.connect_retry;
        if self.state == State::Idle {
            self.begin_connect(now, Reason::ManualStart);
        }
    }

    /// Stops the session: a Cease (Administrative Shutdown) NOTIFICATION if connected, then
    /// Idle without restarting.
    pub fn handle_stop(&mut self, now: Instant) {
        self.started = false;
        match self.state {
            State::OpenSent | State::OpenConfirm | State::Established => {
                self.fail(
                    now,
                    SessionError::AdministrativeShutdown,
                    Reason::ManualStop,
                );
            }
            State::Connect => {
                self.events.push_back(Event::Disconnect);
                self.reset_session();
                self.transition(now, State::Idle, Reason::ManualStop);
            }
            State::Idle | State::Active => {
                self.timers.stop(Timer::ConnectRetry);
                if self.state != State::Idle {
                    self.transition(now, State::Idle, Reason::ManualStop);
                }
            }
        }
    }

    /// The TCP connection asked for by [`Event::Connect`] is up. Returns false when the
    /// session no longer wants it (the driver then drops it).
    #[must_use]
    pub fn handle_connected(&mut self, now: Instant, local: SocketAddr) -> bool {
        if self.state != State::Connect {
            return false;
        }
        self.local_addr = Some(local);
        self.timers.stop(Timer::ConnectRetry);
        self.timers.set(Timer::Hold, now + OPEN_HOLD_TIME);
        self.tx_open = Some(self.our_open().encode());
        self.transition(now, State::OpenSent, Reason::TcpConnected);
        true
    }

    /// The connection attempt failed (`error` is the OS error text).
    pub fn handle_connect_failed(&mut self, now: Instant, error: String) {
        if self.state != State::Connect {
            return;
        }
        self.stats.last_error = Some(DownReason::Transport(error));
        self.arm_retry(now);
        self.transition(now, State::Active, Reason::TcpFailed);
    }

    /// The TCP connection closed or broke (`error` is the OS error text, or "closed by peer").
    pub fn handle_closed(&mut self, now: Instant, error: String) {
        if !matches!(
            self.state,
            State::OpenSent | State::OpenConfirm | State::Established
        ) {
            return;
        }
        self.stats.last_error = Some(DownReason::Transport(error));
        self.go_down(now, Reason::TcpClosed);
    }

    /// Bytes read from the TCP connection.
    pub fn handle_bytes(&mut self, now: Instant, bytes: &[u8]) {
        if !matches!(
            self.state,
            State::OpenSent | State::OpenConfirm | State::Established
        ) {
            return;
        }
        self.rx.extend_from_slice(bytes);
        let mut consumed = 0;
        loop {
            let buf = &self.rx[consumed..];
            let (kind, len) = match wire::check_header(buf) {
                Ok(Some((kind, len))) if buf.len() >= len => (kind, len),
                Ok(_) => break,
                Err(error) => {
                    self.fail(now, error, Reason::ProtocolError);
                    return;
                }
            };
            let body = buf[HEADER_LEN..len].to_vec();
            consumed += len;
            self.stats.messages_in += 1;
            let before = self.state;
            if let Err(error) = self.handle_message(now, kind, &body) {
                self.fail(now, error, Reason::ProtocolError);
                return;
            }
            // A NOTIFICATION from the peer ends the connection and clears `rx`.
            if before != State::Idle && self.state == State::Idle {
                return;
            }
        }
        self.rx.drain(..consumed);
    }

    fn handle_message(
        &mut self,
        now: Instant,
        kind: MessageType,
        body: &[u8],
    ) -> Result<(), SessionError> {
        let unexpected = |state, message| SessionError::UnexpectedMessage { state, message };
        match (self.state, kind) {
            (_, MessageType::Notification) => {
                let n = Notification::parse(body)?;
                self.stats.last_error = Some(DownReason::Received {
                    code: n.code,
                    subcode: n.subcode,
                });
                self.go_down(now, Reason::NotificationReceived);
            }
            (State::OpenSent, MessageType::Open) => {
                let open = Open::parse(body)?;
                let negotiated = self.check_open(&open)?;
                self.tx_keepalive = true;
                self.arm_hold(now, negotiated.hold_time);
                self.negotiated = Some(negotiated);
                self.transition(now, State::OpenConfirm, Reason::OpenAccepted);
            }
            (State::OpenConfirm, MessageType::Keepalive) => {
                self.retry_interval = self.config.connect_retry;
                self.rib_dirty = true;
                self.end_of_rib_sent = false;
                self.reset_hold(now);
                self.transition(now, State::Established, Reason::KeepaliveReceived);
            }
            (State::Established, MessageType::Keepalive) => self.reset_hold(now),
            (State::Established, MessageType::Update) => {
                wire::check_update(body)?;
                self.reset_hold(now);
            }
            (State::Established, MessageType::RouteRefresh) => {
                let (afi, safi) = wire::parse_route_refresh(body)?;
                let negotiated = self.negotiated.as_ref();
                let ipv4 = negotiated.is_some_and(|n| n.ipv4);
                let ipv6 = negotiated.is_some_and(|n| n.ipv6);
                // Refreshes for families not negotiated are ignored (RFC 2918 §4).
                if safi == SAFI_UNICAST && ((afi == AFI_IPV4 && ipv4) || (afi == AFI_IPV6 && ipv6))
                {
                    self.rib.forget_family(afi == AFI_IPV6);
                    self.rib_dirty = true;
                }
            }
            (state, MessageType::Open) => return Err(unexpected(state, "OPEN")),
            (state, MessageType::Update) => return Err(unexpected(state, "UPDATE")),
            (state, MessageType::Keepalive) => return Err(unexpected(state, "KEEPALIVE")),
            (state, MessageType::RouteRefresh) => return Err(unexpected(state, "ROUTE-REFRESH")),
        }
        Ok(())
    }

    /// Validates the peer's OPEN against the configuration (RFC 4271 §6.2).
    fn check_open(&self, open: &Open) -> Result<Negotiated, SessionError> {
        if open.asn != self.config.peer_as {
            return Err(OpenError::BadPeerAs {
                expected: self.config.peer_as,
                got: open.asn,
            }
            .into());
        }
        if matches!(open.hold_time, 1 | 2) {
            return Err(OpenError::UnacceptableHoldTime(open.hold_time).into());
        }
        if open.router_id.is_unspecified()
            || (self.config.ibgp() && open.router_id == self.config.router_id)
        {
            return Err(OpenError::BadIdentifier(open.router_id).into());
        }
        // Without multiprotocol capabilities a peer speaks IPv4 unicast only (RFC 4760 §8).
        let (ipv4, ipv6) = if open.families.is_empty() {
            (true, false)
        } else {
            (
                open.families.contains(&(AFI_IPV4, SAFI_UNICAST)),
                open.families.contains(&(AFI_IPV6, SAFI_UNICAST)),
            )
        };
        Ok(Negotiated {
            hold_time: open.hold_time.min(self.config.hold_time),
            ipv4,
            ipv6,
            four_octet_as: open.four_octet_as,
            peer_router_id: open.router_id,
        })
    }

    fn our_open(&self) -> Open {
        Open {
            asn: self.config.local_as,
            hold_time: self.config.hold_time,
            router_id: self.config.router_id,
            families: vec![(AFI_IPV4, SAFI_UNICAST), (AFI_IPV6, SAFI_UNICAST)],
            route_refresh: true,
            four_octet_as: true,
            graceful_restart: self.config.graceful_restart,
        }
    }

    /// Timers that are due at `now` fire.
    pub fn handle_timeout(&mut self, now: Instant) {
        for timer in Timer::ALL {
            if self.timers.get(timer).is_some_and(|at| at <= now) {
                self.timers.stop(timer);
                self.on_timer(now, timer);
            }
        }
    }

    fn on_timer(&mut self, now: Instant, timer: Timer) {
        match timer {
            Timer::ConnectRetry => match self.state {
                State::Idle | State::Active if self.started => {
                    self.begin_connect(now, Reason::ConnectRetryExpired);
                }
                State::Connect => {
                    // The attempt took too long: abandon it and try again (§8.2.2, Connect).
                    self.arm_retry(now);
                    self.events.push_back(Event::Connect);
                }
                _ => {}
            },
            Timer::Hold => {
                if matches!(
                    self.state,
                    State::OpenSent | State::OpenConfirm | State::Established
                ) {
                    self.fail(
                        now,
                        SessionError::HoldTimerExpired,
                        Reason::HoldTimerExpired,
                    );
                }
            }
            Timer::Keepalive => {
                if matches!(self.state, State::OpenConfirm | State::Established) {
                    self.tx_keepalive = true;
                    // Re-armed when the KEEPALIVE is handed out by poll_transmit.
                }
            }
        }
    }

    /// Wants `prefix` announced with `attrs`; sent once Established (only the change).
    pub fn announce(&mut self, prefix: IpNet, attrs: RouteAttrs) {
        self.rib.set(prefix, attrs);
        self.rib_dirty = true;
    }

    /// Wants `prefix` withdrawn.
    pub fn withdraw(&mut self, prefix: &IpNet) {
        self.rib.remove(prefix);
        self.rib_dirty = true;
    }

    /// The next message to write, highest priority first: NOTIFICATION, OPEN, KEEPALIVE,
    /// UPDATE. UPDATEs are built from the Adj-RIB-Out difference when the queue runs empty.
    #[must_use]
    pub fn poll_transmit(&mut self, now: Instant) -> Option<Vec<u8>> {
        let msg = if let Some(n) = self.tx_notification.take() {
            n
        } else if let Some(open) = self.tx_open.take() {
            open
        } else if std::mem::take(&mut self.tx_keepalive) {
            wire::keepalive()
        } else {
            if self.tx_updates.is_empty() && self.rib_dirty && self.state == State::Established {
                self.build_updates();
            }
            let update = self.tx_updates.pop_front()?;
            self.stats.updates_out += 1;
            update
        };
        self.stats.messages_out += 1;
        if let Some(n) = self.negotiated.as_ref().filter(|n| n.hold_time > 0) {
            // Sending KEEPALIVE or UPDATE restarts the keepalive timer (§10).
            let keepalive = Duration::from_secs(u64::from(n.hold_time / 3).max(1));
            self.timers.set(Timer::Keepalive, now + keepalive);
        }
        Some(msg)
    }

    /// The next event for the driver.
    #[must_use]
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// When `handle_timeout` must next be called.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.timers.next_timeout()
    }

    /// Turns the Adj-RIB-Out difference into UPDATEs on the queue and records them as sent.
    fn build_updates(&mut self) {
        self.rib_dirty = false;
        let Some(negotiated) = self.negotiated.clone() else {
            return;
        };
        let session = SessionAttrs {
            local_as: self.config.local_as,
            ibgp: self.config.ibgp(),
            four_octet_as: negotiated.four_octet_as,
        };
        let diff = self.rib.diff();
        let (withdraw_v6, withdraw_v4): (Vec<IpNet>, Vec<IpNet>) = diff
            .withdraw
            .into_iter()
            .partition(|p| matches!(p, IpNet::V6(_)));
        self.tx_updates.extend(update::withdraw_v4(&withdraw_v4));
        self.tx_updates.extend(update::withdraw_v6(&withdraw_v6));
        for p in withdraw_v4.iter().chain(&withdraw_v6) {
            self.rib.mark_withdrawn(p);
        }
        // (is IPv6, attributes) → prefixes, so identical attributes share UPDATEs.
        let mut groups: std::collections::BTreeMap<(bool, RouteAttrs), Vec<IpNet>> =
            std::collections::BTreeMap::new();
        for (prefix, attrs) in diff.announce {
            groups
                .entry((matches!(prefix, IpNet::V6(_)), attrs))
                .or_default()
                .push(prefix);
        }
        let mut unsendable = 0;
        for ((ipv6, attrs), prefixes) in groups {
            let built = match (ipv6, self.next_hop(&attrs, ipv6)) {
                (false, Some(IpAddr::V4(nh))) if negotiated.ipv4 => {
                    update::announce_v4(&session, &attrs, nh, &prefixes)
                }
                (true, Some(IpAddr::V6(nh))) if negotiated.ipv6 => {
                    update::announce_v6(&session, &attrs, nh, &prefixes)
                }
                _ => {
                    unsendable += prefixes.len();
                    continue;
                }
            };
            match built {
                Ok(msgs) => {
                    self.tx_updates.extend(msgs);
                    for p in prefixes {
                        self.rib.mark_announced(p, attrs.clone());
                    }
                }
                Err(_) => unsendable += prefixes.len(),
            }
        }
        self.stats.prefixes_unsendable = unsendable;
        if self.config.graceful_restart.is_some() && !self.end_of_rib_sent {
            self.end_of_rib_sent = true;
            if negotiated.ipv4 {
                self.tx_updates.push_back(update::end_of_rib_v4());
            }
            if negotiated.ipv6 {
                self.tx_updates.push_back(update::end_of_rib_v6());
            }
        }
    }

    /// The next hop for a route: its own, else the configured one, else the session's local
    /// address when it is of the right family (and, for IPv6, not link-local).
    fn next_hop(&self, attrs: &RouteAttrs, ipv6: bool) -> Option<IpAddr> {
        if let Some(nh) = attrs.next_hop {
            return Some(nh);
        }
        let local = self.local_addr.map(|a| a.ip());
        if ipv6 {
            self.config.next_hop_v6.map(IpAddr::V6).or(match local {
                Some(IpAddr::V6(a))
                    if !a.is_unicast_link_local() && a.to_ipv4_mapped().is_none() =>
                {
                    Some(IpAddr::V6(a))
                }
                _ => None,
            })
        } else {
            self.config.next_hop_v4.map(IpAddr::V4).or(match local {
                Some(IpAddr::V4(a)) => Some(IpAddr::V4(a)),
                Some(IpAddr::V6(a)) => a.to_ipv4_mapped().map(IpAddr::V4),
                None => None,
            })
        }
    }

    fn begin_connect(&mut self, now: Instant, reason: Reason) {
        self.arm_retry(now);
        self.events.push_back(Event::Connect);
        self.transition(now, State::Connect, reason);
    }

    /// Arms the connect-retry timer with the current interval, then doubles the interval.
    fn arm_retry(&mut self, now: Instant) {
        self.timers
            .set(Timer::ConnectRetry, now + self.retry_interval);
        self.retry_interval = (self.retry_interval * 2).min(self.config.connect_retry_max);
    }

    fn arm_hold(&mut self, now: Instant, hold: u16) {
        if hold == 0 {
            self.timers.stop(Timer::Hold);
            self.timers.stop(Timer::Keepalive);
        } else {
            self.timers
                .set(Timer::Hold, now + Duration::from_secs(u64::from(hold)));
        }
    }

    fn reset_hold(&mut self, now: Instant) {
        if let Some(hold) = self.negotiated.as_ref().map(|n| n.hold_time) {
            self.arm_hold(now, hold);
        }
    }

    /// Sends the NOTIFICATION for `error`, closes the connection and goes Idle.
    fn fail(&mut self, now: Instant, error: SessionError, reason: Reason) {
        self.tx_notification = Some(Notification::from(&error).encode());
        self.stats.last_error = Some(DownReason::Sent(error));
        self.go_down(now, reason);
    }

    /// Leaves a connected state: close, forget the session, go Idle, retry later if started.
    fn go_down(&mut self, now: Instant, reason: Reason) {
        self.events.push_back(Event::Disconnect);
        self.reset_session();
        if self.started {
            self.arm_retry(now);
        }
        self.transition(now, State::Idle, reason);
    }

    fn reset_session(&mut self) {
        self.rx.clear();
        self.tx_open = None;
        self.tx_keepalive = false;
        self.tx_updates.clear();
        self.timers.stop(Timer::Hold);
        self.timers.stop(Timer::Keepalive);
        self.timers.stop(Timer::ConnectRetry);
        self.negotiated = None;
        self.local_addr = None;
        self.rib.forget_sent();
    }

    /// The one place where the state changes.
    fn transition(&mut self, now: Instant, to: State, reason: Reason) {
        let from = self.state;
        self.state = to;
        self.stats.established_since = (to == State::Established).then_some(now);
        self.events
            .push_back(Event::StateChanged { from, to, reason });
    }
}

#[cfg(test)]
mod tests;
