//! `skiff create`: resolve the image, name, user, mounts and limits into a
//! container record and a prepared root filesystem.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use chrono::Utc;
use rand::RngCore;
use skiff_runtime::{ContainerSpec, Mount, NamespaceMode, Resources, SeccompMode};

use super::name_index::Reserve;
use super::{ContainerRecord, CreateRequest, MountPoint};
use crate::lock::FileLock;
use crate::networks::{self, NetworkMode};
use crate::rootfs::Overlay;
use crate::{names, users, Engine, EngineError, Result};

const DEFAULT_PATH: &str = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// A parsed `-v` value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VolumeSpec {
    /// `name:/path`: a named volume.
    Named {
        /// Volume name.
        name: String,
        /// Mount point.
        destination: String,
        /// Read-only.
        readonly: bool,
    },
    /// `/host:/path`: a bind mount.
    Bind {
        /// Host path.
        source: PathBuf,
        /// Mount point.
        destination: String,
        /// Read-only.
        readonly: bool,
    },
    /// `/path`: an anonymous volume.
    Anonymous {
        /// Mount point.
        destination: String,
    },
}

/// What `create` has resolved before it writes anything.
struct NewContainer<'a> {
    id: &'a str,
    name: &'a str,
    image: &'a skiff_images::ImageRecord,
    image_config: &'a oci_spec::image::ImageConfiguration,
    args: Vec<String>,
}

/// Parses `-v` the way Docker does: `[SRC:]DEST[:ro|rw]`.
pub fn parse_volume(spec: &str) -> Result<VolumeSpec> {
    let invalid =
        || EngineError::InvalidArgument(format!("invalid volume specification: '{spec}'"));
    let parts: Vec<&str> = spec.split(':').collect();
    let (src, dest, mode) = match parts.as_slice() {
        [dest] => (None, *dest, None),
        [src, dest] if dest.starts_with('/') => (Some(*src), *dest, None),
        [dest, mode] => (None, *dest, Some(*mode)),
        [src, dest, mode] => (Some(*src), *dest, Some(*mode)),
        _ => return Err(invalid()),
    };
    if !dest.starts_with('/') {
        return Err(EngineError::InvalidArgument(format!(
            "invalid volume specification: '{spec}': invalid mount config for type \"volume\": invalid mount path: '{dest}' mount path must be absolute"
        )));
    }
    let readonly = match mode {
        None | Some("rw") => false,
        Some("ro") => true,
        Some(_) => return Err(invalid()),
    };
    Ok(match src {
        None => VolumeSpec::Anonymous {
            destination: dest.to_string(),
        },
        Some(s) if s.starts_with('/') => VolumeSpec::Bind {
            source: PathBuf::from(s),
            destination: dest.to_string(),
            readonly,
        },
        Some("") => return Err(invalid()),
        Some(s) => VolumeSpec::Named {
            name: s.to_string(),
            destination: dest.to_string(),
            readonly,
        },
    })
}

/// Parses a human size (`512m`, `1g`, `100000`) into bytes, as `--memory` accepts.
pub fn parse_bytes(text: &str) -> std::result::Result<i64, String> {
    let t = text.trim().to_ascii_lowercase();
    let t = t.strip_suffix('b').unwrap_or(&t);
    let (num, mult) = match t.chars().last() {
        Some('k') => (&t[..t.len() - 1], 1i64 << 10),
        Some('m') => (&t[..t.len() - 1], 1 << 20),
        Some('g') => (&t[..t.len() - 1], 1 << 30),
        Some('t') => (&t[..t.len() - 1], 1 << 40),
        _ => (t, 1),
    };
    let value: f64 = num.parse().map_err(|_| format!("invalid size: '{text}'"))?;
    if value < 0.0 {
        return Err(format!("invalid size: '{text}'"));
    }
    Ok((value * mult as f64) as i64)
}

/// Merges `KEY=value` lists: later keys replace earlier ones, order of first appearance kept.
fn merge_env(base: &[String], overrides: &[String]) -> Vec<String> {
    let mut out: Vec<String> = base.to_vec();
    for kv in overrides {
        let key = kv.split('=').next().unwrap_or(kv);
        let value = if kv.contains('=') {
            kv.clone()
        } else {
            // `-e KEY` takes the caller's value, and is dropped when unset (Docker).
            match std::env::var(key) {
                Ok(v) => format!("{key}={v}"),
                Err(_) => continue,
            }
        };
        match out.iter_mut().find(|e| e.split('=').next() == Some(key)) {
            Some(slot) => *slot = value,
            None => out.push(value),
        }
    }
    out
}

