//! Deletion propagation at the API: `kubectl delete --cascade=foreground|orphan|background`
//! (and the deprecated `orphanDependents`) leave the garbage collector's finalizers on the
//! object, which stays until they are removed.

use crate::common;

use std::path::Path;

use common::{fails, kubectls, ok, TestServer};

const CONFIGMAPS: &str = "apiVersion: v1
kind: ConfigMap
metadata: {name: fg}
---
apiVersion: v1
kind: ConfigMap
metadata: {name: orphan}
---
apiVersion: v1
kind: ConfigMap
metadata: {name: bg}
---
apiVersion: v1
kind: ConfigMap
metadata: {name: legacy, finalizers: [example.com/hold]}
";

fn scenario(kubectl: &Path) {
    let s = TestServer::start();
    let file = s.write("configmaps.yaml", CONFIGMAPS);
    ok(
        s.kubectl(kubectl, &["create", "-f", file.to_str().unwrap()]),
        "create configmaps",
    );
    let get = |name: &str, path: &str| {
        ok(
            s.kubectl(
                kubectl,
                &["get", "configmap", name, "-o", &format!("jsonpath={path}")],
            ),
            "get configmap",
        )
    };
    let delete = |name: &str, cascade: &str| {
        ok(
            s.kubectl(
                kubectl,
                &[
                    "delete",
                    "configmap",
                    name,
                    &format!("--cascade={cascade}"),
                    "--wait=false",
                ],
            ),
            "delete",
        )
    };

    // Foreground: marked, held by foregroundDeletion until it is removed.
    delete("fg", "foreground");
    assert_eq!(get("fg", "{.metadata.finalizers[*]}"), "foregroundDeletion");
    assert!(!get("fg", "{.metadata.deletionTimestamp}").is_empty());
    ok(
        s.kubectl(
            kubectl,
            &[
                "patch",
                "configmap",
                "fg",
                "--type=json",
                "-p",
                r#"[{"op":"remove","path":"/metadata/finalizers"}]"#,
            ],
        ),
        "remove the finalizer",
    );
    let stderr = fails(s.kubectl(kubectl, &["get", "configmap", "fg"]), "get fg");
    assert!(stderr.contains(r#"configmaps "fg" not found"#), "{stderr}");

    // Orphan, then a foreground delete of the same object switches the finalizer.
    delete("orphan", "orphan");
    assert_eq!(get("orphan", "{.metadata.finalizers[*]}"), "orphan");
    delete("orphan", "foreground");
    assert_eq!(
        get("orphan", "{.metadata.finalizers[*]}"),
        "foregroundDeletion"
    );

    // Background: gone at once.
    delete("bg", "background");
    fails(s.kubectl(kubectl, &["get", "configmap", "bg"]), "get bg");

    // The deprecated orphanDependents=true adds orphan beside the object's own finalizers,
    // and may not be combined with a propagation policy.
    let stderr = fails(
        s.kubectl(
            kubectl,
            &[
                "delete",
                "--raw",
                "/api/v1/namespaces/default/configmaps/legacy?orphanDependents=true&propagationPolicy=Foreground",
            ],
        ),
        "both policies",
    );
    assert!(
        stderr.contains("orphanDependents and deletionPropagation cannot be both set"),
        "{stderr}"
    );
    ok(
        s.kubectl(
            kubectl,
            &[
                "delete",
                "--raw",
                "/api/v1/namespaces/default/configmaps/legacy?orphanDependents=true",
            ],
        ),
        "orphanDependents",
    );
    assert_eq!(
        get("legacy", "{.metadata.finalizers[*]}"),
        "example.com/hold orphan"
    );
    // A background delete drops orphan; the object's own finalizer still holds it.
    delete("legacy", "background");
    assert_eq!(
        get("legacy", "{.metadata.finalizers[*]}"),
        "example.com/hold"
    );
}

#[test]
fn kubectl_delete_cascade_sets_the_garbage_collector_finalizers() {
    for kubectl in kubectls() {
        scenario(&kubectl);
    }
}

/// A namespace's `spec.finalizers` change only through `namespaces/<name>/finalize`: an
/// update or patch of the namespace itself keeps them, as in Kubernetes.
#[test]
fn namespace_finalizers_change_only_through_finalize() {
    let s = TestServer::start();
    for kubectl in kubectls() {
        let kubectl = kubectl.as_path();
        let finalizers = || {
            ok(
                s.kubectl(
                    kubectl,
                    &["get", "ns", "held", "-o", "jsonpath={.spec.finalizers}"],
                ),
                "get finalizers",
            )
        };
        ok(s.kubectl(kubectl, &["create", "ns", "held"]), "create ns");
        assert_eq!(finalizers(), r#"["kubernetes"]"#);
        ok(
            s.kubectl(
                kubectl,
                &[
                    "patch",
                    "ns",
                    "held",
                    "--type",
                    "merge",
                    "-p",
                    r#"{"metadata":{"labels":{"team":"a"}},"spec":{"finalizers":[]}}"#,
                ],
            ),
            "patch ns",
        );
        assert_eq!(finalizers(), r#"["kubernetes"]"#);
        let labels = ok(
            s.kubectl(
                kubectl,
                &[
                    "get",
                    "ns",
                    "held",
                    "-o",
                    "jsonpath={.metadata.labels.team}",
                ],
            ),
            "get labels",
        );
        assert_eq!(labels, "a", "the rest of the patch applies");
        ok(
            s.kubectl(
                kubectl,
                &[
                    "replace",
                    "--raw",
                    "/api/v1/namespaces/held/finalize",
                    "-f",
                    s.write(
                        "finalize.json",
                        r#"{"apiVersion":"v1","kind":"Namespace","metadata":{"name":"held"},"spec":{"finalizers":[]}}"#,
                    )
                    .to_str()
                    .unwrap(),
                ],
            ),
            "finalize",
        );
        assert!(matches!(finalizers().trim(), "" | "[]"), "finalized");
        ok(s.kubectl(kubectl, &["delete", "ns", "held"]), "delete ns");
    }
}
