//! Next hops from the kernel: the route towards a backend node (a `RTM_GETROUTE` lookup, as
//! `ip route get`), the neighbour table (a `RTM_GETNEIGH` dump), both on a `NETLINK_ROUTE` socket
//! (rtnetlink(7)); an interface's MAC address (`SIOCGIFHWADDR`, netdevice(7)); and a nudge that
//! makes the kernel resolve a neighbour it does not know yet (one empty UDP datagram to the
//! discard port, RFC 863: the kernel holds it while it sends an ARP request, RFC 826, or a
//! neighbour solicitation, RFC 4861 §7.2).
//!
//! Everything acts in the calling thread's network namespace. The parsers ([`parse_datagram`],
//! [`parse_neighbour`], [`parse_route`]) are pure and never panic on any input. It must not
//! write to the routing or neighbour tables, and an entry without a usable link-layer address
//! (incomplete, failed, no-ARP, all-zero) is never reported as one.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

/// Netlink and neighbour-message layout (`linux/netlink.h`, `linux/neighbour.h`).
mod field {
    /// `struct nlmsghdr`: length, type, flags, sequence, port id.
    pub const NLMSG_LEN: std::ops::Range<usize> = 0..4;
    pub const NLMSG_TYPE: std::ops::Range<usize> = 4..6;
    pub const NLMSG_FLAGS: std::ops::Range<usize> = 6..8;
    pub const NLMSG_SEQ: std::ops::Range<usize> = 8..12;
    pub const NLMSG_HEADER_LEN: usize = 16;
    /// `struct ndmsg` after the header: family, 3 pad bytes, ifindex, state, flags, type.
    pub const NDM_FAMILY: usize = 0;
    pub const NDM_IFINDEX: std::ops::Range<usize> = 4..8;
    pub const NDM_STATE: std::ops::Range<usize> = 8..10;
    pub const NDMSG_LEN: usize = 12;
    /// `struct rtmsg` after the header: family, dst_len, src_len, tos, table, protocol, scope,
    /// type, flags (u32).
    pub const RTM_FAMILY: usize = 0;
    pub const RTM_DST_LEN: usize = 1;
    pub const RTMSG_LEN: usize = 12;
    /// `struct rtattr`: length, type.
    pub const RTA_LEN: std::ops::Range<usize> = 0..2;
    pub const RTA_TYPE: std::ops::Range<usize> = 2..4;
    pub const RTA_HEADER_LEN: usize = 4;
}

const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const RTM_NEWNEIGH: u16 = 28;
const RTM_GETNEIGH: u16 = 30;
const RTM_NEWROUTE: u16 = 24;
const RTM_GETROUTE: u16 = 26;
const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_DUMP: u16 = 0x300;
const NDA_DST: u16 = 1;
const NDA_LLADDR: u16 = 2;
const RTA_DST: u16 = 1;
const RTA_OIF: u16 = 4;
const RTA_GATEWAY: u16 = 5;
const AF_INET: u8 = 2;
const AF_INET6: u8 = 10;

/// `NUD_*` states in which the entry's link-layer address can be used: reachable, stale, delay,
/// probe, permanent. Not incomplete (0x01), failed (0x20) or no-ARP (0x40).
const NUD_USABLE: u16 = 0x02 | 0x04 | 0x08 | 0x10 | 0x80;

/// The discard port (RFC 863): the nudge's datagram is not meant to be answered.
const DISCARD_PORT: u16 = 9;

/// One neighbour-table entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Neighbour {
    /// The interface it was learnt on.
    pub ifindex: u32,
    /// The neighbour's IP address.
    pub addr: IpAddr,
    /// Its link-layer address, when it has a 6-byte one.
    pub mac: Option<[u8; 6]>,
    /// The `NUD_*` state bits.
    pub state: u16,
}

