//! Services and their EndpointSlices, reduced to what the data path and the DNS need.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddrV4};

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointSlice};
use skiff_network::service_proxy::{ServiceMap, ServicePort};
use skiff_network::Protocol;

/// The label tying an EndpointSlice to its Service.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// One endpoint address of a Service.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct EndpointAddr {
    /// The address.
    pub ip: Ipv4Addr,
    /// `hostname` of the endpoint (StatefulSet pods under a headless Service).
    pub hostname: Option<String>,
    /// Ready for traffic.
    pub ready: bool,
    /// Serving (ready or not, while terminating).
    pub serving: bool,
    /// Terminating.
    pub terminating: bool,
    /// The node the endpoint runs on, when the slice says.
    pub node_name: Option<String>,
    /// Port name to port number, from the slice this address came in.
    pub ports: BTreeMap<(String, String), u16>,
}

/// The slices of one Service: `(namespace, service name)` to its endpoints.
pub fn endpoints_by_service<'a>(
    slices: impl IntoIterator<Item = &'a EndpointSlice>,
) -> BTreeMap<(String, String), Vec<EndpointAddr>> {
    let mut out: BTreeMap<(String, String), Vec<EndpointAddr>> = BTreeMap::new();
    for slice in slices {
        if slice.address_type != "IPv4" {
            continue;
        }
        let Some(service) = slice
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get(SERVICE_NAME_LABEL))
        else {
            continue;
        };
        let namespace = slice.metadata.namespace.clone().unwrap_or_default();
        let ports: BTreeMap<(String, String), u16> = slice
            .ports
            .iter()
            .flatten()
            .filter_map(|p| {
                let port = u16::try_from(p.port?).ok()?;
                let name = p.name.clone().unwrap_or_default();
                let protocol = p.protocol.clone().unwrap_or_else(|| "TCP".into());
                Some(((name, protocol), port))
            })
            .collect();
        let list = out.entry((namespace, service.clone())).or_default();
        for ep in slice.endpoints.iter().flatten() {
            for ip in ep.addresses.iter().filter_map(|a| a.parse().ok()) {
                list.push(endpoint_addr(ep, ip, &ports));
            }
        }
    }
    out
}

fn endpoint_addr(
    ep: &Endpoint,
    ip: Ipv4Addr,
    ports: &BTreeMap<(String, String), u16>,
) -> EndpointAddr {
    let c = ep.conditions.as_ref();
    // Kubernetes: a missing `ready` means ready; a missing `serving` means as ready.
    let ready = c.and_then(|c| c.ready).unwrap_or(true);
    EndpointAddr {
        ip,
        hostname: ep.hostname.clone(),
        ready,
        serving: c.and_then(|c| c.serving).unwrap_or(ready),
        terminating: c.and_then(|c| c.terminating).unwrap_or(false),
        node_name: ep.node_name.clone(),
        ports: ports.clone(),
    }
}

/// The addresses traffic may go to: the ready ones, or, when none is ready, the serving
/// ones that are terminating (kube-proxy's fallback, so connections drain).
pub fn usable(endpoints: &[EndpointAddr]) -> Vec<&EndpointAddr> {
    let ready: Vec<&EndpointAddr> = endpoints.iter().filter(|e| e.ready).collect();
    if !ready.is_empty() {
        return ready;
    }
    endpoints
        .iter()
        .filter(|e| e.serving && e.terminating)
        .collect()
}

/// Kubernetes' default `sessionAffinityConfig.clientIP.timeoutSeconds` (3 hours).
pub const DEFAULT_AFFINITY_TIMEOUT: u32 = 10_800;

