//! Test helper for the interop tests (run inside network namespaces):
//!
//! - `lq6-testbin serve CONFIG`: the server, logging without colours; SIGTERM/SIGINT stop it.
//! - `lq6-testbin relay-probe SERVER LINK-ADDR COUNT RELAY-ID REMOTE-PEN REMOTE-ID`: a relay
//!   agent that adds Relay-ID (53, RFC 5460 §5.4.1), Remote-ID (37, RFC 4649), Interface-ID and
//!   RELAY_PORT (RFC 8357, so the reply comes back to its own port), and runs COUNT
//!   SOLICIT/REQUEST exchanges (IA_NA + IA_PD) for distinct clients. Prints one
//!   `granted DUID ADDR PREFIX/LEN` line per client.

use lq6_proto::{
    ClientMessage, DhcpOption, Duid, Ia, Message, MessageType, OptionsExt, RelayMessage, RemoteId,
};
use std::net::{SocketAddr, UdpSocket};
use std::process::ExitCode;
use std::time::Duration;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    match args.get(1).map(String::as_str) {
        Some("serve") if args.len() == 3 => serve(&args[2]),
        Some("relay-probe") if args.len() == 8 => match probe(&args[2..]) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("relay-probe: {e}");
                ExitCode::FAILURE
            }
        },
        _ => {
            eprintln!("usage: lq6-testbin serve CONFIG | relay-probe SERVER LINK-ADDR COUNT RELAY-ID REMOTE-PEN REMOTE-ID");
            ExitCode::from(2)
        }
    }
}

fn serve(path: &str) -> ExitCode {
    tracing_subscriber::fmt()
        .with_ansi(false)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("LQ6_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cfg = match lq6_config::Config::from_file(std::path::Path::new(path)) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::FAILURE;
        }
    };
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    rt.block_on(async move {
        let token = tokio_util::sync::CancellationToken::new();
        let mut server = tokio::spawn(lq6_server::serve::serve(cfg, true, token.clone()));
        let Ok(mut term) =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        else {
            return ExitCode::FAILURE;
        };
        tokio::select! {
            r = &mut server => {
                if let Ok(Err(e)) = r {
                    eprintln!("serve: {e}");
                }
                return ExitCode::FAILURE;
            }
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
        token.cancel();
        match server.await {
            Ok(Ok(())) => ExitCode::SUCCESS,
            Ok(Err(e)) => {
                eprintln!("serve: {e}");
                ExitCode::FAILURE
            }
            Err(e) => {
                eprintln!("serve task: {e}");
                ExitCode::FAILURE
            }
        }
    })
}

fn probe(a: &[String]) -> Result<(), String> {
    let server: SocketAddr = a[0].parse().map_err(|e| format!("server: {e}"))?;
    let link: std::net::Ipv6Addr = a[1].parse().map_err(|e| format!("link-address: {e}"))?;
    let count: u32 = a[2].parse().map_err(|e| format!("count: {e}"))?;
    let relay_id: Duid = a[3].parse().map_err(|e| format!("relay-id: {e}"))?;
    let pen: u32 = a[4].parse().map_err(|e| format!("pen: {e}"))?;
    let remote = a[5].as_bytes().to_vec();
    let sock = UdpSocket::bind("[::]:0").map_err(|e| e.to_string())?;
    sock.set_read_timeout(Some(Duration::from_secs(2)))
        .map_err(|e| e.to_string())?;
    let wrap = |m: Message, i: u32| -> Message {
        Message::Relay(RelayMessage {
            msg_type: MessageType::RELAY_FORW,
            hop_count: 0,
            link_address: link,
            peer_address: std::net::Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0xaa, i as u16),
            options: vec![
                DhcpOption::RelayPort(0),
                DhcpOption::InterfaceId(b"probe-port".to_vec()),
                DhcpOption::RelayId(relay_id.clone()),
                DhcpOption::RemoteId(RemoteId {
                    enterprise: pen,
                    id: remote.clone(),
                }),
                DhcpOption::RelayMsg(Box::new(m)),
            ],
        })
    };
    let mut buf = vec![0u8; 65536];
    for i in 0..count {
        let duid = Duid::ll(1, &[2, 0xaa, 0, (i >> 16) as u8, (i >> 8) as u8, i as u8]);
        let ias = || {
            vec![
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
            ]
        };
        let mut sol = ClientMessage::new(MessageType::SOLICIT, i + 1);
        sol.options.push(DhcpOption::ClientId(duid.clone()));
        sol.options.push(DhcpOption::ElapsedTime(0));
        sol.options.extend(ias());
        let adv = exchange(&sock, server, &wrap(Message::Client(sol), i), &mut buf)?;
        let sid = adv
            .options
            .as_slice()
            .server_id()
            .cloned()
            .ok_or("ADVERTISE without SERVERID")?;
        let mut req = ClientMessage::new(MessageType::REQUEST, i + 0x10000);
        req.options.push(DhcpOption::ClientId(duid.clone()));
        req.options.push(DhcpOption::ServerId(sid));
        req.options.push(DhcpOption::ElapsedTime(0));
        req.options.extend(ias());
        let rep = exchange(&sock, server, &wrap(Message::Client(req), i), &mut buf)?;
        let mut addr = String::from("-");
        let mut pfx = String::from("-");
        for o in &rep.options {
            match o {
                DhcpOption::IaNa(ia) => {
                    for x in &ia.options {
                        if let DhcpOption::IaAddr(a) = x {
                            addr = a.addr.to_string();
                        }
                    }
                }
                DhcpOption::IaPd(ia) => {
                    for x in &ia.options {
                        if let DhcpOption::IaPrefix(p) = x {
                            pfx = format!("{}/{}", p.prefix, p.prefix_len);
                        }
                    }
                }
                _ => {}
            }
        }
        println!("granted {} {addr} {pfx}", hex(duid.as_bytes()));
    }
    Ok(())
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Sends a RELAY-FORW (up to 3 times) and returns the client message inside the RELAY-REPL.
fn exchange(
    sock: &UdpSocket,
    server: SocketAddr,
    m: &Message,
    buf: &mut [u8],
) -> Result<ClientMessage, String> {
    let bytes = m.to_vec().map_err(|e| e.to_string())?;
    for _ in 0..3 {
        sock.send_to(&bytes, server).map_err(|e| e.to_string())?;
        let Ok((n, _)) = sock.recv_from(buf) else {
            continue;
        };
        let reply = Message::decode(&buf[..n]).map_err(|e| e.to_string())?;
        if reply.msg_type() != MessageType::RELAY_REPL {
            return Err("expected RELAY-REPL".into());
        }
        if let (_, Some(Message::Client(c))) = reply.unwrap_relays() {
            return Ok(c.clone());
        }
        return Err("RELAY-REPL without a client message".into());
    }
    Err("no answer".into())
}
