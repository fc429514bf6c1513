//! The conformance suite against PostgreSQL (`LQ6_TEST_PG`; see .ci/postgres.sh).

mod common;

use std::sync::Arc;

use common::pg;
use lq6_store::{LeaseStore, StoreError};

conformance!(pg::fresh; commit_and_lookup, merge_and_replace, conflicts, own_ranges, concurrent_conflicts, bulk_queries,
    changes_and_expiry, ranges, batch, concurrent_writers, page_visit);

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
