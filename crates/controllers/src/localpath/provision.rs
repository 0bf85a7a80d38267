//! The provisioner's decisions, without I/O: which claims get a new volume (and its exact
//! shape), and which of its volumes are deleted.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use k8s_openapi::api::core::v1::{
    HostPathVolumeSource, NodeSelector, NodeSelectorRequirement, NodeSelectorTerm, ObjectReference,
    PersistentVolume, PersistentVolumeClaim, PersistentVolumeSpec, VolumeNodeAffinity,
};
use k8s_openapi::api::storage::v1::StorageClass;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use super::PROVISIONER;
use crate::persistentvolume::util::*;

/// The node label a volume's affinity names (every kubelet sets it to the node's name).
pub const HOSTNAME_LABEL: &str = "kubernetes.io/hostname";

/// What the provisioner should do.
#[derive(Debug, Clone)]
pub enum Action {
    /// Create `volume` for `claim`, its directory at `path` on `node`.
    Provision {
        /// The claim.
        claim: Arc<PersistentVolumeClaim>,
        /// The node that holds the data.
        node: String,
        /// The volume's directory.
        path: PathBuf,
        /// The volume to create, pre-bound to the claim.
        volume: Box<PersistentVolume>,
    },
    /// Delete a released volume and its directory.
    Delete {
        /// The volume.
        volume: Arc<PersistentVolume>,
        /// The node that holds the data, if the volume names one.
        node: Option<String>,
        /// The volume's directory, if it is a hostPath or local volume.
        path: Option<PathBuf>,
    },
}

/// The name of the volume provisioned for a claim (`pvc-<claim uid>`, as every provisioner
/// names them), so a retried provisioning finds the volume it already created.
pub fn volume_name(claim: &PersistentVolumeClaim) -> String {
    format!("pvc-{}", claim.metadata.uid.as_deref().unwrap_or(""))
}

/// The node a volume's required affinity pins it to (`kubernetes.io/hostname In [node]`).
pub fn volume_node(volume: &PersistentVolume) -> Option<String> {
    let terms = &volume
        .spec
        .as_ref()?
        .node_affinity
        .as_ref()?
        .required
        .as_ref()?
        .node_selector_terms;
    terms
        .iter()
        .flat_map(|t| t.match_expressions.iter().flatten())
        .find(|e| e.key == HOSTNAME_LABEL && e.operator == "In")
        .and_then(|e| e.values.as_ref()?.first().cloned())
}

/// The directory of a hostPath or local volume.
pub fn volume_path(volume: &PersistentVolume) -> Option<PathBuf> {
    let spec = volume.spec.as_ref()?;
    spec.host_path
        .as_ref()
        .map(|h| h.path.clone())
        .or_else(|| spec.local.as_ref().map(|l| l.path.clone()))
        .map(PathBuf::from)
}

