//! Cairn's allocator: assigns LoadBalancer Services addresses from `IPAddressPool`s.
//!
//! Empty for now. The pure allocation engine comes with issue 3 ("Allocator engine"), the kube
//! adapter and the `cairn-allocator` binary with issue 5 ("Allocator controller").
