//! RFC 5460 Bulk Leasequery over TCP.
//!
//! Per connection, a reader reads a query only when a query slot is free
//! (§7.3: never read more queries than it is prepared to process), each
//! query runs as its own task paging from the store, and a writer task owns
//! the socket. Queries hand the writer chunks of whole frames through a
//! bounded channel, so a requestor that stops reading stalls its queries
//! instead of growing memory. §5.6/§7.4: a connection cap with idle
//! eviction, BULK_LQ_DATA_TIMEOUT on idle reads and blocked writes, and
//! QueryTerminated on shutdown.

use crate::answer::{self, Source};
use crate::encode::{self, DataSpec, ReplyHead};
use crate::policy::{self, Policy};
use crate::request::{self, Rejection, Request, Transport};
use crate::Responder;
use futures::StreamExt;
use lq6_proto::framing::LqFrameCodec;
use lq6_proto::{Message, MessageType, Status};
use std::collections::{HashMap, HashSet};
use std::net::{Ipv6Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::AsyncWriteExt;
use tokio::net::tcp::OwnedWriteHalf;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;
use tokio_util::codec::FramedRead;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Frames are handed to the writer in chunks of about this many octets:
/// large enough to batch hundreds of 150-octet DATA messages per write().
pub const CHUNK: usize = 64 * 1024;
/// How long shutdown waits for connections to deliver their final DONE.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Liveness of one connection, read by the admission logic.
struct ConnState {
    in_flight: AtomicUsize,
    /// Milliseconds since the registry epoch of the last complete message
    /// received, query finished or write completed (or the accept).
    last_activity: AtomicU64,
}

struct Entry {
    peer: Ipv6Addr,
    state: Arc<ConnState>,
    cancel: CancellationToken,
}

/// Open connections, for BULK_LQ_MAX_CONNS and the per-requestor limit.
struct Registry {
    epoch: Instant,
    next_id: AtomicU64,
    conns: Mutex<HashMap<u64, Entry>>,
}

enum Admission {
    Admitted {
        id: u64,
        state: Arc<ConnState>,
        cancel: CancellationToken,
    },
    Refused,
}

impl Registry {
    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    /// Admits `peer`, making room by closing the connection that has been
    /// idle longest (no query in flight) when a limit is reached (§7.4).
    fn admit(
        &self,
        peer: Ipv6Addr,
        max_total: usize,
        max_peer: usize,
        evicted: &AtomicU64,
    ) -> Admission {
        let Ok(mut conns) = self.conns.lock() else {
            return Admission::Refused;
        };
        let idle_victim = |conns: &HashMap<u64, Entry>, same_peer: bool| {
            conns
                .iter()
                .filter(|(_, e)| !same_peer || e.peer == peer)
                .filter(|(_, e)| e.state.in_flight.load(Relaxed) == 0)
                .min_by_key(|(_, e)| e.state.last_activity.load(Relaxed))
                .map(|(id, _)| *id)
        };
        let from_peer = conns.values().filter(|e| e.peer == peer).count();
        let need_room = if from_peer >= max_peer.max(1) {
            Some(true)
        } else if conns.len() >= max_total.max(1) {
            Some(false)
        } else {
            None
        };
        if let Some(same_peer) = need_room {
            match idle_victim(&conns, same_peer) {
                Some(id) => {
                    if let Some(e) = conns.remove(&id) {
                        e.cancel.cancel();
                        evicted.fetch_add(1, Relaxed);
                    }
                }
                None => return Admission::Refused,
            }
        }
        let id = self.next_id.fetch_add(1, Relaxed);
        let state = Arc::new(ConnState {
            in_flight: AtomicUsize::new(0),
            last_activity: AtomicU64::new(self.now_ms()),
        });
        let cancel = CancellationToken::new();
        conns.insert(
            id,
            Entry {
                peer,
                state: state.clone(),
                cancel: cancel.clone(),
            },
        );
        Admission::Admitted { id, state, cancel }
    }

    fn remove(&self, id: u64) {
        if let Ok(mut c) = self.conns.lock() {
            c.remove(&id);
        }
    }
}

pub(crate) async fn run(
    resp: Arc<Responder>,
    listeners: Vec<TcpListener>,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let registry = Arc::new(Registry {
        epoch: Instant::now(),
        next_id: AtomicU64::new(1),
        conns: Mutex::new(HashMap::new()),
    });
    let tracker = TaskTracker::new();
    for l in listeners {
        if let Ok(a) = l.local_addr() {
            tracing::info!("bulk leasequery listening on tcp {a}");
        }
        tracker.spawn(accept_loop(
            resp.clone(),
            l,
            registry.clone(),
            tracker.clone(),
            shutdown.clone(),
        ));
    }
    shutdown.cancelled().await;
    tracker.close();
    if tokio::time::timeout(SHUTDOWN_GRACE, tracker.wait())
        .await
        .is_err()
    {
        tracing::warn!("bulk leasequery: connections still open after the shutdown grace period");
    }
    Ok(())
}

async fn accept_loop(
    resp: Arc<Responder>,
    l: TcpListener,
    registry: Arc<Registry>,
    tracker: TaskTracker,
    shutdown: CancellationToken,
) {
    let m = resp.metrics.clone();
    loop {
        let (stream, peer) = tokio::select! {
            r = l.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                }
            },
            _ = shutdown.cancelled() => return,
        };
        let pol = policy::policy_for(&resp.cfg, peer.ip());
        if !pol.allowed {
            // §8: close connections from non-permitted peers at once.
            m.connections_refused_not_allowed.fetch_add(1, Relaxed);
            tracing::info!(%peer, "bulk leasequery connection refused: not in the allow-list");
            drop(stream);
            continue;
        }
        let ip = policy::as_v6(peer.ip());
        let (id, state, cancel) = match registry.admit(
            ip,
            resp.cfg.tcp.max_connections,
            pol.max_connections,
            &m.connections_evicted_idle,
        ) {
            Admission::Admitted { id, state, cancel } => (id, state, cancel),
            Admission::Refused => {
                m.connections_refused_limit.fetch_add(1, Relaxed);
                tracing::info!(%peer, "bulk leasequery connection refused: every connection is busy");
                drop(stream);
                continue;
            }
        };
        m.connections_accepted.fetch_add(1, Relaxed);
        m.connections_open.fetch_add(1, Relaxed);
        let _ = stream.set_nodelay(true);
        let (resp, registry, shutdown, m) =
            (resp.clone(), registry.clone(), shutdown.clone(), m.clone());
        tracker.spawn(async move {
            let conn = Conn {
                resp,
                peer,
                policy: pol,
                state,
                cancel,
                shutdown,
                registry: registry.clone(),
            };
            conn.serve(stream).await;
            registry.remove(id);
            m.connections_open.fetch_sub(1, Relaxed);
        });
    }
}

