//! Network definitions persisted under the caller's state root
//! (`<data-root>/networks/<name>/network.json`).
//!
//! A network's directory also holds its IPAM state ([`crate::ipam`]), one
//! attachment record per container (`attachments/<id>.json`) and the DNS
//! resolver's lock and pid files ([`crate::dns`]).

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};

use crate::lock::{write_atomic, Durability, FileLock};

/// Name of the default network (`--network bridge`), as in Docker.
pub const DEFAULT_NETWORK: &str = "bridge";
/// Bridge device of the default network.
pub const DEFAULT_BRIDGE: &str = "skiff0";
/// Subnet of the default network unless configured otherwise (Podman's default).
pub const DEFAULT_SUBNET: &str = "10.88.0.0/16";
/// Where automatic subnets for user networks start (`10.89.0.0/24`, then
/// `10.89.1.0/24`, ...), as Podman does.
const AUTO_SUBNET_START: Ipv4Addr = Ipv4Addr::new(10, 89, 0, 0);
/// Names `--network` gives another meaning.
const RESERVED: &[&str] = &["host", "none", "default", "container"];

/// Errors of the network store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Reading or writing the state root failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done, naming the path.
        context: String,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A network record does not parse.
    #[error("network record {path}: {source}")]
    Corrupt {
        /// The record.
        path: PathBuf,
        /// The parse error.
        source: serde_json::Error,
    },
    /// No network has this name.
    #[error("network {0} not found")]
    NotFound(String),
    /// The name is taken.
    #[error("network with name {0} already exists")]
    Exists(String),
    /// The name is not acceptable.
    #[error("invalid network name '{0}': use letters, digits, '_', '.' and '-', starting with a letter or digit, at most 64 characters")]
    InvalidName(String),
    /// The name has a meaning of its own for `--network`.
    #[error("network name '{0}' is reserved; pick another name")]
    Reserved(String),
    /// The bridge device name is not acceptable.
    #[error(
        "invalid bridge name '{0}': at most 15 characters of letters, digits, '_', '.' and '-'"
    )]
    InvalidBridge(String),
    /// Another network uses the bridge device.
    #[error("bridge {bridge} is already used by network {network}")]
    BridgeInUse {
        /// Bridge device.
        bridge: String,
        /// The network using it.
        network: String,
    },
    /// The subnet overlaps another network's or a host route.
    #[error("subnet {subnet} overlaps {other}; choose another subnet (--subnet, or the default network's subnet in the configuration)")]
    Overlap {
        /// Requested subnet.
        subnet: Ipv4Net,
        /// What it overlaps.
        other: String,
    },
    /// The subnet cannot hold containers.
    #[error("subnet {0} is too small: use a prefix of /30 or shorter")]
    SubnetTooSmall(Ipv4Net),
    /// The gateway is not a usable host address of the subnet.
    #[error("gateway {gateway} is not a host address of subnet {subnet}")]
    Gateway {
        /// Requested gateway.
        gateway: Ipv4Addr,
        /// The subnet.
        subnet: Ipv4Net,
    },
    /// Every automatic subnet is taken.
    #[error("no free subnet left in 10.89.0.0-10.255.255.0/24; give one with --subnet")]
    NoFreeSubnet,
}

fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> StoreError {
    let context = context.into();
    move |source| StoreError::Io { context, source }
}

/// A network: a bridge with a subnet, containers attach to it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Network {
    /// Name (`skiff network create NAME`).
    pub name: String,
    /// Random 64-hex id, as Docker shows it.
    pub id: String,
    /// Linux bridge device.
    pub bridge: String,
    /// IPv4 subnet, e.g. `10.89.0.0/24`.
    pub subnet: Ipv4Net,
    /// Address of the bridge, the containers' default route.
    pub gateway: Ipv4Addr,
    /// Containers on this network cannot reach containers on other networks
    /// and are not reachable from them (Docker's user-network isolation).
    pub isolated: bool,
    /// Containers resolve each other's names through the embedded DNS
    /// resolver on the gateway address (Docker: user networks only).
    pub dns: bool,
    /// Containers reach only each other (`--internal`): no default route, no
    /// outbound NAT, nothing forwarded to or from other networks or the
    /// outside, and no published ports (as in Docker, `-p` is accepted but
    /// publishes nothing).
    #[serde(default)]
    pub internal: bool,
    /// Creation time, seconds since the epoch.
    pub created: u64,
}

