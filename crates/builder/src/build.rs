//! One build: read the Dockerfile and context, run the stages the target needs (those
//! that do not depend on each other in parallel threads), add the image and tag it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use sha2::{Digest as _, Sha256};
use skiff_engine::Engine;
use skiff_images::{ImageId, ImageStore, Reference};

use crate::cache::Cache;
use crate::context::BuildContext;
use crate::dockerfile::{self, Dockerfile};
use crate::ignore::IgnoreRules;
use crate::plan::{self, Plan, Scheduler, WaitError};
use crate::progress::{Progress, ProgressMode};
use crate::stage::{StageResult, StageRunner};
use crate::{shell, BuildError};

/// A `--secret id=ID,src=PATH`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Secret {
    /// The id RUN `--mount=type=secret,id=` names.
    pub id: String,
    /// The file on the host.
    pub src: PathBuf,
}

impl std::str::FromStr for Secret {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let mut id = None;
        let mut src = None;
        for field in s.split(',') {
            match field.split_once('=') {
                Some(("id", v)) => id = Some(v.to_string()),
                Some(("src" | "source", v)) => src = Some(PathBuf::from(v)),
                Some(("type", "file")) => {}
                _ => return Err(format!("invalid secret {s:?}: use id=ID,src=PATH")),
            }
        }
        let id = id.ok_or_else(|| format!("invalid secret {s:?}: id= is required"))?;
        let src = src.unwrap_or_else(|| PathBuf::from(&id));
        Ok(Secret { id, src })
    }
}

/// What `skiff build` was asked to do.
#[derive(Debug, Clone, Default)]
pub struct BuildOptions {
    /// The context directory.
    pub context: PathBuf,
    /// `-f`: the Dockerfile (default `CONTEXT/Dockerfile`).
    pub dockerfile: Option<PathBuf>,
    /// `-t` names.
    pub tags: Vec<String>,
    /// `--build-arg KEY=VALUE`.
    pub build_args: BTreeMap<String, String>,
    /// `--target`.
    pub target: Option<String>,
    /// `--no-cache`.
    pub no_cache: bool,
    /// `--secret`.
    pub secrets: Vec<Secret>,
    /// `--network host` for RUN steps (default none).
    pub host_network: bool,
    /// `--platform`: the target platform (must be the host's; default the host's).
    pub platform: Option<String>,
}

/// The result of a build.
#[derive(Debug, Clone)]
pub struct Built {
    /// The image ID.
    pub id: ImageId,
    /// The names it got.
    pub tags: Vec<Reference>,
}

/// Everything the stages of one build share.
pub(crate) struct Shared<'e> {
    pub engine: &'e Engine,
    pub store: ImageStore,
    pub cache: Cache,
    pub work: PathBuf,
    pub progress: Progress,
    pub opts: BuildOptions,
    pub file: String,
    pub dockerfile: Dockerfile,
    pub context: BuildContext,
    /// Global ARG values (defaults overridden by --build-arg), for FROM lines.
    pub global_args: BTreeMap<String, String>,
    /// Runs the planned stages and hands their results to the stages that wait.
    scheduler: Scheduler<Arc<StageResult>>,
}

impl Shared<'_> {
    /// Waits for stage `index` and returns its result.
    pub fn wait_stage(&self, index: usize) -> Result<Arc<StageResult>, BuildError> {
        let name = || self.dockerfile.stages[index].display_name();
        self.scheduler.wait(index).map_err(|e| match e {
            // Named only through a variable: not planned, so waiting would never end.
            WaitError::NotPlanned => BuildError::DependencyFailed(format!(
                "{} (referenced through a build argument; name the stage literally)",
                name()
            )),
            WaitError::Failed => BuildError::DependencyFailed(name()),
        })
    }

    /// The stage a `--from`/FROM word names (by name or index), if any.
    pub fn stage_named(&self, name: &str, before: usize) -> Option<usize> {
        plan::stage_named(&self.dockerfile, name, before)
    }

    /// The base of stage `index` after substituting global ARGs.
    pub fn stage_base(&self, index: usize) -> Result<String, BuildError> {
        expand_base(&self.dockerfile, &self.file, &self.global_args, index)
    }
}

