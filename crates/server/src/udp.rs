//! UDP I/O: unicast sockets for relayed traffic, and per-interface sockets that join
//! ff02::1:2 (RFC 8415 §7.1) for directly attached clients. Each datagram is handled in its own
//! task (bounded by `max_in_flight`), so many transactions wait on the store at once and their
//! commits share one fsync.

use crate::counters::Counters;
use crate::engine::{Engine, RecvMeta};
use socket2::{Domain, Protocol, Socket, Type};
use std::future::Future;
use std::net::{Ipv6Addr, SocketAddr, SocketAddrV6};
use std::sync::Arc;
use tokio::net::UdpSocket;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

/// All_DHCP_Relay_Agents_and_Servers (RFC 8415 §7.1).
pub const ALL_DHCP_RELAY_AGENTS_AND_SERVERS: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 1, 2);

/// Errors setting up sockets.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum UdpError {
    #[error("cannot bind udp {addr}: {source}")]
    Bind {
        addr: String,
        source: std::io::Error,
    },
    #[error("interface {iface}: {source}")]
    Interface {
        iface: String,
        source: std::io::Error,
    },
}

/// One receiving socket and the socket its replies leave from (std sockets: they are
/// registered with the DHCP thread's own runtime in [`run`]).
#[derive(Debug, Clone)]
pub struct Listener {
    pub socket: Arc<std::net::UdpSocket>,
    pub reply: Arc<std::net::UdpSocket>,
    pub iface: Option<String>,
    pub multicast: bool,
}

impl Listener {
    /// What to log: the bound address.
    pub fn describe(&self) -> String {
        match (self.socket.local_addr(), &self.iface) {
            (Ok(a), Some(i)) if self.multicast => format!("{a} (multicast on {i})"),
            (Ok(a), Some(i)) => format!("{a} (interface {i})"),
            (Ok(a), None) => a.to_string(),
            (Err(e), _) => format!("? ({e})"),
        }
    }
}

fn new_socket(addr: SocketAddrV6, iface: Option<&str>) -> std::io::Result<Socket> {
    let s = Socket::new(Domain::IPV6, Type::DGRAM, Some(Protocol::UDP))?;
    s.set_only_v6(true)?;
    s.set_reuse_address(true)?;
    s.set_nonblocking(true)?;
    // Large buffers absorb bursts while transactions wait for group commit.
    let _ = s.set_recv_buffer_size(8 << 20);
    let _ = s.set_send_buffer_size(8 << 20);
    if let Some(i) = iface {
        s.bind_device(Some(i.as_bytes()))?;
    }
    s.bind(&SocketAddr::V6(addr).into())?;
    Ok(s)
}

fn to_std(s: Socket) -> std::io::Result<Arc<std::net::UdpSocket>> {
    Ok(Arc::new(s.into()))
}

/// The kernel index of `iface` (from sysfs).
pub fn ifindex(iface: &str) -> std::io::Result<u32> {
    let s = std::fs::read_to_string(format!("/sys/class/net/{iface}/ifindex"))?;
    s.trim()
        .parse()
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::InvalidData, "bad ifindex"))
}

/// Binds the unicast `listen` addresses and, for each interface, a multicast socket on
/// ff02::1:2 plus a device-bound unicast socket that also sends the replies.
pub fn bind(
    listen: &[SocketAddr],
    interfaces: &[String],
    port: u16,
) -> Result<Vec<Listener>, UdpError> {
    let mut out = Vec::new();
    for a in listen {
        let v6 = match a {
            SocketAddr::V6(v) => *v,
            SocketAddr::V4(v) => {
                return Err(UdpError::Bind {
                    addr: v.to_string(),
                    source: std::io::Error::new(
                        std::io::ErrorKind::InvalidInput,
                        "DHCPv6 needs IPv6",
                    ),
                })
            }
        };
        let s = new_socket(v6, None)
            .and_then(to_std)
            .map_err(|source| UdpError::Bind {
                addr: a.to_string(),
                source,
            })?;
        out.push(Listener {
            socket: s.clone(),
            reply: s,
            iface: None,
            multicast: false,
        });
    }
    for i in interfaces {
        let ierr = |source| UdpError::Interface {
            iface: i.clone(),
            source,
        };
        let idx = ifindex(i).map_err(ierr)?;
        let uni = new_socket(
            SocketAddrV6::new(Ipv6Addr::UNSPECIFIED, port, 0, 0),
            Some(i),
        )
        .map_err(ierr)?;
        let _ = uni.set_multicast_all_v6(false);
        let uni = to_std(uni).map_err(ierr)?;
        let mc = new_socket(
            SocketAddrV6::new(ALL_DHCP_RELAY_AGENTS_AND_SERVERS, port, 0, idx),
            Some(i),
        )
        .and_then(|s| {
            s.join_multicast_v6(&ALL_DHCP_RELAY_AGENTS_AND_SERVERS, idx)?;
            Ok(s)
        })
        .and_then(to_std)
        .map_err(ierr)?;
        out.push(Listener {
            socket: mc,
            reply: uni.clone(),
            iface: Some(i.clone()),
            multicast: true,
        });
        out.push(Listener {
            socket: uni.clone(),
            reply: uni,
            iface: Some(i.clone()),
            multicast: false,
        });
    }
    Ok(out)
}

