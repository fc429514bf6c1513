//! The real `lq6` binary: `decode`, and SIGTERM ending an in-flight Bulk
//! Leasequery with QueryTerminated (RFC 5460 §7.2) before the close.

use lq6_proto::framing::LqFrameCodec;
use lq6_proto::*;
use lq6_store::sqlite::SqliteStore;
use lq6_store::{ClientUpdate, Lease, LeaseKind, LeaseState, LeaseStore, RelayInfo};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Ipv6Addr, TcpStream};
use std::process::{Command, Stdio};
use std::time::Duration;

fn lq6() -> Command {
    Command::new(env!("CARGO_BIN_EXE_lq6"))
}

#[test]
fn decode_prints_the_interop_vector_as_a_tree() {
    let out = lq6()
        .args(["decode", "0e123456 0001000a00030001020000000001 002c001f03 00000000000000000000000000000000 0035000a0002000009bf0a0b0c0d"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let t = String::from_utf8(out.stdout).unwrap();
    assert!(t.contains("LEASEQUERY(14) xid=0x123456"), "{t}");
    assert!(
        t.contains("LQ_QUERY(44) QUERY_BY_RELAY_ID link-address=::"),
        "{t}"
    );
    assert!(
        t.contains("RELAY_ID(53) 00:02:00:00:09:bf:0a:0b:0c:0d [DUID-EN 2495 0a:0b:0c:0d]"),
        "{t}"
    );
    // A framed DONE with --tcp, and a truncated message is an error naming the offset.
    let out = lq6()
        .args(["decode", "--tcp", "0004 10000007"])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("LEASEQUERY-DONE(16) xid=0x000007"));
    let out = lq6()
        .args(["decode", "07000001 0001 0010 000300"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("at offset 8") && err.contains("truncated"),
        "{err}"
    );
}

#[test]
fn sigterm_ends_in_flight_bulk_query_with_query_terminated() {
    let dir = tempfile::tempdir().unwrap();
    let now = lq6_store::unix_now();
    let rid = Duid::en(2495, &[1, 2, 3, 4]);
    tokio::runtime::Runtime::new().unwrap().block_on(async {
        let store = SqliteStore::open(dir.path().join("leases.db")).unwrap();
        let mut batch = Vec::new();
        let chain = Message::Relay(RelayMessage {
            msg_type: MessageType::RELAY_FORW,
            hop_count: 0,
            link_address: "2001:db8:1::1".parse().unwrap(),
            peer_address: "fe80::1".parse().unwrap(),
            options: vec![DhcpOption::InterfaceId(vec![7; 260])],
        })
        .to_vec()
        .unwrap();
        for i in 0..100_000u32 {
            let mut u = ClientUpdate::new(
                Duid::ll(1, &i.to_be_bytes()).as_bytes().to_vec(),
                "lan1",
                now - 10,
            );
            u.relay = Some(RelayInfo {
                peer_address: "2001:db8:ffff::2".parse().unwrap(),
                // A bulky relay chain makes the answer (~35 MB) far larger than socket buffers.
                chain: chain.clone(),
                relay_ids: vec![rid.as_bytes().to_vec()],
                remote_id: None,
                subscriber_id: None,
                interface_id: None,
                client_linklayer: None,
            });
            u.leases.push(Lease {
                kind: LeaseKind::Pd,
                iaid: 1,
                addr: Ipv6Addr::from((0x2001_0db8u128 << 96) | ((i as u128 + 0x20000) << 72)),
                prefix_len: 56,
                preferred: 100,
                valid: 200,
                expires_at: now + 200,
                state: LeaseState::Active,
            });
            batch.push(u);
            if batch.len() == 10_000 {
                for r in store
                    .commit_batch(std::mem::take(&mut batch))
                    .await
                    .unwrap()
                {
                    r.unwrap();
                }
            }
        }
    });
    let (mut child, ports) = serve(dir.path(), "");
    let mut s = TcpStream::connect(("::1", ports.tcp)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let q = Message::Client(ClientMessage {
        msg_type: MessageType::LEASEQUERY,
        xid: 0x4242,
        options: vec![
            DhcpOption::ClientId(Duid::ll(1, &[2, 0, 0, 0, 0, 1])),
            DhcpOption::LqQuery(LqQuery {
                query_type: QueryType::ByRelayId,
                link_address: Ipv6Addr::UNSPECIFIED,
                options: vec![
                    DhcpOption::RelayId(rid),
                    DhcpOption::Oro(vec![code::LQ_RELAY_DATA]),
                ],
            }),
        ],
    });
    let mut buf = Vec::new();
    write_framed(&mut buf, |b| q.encode(b)).unwrap();
    s.write_all(&buf).unwrap();
    // Read the first message, then stop reading so the query is still in flight.
    let mut size = [0u8; 2];
    s.read_exact(&mut size).unwrap();
    let mut first = vec![0u8; u16::from_be_bytes(size) as usize];
    s.read_exact(&mut first).unwrap();
    assert_eq!(first[0], 15, "REPLY first");
    std::thread::sleep(Duration::from_millis(300));
    assert!(Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap()
        .success());
    // Drain: the last message must be DONE with QueryTerminated.
    let mut rest = Vec::new();
    let _ = s.read_to_end(&mut rest);
    let mut codec = LqFrameCodec::default();
    let mut bytes = bytes::BytesMut::from(&rest[..]);
    let mut last = None;
    let mut n = 1;
    use tokio_util::codec::Decoder;
    while let Some(f) = codec.decode(&mut bytes).unwrap() {
        last = Some(Message::decode(&f).unwrap());
        n += 1;
    }
    let Some(Message::Client(last)) = last else {
        panic!("no final message")
    };
    assert_eq!(last.msg_type, MessageType::LEASEQUERY_DONE);
    assert_eq!(
        last.options.as_slice().status().map(|s| s.status),
        Some(Status::QueryTerminated)
    );
    assert!(n < 100_000, "the query was terminated early ({n} messages)");
    let st = child.wait().unwrap();
    assert!(
        st.success() || st.code().is_some(),
        "serve exited after SIGTERM: {st:?}"
    );
}

#[test]
fn metrics_endpoint_is_served_when_configured() {
    let dir = tempfile::tempdir().unwrap();
    let (mut child, ports) = serve(dir.path(), "[metrics]\nlisten = \"[::1]:0\"\n");
    let metrics = ports.metrics.expect("metrics listener logged");
    // One bulk connection, so the gauge and counters move. The server accepts it
    // in its own time (later on a loaded machine): scrape until it shows.
    let _c = TcpStream::connect(("::1", ports.tcp)).unwrap();
    let t = std::time::Instant::now();
    let body = loop {
        let mut http = TcpStream::connect(("::1", metrics)).unwrap();
        http.write_all(b"GET /metrics HTTP/1.1\r\nHost: lq6\r\n\r\n")
            .unwrap();
        let mut body = String::new();
        http.read_to_string(&mut body).unwrap();
        if body.contains("lq6_bulk_connections_open 1") || t.elapsed() > Duration::from_secs(20) {
            break body;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    terminate(&mut child);
    assert!(body.starts_with("HTTP/1.1 200 OK"), "{body}");
    for want in [
        "lq6_dhcp_total{counter=\"received\"}",
        "lq6_bulk_connections_open 1",
        "lq6_bulk_connections_accepted_total 1",
    ] {
        assert!(body.contains(want), "missing {want:?} in\n{body}");
    }
}

/// The ports `lq6 serve` bound (it logs them).
struct Ports {
    udp: u16,
    tcp: u16,
    metrics: Option<u16>,
}

/// SIGTERM, as an operator stops `lq6 serve`, and reap it.
fn terminate(child: &mut std::process::Child) {
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let _ = child.wait();
}

/// The port of the `[addr]:port` after `marker` in a log line.
fn logged_port(line: &str, marker: &str) -> Option<u16> {
    let rest = &line[line.find(marker)? + marker.len()..];
    let addr = rest.split_whitespace().next()?;
    let port: String = addr
        .rsplit(':')
        .next()?
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    port.parse().ok()
}

/// Starts `lq6 serve` over the lease store in `dir` (link lan1, PD pool
/// 2001:db8:100::/40) with `extra` TOML appended; returns once the bulk listener
/// is up, with the ports. Every port is 0 (any free one; `[metrics] listen` in
/// `extra` too) and read back from the log, so tests running in parallel never
/// race for a port.
fn serve(dir: &std::path::Path, extra: &str) -> (std::process::Child, Ports) {
    serve_cfg(dir, "", extra)
}

/// [`serve`] with `server` lines added to `[server]`.
fn serve_cfg(dir: &std::path::Path, server: &str, extra: &str) -> (std::process::Child, Ports) {
    let cfg = format!(
        "[server]\nlisten = [\"[::1]:547\"]\n{server}\n[store]\npath = \"{}/leases.db\"\n[[links]]\nname = \"lan1\"\nprefixes = [\"2001:db8:1::/64\"]\n[[links.pd_pools]]\nprefix = \"2001:db8:100::/40\"\ndelegated_len = 56\n[leasequery.tcp]\nlisten = [\"[::1]:547\"]\n{extra}",
        dir.display()
    );
    let cfg_path = dir.join("lq6.toml");
    std::fs::write(&cfg_path, cfg).unwrap();
    let mut c = lq6();
    c.args(["serve", "--port", "0", "--tcp-port", "0", "--config"])
        .arg(&cfg_path);
    spawn_serve(c)
}

/// Runs a prepared `lq6 serve` command until its bulk listener is up; returns it with its ports.
fn spawn_serve(mut c: Command) -> (std::process::Child, Ports) {
    let mut child = c
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for l in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(l);
        }
    });
    let (mut udp, mut metrics) = (None, None);
    let tcp = loop {
        let l = rx
            .recv_timeout(Duration::from_secs(30))
            .expect("serve starts");
        metrics = metrics.or_else(|| logged_port(&l, "metrics listening on http "));
        udp = udp.or_else(|| logged_port(&l, "listening on udp "));
        if let Some(p) = logged_port(&l, "bulk leasequery listening on tcp ") {
            break p;
        }
    };
    let udp = udp.expect("UDP listener logged before the bulk listener");
    (child, Ports { udp, tcp, metrics })
}

#[test]
fn lq6_query_against_lq6_serve() {
    let dir = tempfile::tempdir().unwrap();
    let now = lq6_store::unix_now();
    let rid = Duid::en(2495, &[0x0a, 0x0b, 0x0c, 0x0d]);
    {
        let store = SqliteStore::open(dir.path().join("leases.db")).unwrap();
        tokio::runtime::Runtime::new().unwrap().block_on(async {
            for i in 0..3u8 {
                let mut u = ClientUpdate::new(
                    Duid::ll(1, &[2, 0, 0, 0, 0xaa, i]).as_bytes().to_vec(),
                    "lan1",
                    now - 5,
                );
                u.link_address = "2001:db8:1::1".parse().unwrap();
                u.relay = Some(RelayInfo {
                    peer_address: "2001:db8:ffff::2".parse().unwrap(),
                    chain: vec![],
                    relay_ids: vec![rid.as_bytes().to_vec()],
                    remote_id: Some(lq6_store::RemoteId {
                        enterprise: 9,
                        id: vec![0x0a, 0x0b, 0x0c],
                    }),
                    subscriber_id: None,
                    interface_id: None,
                    client_linklayer: None,
                });
                u.leases.push(Lease {
                    kind: LeaseKind::Na,
                    iaid: 1,
                    addr: Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 0x1000, i as u16),
                    prefix_len: 128,
                    preferred: 100,
                    valid: 200,
                    expires_at: now + 200,
                    state: LeaseState::Active,
                });
                store.commit(u).await.unwrap();
            }
        });
    }
    let (mut child, ports) = serve(dir.path(), "");
    let (udp, tcp) = (ports.udp, ports.tcp);
    let q = |args: &[&str]| {
        let mut c = lq6();
        c.args(["query", "--server", "::1"]);
        let out = c.args(args).output().unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).to_string(),
            String::from_utf8_lossy(&out.stderr).to_string(),
        )
    };
    let tcp_s = tcp.to_string();
    let udp_s = udp.to_string();
    // Bulk by relay-id, JSON lines: one binding per line with stable fields.
    let (code, out, err) = q(&[
        "--port",
        &tcp_s,
        "--format",
        "json",
        "relay-id",
        "en:2495:0a0b0c0d",
    ]);
    assert_eq!(code, Some(0), "{err}");
    let waited = lq6_store::unix_now() - now;
    let lines: Vec<serde_json::Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 3, "{out}");
    let mut ids: Vec<String> = lines
        .iter()
        .map(|v| v["client_id"].as_str().unwrap().to_string())
        .collect();
    ids.sort();
    assert_eq!(
        ids,
        [
            "00:03:00:01:02:00:00:00:aa:00",
            "00:03:00:01:02:00:00:00:aa:01",
            "00:03:00:01:02:00:00:00:aa:02"
        ]
    );
    // Stored valid until `now + 200`; at most `waited` seconds later, however slow
    // the machine, when the answer came.
    let valid = lines[0]["addresses"][0]["valid_lifetime"].as_u64();
    assert!(
        valid.is_some_and(|v| (200 - waited..=200).contains(&v)),
        "valid_lifetime {valid:?}, {waited} s after the store was filled"
    );
    // By remote-id and link, CSV; then a relay-id with no bindings: exit code 1.
    let (code, out, _) = q(&["--port", &tcp_s, "--format", "csv", "remote-id", "9:0a0b0c"]);
    assert_eq!(code, Some(0));
    assert_eq!(out.lines().count(), 4, "header and 3 rows: {out}");
    let (code, _, _) = q(&["--port", &tcp_s, "link", "2001:db8:1::1"]);
    assert_eq!(code, Some(0));
    let (code, _, _) = q(&["--port", &tcp_s, "relay-id", "en:2495:ffff"]);
    assert_eq!(code, Some(1), "no bindings");
    // UDP by address, and a server error status (NotConfigured) printed by name: exit code 2.
    let (code, out, _) = q(&[
        "--port",
        &udp_s,
        "--udp",
        "--format",
        "json",
        "address",
        "2001:db8:1::1000:1",
    ]);
    assert_eq!(code, Some(0));
    assert!(out.contains("00:03:00:01:02:00:00:00:aa:01"), "{out}");
    let (code, _, err) = q(&["--port", &tcp_s, "link", "2001:db8:77::1"]);
    assert_eq!(code, Some(2));
    assert!(err.contains("NotConfigured"), "{err}");
    terminate(&mut child);
    // Connection failure: exit code 3.
    let (code, _, _) = q(&["--port", &tcp_s, "link", "2001:db8:1::1"]);
    assert_eq!(code, Some(3));
}

