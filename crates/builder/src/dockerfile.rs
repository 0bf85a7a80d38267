//! The Dockerfile language: parser directives, logical lines, heredocs and instructions.
//!
//! Pure: text in, a [`Dockerfile`] out, no filesystem and no variables. Arguments stay
//! as written (quotes, `$VAR`), because their values depend on the build (ARG, ENV,
//! `--build-arg`); the builder expands them with [`crate::shell`] when it runs a stage.
//! Line numbers are 1-based and point at the first line of an instruction.

use std::time::Duration;

use crate::shell::{self, ShellError};

/// A syntax error: `Dockerfile:7: unknown instruction: RUNN`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{file}:{line}: {message}")]
pub struct ParseError {
    /// The file name as the user gave it.
    pub file: String,
    /// The 1-based line of the instruction.
    pub line: usize,
    /// What is wrong, naming the instruction.
    pub message: String,
}

/// A parsed Dockerfile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dockerfile {
    /// The `# syntax=` directive, if any (recorded; the builtin frontend is always used).
    pub syntax: Option<String>,
    /// The escape character (`\` unless `# escape=` says otherwise).
    pub escape: char,
    /// ARG instructions before the first FROM: usable in FROM lines.
    pub global_args: Vec<ArgDecl>,
    /// The build stages in order.
    pub stages: Vec<Stage>,
}

/// One build stage: a FROM and its instructions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stage {
    /// Position in the file, from 0.
    pub index: usize,
    /// The `AS name`, lowercased.
    pub name: Option<String>,
    /// The base image or stage as written.
    pub base: String,
    /// `--platform` as written.
    pub platform: Option<String>,
    /// The FROM line.
    pub line: usize,
    /// The FROM instruction's text.
    pub text: String,
    /// Everything after FROM.
    pub instructions: Vec<Instruction>,
}

impl Stage {
    /// The name progress output uses: the `AS` name or `stage-N`.
    pub fn display_name(&self) -> String {
        self.name
            .clone()
            .unwrap_or_else(|| format!("stage-{}", self.index))
    }
}

/// One instruction with where it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Instruction {
    /// 1-based line of the instruction's first line.
    pub line: usize,
    /// The logical line as written (continuations joined), for progress and history.
    pub text: String,
    /// What it does.
    pub kind: Kind,
}

/// The instructions of the language, with arguments as written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    /// `RUN [--mount=...] [--network=...] command`.
    Run(Run),
    /// `CMD command`.
    Cmd(CommandLine),
    /// `ENTRYPOINT command`.
    Entrypoint(CommandLine),
    /// `COPY [--from=..] [--chown=..] [--chmod=..] [--link] src... dest`.
    Copy(Copy),
    /// `ADD [--chown=..] [--chmod=..] [--link] src... dest`.
    Add(Copy),
    /// `WORKDIR path`.
    Workdir(String),
    /// `ENV key=value...` (key and value as written).
    Env(Vec<(String, String)>),
    /// `ARG name[=default]...`.
    Arg(Vec<ArgDecl>),
    /// `USER user[:group]`.
    User(String),
    /// `EXPOSE port[/proto]...`.
    Expose(Vec<String>),
    /// `VOLUME path...`.
    Volume(Vec<String>),
    /// `LABEL key=value...`.
    Label(Vec<(String, String)>),
    /// `HEALTHCHECK [options] CMD command`, or `None` for `HEALTHCHECK NONE`.
    Healthcheck(Option<Healthcheck>),
    /// `SHELL ["executable", "parameters"]`.
    Shell(Vec<String>),
    /// `STOPSIGNAL signal`.
    StopSignal(String),
    /// `ONBUILD instruction`: stored in the image, run by builds that use it as a base.
    OnBuild(String),
    /// `MAINTAINER name` (deprecated; sets the author).
    Maintainer(String),
}

impl Kind {
    /// True for instructions that change the filesystem and so produce a layer.
    pub fn makes_layer(&self) -> bool {
        matches!(self, Kind::Run(_) | Kind::Copy(_) | Kind::Add(_))
    }
}

/// A command in shell form (run by the SHELL) or exec form (a JSON array).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CommandLine {
    /// `RUN echo $HOME`: one string for `/bin/sh -c`.
    Shell(String),
    /// `RUN ["echo", "hi"]`: argv as is.
    Exec(Vec<String>),
}

/// A RUN instruction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Run {
    /// `--mount` options.
    pub mounts: Vec<RunMount>,
    /// `--network=none|host|default`.
    pub network: Option<String>,
    /// The command; heredoc bodies are already part of a shell-form command.
    pub command: CommandLine,
}