/// The work of one sweep. `nodes` are the cluster's node names; `local_node` the node whose
/// filesystem this process writes, preferred for Immediate claims.
pub fn plan(
    claims: &[Arc<PersistentVolumeClaim>],
    volumes: &[Arc<PersistentVolume>],
    classes: &[Arc<StorageClass>],
    nodes: &[String],
    local_node: Option<&str>,
    storage_dir: &Path,
) -> Vec<Action> {
    let classes: BTreeMap<&str, &StorageClass> = classes
        .iter()
        .filter(|c| c.provisioner == PROVISIONER)
        .map(|c| (c.metadata.name.as_deref().unwrap_or(""), &**c))
        .collect();
    let mut actions = Vec::new();
    for claim in claims {
        let Some(class) = classes.get(claim_class(claim)) else {
            continue;
        };
        let unbound = claim
            .spec
            .as_ref()
            .and_then(|s| s.volume_name.as_deref())
            .unwrap_or("")
            .is_empty();
        let ours = [ANN_STORAGE_PROVISIONER, ANN_BETA_STORAGE_PROVISIONER]
            .iter()
            .any(|a| annotation(&claim.metadata.annotations, a) == Some(PROVISIONER));
        let name = volume_name(claim);
        let exists = volumes
            .iter()
            .any(|v| v.metadata.name.as_deref() == Some(name.as_str()));
        if !unbound || !ours || exists || claim.metadata.deletion_timestamp.is_some() {
            continue;
        }
        let node = if delays_binding(Some(class)) {
            annotation(&claim.metadata.annotations, ANN_SELECTED_NODE).map(str::to_owned)
        } else {
            local_node
                .filter(|n| nodes.iter().any(|m| m == n))
                .or(nodes.iter().min().map(String::as_str))
                .map(str::to_owned)
        };
        let Some(node) = node else { continue };
        let path = storage_dir.join(&name);
        actions.push(Action::Provision {
            volume: Box::new(new_volume(claim, class, &node, &path)),
            claim: claim.clone(),
            node,
            path,
        });
    }
    for volume in volumes {
        let spec = volume.spec.as_ref();
        let ours =
            annotation(&volume.metadata.annotations, ANN_PROVISIONED_BY) == Some(PROVISIONER);
        let released = volume.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Released");
        let delete =
            spec.and_then(|s| s.persistent_volume_reclaim_policy.as_deref()) == Some("Delete");
        if ours && released && delete && volume.metadata.deletion_timestamp.is_none() {
            actions.push(Action::Delete {
                volume: volume.clone(),
                node: volume_node(volume),
                path: volume_path(volume),
            });
        }
    }
    actions
}

