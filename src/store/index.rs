//! Chunked index lists: the store's secondary indexes (each clause's versions,
//! each plan's revisions, each party's stance timeline) kept as ascending
//! lists of `u64`, packed into chunks of up to [`CHUNK`] entries with one sled
//! key per chunk.
//!
//! # Why chunks
//!
//! sled 0.34 splits a leaf as soon as it holds more than 16 keys, and every
//! split and consolidation writes whole page images to its log. Its cost per
//! commit therefore follows the number of NEW keys far more than the bytes
//! written. With one key per index entry (schema 1) a stance change added
//! four keys: its log entry and three index entries. With chunks it adds one
//! (the log entry) and overwrites three small values; a new chunk key appears
//! once every [`CHUNK`] entries of a list. Replaying the commit pattern on
//! sled alone (`examples/sled_layouts.rs`: 50,000 revisions in groups of 64)
//! took about half the CPU with chunks: 1.5–1.9 s against 2.4–4.1 s with
//! per-entry keys, in three alternating runs.
//!
//! # Layout
//!
//! A list is named by a prefix ending in `\0` (see [`keys`]); each chunk is
//! `{list}{u64be ordinal of its first entry}` → its entries as packed `u64be`.
//!
//! - **Version lists** (`verc/`): ordinal = clause version, entry = the
//!   revision that made it. Chunks start at versions 1, 1+CHUNK, 1+2·CHUNK, …
//!   so version v is found by arithmetic, with one read.
//! - **Revision lists** (`prevc/`, `ptlc/`): ordinal = entry = a revision
//!   number. A chunk starts at its first revision, so "everything from
//!   revision R" seeks the last chunk starting at or before R.
//!
//! # Invariants
//!
//! - Entries ascend within a list, and every chunk but the last is full.
//! - Only the committer appends, through [`Tails`], inside its group batch:
//!   a chunk on disk always matches the log it indexes.

use std::collections::HashMap;

use super::keys;
use super::records::{prefix_end, scan_prefix, Records, Source};
use crate::error::{Error, Result};

/// Entries per chunk.
pub const CHUNK: usize = 64;

/// The key of the chunk of `list` whose first ordinal is `start`.
pub fn chunk_key(list: &[u8], start: u64) -> Vec<u8> {
    let mut key = Vec::with_capacity(list.len() + 8);
    key.extend_from_slice(list);
    key.extend_from_slice(&start.to_be_bytes());
    key
}

/// The first version held by the chunk that holds `version` (versions start at 1).
pub fn version_chunk_start(version: u64) -> u64 {
    (version.max(1) - 1) / CHUNK as u64 * CHUNK as u64 + 1
}

/// The entries of a chunk's value.
pub fn unpack(packed: &[u8]) -> impl DoubleEndedIterator<Item = u64> + '_ {
    packed
        .chunks_exact(8)
        .map(|b| u64::from_be_bytes(b.try_into().expect("chunks_exact(8)")))
}

fn entry_at(packed: &[u8], i: usize) -> Option<u64> {
    packed
        .get(i * 8..i * 8 + 8)
        .map(|b| u64::from_be_bytes(b.try_into().expect("8 bytes")))
}

/// The revision that made `version`, from a version list.
pub fn version_entry(
    src: &(impl Source + ?Sized),
    list: &[u8],
    version: u64,
) -> Result<Option<u64>> {
    if version == 0 {
        return Ok(None);
    }
    let start = version_chunk_start(version);
    Ok(src
        .get(&chunk_key(list, start))?
        .and_then(|packed| entry_at(&packed, (version - start) as usize)))
}

/// Every entry of a list, in order.
pub fn entries<'a>(
    src: &'a (impl Source + ?Sized),
    list: &[u8],
) -> impl Iterator<Item = Result<u64>> + 'a {
    entries_in(scan_prefix(src, list))
}

/// The chunk of a revision list holding `ordinal`: the last one starting at
/// or before it.
fn chunk_at_or_before(
    src: &(impl Source + ?Sized),
    list: &[u8],
    ordinal: u64,
) -> Result<Option<(sled::IVec, sled::IVec)>> {
    src.last_in(list, &chunk_key(list, ordinal))
}

