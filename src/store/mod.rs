//! The embedded store: one sled tree, a revision log, latest-state records and
//! indexes, all written by one [`Committer`].
//!
//! # Revisions against time
//!
//! Every committed change gets the next number of ONE global counter (1, 2, 3,
//! … with no gaps, like etcd's). A clause also counts its own versions:
//!
//! ```text
//!  revision:     1        2        3        4        5        6
//!  change:   PLAN_CREATED  p1 v1    p2 v1    p1 v2    PARTY   p1 v3
//!                                                     ADDED
//!  p1 state:      -        v1       v1       v2       v2       v3
//! ```
//!
//! Reading "p1 at revision 5" finds the greatest version whose revision is at
//! or below 5 (v2, committed at 4) by binary search over the version index, and
//! decodes the clause snapshot stored in that revision. Nothing is replayed.
//!
//! # Key layout (one sled tree; integers big-endian so byte order is numeric order)
//!
//! | key | value |
//! |---|---|
//! | `meta/schema` | `u32be` schema version ([`SCHEMA_VERSION`]) |
//! | `meta/derived-through` | `u64be`: the revision through which the records below the log in this table (latest states, index chunks) reflect the log |
//! | `log/{first rev}` | a block of up to 64 consecutive revision records and 64 KiB (one record if larger), each metadata plus the clause (or plan) *after* the change (see the `log` module) |
//! | `plan/{plan}` | the plan's latest state |
//! | `clause/{plan}\0{clause}` | the clause's latest state |
//! | `verc/{plan}\0{clause}\0{first version}` | chunk of the revisions that made each version |
//! | `prevc/{plan}\0{first rev}` | chunk of a plan's revisions |
//! | `ptlc/{plan}\0{party}\0{first rev}` | chunk of a party's stance timeline |
//! | `req/{request_id}` | idempotency record: request fingerprint, first revision, count |
//! | `reqrev/{rev}` | request id, to prune the idempotency window oldest first |
//!
//! The three indexes are lists of `u64` packed into chunks of up to 64 entries
//! (see the `index` module): sled's cost per commit follows the number of new keys, and
//! chunks add one key per 64 entries instead of one per entry.
//!
//! The state *before* a change is not stored twice: reading revision R of a
//! clause at version v also reads the revision of version v-1 (via `verc/`).
//!
//! # Invariants
//!
//! - The log is the truth. A commit writes its log block(s) and idempotency
//!   records in ONE `sled::Batch`, so a crash leaves all of it or none.
//! - Latest states and index chunks are *derived* from the log. The committer
//!   keeps a group's derived records in memory, in front of sled for every
//!   read, and writes them to sled every 100 ms in one batch with
//!   `meta/derived-through`; opening the store rebuilds those of later
//!   revisions from the log (see the `records` module). So sled's derived
//!   records always reflect exactly the log through `meta/derived-through`.
//! - [`Store::head`] is the last revision whose derived records are visible:
//!   a read bounded by it sees every index entry and latest state up to it.
//! - `clause/…` and `plan/…` (as reads see them) always equal the snapshot in
//!   the revision named by their `mod_revision` (checked on open; fully by
//!   [`Store::check`]).
//! - Every record is far below a quarter of sled's segment size, so sled
//!   writes it to its fsynced log, never to an unsynced blob file (see
//!   [`SEGMENT_SIZE`]).
//! - The log is gap-free from 1 to the head; commit times never decrease along
//!   it, which is what lets [`Store::revision_at_time`] binary-search it.

mod committer;
mod index;
mod integrity;
pub mod keys;
mod log;
mod migrate;
mod records;

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{de::DeserializeOwned, Deserialize, Serialize};
use tracing::warn;

pub use committer::{Committer, CommitterHandle, Durability, RELAXED_FLUSH_MS, WRITE_BACK_EVERY};
pub use integrity::CheckReport;
use records::Source;

use crate::domain::{Clause, Plan, Revision, StateView, Timestamp};
use crate::error::{Error, Result};

/// Version of the on-disk layout described in the module doc. Older schemas
/// (1: one key per index entry, 2: one key per revision, 3: derived records
/// written with every commit) are upgraded on open, see the `migrate` module.
pub const SCHEMA_VERSION: u32 = 4;

