//! The `skiff` binary: parses the command line and wires it to the library crates.

mod cli;
mod commands;
mod template;
mod terminal;

use clap::Parser;

fn main() {
    let cli = cli::Cli::parse();
    let code = commands::dispatch(cli);
    std::process::exit(code);
}
