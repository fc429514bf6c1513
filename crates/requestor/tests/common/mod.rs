//! Test-only scripted leasequery servers: they speak raw frames built with
//! lq6-proto and let each test decide what to send, in which order.
#![allow(dead_code)]

use lq6_proto::{
    ClientMessage, DhcpOption, Duid, IaAddr, IaPrefix, LqQuery, Message, MessageType, Status,
    StatusCode,
};
use std::net::{Ipv6Addr, SocketAddr};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};

pub fn server_duid() -> Duid {
    Duid::en(32473, b"fake")
}

pub fn client_duid(n: u8) -> Duid {
    Duid::ll(1, &[2, 0, 0, 0, 0, n])
}

/// A CLIENT_DATA for client `n`: one address, one prefix, CLT_TIME `clt`.
pub fn client_data(n: u8, clt: u32) -> DhcpOption {
    DhcpOption::ClientData(vec![
        DhcpOption::ClientId(client_duid(n)),
        DhcpOption::IaAddr(IaAddr {
            addr: Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 0, n as u16),
            preferred: 3600,
            valid: 7200,
            options: vec![],
        }),
        DhcpOption::IaPrefix(IaPrefix {
            preferred: 3600,
            valid: 7200,
            prefix_len: 56,
            prefix: Ipv6Addr::new(0x2001, 0xdb8, 0xa0, (n as u16) << 8, 0, 0, 0, 0),
            options: vec![],
        }),
        DhcpOption::CltTime(clt),
    ])
}

pub fn status(s: Status, msg: &str) -> DhcpOption {
    DhcpOption::StatusCode(StatusCode::new(s, msg))
}

pub fn msg(t: MessageType, xid: u32, opts: Vec<DhcpOption>) -> Message {
    let mut m = ClientMessage::new(t, xid);
    m.options = opts;
    Message::Client(m)
}

/// LEASEQUERY-REPLY with SERVERID, the requestor's CLIENTID and `opts`.
pub fn reply(xid: u32, requestor: &Duid, mut opts: Vec<DhcpOption>) -> Message {
    let mut v = vec![
        DhcpOption::ServerId(server_duid()),
        DhcpOption::ClientId(requestor.clone()),
    ];
    v.append(&mut opts);
    msg(MessageType::LEASEQUERY_REPLY, xid, v)
}

pub fn data(xid: u32, n: u8) -> Message {
    msg(MessageType::LEASEQUERY_DATA, xid, vec![client_data(n, 10)])
}

pub fn done(xid: u32) -> Message {
    msg(MessageType::LEASEQUERY_DONE, xid, vec![])
}

pub fn framed(m: &Message) -> Vec<u8> {
    let mut v = Vec::new();
    lq6_proto::write_framed(&mut v, |b| m.encode(b)).unwrap();
    v
}

pub async fn send(s: &mut TcpStream, m: &Message) {
    s.write_all(&framed(m)).await.unwrap();
}

/// Reads one framed message; `None` on EOF.
pub async fn recv(s: &mut TcpStream) -> Option<(ClientMessage, Vec<u8>)> {
    let mut len = [0u8; 2];
    s.read_exact(&mut len).await.ok()?;
    let mut b = vec![0u8; u16::from_be_bytes(len) as usize];
    s.read_exact(&mut b).await.ok()?;
    match Message::decode(&b).expect("requestor sent an undecodable message") {
        Message::Client(c) => Some((c, b)),
        other => panic!("requestor sent {other:?}"),
    }
}

pub fn lq_query(m: &ClientMessage) -> &LqQuery {
    m.options
        .iter()
        .find_map(|o| match o {
            DhcpOption::LqQuery(q) => Some(q),
            _ => None,
        })
        .expect("no LQ_QUERY")
}

pub fn requestor_duid(m: &ClientMessage) -> Duid {
    use lq6_proto::OptionsExt;
    m.options.client_id().expect("no CLIENTID").clone()
}

/// A TCP fake server running `script` on the first accepted connection.
pub async fn tcp_fake<F, Fut>(script: F) -> (SocketAddr, tokio::task::JoinHandle<()>)
where
    F: FnOnce(TcpStream) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let l = TcpListener::bind("[::1]:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let h = tokio::spawn(async move {
        let (s, _) = l.accept().await.unwrap();
        script(s).await;
    });
    (addr, h)
}

pub async fn udp_fake() -> (UdpSocket, SocketAddr) {
    let s = UdpSocket::bind("[::1]:0").await.unwrap();
    let a = s.local_addr().unwrap();
    (s, a)
}

/// Receives one UDP LEASEQUERY.
pub async fn udp_recv(s: &UdpSocket) -> (ClientMessage, SocketAddr) {
    let mut b = vec![0u8; 65536];
    let (n, from) = s.recv_from(&mut b).await.unwrap();
    match Message::decode(&b[..n]).unwrap() {
        Message::Client(c) => (c, from),
        other => panic!("requestor sent {other:?}"),
    }
}

pub async fn udp_send(s: &UdpSocket, to: SocketAddr, m: &Message) {
    s.send_to(&m.to_vec().unwrap(), to).await.unwrap();
}
