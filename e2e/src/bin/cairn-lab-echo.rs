//! `cairn-lab-echo`: the lab's backend server. Listens on TCP and UDP on the wildcard addresses
//! (`0.0.0.0` and `[::]`, IPv6-only so that IPv4 clients are reported as IPv4) and answers every
//! connection or datagram with one line: `<node name> <client address:port>`, the address it
//! saw. That line is how the lab and the demo check which backend answered and whether the
//! client's source address survived the path (load balancer, encapsulation, DSR).
//!
//! UDP replies leave from the address the datagram was sent to (IP_PKTINFO / IPV6_PKTINFO), as a
//! VIP-bound server must for direct server return; TCP gets that from the kernel. It serves until
//! killed and keeps no state; it never initiates traffic.

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::os::fd::AsRawFd;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use socket2::{Domain, Protocol, Socket, Type};

/// Echo server reporting the client address it saw.
#[derive(Debug, Parser)]
#[command(name = "cairn-lab-echo", version)]
struct Args {
    /// The name to report (the node this server runs on).
    #[arg(long)]
    name: String,
    /// The TCP and UDP port to listen on (both address families).
    #[arg(long, default_value_t = 8080)]
    port: u16,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let mut threads = Vec::new();
    for ip in [
        IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        IpAddr::V6(Ipv6Addr::UNSPECIFIED),
    ] {
        let addr = SocketAddr::new(ip, args.port);
        let tcp = match bind(addr, Type::STREAM, Protocol::TCP) {
            Ok(s) => TcpListener::from(s),
            Err(e) => return fail(&format!("binding TCP {addr}: {e}")),
        };
        let udp = match bind(addr, Type::DGRAM, Protocol::UDP).and_then(enable_pktinfo) {
            Ok(s) => UdpSocket::from(s),
            Err(e) => return fail(&format!("binding UDP {addr}: {e}")),
        };
        let name = args.name.clone();
        threads.push(std::thread::spawn(move || serve_tcp(&tcp, &name)));
        let name = args.name.clone();
        threads.push(std::thread::spawn(move || serve_udp(&udp, &name)));
    }
    println!("{} serving on port {}", args.name, args.port);
    for thread in threads {
        let _ = thread.join();
    }
    fail("a listener stopped")
}

fn fail(message: &str) -> ExitCode {
    eprintln!("cairn-lab-echo: {message}");
    ExitCode::FAILURE
}

fn bind(addr: SocketAddr, kind: Type, protocol: Protocol) -> std::io::Result<Socket> {
    let socket = Socket::new(Domain::for_address(addr), kind, Some(protocol))?;
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    socket.set_reuse_address(true)?;
    socket.bind(&addr.into())?;
    if kind == Type::STREAM {
        socket.listen(128)?;
    }
    Ok(socket)
}

fn reply_line(name: &str, peer: SocketAddr) -> String {
    format!("{name} {peer}\n")
}

fn serve_tcp(listener: &TcpListener, name: &str) {
    for stream in listener.incoming() {
        match stream {
            Ok(stream) => {
                let name = name.to_owned();
                std::thread::spawn(move || answer_tcp(stream, &name));
            }
            Err(e) => eprintln!("cairn-lab-echo: accept: {e}"),
        }
    }
}

/// Writes the line, then drains what the client sent (so closing does not reset the connection
/// and lose the line) until it closes or goes quiet.
fn answer_tcp(mut stream: TcpStream, name: &str) {
    let Ok(peer) = stream.peer_addr() else {
        return;
    };
    if stream
        .write_all(reply_line(name, unmap(peer)).as_bytes())
        .is_err()
    {
        return;
    }
    let _ = stream.shutdown(std::net::Shutdown::Write);
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    let mut sink = [0u8; 1024];
    while matches!(stream.read(&mut sink), Ok(n) if n > 0) {}
}

fn unmap(addr: SocketAddr) -> SocketAddr {
    match addr {
        SocketAddr::V6(v6) => match v6.ip().to_ipv4_mapped() {
            Some(v4) => SocketAddr::new(IpAddr::V4(v4), v6.port()),
            None => addr,
        },
        SocketAddr::V4(_) => addr,
    }
}

fn enable_pktinfo(socket: Socket) -> std::io::Result<Socket> {
    let on: libc::c_int = 1;
    let (level, option) = if socket.local_addr()?.is_ipv6() {
        (libc::IPPROTO_IPV6, libc::IPV6_RECVPKTINFO)
    } else {
        (libc::IPPROTO_IP, libc::IP_PKTINFO)
    };
    // SAFETY: setsockopt with a pointer to a live c_int and its size.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            level,
            option,
            (&on as *const libc::c_int).cast(),
            size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(socket)
}

fn serve_udp(socket: &UdpSocket, name: &str) {
    let mut buf = [0u8; 2048];
    loop {
        match recv_with_destination(socket, &mut buf) {
            Ok((peer, pktinfo)) => {
                let line = reply_line(name, peer);
                if let Err(e) = send_from(socket, line.as_bytes(), peer, &pktinfo) {
                    eprintln!("cairn-lab-echo: UDP reply to {peer}: {e}");
                }
            }
            Err(e) => eprintln!("cairn-lab-echo: UDP receive: {e}"),
        }
    }
}

