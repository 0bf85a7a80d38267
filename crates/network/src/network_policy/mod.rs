//! The data path of Kubernetes NetworkPolicies for the pods of this node, in a table of
//! skiff's own.
//!
//! # Shape
//!
//! The caller (the network policy controller of `skiff server`) computes, for every pod
//! of this node that some policy isolates, what it may receive and send: a
//! [`PolicyMap`] of [`PodPolicy`]s with selectors and named ports already resolved to
//! addresses and numbers. [`PolicyEnforcer::sync`] remembers what it applied and writes
//! only the pods whose rules changed, in one `nft` transaction; when it does not know
//! what the kernel holds (first sync, a failed transaction, [`PolicyEnforcer::verify`]
//! finding a chain gone) it rebuilds the whole table, also in one transaction.
//!
//! # Where packets are seen
//!
//! One `filter` chain at the `forward` hook of `table ip <table>`, which sees:
//! pod-to-pod traffic routed through the host (Services: after their DNAT, so rules
//! apply to the pod address), traffic between pods and other hosts, and pod-to-pod
//! traffic bridged on the pod bridge — the last only while
//! `net.bridge.bridge-nf-call-iptables` is 1 ([`ensure_bridge_netfilter`]), as
//! Kubernetes requires of every node. Traffic between a pod and its own node (the
//! `output` and `input` hooks) is not filtered: Kubernetes always allows it (kubelet
//! probes, the node's cluster DNS).

pub mod render;

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::sync::Arc;

use ipnet::Ipv4Net;
use serde_json::Value;

pub use self::render::PolicyRules;
use crate::nft::{Nft, NftError};
use crate::sysctl::{Sysctl, SysctlError};

/// The kernel parameter that hands bridged IPv4 frames to the `ip` family's hooks.
pub const BRIDGE_NF_CALL_IPTABLES: &str = "net/bridge/bridge-nf-call-iptables";

/// Who is on the other side of a connection an [`Allow`] lets through.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Peer {
    /// Anyone (an empty `from`/`to`).
    Any,
    /// These addresses (pods matched by selectors); empty matches nothing.
    Addrs(BTreeSet<Ipv4Addr>),
    /// An `ipBlock`: the CIDR without the `except` ranges.
    Block {
        /// `cidr`.
        cidr: Ipv4Net,
        /// `except`.
        except: Vec<Ipv4Net>,
    },
}

/// A port a rule allows; numbers only (named ports are resolved by the caller).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PortMatch {
    /// `tcp`, `udp` or `sctp`.
    pub protocol: String,
    /// `port` to `endPort` (both `port` without one); `None`: every port of the protocol.
    pub range: Option<(u16, u16)>,
}

/// One allowed kind of traffic: from (ingress) or to (egress) `peer`, on any of `ports`
/// (an empty list allows every port).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Allow {
    /// The other side.
    pub peer: Peer,
    /// The destination ports.
    pub ports: Vec<PortMatch>,
}

/// What one pod of this node may receive and send.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PodPolicy {
    /// The pod's address.
    pub ip: Option<Ipv4Addr>,
    /// `None`: not isolated for ingress; otherwise what is allowed in (empty: nothing).
    pub ingress: Option<Vec<Allow>>,
    /// `None`: not isolated for egress; otherwise what is allowed out (empty: nothing).
    pub egress: Option<Vec<Allow>>,
}

/// Every isolated pod of this node, by `namespace/name`.
pub type PolicyMap = BTreeMap<String, PodPolicy>;

/// What one [`PolicyEnforcer::sync`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SyncReport {
    /// The whole table was rebuilt.
    pub rebuilt: bool,
    /// Pods whose rules were rewritten.
    pub pods_changed: usize,
}

/// Programs NetworkPolicies into skiff's policy table and remembers what it applied.
pub struct PolicyEnforcer {
    rules: PolicyRules,
    nft: Arc<dyn Nft>,
    /// What the table holds, when known; `None` means rebuild on the next sync.
    applied: Option<PolicyMap>,
}

impl std::fmt::Debug for PolicyEnforcer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PolicyEnforcer")
            .field("table", &self.rules.table())
            .finish_non_exhaustive()
    }
}

impl PolicyEnforcer {
    /// An enforcer programming `table ip <table>` through `nft`.
    pub fn new(table: &str, nft: Arc<dyn Nft>) -> Result<PolicyEnforcer, NftError> {
        Ok(PolicyEnforcer {
            rules: PolicyRules::new(table)?,
            nft,
            applied: None,
        })
    }

    /// The table name.
    pub fn table(&self) -> &str {
        self.rules.table()
    }

    /// Makes the table hold exactly `desired`: only the changed pods when the table is
    /// known to match what was applied before, the whole table otherwise.
    pub fn sync(&mut self, desired: &PolicyMap) -> Result<SyncReport, NftError> {
        let table = self.rules.table().to_string();
        let Some(applied) = &self.applied else {
            self.nft.apply(&table, &self.rules.replace(desired))?;
            self.applied = Some(desired.clone());
            return Ok(SyncReport {
                rebuilt: true,
                pods_changed: desired.len(),
            });
        };
        let keys: BTreeSet<&String> = applied.keys().chain(desired.keys()).collect();
        let mut script = String::new();
        let mut changed = 0;
        for key in keys {
            let (old, new) = (applied.get(key), desired.get(key));
            if old != new {
                script.push_str(&self.rules.pod(key, old, new));
                changed += 1;
            }
        }
        if changed == 0 {
            return Ok(SyncReport::default());
        }
        if let Err(e) = self.nft.apply(&table, &script) {
            self.applied = None;
            return Err(e);
        }
        self.applied = Some(desired.clone());
        Ok(SyncReport {
            rebuilt: false,
            pods_changed: changed,
        })
    }

    /// Compares the table's chains with what was applied; returns `false`, and forgets
    /// the applied state so the next sync rebuilds, when they differ.
    pub fn verify(&mut self) -> Result<bool, NftError> {
        let Some(applied) = &self.applied else {
            return Ok(false);
        };
        let ok = match self.nft.list_table(self.rules.table())? {
            None => false,
            Some(listing) => listed_chains(&listing) == self.rules.chain_names(applied),
        };
        if !ok {
            self.applied = None;
        }
        Ok(ok)
    }

    /// Deletes the table; no error when it does not exist.
    pub fn remove(&mut self) -> Result<(), NftError> {
        self.applied = None;
        let table = self.rules.table().to_string();
        self.nft.apply(&table, &self.rules.delete_table())
    }
}

/// Turns `net.bridge.bridge-nf-call-iptables` on when it is off, so pod-to-pod traffic
/// bridged on this node reaches the policy chain (Kubernetes requires it of nodes).
/// Returns whether it changed it; an error when the parameter does not exist (the
/// `br_netfilter` module is not loaded).
pub fn ensure_bridge_netfilter(sysctl: &dyn Sysctl) -> Result<bool, SysctlError> {
    if sysctl.get(BRIDGE_NF_CALL_IPTABLES)? == "1" {
        return Ok(false);
    }
    sysctl.set(BRIDGE_NF_CALL_IPTABLES, "1")?;
    Ok(true)
}

fn listed_chains(listing: &Value) -> BTreeSet<String> {
    listing
        .get("nftables")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|item| item.pointer("/chain/name").and_then(Value::as_str))
        .map(str::to_string)
        .collect()
}

#[cfg(test)]
mod tests;
