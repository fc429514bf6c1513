//! Numbers from the RFCs: message types, option codes, status codes and
//! leasequery query types (see ../shared/PROTOCOL.md §1).

use std::fmt;

/// A DHCPv6 msg-type octet. Kept open so unknown types survive a round trip.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MessageType(pub u8);

/// How the octets after msg-type are laid out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// transaction-id(3) options (RFC 8415 §8).
    ClientServer,
    /// hop-count(1) link-address(16) peer-address(16) options (RFC 8415 §9).
    Relay,
    /// Not a type we know; kept as raw octets.
    Unknown,
}

impl MessageType {
    pub const SOLICIT: Self = Self(1);
    pub const ADVERTISE: Self = Self(2);
    pub const REQUEST: Self = Self(3);
    pub const CONFIRM: Self = Self(4);
    pub const RENEW: Self = Self(5);
    pub const REBIND: Self = Self(6);
    pub const REPLY: Self = Self(7);
    pub const RELEASE: Self = Self(8);
    pub const DECLINE: Self = Self(9);
    pub const RECONFIGURE: Self = Self(10);
    pub const INFORMATION_REQUEST: Self = Self(11);
    pub const RELAY_FORW: Self = Self(12);
    pub const RELAY_REPL: Self = Self(13);
    /// RFC 5007.
    pub const LEASEQUERY: Self = Self(14);
    pub const LEASEQUERY_REPLY: Self = Self(15);
    /// RFC 5460: 16 is DONE and 17 is DATA.
    pub const LEASEQUERY_DONE: Self = Self(16);
    pub const LEASEQUERY_DATA: Self = Self(17);
    /// RFC 7653.
    pub const ACTIVELEASEQUERY: Self = Self(22);
    pub const STARTTLS: Self = Self(23);

    pub fn layout(self) -> Layout {
        match self.0 {
            12 | 13 => Layout::Relay,
            // 18-21 (RFC 6977, 7341), 24-35 (RFC 8156 failover) and 36-37
            // (RFC 9686) all use the client/server header.
            1..=11 | 14..=37 => Layout::ClientServer,
            _ => Layout::Unknown,
        }
    }

    pub fn name(self) -> Option<&'static str> {
        Some(match self.0 {
            1 => "SOLICIT",
            2 => "ADVERTISE",
            3 => "REQUEST",
            4 => "CONFIRM",
            5 => "RENEW",
            6 => "REBIND",
            7 => "REPLY",
            8 => "RELEASE",
            9 => "DECLINE",
            10 => "RECONFIGURE",
            11 => "INFORMATION-REQUEST",
            12 => "RELAY-FORW",
            13 => "RELAY-REPL",
            14 => "LEASEQUERY",
            15 => "LEASEQUERY-REPLY",
            16 => "LEASEQUERY-DONE",
            17 => "LEASEQUERY-DATA",
            18 => "RECONFIGURE-REQUEST",
            19 => "RECONFIGURE-REPLY",
            20 => "DHCPV4-QUERY",
            21 => "DHCPV4-RESPONSE",
            22 => "ACTIVELEASEQUERY",
            23 => "STARTTLS",
            24..=35 => "FAILOVER",
            36 => "ADDR-REG-INFORM",
            37 => "ADDR-REG-REPLY",
            _ => return None,
        })
    }
}

impl fmt::Display for MessageType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            Some(n) => write!(f, "{n}({})", self.0),
            None => write!(f, "type {}", self.0),
        }
    }
}

