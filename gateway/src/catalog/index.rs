//! The catalog view on local disk: every session's newest header, sorted by id, and postings
//! (the archived flag, the tenant, each string metadata pair) so a filtered page is a seek per
//! filter plus the matches it walks. Both are kept in blocks of many entries (`blocks`), which
//! is what lets a fresh view be written at the speed of its bytes. A materialised view of the sessions bucket's stream: it
//! records which bucket it was built from and the last revision applied, and is thrown away
//! and built anew whenever either stops matching the bucket.
//!
//! Memory is the store's bounded page cache, whatever the number of sessions.

use std::collections::{BTreeMap, HashMap};
use std::ops::Bound;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::mpsc::SyncSender;

use redb::{Database, DatabaseError, Durability, ReadableDatabase, ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tracing::warn;

use super::blocks::{self, Block, BlockBuilder, BlockError, BlockTable, Cursor};
use super::fields::IndexedFields;
use super::runs::SortedRuns;
use super::view_file::{DirectWrites, ViewFile};
use crate::nats::BucketSource;
use crate::sessions::model::{Change, Session, SessionId, SessionRecord};

/// Bumped whenever the layout below changes: a view of another format is built anew.
const FORMAT: u32 = 2;

/// Gateways that can share one directory, each with its own view file.
const SLOTS: usize = 16;

/// The store's page cache: the view's only memory that depends on what it holds.
const CACHE_BYTES: usize = 8 * 1024 * 1024;

/// What a bulk load's sorts gather in memory before writing a sorted run to disk.
const RUN_BYTES: usize = 8 * 1024 * 1024;

/// What a bulk load's open posting chunks may hold before they all go to their sort.
const OPEN_CHUNKS_BYTES: usize = 4 * 1024 * 1024;

/// Blocks a bulk load inserts per transaction: in key order each only appends at the tree's
/// right edge, so this bounds the dirty pages held until the commit. They must fit redb's
/// write buffer, a tenth of its cache: at 512 blocks (2 MiB) pages spilled and were read and
/// written again, 40 % more bytes written while building.
///
/// One in 512 of those commits (~400 MiB of blocks) is durable: until one, redb keeps every
/// page written since the last in a set in memory, which at 10M sessions (3.7 GB) reached
/// 41 MB. Each waits 20–120 ms, as the view file is flushed meanwhile (`FLUSH_EVERY`): at 10M
/// sessions 17 of them took 1 s in all.
const BULK_COMMITS: CommitEvery = CommitEvery {
    blocks: CACHE_BYTES / 10 / PAGE_BYTES / 2,
    durable: 512,
};

/// redb's page, which a block fills.
const PAGE_BYTES: usize = 4096;

/// How often a bulk load sends what it wrote so far to disk.
const FLUSH_EVERY: std::time::Duration = std::time::Duration::from_millis(500);

/// Blocks a bulk load's merge hands to the writer at a time: one wake-up of the writer per
/// block was a seventh of the merge's time.
const BLOCKS_PER_HANDOVER: usize = 64;

/// Handovers of blocks the merge may have ready before the writer takes them.
const HANDOVERS_QUEUED: usize = 4;

/// Postings the headers' merge hands to the postings' at a time, as (list, id) parts, and how
/// many such batches may wait.
const POSTING_BATCH_BYTES: usize = 64 * 1024;
const POSTING_BATCHES_QUEUED: usize = 4;

/// A posting list's ids gathered by a bulk load before they go to a sorted run as one chunk.
const POSTING_CHUNK_BYTES: usize = 4096;

/// Id -> the session header as JSON (as the bucket stores it, from a bulk load).
const SESSIONS: BlockTable = TableDefinition::new("sessions");
/// Posting prefix + id -> nothing: one entry per (filter value, session).
const POSTINGS: BlockTable = TableDefinition::new("postings");
/// `state` -> `ViewState` as JSON.
const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");
const STATE: &str = "state";

/// The first byte of a posting key: which filter it serves.
const ARCHIVED_FLAG: u8 = 0;
const TENANT: u8 = 1;
const METADATA_PAIR: u8 = 2;

/// Which sessions a list shows by their archived flag.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ArchivedFilter {
    #[default]
    Active,
    Archived,
    All,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListQuery {
    /// 1 to `sessions::limits::MAX_PAGE_SIZE`.
    pub limit: usize,
    /// Only ids strictly greater than this.
    pub after: Option<String>,
    /// `(key, value)` pairs that must all equal a string metadata value.
    pub metadata: Vec<(String, String)>,
    pub archived: ArchivedFilter,
    /// Only this tenant's sessions (`None`: every session, authentication off).
    pub tenant: Option<String>,
    /// Only this session (a token pinned to one).
    pub only: Option<SessionId>,
    /// An id prefix or part of a title, case-insensitive (the admin console's search box).
    /// It is checked on every candidate, so a search walks the catalog: an operator's tool.
    pub search: Option<String>,
}

/// A page of sessions in id order, as the view held them at one revision.
#[derive(Debug)]
pub struct Page {
    pub sessions: Vec<Session>,
    /// Whether more sessions match after the page.
    pub more: bool,
    /// The bucket revision the view had applied when the page was read.
    pub applied: u64,
}

/// What the view holds, stored with it and changed in the same transactions as its sessions.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ViewState {
    format: u32,
    /// The bucket it is a view of; `None` for a view never built.
    pub source: Option<BucketSource>,
    /// The newest bucket revision applied.
    pub applied: u64,
    /// False until a fresh view's replay has caught up with the bucket once: until then it
    /// lags far behind, and lists answer `catalog_loading` instead of waiting for it.
    pub complete: bool,
    pub sessions: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum ViewError {
    #[error(
        "every catalog view file in {0} is in use by another gateway (at most {SLOTS} share a \
         directory); give this one its own STARCITE_CATALOG_DIR"
    )]
    AllInUse(PathBuf),
    #[error("catalog view {path}: {source}")]
    Storage { path: PathBuf, source: redb::Error },
    #[error("catalog view {path}: cannot create it: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("catalog view {0}: a stored header is unreadable")]
    Corrupt(PathBuf),
    #[error("the stored header of session {id} is unreadable: {reason}")]
    UnreadableHeader { id: String, reason: String },
    #[error("catalog view work was interrupted: {0}")]
    Interrupted(String),
}

/// One gateway's view file, locked for as long as it is open.
#[derive(Clone)]
pub struct CatalogIndex {
    database: Arc<Database>,
    /// What a bulk load writes goes direct to disk, where the file system allows it.
    direct_writes: Option<Arc<DirectWrites>>,
    path: PathBuf,
}