impl Network {
    /// The network's prefix length (`24` for a /24).
    pub fn prefix_len(&self) -> u8 {
        self.subnet.prefix_len()
    }

    /// The nameserver containers on this network should use, if it has DNS.
    pub fn dns_server(&self) -> Option<Ipv4Addr> {
        self.dns.then_some(self.gateway)
    }
}

/// What `skiff network create` may set; everything else is chosen.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NetworkOptions {
    /// Subnet; the first free /24 from 10.89.0.0 when `None`.
    pub subnet: Option<Ipv4Net>,
    /// Gateway; the subnet's first host address when `None`.
    pub gateway: Option<Ipv4Addr>,
    /// Bridge device; `sk-<12 hex of the id>` when `None`.
    pub bridge: Option<String>,
    /// Isolate from other networks (see [`Network::isolated`]).
    pub isolated: bool,
    /// Run the embedded DNS resolver (see [`Network::dns`]).
    pub dns: bool,
    /// No way out of the network (see [`Network::internal`]).
    pub internal: bool,
}

impl NetworkOptions {
    /// Options of a Docker-like user network: isolated, with DNS.
    pub fn user() -> Self {
        NetworkOptions {
            isolated: true,
            dns: true,
            ..Default::default()
        }
    }
}

/// Checks a network name (Docker's rules).
pub fn validate_name(name: &str) -> Result<(), StoreError> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphanumeric())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
    if !ok {
        return Err(StoreError::InvalidName(name.to_string()));
    }
    Ok(())
}

/// Checks an interface name: the kernel allows 15 bytes; we also keep it to
/// characters that need no quoting in nftables scripts.
pub fn validate_ifname(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 15
        && name != "."
        && name != ".."
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
}

/// The persisted set of networks.
#[derive(Debug, Clone)]
pub struct NetworkStore {
    root: PathBuf,
}

impl NetworkStore {
    /// A store rooted at `root` (the caller's `<data-root>/networks`).
    pub fn new(root: impl Into<PathBuf>) -> Self {
        NetworkStore { root: root.into() }
    }

    /// The store's root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Directory of network `name`.
    pub fn dir(&self, name: &str) -> PathBuf {
        self.root.join(name)
    }

    fn lock(&self) -> Result<FileLock, StoreError> {
        let path = self.root.join(".lock");
        FileLock::exclusive(&path).map_err(io(format!("locking {}", path.display())))
    }

