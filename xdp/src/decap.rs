//! The backend node's side: loads `decap.bpf.c`, which strips IP-in-IP / IPv6-in-IPv6 headers
//! whose inner destination is a known VIP and passes the client's packet to the stack.
//!
//! # Restarts
//!
//! Loaded with [`Decap::load`], the program is attached for as long as the [`Decap`] lives.
//! Loaded with [`Decap::load_pinned`], its maps (`decap_vips`, `decap_stats`) are pinned in the
//! given bpffs directory and each attachment is a bpf_link pinned there as `link_<ifname>`, as
//! the load balancer's are: dropping the `Decap` leaves the program decapsulating with its VIP
//! list; the next `load_pinned` with the same directory reuses the maps (VIPs included) and
//! [`Decap::attach`] swaps the new program into the pinned link atomically
//! ([`AttachMode::Reused`]). [`Decap::shutdown`] detaches and removes the pins. Use a directory
//! of its own (not the load balancer's): both name their links `link_<ifname>`.
//!
//! [`Decap::decap_vips`] reads the VIP list from the map itself, so after a restart with pins
//! the VIPs a previous process added can be listed (and stale ones removed).
//!
//! The same tunnel end runs inside the load balancer (`bpf/decap_core.h`), for nodes that
//! balance and are backends on one interface: [`crate::Dataplane::add_decap_vip`]. The map
//! helpers at the bottom serve both.
//!
//! It must not decapsulate anything whose inner destination is not in its VIP list.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::path::PathBuf;

use aya::maps::{HashMap as BpfHashMap, Map, MapData, PerCpuArray};
use aya::programs::Xdp;
use aya::{Ebpf, EbpfLoader};

use crate::abi::{DecapStats, LbAddr};
use crate::dataplane::{
    attach_maybe_pinned, detach, is_absent, remove_pins, run_xdp, AttachMode, Attachment,
    DataplaneError, TestRunOutput,
};

/// The maps of `decap.bpf.c`, pinned by these names.
const MAPS: [&str; 2] = ["decap_vips", "decap_stats"];

static DECAP_OBJECT: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/decap.bpf.o"));

/// Counters of a tunnel end (summed over CPUs).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DecapCounters {
    /// Tunnelled packets to a known VIP, stripped and passed to the stack.
    pub decapsulated: u64,
    /// Passed untouched: by [`Decap`], every other packet; by the load balancer
    /// ([`crate::Dataplane::decap_counters`]), only tunnelled packets to other inner addresses
    /// (it does not count the rest).
    pub passed: u64,
    /// Tunnelled packets the kernel would not shrink (dropped).
    pub malformed: u64,
}

/// The loaded decap program.
pub struct Decap {
    ebpf: Ebpf,
    pin_dir: Option<PathBuf>,
    attachments: Vec<Attachment>,
}

fn program_error(source: aya::programs::ProgramError) -> DataplaneError {
    DataplaneError::Program {
        program: "xdp_decap",
        source: Box::new(source),
    }
}

fn map_error(map: &'static str) -> impl FnOnce(aya::maps::MapError) -> DataplaneError {
    move |source| DataplaneError::Map {
        map,
        source: Box::new(source),
    }
}

impl Decap {
    /// Loads the program (not attached yet); nothing pinned, detached on drop.
    pub fn load() -> Result<Self, DataplaneError> {
        Self::load_from(None)
    }

    /// Loads the program with maps and links pinned in bpffs directory `pin_dir` (created if
    /// missing), reusing what a previous process pinned there. See the module documentation.
    pub fn load_pinned(pin_dir: impl Into<PathBuf>) -> Result<Self, DataplaneError> {
        Self::load_from(Some(pin_dir.into()))
    }

    fn load_from(pin_dir: Option<PathBuf>) -> Result<Self, DataplaneError> {
        let mut loader = EbpfLoader::new();
        if let Some(dir) = &pin_dir {
            std::fs::create_dir_all(dir).map_err(|e| DataplaneError::Pin {
                path: dir.clone(),
                reason: e.to_string(),
            })?;
            for name in MAPS {
                loader.map_pin_path(name, dir.join(name));
            }
        }
        let mut ebpf = loader.load(DECAP_OBJECT).map_err(Box::new)?;
        let program: &mut Xdp = ebpf
            .program_mut("xdp_decap")
            .ok_or(DataplaneError::Missing("program xdp_decap"))?
            .try_into()
            .map_err(program_error)?;
        program.load().map_err(program_error)?;
        Ok(Self {
            ebpf,
            pin_dir,
            attachments: Vec::new(),
        })
    }

    fn program(&mut self) -> Result<&mut Xdp, DataplaneError> {
        self.ebpf
            .program_mut("xdp_decap")
            .ok_or(DataplaneError::Missing("program xdp_decap"))?
            .try_into()
            .map_err(program_error)
    }

