//! Codec benchmark (`cargo bench -p lq6-proto`). Prints a table of ns per
//! operation, with a same-run baseline (copying the same number of octets)
//! so figures can be compared across noisy machines as ratios.

use lq6_proto::*;
use std::hint::black_box;
use std::net::Ipv6Addr;
use std::time::Instant;

fn a(s: &str) -> Ipv6Addr {
    s.parse().unwrap()
}

/// LEASEQUERY-DATA carrying CLIENT_DATA(CLIENTID, IAPREFIX, CLT_TIME,
/// LQ_RELAY_DATA(RELAY-FORW with Relay-ID, Remote-ID, Interface-ID)).
fn lq_data() -> Message {
    Message::Client(ClientMessage {
        msg_type: MessageType::LEASEQUERY_DATA,
        xid: 0x123456,
        options: vec![DhcpOption::ClientData(vec![
            DhcpOption::ClientId(Duid::ll(1, &[2, 0, 0, 0, 0xaa, 1])),
            DhcpOption::IaPrefix(IaPrefix {
                preferred: 1800,
                valid: 3600,
                prefix_len: 56,
                prefix: a("2001:db8:100:100::"),
                options: vec![],
            }),
            DhcpOption::CltTime(60),
            DhcpOption::LqRelayData(LqRelayData {
                peer_address: a("2001:db8:ffff::2"),
                message: Box::new(Message::Relay(RelayMessage {
                    msg_type: MessageType::RELAY_FORW,
                    hop_count: 0,
                    link_address: a("2001:db8:1::1"),
                    peer_address: a("fe80::1"),
                    options: vec![
                        DhcpOption::InterfaceId(vec![0, 0, 0, 5]),
                        DhcpOption::RelayId(Duid::en(2495, &[10, 11, 12, 13])),
                        DhcpOption::RemoteId(RemoteId {
                            enterprise: 9,
                            id: vec![1, 2, 3, 4],
                        }),
                    ],
                })),
            }),
        ])],
    })
}

fn relayed_solicit() -> Vec<u8> {
    Message::Relay(RelayMessage {
        msg_type: MessageType::RELAY_FORW,
        hop_count: 0,
        link_address: a("2001:db8:1::1"),
        peer_address: a("fe80::1"),
        options: vec![
            DhcpOption::InterfaceId(vec![0, 0, 0, 5]),
            DhcpOption::RelayMsg(Box::new(Message::Client(ClientMessage {
                msg_type: MessageType::SOLICIT,
                xid: 0x010203,
                options: vec![
                    DhcpOption::ClientId(Duid::ll(1, &[2, 0, 0, 0, 0xaa, 1])),
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
            }))),
        ],
    })
    .to_vec()
    .unwrap()
}

/// Median ns per call over `rounds` rounds of `iters` calls.
fn measure(iters: u32, mut f: impl FnMut()) -> f64 {
    let mut v: Vec<f64> = (0..15)
        .map(|_| {
            let t = Instant::now();
            for _ in 0..iters {
                f();
            }
            t.elapsed().as_nanos() as f64 / iters as f64
        })
        .collect();
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn main() {
    let iters = std::env::var("LQ6_BENCH_ITERS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(200_000);
    let data = lq_data();
    let wire = data.to_vec().unwrap();
    let mut buf = Vec::with_capacity(4096);
    let mut copy = Vec::with_capacity(4096);
    let base_enc = measure(iters, || {
        copy.clear();
        copy.extend_from_slice(black_box(&wire));
        black_box(&copy);
    });
    let enc = measure(iters, || {
        buf.clear();
        black_box(&data).encode(&mut buf).unwrap();
        black_box(&buf);
    });
    let framed = measure(iters, || {
        buf.clear();
        write_framed(&mut buf, |b| black_box(&data).encode(b)).unwrap();
        black_box(&buf);
    });
    let sol = relayed_solicit();
    let base_dec = measure(iters, || {
        black_box(black_box(&sol).to_vec());
    });
    let dec = measure(iters, || {
        black_box(Message::decode(black_box(&sol)).unwrap());
    });
    let dec_data = measure(iters, || {
        black_box(Message::decode(black_box(&wire)).unwrap());
    });
    println!("| operation | octets | ns/op | target | x baseline |");
    println!("|---|---:|---:|---:|---:|");
    println!(
        "| baseline: copy {} octets into a reused Vec | {} | {base_enc:.1} | | 1.0 |",
        wire.len(),
        wire.len()
    );
    println!(
        "| encode LEASEQUERY-DATA (CLIENT_DATA + LQ_RELAY_DATA) | {} | {enc:.1} | <= 200 | {:.1} |",
        wire.len(),
        enc / base_enc
    );
    println!(
        "| encode the same, TCP-framed | {} | {framed:.1} | | {:.1} |",
        wire.len() + 2,
        framed / base_enc
    );
    println!(
        "| baseline: copy {} octets into a new Vec | {} | {base_dec:.1} | | 1.0 |",
        sol.len(),
        sol.len()
    );
    println!(
        "| decode RELAY-FORW(SOLICIT IA_NA IA_PD RAPID_COMMIT) | {} | {dec:.1} | <= 500 | {:.1} |",
        sol.len(),
        dec / base_dec
    );
    println!(
        "| decode LEASEQUERY-DATA | {} | {dec_data:.1} | | {:.1} |",
        wire.len(),
        dec_data / base_dec
    );
}
