//! The conformance suite against the embedded SQLite backend.

mod common;

use std::sync::Arc;

use lq6_store::sqlite::SqliteStore;
use lq6_store::LeaseStore;

async fn mk(_name: &str) -> Option<(Arc<dyn LeaseStore>, tempfile::TempDir)> {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = SqliteStore::open(dir.path().join("leases.db")).expect("open");
    Some((Arc::new(store), dir))
}

conformance!(mk; commit_and_lookup, merge_and_replace, conflicts, concurrent_conflicts, bulk_queries,
    changes_and_expiry, ranges, batch, concurrent_writers);

#[tokio::test]
async fn reopen_keeps_data_and_seq() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("sub/dir/leases.db");
    let seq = {
        let s = SqliteStore::open(&p).unwrap();
        s.commit(common::upd(
            1,
            "lan",
            1000,
            vec![common::na("2001:db8::1", 1, 9000)],
            None,
        ))
        .await
        .unwrap()
        .seq
    };
    let s = SqliteStore::open(&p).unwrap();
    assert!(s
        .by_address(common::a("2001:db8::1"))
        .await
        .unwrap()
        .is_some());
    let ci = s
        .commit(common::upd(2, "lan", 1000, vec![], None))
        .await
        .unwrap();
    assert!(ci.seq > seq);
}
