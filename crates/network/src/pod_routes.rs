//! The pod network between nodes, as flannel's `host-gw` backend builds it: every other
//! node's pod subnet is routed through that node's address (`podCIDR via InternalIP`, the
//! nodes sharing a link), and traffic between pod subnets crosses nodes without NAT, so a
//! pod sees the other pod's own address (which NetworkPolicies match on).
//!
//! - Routes go into the main table with skiff's route protocol ([`ROUTE_PROTOCOL`]), and
//!   only routes this root added are ever replaced or deleted: they are recorded in a state
//!   file, so two skiff roots on one host (tests) never touch each other's. A route for a
//!   prefix somebody else already routes is left alone (and reported).
//! - NAT: the engine masquerades what leaves a bridge for another interface. Its
//!   exemption lives in `table ip <root>_net`: a source-NAT chain one priority earlier
//!   maps pod-to-remote-pod traffic to its own address. Netfilter runs one NAT binding per
//!   connection and direction: once a chain set one up, later NAT chains of the same
//!   hook (the engine's masquerade) are skipped.
//!
//! [`PodNetwork::sync`] is level-triggered: it takes the whole desired set each time.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use ipnet::Ipv4Net;
use netlink_packet_core::{NLM_F_CREATE, NLM_F_DUMP, NLM_F_EXCL, NLM_F_REPLACE};
use netlink_packet_route::route::{
    RouteAddress, RouteAttribute, RouteHeader, RouteMessage, RouteProtocol, RouteScope, RouteType,
};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};
use serde::{Deserialize, Serialize};

use crate::netlink::NetlinkError;
use crate::nft::{validate_table, Nft, NftError};

/// The file, in the networking state directory, recording the routes a root added.
pub const STATE_FILE: &str = "pod-routes.json";

/// The route protocol number marking skiff's pod routes (`ip route show proto 83`).
pub const ROUTE_PROTOCOL: u8 = 83;

/// Errors of the pod network between nodes.
#[derive(Debug, thiserror::Error)]
pub enum PodRoutesError {
    /// A route could not be read or changed.
    #[error(transparent)]
    Netlink(#[from] NetlinkError),
    /// The NAT exemption could not be programmed.
    #[error(transparent)]
    Nft(#[from] NftError),
    /// The state file could not be read or written.
    #[error("{context}: {source}")]
    State {
        /// What was done.
        context: String,
        /// The underlying error.
        source: std::io::Error,
    },
}

/// A route to another node's pod subnet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct PodRoute {
    /// The other node's pod CIDR.
    pub subnet: Ipv4Net,
    /// The other node's address, on a link this host shares with it.
    pub via: Ipv4Addr,
}

/// A route of the main table as the kernel lists it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KernelRoute {
    /// Destination.
    pub subnet: Ipv4Net,
    /// Gateway, if any.
    pub via: Option<Ipv4Addr>,
    /// Route protocol number.
    pub protocol: u8,
}

/// The host's main routing table (a fake in tests).
pub trait RouteTable: Send + Sync {
    /// The IPv4 unicast routes of the main table.
    fn routes(&self) -> Result<Vec<KernelRoute>, NetlinkError>;
    /// Adds `route` with [`ROUTE_PROTOCOL`]; `replace` replaces a route of the same
    /// prefix, otherwise an existing one is an error.
    fn add(&self, route: &PodRoute, replace: bool) -> Result<(), NetlinkError>;
    /// Deletes `route` (skiff's protocol only).
    fn delete(&self, route: &PodRoute) -> Result<(), NetlinkError>;
}

/// The kernel's main table over rtnetlink.
#[derive(Debug, Default, Clone, Copy)]
pub struct KernelRouteTable;

