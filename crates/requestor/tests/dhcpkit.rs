//! The requestor against an independent server: dhcpkit 1.0.7's `ipv6-dhcpd`
//! (INTEROP.md), over UDP and TCP.
//!
//! The test drives relayed SOLICIT/REQUEST exchanges through dhcpkit (leases
//! come from per-link static CSVs), then asks by address, by client-id and
//! by link-address, and compares the bindings with what dhcpkit granted.
//!
//! dhcpkit only listens on port 547 of an explicit address and answers UDP
//! leasequeries on port 546, so everything runs in a private network
//! namespace: the outer test re-executes this binary under `unshare -n`.
//!
//! Needs root, `unshare`, `ip` and the venv made by `.ci/dhcpkit.sh`
//! (`LQ6_DHCPKIT_PY`, default /opt/dhcpkit37/bin/python). When the peer is
//! missing the test is skipped, unless `CI` is set: then it fails.

mod common;

use common::*;
use lq6_proto::{DhcpOption, Duid, Ia, Message, MessageType, OptionsExt, RelayMessage};
use lq6_requestor::{
    Binding, BulkConnection, ConnectPolicy, Query, RequestorConfig, Retransmit, UdpRequestor,
};
use std::collections::BTreeSet;
use std::net::{Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tokio::net::UdpSocket;

const SERVER: &str = "2001:db8:ffff::1";
const RELAY: &str = "2001:db8:ffff::2";
const REQUESTOR: &str = "2001:db8:ffff::3";
const LINK1: &str = "2001:db8:1::1";
const LINK2: &str = "2001:db8:2::1";

fn python() -> PathBuf {
    std::env::var_os("LQ6_DHCPKIT_PY")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/opt/dhcpkit37/bin/python"))
}

fn peer_dir() -> Option<PathBuf> {
    let here = Path::new(env!("CARGO_MANIFEST_DIR"));
    [
        here.join("../../../shared/peers/dhcpkit"),
        PathBuf::from("/work/shared/peers/dhcpkit"),
    ]
    .into_iter()
    .find(|p| p.join("dhcpkit-launch.py").exists())
    .and_then(|p| p.canonicalize().ok())
}

fn missing(why: &str) {
    if std::env::var_os("CI").is_some() {
        panic!("dhcpkit peer unavailable under CI: {why} (run .ci/dhcpkit.sh)");
    }
    eprintln!("SKIPPED dhcpkit interop: {why}");
}

#[test]
fn dhcpkit_interop() {
    let py = python();
    if !py.exists() {
        return missing(&format!("{} not found", py.display()));
    }
    let ok = Command::new(&py)
        .args(["-c", "import dhcpkit.ipv6.server.main"])
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    if !ok {
        return missing("dhcpkit does not import");
    }
    if peer_dir().is_none() {
        return missing("shared/peers/dhcpkit not found");
    }
    let exe = std::env::current_exe().unwrap();
    let out = Command::new("unshare")
        .arg("-n")
        .arg(&exe)
        .args([
            "--exact",
            "dhcpkit_in_netns",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("LQ6_DHCPKIT_IN_NETNS", "1")
        .stdin(Stdio::null())
        .output();
    let out = match out {
        Ok(o) => o,
        Err(e) => return missing(&format!("cannot run unshare: {e}")),
    };
    let so = String::from_utf8_lossy(&out.stdout);
    let se = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() && se.contains("unshare failed") {
        return missing(&format!("no network namespaces here: {se}"));
    }
    assert!(
        out.status.success() && so.contains("bindings match what dhcpkit granted"),
        "inner test failed\n--- stdout\n{so}\n--- stderr\n{se}"
    );
    eprintln!("{so}");
}

fn sh(args: &[&str]) {
    let st = Command::new(args[0]).args(&args[1..]).status().unwrap();
    assert!(st.success(), "{args:?} failed");
}

/// A work directory with a lower-case path: ZConfig lower-cases paths.
struct WorkDir(PathBuf);

impl WorkDir {
    fn new() -> Self {
        let p = std::env::temp_dir().join(format!("lq6-dhcpkit-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        WorkDir(p)
    }
    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for WorkDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

struct Dhcpkit {
    child: Child,
    work: WorkDir,
}

impl Drop for Dhcpkit {
    fn drop(&mut self) {
        let pid = self.child.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        let t = Instant::now();
        while t.elapsed() < Duration::from_secs(3) {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Dhcpkit {
    fn log(&self) -> String {
        std::fs::read_to_string(self.work.path().join("dhcpkit.log")).unwrap_or_default()
    }
}

/// Static assignments: (link, duid, address, prefix).
fn assignments() -> Vec<(&'static str, Duid, Ipv6Addr, (Ipv6Addr, u8))> {
    let a = |s: &str| s.parse::<Ipv6Addr>().unwrap();
    vec![
        (
            LINK1,
            client_duid(1),
            a("2001:db8:1::1001"),
            (a("2001:db8:a1:100::"), 56),
        ),
        (
            LINK1,
            client_duid(2),
            a("2001:db8:1::1002"),
            (a("2001:db8:a1:200::"), 56),
        ),
        (
            LINK1,
            client_duid(3),
            a("2001:db8:1::1003"),
            (a("2001:db8:a1:300::"), 56),
        ),
        // Client 1 is on two links.
        (
            LINK2,
            client_duid(1),
            a("2001:db8:2::2001"),
            (a("2001:db8:a2:100::"), 56),
        ),
        (
            LINK2,
            client_duid(4),
            a("2001:db8:2::2004"),
            (a("2001:db8:a2:400::"), 56),
        ),
    ]
}

fn start_dhcpkit() -> Dhcpkit {
    let work = WorkDir::new();
    let dir = peer_dir().unwrap();
    let mut subnets = String::new();
    for (i, link) in [LINK1, LINK2].iter().enumerate() {
        let csv = work.path().join(format!("link{i}.csv"));
        let mut rows = String::from("id,address,prefix\n");
        for (l, duid, addr, (p, plen)) in assignments() {
            if l == *link {
                let hex: String = duid.as_bytes().iter().map(|b| format!("{b:02x}")).collect();
                rows.push_str(&format!("duid:{hex},{addr},{p}/{plen}\n"));
            }
        }
        std::fs::write(&csv, rows).unwrap();
        let net = link.trim_end_matches('1');
        subnets.push_str(&format!(
            "<subnet {net}/64>\n    <static-csv {}>\n        address-preferred-lifetime 1h\n        address-valid-lifetime 2h\n        prefix-preferred-lifetime 1h\n        prefix-valid-lifetime 2h\n    </static-csv>\n</subnet>\n",
            csv.display()
        ));
    }
    let conf = std::fs::read_to_string(dir.join("dhcpkit.conf.in"))
        .unwrap()
        .replace("@WORK@", &work.path().display().to_string())
        .replace("@SERVER@", SERVER)
        .replace("@REQUESTORS@", "2001:db8:ffff::/64")
        .lines()
        .map(|l| {
            if l.trim() == "@SUBNETS@" {
                subnets.clone()
            } else {
                format!("{l}\n")
            }
        })
        .collect::<String>();
    let conf_path = work.path().join("dhcpkit.conf");
    std::fs::write(&conf_path, conf).unwrap();
    let log = std::fs::File::create(work.path().join("dhcpkit.log")).unwrap();
    let child = Command::new(python())
        .arg(dir.join("dhcpkit-launch.py"))
        .arg(&conf_path)
        .current_dir(work.path())
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap();
    Dhcpkit { child, work }
}

async fn wait_listening(d: &mut Dhcpkit) {
    let addr: SocketAddr = format!("[{SERVER}]:547").parse().unwrap();
    let t = Instant::now();
    loop {
        if tokio::net::TcpStream::connect(addr).await.is_ok() {
            return;
        }
        if let Ok(Some(st)) = d.child.try_wait() {
            panic!("dhcpkit exited ({st}):\n{}", d.log());
        }
        assert!(
            t.elapsed() < Duration::from_secs(25),
            "dhcpkit did not start:\n{}",
            d.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A relayed exchange as a first-hop relay on `link` would forward it.
async fn relay_exchange(relay: &UdpSocket, link: Ipv6Addr, peer: Ipv6Addr, m: Message) -> Message {
    let server: SocketAddr = format!("[{SERVER}]:547").parse().unwrap();
    let fw = Message::Relay(RelayMessage {
        msg_type: MessageType::RELAY_FORW,
        hop_count: 0,
        link_address: link,
        peer_address: peer,
        options: vec![
            DhcpOption::InterfaceId(b"lq6test".to_vec()),
            DhcpOption::RelayMsg(Box::new(m)),
        ],
    });
    let bytes = fw.to_vec().unwrap();
    let mut buf = vec![0u8; 65536];
    for _ in 0..5 {
        relay.send_to(&bytes, server).await.unwrap();
        if let Ok(r) = tokio::time::timeout(Duration::from_secs(2), relay.recv_from(&mut buf)).await
        {
            let (n, _) = r.unwrap();
            let m = Message::decode(&buf[..n]).unwrap();
            let Message::Relay(rr) = m else {
                panic!("not a RELAY-REPL: {m:?}")
            };
            return rr.relay_msg().expect("no RELAY_MSG").clone();
        }
    }
    panic!("no answer from dhcpkit to a relayed message");
}

/// SOLICIT then REQUEST; returns the address and prefix granted.
async fn obtain(
    relay: &UdpSocket,
    link: Ipv6Addr,
    n: u8,
    duid: &Duid,
) -> (Ipv6Addr, (Ipv6Addr, u8)) {
    let peer: Ipv6Addr = format!("fe80::{n}").parse().unwrap();
    let ias = vec![
        DhcpOption::IaNa(Ia {
            iaid: 1,
            t1: 0,
            t2: 0,
            options: vec![],
        }),
        DhcpOption::IaPd(Ia {
            iaid: 2,
            t1: 0,
            t2: 0,
            options: vec![],
        }),
    ];
    let mut sol = vec![
        DhcpOption::ClientId(duid.clone()),
        DhcpOption::ElapsedTime(0),
    ];
    sol.extend(ias);
    let adv = relay_exchange(
        relay,
        link,
        peer,
        msg(MessageType::SOLICIT, 0x100 + n as u32, sol),
    )
    .await;
    assert_eq!(adv.msg_type(), MessageType::ADVERTISE, "{adv:?}");
    let sid = adv.options().server_id().expect("no SERVERID").clone();
    let mut req = vec![
        DhcpOption::ClientId(duid.clone()),
        DhcpOption::ServerId(sid),
        DhcpOption::ElapsedTime(0),
    ];
    req.extend(
        adv.options()
            .iter()
            .filter(|o| matches!(o, DhcpOption::IaNa(_) | DhcpOption::IaPd(_)))
            .cloned(),
    );
    let rep = relay_exchange(
        relay,
        link,
        peer,
        msg(MessageType::REQUEST, 0x200 + n as u32, req),
    )
    .await;
    assert_eq!(rep.msg_type(), MessageType::REPLY, "{rep:?}");
    let mut addr = None;
    let mut pfx = None;
    for o in rep.options() {
        match o {
            DhcpOption::IaNa(ia) => {
                for x in &ia.options {
                    if let DhcpOption::IaAddr(a) = x {
                        addr = Some(a.addr);
                    }
                }
            }
            DhcpOption::IaPd(ia) => {
                for x in &ia.options {
                    if let DhcpOption::IaPrefix(p) = x {
                        pfx = Some((p.prefix, p.prefix_len));
                    }
                }
            }
            _ => {}
        }
    }
    (
        addr.expect("no address granted"),
        pfx.expect("no prefix granted"),
    )
}

type Summary = (Duid, Vec<Ipv6Addr>, Vec<(Ipv6Addr, u8)>);

fn summary(b: &Binding) -> Summary {
    (
        b.client_id.clone().expect("binding without CLIENTID"),
        b.addresses.iter().map(|a| a.address).collect(),
        b.prefixes
            .iter()
            .map(|p| (p.prefix, p.prefix_len))
            .collect(),
    )
}

fn expected(filter: impl Fn(&str, &Duid) -> bool) -> BTreeSet<Summary> {
    assignments()
        .into_iter()
        .filter(|(l, d, _, _)| filter(l, d))
        .map(|(_, d, a, p)| (d, vec![a], vec![p]))
        .collect()
}

#[test]
#[ignore = "run inside a network namespace by dhcpkit_interop"]
fn dhcpkit_in_netns() {
    if std::env::var_os("LQ6_DHCPKIT_IN_NETNS").is_none() {
        return;
    }
    sh(&["ip", "link", "set", "lo", "up"]);
    for a in [SERVER, RELAY, REQUESTOR] {
        sh(&[
            "ip",
            "-6",
            "addr",
            "add",
            &format!("{a}/128"),
            "dev",
            "lo",
            "nodad",
        ]);
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut d = start_dhcpkit();
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        rt.block_on(scenario(&mut d))
    }));
    if let Err(e) = r {
        eprintln!("--- dhcpkit log\n{}", d.log());
        std::panic::resume_unwind(e);
    }
}

async fn scenario(d: &mut Dhcpkit) {
    wait_listening(d).await;
    let relay = UdpSocket::bind(format!("[{RELAY}]:547")).await.unwrap();
    for (i, (link, duid, addr, pfx)) in assignments().into_iter().enumerate() {
        let got = obtain(&relay, link.parse().unwrap(), i as u8 + 1, &duid).await;
        assert_eq!(
            got,
            (addr, pfx),
            "dhcpkit granted something else than its CSV says"
        );
    }
    let server_udp: SocketAddr = format!("[{SERVER}]:547").parse().unwrap();
    let cfg = RequestorConfig {
        duid: Duid::en(32473, b"lq6-interop"),
        bulk_timeout: Duration::from_secs(10),
        connect: ConnectPolicy {
            attempts: 3,
            retry_delay: Duration::from_millis(100),
            connect_timeout: Duration::from_secs(5),
        },
        retransmit: Retransmit {
            irt: Duration::from_millis(500),
            mrt: Duration::from_secs(2),
            mrc: 4,
            mrd: Duration::ZERO,
        },
        ..RequestorConfig::default()
    };
    let l1: Ipv6Addr = LINK1.parse().unwrap();
    let l2: Ipv6Addr = LINK2.parse().unwrap();

    // ---- UDP (RFC 5007); dhcpkit answers on port 546.
    let udp = UdpRequestor::with_bind(cfg.clone(), format!("[{REQUESTOR}]:546").parse().unwrap());
    let v = udp
        .query(
            server_udp,
            &Query::by_address("2001:db8:1::1002".parse().unwrap()),
        )
        .await
        .unwrap();
    assert_eq!(
        v.iter().map(summary).collect::<BTreeSet<_>>(),
        expected(|_, d| *d == client_duid(2))
    );
    assert!(v[0].clt_time.is_some());
    // A prefix holder is found by an address inside the prefix.
    let v = udp
        .query(
            server_udp,
            &Query::by_address("2001:db8:a2:400::1".parse().unwrap()),
        )
        .await;
    eprintln!(
        "by address inside a delegated prefix (UDP): {:?}",
        v.as_ref().map(|v| v.len())
    );
    // Client 2 is on one link.
    let v = udp
        .query(server_udp, &Query::by_client_id(client_duid(2)))
        .await
        .unwrap();
    assert_eq!(
        v.iter().map(summary).collect::<BTreeSet<_>>(),
        expected(|_, d| *d == client_duid(2))
    );
    // Client 1 is on two links: LQ_CLIENT_LINK, then one query per link.
    let v = udp
        .query(server_udp, &Query::by_client_id(client_duid(1)))
        .await
        .unwrap();
    assert_eq!(
        v.iter().map(summary).collect::<BTreeSet<_>>(),
        expected(|_, d| *d == client_duid(1))
    );
    let links: BTreeSet<_> = v.iter().map(|b| b.link_address).collect();
    assert_eq!(links, [Some(l1), Some(l2)].into_iter().collect());
    // Unknown address: no binding.
    let v = udp
        .query(
            server_udp,
            &Query::by_address("2001:db8:1::dead".parse().unwrap()),
        )
        .await
        .unwrap();
    assert!(v.is_empty());
    drop(udp);

    // ---- TCP (RFC 5460), several queries on one connection.
    let conn = BulkConnection::connect(server_udp, cfg.clone())
        .await
        .unwrap();
    let by_link1 = conn
        .query(&Query::by_link(l1).with_relay_data(true))
        .await
        .unwrap();
    let by_link2 = conn.query(&Query::by_link(l2)).await.unwrap();
    let (r1, r2) = tokio::join!(by_link1.collect_all(), by_link2.collect_all());
    let (r1, r2) = (r1.unwrap(), r2.unwrap());
    assert_eq!(
        r1.iter().map(summary).collect::<BTreeSet<_>>(),
        expected(|l, _| l == LINK1)
    );
    assert_eq!(
        r2.iter().map(summary).collect::<BTreeSet<_>>(),
        expected(|l, _| l == LINK2)
    );
    assert!(r1.iter().all(|b| b.link_address == Some(l1)));
    let relay_addr: Ipv6Addr = RELAY.parse().unwrap();
    for b in &r1 {
        let rd = b
            .relay_data
            .as_ref()
            .expect("LQ_RELAY_DATA requested but missing");
        assert_eq!(rd.peer_address, relay_addr);
        match rd.message.as_ref() {
            Message::Relay(r) => assert_eq!(r.link_address, l1),
            m => panic!("relay data is not a RELAY-FORW: {m:?}"),
        }
    }
    let v = conn
        .query(&Query::by_client_id(client_duid(1)))
        .await
        .unwrap()
        .collect_all()
        .await
        .unwrap();
    assert_eq!(
        v.iter().map(summary).collect::<BTreeSet<_>>(),
        expected(|_, d| *d == client_duid(1))
    );
    let v = conn
        .query(&Query::by_address("2001:db8:2::2004".parse().unwrap()))
        .await
        .unwrap()
        .collect_all()
        .await
        .unwrap();
    assert_eq!(
        v.iter().map(summary).collect::<BTreeSet<_>>(),
        expected(|_, d| *d == client_duid(4))
    );
    let v = conn
        .query(&Query::by_link("2001:db8:3::1".parse().unwrap()))
        .await
        .unwrap()
        .collect_all()
        .await;
    eprintln!("by unknown link (TCP): {:?}", v.as_ref().map(|v| v.len()));
    drop(conn);
    if let Some(bin) = std::env::var_os("LQ6_BIN") {
        cli(Path::new(&bin)).await;
    }
    println!("dhcpkit interop: UDP and TCP bindings match what dhcpkit granted");
}

/// `lq6 query` through the binary, when env `LQ6_BIN` names it.
async fn cli(bin: &Path) {
    let run = |args: Vec<String>| {
        let bin = bin.to_path_buf();
        tokio::task::spawn_blocking(move || Command::new(bin).args(args).output().unwrap())
    };
    let words = |s: &str| s.split_whitespace().map(String::from).collect::<Vec<_>>();
    let o = run(words(&format!(
        "query --server {SERVER} --format json --relay-data link {LINK1}"
    )))
    .await
    .unwrap();
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let text = String::from_utf8(o.stdout).unwrap();
    let mut ids = BTreeSet::new();
    for line in text.lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        ids.insert(v["client_id"].as_str().unwrap().to_string());
        assert_eq!(v["link_address"], LINK1);
        assert!(v["addresses"][0]["valid_lifetime"].as_u64().is_some());
        assert_eq!(v["relay_data"]["peer_address"], RELAY);
    }
    let want: BTreeSet<String> = expected(|l, _| l == LINK1)
        .into_iter()
        .map(|s| s.0.to_string())
        .collect();
    assert_eq!(ids, want);
    let o = run(words(&format!("query --server {SERVER} --bind [{REQUESTOR}]:546 --format csv --udp address 2001:db8:2::2004"))).await.unwrap();
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let text = String::from_utf8(o.stdout).unwrap();
    assert!(text.starts_with("server,client_id,"), "{text}");
    assert!(text.contains(",address,2001:db8:2::2004,"), "{text}");
    let o = run(words(&format!(
        "query --server {SERVER} --bind [{REQUESTOR}]:546 address 2001:db8:1::dead"
    )))
    .await
    .unwrap();
    assert_eq!(o.status.code(), Some(1));
    let o = run(words(&format!(
        "query --server {SERVER} --tcp client-id {}",
        client_duid(1)
    )))
    .await
    .unwrap();
    assert_eq!(o.status.code(), Some(0));
    let table = String::from_utf8(o.stdout).unwrap();
    assert!(table.starts_with("CLIENT-ID"), "{table}");
    assert_eq!(table.lines().count(), 3, "{table}");
    println!("lq6 query through the binary: ok");
}
