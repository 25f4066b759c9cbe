//! `cargo xtask demo`: Cairn working on this machine, end to end.
//!
//! 1. Validates `manifests/examples` with the controllers' own validation.
//! 2. Builds the binaries and brings the user's lab up afresh (`cairn_e2e::lab`: FRR router,
//!    three node namespaces, two clients, the lab API server, `cairn-allocator` and one
//!    `cairn-speaker` per node).
//! 3. Runs the scenario of `cairn_e2e::lab::demo` (Services, addresses, owners, the router's
//!    ECMP routes, requests from both clients, a measured failover, a Service deletion), which
//!    prints its account as it goes.
//! 4. Prints the summary (each expectation met / FAILED) and the commands to explore, and tears
//!    the lab down unless `--keep`. Fails when any expectation failed.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use cairn_api::v1alpha1::*;
use cairn_api::validation::{self, Community, ValidPool};
use cairn_e2e::lab::{demo, Dataplane, Lab, LabConfig, UpOutcome};
use serde::de::DeserializeOwned;
use serde::Deserialize;

/// One YAML document of an example file, split by kind.
struct Document {
    file: String,
    kind: String,
    name: String,
    value: serde_json::Value,
}

fn documents(dir: &Path) -> Result<Vec<Document>> {
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .collect();
    files.sort();
    let mut docs = Vec::new();
    for path in files {
        let text = std::fs::read_to_string(&path)?;
        let file = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        for doc in serde_yaml::Deserializer::from_str(&text) {
            let value = serde_json::Value::deserialize(doc)
                .with_context(|| format!("parsing {}", path.display()))?;
            if value.is_null() {
                continue;
            }
            let kind = value["kind"].as_str().unwrap_or("?").to_owned();
            let name = value["metadata"]["name"].as_str().unwrap_or("?").to_owned();
            docs.push(Document {
                file: file.clone(),
                kind,
                name,
                value,
            });
        }
    }
    Ok(docs)
}

fn spec<T: DeserializeOwned>(doc: &Document) -> Result<T> {
    serde_json::from_value(doc.value["spec"].clone()).with_context(|| {
        format!(
            "{}: {} {} has a malformed spec",
            doc.file, doc.kind, doc.name
        )
    })
}

/// Validates the examples; fails when one does not.
fn validate(root: &Path) -> Result<()> {
    let docs = documents(&root.join("manifests/examples"))?;
    println!("== Validating manifests/examples with the controllers' own validation");
    let mut failures = 0;
    let mut report = |doc: &Document, outcome: Result<String, validation::Problems>| match outcome {
        Ok(summary) => println!("  ok    {:<17} {:<18} {summary}", doc.kind, doc.name),
        Err(problems) => {
            failures += 1;
            println!("  FAIL  {:<17} {:<18} {problems}", doc.kind, doc.name);
        }
    };
    let mut aliases: BTreeMap<String, Community> = BTreeMap::new();
    for doc in docs.iter().filter(|d| d.kind == "Community") {
        let outcome = validation::community_aliases(&spec::<CommunitySpec>(doc)?).map(|a| {
            let text: Vec<String> = a.iter().map(|(k, v)| format!("{k}={v}")).collect();
            aliases.extend(a);
            format!("aliases {}", text.join(", "))
        });
        report(doc, outcome);
    }
    let mut pools: Vec<(String, ValidPool)> = Vec::new();
    for doc in &docs {
        let outcome = match doc.kind.as_str() {
            "IPAddressPool" => validation::pool(&spec::<IPAddressPoolSpec>(doc)?).map(|p| {
                let v4: u128 = p
                    .ranges
                    .iter()
                    .filter(|r| r.is_ipv4())
                    .map(|r| r.len())
                    .sum();
                let v6: u128 = p
                    .ranges
                    .iter()
                    .filter(|r| !r.is_ipv4())
                    .map(|r| r.len())
                    .sum();
                let summary = format!(
                    "{v4} IPv4 + {v6} IPv6 addresses, autoAssign={}",
                    p.auto_assign
                );
                pools.push((doc.name.clone(), p));
                summary
            }),
            "L2Advertisement" => validation::l2_advertisement(&spec::<L2AdvertisementSpec>(doc)?)
                .map(|a| format!("pools {:?}, interfaces {:?}", a.pools.names, a.interfaces)),
            "BGPPeer" => validation::bgp_peer(&spec::<BGPPeerSpec>(doc)?).map(|p| {
                format!(
                    "{} AS{} -> AS{}, hold {}s, {}",
                    p.peer_address,
                    p.my_asn,
                    p.peer_asn,
                    p.hold_time.as_secs(),
                    if p.is_ibgp() { "iBGP" } else { "eBGP" }
                )
            }),
            "BGPAdvertisement" => {
                validation::bgp_advertisement(&spec::<BGPAdvertisementSpec>(doc)?, &aliases).map(
                    |a| {
                        let c: Vec<String> = a.communities.iter().map(|c| c.to_string()).collect();
                        format!(
                            "/{} and /{}, communities {}",
                            a.aggregation_length,
                            a.aggregation_length_v6,
                            c.join(" ")
                        )
                    },
                )
            }
            _ => continue,
        };
        report(doc, outcome);
    }
    let overlaps = validation::pool_overlaps(pools.iter().map(|(n, p)| (n.as_str(), p)));
    for (pool, problems) in &overlaps {
        failures += 1;
        for p in problems {
            println!("  FAIL  IPAddressPool     {pool:<18} {p}");
        }
    }
    if failures > 0 {
        bail!("{failures} example resource(s) failed validation");
    }
    Ok(())
}

