//! DUIDs (RFC 8415 §11). They are compared only as opaque octets; the type is
//! parsed only to show them in the forms operators know.

use std::fmt;
use std::str::FromStr;

/// A DUID of 3..=130 octets: a 2-octet type and 1..=128 octets of data.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Duid(Vec<u8>);

/// The structure of a DUID, for display only.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DuidKind<'a> {
    /// DUID-LLT: hardware type, time (seconds since 2000-01-01), link-layer address.
    Llt {
        hw_type: u16,
        time: u32,
        ll: &'a [u8],
    },
    /// DUID-EN: enterprise number and identifier.
    En {
        enterprise: u32,
        id: &'a [u8],
    },
    /// DUID-LL: hardware type and link-layer address.
    Ll {
        hw_type: u16,
        ll: &'a [u8],
    },
    /// DUID-UUID (RFC 6355).
    Uuid(&'a [u8; 16]),
    Unknown {
        duid_type: u16,
        data: &'a [u8],
    },
}

pub const DUID_MIN_LEN: usize = 3;
pub const DUID_MAX_LEN: usize = 130;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid DUID {input:?}: {reason}")]
pub struct DuidParseError {
    pub input: String,
    pub reason: &'static str,
}

impl Duid {
    /// Wraps raw DUID octets, checking only the length bounds.
    pub fn from_bytes(b: impl Into<Vec<u8>>) -> Option<Duid> {
        let v = b.into();
        (DUID_MIN_LEN..=DUID_MAX_LEN)
            .contains(&v.len())
            .then_some(Duid(v))
    }

    pub(crate) fn from_vec_unchecked(v: Vec<u8>) -> Duid {
        Duid(v)
    }

    pub fn ll(hw_type: u16, ll: &[u8]) -> Duid {
        let mut v = Vec::with_capacity(4 + ll.len());
        v.extend_from_slice(&3u16.to_be_bytes());
        v.extend_from_slice(&hw_type.to_be_bytes());
        v.extend_from_slice(ll);
        Duid(v)
    }

    pub fn en(enterprise: u32, id: &[u8]) -> Duid {
        let mut v = Vec::with_capacity(6 + id.len());
        v.extend_from_slice(&2u16.to_be_bytes());
        v.extend_from_slice(&enterprise.to_be_bytes());
        v.extend_from_slice(id);
        Duid(v)
    }

    pub fn llt(hw_type: u16, time: u32, ll: &[u8]) -> Duid {
        let mut v = Vec::with_capacity(8 + ll.len());
        v.extend_from_slice(&1u16.to_be_bytes());
        v.extend_from_slice(&hw_type.to_be_bytes());
        v.extend_from_slice(&time.to_be_bytes());
        v.extend_from_slice(ll);
        Duid(v)
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    pub fn into_bytes(self) -> Vec<u8> {
        self.0
    }

    pub fn kind(&self) -> DuidKind<'_> {
        let b = &self.0;
        let t = u16::from_be_bytes([b[0], b[1]]);
        let d = &b[2..];
        match t {
            1 if d.len() >= 6 => DuidKind::Llt {
                hw_type: u16::from_be_bytes([d[0], d[1]]),
                time: u32::from_be_bytes([d[2], d[3], d[4], d[5]]),
                ll: &d[6..],
            },
            2 if d.len() >= 4 => DuidKind::En {
                enterprise: u32::from_be_bytes([d[0], d[1], d[2], d[3]]),
                id: &d[4..],
            },
            3 if d.len() >= 2 => DuidKind::Ll {
                hw_type: u16::from_be_bytes([d[0], d[1]]),
                ll: &d[2..],
            },
            4 if d.len() == 16 => match <&[u8; 16]>::try_from(d) {
                Ok(u) => DuidKind::Uuid(u),
                Err(_) => DuidKind::Unknown {
                    duid_type: t,
                    data: d,
                },
            },
            _ => DuidKind::Unknown {
                duid_type: t,
                data: d,
            },
        }
    }

    /// A human description, e.g. `DUID-LL hw 1 00:11:22:33:44:55`.
    pub fn describe(&self) -> String {
        match self.kind() {
            DuidKind::Llt { hw_type, time, ll } => {
                format!("DUID-LLT hw {hw_type} time {time} {}", colon_hex(ll))
            }
            DuidKind::En { enterprise, id } => format!("DUID-EN {enterprise} {}", colon_hex(id)),
            DuidKind::Ll { hw_type, ll } => format!("DUID-LL hw {hw_type} {}", colon_hex(ll)),
            DuidKind::Uuid(u) => format!("DUID-UUID {}", colon_hex(u)),
            DuidKind::Unknown { duid_type, data } => {
                format!("DUID type {duid_type} {}", colon_hex(data))
            }
        }
    }
}

