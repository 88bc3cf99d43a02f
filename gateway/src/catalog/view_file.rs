//! The view file's storage for redb: its own file backend, plus direct writes while a bulk
//! load writes the whole view.
//!
//! A bulk load writes gigabytes once (3.7 GB at 10M sessions) and reads almost none of it
//! back. Through the page cache each gigabyte cost ~1.6 s of kernel CPU on the machine the
//! figures come from, the kernel taking a fresh page for every 4 KiB, against ~0.2 s written
//! with `O_DIRECT`. redb hands its pages over one at a time and in no particular order at each
//! commit, so while a bulk load runs they are gathered in offset order and written in batches
//! by a thread of their own, contiguous pages as one aligned write; the writer never waits for
//! the disk unless a whole batch is still being written.
//!
//! Everything else (reads, writes outside a bulk load, a file system without `O_DIRECT`) goes
//! through redb's own file backend, which also holds the file's lock.

use std::collections::BTreeMap;
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;

use redb::StorageBackend;
use redb::backends::FileBackend;
use tracing::warn;

/// What direct writes are aligned to, in memory and in the file: the largest logical block
/// size of common devices, and redb's page.
const ALIGN: usize = 4096;

/// Pages gathered before they go to the writing thread as one batch: with the batch being
/// written and the aligned buffer, ~2.5 MiB while a bulk load runs. Batches of 512 KiB left
/// a 10M sessions build's write phase 21.7 s long against 16.1 s (a run each).
const BATCH_BYTES: usize = 1024 * 1024;

/// The most one direct write takes (longer contiguous stretches are written in pieces).
const WRITE_BYTES: usize = 512 * 1024;

/// Shorter stretches are written through the page cache: they are mostly the B-tree's branch
/// pages, which redb reads back at its next commit, and a direct write would leave them to be
/// read from the disk.
const DIRECT_MIN_BYTES: usize = 64 * 1024;

/// Offset -> page.
type Pages = BTreeMap<u64, Vec<u8>>;

/// redb's backend for a view file.
#[derive(Debug)]
pub struct ViewFile {
    file: FileBackend,
    direct: Option<Arc<DirectWrites>>,
}

impl ViewFile {
    /// Opens (creating it if need be) and locks the file at `path`. Direct writes are available
    /// where the file system takes `O_DIRECT`.
    pub fn open(path: &Path) -> Result<ViewFile, redb::DatabaseError> {
        let file = File::options()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)?;
        let file = FileBackend::new(file)?;
        let direct = match (open_direct(path), File::options().write(true).open(path)) {
            (Ok(direct), Ok(buffered)) => Some(Arc::new(DirectWrites {
                shared: Arc::new(Shared {
                    direct,
                    buffered,
                    direct_refused: AtomicBool::new(false),
                    state: Mutex::new(State::default()),
                    changed: Condvar::new(),
                }),
                writing: Mutex::new(None),
            })),
            _ => None,
        };
        Ok(ViewFile { file, direct })
    }

    /// The switch for direct writes, `None` where the file system does not take them.
    pub fn direct_writes(&self) -> Option<Arc<DirectWrites>> {
        self.direct.clone()
    }

    fn write_held(&self) -> io::Result<()> {
        match &self.direct {
            Some(direct) => direct.shared.write_held(),
            None => Ok(()),
        }
    }
}

#[cfg(target_os = "linux")]
fn open_direct(path: &Path) -> io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    let flags = i32::try_from(rustix::fs::OFlags::DIRECT.bits())
        .map_err(|_| io::Error::from(io::ErrorKind::Unsupported))?;
    File::options().write(true).custom_flags(flags).open(path)
}

#[cfg(not(target_os = "linux"))]
fn open_direct(_path: &Path) -> io::Result<File> {
    Err(io::ErrorKind::Unsupported.into())
}

impl StorageBackend for ViewFile {
    fn len(&self) -> io::Result<u64> {
        self.file.len()
    }

