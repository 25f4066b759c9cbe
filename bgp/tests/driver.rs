//! The tokio driver against a minimal scripted BGP peer on loopback (no namespaces needed):
//! which routes reach which peer, late-added peers, re-targeting a prefix, Cease on removal.

use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use cairn_bgp::wire::{self, MessageType, Open, AFI_IPV4, AFI_IPV6, HEADER_LEN, SAFI_UNICAST};
use cairn_bgp::{PeerConfig, Peers, RouteAttrs, SessionConfig, Speaker, State};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const WAIT: Duration = Duration::from_secs(10);

/// One message read from the speaker: type and body.
async fn read_message(stream: &mut TcpStream) -> Option<(MessageType, Vec<u8>)> {
    let mut header = [0u8; HEADER_LEN];
    stream.read_exact(&mut header).await.ok()?;
    let (kind, len) = wire::check_header(&header).ok()??;
    let mut body = vec![0u8; len - HEADER_LEN];
    stream.read_exact(&mut body).await.ok()?;
    Some((kind, body))
}

/// Accepts the speaker's connection and completes the handshake as AS 65000.
async fn accept_session(listener: &TcpListener) -> TcpStream {
    let (mut stream, _) = listener.accept().await.unwrap();
    let (kind, _) = read_message(&mut stream).await.unwrap();
    assert_eq!(kind, MessageType::Open);
    let open = Open {
        asn: 65000,
        hold_time: 90,
        router_id: Ipv4Addr::new(192, 0, 2, 254),
        families: vec![(AFI_IPV4, SAFI_UNICAST), (AFI_IPV6, SAFI_UNICAST)],
        route_refresh: true,
        four_octet_as: true,
        graceful_restart: None,
    };
    stream.write_all(&open.encode()).await.unwrap();
    stream.write_all(&wire::keepalive()).await.unwrap();
    stream
}

/// IPv4 prefixes of a body: (withdrawn, announced), as "a.b.c.d/len".
fn v4_prefixes(body: &[u8]) -> (Vec<String>, Vec<String>) {
    fn parse(mut bytes: &[u8]) -> Vec<String> {
        let mut out = Vec::new();
        while let Some((&len, rest)) = bytes.split_first() {
            let n = usize::from(len).div_ceil(8);
            let mut octets = [0u8; 4];
            octets[..n].copy_from_slice(&rest[..n]);
            out.push(format!("{}/{len}", Ipv4Addr::from(octets)));
            bytes = &rest[n..];
        }
        out
    }
    let wlen = usize::from(u16::from_be_bytes([body[0], body[1]]));
    let withdrawn = parse(&body[2..2 + wlen]);
    let alen = usize::from(u16::from_be_bytes([body[2 + wlen], body[3 + wlen]]));
    let announced = parse(&body[4 + wlen + alen..]);
    (withdrawn, announced)
}

/// Reads UPDATEs until `want` (withdrawn, announced) have all been seen.
async fn expect_updates(stream: &mut TcpStream, withdrawn: &[&str], announced: &[&str]) {
    let mut seen_w = Vec::new();
    let mut seen_a = Vec::new();
    let done = tokio::time::timeout(WAIT, async {
        while !(withdrawn
            .iter()
            .all(|w| seen_w.iter().any(|s: &String| s == w))
            && announced
                .iter()
                .all(|a| seen_a.iter().any(|s: &String| s == a)))
        {
            let (kind, body) = read_message(stream).await.expect("session open");
            if kind == MessageType::Update {
                let (w, a) = v4_prefixes(&body);
                seen_w.extend(w);
                seen_a.extend(a);
            }
        }
    })
    .await;
    assert!(
        done.is_ok(),
        "want withdrawn {withdrawn:?} announced {announced:?}, got {seen_w:?} {seen_a:?}"
    );
    // Nothing else was sent with them.
    seen_w.retain(|s| !withdrawn.contains(&s.as_str()));
    seen_a.retain(|s| !announced.contains(&s.as_str()));
    assert!(
        seen_w.is_empty() && seen_a.is_empty(),
        "{seen_w:?} {seen_a:?}"
    );
}

