//! The `cairn.io/v1alpha1` custom resources.
//!
//! Field names and meanings follow MetalLB's `metallb.io/v1beta1` where the concept is the same,
//! so that operators can carry their configuration over. The types only describe shape: every
//! string field that holds an address, an ASN-like number or a duration is checked by
//! [`crate::validation`], which is what the controllers use before acting on a resource.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, LabelSelector};
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

fn default_true() -> bool {
    true
}

/// A set of addresses the allocator may hand to LoadBalancer Services.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "cairn.io",
    version = "v1alpha1",
    kind = "IPAddressPool",
    namespaced,
    status = "IPAddressPoolStatus",
    shortname = "ippool",
    printcolumn = r#"{"name":"Auto Assign","type":"boolean","jsonPath":".spec.autoAssign"}"#,
    printcolumn = r#"{"name":"Assigned IPv4","type":"integer","jsonPath":".status.assignedIPv4"}"#,
    printcolumn = r#"{"name":"Assigned IPv6","type":"integer","jsonPath":".status.assignedIPv6"}"#,
    printcolumn = r#"{"name":"Valid","type":"string","jsonPath":".status.conditions[?(@.type==\"Valid\")].status"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct IPAddressPoolSpec {
    /// CIDRs (`192.0.2.0/28`, `2001:db8::/120`) and inclusive ranges
    /// (`192.0.2.10-192.0.2.20`), IPv4 and IPv6.
    pub addresses: Vec<String>,
    /// Whether Services that ask for no pool may be given addresses from this one.
    #[serde(default = "default_true")]
    pub auto_assign: bool,
    /// Skip IPv4 addresses ending in `.0` and `.255`, which some old clients mishandle.
    #[serde(default, rename = "avoidBuggyIPs")]
    pub avoid_buggy_ips: bool,
    /// Restricts which Services may use this pool, and in which order pools are tried.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allocate_to: Option<ServiceAllocation>,
}

/// Which Services a pool serves, and its priority among pools that match.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ServiceAllocation {
    /// Lower numbers are tried first; pools without a priority come after all with one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<i32>,
    /// Namespaces whose Services may use this pool (empty: no restriction by name).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub namespaces: Vec<String>,
    /// Namespaces, by label, whose Services may use this pool (any selector may match).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub namespace_selectors: Vec<LabelSelector>,
    /// Services, by label, that may use this pool (any selector may match).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub service_selectors: Vec<LabelSelector>,
}

/// What the allocator reports about a pool.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
pub struct IPAddressPoolStatus {
    /// IPv4 addresses bound to Services.
    #[serde(rename = "assignedIPv4", default)]
    pub assigned_ipv4: i64,
    /// IPv6 addresses bound to Services.
    #[serde(rename = "assignedIPv6", default)]
    pub assigned_ipv6: i64,
    /// IPv4 addresses still free.
    #[serde(rename = "availableIPv4", default)]
    pub available_ipv4: i64,
    /// IPv6 addresses still free; saturates at 2^63-1 for very large pools.
    #[serde(rename = "availableIPv6", default)]
    pub available_ipv6: i64,
    /// `Valid` (with a reason and a message naming the bad field when false).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}

/// Announces addresses of the selected pools on Layer 2 (ARP / NDP) from the selected nodes.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "cairn.io",
    version = "v1alpha1",
    kind = "L2Advertisement",
    namespaced,
    shortname = "l2adv"
)]
#[serde(rename_all = "camelCase")]
pub struct L2AdvertisementSpec {
    /// Which pools, and which nodes announce them.
    #[serde(flatten)]
    pub selection: AdvertisementSelection,
    /// Interfaces to announce on (empty: every up, broadcast-capable, non-loopback interface).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub interfaces: Vec<String>,
}

