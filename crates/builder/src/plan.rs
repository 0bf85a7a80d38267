//! Which stages a build runs and in what order: the planner (the stages the target
//! needs, and what each waits for) and the scheduler (one thread per planned stage, each
//! blocking only on the stages it names, so independent stages run at the same time, as
//! BuildKit's solver does).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Condvar, Mutex};

use crate::dockerfile::{Dockerfile, Kind, MountKind};
use crate::BuildError;

/// The stage a `FROM`/`--from`/`from=` word names among the stages before `before`: by
/// `AS` name (case-insensitive) or by index, as Docker resolves them.
pub fn stage_named(dockerfile: &Dockerfile, name: &str, before: usize) -> Option<usize> {
    let lower = name.to_ascii_lowercase();
    dockerfile.stages[..before.min(dockerfile.stages.len())]
        .iter()
        .find(|s| s.name.as_deref() == Some(lower.as_str()))
        .map(|s| s.index)
        .or_else(|| name.parse::<usize>().ok().filter(|i| *i < before))
}

/// The stages a build runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// The stage whose result becomes the image.
    pub target: usize,
    /// Every stage the target needs (itself included), with the stages it waits for.
    pub needs: BTreeMap<usize, BTreeSet<usize>>,
}

impl Plan {
    /// Works out what `target` needs. `base` gives a stage's FROM word after global ARG
    /// substitution; `--from` and `from=` words are taken as written (a stage named only
    /// through a variable is not planned, and waiting for it fails with a hint).
    pub fn new(
        dockerfile: &Dockerfile,
        target: usize,
        base: &dyn Fn(usize) -> Result<String, BuildError>,
    ) -> Result<Plan, BuildError> {
        let mut needs = BTreeMap::new();
        let mut stack = vec![target];
        while let Some(i) = stack.pop() {
            if needs.contains_key(&i) {
                continue;
            }
            let mut deps = BTreeSet::new();
            if let Some(dep) = stage_named(dockerfile, &base(i)?, i) {
                deps.insert(dep);
            }
            for ins in &dockerfile.stages[i].instructions {
                let words: Vec<&str> = match &ins.kind {
                    Kind::Copy(c) => c.from.as_deref().into_iter().collect(),
                    Kind::Run(r) => r
                        .mounts
                        .iter()
                        .filter(|m| m.kind != MountKind::Secret)
                        .filter_map(|m| m.from.as_deref())
                        .collect(),
                    _ => Vec::new(),
                };
                deps.extend(words.iter().filter_map(|w| stage_named(dockerfile, w, i)));
            }
            stack.extend(deps.iter().copied());
            needs.insert(i, deps);
        }
        Ok(Plan { target, needs })
    }

    /// The planned stages in file order.
    pub fn stages(&self) -> Vec<usize> {
        self.needs.keys().copied().collect()
    }
}

/// Why waiting for a stage gave no result.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WaitError {
    /// The stage is not part of the plan, so it will never finish.
    NotPlanned,
    /// The stage failed (its own error is reported by the scheduler).
    Failed,
}

/// Runs the planned stages, one thread each, and hands finished results to the stages
/// waiting for them.
pub struct Scheduler<R> {
    planned: Vec<usize>,
    /// Finished stages: `None` for a failed one.
    results: Mutex<HashMap<usize, Option<R>>>,
    finished: Condvar,
    errors: Mutex<Vec<(usize, BuildError)>>,
}

impl<R: Clone + Send + Sync> Scheduler<R> {
    /// A scheduler for `planned` stages.
    pub fn new(planned: Vec<usize>) -> Self {
        Scheduler {
            planned,
            results: Mutex::new(HashMap::new()),
            finished: Condvar::new(),
            errors: Mutex::new(Vec::new()),
        }
    }

    /// Blocks until stage `index` finished and returns its result.
    pub fn wait(&self, index: usize) -> Result<R, WaitError> {
        if !self.planned.contains(&index) {
            return Err(WaitError::NotPlanned);
        }
        let mut results = self.results.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            if let Some(r) = results.get(&index) {
                return r.clone().ok_or(WaitError::Failed);
            }
            results = self
                .finished
                .wait(results)
                .unwrap_or_else(|e| e.into_inner());
        }
    }

    fn finish(&self, index: usize, outcome: Option<R>) {
        self.results
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(index, outcome);
        self.finished.notify_all();
    }

    /// Runs `stage` for every planned stage at once; a stage blocks in [`Self::wait`]
    /// for the ones it needs. Returns every result, or the first root-cause error (not
    /// the [`BuildError::DependencyFailed`] of stages that only waited for it).
    pub fn run(
        &self,
        stage: &(dyn Fn(usize) -> Result<R, BuildError> + Sync),
    ) -> Result<HashMap<usize, R>, BuildError> {
        std::thread::scope(|scope| {
            for &index in &self.planned {
                scope.spawn(move || {
                    // A panicking stage still counts as finished, so no waiter hangs;
                    // the scope re-raises the panic.
                    let mut unfinished = Unfinished(Some((self, index)));
                    let outcome = match stage(index) {
                        Ok(r) => Some(r),
                        Err(e) => {
                            self.errors
                                .lock()
                                .unwrap_or_else(|e| e.into_inner())
                                .push((index, e));
                            None
                        }
                    };
                    unfinished.0 = None;
                    self.finish(index, outcome);
                });
            }
        });
        let mut errors =
            std::mem::take(&mut *self.errors.lock().unwrap_or_else(|e| e.into_inner()));
        errors.sort_by_key(|(i, e)| (matches!(e, BuildError::DependencyFailed(_)), *i));
        if let Some((_, e)) = errors.into_iter().next() {
            return Err(e);
        }
        let results = std::mem::take(&mut *self.results.lock().unwrap_or_else(|e| e.into_inner()));
        Ok(results
            .into_iter()
            .filter_map(|(i, r)| r.map(|r| (i, r)))
            .collect())
    }
}

