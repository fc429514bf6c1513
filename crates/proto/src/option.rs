//! The typed option enum. Options we know are parsed strictly (every length is
//! checked); every other code is kept raw and re-encoded byte for byte.
//! Options are kept in wire order in a `Vec`.

use crate::domain::DomainName;
use crate::duid::Duid;
use crate::error::{DecodeError, DecodeErrorKind, EncodeError};
use crate::message::Message;
use crate::reader::Reader;
use crate::types::{code, QueryType, Status};
use crate::writer::OptionWriter;
use std::net::Ipv6Addr;

/// IA_NA and IA_PD share a layout (RFC 8415 §21.4, §21.21).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ia {
    pub iaid: u32,
    pub t1: u32,
    pub t2: u32,
    pub options: Vec<DhcpOption>,
}

/// IA_TA (RFC 8415 §21.5).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IaTa {
    pub iaid: u32,
    pub options: Vec<DhcpOption>,
}

/// IAADDR (RFC 8415 §21.6).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IaAddr {
    pub addr: Ipv6Addr,
    pub preferred: u32,
    pub valid: u32,
    pub options: Vec<DhcpOption>,
}

/// IAPREFIX (RFC 8415 §21.22). Note the field order: lifetimes come first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IaPrefix {
    pub preferred: u32,
    pub valid: u32,
    pub prefix_len: u8,
    pub prefix: Ipv6Addr,
    pub options: Vec<DhcpOption>,
}

/// STATUS_CODE (RFC 8415 §21.13).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusCode {
    pub status: Status,
    pub message: String,
}

impl StatusCode {
    pub fn new(status: Status, message: impl Into<String>) -> Self {
        StatusCode {
            status,
            message: message.into(),
        }
    }
}

/// REMOTE_ID (RFC 4649): enterprise number and an opaque id of at least 1 octet.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RemoteId {
    pub enterprise: u32,
    pub id: Vec<u8>,
}

/// LQ_QUERY (RFC 5007 §4.1.2.1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LqQuery {
    pub query_type: QueryType,
    pub link_address: Ipv6Addr,
    pub options: Vec<DhcpOption>,
}

/// LQ_RELAY_DATA (RFC 5007 §4.1.2.4): the relay chain the server last
/// received for the client, innermost client message removed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LqRelayData {
    pub peer_address: Ipv6Addr,
    pub message: Box<Message>,
}

/// CLIENT_LINKLAYER_ADDR (RFC 6939).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientLinkLayer {
    pub hw_type: u16,
    pub addr: Vec<u8>,
}

/// One DHCPv6 option. Unknown codes are kept raw in [`DhcpOption::Unknown`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum DhcpOption {
    ClientId(Duid),
    ServerId(Duid),
    IaNa(Ia),
    IaTa(IaTa),
    IaAddr(IaAddr),
    Oro(Vec<u16>),
    Preference(u8),
    /// Hundredths of a second.
    ElapsedTime(u16),
    RelayMsg(Box<Message>),
    Unicast(Ipv6Addr),
    StatusCode(StatusCode),
    RapidCommit,
    InterfaceId(Vec<u8>),
    DnsServers(Vec<Ipv6Addr>),
    DomainList(Vec<DomainName>),
    IaPd(Ia),
    IaPrefix(IaPrefix),
    InformationRefreshTime(u32),
    RemoteId(RemoteId),
    SubscriberId(Vec<u8>),
    LqQuery(LqQuery),
    ClientData(Vec<DhcpOption>),
    CltTime(u32),
    LqRelayData(LqRelayData),
    LqClientLink(Vec<Ipv6Addr>),
    RelayId(Duid),
    ClientLinkLayerAddr(ClientLinkLayer),
    LqBaseTime(u32),
    LqStartTime(u32),
    LqEndTime(u32),
    /// RFC 8357 Downstream Source Port.
    RelayPort(u16),
    Unknown {
        code: u16,
        data: Vec<u8>,
    },
}

