//! The requestor against scripted, sometimes hostile, fake servers.

mod common;

use common::*;
use lq6_proto::{code, DhcpOption, Duid, MessageType, OptionsExt, QueryType, Status};
use lq6_requestor::{
    reconcile, BulkConnection, ConnectPolicy, Error, Query, RequestorConfig, Retransmit,
    UdpRequestor,
};
use std::net::{Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::Mutex;

fn cfg() -> RequestorConfig {
    RequestorConfig {
        duid: Duid::ll(1, &[2, 0, 0, 0, 0, 0xee]),
        bulk_timeout: Duration::from_secs(5),
        connect: ConnectPolicy {
            attempts: 2,
            retry_delay: Duration::from_millis(20),
            connect_timeout: Duration::from_secs(2),
        },
        retransmit: Retransmit {
            irt: Duration::from_millis(50),
            mrt: Duration::from_millis(200),
            mrc: 5,
            mrd: Duration::ZERO,
        },
        ..RequestorConfig::default()
    }
}

/// Guard against hangs: every test finishes well within this.
const LIMIT: Duration = Duration::from_secs(20);

/// Slack on top of a configured timeout before a test calls it late: a loaded CI
/// machine can stall a test for a while, and what these bounds catch (a timeout
/// that never fires, or waits for some other, longer setting) is far beyond it.
const SLACK: Duration = Duration::from_secs(5);

async fn guarded<T>(f: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(LIMIT, f).await.expect("test hung")
}

#[tokio::test]
async fn bulk_happy_path_and_the_query_on_the_wire() {
    guarded(async {
        let seen = Arc::new(Mutex::new(None));
        let seen2 = seen.clone();
        let (addr, srv) = tcp_fake(move |mut s| async move {
            let (q, _) = recv(&mut s).await.unwrap();
            let me = requestor_duid(&q);
            send(
                &mut s,
                &reply(
                    q.xid,
                    &me,
                    vec![client_data(1, 5), DhcpOption::LqBaseTime(700_000_000)],
                ),
            )
            .await;
            for n in 2..=4 {
                send(&mut s, &data(q.xid, n)).await;
            }
            send(&mut s, &done(q.xid)).await;
            *seen2.lock().await = Some(q);
            // Keep the connection open: completion must come from DONE.
            let mut b = [0u8; 1];
            let _ = s.read(&mut b).await;
        })
        .await;
        let link: Ipv6Addr = "2001:db8:1::1".parse().unwrap();
        let rid: Duid = "en:2495:0a0b0c0d".parse().unwrap();
        let q = Query::by_relay_id(rid.clone())
            .with_link(link)
            .with_relay_data(true)
            .with_base_time(true)
            .with_start_time(Some(1000))
            .with_end_time(Some(2000));
        let conn = BulkConnection::connect(addr, cfg()).await.unwrap();
        let got = conn.query(&q).await.unwrap().collect_all().await.unwrap();
        assert_eq!(got.len(), 4);
        assert_eq!(got[0].client_id, Some(client_duid(1)));
        assert_eq!(got[0].base_time, Some(700_000_000));
        assert_eq!(got[0].clt_time, Some(5));
        assert_eq!(got[0].link_address, Some(link));
        assert_eq!(got[3].client_id, Some(client_duid(4)));
        assert_eq!(
            got[3].addresses[0].address,
            "2001:db8:1::4".parse::<Ipv6Addr>().unwrap()
        );
        assert_eq!(got[3].addresses[0].valid, 7200);
        assert_eq!(got[3].prefixes[0].prefix_len, 56);
        assert_eq!(got[3].server, addr);

        let q = seen.lock().await.take().unwrap();
        assert_eq!(q.msg_type, MessageType::LEASEQUERY);
        assert_eq!(requestor_duid(&q), cfg().duid);
        let lq = lq_query(&q);
        assert_eq!(lq.query_type, QueryType::ByRelayId);
        assert_eq!(lq.link_address, link);
        let qo: &[DhcpOption] = &lq.options;
        assert_eq!(
            OptionsExt::get(qo, code::RELAY_ID),
            Some(&DhcpOption::RelayId(rid))
        );
        assert_eq!(
            qo.oro(),
            Some(&[code::LQ_RELAY_DATA, code::LQ_BASE_TIME][..])
        );
        // START/END and an ORO naming 100 at top level (PROTOCOL.md §5).
        assert_eq!(
            OptionsExt::get(&q.options[..], code::LQ_START_TIME),
            Some(&DhcpOption::LqStartTime(1000))
        );
        assert_eq!(
            OptionsExt::get(&q.options[..], code::LQ_END_TIME),
            Some(&DhcpOption::LqEndTime(2000))
        );
        assert_eq!(q.options.oro(), Some(&[code::LQ_BASE_TIME][..]));
        drop(conn);
        srv.await.unwrap();
    })
    .await
}

#[tokio::test]
async fn each_query_type_is_encoded() {
    guarded(async {
        let (addr, srv) = tcp_fake(|mut s| async move {
            let mut types = Vec::new();
            while let Some((q, _)) = recv(&mut s).await {
                let me = requestor_duid(&q);
                let lq = lq_query(&q).clone();
                let o: &[DhcpOption] = &lq.options;
                match lq.query_type {
                    QueryType::ByAddress => assert!(matches!(OptionsExt::get(o, code::IAADDR), Some(DhcpOption::IaAddr(a)) if a.valid == 0)),
                    QueryType::ByClientId => assert!(OptionsExt::get(o, code::CLIENTID).is_some()),
                    QueryType::ByRemoteId => assert!(matches!(OptionsExt::get(o, code::REMOTE_ID), Some(DhcpOption::RemoteId(r)) if r.enterprise == 9 && r.id == [10, 11, 12])),
                    QueryType::ByLinkAddress => assert_eq!(lq.link_address, "2001:db8:1::1".parse::<Ipv6Addr>().unwrap()),
                    _ => {}
                }
                types.push(lq.query_type);
                send(&mut s, &reply(q.xid, &me, vec![])).await;
            }
            assert_eq!(types.len(), 5);
        })
        .await;
        let conn = BulkConnection::connect(addr, cfg()).await.unwrap();
        for q in [
            Query::by_address("2001:db8:1::5".parse().unwrap()),
            Query::by_client_id(client_duid(1)),
            Query::by_relay_id(client_duid(2)),
            Query::by_link("2001:db8:1::1".parse().unwrap()),
            Query::by_remote_id(9, vec![10, 11, 12]),
        ] {
            let v = conn.query(&q).await.unwrap().collect_all().await.unwrap();
            assert!(v.is_empty());
        }
        drop(conn);
        srv.await.unwrap();
    })
    .await
}

#[tokio::test]
async fn empty_reply_completes_without_done() {
    guarded(async {
        let (addr, _srv) = tcp_fake(|mut s| async move {
            let (q, _) = recv(&mut s).await.unwrap();
            send(&mut s, &reply(q.xid, &requestor_duid(&q), vec![])).await;
            tokio::time::sleep(Duration::from_secs(30)).await;
        })
        .await;
        let t = Instant::now();
        let conn = BulkConnection::connect(addr, cfg()).await.unwrap();
        let v = conn
            .query(&Query::by_link("2001:db8::1".parse().unwrap()))
            .await
            .unwrap();
        assert!(v.collect_all().await.unwrap().is_empty());
        // Complete on the REPLY: waiting for a DONE would end in the 5 s
        // bulk_timeout (an error), waiting for the close in the guard.
        let el = t.elapsed();
        assert!(el < cfg().bulk_timeout, "{el:?}");
    })
    .await
}

#[tokio::test]
async fn data_before_reply_is_a_protocol_error() {
    guarded(async {
        let (addr, _srv) = tcp_fake(|mut s| async move {
            let (q, _) = recv(&mut s).await.unwrap();
            send(&mut s, &data(q.xid, 1)).await;
            send(
                &mut s,
                &reply(q.xid, &requestor_duid(&q), vec![client_data(2, 1)]),
            )
            .await;
            send(&mut s, &done(q.xid)).await;
            tokio::time::sleep(Duration::from_secs(30)).await;
        })
        .await;
        let conn = BulkConnection::connect(addr, cfg()).await.unwrap();
        let r = conn
            .query(&Query::by_link("2001:db8::1".parse().unwrap()))
            .await
            .unwrap()
            .collect_all()
            .await;
        match r {
            Err(Error::Protocol { reason, .. }) => {
                assert!(reason.contains("before LEASEQUERY-REPLY"), "{reason}")
            }
            other => panic!("{other:?}"),
        }
    })
    .await
}

#[tokio::test]
async fn done_with_unknown_xid_closes_the_connection() {
    guarded(async {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let (addr, _srv) = tcp_fake(|mut s| async move {
            let (q, _) = recv(&mut s).await.unwrap();
            send(
                &mut s,
                &reply(q.xid, &requestor_duid(&q), vec![client_data(1, 1)]),
            )
            .await;
            send(&mut s, &done(q.xid ^ 0x55)).await;
            // The requestor MUST close the connection (RFC 5460 §6.3).
            let mut b = [0u8; 16];
            let closed = tokio::time::timeout(Duration::from_secs(5), s.read(&mut b)).await;
            let _ = tx.send(matches!(closed, Ok(Ok(0)) | Ok(Err(_))));
        })
        .await;
        let conn = BulkConnection::connect(addr, cfg()).await.unwrap();
        let mut st = conn
            .query(&Query::by_link("2001:db8::1".parse().unwrap()))
            .await
            .unwrap();
        assert!(st.next().await.unwrap().is_ok());
        match st.next().await {
            Some(Err(Error::Protocol { reason, .. })) => {
                assert!(reason.contains("matches no outstanding"), "{reason}")
            }
            other => panic!("{other:?}"),
        }
        assert!(st.next().await.is_none());
        assert!(rx.await.unwrap(), "connection not closed");
        // The handle is now useless.
        let again = conn
            .query(&Query::by_link("2001:db8::1".parse().unwrap()))
            .await;
        assert!(again.is_err() || again.unwrap().collect_all().await.is_err());
    })
    .await
}

#[tokio::test]
async fn stalled_server_times_out() {
    guarded(async {
        let (addr, _srv) = tcp_fake(|mut s| async move {
            let (q, _) = recv(&mut s).await.unwrap();
            send(
                &mut s,
                &reply(q.xid, &requestor_duid(&q), vec![client_data(1, 1)]),
            )
            .await;
            send(&mut s, &data(q.xid, 2)).await;
            tokio::time::sleep(Duration::from_secs(60)).await;
        })
        .await;
        let mut c = cfg();
        c.bulk_timeout = Duration::from_millis(300);
        let t = Instant::now();
        let conn = BulkConnection::connect(addr, c).await.unwrap();
        let mut st = conn
            .query(&Query::by_link("2001:db8::1".parse().unwrap()))
            .await
            .unwrap();
        assert!(st.next().await.unwrap().is_ok());
        assert!(st.next().await.unwrap().is_ok());
        match st.next().await {
            Some(Err(Error::Timeout { after, .. })) => {
                assert_eq!(after, Duration::from_millis(300))
            }
            other => panic!("{other:?}"),
        }
        let el = t.elapsed();
        assert!(
            el >= Duration::from_millis(300) && el < Duration::from_millis(300) + SLACK,
            "{el:?}"
        );
    })
    .await
}

#[tokio::test]
async fn silent_server_times_out_before_any_reply() {
    guarded(async {
        let (addr, _srv) = tcp_fake(|mut s| async move {
            let _ = recv(&mut s).await;
            tokio::time::sleep(Duration::from_secs(60)).await;
        })
        .await;
        let mut c = cfg();
        c.bulk_timeout = Duration::from_millis(200);
        let conn = BulkConnection::connect(addr, c).await.unwrap();
        let r = conn
            .query(&Query::by_link("2001:db8::1".parse().unwrap()))
            .await
            .unwrap()
            .collect_all()
            .await;
        assert!(matches!(r, Err(Error::Timeout { .. })), "{r:?}");
    })
    .await
}

#[tokio::test]
async fn frame_cut_mid_message_then_close() {
    guarded(async {
        let (addr, _srv) = tcp_fake(|mut s| async move {
            let (q, _) = recv(&mut s).await.unwrap();
            send(
                &mut s,
                &reply(q.xid, &requestor_duid(&q), vec![client_data(1, 1)]),
            )
            .await;
            let f = framed(&data(q.xid, 2));
            s.write_all(&f[..f.len() / 2]).await.unwrap();
            s.shutdown().await.unwrap();
        })
        .await;
        let conn = BulkConnection::connect(addr, cfg()).await.unwrap();
        let mut st = conn
            .query(&Query::by_link("2001:db8::1".parse().unwrap()))
            .await
            .unwrap();
        assert!(st.next().await.unwrap().is_ok());
        match st.next().await {
            Some(Err(Error::Closed { reason, .. })) => {
                assert!(reason.contains("mid-frame"), "{reason}")
            }
            other => panic!("{other:?}"),
        }
    })
    .await
}

#[tokio::test]
async fn frame_cut_mid_message_then_stall_times_out() {
    guarded(async {
        let (addr, _srv) = tcp_fake(|mut s| async move {
            let (q, _) = recv(&mut s).await.unwrap();
            let f = framed(&reply(q.xid, &requestor_duid(&q), vec![client_data(1, 1)]));
            s.write_all(&f[..10]).await.unwrap();
            tokio::time::sleep(Duration::from_secs(60)).await;
        })
        .await;
        let mut c = cfg();
        c.bulk_timeout = Duration::from_millis(200);
        let conn = BulkConnection::connect(addr, c).await.unwrap();
        let r = conn
            .query(&Query::by_link("2001:db8::1".parse().unwrap()))
            .await
            .unwrap()
            .collect_all()
            .await;
        assert!(matches!(r, Err(Error::Timeout { .. })), "{r:?}");
    })
    .await
}

#[tokio::test]
async fn connection_closed_before_done() {
    guarded(async {
        let (addr, _srv) = tcp_fake(|mut s| async move {
            let (q, _) = recv(&mut s).await.unwrap();
            send(
                &mut s,
                &reply(q.xid, &requestor_duid(&q), vec![client_data(1, 1)]),
            )
            .await;
            send(&mut s, &data(q.xid, 2)).await;
        })
        .await;
        let conn = BulkConnection::connect(addr, cfg()).await.unwrap();
        let mut st = conn
            .query(&Query::by_link("2001:db8::1".parse().unwrap()))
            .await
            .unwrap();
        assert!(st.next().await.unwrap().is_ok());
        assert!(st.next().await.unwrap().is_ok());
        assert!(matches!(st.next().await, Some(Err(Error::Closed { .. }))));
    })
    .await
}

#[tokio::test]
async fn interleaved_replies_are_demultiplexed_by_xid() {
    guarded(async {
        let (addr, srv) = tcp_fake(|mut s| async move {
            let (q1, _) = recv(&mut s).await.unwrap();
            let (q2, _) = recv(&mut s).await.unwrap();
            let (q3, _) = recv(&mut s).await.unwrap();
            assert!(q1.xid != q2.xid && q2.xid != q3.xid && q1.xid != q3.xid);
            let me = requestor_duid(&q1);
            // The RFC 5460 §6.5.1 example, plus an error for the third.
            send(&mut s, &reply(q2.xid, &me, vec![client_data(20, 1)])).await;
            send(&mut s, &data(q2.xid, 21)).await;
            send(&mut s, &reply(q1.xid, &me, vec![client_data(10, 1)])).await;
            send(
                &mut s,
                &reply(
                    q3.xid,
                    &me,
                    vec![status(Status::NotConfigured, "no such link")],
                ),
            )
            .await;
            send(&mut s, &data(q2.xid, 22)).await;
            send(&mut s, &data(q1.xid, 11)).await;
            // A DATA without CLIENT_DATA: discarded.
            send(&mut s, &msg(MessageType::LEASEQUERY_DATA, q1.xid, vec![])).await;
            send(&mut s, &done(q1.xid)).await;
            send(&mut s, &data(q2.xid, 23)).await;
            send(&mut s, &done(q2.xid)).await;
            let mut b = [0u8; 1];
            let _ = s.read(&mut b).await;
        })
        .await;
        let conn = BulkConnection::connect(addr, cfg()).await.unwrap();
        let s1 = conn
            .query(&Query::by_link("2001:db8:1::1".parse().unwrap()))
            .await
            .unwrap();
        let s2 = conn
            .query(&Query::by_link("2001:db8:2::1".parse().unwrap()))
            .await
            .unwrap();
        let s3 = conn
            .query(&Query::by_link("2001:db8:3::1".parse().unwrap()))
            .await
            .unwrap();
        let (r1, r2, r3) = tokio::join!(s1.collect_all(), s2.collect_all(), s3.collect_all());
        let ids = |v: Vec<lq6_requestor::Binding>| {
            v.into_iter()
                .map(|b| b.client_id.unwrap())
                .collect::<Vec<_>>()
        };
        assert_eq!(ids(r1.unwrap()), vec![client_duid(10), client_duid(11)]);
        assert_eq!(
            ids(r2.unwrap()),
            vec![
                client_duid(20),
                client_duid(21),
                client_duid(22),
                client_duid(23)
            ]
        );
        match r3 {
            Err(Error::Status {
                status, message, ..
            }) => {
                assert_eq!(status, Status::NotConfigured);
                assert_eq!(message, "no such link");
            }
            other => panic!("{other:?}"),
        }
        drop(conn);
        srv.await.unwrap();
    })
    .await
}

#[tokio::test]
async fn error_status_in_done_after_bindings() {
    guarded(async {
        let (addr, _srv) = tcp_fake(|mut s| async move {
            let (q, _) = recv(&mut s).await.unwrap();
            send(
                &mut s,
                &reply(q.xid, &requestor_duid(&q), vec![client_data(1, 1)]),
            )
            .await;
            send(&mut s, &data(q.xid, 2)).await;
            send(
                &mut s,
                &msg(
                    MessageType::LEASEQUERY_DONE,
                    q.xid,
                    vec![status(Status::QueryTerminated, "shutting down")],
                ),
            )
            .await;
        })
        .await;
        let conn = BulkConnection::connect(addr, cfg()).await.unwrap();
        let mut st = conn
            .query(&Query::by_link("2001:db8::1".parse().unwrap()))
            .await
            .unwrap();
        assert!(st.next().await.unwrap().is_ok());
        assert!(st.next().await.unwrap().is_ok());
        match st.next().await {
            Some(Err(
                e @ Error::Status {
                    status: Status::QueryTerminated,
                    ..
                },
            )) => {
                assert!(
                    e.to_string()
                        .contains("QueryTerminated (11): shutting down"),
                    "{e}"
                );
            }
            other => panic!("{other:?}"),
        }
        assert!(st.next().await.is_none());
    })
    .await
}

#[tokio::test]
async fn error_status_in_reply() {
    guarded(async {
        let (addr, _srv) = tcp_fake(|mut s| async move {
            let (q, _) = recv(&mut s).await.unwrap();
            send(
                &mut s,
                &reply(
                    q.xid,
                    &requestor_duid(&q),
                    vec![status(Status::NotAllowed, "")],
                ),
            )
            .await;
            tokio::time::sleep(Duration::from_secs(30)).await;
        })
        .await;
        let conn = BulkConnection::connect(addr, cfg()).await.unwrap();
        let r = conn
            .query(&Query::by_link("2001:db8::1".parse().unwrap()))
            .await
            .unwrap()
            .collect_all()
            .await;
        assert!(
            matches!(
                r,
                Err(Error::Status {
                    status: Status::NotAllowed,
                    code: 10,
                    ..
                })
            ),
            "{r:?}"
        );
    })
    .await
}

#[tokio::test]
async fn wrong_message_type_on_bulk_connection() {
    guarded(async {
        let (addr, _srv) = tcp_fake(|mut s| async move {
            let (q, _) = recv(&mut s).await.unwrap();
            send(&mut s, &msg(MessageType::REPLY, q.xid, vec![])).await;
            tokio::time::sleep(Duration::from_secs(30)).await;
        })
        .await;
        let conn = BulkConnection::connect(addr, cfg()).await.unwrap();
        let r = conn
            .query(&Query::by_link("2001:db8::1".parse().unwrap()))
            .await
            .unwrap()
            .collect_all()
            .await;
        assert!(matches!(r, Err(Error::Protocol { .. })), "{r:?}");
    })
    .await
}

#[tokio::test]
async fn connect_retries_then_fails() {
    guarded(async {
        // A port with nothing listening.
        let l = std::net::TcpListener::bind("[::1]:0").unwrap();
        let addr = l.local_addr().unwrap();
        drop(l);
        let t = Instant::now();
        match BulkConnection::connect(addr, cfg()).await {
            Err(Error::Connect { attempts, .. }) => assert_eq!(attempts, 2),
            Err(e) => panic!("{e}"),
            Ok(_) => panic!("connected to nothing"),
        }
        assert!(t.elapsed() >= Duration::from_millis(20));
    })
    .await
}

#[tokio::test]
async fn slow_consumer_applies_back_pressure() {
    guarded(async {
        // The server writes until its writes block; with a bounded pipeline the
        // number of frames it manages to write while the consumer sleeps stays
        // far below the total.
        const TOTAL: u32 = 200_000;
        let (wtx, wrx) = tokio::sync::oneshot::channel();
        let (addr, _srv) = tcp_fake(move |mut s| async move {
            let (q, _) = recv(&mut s).await.unwrap();
            send(
                &mut s,
                &reply(q.xid, &requestor_duid(&q), vec![client_data(1, 1)]),
            )
            .await;
            let one = framed(&data(q.xid, 2));
            let mut written = 0u32;
            let start = Instant::now();
            let mut reported = Some(wtx);
            let mut off = 0;
            while written < TOTAL {
                // Never cancel a write half-way: wait for writability, then try.
                if tokio::time::timeout(Duration::from_millis(300), s.writable())
                    .await
                    .is_err()
                {
                    if let Some(t) = reported.take() {
                        let _ = t.send((written, start.elapsed()));
                    }
                    continue;
                }
                match s.try_write(&one[off..]) {
                    Ok(n) => {
                        off += n;
                        if off == one.len() {
                            off = 0;
                            written += 1;
                        }
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                    Err(e) => panic!("{e}"),
                }
            }
            if let Some(t) = reported.take() {
                let _ = t.send((written, start.elapsed()));
            }
            send(&mut s, &done(q.xid)).await;
        })
        .await;
        let conn = BulkConnection::connect(addr, cfg()).await.unwrap();
        let mut st = conn
            .query(&Query::by_link("2001:db8::1".parse().unwrap()))
            .await
            .unwrap();
        assert!(st.next().await.unwrap().is_ok());
        let (written, _) = wrx.await.unwrap();
        assert!(
            written < TOTAL / 2,
            "server wrote {written} frames to a consumer that reads nothing"
        );
        let mut n = 1;
        while let Some(b) = st.next().await {
            b.unwrap();
            n += 1;
        }
        assert_eq!(n, TOTAL + 1);
    })
    .await
}

// ---------------------------------------------------------------- UDP

#[tokio::test]
async fn udp_retransmits_with_the_same_xid_until_answered() {
    guarded(async {
        let (sock, addr) = udp_fake().await;
        let srv = tokio::spawn(async move {
            let mut seen = Vec::new();
            let mut times = Vec::new();
            loop {
                let (q, from) = udp_recv(&sock).await;
                times.push(Instant::now());
                seen.push(q.clone());
                if seen.len() == 3 {
                    let me = requestor_duid(&q);
                    udp_send(&sock, from, &reply(q.xid, &me, vec![client_data(7, 3)])).await;
                    return (seen, times);
                }
            }
        });
        let r = UdpRequestor::new(cfg());
        let got = r
            .query(addr, &Query::by_address("2001:db8:1::7".parse().unwrap()))
            .await
            .unwrap();
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].client_id, Some(client_duid(7)));
        let (seen, times) = srv.await.unwrap();
        assert_eq!(seen.len(), 3);
        assert!(seen.iter().all(|m| m.xid == seen[0].xid));
        assert!(seen.iter().all(|m| m.options == seen[0].options));
        assert_eq!(requestor_duid(&seen[0]), cfg().duid);
        // RT1 ≈ 50 ms ± 10 % (≥ 45 ms), RT2 ≈ 2·RT1 ± 10 % (≥ 85.5 ms). The gaps
        // are measured where the datagrams are received, so an earlier datagram
        // picked up late (the thread preempted on a loaded machine) shortens one
        // by that delay: allow 5 ms of it. An immediate retransmission, or one
        // without the doubling, still fails.
        let d1 = times[1] - times[0];
        let d2 = times[2] - times[1];
        assert!(d1 >= Duration::from_millis(40), "{d1:?}");
        assert!(d2 >= Duration::from_millis(80), "{d2:?}");
    })
    .await
}

