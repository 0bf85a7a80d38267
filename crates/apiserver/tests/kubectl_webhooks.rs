//! Admission webhooks through the real kubectl: a webhook server over HTTPS in the test
//! (its own CA, made here), registered with `kubectl apply`; mutation by JSON Patch,
//! denial, warnings, namespace and object selectors, failure policies against a webhook
//! that is down, timeouts, untrusted certificates, deletions, dry runs and side effects,
//! reinvocation, and a Service reference resolved through Endpoints or EndpointSlices.

use crate::common;

use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use serde_json::{json, Value};

use common::{fails, kubectls, ok, TestServer};

/// A review the webhook server received: the path called and the AdmissionReview.
type Received = Arc<Mutex<Vec<(String, Value)>>>;

/// The webhook server: `/mutate` adds the label `mutated-by=webhook`, `/validate` refuses
/// objects labelled `deny=true` and warns about those labelled `warn`, `/slow` answers
/// after three seconds.
struct Webhooks {
    port: u16,
    /// The CA that signed the server's certificate, PEM.
    ca_pem: String,
    received: Received,
    runtime: Option<tokio::runtime::Runtime>,
}

impl Drop for Webhooks {
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

impl Webhooks {
    fn start() -> Webhooks {
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "webhook test CA");
        let ca_pem = ca_params.self_signed(&ca_key).unwrap().pem();
        let issuer = rcgen::Issuer::from_ca_cert_pem(&ca_pem, ca_key).unwrap();
        let key = rcgen::KeyPair::generate().unwrap();
        let params = rcgen::CertificateParams::new(vec![
            "127.0.0.1".to_owned(),
            "hooks.webhooks.svc".to_owned(),
        ])
        .unwrap();
        let cert = params.signed_by(&key, &issuer).unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut tls = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(
                vec![CertificateDer::from_pem_slice(cert.pem().as_bytes()).unwrap()],
                PrivateKeyDer::from_pem_slice(key.serialize_pem().as_bytes()).unwrap(),
            )
            .unwrap();
        tls.alpn_protocols = vec![b"http/1.1".to_vec()];
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls));

        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .unwrap();
        let port = listener.local_addr().unwrap().port();
        let received = Received::default();
        let state = received.clone();
        runtime.spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    continue;
                };
                let acceptor = acceptor.clone();
                let state = state.clone();
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let service =
                        hyper::service::service_fn(move |request| answer(request, state.clone()));
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(tls), service)
                        .await;
                });
            }
        });
        Webhooks {
            port,
            ca_pem,
            received,
            runtime: Some(runtime),
        }
    }

    fn ca_bundle(&self) -> String {
        BASE64.encode(&self.ca_pem)
    }

    fn url(&self, path: &str) -> String {
        format!("https://127.0.0.1:{}{path}", self.port)
    }

    /// The reviews received for objects named `name`.
    fn reviews_of(&self, name: &str) -> Vec<(String, Value)> {
        self.received
            .lock()
            .unwrap()
            .iter()
            .filter(|(_, review)| review["request"]["name"] == name)
            .cloned()
            .collect()
    }
}

