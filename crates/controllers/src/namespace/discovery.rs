//! Which namespaced resources a namespace's deletion covers, found as
//! `ServerPreferredNamespacedResources` finds them: each group's preferred version, plus
//! the resources only its other versions serve. A group version whose discovery fails is
//! reported and the others are still used, so one broken aggregated API does not stop
//! every namespace from being emptied.

use std::collections::HashSet;

use futures::future::join_all;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::APIResourceList;
use kube::core::{ApiResource, GroupVersionKind};
use kube::Client;

/// A namespaced resource that can be deleted.
#[derive(Debug, Clone, PartialEq)]
pub struct Resource {
    /// Group, version, kind and plural.
    pub api: ApiResource,
    /// The verbs discovery lists for it.
    pub verbs: Vec<String>,
}

impl Resource {
    /// Whether discovery lists `verb` for the resource.
    pub fn supports(&self, verb: &str) -> bool {
        self.verbs.iter().any(|v| v == verb)
    }

    /// `plural.group`, as the NamespaceContentRemaining condition names resources
    /// (`pods.` for the core group).
    pub fn qualified(&self) -> String {
        format!("{}.{}", self.api.plural, self.api.group)
    }

    /// `group/version, Resource=plural`, as Kubernetes prints a GroupVersionResource.
    pub fn gvr(&self) -> String {
        format!(
            "{}/{}, Resource={}",
            self.api.group, self.api.version, self.api.plural
        )
    }
}

/// What discovery found.
#[derive(Debug, Default)]
pub struct Discovered {
    /// The deletable namespaced resources.
    pub resources: Vec<Resource>,
    /// Why the list is incomplete (the NamespaceDeletionDiscoveryFailure message).
    pub failure: Option<String>,
    /// A group version that does not parse (NamespaceDeletionGroupVersionParsingFailure).
    pub parse_failure: Option<String>,
}

/// Discovers the deletable namespaced resources of the server.
pub async fn discover(client: &Client) -> Discovered {
    let (core, groups) = match (
        client.list_core_api_versions().await,
        client.list_api_groups().await,
    ) {
        (Ok(core), Ok(groups)) => (core, groups),
        (Err(e), _) | (_, Err(e)) => {
            return Discovered {
                failure: Some(super::message(&e)),
                ..Default::default()
            }
        }
    };
    // Every group's versions, the preferred one first.
    let mut wanted: Vec<Vec<String>> = vec![core.versions];
    for group in groups.groups {
        let preferred = group.preferred_version.map(|v| v.group_version);
        let mut versions: Vec<String> = preferred.iter().cloned().collect();
        versions.extend(
            group
                .versions
                .into_iter()
                .map(|v| v.group_version)
                .filter(|gv| Some(gv) != preferred.as_ref()),
        );
        wanted.push(versions);
    }
    let core_group = 0;
    let fetched = join_all(wanted.iter().enumerate().map(|(i, versions)| async move {
        join_all(versions.iter().map(|gv| async move {
            let list = if i == core_group {
                client.list_core_api_resources(gv).await
            } else {
                client.list_api_group_resources(gv).await
            };
            (gv.clone(), list.map_err(|e| super::message(&e)))
        }))
        .await
    }))
    .await;
    let mut failures = Vec::new();
    let mut lists = Vec::new();
    for group in fetched {
        let mut found = Vec::new();
        for (gv, list) in group {
            match list {
                Ok(list) => found.push(list),
                Err(e) => failures.push((gv, e)),
            }
        }
        lists.push(found);
    }
    let (resources, parse_failure) = preferred(&lists);
    Discovered {
        resources,
        failure: (!failures.is_empty()).then(|| failure_message(failures)),
        parse_failure,
    }
}

