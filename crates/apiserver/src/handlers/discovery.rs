//! Discovery: `/api`, `/apis`, `/apis/<group>`, `/api/v1` and `/apis/<group>/<version>`, in
//! the legacy form and, when the client's Accept asks for `APIGroupDiscoveryList`
//! (`apidiscovery.k8s.io` v2 or v2beta1, as kubectl 1.27+ does), the aggregated form with the
//! whole tree in one response.

use serde_json::{json, Value};

use super::subresources::{Subresource, EXTRA_SUBRESOURCES};
use super::{reply_with, Api, Reply};
use crate::registry::ResourceDef;
use crate::request::{negotiate, Representation};
use crate::resource_metrics;
use crate::status::{ApiError, ApiResult};

/// Serves a discovery path, split into its segments.
pub(super) fn serve(api: &Api, parts: &[&str], accept: Option<&str>) -> ApiResult<Reply> {
    let representation = negotiate(accept, true);
    match (parts, &representation) {
        (["api"], Some(Representation::AggregatedDiscovery(version))) => {
            Ok(aggregated(api, true, version))
        }
        (["apis"], Some(Representation::AggregatedDiscovery(version))) => {
            Ok(aggregated(api, false, version))
        }
        (["api"], _) => reply_with(
            representation,
            json!({
                "kind": "APIVersions",
                "versions": ["v1"],
                "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": api.server_address}],
            }),
        ),
        (["apis"], _) => reply_with(
            representation,
            json!({
                "kind": "APIGroupList",
                "apiVersion": "v1",
                "groups": api.registry.groups().into_iter()
                    .filter(|(g, _)| !g.is_empty())
                    .map(|(g, versions)| api_group(g, &versions))
                    .chain([resource_metrics::api_group()])
                    .collect::<Vec<_>>(),
            }),
        ),
        (["apis", resource_metrics::GROUP], _) => {
            let mut body = resource_metrics::api_group();
            body["kind"] = json!("APIGroup");
            body["apiVersion"] = json!("v1");
            reply_with(representation, body)
        }
        (["apis", resource_metrics::GROUP, resource_metrics::VERSION], _) => {
            reply_with(representation, resource_metrics::resource_list())
        }
        (["apis", group], _) => {
            let (g, versions) = api
                .registry
                .groups()
                .into_iter()
                .find(|(g, _)| g == group && !g.is_empty())
                .ok_or_else(ApiError::path_not_found)?;
            let mut body = api_group(g, &versions);
            body["kind"] = json!("APIGroup");
            body["apiVersion"] = json!("v1");
            reply_with(representation, body)
        }
        (["api", version], _) => resource_list(api, "", version, representation),
        (["apis", group, version], _) => resource_list(api, group, version, representation),
        _ => Err(ApiError::path_not_found()),
    }
}

fn group_version(group: &str, version: &str) -> String {
    if group.is_empty() {
        version.to_owned()
    } else {
        format!("{group}/{version}")
    }
}

fn api_group(group: &str, versions: &[&str]) -> Value {
    let versions: Vec<Value> = versions
        .iter()
        .map(|v| json!({"groupVersion": group_version(group, v), "version": v}))
        .collect();
    json!({
        "name": group,
        "versions": versions,
        "preferredVersion": versions.first().cloned().unwrap_or_default(),
    })
}

