//! `start`, `ps`, `logs`, `stop`, `restart`, `kill`, `rm`, `wait`, `system`.

use std::time::Duration;

use anyhow::{bail, Result};
use chrono::Utc;
use serde_json::json;
use skiff_engine::container::logs::LogOptions;
use skiff_engine::container::start::StartOptions;
use skiff_engine::{Container, Engine};

use super::{for_each_name, Context, Exit};
use crate::cli::{
    KillArgs, LogsArgs, NamesArgs, PortArgs, PsArgs, RmArgs, StartArgs, StopArgs, SystemCommand,
};
use crate::template;

/// `skiff start`.
pub fn start(ctx: &Context, args: StartArgs) -> Result<()> {
    let engine = ctx.engine()?;
    if args.attach {
        if args.containers.len() != 1 {
            bail!("you cannot start and attach multiple containers at once");
        }
        let started = engine.start(&args.containers[0], StartOptions { attach: true })?;
        let Some(stream) = started.attach else {
            return Ok(());
        };
        let c = &started.container.record;
        let code = super::run::attach_session(
            &engine,
            stream,
            &c.id,
            c.request.interactive,
            c.request.tty,
        )?;
        return if code == 0 {
            Ok(())
        } else {
            Err(Exit::code(code))
        };
    }
    for_each_name(&args.containers, |name| {
        engine.start(name, StartOptions::default())?;
        println!("{name}");
        Ok(())
    })
}

fn truncate(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_string()
    } else {
        format!("{}…", s.chars().take(n - 1).collect::<String>())
    }
}

/// The fields `docker ps --format` offers.
fn ps_row(engine: &Engine, c: &Container, no_trunc: bool) -> serde_json::Value {
    let now = Utc::now();
    let command = format!("\"{}\"", c.record.command_line());
    json!({
        "ID": if no_trunc { c.record.id.clone() } else { c.record.short_id().to_string() },
        "Image": c.record.image,
        "Command": if no_trunc { command } else { truncate(&command, 20) },
        "CreatedAt": c.record.created.format("%Y-%m-%d %H:%M:%S %z UTC").to_string(),
        "RunningFor": format!("{} ago", skiff_engine::container::human_duration(now - c.record.created)),
        "Status": c.status_text(now),
        "State": c.status.docker_state(),
        "Ports": skiff_engine::container::ports_text(&engine.published_ports(c)),
        "Names": c.record.name,
        "Labels": c.record.request.labels.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(","),
        "Mounts": c.record.mounts.iter().map(|m| if m.name.is_empty() { m.source.display().to_string() } else { m.name.clone() }).collect::<Vec<_>>().join(","),
        "Networks": c.record.network.docker_name(),
    })
}

/// `skiff port`: `80/tcp -> 0.0.0.0:49153` per mapping, or only the host
/// addresses of one private port, as `docker port` prints them.
pub fn port(ctx: &Context, args: PortArgs) -> Result<()> {
    let engine = ctx.engine()?;
    let container = engine.find(&args.container).map_err(|_| Exit {
        code: 1,
        message: format!("No such container: {}", args.container),
    })?;
    let mut ports = engine.published_ports(&container);
    ports.sort_by_key(|p| (p.container_port, p.protocol, p.host_ip, p.host_port));
    let host = |p: &skiff_network::PortMapping| {
        format!(
            "{}:{}",
            p.host_ip.unwrap_or(std::net::Ipv4Addr::UNSPECIFIED),
            p.host_port
        )
    };
    let Some(wanted) = &args.port else {
        for p in &ports {
            println!("{}/{} -> {}", p.container_port, p.protocol, host(p));
        }
        return Ok(());
    };
    let (number, protocol) = match wanted.split_once('/') {
        Some((n, proto)) => (n, proto.to_string()),
        None => (wanted.as_str(), "tcp".to_string()),
    };
    let number: u16 = number
        .parse()
        .map_err(|_| anyhow::anyhow!("invalid port {wanted:?}: expected PRIVATE_PORT[/PROTO]"))?;
    let matching: Vec<_> = ports
        .iter()
        .filter(|p| p.container_port == number && p.protocol.as_str() == protocol)
        .collect();
    if matching.is_empty() {
        return Err(Exit {
            code: 1,
            message: format!(
                "No public port '{number}/{protocol}' published for {}",
                args.container
            ),
        }
        .into());
    }
    for p in matching {
        println!("{}", host(p));
    }
    Ok(())
}