/// Serves until `shutdown`, then waits for in-flight transactions (their leases are committed
/// and their replies sent).
///
/// Each of `workers` threads (`server.udp_workers`; 0: one per CPU, at most 4) runs a
/// current-thread runtime with its own registration of every socket: no work stealing and no
/// cross-thread hand-off per datagram; the only hand-off is to the store's commit thread and
/// back. All workers read the same sockets, so one busy relay is spread over all of them (but
/// every worker wakes for each datagram). `max_in_flight` is shared.
pub async fn run(
    engine: Arc<Engine>,
    listeners: Vec<Listener>,
    max_in_flight: usize,
    workers: usize,
    shutdown: CancellationToken,
) {
    let workers = match workers {
        0 => std::thread::available_parallelism().map_or(1, |n| n.get().min(4)),
        n => n,
    };
    let max = max_in_flight.clamp(1, Semaphore::MAX_PERMITS);
    let sem = Arc::new(Semaphore::new(max));
    let pacer = Arc::new(Pacer::new());
    let mut done = Vec::new();
    for i in 0..workers {
        let (done_tx, done_rx) = tokio::sync::oneshot::channel::<()>();
        let (engine, listeners, sem, pacer, shutdown) = (
            engine.clone(),
            listeners.clone(),
            sem.clone(),
            pacer.clone(),
            shutdown.clone(),
        );
        let spawned = std::thread::Builder::new()
            .name(format!("lq6-dhcp-{i}"))
            .spawn(move || {
                let rt = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt,
                    Err(e) => {
                        warn!(error = %e, "cannot start a DHCP runtime");
                        return;
                    }
                };
                rt.block_on(serve_local(engine, listeners, (sem, max), pacer, shutdown));
                drop(done_tx);
            });
        match spawned {
            Ok(_) => done.push(done_rx),
            Err(e) => warn!(error = %e, "cannot start a DHCP thread"),
        }
    }
    // Each worker returns only once every permit is back, that is once every transaction of
    // every worker has finished.
    for d in done {
        let _ = d.await;
    }
}

async fn serve_local(
    engine: Arc<Engine>,
    listeners: Vec<Listener>,
    (sem, max): (Arc<Semaphore>, usize),
    pacer: Arc<Pacer>,
    shutdown: CancellationToken,
) {
    // Register each distinct socket once (a reply socket may also be a receiving socket).
    let mut registered: Vec<(*const std::net::UdpSocket, Arc<UdpSocket>)> = Vec::new();
    let mut get = |s: &Arc<std::net::UdpSocket>| -> Option<Arc<UdpSocket>> {
        let key = Arc::as_ptr(s);
        if let Some((_, t)) = registered.iter().find(|(k, _)| *k == key) {
            return Some(t.clone());
        }
        let t = s
            .try_clone()
            .and_then(|c| {
                c.set_nonblocking(true)?;
                UdpSocket::from_std(c)
            })
            .map_err(|e| warn!(error = %e, "cannot register a udp socket"))
            .ok()?;
        let t = Arc::new(t);
        registered.push((key, t.clone()));
        Some(t)
    };
    let mut set = tokio::task::JoinSet::new();
    for l in listeners {
        let (Some(sock), Some(reply)) = (get(&l.socket), get(&l.reply)) else {
            continue;
        };
        let l = Local {
            socket: sock,
            reply,
            iface: l.iface,
            multicast: l.multicast,
            pacer: pacer.clone(),
        };
        set.spawn(recv_loop(engine.clone(), l, sem.clone(), shutdown.clone()));
    }
    while set.join_next().await.is_some() {}
    // Tasks still waiting on a commit run on this runtime: keep it until every permit is back.
    let _ = sem.acquire_many(max as u32).await;
}

/// A listener registered with the DHCP thread's runtime.
struct Local {
    pacer: Arc<Pacer>,
    socket: Arc<UdpSocket>,
    reply: Arc<UdpSocket>,
    iface: Option<String>,
    multicast: bool,
}

/// Datagrams taken from a socket before the receive loop yields to the runtime.
const BURST: u32 = 32;

