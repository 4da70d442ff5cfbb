//! The committer: the one writer. It assigns revisions, validates every write
//! against the state it will be applied to, and group-commits.
//!
//! # One group commit
//!
//! 1. Take every job waiting in the queue (up to [`MAX_GROUP`]). A job is one
//!    write, or an `Apply` batch of several.
//! 2. For each job in arrival order: answer idempotent retries from their
//!    record; otherwise execute its writes one by one against the store's
//!    latest state *plus everything staged so far in this group* (and earlier
//!    writes of the same batch). If any write of a job fails, the job's
//!    staged changes are thrown away and it consumes no revision numbers, so
//!    the log stays gap-free and a rejected job leaves nothing behind.
//! 3. Write the group's log block(s) and idempotency records in ONE
//!    `sled::Batch`: atomic on disk. The latest states and index chunks the
//!    group changed are derived records: computed now, written to sled later
//!    (see the `records` module).
//! 4. In `sync` durability, flush (fsync) once for the whole group.
//! 5. Only then make the group's derived records and head visible to reads,
//!    publish the revisions to the hub, and acknowledge every job.
//! 6. Every [`WRITE_BACK_EVERY`] (or once [`WRITE_BACK_RECORDS`] wait), write
//!    the waiting derived records to sled in one batch with the revision they
//!    reflect. After a crash, opening the store rebuilds the records of the
//!    revisions after that one from the log ([`rebuild_derived`]).
//!
//! If the store fails, every job of the group gets a storage error and the
//! committer refuses further writes (`UNAVAILABLE`) rather than guess what
//! reached the disk; reads keep working and a restart re-checks the store.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use tokio::sync::{mpsc, oneshot};
use tracing::{debug, error, info};

use super::index::{ChangedTails, StagedTails, Tails};
use super::log;
use super::{encode, keys, RequestRecord, Store, REQUEST_WINDOW_REVISIONS, REQUEST_WINDOW_SECS};
use crate::domain::{execute, Clause, CommitContext, Plan, Revision, StateView, Timestamp, Write};
use crate::error::{Error, Result};
use crate::hub::Hub;

/// Most jobs committed in one group.
pub const MAX_GROUP: usize = 1024;
/// Jobs that may wait for the committer before submitters wait for room.
const QUEUE_DEPTH: usize = 8192;
/// Most expired idempotency records pruned per group.
const PRUNE_PER_GROUP: usize = 256;

/// When a write is acknowledged.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Durability {
    /// After the group's batch is fsynced: an acknowledged write survives a crash.
    Sync,
    /// After the batch is written to sled's in-memory log; sled flushes in the
    /// background every 500 ms, so a crash can lose the writes acknowledged in
    /// that last interval.
    // (This text is also the `--help` of the value: plain text, no doc links.
    // The period is RELAXED_FLUSH_MS; a unit test keeps the two in step.)
    Relaxed,
}

/// Background flush period in `relaxed` durability.
pub const RELAXED_FLUSH_MS: u64 = 500;

/// How often the committer writes the derived records waiting in memory to
/// sled, by default (`--write-back-ms`). A crash loses none of them (they are
/// rebuilt from the log on open); the period bounds that rebuild and the
/// records held in memory.
pub const WRITE_BACK_EVERY: Duration = Duration::from_millis(100);
/// Waiting derived records that trigger a write-back before the period ends.
pub const WRITE_BACK_RECORDS: usize = 4096;

/// A derived record: key and value.
type Record = (Vec<u8>, sled::IVec);

type Reply = oneshot::Sender<Result<Vec<Arc<Revision>>>>;

struct Job {
    writes: Vec<Write>,
    /// Whether errors should name the failing change (`changes[i]`).
    batch: bool,
    author: String,
    request_id: String,
    fingerprint: [u8; 32],
    reply: Reply,
}

/// Submits writes to the committer. Cheap to clone; the committer thread ends
/// when the last handle is dropped (after finishing what was queued).
#[derive(Clone)]
pub struct CommitterHandle {
    tx: mpsc::Sender<Job>,
}

/// The committer thread, to wait for at shutdown.
pub struct Committer {
    thread: thread::JoinHandle<()>,
}

