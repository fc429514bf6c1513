//! The backend conformance suite: every case is written once against `Arc<dyn LeaseStore>` and run for
//! each backend by the `conformance!` macro.
#![allow(dead_code)]

use std::net::Ipv6Addr;
use std::sync::Arc;

use futures::StreamExt;
use lq6_store::*;

pub mod pg;

pub fn a(s: &str) -> Ipv6Addr {
    s.parse().expect("test address")
}

pub fn duid(n: u32) -> Vec<u8> {
    let mut d = vec![0, 1, 0, 1, 0x1c, 0x39, 0xcf, 0x88];
    d.extend_from_slice(&n.to_be_bytes());
    d
}

pub fn na(addr: &str, iaid: u32, expires_at: u64) -> Lease {
    Lease {
        kind: LeaseKind::Na,
        iaid,
        addr: a(addr),
        prefix_len: 128,
        preferred: 3000,
        valid: 4000,
        expires_at,
        state: LeaseState::Active,
    }
}

pub fn pd(addr: &str, plen: u8, iaid: u32, expires_at: u64) -> Lease {
    Lease {
        kind: LeaseKind::Pd,
        prefix_len: plen,
        ..na(addr, iaid, expires_at)
    }
}

pub fn relay(relay_id: &[u8], remote: Option<(u32, &[u8])>) -> RelayInfo {
    RelayInfo {
        peer_address: a("fe80::1"),
        chain: vec![
            12, 0, 0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1,
        ],
        relay_ids: vec![relay_id.to_vec()],
        remote_id: remote.map(|(e, id)| RemoteId {
            enterprise: e,
            id: id.to_vec(),
        }),
        subscriber_id: Some(b"sub-1".to_vec()),
        interface_id: Some(b"eth0/1".to_vec()),
        client_linklayer: Some((1, vec![0, 0x11, 0x22, 0x33, 0x44, 0x55])),
    }
}

pub fn upd(
    n: u32,
    link: &str,
    now: u64,
    leases: Vec<Lease>,
    relay: Option<RelayInfo>,
) -> ClientUpdate {
    ClientUpdate {
        duid: duid(n),
        link: link.into(),
        link_address: a("2001:db8:1::1"),
        cltt: now,
        relay,
        leases,
        merge: LeaseMerge::Merge,
        now: Some(now),
    }
}

async fn all(s: &Arc<dyn LeaseStore>, q: Query, page: usize) -> Vec<Binding> {
    let v: Vec<Result<Binding>> = stream(s.clone(), q, page).collect().await;
    v.into_iter().collect::<Result<Vec<_>>>().expect("stream")
}

pub async fn commit_and_lookup(s: Arc<dyn LeaseStore>) {
    let r = relay(b"relay-1", Some((4491, b"modem-1")));
    let u = upd(
        1,
        "lan",
        1000,
        vec![
            na("2001:db8:1::10", 1, 5000),
            pd("2001:db8:100::", 56, 2, 5000),
        ],
        Some(r.clone()),
    );
    let ci = s.commit(u).await.expect("commit");
    assert!(ci.seq >= 1);
    assert_eq!(ci.changed_at, 1000);
    assert_eq!(ci.binding.leases.len(), 2);

    let b = s
        .by_address(a("2001:db8:1::10"))
        .await
        .unwrap()
        .expect("exact address");
    assert_eq!(b.client.duid, duid(1));
    assert_eq!(b.client.link, "lan");
    assert_eq!(b.client.link_address, a("2001:db8:1::1"));
    assert_eq!(b.client.cltt, 1000);
    assert_eq!(b.client.relay.as_ref(), Some(&r));
    assert_eq!(b.client.changed_seq, ci.seq);
    assert_eq!(b.leases.len(), 2);
    assert_eq!(b, ci.binding);

    // An address inside the delegated prefix (RFC 5007 §4.3.1).
    let b2 = s
        .by_address(a("2001:db8:100:ff:1:2:3:4"))
        .await
        .unwrap()
        .expect("inside prefix");
    assert_eq!(b2.client.duid, duid(1));
    assert!(s.by_address(a("2001:db8:101::")).await.unwrap().is_none());
    assert!(s.by_address(a("2001:db8:1::11")).await.unwrap().is_none());
    assert!(s.by_address(a("::")).await.unwrap().is_none());

    let v = s.by_client(&duid(1), None).await.unwrap();
    assert_eq!(v.len(), 1);
    assert!(s.by_client(&duid(2), None).await.unwrap().is_empty());
    assert!(s
        .by_client(&duid(1), Some("other"))
        .await
        .unwrap()
        .is_empty());

    // Same client on a second link: two bindings.
    let ci2 = s
        .commit(upd(
            1,
            "wan",
            1001,
            vec![na("2001:db8:2::10", 1, 5000)],
            None,
        ))
        .await
        .unwrap();
    assert!(ci2.seq > ci.seq);
    let v = s.by_client(&duid(1), None).await.unwrap();
    assert_eq!(v.len(), 2);
    let v = s.by_client(&duid(1), Some("wan")).await.unwrap();
    assert_eq!(v.len(), 1);
    assert_eq!(v[0].client.relay, None);
}

