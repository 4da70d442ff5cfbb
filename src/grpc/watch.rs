//! A watcher's feeder: replay from the store, then follow the hub, and catch
//! up from the store whenever the hub's ring has moved past the watcher.
//!
//! The feeder is a pull stream, not a task with a queue: tonic polls it only
//! when HTTP/2 flow control has room, so a client that stops reading simply
//! stops being polled. It then holds nothing but its cursor, writers never
//! wait for it, and when it is polled again it resumes at its cursor (from
//! the ring, or from the store if the ring has moved on). Because every
//! revision is taken by cursor, in order, from one source or the other, there
//! is no gap or duplicate at the replay-to-live hand-off.
//!
//! Progress messages go through the same stream, so they are ordered with
//! the events: a `Progress { revision: R }` means every matching revision up
//! to R has been sent.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;
use tonic::Status;
use tracing::debug;

use super::convert;
use super::mask::RevisionMask;
use crate::domain::{limits, ChangeKind, Plan, Revision};
use crate::error::{Error, Result};
use crate::hub::{Hub, Lagged, Published, Wake};
use crate::pb;
use crate::store::Store;

/// Heartbeat period when the request gives none.
pub const DEFAULT_PROGRESS_INTERVAL: Duration = Duration::from_secs(10);
/// Shortest heartbeat period accepted.
pub const MIN_PROGRESS_INTERVAL: Duration = Duration::from_secs(1);
/// Revisions read per step (from the ring or the store).
const CHUNK: usize = 256;

/// Server-wide watch settings.
#[derive(Clone)]
pub struct WatchLimits {
    /// Most concurrent watch streams.
    pub max_watchers: usize,
    open: Arc<AtomicUsize>,
}

impl WatchLimits {
    /// Limits allowing `max_watchers` concurrent streams.
    pub fn new(max_watchers: usize) -> WatchLimits {
        WatchLimits {
            max_watchers,
            open: Arc::new(AtomicUsize::new(0)),
        }
    }
}

