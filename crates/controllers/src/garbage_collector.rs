//! The garbage collector (`pkg/controller/garbagecollector`), background propagation: it
//! watches every listable, deletable resource the server offers, keeps a graph of owners
//! and dependents by UID, and deletes objects all of whose owners are gone (removing only
//! the dangling references when some owner remains).
//!
//! An owner missing from the graph may just not have been listed yet, so absence is
//! confirmed with a live GET before anything is deleted, as `attemptToDeleteItem` does.
//!
//! Owners being deleted with the `orphan` finalizer get their dependents' references to
//! them removed, then the finalizer; with `foregroundDeletion`, their dependents are
//! deleted first and the finalizer goes once none is left. Both are level-triggered:
//! every event about the owner or one of its dependents re-runs the step.

use std::collections::{HashMap, HashSet};

use futures::StreamExt as _;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::{DeleteParams, Patch, PatchParams, Preconditions};
use kube::core::{ApiResource, DynamicObject};
use kube::discovery::{verbs, Discovery, Scope};
use kube::runtime::{watcher, WatchStreamExt as _};
use kube::{Api, Client};
use serde_json::json;
use tokio::sync::mpsc;

/// A failure to start.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// API discovery failed.
    #[error("discovering resources for the garbage collector: {0}")]
    Discovery(#[source] kube::Error),
}

/// A watched resource.
#[derive(Clone)]
struct Resource {
    api: ApiResource,
    namespaced: bool,
}

/// One object in the graph.
#[derive(Clone)]
struct Node {
    resource: usize,
    namespace: Option<String>,
    name: String,
    owners: Vec<OwnerReference>,
    /// The deletion finalizer the garbage collector must act on, if the object is being
    /// deleted with one.
    finalizing: Option<&'static str>,
}

/// The finalizer of orphan propagation.
const ORPHAN: &str = "orphan";
/// The finalizer of foreground propagation.
const FOREGROUND: &str = "foregroundDeletion";

enum Input {
    Event(usize, Box<watcher::Event<DynamicObject>>),
    Checked(String),
}

struct Collector {
    client: Client,
    resources: Vec<Resource>,
    nodes: HashMap<String, Node>,
    dependents: HashMap<String, HashSet<String>>,
    pending: HashSet<String>,
    dirty: HashSet<String>,
    tx: mpsc::UnboundedSender<Input>,
}

/// Runs the garbage collector until its watches end.
pub async fn run(client: Client) -> Result<(), Error> {
    let discovery = Discovery::new(client.clone())
        .run()
        .await
        .map_err(Error::Discovery)?;
    let mut resources = Vec::new();
    for group in discovery.groups() {
        for (api, caps) in group.recommended_resources() {
            let ops = [verbs::LIST, verbs::WATCH, verbs::DELETE];
            if ops.iter().all(|v| caps.supports_operation(v)) && !api.plural.contains('/') {
                resources.push(Resource {
                    namespaced: caps.scope == Scope::Namespaced,
                    api,
                });
            }
        }
    }
    let (tx, mut rx) = mpsc::unbounded_channel();
    for (i, r) in resources.iter().enumerate() {
        let api: Api<DynamicObject> = Api::all_with(client.clone(), &r.api);
        let tx = tx.clone();
        tokio::spawn(async move {
            let mut events = watcher(api, watcher::Config::default().any_semantic())
                .default_backoff()
                .boxed();
            while let Some(event) = events.next().await {
                match event {
                    Ok(e) => {
                        if tx.send(Input::Event(i, Box::new(e))).is_err() {
                            return;
                        }
                    }
                    Err(e) => tracing::debug!("garbage collector watch: {e}"),
                }
            }
        });
    }
    let mut gc = Collector {
        client,
        resources,
        nodes: HashMap::new(),
        dependents: HashMap::new(),
        pending: HashSet::new(),
        dirty: HashSet::new(),
        tx,
    };
    while let Some(input) = rx.recv().await {
        gc.handle(input);
    }
    Ok(())
}

impl Collector {
    fn handle(&mut self, input: Input) {
        match input {
            Input::Event(res, event) => match *event {
                watcher::Event::Apply(obj) | watcher::Event::InitApply(obj) => {
                    self.upsert(res, obj)
                }
                watcher::Event::Delete(obj) => {
                    if let Some(uid) = obj.metadata.uid.clone() {
                        // An owner waiting for its dependents may now be done.
                        let owners: Vec<String> = self
                            .nodes
                            .get(&uid)
                            .map(|n| n.owners.iter().map(|o| o.uid.clone()).collect())
                            .unwrap_or_default();
                        self.remove(&uid);
                        for owner in owners {
                            self.finalize(&owner);
                        }
                        let dependents: Vec<String> = self
                            .dependents
                            .get(&uid)
                            .map(|d| d.iter().cloned().collect())
                            .unwrap_or_default();
                        for dependent in dependents {
                            self.check(&dependent);
                        }
                    }
                }
                watcher::Event::Init | watcher::Event::InitDone => {}
            },
            Input::Checked(uid) => {
                self.pending.remove(&uid);
                if self.dirty.remove(&uid) {
                    self.check(&uid);
                }
            }
        }
    }

