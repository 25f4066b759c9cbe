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
//! It must not decapsulate anything whose inner destination is not in its VIP list.

use std::net::IpAddr;
use std::path::PathBuf;

use aya::maps::{HashMap as BpfHashMap, MapData, PerCpuArray};
use aya::programs::Xdp;
use aya::{Ebpf, EbpfLoader};

use crate::abi::{DecapStats, LbAddr};
use crate::dataplane::{
    attach_maybe_pinned, detach, remove_pins, run_xdp, AttachMode, Attachment, DataplaneError,
    TestRunOutput,
};

/// The maps of `decap.bpf.c`, pinned by these names.
const MAPS: [&str; 2] = ["decap_vips", "decap_stats"];

static DECAP_OBJECT: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/decap.bpf.o"));

/// Counters of the decap program (summed over CPUs).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DecapCounters {
    /// Tunnelled packets to a known VIP, stripped and passed to the stack.
    pub decapsulated: u64,
    /// Everything else, passed untouched.
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

    /// Accepts tunnelled packets whose inner destination is `vip`.
    pub fn add_vip(&mut self, vip: IpAddr) -> Result<(), DataplaneError> {
        let mut map: BpfHashMap<&mut MapData, LbAddr, u32> = BpfHashMap::try_from(
            self.ebpf
                .map_mut("decap_vips")
                .ok_or(DataplaneError::Missing("decap_vips"))?,
        )
        .map_err(map_error("decap_vips"))?;
        map.insert(LbAddr::from_ip(vip), 1, 0)
            .map_err(map_error("decap_vips"))
    }

    /// Stops accepting tunnelled packets for `vip`.
    pub fn remove_vip(&mut self, vip: IpAddr) -> Result<(), DataplaneError> {
        let mut map: BpfHashMap<&mut MapData, LbAddr, u32> = BpfHashMap::try_from(
            self.ebpf
                .map_mut("decap_vips")
                .ok_or(DataplaneError::Missing("decap_vips"))?,
        )
        .map_err(map_error("decap_vips"))?;
        match map.remove(&LbAddr::from_ip(vip)) {
            Ok(()) | Err(aya::maps::MapError::KeyNotFound) => Ok(()),
            Err(e) => Err(map_error("decap_vips")(e)),
        }
    }

    /// The counters.
    pub fn counters(&mut self) -> Result<DecapCounters, DataplaneError> {
        let map: PerCpuArray<&mut MapData, DecapStats> = PerCpuArray::try_from(
            self.ebpf
                .map_mut("decap_stats")
                .ok_or(DataplaneError::Missing("decap_stats"))?,
        )
        .map_err(map_error("decap_stats"))?;
        let values = map.get(&0, 0).map_err(map_error("decap_stats"))?;
        let mut total = DecapCounters::default();
        for cpu in values.iter() {
            total.decapsulated += cpu.decapsulated;
            total.passed += cpu.passed;
            total.malformed += cpu.malformed;
        }
        Ok(total)
    }

    /// Runs the program on `packet` with `BPF_PROG_TEST_RUN` (fixtures).
    pub fn test_run(&mut self, packet: &[u8]) -> Result<TestRunOutput, DataplaneError> {
        run_xdp(self.program()?, packet, 1).map_err(program_error)
    }
}
