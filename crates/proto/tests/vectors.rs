//! Byte-exact vectors written by hand from the RFC layouts (not produced by
//! our encoder). Each is decoded and compared with a hand-built typed value,
//! then re-encoded and compared byte for byte.

use lq6_proto::*;
use std::net::Ipv6Addr;

fn h(s: &str) -> Vec<u8> {
    let s: String = s.split_whitespace().collect();
    hex::decode(s).expect("test vector hex")
}

fn a(s: &str) -> Ipv6Addr {
    s.parse().unwrap()
}

/// Decodes `bytes`, checks it equals `expected`, and that encoding gives back `bytes`.
fn check(bytes: &[u8], expected: &Message) {
    let got = Message::decode(bytes).expect("decodes");
    assert_eq!(&got, expected);
    assert_eq!(expected.to_vec().unwrap(), bytes, "re-encoding differs");
    assert_eq!(expected.wire_len(), bytes.len());
}

fn requestor() -> Duid {
    Duid::ll(1, &[2, 0, 0, 0, 0, 1])
}
fn server() -> Duid {
    Duid::en(2495, &[0x0a, 0x0b, 0x0c, 0x0d])
}
fn client(n: u8) -> Duid {
    Duid::ll(1, &[2, 0, 0, 0, 0xaa, n])
}

const REQUESTOR: &str = "0001 000a 0003 0001 020000000001";
const SERVER: &str = "0002 000a 0002 000009bf 0a0b0c0d";

#[test]
fn scapy_query_by_relay_id_from_interop_md() {
    // ../shared/INTEROP.md: built with scapy-based classes, not by lq6.
    let bytes = h("0e123456 0001000a00030001020000000001 002c001f03 00000000000000000000000000000000 0035000a0002000009bf0a0b0c0d");
    let m = Message::Client(ClientMessage {
        msg_type: MessageType::LEASEQUERY,
        xid: 0x123456,
        options: vec![
            DhcpOption::ClientId(requestor()),
            DhcpOption::LqQuery(LqQuery {
                query_type: QueryType::ByRelayId,
                link_address: Ipv6Addr::UNSPECIFIED,
                options: vec![DhcpOption::RelayId(server())],
            }),
        ],
    });
    check(&bytes, &m);
}

#[test]
fn leasequery_by_address_with_oro() {
    // LQ_QUERY len = 1 + 16 + IAADDR(4+24) + ORO(4+2) = 51 = 0x33.
    let bytes = h(&format!(
        "0e abcdef {REQUESTOR}
         002c 0033 01 20010db8000100000000000000000000
           0005 0018 20010db8000100000000000000000064 00000000 00000000
           0006 0002 002f"
    ));
    let m = Message::Client(ClientMessage {
        msg_type: MessageType::LEASEQUERY,
        xid: 0xabcdef,
        options: vec![
            DhcpOption::ClientId(requestor()),
            DhcpOption::LqQuery(LqQuery {
                query_type: QueryType::ByAddress,
                link_address: a("2001:db8:1::"),
                options: vec![
                    DhcpOption::IaAddr(IaAddr {
                        addr: a("2001:db8:1::64"),
                        preferred: 0,
                        valid: 0,
                        options: vec![],
                    }),
                    DhcpOption::Oro(vec![code::LQ_RELAY_DATA]),
                ],
            }),
        ],
    });
    check(&bytes, &m);
}

