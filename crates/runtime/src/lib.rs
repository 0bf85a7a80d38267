//! The OCI runtime layer of skiff.
//!
//! This crate turns a [`ContainerSpec`] (what the engine wants) into an OCI
//! runtime bundle, runs it through youki's `libcontainer` under a
//! per-container [`shim`] process (skiff's conmon/containerd-shim), and offers
//! the operations that act on a running container: [`kill`], [`exec`],
//! [`attach`] and cgroup statistics. It knows nothing about images, names or
//! volumes: those belong to the engine.

pub mod attach;
pub mod capabilities;
pub mod cgroups;
pub mod crilog;
pub mod exec;
pub mod health;
pub mod init;
pub mod kill;
pub mod mounts;
pub mod seccomp;
pub mod shim;
pub mod spec;
pub mod status;

pub use spec::{ContainerSpec, Mount, NamespaceMode, Resources, SeccompMode, User};
pub use status::{ContainerStatus, ExitStatus};
