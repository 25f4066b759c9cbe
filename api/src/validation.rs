//! Validation: every field of every Cairn resource parsed into a typed value, or every problem
//! found reported with the path of the field it concerns (`spec.addresses[2]: ...`).
//!
//! Controllers act only on validated values: an invalid resource is reported (status condition,
//! Event) and ignored, never half-applied. Nothing here panics on user input and nothing does IO.

use std::collections::BTreeMap;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;
use std::time::Duration;

use ipnet::IpNet;

use crate::selector::Selector;
use crate::v1alpha1::{
    AdvertisementSelection, BGPAdvertisementSpec, BGPPeerSpec, CommunitySpec, IPAddressPoolSpec,
    L2AdvertisementSpec, SecretKeyRef,
};

/// One problem with one field.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FieldError {
    /// The field's path, as a user would write it (`spec.allocateTo.namespaceSelectors[0]`).
    pub path: String,
    /// What is wrong, and when useful what would be right.
    pub message: String,
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}

/// Every problem found in one resource (never empty when returned as an error).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub struct Problems(pub Vec<FieldError>);

impl fmt::Display for Problems {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, problem) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{problem}")?;
        }
        Ok(())
    }
}

/// Collects problems while a resource is walked.
#[derive(Default)]
struct Collector(Vec<FieldError>);

impl Collector {
    fn push(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.0.push(FieldError {
            path: path.into(),
            message: message.into(),
        });
    }

    fn selectors(
        &mut self,
        path: &str,
        selectors: &[k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector],
    ) -> Vec<Selector> {
        let mut parsed = Vec::with_capacity(selectors.len());
        for (i, s) in selectors.iter().enumerate() {
            match Selector::parse(s) {
                Ok(s) => parsed.push(s),
                Err(e) => self.push(format!("{path}[{i}]"), e.to_string()),
            }
        }
        parsed
    }

    fn finish<T>(self, value: T) -> Result<T, Problems> {
        if self.0.is_empty() {
            Ok(value)
        } else {
            Err(Problems(self.0))
        }
    }
}

/// An inclusive range of addresses of one family.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AddressRange {
    start: IpAddr,
    end: IpAddr,
}

/// Why an `addresses` entry is not a CIDR or a range.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AddressRangeError {
    #[error("{0:?} is neither a CIDR (192.0.2.0/24) nor a range (192.0.2.10-192.0.2.20)")]
    Syntax(String),
    #[error("{0:?} is not a valid CIDR: {1}")]
    BadCidr(String, String),
    #[error("range {0:?} mixes IPv4 and IPv6")]
    MixedFamilies(String),
    #[error("range {0:?} is reversed: its start is after its end")]
    Reversed(String),
    #[error("CIDR {0:?} has host bits set; did you mean {1}?")]
    HostBits(String, IpNet),
}

impl AddressRange {
    /// A range from `start` to `end` inclusive; both ends of one family, `start <= end`.
    pub fn new(start: IpAddr, end: IpAddr) -> Result<Self, AddressRangeError> {
        if start.is_ipv4() != end.is_ipv4() {
            return Err(AddressRangeError::MixedFamilies(format!("{start}-{end}")));
        }
        if start > end {
            return Err(AddressRangeError::Reversed(format!("{start}-{end}")));
        }
        Ok(Self { start, end })
    }

    /// Every address of a network, network and broadcast addresses included.
    pub fn from_net(net: IpNet) -> Self {
        Self {
            start: net.network(),
            end: net.broadcast(),
        }
    }

    /// First address.
    pub fn start(&self) -> IpAddr {
        self.start
    }

    /// Last address (inclusive).
    pub fn end(&self) -> IpAddr {
        self.end
    }

    /// True for an IPv4 range.
    pub fn is_ipv4(&self) -> bool {
        self.start.is_ipv4()
    }

    /// Whether the range holds `ip`.
    pub fn contains(&self, ip: IpAddr) -> bool {
        ip.is_ipv4() == self.is_ipv4() && self.start <= ip && ip <= self.end
    }

    /// Whether two ranges share an address.
    pub fn overlaps(&self, other: &AddressRange) -> bool {
        self.is_ipv4() == other.is_ipv4() && self.start <= other.end && other.start <= self.end
    }

    /// Number of addresses (a /0 IPv6 range saturates at `u128::MAX`).
    pub fn len(&self) -> u128 {
        (ip_to_u128(self.end) - ip_to_u128(self.start)).saturating_add(1)
    }

