//! A reflector: an in-memory mirror of some resources, kept current by list + watch on the
//! store, for the server's own readers (the RBAC authorizer, the built-in controllers).
//!
//! Like client-go's reflector it lists each resource, then watches from the list's
//! revision; when the watch breaks (compaction, store error) it relists. Readers never block
//! on the store: they see the last state delivered. [`Reflector::changes`] wakes
//! level-triggered controllers after every applied event.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use futures::StreamExt;
use serde_json::Value;
use skiff_store::EventKind;
use tokio::sync::watch;

use crate::registry::ResourceDef;
use crate::storage::Storage;

/// Objects by store key, shared with readers: a read hands out a reference, not a copy.
type Objects = BTreeMap<String, Arc<Value>>;

/// The mirror of a fixed set of resources.
pub struct Reflector {
    objects: RwLock<Objects>,
    changed: watch::Sender<u64>,
    defs: Vec<&'static ResourceDef>,
    /// The revision each mirrored prefix is known to be current at: its list's revision,
    /// then the revision of every event applied.
    applied: Mutex<HashMap<String, i64>>,
}

impl std::fmt::Debug for Reflector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reflector")
            .field("defs", &self.defs)
            .finish_non_exhaustive()
    }
}

impl Reflector {
    /// Mirrors `defs`: lists each once before returning, then keeps watching in background
    /// tasks until the runtime ends.
    pub async fn start(storage: Storage, defs: Vec<&'static ResourceDef>) -> Arc<Reflector> {
        let (changed, _) = watch::channel(0);
        let reflector = Arc::new(Reflector {
            objects: RwLock::new(Objects::new()),
            changed,
            defs: defs.clone(),
            applied: Mutex::new(HashMap::new()),
        });
        for def in defs {
            let prefix = Storage::prefix(def, None);
            let revision = reflector.relist(&storage, &prefix).await;
            tokio::spawn(reflector.clone().follow(storage.clone(), prefix, revision));
        }
        reflector
    }

    /// Replaces everything under `prefix` with a fresh list; returns its revision (0 when
    /// the store failed, so that the watch starts from now and a later relist repairs).
    async fn relist(&self, storage: &Storage, prefix: &str) -> i64 {
        let mut fresh = Objects::new();
        let mut start: Option<String> = None;
        let mut revision = None;
        loop {
            let page = match storage
                .list(prefix, revision, Some(500), start.as_deref())
                .await
            {
                Ok(page) => page,
                Err(err) => {
                    tracing::warn!(%prefix, "reflector list failed: {}", err.message);
                    return 0;
                }
            };
            revision = Some(page.revision);
            for (key, obj) in page.items {
                start = Some(key.clone());
                fresh.insert(key, Arc::new(obj));
            }
            if !page.more {
                break;
            }
        }
        {
            let mut objects = self.objects.write().unwrap_or_else(|p| p.into_inner());
            objects.retain(|k, _| !k.starts_with(prefix));
            objects.extend(fresh);
        }
        self.mark_applied(prefix, revision.unwrap_or(0));
        self.changed.send_modify(|n| *n += 1);
        revision.unwrap_or(0)
    }

    async fn follow(self: Arc<Self>, storage: Storage, prefix: String, mut revision: i64) {
        // Every watch starts right after the last list; events only ever follow it.
        loop {
            let from = if revision > 0 { revision + 1 } else { 0 };
            let mut stream = match storage.watch(&prefix, from).await {
                Ok(stream) => stream,
                Err(_) => {
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    revision = self.relist(&storage, &prefix).await;
                    continue;
                }
            };
            while let Some(event) = stream.next().await {
                let Ok(event) = event else { break };
                {
                    let mut objects = self.objects.write().unwrap_or_else(|p| p.into_inner());
                    match event.kind {
                        EventKind::Put => match Storage::decode(&event.kv, event.kv.mod_revision) {
                            Ok(obj) => {
                                objects.insert(event.kv.key.clone(), Arc::new(obj));
                            }
                            Err(err) => tracing::warn!("reflector: {}", err.message),
                        },
                        EventKind::Delete => {
                            objects.remove(&event.kv.key);
                        }
                    }
                }
                self.mark_applied(&prefix, event.revision());
                self.changed.send_modify(|n| *n += 1);
            }
            // The watch ended (compacted or the store failed): relist, then watch again.
            tokio::time::sleep(Duration::from_millis(100)).await;
            revision = self.relist(&storage, &prefix).await;
        }
    }

    fn mark_applied(&self, prefix: &str, revision: i64) {
        let mut applied = self.applied.lock().unwrap_or_else(|p| p.into_inner());
        let seen = applied.entry(prefix.to_owned()).or_default();
        *seen = (*seen).max(revision);
    }

    /// Whether `def` is mirrored.
    pub fn mirrors(&self, def: &ResourceDef) -> bool {
        self.defs
            .iter()
            .any(|d| d.storage_prefix == def.storage_prefix)
    }

    /// Waits (at most `timeout`) until the mirror of `def` has applied every write up to
    /// `revision`; false when it has not by then.
    ///
    /// A write to a mirrored resource waits for this before it is acknowledged, so the
    /// server's own readers (RBAC, admission) see it from the next request on: what a client
    /// was told is stored is what they decide by.
    pub async fn wait_for(&self, def: &ResourceDef, revision: i64, timeout: Duration) -> bool {
        let prefix = Storage::prefix(def, None);
        let mut changes = self.changed.subscribe();
        let current = |reflector: &Reflector| {
            let applied = reflector.applied.lock().unwrap_or_else(|p| p.into_inner());
            applied.get(&prefix).is_some_and(|seen| *seen >= revision)
        };
        let wait = async {
            while !current(self) {
                if changes.changed().await.is_err() {
                    return false;
                }
            }
            true
        };
        tokio::time::timeout(timeout, wait).await.unwrap_or(false)
    }

    /// Every object of a resource (all namespaces).
    pub fn list(&self, def: &ResourceDef) -> Vec<Arc<Value>> {
        self.list_in(def, None)
    }

    /// The objects of a resource in one namespace (or all, with `None`).
    pub fn list_in(&self, def: &ResourceDef, namespace: Option<&str>) -> Vec<Arc<Value>> {
        let prefix = Storage::prefix(def, namespace);
        let objects = self.objects.read().unwrap_or_else(|p| p.into_inner());
        objects
            .range(prefix.clone()..)
            .take_while(|(k, _)| k.starts_with(&prefix))
            .map(|(_, v)| served(def, v))
            .collect()
    }

    /// One object.
    pub fn get(&self, def: &ResourceDef, namespace: &str, name: &str) -> Option<Arc<Value>> {
        let objects = self.objects.read().unwrap_or_else(|p| p.into_inner());
        objects
            .get(&Storage::key(def, namespace, name))
            .map(|v| served(def, v))
    }

    /// A receiver that changes after every applied event (for level-triggered controllers).
    pub fn changes(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }
}

/// A mirrored (stored) object in the version of `def`: the stored object itself unless
/// `def` is served in another version than it is stored in.
fn served(def: &ResourceDef, stored: &Arc<Value>) -> Arc<Value> {
    if def.conversion.is_none() && def.custom.is_none() {
        return stored.clone();
    }
    let mut obj = Value::clone(stored);
    def.to_served(&mut obj);
    Arc::new(obj)
}
