//! An external sort for a fresh view's bulk load: records gathered in any order come back in
//! key order, one per key (the highest rank wins), with memory bounded by one run being
//! gathered plus a read buffer per run on disk.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::fs::File;
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

/// The read and write buffer of each run file.
const RUN_BUFFER: usize = 16 * 1024;

/// How much of a run the merge reads before giving it back to the file system.
const RELEASE_BYTES: u64 = 1024 * 1024;

/// A run's arena starts this large (or at its run's size) and grows as records come.
const RUN_ARENA_START: usize = 1024 * 1024;

/// What one record costs in a run being gathered beyond its bytes: where it is.
const RECORD_OVERHEAD: usize = std::mem::size_of::<Gathered>();

#[derive(Default)]
struct Record {
    key: Vec<u8>,
    rank: u64,
    value: Vec<u8>,
}

/// A record of the run being gathered: its key, then its value, from `start` in the arena.
struct Gathered {
    start: usize,
    key_length: u32,
    value_length: u32,
    rank: u64,
    prefix: KeyPrefix,
}

/// A key's first 16 bytes as one number, ordered as the keys are, so most comparisons of
/// two keys are one comparison of numbers: comparing the bytes was a third of sorting a run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord)]
struct KeyPrefix(u128);

impl KeyPrefix {
    fn of(key: &[u8]) -> KeyPrefix {
        // Zeros after a short key: a tie then, settled by the whole keys.
        let mut bytes = [0; 16];
        let length = key.len().min(16);
        bytes[..length].copy_from_slice(&key[..length]);
        KeyPrefix(u128::from_be_bytes(bytes))
    }
}

/// Records gathered into sorted runs, each written to a file in `dir` once it holds
/// `run_bytes`. A run is gathered in one arena, so a record costs no allocation of its own
/// and the run's memory is the bytes it holds.
pub struct SortedRuns {
    dir: PathBuf,
    name: &'static str,
    run_bytes: usize,
    arena: Vec<u8>,
    gathering: Vec<Gathered>,
    files: Vec<PathBuf>,
}

impl SortedRuns {
    /// `dir` must exist; the runs are named after `name`, so several sorts can share it.
    pub fn new(dir: &Path, name: &'static str, run_bytes: usize) -> SortedRuns {
        SortedRuns {
            dir: dir.to_owned(),
            name,
            run_bytes,
            arena: Vec::new(),
            gathering: Vec::new(),
            files: Vec::new(),
        }
    }

    /// Adds a record; of several with one key, the merge keeps the one of highest rank (the
    /// one added last among equal ranks).
    pub fn push(&mut self, key: &[u8], rank: u64, value: &[u8]) -> io::Result<()> {
        let too_large = || io::Error::other("record too large");
        let gathered = Gathered {
            start: self.arena.len(),
            key_length: u32::try_from(key.len()).map_err(|_| too_large())?,
            value_length: u32::try_from(value.len()).map_err(|_| too_large())?,
            rank,
            prefix: KeyPrefix::of(key),
        };
        if self.arena.capacity() == 0 {
            self.arena.reserve(self.run_bytes.min(RUN_ARENA_START));
        }
        self.arena.extend_from_slice(key);
        self.arena.extend_from_slice(value);
        self.gathering.push(gathered);
        if self.arena.len() + self.gathering.len() * RECORD_OVERHEAD >= self.run_bytes {
            self.write_run()?;
        }
        Ok(())
    }