/// The deletable namespaced resources of `groups` (each group's resource lists, the
/// preferred version first): a resource a more preferred version serves is taken from
/// there. Also the first group version that does not parse.
pub fn preferred(groups: &[Vec<APIResourceList>]) -> (Vec<Resource>, Option<String>) {
    let mut resources = Vec::new();
    let mut parse_failure = None;
    for lists in groups {
        let mut seen = HashSet::new();
        for list in lists {
            let Some((group, version)) = parse_group_version(&list.group_version) else {
                parse_failure.get_or_insert_with(|| {
                    format!("unexpected GroupVersion string: {}", list.group_version)
                });
                continue;
            };
            for r in &list.resources {
                // Subresources are deleted with their objects.
                if r.name.contains('/') || !seen.insert(r.name.clone()) || !r.namespaced {
                    continue;
                }
                let deletable = r
                    .verbs
                    .iter()
                    .any(|v| v == "delete" || v == "deletecollection");
                if !deletable {
                    continue;
                }
                resources.push(Resource {
                    api: ApiResource::from_gvk_with_plural(
                        &GroupVersionKind::gvk(group, version, &r.kind),
                        &r.name,
                    ),
                    verbs: r.verbs.clone(),
                });
            }
        }
    }
    (resources, parse_failure)
}

/// `group/version` or `version` (the core group) as (group, version).
fn parse_group_version(gv: &str) -> Option<(&str, &str)> {
    match gv.split_once('/') {
        None if !gv.is_empty() => Some(("", gv)),
        Some((group, version)) if !version.is_empty() && !version.contains('/') => {
            Some((group, version))
        }
        _ => None,
    }
}

/// The message of a discovery that failed for some group versions
/// (`ErrGroupDiscoveryFailed` as the namespace controller words it).
pub fn failure_message(mut failures: Vec<(String, String)>) -> String {
    failures.sort();
    let listed: Vec<String> = failures
        .iter()
        .map(|(gv, e)| format!("{gv}: {e}"))
        .collect();
    format!(
        "Discovery failed for some groups, {} failing: unable to retrieve the complete list of server APIs: {}",
        failures.len(),
        listed.join(", ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn list(gv: &str, resources: serde_json::Value) -> APIResourceList {
        serde_json::from_value(json!({"groupVersion": gv, "resources": resources})).unwrap()
    }

    fn resource(name: &str, kind: &str, namespaced: bool, verbs: &[&str]) -> serde_json::Value {
        json!({"name": name, "singularName": "", "kind": kind, "namespaced": namespaced, "verbs": verbs})
    }

    #[test]
    fn only_deletable_namespaced_resources_of_the_preferred_version_are_kept() {
        let all = [
            "create",
            "delete",
            "deletecollection",
            "get",
            "list",
            "watch",
        ];
        let groups = vec![
            vec![list(
                "v1",
                json!([
                    resource("pods", "Pod", true, &all),
                    resource("pods/status", "Pod", true, &["get", "update"]),
                    resource("namespaces", "Namespace", false, &all),
                    resource("bindings", "Binding", true, &["create"]),
                ]),
            )],
            vec![
                list(
                    "example.com/v2",
                    json!([resource("widgets", "Widget", true, &all)]),
                ),
                list(
                    "example.com/v1",
                    json!([
                        resource("widgets", "Widget", true, &all),
                        resource("gadgets", "Gadget", true, &["delete", "list"]),
                    ]),
                ),
            ],
        ];
        let (resources, parse_failure) = preferred(&groups);
        let found: Vec<String> = resources.iter().map(Resource::gvr).collect();
        assert_eq!(
            found,
            [
                "/v1, Resource=pods",
                "example.com/v2, Resource=widgets",
                "example.com/v1, Resource=gadgets"
            ]
        );
        assert_eq!(resources[0].qualified(), "pods.");
        assert_eq!(resources[1].api.api_version, "example.com/v2");
        assert!(!resources[2].supports("deletecollection"));
        assert_eq!(parse_failure, None);
    }

    #[test]
    fn unparsable_group_versions_are_reported_and_skipped() {
        let groups = vec![vec![list(
            "a/b/c",
            json!([resource("things", "Thing", true, &["delete"])]),
        )]];
        let (resources, parse_failure) = preferred(&groups);
        assert!(resources.is_empty());
        assert_eq!(
            parse_failure.as_deref(),
            Some("unexpected GroupVersion string: a/b/c")
        );
    }

    #[test]
    fn discovery_failures_name_each_failing_group_version() {
        let message = failure_message(vec![
            (
                "metrics.k8s.io/v1beta1".into(),
                "service unavailable".into(),
            ),
            ("example.com/v1".into(), "the server is down".into()),
        ]);
        assert_eq!(
            message,
            "Discovery failed for some groups, 2 failing: unable to retrieve the complete list \
             of server APIs: example.com/v1: the server is down, metrics.k8s.io/v1beta1: \
             service unavailable"
        );
    }
}
