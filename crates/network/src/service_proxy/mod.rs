//! The data path of Kubernetes Services (what kube-proxy's nftables mode programs), in
//! a table of skiff's own.
//!
//! # Shape
//!
//! The caller (the service proxy controller of `skiff server`) computes what every
//! Service needs, a [`ServiceMap`] of [`ServicePort`]s, and hands it to
//! [`ServiceProxy::sync`]. The proxy remembers what it last applied and writes only the
//! difference: the set and map elements of the Services that changed (and a shared pick
//! chain, its entry set and its rule in `services` or `output` when the first entry
//! needs it or the last one leaves it), all in one `nft`
//! transaction. When it does not know what the kernel holds (first sync, a failed
//! transaction, or [`ServiceProxy::verify`] finding the table or a chain gone) it
//! rebuilds the whole table, also in one transaction.
//!
//! The table is separate from the engine's ([`crate::nft`]): the engine rebuilds its
//! own table whenever it differs from what its networks need, which would drop Service
//! rules it does not know about. Like the engine, skiff never touches any other table
//! and never flushes the ruleset.
//!
//! Per packet, the cost does not grow with the number of Services or endpoints (see
//! [`render`] for the layout): one lookup of `daddr . proto . dport` (or of the node
//! port) in the entry set of each pick in use (a handful: one per way of picking and
//! endpoint count, not per Service), then one lookup of the endpoint in slot `numgen random mod
//! N` (with session affinity, first one lookup per endpoint of the client's slot, as
//! kube-proxy's per-endpoint sets). Every Service is only map elements, so a change of
//! any Service is an element update.

pub mod render;

use std::cmp::Ordering;
use std::collections::{BTreeMap, BTreeSet};
use std::net::{Ipv4Addr, SocketAddrV4};
use std::sync::Arc;

use serde_json::Value;

pub use self::render::ServiceRules;
use crate::nft::{Nft, NftError};
use crate::ports::Protocol;

/// One port of a Service, as the data path needs it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ServicePort {
    /// The port's name (empty when the Service has a single unnamed port).
    pub name: String,
    /// TCP or UDP.
    pub protocol: Protocol,
    /// The Service's virtual address; `None` for headless Services (nothing is programmed
    /// for the cluster IP then, node ports still are).
    pub cluster_ip: Option<Ipv4Addr>,
    /// The Service's port on the cluster IP.
    pub port: u16,
    /// The node port, for NodePort and LoadBalancer Services.
    pub node_port: Option<u16>,
    /// The addresses a load balancer gave the Service (`status.loadBalancer.ingress`),
    /// reached on `port` like the node port.
    pub load_balancer_ips: Vec<Ipv4Addr>,
    /// Where connections go, one chosen at random per connection: the ready endpoints,
    /// or the serving (terminating) ones when none is ready.
    pub endpoints: Vec<SocketAddrV4>,
    /// The same, among the endpoints on this node only (chosen the same way).
    pub local_endpoints: Vec<SocketAddrV4>,
    /// `internalTrafficPolicy: Local`: cluster-IP traffic only to `local_endpoints`.
    pub internal_local: bool,
    /// `externalTrafficPolicy: Local`: node-port and load-balancer traffic only to
    /// `local_endpoints`, with the client's source address kept.
    pub external_local: bool,
    /// `sessionAffinity: ClientIP`: seconds a client keeps reaching the endpoint it had.
    pub affinity_timeout: Option<u32>,
}

impl ServicePort {
    /// A port without node port, load balancer, endpoints, policies or affinity.
    pub fn new(name: &str, protocol: Protocol, cluster_ip: Option<Ipv4Addr>, port: u16) -> Self {
        ServicePort {
            name: name.to_string(),
            protocol,
            cluster_ip,
            port,
            node_port: None,
            load_balancer_ips: Vec::new(),
            endpoints: Vec::new(),
            local_endpoints: Vec::new(),
            internal_local: false,
            external_local: false,
            affinity_timeout: None,
        }
    }
}

/// Every Service's ports, by `namespace/name`.
pub type ServiceMap = BTreeMap<String, Vec<ServicePort>>;

/// What one [`ServiceProxy::sync`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SyncReport {
    /// The whole table was rebuilt.
    pub rebuilt: bool,
    /// Services whose rules were rewritten.
    pub services_changed: usize,
}

