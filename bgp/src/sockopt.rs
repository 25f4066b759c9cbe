//! Socket options a BGP session needs before connecting: TCP MD5 signatures (RFC 2385,
//! `TCP_MD5SIG`) and the outgoing TTL / hop limit (eBGP multihop, RFC 4271 §5.1.3 practice).
//!
//! libc exports the `TCP_MD5SIG` constant but not `struct tcp_md5sig`, so it is defined here
//! exactly as in `linux/tcp.h`. This module only sets options on a socket it is given; it opens
//! and connects nothing.

use std::io;
use std::net::IpAddr;
use std::os::fd::RawFd;

/// Longest TCP MD5 key Linux accepts (`TCP_MD5SIG_MAXKEYLEN`).
pub const MD5_MAX_KEY_LEN: usize = 80;

/// `struct tcp_md5sig` from `linux/tcp.h`.
#[repr(C)]
struct TcpMd5Sig {
    tcpm_addr: libc::sockaddr_storage,
    tcpm_flags: u8,
    tcpm_prefixlen: u8,
    tcpm_keylen: u16,
    tcpm_ifindex: libc::c_int,
    tcpm_key: [u8; MD5_MAX_KEY_LEN],
}

/// Installs `key` as the TCP MD5 key for segments to and from `peer` on socket `fd`.
pub fn set_tcp_md5(fd: RawFd, peer: IpAddr, key: &[u8]) -> io::Result<()> {
    if key.len() > MD5_MAX_KEY_LEN {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "TCP MD5 key of {} bytes, at most {MD5_MAX_KEY_LEN}",
                key.len()
            ),
        ));
    }
    // SAFETY: all-zero is a valid value for these plain C structs.
    let mut sig: TcpMd5Sig = unsafe { std::mem::zeroed() };
    match peer {
        IpAddr::V4(a) => {
            // SAFETY: sockaddr_storage is larger than and aligned for sockaddr_in.
            let sin = unsafe {
                &mut *(&mut sig.tcpm_addr as *mut libc::sockaddr_storage as *mut libc::sockaddr_in)
            };
            sin.sin_family = libc::AF_INET as libc::sa_family_t;
            sin.sin_addr.s_addr = u32::from_ne_bytes(a.octets());
        }
        IpAddr::V6(a) => {
            // SAFETY: sockaddr_storage is larger than and aligned for sockaddr_in6.
            let sin6 = unsafe {
                &mut *(&mut sig.tcpm_addr as *mut libc::sockaddr_storage as *mut libc::sockaddr_in6)
            };
            sin6.sin6_family = libc::AF_INET6 as libc::sa_family_t;
            sin6.sin6_addr.s6_addr = a.octets();
        }
    }
    sig.tcpm_keylen = key.len() as u16;
    sig.tcpm_key[..key.len()].copy_from_slice(key);
    // SAFETY: `sig` is a valid tcp_md5sig and the length passed is its size.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            libc::IPPROTO_TCP,
            libc::TCP_MD5SIG,
            &sig as *const TcpMd5Sig as *const libc::c_void,
            std::mem::size_of::<TcpMd5Sig>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Sets the TTL (IPv4) or unicast hop limit (IPv6) of packets sent on `fd`.
pub fn set_ttl(fd: RawFd, ipv6: bool, ttl: u8) -> io::Result<()> {
    let value = libc::c_int::from(ttl);
    let (level, name) = if ipv6 {
        (libc::IPPROTO_IPV6, libc::IPV6_UNICAST_HOPS)
    } else {
        (libc::IPPROTO_IP, libc::IP_TTL)
    };
    // SAFETY: plain int option with its size.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            level,
            name,
            &value as *const libc::c_int as *const libc::c_void,
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsRawFd;

    #[test]
    fn tcp_md5sig_struct_has_the_kernel_layout() {
        // linux/tcp.h: 128-byte address, flags, prefixlen, keylen, ifindex, 80-byte key.
        assert_eq!(std::mem::size_of::<TcpMd5Sig>(), 128 + 1 + 1 + 2 + 4 + 80);
    }

    #[test]
    fn md5_key_and_ttl_are_accepted_by_the_kernel_and_overlong_keys_rejected() {
        let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        set_ttl(socket.as_raw_fd(), false, 5).unwrap();
        assert_eq!(socket.ttl().unwrap(), 5);
        let tcp = socket2_free_tcp_socket();
        set_tcp_md5(tcp, "192.0.2.1".parse().unwrap(), b"secret").unwrap();
        let err = set_tcp_md5(tcp, "192.0.2.1".parse().unwrap(), &[0; 81]).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
        // SAFETY: closing the fd created below.
        unsafe { libc::close(tcp) };
    }

    fn socket2_free_tcp_socket() -> RawFd {
        // SAFETY: plain socket(2) call.
        let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_STREAM, 0) };
        assert!(fd >= 0);
        fd
    }
}
