//! The engine's lease cache: each client's active leases on each link.
//!
//! With an embedded store it holds every binding (it is authoritative), so its size is what a
//! million clients cost in memory. One map bucket is two boxed slices (32 octets): the key is the
//! link index followed by the DUID, and the value the client's leases on that link.

use lq6_store::Lease;
use std::collections::HashMap;

/// DUIDs are at most 130 octets (RFC 8415 §11.1): such keys are built on the stack.
const STACK_KEY: usize = 4 + 130;

#[derive(Debug, Default)]
pub(crate) struct LeaseCache {
    map: HashMap<Box<[u8]>, Box<[Lease]>>,
}

/// Runs `f` on the key of (`duid`, `link`).
fn with_key<R>(duid: &[u8], link: usize, f: impl FnOnce(&[u8]) -> R) -> R {
    let link = u32::try_from(link).unwrap_or(u32::MAX).to_be_bytes();
    let n = 4 + duid.len();
    if n <= STACK_KEY {
        let mut buf = [0u8; STACK_KEY];
        buf[..4].copy_from_slice(&link);
        buf[4..n].copy_from_slice(duid);
        f(&buf[..n])
    } else {
        let mut v = Vec::with_capacity(n);
        v.extend_from_slice(&link);
        v.extend_from_slice(duid);
        f(&v)
    }
}

impl LeaseCache {
    /// The client's cached leases on `link` (empty when unknown).
    pub fn get(&self, duid: &[u8], link: usize) -> Vec<Lease> {
        with_key(duid, link, |k| {
            self.map.get(k).map(|ls| ls.to_vec()).unwrap_or_default()
        })
    }

    /// Replaces the client's leases on `link`; an empty list forgets the client there.
    pub fn set(&mut self, duid: &[u8], link: usize, leases: Vec<Lease>) {
        with_key(duid, link, |k| {
            if leases.is_empty() {
                self.map.remove(k);
            } else if let Some(v) = self.map.get_mut(k) {
                *v = leases.into_boxed_slice();
            } else {
                self.map.insert(k.into(), leases.into_boxed_slice());
            }
        })
    }

    /// Keeps the client's leases on `link` for which `keep` holds.
    pub fn retain_client(
        &mut self,
        duid: &[u8],
        link: usize,
        mut keep: impl FnMut(&Lease) -> bool,
    ) {
        with_key(duid, link, |k| {
            let Some(ls) = self.map.get_mut(k) else {
                return;
            };
            let kept: Box<[Lease]> = ls.iter().filter(|x| keep(x)).cloned().collect();
            if kept.is_empty() {
                self.map.remove(k);
            } else {
                *ls = kept;
            }
        })
    }

    /// Keeps, across all clients, the leases for which `keep` holds.
    pub fn retain_all(&mut self, mut keep: impl FnMut(&Lease) -> bool) {
        self.map.retain(|_, ls| {
            if !ls.iter().all(&mut keep) {
                *ls = ls.iter().filter(|l| keep(l)).cloned().collect();
            }
            !ls.is_empty()
        });
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use lq6_store::{LeaseKind, LeaseState};

    fn lease(n: u16, expires_at: u64) -> Lease {
        Lease {
            kind: LeaseKind::Na,
            iaid: 1,
            addr: std::net::Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, n),
            prefix_len: 128,
            preferred: 10,
            valid: 20,
            expires_at,
            state: LeaseState::Active,
        }
    }

    #[test]
    fn keys_separate_links_and_duids_of_any_length() {
        let mut c = LeaseCache::default();
        let long = vec![7u8; 300];
        c.set(b"\x00\x03ab", 0, vec![lease(1, 100)]);
        c.set(b"\x00\x03ab", 1, vec![lease(2, 100)]);
        c.set(&long, 0, vec![lease(3, 100)]);
        assert_eq!(c.get(b"\x00\x03ab", 0), vec![lease(1, 100)]);
        assert_eq!(c.get(b"\x00\x03ab", 1), vec![lease(2, 100)]);
        assert_eq!(c.get(&long, 0), vec![lease(3, 100)]);
        assert!(c.get(b"\x00\x03a", 0).is_empty());
        assert_eq!(c.len(), 3);
        c.set(b"\x00\x03ab", 1, vec![]);
        assert_eq!(c.len(), 2);
    }

    #[test]
    fn retain_drops_leases_then_clients() {
        let mut c = LeaseCache::default();
        c.set(b"a", 0, vec![lease(1, 100), lease(2, 200)]);
        c.set(b"b", 0, vec![lease(3, 100)]);
        c.retain_all(|l| l.expires_at > 150);
        assert_eq!(c.get(b"a", 0), vec![lease(2, 200)]);
        assert_eq!(c.len(), 1);
        c.retain_client(b"a", 0, |l| l.addr != lease(2, 0).addr);
        assert_eq!(c.len(), 0);
    }
}
