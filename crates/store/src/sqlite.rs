//! Embedded backend: SQLite (bundled), WAL, pipelined group commit (writer thread + WAL fsync thread),
//! a small pool of read-only connections for queries.
//!
//! Durability: the writer's COMMIT only hands the WAL frames to the OS (see `wal_vfs`), and the syncer
//! thread fsyncs the WAL before a caller is answered, so nothing is acknowledged before it is on disk
//! (see `Syncer`).
//!
//! Opening: a file that is not ours, truncated or of a newer schema is rejected with an error naming it
//! before any read-write connection is opened, so nothing in it is changed. A new store is built under a
//! temporary name and renamed into place, so a crash during creation never leaves a half-made store.

use std::fs::File;
use std::io::Read;
use std::net::Ipv6Addr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use rusqlite::types::Value;
use rusqlite::{params, Connection, OpenFlags, OptionalExtension};
use tokio::sync::{mpsc, oneshot};

use crate::addr_index::{AddrIndex, IndexOp};
use crate::record::{self, a16, addr_from, Plan};
use crate::sql::Param;
use crate::{
    ActiveLease, Binding, BindingView, ClientRecord, ClientUpdate, CommitInfo, Cursor, LeaseState,
    LeaseStore, Page, Query, Result, Stats, StoreError,
};

/// WAL size (pages) that makes the writer ask the checkpointer thread for a checkpoint.
const WAL_CHECKPOINT_PAGES: std::ffi::c_int = 2000;
/// WAL size (pages) at which the writer checkpoints itself (see `open_with`).
///
/// The log restarts from its beginning only after a checkpoint that finished between two write
/// transactions. Under a steady stream of commits the checkpointer thread never sees such a gap
/// (new frames arrive while it works), so the writer finishes the job itself, usually only the last
/// few frames; otherwise the WAL file would grow without bound.
const WAL_FORCE_CHECKPOINT_PAGES: std::ffi::c_int = 4096;

/// `PRAGMA application_id` of an lq6 store: ASCII "lq6S".
pub const APPLICATION_ID: i32 = 0x6c71_3653;
/// Current schema version (`PRAGMA user_version`).
pub const SCHEMA_VERSION: i64 = 3;

/// The current schema (a new store is created with it).
const SCHEMA: &str = r#"
CREATE TABLE client(
  id INTEGER PRIMARY KEY,
  duid BLOB NOT NULL,
  link TEXT NOT NULL,
  link_address BLOB NOT NULL,
  cltt INTEGER NOT NULL,
  changed_seq INTEGER NOT NULL,
  changed_at INTEGER NOT NULL,
  n_active INTEGER NOT NULL,
  n_leases INTEGER NOT NULL,
  remote_ent INTEGER,
  remote_id BLOB,
  data BLOB NOT NULL
);
CREATE UNIQUE INDEX client_duid ON client(duid, link);
CREATE INDEX client_link ON client(link);
CREATE INDEX client_remote ON client(remote_id, remote_ent) WHERE remote_id IS NOT NULL;
CREATE UNIQUE INDEX client_seq ON client(changed_seq);
CREATE TABLE relay_id(
  relay_id BLOB NOT NULL,
  client INTEGER NOT NULL,
  PRIMARY KEY(relay_id, client)
) WITHOUT ROWID;
CREATE TABLE addr(
  start BLOB PRIMARY KEY,
  "end" BLOB NOT NULL,
  plen INTEGER NOT NULL,
  client INTEGER NOT NULL,
  expires_at INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX addr_expiry ON addr(expires_at);
"#;

/// Schema changes from version N-1 to N, applied in order by the writer when it opens an older store.
/// v2: drop `addr_client` (no query used it; one index update less per commit).
/// v3: records may carry a client section (`record::ClientCols`), which an lq6 that knows schema 2
/// would misread; the bump makes it refuse the file instead (`NewerSchema`). Nothing to rewrite.
const MIGRATIONS: &[(i64, &str)] = &[(2, "DROP INDEX IF EXISTS addr_client;"), (3, "")];

/// Bring a store of schema `from` up to [`SCHEMA_VERSION`] in one transaction.
fn migrate(conn: &Connection, from: i64) -> Result<()> {
    if from >= SCHEMA_VERSION {
        return Ok(());
    }
    let mut sql = String::from("BEGIN IMMEDIATE;");
    for (v, m) in MIGRATIONS.iter().filter(|m| m.0 > from) {
        sql.push_str(m);
        sql.push_str(&format!("PRAGMA user_version={v};"));
    }
    sql.push_str("COMMIT;");
    if let Err(e) = conn.execute_batch(&sql) {
        let _ = conn.execute_batch("ROLLBACK");
        return Err(e.into());
    }
    Ok(())
}

/// The columns `row_binding` and `row_view` read (a macro, so that hot statements are literals).
macro_rules! cols {
    () => {
        "c.id, c.duid, c.link, c.link_address, c.cltt, c.changed_seq, c.changed_at, c.data"
    };
}
const COLS: &str = cols!();

/// Options for [`SqliteStore::open_with`].
#[derive(Debug, Clone)]
pub struct SqliteOptions {
    /// Create the store if the file does not exist (default true).
    pub create: bool,
    /// Read connections in the pool (default 6). Readers beyond this wait for a free
    /// connection instead of opening more, so memory stays bounded however many bulk
    /// queries run at once.
    pub readers: usize,
    /// Page cache per read connection in KiB (default 4096; the OS page cache holds the rest).
    pub reader_cache_kib: i64,
    /// Bytes of the database file that read connections map into memory (`PRAGMA mmap_size`;
    /// default 0, off). Mapped reads skip a copy and a syscall per page (UDP lookups among 1M
    /// bindings: about 20% less CPU), but every mapped page that is touched counts in the
    /// process's resident size, up to the whole file.
    pub reader_mmap_bytes: u64,
    /// Most updates committed in one transaction (default 4096).
    pub max_group: usize,
    /// Keep the start of every stored range in memory (about 30 MB per million), so a lookup by
    /// address reads its binding's row directly (default false; the server turns it on).
    pub address_index: bool,
}

impl Default for SqliteOptions {
    fn default() -> Self {
        SqliteOptions {
            create: true,
            readers: 6,
            reader_cache_kib: 4096,
            reader_mmap_bytes: 0,
            max_group: 4096,
            address_index: false,
        }
    }
}

#[allow(clippy::large_enum_variant)] // Commit is the common case; boxing would cost an allocation
enum Cmd {
    Commit(ClientUpdate, oneshot::Sender<Result<CommitInfo>>),
    Batch(
        Vec<ClientUpdate>,
        oneshot::Sender<Result<Vec<Result<CommitInfo>>>>,
    ),
    Expire(u64, usize, oneshot::Sender<Result<u64>>),
    /// From the syncer: it became idle (commit the open transaction now).
    Synced,
}

/// The read pool: idle connections and how many exist in all.
struct Readers {
    idle: Vec<Connection>,
    open: usize,
    /// Threads blocked in [`SqliteStore::with_reader`]: only then is a return signalled (a
    /// Condvar notify is a futex syscall even with nobody waiting).
    waiting: usize,
}

/// A read connection whose snapshot lasts from one point lookup to the next while the writer is idle,
/// for at most [`SNAPSHOT_AGE`]: opening and closing a WAL read transaction costs two fcntl locks and a
/// check of the wal-index, about a tenth of a UDP leasequery. The writer ends it before each write
/// transaction, and lookups during one end theirs at once: a snapshot held across the writer's first
/// write would stop the log from restarting after a checkpoint, and a write storm would grow it
/// without bound.
#[derive(Default)]
struct Snapshot {
    conn: Option<Connection>,
    /// The writer's commit count and the time when the open read transaction began; `None` when
    /// none is open.
    began_at: Option<(u64, std::time::Instant)>,
}

/// How long a snapshot may be reused. Our own writer's commits end it at once (see
/// `Writer::commits`); this bounds how late a lookup sees what another process wrote to the file.
const SNAPSHOT_AGE: std::time::Duration = std::time::Duration::from_millis(10);
/// How often the checkpoint thread ends a snapshot that no lookup has renewed: an idle store's last
/// snapshot would otherwise hold back another process's checkpoints. (Waking every 10 ms cost the UDP
/// leasequery bench about 4%.)
const IDLE_SNAPSHOT_CHECK: std::time::Duration = std::time::Duration::from_millis(100);

impl Snapshot {
    /// The snapshot if nobody holds it. A holder that panicked may have left a read transaction
    /// open: its connection is dropped (ending it) rather than left to hold back checkpoints.
    fn try_take(m: &Mutex<Snapshot>) -> Option<std::sync::MutexGuard<'_, Snapshot>> {
        match m.try_lock() {
            Ok(g) => Some(g),
            Err(std::sync::TryLockError::WouldBlock) => None,
            Err(std::sync::TryLockError::Poisoned(p)) => {
                m.clear_poison();
                let mut g = p.into_inner();
                *g = Snapshot::default();
                Some(g)
            }
        }
    }

    fn end(&mut self) {
        if let (Some(c), Some(_)) = (&self.conn, self.began_at.take()) {
            if c.execute_batch("COMMIT").is_err() {
                // A connection in an unknown state is not reused.
                self.conn = None;
            }
        }
    }
}

