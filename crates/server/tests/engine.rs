//! Engine tests on encoded bytes: every message type, relays, discard rules, statuses, T1/T2,
//! rapid commit, recorded relay data, restart, and a SOLICIT flood.

use lq6_config::Config;
use lq6_proto::{
    ClientLinkLayer, ClientMessage, DhcpOption, Duid, Ia, IaAddr, IaPrefix, Message, MessageType,
    OptionsExt, RelayMessage, RemoteId, Status,
};
use lq6_server::{Engine, EngineOptions, LinkTable, Outgoing, RecvMeta};
use lq6_store::{sqlite::SqliteStore, LeaseState, LeaseStore};
use std::net::{Ipv6Addr, SocketAddrV6};
use std::sync::atomic::Ordering;
use std::sync::Arc;

const CFG: &str = r#"
[server]
duid = "ll:1:02:00:00:00:00:ff"
preference = 7
[store]
path = "unused"
[lifetimes]
preferred = 1000
valid = 2000
[options]
dns_servers = ["2001:db8::53"]
domain_list = ["example.net"]
[[links]]
name = "lan1"
prefixes = ["2001:db8:1::/64"]
interface = "veth-test"
[[links.pools]]
start = "2001:db8:1::100"
end = "2001:db8:1::103"
[[links.pd_pools]]
prefix = "2001:db8:100::/54"
delegated_len = 56
[[links]]
name = "lan2"
prefixes = ["2001:db8:2::/64"]
rapid_commit = true
[[links.pools]]
start = "2001:db8:2::100"
end = "2001:db8:2::1ff"
[[reservations]]
duid = "ll:1:02:00:00:00:99:99"
addresses = ["2001:db8:2::42"]
"#;

const NOW: u64 = 1_800_000_000;

fn server_duid() -> Duid {
    "ll:1:02:00:00:00:00:ff".parse().unwrap()
}

struct H {
    _dir: tempfile::TempDir,
    store: Arc<SqliteStore>,
    engine: Engine,
    cfg: Config,
}

async fn harness_in(dir: tempfile::TempDir) -> H {
    let cfg = Config::from_toml_str(CFG, "test.toml").unwrap();
    let store = Arc::new(SqliteStore::open(dir.path().join("l.db")).unwrap());
    let links = Arc::new(LinkTable::from_config(&cfg));
    let mut opts = EngineOptions::from_config(&cfg);
    opts.log_transactions = false;
    let engine = Engine::new(&cfg, links, store.clone(), server_duid(), None, opts);
    engine.load(NOW).await.unwrap();
    H {
        _dir: dir,
        store,
        engine,
        cfg,
    }
}

async fn harness() -> H {
    harness_in(tempfile::tempdir().unwrap()).await
}

fn duid(n: u32) -> Duid {
    Duid::ll(
        1,
        &[
            2,
            0,
            (n >> 24) as u8,
            (n >> 16) as u8,
            (n >> 8) as u8,
            n as u8,
        ],
    )
}

fn relay_src() -> SocketAddrV6 {
    SocketAddrV6::new("2001:db8:ffff::2".parse().unwrap(), 547, 0, 0)
}

fn relayed_meta() -> RecvMeta {
    RecvMeta {
        src: relay_src(),
        iface: None,
        multicast: false,
    }
}

fn direct_meta(multicast: bool) -> RecvMeta {
    RecvMeta {
        src: SocketAddrV6::new("fe80::1234".parse().unwrap(), 546, 0, 3),
        iface: Some("veth-test".into()),
        multicast,
    }
}

fn ia_na(iaid: u32, addrs: &[&str]) -> DhcpOption {
    DhcpOption::IaNa(Ia {
        iaid,
        t1: 0,
        t2: 0,
        options: addrs
            .iter()
            .map(|a| {
                DhcpOption::IaAddr(IaAddr {
                    addr: a.parse().unwrap(),
                    preferred: 0,
                    valid: 0,
                    options: vec![],
                })
            })
            .collect(),
    })
}

fn ia_pd(iaid: u32, prefixes: &[(&str, u8)]) -> DhcpOption {
    DhcpOption::IaPd(Ia {
        iaid,
        t1: 0,
        t2: 0,
        options: prefixes
            .iter()
            .map(|(a, l)| {
                DhcpOption::IaPrefix(IaPrefix {
                    preferred: 0,
                    valid: 0,
                    prefix_len: *l,
                    prefix: a.parse().unwrap(),
                    options: vec![],
                })
            })
            .collect(),
    })
}

fn msg(t: MessageType, xid: u32, opts: Vec<DhcpOption>) -> Message {
    let mut m = ClientMessage::new(t, xid);
    m.options = opts;
    Message::Client(m)
}

fn relay(link: &str, peer: &str, hop: u8, mut opts: Vec<DhcpOption>, inner: Message) -> Message {
    opts.push(DhcpOption::RelayMsg(Box::new(inner)));
    Message::Relay(RelayMessage {
        msg_type: MessageType::RELAY_FORW,
        hop_count: hop,
        link_address: link.parse().unwrap(),
        peer_address: peer.parse().unwrap(),
        options: opts,
    })
}

fn relay1(inner: Message) -> Message {
    relay(
        "2001:db8:1::1",
        "fe80::1",
        0,
        vec![DhcpOption::InterfaceId(b"eth0".to_vec())],
        inner,
    )
}

