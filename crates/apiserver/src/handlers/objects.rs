//! The generic resource verbs: get, list, create, update, patch, delete and
//! deletecollection, for every row of the registry (Kubernetes' `genericregistry.Store`
//! plus the decoding and field validation of its REST handlers).

use base64::engine::general_purpose::URL_SAFE_NO_PAD as BASE64;
use base64::Engine;
use hyper::StatusCode;
use serde_json::{json, Value};

use super::{Api, Reply};
use crate::admission::{self, Attributes, Operation};
use crate::authn::UserInfo;
use crate::kinds::str_at;
use crate::patch::{self, PatchType, PATCH_MEDIA_TYPES};
use crate::registry::ResourceDef;
use crate::request::{Query, Representation, RequestInfo};
use crate::selector::{FieldSelector, LabelSelector};
use crate::status::{success_status, ApiError, ApiResult};
use crate::storage::{Storage, REGISTRY_ROOT};
use crate::table::{self, IncludeObject};
use crate::validation::{self, FieldError};

/// The OpenAPI definition of every object's metadata.
const OBJECT_META: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta";

/// The media type of server-side apply patches.
const APPLY_PATCH_YAML: &str = "application/apply-patch+yaml";

/// Responses above this size return the memory freed while building them to the system.
const LARGE_RESPONSE_BYTES: usize = 1 << 20;

/// A large response body that, once sent and dropped, returns free heap memory to the
/// kernel: after a large list the allocator would otherwise keep the pages of the body and
/// of the transient objects encoded into it, and the server's RSS would stay at its peak.
struct ReleasedWhenSent(Vec<u8>);

impl AsRef<[u8]> for ReleasedWhenSent {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

impl Drop for ReleasedWhenSent {
    fn drop(&mut self) {
        drop(std::mem::take(&mut self.0));
        // SAFETY: malloc_trim only releases free memory; it does not touch live allocations.
        unsafe {
            libc::malloc_trim(0);
        }
    }
}

/// How many times a write without a resourceVersion precondition retries a lost
/// compare-and-swap before reporting a conflict. kube-apiserver retries such writes
/// without bound; every lost race means another write landed, so a writer among N
/// concurrent ones succeeds within N attempts, and the bound only stops a livelock.
pub(super) const MAX_RETRIES: usize = 256;

/// Longest a write waits for the server's mirror to apply it (it normally takes well under
/// a millisecond; a mirror that is relisting after a broken watch may take longer).
const MIRROR_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

/// The context of one resource request.
pub(crate) struct Ctx<'a> {
    pub api: &'a Api,
    pub def: &'static ResourceDef,
    pub info: &'a RequestInfo,
    pub query: &'a Query,
    /// Who makes the request (admission plugins and webhooks see it).
    pub user: &'a UserInfo,
    pub representation: Representation,
    /// Who writes: `fieldManager`, else the client's User-Agent up to its first `/`.
    pub manager: String,
}

/// The `fieldValidation` directive.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum FieldValidation {
    Ignore,
    Warn,
    Strict,
}

/// The current time as Kubernetes writes timestamps (RFC 3339, seconds).
pub(crate) fn now_rfc3339() -> String {
    jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}

