//! Files that are not ours, damaged, or newer: a clear error naming the file, and not one byte changed.

use std::path::Path;

use lq6_store::sqlite::SqliteStore;
use lq6_store::{LeaseStore, StoreError};

/// (name, length, hash) of every non-empty file except SQLite's shared-memory index (`-shm`, which holds
/// no data and is rebuilt by any reader).
fn snapshot(dir: &Path) -> Vec<(String, usize, u64)> {
    use std::hash::{Hash, Hasher};
    let mut v: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file())
        .map(|p| {
            let b = std::fs::read(&p).unwrap();
            let mut h = std::collections::hash_map::DefaultHasher::new();
            b.hash(&mut h);
            (
                p.file_name().unwrap().to_string_lossy().into_owned(),
                b.len(),
                h.finish(),
            )
        })
        .filter(|(n, len, _)| *len > 0 && !n.ends_with("-shm"))
        .collect();
    v.sort();
    v
}

/// Open must fail naming the file, and the directory's files must be byte-identical afterwards
/// (the store file itself; SQLite may leave no side files for a rejected file either).
fn assert_rejected(path: &Path, check: impl Fn(&StoreError) -> bool) -> StoreError {
    let dir = path.parent().unwrap();
    let before = std::fs::read(path).unwrap();
    let snap = snapshot(dir);
    let err = SqliteStore::open(path).expect_err("must not open");
    let msg = err.to_string();
    assert!(
        msg.contains(&path.display().to_string()),
        "error names the file: {msg}"
    );
    assert!(check(&err), "unexpected error kind: {err:?}");
    assert!(
        std::fs::read(path).unwrap() == before,
        "file bytes unchanged"
    );
    assert_eq!(snapshot(dir), snap, "no file in the directory changed");
    err
}

#[test]
fn foreign_sqlite_database() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("foreign.db");
    {
        let c = rusqlite::Connection::open(&p).unwrap();
        c.execute_batch("CREATE TABLE t(x); INSERT INTO t VALUES (1);")
            .unwrap();
    }
    assert_rejected(&p, |e| matches!(e, StoreError::NotOurs { .. }));
}

#[test]
fn foreign_sqlite_database_with_our_table_names() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("lookalike.db");
    {
        let c = rusqlite::Connection::open(&p).unwrap();
        c.execute_batch("CREATE TABLE client(id); PRAGMA user_version=1;")
            .unwrap();
    }
    assert_rejected(&p, |e| matches!(e, StoreError::NotOurs { .. }));
}

#[test]
fn random_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("random.db");
    let mut x: u64 = 0x9e3779b97f4a7c15;
    let bytes: Vec<u8> = (0..65536)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    std::fs::write(&p, bytes).unwrap();
    assert_rejected(&p, |e| matches!(e, StoreError::NotOurs { .. }));
    std::fs::write(&p, b"hello, not a database\n").unwrap();
    assert_rejected(&p, |e| matches!(e, StoreError::NotOurs { .. }));
    std::fs::write(&p, b"").unwrap();
    assert_rejected(&p, |e| matches!(e, StoreError::NotOurs { .. }));
}

async fn make_store(p: &Path, n: u32) {
    let s = SqliteStore::open(p).unwrap();
    let mut v = Vec::new();
    for i in 0..n {
        let mut u = lq6_store::ClientUpdate::new(i.to_be_bytes().to_vec(), "lan", 1);
        u.leases.push(lq6_store::Lease {
            kind: lq6_store::LeaseKind::Na,
            iaid: 1,
            addr: std::net::Ipv6Addr::from(0x2001_0db8u128 << 96 | i as u128),
            prefix_len: 128,
            preferred: 1,
            valid: 2,
            expires_at: 3,
            state: lq6_store::LeaseState::Active,
        });
        v.push(u);
    }
    s.commit_batch(v).await.unwrap();
    drop(s);
    // The writer thread checkpoints nothing on close by itself; make sure the WAL is folded in so the
    // file alone is the store.
    let c = rusqlite::Connection::open(p).unwrap();
    c.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
        .unwrap();
}

#[tokio::test]
async fn truncated_store() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("leases.db");
    make_store(&p, 3000).await;
    let full = std::fs::read(&p).unwrap();
    assert!(full.len() > 8192);
    for cut in [full.len() / 2, 4096, 50] {
        std::fs::write(&p, &full[..cut]).unwrap();
        assert_rejected(&p, |e| matches!(e, StoreError::CorruptFile { .. }));
    }
    // Not a page multiple.
    std::fs::write(&p, &full[..full.len() - 100]).unwrap();
    assert_rejected(&p, |e| matches!(e, StoreError::CorruptFile { .. }));
    // Intact again: opens.
    std::fs::write(&p, &full).unwrap();
    let s = SqliteStore::open(&p).unwrap();
    assert_eq!(s.stats().await.unwrap().bindings, 3000);
}

#[tokio::test]
async fn newer_schema_version() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("leases.db");
    make_store(&p, 10).await;
    {
        let c = rusqlite::Connection::open(&p).unwrap();
        c.execute_batch("PRAGMA user_version = 99; PRAGMA wal_checkpoint(TRUNCATE);")
            .unwrap();
    }
    let e = assert_rejected(&p, |e| {
        matches!(e, StoreError::NewerSchema { found: 99, .. })
    });
    assert!(e.to_string().contains("99"));
}

#[test]
fn missing_parent_is_created_and_new_store_has_our_header() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("a/b/leases.db");
    drop(SqliteStore::open(&p).unwrap());
    let b = std::fs::read(&p).unwrap();
    assert_eq!(&b[..16], b"SQLite format 3\0");
    assert_eq!(
        i32::from_be_bytes([b[68], b[69], b[70], b[71]]),
        lq6_store::sqlite::APPLICATION_ID
    );
    // No temporary file left behind.
    let names: Vec<_> = std::fs::read_dir(p.parent().unwrap())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert!(
        names
            .iter()
            .all(|n| !n.to_string_lossy().contains("creating")),
        "{names:?}"
    );
}
