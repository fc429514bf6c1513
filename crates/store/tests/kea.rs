//! Kea memfile lease6 CSV import, with a CSV written by hand in Kea's exact format.

use std::collections::HashMap;
use std::net::Ipv6Addr;
use std::sync::Arc;

use lq6_store::kea::{import_csv, ImportOptions};
use lq6_store::sqlite::SqliteStore;
use lq6_store::{LeaseKind, LeaseState, LeaseStore, Query, RemoteId, StoreError};

const HEADER: &str = "address,duid,valid_lifetime,expire,subnet_id,pref_lifetime,lease_type,iaid,prefix_len,fqdn_fwd,fqdn_rev,hostname,hwaddr,state,user_context,hwtype,hwaddr_source,pool_id";

// Outer relay (hop 1): RELAY_ID 00:03:00:01:11:22:33:44. Inner relay (hop 0): INTERFACE_ID "eth0",
// REMOTE_ID enterprise 4491 "modem1", RELAY_ID 00:03:00:01:aa:bb:cc:dd:ee:ff.
const ROWS: &str = r#"2001:db8:1::10,00:01:00:01:2b:3c:4d:5e:52:54:00:12:34:56,4000,1700004000,1,3000,0,1,128,0,0,,52:54:00:12:34:56,0,{ "ISC": { "relays": [ { "hop": 1&#x2c "link": "::"&#x2c "peer": "2001:db8:ffff::1"&#x2c "options": "0x003500080003000111223344" }&#x2c { "hop": 0&#x2c "link": "2001:db8:1::1"&#x2c "peer": "fe80::2"&#x2c "options": "0x00120004657468300025000a0000118b6d6f64656d310035000a00030001aabbccddeeff" } ] } },1,4,0
2001:db8:100::,00:01:00:01:2b:3c:4d:5e:52:54:00:00:00:02,4000,1700004000,2,3000,2,7,56,0,0,,,0,,0,0,0
2001:db8:zz::1,00:01:00:01:2b:3c:4d:5e:52:54:00:00:00:99,4000,1700004000,1,3000,0,1,128,0,0,,,0,,0,0,0
2001:db8:1::20,00:01:00:01:2b:3c:4d:5e:52:54:00:00:00:03,4000,1700004000,1,3000,0,1,128,0,0,host3.example.com,,0,,0,0,0
2001:db8:1::20,00:01:00:01:2b:3c:4d:5e:52:54:00:00:00:03,0,1700000500,1,0,0,1,128,0,0,host3.example.com,,0,,0,0,0
2001:db8:1::30,00:01:00:01:2b:3c:4d:5e:52:54:00:00:00:04,4000,1700004000,1,3000,0,1,128,0,0,,,0,,0,0,0
2001:db8:1::30,00:01:00:01:2b:3c:4d:5e:52:54:00:00:00:05,4000,1700005000,1,3000,0,1,128,0,0,,,0,,0,0,0
2001:db8:1::40,00:01:00:01:2b:3c:4d:5e:52:54:00:00:00:06,4000,1700004000,1,3000,0,5,128,0,0,,,0,{ "ISC": { "relay-info": [ { "hop": 0&#x2c "link": "2001:db8:1::1"&#x2c "peer": "fe80::3"&#x2c "options": ""&#x2c "remote-id": "0000118b6d6f64656d32"&#x2c "relay-id": "00030001deadbeef" } ] } },0,0,0
2001:db8:1::50,00:01:00:01:2b:3c:4d:5e:52:54:00:00:00:07,4000,1700004000,1,3000,0,1,128,0,0,,,1,,0,0,0
"#;

fn d(last: u8) -> Vec<u8> {
    vec![
        0, 1, 0, 1, 0x2b, 0x3c, 0x4d, 0x5e, 0x52, 0x54, 0, 0, 0, last,
    ]
}

fn a(s: &str) -> Ipv6Addr {
    s.parse().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn import_kea_csv() {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn LeaseStore> = Arc::new(SqliteStore::open(dir.path().join("l.db")).unwrap());
    let csv = format!("{HEADER}\n{ROWS}");
    let opts = ImportOptions {
        link_map: HashMap::from([(2, "lan2".to_string())]),
        ..Default::default()
    };
    let rep = import_csv(std::io::Cursor::new(csv.as_bytes()), store.as_ref(), &opts)
        .await
        .unwrap();
    assert_eq!(rep.rows, 9);
    assert_eq!(rep.superseded, 2);
    assert_eq!(rep.imported, 6);
    assert_eq!(rep.errors.len(), 1, "{:?}", rep.errors);
    assert_eq!(rep.errors[0].0, 4, "line number of the bad row");
    assert!(rep.errors[0].1.contains("address"));

    // Row 1: relayed NA with the relay chain rebuilt.
    let b = store
        .by_address(a("2001:db8:1::10"))
        .await
        .unwrap()
        .expect("imported");
    assert_eq!(
        b.client.duid,
        vec![0, 1, 0, 1, 0x2b, 0x3c, 0x4d, 0x5e, 0x52, 0x54, 0, 0x12, 0x34, 0x56]
    );
    assert_eq!(b.client.link, "subnet-1");
    assert_eq!(b.client.link_address, a("2001:db8:1::1"));
    assert_eq!(b.client.cltt, 1_700_000_000);
    let l = &b.leases[0];
    assert_eq!(
        (
            l.kind,
            l.iaid,
            l.prefix_len,
            l.preferred,
            l.valid,
            l.expires_at
        ),
        (LeaseKind::Na, 1, 128, 3000, 4000, 1_700_004_000)
    );
    let r = b.client.relay.as_ref().expect("relay data");
    assert_eq!(r.peer_address, a("2001:db8:ffff::1"));
    assert_eq!(
        r.relay_ids,
        vec![
            hex::decode("00030001aabbccddeeff").unwrap(),
            hex::decode("0003000111223344").unwrap()
        ]
    );
    assert_eq!(
        r.remote_id,
        Some(RemoteId {
            enterprise: 4491,
            id: b"modem1".to_vec()
        })
    );
    assert_eq!(r.interface_id.as_deref(), Some(&b"eth0"[..]));
    assert_eq!(
        r.client_linklayer,
        Some((1, vec![0x52, 0x54, 0, 0x12, 0x34, 0x56]))
    );
    let inner_opts =
        hex::decode("00120004657468300025000a0000118b6d6f64656d310035000a00030001aabbccddeeff")
            .unwrap();
    let mut inner = vec![12, 0];
    inner.extend_from_slice(&a("2001:db8:1::1").octets());
    inner.extend_from_slice(&a("fe80::2").octets());
    inner.extend_from_slice(&inner_opts);
    let mut outer = vec![12, 1];
    outer.extend_from_slice(&a("::").octets());
    outer.extend_from_slice(&a("2001:db8:ffff::1").octets());
    outer.extend_from_slice(&hex::decode("003500080003000111223344").unwrap());
    outer.extend_from_slice(&[0, 9]);
    outer.extend_from_slice(&(inner.len() as u16).to_be_bytes());
    outer.extend_from_slice(&inner);
    assert_eq!(
        r.chain, outer,
        "RELAY-FORW chain, outermost first, without the client message"
    );
    // Queryable by either Relay-ID and by Remote-ID.
    assert_eq!(
        store
            .count(&Query::relay_id(
                hex::decode("0003000111223344").unwrap(),
                None
            ))
            .await
            .unwrap(),
        1
    );
    assert_eq!(
        store
            .count(&Query::remote_id(
                4491,
                b"modem1".to_vec(),
                Some("subnet-1")
            ))
            .await
            .unwrap(),
        1
    );

    // Row 2: PD on a mapped link, found by an address inside the prefix.
    let b = store
        .by_address(a("2001:db8:100:42::1"))
        .await
        .unwrap()
        .expect("prefix");
    assert_eq!(b.client.link, "lan2");
    assert_eq!(
        (b.leases[0].kind, b.leases[0].prefix_len, b.leases[0].iaid),
        (LeaseKind::Pd, 56, 7)
    );
    assert!(b.client.relay.is_none());

    // Rows 5/6: the later release wins.
    assert!(store
        .by_address(a("2001:db8:1::20"))
        .await
        .unwrap()
        .is_none());
    let v = store.by_client(&d(3), None).await.unwrap();
    assert_eq!(v[0].leases[0].state, LeaseState::Released);

    // Rows 7/8: the address moved to client 5.
    assert_eq!(
        store
            .by_address(a("2001:db8:1::30"))
            .await
            .unwrap()
            .unwrap()
            .client
            .duid,
        d(5)
    );

    // Row 9 (Kea 3 relay-info with relay-id / remote-id keys).
    let b = store
        .by_address(a("2001:db8:1::40"))
        .await
        .unwrap()
        .unwrap();
    let r = b.client.relay.unwrap();
    assert_eq!(r.relay_ids, vec![hex::decode("00030001deadbeef").unwrap()]);
    assert_eq!(
        r.remote_id,
        Some(RemoteId {
            enterprise: 4491,
            id: b"modem2".to_vec()
        })
    );
    assert_eq!(r.peer_address, a("fe80::3"));

    // Row 10: declined.
    let v = store.by_client(&d(7), None).await.unwrap();
    assert_eq!(v[0].leases[0].state, LeaseState::Declined);
    assert!(store
        .by_address(a("2001:db8:1::50"))
        .await
        .unwrap()
        .is_none());
}

#[tokio::test]
async fn strict_stops_at_first_bad_row() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path().join("l.db")).unwrap();
    let csv = format!("{HEADER}\n{ROWS}");
    let opts = ImportOptions {
        strict: true,
        ..Default::default()
    };
    let e = import_csv(std::io::Cursor::new(csv.as_bytes()), &store, &opts)
        .await
        .expect_err("strict");
    assert!(
        matches!(&e, StoreError::Invalid(m) if m.starts_with("line 4:")),
        "{e}"
    );
    assert_eq!(store.stats().await.unwrap().bindings, 0, "nothing imported");
}

#[tokio::test]
async fn not_a_kea_file() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path().join("l.db")).unwrap();
    let e = import_csv(
        std::io::Cursor::new(&b"name,value\nx,1\n"[..]),
        &store,
        &ImportOptions::default(),
    )
    .await
    .expect_err("header");
    assert!(e.to_string().contains("line 1"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_import_is_fast() {
    // 1,000,000 rows in the full benchmark; LQ6_KEA_N scales this test (default 20,000 in debug builds).
    let n: u64 = std::env::var("LQ6_KEA_N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20_000);
    let mut csv = String::with_capacity(n as usize * 300);
    csv.push_str(HEADER);
    csv.push('\n');
    for i in 0..n {
        csv.push_str(&format!(
            "2001:db8:{:x}:{:x}::1,00:01:00:01:2b:3c:4d:5e:{:02x}:{:02x}:{:02x}:{:02x},4000,1700004000,1,3000,0,1,128,0,0,,,0,{{ \"ISC\": {{ \"relays\": [ {{ \"hop\": 0&#x2c \"link\": \"2001:db8:1::1\"&#x2c \"peer\": \"fe80::2\"&#x2c \"options\": \"0x0035000a00030001aabbccddeeff\" }} ] }} }},0,0,0\n",
            i >> 16, i & 0xffff, (i >> 24) as u8, (i >> 16) as u8, (i >> 8) as u8, i as u8
        ));
    }
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path().join("l.db")).unwrap();
    let t0 = std::time::Instant::now();
    let rep = import_csv(
        std::io::Cursor::new(csv.as_bytes()),
        &store,
        &ImportOptions::default(),
    )
    .await
    .unwrap();
    let dt = t0.elapsed();
    eprintln!("imported {n} Kea rows in {dt:?}");
    assert_eq!(rep.imported, n);
    assert!(rep.errors.is_empty());
    assert_eq!(
        store
            .count(&Query::relay_id(
                hex::decode("00030001aabbccddeeff").unwrap(),
                None
            ))
            .await
            .unwrap(),
        n
    );
}
