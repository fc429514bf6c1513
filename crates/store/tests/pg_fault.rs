//! PostgreSQL stopped mid-operation: errors during the outage, nothing half-written, and the store
//! reconnects by itself when the server is back. Runs a private cluster (initdb in a temp dir, Unix
//! socket only), so it never disturbs the shared test database.

use std::net::Ipv6Addr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use lq6_store::postgres::{PgOptions, PgStore};
use lq6_store::{ClientUpdate, Lease, LeaseKind, LeaseState, LeaseStore};

fn pg_bindir() -> Option<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path().join("bin")))
        .filter(|p| p.join("pg_ctl").exists() && p.join("initdb").exists())
        .collect();
    v.sort_by_key(|p| {
        p.parent()
            .and_then(|x| x.file_name())
            .and_then(|n| n.to_str())
            .and_then(|n| n.parse::<u32>().ok())
    });
    v.pop()
}

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .map(|s| {
            s.lines()
                .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(1) == Some("0"))
        })
        .unwrap_or(false)
}

struct Cluster {
    bin: PathBuf,
    dir: tempfile::TempDir,
    root: bool,
}

impl Cluster {
    fn run(&self, prog: &str, args: &[&str]) -> std::process::Output {
        let exe = self.bin.join(prog);
        let mut cmd = if self.root {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(&exe);
            c
        } else {
            Command::new(&exe)
        };
        cmd.args(args)
            .current_dir(self.dir.path())
            .output()
            .expect("run postgres tool")
    }
    fn data(&self) -> String {
        self.dir.path().join("data").display().to_string()
    }
    fn sock(&self) -> &Path {
        self.dir.path()
    }
    fn start(&self) {
        let log = self.dir.path().join("log").display().to_string();
        let opts = format!(
            "-p 5499 -k {} -c listen_addresses='' -c fsync=on",
            self.sock().display()
        );
        let o = self.run(
            "pg_ctl",
            &[
                "-D",
                &self.data(),
                "-o",
                &opts,
                "-l",
                &log,
                "-w",
                "-t",
                "60",
                "start",
            ],
        );
        assert!(
            o.status.success(),
            "pg_ctl start: {}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
    }
    fn stop(&self, mode: &str) {
        let o = self.run(
            "pg_ctl",
            &["-D", &self.data(), "-m", mode, "-w", "-t", "60", "stop"],
        );
        assert!(
            o.status.success(),
            "pg_ctl stop: {}",
            String::from_utf8_lossy(&o.stderr)
        );
    }
    fn url(&self) -> String {
        format!(
            "host={} port=5499 user=postgres dbname=postgres",
            self.sock().display()
        )
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = self.run(
            "pg_ctl",
            &["-D", &self.data(), "-m", "immediate", "-w", "stop"],
        );
    }
}

fn setup() -> Option<Cluster> {
    let Some(bin) = pg_bindir() else {
        if std::env::var_os("CI").is_some() {
            panic!("PostgreSQL server binaries not found under /usr/lib/postgresql (run .ci/postgres.sh)");
        }
        eprintln!("skipped: no PostgreSQL server binaries");
        return None;
    };
    let root = is_root();
    let dir = tempfile::Builder::new()
        .prefix("lq6-pgfault-")
        .tempdir()
        .expect("tempdir");
    if root {
        let st = Command::new("chown")
            .args(["-R", "postgres:postgres"])
            .arg(dir.path())
            .status()
            .expect("chown");
        assert!(st.success());
    }
    let c = Cluster { bin, dir, root };
    let o = c.run(
        "initdb",
        &[
            "-D",
            &c.data(),
            "-A",
            "trust",
            "-U",
            "postgres",
            "--no-sync",
        ],
    );
    assert!(
        o.status.success(),
        "initdb: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    c.start();
    Some(c)
}

fn update(n: u32) -> ClientUpdate {
    let mut u = ClientUpdate::new(n.to_be_bytes().to_vec(), "lan", 1000);
    for k in 0..3u32 {
        u.leases.push(Lease {
            kind: LeaseKind::Na,
            iaid: k,
            addr: Ipv6Addr::from((0x2001_0db8u128 << 96) | ((n as u128) << 8) | k as u128),
            prefix_len: 128,
            preferred: 100,
            valid: 200,
            expires_at: 5000,
            state: LeaseState::Active,
        });
    }
    u
}

/// Polls `f` every 20 ms until it holds; fails naming `what` after 60 s.
async fn until(what: &str, f: impl Fn() -> bool) {
    let t0 = Instant::now();
    while !f() {
        assert!(t0.elapsed() < Duration::from_secs(60), "timed out: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_outage_mid_storm() {
    let Some(cluster) = setup() else { return };
    let opts = PgOptions {
        schema: Some("fault".into()),
        pool_size: 8,
        timeout: Duration::from_secs(2),
    };
    let store: Arc<dyn LeaseStore> = Arc::new(
        PgStore::connect_with(&cluster.url(), opts)
            .await
            .expect("connect"),
    );
    for n in 0..20 {
        store.commit(update(n)).await.expect("commit before outage");
    }

    // A storm of commits from 8 tasks; each records which ids were acknowledged and which failed.
    // The counters let the test move on when the storm has done something, not after a fixed
    // time that a loaded machine may not be given.
    let stop = Arc::new(AtomicBool::new(false));
    let (oks, fails) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let mut tasks = Vec::new();
    for w in 0..8u32 {
        let s = store.clone();
        let stop = stop.clone();
        let (oks, fails) = (oks.clone(), fails.clone());
        tasks.push(tokio::spawn(async move {
            let (mut ok, mut failed) = (Vec::new(), Vec::new());
            let mut n = 1000 + w;
            while !stop.load(Ordering::Relaxed) {
                match s.commit(update(n)).await {
                    Ok(_) => {
                        ok.push(n);
                        oks.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(_) => {
                        failed.push(n);
                        fails.fetch_add(1, Ordering::Relaxed);
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                }
                n += 8;
            }
            (ok, failed)
        }));
    }
    // Stop PostgreSQL mid-storm: once the storm is under way (and still running).
    until("the storm acknowledged 40 commits", || {
        oks.load(Ordering::Relaxed) >= 40
    })
    .await;
    let c2 = std::thread::spawn(move || {
        cluster.stop("immediate");
        cluster
    });
    let cluster = tokio::task::spawn_blocking(move || c2.join().expect("stop thread"))
        .await
        .unwrap();

    // During the outage, calls return errors (they do not hang).
    let t0 = Instant::now();
    assert!(
        store.commit(update(999_999)).await.is_err(),
        "commit must fail while PostgreSQL is down"
    );
    assert!(
        store.by_address(Ipv6Addr::LOCALHOST).await.is_err(),
        "reads fail too"
    );
    assert!(t0.elapsed() < Duration::from_secs(15));
    // The storm runs into the outage too before PostgreSQL comes back.
    until("the storm saw the outage", || {
        fails.load(Ordering::Relaxed) >= 1
    })
    .await;

    let cluster = tokio::task::spawn_blocking(move || {
        cluster.start();
        cluster
    })
    .await
    .unwrap();

    // The store reconnects by itself.
    let t0 = Instant::now();
    loop {
        match store.commit(update(500)).await {
            Ok(_) => break,
            Err(e) if t0.elapsed() < Duration::from_secs(20) => {
                eprintln!("waiting for reconnect: {e}");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => panic!("no reconnect after restart: {e}"),
        }
    }
    // And it recovers: more acknowledged commits after the restart.
    let before = oks.load(Ordering::Relaxed);
    until("the storm made progress after the restart", || {
        oks.load(Ordering::Relaxed) >= before + 8
    })
    .await;
    stop.store(true, Ordering::Relaxed);
    let (mut ok, mut failed) = (Vec::new(), Vec::new());
    for t in tasks {
        let (o, f) = t.await.unwrap();
        ok.extend(o);
        failed.extend(f);
    }
    assert!(!failed.is_empty(), "the storm saw the outage");
    assert!(ok.len() > 20, "the storm made progress ({} ok)", ok.len());

    // Every acknowledged commit is there in full; every failed one is all-or-nothing.
    for n in ok.iter().copied().chain(0..20) {
        let b = store.by_client(&n.to_be_bytes(), None).await.unwrap();
        assert_eq!(b.len(), 1, "acknowledged commit {n} lost");
        assert_eq!(b[0].leases.len(), 3);
    }
    let mut present_failed = 0;
    for n in failed.iter().copied().chain([999_999]) {
        let b = store.by_client(&n.to_be_bytes(), None).await.unwrap();
        if let Some(b) = b.first() {
            assert_eq!(b.leases.len(), 3, "half-written binding {n}");
            present_failed += 1;
        }
        for k in 0..3u32 {
            let a = Ipv6Addr::from((0x2001_0db8u128 << 96) | ((n as u128) << 8) | k as u128);
            let held = store.by_address(a).await.unwrap();
            assert_eq!(
                held.is_some(),
                !b.is_empty(),
                "address index consistent with binding {n}"
            );
        }
    }
    eprintln!(
        "{} acknowledged, {} failed ({} of those committed before the connection died)",
        ok.len(),
        failed.len(),
        present_failed
    );
    let st = store.stats().await.unwrap();
    assert_eq!(st.active_leases, st.bindings * 3);
    drop(cluster);
}
