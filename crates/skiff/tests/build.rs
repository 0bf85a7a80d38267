//! `skiff build` end to end: the seed's Dockerfile patterns, offline, on the busybox image.
//! Run as root; each test has its own `--root`.

mod common;

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
