//! Several servers in parallel (RFC 5460 §6.4) and reconciliation of their
//! answers (RFC 5007 §4.3.4).

use crate::binding::Binding;
use crate::bulk::bulk_query;
use crate::config::RequestorConfig;
use crate::error::Error;
use crate::query::Query;
use crate::udp::UdpRequestor;
use lq6_proto::Duid;
use std::collections::HashMap;
use std::net::{Ipv6Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};

/// How to ask.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// RFC 5007 over UDP.
    Udp,
    /// RFC 5460 Bulk Leasequery over TCP.
    Tcp,
}

/// What each server did.
#[derive(Debug)]
pub struct ServerOutcome {
    pub server: SocketAddr,
    /// Number of bindings it returned, or why it failed. Bindings received
    /// before a failure are kept.
    pub result: Result<usize, Error>,
}

/// Asks every server in parallel and reconciles the answers with
/// [`reconcile`]. `progress`, when given, counts bindings as they arrive.
pub async fn query_servers(
    servers: &[SocketAddr],
    q: &Query,
    transport: Transport,
    cfg: &RequestorConfig,
    progress: Option<&AtomicU64>,
) -> (Vec<Binding>, Vec<ServerOutcome>) {
    let futs = servers.iter().map(|&s| async move {
        let mut got = Vec::new();
        let r = match transport {
            Transport::Udp => UdpRequestor::new(cfg.clone()).query(s, q).await.map(|v| {
                if let Some(p) = progress {
                    p.fetch_add(v.len() as u64, Ordering::Relaxed);
                }
                got = v;
            }),
            Transport::Tcp => {
                async {
                    let mut st = bulk_query(s, q, cfg.clone()).await?;
                    while let Some(b) = st.next().await {
                        got.push(b?);
                        if let Some(p) = progress {
                            p.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    Ok(())
                }
                .await
            }
        };
        let n = got.len();
        (
            got,
            ServerOutcome {
                server: s,
                result: r.map(|_| n),
            },
        )
    });
    let results = futures::future::join_all(futs).await;
    let mut all = Vec::new();
    let mut outcomes = Vec::new();
    for (b, o) in results {
        all.extend(b);
        outcomes.push(o);
    }
    (reconcile(all), outcomes)
}

#[derive(Clone, Copy, PartialEq, Eq, Hash)]
enum LeaseKey {
    Addr(Ipv6Addr),
    Prefix(Ipv6Addr, u8),
}

/// RFC 5007 §4.3.4. The same address or prefix reported in several
/// bindings is a conflict: only the binding with the most recent client
/// contact ([`Binding::last_contact`]: the smallest clt-time, adjusted by
/// base-time when present; ties go to the earlier binding) keeps it.
/// Disjoint data are merged: bindings of the same client on the same link
/// become one, with the leases of all and the other fields of the most
/// recent. A binding that lost every lease it had is dropped.
pub fn reconcile(bindings: Vec<Binding>) -> Vec<Binding> {
    let contact: Vec<u64> = bindings
        .iter()
        .map(|b| b.last_contact().unwrap_or(0))
        .collect();
    let mut winner: HashMap<LeaseKey, usize> = HashMap::new();
    for (i, b) in bindings.iter().enumerate() {
        let keys = b.addresses.iter().map(|a| LeaseKey::Addr(a.address)).chain(
            b.prefixes
                .iter()
                .map(|p| LeaseKey::Prefix(p.prefix, p.prefix_len)),
        );
        for k in keys {
            let w = winner.entry(k).or_insert(i);
            if contact[i] > contact[*w] {
                *w = i;
            }
        }
    }
    let mut out: Vec<Binding> = Vec::with_capacity(bindings.len());
    let mut at: HashMap<(Option<Duid>, Option<Ipv6Addr>), usize> = HashMap::new();
    let mut out_contact: Vec<u64> = Vec::new();
    for (i, mut b) in bindings.into_iter().enumerate() {
        let had = b.addresses.len() + b.prefixes.len();
        b.addresses
            .retain(|a| winner.get(&LeaseKey::Addr(a.address)) == Some(&i));
        b.prefixes
            .retain(|p| winner.get(&LeaseKey::Prefix(p.prefix, p.prefix_len)) == Some(&i));
        if had > 0 && b.addresses.is_empty() && b.prefixes.is_empty() {
            continue;
        }
        let key = (b.client_id.clone(), b.link_address);
        match at.get(&key) {
            Some(&j) if b.client_id.is_some() => {
                let mut merged = if contact[i] > out_contact[j] {
                    out_contact[j] = contact[i];
                    let old = std::mem::replace(&mut out[j], b);
                    (old.addresses, old.prefixes)
                } else {
                    (b.addresses, b.prefixes)
                };
                out[j].addresses.append(&mut merged.0);
                out[j].prefixes.append(&mut merged.1);
            }
            _ => {
                at.insert(key, out.len());
                out.push(b);
                out_contact.push(contact[i]);
            }
        }
    }
    out
}
