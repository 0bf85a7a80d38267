//! ValidatingAdmissionPolicy (kube-apiserver's admission plugin of that name): CEL
//! validations of `admissionregistration.k8s.io/v1` policies, applied through their
//! bindings.
//!
//! For every binding (by name) whose policy exists: the request must match the policy's
//! `matchConstraints` and the binding's `matchResources` (rules, excluded rules, namespace
//! and object selectors); the parameters come from the binding's `paramRef` (one object by
//! name, or every object its selector picks, of the policy's `paramKind`); the
//! `matchConditions` must all hold; the `variables` are computed in order; then each
//! validation is evaluated with `object`, `oldObject`, `request`, `params`,
//! `namespaceObject` and `variables`. A failed validation is acted on as the binding's
//! `validationActions` say: `Deny` refuses the request (422 Invalid unless the validation
//! gives another `reason`), `Warn` adds a warning, `Audit` is logged. An expression that
//! cannot be evaluated, or parameters that cannot be found, count as failures under
//! `failurePolicy: Fail` and are skipped under `Ignore`. Type checking (`status.typeChecking`)
//! is not done.

use std::collections::HashMap;
use std::sync::Arc;

use cel::objects::{Key, Map};
use cel::{Context, Value as Cel};
use serde_json::{json, Value};

use super::webhook::{review, rules};
use super::{Attributes, Operation, Warnings};
use crate::expressions::{compiled, to_cel};
use crate::handlers::Api;
use crate::kinds::{array_at, selector_string, str_at, REGISTRY};
use crate::selector::LabelSelector;
use crate::status::{ApiError, ApiResult};

/// The API group of policies and bindings.
const GROUP: &str = "admissionregistration.k8s.io";

/// Evaluates the bound policies matching the request; the first denial refuses it.
pub(super) async fn validate(
    api: &Api,
    attrs: &Attributes<'_>,
    obj: &Value,
    warnings: &mut Warnings,
) -> ApiResult<()> {
    if rules::exempt(attrs.def.group, attrs.def.kind) {
        return Ok(());
    }
    let (Some(policies), Some(bindings)) = (
        REGISTRY.by_kind(GROUP, "v1", "ValidatingAdmissionPolicy"),
        REGISTRY.by_kind(GROUP, "v1", "ValidatingAdmissionPolicyBinding"),
    ) else {
        return Ok(());
    };
    // The server's mirror holds every acknowledged policy and binding write.
    let bindings = api.reflector().list(bindings);
    if bindings.is_empty() {
        return Ok(());
    }
    let request = Request::new(api, attrs, obj);
    for binding in &bindings {
        let policy_name = str_at(binding, "/spec/policyName");
        let Some(policy) = api.reflector().get(policies, "", policy_name) else {
            continue;
        };
        let bound = Bound {
            policy: &policy,
            binding,
        };
        for failure in request.evaluate(api, &bound).await? {
            bound.act(attrs, obj, &failure, warnings)?;
        }
    }
    Ok(())
}

/// A policy with one of its bindings.
struct Bound<'a> {
    policy: &'a Value,
    binding: &'a Value,
}

/// A failed validation (or, under `failurePolicy: Fail`, an evaluation that failed).
#[derive(Debug, PartialEq)]
struct Failure {
    message: String,
    /// `Invalid` unless the validation gives another reason.
    reason: &'static str,
}

impl Bound<'_> {
    fn name(&self) -> &str {
        str_at(self.policy, "/metadata/name")
    }

    fn binding_name(&self) -> &str {
        str_at(self.binding, "/metadata/name")
    }

    fn ignores_failures(&self) -> bool {
        str_at(self.policy, "/spec/failurePolicy") == "Ignore"
    }

    /// A failed evaluation, under the failure policy.
    fn failed(&self, cause: String) -> Option<Failure> {
        if self.ignores_failures() {
            tracing::warn!(
                policy = self.name(),
                binding = self.binding_name(),
                "{cause} (failurePolicy Ignore: request admitted)"
            );
            None
        } else {
            Some(Failure {
                message: cause,
                reason: "Invalid",
            })
        }
    }

    /// Acts on a failure as the binding's `validationActions` say.
    fn act(
        &self,
        attrs: &Attributes<'_>,
        obj: &Value,
        failure: &Failure,
        warnings: &mut Warnings,
    ) -> ApiResult<()> {
        for action in array_at(self.binding, "/spec/validationActions") {
            match action.as_str() {
                Some("Deny") => return Err(self.denial(attrs, obj, failure)),
                Some("Warn") => warnings.push(format!(
                    "Validation failed for ValidatingAdmissionPolicy '{}' with binding '{}': {}",
                    self.name(),
                    self.binding_name(),
                    failure.message
                )),
                Some("Audit") => tracing::info!(
                    policy = self.name(),
                    binding = self.binding_name(),
                    "validation failed (audit): {}",
                    failure.message
                ),
                _ => {}
            }
        }
        Ok(())
    }

    /// Kubernetes' denial: the Forbidden message of admission plugins, with the
    /// validation's reason and its status code, and the denial as the one cause.
    fn denial(&self, attrs: &Attributes<'_>, obj: &Value, failure: &Failure) -> ApiError {
        let message = format!(
            "ValidatingAdmissionPolicy '{}' with binding '{}' denied request: {}",
            self.name(),
            self.binding_name(),
            failure.message
        );
        let mut err = super::forbidden(attrs, obj, &message);
        err.reason = failure.reason;
        err.code = match failure.reason {
            "Unauthorized" => 401,
            "Forbidden" => 403,
            "RequestEntityTooLarge" => 413,
            _ => 422,
        };
        if let Some(details) = err.details.as_mut() {
            details["causes"] = json!([{"message": message}]);
        }
        err
    }
}