struct Inner {
    path: PathBuf,
    tx: Option<mpsc::Sender<Cmd>>,
    readers: Mutex<Readers>,
    /// Signalled when a read connection is returned to the pool.
    reader_free: std::sync::Condvar,
    opts: SqliteOptions,
    writer: Mutex<Option<JoinHandle<()>>>,
    stats: Arc<WriteStats>,
    addr_index: Option<Arc<AddrIndex>>,
    snapshot: Arc<Mutex<Snapshot>>,
    /// Groups committed since the store was opened (see [`Snapshot`]).
    commits: Arc<AtomicU64>,
    /// Set while the writer has a write transaction open (see [`Snapshot`]).
    writing: Arc<AtomicBool>,
}

/// Counters of the group-commit pipeline, for benchmarks and metrics.
#[derive(Debug, Default)]
pub struct WriteStats {
    /// Transactions committed (one per group).
    pub groups: AtomicU64,
    /// Commands (commits, batches, expiry runs) carried by those groups.
    pub commands: AtomicU64,
    /// fsyncs of the write-ahead log.
    pub fsyncs: AtomicU64,
    /// Total time spent in those fsyncs, in microseconds.
    pub fsync_micros: AtomicU64,
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.tx.take();
        if let Ok(mut w) = self.writer.lock() {
            if let Some(h) = w.take() {
                let _ = h.join();
            }
        }
    }
}

/// The embedded SQLite lease store. Cheap to clone.
#[derive(Clone)]
pub struct SqliteStore {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStore")
            .field("path", &self.inner.path)
            .finish()
    }
}

fn io_err(path: &Path, source: std::io::Error) -> StoreError {
    StoreError::Io {
        path: path.to_owned(),
        source,
    }
}

/// Map an SQLite error seen while inspecting a file to an error naming it.
fn inspect_err(path: &Path, e: rusqlite::Error) -> StoreError {
    use rusqlite::ErrorCode;
    match e.sqlite_error_code() {
        Some(ErrorCode::NotADatabase) => StoreError::NotOurs {
            path: path.to_owned(),
            reason: format!("not an SQLite database ({e})"),
        },
        Some(ErrorCode::DatabaseCorrupt) => StoreError::CorruptFile {
            path: path.to_owned(),
            reason: e.to_string(),
        },
        _ => StoreError::CorruptFile {
            path: path.to_owned(),
            reason: format!("cannot read: {e}"),
        },
    }
}

/// Check an existing file without writing to it. Returns its schema version.
fn inspect(path: &Path) -> Result<i64> {
    let mut f = File::open(path).map_err(|e| io_err(path, e))?;
    let len = f.metadata().map_err(|e| io_err(path, e))?.len();
    if len == 0 {
        return Err(StoreError::NotOurs {
            path: path.to_owned(),
            reason: "empty file".into(),
        });
    }
    let mut hdr = [0u8; 100];
    let mut got = 0;
    while got < hdr.len() {
        match f.read(&mut hdr[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) => return Err(io_err(path, e)),
        }
    }
    if got < 16 || &hdr[..16] != b"SQLite format 3\0" {
        return Err(StoreError::NotOurs {
            path: path.to_owned(),
            reason: "not an SQLite database".into(),
        });
    }
    if got < 100 {
        return Err(StoreError::CorruptFile {
            path: path.to_owned(),
            reason: format!("truncated: {len} bytes, shorter than the SQLite header"),
        });
    }
    let be32 = |o: usize| u32::from_be_bytes([hdr[o], hdr[o + 1], hdr[o + 2], hdr[o + 3]]);
    let app = be32(68) as i32;
    if app != APPLICATION_ID {
        return Err(StoreError::NotOurs {
            path: path.to_owned(),
            reason: format!("SQLite application_id is {app:#x}, not lq6's {APPLICATION_ID:#x}"),
        });
    }
    // In-header database size (valid when the change counter matches version-valid-for). Only trusted
    // when there is no WAL to recover from (a checkpoint interrupted by a crash writes page 1 first).
    let page_size = match u16::from_be_bytes([hdr[16], hdr[17]]) {
        1 => 65536u64,
        n => n as u64,
    };
    let wal = {
        let mut w = path.as_os_str().to_owned();
        w.push("-wal");
        std::fs::metadata(PathBuf::from(w))
            .map(|m| m.len())
            .unwrap_or(0)
    };
    if wal == 0 && be32(24) == be32(92) {
        let want = be32(28) as u64 * page_size;
        if want > len {
            return Err(StoreError::CorruptFile {
                path: path.to_owned(),
                reason: format!("truncated: the header says {want} bytes, the file has {len}"),
            });
        }
    }
    if len % page_size.max(512) != 0 {
        return Err(StoreError::CorruptFile {
            path: path.to_owned(),
            reason: format!(
                "truncated: {len} bytes is not a multiple of the page size {page_size}"
            ),
        });
    }
    drop(f);
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(|e| inspect_err(path, e))?;
    let version: i64 = conn
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .map_err(|e| inspect_err(path, e))?;
    if version > SCHEMA_VERSION {
        return Err(StoreError::NewerSchema {
            path: path.to_owned(),
            found: version,
            supported: SCHEMA_VERSION,
        });
    }
    if version < 1 {
        return Err(StoreError::CorruptFile {
            path: path.to_owned(),
            reason: format!("schema version {version}"),
        });
    }
    // Touch the right edge of every table so that a damaged file fails here rather than later.
    for sql in [
        "SELECT max(id), max(changed_seq) FROM client",
        "SELECT count(*) FROM (SELECT 1 FROM relay_id LIMIT 1)",
        "SELECT max(start) FROM addr",
    ] {
        conn.query_row(sql, [], |_| Ok(()))
            .map_err(|e| inspect_err(path, e))?;
    }
    Ok(version)
}

fn tmp_name(path: &Path) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(format!(".creating-{}", std::process::id()));
    PathBuf::from(s)
}

fn fsync_dir(path: &Path) -> Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_owned(),
        _ => PathBuf::from("."),
    };
    File::open(&dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| io_err(&dir, e))
}

/// Build a new store under a temporary name and rename it into place.
fn create(path: &Path) -> Result<()> {
    if let Some(d) = path.parent() {
        if !d.as_os_str().is_empty() {
            std::fs::create_dir_all(d).map_err(|e| io_err(d, e))?;
        }
    }
    let tmp = tmp_name(path);
    for suffix in ["", "-wal", "-shm", "-journal"] {
        let mut p = tmp.as_os_str().to_owned();
        p.push(suffix);
        let _ = std::fs::remove_file(PathBuf::from(p));
    }
    {
        let conn = Connection::open(&tmp)?;
        conn.execute_batch(&format!(
            "PRAGMA page_size=4096; PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL;
             BEGIN; PRAGMA application_id={APPLICATION_ID}; {SCHEMA} PRAGMA user_version={SCHEMA_VERSION}; COMMIT;
             PRAGMA wal_checkpoint(TRUNCATE);"
        ))?;
    }
    File::open(&tmp)
        .and_then(|f| f.sync_all())
        .map_err(|e| io_err(&tmp, e))?;
    // Do not replace a file somebody else created meanwhile.
    if path.exists() {
        let _ = std::fs::remove_file(&tmp);
        return Ok(());
    }
    std::fs::rename(&tmp, path).map_err(|e| io_err(path, e))?;
    fsync_dir(path)
}

