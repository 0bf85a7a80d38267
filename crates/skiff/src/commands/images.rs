//! `images`, `pull`, `push`, `tag`, `rmi`, `load`, `save`, `history`, `login`.

use std::collections::HashMap;
use std::io::IsTerminal;
use std::sync::Mutex;

use anyhow::{bail, Context as _, Result};
use chrono::{DateTime, Utc};
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use skiff_engine::Engine;
use skiff_images::archive::ArchiveFormat;
use skiff_images::registry::{self, Credentials, PullOptions, PushOptions};
use skiff_images::{NoProgress, Platform, Progress, Reference};

use super::containers::print_table;
use super::{for_each_name, Context};
use crate::cli::{
    HistoryArgs, ImagesArgs, LoadArgs, LoginArgs, PullArgs, PushArgs, RmiArgs, SaveArgs, TagArgs,
};
use crate::template;

/// Docker's human size: 1000-based units, 3 significant digits.
pub fn human_size(bytes: u64) -> String {
    let units = ["B", "kB", "MB", "GB", "TB"];
    let mut v = bytes as f64;
    let mut i = 0;
    while v >= 1000.0 && i + 1 < units.len() {
        v /= 1000.0;
        i += 1;
    }
    if i == 0 {
        format!("{bytes}B")
    } else {
        let s = format!("{v:.3}");
        let s = s.trim_end_matches('0').trim_end_matches('.');
        let digits: String = s.chars().take(if v >= 100.0 { 3 } else { 4 }).collect();
        format!("{}{}", digits.trim_end_matches('.'), units[i])
    }
}

fn created_ago(created: Option<&str>) -> String {
    created
        .and_then(|c| DateTime::parse_from_rfc3339(c).ok())
        .map(|t| {
            format!(
                "{} ago",
                skiff_engine::container::human_duration(Utc::now() - t.with_timezone(&Utc))
            )
        })
        .unwrap_or_else(|| "N/A".into())
}

/// Progress bars on a terminal, nothing otherwise.
struct Bars {
    multi: MultiProgress,
    bars: Mutex<HashMap<String, ProgressBar>>,
}

impl Bars {
    fn new() -> Self {
        Self {
            multi: MultiProgress::new(),
            bars: Mutex::new(HashMap::new()),
        }
    }
}

impl Progress for Bars {
    fn started(&self, id: &str, total: Option<u64>) {
        let bar = self.multi.add(ProgressBar::new(total.unwrap_or(0)));
        let style =
            ProgressStyle::with_template("{prefix}: {msg:<12} [{bar:30}] {bytes}/{total_bytes}")
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> ");
        bar.set_style(style);
        bar.set_prefix(id.to_string());
        bar.set_message("Downloading");
        if let Ok(mut bars) = self.bars.lock() {
            bars.insert(id.to_string(), bar);
        }
    }
    fn advanced(&self, id: &str, n: u64) {
        if let Some(bar) = self.bars.lock().ok().and_then(|b| b.get(id).cloned()) {
            bar.inc(n);
        }
    }
    fn finished(&self, id: &str) {
        if let Some(bar) = self.bars.lock().ok().and_then(|b| b.get(id).cloned()) {
            bar.set_message("Complete");
            bar.finish();
        }
    }
    fn message(&self, msg: &str) {
        let _ = self.multi.println(msg);
    }
}

/// Plain lines when not on a terminal, as Docker prints them.
struct Lines {
    /// Docker prints an explicit pull's or load's lines on stdout, and the
    /// implicit pull of `run` on stderr (stdout belongs to the container).
    to_stderr: bool,
}

impl Progress for Lines {
    fn started(&self, _id: &str, _total: Option<u64>) {}
    fn advanced(&self, _id: &str, _n: u64) {}
    fn finished(&self, _id: &str) {}
    fn message(&self, msg: &str) {
        if self.to_stderr {
            eprintln!("{msg}");
        } else {
            println!("{msg}");
        }
    }
}

