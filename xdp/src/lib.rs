//! XDP forwarding stage: Maglev table builder, BPF programs and their aya loader.
//!
//! Empty for now: filled by issue 8 ("XDP forwarding stage").