    fn upsert(&mut self, resource: usize, obj: DynamicObject) {
        let Some(uid) = obj.metadata.uid.clone() else {
            return;
        };
        // Owners it referenced before: one it dropped (a foreground owner's dependent with
        // another owner) may be done waiting.
        let previous: Vec<String> = self
            .nodes
            .get(&uid)
            .map(|n| n.owners.iter().map(|o| o.uid.clone()).collect())
            .unwrap_or_default();
        self.remove(&uid);
        let owners = obj.metadata.owner_references.clone().unwrap_or_default();
        for owner in &owners {
            self.dependents
                .entry(owner.uid.clone())
                .or_default()
                .insert(uid.clone());
        }
        let dangling = owners.iter().any(|o| !self.nodes.contains_key(&o.uid));
        let finalizers = obj.metadata.finalizers.clone().unwrap_or_default();
        let finalizing = if obj.metadata.deletion_timestamp.is_none() {
            None
        } else if finalizers.iter().any(|f| f == ORPHAN) {
            Some(ORPHAN)
        } else if finalizers.iter().any(|f| f == FOREGROUND) {
            Some(FOREGROUND)
        } else {
            None
        };
        let mut owner_uids: Vec<String> = owners.iter().map(|o| o.uid.clone()).collect();
        for p in previous {
            if !owner_uids.contains(&p) {
                owner_uids.push(p);
            }
        }
        self.nodes.insert(
            uid.clone(),
            Node {
                resource,
                namespace: obj.metadata.namespace.clone(),
                name: obj.metadata.name.clone().unwrap_or_default(),
                owners,
                finalizing,
            },
        );
        if dangling && obj.metadata.deletion_timestamp.is_none() {
            self.check(&uid);
        }
        if finalizing.is_some() {
            self.finalize(&uid);
        }
        // A dependent that changed (e.g. lost its reference) may release its owner.
        for owner in owner_uids {
            if self
                .nodes
                .get(&owner)
                .is_some_and(|n| n.finalizing.is_some())
            {
                self.finalize(&owner);
            }
        }
    }

    /// Runs one step of orphan or foreground propagation for an owner being deleted.
    fn finalize(&mut self, uid: &str) {
        let Some(owner) = self.nodes.get(uid).cloned() else {
            return;
        };
        let Some(finalizer) = owner.finalizing else {
            return;
        };
        // A dependent with another owner that stays ("solid": known and not itself
        // waiting for its dependents) only loses its reference, even in the foreground.
        let dependents: Vec<(Node, bool)> = self
            .dependents
            .get(uid)
            .into_iter()
            .flatten()
            .filter_map(|d| self.nodes.get(d).cloned())
            .map(|d| {
                let solid = d.owners.iter().any(|o| {
                    o.uid != uid
                        && self
                            .nodes
                            .get(&o.uid)
                            .is_some_and(|n| n.finalizing != Some(FOREGROUND))
                });
                (d, solid)
            })
            .collect();
        let client = self.client.clone();
        let resources = self.resources.clone();
        let uid = uid.to_owned();
        tokio::spawn(async move {
            if let Err(e) =
                propagate(&client, &resources, &uid, &owner, finalizer, &dependents).await
            {
                tracing::debug!("{finalizer} deletion of {}: {e}", owner.name);
            }
        });
    }

    fn remove(&mut self, uid: &str) {
        if let Some(node) = self.nodes.remove(uid) {
            for owner in &node.owners {
                if let Some(set) = self.dependents.get_mut(&owner.uid) {
                    set.remove(uid);
                    if set.is_empty() {
                        self.dependents.remove(&owner.uid);
                    }
                }
            }
        }
    }

    /// Starts an attempt to delete `uid` (or note a re-check when one is running).
    fn check(&mut self, uid: &str) {
        let Some(node) = self.nodes.get(uid).cloned() else {
            return;
        };
        if node.owners.is_empty() {
            return;
        }
        if !self.pending.insert(uid.to_owned()) {
            self.dirty.insert(uid.to_owned());
            return;
        }
        let known: Vec<bool> = node
            .owners
            .iter()
            .map(|o| self.nodes.contains_key(&o.uid))
            .collect();
        let client = self.client.clone();
        let resources = self.resources.clone();
        let tx = self.tx.clone();
        let uid = uid.to_owned();
        tokio::spawn(async move {
            if let Err(e) = attempt_to_delete(&client, &resources, &uid, &node, &known).await {
                tracing::debug!("garbage collecting {}: {e}", node.name);
            }
            let _ = tx.send(Input::Checked(uid));
        });
    }
}