struct Conn {
    resp: Arc<Responder>,
    peer: SocketAddr,
    policy: Policy,
    state: Arc<ConnState>,
    /// Abort: close now, dropping queued data (eviction, timeout, error).
    cancel: CancellationToken,
    shutdown: CancellationToken,
    registry: Arc<Registry>,
}

/// Why the read loop ended.
enum End {
    /// Finish outstanding queries, flush, close.
    Graceful,
    Abort,
}

impl Conn {
    fn touch(&self) {
        self.state
            .last_activity
            .store(self.registry.now_ms(), Relaxed);
    }

    async fn serve(self, stream: TcpStream) {
        let cfg = &self.resp.cfg.tcp;
        let timeout = Duration::from_secs(cfg.data_timeout_secs.max(1));
        let (rd, wr) = stream.into_split();
        let (tx, rx) = mpsc::channel::<Vec<u8>>((cfg.write_buffer_bytes / CHUNK).max(1));
        let (state, registry) = (self.state.clone(), self.registry.clone());
        let writer = tokio::spawn(write_loop(
            wr,
            rx,
            timeout,
            self.cancel.clone(),
            self.resp.clone(),
            // A connection still delivering an answer is not idle.
            move || state.last_activity.store(registry.now_ms(), Relaxed),
        ));
        let out = Out {
            tx,
            resp: self.resp.clone(),
            cancel: self.cancel.clone(),
        };
        let drain = CancellationToken::new();
        let slots = Arc::new(Semaphore::new(self.policy.max_queries));
        let xids = Arc::new(Mutex::new(HashSet::new()));
        let mut frames = FramedRead::new(rd, LqFrameCodec::new(cfg.max_frame));
        let mut queries = JoinSet::new();

        let end = loop {
            while queries.try_join_next().is_some() {}
            let permit = tokio::select! {
                p = slots.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => break End::Abort },
                _ = self.cancel.cancelled() => break End::Abort,
                _ = self.shutdown.cancelled() => break End::Graceful,
                _ = drain.cancelled() => break End::Graceful,
            };
            // BULK_LQ_DATA_TIMEOUT: a connection with nothing in flight that
            // completes no message within the timeout is closed. Idle time
            // counts from the last message or the end of the last query,
            // whichever is later.
            let next = loop {
                let idle = || {
                    let last = self.state.last_activity.load(Relaxed);
                    Duration::from_millis(self.registry.now_ms().saturating_sub(last))
                };
                let wait = if self.state.in_flight.load(Relaxed) == 0 {
                    timeout.saturating_sub(idle())
                } else {
                    timeout
                };
                tokio::select! {
                    r = frames.next() => break Some(r),
                    _ = tokio::time::sleep(wait) => {
                        if self.state.in_flight.load(Relaxed) == 0 && idle() >= timeout {
                            break None;
                        }
                    }
                    _ = self.cancel.cancelled() => break Some(None),
                    _ = self.shutdown.cancelled() => break Some(None),
                    _ = drain.cancelled() => break Some(None),
                }
            };
            let frame = match next {
                None => {
                    self.resp.metrics.timeouts_idle.fetch_add(1, Relaxed);
                    tracing::info!(peer = %self.peer, "bulk leasequery connection idle past BULK_LQ_DATA_TIMEOUT; closing");
                    break End::Abort;
                }
                Some(None) => break End::Graceful,
                Some(Some(Err(e))) => {
                    self.resp.metrics.protocol_errors.fetch_add(1, Relaxed);
                    tracing::info!(peer = %self.peer, error = %e, "bulk leasequery framing error; closing");
                    break End::Abort;
                }
                Some(Some(Ok(f))) => f,
            };
            self.touch();
            let msg = match Message::decode(&frame) {
                Ok(Message::Client(c)) => c,
                other => {
                    self.resp.metrics.protocol_errors.fetch_add(1, Relaxed);
                    tracing::info!(peer = %self.peer, "bulk leasequery: undecodable or relay message ({:?}); closing", other.err());
                    break End::Abort;
                }
            };
            let mut buf = Vec::new();
            match msg.msg_type {
                MessageType::LEASEQUERY => {
                    self.resp.metrics.queries_read.fetch_add(1, Relaxed);
                }
                // Only 14-17 may flow on a bulk connection (§5.2); 15-17 are
                // the server's own messages and mean nothing from a requestor.
                MessageType::LEASEQUERY_REPLY
                | MessageType::LEASEQUERY_DONE
                | MessageType::LEASEQUERY_DATA => continue,
                MessageType::ACTIVELEASEQUERY | MessageType::STARTTLS => {
                    // RFC 7653 §8.1 / §8.2: no Active Leasequery and no TLS on
                    // this listener: NotSupported or TLSConnectionRefused, then close.
                    let st = if msg.msg_type == MessageType::STARTTLS {
                        Status::TlsConnectionRefused
                    } else {
                        Status::NotSupported
                    };
                    let typ = if st == Status::TlsConnectionRefused {
                        MessageType::REPLY
                    } else {
                        MessageType::LEASEQUERY_REPLY
                    };
                    let requestor = lq6_proto::OptionsExt::client_id(msg.options.as_slice());
                    let head = ReplyHead {
                        xid: msg.xid,
                        status: st,
                        text: "",
                        server: &self.resp.server_duid,
                        requestor,
                    };
                    if encode::refusal(&mut buf, typ, &head).is_ok() {
                        let _ = out.send(&mut buf).await;
                    }
                    break End::Graceful;
                }
                _ => {
                    self.resp.metrics.protocol_errors.fetch_add(1, Relaxed);
                    tracing::info!(peer = %self.peer, msg_type = %msg.msg_type, "message not allowed on a bulk leasequery connection; closing");
                    break End::Abort;
                }
            }
            let fresh = xids.lock().map(|mut s| s.insert(msg.xid)).unwrap_or(false);
            if !fresh {
                // §7.3: each query on a connection needs its own xid.
                self.resp.metrics.protocol_errors.fetch_add(1, Relaxed);
                tracing::info!(peer = %self.peer, xid = msg.xid, "xid reused while its query is in flight; closing");
                break End::Abort;
            }
            match request::parse(
                &msg,
                Transport::Tcp,
                &self.resp.server_duid,
                self.resp.links.as_ref(),
                &self.policy,
            ) {
                Ok(req) => {
                    self.state.in_flight.fetch_add(1, Relaxed);
                    let q = Query {
                        resp: self.resp.clone(),
                        out: out.clone(),
                        shutdown: self.shutdown.clone(),
                        drain: drain.clone(),
                        peer: self.peer,
                    };
                    let (state, xids, registry) =
                        (self.state.clone(), xids.clone(), self.registry.clone());
                    queries.spawn(async move {
                        let xid = req.xid;
                        q.run(req, permit).await;
                        if let Ok(mut s) = xids.lock() {
                            s.remove(&xid);
                        }
                        // Activity first: the read loop must not see the
                        // query gone while the old activity time still stands.
                        state.last_activity.store(registry.now_ms(), Relaxed);
                        state.in_flight.fetch_sub(1, Relaxed);
                    });
                }
                Err(Rejection::Discard(_)) => {
                    if let Ok(mut s) = xids.lock() {
                        s.remove(&msg.xid);
                    }
                }
                Err(Rejection::Status {
                    status,
                    text,
                    requestor,
                }) => {
                    self.resp
                        .metrics
                        .query(true, crate::query_type_of(&msg), status);
                    tracing::info!(peer = %self.peer, xid = msg.xid, %status, text, "bulk leasequery refused");
                    let head = ReplyHead {
                        xid: msg.xid,
                        status,
                        text: &text,
                        server: &self.resp.server_duid,
                        requestor: requestor.as_ref(),
                    };
                    if encode::refusal(&mut buf, MessageType::LEASEQUERY_REPLY, &head).is_ok()
                        && out.send(&mut buf).await.is_err()
                    {
                        break End::Abort;
                    }
                    if let Ok(mut s) = xids.lock() {
                        s.remove(&msg.xid);
                    }
                }
            }
        };
        if let End::Abort = end {
            self.cancel.cancel();
        }
        // §5.6: when the peer closes, finish its outstanding queries first.
        while queries.join_next().await.is_some() {}
        drop(out);
        let _ = writer.await;
    }
}

