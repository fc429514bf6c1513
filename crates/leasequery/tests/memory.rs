//! Memory under hostile requestors. These tests measure the process's
//! resident memory, so they live in their own test binary and run one at a
//! time: RSS is process-wide, and a neighbour test filling a store would
//! show up in it.

mod support;

use lq6_proto::*;
use std::net::Ipv6Addr;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};
use support::*;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_pipelined_queries_are_read_only_as_slots_free() {
    let _serial = SERIAL.lock().await;
    let mut cfg = test_config();
    cfg.tcp.data_timeout_secs = 30;
    let bound = buffer_bound(&cfg);
    // 200 bindings per answer, so unread replies fill the kernel's socket buffers.
    let s = start(cfg, &[("lan1", 1, 200), ("lan1", 2, 3)]).await;
    let rss0 = rss_kib();
    let stream = TcpStream::connect(s.addr).await.unwrap();
    let (mut rd, mut wr) = stream.into_split();
    let sent = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let sent2 = sent.clone();
    let writer = tokio::spawn(async move {
        for xid in 1..=10_000u32 {
            let q = query(
                xid,
                QueryType::ByRelayId,
                Ipv6Addr::UNSPECIFIED,
                vec![DhcpOption::RelayId(relay_id(1))],
            );
            let mut buf = Vec::new();
            write_framed(&mut buf, |b| q.encode(b)).unwrap();
            if wr.write_all(&buf).await.is_err() {
                break;
            }
            sent2.fetch_add(1, Relaxed);
        }
    });
    // Not reading: the server must stop reading queries once its replies back up.
    // Wait until it has (no query read for a second), however slow the machine.
    let m = s.responder.metrics();
    let t = Instant::now();
    let mut read = m.queries_read.load(Relaxed);
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let now = m.queries_read.load(Relaxed);
        if now == read {
            break;
        }
        assert!(
            t.elapsed() < Duration::from_secs(60),
            "the server kept reading queries for 60 s ({now} read)"
        );
        read = now;
    }
    // The kernel's socket buffers may swallow the whole pipeline; what matters is
    // that the server read no more queries than it had slots for (§7.3). `read` is
    // loaded before `finished`, so the difference is bounded even while queries
    // still finish.
    let read = m.queries_read.load(Relaxed);
    let finished = m.queries(true, QueryType::ByRelayId, Status::Success);
    assert!(
        read < 10_000,
        "all 10,000 queries were read without the requestor reading"
    );
    assert!(
        read.saturating_sub(finished) <= 4,
        "read {read} queries but finished only {finished}: more than the 4 slots"
    );
    let stalled_at = read;
    let high = m.buffered_bytes_high_water.load(Relaxed);
    assert!(high <= bound, "buffered {high} > bound {bound}");
    let grew = rss_kib().saturating_sub(rss0);
    assert!(grew < 32 * 1024, "resident memory grew {grew} KiB");
    legit_is_served(&s).await;
    // Reading again lets the pipeline move: complete answers keep arriving.
    use futures::StreamExt;
    let mut framed =
        tokio_util::codec::FramedRead::new(&mut rd, lq6_proto::framing::LqFrameCodec::default());
    // Up to a few hundred complete answers may sit in the socket buffers, so keep
    // reading until the server has read a query past the stall (it must: every
    // answer read frees room for the ones in flight to finish).
    let mut done = 0u32;
    while done < 200 || m.queries_read.load(Relaxed) <= stalled_at {
        let f = tokio::time::timeout(Duration::from_secs(20), framed.next())
            .await
            .expect("the server resumed reading queries and answering")
            .unwrap()
            .unwrap();
        if let Message::Client(c) = Message::decode(&f).unwrap() {
            if c.msg_type == MessageType::LEASEQUERY_DONE {
                done += 1;
            }
        }
    }
    assert!(sent.load(Relaxed) > 0);
    assert!(m.buffered_bytes_high_water.load(Relaxed) <= bound);
    writer.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requestor_that_never_reads_a_huge_answer() {
    let _serial = SERIAL.lock().await;
    // 1,000,000 bindings in the release suite (CI); 100,000 in a debug build.
    let n: u32 = if cfg!(debug_assertions) {
        100_000
    } else {
        1_000_000
    };
    let mut cfg = test_config();
    cfg.tcp.data_timeout_secs = 3;
    let bound = buffer_bound(&cfg);
    let s = start(cfg, &[("lan1", 1, n), ("lan1", 2, 3)]).await;
    let rss0 = rss_kib();
    let mut stuck = Client::connect(s.addr).await;
    stuck
        .send(&query(
            1,
            QueryType::ByRelayId,
            Ipv6Addr::UNSPECIFIED,
            vec![DhcpOption::RelayId(relay_id(1))],
        ))
        .await;
    assert_eq!(
        stuck.recv().await.unwrap().msg_type,
        MessageType::LEASEQUERY_REPLY
    );
    let t = Instant::now();
    // Stop reading; meanwhile another requestor is served.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    legit_is_served(&s).await;
    let m = s.responder.metrics();
    let high = m.buffered_bytes_high_water.load(Relaxed);
    assert!(high <= bound, "buffered {high} octets > bound {bound}");
    let grew = rss_kib().saturating_sub(rss0);
    assert!(
        grew < 32 * 1024,
        "resident memory grew {grew} KiB while the requestor stalled"
    );
    // The blocked write hits BULK_LQ_DATA_TIMEOUT (3 s) and the connection closes.
    // Allow generous slack for a loaded machine: a writer that never times out
    // (or waits for the default 300 s) still fails.
    while m.timeouts_write.load(Relaxed) == 0 {
        assert!(
            t.elapsed() < Duration::from_secs(3 + 12),
            "blocked writer not closed after its timeout"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let t = Instant::now();
    while m.connections_open.load(Relaxed) > 0 && t.elapsed() < Duration::from_secs(10) {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(m.connections_open.load(Relaxed), 0);
}
