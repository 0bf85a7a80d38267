//! `skiff network ...`.

use anyhow::{Context as _, Result};
use skiff_network::NetworkOptions;

use super::containers::print_table;
use super::{for_each_name, Context};
use crate::cli::NetworkCommand;

/// `skiff network`.
pub fn network(ctx: &Context, cmd: NetworkCommand) -> Result<()> {
    if let NetworkCommand::DnsServe = cmd {
        skiff_network::dns::serve_inherited()?;
        return Ok(());
    }
    let engine = ctx.engine()?;
    let networking = engine.networking();
    match cmd {
        NetworkCommand::Create {
            subnet,
            gateway,
            name,
        } => {
            let mut options = NetworkOptions::user();
            options.subnet = subnet
                .map(|s| s.parse().with_context(|| format!("invalid subnet {s:?}")))
                .transpose()?;
            options.gateway = gateway
                .map(|g| g.parse().with_context(|| format!("invalid gateway {g:?}")))
                .transpose()?;
            let network = networking.create_network(&name, &options)?;
            println!("{}", network.id);
            Ok(())
        }
        NetworkCommand::Ls { quiet } => {
            // The default network always exists, as in Docker.
            networking.network(skiff_network::DEFAULT_NETWORK)?;
            let networks = networking.networks()?;
            if quiet {
                for n in networks {
                    println!("{}", n.name);
                }
                return Ok(());
            }
            let rows: Vec<Vec<String>> = networks
                .iter()
                .map(|n| {
                    vec![
                        n.id.chars().take(12).collect(),
                        n.name.clone(),
                        "bridge".into(),
                        "local".into(),
                        n.subnet.to_string(),
                    ]
                })
                .collect();
            print_table(&["NETWORK ID", "NAME", "DRIVER", "SCOPE", "SUBNET"], &rows);
            Ok(())
        }
        NetworkCommand::Rm { names } => for_each_name(&names, |name| {
            networking.remove_network(name)?;
            println!("{name}");
            Ok(())
        }),
        NetworkCommand::Inspect { names } => {
            let mut out = Vec::new();
            for name in &names {
                out.push(serde_json::to_value(networking.inspect(name)?)?);
            }
            println!("{}", serde_json::to_string_pretty(&out)?);
            Ok(())
        }
        NetworkCommand::DnsServe => unreachable!("handled above"),
    }
}