/// Docker treats registries on loopback as insecure by default (127.0.0.0/8).
fn loopback_registry(reference: &Reference) -> bool {
    let host = reference.registry();
    let host = host.rsplit_once(':').map(|(h, _)| h).unwrap_or(host);
    host == "localhost" || host.starts_with("127.") || host == "[::1]"
}

fn progress(quiet: bool) -> Box<dyn Progress> {
    progress_to(quiet, false)
}

fn progress_to(quiet: bool, to_stderr: bool) -> Box<dyn Progress> {
    if quiet {
        Box::new(NoProgress)
    } else if std::io::stderr().is_terminal() {
        Box::new(Bars::new())
    } else {
        Box::new(Lines { to_stderr })
    }
}

fn credentials(creds: Option<&str>) -> Result<Option<Credentials>> {
    creds
        .map(|c| {
            let (u, p) = c
                .split_once(':')
                .context("--creds must be USERNAME:PASSWORD")?;
            Ok(Credentials {
                username: u.to_string(),
                password: p.to_string(),
            })
        })
        .transpose()
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?)
}

/// How a pull reports itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PullOutput {
    /// `skiff pull`: progress and the final name on stdout.
    Explicit,
    /// `skiff pull -q`: only the final name.
    Quiet,
    /// The pull `run` and `create` do: progress on stderr, stdout untouched.
    Implicit,
}

/// Pulls `image` into the engine's store; shared by `pull` and `run`.
pub fn pull_image(
    engine: &Engine,
    image: &str,
    insecure: bool,
    platform: Option<&str>,
    creds: Option<&str>,
    output: PullOutput,
) -> Result<()> {
    let quiet = output == PullOutput::Quiet;
    let implicit = output == PullOutput::Implicit;
    let reference = Reference::parse(image)?;
    let platform = platform
        .map(|p| p.parse::<Platform>())
        .transpose()
        .map_err(|e| anyhow::anyhow!("invalid --platform: {e}"))?;
    let opts = PullOptions {
        insecure: insecure || loopback_registry(&reference),
        platform,
        credentials: credentials(creds)?,
        auth_file: Some(engine.images().auth_file()),
    };
    let progress = progress_to(quiet, implicit);
    let rt = runtime()?;
    rt.block_on(registry::pull(
        engine.images(),
        &reference,
        &opts,
        progress.as_ref(),
    ))?;
    drop(rt);
    // The registry client reported the digest and status through `progress`.
    if implicit {
        return Ok(());
    }
    println!("{}", reference);
    Ok(())
}

/// `skiff pull`.
pub fn pull(ctx: &Context, args: PullArgs) -> Result<()> {
    let engine = ctx.engine()?;
    let output = if args.quiet {
        PullOutput::Quiet
    } else {
        PullOutput::Explicit
    };
    pull_image(
        &engine,
        &args.image,
        args.insecure,
        args.platform.as_deref(),
        args.creds.as_deref(),
        output,
    )
}

/// `skiff push`.
pub fn push(ctx: &Context, args: PushArgs) -> Result<()> {
    let engine = ctx.engine()?;
    let image = engine.images().resolve(&args.image)?;
    let destination = Reference::parse(args.destination.as_deref().unwrap_or(&args.image))?;
    let opts = PushOptions {
        insecure: args.insecure || loopback_registry(&destination),
        credentials: credentials(args.creds.as_deref())?,
        auth_file: Some(engine.images().auth_file()),
    };
    let progress = progress(args.quiet);
    let rt = runtime()?;
    let digest = rt.block_on(registry::push(
        engine.images(),
        &image,
        &destination,
        &opts,
        progress.as_ref(),
    ))?;
    println!(
        "{}: digest: {} size: {}",
        destination.tag().unwrap_or("latest"),
        digest,
        image.manifest.size
    );
    Ok(())
}

