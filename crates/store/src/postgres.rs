//! PostgreSQL backend for deployments where several lq6 servers share one lease database.
//!
//! * Connections come from a deadpool pool; a connection broken by a server restart is dropped and
//!   replaced on the next checkout, so calls fail while PostgreSQL is down and succeed once it is back.
//! * Every commit is one transaction (`synchronous_commit=on` is forced for our sessions, so it is
//!   durable when it returns). A failed commit leaves nothing behind.
//! * Two servers can never hold the same address or overlapping prefixes at once: every Active lease
//!   has a row in `lq6_addr` under a GiST exclusion constraint (`prefix inet_ops WITH &&`). The loser of
//!   a race gets [`StoreError::Conflict`] and retries with another candidate.
//! * Schema migrations are versioned (`migrations/postgres/NNNN_*.sql`, table `lq6_schema_version`) and
//!   applied under an advisory lock. A database with a newer version is refused.
//!
//! SQL features relied on (to judge PostgreSQL-compatible databases): bytea, sequences/bigserial,
//! `INSERT .. ON CONFLICT DO NOTHING .. RETURNING`, `SELECT .. FOR UPDATE [SKIP LOCKED]`, `unnest()` of
//! array parameters, `= ANY(array)`, partial indexes, the `inet` type with `>>=` and a GiST exclusion
//! constraint, `pg_advisory_xact_lock`, savepoints. CockroachDB lacks exclusion constraints and inet GiST
//! (conflict safety would need another design); YugabyteDB lacks GiST exclusion constraints as well.
//!
//! Caveat: change sequence numbers come from a sequence, so with concurrent writers a lower number can
//! commit slightly after a higher one; Active Leasequery catch-up should re-read a small window.

use std::net::Ipv6Addr;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use tokio_postgres::types::ToSql;
use tokio_postgres::{NoTls, Row};

use crate::record::{self, a16, addr_from, Plan};
use crate::sql::Param;
use crate::{
    ActiveLease, Binding, ClientRecord, ClientUpdate, CommitInfo, Cursor, LeaseMerge, LeaseState,
    LeaseStore, Page, Query, Result, Stats, StoreError,
};

/// Versioned migrations, applied in order.
pub const MIGRATIONS: &[(i32, &str)] = &[(1, include_str!("../migrations/postgres/0001_init.sql"))];

const COLS: &str =
    "c.id, c.duid, c.link, c.link_address, c.cltt, c.changed_seq, c.changed_at, c.data";

/// Options for [`PgStore::connect_with`].
#[derive(Debug, Clone)]
pub struct PgOptions {
    /// Schema to use (created if missing); None uses the connection's default search_path.
    pub schema: Option<String>,
    /// Maximum pooled connections (default 16).
    pub pool_size: usize,
    /// Timeout for connecting and for waiting for a pooled connection (default 5 s).
    pub timeout: Duration,
}

impl Default for PgOptions {
    fn default() -> Self {
        PgOptions {
            schema: None,
            pool_size: 16,
            timeout: Duration::from_secs(5),
        }
    }
}

/// The PostgreSQL lease store. Cheap to clone.
#[derive(Clone)]
pub struct PgStore {
    pool: Pool,
    name: String,
}

impl std::fmt::Debug for PgStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgStore").field("name", &self.name).finish()
    }
}

fn pg_err(e: tokio_postgres::Error) -> StoreError {
    match e.as_db_error() {
        Some(db) => StoreError::Postgres(format!("{} ({})", db.message(), db.code().code())),
        None => StoreError::Postgres(e.to_string()),
    }
}

fn pool_err(e: deadpool_postgres::PoolError) -> StoreError {
    match e {
        deadpool_postgres::PoolError::Backend(e) => pg_err(e),
        e => StoreError::Postgres(e.to_string()),
    }
}

impl From<tokio_postgres::Error> for StoreError {
    fn from(e: tokio_postgres::Error) -> Self {
        pg_err(e)
    }
}

