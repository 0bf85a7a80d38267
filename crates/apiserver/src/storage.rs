//! Objects in the store, under kube-apiserver's key layout
//! (`/registry/<resource>/<namespace>/<name>`, `/registry/<resource>/<name>` for
//! cluster-scoped ones). Objects are stored as JSON without `resourceVersion`; on the way out
//! it is set to the key's mod revision, as Kubernetes' etcd3 storage does. Objects go in and
//! come out in the version of the [`ResourceDef`] given (converted to and from the version
//! the resource is stored in); [`Storage::list`] and [`Storage::watch`] know only key
//! prefixes and return stored objects, which callers convert with [`ResourceDef::to_served`].

use std::sync::Arc;

use serde_json::{json, Value};
use skiff_store::{KeyValue, Store, StoreError, WatchStream};

use crate::registry::ResourceDef;
use crate::status::{ApiError, ApiResult};

/// The root of every key.
pub const REGISTRY_ROOT: &str = "/registry/";

/// The prefix of Secrets, which are encrypted at rest.
pub const SECRETS_PREFIX: &str = "/registry/secrets/";

/// Typed access to objects over a [`Store`].
#[derive(Clone)]
pub struct Storage {
    store: Arc<dyn Store>,
}

impl std::fmt::Debug for Storage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Storage")
    }
}

/// One page of a list.
#[derive(Debug)]
pub struct Page {
    /// The keys and objects, with resourceVersion set.
    pub items: Vec<(String, Value)>,
    /// Whether more keys follow.
    pub more: bool,
    /// The revision the page was read at.
    pub revision: i64,
}

impl Storage {
    /// Storage over `store`.
    pub fn new(store: Arc<dyn Store>) -> Storage {
        Storage { store }
    }

    /// The underlying store.
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// The key of one object.
    pub fn key(def: &ResourceDef, namespace: &str, name: &str) -> String {
        if def.namespaced {
            format!("{REGISTRY_ROOT}{}/{namespace}/{name}", def.storage_prefix)
        } else {
            format!("{REGISTRY_ROOT}{}/{name}", def.storage_prefix)
        }
    }

    /// The prefix of every object of a resource, or of those in one namespace.
    pub fn prefix(def: &ResourceDef, namespace: Option<&str>) -> String {
        match namespace {
            Some(ns) if def.namespaced => format!("{REGISTRY_ROOT}{}/{ns}/", def.storage_prefix),
            _ => format!("{REGISTRY_ROOT}{}/", def.storage_prefix),
        }
    }

    /// Decodes a stored value and sets its resourceVersion.
    pub fn decode(kv: &KeyValue, revision: i64) -> ApiResult<Value> {
        let mut obj: Value = serde_json::from_slice(&kv.value)
            .map_err(|e| ApiError::internal(format!("decoding {}: {e}", kv.key)))?;
        set_resource_version(&mut obj, revision);
        Ok(obj)
    }

    /// Brings `obj` into the form a read returns once it is written (empty metadata lists
    /// and maps omitted, no resourceVersion or selfLink) and encodes it for the store, in the
    /// version its resource is stored in. Copies the object only when that version differs.
    fn encode(def: &ResourceDef, obj: &mut Value) -> ApiResult<Vec<u8>> {
        omit_empty_metadata(obj);
        if let Some(meta) = obj.get_mut("metadata").and_then(Value::as_object_mut) {
            meta.remove("resourceVersion");
            meta.remove("selfLink");
        }
        if def.conversion.is_none() && def.custom.is_none() {
            return serde_json::to_vec(obj).map_err(ApiError::internal);
        }
        let mut stored = obj.clone();
        def.try_to_stored(&mut stored)?;
        serde_json::to_vec(&stored).map_err(ApiError::internal)
    }

    /// Reads one object with its mod revision.
    pub async fn get(
        &self,
        def: &ResourceDef,
        namespace: &str,
        name: &str,
    ) -> ApiResult<Option<(Value, i64)>> {
        let key = Storage::key(def, namespace, name);
        match self.store.get(&key).await? {
            Some(kv) => {
                let mut obj = Storage::decode(&kv, kv.mod_revision)?;
                def.try_to_served(&mut obj)?;
                Ok(Some((obj, kv.mod_revision)))
            }
            None => Ok(None),
        }
    }

    /// What a read returns after `obj`, [`Storage::encode`]d, was written at `revision`.
    fn written(def: &ResourceDef, mut obj: Value, revision: i64) -> Value {
        def.through_storage(&mut obj);
        set_resource_version(&mut obj, revision);
        obj
    }

