//! # lq6-config: the TOML configuration
//!
//! # Layout
//! - this file: [`Config`] and the DHCPv6 server sections (`[server]`, `[store]`, `[lifetimes]`,
//!   `[lease]`, `[options]`, `[[links]]`, `[[reservations]]`), loading and validation.
//! - [`locate`] (private): maps a toml span to `line:col` and a key path, so every error names the
//!   file, the line and the key.
//! - [`responder`]: `[leasequery]` and `[metrics]` (the leasequery responder's sections).
//! - [`demo`]: the built-in loopback demo used by `lq6 serve` without `--config`.
//!
//! Every section is `deny_unknown_fields` with defaults, so a typo is an error, never ignored.

mod locate;
pub mod responder;
pub use responder::{BulkConfig, LeasequeryConfig, MetricsConfig, QueryTypeName, RequestorPolicy};

use ipnet::Ipv6Net;
use lq6_proto::Duid;
use serde::Deserialize;
use std::net::{Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};

/// A configuration error. Parse and validation errors name the file, the line and column, and
/// the key path (e.g. `links[0].pools[1].end`).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    #[error("{}: {source}", file.display())]
    Io {
        file: PathBuf,
        source: std::io::Error,
    },
    #[error("{file}:{line}:{col}: key `{key}`: {msg}")]
    Invalid {
        file: String,
        line: usize,
        col: usize,
        key: String,
        msg: String,
    },
}

/// The whole configuration file.
#[derive(Debug, Clone, Deserialize, PartialEq, Default)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub server: ServerConfig,
    pub store: StoreConfig,
    pub lifetimes: Lifetimes,
    pub lease: LeaseConfig,
    pub options: OptionsConfig,
    pub links: Vec<LinkConfig>,
    pub reservations: Vec<Reservation>,
    pub leasequery: LeasequeryConfig,
    pub metrics: MetricsConfig,
}

/// `[server]`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// The server DUID (RFC 8415 §11) in any form `Duid::from_str` accepts (`ll:1:MAC`, `en:PEN:HEX`,
    /// plain hex). When absent a DUID-LLT is generated once and kept in `server-duid` beside the
    /// lease store.
    pub duid: Option<String>,
    /// Unicast UDP sockets for relayed traffic (and unicast leasequery). Port 0 picks a free port.
    pub listen: Vec<SocketAddr>,
    /// Interfaces on which ff02::1:2 is joined for directly attached clients (RFC 8415 §7.1).
    pub interfaces: Vec<String>,
    /// UDP port used on `interfaces` (547, RFC 8415 §7.2).
    pub port: u16,
    /// PREFERENCE sent in ADVERTISE (RFC 8415 §21.8).
    pub preference: u8,
    /// INFORMATION_REFRESH_TIME in INFORMATION-REQUEST replies (RFC 8415 §21.23; at least 600).
    pub information_refresh_time: u32,
    /// Transactions processed concurrently by the UDP loop (lets the store batch commits).
    pub max_in_flight: usize,
    /// Threads receiving and answering DHCPv6 datagrams, all on the same sockets; 0 means one per
    /// CPU, at most 4. One thread is the default: on 2 cores shared with the load generator, a
    /// second one cost more in contention than it added (bench/dhcp-exchange.sh).
    pub udp_workers: usize,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            duid: None,
            listen: Vec::new(),
            interfaces: Vec::new(),
            port: 547,
            preference: 0,
            information_refresh_time: 86400,
            max_in_flight: 4096,
            udp_workers: 1,
        }
    }
}

/// `[store]`: exactly one of `path` (embedded SQLite) or `postgres` (URL).
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct StoreConfig {
    pub path: Option<PathBuf>,
    pub postgres: Option<String>,
    /// Directory for the generated server DUID; defaults to the directory of `path`.
    pub state_dir: Option<PathBuf>,
    /// MiB of the SQLite file that read connections map into memory (default 0, off). Lookups get
    /// cheaper (UDP QUERY_BY_ADDRESS among 1M bindings: ~80k to ~100k q/s on 2 cores), but the
    /// mapped pages that are read count in the server's resident size, up to the whole file.
    pub mmap_mib: u64,
    /// Keep the start of every stored range in memory, about 30 MB per million bindings (default
    /// true; SQLite only). A lookup by address then reads one table page instead of two (UDP
    /// QUERY_BY_ADDRESS among 1M bindings: ~12 to ~9.5 µs of CPU per query).
    pub address_index: bool,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            path: None,
            postgres: None,
            state_dir: None,
            mmap_mib: 0,
            address_index: true,
        }
    }
}

