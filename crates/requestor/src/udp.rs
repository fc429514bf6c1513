//! RFC 5007 Leasequery over UDP: retransmission (RFC 8415 §15 with the
//! LQ_* parameters), reply validation (§4.3.3 and PROTOCOL.md §3.1) and
//! LQ_CLIENT_LINK re-queries.

use crate::binding::{take_client_data, unix_now, Binding};
use crate::bulk::status_error;
use crate::config::RequestorConfig;
use crate::error::Error;
use crate::query::Query;
use lq6_proto::{ClientMessage, DhcpOption, Message, MessageType, OptionsExt};
use std::net::{Ipv6Addr, SocketAddr};
use tokio::net::UdpSocket;
use tokio::time::Instant;

/// Sends RFC 5007 LEASEQUERY messages over UDP.
#[derive(Debug, Clone)]
pub struct UdpRequestor {
    cfg: RequestorConfig,
    bind: SocketAddr,
}

/// What one validated LEASEQUERY-REPLY said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UdpAnswer {
    /// CLIENT_DATA (one binding), or `None`: the server has no binding.
    Binding(Option<Binding>),
    /// LQ_CLIENT_LINK: the client is on several links; ask on each.
    ClientLinks(Vec<Ipv6Addr>),
}

impl UdpRequestor {
    /// Uses an ephemeral port on `[::]`.
    pub fn new(cfg: RequestorConfig) -> Self {
        Self::with_bind(cfg, SocketAddr::from((Ipv6Addr::UNSPECIFIED, 0)))
    }

    /// Sends from `bind` (e.g. a particular source address).
    pub fn with_bind(cfg: RequestorConfig, bind: SocketAddr) -> Self {
        UdpRequestor { cfg, bind }
    }

    pub fn config(&self) -> &RequestorConfig {
        &self.cfg
    }

    /// Asks `server`; on LQ_CLIENT_LINK asks again once per returned link with
    /// that link-address (RFC 5007 §4.3.3). Returns the bindings found.
    pub async fn query(&self, server: SocketAddr, q: &Query) -> Result<Vec<Binding>, Error> {
        match self.ask(server, q).await? {
            UdpAnswer::Binding(b) => Ok(b.into_iter().collect()),
            UdpAnswer::ClientLinks(links) => {
                let mut out = Vec::new();
                for link in links {
                    let q2 = q.clone().with_link(link);
                    // Once per link: a second LQ_CLIENT_LINK is not followed.
                    if let UdpAnswer::Binding(Some(b)) = self.ask(server, &q2).await? {
                        out.push(b);
                    }
                }
                Ok(out)
            }
        }
    }

    /// One exchange: sends `q`, retransmits, validates, interprets the reply.
    pub async fn ask(&self, server: SocketAddr, q: &Query) -> Result<UdpAnswer, Error> {
        let xid = fastrand::u32(..) & 0x00ff_ffff;
        let reply = self.exchange(server, q, xid).await?;
        if let Some(e) = status_error(server, &reply.options) {
            return Err(e);
        }
        let links = reply.options.iter().find_map(|o| match o {
            DhcpOption::LqClientLink(v) => Some(v.clone()),
            _ => None,
        });
        let (cd, base) = take_client_data(reply.options);
        if let Some(cd) = cd {
            let b = Binding::from_client_data(cd, server, q.known_link(), base, unix_now());
            // RFC 5007 §4.3.3: a CLIENT_DATA without CLT_TIME is discarded.
            return Ok(UdpAnswer::Binding(b.clt_time.is_some().then_some(b)));
        }
        Ok(match links {
            Some(l) if !l.is_empty() => UdpAnswer::ClientLinks(l),
            _ => UdpAnswer::Binding(None),
        })
    }

    /// Sends the LEASEQUERY with transaction-id `xid` until a valid
    /// LEASEQUERY-REPLY arrives or retransmission gives up.
    pub async fn exchange(
        &self,
        server: SocketAddr,
        q: &Query,
        xid: u32,
    ) -> Result<ClientMessage, Error> {
        let msg = Message::Client(q.to_message(xid, &self.cfg.duid)).to_vec()?;
        let sock = UdpSocket::bind(self.bind)
            .await
            .map_err(|e| Error::io(server, &e))?;
        let rt_params = self.cfg.retransmit;
        let start = Instant::now();
        let overall = (!rt_params.mrd.is_zero()).then(|| start + rt_params.mrd);
        let mut rt = None;
        let mut sent = 0u32;
        let mut buf = vec![0u8; 65536];
        loop {
            sock.send_to(&msg, server)
                .await
                .map_err(|e| Error::io(server, &e))?;
            sent += 1;
            let this_rt = rt_params.next_rt(rt);
            rt = Some(this_rt);
            let mut deadline = Instant::now() + this_rt;
            if let Some(o) = overall {
                deadline = deadline.min(o);
            }
            loop {
                let r = tokio::time::timeout_at(deadline, sock.recv_from(&mut buf)).await;
                let (n, from) = match r {
                    Err(_) => break,
                    Ok(Err(e)) => return Err(Error::io(server, &e)),
                    Ok(Ok(x)) => x,
                };
                let data = buf.get(..n).unwrap_or_default();
                match self.validate(server, from, data, xid) {
                    Ok(m) => return Ok(m),
                    Err(why) => {
                        tracing::debug!(%server, %from, why, "discarded a leasequery reply")
                    }
                }
            }
            let out_of_tries = rt_params.mrc != 0 && sent >= rt_params.mrc;
            let out_of_time = overall.is_some_and(|o| Instant::now() >= o);
            if out_of_tries || out_of_time {
                return Err(Error::Timeout {
                    server,
                    after: start.elapsed(),
                    what: "a LEASEQUERY-REPLY",
                });
            }
        }
    }

    /// RFC 5007 §4.3.3 validation (PROTOCOL.md §3.1 step 4).
    fn validate(
        &self,
        server: SocketAddr,
        from: SocketAddr,
        data: &[u8],
        xid: u32,
    ) -> Result<ClientMessage, &'static str> {
        if !server.ip().is_multicast() && from.ip() != server.ip() {
            return Err("not from the server queried");
        }
        let Ok(Message::Client(m)) = Message::decode(data) else {
            return Err("not a decodable client/server message");
        };
        if m.msg_type != MessageType::LEASEQUERY_REPLY {
            return Err("not a LEASEQUERY-REPLY");
        }
        if m.xid != xid {
            return Err("transaction-id mismatch");
        }
        if m.options.server_id().is_none() {
            return Err("no SERVERID");
        }
        match m.options.client_id() {
            None => Err("no CLIENTID"),
            Some(d) if *d != self.cfg.duid => Err("CLIENTID is not ours"),
            Some(_) => Ok(m),
        }
    }
}