/// Marks its stage failed when dropped armed (during a panic's unwinding).
struct Unfinished<'a, R: Clone + Send + Sync>(Option<(&'a Scheduler<R>, usize)>);

impl<R: Clone + Send + Sync> Drop for Unfinished<'_, R> {
    fn drop(&mut self) {
        if let Some((scheduler, index)) = self.0.take() {
            scheduler.finish(index, None);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    fn plan(text: &str, target: usize) -> Plan {
        let d = crate::dockerfile::parse(text, "Dockerfile").unwrap();
        Plan::new(&d, target, &|i| Ok(d.stages[i].base.clone())).unwrap()
    }

    const DIAMOND: &str = "FROM busybox AS base\nRUN true\n\
        FROM base AS left\nRUN sleep 1\n\
        FROM base AS right\nRUN sleep 1\n\
        FROM busybox AS unused\nRUN false\n\
        FROM busybox\nCOPY --from=left /a /a\nRUN --mount=type=bind,from=right,target=/r true\n";

    #[test]
    fn plans_only_what_the_target_needs() {
        let p = plan(DIAMOND, 4);
        assert_eq!(p.stages(), vec![0, 1, 2, 4]);
        assert_eq!(p.needs[&1], BTreeSet::from([0]));
        assert_eq!(p.needs[&2], BTreeSet::from([0]));
        assert_eq!(p.needs[&4], BTreeSet::from([1, 2]));
        // left and right need only base: the scheduler runs them at the same time.
        assert!(!p.needs[&1].contains(&2) && !p.needs[&2].contains(&1));
        assert_eq!(plan(DIAMOND, 1).stages(), vec![0, 1]);
        assert_eq!(plan(DIAMOND, 3).stages(), vec![3]);
    }

    #[test]
    fn stages_are_named_by_name_or_index_and_only_backwards() {
        let text = "FROM busybox AS First\nFROM busybox\nCOPY --from=0 /a /a\nCOPY --from=FIRST /b /b\nCOPY --from=later /c /c\nCOPY --from=alpine /d /d\nFROM busybox AS later\n";
        let d = crate::dockerfile::parse(text, "Dockerfile").unwrap();
        assert_eq!(stage_named(&d, "first", 1), Some(0));
        assert_eq!(stage_named(&d, "0", 1), Some(0));
        assert_eq!(stage_named(&d, "later", 1), None);
        assert_eq!(stage_named(&d, "1", 1), None);
        assert_eq!(stage_named(&d, "alpine", 2), None);
        assert_eq!(plan(text, 1).needs[&1], BTreeSet::from([0]));
    }

    #[test]
    fn independent_stages_overlap_and_dependents_wait() {
        // left and right sleep; the final stage waits for both.
        let p = plan(DIAMOND, 4);
        let sched: Scheduler<(Instant, Instant)> = Scheduler::new(p.stages());
        let t0 = Instant::now();
        let results = sched
            .run(&|i| {
                for d in &p.needs[&i] {
                    sched
                        .wait(*d)
                        .map_err(|_| BuildError::DependencyFailed(d.to_string()))?;
                }
                let start = Instant::now();
                if i == 1 || i == 2 {
                    std::thread::sleep(Duration::from_millis(300));
                }
                Ok((start, Instant::now()))
            })
            .unwrap();
        let (l, r, last) = (results[&1], results[&2], results[&4]);
        assert!(l.0 < r.1 && r.0 < l.1, "left and right overlap");
        assert!(last.0 >= l.1 && last.0 >= r.1, "the final stage waited");
        assert!(
            t0.elapsed() < Duration::from_millis(550),
            "{:?}",
            t0.elapsed()
        );
        assert_eq!(sched.wait(3), Err(WaitError::NotPlanned));
    }

    #[test]
    fn the_root_cause_is_reported_and_dependents_do_not_hang() {
        let p = plan(DIAMOND, 4);
        let sched: Scheduler<()> = Scheduler::new(p.stages());
        let err = sched
            .run(&|i| {
                for d in &p.needs[&i] {
                    sched
                        .wait(*d)
                        .map_err(|_| BuildError::DependencyFailed(format!("stage-{d}")))?;
                }
                if i == 2 {
                    return Err(BuildError::NoTarget("root cause".into()));
                }
                Ok(())
            })
            .unwrap_err();
        assert!(err.to_string().contains("root cause"), "{err}");
        assert_eq!(sched.wait(4), Err(WaitError::Failed));
        assert_eq!(sched.wait(1), Ok(()));
    }
}
