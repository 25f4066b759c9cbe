//! Why the engine refused a request, why a binding is flagged, and why two Services may not share.
//!
//! Every variant's `Display` is a sentence an operator can read in an Event or a condition; the
//! enums are closed so the controller can also map them to reasons and metric labels.

use std::net::IpAddr;

use super::types::{Family, FamilyPolicy, Port, ServiceKey};

/// Why two Services may not hold the same address.
#[derive(Clone, Debug, PartialEq, Eq, Hash, thiserror::Error)]
pub enum SharingConflict {
    /// One of them has no `allow-shared-ip` key.
    #[error("it has no allow-shared-ip key")]
    NoSharingKey,
    /// Their `allow-shared-ip` keys differ.
    #[error("its allow-shared-ip key differs")]
    DifferentSharingKey,
    /// Both expose this port.
    #[error("both expose {}/{}", .0.protocol, .0.port)]
    PortClash(Port),
    /// One uses `externalTrafficPolicy: Local` and their pod selectors differ.
    #[error("externalTrafficPolicy is Local and the pod selectors differ")]
    LocalBackendsDiffer,
}

/// Why `assign` gave a Service no address. The Service then holds no address.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// The requested pool does not exist.
    #[error("pool {pool:?} does not exist")]
    UnknownPool {
        /// The requested pool.
        pool: String,
    },
    /// The requested pool does not allow this Service's namespace.
    #[error("pool {pool:?} does not allow this Service's namespace")]
    NamespaceNotAllowed {
        /// The pool.
        pool: String,
    },
    /// The requested pool's service selectors do not match this Service's labels.
    #[error("pool {pool:?} does not allow this Service (its service selectors do not match)")]
    ServiceNotAllowed {
        /// The pool.
        pool: String,
    },
    /// A requested address lies in no pool.
    #[error("requested address {ip} is in no pool")]
    AddressNotInAnyPool {
        /// The address.
        ip: IpAddr,
    },
    /// A requested address lies only in pools this Service may not use (another tenant's).
    #[error("requested address {ip} belongs to pool {pool:?}, which this Service may not use")]
    AddressNotAllowed {
        /// The address.
        ip: IpAddr,
        /// The first pool containing it.
        pool: String,
    },
    /// A requested address lies outside the requested pool.
    #[error("requested address {ip} is not in the requested pool {pool:?}")]
    AddressNotInRequestedPool {
        /// The address.
        ip: IpAddr,
        /// The requested pool.
        pool: String,
    },
    /// The requested addresses do not lie in one common pool.
    #[error("requested addresses {first} and {second} are not in one pool")]
    AddressesInDifferentPools {
        /// One address.
        first: IpAddr,
        /// The other.
        second: IpAddr,
    },
    /// A requested address ends in .0 or .255 and its pool avoids those.
    #[error("requested address {ip} ends in .0 or .255 and pool {pool:?} avoids such addresses")]
    AddressAvoided {
        /// The address.
        ip: IpAddr,
        /// The pool.
        pool: String,
    },
    /// A requested address is held by another Service it may not share with.
    #[error("requested address {ip} is used by {holder}, which cannot share it: {conflict}")]
    AddressInUse {
        /// The address.
        ip: IpAddr,
        /// A Service holding it.
        holder: ServiceKey,
        /// Why they cannot share.
        conflict: SharingConflict,
    },
    /// The requested addresses do not fit the family policy.
    #[error("requested addresses {requested:?} do not fit ipFamilyPolicy {policy}")]
    FamilyMismatch {
        /// The policy.
        policy: FamilyPolicy,
        /// The requested addresses.
        requested: Vec<IpAddr>,
    },
    /// No pool may serve this Service (none auto-assigns to it, or none exists).
    #[error("no pool may assign addresses to this Service")]
    NoEligiblePool,
    /// The eligible pools have no range of a needed family.
    #[error("no eligible pool has {family} addresses")]
    NoPoolWithFamily {
        /// The missing family.
        family: Family,
    },
    /// RequireDualStack, and no single eligible pool has both families.
    #[error("RequireDualStack: no eligible pool has both IPv4 and IPv6 addresses")]
    NoDualStackPool,
    /// The eligible pools are full.
    #[error("no free {family} address in the eligible pools")]
    PoolsExhausted {
        /// The family that ran out (the primary one when both did).
        family: Family,
    },
}

/// Why a kept binding is flagged as no longer valid. The binding is never moved because of it;
/// the controller reports it (Event, condition) until the Service or the pool changes.
#[derive(Clone, Debug, PartialEq, Eq, Hash, thiserror::Error)]
pub enum Problem {
    /// The binding's pool was deleted.
    #[error("pool {pool:?} no longer exists")]
    PoolDeleted {
        /// The pool.
        pool: String,
    },
    /// The address is no longer in the pool's ranges (pool shrunk) or is now avoided.
    #[error("address {ip} is no longer part of pool {pool:?}")]
    AddressOutsidePool {
        /// The address.
        ip: IpAddr,
        /// The pool.
        pool: String,
    },
    /// The pool no longer allows the Service's namespace.
    #[error("pool {pool:?} no longer allows this Service's namespace")]
    NamespaceNotAllowed {
        /// The pool.
        pool: String,
    },
    /// The pool's service selectors no longer match the Service.
    #[error("pool {pool:?} no longer allows this Service (its service selectors do not match)")]
    ServiceNotAllowed {
        /// The pool.
        pool: String,
    },
    /// Restored bindings of two Services that may not share hold the same address.
    #[error("address {ip} is also held by {other}, which cannot share it: {conflict}")]
    SharedWithConflict {
        /// The address.
        ip: IpAddr,
        /// The other holder.
        other: ServiceKey,
        /// Why they cannot share.
        conflict: SharingConflict,
    },
}

/// Why `restore` was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RestoreError {
    /// `assign` already ran: persisted bindings must be restored before any new allocation, or
    /// a new Service could take an address that belongs to an existing one.
    #[error("bindings must be restored before any address is assigned")]
    AfterAssign,
}