/// How long idempotency records are kept at the least: the newer of the last
/// [`REQUEST_WINDOW_REVISIONS`] revisions and the last [`REQUEST_WINDOW_SECS`].
pub const REQUEST_WINDOW_REVISIONS: u64 = 100_000;
/// See [`REQUEST_WINDOW_REVISIONS`].
pub const REQUEST_WINDOW_SECS: i64 = 24 * 60 * 60;

/// What an idempotent request committed (AIP-155).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestRecord {
    /// SHA-256 of the author and the writes, to tell a retry from a reuse.
    pub fingerprint: [u8; 32],
    /// First revision the request committed.
    pub first_revision: u64,
    /// How many consecutive revisions it committed.
    pub count: u64,
    /// When.
    pub commit_time: Timestamp,
}

/// Which revisions a listing wants.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct RevisionFilter {
    /// Only this plan's revisions.
    pub plan_id: Option<String>,
    /// Only this clause's revisions (needs `plan_id`).
    pub clause_id: Option<String>,
    /// Only this party's stance changes (needs `plan_id`).
    pub party_id: Option<String>,
}

/// Handle on the embedded store. Cheap to clone; reads are safe from any thread.
#[derive(Clone)]
pub struct Store {
    db: sled::Db,
    shared: Arc<Shared>,
}

/// What every handle on one open store shares.
#[derive(Default)]
struct Shared {
    /// Derived records committed but not yet written to sled (see `records`).
    unwritten: records::Unwritten,
    /// The last revision whose derived records are visible: [`Store::head`].
    head: AtomicU64,
}

pub(crate) fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>> {
    postcard::to_stdvec(value).map_err(|e| Error::Storage(format!("cannot encode record: {e}")))
}

pub(crate) fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T> {
    Ok(postcard::from_bytes(bytes)?)
}

/// Records copied per batch by [`Store::compact`].
const COMPACT_BATCH: usize = 10_000;

/// What [`Store::compact`] did.
#[derive(Debug)]
pub struct Compacted {
    /// Revisions in the store.
    pub revisions: u64,
    /// Size of the data dir before.
    pub bytes_before: u64,
    /// Size of the compacted data dir.
    pub bytes_after: u64,
    /// Where the old data dir was kept.
    pub kept: std::path::PathBuf,
}

/// Total size of the files under `dir`.
fn dir_size(dir: &Path) -> std::io::Result<u64> {
    let mut total = 0;
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let meta = entry.metadata()?;
        total += if meta.is_dir() {
            dir_size(&entry.path())?
        } else {
            meta.len()
        };
    }
    Ok(total)
}

/// How long opening waits for sled's lock on the data dir. sled's background
/// threads can hold it for a moment after the last handle on a store is
/// dropped, so a restart (or the shutdown checkpoint) right after a clean stop
/// can find it still held. A store held by another live process is still
/// refused, after this wait.
pub const LOCK_PATIENCE: Duration = Duration::from_secs(5);

/// sled's segment size (its unit of log writing and space reuse) for new stores.
///
/// # Why not sled's default (512 KiB)
///
/// sled 0.34 writes any log message larger than a quarter of a segment to a file
/// of its own under `blobs/`, and never fsyncs those files: only its main log
/// file is fsynced. The log keeps a pointer to the blob, so a power loss could
/// keep the pointer and lose the blob. With 512 KiB segments that happened in
/// normal use (a log block of 64 revisions, or a leaf holding several, is over
/// 128 KiB). With 16 MiB segments the threshold is 4 MiB, and nothing we store
/// comes near it: a sled leaf holds at most 17 records, and our largest records
/// are bounded. A log block holds at most 64 KiB (`log::BLOCK_BYTES`) unless it
/// is a single revision, and a clause at most
/// [`crate::domain::limits::MAX_CLAUSE_TEXT`] of text. So every message sled
/// writes goes to its fsynced log.
/// `tests/write_safety.rs` checks that `blobs/` stays empty under large writes.
///
/// sled cannot change a store's segment size; stores created with the default
/// keep it (see [`segment_size_of`]) until `peace-tracker compact` rewrites them.
pub const SEGMENT_SIZE: usize = 16 * 1024 * 1024;

