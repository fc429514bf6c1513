//! `lq6-wal`: SQLite's default VFS, except that the writer's write-ahead-log writes are gathered and
//! handed to the kernel in one `write` per commit.
//!
//! SQLite appends each WAL frame with two writes, the 24-byte frame header and then the page, at
//! offsets that are not page-aligned. On ext4 every such write walks all the buffers of the
//! page-cache folio it lands in: a commit of 30 frames took ~90 µs in 60 system calls, where one
//! write of the same bytes takes ~15 µs. That time is spent on the writer thread, which every
//! durable commit passes through (see `sqlite::Writer`).
//!
//! Only the writer connection uses this VFS, and only its WAL file is wrapped; the database file,
//! journals and every reader are the default VFS's own. The buffer is written out:
//! - when SQLite syncs the WAL. The writer runs with `synchronous=FULL`, so SQLite syncs the WAL
//!   after a commit's last frame and before it publishes the commit in the wal-index, where readers
//!   look: readers never see a frame that is still in the buffer, and a failed write fails the
//!   COMMIT. That commit sync (flags `SQLITE_SYNC_NORMAL`) stops at the write: the store's syncer
//!   thread fsyncs the WAL before any caller is answered, exactly as before. The syncs SQLite needs
//!   for its own safety (before a checkpoint, after a new WAL header) carry `SQLITE_SYNC_FULL`
//!   because the writer sets `checkpoint_fullfsync=ON`, and they are real fsyncs;
//! - before any other operation on the file (read, size, truncate, file control), before a write
//!   that does not continue the buffered bytes, and when the buffer reaches [`MAX_BUFFER`].
//!
//! Bytes still buffered when the write transaction ends belong to a transaction that was rolled
//! back (frames a cache spill wrote): they are dropped, never written. Once the writer has released
//! the WAL write lock, another connection or process may write those very offsets, and writing the
//! dropped frames later would overwrite its commit. The end of the transaction is seen on the
//! database file, where SQLite releases the WAL write lock (`xShmLock`), so the database file is
//! wrapped too (every other method passes straight through).
//!
//! Gathering relies on power-safe overwrite (the default VFS's default): without it SQLite pads a
//! commit to a sector boundary and syncs part-way through its last frame, so the WAL is then passed
//! through unbuffered.
#![allow(unsafe_code)]

use std::cell::Cell;

use std::ffi::{c_int, c_void, CStr};
use std::ptr;
use std::sync::atomic::{AtomicPtr, Ordering};
use std::sync::OnceLock;

use rusqlite::ffi;

/// The VFS name to open the writer connection with.
pub(crate) const NAME: &CStr = c"lq6-wal";

/// Bytes buffered before they are written out even without a sync (a large batch commit).
const MAX_BUFFER: usize = 1 << 20;
/// The largest write the default VFS takes in one call (its `seekAndWriteFd` keeps 17 bits).
const MAX_WRITE: usize = 124 << 10;

/// SQLite's handle of a WAL file opened through this VFS. The default VFS's own handle follows
/// it in the same allocation (at [`HEADER`]).
#[repr(C)]
struct WalFile {
    base: ffi::sqlite3_file,
    real: *mut ffi::sqlite3_file,
    /// Bytes written by SQLite and not yet by the default VFS.
    pending: Vec<u8>,
    /// File offset of `pending[0]`.
    at: i64,
    /// Write through, unbuffered (the file lacks power-safe overwrite, or it is the database).
    direct: bool,
}

thread_local! {
    /// The WAL file whose buffer holds bytes on this thread. SQLite writes a transaction's frames,
    /// and releases its write lock, on the thread that runs the transaction; lq6 runs one write
    /// transaction at a time per thread (the store's writer thread, or `open` before it starts).
    static PENDING: Cell<*mut WalFile> = const { Cell::new(ptr::null_mut()) };
}

/// Where the default VFS's handle starts, aligned for it.
const HEADER: usize = std::mem::size_of::<WalFile>().next_multiple_of(16);

/// The default VFS, set once by [`register`].
static REAL: AtomicPtr<ffi::sqlite3_vfs> = AtomicPtr::new(ptr::null_mut());

