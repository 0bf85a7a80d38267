//! The built-in admission plugins through real kubectl: LimitRanger's defaults and bounds,
//! ResourceQuota's refusals and status, and Pod Security Admission's enforce and warn
//! modes, with Kubernetes' messages.

use crate::common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::{fails, kubectls, ok, TestServer};

/// A pod with one container `c` and the given `resources:` block (YAML flow mapping).
fn pod(name: &str, resources: &str) -> String {
    format!(
        "apiVersion: v1
kind: Pod
metadata: {{name: {name}}}
spec:
  containers:
  - name: c
    image: nginx
    resources: {resources}
"
    )
}

fn create(s: &TestServer, kubectl: &Path, namespace: &str, yaml: &str) -> std::process::Output {
    s.kubectl_stdin(kubectl, &["-n", namespace, "create", "-f", "-"], Some(yaml))
}

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Polls `kubectl get` with a jsonpath until it prints `want`.
fn eventually(s: &TestServer, kubectl: &Path, args: &[&str], want: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let got = ok(s.kubectl(kubectl, args), "get");
        if got == want {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{args:?} printed {got:?}, wanted {want:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

const LIMIT_RANGE: &str = "apiVersion: v1
kind: LimitRange
metadata: {name: limits}
spec:
  limits:
  - type: Container
    default: {cpu: 500m, memory: 128Mi}
    defaultRequest: {cpu: 250m}
    max: {cpu: '1'}
    min: {memory: 64Mi}
";

fn limit_range(s: &TestServer, kubectl: &Path) {
    ok(
        s.kubectl(kubectl, &["create", "namespace", "lr"]),
        "namespace",
    );
    ok(create(s, kubectl, "lr", LIMIT_RANGE), "create limitrange");
    ok(
        create(s, kubectl, "lr", &pod("defaulted", "{}")),
        "create pod",
    );
    let get = |path: &str| {
        ok(
            s.kubectl(
                kubectl,
                &[
                    "-n",
                    "lr",
                    "get",
                    "pod",
                    "defaulted",
                    "-o",
                    &format!("jsonpath={path}"),
                ],
            ),
            "get pod",
        )
    };
    assert_eq!(
        get("{.spec.containers[0].resources}"),
        r#"{"limits":{"cpu":"500m","memory":"128Mi"},"requests":{"cpu":"250m","memory":"128Mi"}}"#
    );
    assert_eq!(get("{.status.qosClass}"), "Burstable");
    let yaml = ok(
        s.kubectl(
            kubectl,
            &["-n", "lr", "get", "pod", "defaulted", "-o", "yaml"],
        ),
        "get -o yaml",
    );
    assert!(
        yaml.contains("kubernetes.io/limit-ranger: 'LimitRanger plugin set"),
        "{yaml}"
    );
    assert_eq!(
        get(r"{.metadata.annotations.kubernetes\.io/limit-ranger}"),
        "LimitRanger plugin set: cpu, memory request for container c; cpu, memory limit for container c"
    );

    let err = fails(
        create(s, kubectl, "lr", &pod("big", "{limits: {cpu: '2'}}")),
        "create over max",
    );
    assert!(
        err.contains(
            r#"pods "big" is forbidden: maximum cpu usage per Container is 1, but limit is 2"#
        ),
        "{err}"
    );
    let err = fails(
        create(
            s,
            kubectl,
            "lr",
            &pod(
                "small",
                "{requests: {memory: 32Mi}, limits: {memory: 32Mi, cpu: 100m}}",
            ),
        ),
        "create under min",
    );
    assert!(
        err.contains(
            r#"pods "small" is forbidden: minimum memory usage per Container is 64Mi, but request is 32Mi"#
        ),
        "{err}"
    );
    let names = ok(
        s.kubectl(kubectl, &["-n", "lr", "get", "pods", "-o", "name"]),
        "list pods",
    );
    assert_eq!(names, "pod/defaulted\n");
}

fn resource_quota(s: &TestServer, kubectl: &Path) {
    ok(
        s.kubectl(kubectl, &["create", "namespace", "q"]),
        "namespace",
    );
    ok(
        s.kubectl(
            kubectl,
            &[
                "-n",
                "q",
                "create",
                "quota",
                "compute",
                "--hard=pods=1,requests.cpu=1,requests.memory=1Gi,limits.cpu=2,limits.memory=2Gi",
            ],
        ),
        "create quota",
    );
    // Status is filled promptly by the server.
    eventually(
        s,
        kubectl,
        &[
            "-n",
            "q",
            "get",
            "quota",
            "compute",
            "-o",
            "jsonpath={.status.used}",
        ],
        r#"{"limits.cpu":"0","limits.memory":"0","pods":"0","requests.cpu":"0","requests.memory":"0"}"#,
    );

    let err = fails(
        create(s, kubectl, "q", &pod("bare", "{}")),
        "pod without resources",
    );
    assert!(
        err.contains(r#"pods "bare" is forbidden: failed quota: compute: must specify limits.cpu for: c; limits.memory for: c; requests.cpu for: c; requests.memory for: c"#),
        "{err}"
    );
    let sized = "{requests: {cpu: 500m, memory: 256Mi}, limits: {cpu: '1', memory: 512Mi}}";
    // A dry run is checked but never charged.
    let out = s.kubectl_stdin(
        kubectl,
        &["-n", "q", "create", "--dry-run=server", "-f", "-"],
        Some(&pod("dry", sized)),
    );
    ok(out, "dry run");
    ok(create(s, kubectl, "q", &pod("first", sized)), "first pod");
    let err = fails(create(s, kubectl, "q", &pod("second", sized)), "second pod");
    assert!(
        err.contains(r#"pods "second" is forbidden: exceeded quota: compute, requested: pods=1, used: pods=1, limited: pods=1"#),
        "{err}"
    );
    let names = ok(
        s.kubectl(kubectl, &["-n", "q", "get", "pods", "-o", "name"]),
        "list pods",
    );
    assert_eq!(names, "pod/first\n");

    eventually(
        s,
        kubectl,
        &[
            "-n",
            "q",
            "get",
            "quota",
            "compute",
            "-o",
            "jsonpath={.status.used}",
        ],
        r#"{"limits.cpu":"1","limits.memory":"512Mi","pods":"1","requests.cpu":"500m","requests.memory":"256Mi"}"#,
    );
    let table = ok(
        s.kubectl(kubectl, &["-n", "q", "get", "quota"]),
        "get quota",
    );
    assert!(
        table.contains("pods: 1/1, requests.cpu: 500m/1, requests.memory: 256Mi/1Gi")
            && table.contains("limits.cpu: 1/2, limits.memory: 512Mi/2Gi"),
        "{table}"
    );
    let describe = ok(
        s.kubectl(kubectl, &["-n", "q", "describe", "quota", "compute"]),
        "describe quota",
    );
    let rows: Vec<Vec<&str>> = describe
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    for row in [
        vec!["pods", "1", "1"],
        vec!["requests.cpu", "500m", "1"],
        vec!["limits.memory", "512Mi", "2Gi"],
    ] {
        assert!(rows.contains(&row), "{row:?} missing from:\n{describe}");
    }

    // Deleting the pod frees the quota again.
    ok(
        s.kubectl(
            kubectl,
            &["-n", "q", "delete", "pod", "first", "--wait=false"],
        ),
        "delete pod",
    );
    eventually(
        s,
        kubectl,
        &[
            "-n",
            "q",
            "get",
            "quota",
            "compute",
            "-o",
            "jsonpath={.status.used.pods}",
        ],
        "0",
    );
    ok(
        create(s, kubectl, "q", &pod("again", sized)),
        "pod after deletion",
    );

    // Sums of cpu and object counts.
    ok(
        s.kubectl(kubectl, &["create", "namespace", "q2"]),
        "namespace",
    );
    ok(
        s.kubectl(
            kubectl,
            &[
                "-n",
                "q2",
                "create",
                "quota",
                "small",
                "--hard=requests.cpu=1,services=1",
            ],
        ),
        "create quota",
    );
    let cpu = "{requests: {cpu: 600m}}";
    ok(create(s, kubectl, "q2", &pod("a", cpu)), "pod a");
    let err = fails(create(s, kubectl, "q2", &pod("b", cpu)), "pod b");
    assert!(
        err.contains(r#"pods "b" is forbidden: exceeded quota: small, requested: requests.cpu=600m, used: requests.cpu=600m, limited: requests.cpu=1"#),
        "{err}"
    );
    ok(
        s.kubectl(
            kubectl,
            &[
                "-n",
                "q2",
                "create",
                "service",
                "clusterip",
                "one",
                "--tcp=80",
            ],
        ),
        "service one",
    );
    let err = fails(
        s.kubectl(
            kubectl,
            &[
                "-n",
                "q2",
                "create",
                "service",
                "clusterip",
                "two",
                "--tcp=80",
            ],
        ),
        "service two",
    );
    assert!(
        err.contains(r#"services "two" is forbidden: exceeded quota: small, requested: services=1, used: services=1, limited: services=1"#),
        "{err}"
    );
}

/// Concurrent creates cannot both slip under the last free unit of a quota.
fn concurrent_creates(s: &TestServer, kubectl: &Path) {
    ok(
        s.kubectl(kubectl, &["create", "namespace", "race"]),
        "namespace",
    );
    ok(
        s.kubectl(
            kubectl,
            &["-n", "race", "create", "quota", "one", "--hard=pods=1"],
        ),
        "create quota",
    );
    let outcomes: Vec<bool> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..4)
            .map(|i| {
                scope.spawn(move || {
                    create(s, kubectl, "race", &pod(&format!("p{i}"), "{}"))
                        .status
                        .success()
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert_eq!(outcomes.iter().filter(|ok| **ok).count(), 1, "{outcomes:?}");
    let names = ok(
        s.kubectl(kubectl, &["-n", "race", "get", "pods", "-o", "name"]),
        "list pods",
    );
    assert_eq!(names.lines().count(), 1, "{names}");
}

const RESTRICTED_MESSAGE: &str = r#"PodSecurity "restricted:latest": allowPrivilegeEscalation != false (container "c" must set securityContext.allowPrivilegeEscalation=false), unrestricted capabilities (container "c" must set securityContext.capabilities.drop=["ALL"]), runAsNonRoot != true (pod or container "c" must set securityContext.runAsNonRoot=true), seccompProfile (pod or container "c" must set securityContext.seccompProfile.type to "RuntimeDefault" or "Localhost")"#;

const DEPLOYMENT: &str = "apiVersion: apps/v1
kind: Deployment
metadata: {name: web}
spec:
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers:
      - {name: c, image: nginx}
";

const HARDENED: &str = "apiVersion: v1
kind: Pod
metadata: {name: hardened}
spec:
  securityContext: {runAsNonRoot: true, seccompProfile: {type: RuntimeDefault}}
  containers:
  - name: c
    image: nginx
    securityContext:
      allowPrivilegeEscalation: false
      capabilities: {drop: [ALL]}
";

const HOST_NETWORK: &str = "apiVersion: v1
kind: Pod
metadata: {name: hostnet}
spec:
  hostNetwork: true
  containers:
  - {name: c, image: nginx}
";

fn pod_security(s: &TestServer, kubectl: &Path) {
    ok(
        s.kubectl(kubectl, &["create", "namespace", "strict"]),
        "namespace",
    );
    ok(
        s.kubectl(
            kubectl,
            &[
                "label",
                "namespace",
                "strict",
                "pod-security.kubernetes.io/enforce=restricted",
                "pod-security.kubernetes.io/warn=restricted",
            ],
        ),
        "label",
    );
    let err = fails(
        create(s, kubectl, "strict", &pod("plain", "{}")),
        "plain pod",
    );
    assert!(
        err.contains(&format!(
            r#"pods "plain" is forbidden: violates {RESTRICTED_MESSAGE}"#
        )),
        "{err}"
    );
    let out = create(s, kubectl, "strict", HARDENED);
    let warnings = stderr(&out);
    ok(out, "hardened pod");
    assert!(!warnings.contains("Warning"), "{warnings}");

    // Workloads are only warned about; their pods would be refused.
    let out = create(s, kubectl, "strict", DEPLOYMENT);
    let warnings = stderr(&out);
    ok(out, "deployment");
    assert!(
        warnings.contains(&format!("Warning: would violate {RESTRICTED_MESSAGE}")),
        "{warnings}"
    );

    // Warn mode admits with a warning.
    ok(
        s.kubectl(kubectl, &["create", "namespace", "lax"]),
        "namespace",
    );
    ok(
        s.kubectl(
            kubectl,
            &[
                "label",
                "namespace",
                "lax",
                "pod-security.kubernetes.io/warn=baseline",
            ],
        ),
        "label",
    );
    let out = create(s, kubectl, "lax", HOST_NETWORK);
    let warnings = stderr(&out);
    ok(out, "host network pod");
    assert!(
        warnings.contains(r#"Warning: would violate PodSecurity "baseline:latest": host namespaces (hostNetwork=true)"#),
        "{warnings}"
    );

    // Tightening enforce warns about the pods already there.
    let out = s.kubectl(
        kubectl,
        &[
            "label",
            "namespace",
            "lax",
            "pod-security.kubernetes.io/enforce=baseline",
        ],
    );
    let warnings = stderr(&out);
    ok(out, "enforce baseline");
    assert!(
        warnings.contains(r#"Warning: existing pods in namespace "lax" violate the new PodSecurity enforce level "baseline:latest""#)
            && warnings.contains("Warning: hostnet: host namespaces"),
        "{warnings}"
    );
    let err = fails(
        s.kubectl(
            kubectl,
            &[
                "label",
                "--overwrite",
                "namespace",
                "lax",
                "pod-security.kubernetes.io/enforce=strict",
            ],
        ),
        "malformed level",
    );
    assert!(
        err.contains(r#"metadata.labels[pod-security.kubernetes.io/enforce]: Invalid value: "strict": must be one of privileged, baseline, restricted"#),
        "{err}"
    );
}

#[test]
fn kubectl_limit_ranges_default_and_bound_pods() {
    for kubectl in kubectls() {
        limit_range(&TestServer::start(), &kubectl);
    }
}

#[test]
fn kubectl_resource_quotas_refuse_and_report_usage() {
    for kubectl in kubectls() {
        let s = TestServer::start();
        resource_quota(&s, &kubectl);
        concurrent_creates(&s, &kubectl);
    }
}

#[test]
fn kubectl_pod_security_enforces_and_warns() {
    for kubectl in kubectls() {
        pod_security(&TestServer::start(), &kubectl);
    }
}

/// Priority admission: a pod's priority and preemption policy come from its PriorityClass
/// (or the global default); unknown classes and disagreeing values are refused.
#[test]
fn kubectl_priority_classes_set_pod_priority() {
    let s = TestServer::start();
    let kubectl = kubectls().pop().unwrap();
    let k = |args: &[&str]| s.kubectl(&kubectl, args);
    ok(
        k(&[
            "create",
            "priorityclass",
            "high",
            "--value=1000",
            "--preemption-policy=Never",
        ]),
        "create class",
    );
    let with_class = "apiVersion: v1\nkind: Pod\nmetadata:\n  name: important\nspec:\n  priorityClassName: high\n  containers:\n  - name: c\n    image: busybox\n";
    ok(
        create(&s, &kubectl, "default", with_class),
        "create important",
    );
    assert_eq!(
        ok(
            k(&[
                "get",
                "pod",
                "important",
                "-o",
                "jsonpath={.spec.priority} {.spec.preemptionPolicy}"
            ]),
            "priority",
        ),
        "1000 Never"
    );
    // Without a class and without a global default: 0.
    ok(
        create(&s, &kubectl, "default", &pod("plain", "{}")),
        "create plain",
    );
    assert_eq!(
        ok(
            k(&[
                "get",
                "pod",
                "plain",
                "-o",
                "jsonpath={.spec.priority} {.spec.preemptionPolicy}"
            ]),
            "priority",
        ),
        "0 PreemptLowerPriority"
    );
    let unknown = with_class
        .replace("important", "lost")
        .replace("priorityClassName: high", "priorityClassName: nosuch");
    let err = stderr(&create(&s, &kubectl, "default", &unknown));
    assert!(
        err.contains(r#"pods "lost" is forbidden: no PriorityClass with name nosuch was found"#),
        "{err}"
    );
    let disagreeing = with_class.replace("important", "liar").replace(
        "priorityClassName: high",
        "priorityClassName: high\n  priority: 5",
    );
    let err = stderr(&create(&s, &kubectl, "default", &disagreeing));
    assert!(
        err.contains("the integer value of priority (5) must not be provided in pod spec; priority admission controller computed 1000 from the given PriorityClass name"),
        "{err}"
    );
    fails(k(&["get", "pod", "liar"]), "the refused pod was not stored");
    // A global default applies to pods that name no class; templates stay as written.
    let default = s.write(
        "default-class.yaml",
        "apiVersion: scheduling.k8s.io/v1\nkind: PriorityClass\nmetadata:\n  name: everyday\nvalue: 7\nglobalDefault: true\n",
    );
    ok(
        k(&["create", "-f", default.to_str().unwrap()]),
        "default class",
    );
    ok(
        create(&s, &kubectl, "default", &pod("later", "{}")),
        "create later",
    );
    assert_eq!(
        ok(
            k(&[
                "get",
                "pod",
                "later",
                "-o",
                "jsonpath={.spec.priorityClassName} {.spec.priority}"
            ]),
            "priority",
        ),
        "everyday 7"
    );
    ok(
        k(&["create", "deployment", "web", "--image=busybox"]),
        "create deployment",
    );
    assert_eq!(
        ok(
            k(&[
                "get",
                "deployment",
                "web",
                "-o",
                "jsonpath={.spec.template.spec.priority}"
            ]),
            "template priority",
        ),
        ""
    );
}
