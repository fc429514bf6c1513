//! An in-memory map from the first address of every stored range to its binding's row, so that a
//! lookup by address (RFC 5007 QUERY_BY_ADDRESS) reads one table page instead of descending the
//! `addr` B-tree first. Among 1M bindings that is one random page read less per query.
//!
//! It is only a hint: [`crate::sqlite`] checks the row it points to and falls back to SQL when the row
//! no longer holds the address or the map has no candidate. So a stale entry (a rolled-back group,
//! another process writing the file) costs speed, never a wrong answer.
//!
//! Layout: one sorted array (24 octets per range, allocated at its exact size) with search levels
//! above it, plus a small ordered map of the changes since it was last rebuilt.

use std::collections::BTreeMap;
use std::net::Ipv6Addr;
use std::sync::RwLock;

/// Bits of a value that carry the row id; the prefix length is kept above them.
const ID_BITS: u32 = 56;
const ID_MASK: u64 = (1 << ID_BITS) - 1;
/// A deleted range in `changes`.
const GONE: u64 = u64::MAX;
/// Fan-out of the search levels above the starts: 16 starts are 4 cache lines, compared without
/// branches (a binary search over u128 mispredicts at nearly every step).
const FANOUT: usize = 16;
/// Changes kept aside before the arrays are rebuilt: at least this many, or an eighth of the arrays.
const MIN_CHANGES: usize = 4096;

/// A change the writer made to the `addr` table, applied to the map once its group has committed.
#[derive(Debug, Clone, Copy)]
pub(crate) enum IndexOp {
    Put { start: u128, plen: u8, client: i64 },
    Del { start: u128, client: i64 },
}

/// A range start and its packed (prefix length, row id), side by side so that the lookup that finds
/// the start has the value in the same cache lines (24 octets, no padding).
#[derive(Debug, Clone, Copy, PartialEq)]
struct Entry {
    hi: u64,
    lo: u64,
    value: u64,
}

impl Entry {
    fn new(start: u128, value: u64) -> Self {
        Entry {
            hi: (start >> 64) as u64,
            lo: start as u64,
            value,
        }
    }
    fn start(&self) -> u128 {
        (u128::from(self.hi) << 64) | u128::from(self.lo)
    }
}

#[derive(Debug, Default)]
struct Map {
    /// Ranges by ascending start.
    entries: Vec<Entry>,
    /// Search levels above `entries`, coarsest last: each holds every FANOUT-th start of the one
    /// below (a static B-tree, 1/15 of the size of `entries`).
    fences: Vec<Vec<u128>>,
    /// Newer than the arrays: a packed value, or `GONE`.
    changes: BTreeMap<u128, u64>,
}

#[derive(Debug, Default)]
pub(crate) struct AddrIndex {
    map: RwLock<Map>,
}

fn pack(plen: u8, client: i64) -> Option<u64> {
    // Row ids beyond 2^56 are not indexed: their lookups take the SQL path.
    u64::try_from(client)
        .ok()
        .filter(|c| *c <= ID_MASK)
        .map(|c| (u64::from(plen.min(128)) << ID_BITS) | c)
}

fn fences(entries: &[Entry]) -> Vec<Vec<u128>> {
    let mut levels: Vec<Vec<u128>> = Vec::new();
    if entries.len() > FANOUT {
        levels.push(entries.iter().step_by(FANOUT).map(Entry::start).collect());
    }
    while levels.last().is_some_and(|l| l.len() > FANOUT) {
        let up = levels
            .last()
            .map(|l| l.iter().step_by(FANOUT).copied().collect());
        levels.extend(up);
    }
    levels
}

/// How many of `node`'s sorted keys are <= a.
fn count_le<T>(node: &[T], a: u128, key: impl Fn(&T) -> u128) -> usize {
    node.iter().map(|s| usize::from(key(s) <= a)).sum()
}

/// Node `node` of a level: its first index and its keys.
fn slice<T>(v: &[T], node: usize) -> Option<(usize, &[T])> {
    let lo = node * FANOUT;
    Some((lo, v.get(lo..v.len().min(lo + FANOUT))?))
}

impl Map {
    /// Index in `entries` of the last start <= a.
    fn floor_index(&self, a: u128) -> Option<usize> {
        // Node `i` of a level covers entries i*FANOUT.. of the level below.
        let mut node = 0usize;
        for level in self.fences.iter().rev() {
            let (lo, keys) = slice(level, node)?;
            node = (lo + count_le(keys, a, |k| *k)).checked_sub(1)?;
        }
        let (lo, entries) = slice(&self.entries, node)?;
        (lo + count_le(entries, a, Entry::start)).checked_sub(1)
    }

