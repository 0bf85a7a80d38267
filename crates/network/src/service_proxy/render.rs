//! Service rules as nft scripts.
//!
//! ```text
//! table ip <table>
//!   map services        ip . proto . port : verdict    cluster IP -> goto pick_<n> (direct
//!                                                      ports) or svc_/svl_<hash>,
//!                                                      load-balancer IP -> goto ext_<hash>
//!   map endpoints       ip . proto . port . slot : endpoint ip . port
//!                                                      a direct port's n endpoints, slots 0..n
//!   set hairpin         cluster ip . proto . endpoint ip . endpoint ip . endpoint port
//!                                                      a direct port's endpoints reaching
//!                                                      themselves, masqueraded
//!   map node_ports      proto . port : verdict         node port -> goto ext_<hash>
//!   map no_endpoints    ip . proto . port : verdict    cluster/LB IP without endpoints:
//!                                                      goto reject_conn, or drop
//!   map no_endpoint_node_ports  proto . port : verdict the same for node ports
//!   chain prerouting    nat, prerouting -110: jump services   (pods, other hosts)
//!   chain output        nat, output -110:     jump services   (the host itself)
//!   chain services      the lookups of `services` and `node_ports`
//!   chain pick_<n>      n = 1..=64, shared by every direct port with n endpoints:
//!                       dnat to `endpoints[ip . proto . port . numgen random mod n]`
//!   chain ext_<hash>    one per external Service port (node port, load-balancer IPs):
//!                       masquerade and goto svc_ (externalTrafficPolicy Cluster), or
//!                       goto svl_ keeping the source (Local; the host itself still
//!                       reaches every endpoint, masqueraded)
//!   chain svc_<hash>    one per other Service port: numgen random mod N vmap
//!                       { i : goto ep_<hash> } (sessionAffinity ClientIP: first
//!                       `ip saddr @aff_<hash> goto ep_`)
//!   chain svl_<hash>    the same over this node's endpoints only (a traffic policy Local)
//!   chain ep_<hash>     one per endpoint: mark hairpin traffic, remember the client in
//!                       aff_<hash> (affinity), dnat to the endpoint
//!   set aff_<hash>      per endpoint with affinity: client addresses, with a timeout
//!   chain postrouting   nat, postrouting 110: masquerade what carries MASQUERADE_MARK,
//!                       and direct ports' hairpin connections (`hairpin`)
//!   chain filter_input, filter_forward, filter_output
//!                       filter, -10: new connections to Services without endpoints hit
//!                       `no_endpoints` / `no_endpoint_node_ports` (reject, or drop
//!                       when only a Local policy leaves no endpoint)
//!   chain reject_conn   TCP reset or ICMP port unreachable, as kube-proxy's reject
//! ```
//!
//! A *direct* port (a cluster IP only, no traffic policy Local, no session affinity,
//! 1 to [`MAX_DIRECT_ENDPOINTS`] endpoints: most Services) has no chain or set of its
//! own, only map elements, so changing it is an element update: `nft` then fetches
//! only the few chains and sets of the table into its cache, and the kernel's check of
//! the table at commit (every chain reachable from the base chains, walked again on
//! every commit that adds a jump, a goto or a NAT rule) stays short. Per-Service chains cost both
//! for every Service in the table on every change (about 300 ms at 10,000 Services).
//!
//! Chain names are hashes of the Service, port and endpoint, so a Service's chains keep
//! their names across updates and a change rewrites only them. The base chains run at
//! priority -110, before the engine's published ports (-100).

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::net::SocketAddrV4;

use sha2::{Digest, Sha256};

use super::{ServiceMap, ServicePort};
use crate::nft::{validate_table, NftError};

/// The packet mark bit asking the `postrouting` chain to masquerade (kube-proxy uses
/// 0x4000; another bit, so the two never confuse each other's traffic).
pub const MASQUERADE_MARK: u32 = 0x2000;

