//! The applier: owns this node's load balancer ([`Dataplane`]) and tunnel end ([`Decap`]),
//! and moves them from the programme it last applied to a new [`XdpPlan`], touching only what
//! changed.
//!
//! One interface carries one XDP program (the kernel refuses a second, even in another mode),
//! and a node usually has one uplink and both roles. So the load balancer is a tunnel end too:
//! the decap VIPs are always written into it ([`Dataplane::add_decap_vip`]), and
//! [`XdpProgrammer::attach_decap`] on the balancer's interface attaches nothing more. The
//! separate decap program ([`Decap`], holding the same VIPs) is attached only to another
//! interface, for tunnels arriving where the balancer is not. Attach the balancer first: an
//! interface the decap program holds is refused to it. Services are programmed only once the
//! balancer is attached (its uplink gives the source MAC and the neighbour table to read); decap
//! VIPs are written whether or not it is attached.
//!
//! A backend node's next hop is the kernel's: the route towards it must leave by the uplink
//! (else it is left out and reported in [`ApplyReport::unreachable`]), and the MAC is that of
//! the route's gateway, or of the node itself when it is on-link, from the neighbour table. A
//! backend node whose MAC the table does not hold yet is left out of every service (never
//! programmed with a zero MAC), the kernel is nudged to resolve it, and it is reported in
//! [`ApplyReport::pending`]: apply the same plan again shortly and it joins. What it must not do:
//! compute plans (see [`super::plan`]) or touch any interface but the ones it is given.

use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::net::IpAddr;
use std::path::PathBuf;

use cairn_xdp::{
    AttachMode, Counters, Dataplane, DataplaneConfig, DataplaneError, Decap, DecapCounters,
    NextHop, Service, WeightedBackend,
};

use super::neighbour;
use super::plan::{changes, Changes, XdpPlan};

/// Settings of an [`XdpProgrammer`].
#[derive(Debug, Clone, Default)]
pub struct XdpConfig {
    /// The load balancer's settings (same `table_size` and `hash_seed` on every node; its
    /// `local_v4`/`local_v6` are this node's `InternalIP`s, the tunnels' source addresses).
    pub balancer: DataplaneConfig,
    /// bpffs directory for the decap program's pins (not the balancer's `pin_dir`); `None` =
    /// detached when the programmer drops.
    pub decap_pin_dir: Option<PathBuf>,
}

/// Errors of the XDP data plane.
#[derive(Debug, thiserror::Error)]
pub enum XdpError {
    /// The load balancer failed.
    #[error("XDP load balancer: {0}")]
    Balancer(#[source] DataplaneError),
    /// The decap program failed.
    #[error("XDP decap: {0}")]
    Decap(#[source] DataplaneError),
    /// The uplink's index or MAC could not be read.
    #[error("interface {ifname}: {source}")]
    Interface {
        /// The interface.
        ifname: String,
        /// Cause.
        source: io::Error,
    },
    /// The neighbour table could not be read.
    #[error("reading the neighbour table: {0}")]
    Neighbours(#[source] io::Error),
    /// The balancer is attached already (to this interface).
    #[error("the XDP load balancer is attached to {0} already")]
    AlreadyAttached(String),
    /// The decap program holds this interface (attach the balancer first: it decapsulates on
    /// its own interface).
    #[error("the XDP decap program holds {0}; attach the load balancer first")]
    DecapHoldsInterface(String),
}

impl XdpError {
    /// A short label for metrics.
    pub fn metric_label(&self) -> &'static str {
        match self {
            XdpError::Balancer(_) => "balancer",
            XdpError::Decap(_) => "decap",
            XdpError::Interface { .. } => "interface",
            XdpError::Neighbours(_) => "neighbours",
            XdpError::AlreadyAttached(_) => "already_attached",
            XdpError::DecapHoldsInterface(_) => "decap_holds_interface",
        }
    }
}

/// The outcome of one [`XdpProgrammer::apply`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ApplyReport {
    /// What was programmed (empty when nothing changed).
    pub applied: Changes,
    /// Backend nodes left out because their MAC is not known yet (resolution requested).
    /// Non-empty: apply again in a second or so.
    pub pending: BTreeSet<IpAddr>,
    /// Backend nodes left out because no route to them leaves by the balancer's uplink.
    pub unreachable: BTreeSet<IpAddr>,
}

/// The interface the load balancer is attached to.
#[derive(Clone, Debug)]
struct Uplink {
    ifname: String,
    ifindex: u32,
    mac: [u8; 6],
    /// How the balancer is attached there.
    mode: AttachMode,
}

/// This node's XDP data plane. Use from the node's network namespace (it reads that
/// namespace's neighbour table and interfaces).
pub struct XdpProgrammer {
    balancer: Dataplane,
    decap: Decap,
    uplink: Option<Uplink>,
    /// Interfaces the separate decap program is attached to (never the uplink).
    decap_interfaces: BTreeSet<String>,
    /// What the maps hold, as far as this programmer wrote them.
    programmed: XdpPlan,
    /// Backend node -> next hop written for it.
    hops: BTreeMap<IpAddr, NextHop>,
}

impl XdpProgrammer {
    /// Loads both programs (not attached). With pinned maps, the services and decap VIPs a
    /// previous process programmed are recovered and reconciled by the first
    /// [`apply`](Self::apply) (stale ones removed).
    pub fn load(config: XdpConfig) -> Result<Self, XdpError> {
        let mut balancer = Dataplane::load(config.balancer).map_err(XdpError::Balancer)?;
        let mut decap = match config.decap_pin_dir {
            Some(dir) => Decap::load_pinned(dir),
            None => Decap::load(),
        }
        .map_err(XdpError::Decap)?;
        // Both tunnel ends hold the same list; a crash between two writes may have left a VIP
        // in one only, so each gets the union before it becomes the recorded programme.
        let in_balancer = balancer.decap_vips().map_err(XdpError::Balancer)?;
        let in_decap = decap.decap_vips().map_err(XdpError::Decap)?;
        for &vip in in_decap.difference(&in_balancer) {
            balancer.add_decap_vip(vip).map_err(XdpError::Balancer)?;
        }
        for &vip in in_balancer.difference(&in_decap) {
            decap.add_vip(vip).map_err(XdpError::Decap)?;
        }
        // Recovered services get an empty backend set, so the first apply rewrites or removes
        // each of them (re-writing the same table touches no slot).
        let programmed = XdpPlan {
            services: balancer.services().map(|s| (*s, BTreeMap::new())).collect(),
            decap: in_balancer.union(&in_decap).copied().collect(),
        };
        Ok(Self {
            balancer,
            decap,
            uplink: None,
            decap_interfaces: BTreeSet::new(),
            programmed,
            hops: BTreeMap::new(),
        })
    }

