//! kubectl's typed clients (which send protobuf bodies) against every API group: `create
//! <kind>`, `scale`, `rollout restart`, `set image`, `drain` (eviction), and `get` with
//! Kubernetes' columns for the kinds of milestone 2.

use crate::common;

use std::path::Path;

use common::{fails, kubectls, ok, TestServer};

const NODE: &str = "apiVersion: v1
kind: Node
metadata:
  name: node1
";

const POD_ON_NODE: &str = "apiVersion: v1
kind: Pod
metadata:
  name: bound
  labels: {app: bound}
spec:
  nodeName: node1
  containers:
  - name: c
    image: busybox
";

const KINDS: &str = "apiVersion: v1
kind: PersistentVolume
metadata: {name: pv1}
spec:
  capacity: {storage: 1Gi}
  accessModes: [ReadWriteOnce]
  hostPath: {path: /tmp/pv1}
---
apiVersion: v1
kind: PersistentVolumeClaim
metadata: {name: claim}
spec:
  accessModes: [ReadWriteOnce]
  resources: {requests: {storage: 1Gi}}
---
apiVersion: v1
kind: LimitRange
metadata: {name: limits}
spec:
  limits: [{type: Container, default: {cpu: 500m}}]
---
apiVersion: v1
kind: ReplicationController
metadata: {name: rc}
spec:
  replicas: 1
  template:
    metadata: {labels: {app: rc}}
    spec: {containers: [{name: c, image: busybox}]}
---
apiVersion: apps/v1
kind: ControllerRevision
metadata: {name: rev}
revision: 3
---
apiVersion: autoscaling/v2
kind: HorizontalPodAutoscaler
metadata: {name: hpa}
spec:
  scaleTargetRef: {apiVersion: apps/v1, kind: Deployment, name: web}
  maxReplicas: 5
---
apiVersion: networking.k8s.io/v1
kind: IngressClass
metadata: {name: nginx}
spec: {controller: k8s.io/ingress-nginx}
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: deny}
spec:
  podSelector: {matchLabels: {app: web}}
---
apiVersion: storage.k8s.io/v1
kind: StorageClass
metadata: {name: fast}
provisioner: example.com/fast
---
apiVersion: storage.k8s.io/v1
kind: VolumeAttachment
metadata: {name: va}
spec:
  attacher: example.com/csi
  nodeName: node1
  source: {persistentVolumeName: pv1}
