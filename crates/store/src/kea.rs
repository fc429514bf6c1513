//! Import of a Kea memfile lease6 CSV (the file kea-dhcp6 writes), keeping each binding's relay data.
//!
//! Format: a header line naming the columns (`address,duid,valid_lifetime,expire,subnet_id,pref_lifetime,
//! lease_type,iaid,prefix_len,fqdn_fwd,fqdn_rev,hostname,hwaddr,state,user_context[,hwtype,hwaddr_source,
//! pool_id]`), then one row per lease. The file is an append log: a later row for the same lease replaces
//! earlier ones. Commas inside fields are escaped as `&#x2c`. `lease_type` 0=NA, 1=TA, 2=PD; `state`
//! 0=default, 1=declined, 2=expired-reclaimed, 3=released; a row with `valid_lifetime` 0 is a release.
//!
//! Relay data is in `user_context`: `{"ISC": {"relays": [{"hop": 0, "link": "..", "peer": "..",
//! "options": "0x<hex>"}]}}` (`"relay-info"` in newer Kea, which may also carry `"relay-id"` and
//! `"remote-id"` in hex). Higher hop counts are further from the client; the chain is re-encoded as nested
//! RELAY-FORW messages (RFC 8415 §9) without the innermost RELAY_MSG.

use std::collections::HashMap;
use std::io::{BufRead, Seek, SeekFrom};
use std::net::Ipv6Addr;

use crate::{
    ClientUpdate, Lease, LeaseKind, LeaseMerge, LeaseState, LeaseStore, RelayInfo, RemoteId,
    Result, StoreError,
};

/// Import options.
#[derive(Debug, Clone)]
pub struct ImportOptions {
    /// Stop at the first bad row instead of reporting and skipping it.
    pub strict: bool,
    /// Kea subnet-id to lq6 link name; unmapped ids become `subnet-<id>`.
    pub link_map: HashMap<u32, String>,
    /// Updates per transaction (default 10,000).
    pub batch: usize,
}

impl Default for ImportOptions {
    fn default() -> Self {
        ImportOptions {
            strict: false,
            link_map: HashMap::new(),
            batch: 10_000,
        }
    }
}

/// What an import did.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct ImportReport {
    /// Data rows read (not counting the header).
    pub rows: u64,
    /// Leases committed.
    pub imported: u64,
    /// Rows replaced by a later row for the same lease.
    pub superseded: u64,
    /// Bad rows: (line number, reason). Skipped unless `strict`.
    pub errors: Vec<(u64, String)>,
}

const OPT_RELAY_MSG: u16 = 9;
const OPT_INTERFACE_ID: u16 = 18;
const OPT_REMOTE_ID: u16 = 37;
const OPT_SUBSCRIBER_ID: u16 = 38;
const OPT_RELAY_ID: u16 = 53;
const OPT_CLIENT_LINKLAYER_ADDR: u16 = 79;

struct Cols {
    address: usize,
    duid: usize,
    valid: usize,
    expire: usize,
    subnet: usize,
    pref: usize,
    ltype: usize,
    iaid: usize,
    plen: usize,
    hwaddr: Option<usize>,
    state: Option<usize>,
    ctx: Option<usize>,
    hwtype: Option<usize>,
    n: usize,
}

impl Cols {
    fn from_header(h: &str) -> Result<Cols> {
        let names: Vec<&str> = h
            .trim_end_matches(['\r', '\n'])
            .split(',')
            .map(str::trim)
            .collect();
        let find = |n: &str| names.iter().position(|x| *x == n);
        let req = |n: &str| {
            find(n).ok_or_else(|| {
                StoreError::Invalid(format!(
                    "line 1: not a Kea lease6 CSV header (no {n:?} column)"
                ))
            })
        };
        Ok(Cols {
            address: req("address")?,
            duid: req("duid")?,
            valid: req("valid_lifetime")?,
            expire: req("expire")?,
            subnet: req("subnet_id")?,
            pref: req("pref_lifetime")?,
            ltype: req("lease_type")?,
            iaid: req("iaid")?,
            plen: req("prefix_len")?,
            hwaddr: find("hwaddr"),
            state: find("state"),
            ctx: find("user_context"),
            hwtype: find("hwtype"),
            n: names.len(),
        })
    }
}