/// sled's default segment size, which stores made before [`SEGMENT_SIZE`] use.
pub const LEGACY_SEGMENT_SIZE: usize = 512 * 1024;

/// The segment size to open `dir` with: the one sled recorded in its `conf`
/// file when it created the store, or [`SEGMENT_SIZE`] for a new store.
pub fn segment_size_of(dir: &Path) -> Result<usize> {
    let conf = dir.join("conf");
    // sled writes `key: value` lines followed by a binary checksum.
    let text = match std::fs::read(&conf) {
        Ok(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(SEGMENT_SIZE),
        Err(e) => {
            return Err(Error::Storage(format!(
                "cannot read {}: {e}",
                conf.display()
            )))
        }
    };
    text.lines()
        .find_map(|line| line.strip_prefix("segment_size: "))
        .and_then(|value| value.trim().parse().ok())
        .ok_or_else(|| {
            Error::Storage(format!(
                "{} names no segment size; is it a sled 0.34 store?",
                conf.display()
            ))
        })
}

/// Opens the sled database in `dir` with the store's settings, waiting up to
/// `patience` while its lock is held.
fn open_db(dir: &Path, flush_every_ms: Option<u64>, patience: Duration) -> Result<sled::Db> {
    open_db_with(dir, segment_size_of(dir)?, flush_every_ms, patience)
}

/// [`open_db`] with the segment size already read from `dir`.
fn open_db_with(
    dir: &Path,
    segment_size: usize,
    flush_every_ms: Option<u64>,
    patience: Duration,
) -> Result<sled::Db> {
    let started = Instant::now();
    loop {
        let opened = sled::Config::new()
            .path(dir)
            .flush_every_ms(flush_every_ms)
            .mode(sled::Mode::HighThroughput)
            .segment_size(segment_size)
            .open();
        match opened {
            Ok(db) => return Ok(db),
            Err(sled::Error::Io(e))
                if e.to_string().starts_with("could not acquire lock")
                    && started.elapsed() < patience =>
            {
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(e) => {
                return Err(Error::Storage(format!(
                    "cannot open store at {}: {e}",
                    dir.display()
                )))
            }
        }
    }
}

/// The store's sled database itself, opened with the store's settings (and
/// waiting for its lock as [`Store::open`] does), without upgrades, rebuilds or
/// checks: for inspection and for tests that plant damage or old layouts.
/// Writing to it bypasses every invariant of the store.
pub fn open_raw(dir: &Path) -> Result<sled::Db> {
    open_db(dir, None, LOCK_PATIENCE)
}

impl Store {
    /// Writes sled's snapshot of its page table, so that the next start need
    /// not replay the log written since the last one: the store's shutdown
    /// checkpoint.
    ///
    /// sled 0.34 writes that snapshot only while opening a store, after
    /// replaying the log written since the previous snapshot; after a million
    /// revisions that replay took over a second of the next start. Opening
    /// the store once more at a clean shutdown moves the replay there (as a
    /// database's shutdown checkpoint moves its WAL replay). A start after a
    /// crash still replays, and is still correct.
    ///
    /// Every other handle on the store must be dropped first: sled holds an
    /// exclusive lock on its files, which opening waits for up to
    /// `patience`.
    pub fn checkpoint(dir: &Path, patience: Duration) -> Result<()> {
        open_db(dir, None, patience)?.flush()?;
        Ok(())
    }

    fn from_db(db: sled::Db) -> Store {
        Store {
            db,
            shared: Arc::default(),
        }
    }

    /// Rewrites the store in `dir` into a fresh data dir, leaving out the
    /// space sled 0.34 keeps for keys that were overwritten or removed (an
    /// upgrade removes every old key, and sled does not give that space back).
    ///
    /// The store is opened (and upgraded) first. Its records are copied in
    /// batches into `{dir}.compacting`, which must then hold the same records
    /// (sled's checksum) and pass [`Store::check`]. Only then is `dir` renamed
    /// to `{dir}.before-compact`, kept for the operator to delete, and the
    /// fresh dir takes its name. If the copy or its checks fail, nothing is
    /// changed; if the last rename fails, the old dir is put back.
    pub fn compact(dir: &Path) -> Result<Compacted> {
        let name = dir
            .file_name()
            .ok_or_else(|| Error::Storage(format!("{} names no directory", dir.display())))?
            .to_string_lossy()
            .into_owned();
        let fresh_dir = dir.with_file_name(format!("{name}.compacting"));
        let kept_dir = dir.with_file_name(format!("{name}.before-compact"));
        if kept_dir.exists() {
            return Err(Error::Storage(format!(
                "{} exists (from an earlier compaction?): remove it first",
                kept_dir.display()
            )));
        }
        let io = |what: &str, e: std::io::Error| Error::Storage(format!("{what}: {e}"));
        if fresh_dir.exists() {
            std::fs::remove_dir_all(&fresh_dir)
                .map_err(|e| io("cannot remove an unfinished compaction", e))?;
        }
        let bytes_before = dir_size(dir).map_err(|e| io("cannot size the data dir", e))?;
        let old = Store::open(dir, None)?;
        let fresh = Store::from_db(open_db(&fresh_dir, None, Duration::ZERO)?);
        let mut batch = sled::Batch::default();
        let mut in_batch = 0;
        for item in old.db.iter() {
            let (key, value) = item?;
            batch.insert(key, value);
            in_batch += 1;
            if in_batch == COMPACT_BATCH {
                fresh.db.apply_batch(std::mem::take(&mut batch))?;
                in_batch = 0;
            }
        }
        fresh.db.apply_batch(batch)?;
        fresh.flush()?;
        let report = fresh.check()?;
        if old.db.checksum()? != fresh.db.checksum()? || !report.ok() {
            drop(fresh);
            let _ = std::fs::remove_dir_all(&fresh_dir);
            return Err(Error::Storage(format!(
                "the compacted copy differs from the store; nothing was changed ({})",
                report.problems.join("; ")
            )));
        }
        drop((old, fresh));
        // A snapshot, so that the first start on the fresh dir replays nothing.
        Store::checkpoint(&fresh_dir, LOCK_PATIENCE)?;
        std::fs::rename(dir, &kept_dir).map_err(|e| io("cannot set the old data dir aside", e))?;
        if let Err(e) = std::fs::rename(&fresh_dir, dir) {
            // Put the old dir back, so that the store is where it was.
            let restored = std::fs::rename(&kept_dir, dir);
            return Err(io(
                &format!(
                    "cannot move the compacted data dir into place (the old one {})",
                    if restored.is_ok() {
                        "is back"
                    } else {
                        "is still set aside"
                    }
                ),
                e,
            ));
        }
        Ok(Compacted {
            revisions: report.revisions,
            bytes_before,
            bytes_after: dir_size(dir).map_err(|e| io("cannot size the data dir", e))?,
            kept: kept_dir,
        })
    }

    /// the latest-state records agree with the revision log.
    ///
    /// `flush_every_ms` is sled's background flush period (`None` = only explicit
    /// flushes); the committer flushes explicitly in `sync` durability.
    pub fn open(dir: &Path, flush_every_ms: Option<u64>) -> Result<Store> {
        let store = Store::open_unchecked(dir, flush_every_ms)?;
        integrity::check_latest(&store)?;
        Ok(store)
    }

    /// Opens without the consistency check, for `peace-tracker check` to report on.
    pub fn open_unchecked(dir: &Path, flush_every_ms: Option<u64>) -> Result<Store> {
        let segment_size = segment_size_of(dir)?;
        let db = open_db_with(dir, segment_size, flush_every_ms, LOCK_PATIENCE)?;
        if segment_size != SEGMENT_SIZE {
            warn!(
                segment_size,
                dir = %dir.display(),
                "this store uses sled's default {} KiB segments, with which sled writes large \
                 records to blob files it never fsyncs; stop the server and run \
                 `peace-tracker compact --data-dir DIR` to rewrite it with {} MiB segments",
                segment_size / 1024,
                SEGMENT_SIZE / (1024 * 1024)
            );
        }
        let store = Store::from_db(db);
        match store.db.get(keys::SCHEMA)? {
            Some(v) => {
                let found =
                    u32::from_be_bytes(v.as_ref().try_into().map_err(|_| {
                        Error::Storage("schema version record is malformed".into())
                    })?);
                match found {
                    1 => {
                        migrate::v1_to_v2(&store.db)?;
                        migrate::v2_to_v3(&store.db)?;
                        migrate::v3_to_v4(&store.db)?;
                    }
                    2 => {
                        migrate::remove_v1_leftovers(&store.db)?;
                        migrate::v2_to_v3(&store.db)?;
                        migrate::v3_to_v4(&store.db)?;
                    }
                    3 => {
                        migrate::remove_v1_leftovers(&store.db)?;
                        migrate::remove_v2_leftovers(&store.db)?;
                        migrate::v3_to_v4(&store.db)?;
                    }
                    SCHEMA_VERSION => {
                        migrate::remove_v1_leftovers(&store.db)?;
                        migrate::remove_v2_leftovers(&store.db)?;
                    }
                    _ => {
                        return Err(Error::Storage(format!(
                            "store schema version {found} is not the supported {SCHEMA_VERSION}"
                        )))
                    }
                }
            }
            None => {
                if store.db.first()?.is_some() {
                    return Err(Error::Storage(
                        "the data dir holds records but no schema version; is it a peace-tracker store?"
                            .into(),
                    ));
                }
                let mut batch = sled::Batch::default();
                batch.insert(keys::SCHEMA, &SCHEMA_VERSION.to_be_bytes());
                batch.insert(keys::DERIVED_THROUGH, &0u64.to_be_bytes());
                store.db.apply_batch(batch)?;
                store.db.flush()?;
            }
        }
        let head = committer::rebuild_derived(&store)?;
        store.shared.head.store(head, Ordering::Release);
        Ok(store)
    }

    /// Flushes everything written so far to disk.
    pub fn flush(&self) -> Result<()> {
        self.db.flush()?;
        Ok(())
    }

    fn get<T: DeserializeOwned>(&self, key: &[u8]) -> Result<Option<T>> {
        match Source::get(self, key)? {
            Some(bytes) => Ok(Some(decode(&bytes)?)),
            None => Ok(None),
        }
    }

    /// The latest committed revision whose latest states and indexes are
    /// visible to reads (0 for an empty store).
    pub fn head(&self) -> Result<u64> {
        Ok(self.shared.head.load(Ordering::Acquire))
    }

    /// The committer's: makes a group's derived records visible, then its head.
    fn publish_derived(&self, records: Vec<(Vec<u8>, sled::IVec)>, head: u64) {
        self.shared.unwritten.extend(records);
        self.shared.head.store(head, Ordering::Release);
    }

    fn overlay(&self) -> records::Overlay<'_> {
        records::Overlay {
            db: &self.db,
            unwritten: &self.shared.unwritten,
        }
    }

    /// The latest state of a plan.
    pub fn plan(&self, plan_id: &str) -> Result<Option<Plan>> {
        self.get(&keys::plan(plan_id))
    }

    /// The plan as it stood at `revision` (`None` if it did not exist yet).
    pub fn plan_at(&self, plan_id: &str, revision: u64) -> Result<Option<Plan>> {
        Ok(self
            .plan(plan_id)?
            .filter(|p| p.create_revision <= revision)
            .map(|p| p.at_revision(revision)))
    }

    /// Plans ordered by id, starting after `after`, at most `limit`.
    pub fn plans(&self, after: Option<&str>, limit: usize) -> Result<Vec<Plan>> {
        let start = match after {
            // The smallest key greater than plan/{after}: append a zero byte.
            Some(id) => {
                let mut k = keys::plan(id);
                k.push(0);
                k
            }
            None => keys::PLAN.to_vec(),
        };
        let mut out = Vec::new();
        for item in self.scan(&start, &records::prefix_end(keys::PLAN)) {
            if out.len() >= limit {
                break;
            }
            out.push(decode(&item?.1)?);
        }
        Ok(out)
    }

    /// The latest state of a clause.
    pub fn clause(&self, plan_id: &str, clause_id: &str) -> Result<Option<Clause>> {
        self.get(&keys::clause(plan_id, clause_id))
    }

    /// The revision that made `version` of a clause.
    fn version_revision(
        &self,
        plan_id: &str,
        clause_id: &str,
        version: u64,
    ) -> Result<Option<u64>> {
        index::version_entry(self, &keys::version_list(plan_id, clause_id), version)
    }

    /// A clause at one version (`None` if that version does not exist).
    pub fn clause_version(
        &self,
        plan_id: &str,
        clause_id: &str,
        version: u64,
    ) -> Result<Option<Clause>> {
        match self.version_revision(plan_id, clause_id, version)? {
            Some(rev) => self.clause_in_revision(rev).map(Some),
            None => Ok(None),
        }
    }

    fn clause_in_revision(&self, revision: u64) -> Result<Clause> {
        let rev = log::entry(&self.db, revision)?
            .ok_or_else(|| Error::Storage(format!("revision {revision} is indexed but missing")))?;
        rev.clause
            .ok_or_else(|| Error::Storage(format!("revision {revision} holds no clause")))
    }

    /// A clause as it stood at `revision` (`None` if it did not exist yet).
    pub fn clause_at(
        &self,
        plan_id: &str,
        clause_id: &str,
        revision: u64,
    ) -> Result<Option<Clause>> {
        let Some(latest) = self.clause(plan_id, clause_id)? else {
            return Ok(None);
        };
        self.clause_at_from_latest(latest, revision)
    }

    fn clause_at_from_latest(&self, latest: Clause, revision: u64) -> Result<Option<Clause>> {
        if latest.mod_revision <= revision {
            return Ok(Some(latest));
        }
        if latest.create_revision > revision {
            return Ok(None);
        }
        // Binary search for the greatest version made at or before `revision`.
        // Version 1 qualifies (create_revision <= revision); `latest` does not.
        let (mut lo, mut hi) = (1u64, latest.version - 1);
        while lo < hi {
            let mid = lo + (hi - lo).div_ceil(2);
            let rev = self
                .version_revision(&latest.plan_id, &latest.id, mid)?
                .ok_or_else(|| Error::Storage(format!("version {mid} of {} missing", latest.id)))?;
            if rev <= revision {
                lo = mid;
            } else {
                hi = mid - 1;
            }
        }
        self.clause_version(&latest.plan_id, &latest.id, lo)
    }

    /// Every clause of a plan as it stood at `revision`, ordered by clause id.
    pub fn clauses_at(&self, plan_id: &str, revision: u64) -> Result<Vec<Clause>> {
        let mut out = Vec::new();
        for item in records::scan_prefix(self, &keys::clauses_of(plan_id)) {
            let latest: Clause = decode(&item?.1)?;
            if let Some(clause) = self.clause_at_from_latest(latest, revision)? {
                out.push(clause);
            }
        }
        Ok(out)
    }

    /// One revision, with `previous` filled in.
    pub fn revision(&self, revision: u64) -> Result<Option<Revision>> {
        match log::entry(&self.db, revision)? {
            Some(rev) => self.with_previous(rev).map(Some),
            None => Ok(None),
        }
    }

    /// Fills in `previous`: the clause at the version before this revision's.
    fn with_previous(&self, mut rev: Revision) -> Result<Revision> {
        if let (Some(clause_id), true) = (&rev.clause_id, rev.clause_version > 1) {
            rev.previous = self.clause_version(&rev.plan_id, clause_id, rev.clause_version - 1)?;
        }
        Ok(rev)
    }

    /// Consecutive revisions `from..=to` (clamped to the head), at most `limit`.
    pub fn revisions_range(&self, from: u64, to: u64, limit: usize) -> Result<Vec<Arc<Revision>>> {
        log::range(&self.db, from, to, limit)?
            .into_iter()
            .map(|rev| self.with_previous(rev).map(Arc::new))
            .collect()
    }

    /// Revision numbers matching `filter` within `from..=to`, oldest first, at most `limit`.
    pub fn revision_numbers(
        &self,
        filter: &RevisionFilter,
        from: u64,
        to: u64,
        limit: usize,
    ) -> Result<Vec<u64>> {
        let from = from.max(1);
        if from > to || limit == 0 {
            return Ok(Vec::new());
        }
        let in_range = |entries: &mut dyn Iterator<Item = Result<u64>>| -> Result<Vec<u64>> {
            let mut out = Vec::new();
            for rev in entries {
                let rev = rev?;
                if rev > to || out.len() >= limit {
                    break;
                }
                if rev >= from {
                    out.push(rev);
                }
            }
            Ok(out)
        };
        match (&filter.plan_id, &filter.clause_id, &filter.party_id) {
            // The log is gap-free from 1 to the head.
            (None, _, _) => Ok((from..=to.min(self.head()?)).take(limit).collect()),
            (Some(plan), None, None) => in_range(&mut index::entries_from(
                self,
                &keys::plan_rev_list(plan),
                from,
            )?),
            (Some(plan), Some(clause), None) => {
                in_range(&mut index::entries(self, &keys::version_list(plan, clause)))
            }
            (Some(plan), clause, Some(party)) => {
                let mut out = Vec::new();
                let list = keys::party_rev_list(plan, party);
                for rev in index::entries_from(self, &list, from)? {
                    let rev = rev?;
                    if rev > to {
                        break;
                    }
                    if let Some(clause) = clause {
                        let r = log::entry(&self.db, rev)?;
                        if r.and_then(|r| r.clause_id).as_deref() != Some(clause.as_str()) {
                            continue;
                        }
                    }
                    out.push(rev);
                    if out.len() >= limit {
                        break;
                    }
                }
                Ok(out)
            }
        }
    }

    /// The last revision committed at or before `time` (0 if none was).
    pub fn revision_at_time(&self, time: Timestamp) -> Result<u64> {
        let head = self.head()?;
        let commit_time = |rev: u64| -> Result<Timestamp> {
            let r = log::entry(&self.db, rev)?
                .ok_or_else(|| Error::Storage(format!("revision {rev} missing below the head")))?;
            Ok(r.commit_time)
        };
        // Commit times never decrease along the log: find the last one <= time.
        let (mut lo, mut hi) = (0u64, head);
        while lo < hi {
            let mid = lo + (hi - lo).div_ceil(2);
            if commit_time(mid)? <= time {
                lo = mid;
            } else {
                hi = mid - 1;
            }
        }
        Ok(lo)
    }

    /// The idempotency record of a request id, if it is within the window.
    pub fn request(&self, request_id: &str) -> Result<Option<RequestRecord>> {
        self.get(&keys::request(request_id))
    }

    /// Verifies the whole store; see [`CheckReport`].
    pub fn check(&self) -> Result<CheckReport> {
        integrity::check_all(self)
    }
}

/// The store's latest state is what writes are validated against.
impl StateView for Store {
    fn plan(&self, plan_id: &str) -> Result<Option<Plan>> {
        Store::plan(self, plan_id)
    }

    fn clause(&self, plan_id: &str, clause_id: &str) -> Result<Option<Clause>> {
        Store::clause(self, plan_id, clause_id)
    }

    fn clauses(&self, plan_id: &str) -> Result<Vec<Clause>> {
        records::scan_prefix(self, &keys::clauses_of(plan_id))
            .map(|item| decode(&item?.1))
            .collect()
    }
}

/// Reads see the committer's unwritten derived records in front of sled.
impl Source for Store {
    fn get(&self, key: &[u8]) -> Result<Option<sled::IVec>> {
        self.overlay().get(key)
    }

    fn scan<'a>(&'a self, from: &[u8], to: &[u8]) -> records::Records<'a> {
        self.overlay().scan_in(from, to)
    }

    fn last_in(&self, from: &[u8], to: &[u8]) -> Result<Option<(sled::IVec, sled::IVec)>> {
        self.overlay().last_in(from, to)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_store_locked_by_a_live_handle_is_refused_after_the_wait() {
        let dir = tempfile::tempdir().unwrap();
        let _held = open_db(dir.path(), None, Duration::ZERO).unwrap();
        let err = open_db(dir.path(), None, Duration::from_millis(60)).unwrap_err();
        assert!(err.to_string().contains("could not acquire lock"), "{err}");
    }

    #[test]
    fn a_store_released_while_opening_is_opened() {
        let dir = tempfile::tempdir().unwrap();
        let held = open_db(dir.path(), None, Duration::ZERO).unwrap();
        let path = dir.path().to_path_buf();
        let opener = std::thread::spawn(move || open_db(&path, None, LOCK_PATIENCE).map(|_| ()));
        drop(held);
        opener
            .join()
            .unwrap()
            .expect("opened once the lock was released");
    }
}
