//! Thin wrappers over the Linux socket calls this crate needs: AF_PACKET sockets bound to one
//! interface, an AF_INET6 socket used only to hold solicited-node multicast memberships, a
//! NETLINK_ROUTE socket subscribed to link changes, and interface discovery with getifaddrs(3).
//!
//! Every socket is opened in the network namespace of the calling thread and stays there; no
//! function here changes namespace, sets promiscuous mode or touches an interface's
//! configuration. Nothing here interprets frames (see `wire`); the netlink parser reads only the
//! `ifinfomsg` header of RTM_NEWLINK/RTM_DELLINK (rtnetlink(7)).

use std::ffi::CStr;
use std::io;
use std::mem::{size_of, zeroed};
use std::net::Ipv6Addr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use crate::wire::MacAddr;

fn cvt(rc: libc::c_int) -> io::Result<libc::c_int> {
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(rc)
    }
}

fn cvt_size(rc: libc::ssize_t) -> io::Result<usize> {
    usize::try_from(rc).map_err(|_| io::Error::last_os_error())
}

fn socket(domain: libc::c_int, kind: libc::c_int, protocol: libc::c_int) -> io::Result<OwnedFd> {
    // SAFETY: plain socket(2); the returned descriptor is owned by the OwnedFd.
    let fd = cvt(unsafe {
        libc::socket(
            domain,
            kind | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
            protocol,
        )
    })?;
    // SAFETY: `fd` was just returned by socket(2) and is owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn setsockopt<T>(fd: &OwnedFd, level: libc::c_int, name: libc::c_int, value: &T) -> io::Result<()> {
    // SAFETY: `value` points to a live T of the size passed.
    cvt(unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            level,
            name,
            (value as *const T).cast(),
            size_of::<T>() as libc::socklen_t,
        )
    })
    .map(drop)
}

/// A classic BPF instruction (`struct sock_filter`).
pub type BpfInsn = libc::sock_filter;

const fn bpf(code: u16, jt: u8, jf: u8, k: u32) -> BpfInsn {
    BpfInsn { code, jt, jf, k }
}

const BPF_LD_B_ABS: u16 = (libc::BPF_LD | libc::BPF_B | libc::BPF_ABS) as u16;
const BPF_JEQ_K: u16 = (libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K) as u16;
const BPF_RET_K: u16 = (libc::BPF_RET | libc::BPF_K) as u16;

/// Offset of the IPv6 next-header byte in an untagged Ethernet frame.
const OFFSET_IPV6_NEXT_HEADER: u32 = 14 + 6;
/// Offset of the ICMPv6 type byte in an untagged Ethernet frame with no extension header.
const OFFSET_ICMPV6_TYPE: u32 = 14 + 40;

/// Keeps only ICMPv6 Neighbor Solicitations (next header 58, type 135) on an ETH_P_IPV6
/// socket, so the responder never copies the node's other IPv6 traffic to user space. A frame too
/// short to hold the type byte fails the load and is dropped by the kernel.
pub const NEIGHBOR_SOLICIT_FILTER: [BpfInsn; 6] = [
    bpf(BPF_LD_B_ABS, 0, 0, OFFSET_IPV6_NEXT_HEADER),
    bpf(BPF_JEQ_K, 0, 3, 58),
    bpf(BPF_LD_B_ABS, 0, 0, OFFSET_ICMPV6_TYPE),
    bpf(BPF_JEQ_K, 0, 1, 135),
    bpf(BPF_RET_K, 0, 0, 0x0004_0000),
    bpf(BPF_RET_K, 0, 0, 0),
];

/// The ethertype AF_PACKET sockets bind to for ARP.
pub const ETH_P_ARP: u16 = libc::ETH_P_ARP as u16;
/// The ethertype AF_PACKET sockets bind to for IPv6.
pub const ETH_P_IPV6: u16 = libc::ETH_P_IPV6 as u16;

fn sockaddr_ll(ifindex: u32, protocol: u16) -> io::Result<libc::sockaddr_ll> {
    // SAFETY: sockaddr_ll is plain data; all-zero is a valid value.
    let mut addr: libc::sockaddr_ll = unsafe { zeroed() };
    addr.sll_family = libc::AF_PACKET as u16;
    addr.sll_protocol = protocol.to_be();
    addr.sll_ifindex = libc::c_int::try_from(ifindex)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "ifindex out of range"))?;
    Ok(addr)
}

