//! Service rules as nft scripts.
//!
//! ```text
//! table ip <table>
//!   set entries_<pick chain>  ip . proto . port (cluster IP or load-balancer IP), or
//!                       proto . port (node port): the entries that pick that way, one
//!                       set per pick chain in use (no verdicts: see below)
//!   map endpoints       ip . proto . port . slot : endpoint ip . port
//!   map node_port_endpoints  proto . port . slot : endpoint ip . port
//!                                                      an entry's n endpoints, slots 0..n
//!                                                      (from HOST_SLOTS for the host's
//!                                                      own connections)
//!   set affinity_<slot>, node_port_affinity_<slot>   entry . client ip, dynamic,
//!                                                      timeout; sessionAffinity ClientIP:
//!                                                      the clients of each slot
//!   set hairpin         entry ip . proto . endpoint ip . endpoint ip . endpoint port
//!                                                      endpoints reaching themselves
//!                                                      through the cluster IP or an
//!                                                      LB IP, masqueraded
//!   set node_port_hairpin    endpoint ip . proto . node port
//!   map no_endpoints    ip . proto . port : verdict    cluster/LB IP without endpoints:
//!                                                      goto reject_conn, or drop
//!   map no_endpoint_node_ports  proto . port : verdict the same for node ports
//!   chain prerouting    nat, prerouting -110: jump services   (pods, other hosts)
//!   chain output        nat, output -110: `<key> @entries_<pick> goto <pick>` for the
//!                       `_host` picks in use (the host's own connections to an
//!                       externalTrafficPolicy Local port), then jump services
//!   chain services      the same rule for every other pick in use, cluster and LB
//!                       IPs first, then node ports (`fib daddr type local`)
//!   chain pick_*        shared by every entry picking the same way (see [`Pick`]):
//!                       [mark for masquerade], dnat to
//!                       `endpoints[entry . numgen random mod n]`; with affinity, first
//!                       `entry . ip saddr @affinity_<slot> goto stick_*` per slot
//!   chain stick_*       one slot of an affinity pick: refresh the client's entry
//!                       (`update`, the Service's timeout), dnat to that slot's endpoint
//!   chain postrouting   nat, postrouting 110: masquerade what carries MASQUERADE_MARK,
//!                       and hairpin connections (`hairpin`)
//!   chain filter_input, filter_forward, filter_output
//!                       filter, -10: new connections to Services without endpoints hit
//!                       `no_endpoints` / `no_endpoint_node_ports` (reject, or drop
//!                       when only a Local policy leaves no endpoint)
//!   chain reject_conn   TCP reset or ICMP port unreachable, as kube-proxy's reject
//! ```
//!
//! No Service has a chain or set of its own: every way into a Service port (its cluster
//! IP, each load-balancer IP, its node port) is an *entry*, one element of the plain
//! set of the chain shared by every entry that picks the same way, and its endpoints
//! are elements keyed by the entry and a slot. So a change of any Service is an
//! element update, and none of its elements is a verdict: the kernel checks the whole
//! table at a commit that adds a jump, a goto (a verdict-map element too) or a NAT
//! rule, walking every verdict-map element from each base chain, which cost 3-50 ms per
//! added Service at 10,000 when entries were `goto` elements of one verdict map, and
//! ~300 ms with per-Service chains. The price is one set lookup per pick in use (not
//! per Service) for a new connection, instead of one verdict-map lookup.
//!
//! The traffic policies only change which endpoints an entry holds: an
//! internalTrafficPolicy Local cluster IP holds this node's endpoints, so do the node
//! port and LB IPs of an externalTrafficPolicy Local port (reached without
//! masquerading, so the client's address is kept), whose entries in the `_from_host`
//! maps hold every endpoint for the host's own connections (masqueraded), as
//! kube-proxy treats them.
//!
//! Session affinity (kube-proxy's per-endpoint sets of clients) is one dynamic set per
//! slot, shared by every Service, of `entry . client`, with the Service's timeout on
//! each element: a client found in a slot's set goes to that slot's endpoint, others
//! are picked at random and remembered. (One set of `entry . client . slot` would do,
//! but nft 1.0.6 cannot list a set whose key ends in a numgen-typed slot once the
//! kernel has added elements: it aborts, and libnftables would abort skiff with it.)
//! A pick chain per (way of picking, endpoint count), a stick chain per (slot,
//! timeout) and a set per slot are made when the first entry needs them and deleted
//! with the last; the plain pick chains for 1 to [`STANDING_PICKS`] endpoints always
//! exist.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::net::{Ipv4Addr, SocketAddrV4};

