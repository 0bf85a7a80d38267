//! Ingresses, IngressClasses and Services reduced to a [`RoutingTable`] and the TLS
//! hosts' Secrets (pure: no API, no network).

use std::collections::BTreeMap;
use std::net::{SocketAddr, SocketAddrV4};
use std::sync::Arc;

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::networking::v1::{Ingress, IngressBackend, IngressClass};

use super::routes::{Backend, PathType, RoutingTable};
use crate::model::EndpointAddr;

/// The IngressClass annotation marking the cluster's default class.
pub const DEFAULT_CLASS_ANNOTATION: &str = "ingressclass.kubernetes.io/is-default-class";
/// The deprecated annotation naming an Ingress's class.
pub const LEGACY_CLASS_ANNOTATION: &str = "kubernetes.io/ingress.class";

/// Whether `ingress` is for a class whose `spec.controller` is `controller`: named by
/// `spec.ingressClassName` or the legacy annotation, or neither when one such class
/// is the default.
pub fn is_ours(ingress: &Ingress, classes: &[Arc<IngressClass>], controller: &str) -> bool {
    let ours = |c: &&Arc<IngressClass>| {
        c.spec.as_ref().and_then(|s| s.controller.as_deref()) == Some(controller)
    };
    let named = ingress
        .spec
        .as_ref()
        .and_then(|s| s.ingress_class_name.clone())
        .or_else(|| {
            ingress
                .metadata
                .annotations
                .as_ref()?
                .get(LEGACY_CLASS_ANNOTATION)
                .cloned()
        });
    match named {
        Some(name) => classes
            .iter()
            .filter(ours)
            .any(|c| c.metadata.name.as_deref() == Some(name.as_str())),
        None => classes.iter().filter(ours).any(|c| {
            c.metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(DEFAULT_CLASS_ANNOTATION))
                .is_some_and(|v| v == "true")
        }),
    }
}

/// Ingresses in the order their rules take precedence: oldest first, then by name.
pub fn by_age<'a>(ingresses: impl IntoIterator<Item = &'a Ingress>) -> Vec<&'a Ingress> {
    let mut list: Vec<&Ingress> = ingresses.into_iter().collect();
    list.sort_by(|a, b| {
        let key = |i: &Ingress| {
            (
                i.metadata.creation_timestamp.clone().map(|t| t.0),
                i.metadata.namespace.clone(),
                i.metadata.name.clone(),
            )
        };
        key(a).cmp(&key(b))
    });
    list
}

/// The routing table of `ingresses` (already filtered to ours, oldest first).
pub fn routing_table(
    ingresses: &[&Ingress],
    services: &[Arc<Service>],
    endpoints: &BTreeMap<(String, String), Vec<EndpointAddr>>,
) -> RoutingTable {
    let services: BTreeMap<(String, String), &Service> = services
        .iter()
        .map(|s| {
            let key = (
                s.metadata.namespace.clone().unwrap_or_default(),
                s.metadata.name.clone().unwrap_or_default(),
            );
            (key, s.as_ref())
        })
        .collect();
    let mut table = RoutingTable::default();
    for ingress in ingresses {
        let Some(spec) = &ingress.spec else { continue };
        let namespace = ingress.metadata.namespace.clone().unwrap_or_default();
        let resolve = |b: &IngressBackend| Arc::new(backend(&namespace, b, &services, endpoints));
        if let Some(b) = &spec.default_backend {
            table.set_default_backend(resolve(b));
        }
        for rule in spec.rules.iter().flatten() {
            let host = rule.host.clone().unwrap_or_default();
            let Some(http) = &rule.http else { continue };
            for path in &http.paths {
                let p = path.path.clone().unwrap_or_else(|| "/".into());
                table.host_mut(&host).add(
                    &p,
                    PathType::parse(&path.path_type),
                    resolve(&path.backend),
                );
            }
        }
    }
    table
}

