//! Server-side apply and field ownership (`metadata.managedFields`), after Kubernetes'
//! structured-merge-diff: every leaf field of an object is owned by the managers that set
//! it; an apply merges the applier's configuration into the object, removes the fields the
//! applier stopped setting (unless someone else owns them) and refuses to change fields other
//! managers own unless forced.
//!
//! Field paths use the FieldsV1 segments: `f:<field>`, `k:<merge key object>` for items of
//! lists merged by key (the strategic merge patch key of the schema), `v:<value>` for items
//! of merged primitive lists; other lists are atomic leaves.

use std::collections::BTreeSet;

use serde_json::{json, Map, Value};

use crate::schema::{list_map_key_value, list_map_keys, patch_meta, Schemas};

/// One field path, as FieldsV1 segments.
pub type FieldPath = Vec<String>;
/// A set of leaf field paths.
pub type FieldSet = BTreeSet<FieldPath>;

/// Metadata fields the system owns, never tracked.
const UNTRACKED_METADATA: &[&str] = &[
    "name",
    "namespace",
    "uid",
    "resourceVersion",
    "generation",
    "creationTimestamp",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "managedFields",
    "selfLink",
];

/// The leaf field paths of `obj`, an object of definition `root`; `status` is skipped when
/// `without_status` (kinds with a status subresource).
pub fn leaves(obj: &Value, schemas: &Schemas, root: &str, without_status: bool) -> FieldSet {
    let schema = schemas.definition(root).unwrap_or(&NULL);
    let mut out = FieldSet::new();
    let Some(map) = obj.as_object() else {
        return out;
    };
    for (key, value) in map {
        if matches!(key.as_str(), "apiVersion" | "kind") || (without_status && key == "status") {
            continue;
        }
        let property = child_schema(schemas, schema, key);
        let mut path = vec![format!("f:{key}")];
        if key == "metadata" {
            let Some(meta) = value.as_object() else {
                continue;
            };
            for (field, v) in meta {
                if UNTRACKED_METADATA.contains(&field.as_str()) {
                    continue;
                }
                path.push(format!("f:{field}"));
                walk(
                    v,
                    child_schema(schemas, property, field),
                    schemas,
                    &mut path,
                    &mut out,
                );
                path.pop();
            }
            continue;
        }
        walk(value, property, schemas, &mut path, &mut out);
    }
    out
}

static NULL: Value = Value::Null;

/// The schema of `key` in an object of `schema`: a property, or the map's values.
fn child_schema<'a>(schemas: &'a Schemas, schema: &'a Value, key: &str) -> &'a Value {
    schemas
        .property(schema, key)
        .or_else(|| schemas.resolve(schema).get("additionalProperties"))
        .unwrap_or(&NULL)
}

/// The schema of the items of a list of `schema`.
fn items_schema<'a>(schemas: &'a Schemas, schema: &'a Value) -> &'a Value {
    schemas.resolve(schema).get("items").unwrap_or(&NULL)
}

fn walk(
    value: &Value,
    property: &Value,
    schemas: &Schemas,
    path: &mut FieldPath,
    out: &mut FieldSet,
) {
    match value {
        Value::Null => {}
        Value::Object(map) if !map.is_empty() => {
            for (key, v) in map {
                path.push(format!("f:{key}"));
                walk(v, child_schema(schemas, property, key), schemas, path, out);
                path.pop();
            }
        }
        Value::Array(items) if !items.is_empty() => {
            let (strategies, _) = patch_meta(property);
            match (strategies.contains(&"merge"), list_map_keys(property)) {
                (true, Some(keys)) if items.iter().all(Value::is_object) => {
                    let item_schema = items_schema(schemas, property);
                    for item in items {
                        path.push(key_segment(item, &keys));
                        out.insert(item_marker(path));
                        walk(item, item_schema, schemas, path, out);
                        path.pop();
                    }
                }
                (true, None) => {
                    for item in items {
                        path.push(format!("v:{item}"));
                        out.insert(path.clone());
                        path.pop();
                    }
                }
                _ => {
                    out.insert(path.clone());
                }
            }
        }
        _ => {
            out.insert(path.clone());
        }
    }
}

