//! What to ask: the five query types of RFC 5007 / RFC 5460 and the options
//! that go with them.

use lq6_proto::{
    code, ClientMessage, DhcpOption, Duid, IaAddr, LqQuery, MessageType, QueryType, RemoteId,
};
use std::net::Ipv6Addr;

/// The target of a query (RFC 5007 §4.1.2.1, RFC 5460 §5.3).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum QueryKind {
    /// QUERY_BY_ADDRESS: the client holding this address (or a prefix containing it).
    Address(Ipv6Addr),
    /// QUERY_BY_CLIENTID.
    ClientId(Duid),
    /// QUERY_BY_RELAY_ID (TCP only).
    RelayId(Duid),
    /// QUERY_BY_LINK_ADDRESS: every binding on the link named by
    /// [`Query::link_address`] (TCP only).
    LinkAddress,
    /// QUERY_BY_REMOTE_ID (TCP only).
    RemoteId(RemoteId),
}

impl QueryKind {
    pub fn query_type(&self) -> QueryType {
        match self {
            QueryKind::Address(_) => QueryType::ByAddress,
            QueryKind::ClientId(_) => QueryType::ByClientId,
            QueryKind::RelayId(_) => QueryType::ByRelayId,
            QueryKind::LinkAddress => QueryType::ByLinkAddress,
            QueryKind::RemoteId(_) => QueryType::ByRemoteId,
        }
    }
}

/// One leasequery. Build it with [`Query::new`] and the `with_*` methods.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Query {
    pub kind: QueryKind,
    /// LQ_QUERY link-address: `::` for "any link", otherwise a link filter
    /// (or, for [`QueryKind::LinkAddress`], the link itself).
    pub link_address: Ipv6Addr,
    /// Ask for LQ_RELAY_DATA (47) in each CLIENT_DATA.
    pub relay_data: bool,
    /// Ask for LQ_BASE_TIME (100) in each reply (RFC 7653 §6.3.1).
    pub base_time: bool,
    /// LQ_START_TIME (101), an RFC 7653 absolute time.
    pub start_time: Option<u32>,
    /// LQ_END_TIME (102), an RFC 7653 absolute time.
    pub end_time: Option<u32>,
    /// More option codes for the ORO inside LQ_QUERY.
    pub extra_oro: Vec<u16>,
    /// More query-options inside LQ_QUERY.
    pub extra_query_options: Vec<DhcpOption>,
}

impl Query {
    pub fn new(kind: QueryKind) -> Self {
        Query {
            kind,
            link_address: Ipv6Addr::UNSPECIFIED,
            relay_data: false,
            base_time: false,
            start_time: None,
            end_time: None,
            extra_oro: Vec::new(),
            extra_query_options: Vec::new(),
        }
    }

    pub fn by_address(a: Ipv6Addr) -> Self {
        Self::new(QueryKind::Address(a))
    }
    pub fn by_client_id(d: Duid) -> Self {
        Self::new(QueryKind::ClientId(d))
    }
    pub fn by_relay_id(d: Duid) -> Self {
        Self::new(QueryKind::RelayId(d))
    }
    pub fn by_link(link: Ipv6Addr) -> Self {
        Self::new(QueryKind::LinkAddress).with_link(link)
    }
    pub fn by_remote_id(enterprise: u32, id: Vec<u8>) -> Self {
        Self::new(QueryKind::RemoteId(RemoteId { enterprise, id }))
    }

    pub fn with_link(mut self, link: Ipv6Addr) -> Self {
        self.link_address = link;
        self
    }
    pub fn with_relay_data(mut self, on: bool) -> Self {
        self.relay_data = on;
        self
    }
    pub fn with_base_time(mut self, on: bool) -> Self {
        self.base_time = on;
        self
    }
    pub fn with_start_time(mut self, t: Option<u32>) -> Self {
        self.start_time = t;
        self
    }
    pub fn with_end_time(mut self, t: Option<u32>) -> Self {
        self.end_time = t;
        self
    }

    /// The link the returned bindings are on, when the query says so.
    pub(crate) fn known_link(&self) -> Option<Ipv6Addr> {
        (!self.link_address.is_unspecified()).then_some(self.link_address)
    }

    /// The LEASEQUERY message.
    ///
    /// Placement (PROTOCOL.md §5): the ORO naming the requested per-client
    /// options (47, 100 and any extra) goes inside LQ_QUERY, as RFC 5007
    /// §4.1.2.1 defines; when LQ_BASE_TIME is requested a top-level ORO naming
    /// 100 is added as well, and LQ_START_TIME / LQ_END_TIME are emitted at
    /// top level (RFC 7653 §6.3 leaves the place open; servers accept both).
    pub fn to_message(&self, xid: u32, requestor: &Duid) -> ClientMessage {
        let mut qopts = Vec::with_capacity(2 + self.extra_query_options.len());
        match &self.kind {
            QueryKind::Address(a) => qopts.push(DhcpOption::IaAddr(IaAddr {
                addr: *a,
                preferred: 0,
                valid: 0,
                options: Vec::new(),
            })),
            QueryKind::ClientId(d) => qopts.push(DhcpOption::ClientId(d.clone())),
            QueryKind::RelayId(d) => qopts.push(DhcpOption::RelayId(d.clone())),
            QueryKind::LinkAddress => {}
            QueryKind::RemoteId(r) => qopts.push(DhcpOption::RemoteId(r.clone())),
        }
        let mut oro = Vec::new();
        if self.relay_data {
            oro.push(code::LQ_RELAY_DATA);
        }
        if self.base_time {
            oro.push(code::LQ_BASE_TIME);
        }
        for c in &self.extra_oro {
            if !oro.contains(c) {
                oro.push(*c);
            }
        }
        if !oro.is_empty() {
            qopts.push(DhcpOption::Oro(oro));
        }
        qopts.extend(self.extra_query_options.iter().cloned());
        let mut m = ClientMessage::new(MessageType::LEASEQUERY, xid)
            .with(DhcpOption::ClientId(requestor.clone()))
            .with(DhcpOption::LqQuery(LqQuery {
                query_type: self.kind.query_type(),
                link_address: self.link_address,
                options: qopts,
            }));
        if self.base_time {
            m = m.with(DhcpOption::Oro(vec![code::LQ_BASE_TIME]));
        }
        if let Some(t) = self.start_time {
            m = m.with(DhcpOption::LqStartTime(t));
        }
        if let Some(t) = self.end_time {
            m = m.with(DhcpOption::LqEndTime(t));
        }
        m
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use lq6_proto::Message;

    /// The test vector of INTEROP.md (built with scapy-based classes).
    #[test]
    fn relay_id_query_matches_the_interop_vector() {
        let q = Query::by_relay_id("en:2495:0a0b0c0d".parse().unwrap());
        let me = Duid::ll(1, &[2, 0, 0, 0, 0, 1]);
        let bytes = Message::Client(q.to_message(0x123456, &me))
            .to_vec()
            .unwrap();
        let want = "0e123456 0001000a00030001020000000001 002c001f03 \
                    00000000000000000000000000000000 0035000a0002000009bf0a0b0c0d";
        let want: String = want.split_whitespace().collect();
        assert_eq!(hex(&bytes), want);
    }

    fn hex(b: &[u8]) -> String {
        b.iter().map(|x| format!("{x:02x}")).collect()
    }
}
