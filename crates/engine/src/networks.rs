//! How containers join networks: the engine's side of `skiff-network`.
//!
//! Each state root gets its own nftables table and default bridge, so
//! several skiff instances (and parallel tests) share a host without
//! touching each other's rules.

use std::path::Path;

use serde::{Deserialize, Serialize};
use skiff_network::ports::parse_exposed;
use skiff_network::{Networking, NetworkingConfig, PortSpec, Protocol};

use crate::roots::{Roots, DEFAULT_DATA_ROOT};
use crate::{Container, Engine, EngineError, Result};

/// skiff's default bridge subnet: Docker's 172.17/16 and Podman's 10.88/16 stay free.
pub const DEFAULT_SUBNET: &str = "10.86.0.0/16";

/// Where a container's network namespace comes from (`--network`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NetworkMode {
    /// The default bridge network, or a user network by name.
    Network(String),
    /// The host's network namespace.
    Host,
    /// Only a loopback interface.
    #[default]
    None,
}

impl NetworkMode {
    /// Parses `--network` (`bridge` when absent, as Docker).
    pub fn parse(value: Option<&str>) -> NetworkMode {
        match value {
            None | Some("default") | Some("bridge") => {
                NetworkMode::Network(skiff_network::DEFAULT_NETWORK.to_string())
            }
            Some("host") => NetworkMode::Host,
            Some("none") => NetworkMode::None,
            Some(name) => NetworkMode::Network(name.to_string()),
        }
    }

    /// The network joined, if any.
    pub fn network(&self) -> Option<&str> {
        match self {
            NetworkMode::Network(n) => Some(n),
            _ => None,
        }
    }

    /// Docker's `HostConfig.NetworkMode`.
    pub fn docker_name(&self) -> &str {
        match self {
            NetworkMode::Network(n) => n,
            NetworkMode::Host => "host",
            NetworkMode::None => "none",
        }
    }
}

/// A short stable tag for a root, used in device and table names.
fn root_tag(roots: &Roots) -> Option<String> {
    if roots.data == Path::new(DEFAULT_DATA_ROOT) {
        return None;
    }
    Some(fnv_hex8(roots.data.to_string_lossy().as_bytes()))
}

/// FNV-1a as 8 hex digits: device names only need to differ, not resist attack.
fn fnv_hex8(data: &[u8]) -> String {
    let mut hash: u32 = 0x811c_9dc5;
    for b in data {
        hash ^= u32::from(*b);
        hash = hash.wrapping_mul(0x0100_0193);
    }
    format!("{hash:08x}")
}

/// The networking layer for a root; `dns_command` starts the embedded resolver.
pub fn networking(roots: &Roots, dns_command: Vec<String>) -> Result<Networking> {
    let mut config = NetworkingConfig::new(roots.data.join("networks"));
    let tag = root_tag(roots);
    // The default network is created once per root; its subnet is the
    // environment's choice, 10.86.0.0/16 for the default root, or a /24 of
    // 10.90.0.0/15 picked by the root's name, so roots side by side rarely
    // collide (an overlap is refused with a clear error, never shared).
    let subnet = std::env::var("SKIFF_DEFAULT_SUBNET").unwrap_or_else(|_| match &tag {
        None => DEFAULT_SUBNET.into(),
        Some(t) => {
            let h = u32::from_str_radix(t, 16).unwrap_or(0);
            format!("10.{}.{}.0/24", 90 + (h >> 8) % 2, h % 256)
        }
    });
    config.default_subnet = subnet.parse().map_err(|_| {
        EngineError::InvalidArgument(format!("invalid SKIFF_DEFAULT_SUBNET {subnet:?}"))
    })?;
    if let Some(tag) = tag {
        config.table = format!("skiff_{tag}");
        config.default_bridge = format!("sk0-{tag}");
    }
    config.dns_command = Some(dns_command);
    Networking::new(config).map_err(network_error)
}

impl Engine {
    /// Makes network `name` exist with `subnet`: a kubelet's pod network, whose subnet is
    /// the node's pod CIDR. Like the default network it has no embedded resolver and is
    /// isolated from user networks. A network of that name with another subnet is
    /// replaced, which only works while no container uses it.
    pub fn ensure_pod_network(&self, name: &str, subnet: &str) -> Result<()> {
        let subnet: ipnet::Ipv4Net = subnet.parse().map_err(|_| {
            EngineError::InvalidArgument(format!("pod CIDR {subnet:?} is not an IPv4 CIDR"))
        })?;
        if let Ok(existing) = self.networking.network(name) {
            if existing.subnet == subnet {
                return Ok(());
            }
            tracing::warn!(
                "network {name}: subnet {} becomes {subnet}",
                existing.subnet
            );
            self.networking
                .remove_network(name)
                .map_err(network_error)?;
        }
        let options = skiff_network::NetworkOptions {
            subnet: Some(subnet),
            isolated: true,
            ..Default::default()
        };
        self.networking
            .create_network(name, &options)
            .map(drop)
            .map_err(network_error)
    }

