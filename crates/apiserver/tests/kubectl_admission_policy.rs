//! The API groups added for issue 3, through the real kubectl (oldest and newest):
//! ValidatingAdmissionPolicies with their bindings (Deny and Warn actions, selectors,
//! ConfigMap and custom-resource parameters, variables, match conditions, failure policies), RuntimeClasses and the
//! RuntimeClass admission plugin, and API Priority and Fairness' default configuration;
//! discovery and OpenAPI (`api-resources`, `explain`, client-side validation) for each.

use crate::common;

use std::path::Path;
use std::process::Output;

use common::{fails, kubectls, ok, TestServer};

fn apply(s: &TestServer, kubectl: &Path, yaml: &str) -> Output {
    s.kubectl_stdin(kubectl, &["apply", "-f", "-"], Some(yaml))
}

fn create_in(s: &TestServer, kubectl: &Path, namespace: &str, yaml: &str) -> Output {
    s.kubectl_stdin(kubectl, &["-n", namespace, "create", "-f", "-"], Some(yaml))
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn deployment(name: &str, replicas: u32) -> String {
    format!(
        "apiVersion: apps/v1
kind: Deployment
metadata: {{name: {name}}}
spec:
  replicas: {replicas}
  selector: {{matchLabels: {{app: {name}}}}}
  template:
    metadata: {{labels: {{app: {name}}}}}
    spec:
      containers: [{{name: c, image: nginx}}]
"
    )
}

/// A pod with `containers` containers, labelled `labels` (a YAML flow mapping).
fn pod(name: &str, containers: usize, labels: &str) -> String {
    let containers: Vec<String> = (0..containers)
        .map(|i| format!("{{name: c{i}, image: nginx}}"))
        .collect();
    format!(
        "apiVersion: v1
kind: Pod
metadata: {{name: {name}, labels: {labels}}}
spec:
  containers: [{}]
",
        containers.join(", ")
    )
}

const REPLICA_POLICY: &str = "apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingAdmissionPolicy
metadata: {name: replica-limit}
spec:
  failurePolicy: Fail
  matchConstraints:
    resourceRules:
    - apiGroups: [apps]
      apiVersions: [v1]
      operations: [CREATE, UPDATE]
      resources: [deployments]
  validations:
  - expression: object.spec.replicas <= 5
---
apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingAdmissionPolicyBinding
metadata: {name: replica-limit-test}
spec:
  policyName: replica-limit
  validationActions: [Deny]
  matchResources:
    namespaceSelector:
      matchLabels: {environment: test}
    objectSelector:
      matchExpressions: [{key: skip-policy, operator: DoesNotExist}]
";

/// Deny: a deployment over the limit in a selected namespace is refused with Kubernetes'
/// message; other namespaces and smaller deployments are not.
fn deny(s: &TestServer, kubectl: &Path) {
    let v = kubectl.display().to_string();
    ok(
        apply(s, kubectl, REPLICA_POLICY),
        "apply policy and binding",
    );
    let listed = ok(
        s.kubectl(kubectl, &["get", "validatingadmissionpolicies"]),
        "get vap",
    );
    let header: Vec<&str> = listed.lines().next().unwrap().split_whitespace().collect();
    assert_eq!(
        header,
        ["NAME", "VALIDATIONS", "PARAMKIND", "AGE"],
        "{v}: {listed}"
    );
    assert!(
        listed.contains("replica-limit") && listed.contains("<unset>"),
        "{v}: {listed}"
    );
    let bindings = ok(
        s.kubectl(kubectl, &["get", "validatingadmissionpolicybindings"]),
        "get bindings",
    );
    assert!(bindings.contains("replica-limit-test"), "{v}: {bindings}");
    for (ns, environment) in [("test", "test"), ("prod", "prod")] {
        ok(
            s.kubectl(kubectl, &["create", "namespace", ns]),
            "namespace",
        );
        ok(
            s.kubectl(
                kubectl,
                &[
                    "label",
                    "namespace",
                    ns,
                    &format!("environment={environment}"),
                ],
            ),
            "label namespace",
        );
    }
    let refused = fails(
        create_in(s, kubectl, "test", &deployment("big", 7)),
        "too many replicas",
    );
    assert!(
        refused.contains("deployments.apps \"big\" is forbidden: ValidatingAdmissionPolicy 'replica-limit' with binding 'replica-limit-test' denied request: failed expression: object.spec.replicas <= 5")
            || refused.contains("The deployments \"big\" is invalid: : ValidatingAdmissionPolicy 'replica-limit' with binding 'replica-limit-test' denied request: failed expression: object.spec.replicas <= 5"),
        "{v}: {refused}"
    );
    // The status is 422 Invalid, with the denial as its cause.
    let raw = s.kubectl_stdin(
        kubectl,
        &["-n", "test", "create", "-f", "-", "-v=8"],
        Some(&deployment("big", 9)),
    );
    let log = stderr(&raw);
    assert!(log.contains("422 Unprocessable Entity"), "{v}: {log}");
    // kubectl 1.33 logs the body with its quotes escaped.
    assert!(
        log.replace('\\', "").contains("\"reason\":\"Invalid\""),
        "{v}: {log}"
    );
    ok(
        create_in(s, kubectl, "test", &deployment("small", 3)),
        "small",
    );
    // objectSelector: a labelled object is not selected.
    let skipped = deployment("skipped", 7).replace(
        "metadata: {name: skipped}",
        "metadata: {name: skipped, labels: {skip-policy: 'yes'}}",
    );
    ok(create_in(s, kubectl, "test", &skipped), "object selector");
    ok(
        create_in(s, kubectl, "prod", &deployment("big", 7)),
        "other namespace",
    );
    // Updates are validated too; the `scale` subresource is not selected by a rule
    // naming `deployments` alone, as in Kubernetes.
    let patched = fails(
        s.kubectl(
            kubectl,
            &[
                "-n",
                "test",
                "patch",
                "deployment",
                "small",
                "-p",
                "{\"spec\":{\"replicas\":6}}",
            ],
        ),
        "patch",
    );
    assert!(patched.contains("denied request"), "{v}: {patched}");
    ok(
        s.kubectl(
            kubectl,
            &["-n", "test", "scale", "deployment/small", "--replicas=6"],
        ),
        "scale",
    );
    // Without its binding, the policy does nothing.
    ok(
        s.kubectl(
            kubectl,
            &[
                "delete",
                "validatingadmissionpolicybinding",
                "replica-limit-test",
            ],
        ),
        "delete binding",
    );
    ok(
        create_in(s, kubectl, "test", &deployment("big", 7)),
        "unbound",
    );
}

const LABEL_POLICY: &str = "apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingAdmissionPolicy
metadata: {name: team-label}
spec:
  matchConstraints:
    resourceRules:
    - apiGroups: ['']
      apiVersions: [v1]
      operations: [CREATE]
      resources: [configmaps]
  validations:
  - expression: has(object.metadata.labels) && has(object.metadata.labels.team)
    messageExpression: \"'configmap ' + object.metadata.name + ' has no team label'\"
    reason: Forbidden
---
apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingAdmissionPolicyBinding
metadata: {name: team-label-warn}
spec:
  policyName: team-label
  validationActions: [Warn, Audit]
  matchResources:
    namespaceSelector:
      matchLabels: {teams: required}
";

/// Warn: the request goes through and kubectl prints the policy's warning.
fn warn(s: &TestServer, kubectl: &Path) {
    let v = kubectl.display().to_string();
    ok(apply(s, kubectl, LABEL_POLICY), "apply warn policy");
    ok(
        s.kubectl(kubectl, &["create", "namespace", "teams"]),
        "namespace",
    );
    ok(
        s.kubectl(kubectl, &["label", "namespace", "teams", "teams=required"]),
        "label",
    );
    let out = s.kubectl(kubectl, &["-n", "teams", "create", "configmap", "plain"]);
    ok(out.clone(), "create configmap");
    let warning = stderr(&out);
    assert!(
        warning.contains("Warning: Validation failed for ValidatingAdmissionPolicy 'team-label' with binding 'team-label-warn': configmap plain has no team label"),
        "{v}: {warning}"
    );
    let labelled = create_in(
        s,
        kubectl,
        "teams",
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: labelled, labels: {team: a}}\n",
    );
    ok(labelled.clone(), "labelled configmap");
    assert!(
        !stderr(&labelled).contains("Warning"),
        "{v}: {}",
        stderr(&labelled)
    );
    // Not in a selected namespace: no warning.
    let other = s.kubectl(kubectl, &["create", "configmap", "elsewhere"]);
    ok(other.clone(), "configmap in default");
    assert!(
        !stderr(&other).contains("team-label"),
        "{v}: {}",
        stderr(&other)
    );
}

