//! Static pods: the kubelet's file source (`--pod-manifest-path`, kubelet's
//! `staticPodPath`). Every `*.yaml`, `*.yml` or `*.json` file of the directory holds one
//! Pod; the kubelet publishes each as a *mirror pod* named `<name>-<node>`, bound to this
//! node, owned by the Node and marked with the `kubernetes.io/config.*` annotations, and
//! runs it like any pod bound here. Level-triggered, polled: a new or changed file (a new
//! content hash) gets its mirror (re)created, a removed file has its mirror deleted, and a
//! mirror deleted through the API comes back.
//!
//! Unlike Kubernetes' kubelet, the pod runs through its mirror: without the API server
//! nothing starts (skiff's control plane is built in, so no static pod is needed to bring
//! it up).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use k8s_openapi::api::core::v1::{Node, Pod, Toleration};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::{DeleteParams, ListParams, PostParams};
use kube::{Api, Client};

/// Which source a pod came from (`file` for static pods).
pub const CONFIG_SOURCE: &str = "kubernetes.io/config.source";
/// The hash of the pod as the source gave it.
pub const CONFIG_HASH: &str = "kubernetes.io/config.hash";
/// Marks a mirror pod; its value is the static pod's hash.
pub const CONFIG_MIRROR: &str = "kubernetes.io/config.mirror";
/// When the kubelet first saw the pod.
pub const CONFIG_SEEN: &str = "kubernetes.io/config.seen";

/// How often the directory is read (Kubernetes' `fileCheckFrequency` is 20 s).
pub const POLL_INTERVAL: Duration = Duration::from_secs(5);

/// One manifest of the directory.
#[derive(Debug, Clone)]
pub struct Manifest {
    /// The file.
    pub path: PathBuf,
    /// The pod it describes.
    pub pod: Pod,
    /// A hash of the file's pod and the node, which names this version of it.
    pub hash: String,
}

/// Parses one manifest (YAML or JSON): a single `v1` Pod with a name.
pub fn parse(text: &str) -> Result<Pod, String> {
    let value: serde_json::Value =
        serde_norway::from_str(text).map_err(|e| format!("invalid YAML or JSON: {e}"))?;
    match (
        value.get("apiVersion").and_then(|v| v.as_str()),
        value.get("kind").and_then(|v| v.as_str()),
    ) {
        (Some("v1"), Some("Pod")) => {}
        (version, kind) => {
            return Err(format!(
                "expected a v1 Pod, found kind {:?} of apiVersion {:?}",
                kind.unwrap_or(""),
                version.unwrap_or("")
            ))
        }
    }
    let pod: Pod = serde_json::from_value(value).map_err(|e| format!("invalid Pod: {e}"))?;
    if pod.metadata.name.as_deref().unwrap_or("").is_empty() {
        return Err("the pod has no metadata.name".into());
    }
    Ok(pod)
}

/// 64-bit FNV-1a, as hex: stable across builds and restarts.
fn fnv(bytes: &[u8]) -> String {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        hash ^= u64::from(*b);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{hash:016x}")
}

/// The manifests of `dir` (sorted by file name; hidden files skipped, as the kubelet
/// does), each parsed or with the reason it cannot be.
pub fn read_dir(dir: &Path, node: &str) -> Vec<(PathBuf, Result<Manifest, String>)> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut paths: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
            !name.starts_with('.')
                && p.is_file()
                && matches!(
                    p.extension().and_then(|e| e.to_str()),
                    Some("yaml" | "yml" | "json")
                )
        })
        .collect();
    paths.sort();
    paths
        .into_iter()
        .map(|path| {
            let manifest = std::fs::read_to_string(&path)
                .map_err(|e| e.to_string())
                .and_then(|text| parse(&text))
                .map(|pod| {
                    let canonical = serde_json::to_vec(&pod).unwrap_or_default();
                    let mut keyed = canonical;
                    keyed.extend_from_slice(node.as_bytes());
                    Manifest {
                        path: path.clone(),
                        pod,
                        hash: fnv(&keyed),
                    }
                });
            (path, manifest)
        })
        .collect()
}

