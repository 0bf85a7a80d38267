//! Starting the API server: PKI, store, bootstrap objects, and the HTTPS listener.
//!
//! Threads and trust: one tokio runtime serves every connection; TLS (rustls) verifies client
//! certificates against the cluster CA but lets certificate-less clients connect, so that the
//! health endpoints stay reachable anonymously; everything else requires a verified
//! certificate. Startup does only what readiness needs (open the store, ensure the initial
//! namespaces); OpenAPI schemas are generated on first use.

use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use serde_json::json;
use skiff_store::{EmbeddedStore, EncryptingStore, EtcdStore, KeyRing, Store, StoreError};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio_rustls::TlsAcceptor;

use crate::authn::UserInfo;
use crate::authz::node::NodeAuthorizer;
use crate::authz::node_graph::NodeGraph;
use crate::authz::{Chain, Masters, PublicInfo};
use crate::cache::Reflector;
use crate::crd;
use crate::handlers::{Api, Security};
use crate::kinds::service::allocator::ServiceRanges;
use crate::kinds::{INITIAL_NAMESPACES, RBAC, REGISTRY, RESOURCES, SYSTEM_PRIORITY_CLASSES};
use crate::pki::{self, Pki, PkiError};
use crate::rbac::{self, rbac_defs, Rbac};
use crate::registry::{Registry, ResourceDef};
use crate::serviceaccount::{self, TokenError, TokenIssuer};
use crate::storage::{Storage, SECRETS_PREFIX};

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// The PKI could not be created or loaded.
    #[error(transparent)]
    Pki(#[from] PkiError),
    /// The store could not be opened.
    #[error("opening the store: {0}")]
    Store(#[from] StoreError),
    /// TLS could not be configured.
    #[error("configuring TLS: {0}")]
    Tls(String),
    /// The listening socket could not be bound.
    #[error("listening on {address}: {source}")]
    Bind {
        /// The address.
        address: SocketAddr,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// The admin kubeconfig does not exist yet.
    #[error("{0} does not exist: start `skiff server` once to create it")]
    NoKubeconfig(PathBuf),
    /// Bootstrapping the initial objects failed.
    #[error("creating the initial objects: {0}")]
    Bootstrap(String),
    /// The service account signing key could not be loaded.
    #[error(transparent)]
    Token(#[from] TokenError),
}

/// How to run the server.
#[derive(Clone, Debug)]
pub struct ServerConfig {
    /// The server's data directory (`DIR/server`): TLS, kubeconfig, encryption keys and the
    /// embedded store live here.
    pub data_dir: PathBuf,
    /// The address to listen on.
    pub bind_address: IpAddr,
    /// The port (0 picks a free one).
    pub port: u16,
    /// etcd endpoints (`http://127.0.0.1:2379`); the embedded store when empty.
    pub datastore_endpoints: Vec<String>,
    /// Where Services' cluster IPs come from (`--service-cidr`; its first address is the
    /// `kubernetes` Service's).
    pub service_cidr: ipnet::Ipv4Net,
    /// More names and addresses the serving certificate covers, besides `localhost`,
    /// loopback, the host name and `bind_address` (`--tls-san`, the node's address).
    pub tls_sans: Vec<String>,
    /// The address the `kubernetes` Service leads to (kube-apiserver's
    /// `--advertise-address`): `bind_address` when that is a single address, else this,
    /// else 127.0.0.1.
    pub advertise_address: Option<IpAddr>,
}

/// Where the admin kubeconfig of a data directory is.
pub fn kubeconfig_path(data_dir: &Path) -> PathBuf {
    data_dir.join("admin.kubeconfig")
}

/// Reads the admin kubeconfig of a data directory.
pub fn read_kubeconfig(data_dir: &Path) -> Result<String, ServerError> {
    let path = kubeconfig_path(data_dir);
    std::fs::read_to_string(&path).map_err(|_| ServerError::NoKubeconfig(path))
}

/// A running API server; dropping it stops accepting connections.
#[derive(Debug)]
pub struct Server {
    address: SocketAddr,
    kubeconfig: PathBuf,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Server {
    /// Starts the server: loads or creates the PKI, opens the store, creates the initial
    /// namespaces, writes the admin kubeconfig and listens. Must run inside a tokio runtime.
    pub async fn start(config: ServerConfig) -> Result<Server, ServerError> {
        let tls_dir = config.data_dir.join("tls");
        let mut sans = vec![config.bind_address.to_string()];
        sans.extend(config.tls_sans.iter().cloned());
        sans.extend(config.advertise_address.map(|a| a.to_string()));
        // In-cluster clients dial the `kubernetes` Service's cluster IP.
        sans.extend(
            ServiceRanges::new(config.service_cidr)
                .nth(1)
                .map(|ip| ip.to_string()),
        );
        let pki = tokio::task::spawn_blocking(move || Pki::load_or_create(&tls_dir, &sans))
            .await
            .map_err(|e| ServerError::Tls(e.to_string()))??;

        let store = open_store(&config).await?;
        let address = SocketAddr::new(config.bind_address, config.port);
        let listener = TcpListener::bind(address)
            .await
            .map_err(|source| ServerError::Bind { address, source })?;
        let address = listener
            .local_addr()
            .map_err(|source| ServerError::Bind { address, source })?;

        let client_host = match config.bind_address {
            IpAddr::V4(ip) if ip.is_unspecified() => "127.0.0.1".to_owned(),
            IpAddr::V6(ip) if ip.is_unspecified() => "[::1]".to_owned(),
            IpAddr::V6(ip) => format!("[{ip}]"),
            IpAddr::V4(ip) => ip.to_string(),
        };
        let server_address = format!("{client_host}:{}", address.port());
        let kubeconfig = kubeconfig_path(&config.data_dir);
        pki::write_kubeconfig(
            &kubeconfig,
            &pki.admin_kubeconfig(&format!("https://{server_address}")),
        )?;

        let storage = Storage::new(store);
        let key_path = config.data_dir.join("service-account.key");
        let tokens = tokio::task::spawn_blocking(move || TokenIssuer::load_or_create(&key_path))
            .await
            .map_err(|e| ServerError::Bootstrap(e.to_string()))??;
        bootstrap(&storage).await?;
        let service_ranges = ServiceRanges::new(config.service_cidr);
        let advertised = match (config.bind_address, config.advertise_address) {
            (a, _) if !a.is_unspecified() => a,
            (_, Some(a)) => a,
            (a, None) => a,
        };
        bootstrap_kubernetes_service(&storage, &service_ranges, advertised, address.port()).await?;
        let mut mirrored: Vec<&'static ResourceDef> = rbac_defs().to_vec();
        // What RBAC, authentication and admission read on every request: like
        // kube-apiserver's informers, so that a write does not cost a store read per plugin.
        for kind in [
            "Namespace",
            "ServiceAccount",
            "ConfigMap",
            "LimitRange",
            "ResourceQuota",
        ] {
            mirrored.extend(REGISTRY.by_kind("", "v1", kind));
        }
        for kind in [
            "MutatingWebhookConfiguration",
            "ValidatingWebhookConfiguration",
            "ValidatingAdmissionPolicy",
            "ValidatingAdmissionPolicyBinding",
        ] {
            mirrored.extend(REGISTRY.by_kind("admissionregistration.k8s.io", "v1", kind));
        }
        mirrored.push(crd::crd_def());
        mirrored.extend(REGISTRY.by_kind("certificates.k8s.io", "v1", "CertificateSigningRequest"));
        mirrored.extend(REGISTRY.by_kind("scheduling.k8s.io", "v1", "PriorityClass"));
        mirrored.extend(REGISTRY.by_kind("node.k8s.io", "v1", "RuntimeClass"));
        let reflector = Reflector::start(storage.clone(), mirrored).await;
        // Each server has its own registry: the custom rows depend on its store.
        let registry: &'static Registry = Box::leak(Box::new(Registry::new(RESOURCES)));
        let mut crd_rows = crd::controller::RowCache::new();
        crd::controller::reconcile(&storage, &reflector, registry, &mut crd_rows).await;
        let rbac = Arc::new(Rbac::new(reflector.clone()));
        let node_graph = NodeGraph::start(storage.clone()).await;
        let authorizer = Chain(vec![
            Box::new(PublicInfo),
            Box::new(Masters),
            Box::new(NodeAuthorizer::new(
                node_graph,
                Some(reflector.clone()),
                rbac::bootstrap::node_rules(),
                Box::new(rbac.clone()),
            )),
        ]);
        let security = Security {
            rbac,
            reflector: reflector.clone(),
            tokens: Arc::new(tokens),
        };
        let kubelet_client =
            Arc::new(crate::handlers::kubelet_client_config(&pki).map_err(ServerError::Tls)?);
        let resource_metrics = Arc::new(crate::resource_metrics::MetricsStore::default());
        let api = Arc::new(
            Api::new(
                storage.clone(),
                registry,
                Box::new(authorizer),
                security,
                server_address,
            )
            .with_kubelet_client(kubelet_client.clone())
            .with_resource_metrics(resource_metrics.clone())
            .with_service_ranges(service_ranges),
        );
        let controllers = [
            tokio::spawn(serviceaccount::run_controller(
                storage.clone(),
                reflector.clone(),
                pki.ca.cert_pem.clone(),
            )),
            tokio::spawn(crd::controller::run(
                storage.clone(),
                reflector.clone(),
                registry,
                crd_rows,
            )),
            tokio::spawn(crate::csr_signer::run(
                storage.clone(),
                reflector.clone(),
                pki.ca.clone(),
            )),
            tokio::spawn(rbac::run_aggregation(storage.clone(), reflector)),
            tokio::spawn(crate::resource_metrics::run(
                storage.clone(),
                kubelet_client,
                resource_metrics,
                crate::resource_metrics::resolution(),
            )),
            tokio::spawn(crate::admission::run_quota_controller(storage)),
        ];

        let acceptor = TlsAcceptor::from(Arc::new(tls_config(&pki)?));
        let (shutdown, mut stop) = oneshot::channel();
        let task = tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = &mut stop => {
                        controllers.iter().for_each(|c| c.abort());
                        break;
                    }
                    accepted = listener.accept() => {
                        let Ok((tcp, _)) = accepted else { continue };
                        let _ = tcp.set_nodelay(true);
                        tokio::spawn(serve_connection(api.clone(), acceptor.clone(), tcp));
                    }
                }
            }
        });
        Ok(Server {
            address,
            kubeconfig,
            shutdown: Some(shutdown),
            task: Some(task),
        })
    }

    /// The address the server listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.address
    }

    /// The admin kubeconfig the server wrote.
    pub fn kubeconfig_path(&self) -> &Path {
        &self.kubeconfig
    }

    /// Stops accepting connections and waits for the accept loop to end.
    pub async fn stop(mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
    }
}