/// Whether `code` has a typed variant (and so is never kept raw).
pub fn is_typed(c: u16) -> bool {
    use code::*;
    matches!(
        c,
        CLIENTID
            | SERVERID
            | IA_NA
            | IA_TA
            | IAADDR
            | ORO
            | PREFERENCE
            | ELAPSED_TIME
            | RELAY_MSG
            | UNICAST
            | STATUS_CODE
            | RAPID_COMMIT
            | INTERFACE_ID
            | DNS_SERVERS
            | DOMAIN_LIST
            | IA_PD
            | IAPREFIX
            | INFORMATION_REFRESH_TIME
            | REMOTE_ID
            | SUBSCRIBER_ID
            | LQ_QUERY
            | CLIENT_DATA
            | CLT_TIME
            | LQ_RELAY_DATA
            | LQ_CLIENT_LINK
            | RELAY_ID
            | CLIENT_LINKLAYER_ADDR
            | LQ_BASE_TIME
            | LQ_START_TIME
            | LQ_END_TIME
            | RELAY_PORT
    )
}

/// Bounds on untrusted nesting. Every option container and every message
/// counts one level; relay messages directly nested in RELAY_MSG are bounded
/// by HOP_COUNT_LIMIT + 1 (a relay forwards hop-count up to 8, RFC 8415 §19.1.2).
pub const MAX_NESTING: usize = 48;
pub const HOP_COUNT_LIMIT: u8 = 8;
pub const MAX_RELAY_DEPTH: usize = HOP_COUNT_LIMIT as usize + 1;

#[derive(Clone, Copy)]
pub(crate) struct Depth {
    pub(crate) nesting: usize,
    pub(crate) relays: usize,
}

impl Depth {
    pub(crate) const TOP: Depth = Depth {
        nesting: 0,
        relays: 0,
    };

    pub(crate) fn deeper(self, r: &Reader) -> Result<Depth, DecodeError> {
        if self.nesting >= MAX_NESTING {
            return Err(r.err(DecodeErrorKind::TooDeep(MAX_NESTING)));
        }
        Ok(Depth {
            nesting: self.nesting + 1,
            relays: self.relays,
        })
    }
}

/// Decodes a sequence of options that fills `b` exactly.
pub fn decode_options(b: &[u8]) -> Result<Vec<DhcpOption>, DecodeError> {
    let mut r = Reader::new(b);
    read_options(&mut r, Depth::TOP)
}

pub(crate) fn read_options(r: &mut Reader, depth: Depth) -> Result<Vec<DhcpOption>, DecodeError> {
    let mut out = Vec::new();
    while !r.is_empty() {
        out.push(read_option(r, depth)?);
    }
    Ok(out)
}

fn bad_len(r: &Reader, code: u16, len: usize) -> DecodeError {
    r.err(DecodeErrorKind::BadOptionLength { code, len })
}

fn read_duid(r: &mut Reader) -> Result<Duid, DecodeError> {
    let n = r.remaining();
    if !(crate::duid::DUID_MIN_LEN..=crate::duid::DUID_MAX_LEN).contains(&n) {
        return Err(r.err(DecodeErrorKind::BadDuid(n)));
    }
    Ok(Duid::from_vec_unchecked(r.rest().to_vec()))
}

fn read_addrs(r: &mut Reader) -> Result<Vec<Ipv6Addr>, DecodeError> {
    let mut v = Vec::with_capacity(r.remaining() / 16);
    while !r.is_empty() {
        v.push(r.addr()?);
    }
    Ok(v)
}

