//! The Gateway API's CustomResourceDefinitions (`gateway.networking.k8s.io`, standard
//! channel: GatewayClass, Gateway, HTTPRoute; `v1` stored, `v1beta1` served too), installed by skiff at start as k3s installs
//! its bundled manifests, and the `skiff` GatewayClass.
//!
//! The schemas are structural and written here (no crate ships them for our `kube`): they
//! type every field this controller reads, with upstream's defaults, and keep the fields it
//! does not implement (filters, timeouts, infrastructure, ...) as free-form objects, so
//! upstream example manifests apply unchanged under kubectl's strict field validation.
//! CRDs skiff created carry [`REVISION_ANNOTATION`] and are replaced when this revision is
//! newer; CRDs installed by someone else (upstream's release bundle) are left alone.

use std::time::Duration;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{DynamicObject, PostParams};
use kube::{Api, Client};
use serde_json::{json, Value};

use super::{api_resource, CLASS_NAME, CONTROLLER_NAME, GROUP};

/// The annotation marking CRDs skiff installed, with the revision of their schemas.
pub const REVISION_ANNOTATION: &str = "skiff.dev/gateway-crd-revision";
/// The revision of the schemas below; raise it when they change.
pub const REVISION: u32 = 1;
/// The Gateway API release whose standard channel these CRDs follow.
pub const BUNDLE_VERSION: &str = "v1.2.1";

fn string() -> Value {
    json!({"type": "string"})
}

fn object(properties: Value) -> Value {
    json!({"type": "object", "properties": properties})
}

fn array(items: Value) -> Value {
    json!({"type": "array", "items": items})
}

fn free_form() -> Value {
    json!({"type": "object", "x-kubernetes-preserve-unknown-fields": true})
}

fn condition() -> Value {
    json!({"type": "object", "required": ["type", "status", "reason", "message", "lastTransitionTime"],
        "properties": {
            "type": string(), "status": {"type": "string", "enum": ["True", "False", "Unknown"]},
            "reason": string(), "message": string(),
            "lastTransitionTime": {"type": "string", "format": "date-time"},
            "observedGeneration": {"type": "integer", "format": "int64", "minimum": 0}}})
}

