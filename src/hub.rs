//! The hub: a bounded ring of recently committed revisions that live watchers
//! follow.
//!
//! # Lag policy
//!
//! The committer publishes each group of revisions here *after* it is
//! committed (and, in `sync` durability, flushed), in revision order. Publishing
//! never waits for anyone: it appends to the ring, drops the oldest entries past
//! the capacity, and bumps the head in a `tokio::sync::watch` channel, which
//! wakes every watcher without queueing anything per watcher.
//!
//! A watcher keeps only a cursor (the next revision it wants). When woken it
//! asks the ring for everything from its cursor on. If the ring no longer holds
//! the cursor (the watcher fell behind by more than the capacity), the hub says
//! so with [`Lagged`], and the watcher's feeder (in the grpc layer, above both
//! the store and the hub) catches up from the store, then comes back. So a slow
//! watcher costs memory for its cursor only, never blocks writers or other
//! watchers, and never skips a revision.
//!
//! Invariant: every revision at or below [`Hub::head`] is readable from the
//! store, because publishing follows the commit.
//!
//! # Shutdown
//!
//! [`Hub::close`] ends every subscription: a watcher waiting for the head
//! wakes with [`Wake::Closing`], and one catching up sees [`Hub::is_closing`].
//! The server closes the hub when it starts to shut down. Watchers learn of
//! shutdown through the same wake-up as of new revisions, so a live watcher
//! polls nothing else per event (a shared cancellation future, polled by a
//! thousand streams per event, cost ~5% of the server's CPU at that load).

use std::collections::VecDeque;
use std::ops::Deref;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock, RwLock};

use bytes::Bytes;
use tokio::sync::watch;

use crate::domain::Revision;

/// Default number of revisions kept in memory.
pub const DEFAULT_CAPACITY: usize = 4096;

/// The ring no longer holds the requested revision; read it from the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lagged {
    /// The oldest revision the ring still holds.
    pub oldest: u64,
}

/// A committed revision as the ring holds it, with slots for its wire forms.
///
/// The slots are for the edge layer: the first watcher that sends the
/// revision in a given form (the edge names forms by a key, such as a read
/// mask) stores its encoding there and every other watcher wanting that form
/// sends those same bytes, so a revision is rendered and encoded once per
/// form, not once per watcher. The hub never looks inside the bytes.
///
/// The first form used has a lock-free slot (in practice most watchers want
/// the same form); up to [`EXTRA_WIRE_FORMS`] more are kept behind a mutex,
/// and forms beyond those are encoded by each watcher for itself.
pub struct Published {
    committed: Arc<Revision>,
    first_form: OnceLock<(u32, Bytes)>,
    extra_forms: Mutex<Vec<(u32, Bytes)>>,
}

/// Wire forms kept per revision besides the first.
pub const EXTRA_WIRE_FORMS: usize = 3;

impl Published {
    /// An entry with empty wire slots (also used for revisions read from the
    /// store by a watcher that lagged behind the ring).
    pub fn new(committed: Arc<Revision>) -> Published {
        Published {
            committed,
            first_form: OnceLock::new(),
            extra_forms: Mutex::new(Vec::new()),
        }
    }

    /// The wire form named `form`, made by `encode` if no one has made it yet.
    /// Two watchers racing may both encode; one result is kept and both are
    /// identical.
    pub fn wire_or_init<E>(
        &self,
        form: u32,
        encode: impl FnOnce() -> Result<Bytes, E>,
    ) -> Result<Bytes, E> {
        match self.first_form.get() {
            Some((key, bytes)) if *key == form => return Ok(bytes.clone()),
            Some(_) => {}
            None => {
                let bytes = encode()?;
                let (key, kept) = self.first_form.get_or_init(|| (form, bytes.clone()));
                // Lost the race to another form: fall through to the extras.
                if *key == form {
                    return Ok(kept.clone());
                }
                return Ok(self.keep_extra(form, bytes));
            }
        }
        if let Some(bytes) = self.extra(form) {
            return Ok(bytes);
        }
        let bytes = encode()?;
        Ok(self.keep_extra(form, bytes))
    }

    fn extra(&self, form: u32) -> Option<Bytes> {
        let extras = self.extra_forms.lock().unwrap_or_else(|e| e.into_inner());
        extras
            .iter()
            .find(|(k, _)| *k == form)
            .map(|(_, b)| b.clone())
    }

    fn keep_extra(&self, form: u32, bytes: Bytes) -> Bytes {
        let mut extras = self.extra_forms.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((_, kept)) = extras.iter().find(|(k, _)| *k == form) {
            return kept.clone();
        }
        if extras.len() < EXTRA_WIRE_FORMS {
            extras.push((form, bytes.clone()));
        }
        bytes
    }
}