/// The mirror pod of a static pod on `node` (whose uid is `node_uid`).
pub fn mirror(manifest: &Manifest, node: &str, node_uid: &str, seen: &str) -> Pod {
    let mut pod = manifest.pod.clone();
    let meta = &mut pod.metadata;
    meta.name = Some(format!("{}-{node}", meta.name.as_deref().unwrap_or("")));
    if meta.namespace.as_deref().unwrap_or("").is_empty() {
        meta.namespace = Some("default".into());
    }
    for field in [
        &mut meta.uid,
        &mut meta.resource_version,
        &mut meta.generate_name,
    ] {
        *field = None;
    }
    let annotations = meta.annotations.get_or_insert_with(BTreeMap::new);
    annotations.insert(CONFIG_SOURCE.into(), "file".into());
    annotations.insert(CONFIG_HASH.into(), manifest.hash.clone());
    annotations.insert(CONFIG_MIRROR.into(), manifest.hash.clone());
    annotations.insert(CONFIG_SEEN.into(), seen.into());
    meta.owner_references = Some(vec![OwnerReference {
        api_version: "v1".into(),
        kind: "Node".into(),
        name: node.into(),
        uid: node_uid.into(),
        controller: Some(true),
        block_owner_deletion: None,
    }]);
    let spec = pod.spec.get_or_insert_with(Default::default);
    spec.node_name = Some(node.into());
    // As the kubelet does for static pods: they stay on their node whatever its taints.
    let tolerations = spec.tolerations.get_or_insert_with(Vec::new);
    let all_no_execute = Toleration {
        operator: Some("Exists".into()),
        effect: Some("NoExecute".into()),
        ..Default::default()
    };
    if !tolerations.contains(&all_no_execute) {
        tolerations.push(all_no_execute);
    }
    pod.status = None;
    pod
}

/// The mirror pod's hash, if `pod` is one.
pub fn mirror_hash(pod: &Pod) -> Option<&str> {
    pod.metadata
        .annotations
        .as_ref()?
        .get(CONFIG_MIRROR)
        .map(String::as_str)
}

/// What to do to bring the API's mirror pods in line with the manifests.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Plan {
    /// Mirrors to create: indexes into the manifests.
    pub create: Vec<usize>,
    /// Mirrors to delete, as (namespace, name): gone from the directory, or outdated (their
    /// new version is created once they are gone).
    pub delete: Vec<(String, String)>,
}

/// Compares the wanted mirrors (`manifests` on `node`) with the existing ones.
pub fn plan(manifests: &[Manifest], existing: &[Pod], node: &str) -> Plan {
    let key = |ns: Option<&str>, name: &str| {
        (
            ns.filter(|n| !n.is_empty()).unwrap_or("default").to_owned(),
            name.to_owned(),
        )
    };
    let wanted: BTreeMap<(String, String), (usize, &str)> = manifests
        .iter()
        .enumerate()
        .map(|(i, m)| {
            let name = format!("{}-{node}", m.pod.metadata.name.as_deref().unwrap_or(""));
            (
                key(m.pod.metadata.namespace.as_deref(), &name),
                (i, m.hash.as_str()),
            )
        })
        .collect();
    let mut plan = Plan::default();
    let mut present = BTreeMap::new();
    for pod in existing {
        let Some(hash) = mirror_hash(pod) else {
            continue;
        };
        let k = key(
            pod.metadata.namespace.as_deref(),
            pod.metadata.name.as_deref().unwrap_or(""),
        );
        let current = wanted.get(&k).is_some_and(|(_, h)| *h == hash);
        if !current && pod.metadata.deletion_timestamp.is_none() {
            plan.delete.push(k.clone());
        }
        present.insert(k, ());
    }
    for (k, (i, _)) in &wanted {
        if !present.contains_key(k) {
            plan.create.push(*i);
        }
    }
    plan
}