/// Register the VFS (once per process). Fails only if SQLite has no default VFS or refuses the
/// registration.
pub(crate) fn register() -> rusqlite::Result<()> {
    static DONE: OnceLock<Result<(), c_int>> = OnceLock::new();
    let done = *DONE.get_or_init(|| {
        // SAFETY: `sqlite3_initialize` and `sqlite3_vfs_find` are safe to call at any time. The
        // registered struct is leaked: SQLite keeps the pointer for the life of the process.
        unsafe {
            let rc = ffi::sqlite3_initialize();
            if rc != ffi::SQLITE_OK {
                return Err(rc);
            }
            let real = ffi::sqlite3_vfs_find(ptr::null());
            if real.is_null() || (*real).xOpen.is_none() {
                return Err(ffi::SQLITE_ERROR);
            }
            REAL.store(real, Ordering::Release);
            // A copy of the default VFS (same pAppData, so its own functions work unchanged on
            // it) with a larger file handle and our xOpen.
            let mut vfs: ffi::sqlite3_vfs = *real;
            vfs.szOsFile = HEADER as c_int + (*real).szOsFile;
            vfs.zName = NAME.as_ptr();
            vfs.pNext = ptr::null_mut();
            vfs.xOpen = Some(open);
            match ffi::sqlite3_vfs_register(Box::into_raw(Box::new(vfs)), 0) {
                ffi::SQLITE_OK => Ok(()),
                rc => Err(rc),
            }
        }
    });
    done.map_err(|rc| {
        rusqlite::Error::SqliteFailure(
            ffi::Error::new(rc),
            Some(format!("cannot register the SQLite VFS {NAME:?}")),
        )
    })
}

unsafe extern "C" fn open(
    _vfs: *mut ffi::sqlite3_vfs,
    name: ffi::sqlite3_filename,
    file: *mut ffi::sqlite3_file,
    flags: c_int,
    out_flags: *mut c_int,
) -> c_int {
    let real_vfs = REAL.load(Ordering::Acquire);
    let Some(real_open) = (*real_vfs).xOpen else {
        return ffi::SQLITE_ERROR;
    };
    let wal = flags & ffi::SQLITE_OPEN_WAL != 0;
    if !wal && flags & ffi::SQLITE_OPEN_MAIN_DB == 0 {
        // Journals, temporary files: the default VFS's handle, in the room we were given (it is
        // larger).
        return real_open(real_vfs, name, file, flags, out_flags);
    }
    (*file).pMethods = ptr::null();
    let real = file.cast::<u8>().add(HEADER).cast::<ffi::sqlite3_file>();
    (*real).pMethods = ptr::null();
    let rc = real_open(real_vfs, name, real, flags, out_flags);
    if rc != ffi::SQLITE_OK {
        if let Some(close) = (*real).pMethods.as_ref().and_then(|m| m.xClose) {
            close(real);
        }
        return rc;
    }
    let powersafe = (*real)
        .pMethods
        .as_ref()
        .and_then(|m| m.xDeviceCharacteristics)
        .is_some_and(|dc| dc(real) & ffi::SQLITE_IOCAP_POWERSAFE_OVERWRITE != 0);
    ptr::write(
        file.cast::<WalFile>(),
        WalFile {
            base: ffi::sqlite3_file {
                pMethods: if wal { &WAL_METHODS } else { &DB_METHODS },
            },
            real,
            pending: Vec::new(),
            at: 0,
            direct: !wal || !powersafe,
        },
    );
    ffi::SQLITE_OK
}

/// The WAL file's methods; the database file differs only in `xShmLock`.
const METHODS: ffi::sqlite3_io_methods = ffi::sqlite3_io_methods {
    iVersion: 3,
    xClose: Some(close),
    xRead: Some(read),
    xWrite: Some(write),
    xTruncate: Some(truncate),
    xSync: Some(sync),
    xFileSize: Some(file_size),
    xLock: Some(lock),
    xUnlock: Some(unlock),
    xCheckReservedLock: Some(check_reserved_lock),
    xFileControl: Some(file_control),
    xSectorSize: Some(sector_size),
    xDeviceCharacteristics: Some(device_characteristics),
    xShmMap: Some(shm_map),
    xShmLock: Some(shm_lock),
    xShmBarrier: Some(shm_barrier),
    xShmUnmap: Some(shm_unmap),
    xFetch: Some(fetch),
    xUnfetch: Some(unfetch),
};