/// Parse hex with or without `:` separators (and an optional `0x`).
pub fn parse_hex(s: &str) -> std::result::Result<Vec<u8>, String> {
    let s = s.trim();
    let s = s
        .strip_prefix("0x")
        .or_else(|| s.strip_prefix("0X"))
        .unwrap_or(s);
    let clean: String = s
        .chars()
        .filter(|c| *c != ':' && *c != '-' && *c != ' ')
        .collect();
    hex::decode(&clean).map_err(|e| format!("bad hex {s:?}: {e}"))
}

fn unescape(s: &str) -> String {
    s.replace("&#x2c", ",")
}

struct RelayHop {
    hop: u64,
    link: Ipv6Addr,
    peer: Ipv6Addr,
    options: Vec<u8>,
}

fn tlvs(b: &[u8]) -> std::result::Result<Vec<(u16, &[u8])>, String> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if i + 4 > b.len() {
            return Err("truncated relay option header".into());
        }
        let code = u16::from_be_bytes([b[i], b[i + 1]]);
        let len = u16::from_be_bytes([b[i + 2], b[i + 3]]) as usize;
        if i + 4 + len > b.len() {
            return Err(format!("relay option {code} overruns its buffer"));
        }
        out.push((code, &b[i + 4..i + 4 + len]));
        i += 4 + len;
    }
    Ok(out)
}

