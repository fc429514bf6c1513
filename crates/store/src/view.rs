//! Borrowed, allocation-free views of a binding, for [`LeaseStore::page_visit`](crate::LeaseStore::page_visit).
//!
//! A [`BindingView`] carries the same information as a [`Binding`] but borrows every byte field from the
//! row (or record blob) it was read from, or from an owned [`Binding`] ([`BindingView::from`]). Relay-IDs
//! and leases are parsed lazily by iterators ([`RelayIds`], [`Leases`]); a record is validated once when
//! its view is built, so the iterators cannot fail.

use std::net::Ipv6Addr;

use crate::{Binding, ClientRecord, Lease, LeaseKind, LeaseState, RelayInfo, RemoteId};

/// One lease, by value (parsed from the record on demand).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct LeaseView {
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

impl From<LeaseView> for Lease {
    fn from(l: LeaseView) -> Self {
        Lease {
            kind: l.kind,
            iaid: l.iaid,
            addr: l.addr,
            prefix_len: l.prefix_len,
            preferred: l.preferred,
            valid: l.valid,
            expires_at: l.expires_at,
            state: l.state,
        }
    }
}

impl From<&Lease> for LeaseView {
    fn from(l: &Lease) -> Self {
        LeaseView {
            kind: l.kind,
            iaid: l.iaid,
            addr: l.addr,
            prefix_len: l.prefix_len,
            preferred: l.preferred,
            valid: l.valid,
            expires_at: l.expires_at,
            state: l.state,
        }
    }
}

/// Relay data of a binding, borrowed (see [`RelayInfo`]).
#[derive(Debug, Clone)]
pub struct RelayView<'a> {
    /// Peer-address for OPTION_LQ_RELAY_DATA: the outermost relay's source address.
    pub peer_address: Ipv6Addr,
    /// The encoded RELAY-FORW chain without the innermost client message.
    pub chain: &'a [u8],
    pub(crate) relay_ids: RelayIds<'a>,
    /// The most recent OPTION_REMOTE_ID: enterprise number and opaque id.
    pub remote_id: Option<(u32, &'a [u8])>,
    /// OPTION_SUBSCRIBER_ID.
    pub subscriber_id: Option<&'a [u8]>,
    /// OPTION_INTERFACE_ID.
    pub interface_id: Option<&'a [u8]>,
    /// OPTION_CLIENT_LINKLAYER_ADDR: link-layer type and address.
    pub client_linklayer: Option<(u16, &'a [u8])>,
}

impl<'a> RelayView<'a> {
    /// Every OPTION_RELAY_ID DUID seen in the chain, in order (no allocation).
    pub fn relay_ids(&self) -> RelayIds<'a> {
        self.relay_ids.clone()
    }

    /// The owned relay data.
    pub fn to_owned(&self) -> RelayInfo {
        RelayInfo {
            peer_address: self.peer_address,
            chain: self.chain.to_vec(),
            relay_ids: self.relay_ids().map(<[u8]>::to_vec).collect(),
            remote_id: self.remote_id.map(|(enterprise, id)| RemoteId {
                enterprise,
                id: id.to_vec(),
            }),
            subscriber_id: self.subscriber_id.map(<[u8]>::to_vec),
            interface_id: self.interface_id.map(<[u8]>::to_vec),
            client_linklayer: self.client_linklayer.map(|(t, a)| (t, a.to_vec())),
        }
    }
}

impl<'a> From<&'a RelayInfo> for RelayView<'a> {
    fn from(r: &'a RelayInfo) -> Self {
        RelayView {
            peer_address: r.peer_address,
            chain: &r.chain,
            relay_ids: RelayIds(IdsSrc::Owned(r.relay_ids.iter())),
            remote_id: r
                .remote_id
                .as_ref()
                .map(|x| (x.enterprise, x.id.as_slice())),
            subscriber_id: r.subscriber_id.as_deref(),
            interface_id: r.interface_id.as_deref(),
            client_linklayer: r.client_linklayer.as_ref().map(|(t, a)| (*t, a.as_slice())),
        }
    }
}