#[tokio::test]
async fn udp_gives_up_after_mrc_transmissions() {
    guarded(async {
        let (sock, addr) = udp_fake().await;
        let count = Arc::new(std::sync::atomic::AtomicU32::new(0));
        let c2 = count.clone();
        let xids = Arc::new(std::sync::Mutex::new(Vec::new()));
        let x2 = xids.clone();
        tokio::spawn(async move {
            loop {
                let (q, _) = udp_recv(&sock).await;
                c2.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                x2.lock().unwrap().push(q.xid);
            }
        });
        let mut c = cfg();
        c.retransmit.mrc = 4;
        let t = Instant::now();
        let r = UdpRequestor::new(c)
            .query(addr, &Query::by_address("2001:db8:1::7".parse().unwrap()))
            .await;
        assert!(matches!(r, Err(Error::Timeout { .. })), "{r:?}");
        // 50 + 100 + 200 + 200 (capped at MRT) ms, ± 10 %: at most 610 ms.
        let el = t.elapsed();
        assert!(
            el >= Duration::from_millis(450) && el < Duration::from_millis(610) + SLACK,
            "{el:?}"
        );
        // The fake server counts each datagram when its task gets to it, which on
        // a loaded machine can be after the requestor gave up: wait for the 4th
        // (the requestor has returned, so no 5th can come later).
        let t = Instant::now();
        while count.load(std::sync::atomic::Ordering::SeqCst) < 4 && t.elapsed() < SLACK {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(count.load(std::sync::atomic::Ordering::SeqCst), 4);
        let x = xids.lock().unwrap();
        assert!(x.iter().all(|v| *v == x[0]));
    })
    .await
}

#[tokio::test]
async fn udp_mrd_bounds_the_exchange() {
    guarded(async {
        let (_sock, addr) = udp_fake().await;
        let mut c = cfg();
        c.retransmit.mrc = 0;
        c.retransmit.mrd = Duration::from_millis(300);
        let t = Instant::now();
        let r = UdpRequestor::new(c)
            .query(addr, &Query::by_address("2001:db8:1::7".parse().unwrap()))
            .await;
        assert!(matches!(r, Err(Error::Timeout { .. })), "{r:?}");
        let el = t.elapsed();
        assert!(el < Duration::from_millis(300) + SLACK, "{el:?}");
    })
    .await
}

#[tokio::test]
async fn udp_discards_invalid_replies() {
    guarded(async {
        let (sock, addr) = udp_fake().await;
        tokio::spawn(async move {
            let (q, from) = udp_recv(&sock).await;
            let me = requestor_duid(&q);
            // Wrong xid.
            udp_send(&sock, from, &reply(q.xid ^ 1, &me, vec![client_data(1, 1)])).await;
            // Someone else's CLIENTID.
            udp_send(
                &sock,
                from,
                &reply(q.xid, &client_duid(99), vec![client_data(2, 1)]),
            )
            .await;
            // No CLIENTID.
            udp_send(
                &sock,
                from,
                &msg(
                    MessageType::LEASEQUERY_REPLY,
                    q.xid,
                    vec![DhcpOption::ServerId(server_duid()), client_data(3, 1)],
                ),
            )
            .await;
            // No SERVERID.
            udp_send(
                &sock,
                from,
                &msg(
                    MessageType::LEASEQUERY_REPLY,
                    q.xid,
                    vec![DhcpOption::ClientId(me.clone()), client_data(4, 1)],
                ),
            )
            .await;
            // Not a LEASEQUERY-REPLY.
            udp_send(
                &sock,
                from,
                &msg(
                    MessageType::REPLY,
                    q.xid,
                    vec![
                        DhcpOption::ServerId(server_duid()),
                        DhcpOption::ClientId(me.clone()),
                        client_data(5, 1),
                    ],
                ),
            )
            .await;
            // Garbage.
            sock.send_to(&[15, 0], from).await.unwrap();
            // The valid one.
            udp_send(&sock, from, &reply(q.xid, &me, vec![client_data(6, 1)])).await;
        });
        let got = UdpRequestor::new(cfg())
            .query(addr, &Query::by_address("2001:db8:1::6".parse().unwrap()))
            .await
            .unwrap();
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].client_id, Some(client_duid(6)));
    })
    .await
}

