//! The allocation engine: which addresses a LoadBalancer Service gets, from which pool, and when
//! they may change. It contains no Kubernetes client, no clock and no IO; the controller feeds it
//! plain [`Pool`]s and [`ServiceRequest`]s and persists the [`Binding`]s it returns.
//!
//! # The promise
//! Once a Service has a binding, nothing but a change to that Service's own request moves it:
//! not another Service being created, changed or deleted, not a pool being edited, shrunk or
//! deleted, not a restart. (MetalLB issues #2723/#2724, #686, #2443, #1591 are the failures this
//! prevents.) A binding that stopped being valid (pool deleted or shrunk, namespace or labels no
//! longer allowed) is kept and flagged with [`Problem`]s for the controller to report.
//!
//! # Operations
//! - [`Engine::upsert_pool`] / [`Engine::remove_pool`]: pool changes never move a binding; they
//!   return the Services whose problems changed.
//! - [`Engine::restore`]: rebuilds the engine from persisted bindings; refused once
//!   [`Engine::assign`] has run, so restored addresses are taken before anything new is handed out.
//!   Every restored binding is kept exactly, valid or not.
//! - [`Engine::assign`]: idempotent. A Service whose binding still satisfies its request (same
//!   requested pool and addresses if any, families fitting the policy, sharing still allowed with
//!   the other holders of its addresses) keeps it, whatever its problems. Otherwise the request
//!   changed and only this Service is re-planned, keeping its current pool and addresses where the
//!   new request allows. A refusal leaves the Service with no address (its old ones are released),
//!   so no Service ever holds an address that contradicts its current request. (The one case where
//!   an unchanged request moves: two restored bindings that hold one address but may not share it,
//!   which only hand-edited annotations produce; both are flagged, and each moves when assigned.)
//! - [`Engine::release`]: frees a Service's addresses.
//!
//! # Pool choice for a Service without a binding (or whose request changed)
//! 1. Requested addresses: the pool containing all of them that allows the Service (the requested
//!    pool, if one is named too; among several, the current pool, else the first by rank as in 3).
//!    An address outside every pool the Service may use is refused, which stops one tenant from
//!    claiming another's address.
//! 2. A requested pool, if it allows the Service (`autoAssign` does not matter then).
//! 3. Otherwise the auto-assign pools that allow the Service, in rank order: pools restricted by
//!    `allocateTo` (namespaces or selectors) first, then unrestricted ones; within each group by
//!    priority (lower number first, no priority last), then by pool name. A Service being
//!    re-planned tries its current pool first.
//!
//! `PreferDualStack` takes the first pool giving both families, else the first giving the primary
//! family, else the first giving the other; a re-planned Service stays in its current pool if that
//! gives any family.
//! `RequireDualStack` needs both from one pool. Both addresses of a Service always come from one
//! pool. Within the pool being tried, each family's address is: the Service's own current one
//! (when re-planned), else the lowest address of the pool held by Services with the same
//! `allow-shared-ip` key that it may share with, else a free one (order below).
//!
//! # Address order inside a pool (exact)
//! 1. The lowest address of the pool that this engine has never handed out.
//! 2. When every address has been used once, the address freed longest ago (FIFO by release).
//!
//! So a just-freed address is not given to the next Service while any never-used one remains,
//! which spares stale client caches and DNS. Addresses ending in `.0`/`.255` are skipped in IPv4
//! pools with `avoid_buggy_ips`. "Never used" is this engine's memory: after a restart, every
//! address not in a restored binding counts as never used. Editing a pool keeps its freed history.
//!
//! # Sharing
//! Two Services may hold the same address only when both carry the same `allow-shared-ip` key,
//! their ports do not overlap (same protocol and port), and, if either uses
//! `externalTrafficPolicy: Local`, their pod selectors are equal ([`SharingConflict`]).
//!
//! # Cost
//! Free addresses are interval sets and a FIFO over `u128` (module `space`): assignment, release
//! and restore of one Service are O(log n) plus O(number of pools) (plus, with a sharing key, the
//! addresses already held under that key), never a scan of a pool, so a /64 is as cheap as a /30.
//! Pool edits are O(bindings).

mod reason;
mod space;
mod types;

#[cfg(test)]
mod tests;

use std::collections::hash_map::Entry;
use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::sync::Arc;

pub use reason::{Problem, Refusal, RestoreError, SharingConflict};
pub use types::{
    AddressRange, AddressRangeError, AllocateTo, Binding, Family, FamilyPolicy, FamilyUsage, Pool,
    Port, Protocol, ServiceKey, ServiceRequest, Usage,
};

use space::Space;
use types::{from_u128, to_u128};

/// The engine's hash maps: foldhash is several times cheaper than SipHash on Service names and
/// addresses, and is seeded randomly per process, so tenants cannot precompute colliding names.
type Map<K, V> = HashMap<K, V, foldhash::fast::RandomState>;