impl CatalogIndex {
    /// Opens the first view file in `dir` that no other gateway holds (`<name>-<slot>.redb`);
    /// one that cannot be read is deleted and created empty. Any view of the same bucket
    /// serves any gateway, so which slot a gateway gets does not matter.
    pub fn open(dir: &Path, name: &str) -> Result<CatalogIndex, ViewError> {
        std::fs::create_dir_all(dir).map_err(|source| ViewError::Io {
            path: dir.to_owned(),
            source,
        })?;
        for slot in 0..SLOTS {
            let path = dir.join(format!("{name}-{slot}.redb"));
            let (database, direct_writes) = match open_file(&path) {
                Ok(opened) => opened,
                // Another gateway holds it: the file lock is the whole protocol.
                Err(redb::Error::DatabaseAlreadyOpen) => continue,
                Err(err) => {
                    warn!(
                        catalog.view = %path.display(),
                        "catalog view {} is unreadable ({err}); building it anew",
                        path.display()
                    );
                    std::fs::remove_file(&path).map_err(|source| ViewError::Io {
                        path: path.clone(),
                        source,
                    })?;
                    open_file(&path).map_err(|source| ViewError::Storage {
                        path: path.clone(),
                        source,
                    })?
                }
            };
            return Ok(CatalogIndex {
                database: Arc::new(database),
                direct_writes,
                path,
            });
        }
        Err(ViewError::AllInUse(dir.to_owned()))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn storage(&self) -> impl Fn(redb::Error) -> ViewError + '_ {
        |source| ViewError::Storage {
            path: self.path.clone(),
            source,
        }
    }

    fn view_error(&self) -> impl Fn(BlockError) -> ViewError + '_ {
        |err| match err {
            BlockError::Storage(source) => self.storage()(source),
            BlockError::Corrupt => ViewError::Corrupt(self.path.clone()),
        }
    }

    /// What the view holds; a view of another format reads as never built.
    pub fn state(&self) -> Result<ViewState, ViewError> {
        let read = || -> Result<ViewState, redb::Error> {
            let transaction = self.database.begin_read()?;
            Ok(read_state(&transaction.open_table(META)?)?)
        };
        read().map_err(self.storage())
    }

    /// Empties the view and starts a fresh build from `source`.
    pub fn reset(&self, source: BucketSource) -> Result<ViewState, ViewError> {
        let state = ViewState {
            format: FORMAT,
            source: Some(source),
            ..ViewState::default()
        };
        let reset = || -> Result<(), redb::Error> {
            let transaction = self.database.begin_write()?;
            transaction.delete_table(SESSIONS)?;
            transaction.delete_table(POSTINGS)?;
            transaction.open_table(SESSIONS)?;
            transaction.open_table(POSTINGS)?;
            write_state(&mut transaction.open_table(META)?, &state)?;
            transaction.commit()?;
            Ok(())
        };
        reset().map_err(self.storage())?;
        Ok(state)
    }

    /// Starts a fresh view's bulk load: the view is emptied (an interrupted bulk load starts
    /// over) and the sorted runs go to a directory next to the view file.
    pub fn bulk_load(&self, source: BucketSource) -> Result<BulkLoad, ViewError> {
        let mut build_dir = self.path.clone().into_os_string();
        build_dir.push(".build");
        let build_dir = PathBuf::from(build_dir);
        let io_error = |source| ViewError::Io {
            path: build_dir.clone(),
            source,
        };
        match std::fs::remove_dir_all(&build_dir) {
            Err(err) if err.kind() != std::io::ErrorKind::NotFound => return Err(io_error(err)),
            _ => {}
        }
        std::fs::create_dir_all(&build_dir).map_err(io_error)?;
        self.reset(source)?;
        Ok(BulkLoad {
            sessions: SortedRuns::new(&build_dir, "sessions", RUN_BYTES),
            index: self.clone(),
            build_dir,
            run_bytes: RUN_BYTES,
            open_chunk_bytes: OPEN_CHUNKS_BYTES,
            commit_every: BULK_COMMITS,
        })
    }

    /// Applies `records` (header versions in bucket order; a tombstone removes its session) up
    /// to revision `through` in one transaction. A commit that is not `durable` is lost by a
    /// crash, and the view then resumes from an earlier revision: it only costs re-reading.
    pub fn apply(
        &self,
        records: &[SessionRecord],
        through: u64,
        complete: bool,
        durable: bool,
    ) -> Result<ViewState, ViewError> {
        let apply = || -> Result<ViewState, BlockError> {
            let mut transaction = self.database.begin_write()?;
            if durable {
                transaction.set_quick_repair(true);
            } else {
                transaction.set_durability(Durability::None)?;
            }
            let state = {
                let mut meta = transaction.open_table(META)?;
                let mut state = read_state(&meta)?;
                // Each session's newest version in the batch, in id order, as the blocks take
                // their changes.
                let newest: BTreeMap<&str, &SessionRecord> = records
                    .iter()
                    .map(|record| (record.session.id.as_str(), record))
                    .collect();
                let headers = newest
                    .values()
                    .map(|record| {
                        let header = (record.change != Change::Deleted)
                            // Plain strings, numbers and maps always serialize.
                            .then(|| serde_json::to_vec(&record.session).unwrap_or_default());
                        (record.session.id.as_str().as_bytes().to_vec(), header)
                    })
                    .collect();
                let previous = blocks::apply(&mut transaction.open_table(SESSIONS)?, headers)?;
                // Stale postings go, unless the new header has them too.
                let mut postings = BTreeMap::new();
                for (record, previous) in newest.values().zip(previous) {
                    let deleted = record.change == Change::Deleted;
                    match previous {
                        None if deleted => {}
                        None => state.sessions += 1,
                        Some(previous) => {
                            let previous = serde_json::from_slice::<Session>(&previous)
                                .map_err(|_| BlockError::Corrupt)?;
                            if deleted {
                                state.sessions = state.sessions.saturating_sub(1);
                            }
                            postings
                                .extend(postings_of(&previous).into_iter().map(|key| (key, None)));
                        }
                    }
                    if !deleted {
                        postings.extend(
                            postings_of(&record.session)
                                .into_iter()
                                .map(|key| (key, Some(Vec::new()))),
                        );
                    }
                }
                blocks::apply(
                    &mut transaction.open_table(POSTINGS)?,
                    postings.into_iter().collect(),
                )?;
                state.applied = state.applied.max(through);
                state.complete = complete;
                write_state(&mut meta, &state)?;
                state
            };
            transaction.commit()?;
            Ok(state)
        };
        apply().map_err(self.view_error())
    }

    /// The header the view holds for `id`.
    pub fn get(&self, id: &SessionId) -> Result<Option<Session>, ViewError> {
        let read = || -> Result<Option<Session>, BlockError> {
            let transaction = self.database.begin_read()?;
            let sessions = transaction.open_table(SESSIONS)?;
            blocks::get(&sessions, id.as_str().as_bytes())?
                .map(|header| decode_header(&header))
                .transpose()
        };
        read().map_err(self.view_error())
    }

    /// One page in id order.
    ///
    /// Candidates are the ids every applicable posting list holds (a leapfrog join: each list
    /// seeks to the largest id another proposed), so the cost is a seek per filter and match,
    /// whichever filter is the narrowest.
    pub fn page(&self, query: &ListQuery) -> Result<Page, ViewError> {
        let read = || -> Result<Page, BlockError> {
            let transaction = self.database.begin_read()?;
            let applied = read_state(&transaction.open_table(META)?)?.applied;
            let sessions = transaction.open_table(SESSIONS)?;
            let postings = transaction.open_table(POSTINGS)?;
            // A cursor per table and list read: each step of the page goes on from the last.
            let mut lists: Vec<(Vec<u8>, Cursor)> = posting_prefixes(query)
                .into_iter()
                .map(|list| (list, Cursor::default()))
                .collect();
            let mut headers = Cursor::default();
            let mut after = query.after.clone();
            let mut page = Vec::new();
            while page.len() <= query.limit {
                let candidate = match &query.only {
                    Some(only) => after
                        .as_deref()
                        .is_none_or(|after| only.as_str() > after)
                        .then(|| only.to_string()),
                    None if lists.is_empty() => {
                        let from = after
                            .as_deref()
                            .map_or(Bound::Unbounded, |after| Bound::Excluded(after.as_bytes()));
                        headers
                            .seek(&sessions, from)?
                            .map(|(id, _)| String::from_utf8(id.to_vec()))
                            .transpose()
                            .map_err(|_| BlockError::Corrupt)?
                    }
                    None => first_in_all(&postings, &mut lists, after.as_deref())?,
                };
                let Some(id) = candidate else { break };
                // Where the headers' cursor already stands when the candidate came from it.
                if let Some(header) = headers.get(&sessions, id.as_bytes())? {
                    let session = decode_header(header)?;
                    if matches(&session, query) {
                        page.push(session);
                    }
                }
                if query.only.is_some() {
                    break;
                }
                after = Some(id);
            }
            let more = page.len() > query.limit;
            page.truncate(query.limit);
            Ok(Page {
                sessions: page,
                more,
                applied,
            })
        };
        read().map_err(self.view_error())
    }
}