const PARAM_POLICY: &str = "apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingAdmissionPolicy
metadata: {name: container-limit}
spec:
  paramKind: {apiVersion: v1, kind: ConfigMap}
  matchConstraints:
    resourceRules:
    - apiGroups: ['']
      apiVersions: [v1]
      operations: [CREATE]
      resources: [pods]
  matchConditions:
  - name: not-exempt
    expression: '!has(object.metadata.labels) || !has(object.metadata.labels.exempt)'
  variables:
  - name: count
    expression: size(object.spec.containers)
  validations:
  - expression: variables.count <= int(params.data.maxContainers)
    messageExpression: \"'at most ' + params.data.maxContainers + ' containers in namespace ' + namespaceObject.metadata.name + ', got ' + string(variables.count)\"
---
apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingAdmissionPolicyBinding
metadata: {name: container-limit-binding}
spec:
  policyName: container-limit
  validationActions: [Deny]
  paramRef:
    name: container-limits
    namespace: default
    parameterNotFoundAction: Deny
  matchResources:
    namespaceSelector:
      matchLabels: {limited: 'true'}
";

/// Parameters: a ConfigMap named by the binding drives the limit; without it the binding
/// denies, as its `parameterNotFoundAction` says.
fn params(s: &TestServer, kubectl: &Path) {
    let v = kubectl.display().to_string();
    ok(apply(s, kubectl, PARAM_POLICY), "apply param policy");
    let listed = ok(
        s.kubectl(
            kubectl,
            &["get", "validatingadmissionpolicy", "container-limit"],
        ),
        "get",
    );
    assert!(listed.contains("v1/ConfigMap"), "{v}: {listed}");
    ok(
        s.kubectl(kubectl, &["create", "namespace", "limited"]),
        "ns",
    );
    ok(
        s.kubectl(kubectl, &["label", "namespace", "limited", "limited=true"]),
        "label",
    );
    let missing = fails(
        create_in(s, kubectl, "limited", &pod("one", 1, "{}")),
        "no params",
    );
    assert!(
        missing.contains("ValidatingAdmissionPolicy 'container-limit' with binding 'container-limit-binding' denied request: no params found for policy binding with `Deny` parameterNotFoundAction"),
        "{v}: {missing}"
    );
    ok(
        s.kubectl(
            kubectl,
            &[
                "-n",
                "default",
                "create",
                "configmap",
                "container-limits",
                "--from-literal=maxContainers=1",
            ],
        ),
        "params",
    );
    let refused = fails(
        create_in(s, kubectl, "limited", &pod("two", 2, "{}")),
        "two containers",
    );
    assert!(
        refused.contains("denied request: at most 1 containers in namespace limited, got 2"),
        "{v}: {refused}"
    );
    ok(
        create_in(s, kubectl, "limited", &pod("one", 1, "{}")),
        "one container",
    );
    // matchConditions: an exempt pod is not validated.
    ok(
        create_in(s, kubectl, "limited", &pod("exempt", 3, "{exempt: 'yes'}")),
        "exempt pod",
    );
    // Changing the parameter changes the decision.
    ok(
        s.kubectl(
            kubectl,
            &[
                "-n",
                "default",
                "patch",
                "configmap",
                "container-limits",
                "-p",
                "{\"data\":{\"maxContainers\":\"2\"}}",
            ],
        ),
        "raise the limit",
    );
    ok(
        create_in(s, kubectl, "limited", &pod("two", 2, "{}")),
        "two containers now",
    );
}