/// The kinds of RUN mounts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MountKind {
    /// A directory of the context or of another stage, read-only unless `rw`.
    Bind,
    /// A directory kept between builds under the data root.
    Cache,
    /// A `--secret` file at `/run/secrets/ID` for this step only.
    Secret,
    /// An empty tmpfs.
    Tmpfs,
}

/// One `--mount=type=...,...` option of RUN, fields as written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunMount {
    /// `type=`.
    pub kind: MountKind,
    /// `target=` (`dst=`, `destination=`).
    pub target: Option<String>,
    /// `source=` (`src=`).
    pub source: Option<String>,
    /// `from=`: a stage or image.
    pub from: Option<String>,
    /// `id=`.
    pub id: Option<String>,
    /// `rw`/`readwrite` for bind mounts, `ro`/`readonly` for caches.
    pub readwrite: Option<bool>,
    /// `required` for secrets.
    pub required: bool,
    /// `mode=` (octal).
    pub mode: Option<u32>,
    /// `uid=`.
    pub uid: Option<u32>,
    /// `gid=`.
    pub gid: Option<u32>,
}

/// A COPY or ADD instruction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Copy {
    /// Source patterns as written (heredoc sources appear as `<<NAME`).
    pub sources: Vec<String>,
    /// Destination as written.
    pub dest: String,
    /// `--from=stage|image`.
    pub from: Option<String>,
    /// `--chown=user[:group]`.
    pub chown: Option<String>,
    /// `--chmod=octal`.
    pub chmod: Option<String>,
    /// `--link` (accepted; layers here are always independent of their parent).
    pub link: bool,
    /// Inline files from heredocs, by name.
    pub heredocs: Vec<Heredoc>,
}

/// A heredoc body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Heredoc {
    /// The delimiter word.
    pub name: String,
    /// The lines between the instruction and the delimiter, each ending in a newline.
    pub body: String,
    /// False when the delimiter was quoted: no variable expansion in the body.
    pub expand: bool,
}

/// One `ARG name[=default]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArgDecl {
    /// Name.
    pub name: String,
    /// Default as written.
    pub default: Option<String>,
}

/// A HEALTHCHECK instruction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Healthcheck {
    /// The probe command.
    pub test: CommandLine,
    /// `--interval`.
    pub interval: Option<Duration>,
    /// `--timeout`.
    pub timeout: Option<Duration>,
    /// `--start-period`.
    pub start_period: Option<Duration>,
    /// `--start-interval`.
    pub start_interval: Option<Duration>,
    /// `--retries`.
    pub retries: Option<u32>,
}

const INSTRUCTIONS: &[&str] = &[
    "FROM",
    "RUN",
    "CMD",
    "ENTRYPOINT",
    "COPY",
    "ADD",
    "WORKDIR",
    "ENV",
    "ARG",
    "USER",
    "EXPOSE",
    "VOLUME",
    "LABEL",
    "HEALTHCHECK",
    "SHELL",
    "STOPSIGNAL",
    "ONBUILD",
    "MAINTAINER",
];

