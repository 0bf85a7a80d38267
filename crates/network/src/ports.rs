//! Published ports: `-p [hostip:][hostport[-end]:]containerport[-end][/tcp|udp]`,
//! as requested ([`PortSpec`]) and as programmed ([`PortMapping`]).

use std::fmt;
use std::net::Ipv4Addr;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// A `-p` value that does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PortError {
    /// The text is not `[hostip:][hostport:]containerport[/proto]`.
    #[error("invalid port mapping '{0}': expected [hostip:][hostport[-end]:]containerport[-end][/tcp|udp]")]
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
    /// A container port range with a host range of another length (Docker's
    /// message; a host range with one container port is a range to pick from).
    #[error("invalid ranges specified for container and host Ports: {container} and {host}")]
    Ranges {
        /// The container part.
        container: String,
        /// The host part.
        host: String,
    },
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

    /// Parses one fixed mapping, `[hostip:]hostport:containerport[/proto]`
    /// (see [`PortSpec::parse_publish`] for everything `-p` accepts).
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

/// A published port as requested (`-p`, `-P`): the host port may still have
/// to be chosen. [`crate::Networking::attach`] resolves it to a [`PortMapping`].
///
/// Serialised like a [`PortMapping`], with `host_port` 0 for "any free port"
/// (Docker's empty `HostPort`), so records written before ranges existed still read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct PortSpec {
    /// Host address; `None` is every local address (`0.0.0.0`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_ip: Option<Ipv4Addr>,
    /// The host port, or the first of a range to pick from; 0: any free
    /// port of the host's ephemeral range.
    pub host_port: u16,
    /// The last host port of a range to pick a free one from (`-p 8000-8010:80`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_port_end: Option<u16>,
    /// Port in the container.
    pub container_port: u16,
    /// Transport protocol.
    pub protocol: Protocol,
}

impl From<PortMapping> for PortSpec {
    fn from(m: PortMapping) -> Self {
        PortSpec {
            host_ip: m.host_ip,
            host_port: m.host_port,
            host_port_end: None,
            container_port: m.container_port,
            protocol: m.protocol,
        }
    }
}

impl PortSpec {
    /// `container_port/protocol` on any free host port of every address (`-P`, `-p 80`).
    pub fn any(container_port: u16, protocol: Protocol) -> Self {
        PortSpec {
            host_ip: None,
            host_port: 0,
            host_port_end: None,
            container_port,
            protocol,
        }
    }

    /// The one host port asked for, if it is not chosen from a range.
    pub fn fixed_host_port(&self) -> Option<u16> {
        (self.host_port != 0 && self.host_port_end.is_none()).then_some(self.host_port)
    }

    /// The host ports acceptable, given the host's ephemeral range for "any".
    pub fn host_ports(&self, ephemeral: (u16, u16)) -> (u16, u16) {
        match (self.host_port, self.host_port_end) {
            (0, _) => ephemeral,
            (start, Some(end)) => (start, end),
            (port, None) => (port, port),
        }
    }

    /// The host port as Docker's `HostConfig.PortBindings` shows it: `""`,
    /// `"8080"` or `"8000-8010"`.
    pub fn host_port_text(&self) -> String {
        match (self.host_port, self.host_port_end) {
            (0, _) => String::new(),
            (start, Some(end)) => format!("{start}-{end}"),
            (port, None) => port.to_string(),
        }
    }

    /// Parses one `-p` value, Docker's grammar:
    /// `[hostip:][hostport[-end]:]containerport[-end][/proto]`. A container
    /// range gives one spec per port, paired with an equally long host range
    /// or with any free ports; a host range with one container port is a
    /// range to pick a free port from.
    pub fn parse_publish(spec: &str) -> Result<Vec<PortSpec>, PortError> {
        let (ports, protocol) = match spec.rsplit_once('/') {
            Some((p, proto)) => (p, proto.parse()?),
            None => (spec, Protocol::Tcp),
        };
        let parts: Vec<&str> = ports.split(':').collect();
        let (ip, host, container) = match parts.as_slice() {
            [container] => ("", "", *container),
            [host, container] => ("", *host, *container),
            [ip, host, container] => (*ip, *host, *container),
            _ => return Err(PortError::Syntax(spec.to_string())),
        };
        let ip = ip.trim_start_matches('[').trim_end_matches(']');
        let host_ip = if ip.is_empty() || ip == "0.0.0.0" {
            None
        } else {
            Some(ip.parse::<Ipv4Addr>().map_err(|_| PortError::HostIp {
                addr: ip.to_string(),
                spec: spec.to_string(),
            })?)
        };
        let (c_start, c_end) = range(container, spec)?;
        let host_range = if host.is_empty() {
            None
        } else {
            Some(range(host, spec)?)
        };
        let count = c_end - c_start;
        let mut out = Vec::new();
        for i in 0..=count {
            let (host_port, host_port_end) = match host_range {
                None => (0, None),
                Some((h_start, h_end)) if h_end - h_start == count => (h_start + i, None),
                Some((h_start, h_end)) if count == 0 => (h_start, Some(h_end)),
                Some(_) => {
                    return Err(PortError::Ranges {
                        container: container.to_string(),
                        host: host.to_string(),
                    })
                }
            };
            out.push(PortSpec {
                host_ip,
                host_port,
                host_port_end,
                container_port: c_start + i,
                protocol,
            });
        }
        Ok(out)
    }
}

