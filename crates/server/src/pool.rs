//! In-memory allocators, one per address pool or PD pool: a cursor over never-used entries, a
//! queue of freed entries and a map of taken ones. Allocation is O(1) amortised; memory grows
//! with the number of taken entries only (bounded by the pool), never with clients that merely
//! SOLICIT. A taken entry costs 24 octets in the map (a million leases: 48 MiB of buckets), so
//! the index is a u64 (a pool uses at most 2^64 entries) and the expiry is u32 seconds.

use std::collections::{HashMap, VecDeque};
use std::net::Ipv6Addr;

/// Who holds a pool entry and until when.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Holder {
    /// Hash of the client DUID; 0 for quarantine or a foreign (other server) holder.
    pub owner: u64,
    /// Unix seconds after which the entry may be reused.
    pub until: u64,
    /// Reserved in the configuration: never freed.
    pub reserved: bool,
}

/// [`Holder`] as stored: 16 octets instead of 24.
#[derive(Debug, Clone, Copy)]
struct Held {
    owner: u64,
    /// Unix seconds, saturated at u32::MAX (2106), which also stands for "never".
    until: u32,
    reserved: bool,
}

impl Held {
    fn new(owner: u64, until: u64, reserved: bool) -> Held {
        Held {
            owner,
            until: u32::try_from(until).unwrap_or(u32::MAX),
            reserved,
        }
    }

    fn until(&self) -> u64 {
        match self.until {
            u32::MAX => u64::MAX,
            t => u64::from(t),
        }
    }

    fn holder(self) -> Holder {
        Holder {
            owner: self.owner,
            until: self.until(),
            reserved: self.reserved,
        }
    }

    /// Free for anyone at `now`.
    fn lapsed(&self, now: u64) -> bool {
        !self.reserved && self.until() <= now
    }
}

/// One pool: `count` entries of `2^shift` addresses each, starting at `base`.
#[derive(Debug)]
pub(crate) struct Pool {
    pub base: u128,
    pub count: u64,
    pub shift: u32,
    /// Prefix length of one entry (128 for addresses).
    pub plen: u8,
    next: u64,
    free: VecDeque<u64>,
    taken: HashMap<u64, Held>,
}

impl Pool {
    /// An address pool `start..=end`.
    pub fn addresses(start: Ipv6Addr, end: Ipv6Addr) -> Pool {
        let (s, e) = (u128::from(start), u128::from(end));
        Pool::new(s, e.saturating_sub(s).saturating_add(1), 0, 128)
    }

    /// A PD pool: prefixes of length `dlen` inside `prefix/plen`.
    pub fn prefixes(prefix: Ipv6Addr, plen: u8, dlen: u8) -> Pool {
        let shift = 128 - u32::from(dlen.min(128));
        let bits = u32::from(dlen.saturating_sub(plen));
        let count = if bits >= 128 {
            u128::MAX
        } else {
            1u128 << bits
        };
        Pool::new(u128::from(prefix), count, shift, dlen)
    }

    fn new(base: u128, count: u128, shift: u32, plen: u8) -> Pool {
        Pool {
            base,
            count: u64::try_from(count).unwrap_or(u64::MAX),
            shift,
            plen,
            next: 0,
            free: VecDeque::new(),
            taken: HashMap::new(),
        }
    }

    fn addr(&self, i: u64) -> Ipv6Addr {
        Ipv6Addr::from(self.base.wrapping_add(if self.shift >= 128 {
            0
        } else {
            u128::from(i) << self.shift
        }))
    }

    /// The index of `a` if it is an entry of this pool (for PD: the exact prefix start).
    pub fn index(&self, a: Ipv6Addr) -> Option<u64> {
        let v = u128::from(a);
        let off = v.checked_sub(self.base)?;
        let i = if self.shift >= 128 {
            0
        } else {
            off >> self.shift
        };
        if i >= u128::from(self.count)
            || (self.shift < 128 && (off & ((1u128 << self.shift) - 1)) != 0)
        {
            return None;
        }
        u64::try_from(i).ok()
    }

    pub fn holder(&self, a: Ipv6Addr) -> Option<Holder> {
        self.index(a)
            .and_then(|i| self.taken.get(&i).map(|h| h.holder()))
    }

    /// Whether `i` can be handed out at `now`.
    fn is_free(&self, i: u64, now: u64) -> bool {
        self.taken.get(&i).is_none_or(|h| h.lapsed(now))
    }