/// A fresh view being built from a full replay of its bucket: each session's newest version
/// is kept in sorted runs on disk, and `finish` writes every table in key order, in whole
/// blocks. The view records no revision until `finish` commits, so an interrupted bulk load
/// starts over; its runs are removed when it is dropped.
pub struct BulkLoad {
    index: CatalogIndex,
    sessions: SortedRuns,
    build_dir: PathBuf,
    /// What a sort gathers before writing a run, what the open posting chunks may hold, and
    /// how often blocks are committed: `RUN_BYTES`, `OPEN_CHUNKS_BYTES` and `BULK_COMMITS`,
    /// smaller in tests so every path is taken.
    run_bytes: usize,
    open_chunk_bytes: usize,
    commit_every: CommitEvery,
}

impl BulkLoad {
    /// Adds a version of session `id`'s header as the bucket stores it; of one session's
    /// versions the highest `revision` is kept, and a session whose newest is a tombstone is
    /// left out. Nothing is decoded here: only each session's newest version is, once, while
    /// the runs are merged.
    pub fn add(&mut self, id: &[u8], stored: &[u8], revision: u64) -> Result<(), ViewError> {
        self.sessions
            .push(id, revision, stored)
            .map_err(|source| self.io_error(source))
    }

    /// Writes every session and posting in key order, then records the view as complete
    /// through revision `through`, durably. The runs are merged into blocks on a thread of
    /// their own while this one writes the blocks.
    pub fn finish(mut self, through: u64) -> Result<ViewState, ViewError> {
        let sessions = std::mem::replace(
            &mut self.sessions,
            SortedRuns::new(&self.build_dir, "sessions", self.run_bytes),
        );
        let (blocks, merged) = std::sync::mpsc::sync_channel(HANDOVERS_QUEUED);
        let (written, writing) = std::sync::mpsc::channel::<()>();
        let count = std::thread::scope(|scope| {
            let merging = scope.spawn(|| self.merge_into_blocks(sessions, blocks));
            scope.spawn(|| flush_while_writing(&self.index.path, writing));
            let mut writer = BulkWriter::new(&self.index, self.commit_every);
            for (table, block) in merged.into_iter().flatten() {
                writer
                    .write(table, block)
                    .map_err(self.index.view_error())?;
            }
            writer.finish().map_err(self.index.view_error())?;
            drop(written);
            merging
                .join()
                .unwrap_or_else(|_| Err(ViewError::Interrupted("the merge panicked".into())))
        })?;
        let state = ViewState {
            applied: through,
            complete: true,
            sessions: count,
            ..self.index.state()?
        };
        let record = || -> Result<(), redb::Error> {
            let transaction = self.index.database.begin_write()?;
            write_state(&mut transaction.open_table(META)?, &state)?;
            // Durable, and with it every bulk transaction before it.
            transaction.commit()?;
            Ok(())
        };
        record().map_err(self.index.storage())?;
        Ok(state)
    }

    /// Merges the sessions' runs into blocks of headers on this thread, and their postings
    /// into blocks on another: gathering the postings was a quarter of the merge's thread,
    /// the phase's longest. Returns how many sessions there are.
    fn merge_into_blocks(
        &self,
        sessions: SortedRuns,
        writer: SyncSender<Vec<(BlockTable, Block)>>,
    ) -> Result<u64, ViewError> {
        let (postings, gathered) = std::sync::mpsc::sync_channel(POSTING_BATCHES_QUEUED);
        std::thread::scope(|scope| {
            let posting_writer = writer.clone();
            let listing = scope.spawn(move || self.postings_into_blocks(gathered, posting_writer));
            let headers = self.headers_into_blocks(sessions, writer, postings);
            let listed = listing.join().unwrap_or_else(|_| {
                Err(ViewError::Interrupted(
                    "the postings' merge panicked".into(),
                ))
            });
            match (headers, listed) {
                (Ok(count), Ok(())) => Ok(count),
                // The headers' merge only saw its postings stop: theirs is the cause.
                (Err(ViewError::Interrupted(_)), Err(err)) | (Err(err), _) | (_, Err(err)) => {
                    Err(err)
                }
            }
        })
    }

