//! The conformance suite against PostgreSQL (`LQ6_TEST_PG`; see .ci/postgres.sh).

mod common;

use std::sync::Arc;

use common::pg;
use lq6_store::{LeaseMerge, LeaseState, LeaseStore, StoreError};

conformance!(pg::fresh; commit_and_lookup, merge_and_replace, conflicts, own_ranges, concurrent_conflicts, bulk_queries,
    changes_and_expiry, ranges, batch, batch_in_order, concurrent_writers, page_visit);

/// Two servers (two stores, two pools) on one database race for the same addresses and prefixes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_servers_never_share_an_address() {
    let Some((url, schema, _guard)) = pg::schema("two_servers").await else {
        return;
    };
    let s1: Arc<dyn LeaseStore> = Arc::new(pg::open(&url, &schema).await);
    let s2: Arc<dyn LeaseStore> = Arc::new(pg::open(&url, &schema).await);
    let mut tasks = Vec::new();
    for c in 0..16u32 {
        let s = if c % 2 == 0 { s1.clone() } else { s2.clone() };
        tasks.push(tokio::spawn(async move {
            let mut won = Vec::new();
            for i in 0..8u32 {
                // Addresses 1..=4 and prefixes overlapping each other (a /56 and /60s inside it).
                let lease = if i % 2 == 0 {
                    common::na(&format!("2001:db8:77::{}", (i / 2 + c) % 4 + 1), 1, 9000)
                } else if c % 3 == 0 {
                    common::pd("2001:db8:7700::", 56, 2, 9000)
                } else {
                    common::pd(&format!("2001:db8:7700:{:x}0::", (c + i) % 4), 60, 2, 9000)
                };
                let key = (lease.addr, lease.prefix_len);
                match s
                    .commit(common::upd(1000 + c, "lan", 1000, vec![lease], None))
                    .await
                {
                    Ok(_) => won.push(key),
                    Err(StoreError::Conflict { .. }) => {}
                    Err(e) => panic!("{e}"),
                }
            }
            won
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    // Whatever happened, the active set has no overlap: check each active lease with by_address.
    let mut all = Vec::new();
    let mut after = None;
    loop {
        let v = s1
            .active_in_range(
                common::a("2001:db8::"),
                common::a("2001:db8:ffff::"),
                after,
                100,
            )
            .await
            .unwrap();
        if v.is_empty() {
            break;
        }
        after = Some(v.last().unwrap().addr);
        all.extend(v);
    }
    assert!(!all.is_empty());
    for w in all.windows(2) {
        let end0 = u128::from(w[0].addr)
            | if w[0].prefix_len == 128 {
                0
            } else {
                u128::MAX >> w[0].prefix_len
            };
        assert!(
            end0 < u128::from(w[1].addr),
            "overlap: {:?} and {:?}",
            w[0],
            w[1]
        );
    }
}

#[tokio::test]
async fn newer_schema_is_refused() {
    let Some((url, schema, _guard)) = pg::schema("newer_schema").await else {
        return;
    };
    drop(pg::open(&url, &schema).await);
    let (c, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    c.batch_execute(&format!(
        "INSERT INTO {schema}.lq6_schema_version(version) VALUES (99)"
    ))
    .await
    .unwrap();
    let e = lq6_store::postgres::PgStore::connect_with(
        &url,
        lq6_store::postgres::PgOptions {
            schema: Some(schema.clone()),
            ..Default::default()
        },
    )
    .await
    .expect_err("newer schema must be refused");
    assert!(
        matches!(e, StoreError::NewerSchema { found: 99, .. }),
        "{e}"
    );
    assert!(e.to_string().contains(&schema));
}

/// A batch where many updates depend on earlier ones (the same few clients and overlapping
/// addresses and prefixes, merges, replaces and releases) gives the same outcome per update and the
/// same bindings as the SQLite backend, which applies a batch strictly one update after another.
/// `LQ6_TEST_SEEDS` sets how many random batches (default 4).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dependent_batch_matches_sqlite() {
    let seeds: u64 = std::env::var("LQ6_TEST_SEEDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(4);
    for seed in 1..=seeds {
        let Some((url, schema, _guard)) = pg::schema(&format!("dependent_batch_{seed}")).await
        else {
            return;
        };
        dependent_batch(&url, &schema, seed).await;
    }
}

async fn dependent_batch(url: &str, schema: &str, seed: u64) {
    let pg: Arc<dyn LeaseStore> = Arc::new(pg::open(url, schema).await);
    let dir = tempfile::tempdir().unwrap();
    let sq: Arc<dyn LeaseStore> =
        Arc::new(lq6_store::sqlite::SqliteStore::open(dir.path().join("s.db")).unwrap());
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15 ^ seed.wrapping_mul(0x2545_f491_4f6c_dd1d);
    let mut rnd = |n: u64| {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x % n
    };
    let mut batch = Vec::new();
    for t in 0..300u64 {
        let mut leases = Vec::new();
        for iaid in 0..rnd(3) {
            let mut l = if rnd(4) == 0 {
                // A /60 inside a /56, or the /56 itself: overlaps between prefixes.
                match rnd(3) {
                    0 => common::pd("2001:db8:e00::", 56, iaid as u32, 9000 + t),
                    n => common::pd(&format!("2001:db8:e00:{n}0::"), 60, iaid as u32, 9000),
                }
            } else {
                common::na(
                    &format!("2001:db8:e::{:x}", rnd(6) + 1),
                    iaid as u32,
                    9000 + t,
                )
            };
            if rnd(4) == 0 {
                l.state = LeaseState::Released;
            }
            leases.push(l);
        }
        let link = if rnd(5) == 0 { "wan" } else { "lan" };
        let mut u = common::upd(rnd(5) as u32, link, 1000 + t, leases, None);
        if rnd(3) == 0 {
            u.merge = LeaseMerge::Replace;
        }
        batch.push(u);
    }
    let a = pg.commit_batch(batch.clone()).await.unwrap();
    let b = sq.commit_batch(batch).await.unwrap();
    let outcome = |r: &lq6_store::Result<lq6_store::CommitInfo>| match r {
        Ok(ci) => format!("ok {:?}", ci.binding.leases),
        Err(StoreError::Conflict { addr }) => format!("conflict {addr}"),
        Err(e) => format!("error {e}"),
    };
    let (a, b): (Vec<String>, Vec<String>) = (
        a.iter().map(outcome).collect(),
        b.iter().map(outcome).collect(),
    );
    assert!(a.iter().any(|o| o.starts_with("conflict")) && a.iter().any(|o| o.starts_with("ok")));
    for (i, (a, b)) in a.iter().zip(&b).enumerate() {
        assert_eq!(a, b, "seed {seed}, update {i}");
    }
    for n in 0..5u32 {
        // Row ids (the order of by_client) are opaque: compare per link.
        let strip = |v: Vec<lq6_store::Binding>| -> Vec<_> {
            let mut v: Vec<_> = v
                .into_iter()
                .map(|b| (b.client.link, b.client.cltt, b.leases))
                .collect();
            v.sort_by(|a, b| a.0.cmp(&b.0));
            v
        };
        let (p, s) = (
            strip(pg.by_client(&common::duid(n), None).await.unwrap()),
            strip(sq.by_client(&common::duid(n), None).await.unwrap()),
        );
        assert_eq!(p, s, "seed {seed}, client {n}");
    }
}

/// A database at schema 1 (expiry indexed on the address rows, GiST overlap constraint) is migrated
/// to schema 3: every binding's earliest expiry is filled in from its address rows, so the expiry
/// sweep still finds exactly the overdue ones; renewals afterwards rewrite the address rows in place
/// (HOT updates); and the overlap constraint is on SP-GiST and still refuses overlaps.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_schema_1_database_is_migrated() {
    let Some((url, schema, _guard)) = pg::schema("schema_1").await else {
        return;
    };
    let s = pg::open(&url, &schema).await;
    for n in 0..6u32 {
        let lease = common::na(
            &format!("2001:db8:61::{}", n + 1),
            1,
            5000 + 1000 * n as u64,
        );
        s.commit(common::upd(n, "lan", 1000, vec![lease], None))
            .await
            .unwrap();
    }
    drop(s);
    let (c, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    // Back to schema 1 as 0001_init.sql made it.
    c.batch_execute(&format!(
        "SET search_path = {schema};
         DROP INDEX lq6_client_expiry;
         ALTER TABLE lq6_client DROP COLUMN next_expiry;
         CREATE INDEX lq6_addr_expiry ON lq6_addr (expires_at);
         ALTER TABLE lq6_addr RESET (fillfactor);
         ALTER TABLE lq6_addr DROP CONSTRAINT lq6_addr_no_overlap;
         ALTER TABLE lq6_addr ADD CONSTRAINT lq6_addr_no_overlap
             EXCLUDE USING gist (prefix inet_ops WITH &&);
         DELETE FROM lq6_schema_version WHERE version >= 2;"
    ))
    .await
    .unwrap();
    let s = pg::open(&url, &schema).await;
    let v: i32 = c
        .query_one("SELECT max(version) FROM lq6_schema_version", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(v, 3);
    // Schema 3: the overlap constraint is on SP-GiST, and still refuses an overlap.
    let am: String = c
        .query_one(
            "SELECT am.amname::text FROM pg_constraint k JOIN pg_class i ON i.oid = k.conindid
             JOIN pg_am am ON am.oid = i.relam JOIN pg_namespace n ON n.oid = k.connamespace
             WHERE k.conname = 'lq6_addr_no_overlap' AND n.nspname = $1",
            &[&schema],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(am, "spgist");
    // Written past the store's own check, straight into the table: the constraint refuses it.
    let e = c
        .execute(
            &format!(
                "INSERT INTO {schema}.lq6_addr(start, prefix, plen, client, expires_at)
                 SELECT '\\x20010db8006100000000000000000000'::bytea, '2001:db8:61::/120', 120, id, 9000
                 FROM {schema}.lq6_client LIMIT 1"
            ),
            &[],
        )
        .await
        .expect_err("a /120 over stored addresses");
    assert_eq!(
        e.code(),
        Some(&tokio_postgres::error::SqlState::EXCLUSION_VIOLATION),
        "{e}"
    );
    // A server that knows only schema 1 would have left next_expiry wrong: the sweep sets it from
    // the record when it finds nothing overdue.
    let n = c
        .execute(
            &format!("UPDATE {schema}.lq6_client SET next_expiry = 1 WHERE duid = $1"),
            &[&common::duid(5)],
        )
        .await
        .unwrap();
    assert_eq!(n, 1);
    // Leases expiring at 5000 and 6000 are overdue at 6500; the other four are not.
    assert_eq!(s.expire(6500).await.unwrap(), 2);
    let fixed: Option<i64> = c
        .query_one(
            &format!("SELECT next_expiry FROM {schema}.lq6_client WHERE duid = $1"),
            &[&common::duid(5)],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(fixed, Some(10_000));
    let b = s.by_client(&common::duid(0), Some("lan")).await.unwrap();
    assert_eq!(b.len(), 1);
    assert_eq!(b[0].leases[0].state, LeaseState::Expired);
    let active = s
        .active_in_range(
            common::a("2001:db8:61::"),
            common::a("2001:db8:61::ff"),
            None,
            10,
        )
        .await
        .unwrap();
    assert_eq!(active.len(), 4);
    // Renew the four that are left, twice: their address rows change in place.
    for round in 0..2u64 {
        for n in 2..6u32 {
            let lease = common::na(&format!("2001:db8:61::{}", n + 1), 1, 20_000 + round);
            s.commit(common::upd(n, "lan", 7000 + round, vec![lease], None))
                .await
                .unwrap();
        }
    }
    assert_eq!(s.expire(19_999).await.unwrap(), 0);
    let stats = c
        .query_one(
            &format!(
                "SELECT count(*) FILTER (WHERE expires_at = 20001), count(*) FROM {schema}.lq6_addr"
            ),
            &[],
        )
        .await
        .unwrap();
    assert_eq!((stats.get::<_, i64>(0), stats.get::<_, i64>(1)), (4, 4));
    assert_eq!(s.expire(20_001).await.unwrap(), 4);
    assert!(s
        .active_in_range(
            common::a("2001:db8:61::"),
            common::a("2001:db8:61::ff"),
            None,
            10
        )
        .await
        .unwrap()
        .is_empty());
}