impl H {
    async fn send(&self, m: &Message, meta: &RecvMeta) -> Option<Outgoing> {
        self.engine.handle(&m.to_vec().unwrap(), meta, NOW).await
    }
    async fn send_at(&self, m: &Message, meta: &RecvMeta, now: u64) -> Option<Outgoing> {
        self.engine.handle(&m.to_vec().unwrap(), meta, now).await
    }
    /// Sends relayed and returns the inner client reply.
    async fn relayed(&self, m: Message) -> Option<ClientMessage> {
        let out = self.send(&relay1(m), &relayed_meta()).await?;
        assert_eq!(out.dst, relay_src());
        inner_reply(&out)
    }
    fn counter(&self, name: &str) -> u64 {
        self.engine
            .counters()
            .snapshot()
            .into_iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v)
            .unwrap()
    }
}

fn opt(o: &[DhcpOption], c: u16) -> Option<&DhcpOption> {
    OptionsExt::get(o, c)
}

fn inner_reply(out: &Outgoing) -> Option<ClientMessage> {
    let m = Message::decode(&out.bytes).unwrap();
    match m.unwrap_relays().1? {
        Message::Client(c) => Some(c.clone()),
        _ => None,
    }
}

fn ias(m: &ClientMessage, code: u16) -> Vec<Ia> {
    m.options
        .iter()
        .filter_map(|o| match o {
            DhcpOption::IaNa(ia) if code == 3 => Some(ia.clone()),
            DhcpOption::IaPd(ia) if code == 25 => Some(ia.clone()),
            _ => None,
        })
        .collect()
}

fn addrs(ia: &Ia) -> Vec<(Ipv6Addr, u32, u32)> {
    ia.options
        .iter()
        .filter_map(|o| match o {
            DhcpOption::IaAddr(a) => Some((a.addr, a.preferred, a.valid)),
            DhcpOption::IaPrefix(p) => Some((p.prefix, p.preferred, p.valid)),
            _ => None,
        })
        .collect()
}

fn ia_status(ia: &Ia) -> Option<Status> {
    ia.options.as_slice().status().map(|s| s.status)
}

fn base(d: &Duid) -> Vec<DhcpOption> {
    vec![DhcpOption::ClientId(d.clone()), DhcpOption::ElapsedTime(0)]
}

fn with_server(d: &Duid) -> Vec<DhcpOption> {
    let mut v = base(d);
    v.push(DhcpOption::ServerId(server_duid()));
    v
}

/// SOLICIT → ADVERTISE → REQUEST → REPLY for one IA_NA + one IA_PD; returns (addr, prefix).
async fn obtain(h: &H, d: &Duid) -> (Ipv6Addr, Ipv6Addr) {
    let mut o = base(d);
    o.push(ia_na(1, &[]));
    o.push(ia_pd(2, &[]));
    let adv = h.relayed(msg(MessageType::SOLICIT, 1, o)).await.unwrap();
    assert_eq!(adv.msg_type, MessageType::ADVERTISE);
    let mut o = with_server(d);
    o.push(ia_na(1, &[]));
    o.push(ia_pd(2, &[]));
    let rep = h.relayed(msg(MessageType::REQUEST, 2, o)).await.unwrap();
    assert_eq!(rep.msg_type, MessageType::REPLY);
    let a = addrs(&ias(&rep, 3)[0])[0].0;
    let p = addrs(&ias(&rep, 25)[0])[0].0;
    (a, p)
}

#[tokio::test]
async fn solicit_advertise_has_preference_ids_and_no_store_state() {
    let h = harness().await;
    let d = duid(1);
    let mut o = base(&d);
    o.push(ia_na(1, &[]));
    o.push(ia_pd(2, &[]));
    o.push(DhcpOption::Oro(vec![23, 24]));
    let adv = h
        .relayed(msg(MessageType::SOLICIT, 0xabcdef, o))
        .await
        .unwrap();
    assert_eq!(adv.msg_type, MessageType::ADVERTISE);
    assert_eq!(adv.xid, 0xabcdef);
    let opts = adv.options.as_slice();
    assert_eq!(opts.client_id(), Some(&d));
    assert_eq!(opts.server_id(), Some(&server_duid()));
    assert!(matches!(opt(opts, 7), Some(DhcpOption::Preference(7))));
    assert!(opt(opts, 23).is_some() && opt(opts, 24).is_some());
    assert_eq!(
        addrs(&ias(&adv, 3)[0])[0].0,
        "2001:db8:1::100".parse::<Ipv6Addr>().unwrap()
    );
    assert_eq!(
        addrs(&ias(&adv, 25)[0])[0].0,
        "2001:db8:100::".parse::<Ipv6Addr>().unwrap()
    );
    assert_eq!(h.store.stats().await.unwrap().bindings, 0);
}