impl StoreConfig {
    /// Where the generated server DUID is kept.
    pub fn state_dir(&self) -> Option<PathBuf> {
        if let Some(d) = &self.state_dir {
            return Some(d.clone());
        }
        self.path.as_ref().map(|p| match p.parent() {
            Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
            _ => PathBuf::from("."),
        })
    }
}

/// `[lifetimes]` (RFC 8415 §21.4, §21.6, §21.22). T1/T2 are factors of the shortest preferred
/// lifetime of the reply (§18.3 recommends 0.5 and 0.8).
#[derive(Debug, Clone, Copy, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Lifetimes {
    pub preferred: u32,
    pub valid: u32,
    pub t1: f64,
    pub t2: f64,
}

impl Default for Lifetimes {
    fn default() -> Self {
        Lifetimes {
            preferred: 3600,
            valid: 7200,
            t1: 0.5,
            t2: 0.8,
        }
    }
}

/// `[lease]`: lease lifecycle.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct LeaseConfig {
    /// Seconds a declined address stays out of the pool (RFC 8415 §18.4.7).
    pub decline_quarantine: u64,
    /// Seconds between background reclaim runs.
    pub reclaim_interval: u64,
    /// Bound on remembered ADVERTISE offers (a SOLICIT flood cannot grow memory past it).
    pub max_pending_offers: usize,
    /// Seconds an offer is remembered.
    pub offer_lifetime: u64,
}

impl Default for LeaseConfig {
    fn default() -> Self {
        LeaseConfig {
            decline_quarantine: 86400,
            reclaim_interval: 10,
            max_pending_offers: 65536,
            offer_lifetime: 60,
        }
    }
}

/// `[options]`: configuration options for every link (RFC 3646).
#[derive(Debug, Clone, Deserialize, PartialEq, Default)]
#[serde(deny_unknown_fields, default)]
pub struct OptionsConfig {
    pub dns_servers: Vec<Ipv6Addr>,
    pub domain_list: Vec<String>,
}

/// `[[links]]`: one link. Relayed clients are matched by the relay link-address falling in one of
/// `prefixes` (RFC 8415 §13.1); direct clients by the arrival `interface`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct LinkConfig {
    pub name: String,
    pub prefixes: Vec<Ipv6Net>,
    #[serde(default)]
    pub interface: Option<String>,
    #[serde(default)]
    pub pools: Vec<PoolConfig>,
    #[serde(default)]
    pub pd_pools: Vec<PdPoolConfig>,
    /// Answer SOLICIT+RAPID_COMMIT with a committed REPLY (RFC 8415 §21.14).
    #[serde(default)]
    pub rapid_commit: bool,
    #[serde(default)]
    pub lifetimes: Option<Lifetimes>,
    #[serde(default)]
    pub dns_servers: Option<Vec<Ipv6Addr>>,
    #[serde(default)]
    pub domain_list: Option<Vec<String>>,
}

/// `[[links.pools]]`: an address range, `start`..=`end`, or a whole `prefix`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct PoolConfig {
    #[serde(default)]
    pub start: Option<Ipv6Addr>,
    #[serde(default)]
    pub end: Option<Ipv6Addr>,
    #[serde(default)]
    pub prefix: Option<Ipv6Net>,
}

impl PoolConfig {
    /// The first and last address of the pool (after validation).
    pub fn range(&self) -> Option<(Ipv6Addr, Ipv6Addr)> {
        match (self.start, self.end, self.prefix) {
            (Some(s), Some(e), None) => Some((s, e)),
            (None, None, Some(p)) => Some((p.network(), p.broadcast())),
            _ => None,
        }
    }
}

/// `[[links.pd_pools]]`: delegated prefixes of `delegated_len` carved from `prefix` (RFC 8415 §6.3).
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct PdPoolConfig {
    pub prefix: Ipv6Net,
    pub delegated_len: u8,
}

/// `[[reservations]]`: fixed leases for a client DUID.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Reservation {
    pub duid: String,
    #[serde(default)]
    pub link: Option<String>,
    #[serde(default)]
    pub addresses: Vec<Ipv6Addr>,
    #[serde(default)]
    pub prefixes: Vec<Ipv6Net>,
}

/// The built-in demo: serves on loopback, UDP `[::1]:547` and TCP `[::1]:547`, with the lease
/// database in `$XDG_STATE_HOME/lq6` (or `~/.local/state/lq6`, or the temp dir).
pub const DEMO_TOML: &str = r#"# lq6 built-in demo: loopback only.
[server]
listen = ["[::1]:547"]
preference = 255

