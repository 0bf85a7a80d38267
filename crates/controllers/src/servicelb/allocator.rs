//! Which Service holds which address of the pool (pure).
//!
//! The written statuses are the record: [`Allocator::sync`] forgets the holders that are
//! gone and adopts the addresses Services already show (after a restart), and
//! [`Allocator::assign`] gives one Service its address. The allocator also remembers
//! what it assigned before the status write reaches the cache, so two Services are
//! never given the same address.

use std::collections::{BTreeMap, HashSet};
use std::net::Ipv4Addr;

use super::pool::Pool;

/// A Service that wants an address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claim {
    /// `metadata.uid`: a Service deleted and created again is another claim.
    pub uid: String,
    /// `namespace/name`, for messages.
    pub key: String,
    /// The addresses its status shows now.
    pub current: Vec<Ipv4Addr>,
    /// The address it asks for (`spec.loadBalancerIP` or the MetalLB annotation).
    pub requested: Option<Ipv4Addr>,
}

/// Why a Service got no address.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AllocationError {
    /// Every address of the pool is held.
    #[error("no available IPs: all {size} addresses of the pool are allocated")]
    Exhausted {
        /// The pool's size.
        size: u64,
    },
    /// The requested address is not in the pool.
    #[error("requested IP {0} is not in the pool")]
    NotInPool(Ipv4Addr),
    /// The requested address is held by another Service.
    #[error("requested IP {ip} is already allocated to {holder}")]
    InUse {
        /// The address.
        ip: Ipv4Addr,
        /// `namespace/name` of the Service holding it.
        holder: String,
    },
}

/// The Service holding an address.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Holder {
    uid: String,
    key: String,
}

/// The addresses of a pool and who holds them: at most one per Service.
#[derive(Debug, Clone)]
pub struct Allocator {
    pool: Pool,
    holders: BTreeMap<Ipv4Addr, Holder>,
}

impl Allocator {
    /// An allocator over `pool` with nothing held.
    pub fn new(pool: Pool) -> Allocator {
        Allocator {
            pool,
            holders: BTreeMap::new(),
        }
    }

    /// The pool addresses are taken from.
    pub fn pool(&self) -> &Pool {
        &self.pool
    }

    /// Recomputes the holders from `claims`, every Service that may hold an address now:
    /// the others' addresses are released, and a claim holding nothing adopts the first
    /// free pool address its status shows.
    pub fn sync(&mut self, claims: &[Claim]) {
        let live: HashSet<&str> = claims.iter().map(|c| c.uid.as_str()).collect();
        self.holders.retain(|_, h| live.contains(h.uid.as_str()));
        let holding: HashSet<String> = self.holders.values().map(|h| h.uid.clone()).collect();
        let mut sorted: Vec<&Claim> = claims
            .iter()
            .filter(|c| !holding.contains(&c.uid))
            .collect();
        // The same order every time, so two Services showing one address (written by
        // hand) resolve the same way on every sync.
        sorted.sort_by(|a, b| a.key.cmp(&b.key).then(a.uid.cmp(&b.uid)));
        for claim in sorted {
            let adoptable = claim
                .current
                .iter()
                .find(|ip| self.pool.contains(**ip) && !self.holders.contains_key(ip));
            if let Some(ip) = adoptable {
                self.holders.insert(*ip, holder(claim));
            }
        }
    }

    /// The address of `claim`: the requested one, else the one it holds, else the one its
    /// status shows if free, else the lowest free one. Any other address it held is
    /// released.
    pub fn assign(&mut self, claim: &Claim) -> Result<Ipv4Addr, AllocationError> {
        let held = self.held_by(&claim.uid);
        let chosen = if let Some(ip) = claim.requested {
            if !self.pool.contains(ip) {
                return Err(AllocationError::NotInPool(ip));
            }
            match self.holders.get(&ip) {
                Some(h) if h.uid != claim.uid => {
                    return Err(AllocationError::InUse {
                        ip,
                        holder: h.key.clone(),
                    })
                }
                _ => ip,
            }
        } else if let Some(ip) = held {
            ip
        } else if let Some(ip) = claim
            .current
            .iter()
            .find(|ip| self.pool.contains(**ip) && !self.holders.contains_key(ip))
        {
            *ip
        } else {
            self.pool
                .first_free(|ip| self.holders.contains_key(&ip))
                .ok_or(AllocationError::Exhausted {
                    size: self.pool.size(),
                })?
        };
        self.release(&claim.uid);
        self.holders.insert(chosen, holder(claim));
        Ok(chosen)
    }

    /// Releases whatever the Service `uid` holds.
    pub fn release(&mut self, uid: &str) {
        self.holders.retain(|_, h| h.uid != uid);
    }

    /// The address the Service `uid` holds.
    pub fn held_by(&self, uid: &str) -> Option<Ipv4Addr> {
        self.holders
            .iter()
            .find(|(_, h)| h.uid == uid)
            .map(|(ip, _)| *ip)
    }
}

