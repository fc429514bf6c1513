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
    changes_and_expiry, ranges, batch, concurrent_writers, page_visit);

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

/// On a current-thread runtime SQLite's `page_visit` falls back to the owned page (no
/// `block_in_place` there); the results must be the same.
#[tokio::test(flavor = "current_thread")]
async fn page_visit_current_thread() {
    let (store, _dir) = mk("page_visit_current_thread").await.unwrap();
    common::page_visit(store).await;
}

/// A view built from an owned binding turns back into the same binding.
#[test]
fn binding_view_roundtrip() {
    use lq6_store::{Binding, ClientRecord, LeaseState};
    let mut rel = common::na("2001:db8::2", 1, 5);
    rel.state = LeaseState::Released;
    let b = Binding {
        client: ClientRecord {
            duid: common::duid(7),
            link: "lan".into(),
            link_address: common::a("2001:db8::1"),
            cltt: 10,
            relay: Some(common::relay(b"R", Some((9, b"x")))),
            changed_seq: 3,
            changed_at: 11,
        },
        leases: vec![common::na("2001:db8::1", 1, 9000), rel],
    };
    let v = b.view();
    assert_eq!(v.to_owned(), b);
    assert_eq!(v.leases().count(), 2);
    assert!(v.is_active());
    let act = v.clone().active_only();
    assert_eq!(act.to_owned(), b.clone().active_only());
    assert_eq!(
        v.relay.as_ref().unwrap().relay_ids().collect::<Vec<_>>(),
        vec![b"R".as_slice()]
    );
}
