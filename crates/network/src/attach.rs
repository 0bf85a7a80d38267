//! CNI ADD: join a container's network namespace to a network.

use std::net::Ipv4Addr;
use std::path::PathBuf;

use sha2::{Digest, Sha256};

use crate::attachment::Attachment;
use crate::hostports;
use crate::netlink::VethSpec;
use crate::networking::{mac_for, mac_string, published};
use crate::ports::{PortMapping, PortSpec};
use crate::store::{validate_ifname, Network};
use crate::{Error, Networking, Result};

/// What [`Networking::attach`] needs (CNI ADD's arguments).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttachRequest {
    /// Network name (`bridge` is the default network).
    pub network: String,
    /// Container or pod sandbox id; owns the address.
    pub container_id: String,
    /// The container's network namespace (`/proc/PID/ns/net` or a bind mount).
    pub netns: PathBuf,
    /// Interface name inside (`eth0`; `eth1`... for more networks).
    pub interface: String,
    /// Container name, resolvable on networks with DNS.
    pub name: Option<String>,
    /// More names resolvable on networks with DNS.
    pub aliases: Vec<String>,
    /// Ports to publish (`-p`, `-P`); host ports left open are chosen here.
    pub ports: Vec<PortSpec>,
    /// A fixed address (`--ip`); the next free one when `None`.
    pub ip: Option<Ipv4Addr>,
}

impl AttachRequest {
    /// A request for `eth0` with no name, ports or fixed address.
    pub fn new(
        network: impl Into<String>,
        container_id: impl Into<String>,
        netns: impl Into<PathBuf>,
    ) -> Self {
        AttachRequest {
            network: network.into(),
            container_id: container_id.into(),
            netns: netns.into(),
            interface: "eth0".to_string(),
            name: None,
            aliases: Vec::new(),
            ports: Vec::new(),
            ip: None,
        }
    }
}

/// A container id may name a file: no separators, no dot files.
pub(crate) fn validate_container_id(id: &str) -> Result<()> {
    if id.is_empty()
        || id.len() > 128
        || id.starts_with('.')
        || !id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
    {
        return Err(Error::InvalidArgument(format!(
            "invalid container id '{id}': use letters, digits, '_', '.' and '-'"
        )));
    }
    Ok(())
}

/// Host-side veth name: `sk` and 13 hex digits of a hash of network id,
/// container id and interface, so that it is unique, fits the kernel's 15
/// characters, and a retry of the same setup finds its own leftover.
pub(crate) fn host_interface(network: &Network, container_id: &str, interface: &str) -> String {
    let digest = Sha256::digest(format!("{}/{container_id}/{interface}", network.id));
    format!("sk{}", &hex::encode(digest)[..13])
}

impl Networking {
    /// CNI ADD: gives the container an address on `request.network`, creates
    /// the bridge if missing, a veth pair into the container's namespace
    /// (`interface` up with the address and a default route via the gateway,
    /// `lo` up), publishes the ports, and starts the network's resolver.
    /// Host ports not given are chosen free (see [`crate::hostports`]) and
    /// returned in the attachment. On an internal network there is no
    /// default route and, as in Docker, the ports are not published.
    ///
    /// Adding a container that is already attached sets it up again with the
    /// same address (a retry after a crash). On failure everything done so
    /// far is undone.
    pub fn attach(&self, request: &AttachRequest) -> Result<Attachment> {
        validate_container_id(&request.container_id)?;
        if !validate_ifname(&request.interface) {
            return Err(Error::InvalidArgument(format!(
                "invalid interface name '{}': at most 15 letters, digits, '_', '.' or '-'",
                request.interface
            )));
        }
        let network = self.network(&request.network)?;
        let records = self.records(&network);
        if let Some(previous) = records.get(&request.container_id)? {
            // A retry: start over on the same address.
            self.undo(&previous)?;
        }
        let ip = self
            .ipam(&network)
            .allocate(&request.container_id, request.ip)?;
        let mut attachment = Attachment {
            network: network.name.clone(),
            container_id: request.container_id.clone(),
            name: request.name.clone(),
            aliases: request.aliases.clone(),
            interface: request.interface.clone(),
            host_interface: host_interface(&network, &request.container_id, &request.interface),
            netns: request.netns.clone(),
            ip,
            prefix_len: network.prefix_len(),
            gateway: network.gateway,
            mac: mac_string(mac_for(ip)),
            // Recorded once their host ports are chosen and published.
            ports: Vec::new(),
            dns_server: network.dns_server(),
        };
        // Recorded before any side effect, so gc can always find what to undo.
        if let Err(e) = records.put(&attachment) {
            let _ = self.ipam(&network).release(&request.container_id);
            return Err(e.into());
        }
        match self.setup(&network, &mut attachment, &request.ports) {
            Ok(()) => Ok(attachment),
            Err(e) => {
                if let Err(undo) = self.teardown(&network, &attachment) {
                    tracing::warn!(error = %undo, "undoing a failed attach");
                }
                Err(e)
            }
        }
    }

