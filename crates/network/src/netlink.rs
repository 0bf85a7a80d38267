//! Links, addresses and routes through rtnetlink, behind the [`Netlink`] trait.
//!
//! The real implementation ([`RtNetlink`]) speaks rtnetlink synchronously
//! with `netlink-packet-route` messages over a `netlink-sys` socket: no async
//! runtime, no `ip` processes, a handful of round trips per container. Work
//! inside a container's namespace happens on a short-lived thread that
//! joined it ([`crate::netns::run_in`]), because a netlink socket talks to
//! the namespace it was opened in.

use std::collections::BTreeMap;
use std::fs::File;
use std::io;
use std::net::{IpAddr, Ipv4Addr};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use ipnet::Ipv4Net;
use netlink_packet_core::{
    NetlinkHeader, NetlinkMessage, NetlinkPayload, NLM_F_ACK, NLM_F_CREATE, NLM_F_DUMP, NLM_F_EXCL,
    NLM_F_REPLACE, NLM_F_REQUEST,
};
use netlink_packet_route::address::{AddressAttribute, AddressMessage};
use netlink_packet_route::link::{
    InfoBridgePort, InfoData, InfoKind, InfoPortData, InfoPortKind, InfoVeth, LinkAttribute,
    LinkFlags, LinkInfo, LinkMessage,
};
use netlink_packet_route::route::{
    RouteAddress, RouteAttribute, RouteHeader, RouteMessage, RouteProtocol, RouteScope, RouteType,
};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};
use netlink_sys::protocols::NETLINK_ROUTE;
use netlink_sys::{Socket, SocketAddr};

use crate::netns::{self, NetnsError};

/// Errors of link, address and route operations.
#[derive(Debug, thiserror::Error)]
pub enum NetlinkError {
    /// A netlink request failed.
    #[error("netlink: {op}: {source}")]
    Request {
        /// What was asked, naming the device.
        op: String,
        /// The kernel's answer.
        source: io::Error,
    },
    /// Entering the container's namespace failed.
    #[error(transparent)]
    Netns(#[from] NetnsError),
    /// A device that must exist does not.
    #[error("network device {0} does not exist")]
    NoDevice(String),
}

fn request_error(op: impl Into<String>) -> impl FnOnce(io::Error) -> NetlinkError {
    let op = op.into();
    move |source| NetlinkError::Request { op, source }
}

/// A network device as listed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    /// Interface index.
    pub index: u32,
    /// Interface name.
    pub name: String,
    /// Index of the bridge it is a port of.
    pub master: Option<u32>,
    /// Administratively up.
    pub up: bool,
}

/// A bridge and the address it carries (the network's gateway).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BridgeSpec {
    /// Device name.
    pub name: String,
    /// Fixed MAC address, so the bridge's address does not change as ports come and go.
    pub mac: [u8; 6],
    /// Gateway address.
    pub address: Ipv4Addr,
    /// Prefix length of the subnet.
    pub prefix_len: u8,
}

/// A veth pair joining a container's namespace to a bridge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VethSpec {
    /// Host-side device name, a port of `bridge`.
    pub host_name: String,
    /// Bridge device name.
    pub bridge: String,
    /// The container's network namespace (a `/proc/PID/ns/net` or bind mount).
    pub netns: PathBuf,
    /// Container-side device name (`eth0`).
    pub name: String,
    /// Container-side MAC address.
    pub mac: [u8; 6],
    /// Container address.
    pub address: Ipv4Addr,
    /// Prefix length of the subnet.
    pub prefix_len: u8,
    /// Default route; `None` for none (internal networks).
    pub gateway: Option<Ipv4Addr>,
}

/// What an interface inside a container looks like, for CNI CHECK.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InterfaceState {
    /// Administratively up.
    pub up: bool,
    /// MAC address.
    pub mac: Vec<u8>,
    /// IPv4 addresses with prefix lengths.
    pub addresses: Vec<(Ipv4Addr, u8)>,
    /// Gateway of the namespace's default route through this interface.
    pub default_gateway: Option<Ipv4Addr>,
}