    /// Merges the sessions' runs into blocks of headers, and hands each session's postings on,
    /// as (list prefix, id) parts in batches, ended by an empty batch.
    fn headers_into_blocks(
        &self,
        sessions: SortedRuns,
        writer: SyncSender<Vec<(BlockTable, Block)>>,
        postings: SyncSender<Vec<u8>>,
    ) -> Result<u64, ViewError> {
        let mut handover = Handover::new(writer);
        let send_postings = |batch: Vec<u8>| {
            postings
                .send(batch)
                .map_err(|_| ViewError::Interrupted("the postings' merge stopped".into()))
        };
        let mut merged = sessions.merge().map_err(|source| self.io_error(source))?;
        let mut count = 0u64;
        let mut headers = BlockBuilder::default();
        let mut list = Vec::new();
        let mut batch = Vec::with_capacity(POSTING_BATCH_BYTES);
        while let Some((id, stored)) = merged.next_record().map_err(|err| self.io_error(err))? {
            let fields =
                IndexedFields::decode(stored).map_err(|err| ViewError::UnreadableHeader {
                    id: String::from_utf8_lossy(id).into_owned(),
                    reason: err.to_string(),
                })?;
            if fields.change == Change::Deleted {
                continue;
            }
            if let Some(block) = headers.add(id, stored) {
                handover.send(SESSIONS, block)?;
            }
            each_posting_list(
                fields.archived,
                fields.tenant(),
                fields.string_pairs(),
                &mut list,
                |list| {
                    push_part(&mut batch, list);
                    push_part(&mut batch, id);
                },
            );
            if batch.len() >= POSTING_BATCH_BYTES {
                send_postings(std::mem::replace(
                    &mut batch,
                    Vec::with_capacity(POSTING_BATCH_BYTES),
                ))?;
            }
            count += 1;
        }
        drop(merged);
        if let Some(block) = headers.finish() {
            handover.send(SESSIONS, block)?;
        }
        if !batch.is_empty() {
            send_postings(batch)?;
        }
        send_postings(Vec::new())?;
        handover.flush()?;
        Ok(count)
    }

    /// Gathers the postings the headers' merge hands on into chunks, then merges those into
    /// blocks.
    fn postings_into_blocks(
        &self,
        gathered: std::sync::mpsc::Receiver<Vec<u8>>,
        writer: SyncSender<Vec<(BlockTable, Block)>>,
    ) -> Result<(), ViewError> {
        let corrupt = || ViewError::Corrupt(self.index.path.clone());
        let mut postings =
            PostingChunks::new(&self.build_dir, self.run_bytes, self.open_chunk_bytes);
        loop {
            let batch = gathered
                .recv()
                .map_err(|_| ViewError::Interrupted("the headers' merge stopped".into()))?;
            if batch.is_empty() {
                break;
            }
            let mut parts = Parts(&batch);
            while let (Some(list), Some(id)) = (parts.next(), parts.next()) {
                postings
                    .add(list, id)
                    .map_err(|source| self.io_error(source))?;
            }
        }

        let mut handover = Handover::new(writer);
        let mut merged = postings.merge().map_err(|source| self.io_error(source))?;
        let mut keys = BlockBuilder::default();
        let mut key = Vec::new();
        while let Some((first_key, ids)) = merged.next_record().map_err(|err| self.io_error(err))? {
            let mut ids = Parts(ids).peekable();
            let first = ids.peek().ok_or_else(corrupt)?;
            let prefix = first_key.strip_suffix(*first).ok_or_else(corrupt)?;
            for id in ids {
                key.clear();
                key.extend_from_slice(prefix);
                key.extend_from_slice(id);
                if let Some(block) = keys.add(&key, &[]) {
                    handover.send(POSTINGS, block)?;
                }
            }
        }
        if let Some(block) = keys.finish() {
            handover.send(POSTINGS, block)?;
        }
        handover.flush()
    }

    fn io_error(&self, source: std::io::Error) -> ViewError {
        ViewError::Io {
            path: self.build_dir.clone(),
            source,
        }
    }
}

impl Drop for BulkLoad {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.build_dir);
    }
}

/// Sends the view file's written pages to disk every `FLUSH_EVERY` until `writing` closes, so
/// a bulk load's final durable commit waits only for the last of them (at 10M sessions it
/// waited a second for a gigabyte). Only a head start: that commit is what keeps the view.
fn flush_while_writing(path: &Path, writing: std::sync::mpsc::Receiver<()>) {
    let Ok(file) = std::fs::File::open(path) else {
        return;
    };
    while let Err(std::sync::mpsc::RecvTimeoutError::Timeout) = writing.recv_timeout(FLUSH_EVERY) {
        if let Err(err) = file.sync_data() {
            warn!(
                "flushing catalog view {} while building it: {err}",
                path.display()
            );
            return;
        }
    }
}

/// Blocks on their way from a bulk load's merge to its writer, `BLOCKS_PER_HANDOVER` at a
/// time.
struct Handover {
    writer: SyncSender<Vec<(BlockTable, Block)>>,
    blocks: Vec<(BlockTable, Block)>,
}

impl Handover {
    fn new(writer: SyncSender<Vec<(BlockTable, Block)>>) -> Handover {
        Handover {
            writer,
            blocks: Vec::with_capacity(BLOCKS_PER_HANDOVER),
        }
    }

    fn send(&mut self, table: BlockTable, block: Block) -> Result<(), ViewError> {
        self.blocks.push((table, block));
        if self.blocks.len() < BLOCKS_PER_HANDOVER {
            return Ok(());
        }
        self.flush()
    }

    fn flush(&mut self) -> Result<(), ViewError> {
        if self.blocks.is_empty() {
            return Ok(());
        }
        let blocks = std::mem::replace(&mut self.blocks, Vec::with_capacity(BLOCKS_PER_HANDOVER));
        self.writer
            .send(blocks)
            .map_err(|_| ViewError::Interrupted("the view writer stopped".into()))
    }
}

/// A bulk load's transactions: `blocks` each, and every `durable`-th waits for the disk.
#[derive(Debug, Clone, Copy)]
struct CommitEvery {
    blocks: usize,
    durable: usize,
}

/// Whole blocks appended to their tables, most transactions committed without waiting for the
/// disk: until the view records its revision, a crash only means the bulk load starts over.
struct BulkWriter<'a> {
    database: &'a Database,
    /// On while the writer lives: the blocks go to disk without the page cache.
    direct_writes: Option<&'a DirectWrites>,
    transaction: Option<redb::WriteTransaction>,
    commit_every: CommitEvery,
    blocks: usize,
}

impl<'a> BulkWriter<'a> {
    fn new(index: &'a CatalogIndex, commit_every: CommitEvery) -> BulkWriter<'a> {
        // Without direct writes the blocks go through the page cache: slower, as correct.
        let direct_writes = index
            .direct_writes
            .as_deref()
            .filter(|direct_writes| direct_writes.begin().is_ok());
        BulkWriter {
            database: &index.database,
            direct_writes,
            transaction: None,
            commit_every,
            blocks: 0,
        }
    }

    fn write(&mut self, table: BlockTable, block: Block) -> Result<(), BlockError> {
        let mut transaction = match self.transaction.take() {
            Some(transaction) => transaction,
            None => {
                let mut transaction = self.database.begin_write()?;
                transaction.set_durability(Durability::None)?;
                transaction
            }
        };
        transaction
            .open_table(table)?
            .insert(block.bound.as_slice(), block.bytes.as_slice())?;
        self.blocks += 1;
        let CommitEvery { blocks, durable } = self.commit_every;
        if self.blocks.is_multiple_of(blocks) {
            if self.blocks.is_multiple_of(blocks * durable) {
                transaction.set_durability(Durability::Immediate)?;
            }
            transaction.commit()?;
        } else {
            self.transaction = Some(transaction);
        }
        Ok(())
    }

    fn finish(mut self) -> Result<(), BlockError> {
        if let Some(transaction) = self.transaction.take() {
            transaction.commit()?;
        }
        if let Some(direct_writes) = self.direct_writes.take() {
            direct_writes
                .end()
                .map_err(|err| BlockError::Storage(err.into()))?;
        }
        Ok(())
    }
}

impl Drop for BulkWriter<'_> {
    /// A bulk load that fails midway stops its direct writes too, once what they hold is
    /// written; if that fails, every later use of the file fails, as after any failed write.
    fn drop(&mut self) {
        if let Some(direct_writes) = self.direct_writes {
            let _ = direct_writes.end();
        }
    }
}