pub async fn merge_and_replace(s: Arc<dyn LeaseStore>) {
    s.commit(upd(
        1,
        "lan",
        1000,
        vec![na("2001:db8:1::10", 1, 5000)],
        None,
    ))
    .await
    .unwrap();
    // Renewal: same address, new lifetimes; plus a new PD.
    let mut l = na("2001:db8:1::10", 1, 9000);
    l.valid = 8000;
    s.commit(upd(
        1,
        "lan",
        2000,
        vec![l.clone(), pd("2001:db8:200::", 60, 3, 9000)],
        None,
    ))
    .await
    .unwrap();
    let b = s.by_address(a("2001:db8:1::10")).await.unwrap().unwrap();
    assert_eq!(b.leases.len(), 2);
    assert_eq!(b.leases[0], l);
    assert_eq!(b.client.cltt, 2000);
    // Host bits of a delegated prefix are cleared.
    assert_eq!(b.leases[1].addr, a("2001:db8:200::"));
    // Replace: only the new lease remains; the old address index entries are gone.
    let mut u = upd(1, "lan", 3000, vec![na("2001:db8:1::20", 1, 9000)], None);
    u.merge = LeaseMerge::Replace;
    s.commit(u).await.unwrap();
    assert!(s.by_address(a("2001:db8:1::10")).await.unwrap().is_none());
    assert!(s.by_address(a("2001:db8:200::1")).await.unwrap().is_none());
    let b = s.by_address(a("2001:db8:1::20")).await.unwrap().unwrap();
    assert_eq!(b.leases.len(), 1);
    // Invalid input is rejected.
    let mut bad = na("2001:db8:1::30", 1, 9000);
    bad.prefix_len = 64;
    assert!(matches!(
        s.commit(upd(1, "lan", 3000, vec![bad], None)).await,
        Err(StoreError::Invalid(_))
    ));
}

pub async fn conflicts(s: Arc<dyn LeaseStore>) {
    s.commit(upd(
        1,
        "lan",
        1000,
        vec![
            na("2001:db8:1::10", 1, 5000),
            pd("2001:db8:100::", 56, 2, 5000),
        ],
        None,
    ))
    .await
    .unwrap();
    let before = s.stats().await.unwrap();
    // Another client asks for the same address: conflict, nothing changed (not even its client row).
    let e = s
        .commit(upd(
            2,
            "lan",
            1001,
            vec![na("2001:db8:1::99", 1, 5000), na("2001:db8:1::10", 1, 5000)],
            None,
        ))
        .await;
    assert!(
        matches!(e, Err(StoreError::Conflict { addr }) if addr == a("2001:db8:1::10")),
        "{e:?}"
    );
    assert!(s.by_client(&duid(2), None).await.unwrap().is_empty());
    assert!(s.by_address(a("2001:db8:1::99")).await.unwrap().is_none());
    assert_eq!(s.stats().await.unwrap(), before);
    // Overlapping prefixes: smaller inside, bigger around, same.
    for (p, l) in [
        ("2001:db8:100:10::", 60),
        ("2001:db8::", 40),
        ("2001:db8:100::", 56),
    ] {
        let e = s
            .commit(upd(2, "lan", 1001, vec![pd(p, l, 1, 5000)], None))
            .await;
        assert!(
            matches!(e, Err(StoreError::Conflict { .. })),
            "{p}/{l}: {e:?}"
        );
    }
    // The same client on another link is another binding: also a conflict.
    let e = s
        .commit(upd(
            1,
            "wan",
            1001,
            vec![na("2001:db8:1::10", 1, 5000)],
            None,
        ))
        .await;
    assert!(matches!(e, Err(StoreError::Conflict { .. })));
    // Released: now free for the other client.
    let mut rel = na("2001:db8:1::10", 1, 1002);
    rel.state = LeaseState::Released;
    rel.valid = 0;
    rel.preferred = 0;
    s.commit(upd(1, "lan", 1002, vec![rel], None))
        .await
        .unwrap();
    s.commit(upd(
        2,
        "lan",
        1003,
        vec![na("2001:db8:1::10", 1, 5000)],
        None,
    ))
    .await
    .unwrap();
    let b = s.by_address(a("2001:db8:1::10")).await.unwrap().unwrap();
    assert_eq!(b.client.duid, duid(2));
    // The first client still has its released lease on record, and its prefix.
    let v = s.by_client(&duid(1), Some("lan")).await.unwrap();
    assert_eq!(v[0].leases.len(), 2);
    assert_eq!(v[0].leases[0].state, LeaseState::Released);
    // Still held (by client 2 now): a third client conflicts.
    let e = s
        .commit(upd(
            3,
            "lan",
            1004,
            vec![na("2001:db8:1::10", 9, 5000)],
            None,
        ))
        .await;
    assert!(matches!(e, Err(StoreError::Conflict { .. })));
}