/// The ready endpoints of the Service port an Ingress backend names (by number or name).
fn backend(
    namespace: &str,
    b: &IngressBackend,
    services: &BTreeMap<(String, String), &Service>,
    endpoints: &BTreeMap<(String, String), Vec<EndpointAddr>>,
) -> Backend {
    let Some(svc_ref) = &b.service else {
        return Backend::new(format!("{namespace}/(resource backend)"), vec![]);
    };
    let port_ref = svc_ref.port.as_ref();
    let port_label = port_ref
        .and_then(|p| p.name.clone().or(p.number.map(|n| n.to_string())))
        .unwrap_or_default();
    let name = format!("{namespace}/{}:{port_label}", svc_ref.name);
    let key = (namespace.to_owned(), svc_ref.name.clone());
    let Some(svc) = services.get(&key) else {
        return Backend::new(name, vec![]);
    };
    let port = match port_ref {
        Some(r) => match (&r.name, r.number) {
            (Some(n), _) => ServicePortRef::Name(n),
            (None, Some(n)) => ServicePortRef::Number(n),
            (None, None) => return Backend::new(name, vec![]),
        },
        None => return Backend::new(name, vec![]),
    };
    Backend::new(
        name,
        port_endpoints(svc, port, endpoints).unwrap_or_default(),
    )
}

/// A Service port, by number or by name.
#[derive(Debug, Clone, Copy)]
pub enum ServicePortRef<'a> {
    /// `port`.
    Number(i32),
    /// `name`.
    Name(&'a str),
}

/// The ready, not terminating endpoints of `svc`'s port (sorted); `None` when the Service
/// has no such port. Shared with the Gateway API's backends.
pub fn port_endpoints(
    svc: &Service,
    port: ServicePortRef<'_>,
    endpoints: &BTreeMap<(String, String), Vec<EndpointAddr>>,
) -> Option<Vec<SocketAddr>> {
    let svc_port = svc
        .spec
        .as_ref()
        .and_then(|s| s.ports.as_ref())
        .into_iter()
        .flatten()
        .find(|p| match port {
            ServicePortRef::Name(n) => p.name.as_deref() == Some(n),
            ServicePortRef::Number(n) => p.port == n,
        })?;
    let port_key = (
        svc_port.name.clone().unwrap_or_default(),
        svc_port.protocol.clone().unwrap_or_else(|| "TCP".into()),
    );
    let key = (
        svc.metadata.namespace.clone().unwrap_or_default(),
        svc.metadata.name.clone().unwrap_or_default(),
    );
    let mut addrs: Vec<SocketAddr> = endpoints
        .get(&key)
        .into_iter()
        .flatten()
        .filter(|e| e.ready && !e.terminating)
        .filter_map(|e| {
            let port = e.ports.get(&port_key)?;
            Some(SocketAddr::V4(SocketAddrV4::new(e.ip, *port)))
        })
        .collect();
    addrs.sort();
    addrs.dedup();
    Some(addrs)
}

