//! Bootstrap tokens through the real kubectl: a token Secret made with `kubectl create
//! secret generic --type bootstrap.kubernetes.io/token` authenticates `kubectl --token` as
//! `system:bootstrap:<id>` (`auth whoami`, TokenReview), the default node-token group may
//! do what a node does and no more (`auth can-i`), and expired, wrong, unusable and deleted
//! tokens get 401 Unauthorized.

use crate::common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::{fails, kubectls, ok, TestServer};
use serde_json::Value;

const NODE_GROUP: &str = "system:bootstrappers:skiff:default-node-token";

/// The newest kubectl (`auth whoami` needs 1.28).
fn newest_kubectl() -> PathBuf {
    kubectls().pop().unwrap()
}

/// The server URL of the admin kubeconfig.
fn server_url(s: &TestServer) -> String {
    std::fs::read_to_string(&s.kubeconfig)
        .unwrap()
        .lines()
        .find_map(|l| l.trim().strip_prefix("server: "))
        .unwrap()
        .to_owned()
}

/// kubectl with nothing but the server, its CA and a bearer token.
fn with_token(s: &TestServer, kubectl: &Path, token: &str, args: &[&str]) -> Output {
    let empty = s.write("empty.kubeconfig", "apiVersion: v1\nkind: Config\n");
    Command::new(kubectl)
        .arg("--kubeconfig")
        .arg(empty)
        .arg("--server")
        .arg(server_url(s))
        .arg("--certificate-authority")
        .arg(s.ca_path())
        .args(["--token", token])
        .args(args)
        .output()
        .unwrap()
}

/// Creates the Secret of token id `id` with `secret` and the extra `literals`.
fn create_token_secret(s: &TestServer, kubectl: &Path, id: &str, secret: &str, literals: &[&str]) {
    let mut args = vec![
        "create".to_owned(),
        "secret".into(),
        "generic".into(),
        format!("bootstrap-token-{id}"),
        "--type".into(),
        "bootstrap.kubernetes.io/token".into(),
        "-n".into(),
        "kube-system".into(),
        format!("--from-literal=token-id={id}"),
        format!("--from-literal=token-secret={secret}"),
    ];
    args.extend(literals.iter().map(|l| format!("--from-literal={l}")));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    ok(s.kubectl(kubectl, &args), "create bootstrap token secret");
}

/// An RFC 3339 time `seconds` from now.
fn in_seconds(seconds: i64) -> String {
    jiff::Timestamp::from_second(jiff::Timestamp::now().as_second() + seconds)
        .unwrap()
        .to_string()
}

fn assert_unauthorized(s: &TestServer, kubectl: &Path, token: &str, what: &str) {
    let err = fails(with_token(s, kubectl, token, &["get", "nodes"]), what);
    assert!(
        err.contains("You must be logged in to the server (Unauthorized)"),
        "{what}: {err}"
    );
    // The response itself: 401 with an Unauthorized Status, as for any other bad token.
    let out = Command::new("curl")
        .args(["-sS", "--cacert"])
        .arg(s.ca_path())
        .args(["-H", &format!("Authorization: Bearer {token}")])
        .args(["-w", "\n%{http_code}"])
        .arg(format!("{}/api/v1/nodes", server_url(s)))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let (body, code) = text.rsplit_once('\n').unwrap();
    assert_eq!(code, "401", "{what}: {text}");
    let status: Value = serde_json::from_str(body).unwrap();
    assert_eq!(status["kind"], "Status", "{what}: {body}");
    assert_eq!(status["reason"], "Unauthorized", "{what}: {body}");
    assert_eq!(status["code"], 401, "{what}: {body}");
}