    fn floor(&self, a: u128) -> Option<(u128, u64)> {
        let base = self
            .floor_index(a)
            .and_then(|i| self.entries.get(i))
            .map(|e| (e.start(), e.value));
        let newer = self.changes.range(..=a).next_back().map(|(k, v)| (*k, *v));
        match (base, newer) {
            // A start present in both is decided by `changes`.
            (Some(b), Some(n)) if b.0 > n.0 => Some(b),
            (b, None) => b,
            (_, n) => n,
        }
    }

    fn current(&self, start: u128) -> Option<u64> {
        if let Some(v) = self.changes.get(&start) {
            return Some(*v);
        }
        let i = self.search(start).ok()?;
        Some(self.entries[i].value)
    }

    fn search(&self, start: u128) -> std::result::Result<usize, usize> {
        self.entries.binary_search_by_key(&start, Entry::start)
    }

    /// The arrays with `changes` merged in, each allocated at its exact size.
    fn merged(&self) -> Vec<Entry> {
        let live = |v: &u64| *v != GONE;
        let added = self
            .changes
            .iter()
            .filter(|(k, v)| live(v) && self.search(**k).is_err())
            .count();
        let removed = self
            .changes
            .iter()
            .filter(|(k, v)| !live(v) && self.search(**k).is_ok())
            .count();
        let mut out = Vec::with_capacity(self.entries.len() + added - removed);
        let mut base = self.entries.iter().map(|e| (e.start(), e.value)).peekable();
        let mut newer = self.changes.iter().map(|(k, v)| (*k, *v)).peekable();
        loop {
            let item = match (base.peek(), newer.peek()) {
                (None, None) => break,
                (Some(b), Some(c)) if b.0 < c.0 => base.next(),
                (Some(_), None) => base.next(),
                // A start present in both is decided by `changes`.
                (_, Some(c)) => {
                    let k = c.0;
                    base.next_if(|b| b.0 == k);
                    newer.next()
                }
            };
            if let Some((k, v)) = item.filter(|(_, v)| live(v)) {
                out.push(Entry::new(k, v));
            }
        }
        out
    }
}

impl AddrIndex {
    /// Builds the map from `(start, plen, client)` rows in ascending order of start; `n` is their
    /// number, so that the arrays are allocated once. The first failed row fails the build.
    pub(crate) fn from_sorted(
        n: usize,
        rows: impl IntoIterator<Item = crate::Result<(u128, u8, i64)>>,
    ) -> crate::Result<Self> {
        let mut m = Map {
            entries: Vec::with_capacity(n),
            fences: Vec::new(),
            changes: BTreeMap::new(),
        };
        for row in rows {
            let (s, p, c) = row?;
            match pack(p, c) {
                Some(v) if m.entries.last().is_none_or(|l| l.start() < s) => {
                    m.entries.push(Entry::new(s, v));
                }
                // Out of order or not packable: kept aside (correct, only less compact).
                Some(v) => {
                    m.changes.insert(s, v);
                }
                None => {}
            }
        }
        m.fences = fences(&m.entries);
        Ok(AddrIndex {
            map: RwLock::new(m),
        })
    }

    /// The row whose range may contain `addr`: the one starting at or below it (stored ranges never
    /// overlap), if its prefix length reaches `addr`.
    pub(crate) fn find(&self, addr: Ipv6Addr) -> Option<i64> {
        let a = u128::from(addr);
        let (start, v) = self.map.read().ok()?.floor(a)?;
        if v == GONE {
            return None;
        }
        let plen = (v >> ID_BITS) as u32;
        let host = u128::MAX.checked_shr(plen).unwrap_or(0);
        (a <= start | host).then_some((v & ID_MASK) as i64)
    }