/// The queries' side of the bounded channel to the writer.
#[derive(Clone)]
struct Out {
    tx: mpsc::Sender<Vec<u8>>,
    resp: Arc<Responder>,
    cancel: CancellationToken,
}

struct Closed;

impl Out {
    /// Hands the frames in `buf` to the writer, waiting while the channel is
    /// full (back-pressure from a slow requestor).
    async fn send(&self, buf: &mut Vec<u8>) -> Result<(), Closed> {
        if buf.is_empty() {
            return Ok(());
        }
        let chunk = std::mem::replace(buf, Vec::with_capacity(CHUNK + 1024));
        self.send_chunk(chunk).await
    }

    /// Hands a buffer of whole frames to the writer (see [`Out::send`]).
    async fn send_chunk(&self, chunk: Vec<u8>) -> Result<(), Closed> {
        if chunk.is_empty() {
            return Ok(());
        }
        let n = chunk.len();
        self.resp.metrics.buffer_add(n);
        let r = tokio::select! {
            r = self.tx.send(chunk) => r.map_err(|_| Closed),
            _ = self.cancel.cancelled() => Err(Closed),
        };
        if r.is_err() {
            self.resp.metrics.buffer_sub(n);
        }
        r
    }
}

async fn write_loop(
    mut wr: OwnedWriteHalf,
    mut rx: mpsc::Receiver<Vec<u8>>,
    timeout: Duration,
    cancel: CancellationToken,
    resp: Arc<Responder>,
    wrote: impl Fn(),
) {
    let m = &resp.metrics;
    loop {
        let chunk = tokio::select! {
            c = rx.recv() => match c { Some(c) => c, None => break },
            _ = cancel.cancelled() => break,
        };
        let n = chunk.len();
        let r = tokio::select! {
            r = tokio::time::timeout(timeout, wr.write_all(&chunk)) => r,
            _ = cancel.cancelled() => { m.buffer_sub(n); break }
        };
        m.buffer_sub(n);
        match r {
            Ok(Ok(())) => wrote(),
            Ok(Err(e)) => {
                // §5.6: MUST close on a send error.
                tracing::info!(error = %e, "bulk leasequery write failed; closing");
                cancel.cancel();
                break;
            }
            Err(_) => {
                m.timeouts_write.fetch_add(1, Relaxed);
                tracing::info!("bulk leasequery write blocked past BULK_LQ_DATA_TIMEOUT; closing");
                cancel.cancel();
                break;
            }
        }
    }
    rx.close();
    while let Ok(c) = rx.try_recv() {
        m.buffer_sub(c.len());
    }
    let _ = wr.shutdown().await;
}

