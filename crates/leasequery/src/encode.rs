//! Builds LEASEQUERY-REPLY / -DATA / -DONE frames straight from store
//! bindings with [`OptionWriter`], without materialising typed messages:
//! the bulk responder encodes one message per binding (RFC 5460 §5.3).

use lq6_proto::types::unix_to_dhcp_time;
use lq6_proto::{code, write_framed, Duid, EncodeError, MessageType, OptionWriter, Status};
use lq6_store::{Binding, BindingView, LeaseKind, LeaseState};

/// What goes into each CLIENT_DATA, fixed per query.
#[derive(Debug, Clone)]
pub struct DataSpec {
    /// Unix seconds used for relative times (CLT_TIME, remaining lifetimes);
    /// it is also the LQ_BASE_TIME sent, so both agree (RFC 7653 §6.3.1).
    pub now: u64,
    pub base_time: bool,
    /// ORO-requested options we can supply, minus the sensitive ones.
    pub relay_data: bool,
    pub extras: Vec<u16>,
}

impl DataSpec {
    pub fn new(now: u64, oro: &[u16], sensitive: &[u16]) -> DataSpec {
        let wanted = |c: u16| oro.contains(&c) && !sensitive.contains(&c);
        DataSpec {
            now,
            base_time: oro.contains(&code::LQ_BASE_TIME),
            relay_data: wanted(code::LQ_RELAY_DATA),
            extras: [
                code::REMOTE_ID,
                code::SUBSCRIBER_ID,
                code::INTERFACE_ID,
                code::RELAY_ID,
                code::CLIENT_LINKLAYER_ADDR,
            ]
            .into_iter()
            .filter(|c| wanted(*c))
            .collect(),
        }
    }
}

/// Remaining (preferred, valid) lifetimes at `now`; infinity stays infinity
/// (RFC 8415 §7.7). Kea reports remaining lifetimes too (PROTOCOL.md §5).
pub fn remaining(preferred: u32, valid: u32, expires_at: u64, now: u64) -> (u32, u32) {
    if valid == u32::MAX {
        return (preferred, valid);
    }
    let valid_left = expires_at.saturating_sub(now).min(u32::MAX as u64 - 1) as u32;
    let elapsed = valid.saturating_sub(valid_left);
    let pref_left = if preferred == u32::MAX {
        preferred
    } else {
        preferred.saturating_sub(elapsed)
    };
    (pref_left.min(valid_left), valid_left)
}

/// True if the binding has something to report (RFC 5007 §4.4.2: leases
/// with valid lifetime > 0).
pub fn has_live_lease(b: &Binding, now: u64) -> bool {
    has_live_lease_view(&b.view(), now)
}

/// [`has_live_lease`] for a borrowed view.
pub fn has_live_lease_view(b: &BindingView<'_>, now: u64) -> bool {
    b.leases()
        .any(|l| l.state == LeaseState::Active && (l.valid == u32::MAX || l.expires_at > now))
}

/// Writes one CLIENT_DATA option for `b` (RFC 5007 §4.4.2).
pub fn client_data(w: &mut OptionWriter, b: &Binding, spec: &DataSpec) -> Result<(), EncodeError> {
    client_data_view(w, &b.view(), spec)
}

/// Writes one CLIENT_DATA option for a borrowed view (what [`client_data`]
/// writes for the same binding); allocates nothing.
pub fn client_data_view(
    w: &mut OptionWriter,
    b: &BindingView<'_>,
    spec: &DataSpec,
) -> Result<(), EncodeError> {
    let cd = w.open(code::CLIENT_DATA);
    w.option(code::CLIENTID, b.duid)?;
    for l in b.leases() {
        if l.state != LeaseState::Active {
            continue;
        }
        let (pref, valid) = remaining(l.preferred, l.valid, l.expires_at, spec.now);
        if valid == 0 {
            continue;
        }
        match l.kind {
            LeaseKind::Na | LeaseKind::Ta => {
                w.u16(code::IAADDR);
                w.u16(24);
                w.addr(&l.addr);
                w.u32(pref);
                w.u32(valid);
            }
            LeaseKind::Pd => {
                w.u16(code::IAPREFIX);
                w.u16(25);
                w.u32(pref);
                w.u32(valid);
                w.u8(l.prefix_len);
                w.addr(&l.addr);
            }
        }
    }
    w.option_u32(
        code::CLT_TIME,
        spec.now.saturating_sub(b.cltt).min(u32::MAX as u64) as u32,
    );
    if let Some(r) = &b.relay {
        if spec.relay_data && !r.chain.is_empty() {
            let o = w.open(code::LQ_RELAY_DATA);
            w.addr(&r.peer_address);
            w.bytes(r.chain);
            w.close(o)?;
        }
        for &c in &spec.extras {
            match c {
                code::REMOTE_ID => {
                    if let Some((enterprise, id)) = r.remote_id {
                        let o = w.open(c);
                        w.u32(enterprise);
                        w.bytes(id);
                        w.close(o)?;
                    }
                }
                code::SUBSCRIBER_ID => {
                    if let Some(s) = r.subscriber_id {
                        w.option(c, s)?;
                    }
                }
                code::INTERFACE_ID => {
                    if let Some(s) = r.interface_id {
                        w.option(c, s)?;
                    }
                }
                code::RELAY_ID => {
                    for id in r.relay_ids() {
                        w.option(c, id)?;
                    }
                }
                code::CLIENT_LINKLAYER_ADDR => {
                    if let Some((hw, a)) = r.client_linklayer {
                        let o = w.open(c);
                        w.u16(hw);
                        w.bytes(a);
                        w.close(o)?;
                    }
                }
                _ => {}
            }
        }
    }
    w.close(cd)
}