    /// Attaches to `ifname` (calling thread's namespace), native mode first, then generic.
    /// When pinned, a link a previous process pinned for `ifname` is reused instead.
    pub fn attach(&mut self, ifname: &str) -> Result<AttachMode, DataplaneError> {
        let pin_dir = self.pin_dir.clone();
        let (mode, link) =
            attach_maybe_pinned(self.program()?, "xdp_decap", ifname, pin_dir.as_deref())?;
        self.attachments.push(Attachment {
            ifname: ifname.to_owned(),
            link,
        });
        Ok(mode)
    }

    /// Detaches from every interface and removes pinned links and maps. Use when the node
    /// stops being a backend for good; a process restart should just drop the `Decap`.
    pub fn shutdown(mut self) -> Result<(), DataplaneError> {
        for attachment in std::mem::take(&mut self.attachments) {
            detach(&attachment, "xdp_decap")?;
        }
        if let Some(dir) = &self.pin_dir {
            remove_pins(dir, &MAPS)?;
        }
        Ok(())
    }

    fn map(&mut self, name: &'static str) -> Result<&mut Map, DataplaneError> {
        self.ebpf.map_mut(name).ok_or(DataplaneError::Missing(name))
    }

    /// Accepts tunnelled packets whose inner destination is `vip`.
    pub fn add_vip(&mut self, vip: IpAddr) -> Result<(), DataplaneError> {
        add_vip(self.map("decap_vips")?, "decap_vips", vip)
    }

    /// Stops accepting tunnelled packets for `vip` (absent: nothing to do).
    pub fn remove_vip(&mut self, vip: IpAddr) -> Result<(), DataplaneError> {
        remove_vip(self.map("decap_vips")?, "decap_vips", vip)
    }

    /// The VIPs accepted, as the map holds them (also those added before a restart).
    pub fn decap_vips(&mut self) -> Result<BTreeSet<IpAddr>, DataplaneError> {
        list_vips(self.map("decap_vips")?, "decap_vips")
    }

    /// The counters.
    pub fn counters(&mut self) -> Result<DecapCounters, DataplaneError> {
        read_counters(self.map("decap_stats")?, "decap_stats")
    }

    /// Runs the program on `packet` with `BPF_PROG_TEST_RUN` (fixtures).
    pub fn test_run(&mut self, packet: &[u8]) -> Result<TestRunOutput, DataplaneError> {
        run_xdp(self.program()?, packet, 1).map_err(program_error)
    }
}

/// Adds `vip` to a tunnel end's VIP map `name`.
pub(crate) fn add_vip(
    map: &mut Map,
    name: &'static str,
    vip: IpAddr,
) -> Result<(), DataplaneError> {
    let mut vips: BpfHashMap<&mut MapData, LbAddr, u32> =
        BpfHashMap::try_from(map).map_err(map_error(name))?;
    vips.insert(LbAddr::from_ip(vip), 1, 0)
        .map_err(map_error(name))
}

/// Removes `vip` from a tunnel end's VIP map `name`; an absent VIP is not an error.
pub(crate) fn remove_vip(
    map: &mut Map,
    name: &'static str,
    vip: IpAddr,
) -> Result<(), DataplaneError> {
    let mut vips: BpfHashMap<&mut MapData, LbAddr, u32> =
        BpfHashMap::try_from(map).map_err(map_error(name))?;
    match vips.remove(&LbAddr::from_ip(vip)) {
        Ok(()) => Ok(()),
        Err(e) if is_absent(&e) => Ok(()),
        Err(e) => Err(map_error(name)(e)),
    }
}

/// The VIPs in a tunnel end's VIP map `name` (keys of an unknown family are skipped).
pub(crate) fn list_vips(
    map: &mut Map,
    name: &'static str,
) -> Result<BTreeSet<IpAddr>, DataplaneError> {
    let vips: BpfHashMap<&mut MapData, LbAddr, u32> =
        BpfHashMap::try_from(map).map_err(map_error(name))?;
    let keys = vips
        .keys()
        .collect::<Result<Vec<LbAddr>, _>>()
        .map_err(map_error(name))?;
    Ok(keys.into_iter().filter_map(LbAddr::to_ip).collect())
}

/// A tunnel end's counters from its per-CPU stats map `name`, summed over CPUs.
pub(crate) fn read_counters(
    map: &mut Map,
    name: &'static str,
) -> Result<DecapCounters, DataplaneError> {
    let stats: PerCpuArray<&mut MapData, DecapStats> =
        PerCpuArray::try_from(map).map_err(map_error(name))?;
    let values = stats.get(&0, 0).map_err(map_error(name))?;
    let mut total = DecapCounters::default();
    for cpu in values.iter() {
        total.decapsulated += cpu.decapsulated;
        total.passed += cpu.passed;
        total.malformed += cpu.malformed;
    }
    Ok(total)
}