/// What the page tasks of one bulk scan share.
struct ScanCtx {
    store: Arc<dyn lq6_store::LeaseStore>,
    scans: Arc<Semaphore>,
    q: lq6_store::Query,
    spec: DataSpec,
    xid: u32,
    server: lq6_proto::Duid,
    requestor: lq6_proto::Duid,
}

/// One page of a scan, encoded.
struct EncodedPage {
    /// Buffers of whole frames ready to send: the REPLY alone (when this page
    /// has it), then buffers of at least CHUNK octets.
    chunks: Vec<Vec<u8>>,
    /// Frames after the last full chunk: carried into the next page (or
    /// ended with the DONE), so that writes stay about CHUNK octets.
    tail: Vec<u8>,
    /// Bindings encoded (those with a live lease that fit in a frame).
    encoded: u64,
    next: Option<lq6_store::Cursor>,
}

/// A page that failed: the error and the carried frames of earlier pages.
type PageError = (lq6_store::StoreError, Vec<u8>);

impl ScanCtx {
    /// Reads one page with `page_visit` and encodes each binding with a live
    /// lease straight from the store's row, appending to `carry` (frames of
    /// earlier pages not sent yet): the REPLY for the first one when
    /// `reply_first` (nothing was encoded before), LEASEQUERY-DATA otherwise.
    async fn page(
        self: Arc<Self>,
        after: Option<lq6_store::Cursor>,
        size: usize,
        reply_first: bool,
        carry: Vec<u8>,
    ) -> Result<EncodedPage, PageError> {
        let head = ReplyHead {
            xid: self.xid,
            status: Status::Success,
            text: "",
            server: &self.server,
            requestor: Some(&self.requestor),
        };
        let spec = &self.spec;
        let carried = carry.len();
        let mut chunks = Vec::new();
        let mut buf = carry;
        buf.reserve((CHUNK + 1024).saturating_sub(buf.len()));
        let mut encoded = 0u64;
        let mut visit = |b: &lq6_store::BindingView<'_>| {
            if !encode::has_live_lease_view(b, spec.now) {
                return;
            }
            let res = if reply_first && encoded == 0 {
                encode::reply_view(&mut buf, &head, Some(b), spec)
            } else {
                encode::data_view(&mut buf, self.xid, b, spec)
            };
            match res {
                Ok(()) => {
                    encoded += 1;
                    // The REPLY goes alone (first-binding latency), then CHUNKs.
                    if buf.len() >= CHUNK || (reply_first && encoded == 1) {
                        chunks.push(std::mem::replace(
                            &mut buf,
                            Vec::with_capacity(CHUNK + 1024),
                        ));
                    }
                }
                // A binding too large for one frame: report it, skip it.
                Err(e) => tracing::warn!(error = %e, "binding cannot be encoded; skipped"),
            }
        };
        // Closed only when the responder is dropped, which ends this task anyway.
        let permit = self.scans.clone().acquire_owned().await.ok();
        let read = self
            .store
            .page_visit(&self.q, after, size, &mut visit)
            .await;
        drop(permit);
        match read {
            Ok(next) => Ok(EncodedPage {
                chunks,
                tail: buf,
                encoded,
                next,
            }),
            Err(e) => {
                // Nothing of a failed page is sent (its bindings were not
                // counted), but the carried frames of earlier pages are: they
                // start `buf`, or the first chunk if `buf` filled up (a page
                // with a carry never has the REPLY).
                let mut carry = if chunks.is_empty() {
                    buf
                } else {
                    chunks.swap_remove(0)
                };
                carry.truncate(carried);
                Err((e, carry))
            }
        }
    }
}