[store]
path = "@STATE@/demo-leases.db"

[options]
dns_servers = ["2001:db8::53"]
domain_list = ["demo.example"]

[[links]]
name = "demo"
prefixes = ["2001:db8:1::/64", "::1/128"]
rapid_commit = true
[[links.pools]]
start = "2001:db8:1::1000"
end = "2001:db8:1::1fff"
[[links.pd_pools]]
prefix = "2001:db8:100::/40"
delegated_len = 56

[leasequery]
allow = ["::1/128"]
[leasequery.tcp]
listen = ["[::1]:547"]
"#;

/// A writable state directory for the demo.
pub fn demo_state_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("XDG_STATE_HOME").filter(|d| !d.is_empty()) {
        return PathBuf::from(d).join("lq6");
    }
    if let Some(h) = std::env::var_os("HOME").filter(|d| !d.is_empty()) {
        return PathBuf::from(h).join(".local/state/lq6");
    }
    std::env::temp_dir().join("lq6")
}

/// The built-in demo config (see [`DEMO_TOML`]), with its store under [`demo_state_dir`].
pub fn demo() -> Config {
    let toml = DEMO_TOML.replace("@STATE@", &demo_state_dir().display().to_string());
    // The embedded demo is covered by a unit test; fall back to defaults rather than panic.
    Config::from_toml_str(&toml, "<demo>").unwrap_or_default()
}