/// The link, address and route operations the networking layer needs.
pub trait Netlink: Send + Sync {
    /// Device `name` in the caller's namespace.
    fn link(&self, name: &str) -> Result<Option<Link>, NetlinkError>;
    /// Every device in the caller's namespace.
    fn links(&self) -> Result<Vec<Link>, NetlinkError>;
    /// The caller's IPv4 routes (main table) with their device names.
    fn ipv4_routes(&self) -> Result<Vec<(Ipv4Net, String)>, NetlinkError>;
    /// Creates the bridge unless it exists, sets it up and gives it its address.
    fn ensure_bridge(&self, spec: &BridgeSpec) -> Result<(), NetlinkError>;
    /// Creates a veth pair with the container side in `spec.netns`, configured:
    /// `lo` up, the interface up with its address and the default route.
    fn add_veth(&self, spec: &VethSpec) -> Result<(), NetlinkError>;
    /// Deletes device `name`; `false` if it did not exist.
    fn delete_link(&self, name: &str) -> Result<bool, NetlinkError>;
    /// Interface `name` inside `netns`, if it exists.
    fn container_interface(
        &self,
        netns: &Path,
        name: &str,
    ) -> Result<Option<InterfaceState>, NetlinkError>;
}

/// One rtnetlink socket and its request sequence.
pub(crate) struct Conn {
    socket: Socket,
    seq: u32,
    buf: Vec<u8>,
}

impl Conn {
    pub(crate) fn open() -> io::Result<Conn> {
        let mut socket = Socket::new(NETLINK_ROUTE)?;
        socket.bind_auto()?;
        socket.connect(&SocketAddr::new(0, 0))?;
        Ok(Conn {
            socket,
            seq: 0,
            buf: vec![0; 1 << 16],
        })
    }

    /// Sends `msg` and collects the answers until the ACK (or DONE for dumps).
    pub(crate) fn request(
        &mut self,
        msg: RouteNetlinkMessage,
        flags: u16,
    ) -> io::Result<Vec<RouteNetlinkMessage>> {
        self.seq = self.seq.wrapping_add(1);
        let dump = flags & NLM_F_DUMP == NLM_F_DUMP;
        let mut header = NetlinkHeader::default();
        header.flags = NLM_F_REQUEST | flags | if dump { 0 } else { NLM_F_ACK };
        header.sequence_number = self.seq;
        let mut packet = NetlinkMessage::new(header, NetlinkPayload::InnerMessage(msg));
        packet.finalize();
        let mut out = vec![0; packet.buffer_len()];
        packet.serialize(&mut out);
        self.socket.send(&out, 0)?;

        let mut answers = Vec::new();
        loop {
            let n = self.socket.recv(&mut &mut self.buf[..], 0)?;
            let mut offset = 0;
            while offset < n {
                let reply =
                    NetlinkMessage::<RouteNetlinkMessage>::deserialize(&self.buf[offset..n])
                        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))?;
                let len = reply.header.length as usize;
                if reply.header.sequence_number == self.seq {
                    match reply.payload {
                        NetlinkPayload::Error(e) => match e.code {
                            None => return Ok(answers),
                            Some(code) => return Err(io::Error::from_raw_os_error(-code.get())),
                        },
                        NetlinkPayload::Done(_) => return Ok(answers),
                        NetlinkPayload::InnerMessage(m) => answers.push(m),
                        _ => {}
                    }
                }
                if len == 0 {
                    break;
                }
                offset += len;
            }
        }
    }

    fn link_by_name(&mut self, name: &str) -> io::Result<Option<LinkMessage>> {
        let mut msg = LinkMessage::default();
        msg.attributes.push(LinkAttribute::IfName(name.to_string()));
        match self.request(RouteNetlinkMessage::GetLink(msg), 0) {
            Ok(answers) => Ok(answers.into_iter().find_map(|m| match m {
                RouteNetlinkMessage::NewLink(l) => Some(l),
                _ => None,
            })),
            Err(e) if e.raw_os_error() == Some(libc::ENODEV) => Ok(None),
            Err(e) => Err(e),
        }
    }

    fn set_up(&mut self, index: u32) -> io::Result<()> {
        let mut msg = LinkMessage::default();
        msg.header.index = index;
        msg.header.flags = LinkFlags::Up;
        msg.header.change_mask = LinkFlags::Up;
        self.request(RouteNetlinkMessage::SetLink(msg), 0).map(drop)
    }

    fn add_address(&mut self, index: u32, addr: Ipv4Addr, prefix_len: u8) -> io::Result<()> {
        let mut msg = AddressMessage::default();
        msg.header.family = AddressFamily::Inet;
        msg.header.prefix_len = prefix_len;
        msg.header.index = index;
        msg.attributes
            .push(AddressAttribute::Local(IpAddr::V4(addr)));
        msg.attributes
            .push(AddressAttribute::Address(IpAddr::V4(addr)));
        if prefix_len < 31 {
            let net = Ipv4Net::new(addr, prefix_len).expect("valid prefix");
            msg.attributes
                .push(AddressAttribute::Broadcast(net.broadcast()));
        }
        self.request(
            RouteNetlinkMessage::NewAddress(msg),
            NLM_F_CREATE | NLM_F_REPLACE,
        )
        .map(drop)
    }
}

