//! RFC 5460 Bulk Leasequery over TCP.
//!
//! One task owns the socket. [`BulkConnection::query`] hands it a framed
//! LEASEQUERY and gets back a [`QueryStream`] fed through a bounded channel of
//! batches. The task demultiplexes replies by xid (§6.5) and applies the
//! completion rules of §6.3.1; the consumer decodes each LEASEQUERY-DATA.
//! When a consumer falls behind its channel fills, the task stops reading,
//! and TCP flow control slows the server: memory stays bounded.
//!
//! Rules enforced (the connection is closed and every outstanding query
//! fails with [`Error::Protocol`]): a REPLY, DATA or DONE whose xid matches no
//! outstanding query; a second REPLY; a DATA or DONE before the REPLY; any
//! message type other than 15, 16, 17; a frame that does not decode.
//! A DATA without CLIENT_DATA is discarded (it still counts as liveness).
//! A blocked read (while queries are outstanding) or write longer than
//! BULK_LQ_DATA_TIMEOUT fails every outstanding query with [`Error::Timeout`].
//! A connection that closes before a query completed fails it with
//! [`Error::Closed`]; the bindings already yielded stay valid.

use crate::binding::{take_client_data, unix_now, Binding};
use crate::config::RequestorConfig;
use crate::error::Error;
use crate::query::Query;
use bytes::BytesMut;
use futures::Stream;
use lq6_proto::framing::{FramingError, LqFrameCodec};
use lq6_proto::{Message, MessageType, OptionsExt, Status};
use std::collections::HashMap;
use std::net::{Ipv6Addr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicU32, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::codec::Decoder;

/// Items per batch handed to a query's consumer.
const BATCH: usize = 256;
/// Read buffer reservation.
const READ_CHUNK: usize = 128 * 1024;

enum Item {
    /// The first binding, decoded from the REPLY.
    Binding(Box<Binding>),
    /// A LEASEQUERY-DATA frame, decoded by the consumer.
    Data(BytesMut),
    /// The query is complete: `Ok` after DONE (or an empty REPLY).
    End(Result<(), Error>),
}

type Batch = Vec<Item>;

struct Command {
    xid: u32,
    frame: Vec<u8>,
    tx: mpsc::Sender<Batch>,
}

/// An open Bulk Leasequery connection. Cheap to share by reference; several
/// queries may be in flight at once. The socket closes when this handle and
/// every [`QueryStream`] are dropped.
pub struct BulkConnection {
    server: SocketAddr,
    cmd: mpsc::Sender<Command>,
    next_xid: AtomicU32,
    cfg: RequestorConfig,
}

impl BulkConnection {
    /// Connects to `server`, retrying per `cfg.connect` (RFC 5460 §6.1).
    pub async fn connect(server: SocketAddr, cfg: RequestorConfig) -> Result<Self, Error> {
        let attempts = cfg.connect.attempts.max(1);
        let mut delay = cfg.connect.retry_delay;
        let mut last = String::new();
        for i in 0..attempts {
            if i > 0 {
                tokio::time::sleep(delay).await;
                delay = delay.saturating_mul(2);
            }
            match tokio::time::timeout(cfg.connect.connect_timeout, TcpStream::connect(server))
                .await
            {
                Ok(Ok(s)) => return Ok(Self::from_stream(s, server, cfg)),
                Ok(Err(e)) => last = e.to_string(),
                Err(_) => last = format!("no answer within {:?}", cfg.connect.connect_timeout),
            }
            tracing::debug!(%server, attempt = i + 1, reason = %last, "bulk leasequery connect failed");
        }
        Err(Error::Connect {
            server,
            attempts,
            reason: last,
        })
    }

    /// Wraps an already connected stream.
    pub fn from_stream(stream: TcpStream, server: SocketAddr, cfg: RequestorConfig) -> Self {
        let _ = stream.set_nodelay(true);
        let (cmd, cmd_rx) = mpsc::channel(16);
        let task = ConnTask {
            server,
            stream,
            timeout: cfg.bulk_timeout,
            queries: HashMap::new(),
            rbuf: BytesMut::with_capacity(READ_CHUNK),
        };
        tokio::spawn(task.run(cmd_rx));
        BulkConnection {
            server,
            cmd,
            next_xid: AtomicU32::new(fastrand::u32(..) & 0x00ff_ffff),
            cfg,
        }
    }

    pub fn server(&self) -> SocketAddr {
        self.server
    }

    /// Sends `q` and returns the stream of its bindings. Queries may be
    /// issued while earlier ones are still streaming (RFC 5460 §6.5).
    pub async fn query(&self, q: &Query) -> Result<QueryStream, Error> {
        let xid = self.next_xid.fetch_add(1, Ordering::Relaxed) & 0x00ff_ffff;
        let msg = Message::Client(q.to_message(xid, &self.cfg.duid));
        let mut frame = Vec::with_capacity(2 + msg.wire_len());
        lq6_proto::write_framed(&mut frame, |b| msg.encode(b))?;
        let (tx, rx) = mpsc::channel(self.cfg.channel_batches.max(1));
        self.cmd
            .send(Command { xid, frame, tx })
            .await
            .map_err(|_| Error::Closed {
                server: self.server,
                reason: "connection no longer usable".into(),
            })?;
        Ok(QueryStream {
            rx,
            cur: Vec::new().into_iter(),
            server: self.server,
            link: q.known_link(),
            xid,
            done: false,
        })
    }
}

/// Connects to `server` and sends one query. The connection closes once the
/// query completes and the stream is dropped.
pub async fn bulk_query(
    server: SocketAddr,
    q: &Query,
    cfg: RequestorConfig,
) -> Result<QueryStream, Error> {
    BulkConnection::connect(server, cfg).await?.query(q).await
}

/// The bindings of one bulk query, in the order the server sent them.
/// Ends with `None` after a successful completion, or yields one `Err` and
/// then `None`.
pub struct QueryStream {
    rx: mpsc::Receiver<Batch>,
    cur: std::vec::IntoIter<Item>,
    server: SocketAddr,
    link: Option<Ipv6Addr>,
    xid: u32,
    done: bool,
}

impl QueryStream {
    pub fn xid(&self) -> u32 {
        self.xid
    }

    /// The next binding.
    pub async fn next(&mut self) -> Option<Result<Binding, Error>> {
        futures::StreamExt::next(self).await
    }

    /// Collects every binding, or the first error.
    pub async fn collect_all(mut self) -> Result<Vec<Binding>, Error> {
        let mut v = Vec::new();
        while let Some(b) = self.next().await {
            v.push(b?);
        }
        Ok(v)
    }

    fn finish(&mut self) {
        self.done = true;
        self.rx.close();
        self.cur = Vec::new().into_iter();
    }

    fn decode_data(&self, frame: &[u8], now: u64) -> Result<Option<Binding>, Error> {
        let m = Message::decode(frame).map_err(|source| Error::Decode {
            server: self.server,
            source,
        })?;
        let Message::Client(m) = m else {
            return Ok(None);
        };
        let (cd, base) = take_client_data(m.options);
        // RFC 5460 §6.3: a LEASEQUERY-DATA without CLIENT_DATA is discarded.
        Ok(cd.map(|cd| Binding::from_client_data(cd, self.server, self.link, base, now)))
    }
}

impl Stream for QueryStream {
    type Item = Result<Binding, Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        loop {
            if this.done {
                return Poll::Ready(None);
            }
            if let Some(item) = this.cur.next() {
                match item {
                    Item::Binding(mut b) => {
                        b.link_address = this.link;
                        return Poll::Ready(Some(Ok(*b)));
                    }
                    Item::Data(f) => match this.decode_data(&f, unix_now()) {
                        Ok(Some(b)) => return Poll::Ready(Some(Ok(b))),
                        Ok(None) => continue,
                        Err(e) => {
                            this.finish();
                            return Poll::Ready(Some(Err(e)));
                        }
                    },
                    Item::End(r) => {
                        this.finish();
                        return Poll::Ready(r.err().map(Err));
                    }
                }
            }
            match this.rx.poll_recv(cx) {
                Poll::Ready(Some(batch)) => this.cur = batch.into_iter(),
                Poll::Ready(None) => {
                    this.finish();
                    return Poll::Ready(Some(Err(Error::Closed {
                        server: this.server,
                        reason: "connection task ended".into(),
                    })));
                }
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}

struct Pending {
    tx: mpsc::Sender<Batch>,
    batch: Batch,
    got_reply: bool,
    /// The consumer dropped its stream: frames are recognised and discarded.
    gone: bool,
}

struct ConnTask {
    server: SocketAddr,
    stream: TcpStream,
    timeout: Duration,
    queries: HashMap<u32, Pending>,
    rbuf: BytesMut,
}

/// Why the connection task must stop.
struct Fatal(Error);

impl ConnTask {
    async fn run(mut self, mut cmd_rx: mpsc::Receiver<Command>) {
        let err = self.serve(&mut cmd_rx).await;
        // Fail whatever is still outstanding, then close.
        cmd_rx.close();
        let queries = std::mem::take(&mut self.queries);
        for (_, mut p) in queries {
            if p.gone {
                continue;
            }
            p.batch.push(Item::End(Err(err.0.clone())));
            // A consumer that stopped reading gets "connection task ended".
            let _ = tokio::time::timeout(self.timeout, p.tx.send(p.batch)).await;
        }
        let _ = self.stream.shutdown().await;
    }

    async fn serve(&mut self, cmd_rx: &mut mpsc::Receiver<Command>) -> Fatal {
        let mut cmd_open = true;
        let mut idle_since = Instant::now();
        let mut codec = LqFrameCodec::default();
        loop {
            if !cmd_open && self.queries.is_empty() {
                return Fatal(Error::Closed {
                    server: self.server,
                    reason: "connection closed by the requestor".into(),
                });
            }
            let deadline = (!self.queries.is_empty()).then(|| idle_since + self.timeout);
            if self.rbuf.capacity() - self.rbuf.len() < READ_CHUNK / 4 {
                self.rbuf.reserve(READ_CHUNK);
            }
            tokio::select! {
                biased;
                c = cmd_rx.recv(), if cmd_open => match c {
                    None => cmd_open = false,
                    Some(c) => {
                        if self.queries.is_empty() {
                            idle_since = Instant::now();
                        }
                        if let Err(f) = self.start(c).await {
                            return f;
                        }
                    }
                },
                r = self.stream.read_buf(&mut self.rbuf) => match r {
                    Ok(0) => return Fatal(self.eof()),
                    Ok(_) => {
                        if let Err(f) = self.process(&mut codec).await {
                            return f;
                        }
                        idle_since = Instant::now();
                    }
                    Err(e) => return Fatal(Error::io(self.server, &e)),
                },
                _ = sleep_until_opt(deadline) => {
                    return Fatal(Error::Timeout {
                        server: self.server,
                        after: self.timeout,
                        what: "reading replies",
                    });
                }
            }
        }
    }

    async fn start(&mut self, c: Command) -> Result<(), Fatal> {
        if self.queries.contains_key(&c.xid) {
            let _ =
                c.tx.send(vec![Item::End(Err(Error::InvalidQuery(format!(
                    "transaction-id {:#08x} already in use",
                    c.xid
                ))))])
                .await;
            return Ok(());
        }
        self.queries.insert(
            c.xid,
            Pending {
                tx: c.tx,
                batch: Vec::new(),
                got_reply: false,
                gone: false,
            },
        );
        match tokio::time::timeout(self.timeout, self.stream.write_all(&c.frame)).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(Fatal(Error::io(self.server, &e))),
            Err(_) => Err(Fatal(Error::Timeout {
                server: self.server,
                after: self.timeout,
                what: "sending a query",
            })),
        }
    }

    fn eof(&self) -> Error {
        let reason = if self.rbuf.is_empty() {
            "server closed the connection".to_string()
        } else {
            format!(
                "server closed the connection mid-frame ({} octets of an incomplete frame)",
                self.rbuf.len()
            )
        };
        Error::Closed {
            server: self.server,
            reason,
        }
    }

    /// Handles every complete frame in the read buffer, then hands the
    /// batches to their consumers.
    async fn process(&mut self, codec: &mut LqFrameCodec) -> Result<(), Fatal> {
        let mut dirty: Vec<u32> = Vec::new();
        let mut finished: Vec<(mpsc::Sender<Batch>, Batch)> = Vec::new();
        loop {
            let frame = match codec.decode(&mut self.rbuf) {
                Ok(Some(f)) => f,
                Ok(None) => break,
                Err(FramingError::Io(e)) => return Err(Fatal(Error::io(self.server, &e))),
                Err(e) => return Err(Fatal(Error::protocol(self.server, e.to_string()))),
            };
            if let Some(full) = self.frame(frame, &mut dirty, &mut finished)? {
                self.flush_one(full).await;
            }
        }
        for (tx, batch) in finished {
            let _ = tx.send(batch).await;
        }
        for xid in dirty {
            self.flush_one(xid).await;
        }
        Ok(())
    }

    async fn flush_one(&mut self, xid: u32) {
        if let Some(p) = self.queries.get_mut(&xid) {
            if p.batch.is_empty() {
                return;
            }
            let batch = std::mem::replace(&mut p.batch, Vec::with_capacity(BATCH));
            if p.gone || p.tx.send(batch).await.is_err() {
                p.gone = true;
            }
        }
    }

    /// One frame. Returns an xid whose batch is full and must be flushed now.
    fn frame(
        &mut self,
        frame: BytesMut,
        dirty: &mut Vec<u32>,
        finished: &mut Vec<(mpsc::Sender<Batch>, Batch)>,
    ) -> Result<Option<u32>, Fatal> {
        let server = self.server;
        let mt = MessageType(frame[0]);
        let xid = u32::from_be_bytes([0, frame[1], frame[2], frame[3]]);
        let unknown = || {
            Fatal(Error::protocol(
                server,
                format!("{mt} with transaction-id {xid:#08x} matches no outstanding query"),
            ))
        };
        match mt {
            MessageType::LEASEQUERY_DATA => {
                let p = self.queries.get_mut(&xid).ok_or_else(unknown)?;
                if !p.got_reply {
                    return Err(Fatal(Error::protocol(
                        server,
                        format!("LEASEQUERY-DATA before LEASEQUERY-REPLY (xid {xid:#08x})"),
                    )));
                }
                if p.gone {
                    return Ok(None);
                }
                if p.batch.is_empty() {
                    dirty.push(xid);
                }
                p.batch.push(Item::Data(frame));
                Ok((p.batch.len() >= BATCH).then_some(xid))
            }
            MessageType::LEASEQUERY_REPLY => {
                let p = self.queries.get(&xid).ok_or_else(unknown)?;
                if p.got_reply {
                    return Err(Fatal(Error::protocol(
                        server,
                        format!("second LEASEQUERY-REPLY for xid {xid:#08x}"),
                    )));
                }
                let m = decode(server, &frame)?;
                let now = unix_now();
                if let Some(e) = status_error(server, m.options()) {
                    self.complete(xid, Err(e), finished);
                    return Ok(None);
                }
                let opts = match m {
                    Message::Client(c) => c.options,
                    _ => Vec::new(),
                };
                match take_client_data(opts) {
                    (None, _) => {
                        // §6.3.1 rule 1: no CLIENT_DATA, the query is complete.
                        self.complete(xid, Ok(()), finished);
                        Ok(None)
                    }
                    (Some(cd), base) => {
                        let p = self.queries.get_mut(&xid).ok_or_else(unknown)?;
                        p.got_reply = true;
                        if !p.gone {
                            let b = Binding::from_client_data(cd, server, None, base, now);
                            if p.batch.is_empty() {
                                dirty.push(xid);
                            }
                            p.batch.push(Item::Binding(Box::new(b)));
                        }
                        Ok(None)
                    }
                }
            }
            MessageType::LEASEQUERY_DONE => {
                let p = self.queries.get(&xid).ok_or_else(unknown)?;
                if !p.got_reply {
                    return Err(Fatal(Error::protocol(
                        server,
                        format!("LEASEQUERY-DONE before LEASEQUERY-REPLY (xid {xid:#08x})"),
                    )));
                }
                let m = decode(server, &frame)?;
                let r = match status_error(server, m.options()) {
                    Some(e) => Err(e),
                    None => Ok(()),
                };
                self.complete(xid, r, finished);
                Ok(None)
            }
            other => Err(Fatal(Error::protocol(
                server,
                format!("{other} is not allowed on a bulk leasequery connection"),
            ))),
        }
    }

    fn complete(
        &mut self,
        xid: u32,
        r: Result<(), Error>,
        finished: &mut Vec<(mpsc::Sender<Batch>, Batch)>,
    ) {
        if let Some(mut p) = self.queries.remove(&xid) {
            if !p.gone {
                p.batch.push(Item::End(r));
                finished.push((p.tx, p.batch));
            }
        }
    }
}

fn decode(server: SocketAddr, frame: &[u8]) -> Result<Message, Fatal> {
    Message::decode(frame).map_err(|source| Fatal(Error::Decode { server, source }))
}

/// An error STATUS_CODE among `opts`, as an [`Error::Status`].
pub(crate) fn status_error(server: SocketAddr, opts: &[lq6_proto::DhcpOption]) -> Option<Error> {
    let s = opts.status()?;
    (s.status != Status::Success).then(|| Error::Status {
        server,
        status: s.status,
        code: s.status.to_u16(),
        message: s.message.clone(),
    })
}

async fn sleep_until_opt(d: Option<Instant>) {
    match d {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}
