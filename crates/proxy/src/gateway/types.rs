//! The fields of GatewayClass, Gateway and HTTPRoute (`gateway.networking.k8s.io/v1`) this
//! controller reads, parsed from the watches' dynamic objects. Fields the CRDs default
//! (`allowedRoutes`, `weight`, `matches`, ...) are defaulted here too, so objects stored
//! before a default existed read the same.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::DynamicObject;
use serde::{Deserialize, Serialize};

/// A `GatewayClass`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct GatewayClass {
    /// Its metadata.
    pub metadata: ObjectMeta,
    /// Its spec.
    pub spec: GatewayClassSpec,
    /// Its status as stored.
    pub status: Option<serde_json::Value>,
}

/// `GatewayClass.spec`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct GatewayClassSpec {
    /// The controller that manages Gateways of this class.
    pub controller_name: String,
}

/// A `Gateway`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct Gateway {
    /// Its metadata.
    pub metadata: ObjectMeta,
    /// Its spec.
    pub spec: GatewaySpec,
    /// Its status as stored (compared before writing).
    pub status: Option<serde_json::Value>,
}

/// `Gateway.spec`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct GatewaySpec {
    /// The class.
    pub gateway_class_name: String,
    /// The listeners.
    pub listeners: Vec<Listener>,
}

/// One `Gateway.spec.listeners[]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct Listener {
    /// Unique in the Gateway.
    pub name: String,
    /// The host (exact or `*.` wildcard) it accepts; none: any.
    pub hostname: Option<String>,
    /// The port (served on the ingress listener of its protocol).
    pub port: i32,
    /// `HTTP` or `HTTPS` (others are not supported).
    pub protocol: String,
    /// TLS settings of an HTTPS listener.
    pub tls: Option<ListenerTls>,
    /// Which routes may attach.
    pub allowed_routes: Option<AllowedRoutes>,
}

/// `listeners[].tls`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct ListenerTls {
    /// `Terminate` (default) or `Passthrough`.
    pub mode: Option<String>,
    /// The certificates (Secrets).
    pub certificate_refs: Vec<ObjectRef>,
}

/// A reference to another object (a certificate's Secret, a backend's Service).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct ObjectRef {
    /// The API group (`""`: core).
    pub group: Option<String>,
    /// The kind (Secret or Service by default).
    pub kind: Option<String>,
    /// The name.
    pub name: String,
    /// The namespace (default: the referring object's).
    pub namespace: Option<String>,
    /// The port of a Service.
    pub port: Option<i32>,
    /// The backend's weight (default 1).
    pub weight: Option<i32>,
    /// The backend's filters (not supported).
    pub filters: Vec<serde_json::Value>,
}

/// `listeners[].allowedRoutes`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct AllowedRoutes {
    /// Which namespaces' routes.
    pub namespaces: Option<RouteNamespaces>,
    /// Which route kinds (default: HTTPRoute for HTTP and HTTPS).
    pub kinds: Option<Vec<RouteGroupKind>>,
}

/// `allowedRoutes.namespaces`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct RouteNamespaces {
    /// `Same` (default), `All` or `Selector`.
    pub from: Option<String>,
    /// The label selector for `Selector`.
    pub selector: Option<k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector>,
}

/// A route kind, in `allowedRoutes.kinds` and `supportedKinds`.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(default, rename_all = "camelCase")]
pub struct RouteGroupKind {
    /// The group (default `gateway.networking.k8s.io`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    /// The kind.
    pub kind: String,
}

/// An `HTTPRoute`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct HttpRoute {
    /// Its metadata.
    pub metadata: ObjectMeta,
    /// Its spec.
    pub spec: HttpRouteSpec,
    /// Its status as stored.
    pub status: Option<serde_json::Value>,
}

/// `HTTPRoute.spec`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct HttpRouteSpec {
    /// The Gateways (and listeners) it attaches to.
    pub parent_refs: Vec<ParentRef>,
    /// The hosts it serves (none: the listeners').
    pub hostnames: Vec<String>,
    /// Its rules.
    pub rules: Vec<HttpRouteRule>,
}

/// A `parentRefs[]` entry, echoed as given in `status.parents[].parentRef`.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(default, rename_all = "camelCase")]
pub struct ParentRef {
    /// The group (default `gateway.networking.k8s.io`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    /// The kind (default `Gateway`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// The namespace (default: the route's).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// The Gateway's name.
    pub name: String,
    /// A listener's name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub section_name: Option<String>,
    /// A listener's port.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub port: Option<i32>,
}

/// One `rules[]` entry.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct HttpRouteRule {
    /// Any of them selects the rule (none: every request under `/`).
    pub matches: Vec<HttpRouteMatch>,
    /// The rule's filters (not supported).
    pub filters: Vec<serde_json::Value>,
    /// Where requests go.
    pub backend_refs: Vec<ObjectRef>,
}

/// One `matches[]` entry.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct HttpRouteMatch {
    /// The path condition (default: `PathPrefix` `/`).
    pub path: Option<ValueMatch>,
    /// Header conditions.
    pub headers: Vec<NamedMatch>,
    /// Query parameter conditions.
    pub query_params: Vec<NamedMatch>,
    /// The method.
    pub method: Option<String>,
}

/// `matches[].path`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct ValueMatch {
    /// `Exact`, `PathPrefix` (default) or `RegularExpression`.
    #[serde(rename = "type")]
    pub type_: Option<String>,
    /// The path (default `/`).
    pub value: Option<String>,
}

/// `matches[].headers[]` and `queryParams[]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct NamedMatch {
    /// `Exact` (default) or `RegularExpression`.
    #[serde(rename = "type")]
    pub type_: Option<String>,
    /// The header or parameter name.
    pub name: String,
    /// The value.
    pub value: String,
}

/// Parses a watched object as `T` (`None`, logged, when it does not fit).
pub fn parse<T: serde::de::DeserializeOwned>(obj: &DynamicObject) -> Option<T> {
    let value = serde_json::to_value(obj).ok()?;
    match serde_json::from_value(value) {
        Ok(t) => Some(t),
        Err(e) => {
            tracing::debug!(
                "gateway: {}/{}: {e}",
                obj.metadata.namespace.as_deref().unwrap_or_default(),
                obj.metadata.name.as_deref().unwrap_or_default()
            );
            None
        }
    }
}