    /// Always false: a range holds at least one address.
    pub fn is_empty(&self) -> bool {
        false
    }
}

impl fmt::Display for AddressRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.start, self.end)
    }
}

impl FromStr for AddressRange {
    type Err = AddressRangeError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let s = text.trim();
        if s.contains('/') {
            let net: IpNet = s.parse().map_err(|e: ipnet::AddrParseError| {
                AddressRangeError::BadCidr(s.into(), e.to_string())
            })?;
            if net.addr() != net.network() {
                return Err(AddressRangeError::HostBits(s.into(), net.trunc()));
            }
            return Ok(Self::from_net(net));
        }
        let (a, b) = s
            .split_once('-')
            .ok_or_else(|| AddressRangeError::Syntax(s.into()))?;
        let parse = |p: &str| {
            p.trim()
                .parse::<IpAddr>()
                .map_err(|_| AddressRangeError::Syntax(s.into()))
        };
        let (start, end) = (parse(a)?, parse(b)?);
        Self::new(start, end).map_err(|e| match e {
            AddressRangeError::MixedFamilies(_) => AddressRangeError::MixedFamilies(s.into()),
            _ => AddressRangeError::Reversed(s.into()),
        })
    }
}

impl From<IpNet> for AddressRange {
    fn from(net: IpNet) -> Self {
        Self::from_net(net)
    }
}

/// An address as a number, IPv4 and IPv6 alike (families are kept apart by the callers).
pub fn ip_to_u128(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(v4) => u128::from(u32::from(v4)),
        IpAddr::V6(v6) => u128::from(v6),
    }
}

/// The address of a family with the given numeric value (truncated to 32 bits for IPv4).
pub fn u128_to_ip(value: u128, ipv4: bool) -> IpAddr {
    if ipv4 {
        IpAddr::V4(Ipv4Addr::from(value as u32))
    } else {
        IpAddr::V6(Ipv6Addr::from(value))
    }
}

/// A validated `IPAddressPool` spec.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ValidPool {
    /// The address ranges, in the order written.
    pub ranges: Vec<AddressRange>,
    /// `spec.autoAssign`.
    pub auto_assign: bool,
    /// `spec.avoidBuggyIPs`.
    pub avoid_buggy_ips: bool,
    /// `spec.allocateTo.priority`.
    pub priority: Option<i32>,
    /// `spec.allocateTo.namespaces`.
    pub namespaces: Vec<String>,
    /// `spec.allocateTo.namespaceSelectors`, parsed.
    pub namespace_selectors: Vec<Selector>,
    /// `spec.allocateTo.serviceSelectors`, parsed.
    pub service_selectors: Vec<Selector>,
}

/// Validates an `IPAddressPool` spec on its own (overlaps with other pools: [`pool_overlaps`]).
pub fn pool(spec: &IPAddressPoolSpec) -> Result<ValidPool, Problems> {
    let mut c = Collector::default();
    if spec.addresses.is_empty() {
        c.push("spec.addresses", "must list at least one CIDR or range");
    }
    let mut ranges: Vec<(usize, AddressRange)> = Vec::new();
    for (i, entry) in spec.addresses.iter().enumerate() {
        match entry.parse::<AddressRange>() {
            Ok(range) => {
                if let Some((j, other)) = ranges.iter().find(|(_, r)| r.overlaps(&range)) {
                    c.push(
                        format!("spec.addresses[{i}]"),
                        format!("{entry} overlaps spec.addresses[{j}] ({other}) of the same pool"),
                    );
                }
                ranges.push((i, range));
            }
            Err(e) => c.push(format!("spec.addresses[{i}]"), e.to_string()),
        }
    }
    let allocation = spec.allocate_to.clone().unwrap_or_default();
    for (i, ns) in allocation.namespaces.iter().enumerate() {
        if let Err(message) = dns_label(ns) {
            c.push(format!("spec.allocateTo.namespaces[{i}]"), message);
        }
    }
    let namespace_selectors = c.selectors(
        "spec.allocateTo.namespaceSelectors",
        &allocation.namespace_selectors,
    );
    let service_selectors = c.selectors(
        "spec.allocateTo.serviceSelectors",
        &allocation.service_selectors,
    );
    c.finish(ValidPool {
        ranges: ranges.into_iter().map(|(_, r)| r).collect(),
        auto_assign: spec.auto_assign,
        avoid_buggy_ips: spec.avoid_buggy_ips,
        priority: allocation.priority,
        namespaces: allocation.namespaces,
        namespace_selectors,
        service_selectors,
    })
}