fn reader_conn(path: &Path, opts: &SqliteOptions) -> Result<Connection> {
    let c = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    c.execute_batch(&format!(
        "PRAGMA cache_size=-{}; PRAGMA mmap_size={}; PRAGMA busy_timeout=10000;",
        opts.reader_cache_kib,
        opts.reader_mmap_bytes.min(i64::MAX as u64)
    ))?;
    Ok(c)
}

impl SqliteStore {
    /// Open (or create) the store at `path` with default options.
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        Self::open_with(path, SqliteOptions::default())
    }

    /// Open with options. Must be called outside of, or inside, a tokio runtime (no runtime needed).
    pub fn open_with(path: impl AsRef<Path>, opts: SqliteOptions) -> Result<Self> {
        let path = path.as_ref().to_owned();
        if !path.exists() {
            if !opts.create {
                return Err(io_err(
                    &path,
                    std::io::Error::from(std::io::ErrorKind::NotFound),
                ));
            }
            create(&path)?;
        }
        let _version = inspect(&path)?;
        crate::wal_vfs::register()?;
        let wconn = Connection::open_with_flags_and_vfs(
            &path,
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
            crate::wal_vfs::NAME,
        )?;
        let mode: String = wconn.query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0))?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(StoreError::CorruptFile {
                path,
                reason: format!("cannot switch to WAL (journal_mode {mode})"),
            });
        }
        // COMMIT does not wait for the disk: its WAL sync (synchronous=FULL) only writes the gathered
        // frames out (see `wal_vfs`); the syncer thread fsyncs the WAL and only then answers the
        // callers (see `Syncer`), so every acknowledged commit is durable. checkpoint_fullfsync marks
        // the syncs SQLite needs before a checkpoint, which stay real fsyncs.
        wconn.execute_batch(
            "PRAGMA synchronous=FULL; PRAGMA checkpoint_fullfsync=ON; PRAGMA cache_size=-65536;
             PRAGMA temp_store=MEMORY; PRAGMA busy_timeout=10000;",
        )?;
        // wal_vfs writes a commit's frames out only in that sync and drops what is left when the
        // write lock is released: under any other setting, commits would be lost.
        let sync_mode: (i64, i64) = wconn.query_row(
            "SELECT * FROM pragma_synchronous, pragma_checkpoint_fullfsync",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )?;
        if sync_mode != (2, 1) {
            return Err(StoreError::CorruptFile {
                path,
                reason: format!(
                    "the writer connection runs synchronous={}, checkpoint_fullfsync={} (needs 2 and 1)",
                    sync_mode.0, sync_mode.1
                ),
            });
        }
        migrate(&wconn, _version)?;
        let seq: i64 = wconn.query_row(
            "SELECT coalesce(max(changed_seq), 0) FROM client",
            [],
            |r| r.get(0),
        )?;
        let addr_index = if opts.address_index {
            // On a read connection: the scan must not fill the writer's 64 MiB page cache.
            Some(Arc::new(load_addr_index(&reader_conn(&path, &opts)?)?))
        } else {
            None
        };
        let mut wconn = wconn;
        let ckpt_conn = Connection::open_with_flags(
            &path,
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        ckpt_conn.execute_batch("PRAGMA synchronous=FULL; PRAGMA busy_timeout=10000;")?;
        let (ckpt_tx, ckpt_rx) = std::sync::mpsc::sync_channel::<()>(1);
        let snapshot = Arc::new(Mutex::new(Snapshot::default()));
        let csnapshot = snapshot.clone();
        let chandle = std::thread::Builder::new()
            .name("lq6-store-ckpt".into())
            .spawn(move || loop {
                use std::sync::mpsc::RecvTimeoutError;
                match ckpt_rx.recv_timeout(IDLE_SNAPSHOT_CHECK) {
                    Ok(()) => {
                        if let Err(e) =
                            ckpt_conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()))
                        {
                            tracing::warn!("lease store checkpoint: {e}");
                        }
                    }
                    Err(RecvTimeoutError::Timeout) => {}
                    Err(RecvTimeoutError::Disconnected) => break,
                }
                // The last lookup's snapshot would otherwise stay open while nothing else happens
                // here, and hold back the checkpoints of another process writing the file.
                if let Some(mut s) = Snapshot::try_take(&csnapshot) {
                    if s.began_at.is_some_and(|(_, t)| t.elapsed() >= SNAPSHOT_AGE) {
                        s.end();
                    }
                }
            })
            .map_err(|e| io_err(&path, e))?;
        // Checkpoints run on their own thread and connection, so the writer never waits for the
        // database file; the writer checkpoints itself only if the WAL grows very large (a write storm
        // that never lets a checkpoint catch up and the WAL restart).
        let mut nudged = 0;
        wconn.wal_hook(Some(
            move |wal: &mut rusqlite::hooks::Wal, pages: std::ffi::c_int| {
                if pages < nudged {
                    nudged = 0;
                }
                if pages >= WAL_FORCE_CHECKPOINT_PAGES {
                    // The transaction is already committed: an error returned from here would make
                    // its COMMIT report failure. A busy checkpointer just means: try again next time.
                    if let Err(e) = wal.checkpoint() {
                        tracing::debug!("lease store: writer checkpoint deferred: {e}");
                    }
                    nudged = 0;
                } else if pages - nudged >= WAL_CHECKPOINT_PAGES {
                    let _ = ckpt_tx.try_send(());
                    nudged = pages;
                }
                Ok(())
            },
        ))?;
        let (tx, rx) = mpsc::channel(65536);
        let max_group = opts.max_group.max(1);
        let poisoned = Arc::new(AtomicBool::new(false));
        let inflight = Arc::new(AtomicUsize::new(0));
        let stats = Arc::new(WriteStats::default());
        let wstats = stats.clone();
        let windex = addr_index.clone();
        let commits = Arc::new(AtomicU64::new(0));
        let writing = Arc::new(AtomicBool::new(false));
        let (wcommits, wsnapshot, wwriting) = (commits.clone(), snapshot.clone(), writing.clone());
        let (sync_tx, sync_rx) = std::sync::mpsc::channel();
        let syncer = Syncer {
            wal: {
                let mut w = path.as_os_str().to_owned();
                w.push("-wal");
                PathBuf::from(w)
            },
            file: None,
            poisoned: poisoned.clone(),
            inflight: inflight.clone(),
            stats: stats.clone(),
            wake: tx.downgrade(),
            writing: writing.clone(),
        };
        let shandle = std::thread::Builder::new()
            .name("lq6-store-sync".into())
            .spawn(move || syncer.run(sync_rx))
            .map_err(|e| io_err(&path, e))?;
        let handle = std::thread::Builder::new()
            .name("lq6-store-writer".into())
            .spawn(move || {
                Writer {
                    conn: wconn,
                    seq: seq as u64,
                    sync_tx,
                    inflight,
                    stats: wstats,
                    poisoned,
                    addr_index: windex,
                    index_ops: Vec::new(),
                    commits: wcommits,
                    snapshot: wsnapshot,
                    writing: wwriting,
                }
                .run(rx, max_group);
                let _ = shandle.join();
                let _ = chandle.join();
            })
            .map_err(|e| io_err(&path, e))?;
        let readers = Readers {
            idle: vec![reader_conn(&path, &opts)?],
            open: 1,
            waiting: 0,
        };
        Ok(SqliteStore {
            inner: Arc::new(Inner {
                path,
                tx: Some(tx),
                readers: Mutex::new(readers),
                reader_free: std::sync::Condvar::new(),
                opts,
                writer: Mutex::new(Some(handle)),
                stats,
                addr_index,
                snapshot,
                commits,
                writing,
            }),
        })
    }

    /// Group-commit counters since the store was opened.
    pub fn write_stats(&self) -> &WriteStats {
        &self.inner.stats
    }

    /// The store file.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// Run `f` on a pooled read connection (blocking). At most `opts.readers`
    /// connections exist; callers beyond that wait for one to be returned.
    fn with_reader<T>(inner: &Inner, f: impl FnOnce(&Connection) -> Result<T>) -> Result<T> {
        let closed = || StoreError::Closed;
        // Take an idle connection, or the right to open one, or wait; the guard
        // is released before `f` runs and before the connection is returned.
        let idle = {
            let mut pool = inner.readers.lock().map_err(|_| closed())?;
            loop {
                if let Some(c) = pool.idle.pop() {
                    break Some(c);
                }
                if pool.open < inner.opts.readers.max(1) {
                    pool.open += 1;
                    break None;
                }
                pool.waiting += 1;
                pool = inner.reader_free.wait(pool).map_err(|_| closed())?;
                pool.waiting -= 1;
            }
        };
        let conn = match idle {
            Some(c) => c,
            None => match reader_conn(&inner.path, &inner.opts) {
                Ok(c) => c,
                Err(e) => {
                    Self::release_reader(inner, None);
                    return Err(e);
                }
            },
        };
        let r = f(&conn);
        Self::release_reader(inner, Some(conn));
        r
    }

    /// Returns a read connection to the pool (or, with `None`, the right to open one) and wakes
    /// one waiter if there is any.
    fn release_reader(inner: &Inner, conn: Option<Connection>) {
        let Ok(mut p) = inner.readers.lock() else {
            return;
        };
        match conn {
            Some(c) => p.idle.push(c),
            None => p.open -= 1,
        }
        if p.waiting > 0 {
            drop(p);
            inner.reader_free.notify_one();
        }
    }

    async fn read<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || Self::with_reader(&inner, f))
            .await
            .map_err(|e| StoreError::CommitFailed(format!("reader task failed: {e}")))?
    }

    /// Runs `f` on the snapshot connection if no other lookup holds it, in the open read transaction
    /// when nothing has been committed since it began. `None`: busy, use another connection.
    fn try_snapshot<T>(
        inner: &Inner,
        f: impl FnOnce(&Connection) -> Result<T>,
    ) -> Option<Result<T>> {
        let mut guard = Snapshot::try_take(&inner.snapshot)?;
        let s = &mut *guard;
        // Read before the transaction's first statement takes its snapshot, which is thus at least
        // as new as this count.
        let now = inner.commits.load(Ordering::Acquire);
        if s.began_at
            .is_some_and(|(n, t)| n != now || t.elapsed() >= SNAPSHOT_AGE)
        {
            s.end();
        }
        if s.conn.is_none() {
            s.conn = Some(reader_conn(&inner.path, &inner.opts).ok()?);
        }
        let conn = s.conn.as_ref()?;
        if s.began_at.is_none() {
            conn.execute_batch("BEGIN").ok()?;
            s.began_at = Some((now, std::time::Instant::now()));
        }
        let r = f(conn);
        if r.is_err() || inner.writing.load(Ordering::SeqCst) {
            s.end();
        }
        Some(r)
    }

    /// A point lookup (a few B-tree probes, microseconds). When a read connection is idle it runs
    /// inline on the calling task: a hand-off to another thread costs more than the lookup (the UDP
    /// leasequery path does one per query). Otherwise, on a multi-thread runtime, it waits for a
    /// connection under `block_in_place`; elsewhere it uses [`Self::read`].
    async fn read_point<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        use tokio::runtime::{Handle, RuntimeFlavor};
        let idle = self
            .inner
            .readers
            .lock()
            .ok()
            .and_then(|mut p| p.idle.pop());
        if let Some(conn) = idle {
            let r = f(&conn);
            Self::release_reader(&self.inner, Some(conn));
            return r;
        }
        match Handle::try_current() {
            Ok(h) if h.runtime_flavor() == RuntimeFlavor::MultiThread => {
                tokio::task::block_in_place(|| Self::with_reader(&self.inner, f))
            }
            _ => self.read(f).await,
        }
    }

    async fn send<T>(&self, make: impl FnOnce(oneshot::Sender<Result<T>>) -> Cmd) -> Result<T> {
        let (otx, orx) = oneshot::channel();
        let tx = self.inner.tx.as_ref().ok_or(StoreError::Closed)?;
        tx.send(make(otx)).await.map_err(|_| StoreError::Closed)?;
        orx.await.map_err(|_| StoreError::Closed)?
    }
}

