//! The entry point: networks (`skiff network create/ls/rm/inspect`) and the
//! shared plumbing of attach, detach, check and gc.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;

use ipnet::Ipv4Net;

use crate::attachment::{Attachment, Records};
use crate::hostports::{HostPorts, SocketHostPorts};
use crate::ipam::Ipam;
use crate::lock::FileLock;
use crate::netlink::{BridgeSpec, Netlink, RtNetlink};
use crate::nft::{Nft, NftCli, Published, Rules, TableState};
use crate::store::{
    Network, NetworkOptions, NetworkStore, StoreError, DEFAULT_NETWORK, DEFAULT_SUBNET,
};
use crate::sysctl::{ProcSysctl, Sysctl};
use crate::{dns, Error, Result};

/// How the networking layer is set up by its caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetworkingConfig {
    /// Where networks are persisted: the engine's `<data-root>/networks`.
    pub state_root: PathBuf,
    /// skiff's nftables table (`table ip <table>`).
    pub table: String,
    /// Subnet of the default network, used when it is first created.
    pub default_subnet: Ipv4Net,
    /// Bridge device of the default network (`skiff0`); several skiff roots
    /// on one host each need their own.
    pub default_bridge: String,
    /// Program and arguments that run the DNS resolver (they must end up in
    /// [`dns::serve_inherited`]), e.g. `["/usr/bin/skiff", "--root", R,
    /// "network", "dns-serve"]`. `None`: no resolver is started.
    pub dns_command: Option<Vec<String>>,
    /// Where the resolver forwards names it does not know; `None`: the
    /// nameservers of the host's `/etc/resolv.conf`.
    pub dns_upstreams: Option<Vec<SocketAddr>>,
}

impl NetworkingConfig {
    /// The table of the Kubernetes service proxy ([`crate::service_proxy`]) of this
    /// root: `<table>_svc`, removed with the engine's by [`Networking::teardown_all`].
    pub fn service_table(&self) -> String {
        format!("{}_svc", self.table)
    }

    /// The table of the NetworkPolicy enforcer ([`crate::network_policy`]) of this root:
    /// `<table>_pol`, removed with the engine's by [`Networking::teardown_all`].
    pub fn policy_table(&self) -> String {
        format!("{}_pol", self.table)
    }

    /// The table keeping traffic between this node's pods and other nodes' pods free of
    /// NAT ([`crate::pod_routes`]): `<table>_net`, removed with the engine's by
    /// [`Networking::teardown_all`].
    pub fn pod_network_table(&self) -> String {
        format!("{}_net", self.table)
    }

    /// Defaults: table `skiff`, default subnet 10.88.0.0/16, no resolver command.
    pub fn new(state_root: impl Into<PathBuf>) -> Self {
        NetworkingConfig {
            state_root: state_root.into(),
            table: "skiff".to_string(),
            default_subnet: DEFAULT_SUBNET.parse().expect("valid default subnet"),
            default_bridge: crate::store::DEFAULT_BRIDGE.to_string(),
            dns_command: None,
            dns_upstreams: None,
        }
    }
}

/// A network with its attachments (`skiff network inspect`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct NetworkInspect {
    /// The definition.
    pub network: Network,
    /// Containers on it.
    pub attachments: Vec<Attachment>,
}

/// skiff's networking layer: networks, and containers joining and leaving them.
pub struct Networking {
    pub(crate) config: NetworkingConfig,
    pub(crate) store: NetworkStore,
    pub(crate) rules: Rules,
    pub(crate) netlink: Arc<dyn Netlink>,
    pub(crate) nft: Arc<dyn Nft>,
    pub(crate) sysctl: Arc<dyn Sysctl>,
    pub(crate) host_ports: Arc<dyn HostPorts>,
    /// When this process last found the nftables table in step, for which
    /// networks (see [`Networking::set_rules_recheck`]).
    rules_checked: std::sync::Mutex<RulesChecked>,
}

/// A recent check of the nftables table that later attaches may rely on.
#[derive(Debug, Default)]
struct RulesChecked {
    /// How long a check stands; zero: every attach checks.
    interval: std::time::Duration,
    at: Option<std::time::Instant>,
    networks: std::collections::HashSet<String>,
    /// A thread of this process is checking the table now.
    checking: bool,
}

