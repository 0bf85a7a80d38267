//! One integration-test binary for this crate: every other file in this folder is a
//! module of it, so the workspace links one test executable per crate, not one per file.

mod common;
mod conformance_apps;
mod kubectl;
mod workloads;
