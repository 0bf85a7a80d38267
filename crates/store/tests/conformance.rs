//! The conformance suite against every backend: embedded, embedded behind the encryption
//! wrapper, and a real etcd started per test.

use crate::support;

use std::sync::Arc;

use skiff_store::{EmbeddedStore, EncryptingStore, KeyRing, Store};
use support::etcd::EtcdServer;
use support::suite;

macro_rules! conformance {
    ($($case:ident),* $(,)?) => {
        mod embedded {
            use super::*;
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    let dir = tempfile::tempdir().unwrap();
                    let store: Arc<dyn Store> = Arc::new(EmbeddedStore::open(dir.path()).unwrap());
                    suite::$case(store).await;
                }
            )*
        }

        mod encrypted_embedded {
            use super::*;
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    let dir = tempfile::tempdir().unwrap();
                    let keys = KeyRing::load_or_create(dir.path().join("keys")).unwrap();
                    let inner = EmbeddedStore::open(dir.path()).unwrap();
                    let store: Arc<dyn Store> =
                        Arc::new(EncryptingStore::new(inner, keys, ["/".to_string()]));
                    suite::$case(store).await;
                }
            )*
        }

        mod etcd {
            use super::*;
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    let server = EtcdServer::start();
                    let store: Arc<dyn Store> = Arc::new(server.store().await);
                    suite::$case(store).await;
                }
            )*
        }
    };
}

conformance!(
    create_and_get,
    update_compare_and_swap,
    concurrent_updates_conflict,
    delete,
    range_pages,
    range_at_past_revision,
    watch_delivers_ordered_events,
    watch_resumes_from_revision,
    compaction,
    concurrent_writers,
);
