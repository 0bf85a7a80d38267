//! GatewayClasses, Gateways, HTTPRoutes and Services reduced to what the proxy serves
//! and what each object's status should say (pure: no API, no network).
//!
//! Gateways of a class whose `controllerName` is ours are served on the ingress
//! listeners: `HTTP` listeners on the HTTP port, `HTTPS` listeners (TLS terminated with
//! their `certificateRefs` Secrets) on the HTTPS port; a listener's `port` is not bound
//! on its own. HTTPRoutes attach by `parentRefs` (a listener by `sectionName` or `port`),
//! where the listener's `allowedRoutes` let them (`Same`, `All`, or namespaces matching a selector).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use k8s_openapi::api::core::v1::Service;
use serde_json::{json, Value};

use super::routes::{
    intersect, Action, Match, Origin, PathMatch, Protocol, RouteTable, WeightedBackend,
};
use super::types::{
    Gateway, GatewayClass, HttpRoute, HttpRouteMatch, Listener, ObjectRef, ParentRef,
    RouteGroupKind,
};
use super::GROUP;
use crate::ingress::model::{port_endpoints, ServicePortRef};
use crate::ingress::routes::Backend;
use crate::model::EndpointAddr;
use crate::network_policy::selector_matches;

/// The only route kind served.
pub const HTTP_ROUTE: &str = "HTTPRoute";

/// A condition as this controller wants it (times are added when it is written).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Condition {
    /// `Accepted`, `Programmed`, `ResolvedRefs`, ...
    pub type_: &'static str,
    /// `True` or `False`.
    pub status: bool,
    /// The Gateway API's reason.
    pub reason: &'static str,
    /// For people.
    pub message: String,
}

impl Condition {
    fn new(
        type_: &'static str,
        status: bool,
        reason: &'static str,
        message: impl Into<String>,
    ) -> Self {
        Condition {
            type_,
            status,
            reason,
            message: message.into(),
        }
    }
}

/// A listener's status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenerStatus {
    /// The listener's name.
    pub name: String,
    /// The route kinds it accepts.
    pub supported_kinds: Vec<RouteGroupKind>,
    /// How many routes are attached.
    pub attached_routes: i32,
    /// Accepted, Programmed, ResolvedRefs, Conflicted.
    pub conditions: Vec<Condition>,
}

/// A Gateway's status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GatewayStatus {
    /// `metadata.generation` observed.
    pub generation: i64,
    /// The addresses it is reachable at.
    pub addresses: Vec<String>,
    /// Accepted, Programmed.
    pub conditions: Vec<Condition>,
    /// One per listener, in spec order.
    pub listeners: Vec<ListenerStatus>,
}

/// One `status.parents[]` entry of an HTTPRoute.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteParentStatus {
    /// The parentRef as written in the spec.
    pub parent_ref: ParentRef,
    /// Accepted, ResolvedRefs.
    pub conditions: Vec<Condition>,
}

/// The certificate of an HTTPS listener.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenerCert {
    /// The listener's hostname (`None`: any SNI name no other certificate has).
    pub hostname: Option<String>,
    /// The Secret's namespace.
    pub namespace: String,
    /// The Secret's name.
    pub name: String,
}

/// Everything the controller applies after one round.
#[derive(Debug, Default)]
pub struct Desired {
    /// The routes.
    pub table: RouteTable,
    /// Certificates of the HTTPS listeners.
    pub certs: Vec<ListenerCert>,
    /// GatewayClasses of ours, with their generation.
    pub classes: Vec<(String, i64, Vec<Condition>)>,
    /// Gateways of ours, by `(namespace, name)`.
    pub gateways: BTreeMap<(String, String), GatewayStatus>,
    /// HTTPRoutes attached to a Gateway of ours: our `status.parents` entries.
    pub routes: BTreeMap<(String, String), (i64, Vec<RouteParentStatus>)>,
}

/// What the model reads besides the Gateway API objects.
pub struct World<'a> {
    /// Every Service.
    pub services: &'a [Arc<Service>],
    /// Endpoints by Service.
    pub endpoints: &'a Endpoints,
    /// Whether the TLS Secret `(namespace, name)` exists.
    pub secret_exists: &'a (dyn Fn(&str, &str) -> bool + Sync),
    /// The labels of a namespace (`None`: no such namespace), for `allowedRoutes` selectors.
    pub namespace_labels: &'a (dyn Fn(&str) -> Option<BTreeMap<String, String>> + Sync),
    /// The address written to Gateways' `status.addresses`.
    pub address: String,
}