impl Committer {
    /// Starts the committer thread over `store`, publishing to `hub`.
    pub fn start(
        store: Store,
        hub: Hub,
        durability: Durability,
        write_back_every: Duration,
    ) -> Result<(Committer, CommitterHandle)> {
        let (tx, rx) = mpsc::channel(QUEUE_DEPTH);
        let head = store.head()?;
        let last_time = match store.revision(head)? {
            Some(r) => r.commit_time,
            None => Timestamp::default(),
        };
        let mut worker = Worker {
            store,
            hub,
            durability,
            head,
            last_time,
            tails: Tails::default(),
            failed: None,
            write_back_every,
            last_write_back: Instant::now(),
            plans: PlanCache::default(),
        };
        let thread = thread::Builder::new()
            .name("committer".into())
            .spawn(move || worker.run(rx))
            .map_err(|e| Error::Storage(format!("cannot start the committer thread: {e}")))?;
        Ok((Committer { thread }, CommitterHandle { tx }))
    }

    /// Waits for the thread to finish (all handles must be dropped first).
    pub fn join(self) {
        if self.thread.join().is_err() {
            error!("committer thread panicked");
        }
    }
}

impl CommitterHandle {
    /// Commits one write; returns the revisions it committed (or, for a retry
    /// of a known `request_id`, the revisions first committed).
    pub async fn commit(
        &self,
        write: Write,
        author: &str,
        request_id: &str,
    ) -> Result<Vec<Arc<Revision>>> {
        self.submit(vec![write], false, author, request_id).await
    }

    /// Commits an atomic batch: all writes or none, consecutive revisions.
    pub async fn commit_batch(
        &self,
        writes: Vec<Write>,
        author: &str,
        request_id: &str,
    ) -> Result<Vec<Arc<Revision>>> {
        self.submit(writes, true, author, request_id).await
    }

    async fn submit(
        &self,
        writes: Vec<Write>,
        batch: bool,
        author: &str,
        request_id: &str,
    ) -> Result<Vec<Arc<Revision>>> {
        // Only an idempotent request is ever compared with another.
        let fingerprint = if request_id.is_empty() {
            [0; 32]
        } else {
            fingerprint(&writes, author)?
        };
        let (reply, answer) = oneshot::channel();
        let job = Job {
            writes,
            batch,
            author: author.to_string(),
            request_id: request_id.to_string(),
            fingerprint,
            reply,
        };
        self.tx
            .send(job)
            .await
            .map_err(|_| Error::Unavailable("the server is shutting down".into()))?;
        answer
            .await
            .map_err(|_| Error::Unavailable("the committer stopped before answering".into()))?
    }
}

/// SHA-256 over the author and the encoded writes: what makes a retry "the same request".
fn fingerprint(writes: &[Write], author: &str) -> Result<[u8; 32]> {
    let mut hasher = Sha256::new();
    hasher.update(author.as_bytes());
    hasher.update([0]);
    hasher.update(encode(&writes)?);
    Ok(hasher.finalize().into())
}

/// Plans and clauses changed by staged writes, layered over the store.
#[derive(Default)]
struct Changes {
    plans: HashMap<String, Plan>,
    clauses: HashMap<(String, String), Clause>,
}

impl Changes {
    fn absorb(&mut self, revisions: &[Revision]) {
        for rev in revisions {
            if let Some(plan) = &rev.plan {
                self.plans.insert(plan.id.clone(), plan.clone());
            }
            if let Some(clause) = &rev.clause {
                self.clauses
                    .insert((clause.plan_id.clone(), clause.id.clone()), clause.clone());
            }
        }
    }

    fn merge(&mut self, other: Changes) {
        self.plans.extend(other.plans);
        self.clauses.extend(other.clauses);
    }
}

/// What a job's writes are validated against: its own earlier writes, then the
/// group's staged writes, then the store.
struct Layered<'a> {
    job: &'a Changes,
    group: &'a Changes,
    plans: &'a PlanCache,
    store: &'a Store,
}

