//! lq6 lease store: the binding database behind the DHCPv6 server and the leasequery responders.
//!
//! # Layout
//! - [`model`]: bindings, leases, relay data (plain bytes and `Ipv6Addr`, independent of the codec).
//! - [`LeaseStore`]: the async trait every engine uses (`Arc<dyn LeaseStore>`).
//! - [`view`]: borrowed, allocation-free views of bindings for [`LeaseStore::page_visit`].
//! - [`sqlite`]: embedded default (SQLite, WAL, pipelined group commit: one writer thread, one WAL-fsync thread).
//! - [`postgres`]: shared backend for several lq6 servers (tokio-postgres + deadpool, versioned migrations).
//! - [`kea`]: import of a Kea memfile lease6 CSV.
//! - `record` (private): the compact record format shared by both backends and the merge rules.
//!
//! One *binding* is one client (DUID) on one link; it maps 1:1 to one CLIENT_DATA option
//! (RFC 5007 §4.1.2.2, RFC 5460 §5.3: "one client on one link").
//!
//! # Why SQLite for the embedded backend
//! SQLite gives transactions, secondary indexes and range scans with cheap short read transactions
//! (WAL readers never block the writer and pin nothing after they finish), a file format that is stable
//! and inspectable with standard tools, `application_id`/`user_version` header fields to recognise our
//! own files, and crash safety that has been tested for decades. redb would also work, but every
//! secondary index (relay-id, remote-id, link, duid, address ranges, expiry, change sequence) would
//! have to be maintained by hand. Group commit is done above SQLite: one writer thread commits every
//! queued update in one transaction and one fsync.

// The one exception is `wal_vfs`, a thin SQLite VFS (FFI by nature).
#![deny(unsafe_code)]

mod addr_index;
pub mod kea;
pub mod model;
pub mod postgres;
mod record;
mod sql;
pub mod sqlite;
pub mod view;
mod wal_vfs;

use std::net::Ipv6Addr;
use std::path::PathBuf;
use std::sync::Arc;

use futures::Stream;

pub use model::*;
pub use view::{BindingView, LeaseView, Leases, RelayIds, RelayView};

/// Result type of the store.
pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// Errors of the lease store.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The address or prefix is held Active by another binding (another client, or the same client on
    /// another link). Nothing was changed; the caller should retry with another candidate.
    #[error("address {addr} is already held by another client")]
    Conflict { addr: Ipv6Addr },
    /// The file exists but is not an lq6 lease store.
    #[error("{}: not an lq6 lease store: {reason}", path.display())]
    NotOurs { path: PathBuf, reason: String },
    /// The store was written by a newer lq6 (schema version too high).
    #[error("{}: lease store schema version {found} is newer than the supported version {supported}", path.display())]
    NewerSchema {
        path: PathBuf,
        found: i64,
        supported: i64,
    },
    /// The file is ours but damaged (truncated, unreadable).
    #[error("{}: lease store is corrupt: {reason}", path.display())]
    CorruptFile { path: PathBuf, reason: String },
    /// A stored record could not be decoded.
    #[error("corrupt record: {0}")]
    Corrupt(String),
    /// The caller passed an invalid value (e.g. a prefix length over 128).
    #[error("invalid input: {0}")]
    Invalid(String),
    /// SQLite reported an error.
    #[error("sqlite: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// PostgreSQL reported an error or is unreachable.
    #[error("postgres: {0}")]
    Postgres(String),
    /// The transaction holding this update failed to commit (the whole group was rolled back).
    #[error("commit failed: {0}")]
    CommitFailed(String),
    /// The store was closed (writer thread gone).
    #[error("lease store is closed")]
    Closed,
    /// An I/O error on the store file.
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// What `page()` and `count()` select. Each variant is one of the RFC 5007/5460 query types.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Selector {
    /// RFC 5460 QUERY_BY_RELAY_ID: bindings whose last relay chain carried this RELAY_ID DUID.
    ByRelayId {
        relay_id: Vec<u8>,
        link: Option<String>,
    },
    /// RFC 5460 QUERY_BY_LINK_ADDRESS, after the caller mapped the link-address to a configured link.
    ByLink(String),
    /// RFC 5460 QUERY_BY_REMOTE_ID: the most recent Remote-ID (enterprise number and opaque bytes).
    ByRemoteId {
        enterprise: u32,
        id: Vec<u8>,
        link: Option<String>,
    },
    /// RFC 5007 QUERY_BY_CLIENTID.
    ByClient { duid: Vec<u8>, link: Option<String> },
    /// Every binding.
    All,
}

