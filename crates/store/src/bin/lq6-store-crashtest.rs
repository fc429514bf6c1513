//! Helper for the crash test: commits bindings in a storm from 16 tasks and prints `ack <n>` on stdout
//! after each commit returned. The test SIGKILLs it and checks that every acknowledged write survived.
//!
//! Usage: `lq6-store-crashtest STORE_PATH [START]`

use std::io::Write;
use std::net::Ipv6Addr;
use std::sync::Arc;

use lq6_store::sqlite::SqliteStore;
use lq6_store::{ClientUpdate, Lease, LeaseKind, LeaseState, LeaseStore, RelayInfo};

fn update(n: u32) -> ClientUpdate {
    let mut u = ClientUpdate::new(n.to_be_bytes().to_vec(), "storm", 1000);
    u.relay = Some(RelayInfo {
        peer_address: Ipv6Addr::LOCALHOST,
        chain: vec![12; 40],
        relay_ids: vec![b"crash-relay".to_vec()],
        remote_id: None,
        subscriber_id: None,
        interface_id: None,
        client_linklayer: None,
    });
    u.leases.push(Lease {
        kind: LeaseKind::Na,
        iaid: n,
        addr: Ipv6Addr::from(0x2001_0db8_0000_0000_0000_0000_0000_0000u128 + n as u128),
        prefix_len: 128,
        preferred: 100,
        valid: 200,
        expires_at: 1_000_000 + n as u64,
        state: LeaseState::Active,
    });
    u
}

#[tokio::main]
async fn main() {
    let mut args = std::env::args().skip(1);
    let Some(path) = args.next() else {
        eprintln!("usage: lq6-store-crashtest STORE_PATH [START]");
        std::process::exit(2);
    };
    let start: u32 = args.next().and_then(|s| s.parse().ok()).unwrap_or(0);
    let store = match SqliteStore::open(&path) {
        Ok(s) => Arc::new(s),
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(1);
        }
    };
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<u32>();
    for w in 0..16u32 {
        let store = store.clone();
        let tx = tx.clone();
        tokio::spawn(async move {
            let mut n = start + w;
            loop {
                match store.commit(update(n)).await {
                    Ok(_) => {
                        if tx.send(n).is_err() {
                            return;
                        }
                    }
                    Err(e) => {
                        eprintln!("commit {n}: {e}");
                        std::process::exit(1);
                    }
                }
                n += 16;
            }
        });
    }
    drop(tx);
    let mut out = std::io::stdout().lock();
    while let Some(n) = rx.recv().await {
        // Printed only after the commit returned, i.e. after the fsync.
        if writeln!(out, "ack {n}").and_then(|_| out.flush()).is_err() {
            return;
        }
    }
}
