//! The responder's whole decision on one received frame: must never panic, and may only answer
//! a request for an owned address with a frame that itself parses.
#![no_main]

use std::net::IpAddr;

use cairn_arp::respond::{respond, Verdict};
use cairn_arp::wire::ethernet;
use cairn_arp::MacAddr;
use libfuzzer_sys::fuzz_target;

const US: MacAddr = MacAddr([0x02, 0, 0, 0, 0, 0x0b]);

fn owned(ip: IpAddr) -> bool {
    ip == IpAddr::from([192, 0, 2, 100])
        || ip == IpAddr::from([0x2001, 0xdb8, 0, 0, 0, 0, 0, 0x64u16])
}

fuzz_target!(|frame: &[u8]| {
    if let Verdict::Reply { vip, frame } = respond(frame, US, owned) {
        assert!(owned(vip));
        let reply = ethernet::Frame::new_checked(&frame[..]).expect("reply parses");
        assert_eq!(reply.src_addr(), US);
    }
});