impl Neighbour {
    /// The MAC address, if the entry is in a usable state and has a non-zero one.
    pub fn usable_mac(&self) -> Option<[u8; 6]> {
        self.mac
            .filter(|m| *m != [0; 6] && self.state & NUD_USABLE != 0)
    }
}

/// The netlink messages of one datagram.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Datagram<'a> {
    /// (message type, body after the `nlmsghdr`), in order.
    pub messages: Vec<(u16, &'a [u8])>,
    /// The answer ended (`NLMSG_DONE`, or an error or acknowledgement).
    pub done: bool,
    /// The kernel answered with this error (a negative errno).
    pub error: Option<i32>,
}

fn ne_u16(bytes: &[u8], range: std::ops::Range<usize>) -> Option<u16> {
    Some(u16::from_ne_bytes(bytes.get(range)?.try_into().ok()?))
}

fn ne_u32(bytes: &[u8], range: std::ops::Range<usize>) -> Option<u32> {
    Some(u32::from_ne_bytes(bytes.get(range)?.try_into().ok()?))
}

const fn align4(n: usize) -> usize {
    (n + 3) & !3
}

/// Splits one datagram into its netlink messages (host byte order). A truncated or malformed
/// message ends the parse; the messages before it are kept.
pub fn parse_datagram(mut bytes: &[u8]) -> Datagram<'_> {
    let mut out = Datagram::default();
    while bytes.len() >= field::NLMSG_HEADER_LEN {
        let (Some(len), Some(kind)) = (
            ne_u32(bytes, field::NLMSG_LEN),
            ne_u16(bytes, field::NLMSG_TYPE),
        ) else {
            break;
        };
        let len = len as usize;
        if len < field::NLMSG_HEADER_LEN || len > bytes.len() {
            break;
        }
        let body = &bytes[field::NLMSG_HEADER_LEN..len];
        match kind {
            NLMSG_DONE => {
                out.done = true;
                break;
            }
            NLMSG_ERROR => {
                // The body starts with the (negative) errno; 0 is an acknowledgement.
                let errno = ne_u32(body, 0..4).map(|e| e as i32).unwrap_or(0);
                if errno != 0 {
                    out.error = Some(errno);
                }
                out.done = true;
                break;
            }
            _ => out.messages.push((kind, body)),
        }
        bytes = bytes.get(align4(len)..).unwrap_or(&[]);
    }
    out
}

/// The `rtattr`s of a message's attribute area, up to the first malformed one.
fn attributes(mut bytes: &[u8]) -> impl Iterator<Item = (u16, &[u8])> {
    std::iter::from_fn(move || {
        let len = usize::from(ne_u16(bytes, field::RTA_LEN)?);
        let kind = ne_u16(bytes, field::RTA_TYPE)?;
        if len < field::RTA_HEADER_LEN || len > bytes.len() {
            return None;
        }
        let value = &bytes[field::RTA_HEADER_LEN..len];
        bytes = bytes.get(align4(len)..).unwrap_or(&[]);
        Some((kind, value))
    })
}

fn ip_of(family: u8, value: &[u8]) -> Option<IpAddr> {
    match family {
        AF_INET => Some(IpAddr::V4(Ipv4Addr::from(<[u8; 4]>::try_from(value).ok()?))),
        AF_INET6 => Some(IpAddr::V6(Ipv6Addr::from(
            <[u8; 16]>::try_from(value).ok()?,
        ))),
        _ => None,
    }
}

/// Parses the body of a `RTM_NEWNEIGH` message; `None` without a destination address.
pub fn parse_neighbour(body: &[u8]) -> Option<Neighbour> {
    let family = *body.get(field::NDM_FAMILY)?;
    let ifindex = ne_u32(body, field::NDM_IFINDEX)?;
    let state = ne_u16(body, field::NDM_STATE)?;
    let mut addr = None;
    let mut mac = None;
    for (kind, value) in attributes(body.get(field::NDMSG_LEN..)?) {
        match kind {
            NDA_DST => addr = ip_of(family, value),
            NDA_LLADDR => mac = value.try_into().ok(),
            _ => {}
        }
    }
    Some(Neighbour {
        ifindex,
        addr: addr?,
        mac,
        state,
    })
}

