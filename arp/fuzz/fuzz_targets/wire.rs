//! Every view and repr parser of `cairn_arp::wire`, and the rtnetlink link parser, on arbitrary
//! bytes: none may panic, and what parses must emit back to bytes that parse to the same repr.
#![no_main]

use cairn_arp::sys::parse_link_messages;
use cairn_arp::wire::{arp, ethernet, ipv6, ndisc};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(frame) = ethernet::Frame::new_checked(data) {
        let repr = ethernet::EthernetRepr::parse(&frame);
        let mut out = vec![0u8; repr.buffer_len()];
        repr.emit(&mut out).expect("sized by buffer_len");
        let again = ethernet::Frame::new_checked(&out[..]).expect("emitted header parses");
        assert_eq!(ethernet::EthernetRepr::parse(&again), repr);
    }
    if let Ok(packet) = arp::Packet::new_checked(data) {
        if let Ok(repr) = arp::ArpRepr::parse(&packet) {
            let mut out = vec![0u8; repr.buffer_len()];
            repr.emit(&mut out).expect("sized by buffer_len");
            let again = arp::Packet::new_checked(&out[..]).expect("emitted ARP parses");
            assert_eq!(arp::ArpRepr::parse(&again), Ok(repr));
        }
    }
    if let Ok(packet) = ipv6::Packet::new_checked(data) {
        if let Ok((ip, repr)) = ndisc::NdiscRepr::parse_validated(&packet) {
            let mut out = vec![0u8; repr.buffer_len()];
            repr.emit(ip.src, ip.dst, &mut out).expect("sized by buffer_len");
            let again = ndisc::Packet::new_checked(&out[..]).expect("emitted NDP parses");
            assert!(again.verify_checksum(ip.src, ip.dst));
            assert_eq!(ndisc::NdiscRepr::parse(&again), Ok(repr));
        }
    }
    if let Ok(packet) = ndisc::Packet::new_checked(data) {
        let _ = ndisc::NdiscRepr::parse(&packet);
        let _ = packet.options().count();
    }
    let _ = parse_link_messages(data);
});
