//! `skiff registry`: wires the flags to skiff-registry.

use anyhow::Result;
use skiff_registry::cli::RegistryArgs;

use super::{absolute, Context};

/// `skiff registry`.
pub fn registry(ctx: &Context, args: RegistryArgs) -> Result<()> {
    let default_root = absolute(&ctx.roots().data).join("registry");
    Ok(skiff_registry::cli::run(&args, &default_root)?)
}