/// The path naming a keyed list item itself (FieldsV1's `.`), not one of its fields.
fn item_marker(item: &FieldPath) -> FieldPath {
    let mut p = item.clone();
    p.push(".".to_owned());
    p
}

fn key_segment(item: &Value, keys: &[&str]) -> String {
    let mut k = Map::new();
    for key in keys {
        k.insert((*key).to_owned(), list_map_key_value(item, key));
    }
    format!("k:{}", Value::Object(k))
}

/// Whether two items of a map list are the same item.
fn same_item(a: &Value, b: &Value, keys: &[&str]) -> bool {
    keys.iter()
        .all(|k| list_map_key_value(a, k) == list_map_key_value(b, k))
}

/// The value at `path` in `obj` (a `.` segment names the item itself).
pub fn value_at<'a>(obj: &'a Value, path: &[String]) -> Option<&'a Value> {
    let mut current = obj;
    for segment in path {
        if segment == "." {
            continue;
        }
        current = if let Some(field) = segment.strip_prefix("f:") {
            current.get(field)?
        } else if let Some(key) = segment.strip_prefix("k:") {
            let key: Map<String, Value> = serde_json::from_str(key).ok()?;
            current
                .as_array()?
                .iter()
                .find(|item| key.iter().all(|(k, v)| list_map_key_value(item, k) == *v))?
        } else if let Some(v) = segment.strip_prefix("v:") {
            let v: Value = serde_json::from_str(v).ok()?;
            current.as_array()?.iter().find(|item| **item == v)?
        } else {
            return None;
        };
    }
    Some(current)
}

/// Removes the field at `path` from `obj`.
fn remove_at(obj: &mut Value, path: &[String]) {
    let (last, parent) = match path.split_last() {
        Some((last, parent)) if last == "." => match parent.split_last() {
            Some((item, grand)) => (item, grand),
            None => return,
        },
        Some(split) => split,
        None => return,
    };
    let mut current = obj;
    for segment in parent {
        if segment == "." {
            continue;
        }
        let next = if let Some(field) = segment.strip_prefix("f:") {
            current.get_mut(field)
        } else {
            let index = find_index(current, segment);
            match (index, current.as_array_mut()) {
                (Some(i), Some(items)) => items.get_mut(i),
                _ => None,
            }
        };
        match next {
            Some(next) => current = next,
            None => return,
        }
    }
    if let Some(field) = last.strip_prefix("f:") {
        if let Some(map) = current.as_object_mut() {
            map.remove(field);
        }
    } else if let Some(i) = find_index(current, last) {
        if let Some(items) = current.as_array_mut() {
            items.remove(i);
        }
    }
}

fn find_index(list: &Value, segment: &str) -> Option<usize> {
    let items = list.as_array()?;
    if let Some(key) = segment.strip_prefix("k:") {
        let key: Map<String, Value> = serde_json::from_str(key).ok()?;
        items
            .iter()
            .position(|item| key.iter().all(|(k, v)| list_map_key_value(item, k) == *v))
    } else {
        let v: Value = serde_json::from_str(segment.strip_prefix("v:")?).ok()?;
        items.iter().position(|item| *item == v)
    }
}

/// Merges an applied configuration into `live`: maps field by field, keyed lists item by
/// item, merged primitive lists as sets, everything else replaced.
fn merge(live: &mut Value, applied: &Value, property: &Value, schemas: &Schemas) {
    match (live, applied) {
        (Value::Object(live), Value::Object(applied)) => {
            for (key, value) in applied {
                if value.is_null() {
                    continue;
                }
                match live.get_mut(key) {
                    Some(existing) => merge(
                        existing,
                        value,
                        child_schema(schemas, property, key),
                        schemas,
                    ),
                    None => {
                        live.insert(key.clone(), value.clone());
                    }
                }
            }
        }
        (Value::Array(live), Value::Array(applied)) => {
            let (strategies, _) = patch_meta(property);
            match (strategies.contains(&"merge"), list_map_keys(property)) {
                (true, Some(keys)) => {
                    let item_schema = items_schema(schemas, property);
                    for item in applied {
                        match live.iter_mut().find(|l| same_item(l, item, &keys)) {
                            Some(existing) => merge(existing, item, item_schema, schemas),
                            None => live.push(item.clone()),
                        }
                    }
                }
                (true, None) => {
                    for item in applied {
                        if !live.contains(item) {
                            live.push(item.clone());
                        }
                    }
                }
                _ => *live = applied.clone(),
            }
        }
        (live, applied) => *live = applied.clone(),
    }
}

