//! The little protobuf skiff speaks: it never answers in protobuf for objects, but
//!
//! - client-go's generated clientsets (used by `kubectl create namespace|configmap|secret`)
//!   always send request bodies as `application/vnd.kubernetes.protobuf`, with no JSON
//!   fallback; [`decode_object`] turns those bodies into JSON for the kinds whose
//!   protobuf-to-JSON mapping is written here (k8s-pb provides the messages);
//! - client-go reads `/openapi/v2` only as a gnostic protobuf document; kubectl 1.27 needs it
//!   to learn (from the PATCH operations' `fieldValidation` parameter) that the server
//!   validates fields itself. [`openapi_v2_document`] encodes the paths part of the JSON
//!   document; definitions are served by OpenAPI v3.

use std::collections::BTreeMap;

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use k8s_pb::api::core::v1 as pb_core;
use k8s_pb::apimachinery::pkg::apis::meta::v1 as pb_meta;
use prost::Message;
use serde_json::{json, Map, Value};

/// The media type of Kubernetes protobuf.
pub const KUBERNETES_PROTOBUF: &str = "application/vnd.kubernetes.protobuf";
/// The media type clients ask for the gnostic OpenAPI v2 document with.
pub const OPENAPI_V2_PROTOBUF: &str = "application/com.github.proto-openapi.spec.v2@v1.0+protobuf";
/// The Content-Type of that document in responses: '@' is not a token character, so the
/// response spells it with a dot (Go's mime parser rejects the request form).
pub const OPENAPI_V2_PROTOBUF_RESPONSE: &str =
    "application/com.github.proto-openapi.spec.v2.v1.0+protobuf";

const MAGIC: &[u8] = b"k8s\0";

/// Why a protobuf body could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ProtobufError {
    /// The envelope or message is malformed.
    #[error("protobuf decoding failed: {0}")]
    Decode(String),
    /// The kind has no protobuf mapping in skiff yet.
    #[error("protobuf request bodies are not supported for kind {0}; send application/json")]
    Unsupported(String),
}

/// Decodes a Kubernetes protobuf request body (`k8s\0` + runtime.Unknown) into the JSON
/// object it carries.
pub fn decode_object(body: &[u8]) -> Result<Value, ProtobufError> {
    let decode = |e: prost::DecodeError| ProtobufError::Decode(e.to_string());
    let envelope = body
        .strip_prefix(MAGIC)
        .ok_or_else(|| ProtobufError::Decode("missing the k8s protobuf prefix".into()))?;
    let unknown = k8s_pb::apimachinery::pkg::runtime::Unknown::decode(envelope).map_err(decode)?;
    let type_meta = unknown.type_meta.unwrap_or_default();
    let api_version = type_meta.api_version.unwrap_or_default();
    let kind = type_meta.kind.unwrap_or_default();
    let raw = unknown.raw.unwrap_or_default();
    let mut obj = match (api_version.as_str(), kind.as_str()) {
        ("v1", "Namespace") => {
            let ns = pb_core::Namespace::decode(raw.as_slice()).map_err(decode)?;
            let mut obj = json!({"metadata": object_meta(ns.metadata)});
            if let Some(spec) = ns.spec {
                obj["spec"] = json!({"finalizers": spec.finalizers});
            }
            obj
        }
        ("v1", "ConfigMap") => {
            let cm = pb_core::ConfigMap::decode(raw.as_slice()).map_err(decode)?;
            let mut obj = json!({"metadata": object_meta(cm.metadata)});
            if !cm.data.is_empty() {
                obj["data"] = json!(cm.data);
            }
            if !cm.binary_data.is_empty() {
                obj["binaryData"] = bytes_map(&cm.binary_data);
            }
            if let Some(immutable) = cm.immutable {
                obj["immutable"] = json!(immutable);
            }
            obj
        }
        ("v1", "Secret") => {
            let secret = pb_core::Secret::decode(raw.as_slice()).map_err(decode)?;
            let mut obj = json!({"metadata": object_meta(secret.metadata)});
            if !secret.data.is_empty() {
                obj["data"] = bytes_map(&secret.data);
            }
            if !secret.string_data.is_empty() {
                obj["stringData"] = json!(secret.string_data);
            }
            if let Some(kind) = secret.r#type {
                obj["type"] = json!(kind);
            }
            if let Some(immutable) = secret.immutable {
                obj["immutable"] = json!(immutable);
            }
            obj
        }
        ("v1", "ServiceAccount") => {
            let sa = pb_core::ServiceAccount::decode(raw.as_slice()).map_err(decode)?;
            let mut obj = json!({"metadata": object_meta(sa.metadata)});
            if let Some(automount) = sa.automount_service_account_token {
                obj["automountServiceAccountToken"] = json!(automount);
            }
            if !sa.image_pull_secrets.is_empty() {
                obj["imagePullSecrets"] = sa
                    .image_pull_secrets
                    .iter()
                    .map(|r| json!({"name": r.name.clone().unwrap_or_default()}))
                    .collect();
            }
            obj
        }
        _ => return Err(ProtobufError::Unsupported(format!("{api_version}/{kind}"))),
    };
    obj["apiVersion"] = json!(api_version);
    obj["kind"] = json!(kind);
    Ok(obj)
}