fn conditions() -> Value {
    json!({"type": "array", "maxItems": 8, "items": condition(),
        "x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["type"]})
}

fn parent_ref() -> Value {
    json!({"type": "object", "required": ["name"], "properties": {
        "group": {"type": "string", "default": GROUP},
        "kind": {"type": "string", "default": "Gateway"},
        "namespace": string(), "name": string(), "sectionName": string(),
        "port": {"type": "integer", "format": "int32", "minimum": 1, "maximum": 65535}}})
}

fn route_group_kind() -> Value {
    json!({"type": "object", "required": ["kind"], "properties": {
        "group": {"type": "string", "default": GROUP}, "kind": string()}})
}

fn gateway_class_schema() -> Value {
    object(json!({
        "apiVersion": string(), "kind": string(), "metadata": {"type": "object"},
        "spec": {"type": "object", "required": ["controllerName"], "properties": {
            "controllerName": {"type": "string", "minLength": 1, "maxLength": 253},
            "description": {"type": "string", "maxLength": 64},
            "parametersRef": {"type": "object", "required": ["group", "kind", "name"],
                "properties": {"group": string(), "kind": string(), "name": string(),
                    "namespace": string()}}}},
        "status": object(json!({"conditions": conditions(),
            "supportedFeatures": array(free_form())})),
    }))
}

fn gateway_schema() -> Value {
    let listener = json!({"type": "object", "required": ["name", "port", "protocol"],
        "properties": {
            "name": string(), "hostname": string(),
            "port": {"type": "integer", "format": "int32", "minimum": 1, "maximum": 65535},
            "protocol": {"type": "string", "minLength": 1},
            "tls": {"type": "object", "properties": {
                "mode": {"type": "string", "enum": ["Terminate", "Passthrough"],
                    "default": "Terminate"},
                "certificateRefs": array(json!({"type": "object", "required": ["name"],
                    "properties": {"group": {"type": "string", "default": ""},
                        "kind": {"type": "string", "default": "Secret"},
                        "name": string(), "namespace": string()}})),
                "options": {"type": "object", "additionalProperties": string()}}},
            "allowedRoutes": {"type": "object",
                "default": {"namespaces": {"from": "Same"}},
                "properties": {
                    "namespaces": {"type": "object", "default": {"from": "Same"}, "properties": {
                        "from": {"type": "string", "enum": ["All", "Selector", "Same"],
                            "default": "Same"},
                        "selector": free_form()}},
                    "kinds": array(route_group_kind())}}}});
    let address = json!({"type": "object", "required": ["value"], "properties": {
        "type": {"type": "string", "default": "IPAddress"}, "value": string()}});
    object(json!({
        "apiVersion": string(), "kind": string(), "metadata": {"type": "object"},
        "spec": {"type": "object", "required": ["gatewayClassName", "listeners"], "properties": {
            "gatewayClassName": {"type": "string", "minLength": 1},
            "listeners": {"type": "array", "minItems": 1, "maxItems": 64, "items": listener,
                "x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"]},
            "addresses": array(address.clone()),
            "infrastructure": free_form(), "backendTLS": free_form()}},
        "status": object(json!({
            "addresses": array(address),
            "conditions": conditions(),
            "listeners": array(json!({"type": "object",
                "required": ["name", "supportedKinds", "attachedRoutes", "conditions"],
                "properties": {"name": string(), "supportedKinds": array(route_group_kind()),
                    "attachedRoutes": {"type": "integer", "format": "int32"},
                    "conditions": conditions()}}))})),
    }))
}

fn http_route_schema() -> Value {
    let matched = json!({"type": "object",
        "properties": {
            "path": {"type": "object", "default": {"type": "PathPrefix", "value": "/"},
                "properties": {
                    "type": {"type": "string", "enum": ["Exact", "PathPrefix", "RegularExpression"],
                        "default": "PathPrefix"},
                    "value": {"type": "string", "default": "/", "maxLength": 1024}}},
            "headers": array(json!({"type": "object", "required": ["name", "value"],
                "properties": {"type": {"type": "string", "enum": ["Exact", "RegularExpression"],
                    "default": "Exact"}, "name": string(), "value": string()}})),
            "queryParams": array(json!({"type": "object", "required": ["name", "value"],
                "properties": {"type": {"type": "string", "enum": ["Exact", "RegularExpression"],
                    "default": "Exact"}, "name": string(), "value": string()}})),
            "method": {"type": "string", "enum": ["GET", "HEAD", "POST", "PUT", "DELETE",
                "CONNECT", "OPTIONS", "TRACE", "PATCH"]}}});
    let backend_ref = json!({"type": "object", "required": ["name"], "properties": {
        "group": {"type": "string", "default": ""},
        "kind": {"type": "string", "default": "Service"},
        "name": string(), "namespace": string(),
        "port": {"type": "integer", "format": "int32", "minimum": 1, "maximum": 65535},
        "weight": {"type": "integer", "format": "int32", "minimum": 0, "maximum": 1000000,
            "default": 1},
        "filters": array(free_form())}});
    let rule = json!({"type": "object", "properties": {
        "name": string(),
        "matches": {"type": "array", "maxItems": 64, "items": matched,
            "default": [{"path": {"type": "PathPrefix", "value": "/"}}]},
        "filters": array(free_form()),
        "backendRefs": array(backend_ref),
        "timeouts": free_form(), "retry": free_form(), "sessionPersistence": free_form()}});
    object(json!({
        "apiVersion": string(), "kind": string(), "metadata": {"type": "object"},
        "spec": {"type": "object", "properties": {
            "parentRefs": {"type": "array", "maxItems": 32, "items": parent_ref()},
            "hostnames": {"type": "array", "maxItems": 16, "items": string()},
            "rules": {"type": "array", "maxItems": 16, "items": rule,
                "default": [{"matches": [{"path": {"type": "PathPrefix", "value": "/"}}]}]}}},
        "status": {"type": "object", "required": ["parents"], "properties": {
            "parents": {"type": "array", "maxItems": 32, "items": {"type": "object",
                "required": ["parentRef", "controllerName"], "properties": {
                    "parentRef": parent_ref(), "controllerName": string(),
                    "conditions": conditions()}}}}},
    }))
}

fn printer_column(name: &str, path: &str) -> Value {
    json!({"name": name, "type": "string", "jsonPath": path})
}

fn age() -> Value {
    json!({"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"})
}

fn crd(kind: &str, plural: &str, scope: &str, schema: Value, columns: Vec<Value>) -> Value {
    // v1beta1 is still served by the standard channel, with the same schema.
    let versions: [Value; 2] = ["v1", "v1beta1"].map(|v| {
        json!({"name": v, "served": true,
                "storage": v == "v1", "schema": {"openAPIV3Schema": schema.clone()},
                "subresources": {"status": {}},
                "additionalPrinterColumns": columns.clone()})
    });
    json!({
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": format!("{plural}.{GROUP}"), "annotations": {
            "gateway.networking.k8s.io/bundle-version": BUNDLE_VERSION,
            "gateway.networking.k8s.io/channel": "standard",
            REVISION_ANNOTATION: REVISION.to_string()}},
        "spec": {
            "group": GROUP,
            "names": {"kind": kind, "listKind": format!("{kind}List"), "plural": plural,
                "singular": kind.to_ascii_lowercase(), "categories": ["gateway-api"],
                "shortNames": match kind { "GatewayClass" => json!(["gc"]),
                    "Gateway" => json!(["gtw"]), _ => json!([]) }},
            "scope": scope,
            "versions": versions,
        },
    })
}

