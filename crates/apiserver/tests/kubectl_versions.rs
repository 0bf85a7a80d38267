//! Built-in kinds served in several versions but stored once, through the real kubectl:
//! HorizontalPodAutoscalers in autoscaling/v1 and v2, Events in core/v1 and events.k8s.io/v1.
//! Whatever version writes an object, every version reads it.

use crate::common;

use std::path::Path;

use common::{kubectls, ok, TestServer};
use serde_json::Value;

/// The autoscaling versions, spelled out: kubectl 1.33 expands a short name (`hpa.v1.autoscaling`)
/// to group and resource only, dropping the version (client-go's shortcut expander).
const V1: &str = "horizontalpodautoscalers.v1.autoscaling";
const V2: &str = "horizontalpodautoscalers.v2.autoscaling";

fn json(out: String) -> Value {
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"))
}

fn autoscalers_in_both_versions(kubectl: &Path) {
    let s = TestServer::start();
    let k = |args: &[&str]| s.kubectl(kubectl, args);
    let v = kubectl.display().to_string();
    ok(
        k(&["create", "deployment", "x", "--image=busybox"]),
        "create deployment",
    );

    // kubectl autoscale writes through autoscaling/v2 when served (older ones through v1).
    ok(
        k(&[
            "autoscale",
            "deployment",
            "x",
            "--cpu-percent=60",
            "--min=1",
            "--max=5",
        ]),
        "autoscale",
    );
    let v1 = ok(k(&["get", V1, "x", "-o", "yaml"]), "get v1");
    assert!(v1.contains("apiVersion: autoscaling/v1"), "{v}: {v1}");
    assert!(
        v1.contains("targetCPUUtilizationPercentage: 60"),
        "{v}: {v1}"
    );
    let v2 = json(ok(k(&["get", V2, "x", "-o", "json"]), "get v2"));
    assert_eq!(v2["apiVersion"], "autoscaling/v2", "{v}");
    assert_eq!(
        v2["spec"]["metrics"],
        serde_json::json!([{"type": "Resource", "resource": {"name": "cpu",
            "target": {"type": "Utilization", "averageUtilization": 60}}}]),
        "{v}"
    );
    let table = ok(k(&["get", "hpa"]), "get hpa");
    assert!(
        table.contains("Deployment/x") && table.contains("/60%"),
        "{v}: {table}"
    );

    // Written through v1 (defaults: minReplicas 1), read through v2.
    let manifest = s.write(
        "hpa-v1.yaml",
        "apiVersion: autoscaling/v1\nkind: HorizontalPodAutoscaler\nmetadata: {name: old}\nspec:\n  scaleTargetRef: {apiVersion: apps/v1, kind: Deployment, name: x}\n  maxReplicas: 4\n  targetCPUUtilizationPercentage: 70\n",
    );
    ok(
        k(&["apply", "-f", manifest.to_str().unwrap()]),
        "apply v1 hpa",
    );
    let old = json(ok(
        k(&["get", V2, "old", "-o", "json"]),
        "get old through v2",
    ));
    assert_eq!(old["spec"]["minReplicas"], 1, "{v}: {old}");
    assert_eq!(
        old["spec"]["metrics"][0]["resource"]["target"]["averageUtilization"], 70,
        "{v}: {old}"
    );
    let both = ok(k(&["get", V1, "-o", "name"]), "list through v1");
    assert!(
        both.contains("/x\n") && both.contains("/old\n"),
        "{v}: {both}"
    );

    // A v2 metric v1 cannot express survives a read-modify-write through v1.
    let manifest = s.write(
        "hpa-v2.yaml",
        "apiVersion: autoscaling/v2\nkind: HorizontalPodAutoscaler\nmetadata: {name: rich}\nspec:\n  scaleTargetRef: {apiVersion: apps/v1, kind: Deployment, name: x}\n  maxReplicas: 6\n  metrics:\n  - type: Pods\n    pods:\n      metric: {name: rps}\n      target: {type: AverageValue, averageValue: \"10\"}\n  behavior:\n    scaleDown:\n      stabilizationWindowSeconds: 120\n",
    );
    ok(
        k(&["create", "-f", manifest.to_str().unwrap()]),
        "create v2 hpa",
    );
    let through_v1 = ok(k(&["get", V1, "rich", "-o", "json"]), "get rich through v1");
    let mut through_v1 = json(through_v1);
    let annotations = &through_v1["metadata"]["annotations"];
    assert!(
        annotations["autoscaling.alpha.kubernetes.io/metrics"]
            .as_str()
            .is_some_and(|m| m.contains("\"metricName\":\"rps\"")),
        "{v}: {through_v1}"
    );
    assert!(
        annotations["autoscaling.alpha.kubernetes.io/behavior"]
            .as_str()
            .is_some_and(|b| b.contains("\"StabilizationWindowSeconds\":120")),
        "{v}: {through_v1}"
    );
    through_v1["spec"]["maxReplicas"] = 8.into();
    ok(
        s.kubectl_stdin(
            kubectl,
            &["replace", "-f", "-"],
            Some(&through_v1.to_string()),
        ),
        "replace through v1",
    );
    let rich = json(ok(
        k(&["get", V2, "rich", "-o", "json"]),
        "get rich through v2",
    ));
    assert_eq!(rich["spec"]["maxReplicas"], 8, "{v}: {rich}");
    assert_eq!(
        rich["spec"]["metrics"][0]["pods"]["metric"]["name"], "rps",
        "{v}: {rich}"
    );
    assert_eq!(
        rich["spec"]["behavior"]["scaleDown"]["stabilizationWindowSeconds"], 120,
        "{v}: {rich}"
    );
    assert!(
        rich["metadata"].get("annotations").is_none(),
        "{v}: round-trip annotations reached the store: {rich}"
    );
}