/// Overlaps between pools: for each pool name, the problems naming the other pool.
/// Both pools of an overlapping pair are reported, so neither is used silently.
pub fn pool_overlaps<'a>(
    pools: impl IntoIterator<Item = (&'a str, &'a ValidPool)>,
) -> BTreeMap<String, Vec<FieldError>> {
    // (family, start, end, pool, index), swept in order: each range is compared with the ranges
    // still open, so the cost is O(n log n + overlaps).
    let mut all: Vec<(bool, u128, u128, &str, usize)> = pools
        .into_iter()
        .flat_map(|(name, pool)| {
            pool.ranges.iter().enumerate().map(move |(i, r)| {
                (
                    !r.is_ipv4(),
                    ip_to_u128(r.start()),
                    ip_to_u128(r.end()),
                    name,
                    i,
                )
            })
        })
        .collect();
    all.sort();
    let mut problems: BTreeMap<String, Vec<FieldError>> = BTreeMap::new();
    let mut open: Vec<(bool, u128, u128, &str, usize)> = Vec::new();
    for range in all {
        open.retain(|o| o.0 == range.0 && o.2 >= range.1);
        for o in &open {
            if o.3 == range.3 {
                continue;
            }
            for (here, there) in [(range, *o), (*o, range)] {
                problems.entry(here.3.to_string()).or_default().push(FieldError {
                    path: format!("spec.addresses[{}]", here.4),
                    message: format!(
                        "overlaps pool {:?} (spec.addresses[{}]); an address must belong to one pool",
                        there.3, there.4
                    ),
                });
            }
        }
        open.push(range);
    }
    problems
}

/// Which pools an advertisement covers: by name, by label, or (both empty) all of them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PoolSelection {
    /// Pools named explicitly.
    pub names: Vec<String>,
    /// Pools selected by label.
    pub selectors: Vec<Selector>,
}

impl PoolSelection {
    /// Whether the pool `name` with `labels` is covered.
    pub fn covers(&self, name: &str, labels: &BTreeMap<String, String>) -> bool {
        (self.names.is_empty() && self.selectors.is_empty())
            || self.names.iter().any(|n| n == name)
            || self.selectors.iter().any(|s| s.matches(labels))
    }
}

/// Whether `labels` match any of `selectors`, an empty list matching everything.
pub fn any_selector_matches(selectors: &[Selector], labels: &BTreeMap<String, String>) -> bool {
    selectors.is_empty() || selectors.iter().any(|s| s.matches(labels))
}

impl Collector {
    fn selection(&mut self, spec: &AdvertisementSelection) -> (PoolSelection, Vec<Selector>) {
        let pool_selectors = self.selectors(
            "spec.ipAddressPoolSelectors",
            &spec.ip_address_pool_selectors,
        );
        let node_selectors = self.selectors("spec.nodeSelectors", &spec.node_selectors);
        let pools = PoolSelection {
            names: spec.ip_address_pools.clone(),
            selectors: pool_selectors,
        };
        (pools, node_selectors)
    }
}

/// A validated `L2Advertisement` spec.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ValidL2Advertisement {
    /// The pools it covers.
    pub pools: PoolSelection,
    /// Nodes that may announce (empty: all).
    pub node_selectors: Vec<Selector>,
    /// Interfaces to announce on (empty: all usable ones).
    pub interfaces: Vec<String>,
}

/// Validates an `L2Advertisement` spec.
pub fn l2_advertisement(spec: &L2AdvertisementSpec) -> Result<ValidL2Advertisement, Problems> {
    let mut c = Collector::default();
    let (pools, node_selectors) = c.selection(&spec.selection);
    for (i, name) in spec.interfaces.iter().enumerate() {
        if let Err(message) = interface_name(name) {
            c.push(format!("spec.interfaces[{i}]"), message);
        }
    }
    c.finish(ValidL2Advertisement {
        pools,
        node_selectors,
        interfaces: spec.interfaces.clone(),
    })
}

/// A BGP community value.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Community {
    /// RFC 1997 community `AA:NN`.
    Standard(u16, u16),
    /// RFC 8092 large community `large:A:B:C`.
    Large(u32, u32, u32),
}

