//! What the Node authorizer decides by: which objects the pods bound to each node reference
//! (kube-apiserver's node graph, pod -> Secret, ConfigMap, claim, ServiceAccount, ... ->
//! node, flattened to node -> object edges).
//!
//! The graph is fed by its own list + watch of pods and PersistentVolumeClaims on the store
//! and keeps only what decisions need: per pod its node and the keys it references, per
//! claim the volume it is bound to. Whole pods are never held, so the API server's memory
//! does not grow with the pods' specs.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use futures::StreamExt;
use serde_json::Value;
use skiff_store::EventKind;

use crate::kinds::{array_at, str_at, REGISTRY};
use crate::registry::ResourceDef;
use crate::storage::Storage;

/// The kinds of objects a pod references that a node may read through it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Referenced {
    /// A ConfigMap (volumes, projected sources, `env`, `envFrom`).
    ConfigMap,
    /// A PersistentVolumeClaim (`persistentVolumeClaim` and generic `ephemeral` volumes).
    Claim,
    /// A ResourceClaim (`spec.resourceClaims`, and the names the status reports).
    ResourceClaim,
    /// A Secret (volumes, projected sources, `env`, `envFrom`, `imagePullSecrets`, volume
    /// plugins' `secretRef`s).
    Secret,
    /// The pod's ServiceAccount (`spec.serviceAccountName`).
    ServiceAccount,
}

/// An edge from a node to an object: (node, kind, namespace, name).
type Edge = (Box<str>, Referenced, Box<str>, Box<str>);

/// A claim bound to a volume: (namespace, claim, volume).
type BoundClaim = (Box<str>, Box<str>, Box<str>);

/// A bound pod, as the graph keeps it.
#[derive(Debug)]
struct PodEntry {
    node: Box<str>,
    namespace: Box<str>,
    references: Vec<(Referenced, Box<str>)>,
}

#[derive(Debug, Default)]
struct State {
    /// Bound pods by store key.
    pods: HashMap<String, PodEntry>,
    /// How many bound pods give each edge.
    edges: BTreeMap<Edge, u32>,
    /// Claims bound to a volume: store key -> (namespace, claim, volume).
    claims: HashMap<String, BoundClaim>,
}

impl State {
    fn add_pod(&mut self, key: &str, entry: PodEntry) {
        for (kind, name) in &entry.references {
            let edge = (
                entry.node.clone(),
                *kind,
                entry.namespace.clone(),
                name.clone(),
            );
            *self.edges.entry(edge).or_default() += 1;
        }
        self.pods.insert(key.to_owned(), entry);
    }

    fn remove_pod(&mut self, key: &str) {
        let Some(entry) = self.pods.remove(key) else {
            return;
        };
        for (kind, name) in entry.references {
            let edge = (entry.node.clone(), kind, entry.namespace.clone(), name);
            if let Some(count) = self.edges.get_mut(&edge) {
                *count -= 1;
                if *count == 0 {
                    self.edges.remove(&edge);
                }
            }
        }
    }
}

/// The node -> object relation, shared by the Node authorizer and the watches feeding it.
#[derive(Debug, Default)]
pub struct NodeGraph {
    state: RwLock<State>,
}

impl NodeGraph {
    /// An empty graph (see [`NodeGraph::start`] for one that follows the store).
    pub fn new() -> NodeGraph {
        NodeGraph::default()
    }

    /// A graph that lists pods and claims once before returning, then follows their
    /// watches in background tasks until the runtime ends.
    pub async fn start(storage: Storage) -> Arc<NodeGraph> {
        let graph = Arc::new(NodeGraph::new());
        for (kind, feed) in [("Pod", Feed::Pods), ("PersistentVolumeClaim", Feed::Claims)] {
            let Some(def) = REGISTRY.by_kind("", "v1", kind) else {
                continue;
            };
            let revision = graph.relist(&storage, def, feed).await;
            tokio::spawn(graph.clone().follow(storage.clone(), def, feed, revision));
        }
        graph
    }

    /// Records a pod (replacing what was known of it); a pod bound to no node references
    /// nothing a node may read.
    pub fn set_pod(&self, key: &str, pod: &Value) {
        let entry = pod_entry(pod);
        let mut state = self.state.write().unwrap_or_else(|p| p.into_inner());
        state.remove_pod(key);
        if let Some(entry) = entry {
            state.add_pod(key, entry);
        }
    }

    /// Forgets a pod.
    pub fn remove_pod(&self, key: &str) {
        let mut state = self.state.write().unwrap_or_else(|p| p.into_inner());
        state.remove_pod(key);
    }

