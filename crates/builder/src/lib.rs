//! skiff's image builder: `skiff build`.
//!
//! A Dockerfile is parsed ([`dockerfile`], pure) into stages; the stages the target
//! needs run in parallel where they do not depend on each other ([`plan`]), and only
//! the target becomes an image ([`build`]); each
//! instruction either changes the image config or produces a layer ([`stage`]): RUN in
//! a transient container of `skiff-engine` over an overlay whose upper dir becomes the
//! layer, COPY and ADD by writing the new files into a directory that becomes the
//! layer. Every layer step is keyed in the [`cache`] on its parent chain, its
//! instruction after substitution and the content hash of what it reads from the
//! [`context`], so an unchanged step costs a file read.
//!
//! State under the data root: `builder/cache/` (step results, whose layers the image
//! store holds against garbage collection until [`prune`]), `builder/cache-mounts/`
//! (RUN `--mount=type=cache` directories) and `builder/tmp/` (overlays of running steps).

#![warn(missing_docs)]

pub mod build;
pub mod cache;
pub mod config;
pub mod context;
pub mod dockerfile;
mod fsutil;
pub mod ignore;
pub mod plan;
pub mod progress;
pub mod shell;
pub mod stage;

pub use build::{build, prune, BuildOptions, Built, Secret};
pub use dockerfile::{parse, Dockerfile, ParseError};
pub use progress::{Progress, ProgressMode};

use std::path::PathBuf;

/// Any error of a build, with what the user should look at.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// The Dockerfile has a syntax error.
    #[error(transparent)]
    Parse(#[from] ParseError),
    /// Variable substitution failed in an instruction.
    #[error("{file}:{line}: {instruction}: {source}")]
    Substitution {
        /// The Dockerfile.
        file: String,
        /// Its line.
        line: usize,
        /// The instruction keyword and arguments.
        instruction: String,
        /// Cause.
        #[source]
        source: shell::ShellError,
    },
    /// An instruction is valid syntax but cannot be carried out.
    #[error("{file}:{line}: {instruction}: {message}")]
    Instruction {
        /// The Dockerfile.
        file: String,
        /// Its line.
        line: usize,
        /// The instruction as written.
        instruction: String,
        /// What went wrong and what to do.
        message: String,
    },
    /// A RUN command failed.
    #[error(
        "{file}:{line}: process \"{command}\" did not complete successfully: exit code: {code}"
    )]
    RunFailed {
        /// The Dockerfile.
        file: String,
        /// Its line.
        line: usize,
        /// The command as run.
        command: String,
        /// Its exit code.
        code: i32,
    },
    /// `--target` names no stage.
    #[error("target stage {0:?} could not be found")]
    NoTarget(String),
    /// Reading the context failed.
    #[error(transparent)]
    Context(#[from] context::ContextError),
    /// The image store failed.
    #[error(transparent)]
    Store(#[from] skiff_images::StoreError),
    /// The engine failed to run a step.
    #[error(transparent)]
    Engine(#[from] skiff_engine::EngineError),
    /// Local I/O.
    #[error("{what} {path}: {source}")]
    Io {
        /// What was being done.
        what: &'static str,
        /// The path.
        path: PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// A platform this host cannot build for (`FROM --platform`, `--platform`).
    #[error("skiff build: {message}")]
    Platform {
        /// Which platform, where, and what to do.
        message: String,
    },
    /// A stage this one needs failed.
    #[error("stage {0} failed")]
    DependencyFailed(String),
}

impl BuildError {
    pub(crate) fn io(
        what: &'static str,
        path: impl Into<PathBuf>,
    ) -> impl FnOnce(std::io::Error) -> Self {
        let path = path.into();
        move |source| BuildError::Io { what, path, source }
    }
}
