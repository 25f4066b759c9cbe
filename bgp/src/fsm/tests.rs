//! FSM tests: sessions driven in memory with simulated time (jumping to the next timeout, never
//! sleeping), and the receive-path guards.

use super::*;
use crate::error::HeaderError;
use crate::wire::check_header;

fn v4(s: &str) -> Ipv4Addr {
    s.parse().unwrap()
}

fn net(s: &str) -> IpNet {
    s.parse().unwrap()
}

fn local() -> SocketAddr {
    "192.0.2.1:40000".parse().unwrap()
}

/// Drains a session: messages sent (in order) and events.
fn drain(fsm: &mut SessionFsm, now: Instant) -> (Vec<Vec<u8>>, Vec<Event>) {
    let mut msgs = Vec::new();
    while let Some(m) = fsm.poll_transmit(now) {
        msgs.push(m);
    }
    let mut events = Vec::new();
    while let Some(e) = fsm.poll_event() {
        events.push(e);
    }
    (msgs, events)
}

fn kind(msg: &[u8]) -> MessageType {
    check_header(msg).unwrap().unwrap().0
}

fn notification(msg: &[u8]) -> (u8, u8) {
    assert_eq!(kind(msg), MessageType::Notification);
    (msg[19], msg[20])
}

fn peer_open(asn: u32, hold: u16, id: &str) -> Vec<u8> {
    Open {
        asn,
        hold_time: hold,
        router_id: v4(id),
        families: vec![(AFI_IPV4, SAFI_UNICAST), (AFI_IPV6, SAFI_UNICAST)],
        route_refresh: true,
        four_octet_as: true,
        graceful_restart: None,
    }
    .encode()
}

fn config() -> SessionConfig {
    SessionConfig::new(65001, 65000, v4("192.0.2.1"))
}

/// A session brought to OpenSent at `t0`, its OPEN and events drained.
fn open_sent(config: SessionConfig, t0: Instant) -> SessionFsm {
    let mut fsm = SessionFsm::new(config);
    fsm.handle_start(t0);
    assert_eq!(fsm.poll_event(), Some(Event::Connect));
    assert!(fsm.handle_connected(t0, local()));
    let (msgs, _) = drain(&mut fsm, t0);
    assert_eq!(msgs.len(), 1);
    assert_eq!(kind(&msgs[0]), MessageType::Open);
    fsm
}

/// A session brought to Established with a peer proposing `hold`.
fn established(config: SessionConfig, t0: Instant, hold: u16) -> SessionFsm {
    let mut fsm = open_sent(config, t0);
    fsm.handle_bytes(t0, &peer_open(65000, hold, "192.0.2.254"));
    assert_eq!(fsm.state(), State::OpenConfirm);
    fsm.handle_bytes(t0, &wire::keepalive());
    assert_eq!(fsm.state(), State::Established);
    fsm
}

#[test]
fn start_connects_and_a_full_handshake_reaches_established() {
    let t0 = Instant::now();
    let mut fsm = SessionFsm::new(config());
    fsm.handle_start(t0);
    let (_, events) = drain(&mut fsm, t0);
    assert_eq!(
        events,
        vec![
            Event::Connect,
            Event::StateChanged {
                from: State::Idle,
                to: State::Connect,
                reason: Reason::ManualStart
            }
        ]
    );
    assert!(fsm.handle_connected(t0, local()));
    let (msgs, _) = drain(&mut fsm, t0);
    assert_eq!(kind(&msgs[0]), MessageType::Open);
    fsm.handle_bytes(t0, &peer_open(65000, 90, "192.0.2.254"));
    let (msgs, events) = drain(&mut fsm, t0);
    assert_eq!(msgs, vec![wire::keepalive()]);
    assert!(events.contains(&Event::StateChanged {
        from: State::OpenSent,
        to: State::OpenConfirm,
        reason: Reason::OpenAccepted
    }));
    fsm.handle_bytes(t0, &wire::keepalive());
    assert_eq!(fsm.state(), State::Established);
    assert_eq!(fsm.stats().established_since, Some(t0));
    assert_eq!(fsm.stats().messages_in, 2);
}

