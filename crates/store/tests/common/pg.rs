//! PostgreSQL test helpers: the URL from `LQ6_TEST_PG`, one schema per test.

use std::sync::Arc;

use lq6_store::postgres::{PgOptions, PgStore};
use lq6_store::LeaseStore;

/// The test database URL. Unset: skip outside CI, fail in CI (the suite must not pass silently).
pub fn url() -> Option<String> {
    match std::env::var("LQ6_TEST_PG") {
        Ok(u) if !u.trim().is_empty() => Some(u),
        _ => {
            if std::env::var_os("CI").is_some() {
                panic!("LQ6_TEST_PG is not set but CI is: the PostgreSQL backend tests must run in CI (see .ci/postgres.sh)");
            }
            eprintln!("skipped: LQ6_TEST_PG is not set");
            None
        }
    }
}

async fn admin(url: &str) -> tokio_postgres::Client {
    let (c, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .expect("connect to LQ6_TEST_PG");
    tokio::spawn(conn);
    c
}

/// Drops the test schema when the test ends (from a detached thread, so that the test's runtime is never
/// blocked; a schema left behind by an early exit is dropped when the test runs again).
pub struct Guard {
    url: String,
    schema: String,
}

impl Drop for Guard {
    fn drop(&mut self) {
        let (url, schema) = (self.url.clone(), self.schema.clone());
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async {
                let c = admin(&url).await;
                let _ = c
                    .batch_execute(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE"))
                    .await;
            });
        });
    }
}

/// A fresh schema named after the test.
pub async fn schema(name: &str) -> Option<(String, String, Guard)> {
    let url = url()?;
    let schema = format!("lq6t_{}", name.to_ascii_lowercase());
    let c = admin(&url).await;
    c.batch_execute(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE"))
        .await
        .expect("drop old schema");
    Some((url.clone(), schema.clone(), Guard { url, schema }))
}

pub async fn open(url: &str, schema: &str) -> PgStore {
    PgStore::connect_with(
        url,
        PgOptions {
            schema: Some(schema.into()),
            ..Default::default()
        },
    )
    .await
    .expect("PgStore::connect_with")
}

pub async fn fresh(name: &str) -> Option<(Arc<dyn LeaseStore>, Guard)> {
    let (url, schema, guard) = schema(name).await?;
    Some((Arc::new(open(&url, &schema).await), guard))
}
