//! Claiming objects by controller reference (`ControllerRefManager.ClaimPods`,
//! `ClaimControllerRevisions`): a controller adopts the ownerless pods (or revisions) its
//! selector matches and releases those it controls that its selector no longer matches,
//! so ownership follows labels as users expect.

use std::sync::Arc;

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, OwnerReference};
use kube::api::{Patch, PatchParams};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Api, Resource, ResourceExt as _};
use serde_json::json;

use crate::pod_util::{controller_of, selector_matches};

/// What claiming does with the objects (pods, revisions) of one namespace.
#[derive(Debug)]
pub struct Claim<K> {
    /// Objects the owner controls and keeps.
    pub owned: Vec<Arc<K>>,
    /// Ownerless matching objects to adopt.
    pub adopt: Vec<Arc<K>>,
    /// Controlled objects the selector no longer matches, to release.
    pub release: Vec<Arc<K>>,
}

/// Sorts `pods` (all of the owner's namespace) for the owner `owner_uid` with `selector`.
/// An owner being deleted adopts nothing; pods being deleted are neither adopted nor
/// released. An empty or missing selector matches nothing, as in Kubernetes.
pub fn claim<K: Resource>(
    objects: impl IntoIterator<Item = Arc<K>>,
    owner_uid: &str,
    selector: Option<&LabelSelector>,
    owner_deleting: bool,
) -> Claim<K> {
    let selector = selector.filter(|s| {
        s.match_labels.as_ref().is_some_and(|m| !m.is_empty())
            || s.match_expressions.as_ref().is_some_and(|e| !e.is_empty())
    });
    let mut claim = Claim {
        owned: Vec::new(),
        adopt: Vec::new(),
        release: Vec::new(),
    };
    for pod in objects {
        // Without a selector nothing is adopted, and nothing released either.
        let meta = pod.meta();
        let matches = selector.is_none_or(|s| selector_matches(Some(s), meta.labels.as_ref()));
        let deleting = meta.deletion_timestamp.is_some();
        match controller_of(meta) {
            Some(r) if r.uid == owner_uid => {
                if matches || deleting {
                    claim.owned.push(pod);
                } else {
                    claim.release.push(pod);
                }
            }
            Some(_) => {}
            None if selector.is_some() && matches && !deleting && !owner_deleting => {
                claim.adopt.push(pod)
            }
            None => {}
        }
    }
    claim
}

/// Adds `owner` as the object's controller; fails with a conflict when the object changed
/// since it was read (its resourceVersion is the precondition), and returns the stored one.
pub async fn adopt<K>(api: &Api<K>, pod: &K, owner: OwnerReference) -> kube::Result<K>
where
    K: Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let meta = pod.meta();
    let mut refs = meta.owner_references.clone().unwrap_or_default();
    refs.retain(|r| r.uid != owner.uid);
    refs.push(owner);
    let patch = json!({"metadata": {
        "ownerReferences": refs,
        "resourceVersion": meta.resource_version,
        "uid": meta.uid,
    }});
    api.patch(
        &meta.name.clone().unwrap_or_default(),
        &PatchParams::default(),
        &Patch::Merge(patch),
    )
    .await
}

/// Removes the owner reference of `owner_uid` from the pod; a pod already gone is fine.
pub async fn release(api: &Api<Pod>, pod: &Pod, owner_uid: &str) -> kube::Result<()> {
    let refs: Vec<&OwnerReference> = pod
        .metadata
        .owner_references
        .iter()
        .flatten()
        .filter(|r| r.uid != owner_uid)
        .collect();
    let refs = if refs.is_empty() {
        serde_json::Value::Null
    } else {
        json!(refs)
    };
    let patch = json!({"metadata": {
        "ownerReferences": refs,
        "resourceVersion": pod.metadata.resource_version,
        "uid": pod.metadata.uid,
    }});
    match api
        .patch(
            &pod.name_any(),
            &PatchParams::default(),
            &Patch::Merge(patch),
        )
        .await
    {
        Ok(_) => Ok(()),
        Err(e) if crate::pod_util::is_not_found(&e) => Ok(()),
        Err(e) => Err(e),
    }
}

