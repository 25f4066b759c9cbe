//! Helper XDP programs for veth labs and benchmarks (`bpf/sink.bpf.c`): `xdp_pass`, needed on
//! the peer of a veth that receives XDP_TX/redirected frames, and `xdp_count_drop`, a packet
//! counter that drops what it counts (the far end of a throughput measurement).
//!
//! Not for production paths: it must not be attached where traffic should flow, except
//! [`SinkKind::Pass`].

use aya::maps::{MapData, PerCpuArray};
use aya::programs::Xdp;
use aya::Ebpf;

use crate::dataplane::{attach_with_fallback, run_xdp, AttachMode, DataplaneError, TestRunOutput};

static SINK_OBJECT: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/sink.bpf.o"));

/// Which helper program.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SinkKind {
    /// XDP_PASS everything.
    Pass,
    /// Count packets and bytes, then XDP_DROP.
    CountDrop,
}

/// A loaded helper program; detached on drop.
pub struct Sink {
    ebpf: Ebpf,
    name: &'static str,
}

fn program_error(source: aya::programs::ProgramError) -> DataplaneError {
    DataplaneError::Program {
        program: "sink",
        source: Box::new(source),
    }
}

impl Sink {
    /// Loads `kind` (not attached).
    pub fn load(kind: SinkKind) -> Result<Self, DataplaneError> {
        let name = match kind {
            SinkKind::Pass => "xdp_pass",
            SinkKind::CountDrop => "xdp_count_drop",
        };
        let mut ebpf = Ebpf::load(SINK_OBJECT).map_err(Box::new)?;
        let program: &mut Xdp = ebpf
            .program_mut(name)
            .ok_or(DataplaneError::Missing("sink program"))?
            .try_into()
            .map_err(program_error)?;
        program.load().map_err(program_error)?;
        Ok(Self { ebpf, name })
    }

    /// Loads `kind` and attaches it to `ifname` (calling thread's namespace).
    pub fn attach(kind: SinkKind, ifname: &str) -> Result<(Self, AttachMode), DataplaneError> {
        let mut sink = Self::load(kind)?;
        let program: &mut Xdp = sink
            .ebpf
            .program_mut(sink.name)
            .ok_or(DataplaneError::Missing("sink program"))?
            .try_into()
            .map_err(program_error)?;
        let (_, mode) = attach_with_fallback(program, sink.name, ifname)?;
        Ok((sink, mode))
    }

    /// Runs the program on `packet` with `BPF_PROG_TEST_RUN` (benchmark calibration: the
    /// cost of the test-run harness around an empty program).
    pub fn test_run(&self, packet: &[u8], repeat: u32) -> Result<TestRunOutput, DataplaneError> {
        let program: &Xdp = self
            .ebpf
            .program(self.name)
            .ok_or(DataplaneError::Missing("sink program"))?
            .try_into()
            .map_err(program_error)?;
        run_xdp(program, packet, repeat).map_err(program_error)
    }

    /// Packets and bytes counted so far (`CountDrop` only; zero for `Pass`).
    pub fn counts(&mut self) -> Result<(u64, u64), DataplaneError> {
        let map: PerCpuArray<&mut MapData, [u64; 2]> = PerCpuArray::try_from(
            self.ebpf
                .map_mut("sink_counts")
                .ok_or(DataplaneError::Missing("sink_counts"))?,
        )
        .map_err(|e| DataplaneError::Map {
            map: "sink_counts",
            source: Box::new(e),
        })?;
        let values = map.get(&0, 0).map_err(|e| DataplaneError::Map {
            map: "sink_counts",
            source: Box::new(e),
        })?;
        Ok(values.iter().fold((0, 0), |(p, b), v| (p + v[0], b + v[1])))
    }
}