use super::{ServiceMap, ServicePort};
use crate::nft::{validate_table, NftError};
use crate::ports::Protocol;

/// The packet mark bit asking the `postrouting` chain to masquerade (kube-proxy uses
/// 0x4000; another bit, so the two never confuse each other's traffic).
pub const MASQUERADE_MARK: u32 = 0x2000;

/// The chain new connections to a Service without endpoints go to.
pub const REJECT_CHAIN: &str = "reject_conn";

/// The plain pick chains (cluster IPs, no affinity) made with the table, for 1 to this
/// many endpoints; other counts get theirs when first needed.
pub const STANDING_PICKS: usize = 64;

/// The first slot of the endpoints the host's own connections to an
/// externalTrafficPolicy Local entry pick among (every endpoint, not only this node's).
pub const HOST_SLOTS: u32 = 1 << 20;

/// How many clients each affinity set remembers at most (a full set only stops new
/// clients from being remembered).
const AFFINITY_SIZE: u32 = 1 << 20;

const BASE_CHAINS: [&str; 8] = [
    "prerouting",
    "output",
    "postrouting",
    "services",
    "filter_input",
    "filter_forward",
    "filter_output",
    REJECT_CHAIN,
];

/// How an entry picks its endpoint: what names the chain every entry picking the same
/// way shares.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Pick {
    /// Keyed by `proto . port` (a node port, any of the host's addresses) instead of
    /// `ip . proto . port`.
    pub node_port: bool,
    /// Marks the connection for masquerading (externalTrafficPolicy Cluster traffic
    /// from elsewhere, and the host's own connections).
    pub masquerade: bool,
    /// Picks among the slots from [`HOST_SLOTS`].
    pub host: bool,
    /// How many endpoints the entry has.
    pub endpoints: usize,
    /// `sessionAffinity: ClientIP` with this timeout, in seconds.
    pub affinity: Option<u32>,
}

impl Pick {
    /// The chain's name: `pick_<n>` for a cluster IP without affinity, else with the
    /// way of picking in it (`pick_np_masq_host_3_aff10800`).
    pub fn chain(&self) -> String {
        let mut name = "pick".to_string();
        for (on, part) in [
            (self.node_port, "_np"),
            (self.masquerade, "_masq"),
            (self.host, "_host"),
        ] {
            if on {
                name.push_str(part);
            }
        }
        let _ = write!(name, "_{}", self.endpoints);
        if let Some(timeout) = self.affinity {
            let _ = write!(name, "_aff{timeout}");
        }
        name
    }

    /// The set of the entries that pick this way.
    pub fn entry_set(&self) -> String {
        format!("entries_{}", self.chain())
    }

    /// The rule of the `output` or `services` chain sending this pick's entries to its
    /// chain.
    fn dispatch(&self) -> String {
        let local = if self.node_port {
            "fib daddr type local "
        } else {
            ""
        };
        format!(
            "{local}{} @{} goto {}",
            self.key(),
            self.entry_set(),
            self.chain()
        )
    }

    /// Whether the table always has this chain.
    fn standing(&self) -> bool {
        !self.node_port
            && !self.masquerade
            && !self.host
            && self.affinity.is_none()
            && (1..=STANDING_PICKS).contains(&self.endpoints)
    }

    fn first_slot(&self) -> u32 {
        if self.host {
            HOST_SLOTS
        } else {
            0
        }
    }