/// Build RelayInfo and the innermost link-address from the user_context JSON.
fn relay_from_context(
    ctx: &str,
    linklayer: Option<(u16, Vec<u8>)>,
) -> std::result::Result<Option<(RelayInfo, Ipv6Addr)>, String> {
    if ctx.trim().is_empty() {
        return Ok(None);
    }
    let v: serde_json::Value =
        serde_json::from_str(ctx).map_err(|e| format!("user_context is not JSON: {e}"))?;
    let Some(isc) = v.get("ISC") else {
        return Ok(None);
    };
    let list = isc.get("relays").or_else(|| isc.get("relay-info"));
    let Some(list) = list.and_then(|l| l.as_array()) else {
        return Ok(None);
    };
    if list.is_empty() {
        return Ok(None);
    }
    let mut hops = Vec::new();
    let mut extra_relay_ids = Vec::new();
    let mut extra_remote = None;
    for (i, r) in list.iter().enumerate() {
        let addr = |k: &str| -> std::result::Result<Ipv6Addr, String> {
            match r.get(k).and_then(|x| x.as_str()) {
                Some(s) => s
                    .parse()
                    .map_err(|_| format!("relay {i}: bad {k} address {s:?}")),
                None => Ok(Ipv6Addr::UNSPECIFIED),
            }
        };
        let options = match r.get("options").and_then(|x| x.as_str()) {
            Some(s) if !s.is_empty() => {
                parse_hex(s).map_err(|e| format!("relay {i} options: {e}"))?
            }
            _ => Vec::new(),
        };
        if let Some(s) = r.get("relay-id").and_then(|x| x.as_str()) {
            extra_relay_ids.push(parse_hex(s).map_err(|e| format!("relay {i} relay-id: {e}"))?);
        }
        if let Some(s) = r.get("remote-id").and_then(|x| x.as_str()) {
            extra_remote = Some(parse_hex(s).map_err(|e| format!("relay {i} remote-id: {e}"))?);
        }
        let hop = r.get("hop").and_then(|x| x.as_u64()).unwrap_or(i as u64);
        hops.push(RelayHop {
            hop,
            link: addr("link")?,
            peer: addr("peer")?,
            options,
        });
    }
    // Outermost (highest hop count, closest to the server) first.
    hops.sort_by_key(|h| std::cmp::Reverse(h.hop));
    let mut info = RelayInfo {
        peer_address: hops[0].peer,
        chain: Vec::new(),
        relay_ids: Vec::new(),
        remote_id: None,
        subscriber_id: None,
        interface_id: None,
        client_linklayer: None,
    };
    // Options: innermost relay first, so the relay nearest the client wins for single-valued ones.
    for h in hops.iter().rev() {
        for (code, val) in tlvs(&h.options)? {
            match code {
                OPT_RELAY_ID => info.relay_ids.push(val.to_vec()),
                OPT_REMOTE_ID if info.remote_id.is_none() && val.len() >= 4 => {
                    info.remote_id = Some(RemoteId {
                        enterprise: u32::from_be_bytes([val[0], val[1], val[2], val[3]]),
                        id: val[4..].to_vec(),
                    });
                }
                OPT_SUBSCRIBER_ID if info.subscriber_id.is_none() => {
                    info.subscriber_id = Some(val.to_vec())
                }
                OPT_INTERFACE_ID if info.interface_id.is_none() => {
                    info.interface_id = Some(val.to_vec())
                }
                OPT_CLIENT_LINKLAYER_ADDR if info.client_linklayer.is_none() && val.len() >= 2 => {
                    info.client_linklayer =
                        Some((u16::from_be_bytes([val[0], val[1]]), val[2..].to_vec()));
                }
                _ => {}
            }
        }
    }
    for id in extra_relay_ids {
        if !info.relay_ids.contains(&id) {
            info.relay_ids.push(id);
        }
    }
    if info.remote_id.is_none() {
        if let Some(r) = extra_remote {
            if r.len() >= 4 {
                info.remote_id = Some(RemoteId {
                    enterprise: u32::from_be_bytes([r[0], r[1], r[2], r[3]]),
                    id: r[4..].to_vec(),
                });
            }
        }
    }
    if info.client_linklayer.is_none() {
        info.client_linklayer = linklayer;
    }
    // Re-encode the chain from the inside out: the innermost RELAY-FORW has no RELAY_MSG.
    let mut inner: Option<Vec<u8>> = None;
    for h in hops.iter().rev() {
        let mut m =
            Vec::with_capacity(34 + h.options.len() + inner.as_ref().map_or(0, |x| x.len() + 4));
        m.push(12);
        m.push(h.hop.min(255) as u8);
        m.extend_from_slice(&h.link.octets());
        m.extend_from_slice(&h.peer.octets());
        m.extend_from_slice(&h.options);
        if let Some(i) = inner.take() {
            let len = u16::try_from(i.len()).map_err(|_| "relay chain too long".to_string())?;
            m.extend_from_slice(&OPT_RELAY_MSG.to_be_bytes());
            m.extend_from_slice(&len.to_be_bytes());
            m.extend_from_slice(&i);
        }
        inner = Some(m);
    }
    info.chain = inner.unwrap_or_default();
    let innermost_link = hops.last().map(|h| h.link).unwrap_or(Ipv6Addr::UNSPECIFIED);
    Ok(Some((info, innermost_link)))
}

