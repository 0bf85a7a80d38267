//! What makes Kubernetes Services reachable on a node, built into `skiff server`:
//!
//! - [`model`]: Services and EndpointSlices as the data path and DNS see them (pure);
//! - [`caches`]: the watches both share (reflectors over the API);
//! - [`proxy`]: kube-proxy's job, a level-triggered loop programming
//!   [`skiff_network::service_proxy`] (cluster IPs and node ports in nftables);
//! - [`network_policy`]: NetworkPolicies of this node's pods, programmed through
//!   [`skiff_network::network_policy`];
//! - [`pod_network`]: routes to the other nodes' pod CIDRs and no NAT between pods
//!   (flannel's `host-gw`), programmed through [`skiff_network::pod_routes`];
//! - [`dns`]: CoreDNS's `kubernetes` plugin: `<svc>.<ns>.svc.cluster.local`, SRV, PTR,
//!   ExternalName, and forwarding of other names;
//! - [`ingress`]: the built-in Ingress controller, an HTTP/HTTPS proxy to the pods;
//! - [`gateway`]: the Gateway API (GatewayClass, Gateway, HTTPRoute) on the same proxy.
//!
//! Both are clients of the API like any other component, through `kube`.

pub mod caches;
pub mod dns;
pub mod gateway;
pub mod ingress;
pub mod model;
pub mod network_policy;
pub mod pod_network;
pub mod proxy;

pub use caches::Caches;

/// The cluster domain when none is configured.
pub const DEFAULT_CLUSTER_DOMAIN: &str = "cluster.local";
