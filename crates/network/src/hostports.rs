//! Host ports: which ones are free, and choosing them for `-p 80`, `-P` and
//! host port ranges (what Docker's port allocator does).
//!
//! A host port is taken when skiff already publishes it (an element of
//! skiff's nftables maps) or when a host process has bound it. The first is
//! read from the table, the second asked of the kernel by binding the port
//! for a moment ([`HostPorts`]). Once published, the map element is what
//! keeps the port allocated for as long as the container is attached.

use std::collections::BTreeSet;
use std::net::{Ipv4Addr, SocketAddrV4, TcpListener, UdpSocket};
use std::sync::Mutex;

use crate::ports::{PortMapping, PortSpec, Protocol};

/// Docker's ephemeral range when the kernel's cannot be read.
pub const DEFAULT_EPHEMERAL: (u16, u16) = (49153, 65535);

/// A host port that cannot be published (Docker's wording, so that scripts
/// matching Docker's errors keep working).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HostPortError {
    /// Another container publishes it.
    #[error("driver failed programming external connectivity on endpoint {endpoint}: Bind for {addr}:{port} failed: port is already allocated")]
    Allocated {
        /// The container (Docker's endpoint name).
        endpoint: String,
        /// Host address.
        addr: Ipv4Addr,
        /// Host port.
        port: u16,
    },
    /// A host process has bound it.
    #[error("driver failed programming external connectivity on endpoint {endpoint}: Error starting userland proxy: listen {protocol}4 {addr}:{port}: bind: address already in use")]
    InUse {
        /// The container.
        endpoint: String,
        /// Transport protocol.
        protocol: Protocol,
        /// Host address.
        addr: Ipv4Addr,
        /// Host port.
        port: u16,
    },
    /// No port of the range is free.
    #[error("driver failed programming external connectivity on endpoint {endpoint}: all ports from range {start}-{end} are allocated ({protocol} on {addr}); free one or choose another range")]
    Exhausted {
        /// The container.
        endpoint: String,
        /// Transport protocol.
        protocol: Protocol,
        /// Host address.
        addr: Ipv4Addr,
        /// First port of the range.
        start: u16,
        /// Last port of the range.
        end: u16,
    },
}

/// Asks the host whether a port is free for a new listener.
pub trait HostPorts: Send + Sync {
    /// True when nothing on the host has bound `addr:port` for `protocol`
    /// (for `0.0.0.0`: on any address).
    fn bindable(&self, addr: Ipv4Addr, protocol: Protocol, port: u16) -> bool;
}

/// The kernel's answer: binds the port and lets it go at once.
#[derive(Debug, Clone, Copy, Default)]
pub struct SocketHostPorts;

impl HostPorts for SocketHostPorts {
    fn bindable(&self, addr: Ipv4Addr, protocol: Protocol, port: u16) -> bool {
        let at = SocketAddrV4::new(addr, port);
        // A TcpListener sets SO_REUSEADDR, so connections in TIME_WAIT do not
        // count, but listeners do; UDP sockets conflict with any bound one.
        match protocol {
            Protocol::Tcp => TcpListener::bind(at).is_ok(),
            Protocol::Udp => UdpSocket::bind(at).is_ok(),
        }
    }
}

/// An in-memory host for tests: ports marked busy are bound by "someone".
#[derive(Debug, Default)]
pub struct FakeHostPorts {
    busy: Mutex<BTreeSet<(Protocol, u16)>>,
}

impl FakeHostPorts {
    /// Marks `port` bound by a host process on every address.
    pub fn bind(&self, protocol: Protocol, port: u16) {
        self.busy.lock().unwrap().insert((protocol, port));
    }
}

impl HostPorts for FakeHostPorts {
    fn bindable(&self, _addr: Ipv4Addr, protocol: Protocol, port: u16) -> bool {
        !self.busy.lock().unwrap().contains(&(protocol, port))
    }
}

/// Parses `net.ipv4.ip_local_port_range` (`"32768\t60999"`), which Docker
/// also uses for its dynamic ports.
pub fn parse_ephemeral(text: &str) -> Option<(u16, u16)> {
    let mut it = text.split_whitespace().map(str::parse::<u16>);
    match (it.next(), it.next()) {
        (Some(Ok(a)), Some(Ok(b))) if a > 0 && a <= b => Some((a, b)),
        _ => None,
    }
}

/// Whether two mappings would receive the same packets: same protocol and
/// port, and the same address or one of them on every address.
fn overlaps(a: &PortMapping, b: &PortMapping) -> bool {
    a.protocol == b.protocol
        && a.host_port == b.host_port
        && (a.host_ip.is_none() || b.host_ip.is_none() || a.host_ip == b.host_ip)
}

