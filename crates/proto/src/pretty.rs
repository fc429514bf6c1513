//! A readable tree of a message, used by `lq6 decode` and in logs.

use crate::duid::colon_hex;
use crate::message::Message;
use crate::option::DhcpOption;
use crate::types::{code, unix_to_dhcp_time, EPOCH_2000};
use std::fmt::{self, Write};

/// Renders `m` as an indented tree, one field or option per line.
pub fn tree(m: &Message) -> String {
    let mut s = String::new();
    let _ = write_message(&mut s, m, 0);
    s
}

fn pad(s: &mut String, depth: usize) {
    for _ in 0..depth {
        s.push_str("  ");
    }
}

fn write_message(s: &mut String, m: &Message, d: usize) -> fmt::Result {
    pad(s, d);
    match m {
        Message::Client(c) => {
            writeln!(s, "{} xid={:#08x}", c.msg_type, c.xid)?;
            write_options(s, &c.options, d + 1)
        }
        Message::Relay(r) => {
            writeln!(
                s,
                "{} hop-count={} link-address={} peer-address={}",
                r.msg_type, r.hop_count, r.link_address, r.peer_address
            )?;
            write_options(s, &r.options, d + 1)
        }
        Message::Unknown { msg_type, body } => {
            writeln!(s, "unknown msg-type {msg_type} body={}", colon_hex(body))
        }
    }
}

fn write_options(s: &mut String, opts: &[DhcpOption], d: usize) -> fmt::Result {
    for o in opts {
        write_option(s, o, d)?;
    }
    Ok(())
}

fn absolute(t: u32) -> String {
    let unix = t as u64 + EPOCH_2000;
    debug_assert_eq!(unix_to_dhcp_time(unix), t);
    format!("{t} (unix {unix})")
}

fn write_option(s: &mut String, o: &DhcpOption, d: usize) -> fmt::Result {
    use DhcpOption as O;
    pad(s, d);
    let c = o.code();
    write!(s, "{}({c})", code::name(c))?;
    match o {
        O::ClientId(x) | O::ServerId(x) | O::RelayId(x) => {
            writeln!(s, " {} [{}]", x, x.describe())
        }
        O::IaNa(ia) | O::IaPd(ia) => {
            writeln!(s, " iaid={} t1={} t2={}", ia.iaid, ia.t1, ia.t2)?;
            write_options(s, &ia.options, d + 1)
        }
        O::IaTa(ia) => {
            writeln!(s, " iaid={}", ia.iaid)?;
            write_options(s, &ia.options, d + 1)
        }
        O::IaAddr(a) => {
            writeln!(s, " {} preferred={} valid={}", a.addr, a.preferred, a.valid)?;
            write_options(s, &a.options, d + 1)
        }
        O::IaPrefix(p) => {
            writeln!(
                s,
                " {}/{} preferred={} valid={}",
                p.prefix, p.prefix_len, p.preferred, p.valid
            )?;
            write_options(s, &p.options, d + 1)
        }
        O::Oro(v) => {
            let names: Vec<String> = v
                .iter()
                .map(|c| format!("{}({c})", code::name(*c)))
                .collect();
            writeln!(s, " {}", names.join(" "))
        }
        O::Preference(v) => writeln!(s, " {v}"),
        O::ElapsedTime(v) => writeln!(s, " {}.{:02}s", v / 100, v % 100),
        O::RelayMsg(m) => {
            writeln!(s)?;
            write_message(s, m, d + 1)
        }
        O::Unicast(a) => writeln!(s, " {a}"),
        O::StatusCode(st) => writeln!(
            s,
            " {} ({}) {:?}",
            st.status,
            st.status.to_u16(),
            st.message
        ),
        O::RapidCommit => writeln!(s),
        O::InterfaceId(b) | O::SubscriberId(b) => writeln!(s, " {}", colon_hex(b)),
        O::DnsServers(v) | O::LqClientLink(v) => {
            let a: Vec<String> = v.iter().map(|a| a.to_string()).collect();
            writeln!(s, " {}", a.join(" "))
        }
        O::DomainList(v) => {
            let a: Vec<String> = v.iter().map(|a| a.to_string()).collect();
            writeln!(s, " {}", a.join(" "))
        }
        O::InformationRefreshTime(v) => writeln!(s, " {v}s"),
        O::RemoteId(r) => writeln!(s, " enterprise={} id={}", r.enterprise, colon_hex(&r.id)),
        O::LqQuery(q) => {
            writeln!(s, " {} link-address={}", q.query_type, q.link_address)?;
            write_options(s, &q.options, d + 1)
        }
        O::ClientData(v) => {
            writeln!(s)?;
            write_options(s, v, d + 1)
        }
        O::CltTime(v) => writeln!(s, " {v}s ago"),
        O::LqRelayData(r) => {
            writeln!(s, " peer-address={}", r.peer_address)?;
            write_message(s, &r.message, d + 1)
        }
        O::ClientLinkLayerAddr(l) => writeln!(s, " hw={} {}", l.hw_type, colon_hex(&l.addr)),
        O::LqBaseTime(t) | O::LqStartTime(t) | O::LqEndTime(t) => writeln!(s, " {}", absolute(*t)),
        O::RelayPort(p) => writeln!(s, " {p}"),
        O::Unknown { data, .. } => writeln!(s, " {}", colon_hex(data)),
    }
}

impl fmt::Display for Message {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&tree(self))
    }
}
