//! `lq6 query`: ask leasequery servers (RFC 5007 over UDP, RFC 5460 Bulk
//! Leasequery over TCP) and print the bindings. The work is done by
//! `lq6-requestor`; this module parses arguments and formats output.

use anyhow::Context;
use lq6_proto::duid::colon_hex;
use lq6_proto::types::{dhcp_time_to_unix, unix_to_dhcp_time};
use lq6_proto::writer::OptionWriter;
use lq6_proto::{code, Duid, Message};
use lq6_requestor::{
    query_servers, Binding, BulkConnection, Error, ErrorKind, Query, RequestorConfig, Transport,
    UdpRequestor,
};
use std::io::{IsTerminal, Write};
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const EXIT_CODES: &str = "\
Exit codes:
  0  success: at least one binding returned
  1  success, but no bindings matched
  2  a server answered with an error status (printed by name, e.g. NotAllowed);
     also used by the argument parser for usage errors
  3  connection failure: cannot connect, connection lost, or a protocol violation by the server
  4  timeout: no answer after UDP retransmissions, or a TCP read/write blocked longer than --timeout
With several servers, the first of 2, 4, 3 that any server caused wins over 0/1; the bindings
that did arrive are printed anyway.

Examples:
  lq6 query --server 2001:db8::1 relay-id 00:03:00:01:02:00:00:00:00:01
  lq6 query --server 2001:db8::1 --format json link 2001:db8:1::1
  lq6 query --server 2001:db8::1 --server 2001:db8::2 --udp address 2001:db8:1::1000
  lq6 query --server 2001:db8::1 --since 2024-05-01T00:00:00Z remote-id 9:0a0b0c";

#[derive(clap::Args)]
#[command(after_help = EXIT_CODES)]
pub struct QueryArgs {
    /// Server to ask: an address, or [address]:port. Repeat to ask several
    /// servers in parallel; their answers are reconciled (RFC 5007 §4.3.4).
    #[arg(long = "server", short = 's', required = true, value_name = "ADDR")]
    servers: Vec<String>,
    /// Use Bulk Leasequery over TCP (RFC 5460). The default for relay-id, link and remote-id.
    #[arg(long, conflicts_with = "udp")]
    tcp: bool,
    /// Use Leasequery over UDP (RFC 5007). The default for address and client-id.
    #[arg(long)]
    udp: bool,
    /// Server port (RFC 5460 §5.6, RFC 8415 §7.2).
    #[arg(long, default_value_t = 547)]
    port: u16,
    /// Only bindings on the link identified by this address (LQ_QUERY link-address).
    #[arg(long, value_name = "ADDR")]
    link_filter: Option<Ipv6Addr>,
    /// Only bindings changed at or after this time (LQ_START_TIME): unix seconds or RFC 3339.
    #[arg(long, value_parser = parse_time, value_name = "TIME")]
    since: Option<u64>,
    /// Only bindings changed at or before this time (LQ_END_TIME): unix seconds or RFC 3339.
    #[arg(long, value_parser = parse_time, value_name = "TIME")]
    until: Option<u64>,
    /// Ask for each client's relay data (LQ_RELAY_DATA).
    #[arg(long)]
    relay_data: bool,
    /// Ask for the server's base time (LQ_BASE_TIME) in every reply.
    #[arg(long)]
    base_time: bool,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Table)]
    format: Format,
    /// The requestor's own DUID, sent as CLIENTID (default: DUID-LL of this host).
    #[arg(long, value_name = "DUID")]
    duid: Option<Duid>,
    /// Local [address]:port for UDP queries (default: any address, an ephemeral
    /// port). Some servers (dhcpkit) answer only to port 546.
    #[arg(long, value_name = "ADDR:PORT")]
    bind: Option<SocketAddr>,
    /// BULK_LQ_DATA_TIMEOUT in seconds: limit on a blocked TCP read or write.
    #[arg(long, default_value_t = 300, value_name = "SECS")]
    timeout: u64,
    #[command(subcommand)]
    target: Target,
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Format {
    /// Aligned columns for people.
    Table,
    /// JSON lines: one binding per line.
    Json,
    /// CSV with a header: one row per address or prefix.
    Csv,
}

