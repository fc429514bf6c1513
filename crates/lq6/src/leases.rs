//! `lq6 leases`: inspect a lease store (list, show, count) and import a Kea memfile lease6 CSV.

use std::collections::HashMap;
use std::io::Write;
use std::net::Ipv6Addr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{anyhow, bail, Context};
use futures::StreamExt;
use lq6_store::kea::{self, ImportOptions};
use lq6_store::postgres::PgStore;
use lq6_store::sqlite::SqliteStore;
use lq6_store::{Binding, LeaseState, LeaseStore, Query, Selector};

/// Inspect or import leases.
#[derive(Debug, clap::Args)]
pub struct LeasesArgs {
    /// Embedded lease store file.
    #[arg(
        long,
        global = true,
        default_value = "/var/lib/lq6/leases.db",
        env = "LQ6_STORE"
    )]
    pub store: PathBuf,
    /// Use a PostgreSQL lease database instead (libpq key=value string or postgres:// URL).
    #[arg(long, global = true, env = "LQ6_POSTGRES")]
    pub postgres: Option<String>,
    /// PostgreSQL schema (default: the connection's search_path).
    #[arg(long, global = true, requires = "postgres")]
    pub pg_schema: Option<String>,
    #[command(subcommand)]
    pub command: LeasesCommand,
}

/// Filters shared by `list` and `count`.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct Filters {
    /// Relay-ID DUID (hex, colons optional).
    #[arg(long, value_name = "HEX")]
    pub relay_id: Option<String>,
    /// Remote-ID as ENTERPRISE:HEX (e.g. 4491:0a0b0c).
    #[arg(long, value_name = "PEN:HEX")]
    pub remote_id: Option<String>,
    /// Link name.
    #[arg(long, value_name = "NAME")]
    pub link: Option<String>,
    /// Client DUID (hex, colons optional).
    #[arg(long, value_name = "HEX")]
    pub client: Option<String>,
    /// Address, or an address inside a delegated prefix.
    #[arg(long, value_name = "ADDR")]
    pub address: Option<Ipv6Addr>,
    /// Lease state: active (default), released, expired, declined, or all.
    #[arg(long, value_name = "STATE")]
    pub state: Option<String>,
}

/// Output format.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    #[default]
    Table,
    Json,
}

#[derive(Debug, clap::Subcommand)]
pub enum LeasesCommand {
    /// List bindings (one per client per link).
    List {
        #[command(flatten)]
        filters: Filters,
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
    },
    /// Show the binding(s) holding an address, or of a client DUID.
    Show {
        /// An IPv6 address or a DUID in hex.
        key: String,
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
    },
    /// Count bindings matching the filters.
    Count {
        #[command(flatten)]
        filters: Filters,
    },
    /// Import a Kea memfile lease6 CSV.
    Import {
        /// The Kea lease6 CSV file (e.g. /var/lib/kea/kea-leases6.csv).
        #[arg(long, value_name = "FILE")]
        kea_csv: PathBuf,
        /// Stop at the first bad row instead of skipping it.
        #[arg(long)]
        strict: bool,
        /// Map a Kea subnet-id to an lq6 link name (repeatable); unmapped ids become subnet-<id>.
        #[arg(long = "link-map", value_name = "ID=NAME")]
        link_map: Vec<String>,
    },
}

/// Parse hex with or without colons.
pub fn parse_hex(s: &str) -> anyhow::Result<Vec<u8>> {
    let v = kea::parse_hex(s).map_err(|e| anyhow!(e))?;
    if v.is_empty() {
        bail!("empty hex value");
    }
    Ok(v)
}

fn parse_remote_id(s: &str) -> anyhow::Result<(u32, Vec<u8>)> {
    let (pen, id) = s
        .split_once(':')
        .ok_or_else(|| anyhow!("--remote-id wants ENTERPRISE:HEX, got {s:?}"))?;
    let pen: u32 = pen
        .trim()
        .parse()
        .with_context(|| format!("enterprise number {pen:?}"))?;
    Ok((pen, parse_hex(id)?))
}

enum StateFilter {
    Active,
    All,
    Only(LeaseState),
}

