//! Durable single-key puts: redb against SQLite, 1 and 64 concurrent writers.
//!
//! Run with `cargo bench -p skiff-store --bench backends` (set `SKIFF_BENCH_SECONDS` to change
//! the 3 s per scenario). Every scenario fsyncs before acknowledging a put. The raw engines
//! run under the same group-commit loop as the embedded store (one writer thread, one
//! transaction per batch of queued puts); "no group commit" shows what 64 writers get when each
//! commits its own transaction. The embedded store and etcd rows are end to end through the
//! `Store` trait (MVCC history, revision counter), for the API server's point of view.

#[allow(dead_code)]
#[path = "../tests/support/etcd.rs"]
mod etcd;

use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use redb::{Database, TableDefinition};
use skiff_store::{EmbeddedStore, Store};

const VALUE_LEN: usize = 1024;
const TABLE: TableDefinition<&str, &[u8]> = TableDefinition::new("kv");

/// A storage engine that can commit a batch of puts durably in one transaction.
trait Engine: Send + 'static {
    fn commit(&mut self, batch: &[(String, Vec<u8>)]);
}

struct Redb {
    db: Database,
    quick_repair: bool,
}

impl Engine for Redb {
    fn commit(&mut self, batch: &[(String, Vec<u8>)]) {
        let mut txn = self.db.begin_write().unwrap();
        txn.set_quick_repair(self.quick_repair);
        {
            let mut table = txn.open_table(TABLE).unwrap();
            for (key, value) in batch {
                table.insert(key.as_str(), value.as_slice()).unwrap();
            }
        }
        txn.commit().unwrap();
    }
}

struct Sqlite {
    conn: rusqlite::Connection,
}

impl Engine for Sqlite {
    fn commit(&mut self, batch: &[(String, Vec<u8>)]) {
        let txn = self.conn.transaction().unwrap();
        {
            let mut insert = txn
                .prepare_cached("INSERT OR REPLACE INTO kv (k, v) VALUES (?1, ?2)")
                .unwrap();
            for (key, value) in batch {
                insert.execute((key, value)).unwrap();
            }
        }
        txn.commit().unwrap();
    }
}

fn sqlite(dir: &std::path::Path) -> Sqlite {
    let conn = rusqlite::Connection::open(dir.join("bench.sqlite")).unwrap();
    // As the embedded store: WAL with synchronous=FULL, one fsync of the WAL per commit.
    conn.pragma_update(None, "journal_mode", "WAL").unwrap();
    conn.pragma_update(None, "synchronous", "FULL").unwrap();
    conn.execute_batch("CREATE TABLE kv (k TEXT PRIMARY KEY, v BLOB NOT NULL)")
        .unwrap();
    Sqlite { conn }
}

fn redb(dir: &std::path::Path, quick_repair: bool) -> Redb {
    let db = Database::create(dir.join("bench.redb")).unwrap();
    Redb { db, quick_repair }
}

struct Outcome {
    puts: usize,
    elapsed: Duration,
    latencies: Vec<Duration>,
    commits: usize,
}

impl Outcome {
    fn rate(&self) -> f64 {
        self.puts as f64 / self.elapsed.as_secs_f64()
    }

    fn print(&self, name: &str, writers: usize) {
        let mut latencies = self.latencies.clone();
        latencies.sort_unstable();
        let at = |q: f64| latencies[((latencies.len() as f64 - 1.0) * q) as usize];
        let commits = if self.commits > 0 {
            format!("{:>10.1}", self.puts as f64 / self.commits as f64)
        } else {
            "         -".into()
        };
        println!(
            "| {name:<34} | {writers:>7} | {:>9.0} | {:>8.2} | {:>8.2} | {commits} |",
            self.rate(),
            at(0.5).as_secs_f64() * 1e3,
            at(0.99).as_secs_f64() * 1e3,
        );
    }
}

type Put = (String, Vec<u8>, mpsc::Sender<()>);

/// `writers` threads put unique keys through one group-commit writer thread for `duration`.
fn group_commit(mut engine: impl Engine, writers: usize, duration: Duration) -> Outcome {
    let (queue, requests) = mpsc::channel::<Put>();
    let commits = std::thread::spawn(move || {
        let mut commits = 0;
        while let Ok(first) = requests.recv() {
            let mut batch = vec![first];
            while let Ok(more) = requests.try_recv() {
                batch.push(more);
            }
            let puts: Vec<(String, Vec<u8>)> = batch
                .iter()
                .map(|(k, v, _)| (k.clone(), v.clone()))
                .collect();
            engine.commit(&puts);
            commits += 1;
            for (_, _, done) in batch {
                let _ = done.send(());
            }
        }
        commits
    });
    let outcome = clients(writers, duration, move |key, value| {
        let (done, wait) = mpsc::channel();
        queue.send((key, value, done)).unwrap();
        wait.recv().unwrap();
    });
    Outcome {
        commits: commits.join().unwrap(),
        ..outcome
    }
}

/// `writers` threads each commit their own transaction per put.
fn transaction_per_put(engine: impl Engine, writers: usize, duration: Duration) -> Outcome {
    let engine = Arc::new(Mutex::new(engine));
    let mut outcome = clients(writers, duration, move |key, value| {
        engine.lock().unwrap().commit(&[(key, value)]);
    });
    outcome.commits = outcome.puts;
    outcome
}