fn valid_schema(s: &str) -> bool {
    !s.is_empty()
        && s.len() < 60
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        && !s.as_bytes()[0].is_ascii_digit()
}

impl PgStore {
    /// Connect with default options; `url` is a libpq key=value string or a `postgres://` URL.
    pub async fn connect(url: &str) -> Result<Self> {
        Self::connect_with(url, PgOptions::default()).await
    }

    /// Connect, create the schema if asked, and apply pending migrations.
    pub async fn connect_with(url: &str, opts: PgOptions) -> Result<Self> {
        let mut cfg = tokio_postgres::Config::from_str(url)
            .map_err(|e| StoreError::Invalid(format!("PostgreSQL connection string: {e}")))?;
        let mut options = String::from("-c synchronous_commit=on");
        if let Some(s) = &opts.schema {
            if !valid_schema(s) {
                return Err(StoreError::Invalid(format!(
                    "schema name {s:?} (use [a-z_][a-z0-9_]*)"
                )));
            }
            options.push_str(&format!(" -c search_path={s}"));
        }
        cfg.options(&options);
        cfg.connect_timeout(opts.timeout);
        if cfg.get_application_name().is_none() {
            cfg.application_name("lq6");
        }
        let mgr = Manager::from_config(
            cfg,
            NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(mgr)
            .max_size(opts.pool_size.max(1))
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(opts.timeout))
            .create_timeout(Some(opts.timeout))
            .recycle_timeout(Some(opts.timeout))
            .build()
            .map_err(|e| StoreError::Postgres(e.to_string()))?;
        let name = format!(
            "postgresql schema {}",
            opts.schema.as_deref().unwrap_or("(default)")
        );
        let store = PgStore { pool, name };
        store.migrate(opts.schema.as_deref()).await?;
        Ok(store)
    }