#[tokio::test]
async fn udp_only_invalid_replies_time_out() {
    guarded(async {
        let (sock, addr) = udp_fake().await;
        tokio::spawn(async move {
            loop {
                let (q, from) = udp_recv(&sock).await;
                udp_send(
                    &sock,
                    from,
                    &reply(q.xid, &client_duid(99), vec![client_data(2, 1)]),
                )
                .await;
            }
        });
        let mut c = cfg();
        c.retransmit.mrc = 2;
        let r = UdpRequestor::new(c)
            .query(addr, &Query::by_address("2001:db8:1::6".parse().unwrap()))
            .await;
        assert!(matches!(r, Err(Error::Timeout { .. })), "{r:?}");
    })
    .await
}

#[tokio::test]
async fn udp_client_link_requeries_once_per_link() {
    guarded(async {
        let (sock, addr) = udp_fake().await;
        let l1: Ipv6Addr = "2001:db8:1::1".parse().unwrap();
        let l2: Ipv6Addr = "2001:db8:2::1".parse().unwrap();
        let srv = tokio::spawn(async move {
            let mut seen = Vec::new();
            for _ in 0..3 {
                let (q, from) = udp_recv(&sock).await;
                let me = requestor_duid(&q);
                let lq = lq_query(&q).clone();
                seen.push(lq.link_address);
                let opts = if lq.link_address.is_unspecified() {
                    vec![DhcpOption::LqClientLink(vec![l1, l2])]
                } else if lq.link_address == l1 {
                    vec![client_data(1, 5)]
                } else {
                    vec![client_data(2, 6)]
                };
                assert_eq!(lq.query_type, QueryType::ByClientId);
                udp_send(&sock, from, &reply(q.xid, &me, opts)).await;
            }
            seen
        });
        let got = UdpRequestor::new(cfg())
            .query(addr, &Query::by_client_id(client_duid(1)))
            .await
            .unwrap();
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].link_address, Some(l1));
        assert_eq!(got[1].link_address, Some(l2));
        assert_eq!(srv.await.unwrap(), vec![Ipv6Addr::UNSPECIFIED, l1, l2]);
    })
    .await
}