#[test]
fn messages_split_across_reads_are_reassembled() {
    let t0 = Instant::now();
    let mut fsm = open_sent(config(), t0);
    let mut bytes = peer_open(65000, 90, "192.0.2.254");
    bytes.extend_from_slice(&wire::keepalive());
    for chunk in bytes.chunks(7) {
        fsm.handle_bytes(t0, chunk);
    }
    assert_eq!(fsm.state(), State::Established);
}

#[test]
fn hold_time_is_the_minimum_and_keepalive_a_third_of_it() {
    let t0 = Instant::now();
    let mut fsm = established(config(), t0, 30);
    assert_eq!(fsm.negotiated().unwrap().hold_time, 30);
    let _ = drain(&mut fsm, t0);
    // Next timeout is the keepalive, 10 s after the last message sent.
    assert_eq!(fsm.poll_timeout(), Some(t0 + Duration::from_secs(10)));
    let t1 = fsm.poll_timeout().unwrap();
    fsm.handle_timeout(t1);
    let (msgs, _) = drain(&mut fsm, t1);
    assert_eq!(msgs, vec![wire::keepalive()]);
}

#[test]
fn hold_timer_expiry_sends_notification_4_and_reconnects_after_backoff() {
    let t0 = Instant::now();
    let mut fsm = established(config(), t0, 9);
    let _ = drain(&mut fsm, t0);
    // Jump from timeout to timeout; the peer stays silent. Keepalives go out every 3 s
    // until the hold timer (9 s after the peer's last KEEPALIVE) fires.
    let mut now = t0;
    let mut sent = Vec::new();
    while fsm.state() == State::Established {
        now = fsm.poll_timeout().unwrap();
        fsm.handle_timeout(now);
        let (msgs, _) = drain(&mut fsm, now);
        sent.extend(msgs);
    }
    assert_eq!(now, t0 + Duration::from_secs(9));
    assert_eq!(notification(sent.last().unwrap()), (4, 0));
    assert_eq!(
        fsm.stats().last_error,
        Some(DownReason::Sent(SessionError::HoldTimerExpired))
    );
    // Reconnect when the connect-retry timer fires (1 s, reset on Established).
    assert_eq!(fsm.poll_timeout(), Some(now + Duration::from_secs(1)));
    fsm.handle_timeout(now + Duration::from_secs(1));
    assert_eq!(fsm.state(), State::Connect);
    assert_eq!(fsm.poll_event(), Some(Event::Connect));
}

#[test]
fn hold_time_zero_disables_both_timers() {
    let t0 = Instant::now();
    let mut fsm = established(config(), t0, 0);
    let _ = drain(&mut fsm, t0);
    assert_eq!(fsm.poll_timeout(), None);
}

#[test]
fn connect_failures_back_off_exponentially_up_to_the_maximum() {
    let t0 = Instant::now();
    let mut cfg = config();
    cfg.connect_retry_max = Duration::from_secs(4);
    let mut fsm = SessionFsm::new(cfg);
    fsm.handle_start(t0);
    let mut now = t0;
    let mut waits = Vec::new();
    for _ in 0..5 {
        assert_eq!(fsm.state(), State::Connect);
        fsm.handle_connect_failed(now, "refused".into());
        assert_eq!(fsm.state(), State::Active);
        let next = fsm.poll_timeout().unwrap();
        waits.push(next - now);
        now = next;
        fsm.handle_timeout(now);
    }
    let secs: Vec<u64> = waits.iter().map(Duration::as_secs).collect();
    // The first interval (1 s) was used by the connect attempt itself.
    assert_eq!(secs, vec![2, 4, 4, 4, 4]);
}

#[test]
fn stop_when_established_sends_cease_administrative_shutdown_and_stays_idle() {
    let t0 = Instant::now();
    let mut fsm = established(config(), t0, 90);
    let _ = drain(&mut fsm, t0);
    fsm.handle_stop(t0);
    let (msgs, events) = drain(&mut fsm, t0);
    assert_eq!(msgs.len(), 1);
    assert_eq!(notification(&msgs[0]), (6, 2));
    assert!(events.contains(&Event::Disconnect));
    assert_eq!(fsm.state(), State::Idle);
    assert_eq!(fsm.poll_timeout(), None);
}

