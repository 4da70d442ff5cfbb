//! Key encoding: ASCII prefixes, ids separated by `\0`, integers big-endian so
//! that sled's byte order is numeric order. Ids are slugs (`[a-z0-9-]`), so
//! they never contain `\0` and no id is a prefix of another id's key range.

/// Schema version record.
pub const SCHEMA: &[u8] = b"meta/schema";
/// `u64be`: the revision through which sled's latest states and index chunks
/// reflect the log; later ones are rebuilt on open (see `records`).
pub const DERIVED_THROUGH: &[u8] = b"meta/derived-through";
/// Prefix of the revision log's blocks (see `log`).
pub const LOG: &[u8] = b"log/";
/// Prefix of the latest state of each plan.
pub const PLAN: &[u8] = b"plan/";
/// Prefix of the latest state of each clause.
pub const CLAUSE: &[u8] = b"clause/";
/// Prefix of the per-clause version lists (chunked, see `index`).
pub const VERSION_LISTS: &[u8] = b"verc/";
/// Prefix of the per-plan revision lists (chunked).
pub const PLAN_REV_LISTS: &[u8] = b"prevc/";
/// Prefix of the per-party stance timelines (chunked).
pub const PARTY_REV_LISTS: &[u8] = b"ptlc/";
/// Prefix of idempotency records, by request id.
pub const REQUEST: &[u8] = b"req/";
/// Prefix of idempotency records by revision (for pruning the window).
pub const REQUEST_BY_REV: &[u8] = b"reqrev/";

fn join(prefix: &[u8], parts: &[&[u8]]) -> Vec<u8> {
    let len = prefix.len() + parts.iter().map(|p| p.len() + 1).sum::<usize>();
    let mut key = Vec::with_capacity(len);
    key.extend_from_slice(prefix);
    for (i, part) in parts.iter().enumerate() {
        if i > 0 {
            key.push(0);
        }
        key.extend_from_slice(part);
    }
    key
}

/// `log/{u64be first revision}` → a block of consecutive revision records.
pub fn log_block(first: u64) -> Vec<u8> {
    join(LOG, &[&first.to_be_bytes()])
}

/// `plan/{plan}` → the plan's latest state.
pub fn plan(plan_id: &str) -> Vec<u8> {
    join(PLAN, &[plan_id.as_bytes()])
}

/// `clause/{plan}\0{clause}` → the clause's latest state.
pub fn clause(plan_id: &str, clause_id: &str) -> Vec<u8> {
    join(CLAUSE, &[plan_id.as_bytes(), clause_id.as_bytes()])
}

/// `clause/{plan}\0`: every clause of a plan.
pub fn clauses_of(plan_id: &str) -> Vec<u8> {
    join(CLAUSE, &[plan_id.as_bytes(), b""])
}

/// `verc/{plan}\0{clause}\0`: the list of the revisions that made each
/// version of a clause (chunks follow, keyed by their first version).
pub fn version_list(plan_id: &str, clause_id: &str) -> Vec<u8> {
    join(
        VERSION_LISTS,
        &[plan_id.as_bytes(), clause_id.as_bytes(), b""],
    )
}

/// `prevc/{plan}\0`: the list of a plan's revisions.
pub fn plan_rev_list(plan_id: &str) -> Vec<u8> {
    join(PLAN_REV_LISTS, &[plan_id.as_bytes(), b""])
}

/// `ptlc/{plan}\0{party}\0`: the list of a party's stance revisions on a plan.
pub fn party_rev_list(plan_id: &str, party_id: &str) -> Vec<u8> {
    join(
        PARTY_REV_LISTS,
        &[plan_id.as_bytes(), party_id.as_bytes(), b""],
    )
}

/// The schema-1 and -2 log, one key per revision, read only to migrate a store.
pub mod v2 {
    /// Prefix of the log.
    pub const REV: &[u8] = b"rev/";

    /// `rev/{u64be}` → the revision record.
    pub fn rev(revision: u64) -> Vec<u8> {
        super::join(REV, &[&revision.to_be_bytes()])
    }
}

