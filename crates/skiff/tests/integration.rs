//! One integration-test binary for this crate: every other file in this folder is a
//! module of it, so the workspace links one test executable per crate, not one per file.

mod build;
mod common;
mod engine;
mod join;
mod kubectl_streaming;
mod kubelet;
mod kubelet_pods;
mod kubelet_resources;
mod namespaces;
mod network;
mod node_lifecycle;
mod registry;
mod server;
mod services;