#[test]
fn notification_is_sent_before_queued_updates_and_updates_are_dropped() {
    let t0 = Instant::now();
    let mut fsm = established(config(), t0, 90);
    fsm.announce(net("203.0.113.1/32"), RouteAttrs::default());
    fsm.handle_bytes(t0, &[0u8; 19]); // bad marker
    let (msgs, _) = drain(&mut fsm, t0);
    assert_eq!(msgs.len(), 1);
    assert_eq!(notification(&msgs[0]), (1, 1));
}

#[test]
fn queue_priority_is_notification_open_keepalive_update() {
    let t0 = Instant::now();
    let mut fsm = established(config(), t0, 90);
    fsm.announce(net("203.0.113.1/32"), RouteAttrs::default());
    // KEEPALIVE (queued when the OPEN arrived) comes before the UPDATE.
    let kinds: Vec<MessageType> = drain(&mut fsm, t0).0.iter().map(|m| kind(m)).collect();
    assert_eq!(kinds, vec![MessageType::Keepalive, MessageType::Update]);
}

fn open_rejection(config: SessionConfig, open: Vec<u8>) -> ((u8, u8), State) {
    let t0 = Instant::now();
    let mut fsm = open_sent(config, t0);
    fsm.handle_bytes(t0, &open);
    let (msgs, _) = drain(&mut fsm, t0);
    (notification(&msgs[0]), fsm.state())
}

#[test]
fn open_from_the_wrong_as_is_bad_peer_as() {
    assert_eq!(
        open_rejection(config(), peer_open(65099, 90, "192.0.2.254")),
        ((2, 2), State::Idle)
    );
}

#[test]
fn open_with_hold_time_two_is_unacceptable_hold_time() {
    assert_eq!(
        open_rejection(config(), peer_open(65000, 2, "192.0.2.254")).0,
        (2, 6)
    );
}

#[test]
fn open_with_zero_router_id_or_our_id_on_ibgp_is_bad_identifier() {
    assert_eq!(
        open_rejection(config(), peer_open(65000, 90, "0.0.0.0")).0,
        (2, 3)
    );
    let ibgp = SessionConfig::new(65000, 65000, v4("192.0.2.1"));
    assert_eq!(
        open_rejection(ibgp, peer_open(65000, 90, "192.0.2.1")).0,
        (2, 3)
    );
}

#[test]
fn open_with_version_3_gets_unsupported_version_with_our_version() {
    let mut open = peer_open(65000, 90, "192.0.2.254");
    open[19] = 3;
    let t0 = Instant::now();
    let mut fsm = open_sent(config(), t0);
    fsm.handle_bytes(t0, &open);
    let (msgs, _) = drain(&mut fsm, t0);
    assert_eq!(&msgs[0][19..], &[2, 1, 0, 4]);
}

#[test]
fn update_before_established_is_an_fsm_error() {
    let t0 = Instant::now();
    let mut fsm = open_sent(config(), t0);
    fsm.handle_bytes(t0, &update::end_of_rib_v4());
    let (msgs, _) = drain(&mut fsm, t0);
    assert_eq!(notification(&msgs[0]), (5, 1));
}

#[test]
fn peer_notification_takes_the_session_down_without_answering() {
    let t0 = Instant::now();
    let mut fsm = established(config(), t0, 90);
    let _ = drain(&mut fsm, t0);
    let cease = Notification {
        code: 6,
        subcode: 4,
        data: vec![],
    };
    fsm.handle_bytes(t0, &cease.encode());
    let (msgs, events) = drain(&mut fsm, t0);
    assert!(msgs.is_empty());
    assert!(events.contains(&Event::Disconnect));
    assert_eq!(
        fsm.stats().last_error,
        Some(DownReason::Received {
            code: 6,
            subcode: 4
        })
    );
}

#[test]
fn short_header_length_is_answered_with_bad_message_length() {
    let t0 = Instant::now();
    let mut fsm = established(config(), t0, 90);
    let _ = drain(&mut fsm, t0);
    let mut msg = vec![0xff; 16];
    msg.extend_from_slice(&[0, 18, 4]);
    fsm.handle_bytes(t0, &msg);
    let (msgs, _) = drain(&mut fsm, t0);
    assert_eq!(&msgs[0][19..], &[1, 2, 0, 18]);
    assert_eq!(
        fsm.stats().last_error,
        Some(DownReason::Sent(HeaderError::BadLength(18).into()))
    );
}