/// A non-blocking AF_PACKET `SOCK_RAW` socket bound to one interface and one ethertype. It
/// sees frames to this host, broadcast and joined multicast (never promiscuous), and not the
/// frames this host sends (`PACKET_IGNORE_OUTGOING`, and `recv` reports the packet type so the
/// caller can check again).
#[derive(Debug)]
pub struct PacketSocket {
    fd: OwnedFd,
    ifindex: u32,
}

/// What `recv` read: the length and the kernel's packet type (`PACKET_HOST`, `PACKET_BROADCAST`,
/// `PACKET_MULTICAST`, `PACKET_OTHERHOST`, `PACKET_OUTGOING`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Received {
    /// Bytes written to the buffer (the frame is cut off past the buffer's end).
    pub len: usize,
    /// `sll_pkttype`.
    pub packet_type: u8,
}

impl Received {
    /// True for a frame this host sent.
    pub fn is_outgoing(&self) -> bool {
        self.packet_type == libc::PACKET_OUTGOING
    }
}

impl PacketSocket {
    /// Opens a socket on `ifindex` receiving `protocol` (an ethertype), with `filter` attached
    /// before it is bound, so no unfiltered frame is ever queued.
    pub fn open(ifindex: u32, protocol: u16, filter: Option<&[BpfInsn]>) -> io::Result<Self> {
        // Protocol 0: receives nothing until bound below.
        let fd = socket(libc::AF_PACKET, libc::SOCK_RAW, 0)?;
        // Kernels before 4.20 lack the option; `recv` reports PACKET_OUTGOING there instead.
        let _ = setsockopt(&fd, libc::SOL_PACKET, libc::PACKET_IGNORE_OUTGOING, &1i32);
        if let Some(filter) = filter {
            let program = libc::sock_fprog {
                len: u16::try_from(filter.len())
                    .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "filter too long"))?,
                filter: filter.as_ptr().cast_mut(),
            };
            setsockopt(&fd, libc::SOL_SOCKET, libc::SO_ATTACH_FILTER, &program)?;
        }
        let addr = sockaddr_ll(ifindex, protocol)?;
        // SAFETY: `addr` is a valid sockaddr_ll of the size passed.
        cvt(unsafe {
            libc::bind(
                fd.as_raw_fd(),
                (&addr as *const libc::sockaddr_ll).cast(),
                size_of::<libc::sockaddr_ll>() as libc::socklen_t,
            )
        })?;
        Ok(Self { fd, ifindex })
    }

    /// Reads one frame; `WouldBlock` when none is queued.
    pub fn recv(&self, buf: &mut [u8]) -> io::Result<Received> {
        // SAFETY: sockaddr_ll is plain data; all-zero is a valid value.
        let mut from: libc::sockaddr_ll = unsafe { zeroed() };
        let mut from_len = size_of::<libc::sockaddr_ll>() as libc::socklen_t;
        // SAFETY: `buf` and `from` are valid for writes of the lengths passed.
        let len = cvt_size(unsafe {
            libc::recvfrom(
                self.fd.as_raw_fd(),
                buf.as_mut_ptr().cast(),
                buf.len(),
                0,
                (&mut from as *mut libc::sockaddr_ll).cast(),
                &mut from_len,
            )
        })?;
        Ok(Received {
            len,
            packet_type: from.sll_pkttype,
        })
    }

    fn mac_membership(&self, option: libc::c_int, mac: MacAddr) -> io::Result<()> {
        let mut address = [0u8; 8];
        address[..6].copy_from_slice(&mac.0);
        let request = libc::packet_mreq {
            mr_ifindex: libc::c_int::try_from(self.ifindex)
                .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "ifindex out of range"))?,
            mr_type: libc::PACKET_MR_MULTICAST as u16,
            mr_alen: 6,
            mr_address: address,
        };
        setsockopt(&self.fd, libc::SOL_PACKET, option, &request)
    }

    /// Makes the interface accept every multicast frame (PACKET_MR_ALLMULTI; not promiscuous)
    /// for as long as this socket lives, or undoes that.
    pub fn set_all_multicast(&self, on: bool) -> io::Result<()> {
        let request = libc::packet_mreq {
            mr_ifindex: libc::c_int::try_from(self.ifindex)
                .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "ifindex out of range"))?,
            mr_type: libc::PACKET_MR_ALLMULTI as u16,
            mr_alen: 0,
            mr_address: [0; 8],
        };
        let option = if on {
            libc::PACKET_ADD_MEMBERSHIP
        } else {
            libc::PACKET_DROP_MEMBERSHIP
        };
        setsockopt(&self.fd, libc::SOL_PACKET, option, &request)
    }

    /// Adds a multicast MAC to the interface's receive filter for as long as this socket lives
    /// (PACKET_ADD_MEMBERSHIP; the kernel counts repeated adds).
    pub fn add_multicast(&self, mac: MacAddr) -> io::Result<()> {
        self.mac_membership(libc::PACKET_ADD_MEMBERSHIP, mac)
    }

    /// Undoes one `add_multicast`.
    pub fn drop_multicast(&self, mac: MacAddr) -> io::Result<()> {
        self.mac_membership(libc::PACKET_DROP_MEMBERSHIP, mac)
    }

    /// Sends one whole Ethernet frame on the bound interface, marked with `protocol` (the
    /// frame's ethertype); `WouldBlock` when the send buffer is full.
    pub fn send(&self, frame: &[u8], protocol: u16) -> io::Result<()> {
        let addr = sockaddr_ll(self.ifindex, protocol)?;
        // SAFETY: `frame` is valid for reads and `addr` is a valid sockaddr_ll.
        let sent = cvt_size(unsafe {
            libc::sendto(
                self.fd.as_raw_fd(),
                frame.as_ptr().cast(),
                frame.len(),
                0,
                (&addr as *const libc::sockaddr_ll).cast(),
                size_of::<libc::sockaddr_ll>() as libc::socklen_t,
            )
        })?;
        if sent == frame.len() {
            Ok(())
        } else {
            Err(io::Error::new(
                io::ErrorKind::WriteZero,
                "short AF_PACKET send",
            ))
        }
    }
}