    fn read(&self, offset: u64, out: &mut [u8]) -> io::Result<()> {
        if let Some(direct) = &self.direct
            && direct.shared.read_held(offset, out)?
        {
            return Ok(());
        }
        self.file.read(offset, out)
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        self.write_held()?;
        self.file.set_len(len)
    }

    fn sync_data(&self) -> io::Result<()> {
        self.write_held()?;
        self.file.sync_data()
    }

    fn write(&self, offset: u64, data: &[u8]) -> io::Result<()> {
        if let Some(direct) = &self.direct
            && direct.shared.hold(offset, data)?
        {
            return Ok(());
        }
        self.file.write(offset, data)
    }

    fn close(&self) -> io::Result<()> {
        self.write_held()?;
        self.file.close()
    }
}

/// Direct writes of a view file: on from `begin` to `end`.
#[derive(Debug)]
pub struct DirectWrites {
    shared: Arc<Shared>,
    writing: Mutex<Option<JoinHandle<()>>>,
}

impl DirectWrites {
    /// Writes go direct from now on, until `end`.
    pub fn begin(&self) -> io::Result<()> {
        let mut writing = lock(&self.writing)?;
        if writing.is_some() {
            return Ok(());
        }
        let shared = Arc::clone(&self.shared);
        *writing = Some(
            std::thread::Builder::new()
                .name("view-writes".into())
                .spawn(move || shared.write_batches())?,
        );
        self.shared.state()?.active = true;
        Ok(())
    }

    /// Writes go through the page cache again, once everything held back is written.
    pub fn end(&self) -> io::Result<()> {
        let Some(writing) = lock(&self.writing)?.take() else {
            return Ok(());
        };
        let written = self.shared.write_held();
        {
            let mut state = lock(&self.shared.state)?;
            state.active = false;
            state.stopping = true;
        }
        self.shared.changed.notify_all();
        let joined = writing
            .join()
            .map_err(|_| io::Error::other("the view's writing thread panicked"));
        lock(&self.shared.state)?.stopping = false;
        written.and(joined)
    }
}

impl Drop for DirectWrites {
    fn drop(&mut self) {
        if let Err(err) = self.end() {
            warn!("writing the catalog view: {err}");
        }
    }
}

#[derive(Debug)]
struct Shared {
    /// The view file opened with `O_DIRECT`, and plainly, for short stretches.
    direct: File,
    buffered: File,
    direct_refused: AtomicBool,
    state: Mutex<State>,
    /// Signalled whenever a batch is handed over or written, and to stop.
    changed: Condvar,
}

#[derive(Debug, Default)]
struct State {
    active: bool,
    stopping: bool,
    /// Pages redb was told were written may not have been: every later use of the file fails,
    /// as redb makes it after a failed write of its own.
    failed: bool,
    /// Pages gathered for the next batch, and their bytes.
    held: Pages,
    held_bytes: usize,
    /// The batch being written, readable until it is.
    in_flight: Option<Arc<Pages>>,
}