static WAL_METHODS: ffi::sqlite3_io_methods = METHODS;

/// The database file: everything passes through; only the release of the WAL write lock is watched.
static DB_METHODS: ffi::sqlite3_io_methods = ffi::sqlite3_io_methods {
    xShmLock: Some(db_shm_lock),
    ..METHODS
};

/// SAFETY (all below): SQLite calls these only with a handle that `open` initialised as a
/// `WalFile` and has not closed, from one thread at a time.
unsafe fn wal<'a>(f: *mut ffi::sqlite3_file) -> &'a mut WalFile {
    &mut *f.cast::<WalFile>()
}

/// The default VFS's methods for the wrapped handle, if it has `version` of them.
unsafe fn real_methods<'a>(w: &WalFile, version: c_int) -> Option<&'a ffi::sqlite3_io_methods> {
    (*w.real)
        .pMethods
        .as_ref()
        .filter(|m| m.iVersion >= version)
}

/// Hand the buffered bytes to the default VFS. They are dropped even if that fails: they belong
/// to the write transaction that the error now fails.
unsafe fn flush(w: &mut WalFile) -> c_int {
    if w.pending.is_empty() {
        return ffi::SQLITE_OK;
    }
    let Some(write) = real_methods(w, 1).and_then(|m| m.xWrite) else {
        discard(w);
        return ffi::SQLITE_IOERR_WRITE;
    };
    let mut rc = ffi::SQLITE_OK;
    let mut at = w.at;
    for chunk in w.pending.chunks(MAX_WRITE) {
        rc = write(
            w.real,
            chunk.as_ptr().cast::<c_void>(),
            chunk.len() as c_int,
            at,
        );
        if rc != ffi::SQLITE_OK {
            break;
        }
        at += chunk.len() as i64;
    }
    discard(w);
    rc
}

/// Forget the buffered bytes.
fn discard(w: &mut WalFile) {
    w.pending.clear();
    let me: *mut WalFile = w;
    PENDING.with(|p| {
        if p.get() == me {
            p.set(ptr::null_mut());
        }
    });
}

/// Forward a call to the default VFS's handle after writing out the buffer.
macro_rules! flushed {
    ($f:expr, $version:expr, $method:ident, $err:expr, ($($arg:expr),*)) => {{
        let w = wal($f);
        let rc = flush(w);
        if rc != ffi::SQLITE_OK {
            return rc;
        }
        match real_methods(w, $version).and_then(|m| m.$method) {
            Some(call) => call(w.real $(, $arg)*),
            None => $err,
        }
    }};
}

/// Forward a call to the default VFS's handle as it is.
macro_rules! forward {
    ($f:expr, $version:expr, $method:ident, $err:expr, ($($arg:expr),*)) => {{
        let w = wal($f);
        match real_methods(w, $version).and_then(|m| m.$method) {
            Some(call) => call(w.real $(, $arg)*),
            None => $err,
        }
    }};
}

/// Anything still buffered at close belongs to no committed transaction (see the module doc).
unsafe extern "C" fn close(f: *mut ffi::sqlite3_file) -> c_int {
    let w = wal(f);
    discard(w);
    let closed = match real_methods(w, 1).and_then(|m| m.xClose) {
        Some(close) => close(w.real),
        None => ffi::SQLITE_OK,
    };
    ptr::drop_in_place(&mut w.pending);
    w.base.pMethods = ptr::null();
    closed
}

unsafe extern "C" fn write(
    f: *mut ffi::sqlite3_file,
    data: *const c_void,
    amount: c_int,
    offset: i64,
) -> c_int {
    let w = wal(f);
    if w.direct {
        return forward!(
            f,
            1,
            xWrite,
            ffi::SQLITE_IOERR_WRITE,
            (data, amount, offset)
        );
    }
    let Ok(n) = usize::try_from(amount) else {
        return ffi::SQLITE_IOERR_WRITE;
    };
    if n == 0 {
        return ffi::SQLITE_OK;
    }
    if !w.pending.is_empty() && offset != w.at + w.pending.len() as i64 {
        let rc = flush(w);
        if rc != ffi::SQLITE_OK {
            return rc;
        }
    }
    if w.pending.is_empty() {
        w.at = offset;
    }
    w.pending
        .extend_from_slice(std::slice::from_raw_parts(data.cast::<u8>(), n));
    let me: *mut WalFile = w;
    PENDING.with(|p| p.set(me));
    if w.pending.len() >= MAX_BUFFER {
        return flush(w);
    }
    ffi::SQLITE_OK
}