/// Index of a family in per-family arrays.
fn fi(family: Family) -> usize {
    match family {
        Family::V4 => 0,
        Family::V6 => 1,
    }
}

/// Sorts and merges overlapping or adjacent `(start, end)` ranges.
fn normalize(mut ranges: Vec<(u128, u128)>) -> Vec<(u128, u128)> {
    ranges.sort_unstable();
    let mut out: Vec<(u128, u128)> = Vec::with_capacity(ranges.len());
    for (start, end) in ranges {
        match out.last_mut() {
            Some(last) if start <= last.1.saturating_add(1) => last.1 = last.1.max(end),
            _ => out.push((start, end)),
        }
    }
    out
}

/// What sharing an address depends on, borrowed from a request or a stored [`Profile`].
#[derive(Clone, Copy)]
struct Sharer<'a> {
    key: Option<&'a str>,
    ports: &'a [Port],
    local: bool,
    selector: &'a BTreeMap<String, String>,
}

/// What pool admission depends on, borrowed from a request or a stored [`Profile`].
#[derive(Clone, Copy)]
struct Applicant<'a> {
    namespace: &'a str,
    namespace_labels: &'a BTreeMap<String, String>,
    labels: &'a BTreeMap<String, String>,
}

fn sharer(request: &ServiceRequest) -> Sharer<'_> {
    Sharer {
        key: request.sharing_key.as_deref(),
        ports: &request.ports,
        local: request.local_traffic_policy,
        selector: &request.selector,
    }
}

fn applicant(request: &ServiceRequest) -> Applicant<'_> {
    Applicant {
        namespace: &request.key.namespace,
        namespace_labels: &request.namespace_labels,
        labels: &request.labels,
    }
}

/// What the engine keeps of a Service's request: what pool admission and sharing depend on.
/// (The requested addresses, pool and family policy live on in the binding itself.)
#[derive(Clone, Debug)]
struct Profile {
    namespace_labels: BTreeMap<String, String>,
    labels: BTreeMap<String, String>,
    sharing_key: Option<String>,
    ports: Vec<Port>,
    local_traffic_policy: bool,
    selector: BTreeMap<String, String>,
}

impl Profile {
    /// Splits a request into the Service's key and what the engine keeps.
    fn split(request: ServiceRequest) -> (ServiceKey, Profile) {
        let ServiceRequest {
            key,
            namespace_labels,
            labels,
            sharing_key,
            ports,
            local_traffic_policy,
            selector,
            ..
        } = request;
        let profile = Profile {
            namespace_labels,
            labels,
            sharing_key,
            ports,
            local_traffic_policy,
            selector,
        };
        (key, profile)
    }

    fn sharer(&self) -> Sharer<'_> {
        Sharer {
            key: self.sharing_key.as_deref(),
            ports: &self.ports,
            local: self.local_traffic_policy,
            selector: &self.selector,
        }
    }

    fn applicant<'a>(&'a self, namespace: &'a str) -> Applicant<'a> {
        Applicant {
            namespace,
            namespace_labels: &self.namespace_labels,
            labels: &self.labels,
        }
    }
}

/// Why `b` may not share an address with `a`, if it may not.
fn sharing_conflict(a: Sharer<'_>, b: Sharer<'_>) -> Option<SharingConflict> {
    match (a.key, b.key) {
        (Some(x), Some(y)) if x == y => {}
        (Some(_), Some(_)) => return Some(SharingConflict::DifferentSharingKey),
        _ => return Some(SharingConflict::NoSharingKey),
    }
    if let Some(port) = a.ports.iter().find(|p| b.ports.contains(p)) {
        return Some(SharingConflict::PortClash(*port));
    }
    if (a.local || b.local) && a.selector != b.selector {
        return Some(SharingConflict::LocalBackendsDiffer);
    }
    None
}

/// A pool with its normalized ranges and free addresses.
#[derive(Clone, Debug)]
struct PoolState {
    spec: Pool,
    /// family index -> sorted, merged `(start, end)` ranges
    ranges: [Vec<(u128, u128)>; 2],
    /// family index -> free addresses
    spaces: [Space; 2],
    /// family index -> distinct addresses of the ranges held by Services
    assigned: [u128; 2],
}

