//! Hostile requestors (RFC 5460 §5.6, §7.3, §7.4, §8). Through each, a
//! legitimate requestor is still served, connections that must close do so
//! within BULK_LQ_DATA_TIMEOUT (1 s here), and buffering stays bounded.

mod support;

use lq6_proto::*;
use std::net::Ipv6Addr;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The most reply octets a connection may have queued: the write channel
/// plus one chunk per query slot and one in flight at the writer.
fn buffer_bound(cfg: &lq6_config::LeasequeryConfig) -> usize {
    use lq6_leasequery::tcp::CHUNK;
    // A chunk is at most CHUNK plus one frame; the channel holds
    // write_buffer_bytes / CHUNK of them, the writer one, each query slot one.
    let chunks =
        (cfg.tcp.write_buffer_bytes / CHUNK).max(1) + 1 + cfg.tcp.max_queries_per_connection;
    chunks * (CHUNK + 2048)
}

async fn legit_is_served(s: &Server) {
    let mut c = Client::connect(s.addr).await;
    c.send(&query(
        0xbeef,
        QueryType::ByRelayId,
        Ipv6Addr::UNSPECIFIED,
        vec![DhcpOption::RelayId(relay_id(2))],
    ))
    .await;
    let ans = c.answer().await;
    assert_eq!(ans.status(), Status::Success);
    assert_eq!(
        ans.client_data().len(),
        3,
        "the legitimate requestor got its bindings"
    );
}