/// `skiff login`.
pub fn login(ctx: &Context, args: LoginArgs) -> Result<()> {
    let engine = ctx.engine()?;
    let username = match args.username {
        Some(u) => u,
        None => bail!("username is required: pass -u USERNAME"),
    };
    let password = if args.password_stdin {
        let mut p = String::new();
        std::io::stdin().read_line(&mut p)?;
        p.trim_end_matches(['\n', '\r']).to_string()
    } else {
        match args.password {
            Some(p) => p,
            None => bail!("password is required: pass --password-stdin or -p"),
        }
    };
    let creds = Credentials { username, password };
    let rt = runtime()?;
    rt.block_on(registry::login(
        &engine.images().auth_file(),
        &args.registry,
        &creds,
        args.insecure,
    ))?;
    println!("Login Succeeded");
    Ok(())
}

/// `skiff images`.
pub fn images(ctx: &Context, args: ImagesArgs) -> Result<()> {
    let engine = ctx.engine()?;
    let mut rows = Vec::new();
    let mut json_rows = Vec::new();
    for image in engine.images().list()? {
        let id = if args.no_trunc {
            image.id.to_string()
        } else {
            image.id.short().to_string()
        };
        let mut names: Vec<(String, String)> = image
            .repo_tags
            .iter()
            .map(|r| (r.familiar(), r.tag().unwrap_or("<none>").to_string()))
            .collect();
        if names.is_empty() {
            names.push(("<none>".into(), "<none>".into()));
        }
        for (repo, tag) in names {
            if let Some(filter) = &args.repository {
                let filter_ref = Reference::parse(filter)
                    .map(|r| r.familiar())
                    .unwrap_or(filter.clone());
                if repo != filter_ref && &repo != filter {
                    continue;
                }
            }
            let digest = image
                .repo_digests
                .iter()
                .find(|d| d.familiar() == repo)
                .and_then(|d| d.digest().map(|x| x.to_string()))
                .unwrap_or_else(|| "<none>".into());
            let created = created_ago(image.created.as_deref());
            let size = human_size(image.size);
            json_rows.push(serde_json::json!({
                "ID": id, "Repository": repo, "Tag": tag, "Digest": digest,
                "CreatedSince": created, "CreatedAt": image.created, "Size": size,
            }));
            let mut row = vec![repo, tag];
            if args.digests {
                row.push(digest);
            }
            row.extend([id.clone(), created, size]);
            rows.push(row);
        }
    }
    if args.quiet {
        let mut seen = Vec::new();
        for r in &json_rows {
            let id = r["ID"].as_str().unwrap_or_default().to_string();
            if !seen.contains(&id) {
                println!("{id}");
                seen.push(id);
            }
        }
        return Ok(());
    }
    if let Some(format) = &args.format {
        for r in &json_rows {
            println!("{}", template::render(format, r)?);
        }
        return Ok(());
    }
    let mut headers = vec!["REPOSITORY", "TAG"];
    if args.digests {
        headers.push("DIGEST");
    }
    headers.extend(["IMAGE ID", "CREATED", "SIZE"]);
    print_table(&headers, &rows);
    Ok(())
}

/// `skiff tag`.
pub fn tag(ctx: &Context, args: TagArgs) -> Result<()> {
    let engine = ctx.engine()?;
    let target = Reference::parse(&args.target)?;
    engine.images().tag(&args.source, &target)?;
    Ok(())
}

/// `skiff rmi`.
pub fn rmi(ctx: &Context, args: RmiArgs) -> Result<()> {
    let engine = ctx.engine()?;
    for_each_name(&args.images, |name| {
        let image = engine.images().resolve(name)?;
        let users: Vec<String> = engine
            .list()?
            .into_iter()
            .filter(|c| c.record.image_id == image.id.to_string())
            .map(|c| c.record.short_id().to_string())
            .collect();
        let last_name = image.repo_tags.len() <= 1
            || name.starts_with("sha256:")
            || image.id.to_string().contains(name);
        if !users.is_empty() && last_name {
            bail!(
                "conflict: unable to remove repository reference \"{name}\" (must force) - container {} is using its referenced image {}",
                users[0],
                image.id.short()
            );
        }
        for event in engine.images().remove(name, args.force)? {
            println!("{event}");
        }
        Ok(())
    })
}