#[test]
fn query_by_clientid_link_and_remote_id() {
    let by_client = h(&format!(
        "0e 000001 {REQUESTOR} 002c 001f 02 00000000000000000000000000000000 0001 000a 0003 0001 02000000aa01"
    ));
    check(
        &by_client,
        &Message::Client(ClientMessage {
            msg_type: MessageType::LEASEQUERY,
            xid: 1,
            options: vec![
                DhcpOption::ClientId(requestor()),
                DhcpOption::LqQuery(LqQuery {
                    query_type: QueryType::ByClientId,
                    link_address: Ipv6Addr::UNSPECIFIED,
                    options: vec![DhcpOption::ClientId(client(1))],
                }),
            ],
        }),
    );
    // QUERY_BY_LINK_ADDRESS has no required query-options.
    let by_link = h(&format!(
        "0e 000002 {REQUESTOR} 002c 0011 04 20010db8000100000000000000000001"
    ));
    check(
        &by_link,
        &Message::Client(ClientMessage {
            msg_type: MessageType::LEASEQUERY,
            xid: 2,
            options: vec![
                DhcpOption::ClientId(requestor()),
                DhcpOption::LqQuery(LqQuery {
                    query_type: QueryType::ByLinkAddress,
                    link_address: a("2001:db8:1::1"),
                    options: vec![],
                }),
            ],
        }),
    );
    // REMOTE_ID: enterprise 9, id 0a0b0c (len 7); LQ_START_TIME / END_TIME inside LQ_QUERY.
    let by_remote = h(&format!(
        "0e 000003 {REQUESTOR} 002c 002c 05 00000000000000000000000000000000
           0025 0007 00000009 0a0b0c
           0065 0004 2a000000
           0066 0004 2b000000"
    ));
    check(
        &by_remote,
        &Message::Client(ClientMessage {
            msg_type: MessageType::LEASEQUERY,
            xid: 3,
            options: vec![
                DhcpOption::ClientId(requestor()),
                DhcpOption::LqQuery(LqQuery {
                    query_type: QueryType::ByRemoteId,
                    link_address: Ipv6Addr::UNSPECIFIED,
                    options: vec![
                        DhcpOption::RemoteId(RemoteId {
                            enterprise: 9,
                            id: vec![10, 11, 12],
                        }),
                        DhcpOption::LqStartTime(0x2a00_0000),
                        DhcpOption::LqEndTime(0x2b00_0000),
                    ],
                }),
            ],
        }),
    );
}

/// CLIENT_DATA with CLIENTID, IAADDR, IAPREFIX, CLT_TIME and LQ_RELAY_DATA
/// (a RELAY-FORW whose client message was removed).
fn client_data_bytes() -> String {
    // LQ_RELAY_DATA: peer(16) + RELAY-FORW(34 + INTERFACE_ID 8 + RELAY_ID 14 + REMOTE_ID 11) = 16+67 = 83 = 0x53.
    // CLIENT_DATA = 14 + 28 + 29 + 8 + 87 = 166 = 0xa6.
    "002d 00a6
       0001 000a 0003 0001 02000000aa07
       0005 0018 20010db8000100000000000000000064 00000e10 00001c20
       001a 0019 00000708 00000e10 38 20010db8ff0000000000000000000000
       002e 0004 0000003c
       002f 0053 20010db8ffff00000000000000000002
         0c 00 20010db8000100000000000000000001 fe800000000000000000000000000007
           0012 0004 00000005
           0035 000a 0002000009bf0a0b0c0d
           0025 0007 00000009 0a0b0c"
        .to_string()
}

fn client_data_typed() -> DhcpOption {
    DhcpOption::ClientData(vec![
        DhcpOption::ClientId(client(7)),
        DhcpOption::IaAddr(IaAddr {
            addr: a("2001:db8:1::64"),
            preferred: 3600,
            valid: 7200,
            options: vec![],
        }),
        DhcpOption::IaPrefix(IaPrefix {
            preferred: 1800,
            valid: 3600,
            prefix_len: 56,
            prefix: a("2001:db8:ff00::"),
            options: vec![],
        }),
        DhcpOption::CltTime(60),
        DhcpOption::LqRelayData(LqRelayData {
            peer_address: a("2001:db8:ffff::2"),
            message: Box::new(Message::Relay(RelayMessage {
                msg_type: MessageType::RELAY_FORW,
                hop_count: 0,
                link_address: a("2001:db8:1::1"),
                peer_address: a("fe80::7"),
                options: vec![
                    DhcpOption::InterfaceId(vec![0, 0, 0, 5]),
                    DhcpOption::RelayId(server()),
                    DhcpOption::RemoteId(RemoteId {
                        enterprise: 9,
                        id: vec![10, 11, 12],
                    }),
                ],
            })),
        }),
    ])
}

#[test]
fn leasequery_reply_with_client_data() {
    let bytes = h(&format!(
        "0f abcdef {SERVER} {REQUESTOR} {}",
        client_data_bytes()
    ));
    let m = Message::Client(ClientMessage {
        msg_type: MessageType::LEASEQUERY_REPLY,
        xid: 0xabcdef,
        options: vec![
            DhcpOption::ServerId(server()),
            DhcpOption::ClientId(requestor()),
            client_data_typed(),
        ],
    });
    check(&bytes, &m);
}

