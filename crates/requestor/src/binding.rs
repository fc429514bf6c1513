//! One binding as returned in a CLIENT_DATA (RFC 5007 §4.4.2), decoded.

use lq6_proto::types::dhcp_time_to_unix;
use lq6_proto::{DhcpOption, Duid, LqRelayData};
use std::net::{Ipv6Addr, SocketAddr};

/// An address lease (IAADDR inside CLIENT_DATA). Lifetimes are in seconds,
/// relative to when the server built the message (or to `base_time`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AddressLease {
    pub address: Ipv6Addr,
    pub preferred: u32,
    pub valid: u32,
}

/// A delegated prefix (IAPREFIX inside CLIENT_DATA).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PrefixLease {
    pub prefix: Ipv6Addr,
    pub prefix_len: u8,
    pub preferred: u32,
    pub valid: u32,
}

/// One client on one link, as one server reported it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Binding {
    /// The server that returned it.
    pub server: SocketAddr,
    /// CLIENTID inside CLIENT_DATA.
    pub client_id: Option<Duid>,
    pub addresses: Vec<AddressLease>,
    pub prefixes: Vec<PrefixLease>,
    /// CLT_TIME: seconds since the server last heard from the client.
    pub clt_time: Option<u32>,
    /// LQ_RELAY_DATA, when requested and known.
    pub relay_data: Option<LqRelayData>,
    /// LQ_BASE_TIME of the message (or inside CLIENT_DATA): the server's
    /// absolute time (RFC 7653 §2) that CLT_TIME and lifetimes are relative to.
    pub base_time: Option<u32>,
    /// The link, when the query or an LQ_CLIENT_LINK re-query named it.
    pub link_address: Option<Ipv6Addr>,
    /// Unix time at which the requestor received the message.
    pub received_at: u64,
    /// Other options inside CLIENT_DATA (ORO-requested extras, unknown codes).
    pub other_options: Vec<DhcpOption>,
}

impl Binding {
    /// Builds a binding from the options of a CLIENT_DATA. `msg_base_time` is
    /// an LQ_BASE_TIME found at the top level of the carrying message.
    pub fn from_client_data(
        opts: Vec<DhcpOption>,
        server: SocketAddr,
        link_address: Option<Ipv6Addr>,
        msg_base_time: Option<u32>,
        received_at: u64,
    ) -> Binding {
        let mut b = Binding {
            server,
            client_id: None,
            addresses: Vec::new(),
            prefixes: Vec::new(),
            clt_time: None,
            relay_data: None,
            base_time: msg_base_time,
            link_address,
            received_at,
            other_options: Vec::new(),
        };
        for o in opts {
            match o {
                DhcpOption::ClientId(d) if b.client_id.is_none() => b.client_id = Some(d),
                DhcpOption::IaAddr(a) => b.addresses.push(AddressLease {
                    address: a.addr,
                    preferred: a.preferred,
                    valid: a.valid,
                }),
                DhcpOption::IaPrefix(p) => b.prefixes.push(PrefixLease {
                    prefix: p.prefix,
                    prefix_len: p.prefix_len,
                    preferred: p.preferred,
                    valid: p.valid,
                }),
                // Tolerate servers that wrap leases in IA_NA / IA_PD.
                DhcpOption::IaNa(ia) | DhcpOption::IaPd(ia) => {
                    for inner in ia.options {
                        match inner {
                            DhcpOption::IaAddr(a) => b.addresses.push(AddressLease {
                                address: a.addr,
                                preferred: a.preferred,
                                valid: a.valid,
                            }),
                            DhcpOption::IaPrefix(p) => b.prefixes.push(PrefixLease {
                                prefix: p.prefix,
                                prefix_len: p.prefix_len,
                                preferred: p.preferred,
                                valid: p.valid,
                            }),
                            _ => {}
                        }
                    }
                }
                DhcpOption::CltTime(t) if b.clt_time.is_none() => b.clt_time = Some(t),
                DhcpOption::LqRelayData(r) if b.relay_data.is_none() => b.relay_data = Some(r),
                DhcpOption::LqBaseTime(t) => b.base_time = Some(t),
                o => b.other_options.push(o),
            }
        }
        b
    }

    /// Unix time of the last client contact: base-time − clt-time when the
    /// server sent LQ_BASE_TIME, otherwise receipt time − clt-time.
    pub fn last_contact(&self) -> Option<u64> {
        let clt = self.clt_time? as u64;
        let base = self
            .base_time
            .map(dhcp_time_to_unix)
            .unwrap_or(self.received_at);
        Some(base.saturating_sub(clt))
    }
}

/// Splits the options of a REPLY/DATA message into its CLIENT_DATA contents
/// (if any) and its top-level LQ_BASE_TIME (if any).
pub(crate) fn take_client_data(opts: Vec<DhcpOption>) -> (Option<Vec<DhcpOption>>, Option<u32>) {
    let mut cd = None;
    let mut base = None;
    for o in opts {
        match o {
            DhcpOption::ClientData(v) if cd.is_none() => cd = Some(v),
            DhcpOption::LqBaseTime(t) => base = Some(t),
            _ => {}
        }
    }
    (cd, base)
}

pub(crate) fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}