fn random_id() -> String {
    let mut bytes = [0u8; 32];
    rand::thread_rng().fill_bytes(&mut bytes);
    hex::encode(bytes)
}

/// The cgroup of container `id`: below `parent` (Docker's `--cgroup-parent`), or
/// `/skiff`.
fn cgroup_path(parent: Option<&str>, id: &str) -> Result<String> {
    let parent = parent.unwrap_or("/skiff").trim_end_matches('/');
    let valid = parent.is_empty()
        || (parent.starts_with('/') && !parent.split('/').any(|c| c == ".." || c == "."));
    if !valid {
        return Err(EngineError::InvalidArgument(format!(
            "invalid --cgroup-parent {parent:?}: it must be an absolute cgroup path"
        )));
    }
    Ok(format!("{parent}/{id}"))
}

/// What a pod needs beyond `docker create`: the kubelet's sandbox and its members.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CreateOptions {
    /// Id of a container whose network, IPC and UTS namespaces this one joins when it
    /// starts (that container must be running then); its own network is `none`.
    pub namespaces_of: Option<String>,
    /// Id of a container whose PID namespace this one joins when it starts (CRI's
    /// `NamespaceMode::TARGET`: an ephemeral container's target); its own otherwise.
    pub pid_namespace_of: Option<String>,
    /// Run skiff's built-in pause process instead of a command (a pod sandbox): it
    /// needs no file in the image.
    pub pause: bool,
    /// Supplementary group ids added to the user's own (a pod's `supplementalGroups`
    /// and `fsGroup`; Docker's `--group-add` with numbers).
    pub group_add: Vec<u32>,
    /// Namespaced kernel parameters set in the container (a pod's `sysctls`; Docker's
    /// `--sysctl`).
    pub sysctls: Vec<(String, String)>,
}

impl Engine {
    /// Creates a container from `req`; it is not started.
    pub fn create(&self, req: &CreateRequest) -> Result<ContainerRecord> {
        self.create_with(req, &CreateOptions::default())
    }

    /// Creates a container from `req` with pod options; it is not started.
    pub fn create_with(
        &self,
        req: &CreateRequest,
        opts: &CreateOptions,
    ) -> Result<ContainerRecord> {
        let _span = tracing::debug_span!("engine.create", name = req.name.as_deref()).entered();
        let started = std::time::Instant::now();
        let image = self.images.resolve(&req.image)?;
        let image_config = self.images.config(&image)?;
        let config = image_config.config().clone().unwrap_or_default();

        // The name is reserved atomically (see `name_index`): creates of other
        // names, here or in other processes, go on in parallel.
        let id = random_id();
        let (name, reservation) = match &req.name {
            Some(n) => {
                let n = n.trim_start_matches('/').to_string();
                names::validate(&n).map_err(EngineError::InvalidArgument)?;
                match self.reserve_name(&n, &id)? {
                    Reserve::Reserved(r) => (n, r),
                    Reserve::Taken(other) => {
                        return Err(EngineError::NameConflict { name: n, id: other })
                    }
                }
            }
            None => {
                let mut n = names::generate();
                loop {
                    if let Reserve::Reserved(r) = self.reserve_name(&n, &id)? {
                        break (n, r);
                    }
                    n = format!("{}{}", names::generate(), rand::random::<u8>() % 10);
                }
            }
        };
        tracing::debug!(elapsed = ?started.elapsed(), "image resolved, name reserved");

        let entrypoint: Vec<String> = match &req.entrypoint {
            Some(e) if e.is_empty() => Vec::new(),
            Some(e) => vec![e.clone()],
            None => config.entrypoint().clone().unwrap_or_default(),
        };
        // As in Docker, overriding the entrypoint drops the image's Cmd.
        let cmd: Vec<String> = if !req.command.is_empty() {
            req.command.clone()
        } else if req.entrypoint.is_some() {
            Vec::new()
        } else {
            config.cmd().clone().unwrap_or_default()
        };
        let mut args: Vec<String> = entrypoint.into_iter().chain(cmd).collect();
        if opts.pause {
            args = vec!["pause".to_string()];
        }
        if args.is_empty() {
            return Err(EngineError::InvalidArgument(
                "no command specified: the image has no Cmd or Entrypoint; give a command after the image"
                    .into(),
            ));
        }

        let files = self.files(&id);
        std::fs::create_dir_all(&files.dir)
            .map_err(EngineError::io(format!("creating {}", files.dir.display())))?;
        let new = NewContainer {
            id: &id,
            name: &name,
            image: &image,
            image_config: &image_config,
            args,
        };
        let result = self.create_files(&new, req, opts);
        if result.is_err() {
            let overlay = Overlay {
                base: self.roots.overlay(&id),
            };
            let _ = self.mounter.unmount(&overlay.merged());
            let _ = std::fs::remove_dir_all(&overlay.base);
            let _ = std::fs::remove_dir_all(&files.dir);
            // Dropping the reservation frees the name.
            drop(reservation);
        } else {
            reservation.commit();
        }
        tracing::debug!(elapsed = ?started.elapsed(), ok = result.is_ok(), "created");
        result
    }