/// Parses `text`; `file` names the file in errors.
pub fn parse(text: &str, file: &str) -> Result<Dockerfile, ParseError> {
    let lines: Vec<&str> = text
        .split('\n')
        .map(|l| l.strip_suffix('\r').unwrap_or(l))
        .collect();
    let err = |line: usize, message: String| ParseError {
        file: file.to_string(),
        line,
        message,
    };
    let (syntax, escape, mut i) = directives(&lines).map_err(|(l, m)| err(l, m))?;

    let mut global_args = Vec::new();
    let mut stages: Vec<Stage> = Vec::new();
    while i < lines.len() {
        let first = lines[i].trim_start();
        if first.is_empty() || first.starts_with('#') {
            i += 1;
            continue;
        }
        let line_no = i + 1;
        let mut logical = String::new();
        loop {
            let l = lines[i];
            i += 1;
            let t = l.trim_end();
            match t.strip_suffix(escape) {
                Some(head) => {
                    logical.push_str(head);
                    // Comment and empty lines inside a continuation are dropped.
                    while i < lines.len() && {
                        let n = lines[i].trim_start();
                        n.is_empty() || n.starts_with('#')
                    } {
                        i += 1;
                    }
                    if i >= lines.len() {
                        break;
                    }
                }
                None => {
                    logical.push_str(t);
                    break;
                }
            }
        }
        let (keyword, rest) = split_keyword(logical.trim());
        let upper = keyword.to_ascii_uppercase();
        if !INSTRUCTIONS.contains(&upper.as_str()) {
            return Err(err(line_no, format!("unknown instruction: {keyword}")));
        }
        let heredocs = if matches!(upper.as_str(), "RUN" | "COPY" | "ADD") {
            read_heredocs(rest, escape, &lines, &mut i).map_err(|m| err(line_no, m))?
        } else {
            Vec::new()
        };
        let text = logical.trim().to_string();
        if upper == "FROM" {
            let (flags, args) = take_flags(rest);
            let mut platform = None;
            for (name, value) in flags {
                match name.as_str() {
                    "platform" => platform = value,
                    other => return Err(err(line_no, format!("FROM: unknown flag: --{other}"))),
                }
            }
            let words =
                shell::split_words(args, escape).map_err(|e| err(line_no, e.to_string()))?;
            let (base, name) = match words.as_slice() {
                [base] => (base.clone(), None),
                [base, as_kw, name] if as_kw.eq_ignore_ascii_case("as") => {
                    let name = name.to_ascii_lowercase();
                    if !valid_stage_name(&name) {
                        return Err(err(
                            line_no,
                            format!("FROM: invalid name for build stage: {name:?}, name can't start with a number or contain symbols"),
                        ));
                    }
                    if stages.iter().any(|s| s.name.as_deref() == Some(&name)) {
                        return Err(err(line_no, format!("FROM: duplicate stage name {name:?}")));
                    }
                    (base.clone(), Some(name))
                }
                _ => {
                    return Err(err(
                        line_no,
                        "FROM requires either one or three arguments".into(),
                    ))
                }
            };
            stages.push(Stage {
                index: stages.len(),
                name,
                base,
                platform,
                line: line_no,
                text,
                instructions: Vec::new(),
            });
            continue;
        }
        let kind = instruction(&upper, rest, escape, heredocs).map_err(|m| err(line_no, m))?;
        match (stages.last_mut(), kind) {
            (Some(stage), kind) => stage.instructions.push(Instruction {
                line: line_no,
                text,
                kind,
            }),
            (None, Kind::Arg(decls)) => global_args.extend(decls),
            (None, _) => {
                return Err(err(
                    line_no,
                    format!("{upper}: no build stage in current context: the first instruction must be FROM (or ARG)"),
                ))
            }
        }
    }
    if stages.is_empty() {
        return Err(err(
            lines.len().max(1),
            "the Dockerfile has no FROM instruction: add `FROM image` first".into(),
        ));
    }
    Ok(Dockerfile {
        syntax,
        escape,
        global_args,
        stages,
    })
}

type DirectiveResult = Result<(Option<String>, char, usize), (usize, String)>;

/// Parser directives: `# key=value` lines at the very top.
fn directives(lines: &[&str]) -> DirectiveResult {
    let mut syntax = None;
    let mut escape = '\\';
    let mut seen = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        let Some(body) = lines[i].trim().strip_prefix('#') else {
            break;
        };
        let Some((key, value)) = body.split_once('=') else {
            break;
        };
        let key = key.trim().to_ascii_lowercase();
        if key.is_empty() || !key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            break;
        }
        let value = value.trim();
        if seen.contains(&key) {
            return Err((
                i + 1,
                format!("only one {key} parser directive can be used"),
            ));
        }
        match key.as_str() {
            "syntax" => syntax = Some(value.to_string()),
            "escape" => {
                escape = match value {
                    "\\" => '\\',
                    "`" => '`',
                    _ => {
                        return Err((
                            i + 1,
                            format!("invalid escape token '{value}' does not match ` or \\"),
                        ))
                    }
                }
            }
            // Unknown directives (check=...) are treated as comments, as Docker does.
            _ => {}
        }
        seen.push(key);
        i += 1;
    }
    Ok((syntax, escape, i))
}

fn split_keyword(line: &str) -> (&str, &str) {
    match line.find(char::is_whitespace) {
        Some(p) => (&line[..p], line[p..].trim_start()),
        None => (line, ""),
    }
}

/// Leading `--name[=value]` words, and the rest of the text.
fn take_flags(mut rest: &str) -> (Vec<(String, Option<String>)>, &str) {
    let mut flags = Vec::new();
    loop {
        rest = rest.trim_start();
        let Some(body) = rest.strip_prefix("--") else {
            break;
        };
        let end = body.find(char::is_whitespace).unwrap_or(body.len());
        let word = &body[..end];
        if word.is_empty() {
            break;
        }
        match word.split_once('=') {
            Some((n, v)) => flags.push((n.to_ascii_lowercase(), Some(v.to_string()))),
            None => flags.push((word.to_ascii_lowercase(), None)),
        }
        rest = &body[end..];
    }
    (flags, rest.trim())
}

fn valid_stage_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_lowercase())
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "-_.".contains(c))
}

