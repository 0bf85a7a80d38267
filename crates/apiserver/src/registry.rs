//! The resource registry: one table row per served resource, driving discovery, OpenAPI,
//! storage keys and the generic handlers.
//!
//! Adding a kind is adding a row in [`crate::kinds::RESOURCES`] plus, when it needs them, a
//! [`Strategy`] with its defaulting, validation and table columns (Kubernetes' `rest.Strategy`
//! and `TableConvertor`, reduced to what skiff serves).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::RwLock;

use schemars::{JsonSchema, Schema, SchemaGenerator};
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;

use crate::status::ApiError;
use crate::table::Column;
use crate::validation::FieldError;

/// Every verb a resource with full CRUD and watch supports, as discovery lists them.
pub const ALL_VERBS: &[&str] = &[
    "create",
    "delete",
    "deletecollection",
    "get",
    "list",
    "patch",
    "update",
    "watch",
];

/// One served resource.
pub struct ResourceDef {
    /// API group ("" for core).
    pub group: &'static str,
    /// API version.
    pub version: &'static str,
    /// Kind.
    pub kind: &'static str,
    /// Plural resource name, as in URLs.
    pub plural: &'static str,
    /// Singular resource name.
    pub singular: &'static str,
    /// Short names (`po`, `deploy`).
    pub short_names: &'static [&'static str],
    /// Whether objects live in namespaces.
    pub namespaced: bool,
    /// Verbs the resource supports.
    pub verbs: &'static [&'static str],
    /// Categories (`all`).
    pub categories: &'static [&'static str],
    /// Whether the `status` subresource is served (and the main resource ignores status).
    pub status_subresource: bool,
    /// Key prefix under `/registry/`, as kube-apiserver lays out etcd (`minions` for nodes,
    /// `services/specs` for services).
    pub storage_prefix: &'static str,
    /// Whether `metadata.generation` is maintained (bumped when the spec changes).
    pub generation: bool,
    /// Whether a delete returns the deleted object (otherwise a Status of success).
    pub delete_returns_object: bool,
    /// Field selectors beyond `metadata.name` and `metadata.namespace`.
    pub selectable_fields: &'static [&'static str],
    /// Decodes into the typed kind and re-encodes: rejects ill-typed values, drops unknown
    /// fields (Kubernetes prunes them for built-in types).
    pub normalize: fn(Value) -> Result<Value, String>,
    /// Adds the kind's schema (and its dependencies) to an OpenAPI generator.
    pub schema: fn(&mut SchemaGenerator) -> Schema,
    /// The OpenAPI definition name (`io.k8s.api.core.v1.Pod`).
    pub schema_name: fn() -> String,
    /// Kind-specific hooks.
    pub strategy: &'static dyn Strategy,
    /// Whether the `scale` subresource is served (`spec.replicas`, `status.replicas`).
    pub scale_subresource: bool,
    /// Decodes the kind's protobuf message (client-go's typed clients send protobuf).
    pub protobuf: crate::protobuf::Decoder,
    /// The CustomResourceDefinition version this row serves; `None` for built-in kinds.
    pub custom: Option<&'static crate::crd::CustomResource>,
    /// How a built-in kind served in several versions converts between this row's version
    /// and the one it is stored in; `None` when the row is the storage version.
    pub conversion: Option<&'static dyn Conversion>,
}

/// Verbs of resources that only accept a request and answer it (reviews, TokenRequest).
pub const CREATE_ONLY: &[&str] = &["create"];

/// A row of the registry for the typed kind `T` (k8s-openapi) whose protobuf message is `P`
/// (k8s-pb), with the defaults most kinds share: namespaced, every verb, stored under its
/// plural, no subresources, no hooks. The builder methods below adjust a row.
pub const fn row<T, P>(
    group: &'static str,
    version: &'static str,
    kind: &'static str,
    (plural, singular): (&'static str, &'static str),
) -> ResourceDef
where
    T: DeserializeOwned + Serialize + JsonSchema,
    P: prost::Message + Default + std::fmt::Debug,
{
    ResourceDef {
        group,
        version,
        kind,
        plural,
        singular,
        short_names: &[],
        namespaced: true,
        verbs: ALL_VERBS,
        categories: &[],
        status_subresource: false,
        storage_prefix: plural,
        generation: false,
        delete_returns_object: false,
        selectable_fields: &[],
        normalize: normalize::<T>,
        schema: schema::<T>,
        schema_name: schema_name::<T>,
        strategy: &Plain,
        scale_subresource: false,
        protobuf: crate::protobuf::decode_as::<P, T>,
        custom: None,
        conversion: None,
    }
}

