//! A container's `securityContext`: the pod's and the container's merged (the
//! container's fields win, as `DetermineEffectiveSecurityContext` does), mapped to CRI's
//! [`LinuxContainerSecurityContext`], and the kubelet's own `runAsNonRoot` check against
//! the image's user. Pure: the runtime applies the result.

use std::path::Path;

use k8s_openapi::api::core::v1::{
    Capabilities, Container, PodSecurityContext, SeccompProfile, SecurityContext,
};

use crate::cri::{LinuxContainerSecurityContext, SecurityProfile};

/// Why a container's security settings cannot be used; the message is the
/// `CreateContainerConfigError` the container waits with.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SecurityContextError {
    /// `runAsNonRoot` with `runAsUser: 0`.
    #[error("container's runAsUser breaks non-root policy (pod: {pod:?}, container: {container})")]
    RunAsUserIsRoot {
        /// The pod as `name_namespace(uid)`.
        pod: String,
        /// The container.
        container: String,
    },
    /// `runAsNonRoot` and the image runs as uid 0.
    #[error("container has runAsNonRoot and image will run as root (pod: {pod:?}, container: {container})")]
    ImageRunsAsRoot {
        /// The pod as `name_namespace(uid)`.
        pod: String,
        /// The container.
        container: String,
    },
    /// `runAsNonRoot` and the image names its user, which the kubelet cannot check.
    #[error("container has runAsNonRoot and image has non-numeric user ({user}), cannot verify user is non-root (pod: {pod:?}, container: {container})")]
    NonNumericUser {
        /// The image's user.
        user: String,
        /// The pod as `name_namespace(uid)`.
        pod: String,
        /// The container.
        container: String,
    },
    /// A `Localhost` seccomp profile without a file name, or one leaving the profile root.
    #[error("invalid localhostProfile {0:?}: it must be a relative path below the kubelet's seccomp directory")]
    BadLocalhostProfile(String),
}

/// The effective security context of `c` in a pod with `pod_sc`: every field of the
/// container's context, and the pod's where the container leaves one unset.
pub fn effective(pod_sc: Option<&PodSecurityContext>, c: &Container) -> SecurityContext {
    let mut sc = c.security_context.clone().unwrap_or_default();
    if let Some(p) = pod_sc {
        sc.run_as_user = sc.run_as_user.or(p.run_as_user);
        sc.run_as_group = sc.run_as_group.or(p.run_as_group);
        sc.run_as_non_root = sc.run_as_non_root.or(p.run_as_non_root);
        sc.seccomp_profile = sc.seccomp_profile.or_else(|| p.seccomp_profile.clone());
        sc.se_linux_options = sc.se_linux_options.or_else(|| p.se_linux_options.clone());
        sc.app_armor_profile = sc.app_armor_profile.or_else(|| p.app_armor_profile.clone());
    }
    sc
}

/// CRI's security context of `c`: the effective context, plus the pod's supplementary
/// groups (`fsGroup` first, then `supplementalGroups`) and sysctls. `seccomp_root` is the
/// kubelet's directory of `Localhost` profiles.
pub fn linux_security_context(
    pod_sc: Option<&PodSecurityContext>,
    c: &Container,
    seccomp_root: &Path,
) -> Result<LinuxContainerSecurityContext, SecurityContextError> {
    let sc = effective(pod_sc, c);
    let privileged = sc.privileged.unwrap_or(false);
    let (add, drop) = match &sc.capabilities {
        Some(Capabilities { add, drop }) => (
            add.clone().unwrap_or_default(),
            drop.clone().unwrap_or_default(),
        ),
        None => (Vec::new(), Vec::new()),
    };
    let adds_sys_admin = add.iter().any(|a| capability_name(a) == "SYS_ADMIN");
    // no_new_privs only when asked for (`allowPrivilegeEscalation: false`); validation
    // forbids asking for it with `privileged` or CAP_SYS_ADMIN, which always escalate.
    let no_new_privs =
        sc.allow_privilege_escalation == Some(false) && !privileged && !adds_sys_admin;
    let seccomp = if privileged {
        SecurityProfile::Unconfined
    } else {
        seccomp_profile(sc.seccomp_profile.as_ref(), seccomp_root)?
    };
    let mut groups = Vec::new();
    if let Some(p) = pod_sc {
        groups.extend(p.fs_group);
        for g in p.supplemental_groups.iter().flatten() {
            if !groups.contains(g) {
                groups.push(*g);
            }
        }
    }
    let sysctls = pod_sc
        .and_then(|p| p.sysctls.as_ref())
        .map(|s| {
            s.iter()
                .map(|s| (s.name.clone(), s.value.clone()))
                .collect()
        })
        .unwrap_or_default();
    Ok(LinuxContainerSecurityContext {
        run_as_user: sc.run_as_user,
        run_as_group: sc.run_as_group,
        supplemental_groups: groups,
        readonly_rootfs: sc.read_only_root_filesystem.unwrap_or(false),
        privileged,
        add_capabilities: add,
        drop_capabilities: drop,
        no_new_privs,
        seccomp,
        sysctls,
    })
}