fn link_from(msg: &LinkMessage) -> Link {
    let mut link = Link {
        index: msg.header.index,
        name: String::new(),
        master: None,
        up: msg.header.flags.contains(LinkFlags::Up),
    };
    for attr in &msg.attributes {
        match attr {
            LinkAttribute::IfName(n) => link.name = n.clone(),
            LinkAttribute::Controller(m) => link.master = Some(*m),
            _ => {}
        }
    }
    link
}

/// The real rtnetlink.
#[derive(Debug, Default, Clone, Copy)]
pub struct RtNetlink;

impl RtNetlink {
    fn conn(op: &str) -> Result<Conn, NetlinkError> {
        Conn::open().map_err(request_error(format!("{op}: opening a netlink socket")))
    }
}

impl Netlink for RtNetlink {
    fn link(&self, name: &str) -> Result<Option<Link>, NetlinkError> {
        let op = format!("getting link {name}");
        let mut conn = Self::conn(&op)?;
        Ok(conn
            .link_by_name(name)
            .map_err(request_error(op))?
            .as_ref()
            .map(link_from))
    }

    fn links(&self) -> Result<Vec<Link>, NetlinkError> {
        let mut conn = Self::conn("listing links")?;
        let answers = conn
            .request(
                RouteNetlinkMessage::GetLink(LinkMessage::default()),
                NLM_F_DUMP,
            )
            .map_err(request_error("listing links"))?;
        Ok(answers
            .iter()
            .filter_map(|m| match m {
                RouteNetlinkMessage::NewLink(l) => Some(link_from(l)),
                _ => None,
            })
            .collect())
    }

    fn ipv4_routes(&self) -> Result<Vec<(Ipv4Net, String)>, NetlinkError> {
        let names: BTreeMap<u32, String> = self
            .links()?
            .into_iter()
            .map(|l| (l.index, l.name))
            .collect();
        let mut conn = Self::conn("listing routes")?;
        let mut msg = RouteMessage::default();
        msg.header.address_family = AddressFamily::Inet;
        let answers = conn
            .request(RouteNetlinkMessage::GetRoute(msg), NLM_F_DUMP)
            .map_err(request_error("listing routes"))?;
        let mut out = Vec::new();
        for m in answers {
            let RouteNetlinkMessage::NewRoute(r) = m else {
                continue;
            };
            if r.header.table != RouteHeader::RT_TABLE_MAIN || r.header.kind != RouteType::Unicast {
                continue;
            }
            let mut dst = Ipv4Addr::UNSPECIFIED;
            let mut dev = String::new();
            for attr in &r.attributes {
                match attr {
                    RouteAttribute::Destination(RouteAddress::Inet(a)) => dst = *a,
                    RouteAttribute::Oif(i) => dev = names.get(i).cloned().unwrap_or_default(),
                    _ => {}
                }
            }
            if let Ok(net) = Ipv4Net::new(dst, r.header.destination_prefix_length) {
                out.push((net, dev));
            }
        }
        Ok(out)
    }

    fn ensure_bridge(&self, spec: &BridgeSpec) -> Result<(), NetlinkError> {
        let op = format!("creating bridge {}", spec.name);
        let mut conn = Self::conn(&op)?;
        let existing = conn
            .link_by_name(&spec.name)
            .map_err(request_error(op.clone()))?;
        let link = match existing {
            Some(l) => link_from(&l),
            None => {
                let mut msg = LinkMessage::default();
                msg.header.flags = LinkFlags::Up;
                msg.header.change_mask = LinkFlags::Up;
                msg.attributes
                    .push(LinkAttribute::IfName(spec.name.clone()));
                msg.attributes
                    .push(LinkAttribute::Address(spec.mac.to_vec()));
                msg.attributes
                    .push(LinkAttribute::LinkInfo(vec![LinkInfo::Kind(
                        InfoKind::Bridge,
                    )]));
                match conn.request(RouteNetlinkMessage::NewLink(msg), NLM_F_CREATE | NLM_F_EXCL) {
                    // Another process created it first.
                    Ok(_) => {}
                    Err(e) if e.raw_os_error() == Some(libc::EEXIST) => {}
                    Err(e) => return Err(request_error(op)(e)),
                }
                conn.link_by_name(&spec.name)
                    .map_err(request_error(op))?
                    .as_ref()
                    .map(link_from)
                    .ok_or_else(|| NetlinkError::NoDevice(spec.name.clone()))?
            }
        };
        if !link.up {
            conn.set_up(link.index)
                .map_err(request_error(format!("setting {} up", spec.name)))?;
        }
        conn.add_address(link.index, spec.address, spec.prefix_len)
            .map_err(request_error(format!(
                "adding {}/{} to {}",
                spec.address, spec.prefix_len, spec.name
            )))
    }