/// One entry of `metadata.managedFields`.
#[derive(Clone, Debug)]
pub struct Manager {
    /// The manager's name (`fieldManager`).
    pub name: String,
    /// `Apply` or `Update`.
    pub operation: String,
    /// The apiVersion it wrote with.
    pub api_version: String,
    /// The subresource it wrote through, if any.
    pub subresource: String,
    /// When it last changed its fields.
    pub time: Value,
    /// Its fields.
    pub fields: FieldSet,
}

impl Manager {
    /// How conflict messages name the manager (Kubernetes' `printManager`).
    fn describe(&self) -> String {
        let mut s = format!("{:?}", self.name);
        if !self.subresource.is_empty() {
            s.push_str(&format!(" with subresource {:?}", self.subresource));
        }
        if self.operation == "Update" {
            s.push_str(&format!(" using {}", self.api_version));
        }
        s
    }
}

/// Reads `metadata.managedFields`.
pub fn managers(obj: &Value) -> Vec<Manager> {
    crate::kinds::array_at(obj, "/metadata/managedFields")
        .iter()
        .map(|entry| {
            let text = |k: &str| {
                entry
                    .get(k)
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_owned()
            };
            let mut fields = FieldSet::new();
            if let Some(f) = entry.get("fieldsV1") {
                flatten(f, &mut Vec::new(), &mut fields);
            }
            Manager {
                name: text("manager"),
                operation: text("operation"),
                api_version: text("apiVersion"),
                subresource: text("subresource"),
                time: entry.get("time").cloned().unwrap_or(Value::Null),
                fields,
            }
        })
        .collect()
}

fn flatten(fields: &Value, path: &mut FieldPath, out: &mut FieldSet) {
    match fields.as_object() {
        Some(map) if !map.is_empty() => {
            for (k, v) in map {
                path.push(k.clone());
                flatten(v, path, out);
                path.pop();
            }
        }
        _ => {
            if !path.is_empty() {
                out.insert(path.clone());
            }
        }
    }
}

/// Writes the managers back as `metadata.managedFields` (dropping those owning nothing).
pub fn set_managers(obj: &mut Value, managers: &[Manager]) {
    let entries: Vec<Value> = managers
        .iter()
        .filter(|m| !m.fields.is_empty())
        .map(|m| {
            let mut fields = json!({});
            for path in &m.fields {
                let mut node = &mut fields;
                for segment in path {
                    node = node
                        .as_object_mut()
                        .expect("fields are objects")
                        .entry(segment.clone())
                        .or_insert_with(|| json!({}));
                }
            }
            let mut entry = json!({
                "manager": m.name,
                "operation": m.operation,
                "apiVersion": m.api_version,
                "time": m.time,
                "fieldsType": "FieldsV1",
                "fieldsV1": fields,
            });
            if !m.subresource.is_empty() {
                entry["subresource"] = json!(m.subresource);
            }
            entry
        })
        .collect();
    let meta = crate::kinds::object_mut(obj, "metadata");
    if entries.is_empty() {
        meta.remove("managedFields");
    } else {
        meta.insert("managedFields".into(), Value::Array(entries));
    }
}

/// Whether `a` and `b` overlap: equal, or one inside the other.
fn overlaps(a: &[String], b: &[String]) -> bool {
    let n = a.len().min(b.len());
    a[..n] == b[..n]
}

/// The fields an apply would change that other managers own, with their managers.
#[derive(Debug)]
pub struct Conflicts(pub Vec<(String, FieldPath)>);