/// Option codes (RFC 8415 §21 and the leasequery RFCs).
pub mod code {
    pub const CLIENTID: u16 = 1;
    pub const SERVERID: u16 = 2;
    pub const IA_NA: u16 = 3;
    pub const IA_TA: u16 = 4;
    pub const IAADDR: u16 = 5;
    pub const ORO: u16 = 6;
    pub const PREFERENCE: u16 = 7;
    pub const ELAPSED_TIME: u16 = 8;
    pub const RELAY_MSG: u16 = 9;
    pub const AUTH: u16 = 11;
    pub const UNICAST: u16 = 12;
    pub const STATUS_CODE: u16 = 13;
    pub const RAPID_COMMIT: u16 = 14;
    pub const USER_CLASS: u16 = 15;
    pub const VENDOR_CLASS: u16 = 16;
    pub const VENDOR_OPTS: u16 = 17;
    pub const INTERFACE_ID: u16 = 18;
    pub const RECONF_MSG: u16 = 19;
    pub const RECONF_ACCEPT: u16 = 20;
    pub const DNS_SERVERS: u16 = 23;
    pub const DOMAIN_LIST: u16 = 24;
    pub const IA_PD: u16 = 25;
    pub const IAPREFIX: u16 = 26;
    pub const INFORMATION_REFRESH_TIME: u16 = 32;
    pub const REMOTE_ID: u16 = 37;
    pub const SUBSCRIBER_ID: u16 = 38;
    pub const ERO: u16 = 43;
    pub const LQ_QUERY: u16 = 44;
    pub const CLIENT_DATA: u16 = 45;
    pub const CLT_TIME: u16 = 46;
    pub const LQ_RELAY_DATA: u16 = 47;
    pub const LQ_CLIENT_LINK: u16 = 48;
    pub const RELAY_ID: u16 = 53;
    pub const CLIENT_LINKLAYER_ADDR: u16 = 79;
    pub const SOL_MAX_RT: u16 = 82;
    pub const INF_MAX_RT: u16 = 83;
    pub const LQ_BASE_TIME: u16 = 100;
    pub const LQ_START_TIME: u16 = 101;
    pub const LQ_END_TIME: u16 = 102;
    pub const RELAY_PORT: u16 = 135;

    /// Printable name of an option code, for logs and `lq6 decode`.
    pub fn name(c: u16) -> &'static str {
        match c {
            CLIENTID => "CLIENTID",
            SERVERID => "SERVERID",
            IA_NA => "IA_NA",
            IA_TA => "IA_TA",
            IAADDR => "IAADDR",
            ORO => "ORO",
            PREFERENCE => "PREFERENCE",
            ELAPSED_TIME => "ELAPSED_TIME",
            RELAY_MSG => "RELAY_MSG",
            AUTH => "AUTH",
            UNICAST => "UNICAST",
            STATUS_CODE => "STATUS_CODE",
            RAPID_COMMIT => "RAPID_COMMIT",
            USER_CLASS => "USER_CLASS",
            VENDOR_CLASS => "VENDOR_CLASS",
            VENDOR_OPTS => "VENDOR_OPTS",
            INTERFACE_ID => "INTERFACE_ID",
            RECONF_MSG => "RECONF_MSG",
            RECONF_ACCEPT => "RECONF_ACCEPT",
            DNS_SERVERS => "DNS_SERVERS",
            DOMAIN_LIST => "DOMAIN_LIST",
            IA_PD => "IA_PD",
            IAPREFIX => "IAPREFIX",
            INFORMATION_REFRESH_TIME => "INFORMATION_REFRESH_TIME",
            REMOTE_ID => "REMOTE_ID",
            SUBSCRIBER_ID => "SUBSCRIBER_ID",
            ERO => "ERO",
            LQ_QUERY => "LQ_QUERY",
            CLIENT_DATA => "CLIENT_DATA",
            CLT_TIME => "CLT_TIME",
            LQ_RELAY_DATA => "LQ_RELAY_DATA",
            LQ_CLIENT_LINK => "LQ_CLIENT_LINK",
            RELAY_ID => "RELAY_ID",
            CLIENT_LINKLAYER_ADDR => "CLIENT_LINKLAYER_ADDR",
            SOL_MAX_RT => "SOL_MAX_RT",
            INF_MAX_RT => "INF_MAX_RT",
            LQ_BASE_TIME => "LQ_BASE_TIME",
            LQ_START_TIME => "LQ_START_TIME",
            LQ_END_TIME => "LQ_END_TIME",
            RELAY_PORT => "RELAY_PORT",
            _ => "option",
        }
    }
}

/// STATUS_CODE values (RFC 8415 §21.13, RFC 5007, RFC 5460, RFC 7653).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Status {
    Success,
    UnspecFail,
    NoAddrsAvail,
    NoBinding,
    NotOnLink,
    UseMulticast,
    NoPrefixAvail,
    UnknownQueryType,
    MalformedQuery,
    NotConfigured,
    NotAllowed,
    QueryTerminated,
    DataMissing,
    CatchUpComplete,
    NotSupported,
    TlsConnectionRefused,
    Other(u16),
}