#[tokio::test]
async fn udp_status_and_empty_and_no_clt_time() {
    guarded(async {
        let (sock, addr) = udp_fake().await;
        tokio::spawn(async move {
            let mut i = 0;
            loop {
                let (q, from) = udp_recv(&sock).await;
                let me = requestor_duid(&q);
                let opts = match i {
                    0 => vec![status(Status::NotAllowed, "go away")],
                    1 => vec![],
                    _ => vec![DhcpOption::ClientData(vec![DhcpOption::ClientId(
                        client_duid(1),
                    )])],
                };
                i += 1;
                udp_send(&sock, from, &reply(q.xid, &me, opts)).await;
            }
        });
        let r = UdpRequestor::new(cfg());
        let q = Query::by_address("2001:db8:1::6".parse().unwrap());
        assert!(matches!(
            r.query(addr, &q).await,
            Err(Error::Status {
                status: Status::NotAllowed,
                ..
            })
        ));
        assert!(r.query(addr, &q).await.unwrap().is_empty());
        // RFC 5007 §4.3.3: CLIENT_DATA without CLT_TIME is discarded.
        assert!(r.query(addr, &q).await.unwrap().is_empty());
    })
    .await
}

// ---------------------------------------------------------------- several servers

#[tokio::test]
async fn several_servers_are_reconciled_by_clt_time() {
    guarded(async {
        let mut servers: Vec<SocketAddr> = Vec::new();
        // Server A saw client 1 10 s ago; server B saw it 500 s ago, and
        // also reports a prefix only it knows.
        for (clt, extra) in [(10u32, false), (500u32, true)] {
            let (sock, addr) = udp_fake().await;
            servers.push(addr);
            tokio::spawn(async move {
                let (q, from) = udp_recv(&sock).await;
                let me = requestor_duid(&q);
                let DhcpOption::ClientData(mut cd) = client_data(1, clt) else {
                    unreachable!()
                };
                cd.retain(|o| o.code() != code::IAPREFIX);
                if extra {
                    cd.push(DhcpOption::IaPrefix(lq6_proto::IaPrefix {
                        preferred: 1,
                        valid: 2,
                        prefix_len: 48,
                        prefix: "2001:db8:ff::".parse().unwrap(),
                        options: vec![],
                    }));
                }
                udp_send(
                    &sock,
                    from,
                    &reply(q.xid, &me, vec![DhcpOption::ClientData(cd)]),
                )
                .await;
            });
        }
        let (merged, outcomes) = lq6_requestor::query_servers(
            &servers,
            &Query::by_client_id(client_duid(1)),
            lq6_requestor::Transport::Udp,
            &cfg(),
            None,
        )
        .await;
        assert!(outcomes.iter().all(|o| matches!(o.result, Ok(1))));
        assert_eq!(merged.len(), 1, "{merged:?}");
        let b = &merged[0];
        assert_eq!(b.server, servers[0], "the most recent contact wins");
        assert_eq!(b.clt_time, Some(10));
        assert_eq!(b.addresses.len(), 1);
        assert_eq!(b.prefixes.len(), 1, "disjoint data is merged");
        assert_eq!(b.prefixes[0].prefix_len, 48);
    })
    .await
}