    /// What identifies the entry in the packet.
    fn key(&self) -> &'static str {
        if self.node_port {
            "meta l4proto . th dport"
        } else {
            "ip daddr . meta l4proto . th dport"
        }
    }

    fn endpoint_map(&self) -> &'static str {
        if self.node_port {
            "node_port_endpoints"
        } else {
            "endpoints"
        }
    }

    /// The clients remembered at `slot`.
    fn affinity_set(&self, slot: u32) -> String {
        let np = if self.node_port { "node_port_" } else { "" };
        format!("{np}affinity_{slot}")
    }

    /// The sets this pick uses (its entries', and with affinity the clients' of each
    /// slot), with their declarations.
    fn sets(&self) -> Vec<(String, String)> {
        let entry = if self.node_port {
            "inet_proto . inet_service"
        } else {
            "ipv4_addr . inet_proto . inet_service"
        };
        let mut out = vec![(self.entry_set(), format!("{{ type {entry}; }}"))];
        if self.affinity.is_none() {
            return out;
        }
        let first = self.first_slot();
        out.extend((first..first + self.endpoints as u32).map(|slot| {
            (
                self.affinity_set(slot),
                format!(
                    "{{ type {entry} . ipv4_addr; size {AFFINITY_SIZE}; flags dynamic,timeout; }}"
                ),
            )
        }));
        out
    }

    /// The chain a client remembered at `slot` goes to.
    fn stick_chain(&self, slot: u32, timeout: u32) -> String {
        let np = if self.node_port { "_np" } else { "" };
        format!("stick{np}_{slot}_{timeout}")
    }

    /// This pick's chain and, with affinity, its stick chains, with their rules.
    fn chains(&self) -> Vec<(String, Vec<String>)> {
        let (key, map, first, n) = (
            self.key(),
            self.endpoint_map(),
            self.first_slot(),
            self.endpoints,
        );
        // A constant slot inside a concatenation needs a type, which numgen gives it.
        let constant = |slot: u32| format!("numgen random mod 1 offset {slot}");
        let random = if first == 0 {
            format!("numgen random mod {n}")
        } else {
            format!("numgen random mod {n} offset {first}")
        };
        let m = MASQUERADE_MARK;
        let mut rules = Vec::new();
        if self.masquerade {
            rules.push(format!("meta mark set meta mark | {m:#x}"));
        } else if self.node_port {
            // An endpoint reaching itself through its node port must see the connection
            // come from elsewhere, or its reply would skip the NAT (the cluster and LB
            // IPs' hairpin is exact, in postrouting; this marks any endpoint of the port).
            rules.push(format!(
                "ip saddr . meta l4proto . th dport @node_port_hairpin meta mark set meta mark | {m:#x}"
            ));
        }
        let Some(timeout) = self.affinity else {
            rules.push(format!("dnat ip to {key} . {random} map @{map}"));
            return vec![(self.chain(), rules)];
        };
        let mut out = Vec::new();
        let mut choices = Vec::new();
        for slot in (0..n as u32).map(|i| first + i) {
            let (stick, set) = (self.stick_chain(slot, timeout), self.affinity_set(slot));
            rules.push(format!("{key} . ip saddr @{set} goto {stick}"));
            choices.push(format!("{slot} : goto {stick}"));
            out.push((
                stick,
                vec![
                    format!("update @{set} {{ {key} . ip saddr timeout {timeout}s }}"),
                    format!("dnat ip to {key} . {} map @{map}", constant(slot)),
                ],
            ));
        }
        rules.push(format!("{random} vmap {{ {} }}", choices.join(", ")));
        out.push((self.chain(), rules));
        out
    }
}

/// The chains (name to rules) that `picks` need beyond the standing ones.
pub fn pick_chains<'a>(picks: impl IntoIterator<Item = &'a Pick>) -> BTreeMap<String, Vec<String>> {
    picks
        .into_iter()
        .filter(|p| !p.standing())
        .flat_map(Pick::chains)
        .collect()
}

