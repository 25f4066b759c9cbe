//! `cairnctl why <namespace>/<service>`: why a Service has no address, and, for each address it
//! has, why each node does or does not announce it.
//!
//! No address: the Service's own spec (type, `loadBalancerClass`, deletion) and the allocator's
//! `AllocationFailed` Events say why. Per address: the objects are run through the speakers' own
//! pure code, [`cairn_speaker::adapter::convert`] and
//! [`cairn_speaker::eligibility::Snapshot::explain`], with the live nodes and their interfaces
//! taken from the speaker Leases, so the verdicts are the ones the speakers reach; next to them
//! stands what the speakers' Lease records say they announce, so a disagreement shows.
//!
//! A pure function of the fetched objects and the time: no API calls, no clock reads here.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::time::SystemTime;

use cairn_api::annotations::{self, ALLOCATED_IPS, ALLOCATED_POOL};
use cairn_speaker::adapter;
use cairn_speaker::eligibility::{BgpVerdict, L2Verdict, Reason};
use kube::ResourceExt;
use serde::Serialize;

use crate::cluster::{interfaces_up, live_nodes, Cluster};
use crate::status::{announcers, bgp_cell, protocol};
use crate::table;

/// The whole answer.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct WhyReport {
    /// `namespace/name`.
    pub service: String,
    /// Its addresses.
    pub ips: Vec<IpAddr>,
    /// The pool they came from.
    pub pool: Option<String>,
    /// Why it has no address (empty when it has one).
    pub no_address_reasons: Vec<String>,
    /// The Events about it, oldest first.
    pub events: Vec<EventRow>,
    /// One entry per address.
    pub addresses: Vec<AddressWhy>,
}

/// An Event about the Service.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct EventRow {
    /// `Normal` or `Warning`.
    #[serde(rename = "type")]
    pub type_: String,
    /// `IPAllocated`, `AllocationFailed`, `nodeAssigned`, …
    pub reason: String,
    /// The controller that reported it.
    pub reporter: String,
    /// Its text.
    pub note: String,
}

/// Why each node does or does not announce one address.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AddressWhy {
    /// The address.
    pub ip: IpAddr,
    /// The L2 owner the speakers' rules give.
    pub l2_owner: Option<String>,
    /// What the live speakers' Lease records say: `L2`, `BGP`, `L2+BGP` or `none`.
    pub announced_as: String,
    /// The node announcing it by L2, per the records.
    pub announced_by_l2: Option<String>,
    /// BGP peer -> nodes announcing it, per the records.
    pub announced_by_bgp: BTreeMap<String, BTreeSet<String>>,
    /// Why the speakers do not consider it at all (pool conflict, bad annotations).
    pub problem: Option<String>,
    /// One verdict per node.
    pub nodes: Vec<NodeWhy>,
}

/// One node's verdicts for one address.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeWhy {
    /// The node.
    pub node: String,
    /// Whether its speaker's Lease is live.
    pub live: bool,
    /// The L2 verdict.
    pub l2: Verdict,
    /// The BGP verdict.
    pub bgp: Verdict,
}

/// A verdict: a short state and the reasons or details behind it.
#[derive(Debug, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Verdict {
    /// `owner`, `standby`, `announces` or `ineligible`.
    pub state: String,
    /// The details (interfaces, owner, prefixes and peers) or the reasons.
    pub details: Vec<String>,
}

/// Why `report` cannot be built.
#[derive(Debug, thiserror::Error)]
pub enum WhyError {
    /// The argument is not `namespace/name`.
    #[error("expected <namespace>/<service>, got {0:?}")]
    BadName(String),
    /// No such Service.
    #[error("no Service {0}")]
    NotFound(String),
}

fn reasons(list: &[Reason]) -> Vec<String> {
    list.iter().map(ToString::to_string).collect()
}

fn l2_verdict(v: &L2Verdict) -> Verdict {
    match v {
        L2Verdict::Owner(grant) => Verdict {
            state: "owner".into(),
            details: vec![format!(
                "announces on {} ({})",
                grant
                    .interfaces
                    .iter()
                    .cloned()
                    .collect::<Vec<_>>()
                    .join(","),
                grant
                    .advertisements
                    .iter()
                    .cloned()
                    .collect::<Vec<_>>()
                    .join(",")
            )],
        },
        L2Verdict::Standby { owner } => Verdict {
            state: "standby".into(),
            details: vec![format!("eligible; {owner} won the rendezvous hash")],
        },
        L2Verdict::Ineligible(r) => Verdict {
            state: "ineligible".into(),
            details: reasons(r),
        },
    }
}

fn bgp_verdict(v: &BgpVerdict) -> Verdict {
    match v {
        BgpVerdict::Announces(routes) => Verdict {
            state: "announces".into(),
            details: routes
                .iter()
                .map(|(peer, prefixes)| {
                    let p: Vec<String> = prefixes.keys().map(ToString::to_string).collect();
                    format!("{} to {peer}", p.join(","))
                })
                .collect(),
        },
        BgpVerdict::Ineligible(r) => Verdict {
            state: "ineligible".into(),
            details: reasons(r),
        },
    }
}