    /// Applies a committed group's changes in order (called by the store's single writer).
    pub(crate) fn apply(&self, ops: &[IndexOp]) {
        if ops.is_empty() {
            return;
        }
        let rebuild = {
            let Ok(mut m) = self.map.write() else {
                return;
            };
            for op in ops {
                match *op {
                    IndexOp::Put {
                        start,
                        plen,
                        client,
                    } => {
                        m.changes.insert(start, pack(plen, client).unwrap_or(GONE));
                    }
                    IndexOp::Del { start, client } => {
                        let held = m
                            .current(start)
                            .is_some_and(|v| v != GONE && (v & ID_MASK) as i64 == client);
                        if held {
                            m.changes.insert(start, GONE);
                        }
                    }
                }
            }
            m.changes.len() > MIN_CHANGES.max(m.entries.len() / 8)
        };
        if rebuild {
            // Built under the read lock, so lookups go on; only this thread changes the map.
            let merged = self.map.read().map(|m| m.merged());
            if let (Ok(entries), Ok(mut m)) = (merged, self.map.write()) {
                m.fences = fences(&entries);
                m.entries = entries;
                m.changes.clear();
            }
        }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.map.read().map_or(0, |m| m.merged().len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn index(n: usize, rows: impl IntoIterator<Item = (u128, u8, i64)>) -> AddrIndex {
        AddrIndex::from_sorted(n, rows.into_iter().map(Ok)).expect("rows are fine")
    }

    fn a(s: &str) -> u128 {
        u128::from(s.parse::<Ipv6Addr>().expect("literal"))
    }

    fn ip(s: &str) -> Ipv6Addr {
        s.parse().expect("literal")
    }

    #[test]
    fn finds_the_prefix_that_contains_an_address_and_nothing_past_its_end() {
        let idx = index(
            2,
            [(a("2001:db8::5"), 128, 9), (a("2001:db8:0:100::"), 56, 7)],
        );
        assert_eq!(idx.find(ip("2001:db8:0:1ff:ffff::1")), Some(7));
        assert_eq!(idx.find(ip("2001:db8:0:200::")), None);
        assert_eq!(idx.find(ip("2001:db8::5")), Some(9));
        assert_eq!(idx.find(ip("2001:db8::6")), None);
        assert_eq!(idx.find(ip("2001:db8::4")), None);
    }

    #[test]
    fn a_delete_by_another_holder_leaves_the_entry() {
        let idx = index(1, [(a("2001:db8::5"), 128, 9)]);
        idx.apply(&[IndexOp::Del {
            start: a("2001:db8::5"),
            client: 3,
        }]);
        assert_eq!(idx.find(ip("2001:db8::5")), Some(9));
        idx.apply(&[
            IndexOp::Del {
                start: a("2001:db8::5"),
                client: 9,
            },
            IndexOp::Put {
                start: a("2001:db8::5"),
                plen: 128,
                client: 4,
            },
        ]);
        assert_eq!(idx.find(ip("2001:db8::5")), Some(4));
    }

    #[test]
    fn a_deleted_range_uncovers_nothing_below_it() {
        let idx = index(2, [(a("2001:db8::"), 64, 1), (a("2001:db8:0:1::"), 64, 2)]);
        idx.apply(&[IndexOp::Del {
            start: a("2001:db8:0:1::"),
            client: 2,
        }]);
        assert_eq!(idx.find(ip("2001:db8:0:1::9")), None);
        assert_eq!(idx.find(ip("2001:db8::9")), Some(1));
    }

    #[test]
    fn rebuilding_the_arrays_keeps_every_change() {
        let n = 10_000u128;
        let idx = index(n as usize, (0..n).map(|i| (i << 64, 64, i as i64 + 1)));
        // Delete the even ranges and add odd-numbered /128s past the end: enough to force rebuilds.
        let mut ops = Vec::new();
        for i in (0..n).step_by(2) {
            ops.push(IndexOp::Del {
                start: i << 64,
                client: i as i64 + 1,
            });
        }
        for i in 0..n {
            ops.push(IndexOp::Put {
                start: (n + i) << 64,
                plen: 128,
                client: (n + i) as i64 + 1,
            });
        }
        for chunk in ops.chunks(1000) {
            idx.apply(chunk);
        }
        assert_eq!(idx.len(), (n / 2 + n) as usize);
        assert_eq!(idx.find(Ipv6Addr::from((4u128 << 64) + 7)), None);
        assert_eq!(idx.find(Ipv6Addr::from((5u128 << 64) + 7)), Some(6));
        assert_eq!(
            idx.find(Ipv6Addr::from((n + 3) << 64)),
            Some((n + 3) as i64 + 1)
        );
        assert_eq!(idx.find(Ipv6Addr::from(((n + 3) << 64) + 1)), None);
    }

    #[test]
    fn row_ids_too_large_to_pack_are_left_to_sql() {
        let idx = index(1, [(a("2001:db8::5"), 128, 1 << 60)]);
        assert_eq!(idx.len(), 0);
        assert_eq!(idx.find(ip("2001:db8::5")), None);
    }
}

#[cfg(test)]
mod search_tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn floor_index_agrees_with_a_binary_search(mut v in proptest::collection::vec(any::<u128>(), 0..2000), qs in proptest::collection::vec(any::<u128>(), 1..50)) {
            v.sort();
            v.dedup();
            let entries: Vec<Entry> = v.iter().map(|s| Entry::new(*s, 0)).collect();
            let m = Map { fences: fences(&entries), entries, changes: BTreeMap::new() };
            for q in qs.into_iter().chain(v.iter().copied()) {
                let want = v.partition_point(|s| *s <= q).checked_sub(1);
                prop_assert_eq!(m.floor_index(q), want);
            }
        }
    }
}
