//! CertificateSigningRequests as the Kubernetes documentation's "issue a certificate for a
//! user" walk-through does it, with openssl and the real kubectl (oldest and newest): create
//! the request, `kubectl certificate approve`, take the issued certificate into a
//! kubeconfig, and be that user; plus denial, the signer's refusal, the system:masters
//! restriction and invalid requests.

use crate::common;

use std::path::Path;
use std::process::Command;

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use common::{as_user, eventually, fails, kubectls, ok, TestServer};

/// A new RSA key and a CSR for `subject` (openssl's `/CN=.../O=...` form), as PEM files
/// under the server's root; returns (key path, CSR PEM).
fn openssl_request(s: &TestServer, name: &str, subject: &str) -> (std::path::PathBuf, String) {
    let key = s.root.path().join(format!("{name}.key"));
    let csr = s.root.path().join(format!("{name}.csr"));
    let run = |args: &[&str]| {
        let out = Command::new("openssl").args(args).output().unwrap();
        assert!(out.status.success(), "openssl {args:?}: {out:?}");
    };
    run(&["genrsa", "-out", key.to_str().unwrap(), "2048"]);
    run(&[
        "req",
        "-new",
        "-key",
        key.to_str().unwrap(),
        "-subj",
        subject,
        "-out",
        csr.to_str().unwrap(),
    ]);
    (key, std::fs::read_to_string(csr).unwrap())
}

fn csr_manifest(name: &str, pem: &str, signer: &str, usages: &str) -> String {
    format!(
        "apiVersion: certificates.k8s.io/v1\nkind: CertificateSigningRequest\nmetadata:\n  name: {name}\nspec:\n  request: {}\n  signerName: {signer}\n  expirationSeconds: 86400\n  usages: {usages}\n",
        BASE64.encode(pem)
    )
}

