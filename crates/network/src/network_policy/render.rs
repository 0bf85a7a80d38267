//! Policy rules as nft scripts.
//!
//! ```text
//! table ip <table>
//!   map ingress   pod ip : verdict   -> jump in_<hash>   (pods isolated for ingress)
//!   map egress    pod ip : verdict   -> jump eg_<hash>   (pods isolated for egress)
//!   chain forward filter, forward -5:
//!       ct state established,related accept     (replies of allowed connections)
//!       ip daddr vmap @ingress
//!       ip saddr vmap @egress
//!   chain in_<hash>   one per pod: each allowed peer/port `return`s, the rest is dropped
//!   chain eg_<hash>   the same for what the pod sends
//! ```
//!
//! Allowed traffic `return`s rather than `accept`s, so a connection between two pods of
//! this node passes both the receiver's ingress and the sender's egress chain. Chain
//! names are hashes of the pod's key, so a change rewrites only that pod's chains.

use std::collections::BTreeSet;
use std::fmt::Write as _;

use sha2::{Digest, Sha256};

use super::{Allow, Peer, PodPolicy, PolicyMap, PortMatch};
use crate::nft::{validate_table, NftError};

const BASE_CHAINS: [&str; 1] = ["forward"];

/// Which way a pod's chain filters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// What the pod receives (the peer is the source).
    Ingress,
    /// What the pod sends (the peer is the destination).
    Egress,
}

impl Direction {
    fn map(self) -> &'static str {
        match self {
            Direction::Ingress => "ingress",
            Direction::Egress => "egress",
        }
    }

    fn peer_field(self) -> &'static str {
        match self {
            Direction::Ingress => "ip saddr",
            Direction::Egress => "ip daddr",
        }
    }
}

/// Renders the scripts of one policy table.
#[derive(Debug, Clone)]
pub struct PolicyRules {
    table: String,
}

impl PolicyRules {
    /// Rules for `table ip <table>`.
    pub fn new(table: &str) -> Result<PolicyRules, NftError> {
        validate_table(table)?;
        Ok(PolicyRules {
            table: table.to_string(),
        })
    }

    /// The table name.
    pub fn table(&self) -> &str {
        &self.table
    }

    /// The chain of a pod's traffic in `direction`.
    pub fn pod_chain(key: &str, direction: Direction) -> String {
        let prefix = match direction {
            Direction::Ingress => "in",
            Direction::Egress => "eg",
        };
        let hash = hex::encode(&Sha256::digest(key.as_bytes())[..6]);
        format!("{prefix}_{hash}")
    }

    /// Every chain the table holds for `pods`, the base chain included.
    pub fn chain_names(&self, pods: &PolicyMap) -> BTreeSet<String> {
        let mut names: BTreeSet<String> = BASE_CHAINS.iter().map(|c| c.to_string()).collect();
        for (key, pod) in pods {
            names.extend(chains_of(key, pod).into_iter().map(|(n, _, _)| n));
        }
        names
    }

    /// The table, its maps and the base chain (flushed and refilled).
    pub fn base(&self) -> String {
        let t = &self.table;
        let mut s = format!("add table ip {t}\n");
        for map in ["ingress", "egress"] {
            let _ = writeln!(s, "add map ip {t} {map} {{ type ipv4_addr : verdict; }}");
        }
        let _ = writeln!(
            s,
            "add chain ip {t} forward {{ type filter hook forward priority -5; policy accept; }}"
        );
        let _ = writeln!(s, "flush chain ip {t} forward");
        for rule in [
            "ct state established,related accept",
            "ip daddr vmap @ingress",
            "ip saddr vmap @egress",
        ] {
            let _ = writeln!(s, "add rule ip {t} forward {rule}");
        }
        s
    }

