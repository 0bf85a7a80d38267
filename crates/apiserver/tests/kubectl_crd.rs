//! CustomResourceDefinitions end to end with the real kubectl (oldest and newest): the CRD
//! becomes served, its objects are defaulted, pruned, validated, printed with the printer
//! columns, explained, scaled, patched, isolated from their status, converted between
//! versions, and deleted with the CRD.

use crate::common;

use common::{fails, kubectls, ok, TestServer};

const CRD: &str = r#"
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: widgets.example.com
spec:
  group: example.com
  scope: Namespaced
  names:
    plural: widgets
    singular: widget
    kind: Widget
    shortNames: [wd]
  versions:
  - name: v1
    served: true
    storage: true
    subresources:
      status: {}
      scale:
        specReplicasPath: .spec.replicas
        statusReplicasPath: .status.replicas
        labelSelectorPath: .status.selector
    additionalPrinterColumns:
    - name: Replicas
      type: integer
      jsonPath: .spec.replicas
    - name: Color
      type: string
      jsonPath: .spec.color
    - name: Age
      type: date
      jsonPath: .metadata.creationTimestamp
    schema:
      openAPIV3Schema:
        type: object
        description: A widget of the test suite.
        properties:
          spec:
            type: object
            description: What the widget should be.
            required: [color]
            properties:
              replicas:
                type: integer
                minimum: 0
                maximum: 10
                default: 1
                description: How many widgets to run.
              color:
                type: string
                enum: [red, blue]
          status:
            type: object
            properties:
              replicas: {type: integer}
              selector: {type: string}
  - name: v1beta1
    served: true
    storage: false
    schema:
      openAPIV3Schema:
        type: object
        x-kubernetes-preserve-unknown-fields: true
"#;

const WIDGET: &str = r#"
apiVersion: example.com/v1
kind: Widget
metadata:
  name: a
spec:
  color: red
"#;

const BAD_CRD: &str = r#"
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: gadgets.example.com
spec:
  group: example.com
  scope: Galaxy
  names: {plural: things, kind: Gadget}
  versions:
  - name: v1
    served: true
    storage: true
    schema:
      openAPIV3Schema:
        type: object
        properties:
          spec: {properties: {a: {type: string}}}
"#;

fn text(out: std::process::Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr)
}