/// Prints rows as an aligned table (Docker's tabwriter: padding 3).
pub fn print_table(headers: &[&str], rows: &[Vec<String>]) {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            widths[i] = widths[i].max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let mut s = String::new();
        for (i, cell) in cells.iter().enumerate() {
            if i + 1 == cells.len() {
                s.push_str(cell);
            } else {
                s.push_str(cell);
                s.push_str(&" ".repeat(widths[i] - cell.chars().count() + 3));
            }
        }
        println!("{}", s.trim_end());
    };
    line(headers.to_vec());
    for row in rows {
        line(row.iter().map(String::as_str).collect());
    }
}

/// `skiff ps`.
pub fn ps(ctx: &Context, args: PsArgs) -> Result<()> {
    let engine = ctx.engine()?;
    engine.reap_auto_removed()?;
    let mut containers: Vec<Container> = engine
        .list()?
        .into_iter()
        .filter(|c| args.all || args.latest || c.is_running())
        .collect();
    if args.latest {
        containers.truncate(1);
    }
    if args.quiet {
        for c in &containers {
            println!(
                "{}",
                if args.no_trunc {
                    c.record.id.as_str()
                } else {
                    c.record.short_id()
                }
            );
        }
        return Ok(());
    }
    if let Some(format) = &args.format {
        for c in &containers {
            println!(
                "{}",
                template::render(format, &ps_row(&engine, c, args.no_trunc))?
            );
        }
        return Ok(());
    }
    let rows: Vec<Vec<String>> = containers
        .iter()
        .map(|c| {
            let r = ps_row(&engine, c, args.no_trunc);
            [
                "ID",
                "Image",
                "Command",
                "RunningFor",
                "Status",
                "Ports",
                "Names",
            ]
            .iter()
            .map(|k| r[*k].as_str().unwrap_or_default().to_string())
            .collect()
        })
        .collect();
    print_table(
        &[
            "CONTAINER ID",
            "IMAGE",
            "COMMAND",
            "CREATED",
            "STATUS",
            "PORTS",
            "NAMES",
        ],
        &rows,
    );
    Ok(())
}

/// `skiff logs`.
pub fn logs(ctx: &Context, args: LogsArgs) -> Result<()> {
    let engine = ctx.engine()?;
    let tail = match args.tail.as_str() {
        "all" | "-1" => None,
        n => Some(n.parse::<usize>().map_err(|_| {
            anyhow::anyhow!("invalid value for --tail: {n:?} (a number or \"all\")")
        })?),
    };
    let opts = LogOptions {
        follow: args.follow,
        tail,
        timestamps: args.timestamps,
    };
    let mut out = std::io::stdout().lock();
    let mut err = std::io::stderr();
    engine.logs(&args.container, &opts, &mut out, &mut err)?;
    Ok(())
}

/// `skiff stop`.
pub fn stop(ctx: &Context, args: StopArgs) -> Result<()> {
    let engine = ctx.engine()?;
    for_each_name(&args.containers, |name| {
        engine.stop(name, args.time)?;
        println!("{name}");
        Ok(())
    })
}

/// `skiff restart`.
pub fn restart(ctx: &Context, args: StopArgs) -> Result<()> {
    let engine = ctx.engine()?;
    for_each_name(&args.containers, |name| {
        engine.stop(name, args.time)?;
        engine.start(name, StartOptions::default())?;
        println!("{name}");
        Ok(())
    })
}