impl PoolState {
    /// Builds the pool's free sets: its ranges minus held addresses; `previous` (the same pool
    /// before an edit) passes on its freed history.
    fn build(spec: Pool, held: &Map<IpAddr, Holders>, previous: Option<&PoolState>) -> Self {
        let mut per_family: [Vec<(u128, u128)>; 2] = [Vec::new(), Vec::new()];
        for r in &spec.ranges {
            per_family[fi(Family::of(&r.start()))].push((to_u128(&r.start()), to_u128(&r.end())));
        }
        let ranges = per_family.map(normalize);
        let spaces = [
            Space::new(&ranges[0], spec.avoid_buggy_ips),
            Space::new(&ranges[1], false),
        ];
        let mut pool = PoolState {
            spec,
            ranges,
            spaces,
            assigned: [0, 0],
        };
        for ip in held.keys() {
            let (f, a) = (fi(Family::of(ip)), to_u128(ip));
            if pool.contains(f, a) {
                pool.spaces[f].remove(a);
                pool.assigned[f] += 1;
            }
        }
        if let Some(previous) = previous {
            for f in 0..2 {
                for (seq, a) in previous.spaces[f].freed() {
                    if pool.contains(f, a) && pool.spaces[f].remove(a) {
                        pool.spaces[f].push_freed(a, seq);
                    }
                }
            }
        }
        pool
    }

    fn contains(&self, f: usize, a: u128) -> bool {
        let ranges = &self.ranges[f];
        let i = ranges.partition_point(|&(start, _)| start <= a);
        i > 0 && ranges[i - 1].1 >= a
    }

    fn contains_ip(&self, ip: &IpAddr) -> bool {
        self.contains(fi(Family::of(ip)), to_u128(ip))
    }

    /// In the ranges and not avoided.
    fn offers(&self, ip: &IpAddr) -> bool {
        let f = fi(Family::of(ip));
        self.contains_ip(ip) && self.spaces[f].is_usable(to_u128(ip))
    }

    fn has_family(&self, family: Family) -> bool {
        !self.ranges[fi(family)].is_empty()
    }

    /// Whether the pool lets this Service use it.
    fn admits(&self, who: Applicant<'_>) -> Result<(), Refusal> {
        let to = &self.spec.allocate_to;
        if !to.allows_namespace(who.namespace, who.namespace_labels) {
            return Err(Refusal::NamespaceNotAllowed {
                pool: self.spec.name.clone(),
            });
        }
        if !to.allows_service(who.labels) {
            return Err(Refusal::ServiceNotAllowed {
                pool: self.spec.name.clone(),
            });
        }
        Ok(())
    }

    /// Sort key: restricted pools first, then priority (none last), then name.
    fn rank(&self) -> (bool, bool, i32, &str) {
        let to = &self.spec.allocate_to;
        (
            !to.is_restricted(),
            to.priority.is_none(),
            to.priority.unwrap_or(0),
            &self.spec.name,
        )
    }
}

/// A Service the engine knows: what it keeps of its last request, and its binding.
#[derive(Clone, Debug)]
struct ServiceState {
    profile: Profile,
    binding: Binding,
    /// The family policy the binding was planned for; `None` when restored.
    planned_policy: Option<FamilyPolicy>,
    problems: Vec<Problem>,
}

/// The Services holding one address: almost always one, several only when sharing.
#[derive(Clone, Debug)]
enum Holders {
    One(Arc<ServiceKey>),
    Many(Vec<Arc<ServiceKey>>),
}

impl Holders {
    fn iter(&self) -> std::slice::Iter<'_, Arc<ServiceKey>> {
        match self {
            Holders::One(key) => std::slice::from_ref(key).iter(),
            Holders::Many(keys) => keys.iter(),
        }
    }

    fn push(&mut self, key: Arc<ServiceKey>) {
        match self {
            Holders::One(first) => *self = Holders::Many(vec![first.clone(), key]),
            Holders::Many(keys) => keys.push(key),
        }
    }
}

/// Where one address of a plan comes from.
#[derive(Clone, Copy, Debug)]
enum Source {
    /// This exact address (requested, kept, or joined for sharing).
    Exact(IpAddr),
    /// The next free address of this family in the plan's pool.
    Fresh(Family),
}

/// A binding to be made: a pool index and up to two address sources, primary family first.
#[derive(Debug)]
struct Plan {
    pool: usize,
    sources: [Option<Source>; 2],
}

/// The allocator state: pools, bindings and free addresses. See the module documentation.
#[derive(Clone, Debug, Default)]
pub struct Engine {
    /// pools sorted by rank (see [`PoolState::rank`])
    pools: Vec<PoolState>,
    /// pool name -> index in `pools`
    pool_index: Map<String, usize>,
    /// service -> its request, binding and problems
    services: Map<Arc<ServiceKey>, Box<ServiceState>>,
    /// address -> Services holding it (several only when sharing)
    holders: Map<IpAddr, Holders>,
    /// sharing key -> address -> number of its holders carrying that key
    shared: Map<String, BTreeMap<IpAddr, u32>>,
    /// next release sequence number (orders freed addresses)
    release_seq: u64,
    /// true once `assign` has run (restore is then refused)
    assign_ran: bool,
}

