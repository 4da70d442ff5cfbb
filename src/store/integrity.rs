//! Integrity checks: a quick one on every open, a full one for
//! `peace-tracker check`.
//!
//! The quick check proves that every latest-state record (`plan/…`,
//! `clause/…`) equals the snapshot of the revision it names, and that no later
//! version of a clause exists: the two can only disagree after corruption or a
//! bug, and serving either one then would be wrong.
//!
//! The full check walks the log from revision 1: it must be gap-free; each
//! clause revision must be the previous version + 1 and change only what its
//! kind says (a `StanceSet` changes one party's stance, and so on); every index
//! entry must exist; and replaying the log must end at the latest-state records.

use std::collections::{BTreeMap, HashMap};

use super::{decode, index, keys, log, records, Store};
use crate::domain::{ChangeKind, Clause, Plan, Revision};
use crate::error::{Error, Result};

/// What `check` found.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct CheckReport {
    /// Revisions read.
    pub revisions: u64,
    /// Plans found.
    pub plans: usize,
    /// Clauses found.
    pub clauses: usize,
    /// Problems, in log order (empty = the store is sound).
    pub problems: Vec<String>,
}

impl CheckReport {
    /// Whether no problem was found.
    pub fn ok(&self) -> bool {
        self.problems.is_empty()
    }
}

const MAX_PROBLEMS: usize = 100;

/// The quick check run on open; fails with the first disagreement.
pub fn check_latest(store: &Store) -> Result<()> {
    let corrupt = |what: String| {
        Err(Error::Storage(format!(
            "store is inconsistent ({what}); refusing to serve it. Run `peace-tracker check --data-dir DIR` for a full report"
        )))
    };
    for item in records::scan_prefix(store, keys::PLAN) {
        let plan: Plan = decode(&item?.1)?;
        let Some(rev) = log::entry(&store.db, plan.mod_revision)? else {
            return corrupt(format!(
                "plan {} names missing revision {}",
                plan.id, plan.mod_revision
            ));
        };
        if rev.plan.as_ref() != Some(&plan) {
            return corrupt(format!(
                "plan {} differs from its revision {}",
                plan.id, plan.mod_revision
            ));
        }
    }
    for item in records::scan_prefix(store, keys::CLAUSE) {
        let clause: Clause = decode(&item?.1)?;
        let name = format!("{}/{}", clause.plan_id, clause.id);
        let Some(rev) = log::entry(&store.db, clause.mod_revision)? else {
            return corrupt(format!(
                "clause {name} names missing revision {}",
                clause.mod_revision
            ));
        };
        if rev.clause.as_ref() != Some(&clause) {
            return corrupt(format!(
                "clause {name} differs from its revision {}",
                clause.mod_revision
            ));
        }
        if index::version_entry(
            store,
            &keys::version_list(&clause.plan_id, &clause.id),
            clause.version + 1,
        )?
        .is_some()
        {
            return corrupt(format!(
                "clause {name} has a version newer than its latest state"
            ));
        }
    }
    Ok(())
}

