//! The watches only the Gateway API controller needs: GatewayClasses, Gateways and
//! HTTPRoutes as dynamic objects (their CRDs are ours, there are no generated types), and
//! Namespaces (for `allowedRoutes` selectors), with a counter that moves on every change. TLS Secrets come from the ingress controller's
//! watches, Services and EndpointSlices from the shared [`crate::Caches`].

use std::collections::BTreeMap;
use std::sync::Arc;

use futures::StreamExt as _;
use k8s_openapi::api::core::v1::Namespace;
use kube::api::DynamicObject;
use kube::runtime::reflector::{self, Store};
use kube::runtime::{watcher, WatchStreamExt as _};
use kube::{Api, Client};
use tokio::sync::watch;

use super::api_resource;

/// Mirrors of GatewayClasses, Gateways and HTTPRoutes.
#[derive(Clone)]
pub struct GatewayWatches {
    classes: Store<DynamicObject>,
    gateways: Store<DynamicObject>,
    routes: Store<DynamicObject>,
    namespaces: Store<Namespace>,
    changes: watch::Receiver<u64>,
}

impl GatewayWatches {
    /// Starts the three watches on the current tokio runtime (they retry with backoff
    /// until the CRDs are served).
    pub fn start(client: &Client) -> GatewayWatches {
        let (tx, changes) = watch::channel(0u64);
        let mut streams = Vec::new();
        let mut store = |kind: &str, plural: &str| {
            let ar = api_resource(kind, plural);
            let writer = reflector::store::Writer::new(ar.clone());
            let reader = writer.as_reader();
            streams.push(
                watcher(
                    Api::<DynamicObject>::all_with(client.clone(), &ar),
                    Default::default(),
                )
                .default_backoff()
                .reflect(writer)
                .map(|_| ())
                .boxed(),
            );
            reader
        };
        let classes = store("GatewayClass", "gatewayclasses");
        let gateways = store("Gateway", "gateways");
        let routes = store("HTTPRoute", "httproutes");
        let (namespaces, ns_writer) = reflector::store();
        streams.push(
            watcher(Api::<Namespace>::all(client.clone()), Default::default())
                .default_backoff()
                .reflect(ns_writer)
                .map(|_| ())
                .boxed(),
        );
        tokio::spawn(async move {
            let mut events = futures::stream::select_all(streams);
            while events.next().await.is_some() {
                tx.send_modify(|n| *n += 1);
            }
        });
        GatewayWatches {
            classes,
            gateways,
            routes,
            namespaces,
            changes,
        }
    }

    /// Waits until the four mirrors hold a complete first list.
    pub async fn ready(&self) {
        let _ = self.classes.wait_until_ready().await;
        let _ = self.gateways.wait_until_ready().await;
        let _ = self.routes.wait_until_ready().await;
        let _ = self.namespaces.wait_until_ready().await;
    }

    /// A receiver that sees every change from now on.
    pub fn changes(&self) -> watch::Receiver<u64> {
        self.changes.clone()
    }

    /// Every GatewayClass.
    pub fn classes(&self) -> Vec<Arc<DynamicObject>> {
        self.classes.state()
    }

    /// Every Gateway.
    pub fn gateways(&self) -> Vec<Arc<DynamicObject>> {
        self.gateways.state()
    }

    /// Every HTTPRoute.
    pub fn routes(&self) -> Vec<Arc<DynamicObject>> {
        self.routes.state()
    }

    /// The labels of namespace `name`, if it exists.
    pub fn namespace_labels(&self, name: &str) -> Option<BTreeMap<String, String>> {
        self.namespaces
            .get(&reflector::ObjectRef::new(name))
            .map(|ns| ns.metadata.labels.clone().unwrap_or_default())
    }
}