    /// Records a PersistentVolumeClaim's binding (`spec.volumeName`).
    pub fn set_claim(&self, key: &str, claim: &Value) {
        let volume = str_at(claim, "/spec/volumeName");
        let mut state = self.state.write().unwrap_or_else(|p| p.into_inner());
        if volume.is_empty() {
            state.claims.remove(key);
        } else {
            state.claims.insert(
                key.to_owned(),
                (
                    str_at(claim, "/metadata/namespace").into(),
                    str_at(claim, "/metadata/name").into(),
                    volume.into(),
                ),
            );
        }
    }

    /// Forgets a claim.
    pub fn remove_claim(&self, key: &str) {
        let mut state = self.state.write().unwrap_or_else(|p| p.into_inner());
        state.claims.remove(key);
    }

    /// Whether a pod bound to `node` references the object.
    pub fn references(&self, node: &str, kind: Referenced, namespace: &str, name: &str) -> bool {
        let state = self.state.read().unwrap_or_else(|p| p.into_inner());
        state
            .edges
            .contains_key(&(node.into(), kind, namespace.into(), name.into()))
    }

    /// The names of the objects of `kind` in `namespace` that pods bound to `node` reference.
    pub fn referenced(&self, node: &str, kind: Referenced, namespace: &str) -> Vec<String> {
        let state = self.state.read().unwrap_or_else(|p| p.into_inner());
        let from: Edge = (node.into(), kind, namespace.into(), "".into());
        state
            .edges
            .range(from..)
            .take_while(|((n, k, ns, _), _)| &**n == node && *k == kind && &**ns == namespace)
            .map(|((_, _, _, name), _)| name.to_string())
            .collect()
    }

    /// Whether a pod bound to `node` uses a claim bound to the PersistentVolume `volume`.
    pub fn uses_volume(&self, node: &str, volume: &str) -> bool {
        let bound: Vec<(Box<str>, Box<str>)> = {
            let state = self.state.read().unwrap_or_else(|p| p.into_inner());
            state
                .claims
                .values()
                .filter(|(_, _, v)| &**v == volume)
                .map(|(ns, claim, _)| (ns.clone(), claim.clone()))
                .collect()
        };
        bound
            .iter()
            .any(|(ns, claim)| self.references(node, Referenced::Claim, ns, claim))
    }

    /// How many bound pods the graph holds.
    pub fn pod_count(&self) -> usize {
        let state = self.state.read().unwrap_or_else(|p| p.into_inner());
        state.pods.len()
    }

    fn apply(&self, feed: Feed, key: &str, obj: Option<&Value>) {
        match (feed, obj) {
            (Feed::Pods, Some(pod)) => self.set_pod(key, pod),
            (Feed::Pods, None) => self.remove_pod(key),
            (Feed::Claims, Some(claim)) => self.set_claim(key, claim),
            (Feed::Claims, None) => self.remove_claim(key),
        }
    }

    /// Replaces what the graph knows of `def` with a fresh list; returns its revision (0
    /// when the store failed, so that the watch starts from now and a later relist repairs).
    async fn relist(&self, storage: &Storage, def: &ResourceDef, feed: Feed) -> i64 {
        let prefix = Storage::prefix(def, None);
        let mut fresh = Vec::new();
        let mut start: Option<String> = None;
        let mut revision = None;
        loop {
            let page = match storage
                .list(&prefix, revision, Some(500), start.as_deref())
                .await
            {
                Ok(page) => page,
                Err(err) => {
                    tracing::warn!(%prefix, "node graph list failed: {}", err.message);
                    return 0;
                }
            };
            revision = Some(page.revision);
            for (key, obj) in page.items {
                start = Some(key.clone());
                fresh.push((key, obj));
            }
            if !page.more {
                break;
            }
        }
        {
            let mut state = self.state.write().unwrap_or_else(|p| p.into_inner());
            match feed {
                Feed::Pods => {
                    state.pods.clear();
                    state.edges.clear();
                }
                Feed::Claims => state.claims.clear(),
            }
        }
        for (key, obj) in fresh {
            self.apply(feed, &key, Some(&obj));
        }
        revision.unwrap_or(0)
    }

    async fn follow(
        self: Arc<Self>,
        storage: Storage,
        def: &'static ResourceDef,
        feed: Feed,
        mut revision: i64,
    ) {
        let prefix = Storage::prefix(def, None);
        loop {
            let from = if revision > 0 { revision + 1 } else { 0 };
            let mut stream = match storage.watch(&prefix, from).await {
                Ok(stream) => stream,
                Err(_) => {
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    revision = self.relist(&storage, def, feed).await;
                    continue;
                }
            };
            while let Some(event) = stream.next().await {
                let Ok(event) = event else { break };
                match event.kind {
                    // A pod on no node has no edges: as if it were gone, without decoding it.
                    EventKind::Put
                        if matches!(feed, Feed::Pods) && !names_node(&event.kv.value) =>
                    {
                        self.apply(feed, &event.kv.key, None)
                    }
                    EventKind::Put => match Storage::decode(&event.kv, event.kv.mod_revision) {
                        Ok(obj) => self.apply(feed, &event.kv.key, Some(&obj)),
                        Err(err) => tracing::warn!("node graph: {}", err.message),
                    },
                    EventKind::Delete => self.apply(feed, &event.kv.key, None),
                }
            }
            // The watch ended (compacted or the store failed): relist, then watch again.
            tokio::time::sleep(Duration::from_millis(100)).await;
            revision = self.relist(&storage, def, feed).await;
        }
    }
}