const REPLICA_LIMIT_CRD: &str = "apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata: {name: replicalimits.rules.example.com}
spec:
  group: rules.example.com
  scope: Namespaced
  names: {plural: replicalimits, singular: replicalimit, kind: ReplicaLimit}
  versions:
  - name: v1
    served: true
    storage: true
    schema:
      openAPIV3Schema:
        type: object
        properties:
          maxReplicas: {type: integer}
";

const CR_POLICY: &str = "apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingAdmissionPolicy
metadata: {name: replica-limit-cr}
spec:
  paramKind: {apiVersion: rules.example.com/v1, kind: ReplicaLimit}
  matchConstraints:
    resourceRules:
    - apiGroups: [apps]
      apiVersions: [v1]
      operations: [CREATE]
      resources: [deployments]
  validations:
  - expression: object.spec.replicas <= params.maxReplicas
    messageExpression: \"'object.spec.replicas must be no greater than ' + string(params.maxReplicas)\"
---
apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingAdmissionPolicyBinding
metadata: {name: replica-limit-cr}
spec:
  policyName: replica-limit-cr
  validationActions: [Deny]
  paramRef:
    selector: {}
    parameterNotFoundAction: Allow
  matchResources:
    namespaceSelector:
      matchLabels: {limits: custom}