    async fn migrate(&self, schema: Option<&str>) -> Result<()> {
        let mut c = self.pool.get().await.map_err(pool_err)?;
        let tx = c.transaction().await?;
        tx.batch_execute("SELECT pg_advisory_xact_lock(7155254054)")
            .await?;
        if let Some(s) = schema {
            tx.batch_execute(&format!("CREATE SCHEMA IF NOT EXISTS {s}"))
                .await?;
        }
        tx.batch_execute(
            "CREATE TABLE IF NOT EXISTS lq6_schema_version (
                 version integer PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())",
        )
        .await?;
        let v: i32 = tx
            .query_one(
                "SELECT coalesce(max(version), 0) FROM lq6_schema_version",
                &[],
            )
            .await?
            .get(0);
        let latest = MIGRATIONS.last().map(|m| m.0).unwrap_or(0);
        if v > latest {
            tx.rollback().await?;
            return Err(StoreError::NewerSchema {
                path: PathBuf::from(&self.name),
                found: v as i64,
                supported: latest as i64,
            });
        }
        for (ver, sql) in MIGRATIONS.iter().filter(|m| m.0 > v) {
            tx.batch_execute(sql).await?;
            tx.execute(
                "INSERT INTO lq6_schema_version(version) VALUES ($1)",
                &[ver],
            )
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// The pool (for diagnostics and tests).
    pub fn pool(&self) -> &Pool {
        &self.pool
    }

    async fn client(&self) -> Result<deadpool_postgres::Object> {
        self.pool.get().await.map_err(pool_err)
    }
}

fn row_binding(r: &Row) -> Result<(u64, Binding)> {
    let id: i64 = r.try_get(0)?;
    let duid: Vec<u8> = r.try_get(1)?;
    let link: String = r.try_get(2)?;
    let la: &[u8] = r.try_get(3)?;
    let cltt: i64 = r.try_get(4)?;
    let seq: i64 = r.try_get(5)?;
    let at: i64 = r.try_get(6)?;
    let data: &[u8] = r.try_get(7)?;
    let (relay, leases) = record::decode(data)?;
    Ok((
        id as u64,
        Binding {
            client: ClientRecord {
                duid,
                link,
                link_address: addr_from(la)?,
                cltt: cltt as u64,
                relay,
                changed_seq: seq as u64,
                changed_at: at as u64,
            },
            leases,
        },
    ))
}

fn boxed(ps: Vec<Param>) -> Vec<Box<dyn ToSql + Sync + Send>> {
    ps.into_iter()
        .map(|p| -> Box<dyn ToSql + Sync + Send> {
            match p {
                Param::Bytes(b) => Box::new(b),
                Param::Text(t) => Box::new(t),
                Param::Int(i) => Box::new(i),
            }
        })
        .collect()
}

fn refs(ps: &[Box<dyn ToSql + Sync + Send>]) -> Vec<&(dyn ToSql + Sync)> {
    ps.iter()
        .map(|b| b.as_ref() as &(dyn ToSql + Sync))
        .collect()
}

/// The address named in an exclusion-violation detail, e.g. `Key (prefix)=(2001:db8::/56) conflicts ...`.
fn conflict_addr(e: &tokio_postgres::Error, plan: &Plan) -> Option<Ipv6Addr> {
    let db = e.as_db_error()?;
    let code = db.code().code();
    if code != "23P01" && code != "23505" {
        return None;
    }
    let from_detail = db.detail().and_then(|d| {
        let i = d.find("(prefix)=(")? + "(prefix)=(".len();
        let rest = &d[i..];
        let end = rest.find(')')?;
        let s = &rest[..end];
        s.split('/').next()?.parse().ok()
    });
    from_detail.or_else(|| plan.addr_put.first().map(|a| a.start))
}

async fn apply(tx: &deadpool_postgres::Transaction<'_>, u: &ClientUpdate) -> Result<CommitInfo> {
    let now = u.now.unwrap_or_else(crate::unix_now) as i64;
    let sel = tx
        .prepare_cached("SELECT id, data FROM lq6_client WHERE duid = $1 AND link = $2 FOR UPDATE")
        .await?;
    for _attempt in 0..3 {
        let row = tx.query_opt(&sel, &[&u.duid, &u.link]).await?;
        let (id, old) = match &row {
            Some(r) => {
                let data: &[u8] = r.try_get(1)?;
                (Some(r.try_get::<_, i64>(0)?), Some(record::decode(data)?))
            }
            None => (None, None),
        };
        let plan = record::plan(old.as_ref().map(|(r, l)| (r, l.as_slice())), u)?;
        let (rent, rid) = match u.relay.as_ref().and_then(|r| r.remote_id.as_ref()) {
            Some(r) => (Some(r.enterprise as i64), Some(r.id.clone())),
            None => (None, None),
        };
        let la = a16(u.link_address).to_vec();
        let cltt = u.cltt.min(i64::MAX as u64) as i64;
        let n_active = plan.n_active as i32;
        let n_leases = plan.n_leases as i32;
        let (id, seq): (i64, i64) = match id {
            Some(id) => {
                let st = tx
                    .prepare_cached(
                        "UPDATE lq6_client SET link_address=$2, cltt=$3, changed_seq=nextval('lq6_change_seq'),
                         changed_at=$4, n_active=$5, n_leases=$6, remote_ent=$7, remote_id=$8, data=$9
                         WHERE id=$1 RETURNING changed_seq",
                    )
                    .await?;
                let r = tx
                    .query_one(
                        &st,
                        &[
                            &id, &la, &cltt, &now, &n_active, &n_leases, &rent, &rid, &plan.data,
                        ],
                    )
                    .await?;
                (id, r.try_get(0)?)
            }
            None => {
                let st = tx
                    .prepare_cached(
                        "INSERT INTO lq6_client(duid, link, link_address, cltt, changed_seq, changed_at, n_active,
                         n_leases, remote_ent, remote_id, data)
                         VALUES ($1,$2,$3,$4,nextval('lq6_change_seq'),$5,$6,$7,$8,$9,$10)
                         ON CONFLICT (duid, link) DO NOTHING RETURNING id, changed_seq",
                    )
                    .await?;
                let r = tx
                    .query_opt(
                        &st,
                        &[
                            &u.duid, &u.link, &la, &cltt, &now, &n_active, &n_leases, &rent, &rid,
                            &plan.data,
                        ],
                    )
                    .await?;
                match r {
                    Some(r) => (r.try_get(0)?, r.try_get(1)?),
                    // Another server inserted this client meanwhile; lock its row and merge again.
                    None => continue,
                }
            }
        };
        if !plan.addr_del.is_empty() || !plan.addr_put.is_empty() {
            let starts: Vec<Vec<u8>> = plan
                .addr_del
                .iter()
                .chain(plan.addr_put.iter().map(|a| &a.start))
                .map(|a| a16(*a).to_vec())
                .collect();
            let st = tx
                .prepare_cached(
                    "DELETE FROM lq6_addr WHERE client = $1 AND start = ANY($2::bytea[])",
                )
                .await?;
            tx.execute(&st, &[&id, &starts]).await?;
        }
        if !plan.addr_put.is_empty() {
            let mut put = plan.addr_put.clone();
            put.sort_by_key(|a| a.start);
            let s: Vec<Vec<u8>> = put.iter().map(|a| a16(a.start).to_vec()).collect();
            let p: Vec<String> = put
                .iter()
                .map(|a| format!("{}/{}", a.start, a.plen))
                .collect();
            let l: Vec<i16> = put.iter().map(|a| a.plen as i16).collect();
            let e: Vec<i64> = put
                .iter()
                .map(|a| a.expires_at.min(i64::MAX as u64) as i64)
                .collect();
            let st = tx
                .prepare_cached(
                    "INSERT INTO lq6_addr(start, prefix, plen, client, expires_at)
                     SELECT s, p::inet, l, $1, e FROM unnest($2::bytea[], $3::text[], $4::int2[], $5::int8[])
                     AS t(s, p, l, e)",
                )
                .await?;
            if let Err(err) = tx.execute(&st, &[&id, &s, &p, &l, &e]).await {
                return Err(match conflict_addr(&err, &plan) {
                    Some(addr) => StoreError::Conflict { addr },
                    None => pg_err(err),
                });
            }
        }
        if !plan.relay_del.is_empty() {
            let st = tx
                .prepare_cached(
                    "DELETE FROM lq6_relay_id WHERE client = $1 AND relay_id = ANY($2::bytea[])",
                )
                .await?;
            tx.execute(&st, &[&id, &plan.relay_del]).await?;
        }
        if !plan.relay_add.is_empty() {
            let st = tx
                .prepare_cached(
                    "INSERT INTO lq6_relay_id(relay_id, client) SELECT r, $1 FROM unnest($2::bytea[]) AS t(r)
                     ON CONFLICT DO NOTHING",
                )
                .await?;
            tx.execute(&st, &[&id, &plan.relay_add]).await?;
        }
        let seq = seq as u64;
        return Ok(CommitInfo {
            seq,
            changed_at: now as u64,
            binding: Binding {
                client: ClientRecord {
                    duid: u.duid.clone(),
                    link: u.link.clone(),
                    link_address: u.link_address,
                    cltt: u.cltt,
                    relay: u.relay.clone(),
                    changed_seq: seq,
                    changed_at: now as u64,
                },
                leases: plan.leases,
            },
        });
    }
    Err(StoreError::Postgres(
        "client row kept changing under us; retry".into(),
    ))
}