impl RulesChecked {
    /// True when an attach to `network` need not check the table: it was checked
    /// within the interval, or is being checked by another thread (attaches do not
    /// queue behind it).
    fn covers(&self, network: &str) -> bool {
        let recent = self.at.is_some_and(|at| at.elapsed() < self.interval) || self.checking;
        !self.interval.is_zero() && recent && self.networks.contains(network)
    }
}

impl Networking {
    /// The real thing: rtnetlink, the `nft` binary, `/proc/sys`.
    pub fn new(config: NetworkingConfig) -> Result<Networking> {
        Self::with_backends(
            config,
            Arc::new(RtNetlink),
            Arc::new(NftCli::default()),
            Arc::new(ProcSysctl),
        )
    }

    /// With the given side-effect implementations (fakes in tests).
    pub fn with_backends(
        config: NetworkingConfig,
        netlink: Arc<dyn Netlink>,
        nft: Arc<dyn Nft>,
        sysctl: Arc<dyn Sysctl>,
    ) -> Result<Networking> {
        Ok(Networking {
            rules: Rules::new(&config.table)?,
            store: NetworkStore::new(&config.state_root),
            config,
            netlink,
            nft,
            sysctl,
            host_ports: Arc::new(SocketHostPorts),
            rules_checked: Default::default(),
        })
    }

    /// Lets an attach rely on this process's check of the nftables table for
    /// `interval` (zero, the default: every attach checks it). A node agent starting
    /// many pods at once then reads the table (an `nft` run and every attachment
    /// record, under the rules lock) once per interval instead of once per pod; a
    /// deleted table is still rebuilt, by the first attach after the interval.
    pub fn set_rules_recheck(&self, interval: std::time::Duration) {
        self.rules_checked.lock().unwrap().interval = interval;
    }

    /// Uses `host_ports` to learn which host ports host processes have bound
    /// (a fake in tests; the kernel by default).
    pub fn with_host_ports(mut self, host_ports: Arc<dyn HostPorts>) -> Networking {
        self.host_ports = host_ports;
        self
    }

    /// The configuration.
    pub fn config(&self) -> &NetworkingConfig {
        &self.config
    }

    /// Creates a network (`skiff network create`). Nothing is set up on the
    /// host until the first container joins.
    pub fn create_network(&self, name: &str, options: &NetworkOptions) -> Result<Network> {
        let routes = self.netlink.ipv4_routes()?;
        let network = self.store.create(name, options, &routes)?;
        self.sync_rules()?;
        Ok(network)
    }

    /// Network `name`; the default network is created on first use.
    pub fn network(&self, name: &str) -> Result<Network> {
        match self.store.get(name) {
            Err(StoreError::NotFound(_)) if name == DEFAULT_NETWORK => {
                let routes = self.netlink.ipv4_routes()?;
                Ok(self.store.ensure_default(
                    self.config.default_subnet,
                    &self.config.default_bridge,
                    &routes,
                )?)
            }
            other => Ok(other?),
        }
    }

    /// Every network (`skiff network ls`), the default one included once created.
    pub fn networks(&self) -> Result<Vec<Network>> {
        Ok(self.store.list()?)
    }

    /// A network and its containers (`skiff network inspect`).
    pub fn inspect(&self, name: &str) -> Result<NetworkInspect> {
        let network = self.network(name)?;
        let attachments = self.records(&network).list()?;
        Ok(NetworkInspect {
            network,
            attachments,
        })
    }

    /// Container `container_id`'s attachment to `network`, if any.
    pub fn attachment(&self, network: &str, container_id: &str) -> Result<Option<Attachment>> {
        let network = self.network(network)?;
        Ok(self.records(&network).get(container_id)?)
    }