impl Conflicts {
    /// Kubernetes' apply conflict message (`getConflictMessage`).
    pub fn message(&self) -> String {
        if let [(manager, path)] = self.0.as_slice() {
            return format!(
                "Apply failed with 1 conflict: conflict with {manager}: {}",
                display_path(path)
            );
        }
        let mut by_manager: std::collections::BTreeMap<&str, Vec<String>> = Default::default();
        for (manager, path) in &self.0 {
            by_manager
                .entry(manager)
                .or_default()
                .push(display_path(path));
        }
        let mut lines = Vec::new();
        for (manager, paths) in by_manager {
            lines.push(format!("conflicts with {manager}:"));
            lines.extend(paths.into_iter().map(|p| format!("- {p}")));
        }
        format!(
            "Apply failed with {} conflicts: {}",
            self.0.len(),
            lines.join("\n")
        )
    }
}

/// A field path as conflict messages print it: `.spec.containers[name="c"].image`.
pub fn display_path(path: &[String]) -> String {
    let mut s = String::new();
    for segment in path {
        if let Some(field) = segment.strip_prefix("f:") {
            s.push('.');
            s.push_str(field);
        } else if let Some(key) = segment.strip_prefix("k:") {
            let key: Map<String, Value> = serde_json::from_str(key).unwrap_or_default();
            let parts: Vec<String> = key.iter().map(|(k, v)| format!("{k}={v}")).collect();
            s.push_str(&format!("[{}]", parts.join(",")));
        } else if let Some(v) = segment.strip_prefix("v:") {
            s.push_str(&format!("[={v}]"));
        }
    }
    s
}

/// The annotation `kubectl apply` (client-side) keeps its last applied configuration in.
pub const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

/// The fields of the object's last client-side applied configuration.
fn last_applied_fields(live: &Value, schemas: &Schemas, request: &ApplyRequest<'_>) -> FieldSet {
    live.pointer("/metadata/annotations")
        .and_then(|a| a.get(LAST_APPLIED))
        .and_then(Value::as_str)
        .and_then(|text| serde_json::from_str::<Value>(text).ok())
        .map(|config| leaves(&config, schemas, request.root, request.without_status))
        .unwrap_or_default()
}

/// What an apply needs besides the objects.
pub struct ApplyRequest<'a> {
    /// The applier (`fieldManager`).
    pub manager: &'a str,
    /// `force=true`: take the conflicting fields over.
    pub force: bool,
    /// The apiVersion applied.
    pub api_version: &'a str,
    /// The OpenAPI definition of the kind.
    pub root: &'a str,
    /// Whether the kind has a status subresource (status is not the applier's).
    pub without_status: bool,
    /// Now, as managedFields times are written.
    pub now: &'a str,
}

