//! The workload controllers (Job, TTL-after-finished, CronJob, DaemonSet, StatefulSet) and
//! the Endpoints/EndpointSlice controllers, checked with the real kubectl against a cluster
//! of simulated nodes. Simulated containers exit as their `sh -c "exit N"` command says.

use crate::common;

use std::time::Duration;

use common::Cluster;

const TIMEOUT: Duration = Duration::from_secs(60);

fn job(name: &str, extra_spec: &str, script: &str) -> String {
    format!(
        "apiVersion: batch/v1
kind: Job
metadata: {{name: {name}}}
spec:
{extra_spec}
  template:
    spec:
      restartPolicy: Never
      containers: [{{name: main, image: busybox, command: [sh, -c, '{script}']}}]
"
    )
}

fn words(s: &str) -> Vec<String> {
    let mut v: Vec<String> = s.split_whitespace().map(str::to_owned).collect();
    v.sort();
    v
}

#[test]
fn jobs_complete_fail_run_indexed_and_expire() {
    let c = Cluster::start(2);
    c.apply(&job(
        "ok",
        "  completions: 3\n  parallelism: 2",
        "echo done; exit 0",
    ));
    c.apply(&job("bad", "  backoffLimit: 1", "exit 1"));
    c.apply(&job(
        "policy",
        "  backoffLimit: 6\n  podFailurePolicy:\n    rules:\n    - action: FailJob\n      onExitCodes: {containerName: main, operator: In, values: [42]}",
        "exit 42",
    ));
    c.apply(&job(
        "idx",
        "  completions: 3\n  parallelism: 3\n  completionMode: Indexed",
        "exit 0",
    ));
    c.apply(&job("short", "  ttlSecondsAfterFinished: 2", "exit 0"));

    // completions 3, parallelism 2: never more than 2 at once, 3 succeed.
    let mut most_active = 0;
    c.wait_for("job ok to finish", TIMEOUT, || {
        let active: u32 = c
            .jsonpath(&["job", "ok"], "{.status.active}")
            .parse()
            .unwrap_or(0);
        most_active = most_active.max(active);
        c.jsonpath(&["job", "ok"], "{.status.succeeded}") == "3"
    });
    c.ok(&[
        "wait",
        "--for=condition=complete",
        "job/ok",
        "--timeout=60s",
    ]);
    assert!(most_active <= 2, "{most_active} pods ran at once");
    assert_eq!(
        c.jsonpath(
            &["job", "ok"],
            "{.status.conditions[*].type} {.status.conditions[*].reason}"
        ),
        "SuccessCriteriaMet Complete CompletionsReached CompletionsReached"
    );
    assert!(!c
        .jsonpath(&["job", "ok"], "{.status.completionTime}")
        .is_empty());
    let row = c.ok(&["get", "job", "ok", "--no-headers"]);
    let cells: Vec<&str> = row.split_whitespace().collect();
    assert_eq!(&cells[..3], ["ok", "Complete", "3/3"], "{row}");
    let pods = c.jsonpath(
        &["pods", "-l", "batch.kubernetes.io/job-name=ok"],
        "{range .items[*]}{.status.phase}:{.metadata.labels.job-name}:{.metadata.finalizers} {end}",
    );
    assert_eq!(
        words(&pods.replace("[]", "")),
        ["Succeeded:ok:", "Succeeded:ok:", "Succeeded:ok:"],
        "the tracking finalizer is released: {pods}"
    );
    let events = c.ok(&[
        "get",
        "events",
        "--field-selector=involvedObject.name=ok",
        "-o",
        "jsonpath={range .items[*]}{.reason} {end}",
    ]);
    assert_eq!(
        events.matches("SuccessfulCreate").count(),
        3,
        "events: {}\npods: {}",
        c.ok(&[
            "get",
            "events",
            "--field-selector=involvedObject.name=ok",
            "--sort-by=.metadata.creationTimestamp",
            "-o",
            "jsonpath={range .items[*]}{.metadata.creationTimestamp} {.reason} {.message}\n{end}"
        ]),
        c.ok(&["get", "pods", "-l", "job-name=ok", "-o", "wide"]),
    );
    assert!(events.contains("Completed"), "events: {events}");

    // backoffLimit 1: the second failure fails the Job.
    c.ok(&["wait", "--for=condition=failed", "job/bad", "--timeout=60s"]);
    assert_eq!(
        c.jsonpath(
            &["job", "bad"],
            "{.status.failed} {.status.conditions[?(@.type=='Failed')].reason}"
        ),
        "2 BackoffLimitExceeded"
    );
    let row = c.ok(&["get", "job", "bad", "--no-headers"]);
    assert!(row.contains("Failed"), "{row}");

    // podFailurePolicy: exit code 42 fails the Job at the first pod, whatever backoffLimit.
    c.ok(&[
        "wait",
        "--for=condition=failed",
        "job/policy",
        "--timeout=60s",
    ]);
    assert_eq!(
        c.jsonpath(
            &["job", "policy"],
            "{.status.failed} {.status.conditions[?(@.type=='Failed')].reason}"
        ),
        "1 PodFailurePolicy"
    );
    let message = c.jsonpath(
        &["job", "policy"],
        "{.status.conditions[?(@.type=='Failed')].message}",
    );
    assert!(
        message.starts_with("Container main for pod default/policy-")
            && message.ends_with("failed with exit code 42 matching FailJob rule at index 0"),
        "{message}"
    );

    // Indexed: one pod per index, named and hostnamed after it.
    c.ok(&[
        "wait",
        "--for=condition=complete",
        "job/idx",
        "--timeout=60s",
    ]);
    assert_eq!(
        c.jsonpath(&["job", "idx"], "{.status.completedIndexes}"),
        "0-2"
    );
    let pods = c.jsonpath(
        &["pods", "-l", "job-name=idx"],
        "{range .items[*]}{.metadata.annotations.batch\\.kubernetes\\.io/job-completion-index}/{.metadata.labels.batch\\.kubernetes\\.io/job-completion-index}/{.spec.hostname} {end}",
    );
    assert_eq!(
        words(&pods),
        ["0/0/idx-0", "1/1/idx-1", "2/2/idx-2"],
        "{pods}"
    );

    // ttlSecondsAfterFinished: the finished Job and its pods are deleted.
    c.wait_for("job short to be deleted after its TTL", TIMEOUT, || {
        let out = c.kubectl(&["get", "job", "short"]);
        !out.status.success() && String::from_utf8_lossy(&out.stderr).contains("NotFound")
    });
    c.wait_for("the pods of job short to be deleted", TIMEOUT, || {
        c.ok(&["get", "pods", "-l", "job-name=short", "-o", "name"])
            .trim()
            .is_empty()
    });
}