impl StateView for Layered<'_> {
    fn plan(&self, plan_id: &str) -> Result<Option<Plan>> {
        match self
            .job
            .plans
            .get(plan_id)
            .or_else(|| self.group.plans.get(plan_id))
        {
            Some(plan) => Ok(Some(plan.clone())),
            None => self.plans.get_or_read(plan_id, self.store),
        }
    }

    fn clause(&self, plan_id: &str, clause_id: &str) -> Result<Option<Clause>> {
        let key = (plan_id.to_string(), clause_id.to_string());
        match self
            .job
            .clauses
            .get(&key)
            .or_else(|| self.group.clauses.get(&key))
        {
            Some(clause) => Ok(Some(clause.clone())),
            None => self.store.clause(plan_id, clause_id),
        }
    }

    fn clauses(&self, plan_id: &str) -> Result<Vec<Clause>> {
        let mut by_id: BTreeMap<String, Clause> = StateView::clauses(self.store, plan_id)?
            .into_iter()
            .map(|c| (c.id.clone(), c))
            .collect();
        for layer in [self.group, self.job] {
            for ((plan, id), clause) in &layer.clauses {
                if plan == plan_id {
                    by_id.insert(id.clone(), clause.clone());
                }
            }
        }
        Ok(by_id.into_values().collect())
    }
}

/// How a job of the group is answered once the group is durable.
enum Outcome {
    /// Committed now: `staged[range]`.
    Committed(std::ops::Range<usize>),
    /// A retry of a request committed earlier (already durable).
    Replayed(Vec<Arc<Revision>>),
    /// Rejected; nothing of it is staged.
    Failed(Error),
}

struct Worker {
    store: Store,
    hub: Hub,
    durability: Durability,
    head: u64,
    last_time: Timestamp,
    /// The last chunk of each index list this committer has appended to.
    tails: Tails,
    /// Set after a storage failure: the committer then refuses every write.
    failed: Option<String>,
    /// How often derived records are written to sled ([`WRITE_BACK_EVERY`]).
    write_back_every: Duration,
    /// When derived records were last written to sled.
    last_write_back: Instant,
    /// The latest committed state of the plans writes were validated against.
    plans: PlanCache,
}

/// The committer's copy of the latest committed plans, so that validating a
/// write does not read and decode its plan from the store every time (most
/// writes are stances and clauses, which read their plan and leave it as is).
///
/// Coherent because the committer is the store's only writer: a plan enters
/// the cache as read from the store, and is replaced by the committer itself
/// right after a group that changed it is committed ([`PlanCache::committed`]),
/// never before. A group that fails to commit leaves the cache as it was (and
/// the committer refuses writes from then on). Plans are small (an id, texts
/// and a party list), and the cache is emptied when it reaches
/// [`PLAN_CACHE_LIMIT`] plans, so a store with many plans costs it a bounded
/// amount of memory.
#[derive(Default)]
struct PlanCache {
    plans: std::cell::RefCell<HashMap<String, Plan>>,
}

/// Most plans [`PlanCache`] keeps.
const PLAN_CACHE_LIMIT: usize = 256;

impl PlanCache {
    fn get_or_read(&self, plan_id: &str, store: &Store) -> Result<Option<Plan>> {
        if let Some(plan) = self.plans.borrow().get(plan_id) {
            return Ok(Some(plan.clone()));
        }
        let read = store.plan(plan_id)?;
        if let Some(plan) = &read {
            self.keep(plan.clone());
        }
        Ok(read)
    }

    /// Takes the plans of a committed group.
    fn committed(&self, group: &Changes) {
        for plan in group.plans.values() {
            self.keep(plan.clone());
        }
    }

    fn keep(&self, plan: Plan) {
        let mut plans = self.plans.borrow_mut();
        if plans.len() >= PLAN_CACHE_LIMIT && !plans.contains_key(&plan.id) {
            plans.clear();
        }
        plans.insert(plan.id.clone(), plan);
    }
}

impl Worker {
    fn run(&mut self, mut rx: mpsc::Receiver<Job>) {
        while let Some(first) = rx.blocking_recv() {
            let mut jobs = vec![first];
            while jobs.len() < MAX_GROUP {
                match rx.try_recv() {
                    Ok(job) => jobs.push(job),
                    Err(_) => break,
                }
            }
            self.commit_group(jobs);
            if self.failed.is_none()
                && (self.last_write_back.elapsed() >= self.write_back_every
                    || self.store.shared.unwritten.len() >= WRITE_BACK_RECORDS)
            {
                self.write_back();
            }
        }
        if self.failed.is_none() {
            self.write_back();
        }
        if let Err(e) = self.store.flush() {
            error!(cause = %e, "final flush failed");
        }
        info!(revision = self.head, "committer stopped");
    }

