//! The compact per-binding record shared by both backends, and the merge rules of a commit.
//!
//! A binding is one row; its relay data and leases are packed into one `data` blob so that a bulk scan
//! reads one row per CLIENT_DATA. Layout (all integers big-endian):
//! ```text
//! u8 version(=1) | u8 flags (bit0: relay present, bit1: client columns present)
//! [client] u16 n, duid | u16 n, link | link_address(16) | u64 cltt | u64 changed_seq | u64 changed_at
//! [relay] peer(16) | bytes chain | u16 n, n x bytes relay_id | opt remote(u32 ent, bytes id)
//!         | opt bytes subscriber | opt bytes interface | opt (u16 type, bytes ll)
//! u16 n_leases, n x { u8 kind | u32 iaid | addr(16) | u8 plen | u32 pref | u32 valid | u64 expires | u8 state }
//! ```
//! where `bytes` is `u32 len | data` and `opt` is `u8 present | value`. The client section repeats the
//! binding's own columns; the SQLite backend writes it so that a bulk scan reads two columns instead of
//! eight (SQLite's API costs tens of nanoseconds per column read: reading eight took half of a streamed
//! binding's time).

use std::collections::{BTreeMap, HashSet};
use std::net::Ipv6Addr;

use crate::view::{kind_from, state_from, LeasesSrc, RelayIds, RelayView, LEASE_LEN};
use crate::{
    Binding, ClientRecord, ClientUpdate, CommitInfo, Lease, LeaseKind, LeaseMerge, LeaseState,
    RelayInfo, RemoteId, Result, StoreError,
};

const VERSION: u8 = 1;
const FLAG_RELAY: u8 = 1;
const FLAG_CLIENT: u8 = 2;

/// The binding's own columns, as repeated in a record blob's client section.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ClientCols<'a> {
    pub duid: &'a [u8],
    pub link: &'a str,
    pub link_address: Ipv6Addr,
    pub cltt: u64,
    pub changed_seq: u64,
    pub changed_at: u64,
}

/// The Remote-ID columns an update writes (`remote_ent`, `remote_id`): enterprise number and bytes,
/// or NULLs. Both backends store them beside the record, for queries by Remote-ID.
pub(crate) fn remote_cols(u: &ClientUpdate) -> (Option<i64>, Option<&[u8]>) {
    match u.relay.as_ref().and_then(|r| r.remote_id.as_ref()) {
        Some(r) => (Some(r.enterprise as i64), Some(r.id.as_slice())),
        None => (None, None),
    }
}

/// `data` (a blob from [`encode`]) with the client section inserted after its flags. A DUID or
/// link name too long for the section's u16 lengths leaves the blob as it was (readers then use
/// the columns).
pub(crate) fn with_client_cols(data: Vec<u8>, c: &ClientCols<'_>) -> Vec<u8> {
    let (Ok(dl), Ok(ll)) = (u16::try_from(c.duid.len()), u16::try_from(c.link.len())) else {
        return data;
    };
    if data.len() < 2 || data[1] & FLAG_CLIENT != 0 {
        return data;
    }
    let mut out = Vec::with_capacity(data.len() + 44 + c.duid.len() + c.link.len());
    out.push(data[0]);
    out.push(data[1] | FLAG_CLIENT);
    out.extend_from_slice(&dl.to_be_bytes());
    out.extend_from_slice(c.duid);
    out.extend_from_slice(&ll.to_be_bytes());
    out.extend_from_slice(c.link.as_bytes());
    out.extend_from_slice(&c.link_address.octets());
    for v in [c.cltt, c.changed_seq, c.changed_at] {
        out.extend_from_slice(&v.to_be_bytes());
    }
    out.extend_from_slice(&data[2..]);
    out
}

/// Reads the version and flags, and the client section when the flags announce one.
fn head<'a>(r: &mut Rd<'a>) -> Result<(u8, Option<ClientCols<'a>>)> {
    let v = r.u8()?;
    if v != VERSION {
        return Err(StoreError::Corrupt(format!("unknown record version {v}")));
    }
    let flags = r.u8()?;
    if flags & FLAG_CLIENT == 0 {
        return Ok((flags, None));
    }
    let n = r.u16()? as usize;
    let duid = r.take(n)?;
    let n = r.u16()? as usize;
    let link = std::str::from_utf8(r.take(n)?)
        .map_err(|_| StoreError::Corrupt("record: link name is not UTF-8".into()))?;
    let cols = ClientCols {
        duid,
        link,
        link_address: r.addr()?,
        cltt: r.u64()?,
        changed_seq: r.u64()?,
        changed_at: r.u64()?,
    };
    Ok((flags, Some(cols)))
}