impl Shared {
    fn state(&self) -> io::Result<MutexGuard<'_, State>> {
        unless_failed(lock(&self.state)?)
    }

    fn wait<'a>(&'a self, state: MutexGuard<'a, State>) -> io::Result<MutexGuard<'a, State>> {
        let state = self
            .changed
            .wait(state)
            .map_err(|_| io::Error::other("a direct write panicked"))?;
        unless_failed(state)
    }

    /// Holds back a write of `data` at `offset` if writes go direct and it is aligned; else
    /// writes out everything held back (it may overlap) and leaves the write to the caller.
    fn hold(&self, offset: u64, data: &[u8]) -> io::Result<bool> {
        let mut state = self.state()?;
        let aligned = offset.is_multiple_of(ALIGN as u64) && data.len().is_multiple_of(ALIGN);
        if !state.active || !aligned {
            self.until_written(state)?;
            return Ok(false);
        }
        // A page held at another offset that overlaps this one (redb reuses freed space for
        // pages of another size) must be written first: batches are written in order.
        let replaces = state
            .held
            .get(&offset)
            .is_some_and(|page| page.len() == data.len());
        if !replaces && overlapping(&state.held, offset, data.len()).is_some() {
            state = self.hand_over(state)?;
        }
        state.held_bytes += data.len();
        if let Some(replaced) = state.held.insert(offset, data.to_vec()) {
            state.held_bytes -= replaced.len();
        }
        if state.held_bytes >= BATCH_BYTES {
            drop(self.hand_over(state)?);
        }
        Ok(true)
    }

    /// Reads into `out` from a page held back or being written, if one holds all of it (redb
    /// reads back the branch pages it wrote at its last commit). A read that only overlaps
    /// them waits until they are written, and is left to the caller.
    fn read_held(&self, offset: u64, out: &mut [u8]) -> io::Result<bool> {
        let state = self.state()?;
        let batches = [Some(&state.held), state.in_flight.as_deref()];
        let Some((start, page)) = batches
            .into_iter()
            .flatten()
            .find_map(|pages| overlapping(pages, offset, out.len()))
        else {
            return Ok(false);
        };
        let from = usize::try_from(offset.saturating_sub(start)).unwrap_or(usize::MAX);
        if offset >= start
            && let Some(held) = page.get(from..from.saturating_add(out.len()))
        {
            out.copy_from_slice(held);
            return Ok(true);
        }
        self.until_written(state)?;
        Ok(false)
    }

    fn write_held(&self) -> io::Result<()> {
        let state = self.state()?;
        self.until_written(state)
    }

    /// Hands the pages held back to the writing thread as the next batch, once the one before
    /// is written.
    fn hand_over<'a>(
        &'a self,
        mut state: MutexGuard<'a, State>,
    ) -> io::Result<MutexGuard<'a, State>> {
        while state.in_flight.is_some() {
            state = self.wait(state)?;
        }
        if !state.held.is_empty() {
            state.in_flight = Some(Arc::new(std::mem::take(&mut state.held)));
            state.held_bytes = 0;
            self.changed.notify_all();
        }
        Ok(state)
    }

    /// Waits until everything held back is written.
    fn until_written(&self, state: MutexGuard<'_, State>) -> io::Result<()> {
        let mut state = self.hand_over(state)?;
        while state.in_flight.is_some() {
            state = self.wait(state)?;
        }
        Ok(())
    }

    /// The writing thread: each batch in offset order, until told to stop.
    fn write_batches(&self) {
        let mut buffer = vec![0u8; WRITE_BYTES + ALIGN];
        let skew = buffer.as_ptr().align_offset(ALIGN);
        let buffer = &mut buffer[skew..skew + WRITE_BYTES];
        loop {
            let batch = {
                let Ok(mut state) = lock(&self.state) else {
                    return;
                };
                loop {
                    if let Some(batch) = &state.in_flight {
                        break Arc::clone(batch);
                    }
                    if state.stopping || state.failed {
                        return;
                    }
                    let Ok(next) = self.changed.wait(state) else {
                        return;
                    };
                    state = next;
                }
            };
            let written = self.write_batch(&batch, buffer);
            drop(batch);
            let Ok(mut state) = lock(&self.state) else {
                return;
            };
            if let Err(err) = written {
                warn!("writing the catalog view: {err}");
                state.failed = true;
            }
            // Its pages are freed once the lock is let go.
            let done = state.in_flight.take();
            self.changed.notify_all();
            drop(state);
            drop(done);
        }
    }

    /// Writes `pages`, contiguous ones together through `buffer`.
    fn write_batch(&self, pages: &Pages, buffer: &mut [u8]) -> io::Result<()> {
        let mut stretch_start = 0u64;
        let mut filled = 0usize;
        for (&offset, page) in pages {
            let mut piece_offset = offset;
            for piece in page.chunks(buffer.len()) {
                let contiguous = stretch_start + filled as u64 == piece_offset;
                if filled > 0 && (!contiguous || filled + piece.len() > buffer.len()) {
                    self.write_stretch(&buffer[..filled], stretch_start)?;
                    filled = 0;
                }
                if filled == 0 {
                    stretch_start = piece_offset;
                }
                buffer[filled..filled + piece.len()].copy_from_slice(piece);
                filled += piece.len();
                piece_offset += piece.len() as u64;
            }
        }
        if filled > 0 {
            self.write_stretch(&buffer[..filled], stretch_start)?;
        }
        Ok(())
    }

    fn write_stretch(&self, stretch: &[u8], offset: u64) -> io::Result<()> {
        if stretch.len() >= DIRECT_MIN_BYTES && !self.direct_refused.load(Ordering::Relaxed) {
            match self.direct.write_all_at(stretch, offset) {
                // A file system that opens files for direct I/O yet wants another alignment.
                Err(err) if err.kind() == io::ErrorKind::InvalidInput => {
                    warn!("writing the catalog view through the page cache: {err}");
                    self.direct_refused.store(true, Ordering::Relaxed);
                }
                written => return written,
            }
        }
        self.buffered.write_all_at(stretch, offset)
    }
}