#[test]
fn reconcile_uses_base_time() {
    use lq6_requestor::{AddressLease, Binding};
    let a: SocketAddr = "[::1]:1".parse().unwrap();
    let b: SocketAddr = "[::1]:2".parse().unwrap();
    let lease = AddressLease {
        address: "2001:db8::1".parse().unwrap(),
        preferred: 1,
        valid: 2,
    };
    let mk = |server, client: u8, clt, base| Binding {
        server,
        client_id: Some(client_duid(client)),
        addresses: vec![lease.clone()],
        prefixes: vec![],
        clt_time: Some(clt),
        relay_data: None,
        base_time: base,
        link_address: None,
        received_at: 1_800_000_000,
        other_options: vec![],
    };
    // A: clt 100 relative to a base-time 1000 s before receipt: contact 1100 s ago.
    // B: clt 200 relative to receipt: contact 200 s ago. B wins despite the larger clt-time.
    let base_a = lq6_proto::types::unix_to_dhcp_time(1_800_000_000 - 1000);
    let out = reconcile(vec![mk(a, 1, 100, Some(base_a)), mk(b, 2, 200, None)]);
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].server, b);
    assert_eq!(out[0].client_id, Some(client_duid(2)));
    // Disjoint: different addresses, same client → merged.
    let mut c = mk(b, 1, 50, None);
    c.addresses[0].address = "2001:db8::2".parse().unwrap();
    let out = reconcile(vec![mk(a, 1, 100, None), c]);
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].addresses.len(), 2);
    assert_eq!(out[0].clt_time, Some(50));
}