";

const BROKEN_POLICY: &str = "apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingAdmissionPolicy
metadata: {name: broken}
spec:
  failurePolicy: FAILURE
  matchConstraints:
    resourceRules:
    - apiGroups: ['']
      apiVersions: [v1]
      operations: [CREATE]
      resources: [secrets]
  validations:
  - expression: object.nothing == 1
---
apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingAdmissionPolicyBinding
metadata: {name: broken}
spec:
  policyName: broken
  validationActions: [Deny]
";

/// Custom resources as parameters (every one in the request's namespace, by an empty
/// selector), and the failure policy of an expression that cannot be evaluated.
fn custom_params_and_failures(s: &TestServer, kubectl: &Path) {
    let v = kubectl.display().to_string();
    ok(apply(s, kubectl, REPLICA_LIMIT_CRD), "crd");
    ok(
        s.kubectl(
            kubectl,
            &[
                "wait",
                "--for",
                "condition=established",
                "crd/replicalimits.rules.example.com",
                "--timeout=20s",
            ],
        ),
        "established",
    );
    ok(apply(s, kubectl, CR_POLICY), "cr policy");
    for ns in ["custom", "custom-empty"] {
        ok(s.kubectl(kubectl, &["create", "namespace", ns]), "ns");
        ok(
            s.kubectl(kubectl, &["label", "namespace", ns, "limits=custom"]),
            "label",
        );
    }
    let limit = "apiVersion: rules.example.com/v1\nkind: ReplicaLimit\nmetadata: {name: three}\nmaxReplicas: 3\n";
    let mut created = create_in(s, kubectl, "custom", limit);
    for _ in 0..50 {
        if created.status.success() {
            break;
        }
        // The new kind is served a moment after the CRD is established.
        std::thread::sleep(std::time::Duration::from_millis(100));
        created = create_in(s, kubectl, "custom", limit);
    }
    ok(created, "replica limit");
    let refused = fails(
        create_in(s, kubectl, "custom", &deployment("four", 4)),
        "over the custom limit",
    );
    assert!(
        refused.contains("ValidatingAdmissionPolicy 'replica-limit-cr' with binding 'replica-limit-cr' denied request: object.spec.replicas must be no greater than 3"),
        "{v}: {refused}"
    );
    ok(
        create_in(s, kubectl, "custom", &deployment("three", 3)),
        "at the limit",
    );
    // No parameters in this namespace: `parameterNotFoundAction: Allow`.
    ok(
        create_in(s, kubectl, "custom-empty", &deployment("four", 4)),
        "no params",
    );

    // failurePolicy: an evaluation error refuses under Fail, is ignored under Ignore.
    let bad_policy = fails(apply(s, kubectl, BROKEN_POLICY), "bad failure policy");
    assert!(
        bad_policy.contains("spec.failurePolicy: Unsupported value: \"FAILURE\""),
        "{v}: {bad_policy}"
    );
    ok(
        apply(s, kubectl, &BROKEN_POLICY.replace("FAILURE", "Fail")),
        "broken policy",
    );
    let failed = fails(
        s.kubectl(
            kubectl,
            &["create", "secret", "generic", "s1", "--from-literal=a=b"],
        ),
        "evaluation error",
    );
    assert!(
        failed.contains("ValidatingAdmissionPolicy 'broken' with binding 'broken' denied request: expression 'object.nothing == 1' resulted in error"),
        "{v}: {failed}"
    );
    ok(
        apply(s, kubectl, &BROKEN_POLICY.replace("FAILURE", "Ignore")),
        "ignored",
    );
    ok(
        s.kubectl(
            kubectl,
            &["create", "secret", "generic", "s1", "--from-literal=a=b"],
        ),
        "ignored evaluation error",
    );
}