/// Colon-separated lower-case hex, the form Kea and ISC dhcpd print.
pub fn colon_hex(b: &[u8]) -> String {
    let mut s = String::with_capacity(b.len() * 3);
    for (i, x) in b.iter().enumerate() {
        if i > 0 {
            s.push(':');
        }
        s.push(char::from_digit((x >> 4) as u32, 16).unwrap_or('0'));
        s.push(char::from_digit((x & 15) as u32, 16).unwrap_or('0'));
    }
    s
}

/// Parses hex with or without `:`/`-` separators; `0x` prefix allowed.
pub fn parse_hex(s: &str) -> Option<Vec<u8>> {
    let s = s.strip_prefix("0x").unwrap_or(s);
    if s.contains([':', '-']) {
        s.split([':', '-'])
            .map(|p| {
                if p.is_empty() || p.len() > 2 {
                    None
                } else {
                    u8::from_str_radix(p, 16).ok()
                }
            })
            .collect()
    } else {
        if s.len() % 2 != 0 || s.is_empty() {
            return None;
        }
        (0..s.len())
            .step_by(2)
            .map(|i| s.get(i..i + 2).and_then(|p| u8::from_str_radix(p, 16).ok()))
            .collect()
    }
}

impl fmt::Display for Duid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&colon_hex(&self.0))
    }
}

impl FromStr for Duid {
    type Err = DuidParseError;

    /// Accepts plain hex (`000300010200...`, with or without colons) and the
    /// typed forms `ll:HWTYPE:MAC`, `llt:HWTYPE:TIME:MAC`, `en:PEN:HEX`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = |reason| DuidParseError {
            input: s.to_string(),
            reason,
        };
        let typed = |prefix: &str| s.strip_prefix(prefix);
        let v = if let Some(rest) = typed("ll:") {
            let (hw, mac) = rest
                .split_once(':')
                .ok_or_else(|| err("expected ll:HWTYPE:MAC"))?;
            let hw: u16 = hw.parse().map_err(|_| err("bad hardware type"))?;
            Duid::ll(hw, &parse_hex(mac).ok_or_else(|| err("bad MAC"))?).0
        } else if let Some(rest) = typed("en:") {
            let (pen, id) = rest
                .split_once(':')
                .ok_or_else(|| err("expected en:PEN:HEX"))?;
            let pen: u32 = pen.parse().map_err(|_| err("bad enterprise number"))?;
            Duid::en(
                pen,
                &parse_hex(id).ok_or_else(|| err("bad identifier hex"))?,
            )
            .0
        } else if let Some(rest) = typed("llt:") {
            let mut it = rest.splitn(3, ':');
            let (Some(hw), Some(t), Some(mac)) = (it.next(), it.next(), it.next()) else {
                return Err(err("expected llt:HWTYPE:TIME:MAC"));
            };
            let hw: u16 = hw.parse().map_err(|_| err("bad hardware type"))?;
            let t: u32 = t.parse().map_err(|_| err("bad time"))?;
            Duid::llt(hw, t, &parse_hex(mac).ok_or_else(|| err("bad MAC"))?).0
        } else {
            parse_hex(s).ok_or_else(|| err("not hex"))?
        };
        Duid::from_bytes(v).ok_or_else(|| err("length outside 3..=130 octets"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn textual_forms() {
        let d: Duid = "00:03:00:01:02:00:00:00:00:01".parse().unwrap();
        assert_eq!(d, Duid::ll(1, &[2, 0, 0, 0, 0, 1]));
        assert_eq!(
            "000300010200000000 01"
                .replace(' ', "")
                .parse::<Duid>()
                .unwrap(),
            d
        );
        assert_eq!("ll:1:02:00:00:00:00:01".parse::<Duid>().unwrap(), d);
        assert_eq!(d.describe(), "DUID-LL hw 1 02:00:00:00:00:01");
        let en: Duid = "en:2495:0a0b0c0d".parse().unwrap();
        assert_eq!(en.as_bytes(), &[0, 2, 0, 0, 9, 0xbf, 10, 11, 12, 13]);
        assert!("00:01".parse::<Duid>().is_err());
        assert!("zz".parse::<Duid>().is_err());
        assert!("0:".parse::<Duid>().is_err());
    }
}