/// ADVERTISE reserves nothing, so two clients soliciting at once are offered the same free
/// address and prefix. Both then REQUEST what they were offered: the first gets it, the second
/// other ones, and the store holds each exactly once.
#[tokio::test]
async fn two_clients_requesting_one_advertised_address_get_different_ones() {
    let h = harness().await;
    let (d1, d2) = (duid(31), duid(32));
    let mut offered = Vec::new();
    for d in [&d1, &d2] {
        let mut o = base(d);
        o.extend([ia_na(1, &[]), ia_pd(2, &[])]);
        let adv = h.relayed(msg(MessageType::SOLICIT, 1, o)).await.unwrap();
        offered.push((addrs(&ias(&adv, 3)[0])[0].0, addrs(&ias(&adv, 25)[0])[0].0));
    }
    assert_eq!(offered[0], offered[1], "both offered the same free leases");
    let (a, p) = offered[0];
    let mut got = Vec::new();
    for d in [&d1, &d2] {
        let mut o = with_server(d);
        o.extend([
            ia_na(1, &[&a.to_string()]),
            ia_pd(2, &[(&p.to_string(), 56)]),
        ]);
        let rep = h.relayed(msg(MessageType::REQUEST, 2, o)).await.unwrap();
        let na = addrs(&ias(&rep, 3)[0]);
        let pd = addrs(&ias(&rep, 25)[0]);
        assert_eq!((na.len(), pd.len()), (1, 1), "{rep:?}");
        got.push((na[0].0, pd[0].0));
    }
    assert_eq!(got[0], (a, p));
    assert_ne!(got[1].0, a);
    assert_ne!(got[1].1, p);
    for (d, (addr, pfx)) in [&d1, &d2].into_iter().zip(&got) {
        for x in [addr, pfx] {
            let b = h.store.by_address(*x).await.unwrap().expect("stored");
            assert_eq!(b.client.duid, d.as_bytes(), "{x} belongs to its requester");
        }
    }
}

#[tokio::test]
async fn request_commits_before_reply_with_t1_t2() {
    let h = harness().await;
    let d = duid(2);
    let (a, p) = obtain(&h, &d).await;
    let b = h.store.by_address(a).await.unwrap().expect("committed");
    assert_eq!(b.client.duid, d.as_bytes());
    assert_eq!(b.client.link, "lan1");
    assert_eq!(b.client.cltt, NOW);
    assert!(h.store.by_address(p).await.unwrap().is_some());
    // T1 = 0.5, T2 = 0.8 of the shortest preferred lifetime, the same in every IA.
    let mut o = with_server(&d);
    o.push(ia_na(1, &[]));
    o.push(ia_pd(2, &[]));
    let rep = h.relayed(msg(MessageType::REQUEST, 3, o)).await.unwrap();
    for ia in ias(&rep, 3).iter().chain(ias(&rep, 25).iter()) {
        assert_eq!((ia.t1, ia.t2), (500, 800));
        assert_eq!(addrs(ia)[0].1, 1000);
        assert_eq!(addrs(ia)[0].2, 2000);
    }
    // The same client gets the same leases again.
    assert_eq!(addrs(&ias(&rep, 3)[0])[0].0, a);
}

#[tokio::test]
async fn several_ias_per_message() {
    let h = harness().await;
    let d = duid(3);
    let mut o = with_server(&d);
    o.extend([ia_na(1, &[]), ia_na(2, &[]), ia_pd(3, &[]), ia_pd(4, &[])]);
    let rep = h.relayed(msg(MessageType::REQUEST, 1, o)).await.unwrap();
    let na = ias(&rep, 3);
    let pd = ias(&rep, 25);
    assert_eq!((na.len(), pd.len()), (2, 2));
    assert_ne!(addrs(&na[0])[0].0, addrs(&na[1])[0].0);
    assert_ne!(addrs(&pd[0])[0].0, addrs(&pd[1])[0].0);
    let b = h.store.by_client(d.as_bytes(), None).await.unwrap();
    assert_eq!(b[0].leases.len(), 4);
}

#[tokio::test]
async fn rapid_commit_per_link() {
    let h = harness().await;
    let d = duid(4);
    let mut o = base(&d);
    o.push(ia_na(1, &[]));
    o.push(DhcpOption::RapidCommit);
    // lan2 has rapid commit.
    let m = relay(
        "2001:db8:2::1",
        "fe80::1",
        0,
        vec![],
        msg(MessageType::SOLICIT, 5, o.clone()),
    );
    let rep = inner_reply(&h.send(&m, &relayed_meta()).await.unwrap()).unwrap();
    assert_eq!(rep.msg_type, MessageType::REPLY);
    assert!(opt(rep.options.as_slice(), 14).is_some());
    let a = addrs(&ias(&rep, 3)[0])[0].0;
    assert!(h.store.by_address(a).await.unwrap().is_some());
    // lan1 does not: ADVERTISE without RAPID_COMMIT.
    let adv = h.relayed(msg(MessageType::SOLICIT, 6, o)).await.unwrap();
    assert_eq!(adv.msg_type, MessageType::ADVERTISE);
    assert!(opt(adv.options.as_slice(), 14).is_none());
}

#[tokio::test]
async fn reservation_is_used() {
    let h = harness().await;
    let d: Duid = "ll:1:02:00:00:00:99:99".parse().unwrap();
    let mut o = base(&d);
    o.push(ia_na(1, &[]));
    o.push(DhcpOption::RapidCommit);
    let m = relay(
        "2001:db8:2::1",
        "fe80::1",
        0,
        vec![],
        msg(MessageType::SOLICIT, 5, o),
    );
    let rep = inner_reply(&h.send(&m, &relayed_meta()).await.unwrap()).unwrap();
    assert_eq!(
        addrs(&ias(&rep, 3)[0])[0].0,
        "2001:db8:2::42".parse::<Ipv6Addr>().unwrap()
    );
}