impl AsRawFd for PacketSocket {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

/// An AF_INET6 datagram socket that never sends or receives: it only holds IPv6 multicast
/// memberships (IPV6_JOIN_GROUP), which make the kernel send MLD reports, so snooping switches
/// forward solicitations for the VIPs. Memberships end when the socket closes. The kernel caps
/// one socket's memberships by `net.core.optmem_max` (about 2 000 groups at the default).
#[derive(Debug)]
pub struct GroupSocket {
    fd: OwnedFd,
}

impl GroupSocket {
    /// Opens the socket; fails when the kernel has IPv6 disabled.
    pub fn open() -> io::Result<Self> {
        Ok(Self {
            fd: socket(libc::AF_INET6, libc::SOCK_DGRAM, 0)?,
        })
    }

    fn membership(&self, option: libc::c_int, group: Ipv6Addr, ifindex: u32) -> io::Result<()> {
        let request = libc::ipv6_mreq {
            ipv6mr_multiaddr: libc::in6_addr {
                s6_addr: group.octets(),
            },
            ipv6mr_interface: ifindex,
        };
        setsockopt(&self.fd, libc::IPPROTO_IPV6, option, &request)
    }

    /// Joins `group` on `ifindex`.
    pub fn join(&self, group: Ipv6Addr, ifindex: u32) -> io::Result<()> {
        self.membership(libc::IPV6_ADD_MEMBERSHIP, group, ifindex)
    }

    /// Leaves `group` on `ifindex`.
    pub fn leave(&self, group: Ipv6Addr, ifindex: u32) -> io::Result<()> {
        self.membership(libc::IPV6_DROP_MEMBERSHIP, group, ifindex)
    }
}

/// An interface as getifaddrs(3) reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Interface {
    /// Name (`eth0`).
    pub name: String,
    /// Kernel index.
    pub index: u32,
    /// Hardware address; `None` for interfaces without a 6-byte one (tun, loopback has zeros).
    pub mac: Option<MacAddr>,
    /// `IFF_*` flags.
    pub flags: u32,
}

impl Interface {
    fn has(&self, flag: libc::c_int) -> bool {
        self.flags & flag as u32 != 0
    }

    /// Administratively up and operationally running.
    pub fn is_up(&self) -> bool {
        self.has(libc::IFF_UP) && self.has(libc::IFF_RUNNING)
    }

    /// What "all interfaces" selects: up, broadcast-capable, with an Ethernet address, not
    /// loopback and not a bond slave.
    pub fn is_eligible(&self) -> bool {
        self.has(libc::IFF_UP)
            && self.has(libc::IFF_BROADCAST)
            && !self.has(libc::IFF_LOOPBACK)
            && !self.has(libc::IFF_SLAVE)
            && self.mac.is_some()
    }
}