#[test]
fn leasequery_data_and_done_and_tcp_framing() {
    // DATA (17) carries only CLIENT_DATA (RFC 5460 §5.3).
    let data = h(&format!("11 abcdef {}", client_data_bytes()));
    let m = Message::Client(ClientMessage {
        msg_type: MessageType::LEASEQUERY_DATA,
        xid: 0xabcdef,
        options: vec![client_data_typed()],
    });
    check(&data, &m);
    // DONE (16) with QueryTerminated and a text, and LQ_BASE_TIME.
    let done = h("10 abcdef 000d 0006 000b 646f6e65 0064 0004 30000000");
    check(
        &done,
        &Message::Client(ClientMessage {
            msg_type: MessageType::LEASEQUERY_DONE,
            xid: 0xabcdef,
            options: vec![
                DhcpOption::StatusCode(StatusCode::new(Status::QueryTerminated, "done")),
                DhcpOption::LqBaseTime(0x3000_0000),
            ],
        }),
    );
    // An empty DONE: the smallest legal message.
    check(
        &h("10 000007"),
        &Message::Client(ClientMessage::new(MessageType::LEASEQUERY_DONE, 7)),
    );
    // TCP framing: message-size counts the octets after itself.
    let mut framed = Vec::new();
    write_framed(&mut framed, |b| m.encode(b)).unwrap();
    assert_eq!(&framed[..2], &(data.len() as u16).to_be_bytes());
    assert_eq!(&framed[2..], &data[..]);
}

#[test]
fn reply_with_client_link_and_error_status() {
    let bytes = h(&format!(
        "0f 000009 {SERVER} {REQUESTOR} 0030 0020 20010db8000100000000000000000001 20010db8000200000000000000000001"
    ));
    check(
        &bytes,
        &Message::Client(ClientMessage {
            msg_type: MessageType::LEASEQUERY_REPLY,
            xid: 9,
            options: vec![
                DhcpOption::ServerId(server()),
                DhcpOption::ClientId(requestor()),
                DhcpOption::LqClientLink(vec![a("2001:db8:1::1"), a("2001:db8:2::1")]),
            ],
        }),
    );
    // NotAllowed with an empty message text (len 2).
    let bytes = h(&format!("0f 00000a {SERVER} {REQUESTOR} 000d 0002 000a"));
    check(
        &bytes,
        &Message::Client(ClientMessage {
            msg_type: MessageType::LEASEQUERY_REPLY,
            xid: 10,
            options: vec![
                DhcpOption::ServerId(server()),
                DhcpOption::ClientId(requestor()),
                DhcpOption::StatusCode(StatusCode::new(Status::NotAllowed, "")),
            ],
        }),
    );
}

#[test]
fn active_leasequery_and_starttls() {
    // ACTIVELEASEQUERY (22): no LQ_QUERY means all bindings; top-level ORO and START_TIME.
    let bytes = h(&format!(
        "16 000101 {REQUESTOR} 0006 0004 002f 0064 0065 0004 2a2b2c2d"
    ));
    check(
        &bytes,
        &Message::Client(ClientMessage {
            msg_type: MessageType::ACTIVELEASEQUERY,
            xid: 0x101,
            options: vec![
                DhcpOption::ClientId(requestor()),
                DhcpOption::Oro(vec![47, 100]),
                DhcpOption::LqStartTime(0x2a2b2c2d),
            ],
        }),
    );
    check(
        &h("17 000102"),
        &Message::Client(ClientMessage::new(MessageType::STARTTLS, 0x102)),
    );
    // REPLY to STARTTLS refusing TLS (RFC 7653 §8.2).
    check(
        &h("07 000102 000d 0002 000f"),
        &Message::Client(ClientMessage {
            msg_type: MessageType::REPLY,
            xid: 0x102,
            options: vec![DhcpOption::StatusCode(StatusCode::new(
                Status::TlsConnectionRefused,
                "",
            ))],
        }),
    );
}