/// RuntimeClasses: validation, the admission plugin's refusal of an unknown class, and the
/// overhead and scheduling copied into the pod.
fn runtime_classes(s: &TestServer, kubectl: &Path) {
    let v = kubectl.display().to_string();
    let unknown = fails(
        s.kubectl_stdin(
            kubectl,
            &["create", "-f", "-"],
            Some("apiVersion: v1\nkind: Pod\nmetadata: {name: sandboxed}\nspec:\n  runtimeClassName: gvisor\n  containers: [{name: c, image: nginx}]\n"),
        ),
        "unknown class",
    );
    assert!(
        unknown.contains(
            "pods \"sandboxed\" is forbidden: pod rejected: RuntimeClass \"gvisor\" not found"
        ),
        "{v}: {unknown}"
    );
    let invalid = fails(
        apply(s, kubectl, "apiVersion: node.k8s.io/v1\nkind: RuntimeClass\nmetadata: {name: bad}\nhandler: Bad_Handler\n"),
        "bad handler",
    );
    assert!(
        invalid.contains("handler: Invalid value: \"Bad_Handler\""),
        "{v}: {invalid}"
    );
    ok(
        apply(
            s,
            kubectl,
            "apiVersion: node.k8s.io/v1
kind: RuntimeClass
metadata: {name: gvisor}
handler: runsc
overhead:
  podFixed: {cpu: 250m, memory: 64Mi}
scheduling:
  nodeSelector: {sandbox: 'true'}
",
        ),
        "runtimeclass",
    );
    let listed = ok(
        s.kubectl(kubectl, &["get", "runtimeclasses"]),
        "get runtimeclasses",
    );
    assert!(
        listed
            .lines()
            .next()
            .unwrap()
            .split_whitespace()
            .collect::<Vec<_>>()
            == ["NAME", "HANDLER", "AGE"]
            && listed.contains("runsc"),
        "{v}: {listed}"
    );
    ok(
        s.kubectl_stdin(
            kubectl,
            &["create", "-f", "-"],
            Some("apiVersion: v1\nkind: Pod\nmetadata: {name: sandboxed}\nspec:\n  runtimeClassName: gvisor\n  containers: [{name: c, image: nginx}]\n"),
        ),
        "pod with class",
    );
    let got = ok(
        s.kubectl(
            kubectl,
            &["get", "pod", "sandboxed", "-o", "jsonpath={.spec.overhead.cpu} {.spec.overhead.memory} {.spec.nodeSelector.sandbox}"],
        ),
        "overhead",
    );
    assert_eq!(got, "250m 64Mi true", "{v}");
    let immutable = fails(
        s.kubectl(
            kubectl,
            &[
                "patch",
                "runtimeclass",
                "gvisor",
                "-p",
                "{\"handler\":\"runc\"}",
            ],
        ),
        "change handler",
    );
    assert!(immutable.contains("field is immutable"), "{v}: {immutable}");
}

