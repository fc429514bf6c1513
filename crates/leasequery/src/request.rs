//! Turning a LEASEQUERY into a validated [`Request`], shared by UDP and TCP.
//! RFC 5007 §4.2.1 (validation), §4.3.x (query types), RFC 5460 §4 (bulk-only
//! types over UDP), RFC 7653 §6.3 (time options, top level or in LQ_QUERY).

use crate::policy::Policy;
use crate::LinkMap;
use lq6_proto::types::dhcp_time_to_unix;
use lq6_proto::{
    code, ClientMessage, DhcpOption, Duid, MessageType, OptionsExt, QueryType, Status,
};
use std::net::Ipv6Addr;

/// The transport a query arrived on: bulk-only query types need TCP.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    Udp,
    Tcp,
}

/// What to look up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// QUERY_BY_ADDRESS; `link` set when the query named a configured link.
    Address {
        addr: Ipv6Addr,
        link: Option<String>,
    },
    /// QUERY_BY_CLIENTID; `link` None means all links.
    Client {
        duid: Vec<u8>,
        link: Option<String>,
    },
    RelayId {
        relay_id: Vec<u8>,
        link: Option<String>,
    },
    Link(String),
    RemoteId {
        enterprise: u32,
        id: Vec<u8>,
        link: Option<String>,
    },
}

/// A query that passed validation.
#[derive(Debug, Clone)]
pub struct Request {
    pub xid: u32,
    pub query_type: QueryType,
    /// The requestor's CLIENTID, echoed in the REPLY.
    pub requestor: Duid,
    pub target: Target,
    /// The union of the ORO inside LQ_QUERY and a top-level ORO.
    pub oro: Vec<u16>,
    /// RFC 7653 LQ_START_TIME / LQ_END_TIME as unix seconds.
    pub since: Option<u64>,
    pub until: Option<u64>,
}

/// Why a query gets no data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rejection {
    /// Drop without an answer (RFC 5007 §4.2.1).
    Discard(&'static str),
    /// Answer with this status and no data. `requestor` is echoed if known.
    Status {
        status: Status,
        text: String,
        requestor: Option<Duid>,
    },
}

fn refuse(status: Status, text: impl Into<String>, requestor: &Duid) -> Rejection {
    Rejection::Status {
        status,
        text: text.into(),
        requestor: Some(requestor.clone()),
    }
}