    fn write_run(&mut self) -> io::Result<()> {
        let arena = &self.arena;
        let key = |record: &Gathered| &arena[record.start..][..record.key_length as usize];
        // Among equal keys the highest rank first, and among equal ranks the one added last.
        self.gathering.sort_unstable_by(|a, b| {
            a.prefix
                .cmp(&b.prefix)
                .then_with(|| key(a).cmp(key(b)))
                .then(b.rank.cmp(&a.rank))
                .then(b.start.cmp(&a.start))
        });
        let path = self
            .dir
            .join(format!("{}-{}.run", self.name, self.files.len()));
        let mut file = BufWriter::with_capacity(RUN_BUFFER, File::create(&path)?);
        let mut previous: Option<&[u8]> = None;
        for record in &self.gathering {
            let key = key(record);
            if previous == Some(key) {
                continue;
            }
            let value_start = record.start + key.len();
            write_part(&mut file, key)?;
            file.write_all(&record.rank.to_be_bytes())?;
            write_part(
                &mut file,
                &arena[value_start..][..record.value_length as usize],
            )?;
            previous = Some(key);
        }
        file.flush()?;
        self.files.push(path);
        self.arena.clear();
        self.gathering.clear();
        Ok(())
    }

    /// Every key once, in order, with the value of its highest rank.
    pub fn merge(mut self) -> io::Result<Merge> {
        if !self.gathering.is_empty() {
            self.write_run()?;
        }
        let mut runs = Vec::with_capacity(self.files.len());
        let mut heap = BinaryHeap::with_capacity(self.files.len());
        for (run, path) in self.files.iter().enumerate() {
            let file = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open(path)?;
            let mut reader = RunReader {
                reader: BufReader::with_capacity(RUN_BUFFER, file),
                read: 0,
                released: 0,
            };
            let mut record = Record::default();
            if reader.next(&mut record)? {
                heap.push(Head::new(record, run));
            }
            runs.push(reader);
        }
        Ok(Merge {
            runs,
            heap,
            files: self.files,
            current: Record::default(),
            spare: Vec::new(),
        })
    }
}

/// The smallest record not yet merged from one run.
struct Head {
    prefix: KeyPrefix,
    record: Record,
    run: usize,
}

impl Head {
    fn new(record: Record, run: usize) -> Head {
        Head {
            prefix: KeyPrefix::of(&record.key),
            record,
            run,
        }
    }

    /// Smallest key first; among equal keys the highest rank, then the latest run.
    fn order(&self) -> (KeyPrefix, &[u8], Reverse<u64>, Reverse<usize>) {
        (
            self.prefix,
            &self.record.key,
            Reverse(self.record.rank),
            Reverse(self.run),
        )
    }
}

impl PartialEq for Head {
    fn eq(&self, other: &Head) -> bool {
        self.order() == other.order()
    }
}

impl Eq for Head {}

impl PartialOrd for Head {
    fn partial_cmp(&self, other: &Head) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Head {
    // Reversed: `BinaryHeap` pops its largest.
    fn cmp(&self, other: &Head) -> std::cmp::Ordering {
        other.order().cmp(&self.order())
    }
}

/// The k-way merge of a sort's runs; the run files are removed when it is dropped.
pub struct Merge {
    runs: Vec<RunReader>,
    heap: BinaryHeap<Head>,
    files: Vec<PathBuf>,
    /// The record `next_record` last returned.
    current: Record,
    spare: Vec<Record>,
}

impl Merge {
    /// The next key and its winning value.
    pub fn next_record(&mut self) -> io::Result<Option<(&[u8], &[u8])>> {
        let Some(winner) = self.pop()? else {
            return Ok(None);
        };
        // The same key from older runs or lower ranks lost.
        while self
            .heap
            .peek()
            .is_some_and(|head| head.record.key == winner.key)
        {
            if let Some(loser) = self.pop()? {
                self.spare.push(loser);
            }
        }
        let done = std::mem::replace(&mut self.current, winner);
        self.spare.push(done);
        Ok(Some((&self.current.key, &self.current.value)))
    }