/// Carries out `claim` on pods for the controller `owner` (uid `owner_uid`): adopts and
/// releases what it says; returns the pods the controller now owns. A pod changed or gone
/// meanwhile is left to its next event.
pub async fn settle_pods(
    api: &Api<Pod>,
    claim: Claim<Pod>,
    owner: &OwnerReference,
    owner_uid: &str,
) -> kube::Result<Vec<Arc<Pod>>> {
    let mut owned = claim.owned;
    for pod in &claim.adopt {
        match adopt(api, pod, owner.clone()).await {
            Ok(adopted) => owned.push(Arc::new(adopted)),
            Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => {}
            Err(e) => return Err(e),
        }
    }
    for pod in &claim.release {
        match release(api, pod, owner_uid).await {
            Ok(()) | Err(kube::Error::Api(_)) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(owned)
}

/// The owners of kind `K` a pod event concerns: its controller when that is a `K`, or,
/// for an ownerless pod, every `K` of its namespace whose selector matches it (which may
/// adopt it). The mapper of a controller's pod watch.
pub fn pod_owners<K>(
    owners: &Store<K>,
    pod: &Pod,
    selector: impl Fn(&K) -> Option<LabelSelector>,
) -> Vec<ObjectRef<K>>
where
    K: Resource<DynamicType = ()> + Clone + 'static,
{
    let namespace = pod.namespace().unwrap_or_default();
    match controller_of(&pod.metadata) {
        Some(r) if r.kind == K::kind(&()) && r.api_version == K::api_version(&()) => {
            vec![ObjectRef::new(&r.name).within(&namespace)]
        }
        Some(_) => Vec::new(),
        None if pod.metadata.deletion_timestamp.is_some() => Vec::new(),
        None => owners
            .state()
            .iter()
            .filter(|o| o.meta().namespace.as_deref() == Some(namespace.as_str()))
            .filter(|o| selector_matches(selector(o).as_ref(), pod.metadata.labels.as_ref()))
            .map(|o| ObjectRef::from_obj(o.as_ref()))
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    fn pod(name: &str, app: &str, controller: Option<&str>) -> Arc<Pod> {
        Arc::new(Pod {
            metadata: ObjectMeta {
                name: Some(name.into()),
                labels: Some([("app".to_string(), app.to_string())].into()),
                owner_references: controller.map(|uid| {
                    vec![OwnerReference {
                        uid: uid.into(),
                        controller: Some(true),
                        ..Default::default()
                    }]
                }),
                ..Default::default()
            },
            ..Default::default()
        })
    }

    fn names(pods: &[Arc<Pod>]) -> Vec<String> {
        pods.iter().map(|p| p.name_any()).collect()
    }

    #[test]
    fn adopts_matching_orphans_and_releases_what_no_longer_matches() {
        let selector = LabelSelector {
            match_labels: Some([("app".to_string(), "web".to_string())].into()),
            ..Default::default()
        };
        let pods = vec![
            pod("mine", "web", Some("u1")),
            pod("relabelled", "other", Some("u1")),
            pod("orphan", "web", None),
            pod("unrelated-orphan", "db", None),
            pod("someone-elses", "web", Some("u2")),
        ];
        let c = claim(pods.clone(), "u1", Some(&selector), false);
        assert_eq!(names(&c.owned), ["mine"]);
        assert_eq!(names(&c.adopt), ["orphan"]);
        assert_eq!(names(&c.release), ["relabelled"]);
        let c = claim(pods.clone(), "u1", Some(&selector), true);
        assert!(c.adopt.is_empty(), "an owner being deleted adopts nothing");
        let c = claim(pods, "u1", Some(&LabelSelector::default()), false);
        assert!(c.adopt.is_empty(), "an empty selector matches nothing");
    }
}