/// Keeps the mirror pods of `dir`'s manifests in the API until the runtime stops.
pub async fn run(client: Client, dir: PathBuf, node: String) {
    let nodes: Api<Node> = Api::all(client.clone());
    let pods: Api<Pod> = Api::all(client.clone());
    let mut reported: BTreeMap<PathBuf, String> = BTreeMap::new();
    loop {
        let node_uid = match nodes.get_opt(&node).await {
            Ok(Some(n)) => n.metadata.uid.unwrap_or_default(),
            _ => String::new(),
        };
        if !node_uid.is_empty() {
            let mut manifests = Vec::new();
            for (path, manifest) in read_dir(&dir, &node) {
                match manifest {
                    Ok(m) => {
                        reported.remove(&path);
                        manifests.push(m);
                    }
                    Err(why) => {
                        // Said once per file and reason, not every poll.
                        if reported.get(&path) != Some(&why) {
                            tracing::warn!("static pod {}: {why}", path.display());
                            reported.insert(path, why);
                        }
                    }
                }
            }
            let listed = pods
                .list(&ListParams::default().fields(&format!("spec.nodeName={node}")))
                .await;
            match listed {
                Ok(list) => {
                    let plan = plan(&manifests, &list.items, &node);
                    apply(&client, &plan, &manifests, &node, &node_uid).await;
                }
                Err(e) => tracing::debug!("static pods: listing the node's pods: {e}"),
            }
        }
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}

async fn apply(client: &Client, plan: &Plan, manifests: &[Manifest], node: &str, node_uid: &str) {
    for (namespace, name) in &plan.delete {
        let api: Api<Pod> = Api::namespaced(client.clone(), namespace);
        if let Err(e) = api.delete(name, &DeleteParams::default()).await {
            tracing::warn!("static pods: deleting mirror pod {namespace}/{name}: {e}");
        }
    }
    let seen = jiff::Timestamp::now().to_string();
    for i in &plan.create {
        let mirror = mirror(&manifests[*i], node, node_uid, &seen);
        let namespace = mirror.metadata.namespace.clone().unwrap_or_default();
        let api: Api<Pod> = Api::namespaced(client.clone(), &namespace);
        match api.create(&PostParams::default(), &mirror).await {
            Ok(_) => tracing::info!(
                "static pod {}: mirror pod {namespace}/{} created",
                manifests[*i].path.display(),
                mirror.metadata.name.as_deref().unwrap_or("")
            ),
            // The outdated version is still terminating: the next poll tries again.
            Err(kube::Error::Api(e)) if e.code == 409 => {}
            Err(e) => tracing::warn!(
                "static pod {}: creating its mirror pod: {e}",
                manifests[*i].path.display()
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const WEB: &str = "apiVersion: v1\nkind: Pod\nmetadata:\n  name: web\nspec:\n  containers:\n  - name: c\n    image: busybox\n";

    fn manifest(text: &str, node: &str) -> Manifest {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("web.yaml"), text).unwrap();
        let (_, m) = read_dir(dir.path(), node).pop().unwrap();
        m.unwrap()
    }

    #[test]
    fn manifests_parse_and_bad_ones_say_why() {
        assert_eq!(parse(WEB).unwrap().metadata.name.as_deref(), Some("web"));
        assert!(parse(
            "{\"apiVersion\": \"v1\", \"kind\": \"Pod\", \"metadata\": {\"name\": \"j\"}}"
        )
        .is_ok());
        assert!(parse("kind: Deployment\napiVersion: apps/v1\n")
            .unwrap_err()
            .contains("expected a v1 Pod"));
        assert!(parse("apiVersion: v1\nkind: Pod\n")
            .unwrap_err()
            .contains("no metadata.name"));
        assert!(parse(": :\n - [").unwrap_err().starts_with("invalid YAML"));
    }

    #[test]
    fn the_mirror_is_bound_owned_and_annotated() {
        let m = manifest(WEB, "node-a");
        let pod = mirror(&m, "node-a", "uid-1", "2026-01-01T00:00:00Z");
        assert_eq!(pod.metadata.name.as_deref(), Some("web-node-a"));
        assert_eq!(pod.metadata.namespace.as_deref(), Some("default"));
        let annotations = pod.metadata.annotations.as_ref().unwrap();
        assert_eq!(annotations[CONFIG_SOURCE], "file");
        assert_eq!(annotations[CONFIG_MIRROR], m.hash);
        let owner = &pod.metadata.owner_references.as_ref().unwrap()[0];
        assert_eq!((owner.kind.as_str(), owner.uid.as_str()), ("Node", "uid-1"));
        let spec = pod.spec.as_ref().unwrap();
        assert_eq!(spec.node_name.as_deref(), Some("node-a"));
        assert_eq!(spec.tolerations.as_ref().unwrap().len(), 1);
        // The hash names the content and the node.
        assert_ne!(manifest(WEB, "node-b").hash, m.hash);
        assert_eq!(manifest(WEB, "node-a").hash, m.hash);
    }

    #[test]
    fn mirrors_follow_the_directory() {
        let m = manifest(WEB, "n");
        let changed = manifest(&WEB.replace("busybox", "busybox:1"), "n");
        let current = mirror(&m, "n", "u", "t");
        // Missing: created.
        assert_eq!(plan(std::slice::from_ref(&m), &[], "n").create, vec![0]);
        // Present and current: nothing.
        assert_eq!(
            plan(
                std::slice::from_ref(&m),
                std::slice::from_ref(&current),
                "n"
            ),
            Plan::default()
        );
        // Changed file: the old mirror goes first.
        let p = plan(
            std::slice::from_ref(&changed),
            std::slice::from_ref(&current),
            "n",
        );
        assert_eq!(p.delete, vec![("default".into(), "web-n".into())]);
        assert!(p.create.is_empty());
        // File removed: deleted; pods that are not mirrors are never touched.
        let mut ordinary = current.clone();
        ordinary.metadata.annotations = None;
        let p = plan(&[], &[current, ordinary], "n");
        assert_eq!(p.delete, vec![("default".into(), "web-n".into())]);
    }
}
