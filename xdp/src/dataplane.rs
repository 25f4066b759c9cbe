//! The load balancer's user-space side: loads `lb.bpf.c` with aya, attaches it, and programs its
//! maps from services and backend sets.
//!
//! [`Dataplane::set_vip`] builds the service's Maglev table ([`crate::maglev`]) and writes only
//! the ring slots that changed, then the service entry, so a packet never sees a service without
//! a ring. Backend node addresses get small indices shared by every service (index 0 means
//! "none"); an index is freed, and the flows pinned to it are purged from the flow table, when
//! no service uses the backend any more.
//!
//! A node that is also a backend on the same interface (one XDP program per interface) gives
//! the load balancer its decap VIPs ([`Dataplane::add_decap_vip`]): tunnels to them are
//! stripped and passed to the stack exactly as [`crate::Decap`] does.
//!
//! # Restarts
//!
//! With [`DataplaneConfig::pin_dir`] set, every map is pinned in that bpffs directory and the XDP
//! attachment is a bpf_link pinned there as `link_<ifname>`. Dropping the `Dataplane` then
//! leaves the program attached and forwarding with its maps (flow table included). The next
//! [`Dataplane::load`] with the same directory reuses the pinned maps (aya opens maps already
//! pinned by name), rebuilds its view of services, rings and backends from them, and
//! [`Dataplane::attach`] swaps the new program into the pinned link atomically
//! (`BPF_LINK_UPDATE`), so forwarding never stops. Re-applying the same services afterwards
//! writes nothing; the tunnel end's VIP list ([`Dataplane::decap_vips`]) is read from its map,
//! so it too survives. [`Dataplane::shutdown`] detaches and removes the pins. Without `pin_dir`, the
//! program is detached when the `Dataplane` drops.
//!
//! What it must not do: hold packets, talk to Kubernetes, or decide which services to program
//! (that is the speaker's job).

use std::collections::{BTreeSet, HashMap};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};

use aya::maps::{Array, HashMap as BpfHashMap, Map, MapData, MapError, PerCpuArray};
use aya::programs::links::{FdLink, PinnedLink};
use aya::programs::xdp::{XdpLink, XdpLinkId};
use aya::programs::{ProgramError, TestRun, TestRunOptions, Xdp, XdpMode};
use aya::{Ebpf, EbpfLoader};

use crate::abi::{
    BackendEntry, DropReason, FlowKey, FlowValue, LbAddr, LbConfig, NextHopEntry, VipKey, VipMeta,
    VipStats, DROP_REASONS,
};
use crate::decap::{self, DecapCounters};
use crate::hash::jhash2;
use crate::maglev::{self, MaglevError, TableSize, WeightedBackend};

static LB_OBJECT: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/lb.bpf.o"));

/// Transport protocol of a service.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Protocol {
    /// TCP (IP protocol 6).
    Tcp,
    /// UDP (IP protocol 17).
    Udp,
}

impl Protocol {
    /// The IP protocol number.
    pub fn number(self) -> u8 {
        match self {
            Protocol::Tcp => 6,
            Protocol::Udp => 17,
        }
    }

    fn from_number(number: u8) -> Option<Self> {
        match number {
            6 => Some(Protocol::Tcp),
            17 => Some(Protocol::Udp),
            _ => None,
        }
    }
}

/// A load-balanced service: VIP, port (0 = every port) and protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Service {
    /// The virtual IP.
    pub vip: IpAddr,
    /// The port, or 0 for "any port" (looked up after the exact port).
    pub port: u16,
    /// The protocol.
    pub protocol: Protocol,
}

impl Service {
    fn key(&self) -> VipKey {
        VipKey {
            addr: LbAddr::from_ip(self.vip),
            port: self.port.to_be(),
            proto: self.protocol.number(),
            pad: 0,
        }
    }

    fn from_key(key: &VipKey) -> Option<Self> {
        Some(Self {
            vip: key.addr.to_ip()?,
            port: u16::from_be(key.port),
            protocol: Protocol::from_number(key.proto)?,
        })
    }
}

/// A flow's 5-tuple as the client sends it (client → VIP).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FlowTuple {
    /// Client address.
    pub src: IpAddr,
    /// VIP.
    pub dst: IpAddr,
    /// Client port.
    pub sport: u16,
    /// Service port.
    pub dport: u16,
    /// Protocol.
    pub protocol: Protocol,
}

impl FlowTuple {
    fn key(&self) -> FlowKey {
        FlowKey {
            src: LbAddr::from_ip(self.src).addr,
            dst: LbAddr::from_ip(self.dst).addr,
            sport: self.sport.to_be(),
            dport: self.dport.to_be(),
            proto: self.protocol.number(),
            pad: [0; 3],
        }
    }

    /// The hash the BPF program computes for this flow (its Maglev slot is `hash % size`).
    pub fn hash(&self, seed: u32) -> u32 {
        jhash2(&self.key().words(), seed)
    }
}

/// Outer Ethernet addresses for packets towards a backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NextHop {
    /// Destination MAC (the backend, or the router towards it).
    pub dst_mac: [u8; 6],
    /// Source MAC (the egress interface).
    pub src_mac: [u8; 6],
}

