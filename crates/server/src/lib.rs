//! # lq6-server: the DHCPv6 server (RFC 8415)
//!
//! # Layout
//! - [`engine`]: validation, relay handling, link selection, allocation and replies. No sockets,
//!   no clock: every entry point takes `now`, so it is tested on decoded bytes.
//! - `pool` (private): in-memory allocators per pool, seeded from the store at startup.
//! - [`links`]: the link table and the [`lq6_leasequery::LinkMap`] for the responder.
//! - [`counters`]: drop reasons and message counts for the metrics endpoint.
//! - [`udp`]: sockets (unicast listen addresses, ff02::1:2 on interfaces) and the receive loop.
//! - [`duid`]: the server DUID, generated once and persisted.
//! - [`serve`]: what `lq6 serve` runs (store, DUID, engine, responder, sockets).
//! - `src/bin/lq6-testbin.rs`: a server launcher and a test relay (Relay-ID, Remote-ID, RELAY_PORT)
//!   for the interop tests in network namespaces.
//!
//! Durability: a lease is committed to the store before the REPLY announcing it is built.

mod cache;
pub mod counters;
pub mod duid;
pub mod engine;
pub mod links;
mod pool;
pub mod serve;
pub mod udp;

pub use counters::Counters;
pub use engine::{Engine, EngineError, EngineOptions, Outgoing, RecvMeta};
pub use links::LinkTable;

impl EngineOptions {
    /// Options from the config; `cache_authoritative` is true for the embedded store.
    pub fn from_config(cfg: &lq6_config::Config) -> EngineOptions {
        EngineOptions {
            preference: cfg.server.preference,
            information_refresh_time: cfg.server.information_refresh_time,
            decline_quarantine: cfg.lease.decline_quarantine,
            cache_authoritative: cfg.store.postgres.is_none(),
            log_transactions: true,
        }
    }
}