fn parse_row(
    line: &str,
    c: &Cols,
    opts: &ImportOptions,
) -> std::result::Result<ClientUpdate, String> {
    let f: Vec<&str> = line.trim_end_matches(['\r', '\n']).split(',').collect();
    let required = [
        c.address, c.duid, c.valid, c.expire, c.subnet, c.pref, c.ltype, c.iaid, c.plen,
    ];
    let need = required.iter().max().map_or(0, |m| m + 1);
    if f.len() < need || f.len() > c.n {
        return Err(format!("{} fields, the header has {}", f.len(), c.n));
    }
    let get = |i: usize| f.get(i).copied().unwrap_or("");
    let num = |i: usize, name: &str| -> std::result::Result<u64, String> {
        get(i)
            .trim()
            .parse::<u64>()
            .map_err(|_| format!("bad {name} {:?}", get(i)))
    };
    let addr: Ipv6Addr = get(c.address)
        .trim()
        .parse()
        .map_err(|_| format!("bad address {:?}", get(c.address)))?;
    let duid = parse_hex(get(c.duid)).map_err(|e| format!("duid: {e}"))?;
    if duid.is_empty() {
        return Err("empty duid".into());
    }
    let valid = num(c.valid, "valid_lifetime")?;
    let expire = num(c.expire, "expire")?;
    let subnet = u32::try_from(num(c.subnet, "subnet_id")?)
        .map_err(|_| "subnet_id out of range".to_string())?;
    let pref = num(c.pref, "pref_lifetime")?;
    let kind = match num(c.ltype, "lease_type")? {
        0 => LeaseKind::Na,
        1 => LeaseKind::Ta,
        2 => LeaseKind::Pd,
        t => return Err(format!("unknown lease_type {t}")),
    };
    let iaid = u32::try_from(num(c.iaid, "iaid")?).map_err(|_| "iaid out of range".to_string())?;
    let plen = num(c.plen, "prefix_len")?;
    let plen = if kind == LeaseKind::Pd {
        if plen > 128 {
            return Err(format!("prefix_len {plen}"));
        }
        plen as u8
    } else {
        128
    };
    let state = match c.state.map(|i| get(i).trim()).filter(|s| !s.is_empty()) {
        None | Some("0") => LeaseState::Active,
        Some("1") => LeaseState::Declined,
        Some("2") => LeaseState::Expired,
        Some("3") => LeaseState::Released,
        Some(s) => return Err(format!("unknown state {s:?}")),
    };
    let state = if valid == 0 && state == LeaseState::Active {
        LeaseState::Released
    } else {
        state
    };
    let hw = c.hwaddr.map(&get).filter(|s| !s.trim().is_empty());
    let linklayer = match hw {
        Some(h) => {
            let b = parse_hex(h).map_err(|e| format!("hwaddr: {e}"))?;
            let t = c
                .hwtype
                .and_then(|i| get(i).trim().parse::<u16>().ok())
                .unwrap_or(1);
            Some((t, b))
        }
        None => None,
    };
    let ctx = c.ctx.map(|i| unescape(get(i))).unwrap_or_default();
    let relay = relay_from_context(&ctx, linklayer)?;
    let (relay, link_address) = match relay {
        Some((r, l)) => (Some(r), l),
        None => (None, Ipv6Addr::UNSPECIFIED),
    };
    let cltt = expire.saturating_sub(valid);
    let link = opts
        .link_map
        .get(&subnet)
        .cloned()
        .unwrap_or_else(|| format!("subnet-{subnet}"));
    Ok(ClientUpdate {
        duid,
        link,
        link_address,
        cltt,
        relay,
        leases: vec![Lease {
            kind,
            iaid,
            addr,
            prefix_len: plen,
            preferred: pref.min(u32::MAX as u64) as u32,
            valid: valid.min(u32::MAX as u64) as u32,
            expires_at: expire,
            state,
        }],
        merge: LeaseMerge::Merge,
        now: Some(cltt),
    })
}