/// What the expressions see of the request, shared by every binding.
struct Request<'a> {
    attrs: &'a Attributes<'a>,
    /// The written object (null for deletions).
    object: Cel,
    /// The stored object (null for creations).
    old_object: Cel,
    /// The AdmissionReview's `request`.
    request: Cel,
    /// The namespace of a namespaced request (null otherwise, or when it is gone).
    namespace: Option<Value>,
    /// The object whose labels `objectSelector`s see, and its old version.
    labels_of: &'a Value,
    /// What namespace selectors see: the Namespace (itself, for Namespaces).
    namespace_labels: Option<Value>,
}

impl<'a> Request<'a> {
    fn new(api: &Api, attrs: &'a Attributes<'a>, obj: &'a Value) -> Request<'a> {
        let deleting = attrs.operation == Operation::Delete;
        let review = review::request(attrs, "", (!deleting).then_some(obj));
        let namespace = (attrs.def.namespaced && !attrs.namespace.is_empty())
            .then(|| REGISTRY.by_kind("", "v1", "Namespace"))
            .flatten()
            .and_then(|def| api.reflector().get(def, "", attrs.namespace))
            .map(|ns| Value::clone(&ns));
        let namespace_labels = if attrs.def.group.is_empty() && attrs.def.kind == "Namespace" {
            Some(obj.clone())
        } else if attrs.def.namespaced {
            Some(namespace.clone().unwrap_or_else(|| json!({})))
        } else {
            None
        };
        Request {
            attrs,
            object: if deleting {
                Cel::Null
            } else {
                to_cel(obj, None)
            },
            old_object: attrs.old.map_or(Cel::Null, |o| to_cel(o, None)),
            request: to_cel(&review["request"], None),
            namespace,
            labels_of: obj,
            namespace_labels,
        }
    }

    /// The failures of one bound policy for this request (none when it does not apply).
    async fn evaluate(&self, api: &Api, bound: &Bound<'_>) -> ApiResult<Vec<Failure>> {
        let constraints = bound.policy.pointer("/spec/matchConstraints");
        let resources = bound
            .binding
            .pointer("/spec/matchResources")
            .filter(|m| !m.is_null());
        for selection in constraints.into_iter().chain(resources) {
            match self.selects(selection) {
                Ok(true) => {}
                Ok(false) => return Ok(Vec::new()),
                Err(e) => return Ok(bound.failed(e).into_iter().collect()),
            }
        }
        if constraints.is_none() {
            return Ok(Vec::new());
        }
        let params = match self.params(api, bound).await? {
            Params::Found(params) => params,
            Params::Skip => return Ok(Vec::new()),
            Params::Failed(cause) => return Ok(bound.failed(cause).into_iter().collect()),
            Params::Deny(message) => {
                return Ok(vec![Failure {
                    message,
                    reason: "Invalid",
                }])
            }
        };
        let mut failures = Vec::new();
        for param in &params {
            failures.extend(self.evaluate_with(bound, param));
        }
        Ok(failures)
    }

    /// Whether a `MatchResources` selects the request.
    fn selects(&self, selection: &Value) -> Result<bool, String> {
        let attrs = self.attrs;
        let def = attrs.def;
        let request = rules::Request {
            operation: attrs.operation,
            group: def.group,
            version: def.version,
            resource: def.plural,
            subresource: attrs.subresource,
            namespaced: def.namespaced,
        };
        let name_matches = |rule: &Value| {
            let names = array_at(rule, "/resourceNames");
            names.is_empty() || names.iter().any(|n| n.as_str() == Some(attrs.name))
        };
        let rule_matches =
            |rule: &Value| rules::Rule::from_json(rule).matches(&request) && name_matches(rule);
        // A binding's `matchResources` without rules narrows nothing (a policy's
        // `matchConstraints` must have rules).
        let included = array_at(selection, "/resourceRules");
        if !(included.is_empty() || included.iter().any(rule_matches))
            || array_at(selection, "/excludeResourceRules")
                .iter()
                .any(rule_matches)
        {
            return Ok(false);
        }
        let selector = |field: &str| {
            LabelSelector::parse(&selector_string(selection.get(field)))
                .map_err(|e| format!("invalid {field}: {e}"))
        };
        let objects = selector("objectSelector")?;
        if !objects.is_empty()
            && !objects.matches(self.labels_of)
            && !attrs.old.is_some_and(|old| objects.matches(old))
        {
            return Ok(false);
        }
        let namespaces = selector("namespaceSelector")?;
        if let Some(namespace) = &self.namespace_labels {
            if !namespaces.is_empty() && !namespaces.matches(namespace) {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// The parameter objects of a bound policy.
    async fn params(&self, api: &Api, bound: &Bound<'_>) -> ApiResult<Params> {
        let Some(kind) = bound
            .policy
            .pointer("/spec/paramKind")
            .filter(|k| !k.is_null())
        else {
            return Ok(Params::Found(vec![Value::Null]));
        };
        let Some(param_ref) = bound
            .binding
            .pointer("/spec/paramRef")
            .filter(|r| !r.is_null())
        else {
            return Ok(Params::Failed(
                "failed to configure binding: no paramRef specified".into(),
            ));
        };
        let api_version = str_at(kind, "/apiVersion");
        let (group, version) = api_version.rsplit_once('/').unwrap_or(("", api_version));
        let kind_name = str_at(kind, "/kind");
        let Some(def) = api.registry().by_kind(group, version, kind_name) else {
            return Ok(Params::Failed(format!(
                "failed to configure policy: failed to find resource referenced by paramKind: '{api_version}, Kind={kind_name}'"
            )));
        };
        let namespace = if def.namespaced {
            match str_at(param_ref, "/namespace") {
                "" if self.attrs.namespace.is_empty() => {
                    return Ok(Params::Failed(
                        "cannot use namespaced paramRef in policy binding that matches cluster-scoped resources"
                            .into(),
                    ))
                }
                "" => self.attrs.namespace,
                ns => ns,
            }
        } else {
            ""
        };
        let name = str_at(param_ref, "/name");
        let found: Vec<Value> = if !name.is_empty() {
            let stored = if api.reflector().mirrors(def) {
                api.reflector()
                    .get(def, namespace, name)
                    .map(|p| Value::clone(&p))
            } else {
                api.storage()
                    .get(def, namespace, name)
                    .await?
                    .map(|(mut p, _)| {
                        def.to_served(&mut p);
                        p
                    })
            };
            stored.into_iter().collect()
        } else {
            let selector = match LabelSelector::parse(&selector_string(param_ref.get("selector"))) {
                Ok(selector) => selector,
                Err(e) => return Ok(Params::Failed(format!("invalid paramRef selector: {e}"))),
            };
            super::list_all(api.storage(), def, namespace)
                .await?
                .into_iter()
                .filter(|p| selector.matches(p))
                .collect()
        };
        if !found.is_empty() {
            return Ok(Params::Found(found));
        }
        Ok(match str_at(param_ref, "/parameterNotFoundAction") {
            "Allow" => Params::Skip,
            _ => Params::Deny(
                "no params found for policy binding with `Deny` parameterNotFoundAction".into(),
            ),
        })
    }

    /// The failures of the policy's validations with one parameter object.
    fn evaluate_with(&self, bound: &Bound<'_>, params: &Value) -> Vec<Failure> {
        let spec = bound.policy.get("spec").unwrap_or(&Value::Null);
        let mut context = Context::default();
        context.add_variable_from_value("object", self.object.clone());
        context.add_variable_from_value("oldObject", self.old_object.clone());
        context.add_variable_from_value("request", self.request.clone());
        context.add_variable_from_value("params", to_cel(params, None));
        context.add_variable_from_value(
            "namespaceObject",
            self.namespace
                .as_ref()
                .map_or(Cel::Null, |ns| to_cel(ns, None)),
        );
        context.add_variable_from_value("variables", variables_map(HashMap::new()));
        for condition in array_at(spec, "/matchConditions") {
            let name = str_at(condition, "/name");
            match run(&context, str_at(condition, "/expression")) {
                Ok(Cel::Bool(true)) => {}
                Ok(Cel::Bool(false)) => return Vec::new(),
                Ok(other) => {
                    return bound
                        .failed(format!(
                            "failed to evaluate match condition {name:?}: expression did not evaluate to a boolean: {other:?}"
                        ))
                        .into_iter()
                        .collect()
                }
                Err(e) => {
                    return bound
                        .failed(format!("failed to evaluate match condition {name:?}: {e}"))
                        .into_iter()
                        .collect()
                }
            }
        }
        // Each variable sees the ones before it; one that fails is left out, so only the
        // expressions using it fail.
        let mut variables = HashMap::new();
        for variable in array_at(spec, "/variables") {
            if let Ok(value) = run(&context, str_at(variable, "/expression")) {
                variables.insert(
                    Key::String(Arc::new(str_at(variable, "/name").to_owned())),
                    value,
                );
                context.add_variable_from_value("variables", variables_map(variables.clone()));
            }
        }
        let mut failures = Vec::new();
        for validation in array_at(spec, "/validations") {
            let expression = str_at(validation, "/expression");
            let failure = match run(&context, expression) {
                Ok(Cel::Bool(true)) => None,
                Ok(Cel::Bool(false)) => Some(Failure {
                    message: message_of(&context, validation, expression),
                    reason: reason_of(validation),
                }),
                Ok(other) => bound.failed(format!(
                    "expression '{expression}' resulted in error: expected a boolean, got {other:?}"
                )),
                Err(e) => bound.failed(format!("expression '{expression}' resulted in error: {e}")),
            };
            failures.extend(failure);
        }
        failures
    }
}

/// The parameters a binding resolves to.
enum Params {
    /// The objects to evaluate with (one null when the policy takes no parameters).
    Found(Vec<Value>),
    /// None found under `parameterNotFoundAction: Allow`: the policy does not apply.
    Skip,
    /// None found under `parameterNotFoundAction: Deny`.
    Deny(String),
    /// The binding or policy cannot be used (under the failure policy).
    Failed(String),
}

fn variables_map(variables: HashMap<Key, Cel>) -> Cel {
    Cel::Map(Map {
        map: Arc::new(variables),
    })
}

/// Runs one expression.
fn run(context: &Context, expression: &str) -> Result<Cel, String> {
    compiled(expression)?
        .execute(context)
        .map_err(|e| e.to_string())
}

/// A failed validation's message: its `messageExpression`'s (non-empty, one-line) result,
/// else its `message`, else `failed expression: <expression>`.
fn message_of(context: &Context, validation: &Value, expression: &str) -> String {
    let from_expression = validation
        .get("messageExpression")
        .and_then(Value::as_str)
        .and_then(|e| match run(context, e) {
            Ok(Cel::String(s)) if !s.trim().is_empty() && !s.contains('\n') => Some(s.to_string()),
            _ => None,
        });
    from_expression.unwrap_or_else(|| match str_at(validation, "/message") {
        "" => format!("failed expression: {}", expression.trim()),
        message => message.to_owned(),
    })
}

fn reason_of(validation: &Value) -> &'static str {
    let reason = str_at(validation, "/reason");
    crate::kinds::admission_policy::REASONS
        .iter()
        .find(|r| **r == reason)
        .copied()
        .unwrap_or("Invalid")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn context(object: Value, params: Value) -> Context<'static, 'static> {
        let mut context = Context::default();
        context.add_variable_from_value("object", to_cel(&object, None));
        context.add_variable_from_value("params", to_cel(&params, None));
        context.add_variable_from_value("variables", variables_map(HashMap::new()));
        context
    }

    #[test]
    fn messages() {
        let ctx = context(
            json!({"spec": {"replicas": 7}}),
            json!({"data": {"max": "5"}}),
        );
        assert_eq!(
            run(&ctx, "object.spec.replicas <= int(params.data.max)").unwrap(),
            Cel::Bool(false)
        );
        let with_expression = json!({"messageExpression":
            "'replicas ' + string(object.spec.replicas) + ' > ' + params.data.max",
            "message": "too many"});
        assert_eq!(message_of(&ctx, &with_expression, "x"), "replicas 7 > 5");
        let broken = json!({"messageExpression": "object.nope", "message": "too many"});
        assert_eq!(message_of(&ctx, &broken, "x"), "too many");
        assert_eq!(
            message_of(&ctx, &json!({}), "object.spec.replicas <= 5"),
            "failed expression: object.spec.replicas <= 5"
        );
        assert_eq!(reason_of(&json!({"reason": "Forbidden"})), "Forbidden");
        assert_eq!(reason_of(&json!({})), "Invalid");
    }
}