    /// Rewrites one pod from `old` (what the table holds for it) to `new`: its chains,
    /// then its map elements, then the chains it no longer needs.
    pub fn pod(&self, key: &str, old: Option<&PodPolicy>, new: Option<&PodPolicy>) -> String {
        let t = &self.table;
        let mut s = String::new();
        let wanted = new.map(|p| chains_of(key, p)).unwrap_or_default();
        for (name, _, rules) in &wanted {
            let _ = writeln!(s, "add chain ip {t} {name}");
            let _ = writeln!(s, "flush chain ip {t} {name}");
            for rule in rules {
                let _ = writeln!(s, "add rule ip {t} {name} {rule}");
            }
        }
        let old_chains = old.map(|p| chains_of(key, p)).unwrap_or_default();
        if let Some(ip) = old.and_then(|p| p.ip) {
            for (_, direction, _) in &old_chains {
                let _ = writeln!(s, "delete element ip {t} {} {{ {ip} }}", direction.map());
            }
        }
        if let Some(ip) = new.and_then(|p| p.ip) {
            for (name, direction, _) in &wanted {
                let _ = writeln!(
                    s,
                    "add element ip {t} {} {{ {ip} : jump {name} }}",
                    direction.map()
                );
            }
        }
        for (name, _, _) in &old_chains {
            if !wanted.iter().any(|(n, _, _)| n == name) {
                let _ = writeln!(s, "delete chain ip {t} {name}");
            }
        }
        s
    }

    /// The whole table for `pods`, replacing whatever is there, in one transaction.
    pub fn replace(&self, pods: &PolicyMap) -> String {
        let mut s = self.delete_table();
        s.push_str(&self.base());
        for (key, pod) in pods {
            s.push_str(&self.pod(key, None, Some(pod)));
        }
        s
    }

    /// Deletes the table, whether or not it exists.
    pub fn delete_table(&self) -> String {
        format!("add table ip {t}\ndelete table ip {t}\n", t = self.table)
    }
}

/// A pod's chains (only the directions it is isolated in) and their rules.
fn chains_of(key: &str, pod: &PodPolicy) -> Vec<(String, Direction, Vec<String>)> {
    let mut out = Vec::new();
    for (direction, allows) in [
        (Direction::Ingress, &pod.ingress),
        (Direction::Egress, &pod.egress),
    ] {
        let Some(allows) = allows else { continue };
        let mut rules = Vec::new();
        if let (Some(ip), Direction::Ingress) = (pod.ip, direction) {
            // A pod cannot block access to itself (through its own Service).
            rules.push(format!("ip saddr {ip} return"));
        }
        for allow in allows {
            rules.extend(allow_rules(allow, direction));
        }
        rules.push("drop".to_string());
        out.push((PolicyRules::pod_chain(key, direction), direction, rules));
    }
    out
}

/// The rules of one [`Allow`]: one per port (none when the peer matches nothing).
pub fn allow_rules(allow: &Allow, direction: Direction) -> Vec<String> {
    let field = direction.peer_field();
    let peer = match &allow.peer {
        Peer::Any => String::new(),
        Peer::Addrs(addrs) if addrs.is_empty() => return Vec::new(),
        Peer::Addrs(addrs) => {
            let list: Vec<String> = addrs.iter().map(|a| a.to_string()).collect();
            format!("{field} {{ {} }} ", list.join(", "))
        }
        Peer::Block { cidr, except } if except.is_empty() => format!("{field} {cidr} "),
        Peer::Block { cidr, except } => {
            let list: Vec<String> = except.iter().map(|e| e.to_string()).collect();
            format!("{field} {cidr} {field} != {{ {} }} ", list.join(", "))
        }
    };
    if allow.ports.is_empty() {
        return vec![format!("{peer}return")];
    }
    allow
        .ports
        .iter()
        .map(|p| format!("{peer}{}return", port_match(p)))
        .collect()
}

fn port_match(p: &PortMatch) -> String {
    match p.range {
        None => format!("meta l4proto {} ", p.protocol),
        Some((a, b)) if a == b => format!("meta l4proto {} th dport {a} ", p.protocol),
        Some((a, b)) => format!("meta l4proto {} th dport {a}-{b} ", p.protocol),
    }
}
