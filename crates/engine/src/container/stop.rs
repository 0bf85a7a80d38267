//! `skiff stop` and `skiff kill`.

use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use skiff_runtime::kill::{parse_signal, signal_process};
use skiff_runtime::ContainerStatus;

use super::Container;
use crate::{Engine, EngineError, Result};

/// Docker's default grace period before SIGKILL.
pub const DEFAULT_STOP_TIMEOUT: u32 = 10;

impl Engine {
    /// Sends `signal` to a running container's main process.
    pub fn kill(&self, name_or_id: &str, signal: &str) -> Result<Container> {
        let container = self.find(name_or_id)?;
        let ContainerStatus::Running { pid } = container.status else {
            return Err(EngineError::NotRunning(
                container.record.short_id().to_string(),
            ));
        };
        let sig = parse_signal(signal).map_err(|e| EngineError::InvalidArgument(e.to_string()))?;
        signal_process(pid, sig).map_err(EngineError::io("sending signal"))?;
        Ok(container)
    }

    /// Stops a container: its stop signal, up to `timeout` seconds, then SIGKILL.
    /// A container that is not running is left as it is.
    pub fn stop(&self, name_or_id: &str, timeout: Option<u32>) -> Result<Container> {
        let container = self.find(name_or_id)?;
        let ContainerStatus::Running { pid } = container.status else {
            return Ok(container);
        };
        let timeout = timeout
            .or(container.record.request.stop_timeout)
            .unwrap_or(DEFAULT_STOP_TIMEOUT);
        let sig = parse_signal(&container.record.stop_signal).unwrap_or(Signal::SIGTERM);
        signal_process(pid, sig).map_err(EngineError::io("sending stop signal"))?;
        if !self.wait_exited(&container.record.id, Duration::from_secs(timeout.into())) {
            signal_process(pid, Signal::SIGKILL).map_err(EngineError::io("killing container"))?;
            self.wait_exited(&container.record.id, Duration::from_secs(10));
        }
        self.find(&container.record.id)
    }

    /// Waits until the shim recorded the container's exit; false on timeout.
    pub fn wait_exited(&self, id: &str, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            match self.find(id) {
                Ok(c) if c.is_running() => {}
                _ => return true,
            }
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}