fn state_filter(s: Option<&str>) -> anyhow::Result<StateFilter> {
    Ok(match s {
        None => StateFilter::Active,
        Some(s) if s.eq_ignore_ascii_case("all") => StateFilter::All,
        Some(s) => match s.parse::<LeaseState>().map_err(|e| anyhow!(e))? {
            LeaseState::Active => StateFilter::Active,
            st => StateFilter::Only(st),
        },
    })
}

/// Apply the state filter to a binding; None when nothing is left.
fn filter_state(b: Binding, f: &StateFilter) -> Option<Binding> {
    match f {
        StateFilter::All => Some(b),
        StateFilter::Active => {
            let b = b.active_only();
            (!b.leases.is_empty()).then_some(b)
        }
        StateFilter::Only(st) => {
            let mut b = b;
            b.leases.retain(|l| l.state == *st);
            (!b.leases.is_empty()).then_some(b)
        }
    }
}

fn build_query(f: &Filters) -> anyhow::Result<Query> {
    let link = f.link.clone();
    let select = if let Some(r) = &f.relay_id {
        Selector::ByRelayId {
            relay_id: parse_hex(r)?,
            link,
        }
    } else if let Some(r) = &f.remote_id {
        let (enterprise, id) = parse_remote_id(r)?;
        Selector::ByRemoteId {
            enterprise,
            id,
            link,
        }
    } else if let Some(c) = &f.client {
        Selector::ByClient {
            duid: parse_hex(c)?,
            link,
        }
    } else if let Some(l) = link {
        Selector::ByLink(l)
    } else {
        Selector::All
    };
    let mut q = Query::new(select);
    q.include_inactive = !matches!(state_filter(f.state.as_deref())?, StateFilter::Active);
    Ok(q)
}

async fn open(args: &LeasesArgs) -> anyhow::Result<Arc<dyn LeaseStore>> {
    Ok(match &args.postgres {
        Some(url) => {
            let opts = lq6_store::postgres::PgOptions {
                schema: args.pg_schema.clone(),
                ..Default::default()
            };
            Arc::new(
                PgStore::connect_with(url, opts)
                    .await
                    .context("connecting to PostgreSQL")?,
            )
        }
        None => {
            let path = args.store.clone();
            let s = tokio::task::spawn_blocking(move || SqliteStore::open(path)).await??;
            Arc::new(s)
        }
    })
}