/// The client section of a record blob, if it has one (the rest of the blob is not read).
pub(crate) fn client_cols(b: &[u8]) -> Result<Option<ClientCols<'_>>> {
    Ok(head(&mut Rd { b })?.1)
}

fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    out.extend_from_slice(&(b.len() as u32).to_be_bytes());
    out.extend_from_slice(b);
}

/// Encode relay data and leases into the record blob.
pub(crate) fn encode(relay: Option<&RelayInfo>, leases: &[Lease]) -> Vec<u8> {
    let mut out = Vec::with_capacity(
        8 + relay.map_or(0, |r| {
            64 + r.chain.len() + r.relay_ids.iter().map(|x| x.len() + 4).sum::<usize>()
        }) + leases.len() * 39,
    );
    out.push(VERSION);
    out.push(if relay.is_some() { FLAG_RELAY } else { 0 });
    if let Some(r) = relay {
        out.extend_from_slice(&r.peer_address.octets());
        put_bytes(&mut out, &r.chain);
        out.extend_from_slice(&(r.relay_ids.len().min(u16::MAX as usize) as u16).to_be_bytes());
        for id in r.relay_ids.iter().take(u16::MAX as usize) {
            put_bytes(&mut out, id);
        }
        match &r.remote_id {
            Some(rid) => {
                out.push(1);
                out.extend_from_slice(&rid.enterprise.to_be_bytes());
                put_bytes(&mut out, &rid.id);
            }
            None => out.push(0),
        }
        for o in [&r.subscriber_id, &r.interface_id] {
            match o {
                Some(b) => {
                    out.push(1);
                    put_bytes(&mut out, b);
                }
                None => out.push(0),
            }
        }
        match &r.client_linklayer {
            Some((t, b)) => {
                out.push(1);
                out.extend_from_slice(&t.to_be_bytes());
                put_bytes(&mut out, b);
            }
            None => out.push(0),
        }
    }
    out.extend_from_slice(&(leases.len().min(u16::MAX as usize) as u16).to_be_bytes());
    for l in leases.iter().take(u16::MAX as usize) {
        out.push(match l.kind {
            LeaseKind::Na => 0,
            LeaseKind::Ta => 1,
            LeaseKind::Pd => 2,
        });
        out.extend_from_slice(&l.iaid.to_be_bytes());
        out.extend_from_slice(&l.addr.octets());
        out.push(l.prefix_len);
        out.extend_from_slice(&l.preferred.to_be_bytes());
        out.extend_from_slice(&l.valid.to_be_bytes());
        out.extend_from_slice(&l.expires_at.to_be_bytes());
        out.push(state_code(l.state));
    }
    out
}

pub(crate) fn state_code(s: LeaseState) -> u8 {
    match s {
        LeaseState::Active => 0,
        LeaseState::Released => 1,
        LeaseState::Expired => 2,
        LeaseState::Declined => 3,
    }
}

struct Rd<'a> {
    b: &'a [u8],
}

impl<'a> Rd<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        if self.b.len() < n {
            return Err(StoreError::Corrupt(format!(
                "record truncated (need {n} bytes, have {})",
                self.b.len()
            )));
        }
        let (h, t) = self.b.split_at(n);
        self.b = t;
        Ok(h)
    }
    fn u8(&mut self) -> Result<u8> {
        Ok(self.take(1)?[0])
    }
    fn u16(&mut self) -> Result<u16> {
        let s = self.take(2)?;
        Ok(u16::from_be_bytes([s[0], s[1]]))
    }
    fn u32(&mut self) -> Result<u32> {
        let s = self.take(4)?;
        Ok(u32::from_be_bytes([s[0], s[1], s[2], s[3]]))
    }
    fn u64(&mut self) -> Result<u64> {
        let s = self.take(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(s);
        Ok(u64::from_be_bytes(a))
    }
    fn addr(&mut self) -> Result<Ipv6Addr> {
        let s = self.take(16)?;
        let mut a = [0u8; 16];
        a.copy_from_slice(s);
        Ok(Ipv6Addr::from(a))
    }
    fn bytes(&mut self) -> Result<Vec<u8>> {
        let n = self.u32()? as usize;
        Ok(self.take(n)?.to_vec())
    }
    fn opt_bytes(&mut self) -> Result<Option<Vec<u8>>> {
        Ok(if self.u8()? != 0 {
            Some(self.bytes()?)
        } else {
            None
        })
    }
}