    /// Attaches the load balancer to `ifname`, the interface VIP traffic arrives on and leaves
    /// by, tunnelled (its MAC is the tunnelled frames' source MAC).
    /// It also strips tunnels to the decap VIPs arriving there.
    pub fn attach_balancer(&mut self, ifname: &str) -> Result<AttachMode, XdpError> {
        if let Some(uplink) = &self.uplink {
            return Err(XdpError::AlreadyAttached(uplink.ifname.clone()));
        }
        if self.decap_interfaces.contains(ifname) {
            return Err(XdpError::DecapHoldsInterface(ifname.to_string()));
        }
        let interface_error = |source| XdpError::Interface {
            ifname: ifname.to_string(),
            source,
        };
        let ifindex = neighbour::ifindex(ifname).map_err(interface_error)?;
        let mac = neighbour::interface_mac(ifname).map_err(interface_error)?;
        let mode = self.balancer.attach(ifname).map_err(XdpError::Balancer)?;
        self.uplink = Some(Uplink {
            ifname: ifname.to_string(),
            ifindex,
            mac,
            mode,
        });
        Ok(mode)
    }

    /// Makes this node strip tunnels to its decap VIPs arriving on `ifname`. On the balancer's
    /// interface the balancer does it already: nothing is attached and its mode is returned.
    /// Elsewhere the decap program is attached (so attach the balancer first when both go on
    /// one interface).
    pub fn attach_decap(&mut self, ifname: &str) -> Result<AttachMode, XdpError> {
        if let Some(uplink) = self.uplink.as_ref().filter(|u| u.ifname == ifname) {
            return Ok(uplink.mode);
        }
        let mode = self.decap.attach(ifname).map_err(XdpError::Decap)?;
        self.decap_interfaces.insert(ifname.to_string());
        Ok(mode)
    }

    /// What this programmer has programmed.
    pub fn programmed(&self) -> &XdpPlan {
        &self.programmed
    }

    /// The counters of a programmed service.
    pub fn counters(&mut self, service: Service) -> Result<Option<Counters>, XdpError> {
        self.balancer.counters(service).map_err(XdpError::Balancer)
    }

    /// The counters of the tunnel end in the balancer (tunnels arriving on its interface; its
    /// `passed` counts only tunnels to other addresses).
    pub fn balancer_decap_counters(&mut self) -> Result<DecapCounters, XdpError> {
        self.balancer.decap_counters().map_err(XdpError::Balancer)
    }