fn route_message(route: &PodRoute) -> RouteMessage {
    let mut msg = RouteMessage::default();
    msg.header.address_family = AddressFamily::Inet;
    msg.header.table = RouteHeader::RT_TABLE_MAIN;
    msg.header.protocol = RouteProtocol::Other(ROUTE_PROTOCOL);
    msg.header.scope = RouteScope::Universe;
    msg.header.kind = RouteType::Unicast;
    msg.header.destination_prefix_length = route.subnet.prefix_len();
    msg.attributes
        .push(RouteAttribute::Destination(RouteAddress::Inet(
            route.subnet.network(),
        )));
    msg.attributes
        .push(RouteAttribute::Gateway(RouteAddress::Inet(route.via)));
    msg
}

fn netlink_error(op: String) -> impl FnOnce(std::io::Error) -> NetlinkError {
    move |source| NetlinkError::Request { op, source }
}

impl RouteTable for KernelRouteTable {
    fn routes(&self) -> Result<Vec<KernelRoute>, NetlinkError> {
        let op = || "listing routes".to_string();
        let mut conn = crate::netlink::Conn::open().map_err(netlink_error(op()))?;
        let mut msg = RouteMessage::default();
        msg.header.address_family = AddressFamily::Inet;
        let answers = conn
            .request(RouteNetlinkMessage::GetRoute(msg), NLM_F_DUMP)
            .map_err(netlink_error(op()))?;
        let mut out = Vec::new();
        for m in answers {
            let RouteNetlinkMessage::NewRoute(r) = m else {
                continue;
            };
            if r.header.table != RouteHeader::RT_TABLE_MAIN || r.header.kind != RouteType::Unicast {
                continue;
            }
            let mut dst = Ipv4Addr::UNSPECIFIED;
            let mut via = None;
            for attr in &r.attributes {
                match attr {
                    RouteAttribute::Destination(RouteAddress::Inet(a)) => dst = *a,
                    RouteAttribute::Gateway(RouteAddress::Inet(a)) => via = Some(*a),
                    _ => {}
                }
            }
            if let Ok(subnet) = Ipv4Net::new(dst, r.header.destination_prefix_length) {
                out.push(KernelRoute {
                    subnet,
                    via,
                    protocol: u8::from(r.header.protocol),
                });
            }
        }
        Ok(out)
    }

    fn add(&self, route: &PodRoute, replace: bool) -> Result<(), NetlinkError> {
        let op = format!("adding route {} via {}", route.subnet, route.via);
        let mut conn = crate::netlink::Conn::open().map_err(netlink_error(op.clone()))?;
        let flags = NLM_F_CREATE | if replace { NLM_F_REPLACE } else { NLM_F_EXCL };
        conn.request(RouteNetlinkMessage::NewRoute(route_message(route)), flags)
            .map(drop)
            .map_err(netlink_error(op))
    }

    fn delete(&self, route: &PodRoute) -> Result<(), NetlinkError> {
        let op = format!("deleting route {} via {}", route.subnet, route.via);
        let mut conn = crate::netlink::Conn::open().map_err(netlink_error(op.clone()))?;
        match conn.request(RouteNetlinkMessage::DelRoute(route_message(route)), 0) {
            Err(e) if e.raw_os_error() == Some(libc::ESRCH) => Ok(()),
            other => other.map(drop).map_err(netlink_error(op)),
        }
    }
}

/// An in-memory main table for tests.
#[derive(Debug, Default)]
pub struct FakeRouteTable {
    routes: Mutex<Vec<KernelRoute>>,
}

impl FakeRouteTable {
    /// With `routes` present (somebody else's, e.g. the host's).
    pub fn with(routes: Vec<KernelRoute>) -> FakeRouteTable {
        FakeRouteTable {
            routes: Mutex::new(routes),
        }
    }

    /// What the table holds now.
    pub fn snapshot(&self) -> Vec<KernelRoute> {
        self.routes.lock().unwrap().clone()
    }
}

impl RouteTable for FakeRouteTable {
    fn routes(&self) -> Result<Vec<KernelRoute>, NetlinkError> {
        Ok(self.snapshot())
    }