    /// The ports `container` publishes now, host ports as chosen: those of
    /// its network attachment, so none unless it runs (as `docker ps` and
    /// `docker port` show them).
    pub fn published_ports(&self, container: &Container) -> Vec<skiff_network::PortMapping> {
        let Some(network) = container.record.network.network() else {
            return Vec::new();
        };
        if !container.is_running() {
            return Vec::new();
        }
        match self.networking.attachment(network, &container.record.id) {
            Ok(Some(a)) => a.ports,
            _ => Vec::new(),
        }
    }
}

/// Wraps a networking error for the engine.
pub fn network_error(e: skiff_network::Error) -> EngineError {
    EngineError::Network(e.to_string())
}

/// Parses `-p` values (a range gives one spec per container port).
pub fn parse_ports(values: &[String]) -> Result<Vec<PortSpec>> {
    let mut out = Vec::new();
    for v in values {
        out.extend(PortSpec::parse_publish(v).map_err(|e| {
            EngineError::InvalidArgument(format!("invalid publish spec {v:?}: {e}"))
        })?);
    }
    Ok(out)
}

/// The ports to publish: `-p` values, and with `-P` every exposed port
/// (`exposed`: the image's EXPOSE keys and `--expose` values) that `-p` does
/// not already publish, on a free host port, as Docker does.
pub fn ports_to_publish(
    publish: &[String],
    publish_all: bool,
    exposed: &[String],
) -> Result<Vec<PortSpec>> {
    let mut ports = parse_ports(publish)?;
    let mut open: Vec<(u16, Protocol)> = Vec::new();
    for e in exposed {
        open.extend(parse_exposed(e).map_err(|err| {
            EngineError::InvalidArgument(format!("invalid range format for --expose: {e}: {err}"))
        })?);
    }
    if publish_all {
        open.sort();
        open.dedup();
        for (port, protocol) in open {
            let published = ports
                .iter()
                .any(|p| p.container_port == port && p.protocol == protocol);
            if !published {
                ports.push(PortSpec::any(port, protocol));
            }
        }
    }
    Ok(ports)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn network_modes_parse_like_docker() {
        assert_eq!(
            NetworkMode::parse(None),
            NetworkMode::Network("bridge".into())
        );
        assert_eq!(NetworkMode::parse(Some("host")), NetworkMode::Host);
        assert_eq!(NetworkMode::parse(Some("none")), NetworkMode::None);
        assert_eq!(NetworkMode::parse(Some("blue")).network(), Some("blue"));
    }

    #[test]
    fn roots_get_distinct_tables() {
        let a = Roots::new(Some(Path::new("/tmp/a")));
        let b = Roots::new(Some(Path::new("/tmp/b")));
        assert_ne!(root_tag(&a), root_tag(&b));
        assert_eq!(root_tag(&Roots::new(None)), None);
        assert!(format!("sk0-{}", root_tag(&a).unwrap()).len() <= 15);
    }

    #[test]
    fn bad_ports_are_rejected() {
        assert!(parse_ports(&["8080:80".into()]).is_ok());
        assert!(parse_ports(&["x:80".into()]).is_err());
        assert_eq!(parse_ports(&["8000-8001:80-81".into()]).unwrap().len(), 2);
        assert!(parse_ports(&["8000-8001:80-82".into()]).is_err());
    }

    #[test]
    fn publish_all_adds_exposed_ports_not_published_yet() {
        let exposed = ["80/tcp".to_string(), "53/udp".into(), "8080".into()];
        let ports = ports_to_publish(&["9090:80".into()], true, &exposed).unwrap();
        let shown: Vec<(u16, u16, Protocol)> = ports
            .iter()
            .map(|p| (p.host_port, p.container_port, p.protocol))
            .collect();
        assert_eq!(
            shown,
            [
                (9090, 80, Protocol::Tcp),
                (0, 53, Protocol::Udp),
                (0, 8080, Protocol::Tcp)
            ]
        );
        // Without -P, exposing publishes nothing.
        assert!(ports_to_publish(&[], false, &exposed).unwrap().is_empty());
        assert!(ports_to_publish(&[], true, &["x".into()]).is_err());
    }
}