---
apiVersion: storage.k8s.io/v1
kind: CSIDriver
metadata: {name: csi.example.com}
spec: {}
---
apiVersion: coordination.k8s.io/v1
kind: Lease
metadata: {name: leader}
spec: {holderIdentity: me}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: web-abc}
addressType: IPv4
ports: [{port: 80}]
endpoints: [{addresses: [10.0.0.1]}]
---
apiVersion: events.k8s.io/v1
kind: Event
metadata: {name: ev1}
eventTime: 2024-01-01T00:00:00.000000Z
reportingController: skiff
reportingInstance: skiff-1
action: Test
reason: Tested
type: Normal
regarding: {kind: Pod, name: web}
note: hello
---
apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingWebhookConfiguration
metadata: {name: hooks}
webhooks:
- name: check.example.com
  admissionReviewVersions: [v1]
  sideEffects: None
  clientConfig: {url: https://example.com/check}
---
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata: {name: widgets.example.com}
spec:
  group: example.com
  names: {kind: Widget, plural: widgets}
  scope: Namespaced
  versions:
  - name: v1
    served: true
    storage: true
    schema: {openAPIV3Schema: {type: object}}
";

/// The header of `kubectl get <what>`, split into columns.
fn header(s: &TestServer, kubectl: &Path, what: &[&str]) -> Vec<String> {
    let mut args = vec!["get"];
    args.extend_from_slice(what);
    let out = ok(s.kubectl(kubectl, &args), &format!("get {what:?}"));
    out.lines()
        .next()
        .unwrap_or("")
        .split("  ")
        .map(str::trim)
        .filter(|c| !c.is_empty())
        .map(str::to_owned)
        .collect()
}

fn jsonpath(s: &TestServer, kubectl: &Path, what: &[&str], path: &str) -> String {
    let mut args = vec!["get"];
    args.extend_from_slice(what);
    let template = format!("jsonpath={path}");
    args.extend_from_slice(&["-o", &template]);
    ok(s.kubectl(kubectl, &args), &format!("get {what:?} {path}"))
}

fn typed_clients(kubectl: &Path) {
    let s = TestServer::start();
    let k = |args: &[&str]| s.kubectl(kubectl, args);
    let v = kubectl.display().to_string();

    // `kubectl create <kind>` goes through client-go's typed clients: protobuf bodies.
    for (args, expected) in [
        (
            vec![
                "create",
                "deployment",
                "web",
                "--image=nginx:1.27",
                "--replicas=2",
            ],
            "deployment.apps/web created",
        ),
        (
            vec!["create", "service", "clusterip", "web", "--tcp=80:8080"],
            "service/web created",
        ),
        (
            vec![
                "create",
                "job",
                "once",
                "--image=busybox",
                "--",
                "echo",
                "hi",
            ],
            "job.batch/once created",
        ),
        (
            vec![
                "create",
                "cronjob",
                "tick",
                "--image=busybox",
                "--schedule=*/5 * * * *",
                "--",
                "date",
            ],
            "cronjob.batch/tick created",
        ),
        (
            vec![
                "create",
                "secret",
                "generic",
                "creds",
                "--from-literal=user=admin",
            ],
            "secret/creds created",
        ),
        (
            vec![
                "create",
                "role",
                "pod-reader",
                "--verb=get,list",
                "--resource=pods",
            ],
            "role.rbac.authorization.k8s.io/pod-reader created",
        ),
        (
            vec![
                "create",
                "rolebinding",
                "read-pods",
                "--role=pod-reader",
                "--user=bob",
            ],
            "rolebinding.rbac.authorization.k8s.io/read-pods created",
        ),
        (
            vec![
                "create",
                "clusterrole",
                "node-reader",
                "--verb=get,list",
                "--resource=nodes",
            ],
            "clusterrole.rbac.authorization.k8s.io/node-reader created",
        ),
        (
            vec![
                "create",
                "clusterrolebinding",
                "read-nodes",
                "--clusterrole=node-reader",
                "--group=devs",
            ],
            "clusterrolebinding.rbac.authorization.k8s.io/read-nodes created",
        ),
        (
            vec!["create", "quota", "small", "--hard=pods=10,requests.cpu=2"],
            "resourcequota/small created",
        ),
        (
            vec![
                "create",
                "priorityclass",
                "high",
                "--value=1000",
                "--description=important",
            ],
            "priorityclass.scheduling.k8s.io/high created",
        ),
        (
            vec![
                "create",
                "poddisruptionbudget",
                "web-pdb",
                "--selector=app=web",
                "--min-available=1",
            ],
            "poddisruptionbudget.policy/web-pdb created",
        ),
        (
            vec![
                "create",
                "ingress",
                "site",
                "--rule=foo.example.com/=web:80",
            ],
            "ingress.networking.k8s.io/site created",
        ),
        (
            vec!["create", "serviceaccount", "robot"],
            "serviceaccount/robot created",
        ),
    ] {
        let out = ok(k(&args), &format!("{v}: kubectl {args:?}"));
        assert_eq!(out.trim(), expected, "{v}");
    }

    // What the protobuf bodies carried arrived intact, with JSON names and defaults.
    assert_eq!(
        jsonpath(&s, kubectl, &["deploy", "web"], "{.spec.replicas}"),
        "2",
        "{v}"
    );
    assert_eq!(
        jsonpath(
            &s,
            kubectl,
            &["deploy", "web"],
            "{.spec.template.spec.containers[0].image}"
        ),
        "nginx:1.27",
        "{v}"
    );
    assert_eq!(
        jsonpath(&s, kubectl, &["svc", "web"], "{.spec.ports[0].targetPort}"),
        "8080",
        "{v}"
    );
    assert_eq!(
        jsonpath(
            &s,
            kubectl,
            &["job", "once"],
            "{.spec.template.spec.containers[0].command}"
        ),
        r#"["echo","hi"]"#,
        "{v}"
    );
    assert_eq!(
        jsonpath(&s, kubectl, &["secret", "creds"], "{.data.user}"),
        "YWRtaW4=",
        "{v}"
    );
    assert_eq!(
        jsonpath(&s, kubectl, &["role", "pod-reader"], "{.rules[0].verbs}"),
        r#"["get","list"]"#,
        "{v}"
    );
    assert_eq!(
        jsonpath(
            &s,
            kubectl,
            &["quota", "small"],
            "{.spec.hard.requests\\.cpu}"
        ),
        "2",
        "{v}"
    );
    assert_eq!(
        jsonpath(&s, kubectl, &["pdb", "web-pdb"], "{.spec.minAvailable}"),
        "1",
        "{v}"
    );
    assert_eq!(
        jsonpath(&s, kubectl, &["ingress", "site"], "{.spec.rules[0].host}"),
        "foo.example.com",
        "{v}"
    );

    // Scale subresource, rollout restart and set image.
    assert_eq!(
        ok(k(&["scale", "deployment", "web", "--replicas=3"]), "scale").trim(),
        "deployment.apps/web scaled",
        "{v}"
    );
    assert_eq!(
        jsonpath(&s, kubectl, &["deploy", "web"], "{.spec.replicas}"),
        "3",
        "{v}"
    );
    let generation = jsonpath(&s, kubectl, &["deploy", "web"], "{.metadata.generation}");
    assert_eq!(generation, "2", "{v}: scaling bumps generation");
    let scale = ok(
        k(&[
            "get",
            "--raw",
            "/apis/apps/v1/namespaces/default/deployments/web/scale",
        ]),
        "get scale",
    );
    let scale: serde_json::Value = serde_json::from_str(&scale).unwrap();
    assert_eq!(scale["kind"], "Scale", "{v}");
    assert_eq!(scale["spec"]["replicas"], 3, "{v}");
    assert_eq!(scale["status"]["selector"], "app=web", "{v}");
    ok(
        k(&["rollout", "restart", "deployment", "web"]),
        "rollout restart",
    );
    assert!(
        !jsonpath(
            &s,
            kubectl,
            &["deploy", "web"],
            "{.spec.template.metadata.annotations.kubectl\\.kubernetes\\.io/restartedAt}"
        )
        .is_empty(),
        "{v}"
    );
    ok(
        k(&["set", "image", "deployment/web", "nginx=nginx:1.28"]),
        "set image",
    );
    assert_eq!(
        jsonpath(
            &s,
            kubectl,
            &["deploy", "web"],
            "{.spec.template.spec.containers[0].image}"
        ),
        "nginx:1.28",
        "{v}"
    );
    // kubectl diff: a server-side dry run of the change, nothing stored.
    let changed = s.write(
        "web.yaml",
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web}\nspec:\n  replicas: 5\n  selector: {matchLabels: {app: web}}\n  template:\n    metadata: {labels: {app: web}}\n    spec: {containers: [{name: nginx, image: nginx:1.28}]}\n",
    );
    let diff = k(&["diff", "-f", changed.to_str().unwrap()]);
    let diff_out = String::from_utf8_lossy(&diff.stdout).into_owned();
    assert_eq!(
        diff.status.code(),
        Some(1),
        "{v}: {diff_out} {}",
        String::from_utf8_lossy(&diff.stderr)
    );
    assert!(
        diff_out.contains("-  replicas: 3") && diff_out.contains("+  replicas: 5"),
        "{v}: {diff_out}"
    );
    assert_eq!(
        jsonpath(&s, kubectl, &["deploy", "web"], "{.spec.replicas}"),
        "3",
        "{v}"
    );
    let yaml = s.write("kinds.yaml", KINDS);
    ok(
        k(&["create", "-f", yaml.to_str().unwrap()]),
        "create the other kinds",
    );
    ok(k(&["scale", "rc", "rc", "--replicas=4"]), "scale rc");
    assert_eq!(
        jsonpath(&s, kubectl, &["rc", "rc"], "{.spec.replicas}"),
        "4",
        "{v}"
    );

    // kubectl get prints the server's columns, the same as Kubernetes'.
    for (what, columns) in [
        (
            vec!["deployments"],
            vec!["NAME", "READY", "UP-TO-DATE", "AVAILABLE", "AGE"],
        ),
        (
            vec!["jobs"],
            vec!["NAME", "STATUS", "COMPLETIONS", "DURATION", "AGE"],
        ),
        (
            vec!["cronjobs"],
            vec![
                "NAME",
                "SCHEDULE",
                "TIMEZONE",
                "SUSPEND",
                "ACTIVE",
                "LAST SCHEDULE",
                "AGE",
            ],
        ),
        (
            vec!["pdb"],
            vec![
                "NAME",
                "MIN AVAILABLE",
                "MAX UNAVAILABLE",
                "ALLOWED DISRUPTIONS",
                "AGE",
            ],
        ),
        (vec!["quota"], vec!["NAME", "AGE", "REQUEST", "LIMIT"]),
        (
            vec!["priorityclasses"],
            vec!["NAME", "VALUE", "GLOBAL-DEFAULT", "AGE", "PREEMPTIONPOLICY"],
        ),
        (vec!["roles"], vec!["NAME", "CREATED AT"]),
        (vec!["rolebindings"], vec!["NAME", "ROLE", "AGE"]),
        (
            vec!["ingress"],
            vec!["NAME", "CLASS", "HOSTS", "ADDRESS", "PORTS", "AGE"],
        ),
        (
            vec!["pv"],
            vec![
                "NAME",
                "CAPACITY",
                "ACCESS MODES",
                "RECLAIM POLICY",
                "STATUS",
                "CLAIM",
                "STORAGECLASS",
                "VOLUMEATTRIBUTESCLASS",
                "REASON",
                "AGE",
            ],
        ),
        (
            vec!["pvc"],
            vec![
                "NAME",
                "STATUS",
                "VOLUME",
                "CAPACITY",
                "ACCESS MODES",
                "STORAGECLASS",
                "VOLUMEATTRIBUTESCLASS",
                "AGE",
            ],
        ),
        (vec!["limitranges"], vec!["NAME", "CREATED AT"]),
        (
            vec!["rc"],
            vec!["NAME", "DESIRED", "CURRENT", "READY", "AGE"],
        ),
        (
            vec!["controllerrevisions"],
            vec!["NAME", "CONTROLLER", "REVISION", "AGE"],
        ),
        (
            vec!["hpa"],
            vec![
                "NAME",
                "REFERENCE",
                "TARGETS",
                "MINPODS",
                "MAXPODS",
                "REPLICAS",
                "AGE",
            ],
        ),
        (
            vec!["ingressclasses"],
            vec!["NAME", "CONTROLLER", "PARAMETERS", "AGE"],
        ),
        (vec!["networkpolicies"], vec!["NAME", "POD-SELECTOR", "AGE"]),
        (
            vec!["storageclasses"],
            vec![
                "NAME",
                "PROVISIONER",
                "RECLAIMPOLICY",
                "VOLUMEBINDINGMODE",
                "ALLOWVOLUMEEXPANSION",
                "AGE",
            ],
        ),
        (
            vec!["volumeattachments"],
            vec!["NAME", "ATTACHER", "PV", "NODE", "ATTACHED", "AGE"],
        ),
        (vec!["leases"], vec!["NAME", "HOLDER", "AGE"]),
        (
            vec!["endpointslices"],
            vec!["NAME", "ADDRESSTYPE", "PORTS", "ENDPOINTS", "AGE"],
        ),
        (
            vec!["validatingwebhookconfigurations"],
            vec!["NAME", "WEBHOOKS", "AGE"],
        ),
        (vec!["crd"], vec!["NAME", "CREATED AT"]),
    ] {
        assert_eq!(
            header(&s, kubectl, &what),
            columns,
            "{v}: kubectl get {what:?}"
        );
    }
    let classes = ok(k(&["get", "priorityclasses", "-o", "name"]), "get pc");
    for class in ["system-node-critical", "system-cluster-critical", "high"] {
        assert!(
            classes.contains(&format!("priorityclass.scheduling.k8s.io/{class}")),
            "{v}: {classes}"
        );
    }
    let hpa = ok(k(&["get", "hpa", "hpa"]), "get hpa");
    assert!(
        hpa.contains("Deployment/web") && hpa.contains("cpu: <unknown>/80%"),
        "{v}: {hpa}"
    );
    let slices = ok(k(&["get", "endpointslices"]), "get endpointslices");
    assert!(slices.contains("10.0.0.1"), "{v}: {slices}");

    // drain: cordon, then evict through pods/eviction; a PDB with no disruptions allowed
    // blocks the eviction with Kubernetes' message.
    let node = s.write("node.yaml", NODE);
    ok(k(&["create", "-f", node.to_str().unwrap()]), "create node");
    let pod = s.write("bound.yaml", POD_ON_NODE);
    ok(
        k(&["create", "-f", pod.to_str().unwrap()]),
        "create bound pod",
    );
    ok(
        k(&[
            "create",
            "poddisruptionbudget",
            "bound-pdb",
            "--selector=app=bound",
            "--min-available=1",
        ]),
        "create pdb",
    );
    let err = fails(
        k(&[
            "drain",
            "node1",
            "--force",
            "--grace-period=0",
            "--timeout=3s",
        ]),
        "drain blocked by a PDB",
    );
    assert!(
        err.contains("Cannot evict pod as it would violate the pod's disruption budget."),
        "{v}: {err}"
    );
    assert_eq!(
        jsonpath(&s, kubectl, &["node", "node1"], "{.spec.unschedulable}"),
        "true",
        "{v}"
    );
    ok(k(&["delete", "pdb", "bound-pdb"]), "delete pdb");
    let drained = ok(
        k(&[
            "drain",
            "node1",
            "--force",
            "--grace-period=0",
            "--timeout=20s",
        ]),
        "drain",
    );
    assert!(drained.contains("node/node1 drained"), "{v}: {drained}");
    let left = ok(k(&["get", "pods", "-o", "name"]), "get pods after drain");
    assert!(!left.contains("pod/bound"), "{v}: {left}");
}

#[test]
fn typed_clients_send_protobuf_for_every_group() {
    for kubectl in kubectls() {
        typed_clients(&kubectl);
    }
}
