//! `cairnctl status`: pools with their usage (from the allocator's `IPAddressPool` status),
//! Services with their addresses (from the allocator's annotations), and, per address, what the
//! live speakers say they announce (their Leases' `cairn.io/announcing` records): the L2 owner
//! node, the BGP peers and the nodes announcing to each.
//!
//! A pure function of the fetched objects and the time: no API calls, no clock reads here.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::time::SystemTime;

use cairn_api::annotations::{self, ALLOCATED_IPS, ALLOCATED_POOL};
use kube::ResourceExt;
use serde::Serialize;

use crate::cluster::{Cluster, SpeakerRecord};
use crate::table;

/// The whole report.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct StatusReport {
    /// One row per pool.
    pub pools: Vec<PoolRow>,
    /// One row per address of each LoadBalancer Service (one row for a Service without any).
    pub services: Vec<ServiceRow>,
    /// One row per speaker Lease.
    pub speakers: Vec<SpeakerRow>,
}

/// A pool and its usage.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PoolRow {
    /// Its name.
    pub name: String,
    /// Its address ranges as written.
    pub addresses: Vec<String>,
    /// IPv4 addresses bound.
    #[serde(rename = "assignedIPv4")]
    pub assigned_ipv4: i64,
    /// IPv4 addresses free.
    #[serde(rename = "availableIPv4")]
    pub available_ipv4: i64,
    /// IPv6 addresses bound.
    #[serde(rename = "assignedIPv6")]
    pub assigned_ipv6: i64,
    /// IPv6 addresses free.
    #[serde(rename = "availableIPv6")]
    pub available_ipv6: i64,
    /// The `Valid` condition's status, when the allocator has written one.
    pub valid: Option<String>,
}

/// One address of a Service and who announces it.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ServiceRow {
    /// `namespace/name`.
    pub service: String,
    /// The address, `None` when the Service has none.
    pub ip: Option<IpAddr>,
    /// The pool it came from.
    pub pool: Option<String>,
    /// `L2`, `BGP`, `L2+BGP`, or `none` when no live speaker announces it.
    pub protocol: String,
    /// The node announcing it by L2.
    pub owner: Option<String>,
    /// BGP peer -> nodes announcing the address (or a prefix holding it) to that peer.
    pub bgp: BTreeMap<String, BTreeSet<String>>,
}

/// A speaker as its Lease shows it.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SpeakerRow {
    /// The node.
    pub node: String,
    /// Whether its Lease is held and unexpired.
    pub live: bool,
    /// VIPs it announces by L2.
    pub l2: BTreeSet<IpAddr>,
    /// BGP peer -> session state.
    pub bgp_sessions: BTreeMap<String, String>,
    /// An unreadable record.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub problem: Option<String>,
}

/// Who announces `ip` according to the live speakers' records.
pub fn announcers(
    ip: IpAddr,
    speakers: &[SpeakerRecord],
) -> (Option<String>, BTreeMap<String, BTreeSet<String>>) {
    let mut owner = None;
    let mut bgp: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for s in speakers.iter().filter(|s| s.live) {
        if s.announcing.l2.contains_key(&ip) {
            owner = Some(s.node.clone());
        }
        for (peer, status) in &s.announcing.bgp {
            if status.prefixes.iter().any(|p| p.contains(&ip)) {
                bgp.entry(peer.clone()).or_default().insert(s.node.clone());
            }
        }
    }
    (owner, bgp)
}

/// `L2`, `BGP`, `L2+BGP` or `none`.
pub fn protocol(owner: Option<&String>, bgp: &BTreeMap<String, BTreeSet<String>>) -> String {
    match (owner.is_some(), !bgp.is_empty()) {
        (true, true) => "L2+BGP",
        (true, false) => "L2",
        (false, true) => "BGP",
        (false, false) => "none",
    }
    .into()
}

