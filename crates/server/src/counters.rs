//! Counters for every drop reason and every message handled, readable by the metrics endpoint.

use std::sync::atomic::{AtomicU64, Ordering};

macro_rules! counters {
    ($( $(#[$m:meta])* $name:ident ),* $(,)?) => {
        /// Server counters (monotonic). Read with [`Counters::snapshot`].
        #[derive(Debug, Default)]
        pub struct Counters {
            $( $(#[$m])* pub $name: AtomicU64, )*
        }
        impl Counters {
            /// Every counter as (name, value), for a metrics exporter.
            pub fn snapshot(&self) -> Vec<(&'static str, u64)> {
                vec![$( (stringify!($name), self.$name.load(Ordering::Relaxed)), )*]
            }
        }
    };
}

counters! {
    /// Datagrams received.
    received,
    /// Replies sent (ADVERTISE, REPLY, RELAY-REPL, LEASEQUERY-REPLY).
    sent,
    /// Truncated or otherwise undecodable messages (RFC 8415 §16).
    drop_malformed,
    /// Options with a length that does not fit their type.
    drop_bad_option_length,
    /// Unknown msg-types, or types a server never consumes (ADVERTISE, REPLY, RELAY-REPL, ...).
    drop_unknown_type,
    /// Relay chains deeper than HOP_COUNT_LIMIT (RFC 8415 §7.6).
    drop_relay_too_deep,
    /// A RELAY-FORW without RELAY_MSG, or relaying something that is not a client message.
    drop_bad_relay,
    /// A client message carrying relay-only options (Interface-ID, Remote-ID, ...).
    drop_relay_only_option,
    /// RFC 8415 §16 discard rules (missing CLIENTID, SERVERID present or missing, IA in INFORMATION-REQUEST, ...).
    drop_invalid,
    /// SERVERID names another server.
    drop_not_for_us,
    /// SOLICIT, CONFIRM or REBIND sent to a unicast address (RFC 8415 §16).
    drop_unicast,
    /// No configured link matches the relay link-address or the interface.
    drop_no_link,
    /// A retransmission arrived while the same client's transaction was in flight.
    drop_busy,
    /// The lease store failed; the client will retransmit.
    drop_store_error,
    /// CONFIRM or REBIND with nothing to answer (RFC 8415 §18.3.3, §18.3.5).
    drop_nothing_to_say,
    /// LEASEQUERY over UDP that the responder dropped or that is disabled.
    drop_leasequery,
    /// Transactions refused because `max_in_flight` was reached.
    drop_overload,
    /// Errors from sendto.
    send_errors,
    solicit,
    request,
    confirm,
    renew,
    rebind,
    release,
    decline,
    information_request,
    leasequery,
    /// IAs answered NoAddrsAvail / NoPrefixAvail.
    no_addrs_avail,
    /// Store Conflict errors retried with another candidate.
    store_conflicts,
    /// Leases reclaimed by the background task.
    reclaimed,
}

impl Counters {
    #[inline]
    pub(crate) fn inc(c: &AtomicU64) {
        c.fetch_add(1, Ordering::Relaxed);
    }
}
