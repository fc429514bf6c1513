//! Requestor settings: identity, timers, retransmission.

use lq6_proto::Duid;
use std::time::Duration;

/// BULK_LQ_DATA_TIMEOUT (RFC 5460 §5.6).
pub const BULK_LQ_DATA_TIMEOUT: Duration = Duration::from_secs(300);

/// RFC 8415 §15 retransmission parameters; RFC 5007 §4.3.2 sets them to
/// LQ_TIMEOUT, LQ_MAX_RT, LQ_MAX_RC and 0.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retransmit {
    /// IRT, LQ_TIMEOUT: 1 s.
    pub irt: Duration,
    /// MRT, LQ_MAX_RT: 10 s.
    pub mrt: Duration,
    /// MRC, LQ_MAX_RC: 5 transmissions (0 = unlimited, then `mrd` must be set).
    pub mrc: u32,
    /// MRD: 0 = no overall limit (the exchange ends after MRC transmissions).
    pub mrd: Duration,
}

impl Default for Retransmit {
    fn default() -> Self {
        Retransmit {
            irt: Duration::from_secs(1),
            mrt: Duration::from_secs(10),
            mrc: 5,
            mrd: Duration::ZERO,
        }
    }
}

impl Retransmit {
    /// The next retransmission timeout (RFC 8415 §15): the first is
    /// IRT + RAND·IRT, then 2·RTprev + RAND·RTprev, capped at MRT + RAND·MRT,
    /// with RAND uniform in [-0.1, 0.1].
    pub fn next_rt(&self, prev: Option<Duration>) -> Duration {
        let rand = || fastrand::f64() * 0.2 - 0.1;
        let rt = match prev {
            None => self.irt.as_secs_f64() * (1.0 + rand()),
            Some(p) => p.as_secs_f64() * (2.0 + rand()),
        };
        let mrt = self.mrt.as_secs_f64();
        let rt = if mrt > 0.0 && rt > mrt {
            mrt * (1.0 + rand())
        } else {
            rt
        };
        Duration::from_secs_f64(rt.max(0.0))
    }
}

/// How to open the TCP connection (RFC 5460 §6.1: "the requestor MAY retry").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectPolicy {
    /// Total attempts, at least 1.
    pub attempts: u32,
    /// Delay before the second attempt; doubles after each failure.
    pub retry_delay: Duration,
    /// Limit on one connect attempt.
    pub connect_timeout: Duration,
}

impl Default for ConnectPolicy {
    fn default() -> Self {
        ConnectPolicy {
            attempts: 3,
            retry_delay: Duration::from_millis(500),
            connect_timeout: Duration::from_secs(10),
        }
    }
}

/// Settings shared by every transport.
#[derive(Debug, Clone)]
pub struct RequestorConfig {
    /// The requestor's own DUID, sent as CLIENTID (RFC 5007 §4.3.1).
    pub duid: Duid,
    /// BULK_LQ_DATA_TIMEOUT: limit on a blocked TCP read or write.
    pub bulk_timeout: Duration,
    pub connect: ConnectPolicy,
    pub retransmit: Retransmit,
    /// Capacity, in batches of bindings, of each query's channel on a bulk
    /// connection. A consumer that falls behind stops the connection from
    /// reading (TCP back-pressure) instead of growing a buffer.
    pub channel_batches: usize,
}

impl Default for RequestorConfig {
    fn default() -> Self {
        RequestorConfig {
            duid: default_duid(),
            bulk_timeout: BULK_LQ_DATA_TIMEOUT,
            connect: ConnectPolicy::default(),
            retransmit: Retransmit::default(),
            channel_batches: 8,
        }
    }
}

/// Enterprise number used for the fallback DUID-EN (RFC 5612's documentation
/// number; lq6 has none of its own).
pub const FALLBACK_PEN: u32 = 32473;

/// A DUID of this host: DUID-LL (hardware type 1) from the first
/// non-loopback interface with a non-zero 6-octet MAC, found in
/// /sys/class/net on Linux; otherwise DUID-EN 32473 "lq6-requestor".
pub fn default_duid() -> Duid {
    mac_address()
        .map(|mac| Duid::ll(1, &mac))
        .unwrap_or_else(|| Duid::en(FALLBACK_PEN, b"lq6-requestor"))
}

fn mac_address() -> Option<[u8; 6]> {
    let mut names: Vec<_> = std::fs::read_dir("/sys/class/net")
        .ok()?
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n != "lo")
        .collect();
    names.sort();
    names.into_iter().find_map(|n| {
        let s = std::fs::read_to_string(format!("/sys/class/net/{n}/address")).ok()?;
        let v = lq6_proto::duid::parse_hex(s.trim())?;
        let mac: [u8; 6] = v.try_into().ok()?;
        (mac != [0; 6]).then_some(mac)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rt_sequence_is_bounded() {
        let r = Retransmit::default();
        let mut prev = None;
        for i in 0..10 {
            let rt = r.next_rt(prev);
            let s = rt.as_secs_f64();
            if i == 0 {
                assert!((0.9..=1.1).contains(&s), "{s}");
            }
            assert!(s <= 11.0 + 1e-9, "{s}");
            prev = Some(rt);
        }
        assert!(prev.unwrap().as_secs_f64() >= 9.0);
    }

    #[test]
    fn default_duid_is_valid() {
        let d = default_duid();
        assert!(d.as_bytes().len() >= 3);
    }
}