    /// Reserves `name` for the new container `id`.
    fn reserve_name(&self, name: &str, id: &str) -> Result<Reserve> {
        self.names
            .reserve(name, id, |other| self.files(other).record().exists())
            .map_err(EngineError::io(format!("reserving the name {name}")))
    }

    fn create_files(
        &self,
        new: &NewContainer<'_>,
        req: &CreateRequest,
        opts: &CreateOptions,
    ) -> Result<ContainerRecord> {
        let NewContainer {
            id,
            name,
            image,
            image_config,
            ..
        } = *new;
        let args = new.args.clone();
        let files = self.files(id);
        let config = image_config.config().clone().unwrap_or_default();
        let overlay = Overlay {
            base: self.roots.overlay(id),
        };
        let layers = self.images.layer_dirs(image)?;
        let rootfs = overlay
            .mount(self.mounter.as_ref(), &layers)
            .map_err(EngineError::io("mounting the container's root filesystem"))?;

        let hostname = req.hostname.clone().unwrap_or_else(|| id[..12].to_string());
        let mut env = config.env().clone().unwrap_or_default();
        if !env.iter().any(|e| e.starts_with("PATH=")) {
            env.insert(0, DEFAULT_PATH.to_string());
        }
        env = merge_env(&env, &[format!("HOSTNAME={hostname}")]);
        if req.tty {
            env = merge_env(&env, &["TERM=xterm".to_string()]);
        }
        env = merge_env(&env, &req.env);

        let user_spec = req
            .user
            .clone()
            .or_else(|| config.user().clone())
            .unwrap_or_default();
        let mut user = users::resolve(&rootfs, &user_spec)?;
        for gid in &opts.group_add {
            if *gid != user.gid && !user.additional_gids.contains(gid) {
                user.additional_gids.push(*gid);
            }
        }
        let cwd = req
            .workdir
            .clone()
            .or_else(|| config.working_dir().clone())
            .filter(|w| !w.is_empty())
            .unwrap_or_else(|| "/".to_string());
        if !cwd.starts_with('/') {
            return Err(EngineError::InvalidArgument(format!(
                "the working directory '{cwd}' is invalid, it needs to be an absolute path"
            )));
        }
        // Docker creates a missing working directory.
        let _ = std::fs::create_dir_all(rootfs.join(cwd.trim_start_matches('/')));

        let network = if opts.namespaces_of.is_some() {
            NetworkMode::None
        } else {
            NetworkMode::parse(req.network.as_deref())
        };
        let mut exposed: Vec<String> = config
            .exposed_ports()
            .clone()
            .unwrap_or_default()
            .into_iter()
            .collect();
        exposed.extend(req.expose.iter().cloned());
        let ports = networks::ports_to_publish(&req.publish, req.publish_all, &exposed)?;
        if !req.publish.is_empty() && network.network().is_none() {
            return Err(EngineError::InvalidArgument(
                "conflicting options: port publishing and the container type network mode".into(),
            ));
        }
        // A host port that is taken fails now, before the container exists
        // (it is checked again when the ports are published at start).
        if let Some(net) = network.network() {
            self.networking
                .check_ports(net, name, &ports)
                .map_err(networks::network_error)?;
        }
        let dns_server = match network.network() {
            Some(name) => self
                .networking
                .network(name)
                .map_err(networks::network_error)?
                .dns_server(),
            None => None,
        };
        let host_resolv = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
        // A container joining another's namespaces (a pod's) shares its resolv.conf.
        let joined = opts
            .namespaces_of
            .as_ref()
            .and_then(|holder| self.find(holder).ok())
            .and_then(|holder| {
                std::fs::read_to_string(self.files(&holder.record.id).resolv_conf()).ok()
            });
        let resolv = match (&req.dns, joined, &network, dns_server) {
            (Some(dns), ..) => dns.resolv_conf(),
            (None, Some(shared), ..) => shared,
            (None, None, _, Some(server)) => skiff_network::dns::resolv_conf(server, &host_resolv),
            (None, None, NetworkMode::Host, None) => host_resolv,
            _ => resolv_conf(&host_resolv),
        };

        let (mut mounts, mount_points) = self.prepare_volumes(req, &config, &rootfs)?;
        std::fs::write(files.hostname(), format!("{hostname}\n"))
            .map_err(EngineError::io("writing hostname"))?;
        std::fs::write(
            files.hosts(),
            format!("127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n127.0.1.1\t{hostname}\n"),
        )
        .map_err(EngineError::io("writing hosts"))?;
        std::fs::write(files.resolv_conf(), resolv)
            .map_err(EngineError::io("writing resolv.conf"))?;
        for (file, dest) in [
            (files.hostname(), "/etc/hostname"),
            (files.hosts(), "/etc/hosts"),
            (files.resolv_conf(), "/etc/resolv.conf"),
        ] {
            // A volume the caller mounts there wins, as in Docker (a kubelet's managed
            // /etc/hosts, `-v ./hosts:/etc/hosts`).
            if mounts.iter().any(|m| m.destination == dest) {
                continue;
            }
            mounts.push(Mount {
                source: file,
                destination: dest.to_string(),
                readonly: req.read_only,
                tmpfs: false,
            });
        }
        for t in &req.tmpfs {
            mounts.push(Mount {
                source: PathBuf::new(),
                destination: t.clone(),
                readonly: false,
                tmpfs: true,
            });
        }

        let (seccomp, allow_privilege_escalation) = parse_security_opts(&req.security_opt)?;
        let network_namespace = match network {
            NetworkMode::Host => NamespaceMode::Host,
            _ => NamespaceMode::Private,
        };
        if let Some(cpus) = req.cpus {
            if cpus <= 0.0 {
                return Err(EngineError::InvalidArgument(format!(
                    "invalid --cpus value {cpus}: must be greater than 0"
                )));
            }
        }
        let resources = Resources {
            memory: req.memory,
            memory_swap: req.memory_swap,
            cpu_shares: req.cpu_shares,
            cpu_quota: req
                .cpu_quota
                .or(req.cpus.map(|c| (c * 100_000.0).round() as i64)),
            cpu_period: req
                .cpu_period
                .or((req.cpus.is_some() || req.cpu_quota.is_some()).then_some(100_000)),
            pids_limit: req.pids_limit,
        };
        if let Some(m) = req.memory {
            if m < 6 * 1024 * 1024 {
                return Err(EngineError::InvalidArgument(
                    "Minimum memory limit allowed is 6MB".into(),
                ));
            }
            if let Some(swap) = req.memory_swap {
                if swap != -1 && swap < m {
                    return Err(EngineError::InvalidArgument(
                        "Minimum memoryswap limit should be larger than memory limit, see usage"
                            .into(),
                    ));
                }
            }
        }

        let spec = ContainerSpec {
            id: id.to_string(),
            rootfs,
            readonly_rootfs: req.read_only,
            args,
            env,
            cwd,
            user,
            hostname,
            terminal: req.tty,
            mounts,
            cap_add: req.cap_add.clone(),
            cap_drop: req.cap_drop.clone(),
            privileged: req.privileged,
            seccomp,
            allow_privilege_escalation,
            resources,
            network: network_namespace,
            pid: NamespaceMode::Private,
            ipc: NamespaceMode::Private,
            uts: NamespaceMode::Private,
            cgroup_path: cgroup_path(req.cgroup_parent.as_deref(), id)?,
            init: req.init,
            sysctls: opts.sysctls.clone(),
            annotations: if opts.pause {
                vec![(
                    skiff_runtime::init::PAUSE_ANNOTATION.to_string(),
                    "true".to_string(),
                )]
            } else {
                Vec::new()
            },
        };
        // Validate capabilities and the whole spec now, so `create` fails, not `start`.
        spec.to_oci()?;

        let stop_signal = req
            .stop_signal
            .clone()
            .or_else(|| config.stop_signal().clone())
            .unwrap_or_else(|| "SIGTERM".to_string());
        skiff_runtime::kill::parse_signal(&stop_signal)
            .map_err(|e| EngineError::InvalidArgument(e.to_string()))?;

        let record = ContainerRecord {
            id: id.to_string(),
            name: name.to_string(),
            created: Utc::now(),
            image: req.image.clone(),
            image_id: image.id.to_string(),
            request: req.clone(),
            stop_signal,
            mounts: mount_points,
            spec,
            network,
            ports,
            namespaces_of: opts.namespaces_of.clone(),
            pid_namespace_of: opts.pid_namespace_of.clone(),
            health: self.health_check(req, image)?,
        };
        // A `--rm` container is gone at its exit: no need to make its record durable.
        let write = if req.auto_remove {
            skiff_runtime::status::write_replace
        } else {
            skiff_runtime::status::write_atomic
        };
        write(
            &files.record(),
            &serde_json::to_vec_pretty(&record).expect("record serialises"),
        )
        .map_err(EngineError::io("writing container record"))?;
        Ok(record)
    }