#[tokio::test]
async fn renew_rebind_extend_and_unknown_ias() {
    let h = harness().await;
    let d = duid(5);
    let (a, p) = obtain(&h, &d).await;
    let later = NOW + 500;
    let mut o = with_server(&d);
    o.push(ia_na(1, &[&a.to_string()]));
    o.push(ia_pd(2, &[(&p.to_string(), 56)]));
    let out = h
        .send_at(
            &relay1(msg(MessageType::RENEW, 7, o)),
            &relayed_meta(),
            later,
        )
        .await
        .unwrap();
    let rep = inner_reply(&out).unwrap();
    assert_eq!(addrs(&ias(&rep, 3)[0])[0], (a, 1000, 2000));
    let b = h.store.by_address(a).await.unwrap().unwrap();
    assert_eq!(b.client.cltt, later);
    assert_eq!(
        b.leases.iter().find(|l| l.addr == a).unwrap().expires_at,
        later + 2000
    );
    // RENEW of an IA the server does not know, for an address it never leased to it: NoBinding.
    let mut o = with_server(&d);
    o.push(ia_na(9, &[]));
    let rep = h.relayed(msg(MessageType::RENEW, 8, o)).await.unwrap();
    assert_eq!(ia_status(&ias(&rep, 3)[0]), Some(Status::NoBinding));
    // RENEW with an off-link address: returned with lifetimes 0.
    let mut o = with_server(&d);
    o.push(ia_na(1, &[&a.to_string(), "2001:db8:77::1"]));
    let rep = h.relayed(msg(MessageType::RENEW, 9, o)).await.unwrap();
    let got = addrs(&ias(&rep, 3)[0]);
    assert!(got.contains(&("2001:db8:77::1".parse().unwrap(), 0, 0)));
    // REBIND extends.
    let mut o = base(&d);
    o.push(ia_na(1, &[&a.to_string()]));
    let rep = h.relayed(msg(MessageType::REBIND, 10, o)).await.unwrap();
    assert_eq!(addrs(&ias(&rep, 3)[0])[0].0, a);
    // REBIND with nothing known → dropped.
    let mut o = base(&duid(55));
    o.push(ia_na(1, &[]));
    assert!(h.relayed(msg(MessageType::REBIND, 11, o)).await.is_none());
    assert_eq!(h.counter("drop_nothing_to_say"), 1);
}

#[tokio::test]
async fn release_makes_reusable_and_decline_quarantines() {
    let h = harness().await;
    let d = duid(6);
    let (a, p) = obtain(&h, &d).await;
    let mut o = with_server(&d);
    o.push(ia_na(1, &[&a.to_string()]));
    o.push(ia_pd(2, &[(&p.to_string(), 56)]));
    o.push(ia_na(7, &["2001:db8:1::200"]));
    let rep = h.relayed(msg(MessageType::RELEASE, 12, o)).await.unwrap();
    assert_eq!(
        rep.options.as_slice().status().unwrap().status,
        Status::Success
    );
    assert_eq!(ia_status(&ias(&rep, 3)[0]), Some(Status::NoBinding));
    assert_eq!(ias(&rep, 3).len(), 1);
    assert!(h.store.by_address(a).await.unwrap().is_none());
    let b = h.store.by_client(d.as_bytes(), None).await.unwrap();
    assert!(b[0].leases.iter().all(|l| l.state == LeaseState::Released));
    // Released address goes to the next client.
    let (a2, _) = obtain(&h, &duid(7)).await;
    assert_eq!(a2, a);
    // DECLINE quarantines it: the next client gets another one.
    let mut o = with_server(&duid(7));
    o.push(ia_na(1, &[&a2.to_string()]));
    let rep = h.relayed(msg(MessageType::DECLINE, 13, o)).await.unwrap();
    assert_eq!(
        rep.options.as_slice().status().unwrap().status,
        Status::Success
    );
    let (a3, _) = obtain(&h, &duid(8)).await;
    assert_ne!(a3, a2);
    let b = h.store.by_client(duid(7).as_bytes(), None).await.unwrap();
    assert!(b[0].leases.iter().any(|l| l.state == LeaseState::Declined));
}

#[tokio::test]
async fn exhaustion_statuses() {
    let h = harness().await;
    for i in 0..4 {
        obtain(&h, &duid(100 + i)).await;
    }
    let d = duid(200);
    let mut o = with_server(&d);
    o.push(ia_na(1, &[]));
    let rep = h.relayed(msg(MessageType::REQUEST, 1, o)).await.unwrap();
    assert_eq!(ia_status(&ias(&rep, 3)[0]), Some(Status::NoAddrsAvail));
    // PD pool of /54 → 4 /56s: exhausted too.
    let mut o = with_server(&d);
    o.push(ia_pd(1, &[]));
    let rep = h.relayed(msg(MessageType::REQUEST, 2, o)).await.unwrap();
    assert_eq!(ia_status(&ias(&rep, 25)[0]), Some(Status::NoPrefixAvail));
    // NotOnLink for a REQUEST naming an address of another link.
    let mut o = with_server(&duid(201));
    o.push(ia_na(1, &["2001:db8:2::100"]));
    let rep = h.relayed(msg(MessageType::REQUEST, 3, o)).await.unwrap();
    assert_eq!(ia_status(&ias(&rep, 3)[0]), Some(Status::NotOnLink));
    // Expired leases are reclaimed and reused.
    let later = NOW + 3000;
    h.engine.reclaim(later).await.unwrap();
    let mut o = with_server(&d);
    o.push(ia_na(1, &[]));
    let out = h
        .send_at(
            &relay1(msg(MessageType::REQUEST, 4, o)),
            &relayed_meta(),
            later,
        )
        .await
        .unwrap();
    assert!(ia_status(&ias(&inner_reply(&out).unwrap(), 3)[0]).is_none());
}

