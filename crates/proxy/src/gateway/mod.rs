//! The Gateway API (`gateway.networking.k8s.io/v1`: GatewayClass, Gateway, HTTPRoute) on
//! the built-in ingress proxy: Gateways of a class whose `controllerName` is
//! [`CONTROLLER_NAME`] are served by the same listeners as Ingresses.
//!
//! - [`crds`]: the CustomResourceDefinitions skiff installs, and the `skiff` GatewayClass;
//! - [`watches`]: GatewayClasses, Gateways, HTTPRoutes and Namespaces (TLS Secrets come from the
//!   ingress controller's watches, Services and EndpointSlices from [`crate::Caches`]);
//! - [`types`]: the fields read from them;
//! - [`model`]: which Gateways are ours, which routes attach where, and every status (pure);
//! - [`routes`]: hostname, path, method, header and query matching, weighted backends (pure);
//! - [`status`]: writing the statuses when they differ.
//!
//! The loop [`run`] is level-triggered, as the Ingress controller's: every change recomputes
//! the routes, the listeners' certificates and the statuses from the caches and swaps the
//! first two into the shared [`Proxy`] and [`CertResolver`] whole.

pub mod crds;
pub mod model;
pub mod routes;
pub mod status;
pub mod types;
pub mod watches;

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;

use kube::api::{ApiResource, DynamicObject, GroupVersionKind};
use kube::Client;
use rustls::sign::CertifiedKey;

use crate::caches::Caches;
use crate::ingress::server::Proxy;
use crate::ingress::tls::{self, CertResolver, CertTable};
use crate::ingress::watches::IngressWatches;
use crate::ingress::RESYNC_INTERVAL;
use watches::GatewayWatches;

/// The Gateway API's group.
pub const GROUP: &str = "gateway.networking.k8s.io";
/// The `spec.controllerName` of the GatewayClasses this controller serves.
pub const CONTROLLER_NAME: &str = "skiff.dev/gateway-controller";
/// The GatewayClass created at start.
pub const CLASS_NAME: &str = "skiff";

/// The `gateway.networking.k8s.io/v1` resource of `kind`.
pub fn api_resource(kind: &str, plural: &str) -> ApiResource {
    ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(GROUP, "v1", kind), plural)
}

/// Installs the CRDs and the `skiff` GatewayClass in the background (retrying while the
/// API warms up).
pub fn install(client: Client) {
    tokio::spawn(async move {
        crds::ensure(client.clone()).await;
        crds::ensure_class(client).await;
    });
}

fn parse_all<T: serde::de::DeserializeOwned>(objects: &[Arc<DynamicObject>]) -> Vec<T> {
    objects.iter().filter_map(|o| types::parse(o)).collect()
}