    /// Creates an object; fails with AlreadyExists when the key exists.
    pub async fn create(
        &self,
        def: &ResourceDef,
        namespace: &str,
        name: &str,
        mut obj: Value,
    ) -> ApiResult<Value> {
        let key = Storage::key(def, namespace, name);
        let bytes = Storage::encode(def, &mut obj)?;
        match self.store.create(&key, bytes).await {
            Ok(revision) => Ok(Storage::written(def, obj, revision)),
            Err(StoreError::AlreadyExists { .. }) => Err(ApiError::already_exists(def, name)),
            Err(e) => Err(e.into()),
        }
    }

    /// [`Storage::create`], also returning the JSON of the created object as a read returns
    /// it, made from the stored bytes (the object is encoded once, not once for the store
    /// and again for the reply) when the resource is stored in the version it is served in.
    pub async fn create_encoded(
        &self,
        def: &ResourceDef,
        namespace: &str,
        name: &str,
        mut obj: Value,
    ) -> ApiResult<(Value, Option<Vec<u8>>)> {
        if def.conversion.is_some() || def.custom.is_some() || !obj["metadata"].is_object() {
            let created = self.create(def, namespace, name, obj).await?;
            return Ok((created, None));
        }
        let key = Storage::key(def, namespace, name);
        omit_empty_metadata(&mut obj);
        let meta = obj["metadata"]
            .as_object_mut()
            .expect("metadata checked above");
        meta.remove("selfLink");
        // A placeholder where the reply's resourceVersion goes, so it lands where a read's
        // object has it; the stored bytes leave it out.
        meta.insert("resourceVersion".into(), Value::Null);
        let (bytes, slot) = encode_without_version(&obj)
            .ok_or_else(|| ApiError::internal("encoding the object failed"))?;
        match self.store.create(&key, bytes.clone()).await {
            Ok(revision) => {
                let reply = slot.fill(&bytes, revision);
                set_resource_version(&mut obj, revision);
                Ok((obj, Some(reply)))
            }
            Err(StoreError::AlreadyExists { .. }) => Err(ApiError::already_exists(def, name)),
            Err(e) => Err(e.into()),
        }
    }

    /// Replaces an object if its mod revision is still `expected`.
    pub async fn update(
        &self,
        def: &ResourceDef,
        namespace: &str,
        name: &str,
        mut obj: Value,
        expected: i64,
    ) -> ApiResult<Value> {
        let key = Storage::key(def, namespace, name);
        let bytes = Storage::encode(def, &mut obj)?;
        match self.store.update(&key, bytes, expected).await {
            Ok(revision) => Ok(Storage::written(def, obj, revision)),
            Err(StoreError::Conflict { .. }) => Err(ApiError::stale(def, name)),
            Err(StoreError::NotFound { .. }) => Err(ApiError::not_found(def, name)),
            Err(e) => Err(e.into()),
        }
    }

    /// Deletes an object if its mod revision is still `expected`; returns the deleted object
    /// with the deletion's revision.
    pub async fn delete(
        &self,
        def: &ResourceDef,
        namespace: &str,
        name: &str,
        expected: i64,
    ) -> ApiResult<Value> {
        let key = Storage::key(def, namespace, name);
        match self.store.delete(&key, Some(expected)).await {
            Ok((revision, kv)) => {
                let mut obj = Storage::decode(&kv, revision)?;
                def.to_served(&mut obj);
                Ok(obj)
            }
            Err(StoreError::Conflict { .. }) => Err(ApiError::stale(def, name)),
            Err(StoreError::NotFound { .. }) => Err(ApiError::not_found(def, name)),
            Err(e) => Err(e.into()),
        }
    }

    /// Reads up to `limit` objects under `prefix` after `start_after`, at `revision`.
    pub async fn list(
        &self,
        prefix: &str,
        revision: Option<i64>,
        limit: Option<usize>,
        start_after: Option<&str>,
    ) -> ApiResult<Page> {
        let range = self
            .store
            .range(prefix, revision, limit, start_after)
            .await?;
        let items = range
            .kvs
            .iter()
            .map(|kv| Ok((kv.key.clone(), Storage::decode(kv, kv.mod_revision)?)))
            .collect::<ApiResult<Vec<_>>>()?;
        Ok(Page {
            items,
            more: range.more,
            revision: range.revision,
        })
    }

    /// Counts the objects under `prefix`.
    pub async fn count(&self, prefix: &str) -> ApiResult<u64> {
        Ok(self.store.count(prefix).await?)
    }

    /// The store's current revision.
    pub async fn current_revision(&self) -> ApiResult<i64> {
        Ok(self.store.current_revision().await?)
    }

    /// Watches every change under `prefix` from revision `from`.
    pub async fn watch(&self, prefix: &str, from: i64) -> ApiResult<WatchStream> {
        Ok(self.store.watch(prefix, from).await?)
    }
}

/// Sets `metadata.resourceVersion`.
pub fn set_resource_version(obj: &mut Value, revision: i64) {
    if let Some(meta) = obj.get_mut("metadata").and_then(Value::as_object_mut) {
        meta.insert("resourceVersion".into(), json!(revision.to_string()));
    }
}

