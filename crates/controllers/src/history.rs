//! ControllerRevisions (`pkg/controller/history`): the pod templates a DaemonSet or
//! StatefulSet has had, each stored as the strategic merge patch that restores it (what
//! `kubectl rollout undo` applies), named `<owner>-<hash>` and numbered by `revision`.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use k8s_openapi::api::apps::v1::ControllerRevision;
use k8s_openapi::api::core::v1::PodTemplateSpec;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use k8s_openapi::apimachinery::pkg::runtime::RawExtension;
use kube::api::{Patch, PatchParams, PostParams};
use kube::Api;
use serde_json::json;

/// The label with the revision a pod (or revision) belongs to.
pub const CONTROLLER_REVISION_HASH: &str = "controller-revision-hash";

/// FNV-32a over `bytes` (and the collision count), written with the consonant-and-digit
/// alphabet of `rand.SafeEncodeString`, as Kubernetes names revisions and ReplicaSets.
pub fn safe_hash(bytes: &[u8], collision_count: Option<i32>) -> String {
    let mut hash: u32 = 0x811c9dc5;
    let mut feed = |bytes: &[u8]| {
        for b in bytes {
            hash ^= u32::from(*b);
            hash = hash.wrapping_mul(0x01000193);
        }
    };
    feed(bytes);
    if let Some(c) = collision_count {
        feed(&c.to_le_bytes());
    }
    const ALPHANUMS: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    hash.to_string()
        .bytes()
        .map(|b| ALPHANUMS[usize::from(b) % ALPHANUMS.len()] as char)
        .collect()
}

/// A revision's data: the patch that puts `template` back (`getPatch`).
pub fn revision_data(template: &PodTemplateSpec) -> serde_json::Value {
    let mut template = serde_json::to_value(template).unwrap_or_default();
    template["$patch"] = json!("replace");
    json!({"spec": {"template": template}})
}

/// The hash of a revision's data.
pub fn revision_hash(data: &serde_json::Value, collision_count: Option<i32>) -> String {
    safe_hash(
        &serde_json::to_vec(data).unwrap_or_default(),
        collision_count,
    )
}

/// The number of a revision.
pub fn number(r: &ControllerRevision) -> i64 {
    r.revision.unwrap_or(0)
}

/// Whether a revision holds `data`.
pub fn same_data(r: &ControllerRevision, data: &serde_json::Value) -> bool {
    &r.data.0 == data
}

/// Makes sure a revision with `data` exists as the newest of `owned` (the owner's
/// revisions): reuses an equal one (bumping its number when it is an older one, a
/// rollback) or creates one numbered after the newest. Returns it.
pub async fn ensure_revision(
    api: &Api<ControllerRevision>,
    owner: OwnerReference,
    owner_name: &str,
    labels: BTreeMap<String, String>,
    data: serde_json::Value,
    owned: &[Arc<ControllerRevision>],
    collision_count: Option<i32>,
) -> Result<ControllerRevision, kube::Error> {
    let max = owned.iter().map(|r| number(r)).max().unwrap_or(0);
    if let Some(existing) = owned
        .iter()
        .filter(|r| same_data(r, &data))
        .max_by_key(|r| number(r))
    {
        if number(existing) == max {
            return Ok((**existing).clone());
        }
        return api
            .patch(
                existing.metadata.name.as_deref().unwrap_or(""),
                &PatchParams::default(),
                &Patch::Merge(json!({"revision": max + 1})),
            )
            .await;
    }
    let hash = revision_hash(&data, collision_count);
    let mut labels = labels;
    labels.insert(CONTROLLER_REVISION_HASH.into(), hash.clone());
    let revision = ControllerRevision {
        metadata: ObjectMeta {
            name: Some(format!("{owner_name}-{hash}")),
            labels: Some(labels),
            owner_references: Some(vec![owner]),
            ..Default::default()
        },
        data: RawExtension(data),
        revision: Some(max + 1),
    };
    match api.create(&PostParams::default(), &revision).await {
        Err(kube::Error::Api(s)) if s.code == 409 => api.get(&format!("{owner_name}-{hash}")).await,
        other => other,
    }
}

/// Deletes the oldest revisions beyond `limit`, sparing those in `live` (names in use by
/// pods or the status).
pub async fn truncate(
    api: &Api<ControllerRevision>,
    owned: &[Arc<ControllerRevision>],
    live: &HashSet<String>,
    limit: i32,
) -> Result<(), kube::Error> {
    let mut old: Vec<&Arc<ControllerRevision>> = owned
        .iter()
        .filter(|r| !live.contains(r.metadata.name.as_deref().unwrap_or("")))
        .collect();
    let limit = limit.max(0) as usize;
    if old.len() <= limit {
        return Ok(());
    }
    old.sort_by_key(|r| number(r));
    for r in &old[..old.len() - limit] {
        crate::pod_util::delete_if_present(api, r.metadata.name.as_deref().unwrap_or("")).await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn revision_data_replaces_the_template_and_hashes_stably() {
        let template: PodTemplateSpec = serde_json::from_value(json!({
            "metadata": {"labels": {"app": "a"}},
            "spec": {"containers": [{"name": "c", "image": "nginx"}]},
        }))
        .unwrap();
        let data = revision_data(&template);
        assert_eq!(data["spec"]["template"]["$patch"], "replace");
        assert_eq!(revision_hash(&data, None), revision_hash(&data, None));
        assert_ne!(revision_hash(&data, None), revision_hash(&data, Some(1)));
        let mut other = template.clone();
        other.spec.as_mut().unwrap().containers[0].image = Some("nginx:2".into());
        assert_ne!(
            revision_hash(&revision_data(&other), None),
            revision_hash(&data, None)
        );
    }
}