/// Why a community string does not parse.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CommunityError {
    #[error("{0:?} is not a community: expected AA:NN (each 0-65535) or large:A:B:C (each 0-4294967295)")]
    Syntax(String),
    #[error("{0:?} is out of range: each half of AA:NN must be 0-65535")]
    StandardOutOfRange(String),
    #[error("{0:?} is out of range: each part of large:A:B:C must be 0-4294967295")]
    LargeOutOfRange(String),
}

impl FromStr for Community {
    type Err = CommunityError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let numbers = |text: &str| -> Option<Vec<u64>> {
            text.split(':')
                .map(|p| {
                    (!p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
                        .then(|| p.parse::<u64>().ok())
                        .flatten()
                })
                .collect()
        };
        if let Some(rest) = s.strip_prefix("large:") {
            let parts = numbers(rest).ok_or_else(|| CommunityError::Syntax(s.into()))?;
            let [a, b, c] = parts[..] else {
                return Err(CommunityError::Syntax(s.into()));
            };
            let fit =
                |v: u64| u32::try_from(v).map_err(|_| CommunityError::LargeOutOfRange(s.into()));
            return Ok(Community::Large(fit(a)?, fit(b)?, fit(c)?));
        }
        let parts = numbers(s).ok_or_else(|| CommunityError::Syntax(s.into()))?;
        let [a, b] = parts[..] else {
            return Err(CommunityError::Syntax(s.into()));
        };
        let fit =
            |v: u64| u16::try_from(v).map_err(|_| CommunityError::StandardOutOfRange(s.into()));
        Ok(Community::Standard(fit(a)?, fit(b)?))
    }
}

impl fmt::Display for Community {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Community::Standard(a, b) => write!(f, "{a}:{b}"),
            Community::Large(a, b, c) => write!(f, "large:{a}:{b}:{c}"),
        }
    }
}

/// Validates a `Community` spec into its aliases.
pub fn community_aliases(spec: &CommunitySpec) -> Result<BTreeMap<String, Community>, Problems> {
    let mut c = Collector::default();
    let mut aliases = BTreeMap::new();
    for (i, alias) in spec.communities.iter().enumerate() {
        if alias.name.is_empty() {
            c.push(format!("spec.communities[{i}].name"), "must not be empty");
        }
        match alias.value.parse::<Community>() {
            Ok(value) => {
                if aliases.insert(alias.name.clone(), value).is_some() {
                    c.push(
                        format!("spec.communities[{i}].name"),
                        format!("alias {:?} is defined twice", alias.name),
                    );
                }
            }
            Err(e) => c.push(format!("spec.communities[{i}].value"), e.to_string()),
        }
    }
    c.finish(aliases)
}

/// A validated `BGPAdvertisement` spec.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ValidBgpAdvertisement {
    /// The pools it covers.
    pub pools: PoolSelection,
    /// Prefix length announced for IPv4 addresses.
    pub aggregation_length: u8,
    /// Prefix length announced for IPv6 addresses.
    pub aggregation_length_v6: u8,
    /// LOCAL_PREF for iBGP peers.
    pub local_pref: Option<u32>,
    /// Communities, aliases resolved.
    pub communities: Vec<Community>,
    /// BGPPeer names (empty: all).
    pub peers: Vec<String>,
    /// Nodes that announce (empty: all).
    pub node_selectors: Vec<Selector>,
}

/// Validates a `BGPAdvertisement` spec, resolving community aliases against `aliases`.
pub fn bgp_advertisement(
    spec: &BGPAdvertisementSpec,
    aliases: &BTreeMap<String, Community>,
) -> Result<ValidBgpAdvertisement, Problems> {
    let mut c = Collector::default();
    let aggregation_length = spec.aggregation_length.unwrap_or(32);
    if aggregation_length > 32 {
        c.push(
            "spec.aggregationLength",
            format!("{aggregation_length} is longer than 32"),
        );
    }
    let aggregation_length_v6 = spec.aggregation_length_v6.unwrap_or(128);
    if aggregation_length_v6 > 128 {
        c.push(
            "spec.aggregationLengthV6",
            format!("{aggregation_length_v6} is longer than 128"),
        );
    }
    let mut communities = Vec::new();
    for (i, text) in spec.communities.iter().enumerate() {
        let literal = text.contains(':');
        match (literal, aliases.get(text)) {
            (false, Some(value)) => communities.push(*value),
            (false, None) => c.push(
                format!("spec.communities[{i}]"),
                format!("{text:?} is neither AA:NN, large:A:B:C nor a known Community alias"),
            ),
            (true, _) => match text.parse() {
                Ok(value) => communities.push(value),
                Err(e) => c.push(format!("spec.communities[{i}]"), format!("{e}")),
            },
        }
    }
    let (pools, node_selectors) = c.selection(&spec.selection);
    c.finish(ValidBgpAdvertisement {
        pools,
        aggregation_length,
        aggregation_length_v6,
        local_pref: spec.local_pref,
        communities,
        peers: spec.peers.clone(),
        node_selectors,
    })
}