    /// Network `name`.
    pub fn get(&self, name: &str) -> Result<Network, StoreError> {
        let path = self.dir(name).join("network.json");
        let data = match std::fs::read(&path) {
            Ok(d) => d,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(StoreError::NotFound(name.to_string()))
            }
            Err(e) => return Err(io(format!("reading {}", path.display()))(e)),
        };
        serde_json::from_slice(&data).map_err(|source| StoreError::Corrupt { path, source })
    }

    /// Every network, by name.
    pub fn list(&self) -> Result<Vec<Network>, StoreError> {
        let entries = match std::fs::read_dir(&self.root) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(io(format!("reading {}", self.root.display()))(e)),
        };
        let mut out = Vec::new();
        for entry in entries {
            let entry = entry.map_err(io(format!("reading {}", self.root.display())))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with('.') || !entry.path().join("network.json").exists() {
                continue;
            }
            match self.get(&name) {
                Ok(n) => out.push(n),
                // Removed between readdir and read.
                Err(StoreError::NotFound(_)) => {}
                Err(e) => return Err(e),
            }
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    /// Creates network `name`. `host_routes` are the host's IPv4 routes, which
    /// an automatic subnet must not overlap (an explicit one is checked too).
    pub fn create(
        &self,
        name: &str,
        options: &NetworkOptions,
        host_routes: &[(Ipv4Net, String)],
    ) -> Result<Network, StoreError> {
        validate_name(name)?;
        if RESERVED.contains(&name) || name == DEFAULT_NETWORK {
            return Err(StoreError::Reserved(name.to_string()));
        }
        self.create_locked(name, options, host_routes)
    }

    /// The default network, created on first use with `subnet`, which must
    /// not overlap `host_routes` (Podman's default network uses 10.88.0.0/16 too).
    pub fn ensure_default(
        &self,
        subnet: Ipv4Net,
        bridge: &str,
        host_routes: &[(Ipv4Net, String)],
    ) -> Result<Network, StoreError> {
        match self.get(DEFAULT_NETWORK) {
            Ok(n) => return Ok(n),
            Err(StoreError::NotFound(_)) => {}
            Err(e) => return Err(e),
        }
        let options = NetworkOptions {
            subnet: Some(subnet),
            bridge: Some(bridge.to_string()),
            // Docker's default bridge: no embedded DNS, isolated from user networks.
            isolated: true,
            dns: false,
            gateway: None,
            internal: false,
        };
        match self.create_locked(DEFAULT_NETWORK, &options, host_routes) {
            Err(StoreError::Exists(_)) => self.get(DEFAULT_NETWORK),
            other => other,
        }
    }

    fn create_locked(
        &self,
        name: &str,
        options: &NetworkOptions,
        host_routes: &[(Ipv4Net, String)],
    ) -> Result<Network, StoreError> {
        let _lock = self.lock()?;
        let existing = self.list()?;
        if existing.iter().any(|n| n.name == name) {
            return Err(StoreError::Exists(name.to_string()));
        }
        let id = hex::encode(rand::random::<[u8; 32]>());
        let bridge = options
            .bridge
            .clone()
            .unwrap_or_else(|| format!("sk-{}", &id[..12]));
        if !validate_ifname(&bridge) {
            return Err(StoreError::InvalidBridge(bridge));
        }
        if let Some(other) = existing.iter().find(|n| n.bridge == bridge) {
            return Err(StoreError::BridgeInUse {
                bridge,
                network: other.name.clone(),
            });
        }
        let taken = |net: &Ipv4Net| -> Option<String> {
            existing
                .iter()
                .find(|n| overlaps(&n.subnet, net))
                .map(|n| format!("network {} ({})", n.name, n.subnet))
                .or_else(|| {
                    host_routes
                        .iter()
                        .find(|(r, dev)| overlaps(r, net) && *dev != bridge && r.prefix_len() > 0)
                        .map(|(r, dev)| format!("host route {r} on {dev}"))
                })
        };
        let subnet = match options.subnet {
            Some(s) => {
                let s = s.trunc();
                if s.prefix_len() > 30 {
                    return Err(StoreError::SubnetTooSmall(s));
                }
                if let Some(other) = taken(&s) {
                    return Err(StoreError::Overlap { subnet: s, other });
                }
                s
            }
            None => auto_subnet(taken)?,
        };
        let gateway = match options.gateway {
            Some(g) => {
                if !subnet.contains(&g) || g == subnet.network() || g == subnet.broadcast() {
                    return Err(StoreError::Gateway { gateway: g, subnet });
                }
                g
            }
            None => first_host(&subnet),
        };
        let network = Network {
            name: name.to_string(),
            id,
            bridge,
            subnet,
            gateway,
            isolated: options.isolated,
            dns: options.dns,
            internal: options.internal,
            created: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0),
        };
        let path = self.dir(name).join("network.json");
        write_atomic(
            &path,
            &serde_json::to_vec_pretty(&network).expect("network serialises"),
            Durability::Power,
        )
        .map_err(io(format!("writing {}", path.display())))?;
        Ok(network)
    }

    /// Deletes network `name`'s directory (the caller tore down its devices).
    pub fn remove(&self, name: &str) -> Result<(), StoreError> {
        let _lock = self.lock()?;
        let dir = self.dir(name);
        if !dir.join("network.json").exists() {
            return Err(StoreError::NotFound(name.to_string()));
        }
        std::fs::remove_dir_all(&dir).map_err(io(format!("removing {}", dir.display())))
    }
}

/// Whether two subnets share an address.
pub fn overlaps(a: &Ipv4Net, b: &Ipv4Net) -> bool {
    a.contains(&b.network()) || b.contains(&a.network())
}

/// The first host address of `subnet` (`.1` of a /24).
pub fn first_host(subnet: &Ipv4Net) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(subnet.network()) + 1)
}