/// Builds the report from `cluster` as of `now`.
pub fn report(cluster: &Cluster, now: SystemTime) -> StatusReport {
    let speakers = cluster.speakers(now);
    let mut pools: Vec<PoolRow> = cluster
        .pools
        .iter()
        .map(|p| {
            let status = p.status.clone().unwrap_or_default();
            PoolRow {
                name: p.name_any(),
                addresses: p.spec.addresses.clone(),
                assigned_ipv4: status.assigned_ipv4,
                available_ipv4: status.available_ipv4,
                assigned_ipv6: status.assigned_ipv6,
                available_ipv6: status.available_ipv6,
                valid: status
                    .conditions
                    .iter()
                    .find(|c| c.type_ == "Valid")
                    .map(|c| c.status.clone()),
            }
        })
        .collect();
    pools.sort_by(|a, b| a.name.cmp(&b.name));
    let mut services = Vec::new();
    for svc in &cluster.services {
        if svc.spec.as_ref().and_then(|s| s.type_.as_deref()) != Some("LoadBalancer") {
            continue;
        }
        let key = format!("{}/{}", svc.namespace().unwrap_or_default(), svc.name_any());
        let ips = svc
            .annotations()
            .get(ALLOCATED_IPS)
            .and_then(|t| annotations::parse_ip_list(t))
            .unwrap_or_default();
        let pool = svc.annotations().get(ALLOCATED_POOL).cloned();
        if ips.is_empty() {
            services.push(ServiceRow {
                service: key.clone(),
                ip: None,
                pool: None,
                protocol: "none".into(),
                owner: None,
                bgp: BTreeMap::new(),
            });
        }
        for ip in ips {
            let (owner, bgp) = announcers(ip, &speakers);
            services.push(ServiceRow {
                service: key.clone(),
                ip: Some(ip),
                pool: pool.clone(),
                protocol: protocol(owner.as_ref(), &bgp),
                owner,
                bgp,
            });
        }
    }
    services.sort_by(|a, b| (&a.service, a.ip).cmp(&(&b.service, b.ip)));
    let speakers = speakers
        .into_iter()
        .map(|s| SpeakerRow {
            l2: s.announcing.l2.keys().copied().collect(),
            bgp_sessions: s
                .announcing
                .bgp
                .iter()
                .map(|(peer, p)| (peer.clone(), p.session.clone()))
                .collect(),
            node: s.node,
            live: s.live,
            problem: s.problem,
        })
        .collect();
    StatusReport {
        pools,
        services,
        speakers,
    }
}

fn dash(value: Option<String>) -> String {
    value.unwrap_or_else(|| "-".into())
}

/// `peer: node node; peer2: node`, or `-`.
pub fn bgp_cell(bgp: &BTreeMap<String, BTreeSet<String>>) -> String {
    if bgp.is_empty() {
        return "-".into();
    }
    bgp.iter()
        .map(|(peer, nodes)| {
            format!(
                "{peer}: {}",
                nodes.iter().cloned().collect::<Vec<_>>().join(" ")
            )
        })
        .collect::<Vec<_>>()
        .join("; ")
}

/// The report as three aligned tables.
pub fn render(report: &StatusReport) -> String {
    let pools: Vec<Vec<String>> = report
        .pools
        .iter()
        .map(|p| {
            vec![
                p.name.clone(),
                format!("{}/{}", p.assigned_ipv4, p.assigned_ipv4 + p.available_ipv4),
                format!("{}/{}", p.assigned_ipv6, p.assigned_ipv6 + p.available_ipv6),
                dash(p.valid.clone()),
                p.addresses.join(","),
            ]
        })
        .collect();
    let services: Vec<Vec<String>> = report
        .services
        .iter()
        .map(|s| {
            vec![
                s.service.clone(),
                s.ip.map_or_else(|| "<pending>".into(), |ip| ip.to_string()),
                dash(s.pool.clone()),
                s.protocol.clone(),
                dash(s.owner.clone()),
                bgp_cell(&s.bgp),
            ]
        })
        .collect();
    let speakers: Vec<Vec<String>> = report
        .speakers
        .iter()
        .map(|s| {
            let sessions = s
                .bgp_sessions
                .iter()
                .map(|(peer, state)| format!("{peer}={state}"))
                .collect::<Vec<_>>();
            vec![
                s.node.clone(),
                if s.live { "yes" } else { "no" }.into(),
                s.l2.len().to_string(),
                if sessions.is_empty() {
                    "-".into()
                } else {
                    sessions.join(" ")
                },
                dash(s.problem.clone()),
            ]
        })
        .collect();
    format!(
        "POOLS\n{}\nSERVICES\n{}\nSPEAKERS\n{}",
        table::render(
            &[
                "NAME",
                "IPV4 USED/TOTAL",
                "IPV6 USED/TOTAL",
                "VALID",
                "ADDRESSES"
            ],
            &pools
        ),
        table::render(
            &[
                "SERVICE",
                "IP",
                "POOL",
                "PROTOCOL",
                "OWNER",
                "BGP PEERS: NODES"
            ],
            &services
        ),
        table::render(
            &["NODE", "LIVE", "L2 VIPS", "BGP SESSIONS", "PROBLEM"],
            &speakers
        ),
    )
}