fn certificates(kubectl: &Path) {
    let s = TestServer::start();
    let k = |args: &[&str]| s.kubectl(kubectl, args);
    let v = kubectl.display().to_string();

    // The user's request, created by the admin.
    let (key, pem) = openssl_request(&s, "jane", "/CN=jane/O=dev");
    let manifest = s.write(
        "jane-csr.yaml",
        &csr_manifest(
            "jane",
            &pem,
            "kubernetes.io/kube-apiserver-client",
            "[client auth]",
        ),
    );
    ok(
        k(&["create", "-f", manifest.to_str().unwrap()]),
        "create csr",
    );
    let listed = ok(k(&["get", "csr"]), "get csr");
    assert!(
        listed.contains("SIGNERNAME")
            && listed.contains("REQUESTOR")
            && listed.contains("CONDITION"),
        "{v}: {listed}"
    );
    let row = listed.lines().find(|l| l.starts_with("jane ")).unwrap();
    assert!(
        row.contains("kubernetes.io/kube-apiserver-client"),
        "{v}: {row}"
    );
    assert!(
        row.contains("skiff-admin"),
        "{v}: the requestor is who created it: {row}"
    );
    assert!(
        row.contains("24h") && row.ends_with("Pending"),
        "{v}: {row}"
    );
    // Nothing is issued before approval.
    assert_eq!(
        ok(
            k(&["get", "csr", "jane", "-o", "jsonpath={.status.certificate}"]),
            "cert"
        ),
        ""
    );

    ok(k(&["certificate", "approve", "jane"]), "approve");
    eventually("the certificate to be issued", || {
        !ok(
            k(&["get", "csr", "jane", "-o", "jsonpath={.status.certificate}"]),
            "cert",
        )
        .is_empty()
    });
    let row = ok(k(&["get", "csr", "jane", "--no-headers"]), "get csr jane");
    assert!(row.trim_end().ends_with("Approved,Issued"), "{v}: {row}");
    let reason = ok(
        k(&[
            "get",
            "csr",
            "jane",
            "-o",
            "jsonpath={.status.conditions[0].reason}",
        ]),
        "reason",
    );
    assert_eq!(reason, "KubectlApprove", "{v}");

    // The certificate works as jane's identity: RBAC denies her, then allows her.
    let cert = BASE64
        .decode(ok(
            k(&["get", "csr", "jane", "-o", "jsonpath={.status.certificate}"]),
            "cert",
        ))
        .unwrap();
    let jane = s.user_kubeconfig(
        "jane",
        &format!(
            "    client-certificate-data: {}\n    client-key-data: {}\n",
            BASE64.encode(&cert),
            BASE64.encode(std::fs::read(&key).unwrap())
        ),
    );
    let denied = fails(as_user(kubectl, &jane, &["get", "pods"]), "jane lists pods");
    assert!(
        denied.contains(r#"User "jane" cannot list resource "pods""#),
        "{v}: {denied}"
    );
    ok(
        k(&[
            "create",
            "rolebinding",
            "jane-view",
            "--clusterrole=view",
            "--group=dev",
        ]),
        "bind dev",
    );
    eventually("jane (group dev) to list pods", || {
        as_user(kubectl, &jane, &["get", "pods"]).status.success()
    });
    // Jane may not approve requests herself.
    let (_, other_pem) = openssl_request(&s, "other", "/CN=other");
    let other = s.write(
        "other.yaml",
        &csr_manifest(
            "other",
            &other_pem,
            "kubernetes.io/kube-apiserver-client",
            "[client auth]",
        ),
    );
    ok(
        k(&["create", "-f", other.to_str().unwrap()]),
        "create other",
    );
    fails(
        as_user(kubectl, &jane, &["certificate", "approve", "other"]),
        "jane approves",
    );

    // With update on the approval subresource but no `approve` on the signer, the
    // CertificateApproval admission plugin still refuses her; with it, she may.
    let approver = s.write(
        "approver.yaml",
        "apiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRole\nmetadata:\n  name: csr-approver\nrules:\n- apiGroups: [certificates.k8s.io]\n  resources: [certificatesigningrequests]\n  verbs: [get, list]\n- apiGroups: [certificates.k8s.io]\n  resources: [certificatesigningrequests/approval]\n  verbs: [update]\n",
    );
    ok(
        k(&["create", "-f", approver.to_str().unwrap()]),
        "approver role",
    );
    ok(
        k(&[
            "create",
            "clusterrolebinding",
            "jane-approver",
            "--clusterrole=csr-approver",
            "--user=jane",
        ]),
        "bind approver",
    );
    let (_, third_pem) = openssl_request(&s, "third", "/CN=third");
    let third = s.write(
        "third.yaml",
        &csr_manifest(
            "third",
            &third_pem,
            "kubernetes.io/kube-apiserver-client",
            "[client auth]",
        ),
    );
    ok(
        k(&["create", "-f", third.to_str().unwrap()]),
        "create third",
    );
    let mut refused = String::new();
    eventually("jane's approval to reach admission", || {
        let out = as_user(kubectl, &jane, &["certificate", "approve", "third"]);
        refused = String::from_utf8_lossy(&out.stderr).into_owned();
        refused.contains("user not permitted to approve requests with signerName")
    });
    assert!(
        refused.contains(r#"user not permitted to approve requests with signerName \"kubernetes.io/kube-apiserver-client\""#)
            || refused.contains(r#"signerName "kubernetes.io/kube-apiserver-client""#),
        "{v}: {refused}"
    );
    ok(
        k(&[
            "patch",
            "clusterrole",
            "csr-approver",
            "--type=json",
            "-p",
            r#"[{"op":"add","path":"/rules/-","value":{"apiGroups":["certificates.k8s.io"],"resources":["signers"],"resourceNames":["kubernetes.io/*"],"verbs":["approve"]}}]"#,
        ]),
        "allow approving the signer's domain",
    );
    eventually("jane to approve", || {
        as_user(kubectl, &jane, &["certificate", "approve", "third"])
            .status
            .success()
    });

    // A denied request gets no certificate.
    ok(k(&["certificate", "deny", "other"]), "deny");
    let row = ok(k(&["get", "csr", "other", "--no-headers"]), "get other");
    assert!(row.trim_end().ends_with("Denied"), "{v}: {row}");
    std::thread::sleep(std::time::Duration::from_millis(500));
    assert_eq!(
        ok(
            k(&[
                "get",
                "csr",
                "other",
                "-o",
                "jsonpath={.status.certificate}"
            ]),
            "cert"
        ),
        ""
    );
    // Approved and Denied exclude each other.
    let both = fails(
        k(&["certificate", "approve", "other"]),
        "approve a denied request",
    );
    assert!(
        both.contains("mutually exclusive") || both.contains("Denied"),
        "{v}: {both}"
    );

    // The signer refuses a client certificate for server auth: Failed.
    let (_, server_pem) = openssl_request(&s, "srv", "/CN=srv");
    let srv = s.write(
        "srv.yaml",
        &csr_manifest(
            "srv",
            &server_pem,
            "kubernetes.io/kube-apiserver-client",
            "[server auth]",
        ),
    );
    ok(k(&["create", "-f", srv.to_str().unwrap()]), "create srv");
    ok(k(&["certificate", "approve", "srv"]), "approve srv");
    eventually("the signer to refuse", || {
        ok(k(&["get", "csr", "srv", "--no-headers"]), "get srv").contains("Approved,Failed")
    });
    let message = ok(
        k(&[
            "get",
            "csr",
            "srv",
            "-o",
            "jsonpath={.status.conditions[?(@.type==\"Failed\")].message}",
        ]),
        "failed message",
    );
    assert_eq!(
        message, "invalid usage for client certificate: server auth",
        "{v}"
    );

    // No client certificates for system:masters through the API.
    let (_, masters_pem) = openssl_request(&s, "root", "/CN=root/O=system:masters");
    let masters = s.write(
        "masters.yaml",
        &csr_manifest(
            "root",
            &masters_pem,
            "kubernetes.io/kube-apiserver-client",
            "[client auth]",
        ),
    );
    let err = fails(
        k(&["create", "-f", masters.to_str().unwrap()]),
        "system:masters csr",
    );
    assert!(
        err.contains("use of kubernetes.io/kube-apiserver-client signer with system:masters group is not allowed"),
        "{v}: {err}"
    );

    // Invalid requests: field errors, nothing stored.
    let bad = s.write(
        "bad.yaml",
        "apiVersion: certificates.k8s.io/v1\nkind: CertificateSigningRequest\nmetadata:\n  name: bad\nspec:\n  request: aGVsbG8=\n  signerName: nodomain\n  usages: [client auth]\n  expirationSeconds: 60\n",
    );
    let err = fails(k(&["create", "-f", bad.to_str().unwrap()]), "invalid csr");
    for field in ["spec.request", "spec.signerName", "spec.expirationSeconds"] {
        assert!(err.contains(field), "{v}: {field}: {err}");
    }
    fails(
        k(&["get", "csr", "bad"]),
        "the invalid request was not stored",
    );
}

#[test]
fn a_user_certificate_is_requested_approved_issued_and_used() {
    for kubectl in kubectls() {
        certificates(&kubectl);
    }
}
