//! Layer 2 announcement: gratuitous ARP / unsolicited NDP bursts and an ARP/NS responder.
//!
//! Empty for now: filled by issue 6 ("Layer 2").
