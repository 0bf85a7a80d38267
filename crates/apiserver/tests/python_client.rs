//! The official Python client (`pip install kubernetes`) against a real skiff API server.

use crate::common;

use std::process::Command;

use common::{ok, TestServer};

const SCRIPT: &str = r#"
import sys, threading
from kubernetes import client, config, watch
from kubernetes.client.rest import ApiException

config.load_kube_config(config_file=sys.argv[1])
v1 = client.CoreV1Api()

# CRUD of a ConfigMap.
cm = client.V1ConfigMap(metadata=client.V1ObjectMeta(name="py", labels={"src": "py"}), data={"a": "1"})
created = v1.create_namespaced_config_map("default", cm)
assert created.metadata.uid and created.metadata.resource_version
got = v1.read_namespaced_config_map("py", "default")
assert got.data == {"a": "1"}, got.data
got.data["b"] = "2"
replaced = v1.replace_namespaced_config_map("py", "default", got)
assert int(replaced.metadata.resource_version) > int(created.metadata.resource_version)
patched = v1.patch_namespaced_config_map("py", "default", {"data": {"c": "3"}})
assert patched.data == {"a": "1", "b": "2", "c": "3"}, patched.data
try:
    got.data["d"] = "4"
    v1.replace_namespaced_config_map("py", "default", got)  # stale resourceVersion
    raise SystemExit("stale replace succeeded")
except ApiException as e:
    assert e.status == 409, e.status

# list, then watch resuming from the list's resourceVersion.
listed = v1.list_namespaced_config_map("default", label_selector="src=py")
assert [i.metadata.name for i in listed.items] == ["py"]
rv = listed.metadata.resource_version
v1.create_namespaced_config_map("default", client.V1ConfigMap(metadata=client.V1ObjectMeta(name="py2", labels={"src": "py"})))
v1.delete_namespaced_config_map("py", "default")
seen = []
w = watch.Watch()
for event in w.stream(v1.list_namespaced_config_map, "default", label_selector="src=py",
                      resource_version=rv, timeout_seconds=5):
    seen.append((event["type"], event["object"].metadata.name, event["object"].metadata.resource_version))
    if len(seen) == 2:
        w.stop()
assert [(t, n) for t, n, _ in seen] == [("ADDED", "py2"), ("DELETED", "py")], seen

# Resume after the first event: only the second comes back.
seen2 = []
for event in w.stream(v1.list_namespaced_config_map, "default", label_selector="src=py",
                      resource_version=seen[0][2], timeout_seconds=5):
    seen2.append((event["type"], event["object"].metadata.name))
    w.stop()
assert seen2 == [("DELETED", "py")], seen2

try:
    v1.read_namespaced_config_map("py", "default")
    raise SystemExit("deleted configmap still readable")
except ApiException as e:
    assert e.status == 404, e.status
print("python client ok")
"#;

const TYPED_SCRIPT: &str = r#"
import sys
from kubernetes import client, config
from kubernetes.client.rest import ApiException

config.load_kube_config(config_file=sys.argv[1])
apps = client.AppsV1Api()
dep = client.V1Deployment(
    metadata=client.V1ObjectMeta(name="py"),
    spec=client.V1DeploymentSpec(
        replicas=1,
        selector=client.V1LabelSelector(match_labels={"app": "py"}),
        template=client.V1PodTemplateSpec(
            metadata=client.V1ObjectMeta(labels={"app": "py"}),
            spec=client.V1PodSpec(containers=[client.V1Container(name="c", image="busybox")]))))
apps.create_namespaced_deployment("default", dep)

# The scale subresource.
scale = apps.read_namespaced_deployment_scale("py", "default")
assert scale.spec.replicas == 1 and scale.status.selector == "app=py", scale
apps.patch_namespaced_deployment_scale("py", "default", {"spec": {"replicas": 4}})
assert apps.read_namespaced_deployment("py", "default").spec.replicas == 4

