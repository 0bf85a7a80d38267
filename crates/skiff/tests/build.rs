//! `skiff build` end to end: the seed's Dockerfile patterns, offline, on the busybox image.
//! Run as root; each test has its own `--root`.

use crate::common;

use std::fs;
use std::path::{Path, PathBuf};

use common::Skiff;

/// A context directory with the given files.
fn context(files: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for (name, content) in files {
        let p = dir.path().join(name);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(p, content).unwrap();
    }
    dir
}

/// Runs `skiff build` in `ctx`; returns (success, combined output).
fn build(s: &Skiff, ctx: &Path, extra: &[&str]) -> (bool, String) {
    let mut args = vec!["build", "--progress", "plain"];
    args.extend_from_slice(extra);
    let ctx = ctx.to_str().unwrap();
    args.push(ctx);
    let out = s.run(&args);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

fn build_ok(s: &Skiff, ctx: &Path, extra: &[&str]) -> String {
    let (ok, text) = build(s, ctx, extra);
    assert!(ok, "build failed:\n{text}");
    text
}

/// The image ID from the `writing image` line.
fn image_id(output: &str) -> String {
    output
        .lines()
        .find_map(|l| l.split("writing image ").nth(1))
        .and_then(|r| r.split_whitespace().next())
        .unwrap_or_else(|| panic!("no image id in:\n{output}"))
        .to_string()
}

/// The vertex line (`#N [...] TEXT`) for a step, and whether it was CACHED.
fn step_cached(output: &str, step: &str) -> bool {
    let n = output
        .lines()
        .find(|l| l.starts_with('#') && l.ends_with(step))
        .and_then(|l| l.split_whitespace().next())
        .unwrap_or_else(|| panic!("no step {step:?} in:\n{output}"))
        .to_string();
    output.lines().any(|l| l == format!("{n} CACHED"))
}

#[test]
fn multi_stage_static_binary_into_scratch() {
    let s = Skiff::with_busybox();
    let ctx = context(&[(
        "hello.c",
        "#include <stdio.h>\nint main(void) { puts(\"hello from a static binary\"); return 0; }\n",
    )]);
    // busybox has no compiler: the "compiler" is gcc on the host, the build stage packages
    // what it produced, as a builder stage would.
    let status = std::process::Command::new("gcc")
        .args(["-static", "-O2", "-o"])
        .arg(ctx.path().join("hello"))
        .arg(ctx.path().join("hello.c"))
        .status()
        .expect("gcc must be installed for this test");
    assert!(status.success());
    fs::write(
        ctx.path().join("Dockerfile"),
        "FROM busybox AS build\nWORKDIR /src\nCOPY hello hello.c ./\nRUN mkdir -p /out && cp hello /out/app && chmod 755 /out/app && echo built\n\nFROM scratch\nCOPY --from=build /out/app /app\nUSER 65534\nENTRYPOINT [\"/app\"]\n",
    )
    .unwrap();
    let out = build_ok(&s, ctx.path(), &["-t", "static:1"]);
    assert!(out.contains("[build 1/3] FROM busybox"), "{out}");
    assert!(
        out.contains("[stage-1 2/2] COPY --from=build /out/app /app"),
        "{out}"
    );
    assert!(
        out.contains("naming to docker.io/library/static:1 done"),
        "{out}"
    );
    let run = s.ok(&["run", "--rm", "static:1"]);
    assert_eq!(run.trim(), "hello from a static binary");
    // The final image has only the binary: one layer, no shell.
    let inspect: serde_json::Value = serde_json::from_str(&s.ok(&["inspect", "static:1"])).unwrap();
    assert_eq!(
        inspect[0]["RootFS"]["diff_ids"].as_array().unwrap().len(),
        1
    );
    assert_eq!(inspect[0]["Config"]["User"], "65534");
    let history = s.ok(&["history", "--no-trunc", "static:1"]);
    assert!(history.contains("COPY /out/app /app"), "{history}");
    assert!(history.contains("ENTRYPOINT [\"/app\"]"), "{history}");
}

#[test]
fn non_root_user() {
    let s = Skiff::with_busybox();
    let ctx = context(&[(
        "Dockerfile",
        "FROM busybox\nRUN echo 'builder:x:1000:1000::/home/builder:/bin/sh' >> /etc/passwd && mkdir -p /home/builder && chown 1000:1000 /home/builder\nUSER builder\nWORKDIR /home/builder\nRUN touch mine && ls -ln mine\nCMD [\"id\", \"-u\"]\n",
    )]);
    let out = build_ok(&s, ctx.path(), &["-t", "nonroot"]);
    assert!(out.contains(" 1000 "), "RUN ran as the USER:\n{out}");
    assert_eq!(s.ok(&["run", "--rm", "nonroot"]).trim(), "1000");
}

#[test]
fn cache_mount_persists_between_builds_and_stays_out_of_the_image() {
    let s = Skiff::with_busybox();
    let ctx = context(&[(
        "Dockerfile",
        "FROM busybox\nRUN --mount=type=cache,target=/var/cache/pkg echo fetched >> /var/cache/pkg/log && wc -l < /var/cache/pkg/log > /runs\nCMD [\"cat\", \"/runs\"]\n",
    )]);
    build_ok(&s, ctx.path(), &["-t", "cachemount"]);
    assert_eq!(s.ok(&["run", "--rm", "cachemount"]).trim(), "1");
    build_ok(&s, ctx.path(), &["--no-cache", "-t", "cachemount"]);
    assert_eq!(
        s.ok(&["run", "--rm", "cachemount"]).trim(),
        "2",
        "the cache directory kept the first build's file"
    );
    let (listing, _) = s.code(
        0,
        &[
            "run",
            "--rm",
            "cachemount",
            "sh",
            "-c",
            "ls -A /var/cache/pkg 2>/dev/null | wc -l",
        ],
    );
    assert_eq!(listing.trim(), "0", "cache contents are not in the layer");
}

#[test]
fn secret_mount_never_lands_in_a_layer_or_history() {
    let s = Skiff::with_busybox();
    let secret_value = "s3cr3t-7f1c9a2e-token";
    let secret_dir = tempfile::tempdir().unwrap();
    let secret = secret_dir.path().join("token.txt");
    fs::write(&secret, secret_value).unwrap();
    let ctx = context(&[(
        "Dockerfile",
        "FROM busybox\nRUN --mount=type=secret,id=token,required wc -c < /run/secrets/token > /proof && test -s /run/secrets/token\nRUN test ! -e /run/secrets/token && echo gone-after-step\n",
    )]);
    let src = format!("id=token,src={}", secret.display());
    let out = build_ok(&s, ctx.path(), &["--secret", &src, "-t", "withsecret"]);
    assert!(out.contains("gone-after-step"), "{out}");
    assert!(!out.contains(secret_value));
    assert_eq!(
        s.ok(&["run", "--rm", "withsecret", "cat", "/proof"]).trim(),
        secret_value.len().to_string(),
        "the step read the secret"
    );
    // Every blob and unpacked layer file of the store: the secret is in none of them.
    let mut scanned = 0;
    scan(&s.root.path().join("images"), &mut |p, data| {
        scanned += 1;
        assert!(
            !data
                .windows(secret_value.len())
                .any(|w| w == secret_value.as_bytes()),
            "secret found in {}",
            p.display()
        );
    });
    assert!(scanned > 10);
    let history = s.ok(&["history", "--no-trunc", "withsecret"]);
    assert!(!history.contains(secret_value), "{history}");
    // Without --secret, a required secret fails the step with a clear message.
    let (ok, text) = build(&s, ctx.path(), &["--no-cache"]);
    assert!(!ok);
    assert!(text.contains("secret token not found"), "{text}");
}

fn scan(dir: &Path, f: &mut dyn FnMut(&Path, &[u8])) {
    for entry in fs::read_dir(dir).unwrap().flatten() {
        let p = entry.path();
        let meta = fs::symlink_metadata(&p).unwrap();
        if meta.is_dir() {
            scan(&p, f);
        } else if meta.is_file() {
            f(&p, &fs::read(&p).unwrap());
        }
    }
}

#[test]
fn dockerignore_excludes_files() {
    let s = Skiff::with_busybox();
    let ctx = context(&[
        (
            "Dockerfile",
            "FROM busybox\nCOPY . /ctx/\nCMD [\"find\", \"/ctx\"]\n",
        ),
        (
            ".dockerignore",
            "# local files\n*.env\nnode_modules\n**/*.log\n!important.log\n",
        ),
        ("app.py", "print()"),
        ("prod.env", "PASSWORD=x"),
        ("node_modules/lib/index.js", "x"),
        ("logs/debug.log", "x"),
        ("important.log", "keep"),
        ("src/main.py", "x"),
    ]);
    build_ok(&s, ctx.path(), &["-t", "ignored"]);
    let listing = s.ok(&["run", "--rm", "ignored"]);
    let files: Vec<&str> = listing.lines().collect();
    for want in [
        "/ctx/app.py",
        "/ctx/src/main.py",
        "/ctx/important.log",
        "/ctx/Dockerfile",
    ] {
        assert!(files.contains(&want), "{want} missing: {files:?}");
    }
    for unwanted in ["/ctx/prod.env", "/ctx/node_modules", "/ctx/logs/debug.log"] {
        assert!(!files.contains(&unwanted), "{unwanted} copied: {files:?}");
    }
}

const WRONG_ORDER: &str = "FROM busybox\nWORKDIR /app\nCOPY . .\nRUN echo installing-dependencies && cat requirements.txt > installed.txt\nCMD [\"cat\", \"app.py\"]\n";
const RIGHT_ORDER: &str = "FROM busybox\nWORKDIR /app\nCOPY requirements.txt .\nRUN echo installing-dependencies && cat requirements.txt > installed.txt\nCOPY . .\nCMD [\"cat\", \"app.py\"]\n";
const INSTALL: &str = "RUN echo installing-dependencies && cat requirements.txt > installed.txt";

#[test]
fn wrong_order_misses_the_cache_right_order_keeps_it() {
    let s = Skiff::with_busybox();
    for (dockerfile, install_cached_after_edit) in [(WRONG_ORDER, false), (RIGHT_ORDER, true)] {
        let ctx = context(&[
            ("Dockerfile", dockerfile),
            ("requirements.txt", "flask\n"),
            ("app.py", "print('v1')\n"),
        ]);
        let first = build_ok(&s, ctx.path(), &["-t", "order"]);
        assert!(!step_cached(&first, INSTALL), "{first}");
        // Unchanged: every step is CACHED and the image is the same.
        let again = build_ok(&s, ctx.path(), &["-t", "order"]);
        assert!(step_cached(&again, INSTALL), "{again}");
        assert!(step_cached(&again, "COPY . ."), "{again}");
        assert_eq!(image_id(&first), image_id(&again));
        assert!(!again.contains("installing-dependencies\n"), "{again}");
        // One source file changes.
        fs::write(ctx.path().join("app.py"), "print('v2')\n").unwrap();
        let edited = build_ok(&s, ctx.path(), &["-t", "order"]);
        assert_eq!(
            step_cached(&edited, INSTALL),
            install_cached_after_edit,
            "{dockerfile}\n{edited}"
        );
        assert!(!step_cached(&edited, "COPY . ."), "{edited}");
        assert_ne!(image_id(&first), image_id(&edited));
        assert_eq!(s.ok(&["run", "--rm", "order"]).trim(), "print('v2')");
    }
}

#[test]
fn syntax_errors_name_file_and_line() {
    let s = Skiff::with_busybox();
    let ctx = context(&[(
        "Dockerfile",
        "FROM busybox\n\n# a comment\nRUN true\nRUNN echo typo\n",
    )]);
    let (ok, text) = build(&s, ctx.path(), &[]);
    assert!(!ok);
    assert!(
        text.contains("Dockerfile:5: unknown instruction: RUNN"),
        "{text}"
    );
    let ctx = context(&[("build.Dockerfile", "FROM busybox\nCOPY onlyone\n")]);
    let file = ctx.path().join("build.Dockerfile");
    let (ok, text) = build(&s, ctx.path(), &["-f", file.to_str().unwrap()]);
    assert!(!ok);
    assert!(
        text.contains("build.Dockerfile:2: COPY requires at least two arguments"),
        "{text}"
    );
}

#[test]
fn build_args_and_arg_defaults() {
    let s = Skiff::with_busybox();
    let ctx = context(&[(
        "Dockerfile",
        "ARG BASE=busybox\nFROM ${BASE}\nARG GREETING=hello\nARG NAME\nENV MSG=\"${GREETING} ${NAME:-nobody}\" SET=${NAME:+named}\nRUN echo \"$MSG $SET\" > /msg\nCMD [\"cat\", \"/msg\"]\n",
    )]);
    build_ok(&s, ctx.path(), &["-t", "args:default"]);
    assert_eq!(
        s.ok(&["run", "--rm", "args:default"]).trim(),
        "hello nobody"
    );
    build_ok(
        &s,
        ctx.path(),
        &[
            "--build-arg",
            "NAME=skiff",
            "--build-arg",
            "GREETING=hi",
            "-t",
            "args:given",
        ],
    );
    assert_eq!(
        s.ok(&["run", "--rm", "args:given"]).trim(),
        "hi skiff named"
    );
    let (ok, text) = build(
        &s,
        ctx.path(),
        &["--build-arg", "BASE=nonexistent-local-only.invalid/x"],
    );
    assert!(!ok, "{text}");
}

#[test]
fn target_builds_only_the_needed_stages() {
    let s = Skiff::with_busybox();
    let ctx = context(&[(
        "Dockerfile",
        "FROM busybox AS base\nRUN echo base > /base\n\nFROM base AS test\nRUN echo running-tests && false\n\nFROM busybox AS assets\nRUN echo asset > /asset\n\nFROM base AS release\nCOPY --from=assets /asset /asset\nCMD [\"cat\", \"/base\", \"/asset\"]\n\nFROM release AS debug\nRUN echo debug > /debug\n",
    )]);
    let out = build_ok(&s, ctx.path(), &["--target", "release", "-t", "rel"]);
    assert!(!out.contains("[test "), "test stage must not run:\n{out}");
    assert!(
        !out.contains("[debug "),
        "stages after the target must not run:\n{out}"
    );
    assert!(out.contains("[assets 2/2]"), "{out}");
    assert_eq!(s.ok(&["run", "--rm", "rel"]), "base\nasset\n");
    let (ok, text) = build(&s, ctx.path(), &["--target", "test"]);
    assert!(!ok);
    assert!(
        text.contains("did not complete successfully: exit code: 1"),
        "{text}"
    );
    let (ok, text) = build(&s, ctx.path(), &["--target", "nope"]);
    assert!(!ok);
    assert!(
        text.contains("target stage \"nope\" could not be found"),
        "{text}"
    );
}

#[test]
fn config_instructions_end_up_in_the_image() {
    let s = Skiff::with_busybox();
    let ctx = context(&[
        ("site.tar.gz", ""),
        (
            "Dockerfile",
            "# syntax=docker/dockerfile:1\nFROM busybox\nLABEL org.example.team=\"build tools\" version=1\nENV APP_HOME=/srv/app\nWORKDIR $APP_HOME\nEXPOSE 8080 9090/udp\nVOLUME /data\nSTOPSIGNAL SIGINT\nSHELL [\"/bin/sh\", \"-ec\"]\nHEALTHCHECK --interval=5s --timeout=2s --retries=3 CMD wget -q -O- localhost:8080 || exit 1\nONBUILD RUN echo child\nADD site.tar.gz ./site/\nCOPY <<EOF /etc/motd\nwelcome to $APP_HOME\nEOF\nRUN <<EOF\necho heredoc-one > /h\necho heredoc-two >> /h\nEOF\nENTRYPOINT [\"sh\", \"-c\"]\nCMD [\"cat /etc/motd /h site/index.html; pwd\"]\n",
        ),
    ]);
    // A real tarball for ADD to extract.
    let site = tempfile::tempdir().unwrap();
    fs::write(site.path().join("index.html"), "<h1>site</h1>\n").unwrap();
    let status = std::process::Command::new("tar")
        .arg("-czf")
        .arg(ctx.path().join("site.tar.gz"))
        .arg("-C")
        .arg(site.path())
        .arg("index.html")
        .status()
        .unwrap();
    assert!(status.success());
    build_ok(&s, ctx.path(), &["-t", "configured"]);
    let run = s.ok(&["run", "--rm", "configured"]);
    assert_eq!(
        run,
        "welcome to /srv/app\nheredoc-one\nheredoc-two\n<h1>site</h1>\n/srv/app\n"
    );
    let config_blob = config_of(&s, "configured");
    let c = &config_blob["config"];
    assert_eq!(c["WorkingDir"], "/srv/app");
    assert_eq!(c["Labels"]["org.example.team"], "build tools");
    assert!(c["ExposedPorts"]["8080/tcp"].is_object());
    assert!(c["ExposedPorts"]["9090/udp"].is_object());
    assert!(c["Volumes"]["/data"].is_object());
    assert_eq!(c["StopSignal"], "SIGINT");
    assert_eq!(c["Shell"], serde_json::json!(["/bin/sh", "-ec"]));
    assert_eq!(c["Healthcheck"]["Test"][0], "CMD-SHELL");
    assert_eq!(c["Healthcheck"]["Interval"], 5_000_000_000u64);
    assert_eq!(c["Healthcheck"]["Retries"], 3);
    assert_eq!(c["OnBuild"], serde_json::json!(["RUN echo child"]));
    assert!(c["Env"]
        .as_array()
        .unwrap()
        .contains(&"APP_HOME=/srv/app".into()));
    let history = config_blob["history"].as_array().unwrap();
    assert!(history
        .iter()
        .any(|h| h["created_by"] == "EXPOSE 8080/tcp 9090/udp" && h["empty_layer"] == true));
    assert!(history.iter().any(|h| h["created_by"]
        .as_str()
        .unwrap()
        .starts_with("RUN /bin/sh -ec echo heredoc-one")));

    // ONBUILD triggers run in a build that uses the image as its base.
    let child = context(&[("Dockerfile", "FROM configured\nRUN echo child-step\n")]);
    let out = build_ok(&s, child.path(), &["-t", "child"]);
    assert!(out.contains("RUN echo child"), "{out}");
    assert!(config_of(&s, "child")["config"]["OnBuild"].is_null());
}

/// The raw config blob of an image (with Docker's fields OCI has no type for).
fn config_of(s: &Skiff, image: &str) -> serde_json::Value {
    let inspect: serde_json::Value = serde_json::from_str(&s.ok(&["inspect", image])).unwrap();
    let id = inspect[0]["Id"]
        .as_str()
        .unwrap()
        .trim_start_matches("sha256:")
        .to_string();
    let blob: PathBuf = s.root.path().join("images/blobs/sha256").join(id);
    serde_json::from_slice(&fs::read(blob).unwrap()).unwrap()
}

#[test]
fn add_from_an_unreachable_url_says_so() {
    let s = Skiff::with_busybox();
    let ctx = context(&[(
        "Dockerfile",
        "FROM busybox\nADD http://127.0.0.1:9/file.txt /file.txt\n",
    )]);
    let (ok, text) = build(&s, ctx.path(), &[]);
    assert!(!ok);
    assert!(text.contains("Dockerfile:2: ADD http://127.0.0.1:9/file.txt /file.txt: failed to fetch http://127.0.0.1:9/file.txt"), "{text}");
}

#[test]
fn failing_run_reports_the_exit_code_and_output() {
    let s = Skiff::with_busybox();
    let ctx = context(&[(
        "Dockerfile",
        "FROM busybox\nRUN echo about-to-fail && exit 3\n",
    )]);
    let (ok, text) = build(&s, ctx.path(), &[]);
    assert!(!ok);
    assert!(text.contains("about-to-fail"), "{text}");
    assert!(
        text.contains("Dockerfile:2: process \"/bin/sh -c echo about-to-fail && exit 3\" did not complete successfully: exit code: 3"),
        "{text}"
    );
    // A failed step leaves no mount and no container behind.
    let mounts = fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(
        !mounts.contains(s.root.path().to_str().unwrap()),
        "{mounts}"
    );
    assert_eq!(s.ok(&["ps", "-aq"]).trim(), "");
}

#[test]
fn image_healthcheck_drives_run_and_ps() {
    let s = Skiff::with_busybox();
    let ctx = context(&[(
        "Dockerfile",
        "FROM busybox\nHEALTHCHECK --interval=200ms --retries=1 CMD test -f /tmp/ready\nCMD [\"sleep\", \"60\"]\n",
    )]);
    build_ok(&s, ctx.path(), &["-t", "checked"]);
    s.ok(&["run", "-d", "--name", "svc", "checked"]);
    let status = || s.ok(&["ps", "--format", "{{.Status}}"]);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !status().contains("(unhealthy)") {
        assert!(std::time::Instant::now() < deadline, "{}", status());
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    s.ok(&["exec", "svc", "touch", "/tmp/ready"]);
    while !status().contains("(healthy)") {
        assert!(std::time::Instant::now() < deadline, "{}", status());
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

/// `/proc/uptime` seconds as written by a RUN step (busybox `date` has no `%N`; uptime
/// is the host's clock with 10 ms steps, the same in every container).
fn uptime_stamp(text: &str) -> f64 {
    text.trim()
        .parse()
        .unwrap_or_else(|_| panic!("not a timestamp: {text:?}"))
}

#[test]
fn independent_stages_build_in_parallel() {
    let s = Skiff::with_busybox();
    let stamp = |name: &str| {
        format!("RUN cut -d' ' -f1 /proc/uptime > /{name}-start && sleep 1 && cut -d' ' -f1 /proc/uptime > /{name}-end")
    };
    let dockerfile = format!(
        "FROM busybox AS left\n{}\n\nFROM busybox AS right\n{}\n\nFROM busybox AS last\nCOPY --from=left /left-start /left-end /t/\nCOPY --from=right /right-start /right-end /t/\n{}\n",
        stamp("left"),
        stamp("right"),
        stamp("last"),
    );
    let ctx = context(&[("Dockerfile", &dockerfile)]);
    build_ok(&s, ctx.path(), &["-t", "par"]);
    let read =
        |name: &str| uptime_stamp(&s.ok(&["run", "--rm", "par", "cat", &format!("/t/{name}")]));
    let (ls, le) = (read("left-start"), read("left-end"));
    let (rs, re) = (read("right-start"), read("right-end"));
    assert!(
        le - ls >= 0.9 && re - rs >= 0.9,
        "each step slept: {ls} {le} {rs} {re}"
    );
    // Serial stages would have one start after the other's end.
    assert!(
        ls < re && rs < le,
        "the independent stages overlapped: left {ls}..{le}, right {rs}..{re}"
    );
    let last_start = uptime_stamp(&s.ok(&["run", "--rm", "par", "cat", "/last-start"]));
    assert!(
        last_start >= le && last_start >= re,
        "the final stage ran after both: {last_start} {le} {re}"
    );
}

#[test]
fn tty_progress_redraws_in_place_and_plain_has_no_escapes() {
    let s = Skiff::with_busybox();
    let ctx = context(&[(
        "Dockerfile",
        "FROM busybox\nRUN echo first-step && sleep 0.3\nRUN echo second-step\n",
    )]);
    let dir = ctx.path().display();
    let (ok, tty) = s.in_terminal(&format!("build --progress tty -t tty1 {dir}"));
    assert!(ok, "{tty}");
    // Cursor up, clear line: the display is redrawn in place.
    assert!(tty.contains("\x1b[2K"), "{tty:?}");
    assert!(
        tty.split("\x1b[").skip(1).any(|seq| {
            let n = seq.find(|c: char| !c.is_ascii_digit()).unwrap_or(0);
            n > 0 && seq[n..].starts_with('A')
        }),
        "no cursor-up sequence: {tty:?}"
    );
    assert!(tty.contains("[+] Building "), "{tty:?}");
    let done_line = tty
        .split(['\n', '\r'])
        .rfind(|l| l.contains("[stage-0 2/3] RUN echo first-step && sleep 0.3"))
        .unwrap_or_else(|| panic!("{tty:?}"));
    assert!(done_line.contains(" DONE 0."), "{done_line:?}");
    // auto is the live display on a terminal; a rebuild shows CACHED steps.
    let (ok, auto) = s.in_terminal(&format!("build -t tty1 {dir}"));
    assert!(ok, "{auto}");
    assert!(auto.contains("\x1b[2K"), "{auto:?}");
    let cached_line = auto
        .split(['\n', '\r'])
        .rfind(|l| l.contains("[stage-0 3/3] RUN echo second-step"))
        .unwrap_or_else(|| panic!("{auto:?}"));
    assert!(
        cached_line.trim_end().ends_with(" CACHED"),
        "{cached_line:?}"
    );
    assert!(auto.contains("FINISHED"), "{auto:?}");
    // plain: the same build as lines, without a single escape sequence.
    let (ok, plain) = s.in_terminal(&format!("build --progress plain --no-cache -t tty1 {dir}"));
    assert!(ok, "{plain}");
    assert!(!plain.contains('\x1b'), "{plain:?}");
    assert!(plain.contains("first-step"), "{plain}");
    assert!(plain.contains(" DONE "), "{plain}");
    // Not a terminal: auto is plain.
    let out = s.run(&["build", "-t", "tty1", ctx.path().to_str().unwrap()]);
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success() && !text.contains('\x1b'), "{text:?}");
    assert!(text.contains("CACHED"), "{text}");
}

#[test]
fn bind_mounts_are_read_only_unless_rw_and_rw_writes_are_discarded() {
    let s = Skiff::with_busybox();
    let ctx = context(&[
        ("conf/app.conf", "setting=1\n"),
        (
            "Dockerfile",
            "FROM busybox AS tools\nRUN mkdir /tools && echo tool-v1 > /tools/version\n\n\
             FROM busybox\n\
             RUN --mount=type=bind,source=conf,target=/mnt/conf cat /mnt/conf/app.conf > /conf-copy && if touch /mnt/conf/x 2>/dev/null; then echo writable-$((1+1)); exit 1; fi\n\
             RUN --mount=type=bind,source=conf,target=/mnt/conf,rw echo scribble > /mnt/conf/new && echo changed >> /mnt/conf/app.conf && cat /mnt/conf/new\n\
             RUN --mount=type=bind,source=conf/app.conf,target=/one.conf,rw echo more >> /one.conf && grep -q more /one.conf\n\
             RUN --mount=type=bind,from=tools,source=/tools,target=/t cp /t/version /tool-version && if touch /t/x 2>/dev/null; then exit 1; fi\n\
             RUN --mount=type=bind,from=tools,source=/tools,target=/t,rw echo x > /t/added && test -f /t/added\n\
             RUN --mount=type=bind,from=tools,source=/tools,target=/t test ! -e /t/added && echo stage-unchanged\n\
             RUN --mount=type=bind,source=conf,target=/mnt/conf test ! -e /mnt/conf/new && cat /mnt/conf/app.conf\n",
        ),
    ]);
    let out = build_ok(&s, ctx.path(), &["-t", "binds"]);
    assert!(out.contains("scribble"), "{out}");
    assert!(out.contains("stage-unchanged"), "{out}");
    assert!(!out.contains("writable-2"), "{out}");
    // The context is untouched.
    assert_eq!(
        fs::read_to_string(ctx.path().join("conf/app.conf")).unwrap(),
        "setting=1\n"
    );
    assert!(!ctx.path().join("conf/new").exists());
    // The image has what the steps wrote outside the mounts, nothing written inside.
    let run = |cmd: &str| s.ok(&["run", "--rm", "binds", "sh", "-c", cmd]);
    assert_eq!(run("cat /conf-copy /tool-version"), "setting=1\ntool-v1\n");
    assert_eq!(
        run("ls -A /mnt/conf /t 2>/dev/null | grep -c . ; test ! -s /one.conf && echo no-file"),
        "0\nno-file\n"
    );
}

#[test]
fn intermediate_stages_leave_no_images_and_rebuilds_stay_cached() {
    let s = Skiff::with_busybox();
    let ctx = context(&[
        ("src.txt", "source\n"),
        (
            "Dockerfile",
            "FROM busybox AS deps\nRUN echo deps > /deps\n\nFROM deps AS build\nCOPY src.txt /src.txt\nRUN cat /deps /src.txt > /app\n\nFROM busybox\nCOPY --from=build /app /app\nCMD [\"cat\", \"/app\"]\n",
        ),
    ]);
    let first = build_ok(&s, ctx.path(), &["-t", "final:1"]);
    let images = s.ok(&["images"]);
    assert!(!images.contains("<none>"), "{images}");
    let repos: Vec<&str> = images
        .lines()
        .skip(1)
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    assert_eq!(repos.len(), 2, "{images}");
    assert!(
        repos.contains(&"final") && repos.contains(&"busybox"),
        "{images}"
    );
    // A garbage collection (any rmi sweeps) keeps the cached layers of the stages.
    s.ok(&["tag", "busybox", "spare:1"]);
    s.ok(&["rmi", "spare:1"]);
    let again = build_ok(&s, ctx.path(), &["-t", "final:1"]);
    for step in [
        "RUN echo deps > /deps",
        "COPY src.txt /src.txt",
        "RUN cat /deps /src.txt > /app",
        "COPY --from=build /app /app",
    ] {
        assert!(step_cached(&again, step), "{step} not cached:\n{again}");
    }
    assert_eq!(image_id(&first), image_id(&again));
    assert!(!s.ok(&["images"]).contains("<none>"));
    assert_eq!(s.ok(&["run", "--rm", "final:1"]), "deps\nsource\n");
    // `builder prune` drops the cache: the stages run again.
    let pruned = s.ok(&["builder", "prune", "-f"]);
    assert!(pruned.starts_with("Total reclaimed space: "), "{pruned}");
    let after = build_ok(&s, ctx.path(), &["-t", "final:1"]);
    assert!(!step_cached(&after, "RUN echo deps > /deps"), "{after}");
}

#[test]
fn a_new_build_arg_value_misses_only_the_steps_that_see_it() {
    let s = Skiff::with_busybox();
    let ctx = context(&[
        ("a.txt", "a\n"),
        (
            "Dockerfile",
            "FROM busybox AS named\nARG VERSION=1\nCOPY a.txt /named-${VERSION}.txt\n\n\
             FROM busybox\nARG VERSION=1\nCOPY a.txt /a.txt\nENV STATIC=yes\nRUN echo built > /built\nCOPY --from=named /named-${VERSION}.txt /named.txt\nRUN echo \"v$VERSION\" > /version\n",
        ),
    ]);
    let steps = [
        "COPY a.txt /named-${VERSION}.txt",
        "COPY a.txt /a.txt",
        "RUN echo built > /built",
    ];
    let first = build_ok(&s, ctx.path(), &["-t", "argcache"]);
    assert!(steps.iter().all(|st| !step_cached(&first, st)), "{first}");
    let changed = build_ok(
        &s,
        ctx.path(),
        &["--build-arg", "VERSION=2", "-t", "argcache"],
    );
    // COPY does not use VERSION: still cached, as in BuildKit.
    assert!(step_cached(&changed, "COPY a.txt /a.txt"), "{changed}");
    // A COPY that substitutes it and every RUN after the ARG (it is in their
    // environment) run again.
    assert!(
        !step_cached(&changed, "COPY a.txt /named-${VERSION}.txt"),
        "{changed}"
    );
    assert!(
        !step_cached(&changed, "RUN echo built > /built"),
        "{changed}"
    );
    assert_eq!(
        s.ok(&["run", "--rm", "argcache", "cat", "/version"]),
        "v2\n"
    );
    let history = s.ok(&["history", "--no-trunc", "argcache"]);
    assert!(
        history.contains("RUN |1 VERSION=2 /bin/sh -c echo built > /built"),
        "{history}"
    );
    // Either value again: all cached.
    for v in ["VERSION=2", "VERSION=1"] {
        let again = build_ok(&s, ctx.path(), &["--build-arg", v, "-t", "argcache"]);
        assert!(
            steps.iter().all(|st| step_cached(&again, st)),
            "{v}:\n{again}"
        );
    }
}

/// The host as an OCI platform (`linux/amd64`), and one it is not.
fn host_and_other_platform() -> (&'static str, &'static str) {
    match std::env::consts::ARCH {
        "x86_64" => ("linux/amd64", "linux/arm64"),
        "aarch64" => ("linux/arm64", "linux/amd64"),
        other => panic!("no test platform for {other}"),
    }
}

#[test]
fn from_platform_accepts_the_host_and_refuses_others_before_building() {
    let s = Skiff::with_busybox();
    let (host, other) = host_and_other_platform();
    let arch = host.split('/').nth(1).unwrap();
    let ctx = context(&[(
        "Dockerfile",
        &format!(
            "FROM --platform=$BUILDPLATFORM busybox AS build\nARG TARGETPLATFORM\nARG TARGETOS\nARG TARGETARCH\nARG BUILDPLATFORM\nRUN echo \"$BUILDPLATFORM $TARGETPLATFORM $TARGETOS $TARGETARCH\" > /platforms\n\n\
             FROM --platform={host} busybox AS explicit\nRUN echo \"[$TARGETARCH]\" > /undeclared\n\n\
             FROM --platform=$TARGETPLATFORM busybox\nCOPY --from=build /platforms /platforms\nCOPY --from=explicit /undeclared /undeclared\n"
        ),
    )]);
    build_ok(&s, ctx.path(), &["-t", "plat", "--platform", host]);
    assert_eq!(
        s.ok(&["run", "--rm", "plat", "cat", "/platforms", "/undeclared"]),
        format!("{host} {host} linux {arch}\n[]\n"),
        "platform ARGs are set where declared, and only there"
    );

    let ctx = context(&[(
        "Dockerfile",
        &format!("FROM busybox AS first\nRUN echo should-not-run\n\nFROM --platform={other} busybox\nCOPY --from=first /bin/sh /sh\n"),
    )]);
    let (ok, text) = build(&s, ctx.path(), &[]);
    assert!(!ok);
    assert!(
        text.contains(&format!(
            "skiff build: platform {other} is not supported on this {host} host"
        )),
        "{text}"
    );
    assert!(text.contains("Dockerfile:4"), "{text}");
    assert!(
        !text.contains("should-not-run") && !text.contains("[first "),
        "{text}"
    );
    // --platform of the build itself.
    let ctx = context(&[("Dockerfile", "FROM busybox\nRUN echo should-not-run\n")]);
    let (ok, text) = build(&s, ctx.path(), &["--platform", other]);
    assert!(!ok);
    assert!(
        text.contains(&format!(
            "skiff build: platform {other} is not supported on this {host} host"
        )),
        "{text}"
    );
    assert!(!text.contains("should-not-run"), "{text}");
}
