//! The review resources, answered and never stored: SelfSubjectAccessReview (`kubectl auth
//! can-i`), SubjectAccessReview, LocalSubjectAccessReview, SelfSubjectRulesReview (`can-i
//! --list`), TokenReview and SelfSubjectReview (`kubectl auth whoami`).

use hyper::StatusCode;
use serde_json::{json, Value};

use super::{Api, Reply};
use crate::authn::UserInfo;
use crate::authz::{Attributes, Decision, ResourceAttributes};
use crate::kinds::{array_at, str_at};
use crate::registry::ResourceDef;
use crate::request::RequestInfo;
use crate::status::{ApiError, ApiResult};

/// Answers a POST of a review resource by `user`.
pub(super) async fn review(
    api: &Api,
    def: &'static ResourceDef,
    info: &RequestInfo,
    user: &UserInfo,
    body: &[u8],
) -> ApiResult<Reply> {
    let mut review: Value = serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("couldn't decode {}: {e}", def.kind)))?;
    if !review.is_object() {
        return Err(ApiError::bad_request(format!(
            "{} must be an object",
            def.kind
        )));
    }
    review["apiVersion"] = json!(def.api_version());
    review["kind"] = json!(def.kind);
    let status = match def.kind {
        "SelfSubjectAccessReview" => access(api, user, &review)?,
        "SubjectAccessReview" | "LocalSubjectAccessReview" => {
            let subject = UserInfo {
                name: str_at(&review, "/spec/user").to_owned(),
                groups: array_at(&review, "/spec/groups")
                    .iter()
                    .filter_map(Value::as_str)
                    .map(str::to_owned)
                    .collect(),
                uid: str_at(&review, "/spec/uid").to_owned(),
                ..UserInfo::default()
            };
            if subject.name.is_empty() && subject.groups.is_empty() {
                return Err(invalid(
                    def,
                    "spec.user",
                    "at least one of user or group must be specified",
                ));
            }
            if def.kind == "LocalSubjectAccessReview"
                && str_at(&review, "/spec/resourceAttributes/namespace") != info.namespace
            {
                return Err(invalid(
                    def,
                    "spec.resourceAttributes.namespace",
                    "must match metadata.namespace",
                ));
            }
            access(api, &subject, &review)?
        }
        "SelfSubjectRulesReview" => {
            let namespace = str_at(&review, "/spec/namespace");
            let (resource_rules, non_resource_rules) = api.rbac.rules_for(user, namespace);
            json!({"resourceRules": resource_rules, "nonResourceRules": non_resource_rules, "incomplete": false})
        }
        "TokenReview" => match api.authenticate_token(str_at(&review, "/spec/token")).await {
            Some(user) => json!({
                "authenticated": true,
                "user": {"username": user.name, "groups": user.groups},
                "audiences": [crate::serviceaccount::ISSUER],
            }),
            None => json!({"authenticated": false, "error": "invalid bearer token"}),
        },
        "SelfSubjectReview" => json!({"userInfo": user.to_json()}),
        _ => return Err(ApiError::method_not_supported()),
    };
    review["status"] = status;
    if review.get("metadata").is_none_or(Value::is_null) {
        review["metadata"] = json!({});
    }
    review["metadata"]["creationTimestamp"] = Value::Null;
    Ok(Reply::json(StatusCode::CREATED, review))
}

fn invalid(def: &ResourceDef, field: &str, detail: &str) -> ApiError {
    ApiError::invalid(
        def.kind,
        def.group,
        "",
        &[crate::validation::FieldError::invalid(
            field,
            json!(""),
            detail,
        )],
    )
}

/// The status of an access review for `user`: the server's own authorizer decides.
fn access(api: &Api, user: &UserInfo, review: &Value) -> ApiResult<Value> {
    let (verb, resource, path) = match review.pointer("/spec/resourceAttributes") {
        Some(r) if r.is_object() => (
            str_at(r, "/verb"),
            Some(ResourceAttributes {
                group: str_at(r, "/group"),
                resource: str_at(r, "/resource"),
                subresource: str_at(r, "/subresource"),
                namespace: str_at(r, "/namespace"),
                name: str_at(r, "/name"),
            }),
            "",
        ),
        _ => (
            str_at(review, "/spec/nonResourceAttributes/verb"),
            None,
            str_at(review, "/spec/nonResourceAttributes/path"),
        ),
    };
    let attributes = Attributes {
        user,
        verb,
        resource,
        path,
    };
    Ok(match api.authorizer.authorize(&attributes) {
        Decision::Allow => {
            let request = match &attributes.resource {
                Some(r) => crate::rbac::Request::Resource {
                    verb,
                    group: r.group,
                    resource: r.resource,
                    subresource: r.subresource,
                    name: r.name,
                },
                None => crate::rbac::Request::Path { verb, path },
            };
            let namespace = attributes.resource.as_ref().map_or("", |r| r.namespace);
            match api.rbac.allows(user, namespace, &request) {
                Some(reason) => json!({"allowed": true, "reason": reason}),
                None => json!({"allowed": true}),
            }
        }
        Decision::Deny(reason) => json!({"allowed": false, "denied": true, "reason": reason}),
        Decision::NoOpinion => json!({"allowed": false}),
    })
}