# Other groups: batch, autoscaling/v2, networking, policy, scheduling, storage.
client.BatchV1Api().create_namespaced_job("default", client.V1Job(
    metadata=client.V1ObjectMeta(name="j"),
    spec=client.V1JobSpec(template=client.V1PodTemplateSpec(spec=client.V1PodSpec(
        restart_policy="Never", containers=[client.V1Container(name="c", image="busybox")])))))
job = client.BatchV1Api().read_namespaced_job("j", "default")
assert job.spec.backoff_limit == 6 and job.spec.completions == 1, job.spec
assert job.spec.selector.match_labels["batch.kubernetes.io/controller-uid"] == job.metadata.uid
hpa = client.AutoscalingV2Api().create_namespaced_horizontal_pod_autoscaler("default", client.V2HorizontalPodAutoscaler(
    metadata=client.V1ObjectMeta(name="h"),
    spec=client.V2HorizontalPodAutoscalerSpec(max_replicas=3, scale_target_ref=client.V2CrossVersionObjectReference(kind="Deployment", name="py", api_version="apps/v1"))))
assert hpa.spec.min_replicas == 1 and hpa.spec.metrics[0].resource.name == "cpu"
names = [p.metadata.name for p in client.SchedulingV1Api().list_priority_class().items]
assert "system-node-critical" in names and "system-cluster-critical" in names, names
client.StorageV1Api().create_storage_class(client.V1StorageClass(metadata=client.V1ObjectMeta(name="s"), provisioner="x"))
assert client.StorageV1Api().read_storage_class("s").reclaim_policy == "Delete"
try:
    client.PolicyV1Api().create_namespaced_pod_disruption_budget("default", client.V1PodDisruptionBudget(
        metadata=client.V1ObjectMeta(name="p"),
        spec=client.V1PodDisruptionBudgetSpec(min_available=1, max_unavailable=1)))
    raise SystemExit("invalid PDB accepted")
except ApiException as e:
    assert e.status == 422, e.status

# RBAC and reviews.
rbac = client.RbacAuthorizationV1Api()
names = [r.metadata.name for r in rbac.list_cluster_role().items]
assert {"cluster-admin", "admin", "edit", "view"} <= set(names), names
review = client.AuthorizationV1Api().create_self_subject_access_review(client.V1SelfSubjectAccessReview(
    spec=client.V1SelfSubjectAccessReviewSpec(resource_attributes=client.V1ResourceAttributes(
        verb="delete", resource="nodes"))))
assert review.status.allowed, review.status
sar = client.AuthorizationV1Api().create_subject_access_review(client.V1SubjectAccessReview(
    spec=client.V1SubjectAccessReviewSpec(user="nobody", resource_attributes=client.V1ResourceAttributes(
        verb="get", resource="pods", namespace="default"))))
assert not sar.status.allowed, sar.status

# TokenRequest.
core = client.CoreV1Api()
core.create_namespaced_service_account("default", client.V1ServiceAccount(metadata=client.V1ObjectMeta(name="bot")))
tr = core.create_namespaced_service_account_token("bot", "default", client.AuthenticationV1TokenRequest(
    spec=client.V1TokenRequestSpec(audiences=["api"], expiration_seconds=900)))
assert tr.status.token.count(".") == 2 and tr.status.expiration_timestamp, tr.status
print("python typed ok")
"#;

const VERSIONS_SCRIPT: &str = r#"
import sys, datetime
from kubernetes import client, config, watch

config.load_kube_config(config_file=sys.argv[1])
v1 = client.AutoscalingV1Api()
v2 = client.AutoscalingV2Api()
ref = dict(api_version="apps/v1", kind="Deployment", name="web")

# One autoscaler, whichever version writes or reads it.
v1.create_namespaced_horizontal_pod_autoscaler("default", client.V1HorizontalPodAutoscaler(
    metadata=client.V1ObjectMeta(name="one"),
    spec=client.V1HorizontalPodAutoscalerSpec(max_replicas=4, target_cpu_utilization_percentage=65,
        scale_target_ref=client.V1CrossVersionObjectReference(**ref))))
