//! Waiting for a cache's first full list before deciding anything (client-go's
//! `WaitForCacheSync`): a controller that acts on a cache still filling recreates what
//! exists, as a restarted controller manager would (pods created twice, ReplicaSets taken
//! for hash collisions).
//!
//! kube's `Store::wait_until_ready` keeps a single waker: of several tasks awaiting it at
//! once, only the last to poll is woken, and the others wait forever. Reconcilers run
//! concurrently, so they poll it instead of awaiting it.

use std::time::Duration;

use futures::FutureExt;
use kube::runtime::reflector::{Lookup, Store};

/// How often a waiting reconciler looks again.
const POLL: Duration = Duration::from_millis(20);

/// Returns once `store` holds its first full list (or its writer is gone).
pub async fn cache_synced<K>(store: &Store<K>)
where
    K: Lookup + Clone + 'static,
    K::DynamicType: Eq + std::hash::Hash + Clone,
{
    while store.wait_until_ready().now_or_never().is_none() {
        tokio::time::sleep(POLL).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::Pod;
    use kube::runtime::{reflector, watcher};

    #[tokio::test]
    async fn every_concurrent_waiter_sees_the_cache_fill() {
        let (store, mut writer) = reflector::store::<Pod>();
        let waiters: Vec<_> = (0..8)
            .map(|_| {
                let store = store.clone();
                tokio::spawn(async move { cache_synced(&store).await })
            })
            .collect();
        tokio::time::sleep(Duration::from_millis(50)).await;
        writer.apply_watcher_event(&watcher::Event::Init);
        writer.apply_watcher_event(&watcher::Event::InitDone);
        for waiter in waiters {
            tokio::time::timeout(Duration::from_secs(2), waiter)
                .await
                .expect("a waiter was never woken")
                .unwrap();
        }
    }
}