/// Releases a watcher slot when the stream is dropped.
struct Slot(Arc<AtomicUsize>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// A validated watch request.
#[derive(Debug, Clone)]
pub struct WatchSpec {
    plan_id: Option<String>,
    clause_ids: Vec<String>,
    party_ids: Vec<String>,
    start_revision: u64,
    progress_interval: Duration,
    read_mask: RevisionMask,
}

impl WatchSpec {
    /// Validates a request.
    pub fn from_request(req: &pb::WatchRequest, _limits: &WatchLimits) -> Result<WatchSpec> {
        limits::optional_id("plan_id", &req.plan_id)?;
        for (i, id) in req.clause_ids.iter().enumerate() {
            limits::id(&format!("clause_ids[{i}]"), id)?;
        }
        for (i, id) in req.party_ids.iter().enumerate() {
            limits::id(&format!("party_ids[{i}]"), id)?;
        }
        if req.plan_id.is_empty() && !(req.clause_ids.is_empty() && req.party_ids.is_empty()) {
            return Err(Error::invalid(
                "plan_id",
                "is required with clause_ids or party_ids",
            ));
        }
        let progress_interval = match &req.progress_interval {
            None => DEFAULT_PROGRESS_INTERVAL,
            Some(d) => {
                if d.seconds < 0 || d.nanos < 0 || d.nanos >= 1_000_000_000 {
                    return Err(Error::invalid(
                        "progress_interval",
                        "must be a positive duration",
                    ));
                }
                let d = Duration::new(d.seconds as u64, d.nanos as u32);
                if d == Duration::ZERO {
                    DEFAULT_PROGRESS_INTERVAL
                } else if d < MIN_PROGRESS_INTERVAL {
                    return Err(Error::invalid("progress_interval", "must be at least 1s"));
                } else {
                    d
                }
            }
        };
        let read_mask = RevisionMask::from_request("read_mask", req.read_mask.as_ref())?;
        Ok(WatchSpec {
            read_mask,
            plan_id: Some(req.plan_id.clone()).filter(|s| !s.is_empty()),
            clause_ids: req.clause_ids.clone(),
            party_ids: req.party_ids.clone(),
            start_revision: req.start_revision,
            progress_interval,
        })
    }

    fn matches(&self, rev: &Revision) -> bool {
        let plan_ok = self.plan_id.as_ref().is_none_or(|p| *p == rev.plan_id);
        let clause_ok = self.clause_ids.is_empty()
            || rev
                .clause_id
                .as_ref()
                .is_some_and(|c| self.clause_ids.contains(c));
        // A party filter matches that party's stance changes only.
        let party_ok = self.party_ids.is_empty()
            || (rev.kind == ChangeKind::StanceSet
                && rev
                    .party_id
                    .as_ref()
                    .is_some_and(|p| self.party_ids.contains(p)));
        plan_ok && clause_ok && party_ok
    }
}

fn progress(revision: u64, caught_up: bool) -> pb::WatchEvent {
    pb::WatchEvent::new(pb::watch_event::Event::Progress(pb::Progress {
        revision,
        caught_up,
    }))
}

/// Renders revisions in the stream's read mask, caching each plan's latest
/// state for the stream's life (plans change rarely; a plan-level revision
/// carries its own plan).
struct Renderer {
    store: Store,
    mask: RevisionMask,
    plans: std::collections::HashMap<String, Plan>,
}

impl Renderer {
    /// Keeps the cached plan current: every plan-level revision passes here,
    /// matching the filter or not.
    fn observe(&mut self, rev: &Revision) {
        if let Some(plan) = &rev.plan {
            self.plans.insert(plan.id.clone(), plan.clone());
        }
    }

    /// The revision's event, encoded by the first watcher to send it in this
    /// mask and shared by the rest (rendering depends on the revision and the
    /// mask alone: the plan is taken as it stood at that revision).
    fn render(&mut self, rev: &Published) -> Result<pb::WatchEvent> {
        let form = u32::from(self.mask.bits());
        let bytes = rev.wire_or_init(form, || {
            self.render_new(rev).map(pb::WatchEvent::encode_shared)
        })?;
        Ok(pb::WatchEvent::pre_encoded(bytes))
    }

    fn render_new(&mut self, rev: &Revision) -> Result<pb::watch_event::Event> {
        let plan = if !self.mask.needs_plan() {
            None
        } else if let Some(plan) = self.plans.get(&rev.plan_id) {
            Some(plan)
        } else {
            let plan = self.store.plan(&rev.plan_id)?.ok_or_else(|| {
                Error::Storage(format!(
                    "plan {} of revision {} missing",
                    rev.plan_id, rev.revision
                ))
            })?;
            Some(&*self.plans.entry(plan.id.clone()).or_insert(plan))
        };
        Ok(pb::watch_event::Event::Revision(Box::new(
            convert::revision_masked(rev, plan, self.mask)?,
        )))
    }
}

/// Revisions `from..=to`, at most [`CHUNK`], from the ring or else the store.
/// Revisions read from the store (by a watcher behind the ring) are rendered
/// for this watcher alone.
fn next_chunk(hub: &Hub, store: &Store, from: u64, to: u64) -> Result<Vec<Arc<Published>>> {
    match hub.read_from(from, CHUNK) {
        Ok(revs) => Ok(revs.into_iter().filter(|r| r.revision <= to).collect()),
        Err(Lagged { .. }) => Ok(store
            .revisions_range(from, to, CHUNK)?
            .into_iter()
            .map(|rev| Arc::new(Published::new(rev)))
            .collect()),
    }
}

/// How a stream ends at shutdown: UNAVAILABLE naming where to resume.
fn shutdown_status(last: u64) -> Status {
    debug!(last, "watch ended by shutdown");
    Status::unavailable(format!(
        "server shutting down; last revision sent: {last}; resume with start_revision={}",
        last + 1
    ))
}

/// Starts a watch stream. Errors (before any message) are returned directly.
pub fn start(
    spec: WatchSpec,
    store: Store,
    hub: Hub,
    limits: &WatchLimits,
) -> Result<impl futures_core::Stream<Item = Result<pb::WatchEvent, Status>> + Send + 'static> {
    let head = hub.head();
    if spec.start_revision > head + 1 {
        return Err(Error::OutOfRange(format!(
            "start_revision {} is beyond the next revision {}",
            spec.start_revision,
            head + 1
        )));
    }
    if limits.open.fetch_add(1, Ordering::SeqCst) >= limits.max_watchers {
        limits.open.fetch_sub(1, Ordering::SeqCst);
        return Err(Error::ResourceExhausted(format!(
            "this server already serves {} watch streams, its limit (--max-watchers)",
            limits.max_watchers
        )));
    }
    let slot = Slot(Arc::clone(&limits.open));
    // Subscribe before reading the head so no publish can slip between the two.
    let mut subscription = hub.subscribe();
    Ok(async_stream::stream! {
        let _slot = slot;
        let mut renderer = Renderer {
            store: store.clone(),
            mask: spec.read_mask,
            plans: Default::default(),
        };
        let interval = spec.progress_interval;
        // Everything below `cursor` has been sent (or filtered out); the stream
        // catches up to `target`, from the ring or the store, then waits for the
        // hub to move `target` on.
        let mut cursor = spec.start_revision;
        let mut target = hub.head();
        // With a start revision, the replay ends with one caught-up Progress.
        let mut replaying = spec.start_revision != 0;
        if !replaying {
            cursor = target + 1;
            yield Ok(progress(target, true));
        }
        // One heartbeat timer for the stream's life, re-armed only when it
        // fires: sending an event just notes the time, so a busy stream does
        // not touch the timer wheel per event.
        let mut last_sent = Instant::now();
        let heartbeat = tokio::time::sleep_until(last_sent + interval);
        tokio::pin!(heartbeat);
        loop {
            let mut sent_any = false;
            let mut chunks = 0usize;
            while cursor <= target {
                // A long catch-up with few matches must still let shutdown and
                // a departed client through, and share the worker thread. A
                // live watcher reads one chunk per wake-up and skips both.
                if chunks > 0 {
                    if hub.is_closing() {
                        yield Err(shutdown_status(cursor - 1));
                        return;
                    }
                    tokio::task::coop::consume_budget().await;
                }
                chunks += 1;
                let chunk = match next_chunk(&hub, &store, cursor, target) {
                    Ok(c) if !c.is_empty() => c,
                    Ok(_) => break,
                    Err(e) => { yield Err(Status::from(e)); return; }
                };
                for rev in chunk {
                    cursor = rev.revision + 1;
                    renderer.observe(&rev);
                    if spec.matches(&rev) {
                        match renderer.render(&rev) {
                            Ok(event) => { sent_any = true; yield Ok(event) }
                            Err(e) => { yield Err(Status::from(e)); return; }
                        }
                    }
                }
            }
            if replaying {
                replaying = false;
                yield Ok(progress(cursor - 1, true));
                sent_any = true;
            }
            if sent_any {
                last_sent = Instant::now();
            }
            tokio::select! {
                biased;
                wake = subscription.changed() => match wake {
                    Wake::Head(head) => target = head,
                    Wake::Closing => {
                        yield Err(shutdown_status(cursor - 1));
                        return;
                    }
                },
                _ = &mut heartbeat => {
                    let due = last_sent + interval;
                    if Instant::now() >= due {
                        yield Ok(progress(cursor - 1, true));
                        last_sent = Instant::now();
                    }
                    heartbeat.as_mut().reset(last_sent + interval);
                }
            }
        }
    })
}