/// Columns 1-6 of a `COLS` row, for a record written before it carried them itself.
fn columns<'r>(r: &'r rusqlite::Row<'_>) -> Result<record::ClientCols<'r>> {
    let corrupt = |e: rusqlite::types::FromSqlError| StoreError::Corrupt(e.to_string());
    Ok(record::ClientCols {
        duid: r.get_ref(1)?.as_blob().map_err(corrupt)?,
        link: r.get_ref(2)?.as_str().map_err(corrupt)?,
        link_address: addr_from(r.get_ref(3)?.as_blob().map_err(corrupt)?)?,
        cltt: r.get::<_, i64>(4)? as u64,
        changed_seq: r.get::<_, i64>(5)? as u64,
        changed_at: r.get::<_, i64>(6)? as u64,
    })
}

/// A `COLS` row's id, record blob and client columns (from the blob when it carries them).
fn row_head<'r>(r: &'r rusqlite::Row<'_>) -> Result<(u64, &'r [u8], record::ClientCols<'r>)> {
    let id: i64 = r.get(0)?;
    let data = r
        .get_ref(7)?
        .as_blob()
        .map_err(|e| StoreError::Corrupt(e.to_string()))?;
    let t = match record::client_cols(data)? {
        Some(t) => t,
        None => columns(r)?,
    };
    Ok((id as u64, data, t))
}

fn row_binding(r: &rusqlite::Row<'_>) -> Result<(u64, Binding)> {
    let (id, data, t) = row_head(r)?;
    let (relay, leases) = record::decode(data)?;
    Ok((
        id,
        Binding {
            client: ClientRecord {
                duid: t.duid.to_vec(),
                link: t.link.to_owned(),
                link_address: t.link_address,
                cltt: t.cltt,
                relay,
                changed_seq: t.changed_seq,
                changed_at: t.changed_at,
            },
            leases,
        },
    ))
}

/// A borrowed view of a `COLS` row: nothing is copied or allocated; the record blob is validated and
/// its leases are parsed lazily by the view's iterator.
fn row_view<'r>(r: &'r rusqlite::Row<'_>, active_only: bool) -> Result<(u64, BindingView<'r>)> {
    let (id, data, t) = row_head(r)?;
    let (relay, leases) = record::decode_view(data)?;
    Ok((
        id,
        BindingView {
            duid: t.duid,
            link: t.link,
            link_address: t.link_address,
            cltt: t.cltt,
            changed_seq: t.changed_seq,
            changed_at: t.changed_at,
            relay,
            leases,
            active_only,
        },
    ))
}

/// One page of `q`, each row visited as a [`BindingView`] straight from SQLite's row buffer.
fn visit_page(
    c: &Connection,
    q: &Query,
    after: Option<Cursor>,
    limit: usize,
    visit: &mut (dyn for<'r, 'v> FnMut(&'r BindingView<'v>) + Send),
) -> Result<Option<Cursor>> {
    let (sql, params) = query_sql(q, COLS, after, Some(limit));
    let mut st = c.prepare_cached(&sql)?;
    let mut rows = st.query(rusqlite::params_from_iter(params))?;
    let (mut n, mut last) = (0usize, None);
    while let Some(r) = rows.next()? {
        let (id, v) = row_view(r, !q.include_inactive)?;
        last = Some(id);
        n += 1;
        visit(&v);
    }
    Ok(if n == limit { last.map(Cursor) } else { None })
}

fn query_sql(
    q: &Query,
    head: &str,
    after: Option<Cursor>,
    limit: Option<usize>,
) -> (String, Vec<Value>) {
    let (sql, ps) = crate::sql::build(q, head, after, limit, "", |i| format!("?{i}"));
    let ps = ps
        .into_iter()
        .map(|p| match p {
            Param::Bytes(b) => Value::Blob(b),
            Param::Text(t) => Value::Text(t),
            Param::Int(i) => Value::Integer(i),
        })
        .collect();
    (sql, ps)
}