async fn answer(
    request: Request<Incoming>,
    received: Received,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let path = request.uri().path().to_owned();
    let body = request.into_body().collect().await.unwrap().to_bytes();
    let review: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    received
        .lock()
        .unwrap()
        .push((path.clone(), review.clone()));
    let request = &review["request"];
    let object = if request["object"].is_null() {
        &request["oldObject"]
    } else {
        &request["object"]
    };
    let labels = object.pointer("/metadata/labels");
    let label = |key: &str| labels.and_then(|l| l.get(key)).and_then(Value::as_str);
    let mut response = json!({"uid": request["uid"], "allowed": true});
    match path.as_str() {
        "/mutate" => {
            let patch = if labels.is_some() {
                json!([{"op": "add", "path": "/metadata/labels/mutated-by", "value": "webhook"}])
            } else {
                json!([{"op": "add", "path": "/metadata/labels", "value": {"mutated-by": "webhook"}}])
            };
            response["patchType"] = json!("JSONPatch");
            response["patch"] = json!(BASE64.encode(patch.to_string()));
        }
        "/validate" => {
            if label("deny") == Some("true") {
                response["allowed"] = json!(false);
                response["status"] = json!({
                    "code": 403,
                    "message": "objects labelled deny=true are not allowed",
                });
            }
            if label("warn").is_some() {
                response["warnings"] = json!(["this object carries the warn label"]);
            }
        }
        "/protect" if request["operation"] == "DELETE" => {
            response["allowed"] = json!(false);
            response["status"] = json!({"message": "this object is protected"});
        }
        "/slow" => tokio::time::sleep(Duration::from_secs(3)).await,
        _ => {}
    }
    let reply = json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "response": response,
    });
    Ok(Response::builder()
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(reply.to_string())))
        .unwrap())
}

/// One webhook entry of a configuration, as YAML lines under `webhooks:`.
fn webhook(name: &str, client_config: &str, resources: &str, extra: &str) -> String {
    format!(
        "- name: {name}\n  admissionReviewVersions: [v1]\n  sideEffects: None\n  clientConfig:\n{client_config}  rules:\n  - operations: [CREATE, UPDATE]\n    apiGroups: [\"\"]\n    apiVersions: [v1]\n    resources: [{resources}]\n{extra}"
    )
}

fn url_config(hooks: &Webhooks, path: &str) -> String {
    format!(
        "    url: {}\n    caBundle: {}\n",
        hooks.url(path),
        hooks.ca_bundle()
    )
}

fn configuration(kind: &str, name: &str, webhooks: &[String]) -> String {
    format!(
        "apiVersion: admissionregistration.k8s.io/v1\nkind: {kind}\nmetadata:\n  name: {name}\nwebhooks:\n{}",
        webhooks.concat()
    )
}

