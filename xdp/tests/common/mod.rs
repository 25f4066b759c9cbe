//! Frame builders for fixtures and benchmarks: Ethernet (+ VLAN), IPv4 (+ options), IPv6,
//! TCP, UDP, ICMP, and the outer headers the load balancer is expected to add.
#![allow(dead_code)] // each test binary uses a different subset

use std::net::{Ipv4Addr, Ipv6Addr};

pub const LB_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x01];
pub const CLIENT_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0xc1];
pub const ETH_IPV4: u16 = 0x0800;
pub const ETH_IPV6: u16 = 0x86dd;

pub const TCP: u8 = 6;
pub const UDP: u8 = 17;
pub const SYN: u8 = 0x02;
pub const ACK: u8 = 0x10;

pub fn eth(dst: [u8; 6], src: [u8; 6], proto: u16, vlan: Option<u16>) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(&dst);
    out.extend_from_slice(&src);
    if let Some(tci) = vlan {
        out.extend_from_slice(&0x8100u16.to_be_bytes());
        out.extend_from_slice(&tci.to_be_bytes());
    }
    out.extend_from_slice(&proto.to_be_bytes());
    out
}

pub fn checksum(bytes: &[u8]) -> u16 {
    let mut sum: u32 = 0;
    for chunk in bytes.chunks(2) {
        let word = u16::from_be_bytes([chunk[0], *chunk.get(1).unwrap_or(&0)]);
        sum += u32::from(word);
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// An IPv4 header (with `options`, a multiple of 4 bytes) followed by `payload`.
pub struct V4 {
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    pub proto: u8,
    pub tos: u8,
    pub frag: u16,
    pub ttl: u8,
    pub options: Vec<u8>,
}

impl V4 {
    pub fn new(src: Ipv4Addr, dst: Ipv4Addr, proto: u8) -> Self {
        Self {
            src,
            dst,
            proto,
            tos: 0,
            frag: 0,
            ttl: 64,
            options: Vec::new(),
        }
    }

    pub fn packet(&self, payload: &[u8]) -> Vec<u8> {
        let hlen = 20 + self.options.len();
        let total = (hlen + payload.len()) as u16;
        let mut h = vec![0x40 | (hlen / 4) as u8, self.tos];
        h.extend_from_slice(&total.to_be_bytes());
        h.extend_from_slice(&0x1234u16.to_be_bytes());
        h.extend_from_slice(&self.frag.to_be_bytes());
        h.extend_from_slice(&[self.ttl, self.proto, 0, 0]);
        h.extend_from_slice(&self.src.octets());
        h.extend_from_slice(&self.dst.octets());
        h.extend_from_slice(&self.options);
        let sum = checksum(&h);
        h[10..12].copy_from_slice(&sum.to_be_bytes());
        h.extend_from_slice(payload);
        h
    }
}

pub fn v6_packet(src: Ipv6Addr, dst: Ipv6Addr, next: u8, payload: &[u8]) -> Vec<u8> {
    let mut h = vec![0x60, 0, 0, 0];
    h.extend_from_slice(&(payload.len() as u16).to_be_bytes());
    h.extend_from_slice(&[next, 64]);
    h.extend_from_slice(&src.octets());
    h.extend_from_slice(&dst.octets());
    h.extend_from_slice(payload);
    h
}

/// A TCP header (checksum left zero: the programs never look at it) and payload.
pub fn tcp(sport: u16, dport: u16, flags: u8, payload: &[u8]) -> Vec<u8> {
    let mut t = Vec::new();
    t.extend_from_slice(&sport.to_be_bytes());
    t.extend_from_slice(&dport.to_be_bytes());
    t.extend_from_slice(&1u32.to_be_bytes());
    t.extend_from_slice(&0u32.to_be_bytes());
    t.extend_from_slice(&[0x50, flags, 0xff, 0xff, 0, 0, 0, 0]);
    t.extend_from_slice(payload);
    t
}

pub fn udp(sport: u16, dport: u16, payload: &[u8]) -> Vec<u8> {
    let mut u = Vec::new();
    u.extend_from_slice(&sport.to_be_bytes());
    u.extend_from_slice(&dport.to_be_bytes());
    u.extend_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
    u.extend_from_slice(&[0, 0]);
    u.extend_from_slice(payload);
    u
}

/// An ICMP/ICMPv6 message: type, code, zero checksum, 4 bytes of `rest`, then `body`.
pub fn icmp(kind: u8, code: u8, rest: u32, body: &[u8]) -> Vec<u8> {
    let mut m = vec![kind, code, 0, 0];
    m.extend_from_slice(&rest.to_be_bytes());
    m.extend_from_slice(body);
    m
}

pub fn frame(l2: Vec<u8>, l3: &[u8]) -> Vec<u8> {
    let mut f = l2;
    f.extend_from_slice(l3);
    f
}

/// The outer IPv4 header the load balancer prepends (IP-in-IP or 6in4).
pub fn outer_v4(src: Ipv4Addr, dst: Ipv4Addr, tos: u8, inner: &[u8], inner_is_v6: bool) -> Vec<u8> {
    let total = (20 + inner.len()) as u16;
    let mut h = vec![0x45, tos];
    h.extend_from_slice(&total.to_be_bytes());
    h.extend_from_slice(&[0, 0, 0, 0, 64, if inner_is_v6 { 41 } else { 4 }, 0, 0]);
    h.extend_from_slice(&src.octets());
    h.extend_from_slice(&dst.octets());
    let sum = checksum(&h);
    h[10..12].copy_from_slice(&sum.to_be_bytes());
    h.extend_from_slice(inner);
    h
}

/// The outer IPv6 header the load balancer prepends; flow label = low 20 bits of `hash`.
pub fn outer_v6(
    src: Ipv6Addr,
    dst: Ipv6Addr,
    hash: u32,
    inner: &[u8],
    inner_is_v6: bool,
) -> Vec<u8> {
    let label = hash & 0xf_ffff;
    let mut h = vec![0x60, (label >> 16) as u8, (label >> 8) as u8, label as u8];
    h.extend_from_slice(&(inner.len() as u16).to_be_bytes());
    h.extend_from_slice(&[if inner_is_v6 { 41 } else { 4 }, 64]);
    h.extend_from_slice(&src.octets());
    h.extend_from_slice(&dst.octets());
    h.extend_from_slice(inner);
    h
}