impl Engine {
    /// An engine with no pools and no bindings.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds or replaces a pool. No binding moves; bindings of this pool are re-checked and the
    /// Services whose problems changed are returned (sorted).
    pub fn upsert_pool(&mut self, pool: Pool) -> Vec<ServiceKey> {
        let name = pool.name.clone();
        let previous = self
            .pool_index
            .get(&name)
            .copied()
            .map(|i| self.pools.remove(i));
        let state = PoolState::build(pool, &self.holders, previous.as_ref());
        self.pools.push(state);
        self.reindex_pools();
        self.refresh_pool_members(&name)
    }

    /// Removes a pool. Its bindings are kept and flagged [`Problem::PoolDeleted`]; the Services
    /// whose problems changed are returned (sorted).
    pub fn remove_pool(&mut self, name: &str) -> Vec<ServiceKey> {
        let Some(i) = self.pool_index.get(name).copied() else {
            return Vec::new();
        };
        self.pools.remove(i);
        self.reindex_pools();
        self.refresh_pool_members(name)
    }

    /// Rebuilds bindings persisted by a previous run, each kept exactly (duplicate addresses in a
    /// binding collapse to one; an entry without addresses is skipped; of two entries for one
    /// Service the last wins). Must run before any [`Engine::assign`]. Returns every Service whose
    /// binding is flagged afterwards (sorted).
    pub fn restore(
        &mut self,
        entries: impl IntoIterator<Item = (ServiceRequest, Binding)>,
    ) -> Result<Vec<ServiceKey>, RestoreError> {
        if self.assign_ran {
            return Err(RestoreError::AfterAssign);
        }
        let entries = entries.into_iter();
        self.services.reserve(entries.size_hint().0);
        self.holders.reserve(entries.size_hint().0);
        // Earlier holders of an address whose problems a later entry may change.
        let mut recheck: Vec<Arc<ServiceKey>> = Vec::new();
        for (request, mut binding) in entries {
            if binding.ips.is_empty() {
                continue;
            }
            if let Some((key, old)) = self.services.remove_entry(&request.key) {
                self.vacate_all(&key, &old);
            }
            let mut seen = Vec::with_capacity(binding.ips.len());
            binding.ips.retain(|ip| {
                let new = !seen.contains(ip);
                seen.push(*ip);
                new
            });
            let (key, profile) = Profile::split(request);
            let key = Arc::new(key);
            for ip in &binding.ips {
                if self.occupy(*ip, &key, profile.sharing_key.as_deref()) {
                    let others = self.holders.get(ip).into_iter().flat_map(Holders::iter);
                    recheck.extend(others.filter(|h| **h != key).cloned());
                }
            }
            let mut state = ServiceState {
                profile,
                binding,
                planned_policy: None,
                problems: Vec::new(),
            };
            state.problems = self.problems_of(&key, &state);
            self.services.insert(key, Box::new(state));
        }
        for key in recheck {
            self.refresh_problems(&key);
        }
        let mut flagged: Vec<ServiceKey> = self
            .services
            .iter()
            .filter(|(_, s)| !s.problems.is_empty())
            .map(|(k, _)| (**k).clone())
            .collect();
        flagged.sort();
        Ok(flagged)
    }

    /// Gives the Service its binding: the current one if it still satisfies the request,
    /// otherwise a new plan (see the module documentation). On refusal the Service holds nothing.
    pub fn assign(&mut self, request: ServiceRequest) -> Result<Binding, Refusal> {
        self.assign_ran = true;
        let old = match self.services.remove_entry(&request.key) {
            Some((key, state)) if self.satisfies(&state, &request) => {
                return Ok(self.keep(key, state, request));
            }
            old => old,
        };
        match self.plan(&request, old.as_ref().map(|(_, s)| &**s)) {
            Ok(plan) => Ok(self.commit(request, plan, old)),
            Err(refusal) => {
                if let Some((key, old)) = old {
                    self.vacate_all(&key, &old);
                }
                Err(refusal)
            }
        }
    }

    /// Frees the Service's addresses (Service deleted or no longer a LoadBalancer) and returns
    /// the binding it had.
    pub fn release(&mut self, key: &ServiceKey) -> Option<Binding> {
        let (key, state) = self.services.remove_entry(key)?;
        self.vacate_all(&key, &state);
        Some(state.binding)
    }

    /// The Service's current binding.
    pub fn binding(&self, key: &ServiceKey) -> Option<&Binding> {
        self.services.get(key).map(|s| &s.binding)
    }

    /// Why the Service's binding is no longer valid; empty when it is valid or absent.
    pub fn problems(&self, key: &ServiceKey) -> &[Problem] {
        self.services.get(key).map_or(&[], |s| &s.problems)
    }

    /// Every Service's binding, in no particular order.
    pub fn bindings(&self) -> impl Iterator<Item = (&ServiceKey, &Binding)> {
        self.services.iter().map(|(k, s)| (&**k, &s.binding))
    }

    /// Assigned and available addresses of a pool, per family.
    pub fn usage(&self, pool: &str) -> Option<Usage> {
        let p = &self.pools[*self.pool_index.get(pool)?];
        let family = |f: usize| FamilyUsage {
            assigned: p.assigned[f],
            available: p.spaces[f].available(),
        };
        Some(Usage {
            v4: family(0),
            v6: family(1),
        })
    }