/// README "Try it": the example Kea CSV imported into the demo's store, then `lq6 serve` without
/// a config answers bulk queries for it by Relay-ID and Remote-ID.
#[test]
fn readme_demo_serves_the_imported_example() {
    let state = tempfile::tempdir().unwrap();
    let db = state.path().join("lq6").join("demo-leases.db");
    std::fs::create_dir_all(db.parent().unwrap()).unwrap();
    let csv =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/kea-leases6.csv");
    let out = lq6()
        .args(["leases", "--store"])
        .arg(&db)
        .args(["import", "--link-map", "1=demo", "--kea-csv"])
        .arg(&csv)
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(said.contains("4 leases imported"), "{said}");
    // `leases list`: every row's state sits under the STATE heading.
    let out = lq6()
        .args(["leases", "--store"])
        .arg(&db)
        .arg("list")
        .output()
        .unwrap();
    let table = String::from_utf8_lossy(&out.stdout);
    let mut lines = table.lines();
    let col = lines.next().and_then(|h| h.find("STATE")).expect("header");
    let rows: Vec<&str> = lines.collect();
    assert_eq!(rows.len(), 4, "{table}");
    assert!(
        rows.iter()
            .all(|r| r.get(col..).is_some_and(|r| r.starts_with("active "))),
        "{table}"
    );
    let mut c = lq6();
    c.env("XDG_STATE_HOME", state.path())
        .args(["serve", "--port", "0", "--tcp-port", "0"]);
    let (mut child, ports) = spawn_serve(c);
    let q = |args: &[&str]| {
        let out = lq6()
            .args(["query", "--server", "::1", "--port", &ports.tcp.to_string()])
            .args(["--format", "json"])
            .args(args)
            .output()
            .unwrap();
        assert_eq!(
            out.status.code(),
            Some(0),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let lines: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        lines
    };
    let by_relay = q(&["relay-id", "en:2495:0a0b0c0d"]);
    let mut ids: Vec<&str> = by_relay
        .iter()
        .map(|v| v["client_id"].as_str().unwrap())
        .collect();
    ids.sort();
    let duid = |n: u8| format!("00:01:00:01:2b:3c:4d:5e:52:54:00:00:00:{n:02x}");
    assert_eq!(ids, [duid(1), duid(2), duid(3)]);
    let first = by_relay.iter().find(|v| v["client_id"] == duid(1)).unwrap();
    assert_eq!(
        first["addresses"][0]["address"], "2001:db8:1::1000",
        "{first}"
    );
    assert_eq!(
        first["prefixes"][0]["prefix"], "2001:db8:100::/56",
        "{first}"
    );
    // "modem2" under enterprise 4491, from the relay options in the CSV's user_context.
    let by_remote = q(&["remote-id", "4491:6d6f64656d32"]);
    assert_eq!(by_remote.len(), 1);
    assert_eq!(by_remote[0]["client_id"], duid(2));
    terminate(&mut child);
}

/// Relayed SOLICIT or REQUEST for one IA_PD from client `i` (link-address 2001:db8:1::1, so on
/// lan1), from a relay on source port `port` (RFC 8357 RELAY_PORT: the reply comes back there).
fn relayed_pd(t: MessageType, i: u32, server_id: Option<&Duid>, port: u16) -> Vec<u8> {
    let b = i.to_be_bytes();
    let mut m = ClientMessage::new(t, i & 0x00ff_ffff);
    m.options.push(DhcpOption::ClientId(Duid::ll(
        1,
        &[2, 1, b[0], b[1], b[2], b[3]],
    )));
    if let Some(s) = server_id {
        m.options.push(DhcpOption::ServerId(s.clone()));
    }
    m.options.push(DhcpOption::ElapsedTime(0));
    m.options.push(DhcpOption::IaPd(Ia {
        iaid: 1,
        t1: 0,
        t2: 0,
        options: vec![],
    }));
    Message::Relay(RelayMessage {
        msg_type: MessageType::RELAY_FORW,
        hop_count: 0,
        link_address: "2001:db8:1::1".parse().unwrap(),
        peer_address: Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, b[2] as u16, b[3] as u16),
        options: vec![
            DhcpOption::RelayPort(port),
            DhcpOption::RelayMsg(Box::new(Message::Client(m))),
        ],
    })
    .to_vec()
    .unwrap()
}

