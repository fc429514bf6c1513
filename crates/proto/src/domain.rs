//! Uncompressed DNS names as used by DOMAIN_LIST (RFC 8415 §10, RFC 1035 §3.1).

use std::fmt;

/// A fully qualified name as its labels (without the final empty label).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct DomainName {
    labels: Vec<Vec<u8>>,
}

impl DomainName {
    /// Builds a name from labels, checking the RFC 1035 bounds.
    pub fn from_labels(labels: Vec<Vec<u8>>) -> Option<DomainName> {
        let wire: usize = labels.iter().map(|l| l.len() + 1).sum::<usize>() + 1;
        let ok = labels.iter().all(|l| (1..=63).contains(&l.len())) && wire <= 255;
        ok.then_some(DomainName { labels })
    }

    pub fn labels(&self) -> &[Vec<u8>] {
        &self.labels
    }

    pub(crate) fn wire_len(&self) -> usize {
        self.labels.iter().map(|l| l.len() + 1).sum::<usize>() + 1
    }

    pub(crate) fn encode(&self, out: &mut Vec<u8>) {
        for l in &self.labels {
            out.push(l.len() as u8);
            out.extend_from_slice(l);
        }
        out.push(0);
    }

    /// Decodes one name from the front of `b`, returning it and the octets used.
    pub(crate) fn decode(b: &[u8]) -> Result<(DomainName, usize), &'static str> {
        let mut labels = Vec::new();
        let mut i = 0;
        loop {
            let Some(&len) = b.get(i) else {
                return Err("name not terminated by a root label");
            };
            i += 1;
            if len == 0 {
                break;
            }
            if len > 63 {
                return Err("label longer than 63 octets or compressed");
            }
            let Some(l) = b.get(i..i + len as usize) else {
                return Err("label runs past the option");
            };
            labels.push(l.to_vec());
            i += len as usize;
            if i > 254 {
                return Err("name longer than 255 octets");
            }
        }
        Ok((DomainName { labels }, i))
    }
}

impl std::str::FromStr for DomainName {
    type Err = &'static str;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.strip_suffix('.').unwrap_or(s);
        let labels = s.split('.').map(|l| l.as_bytes().to_vec()).collect();
        DomainName::from_labels(labels).ok_or("invalid domain name")
    }
}

impl fmt::Display for DomainName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for l in &self.labels {
            for &c in l {
                if c.is_ascii_graphic() && c != b'.' && c != b'\\' {
                    write!(f, "{}", c as char)?;
                } else {
                    write!(f, "\\{c:03}")?;
                }
            }
            f.write_str(".")?;
        }
        if self.labels.is_empty() {
            f.write_str(".")?;
        }
        Ok(())
    }
}