impl ResourceDef {
    /// Cluster-scoped.
    pub const fn cluster(mut self) -> Self {
        self.namespaced = false;
        self
    }

    /// With short names.
    pub const fn short(mut self, names: &'static [&'static str]) -> Self {
        self.short_names = names;
        self
    }

    /// In the `all` category.
    pub const fn in_all(mut self) -> Self {
        self.categories = &["all"];
        self
    }

    /// With a status subresource, and `metadata.generation` maintained.
    pub const fn status(mut self) -> Self {
        self.status_subresource = true;
        self.generation = true;
        self
    }

    /// With a status subresource, without generation.
    pub const fn status_only(mut self) -> Self {
        self.status_subresource = true;
        self
    }

    /// With a scale subresource.
    pub const fn scale(mut self) -> Self {
        self.scale_subresource = true;
        self
    }

    /// Stored under another key prefix.
    pub const fn prefix(mut self, prefix: &'static str) -> Self {
        self.storage_prefix = prefix;
        self
    }

    /// Deletes answer with the deleted object.
    pub const fn returns_object(mut self) -> Self {
        self.delete_returns_object = true;
        self
    }

    /// With extra field selectors.
    pub const fn fields(mut self, fields: &'static [&'static str]) -> Self {
        self.selectable_fields = fields;
        self
    }

    /// With only these verbs.
    pub const fn verbs(mut self, verbs: &'static [&'static str]) -> Self {
        self.verbs = verbs;
        self
    }

    /// With kind-specific hooks.
    pub const fn strategy(mut self, strategy: &'static dyn Strategy) -> Self {
        self.strategy = strategy;
        self
    }

    /// Served in this version, stored in another one, converting with `conversion`; the row
    /// must share its storage prefix with the storage version's row.
    pub const fn convert(mut self, conversion: &'static dyn Conversion) -> Self {
        self.conversion = Some(conversion);
        self
    }

    /// `apiVersion` of the kind (`v1`, `apps/v1`).
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.to_owned()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    /// The group-qualified resource used in error messages (`pods`, `deployments.apps`).
    pub fn qualified(&self) -> String {
        if self.group.is_empty() {
            self.plural.to_owned()
        } else {
            format!("{}.{}", self.plural, self.group)
        }
    }

    /// The `<Kind>List` kind.
    pub fn list_kind(&self) -> String {
        format!("{}List", self.kind)
    }

    /// Whether `verb` is allowed.
    pub fn supports(&self, verb: &str) -> bool {
        self.verbs.contains(&verb)
    }

    /// The name of the kind's OpenAPI definition (`io.k8s.api.core.v1.Pod`,
    /// `com.example.v1.Widget` for custom resources).
    pub fn definition_name(&self) -> String {
        match self.custom {
            Some(custom) => custom.definition.clone(),
            None => (self.schema_name)(),
        }
    }

    /// Converts a stored object to this row's version: custom resources are stored in their
    /// storage version and served in any served one (conversion strategy `None` only
    /// rewrites `apiVersion`); built-in kinds with a [`Conversion`] are converted from their
    /// storage version. Objects already in this row's version are left alone, so converting
    /// twice is harmless.
    ///
    /// A conversion that fails (a CRD's conversion webhook) leaves the object as it was;
    /// requests that must fail then use [`ResourceDef::try_to_served`].
    pub fn to_served(&self, obj: &mut Value) {
        if let Err(err) = self.try_to_served(obj) {
            tracing::warn!("{}", err.message);
        }
    }

    /// [`ResourceDef::to_served`], failing as kube-apiserver does when the conversion
    /// (a CRD's conversion webhook) fails.
    pub fn try_to_served(&self, obj: &mut Value) -> Result<(), ApiError> {
        if let Some(custom) = self.custom {
            custom
                .convert(obj, &self.api_version())
                .map_err(|message| ApiError::new(500, "", message))?;
        }
        if let Some(conversion) = self.conversion {
            if api_version_of(obj) == conversion.storage_version() {
                conversion.to_served(obj);
            }
        }
        Ok(())
    }

    /// [`ResourceDef::try_to_served`] for the objects of a list: a CRD's conversion webhook
    /// gets them all in one review, as kube-apiserver converts a list.
    pub fn try_to_served_all<'a>(
        &self,
        objects: impl IntoIterator<Item = &'a mut Value>,
    ) -> Result<(), ApiError> {
        match self.custom {
            Some(custom) if self.conversion.is_none() => custom
                .convert_all(objects.into_iter().collect(), &self.api_version())
                .map_err(|message| ApiError::new(500, "", message)),
            _ => objects
                .into_iter()
                .try_for_each(|obj| self.try_to_served(obj)),
        }
    }

    /// Converts an object of this row's version to the storage version and back: what a read
    /// returns once it is written (a row stored in another version may gain the storage
    /// version's defaults and the annotations of the round trip).
    pub fn through_storage(&self, obj: &mut Value) {
        if self.conversion.is_some() {
            self.to_stored(obj);
            self.to_served(obj);
        }
    }

    /// Converts an object of this row's version to the version it is stored in.
    pub fn to_stored(&self, obj: &mut Value) {
        if let Err(err) = self.try_to_stored(obj) {
            tracing::warn!("{}", err.message);
        }
    }

    /// [`ResourceDef::to_stored`], failing when the conversion fails.
    pub fn try_to_stored(&self, obj: &mut Value) -> Result<(), ApiError> {
        if let Some(custom) = self.custom {
            custom
                .convert(obj, &custom.storage_api_version)
                .map_err(|message| ApiError::new(500, "", message))?;
        }
        if let Some(conversion) = self.conversion {
            if api_version_of(obj) == self.api_version() {
                conversion.to_stored(obj);
            }
        }
        Ok(())
    }
}