/// Waits until the server closes `s`; returns how long that took.
async fn closed_after(mut s: TcpStream) -> Duration {
    let t = Instant::now();
    let mut b = [0u8; 4096];
    loop {
        match tokio::time::timeout(Duration::from_secs(10), s.read(&mut b)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return t.elapsed(),
            Ok(Ok(_)) => continue,
            Err(_) => panic!("connection not closed within 10 s"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_half_frame_and_bare_size_prefix_close_within_timeout() {
    let s = start(test_config(), &[("lan1", 2, 3)]).await;
    let silent = TcpStream::connect(s.addr).await.unwrap();
    let mut half = TcpStream::connect(s.addr).await.unwrap();
    half.write_all(&[0, 100, 14, 0, 0, 1, 0, 1]).await.unwrap();
    let mut bare = TcpStream::connect(s.addr).await.unwrap();
    bare.write_all(&[0x01, 0x00]).await.unwrap();
    legit_is_served(&s).await;
    for (name, c) in [
        ("silent", silent),
        ("half frame", half),
        ("size prefix only", bare),
    ] {
        let d = closed_after(c).await;
        assert!(
            d <= Duration::from_millis(2500),
            "{name} closed after {d:?}, timeout is 1 s"
        );
    }
    assert!(s.responder.metrics().timeouts_idle.load(Relaxed) >= 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_and_oversized_frames_close_at_once() {
    let mut cfg = test_config();
    cfg.tcp.max_frame = 4096;
    cfg.tcp.data_timeout_secs = 30;
    let s = start(cfg, &[("lan1", 2, 3)]).await;
    // A framed relay message (not allowed on TCP), random octets, and a frame above max_frame.
    let cases: Vec<Vec<u8>> = vec![
        {
            let mut v = vec![0, 34, 12];
            v.extend([0u8; 33]);
            v
        },
        vec![0, 6, 0xff, 0xfe, 0xfd, 0xfc, 0xfb, 0xfa],
        vec![0, 8, 14, 0, 0, 1, 0, 1, 0, 9], // option runs past the message
        vec![0x20, 0x00],
    ];
    for bytes in cases {
        let mut c = TcpStream::connect(s.addr).await.unwrap();
        c.write_all(&bytes).await.unwrap();
        let d = closed_after(c).await;
        assert!(
            d < Duration::from_secs(2),
            "garbage {bytes:02x?} kept open {d:?}"
        );
    }
    assert!(s.responder.metrics().protocol_errors.load(Relaxed) >= 4);
    legit_is_served(&s).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_cannot_lock_out_requestors() {
    let mut cfg = test_config();
    cfg.tcp.data_timeout_secs = 60;
    let s = start(cfg, &[("lan1", 2, 3)]).await;
    // Kea's failure: 10 silent connections from the same address.
    let mut silent = Vec::new();
    for _ in 0..10 {
        silent.push(TcpStream::connect(s.addr).await.unwrap());
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    legit_is_served(&s).await;
    // 1,000 connection attempts that send nothing.
    for _ in 0..1000 {
        let c = TcpStream::connect(s.addr).await.unwrap();
        silent.push(c);
        if silent.len() > 50 {
            silent.remove(0);
        }
    }
    legit_is_served(&s).await;
    let m = s.responder.metrics();
    assert!(
        m.connections_open.load(Relaxed) <= 10,
        "BULK_LQ_MAX_CONNS respected"
    );
    // Every admission beyond the cap made room by evicting an idle connection,
    // except where a peer had already closed (the test drops its oldest sockets,
    // sometimes before the server accepted them).
    let (ev, acc, open) = (
        m.connections_evicted_idle.load(Relaxed),
        m.connections_accepted.load(Relaxed),
        m.connections_open.load(Relaxed) as u64,
    );
    assert_eq!(acc, 1012, "every attempt was admitted: none locked out");
    assert!(ev >= 900, "idle eviction made the room ({ev} evictions)");
    assert!(ev + open <= acc);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn busy_connections_are_kept_and_the_newcomer_is_refused() {
    let mut cfg = test_config();
    cfg.tcp.max_connections = 2;
    cfg.tcp.data_timeout_secs = 30;
    let s = start(cfg, &[("lan1", 1, 30_000), ("lan1", 2, 3)]).await;
    // Two requestors with big answers that they do not read: both busy.
    let mut busy = Vec::new();
    for xid in 1..=2 {
        let mut c = Client::connect(s.addr).await;
        c.send(&query(
            xid,
            QueryType::ByRelayId,
            Ipv6Addr::UNSPECIFIED,
            vec![DhcpOption::RelayId(relay_id(1))],
        ))
        .await;
        assert_eq!(
            c.recv().await.unwrap().msg_type,
            MessageType::LEASEQUERY_REPLY
        );
        busy.push(c);
    }
    let newcomer = TcpStream::connect(s.addr).await.unwrap();
    let d = closed_after(newcomer).await;
    assert!(d < Duration::from_secs(2));
    assert!(
        s.responder
            .metrics()
            .connections_refused_limit
            .load(Relaxed)
            >= 1
    );
    // The busy ones still stream to the end.
    for c in &mut busy {
        let mut n = 1;
        loop {
            let m = c.recv().await.unwrap();
            if m.msg_type == MessageType::LEASEQUERY_DONE {
                break;
            }
            n += 1;
        }
        assert_eq!(n, 30_000);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_pipelined_queries_are_read_only_as_slots_free() {
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
    tokio::time::sleep(Duration::from_secs(3)).await;
    let m = s.responder.metrics();
    // The kernel's socket buffers may swallow the whole pipeline; what matters is
    // that the server read no more queries than it had slots for (§7.3).
    let read = m.queries_read.load(Relaxed);
    let finished = m.queries(true, QueryType::ByRelayId, Status::Success);
    assert!(
        read < 10_000,
        "all 10,000 queries were read without the requestor reading"
    );
    assert!(
        read - finished <= 4,
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
    let mut done = 0u32;
    while done < 200 {
        let f = tokio::time::timeout(Duration::from_secs(20), framed.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        if let Message::Client(c) = Message::decode(&f).unwrap() {
            if c.msg_type == MessageType::LEASEQUERY_DONE {
                done += 1;
            }
        }
    }
    assert!(
        m.queries_read.load(Relaxed) > stalled_at,
        "the server resumed reading queries"
    );
    assert!(sent.load(Relaxed) > 0);
    assert!(m.buffered_bytes_high_water.load(Relaxed) <= bound);
    writer.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requestor_that_never_reads_a_huge_answer() {
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
    while m.timeouts_write.load(Relaxed) == 0 {
        assert!(
            t.elapsed() < Duration::from_secs(8),
            "blocked writer not closed after its timeout"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut waited = Duration::ZERO;
    while m.connections_open.load(Relaxed) > 0 && waited < Duration::from_secs(5) {
        tokio::time::sleep(Duration::from_millis(50)).await;
        waited += Duration::from_millis(50);
    }
    assert_eq!(m.connections_open.load(Relaxed), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn non_permitted_peers_are_closed_without_data() {
    let mut cfg = test_config();
    cfg.allow = vec!["2001:db8::/32".parse().unwrap()];
    let s = start(cfg, &[("lan1", 2, 3)]).await;
    let mut c = TcpStream::connect(s.addr).await.unwrap();
    let q = query(
        1,
        QueryType::ByRelayId,
        Ipv6Addr::UNSPECIFIED,
        vec![DhcpOption::RelayId(relay_id(2))],
    );
    let mut buf = Vec::new();
    write_framed(&mut buf, |b| q.encode(b)).unwrap();
    let _ = c.write_all(&buf).await;
    let mut got = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), c.read_to_end(&mut got))
        .await
        .expect("closed");
    assert!(
        got.is_empty(),
        "a non-permitted peer saw {} octets",
        got.len()
    );
    assert_eq!(
        s.responder
            .metrics()
            .connections_refused_not_allowed
            .load(Relaxed),
        1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_requestor_connection_limit() {
    let mut cfg = test_config();
    cfg.tcp.data_timeout_secs = 30;
    cfg.requestors.push(lq6_config::RequestorPolicy {
        prefix: "::1/128".parse().unwrap(),
        query_types: None,
        max_connections: Some(2),
        max_queries: Some(1),
    });
    let s = start(cfg, &[("lan1", 1, 30_000), ("lan1", 2, 3)]).await;
    // Two busy connections (big answers, not read) use up this requestor's share.
    let mut busy = Vec::new();
    for xid in 1..=2 {
        let mut c = Client::connect(s.addr).await;
        c.send(&query(
            xid,
            QueryType::ByRelayId,
            Ipv6Addr::UNSPECIFIED,
            vec![DhcpOption::RelayId(relay_id(1))],
        ))
        .await;
        assert_eq!(
            c.recv().await.unwrap().msg_type,
            MessageType::LEASEQUERY_REPLY
        );
        busy.push(c);
    }
    let third = TcpStream::connect(s.addr).await.unwrap();
    assert!(
        closed_after(third).await < Duration::from_secs(2),
        "a third connection from the same requestor is refused"
    );
    assert_eq!(
        s.responder
            .metrics()
            .connections_refused_limit
            .load(Relaxed),
        1
    );
    assert_eq!(s.responder.metrics().connections_open.load(Relaxed), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_closed_requestor_still_gets_its_whole_answer() {
    let s = start(test_config(), &[("lan1", 1, 5000)]).await;
    let mut c = TcpStream::connect(s.addr).await.unwrap();
    let mut buf = Vec::new();
    for xid in [1, 2] {
        let q = query(
            xid,
            QueryType::ByRelayId,
            Ipv6Addr::UNSPECIFIED,
            vec![DhcpOption::RelayId(relay_id(1))],
        );
        write_framed(&mut buf, |b| q.encode(b)).unwrap();
    }
    c.write_all(&buf).await.unwrap();
    // RFC 5460 §5.6: when the peer closes, finish its outstanding queries first.
    c.shutdown().await.unwrap();
    let mut all = Vec::new();
    tokio::time::timeout(Duration::from_secs(20), c.read_to_end(&mut all))
        .await
        .unwrap()
        .unwrap();
    let mut codec = lq6_proto::framing::LqFrameCodec::default();
    let mut bytes = bytes::BytesMut::from(&all[..]);
    let (mut data, mut done) = (0, 0);
    use tokio_util::codec::Decoder;
    while let Some(f) = codec.decode(&mut bytes).unwrap() {
        match Message::decode(&f).unwrap().msg_type() {
            MessageType::LEASEQUERY_REPLY | MessageType::LEASEQUERY_DATA => data += 1,
            MessageType::LEASEQUERY_DONE => done += 1,
            t => panic!("{t}"),
        }
    }
    assert_eq!((data, done), (10_000, 2));
}
