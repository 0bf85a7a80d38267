//! Crash safety of the embedded store: a child process writes as fast as it can and prints
//! every acknowledged write; it is killed with SIGKILL at a random moment, and every write it
//! acknowledged must be found after reopening the store.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rand::Rng;
use skiff_store::{EmbeddedStore, Store, StoreError};

const CHILD_DIR: &str = "SKIFF_STORE_DURABILITY_DIR";
const CHILD_ROUND: &str = "SKIFF_STORE_DURABILITY_ROUND";
const WRITERS: usize = 16;
const ROUNDS: usize = 6;

/// What one child acknowledged.
#[derive(Default)]
struct Acknowledged {
    /// Created key -> its revision.
    creates: HashMap<String, i64>,
    /// Counter key -> (revision, value) of its last acknowledged update.
    updates: HashMap<String, (i64, u64)>,
}

#[test]
fn kill9_keeps_every_acknowledged_write() {
    if let Some(dir) = std::env::var_os(CHILD_DIR) {
        let round: usize = std::env::var(CHILD_ROUND).unwrap().parse().unwrap();
        child(dir.into(), round);
        unreachable!("the child writes until it is killed");
    }
    let dir = tempfile::tempdir().unwrap();
    let mut rng = rand::thread_rng();
    for round in 0..ROUNDS {
        // This test's name inside the test binary: its module path without the crate.
        let module = module_path!().split_once("::").map_or("", |(_, m)| m);
        let name = format!("{module}::kill9_keeps_every_acknowledged_write");
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args(["--exact", &name, "--nocapture"])
            .args(["--test-threads", "1"])
            .env(CHILD_DIR, dir.path())
            .env(CHILD_ROUND, round.to_string())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let lines = Arc::new(Mutex::new(Vec::<String>::new()));
        let reader = {
            let stdout = child.stdout.take().unwrap();
            let lines = lines.clone();
            std::thread::spawn(move || {
                let mut stdout = BufReader::new(stdout);
                let mut line = Vec::new();
                // A line cut short by the kill has no newline and is ignored.
                while stdout.read_until(b'\n', &mut line).unwrap_or(0) > 0 {
                    if line.ends_with(b"\n") {
                        let text = String::from_utf8_lossy(&line).trim_end().to_owned();
                        lines.lock().unwrap().push(text);
                    }
                    line.clear();
                }
            })
        };
        // Kill at a random moment once writes are flowing (the child may also still be
        // recovering the previous round's crash, which must be safe too).
        let deadline = Instant::now() + Duration::from_secs(60);
        while !lines.lock().unwrap().iter().any(|l| l.starts_with("ack ")) {
            assert!(Instant::now() < deadline, "child made no progress");
            assert!(child.try_wait().unwrap().is_none(), "child exited early");
            std::thread::sleep(Duration::from_millis(5));
        }
        std::thread::sleep(Duration::from_millis(rng.gen_range(0..400)));
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        reader.join().unwrap();

        let acked = parse(&lines.lock().unwrap());
        assert!(
            !acked.creates.is_empty(),
            "round {round}: nothing acknowledged"
        );
        verify(&dir.path().to_path_buf(), &acked, round);
    }
}

fn parse(lines: &[String]) -> Acknowledged {
    let mut acked = Acknowledged::default();
    for line in lines {
        let fields: Vec<&str> = line.split(' ').collect();
        match fields.as_slice() {
            ["ack", "create", key, rev] => {
                acked.creates.insert(key.to_string(), rev.parse().unwrap());
            }
            ["ack", "update", key, rev, value] => {
                let entry = (rev.parse().unwrap(), value.parse().unwrap());
                let last = acked.updates.entry(key.to_string()).or_insert(entry);
                if entry.0 > last.0 {
                    *last = entry;
                }
            }
            _ => {}
        }
    }
    acked
}

fn verify(dir: &std::path::PathBuf, acked: &Acknowledged, round: usize) {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let store = EmbeddedStore::open(dir).unwrap();
        let current = store.current_revision().await.unwrap();
        for (key, rev) in &acked.creates {
            let kv = store.get(key).await.unwrap();
            let kv = kv.unwrap_or_else(|| panic!("round {round}: acknowledged {key} lost"));
            assert_eq!(kv.create_revision, *rev, "round {round}: {key}");
            assert_eq!(kv.value, key.as_bytes(), "round {round}: {key}");
            assert!(current >= *rev);
        }
        for (key, (rev, value)) in &acked.updates {
            let kv = store.get(key).await.unwrap().expect("counter exists");
            let stored: u64 = String::from_utf8(kv.value).unwrap().parse().unwrap();
            // Later writes may have committed without being acknowledged, never fewer.
            assert!(
                kv.mod_revision >= *rev,
                "round {round}: update of {key} lost"
            );
            assert!(
                stored >= *value,
                "round {round}: {key} went back to {stored}"
            );
            if kv.mod_revision == *rev {
                assert_eq!(stored, *value);
            }
        }
        // The history is intact too: every acknowledged create is readable at its revision.
        let (key, rev) = acked.creates.iter().next().unwrap();
        let then = store.range(key, Some(*rev), None, None).await.unwrap();
        assert_eq!(then.kvs.len(), 1);
        println!(
            "round {round}: {} creates and {} counters verified at revision {current}",
            acked.creates.len(),
            acked.updates.len()
        );
    });
}

/// The child: concurrent creates and compare-and-swap updates, printing each acknowledgement.
fn child(dir: std::path::PathBuf, round: usize) {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async move {
        let store = EmbeddedStore::open(&dir).unwrap();
        let mut tasks = Vec::new();
        for writer in 0..WRITERS {
            let store = store.clone();
            tasks.push(tokio::spawn(async move {
                let counter = format!("/counters/{writer}");
                let mut counter_rev = match store.get(&counter).await.unwrap() {
                    Some(kv) => kv.mod_revision,
                    None => store.create(&counter, b"0".to_vec()).await.unwrap(),
                };
                let mut value: u64 = match store.get(&counter).await.unwrap() {
                    Some(kv) => String::from_utf8(kv.value).unwrap().parse().unwrap(),
                    None => 0,
                };
                for i in 0.. {
                    let key = format!("/durability/{round}/{writer}/{i}");
                    let rev = store.create(&key, key.clone().into_bytes()).await.unwrap();
                    say(&format!("ack create {key} {rev}"));
                    value += 1;
                    match store
                        .update(&counter, value.to_string().into_bytes(), counter_rev)
                        .await
                    {
                        Ok(rev) => {
                            counter_rev = rev;
                            say(&format!("ack update {counter} {rev} {value}"));
                        }
                        Err(err @ StoreError::Conflict { .. }) => panic!("{err}"),
                        Err(err) => panic!("{err}"),
                    }
                }
            }));
        }
        for task in tasks {
            task.await.unwrap();
        }
    });
}

fn say(line: &str) {
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "{line}").unwrap();
    stdout.flush().unwrap();
}
