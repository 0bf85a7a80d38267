//! The statuses of GatewayClasses, Gateways and HTTPRoutes: built from the model's
//! conditions, compared with what is stored, and written only when they differ
//! (level-triggered: a failed write is retried on the next round).

use kube::api::{DynamicObject, Patch, PatchParams};
use kube::{Api, Client};
use serde_json::{json, Value};

use super::model::{conditions_json, Condition, GatewayStatus, RouteParentStatus};
use super::{api_resource, CONTROLLER_NAME};

/// The `status` of a GatewayClass of ours, if `stored` differs from it.
pub fn class(
    conditions: &[Condition],
    generation: i64,
    stored: Option<&Value>,
    now: &str,
) -> Option<Value> {
    let stored_conditions = stored.and_then(|s| s.get("conditions"));
    let want = conditions_json(conditions, generation, stored_conditions, now);
    (stored_conditions != Some(&want)).then(|| json!({"conditions": want}))
}

/// The `status` of a Gateway of ours, if `stored` differs from it.
pub fn gateway(status: &GatewayStatus, stored: Option<&Value>, now: &str) -> Option<Value> {
    let field = |k: &str| stored.and_then(|s| s.get(k));
    let stored_listeners = field("listeners").and_then(Value::as_array);
    let listeners: Vec<Value> = status
        .listeners
        .iter()
        .map(|l| {
            let old = stored_listeners
                .into_iter()
                .flatten()
                .find(|s| s["name"] == l.name.as_str())
                .and_then(|s| s.get("conditions"));
            json!({"name": l.name, "supportedKinds": l.supported_kinds,
                "attachedRoutes": l.attached_routes,
                "conditions": conditions_json(&l.conditions, status.generation, old, now)})
        })
        .collect();
    let addresses: Vec<Value> = status
        .addresses
        .iter()
        .map(|a| json!({"type": "IPAddress", "value": a}))
        .collect();
    let want = json!({
        "addresses": addresses,
        "conditions": conditions_json(&status.conditions, status.generation, field("conditions"), now),
        "listeners": listeners,
    });
    let same = ["addresses", "conditions", "listeners"]
        .iter()
        .all(|k| field(k) == want.get(*k));
    (!same).then_some(want)
}

/// The `status` of an HTTPRoute whose entries of ours should be `ours` (none: the route
/// is no longer attached to a Gateway of ours), keeping other controllers' entries; `None`
/// when `stored` already says so.
pub fn route(
    ours: &[RouteParentStatus],
    generation: i64,
    stored: Option<&Value>,
    now: &str,
) -> Option<Value> {
    let stored_parents: Vec<&Value> = stored
        .and_then(|s| s.get("parents"))
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .collect();
    let mut parents: Vec<Value> = stored_parents
        .iter()
        .filter(|p| p["controllerName"] != CONTROLLER_NAME)
        .map(|p| (*p).clone())
        .collect();
    for entry in ours {
        let parent_ref = serde_json::to_value(&entry.parent_ref).unwrap_or_default();
        let old = stored_parents
            .iter()
            .find(|p| p["controllerName"] == CONTROLLER_NAME && p["parentRef"] == parent_ref)
            .and_then(|p| p.get("conditions"));
        parents.push(
            json!({"parentRef": parent_ref, "controllerName": CONTROLLER_NAME,
            "conditions": conditions_json(&entry.conditions, generation, old, now)}),
        );
    }
    let unchanged = stored_parents.len() == parents.len()
        && stored_parents.iter().zip(&parents).all(|(a, b)| *a == b);
    (!unchanged).then(|| json!({"parents": parents}))
}

/// Writes `status` to the `kind` object `namespace/name` (`namespace` empty: cluster-scoped).
pub async fn write(
    client: &Client,
    kind: &str,
    plural: &str,
    namespace: &str,
    name: &str,
    status: Value,
) -> Result<(), kube::Error> {
    let ar = api_resource(kind, plural);
    let api: Api<DynamicObject> = if namespace.is_empty() {
        Api::all_with(client.clone(), &ar)
    } else {
        Api::namespaced_with(client.clone(), namespace, &ar)
    };
    api.patch_status(
        name,
        &PatchParams::default(),
        &Patch::Merge(json!({"status": status})),
    )
    .await
    .map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gateway::types::ParentRef;

    fn cond(status: bool) -> Condition {
        Condition {
            type_: "Accepted",
            status,
            reason: if status {
                "Accepted"
            } else {
                "NotAllowedByListeners"
            },
            message: "m".into(),
        }
    }

    #[test]
    fn transition_times_are_kept_until_the_status_changes() {
        let first = class(&[cond(true)], 1, None, "T1").unwrap();
        assert_eq!(first["conditions"][0]["lastTransitionTime"], "T1");
        assert_eq!(class(&[cond(true)], 1, Some(&first), "T2"), None);
        let flipped = class(&[cond(false)], 1, Some(&first), "T3").unwrap();
        assert_eq!(flipped["conditions"][0]["lastTransitionTime"], "T3");
        assert_eq!(flipped["conditions"][0]["status"], "False");
    }

    #[test]
    fn gateway_status_is_written_once() {
        use crate::gateway::model::ListenerStatus;
        use crate::gateway::types::RouteGroupKind;
        let want = GatewayStatus {
            generation: 2,
            addresses: vec!["10.0.0.5".into()],
            conditions: vec![cond(true)],
            listeners: vec![ListenerStatus {
                name: "http".into(),
                supported_kinds: vec![RouteGroupKind {
                    group: Some("gateway.networking.k8s.io".into()),
                    kind: "HTTPRoute".into(),
                }],
                attached_routes: 1,
                conditions: vec![cond(true)],
            }],
        };
        let first = gateway(&want, None, "T1").unwrap();
        assert_eq!(
            first["addresses"],
            json!([{"type": "IPAddress", "value": "10.0.0.5"}])
        );
        assert_eq!(first["listeners"][0]["attachedRoutes"], 1);
        assert_eq!(gateway(&want, Some(&first), "T2"), None);
        let mut more = want.clone();
        more.listeners[0].attached_routes = 2;
        let second = gateway(&more, Some(&first), "T3").unwrap();
        // The condition did not change: its transition time stays.
        assert_eq!(
            second["listeners"][0]["conditions"][0]["lastTransitionTime"],
            "T1"
        );
    }

    #[test]
    fn route_parents_keep_other_controllers_entries() {
        let other = json!({"parentRef": {"name": "theirs"}, "controllerName": "example.com/gw",
            "conditions": []});
        let stored = json!({"parents": [other.clone()]});
        let ours = [RouteParentStatus {
            parent_ref: ParentRef {
                name: "gw".into(),
                ..Default::default()
            },
            conditions: vec![cond(true)],
        }];
        let status = route(&ours, 2, Some(&stored), "T").unwrap();
        let parents = status["parents"].as_array().unwrap();
        assert_eq!(parents[0], other);
        assert_eq!(parents[1]["parentRef"], json!({"name": "gw"}));
        assert_eq!(parents[1]["controllerName"], CONTROLLER_NAME);
        assert_eq!(parents[1]["conditions"][0]["observedGeneration"], 2);
        assert_eq!(route(&ours, 2, Some(&status), "T2"), None);
        // Detached: our entry goes, theirs stays.
        let detached = route(&[], 2, Some(&status), "T3").unwrap();
        assert_eq!(detached["parents"], json!([other]));
    }
}