/// Runs the demo; fails when any expectation failed.
pub fn run(root: &Path, keep: bool, dataplane: Dataplane) -> Result<()> {
    if !cairn_e2e::netns::is_root() {
        bail!(
            "the demo runs in network namespaces, which need root: run `cargo xtask demo` as root"
        );
    }
    validate(root)?;
    crate::run(root, "cargo", &["build", "--workspace", "--bins"])?;
    let started = Instant::now();
    let mut config = LabConfig::user(root);
    config.dataplane = dataplane;
    let lab = Lab::new(config);
    if lab.status().namespaces.iter().any(|(_, exists)| *exists) {
        println!("\n== Removing the previous lab");
        for line in lab.down()? {
            println!("  removed {line}");
        }
    }
    println!("\n== Bringing the lab up");
    match lab.up()? {
        UpOutcome::AlreadyUp => println!("  the lab was already up"),
        UpOutcome::Created(made) => {
            for line in made {
                println!("  {line}");
            }
        }
    }
    let mut stdout = std::io::stdout();
    let outcome = demo::run(&lab, &mut stdout);
    let elapsed = started.elapsed();
    let expectations = match outcome {
        Ok(e) => e,
        Err(e) => {
            println!("\nthe demo stopped: {e}");
            println!("the lab is left up for inspection; `cargo xtask lab down` removes it");
            return Err(e.into());
        }
    };

    println!("\n== Summary ({} s after the build)", elapsed.as_secs());
    let width = expectations
        .iter()
        .map(|e| e.what.chars().count())
        .max()
        .unwrap_or(0);
    for e in &expectations {
        println!(
            "  {:<6}  {:<width$}  {}",
            if e.met { "met" } else { "FAILED" },
            e.what,
            e.seen
        );
    }
    let failed = expectations.iter().filter(|e| !e.met).count();
    println!(
        "  {} of {} expectations met",
        expectations.len() - failed,
        expectations.len()
    );

    let kubeconfig = lab.kubeconfig();
    if keep {
        println!("\n== Explore");
    } else {
        println!(
            "\n== Explore (after `cargo xtask demo --keep`, or on a lab from `cargo xtask lab up`)"
        );
    }
    println!(
        "  kubectl --kubeconfig {} get services,ipaddresspools -A",
        kubeconfig.display()
    );
    println!(
        "  target/debug/cairnctl --kubeconfig {} status",
        kubeconfig.display()
    );
    println!(
        "  target/debug/cairnctl --kubeconfig {} why default/web",
        kubeconfig.display()
    );
    println!(
        "  cargo xtask lab status        (processes, FRR's BGP summary; logs in target/lab/logs)"
    );
    println!("  cargo xtask lab down          (removes everything the lab made)");
    if keep {
        println!("\nthe lab stays up (--keep)");
    } else {
        lab.down()?;
        println!("\nthe lab is down (run with --keep to explore it)");
    }
    if failed > 0 {
        bail!("{failed} expectation(s) failed");
    }
    Ok(())
}