    fn add_veth(&self, spec: &VethSpec) -> Result<(), NetlinkError> {
        let op = format!("creating veth {} on {}", spec.host_name, spec.bridge);
        let mut conn = Self::conn(&op)?;
        let bridge = conn
            .link_by_name(&spec.bridge)
            .map_err(request_error(op.clone()))?
            .ok_or_else(|| NetlinkError::NoDevice(spec.bridge.clone()))?;
        let netns = File::open(&spec.netns).map_err(|source| NetnsError::Open {
            path: spec.netns.clone(),
            source,
        })?;

        // The peer is created directly inside the container's namespace under
        // its final name, so no temporary name can clash on the host.
        // It is set up from inside: asking for IFF_UP here fails with
        // ENOTCONN, as the kernel opens the peer before pairing it.
        let mut peer = LinkMessage::default();
        peer.attributes
            .push(LinkAttribute::IfName(spec.name.clone()));
        peer.attributes
            .push(LinkAttribute::Address(spec.mac.to_vec()));
        peer.attributes
            .push(LinkAttribute::NetNsFd(netns.as_raw_fd()));
        let mut msg = LinkMessage::default();
        msg.header.flags = LinkFlags::Up;
        msg.header.change_mask = LinkFlags::Up;
        msg.attributes
            .push(LinkAttribute::IfName(spec.host_name.clone()));
        msg.attributes
            .push(LinkAttribute::Controller(bridge.header.index));
        msg.attributes.push(LinkAttribute::LinkInfo(vec![
            LinkInfo::Kind(InfoKind::Veth),
            LinkInfo::Data(InfoData::Veth(InfoVeth::Peer(peer))),
        ]));
        let create = |conn: &mut Conn| {
            conn.request(
                RouteNetlinkMessage::NewLink(msg.clone()),
                NLM_F_CREATE | NLM_F_EXCL,
            )
        };
        match create(&mut conn) {
            Ok(_) => {}
            // A leftover of an interrupted setup of the same container.
            Err(e) if e.raw_os_error() == Some(libc::EEXIST) => {
                self.delete_link(&spec.host_name)?;
                create(&mut conn).map_err(request_error(op.clone()))?;
            }
            Err(e) => return Err(request_error(op)(e)),
        }
        drop(netns);
        // Hairpin mode, so that a container reaches its own published port:
        // without it the kernel drops the DNATed packet that goes back out
        // the port it came in on.
        let mut port = LinkMessage::default();
        port.attributes
            .push(LinkAttribute::IfName(spec.host_name.clone()));
        port.attributes.push(LinkAttribute::LinkInfo(vec![
            LinkInfo::PortKind(InfoPortKind::Bridge),
            LinkInfo::PortData(InfoPortData::BridgePort(vec![InfoBridgePort::HairpinMode(
                true,
            )])),
        ]));
        if let Err(e) = conn.request(RouteNetlinkMessage::NewLink(port), 0) {
            let _ = self.delete_link(&spec.host_name);
            return Err(request_error(format!(
                "setting hairpin mode on {}",
                spec.host_name
            ))(e));
        }

        let inside = netns::run_in(&spec.netns, || -> Result<(), NetlinkError> {
            let op = |what: &str| format!("{what} in {}", spec.netns.display());
            let mut conn = Conn::open().map_err(request_error(op("opening netlink")))?;
            for name in ["lo", spec.name.as_str()] {
                let link = conn
                    .link_by_name(name)
                    .map_err(request_error(op(&format!("getting {name}"))))?
                    .ok_or_else(|| NetlinkError::NoDevice(name.to_string()))?;
                if !link.header.flags.contains(LinkFlags::Up) {
                    conn.set_up(link.header.index)
                        .map_err(request_error(op(&format!("setting {name} up"))))?;
                }
                if name == "lo" {
                    continue;
                }
                conn.add_address(link.header.index, spec.address, spec.prefix_len)
                    .map_err(request_error(op(&format!(
                        "adding {} to {name}",
                        spec.address
                    ))))?;
                let Some(gateway) = spec.gateway else {
                    continue;
                };
                let mut route = RouteMessage::default();
                route.header.address_family = AddressFamily::Inet;
                route.header.table = RouteHeader::RT_TABLE_MAIN;
                route.header.protocol = RouteProtocol::Boot;
                route.header.scope = RouteScope::Universe;
                route.header.kind = RouteType::Unicast;
                route
                    .attributes
                    .push(RouteAttribute::Gateway(RouteAddress::Inet(gateway)));
                route
                    .attributes
                    .push(RouteAttribute::Oif(link.header.index));
                conn.request(
                    RouteNetlinkMessage::NewRoute(route),
                    NLM_F_CREATE | NLM_F_REPLACE,
                )
                .map_err(request_error(op(&format!(
                    "adding default route via {}",
                    gateway
                ))))?;
            }
            Ok(())
        })?;
        if let Err(e) = inside {
            let _ = self.delete_link(&spec.host_name);
            return Err(e);
        }
        Ok(())
    }

