//! Garbage collection and reconciliation: repair what killed processes and
//! vanished containers left behind, given the containers that still exist.

use std::collections::{BTreeSet, HashSet};
use std::net::Ipv4Addr;

use crate::networking::published;
use crate::nft::{Published, TableState};
use crate::{dns, Networking, Result};

/// What [`Networking::gc`] removed.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct GcReport {
    /// Attachments of containers that no longer exist, torn down: (network, container id).
    pub attachments: Vec<(String, String)>,
    /// Addresses held without an attachment record: (network, address).
    pub addresses: Vec<(String, Ipv4Addr)>,
    /// Veth devices on skiff's bridges that belong to no live attachment.
    pub links: Vec<String>,
    /// nftables elements that belong to no network or live attachment.
    pub elements: usize,
    /// Networks whose resolver was stopped because no container is left.
    pub resolvers: Vec<String>,
    /// Steps that failed; gc carries on past them and a later run retries.
    pub errors: Vec<String>,
}

impl Networking {
    /// Removes everything that belongs to containers not in `live`:
    /// attachments (veths, published ports, records), addresses, stray veths
    /// on skiff's bridges and stray nftables elements; stops idle resolvers.
    ///
    /// Call it with the engine's container lock held, so that no container
    /// is half-created (and so not yet in `live`) meanwhile.
    pub fn gc<S: AsRef<str>>(&self, live: &[S]) -> Result<GcReport> {
        let live: HashSet<&str> = live.iter().map(AsRef::as_ref).collect();
        let mut report = GcReport::default();
        let networks = self.store.list()?;
        let mut kept = Vec::new();
        for network in &networks {
            let records = self.records(network);
            let mut remaining = Vec::new();
            for a in records.list()? {
                if live.contains(a.container_id.as_str()) {
                    remaining.push(a);
                    continue;
                }
                match self.teardown(network, &a) {
                    Ok(()) => report
                        .attachments
                        .push((network.name.clone(), a.container_id.clone())),
                    Err(e) => {
                        report.errors.push(e.to_string());
                        remaining.push(a);
                    }
                }
            }
            let recorded: HashSet<String> =
                remaining.iter().map(|a| a.container_id.clone()).collect();
            match self
                .ipam(network)
                .release_unless(|owner| live.contains(owner) || recorded.contains(owner))
            {
                Ok(dropped) => report.addresses.extend(
                    dropped
                        .into_iter()
                        .map(|(ip, _)| (network.name.clone(), ip)),
                ),
                Err(e) => report.errors.push(e.to_string()),
            }
            if network.dns && remaining.is_empty() {
                match dns::stop(&self.store.dir(&network.name)) {
                    Ok(true) => report.resolvers.push(network.name.clone()),
                    Ok(false) => {}
                    Err(e) => report.errors.push(e.to_string()),
                }
            }
            kept.extend(remaining);
        }

        // Veths on skiff's bridges that no kept attachment owns.
        let links = self.netlink.links()?;
        let bridges: HashSet<u32> = links
            .iter()
            .filter(|l| networks.iter().any(|n| n.bridge == l.name))
            .map(|l| l.index)
            .collect();
        let owned: HashSet<&str> = kept.iter().map(|a| a.host_interface.as_str()).collect();
        for link in &links {
            if link.master.is_some_and(|m| bridges.contains(&m))
                && !owned.contains(link.name.as_str())
            {
                match self.netlink.delete_link(&link.name) {
                    Ok(_) => report.links.push(link.name.clone()),
                    Err(e) => report.errors.push(e.to_string()),
                }
            }
        }

        // nftables elements that no network or kept attachment accounts for.
        let table = self.rules.table();
        let _lock = self.rules_lock()?;
        if let Some(listing) = self.nft.list_table(table)? {
            let actual = TableState::from_listing(table, &listing)?;
            let wanted: BTreeSet<Published> = kept.iter().flat_map(published).collect();
            let stale = TableState {
                bridges: actual
                    .bridges
                    .iter()
                    .filter(|b| !networks.iter().any(|n| &n.bridge == *b))
                    .cloned()
                    .collect(),
                isolated: actual
                    .isolated
                    .iter()
                    .filter(|b| !networks.iter().any(|n| n.isolated && &n.bridge == *b))
                    .cloned()
                    .collect(),
                internal: actual
                    .internal
                    .iter()
                    .filter(|b| !networks.iter().any(|n| n.internal && &n.bridge == *b))
                    .cloned()
                    .collect(),
                same_bridge: actual
                    .same_bridge
                    .iter()
                    .filter(|b| !networks.iter().any(|n| &n.bridge == *b))
                    .cloned()
                    .collect(),
                subnets: actual
                    .subnets
                    .iter()
                    .filter(|s| !networks.iter().any(|n| &n.subnet == *s))
                    .copied()
                    .collect(),
                published: actual.published.difference(&wanted).copied().collect(),
                chains: Default::default(),
            };
            let count = stale.bridges.len()
                + stale.isolated.len()
                + stale.internal.len()
                + stale.same_bridge.len()
                + stale.subnets.len()
                + stale.published.len();
            if count > 0 {
                match self.nft.apply(table, &self.rules.delete_stale(&stale)) {
                    Ok(()) => report.elements = count,
                    Err(e) => report.errors.push(e.to_string()),
                }
            }
        }
        Ok(report)
    }