fn api_for(client: &Client, resources: &[Resource], node: &Node) -> Api<DynamicObject> {
    let r = &resources[node.resource];
    match &node.namespace {
        Some(ns) => Api::namespaced_with(client.clone(), ns, &r.api),
        None => Api::all_with(client.clone(), &r.api),
    }
}

/// Orphan: drop the references to the owner, then the finalizer. Foreground: delete the
/// dependents (those with a solid other owner only lose the reference), and drop the
/// finalizer once there are none.
async fn propagate(
    client: &Client,
    resources: &[Resource],
    owner_uid: &str,
    owner: &Node,
    finalizer: &str,
    dependents: &[(Node, bool)],
) -> Result<(), kube::Error> {
    for (dependent, solid) in dependents {
        let api = api_for(client, resources, dependent);
        if finalizer == ORPHAN || *solid {
            let remaining: Vec<&OwnerReference> = dependent
                .owners
                .iter()
                .filter(|o| o.uid != owner_uid)
                .collect();
            let patch = json!({"metadata": {"ownerReferences": remaining}});
            match api
                .patch(
                    &dependent.name,
                    &PatchParams::default(),
                    &Patch::Merge(&patch),
                )
                .await
            {
                Ok(_) => {}
                Err(kube::Error::Api(s)) if s.code == 404 => {}
                Err(e) => return Err(e),
            }
        } else {
            match api
                .delete(&dependent.name, &DeleteParams::background())
                .await
            {
                Ok(_) => {}
                Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => {}
                Err(e) => return Err(e),
            }
        }
    }
    if finalizer == FOREGROUND && !dependents.is_empty() {
        // Done when the last dependent's deletion event arrives.
        return Ok(());
    }
    let api = api_for(client, resources, owner);
    let Some(current) = api.get_opt(&owner.name).await? else {
        return Ok(());
    };
    if current.metadata.uid.as_deref() != Some(owner_uid) {
        return Ok(());
    }
    let finalizers: Vec<String> = current
        .metadata
        .finalizers
        .unwrap_or_default()
        .into_iter()
        .filter(|f| f != finalizer)
        .collect();
    let patch = json!({"metadata": {
        "finalizers": finalizers,
        "resourceVersion": current.metadata.resource_version,
    }});
    match api
        .patch(&owner.name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
    {
        Ok(_) => Ok(()),
        // Changed meanwhile (409) or gone (404): the next event re-runs this step.
        Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => Ok(()),
        Err(e) => Err(e),
    }
}

/// Whether `owner` (referenced from an object in `namespace`) still exists with its UID.
async fn owner_exists(
    client: &Client,
    resources: &[Resource],
    namespace: Option<&str>,
    owner: &OwnerReference,
) -> Result<bool, kube::Error> {
    let (group, version) = match owner.api_version.split_once('/') {
        Some((g, v)) => (g, v),
        None => ("", owner.api_version.as_str()),
    };
    let Some(r) = resources
        .iter()
        .find(|r| r.api.group == group && r.api.version == version && r.api.kind == owner.kind)
    else {
        // An unknown kind: never assume it is gone.
        return Ok(true);
    };
    let api: Api<DynamicObject> = match (r.namespaced, namespace) {
        (true, Some(ns)) => Api::namespaced_with(client.clone(), ns, &r.api),
        _ => Api::all_with(client.clone(), &r.api),
    };
    Ok(api
        .get_opt(&owner.name)
        .await?
        .is_some_and(|o| o.metadata.uid.as_deref() == Some(owner.uid.as_str())))
}

async fn attempt_to_delete(
    client: &Client,
    resources: &[Resource],
    uid: &str,
    node: &Node,
    known: &[bool],
) -> Result<(), kube::Error> {
    let mut remaining = Vec::new();
    for (owner, known) in node.owners.iter().zip(known) {
        if *known || owner_exists(client, resources, node.namespace.as_deref(), owner).await? {
            remaining.push(owner.clone());
        }
    }
    if remaining.len() == node.owners.len() {
        return Ok(());
    }
    let r = &resources[node.resource];
    let api: Api<DynamicObject> = match &node.namespace {
        Some(ns) => Api::namespaced_with(client.clone(), ns, &r.api),
        None => Api::all_with(client.clone(), &r.api),
    };
    if remaining.is_empty() {
        let dp = DeleteParams {
            preconditions: Some(Preconditions {
                uid: Some(uid.to_owned()),
                resource_version: None,
            }),
            ..DeleteParams::background()
        };
        match api.delete(&node.name, &dp).await {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => Ok(()),
            Err(e) => Err(e),
        }
    } else {
        let patch = json!({"metadata": {"ownerReferences": remaining, "uid": uid}});
        api.patch(&node.name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .map(drop)
    }
}