/// Lists the interfaces of the calling thread's network namespace (getifaddrs asks the kernel
/// over netlink, so unlike /sys it follows `setns`).
pub fn interfaces() -> io::Result<Vec<Interface>> {
    let mut head: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs writes a list head we free below with freeifaddrs.
    cvt(unsafe { libc::getifaddrs(&mut head) })?;
    let mut found = Vec::new();
    let mut cursor = head;
    while !cursor.is_null() {
        // SAFETY: `cursor` is a node of the list getifaddrs returned, not yet freed.
        let entry = unsafe { &*cursor };
        cursor = entry.ifa_next;
        if entry.ifa_addr.is_null() || entry.ifa_name.is_null() {
            continue;
        }
        // SAFETY: ifa_addr is non-null and points to a sockaddr of at least sa_family.
        if i32::from(unsafe { (*entry.ifa_addr).sa_family }) != libc::AF_PACKET {
            continue;
        }
        // SAFETY: AF_PACKET entries carry a sockaddr_ll.
        let ll = unsafe { &*entry.ifa_addr.cast::<libc::sockaddr_ll>() };
        // SAFETY: ifa_name is a NUL-terminated string owned by the list.
        let name = unsafe { CStr::from_ptr(entry.ifa_name) }
            .to_string_lossy()
            .into_owned();
        let mac = (ll.sll_halen == 6)
            .then(|| MacAddr::from_slice(&ll.sll_addr))
            .flatten()
            .filter(|mac| *mac != MacAddr::ZERO);
        let Ok(index) = u32::try_from(ll.sll_ifindex) else {
            continue;
        };
        found.push(Interface {
            name,
            index,
            mac,
            flags: entry.ifa_flags,
        });
    }
    // SAFETY: `head` came from getifaddrs and is freed once.
    unsafe { libc::freeifaddrs(head) };
    Ok(found)
}

/// One link state change read from rtnetlink.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LinkChange {
    /// Interface index.
    pub index: u32,
    /// `IFF_*` flags after the change (zero for a deleted link).
    pub flags: u32,
}

impl LinkChange {
    /// Up and running after the change.
    pub fn is_up(&self) -> bool {
        self.flags & libc::IFF_UP as u32 != 0 && self.flags & libc::IFF_RUNNING as u32 != 0
    }
}

const NLMSG_HDR_LEN: usize = 16;
const IFINFOMSG_LEN: usize = 16;
const RTM_DELLINK: u16 = libc::RTM_DELLINK;
const RTM_NEWLINK: u16 = libc::RTM_NEWLINK;
const RTM_GETLINK: u16 = libc::RTM_GETLINK;

fn ne_u16(bytes: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_ne_bytes(bytes.get(at..at + 2)?.try_into().ok()?))
}

fn ne_u32(bytes: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_ne_bytes(bytes.get(at..at + 4)?.try_into().ok()?))
}

/// Reads the link changes in one netlink datagram; stops at the first malformed message.
pub fn parse_link_messages(mut datagram: &[u8]) -> Vec<LinkChange> {
    let mut changes = Vec::new();
    while datagram.len() >= NLMSG_HDR_LEN {
        let (Some(len), Some(kind)) = (ne_u32(datagram, 0), ne_u16(datagram, 4)) else {
            break;
        };
        let len = len as usize;
        if len < NLMSG_HDR_LEN || len > datagram.len() {
            break;
        }
        let body = &datagram[NLMSG_HDR_LEN..len];
        if (kind == RTM_NEWLINK || kind == RTM_DELLINK) && body.len() >= IFINFOMSG_LEN {
            // struct ifinfomsg: family u8, pad u8, type u16, index i32, flags u32, change u32.
            if let (Some(index), Some(flags)) = (ne_u32(body, 4), ne_u32(body, 8)) {
                changes.push(LinkChange {
                    index,
                    flags: if kind == RTM_DELLINK { 0 } else { flags },
                });
            }
        }
        // NLMSG_ALIGN: messages start on 4-byte boundaries.
        let advance = (len + 3) & !3;
        datagram = datagram.get(advance..).unwrap_or(&[]);
    }
    changes
}

/// A NETLINK_ROUTE socket subscribed to RTMGRP_LINK.
#[derive(Debug)]
pub struct LinkMonitor {
    fd: OwnedFd,
}

impl LinkMonitor {
    /// Opens and subscribes.
    pub fn open() -> io::Result<Self> {
        let fd = socket(libc::AF_NETLINK, libc::SOCK_RAW, libc::NETLINK_ROUTE)?;
        // SAFETY: sockaddr_nl is plain data; all-zero is a valid value.
        let mut addr: libc::sockaddr_nl = unsafe { zeroed() };
        addr.nl_family = libc::AF_NETLINK as u16;
        addr.nl_groups = libc::RTMGRP_LINK as u32;
        // SAFETY: `addr` is a valid sockaddr_nl of the size passed.
        cvt(unsafe {
            libc::bind(
                fd.as_raw_fd(),
                (&addr as *const libc::sockaddr_nl).cast(),
                size_of::<libc::sockaddr_nl>() as libc::socklen_t,
            )
        })?;
        Ok(Self { fd })
    }