/// Applies `applied` to `live` (an empty object when creating): checks conflicts, merges,
/// removes fields the applier dropped, and records ownership.
pub fn apply(
    live: &Value,
    applied: &Value,
    request: &ApplyRequest<'_>,
    schemas: &Schemas,
) -> Result<Value, Conflicts> {
    let mut managers = managers(live);
    let fields = leaves(applied, schemas, request.root, request.without_status);
    let mine = managers.iter().position(|m| {
        m.name == request.manager && m.operation == "Apply" && m.subresource.is_empty()
    });
    // A keyed item's own marker (`.`) changes only by appearing.
    let changed: Vec<&FieldPath> = fields
        .iter()
        .filter(|p| match p.last().map(String::as_str) {
            Some(".") => value_at(live, p).is_none(),
            _ => value_at(live, p) != value_at(applied, p),
        })
        .collect();
    if !request.force {
        let mut conflicts = Vec::new();
        for (i, m) in managers.iter().enumerate() {
            if Some(i) == mine {
                continue;
            }
            for path in &changed {
                if let Some(owned) = m.fields.iter().find(|o| overlaps(o, path)) {
                    let shown = if owned.len() > path.len() {
                        owned
                    } else {
                        *path
                    };
                    conflicts.push((m.describe(), shown.clone()));
                }
            }
        }
        // kubectl moving from client-side apply takes over what its last client-side apply
        // set (kube-apiserver's lastAppliedManager).
        let allowed = match request.manager {
            "kubectl" => last_applied_fields(live, schemas, request),
            _ => FieldSet::new(),
        };
        if !conflicts.iter().all(|(_, path)| allowed.contains(path)) {
            return Err(Conflicts(conflicts));
        }
    }
    let mut result = live.clone();
    // Fields the applier owned and no longer sets go, unless another manager owns them.
    if let Some(i) = mine {
        for dropped in managers[i].fields.difference(&fields) {
            let shared = managers
                .iter()
                .enumerate()
                .any(|(j, m)| j != i && m.fields.iter().any(|o| overlaps(o, dropped)));
            if !shared {
                remove_at(&mut result, dropped);
                // Maps left empty by the removal go with it.
                for end in (1..dropped.len()).rev() {
                    let parent = &dropped[..end];
                    if value_at(&result, parent)
                        .is_some_and(|v| v.as_object().is_some_and(Map::is_empty))
                    {
                        remove_at(&mut result, parent);
                    }
                }
            }
        }
    }
    let schema = schemas.definition(request.root).unwrap_or(&NULL);
    let mut body = applied.clone();
    if let Some(map) = body.as_object_mut().filter(|_| request.without_status) {
        map.remove("status");
    }
    merge(&mut result, &body, schema, schemas);
    // kubectl's server-side applies keep an existing client-side annotation current, so a
    // later client-side apply diffs against what was applied last (lastAppliedUpdater).
    if request.manager == "kubectl" {
        if let Some(annotation) = result
            .pointer_mut("/metadata/annotations")
            .and_then(|a| a.get_mut(LAST_APPLIED))
        {
            let mut config = applied.clone();
            if let Some(annotations) = config
                .pointer_mut("/metadata/annotations")
                .and_then(Value::as_object_mut)
            {
                annotations.remove(LAST_APPLIED);
            }
            *annotation = json!(config.to_string());
        }
    }
    // Forced: the other managers lose what the applier changed.
    for (i, m) in managers.iter_mut().enumerate() {
        if Some(i) != mine {
            m.fields.retain(|o| !changed.iter().any(|c| overlaps(o, c)));
        }
    }
    // The time moves only when the applier's fields do.
    let time = match mine {
        Some(i) if managers[i].fields == fields => managers[i].time.clone(),
        _ => json!(request.now),
    };
    let entry = Manager {
        name: request.manager.to_owned(),
        operation: "Apply".into(),
        api_version: request.api_version.to_owned(),
        subresource: String::new(),
        time,
        fields,
    };
    match mine {
        Some(i) => managers[i] = entry,
        None => managers.push(entry),
    }
    set_managers(&mut result, &managers);
    Ok(result)
}

/// What an update needs to record its manager.
pub struct UpdateRequest<'a> {
    /// The writer.
    pub manager: &'a str,
    /// The apiVersion written with.
    pub api_version: &'a str,
    /// The subresource written through (`status`), or empty.
    pub subresource: &'a str,
    /// The OpenAPI definition of the kind.
    pub root: &'a str,
    /// Whether the kind has a status subresource.
    pub without_status: bool,
    /// Now, as managedFields times are written.
    pub now: &'a str,
}

/// Records an update: its manager owns every field it changed, which other managers lose;
/// fields gone from the object are nobody's.
pub fn track_update(old: &Value, new: &mut Value, request: &UpdateRequest<'_>, schemas: &Schemas) {
    let mut managers = managers(old);
    let status_only = request.subresource == "status";
    let after = leaves(
        new,
        schemas,
        request.root,
        request.without_status && !status_only,
    );
    let in_scope =
        |p: &FieldPath| !status_only || p.first().map(String::as_str) == Some("f:status");
    // A create (nothing before) changes every field it sets.
    let changed: FieldSet = if old.as_object().is_some_and(serde_json::Map::is_empty) {
        after.into_iter().filter(in_scope).collect()
    } else {
        after
            .into_iter()
            .filter(in_scope)
            .filter(|p| match p.last().map(String::as_str) {
                Some(".") => value_at(old, p).is_none(),
                _ => value_at(old, p) != value_at(new, p),
            })
            .collect()
    };
    for m in &mut managers {
        m.fields
            .retain(|o| !changed.contains(o) && value_at(new, o).is_some());
    }
    if !changed.is_empty() {
        let subresource = request.subresource;
        match managers.iter_mut().find(|m| {
            m.name == request.manager && m.operation == "Update" && m.subresource == subresource
        }) {
            Some(m) => {
                m.fields.extend(changed);
                m.time = json!(request.now);
                request.api_version.clone_into(&mut m.api_version);
            }
            None => managers.push(Manager {
                name: request.manager.to_owned(),
                operation: "Update".into(),
                api_version: request.api_version.to_owned(),
                subresource: subresource.to_owned(),
                time: json!(request.now),
                fields: changed,
            }),
        }
    }
    set_managers(new, &managers);
}