/// Resolves `specs` to mappings: fixed ports must be free, the others get a
/// free port of their range, tried from a random point so that concurrent
/// skiff roots rarely race for the same one. `published` are the mappings
/// already in skiff's table; `ephemeral` is the range for "any port".
pub fn allocate(
    endpoint: &str,
    specs: &[PortSpec],
    published: &[PortMapping],
    ephemeral: (u16, u16),
    host: &dyn HostPorts,
) -> Result<Vec<PortMapping>, HostPortError> {
    let mut chosen: Vec<PortMapping> = Vec::with_capacity(specs.len());
    for spec in specs {
        let addr = spec.host_ip.unwrap_or(Ipv4Addr::UNSPECIFIED);
        let candidate = |port: u16| PortMapping {
            host_ip: spec.host_ip,
            host_port: port,
            container_port: spec.container_port,
            protocol: spec.protocol,
        };
        let allocated = |m: &PortMapping| {
            published
                .iter()
                .chain(chosen.iter())
                .any(|other| overlaps(m, other))
        };
        if let Some(port) = spec.fixed_host_port() {
            let m = candidate(port);
            if allocated(&m) {
                return Err(HostPortError::Allocated {
                    endpoint: endpoint.to_string(),
                    addr,
                    port,
                });
            }
            if !host.bindable(addr, spec.protocol, port) {
                return Err(HostPortError::InUse {
                    endpoint: endpoint.to_string(),
                    protocol: spec.protocol,
                    addr,
                    port,
                });
            }
            chosen.push(m);
            continue;
        }
        let (start, end) = spec.host_ports(ephemeral);
        let size = u32::from(end - start) + 1;
        let offset = rand::random::<u32>() % size;
        let found = (0..size)
            .map(|i| candidate((u32::from(start) + (offset + i) % size) as u16))
            .find(|m| !allocated(m) && host.bindable(addr, spec.protocol, m.host_port));
        match found {
            Some(m) => chosen.push(m),
            None => {
                return Err(HostPortError::Exhausted {
                    endpoint: endpoint.to_string(),
                    protocol: spec.protocol,
                    addr,
                    start,
                    end,
                })
            }
        }
    }
    Ok(chosen)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(s: &str) -> Vec<PortSpec> {
        PortSpec::parse_publish(s).unwrap()
    }

    fn mapping(s: &str) -> PortMapping {
        s.parse().unwrap()
    }

    #[test]
    fn any_port_is_free_and_in_range() {
        let host = FakeHostPorts::default();
        let taken = [mapping("40000:1")];
        host.bind(Protocol::Tcp, 40001);
        for _ in 0..50 {
            let got = allocate("c", &spec("80"), &taken, (40000, 40002), &host).unwrap();
            assert_eq!(got.len(), 1);
            assert_eq!(got[0].host_port, 40002);
            assert_eq!(got[0].container_port, 80);
        }
        // UDP is another space.
        let got = allocate("c", &spec("53/udp"), &taken, (40000, 40000), &host).unwrap();
        assert_eq!(got[0].host_port, 40000);
        assert!(matches!(
            allocate("c", &spec("80"), &taken, (40000, 40001), &host),
            Err(HostPortError::Exhausted { .. })
        ));
    }

    #[test]
    fn one_request_never_picks_a_port_twice() {
        let host = FakeHostPorts::default();
        let mut specs = spec("80-81");
        specs.extend(spec("8000-8001:90"));
        specs.extend(spec("8000-8001:91"));
        let got = allocate("c", &specs, &[], (40000, 40001), &host).unwrap();
        let ports: BTreeSet<u16> = got.iter().map(|m| m.host_port).collect();
        assert_eq!(ports, BTreeSet::from([40000, 40001, 8000, 8001]));
        assert!(allocate("c", &spec("8080:80"), &[], (1, 1), &host).is_ok());
        let mut twice = spec("8080:80");
        twice.extend(spec("8080:81"));
        assert!(matches!(
            allocate("c", &twice, &[], (1, 1), &host),
            Err(HostPortError::Allocated { port: 8080, .. })
        ));
    }

    #[test]
    fn fixed_ports_conflict_like_docker() {
        let host = FakeHostPorts::default();
        let taken = [mapping("127.0.0.1:8080:80")];
        // Every address overlaps one address; another address does not.
        let err = allocate("web", &spec("8080:80"), &taken, (1, 1), &host).unwrap_err();
        assert_eq!(
            err.to_string(),
            "driver failed programming external connectivity on endpoint web: \
             Bind for 0.0.0.0:8080 failed: port is already allocated"
        );
        assert!(allocate("web", &spec("10.0.0.1:8080:80"), &taken, (1, 1), &host).is_ok());
        assert!(allocate("web", &spec("8080:80/udp"), &taken, (1, 1), &host).is_ok());
        host.bind(Protocol::Tcp, 9090);
        let err = allocate("web", &spec("9090:80"), &[], (1, 1), &host).unwrap_err();
        assert!(
            err.to_string()
                .ends_with("listen tcp4 0.0.0.0:9090: bind: address already in use"),
            "{err}"
        );
    }

    #[test]
    fn ephemeral_range_parses() {
        assert_eq!(parse_ephemeral("32768\t60999\n"), Some((32768, 60999)));
        assert_eq!(parse_ephemeral("0"), None);
        assert_eq!(parse_ephemeral("9 1"), None);
    }

    #[test]
    fn the_real_host_sees_listeners() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        assert!(!SocketHostPorts.bindable(Ipv4Addr::UNSPECIFIED, Protocol::Tcp, port));
        assert!(!SocketHostPorts.bindable(Ipv4Addr::LOCALHOST, Protocol::Tcp, port));
        drop(l);
        assert!(SocketHostPorts.bindable(Ipv4Addr::LOCALHOST, Protocol::Tcp, port));
    }
}