/// `skiff kill`.
pub fn kill(ctx: &Context, args: KillArgs) -> Result<()> {
    let engine = ctx.engine()?;
    for_each_name(&args.containers, |name| {
        engine.kill(name, &args.signal)?;
        println!("{name}");
        Ok(())
    })
}

/// `skiff rm`.
pub fn rm(ctx: &Context, args: RmArgs) -> Result<()> {
    let engine = ctx.engine()?;
    for_each_name(&args.containers, |name| {
        engine.remove(name, args.force, args.volumes)?;
        println!("{name}");
        Ok(())
    })
}

/// `skiff wait`.
pub fn wait(ctx: &Context, args: NamesArgs) -> Result<()> {
    let engine = ctx.engine()?;
    for_each_name(&args.containers, |name| {
        let c = engine.find(name)?;
        while !engine.wait_exited(&c.record.id, Duration::from_secs(3600)) {}
        let c = engine.find(&c.record.id)?;
        println!("{}", c.exit().map(|e| e.exit_code).unwrap_or(0));
        Ok(())
    })
}

/// `skiff system ...`.
pub fn system(ctx: &Context, cmd: SystemCommand) -> Result<()> {
    let engine = ctx.engine()?;
    match cmd {
        SystemCommand::Prune { all, volumes, .. } => {
            let mut removed = 0;
            println!("Deleted Containers:");
            for c in engine.list()? {
                if !c.is_running() {
                    engine.remove(&c.record.id, false, false)?;
                    println!("{}", c.record.id);
                    removed += 1;
                }
            }
            if removed == 0 {
                println!();
            }
            if volumes {
                println!("Deleted Volumes:");
                for v in engine.volumes().list() {
                    if v.anonymous && !engine.volume_in_use(&v.name)? {
                        engine.remove_volume(&v.name, false)?;
                        println!("{}", v.name);
                    }
                }
            }
            let in_use: Vec<skiff_images::ImageId> = engine
                .list()?
                .iter()
                .filter_map(|c| engine.images().resolve(&c.record.image_id).ok())
                .map(|i| i.id)
                .collect();
            println!("Deleted Images:");
            if all {
                for image in engine.images().list()? {
                    if !in_use.contains(&image.id) {
                        for event in engine.images().remove(&image.id.to_string(), true)? {
                            println!("{event}");
                        }
                    }
                }
            }
            let report = engine.images().prune(&in_use)?;
            for event in &report.events {
                println!("{event}");
            }
            println!(
                "\nTotal reclaimed space: {}",
                super::images::human_size(report.reclaimed)
            );
            Ok(())
        }
        SystemCommand::Reset { force } => {
            if !force {
                anyhow::bail!(
                    "this removes every container, volume and network: pass -f to confirm"
                );
            }
            engine.reset()?;
            // Pods' volumes of this root's kubelet (their containers are gone now).
            let pods = skiff_kubelet::volumes::pods_dir(&engine.roots().data);
            skiff_kubelet::volumes::teardown_all(&pods, &skiff_kubelet::volumes::KernelMounter)?;
            // The cgroups its kubelet made for QoS levels and pods.
            let kubelet_dir = skiff_kubelet::cgroups::kubelet_dir(&engine.roots().data);
            skiff_kubelet::cgroups::reset(&kubelet_dir, &skiff_runtime::cgroups::CgroupFs::host())?;
            Ok(())
        }
        SystemCommand::Df => {
            let usage = engine.images().disk_usage()?;
            let containers = engine.list()?;
            let volumes = engine.volumes().list();
            print_table(
                &["TYPE", "TOTAL", "ACTIVE"],
                &[
                    vec![
                        "Images".into(),
                        usage.images.to_string(),
                        usage.images.to_string(),
                    ],
                    vec![
                        "Containers".into(),
                        containers.len().to_string(),
                        containers
                            .iter()
                            .filter(|c| c.is_running())
                            .count()
                            .to_string(),
                    ],
                    vec![
                        "Local Volumes".into(),
                        volumes.len().to_string(),
                        String::new(),
                    ],
                ],
            );
            Ok(())
        }
    }
}