/// The entries `>= from` of a revision list, in order.
pub fn entries_from<'a>(
    src: &'a (impl Source + ?Sized),
    list: &[u8],
    from: u64,
) -> Result<impl Iterator<Item = Result<u64>> + 'a> {
    let first_chunk = match chunk_at_or_before(src, list, from)? {
        Some((key, _)) => key.to_vec(),
        None => list.to_vec(),
    };
    let end = prefix_end(list);
    Ok(entries_in(src.scan(&first_chunk, &end))
        .filter(move |e| e.as_ref().map_or(true, |&r| r >= from)))
}

/// Whether a revision list holds `revision`.
pub fn contains(src: &(impl Source + ?Sized), list: &[u8], revision: u64) -> Result<bool> {
    Ok(chunk_at_or_before(src, list, revision)?
        .is_some_and(|(_, packed)| unpack(&packed).any(|r| r == revision)))
}

fn entries_in(chunks: Records<'_>) -> impl Iterator<Item = Result<u64>> + '_ {
    chunks.flat_map(|chunk| {
        let (ok, err) = match chunk {
            Ok((_, packed)) => (unpack(&packed).collect::<Vec<_>>(), None),
            Err(e) => (Vec::new(), Some(Err(e))),
        };
        ok.into_iter().map(Ok).chain(err)
    })
}

/// The last, open chunk of a list.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Tail {
    start: u64,
    packed: Vec<u8>,
}

impl Tail {
    fn len(&self) -> usize {
        self.packed.len() / 8
    }

    fn last(&self) -> Option<u64> {
        unpack(&self.packed).next_back()
    }

    fn push(&mut self, entry: u64) {
        self.packed.extend_from_slice(&entry.to_be_bytes());
    }
}

/// How many lists' open chunks the committer remembers: at most ~600 bytes
/// each, so a few MiB. The least recently written are forgotten first, and
/// read back from the store when next appended to.
const KNOWN_TAILS: usize = 8192;

/// The committer's memory of each list's last chunk, so that appending needs
/// no read: loaded from the store on first use, updated only after a group's
/// batch is on disk, forgotten (least recently written first) past
/// [`KNOWN_TAILS`] lists.
pub struct Tails {
    known: lru::LruCache<Vec<u8>, Tail>,
}

impl Default for Tails {
    fn default() -> Tails {
        Tails::with_capacity(KNOWN_TAILS)
    }
}

impl Tails {
    /// Remembers at most `lists` open chunks.
    fn with_capacity(lists: usize) -> Tails {
        Tails {
            known: lru::LruCache::new(
                std::num::NonZeroUsize::new(lists.max(1)).expect("at least 1"),
            ),
        }
    }

    /// A group's appends, staged over what `src` holds.
    pub fn stage<'a>(&'a self, src: &'a dyn Source) -> StagedTails<'a> {
        StagedTails {
            tails: self,
            src,
            changed: HashMap::new(),
            filled: Vec::new(),
        }
    }

    /// Takes a group's appends once its batch is durable.
    pub fn absorb(&mut self, changed: ChangedTails) {
        for (list, tail) in changed.0 {
            self.known.put(list, tail);
        }
    }
}

/// Appends made by a group, to absorb into [`Tails`] after its commit.
pub struct ChangedTails(HashMap<Vec<u8>, Tail>);

/// One group's appends to the index lists.
pub struct StagedTails<'a> {
    tails: &'a Tails,
    src: &'a dyn Source,
    /// Each list's open chunk as this group leaves it.
    changed: HashMap<Vec<u8>, Tail>,
    /// Chunks this group appended to and then filled, so a newer chunk of
    /// the same list took their place in `changed`.
    filled: Vec<(Vec<u8>, Tail)>,
}

