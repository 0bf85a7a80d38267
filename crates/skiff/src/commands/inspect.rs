//! `skiff inspect`: containers, images and volumes as Docker-shaped JSON.

use anyhow::{bail, Result};
use serde_json::{json, Value};
use skiff_engine::{Container, Engine};
use skiff_runtime::ContainerStatus;

use super::{Context, Exit};
use crate::cli::InspectArgs;
use crate::template;

/// The container as `docker inspect` shows it.
pub fn container_json(engine: &Engine, c: &Container) -> Value {
    let r = &c.record;
    let (running, pid, exit_code, oom, error, finished) = match &c.status {
        ContainerStatus::Running { pid } => (true, *pid, 0, false, String::new(), None),
        ContainerStatus::Exited(e) => (
            false,
            0,
            e.exit_code,
            e.oom_killed,
            e.error.clone().unwrap_or_default(),
            Some(e.finished_at),
        ),
        _ => (false, 0, 0, false, String::new(), None),
    };
    let zero = "0001-01-01T00:00:00Z".to_string();
    json!({
        "Id": r.id,
        "Created": r.created.to_rfc3339(),
        "Path": r.spec.args.first().cloned().unwrap_or_default(),
        "Args": r.spec.args.iter().skip(1).collect::<Vec<_>>(),
        "State": {
            "Status": c.status.docker_state(),
            "Running": running,
            "Paused": false,
            "Restarting": false,
            "OOMKilled": oom,
            "Dead": matches!(c.status, ContainerStatus::Dead),
            "Pid": pid,
            "ExitCode": exit_code,
            "Error": error,
            "StartedAt": c.started_at.map(|t| t.to_rfc3339()).unwrap_or_else(|| zero.clone()),
            "Health": c.health,
            "FinishedAt": finished.map(|t| t.to_rfc3339()).unwrap_or(zero),
        },
        "Image": r.image_id,
        "ResolvConfPath": c.dir.join("resolv.conf"),
        "HostnamePath": c.dir.join("hostname"),
        "HostsPath": c.dir.join("hosts"),
        "LogPath": c.dir.join("container.log"),
        "Name": format!("/{}", r.name),
        "Driver": "overlay",
        "Platform": "linux",
        "HostConfig": {
            "Binds": r.request.volumes,
            "NetworkMode": r.network.docker_name(),
            "PortBindings": port_bindings(r),
            "PublishAllPorts": r.request.publish_all,
            "AutoRemove": r.request.auto_remove,
            "CapAdd": r.request.cap_add,
            "CapDrop": r.request.cap_drop,
            "Privileged": r.request.privileged,
            "ReadonlyRootfs": r.request.read_only,
            "SecurityOpt": r.request.security_opt,
            "Init": r.request.init,
            "Memory": r.spec.resources.memory.unwrap_or(0),
            "MemorySwap": r.spec.resources.memory_swap.unwrap_or(0),
            "NanoCpus": r.request.cpus.map(|c| (c * 1e9) as i64).unwrap_or(0),
            "CpuShares": r.spec.resources.cpu_shares.unwrap_or(0),
            "CpuQuota": r.spec.resources.cpu_quota.unwrap_or(0),
            "CpuPeriod": r.spec.resources.cpu_period.unwrap_or(0),
            "PidsLimit": r.spec.resources.pids_limit,
            "CgroupParent": r.request.cgroup_parent.clone().unwrap_or_default(),
            "Tmpfs": r.request.tmpfs,
        },
        "Mounts": r.mounts,
        "NetworkSettings": network_settings(engine, c),
        "Config": {
            "Hostname": r.spec.hostname,
            "User": r.request.user.clone().unwrap_or_default(),
            "Tty": r.request.tty,
            "OpenStdin": r.request.interactive,
            "Env": r.spec.env,
            "Cmd": if r.request.command.is_empty() { Value::Null } else { json!(r.request.command) },
            "Image": r.image,
            "WorkingDir": r.spec.cwd,
            "Entrypoint": r.request.entrypoint,
            "Labels": r.request.labels,
            "StopSignal": r.stop_signal,
            "StopTimeout": r.request.stop_timeout,
            "Healthcheck": r.health.as_ref().map(|h| json!({
                "Test": std::iter::once("CMD".to_string()).chain(h.test.iter().cloned()).collect::<Vec<_>>(),
                "Interval": h.interval.as_nanos() as u64,
                "Timeout": h.timeout.as_nanos() as u64,
                "StartPeriod": h.start_period.as_nanos() as u64,
                "Retries": h.retries,
            })),
        },
        "GraphDriver": {
            "Name": "overlay",
            "Data": {
                "MergedDir": r.spec.rootfs,
                "UpperDir": engine.roots().overlay(&r.id).join("upper"),
                "WorkDir": engine.roots().overlay(&r.id).join("work"),
            }
        },
    })
}