fn auto_subnet(taken: impl Fn(&Ipv4Net) -> Option<String>) -> Result<Ipv4Net, StoreError> {
    let start = u32::from(AUTO_SUBNET_START);
    let end = u32::from(Ipv4Addr::new(10, 255, 255, 0));
    let mut addr = start;
    while addr <= end {
        let net = Ipv4Net::new(Ipv4Addr::from(addr), 24).expect("valid prefix");
        if taken(&net).is_none() {
            return Ok(net);
        }
        addr += 256;
    }
    Err(StoreError::NoFreeSubnet)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> Ipv4Net {
        s.parse().unwrap()
    }

    #[test]
    fn create_get_list_remove() {
        let dir = tempfile::tempdir().unwrap();
        let store = NetworkStore::new(dir.path());
        let a = store.create("a", &NetworkOptions::user(), &[]).unwrap();
        assert_eq!(a.subnet, net("10.89.0.0/24"));
        assert_eq!(a.gateway, Ipv4Addr::new(10, 89, 0, 1));
        assert!(a.bridge.starts_with("sk-") && a.bridge.len() == 15);
        let b = store.create("b", &NetworkOptions::user(), &[]).unwrap();
        assert_eq!(b.subnet, net("10.89.1.0/24"));
        assert_eq!(store.get("a").unwrap(), a);
        let names: Vec<String> = store.list().unwrap().into_iter().map(|n| n.name).collect();
        assert_eq!(names, ["a", "b"]);
        assert!(matches!(
            store.create("a", &NetworkOptions::user(), &[]),
            Err(StoreError::Exists(_))
        ));
        store.remove("a").unwrap();
        assert!(matches!(store.get("a"), Err(StoreError::NotFound(_))));
        assert!(matches!(store.remove("a"), Err(StoreError::NotFound(_))));
    }

    #[test]
    fn subnets_never_overlap() {
        let dir = tempfile::tempdir().unwrap();
        let store = NetworkStore::new(dir.path());
        let opts = NetworkOptions {
            subnet: Some(net("10.200.0.0/16")),
            ..NetworkOptions::user()
        };
        store.create("wide", &opts, &[]).unwrap();
        let inner = NetworkOptions {
            subnet: Some(net("10.200.3.0/24")),
            ..NetworkOptions::user()
        };
        assert!(matches!(
            store.create("inner", &inner, &[]),
            Err(StoreError::Overlap { .. })
        ));
        // Host routes are avoided by automatic subnets.
        let routes = vec![(net("10.89.0.0/23"), "eth1".to_string())];
        let n = store
            .create("auto", &NetworkOptions::user(), &routes)
            .unwrap();
        assert_eq!(n.subnet, net("10.89.2.0/24"));
    }

    #[test]
    fn names_and_gateways_are_checked() {
        let dir = tempfile::tempdir().unwrap();
        let store = NetworkStore::new(dir.path());
        for bad in ["", "-x", "a/b", "a b"] {
            assert!(matches!(
                store.create(bad, &NetworkOptions::user(), &[]),
                Err(StoreError::InvalidName(_))
            ));
        }
        for reserved in ["host", "none", "bridge"] {
            assert!(matches!(
                store.create(reserved, &NetworkOptions::user(), &[]),
                Err(StoreError::Reserved(_))
            ));
        }
        let opts = NetworkOptions {
            subnet: Some(net("10.201.0.0/24")),
            gateway: Some(Ipv4Addr::new(10, 201, 0, 255)),
            ..NetworkOptions::user()
        };
        assert!(matches!(
            store.create("gw", &opts, &[]),
            Err(StoreError::Gateway { .. })
        ));
        let opts = NetworkOptions {
            bridge: Some("a-very-long-bridge-name".into()),
            ..NetworkOptions::user()
        };
        assert!(matches!(
            store.create("br", &opts, &[]),
            Err(StoreError::InvalidBridge(_))
        ));
    }

    #[test]
    fn default_network_is_created_once() {
        let dir = tempfile::tempdir().unwrap();
        let store = NetworkStore::new(dir.path());
        let d = store
            .ensure_default(net(DEFAULT_SUBNET), DEFAULT_BRIDGE, &[])
            .unwrap();
        assert_eq!(d.bridge, DEFAULT_BRIDGE);
        assert_eq!(d.gateway, Ipv4Addr::new(10, 88, 0, 1));
        assert!(!d.dns);
        assert_eq!(
            store
                .ensure_default(net("10.99.0.0/16"), DEFAULT_BRIDGE, &[])
                .unwrap(),
            d
        );
        let other = NetworkStore::new(dir.path().join("other"));
        let podman = vec![(net("10.88.0.0/16"), "podman0".to_string())];
        assert!(matches!(
            other.ensure_default(net(DEFAULT_SUBNET), DEFAULT_BRIDGE, &podman),
            Err(StoreError::Overlap { .. })
        ));
    }
}
