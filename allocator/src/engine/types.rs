//! The engine's own input and output types: pools, Service requests, bindings and usage.
//!
//! The controller builds these from `IPAddressPool`s, Services and Namespaces; nothing here knows
//! Kubernetes object types, so the engine stays testable without a cluster.

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;

use cairn_api::selector::Selector;

/// An IP address family.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Family {
    /// IPv4.
    V4,
    /// IPv6.
    V6,
}

impl Family {
    /// The family of `ip`.
    pub fn of(ip: &IpAddr) -> Family {
        match ip {
            IpAddr::V4(_) => Family::V4,
            IpAddr::V6(_) => Family::V6,
        }
    }

    /// The other family.
    pub fn other(self) -> Family {
        match self {
            Family::V4 => Family::V6,
            Family::V6 => Family::V4,
        }
    }
}

impl fmt::Display for Family {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Family::V4 => "IPv4",
            Family::V6 => "IPv6",
        })
    }
}

/// An address as the engine's integer (an IPv4 address is its `u32` value).
pub(super) fn to_u128(ip: &IpAddr) -> u128 {
    match ip {
        IpAddr::V4(a) => u128::from(u32::from(*a)),
        IpAddr::V6(a) => u128::from(*a),
    }
}

/// The address of `family` whose integer is `value` (IPv4 values fit in 32 bits by construction).
pub(super) fn from_u128(family: Family, value: u128) -> IpAddr {
    match family {
        Family::V4 => IpAddr::V4((value as u32).into()),
        Family::V6 => IpAddr::V6(value.into()),
    }
}

/// Pools are made of the API's validated address ranges, so a range means the same thing to the
/// validation, the engine and the controller.
pub use cairn_api::validation::{AddressRange, AddressRangeError};

/// Who may get addresses from a pool, and the pool's rank (`IPAddressPool.spec.allocateTo`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AllocateTo {
    /// Lower number = higher priority (as MetalLB); `None` ranks after every number.
    pub priority: Option<i32>,
    /// Namespaces allowed by name.
    pub namespaces: Vec<String>,
    /// Namespaces allowed by their labels (any selector matching is enough).
    pub namespace_selectors: Vec<Selector>,
    /// Services allowed by their labels (any selector matching is enough).
    pub service_selectors: Vec<Selector>,
}

impl AllocateTo {
    /// True when the pool restricts who may use it (namespaces or selectors present).
    pub fn is_restricted(&self) -> bool {
        !self.namespaces.is_empty()
            || !self.namespace_selectors.is_empty()
            || !self.service_selectors.is_empty()
    }

    /// True when the Service's namespace may use the pool: no namespace restriction, or listed by
    /// name, or matched by a namespace selector.
    pub fn allows_namespace(&self, namespace: &str, labels: &BTreeMap<String, String>) -> bool {
        (self.namespaces.is_empty() && self.namespace_selectors.is_empty())
            || self.namespaces.iter().any(|n| n == namespace)
            || self.namespace_selectors.iter().any(|s| s.matches(labels))
    }

    /// True when the Service's labels may use the pool: no selector, or one matching.
    pub fn allows_service(&self, labels: &BTreeMap<String, String>) -> bool {
        self.service_selectors.is_empty()
            || self.service_selectors.iter().any(|s| s.matches(labels))
    }
}

/// An address pool (from an `IPAddressPool`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pool {
    /// The pool's name, unique; also the tie-breaker between pools of equal rank.
    pub name: String,
    /// Address ranges, IPv4 and IPv6 mixed; overlaps and adjacency are merged.
    pub ranges: Vec<AddressRange>,
    /// Whether Services that name no pool may get addresses from it.
    pub auto_assign: bool,
    /// Never hand out IPv4 addresses ending in `.0` or `.255`.
    pub avoid_buggy_ips: bool,
    /// Who may use the pool and its priority.
    pub allocate_to: AllocateTo,
}

impl Pool {
    /// An unrestricted, auto-assigning pool.
    pub fn new(name: impl Into<String>, ranges: Vec<AddressRange>) -> Self {
        Pool {
            name: name.into(),
            ranges,
            auto_assign: true,
            avoid_buggy_ips: false,
            allocate_to: AllocateTo::default(),
        }
    }
}

/// A Service's identity: namespace and name.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ServiceKey {
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
}