/// The client message inside a RELAY-REPL.
fn unwrap_relay_repl(b: &[u8]) -> ClientMessage {
    let Ok(Message::Relay(r)) = Message::decode(b) else {
        panic!("not a relay message: {b:02x?}")
    };
    assert_eq!(r.msg_type, MessageType::RELAY_REPL);
    r.options
        .iter()
        .find_map(|o| match o {
            DhcpOption::RelayMsg(m) => match &**m {
                Message::Client(c) => Some(c.clone()),
                _ => None,
            },
            _ => None,
        })
        .expect("RELAY-REPL carries a client message")
}

/// With `udp_workers = 2`, datagrams of one relay are answered by two threads at once. All
/// clients still get a prefix, no prefix goes to two clients, and every REPLY's prefix is in the
/// store (committed before the REPLY).
#[test]
fn two_udp_workers_share_one_socket_without_double_allocation() {
    const CLIENTS: u32 = 400;
    let dir = tempfile::tempdir().unwrap();
    let (mut child, ports) = serve_cfg(dir.path(), "udp_workers = 2", "");
    // The workers start beside the TCP listener that `serve_cfg` waits for.
    let threads = || -> Vec<String> {
        std::fs::read_dir(format!("/proc/{}/task", child.id()))
            .unwrap()
            .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
            .map(|s| s.trim().to_string())
            .collect()
    };
    let both = |n: &[String]| {
        ["lq6-dhcp-0", "lq6-dhcp-1"]
            .iter()
            .all(|w| n.iter().any(|t| t == w))
    };
    let t0 = std::time::Instant::now();
    while !both(&threads()) && t0.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(both(&threads()), "two DHCP worker threads: {:?}", threads());
    let sock = std::net::UdpSocket::bind("[::1]:0").unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    sock.connect(("::1", ports.udp)).unwrap();
    let port = sock.local_addr().unwrap().port();
    let mut buf = vec![0u8; 2048];
    // Each phase keeps 64 messages outstanding (more would overflow this socket's receive
    // buffer, and the lost replies would be the test's, not the server's).
    let mut phase = |t: MessageType, server: Option<&Duid>| -> Vec<ClientMessage> {
        let mut out = Vec::new();
        let mut sent = 0;
        while out.len() < CLIENTS as usize {
            while sent < CLIENTS && sent < out.len() as u32 + 64 {
                sock.send(&relayed_pd(t, sent, server, port)).unwrap();
                sent += 1;
            }
            let n = sock
                .recv(&mut buf)
                .unwrap_or_else(|e| panic!("{t:?}: {} of {CLIENTS} answered: {e}", out.len()));
            out.push(unwrap_relay_repl(&buf[..n]));
        }
        out
    };
    let adv = phase(MessageType::SOLICIT, None);
    assert!(adv.iter().all(|m| m.msg_type == MessageType::ADVERTISE));
    let server = adv[0].options.server_id().unwrap().clone();
    let replies = phase(MessageType::REQUEST, Some(&server));
    let mut got = std::collections::HashMap::new();
    for r in &replies {
        assert_eq!(r.msg_type, MessageType::REPLY);
        let p = r
            .options
            .iter()
            .find_map(|o| match o {
                DhcpOption::IaPd(ia) => ia.options.iter().find_map(|o| match o {
                    DhcpOption::IaPrefix(p) => Some(p.prefix),
                    _ => None,
                }),
                _ => None,
            })
            .unwrap_or_else(|| panic!("REPLY without a prefix: {r:?}"));
        if let Some(other) = got.insert(p, r.xid) {
            panic!("{p} given to transactions {other} and {}", r.xid);
        }
    }
    assert_eq!(got.len(), CLIENTS as usize);
    // SIGTERM: in-flight transactions finish, the store closes cleanly.
    terminate(&mut child);
    let store = SqliteStore::open(dir.path().join("leases.db")).unwrap();
    let stored = tokio::runtime::Runtime::new()
        .unwrap()
        .block_on(store.count(&lq6_store::Query::link("lan1")))
        .unwrap();
    assert_eq!(stored, CLIENTS as u64);
}
