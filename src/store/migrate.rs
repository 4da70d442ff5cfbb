//! Upgrading a store written by an older schema, on open.
//!
//! # Schema 1 → 2: chunked index lists
//!
//! Schema 1 kept one sled key per index entry (`ver/`, `prev/`, `ptl/`);
//! schema 2 keeps the same lists in chunks (`verc/`, `prevc/`, `ptlc/`, see
//! [`super::index`]). The log and the latest states do not change.
//!
//! The upgrade survives a crash at any point:
//!
//! 1. While the schema record still says 1, chunk keys are scratch: any left
//!    by an interrupted upgrade are removed, then every list is rebuilt from
//!    the schema-1 keys, in batches.
//! 2. One write flips the schema record to 2, and the store is flushed. From
//!    here on the chunks are the indexes.
//! 3. The schema-1 keys are removed in batches. A crash here leaves some
//!    behind; every open of a schema-2 store removes leftovers first.
//!
//! # Schema 2 → 3: the log in blocks
//!
//! Schema 2 kept one `rev/` key per revision; schema 3 packs consecutive
//! revisions into `log/` blocks of up to 64 (see [`super::log`]). The entries'
//! bytes are copied as they are. The same three steps make it crash-safe:
//! blocks are scratch until the schema record says 3, then the `rev/` keys are
//! removed, and any an interrupted upgrade left are removed on every open.
//!
//! # Schema 3 → 4: derived records written back
//!
//! Schema 4 writes the latest states and index chunks behind the log (see
//! [`super::records`]), and records in `meta/derived-through` the revision
//! they reflect. A schema-3 store's derived records reflect its whole log, so
//! the upgrade is one atomic write of that record (the head) and the schema
//! record. The schema number changes so that an older binary, which would
//! not rebuild records behind the log, refuses the store.

use tracing::info;

use super::index::{chunk_key, CHUNK};
use super::keys::{self, v1, v2};
use super::log::{self, BLOCK};
use crate::error::Result;

/// Keys written or removed per sled batch while upgrading.
const BATCH_KEYS: usize = 10_000;

/// Upgrades a schema-1 store to schema 2 (see the module doc).
pub fn v1_to_v2(db: &sled::Db) -> Result<()> {
    info!("upgrading the store from schema 1 to 2 (chunked indexes)");
    for prefix in [
        keys::VERSION_LISTS,
        keys::PLAN_REV_LISTS,
        keys::PARTY_REV_LISTS,
    ] {
        remove_prefix(db, prefix)?;
    }
    let mut lists = 0usize;
    // ver/{list}{u64be version} → u64be revision; versions run 1, 2, 3, …
    lists += rebuild(db, v1::VERSION, keys::VERSION_LISTS, |key, value| {
        (keys::trailing_u64(key), keys::trailing_u64(value))
    })?;
    // prev/ and ptl/: {list}{u64be revision} → empty.
    for (old, new) in [
        (v1::PLAN_REVS, keys::PLAN_REV_LISTS),
        (v1::PARTY_REVS, keys::PARTY_REV_LISTS),
    ] {
        lists += rebuild(db, old, new, |key, _| {
            let revision = keys::trailing_u64(key);
            (revision, revision)
        })?;
    }
    db.insert(keys::SCHEMA, &2u32.to_be_bytes())?;
    db.flush()?;
    info!(
        lists,
        "store upgraded to schema 2; removing the schema-1 index keys (once; about 30 s per million revisions)"
    );
    remove_v1_leftovers(db)
}

/// Upgrades a schema-2 store to schema 3 (see the module doc).
pub fn v2_to_v3(db: &sled::Db) -> Result<()> {
    info!("upgrading the store from schema 2 to 3 (the log in blocks)");
    remove_prefix(db, keys::LOG)?;
    let mut batch = sled::Batch::default();
    let mut in_batch = 0;
    let mut blocks = 0usize;
    // The open block: its first revision, entry count and bytes.
    let mut open: Option<(u64, usize, Vec<u8>)> = None;
    for item in db.scan_prefix(v2::REV) {
        let (key, value) = item?;
        let number = keys::trailing_u64(&key);
        let continues = matches!(&open, Some((first, count, block))
            if log::has_room(*count, block, value.len()) && first + *count as u64 == number);
        if !continues {
            if let Some((first, _, block)) = open.take() {
                batch.insert(keys::log_block(first), block);
                in_batch += 1;
                blocks += 1;
            }
            open = Some((number, 0, Vec::new()));
        }
        if let Some((_, count, block)) = &mut open {
            log::push_entry(block, &value)?;
            *count += 1;
        }
        if in_batch >= BATCH_KEYS / BLOCK {
            db.apply_batch(std::mem::take(&mut batch))?;
            in_batch = 0;
        }
    }
    if let Some((first, _, block)) = open.take() {
        batch.insert(keys::log_block(first), block);
        blocks += 1;
    }
    db.apply_batch(batch)?;
    db.insert(keys::SCHEMA, &3u32.to_be_bytes())?;
    db.flush()?;
    info!(
        blocks,
        "store upgraded to schema 3; removing the schema-2 log keys (once)"
    );
    remove_v2_leftovers(db)
}