/// Import a Kea lease6 memfile CSV into `store`. Rows are committed in large transactions.
///
/// Memory is bounded by the number of distinct leases, not by the file: pass 1 parses every row
/// (so bad rows are reported, and `strict` stops, before anything is written) and keeps only the
/// line of each lease's last row (about 64 octets per lease). Passes 2 and 3 re-read the file and
/// commit those rows in batches: inactive ones first, so that an address released by one client
/// and later taken by another never looks like a conflict, then active ones.
pub async fn import_csv<R: BufRead + Seek>(
    mut reader: R,
    store: &dyn LeaseStore,
    opts: &ImportOptions,
) -> Result<ImportReport> {
    let mut report = ImportReport::default();
    let mut header = String::new();
    match reader.read_line(&mut header) {
        Ok(0) => return Err(StoreError::Invalid("empty CSV file".into())),
        Ok(_) => {}
        Err(e) => return Err(StoreError::Invalid(format!("reading CSV: {e}"))),
    }
    let cols = Cols::from_header(&header)?;
    let data_start = reader
        .stream_position()
        .map_err(|e| StoreError::Invalid(format!("reading CSV: {e}")))?;

    // Pass 1. Key: address and prefix length; value: the line of the last row, ACTIVE_BIT set
    // when that row is an active lease.
    const ACTIVE_BIT: u64 = 1 << 63;
    let mut last: HashMap<[u8; 17], u64> = HashMap::new();
    let mut rows = RowReader::new(&mut reader);
    while let Some((lineno, line)) = rows.next_row()? {
        report.rows += 1;
        match parse_row(line, &cols, opts) {
            Ok(u) => {
                let l = &u.leases[0];
                let mut key = [0u8; 17];
                key[..16].copy_from_slice(&l.addr.octets());
                key[16] = l.prefix_len;
                let active = if l.state == LeaseState::Active {
                    ACTIVE_BIT
                } else {
                    0
                };
                if last.insert(key, lineno | active).is_some() {
                    report.superseded += 1;
                }
            }
            Err(msg) if opts.strict => {
                return Err(StoreError::Invalid(format!("line {lineno}: {msg}")))
            }
            Err(msg) => report.errors.push((lineno, msg)),
        }
    }
    let (mut active, mut inactive): (Vec<u64>, Vec<u64>) =
        last.into_values().partition(|v| v & ACTIVE_BIT != 0);
    active.iter_mut().for_each(|v| *v &= !ACTIVE_BIT);
    active.sort_unstable();
    inactive.sort_unstable();

    // Passes 2 and 3.
    let batch = opts.batch.max(1);
    for lines in [inactive, active] {
        reader
            .seek(SeekFrom::Start(data_start))
            .map_err(|e| StoreError::Invalid(format!("re-reading CSV: {e}")))?;
        let mut want = lines.iter().copied().peekable();
        let mut pending: Vec<(u64, ClientUpdate)> = Vec::with_capacity(batch.min(lines.len()));
        let mut rows = RowReader::new(&mut reader);
        while want.peek().is_some() {
            let Some((lineno, line)) = rows.next_row()? else {
                break;
            };
            if want.peek() != Some(&lineno) {
                continue;
            }
            want.next();
            // Parsed fine in pass 1, so this only fails if the file changed underneath.
            match parse_row(line, &cols, opts) {
                Ok(u) => pending.push((lineno, u)),
                Err(msg) => report
                    .errors
                    .push((lineno, format!("changed while importing: {msg}"))),
            }
            if pending.len() == batch {
                commit_chunk(store, std::mem::take(&mut pending), opts, &mut report).await?;
            }
        }
        commit_chunk(store, pending, opts, &mut report).await?;
    }
    report.errors.sort();
    Ok(report)
}

/// Commits `chunk` in one `commit_batch`, recording each row's outcome.
async fn commit_chunk(
    store: &dyn LeaseStore,
    chunk: Vec<(u64, ClientUpdate)>,
    opts: &ImportOptions,
    report: &mut ImportReport,
) -> Result<()> {
    if chunk.is_empty() {
        return Ok(());
    }
    let (linenos, updates): (Vec<u64>, Vec<ClientUpdate>) = chunk.into_iter().unzip();
    let results = store.commit_batch(updates).await?;
    for (lineno, r) in linenos.into_iter().zip(results) {
        match r {
            Ok(_) => report.imported += 1,
            Err(e) if opts.strict => {
                return Err(StoreError::Invalid(format!("line {lineno}: {e}")))
            }
            Err(e) => report.errors.push((lineno, e.to_string())),
        }
    }
    Ok(())
}

/// Reads data rows (after the header): line numbers count from 1 at the header; blank lines are
/// skipped.
struct RowReader<'a, R> {
    reader: &'a mut R,
    buf: String,
    lineno: u64,
}

impl<'a, R: BufRead> RowReader<'a, R> {
    fn new(reader: &'a mut R) -> Self {
        RowReader {
            reader,
            buf: String::new(),
            lineno: 1,
        }
    }

    fn next_row(&mut self) -> Result<Option<(u64, &str)>> {
        loop {
            self.buf.clear();
            self.lineno += 1;
            let n = self
                .reader
                .read_line(&mut self.buf)
                .map_err(|e| StoreError::Invalid(format!("line {}: {e}", self.lineno)))?;
            if n == 0 {
                return Ok(None);
            }
            if !self.buf.trim().is_empty() {
                return Ok(Some((self.lineno, self.buf.trim_end_matches(['\r', '\n']))));
            }
        }
    }
}
