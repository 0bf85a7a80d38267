//! Deleting one resource's objects in a namespace (`deleteAllContentForGroupVersionResource`):
//! the whole collection at once when the resource allows it, else one by one, then a list
//! of what is left and how long it should take to go.

use std::collections::BTreeMap;

use kube::api::{DeleteParams, ListParams};
use kube::core::DynamicObject;
use kube::{Api, Client};

use super::discovery::Resource;

/// Seconds allowed for content waiting on finalizers (`finalizerEstimateSeconds`).
pub const FINALIZER_ESTIMATE_SECONDS: i64 = 15;

/// What is left of one resource in the namespace after a deletion pass.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Left {
    /// Objects left.
    pub count: usize,
    /// Of those, how many carry each finalizer.
    pub finalizers: BTreeMap<String, usize>,
    /// Seconds they are expected to take to go.
    pub estimate: i64,
}

/// Deletes every object of `resource` in `namespace`; returns what is left, and why
/// deletion failed if it did. `deleted_at` is the namespace's deletionTimestamp.
pub async fn delete_all(
    client: &Client,
    resource: &Resource,
    namespace: &str,
    deleted_at: jiff::Timestamp,
) -> (Left, Option<String>) {
    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), namespace, &resource.api);
    if let Err(e) = delete(&api, resource).await {
        return (Left::default(), Some(e));
    }
    if !resource.supports("list") {
        return (Left::default(), None);
    }
    let items = match api.list(&ListParams::default()).await {
        Ok(list) => list.items,
        Err(e) => return (Left::default(), Some(super::message(&e))),
    };
    let is_pods = resource.api.group.is_empty() && resource.api.plural == "pods";
    let left = left(&items, is_pods, deleted_at, jiff::Timestamp::now());
    // Objects without finalizers that should have gone: something is wrong.
    let failure = (left.count > 0 && left.estimate == 0).then(|| {
        format!(
            "unexpected items still remain in namespace: {namespace} for gvr: {}",
            resource.gvr()
        )
    });
    (left, failure)
}

/// Deletes the collection, or each listed object when the resource has no
/// `deletecollection` (background propagation: the namespace waits for no dependents).
async fn delete(api: &Api<DynamicObject>, resource: &Resource) -> Result<(), String> {
    let dp = DeleteParams::background();
    if resource.supports("deletecollection") {
        match api.delete_collection(&dp, &ListParams::default()).await {
            Ok(_) => return Ok(()),
            // Discovery said otherwise; fall back to deleting one by one.
            Err(kube::Error::Api(s)) if s.code == 404 || s.code == 405 => {}
            Err(e) => return Err(super::message(&e)),
        }
    }
    if !resource.supports("list") || !resource.supports("delete") {
        return Ok(());
    }
    let items = api
        .list_metadata(&ListParams::default())
        .await
        .map_err(|e| super::message(&e))?;
    for item in items {
        let Some(name) = item.metadata.name else {
            continue;
        };
        match api.delete(&name, &dp).await {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => {}
            Err(e) => return Err(super::message(&e)),
        }
    }
    Ok(())
}

/// What `items` (the objects of one resource still in the namespace) amount to: their
/// finalizers, and how long to wait for them. Pods still running get their termination
/// grace period, counted from the namespace's deletion (`estimateGracefulTermination`);
/// objects with finalizers get [`FINALIZER_ESTIMATE_SECONDS`].
pub fn left(
    items: &[DynamicObject],
    is_pods: bool,
    deleted_at: jiff::Timestamp,
    now: jiff::Timestamp,
) -> Left {
    let mut finalizers = BTreeMap::new();
    for item in items {
        for finalizer in item.metadata.finalizers.iter().flatten() {
            *finalizers.entry(finalizer.clone()).or_default() += 1;
        }
    }
    let grace = if is_pods {
        items
            .iter()
            .filter(|p| {
                let phase = p.data.pointer("/status/phase").and_then(|v| v.as_str());
                !matches!(phase, Some("Succeeded" | "Failed"))
            })
            .filter_map(|p| {
                p.data
                    .pointer("/spec/terminationGracePeriodSeconds")
                    .and_then(serde_json::Value::as_i64)
            })
            .max()
            .unwrap_or(0)
    } else {
        0
    };
    // Past the grace period, pods are no reason to wait any more.
    let grace = if deleted_at.duration_until(now).as_secs() >= grace {
        0
    } else {
        grace
    };
    let estimate = if items.is_empty() {
        0
    } else if grace > 0 {
        grace
    } else if !finalizers.is_empty() {
        FINALIZER_ESTIMATE_SECONDS
    } else {
        0
    };
    Left {
        count: items.len(),
        finalizers,
        estimate,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn object(value: serde_json::Value) -> DynamicObject {
        serde_json::from_value(value).unwrap()
    }

    fn at(secs: i64) -> jiff::Timestamp {
        jiff::Timestamp::UNIX_EPOCH + jiff::SignedDuration::from_secs(secs)
    }

    #[test]
    fn running_pods_are_given_their_grace_period_from_the_namespace_deletion() {
        let pods = [
            object(json!({"metadata": {"name": "a"},
                "spec": {"terminationGracePeriodSeconds": 30}, "status": {"phase": "Running"}})),
            object(json!({"metadata": {"name": "b"},
                "spec": {"terminationGracePeriodSeconds": 600}, "status": {"phase": "Succeeded"}})),
        ];
        let left_now = left(&pods, true, at(0), at(10));
        assert_eq!(left_now.count, 2);
        assert_eq!(left_now.estimate, 30);
        assert_eq!(left(&pods, true, at(0), at(30)).estimate, 0);
        // Only pods have a grace period.
        assert_eq!(left(&pods, false, at(0), at(10)).estimate, 0);
    }

    #[test]
    fn finalizers_are_counted_and_waited_for() {
        let items = [
            object(
                json!({"metadata": {"name": "a", "finalizers": ["example.com/x", "example.com/y"]}}),
            ),
            object(json!({"metadata": {"name": "b", "finalizers": ["example.com/x"]}})),
        ];
        let got = left(&items, false, at(0), at(100));
        assert_eq!(
            got,
            Left {
                count: 2,
                finalizers: [("example.com/x".into(), 2), ("example.com/y".into(), 1)].into(),
                estimate: FINALIZER_ESTIMATE_SECONDS,
            }
        );
        assert_eq!(left(&[], true, at(0), at(0)), Left::default());
    }
}