/// The header options of a LEASEQUERY-REPLY (RFC 5460 §5.2): status,
/// SERVERID and the requestor's CLIENTID.
pub struct ReplyHead<'a> {
    pub xid: u32,
    pub status: Status,
    pub text: &'a str,
    pub server: &'a Duid,
    pub requestor: Option<&'a Duid>,
}

fn status(w: &mut OptionWriter, s: Status, text: &str) -> Result<(), EncodeError> {
    let o = w.open(code::STATUS_CODE);
    w.u16(s.to_u16());
    w.bytes(text.as_bytes());
    w.close(o)
}

/// Appends a framed LEASEQUERY-REPLY with the first binding, if any.
pub fn reply(
    buf: &mut Vec<u8>,
    h: &ReplyHead,
    first: Option<&Binding>,
    spec: &DataSpec,
) -> Result<(), EncodeError> {
    reply_view(buf, h, first.map(Binding::view).as_ref(), spec)
}

/// [`reply`] with a borrowed view of the first binding.
pub fn reply_view(
    buf: &mut Vec<u8>,
    h: &ReplyHead,
    first: Option<&BindingView<'_>>,
    spec: &DataSpec,
) -> Result<(), EncodeError> {
    write_framed(buf, |b| reply_body_view(b, h, first, spec))
}

/// An unframed LEASEQUERY-REPLY (for UDP).
pub fn reply_body(
    buf: &mut Vec<u8>,
    h: &ReplyHead,
    first: Option<&Binding>,
    spec: &DataSpec,
) -> Result<(), EncodeError> {
    reply_body_view(buf, h, first.map(Binding::view).as_ref(), spec)
}

fn reply_body_view(
    buf: &mut Vec<u8>,
    h: &ReplyHead,
    first: Option<&BindingView<'_>>,
    spec: &DataSpec,
) -> Result<(), EncodeError> {
    let mut w = OptionWriter::new(buf);
    head(&mut w, MessageType::LEASEQUERY_REPLY, h)?;
    if spec.base_time {
        w.option_u32(code::LQ_BASE_TIME, unix_to_dhcp_time(spec.now));
    }
    if let Some(b) = first {
        client_data_view(&mut w, b, spec)?;
    }
    Ok(())
}

/// Header, status, SERVERID and the requestor's CLIENTID: the start of every
/// reply (RFC 5460 §5.2).
fn head(w: &mut OptionWriter, msg_type: MessageType, h: &ReplyHead) -> Result<(), EncodeError> {
    w.client_header(msg_type.0, h.xid)?;
    status(w, h.status, h.text)?;
    w.option(code::SERVERID, h.server.as_bytes())?;
    if let Some(r) = h.requestor {
        w.option(code::CLIENTID, r.as_bytes())?;
    }
    Ok(())
}

/// An unframed reply that carries only `h`: a refused LEASEQUERY
/// (LEASEQUERY-REPLY), or the RFC 7653 §8 answers to ACTIVELEASEQUERY
/// (LEASEQUERY-REPLY + NotSupported) and STARTTLS (REPLY + TLSConnectionRefused).
pub fn status_reply(
    buf: &mut Vec<u8>,
    msg_type: MessageType,
    h: &ReplyHead,
) -> Result<(), EncodeError> {
    head(&mut OptionWriter::new(buf), msg_type, h)
}

/// Appends a framed LEASEQUERY-DATA: one CLIENT_DATA, no SERVERID, CLIENTID
/// or STATUS_CODE (RFC 5460 §5.3).
pub fn data(buf: &mut Vec<u8>, xid: u32, b: &Binding, spec: &DataSpec) -> Result<(), EncodeError> {
    data_view(buf, xid, &b.view(), spec)
}

/// [`data`] for a borrowed view.
pub fn data_view(
    buf: &mut Vec<u8>,
    xid: u32,
    b: &BindingView<'_>,
    spec: &DataSpec,
) -> Result<(), EncodeError> {
    write_framed(buf, |buf| {
        let mut w = OptionWriter::new(buf);
        w.client_header(MessageType::LEASEQUERY_DATA.0, xid)?;
        if spec.base_time {
            w.option_u32(code::LQ_BASE_TIME, unix_to_dhcp_time(spec.now));
        }
        client_data_view(&mut w, b, spec)
    })
}

/// Appends a framed LEASEQUERY-DONE with `status` (RFC 5460 §5.4).
pub fn done(
    buf: &mut Vec<u8>,
    xid: u32,
    st: Status,
    text: &str,
    spec: &DataSpec,
) -> Result<(), EncodeError> {
    write_framed(buf, |buf| {
        let mut w = OptionWriter::new(buf);
        w.client_header(MessageType::LEASEQUERY_DONE.0, xid)?;
        status(&mut w, st, text)?;
        if spec.base_time {
            w.option_u32(code::LQ_BASE_TIME, unix_to_dhcp_time(spec.now));
        }
        Ok(())
    })
}

/// [`status_reply`], framed for TCP.
pub fn refusal(buf: &mut Vec<u8>, msg_type: MessageType, h: &ReplyHead) -> Result<(), EncodeError> {
    write_framed(buf, |b| status_reply(b, msg_type, h))
}
