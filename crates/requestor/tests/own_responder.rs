//! The requestor library against lq6's own responder, in process, over real
//! loopback sockets: bulk TCP (parallel queries on one connection) and UDP
//! (including the LQ_CLIENT_LINK re-query).

#[path = "../../leasequery/tests/support/mod.rs"]
mod support;

use lq6_proto::{Duid, Message};
use lq6_requestor::{BulkConnection, Query, RequestorConfig, UdpRequestor};
use std::sync::Arc;
use std::time::Duration;
use support::*;

fn cfg() -> RequestorConfig {
    RequestorConfig {
        duid: requestor_duid(),
        bulk_timeout: Duration::from_secs(10),
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bulk_queries_in_parallel_on_one_connection() {
    // The bindings are stamped at or after `t0` (last contact 100 s before that);
    // the answers are complete by `t1`.
    let t0 = lq6_store::unix_now();
    let s = start(test_config(), &[("lan1", 1, 2000), ("lan2", 2, 500)]).await;
    let conn = BulkConnection::connect(s.addr, cfg()).await.unwrap();
    let q1 = conn
        .query(&Query::by_relay_id(relay_id(1)).with_relay_data(true))
        .await
        .unwrap();
    let q2 = conn
        .query(&Query::by_link(a("2001:db8:2::1")))
        .await
        .unwrap();
    let (r1, r2) = tokio::join!(q1.collect_all(), q2.collect_all());
    let (r1, r2) = (r1.unwrap(), r2.unwrap());
    let t1 = lq6_store::unix_now();
    assert_eq!(r1.len(), 2000);
    assert_eq!(r2.len(), 500);
    let mut ids: Vec<Duid> = r1.iter().map(|b| b.client_id.clone().unwrap()).collect();
    ids.sort();
    let mut want: Vec<Duid> = (0..2000).map(client_duid).collect();
    want.sort();
    assert_eq!(ids, want, "exactly relay 1's clients");
    let b = &r1[0];
    assert_eq!(b.prefixes.len(), 1);
    assert_eq!(b.prefixes[0].prefix_len, 56);
    assert_eq!(b.addresses.len(), 1);
    let clt = b.clt_time.unwrap();
    assert!(
        (100..=100 + (t1 - t0) as u32).contains(&clt),
        "clt-time {clt}, {} s after the fill",
        t1 - t0
    );
    let rd = b.relay_data.as_ref().expect("relay data requested");
    assert_eq!(rd.peer_address, a("2001:db8:ffff::2"));
    assert!(matches!(rd.message.as_ref(), Message::Relay(_)));
    assert!(
        r2.iter().all(|b| b.relay_data.is_none()),
        "relay data only when asked"
    );
    // An empty answer completes without DONE and the connection stays usable.
    let none = conn
        .query(&Query::by_relay_id(relay_id(99)))
        .await
        .unwrap()
        .collect_all()
        .await
        .unwrap();
    assert!(none.is_empty());
    let again = conn
        .query(&Query::by_remote_id(9, vec![2, 1]))
        .await
        .unwrap()
        .collect_all()
        .await
        .unwrap();
    assert_eq!(again.len(), 500);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn udp_address_and_client_link_requery() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_store(&dir).await;
    let now = lq6_store::unix_now();
    store.commit(update(1, "lan1", 1, now)).await.unwrap();
    store.commit(update(2, "lan1", 1, now)).await.unwrap();
    store.commit(update(2, "lan2", 1, now)).await.unwrap();
    let responder =
        lq6_leasequery::Responder::new(test_config(), Arc::new(Links), store, server_duid());
    // A minimal UDP loop in front of handle_udp, as the DHCPv6 server runs it.
    let sock = Arc::new(tokio::net::UdpSocket::bind("[::1]:0").await.unwrap());
    let server = sock.local_addr().unwrap();
    tokio::spawn(async move {
        let mut buf = vec![0u8; 1500];
        loop {
            let Ok((n, src)) = sock.recv_from(&mut buf).await else {
                return;
            };
            let Ok(Message::Client(m)) = Message::decode(&buf[..n]) else {
                continue;
            };
            if let Some(r) = responder.handle_udp(&m, src, false).await {
                let _ = sock.send_to(&r.to_vec().unwrap(), src).await;
            }
        }
    });
    let req = UdpRequestor::new(cfg());
    let na = std::net::Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 1, 1);
    let got = req.query(server, &Query::by_address(na)).await.unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].client_id, Some(client_duid(1)));
    // Client 2 is on two links: LQ_CLIENT_LINK, then one query per link.
    let got = req
        .query(server, &Query::by_client_id(client_duid(2)))
        .await
        .unwrap();
    assert_eq!(got.len(), 2);
    let mut links: Vec<_> = got.iter().map(|b| b.link_address.unwrap()).collect();
    links.sort();
    assert_eq!(links, vec![a("2001:db8:1::1"), a("2001:db8:2::1")]);
}