impl Ctx<'_> {
    fn namespace(&self) -> &str {
        if self.def.namespaced {
            &self.info.namespace
        } else {
            ""
        }
    }

    fn field_validation(&self) -> ApiResult<FieldValidation> {
        match self.query.get("fieldValidation") {
            None | Some("") | Some("Warn") => Ok(FieldValidation::Warn),
            Some("Strict") => Ok(FieldValidation::Strict),
            Some("Ignore") => Ok(FieldValidation::Ignore),
            Some(other) => Err(ApiError::bad_request(format!(
                "fieldValidation parameter unsupported: {other:?}. Supported values: \"Ignore\", \"Warn\", \"Strict\""
            ))),
        }
    }

    fn dry_run(&self) -> ApiResult<bool> {
        match self.query.get("dryRun") {
            None | Some("") => Ok(false),
            Some("All") => Ok(true),
            Some(other) => Err(ApiError::bad_request(format!(
                "Invalid dryRun parameter value: {other:?}: supported values: \"All\""
            ))),
        }
    }

    fn cannot_handle(&self, why: impl std::fmt::Display) -> ApiError {
        ApiError::bad_request(format!(
            "{kind} in version \"{version}\" cannot be handled as a {kind}: {why}",
            kind = self.def.kind,
            version = self.def.version
        ))
    }

    /// Checks unknown fields of `obj` per fieldValidation, then decodes it into the typed
    /// kind and back (pruning unknown fields). Returns the object and any warnings.
    fn decode_checked(&self, obj: Value) -> ApiResult<(Value, Vec<String>)> {
        let warnings = self.check_unknown_fields(&obj)?;
        let mut obj = (self.def.normalize)(obj).map_err(|e| self.cannot_handle(e))?;
        if self.def.custom.is_none() {
            crate::omitted_fields::drop_zero_fields(
                &self.api.schemas(),
                &self.def.definition_name(),
                &mut obj,
            );
        }
        Ok((obj, warnings))
    }

    /// Fails (Strict) or warns (Warn) about fields of `obj` the kind's schema does not know.
    fn check_unknown_fields(&self, obj: &Value) -> ApiResult<Vec<String>> {
        let mode = self.field_validation()?;
        let mut warnings = Vec::new();
        if mode != FieldValidation::Ignore {
            let unknown = match self.def.custom {
                // What pruning would drop, and metadata as ObjectMeta.
                Some(custom) => {
                    let mut unknown = custom.unknown_fields(obj);
                    if let Some(meta) = obj.get("metadata") {
                        unknown.extend(
                            self.api
                                .schemas()
                                .unknown_fields(OBJECT_META, meta)
                                .into_iter()
                                .map(|f| format!("metadata.{f}")),
                        );
                    }
                    unknown
                }
                None => self
                    .api
                    .schemas()
                    .unknown_fields(&self.def.definition_name(), obj),
            };
            let messages: Vec<String> = unknown
                .iter()
                .map(|f| format!("unknown field \"{f}\""))
                .collect();
            if !messages.is_empty() {
                if mode == FieldValidation::Strict {
                    return Err(self
                        .cannot_handle(format!("strict decoding error: {}", messages.join(", "))));
                }
                warnings = messages;
            }
        }
        Ok(warnings)
    }

    /// Parses a request body into an object of this resource's kind.
    fn decode_body(&self, body: &[u8]) -> ApiResult<(Value, Vec<String>)> {
        self.decode_checked(self.parse_body(body)?)
    }

    /// Parses a request body as JSON, checking (or filling in) apiVersion and kind.
    fn parse_body(&self, body: &[u8]) -> ApiResult<Value> {
        let obj: Value = serde_json::from_slice(body).map_err(|e| {
            ApiError::bad_request(format!("couldn't get version/kind; json parse error: {e}"))
        })?;
        let Value::Object(mut map) = obj else {
            return Err(ApiError::bad_request(
                "couldn't get version/kind; json parse error: expected an object",
            ));
        };
        let api_version = self.def.api_version();
        match map.get("apiVersion").and_then(Value::as_str) {
            None | Some("") => {
                map.insert("apiVersion".into(), json!(api_version));
            }
            Some(v) if v == api_version => {}
            Some(v) => {
                return Err(ApiError::bad_request(format!(
                    "the API version in the data ({v}) does not match the expected API version ({api_version})"
                )))
            }
        }
        match map.get("kind").and_then(Value::as_str) {
            None | Some("") => {
                map.insert("kind".into(), json!(self.def.kind));
            }
            Some(k) if k == self.def.kind => {}
            Some(k) => {
                return Err(ApiError::bad_request(format!(
                    "the kind in the data ({k}) does not match the expected kind ({})",
                    self.def.kind
                )))
            }
        }
        Ok(Value::Object(map))
    }

    /// Renders one object in the negotiated representation.
    fn render_one(&self, obj: Value) -> Value {
        match self.representation {
            Representation::Table => {
                let include = IncludeObject::parse(self.query.get("includeObject"));
                let meta = json!({"resourceVersion": str_at(&obj, "/metadata/resourceVersion")});
                self.table(&[obj], include, meta)
            }
            Representation::Metadata => table::partial_metadata(&obj),
            _ => obj,
        }
    }

    pub(crate) fn table(&self, objects: &[Value], include: IncludeObject, meta: Value) -> Value {
        let now = jiff::Timestamp::now();
        let strategy = self.def.strategy;
        table::build(
            &strategy.columns(),
            objects,
            |o| strategy.row(o, now),
            include,
            meta,
        )
    }

    pub(crate) async fn get(&self) -> ApiResult<Reply> {
        let (obj, _) = self.load(&self.info.name).await?;
        Ok(Reply::ok(self.render_one(obj)))
    }

    pub(super) async fn load(&self, name: &str) -> ApiResult<(Value, i64)> {
        self.api
            .storage
            .get(self.def, self.namespace(), name)
            .await?
            .ok_or_else(|| ApiError::not_found(self.def, name))
    }

    /// [`Ctx::load`] for a write based on the stored object: an object stored before
    /// skiff dropped zero values as kube-apiserver does would otherwise differ from every
    /// update of it (and fail immutability checks). Reads skip the walk.
    pub(super) async fn load_for_write(&self, name: &str) -> ApiResult<(Value, i64)> {
        let (mut obj, revision) = self.load(name).await?;
        if self.def.custom.is_none() {
            crate::omitted_fields::drop_zero_fields(
                &self.api.schemas(),
                &self.def.definition_name(),
                &mut obj,
            );
        }
        Ok((obj, revision))
    }

    fn selectors(&self) -> ApiResult<(LabelSelector, FieldSelector)> {
        let labels = LabelSelector::parse(self.query.get("labelSelector").unwrap_or(""))
            .map_err(|e| ApiError::bad_request(e.to_string()))?;
        let fields = FieldSelector::parse(
            self.query.get("fieldSelector").unwrap_or(""),
            self.def.selectable_fields,
        )
        .map_err(|e| ApiError::bad_request(e.to_string()))?;
        Ok((labels, fields))
    }

    /// Reads the matching objects of a list request, honouring limit and continue.
    pub(crate) async fn list_objects(&self) -> ApiResult<(Vec<Value>, i64, Option<ListContinue>)> {
        let mut items = Vec::new();
        let (revision, token) = self
            .list_each(|obj| {
                items.push(obj);
                Ok(())
            })
            .await?;
        Ok((items, revision, token))
    }

    /// Hands each selected object of the requested list to `visit`, reading the store a
    /// page at a time so that only one page is decoded at once; returns the list's revision
    /// and continue token.
    async fn list_each(
        &self,
        mut visit: impl FnMut(Value) -> ApiResult<()>,
    ) -> ApiResult<(i64, Option<ListContinue>)> {
        let (labels, fields) = self.selectors()?;
        // Only an unfiltered list says how many objects follow (`remainingItemCount`).
        let unfiltered = self.query.non_empty("labelSelector").is_none()
            && self.query.non_empty("fieldSelector").is_none();
        let namespace = (!self.info.namespace.is_empty()).then_some(self.info.namespace.as_str());
        let prefix = Storage::prefix(self.def, namespace);
        let limit = self
            .query
            .non_empty("limit")
            .map(|l| {
                l.parse::<usize>()
                    .map_err(|_| ApiError::bad_request(format!("invalid limit {l:?}")))
            })
            .transpose()?
            .filter(|l| *l > 0);
        let mut before = Some(0);
        let (mut revision, mut start) = match self.query.non_empty("continue") {
            Some(token) => {
                let (rv, start, offset) = decode_continue(token, &prefix)?;
                before = offset;
                (Some(rv), Some(start))
            }
            None => {
                let exact = self.query.get("resourceVersionMatch") == Some("Exact");
                let rv = self
                    .query
                    .non_empty("resourceVersion")
                    .filter(|rv| *rv != "0" && exact)
                    .map(parse_resource_version)
                    .transpose()?;
                (rv, None)
            }
        };
        let mut count = 0;
        let chunk = limit.map(|l| l.max(100)).or(Some(500));
        loop {
            let page = match self
                .api
                .storage
                .list(&prefix, revision, chunk, start.as_deref())
                .await
            {
                Ok(page) => page,
                Err(err) if err.code == 410 && self.query.non_empty("continue").is_some() => {
                    return Err(ApiError::expired("The provided continue parameter is too old to display a consistent list result. You can start a new list without the continue parameter, or use the continue token in this response to retrieve the remainder of the results. Continuing with the provided token results in an inconsistent list - objects that were created, modified, or deleted between the time the first chunk was returned and now may show up in the list."));
                }
                Err(err) => return Err(err),
            };
            revision = Some(page.revision);
            let more = page.more;
            let mut items = page.items;
            self.def
                .try_to_served_all(items.iter_mut().map(|(_, obj)| obj))?;
            for (key, obj) in items {
                start = Some(key);
                if labels.matches(&obj) && fields.matches(&obj) {
                    visit(obj)?;
                    count += 1;
                    if limit.is_some_and(|l| count >= l) {
                        let offset = before.map(|b| b + count as u64);
                        let token =
                            encode_continue(page.revision, start.as_deref().unwrap_or(""), offset);
                        // Only hand out a token when something may follow.
                        let has_more = more
                            || !self
                                .is_last_key(&prefix, start.as_deref(), page.revision)
                                .await?;
                        if !has_more {
                            return Ok((page.revision, None));
                        }
                        // Counted now rather than at the list's revision: an estimate, as
                        // Kubernetes documents the field to be.
                        let remaining = match offset.filter(|_| unfiltered) {
                            Some(offset) => Some(
                                self.api
                                    .storage
                                    .count(&prefix)
                                    .await?
                                    .saturating_sub(offset),
                            ),
                            None => None,
                        };
                        return Ok((page.revision, Some(ListContinue { token, remaining })));
                    }
                }
            }
            if !more {
                return Ok((revision.unwrap_or(0), None));
            }
        }
    }

    async fn is_last_key(
        &self,
        prefix: &str,
        after: Option<&str>,
        revision: i64,
    ) -> ApiResult<bool> {
        let page = self
            .api
            .storage
            .list(prefix, Some(revision), Some(1), after)
            .await?;
        Ok(page.items.is_empty())
    }

    pub(crate) async fn list(&self) -> ApiResult<Reply> {
        if self.representation == Representation::Object {
            return self.list_json().await;
        }
        let (items, revision, continue_token) = self.list_objects().await?;
        let meta = list_meta(revision, continue_token);
        let body = match self.representation {
            Representation::Table => {
                let include = IncludeObject::parse(self.query.get("includeObject"));
                self.table(&items, include, meta)
            }
            Representation::Metadata => json!({
                "kind": "PartialObjectMetadataList",
                "apiVersion": "meta.k8s.io/v1",
                "metadata": meta,
                "items": items.iter().map(table::partial_metadata).collect::<Vec<_>>(),
            }),
            _ => json!({
                "kind": self.def.list_kind(),
                "apiVersion": self.def.api_version(),
                "metadata": meta,
                "items": items,
            }),
        };
        Ok(Reply::ok(body))
    }

    /// A list as JSON, encoded while the store is read: memory stays at one page of
    /// decoded objects plus the encoded response, whatever the list's length.
    async fn list_json(&self) -> ApiResult<Reply> {
        let mut out = Vec::with_capacity(16 * 1024);
        out.extend_from_slice(b"{\"kind\":");
        serde_json::to_writer(&mut out, &self.def.list_kind()).map_err(ApiError::internal)?;
        out.extend_from_slice(b",\"apiVersion\":");
        serde_json::to_writer(&mut out, &self.def.api_version()).map_err(ApiError::internal)?;
        out.extend_from_slice(b",\"items\":[");
        let mut first = true;
        let (revision, continue_token) = self
            .list_each(|obj| {
                if !first {
                    out.push(b',');
                }
                first = false;
                serde_json::to_writer(&mut out, &obj).map_err(ApiError::internal)
            })
            .await?;
        let meta = list_meta(revision, continue_token);
        out.extend_from_slice(b"],\"metadata\":");
        serde_json::to_writer(&mut out, &meta).map_err(ApiError::internal)?;
        out.push(b'}');
        if out.len() <= LARGE_RESPONSE_BYTES {
            let body = String::from_utf8(out).map_err(ApiError::internal)?;
            return Ok(Reply::text(body).with_content_type("application/json"));
        }
        // Returned to the system once sent: the response is the largest allocation here.
        let body = bytes::Bytes::from_owner(ReleasedWhenSent(out));
        Ok(Reply {
            status: StatusCode::OK,
            body: super::ReplyBody::Stream(super::full(body)),
            content_type: "application/json".into(),
            warnings: Vec::new(),
        })
    }

    /// Validates the metadata every object has (`ValidateObjectMeta`).
    fn validate_meta(&self, obj: &Value) -> Vec<FieldError> {
        let mut errs = Vec::new();
        let name = str_at(obj, "/metadata/name");
        if name.is_empty() {
            errs.push(FieldError::required(
                "metadata.name",
                "name or generateName is required",
            ));
        } else {
            errs.extend(validation::errors_for(
                "metadata.name",
                name,
                self.def.strategy.validate_name(name),
            ));
        }
        if self.def.namespaced && str_at(obj, "/metadata/namespace").is_empty() {
            errs.push(FieldError::required("metadata.namespace", ""));
        }
        errs.extend(crate::kinds::validate_labels(
            obj.pointer("/metadata/labels"),
            "metadata.labels",
        ));
        if let Some(annotations) = obj
            .pointer("/metadata/annotations")
            .and_then(Value::as_object)
        {
            let mut total = 0;
            for (key, value) in annotations {
                total += key.len() + value.as_str().map_or(0, str::len);
                errs.extend(validation::errors_for(
                    "metadata.annotations",
                    key,
                    validation::qualified_name(key),
                ));
            }
            if total > 256 * 1024 {
                errs.push(FieldError {
                    field: "metadata.annotations".into(),
                    kind: crate::validation::FieldErrorKind::Invalid(json!("")),
                    detail: format!("Too long: must have at most {} bytes", 256 * 1024),
                });
            }
        }
        for (i, finalizer) in crate::kinds::array_at(obj, "/metadata/finalizers")
            .iter()
            .enumerate()
        {
            let f = finalizer.as_str().unwrap_or("");
            errs.extend(validation::errors_for(
                &format!("metadata.finalizers[{i}]"),
                f,
                validation::qualified_name(f),
            ));
        }
        errs
    }

    fn invalid(&self, obj: &Value, errs: &[FieldError]) -> ApiError {
        ApiError::invalid(
            self.def.kind,
            self.def.group,
            str_at(obj, "/metadata/name"),
            errs,
        )
    }

    /// For Services: takes the allocation lock, then fills in the cluster IP and node
    /// ports of `obj` (an update of `old`) from what the stored Services leave free. The
    /// returned guard must live until `obj` is stored.
    async fn allocate_service(
        &self,
        obj: &mut Value,
        old: Option<&Value>,
    ) -> ApiResult<Option<tokio::sync::MutexGuard<'_, ()>>> {
        use crate::kinds::service::allocator;
        if !(self.def.group.is_empty() && self.def.plural == "services") {
            return Ok(None);
        }
        let guard = self.api.services.lock().await;
        let page = self
            .api
            .storage
            .list(&Storage::prefix(self.def, None), None, None, None)
            .await?;
        let me = (self.namespace(), str_at(obj, "/metadata/name"));
        let used = allocator::Allocated::from_services(
            page.items.iter().map(|(_, svc)| svc),
            old.map(|_| me),
        );
        let errs = allocator::allocate(
            obj,
            old,
            self.api.services.ranges(),
            &used,
            &mut rand::thread_rng(),
        );
        if !errs.is_empty() {
            return Err(self.invalid(obj, &errs));
        }
        Ok(Some(guard))
    }

    /// Checks the namespace a new object goes into exists and is not terminating.
    async fn check_namespace(&self, name: &str) -> ApiResult<()> {
        if !self.def.namespaced {
            return Ok(());
        }
        let namespaces = self
            .api
            .registry
            .by_kind("", "v1", "Namespace")
            .ok_or_else(|| ApiError::internal("namespaces are not served"))?;
        // NamespaceLifecycle reads the mirror, and the store only when the namespace is
        // newer than the mirror (as kube-apiserver's live lookup after an informer miss).
        let namespace = match self.api.reflector.get(namespaces, "", self.namespace()) {
            Some(ns) => Some(ns),
            None => self
                .api
                .storage
                .get(namespaces, "", self.namespace())
                .await?
                .map(|(ns, _)| std::sync::Arc::new(ns)),
        };
        match namespace {
            None => Err(ApiError::namespace_not_found(self.namespace())),
            Some(ns) if ns.pointer("/metadata/deletionTimestamp").is_some() => Err(
                ApiError::namespace_terminating(self.def, name, self.namespace()),
            ),
            Some(_) => Ok(()),
        }
    }

    /// What admission plugins know of this request, writing the object `name`.
    fn admission_attributes<'b>(
        &'b self,
        operation: Operation,
        name: &'b str,
        old: Option<&'b Value>,
    ) -> ApiResult<Attributes<'b>> {
        Ok(Attributes {
            operation,
            def: self.def,
            namespace: self.namespace(),
            name,
            subresource: &self.info.subresource,
            user: self.user,
            dry_run: self.dry_run()?,
            old,
        })
    }

    /// Returns once the server's own mirror (RBAC, admission) has applied `written`, when
    /// this resource is mirrored, so that the next request already decides by it.
    async fn settle(&self, written: &Value) {
        if !self.api.reflector.mirrors(self.def) {
            return;
        }
        let revision = str_at(written, "/metadata/resourceVersion")
            .parse()
            .unwrap_or(0);
        if !self
            .api
            .reflector
            .wait_for(self.def, revision, MIRROR_WAIT)
            .await
        {
            tracing::warn!(
                resource = self.def.plural,
                revision,
                "the server's mirror has not caught up with a write"
            );
        }
    }

    pub(crate) async fn create(&self, body: &[u8]) -> ApiResult<Reply> {
        if !self.info.name.is_empty() || !self.info.subresource.is_empty() {
            return Err(ApiError::method_not_supported());
        }
        let (obj, warnings) = self.decode_body(body)?;
        self.create_decoded(obj, warnings, None).await
    }

    /// Creates a decoded object; `applied` carries the managedFields of a server-side apply,
    /// otherwise the creator owns every field it set.
    async fn create_decoded(
        &self,
        mut obj: Value,
        warnings: Vec<String>,
        applied: Option<Value>,
    ) -> ApiResult<Reply> {
        let meta = crate::kinds::object_mut(&mut obj, "metadata");
        if self.def.namespaced {
            match meta.get("namespace").and_then(Value::as_str) {
                None | Some("") => {
                    meta.insert("namespace".into(), json!(self.info.namespace));
                }
                Some(ns) if ns == self.info.namespace => {}
                Some(_) => {
                    return Err(ApiError::bad_request(
                        "the namespace of the provided object does not match the namespace sent on the request",
                    ))
                }
            }
        } else {
            meta.remove("namespace");
        }
        if meta
            .get("resourceVersion")
            .and_then(Value::as_str)
            .is_some_and(|rv| !rv.is_empty())
        {
            return Err(ApiError::bad_request(
                "resourceVersion should not be set on objects to be created",
            ));
        }
        let generate_name = meta
            .get("generateName")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_owned();
        let generated = meta
            .get("name")
            .and_then(Value::as_str)
            .unwrap_or("")
            .is_empty()
            && !generate_name.is_empty();
        if generated {
            meta.insert(
                "name".into(),
                json!(format!("{generate_name}{}", random_suffix())),
            );
        }
        meta.insert("uid".into(), json!(uuid::Uuid::new_v4().to_string()));
        meta.insert("creationTimestamp".into(), json!(now_rfc3339()));
        for transient in [
            "deletionTimestamp",
            "deletionGracePeriodSeconds",
            "selfLink",
            "managedFields",
        ] {
            meta.remove(transient);
        }
        if self.def.generation {
            meta.insert("generation".into(), json!(1));
        } else {
            meta.remove("generation");
        }
        self.def.strategy.prepare_for_create(&mut obj);
        self.def.strategy.set_requester(&mut obj, self.user);
        match applied {
            Some(managed) => {
                obj["metadata"]["managedFields"] = managed;
            }
            None => self.track_create(&mut obj),
        }
        // As kube-apiserver: defaults on decoding, mutating admission, then one validation
        // (BeforeCreate) of what admission made, then validating admission.
        self.def.strategy.default(&mut obj);
        let name = str_at(&obj, "/metadata/name").to_owned();
        self.check_namespace(&name).await?;
        let mut warnings = warnings;
        let attrs = self.admission_attributes(Operation::Create, &name, None)?;
        admission::mutate(self.api, &attrs, &mut obj, &mut warnings).await?;
        // Mutating plugins may have changed anything: default again.
        self.def.strategy.default(&mut obj);
        let mut errs = self.validate_meta(&obj);
        errs.extend(self.def.strategy.validate(&obj));
        if !errs.is_empty() {
            return Err(self.invalid(&obj, &errs));
        }
        admission::validate(self.api, &attrs, &obj, &mut warnings).await?;
        // Held until the Service is stored, so no other create takes its address.
        let _allocation = self.allocate_service(&mut obj, None).await?;
        if self.dry_run()? {
            self.def.through_storage(&mut obj);
            return Ok(Reply::json(StatusCode::CREATED, obj).with_warnings(warnings));
        }
        // A generated name that is already taken gets another suffix, as kube-apiserver's
        // RetryGenerateName does (27^5 suffixes collide within thousands of objects).
        let mut name = name;
        let mut attempts = 0;
        let (created, encoded) = loop {
            // Only a generated name may need the object again.
            let retry = (generated && attempts < 7).then(|| obj.clone());
            match self
                .api
                .storage
                .create_encoded(self.def, self.namespace(), &name, obj)
                .await
            {
                Err(err) if err.reason == "AlreadyExists" && retry.is_some() => {
                    attempts += 1;
                    name = format!("{generate_name}{}", random_suffix());
                    obj = retry.expect("kept for a retry");
                    obj["metadata"]["name"] = json!(name);
                }
                result => break result?,
            }
        };
        self.settle(&created).await;
        let Some(encoded) = encoded else {
            return Ok(Reply::json(StatusCode::CREATED, created).with_warnings(warnings));
        };
        // The stored bytes with the resourceVersion: the same JSON, not encoded again.
        Ok(Reply {
            status: StatusCode::CREATED,
            body: super::ReplyBody::Stream(super::full(encoded)),
            content_type: "application/json".into(),
            warnings,
        })
    }

    pub(crate) async fn update(&self, body: &[u8]) -> ApiResult<Reply> {
        let (obj, warnings) = self.decode_body(body)?;
        let name = str_at(&obj, "/metadata/name");
        if name != self.info.name {
            return Err(ApiError::bad_request(format!(
                "the name of the object ({name}) does not match the name on the URL ({})",
                self.info.name
            )));
        }
        if self.def.namespaced {
            let ns = str_at(&obj, "/metadata/namespace");
            if !ns.is_empty() && ns != self.info.namespace {
                return Err(ApiError::bad_request(
                    "the namespace of the provided object does not match the namespace sent on the request",
                ));
            }
        }
        let precondition = str_at(&obj, "/metadata/resourceVersion").to_owned();
        for _ in 0..MAX_RETRIES {
            let (old, revision) = self.load_for_write(&self.info.name).await?;
            if !precondition.is_empty() && precondition != revision.to_string() {
                return Err(ApiError::stale(self.def, &self.info.name));
            }
            match self.write_update(old, revision, obj.clone(), false).await {
                Err(err)
                    if err.code == 409 && err.reason == "Conflict" && precondition.is_empty() =>
                {
                    continue
                }
                result => return result.map(|r| r.with_warnings(warnings)),
            }
        }
        Err(ApiError::stale(self.def, &self.info.name))
    }

    pub(crate) async fn patch(&self, body: &[u8], content_type: &str) -> ApiResult<Reply> {
        if content_type.split(';').next().unwrap_or("").trim() == APPLY_PATCH_YAML {
            return self.apply_patch(body).await;
        }
        let kind = PatchType::from_content_type(content_type)
            // Custom resources have no patch strategies to merge lists by.
            .filter(|k| self.def.custom.is_none() || *k != PatchType::StrategicMerge)
            .ok_or_else(|| {
                let accepted: &[&str] = if self.def.custom.is_some() {
                    &[
                        "application/json-patch+json",
                        "application/merge-patch+json",
                        APPLY_PATCH_YAML,
                    ]
                } else {
                    PATCH_MEDIA_TYPES
                };
                ApiError::unsupported_media_type(content_type, accepted)
            })?;
        for _ in 0..MAX_RETRIES {
            let (old, revision) = self.load_for_write(&self.info.name).await?;
            let patched = patch::apply(
                kind,
                &old,
                body,
                &self.api.schemas(),
                &self.def.definition_name(),
            )
            .map_err(|e| match e {
                patch::PatchError::Malformed(m) => ApiError::bad_request(m),
                patch::PatchError::Apply(m) => ApiError {
                    code: 422,
                    reason: "Invalid",
                    message: m,
                    details: None,
                },
            })?;
            let precondition = str_at(&patched, "/metadata/resourceVersion").to_owned();
            if !precondition.is_empty() && precondition != revision.to_string() {
                return Err(ApiError::stale(self.def, &self.info.name));
            }
            let (patched, warnings) = self.decode_checked(patched)?;
            if str_at(&patched, "/metadata/name") != self.info.name {
                return Err(self.invalid(
                    &old,
                    &[FieldError::invalid(
                        "metadata.name",
                        json!(str_at(&patched, "/metadata/name")),
                        "field is immutable",
                    )],
                ));
            }
            // A lost compare-and-swap retries: the patch is applied again to the newer
            // object, and a resourceVersion the patch itself named no longer matches then.
            // (The patched object always carries the version it was applied to.)
            match self.write_update(old, revision, patched, false).await {
                Err(err) if err.code == 409 && err.reason == "Conflict" => continue,
                result => return result.map(|r| r.with_warnings(warnings)),
            }
        }
        Err(ApiError::stale(self.def, &self.info.name))
    }

    /// Records the fields this request's manager changed in `new`'s managedFields.
    fn track_update(&self, old: &Value, new: &mut Value) {
        crate::apply::track_update(
            old,
            new,
            &crate::apply::UpdateRequest {
                manager: &self.manager,
                api_version: &self.def.api_version(),
                subresource: &self.info.subresource,
                root: &self.def.definition_name(),
                without_status: self.def.status_subresource,
                now: &now_rfc3339(),
            },
            &self.api.schemas(),
        );
    }

    /// Records that this request's manager set every field of the created `new`.
    fn track_create(&self, new: &mut Value) {
        crate::apply::track_create(
            new,
            &crate::apply::UpdateRequest {
                manager: &self.manager,
                api_version: &self.def.api_version(),
                subresource: "",
                root: &self.def.definition_name(),
                without_status: self.def.status_subresource,
                now: &now_rfc3339(),
            },
            &self.api.schemas(),
        );
    }

    /// PATCH with `application/apply-patch+yaml`: server-side apply, creating the object
    /// when it does not exist.
    async fn apply_patch(&self, body: &[u8]) -> ApiResult<Reply> {
        let Some(manager) = self.query.non_empty("fieldManager") else {
            return Err(ApiError::invalid(
                "PatchOptions",
                "meta.k8s.io",
                "",
                &[FieldError::required(
                    "fieldManager",
                    "is required for apply patch",
                )],
            ));
        };
        let force = match self.query.non_empty("force") {
            None | Some("false") => false,
            Some("true") => true,
            Some(other) => return Err(ApiError::bad_request(format!("invalid force {other:?}"))),
        };
        // kubectl sends apply configurations as JSON, which is YAML too.
        let applied = self.parse_body(body)?;
        // Not normalized: defaults of the typed kind would claim fields the applier never set.
        let warnings = self.check_unknown_fields(&applied)?;
        if str_at(&applied, "/metadata/name") != self.info.name {
            return Err(ApiError::bad_request(format!(
                "the name of the object ({}) does not match the name on the URL ({})",
                str_at(&applied, "/metadata/name"),
                self.info.name
            )));
        }
        let api_version = self.def.api_version();
        let root = self.def.definition_name();
        let now = now_rfc3339();
        let request = crate::apply::ApplyRequest {
            manager,
            force,
            api_version: &api_version,
            root: &root,
            without_status: self.def.status_subresource,
            now: &now,
        };
        let conflict = |c: crate::apply::Conflicts| {
            let causes: Vec<Value> = c
                .0
                .iter()
                .map(|(m, path)| json!({"reason": "FieldManagerConflict", "message": format!("conflict with {m}"), "field": crate::apply::display_path(path)}))
                .collect();
            ApiError::new(409, "Conflict", c.message()).with_details(json!({"causes": causes}))
        };
        for _ in 0..MAX_RETRIES {
            let (live, revision) = match self.load_for_write(&self.info.name).await {
                Ok(found) => found,
                Err(err) if err.code == 404 => {
                    let created =
                        crate::apply::apply(&json!({}), &applied, &request, &self.api.schemas())
                            .map_err(conflict)?;
                    let managed = created.pointer("/metadata/managedFields").cloned();
                    let (created, _) = self.decode_checked(created)?;
                    return match self
                        .create_decoded(created, warnings.clone(), managed)
                        .await
                    {
                        Err(err) if err.reason == "AlreadyExists" => continue,
                        result => result,
                    };
                }
                Err(err) => return Err(err),
            };
            let merged = crate::apply::apply(&live, &applied, &request, &self.api.schemas())
                .map_err(conflict)?;
            let (merged, _) = self.decode_checked(merged)?;
            match self.write_update(live, revision, merged, true).await {
                Err(err)
                    if err.code == 409
                        && err.reason == "Conflict"
                        && err.details.as_ref().and_then(|d| d.get("causes")).is_none() =>
                {
                    continue
                }
                result => return result.map(|r| r.with_warnings(warnings)),
            }
        }
        Err(ApiError::stale(self.def, &self.info.name))
    }

    /// The shared tail of update and patch: merges what the endpoint may change into the
    /// stored object, defaults, validates, bumps generation and writes with CAS.
    /// `tracked`: `new` carries the managedFields of a server-side apply.
    async fn write_update(
        &self,
        old: Value,
        revision: i64,
        new: Value,
        tracked: bool,
    ) -> ApiResult<Reply> {
        // `approval` (CertificateSigningRequests) writes status conditions like `status`.
        let status_endpoint = matches!(self.info.subresource.as_str(), "status" | "approval");
        // `ephemeralcontainers` (pods) changes spec.ephemeralContainers alone.
        let subresource_endpoint =
            status_endpoint || self.info.subresource.as_str() == "ephemeralcontainers";
        let mut obj = self.endpoint_changes(&old, new, status_endpoint);
        if subresource_endpoint {
            self.def
                .strategy
                .prepare_for_subresource(&self.info.subresource, &old, &mut obj);
        }
        // Fields of metadata the system owns.
        let old_meta = old.get("metadata").cloned().unwrap_or_default();
        let meta = crate::kinds::object_mut(&mut obj, "metadata");
        for owned in [
            "uid",
            "creationTimestamp",
            "deletionTimestamp",
            "deletionGracePeriodSeconds",
            "generation",
            "namespace",
            "name",
        ] {
            match old_meta.get(owned) {
                Some(v) => {
                    meta.insert(owned.into(), v.clone());
                }
                None => {
                    meta.remove(owned);
                }
            }
        }
        meta.insert("resourceVersion".into(), json!(revision.to_string()));
        // An apply brings its own managedFields; so does a client that changed them (as
        // kubectl does migrating client-side apply ownership), an empty list keeps the old
        // ones. The update itself is recorded below.
        let incoming = meta.remove("managedFields").filter(|m| {
            tracked
                || (m.as_array().is_some_and(|a| !a.is_empty())
                    && Some(m) != old_meta.get("managedFields"))
        });
        if let Some(managed) = incoming.as_ref().or(old_meta.get("managedFields")) {
            meta.insert("managedFields".into(), managed.clone());
        }
        if self.info.subresource.is_empty() {
            self.def.strategy.prepare_for_update(&old, &mut obj);
        }
        self.def.strategy.default(&mut obj);
        let mut warnings = Vec::new();
        let name = self.info.name.clone();
        let attrs = self.admission_attributes(Operation::Update, &name, Some(&old))?;
        admission::mutate(self.api, &attrs, &mut obj, &mut warnings).await?;
        self.def.strategy.default(&mut obj);

        // Held until the Service is stored (see create).
        let _allocation = match status_endpoint {
            false => self.allocate_service(&mut obj, Some(&old)).await?,
            true => None,
        };
        let mut errs = self.validate_meta(&obj);
        errs.extend(self.def.strategy.validate(&obj));
        if !status_endpoint {
            errs.extend(self.def.strategy.validate_update(&obj, &old));
        }
        if !errs.is_empty() {
            return Err(self.invalid(&obj, &errs));
        }
        if self.def.generation && spec_of(&obj) != spec_of(&old) {
            let generation = old
                .pointer("/metadata/generation")
                .and_then(Value::as_i64)
                .unwrap_or(0)
                + 1;
            obj["metadata"]["generation"] = json!(generation);
        }
        if obj == old {
            // Nothing changed: no write, no watch event (as Kubernetes' GuaranteedUpdate).
            return Ok(Reply::ok(self.render_one(obj)).with_warnings(warnings));
        }
        admission::validate(self.api, &attrs, &obj, &mut warnings).await?;
        if !tracked {
            let mut base = old.clone();
            base["metadata"]["managedFields"] = obj
                .pointer("/metadata/managedFields")
                .cloned()
                .unwrap_or(Value::Null);
            self.track_update(&base, &mut obj);
        }
        if self.dry_run()? {
            self.def.through_storage(&mut obj);
            return Ok(Reply::ok(obj).with_warnings(warnings));
        }
        // Removing the last finalizer of an object being deleted completes the deletion.
        if obj.pointer("/metadata/deletionTimestamp").is_some()
            && crate::kinds::array_at(&obj, "/metadata/finalizers").is_empty()
            && self.def.strategy.graceful_delete(&obj, None).is_none()
        {
            let updated = self
                .api
                .storage
                .update(self.def, self.namespace(), &name, obj, revision)
                .await?;
            let revision = str_at(&updated, "/metadata/resourceVersion")
                .parse()
                .unwrap_or(0);
            let deleted = self
                .api
                .storage
                .delete(self.def, self.namespace(), &name, revision)
                .await?;
            self.settle(&deleted).await;
            return Ok(Reply::ok(updated).with_warnings(warnings));
        }
        let updated = self
            .api
            .storage
            .update(self.def, self.namespace(), &name, obj, revision)
            .await?;
        self.settle(&updated).await;
        Ok(Reply::ok(updated).with_warnings(warnings))
    }

    /// What of `new` an update through this endpoint keeps over `old`: the status endpoint
    /// changes only status (ResetObjectMetaForStatus and friends), the main resource all but
    /// status when there is a status subresource. Split in the storage version, since a
    /// served one may carry part of the status elsewhere (autoscaling/v1's conditions are
    /// annotations).
    fn endpoint_changes(&self, old: &Value, new: Value, status_endpoint: bool) -> Value {
        if !status_endpoint && !self.def.status_subresource {
            return new;
        }
        let (mut old, mut new) = (old.clone(), new);
        self.def.to_stored(&mut old);
        self.def.to_stored(&mut new);
        let mut obj = if status_endpoint {
            let mut obj = old;
            obj["status"] = new.get("status").cloned().unwrap_or(Value::Null);
            if self.def.strategy.status_writes_metadata() {
                for field in ["labels", "annotations"] {
                    let meta = crate::kinds::object_mut(&mut obj, "metadata");
                    match new.pointer(&format!("/metadata/{field}")) {
                        Some(v) => meta.insert(field.into(), v.clone()),
                        None => meta.remove(field),
                    };
                }
            }
            obj
        } else {
            let mut obj = new;
            match old.get("status") {
                Some(status) => obj["status"] = status.clone(),
                None => {
                    if let Some(o) = obj.as_object_mut() {
                        o.remove("status");
                    }
                }
            }
            obj
        };
        self.def.to_served(&mut obj);
        obj
    }

    /// Writes `new` over `old` as an update of the main resource would (defaulting,
    /// validation, generation) and returns the stored object.
    pub(super) async fn write_spec(
        &self,
        old: Value,
        revision: i64,
        new: Value,
    ) -> ApiResult<Value> {
        let reply = self.write_update(old, revision, new, false).await?;
        match reply.body {
            super::ReplyBody::Json(v) => Ok(v),
            _ => Err(ApiError::internal("update returned no object")),
        }
    }

    fn delete_options(&self, body: &[u8]) -> ApiResult<Value> {
        let mut options: Value = if body.iter().all(u8::is_ascii_whitespace) {
            json!({})
        } else {
            serde_json::from_slice(body)
                .map_err(|e| ApiError::bad_request(format!("couldn't decode DeleteOptions: {e}")))?
        };
        if let Some(grace) = self.query.non_empty("gracePeriodSeconds") {
            let grace: i64 = grace.parse().map_err(|_| {
                ApiError::bad_request(format!("invalid gracePeriodSeconds {grace:?}"))
            })?;
            options["gracePeriodSeconds"] = json!(grace);
        }
        if let Some(policy) = self.query.non_empty("propagationPolicy") {
            options["propagationPolicy"] = json!(policy);
        }
        if let Some(orphan) = self.query.non_empty("orphanDependents") {
            let orphan: bool = orphan.parse().map_err(|_| {
                ApiError::bad_request(format!("invalid orphanDependents {orphan:?}"))
            })?;
            options["orphanDependents"] = json!(orphan);
        }
        // ValidateDeleteOptions.
        let mut errs = Vec::new();
        let policy = options.get("propagationPolicy").and_then(Value::as_str);
        if let Some(policy) = policy {
            if options
                .get("orphanDependents")
                .is_some_and(Value::is_boolean)
            {
                errs.push(FieldError::invalid(
                    "propagationPolicy",
                    json!(policy),
                    "orphanDependents and deletionPropagation cannot be both set",
                ));
            }
            if !["Orphan", "Background", "Foreground"].contains(&policy) {
                errs.push(FieldError::not_supported(
                    "propagationPolicy",
                    json!(policy),
                    &["Foreground", "Background", "Orphan", "nil"],
                ));
            }
        }
        if !errs.is_empty() {
            return Err(ApiError::invalid("DeleteOptions", "meta.k8s.io", "", &errs));
        }
        Ok(options)
    }

    pub(crate) async fn delete(&self, body: &[u8]) -> ApiResult<Reply> {
        let options = self.delete_options(body)?;
        let name = self.info.name.clone();
        let (status, obj) = self.delete_one(&name, &options).await?;
        Ok(Reply::json(status, obj))
    }

    /// Deletes (or marks for deletion) one object; returns the HTTP status and body.
    pub(super) async fn delete_one(
        &self,
        name: &str,
        options: &Value,
    ) -> ApiResult<(StatusCode, Value)> {
        let dry_run = self.dry_run()?;
        for _ in 0..MAX_RETRIES {
            let (obj, revision) = self.load(name).await?;
            if let Some(uid) = options
                .pointer("/preconditions/uid")
                .and_then(Value::as_str)
            {
                let actual = str_at(&obj, "/metadata/uid");
                if uid != actual {
                    return Err(ApiError::conflict(self.def, name, &format!(
                        "Precondition failed: UID in precondition: {uid}, UID in object meta: {actual}"
                    )));
                }
            }
            if let Some(rv) = options
                .pointer("/preconditions/resourceVersion")
                .and_then(Value::as_str)
            {
                if rv != revision.to_string() {
                    return Err(ApiError::conflict(self.def, name, &format!(
                        "Precondition failed: ResourceVersion in precondition: {rv}, ResourceVersion in object meta: {revision}"
                    )));
                }
            }
            if obj.pointer("/metadata/deletionTimestamp").is_none() {
                let attrs = self.admission_attributes(Operation::Delete, name, Some(&obj))?;
                admission::validate(self.api, &attrs, &obj, &mut Vec::new()).await?;
            }
            let grace = options.get("gracePeriodSeconds").and_then(Value::as_i64);
            let finalizers = gc_finalizers(&obj, options);
            let graceful = self.def.strategy.graceful_delete(&obj, grace);
            let finalizing = finalizers.as_ref().map_or_else(
                || !crate::kinds::array_at(&obj, "/metadata/finalizers").is_empty(),
                |f| !f.is_empty(),
            );
            if finalizing || graceful.is_some() {
                // Only mark: finalizers (or the kubelet) complete the deletion later.
                let marking = obj.pointer("/metadata/deletionTimestamp").is_none();
                if !marking && finalizers.is_none() {
                    return Ok((StatusCode::ACCEPTED, obj));
                }
                let mut marked = obj.clone();
                if let Some(finalizers) = finalizers {
                    marked["metadata"]["finalizers"] = json!(finalizers);
                }
                if marking {
                    let grace = graceful.unwrap_or(0);
                    let at = jiff::Timestamp::now() + jiff::SignedDuration::from_secs(grace);
                    marked["metadata"]["deletionTimestamp"] =
                        json!(at.strftime("%Y-%m-%dT%H:%M:%SZ").to_string());
                    marked["metadata"]["deletionGracePeriodSeconds"] = json!(grace);
                    self.def.strategy.on_mark_deleted(&mut marked);
                }
                if dry_run {
                    return Ok((StatusCode::ACCEPTED, marked));
                }
                match self
                    .api
                    .storage
                    .update(self.def, self.namespace(), name, marked, revision)
                    .await
                {
                    Ok(updated) => {
                        self.settle(&updated).await;
                        return Ok((StatusCode::ACCEPTED, updated));
                    }
                    Err(err) if err.reason == "Conflict" => continue,
                    Err(err) => return Err(err),
                }
            }
            if dry_run {
                return Ok((StatusCode::OK, obj));
            }
            match self
                .api
                .storage
                .delete(self.def, self.namespace(), name, revision)
                .await
            {
                Ok(deleted) => {
                    self.settle(&deleted).await;
                    let body = if self.def.delete_returns_object {
                        deleted
                    } else {
                        success_status(self.def, name, str_at(&deleted, "/metadata/uid"))
                    };
                    return Ok((StatusCode::OK, body));
                }
                Err(err) if err.reason == "Conflict" => continue,
                Err(err) => return Err(err),
            }
        }
        Err(ApiError::stale(self.def, name))
    }

    pub(crate) async fn delete_collection(&self, body: &[u8]) -> ApiResult<Reply> {
        let options = self.delete_options(body)?;
        let (items, revision, _) = self.list_objects().await?;
        let mut deleted = Vec::new();
        for item in items {
            let name = str_at(&item, "/metadata/name").to_owned();
            let ctx = Ctx {
                api: self.api,
                def: self.def,
                info: &RequestInfo {
                    namespace: str_at(&item, "/metadata/namespace").to_owned(),
                    ..self.info.clone()
                },
                query: self.query,
                user: self.user,
                representation: Representation::Object,
                manager: self.manager.clone(),
            };
            match ctx.delete_one(&name, &options).await {
                Ok((_, obj)) => deleted.push(obj),
                Err(err) if err.code == 404 => {}
                Err(err) => return Err(err),
            }
        }
        Ok(Reply::ok(json!({
            "kind": self.def.list_kind(),
            "apiVersion": self.def.api_version(),
            "metadata": {"resourceVersion": revision.to_string()},
            "items": deleted,
        })))
    }
}

