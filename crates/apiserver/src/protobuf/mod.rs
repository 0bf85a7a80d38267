//! The little protobuf skiff speaks: it never answers in protobuf for objects, but
//!
//! - client-go's generated clientsets (used by `kubectl create deployment|secret|role|token`,
//!   `drain`, `auth can-i`, ...) always send request bodies as
//!   `application/vnd.kubernetes.protobuf`, with no JSON fallback (they accept JSON
//!   answers); [`decode_object`] turns those bodies into JSON: k8s-pb decodes the message,
//!   [`message`] maps it to JSON generically, guided by the k8s-openapi type's schema;
//! - client-go reads `/openapi/v2` only as a gnostic protobuf document; kubectl 1.27 needs it
//!   to learn (from the PATCH operations' `fieldValidation` parameter) that the server
//!   validates fields itself. [`openapi_v2_document`] encodes the paths part of the JSON
//!   document; definitions are served by OpenAPI v3.

pub mod message;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use k8s_pb::apimachinery::pkg::apis::meta::v1 as pb_meta;
use prost::Message;
use schemars::JsonSchema;
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

/// Decodes the message of one kind into its JSON object.
pub type Decoder = fn(&[u8]) -> Result<Value, ProtobufError>;

/// Decodes a Kubernetes protobuf request body (`k8s\0` + runtime.Unknown) into the JSON
/// object it carries; `decoder` finds the decoder of the envelope's apiVersion and kind.
pub fn decode_object(
    body: &[u8],
    decoder: impl Fn(&str, &str) -> Option<Decoder>,
) -> Result<Value, ProtobufError> {
    let envelope = body
        .strip_prefix(MAGIC)
        .ok_or_else(|| ProtobufError::Decode("missing the k8s protobuf prefix".into()))?;
    let unknown = k8s_pb::apimachinery::pkg::runtime::Unknown::decode(envelope)
        .map_err(|e| ProtobufError::Decode(e.to_string()))?;
    let type_meta = unknown.type_meta.unwrap_or_default();
    let api_version = type_meta.api_version.unwrap_or_default();
    let kind = type_meta.kind.unwrap_or_default();
    let raw = unknown.raw.unwrap_or_default();
    let decode = decoder(&api_version, &kind)
        .or_else(|| {
            EXTRA_KINDS
                .iter()
                .find(|(v, k, _)| (*v == api_version || v.is_empty()) && *k == kind)
                .map(|(_, _, d)| *d)
        })
        .ok_or_else(|| ProtobufError::Unsupported(format!("{api_version}/{kind}")))?;
    let mut obj = decode(&raw)?;
    if !api_version.is_empty() {
        obj["apiVersion"] = json!(api_version);
    }
    obj["kind"] = json!(kind);
    Ok(obj)
}

/// Kinds sent in request bodies that are not resources of their own: subresource bodies
/// and options ("" matches any apiVersion: client-go sends DeleteOptions under the
/// resource's group version).
static EXTRA_KINDS: &[(&str, &str, Decoder)] = &[
    (
        "",
        "DeleteOptions",
        decode_as::<
            pb_meta::DeleteOptions,
            k8s_openapi::apimachinery::pkg::apis::meta::v1::DeleteOptions,
        >,
    ),
    (
        "autoscaling/v1",
        "Scale",
        decode_as::<k8s_pb::api::autoscaling::v1::Scale, k8s_openapi::api::autoscaling::v1::Scale>,
    ),
    (
        "v1",
        "Binding",
        decode_as::<k8s_pb::api::core::v1::Binding, k8s_openapi::api::core::v1::Binding>,
    ),
    (
        "policy/v1",
        "Eviction",
        decode_as::<k8s_pb::api::policy::v1::Eviction, k8s_openapi::api::policy::v1::Eviction>,
    ),
    (
        "authentication.k8s.io/v1",
        "TokenRequest",
        decode_as::<
            k8s_pb::api::authentication::v1::TokenRequest,
            k8s_openapi::api::authentication::v1::TokenRequest,
        >,
    ),
];

/// The [`Decoder`] of the k8s-pb message `P` whose JSON form is the k8s-openapi type `O`.
pub fn decode_as<P, O>(raw: &[u8]) -> Result<Value, ProtobufError>
where
    P: Message + Default + std::fmt::Debug,
    O: JsonSchema,
{
    let decoded = P::decode(raw).map_err(|e| ProtobufError::Decode(e.to_string()))?;
    let shown = message::parse(&format!("{decoded:?}"))
        .map_err(|e| ProtobufError::Decode(e.to_string()))?;
    let schema = schema_of::<O>();
    let (root, definitions) = &*schema;
    Ok(message::to_json(&shown, root, definitions).unwrap_or_else(|| json!({})))
}