#[tokio::test]
async fn confirm_and_information_request() {
    let h = harness().await;
    let d = duid(9);
    let mut o = base(&d);
    o.push(ia_na(1, &["2001:db8:1::5"]));
    let rep = h.relayed(msg(MessageType::CONFIRM, 1, o)).await.unwrap();
    assert_eq!(
        rep.options.as_slice().status().unwrap().status,
        Status::Success
    );
    let mut o = base(&d);
    o.push(ia_na(1, &["2001:db8:9::5"]));
    let rep = h.relayed(msg(MessageType::CONFIRM, 2, o)).await.unwrap();
    assert_eq!(
        rep.options.as_slice().status().unwrap().status,
        Status::NotOnLink
    );
    let mut o = base(&d);
    o.push(ia_na(1, &[]));
    assert!(h.relayed(msg(MessageType::CONFIRM, 3, o)).await.is_none());
    // INFORMATION-REQUEST: configuration only, refresh time.
    let mut o = base(&d);
    o.push(DhcpOption::Oro(vec![23, 24]));
    let rep = h
        .relayed(msg(MessageType::INFORMATION_REQUEST, 4, o))
        .await
        .unwrap();
    let opts = rep.options.as_slice();
    assert!(
        matches!(opt(opts, 23), Some(DhcpOption::DnsServers(v)) if v == &vec!["2001:db8::53".parse::<Ipv6Addr>().unwrap()])
    );
    assert!(matches!(
        opt(opts, 32),
        Some(DhcpOption::InformationRefreshTime(86400))
    ));
    // ... and with an IA it is discarded.
    let mut o = base(&d);
    o.push(ia_na(1, &[]));
    assert!(h
        .relayed(msg(MessageType::INFORMATION_REQUEST, 5, o))
        .await
        .is_none());
}

#[tokio::test]
async fn discard_rules_and_use_multicast() {
    let h = harness().await;
    let d = duid(10);
    // SOLICIT without CLIENTID, or with SERVERID.
    assert!(h
        .relayed(msg(MessageType::SOLICIT, 1, vec![ia_na(1, &[])]))
        .await
        .is_none());
    let mut o = with_server(&d);
    o.push(ia_na(1, &[]));
    assert!(h.relayed(msg(MessageType::SOLICIT, 2, o)).await.is_none());
    // REQUEST without SERVERID, or with another server's.
    let mut o = base(&d);
    o.push(ia_na(1, &[]));
    assert!(h
        .relayed(msg(MessageType::REQUEST, 3, o.clone()))
        .await
        .is_none());
    o.push(DhcpOption::ServerId(duid(999)));
    assert!(h.relayed(msg(MessageType::REQUEST, 4, o)).await.is_none());
    assert_eq!(h.counter("drop_invalid"), 3);
    assert_eq!(h.counter("drop_not_for_us"), 1);
    // Unicast SOLICIT from a direct client: dropped. Unicast REQUEST: UseMulticast.
    let mut o = base(&d);
    o.push(ia_na(1, &[]));
    assert!(h
        .send(
            &msg(MessageType::SOLICIT, 5, o.clone()),
            &direct_meta(false)
        )
        .await
        .is_none());
    assert_eq!(h.counter("drop_unicast"), 1);
    let mut o = with_server(&d);
    o.push(ia_na(1, &[]));
    let out = h
        .send(&msg(MessageType::REQUEST, 6, o), &direct_meta(false))
        .await
        .unwrap();
    let rep = inner_reply(&out).unwrap();
    assert_eq!(
        rep.options.as_slice().status().unwrap().status,
        Status::UseMulticast
    );
    assert!(ias(&rep, 3).is_empty());
    // Server-only message types are never consumed.
    assert!(h
        .relayed(msg(MessageType::ADVERTISE, 7, base(&d)))
        .await
        .is_none());
    assert!(h
        .relayed(msg(MessageType::REPLY, 8, base(&d)))
        .await
        .is_none());
}

#[tokio::test]
async fn direct_client_on_interface() {
    let h = harness().await;
    let d = duid(11);
    let mut o = base(&d);
    o.push(ia_na(1, &[]));
    let out = h
        .send(&msg(MessageType::SOLICIT, 1, o), &direct_meta(true))
        .await
        .unwrap();
    assert_eq!(
        out.dst,
        SocketAddrV6::new("fe80::1234".parse().unwrap(), 546, 0, 3)
    );
    let adv = inner_reply(&out).unwrap();
    assert_eq!(adv.msg_type, MessageType::ADVERTISE);
    let mut o = with_server(&d);
    o.push(ia_na(1, &[]));
    let out = h
        .send(&msg(MessageType::REQUEST, 2, o), &direct_meta(true))
        .await
        .unwrap();
    let a = addrs(&ias(&inner_reply(&out).unwrap(), 3)[0])[0].0;
    let b = h.store.by_address(a).await.unwrap().unwrap();
    assert_eq!(b.client.link, "lan1");
    assert!(b.client.relay.is_none());
    // Unknown interface: no link, dropped and counted.
    let mut meta = direct_meta(true);
    meta.iface = Some("other0".into());
    let mut o = base(&duid(12));
    o.push(ia_na(1, &[]));
    assert!(h
        .send(&msg(MessageType::SOLICIT, 3, o), &meta)
        .await
        .is_none());
    assert_eq!(h.counter("drop_no_link"), 1);
}

