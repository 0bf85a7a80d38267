//! skiff's OCI distribution registry: `skiff registry`.
//!
//! Layers, from the wire inwards (each depends only on the ones below it):
//! - [`server`]: listener, TLS, HTTP/1.1 and HTTP/2;
//! - [`http`]: request paths parsed into a [`http::Route`], access checks, thin handlers;
//! - [`auth`]: htpasswd users, bearer tokens, anonymous pull;
//! - [`core`]: what each distribution operation means (digest checks, reference checks,
//!   pagination, referrers), with no HTTP in it;
//! - [`storage`]: the [`storage::Storage`] trait and its filesystem implementation.
//!
//! Digests, descriptors and media types are skiff-images' own.

#![warn(missing_docs)]

pub mod auth;
pub mod cli;
pub mod core;
pub mod errcode;
pub mod http;
pub mod name;
pub mod server;
pub mod storage;

pub use server::{Config, Server, ServerError};

/// Any error of this crate, for callers that do not care which module failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// From starting the server.
    #[error(transparent)]
    Server(#[from] ServerError),
    /// The async runtime cannot start.
    #[error("cannot start the async runtime: {0}")]
    Runtime(#[source] std::io::Error),
}
