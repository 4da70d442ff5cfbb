//! Reading records: from sled alone, or from sled with the committer's
//! *unwritten* derived records in front.
//!
//! # Derived records and write-back
//!
//! The latest states (`plan/`, `clause/`) and the index chunks (`verc/`,
//! `prevc/`, `ptlc/`) follow from the revision log. The committer makes a
//! group durable by writing only its log block (and idempotency records) to
//! sled; the group's derived records go to [`Unwritten`], an in-memory map in
//! front of sled, and are written to sled together every
//! `committer::WRITE_BACK_EVERY` (or sooner when many are waiting), in one batch
//! with `meta/derived-through`, the revision they reflect. sled's cost per
//! commit follows the number of keys it writes, and a group touched dozens of
//! derived keys but one log key (docs/BENCHMARKS.md).
//!
//! # Invariants
//!
//! - Reads of derived records look in [`Unwritten`] first, then sled: a key in
//!   both holds the newer value in [`Unwritten`].
//! - Only the committer changes [`Unwritten`]: it adds a group's records after
//!   the group's log block is durable (so nothing derived from a revision is
//!   visible before the revision is), and removes records only after writing
//!   them to sled (so a record is never in neither).
//! - sled's derived records reflect the log exactly through
//!   `meta/derived-through`. After a crash, opening the store rebuilds the
//!   records of the revisions after it from the log (see `committer::rebuild_derived`).

use std::collections::BTreeMap;
use std::iter::Peekable;
use std::sync::RwLock;

use sled::IVec;

use crate::error::Result;

/// Where records are read from.
pub trait Source {
    /// The record at `key`.
    fn get(&self, key: &[u8]) -> Result<Option<IVec>>;
    /// The records with keys in `from..to`, in key order.
    fn scan<'a>(&'a self, from: &[u8], to: &[u8]) -> Records<'a>;
    /// The record with the greatest key in `from..=to`.
    fn last_in(&self, from: &[u8], to: &[u8]) -> Result<Option<(IVec, IVec)>>;
}

/// Records in key order.
pub type Records<'a> = Box<dyn Iterator<Item = Result<(IVec, IVec)>> + Send + 'a>;

/// The smallest key after every key starting with `prefix` (ids never hold
/// `\xff`, so bumping the last byte is enough).
pub fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    if let Some(last) = end.last_mut() {
        *last += 1;
    }
    end
}

/// The records whose keys start with `prefix`, in key order.
pub fn scan_prefix<'a>(source: &'a (impl Source + ?Sized), prefix: &[u8]) -> Records<'a> {
    source.scan(prefix, &prefix_end(prefix))
}

impl Source for sled::Db {
    fn get(&self, key: &[u8]) -> Result<Option<IVec>> {
        Ok(sled::Tree::get(self, key)?)
    }

    fn scan<'a>(&'a self, from: &[u8], to: &[u8]) -> Records<'a> {
        Box::new(self.range(from..to).map(|r| r.map_err(Into::into)))
    }

    fn last_in(&self, from: &[u8], to: &[u8]) -> Result<Option<(IVec, IVec)>> {
        Ok(self.range(from..=to).next_back().transpose()?)
    }
}

/// Derived records committed to the log but not yet written to sled.
#[derive(Default)]
pub struct Unwritten {
    records: RwLock<BTreeMap<Vec<u8>, IVec>>,
}

impl Unwritten {
    fn read(&self) -> std::sync::RwLockReadGuard<'_, BTreeMap<Vec<u8>, IVec>> {
        // A panic while holding the lock cannot leave the map half-changed
        // (each change is one insert or clear), so a poisoned lock is usable.
        self.records.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, BTreeMap<Vec<u8>, IVec>> {
        self.records.write().unwrap_or_else(|e| e.into_inner())
    }

    /// How many records wait.
    pub fn len(&self) -> usize {
        self.read().len()
    }

    /// Adds (or replaces) records; the committer's, after their log is durable.
    pub fn extend(&self, records: impl IntoIterator<Item = (Vec<u8>, IVec)>) {
        self.write().extend(records);
    }

    /// Every waiting record, for a write-back.
    pub fn snapshot(&self) -> Vec<(Vec<u8>, IVec)> {
        self.read()
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }

    /// Forgets every record; the committer's, once they are in sled.
    pub fn clear(&self) {
        self.write().clear();
    }

    fn get(&self, key: &[u8]) -> Option<IVec> {
        self.read().get(key).cloned()
    }

    fn range(&self, from: &[u8], to: std::ops::Bound<&[u8]>) -> Vec<(IVec, IVec)> {
        use std::ops::Bound;
        let map = self.read();
        if map.is_empty() {
            return Vec::new();
        }
        map.range::<[u8], _>((Bound::Included(from), to))
            .map(|(k, v)| (IVec::from(k.as_slice()), v.clone()))
            .collect()
    }
}

/// sled with [`Unwritten`] in front.
pub struct Overlay<'a> {
    pub db: &'a sled::Db,
    pub unwritten: &'a Unwritten,
}