    fn reindex_pools(&mut self) {
        self.pools.sort_by(|a, b| a.rank().cmp(&b.rank()));
        self.pool_index = self
            .pools
            .iter()
            .enumerate()
            .map(|(i, p)| (p.spec.name.clone(), i))
            .collect();
    }

    /// Re-checks the bindings of pool `name`; returns the Services whose problems changed.
    fn refresh_pool_members(&mut self, name: &str) -> Vec<ServiceKey> {
        let members: Vec<Arc<ServiceKey>> = self
            .services
            .iter()
            .filter(|(_, s)| s.binding.pool == name)
            .map(|(k, _)| k.clone())
            .collect();
        let mut changed: Vec<ServiceKey> = members
            .into_iter()
            .filter(|k| self.refresh_problems(k))
            .map(|k| (*k).clone())
            .collect();
        changed.sort();
        changed
    }

    /// Recomputes a Service's problems; true when they changed.
    fn refresh_problems(&mut self, key: &ServiceKey) -> bool {
        let Some(state) = self.services.get(key) else {
            return false;
        };
        let problems = self.problems_of(key, state);
        match self.services.get_mut(key) {
            Some(state) if state.problems != problems => {
                state.problems = problems;
                true
            }
            _ => false,
        }
    }

    fn problems_of(&self, key: &ServiceKey, state: &ServiceState) -> Vec<Problem> {
        let binding = &state.binding;
        let mut problems = Vec::new();
        match self.pool_index.get(&binding.pool) {
            None => problems.push(Problem::PoolDeleted {
                pool: binding.pool.clone(),
            }),
            Some(&i) => {
                let pool = &self.pools[i];
                for ip in &binding.ips {
                    if !pool.offers(ip) {
                        problems.push(Problem::AddressOutsidePool {
                            ip: *ip,
                            pool: binding.pool.clone(),
                        });
                    }
                }
                match pool.admits(state.profile.applicant(&key.namespace)) {
                    Err(Refusal::NamespaceNotAllowed { pool }) => {
                        problems.push(Problem::NamespaceNotAllowed { pool })
                    }
                    Err(Refusal::ServiceNotAllowed { pool }) => {
                        problems.push(Problem::ServiceNotAllowed { pool })
                    }
                    _ => {}
                }
            }
        }
        for ip in &binding.ips {
            if let Err((other, conflict)) = self.share_check(ip, state.profile.sharer(), key) {
                problems.push(Problem::SharedWithConflict {
                    ip: *ip,
                    other,
                    conflict,
                });
            }
        }
        problems
    }

    /// Whether `who` may hold `ip` beside its other holders (`me` excluded); else the conflicting
    /// holder with the smallest key (so the answer does not depend on the order holders came in).
    fn share_check(
        &self,
        ip: &IpAddr,
        who: Sharer<'_>,
        me: &ServiceKey,
    ) -> Result<(), (ServiceKey, SharingConflict)> {
        let mut worst: Option<(&ServiceKey, SharingConflict)> = None;
        for holder in self.holders.get(ip).into_iter().flat_map(Holders::iter) {
            if **holder == *me || worst.as_ref().is_some_and(|(k, _)| *k <= &**holder) {
                continue;
            }
            if let Some(other) = self.services.get(holder) {
                if let Some(conflict) = sharing_conflict(who, other.profile.sharer()) {
                    worst = Some((holder, conflict));
                }
            }
        }
        match worst {
            Some((holder, conflict)) => Err((holder.clone(), conflict)),
            None => Ok(()),
        }
    }

    /// Whether the Service's binding still satisfies its (possibly changed) request.
    fn satisfies(&self, state: &ServiceState, request: &ServiceRequest) -> bool {
        let binding = &state.binding;
        if request
            .requested_pool
            .as_ref()
            .is_some_and(|p| *p != binding.pool)
        {
            return false;
        }
        if !request.requested_ips.is_empty() {
            let mut wanted = request.requested_ips.clone();
            wanted.sort_unstable();
            wanted.dedup();
            let mut have = binding.ips.clone();
            have.sort_unstable();
            if wanted != have {
                return false;
            }
        }
        let count = |f| binding.ips.iter().filter(|ip| Family::of(ip) == f).count();
        let (v4, v6) = (count(Family::V4), count(Family::V6));
        let dual = v4 == 1 && v6 == 1;
        let families_fit = match request.family_policy {
            FamilyPolicy::SingleStack(f) => binding.ips.len() == 1 && count(f) == 1,
            FamilyPolicy::RequireDualStack { .. } => dual,
            // One family is enough if it was planned (or restored) under PreferDualStack; a
            // Service switching to PreferDualStack is re-planned so it can gain the other one.
            FamilyPolicy::PreferDualStack { .. } => {
                dual || (binding.ips.len() == 1
                    && state
                        .planned_policy
                        .is_none_or(|p| matches!(p, FamilyPolicy::PreferDualStack { .. })))
            }
        };
        families_fit
            && binding
                .ips
                .iter()
                .all(|ip| self.share_check(ip, sharer(request), &request.key).is_ok())
    }

