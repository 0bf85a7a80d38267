//! API-machinery and apps conformance behaviours (test/e2e/apimachinery/chunking.go,
//! apps/job.go, apps/cronjob.go) that the API server alone decides, driven as the e2e tests
//! do through the official Python client.

use crate::common;

use common::{run_python, TestServer};

const SCRIPT: &str = r#"
import sys
from kubernetes import client, config

config.load_kube_config(config_file=sys.argv[1])
core = client.CoreV1Api()
batch = client.BatchV1Api()
core.create_namespace({"metadata": {"name": "chunks"}})
core.create_namespace({"metadata": {"name": "other"}})

# chunking.go: pages of at most `limit`, each with remainingItemCount, all at the
# first page's resourceVersion; the unlimited list returns everything.
template = {"metadata": {"labels": {"a": "b"}}, "spec": {"containers": [{"name": "c", "image": "pause"}]}}
for i in range(23):
    core.create_namespaced_pod_template("chunks", {"metadata": {"name": f"template-{i:04d}"}, "template": template})
core.create_namespaced_pod_template("other", {"metadata": {"name": "elsewhere"}, "template": template})
page = core.list_namespaced_pod_template("chunks", limit=5)
rv, seen = page.metadata.resource_version, []
while True:
    assert len(page.items) <= 5, len(page.items)
    seen += [t.metadata.name for t in page.items]
    if not page.metadata._continue:
        assert not page.metadata.remaining_item_count, page.metadata
        break
    assert page.metadata.remaining_item_count == 23 - len(seen), (len(seen), page.metadata)
    page = core.list_namespaced_pod_template("chunks", limit=5, _continue=page.metadata._continue)
    assert page.metadata.resource_version == rv, (rv, page.metadata.resource_version)
assert seen == [f"template-{i:04d}" for i in range(23)], seen
assert len(core.list_namespaced_pod_template("chunks").items) == 23
# A selector leaves the count out, as Kubernetes does.
page = core.list_namespaced_pod_template("chunks", limit=5, label_selector="x!=y")
assert page.metadata._continue and page.metadata.remaining_item_count is None, page.metadata

# job.go "should apply changes to a job status": a status patch also writes annotations;
# the spec stays.
job = {"metadata": {"name": "j"}, "spec": {"suspend": True, "template": {"spec": {
    "restartPolicy": "Never", "containers": [{"name": "c", "image": "busybox"}]}}}}
batch.create_namespaced_job("default", job)
patched = batch.patch_namespaced_job_status("j", "default", {
    "metadata": {"annotations": {"patchedstatus": "true"}},
    "spec": {"parallelism": 7},
    "status": {"startTime": "2024-01-02T03:04:05Z"}})
assert patched.metadata.annotations.get("patchedstatus") == "true", patched.metadata
assert patched.status.start_time.year == 2024, patched.status
assert patched.spec.parallelism == 1, patched.spec
got = batch.read_namespaced_job_status("j", "default")
got.metadata.annotations["updatedstatus"] = "true"
updated = batch.replace_namespaced_job_status("j", "default", got)
assert updated.metadata.annotations.get("updatedstatus") == "true", updated.metadata

print("python conformance ok")
"#;

#[test]
fn python_client_chunked_lists_and_job_status_metadata() {
    let server = TestServer::start();
    let stdout = run_python(
        &server,
        "conformance.py",
        SCRIPT,
        "python conformance script",
    );
    assert!(stdout.contains("python conformance ok"), "{stdout}");
}