/// The query type and its argument. DUIDs: hex with or without colons, or
/// ll:HWTYPE:MAC, llt:HWTYPE:TIME:MAC, en:PEN:HEX.
#[derive(clap::Subcommand)]
enum Target {
    /// QUERY_BY_RELAY_ID (TCP): bindings associated with a relay's DUID.
    RelayId { duid: Duid },
    /// QUERY_BY_LINK_ADDRESS (TCP): every binding on a link.
    Link { address: Ipv6Addr },
    /// QUERY_BY_REMOTE_ID (TCP): ENTERPRISE:HEX, e.g. 9:0a0b0c.
    RemoteId {
        #[arg(value_parser = parse_remote_id)]
        remote_id: (u32, Vec<u8>),
    },
    /// QUERY_BY_CLIENTID: a client's bindings.
    ClientId { duid: Duid },
    /// QUERY_BY_ADDRESS: the client holding an address (or a prefix containing it).
    Address { address: Ipv6Addr },
}

fn parse_remote_id(s: &str) -> Result<(u32, Vec<u8>), String> {
    let (pen, id) = s
        .split_once(':')
        .ok_or("expected ENTERPRISE:HEX, e.g. 9:0a0b0c")?;
    let pen: u32 = pen
        .parse()
        .map_err(|_| format!("bad enterprise number {pen:?}"))?;
    let id = lq6_proto::duid::parse_hex(id).ok_or_else(|| format!("bad hex {id:?}"))?;
    Ok((pen, id))
}

/// Unix seconds, or RFC 3339 (`2024-05-01T12:00:00Z`, `...+02:00`, fractions ignored).
fn parse_time(s: &str) -> Result<u64, String> {
    if let Ok(v) = s.parse::<u64>() {
        return Ok(v);
    }
    parse_rfc3339(s).ok_or_else(|| format!("{s:?} is neither unix seconds nor RFC 3339"))
}

fn parse_rfc3339(s: &str) -> Option<u64> {
    let b = s.as_bytes();
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b't' | b' ') {
        return None;
    }
    if b[13] != b':' || b[16] != b':' {
        return None;
    }
    let num = |r: std::ops::Range<usize>| s.get(r)?.parse::<i64>().ok();
    let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (h, mi, sec) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || sec > 60 {
        return None;
    }
    let mut rest = &s[19..];
    if let Some(r) = rest.strip_prefix('.') {
        let n = r.bytes().take_while(u8::is_ascii_digit).count();
        if n == 0 {
            return None;
        }
        rest = &r[n..];
    }
    let offset = match rest {
        "Z" | "z" => 0,
        _ => {
            let sign = match rest.as_bytes().first()? {
                b'+' => 1,
                b'-' => -1,
                _ => return None,
            };
            let (oh, om) = rest.get(1..)?.split_once(':')?;
            if oh.len() != 2 || om.len() != 2 {
                return None;
            }
            sign * (oh.parse::<i64>().ok()? * 3600 + om.parse::<i64>().ok()? * 60)
        }
    };
    // Days from civil (Howard Hinnant's algorithm).
    let y2 = if mo <= 2 { y - 1 } else { y };
    let era = y2.div_euclid(400);
    let yoe = y2 - era * 400;
    let mp = (mo + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let t = days * 86_400 + h * 3600 + mi * 60 + sec - offset;
    u64::try_from(t).ok()
}

fn parse_server(s: &str, port: u16) -> anyhow::Result<SocketAddr> {
    if let Ok(a) = s.parse::<SocketAddr>() {
        return Ok(a);
    }
    let ip: IpAddr = s
        .trim_start_matches('[')
        .trim_end_matches(']')
        .parse()
        .with_context(|| format!("--server {s:?}: expected an IP address or [address]:port"))?;
    Ok(SocketAddr::new(ip, port))
}

