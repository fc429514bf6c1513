//! tshark as an independent oracle: messages we encode are sent over real
//! loopback sockets (TCP framed and UDP), captured, and must be decoded by
//! tshark's dissectors with the expected field values and nothing malformed.

#[path = "support/tshark.rs"]
mod tshark;

use lq6_proto::*;
use std::io::{Read, Write};
use std::net::{Ipv6Addr, TcpListener, TcpStream, UdpSocket};

fn a(s: &str) -> Ipv6Addr {
    s.parse().unwrap()
}

fn framed(m: &Message) -> Vec<u8> {
    let mut v = Vec::new();
    write_framed(&mut v, |b| m.encode(b)).unwrap();
    v
}

fn client_data(n: u8, relay_id: &Duid) -> DhcpOption {
    DhcpOption::ClientData(vec![
        DhcpOption::ClientId(Duid::ll(1, &[2, 0, 0, 0, 0xaa, n])),
        DhcpOption::IaPrefix(IaPrefix {
            preferred: 1800,
            valid: 3600,
            prefix_len: 56,
            prefix: Ipv6Addr::new(0x2001, 0xdb8, 0x100, n as u16 * 256, 0, 0, 0, 0),
            options: vec![],
        }),
        DhcpOption::CltTime(60 + n as u32),
        DhcpOption::LqRelayData(LqRelayData {
            peer_address: a("2001:db8:ffff::2"),
            message: Box::new(Message::Relay(RelayMessage {
                msg_type: MessageType::RELAY_FORW,
                hop_count: 0,
                link_address: a("2001:db8:1::1"),
                peer_address: a("fe80::1"),
                options: vec![
                    DhcpOption::InterfaceId(vec![0, 0, 0, 5]),
                    DhcpOption::RelayId(relay_id.clone()),
                    DhcpOption::RemoteId(RemoteId {
                        enterprise: 9,
                        id: vec![1, 2, 3],
                    }),
                ],
            })),
        }),
    ])
}