/// The sets (name to declaration) that `picks` need: entries and affinity.
pub fn pick_sets<'a>(picks: impl IntoIterator<Item = &'a Pick>) -> BTreeMap<String, String> {
    picks.into_iter().flat_map(Pick::sets).collect()
}

/// Renders the scripts of one service table.
#[derive(Debug, Clone)]
pub struct ServiceRules {
    table: String,
}

impl ServiceRules {
    /// Rules for `table ip <table>`.
    pub fn new(table: &str) -> Result<ServiceRules, NftError> {
        validate_table(table)?;
        Ok(ServiceRules {
            table: table.to_string(),
        })
    }

    /// The table name.
    pub fn table(&self) -> &str {
        &self.table
    }

    /// The plain chain shared by the cluster IPs without affinity with `endpoints`
    /// endpoints.
    pub fn pick_chain(endpoints: usize) -> String {
        Pick {
            node_port: false,
            masquerade: false,
            host: false,
            endpoints,
            affinity: None,
        }
        .chain()
    }

    /// Every chain the table holds for `services`, base chains included.
    pub fn chain_names(&self, services: &ServiceMap) -> BTreeSet<String> {
        let mut names: BTreeSet<String> = BASE_CHAINS.iter().map(|c| c.to_string()).collect();
        names.extend((1..=STANDING_PICKS).map(Self::pick_chain));
        let picks = picks_of_map(services);
        names.extend(pick_chains(picks.keys()).into_keys());
        names
    }

    /// The table, its maps and base chains; the base chains are flushed and refilled
    /// (`output` and `services` by [`ServiceRules::dispatch`]), elements and pick chains
    /// beyond the standing ones are left alone.
    pub fn base(&self) -> String {
        let t = &self.table;
        let mut s = format!("add table ip {t}\n");
        for (map, key) in [
            ("no_endpoints", "ipv4_addr . inet_proto . inet_service"),
            ("no_endpoint_node_ports", "inet_proto . inet_service"),
        ] {
            let _ = writeln!(s, "add map ip {t} {map} {{ type {key} : verdict; }}");
        }
        // `typeof`: the slot is numgen's 32-bit integer, which has no `type` name.
        let slot = "numgen random mod 1";
        let _ = writeln!(
            s,
            "add map ip {t} endpoints {{ typeof ip daddr . meta l4proto . th dport . {slot} : ip daddr . th dport; }}"
        );
        let _ = writeln!(
            s,
            "add map ip {t} node_port_endpoints {{ typeof meta l4proto . th dport . {slot} : ip daddr . th dport; }}"
        );
        let _ = writeln!(
            s,
            "add set ip {t} hairpin {{ type ipv4_addr . inet_proto . ipv4_addr . ipv4_addr . inet_service; }}"
        );
        let _ = writeln!(
            s,
            "add set ip {t} node_port_hairpin {{ type ipv4_addr . inet_proto . inet_service; }}"
        );
        let plain = ["services".to_string(), REJECT_CHAIN.to_string()];
        for chain in plain
            .into_iter()
            .chain((1..=STANDING_PICKS).map(Self::pick_chain))
        {
            let _ = writeln!(s, "add chain ip {t} {chain}");
        }
        for (name, kind, hook, priority) in [
            ("prerouting", "nat", "prerouting", -110),
            ("output", "nat", "output", -110),
            ("postrouting", "nat", "postrouting", 110),
            ("filter_input", "filter", "input", -10),
            ("filter_forward", "filter", "forward", -10),
            ("filter_output", "filter", "output", -10),
        ] {
            let _ = writeln!(
                s,
                "add chain ip {t} {name} {{ type {kind} hook {hook} priority {priority}; policy accept; }}"
            );
        }
        let m = MASQUERADE_MARK;
        let no_endpoints = "ct state new ip daddr . meta l4proto . th dport vmap @no_endpoints";
        let picks = (1..=STANDING_PICKS).flat_map(|n| {
            Pick {
                node_port: false,
                masquerade: false,
                host: false,
                endpoints: n,
                affinity: None,
            }
            .chains()
        });
        for (chain, rules) in [
            ("prerouting".to_string(), vec!["jump services".to_string()]),
            (
                "postrouting".to_string(),
                vec![
                    format!("meta mark & {m:#x} == {m:#x} masquerade"),
                    // An endpoint reaching itself through its cluster or LB IP: its reply
                    // must come back through this node's NAT.
                    "ct status dnat ct original ip daddr . meta l4proto . ip saddr . ip daddr . th dport @hairpin masquerade"
                        .to_string(),
                ],
            ),
            (
                "filter_input".to_string(),
                vec![
                    "ct state new fib daddr type local meta l4proto . th dport vmap @no_endpoint_node_ports"
                        .to_string(),
                    no_endpoints.to_string(),
                ],
            ),
            ("filter_forward".to_string(), vec![no_endpoints.to_string()]),
            ("filter_output".to_string(), vec![no_endpoints.to_string()]),
            (
                REJECT_CHAIN.to_string(),
                vec![
                    "meta l4proto tcp reject with tcp reset".to_string(),
                    "reject".to_string(),
                ],
            ),
        ]
        .into_iter()
        .chain(picks)
        {
            let _ = writeln!(s, "flush chain ip {t} {chain}");
            for rule in rules {
                let _ = writeln!(s, "add rule ip {t} {chain} {rule}");
            }
        }
        s
    }

