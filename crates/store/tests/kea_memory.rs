//! Importing a Kea CSV holds one small entry per lease, not the rows: peak memory stays far below
//! the size of what is imported. In its own test binary, so no other test moves the peak.

use lq6_store::kea::{import_csv, ImportOptions};
use lq6_store::sqlite::SqliteStore;
use lq6_store::{LeaseStore, Query};
use std::io::Write;

fn status_kib(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn import_memory_does_not_grow_with_the_file() {
    const N: u32 = 200_000;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("leases6.csv");
    {
        let mut f = std::io::BufWriter::new(std::fs::File::create(&path).unwrap());
        writeln!(f, "address,duid,valid_lifetime,expire,subnet_id,pref_lifetime,lease_type,iaid,prefix_len,fqdn_fwd,fqdn_rev,hostname,hwaddr,state,user_context,hwtype,hwaddr_source,pool_id").unwrap();
        for i in 0..N {
            let b = i.to_be_bytes();
            writeln!(
                f,
                "2001:db8:{:x}:{:x}::,00:03:00:01:02:{:02x}:{:02x}:{:02x}:{:02x},4000,1700004000,1,3000,2,1,64,0,0,,,0,{{ \"ISC\": {{ \"relays\": [ {{ \"hop\": 0&#x2c \"link\": \"2001:db8:1::1\"&#x2c \"peer\": \"fe80::2\"&#x2c \"options\": \"0x0035000a00030001aabbccddeeff0025000a0000118b6d6f64656d31\" }} ] }} }},0,0,0",
                i >> 16, i & 0xffff, b[0], b[1], b[2], b[3]
            )
            .unwrap();
        }
    }
    let file_kib = std::fs::metadata(&path).unwrap().len() / 1024;
    let store = SqliteStore::open(dir.path().join("l.db")).unwrap();
    // Reset the peak (VmHWM) to the current RSS.
    std::fs::write("/proc/self/clear_refs", "5").unwrap();
    let before = status_kib("VmRSS:");
    let f = std::io::BufReader::new(std::fs::File::open(&path).unwrap());
    let rep = import_csv(f, &store, &ImportOptions::default())
        .await
        .unwrap();
    let peak = status_kib("VmHWM:").saturating_sub(before);
    assert_eq!(rep.imported, u64::from(N));
    assert_eq!(
        store
            .count(&Query::relay_id(
                hex::decode("00030001aabbccddeeff").unwrap(),
                None
            ))
            .await
            .unwrap(),
        u64::from(N)
    );
    // Holding every parsed row costs about 1 KiB per row, four times this file (the previous
    // import peaked at +216 MiB here). Allowed: the store writer's page cache (64 MiB), one batch
    // of 10,000 rows and the map of last rows (about 64 octets per lease).
    eprintln!("file {file_kib} KiB, import peak +{peak} KiB");
    assert!(
        peak < 64 * 1024 + file_kib,
        "import peak grew by {peak} KiB for a {file_kib} KiB file"
    );
}
