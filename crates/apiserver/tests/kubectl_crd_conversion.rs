//! CRD conversion webhooks with the real kubectl: a small HTTPS webhook in Python (stdlib
//! `http.server` and `ssl`, with a certificate of a test CA made here) converts Widgets
//! between `example.com/v1` (`spec.color`, the storage version) and `example.com/v2`
//! (`spec.colour`); objects written in one version are read, listed and watched in the
//! other (a list in one review), and a webhook that refuses or is down fails reads as
//! kube-apiserver does.

use crate::common;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use serde_json::Value;

use common::{fails, kubectls, ok, TestServer};

/// The webhook: POST /convert answers a ConversionReview, renaming `spec.color` (v1) to
/// `spec.colour` (v2) and back; objects labelled `refuse=true` get a `Failed` result.
const WEBHOOK: &str = r#"
import http.server, json, ssl, sys

def convert(obj, desired):
    obj = dict(obj)
    spec = dict(obj.get("spec") or {})
    if desired.endswith("/v2") and "color" in spec:
        spec["colour"] = spec.pop("color")
    if desired.endswith("/v1") and "colour" in spec:
        spec["color"] = spec.pop("colour")
    obj["spec"] = spec
    obj["apiVersion"] = desired
    return obj

class Handler(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        review = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        request = review["request"]
        objects = request["objects"]
        refused = [o for o in objects if (o["metadata"].get("labels") or {}).get("refuse") == "true"]
        response = {"uid": request["uid"]}
        if refused:
            response["result"] = {"status": "Failed", "message": "refusing " + refused[0]["metadata"]["name"]}
        else:
            response["result"] = {"status": "Success"}
            response["convertedObjects"] = [convert(o, request["desiredAPIVersion"]) for o in objects]
        with open(sys.argv[3], "a") as log:
            log.write(request["desiredAPIVersion"] + "\n")
        body = json.dumps({"apiVersion": review["apiVersion"], "kind": "ConversionReview",
                           "response": response}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass

server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
context.load_cert_chain(sys.argv[1], sys.argv[2])
server.socket = context.wrap_socket(server.socket, server_side=True)
print(server.server_address[1], flush=True)
server.serve_forever()
"#;

/// The Python webhook process; killed on drop.
struct Webhook {
    child: Child,
    port: u16,
    ca_pem: String,
}

impl Drop for Webhook {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Webhook {
    /// Starts the webhook with a serving certificate for 127.0.0.1 from a fresh test CA.
    fn start(dir: &Path) -> Webhook {
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "conversion webhook test CA");
        let ca_pem = ca_params.self_signed(&ca_key).unwrap().pem();
        let issuer = rcgen::Issuer::from_ca_cert_pem(&ca_pem, ca_key).unwrap();
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["127.0.0.1".to_owned()])
            .unwrap()
            .signed_by(&key, &issuer)
            .unwrap();
        std::fs::write(dir.join("webhook.crt"), cert.pem()).unwrap();
        std::fs::write(dir.join("webhook.key"), key.serialize_pem()).unwrap();
        std::fs::write(dir.join("webhook.py"), WEBHOOK).unwrap();
        let mut child = Command::new("python3")
            .arg(dir.join("webhook.py"))
            .arg(dir.join("webhook.crt"))
            .arg(dir.join("webhook.key"))
            .arg(dir.join("webhook.log"))
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("python3 runs");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let port = line.trim().parse().expect("the webhook prints its port");
        Webhook {
            child,
            port,
            ca_pem,
        }
    }
}

fn crd(webhook: &Webhook) -> String {
    let schema = |field: &str| {
        format!(
            "    schema:\n      openAPIV3Schema:\n        type: object\n        properties:\n          spec:\n            type: object\n            properties:\n              {field}: {{type: string}}\n              size: {{type: integer}}\n"
        )
    };
    format!(
        "apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: widgets.example.com
spec:
  group: example.com
  scope: Namespaced
  names: {{plural: widgets, singular: widget, kind: Widget}}
  conversion:
    strategy: Webhook
    webhook:
      conversionReviewVersions: [v1]
      clientConfig:
        url: https://127.0.0.1:{}/convert
        caBundle: {}
  versions:
  - name: v1
    served: true
    storage: true
{}  - name: v2
    served: true
    storage: false
{}",
        webhook.port,
        BASE64.encode(&webhook.ca_pem),
        schema("color"),
        schema("colour"),
    )
}

fn json(out: String) -> Value {
    serde_json::from_str(&out).expect("kubectl prints JSON")
}

#[test]
fn a_webhook_converts_between_served_versions() {
    let s = TestServer::start();
    let webhook = Webhook::start(s.root.path());
    let kubectl = kubectls().pop().unwrap();
    let k = |args: &[&str]| s.kubectl(&kubectl, args);
    let k_in = |args: &[&str], yaml: &str| s.kubectl_stdin(&kubectl, args, Some(yaml));

    // A webhook CRD without review versions is refused as apiextensions refuses it.
    let broken = crd(&webhook).replace("      conversionReviewVersions: [v1]\n", "");
    let err = fails(k_in(&["apply", "-f", "-"], &broken), "no review versions");
    assert!(
        err.contains("spec.conversion.webhook.conversionReviewVersions: Required value"),
        "{err}"
    );
    ok(k_in(&["apply", "-f", "-"], &crd(&webhook)), "apply the CRD");
    ok(
        k(&[
            "wait",
            "--for",
            "condition=established",
            "crd/widgets.example.com",
            "--timeout=20s",
        ]),
        "wait established",
    );

    // Created in the storage version, read in v2: the webhook renamed the field.
    let v1 = "apiVersion: example.com/v1\nkind: Widget\nmetadata: {name: a, labels: {app: demo}}\nspec: {color: blue, size: 3}\n";
    let mut created = k_in(&["apply", "-f", "-"], v1);
    for _ in 0..50 {
        if created.status.success() {
            break;
        }
        // The new kind is served a moment after the CRD is established.
        std::thread::sleep(Duration::from_millis(100));
        created = k_in(&["apply", "-f", "-"], v1);
    }
    ok(created, "create in v1");
    let a = json(ok(
        k(&["get", "widgets.v2.example.com", "a", "-o", "json"]),
        "get in v2",
    ));
    assert_eq!(a["apiVersion"], "example.com/v2", "{a}");
    assert_eq!(a["spec"]["colour"], "blue", "{a}");
    assert_eq!(a["spec"]["size"], 3, "{a}");
    assert!(a["spec"].get("color").is_none(), "{a}");
    assert_eq!(a["metadata"]["labels"]["app"], "demo", "{a}");
    // Read in the storage version, it never reaches the webhook.
    let a1 = json(ok(
        k(&["get", "widgets.v1.example.com", "a", "-o", "json"]),
        "get in v1",
    ));
    assert_eq!(a1["spec"]["color"], "blue", "{a1}");

    // Written in v2 (stored as v1), read back in v1.
    let v2 = "apiVersion: example.com/v2\nkind: Widget\nmetadata: {name: b}\nspec: {colour: red}\n";
    let b = json(ok(
        k_in(&["create", "-o", "json", "-f", "-"], v2),
        "create in v2",
    ));
    assert_eq!(b["apiVersion"], "example.com/v2", "{b}");
    assert_eq!(b["spec"]["colour"], "red", "{b}");
    let b1 = json(ok(
        k(&["get", "widgets.v1.example.com", "b", "-o", "json"]),
        "get b in v1",
    ));
    assert_eq!(b1["spec"]["color"], "red", "{b1}");
    assert!(b1["spec"].get("colour").is_none(), "{b1}");
    let log = std::fs::read_to_string(s.root.path().join("webhook.log")).unwrap();
    assert!(
        log.lines().any(|l| l == "example.com/v1") && log.lines().any(|l| l == "example.com/v2"),
        "{log}"
    );

    // Listed in v2: both objects in one ConversionReview.
    let reviews = || {
        std::fs::read_to_string(s.root.path().join("webhook.log"))
            .unwrap()
            .lines()
            .count()
    };
    let before = reviews();
    let list = json(ok(
        k(&["get", "widgets.v2.example.com", "-o", "json"]),
        "list in v2",
    ));
    let colours: Vec<(&str, &str)> = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| {
            (
                w["metadata"]["name"].as_str().unwrap_or(""),
                w["spec"]["colour"].as_str().unwrap_or(""),
            )
        })
        .collect();
    assert_eq!(colours, vec![("a", "blue"), ("b", "red")], "{list}");
    assert_eq!(reviews(), before + 1, "one review for the list");

    // Watched in v2: a change made in v1 arrives converted.
    let mut watch = Command::new(&kubectl)
        .arg("--kubeconfig")
        .arg(&s.kubeconfig)
        .args([
            "get",
            "widgets.v2.example.com",
            "--watch-only",
            "-o",
            "jsonpath={.metadata.name}={.spec.colour}{\"\\n\"}",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let (lines, received) = mpsc::channel();
    let stdout = watch.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if lines.send(line).is_err() {
                return;
            }
        }
    });
    let mut seen = Vec::new();
    for attempt in 0..50 {
        if attempt % 10 == 0 {
            ok(
                k(&[
                    "patch",
                    "widgets.v1.example.com",
                    "a",
                    "--type=merge",
                    "-p",
                    &format!("{{\"spec\":{{\"color\":\"green\",\"size\":{attempt}}}}}"),
                ]),
                "patch in v1",
            );
        }
        if let Ok(line) = received.recv_timeout(Duration::from_millis(200)) {
            seen.push(line);
        }
        if seen.iter().any(|l| l == "a=green") {
            break;
        }
    }
    let _ = watch.kill();
    let _ = watch.wait();
    assert!(seen.iter().any(|l| l == "a=green"), "watch saw {seen:?}");

    // A webhook that refuses: the read fails with its message, as kube-apiserver says it.
    let refused = "apiVersion: example.com/v1\nkind: Widget\nmetadata: {name: c, labels: {refuse: \"true\"}}\nspec: {color: black}\n";
    ok(k_in(&["create", "-f", "-"], refused), "create c in v1");
    let err = fails(
        k(&["get", "widgets.v2.example.com", "c"]),
        "get a refused object in v2",
    );
    assert!(
        err.contains(
            "Error from server: conversion webhook for example.com/v1, Kind=Widget failed: refusing c"
        ),
        "{err}"
    );
    let err = fails(
        k(&["get", "widgets.v2.example.com"]),
        "list with a refused object in v2",
    );
    assert!(err.contains("refusing c"), "{err}");
    ok(k(&["delete", "widgets.v1.example.com", "c"]), "delete c");

    // A webhook that is down: reads in v2 fail, reads in the storage version still work.
    let port = webhook.port;
    drop(webhook);
    let err = fails(
        k(&["get", "widgets.v2.example.com", "a"]),
        "get in v2 without the webhook",
    );
    assert!(
        err.contains(&format!(
            "conversion webhook for example.com/v1, Kind=Widget failed: Post \"https://127.0.0.1:{port}/convert?timeout=30s\""
        )),
        "{err}"
    );
    let err = fails(
        k_in(
            &["create", "-f", "-"],
            "apiVersion: example.com/v2\nkind: Widget\nmetadata: {name: d}\nspec: {colour: red}\n",
        ),
        "create in v2 without the webhook",
    );
    assert!(
        err.contains("conversion webhook for example.com/v2, Kind=Widget failed"),
        "{err}"
    );
    ok(k(&["get", "widgets.v1.example.com", "a"]), "get in v1");
}
