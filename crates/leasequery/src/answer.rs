//! Looking a validated request up in the lease store.

use crate::encode::has_live_lease;
use crate::request::{Request, Target};
use lq6_store::{Binding, LeaseStore, Query, StoreError};

/// Where the bindings for a request come from.
pub enum Source {
    /// A handful of bindings (by address, by client).
    Few(Vec<Binding>),
    /// A bulk scan, paged from the store (RFC 5460 relay-id, link, remote-id).
    Scan(Query),
}

fn in_window(b: &Binding, r: &Request) -> bool {
    r.since.is_none_or(|t| b.client.changed_at >= t)
        && r.until.is_none_or(|t| b.client.changed_at <= t)
}

pub async fn lookup(store: &dyn LeaseStore, r: &Request, now: u64) -> Result<Source, StoreError> {
    let keep = |b: &Binding| has_live_lease(b, now) && in_window(b, r);
    Ok(match &r.target {
        Target::Address { addr, link } => {
            // by_address returns only Active leases (LeaseStore contract).
            let found = store.by_address(*addr).await?;
            Source::Few(
                found
                    .filter(|b| link.as_ref().is_none_or(|l| &b.client.link == l))
                    .filter(keep)
                    .into_iter()
                    .collect(),
            )
        }
        Target::Client { duid, link } => Source::Few(
            store
                .by_client(duid, link.as_deref())
                .await?
                .into_iter()
                .map(Binding::active_only)
                .filter(keep)
                .collect(),
        ),
        Target::RelayId { relay_id, link } => Source::Scan(windowed(
            Query::relay_id(relay_id.clone(), link.as_deref()),
            r,
        )),
        Target::Link(l) => Source::Scan(windowed(Query::link(l), r)),
        Target::RemoteId {
            enterprise,
            id,
            link,
        } => Source::Scan(windowed(
            Query::remote_id(*enterprise, id.clone(), link.as_deref()),
            r,
        )),
    })
}

fn windowed(mut q: Query, r: &Request) -> Query {
    q.changed_since = r.since;
    q.changed_until = r.until;
    q
}