/// Reads every stored range into an [`AddrIndex`].
fn load_addr_index(conn: &Connection) -> Result<AddrIndex> {
    let n: i64 = conn.query_row("SELECT count(*) FROM addr", [], |r| r.get(0))?;
    // The table's key order is ascending start, which is what the index's arrays keep.
    let mut st = conn.prepare("SELECT start, plen, client FROM addr ORDER BY start")?;
    let rows = st.query([])?.and_then(|r| -> Result<(u128, u8, i64)> {
        let start = r
            .get_ref(0)?
            .as_blob()
            .map_err(|e| StoreError::Corrupt(e.to_string()))?;
        let plen: i64 = r.get(1)?;
        Ok((
            u128::from(addr_from(start)?),
            plen.clamp(0, 128) as u8,
            r.get(2)?,
        ))
    });
    AddrIndex::from_sorted(usize::try_from(n).unwrap_or(0), rows)
}

fn load_by_id(conn: &Connection, id: i64) -> Result<Option<Binding>> {
    let mut st = conn.prepare_cached(concat!(
        "SELECT ",
        cols!(),
        " FROM client c WHERE c.id = ?1"
    ))?;
    let mut rows = st.query([id])?;
    match rows.next()? {
        Some(r) => Ok(Some(row_binding(r)?.1)),
        None => Ok(None),
    }
}

#[async_trait::async_trait]
impl LeaseStore for SqliteStore {
    async fn commit(&self, update: ClientUpdate) -> Result<CommitInfo> {
        self.send(|tx| Cmd::Commit(update, tx)).await
    }

    async fn commit_batch(&self, updates: Vec<ClientUpdate>) -> Result<Vec<Result<CommitInfo>>> {
        if updates.is_empty() {
            return Ok(Vec::new());
        }
        self.send(|tx| Cmd::Batch(updates, tx)).await
    }

    async fn by_address(&self, addr: Ipv6Addr) -> Result<Option<Binding>> {
        let hint = self.inner.addr_index.as_ref().and_then(|i| i.find(addr));
        let f = move |c: &Connection| {
            // The map's candidate counts only if its row still holds the address.
            if let Some(b) = hint.map(|id| load_by_id(c, id)).transpose()?.flatten() {
                if b.leases
                    .iter()
                    .any(|l| l.state == LeaseState::Active && (l.addr..=l.end()).contains(&addr))
                {
                    return Ok(Some(b.active_only()));
                }
            }
            // One statement: the range with the largest start <= addr (active ranges never overlap, so
            // it is the only candidate) and its binding.
            let mut st = c.prepare_cached(&format!(
                "SELECT {COLS}, a.\"end\" FROM addr a JOIN client c ON c.id = a.client
                 WHERE a.start <= ?1 ORDER BY a.start DESC LIMIT 1"
            ))?;
            let mut rows = st.query([a16(addr)])?;
            let Some(r) = rows.next()? else {
                return Ok(None);
            };
            let end = r
                .get_ref(8)?
                .as_blob()
                .map_err(|e| StoreError::Corrupt(e.to_string()))?;
            if addr_from(end)? < addr {
                return Ok(None);
            }
            Ok(Some(row_binding(r)?.1.active_only()))
        };
        match Self::try_snapshot(&self.inner, f) {
            Some(r) => r,
            None => self.read_point(f).await,
        }
    }

    async fn by_client(&self, duid: &[u8], link: Option<&str>) -> Result<Vec<Binding>> {
        let q = Query::client(duid, link).inactive(true);
        let f = move |c: &Connection| {
            let (sql, params) = query_sql(&q, COLS, None, Some(usize::MAX >> 2));
            let mut st = c.prepare_cached(&sql)?;
            let mut rows = st.query(rusqlite::params_from_iter(params))?;
            let mut out = Vec::new();
            while let Some(r) = rows.next()? {
                out.push(row_binding(r)?.1);
            }
            Ok(out)
        };
        match Self::try_snapshot(&self.inner, &f) {
            Some(r) => r,
            None => self.read(f).await,
        }
    }

    async fn page(&self, q: &Query, after: Option<Cursor>, limit: usize) -> Result<Page> {
        let q = q.clone();
        let limit = limit.max(1);
        self.read(move |c| {
            let (sql, params) = query_sql(&q, COLS, after, Some(limit));
            let mut st = c.prepare_cached(&sql)?;
            let mut rows = st.query(rusqlite::params_from_iter(params))?;
            let mut out = Vec::with_capacity(limit.min(4096));
            let mut last = None;
            while let Some(r) = rows.next()? {
                let (id, b) = row_binding(r)?;
                last = Some(id);
                out.push(if q.include_inactive {
                    b
                } else {
                    b.active_only()
                });
            }
            let next = if out.len() == limit {
                last.map(Cursor)
            } else {
                None
            };
            Ok(Page {
                bindings: out,
                next,
            })
        })
        .await
    }

    /// Native: on a multi-thread runtime the page is read right here under `block_in_place` (like
    /// `by_address`) and every row is visited in place, with no per-binding allocation. Elsewhere
    /// (current-thread runtime, no runtime) it reads the owned page on the blocking pool.
    async fn page_visit(
        &self,
        q: &Query,
        after: Option<Cursor>,
        limit: usize,
        visit: &mut (dyn for<'r, 'v> FnMut(&'r BindingView<'v>) + Send),
    ) -> Result<Option<Cursor>> {
        use tokio::runtime::{Handle, RuntimeFlavor};
        let multi = matches!(Handle::try_current(), Ok(h) if h.runtime_flavor() == RuntimeFlavor::MultiThread);
        if !multi {
            let p = self.page(q, after, limit).await?;
            for b in &p.bindings {
                visit(&b.view());
            }
            return Ok(p.next);
        }
        let limit = limit.max(1);
        tokio::task::block_in_place(|| {
            Self::with_reader(&self.inner, |c| visit_page(c, q, after, limit, visit))
        })
    }

    async fn changes_since(&self, seq: u64, limit: usize) -> Result<Vec<Binding>> {
        self.read(move |c| {
            let mut st = c.prepare_cached(&format!(
                "SELECT {COLS} FROM client c WHERE c.changed_seq > ?1 ORDER BY c.changed_seq LIMIT ?2"
            ))?;
            let mut rows = st.query(params![seq.min(i64::MAX as u64) as i64, limit.min(i64::MAX as usize) as i64])?;
            let mut out = Vec::new();
            while let Some(r) = rows.next()? {
                out.push(row_binding(r)?.1);
            }
            Ok(out)
        })
        .await
    }

    async fn expire(&self, now: u64) -> Result<u64> {
        const CHUNK: usize = 5000;
        let mut total = 0;
        loop {
            let (n, more) = {
                let n = self.send(|tx| Cmd::Expire(now, CHUNK, tx)).await?;
                (n, n > 0)
            };
            total += n;
            if !more {
                return Ok(total);
            }
        }
    }

    async fn active_in_range(
        &self,
        start: Ipv6Addr,
        end: Ipv6Addr,
        after: Option<Ipv6Addr>,
        limit: usize,
    ) -> Result<Vec<ActiveLease>> {
        self.read(move |c| {
            let mut st = c.prepare_cached(
                "SELECT a.start, a.plen, a.expires_at, c.duid, c.link FROM addr a JOIN client c ON c.id = a.client
                 WHERE a.start >= ?1 AND a.start <= ?2 AND (?3 IS NULL OR a.start > ?3) ORDER BY a.start LIMIT ?4",
            )?;
            let mut rows =
                st.query(params![a16(start), a16(end), after.map(a16), limit.min(i64::MAX as usize) as i64])?;
            let mut out = Vec::new();
            while let Some(r) = rows.next()? {
                let s: Vec<u8> = r.get(0)?;
                out.push(ActiveLease {
                    addr: addr_from(&s)?,
                    prefix_len: r.get::<_, i64>(1)?.clamp(0, 128) as u8,
                    expires_at: r.get::<_, i64>(2)? as u64,
                    duid: r.get(3)?,
                    link: r.get(4)?,
                });
            }
            Ok(out)
        })
        .await
    }

    async fn count(&self, q: &Query) -> Result<u64> {
        let q = q.clone();
        self.read(move |c| {
            let (sql, params) = query_sql(&q, "count(*)", None, None);
            let mut st = c.prepare_cached(&sql)?;
            let n: i64 = st.query_row(rusqlite::params_from_iter(params), |r| r.get(0))?;
            Ok(n as u64)
        })
        .await
    }

