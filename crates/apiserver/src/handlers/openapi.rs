//! OpenAPI: `/openapi/v2` (JSON only; client-go asks for it in protobuf, which skiff does not
//! serve, and falls back to v3) and `/openapi/v3`, an index of per group-version documents.
//!
//! Each PATCH operation carries `x-kubernetes-group-version-kind` and the `fieldValidation`
//! parameter: that is how kubectl decides the server validates fields itself, instead of
//! validating client-side. The schemas carry the GVK and patch extensions `kubectl explain`
//! and `kubectl apply` read.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde_json::{json, Map, Value};
use sha2::{Digest, Sha256};

use super::{Api, Reply, ReplyBody, KUBERNETES_MINOR};
use crate::protobuf;
use crate::registry::ResourceDef;
use crate::schema::{closure, rewrite_refs, REF_PREFIX};
use crate::status::{ApiError, ApiResult};

/// The generated documents, built on first request.
pub(super) struct Documents {
    v2: Vec<u8>,
    /// Per group-version path (`api/v1`, `apis/apps/v1`): the document and its hash.
    v3: BTreeMap<String, (Vec<u8>, String)>,
}

/// The documents of the registry's current generation, built again when CRDs change.
fn documents(api: &Api) -> Arc<Documents> {
    let generation = api.registry.generation();
    let mut cached = api.openapi.lock().unwrap_or_else(|e| e.into_inner());
    match cached.as_ref() {
        Some((g, documents)) if *g == generation => documents.clone(),
        _ => {
            let documents = Arc::new(build(api));
            *cached = Some((generation, documents.clone()));
            documents
        }
    }
}

/// `/openapi/v2`.
pub(super) fn v2(api: &Api, accept: Option<&str>) -> ApiResult<Reply> {
    let wants_protobuf = accept.is_some_and(|a| {
        a.split(',')
            .any(|r| r.split(';').next().unwrap_or("").trim() == protobuf::OPENAPI_V2_PROTOBUF)
    });
    if wants_protobuf {
        let doc: Value = serde_json::from_slice(&documents(api).v2).map_err(ApiError::internal)?;
        return Ok(Reply {
            status: hyper::StatusCode::OK,
            body: ReplyBody::Stream(super::full(protobuf::openapi_v2_document(&doc))),
            content_type: protobuf::OPENAPI_V2_PROTOBUF_RESPONSE.into(),
            warnings: Vec::new(),
        });
    }
    let json_ok = accept.is_none_or(|a| {
        a.split(',').any(|r| {
            let essence = r.split(';').next().unwrap_or("").trim();
            matches!(essence, "application/json" | "*/*" | "application/*" | "")
        })
    });
    if !json_ok {
        return Err(ApiError::not_acceptable());
    }
    let doc: Value = serde_json::from_slice(&documents(api).v2).map_err(ApiError::internal)?;
    Ok(Reply::ok(doc))
}

/// `/openapi/v3`: the index of group-version documents.
pub(super) fn v3_index(api: &Api) -> Reply {
    let paths: Map<String, Value> = documents(api)
        .v3
        .iter()
        .map(|(path, (_, hash))| {
            (
                path.clone(),
                json!({"serverRelativeURL": format!("/openapi/v3/{path}?hash={hash}")}),
            )
        })
        .collect();
    Reply::ok(json!({"paths": paths}))
}

/// `/openapi/v3/<api/v1 | apis/group/version>`.
pub(super) fn v3_group_version(api: &Api, path: &str) -> ApiResult<Reply> {
    let documents = documents(api);
    let (doc, _) = documents
        .v3
        .get(path)
        .ok_or_else(ApiError::path_not_found)?;
    let doc: Value = serde_json::from_slice(doc).map_err(ApiError::internal)?;
    Ok(Reply::ok(doc))
}

fn build(api: &Api) -> Documents {
    let schemas = &*api.schemas();
    let info = json!({"title": "Kubernetes", "version": format!("v1.{KUBERNETES_MINOR}.0")});

    let mut v2_paths = Map::new();
    for def in api.registry.all() {
        for (path, item) in paths_for(def, false) {
            v2_paths.insert(path, item);
        }
    }
    let definitions: Map<String, Value> = schemas
        .definitions()
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let v2 = json!({
        "swagger": "2.0",
        "info": info,
        "paths": v2_paths,
        "definitions": definitions,
        "securityDefinitions": {"BearerToken": {"type": "apiKey", "name": "authorization", "in": "header"}},
        "security": [{"BearerToken": []}],
    });

    let mut v3 = BTreeMap::new();
    for (group, versions) in api.registry.groups() {
        for version in versions {
            let defs: Vec<&ResourceDef> = api.registry.in_group_version(group, version).collect();
            let mut paths = Map::new();
            let mut roots = vec![
                "io.k8s.apimachinery.pkg.apis.meta.v1.Status".to_owned(),
                "io.k8s.apimachinery.pkg.apis.meta.v1.DeleteOptions".to_owned(),
                "io.k8s.apimachinery.pkg.apis.meta.v1.Patch".to_owned(),
            ];
            for def in &defs {
                for (path, item) in paths_for(def, true) {
                    paths.insert(path, item);
                }
                roots.push(def.definition_name());
                roots.push(format!("{}List", def.definition_name()));
            }
            let mut components = Value::Object(closure(schemas, roots));
            rewrite_refs(&mut components, "#/components/schemas/");
            let doc = json!({
                "openapi": "3.0.0",
                "info": info,
                "paths": paths,
                "components": {
                    "schemas": components,
                    "securitySchemes": {"BearerToken": {"type": "apiKey", "name": "authorization", "in": "header"}},
                },
                "security": [{"BearerToken": []}],
            });
            let bytes = serde_json::to_vec(&doc).unwrap_or_default();
            let hash = hex::encode_upper(Sha256::digest(&bytes));
            let key = if group.is_empty() {
                format!("api/{version}")
            } else {
                format!("apis/{group}/{version}")
            };
            v3.insert(key, (bytes, hash));
        }
    }
    Documents {
        v2: serde_json::to_vec(&v2).unwrap_or_default(),
        v3,
    }
}