/// The TLS hosts of `ingresses` (oldest first) and the `(namespace, secret)` serving
/// each; the first Ingress to name a host keeps it.
pub fn tls_hosts(ingresses: &[&Ingress]) -> BTreeMap<String, (String, String)> {
    let mut out = BTreeMap::new();
    for ingress in ingresses {
        let namespace = ingress.metadata.namespace.clone().unwrap_or_default();
        for tls in ingress
            .spec
            .as_ref()
            .and_then(|s| s.tls.as_ref())
            .into_iter()
            .flatten()
        {
            let Some(secret) = &tls.secret_name else {
                continue;
            };
            for host in tls.hosts.iter().flatten() {
                out.entry(host.to_ascii_lowercase())
                    .or_insert_with(|| (namespace.clone(), secret.clone()));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ingress::routes::Route;
    use crate::model::endpoints_by_service;
    use serde_json::json;

    fn class(name: &str, controller: &str, default: bool) -> Arc<IngressClass> {
        let mut meta = json!({"name": name});
        if default {
            meta["annotations"] = json!({DEFAULT_CLASS_ANNOTATION: "true"});
        }
        Arc::new(
            serde_json::from_value(json!({"metadata": meta, "spec": {"controller": controller}}))
                .unwrap(),
        )
    }

    fn ingress(v: serde_json::Value) -> Ingress {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn class_selection() {
        let ours = "skiff.dev/ingress";
        let classes = vec![
            class("skiff", ours, true),
            class("nginx", "k8s.io/ingress-nginx", false),
        ];
        let named =
            |n: &str| ingress(json!({"metadata": {"name": "i"}, "spec": {"ingressClassName": n}}));
        assert!(is_ours(&named("skiff"), &classes, ours));
        assert!(!is_ours(&named("nginx"), &classes, ours));
        assert!(!is_ours(&named("absent"), &classes, ours));
        let none = ingress(json!({"metadata": {"name": "i"}, "spec": {}}));
        assert!(is_ours(&none, &classes, ours));
        let legacy = ingress(json!({"metadata": {"name": "i",
            "annotations": {LEGACY_CLASS_ANNOTATION: "nginx"}}, "spec": {}}));
        assert!(!is_ours(&legacy, &classes, ours));
        // Without a default class, an Ingress naming none is nobody's.
        let classes = vec![class("skiff", ours, false)];
        assert!(!is_ours(&none, &classes, ours));
    }

    #[test]
    fn backends_by_port_number_and_name_with_ready_endpoints() {
        let svc: Arc<Service> = Arc::new(
            serde_json::from_value(json!({"metadata": {"name": "web", "namespace": "ns"},
                "spec": {"ports": [{"name": "http", "port": 80, "targetPort": 8080}]}}))
            .unwrap(),
        );
        let slice = serde_json::from_value(json!({
            "metadata": {"name": "web-1", "namespace": "ns",
                "labels": {"kubernetes.io/service-name": "web"}},
            "addressType": "IPv4",
            "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
            "endpoints": [
                {"addresses": ["10.88.0.2"], "conditions": {"ready": true}},
                {"addresses": ["10.88.0.3"], "conditions": {"ready": false}},
            ],
        }))
        .unwrap();
        let eps = endpoints_by_service([&slice]);
        let ing = ingress(
            json!({"metadata": {"name": "i", "namespace": "ns"}, "spec": {
            "defaultBackend": {"service": {"name": "missing", "port": {"number": 80}}},
            "rules": [
                {"host": "a.test", "http": {"paths": [
                    {"path": "/", "pathType": "Prefix",
                     "backend": {"service": {"name": "web", "port": {"number": 80}}}}]}},
                {"host": "b.test", "http": {"paths": [
                    {"path": "/b", "pathType": "ImplementationSpecific",
                     "backend": {"service": {"name": "web", "port": {"name": "http"}}}},
                    {"path": "/wrong", "pathType": "Exact",
                     "backend": {"service": {"name": "web", "port": {"number": 81}}}}]}},
            ]}}),
        );
        let table = routing_table(&[&ing], &[svc], &eps);
        let endpoints = |host: &str, path: &str| match table.route(host, path) {
            Route::Backend(b) => b.endpoints.iter().map(|e| e.to_string()).collect(),
            Route::NotFound => vec!["404".to_string()],
        };
        assert_eq!(endpoints("a.test", "/x"), ["10.88.0.2:8080"]);
        assert_eq!(endpoints("b.test", "/b/c"), ["10.88.0.2:8080"]);
        // A port the Service lacks, and a missing Service (the default backend): 503.
        assert!(endpoints("b.test", "/wrong").is_empty());
        assert!(endpoints("c.test", "/").is_empty());
    }

    #[test]
    fn tls_hosts_first_ingress_keeps_a_host() {
        let a = ingress(
            json!({"metadata": {"name": "a", "namespace": "x"}, "spec": {
            "tls": [{"hosts": ["S.test"], "secretName": "one"}]}}),
        );
        let b = ingress(
            json!({"metadata": {"name": "b", "namespace": "y"}, "spec": {
            "tls": [{"hosts": ["s.test", "t.test"], "secretName": "two"}, {"hosts": ["u.test"]}]}}),
        );
        let hosts = tls_hosts(&[&a, &b]);
        assert_eq!(hosts["s.test"], ("x".into(), "one".into()));
        assert_eq!(hosts["t.test"], ("y".into(), "two".into()));
        assert!(!hosts.contains_key("u.test"));
    }
}
