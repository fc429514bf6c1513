//! Interop with real programs in network namespaces created by each test (needs root):
//! Debian `dhclient -6 -N -P`, `dhcpcd`, wide `dhcp6c` (through `dhcrelay -6` and directly on a
//! link), `perfdhcp -6 -A1 -e address-and-prefix`, and our own test relay that adds Relay-ID and
//! Remote-ID. Topology (../shared/INTEROP.md):
//!
//! ```text
//! [cli] cliN ==== rly-dn [rly] rly-up ==== srv0 [srv]
//!  link-local  2001:db8:1::1/64  2001:db8:ffff::2/64  2001:db8:ffff::1/64
//! ```
//!
//! Without root, or with a peer program missing, a test is skipped, except when the `CI`
//! environment variable is set: then it fails.

use lq6_store::{sqlite::SqliteStore, Binding, LeaseKind, LeaseState, LeaseStore, Query};
use std::io::Read;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_lq6-testbin");
static SEQ: AtomicU32 = AtomicU32::new(0);

fn have(prog: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {prog}")])
        .stdout(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

/// True when the test can run; panics under CI when it cannot.
fn prereq(progs: &[&str]) -> bool {
    let root = Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false);
    let mut missing: Vec<&str> = progs.iter().copied().filter(|p| !have(p)).collect();
    if !root {
        missing.push("root");
    }
    if missing.is_empty() {
        return true;
    }
    if std::env::var_os("CI").is_some() {
        panic!("interop prerequisites missing under CI: {missing:?}");
    }
    eprintln!("skipping: missing {missing:?}");
    false
}

fn sh(cmd: &str) -> String {
    let o = Command::new("sh").args(["-c", cmd]).output().expect("sh");
    assert!(
        o.status.success(),
        "`{cmd}` failed: {}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// Namespaces, processes and files of one test; everything is removed on drop, even on panic.
struct Env {
    tag: String,
    nss: Vec<String>,
    children: Vec<Child>,
    dir: tempfile::TempDir,
    cleanup: Vec<String>,
    server: Option<Child>,
}

impl Env {
    fn new() -> Env {
        let n = SEQ.fetch_add(1, Ordering::SeqCst);
        Env {
            tag: format!("lq6t{}x{n}", std::process::id() % 100000),
            nss: Vec::new(),
            children: Vec::new(),
            dir: tempfile::tempdir().expect("tempdir"),
            cleanup: Vec::new(),
            server: None,
        }
    }

    fn ns(&self, role: &str) -> String {
        format!("{}{role}", self.tag)
    }

    fn add_ns(&mut self, role: &str) -> String {
        let n = self.ns(role);
        sh(&format!("ip netns add {n}"));
        self.nss.push(n.clone());
        sh(&format!(
            "ip -n {n} link set lo up && ip netns exec {n} sysctl -qw net.ipv6.conf.all.accept_dad=0 net.ipv6.conf.default.accept_dad=0"
        ));
        n
    }

    fn path(&self, f: &str) -> PathBuf {
        self.dir.path().join(f)
    }

    fn spawn(&mut self, ns: &str, args: &[&str], log: &str) -> usize {
        let f = std::fs::File::create(self.path(log)).expect("log file");
        let child = Command::new("ip")
            .args(["netns", "exec", ns])
            .args(args)
            .stdin(Stdio::null())
            .stdout(f.try_clone().expect("dup"))
            .stderr(f)
            .spawn()
            .expect("spawn");
        self.children.push(child);
        self.children.len() - 1
    }

    fn read(&self, log: &str) -> String {
        let mut s = String::new();
        if let Ok(mut f) = std::fs::File::open(self.path(log)) {
            let _ = f.read_to_string(&mut s);
        }
        s
    }

    /// Whether `f` comes to hold within `secs`.
    fn poll(&self, secs: u64, mut f: impl FnMut(&Env) -> bool) -> bool {
        let end = Instant::now() + Duration::from_secs(secs);
        while Instant::now() < end {
            if f(self) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        f(self)
    }

    /// Waits until `f` holds, or panics with `what` and the server log. Before panicking it
    /// stops the server, which logs its counters (every drop reason) as it exits.
    fn wait(&self, secs: u64, what: &str, f: impl FnMut(&Env) -> bool) {
        if self.poll(secs, f) {
            return;
        }
        if let Some(c) = &self.server {
            signal(c.id(), "-TERM");
            self.poll(5, |e| e.read("server.log").contains(" stopped"));
        }
        panic!(
            "timed out waiting for {what}\n--- server log ---\n{}\n--- client log ---\n{}",
            self.read("server.log"),
            self.read("client.log")
        );
    }

    fn start_server(&mut self, cfg: &str) {
        let srv = self.ns("srv");
        let p = self.path("lq6.toml");
        let cfg = cfg.replace("@DB@", &self.path("leases.db").display().to_string());
        std::fs::write(&p, cfg).expect("write config");
        let f = std::fs::File::create(self.path("server.log")).expect("log");
        let child = Command::new("ip")
            .args(["netns", "exec", &srv, BIN, "serve"])
            .arg(&p)
            .env("LQ6_LOG", "info")
            .stdin(Stdio::null())
            .stdout(f.try_clone().expect("dup"))
            .stderr(f)
            .spawn()
            .expect("spawn server");
        self.server = Some(child);
        let end = Instant::now() + Duration::from_secs(15);
        while !self.read("server.log").contains("listening on udp") {
            let exited = self
                .server
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten());
            assert!(
                exited.is_none() && Instant::now() < end,
                "server did not start:\n{}",
                self.read("server.log")
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// SIGTERM, wait, then open the store.
    fn stop_server(&mut self) -> Vec<Binding> {
        if let Some(mut c) = self.server.take() {
            signal(c.id(), "-TERM");
            let end = Instant::now() + Duration::from_secs(10);
            while Instant::now() < end {
                if let Ok(Some(_)) = c.try_wait() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
        let store = SqliteStore::open(self.path("leases.db")).expect("open store");
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let page = rt
            .block_on(store.page(&Query::all().inactive(true), None, 100_000))
            .expect("page");
        page.bindings
    }

    fn kill_child(&mut self, i: usize, sig: &str) {
        signal(self.children[i].id(), sig);
        let end = Instant::now() + Duration::from_secs(10);
        while Instant::now() < end {
            if let Ok(Some(_)) = self.children[i].try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.children[i].kill();
        let _ = self.children[i].wait();
    }
}

/// Sends `sig` (e.g. "-TERM") to `pid`; a process already gone is not an error here.
fn signal(pid: u32, sig: &str) {
    let _ = Command::new("kill").args([sig, &pid.to_string()]).status();
}

impl Drop for Env {
    fn drop(&mut self) {
        if let Some(mut c) = self.server.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
        for n in &self.nss {
            // Anything still running in our namespaces was started by this test.
            if let Ok(o) = Command::new("ip").args(["netns", "pids", n]).output() {
                for pid in String::from_utf8_lossy(&o.stdout).split_whitespace() {
                    let _ = Command::new("kill").args(["-KILL", pid]).status();
                }
            }
            let _ = Command::new("ip").args(["netns", "del", n]).status();
        }
        for c in &self.cleanup {
            let _ = Command::new("sh").args(["-c", c]).status();
        }
    }
}

/// `[cli] cif ==== rly-dn [rly] rly-up ==== srv0 [srv]`, dhcrelay in `rly`.
fn relayed_topology(e: &mut Env, cif: &str) -> u32 {
    let (cli, rly, srv) = (e.add_ns("cli"), e.add_ns("rly"), e.add_ns("srv"));
    sh(&format!(
        "ip link add {cif} netns {cli} type veth peer name rly-dn netns {rly}"
    ));
    sh(&format!(
        "ip link add rly-up netns {rly} type veth peer name srv0 netns {srv}"
    ));
    sh(&format!(
        "ip -n {rly} addr add 2001:db8:1::1/64 dev rly-dn nodad && \
         ip -n {rly} addr add 2001:db8:ffff::2/64 dev rly-up nodad && \
         ip -n {srv} addr add 2001:db8:ffff::1/64 dev srv0 nodad && \
         ip -n {cli} link set {cif} up && ip -n {rly} link set rly-dn up && \
         ip -n {rly} link set rly-up up && ip -n {srv} link set srv0 up && \
         ip netns exec {rly} sysctl -qw net.ipv6.conf.all.forwarding=1 && \
         ip -n {srv} route add 2001:db8:1::/64 via 2001:db8:ffff::2"
    ));
    wait_link_local(&cli, cif);
    wait_link_local(&rly, "rly-dn");
    sh(&format!(
        "ip netns exec {rly} cat /sys/class/net/rly-dn/ifindex"
    ))
    .trim()
    .parse()
    .expect("ifindex")
}

/// `[cli] cif ==== srv0 [srv]`: clients talk to the server directly (ff02::1:2 on srv0).
fn direct_topology(e: &mut Env, cif: &str) {
    let (cli, srv) = (e.add_ns("cli"), e.add_ns("srv"));
    sh(&format!(
        "ip link add {cif} netns {cli} type veth peer name srv0 netns {srv}"
    ));
    sh(&format!(
        "ip -n {srv} addr add 2001:db8:1::ffff/64 dev srv0 nodad && \
         ip -n {srv} addr add 2001:db8:ffff::1/128 dev lo && \
         ip -n {cli} link set {cif} up && ip -n {srv} link set srv0 up"
    ));
    wait_link_local(&cli, cif);
    wait_link_local(&srv, "srv0");
}

/// Waits until `dev` in namespace `ns` has a usable (not tentative) link-local
/// address: the kernel adds it once the link is up, which takes a moment, longer
/// on a loaded machine; a client started before then fails.
fn wait_link_local(ns: &str, dev: &str) {
    let end = Instant::now() + Duration::from_secs(30);
    loop {
        let out = Command::new("ip")
            .args(["-n", ns, "-6", "addr", "show", "dev", dev, "scope", "link"])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default();
        if out.contains("inet6 fe80") && !out.contains("tentative") {
            return;
        }
        assert!(
            Instant::now() < end,
            "no usable link-local address on {dev} in {ns} after 30 s:\n{out}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn start_dhcrelay(e: &mut Env) {
    let rly = e.ns("rly");
    e.spawn(
        &rly,
        &[
            "dhcrelay",
            "-6",
            "-d",
            "-q",
            "-I",
            "-s",
            "subscriber-0001",
            "--no-pid",
            "-l",
            "rly-dn",
            "-u",
            "2001:db8:ffff::1%rly-up",
        ],
        "relay.log",
    );
    std::thread::sleep(Duration::from_millis(300));
}

const CONFIG: &str = r#"
[server]
listen = ["[2001:db8:ffff::1]:547"]
interfaces = ["srv0"]
[store]
path = "@DB@"
[lifetimes]
preferred = 5
valid = 10
[options]
dns_servers = ["2001:db8::53"]
domain_list = ["example.net"]
[[links]]
name = "lan1"
prefixes = ["2001:db8:1::/64"]
interface = "srv0"
rapid_commit = true
[[links.pools]]
start = "2001:db8:1::1000"
end = "2001:db8:1::1fff"
[[links.pd_pools]]
prefix = "2001:db8:100::/40"
delegated_len = 56
[[links]]
name = "perf"
prefixes = ["::1/128", "2001:db8:5::/64"]
[[links.pools]]
start = "2001:db8:5::"
end = "2001:db8:5::ffff:ffff"
[[links.pd_pools]]
prefix = "2001:db8:8000::/33"
delegated_len = 56
[leasequery.tcp]
enabled = false
"#;

/// The first (address, prefix) granted in the server log.
fn granted(log: &str) -> Option<(String, String)> {
    for line in log.lines().filter(|l| l.contains(" transaction ")) {
        if !(line.contains("REQUEST") || line.contains("SOLICIT")) {
            continue;
        }
        let g = line.split("granted=").nth(1)?;
        let mut addr = None;
        let mut pfx = None;
        for part in g.split(", ") {
            let tok = part.split_whitespace().next().unwrap_or("");
            if tok.contains('/') {
                pfx.get_or_insert(tok.to_string());
            } else if tok.contains(':') {
                addr.get_or_insert(tok.to_string());
            }
        }
        if let (Some(a), Some(p)) = (addr, pfx) {
            return Some((a, p));
        }
    }
    None
}

fn has_tx(log: &str, msg: &str) -> bool {
    log.lines()
        .any(|l| l.contains(" transaction ") && l.contains(&format!("msg=\"{msg}\"")))
        || log
            .lines()
            .any(|l| l.contains(&format!("msg=\"{msg}\"")) && l.contains(" done"))
}

fn addr_on(e: &Env, cif: &str, addr: &str) -> bool {
    let out = Command::new("ip")
        .args(["-n", &e.ns("cli"), "-6", "addr", "show", "dev", cif])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    out.contains(&format!("inet6 {addr}/"))
}

/// Store checks shared by every client test.
fn check_bindings(bs: &[Binding], addr: &str, pfx: &str, relayed: Option<u32>) {
    let a: std::net::Ipv6Addr = addr.parse().expect("addr");
    let (p, plen) = pfx.split_once('/').expect("prefix");
    let p: std::net::Ipv6Addr = p.parse().expect("prefix");
    let b = bs
        .iter()
        .find(|b| b.leases.iter().any(|l| l.addr == a))
        .unwrap_or_else(|| panic!("no binding holds {addr}: {bs:#?}"));
    assert_eq!(b.client.link, "lan1");
    let na = b.leases.iter().find(|l| l.addr == a).expect("na");
    assert_eq!(na.kind, LeaseKind::Na);
    let pd = b
        .leases
        .iter()
        .find(|l| l.addr == p && l.prefix_len.to_string() == plen)
        .unwrap_or_else(|| panic!("binding lacks {pfx}: {b:#?}"));
    assert_eq!(pd.kind, LeaseKind::Pd);
    // Released by the client at the end.
    assert_eq!(na.state, LeaseState::Released, "{b:#?}");
    assert_eq!(pd.state, LeaseState::Released, "{b:#?}");
    match relayed {
        Some(ifindex) => {
            let r = b.client.relay.as_ref().expect("relay data recorded");
            // dhcrelay -I: a 4-octet little-endian interface number of its own numbering.
            let _ = ifindex;
            assert_eq!(r.interface_id.as_ref().map(Vec::len), Some(4), "{r:?}");
            assert_eq!(r.subscriber_id.as_deref(), Some(&b"subscriber-0001"[..]));
            assert_eq!(
                r.peer_address,
                "2001:db8:ffff::2".parse::<std::net::Ipv6Addr>().unwrap()
            );
            assert_eq!(
                b.client.link_address,
                "2001:db8:1::1".parse::<std::net::Ipv6Addr>().unwrap()
            );
            assert!(!r.chain.is_empty());
        }
        None => assert!(b.client.relay.is_none()),
    }
}

fn cif_name(e: &Env) -> String {
    // Unique per test: dhcpcd keys its control socket and lease file on the interface name.
    format!("c{}", &e.tag[4..]).chars().take(15).collect()
}

fn run_dhclient(relayed: bool) {
    if !prereq(&["dhclient", "dhcrelay", "ip"]) {
        return;
    }
    let mut e = Env::new();
    let cif = cif_name(&e);
    let ifindex = if relayed {
        Some(relayed_topology(&mut e, &cif))
    } else {
        direct_topology(&mut e, &cif);
        None
    };
    e.start_server(CONFIG);
    if relayed {
        start_dhcrelay(&mut e);
    }
    let lf = e.path("dhclient.leases").display().to_string();
    let pf = e.path("dhclient.pid").display().to_string();
    let cli = e.ns("cli");
    let c = e.spawn(
        &cli,
        &[
            "dhclient", "-6", "-v", "-1", "-d", "-N", "-P", "-lf", &lf, "-pf", &pf, &cif,
        ],
        "client.log",
    );
    e.wait(30, "dhclient lease", |e| {
        let l = e.read("dhclient.leases");
        l.contains("iaaddr") && l.contains("iaprefix")
    });
    let (addr, pfx) = granted(&e.read("server.log")).expect("grant in server log");
    let leases = e.read("dhclient.leases");
    assert!(leases.contains(&format!("iaaddr {addr} ")), "{leases}");
    assert!(leases.contains(&format!("iaprefix {pfx} ")), "{leases}");
    e.wait(10, "address installed", |e| addr_on(e, &cif, &addr));
    e.wait(20, "renew", |e| {
        let l = e.read("server.log");
        has_tx(&l, "RENEW") || has_tx(&l, "REBIND")
    });
    e.kill_child(c, "-KILL");
    // `dhclient -r` sends its Release once and exits without waiting for the Reply, so one
    // datagram lost on a loaded machine loses the test. RFC 8415 §18.2.7 has the client
    // retransmit; the test does that for it, from the same lease file each time.
    let saved = e.read("dhclient.leases");
    let mut tries = Vec::new();
    for _ in 0..3 {
        std::fs::write(&lf, &saved).expect("restore lease file");
        let out = Command::new("timeout")
            .args([
                "20", "ip", "netns", "exec", &cli, "dhclient", "-6", "-r", "-v", "-d", "-N", "-P",
                "-lf", &lf, "-pf", &pf, &cif,
            ])
            .output()
            .expect("dhclient -r");
        let log = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(out.status.success(), "{log}");
        assert!(
            log.contains("XMT: Release on"),
            "dhclient -r sent no Release:\n{log}"
        );
        tries.push(log);
        if e.poll(4, |e| has_tx(&e.read("server.log"), "RELEASE")) {
            break;
        }
    }
    if tries.len() > 1 {
        eprintln!("dhclient -r needed {} transmissions", tries.len());
    }
    let what = format!(
        "release\n--- dhclient -r ---\n{}\n--- relay ---\n{}",
        tries.join("\n"),
        e.read("relay.log")
    );
    e.wait(0, &what, |e| has_tx(&e.read("server.log"), "RELEASE"));
    let bs = e.stop_server();
    check_bindings(&bs, &addr, &pfx, ifindex);
}

fn run_dhcpcd(relayed: bool) {
    if !prereq(&["dhcpcd", "dhcrelay", "ip"]) {
        return;
    }
    let mut e = Env::new();
    let cif = cif_name(&e);
    e.cleanup.push(format!(
        "rm -f /var/lib/dhcpcd/{cif}* /run/dhcpcd/{cif}* /var/run/dhcpcd/{cif}*"
    ));
    let ifindex = if relayed {
        Some(relayed_topology(&mut e, &cif))
    } else {
        direct_topology(&mut e, &cif);
        None
    };
    e.start_server(CONFIG);
    if relayed {
        start_dhcrelay(&mut e);
    }
    let conf = e.path("dhcpcd.conf");
    std::fs::write(
        &conf,
        format!("ipv6only\nnoipv6rs\nscript /bin/true\ninterface {cif}\n  ia_na 1\n  ia_pd 2 lan0/0/64\n"),
    )
    .expect("conf");
    let conf = conf.display().to_string();
    let cli = e.ns("cli");
    e.spawn(
        &cli,
        &["dhcpcd", "-6", "-B", "-d", "-f", &conf, &cif],
        "client.log",
    );
    e.wait(30, "dhcpcd grant", |e| {
        granted(&e.read("server.log")).is_some()
    });
    let (addr, pfx) = granted(&e.read("server.log")).expect("grant");
    e.wait(15, "dhcpcd address installed", |e| addr_on(e, &cif, &addr));
    e.wait(10, "dhcpcd delegated prefix", |e| {
        let p = pfx.split('/').next().unwrap_or("-").to_string();
        e.read("client.log").contains(&p)
    });
    e.wait(20, "renew", |e| {
        let l = e.read("server.log");
        has_tx(&l, "RENEW") || has_tx(&l, "REBIND")
    });
    let out = Command::new("timeout")
        .args([
            "20", "ip", "netns", "exec", &cli, "dhcpcd", "-6", "-k", "-f", &conf, &cif,
        ])
        .output()
        .expect("dhcpcd -k");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    e.wait(10, "release", |e| has_tx(&e.read("server.log"), "RELEASE"));
    let bs = e.stop_server();
    check_bindings(&bs, &addr, &pfx, ifindex);
}

fn run_dhcp6c(relayed: bool) {
    if !prereq(&["dhcp6c", "dhcrelay", "ip"]) {
        return;
    }
    let mut e = Env::new();
    let cif = cif_name(&e);
    let ifindex = if relayed {
        Some(relayed_topology(&mut e, &cif))
    } else {
        direct_topology(&mut e, &cif);
        None
    };
    // dhcp6c raises a T1 below its minimum to 18 s: keep the lease valid past that.
    e.start_server(&CONFIG.replace("preferred = 5\nvalid = 10", "preferred = 40\nvalid = 80"));
    if relayed {
        start_dhcrelay(&mut e);
    }
    let conf = e.path("dhcp6c.conf");
    std::fs::write(
        &conf,
        format!(
            "interface {cif} {{\n  send ia-na 1;\n  send ia-pd 2;\n  send rapid-commit;\n}};\nid-assoc na 1 {{ }};\nid-assoc pd 2 {{ }};\n"
        ),
    )
    .expect("conf");
    let conf = conf.display().to_string();
    let pid = e.path("dhcp6c.pid").display().to_string();
    let cli = e.ns("cli");
    let c = e.spawn(
        &cli,
        &["dhcp6c", "-f", "-D", "-c", &conf, "-p", &pid, &cif],
        "client.log",
    );
    e.wait(30, "dhcp6c grant", |e| {
        granted(&e.read("server.log")).is_some()
    });
    let (addr, pfx) = granted(&e.read("server.log")).expect("grant");
    // Rapid commit: the grant came from a SOLICIT.
    assert!(
        has_tx(&e.read("server.log"), "SOLICIT"),
        "{}",
        e.read("server.log")
    );
    e.wait(15, "dhcp6c address installed", |e| addr_on(e, &cif, &addr));
    e.wait(10, "dhcp6c prefix", |e| {
        let p = pfx.split('/').next().unwrap_or("-").to_string();
        e.read("client.log").contains(&p)
    });
    // dhcp6c raises T1/T2 below its minimum to 18 s / 30 s.
    e.wait(40, "renew", |e| {
        let l = e.read("server.log");
        has_tx(&l, "RENEW") || has_tx(&l, "REBIND")
    });
    e.kill_child(c, "-TERM");
    e.wait(10, "release", |e| has_tx(&e.read("server.log"), "RELEASE"));
    let bs = e.stop_server();
    check_bindings(&bs, &addr, &pfx, ifindex);
}

#[test]
fn dhclient_relayed() {
    run_dhclient(true);
}

#[test]
fn dhclient_direct() {
    run_dhclient(false);
}

#[test]
fn dhcpcd_relayed() {
    run_dhcpcd(true);
}

#[test]
fn dhcpcd_direct() {
    run_dhcpcd(false);
}

#[test]
fn dhcp6c_relayed() {
    run_dhcp6c(true);
}

#[test]
fn dhcp6c_direct() {
    run_dhcp6c(false);
}

/// perfdhcp relayed 4-message exchanges with IA_NA + IA_PD: no drops, every exchange left a
/// binding; then our own relay adds Relay-ID and Remote-ID, which are recorded.
#[test]
fn perfdhcp_and_relay_ids() {
    if !prereq(&["perfdhcp", "ip"]) {
        return;
    }
    let mut e = Env::new();
    let srv = e.add_ns("srv");
    sh(&format!("ip -n {srv} addr add 2001:db8:ffff::1/128 dev lo"));
    // Leases valid long past the run: with CONFIG's 10 s, a slow run would see the
    // first ones reclaimed (every 10 s) before the store is checked below.
    e.start_server(
        &CONFIG
            .replace("interfaces = [\"srv0\"]", "")
            .replace("preferred = 5\nvalid = 10", "preferred = 300\nvalid = 600"),
    );
    let out = Command::new("timeout")
        .args([
            "60",
            "ip",
            "netns",
            "exec",
            &srv,
            "perfdhcp",
            "-6",
            "-A1",
            "-l",
            "::1",
            "-e",
            "address-and-prefix",
            "-r",
            "300",
            "-R",
            "1000000",
            "-p",
            "5",
            // A reply later than the drop time (default 1 s) counts as a drop, and
            // one still on its way when perfdhcp exits is lost; an fsync stall on a
            // loaded CI machine can delay replies that long. Allow 5 s for both:
            // a server that loses exchanges still fails.
            "-d",
            "5",
            "-d",
            "5",
            "-W",
            "5000000",
            "2001:db8:ffff::1",
        ])
        .output()
        .expect("perfdhcp");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "perfdhcp exit {:?}\n{text}",
        out.status.code()
    );
    let section = text
        .split("REQUEST-REPLY")
        .nth(1)
        .expect("REQUEST-REPLY stats");
    let field = |name: &str| -> u64 {
        section
            .lines()
            .find_map(|l| {
                l.trim()
                    .strip_prefix(name)
                    .map(|v| v.trim().parse().unwrap_or(u64::MAX))
            })
            .unwrap_or(u64::MAX)
    };
    let received = field("received packets:");
    assert_eq!(field("drops:"), 0, "{text}");
    assert!(received > 500 && received != u64::MAX, "{text}");

    // Test-side relay with Relay-ID (53) and Remote-ID (37).
    let probe = Command::new("ip")
        .args([
            "netns",
            "exec",
            &srv,
            BIN,
            "relay-probe",
            "[2001:db8:ffff::1]:547",
            "2001:db8:1::1",
            "5",
            "en:2495:0a0b0c0d",
            "3561",
            "probe-remote",
        ])
        .output()
        .expect("relay-probe");
    let ptext = String::from_utf8_lossy(&probe.stdout).into_owned();
    assert!(
        probe.status.success(),
        "{ptext}{}",
        String::from_utf8_lossy(&probe.stderr)
    );
    let probes: Vec<Vec<String>> = ptext
        .lines()
        .filter_map(|l| l.strip_prefix("granted "))
        .map(|l| l.split_whitespace().map(str::to_string).collect())
        .collect();
    assert_eq!(probes.len(), 5, "{ptext}");

    let log = e.read("server.log");
    let bs = e.stop_server();
    // Every REQUEST that was answered left a binding holding what was granted.
    let mut requests = 0u64;
    for line in log
        .lines()
        .filter(|l| l.contains(" transaction ") && l.contains("msg=\"REQUEST\""))
    {
        let duid = line
            .split("duid=")
            .nth(1)
            .and_then(|s| s.split_whitespace().next())
            .unwrap_or("");
        let g = line.split("granted=").nth(1).unwrap_or("");
        let addr: std::net::Ipv6Addr = g
            .split_whitespace()
            .next()
            .unwrap_or("")
            .parse()
            .expect("granted addr");
        let b = bs
            .iter()
            .find(|b| {
                b.leases
                    .iter()
                    .any(|l| l.addr == addr && l.state == LeaseState::Active)
            })
            .unwrap_or_else(|| panic!("no binding for {addr}"));
        let hex: String = b
            .client
            .duid
            .iter()
            .map(|x| format!("{x:02x}"))
            .collect::<Vec<_>>()
            .join(":");
        assert_eq!(hex, duid);
        assert!(b
            .leases
            .iter()
            .any(|l| l.kind == LeaseKind::Pd && l.state == LeaseState::Active));
        requests += 1;
    }
    // Our relay's 5 REQUESTs are in the log too.
    assert_eq!(requests, received + 5, "REQUEST lines vs perfdhcp replies");
    let rid = "en:2495:0a0b0c0d"
        .parse::<lq6_proto::Duid>()
        .unwrap()
        .into_bytes();
    for p in &probes {
        let addr: std::net::Ipv6Addr = p[1].parse().expect("probe addr");
        let b = bs
            .iter()
            .find(|b| b.leases.iter().any(|l| l.addr == addr))
            .expect("probe binding");
        assert_eq!(b.client.link, "lan1");
        let r = b.client.relay.as_ref().expect("relay data");
        assert_eq!(r.relay_ids, vec![rid.clone()]);
        let remote = r.remote_id.as_ref().expect("remote-id");
        assert_eq!(
            (remote.enterprise, remote.id.as_slice()),
            (3561, &b"probe-remote"[..])
        );
        assert_eq!(r.interface_id.as_deref(), Some(&b"probe-port"[..]));
    }
}