/// `PORT[-END][/PROTO]` (`--expose`, and the image's `EXPOSE` keys).
pub fn parse_exposed(spec: &str) -> Result<Vec<(u16, Protocol)>, PortError> {
    let (ports, protocol) = match spec.rsplit_once('/') {
        Some((p, proto)) => (p, proto.parse()?),
        None => (spec, Protocol::Tcp),
    };
    let (start, end) = range(ports, spec)?;
    Ok((start..=end).map(|p| (p, protocol)).collect())
}

/// `PORT` or `START-END`, with `START <= END`.
fn range(text: &str, spec: &str) -> Result<(u16, u16), PortError> {
    match text.split_once('-') {
        Some((a, b)) => {
            let (a, b) = (port(a, spec)?, port(b, spec)?);
            if a > b {
                return Err(PortError::Port {
                    port: text.to_string(),
                    spec: spec.to_string(),
                });
            }
            Ok((a, b))
        }
        None => {
            let p = port(text, spec)?;
            Ok((p, p))
        }
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

    fn specs(s: &str) -> Vec<PortSpec> {
        PortSpec::parse_publish(s).unwrap()
    }

    #[test]
    fn publish_accepts_docker_forms() {
        assert_eq!(specs("80"), vec![PortSpec::any(80, Protocol::Tcp)]);
        assert_eq!(specs("53/udp"), vec![PortSpec::any(53, Protocol::Udp)]);
        let exact: PortSpec = "8080:80".parse::<PortMapping>().unwrap().into();
        assert_eq!(specs("8080:80"), vec![exact]);
        assert_eq!(exact.fixed_host_port(), Some(8080));
        let r = specs("127.0.0.1:8000-8001:80-81/tcp");
        assert_eq!(r.len(), 2);
        assert_eq!((r[0].host_port, r[0].container_port), (8000, 80));
        assert_eq!((r[1].host_port, r[1].container_port), (8001, 81));
        assert!(r.iter().all(|p| p.host_ip == Some(Ipv4Addr::LOCALHOST)));
        // Any host port, on one address.
        let r = specs("127.0.0.1::80");
        assert_eq!(r[0].host_port, 0);
        assert_eq!(r[0].host_ip, Some(Ipv4Addr::LOCALHOST));
        // A container range on any ports.
        assert_eq!(specs("80-82").len(), 3);
        // A host range to pick from for one container port.
        let r = specs("8000-8010:80");
        assert_eq!(r.len(), 1);
        assert_eq!(r[0].host_ports((1, 2)), (8000, 8010));
        assert_eq!(r[0].fixed_host_port(), None);
        assert_eq!(r[0].host_port_text(), "8000-8010");
        assert_eq!(specs("80")[0].host_ports((49153, 65535)), (49153, 65535));
    }

    #[test]
    fn publish_rejects_bad_ranges() {
        assert_eq!(
            PortSpec::parse_publish("8000-8001:80-82")
                .unwrap_err()
                .to_string(),
            "invalid ranges specified for container and host Ports: 80-82 and 8000-8001"
        );
        assert!(matches!(
            PortSpec::parse_publish("8000:80-81"),
            Err(PortError::Ranges { .. })
        ));
        assert!(matches!(
            PortSpec::parse_publish("90-80"),
            Err(PortError::Port { .. })
        ));
        assert!(matches!(
            PortSpec::parse_publish("a:b:c:d"),
            Err(PortError::Syntax(_))
        ));
        assert!(matches!(
            PortSpec::parse_publish("notaport"),
            Err(PortError::Port { .. })
        ));
    }

    #[test]
    fn old_records_still_read() {
        let old = r#"{"host_port":8080,"container_port":80,"protocol":"tcp"}"#;
        let spec: PortSpec = serde_json::from_str(old).unwrap();
        assert_eq!(spec.fixed_host_port(), Some(8080));
        assert_eq!(
            parse_exposed("8000-8001/udp").unwrap(),
            vec![(8000, Protocol::Udp), (8001, Protocol::Udp)]
        );
    }
}
