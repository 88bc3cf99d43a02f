//! A sorted map of byte keys to byte values kept in blocks of a redb table: a view of
//! millions of small entries then costs the store thousands of B-tree inserts, not millions.
//! A bulk load appends whole blocks; a change rewrites the block it falls in.
//!
//! A block is stored under its bound: a key no greater than any of its entries, and greater
//! than every entry of the blocks before it. Its entries are in key order and front-coded
//! (each key as the length it shares with the previous key, then the rest), so a posting
//! list's repeated prefix takes a byte per entry.

use std::ops::{Bound, Range};

use redb::{ReadableTable, Table, TableDefinition};

/// A table of blocks: bound -> encoded entries.
pub type BlockTable = TableDefinition<'static, &'static [u8], &'static [u8]>;

/// A key and its value.
pub type Entry = (Vec<u8>, Vec<u8>);

/// A key and its new value, `None` to remove it.
pub type Edit = (Vec<u8>, Option<Vec<u8>>);

/// An entry read in place: the key in the reader's buffer, the value in the block.
type EntryRef<'k, 'a> = (&'k [u8], &'a [u8]);

/// What a block's entries may take (one larger entry is a block of its own): a block and its
/// bound then fit one 4 KiB page of the store, whose leaves take values larger than a page
/// whole, on pages twice the size. Small enough that finding an entry is a short scan.
const BLOCK_BYTES: usize = 3584;

/// The most an entry's three lengths take encoded, for entries that could fit a block.
const LENGTHS_BYTES: usize = 6;

#[derive(Debug, thiserror::Error)]
pub enum BlockError {
    #[error(transparent)]
    Storage(#[from] redb::Error),
    #[error("a stored block is unreadable")]
    Corrupt,
}

/// `?` on any of redb's errors, which all convert into `redb::Error`.
macro_rules! storage_errors {
    ($($error:ty),*) => {$(
        impl From<$error> for BlockError {
            fn from(err: $error) -> BlockError {
                BlockError::Storage(err.into())
            }
        }
    )*};
}

storage_errors!(
    redb::StorageError,
    redb::TableError,
    redb::TransactionError,
    redb::CommitError,
    redb::SetDurabilityError
);

/// Builds blocks from entries given in key order.
#[derive(Default)]
pub struct BlockBuilder {
    bytes: Vec<u8>,
    first_key: Vec<u8>,
    last_key: Vec<u8>,
}

/// A closed block and its bound (its first key, unless the caller bounds it lower).
pub struct Block {
    pub bound: Vec<u8>,
    pub bytes: Vec<u8>,
}

impl BlockBuilder {
    /// Adds the entry after every one added before it, and hands back the block closed to
    /// make room for it.
    pub fn add(&mut self, key: &[u8], value: &[u8]) -> Option<Block> {
        // Counted without the prefix it may share: at most a few bytes of a block unused.
        let room = key.len() + value.len() + LENGTHS_BYTES;
        let closed =
            (!self.bytes.is_empty() && self.bytes.len() + room > BLOCK_BYTES).then(|| self.close());
        let shared = if self.bytes.is_empty() {
            self.first_key.clear();
            self.first_key.extend_from_slice(key);
            0
        } else {
            shared_length(&self.last_key, key)
        };
        push_varint(&mut self.bytes, shared);
        push_varint(&mut self.bytes, key.len() - shared);
        self.bytes.extend_from_slice(&key[shared..]);
        push_varint(&mut self.bytes, value.len());
        self.bytes.extend_from_slice(value);
        self.last_key.truncate(shared);
        self.last_key.extend_from_slice(&key[shared..]);
        closed
    }

    /// The block of the entries added since the last one closed, if any.
    pub fn finish(&mut self) -> Option<Block> {
        (!self.bytes.is_empty()).then(|| self.close())
    }

    fn close(&mut self) -> Block {
        Block {
            bound: std::mem::take(&mut self.first_key),
            // Sized for a whole block at once, so filling it never reallocates.
            bytes: std::mem::replace(&mut self.bytes, Vec::with_capacity(BLOCK_BYTES)),
        }
    }
}

/// Reads a block's entries in order; each key is rebuilt in a buffer the next one reuses.
pub struct Entries<'a> {
    rest: &'a [u8],
    key: Vec<u8>,
}