/// A capability's name without `CAP_`, upper-case (`net_admin`, `CAP_NET_ADMIN` -> `NET_ADMIN`).
pub fn capability_name(cap: &str) -> String {
    let upper = cap.to_ascii_uppercase();
    upper
        .strip_prefix("CAP_")
        .map(str::to_string)
        .unwrap_or(upper)
}

/// The seccomp filter a `seccompProfile` asks for; unset is `Unconfined`, Kubernetes'
/// default (unlike Docker's).
fn seccomp_profile(
    profile: Option<&SeccompProfile>,
    root: &Path,
) -> Result<SecurityProfile, SecurityContextError> {
    let Some(p) = profile else {
        return Ok(SecurityProfile::Unconfined);
    };
    Ok(match p.type_.as_str() {
        "RuntimeDefault" => SecurityProfile::RuntimeDefault,
        "Localhost" => {
            let name = p.localhost_profile.clone().unwrap_or_default();
            let relative = Path::new(&name);
            let inside = !name.is_empty()
                && relative.is_relative()
                && relative
                    .components()
                    .all(|c| matches!(c, std::path::Component::Normal(_)));
            if !inside {
                return Err(SecurityContextError::BadLocalhostProfile(name));
            }
            SecurityProfile::Localhost(root.join(relative))
        }
        _ => SecurityProfile::Unconfined,
    })
}

/// The pod as the kubelet names it in messages: `name_namespace(uid)`.
pub fn pod_description(name: &str, namespace: &str, uid: &str) -> String {
    format!("{name}_{namespace}({uid})")
}