/// Iterator over the Relay-ID DUIDs of a [`RelayView`].
#[derive(Debug, Clone)]
pub struct RelayIds<'a>(IdsSrc<'a>);

#[derive(Debug, Clone)]
enum IdsSrc<'a> {
    /// `n` x (u32 len | bytes), validated.
    Record {
        b: &'a [u8],
        n: u16,
    },
    Owned(std::slice::Iter<'a, Vec<u8>>),
}

impl<'a> RelayIds<'a> {
    /// From a validated record region holding `n` length-prefixed ids.
    pub(crate) fn record(b: &'a [u8], n: u16) -> Self {
        RelayIds(IdsSrc::Record { b, n })
    }
}

impl<'a> Iterator for RelayIds<'a> {
    type Item = &'a [u8];
    #[inline]
    fn next(&mut self) -> Option<&'a [u8]> {
        match &mut self.0 {
            IdsSrc::Record { b, n } => {
                if *n == 0 || b.len() < 4 {
                    return None;
                }
                let len = u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize;
                let rest = &b[4..];
                let len = len.min(rest.len());
                let (id, t) = rest.split_at(len);
                *b = t;
                *n -= 1;
                Some(id)
            }
            IdsSrc::Owned(it) => it.next().map(Vec::as_slice),
        }
    }
    fn size_hint(&self) -> (usize, Option<usize>) {
        let n = match &self.0 {
            IdsSrc::Record { n, .. } => *n as usize,
            IdsSrc::Owned(it) => it.len(),
        };
        (n, Some(n))
    }
}

impl ExactSizeIterator for RelayIds<'_> {}

/// Bytes of one lease in the record.
pub(crate) const LEASE_LEN: usize = 39;

/// Iterator over the leases of a [`BindingView`] (only the Active ones when the view is active-only).
#[derive(Debug, Clone)]
pub struct Leases<'a> {
    src: LeasesSrc<'a>,
    active_only: bool,
}

#[derive(Debug, Clone, Copy)]
pub(crate) enum LeasesSrc<'a> {
    /// Validated `n x 39` bytes of the record.
    Record(&'a [u8]),
    Owned(&'a [Lease]),
}

#[inline]
fn be32(b: &[u8]) -> u32 {
    u32::from_be_bytes([b[0], b[1], b[2], b[3]])
}

/// Kind and state codes of the record (shared with `record`).
pub(crate) fn kind_from(k: u8) -> Option<LeaseKind> {
    match k {
        0 => Some(LeaseKind::Na),
        1 => Some(LeaseKind::Ta),
        2 => Some(LeaseKind::Pd),
        _ => None,
    }
}

pub(crate) fn state_from(s: u8) -> Option<LeaseState> {
    match s {
        0 => Some(LeaseState::Active),
        1 => Some(LeaseState::Released),
        2 => Some(LeaseState::Expired),
        3 => Some(LeaseState::Declined),
        _ => None,
    }
}

/// Parse one validated 39-byte lease.
#[inline]
fn lease_at(b: &[u8]) -> LeaseView {
    let mut a = [0u8; 16];
    a.copy_from_slice(&b[5..21]);
    let mut e = [0u8; 8];
    e.copy_from_slice(&b[30..38]);
    LeaseView {
        kind: kind_from(b[0]).unwrap_or(LeaseKind::Na),
        iaid: be32(&b[1..5]),
        addr: Ipv6Addr::from(a),
        prefix_len: b[21],
        preferred: be32(&b[22..26]),
        valid: be32(&b[26..30]),
        expires_at: u64::from_be_bytes(e),
        state: state_from(b[38]).unwrap_or(LeaseState::Expired),
    }
}

impl Iterator for Leases<'_> {
    type Item = LeaseView;
    #[inline]
    fn next(&mut self) -> Option<LeaseView> {
        loop {
            let l = match &mut self.src {
                LeasesSrc::Record(b) => {
                    if b.len() < LEASE_LEN {
                        return None;
                    }
                    let (h, t) = b.split_at(LEASE_LEN);
                    *b = t;
                    // Cheap state check before parsing the whole lease.
                    if self.active_only && h[38] != 0 {
                        continue;
                    }
                    lease_at(h)
                }
                LeasesSrc::Owned(v) => {
                    let (h, t) = v.split_first()?;
                    *v = t;
                    LeaseView::from(h)
                }
            };
            if !self.active_only || l.state == LeaseState::Active {
                return Some(l);
            }
        }
    }
    fn size_hint(&self) -> (usize, Option<usize>) {
        let n = match &self.src {
            LeasesSrc::Record(b) => b.len() / LEASE_LEN,
            LeasesSrc::Owned(v) => v.len(),
        };
        (if self.active_only { 0 } else { n }, Some(n))
    }
}

