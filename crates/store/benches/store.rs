//! Lease store benchmark; prints a table. `cargo bench -p lq6-store --bench store`
//!
//! Env: LQ6_BENCH_N (bindings for scan/lookup, default 1,000,000), LQ6_BENCH_COMMITS (durable commits,
//! default 100,000), LQ6_BENCH_PG_N (PostgreSQL bindings, default N/10), LQ6_TEST_PG (PostgreSQL URL;
//! the PostgreSQL rows are measured only when it is set), LQ6_BENCH_DIR (where the SQLite file goes),
//! LQ6_BENCH_ONLY=postgres (skip the SQLite rows).

use std::net::Ipv6Addr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use lq6_store::postgres::{PgOptions, PgStore};
use lq6_store::sqlite::SqliteStore;
use lq6_store::*;

const RELAY: &[u8] = b"\x00\x02\x00\x00\x09\xbf bench-relay-1";

fn env_n(k: &str, d: usize) -> usize {
    std::env::var(k)
        .ok()
        .and_then(|v| v.replace('_', "").parse().ok())
        .unwrap_or(d)
}

/// Bindings per store page in the scans (LQ6_BENCH_PAGE; the responder's default is 2048).
fn page_size() -> usize {
    env_n("LQ6_BENCH_PAGE", 1000)
}

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
        })
        .unwrap_or(0)
}

fn addr(i: u64) -> Ipv6Addr {
    Ipv6Addr::from((0x2001_0db8u128 << 96) | (i as u128 + 1))
}

fn update(i: u64, relay_id: &[u8], now: u64) -> ClientUpdate {
    let mut duid = vec![0, 1, 0, 1, 0x2c, 0x3d, 0x4e, 0x5f];
    duid.extend_from_slice(&(i as u32).to_be_bytes());
    duid.extend_from_slice(&[0x52, 0x54, 0x00, 0x12]);
    let mut chain = vec![12u8, 0];
    chain.extend_from_slice(&Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 0, 1).octets());
    chain.extend_from_slice(&Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 1).octets());
    chain.extend_from_slice(&[0, 18, 0, 6, b'e', b't', b'h', b'0', b'/', b'1']);
    ClientUpdate {
        duid,
        link: "bench-link".into(),
        link_address: Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 0, 1),
        cltt: now,
        relay: Some(RelayInfo {
            peer_address: Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 1),
            chain,
            relay_ids: vec![relay_id.to_vec()],
            remote_id: Some(RemoteId {
                enterprise: 4491,
                id: format!("modem-{}", i % 1000).into_bytes(),
            }),
            subscriber_id: None,
            interface_id: Some(b"eth0/1".to_vec()),
            client_linklayer: None,
        }),
        leases: vec![Lease {
            kind: LeaseKind::Na,
            iaid: 1,
            addr: addr(i),
            prefix_len: 128,
            preferred: 3600,
            valid: 7200,
            expires_at: now + 7200,
            state: LeaseState::Active,
        }],
        merge: LeaseMerge::Merge,
        now: Some(now),
    }
}

struct Row {
    backend: &'static str,
    what: String,
    value: String,
    note: String,
}

/// Builds the update for binding `i`: [`update`] or [`update_na_pd`].
type MakeUpdate = fn(u64, &[u8], u64) -> ClientUpdate;

/// The commit shapes measured: one address per transaction, and an address with a prefix.
const SHAPES: [(&str, MakeUpdate, u64); 2] = [
    ("IA_NA", update, 50_000_000),
    ("IA_NA + IA_PD", update_na_pd, 60_000_000),
];

/// [`update`] plus a delegated /56: what one DHCPv6 Request with IA_NA and IA_PD commits.
fn update_na_pd(i: u64, relay_id: &[u8], now: u64) -> ClientUpdate {
    let mut u = update(i, relay_id, now);
    u.leases.push(Lease {
        kind: LeaseKind::Pd,
        iaid: 2,
        // 2001:db8:8000::/33 holds 2^23 distinct /56s, away from the addresses of `addr`.
        addr: Ipv6Addr::from((0x2001_0db8_8000_0000u128 | ((i as u128 & 0x7f_ffff) << 8)) << 64),
        prefix_len: 56,
        preferred: 3600,
        valid: 7200,
        expires_at: now + 7200,
        state: LeaseState::Active,
    });
    u
}

