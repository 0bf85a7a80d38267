//! The watches only the ingress controller needs: Ingresses, IngressClasses and
//! Secrets of every namespace, with a counter that moves on every change (Services and
//! EndpointSlices come from the shared [`crate::Caches`]).

use std::sync::Arc;

use futures::StreamExt as _;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::api::networking::v1::{Ingress, IngressClass};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{watcher, WatchStreamExt as _};
use kube::{Api, Client};
use tokio::sync::watch;

/// Mirrors of Ingresses, IngressClasses and Secrets.
#[derive(Clone)]
pub struct IngressWatches {
    ingresses: Store<Ingress>,
    classes: Store<IngressClass>,
    secrets: Store<Secret>,
    changes: watch::Receiver<u64>,
    ready: watch::Receiver<bool>,
}

impl IngressWatches {
    /// Starts the three watches on the current tokio runtime.
    pub fn start(client: &Client) -> IngressWatches {
        let (tx, changes) = watch::channel(0u64);
        let (ingresses, ing_w) = reflector::store();
        let (classes, class_w) = reflector::store();
        let (secrets, secret_w) = reflector::store();
        let ing = watcher(Api::<Ingress>::all(client.clone()), Default::default())
            .default_backoff()
            .reflect(ing_w)
            .map(|_| ())
            .boxed();
        let class = watcher(Api::<IngressClass>::all(client.clone()), Default::default())
            .default_backoff()
            .reflect(class_w)
            .map(|_| ())
            .boxed();
        // Only TLS Secrets matter; the filter keeps the others out of memory.
        let secret_config = watcher::Config::default().fields("type=kubernetes.io/tls");
        let secret = watcher(Api::<Secret>::all(client.clone()), secret_config)
            .default_backoff()
            .reflect(secret_w)
            .map(|_| ())
            .boxed();
        tokio::spawn(async move {
            let mut events = futures::stream::select_all([ing, class, secret]);
            while events.next().await.is_some() {
                tx.send_modify(|n| *n += 1);
            }
        });
        // One waiter on the stores' readiness, relayed to any number (the Ingress and the
        // Gateway API loops): the stores' own future wakes only the last task that polled it.
        let (ready_tx, ready) = watch::channel(false);
        let stores = (ingresses.clone(), classes.clone(), secrets.clone());
        tokio::spawn(async move {
            if stores.0.wait_until_ready().await.is_ok()
                && stores.1.wait_until_ready().await.is_ok()
                && stores.2.wait_until_ready().await.is_ok()
            {
                let _ = ready_tx.send(true);
            }
        });
        IngressWatches {
            ingresses,
            classes,
            secrets,
            changes,
            ready,
        }
    }

    /// Waits until the three mirrors hold a complete first list.
    pub async fn ready(&self) {
        let _ = self.ready.clone().wait_for(|r| *r).await;
    }

    /// A receiver that sees every change from now on.
    pub fn changes(&self) -> watch::Receiver<u64> {
        self.changes.clone()
    }

    /// Every Ingress.
    pub fn ingresses(&self) -> Vec<Arc<Ingress>> {
        self.ingresses.state()
    }

    /// Every IngressClass.
    pub fn classes(&self) -> Vec<Arc<IngressClass>> {
        self.classes.state()
    }

    /// The Secret `namespace/name`, if mirrored.
    pub fn secret(&self, namespace: &str, name: &str) -> Option<Arc<Secret>> {
        self.secrets
            .get(&reflector::ObjectRef::new(name).within(namespace))
    }
}