impl Deref for Published {
    type Target = Revision;

    fn deref(&self) -> &Revision {
        &self.committed
    }
}

struct Ring {
    entries: VecDeque<Arc<Published>>,
}

struct Inner {
    ring: RwLock<Ring>,
    capacity: usize,
    head: watch::Sender<u64>,
    /// Registered watchers; a watch channel so tests and operators can await a count.
    watchers: watch::Sender<usize>,
    /// Set once by [`Hub::close`], before the wake-up that announces it.
    closing: AtomicBool,
}

/// Why a subscription woke.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wake {
    /// The head moved to this revision.
    Head(u64),
    /// The hub is closing: the server is shutting down.
    Closing,
}

/// Shared handle on the hub. Cheap to clone.
#[derive(Clone)]
pub struct Hub {
    inner: Arc<Inner>,
}

/// A registered watcher: wakes on new revisions; unregisters on drop.
pub struct Subscription {
    head: watch::Receiver<u64>,
    hub: Hub,
}

impl Hub {
    /// A hub whose head starts at `head` (the store's latest revision).
    pub fn new(head: u64, capacity: usize) -> Hub {
        let (tx, _) = watch::channel(head);
        Hub {
            inner: Arc::new(Inner {
                ring: RwLock::new(Ring {
                    entries: VecDeque::with_capacity(capacity.min(DEFAULT_CAPACITY)),
                }),
                capacity: capacity.max(1),
                head: tx,
                watchers: watch::channel(0).0,
                closing: AtomicBool::new(false),
            }),
        }
    }

    /// The latest published revision.
    pub fn head(&self) -> u64 {
        *self.inner.head.borrow()
    }

    /// Publishes committed revisions, in order. Never waits for watchers.
    pub fn publish(&self, revisions: &[Arc<Revision>]) {
        let Some(last) = revisions.last() else {
            return;
        };
        {
            let mut ring = self.inner.ring.write().unwrap_or_else(|e| e.into_inner());
            for rev in revisions {
                ring.entries
                    .push_back(Arc::new(Published::new(Arc::clone(rev))));
            }
            let excess = ring.entries.len().saturating_sub(self.inner.capacity);
            ring.entries.drain(..excess);
        }
        self.inner.head.send_replace(last.revision);
    }

    /// Revisions from `from` on (at most `limit`), or [`Lagged`] if the ring
    /// no longer holds `from`. Empty if `from` is beyond the head.
    pub fn read_from(&self, from: u64, limit: usize) -> Result<Vec<Arc<Published>>, Lagged> {
        let ring = self.inner.ring.read().unwrap_or_else(|e| e.into_inner());
        let Some(oldest) = ring.entries.front().map(|r| r.revision) else {
            return if from > self.head() {
                Ok(Vec::new())
            } else {
                Err(Lagged {
                    oldest: self.head() + 1,
                })
            };
        };
        if from < oldest {
            return Err(Lagged { oldest });
        }
        let skip = (from - oldest) as usize;
        Ok(ring
            .entries
            .iter()
            .skip(skip)
            .take(limit)
            .cloned()
            .collect())
    }

    /// Ends every subscription, now and to come: waiting watchers wake with
    /// [`Wake::Closing`]. Publishing still works (writes in flight at shutdown
    /// still commit); no one follows it any more.
    pub fn close(&self) {
        self.inner.closing.store(true, Ordering::SeqCst);
        // Bumps the channel's version without moving the head: wakes everyone.
        self.inner.head.send_modify(|_| {});
    }

    /// Whether [`Hub::close`] was called.
    pub fn is_closing(&self) -> bool {
        self.inner.closing.load(Ordering::SeqCst)
    }

    /// Registers a watcher.
    pub fn subscribe(&self) -> Subscription {
        self.inner.watchers.send_modify(|n| *n += 1);
        let mut head = self.inner.head.subscribe();
        head.mark_changed();
        Subscription {
            head,
            hub: self.clone(),
        }
    }

    /// How many watchers are registered now.
    pub fn watcher_count(&self) -> usize {
        *self.inner.watchers.borrow()
    }

    /// Waits until exactly `count` watchers are registered.
    pub async fn wait_for_watchers(&self, count: usize) {
        let mut rx = self.inner.watchers.subscribe();
        // The sender lives as long as the hub, which `self` keeps alive.
        let _ = rx.wait_for(|n| *n == count).await;
    }
}

