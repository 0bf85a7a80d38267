//! Linux capability sets as Docker computes them.

use std::collections::BTreeSet;

/// Docker's default capability set, granted to every non-privileged container.
pub const DEFAULT_CAPABILITIES: &[&str] = &[
    "CAP_AUDIT_WRITE",
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FOWNER",
    "CAP_FSETID",
    "CAP_KILL",
    "CAP_MKNOD",
    "CAP_NET_BIND_SERVICE",
    "CAP_NET_RAW",
    "CAP_SETFCAP",
    "CAP_SETGID",
    "CAP_SETPCAP",
    "CAP_SETUID",
    "CAP_SYS_CHROOT",
];

/// Every capability the kernel defines (up to CAP_CHECKPOINT_RESTORE).
pub const ALL_CAPABILITIES: &[&str] = &[
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_DAC_READ_SEARCH",
    "CAP_FOWNER",
    "CAP_FSETID",
    "CAP_KILL",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETPCAP",
    "CAP_LINUX_IMMUTABLE",
    "CAP_NET_BIND_SERVICE",
    "CAP_NET_BROADCAST",
    "CAP_NET_ADMIN",
    "CAP_NET_RAW",
    "CAP_IPC_LOCK",
    "CAP_IPC_OWNER",
    "CAP_SYS_MODULE",
    "CAP_SYS_RAWIO",
    "CAP_SYS_CHROOT",
    "CAP_SYS_PTRACE",
    "CAP_SYS_PACCT",
    "CAP_SYS_ADMIN",
    "CAP_SYS_BOOT",
    "CAP_SYS_NICE",
    "CAP_SYS_RESOURCE",
    "CAP_SYS_TIME",
    "CAP_SYS_TTY_CONFIG",
    "CAP_MKNOD",
    "CAP_LEASE",
    "CAP_AUDIT_WRITE",
    "CAP_AUDIT_CONTROL",
    "CAP_SETFCAP",
    "CAP_MAC_OVERRIDE",
    "CAP_MAC_ADMIN",
    "CAP_SYSLOG",
    "CAP_WAKE_ALARM",
    "CAP_BLOCK_SUSPEND",
    "CAP_AUDIT_READ",
    "CAP_PERFMON",
    "CAP_BPF",
    "CAP_CHECKPOINT_RESTORE",
];

/// An unknown capability name given to `--cap-add` or `--cap-drop`.
#[derive(Debug, thiserror::Error)]
#[error("unknown capability: {0}")]
pub struct UnknownCapability(pub String);

/// Normalises `net_admin`, `NET_ADMIN` and `CAP_NET_ADMIN` to `CAP_NET_ADMIN`;
/// `ALL` stays `ALL`.
pub fn normalize(name: &str) -> Result<String, UnknownCapability> {
    let upper = name.trim().to_ascii_uppercase();
    if upper == "ALL" {
        return Ok(upper);
    }
    let full = if upper.starts_with("CAP_") {
        upper
    } else {
        format!("CAP_{upper}")
    };
    if ALL_CAPABILITIES.contains(&full.as_str()) {
        Ok(full)
    } else {
        Err(UnknownCapability(name.to_string()))
    }
}

/// The capabilities skiff itself may pass on: its bounding set. A sandboxed
/// host may lack some, and a container can never get more than its creator.
pub fn host_bounding_set() -> Vec<&'static str> {
    let mask = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("CapBnd:"))
                .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        })
        .unwrap_or(u64::MAX);
    ALL_CAPABILITIES
        .iter()
        .enumerate()
        .filter(|(bit, _)| mask & (1u64 << bit) != 0)
        .map(|(_, c)| *c)
        .collect()
}

/// Computes the effective set from Docker's defaults and `--cap-add`/`--cap-drop`.
///
/// As in Docker, `--cap-drop ALL` empties the set before additions apply, and
/// `--cap-add ALL` grants everything before drops apply. "Everything" is what
/// the host lets skiff hold ([`host_bounding_set`]).
pub fn compute(
    add: &[String],
    drop: &[String],
    privileged: bool,
) -> Result<Vec<String>, UnknownCapability> {
    let available = host_bounding_set();
    if privileged {
        return Ok(available.iter().map(|c| c.to_string()).collect());
    }
    let add = add
        .iter()
        .map(|c| normalize(c))
        .collect::<Result<Vec<_>, _>>()?;
    let drop = drop
        .iter()
        .map(|c| normalize(c))
        .collect::<Result<Vec<_>, _>>()?;
    let mut set: BTreeSet<String> = DEFAULT_CAPABILITIES.iter().map(|c| c.to_string()).collect();
    if drop.iter().any(|c| c == "ALL") {
        set.clear();
    }
    if add.iter().any(|c| c == "ALL") {
        set.extend(available.iter().map(|c| c.to_string()));
    }
    for cap in add.iter().filter(|c| *c != "ALL") {
        if !available.contains(&cap.as_str()) {
            return Err(UnknownCapability(format!(
                "{cap} (not available to skiff on this host)"
            )));
        }
        set.insert(cap.clone());
    }
    set.retain(|c| available.contains(&c.as_str()));
    for cap in drop.iter().filter(|c| *c != "ALL") {
        set.remove(cap);
    }
    Ok(set.into_iter().collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn defaults_match_docker() {
        let caps = compute(&[], &[], false).unwrap();
        assert_eq!(caps.len(), DEFAULT_CAPABILITIES.len());
        assert!(caps.contains(&"CAP_NET_BIND_SERVICE".to_string()));
        assert!(!caps.contains(&"CAP_SYS_ADMIN".to_string()));
    }

    #[test]
    fn add_and_drop_accept_short_names() {
        let caps = compute(&s(&["net_admin"]), &s(&["CHOWN"]), false).unwrap();
        assert!(caps.contains(&"CAP_NET_ADMIN".to_string()));
        assert!(!caps.contains(&"CAP_CHOWN".to_string()));
    }

    #[test]
    fn drop_all_then_add_one() {
        let caps = compute(&s(&["NET_BIND_SERVICE"]), &s(&["ALL"]), false).unwrap();
        assert_eq!(caps, s(&["CAP_NET_BIND_SERVICE"]));
    }

    #[test]
    fn unknown_capability_is_an_error() {
        let err = compute(&s(&["FLY"]), &[], false).unwrap_err();
        assert!(err.to_string().contains("FLY"));
    }

    #[test]
    fn privileged_gets_everything_the_host_allows() {
        assert_eq!(
            compute(&[], &[], true).unwrap().len(),
            host_bounding_set().len()
        );
    }
}
