//! Annotation keys on Services, Cairn's own and the MetalLB ones Cairn honours so that a cluster
//! can migrate from MetalLB without any address moving.
//!
//! Requests are written by users; bindings (`allocated-*`) are written by the allocator only.

/// Requested addresses, comma-separated (at most one per family).
pub const LOAD_BALANCER_IPS: &str = "cairn.io/loadBalancerIPs";
/// Requested pool, by name.
pub const ADDRESS_POOL: &str = "cairn.io/address-pool";
/// Sharing key: Services with the same key may share an address.
pub const ALLOW_SHARED_IP: &str = "cairn.io/allow-shared-ip";
/// The allocator's binding: the addresses, comma-separated.
pub const ALLOCATED_IPS: &str = "cairn.io/allocated-ips";
/// The allocator's binding: the pool the addresses came from.
pub const ALLOCATED_POOL: &str = "cairn.io/allocated-pool";

/// MetalLB (current) requested addresses.
pub const METALLB_LOAD_BALANCER_IPS: &str = "metallb.io/loadBalancerIPs";
/// MetalLB (current) requested pool.
pub const METALLB_ADDRESS_POOL: &str = "metallb.io/address-pool";
/// MetalLB (current) sharing key.
pub const METALLB_ALLOW_SHARED_IP: &str = "metallb.io/allow-shared-ip";
/// MetalLB (current) record of the pool an address came from; a restore hint.
pub const METALLB_ALLOCATED_FROM_POOL: &str = "metallb.io/ip-allocated-from-pool";
/// MetalLB (legacy) requested addresses.
pub const METALLB_LEGACY_LOAD_BALANCER_IPS: &str = "metallb.universe.tf/loadBalancerIPs";
/// MetalLB (legacy) requested pool.
pub const METALLB_LEGACY_ADDRESS_POOL: &str = "metallb.universe.tf/address-pool";
/// MetalLB (legacy) sharing key.
pub const METALLB_LEGACY_ALLOW_SHARED_IP: &str = "metallb.universe.tf/allow-shared-ip";
/// MetalLB (legacy) record of the pool an address came from; a restore hint.
pub const METALLB_LEGACY_ALLOCATED_FROM_POOL: &str = "metallb.universe.tf/ip-allocated-from-pool";

/// Keys for requested addresses, in precedence order (Cairn's first).
pub const REQUESTED_IPS_KEYS: [&str; 3] = [
    LOAD_BALANCER_IPS,
    METALLB_LOAD_BALANCER_IPS,
    METALLB_LEGACY_LOAD_BALANCER_IPS,
];
/// Keys for a requested pool, in precedence order (Cairn's first).
pub const REQUESTED_POOL_KEYS: [&str; 3] = [
    ADDRESS_POOL,
    METALLB_ADDRESS_POOL,
    METALLB_LEGACY_ADDRESS_POOL,
];
/// Keys for the sharing key, in precedence order (Cairn's first).
pub const SHARING_KEY_KEYS: [&str; 3] = [
    ALLOW_SHARED_IP,
    METALLB_ALLOW_SHARED_IP,
    METALLB_LEGACY_ALLOW_SHARED_IP,
];
/// Keys recording the pool of an existing MetalLB allocation, in precedence order.
pub const ALLOCATED_FROM_POOL_KEYS: [&str; 2] = [
    METALLB_ALLOCATED_FROM_POOL,
    METALLB_LEGACY_ALLOCATED_FROM_POOL,
];

/// The `spec.loadBalancerClass` Cairn handles by default (Services without a class too).
pub const DEFAULT_LOAD_BALANCER_CLASS: &str = "cairn.io/lb";

/// Nodes with this label never announce any address (the upstream Kubernetes convention).
pub const EXCLUDE_FROM_EXTERNAL_LB_LABEL: &str =
    "node.kubernetes.io/exclude-from-external-load-balancers";

/// Parses an address list as written in `cairn.io/allocated-ips` (comma-separated, blanks
/// around entries allowed, empty entries skipped); `None` when any entry is not an address.
pub fn parse_ip_list(text: &str) -> Option<Vec<std::net::IpAddr>> {
    text.split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(|p| p.parse().ok())
        .collect()
}

/// Formats addresses for `cairn.io/allocated-ips`, the inverse of [`parse_ip_list`].
pub fn format_ip_list(ips: &[std::net::IpAddr]) -> String {
    ips.iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(",")
}

/// The first value found under `keys` (in order) in `annotations`.
pub fn first_of<'a>(
    annotations: &'a std::collections::BTreeMap<String, String>,
    keys: &[&str],
) -> Option<&'a str> {
    keys.iter()
        .find_map(|k| annotations.get(*k))
        .map(String::as_str)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    #[test]
    fn cairn_annotations_take_precedence_over_metallb_ones() {
        let annotations: BTreeMap<String, String> = [
            (
                METALLB_LEGACY_ADDRESS_POOL.to_string(),
                "legacy".to_string(),
            ),
            (ADDRESS_POOL.to_string(), "cairn".to_string()),
        ]
        .into();
        assert_eq!(first_of(&annotations, &REQUESTED_POOL_KEYS), Some("cairn"));
    }

    #[test]
    fn address_lists_round_trip_and_garbage_is_refused() {
        let ips = parse_ip_list(" 192.0.2.7 , 2001:db8::7,").unwrap();
        assert_eq!(format_ip_list(&ips), "192.0.2.7,2001:db8::7");
        assert_eq!(parse_ip_list("192.0.2.7,garbage"), None);
        assert_eq!(parse_ip_list(""), Some(vec![]));
    }

    #[test]
    fn metallb_annotations_are_honoured_when_alone() {
        let annotations: BTreeMap<String, String> = [(
            METALLB_LOAD_BALANCER_IPS.to_string(),
            "192.0.2.7".to_string(),
        )]
        .into();
        assert_eq!(
            first_of(&annotations, &REQUESTED_IPS_KEYS),
            Some("192.0.2.7")
        );
        assert_eq!(first_of(&annotations, &SHARING_KEY_KEYS), None);
    }
}