/// Discovery, OpenAPI and the APF defaults.
fn discovery_and_flow_control(s: &TestServer, kubectl: &Path) {
    let v = kubectl.display().to_string();
    let resources = ok(s.kubectl(kubectl, &["api-resources"]), "api-resources");
    for expected in [
        "validatingadmissionpolicies",
        "validatingadmissionpolicybindings",
        "runtimeclasses",
        "node.k8s.io/v1",
        "flowschemas",
        "prioritylevelconfigurations",
        "flowcontrol.apiserver.k8s.io/v1",
    ] {
        assert!(
            resources.contains(expected),
            "{v}: lacks {expected}:\n{resources}"
        );
    }
    for (what, expected) in [
        (
            "validatingadmissionpolicy.spec.validations.messageExpression",
            "messageExpression",
        ),
        (
            "validatingadmissionpolicybinding.spec.validationActions",
            "validationActions",
        ),
        ("runtimeclass.overhead", "podFixed"),
        ("flowschema.spec.matchingPrecedence", "matchingPrecedence"),
        (
            "prioritylevelconfiguration.spec.limited",
            "nominalConcurrencyShares",
        ),
    ] {
        let explained = ok(s.kubectl(kubectl, &["explain", what]), "explain");
        assert!(
            explained.contains(expected),
            "{v}: explain {what}:\n{explained}"
        );
    }
    // Client-side validation knows the new kinds' fields.
    let typo = fails(
        apply(s, kubectl, "apiVersion: node.k8s.io/v1\nkind: RuntimeClass\nmetadata: {name: typo}\nhandler: runc\nhandlerr: x\n"),
        "unknown field",
    );
    assert!(typo.contains("handlerr"), "{v}: {typo}");

    let schemas = ok(
        s.kubectl(kubectl, &["get", "flowschemas"]),
        "get flowschemas",
    );
    let header: Vec<&str> = schemas.lines().next().unwrap().split_whitespace().collect();
    assert_eq!(
        header,
        [
            "NAME",
            "PRIORITYLEVEL",
            "MATCHINGPRECEDENCE",
            "DISTINGUISHERMETHOD",
            "AGE",
            "MISSINGPL"
        ],
        "{v}: {schemas}"
    );
    for name in ["exempt", "catch-all", "global-default", "system-nodes"] {
        assert!(
            schemas
                .lines()
                .any(|l| l.split_whitespace().next() == Some(name)),
            "{v}: {schemas}"
        );
    }
    let levels = ok(
        s.kubectl(
            kubectl,
            &["get", "prioritylevelconfigurations", "-o", "name"],
        ),
        "get plc",
    );
    for name in ["exempt", "catch-all", "workload-low"] {
        assert!(
            levels.contains(&format!(
                "prioritylevelconfiguration.flowcontrol.apiserver.k8s.io/{name}"
            )),
            "{v}: {levels}"
        );
    }
    let precedence = ok(
        s.kubectl(
            kubectl,
            &[
                "get",
                "flowschema",
                "catch-all",
                "-o",
                "jsonpath={.spec.matchingPrecedence} {.spec.priorityLevelConfiguration.name}",
            ],
        ),
        "catch-all",
    );
    assert_eq!(precedence, "10000 catch-all", "{v}");
    // CRUD of a user's own FlowSchema, defaulted.
    ok(
        apply(
            s,
            kubectl,
            "apiVersion: flowcontrol.apiserver.k8s.io/v1
kind: FlowSchema
metadata: {name: mine}
spec:
  priorityLevelConfiguration: {name: workload-low}
  rules:
  - subjects: [{kind: User, user: {name: alice}}]
    nonResourceRules: [{verbs: ['*'], nonResourceURLs: ['*']}]
",
        ),
        "flowschema",
    );
    let defaulted = ok(
        s.kubectl(
            kubectl,
            &[
                "get",
                "flowschema",
                "mine",
                "-o",
                "jsonpath={.spec.matchingPrecedence}",
            ],
        ),
        "get mine",
    );
    assert_eq!(defaulted, "1000", "{v}");
    ok(
        s.kubectl(kubectl, &["delete", "flowschema", "mine"]),
        "delete",
    );
    // The status subresource of policies is served.
    ok(
        s.kubectl(
            kubectl,
            &["get", "--raw", "/apis/admissionregistration.k8s.io/v1/validatingadmissionpolicies/replica-limit/status"],
        ),
        "policy status",
    );
}

#[test]
fn kubectl_validating_admission_policies_deny_warn_and_take_params() {
    for kubectl in kubectls() {
        let s = TestServer::start();
        deny(&s, &kubectl);
        warn(&s, &kubectl);
        params(&s, &kubectl);
        custom_params_and_failures(&s, &kubectl);
    }
}

#[test]
fn kubectl_runtime_classes_and_flow_control() {
    for kubectl in kubectls() {
        let s = TestServer::start();
        runtime_classes(&s, &kubectl);
        ok(apply(&s, &kubectl, REPLICA_POLICY), "policy");
        discovery_and_flow_control(&s, &kubectl);
    }
}