async fn open_store(config: &ServerConfig) -> Result<Arc<dyn Store>, ServerError> {
    let inner: Arc<dyn Store> = if config.datastore_endpoints.is_empty() {
        let dir = config.data_dir.join("db");
        let store = tokio::task::spawn_blocking(move || EmbeddedStore::open(dir))
            .await
            .map_err(|e| ServerError::Store(StoreError::backend(e.to_string())))??;
        Arc::new(store)
    } else {
        Arc::new(EtcdStore::connect(&config.datastore_endpoints).await?)
    };
    let keys = KeyRing::load_or_create(config.data_dir.join("encryption-keys"))?;
    Ok(Arc::new(EncryptingStore::new(
        inner,
        keys,
        [SECRETS_PREFIX.to_owned()],
    )))
}

/// Creates what every cluster starts with when missing: the initial namespaces, the
/// default RBAC policy, the system priority classes and API Priority and Fairness'
/// FlowSchemas and PriorityLevelConfigurations (each through its strategy's
/// defaults, as kube-apiserver's post-start hooks do).
async fn bootstrap(storage: &Storage) -> Result<(), ServerError> {
    let mut objects: Vec<(&str, &str, serde_json::Value)> = INITIAL_NAMESPACES
        .iter()
        .map(|name| {
            (
                "",
                "Namespace",
                json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}),
            )
        })
        .collect();
    objects.extend(
        rbac::bootstrap::cluster_roles()
            .into_iter()
            .map(|r| (RBAC, "ClusterRole", r)),
    );
    objects.extend(
        rbac::bootstrap::cluster_role_bindings()
            .into_iter()
            .map(|b| (RBAC, "ClusterRoleBinding", b)),
    );
    objects.extend(
        SYSTEM_PRIORITY_CLASSES
            .iter()
            .map(|(name, value, description)| {
                (
                    "scheduling.k8s.io",
                    "PriorityClass",
                    json!({"apiVersion": "scheduling.k8s.io/v1", "kind": "PriorityClass",
                "metadata": {"name": name}, "value": value, "description": description}),
                )
            }),
    );
    objects.extend(
        crate::kinds::flowcontrol::bootstrap_objects()
            .into_iter()
            .map(|(kind, obj)| (crate::kinds::flowcontrol::GROUP, kind, obj)),
    );
    for (group, kind, mut obj) in objects {
        let def = REGISTRY
            .by_kind(group, "v1", kind)
            .ok_or_else(|| ServerError::Bootstrap(format!("{kind} is not served")))?;
        let name = obj["metadata"]["name"].as_str().unwrap_or("").to_owned();
        if storage
            .get(def, "", &name)
            .await
            .map_err(|e| ServerError::Bootstrap(e.message))?
            .is_some()
        {
            continue;
        }
        obj["metadata"]["uid"] = json!(uuid::Uuid::new_v4().to_string());
        obj["metadata"]["creationTimestamp"] = json!(crate::handlers::now_rfc3339());
        if def.generation {
            obj["metadata"]["generation"] = json!(1);
        }
        def.strategy.prepare_for_create(&mut obj);
        def.strategy.default(&mut obj);
        match storage.create(def, "", &name, obj).await {
            Ok(_) => {}
            Err(e) if e.reason == "AlreadyExists" => {}
            Err(e) => return Err(ServerError::Bootstrap(e.message)),
        }
    }
    Ok(())
}

