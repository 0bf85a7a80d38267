//! The official Python client (`pip install kubernetes`) against a real skiff API server.

mod common;

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