impl Subscription {
    /// Waits until the head moves past what this subscription last saw, and
    /// returns the new head, or until the hub closes.
    pub async fn changed(&mut self) -> Wake {
        if self.hub.is_closing() {
            return Wake::Closing;
        }
        // The sender lives in the hub, which `self` keeps alive: never an error.
        let _ = self.head.changed().await;
        // `close` sets the flag before its wake-up, so a wake-up for closing
        // always sees it.
        if self.hub.is_closing() {
            return Wake::Closing;
        }
        Wake::Head(*self.head.borrow_and_update())
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        self.hub.inner.watchers.send_modify(|n| *n -= 1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rev(n: u64) -> Arc<Revision> {
        Arc::new(Revision::bare(n))
    }

    #[test]
    fn each_wire_form_is_encoded_once_up_to_the_kept_forms() {
        use std::cell::Cell;
        let entry = Published::new(rev(1));
        let encodes = Cell::new(0);
        let form = |key: u32| {
            entry
                .wire_or_init(key, || {
                    encodes.set(encodes.get() + 1);
                    Ok::<_, ()>(Bytes::from(format!("form {key}")))
                })
                .unwrap()
        };
        let kept = 1 + EXTRA_WIRE_FORMS as u32;
        for round in 0..3 {
            for key in 0..kept {
                assert_eq!(form(key), Bytes::from(format!("form {key}")));
            }
            assert_eq!(encodes.get(), kept, "round {round}: kept forms are reused");
        }
        // A form past the kept ones is still right, made afresh each time.
        assert_eq!(form(kept), Bytes::from(format!("form {kept}")));
        assert_eq!(form(kept), Bytes::from(format!("form {kept}")));
        assert_eq!(encodes.get(), kept + 2);
    }

    #[test]
    fn ring_keeps_the_newest_and_reports_lag() {
        let hub = Hub::new(0, 3);
        hub.publish(&(1..=5).map(rev).collect::<Vec<_>>());
        assert_eq!(hub.head(), 5);
        assert_eq!(hub.read_from(2, 10).err(), Some(Lagged { oldest: 3 }));
        let got: Vec<u64> = hub
            .read_from(3, 10)
            .unwrap()
            .iter()
            .map(|r| r.revision)
            .collect();
        assert_eq!(got, vec![3, 4, 5]);
        assert!(hub.read_from(6, 10).unwrap().is_empty());
        // Every reader of a revision shares one wire slot per form.
        let first = &hub.read_from(5, 1).unwrap()[0];
        let made = first.wire_or_init(7, || Ok::<_, ()>(Bytes::from_static(b"five")));
        let again = hub.read_from(5, 1).unwrap()[0]
            .wire_or_init(7, || -> Result<Bytes, ()> { panic!("encoded twice") });
        assert_eq!(made, again);
        let got: Vec<u64> = hub
            .read_from(4, 1)
            .unwrap()
            .iter()
            .map(|r| r.revision)
            .collect();
        assert_eq!(got, vec![4]);
    }

    #[test]
    fn empty_ring_sends_readers_to_the_store() {
        let hub = Hub::new(10, 3);
        assert_eq!(hub.read_from(4, 10).err(), Some(Lagged { oldest: 11 }));
        assert!(hub.read_from(11, 10).unwrap().is_empty());
    }

    #[tokio::test]
    async fn subscriptions_count_and_wake() {
        let hub = Hub::new(0, 8);
        let mut sub = hub.subscribe();
        assert_eq!(hub.watcher_count(), 1);
        // A fresh subscription reports the current head at once.
        assert_eq!(sub.changed().await, Wake::Head(0));
        hub.publish(&[rev(1), rev(2)]);
        assert_eq!(sub.changed().await, Wake::Head(2));
        drop(sub);
        assert_eq!(hub.watcher_count(), 0);
    }

    #[tokio::test]
    async fn closing_wakes_waiting_subscriptions_and_ends_later_ones() {
        let hub = Hub::new(0, 8);
        let mut sub = hub.subscribe();
        assert_eq!(sub.changed().await, Wake::Head(0));
        let waiting = tokio::spawn(async move { sub.changed().await });
        // The spawned subscription is waiting (or about to); closing wakes it either way.
        hub.close();
        assert_eq!(waiting.await.unwrap(), Wake::Closing);
        assert!(hub.is_closing());
        let mut late = hub.subscribe();
        assert_eq!(late.changed().await, Wake::Closing);
        // Publishing after close still moves the head.
        hub.publish(&[rev(1)]);
        assert_eq!(hub.head(), 1);
    }
}