#[async_trait::async_trait]
impl LeaseStore for PgStore {
    async fn commit(&self, update: ClientUpdate) -> Result<CommitInfo> {
        let mut c = self.client().await?;
        let tx = c.transaction().await?;
        let ci = apply(&tx, &update).await?;
        tx.commit().await?;
        Ok(ci)
    }

    async fn commit_batch(&self, updates: Vec<ClientUpdate>) -> Result<Vec<Result<CommitInfo>>> {
        let mut c = self.client().await?;
        let mut tx = c.transaction().await?;
        let mut out = Vec::with_capacity(updates.len());
        for u in &updates {
            let sp = tx.savepoint("u").await?;
            match apply(&sp, u).await {
                Ok(ci) => {
                    sp.commit().await?;
                    out.push(Ok(ci));
                }
                Err(e) => {
                    sp.rollback().await?;
                    out.push(Err(e));
                }
            }
        }
        tx.commit().await?;
        Ok(out)
    }

    async fn by_address(&self, addr: Ipv6Addr) -> Result<Option<Binding>> {
        let c = self.client().await?;
        let st = c
            .prepare_cached(&format!(
                "SELECT {COLS} FROM lq6_addr a JOIN lq6_client c ON c.id = a.client
                 WHERE a.prefix >>= $1::text::inet LIMIT 1"
            ))
            .await?;
        let row = c.query_opt(&st, &[&addr.to_string()]).await?;
        match row {
            Some(r) => Ok(Some(row_binding(&r)?.1.active_only())),
            None => Ok(None),
        }
    }

