//! One module per group of verbs; each only translates flags into library calls.

mod agent;
mod build;
mod containers;
mod controller_manager;
mod exec;
mod images;
mod inspect;
mod networks;
mod registry;
mod run;
mod scheduler;
mod server;
mod token;
mod volumes;

use std::path::PathBuf;

use anyhow::Result;
use skiff_engine::{Engine, EngineError, Roots};

use crate::cli::{Cli, Command};

/// An error carrying the exit code skiff must end with.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct Exit {
    /// Exit code.
    pub code: i32,
    /// What to print (nothing when empty).
    pub message: String,
}

impl Exit {
    /// Ends with `code` and no message (the container's own exit code).
    pub fn code(code: i32) -> anyhow::Error {
        Exit {
            code,
            message: String::new(),
        }
        .into()
    }
}

/// The global state every command needs.
pub struct Context {
    /// `--root`.
    pub root: Option<PathBuf>,
}

impl Context {
    /// The state roots.
    pub fn roots(&self) -> Roots {
        Roots::new(self.root.as_deref())
    }

    /// Arguments that make a child skiff process use the same roots.
    pub fn global_args(&self) -> Vec<String> {
        match &self.root {
            Some(r) => vec!["--root".into(), absolute(r).display().to_string()],
            None => Vec::new(),
        }
    }

    /// Opens the engine.
    pub fn engine(&self) -> Result<Engine> {
        let exe = std::env::current_exe()?;
        let mut roots = self.roots();
        roots.data = absolute(&roots.data);
        roots.run = absolute(&roots.run);
        Ok(Engine::open(roots, exe, self.global_args())?)
    }
}

fn absolute(p: &std::path::Path) -> PathBuf {
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        std::env::current_dir().unwrap_or_default().join(p)
    }
}

fn init_tracing(level: &str) {
    let filter = tracing_subscriber::EnvFilter::try_new(level)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .try_init();
}

/// Runs the command; returns the process exit code.
pub fn dispatch(cli: Cli) -> i32 {
    init_tracing(&cli.log_level);
    if let Command::Shim { config } = &cli.command {
        skiff_runtime::shim::main(config);
    }
    let ctx = Context {
        root: cli.root.clone(),
    };
    let result = match cli.command {
        Command::Run(args) => run::run(&ctx, args),
        Command::Create(args) => run::create(&ctx, args),
        Command::Start(args) => containers::start(&ctx, args),
        Command::Ps(args) => containers::ps(&ctx, args),
        Command::Logs(args) => containers::logs(&ctx, args),
        Command::Stop(args) => containers::stop(&ctx, args),
        Command::Restart(args) => containers::restart(&ctx, args),
        Command::Kill(args) => containers::kill(&ctx, args),
        Command::Rm(args) => containers::rm(&ctx, args),
        Command::Wait(args) => containers::wait(&ctx, args),
        Command::Attach(args) => run::attach(&ctx, args),
        Command::Exec(args) => exec::exec(&ctx, args),
        Command::Inspect(args) => inspect::inspect(&ctx, args),
        Command::Port(args) => containers::port(&ctx, args),
        Command::Images(args) => images::images(&ctx, args),
        Command::Pull(args) => images::pull(&ctx, args),
        Command::Push(args) => images::push(&ctx, args),
        Command::Tag(args) => images::tag(&ctx, args),
        Command::Rmi(args) => images::rmi(&ctx, args),
        Command::Load(args) => images::load(&ctx, args),
        Command::Save(args) => images::save(&ctx, args),
        Command::History(args) => images::history(&ctx, args),
        Command::Build(args) => build::build(&ctx, args),
        Command::Builder(cmd) => build::builder(&ctx, cmd),
        Command::Login(args) => images::login(&ctx, args),
        Command::Registry(args) => registry::registry(&ctx, args),
        Command::Volume(cmd) => volumes::volume(&ctx, cmd),
        Command::Network(cmd) => networks::network(&ctx, cmd),
        Command::System(cmd) => containers::system(&ctx, cmd),
        Command::Server(args) => server::server(&ctx, args),
        Command::Kubeconfig => server::kubeconfig(&ctx),
        Command::Agent(args) => agent::agent(&ctx, args),
        Command::Token(cmd) => token::token(&ctx, cmd),
        Command::Scheduler(args) => scheduler::scheduler(&ctx, args),
        Command::ControllerManager(args) => controller_manager::controller_manager(&ctx, args),
        Command::ContainerCleanup { id } => ctx
            .engine()
            .and_then(|e| e.cleanup(&id).map_err(Into::into)),
        Command::Shim { .. } => unreachable!("handled above"),
    };
    match result {
        Ok(()) => 0,
        Err(err) => {
            if let Some(exit) = err.downcast_ref::<Exit>() {
                if !exit.message.is_empty() {
                    eprintln!("Error: {}", exit.message);
                }
                return exit.code;
            }
            let code = err
                .downcast_ref::<EngineError>()
                .map(EngineError::exit_code)
                .unwrap_or(125);
            eprintln!("Error: {err:#}");
            code
        }
    }
}

/// Prints errors for each failed name and fails at the end, as Docker's multi-name verbs do.
pub fn for_each_name(names: &[String], mut f: impl FnMut(&str) -> Result<()>) -> Result<()> {
    let mut failed = false;
    for name in names {
        if let Err(e) = f(name) {
            eprintln!("Error: {e:#}");
            failed = true;
        }
    }
    if failed {
        Err(Exit::code(1))
    } else {
        Ok(())
    }
}