fn bytes_map(map: &BTreeMap<String, Vec<u8>>) -> Value {
    map.iter()
        .map(|(k, v)| (k.clone(), json!(BASE64.encode(v))))
        .collect::<Map<String, Value>>()
        .into()
}

/// The JSON of an ObjectMeta: the fields a client sets on create and update.
fn object_meta(meta: Option<pb_meta::ObjectMeta>) -> Value {
    let meta = meta.unwrap_or_default();
    let mut out = Map::new();
    let mut put = |key: &str, value: Option<String>| {
        if let Some(v) = value.filter(|v| !v.is_empty()) {
            out.insert(key.into(), json!(v));
        }
    };
    put("name", meta.name);
    put("generateName", meta.generate_name);
    put("namespace", meta.namespace);
    put("uid", meta.uid);
    put("resourceVersion", meta.resource_version);
    if !meta.labels.is_empty() {
        out.insert("labels".into(), json!(meta.labels));
    }
    if !meta.annotations.is_empty() {
        out.insert("annotations".into(), json!(meta.annotations));
    }
    if !meta.finalizers.is_empty() {
        out.insert("finalizers".into(), json!(meta.finalizers));
    }
    if !meta.owner_references.is_empty() {
        let refs: Vec<Value> = meta
            .owner_references
            .iter()
            .map(|r| {
                let mut o = json!({
                    "apiVersion": r.api_version.clone().unwrap_or_default(),
                    "kind": r.kind.clone().unwrap_or_default(),
                    "name": r.name.clone().unwrap_or_default(),
                    "uid": r.uid.clone().unwrap_or_default(),
                });
                if let Some(c) = r.controller {
                    o["controller"] = json!(c);
                }
                if let Some(b) = r.block_owner_deletion {
                    o["blockOwnerDeletion"] = json!(b);
                }
                o
            })
            .collect();
        out.insert("ownerReferences".into(), json!(refs));
    }
    Value::Object(out)
}

/// Protobuf wire encoding of the few gnostic messages written here.
struct Writer(Vec<u8>);

impl Writer {
    fn varint(&mut self, mut v: u64) {
        while v >= 0x80 {
            self.0.push((v as u8) | 0x80);
            v >>= 7;
        }
        self.0.push(v as u8);
    }

    fn bytes(&mut self, field: u32, data: &[u8]) {
        self.varint(u64::from(field << 3 | 2));
        self.varint(data.len() as u64);
        self.0.extend_from_slice(data);
    }

    fn string(&mut self, field: u32, s: &str) {
        if !s.is_empty() {
            self.bytes(field, s.as_bytes());
        }
    }

    fn boolean(&mut self, field: u32, b: bool) {
        if b {
            self.varint(u64::from(field << 3));
            self.varint(1);
        }
    }

    fn message(&mut self, field: u32, build: impl FnOnce(&mut Writer)) {
        let mut inner = Writer(Vec::new());
        build(&mut inner);
        self.bytes(field, &inner.0);
    }
}

