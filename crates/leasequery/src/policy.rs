//! Who may ask what (RFC 5460 §5.6, §8; RFC 5007 §5): an allow-list of
//! requestor prefixes, loopback only by default, and optional per-requestor
//! restrictions on query types and on connection and query counts.

use ipnet::Ipv6Net;
use lq6_config::{LeasequeryConfig, QueryTypeName};
use lq6_proto::QueryType;
use std::net::{IpAddr, Ipv6Addr};

/// The limits that apply to one requestor address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    pub allowed: bool,
    pub query_types: Option<Vec<QueryType>>,
    pub max_connections: usize,
    pub max_queries: usize,
}

impl Policy {
    pub fn allows_type(&self, t: QueryType) -> bool {
        self.query_types.as_ref().is_none_or(|v| v.contains(&t))
    }
}

/// IPv4 peers on a dual-stack socket appear as `::ffff:a.b.c.d`.
pub fn as_v6(ip: IpAddr) -> Ipv6Addr {
    match ip {
        IpAddr::V6(a) => a,
        IpAddr::V4(a) => a.to_ipv6_mapped(),
    }
}

fn to_query_type(n: QueryTypeName) -> QueryType {
    match n {
        QueryTypeName::Address => QueryType::ByAddress,
        QueryTypeName::ClientId => QueryType::ByClientId,
        QueryTypeName::RelayId => QueryType::ByRelayId,
        QueryTypeName::LinkAddress => QueryType::ByLinkAddress,
        QueryTypeName::RemoteId => QueryType::ByRemoteId,
    }
}

/// Resolves the policy for `peer` from the configuration.
pub fn policy_for(cfg: &LeasequeryConfig, peer: IpAddr) -> Policy {
    let ip = as_v6(peer);
    let allowed = cfg.allow.iter().any(|n: &Ipv6Net| n.contains(&ip));
    let specific = cfg
        .requestors
        .iter()
        .filter(|r| r.prefix.contains(&ip))
        .max_by_key(|r| r.prefix.prefix_len());
    Policy {
        allowed,
        query_types: specific
            .and_then(|r| r.query_types.as_ref())
            .map(|v| v.iter().copied().map(to_query_type).collect()),
        max_connections: specific
            .and_then(|r| r.max_connections)
            .unwrap_or(cfg.tcp.max_connections_per_requestor),
        max_queries: specific
            .and_then(|r| r.max_queries)
            .unwrap_or(cfg.tcp.max_queries_per_connection)
            .max(1),
    }
}