/// The pools an advertisement covers and the nodes that announce them (shared by both kinds).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AdvertisementSelection {
    /// Pools by name. Empty together with `ipAddressPoolSelectors`: every pool.
    #[serde(
        default,
        rename = "ipAddressPools",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub ip_address_pools: Vec<String>,
    /// Pools by label.
    #[serde(
        default,
        rename = "ipAddressPoolSelectors",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub ip_address_pool_selectors: Vec<LabelSelector>,
    /// Nodes that announce (empty: every node).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub node_selectors: Vec<LabelSelector>,
}

/// A reference to one key of a Secret in the speaker's namespace.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
pub struct SecretKeyRef {
    /// The Secret's name.
    pub name: String,
    /// The key inside the Secret's `data`.
    pub key: String,
}

/// A BGP router that speakers peer with.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "cairn.io",
    version = "v1alpha1",
    kind = "BGPPeer",
    namespaced,
    shortname = "bgppeer",
    printcolumn = r#"{"name":"Address","type":"string","jsonPath":".spec.peerAddress"}"#,
    printcolumn = r#"{"name":"ASN","type":"integer","jsonPath":".spec.peerASN"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct BGPPeerSpec {
    /// The speakers' own AS number.
    #[serde(rename = "myASN")]
    pub my_asn: u32,
    /// The router's AS number (equal to `myASN` for iBGP).
    #[serde(rename = "peerASN")]
    pub peer_asn: u32,
    /// The router's address, IPv4 or IPv6.
    pub peer_address: String,
    /// The router's TCP port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peer_port: Option<u16>,
    /// The local address to connect from (default: chosen by the kernel's routing).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_address: Option<String>,
    /// Proposed hold time, as a duration (`90s`, `1m30s`); `0s` disables keepalives.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hold_time: Option<String>,
    /// Keepalive interval, as a duration; must be below the hold time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keepalive_time: Option<String>,
    /// Initial connect-retry interval, as a duration.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connect_time: Option<String>,
    /// BGP identifier (an IPv4 address); default: the node's first IPv4 address.
    #[serde(default, rename = "routerID", skip_serializing_if = "Option::is_none")]
    pub router_id: Option<String>,
    /// Nodes that peer with this router (empty: every node).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub node_selectors: Vec<LabelSelector>,
    /// TCP MD5 password, from a Secret in the speaker's namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_secret: Option<SecretKeyRef>,
    /// Allow the router to be more than one hop away (IP TTL 255 instead of 1).
    #[serde(default)]
    pub ebgp_multi_hop: bool,
    /// Advertise the graceful-restart capability (RFC 4724).
    #[serde(default)]
    pub enable_graceful_restart: bool,
    /// Reserved for BFD; not supported yet, so validation rejects it when set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bfd_profile: Option<String>,
}

/// Announces addresses of the selected pools over BGP.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "cairn.io",
    version = "v1alpha1",
    kind = "BGPAdvertisement",
    namespaced,
    shortname = "bgpadv"
)]
#[serde(rename_all = "camelCase")]
pub struct BGPAdvertisementSpec {
    /// Which pools, and which nodes announce them.
    #[serde(flatten)]
    pub selection: AdvertisementSelection,
    /// Prefix length announced for IPv4 addresses (default 32).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aggregation_length: Option<u8>,
    /// Prefix length announced for IPv6 addresses (default 128).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aggregation_length_v6: Option<u8>,
    /// LOCAL_PREF for iBGP peers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub local_pref: Option<u32>,
    /// Communities: `AA:NN`, `large:A:B:C`, or the name of a `Community` alias.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub communities: Vec<String>,
    /// BGPPeer names to announce to (empty: every peer).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub peers: Vec<String>,
}

/// Named community values that `BGPAdvertisement`s may refer to.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "cairn.io",
    version = "v1alpha1",
    kind = "Community",
    namespaced
)]
#[serde(rename_all = "camelCase")]
pub struct CommunitySpec {
    /// The aliases.
    #[serde(default)]
    pub communities: Vec<CommunityAlias>,
}

/// One alias: a name and the community it stands for.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
pub struct CommunityAlias {
    /// The alias, as used in `BGPAdvertisement.spec.communities`.
    pub name: String,
    /// `AA:NN` or `large:A:B:C`.
    pub value: String,
}
