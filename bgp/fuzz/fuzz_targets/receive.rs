//! Fuzzes the whole receive path: arbitrary bytes from the peer into a session in OpenSent or
//! Established (framing, header checks, OPEN/NOTIFICATION/ROUTE-REFRESH parsing, UPDATE length
//! checks), then everything the session wants to send. It must never panic, and whatever it
//! sends must be well-formed.
#![no_main]

use std::net::Ipv4Addr;
use std::time::Instant;

use cairn_bgp::wire::{self, Open, AFI_IPV4, AFI_IPV6, SAFI_UNICAST};
use cairn_bgp::{RouteAttrs, SessionConfig, SessionFsm};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let now = Instant::now();
    let mut fsm = SessionFsm::new(SessionConfig::new(65001, 65000, Ipv4Addr::new(192, 0, 2, 1)));
    fsm.announce("203.0.113.1/32".parse().unwrap(), RouteAttrs::default());
    fsm.announce("2001:db8::1/128".parse().unwrap(), RouteAttrs::default());
    fsm.handle_start(now);
    let _ = fsm.handle_connected(now, "192.0.2.1:40000".parse().unwrap());
    if mode & 1 == 1 {
        let open = Open {
            asn: 65000,
            hold_time: 90,
            router_id: Ipv4Addr::new(192, 0, 2, 254),
            families: vec![(AFI_IPV4, SAFI_UNICAST), (AFI_IPV6, SAFI_UNICAST)],
            route_refresh: true,
            four_octet_as: true,
            graceful_restart: None,
        };
        fsm.handle_bytes(now, &open.encode());
        fsm.handle_bytes(now, &wire::keepalive());
    }
    // Split the stream where the mode byte says, to exercise reassembly.
    let cut = usize::from(mode >> 1).min(rest.len());
    for chunk in [&rest[..cut], &rest[cut..]] {
        fsm.handle_bytes(now, chunk);
        while let Some(msg) = fsm.poll_transmit(now) {
            let (_, len) = wire::check_header(&msg)
                .expect("we send valid headers")
                .expect("we send whole messages");
            assert_eq!(len, msg.len());
        }
        while fsm.poll_event().is_some() {}
    }
});