/// The `kubernetes` Service in `default` (the range's first address, port 443) and its
/// endpoints (this server), unless a Service of that name exists.
async fn bootstrap_kubernetes_service(
    storage: &Storage,
    ranges: &ServiceRanges,
    bind_address: IpAddr,
    port: u16,
) -> Result<(), ServerError> {
    let err = |e: crate::status::ApiError| ServerError::Bootstrap(e.message);
    let def = |group, kind| {
        REGISTRY
            .by_kind(group, "v1", kind)
            .ok_or_else(|| ServerError::Bootstrap(format!("{kind} is not served")))
    };
    let services = def("", "Service")?;
    if storage
        .get(services, "default", "kubernetes")
        .await
        .map_err(err)?
        .is_some()
    {
        return Ok(());
    }
    let ip = ranges
        .nth(1)
        .ok_or_else(|| ServerError::Bootstrap("the service CIDR is too small".into()))?;
    let endpoint = match bind_address {
        IpAddr::V4(a) if a.is_unspecified() => std::net::Ipv4Addr::LOCALHOST.to_string(),
        a => a.to_string(),
    };
    let meta = |labels: serde_json::Value| {
        json!({"name": "kubernetes", "namespace": "default", "labels": labels,
            "uid": uuid::Uuid::new_v4().to_string(),
            "creationTimestamp": crate::handlers::now_rfc3339()})
    };
    let objects = [
        (
            services,
            json!({"apiVersion": "v1", "kind": "Service",
            "metadata": meta(json!({"component": "apiserver", "provider": "kubernetes"})),
            "spec": {"type": "ClusterIP", "clusterIP": ip.to_string(), "clusterIPs": [ip.to_string()],
                "ipFamilies": ["IPv4"], "ipFamilyPolicy": "SingleStack", "sessionAffinity": "None",
                "internalTrafficPolicy": "Cluster",
                "ports": [{"name": "https", "port": 443, "protocol": "TCP", "targetPort": port}]},
            "status": {"loadBalancer": {}}}),
        ),
        (
            def("", "Endpoints")?,
            json!({"apiVersion": "v1", "kind": "Endpoints",
            "metadata": meta(json!({"endpointslice.kubernetes.io/skip-mirror": "true"})),
            "subsets": [{"addresses": [{"ip": endpoint}],
                "ports": [{"name": "https", "port": port, "protocol": "TCP"}]}]}),
        ),
        (
            def("discovery.k8s.io", "EndpointSlice")?,
            json!({"apiVersion": "discovery.k8s.io/v1",
            "kind": "EndpointSlice",
            "metadata": meta(json!({"kubernetes.io/service-name": "kubernetes",
                "endpointslice.kubernetes.io/managed-by": "skiff-apiserver"})),
            "addressType": "IPv4",
            "endpoints": [{"addresses": [endpoint], "conditions": {"ready": true}}],
            "ports": [{"name": "https", "port": port, "protocol": "TCP"}]}),
        ),
    ];
    for (def, obj) in objects {
        match storage.create(def, "default", "kubernetes", obj).await {
            Ok(_) => {}
            Err(e) if e.reason == "AlreadyExists" => {}
            Err(e) => return Err(err(e)),
        }
    }
    Ok(())
}