#[test]
fn tshark_decodes_bulk_exchange_and_relayed_solicit() {
    if !tshark::available() {
        return;
    }
    let listener = TcpListener::bind("[::1]:0").unwrap();
    let tcp_port = listener.local_addr().unwrap().port();
    let udp_rx = UdpSocket::bind("[::1]:0").unwrap();
    let udp_port = udp_rx.local_addr().unwrap().port();
    let cap = tshark::Capture::start(
        "codec",
        &format!("tcp port {tcp_port} or udp port {udp_port}"),
    );

    let requestor = Duid::ll(1, &[2, 0, 0, 0, 0, 1]);
    let server = Duid::en(2495, &[0xaa, 0xbb]);
    let relay_id = Duid::en(2495, &[0x0a, 0x0b, 0x0c, 0x0d]);
    let xid = 0x123456;
    let query = Message::Client(ClientMessage {
        msg_type: MessageType::LEASEQUERY,
        xid,
        options: vec![
            DhcpOption::ClientId(requestor.clone()),
            DhcpOption::LqQuery(LqQuery {
                query_type: QueryType::ByRelayId,
                link_address: a("2001:db8:1::"),
                options: vec![
                    DhcpOption::RelayId(relay_id.clone()),
                    DhcpOption::Oro(vec![47]),
                ],
            }),
        ],
    });
    let reply = Message::Client(ClientMessage {
        msg_type: MessageType::LEASEQUERY_REPLY,
        xid,
        options: vec![
            DhcpOption::StatusCode(StatusCode::new(Status::Success, "ok")),
            DhcpOption::ServerId(server.clone()),
            DhcpOption::ClientId(requestor.clone()),
            client_data(1, &relay_id),
        ],
    });
    let data = Message::Client(ClientMessage {
        msg_type: MessageType::LEASEQUERY_DATA,
        xid,
        options: vec![client_data(2, &relay_id)],
    });
    let done = Message::Client(ClientMessage {
        msg_type: MessageType::LEASEQUERY_DONE,
        xid,
        options: vec![DhcpOption::StatusCode(StatusCode::new(
            Status::Success,
            "done",
        ))],
    });

    let server_side = {
        let (reply, data, done) = (framed(&reply), framed(&data), framed(&done));
        std::thread::spawn(move || {
            let (mut s, _) = listener.accept().unwrap();
            let mut size = [0u8; 2];
            s.read_exact(&mut size).unwrap();
            let mut q = vec![0u8; u16::from_be_bytes(size) as usize];
            s.read_exact(&mut q).unwrap();
            for m in [reply, data, done] {
                s.write_all(&m).unwrap();
                s.flush().unwrap();
            }
            q
        })
    };
    let mut c = TcpStream::connect(("::1", tcp_port)).unwrap();
    c.write_all(&framed(&query)).unwrap();
    let mut got = Vec::new();
    c.read_to_end(&mut got).unwrap_or_default();
    let q_seen = server_side.join().unwrap();
    assert_eq!(Message::decode(&q_seen).unwrap(), query);

    // UDP: RELAY-FORW(SOLICIT with IA_NA, IA_PD, RAPID_COMMIT).
    let solicit = Message::Client(ClientMessage {
        msg_type: MessageType::SOLICIT,
        xid: 0xabcdef,
        options: vec![
            DhcpOption::ClientId(Duid::ll(1, &[2, 0, 0, 0, 0xaa, 9])),
            DhcpOption::ElapsedTime(0),
            DhcpOption::RapidCommit,
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
        ],
    });
    let relayed = Message::Relay(RelayMessage {
        msg_type: MessageType::RELAY_FORW,
        hop_count: 0,
        link_address: a("2001:db8:1::1"),
        peer_address: a("fe80::9"),
        options: vec![
            DhcpOption::InterfaceId(b"eth0".to_vec()),
            DhcpOption::RemoteId(RemoteId {
                enterprise: 9,
                id: vec![0xaa],
            }),
            DhcpOption::RelayMsg(Box::new(solicit)),
        ],
    });
    let tx = UdpSocket::bind("[::1]:0").unwrap();
    tx.send_to(&relayed.to_vec().unwrap(), ("::1", udp_port))
        .unwrap();
    let mut buf = [0u8; 2048];
    let (n, _) = udp_rx.recv_from(&mut buf).unwrap();
    assert_eq!(n, relayed.wire_len());

    let pcap = cap.stop();
    let decode_as = vec![
        format!("tcp.port=={tcp_port},dhcpv6.bulk_leasequery"),
        format!("udp.port=={udp_port},dhcpv6"),
    ];

    // TCP: message types, xid (shown as reserved + 16-bit trans_id), query, client data.
    let rows = tshark::fields(
        &pcap,
        &decode_as,
        "dhcpv6.bulk_leasequery",
        &[
            "dhcpv6.bulk_leasequery.msgtype",
            "dhcpv6.bulk_leasequery.reserved",
            "dhcpv6.bulk_leasequery.trans_id",
            "dhcpv6.lq_query",
            "dhcpv6.lq_query_link_address",
            "dhcpv6.option.type",
            "dhcpv6.duid.bytes",
            "dhcpv6.iaprefix.pref_addr",
            "dhcpv6.iaprefix.pref_len",
            "dhcpv6.clt_time",
            "dhcpv6.lq_relay_data_peer_addr",
            "dhcpv6.status_code",
        ],
    );
    assert_eq!(
        tshark::column(&rows, 0),
        ["14", "15", "17", "16"],
        "msg types: {rows:?}"
    );
    // tshark 4.0 shows the 24-bit xid as reserved (high octet) + trans_id (low 16 bits), in decimal.
    assert_eq!(
        tshark::column(&rows, 1),
        vec![(xid >> 16).to_string(); 4],
        "xid high octet: {rows:?}"
    );
    assert_eq!(
        tshark::column(&rows, 2),
        vec![(xid & 0xffff).to_string(); 4],
        "xid low 16 bits: {rows:?}"
    );
    assert_eq!(tshark::column(&rows, 3), ["3"]);
    assert_eq!(tshark::column(&rows, 4), ["2001:db8:1::"]);
    let opts = tshark::column(&rows, 5);
    assert!(
        opts.contains(&"53".to_string())
            && opts.contains(&"45".to_string())
            && opts.contains(&"47".to_string())
    );
    let duids = tshark::column(&rows, 6);
    assert!(
        duids.contains(&hex::encode(relay_id.as_bytes())),
        "relay-id DUID not decoded: {duids:?}"
    );
    assert!(duids.contains(&hex::encode(requestor.as_bytes())));
    assert_eq!(
        tshark::column(&rows, 7),
        ["2001:db8:100:100::", "2001:db8:100:200::"]
    );
    assert_eq!(tshark::column(&rows, 8), ["56", "56"]);
    assert_eq!(tshark::column(&rows, 9), ["61", "62"]);
    assert_eq!(
        tshark::column(&rows, 10),
        ["2001:db8:ffff::2", "2001:db8:ffff::2"]
    );
    assert_eq!(tshark::column(&rows, 11), ["0", "0"]);

    // UDP: the relay chain and the client message inside it.
    let rows = tshark::fields(
        &pcap,
        &decode_as,
        "dhcpv6",
        &[
            "dhcpv6.msgtype",
            "dhcpv6.hopcount",
            "dhcpv6.linkaddr",
            "dhcpv6.peeraddr",
            "dhcpv6.xid",
            "dhcpv6.interface_id",
            "dhcpv6.remoteid.enterprise",
            "dhcpv6.option.type",
        ],
    );
    let rows: Vec<_> = rows.into_iter().filter(|r| !r[1].is_empty()).collect();
    assert_eq!(rows.len(), 1, "one UDP relay frame: {rows:?}");
    assert_eq!(tshark::column(&rows, 0), ["12", "1"]);
    assert_eq!(tshark::column(&rows, 2), ["2001:db8:1::1"]);
    assert_eq!(tshark::column(&rows, 3), ["fe80::9"]);
    assert_eq!(tshark::column(&rows, 4), ["0xabcdef"]);
    assert_eq!(tshark::column(&rows, 6), ["9"]);
    let opts = tshark::column(&rows, 7);
    for want in ["18", "37", "9", "1", "8", "14", "3", "25"] {
        assert!(
            opts.contains(&want.to_string()),
            "option {want} missing: {opts:?}"
        );
    }

    // Nothing malformed anywhere.
    let bad = tshark::fields(
        &pcap,
        &decode_as,
        "_ws.malformed || _ws.expert.severity == error",
        &["frame.number", "_ws.col.Info"],
    );
    assert!(bad.is_empty(), "tshark flagged: {bad:?}");
    let _ = std::fs::remove_file(pcap);
}
