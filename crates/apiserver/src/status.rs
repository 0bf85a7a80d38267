//! API errors and their wire form, a `metav1.Status` with Kubernetes' reason and code.
//!
//! The constructors reproduce the messages of `k8s.io/apimachinery/pkg/api/errors`, because
//! clients (kubectl, client-go's `errors.IsConflict`, the Python client) match on reason and
//! code, and users recognise the text.

use serde_json::{json, Value};

use crate::registry::ResourceDef;
use crate::validation::FieldError;

/// A failed API request, rendered as a `metav1.Status`.
#[derive(Clone, Debug, thiserror::Error)]
#[error("{message}")]
pub struct ApiError {
    /// HTTP status code.
    pub code: u16,
    /// Machine-readable reason (`NotFound`, `Conflict`, `Invalid`, ...).
    pub reason: &'static str,
    /// Human-readable message.
    pub message: String,
    /// `details` of the Status, when there are any.
    pub details: Option<Value>,
}

/// Result of an API operation.
pub type ApiResult<T> = Result<T, ApiError>;

impl ApiError {
    /// An error with a code, reason and message.
    pub fn new(code: u16, reason: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            code,
            reason,
            message: message.into(),
            details: None,
        }
    }

    /// The same error with `details`.
    pub fn with_details(mut self, details: Value) -> ApiError {
        self.details = Some(details);
        self
    }

    /// 400 BadRequest.
    pub fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::new(400, "BadRequest", message)
    }

    /// 401 Unauthorized.
    pub fn unauthorized() -> ApiError {
        ApiError::new(401, "Unauthorized", "Unauthorized")
    }

    /// 403 Forbidden with an authorizer's explanation.
    pub fn forbidden(message: impl Into<String>) -> ApiError {
        ApiError::new(403, "Forbidden", message)
    }

    /// 404 for a path no handler serves.
    pub fn path_not_found() -> ApiError {
        ApiError::new(
            404,
            "NotFound",
            "the server could not find the requested resource",
        )
        .with_details(json!({}))
    }

    /// 404 for a missing object: `pods "x" not found`.
    pub fn not_found(def: &ResourceDef, name: &str) -> ApiError {
        ApiError::new(
            404,
            "NotFound",
            format!("{} \"{name}\" not found", def.qualified()),
        )
        .with_details(qualified_details(def, name))
    }

    /// 404 for a missing namespace when creating into it.
    pub fn namespace_not_found(namespace: &str) -> ApiError {
        ApiError::new(
            404,
            "NotFound",
            format!("namespaces \"{namespace}\" not found"),
        )
        .with_details(json!({"name": namespace, "kind": "namespaces"}))
    }

    /// 409 AlreadyExists.
    pub fn already_exists(def: &ResourceDef, name: &str) -> ApiError {
        ApiError::new(
            409,
            "AlreadyExists",
            format!("{} \"{name}\" already exists", def.qualified()),
        )
        .with_details(qualified_details(def, name))
    }

    /// 409 Conflict on a stale resourceVersion or failed precondition.
    pub fn conflict(def: &ResourceDef, name: &str, why: &str) -> ApiError {
        ApiError::new(
            409,
            "Conflict",
            format!(
                "Operation cannot be fulfilled on {} \"{name}\": {why}",
                def.qualified()
            ),
        )
        .with_details(qualified_details(def, name))
    }

    /// The conflict of an update carrying an outdated resourceVersion.
    pub fn stale(def: &ResourceDef, name: &str) -> ApiError {
        ApiError::conflict(
            def,
            name,
            "the object has been modified; please apply your changes to the latest version and try again",
        )
    }

    /// 403 when creating into a namespace being deleted.
    pub fn namespace_terminating(def: &ResourceDef, name: &str, namespace: &str) -> ApiError {
        let message = format!(
            "unable to create new content in namespace {namespace} because it is being terminated"
        );
        ApiError::new(
            403,
            "Forbidden",
            format!("{} \"{name}\" is forbidden: {message}", def.qualified()),
        )
        .with_details(json!({
            "name": name,
            "group": def.group,
            "kind": def.plural,
            "causes": [{"reason": "NamespaceTerminating", "message": message, "field": "metadata.namespace"}],
        }))
    }

    /// 422 Invalid, listing every field error as a cause.
    pub fn invalid(kind: &str, group: &str, name: &str, errors: &[FieldError]) -> ApiError {
        let summary = if errors.len() == 1 {
            errors[0].to_string()
        } else {
            let all: Vec<String> = errors.iter().map(ToString::to_string).collect();
            format!("[{}]", all.join(", "))
        };
        let causes: Vec<Value> = errors
            .iter()
            .map(|e| json!({"reason": e.kind.reason(), "message": e.detail_message(), "field": e.field}))
            .collect();
        let mut details = json!({"name": name, "kind": kind, "causes": causes});
        if !group.is_empty() {
            details["group"] = json!(group);
        }
        ApiError::new(
            422,
            "Invalid",
            format!("{kind} \"{name}\" is invalid: {summary}"),
        )
        .with_details(details)
    }

    /// 405 MethodNotAllowed.
    pub fn method_not_supported() -> ApiError {
        ApiError::new(
            405,
            "MethodNotAllowed",
            "the server does not allow this method on the requested resource",
        )
        .with_details(json!({}))
    }

    /// 406 NotAcceptable: only JSON is served.
    pub fn not_acceptable() -> ApiError {
        ApiError::new(
            406,
            "NotAcceptable",
            "only the following media types are accepted: application/json",
        )
    }

    /// 415 UnsupportedMediaType for a body in a format the server does not read.
    pub fn unsupported_media_type(content_type: &str, accepted: &[&str]) -> ApiError {
        ApiError::new(
            415,
            "UnsupportedMediaType",
            format!(
                "the body of the request was in an unknown format ({content_type}) - accepted media types include: {}",
                accepted.join(", ")
            ),
        )
    }

    /// 410 Gone, reason Expired: the requested resourceVersion was compacted.
    pub fn expired(message: impl Into<String>) -> ApiError {
        ApiError::new(410, "Expired", message)
    }

    /// 413 for bodies over the request size limit.
    pub fn too_large(limit: usize) -> ApiError {
        ApiError::new(
            413,
            "RequestEntityTooLarge",
            format!("Request entity too large: limit is {limit}"),
        )
    }

    /// 504 Timeout, e.g. a resourceVersion newer than the store's.
    pub fn timeout(message: impl Into<String>) -> ApiError {
        ApiError::new(504, "Timeout", message)
    }

    /// 500 InternalError.
    pub fn internal(err: impl std::fmt::Display) -> ApiError {
        ApiError::new(
            500,
            "InternalError",
            format!("Internal error occurred: {err}"),
        )
    }

    /// The `metav1.Status` JSON for this error.
    pub fn to_status(&self) -> Value {
        let mut status = json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        });
        if let Some(details) = &self.details {
            status["details"] = details.clone();
        }
        status
    }
}

fn qualified_details(def: &ResourceDef, name: &str) -> Value {
    let mut details = json!({"name": name, "kind": def.plural});
    if !def.group.is_empty() {
        details["group"] = json!(def.group);
    }
    details
}

/// A `metav1.Status` of success, as returned by deletes of kinds that do not return the
/// deleted object.
pub fn success_status(def: &ResourceDef, name: &str, uid: &str) -> Value {
    let mut details = qualified_details(def, name);
    details["uid"] = json!(uid);
    json!({
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Success",
        "details": details,
    })
}

impl From<skiff_store::StoreError> for ApiError {
    fn from(err: skiff_store::StoreError) -> ApiError {
        match err {
            skiff_store::StoreError::Compacted { compact_revision } => ApiError::expired(format!(
                "too old resource version: the oldest available is {compact_revision}"
            )),
            skiff_store::StoreError::FutureRevision {
                requested,
                current_revision,
            } => ApiError::timeout(format!(
                "Too large resource version: {requested}, current: {current_revision}"
            )),
            other => ApiError::internal(other),
        }
    }
}