/// Programs Services into skiff's service table and remembers what it applied.
pub struct ServiceProxy {
    rules: ServiceRules,
    nft: Arc<dyn Nft>,
    /// What the table holds, when known; `None` means rebuild on the next sync.
    applied: Option<ServiceMap>,
    /// How many entries of `applied` use each pick chain.
    picks: BTreeMap<render::Pick, usize>,
}

impl std::fmt::Debug for ServiceProxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServiceProxy")
            .field("table", &self.rules.table())
            .finish_non_exhaustive()
    }
}

impl ServiceProxy {
    /// A proxy programming `table ip <table>` through `nft`.
    pub fn new(table: &str, nft: Arc<dyn Nft>) -> Result<ServiceProxy, NftError> {
        Ok(ServiceProxy {
            rules: ServiceRules::new(table)?,
            nft,
            applied: None,
            picks: BTreeMap::new(),
        })
    }

    /// The table name.
    pub fn table(&self) -> &str {
        self.rules.table()
    }

    /// Makes the table hold exactly `desired`: the changed Services only when the table
    /// is known to match what was applied before, the whole table otherwise.
    pub fn sync(&mut self, desired: &ServiceMap) -> Result<SyncReport, NftError> {
        let table = self.rules.table().to_string();
        let Some(applied) = &self.applied else {
            let script = self.rules.replace(desired);
            self.nft.apply(&table, &script)?;
            self.applied = Some(desired.clone());
            self.picks = render::picks_of_map(desired);
            return Ok(SyncReport {
                rebuilt: true,
                services_changed: desired.len(),
            });
        };
        let changes = changed_services(applied, desired);
        if changes.is_empty() {
            return Ok(SyncReport::default());
        }
        // The pick chains in use before and after: new ones are made first, unused ones
        // deleted last, in the same transaction.
        let mut picks = self.picks.clone();
        for (_, old, new) in &changes {
            for pick in render::picks_of(old) {
                if let Some(count) = picks.get_mut(&pick) {
                    *count -= 1;
                    if *count == 0 {
                        picks.remove(&pick);
                    }
                }
            }
            for pick in render::picks_of(new) {
                *picks.entry(pick).or_default() += 1;
            }
        }
        let mut script = String::new();
        // Rendered only when the picks in use change (rarely: most changes keep every
        // entry's way of picking and its endpoint count, or one in use elsewhere).
        let same = self.picks.keys().eq(picks.keys());
        let shared = |picks: &BTreeMap<render::Pick, usize>| {
            if same {
                (BTreeMap::new(), BTreeMap::new())
            } else {
                (
                    render::pick_sets(picks.keys()),
                    render::pick_chains(picks.keys()),
                )
            }
        };
        let ((sets_before, before), (sets_after, after)) = (shared(&self.picks), shared(&picks));
        if !same {
            script.push_str(
                &self
                    .rules
                    .add_chains(&added(&sets_before, &sets_after), &added(&before, &after)),
            );
            script.push_str(&self.rules.dispatch(picks.keys()));
        }
        for (_, old, new) in &changes {
            script.push_str(&self.rules.service(old, new));
        }
        if !same {
            let chains: Vec<&String> = before.keys().filter(|n| !after.contains_key(*n)).collect();
            let sets: Vec<&String> = sets_before
                .keys()
                .filter(|n| !sets_after.contains_key(*n))
                .collect();
            script.push_str(&self.rules.delete_chains(&chains, &sets));
        }
        let changed = changes.len();
        // What the table will hold, by changed key only: copying the whole map on every
        // change would cost more than the diff at 10,000 Services.
        let updates: Vec<(String, Vec<ServicePort>)> = changes
            .into_iter()
            .map(|(key, _, new)| (key.clone(), new.to_vec()))
            .collect();
        if let Err(e) = self.nft.apply(&table, &script) {
            // Nothing of the transaction was applied, but the table may differ from what
            // we believe (someone changed it): start over next time.
            self.applied = None;
            return Err(e);
        }
        self.picks = picks;
        if let Some(applied) = &mut self.applied {
            for (key, ports) in updates {
                if ports.is_empty() {
                    applied.remove(&key);
                } else {
                    applied.insert(key, ports);
                }
            }
        }
        Ok(SyncReport {
            rebuilt: false,
            services_changed: changed,
        })
    }