/// Baseline for the commit rows: one thread appending 4 KiB and `fdatasync`ing it, on the same
/// file system. A commit needs at least one such sync, so this is the disk's ceiling for one
/// writer; group commit is what lets many writers beat it.
fn fsync_rate(dir: &std::path::Path) -> f64 {
    use std::io::Write;
    let p = dir.join("fsync-baseline");
    let mut f = std::fs::File::create(&p).expect("baseline file");
    let page = [0x5au8; 4096];
    let n = 2_000;
    let t0 = Instant::now();
    for _ in 0..n {
        f.write_all(&page).expect("write");
        f.sync_data().expect("fdatasync");
    }
    let r = n as f64 / t0.elapsed().as_secs_f64();
    let _ = std::fs::remove_file(&p);
    r
}

/// 16 writers committing `total` updates built by `make`; returns (commits/s, bindings/s).
async fn commits(
    store: Arc<dyn LeaseStore>,
    total: usize,
    base: u64,
    make: MakeUpdate,
) -> (f64, f64) {
    let writers = 16u64;
    let per = (total as u64 / writers).max(1);
    let t0 = Instant::now();
    let mut tasks = Vec::new();
    for w in 0..writers {
        let s = store.clone();
        tasks.push(tokio::spawn(async move {
            // Half inserts of new bindings, half renewals of the ones just inserted.
            for k in 0..per {
                let i = base + w * per + k / 2;
                let u = make(i, b"commit-relay", 1_000 + k);
                let want = u.leases.len();
                let ci = s.commit(u).await.expect("commit");
                // Every binding counted was stored: none refused as taken by another client.
                let active = ci.binding.leases.iter();
                let active = active.filter(|l| l.state == LeaseState::Active).count();
                assert_eq!(active, want, "binding {i}: a lease was refused");
            }
        }));
    }
    for t in tasks {
        t.await.expect("writer");
    }
    let per_commit = make(0, b"", 0).leases.len() as f64;
    let r = (writers * per) as f64 / t0.elapsed().as_secs_f64();
    (r, r * per_commit)
}

async fn populate(store: &Arc<dyn LeaseStore>, n: usize, chunk: usize) -> f64 {
    let t0 = Instant::now();
    let mut i = 0u64;
    while (i as usize) < n {
        let end = (i + chunk as u64).min(n as u64);
        let v: Vec<_> = (i..end).map(|k| update(k, RELAY, 1_000_000)).collect();
        for r in store.commit_batch(v).await.expect("batch") {
            r.expect("populate commit");
        }
        i = end;
    }
    n as f64 / t0.elapsed().as_secs_f64()
}

async fn scan(store: Arc<dyn LeaseStore>, n: usize) -> (f64, i64, usize) {
    let rss0 = rss_kib() as i64;
    let mut peak = rss0;
    let t0 = Instant::now();
    let mut s = std::pin::pin!(stream(
        store,
        Query::relay_id(RELAY.to_vec(), None),
        page_size()
    ));
    let mut count = 0usize;
    let mut bytes = 0usize;
    while let Some(b) = s.next().await {
        let b = b.expect("scan");
        bytes += b.client.duid.len() + b.leases.len();
        count += 1;
        if count % 50_000 == 0 {
            peak = peak.max(rss_kib() as i64);
        }
    }
    let dt = t0.elapsed().as_secs_f64();
    peak = peak.max(rss_kib() as i64);
    assert_eq!(count, n, "scan count ({bytes})");
    (count as f64 / dt, peak - rss0, count)
}

