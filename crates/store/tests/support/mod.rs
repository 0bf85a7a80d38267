//! Shared by the integration tests: a throwaway etcd server and the conformance suite.
#![allow(dead_code)]

pub mod etcd;
pub mod suite;

use std::time::Duration;

use futures::StreamExt;
use skiff_store::{Result, WatchEvent, WatchStream};

/// The next watch item, failing the test if none arrives within 10 s.
pub async fn next(stream: &mut WatchStream) -> Result<WatchEvent> {
    tokio::time::timeout(Duration::from_secs(10), stream.next())
        .await
        .expect("no watch event within 10s")
        .expect("watch stream ended")
}

/// Asserts that no watch item arrives within `wait`.
pub async fn assert_quiet(stream: &mut WatchStream, wait: Duration) {
    if let Ok(item) = tokio::time::timeout(wait, stream.next()).await {
        panic!("unexpected watch item: {item:?}");
    }
}