/// Validates `m` (a LEASEQUERY) from a requestor whose `policy` applies.
pub fn parse(
    m: &ClientMessage,
    transport: Transport,
    our_duid: &Duid,
    links: &dyn LinkMap,
    policy: &Policy,
) -> Result<Request, Rejection> {
    if m.msg_type != MessageType::LEASEQUERY {
        return Err(Rejection::Discard("not a LEASEQUERY"));
    }
    let opts = m.options.as_slice();
    let Some(requestor) = opts.client_id().cloned() else {
        return Err(match transport {
            Transport::Udp => Rejection::Discard("no CLIENTID"),
            Transport::Tcp => Rejection::Status {
                status: Status::MalformedQuery,
                text: "LEASEQUERY without CLIENTID".into(),
                requestor: None,
            },
        });
    };
    if let Some(sid) = opts.server_id() {
        if sid != our_duid {
            return Err(match transport {
                Transport::Udp => Rejection::Discard("SERVERID is another server's"),
                Transport::Tcp => refuse(
                    Status::NotAllowed,
                    "SERVERID names another server",
                    &requestor,
                ),
            });
        }
    }
    let Some(q) = opts.iter().find_map(|o| match o {
        DhcpOption::LqQuery(q) => Some(q),
        _ => None,
    }) else {
        return Err(match transport {
            Transport::Udp => Rejection::Discard("no LQ_QUERY"),
            Transport::Tcp => refuse(Status::MalformedQuery, "no LQ_QUERY", &requestor),
        });
    };
    if let QueryType::Other(n) = q.query_type {
        return Err(refuse(
            Status::UnknownQueryType,
            format!("query-type {n} is not supported"),
            &requestor,
        ));
    }
    if transport == Transport::Udp && q.query_type.is_bulk_only() {
        // RFC 5460 §4: these types are only defined for Bulk Leasequery over TCP.
        return Err(refuse(
            Status::NotAllowed,
            format!("{} needs TCP (RFC 5460)", q.query_type),
            &requestor,
        ));
    }
    if !policy.allows_type(q.query_type) {
        return Err(refuse(
            Status::NotAllowed,
            format!("{} is not allowed for this requestor", q.query_type),
            &requestor,
        ));
    }

    let qopts = q.options.as_slice();
    let mut oro: Vec<u16> = qopts.oro().unwrap_or(&[]).to_vec();
    oro.extend_from_slice(opts.oro().unwrap_or(&[]));
    let time = |c: u16| {
        qopts.iter().chain(opts.iter()).find_map(|o| match (o, c) {
            (DhcpOption::LqStartTime(t), code::LQ_START_TIME) => Some(dhcp_time_to_unix(*t)),
            (DhcpOption::LqEndTime(t), code::LQ_END_TIME) => Some(dhcp_time_to_unix(*t)),
            _ => None,
        })
    };
    let since = time(code::LQ_START_TIME);
    let until = time(code::LQ_END_TIME);

    let link_addr = q.link_address;
    // A non-zero link-address must name a configured link (RFC 5007 §4.3.3).
    let link = if link_addr.is_unspecified() {
        None
    } else {
        match links.link_for_address(link_addr) {
            Some(l) => Some(l),
            None => {
                return Err(refuse(
                    Status::NotConfigured,
                    format!("link-address {link_addr} is not on a configured link"),
                    &requestor,
                ));
            }
        }
    };
    let missing = |what: &str| {
        refuse(
            Status::MalformedQuery,
            format!("{} requires {what}", q.query_type),
            &requestor,
        )
    };
    let target = match q.query_type {
        QueryType::ByAddress => {
            let addr = qopts
                .iter()
                .find_map(|o| match o {
                    DhcpOption::IaAddr(a) => Some(a.addr),
                    _ => None,
                })
                .ok_or_else(|| missing("an IAADDR"))?;
            if link.is_none() && links.link_for_address(addr).is_none() {
                return Err(refuse(
                    Status::NotConfigured,
                    format!("{addr} is not in a configured link or pool"),
                    &requestor,
                ));
            }
            Target::Address { addr, link }
        }
        QueryType::ByClientId => {
            let duid = qopts.client_id().ok_or_else(|| missing("a CLIENTID"))?;
            Target::Client {
                duid: duid.as_bytes().to_vec(),
                link,
            }
        }
        QueryType::ByRelayId => {
            let relay_id = qopts
                .iter()
                .find_map(|o| match o {
                    DhcpOption::RelayId(d) => Some(d.as_bytes().to_vec()),
                    _ => None,
                })
                .ok_or_else(|| missing("a RELAY_ID"))?;
            Target::RelayId { relay_id, link }
        }
        QueryType::ByLinkAddress => match link {
            Some(l) => Target::Link(l),
            None => {
                return Err(refuse(
                    Status::NotConfigured,
                    "QUERY_BY_LINK_ADDRESS needs a configured link-address",
                    &requestor,
                ))
            }
        },
        QueryType::ByRemoteId => {
            let (enterprise, id) = qopts
                .iter()
                .find_map(|o| match o {
                    DhcpOption::RemoteId(r) => Some((r.enterprise, r.id.clone())),
                    _ => None,
                })
                .ok_or_else(|| missing("a REMOTE_ID"))?;
            Target::RemoteId {
                enterprise,
                id,
                link,
            }
        }
        QueryType::Other(_) => unreachable_type(&requestor)?,
    };
    Ok(Request {
        xid: m.xid,
        query_type: q.query_type,
        requestor,
        target,
        oro,
        since,
        until,
    })
}

fn unreachable_type(requestor: &Duid) -> Result<Target, Rejection> {
    Err(refuse(
        Status::UnknownQueryType,
        "unknown query-type",
        requestor,
    ))
}