/// The same scan through `page_visit()`: the visitor touches every field (sums lengths and values),
/// nothing is allocated per binding.
async fn scan_visit(store: Arc<dyn LeaseStore>, n: usize) -> (f64, i64, usize) {
    let rss0 = rss_kib() as i64;
    let mut peak = rss0;
    let t0 = Instant::now();
    let q = Query::relay_id(RELAY.to_vec(), None);
    let mut count = 0usize;
    let mut acc = 0u64;
    let mut after = None;
    loop {
        let next = store
            .page_visit(&q, after, page_size(), &mut |v: &BindingView<'_>| {
                count += 1;
                acc = acc
                    .wrapping_add(v.duid.len() as u64 + v.link.len() as u64)
                    .wrapping_add(u128::from(v.link_address) as u64)
                    .wrapping_add(v.cltt ^ v.changed_seq ^ v.changed_at);
                if let Some(r) = &v.relay {
                    acc = acc
                        .wrapping_add(u128::from(r.peer_address) as u64 + r.chain.len() as u64)
                        .wrapping_add(r.relay_ids().map(|x| x.len() as u64).sum::<u64>())
                        .wrapping_add(r.remote_id.map_or(0, |(e, id)| e as u64 + id.len() as u64))
                        .wrapping_add(r.subscriber_id.map_or(0, |x| x.len() as u64))
                        .wrapping_add(r.interface_id.map_or(0, |x| x.len() as u64))
                        .wrapping_add(
                            r.client_linklayer
                                .map_or(0, |(t, x)| t as u64 + x.len() as u64),
                        );
                }
                for l in v.leases() {
                    acc = acc
                        .wrapping_add(u128::from(l.addr) as u64 + l.iaid as u64)
                        .wrapping_add(l.prefix_len as u64 + l.preferred as u64 + l.valid as u64)
                        .wrapping_add(l.expires_at + l.kind as u64 + l.state as u64);
                }
            })
            .await
            .expect("page_visit");
        if count % 50_000 < page_size() {
            peak = peak.max(rss_kib() as i64);
        }
        match next {
            Some(c) => after = Some(c),
            None => break,
        }
    }
    let dt = t0.elapsed().as_secs_f64();
    peak = peak.max(rss_kib() as i64);
    assert_eq!(count, n, "scan_visit count ({acc})");
    (count as f64 / dt, peak - rss0, count)
}

async fn lookups(store: &Arc<dyn LeaseStore>, n: usize, samples: usize) -> (f64, f64) {
    let mut lat = Vec::with_capacity(samples);
    let mut x: u64 = 0x2545f4914f6cdd1d;
    for _ in 0..samples {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let i = x % n as u64;
        let t0 = Instant::now();
        let b = store.by_address(addr(i)).await.expect("lookup");
        lat.push(t0.elapsed());
        assert!(b.is_some(), "address {i} not found");
    }
    lat.sort();
    let us = |d: Duration| d.as_secs_f64() * 1e6;
    (us(lat[lat.len() / 2]), us(lat[lat.len() * 99 / 100]))
}