fn api_version_of(obj: &Value) -> &str {
    obj.get("apiVersion").and_then(Value::as_str).unwrap_or("")
}

/// Converts objects of a built-in kind between the version a row serves and the version the
/// resource is stored in (what kube-apiserver does through its internal version; skiff
/// converts each served version straight to the storage version and back). Implementations
/// set `apiVersion`; they run on every read (get, list, watch) and write of the row.
pub trait Conversion: Send + Sync {
    /// The `apiVersion` objects are stored in (`autoscaling/v2`).
    fn storage_version(&self) -> &'static str;

    /// Rewrites an object of the storage version into the row's version.
    fn to_served(&self, obj: &mut Value);

    /// Rewrites an object of the row's version into the storage version.
    fn to_stored(&self, obj: &mut Value);
}

impl std::fmt::Debug for ResourceDef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ResourceDef({})", self.qualified())
    }
}

/// Kind-specific behaviour of the generic handlers; every hook has a do-nothing default.
pub trait Strategy: Send + Sync {
    /// Sets defaults (Kubernetes' `SetDefaults_*`), on create and on every update.
    fn default(&self, _obj: &mut Value) {}

    /// Prepares a new object (e.g. resets status), before defaulting and validation.
    fn prepare_for_create(&self, _obj: &mut Value) {}

    /// Records who creates the object (a CertificateSigningRequest's `spec.username`).
    fn set_requester(&self, _obj: &mut Value, _user: &crate::authn::UserInfo) {}

    /// Prepares an update through `subresource` (`status`, `approval`) from the stored
    /// `old`, after the subresource's part of `new` was merged into `old`.
    fn prepare_for_subresource(&self, _subresource: &str, _old: &Value, _new: &mut Value) {}

    /// Whether an update through `status` also writes the request's labels and
    /// annotations: kinds whose Kubernetes status strategy resets only the spec (Jobs,
    /// CronJobs), unlike `ResetObjectMetaForStatus`.
    fn status_writes_metadata(&self) -> bool {
        false
    }

    /// Prepares an update through the main resource (not a subresource) from the stored
    /// `old`: fields only a subresource may change keep their old values.
    fn prepare_for_update(&self, _old: &Value, _new: &mut Value) {}

    /// Validates an object about to be stored.
    fn validate(&self, _obj: &Value) -> Vec<FieldError> {
        Vec::new()
    }

    /// Validates an update against the stored object (immutable fields).
    fn validate_update(&self, _new: &Value, _old: &Value) -> Vec<FieldError> {
        Vec::new()
    }

    /// The name validator for `metadata.name` (RFC 1123 subdomain by default).
    fn validate_name(&self, name: &str) -> Vec<String> {
        crate::validation::dns1123_subdomain(name)
    }

    /// The printer columns of `kubectl get` (Name is always first).
    fn columns(&self) -> Vec<Column> {
        vec![Column::name(), Column::age()]
    }

    /// One row of cells matching [`Strategy::columns`].
    fn row(&self, obj: &Value, now: jiff::Timestamp) -> Vec<Value> {
        vec![
            crate::table::name_cell(obj),
            crate::table::age_cell(obj, now),
        ]
    }

    /// Whether a delete only marks the object (graceful deletion of pods on a node).
    fn graceful_delete(&self, _obj: &Value, _grace_period: Option<i64>) -> Option<i64> {
        None
    }