#[tokio::test]
async fn bad_input_is_dropped_and_counted() {
    let h = harness().await;
    let m = relayed_meta();
    // Truncated.
    assert!(h.engine.handle(&[1, 0, 0], &m, NOW).await.is_none());
    assert!(h.engine.handle(&[], &m, NOW).await.is_none());
    assert_eq!(h.counter("drop_malformed"), 2);
    // Unknown message type.
    assert!(h.engine.handle(&[200, 1, 2, 3], &m, NOW).await.is_none());
    assert_eq!(h.counter("drop_unknown_type"), 1);
    // Bad option length: ELAPSED_TIME with 3 octets.
    let bad = [1u8, 0, 0, 1, 0, 8, 0, 3, 0, 0, 0];
    assert!(h.engine.handle(&bad, &m, NOW).await.is_none());
    assert_eq!(h.counter("drop_bad_option_length"), 1);
    // Relay-only option in a client message.
    let mut o = base(&duid(13));
    o.push(DhcpOption::InterfaceId(b"x".to_vec()));
    assert!(h.relayed(msg(MessageType::SOLICIT, 1, o)).await.is_none());
    let mut o = base(&duid(13));
    o.push(DhcpOption::RemoteId(RemoteId {
        enterprise: 1,
        id: vec![1],
    }));
    assert!(h
        .send(&msg(MessageType::SOLICIT, 1, o), &direct_meta(true))
        .await
        .is_none());
    assert_eq!(h.counter("drop_relay_only_option"), 2);
    // Relay chain too deep: 10 levels.
    let mut o = base(&duid(14));
    o.push(ia_na(1, &[]));
    let mut cur = msg(MessageType::SOLICIT, 1, o);
    for i in 0..10u8 {
        cur = relay("2001:db8:1::1", "fe80::1", i, vec![], cur);
    }
    assert!(h.send(&cur, &m).await.is_none());
    // hop-count above the limit.
    let mut o = base(&duid(14));
    o.push(ia_na(1, &[]));
    let cur = relay(
        "2001:db8:1::1",
        "fe80::1",
        9,
        vec![],
        msg(MessageType::SOLICIT, 1, o),
    );
    assert!(h.send(&cur, &m).await.is_none());
    assert_eq!(h.counter("drop_relay_too_deep"), 2);
    // RELAY-FORW without RELAY_MSG.
    let r = Message::Relay(RelayMessage {
        msg_type: MessageType::RELAY_FORW,
        hop_count: 0,
        link_address: "2001:db8:1::1".parse().unwrap(),
        peer_address: "fe80::1".parse().unwrap(),
        options: vec![],
    });
    assert!(h.send(&r, &m).await.is_none());
    // Unknown relay link-address.
    let mut o = base(&duid(15));
    o.push(ia_na(1, &[]));
    let r = relay(
        "2001:db8:99::1",
        "fe80::1",
        0,
        vec![],
        msg(MessageType::SOLICIT, 1, o),
    );
    assert!(h.send(&r, &m).await.is_none());
    assert_eq!(h.counter("drop_no_link"), 1);
    // Random garbage never panics.
    let mut x: u32 = 12345;
    for len in 0..400usize {
        let mut b = vec![0u8; len % 120];
        for v in b.iter_mut() {
            x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
            *v = (x >> 16) as u8;
        }
        if let Some(first) = b.first_mut() {
            *first = [1, 3, 5, 12, 11][len % 5];
        }
        let _ = h.engine.handle(&b, &m, NOW).await;
    }
}

#[tokio::test]
async fn relay_chain_ldra_interface_id_and_recorded_relay_data() {
    let h = harness().await;
    let d = duid(16);
    let mut o = with_server(&d);
    o.push(ia_na(1, &[]));
    let client = msg(MessageType::REQUEST, 0x42, o);
    // LDRA (zero link-address, Interface-ID, Remote-ID), then an L3 relay on lan1, then an
    // aggregation relay with a zero link-address and its own Relay-ID.
    let ldra = relay(
        "::",
        "fe80::c1",
        0,
        vec![
            DhcpOption::InterfaceId(b"port-7".to_vec()),
            DhcpOption::RemoteId(RemoteId {
                enterprise: 3561,
                id: b"cpe-7".to_vec(),
            }),
            DhcpOption::ClientLinkLayerAddr(ClientLinkLayer {
                hw_type: 1,
                addr: vec![2, 0, 0, 0, 0, 7],
            }),
        ],
        client,
    );
    let l3 = relay(
        "2001:db8:1::1",
        "fe80::aa",
        1,
        vec![
            DhcpOption::InterfaceId(vec![7, 0, 0, 0]),
            DhcpOption::SubscriberId(b"subscriber-0001".to_vec()),
            DhcpOption::RelayId(Duid::en(2495, b"relay-a")),
            DhcpOption::RemoteId(RemoteId {
                enterprise: 9,
                id: b"outer".to_vec(),
            }),
        ],
        ldra,
    );
    let agg = relay(
        "::",
        "2001:db8:1::1",
        2,
        vec![DhcpOption::RelayId(Duid::en(2495, b"relay-b"))],
        l3,
    );
    let out = h.send(&agg, &relayed_meta()).await.unwrap();
    assert_eq!(out.dst.port(), 547);
    let top = Message::decode(&out.bytes).unwrap();
    let (chain, inner) = top.unwrap_relays();
    assert_eq!(chain.len(), 3);
    assert!(chain.iter().all(|r| r.msg_type == MessageType::RELAY_REPL));
    assert_eq!(chain[0].hop_count, 2);
    assert_eq!(
        chain[1].link_address,
        "2001:db8:1::1".parse::<Ipv6Addr>().unwrap()
    );
    assert_eq!(
        chain[1].peer_address,
        "fe80::aa".parse::<Ipv6Addr>().unwrap()
    );
    assert_eq!(chain[1].interface_id(), Some(&[7u8, 0, 0, 0][..]));
    assert_eq!(chain[2].interface_id(), Some(&b"port-7"[..]));
    assert!(
        opt(chain[2].options.as_slice(), 37).is_none(),
        "Remote-ID only echoed on ERO"
    );
    let Some(Message::Client(rep)) = inner else {
        panic!()
    };
    assert_eq!(rep.xid, 0x42);
    let a = addrs(&ias(rep, 3)[0])[0].0;
    // Link from the innermost non-zero link-address (lan1), relay data recorded.
    let b = h.store.by_address(a).await.unwrap().unwrap();
    assert_eq!(b.client.link, "lan1");
    assert_eq!(
        b.client.link_address,
        "2001:db8:1::1".parse::<Ipv6Addr>().unwrap()
    );
    let r = b.client.relay.unwrap();
    assert_eq!(r.peer_address, *relay_src().ip());
    assert_eq!(r.relay_ids.len(), 2);
    assert!(r
        .relay_ids
        .contains(&Duid::en(2495, b"relay-a").into_bytes()));
    assert!(r
        .relay_ids
        .contains(&Duid::en(2495, b"relay-b").into_bytes()));
    assert_eq!(r.remote_id.unwrap().id, b"cpe-7".to_vec());
    assert_eq!(r.subscriber_id.unwrap(), b"subscriber-0001".to_vec());
    assert_eq!(r.interface_id.unwrap(), b"port-7".to_vec());
    assert_eq!(r.client_linklayer.unwrap(), (1, vec![2, 0, 0, 0, 0, 7]));
    // The stored chain is the RELAY-FORW chain without the client message.
    let stored = Message::decode(&r.chain).unwrap();
    let (sc, si) = stored.unwrap_relays();
    assert_eq!(sc.len(), 3);
    assert!(si.is_none());
}