fn configmap(namespace: &str, name: &str, labels: &[(&str, &str)]) -> String {
    let labels: String = labels
        .iter()
        .map(|(k, v)| format!("    {k}: \"{v}\"\n"))
        .collect();
    format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {name}\n  namespace: {namespace}\n  labels:\n    app: test\n{labels}data:\n  k: v\n"
    )
}

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn mutation_denial_warnings_and_selectors() {
    let s = TestServer::start();
    let hooks = Webhooks::start();
    let kubectl = &kubectls()[0];
    // Only namespaces labelled webhooks=on are hooked; objects labelled skip are not.
    let selectors = "  namespaceSelector:\n    matchLabels:\n      webhooks: \"on\"\n  objectSelector:\n    matchExpressions:\n    - key: skip\n      operator: DoesNotExist\n";
    let mutating = configuration(
        "MutatingWebhookConfiguration",
        "test-mutate",
        &[webhook(
            "mutate.skiff.test",
            &url_config(&hooks, "/mutate"),
            "pods, configmaps",
            selectors,
        )],
    );
    let validating = configuration(
        "ValidatingWebhookConfiguration",
        "test-validate",
        &[webhook(
            "validate.skiff.test",
            &url_config(&hooks, "/validate"),
            "configmaps",
            selectors,
        )],
    );
    ok(
        s.kubectl_stdin(kubectl, &["apply", "-f", "-"], Some(&mutating)),
        "apply mutating configuration",
    );
    ok(
        s.kubectl_stdin(kubectl, &["apply", "-f", "-"], Some(&validating)),
        "apply validating configuration",
    );
    ok(
        s.kubectl(kubectl, &["create", "namespace", "hooked"]),
        "create hooked",
    );
    ok(
        s.kubectl(kubectl, &["label", "namespace", "hooked", "webhooks=on"]),
        "label hooked",
    );
    ok(
        s.kubectl(kubectl, &["create", "namespace", "plain"]),
        "create plain",
    );

    for kubectl in kubectls() {
        let kubectl = &kubectl;
        let v = kubectl
            .file_name()
            .unwrap()
            .to_string_lossy()
            .replace('.', "-");

        // Mutation, seen right after the configurations were written.
        let name = format!("mutated-{v}");
        ok(
            s.kubectl_stdin(
                kubectl,
                &["apply", "-f", "-"],
                Some(&configmap("hooked", &name, &[])),
            ),
            "apply configmap",
        );
        let yaml = ok(
            s.kubectl(kubectl, &["get", "cm", &name, "-n", "hooked", "-o", "yaml"]),
            "get configmap",
        );
        assert!(yaml.contains("mutated-by: webhook"), "{yaml}");
        assert!(yaml.contains("app: test"), "{yaml}");
        let reviews = hooks.reviews_of(&name);
        let (_, review) = reviews
            .iter()
            .find(|(path, _)| path == "/mutate")
            .expect("the mutating webhook was called");
        let request = &review["request"];
        assert_eq!(request["operation"], "CREATE");
        assert_eq!(request["namespace"], "hooked");
        assert_eq!(
            request["kind"],
            json!({"group": "", "version": "v1", "kind": "ConfigMap"})
        );
        assert_eq!(
            request["resource"],
            json!({"group": "", "version": "v1", "resource": "configmaps"})
        );
        assert_eq!(request["userInfo"]["username"], "skiff-admin");
        assert_eq!(request["dryRun"], false);
        assert!(request["oldObject"].is_null());
        // The validating webhook sees the mutated object.
        let (_, review) = reviews
            .iter()
            .find(|(path, _)| path == "/validate")
            .expect("the validating webhook was called");
        assert_eq!(
            review["request"]["object"]["metadata"]["labels"]["mutated-by"],
            "webhook"
        );

        // Pods are mutated too.
        let pod = format!("pod-{v}");
        ok(
            s.kubectl(
                kubectl,
                &[
                    "run",
                    &pod,
                    "-n",
                    "hooked",
                    "--image=busybox",
                    "--restart=Never",
                ],
            ),
            "run pod",
        );
        let labels = ok(
            s.kubectl(
                kubectl,
                &[
                    "get",
                    "pod",
                    &pod,
                    "-n",
                    "hooked",
                    "-o",
                    "jsonpath={.metadata.labels}",
                ],
            ),
            "get pod labels",
        );
        assert!(labels.contains("\"mutated-by\":\"webhook\""), "{labels}");
        assert!(labels.contains(&format!("\"run\":\"{pod}\"")), "{labels}");

        // Denial: kubectl prints the webhook's message; nothing is stored.
        let name = format!("denied-{v}");
        let err = fails(
            s.kubectl_stdin(
                kubectl,
                &["apply", "-f", "-"],
                Some(&configmap("hooked", &name, &[("deny", "true")])),
            ),
            "apply denied configmap",
        );
        assert!(
            err.contains(
                "admission webhook \"validate.skiff.test\" denied the request: objects labelled deny=true are not allowed"
            ),
            "{err}"
        );
        let err = fails(
            s.kubectl(kubectl, &["get", "cm", &name, "-n", "hooked"]),
            "get denied configmap",
        );
        assert!(err.contains("not found"), "{err}");

        // Updates are validated too.
        let err = fails(
            s.kubectl(
                kubectl,
                &[
                    "label",
                    "cm",
                    &format!("mutated-{v}"),
                    "-n",
                    "hooked",
                    "deny=true",
                ],
            ),
            "label configmap deny=true",
        );
        assert!(
            err.contains("admission webhook \"validate.skiff.test\" denied the request"),
            "{err}"
        );

        // Warnings.
        let name = format!("warned-{v}");
        let out = s.kubectl_stdin(
            kubectl,
            &["apply", "-f", "-"],
            Some(&configmap("hooked", &name, &[("warn", "yes")])),
        );
        let err = stderr(&out);
        ok(out, "apply warned configmap");
        assert!(
            err.contains("Warning: this object carries the warn label"),
            "{err}"
        );

        // namespaceSelector: a namespace without the label is not hooked.
        let name = format!("plain-{v}");
        ok(
            s.kubectl_stdin(
                kubectl,
                &["apply", "-f", "-"],
                Some(&configmap("plain", &name, &[("deny", "true")])),
            ),
            "apply configmap in plain namespace",
        );
        let yaml = ok(
            s.kubectl(kubectl, &["get", "cm", &name, "-n", "plain", "-o", "yaml"]),
            "get plain configmap",
        );
        assert!(!yaml.contains("mutated-by"), "{yaml}");
        assert!(hooks.reviews_of(&name).is_empty());

        // objectSelector: an object labelled skip is not hooked.
        let name = format!("skipped-{v}");
        ok(
            s.kubectl_stdin(
                kubectl,
                &["apply", "-f", "-"],
                Some(&configmap(
                    "hooked",
                    &name,
                    &[("skip", "1"), ("deny", "true")],
                )),
            ),
            "apply skipped configmap",
        );
        let yaml = ok(
            s.kubectl(kubectl, &["get", "cm", &name, "-n", "hooked", "-o", "yaml"]),
            "get skipped configmap",
        );
        assert!(!yaml.contains("mutated-by"), "{yaml}");
        assert!(hooks.reviews_of(&name).is_empty());
    }

    // Once the configurations are gone, nothing is called.
    ok(
        s.kubectl(
            kubectl,
            &["delete", "validatingwebhookconfiguration", "test-validate"],
        ),
        "delete validating configuration",
    );
    ok(
        s.kubectl(
            kubectl,
            &["delete", "mutatingwebhookconfiguration", "test-mutate"],
        ),
        "delete mutating configuration",
    );
    ok(
        s.kubectl_stdin(
            kubectl,
            &["apply", "-f", "-"],
            Some(&configmap("hooked", "after", &[("deny", "true")])),
        ),
        "apply configmap after deletion",
    );
    assert!(hooks.reviews_of("after").is_empty());
}

