//! Allocator engine benchmarks (issue 3). Prints one `bench <metric> <value> <unit>` line each:
//!
//! - `alloc_assign_100k_ms`: 100 000 Services assigned from one /15 pool;
//! - `alloc_assign_100k_20pools_ms`: 100 000 Services in 20 namespaces, each namespace served by
//!   its own pool chosen through a namespace selector (all 20 pools are evaluated per Service);
//! - `alloc_restore_100k_ms`: restore of 100 000 persisted bindings (the restart path);
//! - `alloc_cycle_100k_ms`: 100 000 release + assign cycles on a pool holding 100 000 bindings;
//! - `alloc_bytes_per_binding`: heap bytes the engine holds per binding (stored request included),
//!   measured with a counting global allocator.
//!
//! Times are CPU time of the benchmark thread (see [`cpu_ms`]) and exclude building the
//! requests; each figure is the best of five runs on a fresh engine.
//! Addresses come from 198.18.0.0/15, the range RFC 2544 reserves for benchmarks.

use std::alloc::{GlobalAlloc, Layout, System};
use std::collections::BTreeMap;
use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::atomic::{AtomicIsize, Ordering};

use cairn_allocator::engine::{AddressRange, Binding, Engine, Pool, ServiceKey, ServiceRequest};
use cairn_api::selector::{Requirement, Selector};

/// Live heap bytes, kept by [`Counting`].
static LIVE: AtomicIsize = AtomicIsize::new(0);

/// The system allocator, counting live bytes.
struct Counting;

// SAFETY: every call is forwarded unchanged to `System`; only a counter is updated besides.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size() as isize, Ordering::Relaxed);
        // SAFETY: forwarded with the caller's guarantees.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        // SAFETY: forwarded with the caller's guarantees.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LIVE.fetch_add(
            new_size as isize - layout.size() as isize,
            Ordering::Relaxed,
        );
        // SAFETY: forwarded with the caller's guarantees.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

const N: usize = 100_000;
const POOLS: usize = 20;

fn slash15() -> Pool {
    let net = "198.18.0.0/15".parse().expect("literal CIDR");
    Pool::new("bench", vec![AddressRange::from_net(net)])
}

/// 20 pools of 6 000 addresses each, pool `i` serving namespaces labelled `team=t<i>`.
fn twenty_pools() -> Vec<Pool> {
    let base = u32::from(Ipv4Addr::new(198, 18, 0, 0));
    (0..POOLS as u32)
        .map(|i| {
            let start = IpAddr::V4(Ipv4Addr::from(base + i * 6_000));
            let end = IpAddr::V4(Ipv4Addr::from(base + i * 6_000 + 5_999));
            let range = AddressRange::new(start, end).expect("ordered range");
            let mut pool = Pool::new(format!("pool-{i:02}"), vec![range]);
            pool.allocate_to.namespace_selectors = vec![Selector::new(vec![Requirement::In(
                "team".into(),
                vec![format!("t{i}")],
            )])];
            pool
        })
        .collect()
}

fn request(i: usize) -> ServiceRequest {
    ServiceRequest::new(ServiceKey::new(
        format!("ns-{}", i % 100),
        format!("svc-{i}"),
    ))
}

fn team_request(i: usize) -> ServiceRequest {
    let team = i % POOLS;
    ServiceRequest {
        namespace_labels: BTreeMap::from([("team".to_string(), format!("t{team}"))]),
        ..ServiceRequest::new(ServiceKey::new(format!("team-{team}"), format!("svc-{i}")))
    }
}

fn engine_with(pools: Vec<Pool>) -> Engine {
    let mut engine = Engine::new();
    for pool in pools {
        engine.upsert_pool(pool);
    }
    engine
}

fn assign_all(engine: &mut Engine, requests: Vec<ServiceRequest>) {
    for r in requests {
        if let Err(refusal) = engine.assign(r) {
            panic!("benchmark pool too small: {refusal}");
        }
    }
}

/// CPU time consumed by this thread so far, in milliseconds. The machine is shared by several
/// builds; thread CPU time leaves out the time this thread waits for a core, which wall time
/// would count.
fn cpu_ms() -> f64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec; the clock id is a constant the kernel knows.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    assert_eq!(rc, 0, "clock_gettime(CLOCK_THREAD_CPUTIME_ID) failed");
    ts.tv_sec as f64 * 1e3 + ts.tv_nsec as f64 / 1e6
}

/// Milliseconds of thread CPU time since `start` (a [`cpu_ms`] reading).
fn ms(start: f64) -> f64 {
    cpu_ms() - start
}

/// Best of five runs of `run`, which returns its own measured milliseconds (the run least
/// disturbed by other processes' use of the caches).
fn best(mut run: impl FnMut() -> f64) -> f64 {
    (0..5).map(|_| run()).fold(f64::INFINITY, f64::min)
}

fn assign_100k(pools: Vec<Pool>, make: fn(usize) -> ServiceRequest) -> f64 {
    let mut engine = engine_with(pools);
    let requests: Vec<ServiceRequest> = (0..N).map(make).collect();
    let start = cpu_ms();
    assign_all(&mut engine, requests);
    let elapsed = ms(start);
    black_box(&engine);
    elapsed
}

fn restore_100k() -> f64 {
    let mut source = engine_with(vec![slash15()]);
    assign_all(&mut source, (0..N).map(request).collect());
    let persisted: Vec<(ServiceRequest, Binding)> = (0..N)
        .map(|i| {
            let r = request(i);
            let b = source.binding(&r.key).expect("assigned above").clone();
            (r, b)
        })
        .collect();
    let mut engine = engine_with(vec![slash15()]);
    let start = cpu_ms();
    let flagged = engine.restore(persisted).expect("fresh engine");
    let elapsed = ms(start);
    assert!(flagged.is_empty(), "restored bindings are valid");
    elapsed
}

fn cycle_100k() -> f64 {
    let mut engine = engine_with(vec![slash15()]);
    assign_all(&mut engine, (0..N).map(request).collect());
    let released: Vec<ServiceKey> = (0..N).map(|i| request(i).key).collect();
    let fresh: Vec<ServiceRequest> = (N..2 * N).map(request).collect();
    let start = cpu_ms();
    for (key, r) in released.iter().zip(fresh) {
        black_box(engine.release(key));
        if let Err(refusal) = engine.assign(r) {
            panic!("benchmark pool too small: {refusal}");
        }
    }
    ms(start)
}

fn bytes_per_binding() -> f64 {
    let mut engine = engine_with(vec![slash15()]);
    let before = LIVE.load(Ordering::Relaxed);
    assign_all(&mut engine, (0..N).map(request).collect());
    let after = LIVE.load(Ordering::Relaxed);
    black_box(&engine);
    (after - before) as f64 / N as f64
}

fn main() {
    let assign = best(|| assign_100k(vec![slash15()], request));
    println!("bench alloc_assign_100k_ms {assign:.1} ms");
    let pools = best(|| assign_100k(twenty_pools(), team_request));
    println!("bench alloc_assign_100k_20pools_ms {pools:.1} ms");
    let restore = best(restore_100k);
    println!("bench alloc_restore_100k_ms {restore:.1} ms");
    let cycle = best(cycle_100k);
    println!("bench alloc_cycle_100k_ms {cycle:.1} ms");
    let bytes = bytes_per_binding();
    println!("bench alloc_bytes_per_binding {bytes:.0} bytes");
}