/// `skiff load`.
pub fn load(ctx: &Context, args: LoadArgs) -> Result<()> {
    let engine = ctx.engine()?;
    let progress = progress(args.quiet);
    let loaded = match &args.input {
        Some(path) => {
            let file =
                std::fs::File::open(path).with_context(|| format!("open {}", path.display()))?;
            engine
                .images()
                .load(std::io::BufReader::new(file), progress.as_ref())?
        }
        None => {
            if std::io::stdin().is_terminal() {
                bail!(
                    "requested load from stdin, but stdin is empty: use -i FILE or pipe an archive"
                );
            }
            engine
                .images()
                .load(std::io::stdin().lock(), progress.as_ref())?
        }
    };
    // The store reports each loaded image through `progress`; print them only when quiet.
    if args.quiet {
        for image in loaded {
            println!("{image}");
        }
    }
    Ok(())
}

/// `skiff save`.
pub fn save(ctx: &Context, args: SaveArgs) -> Result<()> {
    let engine = ctx.engine()?;
    let format = match args.format.as_str() {
        "docker-archive" | "docker" => ArchiveFormat::DockerArchive,
        "oci-archive" | "oci" => ArchiveFormat::OciArchive,
        other => bail!("unknown archive format {other:?}: use docker-archive or oci-archive"),
    };
    let names: Vec<&str> = args.images.iter().map(String::as_str).collect();
    match &args.output {
        Some(path) => {
            let tmp = path.with_extension("skiff-partial");
            let file =
                std::fs::File::create(&tmp).with_context(|| format!("create {}", tmp.display()))?;
            let mut writer = std::io::BufWriter::new(file);
            if let Err(e) = engine
                .images()
                .save(&names, &mut writer, format, &NoProgress)
            {
                let _ = std::fs::remove_file(&tmp);
                return Err(e.into());
            }
            use std::io::Write;
            writer.flush()?;
            std::fs::rename(&tmp, path)?;
        }
        None => {
            if std::io::stdout().is_terminal() {
                bail!("cowardly refusing to save to a terminal. Use the -o flag or redirect");
            }
            let out = std::io::stdout().lock();
            engine
                .images()
                .save(&names, std::io::BufWriter::new(out), format, &NoProgress)?;
        }
    }
    Ok(())
}

/// `skiff history`.
pub fn history(ctx: &Context, args: HistoryArgs) -> Result<()> {
    let engine = ctx.engine()?;
    let image = engine.images().resolve(&args.image)?;
    let entries = engine.images().history(&image)?;
    if args.quiet {
        for e in &entries {
            println!(
                "{}",
                e.id.as_ref()
                    .map(|i| i.short().to_string())
                    .unwrap_or_else(|| "<missing>".into())
            );
        }
        return Ok(());
    }
    let rows: Vec<Vec<String>> = entries
        .iter()
        .map(|e| {
            let id = match &e.id {
                Some(i) if args.no_trunc => i.to_string(),
                Some(i) => i.short().to_string(),
                None => "<missing>".into(),
            };
            let by = if args.no_trunc || e.created_by.chars().count() <= 45 {
                e.created_by.clone()
            } else {
                format!("{}…", e.created_by.chars().take(44).collect::<String>())
            };
            vec![
                id,
                created_ago(e.created.as_deref()),
                by,
                human_size(e.size),
                e.comment.clone(),
            ]
        })
        .collect();
    print_table(
        &["IMAGE", "CREATED", "CREATED BY", "SIZE", "COMMENT"],
        &rows,
    );
    Ok(())
}
