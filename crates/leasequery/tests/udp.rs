//! RFC 5007 leasequery over UDP through `Responder::handle_udp`, asserted on
//! the encoded reply.

mod support;

use lq6_leasequery::Responder;
use lq6_proto::*;
use std::net::{Ipv6Addr, SocketAddr};
use std::sync::Arc;
use support::*;

fn src() -> SocketAddr {
    "[::1]:40000".parse().unwrap()
}

fn lq(m: Message) -> ClientMessage {
    match m {
        Message::Client(c) => c,
        _ => unreachable!(),
    }
}

async fn responder(cfg: lq6_config::LeasequeryConfig) -> (Arc<Responder>, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let store = open_store(&dir).await;
    let now = lq6_store::unix_now();
    store.commit(update(1, "lan1", 1, now)).await.unwrap();
    store.commit(update(2, "lan1", 1, now)).await.unwrap();
    store.commit(update(2, "lan2", 1, now)).await.unwrap();
    (
        Responder::new(cfg, Arc::new(Links), store, server_duid()),
        dir,
    )
}

/// Re-encodes and decodes the reply, so assertions are on wire bytes.
async fn ask(r: &Responder, q: Message) -> Option<ClientMessage> {
    let reply = r.handle_udp(&lq(q), src(), false).await?;
    let bytes = reply.to_vec().unwrap();
    match Message::decode(&bytes).unwrap() {
        Message::Client(c) => Some(c),
        m => panic!("{m:?}"),
    }
}

fn by_addr(xid: u32, addr: Ipv6Addr) -> Message {
    query(
        xid,
        QueryType::ByAddress,
        Ipv6Addr::UNSPECIFIED,
        vec![DhcpOption::IaAddr(IaAddr {
            addr,
            preferred: 0,
            valid: 0,
            options: vec![],
        })],
    )
}

#[tokio::test]
async fn query_by_address_exact_and_inside_a_delegated_prefix() {
    let (r, _d) = responder(test_config()).await;
    let na = Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 1, 1); // client 1's IA_NA address
    let rep = ask(&r, by_addr(0x111111, na)).await.unwrap();
    assert_eq!(rep.msg_type, MessageType::LEASEQUERY_REPLY);
    assert_eq!(rep.xid, 0x111111);
    assert_eq!(rep.options.as_slice().server_id(), Some(&server_duid()));
    assert_eq!(rep.options.as_slice().client_id(), Some(&requestor_duid()));
    let cd = client_data(&rep).expect("CLIENT_DATA");
    assert_eq!(cd.as_slice().client_id(), Some(&client_duid(1)));
    assert!(cd.iter().any(|o| matches!(o, DhcpOption::CltTime(_))));
    // An address inside client 1's /56 (2001:db8:100:100::/56).
    let inside = Ipv6Addr::new(0x2001, 0xdb8, 0x100, 0x1ff, 0, 0, 0, 7);
    let rep = ask(&r, by_addr(2, inside)).await.unwrap();
    assert_eq!(
        client_data(&rep).unwrap().as_slice().client_id(),
        Some(&client_duid(1))
    );
    // A configured but unleased address: Success and no CLIENT_DATA.
    let rep = ask(&r, by_addr(3, a("2001:db8:1::dead"))).await.unwrap();
    assert_eq!(status_of(&rep), Status::Success);
    assert!(client_data(&rep).is_none());
    // Not in any configured link: NotConfigured.
    let rep = ask(&r, by_addr(4, a("2001:db8:77::1"))).await.unwrap();
    assert_eq!(status_of(&rep), Status::NotConfigured);
}

#[tokio::test]
async fn client_on_several_links_gets_client_link_then_requery_per_link() {
    let (r, _d) = responder(test_config()).await;
    let rep = ask(
        &r,
        query(
            5,
            QueryType::ByClientId,
            Ipv6Addr::UNSPECIFIED,
            vec![DhcpOption::ClientId(client_duid(2))],
        ),
    )
    .await
    .unwrap();
    assert!(
        client_data(&rep).is_none(),
        "no client data with LQ_CLIENT_LINK (RFC 5007 §4.3.3)"
    );
    let links = rep
        .options
        .iter()
        .find_map(|o| match o {
            DhcpOption::LqClientLink(v) => Some(v.clone()),
            _ => None,
        })
        .expect("LQ_CLIENT_LINK");
    let mut sorted = links.clone();
    sorted.sort();
    assert_eq!(sorted, vec![a("2001:db8:1::1"), a("2001:db8:2::1")]);
    for l in links {
        let rep = ask(
            &r,
            query(
                6,
                QueryType::ByClientId,
                l,
                vec![DhcpOption::ClientId(client_duid(2))],
            ),
        )
        .await
        .unwrap();
        assert_eq!(
            client_data(&rep).unwrap().as_slice().client_id(),
            Some(&client_duid(2))
        );
    }
    // On exactly one link: CLIENT_DATA directly.
    let rep = ask(
        &r,
        query(
            7,
            QueryType::ByClientId,
            Ipv6Addr::UNSPECIFIED,
            vec![DhcpOption::ClientId(client_duid(1))],
        ),
    )
    .await
    .unwrap();
    assert!(client_data(&rep).is_some());
}

