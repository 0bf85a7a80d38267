//! One integration-test binary for this crate: every other file in this folder is a
//! module of it, so the workspace links one test executable per crate, not one per file.

mod build;
mod common;
mod conformance_node;
mod engine;
mod ephemeral_containers;
mod gateway;
mod ingress;
mod join;
mod kubectl_streaming;
mod kubelet;
mod kubelet_pods;
mod kubelet_pressure;
mod kubelet_resources;
mod kubelet_security;
mod multi_node;
mod namespaces;
mod network;
mod network_policy;
mod node_lifecycle;
mod proxy_subresources;
mod registry;
mod resource_metrics;
mod scheduling;
mod server;
mod server_restart;
mod service_traffic;
mod services;
mod static_pods;
mod storage;