/// Decode a record blob.
pub(crate) fn decode(b: &[u8]) -> Result<(Option<RelayInfo>, Vec<Lease>)> {
    let mut r = Rd { b };
    let (flags, _) = head(&mut r)?;
    let relay = if flags & FLAG_RELAY != 0 {
        let peer_address = r.addr()?;
        let chain = r.bytes()?;
        let n = r.u16()? as usize;
        let mut relay_ids = Vec::with_capacity(n.min(64));
        for _ in 0..n {
            relay_ids.push(r.bytes()?);
        }
        let remote_id = if r.u8()? != 0 {
            let enterprise = r.u32()?;
            Some(RemoteId {
                enterprise,
                id: r.bytes()?,
            })
        } else {
            None
        };
        let subscriber_id = r.opt_bytes()?;
        let interface_id = r.opt_bytes()?;
        let client_linklayer = if r.u8()? != 0 {
            let t = r.u16()?;
            Some((t, r.bytes()?))
        } else {
            None
        };
        Some(RelayInfo {
            peer_address,
            chain,
            relay_ids,
            remote_id,
            subscriber_id,
            interface_id,
            client_linklayer,
        })
    } else {
        None
    };
    let n = r.u16()? as usize;
    let mut leases = Vec::with_capacity(n);
    for _ in 0..n {
        let kind = match r.u8()? {
            0 => LeaseKind::Na,
            1 => LeaseKind::Ta,
            2 => LeaseKind::Pd,
            k => return Err(StoreError::Corrupt(format!("unknown lease kind {k}"))),
        };
        let iaid = r.u32()?;
        let addr = r.addr()?;
        let prefix_len = r.u8()?;
        if prefix_len > 128 {
            return Err(StoreError::Corrupt(format!("prefix length {prefix_len}")));
        }
        let preferred = r.u32()?;
        let valid = r.u32()?;
        let expires_at = r.u64()?;
        let state = match r.u8()? {
            0 => LeaseState::Active,
            1 => LeaseState::Released,
            2 => LeaseState::Expired,
            3 => LeaseState::Declined,
            s => return Err(StoreError::Corrupt(format!("unknown lease state {s}"))),
        };
        leases.push(Lease {
            kind,
            iaid,
            addr,
            prefix_len,
            preferred,
            valid,
            expires_at,
            state,
        });
    }
    if !r.b.is_empty() {
        return Err(StoreError::Corrupt(format!(
            "{} trailing bytes in record",
            r.b.len()
        )));
    }
    Ok((relay, leases))
}

impl<'a> Rd<'a> {
    fn slice(&mut self) -> Result<&'a [u8]> {
        let n = self.u32()? as usize;
        self.take(n)
    }
    fn opt_slice(&mut self) -> Result<Option<&'a [u8]>> {
        Ok(if self.u8()? != 0 {
            Some(self.slice()?)
        } else {
            None
        })
    }
}