fn events_in_both_apis(kubectl: &Path) {
    let s = TestServer::start();
    let k = |args: &[&str]| s.kubectl(kubectl, args);
    let v = kubectl.display().to_string();
    ok(k(&["run", "p", "--image=busybox"]), "run pod");
    let uid = ok(
        k(&["get", "pod", "p", "-o", "jsonpath={.metadata.uid}"]),
        "pod uid",
    );

    // Written through events.k8s.io/v1: every reader of core events sees it.
    let manifest = s.write(
        "event-v1.yaml",
        &format!(
            "apiVersion: events.k8s.io/v1\nkind: Event\nmetadata: {{name: p.new}}\neventTime: 2024-01-01T00:00:00.000000Z\nreportingController: skiff.dev/tester\nreportingInstance: tester-1\naction: Testing\nreason: Tested\ntype: Warning\nregarding: {{apiVersion: v1, kind: Pod, name: p, namespace: default, uid: {uid}}}\nnote: hello from events v1\n"
        ),
    );
    ok(
        k(&["create", "-f", manifest.to_str().unwrap()]),
        "create events.k8s.io event",
    );
    let listed = ok(k(&["get", "events"]), "get events");
    assert!(
        listed.contains("hello from events v1") && listed.contains("pod/p"),
        "{v}: {listed}"
    );
    let core = json(ok(
        k(&["get", "events", "p.new", "-o", "json"]),
        "get core event",
    ));
    assert_eq!(core["message"], "hello from events v1", "{v}: {core}");
    assert_eq!(core["involvedObject"]["uid"], uid.as_str(), "{v}: {core}");
    assert_eq!(
        core["reportingComponent"], "skiff.dev/tester",
        "{v}: {core}"
    );
    let selected = ok(
        k(&["get", "events", "--field-selector", "involvedObject.name=p"]),
        "field selector",
    );
    assert!(selected.contains("hello from events v1"), "{v}: {selected}");
    let described = ok(k(&["describe", "pod", "p"]), "describe pod");
    assert!(
        described.contains("hello from events v1") && described.contains("Tested"),
        "{v}: {described}"
    );
    let events = ok(k(&["events"]), "kubectl events");
    assert!(events.contains("hello from events v1"), "{v}: {events}");
    let events = ok(k(&["events", "--for", "pod/p"]), "kubectl events --for");
    assert!(events.contains("hello from events v1"), "{v}: {events}");

    // Written as a core event, read through events.k8s.io/v1.
    let manifest = s.write(
        "event-core.yaml",
        "apiVersion: v1\nkind: Event\nmetadata: {name: p.old}\ninvolvedObject: {apiVersion: v1, kind: Pod, name: p, namespace: default}\nreason: Pulled\nmessage: pulled the old way\ntype: Normal\nsource: {component: kubelet, host: node-1}\ncount: 2\nfirstTimestamp: \"2024-01-01T00:00:00Z\"\nlastTimestamp: \"2024-01-01T00:05:00Z\"\n",
    );
    ok(
        k(&["create", "-f", manifest.to_str().unwrap()]),
        "create core event",
    );
    let newer = ok(
        k(&["get", "events.v1.events.k8s.io", "p.old", "-o", "yaml"]),
        "get through events.k8s.io",
    );
    for wanted in [
        "apiVersion: events.k8s.io/v1",
        "note: pulled the old way",
        "deprecatedCount: 2",
        "deprecatedSource:",
        "component: kubelet",
        "deprecatedLastTimestamp: \"2024-01-01T00:05:00Z\"",
        "regarding:",
    ] {
        assert!(newer.contains(wanted), "{v}: {wanted}: {newer}");
    }
    let selected = ok(
        k(&[
            "get",
            "events.v1.events.k8s.io",
            "--field-selector",
            "regarding.name=p,reason=Pulled",
            "-o",
            "name",
        ]),
        "regarding field selector",
    );
    assert_eq!(selected.trim(), "event.events.k8s.io/p.old", "{v}");
}

#[test]
fn kubectl_autoscalers_written_in_one_version_read_in_the_other() {
    for kubectl in kubectls() {
        autoscalers_in_both_versions(&kubectl);
    }
}

#[test]
fn kubectl_events_written_in_one_api_read_in_the_other() {
    for kubectl in kubectls() {
        events_in_both_apis(&kubectl);
    }
}