pub async fn run(a: QueryArgs) -> anyhow::Result<ExitCode> {
    let servers = a
        .servers
        .iter()
        .map(|s| parse_server(s, a.port))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let mut q = match &a.target {
        Target::RelayId { duid } => Query::by_relay_id(duid.clone()),
        Target::Link { address } => Query::by_link(*address),
        Target::RemoteId { remote_id } => Query::by_remote_id(remote_id.0, remote_id.1.clone()),
        Target::ClientId { duid } => Query::by_client_id(duid.clone()),
        Target::Address { address } => Query::by_address(*address),
    };
    if let Some(l) = a.link_filter {
        q = q.with_link(l);
    }
    q = q
        .with_relay_data(a.relay_data)
        .with_base_time(a.base_time)
        .with_start_time(a.since.map(unix_to_dhcp_time))
        .with_end_time(a.until.map(unix_to_dhcp_time));
    let bulk_only = q.kind.query_type().is_bulk_only();
    let transport = if a.tcp || (!a.udp && bulk_only) {
        Transport::Tcp
    } else {
        Transport::Udp
    };
    if transport == Transport::Udp && bulk_only {
        eprintln!(
            "lq6 query: warning: {} is a Bulk Leasequery type; over UDP servers answer NotAllowed (RFC 5460 §4)",
            q.kind.query_type()
        );
    }
    let mut cfg = RequestorConfig {
        bulk_timeout: Duration::from_secs(a.timeout.max(1)),
        ..RequestorConfig::default()
    };
    if let Some(d) = &a.duid {
        cfg.duid = d.clone();
    }

    let count = Arc::new(AtomicU64::new(0));
    let progress = std::io::stderr()
        .is_terminal()
        .then(|| spawn_progress(count.clone()));
    let stdout = std::io::stdout();
    let mut out = Printer::new(a.format, std::io::BufWriter::new(stdout.lock()));
    out.header()?;

    let mut errors: Vec<Error> = Vec::new();
    let mut printed = 0u64;
    if servers.len() == 1 && transport == Transport::Tcp {
        // One server over TCP: stream bindings as they arrive.
        let server = servers[0];
        let mut io_err = None;
        let r: Result<(), Error> = async {
            let conn = BulkConnection::connect(server, cfg.clone()).await?;
            let mut st = conn.query(&q).await?;
            while let Some(b) = st.next().await {
                if let Err(e) = out.binding(&b?) {
                    io_err = Some(e);
                    break;
                }
                printed += 1;
                count.fetch_add(1, Ordering::Relaxed);
            }
            Ok(())
        }
        .await;
        if let Some(e) = io_err {
            return Err(e.into());
        }
        if let Err(e) = r {
            errors.push(e);
        }
    } else if servers.len() == 1 {
        let udp = match a.bind {
            Some(b) => UdpRequestor::with_bind(cfg.clone(), b),
            None => UdpRequestor::new(cfg.clone()),
        };
        match udp.query(servers[0], &q).await {
            Ok(v) => {
                for b in &v {
                    out.binding(b)?;
                    printed += 1;
                }
            }
            Err(e) => errors.push(e),
        }
    } else {
        let (merged, outcomes) =
            query_servers(&servers, &q, transport, &cfg, Some(count.as_ref())).await;
        for b in &merged {
            out.binding(b)?;
            printed += 1;
        }
        for o in outcomes {
            if let Err(e) = o.result {
                errors.push(e);
            }
        }
    }
    out.finish()?;
    if let Some((stop, h)) = progress {
        stop.store(true, Ordering::Relaxed);
        let _ = h.await;
    }
    for e in &errors {
        eprintln!("lq6 query: {e}");
    }
    let code = [
        ErrorKind::Status,
        ErrorKind::Timeout,
        ErrorKind::Connection,
        ErrorKind::Protocol,
    ]
    .into_iter()
    .find(|k| errors.iter().any(|e| e.kind() == *k))
    .map(|k| match k {
        ErrorKind::Status => 2,
        ErrorKind::Timeout => 4,
        _ => 3,
    })
    .or_else(|| {
        errors
            .iter()
            .any(|e| e.kind() == ErrorKind::Usage)
            .then_some(3)
    })
    .unwrap_or(if printed == 0 { 1 } else { 0 });
    if printed == 0 && errors.is_empty() {
        eprintln!("lq6 query: no bindings");
    }
    Ok(ExitCode::from(code))
}

