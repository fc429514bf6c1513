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

conformance!(mk; commit_and_lookup, merge_and_replace, conflicts, own_ranges, concurrent_conflicts, bulk_queries,
    changes_and_expiry, ranges, batch, batch_in_order, concurrent_writers, page_visit);

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

/// More concurrent readers than the pool holds: they wait for a connection
/// instead of opening more (bounded memory), and none deadlocks, on either
/// runtime flavour (block_in_place and spawn_blocking paths).
async fn readers_beyond_the_pool(readers: usize) {
    let dir = tempfile::tempdir().unwrap();
    let opts = lq6_store::sqlite::SqliteOptions {
        readers,
        ..Default::default()
    };
    let s: Arc<dyn LeaseStore> =
        Arc::new(SqliteStore::open_with(dir.path().join("l.db"), opts).unwrap());
    let mut batch = Vec::new();
    for i in 0..300u32 {
        let addr = format!("2001:db8:1::{:x}", i + 16);
        let now = lq6_store::unix_now();
        let relay = Some(common::relay(b"\x00\x02\x00\x00\x00\x01r1", None));
        batch.push(common::upd(
            i,
            "lan",
            now,
            vec![common::na(&addr, 1, now + 600)],
            relay,
        ));
    }
    for r in s.commit_batch(batch).await.unwrap() {
        r.unwrap();
    }
    let mut tasks = Vec::new();
    for k in 0..16u32 {
        let s = s.clone();
        tasks.push(tokio::spawn(async move {
            let q = lq6_store::Query::relay_id(b"\x00\x02\x00\x00\x00\x01r1".to_vec(), None);
            let (mut after, mut n) = (None, 0);
            loop {
                let p = s.page(&q, after, 7 + k as usize).await.unwrap();
                n += p.bindings.len();
                let _ = s.by_address(common::a("2001:db8:1::20")).await.unwrap();
                match p.next {
                    Some(c) => after = Some(c),
                    None => break,
                }
            }
            n
        }));
    }
    for t in tasks {
        let n = tokio::time::timeout(std::time::Duration::from_secs(60), t)
            .await
            .expect("no deadlock")
            .unwrap();
        assert_eq!(n, 300);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readers_beyond_the_pool_multi_thread() {
    readers_beyond_the_pool(2).await;
}

#[tokio::test]
async fn readers_beyond_the_pool_current_thread() {
    readers_beyond_the_pool(1).await;
}

/// A steady write storm: every commit succeeds, and the write-ahead log keeps restarting instead of
/// growing. (The checkpointer thread never catches up while frames keep arriving, so the writer has
/// to finish checkpoints itself; a failure there once made committed groups report an error.)
/// Lookups run all along, so the reused read snapshot must not hold the log back either.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn write_storm_keeps_the_wal_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("leases.db");
    let store = Arc::new(SqliteStore::open(&path).unwrap());
    let wal = dir.path().join("leases.db-wal");
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let watcher = {
        let (wal, done) = (wal.clone(), done.clone());
        tokio::spawn(async move {
            let mut max = 0;
            while !done.load(std::sync::atomic::Ordering::Relaxed) {
                max = max.max(std::fs::metadata(&wal).map(|m| m.len()).unwrap_or(0));
                tokio::time::sleep(std::time::Duration::from_millis(5)).await;
            }
            max
        })
    };
    let reader = {
        let (s, done) = (store.clone(), done.clone());
        tokio::spawn(async move {
            let mut n = 0u32;
            loop {
                let a = common::a(&format!("2001:db8:1:{:x}::1", n % 1500 + 1));
                s.by_address(a).await.unwrap();
                n += 1;
                if done.load(std::sync::atomic::Ordering::Relaxed) {
                    return n;
                }
                if n % 64 == 0 {
                    tokio::task::yield_now().await;
                }
            }
        })
    };
    let mut tasks = Vec::new();
    for w in 0..16u32 {
        let s = store.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..1500u32 {
                let n = w * 100_000 + i;
                let addr = format!("2001:db8:{:x}:{:x}::1", w + 1, i + 1);
                let remote = (n % 997).to_be_bytes();
                let relay = common::relay(b"storm-relay", Some((4491, &remote)));
                let u = common::upd(
                    n,
                    "lan",
                    1000,
                    vec![common::na(&addr, 1, 9000)],
                    Some(relay),
                );
                if let Err(e) = s.commit(u).await {
                    panic!("commit {n} failed: {e}");
                }
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    done.store(true, std::sync::atomic::Ordering::Relaxed);
    let max_wal = watcher.await.unwrap();
    assert!(reader.await.unwrap() > 0);
    // Every commit has returned, so every lookup now sees it.
    for i in [1u32, 700, 1500] {
        let a = common::a(&format!("2001:db8:1:{i:x}::1"));
        assert!(store.by_address(a).await.unwrap().is_some(), "{a}");
    }
    assert_eq!(store.stats().await.unwrap().bindings, 16 * 1500);
    // Each group changes at least 8 b-trees (the client row, its 4 indexes, relay_id, addr and its
    // expiry index) and holds at most 16 commits: at least 1,500 groups x 8 pages x 4 KiB = 48 MiB
    // of log were written. A WAL that stayed below that has restarted.
    assert!(
        store
            .write_stats()
            .groups
            .load(std::sync::atomic::Ordering::Relaxed)
            >= 1500
    );
    assert!(max_wal < 48 << 20, "the WAL grew to {} MiB", max_wal >> 20);
}

/// `reader_mmap_bytes` maps the database into read connections (and only then): lookups answer
/// the same, and the file shows up in this process's mappings.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reader_mmap_is_opt_in() {
    for mmap in [0u64, 64 << 20] {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("l.db");
        let now = lq6_store::unix_now();
        {
            let s = SqliteStore::open(&path).unwrap();
            s.commit(common::upd(
                1,
                "lan",
                now,
                vec![common::na("2001:db8:1::10", 1, now + 600)],
                None,
            ))
            .await
            .unwrap();
        }
        // Into the file, where mapped reads happen (pages in the WAL are read from the WAL).
        rusqlite::Connection::open(&path)
            .unwrap()
            .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
            .unwrap();
        let opts = lq6_store::sqlite::SqliteOptions {
            reader_mmap_bytes: mmap,
            ..Default::default()
        };
        let s = SqliteStore::open_with(&path, opts).unwrap();
        let b = s
            .by_address(common::a("2001:db8:1::10"))
            .await
            .unwrap()
            .expect("found");
        assert_eq!(b.leases[0].addr, common::a("2001:db8:1::10"));
        let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
        let mapped = maps.lines().any(|l| l.ends_with(&*path.to_string_lossy()));
        assert_eq!(mapped, mmap > 0, "mmap {mmap}: mapped {mapped}");
    }
}

/// The conformance suite again with the in-memory address index the server turns on.
mod with_address_index {
    use super::*;

    async fn mk(_name: &str) -> Option<(Arc<dyn LeaseStore>, tempfile::TempDir)> {
        let dir = tempfile::tempdir().expect("tempdir");
        let opts = lq6_store::sqlite::SqliteOptions {
            address_index: true,
            ..Default::default()
        };
        let store = SqliteStore::open_with(dir.path().join("leases.db"), opts).expect("open");
        Some((Arc::new(store), dir))
    }

    conformance!(mk; commit_and_lookup, merge_and_replace, conflicts, own_ranges, concurrent_conflicts,
        changes_and_expiry, ranges, batch, batch_in_order, concurrent_writers);
}

/// The address index is a hint: another process writing the same file (here a second store without
/// the index) makes it stale, and lookups still answer from what is stored. The first lookup also
/// left a read snapshot open, which must not outlive its 10 ms bound.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_writer_on_the_file_leaves_lookups_and_commits_right() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("l.db");
    let opts = lq6_store::sqlite::SqliteOptions {
        address_index: true,
        ..Default::default()
    };
    let a = SqliteStore::open_with(&p, opts).unwrap();
    a.commit(common::upd(
        1,
        "lan",
        1000,
        vec![
            common::na("2001:db8:1::10", 1, 9000),
            common::pd("2001:db8:100::", 56, 2, 9000),
        ],
        None,
    ))
    .await
    .unwrap();
    let holder = |b: Option<lq6_store::Binding>| b.map(|b| b.client.duid);
    assert_eq!(
        holder(a.by_address(common::a("2001:db8:1::10")).await.unwrap()),
        Some(common::duid(1))
    );

    // The store's own commit is seen at once, although the lookup just above opened a snapshot.
    a.commit(common::upd(
        4,
        "lan",
        1004,
        vec![common::na("2001:db8:1::30", 1, 9000)],
        None,
    ))
    .await
    .unwrap();
    assert_eq!(
        holder(a.by_address(common::a("2001:db8:1::30")).await.unwrap()),
        Some(common::duid(4))
    );

    let b = SqliteStore::open(&p).unwrap();
    // Client 1 keeps only its prefix; the address goes to client 2, and client 3 gets a new one.
    let mut keep_prefix = common::upd(
        1,
        "lan",
        1001,
        vec![common::pd("2001:db8:100::", 56, 2, 9000)],
        None,
    );
    keep_prefix.merge = lq6_store::LeaseMerge::Replace;
    b.commit(keep_prefix).await.unwrap();
    b.commit(common::upd(
        2,
        "lan",
        1002,
        vec![common::na("2001:db8:1::10", 1, 9000)],
        None,
    ))
    .await
    .unwrap();
    let b_seq = b
        .commit(common::upd(
            3,
            "lan",
            1003,
            vec![common::na("2001:db8:1::20", 1, 9000)],
            None,
        ))
        .await
        .unwrap()
        .seq;
    drop(b);
    // A lookup may reuse its read snapshot for 10 ms; what another process wrote is seen after that.
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;

    assert_eq!(
        holder(a.by_address(common::a("2001:db8:1::10")).await.unwrap()),
        Some(common::duid(2))
    );
    assert_eq!(
        holder(a.by_address(common::a("2001:db8:1::20")).await.unwrap()),
        Some(common::duid(3))
    );
    assert_eq!(
        holder(a.by_address(common::a("2001:db8:100:7::1")).await.unwrap()),
        Some(common::duid(1))
    );
    assert_eq!(
        holder(a.by_address(common::a("2001:db8:1::11")).await.unwrap()),
        None
    );
    assert_eq!(
        holder(a.by_address(common::a("2001:db8:1::30")).await.unwrap()),
        Some(common::duid(4))
    );
    // The first store's writer goes on after the other writer's change sequence.
    let a_seq = a
        .commit(common::upd(
            5,
            "lan",
            1005,
            vec![common::na("2001:db8:1::50", 1, 9000)],
            None,
        ))
        .await
        .expect("a commit after another process wrote")
        .seq;
    assert!(a_seq > b_seq, "{a_seq} after {b_seq}");
}

/// Rows written before records carried their client columns read the same through every path:
/// the columns are used instead.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_without_client_columns_read_from_the_table_columns() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("l.db");
    let relay = common::relay(b"\x00\x02\x00\x00\x00\x01r1", Some((9, b"m")));
    let mut want = Vec::new();
    {
        let s = SqliteStore::open(&p).unwrap();
        for i in 0..3u32 {
            let ci = s
                .commit(common::upd(
                    i,
                    "lan",
                    1000 + u64::from(i),
                    vec![common::na(&format!("2001:db8:1::{}", i + 16), 1, 9000)],
                    Some(relay.clone()),
                ))
                .await
                .unwrap();
            want.push(ci.binding);
        }
    }
    // Remove every client section (flag bit 1 of the second octet; the section follows it), as an
    // older lq6 wrote them.
    {
        let c = rusqlite::Connection::open(&p).unwrap();
        let rows: Vec<(i64, Vec<u8>)> = c
            .prepare("SELECT id, data FROM client")
            .unwrap()
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(rows.len(), 3);
        for (id, mut d) in rows {
            assert_eq!(d[1] & 2, 2, "new records carry their client columns");
            d[1] &= !2;
            let dl = u16::from_be_bytes([d[2], d[3]]) as usize;
            let ll = u16::from_be_bytes([d[4 + dl], d[5 + dl]]) as usize;
            d.drain(2..2 + 4 + dl + ll + 40);
            c.execute(
                "UPDATE client SET data = ?1 WHERE id = ?2",
                rusqlite::params![d, id],
            )
            .unwrap();
        }
    }
    let opts = lq6_store::sqlite::SqliteOptions {
        address_index: true,
        ..Default::default()
    };
    let s = SqliteStore::open_with(&p, opts).unwrap();
    for b in &want {
        let addr = b.leases[0].addr;
        assert_eq!(s.by_address(addr).await.unwrap().as_ref(), Some(b));
        assert_eq!(
            s.by_client(&b.client.duid, Some("lan")).await.unwrap(),
            vec![b.clone()]
        );
    }
    let mut seen = Vec::new();
    let q = lq6_store::Query::relay_id(b"\x00\x02\x00\x00\x00\x01r1".to_vec(), None);
    s.page_visit(&q, None, 10, &mut |v| seen.push(v.to_owned()))
        .await
        .unwrap();
    assert_eq!(seen, want);
}