    /// Keeps the Service's binding (its state was taken out of `services`), storing the new request.
    fn keep(
        &mut self,
        key: Arc<ServiceKey>,
        mut state: Box<ServiceState>,
        request: ServiceRequest,
    ) -> Binding {
        let policy = request.family_policy;
        let (_, profile) = Profile::split(request);
        if state.profile.sharing_key != profile.sharing_key {
            for ip in &state.binding.ips {
                self.unshare(ip, state.profile.sharing_key.as_deref());
                self.share(ip, profile.sharing_key.as_deref());
            }
        }
        state.planned_policy = Some(policy);
        state.profile = profile;
        let binding = state.binding.clone();
        self.services.insert(key.clone(), state);
        self.refresh_problems(&key);
        binding
    }

    /// Plans a binding for `request`; `current` is the Service's binding being replaced.
    fn plan(
        &self,
        request: &ServiceRequest,
        current: Option<&ServiceState>,
    ) -> Result<Plan, Refusal> {
        if !request.requested_ips.is_empty() {
            return self.plan_requested(request, current);
        }
        let requested = match &request.requested_pool {
            Some(name) => {
                let i = *self
                    .pool_index
                    .get(name)
                    .ok_or_else(|| Refusal::UnknownPool { pool: name.clone() })?;
                self.pools[i].admits(applicant(request))?;
                Some(i)
            }
            None => None,
        };
        let eligible = |i: usize| match requested {
            Some(r) => i == r,
            None => {
                self.pools[i].spec.auto_assign && self.pools[i].admits(applicant(request)).is_ok()
            }
        };
        let current_pool = current
            .and_then(|s| self.pool_index.get(&s.binding.pool).copied())
            .filter(|&i| eligible(i));
        // The pools to try, in order: the current one first, then the others by rank.
        let order = || {
            current_pool.into_iter().chain(
                (0..self.pools.len()).filter(move |&i| Some(i) != current_pool && eligible(i)),
            )
        };
        let fill = |i: usize, f: Family| self.fill(i, f, request, current);
        let primary = request.family_policy.primary();
        let secondary = primary.other();
        let plan = |pool: usize, sources: [Option<Source>; 2]| Plan { pool, sources };
        let dual = |i: usize| {
            let (a, b) = (fill(i, primary)?, fill(i, secondary)?);
            Some(plan(i, [Some(a), Some(b)]))
        };
        let both_or_one = |i: usize| {
            let sources = [fill(i, primary), fill(i, secondary)];
            sources
                .iter()
                .any(Option::is_some)
                .then(|| plan(i, sources))
        };
        let found = match request.family_policy {
            FamilyPolicy::SingleStack(f) => {
                order().find_map(|i| Some(plan(i, [Some(fill(i, f)?), None])))
            }
            FamilyPolicy::RequireDualStack { .. } => order().find_map(dual),
            // Stability first: a re-planned Service stays in its pool if it can get anything
            // there; otherwise the first pool giving both families, else the first giving the
            // primary family, else the first giving the other one.
            FamilyPolicy::PreferDualStack { .. } => current_pool
                .and_then(both_or_one)
                .or_else(|| order().find_map(dual))
                .or_else(|| order().find_map(|i| Some(plan(i, [Some(fill(i, primary)?), None]))))
                .or_else(|| order().find_map(|i| Some(plan(i, [Some(fill(i, secondary)?), None])))),
        };
        if let Some(found) = found {
            return Ok(found);
        }
        if order().next().is_none() {
            return Err(Refusal::NoEligiblePool);
        }
        let has = |i: usize, f: Family| self.pools[i].has_family(f);
        match request.family_policy {
            FamilyPolicy::SingleStack(f) if order().any(|i| has(i, f)) => {
                Err(Refusal::PoolsExhausted { family: f })
            }
            FamilyPolicy::SingleStack(f) => Err(Refusal::NoPoolWithFamily { family: f }),
            FamilyPolicy::RequireDualStack { .. } => {
                let mut dual_stack = order().filter(|&i| has(i, primary) && has(i, secondary));
                match dual_stack.next() {
                    None => Err(Refusal::NoDualStackPool),
                    // Every dual-stack pool has run out of one family or the other: name the
                    // primary unless all of them still have it.
                    Some(first) => {
                        let primary_left = std::iter::once(first)
                            .chain(dual_stack)
                            .all(|i| fill(i, primary).is_some());
                        let family = if primary_left { secondary } else { primary };
                        Err(Refusal::PoolsExhausted { family })
                    }
                }
            }
            FamilyPolicy::PreferDualStack { .. }
                if order().any(|i| has(i, primary) || has(i, secondary)) =>
            {
                Err(Refusal::PoolsExhausted { family: primary })
            }
            FamilyPolicy::PreferDualStack { .. } => {
                Err(Refusal::NoPoolWithFamily { family: primary })
            }
        }
    }