impl ServiceKey {
    /// `namespace/name`.
    pub fn new(namespace: impl Into<String>, name: impl Into<String>) -> Self {
        ServiceKey {
            namespace: namespace.into(),
            name: name.into(),
        }
    }
}

impl fmt::Display for ServiceKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// `spec.ipFamilyPolicy` with the primary family (the first of `spec.ipFamilies`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FamilyPolicy {
    /// Exactly one address of this family.
    SingleStack(Family),
    /// Both families when one pool can give both, else one (the primary when a pool gives it).
    PreferDualStack {
        /// First of `spec.ipFamilies`.
        primary: Family,
    },
    /// One address of each family from one pool, or a refusal.
    RequireDualStack {
        /// First of `spec.ipFamilies`.
        primary: Family,
    },
}

impl FamilyPolicy {
    /// The primary family (listed first in a binding).
    pub fn primary(&self) -> Family {
        match *self {
            FamilyPolicy::SingleStack(f)
            | FamilyPolicy::PreferDualStack { primary: f }
            | FamilyPolicy::RequireDualStack { primary: f } => f,
        }
    }
}

impl fmt::Display for FamilyPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FamilyPolicy::SingleStack(family) => write!(f, "SingleStack ({family})"),
            FamilyPolicy::PreferDualStack { .. } => f.write_str("PreferDualStack"),
            FamilyPolicy::RequireDualStack { .. } => f.write_str("RequireDualStack"),
        }
    }
}

/// A Service port's protocol.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Protocol {
    /// TCP.
    Tcp,
    /// UDP.
    Udp,
    /// SCTP.
    Sctp,
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Protocol::Tcp => "TCP",
            Protocol::Udp => "UDP",
            Protocol::Sctp => "SCTP",
        })
    }
}

/// One exposed `(protocol, port)` of a Service.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Port {
    /// Protocol.
    pub protocol: Protocol,
    /// Port number.
    pub port: u16,
}

/// What a Service asks of the allocator, as the controller extracted it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServiceRequest {
    /// The Service.
    pub key: ServiceKey,
    /// Labels of the Service's namespace (for `namespace_selectors`).
    pub namespace_labels: BTreeMap<String, String>,
    /// The Service's labels (for `service_selectors`).
    pub labels: BTreeMap<String, String>,
    /// Specific addresses, already merged from `cairn.io/loadBalancerIPs`, MetalLB's annotations
    /// and `spec.loadBalancerIP`; empty = any.
    pub requested_ips: Vec<IpAddr>,
    /// A pool named by annotation.
    pub requested_pool: Option<String>,
    /// Families wanted.
    pub family_policy: FamilyPolicy,
    /// `allow-shared-ip` key; `None` = never shares.
    pub sharing_key: Option<String>,
    /// Exposed ports (sharing Services must not overlap).
    pub ports: Vec<Port>,
    /// `externalTrafficPolicy: Local`.
    pub local_traffic_policy: bool,
    /// `spec.selector` (Local sharers must have the same one).
    pub selector: BTreeMap<String, String>,
}

impl ServiceRequest {
    /// A request for one IPv4 address from any pool, no sharing, no ports, no labels.
    pub fn new(key: ServiceKey) -> Self {
        ServiceRequest {
            key,
            namespace_labels: BTreeMap::new(),
            labels: BTreeMap::new(),
            requested_ips: Vec::new(),
            requested_pool: None,
            family_policy: FamilyPolicy::SingleStack(Family::V4),
            sharing_key: None,
            ports: Vec::new(),
            local_traffic_policy: false,
            selector: BTreeMap::new(),
        }
    }
}

/// What the controller persists for a Service (annotations `cairn.io/allocated-ips` and
/// `cairn.io/allocated-pool`, and the status): its addresses, primary family first, and the pool.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Binding {
    /// The pool the addresses were taken from.
    pub pool: String,
    /// One address, or two of different families with the primary first.
    pub ips: Vec<IpAddr>,
}

/// Assigned and available address counts of one family of a pool.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FamilyUsage {
    /// Distinct addresses of the pool's ranges bound to Services.
    pub assigned: u128,
    /// Addresses the pool can still hand out (avoided addresses excluded; saturates at `u128::MAX`).
    pub available: u128,
}

/// A pool's usage per family, for the pool's status.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Usage {
    /// IPv4.
    pub v4: FamilyUsage,
    /// IPv6.
    pub v6: FamilyUsage,
}
