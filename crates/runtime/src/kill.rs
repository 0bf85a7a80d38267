//! Signalling a running container.

use nix::sys::signal::{self, Signal};
use nix::unistd::Pid;

/// A signal name or number that skiff does not know.
#[derive(Debug, thiserror::Error)]
#[error("invalid signal: {0:?}")]
pub struct InvalidSignal(pub String);

/// Parses `SIGTERM`, `TERM`, `term` or `15`, as `docker kill -s` accepts.
pub fn parse_signal(text: &str) -> Result<Signal, InvalidSignal> {
    let t = text.trim();
    if let Ok(n) = t.parse::<i32>() {
        return Signal::try_from(n).map_err(|_| InvalidSignal(text.to_string()));
    }
    let upper = t.to_ascii_uppercase();
    let name = if upper.starts_with("SIG") {
        upper
    } else {
        format!("SIG{upper}")
    };
    name.parse::<Signal>()
        .map_err(|_| InvalidSignal(text.to_string()))
}

/// Sends `sig` to the container's first process; a process that is already gone is fine.
pub fn signal_process(pid: i32, sig: Signal) -> std::io::Result<()> {
    match signal::kill(Pid::from_raw(pid), sig) {
        Ok(()) | Err(nix::errno::Errno::ESRCH) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// True while a process with this pid exists (a zombie counts as gone).
pub fn process_alive(pid: i32) -> bool {
    if pid <= 0 {
        return false;
    }
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => {
            // The state letter follows the parenthesised command name.
            stat.rsplit_once(')')
                .and_then(|(_, rest)| rest.split_whitespace().next())
                .is_some_and(|state| state != "Z" && state != "X")
        }
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signal_names_and_numbers() {
        assert_eq!(parse_signal("SIGTERM").unwrap(), Signal::SIGTERM);
        assert_eq!(parse_signal("kill").unwrap(), Signal::SIGKILL);
        assert_eq!(parse_signal("1").unwrap(), Signal::SIGHUP);
        assert!(parse_signal("SIGNOPE").is_err());
        assert!(parse_signal("99").is_err());
    }

    #[test]
    fn own_process_is_alive() {
        assert!(process_alive(std::process::id() as i32));
        assert!(!process_alive(0));
    }
}
