//! The wait between two sweeps of a controller that reconciles everything at once
//! (pod GC, node lifecycle): until the next sweep is due, or shortly after a cache change.

use std::time::Duration;

use futures::{Stream, StreamExt as _};
use tokio::time::Instant;

/// Drains `changes` until `ready` (the caches' first lists) completes; false when `changes`
/// ended first. The changes drive the caches, so they must be polled meanwhile.
pub async fn until_ready<S>(ready: impl std::future::Future, changes: &mut S) -> bool
where
    S: Stream<Item = ()> + Unpin,
{
    tokio::pin!(ready);
    loop {
        tokio::select! {
            _ = &mut ready => return true,
            change = changes.next() => if change.is_none() { return false },
        }
    }
}

/// Waits `due` or, after a change arrives on `changes`, at most `debounce` more (changes
/// come in bursts, one sweep follows them all). False once `changes` has ended.
pub async fn wait_for_next<S>(due: Duration, debounce: Duration, changes: &mut S) -> bool
where
    S: Stream<Item = ()> + Unpin,
{
    let mut wake = Instant::now() + due;
    loop {
        tokio::select! {
            _ = tokio::time::sleep_until(wake) => return true,
            change = changes.next() => match change {
                None => return false,
                Some(()) => wake = wake.min(Instant::now() + debounce),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_change_brings_the_sweep_forward_and_an_end_stops() {
        let (tx, mut rx) = futures::channel::mpsc::unbounded::<()>();
        tx.unbounded_send(()).unwrap();
        let hour = Duration::from_secs(3600);
        // Due in an hour, but a change came: the next sweep follows it after the debounce.
        let woke = tokio::time::timeout(
            Duration::from_secs(30),
            wait_for_next(hour, Duration::from_millis(10), &mut rx),
        )
        .await;
        assert_eq!(woke, Ok(true));
        // No change: the due time decides.
        assert!(wait_for_next(Duration::from_millis(10), hour, &mut rx).await);
        drop(tx);
        assert!(!wait_for_next(hour, hour, &mut rx).await);
    }
}
