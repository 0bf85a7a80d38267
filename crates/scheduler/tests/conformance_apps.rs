//! Behaviours of the apps conformance tests (test/e2e/apps/rc.go, replica_set.go, job.go,
//! apimachinery/garbage_collector.go) that need the controllers, checked with the real
//! kubectl against a cluster of simulated nodes: ReplicationControllers keep their pods,
//! controllers adopt matching orphans and release relabelled pods, a quota refusal shows
//! as `ReplicaFailure`, and the garbage collector spares dependents with another owner.

use crate::common;

use std::time::Duration;

use common::Cluster;

const TIMEOUT: Duration = Duration::from_secs(30);

fn pod(name: &str, label: &str) -> String {
    format!(
        "apiVersion: v1
kind: Pod
metadata: {{name: {name}, labels: {{name: {label}}}}}
spec:
  containers: [{{name: c, image: registry.k8s.io/pause:3.9}}]
"
    )
}

fn rc(name: &str, replicas: u32, label: &str) -> String {
    format!(
        "apiVersion: v1
kind: ReplicationController
metadata: {{name: {name}}}
spec:
  replicas: {replicas}
  selector: {{name: {label}}}
  template:
    metadata: {{labels: {{name: {label}}}}}
    spec:
      terminationGracePeriodSeconds: 0
      containers: [{{name: c, image: registry.k8s.io/pause:3.9}}]
"
    )
}

/// The kind/name of a pod's controller, or "" when it has none.
fn controller(c: &Cluster, pod: &str) -> String {
    c.jsonpath(
        &["pod", pod],
        "{.metadata.ownerReferences[?(@.controller==true)].kind}/{.metadata.ownerReferences[?(@.controller==true)].name}",
    )
}

fn count(c: &Cluster, what: &[&str]) -> usize {
    let mut args = vec!["get"];
    args.extend_from_slice(what);
    args.extend(["-o", "name"]);
    String::from_utf8_lossy(&c.kubectl(&args).stdout)
        .lines()
        .count()
}

/// rc.go "should serve a basic image on each replica", "should adopt matching pods on
/// creation", "should release no longer matching pods", "get and update
/// ReplicationController scale", "should surface a failure condition on a common issue
/// like exceeded quota"; replica_set.go "should adopt matching pods on creation and
/// release no longer matching pods".
#[test]
fn replication_controllers_run_adopt_release_and_report_quota_failures() {
    let c = Cluster::start(2);
    // An ownerless pod, then controllers whose selectors match it: adopted, not replaced.
    c.apply(&pod("pod-adoption", "pod-adoption"));
    c.apply(&rc("pod-adoption", 1, "pod-adoption"));
    c.wait_for("the RC to adopt its pod", TIMEOUT, || {
        controller(&c, "pod-adoption") == "ReplicationController/pod-adoption"
    });
    c.apply(&pod("rs-adoption", "rs-adoption"));
    c.apply(
        "apiVersion: apps/v1
kind: ReplicaSet
metadata: {name: rs-adoption}
spec:
  replicas: 1
  selector: {matchLabels: {name: rs-adoption}}
  template:
    metadata: {labels: {name: rs-adoption}}
    spec:
      containers: [{name: c, image: registry.k8s.io/pause:3.9}]
",
    );
    c.wait_for("the ReplicaSet to adopt its pod", TIMEOUT, || {
        controller(&c, "rs-adoption") == "ReplicaSet/rs-adoption"
    });
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(count(&c, &["pods", "-l", "name=pod-adoption"]), 1);
    assert_eq!(count(&c, &["pods", "-l", "name=rs-adoption"]), 1);

    // Relabelled out of the selector: released, and replaced.
    for p in ["pod-adoption", "rs-adoption"] {
        c.ok(&["label", "pod", p, "name=released", "--overwrite"]);
    }
    c.wait_for("both pods released", TIMEOUT, || {
        controller(&c, "pod-adoption") == "/" && controller(&c, "rs-adoption") == "/"
    });
    c.wait_for("replacements", TIMEOUT, || {
        count(&c, &["pods", "-l", "name=pod-adoption"]) == 1
            && count(&c, &["pods", "-l", "name=rs-adoption"]) == 1
    });

    // The scale subresource drives the RC.
    c.ok(&["scale", "rc", "pod-adoption", "--replicas=3"]);
    c.wait_for("3 ready replicas", TIMEOUT, || {
        c.jsonpath(&["rc", "pod-adoption"], "{.status.readyReplicas}") == "3"
    });
    let scale = c.ok(&[
        "get",
        "--raw",
        "/api/v1/namespaces/default/replicationcontrollers/pod-adoption/scale",
    ]);
    assert!(scale.contains("\"replicas\":3"), "{scale}");

    // A quota refusing pods shows as ReplicaFailure until the RC fits.
    c.ok(&["create", "namespace", "quota"]);
    c.ok(&[
        "create",
        "quota",
        "condition-test",
        "-n",
        "quota",
        "--hard=pods=2",
    ]);
    c.wait_for("the quota's status", TIMEOUT, || {
        !c.jsonpath(
            &["quota", "condition-test", "-n", "quota"],
            "{.status.hard}",
        )
        .is_empty()
    });
    c.kubectl_stdin(
        &["apply", "-n", "quota", "-f", "-"],
        Some(&rc("condition-test", 3, "condition-test")),
    );
    let failure = |c: &Cluster| {
        c.jsonpath(
            &["rc", "condition-test", "-n", "quota"],
            "{.status.conditions[?(@.type==\"ReplicaFailure\")].reason}",
        )
    };
    c.wait_for("the ReplicaFailure condition", TIMEOUT, || {
        failure(&c) == "FailedCreate"
    });
    let message = c.jsonpath(
        &["rc", "condition-test", "-n", "quota"],
        "{.status.conditions[?(@.type==\"ReplicaFailure\")].message}",
    );
    assert!(message.contains("exceeded quota"), "{message}");
    c.ok(&[
        "scale",
        "rc",
        "condition-test",
        "-n",
        "quota",
        "--replicas=2",
    ]);
    c.wait_for("the condition to clear", TIMEOUT, || failure(&c).is_empty());
}

