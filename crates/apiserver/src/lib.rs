//! skiff's Kubernetes API server.
//!
//! Layers, each depending only on those above it:
//! - [`pki`], [`authn`], [`impersonation`], [`authz`], [`rbac`], [`serviceaccount`],
//!   [`bootstrap_token`]: who may talk to the server, as whom, and what they may do (x509,
//!   service account and bootstrap tokens, `Impersonate-*` headers, RBAC with the default
//!   policy); [`ca_pin`]: how a joining node recognises the cluster CA;
//! - [`registry`] and [`kinds`]: the table of served resources and their strategies;
//!   [`crd`]: the rows CustomResourceDefinitions add to it at run time;
//! - [`schema`], [`validation`], [`selector`], [`patch`], [`apply`], [`table`], [`quantity`]:
//!   the API machinery the generic handlers use (OpenAPI definitions, field errors,
//!   selectors, patch formats, server-side printing, resource quantities);
//! - [`storage`]: objects in a [`skiff_store::Store`] under Kubernetes' key layout;
//!   [`cache`]: the reflector mirroring some of them for the server's own controllers;
//! - [`resource_metrics`]: `metrics.k8s.io`, kubelets' usage scraped as metrics-server does;
//! - [`handlers`]: the HTTP layer; [`server`]: TLS, listener and startup.

pub mod admission;
pub mod apply;
pub mod authn;
pub mod authz;
pub mod bootstrap_token;
pub mod ca_pin;
pub mod cache;
pub mod crd;
pub mod csr_signer;
pub mod expressions;
pub mod handlers;
pub mod impersonation;
pub mod kinds;
pub mod metrics;
pub mod omitted_fields;
pub mod patch;
pub mod pki;
pub mod protobuf;
pub mod quantity;
pub mod rbac;
pub mod registry;
pub mod request;
pub mod resource_metrics;
pub mod schema;
pub mod selector;
pub mod server;
pub mod serviceaccount;
pub mod status;
pub mod storage;
pub mod table;
pub mod validation;

pub use kinds::service::allocator::{ServiceRanges, DEFAULT_SERVICE_CIDR};
pub use server::{kubeconfig_path, read_kubeconfig, Server, ServerConfig, ServerError};