fn resource_list(
    api: &Api,
    group: &str,
    version: &str,
    representation: Option<Representation>,
) -> ApiResult<Reply> {
    let defs: Vec<&ResourceDef> = api.registry.in_group_version(group, version).collect();
    if defs.is_empty() {
        return Err(ApiError::path_not_found());
    }
    let mut resources = Vec::new();
    for def in defs {
        let mut resource = json!({
            "name": def.plural,
            "singularName": def.singular,
            "namespaced": def.namespaced,
            "kind": def.kind,
            "verbs": def.verbs,
        });
        if !def.short_names.is_empty() {
            resource["shortNames"] = json!(def.short_names);
        }
        if !def.categories.is_empty() {
            resource["categories"] = json!(def.categories);
        }
        resources.push(resource);
        for sub in subresources(def) {
            let mut entry = json!({
                "name": format!("{}/{}", def.plural, sub.name),
                "singularName": "",
                "namespaced": def.namespaced,
                "kind": sub.kind,
                "verbs": sub.verbs,
            });
            if sub.group != def.group || sub.version != def.version {
                entry["group"] = json!(sub.group);
                entry["version"] = json!(sub.version);
            }
            resources.push(entry);
        }
    }
    reply_with(
        representation,
        json!({
            "kind": "APIResourceList",
            "apiVersion": "v1",
            "groupVersion": group_version(group, version),
            "resources": resources,
        }),
    )
}

/// The aggregated discovery document of the core group (`/api`) or the named groups
/// (`/apis`), at `apidiscovery.k8s.io/<version>`.
fn aggregated(api: &Api, core: bool, version: &str) -> Reply {
    let items: Vec<Value> = api
        .registry
        .groups()
        .into_iter()
        .filter(|(g, _)| g.is_empty() == core)
        .map(|(group, versions)| {
            let versions: Vec<Value> = versions
                .iter()
                .map(|v| {
                    let resources: Vec<Value> = api
                        .registry
                        .in_group_version(group, v)
                        .map(discovery_resource)
                        .collect();
                    json!({"version": v, "resources": resources, "freshness": "Current"})
                })
                .collect();
            let mut metadata = json!({"creationTimestamp": null});
            if !group.is_empty() {
                metadata["name"] = json!(group);
            }
            json!({"metadata": metadata, "versions": versions})
        })
        // metrics.k8s.io, as an aggregated API (metrics-server's APIService) is listed.
        .chain((!core).then(resource_metrics::aggregated_discovery_item))
        .collect();
    let media_type =
        format!("application/json;g=apidiscovery.k8s.io;v={version};as=APIGroupDiscoveryList");
    Reply::ok(json!({
        "kind": "APIGroupDiscoveryList",
        "apiVersion": format!("apidiscovery.k8s.io/{version}"),
        "metadata": {},
        "items": items,
    }))
    .with_content_type(media_type)
}

fn discovery_resource(def: &ResourceDef) -> Value {
    let kind = json!({"group": def.group, "version": def.version, "kind": def.kind});
    let mut resource = json!({
        "resource": def.plural,
        "responseKind": kind,
        "scope": if def.namespaced { "Namespaced" } else { "Cluster" },
        "singularResource": def.singular,
        "verbs": def.verbs,
    });
    if !def.short_names.is_empty() {
        resource["shortNames"] = json!(def.short_names);
    }
    if !def.categories.is_empty() {
        resource["categories"] = json!(def.categories);
    }
    let subs: Vec<Value> = subresources(def)
        .into_iter()
        .map(|sub| {
            json!({
                "subresource": sub.name,
                "responseKind": {"group": sub.group, "version": sub.version, "kind": sub.kind},
                "verbs": sub.verbs,
            })
        })
        .collect();
    if !subs.is_empty() {
        resource["subresources"] = json!(subs);
    }
    resource
}

/// The subresources of a resource.
fn subresources(def: &ResourceDef) -> Vec<Subresource> {
    const GET_PATCH_UPDATE: &[&str] = &["get", "patch", "update"];
    let mut subs = Vec::new();
    let own = |name, group, version, kind| Subresource {
        resource: def.plural,
        name,
        group,
        version,
        kind,
        verbs: GET_PATCH_UPDATE,
    };
    if def.status_subresource {
        subs.push(own("status", def.group, def.version, def.kind));
    }
    if def.scale_subresource {
        subs.push(own("scale", "autoscaling", "v1", "Scale"));
    }
    subs.extend(
        EXTRA_SUBRESOURCES
            .iter()
            .filter(|s| (def.group.is_empty() || s.group == def.group) && s.resource == def.plural),
    );
    subs
}