/// The control message of a received datagram naming its destination address, echoed back
/// as-is on the reply so that it leaves from that address.
struct PktInfo {
    control: [u64; 8],
    len: usize,
}

fn recv_with_destination(
    socket: &UdpSocket,
    buf: &mut [u8],
) -> std::io::Result<(SocketAddr, PktInfo)> {
    // SAFETY: all-zero is a valid sockaddr_storage.
    let mut from: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    let mut control = [0u64; 8];
    // SAFETY: all-zero is a valid msghdr; the pointers set below outlive the call.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_name = (&mut from as *mut libc::sockaddr_storage).cast();
    msg.msg_namelen = size_of::<libc::sockaddr_storage>() as libc::socklen_t;
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = size_of_val(&control);
    // SAFETY: msg points at live buffers of the sizes given.
    let n = unsafe { libc::recvmsg(socket.as_raw_fd(), &mut msg, 0) };
    if n < 0 {
        return Err(std::io::Error::last_os_error());
    }
    let peer = sockaddr_to_std(&from)
        .ok_or_else(|| std::io::Error::other("datagram from an unknown address family"))?;
    let mut info = PktInfo {
        control: [0; 8],
        len: 0,
    };
    // SAFETY: walking the control buffer the kernel filled, with the CMSG_* helpers.
    unsafe {
        let mut cmsg = libc::CMSG_FIRSTHDR(&msg);
        while !cmsg.is_null() {
            let header = &*cmsg;
            let wanted = (header.cmsg_level == libc::IPPROTO_IP
                && header.cmsg_type == libc::IP_PKTINFO)
                || (header.cmsg_level == libc::IPPROTO_IPV6
                    && header.cmsg_type == libc::IPV6_PKTINFO);
            if wanted {
                let len = header.cmsg_len;
                if len <= size_of_val(&info.control) {
                    std::ptr::copy_nonoverlapping(
                        cmsg.cast::<u8>(),
                        info.control.as_mut_ptr().cast::<u8>(),
                        len,
                    );
                    info.len = libc::CMSG_SPACE((len - libc::CMSG_LEN(0) as usize) as u32) as usize;
                    clear_ifindex(&mut info);
                }
                break;
            }
            cmsg = libc::CMSG_NXTHDR(&msg, cmsg);
        }
    }
    Ok((peer, info))
}

/// Sets the interface index of the pktinfo to 0, so the reply is routed normally and only its
/// source address is pinned.
fn clear_ifindex(info: &mut PktInfo) {
    // SAFETY: control holds one cmsghdr followed by its in_pktinfo or in6_pktinfo.
    unsafe {
        let cmsg = info.control.as_mut_ptr().cast::<libc::cmsghdr>();
        let data = libc::CMSG_DATA(cmsg);
        if (*cmsg).cmsg_level == libc::IPPROTO_IP {
            let pkt = data.cast::<libc::in_pktinfo>();
            let mut value = std::ptr::read_unaligned(pkt);
            value.ipi_ifindex = 0;
            value.ipi_spec_dst = value.ipi_addr;
            std::ptr::write_unaligned(pkt, value);
        } else {
            let pkt = data.cast::<libc::in6_pktinfo>();
            let mut value = std::ptr::read_unaligned(pkt);
            value.ipi6_ifindex = 0;
            std::ptr::write_unaligned(pkt, value);
        }
    }
}

fn send_from(
    socket: &UdpSocket,
    payload: &[u8],
    to: SocketAddr,
    info: &PktInfo,
) -> std::io::Result<()> {
    if info.len == 0 {
        return socket.send_to(payload, to).map(drop);
    }
    let to = socket2::SockAddr::from(to);
    let mut iov = libc::iovec {
        iov_base: payload.as_ptr().cast_mut().cast(),
        iov_len: payload.len(),
    };
    let mut control = info.control;
    // SAFETY: all-zero is a valid msghdr; the pointers set below outlive the call.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_name = to.as_ptr().cast_mut().cast();
    msg.msg_namelen = to.len();
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = info.len;
    // SAFETY: msg points at live buffers of the sizes given.
    let n = unsafe { libc::sendmsg(socket.as_raw_fd(), &msg, 0) };
    if n < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

fn sockaddr_to_std(storage: &libc::sockaddr_storage) -> Option<SocketAddr> {
    match i32::from(storage.ss_family) {
        libc::AF_INET => {
            // SAFETY: the family says this storage holds a sockaddr_in.
            let sin =
                unsafe { &*(storage as *const libc::sockaddr_storage).cast::<libc::sockaddr_in>() };
            Some(SocketAddr::new(
                IpAddr::V4(Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr))),
                u16::from_be(sin.sin_port),
            ))
        }
        libc::AF_INET6 => {
            // SAFETY: the family says this storage holds a sockaddr_in6.
            let sin6 = unsafe {
                &*(storage as *const libc::sockaddr_storage).cast::<libc::sockaddr_in6>()
            };
            Some(SocketAddr::new(
                IpAddr::V6(Ipv6Addr::from(sin6.sin6_addr.s6_addr)),
                u16::from_be(sin6.sin6_port),
            ))
        }
        _ => None,
    }
}