/// Deleting a Job takes its running pods along: the tracking finalizer of a pod whose Job
/// is gone is released (`cleanupOrphanPods`), also when the pod's deletion arrives while
/// the controller's cache still holds the Job; with `--cascade=orphan` the pods stay, and
/// are released too.
#[test]
fn deleting_a_job_releases_its_pods() {
    let c = Cluster::start(1);
    c.apply(&job(
        "gone",
        "  parallelism: 2\n  completions: 2",
        "sleep 3600",
    ));
    c.apply(&job(
        "kept",
        "  parallelism: 1\n  completions: 1",
        "sleep 3600",
    ));
    c.wait_for("both jobs running", TIMEOUT, || {
        c.jsonpath(&["job", "gone"], "{.status.active}") == "2"
            && c.jsonpath(&["job", "kept"], "{.status.active}") == "1"
    });
    c.ok(&["delete", "job", "gone"]);
    c.wait_for("the deleted Job's pods to go", TIMEOUT, || {
        c.jsonpath(
            &["pods", "-l", "job-name=gone"],
            "{.items[*].metadata.name}",
        )
        .is_empty()
    });
    c.ok(&["delete", "job", "kept", "--cascade=orphan"]);
    c.wait_for("the orphan to lose its tracking finalizer", TIMEOUT, || {
        !c.jsonpath(
            &["pods", "-l", "job-name=kept"],
            "{.items[*].metadata.finalizers}",
        )
        .contains("job-tracking")
    });
    assert_eq!(
        words(&c.jsonpath(&["pods", "-l", "job-name=kept"], "{.items[*].status.phase}")),
        ["Running"]
    );
}

