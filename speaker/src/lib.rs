//! Cairn's per-node speaker: membership leases, VIP ownership, and the wiring of ARP, BGP and XDP.
//!
//! Empty for now: filled by issue 7 ("Speaker").