    async fn stats(&self) -> Result<Stats> {
        self.read(|c| {
            let s = c.query_row(
                "SELECT count(*), coalesce(sum(n_active > 0), 0), coalesce(sum(n_leases), 0),
                        coalesce(sum(n_active), 0), coalesce(max(changed_seq), 0) FROM client",
                [],
                |r| {
                    Ok(Stats {
                        bindings: r.get::<_, i64>(0)? as u64,
                        active_bindings: r.get::<_, i64>(1)? as u64,
                        leases: r.get::<_, i64>(2)? as u64,
                        active_leases: r.get::<_, i64>(3)? as u64,
                        last_seq: r.get::<_, i64>(4)? as u64,
                    })
                },
            )?;
            Ok(s)
        })
        .await
    }
}

struct Writer {
    conn: Connection,
    seq: u64,
    /// Committed (not yet fsynced) groups go to the syncer, which answers them after the fsync.
    sync_tx: std::sync::mpsc::Sender<Vec<Reply>>,
    /// Groups committed and handed to the syncer but not yet fsynced.
    inflight: Arc<AtomicUsize>,
    stats: Arc<WriteStats>,
    /// Set by the syncer when an fsync failed: nothing can be acknowledged any more.
    poisoned: Arc<AtomicBool>,
    /// The readers' address map and the open group's changes to it, applied once the group commits.
    addr_index: Option<Arc<AddrIndex>>,
    index_ops: Vec<IndexOp>,
    /// Counted after every COMMIT, before its fsync: a lookup that starts later gets a snapshot that
    /// holds the commit, so a client's lease is visible before its REPLY is sent.
    commits: Arc<AtomicU64>,
    snapshot: Arc<Mutex<Snapshot>>,
    writing: Arc<AtomicBool>,
}

#[allow(clippy::large_enum_variant)] // One is the common case
enum Reply {
    One(oneshot::Sender<Result<CommitInfo>>, Result<CommitInfo>),
    Many(
        oneshot::Sender<Result<Vec<Result<CommitInfo>>>>,
        Vec<Result<CommitInfo>>,
    ),
    Expire(oneshot::Sender<Result<u64>>, Result<u64>),
}

impl Reply {
    fn send(self) {
        match self {
            Reply::One(tx, r) => drop(tx.send(r)),
            Reply::Many(tx, r) => drop(tx.send(Ok(r))),
            Reply::Expire(tx, r) => drop(tx.send(r)),
        }
    }
    fn fail(self, msg: &str) {
        let e = || StoreError::CommitFailed(msg.to_owned());
        match self {
            Reply::One(tx, _) => drop(tx.send(Err(e()))),
            Reply::Many(tx, _) => drop(tx.send(Err(e()))),
            Reply::Expire(tx, _) => drop(tx.send(Err(e()))),
        }
    }
}

/// Committed groups the writer lets wait for the syncer: the one being fsynced plus one written
/// ahead. More would only make smaller groups wait just as long.
const PIPELINE_DEPTH: usize = 2;

const POISONED: &str = "an earlier fsync of the write-ahead log failed; reopen the store";

/// The syncer: fsyncs the WAL once for every group committed since its last fsync, then answers them.
///
/// The writer connection's COMMIT writes the WAL frames (and the commit frame) to the OS without
/// waiting for the disk (its commit sync is only a write, see `wal_vfs`); durability comes from this thread's
/// `fdatasync` of the WAL file, which covers every frame written before it. Callers are answered only
/// after it, so an acknowledged commit is on disk, exactly as with `synchronous=FULL`, but the writer
/// can apply and commit the next group while the disk flushes the previous one (pipelined group
/// commit). SQLite itself still syncs the WAL before a checkpoint and the database file after it.
struct Syncer {
    wal: PathBuf,
    file: Option<(File, (u64, u64))>,
    poisoned: Arc<AtomicBool>,
    /// Groups handed over and not yet answered (shared with the writer).
    inflight: Arc<AtomicUsize>,
    stats: Arc<WriteStats>,
    /// Wakes the writer when the pipeline has room again (weak: does not keep the store open).
    wake: mpsc::WeakSender<Cmd>,
    /// Set while the writer has a transaction open (see [`Snapshot`]).
    writing: Arc<AtomicBool>,
}

/// How long the syncer waits for a group the writer is about to commit without going to sleep.
const SYNCER_SPIN: std::time::Duration = std::time::Duration::from_micros(200);

impl Syncer {
    /// The next committed group. While the writer has a transaction open, one is due shortly: the
    /// syncer then yields its core instead of sleeping, because a sleeping thread here takes some
    /// 30 µs to be woken, and the disk idles for all of it.
    fn next(&self, rx: &std::sync::mpsc::Receiver<Vec<Reply>>) -> Option<Vec<Reply>> {
        let t0 = std::time::Instant::now();
        loop {
            match rx.try_recv() {
                Ok(g) => return Some(g),
                Err(std::sync::mpsc::TryRecvError::Disconnected) => return None,
                Err(std::sync::mpsc::TryRecvError::Empty) => {}
            }
            if !self.writing.load(Ordering::Acquire) || t0.elapsed() >= SYNCER_SPIN {
                return rx.recv().ok();
            }
            std::thread::yield_now();
        }
    }

    fn run(mut self, rx: std::sync::mpsc::Receiver<Vec<Reply>>) {
        while let Some(first) = self.next(&rx) {
            let mut groups = vec![first];
            while let Ok(g) = rx.try_recv() {
                groups.push(g);
            }
            let k = groups.len();
            let t0 = std::time::Instant::now();
            let r = if self.poisoned.load(Ordering::Acquire) {
                Err(POISONED.to_owned())
            } else {
                self.sync()
            };
            self.stats.fsyncs.fetch_add(1, Ordering::Relaxed);
            self.stats
                .fsync_micros
                .fetch_add(t0.elapsed().as_micros() as u64, Ordering::Relaxed);
            match r {
                Ok(()) => groups.into_iter().flatten().for_each(Reply::send),
                Err(msg) => {
                    tracing::error!("lease store: {msg}");
                    self.poisoned.store(true, Ordering::Release);
                    groups.into_iter().flatten().for_each(|r| r.fail(&msg));
                }
            }
            let before = self.inflight.fetch_sub(k, Ordering::AcqRel);
            if before >= PIPELINE_DEPTH && before - k < PIPELINE_DEPTH {
                if let Some(w) = self.wake.upgrade() {
                    let _ = w.try_send(Cmd::Synced);
                }
            }
        }
    }

    /// fdatasync the WAL file (reopened if SQLite replaced it since the last time).
    fn sync(&mut self) -> std::result::Result<(), String> {
        use std::os::unix::fs::MetadataExt;
        let cur = std::fs::metadata(&self.wal)
            .map(|m| (m.dev(), m.ino()))
            .map_err(|e| format!("{}: {e}", self.wal.display()))?;
        if self.file.as_ref().map(|f| f.1) != Some(cur) {
            let f = File::options()
                .read(true)
                .write(true)
                .open(&self.wal)
                .map_err(|e| format!("{}: {e}", self.wal.display()))?;
            let m = f
                .metadata()
                .map_err(|e| format!("{}: {e}", self.wal.display()))?;
            self.file = Some((f, (m.dev(), m.ino())));
        }
        let (f, _) = self.file.as_ref().expect("opened above");
        f.sync_data()
            .map_err(|e| format!("fsync of {} failed: {e}", self.wal.display()))
    }
}