/// Records a create: its manager owns every field of `new`, which no one managed before.
///
/// The same `managedFields` as [`track_update`] from an empty object, built as the FieldsV1
/// tree directly rather than through a set of field paths: creates are the most frequent
/// writes, and the set cost a string per path segment and a sorted insert per leaf. A create
/// has no subresource.
pub fn track_create(new: &mut Value, request: &UpdateRequest<'_>, schemas: &Schemas) {
    let fields = fields_tree(new, schemas, request.root, request.without_status);
    let meta = crate::kinds::object_mut(new, "metadata");
    if fields.is_empty() {
        meta.remove("managedFields");
        return;
    }
    let entry = json!({
        "manager": request.manager,
        "operation": "Update",
        "apiVersion": request.api_version,
        "time": request.now,
        "fieldsType": "FieldsV1",
        "fieldsV1": fields,
    });
    meta.insert("managedFields".into(), Value::Array(vec![entry]));
}

/// Every leaf of `obj` (what [`leaves`] lists) as a FieldsV1 tree.
fn fields_tree(
    obj: &Value,
    schemas: &Schemas,
    root: &str,
    without_status: bool,
) -> Map<String, Value> {
    let schema = schemas.definition(root).unwrap_or(&NULL);
    let mut tree = Map::new();
    let Some(map) = obj.as_object() else {
        return tree;
    };
    for (key, value) in map {
        if matches!(key.as_str(), "apiVersion" | "kind") || (without_status && key == "status") {
            continue;
        }
        let property = child_schema(schemas, schema, key);
        if key == "metadata" {
            let Some(meta) = value.as_object() else {
                continue;
            };
            let mut node = Map::new();
            for (field, v) in meta {
                if UNTRACKED_METADATA.contains(&field.as_str()) {
                    continue;
                }
                let field_schema = child_schema(schemas, property, field);
                add_fields(&mut node, format!("f:{field}"), v, field_schema, schemas);
            }
            if !node.is_empty() {
                merge_node(&mut tree, "f:metadata".to_owned(), node);
            }
            continue;
        }
        add_fields(&mut tree, format!("f:{key}"), value, property, schemas);
    }
    tree
}

/// Adds the leaves of `value`, reached through `segment`, under `node` (as [`walk`] lists
/// them).
fn add_fields(
    node: &mut Map<String, Value>,
    segment: String,
    value: &Value,
    property: &Value,
    schemas: &Schemas,
) {
    match value {
        Value::Null => {}
        Value::Object(map) if !map.is_empty() => {
            let mut child = Map::new();
            for (key, v) in map {
                let schema = child_schema(schemas, property, key);
                add_fields(&mut child, format!("f:{key}"), v, schema, schemas);
            }
            if !child.is_empty() {
                merge_node(node, segment, child);
            }
        }
        Value::Array(items) if !items.is_empty() => {
            let (strategies, _) = patch_meta(property);
            let mut child = Map::new();
            match (strategies.contains(&"merge"), list_map_keys(property)) {
                (true, Some(keys)) if items.iter().all(Value::is_object) => {
                    let item_schema = items_schema(schemas, property);
                    for item in items {
                        let mut item_node = Map::new();
                        item_node.insert(".".to_owned(), Value::Object(Map::new()));
                        for (key, v) in item.as_object().into_iter().flatten() {
                            let schema = child_schema(schemas, item_schema, key);
                            add_fields(&mut item_node, format!("f:{key}"), v, schema, schemas);
                        }
                        merge_node(&mut child, key_segment(item, &keys), item_node);
                    }
                }
                (true, None) => {
                    for item in items {
                        child.insert(format!("v:{item}"), Value::Object(Map::new()));
                    }
                }
                _ => {}
            }
            merge_node(node, segment, child);
        }
        _ => merge_node(node, segment, Map::new()),
    }
}