    /// [`Networking::gc`], then makes the host match the records of the live
    /// containers again: rules (rebuilt from the records, see
    /// [`Networking::sync_rules`]), bridges and resolvers (e.g. after
    /// `nft flush ruleset` or a reboot with persistent namespaces).
    pub fn reconcile<S: AsRef<str>>(&self, live: &[S]) -> Result<GcReport> {
        let report = self.gc(live)?;
        self.sync_rules()?;
        for network in self.store.list()? {
            let attachments = self.records(&network).list()?;
            if attachments.is_empty() && self.netlink.link(&network.bridge)?.is_none() {
                continue;
            }
            self.network_up(&network)?;
            if !attachments.is_empty() {
                self.ensure_dns(&network)?;
            }
        }
        Ok(report)
    }
}

#[cfg(test)]
mod tests {
    use crate::networking::fakes::fake;
    use crate::nft::{Nft, Published};
    use crate::{AttachRequest, NetworkOptions, PortMapping};

    #[test]
    fn gc_removes_what_dead_containers_left() {
        let f = fake();
        let net = f
            .net
            .create_network("web", &NetworkOptions::user())
            .unwrap();
        for (id, port) in [("live", "8080:80"), ("dead", "8081:80")] {
            let mut r = AttachRequest::new("web", id, format!("/ns/{id}"));
            r.ports = vec![port.parse::<PortMapping>().unwrap().into()];
            f.net.attach(&r).unwrap();
        }
        // A process killed after allocating, and a stray element and veth.
        f.net.ipam(&net).allocate("ghost", None).unwrap();
        let stray = Published {
            mapping: "9999:99".parse().unwrap(),
            target: "10.89.0.200".parse().unwrap(),
        };
        f.nft
            .apply("skiff", &f.net.rules.publish(&[stray]))
            .unwrap();
        let report = f.net.gc(&["live"]).unwrap();
        assert_eq!(
            report.attachments,
            vec![("web".to_string(), "dead".to_string())]
        );
        assert_eq!(report.addresses.len(), 1);
        assert_eq!(report.elements, 1);
        assert!(report.errors.is_empty(), "{:?}", report.errors);
        assert_eq!(f.nft.elements("skiff", "ports"), 1);
        assert_eq!(f.net.ipam(&net).allocations().unwrap().len(), 1);
        f.net.check("web", "live", None).unwrap();
        // Nothing left to do.
        let again = f.net.gc(&["live"]).unwrap();
        assert_eq!(again, Default::default());
    }

    #[test]
    fn reconcile_restores_lost_rules() {
        let f = fake();
        f.net
            .create_network("web", &NetworkOptions::user())
            .unwrap();
        let mut r = AttachRequest::new("web", "c1", "/ns/c1");
        r.ports = vec!["8080:80".parse::<PortMapping>().unwrap().into()];
        f.net.attach(&r).unwrap();
        f.net.remove_rules().unwrap();
        assert!(f.net.check("web", "c1", None).is_err());
        f.net.reconcile(&["c1"]).unwrap();
        f.net.check("web", "c1", None).unwrap();
    }
}