    /// The image's HEALTHCHECK with the `--health-*` flags applied.
    fn health_check(
        &self,
        req: &CreateRequest,
        image: &skiff_images::ImageRecord,
    ) -> Result<Option<skiff_runtime::health::HealthConfig>> {
        use skiff_runtime::health::{
            HealthConfig, DEFAULT_INTERVAL, DEFAULT_RETRIES, DEFAULT_TIMEOUT,
        };
        if req.no_healthcheck {
            return Ok(None);
        }
        // OCI's config type has no Healthcheck: read Docker's field from the raw config.
        let raw: serde_json::Value = self
            .images
            .blobs()
            .read(&image.config.digest)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default();
        let from_image = HealthConfig::from_docker(&raw["config"]["Healthcheck"]);
        let mut health = match (&req.health_cmd, from_image) {
            (Some(cmd), _) => HealthConfig {
                test: vec!["/bin/sh".into(), "-c".into(), cmd.clone()],
                interval: DEFAULT_INTERVAL,
                timeout: DEFAULT_TIMEOUT,
                start_period: std::time::Duration::ZERO,
                retries: DEFAULT_RETRIES,
            },
            (None, Some(h)) => h,
            (None, None) => return Ok(None),
        };
        if let Some(v) = req.health_interval {
            health.interval = v;
        }
        if let Some(v) = req.health_timeout {
            health.timeout = v;
        }
        if let Some(v) = req.health_start_period {
            health.start_period = v;
        }
        if let Some(v) = req.health_retries {
            health.retries = v;
        }
        if health.interval.is_zero() || health.timeout.is_zero() {
            return Err(EngineError::InvalidArgument(
                "health interval and timeout must be greater than 0".into(),
            ));
        }
        Ok(Some(health))
    }

