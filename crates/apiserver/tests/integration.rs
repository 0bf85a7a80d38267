//! One integration-test binary for this crate: every other file in this folder is a
//! module of it, so the workspace links one test executable per crate, not one per file.

mod bootstrap_tokens;
mod common;
mod kubectl;
mod kubectl_admission;
mod kubectl_admission_policy;
mod kubectl_certificates;
mod kubectl_crd;
mod kubectl_crd_conversion;
mod kubectl_deletion;
mod kubectl_metrics;
mod kubectl_node_authorizer;
mod kubectl_rbac;
mod kubectl_server_side_apply;
mod kubectl_typed;
mod kubectl_versions;
mod kubectl_webhooks;
mod kubectl_workflows;
mod pod_binding;
mod python_client;
mod python_conformance;
mod python_crd;