#[tokio::test]
async fn udp_errors_and_discards() {
    let (r, _d) = responder(test_config()).await;
    // Bulk-only query types over UDP: NotAllowed (RFC 5460 §4).
    for qt in [
        QueryType::ByRelayId,
        QueryType::ByLinkAddress,
        QueryType::ByRemoteId,
    ] {
        let rep = ask(
            &r,
            query(
                8,
                qt,
                a("2001:db8:1::1"),
                vec![DhcpOption::RelayId(relay_id(1))],
            ),
        )
        .await
        .unwrap();
        assert_eq!(status_of(&rep), Status::NotAllowed, "{qt}");
    }
    let rep = ask(
        &r,
        query(9, QueryType::Other(42), Ipv6Addr::UNSPECIFIED, vec![]),
    )
    .await
    .unwrap();
    assert_eq!(status_of(&rep), Status::UnknownQueryType);
    let rep = ask(
        &r,
        query(10, QueryType::ByAddress, Ipv6Addr::UNSPECIFIED, vec![]),
    )
    .await
    .unwrap();
    assert_eq!(status_of(&rep), Status::MalformedQuery);
    let rep = ask(
        &r,
        query(
            11,
            QueryType::ByClientId,
            a("2001:db8:99::1"),
            vec![DhcpOption::ClientId(client_duid(1))],
        ),
    )
    .await
    .unwrap();
    assert_eq!(status_of(&rep), Status::NotConfigured);
    // Discards (RFC 5007 §4.2.1): no CLIENTID, another server's SERVERID, no LQ_QUERY.
    let mut m = lq(by_addr(12, a("2001:db8:1::1")));
    m.options.retain(|o| o.code() != code::CLIENTID);
    assert!(r.handle_udp(&m, src(), false).await.is_none());
    let mut m = lq(by_addr(13, a("2001:db8:1::1")));
    m.options
        .push(DhcpOption::ServerId(Duid::en(1, b"someone-else")));
    assert!(r.handle_udp(&m, src(), false).await.is_none());
    let mut m = lq(by_addr(14, a("2001:db8:1::1")));
    m.options.retain(|o| o.code() != code::LQ_QUERY);
    assert!(r.handle_udp(&m, src(), false).await.is_none());
    // Our own SERVERID is fine.
    let mut m = lq(by_addr(15, Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 1, 1)));
    m.options.push(DhcpOption::ServerId(server_duid()));
    assert!(r.handle_udp(&m, src(), false).await.is_some());
    assert!(
        r.metrics()
            .udp_dropped
            .load(std::sync::atomic::Ordering::Relaxed)
            >= 3
    );
}

#[tokio::test]
async fn allow_list_and_relayed_policy() {
    let mut cfg = test_config();
    cfg.allow_relayed = false;
    let (r, _d) = responder(cfg).await;
    let q = lq(by_addr(1, Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 1, 1)));
    // Not in the allow-list (loopback only by default): NotAllowed, no data.
    let rep = r
        .handle_udp(&q, "[2001:db8::5]:546".parse().unwrap(), false)
        .await
        .unwrap();
    let Message::Client(rep) = rep else { panic!() };
    assert_eq!(status_of(&rep), Status::NotAllowed);
    assert!(client_data(&rep).is_none());
    // Relayed queries refused by configuration.
    let Message::Client(rep) = r.handle_udp(&q, src(), true).await.unwrap() else {
        panic!()
    };
    assert_eq!(status_of(&rep), Status::NotAllowed);
    let m = r.metrics().render();
    assert!(m.contains("lq6_leasequery_queries_total{transport=\"udp\",type=\"address\",outcome=\"NotAllowed\"} 2"), "{m}");
}