    /// An address of family `f` from pool `i` for `request`: its own current one, else one it can
    /// share by key, else a free one.
    fn fill(
        &self,
        i: usize,
        f: Family,
        request: &ServiceRequest,
        current: Option<&ServiceState>,
    ) -> Option<Source> {
        let pool = &self.pools[i];
        let usable = |ip: &IpAddr| {
            Family::of(ip) == f
                && pool.offers(ip)
                && self.share_check(ip, sharer(request), &request.key).is_ok()
        };
        if let Some(current) = current.filter(|c| c.binding.pool == pool.spec.name) {
            if let Some(ip) = current.binding.ips.iter().find(|ip| usable(ip)) {
                return Some(Source::Exact(*ip));
            }
        }
        if let Some(key) = &request.sharing_key {
            if let Some(ip) = self
                .shared
                .get(key)
                .and_then(|ips| ips.keys().find(|ip| usable(ip)))
            {
                return Some(Source::Exact(*ip));
            }
        }
        (pool.spaces[fi(f)].available() > 0).then_some(Source::Fresh(f))
    }

    /// Plans the requested addresses.
    fn plan_requested(
        &self,
        request: &ServiceRequest,
        current: Option<&ServiceState>,
    ) -> Result<Plan, Refusal> {
        let mut ips = request.requested_ips.clone();
        ips.sort_unstable();
        ips.dedup();
        let count = |f| ips.iter().filter(|ip| Family::of(ip) == f).count();
        let (v4, v6) = (count(Family::V4), count(Family::V6));
        let fits = match request.family_policy {
            FamilyPolicy::SingleStack(f) => ips.len() == 1 && count(f) == 1,
            FamilyPolicy::RequireDualStack { .. } => v4 == 1 && v6 == 1,
            FamilyPolicy::PreferDualStack { .. } => v4 <= 1 && v6 <= 1,
        };
        if !fits {
            return Err(Refusal::FamilyMismatch {
                policy: request.family_policy,
                requested: request.requested_ips.clone(),
            });
        }
        let primary = request.family_policy.primary();
        ips.sort_by_key(|ip| Family::of(ip) != primary);

        let pool = match &request.requested_pool {
            Some(name) => {
                let i = *self
                    .pool_index
                    .get(name)
                    .ok_or_else(|| Refusal::UnknownPool { pool: name.clone() })?;
                self.pools[i].admits(applicant(request))?;
                if let Some(ip) = ips.iter().find(|ip| !self.pools[i].contains_ip(ip)) {
                    return Err(Refusal::AddressNotInRequestedPool {
                        ip: *ip,
                        pool: name.clone(),
                    });
                }
                i
            }
            None => {
                let fits = |p: &PoolState| {
                    ips.iter().all(|ip| p.contains_ip(ip)) && p.admits(applicant(request)).is_ok()
                };
                let current_pool = current
                    .and_then(|s| self.pool_index.get(&s.binding.pool).copied())
                    .filter(|&i| fits(&self.pools[i]));
                match current_pool.or_else(|| self.pools.iter().position(fits)) {
                    Some(i) => i,
                    None => return Err(self.why_no_pool_for(&ips, request)),
                }
            }
        };
        let p = &self.pools[pool];
        for ip in &ips {
            if !p.offers(ip) {
                return Err(Refusal::AddressAvoided {
                    ip: *ip,
                    pool: p.spec.name.clone(),
                });
            }
            if let Err((holder, conflict)) = self.share_check(ip, sharer(request), &request.key) {
                return Err(Refusal::AddressInUse {
                    ip: *ip,
                    holder,
                    conflict,
                });
            }
        }
        Ok(Plan {
            pool,
            sources: [ips.first(), ips.get(1)].map(|ip| ip.copied().map(Source::Exact)),
        })
    }

    /// The refusal for requested addresses that no allowed pool contains together.
    fn why_no_pool_for(&self, ips: &[IpAddr], request: &ServiceRequest) -> Refusal {
        for ip in ips {
            let mut containing = self.pools.iter().filter(|p| p.contains_ip(ip)).peekable();
            let Some(first) = containing.peek().map(|p| p.spec.name.clone()) else {
                return Refusal::AddressNotInAnyPool { ip: *ip };
            };
            if !containing.any(|p| p.admits(applicant(request)).is_ok()) {
                return Refusal::AddressNotAllowed {
                    ip: *ip,
                    pool: first,
                };
            }
        }
        // Each address is in an allowed pool, but no allowed pool holds them all.
        match ips {
            [first, second, ..] => Refusal::AddressesInDifferentPools {
                first: *first,
                second: *second,
            },
            _ => Refusal::NoEligiblePool,
        }
    }