/// Upgrades a schema-3 store to schema 4 (see the module doc).
pub fn v3_to_v4(db: &sled::Db) -> Result<()> {
    let head = log::head(db)?;
    let mut batch = sled::Batch::default();
    batch.insert(keys::DERIVED_THROUGH, &head.to_be_bytes());
    batch.insert(keys::SCHEMA, &4u32.to_be_bytes());
    db.apply_batch(batch)?;
    db.flush()?;
    info!(head, "store upgraded to schema 4");
    Ok(())
}

/// Removes the schema-2 log keys left by an interrupted upgrade (none on a
/// store that never had schema 2).
pub fn remove_v2_leftovers(db: &sled::Db) -> Result<()> {
    let removed = remove_prefix(db, v2::REV)?;
    if removed > 0 {
        db.flush()?;
        info!(removed, "removed the schema-2 log keys");
    }
    Ok(())
}

/// Removes the schema-1 index keys left by an interrupted upgrade (none on
/// a store that never had schema 1).
pub fn remove_v1_leftovers(db: &sled::Db) -> Result<()> {
    let mut removed = 0;
    for prefix in [v1::VERSION, v1::PLAN_REVS, v1::PARTY_REVS] {
        removed += remove_prefix(db, prefix)?;
    }
    if removed > 0 {
        db.flush()?;
        info!(removed, "removed the schema-1 index keys");
    }
    Ok(())
}

fn remove_prefix(db: &sled::Db, prefix: &[u8]) -> Result<usize> {
    let mut removed = 0;
    loop {
        let mut batch = sled::Batch::default();
        let mut n = 0;
        for key in db.scan_prefix(prefix).keys().take(BATCH_KEYS) {
            batch.remove(key?);
            n += 1;
        }
        if n == 0 {
            return Ok(removed);
        }
        db.apply_batch(batch)?;
        removed += n;
    }
}

/// Packs the entries under `old` (one key each, ascending within a list)
/// into chunks under `new`; `entry` gives each key's (ordinal, value).
/// Returns the number of lists.
fn rebuild(
    db: &sled::Db,
    old: &[u8],
    new: &[u8],
    entry: impl Fn(&[u8], &[u8]) -> (u64, u64),
) -> Result<usize> {
    let mut batch = sled::Batch::default();
    let mut in_batch = 0;
    let mut lists = 0;
    // The open chunk: its list, first ordinal and packed entries.
    let mut open: Option<(Vec<u8>, u64, Vec<u8>)> = None;
    let close = |(list, start, packed): (Vec<u8>, u64, Vec<u8>), batch: &mut sled::Batch| {
        batch.insert(chunk_key(&list, start), packed);
    };
    for item in db.scan_prefix(old) {
        let (key, value) = item?;
        let mut list = new.to_vec();
        list.extend_from_slice(&key[old.len()..key.len() - 8]);
        let (ordinal, value) = entry(&key, &value);
        match &mut open {
            Some((open_list, _, packed)) if *open_list == list && packed.len() < CHUNK * 8 => {
                packed.extend_from_slice(&value.to_be_bytes());
            }
            _ => {
                if let Some(chunk) = open.take() {
                    if chunk.0 != list {
                        lists += 1;
                    }
                    close(chunk, &mut batch);
                    in_batch += 1;
                }
                open = Some((list, ordinal, value.to_be_bytes().to_vec()));
            }
        }
        if in_batch >= BATCH_KEYS {
            db.apply_batch(std::mem::take(&mut batch))?;
            in_batch = 0;
        }
    }
    if let Some(chunk) = open.take() {
        lists += 1;
        close(chunk, &mut batch);
    }
    db.apply_batch(batch)?;
    Ok(lists)
}