    /// Resolves `-v` flags and the image's VOLUMEs into runtime mounts.
    fn prepare_volumes(
        &self,
        req: &CreateRequest,
        config: &oci_spec::image::Config,
        rootfs: &Path,
    ) -> Result<(Vec<Mount>, Vec<MountPoint>)> {
        let mut mounts = Vec::new();
        let mut points = Vec::new();
        let mut specs: Vec<VolumeSpec> = req
            .volumes
            .iter()
            .map(|v| parse_volume(v))
            .collect::<Result<_>>()?;
        for dest in config.volumes().clone().unwrap_or_default() {
            let dest = dest.trim_end_matches('/').to_string();
            let covered = specs.iter().any(|s| match s {
                VolumeSpec::Named { destination, .. }
                | VolumeSpec::Bind { destination, .. }
                | VolumeSpec::Anonymous { destination } => {
                    destination.trim_end_matches('/') == dest
                }
            });
            if !covered {
                specs.push(VolumeSpec::Anonymous { destination: dest });
            }
        }
        for spec in specs {
            let (name, destination, readonly, anonymous) = match spec {
                VolumeSpec::Bind {
                    source,
                    destination,
                    readonly,
                } => {
                    if !source.exists() {
                        // Docker creates a missing bind source directory.
                        std::fs::create_dir_all(&source).map_err(EngineError::io(format!(
                            "creating bind mount source {}",
                            source.display()
                        )))?;
                    }
                    mounts.push(Mount {
                        source: source.clone(),
                        destination: destination.clone(),
                        readonly,
                        tmpfs: false,
                    });
                    points.push(MountPoint {
                        kind: "bind".into(),
                        name: String::new(),
                        source,
                        destination,
                        rw: !readonly,
                    });
                    continue;
                }
                VolumeSpec::Named {
                    name,
                    destination,
                    readonly,
                } => (name, destination, readonly, false),
                VolumeSpec::Anonymous { destination } => (random_id(), destination, false, true),
            };
            // Two creates naming a new volume: one creates and fills it.
            let _lock = match anonymous {
                true => None,
                false => Some(
                    FileLock::acquire(&self.roots.containers_lock())
                        .map_err(EngineError::io("locking containers"))?,
                ),
            };
            let (volume, created) = self.volumes.create(&name, BTreeMap::new(), anonymous)?;
            if created {
                // Docker copies the image's content at the mount point into a new volume.
                let image_dir = rootfs.join(destination.trim_start_matches('/'));
                if image_dir.is_dir() {
                    let status = std::process::Command::new("cp")
                        .arg("-a")
                        .arg(format!("{}/.", image_dir.display()))
                        .arg(&volume.mountpoint)
                        .status()
                        .map_err(EngineError::io("copying image content into volume"))?;
                    if !status.success() {
                        return Err(EngineError::InvalidArgument(format!(
                            "copying image content of {destination} into volume {name} failed"
                        )));
                    }
                }
            }
            mounts.push(Mount {
                source: volume.mountpoint.clone(),
                destination: destination.clone(),
                readonly,
                tmpfs: false,
            });
            points.push(MountPoint {
                kind: "volume".into(),
                name,
                source: volume.mountpoint,
                destination,
                rw: !readonly,
            });
        }
        Ok((mounts, points))
    }
}