/// Why no address: from the spec and the allocator's Events.
fn no_address_reasons(
    svc: &k8s_openapi::api::core::v1::Service,
    lb_class: &str,
    events: &[EventRow],
) -> Vec<String> {
    let spec = svc.spec.clone().unwrap_or_default();
    let mut out = Vec::new();
    if spec.type_.as_deref() != Some("LoadBalancer") {
        out.push(format!(
            "spec.type is {}, not LoadBalancer",
            spec.type_.as_deref().unwrap_or("ClusterIP")
        ));
    }
    if let Some(class) = spec.load_balancer_class.filter(|c| c != lb_class) {
        out.push(format!(
            "spec.loadBalancerClass is {class}: Cairn handles only {lb_class} and Services without a class"
        ));
    }
    if svc.metadata.deletion_timestamp.is_some() {
        out.push("the Service is being deleted".into());
    }
    if let Some(failed) = events.iter().rev().find(|e| e.reason == "AllocationFailed") {
        out.push(format!("the allocator: {}", failed.note));
    }
    if out.is_empty() {
        out.push(
            "no AllocationFailed Event: the allocator has not handled it yet (is it running and leading?)"
                .into(),
        );
    }
    out
}

/// Builds the answer for `name` (`namespace/service`) as of `now`; `lb_class` is the class
/// Cairn handles.
pub fn report(
    cluster: &Cluster,
    name: &str,
    lb_class: &str,
    now: SystemTime,
) -> Result<WhyReport, WhyError> {
    let (namespace, service) = name
        .split_once('/')
        .filter(|(n, s)| !n.is_empty() && !s.is_empty())
        .ok_or_else(|| WhyError::BadName(name.into()))?;
    let svc = cluster
        .services
        .iter()
        .find(|s| s.namespace().as_deref() == Some(namespace) && s.name_any() == service)
        .ok_or_else(|| WhyError::NotFound(name.into()))?;
    let mut events: Vec<&k8s_openapi::api::events::v1::Event> = cluster
        .events
        .iter()
        .filter(|e| {
            e.regarding.as_ref().is_some_and(|r| {
                r.namespace.as_deref() == Some(namespace) && r.name.as_deref() == Some(service)
            })
        })
        .collect();
    events.sort_by_key(|e| {
        e.event_time
            .as_ref()
            .map(|t| t.0)
            .or_else(|| e.metadata.creation_timestamp.as_ref().map(|t| t.0))
    });
    let events: Vec<EventRow> = events
        .into_iter()
        .map(|e| EventRow {
            type_: e.type_.clone().unwrap_or_default(),
            reason: e.reason.clone().unwrap_or_default(),
            reporter: e.reporting_controller.clone().unwrap_or_default(),
            note: e.note.clone().unwrap_or_default(),
        })
        .collect();
    let ips = svc
        .annotations()
        .get(ALLOCATED_IPS)
        .and_then(|t| annotations::parse_ip_list(t))
        .unwrap_or_default();
    let pool = svc.annotations().get(ALLOCATED_POOL).cloned();
    let no_address_reasons = if ips.is_empty() {
        no_address_reasons(svc, lb_class, &events)
    } else {
        Vec::new()
    };

    let speakers = cluster.speakers(now);
    let live = live_nodes(&speakers);
    let converted = adapter::convert(&cluster.objects(), &interfaces_up(&speakers));
    let addresses = ips
        .iter()
        .map(|&ip| {
            let (announced_by_l2, announced_by_bgp) = announcers(ip, &speakers);
            let announced_as = protocol(announced_by_l2.as_ref(), &announced_by_bgp);
            let vip = converted.vips.iter().find(|v| v.ip == ip);
            let problem = match vip {
                Some(_) => None,
                None => Some(
                    converted
                        .pool_conflicts
                        .iter()
                        .find(|c| c.ip == ip)
                        .map(|c| {
                            let pools: Vec<&str> = c.pools.iter().map(String::as_str).collect();
                            format!(
                                "the Services sharing {ip} disagree on the pool ({}): not announced",
                                pools.join(", ")
                            )
                        })
                        .or_else(|| {
                            converted
                                .problems
                                .iter()
                                .find(|p| {
                                    p.object.kind == "Service"
                                        && p.object.namespace.as_deref() == Some(namespace)
                                        && p.object.name == service
                                })
                                .map(|p| format!("the speakers skip this Service: {}", p.error))
                        })
                        .unwrap_or_else(|| "the speakers do not see this address".into()),
                ),
            };
            let (l2_owner, nodes) = match vip {
                None => (None, Vec::new()),
                Some(vip) => {
                    let explanation = converted.snapshot.explain(vip, &live);
                    let nodes = explanation
                        .l2
                        .iter()
                        .map(|(node, l2)| NodeWhy {
                            node: node.clone(),
                            live: live.contains(node),
                            l2: l2_verdict(l2),
                            bgp: explanation
                                .bgp
                                .get(node)
                                .map(bgp_verdict)
                                .unwrap_or(Verdict {
                                    state: "ineligible".into(),
                                    details: Vec::new(),
                                }),
                        })
                        .collect();
                    (explanation.l2_owner, nodes)
                }
            };
            AddressWhy {
                ip,
                l2_owner,
                announced_as,
                announced_by_l2,
                announced_by_bgp,
                problem,
                nodes,
            }
        })
        .collect();
    Ok(WhyReport {
        service: name.into(),
        ips,
        pool,
        no_address_reasons,
        events,
        addresses,
    })
}

