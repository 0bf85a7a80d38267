//! IP address management: hands out addresses of a network's subnet, never
//! the same one twice, across threads and processes.
//!
//! State is one JSON file per network (`ipam.json`) rewritten atomically under
//! an exclusive `flock` on `ipam.lock`, so concurrent `skiff run`s serialise
//! on the lock and a crash leaves either the old or the new file. There is
//! no fsync: the allocations describe veths and namespaces that a power loss
//! removes too, and gc frees what a lost write leaves over. Addresses
//! are handed out round-robin after the last one given (as the CNI
//! `host-local` plugin does) so that a released address is not reused at once
//! while stale ARP or conntrack entries may still point at it.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};

use crate::lock::{write_atomic, Durability, FileLock};

/// Errors of address management.
#[derive(Debug, thiserror::Error)]
pub enum IpamError {
    /// Reading or writing the state failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done, naming the path.
        context: String,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The state file does not parse.
    #[error("IPAM state {path}: {source}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// The parse error.
        source: serde_json::Error,
    },
    /// Every address of the subnet is in use.
    #[error(
        "no free address left in {0}; remove containers or create a network with a larger --subnet"
    )]
    Exhausted(Ipv4Net),
    /// A requested address is outside the subnet or reserved.
    #[error("address {addr} is not available in {subnet} (outside it, or its network, broadcast or gateway address)")]
    Unusable {
        /// Requested address.
        addr: Ipv4Addr,
        /// The subnet.
        subnet: Ipv4Net,
    },
    /// A requested address belongs to someone else.
    #[error("address {addr} is already in use by {owner}")]
    InUse {
        /// Requested address.
        addr: Ipv4Addr,
        /// Its owner.
        owner: String,
    },
}

/// What is on disk.
#[derive(Debug, Default, Serialize, Deserialize)]
struct State {
    /// The address handed out last; the next search starts after it.
    #[serde(default)]
    last: Option<Ipv4Addr>,
    /// Address to owner (a container id).
    #[serde(default)]
    allocations: BTreeMap<Ipv4Addr, String>,
}

/// Address management for one network.
#[derive(Debug, Clone)]
pub struct Ipam {
    dir: PathBuf,
    subnet: Ipv4Net,
    gateway: Ipv4Addr,
}

impl Ipam {
    /// IPAM of the network whose state directory is `dir`.
    pub fn new(dir: impl Into<PathBuf>, subnet: Ipv4Net, gateway: Ipv4Addr) -> Self {
        Ipam {
            dir: dir.into(),
            subnet,
            gateway,
        }
    }

    fn state_path(&self) -> PathBuf {
        self.dir.join("ipam.json")
    }

    fn lock(&self) -> Result<FileLock, IpamError> {
        let path = self.dir.join("ipam.lock");
        FileLock::exclusive(&path).map_err(|source| IpamError::Io {
            context: format!("locking {}", path.display()),
            source,
        })
    }

