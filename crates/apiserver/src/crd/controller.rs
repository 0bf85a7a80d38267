//! The CRD controller: level-triggered over the reflector's mirror of
//! CustomResourceDefinitions. Each pass computes what the whole CRD list serves and puts it
//! in the registry, marks newly served CRDs `Established`, and finishes the deletion of
//! CRDs marked for it (deleting their custom objects, then the CRD), as apiextensions'
//! establishing and finalizing controllers do.

use std::collections::HashMap;
use std::sync::Arc;

use serde_json::Value;

use super::{crd_def, definition, CLEANUP_FINALIZER};
use crate::cache::Reflector;
use crate::kinds::{array_at, str_at};
use crate::registry::{Registry, ResourceDef};
use crate::status::ApiResult;
use crate::storage::{Storage, REGISTRY_ROOT};

/// The rows built per CRD (uid, generation, being deleted), reused while the CRD's spec is
/// unchanged.
pub type RowCache = HashMap<(String, i64, bool), Vec<&'static ResourceDef>>;

/// Runs the controller until the reflector stops, starting from the rows of `cache` (the
/// server's startup reconciles once before serving, so a restart serves CRDs at once).
pub async fn run(
    storage: Storage,
    reflector: Arc<Reflector>,
    registry: &'static Registry,
    mut cache: RowCache,
) {
    let mut changes = reflector.changes();
    loop {
        reconcile(&storage, &reflector, registry, &mut cache).await;
        if changes.changed().await.is_err() {
            return;
        }
    }
}

/// One pass: serve what the CRDs define, then bring their status and deletion along.
pub async fn reconcile(
    storage: &Storage,
    reflector: &Reflector,
    registry: &Registry,
    cache: &mut RowCache,
) {
    let crds = reflector.list(crd_def());
    super::serve(registry, &crds, cache, storage);
    for crd in &crds {
        let result = if crd.pointer("/metadata/deletionTimestamp").is_some() {
            finalize(storage, crd).await
        } else {
            establish(storage, crd).await
        };
        if let Err(err) = result {
            // A conflict means a newer version is on its way through the reflector.
            tracing::debug!(
                crd = str_at(crd, "/metadata/name"),
                "reconciling a CustomResourceDefinition: {}",
                err.message
            );
        }
    }
}

fn revision_of(obj: &Value) -> i64 {
    str_at(obj, "/metadata/resourceVersion")
        .parse()
        .unwrap_or(0)
}

/// Marks a served CRD `Established` (its rows are in the registry by now).
async fn establish(storage: &Storage, crd: &Value) -> ApiResult<()> {
    if definition::condition_true(crd, "Established") {
        return Ok(());
    }
    let mut updated = crd.clone();
    definition::set_condition(
        &mut updated,
        "Established",
        "True",
        "InitialNamesAccepted",
        "the initial names have been accepted",
    );
    let name = str_at(crd, "/metadata/name");
    storage
        .update(crd_def(), "", name, updated, revision_of(crd))
        .await?;
    Ok(())
}

/// Deletes every object of a CRD being deleted, then the CRD itself.
async fn finalize(storage: &Storage, crd: &Value) -> ApiResult<()> {
    let name = str_at(crd, "/metadata/name");
    let holds_cleanup = array_at(crd, "/metadata/finalizers")
        .iter()
        .any(|f| f.as_str() == Some(CLEANUP_FINALIZER));
    if !holds_cleanup {
        return Ok(());
    }
    let prefix = format!(
        "{REGISTRY_ROOT}{}/{}/",
        str_at(crd, "/spec/group"),
        str_at(crd, "/spec/names/plural")
    );
    loop {
        let page = storage.list(&prefix, None, Some(500), None).await?;
        for (key, _) in &page.items {
            match storage.store().delete(key, None).await {
                Ok(_) | Err(skiff_store::StoreError::NotFound { .. }) => {}
                Err(err) => return Err(err.into()),
            }
        }
        if !page.more {
            break;
        }
    }
    let mut updated = crd.clone();
    let finalizers: Vec<Value> = array_at(crd, "/metadata/finalizers")
        .iter()
        .filter(|f| f.as_str() != Some(CLEANUP_FINALIZER))
        .cloned()
        .collect();
    if finalizers.is_empty() {
        storage
            .delete(crd_def(), "", name, revision_of(crd))
            .await?;
    } else {
        updated["metadata"]["finalizers"] = Value::Array(finalizers);
        storage
            .update(crd_def(), "", name, updated, revision_of(crd))
            .await?;
    }
    Ok(())
}
