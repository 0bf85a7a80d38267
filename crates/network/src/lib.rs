//! skiff's container networking: what the CNI `bridge` plugin, `host-local`
//! IPAM, `portmap` and Docker's embedded DNS do, as one library that
//! `skiff run` and (later) every pod sandbox use.
//!
//! # Shape
//!
//! [`Networking`] is the entry point. Networks ([`Network`]) are persisted
//! under the caller's state root; containers join them with
//! [`Networking::attach`], leave with [`Networking::detach`], and are
//! verified with [`Networking::check`]: CNI's ADD, DEL and CHECK for a
//! network namespace. [`Networking::gc`] and [`Networking::reconcile`]
//! repair what a killed process left behind, given the live container ids.
//!
//! ```text
//! networking (create/ls/rm/inspect, attach, detach, check, gc)
//!   ├── store       network definitions          <root>/<net>/network.json
//!   ├── ipam        addresses, flock + JSON       <root>/<net>/ipam.json
//!   ├── attachment  per-container records         <root>/<net>/attachments/<id>.json
//!   ├── netlink     bridge, veth, addresses, routes   (trait Netlink: RtNetlink | FakeNetlink)
//!   ├── nft         skiff's nftables table           (trait Nft: NftCli | FakeNft)
//!   ├── libnftables nft in-process (dlopen), for NftCli::in_process
//!   ├── sysctl      ip_forward, route_localnet        (trait Sysctl: ProcSysctl | FakeSysctl)
//!   ├── service_proxy  Kubernetes Services' data path, a table of its own
//!   ├── network_policy Kubernetes NetworkPolicies' data path, a table of its own
//!   ├── hostports   free host ports for -p 80, -P     (trait HostPorts: SocketHostPorts | FakeHostPorts)
//!   ├── dns         per-network resolver on the gateway address
//!   └── netns       run code in a namespace; persistent namespaces
//! ```
//!
//! skiff's nftables table is level-triggered: each operation that changes
//! rules first compares it with what the persisted state says and rebuilds
//! it in one transaction if it differs ([`Networking::sync_rules`]).
//!
//! Side effects sit behind the four traits so the logic runs in unit tests
//! without root; the integration tests (`tests/`) run the real thing.
//!
//! IPv4 only for now.

mod attach;
pub mod attachment;
mod check;
mod detach;
pub mod dns;
mod gc;
pub mod hostports;
pub mod ipam;
pub mod libnftables;
mod lock;
pub mod netlink;
pub mod netns;
pub mod network_policy;
mod networking;
pub mod nft;
pub mod pod_routes;
pub mod ports;
pub mod service_proxy;
pub mod store;
pub mod sysctl;

pub use attach::AttachRequest;
pub use attachment::Attachment;
pub use gc::GcReport;
pub use networking::{NetworkInspect, Networking, NetworkingConfig};
pub use ports::{PortMapping, PortSpec, Protocol};
pub use store::{Network, NetworkOptions, DEFAULT_BRIDGE, DEFAULT_NETWORK, DEFAULT_SUBNET};

/// Errors of the networking layer.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Network definitions.
    #[error(transparent)]
    Store(#[from] store::StoreError),
    /// Address management.
    #[error(transparent)]
    Ipam(#[from] ipam::IpamError),
    /// Attachment records.
    #[error(transparent)]
    Attachment(#[from] attachment::AttachmentError),
    /// Links, addresses, routes.
    #[error(transparent)]
    Netlink(#[from] netlink::NetlinkError),
    /// nftables.
    #[error(transparent)]
    Nft(#[from] nft::NftError),
    /// Kernel parameters.
    #[error(transparent)]
    Sysctl(#[from] sysctl::SysctlError),
    /// The embedded resolver.
    #[error(transparent)]
    Dns(#[from] dns::DnsError),
    /// Network namespaces.
    #[error(transparent)]
    Netns(#[from] netns::NetnsError),
    /// A `-p` value.
    #[error(transparent)]
    Port(#[from] ports::PortError),
    /// A host port that cannot be published.
    #[error(transparent)]
    HostPort(#[from] hostports::HostPortError),
    /// Routes to other nodes' pods could not be changed.
    #[error(transparent)]
    PodRoutes(#[from] pod_routes::PodRoutesError),
    /// A request field is not acceptable.
    #[error("{0}")]
    InvalidArgument(String),
    /// The container is not on the network.
    #[error("container {container_id} is not connected to network {network}")]
    NotAttached {
        /// Network name.
        network: String,
        /// Container id.
        container_id: String,
    },
    /// The network still has containers.
    #[error(
        "network {network} has active endpoints ({containers}); stop or disconnect them first"
    )]
    InUse {
        /// Network name.
        network: String,
        /// Their ids, comma-separated.
        containers: String,
    },
    /// The default network cannot be removed.
    #[error("network {0} is the default network and cannot be removed")]
    Protected(String),
    /// CNI CHECK found a difference between the record and the system.
    #[error("network {network}, container {container_id}: {problem}")]
    Check {
        /// Network name.
        network: String,
        /// Container id.
        container_id: String,
        /// What is wrong.
        problem: String,
    },
}

/// Result of the networking layer.
pub type Result<T, E = Error> = std::result::Result<T, E>;