    async fn by_client(&self, duid: &[u8], link: Option<&str>) -> Result<Vec<Binding>> {
        let q = Query::client(duid, link).inactive(true);
        let (sql, ps) =
            crate::sql::build(&q, COLS, None, Some(1 << 30), "lq6_", |i| format!("${i}"));
        let ps = boxed(ps);
        let c = self.client().await?;
        let st = c.prepare_cached(&sql).await?;
        let rows = c.query(&st, &refs(&ps)).await?;
        rows.iter().map(|r| row_binding(r).map(|x| x.1)).collect()
    }

    async fn page(&self, q: &Query, after: Option<Cursor>, limit: usize) -> Result<Page> {
        let limit = limit.max(1);
        let (sql, ps) = crate::sql::build(q, COLS, after, Some(limit), "lq6_", |i| format!("${i}"));
        let ps = boxed(ps);
        let c = self.client().await?;
        let st = c.prepare_cached(&sql).await?;
        let rows = c.query(&st, &refs(&ps)).await?;
        let mut out = Vec::with_capacity(rows.len());
        let mut last = None;
        for r in &rows {
            let (id, b) = row_binding(r)?;
            last = Some(id);
            out.push(if q.include_inactive {
                b
            } else {
                b.active_only()
            });
        }
        let next = if out.len() == limit {
            last.map(Cursor)
        } else {
            None
        };
        Ok(Page {
            bindings: out,
            next,
        })
    }

    async fn changes_since(&self, seq: u64, limit: usize) -> Result<Vec<Binding>> {
        let c = self.client().await?;
        let st = c
            .prepare_cached(&format!(
                "SELECT {COLS} FROM lq6_client c WHERE c.changed_seq > $1 ORDER BY c.changed_seq LIMIT $2"
            ))
            .await?;
        let rows = c
            .query(
                &st,
                &[
                    &(seq.min(i64::MAX as u64) as i64),
                    &(limit.min(i64::MAX as usize) as i64),
                ],
            )
            .await?;
        rows.iter().map(|r| row_binding(r).map(|x| x.1)).collect()
    }