/// A binding may replace its own range with one that overlaps it (a prefix grown or shrunk), but
/// one update may not hold two overlapping ranges; a refused update leaves nothing behind.
pub async fn own_ranges(s: Arc<dyn LeaseStore>) {
    let replace = |leases| ClientUpdate {
        merge: LeaseMerge::Replace,
        ..upd(5, "lan", 2000, leases, None)
    };
    s.commit(replace(vec![pd("2001:db8:200:10::", 60, 1, 9000)]))
        .await
        .unwrap();
    s.commit(replace(vec![pd("2001:db8:200::", 56, 1, 9000)]))
        .await
        .expect("grow the prefix over the old one");
    let b = s
        .by_address(a("2001:db8:200:10::1"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!((b.client.duid.clone(), b.leases.len()), (duid(5), 1));
    assert_eq!(b.leases[0].prefix_len, 56);
    s.commit(replace(vec![pd("2001:db8:200:20::", 60, 1, 9000)]))
        .await
        .expect("shrink it to a prefix inside");
    assert!(s
        .by_address(a("2001:db8:200:10::1"))
        .await
        .unwrap()
        .is_none());
    // Shrink a prefix in place and take another part of it in the same update: the stored /56
    // overlaps the new /60 only until this very update rewrites it.
    let replace7 = |leases| ClientUpdate {
        merge: LeaseMerge::Replace,
        ..upd(7, "lan", 2000, leases, None)
    };
    s.commit(replace7(vec![pd("2001:db8:400::", 56, 1, 9000)]))
        .await
        .unwrap();
    s.commit(replace7(vec![
        pd("2001:db8:400::", 60, 1, 9000),
        pd("2001:db8:400:10::", 60, 2, 9000),
    ]))
    .await
    .expect("shrink in place plus a range inside the old prefix");
    let b = s
        .by_address(a("2001:db8:400:10::1"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(b.client.duid, duid(7));
    // The rest of the old /56 is free for another client.
    s.commit(upd(
        8,
        "lan",
        2001,
        vec![pd("2001:db8:400:20::", 60, 1, 9000)],
        None,
    ))
    .await
    .expect("the released part of the /56");
    let before = s.stats().await.unwrap();
    for leases in [
        vec![
            pd("2001:db8:300::", 56, 1, 9000),
            pd("2001:db8:300:40::", 60, 2, 9000),
        ],
        vec![
            pd("2001:db8:300::", 56, 1, 9000),
            na("2001:db8:300:ff::1", 2, 9000),
        ],
    ] {
        let e = s.commit(upd(6, "lan", 2001, leases, None)).await;
        assert!(
            matches!(e, Err(StoreError::Conflict { .. } | StoreError::Invalid(_))),
            "{e:?}"
        );
    }
    assert_eq!(
        s.stats().await.unwrap(),
        before,
        "nothing of a refused update"
    );
    assert!(s.by_client(&duid(6), None).await.unwrap().is_empty());
}

pub async fn concurrent_conflicts(s: Arc<dyn LeaseStore>) {
    // 16 clients race for 4 addresses: each address ends up with exactly one holder.
    let mut tasks = Vec::new();
    for c in 0..16u32 {
        let s = s.clone();
        tasks.push(tokio::spawn(async move {
            let mut got = Vec::new();
            for i in 0..4 {
                let addr = format!("2001:db8:9::{}", (i + c) % 4 + 1);
                match s
                    .commit(upd(100 + c, "lan", 1000, vec![na(&addr, 1, 5000)], None))
                    .await
                {
                    Ok(_) => got.push(addr),
                    Err(StoreError::Conflict { .. }) => {}
                    Err(e) => panic!("{e}"),
                }
            }
            got
        }));
    }
    let mut won = Vec::new();
    for t in tasks {
        won.extend(t.await.unwrap());
    }
    won.sort();
    let mut dedup = won.clone();
    dedup.dedup();
    assert_eq!(won, dedup, "an address was handed out twice");
    assert_eq!(won.len(), 4);
    let st = s.stats().await.unwrap();
    assert_eq!(st.active_leases, 4);
}

pub async fn bulk_queries(s: Arc<dyn LeaseStore>) {
    // 30 clients behind relay R1 (20 on "a", 10 on "b"), 7 behind R2, 3 direct.
    let mut n = 0;
    for i in 0..30u32 {
        let link = if i % 3 == 2 { "b" } else { "a" };
        let remote: &[u8] = if i % 2 == 0 { b"even" } else { b"odd" };
        let addr = format!("2001:db8:a::{:x}", i + 1);
        s.commit(upd(
            i,
            link,
            1000 + i as u64,
            vec![na(&addr, 1, 9000)],
            Some(relay(b"R1", Some((9, remote)))),
        ))
        .await
        .unwrap();
        n += 1;
    }
    for i in 30..37u32 {
        let addr = format!("2001:db8:a::{:x}", i + 1);
        s.commit(upd(
            i,
            "a",
            2000,
            vec![na(&addr, 1, 9000)],
            Some(relay(b"R2", None)),
        ))
        .await
        .unwrap();
    }
    for i in 37..40u32 {
        let addr = format!("2001:db8:a::{:x}", i + 1);
        s.commit(upd(i, "c", 3000, vec![na(&addr, 1, 9000)], None))
            .await
            .unwrap();
    }
    assert_eq!(n, 30);
    let r1 = all(&s, Query::relay_id(b"R1".to_vec(), None), 7).await;
    assert_eq!(r1.len(), 30);
    let duids: Vec<_> = r1.iter().map(|b| b.client.duid.clone()).collect();
    assert_eq!(
        duids,
        (0..30).map(duid).collect::<Vec<_>>(),
        "stable insertion order"
    );
    assert_eq!(
        s.count(&Query::relay_id(b"R1".to_vec(), None))
            .await
            .unwrap(),
        30
    );
    assert_eq!(
        all(&s, Query::relay_id(b"R1".to_vec(), Some("b")), 4)
            .await
            .len(),
        10
    );
    assert_eq!(
        s.count(&Query::relay_id(b"R1".to_vec(), Some("b")))
            .await
            .unwrap(),
        10
    );
    assert_eq!(
        all(&s, Query::relay_id(b"R2".to_vec(), None), 100)
            .await
            .len(),
        7
    );
    assert!(all(&s, Query::relay_id(b"R3".to_vec(), None), 100)
        .await
        .is_empty());
    assert_eq!(all(&s, Query::link("a"), 5).await.len(), 27);
    assert_eq!(all(&s, Query::link("c"), 5).await.len(), 3);
    assert_eq!(
        all(&s, Query::remote_id(9, b"even".to_vec(), None), 5)
            .await
            .len(),
        15
    );
    assert_eq!(
        all(&s, Query::remote_id(9, b"odd".to_vec(), Some("a")), 5)
            .await
            .len(),
        10
    );
    assert!(all(&s, Query::remote_id(10, b"odd".to_vec(), None), 5)
        .await
        .is_empty());
    assert_eq!(all(&s, Query::all(), 9).await.len(), 40);
    assert_eq!(s.count(&Query::all()).await.unwrap(), 40);
    assert_eq!(all(&s, Query::client(duid(5), None), 9).await.len(), 1);
    // Time filters (RFC 7653 LQ_START_TIME / LQ_END_TIME).
    assert_eq!(all(&s, Query::all().since(2000), 9).await.len(), 10);
    assert_eq!(all(&s, Query::all().until(1009), 9).await.len(), 10);
    assert_eq!(
        all(&s, Query::all().since(1005).until(1009), 3).await.len(),
        5
    );
    assert_eq!(
        s.count(&Query::relay_id(b"R1".to_vec(), None).since(1020))
            .await
            .unwrap(),
        10
    );

    // The most recent Remote-ID counts: client 0 moves from "even" to "new".
    s.commit(upd(
        0,
        "a",
        4000,
        vec![],
        Some(relay(b"R1", Some((9, b"new")))),
    ))
    .await
    .unwrap();
    assert_eq!(
        all(&s, Query::remote_id(9, b"even".to_vec(), None), 5)
            .await
            .len(),
        14
    );
    assert_eq!(
        all(&s, Query::remote_id(9, b"new".to_vec(), None), 5)
            .await
            .len(),
        1
    );
    // A renewal that keeps its Remote-ID stays findable by it; one that changes only the
    // enterprise number moves to the new pair.
    for (now, ent) in [(4002, 9), (4003, 9), (4004, 10)] {
        s.commit(upd(
            0,
            "a",
            now,
            vec![],
            Some(relay(b"R1", Some((ent, b"new")))),
        ))
        .await
        .unwrap();
    }
    assert!(all(&s, Query::remote_id(9, b"new".to_vec(), None), 5)
        .await
        .is_empty());
    let moved = all(&s, Query::remote_id(10, b"new".to_vec(), None), 5).await;
    assert_eq!(moved.len(), 1);
    assert_eq!(moved[0].client.cltt, 4004);
    s.commit(upd(
        0,
        "a",
        4005,
        vec![],
        Some(relay(b"R1", Some((9, b"new")))),
    ))
    .await
    .unwrap();
    // Relay change: client 1 now behind R2 only.
    s.commit(upd(1, "a", 4001, vec![], Some(relay(b"R2", None))))
        .await
        .unwrap();
    assert_eq!(
        all(&s, Query::relay_id(b"R1".to_vec(), None), 7)
            .await
            .len(),
        29
    );
    assert_eq!(
        all(&s, Query::relay_id(b"R2".to_vec(), None), 7)
            .await
            .len(),
        8
    );

    // Cursor resumes after concurrent inserts, and pages are independent reads.
    let p1 = s
        .page(&Query::relay_id(b"R1".to_vec(), None), None, 10)
        .await
        .unwrap();
    assert_eq!(p1.bindings.len(), 10);
    let next = p1.next.expect("more pages");
    s.commit(upd(
        500,
        "a",
        5000,
        vec![na("2001:db8:a::500", 1, 9000)],
        Some(relay(b"R1", None)),
    ))
    .await
    .unwrap();
    let mut rest = Vec::new();
    let mut cur = Some(next);
    while let Some(c) = cur {
        let p = s
            .page(&Query::relay_id(b"R1".to_vec(), None), Some(c), 10)
            .await
            .unwrap();
        rest.extend(p.bindings);
        cur = p.next;
    }
    assert_eq!(rest.len(), 20, "19 old after the first page + the new one");
    assert_eq!(rest.last().unwrap().client.duid, duid(500));

    // Inactive filtering: release client 2's only lease.
    let mut rel = na("2001:db8:a::3", 1, 4002);
    rel.state = LeaseState::Released;
    s.commit(upd(
        2,
        "b",
        4002,
        vec![rel],
        Some(relay(b"R1", Some((9, b"even")))),
    ))
    .await
    .unwrap();
    assert_eq!(
        all(&s, Query::relay_id(b"R1".to_vec(), None), 7)
            .await
            .len(),
        29
    );
    let with = all(&s, Query::relay_id(b"R1".to_vec(), None).inactive(true), 7).await;
    assert_eq!(with.len(), 30);
    assert!(with
        .iter()
        .any(|b| b.client.duid == duid(2) && b.leases[0].state == LeaseState::Released));
    // Only active leases are returned by default.
    s.commit(upd(
        3,
        "a",
        4003,
        vec![na("2001:db8:a::1003", 2, 9000)],
        Some(relay(b"R1", None)),
    ))
    .await
    .unwrap();
    let mut rel = na("2001:db8:a::4", 1, 4003);
    rel.state = LeaseState::Declined;
    s.commit(upd(3, "a", 4003, vec![rel], Some(relay(b"R1", None))))
        .await
        .unwrap();
    let b3 = all(&s, Query::client(duid(3), None), 10).await;
    assert_eq!(b3[0].leases.len(), 1);
    assert_eq!(b3[0].leases[0].addr, a("2001:db8:a::1003"));
}

pub async fn changes_and_expiry(s: Arc<dyn LeaseStore>) {
    for i in 0..10u32 {
        let addr = format!("2001:db8:e::{:x}", i + 1);
        s.commit(upd(
            i,
            "lan",
            1000,
            vec![na(&addr, 1, 2000 + i as u64 * 100)],
            None,
        ))
        .await
        .unwrap();
    }
    let ch = s.changes_since(0, 100).await.unwrap();
    assert_eq!(ch.len(), 10);
    assert!(ch
        .windows(2)
        .all(|w| w[0].client.changed_seq < w[1].client.changed_seq));
    let last = ch.last().unwrap().client.changed_seq;
    assert!(s.changes_since(last, 100).await.unwrap().is_empty());
    assert_eq!(s.changes_since(0, 3).await.unwrap().len(), 3);
    assert_eq!(s.stats().await.unwrap().last_seq, last);

    // Expire at 2450: leases 0..=4 (2000..2400) expire.
    let n = s.expire(2450).await.unwrap();
    assert_eq!(n, 5);
    assert!(s.by_address(a("2001:db8:e::1")).await.unwrap().is_none());
    assert!(s.by_address(a("2001:db8:e::6")).await.unwrap().is_some());
    let ch = s.changes_since(last, 100).await.unwrap();
    assert_eq!(ch.len(), 5);
    assert!(ch
        .iter()
        .all(|b| b.leases[0].state == LeaseState::Expired && b.client.changed_at == 2450));
    assert_eq!(s.expire(2450).await.unwrap(), 0);
    let st = s.stats().await.unwrap();
    assert_eq!(
        (st.bindings, st.active_bindings, st.leases, st.active_leases),
        (10, 5, 10, 5)
    );
    assert_eq!(s.count(&Query::all()).await.unwrap(), 5);
    assert_eq!(s.count(&Query::all().inactive(true)).await.unwrap(), 10);
    // The expired address can now be given to another client.
    s.commit(upd(
        77,
        "lan",
        3000,
        vec![na("2001:db8:e::1", 1, 9000)],
        None,
    ))
    .await
    .unwrap();
}

pub async fn ranges(s: Arc<dyn LeaseStore>) {
    for i in 0..20u32 {
        let addr = format!("2001:db8:f::{:x}", i * 2 + 1);
        s.commit(upd(i, "lan", 1000, vec![na(&addr, 1, 9000)], None))
            .await
            .unwrap();
    }
    s.commit(upd(
        50,
        "lan",
        1000,
        vec![pd("2001:db8:f0::", 48, 1, 9000)],
        None,
    ))
    .await
    .unwrap();
    let mut got = Vec::new();
    let mut after = None;
    loop {
        let v = s
            .active_in_range(a("2001:db8:f::"), a("2001:db8:f::ffff"), after, 6)
            .await
            .unwrap();
        if v.is_empty() {
            break;
        }
        after = Some(v.last().unwrap().addr);
        got.extend(v);
    }
    assert_eq!(got.len(), 20);
    assert!(got.windows(2).all(|w| w[0].addr < w[1].addr));
    assert_eq!(got[0].duid, duid(0));
    assert_eq!(got[0].prefix_len, 128);
    let p = s
        .active_in_range(a("2001:db8:f0::"), a("2001:db8:ff::"), None, 10)
        .await
        .unwrap();
    assert_eq!(p.len(), 1);
    assert_eq!(p[0].prefix_len, 48);
    assert_eq!(p[0].link, "lan");
}

pub async fn batch(s: Arc<dyn LeaseStore>) {
    let mut v = Vec::new();
    for i in 0..50u32 {
        let addr = format!("2001:db8:b::{:x}", i + 1);
        v.push(upd(
            i,
            "lan",
            1000,
            vec![na(&addr, 1, 9000)],
            Some(relay(b"RB", None)),
        ));
    }
    // Item 50 conflicts with item 0; the others still commit.
    v.push(upd(
        999,
        "lan",
        1000,
        vec![na("2001:db8:b::1", 1, 9000)],
        None,
    ));
    let r = s.commit_batch(v).await.unwrap();
    assert_eq!(r.len(), 51);
    assert!(r[..50].iter().all(|x| x.is_ok()));
    assert!(matches!(r[50], Err(StoreError::Conflict { .. })));
    assert_eq!(
        s.count(&Query::relay_id(b"RB".to_vec(), None))
            .await
            .unwrap(),
        50
    );
    assert!(s.by_client(&duid(999), None).await.unwrap().is_empty());
    let seqs: Vec<u64> = r[..50].iter().map(|x| x.as_ref().unwrap().seq).collect();
    assert!(seqs.windows(2).all(|w| w[0] < w[1]));
}

/// A batch is applied as if one update after another, in order: a later update sees what earlier
/// ones wrote (the same binding twice, an address released and then taken, an address taken and
/// then wanted by another client), and change sequence numbers follow the batch order even when
/// new and existing bindings are mixed.
pub async fn batch_in_order(s: Arc<dyn LeaseStore>) {
    for n in [1, 2] {
        let addr = format!("2001:db8:d::{n}");
        s.commit(upd(n, "lan", 1000, vec![na(&addr, 1, 9000)], None))
            .await
            .unwrap();
    }
    let mut release = upd(1, "lan", 1100, vec![], None);
    release.merge = LeaseMerge::Replace;
    let v = vec![
        upd(2, "lan", 1100, vec![na("2001:db8:d::2", 1, 9500)], None),
        upd(3, "lan", 1100, vec![na("2001:db8:d::3", 1, 9000)], None),
        release,
        upd(4, "lan", 1100, vec![na("2001:db8:d::1", 1, 9000)], None),
        upd(5, "lan", 1100, vec![na("2001:db8:d::3", 1, 9000)], None),
        upd(3, "lan", 1200, vec![na("2001:db8:d::33", 2, 9000)], None),
    ];
    let r = s.commit_batch(v).await.unwrap();
    assert_eq!(r.len(), 6);
    assert!(
        matches!(r[4], Err(StoreError::Conflict { addr }) if addr == a("2001:db8:d::3")),
        "{:?}",
        r[4]
    );
    let ok: Vec<&CommitInfo> = [0, 1, 2, 3, 5]
        .iter()
        .map(|&i| r[i].as_ref().expect("commit"))
        .collect();
    assert!(
        ok.windows(2).all(|w| w[0].seq < w[1].seq),
        "seqs in batch order"
    );
    assert_eq!(
        ok[4].binding.leases.len(),
        2,
        "merged with the first update of client 3"
    );
    let holder = |addr: &'static str| {
        let s = s.clone();
        async move { s.by_address(a(addr)).await.unwrap().map(|b| b.client.duid) }
    };
    assert_eq!(holder("2001:db8:d::1").await, Some(duid(4)));
    assert_eq!(holder("2001:db8:d::2").await, Some(duid(2)));
    assert_eq!(holder("2001:db8:d::3").await, Some(duid(3)));
    assert_eq!(holder("2001:db8:d::33").await, Some(duid(3)));
    assert!(s.by_client(&duid(5), None).await.unwrap().is_empty());
    let b1 = s.by_client(&duid(1), None).await.unwrap();
    assert_eq!(b1.len(), 1);
    assert!(b1[0].leases.is_empty());
}

pub async fn concurrent_writers(s: Arc<dyn LeaseStore>) {
    let mut tasks = Vec::new();
    for w in 0..16u32 {
        let s = s.clone();
        tasks.push(tokio::spawn(async move {
            let mut seqs = Vec::new();
            for i in 0..25u32 {
                let n = w * 1000 + i;
                let addr = format!("2001:db8:c:{:x}::{:x}", w, i + 1);
                seqs.push(
                    s.commit(upd(n, "lan", 1000, vec![na(&addr, 1, 9000)], None))
                        .await
                        .unwrap()
                        .seq,
                );
            }
            seqs
        }));
    }
    let mut all_seqs = Vec::new();
    for t in tasks {
        all_seqs.extend(t.await.unwrap());
    }
    let n = all_seqs.len();
    all_seqs.sort();
    all_seqs.dedup();
    assert_eq!(all_seqs.len(), n, "change sequence numbers are unique");
    assert_eq!(s.stats().await.unwrap().bindings, 400);
}

/// Every page of `q` through `page()` and through `page_visit()` (views turned owned), with the cursors.
async fn pages_both(
    s: &Arc<dyn LeaseStore>,
    q: &Query,
    size: usize,
) -> (
    Vec<(Vec<Binding>, Option<Cursor>)>,
    Vec<(Vec<Binding>, Option<Cursor>)>,
) {
    let mut by_page = Vec::new();
    let mut after = None;
    loop {
        let p = s.page(q, after, size).await.expect("page");
        by_page.push((p.bindings, p.next));
        match p.next {
            Some(c) => after = Some(c),
            None => break,
        }
    }
    let mut by_visit = Vec::new();
    let mut after = None;
    loop {
        let mut got = Vec::new();
        let next = s
            .page_visit(q, after, size, &mut |v: &BindingView<'_>| {
                // Every accessor is usable without allocating; the owned copy is what page() returns.
                let leases: Vec<LeaseView> = v.leases().collect();
                let b = v.to_owned();
                assert_eq!(b.leases.len(), leases.len());
                if let Some(r) = &v.relay {
                    assert_eq!(r.relay_ids().len(), r.relay_ids().count());
                }
                assert_eq!(v.is_active(), b.is_active());
                got.push(b);
            })
            .await
            .expect("page_visit");
        by_visit.push((got, next));
        match next {
            Some(c) => after = Some(c),
            None => break,
        }
        assert!(
            by_visit.len() <= by_page.len() + 1,
            "page_visit does not end"
        );
    }
    (by_page, by_visit)
}

/// `page_visit()` visits exactly the bindings `page()` returns, with the same cursors, for every
/// selector, filter and page size.
pub async fn page_visit(s: Arc<dyn LeaseStore>) {
    // 24 clients behind R1 on links a/b with alternating Remote-IDs, some with a PD and an extra
    // relay-id, 6 behind R2, 4 direct; several with inactive leases.
    for i in 0..34u32 {
        let link = if i % 3 == 2 { "b" } else { "a" };
        let now = 1000 + i as u64;
        let mut leases = vec![na(&format!("2001:db8:b::{:x}", i + 1), 1, 9000)];
        if i % 4 == 0 {
            leases.push(pd(&format!("2001:db8:b{:x}::", i + 1), 48, 2, 9500));
        }
        let rel = if i < 24 {
            let remote: &[u8] = if i % 2 == 0 { b"even" } else { b"odd" };
            let mut r = relay(b"R1", Some((9, remote)));
            if i % 5 == 0 {
                r.relay_ids.push(b"R1-outer".to_vec());
                r.subscriber_id = None;
                r.client_linklayer = None;
            }
            Some(r)
        } else if i < 30 {
            Some(relay(b"R2", None))
        } else {
            None
        };
        s.commit(upd(i, link, now, leases, rel)).await.unwrap();
    }
    // Client 3: its only NA released -> inactive binding. Client 4: NA declined, PD still active ->
    // mixed. Client 31 (direct): expired.
    let mut rel = na("2001:db8:b::4", 1, 2000);
    rel.state = LeaseState::Released;
    s.commit(upd(
        3,
        "a",
        2000,
        vec![rel],
        Some(relay(b"R1", Some((9, b"odd")))),
    ))
    .await
    .unwrap();
    let mut dec = na("2001:db8:b::5", 1, 2001);
    dec.state = LeaseState::Declined;
    s.commit(upd(
        4,
        "a",
        2001,
        vec![dec],
        Some(relay(b"R1", Some((9, b"even")))),
    ))
    .await
    .unwrap();
    let mut exp = na("2001:db8:b::20", 1, 2002);
    exp.state = LeaseState::Expired;
    s.commit(upd(31, "a", 2002, vec![exp], None)).await.unwrap();

    let queries = [
        Query::relay_id(b"R1".to_vec(), None),
        Query::relay_id(b"R1".to_vec(), Some("b")),
        Query::relay_id(b"R1-outer".to_vec(), None),
        Query::relay_id(b"R2".to_vec(), None),
        Query::relay_id(b"R3".to_vec(), None),
        Query::link("a"),
        Query::link("b"),
        Query::link("nope"),
        Query::remote_id(9, b"even".to_vec(), None),
        Query::remote_id(9, b"odd".to_vec(), Some("a")),
        Query::client(duid(4), None),
        Query::client(duid(3), Some("a")),
        Query::all(),
        Query::all().since(1010),
        Query::all().until(1012),
        Query::relay_id(b"R1".to_vec(), None)
            .since(1005)
            .until(2000),
        Query::link("b").since(2001),
    ];
    let mut checked = 0;
    for base in queries {
        for inactive in [false, true] {
            let q = base.clone().inactive(inactive);
            for size in [1, 3, 7, 100] {
                let (a, b) = pages_both(&s, &q, size).await;
                assert_eq!(a, b, "{q:?} page size {size}");
                for (bs, _) in &a {
                    for x in bs {
                        if !inactive {
                            assert!(x.leases.iter().all(|l| l.state == LeaseState::Active));
                            assert!(!x.leases.is_empty());
                        }
                    }
                }
                checked += a.iter().map(|p| p.0.len()).sum::<usize>();
            }
        }
    }
    assert!(checked > 500, "{checked}");
    // Spot checks of the data itself.
    let (a, _) = pages_both(&s, &Query::client(duid(4), None), 10).await;
    let b4 = &a[0].0[0];
    assert_eq!(b4.leases.len(), 1);
    assert_eq!(b4.leases[0].kind, LeaseKind::Pd);
    let (a, _) = pages_both(&s, &Query::client(duid(4), None).inactive(true), 10).await;
    assert_eq!(a[0].0[0].leases.len(), 2);
    let (a, _) = pages_both(&s, &Query::client(duid(3), None), 10).await;
    assert!(a[0].0.is_empty());
    let (a, _) = pages_both(&s, &Query::relay_id(b"R1-outer".to_vec(), None), 2).await;
    let ids: Vec<Vec<u8>> = a[0].0[0].client.relay.as_ref().unwrap().relay_ids.clone();
    assert_eq!(ids, vec![b"R1".to_vec(), b"R1-outer".to_vec()]);
    // A cursor in the middle resumes identically, including after a concurrent insert.
    let q = Query::relay_id(b"R1".to_vec(), None);
    let p1 = s.page(&q, None, 5).await.unwrap();
    let mut seen = 0;
    let c1 = s
        .page_visit(&q, None, 5, &mut |_v: &BindingView<'_>| seen += 1)
        .await
        .unwrap();
    assert_eq!((seen, c1), (5, p1.next));
    s.commit(upd(
        900,
        "a",
        3000,
        vec![na("2001:db8:b::900", 1, 9000)],
        Some(relay(b"R1", None)),
    ))
    .await
    .unwrap();
    let (a, b) = pages_both(&s, &q, 4).await;
    assert_eq!(a, b);
    let last = a.iter().flat_map(|p| &p.0).last().expect("bindings");
    assert_eq!(last.client.duid, duid(900));
    // limit 0 behaves like page(): treated as 1.
    let p0 = s.page(&q, None, 0).await.unwrap();
    let mut n0 = 0;
    let c0 = s
        .page_visit(&q, None, 0, &mut |_v: &BindingView<'_>| n0 += 1)
        .await
        .unwrap();
    assert_eq!((n0, c0), (p0.bindings.len(), p0.next));
}

/// Generates one `#[tokio::test]` per conformance case. `$mk` is an async fn returning
/// `Option<(Arc<dyn LeaseStore>, Guard)>` (None = backend not available, test skipped).
#[macro_export]
macro_rules! conformance {
    ($mk:path; $($name:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                let Some((store, guard)) = $mk(stringify!($name)).await else { return };
                common::$name(store).await;
                drop(guard);
            }
        )*
    };
}
