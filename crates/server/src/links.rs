//! The link table built from `[[links]]`: link selection by relay link-address or interface
//! (RFC 8415 §13.1, RFC 6221), and the [`LinkMap`] the leasequery responder uses.

use ipnet::Ipv6Net;
use lq6_config::{Config, Lifetimes};
use lq6_leasequery::LinkMap;
use lq6_proto::DomainName;
use std::net::Ipv6Addr;

/// One configured link.
#[derive(Debug, Clone)]
pub struct Link {
    pub name: String,
    pub prefixes: Vec<Ipv6Net>,
    pub interface: Option<String>,
    pub rapid_commit: bool,
    pub lifetimes: Lifetimes,
    pub dns_servers: Vec<Ipv6Addr>,
    pub domain_list: Vec<DomainName>,
    /// Address pools as (start, end).
    pub pools: Vec<(Ipv6Addr, Ipv6Addr)>,
    /// PD pools as (prefix, delegated length).
    pub pd_pools: Vec<(Ipv6Net, u8)>,
}

impl Link {
    /// Whether `a` is appropriate for this link (RFC 8415 §18.3.2 NotOnLink).
    pub fn on_link(&self, a: Ipv6Addr) -> bool {
        self.prefixes.iter().any(|p| p.contains(&a))
    }

    /// Whether the delegated prefix `p/len` belongs to one of this link's PD pools.
    pub fn pd_on_link(&self, p: Ipv6Addr, len: u8) -> bool {
        self.pd_pools
            .iter()
            .any(|(n, dl)| *dl == len && n.contains(&p))
    }
}

/// All links, indexed by position.
#[derive(Debug, Clone, Default)]
pub struct LinkTable {
    pub links: Vec<Link>,
}

impl LinkTable {
    pub fn from_config(cfg: &Config) -> LinkTable {
        let parse_domains =
            |v: &[String]| -> Vec<DomainName> { v.iter().filter_map(|d| d.parse().ok()).collect() };
        let links = cfg
            .links
            .iter()
            .map(|l| Link {
                name: l.name.clone(),
                prefixes: l.prefixes.clone(),
                interface: l.interface.clone(),
                rapid_commit: l.rapid_commit,
                lifetimes: l.lifetimes.unwrap_or(cfg.lifetimes),
                dns_servers: l
                    .dns_servers
                    .clone()
                    .unwrap_or_else(|| cfg.options.dns_servers.clone()),
                domain_list: parse_domains(
                    l.domain_list.as_deref().unwrap_or(&cfg.options.domain_list),
                ),
                pools: l.pools.iter().filter_map(|p| p.range()).collect(),
                pd_pools: l
                    .pd_pools
                    .iter()
                    .map(|p| (p.prefix, p.delegated_len))
                    .collect(),
            })
            .collect();
        LinkTable { links }
    }

    /// The link whose prefix (longest match) contains `a`.
    pub fn by_address(&self, a: Ipv6Addr) -> Option<usize> {
        let mut best: Option<(usize, u8)> = None;
        for (i, l) in self.links.iter().enumerate() {
            for p in &l.prefixes {
                if p.contains(&a) && !matches!(best, Some((_, len)) if len >= p.prefix_len()) {
                    best = Some((i, p.prefix_len()));
                }
            }
        }
        best.map(|(i, _)| i)
    }

    /// The link configured on interface `name`.
    pub fn by_interface(&self, name: &str) -> Option<usize> {
        self.links
            .iter()
            .position(|l| l.interface.as_deref() == Some(name))
    }

    pub fn by_name(&self, name: &str) -> Option<usize> {
        self.links.iter().position(|l| l.name == name)
    }
}

impl LinkMap for LinkTable {
    fn link_for_address(&self, addr: Ipv6Addr) -> Option<String> {
        if let Some(i) = self.by_address(addr) {
            return Some(self.links[i].name.clone());
        }
        // A leased address inside a delegated prefix belongs to the link the prefix was delegated on.
        self.links
            .iter()
            .find(|l| l.pd_pools.iter().any(|(n, _)| n.contains(&addr)))
            .map(|l| l.name.clone())
    }

    fn link_address(&self, link: &str) -> Option<Ipv6Addr> {
        let l = self.links.iter().find(|l| l.name == link)?;
        l.prefixes.first().map(|p| p.network())
    }
}