    /// Reads one datagram of notifications; `WouldBlock` when none is queued, `ENOBUFS` when
    /// some were lost (then call `request_dump`).
    pub fn recv(&self, buf: &mut [u8]) -> io::Result<Vec<LinkChange>> {
        // SAFETY: `buf` is valid for writes of its length.
        let len = cvt_size(unsafe {
            libc::recv(self.fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0)
        })?;
        Ok(parse_link_messages(&buf[..len.min(buf.len())]))
    }

    /// Asks the kernel for the state of every link (RTM_GETLINK dump); the answers arrive as
    /// RTM_NEWLINK messages through `recv`.
    pub fn request_dump(&self) -> io::Result<()> {
        const LEN: usize = NLMSG_HDR_LEN + IFINFOMSG_LEN;
        let mut request = [0u8; LEN];
        request[0..4].copy_from_slice(&(LEN as u32).to_ne_bytes());
        request[4..6].copy_from_slice(&RTM_GETLINK.to_ne_bytes());
        let flags = (libc::NLM_F_REQUEST | libc::NLM_F_DUMP) as u16;
        request[6..8].copy_from_slice(&flags.to_ne_bytes());
        // SAFETY: `request` is valid for reads of its length; the kernel is the destination.
        cvt_size(unsafe {
            libc::send(
                self.fd.as_raw_fd(),
                request.as_ptr().cast(),
                request.len(),
                0,
            )
        })
        .map(drop)
    }
}

impl AsRawFd for LinkMonitor {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn link_message(kind: u16, index: u32, flags: u32, extra: usize) -> Vec<u8> {
        let len = NLMSG_HDR_LEN + IFINFOMSG_LEN + extra;
        let mut msg = vec![0u8; len];
        msg[0..4].copy_from_slice(&(len as u32).to_ne_bytes());
        msg[4..6].copy_from_slice(&kind.to_ne_bytes());
        msg[NLMSG_HDR_LEN + 4..NLMSG_HDR_LEN + 8].copy_from_slice(&index.to_ne_bytes());
        msg[NLMSG_HDR_LEN + 8..NLMSG_HDR_LEN + 12].copy_from_slice(&flags.to_ne_bytes());
        msg.resize((len + 3) & !3, 0);
        msg
    }

    #[test]
    fn new_and_deleted_links_are_read_from_one_datagram() {
        let up = (libc::IFF_UP | libc::IFF_RUNNING) as u32;
        let mut datagram = link_message(RTM_NEWLINK, 7, up, 5);
        datagram.extend(link_message(RTM_DELLINK, 8, up, 0));
        datagram.extend(link_message(libc::NLMSG_DONE as u16, 0, 0, 0));
        let changes = parse_link_messages(&datagram);
        assert_eq!(
            changes,
            [
                LinkChange {
                    index: 7,
                    flags: up
                },
                LinkChange { index: 8, flags: 0 }
            ]
        );
        assert!(changes[0].is_up());
        assert!(!changes[1].is_up());
    }

    #[test]
    fn message_claiming_more_than_the_datagram_stops_parsing() {
        let mut datagram = link_message(RTM_NEWLINK, 7, 1, 0);
        datagram[0..4].copy_from_slice(&1000u32.to_ne_bytes());
        assert!(parse_link_messages(&datagram).is_empty());
    }

    #[test]
    fn solicitation_filter_is_a_valid_program_shape() {
        // Every jump lands inside the program and the last two instructions return.
        for (at, insn) in NEIGHBOR_SOLICIT_FILTER.iter().enumerate() {
            if insn.code == BPF_JEQ_K {
                assert!(at + 1 + usize::from(insn.jt) < NEIGHBOR_SOLICIT_FILTER.len());
                assert!(at + 1 + usize::from(insn.jf) < NEIGHBOR_SOLICIT_FILTER.len());
            }
        }
        assert_eq!(NEIGHBOR_SOLICIT_FILTER[4].code, BPF_RET_K);
        assert_eq!(NEIGHBOR_SOLICIT_FILTER[5].k, 0);
    }

    proptest! {
        #[test]
        fn link_parser_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            let _ = parse_link_messages(&bytes);
        }
    }
}