/// The paths of one resource, with their operations.
fn paths_for(def: &ResourceDef, v3: bool) -> Vec<(String, Value)> {
    let root = if def.group.is_empty() {
        format!("/api/{}", def.version)
    } else {
        format!("/apis/{}/{}", def.group, def.version)
    };
    let scope = if def.namespaced {
        format!("{root}/namespaces/{{namespace}}/{}", def.plural)
    } else {
        format!("{root}/{}", def.plural)
    };
    let schema = def.definition_name();
    let list_schema = format!("{schema}List");
    let op = OperationBuilder { def, v3 };
    let namespaced = if def.namespaced { "Namespaced" } else { "" };
    let mut out = Vec::new();

    let mut collection = Map::new();
    collection.insert(
        "get".into(),
        op.build(
            "list",
            &format!("list{namespaced}"),
            None,
            &list_schema,
            LIST_PARAMS,
        ),
    );
    collection.insert(
        "post".into(),
        op.build(
            "post",
            &format!("create{namespaced}"),
            Some(("*/*", &schema)),
            &schema,
            WRITE_PARAMS,
        ),
    );
    collection.insert(
        "delete".into(),
        op.build(
            "deletecollection",
            &format!("deleteCollection{namespaced}"),
            Some(("*/*", "io.k8s.apimachinery.pkg.apis.meta.v1.DeleteOptions")),
            "io.k8s.apimachinery.pkg.apis.meta.v1.Status",
            LIST_PARAMS,
        ),
    );
    collection.insert("parameters".into(), json!(op.path_params(false)));
    out.push((scope.clone(), Value::Object(collection)));

    let item_ops = |suffix: &str, what: &str| {
        let mut item = Map::new();
        item.insert(
            "get".into(),
            op.build(
                "get",
                &format!("read{namespaced}{what}"),
                None,
                &schema,
                &[],
            ),
        );
        item.insert(
            "put".into(),
            op.build(
                "put",
                &format!("replace{namespaced}{what}"),
                Some(("*/*", &schema)),
                &schema,
                WRITE_PARAMS,
            ),
        );
        item.insert(
            "patch".into(),
            op.build(
                "patch",
                &format!("patch{namespaced}{what}"),
                Some(("patch", "io.k8s.apimachinery.pkg.apis.meta.v1.Patch")),
                &schema,
                PATCH_PARAMS,
            ),
        );
        if suffix.is_empty() {
            item.insert(
                "delete".into(),
                op.build(
                    "delete",
                    &format!("delete{namespaced}"),
                    Some(("*/*", "io.k8s.apimachinery.pkg.apis.meta.v1.DeleteOptions")),
                    "io.k8s.apimachinery.pkg.apis.meta.v1.Status",
                    DELETE_PARAMS,
                ),
            );
        }
        item.insert("parameters".into(), json!(op.path_params(true)));
        (format!("{scope}/{{name}}{suffix}"), Value::Object(item))
    };
    out.push(item_ops("", ""));
    if def.status_subresource {
        out.push(item_ops("/status", "Status"));
    }
    if def.namespaced {
        let mut all = Map::new();
        all.insert(
            "get".into(),
            op.build(
                "list",
                "listForAllNamespaces",
                None,
                &list_schema,
                LIST_PARAMS,
            ),
        );
        out.push((format!("{root}/{}", def.plural), Value::Object(all)));
    }
    out
}

const LIST_PARAMS: &[(&str, &str)] = &[
    ("allowWatchBookmarks", "boolean"),
    ("continue", "string"),
    ("fieldSelector", "string"),
    ("labelSelector", "string"),
    ("limit", "integer"),
    ("resourceVersion", "string"),
    ("resourceVersionMatch", "string"),
    ("timeoutSeconds", "integer"),
    ("watch", "boolean"),
];
const WRITE_PARAMS: &[(&str, &str)] = &[
    ("dryRun", "string"),
    ("fieldManager", "string"),
    ("fieldValidation", "string"),
];
const PATCH_PARAMS: &[(&str, &str)] = &[
    ("dryRun", "string"),
    ("fieldManager", "string"),
    ("fieldValidation", "string"),
    ("force", "boolean"),
];
const DELETE_PARAMS: &[(&str, &str)] = &[
    ("dryRun", "string"),
    ("gracePeriodSeconds", "integer"),
    ("propagationPolicy", "string"),
];