impl Status {
    pub fn from_u16(v: u16) -> Status {
        use Status::*;
        match v {
            0 => Success,
            1 => UnspecFail,
            2 => NoAddrsAvail,
            3 => NoBinding,
            4 => NotOnLink,
            5 => UseMulticast,
            6 => NoPrefixAvail,
            7 => UnknownQueryType,
            8 => MalformedQuery,
            9 => NotConfigured,
            10 => NotAllowed,
            11 => QueryTerminated,
            12 => DataMissing,
            13 => CatchUpComplete,
            14 => NotSupported,
            15 => TlsConnectionRefused,
            n => Other(n),
        }
    }

    pub fn to_u16(self) -> u16 {
        use Status::*;
        match self {
            Success => 0,
            UnspecFail => 1,
            NoAddrsAvail => 2,
            NoBinding => 3,
            NotOnLink => 4,
            UseMulticast => 5,
            NoPrefixAvail => 6,
            UnknownQueryType => 7,
            MalformedQuery => 8,
            NotConfigured => 9,
            NotAllowed => 10,
            QueryTerminated => 11,
            DataMissing => 12,
            CatchUpComplete => 13,
            NotSupported => 14,
            TlsConnectionRefused => 15,
            Other(n) => n,
        }
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Status::Other(n) => write!(f, "status {n}"),
            Status::TlsConnectionRefused => f.write_str("TLSConnectionRefused"),
            s => write!(f, "{s:?}"),
        }
    }
}

/// LQ_QUERY query-type (RFC 5007 §4.1.2.1, RFC 5460 §5.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum QueryType {
    ByAddress,
    ByClientId,
    ByRelayId,
    ByLinkAddress,
    ByRemoteId,
    Other(u8),
}

impl QueryType {
    pub fn from_u8(v: u8) -> QueryType {
        match v {
            1 => QueryType::ByAddress,
            2 => QueryType::ByClientId,
            3 => QueryType::ByRelayId,
            4 => QueryType::ByLinkAddress,
            5 => QueryType::ByRemoteId,
            n => QueryType::Other(n),
        }
    }

    pub fn to_u8(self) -> u8 {
        match self {
            QueryType::ByAddress => 1,
            QueryType::ByClientId => 2,
            QueryType::ByRelayId => 3,
            QueryType::ByLinkAddress => 4,
            QueryType::ByRemoteId => 5,
            QueryType::Other(n) => n,
        }
    }

    /// Types 3-5 exist only over TCP; over UDP they get NotAllowed (RFC 5460 §4).
    pub fn is_bulk_only(self) -> bool {
        matches!(
            self,
            QueryType::ByRelayId | QueryType::ByLinkAddress | QueryType::ByRemoteId
        )
    }
}

impl fmt::Display for QueryType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = match self {
            QueryType::ByAddress => "QUERY_BY_ADDRESS",
            QueryType::ByClientId => "QUERY_BY_CLIENTID",
            QueryType::ByRelayId => "QUERY_BY_RELAY_ID",
            QueryType::ByLinkAddress => "QUERY_BY_LINK_ADDRESS",
            QueryType::ByRemoteId => "QUERY_BY_REMOTE_ID",
            QueryType::Other(n) => return write!(f, "query-type {n}"),
        };
        f.write_str(s)
    }
}

/// Seconds between the Unix epoch and 2000-01-01T00:00:00Z, the epoch of
/// RFC 7653 absolute times and of DUID-LLT.
pub const EPOCH_2000: u64 = 946_684_800;

/// Unix seconds to an RFC 7653 §2 absolute time (modulo 2^32).
pub fn unix_to_dhcp_time(unix: u64) -> u32 {
    unix.wrapping_sub(EPOCH_2000) as u32
}

/// RFC 7653 absolute time to Unix seconds (no wraparound handling before 2136).
pub fn dhcp_time_to_unix(t: u32) -> u64 {
    t as u64 + EPOCH_2000
}
