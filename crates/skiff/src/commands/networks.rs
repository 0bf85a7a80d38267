//! `skiff network ...`.

use anyhow::{Context as _, Result};
use serde_json::{json, Value};
use skiff_network::{NetworkInspect, NetworkOptions};

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
            internal,
            name,
        } => {
            let mut options = NetworkOptions::user();
            options.internal = internal;
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
                out.push(docker_json(&networking.inspect(name)?));
            }
            println!("{}", serde_json::to_string_pretty(&out)?);
            Ok(())
        }
        NetworkCommand::DnsServe => unreachable!("handled above"),
    }
}

/// A network as `docker network inspect` shows it.
fn docker_json(inspect: &NetworkInspect) -> Value {
    let n = &inspect.network;
    let created = chrono::DateTime::from_timestamp(n.created as i64, 0)
        .map(|t| t.to_rfc3339())
        .unwrap_or_default();
    let containers: serde_json::Map<String, Value> = inspect
        .attachments
        .iter()
        .map(|a| {
            (
                a.container_id.clone(),
                json!({
                    "Name": a.name.clone().unwrap_or_default(),
                    "MacAddress": a.mac,
                    "IPv4Address": format!("{}/{}", a.ip, a.prefix_len),
                    "IPv6Address": "",
                }),
            )
        })
        .collect();
    json!({
        "Name": n.name,
        "Id": n.id,
        "Created": created,
        "Scope": "local",
        "Driver": "bridge",
        "EnableIPv6": false,
        "IPAM": {
            "Driver": "default",
            "Options": {},
            "Config": [{"Subnet": n.subnet.to_string(), "Gateway": n.gateway.to_string()}],
        },
        "Internal": n.internal,
        "Attachable": false,
        "Ingress": false,
        "ConfigOnly": false,
        "Containers": containers,
        "Options": {
            "com.docker.network.bridge.name": n.bridge,
            "com.docker.network.bridge.enable_icc": "true",
        },
        "Labels": {},
    })
}