fn holder(claim: &Claim) -> Holder {
    Holder {
        uid: claim.uid.clone(),
        key: claim.key.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> Ipv4Addr {
        s.parse().unwrap()
    }

    fn claim(name: &str) -> Claim {
        Claim {
            uid: format!("uid-{name}"),
            key: format!("default/{name}"),
            current: Vec::new(),
            requested: None,
        }
    }

    fn allocator(pool: &str) -> Allocator {
        Allocator::new(pool.parse().unwrap())
    }

    #[test]
    fn one_address_per_service_until_exhausted() {
        let mut a = allocator("198.18.0.0/31");
        let (x, y, z) = (claim("x"), claim("y"), claim("z"));
        assert_eq!(a.assign(&x), Ok(ip("198.18.0.0")));
        // Again: the same address, not a second one.
        assert_eq!(a.assign(&x), Ok(ip("198.18.0.0")));
        assert_eq!(a.assign(&y), Ok(ip("198.18.0.1")));
        let err = a.assign(&z).unwrap_err();
        assert_eq!(err, AllocationError::Exhausted { size: 2 });
        assert_eq!(
            err.to_string(),
            "no available IPs: all 2 addresses of the pool are allocated"
        );
        assert_eq!(a.held_by("uid-z"), None);
    }

    #[test]
    fn a_deleted_service_frees_its_address_for_the_next() {
        let mut a = allocator("198.18.0.4/32");
        let (x, y) = (claim("x"), claim("y"));
        assert_eq!(a.assign(&x), Ok(ip("198.18.0.4")));
        a.sync(&[x.clone(), y.clone()]);
        assert!(a.assign(&y).is_err());
        // x is gone from the cache (deleted, or no longer of type LoadBalancer).
        a.sync(std::slice::from_ref(&y));
        assert_eq!(a.held_by("uid-x"), None);
        assert_eq!(a.assign(&y), Ok(ip("198.18.0.4")));
        // Deleted and created again under the same name: a new uid, a new claim.
        let x2 = Claim {
            uid: "uid-x2".into(),
            ..x
        };
        a.sync(&[y.clone(), x2.clone()]);
        assert_eq!(a.held_by("uid-y"), Some(ip("198.18.0.4")));
        assert!(a.assign(&x2).is_err());
    }

    #[test]
    fn statuses_are_adopted_after_a_restart() {
        let mut a = allocator("198.18.0.0/30");
        let mut x = claim("x");
        x.current = vec![ip("198.18.0.2")];
        let mut outside = claim("outside");
        outside.current = vec![ip("192.0.2.1")];
        a.sync(&[x.clone(), outside.clone()]);
        assert_eq!(a.held_by("uid-x"), Some(ip("198.18.0.2")));
        // A new Service does not get x's address; x keeps it.
        assert_eq!(a.assign(&claim("y")), Ok(ip("198.18.0.0")));
        assert_eq!(a.assign(&x), Ok(ip("198.18.0.2")));
        // An address outside the pool is replaced by one of the pool.
        assert_eq!(a.assign(&outside), Ok(ip("198.18.0.1")));
    }

    #[test]
    fn two_statuses_showing_one_address_keep_it_for_one() {
        let mut a = allocator("198.18.0.0/30");
        let (mut x, mut y) = (claim("x"), claim("y"));
        x.current = vec![ip("198.18.0.3")];
        y.current = vec![ip("198.18.0.3")];
        a.sync(&[y.clone(), x.clone()]);
        assert_eq!(a.assign(&x), Ok(ip("198.18.0.3")));
        assert_eq!(a.assign(&y), Ok(ip("198.18.0.0")));
    }

    #[test]
    fn an_assignment_outlives_a_stale_cache() {
        // x was just given an address and its status write has not reached the cache:
        // a sync that still shows x without status must not free it for y.
        let mut a = allocator("198.18.0.0/32");
        let x = claim("x");
        a.assign(&x).unwrap();
        a.sync(&[x.clone(), claim("y")]);
        assert!(a.assign(&claim("y")).is_err());
    }

    #[test]
    fn requested_addresses() {
        let mut a = allocator("198.18.0.0/29");
        let mut x = claim("x");
        x.requested = Some(ip("198.18.0.5"));
        assert_eq!(a.assign(&x), Ok(ip("198.18.0.5")));
        let mut y = claim("y");
        y.requested = Some(ip("198.18.0.5"));
        let err = a.assign(&y).unwrap_err();
        assert_eq!(
            err.to_string(),
            "requested IP 198.18.0.5 is already allocated to default/x"
        );
        y.requested = Some(ip("192.0.2.9"));
        assert_eq!(
            a.assign(&y),
            Err(AllocationError::NotInPool(ip("192.0.2.9")))
        );
        // x asks for another address: it moves, and the old one is free again.
        x.requested = Some(ip("198.18.0.6"));
        assert_eq!(a.assign(&x), Ok(ip("198.18.0.6")));
        y.requested = Some(ip("198.18.0.5"));
        assert_eq!(a.assign(&y), Ok(ip("198.18.0.5")));
        // An address someone requested is not handed to others meanwhile.
        assert_eq!(a.assign(&claim("z")), Ok(ip("198.18.0.0")));
        a.sync(&[x, y]);
        assert_eq!(a.held_by("uid-z"), None);
    }
}
