//! `cargo xtask demo`.
//!
//! Today it runs what exists: it reads `manifests/examples`, validates every Cairn resource there
//! with the same code the controllers use, and prints what each one would make Cairn do. It says
//! plainly what it does not run yet: the lab (network namespaces, the lab API server, the
//! allocator and one speaker per node) arrives with issue 10, and the demo will then drive it.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{bail, Context, Result};
use cairn_api::v1alpha1::*;
use cairn_api::validation::{self, Community, ValidPool};
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

/// Runs the demo; fails when an example does not validate.
pub fn run(root: &Path) -> Result<()> {
    let docs = documents(&root.join("manifests/examples"))?;
    println!("Cairn demo: validating manifests/examples with the controllers' own validation\n");
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
    println!(
        "\nNot run yet: the lab (network namespaces with an FRR router, three nodes and two clients),\n\
         the lab API server, the allocator and the speakers. They arrive with issues 4-10; until\n\
         then this demo only validates the example configuration."
    );
    if failures > 0 {
        bail!("{failures} example resource(s) failed validation");
    }
    Ok(())
}