/// One query in flight on a connection.
struct Query {
    resp: Arc<Responder>,
    out: Out,
    shutdown: CancellationToken,
    /// Ends the connection gracefully after an error mid-stream (§7.2).
    drain: CancellationToken,
    peer: SocketAddr,
}

impl Query {
    async fn run(self, req: Request, _slot: OwnedSemaphorePermit) {
        let started = Instant::now();
        let now = self.resp.now();
        let spec = DataSpec::new(now, &req.oro, &self.resp.cfg.sensitive_options);
        let (sent, status) = self.stream(&req, &spec).await;
        self.resp.metrics.query(true, req.query_type, status);
        self.resp.metrics.bindings_sent_tcp.fetch_add(sent, Relaxed);
        tracing::info!(
            peer = %self.peer, xid = req.xid, query = %req.query_type, bindings = sent, %status,
            ms = started.elapsed().as_millis() as u64, "bulk leasequery done"
        );
    }

    /// Streams the answer; returns the bindings sent and the final status.
    async fn stream(&self, req: &Request, spec: &DataSpec) -> (u64, Status) {
        let r = &self.resp;
        let head = ReplyHead {
            xid: req.xid,
            status: Status::Success,
            text: "",
            server: &r.server_duid,
            requestor: Some(&req.requestor),
        };
        let mut buf = Vec::with_capacity(CHUNK + 1024);
        let mut sent = 0u64;
        // Ends the query with `st`: a REPLY if nothing was sent, else a DONE.
        let finish = |buf: &mut Vec<u8>, sent: u64, st: Status, text: &str| {
            let res = if sent == 0 {
                encode::reply(
                    buf,
                    &ReplyHead {
                        status: st,
                        text,
                        ..head
                    },
                    None,
                    spec,
                )
            } else {
                encode::done(buf, req.xid, st, text, spec)
            };
            if let Err(e) = res {
                tracing::warn!(error = %e, "cannot encode final leasequery message");
            }
        };
        let source = tokio::select! {
            s = answer::lookup(r.store.as_ref(), req, spec.now) => s,
            _ = self.out.cancel.cancelled() => return (0, Status::QueryTerminated),
        };
        let source = match source {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "lease store error during bulk leasequery");
                finish(&mut buf, 0, Status::UnspecFail, "lease store unavailable");
                let _ = self.out.send(&mut buf).await;
                return (0, Status::UnspecFail);
            }
        };
        let emit = |buf: &mut Vec<u8>, b: &lq6_store::Binding, sent: &mut u64| -> bool {
            let res = if *sent == 0 {
                encode::reply(buf, &head, Some(b), spec)
            } else {
                encode::data(buf, req.xid, b, spec)
            };
            match res {
                Ok(()) => {
                    *sent += 1;
                    true
                }
                Err(e) => {
                    // A binding too large for one frame: report it, skip it.
                    tracing::warn!(error = %e, "binding cannot be encoded; skipped");
                    false
                }
            }
        };
        match source {
            Source::Few(v) => {
                for b in &v {
                    emit(&mut buf, b, &mut sent);
                }
            }
            Source::Scan(q) => {
                // Each page is read and encoded straight from the store's rows
                // (page_visit: no per-binding allocation) by a spawned task
                // while the previous page's frames are sent, so store reads,
                // encoding and socket writes overlap. At most two encoded
                // pages per query are in memory. Frames not filling a CHUNK
                // are carried into the next page's task.
                let ctx = Arc::new(ScanCtx {
                    store: r.store.clone(),
                    scans: r.scans.clone(),
                    q,
                    spec: spec.clone(),
                    xid: req.xid,
                    server: r.server_duid.clone(),
                    requestor: req.requestor.clone(),
                });
                // A small first page gets the first binding out quickly.
                let size = r.cfg.tcp.page_size.max(1);
                let mut pending = tokio::spawn(ctx.clone().page(
                    None,
                    size.min(64),
                    true,
                    std::mem::take(&mut buf),
                ));
                loop {
                    if self.shutdown.is_cancelled() {
                        // Frames carried by the page task are dropped with it.
                        pending.abort();
                        r.metrics.queries_terminated.fetch_add(1, Relaxed);
                        finish(
                            &mut buf,
                            sent,
                            Status::QueryTerminated,
                            "server shutting down",
                        );
                        let _ = self.out.send(&mut buf).await;
                        return (sent, Status::QueryTerminated);
                    }
                    let page = tokio::select! {
                        p = &mut pending => p.unwrap_or_else(|e| Err((lq6_store::StoreError::Invalid(format!("page task: {e}")), Vec::new()))),
                        _ = self.out.cancel.cancelled() => {
                            pending.abort();
                            return (sent, Status::QueryTerminated);
                        }
                    };
                    let page = match page {
                        Ok(p) => p,
                        Err((e, carry)) => {
                            tracing::warn!(error = %e, "lease store error mid-stream");
                            buf = carry;
                            finish(&mut buf, sent, Status::UnspecFail, "lease store error");
                            let _ = self.out.send(&mut buf).await;
                            if sent > 0 {
                                // §7.2: after data, an error ends with DONE and a close.
                                self.drain.cancel();
                            }
                            return (sent, Status::UnspecFail);
                        }
                    };
                    sent += page.encoded;
                    let more = page.next;
                    match more {
                        // The REPLY carries the first binding: later pages only DATA.
                        Some(c) => {
                            pending =
                                tokio::spawn(ctx.clone().page(Some(c), size, sent == 0, page.tail))
                        }
                        None => buf = page.tail,
                    }
                    for chunk in page.chunks {
                        if self.out.send_chunk(chunk).await.is_err() {
                            if more.is_some() {
                                pending.abort();
                            }
                            return (sent, Status::QueryTerminated);
                        }
                    }
                    if more.is_none() {
                        break;
                    }
                }
            }
        }
        if sent == 0 {
            // An empty REPLY ends the query; no DONE follows it (§7.2).
            finish(&mut buf, 0, Status::Success, "");
        } else {
            finish(&mut buf, sent, Status::Success, "");
        }
        if self.out.send(&mut buf).await.is_err() {
            return (sent, Status::QueryTerminated);
        }
        (sent, Status::Success)
    }
}
