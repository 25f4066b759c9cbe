//! The backend node's side: loads `decap.bpf.c`, which strips IP-in-IP / IPv6-in-IPv6 headers
//! whose inner destination is a known VIP and passes the client's packet to the stack.
//!
//! The program is attached for as long as the [`Decap`] lives (no pinning: a restart costs the
//! few packets that arrive while it reloads, and the VIP list is re-applied by the caller).
//! It must not decapsulate anything whose inner destination is not in its VIP list.

use std::net::IpAddr;

use aya::maps::{HashMap as BpfHashMap, MapData, PerCpuArray};
use aya::programs::Xdp;
use aya::Ebpf;

use crate::abi::{DecapStats, LbAddr};
use crate::dataplane::{attach_with_fallback, run_xdp, AttachMode, DataplaneError, TestRunOutput};

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
    /// Loads the program (not attached yet).
    pub fn load() -> Result<Self, DataplaneError> {
        let mut ebpf = Ebpf::load(DECAP_OBJECT).map_err(Box::new)?;
        let program: &mut Xdp = ebpf
            .program_mut("xdp_decap")
            .ok_or(DataplaneError::Missing("program xdp_decap"))?
            .try_into()
            .map_err(program_error)?;
        program.load().map_err(program_error)?;
        Ok(Self { ebpf })
    }

    fn program(&mut self) -> Result<&mut Xdp, DataplaneError> {
        self.ebpf
            .program_mut("xdp_decap")
            .ok_or(DataplaneError::Missing("program xdp_decap"))?
            .try_into()
            .map_err(program_error)
    }

    /// Attaches to `ifname` (calling thread's namespace), native mode first, then generic.
    pub fn attach(&mut self, ifname: &str) -> Result<AttachMode, DataplaneError> {
        attach_with_fallback(self.program()?, "xdp_decap", ifname).map(|(_, mode)| mode)
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