    fn pop(&mut self) -> io::Result<Option<Record>> {
        let Some(head) = self.heap.pop() else {
            return Ok(None);
        };
        // Records read are recycled: a merge allocates only while its buffers grow.
        let mut next = self.spare.pop().unwrap_or_default();
        if self.runs[head.run].next(&mut next)? {
            self.heap.push(Head::new(next, head.run));
        } else {
            self.spare.push(next);
        }
        Ok(Some(head.record))
    }
}

impl Drop for Merge {
    fn drop(&mut self) {
        for path in &self.files {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// A run being merged, read in order once.
struct RunReader {
    reader: BufReader<File>,
    /// The bytes of the records read so far, and of those the ones given back.
    read: u64,
    released: u64,
}

impl RunReader {
    fn next(&mut self, record: &mut Record) -> io::Result<bool> {
        let Some(length) = read_record(&mut self.reader, record)? else {
            return Ok(false);
        };
        self.read += length;
        if self.read - self.released >= RELEASE_BYTES {
            self.release_read();
        }
        Ok(true)
    }

    /// Punches what was read out of the file, its page-cache pages with it, dirty or not and
    /// without writing them, so the view's pages written meanwhile reuse them: at 10M sessions
    /// (3.5 GB of runs) the writer spent half its time in the kernel taking fresh pages, and
    /// the write phase went from 20 to 16 s. Best effort: a file system without holes keeps
    /// them until the run is removed.
    fn release_read(&mut self) {
        let through = self.read / 4096 * 4096;
        #[cfg(target_os = "linux")]
        {
            use rustix::fs::{FallocateFlags, fallocate};
            let _ = fallocate(
                self.reader.get_ref(),
                FallocateFlags::PUNCH_HOLE | FallocateFlags::KEEP_SIZE,
                self.released,
                through - self.released,
            );
        }
        self.released = through;
    }
}

fn write_part(file: &mut impl Write, part: &[u8]) -> io::Result<()> {
    let length = u32::try_from(part.len()).map_err(|_| io::Error::other("record too large"))?;
    file.write_all(&length.to_be_bytes())?;
    file.write_all(part)
}

fn read_part(file: &mut impl Read, part: &mut Vec<u8>) -> io::Result<()> {
    let mut length = [0; 4];
    file.read_exact(&mut length)?;
    part.resize(u32::from_be_bytes(length) as usize, 0);
    file.read_exact(part)
}

/// Reads the next record of a run into `record`, and says how many bytes of the run it took;
/// `None` at the run's end.
fn read_record(file: &mut impl Read, record: &mut Record) -> io::Result<Option<u64>> {
    let mut length = [0; 4];
    match file.read_exact(&mut length) {
        Ok(()) => {}
        Err(err) if err.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(err) => return Err(err),
    }
    record.key.resize(u32::from_be_bytes(length) as usize, 0);
    file.read_exact(&mut record.key)?;
    let mut rank = [0; 8];
    file.read_exact(&mut rank)?;
    record.rank = u64::from_be_bytes(rank);
    read_part(file, &mut record.value)?;
    Ok(Some(
        (4 + record.key.len() + 8 + 4 + record.value.len()) as u64,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn drain(mut merge: Merge) -> Vec<(String, String)> {
        let mut out = Vec::new();
        while let Some((key, value)) = merge.next_record().unwrap() {
            out.push((
                String::from_utf8(key.to_vec()).unwrap(),
                String::from_utf8(value.to_vec()).unwrap(),
            ));
        }
        out
    }

    #[test]
    fn keys_come_back_in_order_once_each_with_the_highest_rank_across_runs() {
        let dir = tempfile::tempdir().unwrap();
        // Tiny runs: every few records is a run of its own.
        let mut runs = SortedRuns::new(dir.path(), "test", 3 * RECORD_OVERHEAD);
        let pushes = [
            ("c", 1, "c1"),
            ("a", 2, "a2"),
            ("b", 3, "b3"),
            ("a", 7, "a7"),
            ("c", 4, "c4"),
            ("a", 5, "a5"),
            ("d", 6, "d6"),
            ("b", 8, "b8"),
            ("b", 8, "b8-later"),
        ];
        for (key, rank, value) in pushes {
            runs.push(key.as_bytes(), rank, value.as_bytes()).unwrap();
        }
        let merge = runs.merge().unwrap();
        assert!(merge.files.len() >= 3, "{} runs", merge.files.len());
        let files = merge.files.clone();
        let pairs = |raw: &[(&str, &str)]| -> Vec<(String, String)> {
            raw.iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        assert_eq!(
            drain(merge),
            pairs(&[("a", "a7"), ("b", "b8-later"), ("c", "c4"), ("d", "d6")])
        );
        assert!(files.iter().all(|file| !file.exists()));
    }

    #[test]
    fn keys_alike_in_their_first_sixteen_bytes_are_sorted_by_the_rest() {
        let dir = tempfile::tempdir().unwrap();
        let mut runs = SortedRuns::new(dir.path(), "long", 40 * (RECORD_OVERHEAD + 32));
        let mut expected = Vec::new();
        for n in 0..500u32 {
            // A bijection of 0..500, so the keys come in no order.
            let key = format!("same-sixteen-byt-{:03}", (n * 211) % 500);
            runs.push(key.as_bytes(), 0, b"").unwrap();
            expected.push(key);
        }
        expected.sort();
        let merge = runs.merge().unwrap();
        assert!(merge.files.len() > 1);
        let keys: Vec<String> = drain(merge).into_iter().map(|(key, _)| key).collect();
        assert_eq!(keys, expected);
    }

    #[test]
    fn runs_given_back_as_they_are_read_still_merge_every_byte() {
        let dir = tempfile::tempdir().unwrap();
        // Runs of 4 MiB of 1 KiB values, several times `RELEASE_BYTES` each.
        let mut runs = SortedRuns::new(dir.path(), "large", 4 * 1024 * 1024);
        let value = |n: u32| format!("{n:08}").repeat(128);
        for n in 0..24_000u32 {
            // A bijection of 0..24,000, so the keys come in no order.
            let n = (n * 7_001) % 24_000;
            runs.push(format!("{n:05}").as_bytes(), 0, value(n).as_bytes())
                .unwrap();
        }
        let mut merge = runs.merge().unwrap();
        assert!(merge.files.len() >= 3, "{} runs", merge.files.len());
        let files = merge.files.clone();
        // Half merged, at least a fifth of the runs' bytes are given back.
        let allocated = || -> u64 {
            use std::os::unix::fs::MetadataExt;
            files
                .iter()
                .map(|file| std::fs::metadata(file).unwrap().blocks() * 512)
                .sum()
        };
        let written = allocated();
        for _ in 0..12_000 {
            merge.next_record().unwrap().unwrap();
        }
        if cfg!(target_os = "linux") {
            assert!(
                allocated() < written * 4 / 5,
                "{} of {written}",
                allocated()
            );
        }
        let merged = drain(merge);
        assert_eq!(merged.len(), 12_000);
        for (n, (key, merged)) in (12_000..).zip(&merged) {
            assert_eq!(key, &format!("{n:05}"));
            assert!(merged == &value(n), "the value of {key}");
        }
    }

    #[test]
    fn key_prefixes_order_as_their_keys_do() {
        let keys: [&[u8]; 8] = [
            b"",
            b"\0",
            b"a",
            b"a\0",
            b"ab",
            b"abcdefghijklmnop",
            b"abcdefghijklmnop\0",
            b"abcdefghijklmnoq",
        ];
        for a in keys {
            for b in keys {
                let by_prefix = KeyPrefix::of(a).cmp(&KeyPrefix::of(b));
                assert!(
                    by_prefix == a.cmp(b) || by_prefix == std::cmp::Ordering::Equal,
                    "{a:?} {b:?}"
                );
            }
        }
    }

    #[test]
    fn one_run_in_memory_and_no_records_both_merge() {
        let dir = tempfile::tempdir().unwrap();
        let mut runs = SortedRuns::new(dir.path(), "one", usize::MAX);
        runs.push(b"z", 0, b"").unwrap();
        runs.push(b"y", 0, b"").unwrap();
        runs.push(b"z", 0, b"").unwrap();
        let keys: Vec<String> = drain(runs.merge().unwrap())
            .into_iter()
            .map(|(key, _)| key)
            .collect();
        assert_eq!(keys, vec!["y", "z"]);
        let empty = SortedRuns::new(dir.path(), "empty", usize::MAX);
        assert!(drain(empty.merge().unwrap()).is_empty());
    }
}