impl StagedTails<'_> {
    fn current(&self, list: &[u8]) -> Option<&Tail> {
        self.changed
            .get(list)
            .or_else(|| self.tails.known.peek(list))
    }

    /// Records that `revision` made `version` of the clause whose version list is `list`.
    pub fn append_version(&mut self, list: Vec<u8>, version: u64, revision: u64) -> Result<()> {
        let start = version_chunk_start(version);
        let mut tail = match self.current(&list) {
            Some(tail) if tail.start == start => tail.clone(),
            _ if version == start => Tail {
                start,
                packed: Vec::new(),
            },
            _ => Tail {
                start,
                packed: self
                    .src
                    .get(&chunk_key(&list, start))?
                    .map(|v| v.to_vec())
                    .unwrap_or_default(),
            },
        };
        if tail.start + tail.len() as u64 != version {
            return Err(Error::Storage(format!(
                "version index out of step: version {version} follows {} entries from version {}",
                tail.len(),
                tail.start
            )));
        }
        tail.push(revision);
        self.replace_tail(list, tail);
        Ok(())
    }

    /// Makes `tail` the list's open chunk, keeping a chunk of this group it
    /// supersedes for the batch.
    fn replace_tail(&mut self, list: Vec<u8>, tail: Tail) {
        let start = tail.start;
        if let Some(previous) = self.changed.insert(list.clone(), tail) {
            if previous.start != start {
                self.filled.push((list, previous));
            }
        }
    }

    /// Appends `revision` to a revision list.
    pub fn append_revision(&mut self, list: Vec<u8>, revision: u64) -> Result<()> {
        let loaded;
        let current = match self.current(&list) {
            Some(tail) => Some(tail),
            None => {
                loaded = self.load_last(&list)?;
                loaded.as_ref()
            }
        };
        let mut tail = match current {
            Some(tail) if tail.len() < CHUNK => tail.clone(),
            _ => Tail {
                start: revision,
                packed: Vec::new(),
            },
        };
        if tail.last().is_some_and(|last| last >= revision) {
            return Err(Error::Storage(format!(
                "revision index out of step: {revision} after {:?}",
                tail.last()
            )));
        }
        tail.push(revision);
        self.replace_tail(list, tail);
        Ok(())
    }

    fn load_last(&self, list: &[u8]) -> Result<Option<Tail>> {
        Ok(self
            .src
            .last_in(list, &chunk_key(list, u64::MAX))?
            .map(|(key, packed)| Tail {
                start: keys::trailing_u64(&key),
                packed: packed.to_vec(),
            }))
    }

    /// Every chunk the group changed, as records to write.
    pub fn chunks(&self) -> impl Iterator<Item = (Vec<u8>, sled::IVec)> + '_ {
        let filled = self.filled.iter().map(|(list, tail)| (list, tail));
        filled
            .chain(&self.changed)
            .map(|(list, tail)| (chunk_key(list, tail.start), tail.packed.as_slice().into()))
    }

    /// Puts every changed chunk into a batch.
    #[cfg(test)]
    fn write_into(&self, batch: &mut sled::Batch) {
        for (key, value) in self.chunks() {
            batch.insert(key, value);
        }
    }

    /// What to absorb into [`Tails`] once the batch is durable.
    pub fn into_changed(self) -> ChangedTails {
        ChangedTails(self.changed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn db() -> (tempfile::TempDir, sled::Db) {
        let dir = tempfile::tempdir().unwrap();
        let db = sled::Config::new().path(dir.path()).open().unwrap();
        (dir, db)
    }

    /// Appends through staged groups of `group` entries, as the committer does.
    fn append_revisions(db: &sled::Db, tails: &mut Tails, list: &[u8], revs: &[u64], group: usize) {
        for part in revs.chunks(group) {
            let mut staged = tails.stage(db as &dyn Source);
            for &r in part {
                staged.append_revision(list.to_vec(), r).unwrap();
            }
            let mut batch = sled::Batch::default();
            staged.write_into(&mut batch);
            let changed = staged.into_changed();
            db.apply_batch(batch).unwrap();
            tails.absorb(changed);
        }
    }

    #[test]
    fn version_lists_find_every_version_across_chunks_and_restarts() {
        let (_dir, db) = db();
        let list = b"verc/p\0c\0".to_vec();
        let versions = 3 * CHUNK as u64 + 5;
        let revision_of = |v: u64| v * 10 + 7;
        // Two committer lifetimes: the second starts with no memory of tails.
        for (from, to) in [(1, CHUNK as u64 + 3), (CHUNK as u64 + 4, versions)] {
            let tails = Tails::default();
            for v in from..=to {
                let mut staged = tails.stage(&db as &dyn Source);
                staged
                    .append_version(list.clone(), v, revision_of(v))
                    .unwrap();
                let mut batch = sled::Batch::default();
                staged.write_into(&mut batch);
                db.apply_batch(batch).unwrap();
            }
        }
        for v in 1..=versions {
            assert_eq!(
                version_entry(&db, &list, v).unwrap(),
                Some(revision_of(v)),
                "v{v}"
            );
        }
        assert_eq!(version_entry(&db, &list, versions + 1).unwrap(), None);
        assert_eq!(version_entry(&db, &list, 0).unwrap(), None);
        let all: Vec<u64> = entries(&db, &list).map(|e| e.unwrap()).collect();
        assert_eq!(all, (1..=versions).map(revision_of).collect::<Vec<_>>());
        let chunks = sled::Tree::scan_prefix(&db, &list).count();
        assert_eq!(chunks, 4, "full chunks of {CHUNK} and one open tail");
    }

    #[test]
    fn forgotten_tails_are_read_back_and_appends_continue() {
        let (_dir, db) = db();
        let mut tails = Tails::with_capacity(2);
        let lists: Vec<Vec<u8>> = ["a", "b", "c"]
            .iter()
            .map(|l| format!("prevc/{l}\0").into_bytes())
            .collect();
        let version_list = b"verc/p\0c\0".to_vec();
        let mut next = 1u64;
        let mut written: Vec<Vec<u64>> = vec![Vec::new(); lists.len()];
        // Three rounds over the lists, each list written in its own group, so
        // that every list is forgotten before it is appended to again.
        for round in 0..3 {
            for (i, list) in lists.iter().enumerate() {
                let revs: Vec<u64> = (next..next + 5).collect();
                next += 5;
                append_revisions(&db, &mut tails, list, &revs, 5);
                written[i].extend(revs);
                assert!(tails.known.len() <= 2);
            }
            // A version list forgotten in the middle of a chunk (versions
            // 3 and 4 of round 1 follow 1 and 2 of round 0 from the store).
            let mut staged = tails.stage(&db as &dyn Source);
            for v in [round * 2 + 1, round * 2 + 2] {
                staged
                    .append_version(version_list.clone(), v, v * 100)
                    .unwrap();
            }
            let mut batch = sled::Batch::default();
            staged.write_into(&mut batch);
            let changed = staged.into_changed();
            db.apply_batch(batch).unwrap();
            tails.absorb(changed);
        }
        assert!(
            !tails.known.contains(&lists[0]),
            "the least recently written went first"
        );
        for (list, revs) in lists.iter().zip(&written) {
            let all: Vec<u64> = entries(&db, list).map(|e| e.unwrap()).collect();
            assert_eq!(&all, revs);
        }
        for v in 1..=6 {
            assert_eq!(version_entry(&db, &version_list, v).unwrap(), Some(v * 100));
        }
    }

    #[test]
    fn a_version_out_of_step_is_refused() {
        let (_dir, db) = db();
        let list = b"verc/p\0c\0".to_vec();
        let tails = Tails::default();
        let mut staged = tails.stage(&db as &dyn Source);
        staged.append_version(list.clone(), 1, 5).unwrap();
        assert!(staged.append_version(list.clone(), 3, 6).is_err());
    }

    #[test]
    fn revision_lists_seek_from_any_revision_and_answer_membership() {
        let (_dir, db) = db();
        let list = b"prevc/p\0".to_vec();
        let mut tails = Tails::default();
        let revs: Vec<u64> = (1..=300).map(|i| i * 3).collect();
        append_revisions(&db, &mut tails, &list, &revs[..100], 7);
        // A new committer (no tails in memory) continues the same list.
        let mut tails = Tails::default();
        append_revisions(&db, &mut tails, &list, &revs[100..], 64);
        for from in [0, 1, 3, 4, 190, 192, 193, 450, 899, 900, 901] {
            let got: Vec<u64> = entries_from(&db, &list, from)
                .unwrap()
                .map(|e| e.unwrap())
                .collect();
            let want: Vec<u64> = revs.iter().copied().filter(|&r| r >= from).collect();
            assert_eq!(got, want, "from {from}");
        }
        for r in [3, 192, 195, 900] {
            assert!(contains(&db, &list, r).unwrap(), "{r}");
        }
        for r in [0, 1, 194, 901] {
            assert!(!contains(&db, &list, r).unwrap(), "{r}");
        }
        // Another list under a longer prefix is not mixed in.
        append_revisions(&db, &mut tails, b"prevc/p2\0", &[1000], 1);
        assert_eq!(entries(&db, &list).count(), revs.len());
        // Appending a revision below the list's last one is refused.
        let tails = Tails::default();
        let mut staged = tails.stage(&db as &dyn Source);
        assert!(staged.append_revision(list.clone(), 5).is_err());
    }
}