#[test]
fn three_level_relay_chain_with_solicit() {
    // SOLICIT: CLIENTID, ELAPSED_TIME, RAPID_COMMIT, IA_NA(iaid 1), IA_PD(iaid 2, hint /56).
    let solicit = "01 010203 0001 000a 0003 0001 02000000aa01 0008 0002 0000 000e 0000
         0003 000c 00000001 00000000 00000000
         0019 0029 00000002 00000000 00000000 001a 0019 00000000 00000000 38 00000000000000000000000000000000";
    let solicit_len = h(solicit).len(); // 4+14+6+4+16+45 = 89
    assert_eq!(solicit_len, 89);
    // Level 0 (closest to the client): INTERFACE_ID, REMOTE_ID, CLIENT_LINKLAYER_ADDR, RELAY_MSG.
    // 34 + 8 + 11 + 12 + (4+89) = 158 = 0x9e
    let l0 = format!(
        "0c 00 20010db8000100000000000000000001 fe800000000000000000000000000001
         0012 0004 00000005 0025 0007 00000009 0a0b0c 004f 0008 0001 020000aa0001
         0009 0059 {solicit}"
    );
    // Level 1: an LDRA-style zero link-address, SUBSCRIBER_ID, RELAY_ID. 34 + 7 + 14 + (4+158) = 217 = 0xd9
    let l1 = format!(
        "0c 01 00000000000000000000000000000000 20010db8000100000000000000000001
         0026 0003 737562 0035 000a 0002000009bf0a0b0c0d
         0009 009e {l0}"
    );
    // Level 2: RELAY_PORT and ERO. 34 + 6 + 6 + (4+217) = 267
    let l2 = format!(
        "0c 02 20010db8ffff00000000000000000002 20010db8ffff00000000000000000003
         0087 0002 0223 002b 0002 0026
         0009 00d9 {l1}"
    );
    let bytes = h(&l2);
    assert_eq!(bytes.len(), 267);

    let sol = Message::Client(ClientMessage {
        msg_type: MessageType::SOLICIT,
        xid: 0x010203,
        options: vec![
            DhcpOption::ClientId(client(1)),
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
                options: vec![DhcpOption::IaPrefix(IaPrefix {
                    preferred: 0,
                    valid: 0,
                    prefix_len: 56,
                    prefix: Ipv6Addr::UNSPECIFIED,
                    options: vec![],
                })],
            }),
        ],
    });
    let relay = |hop, link, peer, mut options: Vec<DhcpOption>, inner: Message| {
        options.push(DhcpOption::RelayMsg(Box::new(inner)));
        Message::Relay(RelayMessage {
            msg_type: MessageType::RELAY_FORW,
            hop_count: hop,
            link_address: a(link),
            peer_address: a(peer),
            options,
        })
    };
    let m0 = relay(
        0,
        "2001:db8:1::1",
        "fe80::1",
        vec![
            DhcpOption::InterfaceId(vec![0, 0, 0, 5]),
            DhcpOption::RemoteId(RemoteId {
                enterprise: 9,
                id: vec![10, 11, 12],
            }),
            DhcpOption::ClientLinkLayerAddr(ClientLinkLayer {
                hw_type: 1,
                addr: vec![2, 0, 0, 0xaa, 0, 1],
            }),
        ],
        sol.clone(),
    );
    let m1 = relay(
        1,
        "::",
        "2001:db8:1::1",
        vec![
            DhcpOption::SubscriberId(b"sub".to_vec()),
            DhcpOption::RelayId(server()),
        ],
        m0,
    );
    let m2 = relay(
        2,
        "2001:db8:ffff::2",
        "2001:db8:ffff::3",
        vec![
            DhcpOption::RelayPort(547),
            DhcpOption::Unknown {
                code: code::ERO,
                data: vec![0, 38],
            },
        ],
        m1,
    );
    check(&bytes, &m2);

    let (chain, inner) = m2.unwrap_relays();
    assert_eq!(chain.len(), 3);
    assert_eq!(chain[2].link_address, a("2001:db8:1::1"));
    assert_eq!(inner, Some(&sol));
    // Stripping the client message gives the LQ_RELAY_DATA chain.
    let Message::Relay(r2) = &m2 else {
        unreachable!()
    };
    let stripped = Message::Relay(r2.without_client_message());
    let (chain, inner) = stripped.unwrap_relays();
    assert_eq!(chain.len(), 3);
    assert!(inner.is_none());
    assert_eq!(stripped.wire_len(), 267 - 4 - 89);
}