/// Whether a stored pod has `spec.nodeName`, read without building the rest of it: most
/// pod writes the graph follows, every create among them, are of pods not yet scheduled,
/// and decoding each whole pod was 5% of the server's CPU in a burst of creates. True
/// when the bytes do not read as a pod, so that the full decode reports them.
fn names_node(stored: &[u8]) -> bool {
    #[derive(serde::Deserialize)]
    struct Pod {
        #[serde(default)]
        spec: Option<Spec>,
    }
    #[derive(serde::Deserialize)]
    struct Spec {
        #[serde(default, rename = "nodeName")]
        node_name: Option<String>,
    }
    match serde_json::from_slice::<Pod>(stored) {
        Ok(pod) => pod
            .spec
            .and_then(|spec| spec.node_name)
            .is_some_and(|node| !node.is_empty()),
        Err(_) => true,
    }
}

/// Which watch an event came from.
#[derive(Clone, Copy, Debug)]
enum Feed {
    Pods,
    Claims,
}

/// Where pods name Secrets in volume plugins (`secretRef`s), besides `secret` volumes.
const VOLUME_SECRET_REFS: &[&str] = &[
    "/azureFile/secretName",
    "/cephfs/secretRef/name",
    "/cinder/secretRef/name",
    "/csi/nodePublishSecretRef/name",
    "/flexVolume/secretRef/name",
    "/iscsi/secretRef/name",
    "/rbd/secretRef/name",
    "/scaleIO/secretRef/name",
    "/storageos/secretRef/name",
];