#[test]
fn custom_resources_with_kubectl() {
    for kubectl in kubectls() {
        let server = TestServer::start();
        let k = |args: &[&str]| server.kubectl(&kubectl, args);
        let k_in = |args: &[&str], input: &str| server.kubectl_stdin(&kubectl, args, Some(input));
        let version = kubectl.display().to_string();

        // An invalid CRD is refused with field paths and not stored.
        let err = fails(k_in(&["apply", "-f", "-"], BAD_CRD), "bad CRD");
        for field in [
            "metadata.name",
            "spec.scope",
            "spec.versions[0].schema.openAPIV3Schema.properties[spec].type",
        ] {
            assert!(err.contains(field), "{version}: {err}");
        }
        fails(k(&["get", "crd", "gadgets.example.com"]), "the refused CRD");

        ok(k_in(&["apply", "-f", "-"], CRD), "apply CRD");
        ok(
            k(&[
                "wait",
                "--for",
                "condition=established",
                "crd/widgets.example.com",
                "--timeout=20s",
            ]),
            "wait established",
        );
        let status = ok(
            k(&[
                "get",
                "crd",
                "widgets.example.com",
                "-o",
                "jsonpath={.status.acceptedNames.kind} {.status.storedVersions}",
            ]),
            "CRD status",
        );
        assert_eq!(status, "Widget [\"v1\"]", "{version}");

        // Create; the default is applied and the printer columns are shown.
        ok(k_in(&["apply", "-f", "-"], WIDGET), "apply widget");
        let table = ok(k(&["get", "widgets"]), "get widgets");
        let header: Vec<&str> = table.lines().next().unwrap().split_whitespace().collect();
        assert_eq!(
            header,
            ["NAME", "REPLICAS", "COLOR", "AGE"],
            "{version}: {table}"
        );
        let row: Vec<&str> = table.lines().nth(1).unwrap().split_whitespace().collect();
        assert_eq!(&row[..3], ["a", "1", "red"], "{version}: {table}");
        let yaml = ok(k(&["get", "wd", "a", "-o", "yaml"]), "get -o yaml");
        assert!(yaml.contains("replicas: 1"), "{version}: {yaml}");
        assert!(yaml.contains("generation: 1"), "{version}: {yaml}");

        // Unknown fields: rejected by kubectl's strict validation, pruned with a warning.
        let unknown = WIDGET.replace("name: a", "name: u") + "  bogus: true\n";
        let err = fails(
            k_in(&["apply", "-f", "-"], &unknown),
            "strict unknown field",
        );
        assert!(
            err.contains("unknown field \"spec.bogus\""),
            "{version}: {err}"
        );
        fails(k(&["get", "widget", "u"]), "the strictly refused widget");
        // `--validate=warn` asks the server to warn: the field is pruned and kubectl prints
        // the server's warning.
        let warned = k_in(&["apply", "--validate=warn", "-f", "-"], &unknown);
        let stderr = String::from_utf8_lossy(&warned.stderr).into_owned();
        ok(warned, "apply with warnings");
        assert!(
            stderr.contains("unknown field \"spec.bogus\""),
            "{version}: {stderr}"
        );
        let pruned = ok(
            k(&["get", "widget", "u", "-o", "jsonpath={.spec}"]),
            "get pruned",
        );
        assert!(!pruned.contains("bogus"), "{version}: {pruned}");

        // Schema validation: 422 with the field path, nothing stored.
        let invalid = WIDGET
            .replace("name: a", "name: bad")
            .replace("color: red", "color: pink\n  replicas: 20");
        let err = fails(k_in(&["create", "-f", "-"], &invalid), "invalid widget");
        assert!(err.contains("is invalid"), "{version}: {err}");
        assert!(err.contains("spec.replicas"), "{version}: {err}");
        assert!(err.contains("spec.color"), "{version}: {err}");
        assert!(
            err.contains("should be less than or equal to 10"),
            "{version}: {err}"
        );
        let err = fails(k(&["get", "widget", "bad"]), "the invalid widget");
        assert!(
            err.contains("NotFound") || err.contains("not found"),
            "{err}"
        );

        // explain reads the schema from OpenAPI.
        let explain = ok(k(&["explain", "widgets.spec"]), "explain");
        assert!(explain.contains("replicas"), "{version}: {explain}");
        assert!(
            explain.contains("How many widgets to run"),
            "{version}: {explain}"
        );

        // scale through the scale subresource.
        ok(k(&["scale", "widget", "a", "--replicas=3"]), "scale");
        let replicas = ok(
            k(&["get", "widget", "a", "-o", "jsonpath={.spec.replicas}"]),
            "replicas",
        );
        assert_eq!(replicas, "3", "{version}");

        // Merge patch works; strategic merge patch is refused as Kubernetes refuses it.
        ok(
            k(&[
                "patch",
                "widget",
                "a",
                "--type",
                "merge",
                "-p",
                r#"{"spec":{"color":"blue"}}"#,
            ]),
            "merge patch",
        );
        let err = fails(
            k(&["patch", "widget", "a", "-p", r#"{"spec":{"color":"red"}}"#]),
            "strategic merge patch",
        );
        assert!(
            err.contains("UnsupportedMediaType") || err.contains("unknown format"),
            "{version}: {err}"
        );
        let generation = ok(
            k(&[
                "get",
                "widget",
                "a",
                "-o",
                "jsonpath={.spec.color} {.metadata.generation}",
            ]),
            "after patches",
        );
        assert_eq!(generation, "blue 3", "{version}");

        // The main resource ignores status; the status subresource changes only status.
        ok(
            k(&[
                "patch",
                "widget",
                "a",
                "--type",
                "merge",
                "-p",
                r#"{"status":{"replicas":5}}"#,
            ]),
            "status through the main resource",
        );
        let status = ok(
            k(&[
                "get",
                "--raw",
                "/apis/example.com/v1/namespaces/default/widgets/a",
            ]),
            "raw get",
        );
        assert!(!status.contains("\"status\""), "{version}: {status}");
        ok(
            k(&[
                "patch",
                "widget",
                "a",
                "--subresource",
                "status",
                "--type",
                "merge",
                "-p",
                r#"{"status":{"replicas":2,"selector":"app=w"},"spec":{"color":"red"}}"#,
            ]),
            "status subresource patch",
        );
        let both = ok(
            k(&[
                "get",
                "widget",
                "a",
                "-o",
                "jsonpath={.spec.color} {.status.replicas} {.metadata.generation}",
            ]),
            "after status patch",
        );
        assert_eq!(both, "blue 2 3", "{version}");
        let scale = ok(
            k(&[
                "get",
                "--raw",
                "/apis/example.com/v1/namespaces/default/widgets/a/scale",
            ]),
            "raw scale",
        );
        let scale: serde_json::Value = serde_json::from_str(&scale).unwrap();
        assert_eq!(scale["spec"]["replicas"], 3, "{version}: {scale}");
        assert_eq!(scale["status"]["replicas"], 2, "{version}: {scale}");
        assert_eq!(scale["status"]["selector"], "app=w", "{version}: {scale}");

        // Another served version: the same object, apiVersion rewritten.
        let beta = ok(
            k(&[
                "get",
                "widgets.v1beta1.example.com",
                "a",
                "-o",
                "jsonpath={.apiVersion} {.spec.color}",
            ]),
            "get through v1beta1",
        );
        assert_eq!(beta, "example.com/v1beta1 blue", "{version}");

        // Server-side apply creates and updates, with managed fields.
        let applied = WIDGET.replace("name: a", "name: s");
        ok(
            k_in(&["apply", "--server-side", "-f", "-"], &applied),
            "server-side apply",
        );
        ok(
            k_in(
                &["apply", "--server-side", "-f", "-"],
                &applied.replace("color: red", "color: blue"),
            ),
            "server-side apply again",
        );
        let managed = ok(
            k(&[
                "get",
                "widget",
                "s",
                "--show-managed-fields",
                "-o",
                "jsonpath={.spec.color} {.metadata.managedFields[0].manager}",
            ]),
            "server-side applied",
        );
        assert_eq!(managed, "blue kubectl", "{version}");

        // Label selectors and field selectors.
        ok(k(&["label", "widget", "a", "tier=front"]), "label");
        let names = ok(
            k(&["get", "widgets", "-l", "tier=front", "-o", "name"]),
            "label selector",
        );
        assert_eq!(names.trim(), "widget.example.com/a", "{version}");
        let names = ok(
            k(&[
                "get",
                "widgets",
                "--field-selector",
                "metadata.name=u",
                "-o",
                "name",
            ]),
            "field selector",
        );
        assert_eq!(names.trim(), "widget.example.com/u", "{version}");

        // Deleting the CRD deletes its objects and stops serving them.
        ok(
            k(&["delete", "crd", "widgets.example.com", "--timeout=30s"]),
            "delete CRD",
        );
        let gone = text(k(&[
            "get",
            "--raw",
            "/apis/example.com/v1/namespaces/default/widgets",
        ]));
        assert!(
            gone.contains("NotFound") || gone.contains("not found"),
            "{version}: {gone}"
        );
        ok(k_in(&["apply", "-f", "-"], CRD), "apply CRD again");
        ok(
            k(&[
                "wait",
                "--for",
                "condition=established",
                "crd/widgets.example.com",
                "--timeout=20s",
            ]),
            "wait established again",
        );
        let left = ok(k(&["get", "widgets", "-A", "-o", "name"]), "widgets left");
        assert_eq!(left.trim(), "", "{version}: {left}");
    }
}

const RULED_CRD: &str = r#"
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: scalers.example.com
spec:
  group: example.com
  names: {plural: scalers, singular: scaler, kind: Scaler}
  scope: Namespaced
  versions:
  - name: v1
    served: true
    storage: true
    schema:
      openAPIV3Schema:
        type: object
        properties:
          spec:
            type: object
            x-kubernetes-validations:
            - rule: "self.replicas <= self.maxReplicas"
              message: "replicas must not exceed maxReplicas"
            - rule: "self.mode == oldSelf.mode"
              message: "mode is immutable"
            properties:
              replicas: {type: integer}
              maxReplicas: {type: integer}
              mode: {type: string}
              name:
                type: string
                x-kubernetes-validations:
                - rule: "self.startsWith('app-')"
                  messageExpression: "'name ' + self + ' must start with app-'"
"#;

fn scaler(replicas: u32, mode: &str, name: &str) -> String {
    format!(
        "apiVersion: example.com/v1\nkind: Scaler\nmetadata:\n  name: s\nspec:\n  replicas: {replicas}\n  maxReplicas: 3\n  mode: {mode}\n  name: {name}\n"
    )
}

/// CEL validation rules (`x-kubernetes-validations`) through kubectl: plain rules on every
/// write, transition rules (`oldSelf`) on updates, messages and messageExpressions, and a
/// CRD whose rule does not compile refused.
#[test]
fn crd_validation_rules_with_kubectl() {
    let s = TestServer::start();
    let kubectl = kubectls().pop().unwrap();
    let apply = |yaml: &str| s.kubectl_stdin(&kubectl, &["apply", "-f", "-"], Some(yaml));
    ok(apply(RULED_CRD), "create the CRD");
    let mut created = apply(&scaler(2, "fast", "app-one"));
    for _ in 0..50 {
        if created.status.success() {
            break;
        }
        // The new kind is served a moment after the CRD is established.
        std::thread::sleep(std::time::Duration::from_millis(100));
        created = apply(&scaler(2, "fast", "app-one"));
    }
    ok(created, "a valid object");
    let err = fails(apply(&scaler(5, "fast", "app-one")), "too many replicas");
    assert!(
        err.contains(r#"The Scaler "s" is invalid: spec: Invalid value: "object": replicas must not exceed maxReplicas"#),
        "{err}"
    );
    let err = fails(apply(&scaler(2, "slow", "app-one")), "a changed mode");
    assert!(err.contains("mode is immutable"), "{err}");
    let err = fails(apply(&scaler(2, "fast", "web")), "a bad name");
    assert!(
        err.contains(r#"spec.name: Invalid value: "string": name web must start with app-"#),
        "{err}"
    );
    // The stored object is the valid one.
    assert_eq!(
        ok(
            s.kubectl(
                &kubectl,
                &[
                    "get",
                    "scaler",
                    "s",
                    "-o",
                    "jsonpath={.spec.replicas} {.spec.mode}"
                ]
            ),
            "get"
        ),
        "2 fast"
    );
    // A new object may have any mode: transition rules need an old value.
    ok(
        apply(&scaler(1, "slow", "app-two").replace("name: s\n", "name: t\n")),
        "another object",
    );
    let broken = RULED_CRD
        .replace("scalers.example.com", "brokens.example.com")
        .replace(
            "{plural: scalers, singular: scaler, kind: Scaler}",
            "{plural: brokens, singular: broken, kind: Broken}",
        )
        .replace("self.replicas <= self.maxReplicas", "self.replicas <=");
    let err = fails(apply(&broken), "a rule that does not compile");
    assert!(
        err.contains("x-kubernetes-validations[0].rule") && err.contains("compilation failed"),
        "{err}"
    );
}
