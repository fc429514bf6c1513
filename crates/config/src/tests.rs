use super::*;

const GOOD: &str = r#"
[server]
duid = "ll:1:02:00:00:00:00:aa"
listen = ["[2001:db8:ffff::1]:547"]
interfaces = ["eth1"]

[store]
path = "/var/lib/lq6/leases.db"

[[links]]
name = "lan1"
prefixes = ["2001:db8:1::/64"]
rapid_commit = true
[[links.pools]]
start = "2001:db8:1::100"
end = "2001:db8:1::1ff"
[[links.pd_pools]]
prefix = "2001:db8:100::/40"
delegated_len = 56

[[reservations]]
duid = "00:03:00:01:02:00:00:00:00:01"
addresses = ["2001:db8:1::42"]
"#;

#[test]
fn good_config_parses() {
    let c = Config::from_toml_str(GOOD, "good.toml").expect("valid");
    assert_eq!(c.links.len(), 1);
    assert_eq!(c.links[0].pd_pools[0].delegated_len, 56);
    assert!(c.server_duid().is_some());
    assert_eq!(c.lifetimes, Lifetimes::default());
    assert_eq!(c.store.state_dir(), Some(PathBuf::from("/var/lib/lq6")));
}

fn err(text: &str) -> (usize, String, String) {
    match Config::from_toml_str(text, "x.toml") {
        Err(ConfigError::Invalid {
            line,
            key,
            msg,
            file,
            ..
        }) => {
            assert_eq!(file, "x.toml");
            (line, key, msg)
        }
        other => panic!("expected an error, got {other:?}"),
    }
}

#[test]
fn unknown_key_names_line_and_key() {
    let t = GOOD.replace("rapid_commit = true", "rapid_comit = true");
    let (line, key, msg) = err(&t);
    assert_eq!(line, 13);
    assert_eq!(key, "links[0].rapid_comit");
    assert!(msg.contains("unknown field"), "{msg}");
}

#[test]
fn bad_type_names_line_and_key() {
    let t = GOOD.replace("delegated_len = 56", "delegated_len = \"x\"");
    let (line, key, _) = err(&t);
    assert_eq!(line, 19);
    assert_eq!(key, "links[0].pd_pools[0].delegated_len");
}

#[test]
fn bad_address_names_key() {
    let t = GOOD.replace("end = \"2001:db8:1::1ff\"", "end = \"2001:db8:1::zz\"");
    let (line, key, _) = err(&t);
    assert_eq!((line, key.as_str()), (16, "links[0].pools[0].end"));
}

#[test]
fn semantic_errors_name_line_and_key() {
    let t = GOOD.replace("delegated_len = 56", "delegated_len = 32");
    let (line, key, _) = err(&t);
    assert_eq!(
        (line, key.as_str()),
        (19, "links[0].pd_pools[0].delegated_len")
    );
    let t = GOOD.replace("end = \"2001:db8:1::1ff\"", "end = \"2001:db8:2::1ff\"");
    let (line, key, _) = err(&t);
    assert_eq!((line, key.as_str()), (15, "links[0].pools[0].start"));
    let t = GOOD.replace("duid = \"ll:1:02:00:00:00:00:aa\"", "duid = \"zz\"");
    let (line, key, _) = err(&t);
    assert_eq!((line, key.as_str()), (3, "server.duid"));
    let t = GOOD.replace("[store]\npath = \"/var/lib/lq6/leases.db\"", "");
    let (_, key, _) = err(&t);
    assert_eq!(key, "store");
    let t = GOOD.replace(
        "path = \"/var/lib/lq6/leases.db\"",
        "postgres = \"host=db\"\nmmap_mib = 512",
    );
    let (line, key, msg) = err(&t);
    assert_eq!((line, key.as_str()), (9, "store.mmap_mib"), "{msg}");
}

#[test]
fn syntax_error_has_line() {
    let (line, _, _) = err("[server]\nlisten = [\n");
    assert!(line >= 2);
}

#[test]
fn demo_is_valid_and_on_loopback() {
    let toml = DEMO_TOML.replace("@STATE@", "/tmp/x");
    let c = Config::from_toml_str(&toml, "<demo>").expect("demo parses");
    assert_eq!(
        c.server.listen,
        vec!["[::1]:547".parse::<SocketAddr>().unwrap()]
    );
    assert_eq!(
        c.leasequery.tcp.listen,
        vec!["[::1]:547".parse::<SocketAddr>().unwrap()]
    );
    assert!(demo().store.path.is_some());
}

#[test]
fn from_file_names_file() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("c.toml");
    std::fs::write(&p, "[server]\nbogus = 1\n[store]\npath = \"x\"\n").unwrap();
    let e = Config::from_file(&p).unwrap_err().to_string();
    assert!(
        e.starts_with(&format!("{}:2:1: key `server.bogus`", p.display())),
        "{e}"
    );
    let e = Config::from_file(&d.path().join("missing.toml"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("missing.toml"), "{e}");
}

#[test]
fn address_index_is_on_unless_turned_off() {
    let c = Config::from_toml_str(GOOD, "good.toml").expect("parses");
    assert!(c.store.address_index);
    let t = GOOD.replace(
        "path = \"/var/lib/lq6/leases.db\"",
        "path = \"/var/lib/lq6/leases.db\"\naddress_index = false",
    );
    let c = Config::from_toml_str(&t, "good.toml").expect("parses");
    assert!(!c.store.address_index);
    let t = GOOD.replace(
        "path = \"/var/lib/lq6/leases.db\"",
        "path = \"/var/lib/lq6/leases.db\"\naddress_index = \"yes\"",
    );
    let (line, key, _) = err(&t);
    assert_eq!((line, key.as_str()), (9, "store.address_index"));
}