/// The node and references of a pod bound to a node (`spec.nodeName`), `None` otherwise.
fn pod_entry(pod: &Value) -> Option<PodEntry> {
    let node = str_at(pod, "/spec/nodeName");
    if node.is_empty() {
        return None;
    }
    let mut references: Vec<(Referenced, Box<str>)> = Vec::new();
    let mut add = |kind: Referenced, name: &str| {
        if !name.is_empty() {
            references.push((kind, name.into()));
        }
    };
    add(
        Referenced::ServiceAccount,
        str_at(pod, "/spec/serviceAccountName"),
    );
    for secret in array_at(pod, "/spec/imagePullSecrets") {
        add(Referenced::Secret, str_at(secret, "/name"));
    }
    for list in ["containers", "initContainers", "ephemeralContainers"] {
        for container in array_at(pod, &format!("/spec/{list}")) {
            for env in array_at(container, "/env") {
                add(
                    Referenced::Secret,
                    str_at(env, "/valueFrom/secretKeyRef/name"),
                );
                add(
                    Referenced::ConfigMap,
                    str_at(env, "/valueFrom/configMapKeyRef/name"),
                );
            }
            for from in array_at(container, "/envFrom") {
                add(Referenced::Secret, str_at(from, "/secretRef/name"));
                add(Referenced::ConfigMap, str_at(from, "/configMapRef/name"));
            }
        }
    }
    let pod_name = str_at(pod, "/metadata/name");
    for volume in array_at(pod, "/spec/volumes") {
        add(Referenced::Secret, str_at(volume, "/secret/secretName"));
        add(Referenced::ConfigMap, str_at(volume, "/configMap/name"));
        for pointer in VOLUME_SECRET_REFS {
            add(Referenced::Secret, str_at(volume, pointer));
        }
        for source in array_at(volume, "/projected/sources") {
            add(Referenced::Secret, str_at(source, "/secret/name"));
            add(Referenced::ConfigMap, str_at(source, "/configMap/name"));
        }
        add(
            Referenced::Claim,
            str_at(volume, "/persistentVolumeClaim/claimName"),
        );
        // A generic ephemeral volume's claim is named `<pod>-<volume>`.
        if volume.get("ephemeral").is_some() {
            add(
                Referenced::Claim,
                &format!("{pod_name}-{}", str_at(volume, "/name")),
            );
        }
    }
    for claim in array_at(pod, "/spec/resourceClaims") {
        add(
            Referenced::ResourceClaim,
            str_at(claim, "/resourceClaimName"),
        );
    }
    for claim in array_at(pod, "/status/resourceClaimStatuses") {
        add(
            Referenced::ResourceClaim,
            str_at(claim, "/resourceClaimName"),
        );
    }
    references.sort();
    references.dedup();
    Some(PodEntry {
        node: node.into(),
        namespace: str_at(pod, "/metadata/namespace").into(),
        references,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// The quick read agrees with the full decode on which pods can have edges.
    #[test]
    fn only_pods_on_a_node_need_decoding() {
        let bytes = |v: Value| serde_json::to_vec(&v).unwrap();
        assert!(names_node(&bytes(pod("a", "node-1"))));
        assert!(!names_node(&bytes(pod("a", ""))));
        assert!(!names_node(&bytes(
            json!({"metadata": {"name": "a"}, "spec": {"nodeName": null}})
        )));
        assert!(!names_node(&bytes(json!({"metadata": {"name": "a"}}))));
        assert!(names_node(b"not json"));
        assert!(pod_entry(&pod("a", "")).is_none());
    }

    fn pod(name: &str, node: &str) -> Value {
        json!({
            "metadata": {"name": name, "namespace": "default"},
            "spec": {
                "nodeName": node,
                "serviceAccountName": "robot",
                "imagePullSecrets": [{"name": "pull"}],
                "containers": [{"name": "c",
                    "env": [{"name": "A", "valueFrom": {"secretKeyRef": {"name": "env-secret", "key": "k"}}},
                            {"name": "B", "valueFrom": {"configMapKeyRef": {"name": "env-cm", "key": "k"}}}],
                    "envFrom": [{"configMapRef": {"name": "from-cm"}}]}],
                "volumes": [
                    {"name": "s", "secret": {"secretName": "vol-secret"}},
                    {"name": "p", "projected": {"sources": [{"configMap": {"name": "kube-root-ca.crt"}}]}},
                    {"name": "data", "persistentVolumeClaim": {"claimName": "data"}},
                    {"name": "scratch", "ephemeral": {"volumeClaimTemplate": {}}},
                    {"name": "csi", "csi": {"driver": "d", "nodePublishSecretRef": {"name": "csi-secret"}}}
                ]
            }
        })
    }

    #[test]
    fn edges_follow_the_pods_bound_to_each_node() {
        let graph = NodeGraph::new();
        graph.set_pod("pods/default/a", &pod("a", "n1"));
        let has = |node, kind, name| graph.references(node, kind, "default", name);
        for name in ["pull", "env-secret", "vol-secret", "csi-secret"] {
            assert!(has("n1", Referenced::Secret, name), "{name}");
            assert!(!has("n2", Referenced::Secret, name), "{name}");
        }
        for name in ["env-cm", "from-cm", "kube-root-ca.crt"] {
            assert!(has("n1", Referenced::ConfigMap, name), "{name}");
        }
        assert!(has("n1", Referenced::Claim, "data"));
        assert!(has("n1", Referenced::Claim, "a-scratch"));
        assert!(has("n1", Referenced::ServiceAccount, "robot"));
        assert!(!has("n1", Referenced::Secret, "other"));
        assert!(!graph.references("n1", Referenced::Secret, "kube-system", "pull"));

        // Two pods share a secret: it stays visible until the last one goes.
        graph.set_pod("pods/default/b", &pod("b", "n1"));
        graph.remove_pod("pods/default/a");
        assert!(has("n1", Referenced::Secret, "pull"));
        assert!(!has("n1", Referenced::Claim, "a-scratch"));
        // Moving (rebinding) a pod moves its edges.
        graph.set_pod("pods/default/b", &pod("b", "n2"));
        assert!(!has("n1", Referenced::Secret, "pull"));
        assert!(has("n2", Referenced::Secret, "pull"));
        graph.remove_pod("pods/default/b");
        assert!(!has("n2", Referenced::Secret, "pull"));
        assert_eq!(graph.pod_count(), 0);
    }

    #[test]
    fn unbound_pods_reference_nothing_and_volumes_go_through_claims() {
        let graph = NodeGraph::new();
        graph.set_pod("pods/default/a", &pod("a", ""));
        assert_eq!(graph.pod_count(), 0);
        graph.set_pod("pods/default/a", &pod("a", "n1"));
        assert!(!graph.uses_volume("n1", "pv-1"));
        graph.set_claim(
            "pvc/default/data",
            &json!({"metadata": {"name": "data", "namespace": "default"},
                "spec": {"volumeName": "pv-1"}}),
        );
        assert!(graph.uses_volume("n1", "pv-1"));
        assert!(!graph.uses_volume("n2", "pv-1"));
        assert_eq!(
            graph.referenced("n1", Referenced::ServiceAccount, "default"),
            vec!["robot".to_owned()]
        );
        graph.remove_claim("pvc/default/data");
        assert!(!graph.uses_volume("n1", "pv-1"));
    }
}