fn read_option(r: &mut Reader, depth: Depth) -> Result<DhcpOption, DecodeError> {
    let start = r.clone();
    let c = r.u16()?;
    let len = r.u16()? as usize;
    let at_len = r.clone();
    let mut b = r.sub(len).map_err(|_| {
        at_len.err(DecodeErrorKind::Truncated {
            needed: len,
            available: at_len.remaining(),
        })
    })?;
    let fixed = |b: &Reader, n: usize| {
        if len == n {
            Ok(())
        } else {
            Err(bad_len(b, c, len))
        }
    };
    let at_least = |b: &Reader, n: usize| {
        if len >= n {
            Ok(())
        } else {
            Err(bad_len(b, c, len))
        }
    };
    use DhcpOption as O;
    let opt = match c {
        code::CLIENTID => O::ClientId(read_duid(&mut b)?),
        code::SERVERID => O::ServerId(read_duid(&mut b)?),
        code::RELAY_ID => O::RelayId(read_duid(&mut b)?),
        code::IA_NA | code::IA_PD => {
            at_least(&b, 12)?;
            let d = depth.deeper(&b)?;
            let ia = Ia {
                iaid: b.u32()?,
                t1: b.u32()?,
                t2: b.u32()?,
                options: read_options(&mut b, d)?,
            };
            if c == code::IA_NA {
                O::IaNa(ia)
            } else {
                O::IaPd(ia)
            }
        }
        code::IA_TA => {
            at_least(&b, 4)?;
            let d = depth.deeper(&b)?;
            O::IaTa(IaTa {
                iaid: b.u32()?,
                options: read_options(&mut b, d)?,
            })
        }
        code::IAADDR => {
            at_least(&b, 24)?;
            let d = depth.deeper(&b)?;
            O::IaAddr(IaAddr {
                addr: b.addr()?,
                preferred: b.u32()?,
                valid: b.u32()?,
                options: read_options(&mut b, d)?,
            })
        }
        code::IAPREFIX => {
            at_least(&b, 25)?;
            let d = depth.deeper(&b)?;
            let preferred = b.u32()?;
            let valid = b.u32()?;
            let plen_at = b.clone();
            let prefix_len = b.u8()?;
            if prefix_len > 128 {
                return Err(plen_at.err(DecodeErrorKind::InvalidOption {
                    code: c,
                    reason: "prefix-length above 128",
                }));
            }
            O::IaPrefix(IaPrefix {
                preferred,
                valid,
                prefix_len,
                prefix: b.addr()?,
                options: read_options(&mut b, d)?,
            })
        }
        code::ORO => {
            if len % 2 != 0 {
                return Err(bad_len(&b, c, len));
            }
            let mut v = Vec::with_capacity(len / 2);
            while !b.is_empty() {
                v.push(b.u16()?);
            }
            O::Oro(v)
        }
        code::PREFERENCE => {
            fixed(&b, 1)?;
            O::Preference(b.u8()?)
        }
        code::ELAPSED_TIME => {
            fixed(&b, 2)?;
            O::ElapsedTime(b.u16()?)
        }
        code::RELAY_MSG => {
            let d = depth.deeper(&b)?;
            O::RelayMsg(Box::new(Message::read(&mut b, d)?))
        }
        code::UNICAST => {
            fixed(&b, 16)?;
            O::Unicast(b.addr()?)
        }
        code::STATUS_CODE => {
            at_least(&b, 2)?;
            let status = Status::from_u16(b.u16()?);
            let at = b.clone();
            let message = std::str::from_utf8(b.rest())
                .map_err(|_| at.err(DecodeErrorKind::BadUtf8))?
                .to_string();
            O::StatusCode(StatusCode { status, message })
        }
        code::RAPID_COMMIT => {
            fixed(&b, 0)?;
            O::RapidCommit
        }
        code::INTERFACE_ID => O::InterfaceId(b.rest().to_vec()),
        code::DNS_SERVERS => {
            if len % 16 != 0 {
                return Err(bad_len(&b, c, len));
            }
            O::DnsServers(read_addrs(&mut b)?)
        }
        code::DOMAIN_LIST => {
            let mut names = Vec::new();
            while !b.is_empty() {
                let at = b.clone();
                let rest = b.clone().rest();
                let (name, used) = DomainName::decode(rest)
                    .map_err(|e| at.err(DecodeErrorKind::BadDomainName(e)))?;
                b.take(used)?;
                names.push(name);
            }
            O::DomainList(names)
        }
        code::INFORMATION_REFRESH_TIME => {
            fixed(&b, 4)?;
            O::InformationRefreshTime(b.u32()?)
        }
        code::REMOTE_ID => {
            at_least(&b, 5)?;
            O::RemoteId(RemoteId {
                enterprise: b.u32()?,
                id: b.rest().to_vec(),
            })
        }
        code::SUBSCRIBER_ID => {
            at_least(&b, 1)?;
            O::SubscriberId(b.rest().to_vec())
        }
        code::LQ_QUERY => {
            at_least(&b, 17)?;
            let d = depth.deeper(&b)?;
            O::LqQuery(LqQuery {
                query_type: QueryType::from_u8(b.u8()?),
                link_address: b.addr()?,
                options: read_options(&mut b, d)?,
            })
        }
        code::CLIENT_DATA => {
            let d = depth.deeper(&b)?;
            O::ClientData(read_options(&mut b, d)?)
        }
        code::CLT_TIME => {
            fixed(&b, 4)?;
            O::CltTime(b.u32()?)
        }
        code::LQ_RELAY_DATA => {
            at_least(&b, 17)?;
            let d = depth.deeper(&b)?;
            // A new relay chain starts here: reset the relay counter.
            let d = Depth {
                nesting: d.nesting,
                relays: 0,
            };
            O::LqRelayData(LqRelayData {
                peer_address: b.addr()?,
                message: Box::new(Message::read(&mut b, d)?),
            })
        }
        code::LQ_CLIENT_LINK => {
            if len == 0 || len % 16 != 0 {
                return Err(bad_len(&b, c, len));
            }
            O::LqClientLink(read_addrs(&mut b)?)
        }
        code::CLIENT_LINKLAYER_ADDR => {
            at_least(&b, 2)?;
            O::ClientLinkLayerAddr(ClientLinkLayer {
                hw_type: b.u16()?,
                addr: b.rest().to_vec(),
            })
        }
        code::LQ_BASE_TIME => {
            fixed(&b, 4)?;
            O::LqBaseTime(b.u32()?)
        }
        code::LQ_START_TIME => {
            fixed(&b, 4)?;
            O::LqStartTime(b.u32()?)
        }
        code::LQ_END_TIME => {
            fixed(&b, 4)?;
            O::LqEndTime(b.u32()?)
        }
        code::RELAY_PORT => {
            fixed(&b, 2)?;
            O::RelayPort(b.u16()?)
        }
        _ => O::Unknown {
            code: c,
            data: b.rest().to_vec(),
        },
    };
    if !b.is_empty() {
        // Only reachable if a typed parser stopped early; report the option start.
        let _ = start;
        return Err(b.err(DecodeErrorKind::TrailingBytes(b.remaining())));
    }
    Ok(opt)
}

