//! SIGKILL a child process in the middle of a commit storm; every acknowledged write must survive and
//! the store must open cleanly.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use lq6_store::sqlite::SqliteStore;
use lq6_store::{LeaseStore, Query};

fn storm(path: &std::path::Path, start: u32, min_acks: usize) -> Vec<u32> {
    let mut child = Command::new(env!("CARGO_BIN_EXE_lq6-store-crashtest"))
        .arg(path)
        .arg(start.to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn crashtest child");
    let stdout = child.stdout.take().expect("stdout");
    let mut lines = BufReader::new(stdout).lines();
    let mut acks = Vec::new();
    let t0 = Instant::now();
    while acks.len() < min_acks && t0.elapsed() < Duration::from_secs(60) {
        match lines.next() {
            Some(Ok(l)) => acks.push(
                l.strip_prefix("ack ")
                    .and_then(|n| n.parse().ok())
                    .expect("ack line"),
            ),
            _ => break,
        }
    }
    // Kill mid-storm (Child::kill sends SIGKILL on Unix), then drain what was acknowledged before death.
    child.kill().expect("kill");
    for l in lines.map_while(|l| l.ok()) {
        if let Some(n) = l.strip_prefix("ack ").and_then(|n| n.parse().ok()) {
            acks.push(n);
        }
    }
    let status = child.wait().expect("wait");
    assert!(!status.success(), "child was killed");
    assert!(
        acks.len() >= min_acks.min(100),
        "child acknowledged only {} writes",
        acks.len()
    );
    acks
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_during_write_storm_loses_no_acknowledged_write() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("leases.db");
    let mut acked = Vec::new();
    // Two storms, so the second one also starts from a store that was killed.
    for (round, start) in [(0u32, 0u32), (1, 10_000_000)] {
        let acks = storm(&path, start, 1500 + round as usize * 500);
        acked.extend(acks);
        let s = SqliteStore::open(&path).expect("store opens cleanly after SIGKILL");
        for &n in &acked {
            let b = s.by_client(&n.to_be_bytes(), Some("storm")).await.unwrap();
            assert_eq!(b.len(), 1, "acknowledged write {n} lost");
            assert_eq!(b[0].leases.len(), 1);
            assert_eq!(b[0].leases[0].iaid, n);
        }
        let total = s
            .count(&Query::relay_id(b"crash-relay".to_vec(), None))
            .await
            .unwrap();
        assert!(total as usize >= acked.len());
        let st = s.stats().await.unwrap();
        assert_eq!(
            st.bindings,
            total + round as u64,
            "storm bindings plus one \"after\" binding per earlier round"
        );
        // A fresh write works.
        s.commit(lq6_store::ClientUpdate::new(
            vec![9, 9, round as u8],
            "after",
            1,
        ))
        .await
        .unwrap();
    }
}