#[test]
fn malformed_mp_reach_in_an_update_is_ignored_without_panic() {
    let t0 = Instant::now();
    let mut fsm = established(config(), t0, 90);
    let _ = drain(&mut fsm, t0);
    // MP_REACH claiming a 200-byte next hop inside a 10-byte attribute: never decoded.
    let attrs = [0x80, 14, 10, 0, 2, 1, 200, 1, 2, 3, 4, 5, 6];
    let mut msg = vec![0xff; 16];
    msg.extend_from_slice(&((19 + 4 + attrs.len()) as u16).to_be_bytes());
    msg.push(2);
    msg.extend_from_slice(&[0, 0, 0, attrs.len() as u8]);
    msg.extend_from_slice(&attrs);
    fsm.handle_bytes(t0, &msg);
    assert_eq!(fsm.state(), State::Established);
}

#[test]
fn update_with_overrunning_attribute_length_is_malformed_attribute_list() {
    let t0 = Instant::now();
    let mut fsm = established(config(), t0, 90);
    let _ = drain(&mut fsm, t0);
    let mut msg = vec![0xff; 16];
    msg.extend_from_slice(&[0, 25, 2, 0, 0, 0, 9, 1, 2]);
    fsm.handle_bytes(t0, &msg);
    let (msgs, _) = drain(&mut fsm, t0);
    assert_eq!(notification(&msgs[0]), (3, 1));
}

fn updates(fsm: &mut SessionFsm, now: Instant) -> Vec<Vec<u8>> {
    drain(fsm, now)
        .0
        .into_iter()
        .filter(|m| kind(m) == MessageType::Update)
        .collect()
}

#[test]
fn initial_table_goes_out_on_established_and_a_change_sends_only_the_difference() {
    let t0 = Instant::now();
    let mut fsm = open_sent(config(), t0);
    fsm.announce(net("203.0.113.1/32"), RouteAttrs::default());
    fsm.announce(net("203.0.113.2/32"), RouteAttrs::default());
    fsm.handle_bytes(t0, &peer_open(65000, 90, "192.0.2.254"));
    assert!(
        updates(&mut fsm, t0).is_empty(),
        "nothing before Established"
    );
    fsm.handle_bytes(t0, &wire::keepalive());
    let session = SessionAttrs {
        local_as: 65001,
        ibgp: false,
        four_octet_as: true,
    };
    let nh = v4("192.0.2.1");
    assert_eq!(
        updates(&mut fsm, t0),
        update::announce_v4(
            &session,
            &RouteAttrs::default(),
            nh,
            &[net("203.0.113.1/32"), net("203.0.113.2/32")]
        )
        .unwrap()
    );
    fsm.withdraw(&net("203.0.113.1/32"));
    fsm.announce(net("203.0.113.3/32"), RouteAttrs::default());
    let mut want = update::withdraw_v4(&[net("203.0.113.1/32")]);
    want.extend(
        update::announce_v4(
            &session,
            &RouteAttrs::default(),
            nh,
            &[net("203.0.113.3/32")],
        )
        .unwrap(),
    );
    assert_eq!(updates(&mut fsm, t0), want);
    assert_eq!(fsm.stats().prefixes_advertised, 2);
}

#[test]
fn reconnect_resends_exactly_the_current_table() {
    let t0 = Instant::now();
    let mut fsm = established(config(), t0, 90);
    fsm.announce(net("203.0.113.1/32"), RouteAttrs::default());
    fsm.announce(net("203.0.113.2/32"), RouteAttrs::default());
    let _ = drain(&mut fsm, t0);
    fsm.handle_closed(t0, "reset".into());
    fsm.withdraw(&net("203.0.113.1/32"));
    let t1 = fsm.poll_timeout().unwrap();
    fsm.handle_timeout(t1);
    assert!(fsm.handle_connected(t1, local()));
    fsm.handle_bytes(t1, &peer_open(65000, 90, "192.0.2.254"));
    fsm.handle_bytes(t1, &wire::keepalive());
    let sent = updates(&mut fsm, t1);
    assert_eq!(sent.len(), 1);
    assert!(sent[0].ends_with(&[32, 203, 0, 113, 2]));
    assert_eq!(fsm.stats().prefixes_advertised, 1);
}