/// Decode a record blob into borrowed relay data and the (validated) lease region, without allocating.
/// Accepts exactly the blobs [`decode`] accepts.
pub(crate) fn decode_view(b: &[u8]) -> Result<(Option<RelayView<'_>>, LeasesSrc<'_>)> {
    let mut r = Rd { b };
    let (flags, _) = head(&mut r)?;
    let relay = if flags & FLAG_RELAY != 0 {
        let peer_address = r.addr()?;
        let chain = r.slice()?;
        let n = r.u16()?;
        let ids_start = r.b;
        for _ in 0..n {
            r.slice()?;
        }
        let ids = &ids_start[..ids_start.len() - r.b.len()];
        let remote_id = if r.u8()? != 0 {
            let enterprise = r.u32()?;
            Some((enterprise, r.slice()?))
        } else {
            None
        };
        let subscriber_id = r.opt_slice()?;
        let interface_id = r.opt_slice()?;
        let client_linklayer = if r.u8()? != 0 {
            let t = r.u16()?;
            Some((t, r.slice()?))
        } else {
            None
        };
        Some(RelayView {
            peer_address,
            chain,
            relay_ids: RelayIds::record(ids, n),
            remote_id,
            subscriber_id,
            interface_id,
            client_linklayer,
        })
    } else {
        None
    };
    let n = r.u16()? as usize;
    let leases = r.take(n * LEASE_LEN)?;
    if !r.b.is_empty() {
        return Err(StoreError::Corrupt(format!(
            "{} trailing bytes in record",
            r.b.len()
        )));
    }
    for l in leases.chunks_exact(LEASE_LEN) {
        if kind_from(l[0]).is_none() {
            return Err(StoreError::Corrupt(format!("unknown lease kind {}", l[0])));
        }
        if l[21] > 128 {
            return Err(StoreError::Corrupt(format!("prefix length {}", l[21])));
        }
        if state_from(l[38]).is_none() {
            return Err(StoreError::Corrupt(format!(
                "unknown lease state {}",
                l[38]
            )));
        }
    }
    Ok((relay, LeasesSrc::Record(leases)))
}

/// An active address range row (the address index; only Active leases have one).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct AddrRow {
    pub start: Ipv6Addr,
    pub end: Ipv6Addr,
    pub plen: u8,
    pub expires_at: u64,
}

/// What a commit must write, computed from the stored binding (if any) and the update.
#[derive(Debug)]
pub(crate) struct Plan {
    pub leases: Vec<Lease>,
    pub data: Vec<u8>,
    pub n_active: i64,
    pub n_leases: i64,
    /// Starts of this binding's address rows to delete.
    pub addr_del: Vec<Ipv6Addr>,
    /// Address rows to insert or replace (conflict-checked).
    pub addr_put: Vec<AddrRow>,
    pub relay_del: Vec<Vec<u8>>,
    pub relay_add: Vec<Vec<u8>>,
}

impl Plan {
    /// The first range to write that overlaps another range to write (they are sorted by start).
    pub(crate) fn self_overlap(&self) -> Option<Ipv6Addr> {
        self.addr_put
            .windows(2)
            .find(|w| w[0].end >= w[1].start)
            .map(|w| w[1].start)
    }

    /// Whether this binding's stored row at `start` is deleted or rewritten by the plan: such a
    /// row is judged by its new extent (or not at all), never by the one stored.
    pub(crate) fn rewrites(&self, start: Ipv6Addr) -> bool {
        self.addr_del.contains(&start) || self.addr_put.iter().any(|a| a.start == start)
    }

    /// What the caller of a commit gets back once `u` is written under change `seq` at `now`:
    /// the binding as stored.
    pub(crate) fn into_commit_info(self, u: &ClientUpdate, seq: u64, now: u64) -> CommitInfo {
        CommitInfo {
            seq,
            changed_at: now,
            binding: Binding {
                client: ClientRecord {
                    duid: u.duid.clone(),
                    link: u.link.clone(),
                    link_address: u.link_address,
                    cltt: u.cltt,
                    relay: u.relay.clone(),
                    changed_seq: seq,
                    changed_at: now,
                },
                leases: self.leases,
            },
        }
    }
}

/// The update that marks `b`'s overdue Active leases Expired, with how many it marks; None when
/// none is overdue. Both backends' expiry runs apply it like any other update.
pub(crate) fn expiry_update(b: crate::Binding, now: u64) -> Option<(ClientUpdate, u64)> {
    let mut leases = b.leases;
    let mut changed = 0;
    for l in leases.iter_mut() {
        if l.state == LeaseState::Active && l.expires_at <= now {
            l.state = LeaseState::Expired;
            changed += 1;
        }
    }
    (changed > 0).then(|| {
        let u = ClientUpdate {
            duid: b.client.duid,
            link: b.client.link,
            link_address: b.client.link_address,
            cltt: b.client.cltt,
            relay: b.client.relay,
            leases,
            merge: LeaseMerge::Replace,
            now: Some(now),
        };
        (u, changed)
    })
}

fn addr_map(leases: &[Lease]) -> BTreeMap<Ipv6Addr, AddrRow> {
    leases
        .iter()
        .filter(|l| l.state == LeaseState::Active)
        .map(|l| {
            (
                l.addr,
                AddrRow {
                    start: l.addr,
                    end: l.end(),
                    plen: l.prefix_len,
                    expires_at: l.expires_at,
                },
            )
        })
        .collect()
}

