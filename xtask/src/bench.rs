//! `cargo xtask bench`: each benchmark is a `harness = false` bench target that prints
//! `bench <metric> <value> <unit>` lines; this table says which crate holds it.

use std::path::Path;

use anyhow::{bail, Result};

/// (name, package, issue that brings it)
const BENCHES: &[(&str, &str, u32)] = &[
    ("allocator", "cairn-allocator", 3),
    ("controller", "cairn-allocator", 5),
    ("apiserver", "cairn-e2e", 4),
    ("arp", "cairn-arp", 6),
    ("bgp", "cairn-bgp", 9),
    ("xdp", "cairn-xdp", 8),
    ("ownership", "cairn-speaker", 7),
    ("leases", "cairn-speaker", 7),
    ("failover", "cairn-e2e", 7),
];

/// Benchmarks that start Cairn's binaries (from `target/debug`) in the lab.
const RUNS_THE_BINARIES: &[&str] = &["failover"];

fn folder(package: &str) -> &str {
    package.strip_prefix("cairn-").unwrap_or(package)
}

/// Runs the named benchmarks (all that exist when `names` is empty).
pub fn run(root: &Path, names: &[String]) -> Result<()> {
    let exists = |name: &str, package: &str| {
        root.join(folder(package))
            .join("benches")
            .join(format!("{name}.rs"))
            .is_file()
    };
    let selected: Vec<(&str, &str)> = if names.is_empty() {
        BENCHES
            .iter()
            .filter(|(n, p, _)| exists(n, p))
            .map(|(n, p, _)| (*n, *p))
            .collect()
    } else {
        let mut selected = Vec::new();
        for name in names {
            let Some((n, p, issue)) = BENCHES.iter().find(|(n, _, _)| n == name) else {
                let known: Vec<&str> = BENCHES.iter().map(|(n, _, _)| *n).collect();
                bail!("no benchmark {name:?}; known: {}", known.join(", "));
            };
            if !exists(n, p) {
                bail!("benchmark {name:?} is not written yet (issue {issue})");
            }
            selected.push((*n, *p));
        }
        selected
    };
    for (name, package) in selected {
        if RUNS_THE_BINARIES.contains(&name) {
            super::run(
                root,
                "cargo",
                &["build", "--quiet", "--workspace", "--bins"],
            )?;
        }
        super::run(
            root,
            "cargo",
            &["bench", "--quiet", "-p", package, "--bench", name],
        )?;
    }
    Ok(())
}
