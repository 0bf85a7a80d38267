//! The built-in Ingress controller (what Traefik is to k3s): `networking.k8s.io/v1`
//! Ingresses of the `skiff` IngressClass served over HTTP and HTTPS on the node,
//! proxied straight to the pods' addresses.
//!
//! - [`watches`]: Ingresses, IngressClasses and TLS Secrets (Services and
//!   EndpointSlices come from the shared [`crate::Caches`]);
//! - [`model`]: which Ingresses are ours, and their rules as a routing table (pure);
//! - [`routes`]: host and path matching, round robin over ready endpoints (pure);
//! - [`server`]: the listeners and the proxying;
//! - [`tls`]: certificates by SNI, with a self-signed default;
//! - [`status`]: writing `status.loadBalancer.ingress`.
//!
//! The loop [`start`] spawns is level-triggered: every change recomputes the routing table and the
//! certificates from the caches and swaps them in whole, then corrects the statuses.
//! The Gateway API controller ([`crate::gateway`]) shares the listeners, the proxy and the
//! certificate resolver: [`start`] starts it too.

pub mod model;
pub mod routes;
pub mod server;
pub mod status;
pub mod tls;
pub mod watches;

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::networking::v1::IngressClass;
use kube::api::PostParams;
use kube::{Api, Client};
use rustls::sign::CertifiedKey;
use serde_json::json;
use tokio::net::TcpListener;

use crate::caches::Caches;
use server::Proxy;
use tls::{CertResolver, CertTable};
use watches::IngressWatches;

/// The IngressClass created at start (k3s's is `traefik`).
pub const CLASS_NAME: &str = "skiff";
/// The `spec.controller` of the classes this controller serves.
pub const CONTROLLER: &str = "skiff.dev/ingress";
/// How often statuses are checked even without a change.
pub const RESYNC_INTERVAL: Duration = Duration::from_secs(30);

/// Errors of the ingress controller.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A listener could not bind.
    #[error("ingress: binding {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// A certificate or key could not be used.
    #[error("ingress TLS: {0}")]
    Tls(String),
}

/// Where the controller listens and what it reports.
#[derive(Debug, Clone)]
pub struct IngressConfig {
    /// The plain HTTP listener (k3s: port 80).
    pub http: SocketAddr,
    /// The HTTPS listener (k3s: port 443).
    pub https: SocketAddr,
    /// The address written to `status.loadBalancer.ingress[].ip`.
    pub address: IpAddr,
}

/// Installs the Gateway API CRDs, binds both listeners, then serves Ingresses and Gateways
/// and reconciles until the runtime stops.
pub async fn start(
    client: Client,
    caches: Caches,
    config: IngressConfig,
) -> Result<tokio::task::JoinHandle<()>, Error> {
    crate::gateway::install(client.clone());
    let bind = |addr: SocketAddr| async move {
        TcpListener::bind(addr)
            .await
            .map_err(|source| Error::Bind { addr, source })
    };
    let (http, https) = (bind(config.http).await?, bind(config.https).await?);
    let resolver = Arc::new(CertResolver::new()?);
    let proxy = Proxy::new();
    tokio::spawn(proxy.clone().serve_http(http));
    tokio::spawn(proxy.clone().serve_https(https, resolver.clone()));
    tokio::spawn(ensure_class(client.clone()));
    let watches = IngressWatches::start(&client);
    tokio::spawn(crate::gateway::run(
        client.clone(),
        caches.clone(),
        watches.clone(),
        proxy.clone(),
        resolver.clone(),
        config.address,
    ));
    Ok(tokio::spawn(reconcile(
        client,
        caches,
        watches,
        proxy,
        resolver,
        config.address,
    )))
}

/// Creates the `skiff` IngressClass, marked default, unless it exists (a user's edits
/// to it stay); retries while the API warms up.
pub async fn ensure_class(client: Client) {
    let api = Api::<IngressClass>::all(client);
    let class: IngressClass = serde_json::from_value(json!({
        "metadata": {"name": CLASS_NAME,
            "annotations": {model::DEFAULT_CLASS_ANNOTATION: "true"}},
        "spec": {"controller": CONTROLLER},
    }))
    .expect("a valid IngressClass");
    loop {
        match api.create(&PostParams::default(), &class).await {
            Ok(_) => return,
            Err(kube::Error::Api(e)) if e.code == 409 => return,
            Err(e) => tracing::debug!("ingress: creating IngressClass {CLASS_NAME}: {e}"),
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

async fn reconcile(
    client: Client,
    caches: Caches,
    watches: IngressWatches,
    proxy: Arc<Proxy>,
    resolver: Arc<CertResolver>,
    address: IpAddr,
) {
    let (mut svc_changes, mut ing_changes) = (caches.changes(), watches.changes());
    caches.ready().await;
    watches.ready().await;
    // Parsed certificates by Secret and resourceVersion, kept across rounds.
    let mut parsed: HashMap<(String, String, String), Arc<CertifiedKey>> = HashMap::new();
    let mut resync = tokio::time::interval(RESYNC_INTERVAL);
    loop {
        let all = watches.ingresses();
        let classes = watches.classes();
        let ours: Vec<_> = all
            .iter()
            .filter(|i| model::is_ours(i, &classes, CONTROLLER))
            .map(|i| i.as_ref())
            .collect();
        let ours = model::by_age(ours);
        proxy.set_routes(model::routing_table(
            &ours,
            &caches.services(),
            &caches.endpoints(),
        ));
        let mut certs = CertTable::default();
        let mut used = HashMap::new();
        for (host, (ns, name)) in model::tls_hosts(&ours) {
            let Some(secret) = watches.secret(&ns, &name) else {
                tracing::debug!("ingress: TLS secret {ns}/{name} of {host} not found");
                continue;
            };
            let rv = secret.metadata.resource_version.clone().unwrap_or_default();
            let key = (ns.clone(), name.clone(), rv);
            let cert = match parsed.get(&key) {
                Some(c) => c.clone(),
                None => match tls::from_secret(&secret) {
                    Ok(c) => Arc::new(c),
                    Err(e) => {
                        tracing::warn!("ingress: {host}: {e}");
                        continue;
                    }
                },
            };
            certs.insert(&host, cert.clone());
            used.insert(key, cert);
        }
        parsed = used;
        resolver.set(certs);

        // Statuses: ours show this node's address; one no longer ours loses it.
        let want = vec![address.to_string()];
        for ingress in &all {
            let is_ours = ours.iter().any(|o| std::ptr::eq(*o, ingress.as_ref()));
            let target: &[String] = if is_ours {
                &want
            } else if status::addresses(ingress) == want {
                &[]
            } else {
                continue;
            };
            if let Some(patch) = status::patch_for(ingress, target) {
                let ns = ingress.metadata.namespace.as_deref().unwrap_or_default();
                let name = ingress.metadata.name.as_deref().unwrap_or_default();
                if let Err(e) = status::write(&client, ns, name, &patch).await {
                    tracing::debug!("ingress: status of {ns}/{name}: {e}");
                }
            }
        }
        tokio::select! {
            changed = svc_changes.changed() => if changed.is_err() { return },
            changed = ing_changes.changed() => if changed.is_err() { return },
            _ = resync.tick() => {}
        }
    }
}