/// Endpoints by `(namespace, service)`.
type Endpoints = BTreeMap<(String, String), Vec<EndpointAddr>>;

/// A served Gateway: its listeners' states and statuses.
type Served<'a> = (&'a Gateway, Vec<ListenerState<'a>>, Vec<ListenerStatus>);

struct ListenerState<'a> {
    listener: &'a Listener,
    protocol: Option<Protocol>,
    /// Accepted and its references resolved: routes may attach.
    ready: bool,
    attached: i32,
}

fn ns_name(meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) -> (String, String) {
    (
        meta.namespace.clone().unwrap_or_default(),
        meta.name.clone().unwrap_or_default(),
    )
}

/// Computes routes, certificates and statuses; `controller` is our `controllerName`.
pub fn desired(
    controller: &str,
    classes: &[GatewayClass],
    gateways: &[Gateway],
    routes: &[HttpRoute],
    world: &World<'_>,
) -> Desired {
    let mut out = Desired::default();
    let ours: BTreeSet<String> = classes
        .iter()
        .filter(|c| c.spec.controller_name == controller)
        .filter_map(|c| c.metadata.name.clone())
        .collect();
    for class in classes
        .iter()
        .filter(|c| c.spec.controller_name == controller)
    {
        out.classes.push((
            class.metadata.name.clone().unwrap_or_default(),
            class.metadata.generation.unwrap_or_default(),
            vec![Condition::new(
                "Accepted",
                true,
                "Accepted",
                "Handled by skiff's proxy",
            )],
        ));
    }

    // Gateways of ours and the state of their listeners.
    let mut served: BTreeMap<(String, String), Served<'_>> = BTreeMap::new();
    for gw in gateways
        .iter()
        .filter(|g| ours.contains(&g.spec.gateway_class_name))
    {
        let (namespace, _) = ns_name(&gw.metadata);
        let mut states = Vec::new();
        let mut statuses = Vec::new();
        for listener in &gw.spec.listeners {
            let (state, status, cert) = listener_state(&namespace, listener, world);
            if let Some(cert) = cert {
                out.certs.push(cert);
            }
            states.push(state);
            statuses.push(status);
        }
        served.insert(ns_name(&gw.metadata), (gw, states, statuses));
    }

    // Routes, oldest first, onto the listeners that accept them.
    let mut sorted: Vec<&HttpRoute> = routes.iter().collect();
    sorted.sort_by_key(|r| origin_of(r));
    for route in sorted {
        let key = ns_name(&route.metadata);
        let resolved = resolve_backends(&key.0, route, world);
        let unsupported = unsupported(route);
        let mut parents = Vec::new();
        for parent in &route.spec.parent_refs {
            if parent.group.as_deref().unwrap_or(GROUP) != GROUP
                || parent.kind.as_deref().unwrap_or("Gateway") != "Gateway"
            {
                continue;
            }
            let gw_ns = parent.namespace.clone().unwrap_or_else(|| key.0.clone());
            let Some((_, states, _)) = served.get_mut(&(gw_ns.clone(), parent.name.clone())) else {
                continue;
            };
            let accepted = attach(
                &key,
                route,
                parent,
                &gw_ns,
                world,
                states,
                unsupported.as_deref(),
                &resolved.actions,
                &mut out.table,
            );
            parents.push(RouteParentStatus {
                parent_ref: parent.clone(),
                conditions: vec![accepted, resolved.condition.clone()],
            });
        }
        if !parents.is_empty() {
            out.routes.insert(
                key,
                (route.metadata.generation.unwrap_or_default(), parents),
            );
        }
    }

    for (key, (gw, states, mut listeners)) in served {
        for (status, state) in listeners.iter_mut().zip(&states) {
            status.attached_routes = state.attached;
        }
        let any_ready = states.iter().any(|s| s.ready);
        let all_ready = states.iter().all(|s| s.ready);
        let conditions = if any_ready {
            vec![
                Condition::new(
                    "Accepted",
                    true,
                    if all_ready {
                        "Accepted"
                    } else {
                        "ListenersNotValid"
                    },
                    if all_ready {
                        "Accepted by skiff's proxy".to_owned()
                    } else {
                        "Some listeners are not valid".to_owned()
                    },
                ),
                Condition::new(
                    "Programmed",
                    true,
                    "Programmed",
                    "Served on the ingress listeners",
                ),
            ]
        } else {
            vec![
                Condition::new(
                    "Accepted",
                    false,
                    "ListenersNotValid",
                    "No listener is valid",
                ),
                Condition::new("Programmed", false, "Invalid", "No listener is valid"),
            ]
        };
        out.gateways.insert(
            key,
            GatewayStatus {
                generation: gw.metadata.generation.unwrap_or_default(),
                addresses: vec![world.address.clone()],
                conditions,
                listeners,
            },
        );
    }
    out.table = std::mem::take(&mut out.table).finish();
    out
}

