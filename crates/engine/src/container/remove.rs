//! `skiff rm` and the shim's exit command (`container-cleanup`).

use std::time::Duration;

use nix::sys::signal::Signal;
use skiff_runtime::kill::signal_process;
use skiff_runtime::ContainerStatus;

use crate::rootfs::Overlay;
use crate::{Engine, EngineError, Result};

impl Engine {
    /// Removes a container; `force` kills it first, `volumes` also removes its anonymous volumes.
    pub fn remove(&self, name_or_id: &str, force: bool, volumes: bool) -> Result<String> {
        let container = self.find(name_or_id)?;
        let id = container.record.id.clone();
        if let ContainerStatus::Running { pid } = container.status {
            if !force {
                return Err(EngineError::RemoveRunning(container.record.name.clone()));
            }
            signal_process(pid, Signal::SIGKILL).map_err(EngineError::io("killing container"))?;
            self.wait_exited(&id, Duration::from_secs(10));
        }
        self.leave_network(&container.record);
        self.release(&id)?;
        let files = self.files(&id);
        std::fs::remove_dir_all(&files.dir)
            .map_err(EngineError::io(format!("removing {}", files.dir.display())))?;
        self.names
            .release(&container.record.name, &id)
            .map_err(EngineError::io("freeing the container's name"))?;
        let _ = std::fs::remove_dir_all(self.roots.container_run(&id));
        let remove_anonymous = volumes || container.record.request.auto_remove;
        for m in container
            .record
            .mounts
            .iter()
            .filter(|m| m.kind == "volume")
        {
            let anonymous = self
                .volumes
                .get(&m.name)
                .map(|v| v.anonymous)
                .unwrap_or(false);
            if remove_anonymous && anonymous && !self.volume_in_use(&m.name)? {
                let _ = self.volumes.remove(&m.name);
            }
        }
        Ok(id)
    }

    /// Unmounts the root filesystem and drops the overlay of a container that no longer runs.
    fn release(&self, id: &str) -> Result<()> {
        let overlay = Overlay {
            base: self.roots.overlay(id),
        };
        self.mounter
            .unmount(&overlay.merged())
            .map_err(EngineError::io("unmounting the root filesystem"))?;
        if overlay.base.exists() {
            std::fs::remove_dir_all(&overlay.base).map_err(EngineError::io(format!(
                "removing {}",
                overlay.base.display()
            )))?;
        }
        Ok(())
    }

    /// Run by the shim after the container exited: unmount, and remove if `--rm`.
    pub fn cleanup(&self, id: &str) -> Result<()> {
        let container = self.find(id)?;
        if container.is_running() {
            return Ok(());
        }
        if container.record.request.auto_remove {
            self.remove(id, false, true)?;
            return Ok(());
        }
        self.leave_network(&container.record);
        let overlay = Overlay {
            base: self.roots.overlay(id),
        };
        self.mounter
            .unmount(&overlay.merged())
            .map_err(EngineError::io("unmounting the root filesystem"))?;
        Ok(())
    }

    /// Removes `--rm` containers that exited but whose cleanup never ran
    /// (the process that was to do it died): level-triggered, so any later
    /// look at the containers converges.
    pub fn reap_auto_removed(&self) -> Result<()> {
        for c in self.list()? {
            if !c.record.request.auto_remove || c.is_running() {
                continue;
            }
            let files = self.files(&c.record.id);
            let shim_gone = skiff_runtime::status::read_json::<skiff_runtime::shim::ShimState>(
                &files.shim_state(),
            )
            .ok()
            .flatten()
            .is_none_or(|s| !skiff_runtime::kill::process_alive(s.shim_pid));
            if c.exit().is_some() && shim_gone {
                let _ = self.remove(&c.record.id, false, true);
            }
        }
        Ok(())
    }

    /// Removes every container, volume and network of this root, with their
    /// bridges and nftables rules (`skiff system reset`). Images stay.
    pub fn reset(&self) -> Result<()> {
        for c in self.list()? {
            self.remove(&c.record.id, true, true)?;
        }
        for v in self.volumes.list() {
            self.volumes.remove(&v.name)?;
        }
        self.networking
            .teardown_all()
            .map_err(crate::networks::network_error)
    }

    /// True when any container mounts the named volume.
    pub fn volume_in_use(&self, name: &str) -> Result<bool> {
        Ok(self.list()?.iter().any(|c| {
            c.record
                .mounts
                .iter()
                .any(|m| m.kind == "volume" && m.name == name)
        }))
    }

    /// Removes a volume unless a container uses it (`docker volume rm`).
    pub fn remove_volume(&self, name: &str, force: bool) -> Result<()> {
        let users: Vec<String> = self
            .list()?
            .iter()
            .filter(|c| {
                c.record
                    .mounts
                    .iter()
                    .any(|m| m.kind == "volume" && m.name == name)
            })
            .map(|c| c.record.id.clone())
            .collect();
        if !users.is_empty() && !force {
            return Err(crate::VolumeError::InUse {
                name: name.to_string(),
                containers: users.join(", "),
            }
            .into());
        }
        Ok(self.volumes.remove(name)?)
    }
}