/// What the data path of node `node` must hold for `services`, given their endpoints.
pub fn service_map<'a>(
    services: impl IntoIterator<Item = &'a Service>,
    endpoints: &BTreeMap<(String, String), Vec<EndpointAddr>>,
    node: &str,
) -> ServiceMap {
    let mut out = ServiceMap::new();
    for svc in services {
        let Some(spec) = &svc.spec else { continue };
        if spec.type_.as_deref() == Some("ExternalName") {
            continue;
        }
        let namespace = svc.metadata.namespace.clone().unwrap_or_default();
        let name = svc.metadata.name.clone().unwrap_or_default();
        let cluster_ip = spec.cluster_ip.as_deref().and_then(|ip| ip.parse().ok());
        let node_ports = matches!(spec.type_.as_deref(), Some("NodePort" | "LoadBalancer"));
        let eps = endpoints
            .get(&(namespace.clone(), name.clone()))
            .map(Vec::as_slice)
            .unwrap_or_default();
        let usable = usable(eps);
        // The Local traffic policies choose among this node's endpoints alone, with the
        // same fallback to terminating ones.
        let on_node: Vec<EndpointAddr> = eps
            .iter()
            .filter(|e| e.node_name.as_deref() == Some(node))
            .cloned()
            .collect();
        let usable_here = self::usable(&on_node);
        let affinity_timeout = (spec.session_affinity.as_deref() == Some("ClientIP")).then(|| {
            spec.session_affinity_config
                .as_ref()
                .and_then(|c| c.client_ip.as_ref())
                .and_then(|c| c.timeout_seconds)
                .and_then(|t| u32::try_from(t).ok())
                .unwrap_or(DEFAULT_AFFINITY_TIMEOUT)
        });
        let load_balancer_ips: Vec<Ipv4Addr> = if spec.type_.as_deref() == Some("LoadBalancer") {
            svc.status
                .as_ref()
                .and_then(|s| s.load_balancer.as_ref())
                .and_then(|lb| lb.ingress.as_ref())
                .into_iter()
                .flatten()
                // `ipMode: Proxy`: the load balancer itself forwards to the nodes, so the
                // address is not taken over here (kube-proxy's rule).
                .filter(|i| i.ip_mode.as_deref() != Some("Proxy"))
                .filter_map(|i| i.ip.as_deref()?.parse().ok())
                .collect()
        } else {
            Vec::new()
        };
        let internal_local = spec.internal_traffic_policy.as_deref() == Some("Local");
        let external_local = node_ports && spec.external_traffic_policy.as_deref() == Some("Local");
        let mut ports = Vec::new();
        for p in spec.ports.iter().flatten() {
            let proto_name = p.protocol.clone().unwrap_or_else(|| "TCP".into());
            let protocol = match proto_name.as_str() {
                "TCP" => Protocol::Tcp,
                "UDP" => Protocol::Udp,
                _ => continue,
            };
            let port_name = p.name.clone().unwrap_or_default();
            let Ok(port) = u16::try_from(p.port) else {
                continue;
            };
            let addresses = |eps: &[&EndpointAddr]| {
                let mut targets: Vec<SocketAddrV4> = eps
                    .iter()
                    .filter_map(|e| {
                        let target = e.ports.get(&(port_name.clone(), proto_name.clone()))?;
                        Some(SocketAddrV4::new(e.ip, *target))
                    })
                    .collect();
                targets.sort();
                targets.dedup();
                targets
            };
            let targets = addresses(&usable);
            let local_targets = addresses(&usable_here);
            ports.push(ServicePort {
                name: port_name,
                protocol,
                cluster_ip,
                port,
                node_port: p
                    .node_port
                    .filter(|_| node_ports)
                    .and_then(|n| u16::try_from(n).ok()),
                load_balancer_ips: load_balancer_ips.clone(),
                endpoints: targets,
                local_endpoints: local_targets,
                internal_local,
                external_local,
                affinity_timeout,
            });
        }
        if !ports.is_empty() {
            out.insert(format!("{namespace}/{name}"), ports);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn service(spec: serde_json::Value) -> Service {
        serde_json::from_value(
            json!({"metadata": {"name": "web", "namespace": "default"}, "spec": spec}),
        )
        .unwrap()
    }

    fn slice(endpoints: serde_json::Value) -> EndpointSlice {
        serde_json::from_value(json!({
            "metadata": {"name": "web-abc", "namespace": "default",
                "labels": {"kubernetes.io/service-name": "web"}},
            "addressType": "IPv4",
            "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
            "endpoints": endpoints,
        }))
        .unwrap()
    }

    #[test]
    fn ready_endpoints_with_fallback_to_terminating() {
        let svc = service(json!({"type": "NodePort", "clusterIP": "10.43.0.5",
            "ports": [{"name": "http", "port": 80, "protocol": "TCP", "nodePort": 30080}]}));
        let eps = endpoints_by_service(&[slice(json!([
            {"addresses": ["10.88.0.2"], "conditions": {"ready": true}},
            {"addresses": ["10.88.0.3"], "conditions": {"ready": false, "serving": true, "terminating": true}},
            {"addresses": ["10.88.0.4"], "conditions": {"ready": false}},
        ]))]);
        let map = service_map([&svc], &eps, "node-a");
        let port = &map["default/web"][0];
        assert_eq!(port.cluster_ip, Some(Ipv4Addr::new(10, 43, 0, 5)));
        assert_eq!(port.node_port, Some(30080));
        assert_eq!(port.endpoints, vec!["10.88.0.2:8080".parse().unwrap()]);

        let eps = endpoints_by_service(&[slice(json!([
            {"addresses": ["10.88.0.3"], "conditions": {"ready": false, "serving": true, "terminating": true}},
            {"addresses": ["10.88.0.4"], "conditions": {"ready": false}},
        ]))]);
        let map = service_map([&svc], &eps, "node-a");
        assert_eq!(
            map["default/web"][0].endpoints,
            vec!["10.88.0.3:8080".parse().unwrap()]
        );
    }

    #[test]
    fn external_names_and_other_services_ports() {
        let ext = service(json!({"type": "ExternalName", "externalName": "example.com"}));
        assert!(service_map([&ext], &BTreeMap::new(), "node-a").is_empty());
        // A slice port of another name does not serve this port.
        let svc =
            service(json!({"clusterIP": "10.43.0.5", "ports": [{"name": "https", "port": 443}]}));
        let eps = endpoints_by_service(&[slice(json!([{"addresses": ["10.88.0.2"]}]))]);
        let map = service_map([&svc], &eps, "node-a");
        assert!(map["default/web"][0].endpoints.is_empty());
        assert_eq!(map["default/web"][0].node_port, None);
    }

    #[test]
    fn affinity_load_balancer_addresses_and_local_policies() {
        let svc: Service = serde_json::from_value(json!({
            "metadata": {"name": "web", "namespace": "default"},
            "spec": {"type": "LoadBalancer", "clusterIP": "10.43.0.5",
                "sessionAffinity": "ClientIP",
                "externalTrafficPolicy": "Local", "internalTrafficPolicy": "Local",
                "ports": [{"name": "http", "port": 80, "protocol": "TCP", "nodePort": 30080}]},
            "status": {"loadBalancer": {"ingress": [{"ip": "192.0.2.10"}]}},
        }))
        .unwrap();
        let eps = endpoints_by_service(&[slice(json!([
            {"addresses": ["10.88.0.2"], "nodeName": "node-a"},
            {"addresses": ["10.88.0.3"], "nodeName": "node-b"},
        ]))]);
        let port = &service_map([&svc], &eps, "node-a")["default/web"][0];
        assert_eq!(port.affinity_timeout, Some(DEFAULT_AFFINITY_TIMEOUT));
        assert_eq!(port.load_balancer_ips, vec![Ipv4Addr::new(192, 0, 2, 10)]);
        assert!(port.internal_local && port.external_local);
        assert_eq!(port.endpoints.len(), 2);
        assert_eq!(
            port.local_endpoints,
            vec!["10.88.0.2:8080".parse().unwrap()]
        );
        // Another node sees its own endpoint as local; a custom timeout is kept.
        let mut svc = svc;
        svc.spec.as_mut().unwrap().session_affinity_config =
            serde_json::from_value(json!({"clientIP": {"timeoutSeconds": 60}})).unwrap();
        let port = &service_map([&svc], &eps, "node-b")["default/web"][0];
        assert_eq!(
            port.local_endpoints,
            vec!["10.88.0.3:8080".parse().unwrap()]
        );
        assert_eq!(port.affinity_timeout, Some(60));
    }

    #[test]
    fn proxy_mode_load_balancer_addresses_are_not_taken_over() {
        let svc: Service = serde_json::from_value(json!({
            "metadata": {"name": "web", "namespace": "default"},
            "spec": {"type": "LoadBalancer", "clusterIP": "10.43.0.5",
                "ports": [{"name": "http", "port": 80, "protocol": "TCP", "nodePort": 30080}]},
            "status": {"loadBalancer": {"ingress": [
                {"ip": "192.0.2.10", "ipMode": "VIP"},
                {"ip": "192.0.2.11", "ipMode": "Proxy"},
                {"hostname": "lb.example.com"}
            ]}},
        }))
        .unwrap();
        let eps = endpoints_by_service(&[slice(json!([{"addresses": ["10.88.0.2"]}]))]);
        let port = &service_map([&svc], &eps, "node-a")["default/web"][0];
        assert_eq!(port.load_balancer_ips, vec![Ipv4Addr::new(192, 0, 2, 10)]);
    }
}
