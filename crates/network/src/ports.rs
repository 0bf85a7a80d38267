//! Published ports: `-p [hostip:]hostport:containerport[/tcp|udp]`.

use std::fmt;
use std::net::Ipv4Addr;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// A `-p` value that does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PortError {
    /// The text is not `[hostip:]hostport:containerport[/proto]`.
    #[error("invalid port mapping '{0}': expected [hostip:]hostport:containerport[/tcp|udp]")]
    Syntax(String),
    /// A port is not a number between 1 and 65535.
    #[error("invalid port '{port}' in '{spec}': ports are numbers from 1 to 65535")]
    Port {
        /// The offending part.
        port: String,
        /// The whole mapping.
        spec: String,
    },
    /// The host address is not an IPv4 address.
    #[error("invalid host address '{addr}' in '{spec}': only IPv4 addresses are supported")]
    HostIp {
        /// The offending part.
        addr: String,
        /// The whole mapping.
        spec: String,
    },
    /// The protocol is neither tcp nor udp.
    #[error("invalid protocol '{0}': use tcp or udp")]
    Protocol(String),
}

/// Transport protocol of a published port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    /// TCP (the default, as in Docker).
    Tcp,
    /// UDP.
    Udp,
}

impl Protocol {
    /// The name nftables uses (`tcp`, `udp`).
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
        }
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Protocol {
    type Err = PortError;
    fn from_str(s: &str) -> Result<Self, PortError> {
        match s.to_ascii_lowercase().as_str() {
            "tcp" => Ok(Protocol::Tcp),
            "udp" => Ok(Protocol::Udp),
            _ => Err(PortError::Protocol(s.to_string())),
        }
    }
}

/// One published port: traffic to `host_ip:host_port` goes to the container's
/// `container_port`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct PortMapping {
    /// Only traffic to this host address is forwarded; `None` means every
    /// local address (Docker's `0.0.0.0`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_ip: Option<Ipv4Addr>,
    /// Port on the host.
    pub host_port: u16,
    /// Port in the container.
    pub container_port: u16,
    /// Transport protocol.
    pub protocol: Protocol,
}

fn port(text: &str, spec: &str) -> Result<u16, PortError> {
    match text.parse::<u16>() {
        Ok(p) if p > 0 => Ok(p),
        _ => Err(PortError::Port {
            port: text.to_string(),
            spec: spec.to_string(),
        }),
    }
}

impl FromStr for PortMapping {
    type Err = PortError;

    /// Parses Docker's `-p` syntax. A bare container port (`-p 80`, meaning
    /// "any free host port") and port ranges are not supported.
    fn from_str(spec: &str) -> Result<Self, PortError> {
        let (ports, protocol) = match spec.rsplit_once('/') {
            Some((p, proto)) => (p, proto.parse()?),
            None => (spec, Protocol::Tcp),
        };
        let parts: Vec<&str> = ports.split(':').collect();
        let (host_ip, host, container) = match parts.as_slice() {
            [host, container] => (None, *host, *container),
            [ip, host, container] => {
                let ip = ip.trim_start_matches('[').trim_end_matches(']');
                let addr = if ip.is_empty() || ip == "0.0.0.0" {
                    None
                } else {
                    Some(ip.parse::<Ipv4Addr>().map_err(|_| PortError::HostIp {
                        addr: ip.to_string(),
                        spec: spec.to_string(),
                    })?)
                };
                (addr, *host, *container)
            }
            _ => return Err(PortError::Syntax(spec.to_string())),
        };
        Ok(PortMapping {
            host_ip,
            host_port: port(host, spec)?,
            container_port: port(container, spec)?,
            protocol,
        })
    }
}

impl fmt::Display for PortMapping {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ip = self.host_ip.unwrap_or(Ipv4Addr::UNSPECIFIED);
        write!(
            f,
            "{ip}:{}:{}/{}",
            self.host_port, self.container_port, self.protocol
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_docker_forms() {
        let p: PortMapping = "8080:80".parse().unwrap();
        assert_eq!(
            p,
            PortMapping {
                host_ip: None,
                host_port: 8080,
                container_port: 80,
                protocol: Protocol::Tcp
            }
        );
        let p: PortMapping = "127.0.0.1:5353:53/udp".parse().unwrap();
        assert_eq!(p.host_ip, Some(Ipv4Addr::LOCALHOST));
        assert_eq!(p.protocol, Protocol::Udp);
        let p: PortMapping = "0.0.0.0:1:2/TCP".parse().unwrap();
        assert_eq!(p.host_ip, None);
        assert_eq!(p.to_string(), "0.0.0.0:1:2/tcp");
    }

    #[test]
    fn rejects_bad_forms() {
        assert!(matches!(
            "80".parse::<PortMapping>(),
            Err(PortError::Syntax(_))
        ));
        assert!(matches!(
            "0:80".parse::<PortMapping>(),
            Err(PortError::Port { .. })
        ));
        assert!(matches!(
            "70000:80".parse::<PortMapping>(),
            Err(PortError::Port { .. })
        ));
        assert!(matches!(
            "80:80/sctp".parse::<PortMapping>(),
            Err(PortError::Protocol(_))
        ));
        assert!(matches!(
            "::1:80:80".parse::<PortMapping>(),
            Err(PortError::Syntax(_))
        ));
        assert!(matches!(
            "host:80:80".parse::<PortMapping>(),
            Err(PortError::HostIp { .. })
        ));
    }
}
