//! `skiff volume ...`.

use anyhow::Result;

use super::containers::print_table;
use super::{for_each_name, Context};
use crate::cli::VolumeCommand;

/// `skiff volume`.
pub fn volume(ctx: &Context, cmd: VolumeCommand) -> Result<()> {
    let engine = ctx.engine()?;
    match cmd {
        VolumeCommand::Create { label, name } => {
            let labels = label
                .iter()
                .map(|l| {
                    let (k, v) = l.split_once('=').unwrap_or((l.as_str(), ""));
                    (k.to_string(), v.to_string())
                })
                .collect();
            let anonymous = name.is_none();
            let name = name.unwrap_or_else(|| {
                let bytes: [u8; 32] = rand_bytes();
                bytes.iter().map(|b| format!("{b:02x}")).collect()
            });
            let (v, _) = engine.volumes().create(&name, labels, anonymous)?;
            println!("{}", v.name);
            Ok(())
        }
        VolumeCommand::Ls { quiet } => {
            let vols = engine.volumes().list();
            if quiet {
                for v in vols {
                    println!("{}", v.name);
                }
                return Ok(());
            }
            let rows: Vec<Vec<String>> = vols.into_iter().map(|v| vec![v.driver, v.name]).collect();
            print_table(&["DRIVER", "VOLUME NAME"], &rows);
            Ok(())
        }
        VolumeCommand::Rm { force, names } => for_each_name(&names, |name| {
            engine.remove_volume(name, force)?;
            println!("{name}");
            Ok(())
        }),
        VolumeCommand::Inspect { names } => {
            let mut out = Vec::new();
            for name in &names {
                out.push(serde_json::to_value(engine.volumes().get(name)?)?);
            }
            println!("{}", serde_json::to_string_pretty(&out)?);
            Ok(())
        }
        VolumeCommand::Prune { all, .. } => {
            println!("Deleted Volumes:");
            for v in engine.volumes().list() {
                if (all || v.anonymous) && !engine.volume_in_use(&v.name)? {
                    engine.remove_volume(&v.name, false)?;
                    println!("{}", v.name);
                }
            }
            Ok(())
        }
    }
}

fn rand_bytes() -> [u8; 32] {
    let mut b = [0u8; 32];
    if let Ok(mut f) = std::fs::File::open("/dev/urandom") {
        use std::io::Read;
        let _ = f.read_exact(&mut b);
    }
    b
}