    /// Moves the programs to `plan`: next hops of its backend nodes read from the neighbour
    /// table (changed ones rewritten), then decap VIPs added, services set and removed, decap
    /// VIPs removed. Applying the same plan again changes nothing (unless a pending backend
    /// has been resolved meanwhile). On error, what was applied before it stays recorded, so
    /// the next apply continues from there.
    pub fn apply(&mut self, plan: &XdpPlan) -> Result<ApplyReport, XdpError> {
        let mut report = ApplyReport::default();
        let effective = match self.uplink.clone() {
            Some(uplink) => {
                self.update_next_hops(&uplink, &plan.backends(), &mut report)?;
                let left_out = report.pending.union(&report.unreachable).copied().collect();
                plan.without_backends(&left_out)
            }
            None => XdpPlan {
                services: BTreeMap::new(),
                decap: plan.decap.clone(),
            },
        };
        let todo = changes(&self.programmed, &effective);
        for &vip in &todo.decap_add {
            self.balancer
                .add_decap_vip(vip)
                .map_err(XdpError::Balancer)?;
            self.decap.add_vip(vip).map_err(XdpError::Decap)?;
            self.programmed.decap.insert(vip);
        }
        for (service, backends) in &todo.set {
            let weighted: Vec<WeightedBackend> = backends
                .iter()
                .map(|(&addr, &weight)| WeightedBackend { addr, weight })
                .collect();
            self.balancer
                .set_vip(*service, &weighted)
                .map_err(XdpError::Balancer)?;
            self.programmed.services.insert(*service, backends.clone());
        }
        for service in &todo.remove {
            self.balancer
                .remove_vip(*service)
                .map_err(XdpError::Balancer)?;
            self.programmed.services.remove(service);
        }
        for vip in &todo.decap_remove {
            self.balancer
                .remove_decap_vip(*vip)
                .map_err(XdpError::Balancer)?;
            self.decap.remove_vip(*vip).map_err(XdpError::Decap)?;
            self.programmed.decap.remove(vip);
        }
        if !todo.is_empty() {
            tracing::info!(changes = %todo, pending = report.pending.len(), "XDP programme applied");
        }
        report.applied = todo;
        Ok(report)
    }

    /// Finds each backend's next hop: the route towards it (which must leave by the uplink),
    /// then its gateway's or its own MAC in the neighbour table. Writes new or changed next hops;
    /// backends whose MAC is unknown go to `pending` (and the kernel is asked to resolve them),
    /// backends not routed through the uplink to `unreachable`.
    fn update_next_hops(
        &mut self,
        uplink: &Uplink,
        backends: &BTreeSet<IpAddr>,
        report: &mut ApplyReport,
    ) -> Result<(), XdpError> {
        if backends.is_empty() {
            return Ok(());
        }
        let known: BTreeMap<IpAddr, [u8; 6]> = neighbour::dump()
            .map_err(XdpError::Neighbours)?
            .into_iter()
            .filter(|n| n.ifindex == uplink.ifindex)
            .filter_map(|n| n.usable_mac().map(|mac| (n.addr, mac)))
            .collect();
        for &backend in backends {
            let route = match neighbour::route(backend) {
                Ok(route) if route.oif == Some(uplink.ifindex) => route,
                Ok(_) => {
                    tracing::warn!(%backend, uplink = uplink.ifname, "backend node is not reached through the uplink");
                    report.unreachable.insert(backend);
                    continue;
                }
                Err(error) => {
                    tracing::warn!(%backend, %error, "no route to backend node");
                    report.unreachable.insert(backend);
                    continue;
                }
            };
            let Some(&dst_mac) = known.get(&route.gateway.unwrap_or(backend)) else {
                report.pending.insert(backend);
                if let Err(error) = neighbour::solicit(backend) {
                    tracing::warn!(%backend, %error, "cannot ask the kernel to resolve a backend node");
                }
                continue;
            };
            let hop = NextHop {
                dst_mac,
                src_mac: uplink.mac,
            };
            if self.hops.get(&backend) != Some(&hop) {
                self.balancer
                    .set_next_hop(backend, hop)
                    .map_err(XdpError::Balancer)?;
                self.hops.insert(backend, hop);
            }
        }
        Ok(())
    }

    /// Detaches both programs and removes their pins (the node leaves the XDP data plane for
    /// good; a restart should just drop the programmer).
    pub fn shutdown(self) -> Result<(), XdpError> {
        self.balancer.shutdown().map_err(XdpError::Balancer)?;
        self.decap.shutdown().map_err(XdpError::Decap)
    }
}
