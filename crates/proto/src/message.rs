//! DHCPv6 messages: client/server (RFC 8415 §8), relay (§9) and unknown types
//! kept raw so they round-trip exactly.

use crate::error::{DecodeError, DecodeErrorKind, EncodeError};
use crate::option::{read_options, write_options, Depth, DhcpOption, OptionsExt, MAX_RELAY_DEPTH};
use crate::reader::Reader;
use crate::types::{code, Layout, MessageType};
use crate::writer::OptionWriter;
use std::net::Ipv6Addr;

/// `msg-type(1) transaction-id(3) options`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientMessage {
    pub msg_type: MessageType,
    /// 24-bit transaction-id.
    pub xid: u32,
    pub options: Vec<DhcpOption>,
}

/// `msg-type(1) hop-count(1) link-address(16) peer-address(16) options`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelayMessage {
    pub msg_type: MessageType,
    pub hop_count: u8,
    pub link_address: Ipv6Addr,
    pub peer_address: Ipv6Addr,
    pub options: Vec<DhcpOption>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    Client(ClientMessage),
    Relay(RelayMessage),
    /// A msg-type we do not know; `body` is everything after the type octet.
    Unknown {
        msg_type: u8,
        body: Vec<u8>,
    },
}

impl Message {
    /// Strictly decodes one whole message; trailing octets are an error.
    pub fn decode(b: &[u8]) -> Result<Message, DecodeError> {
        let mut r = Reader::new(b);
        let m = Message::read(&mut r, Depth::TOP)?;
        r.expect_empty()?;
        Ok(m)
    }

    /// Reads a message that fills `r`.
    pub(crate) fn read(r: &mut Reader, depth: Depth) -> Result<Message, DecodeError> {
        if r.is_empty() {
            return Err(r.err(DecodeErrorKind::Empty));
        }
        let t = MessageType(r.u8()?);
        match t.layout() {
            Layout::ClientServer => {
                let xid = r.u24()?;
                let options = read_options(r, depth.deeper(r)?)?;
                Ok(Message::Client(ClientMessage {
                    msg_type: t,
                    xid,
                    options,
                }))
            }
            Layout::Relay => {
                if depth.relays >= MAX_RELAY_DEPTH {
                    return Err(r.err(DecodeErrorKind::RelayTooDeep(MAX_RELAY_DEPTH)));
                }
                let hop_count = r.u8()?;
                let link_address = r.addr()?;
                let peer_address = r.addr()?;
                let mut d = depth.deeper(r)?;
                d.relays += 1;
                let options = read_options(r, d)?;
                Ok(Message::Relay(RelayMessage {
                    msg_type: t,
                    hop_count,
                    link_address,
                    peer_address,
                    options,
                }))
            }
            Layout::Unknown => Ok(Message::Unknown {
                msg_type: t.0,
                body: r.rest().to_vec(),
            }),
        }
    }

    pub fn msg_type(&self) -> MessageType {
        match self {
            Message::Client(m) => m.msg_type,
            Message::Relay(m) => m.msg_type,
            Message::Unknown { msg_type, .. } => MessageType(*msg_type),
        }
    }

    pub fn options(&self) -> &[DhcpOption] {
        match self {
            Message::Client(m) => &m.options,
            Message::Relay(m) => &m.options,
            Message::Unknown { .. } => &[],
        }
    }

    /// Appends the encoded message to `buf` (which may already hold data).
    pub fn encode(&self, buf: &mut Vec<u8>) -> Result<(), EncodeError> {
        self.encode_into(&mut OptionWriter::new(buf))
    }

    pub fn to_vec(&self) -> Result<Vec<u8>, EncodeError> {
        let mut v = Vec::with_capacity(self.wire_len());
        self.encode(&mut v)?;
        Ok(v)
    }

    pub(crate) fn encode_into(&self, w: &mut OptionWriter) -> Result<(), EncodeError> {
        match self {
            Message::Client(m) => {
                w.client_header(m.msg_type.0, m.xid)?;
                write_options(w, &m.options)
            }
            Message::Relay(m) => {
                w.u8(m.msg_type.0);
                w.u8(m.hop_count);
                w.addr(&m.link_address);
                w.addr(&m.peer_address);
                write_options(w, &m.options)
            }
            Message::Unknown { msg_type, body } => {
                w.u8(*msg_type);
                w.bytes(body);
                Ok(())
            }
        }
    }

    pub fn wire_len(&self) -> usize {
        let opts = |v: &[DhcpOption]| v.iter().map(|o| o.wire_len()).sum::<usize>();
        match self {
            Message::Client(m) => 4 + opts(&m.options),
            Message::Relay(m) => 34 + opts(&m.options),
            Message::Unknown { body, .. } => 1 + body.len(),
        }
    }

    /// The client message at the bottom of a relay chain, and the relay
    /// levels from outermost to innermost.
    pub fn unwrap_relays(&self) -> (Vec<&RelayMessage>, Option<&Message>) {
        let mut chain = Vec::new();
        let mut cur = self;
        loop {
            match cur {
                Message::Relay(r) => {
                    chain.push(r);
                    match r.options.iter().find_map(|o| match o {
                        DhcpOption::RelayMsg(m) => Some(m.as_ref()),
                        _ => None,
                    }) {
                        Some(inner) => cur = inner,
                        None => return (chain, None),
                    }
                }
                other => return (chain, Some(other)),
            }
        }
    }
}

impl ClientMessage {
    pub fn new(msg_type: MessageType, xid: u32) -> Self {
        ClientMessage {
            msg_type,
            xid: xid & 0x00ff_ffff,
            options: Vec::new(),
        }
    }

    pub fn with(mut self, o: DhcpOption) -> Self {
        self.options.push(o);
        self
    }
}

impl RelayMessage {
    /// The relayed message in RELAY_MSG, if any.
    pub fn relay_msg(&self) -> Option<&Message> {
        self.options.iter().find_map(|o| match o {
            DhcpOption::RelayMsg(m) => Some(m.as_ref()),
            _ => None,
        })
    }

    /// A copy without the RELAY_MSG option at the innermost level, as stored
    /// for LQ_RELAY_DATA (RFC 5007 §4.1.2.4).
    pub fn without_client_message(&self) -> RelayMessage {
        let options = self
            .options
            .iter()
            .filter_map(|o| match o {
                DhcpOption::RelayMsg(m) => match m.as_ref() {
                    Message::Relay(inner) => Some(DhcpOption::RelayMsg(Box::new(Message::Relay(
                        inner.without_client_message(),
                    )))),
                    _ => None,
                },
                o => Some(o.clone()),
            })
            .collect();
        RelayMessage {
            options,
            ..self.clone()
        }
    }

    pub fn interface_id(&self) -> Option<&[u8]> {
        self.options.iter().find_map(|o| match o {
            DhcpOption::InterfaceId(b) => Some(b.as_slice()),
            _ => None,
        })
    }

    pub fn has(&self, c: u16) -> bool {
        OptionsExt::get(self.options.as_slice(), c).is_some()
    }
}

/// True if `c` is an option that only relays may add (RFC 8415 §21.18,
/// RFC 4649, 4580, 5460, 6939, 8357): a client message carrying one is bogus.
pub fn is_relay_only_option(c: u16) -> bool {
    matches!(
        c,
        code::RELAY_MSG
            | code::INTERFACE_ID
            | code::REMOTE_ID
            | code::SUBSCRIBER_ID
            | code::RELAY_ID
            | code::CLIENT_LINKLAYER_ADDR
            | code::RELAY_PORT
            | code::ERO
    )
}