fn cell(v: &Verdict) -> String {
    if v.details.is_empty() {
        v.state.clone()
    } else {
        format!("{}: {}", v.state, v.details.join("; "))
    }
}

/// The answer as text with one aligned table per address.
pub fn render(report: &WhyReport) -> String {
    let mut out = String::new();
    if report.ips.is_empty() {
        out.push_str(&format!("Service {} has no address:\n", report.service));
        for r in &report.no_address_reasons {
            out.push_str(&format!("  - {r}\n"));
        }
    } else {
        let ips: Vec<String> = report.ips.iter().map(ToString::to_string).collect();
        out.push_str(&format!(
            "Service {} has {} from pool {}\n",
            report.service,
            ips.join(", "),
            report.pool.as_deref().unwrap_or("-")
        ));
    }
    for a in &report.addresses {
        out.push_str(&format!(
            "\n{}: L2 owner by the speakers' rules: {}; announced ({}) by L2: {}, BGP: {}\n",
            a.ip,
            a.l2_owner.as_deref().unwrap_or("none"),
            a.announced_as,
            a.announced_by_l2.as_deref().unwrap_or("-"),
            bgp_cell(&a.announced_by_bgp),
        ));
        if let Some(problem) = &a.problem {
            out.push_str(&format!("  {problem}\n"));
        }
        if !a.nodes.is_empty() {
            let rows: Vec<Vec<String>> = a
                .nodes
                .iter()
                .map(|n| {
                    vec![
                        n.node.clone(),
                        if n.live { "yes" } else { "no" }.into(),
                        cell(&n.l2),
                        cell(&n.bgp),
                    ]
                })
                .collect();
            out.push_str(&table::render(&["NODE", "LIVE", "L2", "BGP"], &rows));
        }
    }
    if !report.events.is_empty() {
        out.push_str("\nEvents:\n");
        let rows: Vec<Vec<String>> = report
            .events
            .iter()
            .map(|e| {
                vec![
                    e.type_.clone(),
                    e.reason.clone(),
                    e.reporter.clone(),
                    e.note.clone(),
                ]
            })
            .collect();
        out.push_str(&table::render(
            &["TYPE", "REASON", "FROM", "MESSAGE"],
            &rows,
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::Service;

    fn service(spec: serde_json::Value) -> Service {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "web", "namespace": "default"},
            "spec": spec,
        }))
        .unwrap()
    }

    fn event(reason: &str, note: &str) -> EventRow {
        EventRow {
            type_: "Warning".into(),
            reason: reason.into(),
            reporter: "cairn-allocator".into(),
            note: note.into(),
        }
    }

    #[test]
    fn a_service_of_another_type_or_class_is_told_so() {
        let svc = service(serde_json::json!({"type": "ClusterIP"}));
        assert_eq!(
            no_address_reasons(&svc, "cairn.io/lb", &[]),
            ["spec.type is ClusterIP, not LoadBalancer"]
        );
        let svc =
            service(serde_json::json!({"type": "LoadBalancer", "loadBalancerClass": "other"}));
        assert_eq!(
            no_address_reasons(&svc, "cairn.io/lb", &[]),
            ["spec.loadBalancerClass is other: Cairn handles only cairn.io/lb and Services without a class"]
        );
    }

    #[test]
    fn the_latest_allocation_failure_is_quoted() {
        let svc = service(serde_json::json!({"type": "LoadBalancer"}));
        let events = [
            event("AllocationFailed", "pool exhausted"),
            event("AllocationFailed", "no pool selects this Service"),
        ];
        assert_eq!(
            no_address_reasons(&svc, "cairn.io/lb", &events),
            ["the allocator: no pool selects this Service"]
        );
    }

    #[test]
    fn without_a_failure_event_the_allocator_is_suspected() {
        let svc = service(serde_json::json!({"type": "LoadBalancer"}));
        let reasons = no_address_reasons(&svc, "cairn.io/lb", &[]);
        assert_eq!(reasons.len(), 1);
        assert!(reasons[0].starts_with("no AllocationFailed Event"));
    }

    #[test]
    fn a_name_without_a_namespace_is_refused() {
        let cluster = Cluster::default();
        assert!(matches!(
            report(&cluster, "web", "cairn.io/lb", SystemTime::now()),
            Err(WhyError::BadName(_))
        ));
        assert!(matches!(
            report(&cluster, "default/web", "cairn.io/lb", SystemTime::now()),
            Err(WhyError::NotFound(_))
        ));
    }
}