/// The three CustomResourceDefinitions, as JSON objects.
pub fn definitions() -> Vec<Value> {
    vec![
        crd(
            "GatewayClass",
            "gatewayclasses",
            "Cluster",
            gateway_class_schema(),
            vec![
                printer_column("Controller", ".spec.controllerName"),
                printer_column(
                    "Accepted",
                    ".status.conditions[?(@.type==\"Accepted\")].status",
                ),
                age(),
                json!({"name": "Description", "type": "string", "priority": 1,
                    "jsonPath": ".spec.description"}),
            ],
        ),
        crd(
            "Gateway",
            "gateways",
            "Namespaced",
            gateway_schema(),
            vec![
                printer_column("Class", ".spec.gatewayClassName"),
                // Upstream's column reads `[*]`, which the API server's printer columns
                // do not evaluate; the first address is what a single node has.
                printer_column("Address", ".status.addresses[0].value"),
                printer_column(
                    "Programmed",
                    ".status.conditions[?(@.type==\"Programmed\")].status",
                ),
                age(),
            ],
        ),
        crd(
            "HTTPRoute",
            "httproutes",
            "Namespaced",
            http_route_schema(),
            vec![printer_column("Hostnames", ".spec.hostnames"), age()],
        ),
    ]
}

/// What to do with one CRD given the stored one.
#[derive(Debug, PartialEq, Eq)]
pub enum Install {
    /// None is stored: create it.
    Create,
    /// Ours, of an older revision: replace its spec.
    Update,
    /// Current, or someone else's: leave it.
    Keep,
}

/// The action for a CRD whose stored copy has `annotations` (`None`: not stored).
pub fn install_action(stored: Option<&std::collections::BTreeMap<String, String>>) -> Install {
    let Some(annotations) = stored else {
        return Install::Create;
    };
    match annotations
        .get(REVISION_ANNOTATION)
        .and_then(|r| r.parse::<u32>().ok())
    {
        Some(r) if r < REVISION => Install::Update,
        _ => Install::Keep,
    }
}