pub(crate) fn write_options(w: &mut OptionWriter, opts: &[DhcpOption]) -> Result<(), EncodeError> {
    for o in opts {
        o.encode(w)?;
    }
    Ok(())
}

impl DhcpOption {
    pub fn code(&self) -> u16 {
        use DhcpOption as O;
        match self {
            O::ClientId(_) => code::CLIENTID,
            O::ServerId(_) => code::SERVERID,
            O::IaNa(_) => code::IA_NA,
            O::IaTa(_) => code::IA_TA,
            O::IaAddr(_) => code::IAADDR,
            O::Oro(_) => code::ORO,
            O::Preference(_) => code::PREFERENCE,
            O::ElapsedTime(_) => code::ELAPSED_TIME,
            O::RelayMsg(_) => code::RELAY_MSG,
            O::Unicast(_) => code::UNICAST,
            O::StatusCode(_) => code::STATUS_CODE,
            O::RapidCommit => code::RAPID_COMMIT,
            O::InterfaceId(_) => code::INTERFACE_ID,
            O::DnsServers(_) => code::DNS_SERVERS,
            O::DomainList(_) => code::DOMAIN_LIST,
            O::IaPd(_) => code::IA_PD,
            O::IaPrefix(_) => code::IAPREFIX,
            O::InformationRefreshTime(_) => code::INFORMATION_REFRESH_TIME,
            O::RemoteId(_) => code::REMOTE_ID,
            O::SubscriberId(_) => code::SUBSCRIBER_ID,
            O::LqQuery(_) => code::LQ_QUERY,
            O::ClientData(_) => code::CLIENT_DATA,
            O::CltTime(_) => code::CLT_TIME,
            O::LqRelayData(_) => code::LQ_RELAY_DATA,
            O::LqClientLink(_) => code::LQ_CLIENT_LINK,
            O::RelayId(_) => code::RELAY_ID,
            O::ClientLinkLayerAddr(_) => code::CLIENT_LINKLAYER_ADDR,
            O::LqBaseTime(_) => code::LQ_BASE_TIME,
            O::LqStartTime(_) => code::LQ_START_TIME,
            O::LqEndTime(_) => code::LQ_END_TIME,
            O::RelayPort(_) => code::RELAY_PORT,
            O::Unknown { code, .. } => *code,
        }
    }