#[test]
fn service_endpoints_and_slices_follow_pod_readiness() {
    let c = Cluster::start(2);
    c.apply(
        "apiVersion: apps/v1
kind: Deployment
metadata: {name: web}
spec:
  replicas: 2
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers:
      - {name: c, image: nginx, ports: [{name: http, containerPort: 8080}]}
---
apiVersion: v1
kind: Service
metadata: {name: web, labels: {tier: front}}
spec:
  selector: {app: web}
  ports: [{name: web, port: 80, targetPort: http}]
",
    );
    let pod_ips = || {
        words(&c.jsonpath(
            &["pods", "-l", "app=web"],
            "{range .items[*]}{.status.podIP} {end}",
        ))
    };
    c.wait_for("2 pod IPs", TIMEOUT, || pod_ips().len() == 2);
    let ips = pod_ips();
    let ready = |c: &Cluster| {
        words(&c.jsonpath(
            &["endpoints", "web"],
            "{range .subsets[*].addresses[*]}{.ip} {end}",
        ))
    };
    c.wait_for("both pods in the Endpoints", TIMEOUT, || ready(&c) == ips);
    assert_eq!(
        c.jsonpath(&["endpoints", "web"], "{.subsets[0].ports[0].port}"),
        "8080",
        "the named targetPort resolves to the container port"
    );
    let row = c.ok(&["get", "endpoints", "web", "--no-headers"]);
    assert!(row.contains(&format!("{}:8080", ips[0])), "{row}");
    let describe = c.ok(&["describe", "svc", "web"]);
    assert!(
        describe.contains(&format!("{}:8080", ips[0])),
        "describe svc shows the endpoints:\n{describe}"
    );
    let slice = |path: &str| {
        c.jsonpath(
            &[
                "endpointslices",
                "-l",
                "kubernetes.io/service-name=web,endpointslice.kubernetes.io/managed-by=endpointslice-controller.k8s.io",
            ],
            path,
        )
    };
    c.wait_for("a slice with both pods ready", TIMEOUT, || {
        slice("{range .items[*].endpoints[?(@.conditions.ready==true)]}{.addresses[0]} {end}")
            .split_whitespace()
            .count()
            == 2
    });
    assert_eq!(slice("{.items[*].ports[0].port}"), "8080");
    assert_eq!(slice("{.items[*].addressType}"), "IPv4");

    // One pod stops being ready: it moves to notReadyAddresses, ready=false in the slice.
    let pod = c.jsonpath(
        &["pods", "-l", "app=web"],
        "{.items[0].metadata.name} {.items[0].status.podIP}",
    );
    let (pod, ip) = pod.split_once(' ').unwrap();
    c.ok(&["annotate", "pod", pod, "skiff.dev/simulate-ready=false"]);
    c.wait_for("the pod in notReadyAddresses", TIMEOUT, || {
        c.jsonpath(
            &["endpoints", "web"],
            "{range .subsets[*].notReadyAddresses[*]}{.ip} {end}",
        )
        .trim()
            == ip
    });
    c.wait_for("the slice to mark it not ready", TIMEOUT, || {
        slice("{range .items[*].endpoints[?(@.conditions.ready==false)]}{.addresses[0]} {end}")
            .trim()
            == ip
    });
    c.ok(&[
        "annotate",
        "pod",
        pod,
        "skiff.dev/simulate-ready=true",
        "--overwrite",
    ]);
    c.wait_for("the pod ready again", TIMEOUT, || ready(&c).len() == 2);

    // Scaled to zero: no addresses; the slice stays as a placeholder.
    c.ok(&["scale", "deployment/web", "--replicas=0"]);
    c.wait_for("empty endpoints", TIMEOUT, || {
        c.jsonpath(&["endpoints", "web"], "{.subsets}").is_empty()
    });
    c.wait_for("an empty slice", TIMEOUT, || {
        slice("{.items[*].endpoints}").is_empty() && !slice("{.items[*].metadata.name}").is_empty()
    });
    c.ok(&["delete", "svc", "web"]);
    c.wait_for("the Endpoints to go with the Service", TIMEOUT, || {
        !c.kubectl(&["get", "endpoints", "web"]).status.success()
    });
}