#[test]
fn server_options_dns_domain_unicast_refresh_preference() {
    let bytes = h(&format!(
        "02 000001 {SERVER} 0007 0001 ff 000c 0010 20010db8ffff00000000000000000001
         0017 0010 20010db8000000000000000000000053
         0018 0012 076578616d706c65 03636f6d 00 036c7136 00
         0020 0004 00015180"
    ));
    check(
        &bytes,
        &Message::Client(ClientMessage {
            msg_type: MessageType::ADVERTISE,
            xid: 1,
            options: vec![
                DhcpOption::ServerId(server()),
                DhcpOption::Preference(255),
                DhcpOption::Unicast(a("2001:db8:ffff::1")),
                DhcpOption::DnsServers(vec![a("2001:db8::53")]),
                DhcpOption::DomainList(vec![
                    "example.com".parse().unwrap(),
                    "lq6".parse().unwrap(),
                ]),
                DhcpOption::InformationRefreshTime(86400),
            ],
        }),
    );
}

#[test]
fn unknown_message_type_and_unknown_option_round_trip() {
    let bytes = h("c8 01 02 03 04 05");
    check(
        &bytes,
        &Message::Unknown {
            msg_type: 200,
            body: vec![1, 2, 3, 4, 5],
        },
    );
    // IA_TA with an unknown option 999 inside; AUTH (11) stays raw.
    let bytes = h("03 000001 0004 000c 00000007 03e7 0004 deadbeef 000b 0002 0102");
    check(
        &bytes,
        &Message::Client(ClientMessage {
            msg_type: MessageType::REQUEST,
            xid: 1,
            options: vec![
                DhcpOption::IaTa(IaTa {
                    iaid: 7,
                    options: vec![DhcpOption::Unknown {
                        code: 999,
                        data: vec![0xde, 0xad, 0xbe, 0xef],
                    }],
                }),
                DhcpOption::Unknown {
                    code: 11,
                    data: vec![1, 2],
                },
            ],
        }),
    );
}

fn err(bytes: &str) -> DecodeError {
    Message::decode(&h(bytes)).expect_err("must not decode")
}

#[test]
fn strict_errors_with_offsets() {
    assert_eq!(
        Message::decode(&[]).unwrap_err().kind,
        DecodeErrorKind::Empty
    );
    // Header cut short.
    assert!(matches!(
        err("0e 1234").kind,
        DecodeErrorKind::Truncated { .. }
    ));
    // ELAPSED_TIME of length 3.
    let e = err("01 000001 0008 0003 000000");
    assert_eq!(e.kind, DecodeErrorKind::BadOptionLength { code: 8, len: 3 });
    // STATUS_CODE of length 0 (dhcproto panics here).
    let e = err("07 000001 000d 0000");
    assert_eq!(
        e.kind,
        DecodeErrorKind::BadOptionLength { code: 13, len: 0 }
    );
    // Option body runs past the message; offset points at the length field's end.
    let e = err("07 000001 0001 0010 000300");
    assert!(matches!(
        e.kind,
        DecodeErrorKind::Truncated {
            needed: 16,
            available: 3
        }
    ));
    assert_eq!(e.offset, 8);
    // A partial option header at the end.
    let e = err("07 000001 00");
    assert!(matches!(e.kind, DecodeErrorKind::Truncated { .. }));
    assert_eq!(e.offset, 4);
    // DUID too short / too long.
    assert_eq!(
        err("07 000001 0001 0002 0001").kind,
        DecodeErrorKind::BadDuid(2)
    );
    // IAPREFIX with prefix-length 129.
    let e = err("07 000001 001a 0019 00000000 00000000 81 00000000000000000000000000000000");
    assert!(matches!(
        e.kind,
        DecodeErrorKind::InvalidOption { code: 26, .. }
    ));
    // Trailing octets inside an IAADDR's option area (a 1-octet leftover).
    let e = err("07 000001 0005 0019 20010db8000100000000000000000064 00000000 00000000 ff");
    assert!(matches!(e.kind, DecodeErrorKind::Truncated { .. }));
    // LQ_CLIENT_LINK not a multiple of 16; REMOTE_ID without an id.
    assert!(matches!(
        err("0f 000001 0030 0004 00000000").kind,
        DecodeErrorKind::BadOptionLength { code: 48, .. }
    ));
    assert!(matches!(err("0c 00 00000000000000000000000000000000 00000000000000000000000000000000 0025 0004 00000009").kind, DecodeErrorKind::BadOptionLength { code: 37, len: 4 }));
    // Invalid UTF-8 in a status message.
    assert_eq!(
        err("07 000001 000d 0003 0000ff").kind,
        DecodeErrorKind::BadUtf8
    );
    // Compressed domain name pointer.
    assert!(matches!(
        err("07 000001 0018 0002 c00c").kind,
        DecodeErrorKind::BadDomainName(_)
    ));
    // Empty RELAY_MSG.
    assert_eq!(
        err("0c 00 00000000000000000000000000000000 00000000000000000000000000000000 0009 0000")
            .kind,
        DecodeErrorKind::Empty
    );
}