/// One binding, borrowed (see [`Binding`] and [`ClientRecord`]). Cheap to clone.
#[derive(Debug, Clone)]
pub struct BindingView<'a> {
    /// Client DUID (wire bytes of OPTION_CLIENTID's payload).
    pub duid: &'a [u8],
    /// Configured link name.
    pub link: &'a str,
    /// The relay link-address seen, or `::` for a directly connected client.
    pub link_address: Ipv6Addr,
    /// Unix seconds of the last client transaction.
    pub cltt: u64,
    /// Store-wide change sequence of the last change.
    pub changed_seq: u64,
    /// Unix seconds of the last change.
    pub changed_at: u64,
    /// Relay data of the last relayed transaction; None when the client talked to us directly.
    pub relay: Option<RelayView<'a>>,
    pub(crate) leases: LeasesSrc<'a>,
    pub(crate) active_only: bool,
}

impl<'a> BindingView<'a> {
    /// The leases: all of them, or only the Active ones for a view from a query without
    /// `include_inactive` (as [`LeaseStore::page`](crate::LeaseStore::page) returns).
    pub fn leases(&self) -> Leases<'a> {
        Leases {
            src: self.leases,
            active_only: self.active_only,
        }
    }

    /// The same view, yielding only Active leases (like [`Binding::active_only`]).
    pub fn active_only(mut self) -> Self {
        self.active_only = true;
        self
    }

    /// True when at least one lease is Active.
    pub fn is_active(&self) -> bool {
        Leases {
            src: self.leases,
            active_only: true,
        }
        .next()
        .is_some()
    }

    /// The owned binding (the leases this view yields).
    pub fn to_owned(&self) -> Binding {
        Binding {
            client: ClientRecord {
                duid: self.duid.to_vec(),
                link: self.link.to_owned(),
                link_address: self.link_address,
                cltt: self.cltt,
                relay: self.relay.as_ref().map(RelayView::to_owned),
                changed_seq: self.changed_seq,
                changed_at: self.changed_at,
            },
            leases: self.leases().map(Lease::from).collect(),
        }
    }
}

impl<'a> From<&'a Binding> for BindingView<'a> {
    /// A view of every lease of `b`.
    fn from(b: &'a Binding) -> Self {
        let c = &b.client;
        BindingView {
            duid: &c.duid,
            link: &c.link,
            link_address: c.link_address,
            cltt: c.cltt,
            changed_seq: c.changed_seq,
            changed_at: c.changed_at,
            relay: c.relay.as_ref().map(RelayView::from),
            leases: LeasesSrc::Owned(&b.leases),
            active_only: false,
        }
    }
}

impl Binding {
    /// A borrowed view of this binding (all leases).
    pub fn view(&self) -> BindingView<'_> {
        BindingView::from(self)
    }
}