#[test]
fn daemonset_runs_on_eligible_nodes_and_rolls_out() {
    let c = Cluster::start(4);
    c.ok(&["taint", "node", "sim-3", "dedicated=db:NoSchedule"]);
    c.apply(
        "apiVersion: apps/v1
kind: DaemonSet
metadata: {name: agent}
spec:
  selector: {matchLabels: {app: agent}}
  template:
    metadata: {labels: {app: agent}}
    spec:
      containers: [{name: c, image: busybox}]
",
    );
    let placed = |c: &Cluster| {
        words(&c.jsonpath(
            &["pods", "-l", "app=agent"],
            "{range .items[*]}{.spec.nodeName} {end}",
        ))
    };
    c.wait_for("a pod on each untainted node", TIMEOUT, || {
        placed(&c) == ["sim-0", "sim-1", "sim-2"]
    });
    c.ok(&["rollout", "status", "ds/agent", "--timeout=60s"]);
    let status = "{.status.desiredNumberScheduled} {.status.currentNumberScheduled} {.status.numberReady} {.status.updatedNumberScheduled} {.status.numberAvailable} {.status.numberMisscheduled}";
    assert_eq!(c.jsonpath(&["ds", "agent"], status), "3 3 3 3 3 0");
    let affinity = c.jsonpath(
        &["pods", "-l", "app=agent"],
        "{.items[0].spec.affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution.nodeSelectorTerms[0].matchFields[0].key}",
    );
    assert_eq!(affinity, "metadata.name");
    let tolerations = c.jsonpath(
        &["pods", "-l", "app=agent"],
        "{.items[0].spec.tolerations[*].key}",
    );
    assert!(
        tolerations.contains("node.kubernetes.io/not-ready")
            && tolerations.contains("node.kubernetes.io/unschedulable"),
        "{tolerations}"
    );
    let row = c.ok(&["get", "ds", "agent", "--no-headers"]);
    assert!(row.starts_with("agent"), "{row}");

    // A new node gets a pod.
    c.add_nodes(1);
    c.wait_for("a pod on the new node", TIMEOUT, || {
        placed(&c) == ["sim-0", "sim-1", "sim-2", "sim-4"]
    });
    c.wait_for("4 desired and ready", TIMEOUT, || {
        c.jsonpath(&["ds", "agent"], status) == "4 4 4 4 4 0"
    });

    // A new template rolls out to every node, recorded as a second revision.
    c.ok(&["set", "image", "ds/agent", "c=busybox:1.36"]);
    c.ok(&["rollout", "status", "ds/agent", "--timeout=60s"]);
    let images = c.jsonpath(
        &["pods", "-l", "app=agent"],
        "{range .items[*]}{.spec.containers[0].image} {end}",
    );
    assert_eq!(words(&images), ["busybox:1.36"; 4], "{images}");
    let revisions = c.jsonpath(
        &["controllerrevisions", "-l", "app=agent"],
        "{range .items[*]}{.revision} {end}",
    );
    assert_eq!(words(&revisions), ["1", "2"], "{revisions}");
    let hashes = c.jsonpath(
        &["pods", "-l", "app=agent"],
        "{range .items[*]}{.metadata.labels.controller-revision-hash} {end}",
    );
    let hashes: std::collections::BTreeSet<&str> = hashes.split_whitespace().collect();
    assert_eq!(hashes.len(), 1, "{hashes:?}");
    let history = c.ok(&["rollout", "history", "ds/agent"]);
    assert!(history.contains('2'), "{history}");
    c.ok(&["rollout", "undo", "ds/agent"]);
    c.ok(&["rollout", "status", "ds/agent", "--timeout=60s"]);
    c.wait_for("the old image back on every node", TIMEOUT, || {
        words(&c.jsonpath(
            &["pods", "-l", "app=agent"],
            "{range .items[*]}{.spec.containers[0].image} {end}",
        )) == ["busybox"; 4]
    });
}

