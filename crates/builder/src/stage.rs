//! Running one stage: FROM, then each instruction in order. Config instructions update
//! the image config; RUN, COPY and ADD produce layers, unless the cache has the step.

use std::collections::BTreeMap;
use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};

use skiff_engine::TransientRequest;
use skiff_images::LayerRecord;

use crate::build::{inside, Shared, Source};
use crate::cache::{self, CacheEntry};
use crate::config::{Empty, HealthConfig, History, ImageConfig};
use crate::context::{EntryKind, SelectedRoot};
use crate::dockerfile::{self, CommandLine, Copy, Instruction, Kind, MountKind, Run};
use crate::fsutil::{self, Ownership, TempDir, View};
use crate::progress::Vertex;
use crate::{shell, BuildError};

/// Where the runtime mounts proc, sysfs and /dev (runc's defaults).
const RUNTIME_MOUNT_POINTS: &[&str] = &[
    "/proc",
    "/dev",
    "/dev/pts",
    "/dev/shm",
    "/dev/mqueue",
    "/sys",
    "/sys/fs/cgroup",
];

const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// What a finished stage hands to the stages and the export after it.
#[derive(Debug, Clone)]
pub struct StageResult {
    /// The image config (history included).
    pub config: ImageConfig,
    /// Layers, bottom first.
    pub layers: Vec<LayerRecord>,
    /// The cache key of the last step: names the stage's whole content.
    pub key: String,
}

/// The state of a stage while its instructions run.
pub(crate) struct StageRunner<'s, 'e> {
    shared: &'s Shared<'e>,
    index: usize,
    name: String,
    config: ImageConfig,
    layers: Vec<LayerRecord>,
    key: String,
    /// ARGs declared in this stage, with their values.
    args: BTreeMap<String, String>,
    /// Timestamp of the newest layer step (history `created`).
    created: Option<String>,
    step: usize,
    total: usize,
    cmd_set: bool,
}

/// Docker's time format in configs: RFC 3339 in UTC.
fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Nanos, true)
}

impl<'s, 'e> StageRunner<'s, 'e> {
    /// Runs stage `index` to the end.
    pub fn run(shared: &'s Shared<'e>, index: usize) -> Result<StageResult, BuildError> {
        let stage = &shared.dockerfile.stages[index];
        let total = 1 + stage
            .instructions
            .iter()
            .filter(|i| i.kind.makes_layer())
            .count();
        let mut runner = StageRunner {
            shared,
            index,
            name: stage.display_name(),
            config: ImageConfig::default(),
            layers: Vec::new(),
            key: String::new(),
            args: BTreeMap::new(),
            created: None,
            step: 1,
            total,
            cmd_set: false,
        };
        runner.from()?;
        let triggers = runner.config.config.on_build.take().unwrap_or_default();
        for t in triggers {
            let ins = dockerfile::parse_trigger(&t, shared.dockerfile.escape).map_err(|m| {
                BuildError::Instruction {
                    file: shared.file.clone(),
                    line: stage.line,
                    instruction: format!("ONBUILD {t}"),
                    message: m,
                }
            })?;
            runner.total += usize::from(ins.kind.makes_layer());
            runner.execute(&Instruction {
                line: stage.line,
                ..ins
            })?;
        }
        for ins in &stage.instructions {
            runner.execute(ins)?;
        }
        runner.config.created = runner.created.clone().or(runner.config.created);
        Ok(StageResult {
            config: runner.config,
            layers: runner.layers,
            key: runner.key,
        })
    }

    fn title(&mut self, text: &str) -> String {
        let t = format!("[{} {}/{}] {}", self.name, self.step, self.total, text);
        self.step += 1;
        t
    }

    fn error(&self, ins: &Instruction, message: impl Into<String>) -> BuildError {
        BuildError::Instruction {
            file: self.shared.file.clone(),
            line: ins.line,
            instruction: ins.text.clone(),
            message: message.into(),
        }
    }

    fn from(&mut self) -> Result<(), BuildError> {
        let shared = self.shared;
        let stage = &shared.dockerfile.stages[self.index];
        let base = shared.stage_base(self.index)?;
        let from_error = |message: String| BuildError::Instruction {
            file: shared.file.clone(),
            line: stage.line,
            instruction: stage.text.clone(),
            message,
        };
        // FROM --platform was checked for every stage before the build started.
        let title = self.title(&format!("FROM {base}"));
        let v = shared.progress.start(&title);
        if base == "scratch" {
            let host = skiff_images::Platform::host();
            self.config.architecture = host.architecture;
            self.config.os = host.os;
            self.config.variant = host.variant;
            self.key = cache::root_key("scratch");
        } else if let Some(dep) = shared.stage_named(&base, self.index) {
            let r = shared.wait_stage(dep)?;
            self.config = r.config.clone();
            self.layers = r.layers.clone();
            self.key = r.key.clone();
        } else {
            let rec = match shared.store.resolve(&base) {
                Ok(rec) => rec,
                Err(skiff_images::StoreError::NotFound(_)) => {
                    v.status(&format!("pulling {base}"));
                    self.pull(&base).map_err(|e| {
                        from_error(format!("{base}: not found locally and pulling failed: {e}"))
                    })?
                }
                Err(e) => return Err(e.into()),
            };
            let bytes = shared.store.blobs().read(&rec.config.digest)?;
            self.config = serde_json::from_slice(&bytes)
                .map_err(|e| from_error(format!("image {base} has an invalid config: {e}")))?;
            self.layers = rec.layers.clone();
            self.key = cache::root_key(&format!("image:{}", rec.id));
            self.created = self.config.created.clone();
            if let Some(name) = rec.repo_tags.first() {
                v.status(&format!("resolve {name}@{} done", rec.manifest.digest));
            }
        }
        v.done();
        Ok(())
    }