/// Runs a build with the engine's image store, writing progress to `out`.
pub fn build(
    engine: &Engine,
    opts: &BuildOptions,
    out: Box<dyn std::io::Write + Send>,
    mode: ProgressMode,
) -> Result<Built, BuildError> {
    let progress = Progress::new(out, mode);
    let store = engine.images().clone();
    let work = engine.roots().data.join("builder");

    let dockerfile_path = opts
        .dockerfile
        .clone()
        .unwrap_or_else(|| opts.context.join("Dockerfile"));
    let file = dockerfile_path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "Dockerfile".into());
    let v = progress.start(&format!("[internal] load build definition from {file}"));
    let text = std::fs::read_to_string(&dockerfile_path)
        .map_err(BuildError::io("reading Dockerfile", &dockerfile_path))?;
    v.status(&format!("transferring dockerfile: {}B done", text.len()));
    let parsed = match dockerfile::parse(&text, &file) {
        Ok(d) => d,
        Err(e) => {
            v.error(&e.to_string());
            return Err(e.into());
        }
    };
    v.done();

    let v = progress.start("[internal] load .dockerignore");
    let ignore_text = [
        PathBuf::from(format!("{}.dockerignore", dockerfile_path.display())),
        opts.context.join(".dockerignore"),
    ]
    .iter()
    .find_map(|p| std::fs::read_to_string(p).ok())
    .unwrap_or_default();
    let ignore = IgnoreRules::parse(&ignore_text);
    v.status(&format!(
        "transferring context: {}B done",
        ignore_text.len()
    ));
    v.done();

    let host = skiff_images::Platform::host();
    let target_platform = match &opts.platform {
        Some(p) => supported_platform(p, &host, &file, None)?,
        None => host.clone(),
    };
    let global_args = global_args(&parsed, &opts.build_args, &host, &target_platform, &file)?;

    let target = match &opts.target {
        Some(t) => parsed
            .stages
            .iter()
            .find(|s| s.name.as_deref() == Some(t.to_ascii_lowercase().as_str()))
            .map(|s| s.index)
            .ok_or_else(|| BuildError::NoTarget(t.clone()))?,
        None => parsed.stages.len() - 1,
    };
    let plan = Plan::new(&parsed, target, &|i| {
        expand_base(&parsed, &file, &global_args, i)
    })?;
    // Every FROM --platform is checked before any stage runs: nothing is built for a
    // platform this host cannot run.
    for i in plan.stages() {
        let stage = &parsed.stages[i];
        if let Some(p) = &stage.platform {
            let lookup = |n: &str| global_args.get(n).cloned();
            let p = shell::expand(p, parsed.escape, &lookup).map_err(|source| {
                BuildError::Substitution {
                    file: file.clone(),
                    line: stage.line,
                    instruction: stage.text.clone(),
                    source,
                }
            })?;
            supported_platform(&p, &host, &file, Some(stage))?;
        }
    }

    let v = progress.start("[internal] load build context");
    let context = BuildContext::read(&opts.context, &ignore)?;
    v.status(&format!(
        "transferring context: {} files done",
        context.entries.len()
    ));
    v.done();

    let shared = Shared {
        engine,
        store: store.clone(),
        cache: Cache::new(&work.join("cache")),
        work,
        progress,
        opts: opts.clone(),
        file,
        dockerfile: parsed,
        context,
        global_args,
        scheduler: Scheduler::new(plan.stages()),
    };
    let _guard = store.begin_import()?;
    let mut results = shared
        .scheduler
        .run(&|index| StageRunner::run(&shared, index).map(Arc::new))?;

    // Only the target becomes an image: the other stages' layers stay in the build cache
    // (held against the store's garbage collection), not as `<none>` images.
    let result = results
        .remove(&target)
        .ok_or_else(|| BuildError::NoTarget(format!("{target}")))?;
    let progress = &shared.progress;
    let v = progress.start("exporting to image");
    v.status("exporting layers done");
    let tags = opts
        .tags
        .iter()
        .map(|t| Reference::parse(t).map_err(skiff_images::StoreError::from))
        .collect::<Result<Vec<_>, _>>()?;
    let id = add_image(&store, &result, &tags)?;
    v.status(&format!("writing image {id} done"));
    for t in &tags {
        v.status(&format!("naming to {t} done"));
    }
    v.done();
    Ok(Built { id, tags })
}

/// The global ARG values: BuildKit's automatic platform ARGs, then the ARGs before the
/// first FROM (their defaults, overridden by `--build-arg`).
fn global_args(
    parsed: &Dockerfile,
    build_args: &BTreeMap<String, String>,
    build_platform: &skiff_images::Platform,
    target_platform: &skiff_images::Platform,
    file: &str,
) -> Result<BTreeMap<String, String>, BuildError> {
    let mut args = BTreeMap::new();
    for (prefix, p) in [("TARGET", target_platform), ("BUILD", build_platform)] {
        args.insert(format!("{prefix}PLATFORM"), p.to_string());
        args.insert(format!("{prefix}OS"), p.os.clone());
        args.insert(format!("{prefix}ARCH"), p.architecture.clone());
        args.insert(
            format!("{prefix}VARIANT"),
            p.variant.clone().unwrap_or_default(),
        );
    }
    for decl in &parsed.global_args {
        let value = match (build_args.get(&decl.name), &decl.default) {
            (Some(v), _) => Some(v.clone()),
            (None, Some(d)) => {
                let lookup = |n: &str| args.get(n).cloned();
                Some(shell::expand(d, parsed.escape, &lookup).map_err(|source| {
                    BuildError::Substitution {
                        file: file.to_string(),
                        line: 1,
                        instruction: format!("ARG {}", decl.name),
                        source,
                    }
                })?)
            }
            (None, None) => None,
        };
        if let Some(v) = value {
            args.insert(decl.name.clone(), v);
        }
    }
    Ok(args)
}

