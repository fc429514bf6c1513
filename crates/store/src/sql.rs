//! SQL text for the bulk queries, shared by the SQLite and PostgreSQL backends.
//!
//! Every query walks one index in binding row id order (`id > cursor ORDER BY id LIMIT n`), so that each
//! page is an independent short read and a cursor stays valid across pages and restarts.

use crate::{Cursor, Query, Selector};

/// A query parameter.
#[derive(Debug, Clone)]
pub(crate) enum Param {
    Bytes(Vec<u8>),
    Text(String),
    Int(i64),
}

fn clamp(v: u64) -> i64 {
    v.min(i64::MAX as u64) as i64
}

/// Build `SELECT {head} FROM ... WHERE ... [ORDER BY id LIMIT n]`. Tables are `{prefix}client` and
/// `{prefix}relay_id`, aliased `c` and `r`; `ph(i)` renders the i-th (1-based) placeholder.
pub(crate) fn build(
    q: &Query,
    head: &str,
    after: Option<Cursor>,
    limit: Option<usize>,
    prefix: &str,
    ph: impl Fn(usize) -> String,
) -> (String, Vec<Param>) {
    let mut params: Vec<Param> = Vec::new();
    let mut w: Vec<String> = Vec::new();
    let p = |v: Param, params: &mut Vec<Param>| {
        params.push(v);
        ph(params.len())
    };
    let (from, idcol, link) = match &q.select {
        Selector::ByRelayId { relay_id, link } => {
            let x = p(Param::Bytes(relay_id.clone()), &mut params);
            w.push(format!("r.relay_id = {x}"));
            (
                format!("{prefix}relay_id r JOIN {prefix}client c ON c.id = r.client"),
                "r.client",
                link.clone(),
            )
        }
        Selector::ByLink(l) => (format!("{prefix}client c"), "c.id", Some(l.clone())),
        Selector::ByRemoteId {
            enterprise,
            id,
            link,
        } => {
            let x = p(Param::Bytes(id.clone()), &mut params);
            let e = p(Param::Int(*enterprise as i64), &mut params);
            w.push(format!("c.remote_id = {x} AND c.remote_ent = {e}"));
            (format!("{prefix}client c"), "c.id", link.clone())
        }
        Selector::ByClient { duid, link } => {
            let x = p(Param::Bytes(duid.clone()), &mut params);
            w.push(format!("c.duid = {x}"));
            (format!("{prefix}client c"), "c.id", link.clone())
        }
        Selector::All => (format!("{prefix}client c"), "c.id", None),
    };
    if let Some(l) = link {
        let x = p(Param::Text(l), &mut params);
        w.push(format!("c.link = {x}"));
    }
    if !q.include_inactive {
        w.push("c.n_active > 0".into());
    }
    if let Some(t) = q.changed_since {
        let x = p(Param::Int(clamp(t)), &mut params);
        w.push(format!("c.changed_at >= {x}"));
    }
    if let Some(t) = q.changed_until {
        let x = p(Param::Int(clamp(t)), &mut params);
        w.push(format!("c.changed_at <= {x}"));
    }
    if let Some(Cursor(a)) = after {
        let x = p(Param::Int(clamp(a)), &mut params);
        w.push(format!("{idcol} > {x}"));
    }
    let mut sql = format!("SELECT {head} FROM {from}");
    if !w.is_empty() {
        sql.push_str(" WHERE ");
        sql.push_str(&w.join(" AND "));
    }
    if let Some(n) = limit {
        let x = p(Param::Int(clamp(n as u64)), &mut params);
        sql.push_str(&format!(" ORDER BY {idcol} LIMIT {x}"));
    }
    (sql, params)
}
