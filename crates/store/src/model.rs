//! The data model: one [`Binding`] is one client's state on one link (one CLIENT_DATA, RFC 5007 §4.1.2.2).
//!
//! Byte fields are already-encoded wire values (DUIDs, relay chains, option payloads); the store does not
//! interpret them except for indexing.

use std::net::Ipv6Addr;

use serde::Serialize;

/// Serialize bytes as a hex string in JSON output.
pub(crate) mod hexser {
    use serde::Serializer;
    pub fn ser<S: Serializer>(b: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&hex::encode(b))
    }
    pub fn ser_opt<S: Serializer>(b: &Option<Vec<u8>>, s: S) -> Result<S::Ok, S::Error> {
        match b {
            Some(b) => s.serialize_str(&hex::encode(b)),
            None => s.serialize_none(),
        }
    }
    pub fn ser_vec<S: Serializer>(v: &[Vec<u8>], s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(v.iter().map(hex::encode))
    }
    pub fn ser_ll<S: Serializer>(v: &Option<(u16, Vec<u8>)>, s: S) -> Result<S::Ok, S::Error> {
        match v {
            Some((t, b)) => s.serialize_str(&format!("{t}:{}", hex::encode(b))),
            None => s.serialize_none(),
        }
    }
}

/// One client's state on one link.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Binding {
    pub client: ClientRecord,
    pub leases: Vec<Lease>,
}

impl Binding {
    /// True when at least one lease is Active.
    pub fn is_active(&self) -> bool {
        self.leases.iter().any(|l| l.state == LeaseState::Active)
    }
    /// Keep only the Active leases (what a leasequery reply carries, RFC 5007 §4.4.2).
    pub fn active_only(mut self) -> Self {
        self.leases.retain(|l| l.state == LeaseState::Active);
        self
    }
}

/// Per-client data of a binding.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ClientRecord {
    /// Client DUID (wire bytes of OPTION_CLIENTID's payload).
    #[serde(serialize_with = "hexser::ser")]
    pub duid: Vec<u8>,
    /// Configured link name.
    pub link: String,
    /// The relay link-address seen (innermost relay), or `::` for a directly connected client.
    pub link_address: Ipv6Addr,
    /// Unix seconds of the last client transaction (RFC 5007 OPTION_CLT_TIME is `now - cltt`).
    pub cltt: u64,
    /// Relay data of the last relayed transaction; None when the client talked to us directly.
    pub relay: Option<RelayInfo>,
    /// Store-wide increasing change sequence, assigned by the store on commit (RFC 7653 catch-up).
    pub changed_seq: u64,
    /// Unix seconds of the last change (RFC 7653 LQ_START_TIME / LQ_END_TIME filters).
    pub changed_at: u64,
}

/// The relay data of the last relayed client transaction (RFC 5007 OPTION_LQ_RELAY_DATA, RFC 5460).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RelayInfo {
    /// Peer-address for OPTION_LQ_RELAY_DATA: the outermost relay's source address.
    pub peer_address: Ipv6Addr,
    /// The encoded RELAY-FORW chain without the innermost client message (RFC 8415 §18.3).
    #[serde(serialize_with = "hexser::ser")]
    pub chain: Vec<u8>,
    /// Every OPTION_RELAY_ID (53) DUID seen in the chain (RFC 5460 §5.4.1).
    #[serde(serialize_with = "hexser::ser_vec")]
    pub relay_ids: Vec<Vec<u8>>,
    /// The most recent OPTION_REMOTE_ID (37, RFC 4649).
    pub remote_id: Option<RemoteId>,
    /// OPTION_SUBSCRIBER_ID (38, RFC 4580).
    #[serde(serialize_with = "hexser::ser_opt")]
    pub subscriber_id: Option<Vec<u8>>,
    /// OPTION_INTERFACE_ID (18).
    #[serde(serialize_with = "hexser::ser_opt")]
    pub interface_id: Option<Vec<u8>>,
    /// OPTION_CLIENT_LINKLAYER_ADDR (79, RFC 6939): link-layer type and address.
    #[serde(serialize_with = "hexser::ser_ll")]
    pub client_linklayer: Option<(u16, Vec<u8>)>,
}