/// A bulk query: a selector plus filters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Query {
    pub select: Selector,
    /// Only bindings whose last change is at or after this time (RFC 7653 LQ_START_TIME), unix seconds.
    pub changed_since: Option<u64>,
    /// Only bindings whose last change is at or before this time (RFC 7653 LQ_END_TIME), unix seconds.
    pub changed_until: Option<u64>,
    /// Also return bindings without an Active lease, with all their leases. By default only bindings with
    /// at least one Active lease are returned, and only their Active leases (RFC 5007 §4.4.2: valid > 0).
    pub include_inactive: bool,
}

impl Query {
    /// A query with no time filter and only active leases.
    pub fn new(select: Selector) -> Self {
        Query {
            select,
            changed_since: None,
            changed_until: None,
            include_inactive: false,
        }
    }
    pub fn relay_id(relay_id: impl Into<Vec<u8>>, link: Option<&str>) -> Self {
        Self::new(Selector::ByRelayId {
            relay_id: relay_id.into(),
            link: link.map(str::to_owned),
        })
    }
    pub fn link(link: &str) -> Self {
        Self::new(Selector::ByLink(link.to_owned()))
    }
    pub fn remote_id(enterprise: u32, id: impl Into<Vec<u8>>, link: Option<&str>) -> Self {
        Self::new(Selector::ByRemoteId {
            enterprise,
            id: id.into(),
            link: link.map(str::to_owned),
        })
    }
    pub fn client(duid: impl Into<Vec<u8>>, link: Option<&str>) -> Self {
        Self::new(Selector::ByClient {
            duid: duid.into(),
            link: link.map(str::to_owned),
        })
    }
    pub fn all() -> Self {
        Self::new(Selector::All)
    }
    pub fn since(mut self, t: u64) -> Self {
        self.changed_since = Some(t);
        self
    }
    pub fn until(mut self, t: u64) -> Self {
        self.changed_until = Some(t);
        self
    }
    pub fn inactive(mut self, yes: bool) -> Self {
        self.include_inactive = yes;
        self
    }
}

/// Resume point of a paged query: opaque, valid across calls and store restarts (the internal binding
/// row id; bindings are returned in increasing row id order).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Cursor(pub u64);

/// One page of a bulk query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page {
    pub bindings: Vec<Binding>,
    /// `Some` when there may be more; pass it as `after` to get the next page.
    pub next: Option<Cursor>,
}

/// The result of a successful commit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommitInfo {
    /// The binding's new change sequence number (store-wide, increasing).
    pub seq: u64,
    /// Unix seconds of the change.
    pub changed_at: u64,
    /// The binding as stored after the commit (all leases, including inactive ones), e.g. for
    /// Active Leasequery fan-out (RFC 7653).
    pub binding: Binding,
}

/// An active lease inside an address range, for a server learning which pool entries are taken.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ActiveLease {
    pub addr: Ipv6Addr,
    pub prefix_len: u8,
    pub expires_at: u64,
    pub duid: Vec<u8>,
    pub link: String,
}

/// Store-wide counters.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Stats {
    pub bindings: u64,
    pub active_bindings: u64,
    pub leases: u64,
    pub active_leases: u64,
    /// The highest change sequence number in the store (0 when empty).
    pub last_seq: u64,
}