#[test]
fn statefulset_scales_in_order_keeps_claims_and_updates_by_partition() {
    let c = Cluster::start(2);
    // No provisioner runs here: the claims bind to volumes made in advance, as they must
    // before the scheduler places a pod whose claim is unbound.
    for i in 0..3 {
        c.apply(&format!(
            "apiVersion: v1
kind: PersistentVolume
metadata: {{name: pv-{i}}}
spec:
  capacity: {{storage: 1Gi}}
  accessModes: [ReadWriteOnce]
  persistentVolumeReclaimPolicy: Retain
  hostPath: {{path: /tmp/skiff-sts-pv-{i}}}
"
        ));
    }
    c.apply(
        "apiVersion: v1
kind: Service
metadata: {name: db}
spec:
  clusterIP: None
  selector: {app: db}
  ports: [{port: 5432}]
---
apiVersion: apps/v1
kind: StatefulSet
metadata: {name: db}
spec:
  serviceName: db
  replicas: 3
  selector: {matchLabels: {app: db}}
  template:
    metadata: {labels: {app: db}}
    spec:
      containers: [{name: c, image: busybox}]
  volumeClaimTemplates:
  - metadata: {name: data}
    spec:
      accessModes: [ReadWriteOnce]
      resources: {requests: {storage: 1Gi}}
",
    );
    c.ok(&["rollout", "status", "sts/db", "--timeout=60s"]);
    let pods = c.jsonpath(
        &["pods", "-l", "app=db"],
        "{range .items[*]}{.metadata.name}/{.spec.hostname}/{.spec.subdomain}/{.metadata.labels.apps\\.kubernetes\\.io/pod-index}/{.metadata.labels.statefulset\\.kubernetes\\.io/pod-name}/{.spec.volumes[0].persistentVolumeClaim.claimName} {end}",
    );
    assert_eq!(
        words(&pods),
        [
            "db-0/db-0/db/0/db-0/data-db-0",
            "db-1/db-1/db/1/db-1/data-db-1",
            "db-2/db-2/db/2/db-2/data-db-2"
        ],
        "{pods}"
    );
    // OrderedReady: each pod was created after the previous one was ready.
    let created = c.ok(&[
        "get",
        "events",
        "--field-selector=involvedObject.name=db,reason=SuccessfulCreate",
        "--sort-by=.metadata.creationTimestamp",
        "-o",
        "jsonpath={range .items[*]}{.message}|{end}",
    ]);
    let order: Vec<&str> = created
        .split('|')
        .filter(|m| m.starts_with("create Pod"))
        .collect();
    assert_eq!(
        order,
        [
            "create Pod db-0 in StatefulSet db successful",
            "create Pod db-1 in StatefulSet db successful",
            "create Pod db-2 in StatefulSet db successful"
        ],
        "{created}"
    );
    let ready_at = |pod: &str| {
        c.jsonpath(
            &["pod", pod],
            "{.status.conditions[?(@.type=='Ready')].lastTransitionTime}",
        )
    };
    let created_at = |pod: &str| c.jsonpath(&["pod", pod], "{.metadata.creationTimestamp}");
    assert!(created_at("db-1") >= ready_at("db-0"));
    assert!(created_at("db-2") >= ready_at("db-1"));
    let claims = c.jsonpath(&["pvc"], "{range .items[*]}{.metadata.name} {end}");
    assert_eq!(words(&claims), ["data-db-0", "data-db-1", "data-db-2"]);
    let status = "{.status.replicas} {.status.readyReplicas} {.status.currentReplicas} {.status.updatedReplicas} {.status.availableReplicas}";
    assert_eq!(c.jsonpath(&["sts", "db"], status), "3 3 3 3 3");
    let revision = c.jsonpath(&["sts", "db"], "{.status.currentRevision}");
    assert_eq!(
        c.jsonpath(&["sts", "db"], "{.status.updateRevision}"),
        revision
    );
    assert_eq!(
        c.jsonpath(
            &["pod", "db-0"],
            "{.metadata.labels.controller-revision-hash}"
        ),
        revision
    );

    // Rolling update with partition 1: only db-2 and db-1 move, from the top.
    c.ok(&[
        "patch",
        "sts/db",
        "--type=merge",
        "-p",
        r#"{"spec":{"updateStrategy":{"type":"RollingUpdate","rollingUpdate":{"partition":1}}}}"#,
    ]);
    c.ok(&["set", "image", "sts/db", "c=busybox:1.36"]);
    c.ok(&["rollout", "status", "sts/db", "--timeout=60s"]);
    let images = || {
        c.jsonpath(
            &["pods", "-l", "app=db"],
            "{range .items[*]}{.metadata.name}={.spec.containers[0].image} {end}",
        )
    };
    assert_eq!(
        words(&images()),
        ["db-0=busybox", "db-1=busybox:1.36", "db-2=busybox:1.36"]
    );
    assert!(
        created_at("db-1") >= created_at("db-2"),
        "reverse ordinal order"
    );
    assert_eq!(c.jsonpath(&["sts", "db"], status), "3 3 1 2 3");
    // Partition 0 finishes it; the update revision becomes current.
    c.ok(&[
        "patch",
        "sts/db",
        "--type=merge",
        "-p",
        r#"{"spec":{"updateStrategy":{"rollingUpdate":{"partition":0}}}}"#,
    ]);
    c.ok(&["rollout", "status", "sts/db", "--timeout=60s"]);
    assert_eq!(
        words(&images()),
        [
            "db-0=busybox:1.36",
            "db-1=busybox:1.36",
            "db-2=busybox:1.36"
        ]
    );
    assert_eq!(
        c.jsonpath(&["sts", "db"], "{.status.currentRevision}"),
        c.jsonpath(&["sts", "db"], "{.status.updateRevision}")
    );
    // Undo goes back to the first template.
    c.ok(&["rollout", "undo", "sts/db"]);
    c.wait_for("the old image back", TIMEOUT, || {
        words(&images()) == ["db-0=busybox", "db-1=busybox", "db-2=busybox"]
    });
    c.ok(&["rollout", "status", "sts/db", "--timeout=60s"]);

    // Scale down: from the highest ordinal; the claims stay.
    c.ok(&["scale", "sts/db", "--replicas=1"]);
    c.wait_for("one pod left", TIMEOUT, || {
        c.jsonpath(&["pods", "-l", "app=db"], "{.items[*].metadata.name}") == "db-0"
    });
    let claims = c.jsonpath(&["pvc"], "{range .items[*]}{.metadata.name} {end}");
    assert_eq!(words(&claims), ["data-db-0", "data-db-1", "data-db-2"]);
    let deleted = c.ok(&[
        "get",
        "events",
        "--field-selector=involvedObject.name=db,reason=SuccessfulDelete",
        "--sort-by=.metadata.creationTimestamp",
        "-o",
        "jsonpath={range .items[*]}{.message}|{end}",
    ]);
    let tail: Vec<&str> = deleted.split('|').filter(|m| !m.is_empty()).collect();
    assert_eq!(
        &tail[tail.len() - 2..],
        [
            "delete Pod db-2 in StatefulSet db successful",
            "delete Pod db-1 in StatefulSet db successful"
        ],
        "{deleted}"
    );
}