fn tls_config(pki: &Pki) -> Result<rustls::ServerConfig, ServerError> {
    let tls = |e: &dyn std::fmt::Display| ServerError::Tls(e.to_string());
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    let ca = CertificateDer::from_pem_slice(pki.ca.cert_pem.as_bytes()).map_err(|e| tls(&e))?;
    roots.add(ca.clone()).map_err(|e| tls(&e))?;
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .allow_unauthenticated()
        .build()
        .map_err(|e| tls(&e))?;
    let serving =
        CertificateDer::from_pem_slice(pki.serving.cert_pem.as_bytes()).map_err(|e| tls(&e))?;
    let key = PrivateKeyDer::from_pem_slice(pki.serving.key_pem.as_bytes()).map_err(|e| tls(&e))?;
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| tls(&e))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(vec![serving, ca], key)
        .map_err(|e| tls(&e))?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}

async fn serve_connection(api: Arc<Api>, acceptor: TlsAcceptor, tcp: tokio::net::TcpStream) {
    let tls = match acceptor.accept(tcp).await {
        Ok(tls) => tls,
        Err(err) => {
            tracing::debug!("TLS handshake failed: {err}");
            return;
        }
    };
    let user = tls
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|certs| certs.first())
        .and_then(|cert| match UserInfo::from_certificate(cert) {
            Ok(user) => Some(user),
            Err(err) => {
                tracing::debug!("client certificate rejected: {err}");
                None
            }
        });
    let service = service_fn(move |request| {
        let api = api.clone();
        let user = user.clone();
        async move { Ok::<_, Infallible>(api.serve(request, user).await) }
    });
    if let Err(err) = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
        .serve_connection_with_upgrades(TokioIo::new(tls), service)
        .await
    {
        tracing::debug!("connection ended: {err}");
    }
}
