//! Property tests: decode(encode(m)) == m for arbitrary typed messages, and
//! encode(decode(b)) == b for any b that decodes (random and mutated input).

use lq6_proto::option::is_typed;
use lq6_proto::*;
use proptest::prelude::*;
use std::net::Ipv6Addr;

fn addr() -> impl Strategy<Value = Ipv6Addr> {
    prop_oneof![
        any::<u128>().prop_map(Ipv6Addr::from),
        Just(Ipv6Addr::UNSPECIFIED),
    ]
}

fn duid() -> impl Strategy<Value = Duid> {
    prop::collection::vec(any::<u8>(), 3..=130).prop_map(|v| Duid::from_bytes(v).unwrap())
}

fn domain() -> impl Strategy<Value = DomainName> {
    prop::collection::vec(prop::collection::vec(any::<u8>(), 1..=20), 0..4)
        .prop_map(|l| DomainName::from_labels(l).unwrap())
}

fn leaf() -> impl Strategy<Value = DhcpOption> {
    use DhcpOption as O;
    prop_oneof![
        duid().prop_map(O::ClientId),
        duid().prop_map(O::ServerId),
        duid().prop_map(O::RelayId),
        prop::collection::vec(any::<u16>(), 0..6).prop_map(O::Oro),
        any::<u8>().prop_map(O::Preference),
        any::<u16>().prop_map(O::ElapsedTime),
        addr().prop_map(O::Unicast),
        (any::<u16>(), ".{0,12}")
            .prop_map(|(c, m)| O::StatusCode(StatusCode::new(Status::from_u16(c), m))),
        Just(O::RapidCommit),
        prop::collection::vec(any::<u8>(), 0..8).prop_map(O::InterfaceId),
        prop::collection::vec(addr(), 0..3).prop_map(O::DnsServers),
        prop::collection::vec(domain(), 0..3).prop_map(O::DomainList),
        any::<u32>().prop_map(O::InformationRefreshTime),
        (any::<u32>(), prop::collection::vec(any::<u8>(), 1..8))
            .prop_map(|(enterprise, id)| O::RemoteId(RemoteId { enterprise, id })),
        prop::collection::vec(any::<u8>(), 1..8).prop_map(O::SubscriberId),
        any::<u32>().prop_map(O::CltTime),
        prop::collection::vec(addr(), 1..3).prop_map(O::LqClientLink),
        (any::<u16>(), prop::collection::vec(any::<u8>(), 0..8))
            .prop_map(|(hw_type, addr)| O::ClientLinkLayerAddr(ClientLinkLayer { hw_type, addr })),
        any::<u32>().prop_map(O::LqBaseTime),
        any::<u32>().prop_map(O::LqStartTime),
        any::<u32>().prop_map(O::LqEndTime),
        any::<u16>().prop_map(O::RelayPort),
        (
            any::<u16>().prop_filter("untyped code", |c| !is_typed(*c)),
            prop::collection::vec(any::<u8>(), 0..10)
        )
            .prop_map(|(code, data)| O::Unknown { code, data }),
    ]
}

fn client_type() -> impl Strategy<Value = MessageType> {
    prop_oneof![1u8..=11, 14u8..=37].prop_map(MessageType)
}

fn message_with(
    opts: impl Strategy<Value = Vec<DhcpOption>> + Clone,
) -> impl Strategy<Value = Message> {
    prop_oneof![
        (client_type(), 0u32..0x0100_0000, opts.clone()).prop_map(|(msg_type, xid, options)| {
            Message::Client(ClientMessage {
                msg_type,
                xid,
                options,
            })
        }),
        (
            prop_oneof![Just(12u8), Just(13u8)],
            any::<u8>(),
            addr(),
            addr(),
            opts
        )
            .prop_map(|(t, hop_count, link_address, peer_address, options)| {
                Message::Relay(RelayMessage {
                    msg_type: MessageType(t),
                    hop_count,
                    link_address,
                    peer_address,
                    options,
                })
            }),
        (
            prop_oneof![Just(0u8), 38u8..=255],
            prop::collection::vec(any::<u8>(), 0..16)
        )
            .prop_map(|(msg_type, body)| Message::Unknown { msg_type, body }),
    ]
}