impl<'a> Entries<'a> {
    pub fn new(block: &'a [u8]) -> Entries<'a> {
        Entries {
            rest: block,
            key: Vec::new(),
        }
    }

    pub fn next_entry(&mut self) -> Result<Option<EntryRef<'_, 'a>>, BlockError> {
        if self.rest.is_empty() {
            return Ok(None);
        }
        let shared = self.varint()?;
        let suffix = self.varint()?;
        let suffix = self.take(suffix)?;
        if shared > self.key.len() {
            return Err(BlockError::Corrupt);
        }
        self.key.truncate(shared);
        self.key.extend_from_slice(suffix);
        let length = self.varint()?;
        let value = self.take(length)?;
        Ok(Some((&self.key, value)))
    }

    fn varint(&mut self) -> Result<usize, BlockError> {
        let mut value = 0usize;
        for shift in (0..usize::BITS).step_by(7) {
            let (&byte, rest) = self.rest.split_first().ok_or(BlockError::Corrupt)?;
            self.rest = rest;
            value |= usize::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(BlockError::Corrupt)
    }

    fn take(&mut self, length: usize) -> Result<&'a [u8], BlockError> {
        if length > self.rest.len() {
            return Err(BlockError::Corrupt);
        }
        let (taken, rest) = self.rest.split_at(length);
        self.rest = rest;
        Ok(taken)
    }
}

/// The value stored for `key`.
pub fn get(
    table: &impl ReadableTable<&'static [u8], &'static [u8]>,
    key: &[u8],
) -> Result<Option<Vec<u8>>, BlockError> {
    Ok(Cursor::default().get(table, key)?.map(<[u8]>::to_vec))
}

/// Finds entries in key order, each seek going on from where the last one ended when the
/// entry sought lies ahead of it in the same block. An intersection of posting lists seeks
/// each list many times, each a little further on; finding the block again and decoding it
/// from its start every time was most of a filtered page's time.
#[derive(Default)]
pub struct Cursor {
    /// The block of the last entry found, and how much of it is decoded.
    block: Vec<u8>,
    read: usize,
    /// The last entry found (empty `block`: none); its value is `block[value]`.
    key: Vec<u8>,
    value: Range<usize>,
}

impl Cursor {
    /// The first entry after `from` (a key included or excluded, or the first of all).
    pub fn seek(
        &mut self,
        table: &impl ReadableTable<&'static [u8], &'static [u8]>,
        from: Bound<&[u8]>,
    ) -> Result<Option<EntryRef<'_, '_>>, BlockError> {
        if !self.block.is_empty() {
            if from == Bound::Included(self.key.as_slice()) {
                return Ok(Some(self.entry()));
            }
            // Nothing before the last entry found comes after `from` either.
            if !comes_after(&self.key, from) && self.decode_to(from)? {
                return Ok(Some(self.entry()));
            }
        }
        // The block that would hold `from`, then the ones after it.
        let holding = match from {
            Bound::Included(key) | Bound::Excluded(key) => {
                table.range::<&[u8]>(..=key)?.next_back().transpose()?
            }
            Bound::Unbounded => None,
        };
        let later = match &holding {
            Some((bound, block)) => {
                self.load(block.value());
                if self.decode_to(from)? {
                    return Ok(Some(self.entry()));
                }
                Bound::Excluded(bound.value())
            }
            None => Bound::Unbounded,
        };
        for block in table.range::<&[u8]>((later, Bound::Unbounded))? {
            self.load(block?.1.value());
            if self.decode_to(from)? {
                return Ok(Some(self.entry()));
            }
        }
        self.block.clear();
        Ok(None)
    }

    /// The value stored for `key`, sought as `seek` does.
    pub fn get(
        &mut self,
        table: &impl ReadableTable<&'static [u8], &'static [u8]>,
        key: &[u8],
    ) -> Result<Option<&[u8]>, BlockError> {
        let found = self.seek(table, Bound::Included(key))?;
        Ok(found.and_then(|(found, value)| (found == key).then_some(value)))
    }

    fn load(&mut self, block: &[u8]) {
        self.block.clear();
        self.block.extend_from_slice(block);
        self.read = 0;
        self.key.clear();
    }

    /// Decodes on to the block's first entry after `from`; false at the block's end.
    fn decode_to(&mut self, from: Bound<&[u8]>) -> Result<bool, BlockError> {
        let mut entries = Entries {
            rest: &self.block[self.read..],
            key: std::mem::take(&mut self.key),
        };
        let mut found = false;
        while let Some((key, value)) = entries.next_entry()? {
            if comes_after(key, from) {
                let end = self.block.len() - entries.rest.len();
                self.value = end - value.len()..end;
                found = true;
                break;
            }
        }
        self.read = self.block.len() - entries.rest.len();
        self.key = entries.key;
        Ok(found)
    }

