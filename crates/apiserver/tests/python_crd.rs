//! CustomResourceDefinitions and custom objects through the official Python client
//! (`ApiextensionsV1Api`, `CustomObjectsApi`).

use crate::common;

use common::{run_python, TestServer};

const SCRIPT: &str = r#"
import sys, time, threading
from kubernetes import client, config, watch
from kubernetes.client.rest import ApiException

config.load_kube_config(config_file=sys.argv[1])
ext = client.ApiextensionsV1Api()
custom = client.CustomObjectsApi()

crd = {
    "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
    "metadata": {"name": "gizmos.py.example.com"},
    "spec": {
        "group": "py.example.com", "scope": "Namespaced",
        "names": {"plural": "gizmos", "singular": "gizmo", "kind": "Gizmo", "shortNames": ["gz"]},
        "versions": [{
            "name": "v1", "served": True, "storage": True,
            "subresources": {"status": {}},
            "schema": {"openAPIV3Schema": {"type": "object", "properties": {
                "spec": {"type": "object", "properties": {
                    "size": {"type": "integer", "minimum": 1, "default": 2},
                    "name": {"type": "string"}}},
                "status": {"type": "object", "x-kubernetes-preserve-unknown-fields": True}}}},
        }],
    },
}
created = ext.create_custom_resource_definition(crd)
assert created.metadata.name == "gizmos.py.example.com"
for _ in range(100):
    got = ext.read_custom_resource_definition("gizmos.py.example.com")
    if any(c.type == "Established" and c.status == "True" for c in (got.status.conditions or [])):
        break
    time.sleep(0.05)
else:
    raise SystemExit("CRD never established")
assert got.status.accepted_names.kind == "Gizmo"
assert got.status.stored_versions == ["v1"]

group, version, plural = "py.example.com", "v1", "gizmos"
obj = {"apiVersion": "py.example.com/v1", "kind": "Gizmo",
       "metadata": {"name": "g1", "labels": {"app": "py"}}, "spec": {"name": "first"}}
made = custom.create_namespaced_custom_object(group, version, "default", plural, obj)
assert made["spec"] == {"name": "first", "size": 2}, made
got = custom.get_namespaced_custom_object(group, version, "default", plural, "g1")
assert got["metadata"]["uid"] == made["metadata"]["uid"]

try:
    bad = {"apiVersion": "py.example.com/v1", "kind": "Gizmo",
           "metadata": {"name": "g0"}, "spec": {"size": 0}}
    custom.create_namespaced_custom_object(group, version, "default", plural, bad)
    raise SystemExit("invalid gizmo created")
except ApiException as e:
    assert e.status == 422, e.status
    assert "spec.size" in e.body, e.body

listed = custom.list_namespaced_custom_object(group, version, "default", plural, label_selector="app=py")
assert [i["metadata"]["name"] for i in listed["items"]] == ["g1"], listed
rv = listed["metadata"]["resourceVersion"]

patched = custom.patch_namespaced_custom_object(group, version, "default", plural, "g1",
                                                {"spec": {"size": 5}})
assert patched["spec"]["size"] == 5, patched
status = custom.patch_namespaced_custom_object_status(group, version, "default", plural, "g1",
                                                      {"status": {"ready": True}})
assert status["status"] == {"ready": True}, status
assert status["spec"]["size"] == 5

seen = []
w = watch.Watch()
custom.create_namespaced_custom_object(group, version, "default", plural,
    {"apiVersion": "py.example.com/v1", "kind": "Gizmo", "metadata": {"name": "g2", "labels": {"app": "py"}}, "spec": {}})
custom.delete_namespaced_custom_object(group, version, "default", plural, "g1")
for event in w.stream(custom.list_namespaced_custom_object, group, version, "default", plural,
                      label_selector="app=py", resource_version=rv, timeout_seconds=5):
    seen.append((event["type"], event["object"]["metadata"]["name"]))
    if len(seen) == 4:
        w.stop()
assert seen == [("MODIFIED", "g1"), ("MODIFIED", "g1"), ("ADDED", "g2"), ("DELETED", "g1")], seen

ext.delete_custom_resource_definition("gizmos.py.example.com")
for _ in range(100):
    try:
        ext.read_custom_resource_definition("gizmos.py.example.com")
        time.sleep(0.05)
    except ApiException as e:
        assert e.status == 404
        break
else:
    raise SystemExit("CRD never deleted")
try:
    custom.list_namespaced_custom_object(group, version, "default", plural)
    raise SystemExit("deleted CRD still served")
except ApiException as e:
    assert e.status == 404, e.status
print("python crd ok")
"#;

#[test]
fn python_client_custom_objects() {
    let server = TestServer::start();
    let stdout = run_python(&server, "crd.py", SCRIPT, "python CRD client");
    assert!(stdout.contains("python crd ok"), "{stdout}");
}