    /// Removes a network without containers (`skiff network rm`): its
    /// resolver, rules, bridge and state.
    pub fn remove_network(&self, name: &str) -> Result<()> {
        if name == DEFAULT_NETWORK {
            return Err(Error::Protected(name.to_string()));
        }
        let network = self.store.get(name)?;
        self.sync_rules()?;
        let attachments = self.records(&network).list()?;
        if !attachments.is_empty() {
            return Err(Error::InUse {
                network: name.to_string(),
                containers: attachments
                    .iter()
                    .map(|a| a.container_id.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
            });
        }
        self.network_down(&network)?;
        Ok(self.store.remove(name)?)
    }

    /// Removes every network's host side (bridges, resolvers) and skiff's
    /// nftables table, and forgets the networks (`skiff system reset`).
    /// Containers must be gone first.
    pub fn teardown_all(&self) -> Result<()> {
        for network in self.store.list()? {
            self.network_down(&network)?;
            self.store.remove(&network.name)?;
        }
        if self.nft.list_table(self.rules.table())?.is_some() {
            self.remove_rules()?;
        }
        let services = crate::service_proxy::ServiceRules::new(&self.config.service_table())?;
        if self.nft.list_table(services.table())?.is_some() {
            self.nft.apply(services.table(), &services.delete_table())?;
        }
        let policies = crate::network_policy::PolicyRules::new(&self.config.policy_table())?;
        if self.nft.list_table(policies.table())?.is_some() {
            self.nft.apply(policies.table(), &policies.delete_table())?;
        }
        let pod_network = self.config.pod_network_table();
        // Routes to other nodes' pods this root added (recorded only by a node that had
        // some), then the NAT exemption table.
        let routes = self.config.state_root.join(crate::pod_routes::STATE_FILE);
        if routes.exists() {
            crate::pod_routes::PodNetwork::new(
                &pod_network,
                &routes,
                Arc::new(crate::pod_routes::KernelRouteTable),
                self.nft.clone(),
            )?
            .remove_all()?;
            let _ = std::fs::remove_file(&routes);
        }
        if self.nft.list_table(&pod_network)?.is_some() {
            self.nft
                .apply(&pod_network, &crate::pod_routes::delete_table(&pod_network))?;
        }
        Ok(())
    }

    /// Tears down a network's host side: resolver, set elements, bridge.
    pub(crate) fn network_down(&self, network: &Network) -> Result<()> {
        dns::stop(&self.store.dir(&network.name))?;
        let _lock = self.rules_lock()?;
        if self.nft.list_table(self.rules.table())?.is_some() {
            self.nft
                .apply(self.rules.table(), &self.rules.network_down(network))?;
        }
        self.netlink.delete_link(&network.bridge)?;
        Ok(())
    }

    /// Deletes skiff's whole nftables table (uninstall; tests).
    pub fn remove_rules(&self) -> Result<()> {
        Ok(self
            .nft
            .apply(self.rules.table(), &self.rules.delete_table())?)
    }

    /// Turns on `net.ipv4.ip_forward` if it is off, which routing containers'
    /// traffic needs, and says so in the log. Returns whether it changed it.
    pub fn ensure_forwarding(&self) -> Result<bool> {
        const KEY: &str = "net/ipv4/ip_forward";
        if self.sysctl.get(KEY)? == "1" {
            return Ok(false);
        }
        self.sysctl.set(KEY, "1")?;
        tracing::warn!("enabled net.ipv4.ip_forward so that containers' traffic is routed");
        Ok(true)
    }

    pub(crate) fn ipam(&self, network: &Network) -> Ipam {
        Ipam::new(
            self.store.dir(&network.name),
            network.subnet,
            network.gateway,
        )
    }

    pub(crate) fn records(&self, network: &Network) -> Records {
        Records::new(&self.store.dir(&network.name))
    }

    /// Makes the host side of `network` exist: rules, bridge, sysctls. The
    /// rules go in before the bridge, so a bridge always has its rules even
    /// if this process dies half-way.
    pub(crate) fn network_up(&self, network: &Network) -> Result<()> {
        let check = {
            let mut checked = self.rules_checked.lock().unwrap();
            let check = !checked.covers(&network.name);
            checked.checking |= check;
            check
        };
        if check {
            let began = std::time::Instant::now();
            let synced = self.sync_rules();
            let mut checked = self.rules_checked.lock().unwrap();
            checked.checking = false;
            synced?;
            if checked.at.is_none_or(|at| at.elapsed() >= checked.interval) {
                checked.networks.clear();
            }
            checked.at = Some(began);
            checked.networks.insert(network.name.clone());
        }
        self.netlink.ensure_bridge(&BridgeSpec {
            name: network.bridge.clone(),
            mac: mac_for(network.gateway),
            address: network.gateway,
            prefix_len: network.prefix_len(),
        })?;
        // 127.0.0.1:PORT of a published port is DNATed out through the bridge;
        // the kernel drops loopback sources on other devices without this.
        let key = format!("net/ipv4/conf/{}/route_localnet", network.bridge);
        if self.sysctl.get(&key)? != "1" {
            self.sysctl.set(&key, "1")?;
        }
        self.ensure_forwarding()?;
        Ok(())
    }

    /// Starts the network's resolver if it has DNS and a resolver command is configured.
    pub(crate) fn ensure_dns(&self, network: &Network) -> Result<()> {
        let (Some(command), Some(server)) = (&self.config.dns_command, network.dns_server()) else {
            return Ok(());
        };
        let dir = self.store.dir(&network.name);
        let upstreams = match &self.config.dns_upstreams {
            // Docker's resolver answers only its own names on internal networks.
            _ if network.internal => Vec::new(),
            Some(u) => u.clone(),
            None => dns::upstreams_from_resolv_conf(
                &std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default(),
            ),
        };
        let config = dns::ResolverConfig {
            attachments_dir: self.records(network).dir().to_path_buf(),
            subnet: network.subnet,
            upstreams,
            timeout: std::time::Duration::from_secs(2),
        };
        if dns::ensure_running(&dir, SocketAddr::from((server, 53)), &config, command)? {
            tracing::debug!(network = %network.name, "started the DNS resolver");
        }
        Ok(())
    }

    /// Holds skiff's nftables table still against the other skiff processes
    /// of this root: every change of the table, and every change of the
    /// records it is computed from that must agree with it, happens under
    /// this lock (taken after, never while holding, the store's lock).
    pub(crate) fn rules_lock(&self) -> Result<FileLock> {
        let path = self.config.state_root.join(".rules.lock");
        FileLock::exclusive(&path).map_err(|source| {
            StoreError::Io {
                context: format!("locking {}", path.display()),
                source,
            }
            .into()
        })
    }

    /// What skiff's table must hold: every network's elements and every
    /// recorded published port.
    fn desired_rules(&self) -> Result<TableState> {
        let networks = self.store.list()?;
        let mut published_ports = Vec::new();
        for network in &networks {
            for a in self.records(network).list()? {
                published_ports.extend(published(&a));
            }
        }
        Ok(TableState::desired(&self.rules, &networks, published_ports))
    }

    /// [`Networking::sync_rules`] with the rules lock held by the caller;
    /// returns the table as it now is.
    pub(crate) fn sync_rules_locked(&self, _lock: &FileLock) -> Result<TableState> {
        let table = self.rules.table();
        let desired = self.desired_rules()?;
        let actual = match self.nft.list_table(table)? {
            Some(listing) => Some(TableState::from_listing(table, &listing)?),
            None => None,
        };
        match actual {
            Some(actual) if actual == desired => {}
            // Nothing to program, and nothing there: leave the host alone.
            None if desired.bridges.is_empty() && desired.published.is_empty() => {}
            actual => {
                if actual.is_some() {
                    tracing::warn!(
                        table,
                        "skiff's nftables table differs from its state; rebuilding it"
                    );
                }
                self.nft.apply(table, &self.rules.replace(&desired))?;
            }
        }
        Ok(desired)
    }

    /// Level-triggered repair of skiff's nftables table: computes what it
    /// must hold from the persisted networks and attachments and, when the
    /// kernel's table differs (deleted, flushed, elements lost), rebuilds it
    /// in one transaction. Only skiff's own table is read or written.
    pub fn sync_rules(&self) -> Result<TableState> {
        let lock = self.rules_lock()?;
        self.sync_rules_locked(&lock)
    }

    /// Unpublishes an attachment's ports: first the record forgets them,
    /// then the table (both under the rules lock, so that a concurrent
    /// [`Networking::sync_rules`] never puts them back).
    pub(crate) fn release_ports(&self, a: &Attachment) -> Result<()> {
        if a.ports.is_empty() {
            return Ok(());
        }
        let _lock = self.rules_lock()?;
        let records = Records::new(&self.store.dir(&a.network));
        if let Some(mut record) = records.get(&a.container_id)? {
            if record.ports == a.ports {
                record.ports.clear();
                records.put(&record)?;
            }
        }
        self.unpublish(&published(a))
    }

    /// Removes published ports whether or not they are still programmed, but
    /// never an element that now leads elsewhere.
    pub(crate) fn unpublish(&self, ports: &[Published]) -> Result<()> {
        if ports.is_empty() {
            return Ok(());
        }
        let table = self.rules.table();
        if self.nft.apply(table, &self.rules.unpublish(ports)).is_ok() {
            return Ok(());
        }
        // Some key leads to another container now: delete only what is ours.
        let Some(listing) = self.nft.list_table(table)? else {
            return Ok(());
        };
        let state = TableState::from_listing(table, &listing)?;
        let ours: Vec<Published> = ports
            .iter()
            .filter(|p| state.published.contains(p))
            .copied()
            .collect();
        if !ours.is_empty() {
            self.nft.apply(table, &self.rules.delete_published(&ours))?;
        }
        Ok(())
    }

    /// The host's ephemeral port range, where "any free port" is chosen.
    pub(crate) fn ephemeral_ports(&self) -> (u16, u16) {
        self.sysctl
            .get("net/ipv4/ip_local_port_range")
            .ok()
            .and_then(|v| crate::hostports::parse_ephemeral(&v))
            .unwrap_or(crate::hostports::DEFAULT_EPHEMERAL)
    }
}

/// A locally administered MAC derived from an address (`02:53:` + the four
/// octets), so that an address handed out again keeps its MAC and peers'
/// ARP caches stay right.
pub(crate) fn mac_for(ip: Ipv4Addr) -> [u8; 6] {
    let [a, b, c, d] = ip.octets();
    [0x02, 0x53, a, b, c, d]
}

/// `aa:bb:cc:dd:ee:ff`.
pub(crate) fn mac_string(mac: [u8; 6]) -> String {
    mac.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// The published ports of an attachment, as programmed.
pub(crate) fn published(a: &Attachment) -> Vec<Published> {
    a.ports
        .iter()
        .map(|m| Published {
            mapping: *m,
            target: a.ip,
        })
        .collect()
}

#[cfg(test)]
pub(crate) mod fakes {
    use std::sync::Arc;

    use crate::hostports::FakeHostPorts;
    use crate::netlink::FakeNetlink;
    use crate::nft::FakeNft;
    use crate::sysctl::FakeSysctl;
    use crate::{Networking, NetworkingConfig};

    /// A `Networking` on fakes, with handles on them.
    pub(crate) struct Fake {
        pub(crate) net: Networking,
        pub(crate) netlink: Arc<FakeNetlink>,
        pub(crate) nft: Arc<FakeNft>,
        pub(crate) sysctl: Arc<FakeSysctl>,
        pub(crate) host_ports: Arc<FakeHostPorts>,
        pub(crate) _dir: tempfile::TempDir,
    }

    pub(crate) fn fake() -> Fake {
        let dir = tempfile::tempdir().unwrap();
        let netlink = Arc::new(FakeNetlink::default());
        let nft = Arc::new(FakeNft::default());
        let sysctl = Arc::new(FakeSysctl::default());
        let host_ports = Arc::new(FakeHostPorts::default());
        let net = Networking::with_backends(
            NetworkingConfig::new(dir.path()),
            netlink.clone(),
            nft.clone(),
            sysctl.clone(),
        )
        .unwrap()
        .with_host_ports(host_ports.clone());
        Fake {
            net,
            netlink,
            nft,
            sysctl,
            host_ports,
            _dir: dir,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::fakes::fake;
    use crate::nft::Nft;
    use crate::{AttachRequest, Error, NetworkOptions};

    #[test]
    fn remove_network_refuses_while_in_use_and_tears_down() {
        let f = fake();
        f.net
            .create_network("web", &NetworkOptions::user())
            .unwrap();
        f.net
            .attach(&AttachRequest::new("web", "c1", "/ns/c1"))
            .unwrap();
        assert!(matches!(
            f.net.remove_network("web"),
            Err(Error::InUse { .. })
        ));
        f.net.detach("web", "c1").unwrap();
        let bridge = f.net.network("web").unwrap().bridge;
        f.net.remove_network("web").unwrap();
        assert!(!f.netlink.link_names().contains(&bridge));
        assert_eq!(f.nft.elements("skiff", "bridges"), 0);
        assert_eq!(f.nft.elements("skiff", "subnets"), 0);
        assert!(f.net.networks().unwrap().is_empty());
        assert!(matches!(
            f.net.remove_network("bridge"),
            Err(Error::Protected(_))
        ));
    }

    #[test]
    fn the_default_network_appears_on_first_use() {
        let f = fake();
        assert!(f.net.networks().unwrap().is_empty());
        let a = f
            .net
            .attach(&AttachRequest::new("bridge", "c1", "/ns/c1"))
            .unwrap();
        let d = f.net.network("bridge").unwrap();
        assert_eq!(d.bridge, "skiff0");
        assert_eq!(d.subnet.to_string(), "10.88.0.0/16");
        assert_eq!(a.ip.to_string(), "10.88.0.2");
        assert_eq!(a.dns_server, None);
        assert_eq!(f.net.networks().unwrap(), vec![d]);
    }

    #[test]
    fn ip_forward_is_set_only_when_off() {
        let f = fake();
        assert!(f.net.ensure_forwarding().unwrap());
        assert!(!f.net.ensure_forwarding().unwrap());
        assert_eq!(f.sysctl.value("net/ipv4/ip_forward").as_deref(), Some("1"));
    }

    #[test]
    fn a_deleted_table_is_rebuilt_from_the_records() {
        let f = fake();
        f.net
            .create_network("web", &NetworkOptions::user())
            .unwrap();
        let mut r = AttachRequest::new("web", "c1", "/ns/c1");
        r.ports = crate::PortSpec::parse_publish("80").unwrap();
        let a = f.net.attach(&r).unwrap();
        let applied = f.nft.scripts().len();
        // In step: nothing to do.
        f.net.sync_rules().unwrap();
        assert_eq!(f.nft.scripts().len(), applied);
        // Someone deletes skiff's table, or a chain, or an element.
        f.nft.apply("skiff", "delete table ip skiff").unwrap();
        assert!(f.net.check("web", "c1", None).is_err());
        // The next operation (here another container joining) rebuilds all of it.
        f.net
            .attach(&AttachRequest::new("web", "c2", "/ns/c2"))
            .unwrap();
        f.net.check("web", "c1", None).unwrap();
        assert_eq!(f.nft.elements("skiff", "ports"), 1);
        f.nft
            .apply("skiff", "delete chain ip skiff forward")
            .unwrap();
        f.net.sync_rules().unwrap();
        let listing = f.nft.list_table("skiff").unwrap().unwrap();
        let state = crate::nft::TableState::from_listing("skiff", &listing).unwrap();
        assert_eq!(state.chains.get("forward"), Some(&6));
        // The rebuild kept the chosen port.
        assert_eq!(
            f.net.attachment("web", "c1").unwrap().unwrap().ports,
            a.ports
        );
        // Nothing stored, nothing there: the host is left alone.
        let g = fake();
        g.net.sync_rules().unwrap();
        assert!(g.nft.scripts().is_empty());
    }

    #[test]
    fn attaches_rely_on_a_recent_check_of_the_table_when_told_to() {
        let f = fake();
        f.net
            .create_network("web", &NetworkOptions::user())
            .unwrap();
        f.net.set_rules_recheck(std::time::Duration::from_secs(600));
        f.net
            .attach(&AttachRequest::new("web", "c1", "/ns/c1"))
            .unwrap();
        f.nft.apply("skiff", "delete table ip skiff").unwrap();
        // Within the interval the next attach does not look at the table again.
        f.net
            .attach(&AttachRequest::new("web", "c2", "/ns/c2"))
            .unwrap();
        assert!(f.nft.list_table("skiff").unwrap().is_none());
        // Every attach checks by default, and rebuilds what was lost.
        f.net.set_rules_recheck(std::time::Duration::ZERO);
        f.net
            .attach(&AttachRequest::new("web", "c3", "/ns/c3"))
            .unwrap();
        assert!(f.nft.list_table("skiff").unwrap().is_some());
        f.net.check("web", "c1", None).unwrap();
    }
}