/// Puts `child` under `segment` in `node`, merged into what is there (items with equal keys).
fn merge_node(node: &mut Map<String, Value>, segment: String, child: Map<String, Value>) {
    match node.get_mut(&segment) {
        Some(Value::Object(existing)) => {
            for (key, value) in child {
                if let Value::Object(grandchild) = value {
                    merge_node(existing, key, grandchild);
                }
            }
        }
        _ => {
            node.insert(segment, Value::Object(child));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn path(segments: &[&str]) -> FieldPath {
        segments.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn paths_print_as_kubernetes_does() {
        let image = path(&["f:spec", "f:containers", r#"k:{"name":"c"}"#, "f:image"]);
        assert_eq!(display_path(&image), r#".spec.containers[name="c"].image"#);
        let finalizer = path(&["f:metadata", "f:finalizers", r#"v:"x""#]);
        assert_eq!(display_path(&finalizer), r#".metadata.finalizers[="x"]"#);
    }

    #[test]
    fn conflicts_group_by_manager() {
        let conflicts = Conflicts(vec![
            (r#""b""#.into(), path(&["f:data", "f:x"])),
            (r#""a" using v1"#.into(), path(&["f:data", "f:y"])),
            (r#""a" using v1"#.into(), path(&["f:data", "f:z"])),
        ]);
        assert_eq!(
            conflicts.message(),
            "Apply failed with 3 conflicts: conflicts with \"a\" using v1:\n- .data.y\n- .data.z\nconflicts with \"b\":\n- .data.x"
        );
    }

    #[test]
    fn creates_record_what_an_update_from_nothing_records() {
        let schemas = Schemas::generate(&crate::kinds::REGISTRY);
        let objects = [
            (
                "io.k8s.api.core.v1.Pod",
                true,
                json!({"apiVersion": "v1", "kind": "Pod",
                    "metadata": {"name": "p", "namespace": "default", "uid": "u",
                        "labels": {"app": "a"}, "finalizers": ["x", "y"], "annotations": {}},
                    "spec": {"containers": [
                        {"name": "a", "image": "i", "command": ["sleep", "1"],
                         "ports": [{"containerPort": 80, "protocol": "TCP"},
                                   {"containerPort": 81, "protocol": "UDP"}],
                         "env": [{"name": "E", "value": "1"}],
                         "resources": {"requests": {"cpu": "10m"}}},
                        {"name": "b", "image": "j", "securityContext": {}}],
                        "nodeSelector": null, "tolerations": [{"key": "k"}]},
                    "status": {"phase": "Pending"}}),
            ),
            (
                "io.k8s.api.core.v1.ConfigMap",
                false,
                json!({"apiVersion": "v1", "kind": "ConfigMap",
                    "metadata": {"name": "c", "creationTimestamp": "t"},
                    "data": {"a": "1", "b": ""}, "binaryData": {}}),
            ),
            (
                "io.k8s.api.core.v1.ConfigMap",
                false,
                json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}}),
            ),
        ];
        for (root, without_status, obj) in objects {
            let request = UpdateRequest {
                manager: "m",
                api_version: "v1",
                subresource: "",
                root,
                without_status,
                now: "2026-11-22T00:00:00Z",
            };
            let mut created = obj.clone();
            track_create(&mut created, &request, &schemas);
            let mut updated = obj.clone();
            track_update(&json!({}), &mut updated, &request, &schemas);
            assert_eq!(created, updated, "{root}");
        }
    }

    #[test]
    fn dropped_keyed_items_are_removed() {
        let mut obj = json!({"spec": {"containers": [{"name": "a"}, {"name": "b"}]}});
        remove_at(
            &mut obj,
            &path(&["f:spec", "f:containers", r#"k:{"name":"a"}"#, "."]),
        );
        assert_eq!(obj, json!({"spec": {"containers": [{"name": "b"}]}}));
    }
}
