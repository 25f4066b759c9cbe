//! End-to-end tests against real kernels: a client namespace and two node namespaces (A, B)
//! on one Linux bridge (in a fourth namespace). The announcer runs in A and/or B; the client's
//! kernel neighbour table, `arping`, `ndisc6` and raw frames written from the client check what
//! goes on the wire.

use std::net::IpAddr;
use std::process::Output;
use std::time::{Duration, Instant};

use cairn_arp::frames;
use cairn_arp::sys;
use cairn_arp::{InterfaceSelection, L2Config, L2Error, MacAddr};
use cairn_e2e::netns::Netns;

mod common;

use common::{eth0, lab, CLIENT4, CLIENT6};

const VIP4: &str = "192.0.2.100";
const VIP6: &str = "2001:db8::64";

fn vip4() -> IpAddr {
    VIP4.parse().unwrap()
}

fn vip6() -> IpAddr {
    VIP6.parse().unwrap()
}

/// The MAC the client's kernel has for `ip`, if any.
fn neighbour(client: &Netns, ip: &str) -> Option<String> {
    let out = client
        .exec(&["ip", "neigh", "show", ip, "dev", "eth0"])
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let mut words = text.split_whitespace();
    words.find(|w| *w == "lladdr")?;
    words.next().map(str::to_lowercase)
}