/// The finalizer the garbage collector removes once it has deleted an object's dependents.
const FOREGROUND_DELETION: &str = "foregroundDeletion";
/// The finalizer the garbage collector removes once it has orphaned an object's dependents.
const ORPHAN: &str = "orphan";

/// The finalizers an object gets when deleted with `options`, or `None` when they stay as
/// they are: the delete's propagation policy (or the deprecated `orphanDependents`), else
/// the policy an earlier delete left in the finalizers, picks `orphan`, `foregroundDeletion`
/// or neither (Kubernetes' `deletionFinalizersForGarbageCollection`).
fn gc_finalizers(obj: &Value, options: &Value) -> Option<Vec<Value>> {
    let current = crate::kinds::array_at(obj, "/metadata/finalizers");
    let requested = match (
        options.get("orphanDependents").and_then(Value::as_bool),
        options.get("propagationPolicy").and_then(Value::as_str),
    ) {
        (Some(true), _) => Some(ORPHAN),
        (Some(false), _) => Some(""),
        (None, Some("Orphan")) => Some(ORPHAN),
        (None, Some("Foreground")) => Some(FOREGROUND_DELETION),
        (None, Some(_)) => Some(""),
        (None, None) => None,
    };
    let policy = requested.or_else(|| {
        current
            .iter()
            .filter_map(Value::as_str)
            .find(|f| [ORPHAN, FOREGROUND_DELETION].contains(f))
    })?;
    let mut wanted: Vec<Value> = current
        .iter()
        .filter(|f| ![ORPHAN, FOREGROUND_DELETION].contains(&f.as_str().unwrap_or("")))
        .cloned()
        .collect();
    if !policy.is_empty() {
        wanted.push(json!(policy));
    }
    let same = wanted.len() == current.len() && wanted.iter().all(|f| current.contains(f));
    (!same).then_some(wanted)
}

