//! Rust mirrors of the map keys and values in `bpf/lb_structs.h` and the drop reasons in
//! `bpf/lb_consts.h`. Layouts are `#[repr(C)]` and checked by size in tests; field meanings
//! are documented in the C headers.
//!
//! Addresses are stored as their network-order bytes (IPv4 in the first word, the rest zero),
//! exactly as the BPF program copies them out of packet headers. Nothing here does IO.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// `LB_FAMILY_V4`.
pub(crate) const FAMILY_V4: u8 = 4;
/// `LB_FAMILY_V6`.
pub(crate) const FAMILY_V6: u8 = 6;

/// Why the load balancer dropped a packet (`enum lb_drop_reason`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DropReason {
    /// An IP fragment addressed to a VIP address (no ports to hash on).
    Fragment,
    /// Lengths contradicting the packet, or a truncated L3/L4 header, for a VIP address.
    Malformed,
    /// An IPv6 extension header before the transport header.
    Ipv6ExtensionHeader,
    /// The encapsulated packet would exceed the configured MTU.
    TooBig,
    /// The service has no backend with a weight.
    NoBackend,
    /// No next hop for the chosen backend and no default next hop.
    NoNextHop,
    /// No local outer source address of the backend's family.
    NoSourceAddress,
    /// The kernel refused to grow the packet for the outer header.
    EncapFailed,
}

impl DropReason {
    /// Every reason, in the order of the C enum.
    pub const ALL: [DropReason; 8] = [
        DropReason::Fragment,
        DropReason::Malformed,
        DropReason::Ipv6ExtensionHeader,
        DropReason::TooBig,
        DropReason::NoBackend,
        DropReason::NoNextHop,
        DropReason::NoSourceAddress,
        DropReason::EncapFailed,
    ];

    /// The C enum value (index into the drop counters).
    pub fn index(self) -> usize {
        self as usize
    }

    /// A stable lower-case label, for metrics.
    pub fn label(self) -> &'static str {
        match self {
            DropReason::Fragment => "fragment",
            DropReason::Malformed => "malformed",
            DropReason::Ipv6ExtensionHeader => "ipv6_extension_header",
            DropReason::TooBig => "too_big",
            DropReason::NoBackend => "no_backend",
            DropReason::NoNextHop => "no_next_hop",
            DropReason::NoSourceAddress => "no_source_address",
            DropReason::EncapFailed => "encap_failed",
        }
    }
}

/// `LB_DROP_MAX`.
pub(crate) const DROP_REASONS: usize = DropReason::ALL.len();

/// `struct lb_addr`.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub(crate) struct LbAddr {
    pub addr: [u32; 4],
    pub family: u8,
    pub pad: [u8; 3],
}

impl LbAddr {
    pub fn from_ip(ip: IpAddr) -> Self {
        let mut bytes = [0u8; 16];
        let family = match ip {
            IpAddr::V4(v4) => {
                bytes[..4].copy_from_slice(&v4.octets());
                FAMILY_V4
            }
            IpAddr::V6(v6) => {
                bytes = v6.octets();
                FAMILY_V6
            }
        };
        Self {
            addr: words_ne(&bytes),
            family,
            pad: [0; 3],
        }
    }

    /// The address, or `None` for an unused entry.
    pub fn to_ip(self) -> Option<IpAddr> {
        let bytes = bytes_ne(&self.addr);
        match self.family {
            FAMILY_V4 => Some(IpAddr::V4(Ipv4Addr::new(
                bytes[0], bytes[1], bytes[2], bytes[3],
            ))),
            FAMILY_V6 => Some(IpAddr::V6(Ipv6Addr::from(bytes))),
            _ => None,
        }
    }
}

/// Packet bytes as the BPF program sees them when it loads words (native order).
pub(crate) fn words_ne(bytes: &[u8; 16]) -> [u32; 4] {
    let mut words = [0u32; 4];
    for (word, chunk) in words.iter_mut().zip(bytes.chunks_exact(4)) {
        *word = u32::from_ne_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]);
    }
    words
}

fn bytes_ne(words: &[u32; 4]) -> [u8; 16] {
    let mut bytes = [0u8; 16];
    for (chunk, word) in bytes.chunks_exact_mut(4).zip(words) {
        chunk.copy_from_slice(&word.to_ne_bytes());
    }
    bytes
}

/// `struct vip_key`.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub(crate) struct VipKey {
    pub addr: LbAddr,
    /// Network order; 0 = any port.
    pub port: u16,
    pub proto: u8,
    pub pad: u8,
}

/// `struct vip_meta`.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct VipMeta {
    pub vip_num: u32,
    pub flags: u32,
}

/// `struct backend`.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct BackendEntry {
    pub addr: LbAddr,
    pub dst_mac: [u8; 6],
    pub src_mac: [u8; 6],
    /// Non-zero when the MACs are set.
    pub hop_valid: u16,
    /// Non-zero when the MACs are the backend's own next hop rather than the default.
    pub hop_own: u16,
}