/// The posting lists of a bulk load, gathered while its headers are merged in id order: each
/// list's ids arrive in order, so they are cut into chunks keyed by the list and the chunk's
/// first id, and the chunks sorted by key come back as every list whole and in order.
struct PostingChunks {
    /// List prefix -> its open chunk, the ids as parts.
    /// Hashed with foldhash (randomly seeded too): each session's postings are looked up here,
    /// and SipHash was a tenth of the merge.
    open: HashMap<Vec<u8>, Vec<u8>, foldhash::fast::RandomState>,
    open_bytes: usize,
    open_limit: usize,
    chunks: SortedRuns,
}

impl PostingChunks {
    fn new(build_dir: &Path, run_bytes: usize, open_limit: usize) -> PostingChunks {
        PostingChunks {
            open: HashMap::default(),
            open_bytes: 0,
            open_limit,
            chunks: SortedRuns::new(build_dir, "postings", run_bytes),
        }
    }

    fn add(&mut self, prefix: &[u8], id: &[u8]) -> std::io::Result<()> {
        // Looked up by the borrowed prefix: a list's first id is the only one that allocates.
        let full = match self.open.get_mut(prefix) {
            Some(chunk) => {
                push_part(chunk, id);
                self.open_bytes += 4 + id.len();
                chunk.len() >= POSTING_CHUNK_BYTES
            }
            None => {
                let mut chunk = Vec::new();
                push_part(&mut chunk, id);
                self.open_bytes += chunk_footprint(prefix, &chunk);
                self.open.insert(prefix.to_vec(), chunk);
                false
            }
        };
        if full {
            if let Some((prefix, chunk)) = self.open.remove_entry(prefix) {
                self.open_bytes -= chunk_footprint(&prefix, &chunk);
                close_chunk(&mut self.chunks, &prefix, &chunk)?;
            }
        } else if self.open_bytes >= self.open_limit {
            // Many short lists (a metadata value per session): their chunks go as they are.
            for (prefix, chunk) in self.open.drain() {
                close_chunk(&mut self.chunks, &prefix, &chunk)?;
            }
            self.open_bytes = 0;
        }
        Ok(())
    }

    fn merge(mut self) -> std::io::Result<super::runs::Merge> {
        for (prefix, chunk) in self.open.drain() {
            close_chunk(&mut self.chunks, &prefix, &chunk)?;
        }
        self.chunks.merge()
    }
}

/// Hands a chunk of list `prefix` to its sort, keyed by the list and the chunk's first id.
fn close_chunk(chunks: &mut SortedRuns, prefix: &[u8], ids: &[u8]) -> std::io::Result<()> {
    let first = Parts(ids).next().unwrap_or_default();
    let mut key = Vec::with_capacity(prefix.len() + first.len());
    key.extend_from_slice(prefix);
    key.extend_from_slice(first);
    chunks.push(&key, 0, ids)
}

/// What an open chunk holds in memory, about: its list's prefix (the map's key), its ids, and
/// the allocations' overhead.
fn chunk_footprint(prefix: &[u8], chunk: &[u8]) -> usize {
    prefix.len() + chunk.len() + 128
}

/// The length-prefixed parts of a bulk load's record, in order.
struct Parts<'a>(&'a [u8]);

impl<'a> Iterator for Parts<'a> {
    type Item = &'a [u8];

    fn next(&mut self) -> Option<&'a [u8]> {
        let (length, rest) = self.0.split_first_chunk::<4>()?;
        let length = u32::from_be_bytes(*length) as usize;
        let (part, rest) = (rest.get(..length)?, rest.get(length..)?);
        self.0 = rest;
        Some(part)
    }
}

fn open_file(path: &Path) -> Result<(Database, Option<Arc<DirectWrites>>), redb::Error> {
    let already_open = |err| match err {
        DatabaseError::DatabaseAlreadyOpen => redb::Error::DatabaseAlreadyOpen,
        other => other.into(),
    };
    let file = ViewFile::open(path).map_err(already_open)?;
    let direct_writes = file.direct_writes();
    let database = Database::builder()
        .set_cache_size(CACHE_BYTES)
        .create_with_backend(file)
        .map_err(already_open)?;
    // Every table exists from the start, so a reader never finds one missing.
    let transaction = database.begin_write()?;
    transaction.open_table(SESSIONS)?;
    transaction.open_table(POSTINGS)?;
    transaction.open_table(META)?;
    transaction.commit()?;
    Ok((database, direct_writes))
}

fn read_state(
    meta: &impl ReadableTable<&'static str, &'static [u8]>,
) -> Result<ViewState, redb::StorageError> {
    Ok(meta
        .get(STATE)?
        .and_then(|state| serde_json::from_slice::<ViewState>(state.value()).ok())
        .filter(|state| state.format == FORMAT)
        .unwrap_or_default())
}

fn write_state(meta: &mut redb::Table<&str, &[u8]>, state: &ViewState) -> Result<(), redb::Error> {
    let state = serde_json::to_vec(&ViewState {
        format: FORMAT,
        ..state.clone()
    })
    .unwrap_or_default();
    meta.insert(STATE, state.as_slice())?;
    Ok(())
}

/// The smallest id after `after` that every posting list in `lists` holds.
fn first_in_all(
    postings: &redb::ReadOnlyTable<&'static [u8], &'static [u8]>,
    lists: &mut [(Vec<u8>, Cursor)],
    after: Option<&str>,
) -> Result<Option<String>, BlockError> {
    let mut from = after.map(|after| (after.to_owned(), false));
    let mut agreed = 0;
    for turn in (0..lists.len()).cycle() {
        let (list, cursor) = &mut lists[turn];
        let mut start = list.clone();
        let bound = match &from {
            Some((id, inclusive)) => {
                start.extend_from_slice(id.as_bytes());
                if *inclusive {
                    Bound::Included(start.as_slice())
                } else {
                    Bound::Excluded(start.as_slice())
                }
            }
            None => Bound::Included(start.as_slice()),
        };
        let Some((key, _)) = cursor.seek(postings, bound)? else {
            return Ok(None);
        };
        let Some(id) = key.strip_prefix(list.as_slice()) else {
            return Ok(None);
        };
        let id = std::str::from_utf8(id).map_err(|_| BlockError::Corrupt)?;
        match &from {
            Some((current, true)) if current == id => agreed += 1,
            _ => {
                from = Some((id.to_owned(), true));
                agreed = 1;
            }
        }
        if agreed == lists.len() {
            return Ok(from.map(|(id, _)| id));
        }
    }
    Ok(None)
}