async fn recv_loop(
    engine: Arc<Engine>,
    l: Local,
    sem: Arc<Semaphore>,
    shutdown: CancellationToken,
) {
    let counters = engine.counters();
    let mut buf = vec![0u8; 65536];
    let mut burst = 0u32;
    loop {
        // Take what is queued without a trip through the reactor, and wait only when the socket
        // is empty. Every BURST datagrams, yield so that commit tasks and other listeners run.
        let r = match l.socket.try_recv_from(&mut buf) {
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                burst = 0;
                tokio::select! {
                    biased;
                    _ = shutdown.cancelled() => break,
                    r = l.socket.readable() => {
                        if let Err(e) = r {
                            debug!(error = %e, "udp readiness error");
                        }
                        continue;
                    }
                }
            }
            r => r,
        };
        burst += 1;
        if burst % BURST == 0 {
            if shutdown.is_cancelled() {
                break;
            }
            tokio::task::yield_now().await;
        }
        let (n, src) = match r {
            Ok(x) => x,
            Err(e) => {
                debug!(error = %e, "udp receive error");
                continue;
            }
        };
        let SocketAddr::V6(src) = src else { continue };
        let Ok(permit) = sem.clone().try_acquire_owned() else {
            Counters::inc(&counters.drop_overload);
            continue;
        };
        let pkt = buf[..n].to_vec();
        let meta = RecvMeta {
            src,
            iface: l.iface.clone(),
            multicast: l.multicast,
        };
        // Most ADVERTISEs never wait on the store: poll once here and spawn only what is
        // still pending (a commit). A pending future is re-polled with the task's own waker.
        let engine2 = engine.clone();
        let mut fut = Box::pin(async move {
            let now = lq6_store::unix_now();
            engine2.handle(&pkt, &meta, now).await
        });
        let polled = {
            let waker = futures::task::noop_waker();
            let mut cx = std::task::Context::from_waker(&waker);
            fut.as_mut().poll(&mut cx)
        };
        match polled {
            std::task::Poll::Ready(out) => {
                // Answered without waiting (ADVERTISE, leasequery, errors): one reply per datagram
                // received, so it cannot burst and is not paced.
                if let Some(out) = out {
                    send_now(&l.reply, &counters, out).await;
                }
                drop(permit);
            }
            std::task::Poll::Pending => {
                let reply = l.reply.clone();
                let counters = counters.clone();
                let pacer = l.pacer.clone();
                tokio::spawn(async move {
                    if let Some(out) = fut.await {
                        send(&reply, &counters, &pacer, out).await;
                    }
                    drop(permit);
                });
            }
        }
    }
}

/// Replies released by commits, sent per millisecond at most. A group commit releases hundreds of
/// replies at once; spreading them keeps the bursts within the receive buffers of relays and
/// clients (perfdhcp's socket overflowed without this while the server's own queue stayed empty).
const REPLIES_PER_MS: u32 = 40;

/// A per-millisecond reply budget shared by the tasks of the DHCP thread.
#[derive(Default)]
struct Pacer {
    start: Option<std::time::Instant>,
    window: std::sync::atomic::AtomicU64,
    used: std::sync::atomic::AtomicU32,
}

impl Pacer {
    fn new() -> Pacer {
        Pacer {
            start: Some(std::time::Instant::now()),
            ..Pacer::default()
        }
    }

    /// Takes one send from this millisecond's budget, if any is left.
    fn try_take(&self) -> bool {
        use std::sync::atomic::Ordering::Relaxed;
        let Some(start) = self.start else { return true };
        let ms = start.elapsed().as_millis() as u64;
        if self.window.swap(ms, Relaxed) != ms {
            self.used.store(0, Relaxed);
        }
        self.used.fetch_add(1, Relaxed) < REPLIES_PER_MS
    }

    async fn wait(&self) {
        while !self.try_take() {
            tokio::time::sleep(std::time::Duration::from_millis(1)).await;
        }
    }
}

async fn send(sock: &UdpSocket, counters: &Counters, pacer: &Pacer, out: crate::engine::Outgoing) {
    pacer.wait().await;
    send_now(sock, counters, out).await;
}

async fn send_now(sock: &UdpSocket, counters: &Counters, out: crate::engine::Outgoing) {
    let dst = SocketAddr::V6(out.dst);
    let r = match sock.try_send_to(&out.bytes, dst) {
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => sock.send_to(&out.bytes, dst).await,
        r => r,
    };
    if let Err(e) = r {
        Counters::inc(&counters.send_errors);
        warn!(dst = %out.dst, error = %e, "udp send failed");
    }
}

/// Background reclaim every `interval` seconds until `shutdown`.
pub async fn reclaim_loop(engine: Arc<Engine>, interval: u64, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(std::time::Duration::from_secs(interval.max(1)));
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = tick.tick() => {
                match engine.reclaim(lq6_store::unix_now()).await {
                    Ok(n) if n > 0 => debug!(expired = n, "reclaimed expired leases"),
                    Ok(_) => {}
                    Err(e) => warn!(error = %e, "reclaim failed"),
                }
            }
        }
    }
}
