//! The back-off between restarts of a failed container (`CrashLoopBackOff`), kept as
//! the kubelet keeps it: per container of a pod, in memory. The first exit restarts at
//! once and starts a 10 s back-off; each exit inside a back-off waits it out, and each
//! restart after one doubles it, up to 5 minutes. A container that ran without exiting
//! for twice that long since the last restart starts over (client-go's
//! `flowcontrol.Backoff`, as `kuberuntime`'s `doBackOff` uses it).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use chrono::{DateTime, Utc};

/// The first back-off; it doubles per restart up to [`MAX_BACKOFF`].
pub const INITIAL_BACKOFF: Duration = Duration::from_secs(10);
/// The longest back-off.
pub const MAX_BACKOFF: Duration = Duration::from_secs(300);

/// One container's back-off.
#[derive(Debug, Clone, Copy)]
struct Entry {
    delay: Duration,
    /// The exit that last set `delay`.
    since: DateTime<Utc>,
}

/// The restart back-offs of a node's containers, by (pod UID, container name).
#[derive(Debug, Default)]
pub struct RestartBackOff {
    entries: Mutex<HashMap<(String, String), Entry>>,
}

impl RestartBackOff {
    /// Decides about restarting container `name` of pod `uid`, whose last instance
    /// exited at `finished`: `Some(delay)` while that exit is inside its back-off
    /// (`delay` is what `kubectl describe` shows), `None` to restart now, which starts
    /// the next back-off.
    pub fn check(
        &self,
        uid: &str,
        name: &str,
        finished: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Option<Duration> {
        let mut entries = self.entries.lock().unwrap();
        let key = (uid.to_string(), name.to_string());
        let current = entries.get(&key).copied().filter(|e| !expired(e, finished));
        if let Some(e) = current {
            if now.signed_duration_since(finished) < chrono_of(e.delay) {
                return Some(e.delay);
            }
        }
        let delay = current.map_or(INITIAL_BACKOFF, |e| (e.delay * 2).min(MAX_BACKOFF));
        entries.insert(
            key,
            Entry {
                delay,
                since: finished,
            },
        );
        None
    }

    /// Forgets the back-offs of pod `uid`'s containers.
    pub fn forget_pod(&self, uid: &str) {
        self.entries.lock().unwrap().retain(|(u, _), _| u != uid);
    }
}

/// Whether `entry` is too old to count for an exit at `finished`: the container ran
/// for longer than twice the longest back-off since it was set.
fn expired(entry: &Entry, finished: DateTime<Utc>) -> bool {
    finished.signed_duration_since(entry.since) > chrono_of(MAX_BACKOFF * 2)
}

fn chrono_of(d: Duration) -> chrono::Duration {
    chrono::Duration::from_std(d).unwrap_or(chrono::Duration::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_700_000_000 + secs, 0).unwrap()
    }

    #[test]
    fn the_first_exit_restarts_at_once_then_the_back_off_doubles_to_five_minutes() {
        let b = RestartBackOff::default();
        // First exit at t=0: restarted now.
        assert_eq!(b.check("u", "c", at(0), at(0)), None);
        // Second exit at t=2: 10 s from that exit.
        assert_eq!(b.check("u", "c", at(2), at(3)), Some(INITIAL_BACKOFF));
        assert_eq!(b.check("u", "c", at(2), at(11)), Some(INITIAL_BACKOFF));
        assert_eq!(b.check("u", "c", at(2), at(12)), None);
        // Then 20 s, 40 s, ... 300 s at most.
        assert_eq!(
            b.check("u", "c", at(13), at(14)),
            Some(Duration::from_secs(20))
        );
        let mut t = 13;
        let mut delays = Vec::new();
        for _ in 0..6 {
            let delay = b.check("u", "c", at(t), at(t)).unwrap();
            delays.push(delay.as_secs());
            t += delay.as_secs() as i64;
            assert_eq!(
                b.check("u", "c", at(t - delay.as_secs() as i64), at(t)),
                None
            );
            t += 1;
        }
        assert_eq!(delays, [20, 40, 80, 160, 300, 300]);
        // Other containers and pods have their own.
        assert_eq!(b.check("u", "other", at(t), at(t)), None);
        assert_eq!(b.check("v", "c", at(t), at(t)), None);
    }

    #[test]
    fn a_container_that_ran_ten_minutes_starts_over() {
        let b = RestartBackOff::default();
        assert_eq!(b.check("u", "c", at(0), at(0)), None);
        assert_eq!(b.check("u", "c", at(5), at(20)), None);
        // The last back-off (20 s) was set at t=5; an exit more than 10 min later
        // restarts at once, and the next back-off is 10 s again.
        assert_eq!(b.check("u", "c", at(700), at(700)), None);
        assert_eq!(b.check("u", "c", at(701), at(702)), Some(INITIAL_BACKOFF));
        // A forgotten pod starts over too.
        b.forget_pod("u");
        assert_eq!(b.check("u", "c", at(702), at(703)), None);
    }
}