    fn delete_link(&self, name: &str) -> Result<bool, NetlinkError> {
        let op = format!("deleting link {name}");
        let mut conn = Self::conn(&op)?;
        let mut msg = LinkMessage::default();
        msg.attributes.push(LinkAttribute::IfName(name.to_string()));
        match conn.request(RouteNetlinkMessage::DelLink(msg), 0) {
            Ok(_) => Ok(true),
            Err(e) if e.raw_os_error() == Some(libc::ENODEV) => Ok(false),
            Err(e) => Err(request_error(op)(e)),
        }
    }

    fn container_interface(
        &self,
        netns: &Path,
        name: &str,
    ) -> Result<Option<InterfaceState>, NetlinkError> {
        netns::run_in(netns, || -> Result<Option<InterfaceState>, NetlinkError> {
            let op = format!("inspecting {name} in {}", netns.display());
            let mut conn = Conn::open().map_err(request_error(op.clone()))?;
            let Some(link) = conn.link_by_name(name).map_err(request_error(op.clone()))? else {
                return Ok(None);
            };
            let index = link.header.index;
            let mut state = InterfaceState {
                up: link.header.flags.contains(LinkFlags::Up),
                mac: link
                    .attributes
                    .iter()
                    .find_map(|a| match a {
                        LinkAttribute::Address(m) => Some(m.clone()),
                        _ => None,
                    })
                    .unwrap_or_default(),
                addresses: Vec::new(),
                default_gateway: None,
            };
            let mut msg = AddressMessage::default();
            msg.header.family = AddressFamily::Inet;
            for m in conn
                .request(RouteNetlinkMessage::GetAddress(msg), NLM_F_DUMP)
                .map_err(request_error(op.clone()))?
            {
                let RouteNetlinkMessage::NewAddress(a) = m else {
                    continue;
                };
                if a.header.index != index {
                    continue;
                }
                for attr in &a.attributes {
                    if let AddressAttribute::Local(IpAddr::V4(ip)) = attr {
                        state.addresses.push((*ip, a.header.prefix_len));
                    }
                }
            }
            let mut msg = RouteMessage::default();
            msg.header.address_family = AddressFamily::Inet;
            for m in conn
                .request(RouteNetlinkMessage::GetRoute(msg), NLM_F_DUMP)
                .map_err(request_error(op))?
            {
                let RouteNetlinkMessage::NewRoute(r) = m else {
                    continue;
                };
                if r.header.table != RouteHeader::RT_TABLE_MAIN
                    || r.header.destination_prefix_length != 0
                    || !r.attributes.contains(&RouteAttribute::Oif(index))
                {
                    continue;
                }
                state.default_gateway = r.attributes.iter().find_map(|a| match a {
                    RouteAttribute::Gateway(RouteAddress::Inet(g)) => Some(*g),
                    _ => None,
                });
            }
            Ok(Some(state))
        })?
    }
}

/// An in-memory stand-in for tests: devices by name, container interfaces by
/// (namespace, name), and failures to inject.
#[derive(Debug, Default)]
pub struct FakeNetlink {
    state: Mutex<FakeState>,
}