    fn setup(&self, network: &Network, a: &mut Attachment, ports: &[PortSpec]) -> Result<()> {
        self.network_up(network)?;
        self.netlink.add_veth(&VethSpec {
            host_name: a.host_interface.clone(),
            bridge: network.bridge.clone(),
            netns: a.netns.clone(),
            name: a.interface.clone(),
            mac: mac_for(a.ip),
            address: a.ip,
            prefix_len: a.prefix_len,
            gateway: (!network.internal).then_some(a.gateway),
        })?;
        if network.internal {
            if !ports.is_empty() {
                tracing::debug!(network = %network.name, "internal network: ports are not published");
            }
        } else {
            self.publish(network, a, ports)?;
        }
        self.ensure_dns(network)?;
        Ok(())
    }

    /// Chooses the host ports, records them and programs them, under the
    /// rules lock so that no other skiff process picks the same port and a
    /// rebuild of the table always includes them.
    fn publish(&self, network: &Network, a: &mut Attachment, specs: &[PortSpec]) -> Result<()> {
        if specs.is_empty() {
            return Ok(());
        }
        let lock = self.rules_lock()?;
        let state = self.sync_rules_locked(&lock)?;
        let taken: Vec<PortMapping> = state.published.iter().map(|p| p.mapping).collect();
        a.ports = hostports::allocate(
            a.name.as_deref().unwrap_or(&a.container_id),
            specs,
            &taken,
            self.ephemeral_ports(),
            self.host_ports.as_ref(),
        )?;
        let records = self.records(network);
        records.put(a)?;
        if let Err(e) = self
            .nft
            .apply(self.rules.table(), &self.rules.publish(&published(a)))
        {
            a.ports.clear();
            records.put(a)?;
            return Err(e.into());
        }
        Ok(())
    }