/// The route the kernel would use towards an address.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Route {
    /// The outgoing interface.
    pub oif: Option<u32>,
    /// The gateway, when the destination is not on-link.
    pub gateway: Option<IpAddr>,
}

/// Parses the body of a `RTM_NEWROUTE` message.
pub fn parse_route(body: &[u8]) -> Option<Route> {
    let family = *body.get(field::RTM_FAMILY)?;
    let mut route = Route::default();
    for (kind, value) in attributes(body.get(field::RTMSG_LEN..)?) {
        match kind {
            RTA_OIF => route.oif = ne_u32(value, 0..4),
            RTA_GATEWAY => route.gateway = ip_of(family, value),
            _ => {}
        }
    }
    Some(route)
}

fn header(len: usize, kind: u16, flags: u16, seq: u32) -> Vec<u8> {
    let mut message = vec![0u8; field::NLMSG_HEADER_LEN];
    message[field::NLMSG_LEN].copy_from_slice(&(len as u32).to_ne_bytes());
    message[field::NLMSG_TYPE].copy_from_slice(&kind.to_ne_bytes());
    message[field::NLMSG_FLAGS].copy_from_slice(&flags.to_ne_bytes());
    message[field::NLMSG_SEQ].copy_from_slice(&seq.to_ne_bytes());
    message
}

/// The `RTM_GETNEIGH` dump request for every family.
fn neighbour_dump_request() -> Vec<u8> {
    let len = field::NLMSG_HEADER_LEN + field::NDMSG_LEN;
    let mut request = header(len, RTM_GETNEIGH, NLM_F_REQUEST | NLM_F_DUMP, 1);
    request.resize(len, 0);
    request
}

/// The `RTM_GETROUTE` request for the route to `addr` (a lookup, as `ip route get`).
fn route_request(addr: IpAddr) -> Vec<u8> {
    let (family, octets, bits): (u8, Vec<u8>, u8) = match addr {
        IpAddr::V4(a) => (AF_INET, a.octets().to_vec(), 32),
        IpAddr::V6(a) => (AF_INET6, a.octets().to_vec(), 128),
    };
    let attr_len = field::RTA_HEADER_LEN + octets.len();
    let len = field::NLMSG_HEADER_LEN + field::RTMSG_LEN + align4(attr_len);
    let mut request = header(len, RTM_GETROUTE, NLM_F_REQUEST, 1);
    let mut rtmsg = [0u8; field::RTMSG_LEN];
    rtmsg[field::RTM_FAMILY] = family;
    rtmsg[field::RTM_DST_LEN] = bits;
    request.extend_from_slice(&rtmsg);
    request.extend_from_slice(&(attr_len as u16).to_ne_bytes());
    request.extend_from_slice(&RTA_DST.to_ne_bytes());
    request.extend_from_slice(&octets);
    request.resize(len, 0);
    request
}