#[tokio::test]
async fn relay_port_and_ero() {
    let h = harness().await;
    let d = duid(17);
    let mut o = base(&d);
    o.push(ia_na(1, &[]));
    let ero = DhcpOption::Unknown {
        code: 43,
        data: vec![0, 37, 0, 38],
    };
    let m = relay(
        "2001:db8:1::1",
        "fe80::1",
        0,
        vec![
            DhcpOption::RelayPort(0),
            ero,
            DhcpOption::RemoteId(RemoteId {
                enterprise: 1,
                id: b"r".to_vec(),
            }),
            DhcpOption::SubscriberId(b"s".to_vec()),
            DhcpOption::InterfaceId(b"i".to_vec()),
        ],
        msg(MessageType::SOLICIT, 1, o),
    );
    let mut meta = relayed_meta();
    meta.src.set_port(40000);
    let out = h.send(&m, &meta).await.unwrap();
    // RFC 8357: reply to the relay's source port, RELAY_PORT copied.
    assert_eq!(out.dst.port(), 40000);
    let top = Message::decode(&out.bytes).unwrap();
    let Message::Relay(r) = &top else { panic!() };
    let o = r.options.as_slice();
    assert!(matches!(opt(o, 135), Some(DhcpOption::RelayPort(0))));
    // RFC 4994: ERO-requested options echoed, others not.
    assert!(opt(o, 37).is_some() && opt(o, 38).is_some() && opt(o, 18).is_some());
    assert!(opt(o, 43).is_none());
    // Without RELAY_PORT the reply goes to 547.
    let mut o2 = base(&d);
    o2.push(ia_na(1, &[]));
    let out = h
        .send(&relay1(msg(MessageType::SOLICIT, 2, o2)), &meta)
        .await
        .unwrap();
    assert_eq!(out.dst.port(), 547);
}

/// A restart rebuilds pools and lease cache from the store in one pass: active addresses and
/// prefixes stay with their owners, and a declined address stays quarantined.
#[tokio::test]
async fn leases_survive_restart() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_path_buf();
    let d = duid(18);
    let (a, p, declined, p2) = {
        let h = harness_in(dir).await;
        let (a, p) = obtain(&h, &d).await;
        let (a2, p2) = obtain(&h, &duid(20)).await;
        let mut o = with_server(&duid(20));
        o.push(ia_na(1, &[&a2.to_string()]));
        let rep = h.relayed(msg(MessageType::DECLINE, 4, o)).await.unwrap();
        assert_eq!(
            rep.options.as_slice().status().unwrap().status,
            Status::Success
        );
        let _ = &h.cfg;
        std::mem::forget(h._dir); // keep the directory
        (a, p, a2, p2)
    };
    let dir2 = tempfile::TempDir::new_in(path.parent().unwrap()).unwrap();
    std::fs::copy(path.join("l.db"), dir2.path().join("l.db")).unwrap();
    for ext in ["-wal", "-shm"] {
        let _ = std::fs::copy(
            path.join(format!("l.db{ext}")),
            dir2.path().join(format!("l.db{ext}")),
        );
    }
    let h = harness_in(dir2).await;
    // Addresses: the owner's and the quarantined one; prefixes: both clients'.
    assert_eq!(h.engine.pool_usage(), (2, 2));
    assert_eq!(h.engine.cached_clients(), 2);
    // Another client gets none of them; the owner renews both of its leases.
    let (other, other_p) = obtain(&h, &duid(19)).await;
    assert!(other != a && other != declined, "{other} was taken");
    assert!(other_p != p && other_p != p2, "{other_p} was taken");
    let mut o = with_server(&d);
    o.push(ia_na(1, &[&a.to_string()]));
    o.push(ia_pd(2, &[(&p.to_string(), 56)]));
    let rep = h.relayed(msg(MessageType::RENEW, 3, o)).await.unwrap();
    assert_eq!(addrs(&ias(&rep, 3)[0])[0], (a, 1000, 2000));
    assert_eq!(addrs(&ias(&rep, 25)[0])[0], (p, 1000, 2000));
    let _ = std::fs::remove_dir_all(&path);
}

