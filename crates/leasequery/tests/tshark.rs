//! tshark decodes a real Bulk Leasequery exchange with the responder
//! (REPLY, DATA..., DONE) with the expected values and nothing malformed.

mod support;
#[path = "../../proto/tests/support/tshark.rs"]
mod tshark;

use lq6_proto::*;
use std::net::Ipv6Addr;
use support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tshark_decodes_a_captured_bulk_exchange() {
    if !tshark::available() {
        return;
    }
    // The bindings are stamped at or after `t0` (last contact 100 s before that);
    // the answer is complete by `t1`.
    let t0 = lq6_store::unix_now();
    let s = start(test_config(), &[("lan1", 1, 5)]).await;
    let port = s.addr.port();
    let cap = tokio::task::spawn_blocking(move || {
        tshark::Capture::start("bulk", &format!("tcp port {port}"))
    })
    .await
    .unwrap();
    let mut c = Client::connect(s.addr).await;
    c.send(&query(
        0x0a0b0c,
        QueryType::ByRelayId,
        Ipv6Addr::UNSPECIFIED,
        vec![
            DhcpOption::RelayId(relay_id(1)),
            DhcpOption::Oro(vec![code::LQ_RELAY_DATA]),
        ],
    ))
    .await;
    let ans = c.answer().await;
    let t1 = lq6_store::unix_now();
    assert_eq!(ans.client_data().len(), 5);
    drop(c);
    let pcap = tokio::task::spawn_blocking(move || cap.stop())
        .await
        .unwrap();
    let decode_as = vec![format!("tcp.port=={port},dhcpv6.bulk_leasequery")];
    let rows = tshark::fields(
        &pcap,
        &decode_as,
        "dhcpv6.bulk_leasequery",
        &[
            "dhcpv6.bulk_leasequery.msgtype",
            "dhcpv6.bulk_leasequery.trans_id",
            "dhcpv6.lq_query",
            "dhcpv6.iaprefix.pref_len",
            "dhcpv6.iaprefix.pref_addr",
            "dhcpv6.clt_time",
            "dhcpv6.lq_relay_data_peer_addr",
            "dhcpv6.status_code",
            "dhcpv6.duid.bytes",
        ],
    );
    assert_eq!(
        tshark::column(&rows, 0),
        ["14", "15", "17", "17", "17", "17", "16"],
        "{rows:?}"
    );
    assert!(tshark::column(&rows, 1)
        .iter()
        .all(|x| x == &(0x0b0c).to_string()));
    assert_eq!(tshark::column(&rows, 2), ["3"]);
    assert_eq!(tshark::column(&rows, 3), vec!["56"; 5]);
    let mut expect_prefixes: Vec<String> = (0..5u16)
        .map(|i| Ipv6Addr::new(0x2001, 0xdb8, 0x100, i << 8, 0, 0, 0, 0).to_string())
        .collect();
    expect_prefixes.sort();
    let mut got = tshark::column(&rows, 4);
    got.sort();
    assert_eq!(got, expect_prefixes);
    let clt = 100..=100 + (t1 - t0) as u32;
    let got = tshark::column(&rows, 5);
    assert!(
        got.iter().all(|t| clt.contains(&t.parse::<u32>().unwrap())),
        "clt-time {got:?} outside {clt:?}"
    );
    assert_eq!(tshark::column(&rows, 6), vec!["2001:db8:ffff::2"; 5]);
    // Status in the REPLY and in the DONE: Success.
    assert_eq!(tshark::column(&rows, 7), ["0", "0"]);
    let duids = tshark::column(&rows, 8);
    assert!(duids.contains(&hex::encode(server_duid().as_bytes())));
    assert!(duids.contains(&hex::encode(client_duid(0).as_bytes())));
    let bad = tshark::fields(
        &pcap,
        &decode_as,
        "_ws.malformed || _ws.expert.severity == error",
        &["frame.number", "_ws.col.Info"],
    );
    assert!(bad.is_empty(), "tshark flagged: {bad:?}");
    let _ = std::fs::remove_file(pcap);
}