/// The lease store used by every engine. All writes are durable before they return.
#[async_trait::async_trait]
pub trait LeaseStore: Send + Sync + 'static {
    /// Atomically upsert one binding (client record and leases); durable before it returns.
    /// Fails with [`StoreError::Conflict`] and changes nothing if an Active address/prefix of the update
    /// is held Active by another binding (RFC 8415 §18.3: one address, one client).
    async fn commit(&self, update: ClientUpdate) -> Result<CommitInfo>;

    /// Commit many updates in one transaction (import, bulk changes). Each update succeeds or fails on
    /// its own (a conflict on one does not abort the others); the outer error means none was committed.
    async fn commit_batch(&self, updates: Vec<ClientUpdate>) -> Result<Vec<Result<CommitInfo>>>;

    /// RFC 5007 QUERY_BY_ADDRESS: the binding holding `addr` Active, either the exact address or an
    /// active delegated prefix that contains it. Only Active leases are returned.
    async fn by_address(&self, addr: Ipv6Addr) -> Result<Option<Binding>>;

    /// RFC 5007 QUERY_BY_CLIENTID: the client's bindings, one per link (all links when `link` is None).
    /// Includes inactive leases; callers filter with [`Binding::active_only`].
    async fn by_client(&self, duid: &[u8], link: Option<&str>) -> Result<Vec<Binding>>;

    /// One page of a bulk query, in stable order, each page its own short read.
    async fn page(&self, q: &Query, after: Option<Cursor>, limit: usize) -> Result<Page>;

    /// The same page as [`page`](Self::page), but each binding is handed to `visit` as a borrowed
    /// [`BindingView`] instead of being collected: no per-binding allocation where the backend supports
    /// it (SQLite on a multi-thread runtime decodes each row in place). Same selection, order and
    /// filtering as `page()`: without `include_inactive` only bindings with an Active lease are visited
    /// and their views yield only Active leases, so `view.to_owned()` equals the binding `page()`
    /// returns. Returns what `page()` returns as [`Page::next`].
    ///
    /// `visit` runs synchronously while the page is read (possibly on a thread where blocking is
    /// allowed, with a read transaction open): it should be quick and must not block on the store.
    /// On an error the page may have been visited partly.
    ///
    /// The default implementation calls `page()` and visits views of the owned bindings.
    async fn page_visit(
        &self,
        q: &Query,
        after: Option<Cursor>,
        limit: usize,
        visit: &mut (dyn for<'r, 'v> FnMut(&'r BindingView<'v>) + Send),
    ) -> Result<Option<Cursor>> {
        let p = self.page(q, after, limit).await?;
        for b in &p.bindings {
            visit(&b.view());
        }
        Ok(p.next)
    }

    /// Bindings changed after `seq`, in change order (RFC 7653 catch-up), including inactive leases.
    async fn changes_since(&self, seq: u64, limit: usize) -> Result<Vec<Binding>>;

    /// Mark Active leases whose `expires_at <= now` as Expired (reclaim) and bump their bindings'
    /// change sequence. Returns the number of leases expired.
    async fn expire(&self, now: u64) -> Result<u64>;

    /// Active leases whose address/prefix start lies in `start..=end`, ordered by address, starting
    /// after `after`. For a server learning at startup which pool addresses/prefixes are taken.
    async fn active_in_range(
        &self,
        start: Ipv6Addr,
        end: Ipv6Addr,
        after: Option<Ipv6Addr>,
        limit: usize,
    ) -> Result<Vec<ActiveLease>>;

    /// Number of bindings the query would return.
    async fn count(&self, q: &Query) -> Result<u64>;

    /// Store-wide counters.
    async fn stats(&self) -> Result<Stats>;
}

/// Stream every binding a query selects, fetching `page_size` at a time; at most one page is buffered,
/// and no transaction or lock is held between pages.
pub fn stream(
    store: Arc<dyn LeaseStore>,
    q: Query,
    page_size: usize,
) -> impl Stream<Item = Result<Binding>> + Send + 'static {
    struct St {
        store: Arc<dyn LeaseStore>,
        q: Query,
        page_size: usize,
        buf: std::vec::IntoIter<Binding>,
        after: Option<Cursor>,
        done: bool,
    }
    let st = St {
        store,
        q,
        page_size: page_size.max(1),
        buf: Vec::new().into_iter(),
        after: None,
        done: false,
    };
    futures::stream::unfold(st, |mut st| async move {
        loop {
            if let Some(b) = st.buf.next() {
                return Some((Ok(b), st));
            }
            if st.done {
                return None;
            }
            match st.store.page(&st.q, st.after, st.page_size).await {
                Ok(p) => {
                    st.after = p.next;
                    st.done = p.next.is_none();
                    st.buf = p.bindings.into_iter();
                }
                Err(e) => {
                    st.done = true;
                    return Some((Err(e), st));
                }
            }
        }
    })
}

/// Current unix time in seconds.
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}