    /// Changes applied when an object is marked for deletion (namespace phase Terminating).
    fn on_mark_deleted(&self, _obj: &mut Value) {}
}

/// A [`Strategy`] with no hooks, for kinds that need none.
pub struct Plain;

impl Strategy for Plain {}

/// The `normalize` of a typed kind.
pub fn normalize<T: DeserializeOwned + Serialize>(obj: Value) -> Result<Value, String> {
    let typed: T = serde_path_to_error::deserialize(obj).map_err(|e| {
        let path = e.path().to_string();
        if path == "." || path.is_empty() {
            e.inner().to_string()
        } else {
            format!("{path}: {}", e.inner())
        }
    })?;
    serde_json::to_value(typed).map_err(|e| e.to_string())
}

/// The `schema` of a typed kind.
pub fn schema<T: JsonSchema>(generator: &mut SchemaGenerator) -> Schema {
    generator.subschema_for::<T>()
}

/// The `schema_name` of a typed kind.
pub fn schema_name<T: JsonSchema>() -> String {
    T::schema_name().into_owned()
}

/// The served resources, looked up by group, version and plural or kind: the built-in
/// table plus the custom resources of the CustomResourceDefinitions currently established.
#[derive(Debug)]
pub struct Registry {
    resources: &'static [ResourceDef],
    /// The rows of custom resources; replaced as a whole when the CRDs change.
    custom: RwLock<Vec<&'static ResourceDef>>,
    /// Bumped on every change of `custom`, so caches derived from the registry (OpenAPI
    /// documents, schemas) know to rebuild.
    generation: AtomicU64,
}

impl Registry {
    /// A registry over a static table.
    pub const fn new(resources: &'static [ResourceDef]) -> Registry {
        Registry {
            resources,
            custom: RwLock::new(Vec::new()),
            generation: AtomicU64::new(0),
        }
    }

    /// Every resource: built-in first, then custom ones.
    pub fn all(&self) -> Vec<&'static ResourceDef> {
        let mut all: Vec<&'static ResourceDef> = self.resources.iter().collect();
        all.extend(self.custom().iter().copied());
        all
    }

    /// The rows of custom resources.
    pub fn custom(&self) -> std::sync::RwLockReadGuard<'_, Vec<&'static ResourceDef>> {
        self.custom.read().unwrap_or_else(|e| e.into_inner())
    }

    /// Replaces the rows of custom resources (what the established CRDs serve).
    pub fn set_custom(&self, defs: Vec<&'static ResourceDef>) {
        let mut custom = self.custom.write().unwrap_or_else(|e| e.into_inner());
        let same = custom.len() == defs.len()
            && custom.iter().zip(&defs).all(|(a, b)| std::ptr::eq(*a, *b));
        if !same {
            *custom = defs;
            self.generation.fetch_add(1, Ordering::SeqCst);
        }
    }

    /// How many times the custom resources changed.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::SeqCst)
    }

    /// The resource served at `group/version/plural`.
    pub fn lookup(&self, group: &str, version: &str, plural: &str) -> Option<&'static ResourceDef> {
        self.find(|d| d.group == group && d.version == version && d.plural == plural)
    }

    /// The resource of a kind.
    pub fn by_kind(&self, group: &str, version: &str, kind: &str) -> Option<&'static ResourceDef> {
        self.find(|d| d.group == group && d.version == version && d.kind == kind)
    }

    fn find(&self, matches: impl Fn(&ResourceDef) -> bool) -> Option<&'static ResourceDef> {
        self.resources
            .iter()
            .find(|d| matches(d))
            .or_else(|| self.custom().iter().copied().find(|d| matches(d)))
    }

    /// The groups (core first as ""), each with its versions, in registration order.
    pub fn groups(&self) -> Vec<(&'static str, Vec<&'static str>)> {
        let mut groups: Vec<(&'static str, Vec<&'static str>)> = Vec::new();
        for def in self.all() {
            match groups.iter_mut().find(|(g, _)| *g == def.group) {
                Some((_, versions)) => {
                    if !versions.contains(&def.version) {
                        versions.push(def.version);
                    }
                }
                None => groups.push((def.group, vec![def.version])),
            }
        }
        groups
    }

    /// The resources of one group version.
    pub fn in_group_version(
        &self,
        group: &str,
        version: &str,
    ) -> impl Iterator<Item = &'static ResourceDef> {
        self.all()
            .into_iter()
            .filter(|d| d.group == group && d.version == version)
            .collect::<Vec<_>>()
            .into_iter()
    }
}