/// Default hold time proposed to peers (RFC 4271 suggests 90 s).
pub const DEFAULT_HOLD_TIME: Duration = Duration::from_secs(90);
/// Default initial connect-retry interval.
pub const DEFAULT_CONNECT_TIME: Duration = Duration::from_secs(5);
/// The BGP port.
pub const BGP_PORT: u16 = 179;
/// AS_TRANS (RFC 6793): a placeholder that is never a real AS.
const AS_TRANS: u32 = 23456;

/// A validated `BGPPeer` spec.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ValidPeer {
    /// Our AS.
    pub my_asn: u32,
    /// The router's AS.
    pub peer_asn: u32,
    /// The router's address.
    pub peer_address: IpAddr,
    /// The router's port.
    pub peer_port: u16,
    /// Local address to connect from.
    pub source_address: Option<IpAddr>,
    /// Proposed hold time (zero: no keepalives).
    pub hold_time: Duration,
    /// Keepalive interval (hold/3 unless set).
    pub keepalive_time: Duration,
    /// Initial connect-retry interval.
    pub connect_time: Duration,
    /// BGP identifier, when set.
    pub router_id: Option<Ipv4Addr>,
    /// Nodes that peer (empty: all).
    pub node_selectors: Vec<Selector>,
    /// TCP MD5 password reference.
    pub password_secret: Option<SecretKeyRef>,
    /// TTL 255 instead of 1.
    pub ebgp_multi_hop: bool,
    /// Advertise graceful restart.
    pub graceful_restart: bool,
}

impl ValidPeer {
    /// iBGP when both ends share an AS.
    pub fn is_ibgp(&self) -> bool {
        self.my_asn == self.peer_asn
    }
}

