//! CNI CHECK: is a container's networking still as attach left it?

use std::path::Path;

use crate::attach::validate_container_id;
use crate::networking::{mac_string, published};
use crate::nft::TableState;
use crate::{Error, Networking, Result};

impl Networking {
    /// CNI CHECK: compares the container's record with the system: address
    /// allocated, host veth on the bridge and up, the interface inside `netns`
    /// (the recorded one when `None`) up with its address, MAC and default
    /// route, and the network's and the container's nftables elements present.
    pub fn check(&self, network: &str, container_id: &str, netns: Option<&Path>) -> Result<()> {
        validate_container_id(container_id)?;
        let network = self.network(network)?;
        let problem = |p: String| Error::Check {
            network: network.name.clone(),
            container_id: container_id.to_string(),
            problem: p,
        };
        let a = self
            .records(&network)
            .get(container_id)?
            .ok_or_else(|| Error::NotAttached {
                network: network.name.clone(),
                container_id: container_id.to_string(),
            })?;
        let owner = self.ipam(&network).allocations()?.get(&a.ip).cloned();
        if owner.as_deref() != Some(container_id) {
            return Err(problem(format!(
                "address {} is not allocated to it (owner: {owner:?})",
                a.ip
            )));
        }
        let bridge = self
            .netlink
            .link(&network.bridge)?
            .ok_or_else(|| problem(format!("bridge {} is missing", network.bridge)))?;
        let host = self
            .netlink
            .link(&a.host_interface)?
            .ok_or_else(|| problem(format!("host interface {} is missing", a.host_interface)))?;
        if host.master != Some(bridge.index) || !host.up {
            return Err(problem(format!(
                "host interface {} is not an up port of {}",
                a.host_interface, network.bridge
            )));
        }
        let netns = netns.unwrap_or(&a.netns);
        let inside = self
            .netlink
            .container_interface(netns, &a.interface)?
            .ok_or_else(|| {
                problem(format!(
                    "interface {} is missing in {}",
                    a.interface,
                    netns.display()
                ))
            })?;
        if !inside.up {
            return Err(problem(format!("interface {} is down", a.interface)));
        }
        if !inside.addresses.contains(&(a.ip, a.prefix_len)) {
            return Err(problem(format!(
                "interface {} lacks {}/{}",
                a.interface, a.ip, a.prefix_len
            )));
        }
        if <[u8; 6]>::try_from(inside.mac.as_slice())
            .ok()
            .map(mac_string)
            != Some(a.mac.clone())
        {
            return Err(problem(format!(
                "interface {} has another MAC",
                a.interface
            )));
        }
        let gateway = (!network.internal).then_some(a.gateway);
        if inside.default_gateway != gateway {
            return Err(problem(match gateway {
                Some(g) => format!("default route is not via {g}"),
                None => "an internal network's container has a default route".to_string(),
            }));
        }
        let table = self.rules.table();
        let listing = self
            .nft
            .list_table(table)?
            .ok_or_else(|| problem(format!("nftables table ip {table} is missing")))?;
        let state = TableState::from_listing(table, &listing)?;
        if !state.bridges.contains(&network.bridge) || !state.subnets.contains(&network.subnet) {
            return Err(problem(format!(
                "nftables elements of network {} are missing",
                network.name
            )));
        }
        if let Some(p) = published(&a)
            .into_iter()
            .find(|p| !state.published.contains(p))
        {
            return Err(problem(format!("published port {} is missing", p.mapping)));
        }
        Ok(())
    }
}
