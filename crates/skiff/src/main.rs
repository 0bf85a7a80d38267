//! The `skiff` binary: parses the command line and wires it to the library crates.

mod cli;
mod commands;
mod template;
mod terminal;

use clap::Parser;

use cli::Command;

fn main() {
    let cli = cli::Cli::parse();
    if prints_a_report(&cli.command) {
        // `skiff ps | head` ends quietly when the reader goes away, as other CLIs do
        // (Rust ignores SIGPIPE, and printing to a closed pipe would panic).
        // SAFETY: restoring a default disposition before any thread exists.
        unsafe {
            libc::signal(libc::SIGPIPE, libc::SIG_DFL);
        }
    }
    let code = commands::dispatch(cli);
    std::process::exit(code);
}

/// Commands that only print what they read: no daemon, no stream to a container.
fn prints_a_report(command: &Command) -> bool {
    matches!(
        command,
        Command::Ps(_)
            | Command::Logs(_)
            | Command::Inspect(_)
            | Command::Images(_)
            | Command::History(_)
            | Command::Volume(_)
            | Command::Network(_)
            | Command::Kubeconfig
    )
}
