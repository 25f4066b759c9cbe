//! Three speakers driven in memory against a simulated API server, on simulated time: the lease
//! keeper, membership and planner of each node run as the driver will run them, and time jumps
//! to the next event (a watch delivery or any `poll_timeout`) instead of sleeping. Announcements
//! only change at events, so checking at every event checks at every moment: no VIP is ever
//! announced by two nodes, and each scenario bounds how long a VIP goes unannounced.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::time::{Duration, SystemTime};

use cairn_speaker::announcements::{desired, plan, Announcements};
use cairn_speaker::eligibility::{
    L2Advertisement, Node, PoolScope, SharingService, Snapshot, TrafficPolicy, Vip,
};
use cairn_speaker::endpoints::ServiceKey;
use cairn_speaker::lease::{LeaseConfig, LeaseKeeper, LeaseObject, Request, Response};
use cairn_speaker::membership::{lease_name, LeaseObservation, Membership};
use cairn_speaker::time::Instant;

/// How long the simulated watch takes to deliver a committed write to every speaker.
const WATCH_DELAY_MS: u64 = 20;
const NODES: [&str; 3] = ["n1", "n2", "n3"];

fn ms(v: u64) -> Instant {
    Instant::from_origin(Duration::from_millis(v))
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Health {
    Running,
    /// The API server does not answer this node (requests hang until the keeper's timeout).
    Partitioned,
    /// kill -9: the process, its announcements and its lease keeping are gone.
    Crashed,
    /// Released its lease after SIGTERM and exited.
    Exited,
}

struct Speaker {
    node: String,
    keeper: LeaseKeeper,
    membership: Membership,
    current: Announcements,
    health: Health,
}

struct World {
    /// lease name -> Lease
    leases: BTreeMap<String, LeaseObject>,
    version: u64,
    /// (delivery time, observation) of committed writes
    watch: Vec<(u64, LeaseObservation)>,
    speakers: Vec<Speaker>,
    snapshot: Snapshot,
    vips: Vec<Vip>,
}

impl World {
    fn new() -> Self {
        let snapshot = Snapshot {
            nodes: NODES
                .iter()
                .map(|n| {
                    let node = Node {
                        labels: BTreeMap::new(),
                        interfaces_up: ["eth0".to_string()].into(),
                    };
                    (n.to_string(), node)
                })
                .collect(),
            l2_advertisements: vec![L2Advertisement {
                name: "l2".into(),
                pools: PoolScope::All,
                node_selectors: vec![],
                interfaces: BTreeSet::new(),
            }],
            ..Default::default()
        };
        let vips = (0..60u8)
            .map(|i| Vip {
                ip: IpAddr::from([198, 51, 100, i]),
                pool: "pool".into(),
                services: vec![SharingService {
                    key: ServiceKey::new("default", format!("svc-{i}")),
                    traffic_policy: TrafficPolicy::Cluster,
                }],
            })
            .collect();
        let speakers = NODES
            .iter()
            .map(|n| Speaker {
                node: n.to_string(),
                keeper: LeaseKeeper::new(LeaseConfig::new(format!("speaker-{n}"))).unwrap(),
                membership: Membership::default(),
                current: Announcements::default(),
                health: Health::Running,
            })
            .collect();
        Self {
            leases: BTreeMap::new(),
            version: 0,
            watch: Vec::new(),
            speakers,
            snapshot,
            vips,
        }
    }

    fn execute(&mut self, t: u64, name: &str, request: Request) -> Response {
        let current = self.leases.get(name);
        let spec = match request {
            Request::Get => return Response::Found(current.cloned()),
            Request::Create(_) if current.is_some() => return Response::Conflict,
            Request::Create(spec) => spec,
            Request::Replace {
                resource_version,
                spec,
            } => match current {
                Some(l) if l.resource_version == resource_version => spec,
                _ => return Response::Conflict,
            },
        };
        self.version += 1;
        let resource_version = self.version.to_string();
        self.watch.push((
            t + WATCH_DELAY_MS,
            LeaseObservation {
                name: name.to_string(),
                holder: spec.holder_identity.clone(),
                duration: Some(Duration::from_secs(spec.lease_duration_seconds as u64)),
                resource_version: resource_version.clone(),
                interfaces_up: spec.interfaces_up.clone(),
            },
        ));
        self.leases.insert(
            name.to_string(),
            LeaseObject {
                resource_version: resource_version.clone(),
                spec,
            },
        );
        Response::Written { resource_version }
    }

    /// One millisecond: deliver the watch, let every running speaker plan and announce, then
    /// keep its lease.
    fn step(&mut self, t: u64) {
        let now = ms(t);
        let due: Vec<LeaseObservation> = self
            .watch
            .iter()
            .filter(|(at, _)| *at <= t)
            .map(|(_, o)| o.clone())
            .collect();
        self.watch.retain(|(at, _)| *at > t);
        for s in &mut self.speakers {
            if matches!(s.health, Health::Running | Health::Partitioned) {
                for o in &due {
                    s.membership.observe(now, o.clone()).unwrap();
                }
            }
        }
        for s in &mut self.speakers {
            if !matches!(s.health, Health::Running | Health::Partitioned) {
                s.current = Announcements::default();
                continue;
            }
            let candidates = s.membership.candidates(now);
            let want = desired(
                &self.snapshot,
                &self.vips,
                &s.node,
                s.keeper.may_announce(now),
                &candidates,
            );
            for action in plan(&s.current, &want) {
                s.current.apply(&action);
            }
        }
        for i in 0..self.speakers.len() {
            if !matches!(
                self.speakers[i].health,
                Health::Running | Health::Partitioned
            ) {
                continue;
            }
            self.speakers[i].keeper.handle_timeout(now);
            let wall = SystemTime::UNIX_EPOCH + Duration::from_millis(t);
            while let Some(out) = self.speakers[i].keeper.poll_request(now, wall) {
                if self.speakers[i].health == Health::Partitioned {
                    // No answer ever comes; the keeper's request timeout abandons it.
                    continue;
                }
                let name = lease_name(&self.speakers[i].node);
                let response = self.execute(t, &name, out.request);
                self.speakers[i]
                    .keeper
                    .handle_response(now, out.id, response);
            }
            if self.speakers[i].keeper.is_released() {
                self.speakers[i].health = Health::Exited;
                self.speakers[i].current = Announcements::default();
            }
        }
    }

    /// VIP -> nodes announcing it by L2 right now.
    fn announcers(&self) -> BTreeMap<IpAddr, BTreeSet<String>> {
        let mut out: BTreeMap<IpAddr, BTreeSet<String>> = BTreeMap::new();
        for s in &self.speakers {
            for vip in s.current.l2.keys() {
                out.entry(*vip).or_default().insert(s.node.clone());
            }
        }
        out
    }

    fn owned_by(&self, node: &str) -> Vec<IpAddr> {
        self.speakers
            .iter()
            .find(|s| s.node == node)
            .map(|s| s.current.l2.keys().copied().collect())
            .unwrap_or_default()
    }

    /// The next moment something can change: a watch delivery or any speaker's timer.
    fn next_event(&self, t: u64) -> u64 {
        let now = ms(t);
        let to_ms = |i: Instant| i.since_origin().as_millis() as u64;
        let timers = self
            .speakers
            .iter()
            .filter(|s| matches!(s.health, Health::Running | Health::Partitioned))
            .flat_map(|s| [s.keeper.poll_timeout(now), s.membership.poll_timeout(now)])
            .flatten()
            .map(to_ms);
        let deliveries = self.watch.iter().map(|(at, _)| *at);
        timers
            .chain(deliveries)
            .min()
            .unwrap_or(u64::MAX)
            .max(t + 1)
    }

    fn speaker(&mut self, node: &str) -> &mut Speaker {
        self.speakers.iter_mut().find(|s| s.node == node).unwrap()
    }
}

/// Runs `world` from `from` to `until` ms, asserting at every event that no VIP has two
/// announcers, and returns per VIP the longest time (ms) it had none after `measure_from`.
fn run(world: &mut World, from: u64, until: u64, measure_from: u64) -> BTreeMap<IpAddr, u64> {
    let mut unannounced_since: BTreeMap<IpAddr, u64> = BTreeMap::new();
    let mut longest_gap: BTreeMap<IpAddr, u64> = BTreeMap::new();
    let mut t = from;
    while t < until {
        world.step(t);
        let announcers = world.announcers();
        for (vip, nodes) in &announcers {
            assert!(
                nodes.len() <= 1,
                "split brain at {t} ms: {vip} announced by {nodes:?}"
            );
        }
        if t >= measure_from {
            for v in &world.vips {
                if announcers.contains_key(&v.ip) {
                    if let Some(since) = unannounced_since.remove(&v.ip) {
                        let gap = longest_gap.entry(v.ip).or_default();
                        *gap = (*gap).max(t - since);
                    }
                } else {
                    unannounced_since.entry(v.ip).or_insert(t);
                }
            }
        }
        t = world.next_event(t).min(until);
    }
    for (vip, since) in unannounced_since {
        longest_gap.insert(vip, until - since);
    }
    longest_gap
}

/// Brings three speakers up and returns the world at 5 s, every VIP announced exactly once.
fn converged() -> World {
    let mut world = World::new();
    let gaps = run(&mut world, 0, 5000, 4000);
    assert!(gaps.is_empty(), "not converged: {gaps:?}");
    assert_eq!(world.announcers().len(), world.vips.len());
    for node in NODES {
        assert!(!world.owned_by(node).is_empty(), "{node} owns nothing");
    }
    world
}

#[test]
fn three_speakers_converge_on_one_announcer_per_vip() {
    converged();
}

#[test]
fn sigterm_hands_over_within_a_watch_round_trip() {
    let mut world = converged();
    let moved = world.owned_by("n1");
    world.speaker("n1").keeper.release(ms(5000));
    let gaps = run(&mut world, 5000, 9000, 5000);
    for vip in &moved {
        let gap = gaps.get(vip).copied().unwrap_or(0);
        assert!(gap <= WATCH_DELAY_MS + 2, "{vip} unannounced for {gap} ms");
    }
    assert!(world.owned_by("n1").is_empty());
    assert_eq!(world.announcers().len(), world.vips.len());
    assert_eq!(
        world.leases[&lease_name("n1")].spec.holder_identity,
        None,
        "the lease is released"
    );
}

#[test]
fn a_crashed_speaker_is_replaced_once_its_lease_expires() {
    let mut world = converged();
    let moved = world.owned_by("n1");
    world.speaker("n1").health = Health::Crashed;
    let gaps = run(&mut world, 5000, 10_000, 5000);
    for vip in &moved {
        let gap = gaps[vip];
        assert!(
            gap <= 3000 + WATCH_DELAY_MS + 2,
            "{vip} unannounced for {gap} ms"
        );
    }
    assert_eq!(world.announcers().len(), world.vips.len());
}

#[test]
fn a_speaker_cut_off_from_the_api_fences_itself_and_takes_back_its_vips_after() {
    let mut world = converged();
    let moved = world.owned_by("n1");
    world.speaker("n1").health = Health::Partitioned;
    let gaps = run(&mut world, 5000, 12_000, 5000);
    // Fenced at last renewal sent + 2.5 s; peers take over at last observation + 3 s.
    for vip in &moved {
        let gap = gaps[vip];
        assert!(
            gap <= 500 + WATCH_DELAY_MS + 2,
            "{vip} unannounced for {gap} ms"
        );
    }
    assert!(world.owned_by("n1").is_empty());
    world.speaker("n1").health = Health::Running;
    let gaps = run(&mut world, 12_000, 18_000, 12_000);
    // Peers stop at renewal seen + join delay (500 ms); n1 starts at renewal + settle (1 s).
    for (vip, gap) in &gaps {
        assert!(
            *gap <= 500,
            "the handback leaves {vip} unannounced for {gap} ms"
        );
    }
    let mut back = world.owned_by("n1");
    back.sort();
    assert_eq!(
        back, moved,
        "rendezvous hashing gives n1 exactly its VIPs back"
    );
}

#[test]
fn an_api_outage_for_every_node_silences_all_then_recovers_without_split_brain() {
    // Documented behaviour: a speaker cannot tell "the API server is down for everyone" from "I
    // am cut off", so every speaker fences itself and all VIPs go unannounced until the API
    // server answers again; no VIP is ever announced twice.
    let mut world = converged();
    let before: Vec<Vec<IpAddr>> = NODES.iter().map(|n| world.owned_by(n)).collect();
    for node in NODES {
        world.speaker(node).health = Health::Partitioned;
    }
    run(&mut world, 5000, 15_000, 5000);
    assert!(world.announcers().is_empty(), "everyone is fenced");
    for node in NODES {
        world.speaker(node).health = Health::Running;
    }
    let gaps = run(&mut world, 15_000, 20_000, 15_000);
    // Back within a request timeout, the settle period and the join delay.
    for (vip, gap) in &gaps {
        assert!(
            *gap <= 2500,
            "{vip} unannounced for {gap} ms after the API came back"
        );
    }
    let after: Vec<Vec<IpAddr>> = NODES.iter().map(|n| world.owned_by(n)).collect();
    assert_eq!(after, before, "every VIP returns to the same owner");
}