/// The full check behind `peace-tracker check`.
pub fn check_all(store: &Store) -> Result<CheckReport> {
    let mut report = CheckReport::default();
    let problem = |report: &mut CheckReport, text: String| {
        if report.problems.len() < MAX_PROBLEMS {
            report.problems.push(text);
        }
    };
    let mut plans: HashMap<String, Plan> = HashMap::new();
    let mut clauses: BTreeMap<(String, String), Clause> = BTreeMap::new();
    let mut expected_rev = 1u64;
    let mut last_time = None;
    for item in store.db.scan_prefix(keys::LOG) {
        let (key, block) = item?;
        let first = keys::trailing_u64(&key);
        let entries = match log::entries(&block) {
            Ok(entries) if !entries.is_empty() => entries,
            Ok(_) => {
                problem(
                    &mut report,
                    format!("log block at revision {first} is empty"),
                );
                continue;
            }
            Err(e) => {
                problem(&mut report, format!("log block at revision {first}: {e}"));
                continue;
            }
        };
        for (number, value) in (first..).zip(entries) {
            if number != expected_rev {
                problem(
                    &mut report,
                    format!("log gap: expected revision {expected_rev}, found {number}"),
                );
            }
            expected_rev = number + 1;
            report.revisions += 1;
            let rev: Revision = match decode(value) {
                Ok(r) => r,
                Err(e) => {
                    problem(&mut report, format!("revision {number}: {e}"));
                    continue;
                }
            };
            if rev.revision != number {
                problem(
                    &mut report,
                    format!("revision {number} is recorded as {}", rev.revision),
                );
            }
            if last_time.is_some_and(|t| rev.commit_time < t) {
                problem(
                    &mut report,
                    format!("revision {number}: commit time goes backwards"),
                );
            }
            last_time = Some(rev.commit_time);
            if !index::contains(store, &keys::plan_rev_list(&rev.plan_id), number)? {
                problem(
                    &mut report,
                    format!("revision {number}: missing from the plan index"),
                );
            }
            match rev.kind {
                ChangeKind::PlanCreated | ChangeKind::PartyAdded => {
                    let Some(plan) = rev.plan.clone() else {
                        problem(
                            &mut report,
                            format!("revision {number}: plan change without a plan"),
                        );
                        continue;
                    };
                    let before = plans.get(&rev.plan_id);
                    let fits = match (rev.kind, before) {
                        (ChangeKind::PlanCreated, None) => plan.create_revision == number,
                        (ChangeKind::PartyAdded, Some(before)) => {
                            plan.parties.len() == before.parties.len() + 1
                                && plan.parties[..before.parties.len()] == before.parties[..]
                                && plan.mod_revision == number
                        }
                        _ => false,
                    };
                    if !fits {
                        problem(
                            &mut report,
                            format!(
                                "revision {number}: {:?} does not follow from the plan before it",
                                rev.kind
                            ),
                        );
                    }
                    plans.insert(rev.plan_id.clone(), plan);
                }
                _ => {
                    let (Some(clause_id), Some(clause)) =
                        (rev.clause_id.clone(), rev.clause.clone())
                    else {
                        problem(
                            &mut report,
                            format!("revision {number}: clause change without a clause"),
                        );
                        continue;
                    };
                    let key = (rev.plan_id.clone(), clause_id.clone());
                    let before = clauses.get(&key);
                    if let Err(why) = step_fits(before, &clause, &rev) {
                        problem(
                            &mut report,
                            format!("revision {number} ({}/{clause_id}): {why}", rev.plan_id),
                        );
                    }
                    let indexed = index::version_entry(
                        store,
                        &keys::version_list(&rev.plan_id, &clause_id),
                        clause.version,
                    )?;
                    if indexed != Some(number) {
                        problem(
                            &mut report,
                            format!("revision {number}: version index says {indexed:?}"),
                        );
                    }
                    if let Some(party) = &rev.party_id {
                        if !index::contains(
                            store,
                            &keys::party_rev_list(&rev.plan_id, party),
                            number,
                        )? {
                            problem(
                                &mut report,
                                format!("revision {number}: missing from the party timeline"),
                            );
                        }
                    }
                    clauses.insert(key, clause);
                }
            }
        }
    }
    // Replaying the log must end at the latest-state records, and nothing else.
    let mut stored_clauses = 0usize;
    for item in records::scan_prefix(store, keys::CLAUSE) {
        let clause: Clause = decode(&item?.1)?;
        stored_clauses += 1;
        let key = (clause.plan_id.clone(), clause.id.clone());
        if clauses.get(&key) != Some(&clause) {
            problem(
                &mut report,
                format!(
                    "clause {}/{}: latest state differs from the replayed log",
                    key.0, key.1
                ),
            );
        }
    }
    if stored_clauses != clauses.len() {
        problem(
            &mut report,
            format!(
                "{} clauses in the log, {stored_clauses} latest-state records",
                clauses.len()
            ),
        );
    }
    let mut stored_plans = 0usize;
    for item in records::scan_prefix(store, keys::PLAN) {
        let plan: Plan = decode(&item?.1)?;
        stored_plans += 1;
        if plans.get(&plan.id) != Some(&plan) {
            problem(
                &mut report,
                format!(
                    "plan {}: latest state differs from the replayed log",
                    plan.id
                ),
            );
        }
    }
    if stored_plans != plans.len() {
        problem(
            &mut report,
            format!(
                "{} plans in the log, {stored_plans} latest-state records",
                plans.len()
            ),
        );
    }
    // sled's derived records may lag the log (the rest wait in memory), never lead it.
    let through = store.db.get(keys::DERIVED_THROUGH)?.map(|v| v.to_vec());
    match through.as_deref().map(<[u8; 8]>::try_from) {
        Some(Ok(bytes)) if u64::from_be_bytes(bytes) < expected_rev => {}
        other => problem(
            &mut report,
            format!(
                "meta/derived-through is {other:?}, not a revision at or below the head {}",
                expected_rev - 1
            ),
        ),
    }
    report.plans = plans.len();
    report.clauses = clauses.len();
    Ok(report)
}

/// Whether `after` follows from `before` by exactly the change `rev` records.
fn step_fits(before: Option<&Clause>, after: &Clause, rev: &Revision) -> Result<(), String> {
    if after.mod_revision != rev.revision || after.version != rev.clause_version {
        return Err("snapshot does not carry the revision's number and version".into());
    }
    let Some(before) = before else {
        return if rev.kind == ChangeKind::ClauseCreated && after.version == 1 {
            Ok(())
        } else {
            Err(format!(
                "{:?} of a clause that does not exist yet",
                rev.kind
            ))
        };
    };
    if after.version != before.version + 1 {
        return Err(format!(
            "version {} follows version {}",
            after.version, before.version
        ));
    }
    // Put back what the change was allowed to touch; the rest must be equal.
    let mut expected = after.clone();
    expected.version = before.version;
    expected.mod_revision = before.mod_revision;
    expected.update_time = before.update_time;
    match rev.kind {
        ChangeKind::ClauseAmended => {
            expected.title = before.title.clone();
            expected.text = before.text.clone();
            expected.number = before.number;
            expected.topics = before.topics.clone();
        }
        ChangeKind::StatusChanged => expected.status = before.status,
        ChangeKind::StanceSet => {
            let party = rev.party_id.as_deref().unwrap_or_default();
            expected.stances.retain(|s| s.party_id != party);
            let mut before_others = before.stances.clone();
            before_others.retain(|s| s.party_id != party);
            if expected.stances != before_others {
                return Err("a stance of another party changed".into());
            }
            expected.stances = before.stances.clone();
        }
        other => return Err(format!("{other:?} on an existing clause")),
    }
    if &expected == before {
        Ok(())
    } else {
        Err(format!("{:?} changed more than it may", rev.kind))
    }
}