#[test]
fn relay_chain_depth_is_bounded_by_hop_count_limit() {
    let mut m = Message::Client(ClientMessage::new(MessageType::SOLICIT, 1));
    for hop in 0..9u8 {
        m = Message::Relay(RelayMessage {
            msg_type: MessageType::RELAY_FORW,
            hop_count: hop,
            link_address: Ipv6Addr::UNSPECIFIED,
            peer_address: Ipv6Addr::UNSPECIFIED,
            options: vec![DhcpOption::RelayMsg(Box::new(m))],
        });
    }
    // Nine levels (hop-count 0..=8) is the most a relay can forward.
    let nine = m.to_vec().unwrap();
    assert_eq!(Message::decode(&nine).unwrap(), m);
    let ten = Message::Relay(RelayMessage {
        msg_type: MessageType::RELAY_FORW,
        hop_count: 9,
        link_address: Ipv6Addr::UNSPECIFIED,
        peer_address: Ipv6Addr::UNSPECIFIED,
        options: vec![DhcpOption::RelayMsg(Box::new(m))],
    })
    .to_vec()
    .unwrap();
    assert_eq!(
        Message::decode(&ten).unwrap_err().kind,
        DecodeErrorKind::RelayTooDeep(9)
    );
}

#[test]
fn option_nesting_is_bounded() {
    // CLIENT_DATA inside CLIENT_DATA, 100 deep: rejected, not a stack overflow.
    let mut body: Vec<u8> = Vec::new();
    for _ in 0..100 {
        let mut o = vec![0, 45];
        o.extend_from_slice(&(body.len() as u16).to_be_bytes());
        o.extend_from_slice(&body);
        body = o;
    }
    let mut msg = h("11 000001");
    msg.extend_from_slice(&body);
    assert!(matches!(
        Message::decode(&msg).unwrap_err().kind,
        DecodeErrorKind::TooDeep(_)
    ));
}

#[test]
fn encode_rejects_oversized_values() {
    let big = Message::Client(ClientMessage {
        msg_type: MessageType::REPLY,
        xid: 1,
        options: vec![DhcpOption::InterfaceId(vec![0; 70_000])],
    });
    assert!(matches!(
        big.to_vec(),
        Err(EncodeError::OptionTooLong { code: 18, .. })
    ));
    let bad_xid = Message::Client(ClientMessage {
        msg_type: MessageType::REPLY,
        xid: 0x0100_0000,
        options: vec![],
    });
    assert_eq!(bad_xid.to_vec(), Err(EncodeError::XidTooLarge(0x0100_0000)));
}

#[test]
fn pretty_tree_names_leasequery_fields() {
    let bytes = h(&format!(
        "0f abcdef {SERVER} {REQUESTOR} {}",
        client_data_bytes()
    ));
    let t = pretty::tree(&Message::decode(&bytes).unwrap());
    for want in [
        "LEASEQUERY-REPLY(15) xid=0xabcdef",
        "CLIENT_DATA(45)",
        "IAPREFIX(26) 2001:db8:ff00::/56 preferred=1800 valid=3600",
        "CLT_TIME(46) 60s ago",
        "LQ_RELAY_DATA(47) peer-address=2001:db8:ffff::2",
        "RELAY_ID(53) 00:02:00:00:09:bf:0a:0b:0c:0d [DUID-EN 2495 0a:0b:0c:0d]",
        "REMOTE_ID(37) enterprise=9 id=0a:0b:0c",
    ] {
        assert!(t.contains(want), "missing {want:?} in\n{t}");
    }
}