/// A commit's sync (`SQLITE_SYNC_NORMAL`) only writes the buffer out; the syncer thread fsyncs.
/// A `SQLITE_SYNC_FULL` sync (before a checkpoint, after a WAL header) is a real one.
unsafe extern "C" fn sync(f: *mut ffi::sqlite3_file, flags: c_int) -> c_int {
    let w = wal(f);
    let rc = flush(w);
    if rc != ffi::SQLITE_OK || (!w.direct && flags & 0x03 != ffi::SQLITE_SYNC_FULL) {
        return rc;
    }
    forward!(f, 1, xSync, ffi::SQLITE_IOERR_FSYNC, (flags))
}

unsafe extern "C" fn read(
    f: *mut ffi::sqlite3_file,
    buf: *mut c_void,
    amount: c_int,
    offset: i64,
) -> c_int {
    flushed!(f, 1, xRead, ffi::SQLITE_IOERR_READ, (buf, amount, offset))
}

unsafe extern "C" fn truncate(f: *mut ffi::sqlite3_file, size: i64) -> c_int {
    flushed!(f, 1, xTruncate, ffi::SQLITE_IOERR_TRUNCATE, (size))
}

unsafe extern "C" fn file_size(f: *mut ffi::sqlite3_file, size: *mut i64) -> c_int {
    flushed!(f, 1, xFileSize, ffi::SQLITE_IOERR_FSTAT, (size))
}

unsafe extern "C" fn file_control(f: *mut ffi::sqlite3_file, op: c_int, arg: *mut c_void) -> c_int {
    flushed!(f, 1, xFileControl, ffi::SQLITE_NOTFOUND, (op, arg))
}

unsafe extern "C" fn lock(f: *mut ffi::sqlite3_file, level: c_int) -> c_int {
    forward!(f, 1, xLock, ffi::SQLITE_IOERR_LOCK, (level))
}

unsafe extern "C" fn unlock(f: *mut ffi::sqlite3_file, level: c_int) -> c_int {
    forward!(f, 1, xUnlock, ffi::SQLITE_IOERR_UNLOCK, (level))
}

unsafe extern "C" fn check_reserved_lock(f: *mut ffi::sqlite3_file, out: *mut c_int) -> c_int {
    forward!(
        f,
        1,
        xCheckReservedLock,
        ffi::SQLITE_IOERR_CHECKRESERVEDLOCK,
        (out)
    )
}

unsafe extern "C" fn sector_size(f: *mut ffi::sqlite3_file) -> c_int {
    forward!(f, 1, xSectorSize, 4096, ())
}

unsafe extern "C" fn device_characteristics(f: *mut ffi::sqlite3_file) -> c_int {
    forward!(f, 1, xDeviceCharacteristics, 0, ())
}

unsafe extern "C" fn shm_map(
    f: *mut ffi::sqlite3_file,
    region: c_int,
    size: c_int,
    extend: c_int,
    out: *mut *mut c_void,
) -> c_int {
    forward!(
        f,
        2,
        xShmMap,
        ffi::SQLITE_IOERR_SHMMAP,
        (region, size, extend, out)
    )
}

unsafe extern "C" fn shm_lock(
    f: *mut ffi::sqlite3_file,
    offset: c_int,
    n: c_int,
    flags: c_int,
) -> c_int {
    forward!(
        f,
        2,
        xShmLock,
        ffi::SQLITE_IOERR_SHMLOCK,
        (offset, n, flags)
    )
}

/// WAL write lock (`WAL_WRITE_LOCK` in SQLite's wal.c): shm lock slot 0.
const WAL_WRITE_LOCK: c_int = 0;