type SchemaCache = Mutex<HashMap<&'static str, Arc<(Value, Map<String, Value>)>>>;

/// The schema of `O` with its definitions, generated once per type.
fn schema_of<O: JsonSchema>() -> Arc<(Value, Map<String, Value>)> {
    static CACHE: OnceLock<SchemaCache> = OnceLock::new();
    let cache = CACHE.get_or_init(Default::default);
    let name = std::any::type_name::<O>();
    if let Some(found) = cache.lock().unwrap_or_else(|p| p.into_inner()).get(name) {
        return found.clone();
    }
    let mut settings = schemars::generate::SchemaSettings::draft07();
    settings.definitions_path = "/definitions".into();
    let mut generator = settings.into_generator();
    let root = generator.subschema_for::<O>().to_value();
    let definitions = generator.take_definitions(true);
    let entry = Arc::new((root, definitions));
    cache
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .insert(name, entry.clone());
    entry
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
    use k8s_pb::api::apps::v1 as pb_apps;
    use k8s_pb::api::core::v1 as pb_core;

    fn envelope(api_version: &str, kind: &str, raw: Vec<u8>) -> Vec<u8> {
        let unknown = k8s_pb::apimachinery::pkg::runtime::Unknown {
            type_meta: Some(k8s_pb::apimachinery::pkg::runtime::TypeMeta {
                api_version: Some(api_version.into()),
                kind: Some(kind.into()),
            }),
            raw: Some(raw),
            ..Default::default()
        };
        let mut body = MAGIC.to_vec();
        body.extend(unknown.encode_to_vec());
        body
    }

    #[test]
    fn decodes_a_protobuf_secret_with_bytes_and_empty_label_values() {
        let secret = pb_core::Secret {
            metadata: Some(pb_meta::ObjectMeta {
                name: Some("s".into()),
                generate_name: Some(String::new()),
                labels: [("a".to_owned(), String::new())].into(),
                creation_timestamp: Some(pb_meta::Time {
                    seconds: Some(-62_135_596_800),
                    nanos: Some(0),
                }),
                ..Default::default()
            }),
            data: [("k".to_owned(), b"hi".to_vec())].into(),
            r#type: Some("Opaque".into()),
            ..Default::default()
        };
        let body = envelope("v1", "Secret", secret.encode_to_vec());
        let find = |_: &str, _: &str| -> Option<Decoder> {
            Some(decode_as::<pb_core::Secret, k8s_openapi::api::core::v1::Secret>)
        };
        let obj = decode_object(&body, find).unwrap();
        assert_eq!(
            obj,
            json!({"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
                "metadata": {"name": "s", "labels": {"a": ""}}, "data": {"k": "aGk="}})
        );
    }

    #[test]
    fn decodes_a_deployment_with_json_names_and_int_or_string() {
        let deployment = pb_apps::Deployment {
            metadata: Some(pb_meta::ObjectMeta {
                name: Some("d".into()),
                ..Default::default()
            }),
            spec: Some(pb_apps::DeploymentSpec {
                replicas: Some(0),
                strategy: Some(pb_apps::DeploymentStrategy {
                    rolling_update: Some(pb_apps::RollingUpdateDeployment {
                        max_surge: Some(k8s_pb::apimachinery::pkg::util::intstr::IntOrString {
                            r#type: Some(1),
                            int_val: Some(0),
                            str_val: Some("50%".into()),
                        }),
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
                template: Some(pb_core::PodTemplateSpec {
                    spec: Some(pb_core::PodSpec {
                        host_ipc: Some(true),
                        containers: vec![pb_core::Container {
                            name: Some("c".into()),
                            image: Some("busybox".into()),
                            ..Default::default()
                        }],
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        };
        let obj = decode_as::<pb_apps::Deployment, k8s_openapi::api::apps::v1::Deployment>(
            &deployment.encode_to_vec(),
        )
        .unwrap();
        assert_eq!(obj["spec"]["replicas"], 0);
        assert_eq!(obj["spec"]["strategy"]["rollingUpdate"]["maxSurge"], "50%");
        assert_eq!(obj["spec"]["template"]["spec"]["hostIPC"], true);
        assert_eq!(
            obj["spec"]["template"]["spec"]["containers"],
            json!([{"name": "c", "image": "busybox"}])
        );
    }
}