    /// Fails as attaching would if a fixed host port of `specs` is published
    /// by another container or bound by a host process, so that `create`
    /// can refuse before anything exists. Ports chosen at attach need no check.
    pub fn check_ports(&self, network: &str, endpoint: &str, specs: &[PortSpec]) -> Result<()> {
        let network = self.network(network)?;
        let fixed: Vec<PortSpec> = specs
            .iter()
            .filter(|s| s.fixed_host_port().is_some())
            .copied()
            .collect();
        if network.internal || fixed.is_empty() {
            return Ok(());
        }
        let mut taken = Vec::new();
        for n in self.store.list()? {
            for a in self.records(&n).list()? {
                taken.extend(a.ports);
            }
        }
        hostports::allocate(
            endpoint,
            &fixed,
            &taken,
            self.ephemeral_ports(),
            self.host_ports.as_ref(),
        )?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use crate::hostports::HostPortError;
    use crate::netlink::Netlink;
    use crate::networking::fakes::fake;
    use crate::nft::Nft;
    use crate::sysctl::Sysctl;
    use crate::{AttachRequest, Error, NetworkOptions, PortMapping, PortSpec};

    fn request(id: &str, ports: &[&str]) -> AttachRequest {
        let mut r = AttachRequest::new("web", id, format!("/ns/{id}"));
        r.name = Some(format!("name-{id}"));
        r.ports = ports
            .iter()
            .flat_map(|p| PortSpec::parse_publish(p).unwrap())
            .collect();
        r
    }

    #[test]
    fn attach_check_detach() {
        let f = fake();
        let net = f
            .net
            .create_network("web", &NetworkOptions::user())
            .unwrap();
        let a = f.net.attach(&request("c1", &["8080:80"])).unwrap();
        assert_eq!(a.ip, Ipv4Addr::new(10, 89, 0, 2));
        assert_eq!(a.gateway, net.gateway);
        assert_eq!(a.mac, "02:53:0a:59:00:02");
        assert_eq!(a.interface, "eth0");
        assert_eq!(a.dns_server, Some(net.gateway));
        assert!(a.host_interface.starts_with("sk") && a.host_interface.len() == 15);
        assert!(f.netlink.link_names().contains(&net.bridge));
        assert!(f.netlink.link_names().contains(&a.host_interface));
        assert_eq!(f.nft.elements("skiff", "ports"), 1);
        let route_localnet = format!("net/ipv4/conf/{}/route_localnet", net.bridge);
        assert_eq!(f.sysctl.value(&route_localnet).as_deref(), Some("1"));
        assert_eq!(f.sysctl.value("net/ipv4/ip_forward").as_deref(), Some("1"));
        f.net.check("web", "c1", None).unwrap();

        f.net.detach("web", "c1").unwrap();
        assert!(!f.netlink.link_names().contains(&a.host_interface));
        assert_eq!(f.nft.elements("skiff", "ports"), 0);
        assert!(f.net.ipam(&net).allocations().unwrap().is_empty());
        assert!(matches!(
            f.net.check("web", "c1", None),
            Err(Error::NotAttached { .. })
        ));
        // DEL is idempotent.
        f.net.detach("web", "c1").unwrap();
    }

    #[test]
    fn network_rules_are_installed_once_per_bridge() {
        let f = fake();
        f.net
            .create_network("web", &NetworkOptions::user())
            .unwrap();
        for id in ["c1", "c2", "c3"] {
            f.net.attach(&request(id, &[])).unwrap();
        }
        // Only the first container needed nftables at all.
        assert_eq!(f.nft.scripts().len(), 1);
    }

    #[test]
    fn check_notices_a_missing_veth_and_port() {
        let f = fake();
        f.net
            .create_network("web", &NetworkOptions::user())
            .unwrap();
        let a = f.net.attach(&request("c1", &["8080:80"])).unwrap();
        f.nft
            .apply("skiff", "delete element ip skiff ports { tcp . 8080 }")
            .unwrap();
        assert!(matches!(
            f.net.check("web", "c1", None),
            Err(Error::Check { problem, .. }) if problem.contains("8080")
        ));
        f.netlink.delete_link(&a.host_interface).unwrap();
        assert!(matches!(
            f.net.check("web", "c1", None),
            Err(Error::Check { .. })
        ));
    }

    #[test]
    fn failed_setup_is_undone() {
        let f = fake();
        let net = f
            .net
            .create_network("web", &NetworkOptions::user())
            .unwrap();
        f.netlink.fail_next_veth();
        assert!(f.net.attach(&request("c1", &["8080:80"])).is_err());
        assert!(f.net.ipam(&net).allocations().unwrap().is_empty());
        assert!(f.net.attachment("web", "c1").unwrap().is_none());
        assert_eq!(f.nft.elements("skiff", "ports"), 0);
    }

    #[test]
    fn a_host_port_has_one_owner() {
        let f = fake();
        let net = f
            .net
            .create_network("web", &NetworkOptions::user())
            .unwrap();
        f.net.attach(&request("c1", &["8080:80"])).unwrap();
        let err = f
            .net
            .attach(&request("c2", &["9090:90", "8080:80"]))
            .unwrap_err();
        assert!(
            matches!(
                err,
                Error::HostPort(HostPortError::Allocated { port: 8080, .. })
            ),
            "{err}"
        );
        assert_eq!(f.nft.elements("skiff", "ports"), 1);
        assert_eq!(f.net.ipam(&net).allocations().unwrap().len(), 1);
        // One address overlaps every address (Docker's rule); another port does not.
        assert!(f
            .net
            .attach(&request("c3", &["127.0.0.1:8080:80"]))
            .is_err());
        let p: PortMapping = "127.0.0.1:8081:80".parse().unwrap();
        let mut r = request("c3", &[]);
        r.ports = vec![p.into()];
        f.net.attach(&r).unwrap();
    }

    #[test]
    fn open_host_ports_are_chosen_free_and_recorded() {
        let f = fake();
        f.net
            .create_network("web", &NetworkOptions::user())
            .unwrap();
        f.sysctl
            .set("net/ipv4/ip_local_port_range", "40000\t40003")
            .unwrap();
        f.host_ports.bind(crate::Protocol::Tcp, 40000);
        let a = f
            .net
            .attach(&request("c1", &["80", "53/udp", "8000-8001:90-91"]))
            .unwrap();
        let got: Vec<String> = a.ports.iter().map(|p| p.to_string()).collect();
        assert_eq!(got.len(), 4, "{got:?}");
        let tcp80 = a.ports[0];
        assert!((40001..=40003).contains(&tcp80.host_port), "{got:?}");
        assert!((40000..=40003).contains(&a.ports[1].host_port), "{got:?}");
        assert_eq!(&got[2..], ["0.0.0.0:8000:90/tcp", "0.0.0.0:8001:91/tcp"]);
        // Recorded, programmed, and never handed out twice while attached.
        assert_eq!(
            f.net.attachment("web", "c1").unwrap().unwrap().ports,
            a.ports
        );
        assert_eq!(f.nft.elements("skiff", "ports"), 4);
        f.net.check("web", "c1", None).unwrap();
        let b = f.net.attach(&request("c2", &["80", "80"])).unwrap();
        let mut taken: Vec<u16> = b.ports.iter().map(|p| p.host_port).collect();
        taken.push(tcp80.host_port);
        taken.sort();
        assert_eq!(taken, [40001, 40002, 40003]);
        // The range is used up now.
        let err = f.net.attach(&request("c3", &["80"])).unwrap_err();
        assert!(
            matches!(err, Error::HostPort(HostPortError::Exhausted { .. })),
            "{err}"
        );
        assert!(f.net.attachment("web", "c3").unwrap().is_none());
        // Leaving frees them.
        f.net.detach("web", "c1").unwrap();
        f.net.attach(&request("c3", &["80"])).unwrap();
    }

    #[test]
    fn ports_bound_on_the_host_are_refused_before_anything_exists() {
        let f = fake();
        f.net
            .create_network("web", &NetworkOptions::user())
            .unwrap();
        f.host_ports.bind(crate::Protocol::Tcp, 8080);
        let specs = PortSpec::parse_publish("8080:80").unwrap();
        let err = f.net.check_ports("web", "c1", &specs).unwrap_err();
        assert!(err.to_string().contains("address already in use"), "{err}");
        let err = f.net.attach(&request("c1", &["8080:80"])).unwrap_err();
        assert!(
            matches!(err, Error::HostPort(HostPortError::InUse { .. })),
            "{err}"
        );
        assert_eq!(f.nft.elements("skiff", "ports"), 0);
        // A published port is seen by the check too.
        f.net.attach(&request("c2", &["9090:80"])).unwrap();
        let specs = PortSpec::parse_publish("9090:80").unwrap();
        assert!(matches!(
            f.net.check_ports("web", "c3", &specs),
            Err(Error::HostPort(HostPortError::Allocated { .. }))
        ));
        f.net
            .check_ports("web", "c3", &PortSpec::parse_publish("80").unwrap())
            .unwrap();
    }

    #[test]
    fn internal_networks_have_no_way_out() {
        let f = fake();
        let options = NetworkOptions {
            internal: true,
            ..NetworkOptions::user()
        };
        let net = f.net.create_network("inner", &options).unwrap();
        assert!(net.internal);
        let mut r = request("c1", &["8080:80"]);
        r.network = "inner".into();
        let a = f.net.attach(&r).unwrap();
        // No default route; -p accepted but nothing published, as in Docker.
        let inside = f
            .netlink
            .container_interface(&a.netns, "eth0")
            .unwrap()
            .unwrap();
        assert_eq!(inside.default_gateway, None);
        assert!(a.ports.is_empty());
        assert_eq!(f.nft.elements("skiff", "ports"), 0);
        assert_eq!(f.nft.elements("skiff", "internal"), 1);
        f.net.check("inner", "c1", None).unwrap();
    }

    #[test]
    fn attaching_again_keeps_the_address() {
        let f = fake();
        f.net
            .create_network("web", &NetworkOptions::user())
            .unwrap();
        let first = f.net.attach(&request("c1", &["8080:80"])).unwrap();
        let again = f.net.attach(&request("c1", &["8080:80"])).unwrap();
        assert_eq!(first, again);
        assert_eq!(f.netlink.container_interfaces(), 1);
        assert_eq!(f.nft.elements("skiff", "ports"), 1);
    }

    #[test]
    fn bad_requests_are_refused() {
        let f = fake();
        f.net
            .create_network("web", &NetworkOptions::user())
            .unwrap();
        let mut r = request("../x", &[]);
        assert!(matches!(f.net.attach(&r), Err(Error::InvalidArgument(_))));
        r = request("c1", &[]);
        r.interface = "a-very-long-interface".into();
        assert!(matches!(f.net.attach(&r), Err(Error::InvalidArgument(_))));
        r = request("c1", &[]);
        r.network = "nope".into();
        assert!(f.net.attach(&r).is_err());
    }
}