fn peer_config(address: &str, port: u16) -> PeerConfig {
    let mut config = PeerConfig::new(
        address.parse().unwrap(),
        SessionConfig::new(65001, 65000, Ipv4Addr::new(192, 0, 2, 1)),
    );
    config.port = port;
    config
}

fn net(s: &str) -> ipnet::IpNet {
    s.parse().unwrap()
}

#[tokio::test]
async fn routes_reach_only_their_peers_follow_retargeting_and_removal_sends_cease() {
    let router_a = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let router_b = TcpListener::bind("127.0.0.2:0").await.unwrap();
    let speaker = Speaker::new();
    speaker.announce(net("203.0.113.1/32"), RouteAttrs::default(), Peers::All);
    let only_a = Peers::Only(vec!["127.0.0.1".parse().unwrap()]);
    speaker.announce(net("203.0.113.2/32"), RouteAttrs::default(), only_a);

    // Peers added after the announcements get what is meant for them.
    speaker
        .add_peer(peer_config(
            "127.0.0.1",
            router_a.local_addr().unwrap().port(),
        ))
        .unwrap();
    speaker
        .add_peer(peer_config(
            "127.0.0.2",
            router_b.local_addr().unwrap().port(),
        ))
        .unwrap();
    let mut a = accept_session(&router_a).await;
    let mut b = accept_session(&router_b).await;
    expect_updates(&mut a, &[], &["203.0.113.1/32", "203.0.113.2/32"]).await;
    expect_updates(&mut b, &[], &["203.0.113.1/32"]).await;

    // Re-targeting a prefix withdraws it where it no longer goes.
    let only_b = Peers::Only(vec!["127.0.0.2".parse().unwrap()]);
    speaker.announce(net("203.0.113.2/32"), RouteAttrs::default(), only_b);
    expect_updates(&mut a, &["203.0.113.2/32"], &[]).await;
    expect_updates(&mut b, &[], &["203.0.113.2/32"]).await;

    speaker
        .remove_peer("127.0.0.1".parse().unwrap())
        .await
        .unwrap();
    let notification = loop {
        match read_message(&mut a).await {
            Some((MessageType::Notification, body)) => break body,
            Some(_) => continue,
            None => panic!("connection closed without NOTIFICATION"),
        }
    };
    assert_eq!(
        &notification[..2],
        &[6, 2],
        "Cease / Administrative Shutdown"
    );
    assert!(
        read_message(&mut a).await.is_none(),
        "closed after the Cease"
    );

    let stats = speaker.peer_stats();
    assert_eq!(stats.len(), 1);
    assert_eq!(stats[0].peer, "127.0.0.2".parse::<IpAddr>().unwrap());
    assert_eq!(stats[0].session.state, State::Established);
    assert_eq!(stats[0].session.prefixes_advertised, 2);
    assert!(stats[0].uptime.is_some());
    assert!(stats[0].session.messages_out >= 4, "{stats:?}");
    speaker.shutdown().await;
}

#[tokio::test]
async fn duplicate_peer_and_overlong_md5_password_are_rejected() {
    let speaker = Speaker::new();
    speaker.add_peer(peer_config("127.0.0.1", 1)).unwrap();
    assert!(matches!(
        speaker.add_peer(peer_config("127.0.0.1", 1)),
        Err(cairn_bgp::SpeakerError::DuplicatePeer(_))
    ));
    let mut long = peer_config("127.0.0.3", 1);
    long.md5_password = Some("x".repeat(81));
    assert!(matches!(
        speaker.add_peer(long),
        Err(cairn_bgp::SpeakerError::Md5PasswordTooLong(81))
    ));
    speaker.shutdown().await;
}