#[tokio::test]
async fn solicit_flood_is_bounded() {
    let h = harness().await;
    // Fill the small pool of lan1 (4 addresses).
    for i in 0..4 {
        obtain(&h, &duid(500 + i)).await;
    }
    let m = relayed_meta();
    let mut noaddr = 0;
    for i in 0..100_000u32 {
        let mut o = base(&duid(1_000_000 + i));
        o.push(ia_na(1, &[]));
        let b = relay1(msg(MessageType::SOLICIT, i & 0xffffff, o))
            .to_vec()
            .unwrap();
        let out = h.engine.handle(&b, &m, NOW).await.unwrap();
        let adv = inner_reply(&out).unwrap();
        if ia_status(&ias(&adv, 3)[0]) == Some(Status::NoAddrsAvail) {
            noaddr += 1;
        }
    }
    assert_eq!(noaddr, 100_000);
    // No per-client state was created.
    assert_eq!(h.engine.cached_clients(), 4);
    assert_eq!(h.engine.pool_usage().0, 4);
    assert_eq!(h.store.stats().await.unwrap().bindings, 4);
    assert_eq!(
        h.engine.counters().solicit.load(Ordering::Relaxed),
        100_000 + 4
    );
}

#[tokio::test]
async fn leasequery_direct_and_relayed() {
    use lq6_leasequery::{LinkMap, Responder};
    use lq6_proto::{LqQuery, QueryType};
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = Config::from_toml_str(CFG, "test.toml").unwrap();
    cfg.leasequery.allow = vec!["::/0".parse().unwrap()];
    let store = Arc::new(SqliteStore::open(dir.path().join("l.db")).unwrap());
    let links = Arc::new(LinkTable::from_config(&cfg));
    let lm: Arc<dyn LinkMap> = links.clone();
    let responder = Responder::new(cfg.leasequery.clone(), lm, store.clone(), server_duid());
    let mut opts = EngineOptions::from_config(&cfg);
    opts.log_transactions = false;
    let engine = Engine::new(
        &cfg,
        links,
        store.clone(),
        server_duid(),
        Some(responder),
        opts,
    );
    let h = H {
        _dir: dir,
        store,
        engine,
        cfg,
    };
    let (a, _) = obtain(&h, &duid(30)).await;
    let q = msg(
        MessageType::LEASEQUERY,
        0x1234,
        vec![
            DhcpOption::ClientId(duid(77)),
            DhcpOption::LqQuery(LqQuery {
                query_type: QueryType::ByAddress,
                link_address: Ipv6Addr::UNSPECIFIED,
                options: vec![DhcpOption::IaAddr(IaAddr {
                    addr: a,
                    preferred: 0,
                    valid: 0,
                    options: vec![],
                })],
            }),
        ],
    );
    // Direct: the reply goes to the requestor's source address and port (not 546).
    let meta = RecvMeta {
        src: SocketAddrV6::new("2001:db8:ffff::9".parse().unwrap(), 40001, 0, 0),
        iface: None,
        multicast: false,
    };
    let out = h.send(&q, &meta).await.expect("leasequery reply");
    assert_eq!(out.dst, meta.src);
    let Message::Client(r) = Message::decode(&out.bytes).unwrap() else {
        panic!()
    };
    assert_eq!(r.msg_type, MessageType::LEASEQUERY_REPLY);
    assert_eq!(r.xid, 0x1234);
    assert!(opt(&r.options, 45).is_some(), "CLIENT_DATA expected: {r:?}");
    // Relayed: wrapped in RELAY-REPL like a client reply, Interface-ID echoed.
    let out = h
        .send(&relay1(q), &relayed_meta())
        .await
        .expect("relayed reply");
    assert_eq!(out.dst, relay_src());
    let top = Message::decode(&out.bytes).unwrap();
    let (chain, inner) = top.unwrap_relays();
    assert_eq!(chain.len(), 1);
    assert_eq!(chain[0].msg_type, MessageType::RELAY_REPL);
    assert_eq!(chain[0].interface_id(), Some(&b"eth0"[..]));
    let Some(Message::Client(r)) = inner else {
        panic!()
    };
    assert_eq!(r.msg_type, MessageType::LEASEQUERY_REPLY);
    assert!(opt(&r.options, 45).is_some());
    // A LEASEQUERY-REPLY arriving at the server is never consumed.
    assert!(h
        .send(
            &msg(MessageType::LEASEQUERY_REPLY, 1, base(&duid(1))),
            &meta
        )
        .await
        .is_none());
}

#[tokio::test]
async fn ia_ta_is_served() {
    let h = harness().await;
    let d = duid(31);
    let mut o = with_server(&d);
    o.push(DhcpOption::IaTa(lq6_proto::IaTa {
        iaid: 5,
        options: vec![],
    }));
    let rep = h.relayed(msg(MessageType::REQUEST, 1, o)).await.unwrap();
    let ta = rep
        .options
        .iter()
        .find_map(|o| match o {
            DhcpOption::IaTa(t) => Some(t.clone()),
            _ => None,
        })
        .expect("IA_TA");
    assert_eq!(ta.iaid, 5);
    assert!(matches!(ta.options.first(), Some(DhcpOption::IaAddr(_))));
    let b = h.store.by_client(d.as_bytes(), None).await.unwrap();
    assert_eq!(b[0].leases[0].kind, lq6_store::LeaseKind::Ta);
}