/// Finds heredoc markers (`<<EOF`, `<<-EOF`, `<<"EOF"`) in `args` and reads their bodies
/// from the lines after the instruction.
fn read_heredocs(
    args: &str,
    escape: char,
    lines: &[&str],
    i: &mut usize,
) -> Result<Vec<Heredoc>, String> {
    let mut out = Vec::new();
    let words = shell::split_words(args, escape).unwrap_or_default();
    for word in words {
        let Some((name, strip_tabs, quoted)) = heredoc_marker(&word) else {
            continue;
        };
        let mut body = String::new();
        loop {
            let Some(line) = lines.get(*i) else {
                return Err(format!(
                    "unterminated heredoc <<{name}: no line {name} follows"
                ));
            };
            *i += 1;
            let line = if strip_tabs {
                line.trim_start_matches('\t')
            } else {
                line
            };
            if line == name {
                break;
            }
            body.push_str(line);
            body.push('\n');
        }
        out.push(Heredoc {
            name,
            body,
            expand: !quoted,
        });
    }
    Ok(out)
}

/// `<<EOF` -> ("EOF", strip tabs, quoted).
fn heredoc_marker(word: &str) -> Option<(String, bool, bool)> {
    let rest = word.strip_prefix("<<")?;
    let (rest, strip) = match rest.strip_prefix('-') {
        Some(r) => (r, true),
        None => (rest, false),
    };
    let (name, quoted) = match rest.chars().next() {
        Some(q @ ('"' | '\'')) => (rest.strip_prefix(q)?.strip_suffix(q)?, true),
        _ => (rest, false),
    };
    let valid = !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    valid.then(|| (name.to_string(), strip, quoted))
}

fn command_line(args: &str) -> CommandLine {
    if args.starts_with('[') {
        if let Ok(argv) = serde_json::from_str::<Vec<String>>(args) {
            return CommandLine::Exec(argv);
        }
    }
    CommandLine::Shell(args.to_string())
}

/// `key=value` pairs (ENV, LABEL), or the legacy `key value with spaces` form.
fn pairs(name: &str, args: &str, escape: char) -> Result<Vec<(String, String)>, String> {
    let words = shell::split_words(args, escape).map_err(|e| format!("{name}: {e}"))?;
    if words.is_empty() {
        return Err(format!("{name} requires at least one argument"));
    }
    if !words[0].contains('=') {
        let (key, value) = split_keyword(args);
        if value.is_empty() {
            return Err(format!("{name} must have two arguments: {name} key value"));
        }
        return Ok(vec![(key.to_string(), value.to_string())]);
    }
    words
        .iter()
        .map(|w| match w.split_once('=') {
            Some(("", _)) => Err(format!("{name} names can not be blank")),
            Some((k, v)) => Ok((k.to_string(), v.to_string())),
            None => Err(format!(
                "{name}: syntax error - can't find = in {w:?}. Must be of the form: name=value"
            )),
        })
        .collect()
}

fn duration_flag(name: &str, value: Option<String>) -> Result<Option<Duration>, String> {
    let Some(v) = value else {
        return Err(format!("HEALTHCHECK: --{name} needs a value"));
    };
    parse_duration(&v).map(Some).ok_or_else(|| {
        format!("HEALTHCHECK: invalid --{name} {v:?}: use a duration like 30s, 1m30s or 500ms")
    })
}

/// Go-style durations as HEALTHCHECK takes them: `30s`, `1m30s`, `500ms`, `1h`
/// (the same parser `skiff run --health-*` uses).
pub fn parse_duration(s: &str) -> Option<Duration> {
    skiff_runtime::health::parse_duration(s).ok()
}

fn parse_mount(spec: &str) -> Result<RunMount, String> {
    let mut m = RunMount {
        kind: MountKind::Bind,
        target: None,
        source: None,
        from: None,
        id: None,
        readwrite: None,
        required: false,
        mode: None,
        uid: None,
        gid: None,
    };
    let bad = |what: &str| format!("RUN --mount={spec}: {what}");
    for field in spec.split(',').filter(|f| !f.is_empty()) {
        let (key, value) = match field.split_once('=') {
            Some((k, v)) => (k.trim().to_ascii_lowercase(), Some(v.trim().to_string())),
            None => (field.trim().to_ascii_lowercase(), None),
        };
        let flag = |v: &Option<String>| !matches!(v.as_deref(), Some("false"));
        let num = |v: &Option<String>, radix: u32| {
            v.as_deref()
                .and_then(|v| u32::from_str_radix(v, radix).ok())
                .ok_or_else(|| bad(&format!("invalid {key}")))
        };
        match key.as_str() {
            "type" => {
                m.kind = match value.as_deref() {
                    Some("bind") => MountKind::Bind,
                    Some("cache") => MountKind::Cache,
                    Some("secret") => MountKind::Secret,
                    Some("tmpfs") => MountKind::Tmpfs,
                    other => return Err(bad(&format!("unsupported mount type {other:?}"))),
                }
            }
            "target" | "dst" | "destination" => m.target = value,
            "source" | "src" => m.source = value,
            "from" => m.from = value,
            "id" => m.id = value,
            "rw" | "readwrite" => m.readwrite = Some(flag(&value)),
            "ro" | "readonly" => m.readwrite = Some(!flag(&value)),
            "required" => m.required = flag(&value),
            "mode" => m.mode = Some(num(&value, 8)?),
            "uid" => m.uid = Some(num(&value, 10)?),
            "gid" => m.gid = Some(num(&value, 10)?),
            // Accepted and without effect here: one builder process shares caches safely.
            "sharing" | "size" | "env" => {}
            other => return Err(bad(&format!("unknown option {other:?}"))),
        }
    }
    if m.kind == MountKind::Secret {
        if m.id.is_none() && m.target.is_none() {
            return Err(bad("a secret mount needs id= or target="));
        }
    } else if m.target.is_none() {
        return Err(bad("target= is required"));
    }
    Ok(m)
}