/// Where `metadata.resourceVersion` goes into an object's JSON encoded without it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct VersionSlot {
    /// The byte offset it is inserted at.
    at: usize,
    /// Whether a metadata field precedes it (a comma comes before it).
    after_field: bool,
    /// Whether a metadata field follows it (a comma comes after it, unless one came before).
    before_field: bool,
}

impl VersionSlot {
    /// `encoded` with `"resourceVersion":"<revision>"` in the slot.
    fn fill(&self, encoded: &[u8], revision: i64) -> Vec<u8> {
        let mut out = Vec::with_capacity(encoded.len() + 40);
        out.extend_from_slice(&encoded[..self.at]);
        if self.after_field {
            out.push(b',');
        }
        out.extend_from_slice(b"\"resourceVersion\":\"");
        out.extend_from_slice(revision.to_string().as_bytes());
        out.push(b'"');
        if !self.after_field && self.before_field {
            out.push(b',');
        }
        out.extend_from_slice(&encoded[self.at..]);
        out
    }
}

/// Encodes `obj` exactly as `serde_json::to_vec` does but without `metadata.resourceVersion`
/// (which must be there), and says where it was; `None` without it or when encoding fails.
fn encode_without_version(obj: &Value) -> Option<(Vec<u8>, VersionSlot)> {
    let Value::Object(top) = obj else {
        return None;
    };
    let mut out = Vec::with_capacity(4096);
    let mut slot = None;
    out.push(b'{');
    for (i, (key, value)) in top.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        serde_json::to_writer(&mut out, key).ok()?;
        out.push(b':');
        let Value::Object(meta) = value else {
            serde_json::to_writer(&mut out, value).ok()?;
            continue;
        };
        if key != "metadata" {
            serde_json::to_writer(&mut out, value).ok()?;
            continue;
        }
        out.push(b'{');
        let mut fields = 0;
        for (field, v) in meta {
            if field == "resourceVersion" {
                slot = Some(VersionSlot {
                    at: out.len(),
                    after_field: fields > 0,
                    before_field: false,
                });
                continue;
            }
            if let Some(slot) = slot.as_mut() {
                slot.before_field = true;
            }
            if fields > 0 {
                out.push(b',');
            }
            serde_json::to_writer(&mut out, field).ok()?;
            out.push(b':');
            serde_json::to_writer(&mut out, v).ok()?;
            fields += 1;
        }
        out.push(b'}');
    }
    out.push(b'}');
    Some((out, slot?))
}

/// Drops the metadata lists and maps that are empty, as Kubernetes' `omitempty` does: an
/// object whose last finalizer (label, owner reference) was removed has no such field.
fn omit_empty_metadata(obj: &mut Value) {
    if let Some(meta) = obj.get_mut("metadata").and_then(Value::as_object_mut) {
        for field in [
            "finalizers",
            "ownerReferences",
            "labels",
            "annotations",
            "managedFields",
        ] {
            let empty = match meta.get(field) {
                Some(Value::Array(a)) => a.is_empty(),
                Some(Value::Object(o)) => o.is_empty(),
                Some(Value::Null) => true,
                _ => false,
            };
            if empty {
                meta.remove(field);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The stored bytes and the reply made from them are what encoding the object without
    /// and with its resourceVersion gives, wherever the field falls in metadata.
    #[test]
    fn the_reply_is_the_stored_json_with_the_resource_version() {
        for meta in [
            json!({"name": "p", "namespace": "ns", "uid": "u"}),
            json!({"uid": "u"}),
            json!({"name": "p"}),
            json!({}),
            json!({"annotations": {"a\"b": "c\\d"}, "name": "é", "selfLink": "x"}),
        ] {
            let mut obj = json!({"apiVersion": "v1", "kind": "Pod", "metadata": meta,
                "spec": {"containers": [{"name": "c", "image": "busybox"}]}, "status": {}});
            let mut with_version = obj.clone();
            with_version["metadata"]["resourceVersion"] = json!("42");
            obj["metadata"]["resourceVersion"] = Value::Null;
            let (stored, slot) = encode_without_version(&obj).unwrap();
            let mut without = obj.clone();
            without["metadata"]
                .as_object_mut()
                .unwrap()
                .remove("resourceVersion");
            assert_eq!(stored, serde_json::to_vec(&without).unwrap());
            assert_eq!(
                String::from_utf8(slot.fill(&stored, 42)).unwrap(),
                serde_json::to_string(&with_version).unwrap()
            );
        }
    }

    #[test]
    fn an_object_without_metadata_has_no_slot() {
        assert!(encode_without_version(&json!({"kind": "Pod"})).is_none());
        assert!(encode_without_version(&json!({"metadata": {"name": "p"}})).is_none());
    }
}