/// The host's resolv.conf without loopback resolvers, which a container cannot reach.
fn resolv_conf(host: &str) -> String {
    let kept: Vec<&str> = host
        .lines()
        .filter(|l| {
            let mut w = l.split_whitespace();
            !(w.next() == Some("nameserver")
                && w.next()
                    .is_some_and(|ip| ip.starts_with("127.") || ip == "::1"))
        })
        .collect();
    let mut out = kept.join("\n");
    if !out.is_empty() {
        out.push('\n');
    }
    out
}

/// Accepts Docker's profile format as well as OCI's: Docker lists
/// architectures under `archMap` and may add `includes`/`excludes`
/// conditions per rule, which OCI does not have.
fn oci_seccomp_from_docker(mut profile: serde_json::Value) -> serde_json::Value {
    if let Some(obj) = profile.as_object_mut() {
        if let Some(arch_map) = obj.remove("archMap") {
            if !obj.contains_key("architectures") {
                let arches: Vec<serde_json::Value> = arch_map
                    .as_array()
                    .into_iter()
                    .flatten()
                    .flat_map(|a| {
                        let mut v = vec![a["architecture"].clone()];
                        v.extend(
                            a["subArchitectures"]
                                .as_array()
                                .cloned()
                                .unwrap_or_default(),
                        );
                        v
                    })
                    .collect();
                obj.insert("architectures".into(), serde_json::Value::Array(arches));
            }
        }
        obj.remove("defaultErrno");
        if let Some(rules) = obj.get_mut("syscalls").and_then(|s| s.as_array_mut()) {
            for rule in rules.iter_mut().filter_map(|r| r.as_object_mut()) {
                for docker_only in ["includes", "excludes", "comment"] {
                    rule.remove(docker_only);
                }
                if let Some(name) = rule.remove("name") {
                    rule.insert("names".into(), serde_json::json!([name]));
                }
            }
        }
    }
    profile
}