    fn commit_group(&mut self, jobs: Vec<Job>) {
        if let Some(why) = &self.failed {
            for job in jobs {
                let _ = job.reply.send(Err(Error::Unavailable(format!(
                    "writes are refused after a storage failure ({why}); restart the server"
                ))));
            }
            return;
        }
        let now = Timestamp::now();
        // Commit times never decrease along the log, even if the clock steps back.
        let commit_time = now.max(self.last_time);
        let mut group = Changes::default();
        let mut staged: Vec<Revision> = Vec::new();
        let mut requests: HashMap<String, (RequestRecord, std::ops::Range<usize>)> = HashMap::new();
        let mut answers: Vec<(Reply, Outcome)> = Vec::with_capacity(jobs.len());

        for job in jobs {
            let outcome = self.stage_job(&job, commit_time, &mut group, &mut staged, &mut requests);
            answers.push((job.reply, outcome));
        }

        let committed = staged.len();
        let mut published: Vec<Arc<Revision>> = Vec::with_capacity(committed);
        if committed > 0 {
            match self.write_group(&staged, &group, &requests, commit_time) {
                Ok((appended, derived)) => {
                    self.tails.absorb(appended);
                    self.plans.committed(&group);
                    self.head += committed as u64;
                    self.last_time = commit_time;
                    self.store.publish_derived(derived, self.head);
                    published = staged.into_iter().map(Arc::new).collect();
                    debug!(
                        revisions = committed,
                        head = self.head,
                        jobs = answers.len(),
                        "group committed"
                    );
                }
                Err(err) => {
                    error!(cause = %err, revision = self.head + 1, "commit failed; refusing further writes");
                    self.failed = Some(err.to_string());
                    for (reply, outcome) in answers {
                        let answer = match outcome {
                            Outcome::Committed(_) => Err(Error::Storage(err.to_string())),
                            Outcome::Replayed(revs) => Ok(revs),
                            Outcome::Failed(e) => Err(e),
                        };
                        let _ = reply.send(answer);
                    }
                    return;
                }
            }
        }
        // Publish before answering, so a client that watches after its write
        // was acknowledged finds the revision in the hub.
        self.hub.publish(&published);
        for (reply, outcome) in answers {
            let answer = match outcome {
                Outcome::Committed(range) => Ok(published[range].to_vec()),
                Outcome::Replayed(revs) => Ok(revs),
                Outcome::Failed(e) => Err(e),
            };
            // A submitter that went away still had its write committed.
            let _ = reply.send(answer);
        }
    }

    /// Validates and stages one job; returns how to answer it.
    fn stage_job(
        &self,
        job: &Job,
        commit_time: Timestamp,
        group: &mut Changes,
        staged: &mut Vec<Revision>,
        requests: &mut HashMap<String, (RequestRecord, std::ops::Range<usize>)>,
    ) -> Outcome {
        if !job.request_id.is_empty() {
            match self.known_request(job, requests) {
                Ok(Some(outcome)) => return outcome,
                Ok(None) => {}
                Err(e) => return Outcome::Failed(e),
            }
        }
        let ctx = CommitContext {
            author: &job.author,
            request_id: &job.request_id,
            commit_time,
        };
        let mut own = Changes::default();
        let mut revisions: Vec<Revision> = Vec::new();
        let first = self.head + staged.len() as u64 + 1;
        for (i, write) in job.writes.iter().enumerate() {
            let view = Layered {
                job: &own,
                group,
                plans: &self.plans,
                store: &self.store,
            };
            let next = first + revisions.len() as u64;
            match execute(&view, write, next, &ctx) {
                Ok(revs) => {
                    own.absorb(&revs);
                    revisions.extend(revs);
                }
                Err(e) => {
                    return Outcome::Failed(if job.batch { e.in_change(i) } else { e });
                }
            }
        }
        group.merge(own);
        let range = staged.len()..staged.len() + revisions.len();
        if !job.request_id.is_empty() {
            let record = RequestRecord {
                fingerprint: job.fingerprint,
                first_revision: first,
                count: revisions.len() as u64,
                commit_time,
            };
            requests.insert(job.request_id.clone(), (record, range.clone()));
        }
        staged.extend(revisions);
        Outcome::Committed(range)
    }