#[test]
fn bootstrap_tokens_authenticate_as_bootstrappers_and_bad_ones_get_401() {
    let s = TestServer::start();
    let kubectl = newest_kubectl();
    let token = "abcdef.0123456789abcdef";
    create_token_secret(
        &s,
        &kubectl,
        "abcdef",
        "0123456789abcdef",
        &[
            "usage-bootstrap-authentication=true",
            &format!("auth-extra-groups={NODE_GROUP}"),
            &format!("expiration={}", in_seconds(3600)),
            "description=joins nodes",
        ],
    );

    // Who the token is.
    let whoami = ok(
        with_token(&s, &kubectl, token, &["auth", "whoami", "-o", "json"]),
        "auth whoami",
    );
    let whoami: Value = serde_json::from_str(&whoami).unwrap();
    assert_eq!(
        whoami["status"]["userInfo"]["username"], "system:bootstrap:abcdef",
        "{whoami}"
    );
    assert_eq!(
        whoami["status"]["userInfo"]["groups"],
        serde_json::json!(["system:bootstrappers", NODE_GROUP, "system:authenticated"]),
        "{whoami}"
    );
    // The server's TokenReview knows it too.
    let review = s.write(
        "review.yaml",
        &format!(
            "apiVersion: authentication.k8s.io/v1\nkind: TokenReview\nspec:\n  token: {token}\n"
        ),
    );
    let reviewed = ok(
        s.kubectl(
            &kubectl,
            &[
                "create",
                "-f",
                review.to_str().unwrap(),
                "-o",
                "jsonpath={.status.user.username}",
            ],
        ),
        "TokenReview",
    );
    assert_eq!(reviewed, "system:bootstrap:abcdef");

    // What a node does without pods of its own is allowed to the default node-token group
    // (`skiff:simulated-node`); Secrets, ConfigMaps and tokens, which a node reaches only
    // through its pods (the Node authorizer), and the rest are not.
    let can_i = |args: &[&str]| {
        let mut all = vec!["auth", "can-i"];
        all.extend_from_slice(args);
        let out = with_token(&s, &kubectl, token, &all);
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    };
    for allowed in [
        &["create", "nodes"][..],
        &["patch", "nodes", "--subresource=status"],
        &[
            "create",
            "leases.coordination.k8s.io",
            "-n",
            "kube-node-lease",
        ],
        &[
            "update",
            "leases.coordination.k8s.io",
            "-n",
            "kube-node-lease",
        ],
        &["watch", "pods", "--all-namespaces"],
        &["patch", "pods", "--subresource=status", "-n", "default"],
        &["list", "services", "--all-namespaces"],
        &["get", "endpoints", "-n", "default"],
        &["create", "events", "-n", "default"],
    ] {
        assert_eq!(can_i(allowed), "yes", "can-i {allowed:?}");
    }
    for denied in [
        &["create", "secrets", "-n", "kube-system"][..],
        &["get", "configmaps", "-n", "kube-system"],
        &["get", "secrets", "-n", "default"],
        &[
            "create",
            "serviceaccounts",
            "--subresource=token",
            "-n",
            "default",
        ],
        &["delete", "namespaces"],
        &["create", "deployments.apps", "-n", "default"],
        &["list", "clusterroles"],
        &["create", "clusterrolebindings"],
        &["update", "pods", "-n", "default"],
    ] {
        assert_eq!(can_i(denied), "no", "can-i {denied:?}");
    }
    ok(
        with_token(&s, &kubectl, token, &["get", "nodes"]),
        "list nodes with the token",
    );
    let err = fails(
        with_token(&s, &kubectl, token, &["get", "clusterroles"]),
        "list clusterroles with the token",
    );
    assert!(
        err.contains(r#"User "system:bootstrap:abcdef" cannot list resource "clusterroles""#),
        "{err}"
    );

    // Refused: a wrong secret, an expired token, a token not for authentication, a token
    // whose Secret is of another type, and one that is gone.
    assert_unauthorized(&s, &kubectl, "abcdef.0123456789abcdee", "a wrong secret");
    create_token_secret(
        &s,
        &kubectl,
        "expird",
        "0123456789abcdef",
        &[
            "usage-bootstrap-authentication=true",
            &format!("expiration={}", in_seconds(-60)),
        ],
    );
    assert_unauthorized(&s, &kubectl, "expird.0123456789abcdef", "an expired token");
    create_token_secret(
        &s,
        &kubectl,
        "nouse0",
        "0123456789abcdef",
        &["usage-bootstrap-signing=true"],
    );
    assert_unauthorized(
        &s,
        &kubectl,
        "nouse0.0123456789abcdef",
        "a token without usage",
    );
    ok(
        s.kubectl(
            &kubectl,
            &[
                "create",
                "secret",
                "generic",
                "bootstrap-token-opaque",
                "-n",
                "kube-system",
                "--from-literal=token-id=opaque",
                "--from-literal=token-secret=0123456789abcdef",
                "--from-literal=usage-bootstrap-authentication=true",
            ],
        ),
        "opaque secret",
    );
    assert_unauthorized(&s, &kubectl, "opaque.0123456789abcdef", "an Opaque secret");
    ok(
        s.kubectl(
            &kubectl,
            &[
                "delete",
                "secret",
                "bootstrap-token-abcdef",
                "-n",
                "kube-system",
            ],
        ),
        "delete the token",
    );
    assert_unauthorized(&s, &kubectl, token, "a deleted token");
}