/// garbage_collector.go "should not delete dependents that have both valid owner and
/// owner that's waiting for dependents to be deleted", "should delete pods created by rc
/// when not orphaning", "should orphan pods created by rc if delete options say so".
#[test]
fn garbage_collector_spares_dependents_with_another_owner() {
    let c = Cluster::start(2);
    c.apply(&rc("to-be-deleted", 4, "gc"));
    c.apply(&rc("to-stay", 0, "stay"));
    c.wait_for("4 pods", TIMEOUT, || {
        count(&c, &["pods", "-l", "name=gc"]) == 4
    });
    let stay_uid = c.jsonpath(&["rc", "to-stay"], "{.metadata.uid}");
    let names = c.jsonpath(&["pods", "-l", "name=gc"], "{.items[*].metadata.name}");
    let names: Vec<&str> = names.split_whitespace().collect();
    for p in &names[..2] {
        let refs = c.jsonpath(&["pod", p], "{.metadata.ownerReferences}");
        let mut refs: serde_json::Value = serde_json::from_str(&refs).unwrap();
        refs.as_array_mut().unwrap().push(serde_json::json!({
            "apiVersion": "v1", "kind": "ReplicationController",
            "name": "to-stay", "uid": stay_uid,
        }));
        let patch = serde_json::json!({"metadata": {"ownerReferences": refs}}).to_string();
        c.ok(&["patch", "pod", p, "--type=merge", "-p", &patch]);
    }
    c.ok(&[
        "delete",
        "rc",
        "to-be-deleted",
        "--cascade=foreground",
        "--wait=false",
    ]);
    c.wait_for("the RC to go", TIMEOUT, || {
        count(&c, &["rc", "to-be-deleted", "--ignore-not-found"]) == 0
    });
    c.wait_for("the solely owned pods to go", TIMEOUT, || {
        count(&c, &["pods", "-l", "name=gc"]) == 2
    });
    for p in &names[..2] {
        let meta = c.jsonpath(
            &["pod", p],
            "{.metadata.deletionTimestamp}|{.metadata.ownerReferences[*].name}",
        );
        assert_eq!(meta, "|to-stay", "pod {p} keeps its other owner");
    }

    // Background deletes the RC's pods; orphan leaves them without an owner.
    c.apply(&rc("background", 2, "bg"));
    c.apply(&rc("orphan", 2, "orphan"));
    c.wait_for("4 more pods", TIMEOUT, || {
        count(&c, &["pods", "-l", "name in (bg,orphan)"]) == 4
    });
    c.ok(&["delete", "rc", "background", "--cascade=background"]);
    c.ok(&["delete", "rc", "orphan", "--cascade=orphan"]);
    c.wait_for("the background RC's pods to go", TIMEOUT, || {
        count(&c, &["pods", "-l", "name=bg"]) == 0
    });
    std::thread::sleep(Duration::from_secs(2));
    let owners = c.jsonpath(
        &["pods", "-l", "name=orphan"],
        "{range .items[*]}{.metadata.name}={.metadata.ownerReferences}{\"\\n\"}{end}",
    );
    assert_eq!(owners.lines().count(), 2, "{owners}");
    assert!(owners.lines().all(|l| l.ends_with('=')), "{owners}");
}