/// The kubelet's `runAsNonRoot` check: the container may not run as uid 0, by its
/// `runAsUser` or else by its image's `image_user` (`USER` as `user[:group]`, empty for
/// root); a named image user cannot be checked and is refused.
pub fn verify_run_as_non_root(
    sc: &SecurityContext,
    pod: &str,
    container: &str,
    image_user: &str,
) -> Result<(), SecurityContextError> {
    if sc.run_as_non_root != Some(true) {
        return Ok(());
    }
    let (pod, container) = (pod.to_string(), container.to_string());
    if let Some(uid) = sc.run_as_user {
        return match uid {
            0 => Err(SecurityContextError::RunAsUserIsRoot { pod, container }),
            _ => Ok(()),
        };
    }
    let user = image_user.split(':').next().unwrap_or_default();
    if user.is_empty() {
        return Err(SecurityContextError::ImageRunsAsRoot { pod, container });
    }
    match user.parse::<i64>() {
        Ok(0) => Err(SecurityContextError::ImageRunsAsRoot { pod, container }),
        Ok(_) => Ok(()),
        Err(_) => Err(SecurityContextError::NonNumericUser {
            user: user.to_string(),
            pod,
            container,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn container(sc: serde_json::Value) -> Container {
        serde_json::from_value(serde_json::json!({"name": "app", "securityContext": sc})).unwrap()
    }

    fn pod_sc(sc: serde_json::Value) -> PodSecurityContext {
        serde_json::from_value(sc).unwrap()
    }

    #[test]
    fn the_containers_fields_win_over_the_pods() {
        let p = pod_sc(serde_json::json!({
            "runAsUser": 1000, "runAsGroup": 3000, "runAsNonRoot": true,
            "seccompProfile": {"type": "RuntimeDefault"}, "fsGroup": 2000,
            "supplementalGroups": [4000, 2000],
            "sysctls": [{"name": "net.ipv4.ip_unprivileged_port_start", "value": "0"}]
        }));
        let c = container(serde_json::json!({"runAsUser": 1001, "readOnlyRootFilesystem": true}));
        let got = linux_security_context(Some(&p), &c, Path::new("/k/seccomp")).unwrap();
        assert_eq!(
            got,
            LinuxContainerSecurityContext {
                run_as_user: Some(1001),
                run_as_group: Some(3000),
                supplemental_groups: vec![2000, 4000],
                readonly_rootfs: true,
                seccomp: SecurityProfile::RuntimeDefault,
                sysctls: vec![("net.ipv4.ip_unprivileged_port_start".into(), "0".into())],
                ..Default::default()
            }
        );
        assert_eq!(effective(Some(&p), &c).run_as_non_root, Some(true));
    }

    #[test]
    fn unset_seccomp_is_unconfined_and_localhost_is_below_the_root() {
        let root = Path::new("/var/lib/kubelet/seccomp");
        let none = linux_security_context(None, &container(serde_json::json!({})), root).unwrap();
        assert_eq!(none.seccomp, SecurityProfile::Unconfined);
        assert!(!none.no_new_privs, "escalation is allowed unless forbidden");
        let local = container(serde_json::json!({
            "seccompProfile": {"type": "Localhost", "localhostProfile": "profiles/audit.json"}
        }));
        assert_eq!(
            linux_security_context(None, &local, root).unwrap().seccomp,
            SecurityProfile::Localhost(root.join("profiles/audit.json"))
        );
        let escape = container(serde_json::json!({
            "seccompProfile": {"type": "Localhost", "localhostProfile": "../etc/shadow"}
        }));
        assert!(matches!(
            linux_security_context(None, &escape, root),
            Err(SecurityContextError::BadLocalhostProfile(_))
        ));
    }

    #[test]
    fn privileged_and_sys_admin_always_escalate() {
        let root = Path::new("/s");
        let restricted = container(serde_json::json!({
            "allowPrivilegeEscalation": false,
            "capabilities": {"drop": ["ALL"], "add": ["NET_BIND_SERVICE"]},
            "seccompProfile": {"type": "RuntimeDefault"}
        }));
        let got = linux_security_context(None, &restricted, root).unwrap();
        assert!(got.no_new_privs);
        assert_eq!(got.drop_capabilities, vec!["ALL".to_string()]);
        assert_eq!(got.add_capabilities, vec!["NET_BIND_SERVICE".to_string()]);
        let admin = container(serde_json::json!({
            "allowPrivilegeEscalation": false, "capabilities": {"add": ["CAP_SYS_ADMIN"]}
        }));
        assert!(
            !linux_security_context(None, &admin, root)
                .unwrap()
                .no_new_privs
        );
        let privileged = container(serde_json::json!({
            "privileged": true, "allowPrivilegeEscalation": false,
            "seccompProfile": {"type": "RuntimeDefault"}
        }));
        let got = linux_security_context(None, &privileged, root).unwrap();
        assert!(got.privileged && !got.no_new_privs);
        assert_eq!(got.seccomp, SecurityProfile::Unconfined);
    }

    #[test]
    fn capability_names_lose_their_prefix() {
        assert_eq!(capability_name("cap_net_admin"), "NET_ADMIN");
        assert_eq!(capability_name("CHOWN"), "CHOWN");
    }

    #[test]
    fn run_as_non_root_checks_the_user_or_the_image() {
        let pod = pod_description("web", "default", "u-1");
        let sc = |v: serde_json::Value| -> SecurityContext { serde_json::from_value(v).unwrap() };
        let non_root = sc(serde_json::json!({"runAsNonRoot": true}));
        assert_eq!(
            verify_run_as_non_root(&non_root, &pod, "app", "")
                .unwrap_err()
                .to_string(),
            "container has runAsNonRoot and image will run as root (pod: \"web_default(u-1)\", container: app)"
        );
        assert!(verify_run_as_non_root(&non_root, &pod, "app", "0:0").is_err());
        assert!(verify_run_as_non_root(&non_root, &pod, "app", "1000:1000").is_ok());
        assert_eq!(
            verify_run_as_non_root(&non_root, &pod, "app", "nginx")
                .unwrap_err()
                .to_string(),
            "container has runAsNonRoot and image has non-numeric user (nginx), cannot verify user is non-root (pod: \"web_default(u-1)\", container: app)"
        );
        let explicit = sc(serde_json::json!({"runAsNonRoot": true, "runAsUser": 1000}));
        assert!(verify_run_as_non_root(&explicit, &pod, "app", "nginx").is_ok());
        let zero = sc(serde_json::json!({"runAsNonRoot": true, "runAsUser": 0}));
        assert!(matches!(
            verify_run_as_non_root(&zero, &pod, "app", "1000"),
            Err(SecurityContextError::RunAsUserIsRoot { .. })
        ));
        assert!(verify_run_as_non_root(&sc(serde_json::json!({})), &pod, "app", "").is_ok());
    }
}