    /// Appends this option's TLV.
    pub fn encode(&self, w: &mut OptionWriter) -> Result<(), EncodeError> {
        use DhcpOption as O;
        let c = self.code();
        match self {
            O::ClientId(d) | O::ServerId(d) | O::RelayId(d) => w.option(c, d.as_bytes()),
            O::InterfaceId(b) | O::SubscriberId(b) | O::Unknown { data: b, .. } => w.option(c, b),
            O::Preference(v) => w.option(c, &[*v]),
            O::ElapsedTime(v) | O::RelayPort(v) => w.option(c, &v.to_be_bytes()),
            O::InformationRefreshTime(v)
            | O::CltTime(v)
            | O::LqBaseTime(v)
            | O::LqStartTime(v)
            | O::LqEndTime(v) => {
                w.option_u32(c, *v);
                Ok(())
            }
            O::RapidCommit => w.option(c, &[]),
            O::Unicast(a) => w.option(c, &a.octets()),
            _ => {
                let o = w.open(c);
                match self {
                    O::IaNa(ia) | O::IaPd(ia) => {
                        w.u32(ia.iaid);
                        w.u32(ia.t1);
                        w.u32(ia.t2);
                        write_options(w, &ia.options)?;
                    }
                    O::IaTa(ia) => {
                        w.u32(ia.iaid);
                        write_options(w, &ia.options)?;
                    }
                    O::IaAddr(a) => {
                        w.addr(&a.addr);
                        w.u32(a.preferred);
                        w.u32(a.valid);
                        write_options(w, &a.options)?;
                    }
                    O::IaPrefix(p) => {
                        w.u32(p.preferred);
                        w.u32(p.valid);
                        w.u8(p.prefix_len);
                        w.addr(&p.prefix);
                        write_options(w, &p.options)?;
                    }
                    O::Oro(v) => v.iter().for_each(|x| w.u16(*x)),
                    O::RelayMsg(m) => m.encode_into(w)?,
                    O::StatusCode(s) => {
                        w.u16(s.status.to_u16());
                        w.bytes(s.message.as_bytes());
                    }
                    O::DnsServers(v) | O::LqClientLink(v) => v.iter().for_each(|a| w.addr(a)),
                    O::DomainList(v) => v.iter().for_each(|n| n.encode(w.buf())),
                    O::RemoteId(r) => {
                        w.u32(r.enterprise);
                        w.bytes(&r.id);
                    }
                    O::LqQuery(q) => {
                        w.u8(q.query_type.to_u8());
                        w.addr(&q.link_address);
                        write_options(w, &q.options)?;
                    }
                    O::ClientData(v) => write_options(w, v)?,
                    O::LqRelayData(d) => {
                        w.addr(&d.peer_address);
                        d.message.encode_into(w)?;
                    }
                    O::ClientLinkLayerAddr(l) => {
                        w.u16(l.hw_type);
                        w.bytes(&l.addr);
                    }
                    _ => {}
                }
                w.close(o)
            }
        }
    }