/// Polls `check` every 20 ms until it holds or `limit` passes.
fn eventually(limit: Duration, mut check: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    loop {
        if check() {
            return true;
        }
        if start.elapsed() > limit {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
    .to_lowercase()
}

fn arping(client: &Netns, ip: &str, count: &str) -> Output {
    client
        .command(&["arping", "-c", count, "-w", "2", "-i", "eth0", ip])
        .output()
        .expect("run arping")
}

fn ndisc6(client: &Netns, ip: &str) -> Output {
    client
        .command(&["ndisc6", "-m", "-n", "-r", "2", "-w", "800", ip, "eth0"])
        .output()
        .expect("run ndisc6")
}

/// The IPv6 multicast groups joined on eth0 (`ip -6 maddr`).
fn joined(ns: &Netns) -> String {
    let out = ns
        .ip(&["-6", "maddr", "show", "dev", "eth0"])
        .expect("ip maddr");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn mac_of(ns: &Netns) -> String {
    MacAddr(ns.mac("eth0").expect("mac")).to_string()
}

#[test]
fn ipv4_burst_teaches_the_client_and_moving_the_vip_flips_its_entry() {
    let lab = lab();
    let (mac_a, mac_b) = (mac_of(&lab.a), mac_of(&lab.b));
    assert_eq!(neighbour(&lab.client, VIP4), None);

    let node_a = lab.announcer(&lab.a, eth0()).expect("announcer A");
    let node_b = lab.announcer(&lab.b, eth0()).expect("announcer B");
    node_a.announce("eth0", vip4()).expect("announce on A");
    assert!(
        eventually(Duration::from_secs(5), || neighbour(&lab.client, VIP4)
            .as_deref()
            == Some(mac_a.as_str())),
        "client never learned {VIP4} -> {mac_a} from A's burst"
    );
    let reply = arping(&lab.client, VIP4, "1");
    assert!(reply.status.success(), "arping failed: {}", text(&reply));
    assert!(text(&reply).contains(&mac_a), "{}", text(&reply));
    let counters = node_a.counters()["eth0"];
    assert!(counters.gratuitous_sent >= 2, "{counters:?}");
    assert!(counters.replies_sent >= 1, "{counters:?}");
    assert!(counters.requests_received >= counters.replies_sent);

    // Move: A gives the VIP up, B takes it.
    assert!(node_a.withdraw("eth0", vip4()).expect("withdraw on A"));
    let a_replies = node_a.counters()["eth0"].replies_sent;
    let a_requests = node_a.counters()["eth0"].requests_received;
    node_b.announce("eth0", vip4()).expect("announce on B");
    assert!(
        eventually(Duration::from_secs(5), || neighbour(&lab.client, VIP4)
            .as_deref()
            == Some(mac_b.as_str())),
        "client entry never flipped to B ({mac_b}): {:?}",
        neighbour(&lab.client, VIP4)
    );
    let reply = arping(&lab.client, VIP4, "3");
    let said = text(&reply);
    assert!(reply.status.success(), "arping failed: {said}");
    assert!(said.contains(&mac_b), "{said}");
    assert!(!said.contains(&mac_a), "A still answers: {said}");
    let after = node_a.counters()["eth0"];
    assert!(after.requests_received > a_requests, "A saw no request");
    assert_eq!(after.replies_sent, a_replies, "A replied after withdraw");
}

#[test]
fn ipv6_burst_teaches_the_client_and_moving_the_vip_flips_its_entry() {
    let lab = lab();
    let (mac_a, mac_b) = (mac_of(&lab.a), mac_of(&lab.b));
    let node_a = lab.announcer(&lab.a, eth0()).expect("announcer A");
    let node_b = lab.announcer(&lab.b, eth0()).expect("announcer B");
    node_a.announce("eth0", vip6()).expect("announce on A");
    assert!(
        eventually(Duration::from_secs(5), || neighbour(&lab.client, VIP6)
            .as_deref()
            == Some(mac_a.as_str())),
        "client never learned {VIP6} -> {mac_a}"
    );
    // ndisc6 multicasts a NS to the solicited-node group and prints every NA it gets.
    let reply = ndisc6(&lab.client, VIP6);
    assert!(reply.status.success(), "ndisc6 failed: {}", text(&reply));
    assert!(text(&reply).contains(&mac_a), "{}", text(&reply));
    assert!(node_a.counters()["eth0"].replies_sent >= 1);

    assert!(
        joined(&lab.a).contains("ff02::1:ff00:64"),
        "A did not join the solicited-node group: {}",
        joined(&lab.a)
    );

    assert!(node_a.withdraw("eth0", vip6()).expect("withdraw on A"));
    assert!(
        !joined(&lab.a).contains("ff02::1:ff00:64"),
        "A kept the solicited-node group after withdraw"
    );
    node_b.announce("eth0", vip6()).expect("announce on B");
    assert!(
        eventually(Duration::from_secs(5), || neighbour(&lab.client, VIP6)
            .as_deref()
            == Some(mac_b.as_str())),
        "client entry never flipped to B ({mac_b}): {:?}",
        neighbour(&lab.client, VIP6)
    );
    let reply = ndisc6(&lab.client, VIP6);
    let said = text(&reply);
    assert!(reply.status.success(), "ndisc6 failed: {said}");
    assert!(said.contains(&mac_b), "{said}");
    assert!(!said.contains(&mac_a), "A still answers: {said}");
}

/// Sends frames from the client's eth0 with a raw AF_PACKET socket.
fn inject(client: &Netns, frames: Vec<(u16, Vec<u8>)>) {
    let socket = common::packet_socket(client, sys::ETH_P_ARP);
    for (ethertype, frame) in frames {
        socket.send(&frame, ethertype).expect("send");
    }
}

#[test]
fn non_owned_addresses_and_malformed_frames_get_no_reply_and_are_counted() {
    let lab = lab();
    let client_mac = MacAddr(lab.client.mac("eth0").expect("mac"));
    let node_a = lab.announcer(&lab.a, eth0()).expect("announcer A");
    node_a.announce("eth0", vip4()).expect("announce v4");
    node_a.announce("eth0", vip6()).expect("announce v6");

    let other = arping(&lab.client, "192.0.2.101", "1");
    assert!(
        !other.status.success(),
        "non-owned answered: {}",
        text(&other)
    );
    let other6 = ndisc6(&lab.client, "2001:db8::65");
    assert!(
        !other6.status.success(),
        "non-owned answered: {}",
        text(&other6)
    );
    let base = node_a.counters()["eth0"];
    assert_eq!(base.replies_sent, 0);
    assert!(base.requests_received >= 2, "{base:?}");

    let request = frames::arp_request(client_mac, CLIENT4.parse().unwrap(), VIP4.parse().unwrap());
    let solicit =
        frames::neighbor_solicit(client_mac, CLIENT6.parse().unwrap(), VIP6.parse().unwrap());
    let mut bad = Vec::new();
    bad.push((sys::ETH_P_ARP, request[..30].to_vec())); // truncated ARP
    for (at, value) in [(15usize, 6u8), (16, 0x86), (18, 8)] {
        // hardware type 6, protocol type 0x86.., hardware length 8
        let mut frame = request.clone();
        frame[at] = value;
        frame.resize(64, 0);
        bad.push((sys::ETH_P_ARP, frame));
    }
    let mut bad_sum = solicit.clone();
    bad_sum[14 + 40 + 2] ^= 0x5a;
    bad.push((sys::ETH_P_IPV6, bad_sum));
    let mut bad_hops = solicit.clone();
    bad_hops[14 + 7] = 64;
    bad.push((sys::ETH_P_IPV6, bad_hops));
    let injected = bad.len() as u64;
    inject(&lab.client, bad);

    assert!(
        eventually(Duration::from_secs(5), || node_a.counters()["eth0"]
            .malformed_dropped
            == injected),
        "malformed counter: {:?}",
        node_a.counters()["eth0"]
    );
    let after = node_a.counters()["eth0"];
    assert_eq!(after.replies_sent, 0, "a malformed frame was answered");
    assert_eq!(after.requests_received, base.requests_received);

    // The well-formed originals are answered, so the socket path works for both families.
    inject(
        &lab.client,
        vec![(sys::ETH_P_ARP, request), (sys::ETH_P_IPV6, solicit)],
    );
    assert!(eventually(Duration::from_secs(5), || node_a.counters()
        ["eth0"]
        .replies_sent
        == 2));
}

#[test]
fn link_down_and_up_are_reported_and_up_announces_again() {
    let lab = lab();
    let node_a = lab.announcer(&lab.a, eth0()).expect("announcer A");
    let mut events = node_a.link_events();
    node_a.announce("eth0", vip4()).expect("announce");
    let next_event = |events: &mut tokio::sync::broadcast::Receiver<_>| {
        lab.runtime
            .block_on(async { tokio::time::timeout(Duration::from_secs(5), events.recv()).await })
            .expect("no link event within 5 s")
            .expect("event channel")
    };

    lab.a.ip(&["link", "set", "eth0", "down"]).expect("down");
    let down: cairn_arp::LinkEvent = next_event(&mut events);
    assert_eq!((down.interface.as_str(), down.up), ("eth0", false));
    assert!(!node_a.interfaces()[0].up);

    let before = node_a.counters()["eth0"].gratuitous_sent;
    lab.a.ip(&["link", "set", "eth0", "up"]).expect("up");
    let up = next_event(&mut events);
    assert_eq!((up.interface.as_str(), up.up), ("eth0", true));
    assert!(
        eventually(Duration::from_secs(5), || node_a.counters()["eth0"]
            .gratuitous_sent
            > before),
        "no announcement after link up"
    );
    assert_eq!(node_a.interfaces()[0].owned, vec![vip4()]);
}

#[test]
fn all_eligible_picks_up_broadcast_interfaces_only_and_unknown_names_fail() {
    let lab = lab();
    // A second veth in A, left down: not eligible; lo: loopback.
    lab.a.veth("eth1", &lab.b, "eth1").expect("second veth");
    lab.a.ip(&["link", "set", "eth1", "down"]).expect("down");
    let all = lab
        .announcer(&lab.a, L2Config::new(InterfaceSelection::AllEligible))
        .expect("announcer");
    let names: Vec<String> = all.interfaces().into_iter().map(|i| i.name).collect();
    assert_eq!(names, ["eth0"]);
    assert_eq!(all.interfaces()[0].mac.to_string(), mac_of(&lab.a));

    let missing = lab.announcer(
        &lab.a,
        L2Config::new(InterfaceSelection::Named(vec!["nope0".into()])),
    );
    assert!(matches!(missing, Err(L2Error::NoSuchInterface(name)) if name == "nope0"));
    assert!(matches!(
        all.announce("eth1", vip4()),
        Err(L2Error::NotServed(_))
    ));
}

/// Whether eth0 is in all-multicast mode. Kernel-internal all-multicast (as a packet socket
/// sets it) shows in the device's raw flags, which sysfs reports (`ip netns exec` mounts the
/// namespace's own sysfs), not in `ip link`.
fn all_multicast(ns: &Netns) -> bool {
    let out = ns
        .exec(&["cat", "/sys/class/net/eth0/flags"])
        .expect("read flags");
    let text = String::from_utf8_lossy(&out.stdout);
    let flags = u32::from_str_radix(text.trim().trim_start_matches("0x"), 16).expect("hex flags");
    flags & libc::IFF_ALLMULTI as u32 != 0
}

#[test]
fn groups_past_the_join_limit_switch_to_all_multicast_and_back() {
    let lab = lab();
    let mac_a = mac_of(&lab.a);
    let node_a = lab
        .announcer(
            &lab.a,
            L2Config {
                group_join_limit: 1,
                ..eth0()
            },
        )
        .expect("announcer A");
    let second: IpAddr = "2001:db8::1:65".parse().unwrap();
    node_a.announce("eth0", vip6()).expect("first VIP");
    assert!(!all_multicast(&lab.a));
    node_a.announce("eth0", second).expect("second VIP");
    assert!(all_multicast(&lab.a));
    assert!(
        !joined(&lab.a).contains("ff02::1:ff01:65"),
        "{}",
        joined(&lab.a)
    );
    for vip in [VIP6, "2001:db8::1:65"] {
        let reply = ndisc6(&lab.client, vip);
        assert!(text(&reply).contains(&mac_a), "{vip}: {}", text(&reply));
    }
    assert!(node_a.withdraw("eth0", second).expect("withdraw"));
    assert!(!all_multicast(&lab.a));
    assert!(
        joined(&lab.a).contains("ff02::1:ff00:64"),
        "{}",
        joined(&lab.a)
    );
}

#[test]
fn vips_sharing_a_solicited_node_group_keep_it_until_the_last_is_withdrawn() {
    let lab = lab();
    let node_a = lab.announcer(&lab.a, eth0()).expect("announcer A");
    // Same low 24 bits as VIP6, so the same group ff02::1:ff00:64.
    let twin: IpAddr = "2001:db8:1::64".parse().unwrap();
    node_a.announce("eth0", vip6()).expect("announce");
    node_a.announce("eth0", twin).expect("announce twin");
    assert!(node_a.withdraw("eth0", vip6()).expect("withdraw"));
    assert!(
        joined(&lab.a).contains("ff02::1:ff00:64"),
        "group left while the twin still owns it: {}",
        joined(&lab.a)
    );
    assert!(node_a.withdraw("eth0", twin).expect("withdraw twin"));
    assert!(
        !joined(&lab.a).contains("ff02::1:ff00:64"),
        "group kept after the last VIP left: {}",
        joined(&lab.a)
    );
    assert!(!node_a.withdraw("eth0", twin).expect("second withdraw"));
}

#[test]
fn past_claim_deadline_silences_replies_and_bursts_and_a_future_one_lets_them_flow() {
    let lab = lab();
    let mac_a = mac_of(&lab.a);
    let node_a = lab.announcer(&lab.a, eth0()).expect("announcer A");
    // The deadline has passed (a frozen speaker resuming): the VIP is owned, nothing claims it.
    node_a.set_claim_deadline(Some(Instant::now()));
    node_a.announce("eth0", vip4()).expect("announce");
    let silent = arping(&lab.client, VIP4, "2");
    assert!(
        !silent.status.success(),
        "answered past the deadline: {}",
        text(&silent)
    );
    assert!(
        eventually(Duration::from_secs(5), || node_a.counters()["eth0"]
            .fenced_suppressed
            >= 2),
        "suppressed frames not counted: {:?}",
        node_a.counters()["eth0"]
    );
    let fenced = node_a.counters()["eth0"];
    assert_eq!(fenced.replies_sent, 0, "{fenced:?}");
    assert_eq!(fenced.gratuitous_sent, 0, "{fenced:?}");
    assert!(fenced.requests_received >= 1, "{fenced:?}");
    assert_eq!(neighbour(&lab.client, VIP4), None);
    assert_eq!(node_a.interfaces()[0].owned, vec![vip4()], "still owned");

    // Renewed: the deadline lies ahead, replies flow (the handle is the announcer's own gate).
    node_a
        .claim_deadline()
        .set(Some(Instant::now() + Duration::from_secs(600)));
    let reply = arping(&lab.client, VIP4, "1");
    assert!(reply.status.success(), "arping failed: {}", text(&reply));
    assert!(text(&reply).contains(&mac_a), "{}", text(&reply));
    assert!(node_a.counters()["eth0"].replies_sent >= 1);

    // Closed: nothing again, not even a restarted burst.
    node_a.set_claim_deadline(None);
    let sent = node_a.counters()["eth0"];
    node_a.announce("eth0", vip4()).expect("announce again");
    let silent = arping(&lab.client, VIP4, "2");
    assert!(
        !silent.status.success(),
        "answered while closed: {}",
        text(&silent)
    );
    let after = node_a.counters()["eth0"];
    assert_eq!(after.replies_sent, sent.replies_sent, "{after:?}");
    assert!(
        after.fenced_suppressed > sent.fenced_suppressed,
        "{after:?}"
    );
}