    fn entry(&self) -> EntryRef<'_, '_> {
        (&self.key, &self.block[self.value.clone()])
    }
}

fn comes_after(key: &[u8], from: Bound<&[u8]>) -> bool {
    match from {
        Bound::Included(from) => key >= from,
        Bound::Excluded(from) => key > from,
        Bound::Unbounded => true,
    }
}

/// Sets (`Some`) or removes (`None`) each key of `changes`, given in key order and each once,
/// and returns what each held before, in the same order. Each block touched is read and
/// written once, however many of the changes fall in it.
pub fn apply(
    table: &mut Table<&'static [u8], &'static [u8]>,
    changes: Vec<Edit>,
) -> Result<Vec<Option<Vec<u8>>>, BlockError> {
    let mut previous = Vec::with_capacity(changes.len());
    let mut changes = changes.into_iter().peekable();
    while let Some((key, _)) = changes.peek() {
        // The block holding `key`: the last bounded at or before it. Without one, the key
        // comes before every block and starts a new one.
        let (bound, mut entries) = match table.range::<&[u8]>(..=key.as_slice())?.next_back() {
            Some(block) => {
                let (bound, block) = block?;
                (Some(bound.value().to_vec()), decode(block.value())?)
            }
            None => (None, Vec::new()),
        };
        let mut next_bound = bound_after(table, key)?;
        loop {
            while let Some((key, value)) =
                changes.next_if(|(key, _)| next_bound.as_ref().is_none_or(|next| key < next))
            {
                match (entries.binary_search_by(|(held, _)| held.cmp(&key)), value) {
                    (Ok(at), Some(value)) => {
                        previous.push(Some(std::mem::replace(&mut entries[at].1, value)));
                    }
                    (Ok(at), None) => previous.push(Some(entries.remove(at).1)),
                    (Err(at), Some(value)) => {
                        previous.push(None);
                        entries.insert(at, (key, value));
                    }
                    (Err(_), None) => previous.push(None),
                }
            }
            // A block left small takes in the next one, so removals do not leave the table
            // a trail of near-empty blocks.
            let held: usize = entries
                .iter()
                .map(|(key, value)| key.len() + value.len())
                .sum();
            let Some(next) = next_bound.take().filter(|_| held < BLOCK_BYTES / 4) else {
                break;
            };
            if let Some(block) = table.remove(next.as_slice())? {
                entries.extend(decode(block.value())?);
            }
            next_bound = bound_after(table, &next)?;
        }
        if let Some(bound) = &bound {
            table.remove(bound.as_slice())?;
        }
        let mut builder = BlockBuilder::default();
        let mut first_bound = bound;
        let mut write = |block: Block| -> Result<(), BlockError> {
            let bound = first_bound.take().unwrap_or(block.bound);
            table.insert(bound.as_slice(), block.bytes.as_slice())?;
            Ok(())
        };
        for (key, value) in &entries {
            if let Some(block) = builder.add(key, value) {
                write(block)?;
            }
        }
        if let Some(block) = builder.finish() {
            write(block)?;
        }
    }
    Ok(previous)
}

/// The bound of the first block after `key`.
fn bound_after(
    table: &Table<&'static [u8], &'static [u8]>,
    key: &[u8],
) -> Result<Option<Vec<u8>>, BlockError> {
    Ok(table
        .range::<&[u8]>((Bound::Excluded(key), Bound::Unbounded))?
        .next()
        .transpose()?
        .map(|(bound, _)| bound.value().to_vec()))
}

fn decode(block: &[u8]) -> Result<Vec<Entry>, BlockError> {
    let mut entries = Entries::new(block);
    let mut decoded = Vec::new();
    while let Some((key, value)) = entries.next_entry()? {
        decoded.push((key.to_vec(), value.to_vec()));
    }
    Ok(decoded)
}

/// Every entry, in order.
#[cfg(test)]
pub fn scan(
    table: &impl ReadableTable<&'static [u8], &'static [u8]>,
) -> Result<Vec<Entry>, BlockError> {
    let mut all = Vec::new();
    for block in table.iter()? {
        all.extend(decode(block?.1.value())?);
    }
    Ok(all)
}

fn shared_length(a: &[u8], b: &[u8]) -> usize {
    a.iter().zip(b).take_while(|(a, b)| a == b).count()
}

fn push_varint(bytes: &mut Vec<u8>, mut value: usize) {
    while value >= 0x80 {
        bytes.push((value as u8 & 0x7f) | 0x80);
        value >>= 7;
    }
    bytes.push(value as u8);
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use redb::{Database, ReadableDatabase, ReadableTableMetadata};

    use super::*;

    const TABLE: BlockTable = TableDefinition::new("blocks");

    fn key(n: u32) -> Vec<u8> {
        format!("key-{n:06}").into_bytes()
    }

    /// Applies `changes` to the table and to a `BTreeMap`, and checks that both agree on what
    /// was held before, on every entry, and on every lookup.
    fn check(
        database: &Database,
        model: &mut BTreeMap<Vec<u8>, Vec<u8>>,
        changes: Vec<(Vec<u8>, Option<Vec<u8>>)>,
    ) {
        let expected: Vec<Option<Vec<u8>>> = changes
            .iter()
            .map(|(key, value)| match value {
                Some(value) => model.insert(key.clone(), value.clone()),
                None => model.remove(key),
            })
            .collect();
        let transaction = database.begin_write().unwrap();
        let previous = apply(&mut transaction.open_table(TABLE).unwrap(), changes).unwrap();
        transaction.commit().unwrap();
        assert_eq!(previous, expected);
        let transaction = database.begin_read().unwrap();
        let table = transaction.open_table(TABLE).unwrap();
        let stored = scan(&table).unwrap();
        let modelled: Vec<Entry> = model.clone().into_iter().collect();
        assert_eq!(stored, modelled);
        for n in (0..2_000).step_by(37) {
            assert_eq!(get(&table, &key(n)).unwrap(), model.get(&key(n)).cloned());
            let after = model
                .range::<Vec<u8>, _>((Bound::Excluded(key(n)), Bound::Unbounded))
                .next()
                .map(|(key, value)| (key.clone(), value.clone()));
            let found = Cursor::default()
                .seek(&table, Bound::Excluded(&key(n)))
                .unwrap()
                .map(|(key, value)| (key.to_vec(), value.to_vec()));
            assert_eq!(found, after);
        }
        // One cursor seeking ever further on, as an intersection of lists does: ahead in its
        // block, past it, and at the very entry it stands on.
        let mut cursor = Cursor::default();
        for n in (0..2_000).step_by(7) {
            let from = if n % 2 == 0 {
                Bound::Included(key(n))
            } else {
                Bound::Excluded(key(n))
            };
            let expected = model
                .range::<Vec<u8>, _>((from.clone(), Bound::Unbounded))
                .next()
                .map(|(key, value)| (key.clone(), value.clone()));
            let found = cursor
                .seek(&table, from.as_ref().map(Vec::as_slice))
                .unwrap()
                .map(|(key, value)| (key.to_vec(), value.to_vec()));
            assert_eq!(found, expected, "from {from:?}");
            if let Some((key, value)) = expected {
                let again = cursor.seek(&table, Bound::Included(&key)).unwrap();
                assert_eq!(again, Some((key.as_slice(), value.as_slice())));
            }
        }
    }

    #[test]
    fn blocks_split_merge_and_answer_like_a_sorted_map() {
        let dir = tempfile::tempdir().unwrap();
        let database = Database::create(dir.path().join("blocks.redb")).unwrap();
        let transaction = database.begin_write().unwrap();
        transaction.open_table(TABLE).unwrap();
        transaction.commit().unwrap();
        let mut model = BTreeMap::new();
        // Every third key, with values large enough to need many blocks.
        let value =
            |n: u32, round: u32| format!("{round}:{}", "v".repeat(n as usize % 300)).into_bytes();
        check(
            &database,
            &mut model,
            (0..2_000)
                .step_by(3)
                .map(|n| (key(n), Some(value(n, 0))))
                .collect(),
        );
        // Keys before every block, between blocks and inside them; replacements; removals.
        check(
            &database,
            &mut model,
            (0..2_000)
                .filter(|n| n % 5 != 4)
                .map(|n| (key(n), (n % 7 != 0).then(|| value(n, 1))))
                .collect(),
        );
        // Every key removed but a few: emptied blocks go.
        check(
            &database,
            &mut model,
            (0..2_000)
                .map(|n| (key(n), (n % 500 == 1).then(|| value(n, 2))))
                .collect(),
        );
        let transaction = database.begin_read().unwrap();
        let blocks = transaction.open_table(TABLE).unwrap().len().unwrap();
        assert_eq!(blocks, 1, "four small entries fit one block");
    }

    #[test]
    fn a_truncated_block_is_corrupt() {
        let mut builder = BlockBuilder::default();
        assert!(builder.add(b"alpha", b"one").is_none());
        assert!(builder.add(b"alphabet", b"two").is_none());
        let block = builder.finish().unwrap();
        assert_eq!(block.bound, b"alpha");
        let entries = decode(&block.bytes).unwrap();
        assert_eq!(entries[1], (b"alphabet".to_vec(), b"two".to_vec()));
        // Cut anywhere, a block reads as corrupt or, cut between entries, as the ones before.
        for cut in 1..block.bytes.len() {
            match decode(&block.bytes[..cut]) {
                Err(BlockError::Corrupt) => {}
                Ok(read) => assert_eq!(read, entries[..1], "cut at {cut}"),
                Err(err) => panic!("cut at {cut}: {err}"),
            }
        }
    }
}