/// OPTION_REMOTE_ID payload (RFC 4649): enterprise number and opaque id.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub struct RemoteId {
    pub enterprise: u32,
    #[serde(serialize_with = "hexser::ser")]
    pub id: Vec<u8>,
}

/// The IA type of a lease (RFC 8415 §21.4, §21.5, §21.21).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LeaseKind {
    /// IA_NA address.
    Na,
    /// IA_TA temporary address.
    Ta,
    /// IA_PD delegated prefix.
    Pd,
}

/// Lease state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LeaseState {
    Active,
    Released,
    Expired,
    Declined,
}

impl std::str::FromStr for LeaseState {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Ok(match s.to_ascii_lowercase().as_str() {
            "active" => LeaseState::Active,
            "released" => LeaseState::Released,
            "expired" => LeaseState::Expired,
            "declined" => LeaseState::Declined,
            _ => {
                return Err(format!(
                    "unknown lease state {s:?} (active, released, expired, declined)"
                ))
            }
        })
    }
}

impl std::fmt::Display for LeaseState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            LeaseState::Active => "active",
            LeaseState::Released => "released",
            LeaseState::Expired => "expired",
            LeaseState::Declined => "declined",
        })
    }
}

impl std::fmt::Display for LeaseKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            LeaseKind::Na => "na",
            LeaseKind::Ta => "ta",
            LeaseKind::Pd => "pd",
        })
    }
}

/// One address or delegated prefix.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Lease {
    pub kind: LeaseKind,
    pub iaid: u32,
    /// The address, or the prefix (host bits zero) for PD.
    pub addr: Ipv6Addr,
    /// 128 for NA/TA.
    pub prefix_len: u8,
    /// Preferred lifetime in seconds as last granted.
    pub preferred: u32,
    /// Valid lifetime in seconds as last granted.
    pub valid: u32,
    /// Absolute expiry (unix seconds).
    pub expires_at: u64,
    pub state: LeaseState,
}

impl Lease {
    /// Last address covered by this lease (the prefix end for PD).
    pub fn end(&self) -> Ipv6Addr {
        let a = u128::from(self.addr);
        let host = if self.prefix_len >= 128 {
            0
        } else {
            u128::MAX >> self.prefix_len
        };
        Ipv6Addr::from(a | host)
    }
}

/// How a commit combines the update's leases with the stored ones.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LeaseMerge {
    /// Update leases with the same (kind, addr, prefix_len), append new ones, keep the rest (default).
    #[default]
    Merge,
    /// The update's leases replace the stored set.
    Replace,
}

/// One commit: the client's new record and the leases to insert or update.
///
/// Releases and declines are commits whose lease carries [`LeaseState::Released`] or
/// [`LeaseState::Declined`] (RFC 8415 §18.4.6, §18.4.7).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientUpdate {
    pub duid: Vec<u8>,
    pub link: String,
    pub link_address: Ipv6Addr,
    pub cltt: u64,
    /// Relay data of this transaction; None means the client talked to the server directly.
    pub relay: Option<RelayInfo>,
    pub leases: Vec<Lease>,
    pub merge: LeaseMerge,
    /// Time of the change (unix seconds); None uses the store's clock.
    pub now: Option<u64>,
}

impl ClientUpdate {
    /// An update with no leases, no relay data, merge mode, store clock.
    pub fn new(duid: impl Into<Vec<u8>>, link: impl Into<String>, cltt: u64) -> Self {
        ClientUpdate {
            duid: duid.into(),
            link: link.into(),
            link_address: Ipv6Addr::UNSPECIFIED,
            cltt,
            relay: None,
            leases: Vec::new(),
            merge: LeaseMerge::Merge,
            now: None,
        }
    }
}
