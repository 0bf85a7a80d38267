//! One build: read the Dockerfile and context, run the stages the target needs (those
//! that do not depend on each other in parallel threads), add the image and tag it.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex};

use sha2::{Digest as _, Sha256};
use skiff_engine::Engine;
use skiff_images::{ImageId, ImageStore, Reference};

use crate::cache::Cache;
use crate::context::BuildContext;
use crate::dockerfile::{self, Dockerfile, Kind, MountKind};
use crate::ignore::IgnoreRules;
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
    /// Finished stages by index; `None` for a failed stage.
    results: Mutex<HashMap<usize, Option<Arc<StageResult>>>>,
    finished: Condvar,
    /// Errors of failed stages.
    errors: Mutex<Vec<(usize, BuildError)>>,
    /// The stages this build runs.
    needed: Vec<usize>,
}

impl Shared<'_> {
    /// Waits for stage `index` and returns its result.
    pub fn wait_stage(&self, index: usize) -> Result<Arc<StageResult>, BuildError> {
        if !self.needed.contains(&index) {
            // Named only through a variable: not scheduled, so waiting would never end.
            return Err(BuildError::DependencyFailed(format!(
                "{} (referenced through a build argument; name the stage literally)",
                self.dockerfile.stages[index].display_name()
            )));
        }
        let mut results = self.results.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            if let Some(r) = results.get(&index) {
                return r.clone().ok_or_else(|| {
                    BuildError::DependencyFailed(self.dockerfile.stages[index].display_name())
                });
            }
            results = self
                .finished
                .wait(results)
                .unwrap_or_else(|e| e.into_inner());
        }
    }

    /// The stage a `--from`/FROM word names (by name or index), if any.
    pub fn stage_named(&self, name: &str, before: usize) -> Option<usize> {
        let lower = name.to_ascii_lowercase();
        self.dockerfile.stages[..before]
            .iter()
            .find(|s| s.name.as_deref() == Some(lower.as_str()))
            .map(|s| s.index)
            .or_else(|| name.parse::<usize>().ok().filter(|i| *i < before))
    }

    /// The base of stage `index` after substituting global ARGs.
    pub fn stage_base(&self, index: usize) -> Result<String, BuildError> {
        let stage = &self.dockerfile.stages[index];
        let lookup = |n: &str| self.global_args.get(n).cloned();
        shell::expand(&stage.base, self.dockerfile.escape, &lookup).map_err(|source| {
            BuildError::Substitution {
                file: self.file.clone(),
                line: stage.line,
                instruction: stage.text.clone(),
                source,
            }
        })
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

    let mut global_args = BTreeMap::new();
    let host = skiff_images::Platform::host();
    for (k, v) in [
        ("TARGETPLATFORM", host.to_string()),
        ("TARGETOS", host.os.clone()),
        ("TARGETARCH", host.architecture.clone()),
        ("BUILDPLATFORM", host.to_string()),
        ("BUILDOS", host.os.clone()),
        ("BUILDARCH", host.architecture.clone()),
    ] {
        global_args.insert(k.to_string(), v);
    }
    for decl in &parsed.global_args {
        let value = match (opts.build_args.get(&decl.name), &decl.default) {
            (Some(v), _) => Some(v.clone()),
            (None, Some(d)) => {
                let lookup = |n: &str| global_args.get(n).cloned();
                Some(shell::expand(d, parsed.escape, &lookup).map_err(|source| {
                    BuildError::Substitution {
                        file: file.clone(),
                        line: 1,
                        instruction: format!("ARG {}", decl.name),
                        source,
                    }
                })?)
            }
            (None, None) => None,
        };
        if let Some(v) = value {
            global_args.insert(decl.name.clone(), v);
        }
    }

    let target = match &opts.target {
        Some(t) => parsed
            .stages
            .iter()
            .find(|s| s.name.as_deref() == Some(t.to_ascii_lowercase().as_str()))
            .map(|s| s.index)
            .ok_or_else(|| BuildError::NoTarget(t.clone()))?,
        None => parsed.stages.len() - 1,
    };

    let v = progress.start("[internal] load build context");
    let context = BuildContext::read(&opts.context, &ignore)?;
    v.status(&format!(
        "transferring context: {} files done",
        context.entries.len()
    ));
    v.done();

    let mut shared = Shared {
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
        results: Mutex::new(HashMap::new()),
        finished: Condvar::new(),
        errors: Mutex::new(Vec::new()),
        needed: Vec::new(),
    };
    let needed = needed_stages(&shared, target)?;
    shared.needed = needed.clone();
    let _guard = store.begin_import()?;

    std::thread::scope(|scope| {
        for &index in &needed {
            let shared = &shared;
            scope.spawn(move || {
                let result = StageRunner::run(shared, index);
                let outcome = match result {
                    Ok(r) => Some(Arc::new(r)),
                    Err(e) => {
                        shared
                            .errors
                            .lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .push((index, e));
                        None
                    }
                };
                shared
                    .results
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert(index, outcome);
                shared.finished.notify_all();
            });
        }
    });
    let mut errors = std::mem::take(&mut *shared.errors.lock().unwrap_or_else(|e| e.into_inner()));
    // The root cause, not the stages that only waited for it.
    errors.sort_by_key(|(i, e)| (matches!(e, BuildError::DependencyFailed(_)), *i));
    if let Some((_, e)) = errors.into_iter().next() {
        return Err(e);
    }
    let mut results =
        std::mem::take(&mut *shared.results.lock().unwrap_or_else(|e| e.into_inner()));

    let progress = &shared.progress;
    let v = progress.start("exporting to image");
    let mut target_result = None;
    for index in &needed {
        let Some(Some(result)) = results.remove(index) else {
            continue;
        };
        if *index == target {
            target_result = Some(result);
        } else if !result.layers.is_empty() {
            // Other stages are kept as untagged images so their layers (and so the
            // cache of their steps) survive garbage collection, like Docker's
            // intermediate images.
            add_image(&store, &result, &[])?;
        }
    }
    let result = target_result.ok_or_else(|| BuildError::NoTarget(format!("{target}")))?;
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

/// The stages `target` needs, dependencies first.
fn needed_stages(shared: &Shared<'_>, target: usize) -> Result<Vec<usize>, BuildError> {
    let mut needed = HashSet::new();
    let mut stack = vec![target];
    while let Some(i) = stack.pop() {
        if !needed.insert(i) {
            continue;
        }
        let base = shared.stage_base(i)?;
        if let Some(dep) = shared.stage_named(&base, i) {
            stack.push(dep);
        }
        for ins in &shared.dockerfile.stages[i].instructions {
            let froms: Vec<&str> = match &ins.kind {
                Kind::Copy(c) => c.from.as_deref().into_iter().collect(),
                Kind::Run(r) => r
                    .mounts
                    .iter()
                    .filter(|m| m.kind != MountKind::Secret)
                    .filter_map(|m| m.from.as_deref())
                    .collect(),
                _ => Vec::new(),
            };
            for f in froms {
                if let Some(dep) = shared.stage_named(f, i) {
                    stack.push(dep);
                }
            }
        }
    }
    let mut v: Vec<usize> = needed.into_iter().collect();
    v.sort();
    Ok(v)
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