struct OperationBuilder<'a> {
    def: &'a ResourceDef,
    v3: bool,
}

impl OperationBuilder<'_> {
    fn reference(&self, schema: &str) -> Value {
        let prefix = if self.v3 {
            "#/components/schemas/"
        } else {
            REF_PREFIX
        };
        json!({"$ref": format!("{prefix}{schema}")})
    }

    fn query_param(&self, name: &str, kind: &str) -> Value {
        if self.v3 {
            json!({"name": name, "in": "query", "schema": {"type": kind, "uniqueItems": true}})
        } else {
            json!({"name": name, "in": "query", "type": kind, "uniqueItems": true})
        }
    }

    fn path_params(&self, with_name: bool) -> Vec<Value> {
        let path_param = |name: &str, description: &str| {
            if self.v3 {
                json!({"name": name, "in": "path", "required": true, "description": description, "schema": {"type": "string", "uniqueItems": true}})
            } else {
                json!({"name": name, "in": "path", "required": true, "description": description, "type": "string", "uniqueItems": true})
            }
        };
        let mut params = Vec::new();
        if with_name {
            params.push(path_param(
                "name",
                &format!("name of the {}", self.def.kind),
            ));
        }
        if self.def.namespaced {
            params.push(path_param(
                "namespace",
                "object name and auth scope, such as for teams and projects",
            ));
        }
        params.push(self.query_param("pretty", "string"));
        params
    }

    /// One operation: `action` is kube-openapi's `x-kubernetes-action`.
    fn build(
        &self,
        action: &str,
        verb_id: &str,
        body: Option<(&str, &str)>,
        response: &str,
        params: &[(&str, &str)],
    ) -> Value {
        let group_id: String = if self.def.group.is_empty() {
            "Core".into()
        } else {
            let mut c = self.def.group.split('.').next().unwrap_or("").chars();
            c.next()
                .map(|f| f.to_ascii_uppercase().to_string() + c.as_str())
                .unwrap_or_default()
        };
        let version_id = {
            let mut c = self.def.version.chars();
            c.next()
                .map(|f| f.to_ascii_uppercase().to_string() + c.as_str())
                .unwrap_or_default()
        };
        let operation_id = match verb_id.strip_suffix("Status") {
            Some(base) => format!("{base}{group_id}{version_id}{}Status", self.def.kind),
            None => format!("{verb_id}{group_id}{version_id}{}", self.def.kind),
        };
        let tag = if self.def.group.is_empty() {
            format!("core_{}", self.def.version)
        } else {
            format!(
                "{}_{}",
                self.def.group.split('.').next().unwrap_or(""),
                self.def.version
            )
        };
        let mut op = json!({
            "operationId": operation_id,
            "tags": [tag],
            "x-kubernetes-action": action,
            "x-kubernetes-group-version-kind": {"group": self.def.group, "kind": self.def.kind, "version": self.def.version},
            "parameters": params.iter().map(|(n, k)| self.query_param(n, k)).collect::<Vec<_>>(),
        });
        let ok = |code: &str| {
            if self.v3 {
                json!({code: {"description": "OK", "content": {"application/json": {"schema": self.reference(response)}}}})
            } else {
                json!({code: {"description": "OK", "schema": self.reference(response)}})
            }
        };
        let mut responses = ok("200");
        if action == "post" {
            responses
                .as_object_mut()
                .expect("object")
                .extend(ok("201").as_object().cloned().unwrap_or_default());
        }
        responses["401"] = json!({"description": "Unauthorized"});
        op["responses"] = responses;
        if let Some((media, schema)) = body {
            let media_types: Vec<&str> = if media == "patch" {
                // Custom resources take no strategic merge patch (as kube-apiserver's CRD
                // OpenAPI says); kubectl apply reads this list to choose its patch type.
                crate::patch::PATCH_MEDIA_TYPES
                    .iter()
                    .copied()
                    .filter(|m| self.def.custom.is_none() || !m.contains("strategic"))
                    .collect()
            } else {
                vec![media]
            };
            if self.v3 {
                let content: Map<String, Value> = media_types
                    .iter()
                    .map(|m| ((*m).to_owned(), json!({"schema": self.reference(schema)})))
                    .collect();
                op["requestBody"] = json!({"content": content, "required": action != "delete" && action != "deletecollection"});
            } else {
                op["parameters"]
                    .as_array_mut()
                    .expect("array")
                    .push(json!({"name": "body", "in": "body", "required": action != "delete" && action != "deletecollection", "schema": self.reference(schema)}));
                if media == "patch" {
                    op["consumes"] = json!(media_types);
                }
            }
        }
        op
    }
}