    /// Makes the planned binding, replacing `old` (the Service's previous state, already removed).
    fn commit(
        &mut self,
        request: ServiceRequest,
        plan: Plan,
        old: Option<(Arc<ServiceKey>, Box<ServiceState>)>,
    ) -> Binding {
        let pool = &mut self.pools[plan.pool];
        let ips: Vec<IpAddr> = plan
            .sources
            .iter()
            .flatten()
            .map(|source| match *source {
                Source::Exact(ip) => ip,
                Source::Fresh(f) => {
                    let a = pool.spaces[fi(f)]
                        .take()
                        .expect("plan checked that the pool has a free address of this family");
                    from_u128(f, a)
                }
            })
            .collect();
        let binding = Binding {
            pool: pool.spec.name.clone(),
            ips,
        };
        let policy = request.family_policy;
        let (new_key, profile) = Profile::split(request);
        let key = match old {
            Some((key, old)) => {
                self.vacate_all(&key, &old);
                key
            }
            None => Arc::new(new_key),
        };
        for ip in &binding.ips {
            self.occupy(*ip, &key, profile.sharing_key.as_deref());
        }
        let state = ServiceState {
            planned_policy: Some(policy),
            profile,
            binding: binding.clone(),
            problems: Vec::new(),
        };
        // A plan is valid by construction: its pool admits the Service and offers the addresses,
        // and every other holder may share them. So the new binding has no problems.
        debug_assert!(self.problems_of(&key, &state).is_empty());
        self.services.insert(key, Box::new(state));
        binding
    }

    /// Releases every address of a removed Service state and re-checks the other holders.
    fn vacate_all(&mut self, key: &Arc<ServiceKey>, state: &ServiceState) {
        for ip in &state.binding.ips {
            for other in self.vacate(ip, key, state.profile.sharing_key.as_deref()) {
                self.refresh_problems(&other);
            }
        }
    }

    /// Adds `key` as a holder of `ip`; the first holder takes the address out of every pool.
    /// True when others hold it too.
    fn occupy(&mut self, ip: IpAddr, key: &Arc<ServiceKey>, sharing_key: Option<&str>) -> bool {
        let shared = match self.holders.entry(ip) {
            Entry::Occupied(mut holders) => {
                holders.get_mut().push(key.clone());
                true
            }
            Entry::Vacant(slot) => {
                slot.insert(Holders::One(key.clone()));
                false
            }
        };
        if !shared {
            let (f, a) = (fi(Family::of(&ip)), to_u128(&ip));
            for pool in self.pools.iter_mut().filter(|p| p.contains(f, a)) {
                pool.spaces[f].remove(a);
                pool.assigned[f] += 1;
            }
        }
        self.share(&ip, sharing_key);
        shared
    }

    /// Removes `key` as a holder of `ip`; the last holder frees it into every pool containing it.
    /// Returns the remaining holders.
    fn vacate(
        &mut self,
        ip: &IpAddr,
        key: &ServiceKey,
        sharing_key: Option<&str>,
    ) -> Vec<Arc<ServiceKey>> {
        self.unshare(ip, sharing_key);
        let Some(holders) = self.holders.get_mut(ip) else {
            return Vec::new();
        };
        let left: Vec<Arc<ServiceKey>> = holders.iter().filter(|h| ***h != *key).cloned().collect();
        match left.as_slice() {
            [] => {}
            [one] => {
                *holders = Holders::One(one.clone());
                return left;
            }
            _ => {
                *holders = Holders::Many(left.clone());
                return left;
            }
        }
        self.holders.remove(ip);
        let seq = self.release_seq;
        self.release_seq += 1;
        let (f, a) = (fi(Family::of(ip)), to_u128(ip));
        for pool in self.pools.iter_mut().filter(|p| p.contains(f, a)) {
            pool.spaces[f].push_freed(a, seq);
            pool.assigned[f] -= 1;
        }
        left
    }

    fn share(&mut self, ip: &IpAddr, sharing_key: Option<&str>) {
        if let Some(k) = sharing_key {
            let ips = match self.shared.get_mut(k) {
                Some(ips) => ips,
                None => self.shared.entry(k.to_owned()).or_default(),
            };
            *ips.entry(*ip).or_insert(0) += 1;
        }
    }

    fn unshare(&mut self, ip: &IpAddr, sharing_key: Option<&str>) {
        let Some(k) = sharing_key else { return };
        let Some(ips) = self.shared.get_mut(k) else {
            return;
        };
        if let Some(n) = ips.get_mut(ip) {
            *n -= 1;
            if *n == 0 {
                ips.remove(ip);
            }
        }
        if ips.is_empty() {
            self.shared.remove(k);
        }
    }
}
