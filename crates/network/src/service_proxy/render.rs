//! Service rules as nft scripts.
//!
//! ```text
//! table ip <table>
//!   map services        ip . proto . port : verdict     cluster IP -> goto svc_<hash>
//!   map node_ports      proto . port : verdict          node port  -> goto svc_<hash>
//!   set node_port_keys  proto . port                    node ports (marked for masquerade)
//!   chain prerouting    nat, prerouting -110: jump services   (pods, other hosts)
//!   chain output        nat, output -110:     jump services   (the host itself)
//!   chain services      the three lookups above
//!   chain svc_<hash>    one per Service port: numgen random mod N vmap { i : goto ep_<hash> }
//!   chain ep_<hash>     one per endpoint: mark hairpin traffic, dnat to the endpoint
//!   chain postrouting   nat, postrouting 110: masquerade what carries MASQUERADE_MARK
//! ```
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

const BASE_CHAINS: [&str; 4] = ["prerouting", "output", "postrouting", "services"];

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

    /// The chain a Service port's traffic goes to.
    pub fn service_chain(key: &str, port: &ServicePort) -> String {
        format!(
            "svc_{}",
            hash12(&format!("{key}/{}/{}", port.name, port.protocol))
        )
    }

    /// The chain that sends a Service port's connection to `endpoint`.
    pub fn endpoint_chain(key: &str, port: &ServicePort, endpoint: SocketAddrV4) -> String {
        format!(
            "ep_{}",
            hash12(&format!("{key}/{}/{}/{endpoint}", port.name, port.protocol))
        )
    }

    /// Every chain the table holds for `services`, base chains included.
    pub fn chain_names(&self, services: &ServiceMap) -> BTreeSet<String> {
        let mut names: BTreeSet<String> = BASE_CHAINS.iter().map(|c| c.to_string()).collect();
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
        let _ = writeln!(
            s,
            "add map ip {t} services {{ type ipv4_addr . inet_proto . inet_service : verdict; }}"
        );
        let _ = writeln!(
            s,
            "add map ip {t} node_ports {{ type inet_proto . inet_service : verdict; }}"
        );
        let _ = writeln!(
            s,
            "add set ip {t} node_port_keys {{ type inet_proto . inet_service; }}"
        );
        let _ = writeln!(s, "add chain ip {t} services");
        for (name, hook, priority) in [
            ("prerouting", "prerouting", -110),
            ("output", "output", -110),
            ("postrouting", "postrouting", 110),
        ] {
            let _ = writeln!(
                s,
                "add chain ip {t} {name} {{ type nat hook {hook} priority {priority}; policy accept; }}"
            );
        }
        let m = MASQUERADE_MARK;
        for (chain, rules) in [
            ("prerouting", vec!["jump services".to_string()]),
            ("output", vec!["jump services".to_string()]),
            (
                "services",
                vec![
                    "ip daddr . meta l4proto . th dport vmap @services".to_string(),
                    // Node ports: on any of the host's addresses, 127.0.0.1 included (the
                    // engine turns route_localnet on for its bridges, which the replies
                    // of such connections need). Masqueraded so replies come back here.
                    format!(
                        "fib daddr type local meta l4proto . th dport @node_port_keys meta mark set meta mark | {m:#x}"
                    ),
                    "fib daddr type local meta l4proto . th dport vmap @node_ports".to_string(),
                ],
            ),
            (
                "postrouting",
                vec![format!("meta mark & {m:#x} == {m:#x} masquerade")],
            ),
        ] {
            let _ = writeln!(s, "flush chain ip {t} {chain}");
            for rule in rules {
                let _ = writeln!(s, "add rule ip {t} {chain} {rule}");
            }
        }
        s
    }

    /// Rewrites one Service from `old` (what the table holds for it) to `new`: its chains,
    /// then its map elements, then the chains it no longer needs.
    pub fn service(&self, key: &str, old: &[ServicePort], new: &[ServicePort]) -> String {
        let t = &self.table;
        let mut s = String::new();
        let wanted = chains_of(key, new);
        let wanted_names: BTreeSet<&String> = wanted.iter().map(|(n, _)| n).collect();
        for (name, rules) in &wanted {
            let _ = writeln!(s, "add chain ip {t} {name}");
            let _ = writeln!(s, "flush chain ip {t} {name}");
            for rule in rules {
                let _ = writeln!(s, "add rule ip {t} {name} {rule}");
            }
        }
        for (map, elem) in elements_of(key, old) {
            let key = elem.split(" : ").next().unwrap_or_default();
            let _ = writeln!(s, "delete element ip {t} {map} {{ {key} }}");
        }
        for (map, elem) in elements_of(key, new) {
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

/// Ports that are programmed: those with endpoints (without, no element leads anywhere).
fn programmed(ports: &[ServicePort]) -> impl Iterator<Item = &ServicePort> {
    ports.iter().filter(|p| !p.endpoints.is_empty())
}

/// The chains of one Service and their rules: endpoint chains first.
fn chains_of(key: &str, ports: &[ServicePort]) -> Vec<(String, Vec<String>)> {
    let mut out = Vec::new();
    for port in programmed(ports) {
        let mut choices = Vec::new();
        for (i, ep) in port.endpoints.iter().enumerate() {
            let name = ServiceRules::endpoint_chain(key, port, *ep);
            out.push((
                name.clone(),
                vec![
                    // Hairpin: a pod reaching itself through its Service must see the
                    // connection come from elsewhere, or its reply would skip the NAT.
                    format!(
                        "ip saddr {} meta mark set meta mark | {:#x}",
                        ep.ip(),
                        MASQUERADE_MARK
                    ),
                    format!(
                        "meta l4proto {} dnat ip to {}:{}",
                        port.protocol,
                        ep.ip(),
                        ep.port()
                    ),
                ],
            ));
            choices.push(format!("{i} : goto {name}"));
        }
        out.push((
            ServiceRules::service_chain(key, port),
            vec![format!(
                "numgen random mod {} vmap {{ {} }}",
                choices.len(),
                choices.join(", ")
            )],
        ));
    }
    out
}

/// The map and set elements of one Service: `(set, "key : data")` or `(set, "key")`.
fn elements_of(key: &str, ports: &[ServicePort]) -> Vec<(&'static str, String)> {
    let mut out = Vec::new();
    for port in programmed(ports) {
        let chain = ServiceRules::service_chain(key, port);
        if let Some(ip) = port.cluster_ip {
            out.push((
                "services",
                format!("{ip} . {} . {} : goto {chain}", port.protocol, port.port),
            ));
        }
        if let Some(np) = port.node_port {
            out.push((
                "node_ports",
                format!("{} . {np} : goto {chain}", port.protocol),
            ));
            out.push(("node_port_keys", format!("{} . {np}", port.protocol)));
        }
    }
    out
}

/// How many elements the `services` map holds for `services`.
pub fn cluster_ip_elements(services: &ServiceMap) -> usize {
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