#[test]
fn cronjob_runs_on_schedule_and_by_hand() {
    let c = Cluster::start(1);
    c.apply(
        "apiVersion: batch/v1
kind: CronJob
metadata: {name: tick}
spec:
  schedule: '* * * * *'
  successfulJobsHistoryLimit: 1
  jobTemplate:
    spec:
      template:
        spec:
          restartPolicy: Never
          containers: [{name: c, image: busybox, command: [sh, -c, 'exit 0']}]
",
    );
    // By hand: kubectl builds the Job from the template; the Job controller runs it.
    c.ok(&["create", "job", "--from=cronjob/tick", "tick-manual"]);
    c.ok(&[
        "wait",
        "--for=condition=complete",
        "job/tick-manual",
        "--timeout=60s",
    ]);
    assert_eq!(
        c.jsonpath(
            &["job", "tick-manual"],
            "{.metadata.ownerReferences[0].name}"
        ),
        "tick"
    );

    // On schedule: within a minute, a Job named after the scheduled minute.
    let scheduled = |c: &Cluster| {
        c.jsonpath(&["jobs"], "{range .items[*]}{.metadata.name} {end}")
            .split_whitespace()
            .filter(|n| {
                n.strip_prefix("tick-")
                    .is_some_and(|m| m.parse::<i64>().is_ok())
            })
            .map(str::to_owned)
            .collect::<Vec<_>>()
    };
    c.wait_for("a scheduled job", Duration::from_secs(75), || {
        !scheduled(&c).is_empty()
    });
    let name = scheduled(&c)[0].clone();
    let minutes: i64 = name.strip_prefix("tick-").unwrap().parse().unwrap();
    let last = c.jsonpath(&["cronjob", "tick"], "{.status.lastScheduleTime}");
    let last: jiff::Timestamp = last.parse().unwrap();
    assert_eq!(
        last.as_second(),
        minutes * 60,
        "{name} is named after {last}"
    );
    assert_eq!(
        c.jsonpath(
            &["job", &name],
            "{.metadata.annotations.batch\\.kubernetes\\.io/cronjob-scheduled-timestamp}"
        ),
        last.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
    );
    c.ok(&[
        "wait",
        "--for=condition=complete",
        &format!("job/{name}"),
        "--timeout=60s",
    ]);
    c.wait_for("lastSuccessfulTime", TIMEOUT, || {
        !c.jsonpath(&["cronjob", "tick"], "{.status.lastSuccessfulTime}")
            .is_empty()
    });
    let row = c.ok(&["get", "cronjob", "tick", "--no-headers"]);
    assert!(row.contains("* * * * *"), "{row}");
}

