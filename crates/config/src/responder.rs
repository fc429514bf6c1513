//! The `[leasequery]` and `[metrics]` sections: RFC 5007 UDP leasequery and
//! the RFC 5460 Bulk Leasequery TCP responder.

use ipnet::Ipv6Net;
use serde::Deserialize;
use std::net::SocketAddr;

/// `[leasequery]`. Lease data is private, so every requestor is denied
/// unless its source address is inside `allow` (loopback only by default).
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct LeasequeryConfig {
    /// Answer LEASEQUERY on the DHCPv6 UDP socket (RFC 5007).
    pub udp: bool,
    /// Answer a LEASEQUERY that arrived inside RELAY-FORW (RFC 5007 §5 lets a server refuse).
    pub allow_relayed: bool,
    /// Requestor source prefixes allowed to query (UDP and TCP).
    pub allow: Vec<Ipv6Net>,
    /// Option codes never returned in CLIENT_DATA even when the ORO asks (RFC 5007 §4.4.2).
    pub sensitive_options: Vec<u16>,
    /// Per-requestor policies; the most specific matching prefix wins.
    pub requestors: Vec<RequestorPolicy>,
    pub tcp: BulkConfig,
}

impl Default for LeasequeryConfig {
    fn default() -> Self {
        LeasequeryConfig {
            udp: true,
            allow_relayed: true,
            allow: vec![Ipv6Net::new(std::net::Ipv6Addr::LOCALHOST, 128).expect("valid /128")],
            sensitive_options: Vec::new(),
            requestors: Vec::new(),
            tcp: BulkConfig::default(),
        }
    }
}

/// `[leasequery.tcp]`: Bulk Leasequery (RFC 5460 §5.6 defaults).
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct BulkConfig {
    pub enabled: bool,
    /// Addresses to listen on for TCP (port 547, RFC 5460 §5.6).
    pub listen: Vec<SocketAddr>,
    /// BULK_LQ_MAX_CONNS.
    pub max_connections: usize,
    /// Connections one requestor address may hold.
    pub max_connections_per_requestor: usize,
    /// Queries processed in parallel on one connection; no more are read (§7.3).
    pub max_queries_per_connection: usize,
    /// BULK_LQ_DATA_TIMEOUT, seconds: blocked reads, blocked writes, idle connections.
    pub data_timeout_secs: u64,
    /// Largest accepted query frame.
    pub max_frame: usize,
    /// Encoded reply octets buffered per connection before the writer waits for the peer.
    pub write_buffer_bytes: usize,
    /// Bindings fetched from the store per page.
    pub page_size: usize,
}

impl Default for BulkConfig {
    fn default() -> Self {
        BulkConfig {
            enabled: true,
            listen: vec!["[::]:547".parse().expect("valid socket address")],
            max_connections: 10,
            max_connections_per_requestor: 10,
            max_queries_per_connection: 4,
            data_timeout_secs: 300,
            max_frame: 65535,
            write_buffer_bytes: 256 * 1024,
            page_size: 2048,
        }
    }
}

/// `[[leasequery.requestors]]`: restrictions for requestors inside `prefix`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RequestorPolicy {
    pub prefix: Ipv6Net,
    /// Query types allowed (names: address, client-id, relay-id, link-address, remote-id);
    /// others get NotAllowed. Absent means all.
    #[serde(default)]
    pub query_types: Option<Vec<QueryTypeName>>,
    #[serde(default)]
    pub max_connections: Option<usize>,
    #[serde(default)]
    pub max_queries: Option<usize>,
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum QueryTypeName {
    Address,
    ClientId,
    RelayId,
    LinkAddress,
    RemoteId,
}

/// `[metrics]`: a Prometheus text endpoint, off unless `listen` is set.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsConfig {
    pub listen: Option<SocketAddr>,
}