fn fmt_rate(r: f64) -> String {
    if r >= 1e6 {
        format!("{:.2} M/s", r / 1e6)
    } else {
        format!("{:.1} k/s", r / 1e3)
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    // `cargo bench` passes --bench; ignore arguments.
    let n = env_n("LQ6_BENCH_N", 1_000_000);
    let ncommit = env_n("LQ6_BENCH_COMMITS", 100_000);
    let mut rows: Vec<Row> = Vec::new();

    // ---------------- SQLite ----------------
    // LQ6_BENCH_ONLY=postgres skips these rows (e.g. to compare PostgreSQL changes quickly).
    if std::env::var("LQ6_BENCH_ONLY").as_deref() != Ok("postgres") {
        let dir = match std::env::var_os("LQ6_BENCH_DIR") {
            Some(d) => tempfile::tempdir_in(d).expect("tempdir"),
            None => tempfile::tempdir().expect("tempdir"),
        };
        let raw = fsync_rate(dir.path());
        rows.push(Row {
            backend: "sqlite",
            what: "baseline: 4 KiB append + fdatasync, 1 thread".into(),
            value: fmt_rate(raw),
            note: "syncs/s on this file system: the ceiling for one writer".into(),
        });
        for (shape, make, base) in SHAPES {
            let path = dir.path().join(format!("commits-{base}.db"));
            let sqlite = Arc::new(SqliteStore::open(&path).expect("open"));
            let store: Arc<dyn LeaseStore> = sqlite.clone();
            let (r, b) = commits(store.clone(), ncommit, base, make).await;
            let ws = sqlite.write_stats();
            let ld =
                |a: &std::sync::atomic::AtomicU64| a.load(std::sync::atomic::Ordering::Relaxed);
            let (groups, fsyncs) = (ld(&ws.groups).max(1), ld(&ws.fsyncs).max(1));
            rows.push(Row {
                backend: "sqlite",
                what: format!("durable commits of {shape}, 16 writers"),
                value: format!("{} bindings", fmt_rate(b)),
                note: format!(
                    "{:.1}k commits/s = {:.1}× baseline; {ncommit} commits (half inserts, half renewals); {:.1} per group, {:.1} per fsync, fsync {:.0} µs",
                    r / 1e3,
                    r / raw,
                    ld(&ws.commands) as f64 / groups as f64,
                    ld(&ws.commands) as f64 / fsyncs as f64,
                    ld(&ws.fsync_micros) as f64 / fsyncs as f64
                ),
            });
        }
        // A separate file for the 1M-binding figures so that the commit bindings don't skew bytes/binding.
        let path2 = dir.path().join("scan.db");
        let store: Arc<dyn LeaseStore> = Arc::new(SqliteStore::open(&path2).expect("open"));
        let r = populate(&store, n, 10_000).await;
        rows.push(Row {
            backend: "sqlite",
            what: format!("populate {n} (commit_batch 10k)"),
            value: fmt_rate(r),
            note: "bindings/s, durable per batch".into(),
        });
        let (rate, rss, count) = scan(store.clone(), n).await;
        rows.push(Row {
            backend: "sqlite",
            what: format!("stream {count} for one Relay-ID, page()"),
            value: fmt_rate(rate),
            note: format!(
                "RSS growth {:.1} MiB, {} per page",
                rss as f64 / 1024.0,
                page_size()
            ),
        });
        let (rate, rss, count) = scan_visit(store.clone(), n).await;
        rows.push(Row {
            backend: "sqlite",
            what: format!("stream {count} for one Relay-ID, page_visit()"),
            value: fmt_rate(rate),
            note: format!(
                "RSS growth {:.1} MiB, {} per page, visitor reads every field",
                rss as f64 / 1024.0,
                page_size()
            ),
        });
        // Baseline: raw SQLite scan of the same rows through the same index, without decoding.
        {
            let c = rusqlite::Connection::open_with_flags(
                &path2,
                rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
            )
            .unwrap();
            let t0 = Instant::now();
            let mut st = c
                .prepare(
                    "SELECT c.id, c.duid, c.link, c.link_address, c.cltt, c.changed_seq, c.changed_at, c.data
                     FROM relay_id r JOIN client c ON c.id = r.client WHERE r.relay_id = ?1 ORDER BY r.client",
                )
                .unwrap();
            let mut rows_it = st.query([RELAY]).unwrap();
            let mut k = 0usize;
            let mut total = 0usize;
            while let Some(r) = rows_it.next().unwrap() {
                total += r.get_ref(7).unwrap().as_blob().unwrap().len();
                k += 1;
            }
            let dt = t0.elapsed().as_secs_f64();
            rows.push(Row {
                backend: "sqlite",
                what: "baseline: raw SQL scan, same join".into(),
                value: fmt_rate(k as f64 / dt),
                note: format!("{k} rows, no decode, {} B data", total),
            });
        }
        let (med, p99) = lookups(&store, n, 20_000).await;
        rows.push(Row {
            backend: "sqlite",
            what: format!("by_address among {n}"),
            value: format!("median {med:.1} µs"),
            note: format!("p99 {p99:.1} µs, 20k random lookups"),
        });
        drop(store);
        {
            let c = rusqlite::Connection::open(&path2).unwrap();
            c.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
                .unwrap();
        }
        let size = std::fs::metadata(&path2).map(|m| m.len()).unwrap_or(0);
        rows.push(Row {
            backend: "sqlite",
            what: "bytes on disk per binding".into(),
            value: format!("{:.0} B", size as f64 / n as f64),
            note: format!(
                "{:.1} MiB file for {n} bindings, all indexes",
                size as f64 / 1048576.0
            ),
        });
    }

    // ---------------- PostgreSQL ----------------
    if let Ok(url) = std::env::var("LQ6_TEST_PG") {
        let pn = env_n("LQ6_BENCH_PG_N", (n / 10).max(1000));
        let pcommit = env_n("LQ6_BENCH_PG_COMMITS", ncommit / 5);
        let schema = "lq6_bench";
        {
            let (c, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
                .await
                .expect("pg");
            tokio::spawn(conn);
            c.batch_execute(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE"))
                .await
                .unwrap();
        }
        let pg = PgStore::connect_with(
            &url,
            PgOptions {
                schema: Some(schema.into()),
                pool_size: 16,
                ..Default::default()
            },
        )
        .await
        .expect("pg connect");
        let store: Arc<dyn LeaseStore> = Arc::new(pg);
        for (shape, make, base) in [
            (
                "IA_NA",
                update as fn(u64, &[u8], u64) -> ClientUpdate,
                50_000_000,
            ),
            ("IA_NA + IA_PD", update_na_pd, 60_000_000),
        ] {
            let (r, b) = commits(store.clone(), pcommit, base, make).await;
            rows.push(Row {
                backend: "postgres",
                what: format!("durable commits of {shape}, 16 writers"),
                value: format!("{} bindings", fmt_rate(b)),
                note: format!("{:.1}k commits/s; {pcommit} commits, pool 16", r / 1e3),
            });
        }
        let r = populate(&store, pn, 2_000).await;
        rows.push(Row {
            backend: "postgres",
            what: format!("populate {pn} (commit_batch 2k)"),
            value: fmt_rate(r),
            note: "bindings/s".into(),
        });
        let (rate, rss, count) = scan(store.clone(), pn).await;
        rows.push(Row {
            backend: "postgres",
            what: format!("stream {count} for one Relay-ID, page()"),
            value: fmt_rate(rate),
            note: format!("RSS growth {:.1} MiB", rss as f64 / 1024.0),
        });
        let (rate, rss, count) = scan_visit(store.clone(), pn).await;
        rows.push(Row {
            backend: "postgres",
            what: format!("stream {count} for one Relay-ID, page_visit()"),
            value: fmt_rate(rate),
            note: format!("RSS growth {:.1} MiB", rss as f64 / 1024.0),
        });
        let (med, p99) = lookups(&store, pn, 5_000).await;
        rows.push(Row {
            backend: "postgres",
            what: format!("by_address among {pn}"),
            value: format!("median {med:.1} µs"),
            note: format!("p99 {p99:.1} µs"),
        });
        let (c, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
            .await
            .expect("pg");
        tokio::spawn(conn);
        let sz: i64 = c
            .query_one(
                "SELECT coalesce(sum(pg_total_relation_size(c.oid)), 0)::bigint FROM pg_class c
                 JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = $1 AND c.relkind = 'r'",
                &[&schema],
            )
            .await
            .unwrap()
            .get(0);
        let st = store.stats().await.unwrap();
        rows.push(Row {
            backend: "postgres",
            what: "bytes on disk per binding".into(),
            value: format!("{:.0} B", sz as f64 / st.bindings.max(1) as f64),
            note: format!("tables+indexes+toast, {} bindings", st.bindings),
        });
        c.batch_execute(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE"))
            .await
            .ok();
    } else {
        eprintln!("LQ6_TEST_PG not set: PostgreSQL rows skipped");
    }

    let w1 = rows
        .iter()
        .map(|r| r.what.chars().count())
        .max()
        .unwrap_or(0);
    let w2 = rows
        .iter()
        .map(|r| r.value.chars().count())
        .max()
        .unwrap_or(0);
    println!("| backend  | {:w1$} | {:w2$} | note", "measure", "value");
    println!(
        "|----------|-{}-|-{}-|-----",
        "-".repeat(w1),
        "-".repeat(w2)
    );
    for r in &rows {
        println!(
            "| {:8} | {:w1$} | {:w2$} | {}",
            r.backend, r.what, r.value, r.note
        );
    }
}