/// Sends `request` on a new `NETLINK_ROUTE` socket and collects the answer's messages (until
/// `NLMSG_DONE` for a dump, the first datagram otherwise).
fn exchange(request: &[u8], dump: bool) -> io::Result<Vec<(u16, Vec<u8>)>> {
    // SAFETY: socket(2) with constant arguments; the fd is owned (and closed) by `OwnedFd`.
    let fd = unsafe {
        let raw = libc::socket(
            libc::AF_NETLINK,
            libc::SOCK_RAW | libc::SOCK_CLOEXEC,
            libc::NETLINK_ROUTE,
        );
        if raw < 0 {
            return Err(io::Error::last_os_error());
        }
        OwnedFd::from_raw_fd(raw)
    };
    let timeout = libc::timeval {
        tv_sec: 2,
        tv_usec: 0,
    };
    // SAFETY: setsockopt(2) with a valid timeval that outlives the call.
    let rc = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVTIMEO,
            (&timeout as *const libc::timeval).cast(),
            std::mem::size_of::<libc::timeval>() as libc::socklen_t,
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: send(2) of a buffer we own; an unbound netlink socket sends to the kernel.
    let sent = unsafe { libc::send(fd.as_raw_fd(), request.as_ptr().cast(), request.len(), 0) };
    if sent < 0 {
        return Err(io::Error::last_os_error());
    }
    let mut buf = vec![0u8; 64 * 1024];
    let mut messages = Vec::new();
    loop {
        // SAFETY: recv(2) into a buffer we own, bounded by its length.
        let n = unsafe { libc::recv(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        let datagram = parse_datagram(&buf[..n as usize]);
        if let Some(errno) = datagram.error {
            return Err(io::Error::from_raw_os_error(-errno));
        }
        messages.extend(
            datagram
                .messages
                .iter()
                .map(|(kind, body)| (*kind, body.to_vec())),
        );
        if datagram.done || n == 0 || !dump {
            return Ok(messages);
        }
    }
}

/// Every entry of the neighbour table (calling thread's namespace).
pub fn dump() -> io::Result<Vec<Neighbour>> {
    Ok(exchange(&neighbour_dump_request(), true)?
        .iter()
        .filter(|(kind, _)| *kind == RTM_NEWNEIGH)
        .filter_map(|(_, body)| parse_neighbour(body))
        .collect())
}

/// The route the kernel would use to reach `addr` (calling thread's namespace); an error when
/// there is none (`ENETUNREACH`, ...).
pub fn route(addr: IpAddr) -> io::Result<Route> {
    exchange(&route_request(addr), false)?
        .iter()
        .filter(|(kind, _)| *kind == RTM_NEWROUTE)
        .find_map(|(_, body)| parse_route(body))
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "no route in the answer"))
}

/// The index of interface `ifname` (calling thread's namespace).
pub fn ifindex(ifname: &str) -> io::Result<u32> {
    let name = std::ffi::CString::new(ifname)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL in interface name"))?;
    // SAFETY: if_nametoindex(3) reads a NUL-terminated string we own.
    let index = unsafe { libc::if_nametoindex(name.as_ptr()) };
    if index == 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(index)
}

/// The MAC address of interface `ifname` (calling thread's namespace).
pub fn interface_mac(ifname: &str) -> io::Result<[u8; 6]> {
    if ifname.len() >= libc::IFNAMSIZ || ifname.as_bytes().contains(&0) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "bad interface name",
        ));
    }
    // SAFETY: an all-zero ifreq is valid; its name is filled below within IFNAMSIZ - 1 bytes.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in req.ifr_name.iter_mut().zip(ifname.as_bytes()) {
        *dst = *src as libc::c_char;
    }
    // A datagram socket only to carry the ioctl.
    let socket = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0))?;
    // SAFETY: SIOCGIFHWADDR with a properly laid out ifreq that outlives the call.
    let rc = unsafe { libc::ioctl(socket.as_raw_fd(), libc::SIOCGIFHWADDR, &mut req) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: after SIOCGIFHWADDR succeeded, the union holds `ifru_hwaddr`.
    let data = unsafe { req.ifr_ifru.ifru_hwaddr.sa_data };
    let mut mac = [0u8; 6];
    for (dst, src) in mac.iter_mut().zip(data.iter()) {
        *dst = *src as u8;
    }
    Ok(mac)
}