impl<'o> Overlay<'o> {
    /// [`Source::scan`], borrowing only what the overlay borrows.
    pub fn scan_in(&self, from: &[u8], to: &[u8]) -> Records<'o> {
        let front = self.unwritten.range(from, std::ops::Bound::Excluded(to));
        let behind = self.db.scan(from, to);
        if front.is_empty() {
            return behind;
        }
        Box::new(Merged {
            front: front.into_iter().peekable(),
            behind: behind.peekable(),
        })
    }
}

impl Source for Overlay<'_> {
    fn get(&self, key: &[u8]) -> Result<Option<IVec>> {
        match self.unwritten.get(key) {
            Some(value) => Ok(Some(value)),
            None => Source::get(self.db, key),
        }
    }

    fn scan<'a>(&'a self, from: &[u8], to: &[u8]) -> Records<'a> {
        self.scan_in(from, to)
    }

    fn last_in(&self, from: &[u8], to: &[u8]) -> Result<Option<(IVec, IVec)>> {
        let front = self
            .unwritten
            .range(from, std::ops::Bound::Included(to))
            .pop();
        let behind = self.db.last_in(from, to)?;
        Ok(match (front, behind) {
            (Some(f), Some(b)) if b.0 > f.0 => Some(b),
            (Some(f), _) => Some(f),
            (None, b) => b,
        })
    }
}

/// Two key-ordered record streams merged; on equal keys `front` wins.
struct Merged<'a> {
    front: Peekable<std::vec::IntoIter<(IVec, IVec)>>,
    behind: Peekable<Records<'a>>,
}

impl Iterator for Merged<'_> {
    type Item = Result<(IVec, IVec)>;

    fn next(&mut self) -> Option<Self::Item> {
        let order = match (self.front.peek(), self.behind.peek()) {
            (None, _) => return self.behind.next(),
            (Some(_), None) => return self.front.next().map(Ok),
            (Some(_), Some(Err(_))) => return self.behind.next(),
            (Some((f, _)), Some(Ok((b, _)))) => f.cmp(b),
        };
        match order {
            std::cmp::Ordering::Less => self.front.next().map(Ok),
            std::cmp::Ordering::Equal => {
                self.behind.next();
                self.front.next().map(Ok)
            }
            std::cmp::Ordering::Greater => self.behind.next(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(records: Records<'_>) -> Vec<(String, String)> {
        records
            .map(|r| {
                let (k, v) = r.unwrap();
                (
                    String::from_utf8(k.to_vec()).unwrap(),
                    String::from_utf8(v.to_vec()).unwrap(),
                )
            })
            .collect()
    }

    #[test]
    fn unwritten_records_are_read_in_front_of_sled() {
        let dir = tempfile::tempdir().unwrap();
        let db = sled::Config::new().path(dir.path()).open().unwrap();
        for k in ["a1", "a3", "a5", "b1"] {
            db.insert(k, format!("sled {k}").as_bytes()).unwrap();
        }
        let unwritten = Unwritten::default();
        let overlay = Overlay {
            db: &db,
            unwritten: &unwritten,
        };
        // Nothing unwritten: sled alone.
        assert_eq!(keys(scan_prefix(&overlay, b"a")).len(), 3);
        unwritten.extend(["a0", "a3", "a4", "a6", "c1"].map(|k| {
            (
                k.as_bytes().to_vec(),
                IVec::from(format!("new {k}").as_bytes()),
            )
        }));
        let expect = |pairs: &[(&str, &str)]| -> Vec<(String, String)> {
            pairs
                .iter()
                .map(|(k, from)| (k.to_string(), format!("{from} {k}")))
                .collect()
        };
        assert_eq!(
            keys(scan_prefix(&overlay, b"a")),
            expect(&[
                ("a0", "new"),
                ("a1", "sled"),
                ("a3", "new"),
                ("a4", "new"),
                ("a5", "sled"),
                ("a6", "new")
            ])
        );
        assert_eq!(
            keys(overlay.scan(b"a2", b"a5")),
            expect(&[("a3", "new"), ("a4", "new")])
        );
        assert_eq!(overlay.get(b"a3").unwrap().unwrap().as_ref(), b"new a3");
        assert_eq!(overlay.get(b"a1").unwrap().unwrap().as_ref(), b"sled a1");
        assert!(overlay.get(b"a2").unwrap().is_none());
        let last = |from: &str, to: &str| {
            overlay
                .last_in(from.as_bytes(), to.as_bytes())
                .unwrap()
                .map(|(k, v)| (String::from_utf8(k.to_vec()).unwrap(), v.to_vec()))
        };
        assert_eq!(last("a", "a5").unwrap().0, "a5");
        assert_eq!(last("a", "a4").unwrap(), ("a4".into(), b"new a4".to_vec()));
        assert_eq!(last("a", "a3").unwrap(), ("a3".into(), b"new a3".to_vec()));
        assert_eq!(last("b", "b9").unwrap().0, "b1");
        assert_eq!(last("c", "c9").unwrap().0, "c1");
        assert!(last("d", "d9").is_none());
        // Once written to sled and cleared, the same answers come from sled.
        for (k, v) in unwritten.snapshot() {
            db.insert(k, v).unwrap();
        }
        unwritten.clear();
        assert_eq!(unwritten.len(), 0);
        assert_eq!(keys(scan_prefix(&overlay, b"a")).len(), 6);
        assert_eq!(overlay.get(b"a3").unwrap().unwrap().as_ref(), b"new a3");
    }
}