/// A progress line on stderr (only when it is a terminal): bindings so far and rate.
fn spawn_progress(
    count: Arc<AtomicU64>,
) -> (
    Arc<std::sync::atomic::AtomicBool>,
    tokio::task::JoinHandle<()>,
) {
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stop2 = stop.clone();
    let h = tokio::spawn(async move {
        let start = Instant::now();
        let mut shown = false;
        while !stop2.load(Ordering::Relaxed) {
            tokio::time::sleep(Duration::from_millis(250)).await;
            let n = count.load(Ordering::Relaxed);
            let secs = start.elapsed().as_secs_f64().max(1e-3);
            eprint!("\r\x1b[K{n} bindings, {:.0}/s", n as f64 / secs);
            shown = true;
        }
        if shown {
            eprint!("\r\x1b[K");
        }
    });
    (stop, h)
}

struct Printer<W: Write> {
    format: Format,
    w: W,
    /// The table header waits for the first row.
    table_header: bool,
}

fn hex(b: &[u8]) -> String {
    let mut s = String::with_capacity(b.len() * 2);
    for x in b {
        s.push_str(&format!("{x:02x}"));
    }
    s
}

fn relay_message_hex(m: &Message) -> String {
    m.to_vec().map(|v| hex(&v)).unwrap_or_default()
}

fn option_body(o: &lq6_proto::DhcpOption) -> Vec<u8> {
    let mut v = Vec::new();
    if o.encode(&mut OptionWriter::new(&mut v)).is_err() {
        return Vec::new();
    }
    v.split_off(4.min(v.len()))
}

fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

fn opt_str<T: ToString>(v: Option<T>) -> String {
    v.map(|x| x.to_string()).unwrap_or_default()
}

impl<W: Write> Printer<W> {
    fn new(format: Format, w: W) -> Self {
        Printer {
            format,
            w,
            table_header: format == Format::Table,
        }
    }

    fn header(&mut self) -> std::io::Result<()> {
        match self.format {
            Format::Table => Ok(()),
            Format::Csv => writeln!(
                self.w,
                "server,client_id,link_address,type,lease,preferred_lifetime,valid_lifetime,clt_time,last_contact,base_time,relay_peer"
            ),
            Format::Json => Ok(()),
        }
    }

    fn table_header(&mut self) -> std::io::Result<()> {
        self.table_header = false;
        writeln!(
            self.w,
            "{:<32} {:<24} {:>8}  LEASES (preferred/valid s)",
            "CLIENT-ID", "LINK", "CLT-TIME"
        )
    }

    fn binding(&mut self, b: &Binding) -> std::io::Result<()> {
        match self.format {
            Format::Table => self.table(b),
            Format::Json => self.json(b),
            Format::Csv => self.csv(b),
        }
    }

    fn table(&mut self, b: &Binding) -> std::io::Result<()> {
        if self.table_header {
            self.table_header()?;
        }
        let mut leases: Vec<String> = b
            .addresses
            .iter()
            .map(|a| format!("{} ({}/{})", a.address, a.preferred, a.valid))
            .collect();
        leases.extend(b.prefixes.iter().map(|p| {
            format!(
                "{}/{} ({}/{})",
                p.prefix, p.prefix_len, p.preferred, p.valid
            )
        }));
        if let Some(r) = &b.relay_data {
            leases.push(format!("relay {}", r.peer_address));
        }
        writeln!(
            self.w,
            "{:<32} {:<24} {:>8}  {}",
            b.client_id
                .as_ref()
                .map(|d| d.to_string())
                .unwrap_or_else(|| "-".into()),
            b.link_address
                .map(|l| l.to_string())
                .unwrap_or_else(|| "-".into()),
            b.clt_time
                .map(|c| c.to_string())
                .unwrap_or_else(|| "-".into()),
            leases.join(", ")
        )
    }