    fn add(&self, route: &PodRoute, replace: bool) -> Result<(), NetlinkError> {
        let mut routes = self.routes.lock().unwrap();
        if let Some(i) = routes.iter().position(|r| r.subnet == route.subnet) {
            if !replace {
                return Err(NetlinkError::Request {
                    op: format!("adding route {}", route.subnet),
                    source: std::io::Error::from_raw_os_error(libc::EEXIST),
                });
            }
            routes.remove(i);
        }
        routes.push(KernelRoute {
            subnet: route.subnet,
            via: Some(route.via),
            protocol: ROUTE_PROTOCOL,
        });
        Ok(())
    }

    fn delete(&self, route: &PodRoute) -> Result<(), NetlinkError> {
        self.routes.lock().unwrap().retain(|r| {
            !(r.subnet == route.subnet && r.via == Some(route.via) && r.protocol == ROUTE_PROTOCOL)
        });
        Ok(())
    }
}

/// The nft script that (re)builds the NAT exemption table: pods of `local` reach
/// `remote` subnets with their own address.
pub fn render_table(table: &str, local: &[Ipv4Net], remote: &[Ipv4Net]) -> String {
    let mut s = delete_table(table);
    let _ = writeln!(s, "add table ip {table}");
    for (name, nets) in [("local", local), ("remote", remote)] {
        let _ = writeln!(
            s,
            "add set ip {table} {name} {{ type ipv4_addr; flags interval; }}"
        );
        if !nets.is_empty() {
            let list: Vec<String> = nets.iter().map(|n| n.trunc().to_string()).collect();
            let _ = writeln!(s, "add element ip {table} {name} {{ {} }}", list.join(", "));
        }
    }
    // srcnat - 1: before the engine's masquerade (priority srcnat).
    let _ = writeln!(
        s,
        "add chain ip {table} postrouting {{ type nat hook postrouting priority 99; policy accept; }}"
    );
    let _ = writeln!(
        s,
        "add rule ip {table} postrouting ip saddr @local ip daddr @remote snat ip to ip saddr"
    );
    s
}

/// Deletes the table whether or not it exists (nftables 1.0.6 has no `destroy`).
pub fn delete_table(table: &str) -> String {
    format!("add table ip {table}\ndelete table ip {table}\n")
}

/// This node's side of the pod network between nodes.
pub struct PodNetwork {
    table: String,
    state_file: PathBuf,
    routes: Arc<dyn RouteTable>,
    nft: Arc<dyn Nft>,
    /// The NAT table as last programmed (local, remote).
    programmed: Mutex<Option<(Vec<Ipv4Net>, Vec<Ipv4Net>)>>,
}

impl std::fmt::Debug for PodNetwork {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PodNetwork")
            .field("table", &self.table)
            .field("state_file", &self.state_file)
            .finish_non_exhaustive()
    }
}

/// What [`PodNetwork::sync`] did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct SyncReport {
    /// Routes added or replaced.
    pub added: Vec<PodRoute>,
    /// Routes deleted.
    pub deleted: Vec<PodRoute>,
    /// Wanted routes left out: another route owns the prefix, or the kernel refused
    /// (the address is not on a shared link), with why.
    pub skipped: Vec<(PodRoute, String)>,
}

impl PodNetwork {
    /// Routes recorded in `state_file` (this root's), the NAT table `table`.
    pub fn new(
        table: &str,
        state_file: impl Into<PathBuf>,
        routes: Arc<dyn RouteTable>,
        nft: Arc<dyn Nft>,
    ) -> Result<PodNetwork, PodRoutesError> {
        validate_table(table)?;
        Ok(PodNetwork {
            table: table.to_string(),
            state_file: state_file.into(),
            routes,
            nft,
            programmed: Mutex::new(None),
        })
    }