/// job.go "should adopt matching orphans and release non-matching pods".
#[test]
fn jobs_readopt_orphans_and_release_relabelled_pods() {
    let c = Cluster::start(2);
    c.apply(
        "apiVersion: batch/v1
kind: Job
metadata: {name: adopt-release}
spec:
  parallelism: 2
  completions: 4
  template:
    spec:
      restartPolicy: Never
      containers: [{name: c, image: busybox, command: [sleep, '1000000']}]
",
    );
    let pods = |c: &Cluster| {
        c.jsonpath(
            &["pods", "-l", "job-name=adopt-release"],
            "{.items[*].metadata.name}",
        )
    };
    c.wait_for("2 pods", TIMEOUT, || {
        pods(&c).split_whitespace().count() == 2
    });
    let pod = pods(&c).split_whitespace().next().unwrap().to_owned();
    c.ok(&[
        "patch",
        "pod",
        &pod,
        "--type=merge",
        "-p",
        r#"{"metadata":{"ownerReferences":null}}"#,
    ]);
    c.wait_for("the Job to re-adopt its pod", TIMEOUT, || {
        controller(&c, &pod) == "Job/adopt-release"
    });
    c.ok(&[
        "label",
        "pod",
        &pod,
        "batch.kubernetes.io/controller-uid-",
        "controller-uid-",
    ]);
    c.wait_for("the Job to release its pod", TIMEOUT, || {
        controller(&c, &pod) == "/"
    });
}

/// controller_revision.go "should manage the lifecycle of a ControllerRevision": a
/// DaemonSet adopts an ownerless revision holding its template as its current one, and
/// numbers the next after it.
#[test]
fn daemonsets_adopt_matching_controller_revisions() {
    let c = Cluster::start(2);
    c.apply(
        "apiVersion: apps/v1
kind: DaemonSet
metadata: {name: cr-ds}
spec:
  selector: {matchLabels: {daemonset-name: cr-ds}}
  template:
    metadata: {labels: {daemonset-name: cr-ds}}
    spec:
      terminationGracePeriodSeconds: 0
      containers: [{name: c, image: registry.k8s.io/pause:3.9}]
",
    );
    let revisions = |c: &Cluster| count(c, &["controllerrevisions", "-l", "daemonset-name=cr-ds"]);
    c.wait_for("the first revision", TIMEOUT, || revisions(&c) == 1);
    let first: serde_json::Value = serde_json::from_str(&c.ok(&[
        "get",
        "controllerrevisions",
        "-l",
        "daemonset-name=cr-ds",
        "-o",
        "json",
    ]))
    .unwrap();
    let first = &first["items"][0];
    let copy = serde_json::json!({
        "apiVersion": "apps/v1", "kind": "ControllerRevision",
        "metadata": {"name": "e2e-copy", "labels": {"daemonset-name": "cr-ds"}},
        "data": first["data"],
        "revision": first["revision"].as_i64().unwrap() + 1,
    });
    c.kubectl_stdin(&["create", "-f", "-"], Some(&copy.to_string()));
    assert_eq!(revisions(&c), 2);
    c.ok(&[
        "delete",
        "controllerrevision",
        first["metadata"]["name"].as_str().unwrap(),
    ]);
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(revisions(&c), 1, "the copy serves as the current revision");
    c.wait_for("the copy to be adopted", TIMEOUT, || {
        c.jsonpath(
            &["controllerrevision", "e2e-copy"],
            "{.metadata.ownerReferences[0].name}",
        ) == "cr-ds"
    });
    c.ok(&["label", "controllerrevision", "e2e-copy", "e2e=updated"]);
    c.ok(&[
        "patch",
        "ds",
        "cr-ds",
        "--type=merge",
        "-p",
        r#"{"spec":{"template":{"metadata":{"labels":{"patched":"yes"}}}}}"#,
    ]);
    c.wait_for("a new revision", TIMEOUT, || revisions(&c) == 2);
    c.ok(&["delete", "controllerrevisions", "-l", "e2e=updated"]);
    assert_eq!(revisions(&c), 1);
    let numbers = c.jsonpath(
        &["controllerrevisions", "-l", "daemonset-name=cr-ds"],
        "{.items[*].revision}",
    );
    assert_eq!(numbers, "3");
}