/// A lookup's snapshot left open on an idle store must not hold back the checkpoints of another
/// process writing the same file (`lq6 leases import` next to a running server).
#[test]
fn an_idle_snapshot_does_not_hold_back_another_writers_checkpoints() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("l.db");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let store = SqliteStore::open(&p).unwrap();
    rt.block_on(async {
        store
            .commit(common::upd(
                1,
                "lan",
                1000,
                vec![common::na("2001:db8:1::10", 1, 9000)],
                None,
            ))
            .await
            .unwrap();
        // One lookup, then nothing: no lookups and no commits from this store.
        assert!(store
            .by_address(common::a("2001:db8:1::10"))
            .await
            .unwrap()
            .is_some());
    });
    let o = rusqlite::Connection::open(&p).unwrap();
    o.execute_batch("PRAGMA busy_timeout=1000;").unwrap();
    for round in 0..3i64 {
        o.execute_batch("BEGIN IMMEDIATE").unwrap();
        for i in 0..500i64 {
            o.execute(
                "INSERT INTO relay_id(relay_id, client) VALUES (?1, ?2)",
                rusqlite::params![vec![7u8; 200], round * 10_000 + i],
            )
            .unwrap();
        }
        o.execute_batch("COMMIT").unwrap();
        // Longer than the 10 ms a snapshot may live plus the 100 ms between the checks that end it.
        std::thread::sleep(std::time::Duration::from_millis(250));
        let (log, done): (i64, i64) = o
            .query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| {
                Ok((r.get(1)?, r.get(2)?))
            })
            .unwrap();
        assert_eq!(log, done, "round {round}: every frame checkpointed");
    }
    drop(store);
}