    /// Compares the table with what was applied (its chains and the `endpoints` map's
    /// elements); returns `false`, and forgets the applied state so the next sync
    /// rebuilds, when they differ (the table or a chain was deleted by someone).
    pub fn verify(&mut self) -> Result<bool, NftError> {
        let Some(applied) = &self.applied else {
            return Ok(false);
        };
        let table = self.rules.table();
        let ok = match self.nft.list_chains_and_map(table, "endpoints")? {
            None => false,
            Some(listing) => {
                let (chains, elements) = listed_chains_and_elements(&listing);
                chains == self.rules.chain_names(applied)
                    && elements == render::service_elements(applied)
            }
        };
        if !ok {
            self.applied = None;
        }
        Ok(ok)
    }

    /// Deletes the table (`skiff system reset`); no error when it does not exist.
    pub fn remove(&mut self) -> Result<(), NftError> {
        self.applied = None;
        let table = self.rules.table().to_string();
        self.nft.apply(&table, &self.rules.delete_table())
    }
}

/// The Services whose ports differ between `old` and `new` (a missing Service has no
/// ports), with both versions, in key order. One walk over the two sorted maps: no
/// lookups, no allocation per unchanged Service.
fn changed_services<'a>(
    old: &'a ServiceMap,
    new: &'a ServiceMap,
) -> Vec<(&'a String, &'a [ServicePort], &'a [ServicePort])> {
    let mut out = Vec::new();
    let (mut olds, mut news) = (old.iter().peekable(), new.iter().peekable());
    loop {
        let order = match (olds.peek(), news.peek()) {
            (None, None) => break,
            (Some(_), None) => Ordering::Less,
            (None, Some(_)) => Ordering::Greater,
            (Some((a, _)), Some((b, _))) => a.cmp(b),
        };
        let (key, before, after): (&String, &[ServicePort], &[ServicePort]) = match order {
            Ordering::Less => {
                let (key, ports) = olds.next().expect("peeked");
                (key, ports, &[])
            }
            Ordering::Greater => {
                let (key, ports) = news.next().expect("peeked");
                (key, &[], ports)
            }
            Ordering::Equal => {
                let (key, before) = olds.next().expect("peeked");
                let (_, after) = news.next().expect("peeked");
                (key, before, after)
            }
        };
        if before != after {
            out.push((key, before, after));
        }
    }
    out
}

/// The entries of `new` whose names `old` lacks.
fn added<T: Clone>(old: &BTreeMap<String, T>, new: &BTreeMap<String, T>) -> BTreeMap<String, T> {
    new.iter()
        .filter(|(name, _)| !old.contains_key(*name))
        .map(|(name, v)| (name.clone(), v.clone()))
        .collect()
}

/// Chain names and the number of elements of the `endpoints` map in a listing.
fn listed_chains_and_elements(listing: &Value) -> (BTreeSet<String>, usize) {
    let mut chains = BTreeSet::new();
    let mut elements = 0;
    for item in listing
        .get("nftables")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        if let Some(name) = item.pointer("/chain/name").and_then(Value::as_str) {
            chains.insert(name.to_string());
        }
        let set = item.get("map").or_else(|| item.get("set"));
        if set.and_then(|s| s.get("name")).and_then(Value::as_str) == Some("endpoints") {
            elements = set
                .and_then(|s| s.get("elem"))
                .and_then(Value::as_array)
                .map_or(0, Vec::len);
        }
    }
    (chains, elements)
}

/// The service tables of other skiff roots on this host (`skiff*_svc` but `own`) whose
/// rules route `addr`. Every table's DNAT hooks see every packet and the newest wins, so a
/// cluster IP in two of them (two servers on one `--service-cidr`) sends one cluster's
/// pods to the other's Services; `skiff server` warns when its cluster DNS address is one.
pub fn other_tables_routing(
    nft: &dyn Nft,
    own: &str,
    addr: Ipv4Addr,
) -> Result<Vec<String>, NftError> {
    let quoted = format!("\"{addr}\"");
    let mut found = Vec::new();
    for table in nft.list_tables()? {
        if table == own || !table.starts_with("skiff") || !table.ends_with("_svc") {
            continue;
        }
        if let Some(listing) = nft.list_table(&table)? {
            if listing.to_string().contains(&quoted) {
                found.push(table);
            }
        }
    }
    Ok(found)
}

#[cfg(test)]
mod tests;