fn option() -> impl Strategy<Value = DhcpOption> + Clone {
    use DhcpOption as O;
    leaf().prop_recursive(4, 48, 4, |inner| {
        let opts = prop::collection::vec(inner, 0..4);
        prop_oneof![
            (any::<u32>(), any::<u32>(), any::<u32>(), opts.clone()).prop_map(
                |(iaid, t1, t2, options)| O::IaNa(Ia {
                    iaid,
                    t1,
                    t2,
                    options
                })
            ),
            (any::<u32>(), any::<u32>(), any::<u32>(), opts.clone()).prop_map(
                |(iaid, t1, t2, options)| O::IaPd(Ia {
                    iaid,
                    t1,
                    t2,
                    options
                })
            ),
            (any::<u32>(), opts.clone())
                .prop_map(|(iaid, options)| O::IaTa(IaTa { iaid, options })),
            (addr(), any::<u32>(), any::<u32>(), opts.clone()).prop_map(
                |(addr, preferred, valid, options)| {
                    O::IaAddr(IaAddr {
                        addr,
                        preferred,
                        valid,
                        options,
                    })
                }
            ),
            (any::<u32>(), any::<u32>(), 0u8..=128, addr(), opts.clone()).prop_map(
                |(preferred, valid, prefix_len, prefix, options)| {
                    O::IaPrefix(IaPrefix {
                        preferred,
                        valid,
                        prefix_len,
                        prefix,
                        options,
                    })
                }
            ),
            (any::<u8>(), addr(), opts.clone()).prop_map(|(t, link_address, options)| {
                O::LqQuery(LqQuery {
                    query_type: QueryType::from_u8(t),
                    link_address,
                    options,
                })
            }),
            opts.clone().prop_map(O::ClientData),
            message_with(opts.clone()).prop_map(|m| O::RelayMsg(Box::new(m))),
            (addr(), message_with(opts)).prop_map(|(peer_address, m)| O::LqRelayData(
                LqRelayData {
                    peer_address,
                    message: Box::new(m)
                }
            )),
        ]
    })
}

fn message() -> impl Strategy<Value = Message> {
    message_with(prop::collection::vec(option(), 0..6))
}

/// Valid messages to mutate: the INTEROP.md vector and a relayed SOLICIT.
fn seeds() -> Vec<Vec<u8>> {
    vec![
        hex::decode("0e1234560001000a00030001020000000001002c001f03000000000000000000000000000000000035000a0002000009bf0a0b0c0d").unwrap(),
        hex::decode("0c0020010db8000100000000000000000001fe8000000000000000000000000000010012000400000005002500070000000961626300090035010102030001000a00030001020000aa0100080002000000030012000000010000000000000000000e0000").unwrap(),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn typed_round_trip(m in message()) {
        let bytes = m.to_vec().unwrap();
        prop_assert_eq!(bytes.len(), m.wire_len());
        let back = Message::decode(&bytes).unwrap();
        prop_assert_eq!(back, m);
    }

    #[test]
    fn random_bytes_never_panic_and_round_trip(b in prop::collection::vec(any::<u8>(), 0..300)) {
        if let Ok(m) = Message::decode(&b) {
            prop_assert_eq!(m.to_vec().unwrap(), b);
        }
    }

    #[test]
    fn mutated_messages_never_panic_and_round_trip(
        seed in 0usize..2,
        flips in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..4),
        cut in any::<prop::sample::Index>(),
        truncate in any::<bool>(),
    ) {
        let mut b = seeds()[seed].clone();
        for (i, v) in flips {
            let i = i.index(b.len());
            b[i] = v;
        }
        if truncate {
            b.truncate(cut.index(b.len() + 1));
        }
        if let Ok(m) = Message::decode(&b) {
            prop_assert_eq!(m.to_vec().unwrap(), b);
        }
    }

    #[test]
    fn options_round_trip_bytewise(opts in prop::collection::vec(option(), 0..6)) {
        let mut buf = Vec::new();
        let mut w = OptionWriter::new(&mut buf);
        for o in &opts { o.encode(&mut w).unwrap(); }
        prop_assert_eq!(decode_options(&buf).unwrap(), opts);
    }
}