    /// Refills `output` and `services` with one rule per pick in `picks` (whose chains
    /// and sets must exist by then): the host's own connections to an
    /// externalTrafficPolicy Local port (`_host` picks, every endpoint, masqueraded) in
    /// `output` first; in `services` the cluster and LB IPs, then node ports, on any of
    /// the host's addresses, 127.0.0.1 included (the engine turns route_localnet on for
    /// its bridges, which the replies of such connections need).
    pub fn dispatch<'a>(&self, picks: impl IntoIterator<Item = &'a Pick>) -> String {
        let t = &self.table;
        let picks: Vec<&Pick> = picks.into_iter().collect();
        let mut s = String::new();
        for (chain, host, last) in [("output", true, "jump services"), ("services", false, "")] {
            let _ = writeln!(s, "flush chain ip {t} {chain}");
            for node_port in [false, true] {
                for pick in picks
                    .iter()
                    .filter(|p| p.host == host && p.node_port == node_port)
                {
                    let _ = writeln!(s, "add rule ip {t} {chain} {}", pick.dispatch());
                }
            }
            if !last.is_empty() {
                let _ = writeln!(s, "add rule ip {t} {chain} {last}");
            }
        }
        s
    }

    /// Creates `sets` (name to declaration), then creates (or refills) `chains`: all of
    /// them first, as a pick chain's rules refer to its stick chains.
    pub fn add_chains(
        &self,
        sets: &BTreeMap<String, String>,
        chains: &BTreeMap<String, Vec<String>>,
    ) -> String {
        let t = &self.table;
        let mut s = String::new();
        for (name, declaration) in sets {
            let _ = writeln!(s, "add set ip {t} {name} {declaration}");
        }
        for name in chains.keys() {
            let _ = writeln!(s, "add chain ip {t} {name}");
        }
        for (name, rules) in chains {
            let _ = writeln!(s, "flush chain ip {t} {name}");
            for rule in rules {
                let _ = writeln!(s, "add rule ip {t} {name} {rule}");
            }
        }
        s
    }

    /// Deletes `chains` (flushed first, as a pick chain refers to its stick chains),
    /// then `sets`.
    pub fn delete_chains(&self, chains: &[&String], sets: &[&String]) -> String {
        let t = &self.table;
        let mut s = String::new();
        for name in chains {
            let _ = writeln!(s, "flush chain ip {t} {name}");
        }
        for name in chains {
            let _ = writeln!(s, "delete chain ip {t} {name}");
        }
        for name in sets {
            let _ = writeln!(s, "delete set ip {t} {name}");
        }
        s
    }

    /// Rewrites one Service from `old` (what the table holds for it) to `new`: only the
    /// map elements that differ. The pick chains `new` needs must exist (see
    /// [`picks_of`]).
    pub fn service(&self, old: &[ServicePort], new: &[ServicePort]) -> String {
        let t = &self.table;
        let mut s = String::new();
        // An element whose data changes is deleted, then added again.
        let old_elements: BTreeSet<(String, String)> = elements_of(old).into_iter().collect();
        let new_elements: BTreeSet<(String, String)> = elements_of(new).into_iter().collect();
        for (map, elem) in old_elements.difference(&new_elements) {
            let key = elem.split(" : ").next().unwrap_or_default();
            let _ = writeln!(s, "delete element ip {t} {map} {{ {key} }}");
        }
        for (map, elem) in new_elements.difference(&old_elements) {
            let _ = writeln!(s, "add element ip {t} {map} {{ {elem} }}");
        }
        s
    }

    /// The whole table for `services`, replacing whatever is there, in one transaction.
    pub fn replace(&self, services: &ServiceMap) -> String {
        let mut s = self.delete_table();
        s.push_str(&self.base());
        let picks = picks_of_map(services);
        s.push_str(&self.add_chains(&pick_sets(picks.keys()), &pick_chains(picks.keys())));
        s.push_str(&self.dispatch(picks.keys()));
        for ports in services.values() {
            s.push_str(&self.service(&[], ports));
        }
        s
    }

    /// Deletes the table, whether or not it exists.
    pub fn delete_table(&self) -> String {
        format!("add table ip {t}\ndelete table ip {t}\n", t = self.table)
    }
}