/// `struct next_hop`.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct NextHopEntry {
    pub dst_mac: [u8; 6],
    pub src_mac: [u8; 6],
    pub valid: u32,
}

/// `struct lb_config`.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct LbConfig {
    pub ring_size: u32,
    pub hash_seed: u32,
    pub global_stats_slot: u32,
    pub mtu: u32,
    pub egress_ifindex: u32,
    pub local_v4: LbAddr,
    pub local_v6: LbAddr,
    pub any_port_services: u32,
    pub default_hop: NextHopEntry,
}

/// `struct flow_key`.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub(crate) struct FlowKey {
    pub src: [u32; 4],
    pub dst: [u32; 4],
    /// Network order.
    pub sport: u16,
    /// Network order.
    pub dport: u16,
    pub proto: u8,
    pub pad: [u8; 3],
}

impl FlowKey {
    /// The 10 words the BPF program hashes, in its (little-endian) view.
    pub fn words(&self) -> [u32; 10] {
        let mut words = [0u32; 10];
        words[..4].copy_from_slice(&self.src);
        words[4..8].copy_from_slice(&self.dst);
        words[8] = u32::from_ne_bytes({
            let s = self.sport.to_ne_bytes();
            let d = self.dport.to_ne_bytes();
            [s[0], s[1], d[0], d[1]]
        });
        words[9] = u32::from(self.proto);
        words
    }
}

/// `struct flow_value`.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct FlowValue {
    pub backend: u32,
}

/// `struct vip_stats`.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct VipStats {
    pub packets: u64,
    pub bytes: u64,
    pub flow_hits: u64,
    pub flow_misses: u64,
    pub drops: [u64; DROP_REASONS],
}

/// `struct decap_stats`.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct DecapStats {
    pub decapsulated: u64,
    pub passed: u64,
    pub malformed: u64,
}

// SAFETY: all of these are #[repr(C)] structs of integers and integer arrays with explicit
// padding fields, so every bit pattern is valid and there are no implicit padding bytes.
unsafe impl aya::Pod for LbAddr {}
unsafe impl aya::Pod for VipKey {}
unsafe impl aya::Pod for VipMeta {}
unsafe impl aya::Pod for BackendEntry {}
unsafe impl aya::Pod for NextHopEntry {}
unsafe impl aya::Pod for LbConfig {}
unsafe impl aya::Pod for FlowKey {}
unsafe impl aya::Pod for FlowValue {}
unsafe impl aya::Pod for VipStats {}
unsafe impl aya::Pod for DecapStats {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layouts_match_the_c_structs() {
        // Sizes of the C structs (clang -target bpf): see bpf/lb_structs.h.
        assert_eq!(size_of::<LbAddr>(), 20);
        assert_eq!(size_of::<VipKey>(), 24);
        assert_eq!(size_of::<VipMeta>(), 8);
        assert_eq!(size_of::<BackendEntry>(), 36);
        assert_eq!(size_of::<NextHopEntry>(), 16);
        assert_eq!(size_of::<LbConfig>(), 80);
        assert_eq!(size_of::<FlowKey>(), 40);
        assert_eq!(size_of::<VipStats>(), 8 * (4 + DROP_REASONS));
    }

    #[test]
    fn drop_reasons_mirror_the_c_enum() {
        let header = include_str!("../bpf/lb_consts.h");
        let c_names = [
            "LB_DROP_FRAGMENT",
            "LB_DROP_MALFORMED",
            "LB_DROP_IPV6_EXT",
            "LB_DROP_TOO_BIG",
            "LB_DROP_NO_BACKEND",
            "LB_DROP_NO_NEXT_HOP",
            "LB_DROP_NO_SOURCE",
            "LB_DROP_ENCAP_FAILED",
        ];
        for (reason, name) in DropReason::ALL.iter().zip(c_names) {
            let line = format!("{name} = {},", reason.index());
            assert!(header.contains(&line), "lb_consts.h lacks `{line}`");
        }
        assert!(header.contains(&format!("LB_DROP_MAX = {DROP_REASONS},")));
    }

    #[test]
    fn addresses_round_trip_and_keep_network_byte_order() {
        let v4: IpAddr = "203.0.113.10".parse().expect("v4");
        let addr = LbAddr::from_ip(v4);
        assert_eq!(addr.addr[0].to_ne_bytes(), [203, 0, 113, 10]);
        assert_eq!(addr.to_ip(), Some(v4));
        let v6: IpAddr = "2001:db8::10".parse().expect("v6");
        assert_eq!(LbAddr::from_ip(v6).to_ip(), Some(v6));
        assert_eq!(LbAddr::default().to_ip(), None);
    }
}