fn origin_of(route: &HttpRoute) -> (String, String) {
    let (ns, name) = ns_name(&route.metadata);
    let created = route
        .metadata
        .creation_timestamp
        .as_ref()
        .map(|t| t.0.to_string())
        .unwrap_or_default();
    (created, format!("{ns}/{name}"))
}

/// A listener's state, status and certificate.
fn listener_state<'a>(
    namespace: &str,
    listener: &'a Listener,
    world: &World<'_>,
) -> (ListenerState<'a>, ListenerStatus, Option<ListenerCert>) {
    let protocol = match listener.protocol.as_str() {
        "HTTP" => Some(Protocol::Http),
        "HTTPS" => Some(Protocol::Https),
        _ => None,
    };
    let mut conditions = Vec::new();
    let http_route = RouteGroupKind {
        group: Some(GROUP.into()),
        kind: HTTP_ROUTE.into(),
    };
    let (mut kinds, mut kinds_ok) = (vec![http_route.clone()], true);
    if let Some(wanted) = listener
        .allowed_routes
        .as_ref()
        .and_then(|a| a.kinds.as_ref())
    {
        kinds = wanted
            .iter()
            .filter(|k| k.group.as_deref().unwrap_or(GROUP) == GROUP && k.kind == HTTP_ROUTE)
            .map(|_| http_route.clone())
            .collect();
        kinds.dedup();
        kinds_ok = kinds.len() == wanted.len() && !kinds.is_empty();
    }
    let mut cert = None;
    let mut refs_ok: Result<(), (&'static str, String)> = Ok(());
    let accepted = match protocol {
        None => {
            kinds.clear();
            Condition::new(
                "Accepted",
                false,
                "UnsupportedProtocol",
                format!(
                    "Protocol {} is not supported; use HTTP or HTTPS",
                    listener.protocol
                ),
            )
        }
        Some(Protocol::Https)
            if listener
                .tls
                .as_ref()
                .and_then(|t| t.mode.as_deref())
                .is_some_and(|m| m != "Terminate") =>
        {
            Condition::new(
                "Accepted",
                false,
                "UnsupportedProtocol",
                "TLS passthrough is not supported",
            )
        }
        Some(_) => Condition::new("Accepted", true, "Accepted", "Listener is accepted"),
    };
    if protocol == Some(Protocol::Https) {
        let refs = listener
            .tls
            .as_ref()
            .map(|t| t.certificate_refs.as_slice())
            .unwrap_or_default();
        refs_ok = Err(("InvalidCertificateRef", "No certificateRefs".into()));
        for r in refs {
            let ns = r.namespace.clone().unwrap_or_else(|| namespace.to_owned());
            if !r.group.as_deref().unwrap_or("").is_empty()
                || r.kind.as_deref().unwrap_or("Secret") != "Secret"
            {
                refs_ok = Err((
                    "InvalidCertificateRef",
                    format!("{} is not a Secret", r.name),
                ));
            } else if ns != namespace {
                refs_ok = Err((
                    "RefNotPermitted",
                    format!("Secret {ns}/{} is in another namespace (ReferenceGrants are not supported)", r.name),
                ));
            } else if !(world.secret_exists)(&ns, &r.name) {
                refs_ok = Err((
                    "InvalidCertificateRef",
                    format!("TLS Secret {ns}/{} not found", r.name),
                ));
            } else {
                refs_ok = Ok(());
                cert = Some(ListenerCert {
                    hostname: listener.hostname.clone().filter(|h| !h.is_empty()),
                    namespace: ns,
                    name: r.name.clone(),
                });
                break;
            }
        }
    }
    let resolved = match (&refs_ok, kinds_ok) {
        (Err((reason, message)), _) => {
            Condition::new("ResolvedRefs", false, reason, message.clone())
        }
        (Ok(()), false) => Condition::new(
            "ResolvedRefs",
            false,
            "InvalidRouteKinds",
            "Only HTTPRoute is supported",
        ),
        (Ok(()), true) => {
            Condition::new("ResolvedRefs", true, "ResolvedRefs", "References resolved")
        }
    };
    let ready = accepted.status && resolved.status;
    if !ready {
        cert = None;
    }
    conditions.push(accepted);
    conditions.push(if ready {
        Condition::new("Programmed", true, "Programmed", "Listener is programmed")
    } else {
        Condition::new("Programmed", false, "Invalid", "Listener is not valid")
    });
    conditions.push(resolved);
    conditions.push(Condition::new(
        "Conflicted",
        false,
        "NoConflicts",
        "No conflicts",
    ));
    (
        ListenerState {
            listener,
            protocol,
            ready,
            attached: 0,
        },
        ListenerStatus {
            name: listener.name.clone(),
            supported_kinds: kinds,
            attached_routes: 0,
            conditions,
        },
        cert,
    )
}

/// Why a route cannot be served as written, if it cannot.
fn unsupported(route: &HttpRoute) -> Option<String> {
    for rule in &route.spec.rules {
        if !rule.filters.is_empty() || rule.backend_refs.iter().any(|b| !b.filters.is_empty()) {
            return Some("filters are not supported".into());
        }
        for m in &rule.matches {
            let regex = m
                .path
                .as_ref()
                .and_then(|p| p.type_.as_deref())
                .is_some_and(|t| t != "Exact" && t != "PathPrefix")
                || m.headers
                    .iter()
                    .chain(&m.query_params)
                    .any(|h| h.type_.as_deref().is_some_and(|t| t != "Exact"));
            if regex {
                return Some("only Exact and PathPrefix paths and Exact header and query matches are supported".into());
            }
        }
    }
    None
}

/// Attaches `route` to the listeners of `gw` its `parent` selects; returns the Accepted
/// condition for that parent.
#[allow(clippy::too_many_arguments)]
fn attach(
    key: &(String, String),
    route: &HttpRoute,
    parent: &ParentRef,
    gw_ns: &str,
    world: &World<'_>,
    states: &mut [ListenerState<'_>],
    unsupported: Option<&str>,
    actions: &[Arc<Action>],
    table: &mut RouteTable,
) -> Condition {
    let selected: Vec<usize> = states
        .iter()
        .enumerate()
        .filter(|(_, s)| {
            parent
                .section_name
                .as_deref()
                .is_none_or(|n| n == s.listener.name)
                && parent.port.is_none_or(|p| p == s.listener.port)
        })
        .map(|(i, _)| i)
        .collect();
    if selected.is_empty() {
        return Condition::new(
            "Accepted",
            false,
            "NoMatchingParent",
            "No listener matches the parentRef",
        );
    }
    let allowed: Vec<usize> = selected
        .into_iter()
        .filter(|i| {
            let s = &states[*i];
            let from = s
                .listener
                .allowed_routes
                .as_ref()
                .and_then(|a| a.namespaces.as_ref())
                .and_then(|n| n.from.as_deref())
                .unwrap_or("Same");
            let namespace_ok = match from {
                "All" => true,
                "Same" => key.0 == gw_ns,
                "Selector" => {
                    let selector = s
                        .listener
                        .allowed_routes
                        .as_ref()
                        .and_then(|a| a.namespaces.as_ref())
                        .and_then(|n| n.selector.as_ref());
                    match (selector, (world.namespace_labels)(&key.0)) {
                        (Some(selector), Some(labels)) => selector_matches(selector, &labels),
                        _ => false,
                    }
                }
                _ => false,
            };
            s.ready && s.protocol.is_some() && namespace_ok
        })
        .collect();
    if allowed.is_empty() {
        return Condition::new(
            "Accepted",
            false,
            "NotAllowedByListeners",
            "No listener allows this route (allowedRoutes, or the listener is not valid)",
        );
    }
    let mut hosts_by_listener = Vec::new();
    for i in allowed {
        let hosts = intersect(
            states[i].listener.hostname.as_deref(),
            &route.spec.hostnames,
        );
        if !hosts.is_empty() {
            hosts_by_listener.push((i, hosts));
        }
    }
    if hosts_by_listener.is_empty() {
        return Condition::new(
            "Accepted",
            false,
            "NoMatchingListenerHostname",
            "No listener hostname matches the route's hostnames",
        );
    }
    if let Some(why) = unsupported {
        return Condition::new("Accepted", false, "UnsupportedValue", why);
    }
    let (created, name) = origin_of(route);
    for (i, hosts) in hosts_by_listener {
        let state = &mut states[i];
        state.attached += 1;
        let protocol = state.protocol.expect("allowed listeners have a protocol");
        for host in &hosts {
            for (r, rule) in route.spec.rules.iter().enumerate() {
                let matches: Vec<Match> = if rule.matches.is_empty() {
                    vec![Match::any()]
                } else {
                    rule.matches.iter().map(to_match).collect()
                };
                for (m, matcher) in matches.into_iter().enumerate() {
                    table.add(
                        protocol,
                        host,
                        matcher,
                        actions[r].clone(),
                        Origin {
                            created: created.clone(),
                            route: name.clone(),
                            rule: r,
                            index: m,
                        },
                    );
                }
            }
        }
    }
    Condition::new("Accepted", true, "Accepted", "Route is accepted")
}

fn to_match(m: &HttpRouteMatch) -> Match {
    let (type_, value) = m.path.as_ref().map_or(("PathPrefix", "/"), |p| {
        (
            p.type_.as_deref().unwrap_or("PathPrefix"),
            p.value.as_deref().unwrap_or("/"),
        )
    });
    Match {
        path: if type_ == "Exact" {
            PathMatch::Exact(value.to_owned())
        } else {
            PathMatch::prefix(value)
        },
        method: m.method.clone(),
        headers: m
            .headers
            .iter()
            .map(|h| (h.name.to_ascii_lowercase(), h.value.clone()))
            .collect(),
        query: m
            .query_params
            .iter()
            .map(|q| (q.name.clone(), q.value.clone()))
            .collect(),
    }
}

struct Resolved {
    /// One per rule.
    actions: Vec<Arc<Action>>,
    /// The route's ResolvedRefs condition.
    condition: Condition,
}

/// The backends of every rule, and whether they all resolved.
fn resolve_backends(namespace: &str, route: &HttpRoute, world: &World<'_>) -> Resolved {
    let mut failure: Option<(&'static str, String)> = None;
    let mut actions = Vec::new();
    for rule in &route.spec.rules {
        let mut backends = Vec::new();
        for b in &rule.backend_refs {
            let (backend, problem) = resolve_one(namespace, b, world);
            if let Some(p) = problem {
                failure.get_or_insert(p);
            }
            backends.push(backend);
        }
        actions.push(Arc::new(Action::new(backends)));
    }
    let condition = match failure {
        None => Condition::new(
            "ResolvedRefs",
            true,
            "ResolvedRefs",
            "All references resolved",
        ),
        Some((reason, message)) => Condition::new("ResolvedRefs", false, reason, message),
    };
    Resolved { actions, condition }
}

fn resolve_one(
    namespace: &str,
    b: &ObjectRef,
    world: &World<'_>,
) -> (WeightedBackend, Option<(&'static str, String)>) {
    let ns = b.namespace.clone().unwrap_or_else(|| namespace.to_owned());
    let port = b.port.unwrap_or_default();
    let name = format!("{ns}/{}:{port}", b.name);
    let weight = u32::try_from(b.weight.unwrap_or(1)).unwrap_or(0);
    let unresolved = |reason, message: String| {
        (
            WeightedBackend {
                backend: Arc::new(Backend::new(name.clone(), vec![])),
                weight,
                resolved: false,
            },
            Some((reason, message)),
        )
    };
    if !b.group.as_deref().unwrap_or("").is_empty()
        || b.kind.as_deref().unwrap_or("Service") != "Service"
    {
        return unresolved("InvalidKind", format!("{} is not a Service", b.name));
    }
    if ns != namespace {
        return unresolved(
            "RefNotPermitted",
            format!(
                "Service {ns}/{} is in another namespace (ReferenceGrants are not supported)",
                b.name
            ),
        );
    }
    let Some(svc) = world.services.iter().find(|s| {
        s.metadata.namespace.as_deref() == Some(ns.as_str())
            && s.metadata.name.as_deref() == Some(b.name.as_str())
    }) else {
        return unresolved(
            "BackendNotFound",
            format!("Service {ns}/{} not found", b.name),
        );
    };
    let Some(endpoints) = b
        .port
        .and_then(|p| port_endpoints(svc, ServicePortRef::Number(p), world.endpoints))
    else {
        return unresolved(
            "BackendNotFound",
            format!("Service {ns}/{} has no port {port}", b.name),
        );
    };
    (
        WeightedBackend {
            backend: Arc::new(Backend::new(name, endpoints)),
            weight,
            resolved: true,
        },
        None,
    )
}

/// `conditions` as JSON for a status, keeping each one's `lastTransitionTime` from
/// `stored` when its status did not change (`now` otherwise).
pub fn conditions_json(
    conditions: &[Condition],
    generation: i64,
    stored: Option<&Value>,
    now: &str,
) -> Value {
    let stored = stored.and_then(Value::as_array);
    Value::Array(
        conditions
            .iter()
            .map(|c| {
                let status = if c.status { "True" } else { "False" };
                let since = stored
                    .into_iter()
                    .flatten()
                    .find(|s| s["type"] == c.type_ && s["status"] == status)
                    .and_then(|s| s["lastTransitionTime"].as_str())
                    .unwrap_or(now);
                json!({"type": c.type_, "status": status, "reason": c.reason,
                    "message": c.message, "observedGeneration": generation,
                    "lastTransitionTime": since})
            })
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gateway::routes::{RequestView, Routed};
    use crate::model::endpoints_by_service;
    use hyper::HeaderMap;

    const OURS: &str = "skiff.dev/gateway-controller";

    fn parse<T: serde::de::DeserializeOwned>(v: Value) -> T {
        serde_json::from_value(v).unwrap()
    }

    fn classes() -> Vec<GatewayClass> {
        vec![
            parse(json!({"metadata": {"name": "skiff", "generation": 1},
                "spec": {"controllerName": OURS}})),
            parse(json!({"metadata": {"name": "other"},
                "spec": {"controllerName": "example.com/gw"}})),
        ]
    }

    fn gateway(name: &str, class: &str, listeners: Value) -> Gateway {
        parse(
            json!({"metadata": {"name": name, "namespace": "web", "generation": 3},
            "spec": {"gatewayClassName": class, "listeners": listeners}}),
        )
    }

    fn route(name: &str, namespace: &str, spec: Value) -> HttpRoute {
        parse(
            json!({"metadata": {"name": name, "namespace": namespace, "generation": 1,
            "creationTimestamp": "2026-01-01T00:00:00Z"}, "spec": spec}),
        )
    }

    fn services() -> (Vec<Arc<Service>>, Endpoints) {
        let svc = |name: &str| -> Arc<Service> {
            Arc::new(parse(
                json!({"metadata": {"name": name, "namespace": "web"},
                "spec": {"ports": [{"port": 80, "targetPort": 8080}]}}),
            ))
        };
        let slice = |name: &str, ip: &str| -> k8s_openapi::api::discovery::v1::EndpointSlice {
            parse(
                json!({"metadata": {"name": format!("{name}-1"), "namespace": "web",
                "labels": {"kubernetes.io/service-name": name}},
                "addressType": "IPv4", "ports": [{"port": 8080, "protocol": "TCP", "name": ""}],
                "endpoints": [{"addresses": [ip], "conditions": {"ready": true}}]}),
            )
        };
        let (a, b) = (slice("a", "10.88.0.2"), slice("b", "10.88.0.3"));
        (vec![svc("a"), svc("b")], endpoints_by_service([&a, &b]))
    }

    fn run(gateways: &[Gateway], routes: &[HttpRoute]) -> Desired {
        let (services, endpoints) = services();
        let secret_exists = |ns: &str, name: &str| ns == "web" && name == "tls";
        let namespace_labels = |ns: &str| {
            (ns == "labelled")
                .then(|| BTreeMap::from([("expose-apps".to_string(), "true".to_string())]))
        };
        let world = World {
            services: &services,
            endpoints: &endpoints,
            secret_exists: &secret_exists,
            namespace_labels: &namespace_labels,
            address: "127.0.0.1".into(),
        };
        desired(OURS, &classes(), gateways, routes, &world)
    }

    fn get(d: &Desired, protocol: Protocol, host: &str, path: &str) -> String {
        let headers = HeaderMap::new();
        let req = RequestView {
            protocol,
            host,
            method: "GET",
            path,
            query: None,
            headers: &headers,
        };
        match d.table.route(&req) {
            Routed::Backend(b) => b.endpoints.iter().map(|e| e.to_string()).collect(),
            Routed::Invalid => "500".into(),
            Routed::NoMatch => "none".into(),
        }
    }

    fn condition<'a>(conditions: &'a [Condition], type_: &str) -> &'a Condition {
        conditions.iter().find(|c| c.type_ == type_).unwrap()
    }

    #[test]
    fn routes_attach_to_listeners_of_our_gateways_only() {
        let gws = [
            gateway(
                "gw",
                "skiff",
                json!([
                {"name": "http", "port": 80, "protocol": "HTTP"},
                {"name": "https", "port": 443, "protocol": "HTTPS", "hostname": "s.test",
                 "tls": {"certificateRefs": [{"name": "tls"}]}},
                {"name": "tcp", "port": 9000, "protocol": "TCP"}]),
            ),
            gateway(
                "theirs",
                "other",
                json!([{"name": "http", "port": 80, "protocol": "HTTP"}]),
            ),
        ];
        let routes = [
            route(
                "a",
                "web",
                json!({"parentRefs": [{"name": "gw"}, {"name": "theirs"}],
                "hostnames": ["a.test"],
                "rules": [{"matches": [{"path": {"type": "PathPrefix", "value": "/"}}],
                           "backendRefs": [{"name": "a", "port": 80}]},
                          {"matches": [{"path": {"type": "Exact", "value": "/b"}}],
                           "backendRefs": [{"name": "b", "port": 80}]}]}),
            ),
            route(
                "s",
                "web",
                json!({"parentRefs": [{"name": "gw", "sectionName": "https"}],
                "rules": [{"backendRefs": [{"name": "b", "port": 80}]}]}),
            ),
            route(
                "missing",
                "web",
                json!({"parentRefs": [{"name": "gw", "sectionName": "http"}],
                "hostnames": ["m.test"],
                "rules": [{"backendRefs": [{"name": "nope", "port": 80}]}]}),
            ),
            route(
                "elsewhere",
                "other-ns",
                json!({"parentRefs": [{"name": "gw", "namespace": "web"}],
                "rules": [{"backendRefs": [{"name": "a", "port": 80}]}]}),
            ),
        ];
        let d = run(&gws, &routes);
        let (http, https) = (Protocol::Http, Protocol::Https);
        assert_eq!(get(&d, http, "a.test", "/x"), "10.88.0.2:8080");
        assert_eq!(get(&d, http, "a.test", "/b"), "10.88.0.3:8080");
        assert_eq!(get(&d, http, "a.test", "/b/c"), "10.88.0.2:8080");
        // The route on the HTTPS listener takes its hostname and serves only there.
        assert_eq!(get(&d, https, "s.test", "/"), "10.88.0.3:8080");
        assert_eq!(get(&d, http, "s.test", "/"), "none");
        assert_eq!(get(&d, http, "m.test", "/"), "500");
        assert_eq!(
            d.certs,
            [ListenerCert {
                hostname: Some("s.test".into()),
                namespace: "web".into(),
                name: "tls".into()
            }]
        );

        // Statuses: only our parent is reported; missing backends and namespaces.
        let (_, parents) = &d.routes[&("web".to_string(), "a".to_string())];
        assert_eq!(parents.len(), 1);
        assert_eq!(parents[0].parent_ref.name, "gw");
        assert!(condition(&parents[0].conditions, "Accepted").status);
        assert_eq!(
            condition(&parents[0].conditions, "ResolvedRefs").reason,
            "ResolvedRefs"
        );
        let (_, parents) = &d.routes[&("web".to_string(), "missing".to_string())];
        let resolved = condition(&parents[0].conditions, "ResolvedRefs");
        assert_eq!(
            (resolved.status, resolved.reason),
            (false, "BackendNotFound")
        );
        let (_, parents) = &d.routes[&("other-ns".to_string(), "elsewhere".to_string())];
        let accepted = condition(&parents[0].conditions, "Accepted");
        assert_eq!(
            (accepted.status, accepted.reason),
            (false, "NotAllowedByListeners")
        );

        let gw = &d.gateways[&("web".to_string(), "gw".to_string())];
        assert!(!d
            .gateways
            .contains_key(&("web".to_string(), "theirs".to_string())));
        assert_eq!(gw.addresses, ["127.0.0.1"]);
        assert_eq!(gw.generation, 3);
        assert_eq!(
            condition(&gw.conditions, "Accepted").reason,
            "ListenersNotValid"
        );
        assert!(condition(&gw.conditions, "Programmed").status);
        let attached: Vec<_> = gw.listeners.iter().map(|l| l.attached_routes).collect();
        // http: a and missing; https: s (a.test is not s.test).
        assert_eq!(attached, [2, 1, 0]);
        let tcp = &gw.listeners[2];
        assert_eq!(
            condition(&tcp.conditions, "Accepted").reason,
            "UnsupportedProtocol"
        );
        assert!(tcp.supported_kinds.is_empty());
        assert_eq!(d.classes.len(), 1);
        assert_eq!(d.classes[0].0, "skiff");
    }

    #[test]
    fn listener_problems_and_hostname_mismatch() {
        let gws = [gateway(
            "gw",
            "skiff",
            json!([
            {"name": "h", "port": 80, "protocol": "HTTP", "hostname": "*.example.test",
             "allowedRoutes": {"namespaces": {"from": "All"}}},
            {"name": "nocert", "port": 443, "protocol": "HTTPS",
             "tls": {"certificateRefs": [{"name": "absent"}]}}]),
        )];
        let routes = [
            route(
                "far",
                "elsewhere",
                json!({"parentRefs": [{"name": "gw", "namespace": "web"}],
                "hostnames": ["a.example.test", "b.other.test"],
                "rules": [{"backendRefs": [{"name": "a", "port": 80}]}]}),
            ),
            route(
                "nohost",
                "web",
                json!({"parentRefs": [{"name": "gw", "sectionName": "h"}],
                "hostnames": ["x.other.test"],
                "rules": [{"backendRefs": [{"name": "a", "port": 80}]}]}),
            ),
            route(
                "nosection",
                "web",
                json!({"parentRefs": [{"name": "gw", "sectionName": "zzz"}],
                "rules": [{"backendRefs": [{"name": "a", "port": 80}]}]}),
            ),
            route(
                "weighted",
                "web",
                json!({"parentRefs": [{"name": "gw"}],
                "hostnames": ["w.example.test"],
                "rules": [{"backendRefs": [{"name": "a", "port": 80, "weight": 1},
                                            {"name": "b", "port": 80, "weight": 1}]}]}),
            ),
        ];
        let d = run(&gws, &routes);
        // Attached from another namespace (All), its backend is looked up there: missing.
        assert_eq!(get(&d, Protocol::Http, "a.example.test", "/"), "500");
        assert_eq!(get(&d, Protocol::Http, "b.other.test", "/"), "none");
        let split: Vec<_> = (0..4)
            .map(|_| get(&d, Protocol::Http, "w.example.test", "/"))
            .collect();
        assert_eq!(
            split,
            [
                "10.88.0.2:8080",
                "10.88.0.3:8080",
                "10.88.0.2:8080",
                "10.88.0.3:8080"
            ]
        );
        let reason = |name: &str| {
            let (_, p) = &d.routes[&(
                if name == "far" { "elsewhere" } else { "web" }.to_string(),
                name.to_string(),
            )];
            condition(&p[0].conditions, "Accepted").reason
        };
        assert_eq!(reason("far"), "Accepted");
        assert_eq!(reason("nohost"), "NoMatchingListenerHostname");
        assert_eq!(reason("nosection"), "NoMatchingParent");
        let gw = &d.gateways[&("web".to_string(), "gw".to_string())];
        let nocert = &gw.listeners[1];
        let resolved = condition(&nocert.conditions, "ResolvedRefs");
        assert_eq!(
            (resolved.status, resolved.reason),
            (false, "InvalidCertificateRef")
        );
        assert!(!condition(&nocert.conditions, "Programmed").status);
        assert!(d.certs.is_empty());
    }

    #[test]
    fn allowed_routes_by_namespace_selector() {
        let gws = [gateway(
            "gw",
            "skiff",
            json!([{"name": "h", "port": 80, "protocol": "HTTP",
                "allowedRoutes": {"namespaces": {"from": "Selector",
                    "selector": {"matchLabels": {"expose-apps": "true"}}}}}]),
        )];
        let spec = json!({"parentRefs": [{"name": "gw", "namespace": "web"}]});
        let routes = [
            route("in", "labelled", spec.clone()),
            route("out", "web", spec),
        ];
        let d = run(&gws, &routes);
        let reason = |ns: &str, name: &str| {
            let (_, p) = &d.routes[&(ns.to_string(), name.to_string())];
            condition(&p[0].conditions, "Accepted").reason
        };
        assert_eq!(reason("labelled", "in"), "Accepted");
        // The Gateway's own namespace is not selected either.
        assert_eq!(reason("web", "out"), "NotAllowedByListeners");
    }

    #[test]
    fn unsupported_filters_are_not_accepted() {
        let gws = [gateway(
            "gw",
            "skiff",
            json!([{"name": "h", "port": 80, "protocol": "HTTP"}]),
        )];
        let routes = [route(
            "f",
            "web",
            json!({"parentRefs": [{"name": "gw"}],
            "rules": [{"filters": [{"type": "RequestHeaderModifier"}],
                       "backendRefs": [{"name": "a", "port": 80}]}]}),
        )];
        let d = run(&gws, &routes);
        let (_, p) = &d.routes[&("web".to_string(), "f".to_string())];
        assert_eq!(
            condition(&p[0].conditions, "Accepted").reason,
            "UnsupportedValue"
        );
        assert_eq!(get(&d, Protocol::Http, "any", "/"), "none");
    }
}