    fn json(&mut self, b: &Binding) -> std::io::Result<()> {
        use serde_json::json;
        let v = json!({
            "server": b.server.to_string(),
            "client_id": b.client_id.as_ref().map(|d| d.to_string()),
            "link_address": b.link_address.map(|l| l.to_string()),
            "addresses": b.addresses.iter().map(|a| json!({
                "address": a.address.to_string(),
                "preferred_lifetime": a.preferred,
                "valid_lifetime": a.valid,
            })).collect::<Vec<_>>(),
            "prefixes": b.prefixes.iter().map(|p| json!({
                "prefix": format!("{}/{}", p.prefix, p.prefix_len),
                "preferred_lifetime": p.preferred,
                "valid_lifetime": p.valid,
            })).collect::<Vec<_>>(),
            "clt_time": b.clt_time,
            "last_contact": b.last_contact(),
            "base_time": b.base_time.map(dhcp_time_to_unix),
            "relay_data": b.relay_data.as_ref().map(|r| json!({
                "peer_address": r.peer_address.to_string(),
                "message": relay_message_hex(&r.message),
            })),
            "other_options": b.other_options.iter().map(|o| json!({
                "code": o.code(),
                "name": code::name(o.code()),
                "data": hex(&option_body(o)),
            })).collect::<Vec<_>>(),
        });
        serde_json::to_writer(&mut self.w, &v)?;
        self.w.write_all(b"\n")
    }

    fn csv(&mut self, b: &Binding) -> std::io::Result<()> {
        let tail = format!(
            "{},{},{},{}",
            opt_str(b.clt_time),
            opt_str(b.last_contact()),
            opt_str(b.base_time.map(dhcp_time_to_unix)),
            opt_str(b.relay_data.as_ref().map(|r| r.peer_address))
        );
        let head = format!(
            "{},{},{}",
            csv_field(&b.server.to_string()),
            b.client_id
                .as_ref()
                .map(|d| colon_hex(d.as_bytes()))
                .unwrap_or_default(),
            opt_str(b.link_address)
        );
        let mut rows = 0;
        for a in &b.addresses {
            writeln!(
                self.w,
                "{head},address,{},{},{},{tail}",
                a.address, a.preferred, a.valid
            )?;
            rows += 1;
        }
        for p in &b.prefixes {
            writeln!(
                self.w,
                "{head},prefix,{}/{},{},{},{tail}",
                p.prefix, p.prefix_len, p.preferred, p.valid
            )?;
            rows += 1;
        }
        if rows == 0 {
            writeln!(self.w, "{head},,,,,{tail}")?;
        }
        Ok(())
    }

    fn finish(&mut self) -> std::io::Result<()> {
        self.w.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times() {
        assert_eq!(parse_time("0").unwrap(), 0);
        assert_eq!(parse_time("1714521600").unwrap(), 1_714_521_600);
        assert_eq!(parse_time("2024-05-01T00:00:00Z").unwrap(), 1_714_521_600);
        assert_eq!(
            parse_time("2024-05-01T02:00:00+02:00").unwrap(),
            1_714_521_600
        );
        assert_eq!(parse_time("2000-01-01T00:00:00.5Z").unwrap(), 946_684_800);
        assert_eq!(parse_time("1970-01-01T00:00:00Z").unwrap(), 0);
        assert!(parse_time("2024-13-01T00:00:00Z").is_err());
        assert!(parse_time("yesterday").is_err());
    }

    #[test]
    fn remote_ids_and_servers() {
        assert_eq!(parse_remote_id("9:0a0b0c").unwrap(), (9, vec![10, 11, 12]));
        assert!(parse_remote_id("x:0a").is_err());
        assert_eq!(
            parse_server("2001:db8::1", 547).unwrap(),
            "[2001:db8::1]:547".parse().unwrap()
        );
        assert_eq!(
            parse_server("[::1]:5470", 547).unwrap(),
            "[::1]:5470".parse().unwrap()
        );
        assert_eq!(
            parse_server("127.0.0.1", 547).unwrap(),
            "127.0.0.1:547".parse().unwrap()
        );
    }
}