impl NextHop {
    fn entry(self) -> NextHopEntry {
        NextHopEntry {
            dst_mac: self.dst_mac,
            src_mac: self.src_mac,
            valid: 1,
        }
    }
}

/// Settings of a [`Dataplane`]. Every node of a cluster must use the same `table_size` and
/// `hash_seed`, or they will pick different backends for the same flow.
#[derive(Debug, Clone)]
pub struct DataplaneConfig {
    /// bpffs directory for pinned maps and links (created if missing); `None` = nothing pinned.
    pub pin_dir: Option<PathBuf>,
    /// Maglev table size (a prime; default 16381).
    pub table_size: TableSize,
    /// Seed of both the flow hash and the Maglev permutations.
    pub hash_seed: u32,
    /// Most services at once.
    pub max_vips: u32,
    /// Most distinct backend nodes at once.
    pub max_backends: u32,
    /// Flow table entries (shared by all CPUs; each CPU evicts its least recently used).
    pub flow_table_size: u32,
    /// Largest outer IP packet sent (bytes); longer ones are dropped (`DropReason::TooBig`).
    pub mtu: u32,
    /// Outer source address for IPv4 backends.
    pub local_v4: Option<Ipv4Addr>,
    /// Outer source address for IPv6 backends.
    pub local_v6: Option<Ipv6Addr>,
    /// Send encapsulated packets out of this interface (bpf_redirect) instead of XDP_TX.
    pub egress_ifindex: Option<u32>,
}

impl Default for DataplaneConfig {
    fn default() -> Self {
        Self {
            pin_dir: None,
            table_size: TableSize::default(),
            hash_seed: 0,
            max_vips: 64,
            max_backends: 4096,
            flow_table_size: 65_536,
            mtu: 1500,
            local_v4: None,
            local_v6: None,
            egress_ifindex: None,
        }
    }
}

/// Counters of one service (summed over CPUs).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counters {
    /// Packets forwarded.
    pub packets: u64,
    /// Bytes forwarded (whole frames as received).
    pub bytes: u64,
    /// Packets whose backend came from the flow table.
    pub flow_hits: u64,
    /// Packets whose backend came from the Maglev table.
    pub flow_misses: u64,
    drops: [u64; DROP_REASONS],
}

impl Counters {
    /// Packets dropped for `reason`.
    pub fn drops(&self, reason: DropReason) -> u64 {
        self.drops[reason.index()]
    }
}

/// How a program ended up attached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttachMode {
    /// In the driver (native XDP).
    Native,
    /// Generic (skb) XDP, the fallback when the driver has no XDP support.
    Generic,
    /// Swapped into a link pinned by a previous process (mode unchanged).
    Reused,
}

/// The result of one `BPF_PROG_TEST_RUN`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TestRunOutput {
    /// The XDP verdict (`XDP_DROP` = 1, `XDP_PASS` = 2, `XDP_TX` = 3, `XDP_REDIRECT` = 4).
    pub verdict: u32,
    /// The packet as the program left it.
    pub data: Vec<u8>,
    /// Average run time per repetition, as the kernel measured it.
    pub duration: std::time::Duration,
}