    fn read(&self) -> Result<State, IpamError> {
        let path = self.state_path();
        match std::fs::read(&path) {
            Ok(data) => {
                serde_json::from_slice(&data).map_err(|source| IpamError::Corrupt { path, source })
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(State::default()),
            Err(source) => Err(IpamError::Io {
                context: format!("reading {}", path.display()),
                source,
            }),
        }
    }

    fn write(&self, state: &State) -> Result<(), IpamError> {
        let path = self.state_path();
        write_atomic(
            &path,
            &serde_json::to_vec(state).expect("IPAM state serialises"),
            Durability::Process,
        )
        .map_err(|source| IpamError::Io {
            context: format!("writing {}", path.display()),
            source,
        })
    }

    fn usable(&self, addr: Ipv4Addr) -> bool {
        self.subnet.contains(&addr)
            && addr != self.subnet.network()
            && addr != self.subnet.broadcast()
            && addr != self.gateway
    }

    /// Gives `owner` an address: `requested` if given, else the next free one.
    /// An owner that already has an address gets the same one back, so a
    /// retried setup does not leak.
    pub fn allocate(
        &self,
        owner: &str,
        requested: Option<Ipv4Addr>,
    ) -> Result<Ipv4Addr, IpamError> {
        let _lock = self.lock()?;
        let mut state = self.read()?;
        if let Some((addr, _)) = state.allocations.iter().find(|(_, o)| *o == owner) {
            if requested.is_none_or(|r| r == *addr) {
                return Ok(*addr);
            }
        }
        let addr = match requested {
            Some(addr) => {
                if !self.usable(addr) {
                    return Err(IpamError::Unusable {
                        addr,
                        subnet: self.subnet,
                    });
                }
                if let Some(other) = state.allocations.get(&addr) {
                    return Err(IpamError::InUse {
                        addr,
                        owner: other.clone(),
                    });
                }
                addr
            }
            None => self.next_free(&state)?,
        };
        state.allocations.retain(|_, o| o != owner);
        state.allocations.insert(addr, owner.to_string());
        state.last = Some(addr);
        self.write(&state)?;
        Ok(addr)
    }

    fn next_free(&self, state: &State) -> Result<Ipv4Addr, IpamError> {
        let first = u32::from(self.subnet.network()) + 1;
        let last = u32::from(self.subnet.broadcast()) - 1;
        let start = state
            .last
            .map(u32::from)
            .filter(|a| (first..=last).contains(a))
            .map(|a| if a == last { first } else { a + 1 })
            .unwrap_or(first);
        let size = last - first + 1;
        (0..size)
            .map(|i| first + (start - first + i) % size)
            .map(Ipv4Addr::from)
            .find(|a| *a != self.gateway && !state.allocations.contains_key(a))
            .ok_or(IpamError::Exhausted(self.subnet))
    }

    /// Frees `owner`'s address, returning it; nothing to free is not an error.
    pub fn release(&self, owner: &str) -> Result<Option<Ipv4Addr>, IpamError> {
        let _lock = self.lock()?;
        let mut state = self.read()?;
        let found = state
            .allocations
            .iter()
            .find(|(_, o)| *o == owner)
            .map(|(a, _)| *a);
        if found.is_some() {
            state.allocations.retain(|_, o| o != owner);
            self.write(&state)?;
        }
        Ok(found)
    }

    /// Frees every address whose owner `keep` rejects, returning them.
    pub fn release_unless(
        &self,
        keep: impl Fn(&str) -> bool,
    ) -> Result<Vec<(Ipv4Addr, String)>, IpamError> {
        let _lock = self.lock()?;
        let mut state = self.read()?;
        let dropped: Vec<(Ipv4Addr, String)> = state
            .allocations
            .iter()
            .filter(|(_, o)| !keep(o))
            .map(|(a, o)| (*a, o.clone()))
            .collect();
        if !dropped.is_empty() {
            state.allocations.retain(|_, o| keep(o));
            self.write(&state)?;
        }
        Ok(dropped)
    }

    /// Every allocation, address to owner.
    pub fn allocations(&self) -> Result<BTreeMap<Ipv4Addr, String>, IpamError> {
        let _lock = self.lock()?;
        Ok(self.read()?.allocations)
    }

    /// The network's state directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ipam(dir: &Path, subnet: &str) -> Ipam {
        let subnet: Ipv4Net = subnet.parse().unwrap();
        Ipam::new(dir, subnet, crate::store::first_host(&subnet))
    }