/// The schema-1 indexes, one key per entry, read only to migrate a store.
pub mod v1 {
    /// `ver/{plan}\0{clause}\0{u64be version}` → `u64be` revision.
    pub const VERSION: &[u8] = b"ver/";
    /// `prev/{plan}\0{u64be revision}` → empty.
    pub const PLAN_REVS: &[u8] = b"prev/";
    /// `ptl/{plan}\0{party}\0{u64be revision}` → empty.
    pub const PARTY_REVS: &[u8] = b"ptl/";
}

/// `req/{request id}` → the idempotency record.
pub fn request(request_id: &str) -> Vec<u8> {
    join(REQUEST, &[request_id.as_bytes()])
}

/// `reqrev/{u64be first revision}` → the request id (for pruning, oldest first).
pub fn request_by_rev(revision: u64) -> Vec<u8> {
    join(REQUEST_BY_REV, &[&revision.to_be_bytes()])
}

/// The big-endian u64 at the end of a key.
pub fn trailing_u64(key: &[u8]) -> u64 {
    let mut buf = [0u8; 8];
    let tail = &key[key.len().saturating_sub(8)..];
    buf[8 - tail.len()..].copy_from_slice(tail);
    u64::from_be_bytes(buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn revisions_sort_numerically() {
        let mut keys: Vec<Vec<u8>> = [300u64, 2, 1 << 40, 256, 1]
            .iter()
            .map(|r| log_block(*r))
            .collect();
        keys.sort();
        let back: Vec<u64> = keys.iter().map(|k| trailing_u64(k)).collect();
        assert_eq!(back, vec![1, 2, 256, 300, 1 << 40]);
    }

    #[test]
    fn chunks_sort_numerically_within_a_list() {
        let list = version_list("us-28-point", "p7");
        let mut keys: Vec<Vec<u8>> = [129u64, 65, 1 << 33, 1]
            .iter()
            .map(|v| super::super::index::chunk_key(&list, *v))
            .collect();
        keys.sort();
        let back: Vec<u64> = keys.iter().map(|k| trailing_u64(k)).collect();
        assert_eq!(back, vec![1, 65, 129, 1 << 33]);
    }

    #[test]
    fn every_prefix_is_a_prefix_of_its_keys() {
        assert!(log_block(7).starts_with(LOG));
        assert!(v2::rev(7).starts_with(v2::REV));
        assert!(plan("a").starts_with(PLAN));
        assert!(clause("a", "b").starts_with(&clauses_of("a")));
        assert!(version_list("a", "b").starts_with(VERSION_LISTS));
        assert!(plan_rev_list("a").starts_with(PLAN_REV_LISTS));
        assert!(party_rev_list("a", "b").starts_with(PARTY_REV_LISTS));
        assert!(request("x").starts_with(REQUEST));
        assert!(request_by_rev(3).starts_with(REQUEST_BY_REV));
    }

    #[test]
    fn an_id_prefix_does_not_capture_a_longer_id() {
        // "p1" must not see the clauses of "p10", nor plan "a" those of plan "ab".
        assert!(!version_list("pl", "p10").starts_with(&version_list("pl", "p1")));
        assert!(!clause("ab", "c").starts_with(&clauses_of("a")));
        assert!(!plan_rev_list("ab").starts_with(&plan_rev_list("a")));
        assert!(!party_rev_list("a", "ukraine-2").starts_with(&party_rev_list("a", "ukraine")));
    }

    #[test]
    fn prefixes_do_not_overlap() {
        let all = [
            LOG,
            v2::REV,
            PLAN,
            CLAUSE,
            VERSION_LISTS,
            PLAN_REV_LISTS,
            PARTY_REV_LISTS,
            v1::VERSION,
            v1::PLAN_REVS,
            v1::PARTY_REVS,
            REQUEST,
            REQUEST_BY_REV,
            SCHEMA,
        ];
        for (i, a) in all.iter().enumerate() {
            for (j, b) in all.iter().enumerate() {
                if i != j {
                    assert!(!a.starts_with(b), "{a:?} starts with {b:?}");
                }
            }
        }
    }
}