/// One way into a Service port: an element of its pick's entry set, and the endpoints
/// it picks among.
struct Entry<'a> {
    /// The element's key: `ip . proto . port`, or `proto . port` for a node port.
    key: String,
    pick: Pick,
    endpoints: &'a [SocketAddrV4],
    /// The address of an `ip . proto . port` entry (hairpin elements).
    ip: Option<Ipv4Addr>,
}

/// Every entry of `port` that has endpoints.
fn entries(port: &ServicePort) -> Vec<Entry<'_>> {
    let proto = port.protocol;
    let pick = |node_port, masquerade, host, endpoints: &[SocketAddrV4]| Pick {
        node_port,
        masquerade,
        host,
        endpoints: endpoints.len(),
        affinity: port.affinity_timeout,
    };
    let by_ip = |ip: Ipv4Addr, pick: Pick, endpoints| Entry {
        key: format!("{ip} . {proto} . {}", port.port),
        pick,
        endpoints,
        ip: Some(ip),
    };
    let by_port = |np: u16, pick: Pick, endpoints| Entry {
        key: format!("{proto} . {np}"),
        pick,
        endpoints,
        ip: None,
    };
    let p = paths(port);
    let mut out = Vec::new();
    if let (Some(ip), false) = (port.cluster_ip, p.internal.is_empty()) {
        let pick = pick(false, false, false, p.internal);
        out.push(by_ip(ip, pick, p.internal));
    }
    if !p.exposed || port.endpoints.is_empty() {
        return out;
    }
    // From elsewhere: masqueraded unless the policy is Local (the source is kept, so
    // only this node's endpoints can answer).
    if !p.external.is_empty() {
        let masquerade = !port.external_local;
        for ip in &port.load_balancer_ips {
            let pick = pick(false, masquerade, false, p.external);
            out.push(by_ip(*ip, pick, p.external));
        }
        if let Some(np) = port.node_port {
            let pick = pick(true, masquerade, false, p.external);
            out.push(by_port(np, pick, p.external));
        }
    }
    // The host itself (127.0.0.1 too) reaches every endpoint, masqueraded.
    if port.external_local {
        let all = port.endpoints.as_slice();
        for ip in &port.load_balancer_ips {
            let pick = pick(false, true, true, all);
            out.push(by_ip(*ip, pick, all));
        }
        if let Some(np) = port.node_port {
            let pick = pick(true, true, true, all);
            out.push(by_port(np, pick, all));
        }
    }
    out
}

