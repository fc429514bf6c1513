//! Responder counters and a minimal Prometheus text endpoint (off unless
//! `[metrics] listen` is set). One GET per connection, no keep-alive: the
//! endpoint is scraped, not browsed, so a full HTTP stack is not warranted.

use lq6_proto::{QueryType, Status};
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

const TYPES: usize = 6; // 1..=5, 0 = other
const STATUSES: usize = 17; // 0..=15, 16 = other

fn type_index(t: QueryType) -> usize {
    match t.to_u8() {
        n @ 1..=5 => n as usize,
        _ => 0,
    }
}

fn status_index(s: Status) -> usize {
    (s.to_u16() as usize).min(STATUSES - 1)
}

/// Counters shared by the UDP handler and every TCP connection.
#[derive(Default)]
pub struct Metrics {
    queries_udp: [[AtomicU64; STATUSES]; TYPES],
    queries_tcp: [[AtomicU64; STATUSES]; TYPES],
    pub bindings_sent_udp: AtomicU64,
    pub bindings_sent_tcp: AtomicU64,
    pub udp_dropped: AtomicU64,
    pub connections_open: AtomicUsize,
    pub connections_accepted: AtomicU64,
    pub connections_refused_not_allowed: AtomicU64,
    pub connections_refused_limit: AtomicU64,
    pub connections_evicted_idle: AtomicU64,
    pub timeouts_idle: AtomicU64,
    pub timeouts_write: AtomicU64,
    pub protocol_errors: AtomicU64,
    pub queries_terminated: AtomicU64,
    /// LEASEQUERY frames read off TCP connections (a query slot was free).
    pub queries_read: AtomicU64,
    /// Encoded reply octets queued for TCP writers right now, and the most ever.
    pub buffered_bytes: AtomicUsize,
    pub buffered_bytes_high_water: AtomicUsize,
}

impl Metrics {
    pub fn query(&self, tcp: bool, t: QueryType, s: Status) {
        let table = if tcp {
            &self.queries_tcp
        } else {
            &self.queries_udp
        };
        table[type_index(t)][status_index(s)].fetch_add(1, Relaxed);
    }

    pub fn queries(&self, tcp: bool, t: QueryType, s: Status) -> u64 {
        let table = if tcp {
            &self.queries_tcp
        } else {
            &self.queries_udp
        };
        table[type_index(t)][status_index(s)].load(Relaxed)
    }

    pub(crate) fn buffer_add(&self, n: usize) {
        let now = self.buffered_bytes.fetch_add(n, Relaxed) + n;
        self.buffered_bytes_high_water.fetch_max(now, Relaxed);
    }

    pub(crate) fn buffer_sub(&self, n: usize) {
        self.buffered_bytes.fetch_sub(n, Relaxed);
    }

    /// Prometheus text exposition format.
    pub fn render(&self) -> String {
        let mut s = String::new();
        let names = [
            "other",
            "address",
            "client_id",
            "relay_id",
            "link_address",
            "remote_id",
        ];
        let _ = writeln!(s, "# TYPE lq6_leasequery_queries_total counter");
        for (tr, table) in [("udp", &self.queries_udp), ("tcp", &self.queries_tcp)] {
            for (ti, row) in table.iter().enumerate() {
                for (si, c) in row.iter().enumerate() {
                    let v = c.load(Relaxed);
                    if v > 0 {
                        let st = if si == STATUSES - 1 {
                            "other".to_string()
                        } else {
                            Status::from_u16(si as u16).to_string()
                        };
                        let _ = writeln!(s, "lq6_leasequery_queries_total{{transport=\"{tr}\",type=\"{}\",outcome=\"{st}\"}} {v}", names[ti]);
                    }
                }
            }
        }
        let c = |s: &mut String, name: &str, kind: &str, v: u64| {
            let _ = writeln!(s, "# TYPE {name} {kind}\n{name} {v}");
        };
        let _ = writeln!(s, "# TYPE lq6_leasequery_bindings_sent_total counter");
        let _ = writeln!(
            s,
            "lq6_leasequery_bindings_sent_total{{transport=\"udp\"}} {}",
            self.bindings_sent_udp.load(Relaxed)
        );
        let _ = writeln!(
            s,
            "lq6_leasequery_bindings_sent_total{{transport=\"tcp\"}} {}",
            self.bindings_sent_tcp.load(Relaxed)
        );
        c(
            &mut s,
            "lq6_leasequery_udp_dropped_total",
            "counter",
            self.udp_dropped.load(Relaxed),
        );
        c(
            &mut s,
            "lq6_bulk_connections_open",
            "gauge",
            self.connections_open.load(Relaxed) as u64,
        );
        c(
            &mut s,
            "lq6_bulk_connections_accepted_total",
            "counter",
            self.connections_accepted.load(Relaxed),
        );
        let _ = writeln!(s, "# TYPE lq6_bulk_connections_refused_total counter");
        let _ = writeln!(
            s,
            "lq6_bulk_connections_refused_total{{reason=\"not_allowed\"}} {}",
            self.connections_refused_not_allowed.load(Relaxed)
        );
        let _ = writeln!(
            s,
            "lq6_bulk_connections_refused_total{{reason=\"limit\"}} {}",
            self.connections_refused_limit.load(Relaxed)
        );
        c(
            &mut s,
            "lq6_bulk_connections_evicted_idle_total",
            "counter",
            self.connections_evicted_idle.load(Relaxed),
        );
        let _ = writeln!(s, "# TYPE lq6_bulk_timeouts_total counter");
        let _ = writeln!(
            s,
            "lq6_bulk_timeouts_total{{kind=\"idle\"}} {}",
            self.timeouts_idle.load(Relaxed)
        );
        let _ = writeln!(
            s,
            "lq6_bulk_timeouts_total{{kind=\"write\"}} {}",
            self.timeouts_write.load(Relaxed)
        );
        c(
            &mut s,
            "lq6_bulk_protocol_errors_total",
            "counter",
            self.protocol_errors.load(Relaxed),
        );
        c(
            &mut s,
            "lq6_bulk_queries_terminated_total",
            "counter",
            self.queries_terminated.load(Relaxed),
        );
        c(
            &mut s,
            "lq6_bulk_queries_read_total",
            "counter",
            self.queries_read.load(Relaxed),
        );
        c(
            &mut s,
            "lq6_bulk_buffered_bytes",
            "gauge",
            self.buffered_bytes.load(Relaxed) as u64,
        );
        c(
            &mut s,
            "lq6_bulk_buffered_bytes_high_water",
            "gauge",
            self.buffered_bytes_high_water.load(Relaxed) as u64,
        );
        s
    }
}

/// Serves `render()` as `text/plain; version=0.0.4` on every request until
/// `shutdown`. Requests are read with a small bound and a timeout.
pub async fn serve(
    listener: TcpListener,
    render: Arc<dyn Fn() -> String + Send + Sync>,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    loop {
        let (mut sock, _) = tokio::select! {
            r = listener.accept() => r?,
            _ = shutdown.cancelled() => return Ok(()),
        };
        let render = render.clone();
        tokio::spawn(async move {
            let mut req = [0u8; 1024];
            let read =
                tokio::time::timeout(std::time::Duration::from_secs(5), sock.read(&mut req)).await;
            if !matches!(read, Ok(Ok(n)) if n > 0) {
                return;
            }
            let body = render();
            let head = format!(
                "HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            );
            let _ = sock.write_all(head.as_bytes()).await;
            let _ = sock.write_all(body.as_bytes()).await;
            let _ = sock.shutdown().await;
        });
    }
}