/// Everything but metadata and status: what bumps generation when it changes.
fn spec_of(obj: &Value) -> Value {
    let mut obj = obj.clone();
    if let Some(map) = obj.as_object_mut() {
        map.remove("metadata");
        map.remove("status");
    }
    obj
}

/// Parses a resourceVersion query value.
pub(crate) fn parse_resource_version(rv: &str) -> ApiResult<i64> {
    rv.parse::<i64>()
        .ok()
        .filter(|v| *v >= 0)
        .ok_or_else(|| ApiError::bad_request(format!("invalid resource version: {rv}")))
}

/// `generateName` suffixes: five characters without vowels or look-alikes, as Kubernetes'
/// `utilrand.String`.
pub(crate) fn random_suffix() -> String {
    use rand::Rng;
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let mut rng = rand::thread_rng();
    (0..5)
        .map(|_| ALPHABET[rng.gen_range(0..ALPHABET.len())] as char)
        .collect()
}

/// Where a limited list stopped.
pub(crate) struct ListContinue {
    /// The `continue` token.
    token: String,
    /// How many objects follow, for a list without selectors (`remainingItemCount`).
    remaining: Option<u64>,
}

/// A list's `metadata`.
fn list_meta(revision: i64, cont: Option<ListContinue>) -> Value {
    let mut meta = json!({"resourceVersion": revision.to_string()});
    if let Some(cont) = cont {
        meta["continue"] = json!(cont.token);
        if let Some(remaining) = cont.remaining {
            meta["remainingItemCount"] = json!(remaining);
        }
    }
    meta
}