/// Docker's `HostConfig.PortBindings`: what `-p` asked for, by container
/// port (`HostPort` empty when any free port will do).
fn port_bindings(r: &skiff_engine::ContainerRecord) -> serde_json::Map<String, Value> {
    let mut out = serde_json::Map::new();
    for p in r.ports.iter().filter(|p| {
        // -P's ports are not bindings in Docker's record.
        !(r.request.publish_all && p.host_port == 0 && p.host_ip.is_none())
            || r.request.publish.iter().any(|s| {
                skiff_network::PortSpec::parse_publish(s).is_ok_and(|specs| specs.contains(p))
            })
    }) {
        let binding = json!({
            "HostIp": p.host_ip.map(|i| i.to_string()).unwrap_or_default(),
            "HostPort": p.host_port_text(),
        });
        if let Value::Array(list) = out
            .entry(format!("{}/{}", p.container_port, p.protocol))
            .or_insert_with(|| json!([]))
        {
            list.push(binding);
        }
    }
    out
}

/// Docker's `NetworkSettings` from the container's attachment, if any.
fn network_settings(engine: &Engine, c: &Container) -> Value {
    let r = &c.record;
    let attachment = r
        .network
        .network()
        .and_then(|n| engine.networking().attachment(n, &r.id).ok().flatten());
    let mut ports = serde_json::Map::new();
    for p in engine.published_ports(c) {
        let binding = json!({
            "HostIp": p.host_ip.unwrap_or(std::net::Ipv4Addr::UNSPECIFIED).to_string(),
            "HostPort": p.host_port.to_string(),
        });
        if let Value::Array(list) = ports
            .entry(format!("{}/{}", p.container_port, p.protocol))
            .or_insert_with(|| json!([]))
        {
            list.push(binding);
        }
    }
    match attachment {
        Some(a) => json!({
            "IPAddress": a.ip.to_string(),
            "IPPrefixLen": a.prefix_len,
            "Gateway": a.gateway.to_string(),
            "MacAddress": a.mac,
            "Ports": ports,
            "Networks": {
                a.network.clone(): {
                    "IPAddress": a.ip.to_string(),
                    "IPPrefixLen": a.prefix_len,
                    "Gateway": a.gateway.to_string(),
                    "MacAddress": a.mac,
                    "Aliases": a.aliases,
                }
            }
        }),
        None => {
            json!({"IPAddress": "", "Gateway": "", "MacAddress": "", "Ports": ports, "Networks": {}})
        }
    }
}

fn image_json(engine: &Engine, name: &str) -> Result<Value> {
    let image = engine.images().resolve(name)?;
    let config = engine.images().config(&image)?;
    Ok(json!({
        "Id": image.id.to_string(),
        "RepoTags": image.repo_tags.iter().map(|r| r.familiar_string()).collect::<Vec<_>>(),
        "RepoDigests": image.repo_digests.iter().map(|r| r.familiar_string()).collect::<Vec<_>>(),
        "Created": image.created,
        "Size": image.size,
        "Architecture": config.architecture().to_string(),
        "Os": config.os().to_string(),
        "Config": serde_json::to_value(config.config()).unwrap_or(Value::Null),
        "RootFS": serde_json::to_value(config.rootfs()).unwrap_or(Value::Null),
    }))
}

/// `skiff inspect`.
pub fn inspect(ctx: &Context, args: InspectArgs) -> Result<()> {
    let engine = ctx.engine()?;
    let mut items = Vec::new();
    let mut failed = false;
    for name in &args.names {
        let kind = args.kind.as_deref();
        let found = match kind {
            Some("container") => engine.find(name).map(|c| container_json(&engine, &c)).ok(),
            Some("image") => image_json(&engine, name).ok(),
            Some("volume") => engine
                .volumes()
                .get(name)
                .ok()
                .and_then(|v| serde_json::to_value(v).ok()),
            Some(other) => bail!("\"{other}\" is not a valid value for --type"),
            None => engine
                .find(name)
                .map(|c| container_json(&engine, &c))
                .ok()
                .or_else(|| image_json(&engine, name).ok())
                .or_else(|| {
                    engine
                        .volumes()
                        .get(name)
                        .ok()
                        .and_then(|v| serde_json::to_value(v).ok())
                }),
        };
        match found {
            Some(v) => items.push(v),
            None => {
                eprintln!("Error: No such object: {name}");
                failed = true;
            }
        }
    }
    match &args.format {
        Some(format) => {
            for item in &items {
                println!("{}", template::render(format, item)?);
            }
        }
        None => println!("{}", serde_json::to_string_pretty(&items)?),
    }
    if failed {
        return Err(Exit::code(1));
    }
    Ok(())
}