fn decode_header(header: &[u8]) -> Result<Session, BlockError> {
    serde_json::from_slice(header).map_err(|_| BlockError::Corrupt)
}

/// The posting lists a query's filters name: each metadata pair, the tenant, the flag.
fn posting_prefixes(query: &ListQuery) -> Vec<Vec<u8>> {
    let built = |push: &dyn Fn(&mut Vec<u8>)| {
        let mut list = Vec::new();
        push(&mut list);
        list
    };
    let mut lists: Vec<Vec<u8>> = query
        .metadata
        .iter()
        .map(|(key, value)| built(&|list| push_pair_prefix(list, key, value)))
        .collect();
    if let Some(tenant) = &query.tenant {
        lists.push(built(&|list| push_tenant_prefix(list, tenant)));
    }
    match query.archived {
        ArchivedFilter::Active => lists.push(built(&|list| push_flag_prefix(list, false))),
        ArchivedFilter::Archived => lists.push(built(&|list| push_flag_prefix(list, true))),
        ArchivedFilter::All => {}
    }
    lists
}

/// Every posting key of a session: each list it is on, and its id.
fn postings_of(session: &Session) -> Vec<Vec<u8>> {
    let mut keys = Vec::new();
    let string_pairs = session
        .metadata
        .iter()
        .filter_map(|(key, value)| match value {
            Value::String(value) => Some((key.as_str(), value.as_str())),
            _ => None,
        });
    each_posting_list(
        session.archived,
        session.tenant(),
        string_pairs,
        &mut Vec::new(),
        |list| {
            let mut key = list.to_vec();
            key.extend_from_slice(session.id.as_str().as_bytes());
            keys.push(key);
        },
    );
    keys
}

/// Calls `each` with the prefix of every posting list a session is on, each built in `list`:
/// one buffer for all, so a bulk load allocates nothing per session here.
fn each_posting_list<'a>(
    archived: bool,
    tenant: &str,
    string_pairs: impl Iterator<Item = (&'a str, &'a str)>,
    list: &mut Vec<u8>,
    mut each: impl FnMut(&[u8]),
) {
    list.clear();
    push_flag_prefix(list, archived);
    each(list);
    list.clear();
    push_tenant_prefix(list, tenant);
    each(list);
    for (key, value) in string_pairs {
        list.clear();
        push_pair_prefix(list, key, value);
        each(list);
    }
}

fn push_flag_prefix(list: &mut Vec<u8>, archived: bool) {
    list.extend_from_slice(&[ARCHIVED_FLAG, u8::from(archived)]);
}

fn push_tenant_prefix(list: &mut Vec<u8>, tenant: &str) {
    list.push(TENANT);
    push_part(list, tenant);
}

fn push_pair_prefix(list: &mut Vec<u8>, key: &str, value: &str) {
    list.push(METADATA_PAIR);
    push_part(list, key);
    push_part(list, value);
}

/// Length-prefixed, so no part can run into the next and one list's prefix is never
/// another's.
fn push_part(prefix: &mut Vec<u8>, part: impl AsRef<[u8]>) {
    let part = part.as_ref();
    let length = u32::try_from(part.len()).unwrap_or(u32::MAX);
    prefix.extend_from_slice(&length.to_be_bytes());
    prefix.extend_from_slice(part);
}