got = v2.read_namespaced_horizontal_pod_autoscaler("one", "default")
assert got.spec.min_replicas == 1, got.spec
assert got.spec.metrics[0].resource.target.average_utilization == 65, got.spec
v2.create_namespaced_horizontal_pod_autoscaler("default", client.V2HorizontalPodAutoscaler(
    metadata=client.V1ObjectMeta(name="two"),
    spec=client.V2HorizontalPodAutoscalerSpec(max_replicas=3,
        scale_target_ref=client.V2CrossVersionObjectReference(**ref),
        metrics=[client.V2MetricSpec(type="Resource", resource=client.V2ResourceMetricSource(
            name="cpu", target=client.V2MetricTarget(type="Utilization", average_utilization=55)))])))
listed = {h.metadata.name: h for h in v1.list_namespaced_horizontal_pod_autoscaler("default").items}
assert listed["one"].spec.target_cpu_utilization_percentage == 65, listed
assert listed["two"].spec.target_cpu_utilization_percentage == 55, listed

# Status written through v1 reads as v2's current metrics.
one = v1.read_namespaced_horizontal_pod_autoscaler("one", "default")
one.status.current_replicas = 2
one.status.desired_replicas = 3
one.status.current_cpu_utilization_percentage = 40
v1.replace_namespaced_horizontal_pod_autoscaler_status("one", "default", one)
status = v2.read_namespaced_horizontal_pod_autoscaler("one", "default").status
assert status.desired_replicas == 3, status
assert status.current_metrics[0].resource.current.average_utilization == 40, status

# A core event, watched through events.k8s.io/v1 with a field selector of that API.
events = client.EventsV1Api()
rv = events.list_namespaced_event("default").metadata.resource_version
client.CoreV1Api().create_namespaced_event("default", client.CoreV1Event(
    metadata=client.V1ObjectMeta(name="web.1"),
    involved_object=client.V1ObjectReference(kind="Pod", name="web", namespace="default"),
    event_time=datetime.datetime.now(datetime.timezone.utc),
    reporting_component="py", reporting_instance="py-1", action="Test",
    message="through core", reason="Tested", type="Normal"))
seen = []
w = watch.Watch()
for event in w.stream(events.list_namespaced_event, "default", field_selector="regarding.name=web",
                      resource_version=rv, timeout_seconds=5):
    seen.append((event["type"], event["object"].note, event["object"].reporting_controller))
    w.stop()
assert seen == [("ADDED", "through core", "py")], seen
print("python versions ok")
"#;

fn ensure_python_client() {
    let has = Command::new("python3")
        .args(["-c", "import kubernetes"])
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    if !has {
        let status = Command::new("python3")
            .args(["-m", "pip", "install", "--quiet", "kubernetes"])
            .status()
            .expect("pip runs");
        assert!(status.success(), "pip install kubernetes failed");
    }
}

#[test]
fn python_client_crud_list_and_watch_resume() {
    ensure_python_client();
    let server = TestServer::start();
    let script = server.write("client.py", SCRIPT);
    let out = Command::new("python3")
        .arg(&script)
        .arg(&server.kubeconfig)
        .output()
        .unwrap();
    let stdout = ok(out, "python client");
    assert!(stdout.contains("python client ok"), "{stdout}");
}

#[test]
fn python_client_typed_apis_of_every_group() {
    ensure_python_client();
    let server = TestServer::start();
    let script = server.write("typed.py", TYPED_SCRIPT);
    let out = Command::new("python3")
        .arg(&script)
        .arg(&server.kubeconfig)
        .output()
        .unwrap();
    let stdout = ok(out, "python typed client");
    assert!(stdout.contains("python typed ok"), "{stdout}");
}

#[test]
fn python_client_reads_one_object_through_every_version() {
    ensure_python_client();
    let server = TestServer::start();
    let script = server.write("versions.py", VERSIONS_SCRIPT);
    let out = Command::new("python3")
        .arg(&script)
        .arg(&server.kubeconfig)
        .output()
        .unwrap();
    let stdout = ok(out, "python versions client");
    assert!(stdout.contains("python versions ok"), "{stdout}");
}