/// `platform` parsed, if this host can run it (a `FROM --platform` or `--platform`
/// value): skiff runs RUN steps natively, without emulation.
fn supported_platform(
    platform: &str,
    host: &skiff_images::Platform,
    file: &str,
    stage: Option<&dockerfile::Stage>,
) -> Result<skiff_images::Platform, BuildError> {
    let at = || match stage {
        Some(s) => format!(" ({file}:{}: {})", s.line, s.text),
        None => String::new(),
    };
    let wanted: skiff_images::Platform =
        platform
            .parse()
            .map_err(|e: skiff_images::ManifestError| BuildError::Platform {
                message: format!("{e}{}", at()),
            })?;
    if !host.matches(&wanted) {
        return Err(BuildError::Platform {
            message: format!(
                "platform {wanted} is not supported on this {host} host{}: remove --platform or use {host} ($BUILDPLATFORM)",
                at()
            ),
        });
    }
    Ok(wanted)
}

/// The base of stage `index` after substituting global ARGs.
fn expand_base(
    dockerfile: &Dockerfile,
    file: &str,
    global_args: &BTreeMap<String, String>,
    index: usize,
) -> Result<String, BuildError> {
    let stage = &dockerfile.stages[index];
    let lookup = |n: &str| global_args.get(n).cloned();
    shell::expand(&stage.base, dockerfile.escape, &lookup).map_err(|source| {
        BuildError::Substitution {
            file: file.to_string(),
            line: stage.line,
            instruction: stage.text.clone(),
            source,
        }
    })
}

/// `skiff builder prune`: forgets every cached step, releases the layers the cache held
/// (those no image uses are deleted) and removes the `--mount=type=cache` directories.
/// Returns the bytes reclaimed.
pub fn prune(engine: &Engine) -> Result<u64, BuildError> {
    let work = engine.roots().data.join("builder");
    let mut reclaimed = 0;
    for dir in [work.join("cache"), work.join("cache-mounts")] {
        if dir.exists() {
            reclaimed += crate::fsutil::tree_size(&dir);
            std::fs::remove_dir_all(&dir).map_err(BuildError::io("removing", &dir))?;
        }
    }
    reclaimed += engine.images().release_holds(crate::cache::HOLD_PREFIX)?;
    Ok(reclaimed)
}

/// Adds the stage's image unless an identical one with these names exists already.
fn add_image(
    store: &ImageStore,
    result: &StageResult,
    tags: &[Reference],
) -> Result<ImageId, BuildError> {
    let mut value = serde_json::to_value(&result.config).map_err(|e| BuildError::Io {
        what: "serialising image config",
        path: PathBuf::new(),
        source: std::io::Error::other(e),
    })?;
    let diff_ids: Vec<String> = result
        .layers
        .iter()
        .map(|l| l.diff_id.to_string())
        .collect();
    if let Some(obj) = value.as_object_mut() {
        obj.insert(
            "rootfs".into(),
            serde_json::json!({"type": "layers", "diff_ids": diff_ids}),
        );
    }
    // The same serialisation the store uses: an unchanged rebuild finds its image.
    let bytes = serde_json::to_vec(&value).unwrap_or_default();
    let id_hex = hex::encode(Sha256::digest(&bytes));
    if let Ok(existing) = store.resolve(&format!("sha256:{id_hex}")) {
        if tags.iter().all(|t| existing.repo_tags.contains(t)) {
            return Ok(existing.id);
        }
    }
    Ok(store.add_image(value, result.layers.clone(), tags)?.id)
}

/// Where a `--from`/`from=` word points.
pub(crate) enum Source {
    /// An earlier stage.
    Stage(usize),
    /// An image in the store.
    Image(String),
}

impl Shared<'_> {
    /// Resolves a `--from` word used in stage `current`.
    pub fn source(&self, word: &str, current: usize) -> Source {
        match self.stage_named(word, current) {
            Some(i) => Source::Stage(i),
            None => Source::Image(word.to_string()),
        }
    }

    /// The directory for a step's temporary files (removed by the caller).
    pub fn temp_dir(&self) -> Result<PathBuf, BuildError> {
        let dir = self.work.join("tmp").join(format!(
            "{}-{:016x}",
            std::process::id(),
            rand::random::<u64>()
        ));
        std::fs::create_dir_all(&dir).map_err(BuildError::io("creating", &dir))?;
        Ok(dir)
    }

    /// The path of a cache mount's directory.
    pub fn cache_mount_dir(&self, id: &str) -> PathBuf {
        let h = hex::encode(Sha256::digest(id.as_bytes()));
        self.work.join("cache-mounts").join(&h[..32])
    }
}

/// True when `path` is inside `root` after normalising `..`.
pub(crate) fn inside(root: &Path, path: &Path) -> bool {
    let mut depth = 0i32;
    for c in path.strip_prefix(root).unwrap_or(path).components() {
        match c {
            std::path::Component::ParentDir => depth -= 1,
            std::path::Component::Normal(_) => depth += 1,
            _ => {}
        }
        if depth < 0 {
            return false;
        }
    }
    true
}