/// The continue token: the list's revision, the last key returned and, for the
/// `remainingItemCount` of the next page, how many objects were returned up to it.
fn encode_continue(revision: i64, last_key: &str, offset: Option<u64>) -> String {
    let start = last_key.strip_prefix(REGISTRY_ROOT).unwrap_or(last_key);
    let mut token = json!({"v": "meta.k8s.io/v1", "rv": revision, "start": start});
    if let Some(offset) = offset {
        token["n"] = json!(offset);
    }
    BASE64.encode(token.to_string())
}

fn decode_continue(token: &str, prefix: &str) -> ApiResult<(i64, String, Option<u64>)> {
    let invalid = || {
        ApiError::bad_request("continue key is not valid: incorrect encoded start resourceVersion (version meta.k8s.io/v1)")
    };
    let bytes = BASE64
        .decode(token.trim_end_matches('='))
        .map_err(|_| invalid())?;
    let value: Value = serde_json::from_slice(&bytes).map_err(|_| invalid())?;
    let rv = value
        .get("rv")
        .and_then(Value::as_i64)
        .ok_or_else(invalid)?;
    let start = format!(
        "{REGISTRY_ROOT}{}",
        value
            .get("start")
            .and_then(Value::as_str)
            .ok_or_else(invalid)?
    );
    if !start.starts_with(prefix) {
        return Err(invalid());
    }
    Ok((rv, start, value.get("n").and_then(Value::as_u64)))
}