/// Makes the kernel resolve `addr`'s link-layer address: one empty UDP datagram to its discard
/// port (the kernel holds it while it sends an ARP request or neighbour solicitation).
pub fn solicit(addr: IpAddr) -> io::Result<()> {
    let local: SocketAddr = match addr {
        IpAddr::V4(_) => (Ipv4Addr::UNSPECIFIED, 0).into(),
        IpAddr::V6(_) => (Ipv6Addr::UNSPECIFIED, 0).into(),
    };
    let socket = UdpSocket::bind(local)?;
    socket.connect((addr, DISCARD_PORT))?;
    socket.send(&[]).map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn rtattr(kind: u16, value: &[u8]) -> Vec<u8> {
        let mut a = Vec::new();
        a.extend_from_slice(&((4 + value.len()) as u16).to_ne_bytes());
        a.extend_from_slice(&kind.to_ne_bytes());
        a.extend_from_slice(value);
        a.resize(align4(a.len()), 0);
        a
    }

    fn message(kind: u16, body: &[u8]) -> Vec<u8> {
        let mut m = Vec::new();
        m.extend_from_slice(&((16 + body.len()) as u32).to_ne_bytes());
        m.extend_from_slice(&kind.to_ne_bytes());
        m.extend_from_slice(&2u16.to_ne_bytes());
        m.extend_from_slice(&1u32.to_ne_bytes());
        m.extend_from_slice(&0u32.to_ne_bytes());
        m.extend_from_slice(body);
        m.resize(align4(m.len()), 0);
        m
    }

    fn neigh(family: u8, ifindex: u32, state: u16, dst: &[u8], mac: Option<&[u8]>) -> Vec<u8> {
        let mut body = vec![family, 0, 0, 0];
        body.extend_from_slice(&ifindex.to_ne_bytes());
        body.extend_from_slice(&state.to_ne_bytes());
        body.extend_from_slice(&[0, 1]);
        body.extend(rtattr(NDA_DST, dst));
        if let Some(mac) = mac {
            body.extend(rtattr(NDA_LLADDR, mac));
        }
        message(RTM_NEWNEIGH, &body)
    }

    const MAC: [u8; 6] = [2, 0, 0, 0, 0, 0x11];

    fn neighbours(bytes: &[u8]) -> Vec<Neighbour> {
        parse_datagram(bytes)
            .messages
            .iter()
            .filter(|(kind, _)| *kind == RTM_NEWNEIGH)
            .filter_map(|(_, body)| parse_neighbour(body))
            .collect()
    }

    #[test]
    fn entries_of_both_families_and_the_end_of_the_dump_are_read() {
        let v6: Ipv6Addr = "2001:db8::11".parse().expect("address");
        let mut datagram = neigh(AF_INET, 3, 0x02, &[198, 51, 100, 11], Some(&MAC));
        datagram.extend(neigh(AF_INET6, 3, 0x04, &v6.octets(), Some(&MAC)));
        datagram.extend(message(NLMSG_DONE, &[0; 4]));
        let part = parse_datagram(&datagram);
        assert!(part.done);
        assert_eq!(part.error, None);
        let found = neighbours(&datagram);
        assert_eq!(
            found,
            vec![
                Neighbour {
                    ifindex: 3,
                    addr: IpAddr::V4(Ipv4Addr::new(198, 51, 100, 11)),
                    mac: Some(MAC),
                    state: 0x02,
                },
                Neighbour {
                    ifindex: 3,
                    addr: IpAddr::V6(v6),
                    mac: Some(MAC),
                    state: 0x04,
                },
            ]
        );
        assert!(found.iter().all(|n| n.usable_mac() == Some(MAC)));
    }

    #[test]
    fn incomplete_failed_and_zero_entries_give_no_mac() {
        let dst = [198, 51, 100, 12];
        for (state, mac) in [
            (0x01, None),
            (0x20, Some(&MAC[..])),
            (0x40, Some(&MAC[..])),
            (0x02, Some(&[0u8; 6][..])),
            (0x02, Some(&[1u8, 2, 3, 4][..])),
        ] {
            let found = neighbours(&neigh(AF_INET, 3, state, &dst, mac));
            assert_eq!(found.len(), 1);
            assert_eq!(found[0].usable_mac(), None, "state {state:#x}");
        }
    }

    #[test]
    fn a_kernel_error_ends_the_answer_with_its_errno() {
        let datagram = message(NLMSG_ERROR, &(-13i32).to_ne_bytes());
        let part = parse_datagram(&datagram);
        assert!(part.done);
        assert_eq!(part.error, Some(-13));
    }

    #[test]
    fn a_message_claiming_more_than_the_datagram_stops_parsing() {
        let mut datagram = neigh(AF_INET, 3, 0x02, &[198, 51, 100, 11], Some(&MAC));
        let mut truncated = neigh(AF_INET, 3, 0x02, &[198, 51, 100, 12], Some(&MAC));
        truncated.truncate(20);
        datagram.extend(truncated);
        assert_eq!(neighbours(&datagram).len(), 1);
        assert!(!parse_datagram(&datagram).done);
    }

    #[test]
    fn the_neighbour_request_is_a_dump_of_every_family() {
        let request = neighbour_dump_request();
        assert_eq!(request.len(), 28);
        assert_eq!(ne_u16(&request, field::NLMSG_TYPE), Some(RTM_GETNEIGH));
        assert_eq!(
            ne_u16(&request, field::NLMSG_FLAGS),
            Some(NLM_F_REQUEST | NLM_F_DUMP)
        );
        assert_eq!(request[field::NLMSG_HEADER_LEN + field::NDM_FAMILY], 0);
    }

    #[test]
    fn the_route_request_asks_for_one_host_address() {
        let request = route_request(IpAddr::V4(Ipv4Addr::new(198, 51, 100, 11)));
        assert_eq!(request.len(), 16 + 12 + 8);
        assert_eq!(ne_u32(&request, field::NLMSG_LEN), Some(36));
        assert_eq!(ne_u16(&request, field::NLMSG_TYPE), Some(RTM_GETROUTE));
        assert_eq!(ne_u16(&request, field::NLMSG_FLAGS), Some(NLM_F_REQUEST));
        assert_eq!(&request[16..18], &[AF_INET, 32]);
        assert_eq!(ne_u16(&request, 28..30), Some(8));
        assert_eq!(ne_u16(&request, 30..32), Some(RTA_DST));
        assert_eq!(&request[32..36], &[198, 51, 100, 11]);
        let v6 = route_request("2001:db8::11".parse().expect("address"));
        assert_eq!(v6.len(), 16 + 12 + 20);
        assert_eq!(&v6[16..18], &[AF_INET6, 128]);
    }

    #[test]
    fn a_route_gives_its_interface_and_gateway() {
        let mut body = vec![AF_INET, 32, 0, 0, 254, 0, 0, 1, 0, 0, 0, 0];
        body.extend(rtattr(RTA_DST, &[203, 0, 113, 5]));
        body.extend(rtattr(RTA_OIF, &7u32.to_ne_bytes()));
        body.extend(rtattr(RTA_GATEWAY, &[198, 51, 100, 254]));
        let datagram = message(RTM_NEWROUTE, &body);
        let part = parse_datagram(&datagram);
        assert_eq!(part.messages.len(), 1);
        assert_eq!(
            parse_route(part.messages[0].1),
            Some(Route {
                oif: Some(7),
                gateway: Some(IpAddr::V4(Ipv4Addr::new(198, 51, 100, 254))),
            })
        );
    }

    proptest! {
        #[test]
        fn the_parsers_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let part = parse_datagram(&bytes);
            for (_, body) in part.messages {
                let _ = parse_neighbour(body);
                let _ = parse_route(body);
            }
            let _ = parse_neighbour(&bytes);
            let _ = parse_route(&bytes);
        }

        #[test]
        fn the_parsers_never_panic_on_mutated_entries(
            flips in proptest::collection::vec((0usize..64, any::<u8>()), 0..8),
        ) {
            let mut datagram = neigh(AF_INET, 3, 0x02, &[198, 51, 100, 11], Some(&MAC));
            for (at, value) in flips {
                if let Some(b) = datagram.get_mut(at) {
                    *b = value;
                }
            }
            let _ = neighbours(&datagram);
        }
    }
}