    /// Answers a job whose request id was seen before (in this group or the window).
    fn known_request(
        &self,
        job: &Job,
        requests: &HashMap<String, (RequestRecord, std::ops::Range<usize>)>,
    ) -> Result<Option<Outcome>> {
        let mismatch = || {
            Error::invalid(
                "request_id",
                format!(
                    "request id {:?} was already used for a different request; use a new id for a new request",
                    job.request_id
                ),
            )
        };
        if let Some((record, range)) = requests.get(&job.request_id) {
            return if record.fingerprint == job.fingerprint {
                Ok(Some(Outcome::Committed(range.clone())))
            } else {
                Err(mismatch())
            };
        }
        match self.store.request(&job.request_id)? {
            Some(record) if record.fingerprint == job.fingerprint => {
                let last = record.first_revision + record.count - 1;
                let revs = self.store.revisions_range(
                    record.first_revision,
                    last,
                    record.count as usize,
                )?;
                Ok(Some(Outcome::Replayed(revs)))
            }
            Some(_) => Err(mismatch()),
            None => Ok(None),
        }
    }

    /// Writes the group's log and idempotency records in one atomic batch,
    /// then flushes in `sync` mode. Returns the index chunks it appended to,
    /// for [`Tails::absorb`], and the group's derived records, for reads.
    fn write_group(
        &self,
        staged: &[Revision],
        group: &Changes,
        requests: &HashMap<String, (RequestRecord, std::ops::Range<usize>)>,
        commit_time: Timestamp,
    ) -> Result<(ChangedTails, Vec<Record>)> {
        // Derived first: if they cannot be made, nothing is written.
        let mut lists = self.tails.stage(&self.store);
        let derived = derived_records(staged, group, &mut lists)?;
        let mut batch = sled::Batch::default();
        log::write_blocks(&mut batch, staged)?;
        for (request_id, (record, _)) in requests {
            batch.insert(keys::request(request_id), encode(record)?);
            batch.insert(
                keys::request_by_rev(record.first_revision),
                request_id.as_bytes(),
            );
        }
        self.prune_requests(&mut batch, commit_time)?;
        self.store.db.apply_batch(batch)?;
        if self.durability == Durability::Sync {
            self.store.db.flush()?;
        }
        Ok((lists.into_changed(), derived))
    }

    /// Writes every waiting derived record to sled, in one batch with the
    /// revision they reflect, then forgets them. Not flushed: until the next
    /// flush, a crash leaves `meta/derived-through` older, and the open that
    /// follows rebuilds from there.
    fn write_back(&mut self) {
        let unwritten = &self.store.shared.unwritten;
        let records = unwritten.snapshot();
        if records.is_empty() {
            // Every revision adds to an index, so nothing waiting means
            // `meta/derived-through` is already the head.
            self.last_write_back = Instant::now();
            return;
        }
        let mut batch = sled::Batch::default();
        for (key, value) in records {
            batch.insert(key, value);
        }
        batch.insert(keys::DERIVED_THROUGH, &self.head.to_be_bytes());
        match self.store.db.apply_batch(batch) {
            Ok(()) => {
                unwritten.clear();
                self.last_write_back = Instant::now();
            }
            Err(e) => {
                error!(cause = %e, "writing derived records back failed; refusing further writes");
                self.failed = Some(e.to_string());
            }
        }
    }