impl Config {
    /// Reads, parses and validates `path`.
    pub fn from_file(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Io {
            file: path.to_owned(),
            source,
        })?;
        Config::from_toml_str(&text, &path.display().to_string())
    }

    /// Parses and validates TOML text; `file` names it in errors.
    pub fn from_toml_str(text: &str, file: &str) -> Result<Config, ConfigError> {
        let cfg: Config = toml::from_str(text).map_err(|e| {
            let pos = e.span().map(|s| s.start).unwrap_or(0);
            let (line, col) = locate::line_col(text, pos);
            ConfigError::Invalid {
                file: file.to_string(),
                line,
                col,
                key: locate::key_at(text, pos).unwrap_or_else(|| "(top level)".into()),
                msg: e.message().trim().to_string(),
            }
        })?;
        if let Err((key, msg)) = cfg.validate() {
            let (line, col) = locate::find_key(text, &key)
                .map(|p| locate::line_col(text, p))
                .unwrap_or((1, 1));
            return Err(ConfigError::Invalid {
                file: file.to_string(),
                line,
                col,
                key,
                msg,
            });
        }
        Ok(cfg)
    }

    /// The server DUID given in `[server] duid`, if any (validated by [`Config::from_toml_str`]).
    pub fn server_duid(&self) -> Option<Duid> {
        self.server.duid.as_deref().and_then(|s| s.parse().ok())
    }

    /// Semantic checks; the error is (key path, message).
    fn validate(&self) -> Result<(), (String, String)> {
        let e = |k: String, m: String| Err((k, m));
        if let Some(d) = &self.server.duid {
            if let Err(err) = d.parse::<Duid>() {
                return e("server.duid".into(), err.to_string());
            }
        }
        if self.server.information_refresh_time < 600 {
            return e(
                "server.information_refresh_time".into(),
                "must be at least 600 (IRT_MINIMUM, RFC 8415 §21.23)".into(),
            );
        }
        if self.server.udp_workers > 64 {
            return e("server.udp_workers".into(), "at most 64".into());
        }
        if self.server.max_in_flight == 0 {
            return e("server.max_in_flight".into(), "must be at least 1".into());
        }
        match (&self.store.path, &self.store.postgres) {
            (Some(_), Some(_)) => {
                return e(
                    "store.postgres".into(),
                    "give either `path` (SQLite) or `postgres`, not both".into(),
                )
            }
            (None, None) => return e("store".into(), "`path` or `postgres` is required".into()),
            _ => {}
        }
        if self.store.postgres.is_some() && self.store.mmap_mib > 0 {
            return e(
                "store.mmap_mib".into(),
                "maps the SQLite file; it has no meaning with `postgres`".into(),
            );
        }
        if self.store.postgres.is_some()
            && self.server.duid.is_none()
            && self.store.state_dir.is_none()
        {
            return e(
                "store.state_dir".into(),
                "with `postgres`, set `server.duid` or `store.state_dir` (where the generated DUID is kept)"
                    .into(),
            );
        }
        check_lifetimes(&self.lifetimes, "lifetimes")?;
        if self.lease.max_pending_offers == 0 {
            return e(
                "lease.max_pending_offers".into(),
                "must be at least 1".into(),
            );
        }
        if self.lease.reclaim_interval == 0 {
            return e("lease.reclaim_interval".into(), "must be at least 1".into());
        }
        for (i, d) in self.options.domain_list.iter().enumerate() {
            if d.parse::<lq6_proto::DomainName>().is_err() {
                return e(
                    format!("options.domain_list[{i}]"),
                    format!("invalid domain name {d:?}"),
                );
            }
        }
        let mut names = std::collections::HashSet::new();
        let mut ranges: Vec<(u128, u128, String)> = Vec::new();
        for (i, l) in self.links.iter().enumerate() {
            let k = |f: &str| format!("links[{i}].{f}");
            if l.name.is_empty() || !names.insert(l.name.as_str()) {
                return e(
                    k("name"),
                    format!("link name {:?} is empty or used twice", l.name),
                );
            }
            if l.prefixes.is_empty() && l.interface.is_none() {
                return e(
                    k("prefixes"),
                    "a link needs at least one prefix or an interface".into(),
                );
            }
            if let Some(lt) = &l.lifetimes {
                check_lifetimes(lt, &k("lifetimes"))?;
            }
            if let Some(dl) = &l.domain_list {
                for (j, d) in dl.iter().enumerate() {
                    if d.parse::<lq6_proto::DomainName>().is_err() {
                        return e(
                            k(&format!("domain_list[{j}]")),
                            format!("invalid domain name {d:?}"),
                        );
                    }
                }
            }
            for (j, p) in l.pools.iter().enumerate() {
                let kp = |f: &str| k(&format!("pools[{j}].{f}"));
                let Some((s, en)) = p.range() else {
                    return e(kp("start"), "give `start` and `end`, or `prefix`".into());
                };
                if u128::from(s) > u128::from(en) {
                    return e(kp("end"), format!("end {en} is below start {s}"));
                }
                if !l.prefixes.iter().any(|n| n.contains(&s) && n.contains(&en)) {
                    return e(
                        kp("start"),
                        format!(
                            "pool {s}-{en} is not inside any prefix of link {:?}",
                            l.name
                        ),
                    );
                }
                ranges.push((s.into(), en.into(), kp("start")));
            }
            for (j, p) in l.pd_pools.iter().enumerate() {
                let kp = |f: &str| k(&format!("pd_pools[{j}].{f}"));
                if p.delegated_len < p.prefix.prefix_len() || p.delegated_len > 128 {
                    return e(
                        kp("delegated_len"),
                        format!(
                            "delegated_len {} must be between the pool prefix length {} and 128",
                            p.delegated_len,
                            p.prefix.prefix_len()
                        ),
                    );
                }
                if p.prefix.network() != p.prefix.addr() {
                    return e(kp("prefix"), format!("{} has host bits set", p.prefix));
                }
                ranges.push((
                    p.prefix.network().into(),
                    p.prefix.broadcast().into(),
                    kp("prefix"),
                ));
            }
        }
        ranges.sort();
        for w in ranges.windows(2) {
            if w[1].0 <= w[0].1 {
                return e(
                    w[1].2.clone(),
                    format!("pool overlaps the pool at `{}`", w[0].2),
                );
            }
        }
        for (i, r) in self.reservations.iter().enumerate() {
            if let Err(err) = r.duid.parse::<Duid>() {
                return e(format!("reservations[{i}].duid"), err.to_string());
            }
            if let Some(ln) = &r.link {
                if !names.contains(ln.as_str()) {
                    return e(
                        format!("reservations[{i}].link"),
                        format!("no link named {ln:?}"),
                    );
                }
            }
        }
        Ok(())
    }
}

fn check_lifetimes(lt: &Lifetimes, key: &str) -> Result<(), (String, String)> {
    if lt.preferred > lt.valid {
        return Err((
            format!("{key}.preferred"),
            "preferred lifetime exceeds valid lifetime (RFC 8415 §21.6)".into(),
        ));
    }
    if lt.valid == 0 {
        return Err((format!("{key}.valid"), "must be above 0".into()));
    }
    if !(0.0..=1.0).contains(&lt.t1) || !(0.0..=1.0).contains(&lt.t2) || lt.t1 > lt.t2 {
        return Err((
            format!("{key}.t1"),
            "need 0 <= t1 <= t2 <= 1 (RFC 8415 §21.4)".into(),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests;