    fn recorded(&self) -> Result<BTreeSet<PodRoute>, PodRoutesError> {
        match std::fs::read(&self.state_file) {
            Ok(bytes) => Ok(serde_json::from_slice(&bytes).unwrap_or_default()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(BTreeSet::new()),
            Err(source) => Err(PodRoutesError::State {
                context: format!("reading {}", self.state_file.display()),
                source,
            }),
        }
    }

    fn record(&self, routes: &BTreeSet<PodRoute>) -> Result<(), PodRoutesError> {
        let io = |context: String| move |source| PodRoutesError::State { context, source };
        if let Some(dir) = self.state_file.parent() {
            std::fs::create_dir_all(dir).map_err(io(format!("creating {}", dir.display())))?;
        }
        let tmp = self.state_file.with_extension("tmp");
        let json = serde_json::to_vec(routes).expect("routes serialize");
        std::fs::write(&tmp, json).map_err(io(format!("writing {}", tmp.display())))?;
        std::fs::rename(&tmp, &self.state_file)
            .map_err(io(format!("writing {}", self.state_file.display())))
    }

    /// Makes the host route `wanted` (every other node's pod subnet) and keep traffic
    /// from `local` (this node's pod subnets) to them free of NAT; routes this root added
    /// before and no longer wanted go.
    pub fn sync(
        &self,
        local: &[Ipv4Net],
        wanted: &[PodRoute],
    ) -> Result<SyncReport, PodRoutesError> {
        let mut report = SyncReport::default();
        let recorded = self.recorded()?;
        let kernel = self.routes.routes()?;
        let wanted: BTreeSet<PodRoute> = wanted.iter().copied().collect();
        let mut ours = BTreeSet::new();
        for route in &wanted {
            let existing = kernel.iter().find(|k| k.subnet == route.subnet);
            match existing {
                Some(k) if k.protocol == ROUTE_PROTOCOL && k.via == Some(route.via) => {
                    ours.insert(*route);
                }
                // Ours, through another node address now.
                Some(k)
                    if k.protocol == ROUTE_PROTOCOL
                        && recorded.iter().any(|r| r.subnet == k.subnet) =>
                {
                    match self.routes.add(route, true) {
                        Ok(()) => {
                            ours.insert(*route);
                            report.added.push(*route);
                        }
                        Err(e) => report.skipped.push((*route, e.to_string())),
                    }
                }
                Some(k) => report.skipped.push((
                    *route,
                    format!(
                        "the host already routes {}{}",
                        k.subnet,
                        k.via.map(|v| format!(" via {v}")).unwrap_or_default()
                    ),
                )),
                None => match self.routes.add(route, false) {
                    Ok(()) => {
                        ours.insert(*route);
                        report.added.push(*route);
                    }
                    Err(e) => report.skipped.push((*route, e.to_string())),
                },
            }
        }
        for route in recorded.difference(&wanted) {
            let present = kernel.iter().any(|k| {
                k.subnet == route.subnet && k.via == Some(route.via) && k.protocol == ROUTE_PROTOCOL
            });
            if present && !ours.iter().any(|o| o.subnet == route.subnet) {
                self.routes.delete(route)?;
                report.deleted.push(*route);
            }
        }
        self.record(&ours)?;
        self.program_nat(local, &ours)?;
        Ok(report)
    }

    fn program_nat(
        &self,
        local: &[Ipv4Net],
        routed: &BTreeSet<PodRoute>,
    ) -> Result<(), PodRoutesError> {
        let mut local: Vec<Ipv4Net> = local.iter().map(|n| n.trunc()).collect();
        local.sort();
        local.dedup();
        let remote: Vec<Ipv4Net> = routed
            .iter()
            .map(|r| r.subnet.trunc())
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        let want = (local, remote);
        let mut programmed = self.programmed.lock().expect("programmed lock");
        let present = self.nft.list_table(&self.table)?.is_some();
        if present && programmed.as_ref() == Some(&want) {
            return Ok(());
        }
        if want.0.is_empty() || want.1.is_empty() {
            if present {
                self.nft.apply(&self.table, &delete_table(&self.table))?;
            }
        } else {
            self.nft
                .apply(&self.table, &render_table(&self.table, &want.0, &want.1))?;
        }
        *programmed = Some(want);
        Ok(())
    }

    /// Deletes every route this root added and the NAT table (`skiff agent` leaving).
    pub fn remove_all(&self) -> Result<(), PodRoutesError> {
        self.sync(&[], &[])?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nft::FakeNft;

    fn net(s: &str) -> Ipv4Net {
        s.parse().unwrap()
    }

    fn route(subnet: &str, via: &str) -> PodRoute {
        PodRoute {
            subnet: net(subnet),
            via: via.parse().unwrap(),
        }
    }

    fn fixture(existing: Vec<KernelRoute>) -> (tempfile::TempDir, Arc<FakeRouteTable>, PodNetwork) {
        let dir = tempfile::tempdir().unwrap();
        let table = Arc::new(FakeRouteTable::with(existing));
        let net = PodNetwork::new(
            "t_net",
            dir.path().join("routes.json"),
            table.clone(),
            Arc::new(FakeNft::default()),
        )
        .unwrap();
        (dir, table, net)
    }

    #[test]
    fn wanted_routes_are_added_then_removed_when_no_longer_wanted() {
        let (_dir, table, pods) = fixture(Vec::new());
        let local = [net("10.42.0.0/24")];
        let a = route("10.42.1.0/24", "198.18.0.2");
        let b = route("10.42.2.0/24", "198.18.0.3");
        let report = pods.sync(&local, &[a, b]).unwrap();
        assert_eq!(report.added, vec![a, b]);
        assert_eq!(table.snapshot().len(), 2);
        // Idempotent.
        assert_eq!(pods.sync(&local, &[a, b]).unwrap(), SyncReport::default());
        // Node b left; node a moved to another address.
        let a2 = route("10.42.1.0/24", "198.18.0.9");
        let report = pods.sync(&local, &[a2]).unwrap();
        assert_eq!(report.added, vec![a2]);
        assert_eq!(report.deleted, vec![b]);
        assert_eq!(
            table.snapshot(),
            vec![KernelRoute {
                subnet: a2.subnet,
                via: Some(a2.via),
                protocol: ROUTE_PROTOCOL
            }]
        );
    }

    #[test]
    fn routes_of_others_are_never_touched() {
        let host = KernelRoute {
            subnet: net("10.42.1.0/24"),
            via: Some("192.0.2.1".parse().unwrap()),
            protocol: 4,
        };
        // Another skiff root's route: our protocol, but not in our state file.
        let other_root = KernelRoute {
            subnet: net("10.42.3.0/24"),
            via: Some("198.18.0.7".parse().unwrap()),
            protocol: ROUTE_PROTOCOL,
        };
        let (_dir, table, pods) = fixture(vec![host, other_root]);
        let report = pods
            .sync(
                &[net("10.42.0.0/24")],
                &[
                    route("10.42.1.0/24", "198.18.0.2"),
                    route("10.42.3.0/24", "198.18.0.2"),
                ],
            )
            .unwrap();
        assert!(report.added.is_empty());
        assert_eq!(report.skipped.len(), 2);
        assert!(report.skipped[0]
            .1
            .contains("already routes 10.42.1.0/24 via 192.0.2.1"));
        pods.remove_all().unwrap();
        assert_eq!(table.snapshot(), vec![host, other_root]);
    }

    #[test]
    fn the_nat_table_exempts_local_to_remote_pod_traffic() {
        let script = render_table(
            "t_net",
            &[net("10.42.0.0/24")],
            &[net("10.42.1.0/24"), net("10.42.2.0/24")],
        );
        assert!(script.starts_with("add table ip t_net\ndelete table ip t_net\n"));
        assert!(script.contains("add element ip t_net local { 10.42.0.0/24 }"));
        assert!(script.contains("add element ip t_net remote { 10.42.1.0/24, 10.42.2.0/24 }"));
        assert!(script.contains("type nat hook postrouting priority 99;"));
        assert!(script.contains("ip saddr @local ip daddr @remote snat ip to ip saddr"));
    }
}
