//! `build`: flags into [`skiff_builder::BuildOptions`].

use std::io::IsTerminal;

use anyhow::{bail, Result};
use skiff_builder::{BuildOptions, ProgressMode};

use super::Context;
use crate::cli::{BuildArgs, BuilderCommand};

/// `skiff build`.
pub fn build(ctx: &Context, args: BuildArgs) -> Result<()> {
    let mut build_args = std::collections::BTreeMap::new();
    for kv in &args.build_args {
        match kv.split_once('=') {
            Some((k, v)) => build_args.insert(k.to_string(), v.to_string()),
            // `--build-arg KEY` takes the caller's value, as Docker does.
            None => match std::env::var(kv) {
                Ok(v) => build_args.insert(kv.clone(), v),
                Err(_) => continue,
            },
        };
    }
    let host_network = match args.network.as_str() {
        "none" | "default" => false,
        "host" => true,
        other => bail!("invalid --network {other:?}: use none or host"),
    };
    let mode = if args.quiet {
        ProgressMode::Quiet
    } else {
        match args.progress.as_str() {
            "plain" => ProgressMode::Plain,
            "tty" => ProgressMode::Tty,
            // As BuildKit: the live display on a terminal, lines in a log or a pipe.
            "auto" if std::io::stderr().is_terminal() => ProgressMode::Tty,
            "auto" => ProgressMode::Plain,
            other => bail!("invalid --progress {other:?}: use auto, plain or tty"),
        }
    };
    let opts = BuildOptions {
        context: args.context,
        dockerfile: args.file,
        tags: args.tags,
        build_args,
        target: args.target,
        no_cache: args.no_cache,
        secrets: args
            .secret
            .iter()
            .map(|s| s.parse())
            .collect::<Result<_, String>>()
            .map_err(anyhow::Error::msg)?,
        host_network,
        platform: args.platform,
    };
    let engine = ctx.engine()?;
    let built = skiff_builder::build(&engine, &opts, Box::new(std::io::stderr()), mode)?;
    if args.quiet {
        println!("{}", built.id);
    }
    Ok(())
}

/// `skiff builder prune`.
pub fn builder(ctx: &Context, cmd: BuilderCommand) -> Result<()> {
    match cmd {
        BuilderCommand::Prune { force: _ } => {
            let engine = ctx.engine()?;
            let reclaimed = skiff_builder::prune(&engine)?;
            println!(
                "Total reclaimed space: {}",
                super::images::human_size(reclaimed)
            );
            Ok(())
        }
    }
}
