//! RBAC and service accounts through the real kubectl: a second user with a client
//! certificate issued from the cluster CA, `kubectl auth can-i`, SubjectAccessReview, the
//! default roles and their aggregation, the `default` ServiceAccount, TokenRequest
//! (`kubectl create token`), bearer-token authentication and impersonation (`--as`).

use crate::common;

use std::path::Path;
use std::process::Output;

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use common::{as_user, eventually, fails, kubectls, ok, TestServer};

/// Issues a client certificate for `user` in `groups` from the cluster CA.
pub(crate) fn client_certificate(s: &TestServer, user: &str, groups: &[&str]) -> String {
    let tls = s.root.path().join("server/tls");
    let ca_cert = std::fs::read_to_string(tls.join("ca.crt")).unwrap();
    let ca_key =
        rcgen::KeyPair::from_pem(&std::fs::read_to_string(tls.join("ca.key")).unwrap()).unwrap();
    let issuer = rcgen::Issuer::from_ca_cert_pem(&ca_cert, ca_key).unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::default();
    params.distinguished_name = rcgen::DistinguishedName::new();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, user);
    for group in groups {
        params
            .distinguished_name
            .push(rcgen::DnType::OrganizationName, *group);
    }
    params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
    let cert = params.signed_by(&key, &issuer).unwrap();
    format!(
        "    client-certificate-data: {}\n    client-key-data: {}\n",
        BASE64.encode(cert.pem()),
        BASE64.encode(key.serialize_pem())
    )
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn rbac_and_service_accounts(kubectl: &Path) {
    let s = TestServer::start();
    let k = |args: &[&str]| s.kubectl(kubectl, args);
    let v = kubectl.display().to_string();

    // The admin (system:masters) may do anything.
    assert_eq!(
        ok(k(&["auth", "can-i", "create", "pods"]), "can-i").trim(),
        "yes",
        "{v}"
    );
    assert_eq!(
        ok(k(&["auth", "can-i", "*", "*"]), "can-i *").trim(),
        "yes",
        "{v}"
    );

    // The default roles exist, aggregated through their labels.
    let roles = ok(
        k(&["get", "clusterroles", "-o", "name"]),
        "get clusterroles",
    );
    for role in [
        "cluster-admin",
        "admin",
        "edit",
        "view",
        "system:basic-user",
        "system:discovery",
        "system:public-info-viewer",
        "system:node",
        "system:kube-scheduler",
        "system:kube-controller-manager",
    ] {
        assert!(
            roles.contains(&format!("clusterrole.rbac.authorization.k8s.io/{role}\n")),
            "{v}: {role}"
        );
    }
    eventually("the view role to aggregate", || {
        stdout(&k(&[
            "get",
            "clusterrole",
            "view",
            "-o",
            "jsonpath={.rules[*].resources}",
        ]))
        .contains("pods")
    });
    let extra = s.write(
        "extra.yaml",
        "apiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRole\nmetadata:\n  name: widget-viewer\n  labels: {rbac.authorization.k8s.io/aggregate-to-view: \"true\"}\nrules:\n- apiGroups: [example.com]\n  resources: [widgets]\n  verbs: [get]\n",
    );
    ok(
        k(&["create", "-f", extra.to_str().unwrap()]),
        "create aggregated role",
    );
    eventually("view, edit and admin to include the new rule", || {
        ["view", "edit", "admin"].iter().all(|role| {
            stdout(&k(&[
                "get",
                "clusterrole",
                role,
                "-o",
                "jsonpath={.rules[*].resources}",
            ]))
            .contains("widgets")
        })
    });

    // A second user, bob (group devs), with a certificate from the cluster CA.
    let bob = s.user_kubeconfig("bob", &client_certificate(&s, "bob", &["devs"]));
    let b = |args: &[&str]| as_user(kubectl, &bob, args);
    let err = fails(b(&["get", "pods"]), "bob lists pods");
    assert!(
        err.contains(r#"Error from server (Forbidden): pods is forbidden: User "bob" cannot list resource "pods" in API group "" in the namespace "default""#),
        "{v}: {err}"
    );
    let err = fails(b(&["get", "deployment", "web"]), "bob gets a deployment");
    assert!(
        err.contains(r#"deployments.apps "web" is forbidden: User "bob" cannot get resource "deployments" in API group "apps" in the namespace "default""#),
        "{v}: {err}"
    );
    let err = fails(b(&["get", "nodes"]), "bob lists nodes");
    assert!(
        err.contains(r#"nodes is forbidden: User "bob" cannot list resource "nodes" in API group "" at the cluster scope"#),
        "{v}: {err}"
    );
    // Everyone may discover and review themselves.
    ok(b(&["api-versions"]), "bob discovers");
    let no = b(&["auth", "can-i", "list", "pods"]);
    assert_eq!(stdout(&no).trim(), "no", "{v}");
    assert!(
        !no.status.success(),
        "{v}: can-i says no with a failing exit code"
    );

    ok(
        k(&[
            "create",
            "role",
            "pod-reader",
            "--verb=get,list,watch",
            "--resource=pods",
        ]),
        "create role",
    );
    ok(
        k(&[
            "create",
            "rolebinding",
            "bob-reads",
            "--role=pod-reader",
            "--user=bob",
        ]),
        "bind bob",
    );
    ok(
        k(&[
            "create",
            "clusterrolebinding",
            "devs-view",
            "--clusterrole=view",
            "--group=devs",
        ]),
        "bind devs",
    );
    eventually("bob to list pods", || b(&["get", "pods"]).status.success());
    assert_eq!(
        ok(b(&["auth", "can-i", "list", "pods"]), "bob can-i").trim(),
        "yes",
        "{v}"
    );
    assert_eq!(
        stdout(&b(&["auth", "can-i", "delete", "pods"])).trim(),
        "no",
        "{v}"
    );
    assert_eq!(
        stdout(&b(&["auth", "can-i", "list", "pods", "-n", "kube-system"])).trim(),
        "yes",
        "{v}: view is cluster-wide"
    );
    assert_eq!(
        stdout(&b(&["auth", "can-i", "get", "secrets"])).trim(),
        "no",
        "{v}: view excludes secrets"
    );
    let list = ok(b(&["auth", "can-i", "--list"]), "bob can-i --list");
    assert!(
        list.contains("pods") && list.contains("selfsubjectaccessreviews.authorization.k8s.io"),
        "{v}: {list}"
    );
    let err = fails(b(&["create", "configmap", "x"]), "bob creates");
    assert!(
        err.contains(r#"configmaps is forbidden: User "bob" cannot create resource "configmaps" in API group "" in the namespace "default""#),
        "{v}: {err}"
    );

    // SubjectAccessReview, as an admin asks about bob.
    let sar = s.write(
        "sar.yaml",
        "apiVersion: authorization.k8s.io/v1\nkind: SubjectAccessReview\nspec:\n  user: bob\n  groups: [devs]\n  resourceAttributes: {verb: list, resource: pods, namespace: default}\n",
    );
    let allowed = ok(
        k(&[
            "create",
            "-f",
            sar.to_str().unwrap(),
            "-o",
            "jsonpath={.status.allowed} {.status.reason}",
        ]),
        "create SubjectAccessReview",
    );
    assert!(
        allowed.starts_with("true RBAC: allowed by "),
        "{v}: {allowed}"
    );

    // ServiceAccounts: every namespace gets `default` and the CA ConfigMap.
    ok(k(&["create", "namespace", "team"]), "create ns");
    eventually("the default service account", || {
        k(&["get", "sa", "default", "-n", "team"]).status.success()
    });
    eventually("kube-root-ca.crt", || {
        stdout(&k(&[
            "get",
            "cm",
            "kube-root-ca.crt",
            "-n",
            "team",
            "-o",
            "jsonpath={.data.ca\\.crt}",
        ]))
        .contains("BEGIN CERTIFICATE")
    });
    ok(
        k(&[
            "run",
            "app",
            "-n",
            "team",
            "--image=busybox",
            "--restart=Never",
        ]),
        "run pod",
    );
    let pod: serde_json::Value = serde_json::from_str(&ok(
        k(&["get", "pod", "app", "-n", "team", "-o", "json"]),
        "get pod",
    ))
    .unwrap();
    assert_eq!(pod["spec"]["serviceAccountName"], "default", "{v}");
    let volume = &pod["spec"]["volumes"][0];
    assert!(
        volume["name"]
            .as_str()
            .unwrap()
            .starts_with("kube-api-access-"),
        "{v}: {pod}"
    );
    assert_eq!(
        volume["projected"]["sources"][0]["serviceAccountToken"]["path"], "token",
        "{v}"
    );
    assert_eq!(
        pod["spec"]["containers"][0]["volumeMounts"][0]["mountPath"],
        "/var/run/secrets/kubernetes.io/serviceaccount",
        "{v}"
    );
    let err = fails(
        k(&[
            "run",
            "orphan",
            "-n",
            "team",
            "--image=busybox",
            "--overrides={\"spec\":{\"serviceAccountName\":\"missing\"}}",
        ]),
        "pod with a missing service account",
    );
    assert!(
        err.contains(r#"pods "orphan" is forbidden: error looking up service account team/missing: serviceaccount "missing" not found"#),
        "{v}: {err}"
    );

    // TokenRequest and bearer tokens.
    ok(
        k(&["create", "serviceaccount", "robot", "-n", "team"]),
        "create sa",
    );
    let token = ok(
        k(&["create", "token", "robot", "-n", "team"]),
        "create token",
    );
    let token = token.trim();
    assert_eq!(token.split('.').count(), 3, "{v}: a JWT: {token}");
    let robot = s.user_kubeconfig("robot", &format!("    token: {token}\n"));
    let r = |args: &[&str]| as_user(kubectl, &robot, args);
    let err = fails(r(&["get", "pods", "-n", "team"]), "robot lists pods");
    assert!(
        err.contains(r#"pods is forbidden: User "system:serviceaccount:team:robot" cannot list resource "pods" in API group "" in the namespace "team""#),
        "{v}: {err}"
    );
    ok(
        k(&[
            "create",
            "rolebinding",
            "robot-view",
            "-n",
            "team",
            "--clusterrole=view",
            "--serviceaccount=team:robot",
        ]),
        "bind robot",
    );
    eventually("robot to list pods", || {
        r(&["get", "pods", "-n", "team"]).status.success()
    });
    let tr = s.write(
        "tr.yaml",
        &format!(
            "apiVersion: authentication.k8s.io/v1\nkind: TokenReview\nspec:\n  token: {token}\n"
        ),
    );
    let reviewed = ok(
        k(&[
            "create",
            "-f",
            tr.to_str().unwrap(),
            "-o",
            "jsonpath={.status.user.username}",
        ]),
        "TokenReview",
    );
    assert_eq!(reviewed, "system:serviceaccount:team:robot", "{v}");
    // Service account issuer discovery: any service account reads the issuer's
    // configuration and the key that signed its token.
    let config = ok(
        r(&["get", "--raw", "/.well-known/openid-configuration"]),
        "openid-configuration",
    );
    let config: serde_json::Value = serde_json::from_str(&config).unwrap();
    assert_eq!(
        config["issuer"], "https://kubernetes.default.svc.cluster.local",
        "{v}"
    );
    assert_eq!(
        config["jwks_uri"], "https://kubernetes.default.svc.cluster.local/openid/v1/jwks",
        "{v}"
    );
    let jwks = ok(r(&["get", "--raw", "/openid/v1/jwks"]), "jwks");
    let jwks: serde_json::Value = serde_json::from_str(&jwks).unwrap();
    let header: serde_json::Value = {
        use base64::Engine as _;
        let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(token.split('.').next().unwrap())
            .unwrap();
        serde_json::from_slice(&raw).unwrap()
    };
    assert_eq!(jwks["keys"][0]["kid"], header["kid"], "{v}: {jwks}");
    assert_eq!(jwks["keys"][0]["crv"], "P-256", "{v}");
    // Deleting the account revokes its tokens.
    ok(k(&["delete", "sa", "robot", "-n", "team"]), "delete sa");
    eventually("the token to stop working", || {
        let out = r(&["get", "pods", "-n", "team"]);
        String::from_utf8_lossy(&out.stderr).contains("Unauthorized")
    });
}

fn impersonation(kubectl: &Path, newest: bool) {
    let s = TestServer::start();
    let k = |args: &[&str]| s.kubectl(kubectl, args);
    let v = kubectl.display().to_string();

    // The admin may impersonate anyone; jane herself may do nothing yet.
    let no = k(&["auth", "can-i", "--as=jane", "get", "pods"]);
    assert_eq!(stdout(&no).trim(), "no", "{v}");
    let err = fails(k(&["get", "pods", "--as=jane"]), "get pods as jane");
    assert!(
        err.contains("pods is forbidden: User \"jane\" cannot list resource \"pods\" in API group \"\" in the namespace \"default\""),
        "{v}: {err}"
    );
    ok(
        k(&[
            "create",
            "rolebinding",
            "jane-view",
            "--clusterrole=view",
            "--user=jane",
        ]),
        "bind jane",
    );
    eventually("jane may get pods", || {
        stdout(&k(&["auth", "can-i", "--as=jane", "get", "pods"])).trim() == "yes"
    });
    ok(k(&["get", "pods", "--as=jane"]), "get pods as jane");
    // Groups count too: a binding to a group jane is impersonated in.
    let no = k(&["auth", "can-i", "--as=jane", "create", "configmaps"]);
    assert_eq!(stdout(&no).trim(), "no", "{v}");
    ok(
        k(&[
            "create",
            "rolebinding",
            "devs-edit",
            "--clusterrole=edit",
            "--group=devs",
        ]),
        "bind devs",
    );
    eventually("jane in devs may create configmaps", || {
        stdout(&k(&[
            "auth",
            "can-i",
            "--as=jane",
            "--as-group=devs",
            "create",
            "configmaps",
        ]))
        .trim()
            == "yes"
    });
    if newest {
        // SelfSubjectReview (authentication.k8s.io/v1) answers as the impersonated user.
        let whoami = ok(
            k(&[
                "auth",
                "whoami",
                "--as=jane",
                "--as-group=devs",
                "-o",
                "json",
            ]),
            "whoami",
        );
        let whoami: serde_json::Value = serde_json::from_str(&whoami).unwrap();
        assert_eq!(whoami["status"]["userInfo"]["username"], "jane", "{v}");
        assert_eq!(
            whoami["status"]["userInfo"]["groups"],
            serde_json::json!(["devs", "system:authenticated"]),
            "{v}"
        );
        let table = ok(k(&["auth", "whoami", "--as=jane"]), "whoami table");
        assert!(table.contains("jane"), "{v}: {table}");
    }

    // A user without the impersonate verb is refused, in Kubernetes' words. Discovery is
    // refused too (kubectl only says "unknown" then), so bob's discovery cache is warmed
    // first, as any earlier use of kubectl would have.
    let bob = s.user_kubeconfig("bob", &client_certificate(&s, "bob", &[]));
    let cache = s.root.path().join("bob-cache");
    let cache = cache.to_str().unwrap();
    let b = |args: &[&str]| {
        let mut all = vec!["--cache-dir", cache];
        all.extend_from_slice(args);
        as_user(kubectl, &bob, &all)
    };
    ok(b(&["api-resources"]), "bob's discovery");
    let err = fails(b(&["get", "pods", "--as=jane"]), "bob as jane");
    assert!(
        err.contains("users \"jane\" is forbidden: User \"bob\" cannot impersonate resource \"users\" in API group \"\" at the cluster scope"),
        "{v}: {err}"
    );
    let err = fails(
        b(&["get", "pods", "--as=system:serviceaccount:default:default"]),
        "bob as a service account",
    );
    assert!(
        err.contains("serviceaccounts \"default\" is forbidden: User \"bob\" cannot impersonate resource \"serviceaccounts\" in API group \"\" in the namespace \"default\""),
        "{v}: {err}"
    );
    // Allowed to impersonate jane (only): bob acts as jane, but not in a group of his choice.
    let grant = s.write(
        "impersonate.yaml",
        "apiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRole\nmetadata: {name: impersonate-jane}\nrules:\n- {apiGroups: [\"\"], resources: [users], resourceNames: [jane], verbs: [impersonate]}\n---\napiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRoleBinding\nmetadata: {name: bob-impersonates-jane}\nroleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: impersonate-jane}\nsubjects:\n- {apiGroup: rbac.authorization.k8s.io, kind: User, name: bob}\n",
    );
    ok(
        k(&["apply", "-f", grant.to_str().unwrap()]),
        "grant impersonation",
    );
    eventually("bob may act as jane", || {
        b(&["get", "pods", "--as=jane"]).status.success()
    });
    let err = fails(
        b(&["get", "pods", "--as=jane", "--as-group=system:masters"]),
        "bob as jane in system:masters",
    );
    assert!(
        err.contains("groups \"system:masters\" is forbidden: User \"bob\" cannot impersonate resource \"groups\""),
        "{v}: {err}"
    );
    let err = fails(b(&["get", "pods", "--as=joe"]), "bob as joe");
    assert!(err.contains("users \"joe\" is forbidden"), "{v}: {err}");
}

#[test]
fn kubectl_as_impersonates_when_allowed() {
    let all = kubectls();
    for (i, kubectl) in all.iter().enumerate() {
        impersonation(kubectl, i + 1 == all.len());
    }
}

#[test]
fn rbac_denies_a_restricted_user_and_service_account_tokens_authenticate() {
    for kubectl in kubectls() {
        rbac_and_service_accounts(&kubectl);
    }
}