/// The chain new connections to a Service without endpoints go to.
pub const REJECT_CHAIN: &str = "reject_conn";

/// The most endpoints a direct Service port can have; ports with more get chains of
/// their own. One `pick_<n>` chain per count is created with the table.
pub const MAX_DIRECT_ENDPOINTS: usize = 64;

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

/// Renders the scripts of one service table.
#[derive(Debug, Clone)]
pub struct ServiceRules {
    table: String,
}

fn hash12(text: &str) -> String {
    hex::encode(&Sha256::digest(text.as_bytes())[..6])
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

    /// The chain a Service port's traffic goes to (every endpoint of the cluster).
    pub fn service_chain(key: &str, port: &ServicePort) -> String {
        format!("svc_{}", port_hash(key, port))
    }

    /// The chain shared by the direct Service ports with `endpoints` endpoints.
    pub fn pick_chain(endpoints: usize) -> String {
        format!("pick_{endpoints}")
    }

    /// The chain over this node's endpoints of a Service port (a traffic policy Local).
    pub fn local_chain(key: &str, port: &ServicePort) -> String {
        format!("svl_{}", port_hash(key, port))
    }

    /// The chain of a Service port's node port and load-balancer traffic.
    pub fn external_chain(key: &str, port: &ServicePort) -> String {
        format!("ext_{}", port_hash(key, port))
    }

    /// The chain that sends a Service port's connection to `endpoint`.
    pub fn endpoint_chain(key: &str, port: &ServicePort, endpoint: SocketAddrV4) -> String {
        format!(
            "ep_{}",
            hash12(&format!("{key}/{}/{}/{endpoint}", port.name, port.protocol))
        )
    }

    /// The set of clients stuck to `endpoint` (sessionAffinity ClientIP); the timeout is
    /// part of the name, as a set's timeout cannot change.
    pub fn affinity_set(key: &str, port: &ServicePort, endpoint: SocketAddrV4) -> Option<String> {
        let timeout = port.affinity_timeout?;
        Some(format!(
            "aff_{}",
            hash12(&format!(
                "{key}/{}/{}/{endpoint}/{timeout}",
                port.name, port.protocol
            ))
        ))
    }

    /// Every chain the table holds for `services`, base chains included.
    pub fn chain_names(&self, services: &ServiceMap) -> BTreeSet<String> {
        let mut names: BTreeSet<String> = BASE_CHAINS.iter().map(|c| c.to_string()).collect();
        names.extend((1..=MAX_DIRECT_ENDPOINTS).map(Self::pick_chain));
        for (key, ports) in services {
            for (name, _) in chains_of(key, ports) {
                names.insert(name);
            }
        }
        names
    }

    /// The table, its maps and base chains; the base chains are flushed and refilled,
    /// elements and per-Service chains are left alone.
    pub fn base(&self) -> String {
        let t = &self.table;
        let mut s = format!("add table ip {t}\n");
        for (map, key) in [
            ("services", "ipv4_addr . inet_proto . inet_service"),
            ("node_ports", "inet_proto . inet_service"),
            ("no_endpoints", "ipv4_addr . inet_proto . inet_service"),
            ("no_endpoint_node_ports", "inet_proto . inet_service"),
        ] {
            let _ = writeln!(s, "add map ip {t} {map} {{ type {key} : verdict; }}");
        }
        // `typeof`: the slot is numgen's 32-bit integer, which has no `type` name.
        let _ = writeln!(
            s,
            "add map ip {t} endpoints {{ typeof ip daddr . meta l4proto . th dport . numgen random mod 1 : ip daddr . th dport; }}"
        );
        let _ = writeln!(
            s,
            "add set ip {t} hairpin {{ type ipv4_addr . inet_proto . ipv4_addr . ipv4_addr . inet_service; }}"
        );
        let plain = ["services".to_string(), REJECT_CHAIN.to_string()];
        for chain in plain
            .into_iter()
            .chain((1..=MAX_DIRECT_ENDPOINTS).map(Self::pick_chain))
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
        let picks = (1..=MAX_DIRECT_ENDPOINTS).map(|n| {
            (
                Self::pick_chain(n),
                vec![format!(
                    "dnat ip to ip daddr . meta l4proto . th dport . numgen random mod {n} map @endpoints"
                )],
            )
        });
        for (chain, rules) in [
            ("prerouting".to_string(), vec!["jump services".to_string()]),
            ("output".to_string(), vec!["jump services".to_string()]),
            (
                "services".to_string(),
                vec![
                    "ip daddr . meta l4proto . th dport vmap @services".to_string(),
                    // Node ports: on any of the host's addresses, 127.0.0.1 included (the
                    // engine turns route_localnet on for its bridges, which the replies
                    // of such connections need).
                    "fib daddr type local meta l4proto . th dport vmap @node_ports".to_string(),
                ],
            ),
            (
                "postrouting".to_string(),
                vec![
                    format!("meta mark & {m:#x} == {m:#x} masquerade"),
                    // A direct port's endpoint reaching itself through the Service: its
                    // reply must come back through this node's NAT.
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

    /// Rewrites one Service from `old` (what the table holds for it) to `new`: its sets
    /// and chains, then its map elements, then the chains and sets it no longer needs.
    pub fn service(&self, key: &str, old: &[ServicePort], new: &[ServicePort]) -> String {
        let t = &self.table;
        let mut s = String::new();
        let wanted_sets = sets_of(key, new);
        for (name, timeout) in &wanted_sets {
            let _ = writeln!(
                s,
                "add set ip {t} {name} {{ type ipv4_addr; flags dynamic,timeout; timeout {timeout}s; }}"
            );
        }
        let wanted = chains_of(key, new);
        let wanted_names: BTreeSet<&String> = wanted.iter().map(|(n, _)| n).collect();
        for (name, rules) in &wanted {
            let _ = writeln!(s, "add chain ip {t} {name}");
            let _ = writeln!(s, "flush chain ip {t} {name}");
            for rule in rules {
                let _ = writeln!(s, "add rule ip {t} {name} {rule}");
            }
        }
        // Only the elements that differ: an element whose data changes is deleted, then
        // added again.
        let old_elements: BTreeSet<(&str, String)> = elements_of(key, old).into_iter().collect();
        let new_elements: BTreeSet<(&str, String)> = elements_of(key, new).into_iter().collect();
        for (map, elem) in old_elements.difference(&new_elements) {
            let key = elem.split(" : ").next().unwrap_or_default();
            let _ = writeln!(s, "delete element ip {t} {map} {{ {key} }}");
        }
        for (map, elem) in new_elements.difference(&old_elements) {
            let _ = writeln!(s, "add element ip {t} {map} {{ {elem} }}");
        }
        let stale: Vec<String> = chains_of(key, old)
            .into_iter()
            .map(|(n, _)| n)
            .filter(|n| !wanted_names.contains(n))
            .collect();
        // Flushed first: a Service chain refers to its endpoint chains.
        for name in &stale {
            let _ = writeln!(s, "flush chain ip {t} {name}");
        }
        for name in &stale {
            let _ = writeln!(s, "delete chain ip {t} {name}");
        }
        for (name, _) in sets_of(key, old) {
            if !wanted_sets.iter().any(|(n, _)| *n == name) {
                let _ = writeln!(s, "delete set ip {t} {name}");
            }
        }
        s
    }

    /// The whole table for `services`, replacing whatever is there, in one transaction.
    pub fn replace(&self, services: &ServiceMap) -> String {
        let mut s = self.delete_table();
        s.push_str(&self.base());
        for (key, ports) in services {
            s.push_str(&self.service(key, &[], ports));
        }
        s
    }

    /// Deletes the table, whether or not it exists.
    pub fn delete_table(&self) -> String {
        format!("add table ip {t}\ndelete table ip {t}\n", t = self.table)
    }
}

fn port_hash(key: &str, port: &ServicePort) -> String {
    hash12(&format!("{key}/{}/{}", port.name, port.protocol))
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

/// Whether a port needs no chain of its own (see the module's documentation): a cluster
/// IP only, no traffic policy Local, no session affinity, 1 to [`MAX_DIRECT_ENDPOINTS`]
/// endpoints.
fn direct(port: &ServicePort) -> bool {
    port.cluster_ip.is_some()
        && !paths(port).exposed
        && !port.internal_local
        && !port.external_local
        && port.affinity_timeout.is_none()
        && (1..=MAX_DIRECT_ENDPOINTS).contains(&port.endpoints.len())
}

/// One `svc_`/`svl_` chain: stick to the endpoint a client had (affinity), else pick one
/// at random.
fn balance(key: &str, port: &ServicePort, endpoints: &[SocketAddrV4]) -> Vec<String> {
    let mut rules = Vec::new();
    let mut choices = Vec::new();
    for (i, ep) in endpoints.iter().enumerate() {
        let chain = ServiceRules::endpoint_chain(key, port, *ep);
        if let Some(set) = ServiceRules::affinity_set(key, port, *ep) {
            rules.push(format!("ip saddr @{set} goto {chain}"));
        }
        choices.push(format!("{i} : goto {chain}"));
    }
    rules.push(format!(
        "numgen random mod {} vmap {{ {} }}",
        choices.len(),
        choices.join(", ")
    ));
    rules
}

/// The affinity sets of one Service and their timeouts in seconds.
fn sets_of(key: &str, ports: &[ServicePort]) -> Vec<(String, u32)> {
    let mut out = Vec::new();
    for port in ports {
        let Some(timeout) = port.affinity_timeout else {
            continue;
        };
        for ep in all_endpoints(port) {
            if let Some(set) = ServiceRules::affinity_set(key, port, ep) {
                out.push((set, timeout));
            }
        }
    }
    out
}

/// Every endpoint some chain of `port` leads to.
fn all_endpoints(port: &ServicePort) -> BTreeSet<SocketAddrV4> {
    port.endpoints
        .iter()
        .chain(&port.local_endpoints)
        .copied()
        .collect()
}

/// The chains of one Service and their rules: endpoint chains first.
fn chains_of(key: &str, ports: &[ServicePort]) -> Vec<(String, Vec<String>)> {
    let mut out = Vec::new();
    for port in ports.iter().filter(|p| !direct(p)) {
        for ep in all_endpoints(port) {
            let mut rules = vec![
                // Hairpin: a pod reaching itself through its Service must see the
                // connection come from elsewhere, or its reply would skip the NAT.
                format!(
                    "ip saddr {} meta mark set meta mark | {:#x}",
                    ep.ip(),
                    MASQUERADE_MARK
                ),
            ];
            if let Some(set) = ServiceRules::affinity_set(key, port, ep) {
                rules.push(format!("update @{set} {{ ip saddr }}"));
            }
            rules.push(format!(
                "meta l4proto {} dnat ip to {}:{}",
                port.protocol,
                ep.ip(),
                ep.port()
            ));
            out.push((ServiceRules::endpoint_chain(key, port, ep), rules));
        }
        if !port.endpoints.is_empty() {
            out.push((
                ServiceRules::service_chain(key, port),
                balance(key, port, &port.endpoints),
            ));
        }
        let local = port.internal_local || port.external_local;
        if local && !port.local_endpoints.is_empty() {
            out.push((
                ServiceRules::local_chain(key, port),
                balance(key, port, &port.local_endpoints),
            ));
        }
        let p = paths(port);
        if p.exposed && !port.endpoints.is_empty() {
            let m = MASQUERADE_MARK;
            let cluster = ServiceRules::service_chain(key, port);
            let rules = if port.external_local {
                // The source is kept, so only this node's endpoints can answer; the host
                // itself (and 127.0.0.1) still reaches every endpoint, masqueraded.
                let mut rules = vec![format!(
                    "fib saddr type local meta mark set meta mark | {m:#x} goto {cluster}"
                )];
                if !p.external.is_empty() {
                    rules.push(format!("goto {}", ServiceRules::local_chain(key, port)));
                }
                rules
            } else {
                vec![
                    // Masqueraded so replies come back through this node.
                    format!("meta mark set meta mark | {m:#x}"),
                    format!("goto {cluster}"),
                ]
            };
            out.push((ServiceRules::external_chain(key, port), rules));
        }
    }
    out
}

/// The map elements of one Service: `(map, "key : data")`.
fn elements_of(key: &str, ports: &[ServicePort]) -> Vec<(&'static str, String)> {
    let mut out = Vec::new();
    for port in ports {
        let p = paths(port);
        let proto = port.protocol;
        if let (true, Some(ip)) = (direct(port), port.cluster_ip) {
            let n = port.endpoints.len();
            let chain = ServiceRules::pick_chain(n);
            out.push((
                "services",
                format!("{ip} . {proto} . {} : goto {chain}", port.port),
            ));
            for (slot, ep) in port.endpoints.iter().enumerate() {
                let (addr, target) = (ep.ip(), ep.port());
                out.push((
                    "endpoints",
                    format!(
                        "{ip} . {proto} . {} . {slot} : {addr} . {target}",
                        port.port
                    ),
                ));
                out.push((
                    "hairpin",
                    format!("{ip} . {proto} . {addr} . {addr} . {target}"),
                ));
            }
            continue;
        }
        // Without any endpoint the connection is refused; when only a Local policy leaves
        // none, kube-proxy drops it instead (another node may have endpoints).
        let none = |local: bool| {
            if port.endpoints.is_empty() || !local {
                format!("goto {REJECT_CHAIN}")
            } else {
                "drop".to_string()
            }
        };
        if let Some(ip) = port.cluster_ip {
            if p.internal.is_empty() {
                out.push((
                    "no_endpoints",
                    format!(
                        "{ip} . {proto} . {} : {}",
                        port.port,
                        none(port.internal_local)
                    ),
                ));
            } else {
                let chain = if port.internal_local {
                    ServiceRules::local_chain(key, port)
                } else {
                    ServiceRules::service_chain(key, port)
                };
                out.push((
                    "services",
                    format!("{ip} . {proto} . {} : goto {chain}", port.port),
                ));
            }
        }
        if !p.exposed {
            continue;
        }
        if !port.endpoints.is_empty() {
            let chain = ServiceRules::external_chain(key, port);
            for ip in &port.load_balancer_ips {
                out.push((
                    "services",
                    format!("{ip} . {proto} . {} : goto {chain}", port.port),
                ));
            }
            if let Some(np) = port.node_port {
                out.push(("node_ports", format!("{proto} . {np} : goto {chain}")));
            }
        }
        if p.external.is_empty() {
            let verdict = none(port.external_local);
            for ip in &port.load_balancer_ips {
                out.push((
                    "no_endpoints",
                    format!("{ip} . {proto} . {} : {verdict}", port.port),
                ));
            }
            if let Some(np) = port.node_port {
                out.push((
                    "no_endpoint_node_ports",
                    format!("{proto} . {np} : {verdict}"),
                ));
            }
        }
    }
    out
}

/// How many elements the `services` map holds for `services`.
pub fn service_elements(services: &ServiceMap) -> usize {
    services
        .iter()
        .map(|(k, p)| {
            elements_of(k, p)
                .iter()
                .filter(|(m, _)| *m == "services")
                .count()
        })
        .sum()
}