/// Encodes the paths of a JSON OpenAPI v2 document as a gnostic `openapi.v2.Document`:
/// each operation with its id, query parameters and vendor extensions (YAML-encoded, as
/// gnostic stores them).
pub fn openapi_v2_document(doc: &Value) -> Vec<u8> {
    let mut w = Writer(Vec::new());
    w.string(
        1,
        doc.get("swagger").and_then(Value::as_str).unwrap_or("2.0"),
    );
    w.message(2, |info| {
        info.string(
            1,
            doc.pointer("/info/title")
                .and_then(Value::as_str)
                .unwrap_or(""),
        );
        info.string(
            2,
            doc.pointer("/info/version")
                .and_then(Value::as_str)
                .unwrap_or(""),
        );
    });
    let empty = Map::new();
    let paths = doc
        .get("paths")
        .and_then(Value::as_object)
        .unwrap_or(&empty);
    w.message(8, |paths_w| {
        for (path, item) in paths {
            paths_w.message(2, |named| {
                named.string(1, path);
                named.message(2, |item_w| {
                    // PathItem: get=2 put=3 post=4 delete=5 options=6 head=7 patch=8.
                    for (method, field) in [
                        ("get", 2),
                        ("put", 3),
                        ("post", 4),
                        ("delete", 5),
                        ("patch", 8),
                    ] {
                        if let Some(op) = item.get(method) {
                            item_w.message(field, |op_w| operation(op_w, op));
                        }
                    }
                });
            });
        }
    });
    w.0
}

fn operation(w: &mut Writer, op: &Value) {
    for tag in op
        .get("tags")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        w.string(1, tag.as_str().unwrap_or(""));
    }
    w.string(
        5,
        op.get("operationId").and_then(Value::as_str).unwrap_or(""),
    );
    for consumes in op
        .get("consumes")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        w.string(7, consumes.as_str().unwrap_or(""));
    }
    for param in op
        .get("parameters")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        if param.get("in").and_then(Value::as_str) != Some("query") {
            continue;
        }
        // ParametersItem.parameter(1) > Parameter.non_body_parameter(2) >
        // NonBodyParameter.query_parameter_sub_schema(3).
        w.message(8, |item| {
            item.message(1, |p| {
                p.message(2, |nb| {
                    nb.message(3, |q| {
                        q.string(2, "query");
                        q.string(4, param.get("name").and_then(Value::as_str).unwrap_or(""));
                        q.string(6, param.get("type").and_then(Value::as_str).unwrap_or(""));
                        q.boolean(20, param.get("uniqueItems") == Some(&json!(true)));
                    });
                });
            });
        });
    }
    if let Some(map) = op.as_object() {
        for (key, value) in map.iter().filter(|(k, _)| k.starts_with("x-")) {
            // NamedAny{name=1, value=2: Any{yaml=2}}; JSON is valid YAML.
            w.message(13, |named| {
                named.string(1, key);
                named.message(2, |any| any.string(2, &value.to_string()));
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_a_protobuf_configmap() {
        let cm = pb_core::ConfigMap {
            metadata: Some(pb_meta::ObjectMeta {
                name: Some("cfg".into()),
                labels: [("a".to_owned(), "b".to_owned())].into(),
                ..Default::default()
            }),
            data: [("k".to_owned(), "v".to_owned())].into(),
            ..Default::default()
        };
        let envelope = k8s_pb::apimachinery::pkg::runtime::Unknown {
            type_meta: Some(k8s_pb::apimachinery::pkg::runtime::TypeMeta {
                api_version: Some("v1".into()),
                kind: Some("ConfigMap".into()),
            }),
            raw: Some(cm.encode_to_vec()),
            ..Default::default()
        };
        let mut body = MAGIC.to_vec();
        body.extend(envelope.encode_to_vec());
        let obj = decode_object(&body).unwrap();
        assert_eq!(
            obj,
            json!({"apiVersion": "v1", "kind": "ConfigMap",
                "metadata": {"name": "cfg", "labels": {"a": "b"}}, "data": {"k": "v"}})
        );
    }
}
