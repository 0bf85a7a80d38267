//! kube-proxy's loop: the Services and endpoints of the caches, programmed into skiff's
//! service table.
//!
//! Level-triggered: every change of a Service or EndpointSlice recomputes the whole
//! desired [`ServiceMap`](skiff_network::service_proxy::ServiceMap) from the caches, and
//! [`ServiceProxy::sync`] writes only what differs from what it applied. Every
//! [`VERIFY_INTERVAL`] the table is compared with what was applied, and rebuilt when
//! someone deleted it or a chain of it.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use skiff_network::service_proxy::ServiceProxy;

use crate::caches::Caches;
use crate::model;

/// How often the table is checked against what was applied.
pub const VERIFY_INTERVAL: Duration = Duration::from_secs(5);

/// Runs until the runtime stops: syncs on every change and every [`VERIFY_INTERVAL`].
/// `node` is this node's name, for the Local traffic policies.
pub async fn run(caches: Caches, proxy: ServiceProxy, node: String) {
    let proxy = Arc::new(Mutex::new(proxy));
    let mut changes = caches.changes();
    caches.ready().await;
    let mut verify = tokio::time::interval(VERIFY_INTERVAL);
    loop {
        let desired = model::service_map(
            caches.services().iter().map(|s| s.as_ref()),
            &caches.endpoints(),
            &node,
        );
        let syncing = proxy.clone();
        let result =
            tokio::task::spawn_blocking(move || syncing.lock().unwrap().sync(&desired)).await;
        match result {
            Ok(Ok(report)) if report.rebuilt => {
                tracing::info!(
                    "service proxy: table rebuilt ({} services)",
                    report.services_changed
                )
            }
            Ok(Ok(report)) if report.services_changed > 0 => {
                tracing::debug!(
                    "service proxy: {} services changed",
                    report.services_changed
                )
            }
            Ok(Ok(_)) => {}
            Ok(Err(e)) => tracing::warn!("service proxy: {e}"),
            Err(e) => tracing::warn!("service proxy: {e}"),
        }
        tokio::select! {
            changed = changes.changed() => {
                if changed.is_err() {
                    return;
                }
            }
            _ = verify.tick() => {
                let checking = proxy.clone();
                let started = std::time::Instant::now();
                let checked = tokio::task::spawn_blocking(move || checking.lock().unwrap().verify()).await;
                if let Ok(Ok(false)) = checked {
                    tracing::info!("service proxy: the service table differs from what was applied; rebuilding");
                }
                // The check holds the table's lock: with thousands of Services it takes
                // long enough that it must stay a small share of the time.
                verify.reset_after(verify_interval(started.elapsed()));
            }
        }
    }
}

/// How long to wait before the next check of the table, after one that took `took`: the
/// usual interval, or 20 times the check's duration when that is longer.
pub(crate) fn verify_interval(took: std::time::Duration) -> std::time::Duration {
    VERIFY_INTERVAL.max(took * 20)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn slow_checks_run_less_often() {
        assert_eq!(verify_interval(Duration::from_millis(3)), VERIFY_INTERVAL);
        assert_eq!(
            verify_interval(Duration::from_secs(2)),
            Duration::from_secs(40)
        );
    }
}