impl Writer {
    /// Group commit, pipelined with the syncer: commands are applied as they arrive inside one open
    /// transaction, which is committed as soon as the syncer is idle, or the group is full, or no
    /// more commands are waiting while the syncer has only one group in hand. So while the disk
    /// flushes one group, the next one accumulates (its pages written to the WAL once) and is
    /// written out before that fsync ends, and every fsync covers everything committed before it.
    fn run(mut self, mut rx: mpsc::Receiver<Cmd>, max_group: usize) {
        let mut open: Option<(u64, Vec<Reply>)> = None;
        let mut n = 0usize;
        loop {
            if open.is_some() && (self.inflight.load(Ordering::Acquire) == 0 || n >= max_group) {
                let (seq0, replies) = open.take().expect("checked");
                self.commit(seq0, replies);
                n = 0;
                continue;
            }
            let cmd = if open.is_some() {
                match rx.try_recv() {
                    Ok(c) => Some(c),
                    // Nothing more has arrived and the syncer has one group in hand: commit now, so
                    // its next fsync can start the moment the current one ends.
                    Err(mpsc::error::TryRecvError::Empty)
                        if self.inflight.load(Ordering::Acquire) < PIPELINE_DEPTH =>
                    {
                        let (seq0, replies) = open.take().expect("checked");
                        self.commit(seq0, replies);
                        n = 0;
                        continue;
                    }
                    Err(mpsc::error::TryRecvError::Empty) => rx.blocking_recv(),
                    Err(mpsc::error::TryRecvError::Disconnected) => None,
                }
            } else {
                rx.blocking_recv()
            };
            let Some(cmd) = cmd else {
                if let Some((seq0, replies)) = open.take() {
                    self.commit(seq0, replies);
                }
                break;
            };
            if matches!(cmd, Cmd::Synced) {
                continue;
            }
            if self.poisoned.load(Ordering::Acquire) {
                fail(cmd, POISONED);
                continue;
            }
            if open.is_none() {
                // Set before the snapshot is taken: a lookup that holds it now sees the flag when
                // it finishes and ends its read transaction itself.
                self.writing.store(true, Ordering::SeqCst);
                if let Some(mut s) = Snapshot::try_take(&self.snapshot) {
                    s.end();
                }
                let begin = self
                    .conn
                    .prepare_cached("BEGIN IMMEDIATE")
                    .and_then(|mut s| s.execute([]));
                if let Err(e) = begin {
                    self.writing.store(false, Ordering::SeqCst);
                    fail(cmd, &e.to_string());
                    continue;
                }
                // Another process (`lq6 leases import` next to a running server) may have written
                // since: continue after its change sequence. One index probe per group.
                let stored: rusqlite::Result<Option<i64>> = self
                    .conn
                    .prepare_cached("SELECT max(changed_seq) FROM client")
                    .and_then(|mut s| s.query_row([], |r| r.get(0)));
                match stored {
                    Ok(v) => self.seq = self.seq.max(v.unwrap_or(0).max(0) as u64),
                    Err(e) => {
                        let _ = self.conn.execute_batch("ROLLBACK");
                        self.writing.store(false, Ordering::SeqCst);
                        fail(cmd, &e.to_string());
                        continue;
                    }
                }
                open = Some((self.seq, Vec::new()));
            }
            let replies = &mut open.as_mut().expect("opened above").1;
            // A command whose write failed: its reply and the error that aborts the group.
            let aborted: Option<(Reply, StoreError)> = match cmd {
                Cmd::Commit(u, tx) => {
                    n += 1;
                    match self.apply(&u) {
                        Ok(ci) => {
                            replies.push(Reply::One(tx, Ok(ci)));
                            None
                        }
                        Err(ApplyError::Refused(e)) => {
                            replies.push(Reply::One(tx, Err(e)));
                            None
                        }
                        // The reply is failed with the rest of the group below.
                        Err(ApplyError::Aborted(e)) => {
                            let r = Err(StoreError::CommitFailed(String::new()));
                            Some((Reply::One(tx, r), e))
                        }
                    }
                }
                Cmd::Batch(us, tx) => {
                    n += us.len();
                    let mut rs = Vec::with_capacity(us.len());
                    let mut abort = None;
                    for u in &us {
                        match self.apply(u) {
                            Ok(ci) => rs.push(Ok(ci)),
                            Err(ApplyError::Refused(e)) => rs.push(Err(e)),
                            Err(ApplyError::Aborted(e)) => {
                                abort = Some(e);
                                break;
                            }
                        }
                    }
                    match abort {
                        None => {
                            replies.push(Reply::Many(tx, rs));
                            None
                        }
                        Some(e) => Some((Reply::Many(tx, rs), e)),
                    }
                }
                Cmd::Expire(now, limit, tx) => {
                    n += limit;
                    match self.expire(now, limit) {
                        Ok(k) => {
                            replies.push(Reply::Expire(tx, Ok(k)));
                            None
                        }
                        Err(e) => Some((Reply::Expire(tx, Ok(0)), e)),
                    }
                }
                Cmd::Synced => None,
            };
            if let Some((reply, e)) = aborted {
                let (seq0, mut replies) = open.take().expect("opened above");
                replies.push(reply);
                self.abort(seq0, replies, &e.to_string());
                n = 0;
            }
        }
        let _ = self.conn.execute_batch("PRAGMA optimize;");
    }

    /// COMMIT the open transaction and hand its replies to the syncer, which sends them after the WAL
    /// fsync. On failure everything since BEGIN is rolled back and every caller gets the error.
    fn commit(&mut self, seq0: u64, replies: Vec<Reply>) {
        let r = self
            .conn
            .prepare_cached("COMMIT")
            .and_then(|mut s| s.execute([]));
        self.writing.store(false, Ordering::SeqCst);
        match r.map(|_| ()) {
            Ok(()) => {
                if let Some(idx) = &self.addr_index {
                    idx.apply(&self.index_ops);
                }
                self.index_ops.clear();
                self.commits.fetch_add(1, Ordering::AcqRel);
                self.stats.groups.fetch_add(1, Ordering::Relaxed);
                self.stats
                    .commands
                    .fetch_add(replies.len() as u64, Ordering::Relaxed);
                self.inflight.fetch_add(1, Ordering::AcqRel);
                if let Err(std::sync::mpsc::SendError(replies)) = self.sync_tx.send(replies) {
                    self.inflight.fetch_sub(1, Ordering::AcqRel);
                    replies
                        .into_iter()
                        .for_each(|r| r.fail("syncer thread gone"));
                }
            }
            Err(e) => self.abort(seq0, replies, &e.to_string()),
        }
    }

    /// Roll the open transaction back and fail every command of the group: none was acknowledged,
    /// and none of them is left half-written.
    fn abort(&mut self, seq0: u64, replies: Vec<Reply>, msg: &str) {
        tracing::error!(
            "lease store: write failed, group of {} rolled back: {msg}",
            replies.len()
        );
        let _ = self.conn.execute_batch("ROLLBACK");
        self.writing.store(false, Ordering::SeqCst);
        self.index_ops.clear();
        self.seq = seq0;
        for r in replies {
            r.fail(msg);
        }
    }
    /// Apply one update. Everything that can refuse it (validation, an address held by another
    /// binding) is checked before the first write, so a refusal leaves nothing behind without a
    /// savepoint per update (which cost a copy of every page touched). A failure while writing can
    /// only be SQLite's own, and it aborts the whole group.
    fn apply(&mut self, u: &ClientUpdate) -> std::result::Result<CommitInfo, ApplyError> {
        let (existing, plan) = self.check(u).map_err(ApplyError::Refused)?;
        self.write(u, existing, plan).map_err(ApplyError::Aborted)
    }

