//! The revision log, in blocks: one sled key per committed group of up to
//! [`BLOCK`] consecutive revisions (and [`BLOCK_BYTES`], unless one revision is
//! larger) instead of one key per revision.
//!
//! sled 0.34's cost per commit follows the number of new keys much more than
//! their bytes (`examples/sled_layouts.rs`: half the CPU with blocks), and the
//! log entry was the one new key every revision still added.
//!
//! # Layout
//!
//! `log/{u64be first revision}` → the block's entries, each
//! `[u32be length][postcard Revision]`, for revisions `first`, `first + 1`, …
//! in order. A block is written once, by the commit that made its revisions,
//! and never changed; a group of more than fits in one writes several. The
//! byte bound keeps every sled record out of sled's unsynced blob files (see
//! `store::SEGMENT_SIZE`).
//!
//! # Invariants
//!
//! - Blocks are gap-free: each starts right after the previous block's last
//!   revision, the first at 1. So the head is the last block's first revision
//!   plus its entry count, minus one, and revision numbers need no index.
//! - Reading revision `n` finds the last block starting at or before `n` (one
//!   seek) and decodes only entry `n - first`.

use sled::IVec;

use super::{decode, encode, keys};
use crate::domain::Revision;
use crate::error::{Error, Result};

/// Most revisions in one block.
pub const BLOCK: usize = 64;

/// Most bytes in one block, unless its one revision is larger: this bounds
/// the records sled writes (see `store::SEGMENT_SIZE`).
pub const BLOCK_BYTES: usize = 64 * 1024;

/// Appends `revisions` (consecutive, oldest first) to `batch` as blocks of at
/// most [`BLOCK`] revisions and [`BLOCK_BYTES`] bytes (a revision larger than
/// that gets a block of its own).
pub fn write_blocks(batch: &mut sled::Batch, revisions: &[Revision]) -> Result<()> {
    let mut block = Vec::new();
    let mut first = 0;
    let mut count = 0;
    for rev in revisions {
        let entry = encode(rev)?;
        if count > 0 && !has_room(count, &block, entry.len()) {
            batch.insert(keys::log_block(first), std::mem::take(&mut block));
            count = 0;
        }
        if count == 0 {
            first = rev.revision;
        }
        push_entry(&mut block, &entry)?;
        count += 1;
    }
    if count > 0 {
        batch.insert(keys::log_block(first), block);
    }
    Ok(())
}

/// Whether a block of `count` entries (`block` bytes) can take one more entry
/// of `entry_len` bytes within [`BLOCK`] and [`BLOCK_BYTES`].
pub fn has_room(count: usize, block: &[u8], entry_len: usize) -> bool {
    count < BLOCK && block.len() + 4 + entry_len <= BLOCK_BYTES
}

/// Appends one encoded revision record to a block.
pub fn push_entry(block: &mut Vec<u8>, entry: &[u8]) -> Result<()> {
    let len = u32::try_from(entry.len())
        .map_err(|_| Error::Storage("a revision record exceeds 4 GiB".into()))?;
    block.extend_from_slice(&len.to_be_bytes());
    block.extend_from_slice(entry);
    Ok(())
}

/// The entries of a block, in order.
pub fn entries(block: &[u8]) -> Result<Vec<&[u8]>> {
    let mut out = Vec::new();
    let mut rest = block;
    while !rest.is_empty() {
        let (entry, tail) = split_entry(rest)?;
        out.push(entry);
        rest = tail;
    }
    Ok(out)
}

/// Entry `index` of a block, if it has that many.
fn nth_entry(block: &[u8], index: usize) -> Result<Option<&[u8]>> {
    let mut rest = block;
    for _ in 0..index {
        if rest.is_empty() {
            return Ok(None);
        }
        rest = split_entry(rest)?.1;
    }
    if rest.is_empty() {
        return Ok(None);
    }
    Ok(Some(split_entry(rest)?.0))
}

/// The first entry of `bytes` and what follows it.
fn split_entry(bytes: &[u8]) -> Result<(&[u8], &[u8])> {
    let (len, tail) = bytes
        .split_first_chunk::<4>()
        .ok_or_else(|| Error::Storage("a log block ends inside an entry's length".into()))?;
    let len = u32::from_be_bytes(*len) as usize;
    if tail.len() < len {
        return Err(Error::Storage("a log block ends inside an entry".into()));
    }
    Ok(tail.split_at(len))
}

/// The block holding `revision`, if any block starts at or before it: its
/// first revision and bytes.
fn block_at_or_before(db: &sled::Db, revision: u64) -> Result<Option<(u64, IVec)>> {
    match db
        .range(keys::LOG.to_vec()..=keys::log_block(revision))
        .next_back()
    {
        None => Ok(None),
        Some(item) => {
            let (key, block) = item?;
            Ok(Some((keys::trailing_u64(&key), block)))
        }
    }
}

/// Revision `revision` as stored (without `previous`).
pub fn entry(db: &sled::Db, revision: u64) -> Result<Option<Revision>> {
    let Some((first, block)) = block_at_or_before(db, revision)? else {
        return Ok(None);
    };
    match nth_entry(&block, (revision - first) as usize)? {
        Some(bytes) => Ok(Some(decode(bytes)?)),
        None => Ok(None),
    }
}