#[derive(Debug, Default)]
struct FakeState {
    next_index: u32,
    /// Host devices: name to (index, master name, up).
    links: BTreeMap<String, (u32, Option<String>, bool)>,
    /// Bridge addresses.
    addresses: BTreeMap<String, (Ipv4Addr, u8)>,
    /// Container interfaces and the host veth they pair with.
    inside: BTreeMap<(PathBuf, String), (String, InterfaceState)>,
    fail_veth: bool,
}

impl FakeNetlink {
    /// Makes the next [`Netlink::add_veth`] fail.
    pub fn fail_next_veth(&self) {
        self.state.lock().unwrap().fail_veth = true;
    }

    /// Names of the host devices.
    pub fn link_names(&self) -> Vec<String> {
        self.state.lock().unwrap().links.keys().cloned().collect()
    }

    /// Number of configured container interfaces.
    pub fn container_interfaces(&self) -> usize {
        self.state.lock().unwrap().inside.len()
    }
}

impl Netlink for FakeNetlink {
    fn link(&self, name: &str) -> Result<Option<Link>, NetlinkError> {
        Ok(self.links()?.into_iter().find(|l| l.name == name))
    }

    fn links(&self) -> Result<Vec<Link>, NetlinkError> {
        let state = self.state.lock().unwrap();
        Ok(state
            .links
            .iter()
            .map(|(name, (index, master, up))| Link {
                index: *index,
                name: name.clone(),
                master: master
                    .as_ref()
                    .and_then(|m| state.links.get(m))
                    .map(|(i, _, _)| *i),
                up: *up,
            })
            .collect())
    }

    fn ipv4_routes(&self) -> Result<Vec<(Ipv4Net, String)>, NetlinkError> {
        let state = self.state.lock().unwrap();
        Ok(state
            .addresses
            .iter()
            .map(|(dev, (a, p))| (Ipv4Net::new(*a, *p).expect("prefix").trunc(), dev.clone()))
            .collect())
    }

    fn ensure_bridge(&self, spec: &BridgeSpec) -> Result<(), NetlinkError> {
        let mut state = self.state.lock().unwrap();
        state.next_index += 1;
        let index = state.next_index;
        state
            .links
            .entry(spec.name.clone())
            .or_insert((index, None, true))
            .2 = true;
        state
            .addresses
            .insert(spec.name.clone(), (spec.address, spec.prefix_len));
        Ok(())
    }

    fn add_veth(&self, spec: &VethSpec) -> Result<(), NetlinkError> {
        let mut state = self.state.lock().unwrap();
        if std::mem::take(&mut state.fail_veth) {
            return Err(NetlinkError::Request {
                op: format!("creating veth {}", spec.host_name),
                source: io::Error::from_raw_os_error(libc::EPERM),
            });
        }
        if !state.links.contains_key(&spec.bridge) {
            return Err(NetlinkError::NoDevice(spec.bridge.clone()));
        }
        let key = (spec.netns.clone(), spec.name.clone());
        if state.links.contains_key(&spec.host_name) || state.inside.contains_key(&key) {
            return Err(NetlinkError::Request {
                op: format!("creating veth {}", spec.host_name),
                source: io::Error::from_raw_os_error(libc::EEXIST),
            });
        }
        state.next_index += 1;
        let index = state.next_index;
        state.links.insert(
            spec.host_name.clone(),
            (index, Some(spec.bridge.clone()), true),
        );
        state.inside.insert(
            key,
            (
                spec.host_name.clone(),
                InterfaceState {
                    up: true,
                    mac: spec.mac.to_vec(),
                    addresses: vec![(spec.address, spec.prefix_len)],
                    default_gateway: spec.gateway,
                },
            ),
        );
        Ok(())
    }

    fn delete_link(&self, name: &str) -> Result<bool, NetlinkError> {
        let mut state = self.state.lock().unwrap();
        let existed = state.links.remove(name).is_some();
        state.addresses.remove(name);
        // Deleting either end of a veth deletes its peer.
        state.inside.retain(|_, (host, _)| host != name);
        Ok(existed)
    }

    fn container_interface(
        &self,
        netns: &Path,
        name: &str,
    ) -> Result<Option<InterfaceState>, NetlinkError> {
        let state = self.state.lock().unwrap();
        Ok(state
            .inside
            .get(&(netns.to_path_buf(), name.to_string()))
            .map(|(_, s)| s.clone()))
    }
}
