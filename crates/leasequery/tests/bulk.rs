//! RFC 5460 Bulk Leasequery over real loopback TCP, asserted on the decoded
//! bytes the responder sent.

mod support;

use lq6_proto::*;
use std::net::Ipv6Addr;
use support::*;

fn relay_q(xid: u32, relay: u8, link: Ipv6Addr, mut extra: Vec<DhcpOption>) -> Message {
    let mut opts = vec![DhcpOption::RelayId(relay_id(relay))];
    opts.append(&mut extra);
    query(xid, QueryType::ByRelayId, link, opts)
}

fn clients(ans: &Answer) -> Vec<Duid> {
    ans.client_data()
        .iter()
        .map(|cd| {
            cd.as_slice()
                .client_id()
                .cloned()
                .expect("CLIENTID in CLIENT_DATA")
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relay_id_query_has_reply_data_done_structure() {
    // `fill` stamps the bindings at or after `t0`; the server answers by `t1`.
    let t0 = lq6_store::unix_now();
    let s = start(
        test_config(),
        &[("lan1", 1, 1200), ("lan1", 2, 50), ("lan2", 1, 30)],
    )
    .await;
    let mut c = Client::connect(s.addr).await;
    c.send(&relay_q(0x010203, 1, Ipv6Addr::UNSPECIFIED, vec![]))
        .await;
    let ans = c.answer().await;
    let t1 = lq6_store::unix_now();
    // REPLY: status, SERVERID, CLIENTID (ours), first CLIENT_DATA.
    let r = ans.reply.options.as_slice();
    assert_eq!(ans.reply.xid, 0x010203);
    assert_eq!(ans.status(), Status::Success);
    assert_eq!(r.server_id(), Some(&server_duid()));
    assert_eq!(r.client_id(), Some(&requestor_duid()));
    // DATA: one CLIENT_DATA each and nothing else (§5.3).
    for d in &ans.data {
        assert_eq!(
            d.options.len(),
            1,
            "DATA carries only CLIENT_DATA: {:?}",
            d.options
        );
        assert!(matches!(d.options[0], DhcpOption::ClientData(_)));
    }
    let done = ans.done.as_ref().expect("DONE after data");
    assert_eq!(status_of(done), Status::Success);
    // Relay 1's bindings on both links, each client once, nobody else's.
    let got = clients(&ans);
    assert_eq!(got.len(), 1230);
    let mut uniq = got.clone();
    uniq.sort();
    uniq.dedup();
    assert_eq!(uniq.len(), 1230);
    assert!(
        !got.contains(&client_duid(1200)),
        "relay 2's client leaked into relay 1's answer"
    );

    // CLIENT_DATA contents (RFC 5007 §4.4.2): CLIENTID, IAPREFIX, IAADDR with
    // remaining lifetimes, CLT_TIME; no LQ_RELAY_DATA unless asked. The leases were
    // stored valid 3500 s and preferred 1700 s from the fill, 100 s after the last
    // contact, and at most `t1 - t0` seconds passed between the fill and the answer
    // (however slow the machine).
    let age = (t1 - t0) as u32;
    let cd = &ans.client_data()[0];
    let prefix = cd
        .iter()
        .find_map(|o| match o {
            DhcpOption::IaPrefix(p) => Some(p.clone()),
            _ => None,
        })
        .unwrap();
    assert_eq!(prefix.prefix_len, 56);
    assert!(
        (3500 - age..=3500).contains(&prefix.valid),
        "remaining valid {} ({age} s after the fill)",
        prefix.valid
    );
    assert!(
        (1700 - age..=1700).contains(&prefix.preferred),
        "remaining preferred {} ({age} s after the fill)",
        prefix.preferred
    );
    assert!(cd.iter().any(|o| matches!(o, DhcpOption::IaAddr(_))));
    let clt = cd
        .iter()
        .find_map(|o| match o {
            DhcpOption::CltTime(t) => Some(*t),
            _ => None,
        })
        .unwrap();
    assert!(
        (100..=100 + age).contains(&clt),
        "clt-time {clt} ({age} s after the fill)"
    );
    assert!(!cd.iter().any(|o| o.code() == code::LQ_RELAY_DATA));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn empty_answer_is_a_reply_without_done() {
    let s = start(test_config(), &[("lan1", 1, 5)]).await;
    let mut c = Client::connect(s.addr).await;
    c.send(&relay_q(1, 77, Ipv6Addr::UNSPECIFIED, vec![])).await;
    let ans = c.answer().await;
    assert_eq!(ans.status(), Status::Success);
    assert!(ans.client_data().is_empty());
    // The next message on the connection must answer the next query, not a stray DONE.
    c.send(&relay_q(2, 1, Ipv6Addr::UNSPECIFIED, vec![])).await;
    let next = c.recv().await.unwrap();
    assert_eq!(
        (next.msg_type, next.xid),
        (MessageType::LEASEQUERY_REPLY, 2)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn link_filters_remote_id_and_link_address_queries() {
    let s = start(
        test_config(),
        &[("lan1", 1, 20), ("lan2", 1, 7), ("lan2", 3, 4)],
    )
    .await;
    let mut c = Client::connect(s.addr).await;
    // Relay-ID restricted to lan2 by a link-address inside it.
    c.send(&relay_q(1, 1, a("2001:db8:2::99"), vec![])).await;
    assert_eq!(c.answer().await.client_data().len(), 7);
    // A link-address on no configured link: NotConfigured.
    c.send(&relay_q(2, 1, a("2001:db8:9::1"), vec![])).await;
    let ans = c.answer().await;
    assert_eq!(ans.status(), Status::NotConfigured);
    assert!(ans.client_data().is_empty() && ans.done.is_none());
    // QUERY_BY_LINK_ADDRESS.
    c.send(&query(
        3,
        QueryType::ByLinkAddress,
        a("2001:db8:2::1"),
        vec![],
    ))
    .await;
    assert_eq!(c.answer().await.client_data().len(), 11);
    c.send(&query(
        4,
        QueryType::ByLinkAddress,
        Ipv6Addr::UNSPECIFIED,
        vec![],
    ))
    .await;
    assert_eq!(c.answer().await.status(), Status::NotConfigured);
    // QUERY_BY_REMOTE_ID: enterprise 9, id [3, 1] (relay 3's clients).
    c.send(&query(
        5,
        QueryType::ByRemoteId,
        Ipv6Addr::UNSPECIFIED,
        vec![DhcpOption::RemoteId(RemoteId {
            enterprise: 9,
            id: vec![3, 1],
        })],
    ))
    .await;
    assert_eq!(c.answer().await.client_data().len(), 4);
    c.send(&query(
        6,
        QueryType::ByRemoteId,
        Ipv6Addr::UNSPECIFIED,
        vec![DhcpOption::RemoteId(RemoteId {
            enterprise: 10,
            id: vec![3, 1],
        })],
    ))
    .await;
    assert!(c.answer().await.client_data().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn error_statuses() {
    let mut cfg = test_config();
    cfg.requestors.push(lq6_config::RequestorPolicy {
        prefix: "::1/128".parse().unwrap(),
        query_types: Some(vec![
            lq6_config::QueryTypeName::RelayId,
            lq6_config::QueryTypeName::Address,
        ]),
        max_connections: None,
        max_queries: None,
    });
    let s = start(cfg, &[("lan1", 1, 3)]).await;
    let mut c = Client::connect(s.addr).await;
    c.send(&query(
        1,
        QueryType::Other(9),
        Ipv6Addr::UNSPECIFIED,
        vec![],
    ))
    .await;
    assert_eq!(c.answer().await.status(), Status::UnknownQueryType);
    c.send(&query(
        2,
        QueryType::ByRelayId,
        Ipv6Addr::UNSPECIFIED,
        vec![],
    ))
    .await;
    assert_eq!(c.answer().await.status(), Status::MalformedQuery);
    c.send(&query(
        3,
        QueryType::ByLinkAddress,
        a("2001:db8:1::1"),
        vec![],
    ))
    .await;
    let ans = c.answer().await;
    assert_eq!(
        ans.status(),
        Status::NotAllowed,
        "per-requestor query-type restriction"
    );
    assert_eq!(
        ans.reply.options.as_slice().client_id(),
        Some(&requestor_duid())
    );
    // SERVERID of another server on TCP: NotAllowed, nothing else.
    let mut q = relay_q(4, 1, Ipv6Addr::UNSPECIFIED, vec![]);
    if let Message::Client(m) = &mut q {
        m.options.push(DhcpOption::ServerId(Duid::en(1, b"other")));
    }
    c.send(&q).await;
    assert_eq!(c.answer().await.status(), Status::NotAllowed);
    // The connection is still usable after errors.
    c.send(&relay_q(5, 1, Ipv6Addr::UNSPECIFIED, vec![])).await;
    assert_eq!(c.answer().await.client_data().len(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oro_relay_data_base_time_and_sensitive_options() {
    let s = start(test_config(), &[("lan1", 1, 3)]).await;
    let mut c = Client::connect(s.addr).await;
    let oro = DhcpOption::Oro(vec![
        code::LQ_RELAY_DATA,
        code::LQ_BASE_TIME,
        code::REMOTE_ID,
    ]);
    let before = types::unix_to_dhcp_time(lq6_store::unix_now());
    c.send(&relay_q(1, 1, Ipv6Addr::UNSPECIFIED, vec![oro.clone()]))
        .await;
    let ans = c.answer().await;
    let after = types::unix_to_dhcp_time(lq6_store::unix_now());
    let base = |m: &ClientMessage| {
        m.options.iter().find_map(|o| match o {
            DhcpOption::LqBaseTime(t) => Some(*t),
            _ => None,
        })
    };
    // RFC 7653 §6.3.1: LQ_BASE_TIME in every message of the query, the server's
    // current time while it answered.
    for m in std::iter::once(&ans.reply)
        .chain(&ans.data)
        .chain(ans.done.iter())
    {
        let t = base(m).expect("LQ_BASE_TIME in every message");
        assert!(
            (before..=after).contains(&t),
            "LQ_BASE_TIME {t} outside [{before}, {after}]"
        );
    }
    let cd = &ans.client_data()[0];
    let rd = cd
        .iter()
        .find_map(|o| match o {
            DhcpOption::LqRelayData(r) => Some(r.clone()),
            _ => None,
        })
        .expect("LQ_RELAY_DATA");
    assert_eq!(rd.peer_address, a("2001:db8:ffff::2"));
    let Message::Relay(rf) = rd.message.as_ref() else {
        panic!("relay message expected")
    };
    assert_eq!(rf.msg_type, MessageType::RELAY_FORW);
    assert!(rf.relay_msg().is_none(), "client message removed");
    assert_eq!(rf.interface_id(), Some(&b"port7"[..]));
    assert!(cd
        .iter()
        .any(|o| matches!(o, DhcpOption::RemoteId(r) if r.id == vec![1, 1])));

    // The same with LQ_RELAY_DATA listed as sensitive: never returned.
    let mut cfg = test_config();
    cfg.sensitive_options = vec![code::LQ_RELAY_DATA];
    let s2 = start(cfg, &[("lan1", 1, 2)]).await;
    let mut c2 = Client::connect(s2.addr).await;
    c2.send(&relay_q(1, 1, Ipv6Addr::UNSPECIFIED, vec![oro]))
        .await;
    let ans = c2.answer().await;
    assert!(ans
        .client_data()
        .iter()
        .all(|cd| !cd.iter().any(|o| o.code() == code::LQ_RELAY_DATA)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_and_end_time_filters_top_level_or_inside_lq_query() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_store(&dir).await;
    let now = lq6_store::unix_now();
    // Three generations of changes: 1000 s ago, 500 s ago and 100 s ago.
    for (i, age) in [(0u32, 1000u64), (1, 500), (2, 100)] {
        let mut u = update(i, "lan1", 1, now);
        u.now = Some(now - age);
        u.cltt = now - age;
        store.commit(u).await.unwrap();
    }
    let s = start_with(test_config(), dir, store).await;
    let mut c = Client::connect(s.addr).await;
    let t = |age: u64| types::unix_to_dhcp_time(now - age);
    // START inside LQ_QUERY.
    c.send(&relay_q(
        1,
        1,
        Ipv6Addr::UNSPECIFIED,
        vec![DhcpOption::LqStartTime(t(600))],
    ))
    .await;
    assert_eq!(c.answer().await.client_data().len(), 2);
    // START and END at top level.
    let mut q = relay_q(2, 1, Ipv6Addr::UNSPECIFIED, vec![]);
    if let Message::Client(m) = &mut q {
        m.options.push(DhcpOption::LqStartTime(t(600)));
        m.options.push(DhcpOption::LqEndTime(t(300)));
    }
    c.send(&q).await;
    let ans = c.answer().await;
    assert_eq!(clients(&ans), vec![client_duid(1)]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parallel_queries_interleave_and_demultiplex_by_xid() {
    let s = start(test_config(), &[("lan1", 1, 3000), ("lan2", 2, 2000)]).await;
    let mut c = Client::connect(s.addr).await;
    c.send(&relay_q(10, 1, Ipv6Addr::UNSPECIFIED, vec![])).await;
    c.send(&relay_q(20, 2, Ipv6Addr::UNSPECIFIED, vec![])).await;
    c.send(&query(
        30,
        QueryType::ByLinkAddress,
        a("2001:db8:1::1"),
        vec![],
    ))
    .await;
    let mut count = std::collections::HashMap::<u32, usize>::new();
    let mut done = std::collections::HashSet::new();
    let mut order = Vec::new();
    while done.len() < 3 {
        let m = c.recv().await.expect("message");
        order.push(m.xid);
        match m.msg_type {
            MessageType::LEASEQUERY_REPLY => {
                assert!(!count.contains_key(&m.xid), "one REPLY per query");
                count.insert(m.xid, client_data(&m).map_or(0, |_| 1));
            }
            MessageType::LEASEQUERY_DATA => {
                *count.get_mut(&m.xid).expect("DATA after its REPLY") += 1
            }
            MessageType::LEASEQUERY_DONE => {
                assert!(done.insert(m.xid));
            }
            t => panic!("{t}"),
        }
    }
    assert_eq!(count[&10], 3000);
    assert_eq!(count[&20], 2000);
    assert_eq!(count[&30], 3000);
    let switches = order.windows(2).filter(|w| w[0] != w[1]).count();
    assert!(
        switches > 2,
        "replies were not interleaved ({switches} switches)"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn address_and_client_id_over_tcp_never_send_client_link() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_store(&dir).await;
    let now = lq6_store::unix_now();
    // Client 5 on two links.
    store.commit(update(5, "lan1", 1, now)).await.unwrap();
    store.commit(update(5, "lan2", 1, now)).await.unwrap();
    let s = start_with(test_config(), dir, store).await;
    let mut c = Client::connect(s.addr).await;
    c.send(&query(
        1,
        QueryType::ByClientId,
        Ipv6Addr::UNSPECIFIED,
        vec![DhcpOption::ClientId(client_duid(5))],
    ))
    .await;
    let ans = c.answer().await;
    assert_eq!(
        ans.client_data().len(),
        2,
        "one CLIENT_DATA per link over TCP"
    );
    assert!(!ans
        .reply
        .options
        .iter()
        .any(|o| o.code() == code::LQ_CLIENT_LINK));
    // By address: an address inside client 5's delegated /56 on lan1.
    let inside = Ipv6Addr::new(0x2001, 0xdb8, 0x100, 0x0500, 0, 0, 0, 0x42);
    c.send(&query(
        2,
        QueryType::ByAddress,
        Ipv6Addr::UNSPECIFIED,
        vec![DhcpOption::IaAddr(IaAddr {
            addr: inside,
            preferred: 0,
            valid: 0,
            options: vec![],
        })],
    ))
    .await;
    let ans = c.answer().await;
    assert_eq!(clients(&ans), vec![client_duid(5)]);
    assert!(ans.done.is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn active_leasequery_and_starttls_are_refused_then_closed() {
    let s = start(test_config(), &[]).await;
    let mut c = Client::connect(s.addr).await;
    let mut alq = ClientMessage::new(MessageType::ACTIVELEASEQUERY, 7);
    alq.options.push(DhcpOption::ClientId(requestor_duid()));
    c.send(&Message::Client(alq)).await;
    let r = c.recv().await.unwrap();
    assert_eq!(
        (r.msg_type, r.xid, status_of(&r)),
        (MessageType::LEASEQUERY_REPLY, 7, Status::NotSupported)
    );
    assert!(c.recv().await.is_none(), "closed after NotSupported");

    let mut c = Client::connect(s.addr).await;
    c.send(&Message::Client(ClientMessage::new(
        MessageType::STARTTLS,
        8,
    )))
    .await;
    let r = c.recv().await.unwrap();
    assert_eq!(
        (r.msg_type, r.xid, status_of(&r)),
        (MessageType::REPLY, 8, Status::TlsConnectionRefused)
    );
    assert!(c.recv().await.is_none());

    // A message type that may not flow on a bulk connection closes it.
    let mut c = Client::connect(s.addr).await;
    c.send(&Message::Client(ClientMessage::new(
        MessageType::SOLICIT,
        9,
    )))
    .await;
    assert!(c.recv().await.is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_terminates_in_flight_queries_with_query_terminated() {
    const N: u32 = 10_000;
    let mut cfg = test_config();
    cfg.tcp.page_size = 64;
    let s = start(cfg, &[]).await;
    // An answer (over 20 MB) far larger than the socket buffers: once the requestor
    // stops reading, the query stays in flight however fast the server is.
    fill_bulky(&s.store, 1, N).await;
    let mut c = Client::connect(s.addr).await;
    c.send(&bulky_query(1, 1)).await;
    let first = c.recv().await.unwrap();
    assert_eq!(first.msg_type, MessageType::LEASEQUERY_REPLY);
    // Read a little, then shut the server down while the answer is streaming.
    for _ in 0..10 {
        c.recv().await.unwrap();
    }
    let m = s.responder.metrics();
    assert_eq!(
        m.queries(true, QueryType::ByRelayId, Status::Success),
        0,
        "the query finished before the shutdown"
    );
    s.shutdown.cancel();
    let mut last = None;
    let mut n = 11;
    while let Some(m) = c.recv().await {
        n += 1;
        last = Some(m);
    }
    let last = last.expect("a final message");
    assert_eq!(last.msg_type, MessageType::LEASEQUERY_DONE);
    assert_eq!(status_of(&last), Status::QueryTerminated);
    assert!(n < N, "the query was cut short ({n} messages)");
    assert!(s.task.await.unwrap().is_ok());
}