/// Errors of the dataplane.
#[derive(Debug, thiserror::Error)]
pub enum DataplaneError {
    /// The BPF object could not be loaded (verifier log inside).
    #[error("loading the BPF object: {0}")]
    Load(#[from] Box<aya::EbpfError>),
    /// A program operation failed.
    #[error("program {program}: {source}")]
    Program {
        /// Program name.
        program: &'static str,
        /// Cause.
        source: Box<ProgramError>,
    },
    /// Neither native nor generic attach worked.
    #[error("attaching to {ifname}: native: {native}; generic: {generic}")]
    Attach {
        /// Interface.
        ifname: String,
        /// Native-mode error.
        native: Box<ProgramError>,
        /// Generic-mode error.
        generic: Box<ProgramError>,
    },
    /// A map operation failed.
    #[error("map {map}: {source}")]
    Map {
        /// Map name.
        map: &'static str,
        /// Cause.
        source: Box<MapError>,
    },
    /// The object lacks an expected map or program (a build mismatch).
    #[error("BPF object has no {0}")]
    Missing(&'static str),
    /// A pinned link or pin directory could not be used.
    #[error("pin {path}: {reason}")]
    Pin {
        /// Path.
        path: PathBuf,
        /// What went wrong.
        reason: String,
    },
    /// The Maglev table could not be built.
    #[error(transparent)]
    Maglev(#[from] MaglevError),
    /// `max_vips` services are programmed already.
    #[error("no room for another service (max_vips = {0})")]
    TooManyVips(u32),
    /// `max_backends` backend nodes are in use already.
    #[error("no room for another backend (max_backends = {0})")]
    TooManyBackends(u32),
    /// A configuration value is unusable.
    #[error("bad configuration: {0}")]
    Config(&'static str),
    /// Pinned maps were made with another table size.
    #[error("pinned maps use table size {pinned}, configuration says {configured}")]
    PinnedConfigMismatch {
        /// Ring size found in the pinned config map.
        pinned: u32,
        /// Ring size configured now.
        configured: u32,
    },
}

fn map_err(map: &'static str) -> impl FnOnce(MapError) -> DataplaneError {
    move |source| DataplaneError::Map {
        map,
        source: Box::new(source),
    }
}

fn prog_err(program: &'static str) -> impl FnOnce(ProgramError) -> DataplaneError {
    move |source| DataplaneError::Program {
        program,
        source: Box::new(source),
    }
}

/// Map names (pinned by these names).
const MAPS: [&str; 9] = [
    "lb_config",
    "vip_addrs",
    "vips",
    "maglev_rings",
    "backends",
    "flows",
    "vip_stats",
    "lb_decap_vips",
    "lb_decap_stats",
];

struct ServiceState {
    vip_num: u32,
    /// Slot → backend index, as written in the ring (empty ring = all zero).
    ring: Vec<u32>,
}

struct BackendSlot {
    index: u32,
    /// Services whose ring holds this index.
    users: usize,
}

/// One interface a program is attached to.
pub(crate) struct Attachment {
    pub(crate) ifname: String,
    pub(crate) link: AttachedLink,
}

/// Who keeps an attachment alive.
pub(crate) enum AttachedLink {
    /// Owned by the program; detached when the program drops.
    Owned,
    /// Pinned at this path; survives the process.
    Pinned(PathBuf),
}

/// The load balancer on one node. See the module documentation for its life cycle.
pub struct Dataplane {
    ebpf: Ebpf,
    config: DataplaneConfig,
    services: HashMap<Service, ServiceState>,
    backends: HashMap<IpAddr, BackendSlot>,
    /// Backends' own next hops (also for backends not in any service yet).
    next_hops: HashMap<IpAddr, NextHop>,
    /// Next hop of backends without their own, copied into their `backends` entries.
    default_hop: Option<NextHop>,
    attachments: Vec<Attachment>,
}

impl Dataplane {
    /// Loads the program and its maps (reusing maps pinned in `pin_dir`), writes the node
    /// config, and recovers the programmed services from pinned maps if there are any.
    pub fn load(config: DataplaneConfig) -> Result<Self, DataplaneError> {
        let ring_size = config.table_size.get();
        let ring_entries = config
            .max_vips
            .checked_mul(ring_size)
            .ok_or(DataplaneError::Config("max_vips × table_size overflows"))?;
        if config.max_vips == 0 || config.max_backends < 2 || config.flow_table_size == 0 {
            return Err(DataplaneError::Config(
                "max_vips, flow_table_size must be > 0 and max_backends > 1",
            ));
        }
        let mut loader = EbpfLoader::new();
        loader
            .map_max_entries("vip_addrs", config.max_vips)
            .map_max_entries("vips", config.max_vips)
            .map_max_entries("maglev_rings", ring_entries)
            .map_max_entries("backends", config.max_backends)
            .map_max_entries("flows", config.flow_table_size)
            .map_max_entries("vip_stats", config.max_vips + 1);
        let pin_paths: Vec<(&'static str, PathBuf)> = match &config.pin_dir {
            Some(dir) => {
                std::fs::create_dir_all(dir).map_err(|e| DataplaneError::Pin {
                    path: dir.clone(),
                    reason: e.to_string(),
                })?;
                MAPS.iter().map(|name| (*name, dir.join(name))).collect()
            }
            None => Vec::new(),
        };
        for (name, path) in &pin_paths {
            loader.map_pin_path(name, path.as_path());
        }
        let mut ebpf = loader.load(LB_OBJECT).map_err(Box::new)?;
        let program: &mut Xdp = ebpf
            .program_mut("xdp_lb")
            .ok_or(DataplaneError::Missing("program xdp_lb"))?
            .try_into()
            .map_err(prog_err("xdp_lb"))?;
        program.load().map_err(prog_err("xdp_lb"))?;
        let mut dataplane = Self {
            ebpf,
            config,
            services: HashMap::new(),
            backends: HashMap::new(),
            next_hops: HashMap::new(),
            default_hop: None,
            attachments: Vec::new(),
        };
        dataplane.recover()?;
        dataplane.write_config()?;
        Ok(dataplane)
    }

    fn map(&mut self, name: &'static str) -> Result<&mut Map, DataplaneError> {
        self.ebpf.map_mut(name).ok_or(DataplaneError::Missing(name))
    }

    fn write_config(&mut self) -> Result<(), DataplaneError> {
        let c = &self.config;
        let value = LbConfig {
            ring_size: c.table_size.get(),
            hash_seed: c.hash_seed,
            global_stats_slot: c.max_vips,
            mtu: c.mtu,
            egress_ifindex: c.egress_ifindex.unwrap_or(0),
            local_v4: c
                .local_v4
                .map(|a| LbAddr::from_ip(a.into()))
                .unwrap_or_default(),
            local_v6: c
                .local_v6
                .map(|a| LbAddr::from_ip(a.into()))
                .unwrap_or_default(),
            any_port_services: self.services.keys().filter(|s| s.port == 0).count() as u32,
            default_hop: self.default_hop.map(NextHop::entry).unwrap_or_default(),
        };
        let mut map: Array<&mut MapData, LbConfig> =
            Array::try_from(self.map("lb_config")?).map_err(map_err("lb_config"))?;
        map.set(0, value, 0).map_err(map_err("lb_config"))
    }

    /// Rebuilds services, rings, backends and next hops from (pinned) maps.
    fn recover(&mut self) -> Result<(), DataplaneError> {
        let ring_size = self.config.table_size.get();
        let pinned: LbConfig = {
            let map: Array<&mut MapData, LbConfig> =
                Array::try_from(self.map("lb_config")?).map_err(map_err("lb_config"))?;
            map.get(&0, 0).map_err(map_err("lb_config"))?
        };
        if pinned.default_hop.valid != 0 {
            self.default_hop = Some(NextHop {
                dst_mac: pinned.default_hop.dst_mac,
                src_mac: pinned.default_hop.src_mac,
            });
        }
        let entries: Vec<(VipKey, VipMeta)> = {
            let map: BpfHashMap<&mut MapData, VipKey, VipMeta> =
                BpfHashMap::try_from(self.map("vips")?).map_err(map_err("vips"))?;
            map.iter()
                .collect::<Result<_, _>>()
                .map_err(map_err("vips"))?
        };
        if entries.is_empty() {
            return Ok(());
        }
        if pinned.ring_size != ring_size {
            return Err(DataplaneError::PinnedConfigMismatch {
                pinned: pinned.ring_size,
                configured: ring_size,
            });
        }
        let mut used: BTreeSet<u32> = BTreeSet::new();
        for (key, meta) in entries {
            let Some(service) = Service::from_key(&key) else {
                continue;
            };
            let rings: Array<&mut MapData, u32> =
                Array::try_from(self.map("maglev_rings")?).map_err(map_err("maglev_rings"))?;
            let base = meta.vip_num * ring_size;
            let ring = (0..ring_size)
                .map(|slot| rings.get(&(base + slot), 0))
                .collect::<Result<Vec<u32>, _>>()
                .map_err(map_err("maglev_rings"))?;
            let distinct: BTreeSet<u32> = ring.iter().copied().filter(|&i| i != 0).collect();
            for index in &distinct {
                used.insert(*index);
            }
            self.services.insert(
                service,
                ServiceState {
                    vip_num: meta.vip_num,
                    ring,
                },
            );
            for index in distinct {
                self.count_user(index)?;
            }
        }
        Ok(())
    }

    /// Counts one more service using backend `index` (recovery), reading its address.
    fn count_user(&mut self, index: u32) -> Result<(), DataplaneError> {
        if let Some(slot) = self.backends.values_mut().find(|s| s.index == index) {
            slot.users += 1;
            return Ok(());
        }
        let map: Array<&mut MapData, BackendEntry> =
            Array::try_from(self.map("backends")?).map_err(map_err("backends"))?;
        let entry = map.get(&index, 0).map_err(map_err("backends"))?;
        if let Some(addr) = entry.addr.to_ip() {
            self.backends.insert(addr, BackendSlot { index, users: 1 });
            if entry.hop_own != 0 {
                self.next_hops.insert(
                    addr,
                    NextHop {
                        dst_mac: entry.dst_mac,
                        src_mac: entry.src_mac,
                    },
                );
            }
        }
        Ok(())
    }

    /// Attaches the program to `ifname` (in the calling thread's network namespace): native
    /// mode first, generic mode if the driver refuses; logs which. With `pin_dir`, a link
    /// pinned by a previous process is reused instead (atomic program swap).
    pub fn attach(&mut self, ifname: &str) -> Result<AttachMode, DataplaneError> {
        let pin_dir = self.config.pin_dir.clone();
        let program: &mut Xdp = self
            .ebpf
            .program_mut("xdp_lb")
            .ok_or(DataplaneError::Missing("program xdp_lb"))?
            .try_into()
            .map_err(prog_err("xdp_lb"))?;
        let (mode, link) = attach_maybe_pinned(program, "xdp_lb", ifname, pin_dir.as_deref())?;
        self.attachments.push(Attachment {
            ifname: ifname.to_owned(),
            link,
        });
        Ok(mode)
    }

    /// Programs `service` with `backends` (any order; weight 0 = drained). Writes only the ring
    /// slots that changed and returns how many that was. An empty or all-zero set keeps the
    /// service and drops its packets (`DropReason::NoBackend`).
    pub fn set_vip(
        &mut self,
        service: Service,
        backends: &[WeightedBackend],
    ) -> Result<usize, DataplaneError> {
        let table = maglev::build(backends, self.config.table_size, self.config.hash_seed)?;
        let ring_size = self.config.table_size.get() as usize;
        // Indices for the table's backends (new ones are written to `backends` first).
        let mut indices = Vec::with_capacity(table.backends().len());
        for &addr in table.backends() {
            indices.push(self.backend_index(addr)?);
        }
        let new_ring: Vec<u32> = if table.slots().is_empty() {
            vec![0; ring_size]
        } else {
            table.slots().iter().map(|&i| indices[i as usize]).collect()
        };
        let (vip_num, old_ring) = match self.services.get(&service) {
            Some(state) => (state.vip_num, state.ring.clone()),
            None => (self.free_vip_num()?, vec![0; ring_size]),
        };
        let base = vip_num * self.config.table_size.get();
        let mut written = 0;
        {
            let mut rings: Array<&mut MapData, u32> =
                Array::try_from(self.map("maglev_rings")?).map_err(map_err("maglev_rings"))?;
            for (slot, (&new, &old)) in new_ring.iter().zip(&old_ring).enumerate() {
                if new != old {
                    rings
                        .set(base + slot as u32, new, 0)
                        .map_err(map_err("maglev_rings"))?;
                    written += 1;
                }
            }
        }
        let is_new = !self.services.contains_key(&service);
        if is_new {
            let mut vips: BpfHashMap<&mut MapData, VipKey, VipMeta> =
                BpfHashMap::try_from(self.map("vips")?).map_err(map_err("vips"))?;
            vips.insert(service.key(), VipMeta { vip_num, flags: 0 }, 0)
                .map_err(map_err("vips"))?;
            let mut addrs: BpfHashMap<&mut MapData, LbAddr, u32> =
                BpfHashMap::try_from(self.map("vip_addrs")?).map_err(map_err("vip_addrs"))?;
            addrs
                .insert(LbAddr::from_ip(service.vip), 1, 0)
                .map_err(map_err("vip_addrs"))?;
            self.reset_stats(vip_num)?;
        }
        let before: BTreeSet<u32> = old_ring.iter().copied().filter(|&i| i != 0).collect();
        let after: BTreeSet<u32> = new_ring.iter().copied().filter(|&i| i != 0).collect();
        self.services.insert(
            service,
            ServiceState {
                vip_num,
                ring: new_ring,
            },
        );
        if is_new && service.port == 0 {
            // The program looks up "any port" services only while the count is non-zero.
            self.write_config()?;
        }
        for &index in after.difference(&before) {
            if let Some(slot) = self.backends.values_mut().find(|s| s.index == index) {
                slot.users += 1;
            }
        }
        for &index in before.difference(&after) {
            self.purge_flows(Some(service), index)?;
            self.release_backend(index)?;
        }
        // Indices allocated for this call but left unused (drained backends) go back.
        for index in indices {
            if !after.contains(&index) && !before.contains(&index) {
                self.release_unused(index)?;
            }
        }
        Ok(written)
    }

    /// Removes a service: its entry first (packets then pass to the stack), then its ring.
    /// Returns false when it was not programmed.
    pub fn remove_vip(&mut self, service: Service) -> Result<bool, DataplaneError> {
        let Some(state) = self.services.remove(&service) else {
            return Ok(false);
        };
        {
            let mut vips: BpfHashMap<&mut MapData, VipKey, VipMeta> =
                BpfHashMap::try_from(self.map("vips")?).map_err(map_err("vips"))?;
            vips.remove(&service.key()).map_err(map_err("vips"))?;
        }
        if service.port == 0 {
            self.write_config()?;
        }
        if !self.services.keys().any(|s| s.vip == service.vip) {
            let mut addrs: BpfHashMap<&mut MapData, LbAddr, u32> =
                BpfHashMap::try_from(self.map("vip_addrs")?).map_err(map_err("vip_addrs"))?;
            addrs
                .remove(&LbAddr::from_ip(service.vip))
                .map_err(map_err("vip_addrs"))?;
        }
        let base = state.vip_num * self.config.table_size.get();
        {
            let mut rings: Array<&mut MapData, u32> =
                Array::try_from(self.map("maglev_rings")?).map_err(map_err("maglev_rings"))?;
            for (slot, &index) in state.ring.iter().enumerate() {
                if index != 0 {
                    rings
                        .set(base + slot as u32, 0, 0)
                        .map_err(map_err("maglev_rings"))?;
                }
            }
        }
        let used: BTreeSet<u32> = state.ring.iter().copied().filter(|&i| i != 0).collect();
        for index in used {
            self.purge_flows(Some(service), index)?;
            self.release_backend(index)?;
        }
        Ok(true)
    }

    /// Sets the outer MACs for packets to `backend` (used as soon as the backend is in a set).
    pub fn set_next_hop(&mut self, backend: IpAddr, hop: NextHop) -> Result<(), DataplaneError> {
        self.next_hops.insert(backend, hop);
        if let Some(index) = self.backends.get(&backend).map(|s| s.index) {
            self.write_backend(backend, index)?;
        }
        Ok(())
    }

    /// Sets the outer MACs used for backends without a next hop of their own (a default
    /// gateway, or a shared L2 segment's router). It is copied into every such backend's entry,
    /// so the program finds address and MACs with one lookup.
    pub fn set_default_next_hop(&mut self, hop: NextHop) -> Result<(), DataplaneError> {
        self.default_hop = Some(hop);
        self.write_config()?;
        let defaulted: Vec<(IpAddr, u32)> = self
            .backends
            .iter()
            .filter(|(addr, _)| !self.next_hops.contains_key(addr))
            .map(|(addr, slot)| (*addr, slot.index))
            .collect();
        for (addr, index) in defaulted {
            self.write_backend(addr, index)?;
        }
        Ok(())
    }

    /// Writes backend `addr`'s entry at `index`: its address and its own or the default MACs.
    fn write_backend(&mut self, addr: IpAddr, index: u32) -> Result<(), DataplaneError> {
        let own = self.next_hops.get(&addr).copied();
        let hop = own.or(self.default_hop);
        let entry = BackendEntry {
            addr: LbAddr::from_ip(addr),
            dst_mac: hop.map(|h| h.dst_mac).unwrap_or_default(),
            src_mac: hop.map(|h| h.src_mac).unwrap_or_default(),
            hop_valid: u16::from(hop.is_some()),
            hop_own: u16::from(own.is_some()),
        };
        let mut map: Array<&mut MapData, BackendEntry> =
            Array::try_from(self.map("backends")?).map_err(map_err("backends"))?;
        map.set(index, entry, 0).map_err(map_err("backends"))
    }

    /// The counters of `service`, or `None` when it is not programmed.
    pub fn counters(&mut self, service: Service) -> Result<Option<Counters>, DataplaneError> {
        let Some(vip_num) = self.services.get(&service).map(|s| s.vip_num) else {
            return Ok(None);
        };
        self.read_stats(vip_num).map(Some)
    }

    /// Drops that happened before a service was identified (fragments, malformed headers to
    /// a VIP address, IPv6 extension headers).
    pub fn global_counters(&mut self) -> Result<Counters, DataplaneError> {
        let slot = self.config.max_vips;
        self.read_stats(slot)
    }

    /// The programmed services.
    pub fn services(&self) -> impl Iterator<Item = &Service> {
        self.services.keys()
    }

    /// The backend node `service`'s table gives `flow` (what a flow-table miss picks).
    pub fn maglev_backend(&self, service: Service, flow: &FlowTuple) -> Option<IpAddr> {
        let state = self.services.get(&service)?;
        let slot = flow.hash(self.config.hash_seed) % self.config.table_size.get();
        let index = *state.ring.get(slot as usize)?;
        self.backends
            .iter()
            .find(|(_, s)| s.index == index && index != 0)
            .map(|(addr, _)| *addr)
    }

    /// Also strips tunnels whose inner destination is `vip`, as [`crate::Decap`] does: for a
    /// node that is a backend on the interface the load balancer holds (one XDP program per
    /// interface). Only packets whose outer protocol is 4 or 41 consult this list.
    pub fn add_decap_vip(&mut self, vip: IpAddr) -> Result<(), DataplaneError> {
        decap::add_vip(self.map("lb_decap_vips")?, "lb_decap_vips", vip)
    }

    /// Stops stripping tunnels to `vip` (absent: nothing to do).
    pub fn remove_decap_vip(&mut self, vip: IpAddr) -> Result<(), DataplaneError> {
        decap::remove_vip(self.map("lb_decap_vips")?, "lb_decap_vips", vip)
    }

    /// The VIPs whose tunnels are stripped, as the map holds them (also those added before a
    /// restart with pins).
    pub fn decap_vips(&mut self) -> Result<BTreeSet<IpAddr>, DataplaneError> {
        decap::list_vips(self.map("lb_decap_vips")?, "lb_decap_vips")
    }

    /// The tunnel end's counters. Only tunnelled packets are counted: `passed` is the tunnels
    /// to inner addresses not in the list (other packets are the load balancer's).
    pub fn decap_counters(&mut self) -> Result<DecapCounters, DataplaneError> {
        decap::read_counters(self.map("lb_decap_stats")?, "lb_decap_stats")
    }

    /// Runs the program once per `repeat` on `packet` with `BPF_PROG_TEST_RUN` (maps are the
    /// live ones: a run can create flow entries and counts). For fixtures and benchmarks.
    pub fn test_run(&self, packet: &[u8], repeat: u32) -> Result<TestRunOutput, DataplaneError> {
        let program: &Xdp = self
            .ebpf
            .program("xdp_lb")
            .ok_or(DataplaneError::Missing("program xdp_lb"))?
            .try_into()
            .map_err(prog_err("xdp_lb"))?;
        run_xdp(program, packet, repeat).map_err(prog_err("xdp_lb"))
    }

    /// Detaches from every interface and removes pinned links and maps. Use when the node
    /// stops load balancing for good; a process restart should just drop the `Dataplane`.
    pub fn shutdown(mut self) -> Result<(), DataplaneError> {
        for attachment in std::mem::take(&mut self.attachments) {
            detach(&attachment, "xdp_lb")?;
        }
        if let Some(dir) = &self.config.pin_dir {
            remove_pins(dir, &MAPS)?;
        }
        Ok(())
    }

    fn free_vip_num(&self) -> Result<u32, DataplaneError> {
        let used: BTreeSet<u32> = self.services.values().map(|s| s.vip_num).collect();
        (0..self.config.max_vips)
            .find(|n| !used.contains(n))
            .ok_or(DataplaneError::TooManyVips(self.config.max_vips))
    }

    /// The index of backend `addr`, allocating (users = 0) and writing it if new.
    fn backend_index(&mut self, addr: IpAddr) -> Result<u32, DataplaneError> {
        if let Some(slot) = self.backends.get(&addr) {
            return Ok(slot.index);
        }
        let used: BTreeSet<u32> = self.backends.values().map(|s| s.index).collect();
        let index = (1..self.config.max_backends)
            .find(|i| !used.contains(i))
            .ok_or(DataplaneError::TooManyBackends(self.config.max_backends))?;
        self.write_backend(addr, index)?;
        self.backends.insert(addr, BackendSlot { index, users: 0 });
        Ok(index)
    }

    /// One service fewer uses `index`; frees it when none does.
    fn release_backend(&mut self, index: u32) -> Result<(), DataplaneError> {
        if let Some(slot) = self.backends.values_mut().find(|s| s.index == index) {
            slot.users = slot.users.saturating_sub(1);
        }
        self.release_unused(index)
    }

    fn release_unused(&mut self, index: u32) -> Result<(), DataplaneError> {
        let Some(addr) = self
            .backends
            .iter()
            .find(|(_, s)| s.index == index && s.users == 0)
            .map(|(a, _)| *a)
        else {
            return Ok(());
        };
        self.backends.remove(&addr);
        {
            let mut map: Array<&mut MapData, BackendEntry> =
                Array::try_from(self.map("backends")?).map_err(map_err("backends"))?;
            map.set(index, BackendEntry::default(), 0)
                .map_err(map_err("backends"))?;
        }
        self.purge_flows(None, index)
    }

    /// Deletes flow entries pointing at backend `index` (of `service`, or of any service).
    fn purge_flows(&mut self, service: Option<Service>, index: u32) -> Result<(), DataplaneError> {
        let mut flows: BpfHashMap<&mut MapData, FlowKey, FlowValue> =
            BpfHashMap::try_from(self.map("flows")?).map_err(map_err("flows"))?;
        let mut doomed = Vec::new();
        for entry in flows.iter() {
            let Ok((key, value)) = entry else {
                continue; // evicted while iterating
            };
            if value.backend != index {
                continue;
            }
            let matches = service.is_none_or(|s| {
                key.dst == LbAddr::from_ip(s.vip).addr
                    && key.proto == s.protocol.number()
                    && (s.port == 0 || u16::from_be(key.dport) == s.port)
            });
            if matches {
                doomed.push(key);
            }
        }
        for key in doomed {
            match flows.remove(&key) {
                Ok(()) => {}
                Err(e) if is_absent(&e) => {} // evicted meanwhile
                Err(e) => return Err(map_err("flows")(e)),
            }
        }
        Ok(())
    }

    fn reset_stats(&mut self, slot: u32) -> Result<(), DataplaneError> {
        let mut stats: PerCpuArray<&mut MapData, VipStats> =
            PerCpuArray::try_from(self.map("vip_stats")?).map_err(map_err("vip_stats"))?;
        let cpus = aya::util::nr_cpus().map_err(|(_, e)| DataplaneError::Map {
            map: "vip_stats",
            source: Box::new(MapError::SyscallError(aya::sys::SyscallError {
                call: "nr_cpus",
                io_error: e,
            })),
        })?;
        let zero =
            aya::maps::PerCpuValues::try_from(vec![VipStats::default(); cpus]).map_err(|e| {
                DataplaneError::Map {
                    map: "vip_stats",
                    source: Box::new(MapError::SyscallError(aya::sys::SyscallError {
                        call: "per-cpu values",
                        io_error: e,
                    })),
                }
            })?;
        stats.set(slot, zero, 0).map_err(map_err("vip_stats"))
    }

    fn read_stats(&mut self, slot: u32) -> Result<Counters, DataplaneError> {
        let stats: PerCpuArray<&mut MapData, VipStats> =
            PerCpuArray::try_from(self.map("vip_stats")?).map_err(map_err("vip_stats"))?;
        let values = stats.get(&slot, 0).map_err(map_err("vip_stats"))?;
        let mut total = Counters::default();
        for cpu in values.iter() {
            total.packets += cpu.packets;
            total.bytes += cpu.bytes;
            total.flow_hits += cpu.flow_hits;
            total.flow_misses += cpu.flow_misses;
            for (sum, value) in total.drops.iter_mut().zip(cpu.drops) {
                *sum += value;
            }
        }
        Ok(total)
    }
}

/// Attaches in native mode, falling back to generic mode; logs the mode used.
pub(crate) fn attach_with_fallback(
    program: &mut Xdp,
    name: &'static str,
    ifname: &str,
) -> Result<(XdpLinkId, AttachMode), DataplaneError> {
    let (id, mode) = match program.attach(ifname, XdpMode::Driver) {
        Ok(id) => (id, AttachMode::Native),
        Err(native) => {
            tracing::warn!(ifname, program = name, error = %native, "native XDP refused, trying generic mode");
            let id =
                program
                    .attach(ifname, XdpMode::Skb)
                    .map_err(|generic| DataplaneError::Attach {
                        ifname: ifname.to_owned(),
                        native: Box::new(native),
                        generic: Box::new(generic),
                    })?;
            (id, AttachMode::Generic)
        }
    };
    tracing::info!(ifname, program = name, ?mode, "XDP program attached");
    Ok((id, mode))
}

/// Attaches `program` to `ifname`. Without `pin_dir`: native, else generic mode, owned by the
/// program. With `pin_dir`: a link pinned there as `link_<ifname>` by a previous process gets
/// the new program swapped in (`BPF_LINK_UPDATE`, atomic; [`AttachMode::Reused`]), otherwise a
/// new link is made and pinned there, so it outlives the process.
pub(crate) fn attach_maybe_pinned(
    program: &mut Xdp,
    name: &'static str,
    ifname: &str,
    pin_dir: Option<&Path>,
) -> Result<(AttachMode, AttachedLink), DataplaneError> {
    let pin_path = pin_dir.map(|dir| dir.join(format!("link_{ifname}")));
    let pin_error = |path: &Path, reason: String| DataplaneError::Pin {
        path: path.to_owned(),
        reason,
    };
    if let Some(path) = pin_path.as_ref().filter(|p| p.exists()) {
        let pinned = PinnedLink::from_pin(path).map_err(|e| pin_error(path, e.to_string()))?;
        let link =
            XdpLink::try_from(FdLink::from(pinned)).map_err(|e| pin_error(path, e.to_string()))?;
        let id = program.attach_to_link(link).map_err(prog_err(name))?;
        // The pin still refers to the same link; release our handle without detaching.
        let link = program.take_link(id).map_err(prog_err(name))?;
        drop(FdLink::try_from(link).map_err(|e| pin_error(path, e.to_string()))?);
        tracing::info!(ifname, program = name, "swapped into the pinned link");
        return Ok((AttachMode::Reused, AttachedLink::Pinned(path.clone())));
    }
    let (id, mode) = attach_with_fallback(program, name, ifname)?;
    let link = match pin_path {
        Some(path) => {
            let link = program.take_link(id).map_err(prog_err(name))?;
            let fd_link = FdLink::try_from(link)
                .map_err(|e| pin_error(&path, format!("not a bpf_link, cannot pin: {e}")))?;
            fd_link
                .pin(&path)
                .map_err(|e| pin_error(&path, e.to_string()))?;
            AttachedLink::Pinned(path)
        }
        None => AttachedLink::Owned,
    };
    Ok((mode, link))
}

/// Detaches a pinned attachment and removes its pin (an owned one goes with its program).
pub(crate) fn detach(attachment: &Attachment, name: &'static str) -> Result<(), DataplaneError> {
    if let AttachedLink::Pinned(path) = &attachment.link {
        let pinned = PinnedLink::from_pin(path).map_err(|e| DataplaneError::Pin {
            path: path.clone(),
            reason: e.to_string(),
        })?;
        let link = pinned.unpin().map_err(|e| DataplaneError::Pin {
            path: path.clone(),
            reason: e.to_string(),
        })?;
        drop(link);
        tracing::info!(ifname = attachment.ifname, program = name, "detached");
    }
    Ok(())
}

/// Whether a map delete failed only because the key was not there (aya reports it as the
/// syscall's ENOENT).
pub(crate) fn is_absent(error: &MapError) -> bool {
    match error {
        MapError::KeyNotFound => true,
        MapError::SyscallError(e) => e.io_error.raw_os_error() == Some(libc::ENOENT),
        _ => false,
    }
}

/// Removes the pinned maps `names` from `dir`, then `dir` if it is empty.
pub(crate) fn remove_pins(dir: &Path, names: &[&str]) -> Result<(), DataplaneError> {
    for name in names {
        remove_pin(&dir.join(name))?;
    }
    let _ = std::fs::remove_dir(dir);
    Ok(())
}

fn remove_pin(path: &Path) -> Result<(), DataplaneError> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(DataplaneError::Pin {
            path: path.to_owned(),
            reason: e.to_string(),
        }),
    }
}

/// `BPF_PROG_TEST_RUN` on an XDP program, with room for the encapsulation's extra bytes.
pub(crate) fn run_xdp(
    program: &Xdp,
    packet: &[u8],
    repeat: u32,
) -> Result<TestRunOutput, ProgramError> {
    let mut out = vec![0u8; packet.len() + 256];
    let mut opts = TestRunOptions::new();
    opts.data_in = Some(packet);
    opts.data_out = Some(&mut out);
    opts.repeat = repeat.max(1);
    let result = program.test_run(opts)?;
    out.truncate(result.data_size_out as usize);
    Ok(TestRunOutput {
        verdict: result.return_value,
        data: out,
        duration: result.duration,
    })
}