#[test]
fn failure_policies_timeouts_and_dry_run() {
    let s = TestServer::start();
    let hooks = Webhooks::start();
    // A port nothing listens on.
    let down_port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let down = format!(
        "    url: https://127.0.0.1:{down_port}/validate\n    caBundle: {}\n",
        hooks.ca_bundle()
    );
    let scenario =
        |name: &str| format!("  objectSelector:\n    matchLabels:\n      scenario: {name}\n");
    let validating = configuration(
        "ValidatingWebhookConfiguration",
        "test-failures",
        &[
            webhook(
                "fail.skiff.test",
                &down,
                "configmaps",
                &format!("{}  failurePolicy: Fail\n", scenario("fail")),
            ),
            webhook(
                "ignore.skiff.test",
                &down,
                "configmaps",
                &format!("{}  failurePolicy: Ignore\n", scenario("ignore")),
            ),
            webhook(
                "slow.skiff.test",
                &url_config(&hooks, "/slow"),
                "configmaps",
                &format!("{}  timeoutSeconds: 1\n", scenario("slow")),
            ),
            webhook(
                "untrusted.skiff.test",
                // The server's certificate does not chain to this CA.
                &format!(
                    "    url: {}\n    caBundle: {}\n",
                    hooks.url("/validate"),
                    BASE64.encode(std::fs::read(s.ca_path()).unwrap())
                ),
                "configmaps",
                &scenario("untrusted"),
            ),
            webhook(
                "dryrun-safe.skiff.test",
                &url_config(&hooks, "/validate"),
                "configmaps",
                &scenario("dryrun-safe"),
            ),
            webhook(
                "protect.skiff.test",
                &url_config(&hooks, "/protect"),
                "configmaps",
                &scenario("protect"),
            )
            .replace("operations: [CREATE, UPDATE]", "operations: [DELETE]"),
            webhook(
                "side-effects.skiff.test",
                &url_config(&hooks, "/validate"),
                "configmaps",
                &scenario("side-effects"),
            )
            .replace("sideEffects: None", "sideEffects: Some"),
        ],
    );
    for kubectl in kubectls() {
        let kubectl = &kubectl;
        let v = kubectl
            .file_name()
            .unwrap()
            .to_string_lossy()
            .replace('.', "-");
        ok(
            s.kubectl_stdin(kubectl, &["apply", "-f", "-"], Some(&validating)),
            "apply configuration",
        );
        let apply = |name: &str, scenario: &str, extra: &[&str]| {
            let mut args = vec!["apply", "-f", "-"];
            args.extend_from_slice(extra);
            s.kubectl_stdin(
                kubectl,
                &args,
                Some(&configmap("default", name, &[("scenario", scenario)])),
            )
        };

        let name = format!("fail-{v}");
        let err = fails(apply(&name, "fail", &[]), "apply with a webhook down");
        let expected = format!(
            "Internal error occurred: failed calling webhook \"fail.skiff.test\": failed to call webhook: Post \"https://127.0.0.1:{down_port}/validate?timeout=10s\": dial tcp 127.0.0.1:{down_port}: connect: connection refused"
        );
        assert!(err.contains(&expected), "{err}");
        fails(
            s.kubectl(kubectl, &["get", "cm", &name]),
            "get refused configmap",
        );

        ok(
            apply(&format!("ignore-{v}"), "ignore", &[]),
            "apply with failurePolicy Ignore",
        );

        let err = fails(
            apply(&format!("slow-{v}"), "slow", &[]),
            "apply with a slow webhook",
        );
        assert!(
            err.contains("failed calling webhook \"slow.skiff.test\"")
                && err.contains("/slow?timeout=1s\": context deadline exceeded"),
            "{err}"
        );

        let err = fails(
            apply(&format!("untrusted-{v}"), "untrusted", &[]),
            "apply with an untrusted webhook certificate",
        );
        assert!(
            err.contains("failed calling webhook \"untrusted.skiff.test\"")
                && err.contains("tls: failed to verify certificate"),
            "{err}"
        );

        // Deletions are validated with the deleted object as oldObject.
        let name = format!("protect-{v}");
        ok(apply(&name, "protect", &[]), "apply protected configmap");
        let err = fails(
            s.kubectl(kubectl, &["delete", "cm", &name]),
            "delete protected configmap",
        );
        assert!(
            err.contains("admission webhook \"protect.skiff.test\" denied the request: this object is protected"),
            "{err}"
        );
        ok(
            s.kubectl(kubectl, &["get", "cm", &name]),
            "get protected configmap",
        );
        let reviews = hooks.reviews_of(&name);
        assert_eq!(reviews.len(), 1, "only the deletion is sent");
        let request = &reviews[0].1["request"];
        assert_eq!(request["operation"], "DELETE");
        assert!(request["object"].is_null());
        assert_eq!(request["oldObject"]["metadata"]["name"], name.as_str());
        assert_eq!(request["options"]["kind"], "DeleteOptions");

        // Dry runs reach webhooks without side effects, with dryRun set ...
        let name = format!("dryrun-safe-{v}");
        ok(
            apply(&name, "dryrun-safe", &["--dry-run=server"]),
            "dry run with sideEffects None",
        );
        let reviews = hooks.reviews_of(&name);
        assert_eq!(reviews.len(), 1);
        assert_eq!(reviews[0].1["request"]["dryRun"], true);
        fails(
            s.kubectl(kubectl, &["get", "cm", &name]),
            "get dry-run configmap",
        );
        // ... and are refused by those with side effects, which are not called.
        let name = format!("side-effects-{v}");
        let err = fails(
            apply(&name, "side-effects", &["--dry-run=server"]),
            "dry run with sideEffects Some",
        );
        assert!(
            err.contains("admission webhook \"side-effects.skiff.test\" does not support dry run"),
            "{err}"
        );
        assert!(hooks.reviews_of(&name).is_empty());
        // Without dry run, the same webhook is called.
        ok(
            apply(&name, "side-effects", &[]),
            "apply with sideEffects Some",
        );
        assert_eq!(hooks.reviews_of(&name).len(), 1);
    }
}