/// The page of `pages` that overlaps `len` bytes at `offset`, if any (the pages do not overlap
/// one another).
fn overlapping(pages: &Pages, offset: u64, len: usize) -> Option<(u64, &Vec<u8>)> {
    let end = offset.saturating_add(len as u64);
    let (&start, page) = pages.range(..end).next_back()?;
    (start + page.len() as u64 > offset).then_some((start, page))
}

/// `state`, unless an earlier direct write failed.
fn unless_failed(state: MutexGuard<'_, State>) -> io::Result<MutexGuard<'_, State>> {
    if state.failed {
        return Err(io::Error::other(
            "an earlier direct write to the catalog view failed",
        ));
    }
    Ok(state)
}

fn lock<T>(mutex: &Mutex<T>) -> io::Result<MutexGuard<'_, T>> {
    mutex
        .lock()
        .map_err(|_| io::Error::other("a direct write panicked"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Writes in every shape redb could make (aligned and not, overlapping, rewritten, in no
    /// order), reads between them, and the file always reads as the same writes applied in
    /// order to a plain buffer.
    #[test]
    fn the_file_reads_as_its_writes_in_order() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("view.redb");
        let file = ViewFile::open(&path).expect("open");
        let Some(direct) = file.direct_writes() else {
            // Only file systems that take O_DIRECT have anything to test here.
            return;
        };
        const LEN: usize = 256 * ALIGN;
        file.set_len(LEN as u64).expect("set_len");
        let mut expected = vec![0u8; LEN];
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = |bound: usize| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            (seed % bound as u64) as usize
        };
        direct.begin().expect("begin");
        for round in 0..20_000 {
            let (offset, len) = match next(5) {
                0 => (next(LEN - 100), 1 + next(99)),
                1 => (next(256) * ALIGN, ALIGN),
                2 => (next(253) * ALIGN, ALIGN << next(3)),
                3 => (next(128) * ALIGN * 2, 2 * ALIGN),
                // Long contiguous stretches, written direct.
                _ => (next(192) * ALIGN, 32 * ALIGN),
            };
            let byte = (round % 251) as u8 + 1;
            file.write(offset as u64, &vec![byte; len]).expect("write");
            expected[offset..offset + len].fill(byte);
            if next(4) == 0 {
                let offset = next(LEN - ALIGN);
                let len = 1 + next(ALIGN);
                let mut read = vec![0u8; len];
                file.read(offset as u64, &mut read).expect("read");
                assert_eq!(read, expected[offset..offset + len], "round {round}");
            }
            if round == 10_000 {
                direct.end().expect("end");
                direct.begin().expect("begin");
            }
        }
        file.sync_data().expect("sync");
        direct.end().expect("end");
        assert_eq!(std::fs::read(&path).expect("read back"), expected);
    }
}