/// Serves the Gateways of our classes through `proxy` and `resolver` and writes the
/// statuses, until the runtime stops.
pub async fn run(
    client: Client,
    caches: Caches,
    ingress: IngressWatches,
    proxy: Arc<Proxy>,
    resolver: Arc<CertResolver>,
    address: IpAddr,
) {
    let watches = GatewayWatches::start(&client);
    let mut changes = (caches.changes(), ingress.changes(), watches.changes());
    caches.ready().await;
    ingress.ready().await;
    watches.ready().await;
    let address = address.to_string();
    // Parsed certificates by Secret and resourceVersion, kept across rounds.
    let mut parsed: HashMap<(String, String, String), Arc<CertifiedKey>> = HashMap::new();
    let mut resync = tokio::time::interval(RESYNC_INTERVAL);
    loop {
        let classes: Vec<types::GatewayClass> = parse_all(&watches.classes());
        let gateways: Vec<types::Gateway> = parse_all(&watches.gateways());
        let routes: Vec<types::HttpRoute> = parse_all(&watches.routes());
        let (services, endpoints) = (caches.services(), caches.endpoints());
        let secret_exists = |ns: &str, name: &str| ingress.secret(ns, name).is_some();
        let namespace_labels = |ns: &str| watches.namespace_labels(ns);
        let world = model::World {
            services: &services,
            endpoints: &endpoints,
            secret_exists: &secret_exists,
            namespace_labels: &namespace_labels,
            address: address.clone(),
        };
        let mut desired = model::desired(CONTROLLER_NAME, &classes, &gateways, &routes, &world);
        proxy.set_gateway_routes(std::mem::take(&mut desired.table));

        let mut certs = CertTable::default();
        let mut used = HashMap::new();
        for cert in &desired.certs {
            let Some(secret) = ingress.secret(&cert.namespace, &cert.name) else {
                continue;
            };
            let rv = secret.metadata.resource_version.clone().unwrap_or_default();
            let key = (cert.namespace.clone(), cert.name.clone(), rv);
            let certified = match parsed.get(&key) {
                Some(c) => c.clone(),
                None => match tls::from_secret(&secret) {
                    Ok(c) => Arc::new(c),
                    Err(e) => {
                        tracing::warn!("gateway: {e}");
                        continue;
                    }
                },
            };
            match &cert.hostname {
                Some(host) => certs.insert(host, certified.clone()),
                None => certs.set_fallback(certified.clone()),
            }
            used.insert(key, certified);
        }
        parsed = used;
        resolver.set_gateway(certs);

        write_statuses(&client, &desired, &classes, &gateways, &routes).await;

        tokio::select! {
            changed = changes.0.changed() => if changed.is_err() { return },
            changed = changes.1.changed() => if changed.is_err() { return },
            changed = changes.2.changed() => if changed.is_err() { return },
            _ = resync.tick() => {}
        }
    }
}

/// Writes every status that differs from the stored one.
async fn write_statuses(
    client: &Client,
    desired: &model::Desired,
    classes: &[types::GatewayClass],
    gateways: &[types::Gateway],
    routes: &[types::HttpRoute],
) {
    let now = k8s_openapi::jiff::Timestamp::now()
        .round(k8s_openapi::jiff::Unit::Second)
        .unwrap_or_else(|_| k8s_openapi::jiff::Timestamp::now())
        .to_string();
    let log = |kind: &str, ns: &str, name: &str, e: kube::Error| {
        tracing::debug!("gateway: status of {kind} {ns}/{name}: {e}")
    };
    for (name, generation, conditions) in &desired.classes {
        let stored = classes
            .iter()
            .find(|c| c.metadata.name.as_deref() == Some(name.as_str()))
            .and_then(|c| c.status.as_ref());
        if let Some(s) = status::class(conditions, *generation, stored, &now) {
            if let Err(e) =
                status::write(client, "GatewayClass", "gatewayclasses", "", name, s).await
            {
                log("GatewayClass", "", name, e);
            }
        }
    }
    for gw in gateways {
        let key = (
            gw.metadata.namespace.clone().unwrap_or_default(),
            gw.metadata.name.clone().unwrap_or_default(),
        );
        let Some(want) = desired.gateways.get(&key) else {
            continue;
        };
        if let Some(s) = status::gateway(want, gw.status.as_ref(), &now) {
            if let Err(e) = status::write(client, "Gateway", "gateways", &key.0, &key.1, s).await {
                log("Gateway", &key.0, &key.1, e);
            }
        }
    }
    for route in routes {
        let key = (
            route.metadata.namespace.clone().unwrap_or_default(),
            route.metadata.name.clone().unwrap_or_default(),
        );
        let (generation, ours) = desired
            .routes
            .get(&key)
            .map(|(g, p)| (*g, p.as_slice()))
            .unwrap_or((route.metadata.generation.unwrap_or_default(), &[]));
        if let Some(s) = status::route(ours, generation, route.status.as_ref(), &now) {
            if let Err(e) =
                status::write(client, "HTTPRoute", "httproutes", &key.0, &key.1, s).await
            {
                log("HTTPRoute", &key.0, &key.1, e);
            }
        }
    }
}