#[test]
fn service_reference_through_endpoints() {
    let s = TestServer::start();
    let hooks = Webhooks::start();
    let kubectl = &kubectls()[0];
    let objects = format!(
        "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: webhooks\n---\napiVersion: v1\nkind: Service\nmetadata:\n  name: hooks\n  namespace: webhooks\nspec:\n  ports:\n  - name: https\n    port: 443\n    targetPort: {port}\n---\napiVersion: v1\nkind: Endpoints\nmetadata:\n  name: hooks\n  namespace: webhooks\nsubsets:\n- addresses:\n  - ip: 127.0.0.1\n  ports:\n  - name: https\n    port: {port}\n",
        port = hooks.port
    );
    ok(
        s.kubectl_stdin(kubectl, &["apply", "-f", "-"], Some(&objects)),
        "apply service and endpoints",
    );
    let service = format!(
        "    service:\n      namespace: webhooks\n      name: hooks\n      path: /mutate\n    caBundle: {}\n",
        hooks.ca_bundle()
    );
    let mutating = configuration(
        "MutatingWebhookConfiguration",
        "test-service",
        &[webhook("service.skiff.test", &service, "configmaps", "")],
    );
    // Runs first (configurations in name order) and asks to see later changes.
    let reinvoked = configuration(
        "MutatingWebhookConfiguration",
        "a-reinvoked",
        &[webhook(
            "reinvoked.skiff.test",
            &url_config(&hooks, "/noop"),
            "configmaps",
            "  reinvocationPolicy: IfNeeded\n",
        )],
    );
    ok(
        s.kubectl_stdin(kubectl, &["apply", "-f", "-"], Some(&mutating)),
        "apply configuration",
    );
    ok(
        s.kubectl_stdin(kubectl, &["apply", "-f", "-"], Some(&reinvoked)),
        "apply reinvoked configuration",
    );
    for kubectl in kubectls() {
        let name = format!(
            "via-service-{}",
            kubectl
                .file_name()
                .unwrap()
                .to_string_lossy()
                .replace('.', "-")
        );
        ok(
            s.kubectl(
                &kubectl,
                &["create", "configmap", &name, "--from-literal=a=b"],
            ),
            "create configmap",
        );
        let labels = ok(
            s.kubectl(
                &kubectl,
                &["get", "cm", &name, "-o", "jsonpath={.metadata.labels}"],
            ),
            "get configmap labels",
        );
        assert_eq!(labels, "{\"mutated-by\":\"webhook\"}");
        // The first webhook saw the object before and after the second one's patch.
        let paths: Vec<String> = hooks
            .reviews_of(&name)
            .into_iter()
            .map(|(path, review)| {
                let label = &review["request"]["object"]["metadata"]["labels"]["mutated-by"];
                format!("{path} {}", label.as_str().unwrap_or("-"))
            })
            .collect();
        assert_eq!(paths, ["/noop -", "/mutate -", "/noop webhook"]);
    }

    // Without endpoints the call fails, naming the service.
    ok(
        s.kubectl(kubectl, &["delete", "endpoints", "hooks", "-n", "webhooks"]),
        "delete endpoints",
    );
    let err = fails(
        s.kubectl(kubectl, &["create", "configmap", "no-endpoints"]),
        "create configmap without endpoints",
    );
    assert!(
        err.contains(
            "failed calling webhook \"service.skiff.test\": failed to call webhook: Post \"https://hooks.webhooks.svc:443/mutate?timeout=10s\": no endpoints available for service \"hooks\""
        ),
        "{err}"
    );

    // An EndpointSlice of the service serves as well.
    let slice = format!(
        "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  name: hooks-abcde\n  namespace: webhooks\n  labels:\n    kubernetes.io/service-name: hooks\naddressType: IPv4\nendpoints:\n- addresses: [127.0.0.1]\n  conditions:\n    ready: true\nports:\n- name: https\n  port: {}\n",
        hooks.port
    );
    ok(
        s.kubectl_stdin(kubectl, &["apply", "-f", "-"], Some(&slice)),
        "apply endpoint slice",
    );
    ok(
        s.kubectl(kubectl, &["create", "configmap", "via-slice"]),
        "create configmap through the slice",
    );
    let labels = ok(
        s.kubectl(
            kubectl,
            &[
                "get",
                "cm",
                "via-slice",
                "-o",
                "jsonpath={.metadata.labels}",
            ],
        ),
        "get configmap labels",
    );
    assert_eq!(labels, "{\"mutated-by\":\"webhook\"}");
}

