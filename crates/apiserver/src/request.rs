//! What a request asks for: the resource path parsed as kube-apiserver's
//! `RequestInfoFactory` does, the query parameters, and the negotiated response form.

use std::collections::HashMap;

/// A parsed API path.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RequestInfo {
    /// Whether the path addresses a resource (`/api/v1/...` or `/apis/g/v/...` with a
    /// resource), as opposed to discovery or other paths.
    pub is_resource: bool,
    /// `api` or `apis`.
    pub prefix: String,
    /// API group.
    pub group: String,
    /// API version.
    pub version: String,
    /// Namespace ("" when cluster-wide).
    pub namespace: String,
    /// Resource (plural).
    pub resource: String,
    /// Subresource ("" when none).
    pub subresource: String,
    /// Object name ("" for collections).
    pub name: String,
    /// The Kubernetes verb.
    pub verb: String,
}

/// Namespace subresources that are not resources in their own right.
const NAMESPACE_SUBRESOURCES: &[&str] = &["status", "finalize"];

impl RequestInfo {
    /// Parses `path` for an HTTP `method` with query parameters `query`.
    pub fn parse(method: &str, path: &str, query: &Query) -> RequestInfo {
        let mut info = RequestInfo {
            verb: method.to_ascii_lowercase(),
            ..RequestInfo::default()
        };
        let parts: Vec<&str> = path
            .trim_matches('/')
            .split('/')
            .filter(|p| !p.is_empty())
            .collect();
        let mut rest: &[&str] = match parts.first() {
            Some(&"api") if parts.len() >= 2 => {
                info.prefix = "api".into();
                info.version = parts[1].into();
                &parts[2..]
            }
            Some(&"apis") if parts.len() >= 3 => {
                info.prefix = "apis".into();
                info.group = parts[1].into();
                info.version = parts[2].into();
                &parts[3..]
            }
            _ => return info,
        };
        if rest.is_empty() {
            return info;
        }
        info.is_resource = true;
        let mut watch_prefix = false;
        if rest[0] == "watch" {
            watch_prefix = true;
            rest = &rest[1..];
        }
        if rest.first() == Some(&"namespaces") && rest.len() > 1 {
            info.namespace = rest[1].into();
            if rest.len() > 2 && !NAMESPACE_SUBRESOURCES.contains(&rest[2]) {
                rest = &rest[2..];
            }
        }
        info.resource = rest.first().copied().unwrap_or_default().into();
        info.name = rest.get(1).copied().unwrap_or_default().into();
        info.subresource = rest.get(2).copied().unwrap_or_default().into();
        if info.resource == "namespaces" {
            // /api/v1/namespaces/x is the namespace x itself, cluster-scoped.
            info.namespace.clear();
        }
        info.verb = match method {
            "GET" | "HEAD" => {
                if watch_prefix || query.flag("watch") {
                    "watch".into()
                } else if info.name.is_empty() {
                    "list".into()
                } else {
                    "get".into()
                }
            }
            "POST" => "create".into(),
            "PUT" => "update".into(),
            "PATCH" => "patch".into(),
            "DELETE" => {
                if info.name.is_empty() {
                    "deletecollection".into()
                } else {
                    "delete".into()
                }
            }
            other => other.to_ascii_lowercase(),
        };
        info
    }
}

/// Decoded query parameters (the last value of a repeated parameter wins).
#[derive(Clone, Debug, Default)]
pub struct Query(HashMap<String, String>);

impl Query {
    /// Decodes a raw query string.
    pub fn parse(raw: Option<&str>) -> Query {
        Query(
            raw.map(|q| form_urlencoded::parse(q.as_bytes()).into_owned().collect())
                .unwrap_or_default(),
        )
    }

    /// A parameter's value.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).map(String::as_str)
    }

    /// A parameter's value, or None when empty.
    pub fn non_empty(&self, key: &str) -> Option<&str> {
        self.get(key).filter(|v| !v.is_empty())
    }

    /// Whether a boolean parameter is set (`1`, `true`).
    pub fn flag(&self, key: &str) -> bool {
        matches!(self.get(key), Some("1") | Some("true") | Some("True"))
    }
}

/// The form of a successful response the client asked for with `Accept`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Representation {
    /// The object (or list) itself, JSON.
    Object,
    /// A `meta.k8s.io/v1` Table (`kubectl get`).
    Table,
    /// `PartialObjectMetadata(List)` (metadata-only informers).
    Metadata,
    /// Aggregated discovery, `apidiscovery.k8s.io` at this version (`v2`, `v2beta1`).
    AggregatedDiscovery(String),
}