/// `--security-opt`: `seccomp=unconfined|PATH`, `no-new-privileges[=true|false]`.
fn parse_security_opts(opts: &[String]) -> Result<(SeccompMode, bool)> {
    let mut seccomp = SeccompMode::Default;
    let mut allow_escalation = false;
    for opt in opts {
        let (key, value) = opt
            .split_once(['=', ':'])
            .map(|(k, v)| (k, Some(v)))
            .unwrap_or((opt.as_str(), None));
        match (key, value) {
            ("seccomp", Some("unconfined")) => seccomp = SeccompMode::Unconfined,
            ("seccomp", Some(path)) => {
                let text = std::fs::read_to_string(path).map_err(|e| {
                    EngineError::InvalidArgument(format!(
                        "opening seccomp profile ({path}) failed: {e}"
                    ))
                })?;
                let profile: serde_json::Value = serde_json::from_str(&text).map_err(|e| {
                    EngineError::InvalidArgument(format!(
                        "decoding seccomp profile ({path}) failed: {e}"
                    ))
                })?;
                let profile = oci_seccomp_from_docker(profile);
                serde_json::from_value::<oci_spec::runtime::LinuxSeccomp>(profile.clone())
                    .map_err(|e| {
                        EngineError::InvalidArgument(format!(
                            "decoding seccomp profile ({path}) failed: {e}"
                        ))
                    })?;
                seccomp = SeccompMode::Profile(profile);
            }
            ("no-new-privileges", None | Some("true")) => allow_escalation = false,
            ("no-new-privileges", Some("false")) => allow_escalation = true,
            _ => {
                return Err(EngineError::InvalidArgument(format!(
                    "invalid --security-opt: {opt:?}"
                )))
            }
        }
    }
    Ok((seccomp, allow_escalation))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn volume_specs_parse_like_docker() {
        assert_eq!(
            parse_volume("data:/var/lib/data").unwrap(),
            VolumeSpec::Named {
                name: "data".into(),
                destination: "/var/lib/data".into(),
                readonly: false
            }
        );
        assert_eq!(
            parse_volume("/srv:/srv:ro").unwrap(),
            VolumeSpec::Bind {
                source: "/srv".into(),
                destination: "/srv".into(),
                readonly: true
            }
        );
        assert_eq!(
            parse_volume("/cache").unwrap(),
            VolumeSpec::Anonymous {
                destination: "/cache".into()
            }
        );
        assert!(parse_volume("data:relative").is_err());
        assert!(parse_volume("a:/b:rx").is_err());
    }

    #[test]
    fn cgroup_parent_holds_the_containers_cgroup() {
        assert_eq!(cgroup_path(None, "abc").unwrap(), "/skiff/abc");
        assert_eq!(
            cgroup_path(Some("/k/kubepods/burstable/pod1/"), "abc").unwrap(),
            "/k/kubepods/burstable/pod1/abc"
        );
        assert!(cgroup_path(Some("relative"), "abc").is_err());
        assert!(cgroup_path(Some("/a/../b"), "abc").is_err());
    }

    #[test]
    fn sizes_parse() {
        assert_eq!(parse_bytes("512m").unwrap(), 512 << 20);
        assert_eq!(parse_bytes("1g").unwrap(), 1 << 30);
        assert_eq!(parse_bytes("1.5k").unwrap(), 1536);
        assert_eq!(parse_bytes("100").unwrap(), 100);
        assert!(parse_bytes("lots").is_err());
    }

    #[test]
    fn env_overrides_keep_order() {
        let merged = merge_env(
            &["PATH=/bin".to_string(), "A=1".to_string()],
            &["A=2".to_string(), "B=3".to_string()],
        );
        assert_eq!(merged, vec!["PATH=/bin", "A=2", "B=3"]);
    }

    #[test]
    fn docker_seccomp_profiles_convert() {
        let docker = serde_json::json!({
            "defaultAction": "SCMP_ACT_ERRNO",
            "archMap": [{"architecture": "SCMP_ARCH_X86_64", "subArchitectures": ["SCMP_ARCH_X86"]}],
            "syscalls": [{"names": ["read"], "action": "SCMP_ACT_ALLOW", "includes": {}, "excludes": {}}]
        });
        let oci = oci_seccomp_from_docker(docker);
        let parsed: oci_spec::runtime::LinuxSeccomp = serde_json::from_value(oci).unwrap();
        assert_eq!(parsed.architectures().as_ref().unwrap().len(), 2);
    }

    #[test]
    fn security_opts() {
        let (s, esc) = parse_security_opts(&["seccomp=unconfined".into()]).unwrap();
        assert_eq!(s, SeccompMode::Unconfined);
        assert!(!esc);
        assert!(parse_security_opts(&["apparmor=x".into()]).is_err());
        assert!(parse_security_opts(&["seccomp=/nonexistent.json".into()]).is_err());
    }
}
