//! End-to-end tests of the container engine through the real `skiff` binary.
//! They need root (namespaces, cgroups, overlayfs), as the engine does.

use crate::common;

use std::io::Write;
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::Skiff;

fn wait_for(mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

#[test]
fn run_prints_output_and_propagates_exit_codes() {
    let s = Skiff::with_busybox();
    assert_eq!(
        s.ok(&["run", "--rm", "busybox", "echo", "hello", "world"]),
        "hello world\n"
    );
    s.code(42, &["run", "--rm", "busybox", "sh", "-c", "exit 42"]);
    let (_, err) = s.code(127, &["run", "--rm", "busybox", "no-such-command"]);
    assert!(err.contains("executable file not found in $PATH"), "{err}");
    s.code(126, &["run", "--rm", "busybox", "/etc"]);
    let (_, err) = s.code(125, &["run", "--rm", "--cpus", "0", "busybox", "true"]);
    assert!(err.contains("--cpus"), "{err}");
    let (_, err) = s.code(125, &["run", "--rm", "no-such-image-here:1", "true"]);
    assert!(err.contains("no-such-image-here"), "{err}");
    // --rm left nothing behind.
    assert_eq!(s.ok(&["ps", "-aq"]), "");
}

#[test]
fn detached_container_lifecycle() {
    let s = Skiff::with_busybox();
    let id = s.ok(&[
        "run",
        "-d",
        "--name",
        "ticker",
        "busybox",
        "sh",
        "-c",
        "echo started; echo oops >&2; while true; do echo tick; sleep 0.2; done",
    ]);
    assert_eq!(id.trim().len(), 64);
    let ps = s.ok(&["ps"]);
    assert!(ps.contains("ticker") && ps.contains("Up "), "{ps}");
    assert!(wait_for(|| s.ok(&["logs", "ticker"]).contains("tick")));
    let out = s.run(&["logs", "ticker"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.starts_with("started\n"), "{stdout}");
    assert_eq!(String::from_utf8_lossy(&out.stderr), "oops\n");
    let tail = s.run(&["logs", "--tail", "1", "ticker"]);
    assert_eq!(
        String::from_utf8_lossy(&tail.stdout).lines().count()
            + String::from_utf8_lossy(&tail.stderr).lines().count(),
        1
    );
    let ts = s.run(&["logs", "-t", "--tail", "1", "ticker"]);
    let ts = format!(
        "{}{}",
        String::from_utf8_lossy(&ts.stdout),
        String::from_utf8_lossy(&ts.stderr)
    );
    assert!(
        ts.contains('T') && (ts.contains("Z tick") || ts.contains("Z oops")),
        "{ts}"
    );
    // A name is unique.
    let (_, err) = s.code(125, &["run", "-d", "--name", "ticker", "busybox", "true"]);
    assert!(err.contains("is already in use"), "{err}");
    // rm of a running container needs -f.
    s.code(1, &["rm", "ticker"]);
    s.ok(&["stop", "-t", "1", "ticker"]);
    let state = s.ok(&[
        "inspect",
        "-f",
        "{{.State.Status}} {{.State.ExitCode}}",
        "ticker",
    ]);
    assert_eq!(state.trim(), "exited 137");
    s.ok(&["start", "ticker"]);
    assert_eq!(
        s.ok(&["inspect", "-f", "{{.State.Running}}", "ticker"])
            .trim(),
        "true"
    );
    s.ok(&["rm", "-f", "ticker"]);
    let (_, err) = s.code(1, &["inspect", "ticker"]);
    assert!(err.contains("No such object"), "{err}");
}

#[test]
fn logs_follow_ends_when_container_exits() {
    let s = Skiff::with_busybox();
    s.ok(&[
        "run",
        "-d",
        "--name",
        "short",
        "busybox",
        "sh",
        "-c",
        "echo a; sleep 1; echo b",
    ]);
    let out = s.ok(&["logs", "-f", "short"]);
    assert_eq!(out, "a\nb\n");
}

#[test]
fn exec_runs_inside_the_container() {
    let s = Skiff::with_busybox();
    s.ok(&["run", "-d", "--name", "box", "busybox", "sleep", "30"]);
    let ps = s.ok(&["exec", "box", "ps", "-o", "pid,comm"]);
    assert!(ps.lines().any(|l| l.trim() == "1 sleep"), "{ps}");
    s.code(3, &["exec", "box", "sh", "-c", "exit 3"]);
    s.code(127, &["exec", "box", "nope"]);
    assert_eq!(
        s.ok(&[
            "exec",
            "-w",
            "/tmp",
            "-e",
            "X=1",
            "box",
            "sh",
            "-c",
            "echo $X $(pwd)"
        ]),
        "1 /tmp\n"
    );
    assert_eq!(s.ok(&["exec", "-u", "app", "box", "id", "-u"]), "1000\n");
    let mut child = s
        .cmd(&["exec", "-i", "box", "cat"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"through stdin\n")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "through stdin\n");
    s.ok(&["rm", "-f", "box"]);
    s.code(125, &["exec", "box", "true"]);
}

#[test]
fn container_processes_start_with_default_signal_dispositions() {
    // Docker's containers start with no ignored signal; the shim (a Rust program) ignores
    // SIGPIPE, which must not leak into the workload: `yes | head -1` ends quietly.
    let s = Skiff::with_busybox();
    let status = s.ok(&[
        "run",
        "--rm",
        "busybox",
        "grep",
        "SigIgn",
        "/proc/self/status",
    ]);
    assert_eq!(
        status.split_whitespace().nth(1),
        Some("0000000000000000"),
        "{status}"
    );
    let out = s.run(&["run", "--rm", "busybox", "sh", "-c", "yes | head -1"]);
    assert!(out.status.success());
    assert_eq!(String::from_utf8_lossy(&out.stdout), "y\n");
    assert!(
        out.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    s.ok(&["run", "-d", "--name", "sig", "busybox", "sleep", "30"]);
    let status = s.ok(&["exec", "sig", "grep", "SigIgn", "/proc/self/status"]);
    assert_eq!(
        status.split_whitespace().nth(1),
        Some("0000000000000000"),
        "{status}"
    );
    s.ok(&["rm", "-f", "sig"]);
}

#[test]
fn run_with_stdin_and_tty() {
    let s = Skiff::with_busybox();
    let mut child = s
        .cmd(&[
            "run",
            "--rm",
            "-i",
            "busybox",
            "sh",
            "-c",
            "read line; echo got $line",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(b"hi\n").unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "got hi\n");
    // A terminal, as from a user's shell.
    let (_, text) = s.in_terminal("run --rm -it busybox tty");
    assert!(text.contains("/dev/pts/0"), "{text}");
    // exec -it gets its own terminal in the container.
    s.ok(&["run", "-d", "--name", "term", "busybox", "sleep", "30"]);
    let (_, text) = s.in_terminal("exec -it term sh -c 'tty; stty size'");
    assert!(text.contains("/dev/pts/"), "{text}");
}

#[test]
fn user_seccomp_profile_is_enforced() {
    let s = Skiff::with_busybox();
    // Docker's format: everything allowed except mkdir/mkdirat.
    let profile = s.root.path().join("profile.json");
    std::fs::write(
        &profile,
        r#"{"defaultAction":"SCMP_ACT_ALLOW","archMap":[{"architecture":"SCMP_ARCH_X86_64","subArchitectures":["SCMP_ARCH_X86"]}],
            "syscalls":[{"names":["mkdir","mkdirat"],"action":"SCMP_ACT_ERRNO"}]}"#,
    )
    .unwrap();
    let opt = format!("seccomp={}", profile.display());
    let out = s.run(&[
        "run",
        "--rm",
        "--security-opt",
        &opt,
        "busybox",
        "mkdir",
        "/tmp/x",
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not permitted"));
    s.ok(&[
        "run",
        "--rm",
        "--security-opt",
        &opt,
        "busybox",
        "touch",
        "/tmp/x",
    ]);
    std::fs::write(&profile, "{ not json").unwrap();
    let (_, err) = s.code(
        125,
        &["run", "--rm", "--security-opt", &opt, "busybox", "true"],
    );
    assert!(err.contains("decoding seccomp profile"), "{err}");
}

#[test]
fn init_reaps_zombies_and_forwards_signals() {
    let s = Skiff::with_busybox();
    // The orphaned `sleep 0.1` is re-parented to PID 1; `sleep 30` never reaps it.
    let script = "(sleep 0.1 &); exec sleep 30";
    s.ok(&[
        "run", "-d", "--name", "plain", "busybox", "sh", "-c", script,
    ]);
    s.ok(&[
        "run", "-d", "--init", "--name", "inited", "busybox", "sh", "-c", script,
    ]);
    std::thread::sleep(Duration::from_millis(600));
    let zombies = |name: &str| {
        s.ok(&["exec", name, "ps", "-o", "stat"])
            .lines()
            .filter(|l| l.trim().starts_with('Z'))
            .count()
    };
    assert_eq!(zombies("plain"), 1, "without --init the zombie stays");
    assert_eq!(zombies("inited"), 0, "--init reaps it");
    // PID 1 without a handler ignores SIGTERM: stop falls back to SIGKILL (137).
    // With --init the SIGTERM reaches sleep, which dies of it (143).
    let started = Instant::now();
    s.ok(&["stop", "-t", "5", "inited"]);
    assert!(started.elapsed() < Duration::from_secs(4));
    s.ok(&["stop", "-t", "1", "plain"]);
    assert_eq!(
        s.ok(&["inspect", "-f", "{{.State.ExitCode}}", "inited"])
            .trim(),
        "143"
    );
    assert_eq!(
        s.ok(&["inspect", "-f", "{{.State.ExitCode}}", "plain"])
            .trim(),
        "137"
    );
}

#[test]
fn oom_kill_is_reported() {
    let s = Skiff::with_busybox();
    s.code(
        137,
        &[
            "run",
            "--name",
            "hog",
            "-m",
            "8m",
            "busybox",
            "sh",
            "-c",
            "x=a; while true; do x=$x$x; done",
        ],
    );
    let state = s.ok(&[
        "inspect",
        "-f",
        "{{.State.OOMKilled}} {{.State.ExitCode}}",
        "hog",
    ]);
    assert_eq!(state.trim(), "true 137");
}

fn cgroup_value(s: &Skiff, v1: &str, v2: &str, extra: &[&str]) -> String {
    let mut args = vec!["run", "--rm"];
    args.extend_from_slice(extra);
    let script = format!("cat /sys/fs/cgroup/{v1} 2>/dev/null || cat /sys/fs/cgroup/{v2}");
    args.extend_from_slice(&["busybox", "sh", "-c"]);
    args.push(&script);
    s.ok(&args).trim().to_string()
}

#[test]
fn resource_limits_reach_the_cgroup() {
    let s = Skiff::with_busybox();
    assert_eq!(
        cgroup_value(
            &s,
            "memory/memory.limit_in_bytes",
            "memory.max",
            &["-m", "64m"]
        ),
        (64 << 20).to_string()
    );
    assert_eq!(
        cgroup_value(&s, "pids/pids.max", "pids.max", &["--pids-limit", "42"]),
        "42"
    );
    let cpu = cgroup_value(&s, "cpu/cpu.cfs_quota_us", "cpu.max", &["--cpus", "0.5"]);
    assert!(cpu.starts_with("50000"), "{cpu}");
    // The limit holds: more processes than allowed fail to fork.
    let script = "for i in 1 2 3 4 5 6 7 8; do sleep 1 & done; wait";
    let out = s.run(&[
        "run",
        "--rm",
        "--pids-limit",
        "5",
        "busybox",
        "sh",
        "-c",
        script,
    ]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("fork"),
        "{out:?}"
    );
    s.ok(&[
        "run",
        "--rm",
        "--pids-limit",
        "50",
        "busybox",
        "sh",
        "-c",
        script,
    ]);
}

#[test]
fn security_defaults_match_docker() {
    let s = Skiff::with_busybox();
    let status = s.ok(&["run", "--rm", "busybox", "cat", "/proc/self/status"]);
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .map(|l| l.split_whitespace().nth(1).unwrap().to_string())
            .unwrap()
    };
    // Docker's default capability set.
    assert_eq!(field("CapEff:"), "00000000a80425fb");
    assert_eq!(field("NoNewPrivs:"), "1");
    assert_eq!(field("Seccomp:"), "2");
    let status = s.ok(&[
        "run",
        "--rm",
        "--security-opt",
        "seccomp=unconfined",
        "busybox",
        "cat",
        "/proc/self/status",
    ]);
    assert!(status.lines().any(|l| l == "Seccomp:\t0"), "{status}");
    let status = s.ok(&[
        "run",
        "--rm",
        "--cap-drop",
        "ALL",
        "--cap-add",
        "NET_BIND_SERVICE",
        "busybox",
        "cat",
        "/proc/self/status",
    ]);
    assert!(status.contains("CapEff:\t0000000000000400"), "{status}");
    // Dropping CAP_CHOWN makes chown fail.
    s.code(
        1,
        &[
            "run",
            "--rm",
            "--cap-drop",
            "CHOWN",
            "busybox",
            "chown",
            "1000",
            "/tmp",
        ],
    );
    s.ok(&["run", "--rm", "busybox", "chown", "1000", "/tmp"]);
    // The seccomp profile refuses namespace creation without CAP_SYS_ADMIN.
    s.code(1, &["run", "--rm", "busybox", "unshare", "-n", "true"]);
    // Kernel interfaces are masked or read-only.
    assert_eq!(
        s.ok(&["run", "--rm", "busybox", "sh", "-c", "wc -c < /proc/keys"])
            .trim(),
        "0"
    );
    s.code(
        1,
        &[
            "run",
            "--rm",
            "busybox",
            "sh",
            "-c",
            "echo 1 > /proc/sys/kernel/panic",
        ],
    );
    // --privileged lifts all of it.
    let status = s.ok(&[
        "run",
        "--rm",
        "--privileged",
        "busybox",
        "cat",
        "/proc/self/status",
    ]);
    let host_bounding = std::fs::read_to_string("/proc/self/status").unwrap();
    let host_bounding = host_bounding
        .lines()
        .find(|l| l.starts_with("CapBnd:"))
        .unwrap();
    assert!(
        status.contains(&host_bounding.replace("CapBnd", "CapEff")),
        "{status}"
    );
    // Read-only rootfs.
    s.code(
        1,
        &["run", "--rm", "--read-only", "busybox", "touch", "/newfile"],
    );
    s.ok(&[
        "run",
        "--rm",
        "--read-only",
        "--tmpfs",
        "/scratch",
        "busybox",
        "touch",
        "/scratch/ok",
    ]);
    // Users by name and number.
    assert_eq!(
        s.ok(&["run", "--rm", "--user", "app", "busybox", "id"])
            .trim(),
        "uid=1000(app) gid=1000(app)"
    );
    assert_eq!(
        s.ok(&["run", "--rm", "-u", "4242:4243", "busybox", "id", "-g"])
            .trim(),
        "4243"
    );
    let (_, err) = s.code(125, &["run", "--rm", "-u", "ghost", "busybox", "true"]);
    assert!(err.contains("unable to find user ghost"), "{err}");
}

#[test]
fn no_host_descriptor_leaks_into_the_container() {
    // CVE-2024-21626 class: only stdio may be open when the process starts.
    let s = Skiff::with_busybox();
    // `; true` keeps sh from exec'ing ls, so $$ is the shell the runtime started.
    let fds = s.ok(&["run", "--rm", "busybox", "sh", "-c", "ls /proc/$$/fd; true"]);
    let fds: Vec<u32> = fds.split_whitespace().map(|f| f.parse().unwrap()).collect();
    assert_eq!(fds, vec![0, 1, 2], "unexpected descriptors");
    s.ok(&["run", "-d", "--name", "fdbox", "busybox", "sleep", "30"]);
    let fds = s.ok(&["exec", "fdbox", "sh", "-c", "ls /proc/$$/fd; true"]);
    let fds: Vec<u32> = fds.split_whitespace().map(|f| f.parse().unwrap()).collect();
    assert_eq!(fds, vec![0, 1, 2], "exec leaked descriptors");
    // The working directory is inside the container, not a host directory.
    assert_eq!(
        s.ok(&[
            "run",
            "--rm",
            "-w",
            "/tmp",
            "busybox",
            "sh",
            "-c",
            "cd ..; pwd; ls /proc/self/cwd/.. | head -1"
        ])
        .lines()
        .next(),
        Some("/")
    );
}

#[test]
fn container_cannot_overwrite_the_skiff_binary() {
    // CVE-2019-5736 class: /proc/<pid>/exe of skiff's own processes in the container.
    let s = Skiff::with_busybox();
    let before = std::fs::read(common::skiff_bin()).unwrap();
    s.ok(&[
        "run", "-d", "--init", "--name", "evil", "busybox", "sleep", "30",
    ]);
    let out = s.run(&[
        "exec",
        "evil",
        "sh",
        "-c",
        "for p in /proc/[0-9]*; do echo pwned > $p/exe && echo WROTE $p; done; true",
    ]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(!text.contains("WROTE"), "{text}");
    s.ok(&[
        "exec",
        "evil",
        "sh",
        "-c",
        "! cat /proc/1/exe > /dev/null 2>&1",
    ]);
    assert_eq!(std::fs::read(common::skiff_bin()).unwrap(), before);
}

#[test]
fn volumes_persist_and_binds_mount() {
    let s = Skiff::with_busybox();
    s.ok(&["volume", "create", "data"]);
    s.ok(&[
        "run",
        "--rm",
        "-v",
        "data:/data",
        "busybox",
        "sh",
        "-c",
        "echo kept > /data/f",
    ]);
    assert_eq!(
        s.ok(&[
            "run",
            "--rm",
            "-v",
            "data:/data:ro",
            "busybox",
            "cat",
            "/data/f"
        ]),
        "kept\n"
    );
    s.code(
        1,
        &[
            "run",
            "--rm",
            "-v",
            "data:/data:ro",
            "busybox",
            "touch",
            "/data/g",
        ],
    );
    assert!(s.ok(&["volume", "ls"]).contains("data"));
    let inspect = s.ok(&["volume", "inspect", "data"]);
    assert!(inspect.contains("\"Mountpoint\""), "{inspect}");
    // A new named volume starts with the image's content at that path.
    assert_eq!(
        s.ok(&[
            "run",
            "--rm",
            "-v",
            "www:/var/www",
            "busybox",
            "cat",
            "/var/www/index.html"
        ]),
        "hello from skiff\n"
    );
    // In use: refused.
    s.ok(&[
        "run",
        "-d",
        "--name",
        "user",
        "-v",
        "data:/data",
        "busybox",
        "sleep",
        "30",
    ]);
    let (_, err) = s.code(1, &["volume", "rm", "data"]);
    assert!(err.contains("volume is in use"), "{err}");
    s.ok(&["rm", "-f", "user"]);
    s.ok(&["volume", "rm", "data"]);
    // Bind mounts.
    let host = tempfile::tempdir().unwrap();
    std::fs::write(host.path().join("in"), "from host").unwrap();
    let spec = format!("{}:/host", host.path().display());
    assert_eq!(
        s.ok(&["run", "--rm", "-v", &spec, "busybox", "cat", "/host/in"]),
        "from host"
    );
    s.ok(&[
        "run",
        "--rm",
        "-v",
        &spec,
        "busybox",
        "sh",
        "-c",
        "echo back > /host/out",
    ]);
    assert_eq!(
        std::fs::read_to_string(host.path().join("out")).unwrap(),
        "back\n"
    );
    let (_, err) = s.code(
        125,
        &["run", "--rm", "-v", "data:relative", "busybox", "true"],
    );
    assert!(err.contains("invalid"), "{err}");
}

#[test]
fn config_flags_apply() {
    let s = Skiff::with_busybox();
    let env_file = s.root.path().join("env");
    std::fs::write(&env_file, "# comment\nFROM_FILE=yes\n").unwrap();
    let out = s.ok(&[
        "run",
        "--rm",
        "-e",
        "A=1",
        "--env-file",
        env_file.to_str().unwrap(),
        "-w",
        "/work",
        "--hostname",
        "boat",
        "busybox",
        "sh",
        "-c",
        "echo $A $FROM_FILE $(pwd) $(hostname)",
    ]);
    assert_eq!(out, "1 yes /work boat\n");
    assert_eq!(
        s.ok(&[
            "run",
            "--rm",
            "--entrypoint",
            "echo",
            "busybox",
            "via",
            "entrypoint"
        ]),
        "via entrypoint\n"
    );
    let hosts = s.ok(&[
        "run",
        "--rm",
        "--hostname",
        "boat",
        "busybox",
        "cat",
        "/etc/hosts",
    ]);
    assert!(hosts.contains("boat"), "{hosts}");
    let (_, err) = s.code(
        125,
        &["run", "--rm", "--security-opt", "bogus", "busybox", "true"],
    );
    assert!(err.contains("invalid --security-opt"), "{err}");
    let (_, err) = s.code(
        125,
        &["run", "--rm", "--cap-add", "FLYING", "busybox", "true"],
    );
    assert!(err.contains("unknown capability"), "{err}");
}

#[test]
fn concurrent_runs_get_distinct_names() {
    let s = Skiff::with_busybox();
    let handles: Vec<_> = (0..6)
        .map(|_| s.cmd(&["run", "-d", "busybox", "sleep", "5"]).output())
        .collect();
    for h in handles {
        assert!(h.unwrap().status.success());
    }
    let names = s.ok(&["ps", "--format", "{{.Names}}"]);
    let mut list: Vec<&str> = names.lines().collect();
    let n = list.len();
    list.sort();
    list.dedup();
    assert_eq!(list.len(), n);
    assert_eq!(n, 6);
}

#[test]
fn runs_on_a_pure_cgroup2_hierarchy() {
    // These hosts mount cgroup v1 hierarchies plus one cgroup2 mount. In a
    // private mount namespace whose /sys/fs/cgroup is that cgroup2 mount,
    // skiff sees a pure v2 host and must place containers in v2 cgroups.
    let unified = std::path::Path::new("/sys/fs/cgroup/unified");
    if !unified.join("cgroup.controllers").exists() {
        // A pure v2 host runs every other test on v2 already.
        assert!(std::path::Path::new("/sys/fs/cgroup/cgroup.controllers").exists());
        return;
    }
    let s = Skiff::with_busybox();
    let script = format!(
        "set -e; mount --make-rprivate /; mount --bind /sys/fs/cgroup/unified /sys/fs/cgroup; \
         id=$({bin} --root {root} run -d busybox sleep 30); \
         cat /sys/fs/cgroup/skiff/$id/cgroup.procs; \
         {bin} --root {root} exec $id cat /proc/self/cgroup; \
         {bin} --root {root} rm -f $id >/dev/null; \
         for i in $(seq 100); do test -e /sys/fs/cgroup/skiff/$id || break; sleep 0.1; done; \
         test ! -e /sys/fs/cgroup/skiff/$id && echo removed",
        bin = common::skiff_bin().display(),
        root = s.root.path().display()
    );
    let out = std::process::Command::new("unshare")
        .args(["-m", "sh", "-c", &script])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut lines = text.lines();
    let pid: u32 = lines.next().unwrap().trim().parse().unwrap();
    assert!(pid > 1);
    // Inside its cgroup namespace the container sees its v2 cgroup as the root.
    assert!(lines.clone().any(|l| l == "0::/"), "{text}");
    assert_eq!(lines.last(), Some("removed"), "{text}");
}

#[test]
fn rm_container_is_removed_even_if_the_cli_is_killed() {
    let s = Skiff::with_busybox();
    let mut cli = s
        .cmd(&["run", "--rm", "--name", "orphan", "busybox", "sleep", "1"])
        .spawn()
        .unwrap();
    assert!(wait_for(|| s.ok(&["ps", "-q"]).lines().count() == 1));
    cli.kill().unwrap(); // SIGKILL: the CLI can clean nothing up.
    let _ = cli.wait();
    // The container keeps running without the CLI, then its shim removes it.
    assert_eq!(
        s.ok(&["inspect", "-f", "{{.State.Status}}", "orphan"])
            .trim(),
        "running"
    );
    assert!(wait_for(
        || s.run(&["inspect", "orphan"]).status.code() == Some(1)
    ));
    assert_eq!(s.ok(&["ps", "-aq"]), "");
}

#[test]
fn health_checks_show_in_ps_and_inspect() {
    let s = Skiff::with_busybox();
    s.ok(&[
        "run",
        "-d",
        "--name",
        "doc",
        "--health-cmd",
        "test -f /tmp/ok",
        "--health-interval",
        "200ms",
        "--health-retries",
        "2",
        "busybox",
        "sleep",
        "60",
    ]);
    let status = |s: &Skiff| s.ok(&["ps", "--format", "{{.Status}}"]);
    assert!(status(&s).contains("(health: starting)"), "{}", status(&s));
    assert!(
        wait_for(|| status(&s).contains("(unhealthy)")),
        "{}",
        status(&s)
    );
    let streak = s.ok(&["inspect", "-f", "{{.State.Health.FailingStreak}}", "doc"]);
    assert!(streak.trim().parse::<u32>().unwrap() >= 2, "{streak}");
    s.ok(&["exec", "doc", "touch", "/tmp/ok"]);
    assert!(
        wait_for(|| status(&s).contains("(healthy)")),
        "{}",
        status(&s)
    );
    assert_eq!(
        s.ok(&["inspect", "-f", "{{.State.Health.Status}}", "doc"])
            .trim(),
        "healthy"
    );
    // --no-healthcheck turns it off; a bad duration is refused.
    s.ok(&[
        "run",
        "-d",
        "--name",
        "plain",
        "--no-healthcheck",
        "busybox",
        "sleep",
        "60",
    ]);
    assert!(!s
        .ok(&["ps", "--format", "{{.Names}} {{.Status}}"])
        .lines()
        .any(|l| l.starts_with("plain") && l.contains('(')));
    let (_, err) = s.code(
        125,
        &[
            "run",
            "--rm",
            "--health-interval",
            "soon",
            "busybox",
            "true",
        ],
    );
    assert!(err.contains("--health-interval"), "{err}");
}