/// One media range of an Accept header.
#[derive(Clone, Debug, Default)]
struct MediaRange {
    essence: String,
    params: HashMap<String, String>,
}

fn parse_accept(header: &str) -> Vec<MediaRange> {
    header
        .split(',')
        .map(|range| {
            let mut pieces = range.split(';');
            let essence = pieces.next().unwrap_or("").trim().to_ascii_lowercase();
            let params = pieces
                .filter_map(|p| {
                    let (k, v) = p.split_once('=')?;
                    Some((
                        k.trim().to_ascii_lowercase(),
                        v.trim().trim_matches('"').to_owned(),
                    ))
                })
                .collect();
            MediaRange { essence, params }
        })
        .filter(|r| !r.essence.is_empty())
        .collect()
}

/// Picks the response form from an Accept header, in the client's order of preference;
/// `None` when nothing acceptable is offered (406). Only JSON is ever served.
pub fn negotiate(accept: Option<&str>, discovery: bool) -> Option<Representation> {
    let Some(accept) = accept.filter(|a| !a.trim().is_empty()) else {
        return Some(Representation::Object);
    };
    for range in parse_accept(accept) {
        let json = matches!(
            range.essence.as_str(),
            "application/json" | "application/*" | "*/*"
        );
        if !json {
            continue;
        }
        let as_kind = range.params.get("as").map(String::as_str);
        let group = range.params.get("g").map(String::as_str);
        let version = range.params.get("v").map(String::as_str);
        match as_kind {
            None => return Some(Representation::Object),
            Some("Table")
                if !discovery
                    && group == Some("meta.k8s.io")
                    && matches!(version, Some("v1") | Some("v1beta1")) =>
            {
                return Some(Representation::Table);
            }
            Some("PartialObjectMetadata") | Some("PartialObjectMetadataList")
                if !discovery && group == Some("meta.k8s.io") && version == Some("v1") =>
            {
                return Some(Representation::Metadata);
            }
            Some("APIGroupDiscoveryList")
                if discovery
                    && group == Some("apidiscovery.k8s.io")
                    && matches!(version, Some("v2") | Some("v2beta1")) =>
            {
                return Some(Representation::AggregatedDiscovery(
                    version.unwrap_or("v2").to_owned(),
                ));
            }
            _ => {}
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(method: &str, path: &str, query: &str) -> RequestInfo {
        RequestInfo::parse(method, path, &Query::parse(Some(query)))
    }

    #[test]
    fn parses_paths_like_kube_apiserver() {
        let i = info("GET", "/api/v1/namespaces/default/pods/web/status", "");
        assert_eq!(
            (
                i.namespace.as_str(),
                i.resource.as_str(),
                i.name.as_str(),
                i.subresource.as_str(),
                i.verb.as_str()
            ),
            ("default", "pods", "web", "status", "get")
        );
        let i = info("GET", "/apis/apps/v1/deployments", "watch=1");
        assert_eq!(
            (i.group.as_str(), i.resource.as_str(), i.verb.as_str()),
            ("apps", "deployments", "watch")
        );
        let i = info("GET", "/api/v1/namespaces/kube-system", "");
        assert_eq!(
            (i.namespace.as_str(), i.resource.as_str(), i.name.as_str()),
            ("", "namespaces", "kube-system")
        );
        let i = info("PUT", "/api/v1/namespaces/x/finalize", "");
        assert_eq!(
            (i.resource.as_str(), i.name.as_str(), i.subresource.as_str()),
            ("namespaces", "x", "finalize")
        );
        let i = info("GET", "/api/v1/watch/namespaces/d/pods/p", "");
        assert_eq!((i.verb.as_str(), i.name.as_str()), ("watch", "p"));
        let i = info("DELETE", "/api/v1/namespaces/d/configmaps", "");
        assert_eq!(i.verb, "deletecollection");
        assert!(!info("GET", "/apis/apps/v1", "").is_resource);
    }

    #[test]
    fn negotiates_tables_and_aggregated_discovery() {
        let kubectl_get = "application/json;as=Table;v=v1;g=meta.k8s.io,application/json;as=Table;v=v1beta1;g=meta.k8s.io,application/json";
        assert_eq!(
            negotiate(Some(kubectl_get), false),
            Some(Representation::Table)
        );
        let discovery = "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList,application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList,application/json";
        assert_eq!(
            negotiate(Some(discovery), true),
            Some(Representation::AggregatedDiscovery("v2".into()))
        );
        assert_eq!(
            negotiate(Some("application/vnd.kubernetes.protobuf"), false),
            None
        );
        assert_eq!(
            negotiate(Some("application/vnd.kubernetes.protobuf, */*"), false),
            Some(Representation::Object)
        );
    }
}