    async fn expire(&self, now: u64) -> Result<u64> {
        let now_i = now.min(i64::MAX as u64) as i64;
        let mut total = 0u64;
        loop {
            let mut c = self.client().await?;
            let tx = c.transaction().await?;
            let ids: Vec<i64> = tx
                .query(
                    "SELECT DISTINCT client FROM lq6_addr WHERE expires_at <= $1 LIMIT 500",
                    &[&now_i],
                )
                .await?
                .iter()
                .map(|r| r.try_get(0))
                .collect::<Result<_, _>>()?;
            if ids.is_empty() {
                return Ok(total);
            }
            let mut n = 0u64;
            let sel = tx
                .prepare_cached(&format!(
                    "SELECT {COLS} FROM lq6_client c WHERE c.id = $1 FOR UPDATE SKIP LOCKED"
                ))
                .await?;
            for id in ids {
                let Some(row) = tx.query_opt(&sel, &[&id]).await? else {
                    continue;
                };
                let b = row_binding(&row)?.1;
                let mut leases = b.leases;
                let mut changed = 0;
                for l in leases.iter_mut() {
                    if l.state == LeaseState::Active && l.expires_at <= now {
                        l.state = LeaseState::Expired;
                        changed += 1;
                    }
                }
                if changed == 0 {
                    continue;
                }
                let u = ClientUpdate {
                    duid: b.client.duid,
                    link: b.client.link,
                    link_address: b.client.link_address,
                    cltt: b.client.cltt,
                    relay: b.client.relay,
                    leases,
                    merge: LeaseMerge::Replace,
                    now: Some(now),
                };
                apply(&tx, &u).await?;
                n += changed;
            }
            tx.commit().await?;
            total += n;
            if n == 0 {
                // Everything left is locked by other servers expiring it right now.
                return Ok(total);
            }
        }
    }

    async fn active_in_range(
        &self,
        start: Ipv6Addr,
        end: Ipv6Addr,
        after: Option<Ipv6Addr>,
        limit: usize,
    ) -> Result<Vec<ActiveLease>> {
        let c = self.client().await?;
        let st = c
            .prepare_cached(
                "SELECT a.start, a.plen, a.expires_at, c.duid, c.link FROM lq6_addr a JOIN lq6_client c ON c.id = a.client
                 WHERE a.start >= $1 AND a.start <= $2 AND ($3::bytea IS NULL OR a.start > $3) ORDER BY a.start LIMIT $4",
            )
            .await?;
        let after = after.map(|a| a16(a).to_vec());
        let rows = c
            .query(
                &st,
                &[
                    &a16(start).to_vec(),
                    &a16(end).to_vec(),
                    &after,
                    &(limit.min(i64::MAX as usize) as i64),
                ],
            )
            .await?;
        rows.iter()
            .map(|r| {
                let s: &[u8] = r.try_get(0)?;
                Ok(ActiveLease {
                    addr: addr_from(s)?,
                    prefix_len: r.try_get::<_, i16>(1)?.clamp(0, 128) as u8,
                    expires_at: r.try_get::<_, i64>(2)? as u64,
                    duid: r.try_get(3)?,
                    link: r.try_get(4)?,
                })
            })
            .collect()
    }

    async fn count(&self, q: &Query) -> Result<u64> {
        let (sql, ps) = crate::sql::build(q, "count(*)", None, None, "lq6_", |i| format!("${i}"));
        let ps = boxed(ps);
        let c = self.client().await?;
        let st = c.prepare_cached(&sql).await?;
        let n: i64 = c.query_one(&st, &refs(&ps)).await?.try_get(0)?;
        Ok(n as u64)
    }

    async fn stats(&self) -> Result<Stats> {
        let c = self.client().await?;
        let r = c
            .query_one(
                "SELECT count(*), count(*) FILTER (WHERE n_active > 0), coalesce(sum(n_leases), 0)::bigint,
                        coalesce(sum(n_active), 0)::bigint, coalesce(max(changed_seq), 0)::bigint FROM lq6_client",
                &[],
            )
            .await?;
        Ok(Stats {
            bindings: r.try_get::<_, i64>(0)? as u64,
            active_bindings: r.try_get::<_, i64>(1)? as u64,
            leases: r.try_get::<_, i64>(2)? as u64,
            active_leases: r.try_get::<_, i64>(3)? as u64,
            last_seq: r.try_get::<_, i64>(4)? as u64,
        })
    }
}