    /// The read-only half of [`Writer::apply`]: the stored binding, the plan, and the conflict check.
    fn check(&mut self, u: &ClientUpdate) -> Result<(Option<Stored>, Plan)> {
        let c = &self.conn;
        let remote = record::remote_cols(u);
        let existing: Option<(Stored, Vec<u8>)> = c
            .prepare_cached(
                "SELECT id, data, remote_ent IS ?3 AND remote_id IS ?4 FROM client
                 WHERE duid = ?1 AND link = ?2",
            )?
            .query_row(params![u.duid, u.link, remote.0, remote.1], |r| {
                let stored = Stored {
                    id: r.get(0)?,
                    same_remote: r.get(2)?,
                };
                Ok((stored, r.get(1)?))
            })
            .optional()?;
        let old = match &existing {
            Some((_, data)) => Some(record::decode(data)?),
            None => None,
        };
        let plan: Plan = record::plan(old.as_ref().map(|(r, l)| (r, l.as_slice())), u)?;
        let stored = existing.map(|(s, _)| s);
        let id = stored.map(|s| s.id);
        // The ranges to write must not overlap each other, nor any stored range except this
        // binding's own rows that the update rewrites or deletes (a prefix shrunk in place no longer
        // covers what it covered). The PostgreSQL backend applies the same rule (`postgres::conflict`).
        if let Some(addr) = plan.self_overlap() {
            return Err(StoreError::Conflict { addr });
        }
        let mut st = c.prepare_cached(
            "SELECT start, \"end\", client FROM addr WHERE start <= ?1 ORDER BY start DESC",
        )?;
        let held = |a: &record::AddrRow| {
            old.as_ref().is_some_and(|(_, leases)| {
                leases
                    .iter()
                    .any(|l| l.state == LeaseState::Active && l.addr == a.start && l.end() == a.end)
            })
        };
        for a in &plan.addr_put {
            // A renewal of a range this binding already holds: its row is there, and nothing
            // else can overlap it.
            if held(a) {
                continue;
            }
            let mut rows = st.query([a16(a.end)])?;
            // Stored ranges never overlap, so the first one starting at or below a.start is the last
            // that can reach into a.
            while let Some(r) = rows.next()? {
                let blob = |i| {
                    r.get_ref(i)?
                        .as_blob()
                        .map_err(|e| StoreError::Corrupt(e.to_string()))
                };
                let s = addr_from(blob(0)?)?;
                let e = addr_from(blob(1)?)?;
                let holder: i64 = r.get(2)?;
                if e >= a.start && !(Some(holder) == id && plan.rewrites(s)) {
                    return Err(StoreError::Conflict { addr: a.start });
                }
                if s <= a.start {
                    break;
                }
            }
        }
        Ok((stored, plan))
    }

    /// The writing half of [`Writer::apply`]; an error here leaves the transaction half-written.
    fn write(
        &mut self,
        u: &ClientUpdate,
        existing: Option<Stored>,
        mut plan: Plan,
    ) -> Result<CommitInfo> {
        let c = &self.conn;
        let now = u.now.unwrap_or_else(crate::unix_now);
        self.seq += 1;
        let seq = self.seq;
        let (rent, rid) = record::remote_cols(u);
        let la = a16(u.link_address);
        let cltt = u.cltt.min(i64::MAX as u64) as i64;
        let now_col = now.min(i64::MAX as u64) as i64;
        // The columns again, inside the blob, exactly as stored (see `record::ClientCols`).
        let data = record::with_client_cols(
            std::mem::take(&mut plan.data),
            &record::ClientCols {
                duid: &u.duid,
                link: &u.link,
                link_address: u.link_address,
                cltt: cltt as u64,
                changed_seq: seq,
                changed_at: now_col as u64,
            },
        );
        let id = match existing {
            Some(Stored { id, same_remote }) => {
                // A renewal that keeps its Remote-ID leaves those columns out: naming them in the
                // UPDATE makes SQLite rewrite the `client_remote` entry, a random index page more.
                let sql = if same_remote {
                    "UPDATE client SET link_address=?2, cltt=?3, changed_seq=?4, changed_at=?5, n_active=?6,
                     n_leases=?7, data=?8 WHERE id=?1"
                } else {
                    "UPDATE client SET link_address=?2, cltt=?3, changed_seq=?4, changed_at=?5, n_active=?6,
                     n_leases=?7, data=?8, remote_ent=?9, remote_id=?10 WHERE id=?1"
                };
                let seq = seq as i64;
                let p: [&dyn rusqlite::ToSql; 10] = [
                    &id,
                    &la,
                    &cltt,
                    &seq,
                    &now_col,
                    &plan.n_active,
                    &plan.n_leases,
                    &data,
                    &rent,
                    &rid,
                ];
                c.prepare_cached(sql)?
                    .execute(&p[..if same_remote { 8 } else { 10 }])?;
                id
            }
            None => {
                c.prepare_cached(
                    "INSERT INTO client(duid, link, link_address, cltt, changed_seq, changed_at, n_active, n_leases,
                     remote_ent, remote_id, data) VALUES (?1,?2,?3,?4,?5,?6,?7,?8,?9,?10,?11)",
                )?
                .execute(params![
                    u.duid,
                    u.link,
                    la,
                    cltt,
                    seq as i64,
                    now_col,
                    plan.n_active,
                    plan.n_leases,
                    rent,
                    rid,
                    data
                ])?;
                c.last_insert_rowid()
            }
        };
        if !plan.addr_del.is_empty() {
            let mut del = c.prepare_cached("DELETE FROM addr WHERE start = ?1 AND client = ?2")?;
            for a in &plan.addr_del {
                del.execute(params![a16(*a), id])?;
                if self.addr_index.is_some() {
                    self.index_ops.push(IndexOp::Del {
                        start: u128::from(*a),
                        client: id,
                    });
                }
            }
        }
        if !plan.addr_put.is_empty() {
            let mut put = c.prepare_cached(
                "INSERT INTO addr(start, \"end\", plen, client, expires_at) VALUES (?1,?2,?3,?4,?5)
                 ON CONFLICT(start) DO UPDATE SET \"end\"=excluded.\"end\", plen=excluded.plen,
                 expires_at=excluded.expires_at WHERE client = excluded.client",
            )?;
            for a in &plan.addr_put {
                let n = put.execute(params![
                    a16(a.start),
                    a16(a.end),
                    a.plen as i64,
                    id,
                    a.expires_at as i64
                ])?;
                if n == 0 {
                    // check() saw no other holder, and nothing else writes meanwhile.
                    return Err(StoreError::Corrupt(format!(
                        "address row {} changed holder during a write",
                        a.start
                    )));
                }
                if self.addr_index.is_some() {
                    self.index_ops.push(IndexOp::Put {
                        start: u128::from(a.start),
                        plen: a.plen,
                        client: id,
                    });
                }
            }
        }
        if !plan.relay_del.is_empty() {
            let mut del =
                c.prepare_cached("DELETE FROM relay_id WHERE relay_id = ?1 AND client = ?2")?;
            for r in &plan.relay_del {
                del.execute(params![r, id])?;
            }
        }
        if !plan.relay_add.is_empty() {
            let mut ins = c.prepare_cached(
                "INSERT OR IGNORE INTO relay_id(relay_id, client) VALUES (?1, ?2)",
            )?;
            for r in &plan.relay_add {
                ins.execute(params![r, id])?;
            }
        }
        Ok(plan.into_commit_info(u, seq, now))
    }

    /// Expire up to `limit` bindings' overdue leases. Returns the number of leases expired.
    fn expire(&mut self, now: u64, limit: usize) -> Result<u64> {
        let ids: Vec<i64> = {
            let mut st = self.conn.prepare_cached(
                "SELECT DISTINCT client FROM addr WHERE expires_at <= ?1 LIMIT ?2",
            )?;
            let rows = st.query_map(
                params![now.min(i64::MAX as u64) as i64, limit as i64],
                |r| r.get(0),
            )?;
            rows.collect::<rusqlite::Result<_>>()?
        };
        let mut n = 0u64;
        for id in ids {
            let Some(b) = load_by_id(&self.conn, id)? else {
                continue;
            };
            let Some((u, changed)) = record::expiry_update(b, now) else {
                continue;
            };
            match self.apply(&u) {
                Ok(_) => n += changed,
                Err(ApplyError::Refused(e) | ApplyError::Aborted(e)) => return Err(e),
            }
        }
        Ok(n)
    }
}

/// The stored row an update rewrites.
#[derive(Clone, Copy)]
struct Stored {
    id: i64,
    /// The row's Remote-ID columns already hold the update's Remote-ID.
    same_remote: bool,
}

/// Why one command of a group failed.
enum ApplyError {
    /// Refused before anything was written (invalid, or an address held by another binding): only
    /// this update fails.
    Refused(StoreError),
    /// SQLite failed while writing: the open transaction is rolled back and the whole group fails.
    Aborted(StoreError),
}

fn fail(c: Cmd, msg: &str) {
    let e = || StoreError::CommitFailed(msg.to_owned());
    match c {
        Cmd::Commit(_, tx) => drop(tx.send(Err(e()))),
        Cmd::Batch(_, tx) => drop(tx.send(Err(e()))),
        Cmd::Expire(_, _, tx) => drop(tx.send(Err(e()))),
        Cmd::Synced => {}
    }
}