fn instruction(
    upper: &str,
    rest: &str,
    escape: char,
    heredocs: Vec<Heredoc>,
) -> Result<Kind, String> {
    let one_arg = |what: &str| -> Result<String, String> {
        let words = shell::split_words(rest, escape).map_err(|e: ShellError| e.to_string())?;
        match words.len() {
            0 => Err(format!("{what} requires exactly one argument")),
            1 => Ok(words[0].clone()),
            _ if what == "WORKDIR" => Ok(rest.to_string()),
            _ => Err(format!("{what} requires exactly one argument")),
        }
    };
    Ok(match upper {
        "RUN" => {
            let (flags, args) = take_flags(rest);
            let mut mounts = Vec::new();
            let mut network = None;
            for (name, value) in flags {
                match (name.as_str(), value) {
                    ("mount", Some(v)) => mounts.push(parse_mount(&v)?),
                    ("network", Some(v)) => {
                        if !matches!(v.as_str(), "none" | "host" | "default") {
                            return Err(format!(
                                "RUN: invalid --network={v}: use none, host or default"
                            ));
                        }
                        network = Some(v)
                    }
                    ("security", Some(_)) => {}
                    (other, _) => return Err(format!("RUN: unknown flag: --{other}")),
                }
            }
            if args.is_empty() {
                return Err("RUN requires at least one argument".into());
            }
            let command = if heredocs.is_empty() {
                command_line(args)
            } else {
                CommandLine::Shell(heredoc_script(args, &heredocs))
            };
            Kind::Run(Run {
                mounts,
                network,
                command,
            })
        }
        "CMD" | "ENTRYPOINT" => {
            let cmd = command_line(rest);
            if upper == "CMD" {
                Kind::Cmd(cmd)
            } else {
                Kind::Entrypoint(cmd)
            }
        }
        "COPY" | "ADD" => {
            let (flags, args) = take_flags(rest);
            let mut copy = Copy {
                sources: Vec::new(),
                dest: String::new(),
                from: None,
                chown: None,
                chmod: None,
                link: false,
                heredocs,
            };
            for (name, value) in flags {
                match (name.as_str(), value) {
                    ("from", Some(v)) if upper == "COPY" => copy.from = Some(v),
                    ("chown", Some(v)) => copy.chown = Some(v),
                    ("chmod", Some(v)) => copy.chmod = Some(v),
                    ("link", v) => copy.link = !matches!(v.as_deref(), Some("false")),
                    ("checksum" | "keep-git-dir" | "parents" | "exclude", _) => {}
                    (other, _) => return Err(format!("{upper}: unknown flag: --{other}")),
                }
            }
            let mut words = if args.starts_with('[') {
                serde_json::from_str::<Vec<String>>(args)
                    .map_err(|e| format!("{upper}: invalid JSON array of arguments: {e}"))?
            } else {
                shell::split_words(args, escape).map_err(|e| format!("{upper}: {e}"))?
            };
            if words.len() < 2 {
                return Err(format!(
                    "{upper} requires at least two arguments, but only {} provided",
                    words.len()
                ));
            }
            copy.dest = words.pop().unwrap_or_default();
            copy.sources = words;
            if upper == "COPY" {
                Kind::Copy(copy)
            } else {
                Kind::Add(copy)
            }
        }
        "WORKDIR" => Kind::Workdir(one_arg("WORKDIR")?),
        "ENV" => Kind::Env(pairs("ENV", rest, escape)?),
        "LABEL" => Kind::Label(pairs("LABEL", rest, escape)?),
        "ARG" => {
            let words = shell::split_words(rest, escape).map_err(|e| format!("ARG: {e}"))?;
            if words.is_empty() {
                return Err("ARG requires at least one argument".into());
            }
            Kind::Arg(
                words
                    .into_iter()
                    .map(|w| match w.split_once('=') {
                        Some((n, d)) => ArgDecl {
                            name: n.to_string(),
                            default: Some(d.to_string()),
                        },
                        None => ArgDecl {
                            name: w,
                            default: None,
                        },
                    })
                    .collect(),
            )
        }
        "USER" => Kind::User(one_arg("USER")?),
        "EXPOSE" => {
            let words = shell::split_words(rest, escape).map_err(|e| format!("EXPOSE: {e}"))?;
            if words.is_empty() {
                return Err("EXPOSE requires at least one argument".into());
            }
            Kind::Expose(words)
        }
        "VOLUME" => {
            let words = match command_line(rest) {
                CommandLine::Exec(v) => v,
                CommandLine::Shell(_) => {
                    shell::split_words(rest, escape).map_err(|e| format!("VOLUME: {e}"))?
                }
            };
            if words.is_empty() || words.iter().any(|w| w.trim().is_empty()) {
                return Err("VOLUME specified can not be an empty string".into());
            }
            Kind::Volume(words)
        }
        "HEALTHCHECK" => {
            let (flags, args) = take_flags(rest);
            let (kw, cmd) = split_keyword(args);
            match kw.to_ascii_uppercase().as_str() {
                "NONE" if flags.is_empty() && cmd.is_empty() => Kind::Healthcheck(None),
                "NONE" => return Err("HEALTHCHECK NONE takes no other arguments".into()),
                "CMD" if !cmd.is_empty() => {
                    let mut hc = Healthcheck {
                        test: command_line(cmd),
                        interval: None,
                        timeout: None,
                        start_period: None,
                        start_interval: None,
                        retries: None,
                    };
                    for (name, value) in flags {
                        match name.as_str() {
                            "interval" => hc.interval = duration_flag(&name, value)?,
                            "timeout" => hc.timeout = duration_flag(&name, value)?,
                            "start-period" => hc.start_period = duration_flag(&name, value)?,
                            "start-interval" => hc.start_interval = duration_flag(&name, value)?,
                            "retries" => {
                                hc.retries = Some(
                                    value
                                        .as_deref()
                                        .and_then(|v| v.parse().ok())
                                        .ok_or("HEALTHCHECK: --retries must be a whole number")?,
                                )
                            }
                            other => return Err(format!("HEALTHCHECK: unknown flag: --{other}")),
                        }
                    }
                    Kind::Healthcheck(Some(hc))
                }
                _ => return Err("HEALTHCHECK requires NONE or CMD followed by a command".into()),
            }
        }
        "SHELL" => match command_line(rest) {
            CommandLine::Exec(v) if !v.is_empty() => Kind::Shell(v),
            _ => return Err("SHELL requires the arguments to be in JSON form".into()),
        },
        "STOPSIGNAL" => Kind::StopSignal(one_arg("STOPSIGNAL")?),
        "MAINTAINER" => {
            if rest.is_empty() {
                return Err("MAINTAINER requires exactly one argument".into());
            }
            Kind::Maintainer(rest.to_string())
        }
        "ONBUILD" => {
            let (kw, trigger_rest) = split_keyword(rest);
            let kw_upper = kw.to_ascii_uppercase();
            match kw_upper.as_str() {
                "" => return Err("ONBUILD requires at least one argument".into()),
                "ONBUILD" => {
                    return Err("chaining ONBUILD via `ONBUILD ONBUILD` isn't allowed".into())
                }
                "FROM" | "MAINTAINER" => {
                    return Err(format!("{kw_upper} isn't allowed as an ONBUILD trigger"))
                }
                k if !INSTRUCTIONS.contains(&k) => {
                    return Err(format!("ONBUILD: unknown instruction: {kw}"))
                }
                _ => {}
            }
            instruction(&kw_upper, trigger_rest, escape, Vec::new())
                .map_err(|e| format!("ONBUILD: {e}"))?;
            Kind::OnBuild(rest.to_string())
        }
        other => return Err(format!("unknown instruction: {other}")),
    })
}