/// Validate and normalise the update's leases (prefix length, host bits of delegated prefixes).
pub(crate) fn normalise(leases: &[Lease]) -> Result<Vec<Lease>> {
    let mut out = Vec::with_capacity(leases.len());
    for l in leases {
        let mut l = l.clone();
        match l.kind {
            LeaseKind::Na | LeaseKind::Ta if l.prefix_len != 128 => {
                return Err(StoreError::Invalid(format!(
                    "{} lease {} has prefix length {}",
                    l.kind, l.addr, l.prefix_len
                )));
            }
            _ if l.prefix_len > 128 => {
                return Err(StoreError::Invalid(format!(
                    "prefix length {} > 128",
                    l.prefix_len
                )));
            }
            _ => {}
        }
        if l.prefix_len < 128 {
            let mask = if l.prefix_len == 0 {
                0
            } else {
                u128::MAX << (128 - l.prefix_len)
            };
            l.addr = Ipv6Addr::from(u128::from(l.addr) & mask);
        }
        out.push(l);
    }
    Ok(out)
}

fn dedup_ids(ids: &[Vec<u8>]) -> Vec<Vec<u8>> {
    let mut seen = HashSet::new();
    ids.iter()
        .filter(|i| seen.insert(i.as_slice()))
        .cloned()
        .collect()
}

/// Merge the update into the stored state and compute the index changes.
pub(crate) fn plan(
    old: Option<(&Option<RelayInfo>, &[Lease])>,
    upd: &ClientUpdate,
) -> Result<Plan> {
    let new_leases = normalise(&upd.leases)?;
    let key = |l: &Lease| (l.kind, l.addr, l.prefix_len);
    let mut leases: Vec<Lease> = match (old, upd.merge) {
        (Some((_, ol)), LeaseMerge::Merge) => ol.to_vec(),
        _ => Vec::new(),
    };
    for l in new_leases {
        match leases.iter_mut().find(|x| key(x) == key(&l)) {
            Some(x) => *x = l,
            None => leases.push(l),
        }
    }
    if leases.len() > u16::MAX as usize {
        return Err(StoreError::Invalid(
            "more than 65535 leases in one binding".into(),
        ));
    }
    // Address index diff.
    let old_map = old.map(|(_, l)| addr_map(l)).unwrap_or_default();
    let new_map = addr_map(&leases);
    if new_map.len()
        != leases
            .iter()
            .filter(|l| l.state == LeaseState::Active)
            .count()
    {
        return Err(StoreError::Invalid(
            "the same address is active twice in one binding".into(),
        ));
    }
    let addr_del = old_map
        .keys()
        .filter(|k| !new_map.contains_key(k))
        .copied()
        .collect();
    let addr_put = new_map
        .iter()
        .filter(|(k, v)| old_map.get(k) != Some(v))
        .map(|(_, v)| *v)
        .collect();
    // Relay-id index diff.
    let old_ids: Vec<Vec<u8>> = old
        .and_then(|(r, _)| r.as_ref())
        .map(|r| dedup_ids(&r.relay_ids))
        .unwrap_or_default();
    let new_ids: Vec<Vec<u8>> = upd
        .relay
        .as_ref()
        .map(|r| dedup_ids(&r.relay_ids))
        .unwrap_or_default();
    let relay_del = old_ids
        .iter()
        .filter(|i| !new_ids.contains(i))
        .cloned()
        .collect();
    let relay_add = new_ids
        .iter()
        .filter(|i| !old_ids.contains(i))
        .cloned()
        .collect();
    let data = encode(upd.relay.as_ref(), &leases);
    let n_active = new_map.len() as i64;
    Ok(Plan {
        n_leases: leases.len() as i64,
        leases,
        data,
        n_active,
        addr_del,
        addr_put,
        relay_del,
        relay_add,
    })
}

/// 16-byte big-endian form of an address (memcmp order == numeric order).
pub(crate) fn a16(a: Ipv6Addr) -> [u8; 16] {
    a.octets()
}