/// On the database file: when the WAL write lock is released, the transaction is over, and
/// anything its WAL still buffers was rolled back (a committed one was written out by its sync).
unsafe extern "C" fn db_shm_lock(
    f: *mut ffi::sqlite3_file,
    offset: c_int,
    n: c_int,
    flags: c_int,
) -> c_int {
    if offset == WAL_WRITE_LOCK && flags & ffi::SQLITE_SHM_UNLOCK != 0 {
        let pending = PENDING.with(|p| p.get());
        if let Some(w) = pending.as_mut() {
            discard(w);
        }
    }
    shm_lock(f, offset, n, flags)
}

unsafe extern "C" fn shm_barrier(f: *mut ffi::sqlite3_file) {
    forward!(f, 2, xShmBarrier, (), ())
}

unsafe extern "C" fn shm_unmap(f: *mut ffi::sqlite3_file, delete: c_int) -> c_int {
    forward!(f, 2, xShmUnmap, ffi::SQLITE_OK, (delete))
}

unsafe extern "C" fn fetch(
    f: *mut ffi::sqlite3_file,
    offset: i64,
    amount: c_int,
    out: *mut *mut c_void,
) -> c_int {
    // No mapping: SQLite then reads the page with xRead.
    *out = ptr::null_mut();
    flushed!(f, 3, xFetch, ffi::SQLITE_OK, (offset, amount, out))
}

unsafe extern "C" fn unfetch(f: *mut ffi::sqlite3_file, offset: i64, page: *mut c_void) -> c_int {
    forward!(f, 3, xUnfetch, ffi::SQLITE_OK, (offset, page))
}

#[cfg(test)]
mod tests {
    use rusqlite::{Connection, OpenFlags};

    fn integrity(path: &std::path::Path) -> (String, i64) {
        let c = Connection::open(path).unwrap();
        let ok = c
            .query_row("PRAGMA integrity_check", [], |r| r.get(0))
            .unwrap_or_else(|e| e.to_string());
        let n = c
            .query_row("SELECT count(*) FROM t", [], |r| r.get(0))
            .unwrap_or(-1);
        (ok, n)
    }

    /// Frames a cache spill buffered for a transaction that is then rolled back are dropped, not
    /// written later over frames another connection committed at the same offsets meanwhile.
    #[test]
    fn rolled_back_frames_never_reach_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.db");
        Connection::open(&path)
            .unwrap()
            .execute_batch(
                "PRAGMA journal_mode=WAL; CREATE TABLE t(k INTEGER PRIMARY KEY, v BLOB);",
            )
            .unwrap();
        super::register().unwrap();
        let w = Connection::open_with_flags_and_vfs(
            &path,
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
            super::NAME,
        )
        .unwrap();
        // A tiny cache, so that the big transaction below spills frames into the WAL.
        w.execute_batch(
            "PRAGMA synchronous=FULL; PRAGMA checkpoint_fullfsync=ON; PRAGMA cache_size=20;
             PRAGMA wal_autocheckpoint=0; INSERT INTO t VALUES (1, zeroblob(100));",
        )
        .unwrap();
        w.execute_batch(
            "BEGIN; WITH RECURSIVE s(i) AS (SELECT 1 UNION ALL SELECT i+1 FROM s WHERE i<200)
             INSERT INTO t SELECT i+100, randomblob(3000) FROM s; ROLLBACK;",
        )
        .unwrap();
        // Another connection (another process, in production) commits into the same offsets.
        Connection::open(&path)
            .unwrap()
            .execute_batch(
                "PRAGMA wal_autocheckpoint=0; WITH RECURSIVE s(i) AS (SELECT 1 UNION ALL SELECT i+1
                 FROM s WHERE i<5) INSERT INTO t SELECT i+1000, randomblob(3000) FROM s;",
            )
            .unwrap();
        assert_eq!(integrity(&path), ("ok".to_owned(), 6));
        // The writer's next transaction, and its close, must not write the dropped frames.
        w.execute_batch("INSERT INTO t VALUES (2, zeroblob(10));")
            .unwrap();
        assert_eq!(integrity(&path), ("ok".to_owned(), 7));
        drop(w);
        assert_eq!(integrity(&path), ("ok".to_owned(), 7));
    }
}