    /// Wire length of the option including its 4-octet header.
    pub fn wire_len(&self) -> usize {
        use DhcpOption as O;
        let opts = |v: &[DhcpOption]| v.iter().map(|o| o.wire_len()).sum::<usize>();
        4 + match self {
            O::ClientId(d) | O::ServerId(d) | O::RelayId(d) => d.as_bytes().len(),
            O::InterfaceId(b) | O::SubscriberId(b) | O::Unknown { data: b, .. } => b.len(),
            O::Preference(_) => 1,
            O::ElapsedTime(_) | O::RelayPort(_) => 2,
            O::InformationRefreshTime(_)
            | O::CltTime(_)
            | O::LqBaseTime(_)
            | O::LqStartTime(_)
            | O::LqEndTime(_) => 4,
            O::RapidCommit => 0,
            O::Unicast(_) => 16,
            O::IaNa(ia) | O::IaPd(ia) => 12 + opts(&ia.options),
            O::IaTa(ia) => 4 + opts(&ia.options),
            O::IaAddr(a) => 24 + opts(&a.options),
            O::IaPrefix(p) => 25 + opts(&p.options),
            O::Oro(v) => 2 * v.len(),
            O::RelayMsg(m) => m.wire_len(),
            O::StatusCode(s) => 2 + s.message.len(),
            O::DnsServers(v) | O::LqClientLink(v) => 16 * v.len(),
            O::DomainList(v) => v.iter().map(|n| n.wire_len()).sum(),
            O::RemoteId(r) => 4 + r.id.len(),
            O::LqQuery(q) => 17 + opts(&q.options),
            O::ClientData(v) => opts(v),
            O::LqRelayData(d) => 16 + d.message.wire_len(),
            O::ClientLinkLayerAddr(l) => 2 + l.addr.len(),
        }
    }
}

/// Lookups over an option list.
pub trait OptionsExt {
    fn get(&self, code: u16) -> Option<&DhcpOption>;
    fn count(&self, code: u16) -> usize;
    fn client_id(&self) -> Option<&Duid>;
    fn server_id(&self) -> Option<&Duid>;
    fn status(&self) -> Option<&StatusCode>;
    fn oro(&self) -> Option<&[u16]>;
}

impl OptionsExt for [DhcpOption] {
    fn get(&self, code: u16) -> Option<&DhcpOption> {
        self.iter().find(|o| o.code() == code)
    }
    fn count(&self, code: u16) -> usize {
        self.iter().filter(|o| o.code() == code).count()
    }
    fn client_id(&self) -> Option<&Duid> {
        self.iter().find_map(|o| match o {
            DhcpOption::ClientId(d) => Some(d),
            _ => None,
        })
    }
    fn server_id(&self) -> Option<&Duid> {
        self.iter().find_map(|o| match o {
            DhcpOption::ServerId(d) => Some(d),
            _ => None,
        })
    }
    fn status(&self) -> Option<&StatusCode> {
        self.iter().find_map(|o| match o {
            DhcpOption::StatusCode(s) => Some(s),
            _ => None,
        })
    }
    fn oro(&self) -> Option<&[u16]> {
        self.iter().find_map(|o| match o {
            DhcpOption::Oro(v) => Some(v.as_slice()),
            _ => None,
        })
    }
}