/// `matchConditions` (CEL over `object`, `oldObject` and `request`): a webhook is called
/// only when every condition holds; a condition that cannot be evaluated fails the call
/// under `failurePolicy: Fail` and skips the webhook under `Ignore`.
#[test]
fn match_conditions_decide_which_requests_reach_a_webhook() {
    let s = TestServer::start();
    let hooks = Webhooks::start();
    let kubectl = kubectls().pop().unwrap();
    let conditions = "  matchConditions:\n  - name: named-guarded\n    expression: \"object.metadata.name.startsWith('guarded-')\"\n  - name: not-by-nobody\n    expression: \"request.userInfo.username != 'nobody'\"\n";
    let broken = "  matchConditions:\n  - name: broken\n    expression: \"object.metadata.nosuchfield == 'x'\"\n";
    let scenario =
        |name: &str| format!("  objectSelector:\n    matchLabels:\n      scenario: {name}\n");
    let validating = configuration(
        "ValidatingWebhookConfiguration",
        "test-conditions",
        &[
            webhook(
                "guarded.skiff.test",
                &url_config(&hooks, "/validate"),
                "configmaps",
                &format!("{}{conditions}", scenario("guarded")),
            ),
            webhook(
                "broken-fail.skiff.test",
                &url_config(&hooks, "/validate"),
                "configmaps",
                &format!("{}{broken}  failurePolicy: Fail\n", scenario("broken-fail")),
            ),
            webhook(
                "broken-ignore.skiff.test",
                &url_config(&hooks, "/validate"),
                "configmaps",
                &format!(
                    "{}{broken}  failurePolicy: Ignore\n",
                    scenario("broken-ignore")
                ),
            ),
        ],
    );
    let create = |yaml: &str| s.kubectl_stdin(&kubectl, &["create", "-f", "-"], Some(yaml));
    ok(create(&validating), "create the configuration");
    // The webhook denies objects labelled deny=true; it sees only guarded-* names.
    let mut refused = String::new();
    for _ in 0..50 {
        let out = create(&configmap(
            "default",
            "guarded-one",
            &[("scenario", "guarded"), ("deny", "true")],
        ));
        refused = stderr(&out);
        if !out.status.success() {
            break;
        }
        // The configuration may not have reached the mirror yet: try with a new name.
        ok(
            s.kubectl(&kubectl, &["delete", "configmap", "guarded-one"]),
            "delete",
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        refused.contains("objects labelled deny=true are not allowed"),
        "{refused}"
    );
    ok(
        create(&configmap(
            "default",
            "plain-one",
            &[("scenario", "guarded"), ("deny", "true")],
        )),
        "a name the condition does not match is not sent to the webhook",
    );
    let err = fails(
        create(&configmap("default", "b1", &[("scenario", "broken-fail")])),
        "a broken condition under Fail",
    );
    assert!(
        err.contains(r#"failed calling webhook "broken-fail.skiff.test": failed to evaluate match condition "broken""#),
        "{err}"
    );
    ok(
        create(&configmap(
            "default",
            "b2",
            &[("scenario", "broken-ignore")],
        )),
        "a broken condition under Ignore",
    );
}