/// Installs or upgrades the CRDs, retrying while the API warms up.
pub async fn ensure(client: Client) {
    let api = Api::<CustomResourceDefinition>::all(client);
    for definition in definitions() {
        let wanted: CustomResourceDefinition =
            serde_json::from_value(definition).expect("a valid CustomResourceDefinition");
        let name = wanted.metadata.name.clone().unwrap_or_default();
        loop {
            match ensure_one(&api, &wanted).await {
                Ok(()) => break,
                Err(e) => tracing::debug!("gateway: installing CRD {name}: {e}"),
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
}

async fn ensure_one(
    api: &Api<CustomResourceDefinition>,
    wanted: &CustomResourceDefinition,
) -> Result<(), kube::Error> {
    let name = wanted.metadata.name.as_deref().unwrap_or_default();
    let stored = api.get_opt(name).await?;
    match install_action(stored.as_ref().map(|s| {
        static EMPTY: std::collections::BTreeMap<String, String> =
            std::collections::BTreeMap::new();
        s.metadata.annotations.as_ref().unwrap_or(&EMPTY)
    })) {
        Install::Create => match api.create(&PostParams::default(), wanted).await {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(e)) if e.code == 409 => Ok(()),
            Err(e) => Err(e),
        },
        Install::Update => {
            let mut next = stored.expect("stored");
            next.spec = wanted.spec.clone();
            let annotations = next
                .metadata
                .annotations
                .get_or_insert_with(Default::default);
            for (k, v) in wanted.metadata.annotations.iter().flatten() {
                annotations.insert(k.clone(), v.clone());
            }
            api.replace(name, &PostParams::default(), &next).await?;
            Ok(())
        }
        Install::Keep => Ok(()),
    }
}

/// Creates the `skiff` GatewayClass unless it exists (a user's edits stay); retries while
/// the CRDs are being established.
pub async fn ensure_class(client: Client) {
    let api =
        Api::<DynamicObject>::all_with(client, &api_resource("GatewayClass", "gatewayclasses"));
    let class: DynamicObject = serde_json::from_value(json!({
        "apiVersion": format!("{GROUP}/v1"), "kind": "GatewayClass",
        "metadata": {"name": CLASS_NAME},
        "spec": {"controllerName": CONTROLLER_NAME,
            "description": "The built-in Gateway API controller of skiff"},
    }))
    .expect("a valid GatewayClass");
    loop {
        match api.create(&PostParams::default(), &class).await {
            Ok(_) => return,
            Err(kube::Error::Api(e)) if e.code == 409 => return,
            Err(e) => tracing::debug!("gateway: creating GatewayClass {CLASS_NAME}: {e}"),
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn definitions_parse_and_cover_the_three_kinds() {
        let defs = definitions();
        let names: Vec<_> = defs
            .iter()
            .map(|d| d["metadata"]["name"].as_str().unwrap().to_owned())
            .collect();
        assert_eq!(
            names,
            [
                "gatewayclasses.gateway.networking.k8s.io",
                "gateways.gateway.networking.k8s.io",
                "httproutes.gateway.networking.k8s.io"
            ]
        );
        for d in defs {
            let crd: CustomResourceDefinition = serde_json::from_value(d).unwrap();
            let v = &crd.spec.versions[0];
            assert!(v.subresources.as_ref().unwrap().status.is_some());
        }
    }

    #[test]
    fn only_older_crds_of_ours_are_updated() {
        let ann = |pairs: &[(&str, &str)]| {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<std::collections::BTreeMap<_, _>>()
        };
        assert_eq!(install_action(None), Install::Create);
        assert_eq!(
            install_action(Some(&ann(&[(REVISION_ANNOTATION, "0")]))),
            Install::Update
        );
        let current = REVISION.to_string();
        assert_eq!(
            install_action(Some(&ann(&[(REVISION_ANNOTATION, &current)]))),
            Install::Keep
        );
        // Upstream's bundle, installed by the user, is theirs.
        assert_eq!(
            install_action(Some(&ann(&[(
                "gateway.networking.k8s.io/bundle-version",
                "v1.3.0"
            )]))),
            Install::Keep
        );
    }
}
