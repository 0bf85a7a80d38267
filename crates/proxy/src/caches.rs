//! The watches the proxy and the DNS share: Services and EndpointSlices of every
//! namespace, mirrored in reflector stores, with a counter that moves on every change.

use std::collections::BTreeMap;

use futures::StreamExt as _;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::runtime::reflector::{self, Store};
use kube::runtime::{watcher, WatchStreamExt as _};
use kube::{Api, Client};
use tokio::sync::watch;

use crate::model::{self, EndpointAddr};

/// Mirrors of Services and EndpointSlices.
#[derive(Clone)]
pub struct Caches {
    services: Store<Service>,
    slices: Store<EndpointSlice>,
    changes: watch::Receiver<u64>,
    ready: watch::Receiver<bool>,
}

impl std::fmt::Debug for Caches {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Caches").finish_non_exhaustive()
    }
}

impl Caches {
    /// Starts the two watches on the current tokio runtime; they run, and retry with
    /// backoff, as long as the runtime does.
    pub fn start(client: &Client) -> Caches {
        let (tx, changes) = watch::channel(0u64);
        let (services, svc_writer) = reflector::store();
        let (slices, slice_writer) = reflector::store();
        let svc_events = watcher(Api::<Service>::all(client.clone()), Default::default())
            .default_backoff()
            .reflect(svc_writer)
            .map(|_| ())
            .boxed();
        let slice_events = watcher(
            Api::<EndpointSlice>::all(client.clone()),
            Default::default(),
        )
        .default_backoff()
        .reflect(slice_writer)
        .map(|_| ())
        .boxed();
        tokio::spawn(async move {
            let mut events = futures::stream::select(svc_events, slice_events);
            while events.next().await.is_some() {
                tx.send_modify(|n| *n += 1);
            }
        });
        // One waiter on the stores' readiness, relayed to any number: the stores' own
        // future wakes only the last task that polled it.
        let (ready_tx, ready) = watch::channel(false);
        let (svc_store, slice_store) = (services.clone(), slices.clone());
        tokio::spawn(async move {
            if svc_store.wait_until_ready().await.is_ok()
                && slice_store.wait_until_ready().await.is_ok()
            {
                let _ = ready_tx.send(true);
            }
        });
        Caches {
            services,
            slices,
            changes,
            ready,
        }
    }

    /// Waits until both mirrors hold a complete first list.
    pub async fn ready(&self) {
        let _ = self.ready.clone().wait_for(|r| *r).await;
    }

    /// A receiver that sees every change from now on.
    pub fn changes(&self) -> watch::Receiver<u64> {
        self.changes.clone()
    }

    /// Every Service.
    pub fn services(&self) -> Vec<std::sync::Arc<Service>> {
        self.services.state()
    }

    /// Every Service's endpoints.
    pub fn endpoints(&self) -> BTreeMap<(String, String), Vec<EndpointAddr>> {
        let slices = self.slices.state();
        model::endpoints_by_service(slices.iter().map(|s| s.as_ref()))
    }
}