    fn pull(&self, base: &str) -> Result<skiff_images::ImageRecord, String> {
        let reference = skiff_images::Reference::parse(base).map_err(|e| e.to_string())?;
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| e.to_string())?;
        rt.block_on(skiff_images::pull(
            &self.shared.store,
            &reference,
            &skiff_images::PullOptions::default(),
            &skiff_images::NoProgress,
        ))
        .map_err(|e| e.to_string())
    }

    /// Expands a word with the stage's variables: ENV first, then ARG.
    fn expand(&self, ins: &Instruction, word: &str) -> Result<String, BuildError> {
        let lookup = |n: &str| {
            self.config
                .config
                .env_get(n)
                .or_else(|| self.args.get(n).cloned())
        };
        shell::expand(word, self.shared.dockerfile.escape, &lookup).map_err(|source| {
            BuildError::Substitution {
                file: self.shared.file.clone(),
                line: ins.line,
                instruction: ins.text.clone(),
                source,
            }
        })
    }

    /// Records a step without a layer.
    fn metadata(&mut self, created_by: String) {
        self.key = cache::chain(&self.key, &created_by);
        self.config.history.push(History {
            created: self.created.clone(),
            created_by: Some(created_by),
            comment: Some("buildkit.dockerfile.v0".into()),
            empty_layer: true,
        });
    }

    fn shell(&self) -> Vec<String> {
        self.config
            .config
            .shell
            .clone()
            .unwrap_or_else(|| vec!["/bin/sh".into(), "-c".into()])
    }

    fn argv(&self, cmd: &CommandLine) -> Vec<String> {
        match cmd {
            CommandLine::Exec(v) => v.clone(),
            CommandLine::Shell(s) => {
                let mut v = self.shell();
                v.push(s.clone());
                v
            }
        }
    }

    fn execute(&mut self, ins: &Instruction) -> Result<(), BuildError> {
        match &ins.kind {
            Kind::Env(pairs) => {
                let mut parts = Vec::new();
                for (k, v) in pairs {
                    let k = self.expand(ins, k)?;
                    let v = self.expand(ins, v)?;
                    self.config.config.env_set(&k, &v);
                    parts.push(format!("{k}={v}"));
                }
                self.metadata(format!("ENV {}", parts.join(" ")));
            }
            Kind::Arg(decls) => {
                for d in decls {
                    let value = match (self.shared.opts.build_args.get(&d.name), &d.default) {
                        (Some(v), _) => Some(v.clone()),
                        (None, Some(def)) => Some(self.expand(ins, def)?),
                        (None, None) => self.shared.global_args.get(&d.name).cloned(),
                    };
                    // Not part of the chain, as in BuildKit: a value reaches the cache key
                    // of each later step that sees it, that is every RUN (through its
                    // environment) and other steps only where they substitute it.
                    if let Some(v) = value {
                        self.args.insert(d.name.clone(), v);
                    }
                }
            }
            Kind::Label(pairs) => {
                let mut parts = Vec::new();
                for (k, v) in pairs {
                    let k = self.expand(ins, k)?;
                    let v = self.expand(ins, v)?;
                    parts.push(format!("{k}={v}"));
                    self.config
                        .config
                        .labels
                        .get_or_insert_with(BTreeMap::new)
                        .insert(k, v);
                }
                self.metadata(format!("LABEL {}", parts.join(" ")));
            }
            Kind::User(u) => {
                let u = self.expand(ins, u)?;
                self.config.config.user = Some(u.clone());
                self.metadata(format!("USER {u}"));
            }
            Kind::Workdir(w) => {
                let w = self.expand(ins, w)?;
                let base = self
                    .config
                    .config
                    .working_dir
                    .clone()
                    .unwrap_or_else(|| "/".into());
                let dir = clean_path(&Path::new(&base).join(&w));
                self.config.config.working_dir = Some(dir.clone());
                self.metadata(format!("WORKDIR {dir}"));
            }
            Kind::Expose(ports) => {
                let mut shown = Vec::new();
                for p in ports {
                    let p = self.expand(ins, p)?;
                    for port in p.split_whitespace() {
                        let port = if port.contains('/') {
                            port.to_ascii_lowercase()
                        } else {
                            format!("{port}/tcp")
                        };
                        shown.push(port.clone());
                        self.config
                            .config
                            .exposed_ports
                            .get_or_insert_with(BTreeMap::new)
                            .insert(port, Empty {});
                    }
                }
                self.metadata(format!("EXPOSE {}", shown.join(" ")));
            }
            Kind::Volume(vols) => {
                let mut shown = Vec::new();
                for v in vols {
                    let v = self.expand(ins, v)?;
                    shown.push(v.clone());
                    self.config
                        .config
                        .volumes
                        .get_or_insert_with(BTreeMap::new)
                        .insert(v, Empty {});
                }
                self.metadata(format!("VOLUME [{}]", shown.join(" ")));
            }
            Kind::StopSignal(s) => {
                let s = self.expand(ins, s)?;
                skiff_runtime::kill::parse_signal(&s)
                    .map_err(|e| self.error(ins, e.to_string()))?;
                self.config.config.stop_signal = Some(s.clone());
                self.metadata(format!("STOPSIGNAL {s}"));
            }
            Kind::Shell(v) => {
                self.config.config.shell = Some(v.clone());
                self.metadata(format!("SHELL {}", json(v)));
            }
            Kind::Healthcheck(h) => {
                let hc = match h {
                    None => HealthConfig {
                        test: vec!["NONE".into()],
                        ..Default::default()
                    },
                    Some(h) => {
                        let ns = |d: Option<std::time::Duration>| d.map(|d| d.as_nanos() as u64);
                        HealthConfig {
                            test: match &h.test {
                                CommandLine::Shell(s) => vec!["CMD-SHELL".into(), s.clone()],
                                CommandLine::Exec(v) => {
                                    let mut t = vec!["CMD".to_string()];
                                    t.extend(v.iter().cloned());
                                    t
                                }
                            },
                            interval: ns(h.interval),
                            timeout: ns(h.timeout),
                            start_period: ns(h.start_period),
                            start_interval: ns(h.start_interval),
                            retries: h.retries,
                        }
                    }
                };
                let shown = json(&hc.test);
                self.config.config.healthcheck = Some(hc);
                self.metadata(format!("HEALTHCHECK {shown}"));
            }
            Kind::Cmd(c) => {
                let argv = self.argv(c);
                self.metadata(format!("CMD {}", json(&argv)));
                self.config.config.cmd = Some(argv);
                self.cmd_set = true;
            }
            Kind::Entrypoint(c) => {
                let argv = self.argv(c);
                self.metadata(format!("ENTRYPOINT {}", json(&argv)));
                self.config.config.entrypoint = Some(argv);
                // As Docker: a new ENTRYPOINT drops a CMD inherited from the base image.
                if !self.cmd_set {
                    self.config.config.cmd = None;
                }
            }
            Kind::OnBuild(t) => {
                self.config
                    .config
                    .on_build
                    .get_or_insert_with(Vec::new)
                    .push(t.clone());
                self.metadata(format!("ONBUILD {t}"));
            }
            Kind::Maintainer(m) => {
                self.config.author = Some(m.clone());
                self.metadata(format!("MAINTAINER {m}"));
            }
            Kind::Run(run) => self.run_step(ins, run)?,
            Kind::Copy(c) => self.copy_step(ins, c, false)?,
            Kind::Add(c) => self.copy_step(ins, c, true)?,
        }
        Ok(())
    }

    /// Looks the step up in the cache; on a hit records it and returns `None`.
    fn cached<'v>(&mut self, key: &str, created_by: &str, v: Vertex<'v>) -> Option<Vertex<'v>> {
        if self.shared.opts.no_cache {
            return Some(v);
        }
        match self.shared.cache.get(key, &self.shared.store) {
            Some(entry) => {
                v.cached();
                self.push_layer(key, created_by, entry);
                None
            }
            None => Some(v),
        }
    }

    fn push_layer(&mut self, key: &str, created_by: &str, entry: CacheEntry) {
        self.key = key.to_string();
        self.layers.push(entry.layer);
        self.created = Some(entry.created.clone());
        self.config.history.push(History {
            created: Some(entry.created),
            created_by: Some(created_by.to_string()),
            comment: Some("buildkit.dockerfile.v0".into()),
            empty_layer: false,
        });
    }

    fn record(
        &mut self,
        key: &str,
        created_by: &str,
        layer: LayerRecord,
    ) -> Result<(), BuildError> {
        let entry = CacheEntry {
            layer,
            created: now(),
        };
        // The layer outlives the images that use it (an intermediate stage has none),
        // until the build cache is pruned.
        let held = self
            .shared
            .store
            .hold(&cache::hold_name(key), std::slice::from_ref(&entry.layer));
        if let Err(e) = held.map_err(|e| e.to_string()).and_then(|()| {
            self.shared
                .cache
                .put(key, &entry)
                .map_err(|e| e.to_string())
        }) {
            tracing::warn!("cannot record build cache entry: {e}");
        }
        self.push_layer(key, created_by, entry);
        Ok(())
    }

    /// The stage's ARGs as `KEY=value` where no ENV of the same name hides them: what a
    /// RUN step sees of them.
    fn arg_env(&self) -> Vec<String> {
        self.args
            .iter()
            .filter(|(k, _)| self.config.config.env_get(k).is_none())
            .map(|(k, v)| format!("{k}={v}"))
            .collect()
    }

    fn run_env(&self) -> Vec<String> {
        let mut env: Vec<String> = self.config.config.env_list().to_vec();
        if !env.iter().any(|e| e.starts_with("PATH=")) {
            env.insert(0, format!("PATH={DEFAULT_PATH}"));
        }
        env.extend(self.arg_env());
        env
    }

    fn run_step(&mut self, ins: &Instruction, run: &Run) -> Result<(), BuildError> {
        let shared = self.shared;
        let argv = self.argv(&run.command);
        let arg_env = self.arg_env();
        let created_by = cache::run_created_by(&run.command, &argv, &arg_env);
        let mut mounts_desc = Vec::new();
        let mut mounts = Vec::new();
        for m in &run.mounts {
            let target = m
                .target
                .as_deref()
                .map(|t| self.expand(ins, t))
                .transpose()?;
            let source = m
                .source
                .as_deref()
                .map(|s| self.expand(ins, s))
                .transpose()?;
            let from = m.from.as_deref().map(|s| self.expand(ins, s)).transpose()?;
            let id = m.id.as_deref().map(|s| self.expand(ins, s)).transpose()?;
            let from_key = match &from {
                Some(f) => match shared.source(f, self.index) {
                    Source::Stage(i) => shared.wait_stage(i)?.key.clone(),
                    Source::Image(name) => shared.store.resolve(&name)?.id.to_string(),
                },
                None => String::new(),
            };
            // Secrets and caches change nothing the key must know about; binds of the
            // context change with the context.
            let context_digest = match (m.kind, &from) {
                (MountKind::Bind, None) => {
                    let src = source.clone().unwrap_or_else(|| ".".into());
                    shared
                        .context
                        .select(&src)
                        .map(|s| s.digest())
                        .unwrap_or_default()
                }
                _ => String::new(),
            };
            mounts_desc.push(format!(
                "{:?} target={target:?} source={source:?} from={from_key} id={id:?} rw={:?} ctx={context_digest}",
                m.kind, m.readwrite
            ));
            mounts.push((m.clone(), target, source, from, id));
        }
        let key = cache::chain(&self.key, &cache::run_step(&argv, &arg_env, &mounts_desc));
        let title = self.title(&ins.text);
        let v = shared.progress.start(&title);
        let Some(mut v) = self.cached(&key, &created_by, v) else {
            return Ok(());
        };
        match self.execute_run(ins, run, argv, mounts, &mut v) {
            Ok(layer) => {
                v.done();
                self.record(&key, &created_by, layer)
            }
            Err(e) => {
                v.error(&e.to_string());
                Err(e)
            }
        }
    }

    #[allow(clippy::type_complexity)]
    fn execute_run(
        &self,
        ins: &Instruction,
        run: &Run,
        argv: Vec<String>,
        mounts: Vec<(
            dockerfile::RunMount,
            Option<String>,
            Option<String>,
            Option<String>,
            Option<String>,
        )>,
        v: &mut Vertex<'_>,
    ) -> Result<LayerRecord, BuildError> {
        let shared = self.shared;
        let tmp = TempDir(shared.temp_dir()?);
        let mut rootfs = View::mount(&shared.store, &self.layers, &tmp.0.join("rootfs"))?;
        let root = rootfs.root();
        let cwd = self
            .config
            .config
            .working_dir
            .clone()
            .filter(|w| !w.is_empty())
            .unwrap_or_else(|| "/".into());
        let cwd_path = root.join(cwd.trim_start_matches('/'));
        fs::create_dir_all(&cwd_path).map_err(BuildError::io("creating", &cwd_path))?;

        let mut runtime_mounts = Vec::new();
        // The runtime's own mounts create their mount points when the image lacks them.
        let mut mount_points: Vec<PathBuf> = RUNTIME_MOUNT_POINTS
            .iter()
            .flat_map(|t| fsutil::missing_ancestors(&root, t))
            .collect();
        let mut views = Vec::new();
        for (n, (m, target, source, from, id)) in mounts.into_iter().enumerate() {
            let target = match (m.kind, target) {
                (_, Some(t)) => abs(&t, &cwd),
                (MountKind::Secret, None) => {
                    format!("/run/secrets/{}", id.clone().unwrap_or_default())
                }
                (_, None) => return Err(self.error(ins, "a mount needs target=")),
            };
            let (source, readonly, tmpfs) = match m.kind {
                MountKind::Cache => {
                    let dir = shared.cache_mount_dir(id.as_deref().unwrap_or(&target));
                    if !dir.exists() {
                        fs::create_dir_all(&dir).map_err(BuildError::io("creating", &dir))?;
                        let _ = std::os::unix::fs::lchown(&dir, m.uid, m.gid);
                        if let Some(mode) = m.mode {
                            use std::os::unix::fs::PermissionsExt;
                            let _ = fs::set_permissions(&dir, fs::Permissions::from_mode(mode));
                        }
                    }
                    (dir, m.readwrite == Some(false), false)
                }
                MountKind::Secret => {
                    let id = id.clone().unwrap_or_else(|| {
                        Path::new(&target)
                            .file_name()
                            .map(|f| f.to_string_lossy().into_owned())
                            .unwrap_or_default()
                    });
                    match shared.opts.secrets.iter().find(|s| s.id == id) {
                        Some(s) => {
                            let src = fs::canonicalize(&s.src)
                                .map_err(BuildError::io("reading secret", &s.src))?;
                            (src, true, false)
                        }
                        None if m.required => {
                            return Err(self.error(
                                ins,
                                format!("secret {id} not found: pass --secret id={id},src=PATH"),
                            ))
                        }
                        None => continue,
                    }
                }
                MountKind::Tmpfs => (PathBuf::new(), false, true),
                MountKind::Bind => {
                    let rel = source.clone().unwrap_or_else(|| ".".into());
                    let base = match &from {
                        None => shared.context.root.clone(),
                        Some(f) => {
                            let layers = match shared.source(f, self.index) {
                                Source::Stage(i) => shared.wait_stage(i)?.layers.clone(),
                                Source::Image(name) => shared.store.resolve(&name)?.layers,
                            };
                            let view = View::mount(
                                &shared.store,
                                &layers,
                                &tmp.0.join(format!("from-{n}")),
                            )?;
                            let r = view.root();
                            views.push(view);
                            r
                        }
                    };
                    let src = base.join(rel.trim_start_matches('/'));
                    if !inside(&base, &src) || !src.exists() {
                        return Err(self.error(ins, format!("bind source {rel} not found")));
                    }
                    if m.readwrite == Some(true) {
                        // `rw`: the step may write, as BuildKit allows, but the writes go
                        // to a scratch copy dropped after the step: never into the
                        // context, the source stage or this step's layer. A stage or
                        // image is already a throwaway overlay view.
                        let scratch = tmp.0.join(format!("rw-{n}"));
                        let src = if from.is_some() {
                            src
                        } else if src.is_dir() {
                            let view = View::over(std::slice::from_ref(&src), &scratch)?;
                            let r = view.root();
                            views.push(view);
                            r
                        } else {
                            fs::create_dir_all(&scratch)
                                .map_err(BuildError::io("creating", &scratch))?;
                            let copy = scratch.join("file");
                            fs::copy(&src, &copy).map_err(BuildError::io("copying", &src))?;
                            copy
                        };
                        (src, false, false)
                    } else {
                        (src, true, false)
                    }
                }
            };
            mount_points.extend(fsutil::missing_ancestors(&root, &target));
            runtime_mounts.push(skiff_runtime::Mount {
                source,
                destination: target,
                readonly,
                tmpfs,
            });
        }

        let host_network = match run.network.as_deref() {
            Some("host") => true,
            Some("none") => false,
            _ => shared.opts.host_network,
        };
        let req = TransientRequest {
            rootfs: root.clone(),
            args: argv.clone(),
            env: self.run_env(),
            cwd,
            user: self.config.config.user.clone().unwrap_or_default(),
            mounts: runtime_mounts,
            host_network,
        };
        let status = shared.engine.run_transient(&req, v)?;
        drop(views);
        rootfs.unmount()?;
        if status.exit_code != 0 || status.error.is_some() {
            if let Some(err) = &status.error {
                v.log(err);
            }
            return Err(BuildError::RunFailed {
                file: shared.file.clone(),
                line: ins.line,
                command: argv.join(" "),
                code: status.exit_code,
            });
        }
        let upper = rootfs.upper();
        fsutil::remove_mount_points(&upper, &mount_points);
        Ok(shared.store.add_layer_from_dir(&upper)?)
    }

    fn ownership(
        &self,
        ins: &Instruction,
        chown: Option<&str>,
        chmod: Option<&str>,
    ) -> Result<Ownership, BuildError> {
        let mode = chmod
            .map(|m| {
                u32::from_str_radix(m, 8)
                    .ok()
                    .filter(|m| *m <= 0o7777)
                    .ok_or_else(|| {
                        self.error(
                            ins,
                            format!("invalid --chmod={m}: use an octal mode such as 755"),
                        )
                    })
            })
            .transpose()?;
        let (uid, gid) = match chown {
            None => (0, 0),
            Some(spec) => {
                let (u, g) = match spec.split_once(':') {
                    Some((u, g)) => (u, Some(g)),
                    None => (spec, None),
                };
                match (u.parse::<u32>(), g.map(|g| g.parse::<u32>())) {
                    (Ok(uid), None) => (uid, uid),
                    (Ok(uid), Some(Ok(gid))) => (uid, gid),
                    _ => {
                        // Names: resolve against the image's /etc/passwd and /etc/group.
                        let tmp = TempDir(self.shared.temp_dir()?);
                        fs::create_dir_all(tmp.0.join("etc"))
                            .map_err(BuildError::io("creating", &tmp.0))?;
                        for db in ["etc/passwd", "etc/group"] {
                            if let Some(layer) = self.layers.iter().rev().find_map(|l| {
                                let p = self.shared.store.layer_dir(&l.diff_id).ok()?.join(db);
                                p.is_file().then_some(p)
                            }) {
                                let _ = fs::copy(layer, tmp.0.join(db));
                            }
                        }
                        let user = skiff_engine::users::resolve(&tmp.0, spec)
                            .map_err(|e| self.error(ins, e.to_string()))?;
                        let gid = match g {
                            None if u.parse::<u32>().is_err() => user.gid,
                            _ => user.gid,
                        };
                        (user.uid, gid)
                    }
                }
            }
        };
        Ok(Ownership { uid, gid, mode })
    }

    fn copy_step(&mut self, ins: &Instruction, copy: &Copy, add: bool) -> Result<(), BuildError> {
        let shared = self.shared;
        let verb = if add { "ADD" } else { "COPY" };
        let dest_raw = self.expand(ins, &copy.dest)?;
        let workdir = self
            .config
            .config
            .working_dir
            .clone()
            .unwrap_or_else(|| "/".into());
        let dest_is_dir_syntax =
            dest_raw.ends_with('/') || dest_raw == "." || dest_raw.ends_with("/.");
        let dest = clean_path(&Path::new(&workdir).join(&dest_raw));
        let chown = copy
            .chown
            .as_deref()
            .map(|c| self.expand(ins, c))
            .transpose()?;
        let chmod = copy
            .chmod
            .as_deref()
            .map(|c| self.expand(ins, c))
            .transpose()?;
        let own = self.ownership(ins, chown.as_deref(), chmod.as_deref())?;
        let from = copy
            .from
            .as_deref()
            .map(|f| self.expand(ins, f))
            .transpose()?;

        let mut sources = Vec::new();
        for s in &copy.sources {
            if let Some(h) = s.strip_prefix("<<").and_then(|n| {
                copy.heredocs
                    .iter()
                    .find(|h| h.name == n.trim_matches(['"', '\'']).trim_start_matches('-'))
            }) {
                let body = if h.expand {
                    self.expand(ins, &format!("\"{}\"", h.body.replace('"', "\\\"")))?
                } else {
                    h.body.clone()
                };
                sources.push(Src::Inline(h.name.clone(), body));
            } else {
                let s = self.expand(ins, s)?;
                if add && (s.starts_with("http://") || s.starts_with("https://")) {
                    sources.push(Src::Url(s));
                } else {
                    sources.push(Src::Path(s));
                }
            }
        }

        // What the step reads, for its key.
        let tmp = TempDir(shared.temp_dir()?);
        let mut desc = format!(
            "{verb} dest={dest} dir={dest_is_dir_syntax} chown={}:{} chmod={:?}",
            own.uid, own.gid, own.mode
        );
        let from_layers = match &from {
            Some(f) => {
                let (key, layers) = match shared.source(f, self.index) {
                    Source::Stage(i) => {
                        let r = shared.wait_stage(i)?;
                        (r.key.clone(), r.layers.clone())
                    }
                    Source::Image(name) => {
                        let rec = match shared.store.resolve(&name) {
                            Ok(r) => r,
                            Err(_) => self.pull(&name).map_err(|e| {
                                self.error(
                                    ins,
                                    format!("--from={name}: no such stage or image: {e}"),
                                )
                            })?,
                        };
                        (rec.id.to_string(), rec.layers)
                    }
                };
                desc.push_str(&format!(" from={key}"));
                Some(layers)
            }
            None => None,
        };
        let mut downloads = Vec::new();
        for s in &sources {
            match s {
                Src::Inline(name, body) => desc.push_str(&format!(
                    " inline:{name}:{}",
                    hex::encode(sha(body.as_bytes()))
                )),
                Src::Url(url) => {
                    let file = tmp.0.join(format!("download-{}", downloads.len()));
                    download(url, &file).map_err(|e| self.error(ins, e))?;
                    let bytes = fs::read(&file).map_err(BuildError::io("reading", &file))?;
                    desc.push_str(&format!(" url:{url}:{}", hex::encode(sha(&bytes))));
                    downloads.push(file);
                }
                Src::Path(p) if from_layers.is_none() => {
                    let sel = shared
                        .context
                        .select(p)
                        .map_err(|e| self.error(ins, e.to_string()))?;
                    desc.push_str(&format!(" ctx:{p}:{}", sel.digest()));
                }
                Src::Path(p) => desc.push_str(&format!(" path:{p}")),
            }
        }
        let key = cache::chain(&self.key, &desc);
        let shown_sources: Vec<String> = copy.sources.iter().map(|s| s.to_string()).collect();
        let created_by = format!("{verb} {} {dest_raw} # buildkit", shown_sources.join(" "));
        let title = self.title(&ins.text);
        let v = shared.progress.start(&title);
        let Some(v) = self.cached(&key, &created_by, v) else {
            return Ok(());
        };
        let staging = tmp.0.join("layer");
        fs::create_dir_all(&staging).map_err(BuildError::io("creating", &staging))?;
        let result = self.fill_copy(
            ins,
            add,
            &sources,
            &downloads,
            from_layers.as_deref(),
            &dest,
            dest_is_dir_syntax,
            own,
            &staging,
            &tmp.0,
        );
        match result.and_then(|()| Ok(shared.store.add_layer_from_dir(&staging)?)) {
            Ok(layer) => {
                v.done();
                self.record(&key, &created_by, layer)
            }
            Err(e) => {
                v.error(&e.to_string());
                Err(e)
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn fill_copy(
        &self,
        ins: &Instruction,
        add: bool,
        sources: &[Src],
        downloads: &[PathBuf],
        from_layers: Option<&[LayerRecord]>,
        dest: &str,
        dest_is_dir_syntax: bool,
        own: Ownership,
        staging: &Path,
        tmp: &Path,
    ) -> Result<(), BuildError> {
        let shared = self.shared;
        let store = &shared.store;
        let dest_rel = PathBuf::from(dest.trim_start_matches('/'));
        let dest_exists_as_dir = dest_rel.as_os_str().is_empty()
            || fsutil::image_metadata(store, &self.layers, &dest_rel).is_some_and(|m| m.is_dir());
        let view = match from_layers {
            Some(layers) => Some(View::mount(store, layers, &tmp.join("from"))?),
            None => None,
        };
        // (absolute source path, whether it is "the contents of a directory")
        let mut picked: Vec<(PathBuf, bool)> = Vec::new();
        let mut inline: Vec<(String, &str)> = Vec::new();
        let mut n_download = 0;
        for s in sources {
            match s {
                Src::Inline(name, body) => inline.push((name.clone(), body)),
                Src::Url(_) => {
                    picked.push((downloads[n_download].clone(), false));
                    n_download += 1;
                }
                Src::Path(p) => match &view {
                    Some(view) => {
                        let root = view.root();
                        let found =
                            fsutil::glob(&root, p).map_err(BuildError::io("reading", &root))?;
                        if found.is_empty() {
                            return Err(self.error(
                                ins,
                                format!("{p:?} not found in the source stage or image"),
                            ));
                        }
                        for f in found {
                            let abs = root.join(&f);
                            let is_dir = abs.is_dir() && !abs.is_symlink();
                            picked.push((abs, is_dir));
                        }
                    }
                    None => {
                        let sel = shared
                            .context
                            .select(p)
                            .map_err(|e| self.error(ins, e.to_string()))?;
                        for r in &sel.roots {
                            match r {
                                SelectedRoot::ContextRoot => {
                                    picked.push((shared.context.root.clone(), true))
                                }
                                SelectedRoot::Entry(rel) => {
                                    let is_dir = matches!(
                                        shared.context.entries.get(rel).map(|e| &e.kind),
                                        Some(EntryKind::Dir)
                                    );
                                    picked.push((shared.context.root.join(rel), is_dir));
                                }
                            }
                        }
                    }
                },
            }
        }
        let many = picked.len() + inline.len() > 1;
        let into_dir =
            dest_is_dir_syntax || dest_exists_as_dir || many || picked.iter().any(|(_, d)| *d);
        if many && !dest_is_dir_syntax && !dest_exists_as_dir {
            return Err(self.error(
                ins,
                "when using COPY with more than one source file, the destination must be a directory and end with a /",
            ));
        }
        fsutil::ensure_parents(store, &self.layers, staging, &dest_rel, own)?;
        if into_dir && !dest_rel.as_os_str().is_empty() {
            fsutil::ensure_dir(store, &self.layers, staging, &dest_rel, own, false)?;
        }
        let context = &shared.context;
        let excluded_from_context = |path: &Path| -> Exclusion {
            // Entries .dockerignore removed are not copied from a context directory.
            let Some(rel) = from_layers
                .is_none()
                .then(|| path.strip_prefix(&context.root).ok())
                .flatten()
                .map(|rel| rel.to_string_lossy().into_owned())
                .filter(|rel| !rel.is_empty())
            else {
                return Exclusion::Included;
            };
            if context.entries.contains_key(&rel) {
                return Exclusion::Included;
            }
            let below = format!("{rel}/");
            match context.entries.range(below.clone()..).next() {
                Some((k, _)) if k.starts_with(&below) => Exclusion::ExcludedWithIncludedBelow,
                _ => Exclusion::Excluded,
            }
        };
        for (src, is_dir) in &picked {
            if *is_dir {
                let target = staging.join(&dest_rel);
                copy_dir_contents(src, &target, own, &excluded_from_context)?;
                continue;
            }
            let name = src
                .file_name()
                .map(|n| n.to_os_string())
                .unwrap_or_default();
            if add && from_layers.is_none() && is_archive(src) {
                let target = staging.join(&dest_rel);
                fs::create_dir_all(&target).map_err(BuildError::io("creating", &target))?;
                extract_archive(src, &target).map_err(|e| self.error(ins, e))?;
                continue;
            }
            let target = if into_dir {
                let name = if downloads.iter().any(|d| d == src) {
                    url_name(sources, downloads, src).unwrap_or(name)
                } else {
                    name
                };
                staging.join(&dest_rel).join(name)
            } else {
                staging.join(&dest_rel)
            };
            fsutil::copy_entry(src, &target, own)?;
        }
        for (name, body) in inline {
            let target = if into_dir {
                staging.join(&dest_rel).join(&name)
            } else {
                staging.join(&dest_rel)
            };
            fs::write(&target, body).map_err(BuildError::io("writing", &target))?;
            let own = Ownership {
                mode: Some(own.mode.unwrap_or(0o644)),
                ..own
            };
            let src = target.clone();
            fsutil::copy_entry(&src, &tmp.join("inline"), own)?;
            fs::rename(tmp.join("inline"), &target).map_err(BuildError::io("writing", &target))?;
        }
        Ok(())
    }
}

enum Src {
    Inline(String, String),
    Url(String),
    Path(String),
}

fn url_name(sources: &[Src], downloads: &[PathBuf], file: &Path) -> Option<std::ffi::OsString> {
    let idx = downloads.iter().position(|d| d == file)?;
    let url = sources
        .iter()
        .filter_map(|s| match s {
            Src::Url(u) => Some(u),
            _ => None,
        })
        .nth(idx)?;
    let path = url.split(['?', '#']).next()?.trim_end_matches('/');
    let name = path
        .rsplit('/')
        .next()
        .filter(|n| !n.is_empty() && !n.contains(':'))?;
    Some(name.into())
}

fn copy_dir_contents(
    src: &Path,
    dest: &Path,
    own: Ownership,
    excluded: &dyn Fn(&Path) -> Exclusion,
) -> Result<(), BuildError> {
    let mut names: Vec<_> = fs::read_dir(src)
        .map_err(BuildError::io("reading", src))?
        .filter_map(|e| e.ok().map(|e| e.file_name()))
        .collect();
    names.sort();
    if !dest.exists() {
        fs::create_dir_all(dest).map_err(BuildError::io("creating", dest))?;
    }
    for n in names {
        let s = src.join(&n);
        let d = dest.join(&n);
        match excluded(&s) {
            Exclusion::Included => {}
            Exclusion::Excluded => continue,
            // An excluded directory may still hold re-included entries (`!` patterns).
            Exclusion::ExcludedWithIncludedBelow => {
                copy_dir_contents(&s, &d, own, excluded)?;
                continue;
            }
        }
        fsutil::copy_entry(&s, &d, own)?;
        if fs::symlink_metadata(&s)
            .map(|m| m.is_dir())
            .unwrap_or(false)
        {
            copy_dir_contents(&s, &d, own, excluded)?;
            if let Ok(m) = fs::metadata(&s) {
                use std::os::unix::fs::MetadataExt;
                let t = nix::sys::time::TimeSpec::new(m.mtime(), 0);
                let _ = nix::sys::stat::utimensat(
                    None,
                    &d,
                    &t,
                    &t,
                    nix::sys::stat::UtimensatFlags::NoFollowSymlink,
                );
            }
        }
    }
    Ok(())
}

/// Whether a path of a copied context directory is part of the context.
enum Exclusion {
    Included,
    Excluded,
    ExcludedWithIncludedBelow,
}

fn sha(data: &[u8]) -> [u8; 32] {
    use sha2::Digest as _;
    sha2::Sha256::digest(data).into()
}

fn json(v: &[String]) -> String {
    serde_json::to_string(v).unwrap_or_default()
}

/// `target` made absolute against `cwd`.
fn abs(target: &str, cwd: &str) -> String {
    clean_path(&Path::new(cwd).join(target))
}

/// Lexical cleaning of an absolute path: `.`, `..` and repeated slashes removed.
pub(crate) fn clean_path(p: &Path) -> String {
    let mut out: Vec<String> = Vec::new();
    for c in p.components() {
        match c {
            std::path::Component::Normal(n) => out.push(n.to_string_lossy().into_owned()),
            std::path::Component::ParentDir => {
                out.pop();
            }
            _ => {}
        }
    }
    format!("/{}", out.join("/"))
}

/// True when `path` is a tar archive (plain, gzip or zstd compressed).
fn is_archive(path: &Path) -> bool {
    let Ok(file) = fs::File::open(path) else {
        return false;
    };
    let mut reader = std::io::BufReader::new(file);
    let Ok((head, comp)) = skiff_images::layer::compression::sniff(&mut reader) else {
        return false;
    };
    let Ok(comp) = comp else { return false };
    let Ok(mut dec) = skiff_images::layer::compression::decoder(head, &mut reader, comp) else {
        return false;
    };
    let mut block = vec![0u8; 512];
    if dec.read_exact(&mut block).is_err() {
        return false;
    }
    &block[257..262] == b"ustar"
}

fn extract_archive(path: &Path, dest: &Path) -> Result<(), String> {
    let file = fs::File::open(path).map_err(|e| format!("opening {}: {e}", path.display()))?;
    let mut reader = std::io::BufReader::new(file);
    let (head, comp) =
        skiff_images::layer::compression::sniff(&mut reader).map_err(|e| e.to_string())?;
    let comp = comp.map_err(|e| e.to_string())?;
    let dec = skiff_images::layer::compression::decoder(head, &mut reader, comp)
        .map_err(|e| e.to_string())?;
    skiff_images::layer::unpack_tar(dec, dest)
        .map(|_| ())
        .map_err(|e| format!("extracting {}: {e}", path.display()))
}

/// Fetches `url` into `file`; the error says what to check.
fn download(url: &str, file: &Path) -> Result<(), String> {
    let fail = |e: String| {
        format!("failed to fetch {url}: {e}: check the URL and the network, or download it yourself and COPY the file")
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| fail(e.to_string()))?;
    let bytes = rt
        .block_on(async {
            let client = reqwest::Client::builder()
                .timeout(std::time::Duration::from_secs(30))
                .connect_timeout(std::time::Duration::from_secs(10))
                .build()?;
            let resp = client.get(url).send().await?.error_for_status()?;
            resp.bytes().await
        })
        .map_err(|e| fail(describe(&e)))?;
    fs::write(file, &bytes).map_err(|e| fail(e.to_string()))
}

fn describe(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}
