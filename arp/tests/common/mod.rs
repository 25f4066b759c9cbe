//! The lab shared by the end-to-end tests and the benchmark: a client namespace and two node
//! namespaces (A, B), each with an `eth0` on one Linux bridge living in a fourth namespace, plus
//! a tokio runtime to drive announcers created inside the node namespaces.

use cairn_arp::sys::{self, PacketSocket};
use cairn_arp::{InterfaceSelection, L2Announcer, L2Config, L2Error};
use cairn_e2e::netns::{is_root, Netns};

pub const CLIENT4: &str = "192.0.2.10";
pub const CLIENT6: &str = "2001:db8::a";

pub struct Lab {
    pub client: Netns,
    pub a: Netns,
    pub b: Netns,
    _bridge: Netns,
    pub runtime: tokio::runtime::Runtime,
}

pub fn lab() -> Lab {
    assert!(is_root(), "network namespace tests need root");
    let bridge = Netns::new("arpbr").expect("bridge namespace");
    let client = Netns::new("arpc").expect("client namespace");
    let a = Netns::new("arpa").expect("node A namespace");
    let b = Netns::new("arpb").expect("node B namespace");
    bridge
        .ip(&["link", "add", "br0", "type", "bridge"])
        .expect("bridge");
    bridge.ip(&["link", "set", "br0", "up"]).expect("bridge up");
    for (ns, port) in [(&client, "pc"), (&a, "pa"), (&b, "pb")] {
        bridge.veth(port, ns, "eth0").expect("veth");
        bridge
            .ip(&["link", "set", port, "master", "br0"])
            .expect("enslave port");
    }
    client.addr("eth0", &format!("{CLIENT4}/24")).expect("addr");
    client.addr("eth0", &format!("{CLIENT6}/64")).expect("addr");
    a.addr("eth0", "192.0.2.1/24").expect("addr");
    b.addr("eth0", "192.0.2.2/24").expect("addr");
    // Let the client's kernel create entries from gratuitous ARP / unsolicited NA. Linux
    // creates an entry from an untracked NA only on a router (RFC 9131), so the client forwards:
    // it plays the top-of-rack router, the neighbour that matters.
    for key in [
        "net.ipv4.conf.eth0.arp_accept=1",
        "net.ipv6.conf.eth0.forwarding=1",
        "net.ipv6.conf.eth0.accept_untracked_na=1",
    ] {
        client.exec(&["sysctl", "-qw", key]).expect("sysctl");
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    Lab {
        client,
        a,
        b,
        _bridge: bridge,
        runtime,
    }
}

pub fn eth0() -> L2Config {
    L2Config::new(InterfaceSelection::Named(vec!["eth0".into()]))
}

impl Lab {
    pub fn announcer(&self, ns: &Netns, config: L2Config) -> Result<L2Announcer, L2Error> {
        let handle = self.runtime.handle().clone();
        ns.run(move || {
            let _entered = handle.enter();
            L2Announcer::new(config)
        })
        .expect("enter namespace")
    }
}

/// A raw AF_PACKET socket on `eth0` of `ns` (opened inside it), to play the client.
pub fn packet_socket(ns: &Netns, protocol: u16) -> PacketSocket {
    ns.run(move || {
        let index = sys::interfaces()
            .expect("interfaces")
            .into_iter()
            .find(|i| i.name == "eth0")
            .expect("eth0")
            .index;
        PacketSocket::open(index, protocol, None).expect("raw socket")
    })
    .expect("enter namespace")
}