fn matches(session: &Session, query: &ListQuery) -> bool {
    let tenant_ok = session.visible_to(query.tenant.as_deref());
    let only_ok = query.only.as_ref().is_none_or(|only| *only == session.id);
    let search_ok = query.search.as_deref().is_none_or(|search| {
        let search = search.to_lowercase();
        session.id.as_str().to_lowercase().starts_with(&search)
            || session
                .title
                .as_deref()
                .is_some_and(|title| title.to_lowercase().contains(&search))
    });
    let archived_ok = match query.archived {
        ArchivedFilter::Active => !session.archived,
        ArchivedFilter::Archived => session.archived,
        ArchivedFilter::All => true,
    };
    tenant_ok
        && only_ok
        && search_ok
        && archived_ok
        && query.metadata.iter().all(|(key, value)| {
            matches!(session.metadata.get(key), Some(Value::String(actual)) if actual == value)
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn session(id: &str, archived: bool, metadata: Value) -> Session {
        Session {
            id: SessionId::parse(id).unwrap(),
            tenant_id: None,
            title: None,
            metadata: metadata.as_object().cloned().unwrap_or_default(),
            created_at: String::new(),
            updated_at: String::new(),
            version: 1,
            archived,
            shard: 0,
            content_type: None,
            expiry: None,
            forked_from: None,
            fork_count: 0,
            retired: false,
        }
    }

    fn created(session: Session) -> SessionRecord {
        SessionRecord {
            session,
            change: Change::Created,
        }
    }

    fn filter(pairs: &[(&str, &str)]) -> ListQuery {
        ListQuery {
            metadata: pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            ..query(10)
        }
    }

    /// An empty view in a directory removed with it.
    struct TestIndex {
        index: CatalogIndex,
        _dir: tempfile::TempDir,
    }

    impl TestIndex {
        fn new() -> TestIndex {
            let dir = tempfile::tempdir().unwrap();
            let index = CatalogIndex::open(dir.path(), "test").unwrap();
            TestIndex { index, _dir: dir }
        }

        fn upsert(&self, session: Session) {
            let through = self.index.state().unwrap().applied + 1;
            self.index
                .apply(&[created(session)], through, true, false)
                .unwrap();
        }

        fn len(&self) -> u64 {
            self.index.state().unwrap().sessions
        }

        fn page(&self, query: &ListQuery) -> (Vec<Session>, bool) {
            let page = self.index.page(query).unwrap();
            (page.sessions, page.more)
        }
    }

    fn ids(page: &[Session]) -> Vec<String> {
        page.iter().map(|session| session.id.to_string()).collect()
    }

    fn query(limit: usize) -> ListQuery {
        ListQuery {
            limit,
            after: None,
            metadata: Vec::new(),
            archived: ArchivedFilter::Active,
            tenant: None,
            only: None,
            search: None,
        }
    }

    #[test]
    fn pages_walk_ids_in_order_and_say_when_more_follow() {
        let index = TestIndex::new();
        for id in ["c", "a", "e", "b", "d"] {
            index.upsert(session(id, false, json!({})));
        }
        let (page, more) = index.page(&query(2));
        assert_eq!(
            (ids(&page), more),
            (vec!["a".to_owned(), "b".to_owned()], true)
        );
        let (page, more) = index.page(&ListQuery {
            after: Some("b".into()),
            ..query(3)
        });
        assert_eq!(
            (ids(&page), more),
            (vec!["c".to_owned(), "d".to_owned(), "e".to_owned()], false)
        );
        let (page, more) = index.page(&ListQuery {
            after: Some("bb".into()),
            ..query(10)
        });
        assert_eq!((page.len(), more), (3, false));
        let all = ListQuery {
            archived: ArchivedFilter::All,
            after: Some("a".into()),
            ..query(2)
        };
        assert_eq!(
            (ids(&index.page(&all).0), index.page(&all).1),
            (vec!["b".to_owned(), "c".to_owned()], true)
        );
    }

    #[test]
    fn archived_sessions_are_hidden_unless_asked_for() {
        let index = TestIndex::new();
        index.upsert(session("a", false, json!({})));
        index.upsert(session("b", true, json!({})));
        assert_eq!(ids(&index.page(&query(10)).0), vec!["a"]);
        let archived = ListQuery {
            archived: ArchivedFilter::Archived,
            ..query(10)
        };
        assert_eq!(ids(&index.page(&archived).0), vec!["b"]);
        let all = ListQuery {
            archived: ArchivedFilter::All,
            ..query(10)
        };
        assert_eq!(ids(&index.page(&all).0), vec!["a", "b"]);
        // Unarchiving moves it back.
        index.upsert(session("b", false, json!({})));
        assert_eq!(ids(&index.page(&query(10)).0), vec!["a", "b"]);
        assert!(index.page(&archived).0.is_empty());
        assert_eq!(index.len(), 2);
    }

    #[test]
    fn a_tenant_sees_only_its_sessions() {
        let index = TestIndex::new();
        let mut owned = session("b", false, json!({"k": "v"}));
        owned.tenant_id = Some("acme".into());
        index.upsert(owned);
        index.upsert(session("a", false, json!({"k": "v"})));
        let acme = ListQuery {
            tenant: Some("acme".into()),
            ..query(10)
        };
        assert_eq!(ids(&index.page(&acme).0), vec!["b"]);
        let local = ListQuery {
            tenant: Some(crate::sessions::model::LOCAL_TENANT.into()),
            ..query(10)
        };
        assert_eq!(ids(&index.page(&local).0), vec!["a"]);
        let filtered = ListQuery {
            metadata: vec![("k".into(), "v".into())],
            ..acme.clone()
        };
        assert_eq!(ids(&index.page(&filtered).0), vec!["b"]);
        let nobody = ListQuery {
            tenant: Some("globex".into()),
            ..query(10)
        };
        assert!(index.page(&nobody).0.is_empty());
        let pinned = ListQuery {
            only: Some(SessionId::parse("b").unwrap()),
            ..query(10)
        };
        assert_eq!(ids(&index.page(&pinned).0), vec!["b"]);
        let pinned_elsewhere = ListQuery {
            only: Some(SessionId::parse("b").unwrap()),
            ..local
        };
        assert!(index.page(&pinned_elsewhere).0.is_empty());
    }

    #[test]
    fn search_matches_an_id_prefix_or_part_of_a_title() {
        let index = TestIndex::new();
        let mut titled = session("chat-9", false, json!({}));
        titled.title = Some("Quarterly Planning".into());
        index.upsert(titled);
        index.upsert(session("Chat-1", false, json!({})));
        index.upsert(session("other", false, json!({})));
        let search = |text: &str| ListQuery {
            search: Some(text.into()),
            ..query(10)
        };
        assert_eq!(
            ids(&index.page(&search("chat")).0),
            vec!["Chat-1", "chat-9"]
        );
        assert_eq!(ids(&index.page(&search("planning")).0), vec!["chat-9"]);
        assert!(index.page(&search("hat")).0.is_empty());
    }

    #[test]
    fn metadata_filters_match_string_values_and_are_anded() {
        let index = TestIndex::new();
        index.upsert(session(
            "a",
            false,
            json!({"tenant": "acme", "tier": "pro"}),
        ));
        index.upsert(session(
            "b",
            false,
            json!({"tenant": "acme", "tier": "free"}),
        ));
        index.upsert(session("c", false, json!({"tenant": "other", "n": 1})));
        index.upsert(session("d", false, json!({"n": "1"})));
        assert_eq!(
            ids(&index.page(&filter(&[("tenant", "acme")])).0),
            vec!["a", "b"]
        );
        assert_eq!(
            ids(&index
                .page(&filter(&[("tenant", "acme"), ("tier", "pro")]))
                .0),
            vec!["a"]
        );
        assert_eq!(ids(&index.page(&filter(&[("n", "1")])).0), vec!["d"]);
        assert!(index.page(&filter(&[("tenant", "nobody")])).0.is_empty());
        // A changed header leaves its old pairs.
        index.upsert(session("a", false, json!({"tenant": "moved"})));
        assert_eq!(
            ids(&index.page(&filter(&[("tenant", "acme")])).0),
            vec!["b"]
        );
        // Two versions in one batch: the later one counts.
        let versions = [
            created(session("b", false, json!({"tenant": "first"}))),
            created(session("b", true, json!({"tenant": "second"}))),
        ];
        index.index.apply(&versions, 9, true, false).unwrap();
        assert!(index.page(&filter(&[("tenant", "first")])).0.is_empty());
        let archived = ListQuery {
            archived: ArchivedFilter::Archived,
            ..filter(&[("tenant", "second")])
        };
        assert_eq!(ids(&index.page(&archived).0), vec!["b"]);
        assert_eq!(index.len(), 4);
    }

    #[test]
    fn a_tombstone_removes_its_session_and_postings_and_the_id_may_come_back() {
        let index = TestIndex::new();
        index.upsert(session("a", false, json!({"tenant": "acme"})));
        index.upsert(session("b", false, json!({"tenant": "acme"})));
        let id = SessionId::parse("a").unwrap();
        let tombstone = SessionRecord {
            session: session("a", false, json!({"tenant": "acme"})),
            change: Change::Deleted,
        };
        index.index.apply(&[tombstone], 9, true, false).unwrap();
        assert_eq!(index.index.get(&id).unwrap(), None);
        assert_eq!(index.len(), 1);
        assert_eq!(
            ids(&index.page(&filter(&[("tenant", "acme")])).0),
            vec!["b"]
        );
        index.upsert(session("a", false, json!({"tenant": "other"})));
        assert_eq!(index.len(), 2);
        assert_eq!(
            ids(&index.page(&filter(&[("tenant", "other")])).0),
            vec!["a"]
        );
        assert!(index.index.get(&id).unwrap().is_some());
    }

    #[test]
    fn a_second_opener_of_a_directory_gets_its_own_file_and_a_reopened_view_keeps_its_state() {
        let dir = tempfile::tempdir().unwrap();
        let first = CatalogIndex::open(dir.path(), "bucket").unwrap();
        first
            .apply(&[created(session("a", false, json!({})))], 7, true, true)
            .unwrap();
        let second = CatalogIndex::open(dir.path(), "bucket").unwrap();
        assert_ne!(first.path(), second.path());
        assert_eq!(second.state().unwrap(), ViewState::default());
        let held = first.path().to_owned();
        drop(first);
        let reopened = CatalogIndex::open(dir.path(), "bucket").unwrap();
        assert_eq!(reopened.path(), held);
        let state = reopened.state().unwrap();
        assert_eq!(
            (state.applied, state.sessions, state.complete),
            (7, 1, true)
        );
    }

    fn source() -> BucketSource {
        BucketSource {
            stream: "KV_test".into(),
            created: "then".into(),
            cluster: None,
        }
    }

    /// Every header by id and every posting key, in the order the view stores them.
    type Contents = (Vec<(String, Session)>, Vec<Vec<u8>>);

    fn contents(index: &CatalogIndex) -> Contents {
        let transaction = index.database.begin_read().unwrap();
        let sessions = transaction.open_table(SESSIONS).unwrap();
        let postings = transaction.open_table(POSTINGS).unwrap();
        let headers = blocks::scan(&sessions)
            .unwrap()
            .into_iter()
            .map(|(id, header)| {
                let header = serde_json::from_slice(&header).unwrap();
                (String::from_utf8(id).unwrap(), header)
            })
            .collect();
        let keys = blocks::scan(&postings)
            .unwrap()
            .into_iter()
            .map(|(key, _)| key)
            .collect();
        (headers, keys)
    }

    #[test]
    fn a_bulk_load_keeps_each_sessions_newest_version_and_equals_applying_them_in_order() {
        // Versions in bucket order, ids in no order, several per session, across many runs.
        let mut versions = Vec::new();
        for revision in 1..=3_000u64 {
            let id = format!("s{:04}", (revision * 7_919) % 1_000);
            let tenant = format!("t{}", revision % 5);
            // Some versions are tombstones, and some of those are a session's newest.
            let change = if revision % 11 == 0 {
                Change::Deleted
            } else {
                Change::Created
            };
            // A topic per version: many short posting lists.
            let session = session(
                &id,
                revision % 3 == 0,
                json!({
                    "tenant": tenant,
                    "n": revision,
                    "topic": format!("topic-{}", revision % 97),
                    // Escaped strings are decoded apart, and values that are not strings name
                    // no list.
                    "quote\"d": format!("line\n{}", revision % 3),
                    "nested": {"tenant": "not a pair"},
                }),
            );
            versions.push((SessionRecord { session, change }, revision));
        }
        let newest: BTreeMap<&str, &SessionRecord> = versions
            .iter()
            .map(|(record, _)| (record.session.id.as_str(), record))
            .collect();
        let live = newest
            .values()
            .filter(|record| record.change != Change::Deleted)
            .count() as u64;
        assert!(live < 1_000, "some sessions end deleted");
        let bulk = TestIndex::new();
        // A first bulk load interrupted halfway: the next starts over.
        let mut interrupted = bulk.index.bulk_load(source()).unwrap();
        let stored = |record: &SessionRecord| serde_json::to_vec(record).unwrap();
        let id = |record: &SessionRecord| record.session.id.as_str().as_bytes().to_vec();
        for (record, revision) in &versions[..1_500] {
            interrupted
                .add(&id(record), &stored(record), *revision)
                .unwrap();
        }
        drop(interrupted);
        let mut load = bulk.index.bulk_load(source()).unwrap();
        // Small enough that both sorts write many runs and the open posting chunks are
        // flushed as they are, again and again,
        load.run_bytes = 16 * 1024;
        load.open_chunk_bytes = 2 * 1024;
        // and its blocks written over many transactions, some durable.
        load.commit_every = CommitEvery {
            blocks: 4,
            durable: 3,
        };
        load.sessions = SortedRuns::new(&load.build_dir, "sessions", load.run_bytes);
        for (record, revision) in &versions {
            load.add(&id(record), &stored(record), *revision).unwrap();
        }
        let build_dir = load.build_dir.clone();
        let state = load.finish(3_000).unwrap();
        assert!(!build_dir.exists());
        assert_eq!(
            (
                state.applied,
                state.complete,
                state.sessions,
                state.source.clone()
            ),
            (3_000, true, live, Some(source()))
        );
        assert_eq!(bulk.index.state().unwrap(), state);

        let applied = TestIndex::new();
        applied.index.reset(source()).unwrap();
        let records: Vec<SessionRecord> =
            versions.iter().map(|(record, _)| record.clone()).collect();
        for chunk in records.chunks(64) {
            applied.index.apply(chunk, 0, true, false).unwrap();
        }
        let (headers, postings) = contents(&bulk.index);
        assert_eq!(
            (headers.clone(), postings.clone()),
            contents(&applied.index)
        );
        // The newest version of each: revision 3000 wrote s0000's last header.
        let (_, newest) = headers.iter().find(|(id, _)| id == "s0000").unwrap();
        assert_eq!(newest.metadata.get("n"), Some(&json!(3_000)));
        assert!(headers.windows(2).all(|pair| pair[0].0 < pair[1].0));
        assert!(postings.windows(2).all(|pair| pair[0] < pair[1]));
        let archived_t1 = ListQuery {
            archived: ArchivedFilter::Archived,
            metadata: vec![("tenant".into(), "t1".into())],
            ..query(1_000)
        };
        assert_eq!(bulk.page(&archived_t1).0, applied.page(&archived_t1).0);
    }

    #[test]
    fn a_bulk_load_of_an_unreadable_header_fails_and_records_nothing() {
        let view = TestIndex::new();
        let mut load = view.index.bulk_load(source()).unwrap();
        load.add(b"s1", b"{\"id\": 7}", 1).unwrap();
        assert!(matches!(
            load.finish(1),
            Err(ViewError::UnreadableHeader { id, .. }) if id == "s1"
        ));
        let state = view.index.state().unwrap();
        assert_eq!((state.applied, state.complete), (0, false));
    }

    #[test]
    fn a_view_of_the_format_before_blocks_is_replaced_by_an_empty_view() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bucket-0.redb");
        {
            // Format 1 kept a key per header and per posting.
            let database = Database::create(&path).unwrap();
            let transaction = database.begin_write().unwrap();
            let mut sessions = transaction
                .open_table(TableDefinition::<&str, &[u8]>::new("sessions"))
                .unwrap();
            sessions.insert("s1", b"{}".as_slice()).unwrap();
            drop(sessions);
            transaction
                .open_table(TableDefinition::<&[u8], ()>::new("postings"))
                .unwrap();
            transaction.commit().unwrap();
        }
        let index = CatalogIndex::open(dir.path(), "bucket").unwrap();
        assert_eq!(index.path(), path);
        assert_eq!(index.state().unwrap(), ViewState::default());
        assert_eq!(index.get(&SessionId::parse("s1").unwrap()).unwrap(), None);
    }

    #[test]
    fn an_unreadable_file_is_replaced_by_an_empty_view() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("bucket-0.redb"), vec![0x5a; 64 * 1024]).unwrap();
        let index = CatalogIndex::open(dir.path(), "bucket").unwrap();
        assert_eq!(index.state().unwrap(), ViewState::default());
        assert_eq!(index.path(), dir.path().join("bucket-0.redb"));
    }
}