/// A RUN with heredocs as one shell script: `RUN <<EOF` alone runs the body, anything
/// else keeps the command line and lets the shell read the heredocs itself.
fn heredoc_script(args: &str, heredocs: &[Heredoc]) -> String {
    let only_marker = heredocs.len() == 1 && heredoc_marker(args.trim()).is_some();
    if only_marker {
        return heredocs[0].body.clone();
    }
    let mut script = args.to_string();
    for h in heredocs {
        script.push('\n');
        script.push_str(&h.body);
        script.push_str(&h.name);
    }
    script
}

/// Parses the instruction text of an ONBUILD trigger as if it stood in a Dockerfile.
pub fn parse_trigger(trigger: &str, escape: char) -> Result<Instruction, String> {
    let (kw, rest) = split_keyword(trigger.trim());
    let upper = kw.to_ascii_uppercase();
    if !INSTRUCTIONS.contains(&upper.as_str()) || matches!(upper.as_str(), "FROM" | "ONBUILD") {
        return Err(format!("unknown ONBUILD trigger instruction: {kw}"));
    }
    Ok(Instruction {
        line: 0,
        text: trigger.trim().to_string(),
        kind: instruction(&upper, rest, escape, Vec::new())?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(text: &str) -> Dockerfile {
        parse(text, "Dockerfile").unwrap()
    }

    fn e(text: &str) -> String {
        parse(text, "Dockerfile").unwrap_err().to_string()
    }

    #[test]
    fn unknown_instruction_names_file_and_line() {
        let text = "FROM busybox\n\n# comment\nRUN true\nRUNN false\n";
        assert_eq!(e(text), "Dockerfile:5: unknown instruction: RUNN");
        assert_eq!(
            e("FROM a\nCOPY onlyone\n"),
            "Dockerfile:2: COPY requires at least two arguments, but only 1 provided"
        );
        assert!(e("RUN true\n").starts_with("Dockerfile:1: RUN: no build stage"));
        assert!(e("").contains("no FROM"));
        assert_eq!(
            e("FROM a b\n"),
            "Dockerfile:1: FROM requires either one or three arguments"
        );
        assert!(e("FROM a\nSHELL /bin/bash\n").contains("JSON form"));
        assert!(
            e("FROM a\nRUN --mount=type=weird,target=/x true\n").contains("unsupported mount type")
        );
        assert!(e("FROM a\nONBUILD FROM b\n").contains("isn't allowed"));
    }

    #[test]
    fn stages_args_and_flags() {
        let d = p("ARG BASE=busybox\nARG V\nFROM --platform=linux/amd64 ${BASE}:latest AS Build\nRUN echo hi\nFROM scratch\nCOPY --from=build --chown=1000:1000 --chmod=755 /out/app /app\n");
        assert_eq!(d.global_args.len(), 2);
        assert_eq!(d.global_args[0].default.as_deref(), Some("busybox"));
        assert_eq!(d.stages.len(), 2);
        assert_eq!(d.stages[0].name.as_deref(), Some("build"));
        assert_eq!(d.stages[0].platform.as_deref(), Some("linux/amd64"));
        assert_eq!(d.stages[0].base, "${BASE}:latest");
        assert_eq!(d.stages[1].display_name(), "stage-1");
        let Kind::Copy(c) = &d.stages[1].instructions[0].kind else {
            panic!()
        };
        assert_eq!(c.from.as_deref(), Some("build"));
        assert_eq!(c.chown.as_deref(), Some("1000:1000"));
        assert_eq!(c.chmod.as_deref(), Some("755"));
        assert_eq!(c.sources, vec!["/out/app"]);
        assert_eq!(c.dest, "/app");
    }

    #[test]
    fn continuations_comments_and_forms() {
        let d = p("FROM a\nRUN echo a \\\n# inside\n    && echo b\nCMD [\"sh\", \"-c\", \"echo hi\"]\nENTRYPOINT echo x\nCMD [broken\n");
        let ins = &d.stages[0].instructions;
        assert_eq!(ins[0].line, 2);
        assert_eq!(
            ins[0].kind,
            Kind::Run(Run {
                mounts: vec![],
                network: None,
                command: CommandLine::Shell("echo a     && echo b".into())
            })
        );
        assert_eq!(
            ins[1].kind,
            Kind::Cmd(CommandLine::Exec(vec![
                "sh".into(),
                "-c".into(),
                "echo hi".into()
            ]))
        );
        assert_eq!(
            ins[2].kind,
            Kind::Entrypoint(CommandLine::Shell("echo x".into()))
        );
        assert_eq!(ins[3].kind, Kind::Cmd(CommandLine::Shell("[broken".into())));
    }

    #[test]
    fn escape_directive_and_syntax() {
        let d =
            p("# syntax=docker/dockerfile:1\n# escape=`\nFROM a\nRUN dir c:\\ `\n  && echo x\n");
        assert_eq!(d.escape, '`');
        assert_eq!(d.syntax.as_deref(), Some("docker/dockerfile:1"));
        assert_eq!(
            d.stages[0].instructions[0].kind,
            Kind::Run(Run {
                mounts: vec![],
                network: None,
                command: CommandLine::Shell("dir c:\\   && echo x".into())
            })
        );
    }

    #[test]
    fn heredocs() {
        let d = p("FROM a\nRUN <<EOF\necho one\necho two\nEOF\nRUN cat <<-'END' > /f\n\thello $X\n\tEND\nCOPY <<CONF /etc/app.conf\nkey=1\nCONF\nUSER nobody\n");
        let ins = &d.stages[0].instructions;
        let Kind::Run(r) = &ins[0].kind else { panic!() };
        assert_eq!(r.command, CommandLine::Shell("echo one\necho two\n".into()));
        let Kind::Run(r) = &ins[1].kind else { panic!() };
        assert_eq!(
            r.command,
            CommandLine::Shell("cat <<-'END' > /f\nhello $X\nEND".into())
        );
        let Kind::Copy(c) = &ins[2].kind else {
            panic!()
        };
        assert_eq!(c.sources, vec!["<<CONF"]);
        assert_eq!(c.heredocs[0].body, "key=1\n");
        assert_eq!(ins[3].kind, Kind::User("nobody".into()));
        assert!(e("FROM a\nRUN <<EOF\necho\n").contains("unterminated heredoc"));
    }

    #[test]
    fn env_label_arg_and_metadata() {
        let d = p("FROM a\nENV A=1 B=\"two words\"\nENV LEGACY some value\nLABEL \"com.x\"=y\nARG X Y=2\nEXPOSE 80 443/udp\nVOLUME [\"/data\", \"/logs\"]\nVOLUME /one /two\nSTOPSIGNAL SIGINT\nWORKDIR /app\nHEALTHCHECK --interval=5s --retries=3 CMD wget -q localhost\nHEALTHCHECK NONE\nSHELL [\"/bin/sh\", \"-ec\"]\nONBUILD RUN echo trigger\nMAINTAINER me\n");
        let k: Vec<&Kind> = d.stages[0].instructions.iter().map(|i| &i.kind).collect();
        assert_eq!(
            k[0],
            &Kind::Env(vec![
                ("A".into(), "1".into()),
                ("B".into(), "\"two words\"".into())
            ])
        );
        assert_eq!(
            k[1],
            &Kind::Env(vec![("LEGACY".into(), "some value".into())])
        );
        assert_eq!(k[2], &Kind::Label(vec![("\"com.x\"".into(), "y".into())]));
        assert_eq!(
            k[3],
            &Kind::Arg(vec![
                ArgDecl {
                    name: "X".into(),
                    default: None
                },
                ArgDecl {
                    name: "Y".into(),
                    default: Some("2".into())
                }
            ])
        );
        assert_eq!(k[4], &Kind::Expose(vec!["80".into(), "443/udp".into()]));
        assert_eq!(k[5], &Kind::Volume(vec!["/data".into(), "/logs".into()]));
        assert_eq!(k[6], &Kind::Volume(vec!["/one".into(), "/two".into()]));
        assert_eq!(k[7], &Kind::StopSignal("SIGINT".into()));
        assert_eq!(k[8], &Kind::Workdir("/app".into()));
        let Kind::Healthcheck(Some(h)) = k[9] else {
            panic!()
        };
        assert_eq!(h.interval, Some(Duration::from_secs(5)));
        assert_eq!(h.retries, Some(3));
        assert_eq!(h.test, CommandLine::Shell("wget -q localhost".into()));
        assert_eq!(k[10], &Kind::Healthcheck(None));
        assert_eq!(k[11], &Kind::Shell(vec!["/bin/sh".into(), "-ec".into()]));
        assert_eq!(k[12], &Kind::OnBuild("RUN echo trigger".into()));
        assert_eq!(k[13], &Kind::Maintainer("me".into()));
    }

    #[test]
    fn run_mounts() {
        let d = p("FROM a\nRUN --mount=type=cache,target=/root/.cache,id=pip --mount=type=secret,id=token --network=none cat /run/secrets/token\n");
        let Kind::Run(r) = &d.stages[0].instructions[0].kind else {
            panic!()
        };
        assert_eq!(r.mounts.len(), 2);
        assert_eq!(r.mounts[0].kind, MountKind::Cache);
        assert_eq!(r.mounts[0].target.as_deref(), Some("/root/.cache"));
        assert_eq!(r.mounts[1].kind, MountKind::Secret);
        assert_eq!(r.mounts[1].id.as_deref(), Some("token"));
        assert_eq!(r.network.as_deref(), Some("none"));
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("1m30s"), Some(Duration::from_secs(90)));
        assert_eq!(parse_duration("500ms"), Some(Duration::from_millis(500)));
        assert_eq!(parse_duration("abc"), None);
    }

    #[test]
    fn arbitrary_input_never_panics() {
        // A cheap stand-in for the fuzz target: every prefix of a tricky file.
        let text = "# escape=`\nFROM a AS b\nRUN <<EOF `\n\"x\nEOF\nCOPY [\"a\" /b\nENV =x\nHEALTHCHECK --interval=x CMD\n";
        for n in 0..=text.len() {
            if text.is_char_boundary(n) {
                let _ = parse(&text[..n], "Dockerfile");
            }
        }
    }
}