/// A schema-2 store (records without a client section) is brought to schema 3 when opened, and
/// keeps its bindings.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_schema_2_store_is_migrated() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("l.db");
    let b = {
        let s = SqliteStore::open(&p).unwrap();
        s.commit(common::upd(
            1,
            "lan",
            1000,
            vec![common::na("2001:db8:1::10", 1, 9000)],
            None,
        ))
        .await
        .unwrap()
        .binding
    };
    let version = |c: &rusqlite::Connection| -> i64 {
        c.query_row("PRAGMA user_version", [], |r| r.get(0))
            .unwrap()
    };
    {
        let c = rusqlite::Connection::open(&p).unwrap();
        assert_eq!(version(&c), lq6_store::sqlite::SCHEMA_VERSION);
        c.execute_batch("PRAGMA user_version=2; PRAGMA wal_checkpoint(TRUNCATE);")
            .unwrap();
    }
    let s = SqliteStore::open(&p).unwrap();
    assert_eq!(
        s.by_address(common::a("2001:db8:1::10")).await.unwrap(),
        Some(b)
    );
    drop(s);
    let c = rusqlite::Connection::open(&p).unwrap();
    assert_eq!(version(&c), 3);
}

/// One transaction whose log frames exceed the writer's WAL buffer (1 MiB) and the largest write
/// SQLite's default VFS takes (124 KiB chunks): everything is readable at once, survives a
/// checkpoint and a reopen, and the file passes SQLite's own integrity check.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_larger_than_the_wal_buffer_is_whole() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("leases.db");
    let n = 12_000u32;
    let addr = |i: u32| format!("2001:db8:{:x}:{:x}::1", i / 4096 + 1, i % 4096 + 1);
    {
        let store = SqliteStore::open(&path).unwrap();
        let batch = (0..n)
            .map(|i| {
                let relay = common::relay(b"batch-relay", Some((4491, b"r")));
                common::upd(
                    i,
                    "lan",
                    1000,
                    vec![common::na(&addr(i), 1, 9000)],
                    Some(relay),
                )
            })
            .collect();
        let rs = store.commit_batch(batch).await.unwrap();
        assert!(rs.iter().all(|r| r.is_ok()));
        let wal = std::fs::metadata(dir.path().join("leases.db-wal"))
            .unwrap()
            .len();
        assert!(wal > 4 << 20, "the batch wrote only {wal} bytes of log");
        for i in [0, 1, n / 2, n - 1] {
            let b = store.by_address(common::a(&addr(i))).await.unwrap();
            assert_eq!(
                b.map(|b| b.client.duid),
                Some(common::duid(i)),
                "{}",
                addr(i)
            );
        }
    }
    let c = rusqlite::Connection::open(&path).unwrap();
    let ok: String = c
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(ok, "ok");
    c.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
        .unwrap();
    drop(c);
    let store = SqliteStore::open(&path).unwrap();
    assert_eq!(store.stats().await.unwrap().bindings, n as u64);
    let b = store.by_address(common::a(&addr(n - 7))).await.unwrap();
    assert_eq!(b.map(|b| b.client.duid), Some(common::duid(n - 7)));
}