fn hexs(b: &[u8]) -> String {
    b.iter()
        .map(|x| format!("{x:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

fn table_header(out: &mut impl Write) -> std::io::Result<()> {
    writeln!(
        out,
        "{:<40} {:<4} {:<9} {:>10} {:<12} {:<16} {:<41} RELAY-ID / REMOTE-ID",
        "ADDRESS", "TYPE", "STATE", "EXPIRES", "LINK", "CLTT", "DUID"
    )
}

fn table_rows(out: &mut impl Write, b: &Binding) -> std::io::Result<()> {
    let relay = b
        .client
        .relay
        .as_ref()
        .map(|r| {
            let mut s: Vec<String> = r.relay_ids.iter().map(|i| hexs(i)).collect();
            if let Some(rid) = &r.remote_id {
                s.push(format!(
                    "{}:{}",
                    rid.enterprise,
                    rid.id
                        .iter()
                        .map(|x| format!("{x:02x}"))
                        .collect::<String>()
                ));
            }
            s.join(" ")
        })
        .unwrap_or_default();
    let duid = hexs(&b.client.duid);
    if b.leases.is_empty() {
        writeln!(
            out,
            "{:<40} {:<4} {:<9} {:>10} {:<12} {:<16} {:<41} {}",
            "-", "-", "-", "-", b.client.link, b.client.cltt, duid, relay
        )?;
    }
    for l in &b.leases {
        let a = if l.prefix_len < 128 {
            format!("{}/{}", l.addr, l.prefix_len)
        } else {
            l.addr.to_string()
        };
        writeln!(
            out,
            "{:<40} {:<4} {:<9} {:>10} {:<12} {:<16} {:<41} {}",
            a,
            // Their Display ignores width: pad the strings.
            l.kind.to_string(),
            l.state.to_string(),
            l.expires_at,
            b.client.link,
            b.client.cltt,
            duid,
            relay
        )?;
    }
    Ok(())
}

fn print(bindings: impl IntoIterator<Item = Binding>, format: Format) -> anyhow::Result<()> {
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    if format == Format::Table {
        table_header(&mut out)?;
    }
    for b in bindings {
        match format {
            Format::Table => table_rows(&mut out, &b)?,
            Format::Json => {
                serde_json::to_writer(&mut out, &b)?;
                writeln!(out)?;
            }
        }
    }
    out.flush()?;
    Ok(())
}

/// Run `lq6 leases ...`.
pub async fn run(args: LeasesArgs) -> anyhow::Result<()> {
    let store = open(&args).await?;
    match args.command {
        LeasesCommand::List { filters, format } => {
            let sf = state_filter(filters.state.as_deref())?;
            if let Some(addr) = filters.address {
                let b = store.by_address(addr).await?;
                return print(b.and_then(|b| filter_state(b, &sf)), format);
            }
            let q = build_query(&filters)?;
            // Streams page by page; JSON is one binding per line so output starts at once.
            let stdout = std::io::stdout();
            let mut out = std::io::BufWriter::new(stdout.lock());
            if format == Format::Table {
                table_header(&mut out)?;
            }
            let mut s = std::pin::pin!(lq6_store::stream(store, q, 1000));
            while let Some(b) = s.next().await {
                let Some(b) = filter_state(b?, &sf) else {
                    continue;
                };
                match format {
                    Format::Table => table_rows(&mut out, &b)?,
                    Format::Json => {
                        serde_json::to_writer(&mut out, &b)?;
                        writeln!(out)?;
                    }
                }
            }
            out.flush()?;
        }
        LeasesCommand::Show { key, format } => {
            let bindings = if let Ok(addr) = key.parse::<Ipv6Addr>() {
                store
                    .by_address(addr)
                    .await?
                    .into_iter()
                    .collect::<Vec<_>>()
            } else {
                let duid = parse_hex(&key)
                    .with_context(|| format!("{key:?} is neither an IPv6 address nor a DUID"))?;
                store.by_client(&duid, None).await?
            };
            if bindings.is_empty() {
                bail!("no binding for {key}");
            }
            print(bindings, format)?;
        }
        LeasesCommand::Count { filters } => {
            let sf = state_filter(filters.state.as_deref())?;
            let n = if let Some(addr) = filters.address {
                u64::from(
                    store
                        .by_address(addr)
                        .await?
                        .and_then(|b| filter_state(b, &sf))
                        .is_some(),
                )
            } else {
                let q = build_query(&filters)?;
                match sf {
                    StateFilter::Active | StateFilter::All => store.count(&q).await?,
                    StateFilter::Only(_) => {
                        let mut n = 0;
                        let mut s = std::pin::pin!(lq6_store::stream(store, q, 1000));
                        while let Some(b) = s.next().await {
                            n += u64::from(filter_state(b?, &sf).is_some());
                        }
                        n
                    }
                }
            };
            println!("{n}");
        }
        LeasesCommand::Import {
            kea_csv,
            strict,
            link_map,
        } => {
            let mut map = HashMap::new();
            for m in &link_map {
                let (id, name) = m
                    .split_once('=')
                    .ok_or_else(|| anyhow!("--link-map wants ID=NAME, got {m:?}"))?;
                map.insert(
                    id.trim()
                        .parse::<u32>()
                        .with_context(|| format!("subnet id {id:?}"))?,
                    name.trim().to_string(),
                );
            }
            let f = std::fs::File::open(&kea_csv)
                .with_context(|| format!("opening {}", kea_csv.display()))?;
            let opts = ImportOptions {
                strict,
                link_map: map,
                ..Default::default()
            };
            let rep = kea::import_csv(std::io::BufReader::new(f), store.as_ref(), &opts)
                .await
                .with_context(|| format!("importing {}", kea_csv.display()))?;
            for (line, msg) in &rep.errors {
                eprintln!("{}:{line}: skipped: {msg}", kea_csv.display());
            }
            println!(
                "{} rows read, {} leases imported, {} superseded by later rows, {} bad rows skipped",
                rep.rows,
                rep.imported,
                rep.superseded,
                rep.errors.len()
            );
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_with_and_without_colons() {
        assert_eq!(parse_hex("00:01:0a").unwrap(), vec![0, 1, 10]);
        assert_eq!(parse_hex("00010A").unwrap(), vec![0, 1, 10]);
        assert!(parse_hex("0g").is_err());
        assert_eq!(parse_remote_id("4491:0a:0b").unwrap(), (4491, vec![10, 11]));
    }
}