/// The latest revision (0 for an empty log).
pub fn head(db: &sled::Db) -> Result<u64> {
    match db.scan_prefix(keys::LOG).next_back() {
        None => Ok(0),
        Some(item) => {
            let (key, block) = item?;
            let mut count = 0u64;
            let mut rest = &block[..];
            while !rest.is_empty() {
                rest = split_entry(rest)?.1;
                count += 1;
            }
            match count {
                0 => Err(Error::Storage("the last log block is empty".into())),
                n => Ok(keys::trailing_u64(&key) + n - 1),
            }
        }
    }
}

/// Revisions `from..=to` as stored, oldest first, at most `limit`.
pub fn range(db: &sled::Db, from: u64, to: u64, limit: usize) -> Result<Vec<Revision>> {
    let mut out = Vec::new();
    let from = from.max(1);
    if from > to || limit == 0 {
        return Ok(out);
    }
    let start = match block_at_or_before(db, from)? {
        Some((first, _)) => first,
        None => from,
    };
    for item in db.range(keys::log_block(start)..=keys::log_block(to)) {
        let (key, block) = item?;
        let first = keys::trailing_u64(&key);
        for (i, bytes) in entries(&block)?.into_iter().enumerate() {
            let number = first + i as u64;
            if number < from {
                continue;
            }
            if number > to || out.len() >= limit {
                return Ok(out);
            }
            out.push(decode(bytes)?);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rev(n: u64) -> Revision {
        Revision {
            reason: format!("r{n}"),
            ..Revision::bare(n)
        }
    }

    #[test]
    fn groups_of_any_size_read_back_one_by_one_and_by_range() {
        let dir = tempfile::tempdir().unwrap();
        let db = sled::Config::new().path(dir.path()).open().unwrap();
        assert_eq!(head(&db).unwrap(), 0);
        assert!(entry(&db, 1).unwrap().is_none());
        // Groups of 1, of a full block, of more than a block, and a tail.
        let mut next = 1u64;
        for group in [1, BLOCK, 2 * BLOCK + 3, 5] {
            let revisions: Vec<Revision> = (next..next + group as u64).map(rev).collect();
            let mut batch = sled::Batch::default();
            write_blocks(&mut batch, &revisions).unwrap();
            db.apply_batch(batch).unwrap();
            next += group as u64;
        }
        let last = next - 1;
        assert_eq!(head(&db).unwrap(), last);
        assert_eq!(db.scan_prefix(keys::LOG).count(), 1 + 1 + 3 + 1);
        for n in 1..=last {
            assert_eq!(entry(&db, n).unwrap().unwrap().reason, format!("r{n}"));
        }
        assert!(entry(&db, last + 1).unwrap().is_none());
        let numbers = |from, to, limit| -> Vec<u64> {
            range(&db, from, to, limit)
                .unwrap()
                .iter()
                .map(|r| r.revision)
                .collect()
        };
        assert_eq!(numbers(0, last, usize::MAX), (1..=last).collect::<Vec<_>>());
        assert_eq!(numbers(60, 70, usize::MAX), (60..=70).collect::<Vec<_>>());
        assert_eq!(numbers(60, 70, 3), vec![60, 61, 62]);
        assert_eq!(numbers(last - 1, last + 10, 10), vec![last - 1, last]);
        assert!(numbers(last + 1, last + 10, 10).is_empty());
        assert!(numbers(5, 4, 10).is_empty());
    }

    #[test]
    fn blocks_stay_under_their_byte_bound_and_a_larger_revision_gets_its_own() {
        let dir = tempfile::tempdir().unwrap();
        let db = sled::Config::new().path(dir.path()).open().unwrap();
        // 20 KB revisions (three fit in a block), with one of 100 KB among them.
        let big = |n: u64, bytes: usize| Revision {
            reason: format!("r{n} {}", "x".repeat(bytes)),
            ..Revision::bare(n)
        };
        let revisions: Vec<Revision> = (1..=10)
            .map(|n| big(n, if n == 5 { 100_000 } else { 20_000 }))
            .collect();
        let mut batch = sled::Batch::default();
        write_blocks(&mut batch, &revisions).unwrap();
        db.apply_batch(batch).unwrap();
        let blocks: Vec<(u64, usize, usize)> = db
            .scan_prefix(keys::LOG)
            .map(|kv| {
                let (key, value) = kv.unwrap();
                let first = u64::from_be_bytes(key[keys::LOG.len()..].try_into().unwrap());
                (first, entries(&value).unwrap().len(), value.len())
            })
            .collect();
        let firsts: Vec<u64> = blocks.iter().map(|b| b.0).collect();
        assert_eq!(firsts, vec![1, 4, 5, 6, 9], "blocks: {blocks:?}");
        for (first, count, bytes) in blocks {
            assert!(
                bytes <= BLOCK_BYTES || count == 1,
                "block {first}: {bytes} bytes"
            );
        }
        assert_eq!(head(&db).unwrap(), 10);
        for n in 1..=10 {
            assert!(entry(&db, n)
                .unwrap()
                .unwrap()
                .reason
                .starts_with(&format!("r{n} ")));
        }
    }

    #[test]
    fn a_truncated_block_is_an_error_not_a_shorter_log() {
        let block = {
            let mut batch = sled::Batch::default();
            write_blocks(&mut batch, &[rev(1), rev(2)]).unwrap();
            let dir = tempfile::tempdir().unwrap();
            let db = sled::Config::new().path(dir.path()).open().unwrap();
            db.apply_batch(batch).unwrap();
            db.get(keys::log_block(1)).unwrap().unwrap().to_vec()
        };
        assert_eq!(entries(&block).unwrap().len(), 2);
        for cut in [1, 3, block.len() - 1] {
            assert!(entries(&block[..cut]).is_err(), "cut at {cut}");
        }
    }
}
