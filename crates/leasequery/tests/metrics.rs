//! The Prometheus endpoint serves the responder's counters after real traffic.

mod support;

use lq6_proto::*;
use std::net::Ipv6Addr;
use std::sync::Arc;
use std::time::Duration;
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_endpoint_reports_queries_bindings_and_refusals() {
    let mut cfg = test_config();
    cfg.tcp.max_connections = 1;
    let s = start(cfg, &[("lan1", 1, 25)]).await;
    let mut c = Client::connect(s.addr).await;
    c.send(&query(
        1,
        QueryType::ByRelayId,
        Ipv6Addr::UNSPECIFIED,
        vec![DhcpOption::RelayId(relay_id(1))],
    ))
    .await;
    assert_eq!(c.answer().await.client_data().len(), 25);
    c.send(&query(
        2,
        QueryType::Other(77),
        Ipv6Addr::UNSPECIFIED,
        vec![],
    ))
    .await;
    assert_eq!(c.answer().await.status(), Status::UnknownQueryType);

    let l = tokio::net::TcpListener::bind("[::1]:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let m = s.responder.metrics();
    let shutdown = tokio_util::sync::CancellationToken::new();
    tokio::spawn(lq6_leasequery::metrics::serve(
        l,
        Arc::new(move || m.render()),
        shutdown.clone(),
    ));
    let wants = [
        "lq6_leasequery_queries_total{transport=\"tcp\",type=\"relay_id\",outcome=\"Success\"} 1",
        "lq6_leasequery_queries_total{transport=\"tcp\",type=\"other\",outcome=\"UnknownQueryType\"} 1",
        "lq6_leasequery_bindings_sent_total{transport=\"tcp\"} 25",
        "lq6_bulk_connections_open 1",
        "lq6_bulk_connections_accepted_total 1",
    ];
    // A query's counters move just after its DONE is queued, so on a loaded
    // machine the first scrape can precede them: scrape until they are there.
    let t = std::time::Instant::now();
    let body = loop {
        let mut http = tokio::net::TcpStream::connect(addr).await.unwrap();
        http.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        let mut body = String::new();
        http.read_to_string(&mut body).await.unwrap();
        assert!(body.starts_with("HTTP/1.1 200 OK"), "{body}");
        if wants.iter().all(|w| body.contains(w)) || t.elapsed() > Duration::from_secs(10) {
            break body;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    for want in wants {
        assert!(body.contains(want), "missing {want:?} in\n{body}");
    }
    shutdown.cancel();
}