/// The picks of `ports`' entries, one per entry (the same pick as often as entries
/// use it: the proxy counts them to know when a pick chain is no longer used).
pub fn picks_of(ports: &[ServicePort]) -> impl Iterator<Item = Pick> + '_ {
    ports
        .iter()
        .flat_map(|p| entries(p).into_iter().map(|e| e.pick))
}

/// How many entries of `services` use each pick.
pub fn picks_of_map(services: &ServiceMap) -> BTreeMap<Pick, usize> {
    let mut picks = BTreeMap::new();
    for pick in services.values().flat_map(|ports| picks_of(ports)) {
        *picks.entry(pick).or_default() += 1;
    }
    picks
}

/// Where a Service port's traffic can go, after its traffic policies.
struct Paths<'a> {
    /// Cluster-IP traffic: every endpoint, or this node's (internalTrafficPolicy Local).
    internal: &'a [SocketAddrV4],
    /// Node-port and load-balancer traffic from elsewhere: every endpoint, or this node's
    /// (externalTrafficPolicy Local).
    external: &'a [SocketAddrV4],
    /// The port is reached from outside the cluster network (node port or LB address).
    exposed: bool,
}

fn paths(port: &ServicePort) -> Paths<'_> {
    let pick = |local: bool| {
        if local {
            port.local_endpoints.as_slice()
        } else {
            port.endpoints.as_slice()
        }
    };
    Paths {
        internal: pick(port.internal_local),
        external: pick(port.external_local),
        exposed: port.node_port.is_some() || !port.load_balancer_ips.is_empty(),
    }
}

/// The map elements of one Service's ports: `(map, "key : data")`, every one keyed by
/// one of the Service's own addresses or node ports.
fn elements_of(ports: &[ServicePort]) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for port in ports {
        let proto: Protocol = port.protocol;
        for entry in entries(port) {
            let first = entry.pick.first_slot();
            out.push((entry.pick.entry_set(), entry.key.clone()));
            for (i, ep) in entry.endpoints.iter().enumerate() {
                let (addr, target) = (ep.ip(), ep.port());
                out.push((
                    entry.pick.endpoint_map().to_string(),
                    format!("{} . {} : {addr} . {target}", entry.key, first + i as u32),
                ));
                if entry.pick.masquerade {
                    continue;
                }
                match (entry.ip, port.node_port) {
                    (Some(ip), _) => out.push((
                        "hairpin".to_string(),
                        format!("{ip} . {proto} . {addr} . {addr} . {target}"),
                    )),
                    (None, Some(np)) => out.push((
                        "node_port_hairpin".to_string(),
                        format!("{addr} . {proto} . {np}"),
                    )),
                    (None, None) => {}
                }
            }
        }
        // Without any endpoint the connection is refused; when only a Local policy leaves
        // none, kube-proxy drops it instead (another node may have endpoints).
        let p = paths(port);
        let none = |local: bool| {
            if port.endpoints.is_empty() || !local {
                format!("goto {REJECT_CHAIN}")
            } else {
                "drop".to_string()
            }
        };
        if let (Some(ip), true) = (port.cluster_ip, p.internal.is_empty()) {
            out.push((
                "no_endpoints".to_string(),
                format!(
                    "{ip} . {proto} . {} : {}",
                    port.port,
                    none(port.internal_local)
                ),
            ));
        }
        if p.exposed && p.external.is_empty() {
            let verdict = none(port.external_local);
            for ip in &port.load_balancer_ips {
                out.push((
                    "no_endpoints".to_string(),
                    format!("{ip} . {proto} . {} : {verdict}", port.port),
                ));
            }
            if let Some(np) = port.node_port {
                out.push((
                    "no_endpoint_node_ports".to_string(),
                    format!("{proto} . {np} : {verdict}"),
                ));
            }
        }
    }
    out
}

/// How many elements the `endpoints` map holds for `services`.
pub fn service_elements(services: &ServiceMap) -> usize {
    services
        .values()
        .map(|p| {
            elements_of(p)
                .iter()
                .filter(|(m, _)| m == "endpoints")
                .count()
        })
        .sum()
}