/// Validates a `BGPPeer` spec.
pub fn bgp_peer(spec: &BGPPeerSpec) -> Result<ValidPeer, Problems> {
    let mut c = Collector::default();
    for (path, asn) in [("spec.myASN", spec.my_asn), ("spec.peerASN", spec.peer_asn)] {
        if asn == 0 || asn == AS_TRANS {
            c.push(
                path,
                format!("{asn} is reserved and cannot be used as an AS number"),
            );
        }
    }
    let peer_address = match spec.peer_address.parse::<IpAddr>() {
        Ok(ip) => Some(ip),
        Err(_) => {
            c.push(
                "spec.peerAddress",
                format!("{:?} is not an IP address", spec.peer_address),
            );
            None
        }
    };
    let source_address =
        spec.source_address
            .as_deref()
            .and_then(|text| match text.parse::<IpAddr>() {
                Ok(ip) => Some(ip),
                Err(_) => {
                    c.push(
                        "spec.sourceAddress",
                        format!("{text:?} is not an IP address"),
                    );
                    None
                }
            });
    if let (Some(peer), Some(source)) = (peer_address, source_address) {
        if peer.is_ipv4() != source.is_ipv4() {
            c.push(
                "spec.sourceAddress",
                format!("{source} is not of the same family as peerAddress {peer}"),
            );
        }
    }
    if spec.peer_port == Some(0) {
        c.push("spec.peerPort", "0 is not a usable port");
    }
    let mut duration = |path: &str, text: Option<&str>, default: Duration| match text {
        None => Some(default),
        Some(text) => match parse_duration(text) {
            Ok(d) => Some(d),
            Err(message) => {
                c.push(path, message);
                None
            }
        },
    };
    let hold_time = duration(
        "spec.holdTime",
        spec.hold_time.as_deref(),
        DEFAULT_HOLD_TIME,
    );
    let connect_time = duration(
        "spec.connectTime",
        spec.connect_time.as_deref(),
        DEFAULT_CONNECT_TIME,
    );
    let keepalive_time = hold_time.and_then(|hold| {
        duration(
            "spec.keepaliveTime",
            spec.keepalive_time.as_deref(),
            hold / 3,
        )
    });
    if let Some(hold) = hold_time {
        if hold.subsec_nanos() != 0 {
            c.push("spec.holdTime", "must be a whole number of seconds");
        } else if hold != Duration::ZERO && hold < Duration::from_secs(3) {
            c.push(
                "spec.holdTime",
                format!(
                    "{}s is too short: must be 0 (no keepalives) or at least 3s (RFC 4271 4.2)",
                    hold.as_secs()
                ),
            );
        } else if hold > Duration::from_secs(65535) {
            c.push("spec.holdTime", "must be at most 65535s");
        }
        if let Some(keepalive) = keepalive_time {
            if hold == Duration::ZERO && keepalive != Duration::ZERO {
                c.push("spec.keepaliveTime", "must be 0 when holdTime is 0");
            } else if hold != Duration::ZERO && keepalive >= hold {
                c.push(
                    "spec.keepaliveTime",
                    format!("must be shorter than holdTime ({}s)", hold.as_secs()),
                );
            }
        }
    }
    if connect_time == Some(Duration::ZERO) {
        c.push("spec.connectTime", "must be longer than 0s");
    }
    let router_id = spec
        .router_id
        .as_deref()
        .and_then(|text| match text.parse::<Ipv4Addr>() {
            Ok(id) if !id.is_unspecified() => Some(id),
            _ => {
                c.push(
                    "spec.routerID",
                    format!("{text:?} is not a non-zero IPv4 address (RFC 6286)"),
                );
                None
            }
        });
    let node_selectors = c.selectors("spec.nodeSelectors", &spec.node_selectors);
    if let Some(secret) = &spec.password_secret {
        if secret.name.is_empty() {
            c.push("spec.passwordSecret.name", "must not be empty");
        }
        if secret.key.is_empty() {
            c.push("spec.passwordSecret.key", "must not be empty");
        }
    }
    if let Some(profile) = &spec.bfd_profile {
        c.push(
            "spec.bfdProfile",
            format!("BFD is not supported yet; remove bfdProfile {profile:?} (sessions rely on the hold timer)"),
        );
    }
    let (Some(peer_address), Some(hold_time), Some(keepalive_time), Some(connect_time)) =
        (peer_address, hold_time, keepalive_time, connect_time)
    else {
        return Err(Problems(c.0));
    };
    c.finish(ValidPeer {
        my_asn: spec.my_asn,
        peer_asn: spec.peer_asn,
        peer_address,
        peer_port: spec.peer_port.unwrap_or(BGP_PORT),
        source_address,
        hold_time,
        keepalive_time,
        connect_time,
        router_id,
        node_selectors,
        password_secret: spec.password_secret.clone(),
        ebgp_multi_hop: spec.ebgp_multi_hop,
        graceful_restart: spec.enable_graceful_restart,
    })
}

/// Parses a Kubernetes-style duration: one or more `<number><unit>` with units `h`, `m`, `s`,
/// `ms` (`90s`, `1m30s`, `500ms`). Negative and unitless values are refused.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let bad = || format!("{text:?} is not a duration (examples: 90s, 1m30s, 500ms)");
    let mut rest = text.trim();
    if rest.is_empty() {
        return Err(bad());
    }
    let mut total = Duration::ZERO;
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return Err(bad());
        }
        let value: u64 = rest[..digits].parse().map_err(|_| bad())?;
        rest = &rest[digits..];
        let (unit, millis_per) = if let Some(r) = rest.strip_prefix("ms") {
            (r, 1)
        } else if let Some(r) = rest.strip_prefix('h') {
            (r, 3_600_000)
        } else if let Some(r) = rest.strip_prefix('m') {
            (r, 60_000)
        } else if let Some(r) = rest.strip_prefix('s') {
            (r, 1_000)
        } else {
            return Err(bad());
        };
        rest = unit;
        let millis = value.checked_mul(millis_per).ok_or_else(bad)?;
        total = total
            .checked_add(Duration::from_millis(millis))
            .ok_or_else(bad)?;
    }
    Ok(total)
}

fn dns_label(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 63
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.starts_with('-')
        && !name.ends_with('-');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{name:?} is not a valid namespace name (RFC 1123 label)"
        ))
    }
}

fn interface_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 15
        && name != "."
        && name != ".."
        && !name
            .bytes()
            .any(|b| b == b'/' || b == b':' || b.is_ascii_whitespace());
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{name:?} is not a valid interface name (1-15 characters, no '/', ':' or spaces)"
        ))
    }
}