#[test]
fn route_refresh_resends_everything_of_that_family() {
    let t0 = Instant::now();
    let mut fsm = established(config(), t0, 90);
    fsm.announce(net("203.0.113.1/32"), RouteAttrs::default());
    let first = updates(&mut fsm, t0);
    let mut refresh = vec![0xff; 16];
    refresh.extend_from_slice(&[0, 23, 5, 0, 1, 0, 1]);
    fsm.handle_bytes(t0, &refresh);
    assert_eq!(updates(&mut fsm, t0), first);
}

#[test]
fn graceful_restart_sends_end_of_rib_after_the_initial_table_only() {
    let t0 = Instant::now();
    let mut cfg = config();
    cfg.graceful_restart = Some(GracefulRestart {
        restart_time: 120,
        forwarding_preserved: true,
    });
    let mut fsm = established(cfg, t0, 90);
    fsm.announce(net("203.0.113.1/32"), RouteAttrs::default());
    let sent = updates(&mut fsm, t0);
    assert_eq!(sent.len(), 3);
    assert_eq!(sent[1], update::end_of_rib_v4());
    assert_eq!(sent[2], update::end_of_rib_v6());
    fsm.announce(net("203.0.113.2/32"), RouteAttrs::default());
    assert_eq!(updates(&mut fsm, t0).len(), 1);
}

#[test]
fn ipv6_prefix_over_ipv4_session_needs_a_configured_v6_next_hop() {
    let t0 = Instant::now();
    let mut fsm = established(config(), t0, 90);
    fsm.announce(net("2001:db8::5/128"), RouteAttrs::default());
    assert!(updates(&mut fsm, t0).is_empty());
    assert_eq!(fsm.stats().prefixes_unsendable, 1);

    let mut cfg = config();
    cfg.next_hop_v6 = Some("2001:db8::1".parse().unwrap());
    let mut fsm = established(cfg, t0, 90);
    fsm.announce(net("2001:db8::5/128"), RouteAttrs::default());
    let sent = updates(&mut fsm, t0);
    assert_eq!(sent.len(), 1);
    let nh: Ipv6Addr = "2001:db8::1".parse().unwrap();
    assert!(sent[0].windows(16).any(|w| w == nh.octets()));
    assert_eq!(fsm.stats().prefixes_advertised, 1);
}

#[test]
fn ipv6_is_not_sent_to_a_peer_without_the_ipv6_capability() {
    let t0 = Instant::now();
    let mut cfg = config();
    cfg.next_hop_v6 = Some("2001:db8::1".parse().unwrap());
    let mut fsm = open_sent(cfg, t0);
    let open = Open {
        asn: 65000,
        hold_time: 90,
        router_id: v4("192.0.2.254"),
        families: vec![],
        route_refresh: false,
        four_octet_as: true,
        graceful_restart: None,
    };
    fsm.handle_bytes(t0, &open.encode());
    fsm.handle_bytes(t0, &wire::keepalive());
    fsm.announce(net("2001:db8::5/128"), RouteAttrs::default());
    fsm.announce(net("203.0.113.5/32"), RouteAttrs::default());
    assert_eq!(updates(&mut fsm, t0).len(), 1);
    assert_eq!(fsm.stats().prefixes_unsendable, 1);
}

mod fuzzish {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Whatever the peer sends, the session never panics, and if it leaves Established it
        /// sent a NOTIFICATION or received one.
        #[test]
        fn arbitrary_peer_bytes_never_panic(chunks in proptest::collection::vec(
            proptest::collection::vec(any::<u8>(), 0..64), 0..8)) {
            let t0 = Instant::now();
            let mut fsm = established(config(), t0, 90);
            let _ = drain(&mut fsm, t0);
            for chunk in chunks {
                let mut framed = vec![0xff; 16];
                framed.extend_from_slice(&((18 + chunk.len()) as u16).to_be_bytes());
                framed.extend_from_slice(&chunk);
                fsm.handle_bytes(t0, &framed);
                let _ = drain(&mut fsm, t0);
            }
            prop_assert!(fsm.state() == State::Established || fsm.stats().last_error.is_some());
        }
    }
}