    /// Whether `a` is free for `owner` (free, expired, or already held by `owner`).
    pub fn available_to(&self, a: Ipv6Addr, owner: u64, now: u64) -> bool {
        match self.index(a) {
            Some(i) => match self.taken.get(&i) {
                None => true,
                Some(h) => h.owner == owner || h.lapsed(now),
            },
            None => false,
        }
    }

    /// The entry the next [`Pool::take_next`] would return, without taking it.
    pub fn peek(&mut self, now: u64) -> Option<Ipv6Addr> {
        while let Some(&i) = self.free.front() {
            if self.is_free(i, now) {
                return Some(self.addr(i));
            }
            self.free.pop_front();
        }
        while self.next < self.count {
            if self.is_free(self.next, now) {
                return Some(self.addr(self.next));
            }
            self.next += 1;
        }
        self.reclaim_into_free(now);
        self.free.front().map(|&i| self.addr(i))
    }

    /// Takes a free entry for `owner` until `until`.
    pub fn take_next(&mut self, owner: u64, until: u64, now: u64) -> Option<Ipv6Addr> {
        let a = self.peek(now)?;
        self.take(a, owner, until, false);
        Some(a)
    }

    /// Marks `a` as held.
    pub fn take(&mut self, a: Ipv6Addr, owner: u64, until: u64, reserved: bool) {
        if let Some(i) = self.index(a) {
            if self.free.front() == Some(&i) {
                self.free.pop_front();
            }
            if i == self.next {
                self.next += 1;
            }
            let reserved = reserved || self.taken.get(&i).is_some_and(|h| h.reserved);
            self.taken.insert(i, Held::new(owner, until, reserved));
        }
    }

    /// Returns `a` to the pool (release, expiry, rollback). Reserved entries stay taken.
    pub fn free(&mut self, a: Ipv6Addr) {
        if let Some(i) = self.index(a) {
            match self.taken.get(&i) {
                Some(h) if h.reserved => {}
                Some(_) => {
                    self.taken.remove(&i);
                    if i < self.next {
                        self.free.push_back(i);
                    }
                }
                None => {}
            }
        }
    }

    /// Frees every non-reserved entry whose holder expired; returns how many.
    pub fn reclaim(&mut self, now: u64) -> usize {
        self.reclaim_into_free(now)
    }

    fn reclaim_into_free(&mut self, now: u64) -> usize {
        let expired: Vec<u64> = self
            .taken
            .iter()
            .filter(|(_, h)| h.lapsed(now))
            .map(|(&i, _)| i)
            .collect();
        for i in &expired {
            self.taken.remove(i);
            if *i < self.next {
                self.free.push_back(*i);
            }
        }
        expired.len()
    }

    /// Entries currently held.
    pub fn taken_len(&self) -> usize {
        self.taken.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allocates_frees_and_skips_taken() {
        let mut p = Pool::addresses(
            "2001:db8::1".parse().unwrap(),
            "2001:db8::3".parse().unwrap(),
        );
        p.take("2001:db8::2".parse().unwrap(), 9, 100, false);
        let a = p.take_next(1, 100, 0).unwrap();
        let b = p.take_next(1, 100, 0).unwrap();
        assert_eq!(a, "2001:db8::1".parse::<Ipv6Addr>().unwrap());
        assert_eq!(b, "2001:db8::3".parse::<Ipv6Addr>().unwrap());
        assert!(p.take_next(1, 100, 0).is_none());
        p.free(a);
        assert_eq!(p.take_next(2, 100, 0), Some(a));
        // Expired holders are reused.
        assert!(p.take_next(3, 200, 100).is_some());
        assert!(p.take_next(3, 200, 100).is_some());
        assert!(p.take_next(3, 200, 100).is_some());
        assert!(p.take_next(3, 200, 100).is_none());
    }

    #[test]
    fn prefixes() {
        let mut p = Pool::prefixes("2001:db8:100::".parse().unwrap(), 40, 56);
        assert_eq!(p.count, 65536);
        assert_eq!(
            p.take_next(1, 9, 0),
            Some("2001:db8:100::".parse().unwrap())
        );
        assert_eq!(
            p.take_next(1, 9, 0),
            Some("2001:db8:100:100::".parse().unwrap())
        );
        assert!(p.index("2001:db8:100:101::".parse().unwrap()).is_none());
    }
}