/// Runs `put` from `writers` threads until `duration` is over.
fn clients(
    writers: usize,
    duration: Duration,
    put: impl Fn(String, Vec<u8>) + Send + Sync + Clone + 'static,
) -> Outcome {
    let start = Instant::now();
    let threads: Vec<_> = (0..writers)
        .map(|writer| {
            let put = put.clone();
            std::thread::spawn(move || {
                let mut latencies = Vec::new();
                let mut i = 0;
                while start.elapsed() < duration {
                    let began = Instant::now();
                    put(format!("/bench/{writer}/{i}"), vec![b'x'; VALUE_LEN]);
                    latencies.push(began.elapsed());
                    i += 1;
                }
                latencies
            })
        })
        .collect();
    drop(put);
    let latencies: Vec<Duration> = threads
        .into_iter()
        .flat_map(|t| t.join().unwrap())
        .collect();
    Outcome {
        puts: latencies.len(),
        elapsed: start.elapsed(),
        latencies,
        commits: 0,
    }
}

/// `writers` tokio tasks create unique keys through the `Store` trait.
async fn through_store(store: Arc<dyn Store>, writers: usize, duration: Duration) -> Outcome {
    let start = Instant::now();
    let tasks: Vec<_> = (0..writers)
        .map(|writer| {
            let store = store.clone();
            tokio::spawn(async move {
                let mut latencies = Vec::new();
                let mut i = 0;
                while start.elapsed() < duration {
                    let began = Instant::now();
                    let key = format!("/registry/bench/{writer}/{i}");
                    store.create(&key, vec![b'x'; VALUE_LEN]).await.unwrap();
                    latencies.push(began.elapsed());
                    i += 1;
                }
                latencies
            })
        })
        .collect();
    let mut latencies = Vec::new();
    for task in tasks {
        latencies.extend(task.await.unwrap());
    }
    Outcome {
        puts: latencies.len(),
        elapsed: start.elapsed(),
        latencies,
        commits: 0,
    }
}

/// Runs a scenario once.
type Run = Box<dyn Fn(&tokio::runtime::Runtime, Duration) -> Outcome>;

/// One row of the table: a name, a writer count and how to run it once.
struct Scenario {
    name: &'static str,
    writers: usize,
    run: Run,
}

fn scenario(
    name: &'static str,
    writers: usize,
    run: impl Fn(&tokio::runtime::Runtime, Duration) -> Outcome + 'static,
) -> Scenario {
    Scenario {
        name,
        writers,
        run: Box::new(run),
    }
}

fn main() {
    let seconds: f64 = std::env::var("SKIFF_BENCH_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(2.0);
    let rounds: usize = std::env::var("SKIFF_BENCH_ROUNDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3);
    let duration = Duration::from_secs_f64(seconds);
    let with_etcd =
        std::path::Path::new("/usr/bin/etcd").exists() || std::env::var_os("ETCD_BIN").is_some();

    let mut scenarios = Vec::new();
    for writers in [1, 64] {
        scenarios.push(scenario("redb, group commit", writers, move |_, d| {
            let dir = tempfile::tempdir().unwrap();
            group_commit(redb(dir.path(), false), writers, d)
        }));
        scenarios.push(scenario(
            "redb + quick-repair, group commit",
            writers,
            move |_, d| {
                let dir = tempfile::tempdir().unwrap();
                group_commit(redb(dir.path(), true), writers, d)
            },
        ));
        scenarios.push(scenario(
            "SQLite WAL, group commit",
            writers,
            move |_, d| {
                let dir = tempfile::tempdir().unwrap();
                group_commit(sqlite(dir.path()), writers, d)
            },
        ));
    }
    scenarios.push(scenario("redb, transaction per put", 64, |_, d| {
        let dir = tempfile::tempdir().unwrap();
        transaction_per_put(redb(dir.path(), false), 64, d)
    }));
    scenarios.push(scenario("SQLite WAL, transaction per put", 64, |_, d| {
        let dir = tempfile::tempdir().unwrap();
        transaction_per_put(sqlite(dir.path()), 64, d)
    }));
    for writers in [1, 64] {
        scenarios.push(scenario("EmbeddedStore::create", writers, move |rt, d| {
            let dir = tempfile::tempdir().unwrap();
            let store = Arc::new(EmbeddedStore::open(dir.path()).unwrap());
            rt.block_on(through_store(store, writers, d))
        }));
        if with_etcd {
            scenarios.push(scenario(
                "EtcdStore::create (etcd 3.4)",
                writers,
                move |rt, d| {
                    rt.block_on(async {
                        let server = etcd::EtcdServer::start();
                        let store = Arc::new(server.store().await);
                        through_store(store, writers, d).await
                    })
                },
            ));
        }
    }

    // Rounds interleave the scenarios so background load spreads over all of them; each
    // row reports the round with the median throughput.
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let mut results: Vec<Vec<Outcome>> = scenarios.iter().map(|_| Vec::new()).collect();
    for round in 0..rounds {
        eprintln!("round {} of {rounds}", round + 1);
        for (scenario, results) in scenarios.iter().zip(&mut results) {
            results.push((scenario.run)(&runtime, duration));
        }
    }
    println!(
        "durable puts of {VALUE_LEN}-byte values, {seconds} s per run, median of {rounds} rounds"
    );
    println!("| scenario                           | writers |    puts/s |   p50 ms |   p99 ms | puts/fsync |");
    println!("|------------------------------------|--------:|----------:|---------:|---------:|-----------:|");
    for (scenario, mut results) in scenarios.into_iter().zip(results) {
        results.sort_by(|a, b| a.rate().total_cmp(&b.rate()));
        results[results.len() / 2].print(scenario.name, scenario.writers);
    }
}