/// Parse a 16-byte address column.
pub(crate) fn addr_from(b: &[u8]) -> Result<Ipv6Addr> {
    let a: [u8; 16] = b
        .try_into()
        .map_err(|_| StoreError::Corrupt(format!("address of {} bytes", b.len())))?;
    Ok(Ipv6Addr::from(a))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roundtrip() {
        let relay = RelayInfo {
            peer_address: "fe80::1".parse().unwrap(),
            chain: vec![12, 0, 1, 2],
            relay_ids: vec![vec![0, 1, 2], vec![9]],
            remote_id: Some(RemoteId {
                enterprise: 4491,
                id: vec![1, 2, 3],
            }),
            subscriber_id: None,
            interface_id: Some(b"eth0".to_vec()),
            client_linklayer: Some((1, vec![0, 1, 2, 3, 4, 5])),
        };
        let leases = vec![Lease {
            kind: LeaseKind::Pd,
            iaid: 7,
            addr: "2001:db8:100::".parse().unwrap(),
            prefix_len: 56,
            preferred: 100,
            valid: 200,
            expires_at: 12345,
            state: LeaseState::Active,
        }];
        let b = encode(Some(&relay), &leases);
        assert_eq!(decode(&b).unwrap(), (Some(relay.clone()), leases.clone()));
        let (rv, ls) = decode_view(&b).unwrap();
        assert_eq!(rv.unwrap().to_owned(), relay);
        let LeasesSrc::Record(lb) = ls else { panic!() };
        assert_eq!(lb.len(), LEASE_LEN);
        for n in 0..b.len() {
            assert!(decode_view(&b[..n]).is_err());
        }
        let b = encode(None, &leases);
        assert_eq!(decode(&b).unwrap(), (None, leases));
        assert!(decode_view(&b).unwrap().0.is_none());
        for n in 0..b.len() {
            assert!(decode(&b[..n]).is_err());
            assert!(decode_view(&b[..n]).is_err());
        }
        // Bad kind / state / prefix length are rejected by both decoders.
        let lease0 = b.len() - LEASE_LEN;
        for (off, val) in [(0, 9u8), (38, 9), (21, 129)] {
            let mut bad = b.clone();
            bad[lease0 + off] = val;
            assert!(decode(&bad).is_err());
            assert!(decode_view(&bad).is_err());
        }
    }

    #[test]
    fn the_client_section_leaves_the_record_as_it_was() {
        let leases = vec![Lease {
            kind: LeaseKind::Na,
            iaid: 1,
            addr: "2001:db8::5".parse().unwrap(),
            prefix_len: 128,
            preferred: 100,
            valid: 200,
            expires_at: 12345,
            state: LeaseState::Active,
        }];
        let relay = RelayInfo {
            peer_address: "fe80::1".parse().unwrap(),
            chain: vec![12, 0, 1, 2],
            relay_ids: vec![vec![0, 1, 2]],
            remote_id: None,
            subscriber_id: None,
            interface_id: None,
            client_linklayer: None,
        };
        let t = ClientCols {
            duid: &[0, 3, 0, 1, 2, 0, 0, 0, 0, 9],
            link: "lan",
            link_address: "2001:db8:1::1".parse().unwrap(),
            cltt: 1_700_000_000,
            changed_seq: 42,
            changed_at: 1_700_000_001,
        };
        for r in [None, Some(&relay)] {
            let plain = encode(r, &leases);
            let b = with_client_cols(plain.clone(), &t);
            assert_eq!(b.len(), plain.len() + 44 + 10 + 3);
            assert_eq!(client_cols(&b).unwrap(), Some(t));
            assert_eq!(client_cols(&plain).unwrap(), None);
            assert_eq!(with_client_cols(b.clone(), &t), b, "added once");
            assert_eq!(decode(&b).unwrap(), decode(&plain).unwrap());
            let (rv, ls) = decode_view(&b).unwrap();
            assert_eq!(rv.map(|v| v.to_owned()), r.cloned());
            let LeasesSrc::Record(lb) = ls else { panic!() };
            assert_eq!(lb.len(), LEASE_LEN);
            let long = vec![7u8; 70_000];
            let without = with_client_cols(plain.clone(), &ClientCols { duid: &long, ..t });
            assert_eq!(
                without, plain,
                "lengths past u16 leave the record without the section"
            );
            // Any truncation is refused.
            for n in 0..b.len() {
                assert!(decode(&b[..n]).is_err(), "{n}");
                assert!(decode_view(&b[..n]).is_err(), "{n}");
            }
        }
    }
}