#[test]
fn daemonset_max_surge_starts_each_replacement_before_removing_the_old_pod() {
    let c = Cluster::start(3);
    c.apply(
        "apiVersion: apps/v1
kind: DaemonSet
metadata: {name: surge}
spec:
  selector: {matchLabels: {app: surge}}
  minReadySeconds: 2
  updateStrategy:
    type: RollingUpdate
    rollingUpdate: {maxSurge: 1, maxUnavailable: 0}
  template:
    metadata: {labels: {app: surge}}
    spec:
      containers: [{name: c, image: busybox}]
",
    );
    c.ok(&["rollout", "status", "ds/surge", "--timeout=60s"]);
    // Both bounds zero is refused, as Kubernetes does.
    let out = c.kubectl(&[
        "patch",
        "ds",
        "surge",
        "-p",
        r#"{"spec":{"updateStrategy":{"rollingUpdate":{"maxSurge":0}}}}"#,
    ]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("may not be 0 when `maxSurge` is 0"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    c.ok(&["set", "image", "ds/surge", "c=busybox:1.36"]);
    // Sample the pods until every node runs the new image alone: at most one node at a
    // time holds two pods, and no node is ever without an available pod.
    let deadline = std::time::Instant::now() + TIMEOUT;
    let mut most_on_a_node = 0;
    let mut most_pods = 0;
    let mut least_available = i64::MAX;
    loop {
        let rows = c.jsonpath(
            &["pods", "-l", "app=surge"],
            "{range .items[*]}{.spec.nodeName}={.spec.containers[0].image}={.metadata.deletionTimestamp} {end}",
        );
        let live: Vec<&str> = rows
            .split_whitespace()
            .filter(|r| r.ends_with('='))
            .collect();
        let mut per_node = std::collections::BTreeMap::new();
        for r in &live {
            *per_node.entry(r.split('=').next().unwrap()).or_insert(0) += 1;
        }
        most_on_a_node = most_on_a_node.max(per_node.values().copied().max().unwrap_or(0));
        most_pods = most_pods.max(live.len());
        if let Ok(n) = c
            .jsonpath(&["ds", "surge"], "{.status.numberAvailable}")
            .parse()
        {
            least_available = least_available.min(n);
        }
        if live.len() == 3 && live.iter().all(|r| r.contains("busybox:1.36")) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "rollout stuck: {rows}"
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    assert_eq!(
        most_on_a_node, 2,
        "no node ever ran its replacement beside the old pod"
    );
    assert!(
        most_pods <= 4,
        "more than maxSurge extra pods at once: {most_pods}"
    );
    assert_eq!(
        least_available, 3,
        "a node was left without an available pod"
    );
    c.ok(&["rollout", "status", "ds/surge", "--timeout=60s"]);
}