    /// Drops idempotency records older than BOTH the revision and the time window.
    fn prune_requests(&self, batch: &mut sled::Batch, now: Timestamp) -> Result<()> {
        let Some(oldest_kept) = self.head.checked_sub(REQUEST_WINDOW_REVISIONS) else {
            return Ok(());
        };
        let cutoff = now.seconds - REQUEST_WINDOW_SECS;
        for item in self
            .store
            .db
            .scan_prefix(keys::REQUEST_BY_REV)
            .take(PRUNE_PER_GROUP)
        {
            let (key, request_id) = item?;
            if keys::trailing_u64(&key) >= oldest_kept {
                break;
            }
            let request_id = String::from_utf8_lossy(&request_id).into_owned();
            match self.store.request(&request_id)? {
                Some(record) if record.commit_time.seconds >= cutoff => break,
                _ => {}
            }
            batch.remove(key);
            batch.remove(keys::request(&request_id));
        }
        Ok(())
    }
}

/// The derived records `revisions` change: the index chunks appended to
/// through `lists`, and the latest states in `changes` (absorbed from them).
fn derived_records(
    revisions: &[Revision],
    changes: &Changes,
    lists: &mut StagedTails<'_>,
) -> Result<Vec<Record>> {
    for rev in revisions {
        lists.append_revision(keys::plan_rev_list(&rev.plan_id), rev.revision)?;
        if let Some(clause_id) = &rev.clause_id {
            lists.append_version(
                keys::version_list(&rev.plan_id, clause_id),
                rev.clause_version,
                rev.revision,
            )?;
        }
        if let Some(party) = &rev.party_id {
            lists.append_revision(keys::party_rev_list(&rev.plan_id, party), rev.revision)?;
        }
    }
    let mut out: Vec<Record> = lists.chunks().collect();
    for plan in changes.plans.values() {
        out.push((keys::plan(&plan.id), encode(plan)?.into()));
    }
    for clause in changes.clauses.values() {
        out.push((
            keys::clause(&clause.plan_id, &clause.id),
            encode(clause)?.into(),
        ));
    }
    Ok(out)
}

/// Revisions rebuilt per batch by [`rebuild_derived`].
const REBUILD_BATCH: usize = 4096;

/// Brings sled's derived records up to the log's head, from the revision
/// after `meta/derived-through`: what the committer had not yet written back
/// when the store last stopped (only after a crash, a clean stop writes them).
/// Each batch of revisions is written with its new `meta/derived-through`, so
/// an interrupted rebuild continues where it stopped. Runs at open, before
/// anything reads the store. Returns the log's head.
pub(super) fn rebuild_derived(store: &Store) -> Result<u64> {
    let db = &store.db;
    let through = match db.get(keys::DERIVED_THROUGH)? {
        Some(v) => u64::from_be_bytes(
            v.as_ref()
                .try_into()
                .map_err(|_| Error::Storage("the derived-through record is malformed".into()))?,
        ),
        None => {
            return Err(Error::Storage(
                "the store has no derived-through record; is it damaged?".into(),
            ))
        }
    };
    let head = log::head(db)?;
    if through >= head {
        return Ok(head);
    }
    info!(
        from = through + 1,
        to = head,
        "rebuilding latest states and indexes from the log written since the last write-back"
    );
    let mut tails = Tails::default();
    let mut next = through + 1;
    while next <= head {
        let revisions = log::range(db, next, head, REBUILD_BATCH)?;
        let Some(last) = revisions.last().map(|r| r.revision) else {
            return Err(Error::Storage(format!(
                "revision {next} is missing below the head"
            )));
        };
        let mut changes = Changes::default();
        changes.absorb(&revisions);
        let mut lists = tails.stage(db as &dyn super::records::Source);
        let mut batch = sled::Batch::default();
        for (key, value) in derived_records(&revisions, &changes, &mut lists)? {
            batch.insert(key, value);
        }
        batch.insert(keys::DERIVED_THROUGH, &last.to_be_bytes());
        let changed = lists.into_changed();
        db.apply_batch(batch)?;
        tails.absorb(changed);
        next = last + 1;
    }
    db.flush()?;
    Ok(head)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::ValueEnum;

    #[test]
    fn the_help_of_relaxed_names_the_flush_period_in_plain_text() {
        let help = Durability::Relaxed
            .to_possible_value()
            .and_then(|v| v.get_help().map(|h| h.to_string()))
            .expect("relaxed has a help text");
        assert!(
            help.contains(&format!("every {RELAXED_FLUSH_MS} ms")),
            "{help}"
        );
        assert!(!help.contains('['), "a doc link leaked into --help: {help}");
    }
}