/// deployment.go "deployment should support proportional scaling": scaled mid-rollout,
/// each active ReplicaSet takes its share of the new replicas.
#[test]
fn deployments_scaled_mid_rollout_scale_proportionally() {
    let c = Cluster::start(2);
    c.apply(
        "apiVersion: apps/v1
kind: Deployment
metadata: {name: webserver}
spec:
  replicas: 10
  strategy: {type: RollingUpdate, rollingUpdate: {maxSurge: 3, maxUnavailable: 2}}
  selector: {matchLabels: {name: webserver}}
  template:
    metadata: {labels: {name: webserver}}
    spec:
      terminationGracePeriodSeconds: 0
      containers: [{name: c, image: registry.k8s.io/pause:3.9}]
",
    );
    c.wait_for("10 available", TIMEOUT, || {
        c.jsonpath(&["deploy", "webserver"], "{.status.availableReplicas}") == "10"
    });
    // The new pods never become ready, as with the e2e test's unpullable image.
    c.ok(&[
        "patch",
        "deploy",
        "webserver",
        "--type=merge",
        "-p",
        r#"{"spec":{"template":{"metadata":{"annotations":{"skiff.dev/simulate-ready":"false"}},"spec":{"containers":[{"name":"c","image":"webserver:404"}]}}}}"#,
    ]);
    let sizes = |c: &Cluster| {
        c.jsonpath(
            &[
                "rs",
                "-l",
                "name=webserver",
                "--sort-by=.metadata.creationTimestamp",
            ],
            "{.items[*].spec.replicas}",
        )
    };
    c.wait_for("the rollout to stall at 8 old and 5 new", TIMEOUT, || {
        sizes(&c) == "8 5"
    });
    c.ok(&["scale", "deploy", "webserver", "--replicas=30"]);
    c.wait_for("20 old and 13 new", TIMEOUT, || sizes(&c) == "20 13");
}

/// deployment.go "deployment should support rollover": a Deployment adopts an ownerless
/// ReplicaSet its selector matches and rolls it over to its own template.
#[test]
fn deployments_adopt_and_roll_over_matching_replicasets() {
    let c = Cluster::start(2);
    c.apply(
        "apiVersion: apps/v1
kind: ReplicaSet
metadata: {name: test-rollover-controller, labels: {name: rollover-pod, pod: httpd}}
spec:
  replicas: 1
  selector: {matchLabels: {name: rollover-pod, pod: httpd}}
  template:
    metadata: {labels: {name: rollover-pod, pod: httpd}}
    spec:
      terminationGracePeriodSeconds: 0
      containers: [{name: httpd, image: httpd}]
",
    );
    c.wait_for("the ReplicaSet's pod", TIMEOUT, || {
        c.jsonpath(
            &["rs", "test-rollover-controller"],
            "{.status.readyReplicas}",
        ) == "1"
    });
    c.apply(
        "apiVersion: apps/v1
kind: Deployment
metadata: {name: test-rollover-deployment}
spec:
  replicas: 1
  selector: {matchLabels: {name: rollover-pod}}
  strategy: {type: RollingUpdate, rollingUpdate: {maxSurge: 1, maxUnavailable: 0}}
  template:
    metadata: {labels: {name: rollover-pod}}
    spec:
      terminationGracePeriodSeconds: 0
      containers: [{name: agnhost, image: agnhost}]
",
    );
    c.wait_for(
        "the old ReplicaSet adopted and scaled to 0",
        TIMEOUT,
        || {
            c.jsonpath(
                &["rs", "test-rollover-controller"],
                "{.metadata.ownerReferences[0].name}/{.spec.replicas}",
            ) == "test-rollover-deployment/0"
        },
    );
    c.wait_for("the rollout to complete", TIMEOUT, || {
        c.jsonpath(
            &["deploy", "test-rollover-deployment"],
            "{.status.updatedReplicas}/{.status.availableReplicas}",
        ) == "1/1"
    });
}