/// The volume for `claim` on `node`: the claimed size and access modes, the class's reclaim
/// policy, a `hostPath` directory (created on mount if missing), pinned to the node and
/// pre-bound to the claim, for the PV controller to finish binding.
fn new_volume(
    claim: &PersistentVolumeClaim,
    class: &StorageClass,
    node: &str,
    path: &Path,
) -> PersistentVolume {
    let spec = claim.spec.clone().unwrap_or_default();
    let capacity = spec
        .resources
        .as_ref()
        .and_then(|r| r.requests.as_ref())
        .and_then(|r| r.get("storage"))
        .map(|q| BTreeMap::from([("storage".to_owned(), q.clone())]));
    PersistentVolume {
        metadata: ObjectMeta {
            name: Some(volume_name(claim)),
            annotations: Some(BTreeMap::from([
                (ANN_PROVISIONED_BY.to_owned(), PROVISIONER.to_owned()),
                (
                    super::ANN_SELECTED_NODE_OF_VOLUME.to_owned(),
                    node.to_owned(),
                ),
            ])),
            ..Default::default()
        },
        spec: Some(PersistentVolumeSpec {
            capacity,
            access_modes: spec.access_modes.clone(),
            persistent_volume_reclaim_policy: Some(
                class
                    .reclaim_policy
                    .clone()
                    .unwrap_or_else(|| "Delete".into()),
            ),
            storage_class_name: class.metadata.name.clone(),
            volume_mode: Some(spec.volume_mode.unwrap_or_else(|| "Filesystem".into())),
            mount_options: class.mount_options.clone(),
            claim_ref: Some(ObjectReference {
                api_version: Some("v1".into()),
                kind: Some("PersistentVolumeClaim".into()),
                namespace: claim.metadata.namespace.clone(),
                name: claim.metadata.name.clone(),
                uid: claim.metadata.uid.clone(),
                ..Default::default()
            }),
            host_path: Some(HostPathVolumeSource {
                path: path.to_string_lossy().into_owned(),
                type_: Some("DirectoryOrCreate".into()),
            }),
            node_affinity: Some(VolumeNodeAffinity {
                required: Some(NodeSelector {
                    node_selector_terms: vec![NodeSelectorTerm {
                        match_expressions: Some(vec![NodeSelectorRequirement {
                            key: HOSTNAME_LABEL.into(),
                            operator: "In".into(),
                            values: Some(vec![node.to_owned()]),
                        }]),
                        match_fields: None,
                    }],
                }),
            }),
            ..Default::default()
        }),
        status: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn class(mode: &str) -> Arc<StorageClass> {
        Arc::new(
            serde_json::from_value(json!({"metadata": {"name": "local-path"},
                "provisioner": PROVISIONER, "reclaimPolicy": "Delete", "volumeBindingMode": mode}))
            .unwrap(),
        )
    }
    fn claim(annotations: serde_json::Value) -> Arc<PersistentVolumeClaim> {
        Arc::new(
            serde_json::from_value(json!({
                "metadata": {"name": "data", "namespace": "ns", "uid": "u1", "annotations": annotations},
                "spec": {"storageClassName": "local-path", "accessModes": ["ReadWriteOnce"],
                         "resources": {"requests": {"storage": "2Gi"}}},
            }))
            .unwrap(),
        )
    }
    const DIR: &str = "/var/lib/skiff/storage";

    #[test]
    fn provisions_on_the_selected_node_once_the_claim_is_handed_over() {
        let wffc = [class("WaitForFirstConsumer")];
        let nodes = ["n1".to_owned(), "n2".to_owned()];
        let run = |c: Arc<PersistentVolumeClaim>, volumes: &[Arc<PersistentVolume>]| {
            plan(&[c], volumes, &wffc, &nodes, Some("n1"), Path::new(DIR))
        };
        // Not handed over by the PV controller yet, or no node selected: nothing.
        assert!(run(claim(json!({ANN_SELECTED_NODE: "n2"})), &[]).is_empty());
        assert!(run(claim(json!({ANN_STORAGE_PROVISIONER: PROVISIONER})), &[]).is_empty());
        let ready = claim(json!({ANN_STORAGE_PROVISIONER: PROVISIONER, ANN_SELECTED_NODE: "n2"}));
        let actions = run(ready.clone(), &[]);
        let [Action::Provision {
            node, path, volume, ..
        }] = &actions[..]
        else {
            panic!("{actions:?}")
        };
        assert_eq!(node, "n2");
        assert_eq!(path, &Path::new(DIR).join("pvc-u1"));
        assert_eq!(volume.metadata.name.as_deref(), Some("pvc-u1"));
        assert_eq!(volume_node(volume).as_deref(), Some("n2"));
        assert_eq!(volume_path(volume), Some(path.clone()));
        let spec = volume.spec.as_ref().unwrap();
        assert_eq!(spec.capacity.as_ref().unwrap()["storage"].0, "2Gi");
        assert_eq!(
            spec.persistent_volume_reclaim_policy.as_deref(),
            Some("Delete")
        );
        assert_eq!(spec.claim_ref.as_ref().unwrap().uid.as_deref(), Some("u1"));
        // Already provisioned: not again.
        assert!(run(ready, &[Arc::new((**volume).clone())]).is_empty());
    }

    #[test]
    fn immediate_claims_go_to_the_local_node() {
        let c = claim(json!({ANN_STORAGE_PROVISIONER: PROVISIONER}));
        let nodes = ["a".to_owned(), "b".to_owned()];
        let actions = plan(
            &[c],
            &[],
            &[class("Immediate")],
            &nodes,
            Some("b"),
            Path::new(DIR),
        );
        assert!(matches!(&actions[..], [Action::Provision { node, .. }] if node == "b"));
    }

    #[test]
    fn deletes_only_its_own_released_volumes_with_the_delete_policy() {
        let volume = |provisioner: &str, phase: &str, policy: &str| {
            Arc::new(
                serde_json::from_value::<PersistentVolume>(json!({
                    "metadata": {"name": "v", "annotations": {ANN_PROVISIONED_BY: provisioner}},
                    "spec": {"persistentVolumeReclaimPolicy": policy,
                             "hostPath": {"path": format!("{DIR}/v")}},
                    "status": {"phase": phase}}))
                .unwrap(),
            )
        };
        let volumes = [
            volume(PROVISIONER, "Released", "Delete"),
            volume(PROVISIONER, "Bound", "Delete"),
            volume(PROVISIONER, "Released", "Retain"),
            volume("other.io/x", "Released", "Delete"),
        ];
        let actions = plan(&[], &volumes, &[], &[], None, Path::new(DIR));
        assert_eq!(actions.len(), 1);
        assert!(
            matches!(&actions[0], Action::Delete { path: Some(p), .. } if p == &Path::new(DIR).join("v"))
        );
    }
}