    #[test]
    fn allocates_round_robin_and_skips_reserved() {
        let dir = tempfile::tempdir().unwrap();
        let ipam = ipam(dir.path(), "10.0.0.0/29");
        // .0 network, .1 gateway, .7 broadcast: .2-.6 usable.
        let got: Vec<Ipv4Addr> = (0..5)
            .map(|i| ipam.allocate(&format!("c{i}"), None).unwrap())
            .collect();
        assert_eq!(
            got,
            (2..=6)
                .map(|h| Ipv4Addr::new(10, 0, 0, h))
                .collect::<Vec<_>>()
        );
        assert!(matches!(
            ipam.allocate("c9", None),
            Err(IpamError::Exhausted(_))
        ));
        assert_eq!(
            ipam.release("c1").unwrap(),
            Some(Ipv4Addr::new(10, 0, 0, 3))
        );
        assert_eq!(ipam.release("c1").unwrap(), None);
        assert_eq!(
            ipam.allocate("c9", None).unwrap(),
            Ipv4Addr::new(10, 0, 0, 3)
        );
    }

    #[test]
    fn released_addresses_are_not_reused_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let ipam = ipam(dir.path(), "10.0.0.0/24");
        let a = ipam.allocate("a", None).unwrap();
        ipam.release("a").unwrap();
        let b = ipam.allocate("b", None).unwrap();
        assert_ne!(a, b);
    }

    #[test]
    fn same_owner_gets_same_address() {
        let dir = tempfile::tempdir().unwrap();
        let ipam = ipam(dir.path(), "10.0.0.0/24");
        let a = ipam.allocate("a", None).unwrap();
        assert_eq!(ipam.allocate("a", None).unwrap(), a);
        assert_eq!(ipam.allocations().unwrap().len(), 1);
    }

    #[test]
    fn requested_addresses() {
        let dir = tempfile::tempdir().unwrap();
        let ipam = ipam(dir.path(), "10.0.0.0/24");
        let want = Ipv4Addr::new(10, 0, 0, 42);
        assert_eq!(ipam.allocate("a", Some(want)).unwrap(), want);
        assert!(matches!(
            ipam.allocate("b", Some(want)),
            Err(IpamError::InUse { .. })
        ));
        for bad in [[10, 0, 0, 1], [10, 0, 0, 0], [10, 0, 0, 255], [10, 0, 1, 2]] {
            assert!(matches!(
                ipam.allocate("b", Some(Ipv4Addr::from(bad))),
                Err(IpamError::Unusable { .. })
            ));
        }
    }

    #[test]
    fn survives_restart() {
        let dir = tempfile::tempdir().unwrap();
        let a = ipam(dir.path(), "10.0.0.0/24").allocate("a", None).unwrap();
        let again = ipam(dir.path(), "10.0.0.0/24");
        assert_eq!(again.allocations().unwrap().get(&a).unwrap(), "a");
        assert_ne!(again.allocate("b", None).unwrap(), a);
    }

    #[test]
    fn parallel_threads_get_distinct_addresses() {
        let dir = tempfile::tempdir().unwrap();
        let ipam = ipam(dir.path(), "10.0.0.0/22");
        let addrs: Vec<Ipv4Addr> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..16)
                .map(|t| {
                    let ipam = ipam.clone();
                    s.spawn(move || {
                        (0..25)
                            .map(|i| ipam.allocate(&format!("t{t}-{i}"), None).unwrap())
                            .collect::<Vec<_>>()
                    })
                })
                .collect();
            handles
                .into_iter()
                .flat_map(|h| h.join().unwrap())
                .collect()
        });
        let unique: std::collections::BTreeSet<_> = addrs.iter().collect();
        assert_eq!(unique.len(), 400);
        assert_eq!(ipam.allocations().unwrap().len(), 400);
    }

    #[test]
    fn release_unless_keeps_live_owners() {
        let dir = tempfile::tempdir().unwrap();
        let ipam = ipam(dir.path(), "10.0.0.0/24");
        ipam.allocate("live", None).unwrap();
        ipam.allocate("dead", None).unwrap();
        let dropped = ipam.release_unless(|o| o == "live").unwrap();
        assert_eq!(dropped.len(), 1);
        assert_eq!(dropped[0].1, "dead");
        assert_eq!(ipam.allocations().unwrap().len(), 1);
    }
}
