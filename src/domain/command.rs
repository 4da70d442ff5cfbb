//! Writes as pure functions: a validated [`Command`] and the current state go in,
//! the [`Revision`]s it commits come out. No I/O: the state is read through
//! [`StateView`], which the committer implements over the store plus whatever
//! earlier writes of the same group commit have staged.
//!
//! Field formats and limits are checked at the edge when the command is built
//! (see `grpc::convert`); everything that depends on state (existence, the
//! party being on the plan, `expected_version`) is checked here, so a write is
//! validated against the state it will actually be applied to.

use serde::{Deserialize, Serialize};

use super::model::{
    ChangeKind, Clause, ClauseRef, ClauseStatus, Party, Plan, Position, Revision, Stance, Timestamp,
};
use crate::error::{Error, Result};

/// A party as a write names it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartySpec {
    /// Slug.
    pub id: String,
    /// Display name.
    pub name: String,
    /// Whether its consent is needed.
    pub required: bool,
}

/// A validated write.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Command {
    /// Create a plan, optionally as a copy of another plan's clauses.
    CreatePlan {
        /// New plan id.
        plan_id: String,
        /// Title.
        title: String,
        /// Description.
        description: String,
        /// Parties; empty on a derived plan means "the base plan's parties".
        parties: Vec<PartySpec>,
        /// Base plan to copy clauses from.
        derived_from: Option<String>,
    },
    /// Add a party to a plan.
    AddParty {
        /// The plan.
        plan_id: String,
        /// The party.
        party: PartySpec,
    },
    /// Create a clause.
    CreateClause {
        /// The plan.
        plan_id: String,
        /// New clause id.
        clause_id: String,
        /// Displayed number (>= 1).
        number: u32,
        /// Title.
        title: String,
        /// Text.
        text: String,
        /// Topic slugs.
        topics: Vec<String>,
    },
    /// Change the fields named by the update mask (`None` = leave as is).
    AmendClause {
        /// The plan.
        plan_id: String,
        /// The clause.
        clause_id: String,
        /// New title.
        title: Option<String>,
        /// New text.
        text: Option<String>,
        /// New number.
        number: Option<u32>,
        /// New topics.
        topics: Option<Vec<String>>,
        /// 0 = no check.
        expected_version: u64,
    },
    /// Set one party's stance.
    SetStance {
        /// The plan.
        plan_id: String,
        /// The clause.
        clause_id: String,
        /// The party.
        party_id: String,
        /// Its position.
        position: Position,
        /// Editor's note.
        note: String,
        /// Direct quote.
        quote: String,
        /// Source.
        source_url: String,
        /// When stated.
        stated_at: Option<Timestamp>,
        /// 0 = no check.
        expected_version: u64,
    },
    /// Set a clause's editorial status.
    SetClauseStatus {
        /// The plan.
        plan_id: String,
        /// The clause.
        clause_id: String,
        /// New status.
        status: ClauseStatus,
        /// 0 = no check.
        expected_version: u64,
    },
}

impl Command {
    /// The plan the command writes to.
    pub fn plan_id(&self) -> &str {
        match self {
            Command::CreatePlan { plan_id, .. }
            | Command::AddParty { plan_id, .. }
            | Command::CreateClause { plan_id, .. }
            | Command::AmendClause { plan_id, .. }
            | Command::SetStance { plan_id, .. }
            | Command::SetClauseStatus { plan_id, .. } => plan_id,
        }
    }
}

/// One write with the revision metadata it carries.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Write {
    /// What to change.
    pub command: Command,
    /// Why (recorded on the revision).
    pub reason: String,
    /// Evidence (recorded on the revision).
    pub source_url: String,
}

/// Who commits, when, under which idempotency key.
#[derive(Clone, Debug)]
pub struct CommitContext<'a> {
    /// Revision author.
    pub author: &'a str,
    /// Idempotency key ("" = none).
    pub request_id: &'a str,
    /// Commit time shared by the whole group commit.
    pub commit_time: Timestamp,
}

/// Read access to the state a write is validated against.
pub trait StateView {
    /// The latest state of a plan.
    fn plan(&self, plan_id: &str) -> Result<Option<Plan>>;
    /// The latest state of a clause.
    fn clause(&self, plan_id: &str, clause_id: &str) -> Result<Option<Clause>>;
    /// Every clause of a plan, latest state, ordered by clause id.
    fn clauses(&self, plan_id: &str) -> Result<Vec<Clause>>;
}

/// Applies `write` to `view`, numbering the revisions it commits from `first_revision`.
///
/// Returns at least one revision; a derived `CreatePlan` returns the plan's
/// revision followed by one `ClauseCreated` per copied clause.
pub fn execute(
    view: &impl StateView,
    write: &Write,
    first_revision: u64,
    ctx: &CommitContext<'_>,
) -> Result<Vec<Revision>> {
    let revision = |rev: u64, kind: ChangeKind, plan_id: &str| Revision {
        revision: rev,
        plan_id: plan_id.to_string(),
        clause_id: None,
        clause_version: 0,
        kind,
        author: ctx.author.to_string(),
        reason: write.reason.clone(),
        source_url: write.source_url.clone(),
        commit_time: ctx.commit_time,
        request_id: ctx.request_id.to_string(),
        party_id: None,
        clause: None,
        plan: None,
        previous: None,
    };
    match &write.command {
        Command::CreatePlan {
            plan_id,
            title,
            description,
            parties,
            derived_from,
        } => {
            if view.plan(plan_id)?.is_some() {
                return Err(Error::AlreadyExists(format!("plan {plan_id}")));
            }
            let base = match derived_from {
                Some(base_id) => Some(
                    view.plan(base_id)?
                        .ok_or_else(|| Error::NotFound(format!("plan {base_id}")))?,
                ),
                None => None,
            };
            let party_specs: Vec<PartySpec> = match (&base, parties.is_empty()) {
                (Some(base), true) => base
                    .parties
                    .iter()
                    .map(|p| PartySpec {
                        id: p.id.clone(),
                        name: p.name.clone(),
                        required: p.required,
                    })
                    .collect(),
                _ => parties.clone(),
            };
            let plan = Plan {
                id: plan_id.clone(),
                title: title.clone(),
                description: description.clone(),
                parties: party_specs
                    .into_iter()
                    .map(|p| Party {
                        id: p.id,
                        name: p.name,
                        required: p.required,
                        added_revision: first_revision,
                    })
                    .collect(),
                create_revision: first_revision,
                mod_revision: first_revision,
                derived_from: derived_from.clone(),
            };
            let mut out = vec![Revision {
                plan: Some(plan),
                ..revision(first_revision, ChangeKind::PlanCreated, plan_id)
            }];
            if let Some(base) = base {
                // Dropped clauses are not carried into a new draft; ComparePlans
                // reports them as dropped.
                let copied = view
                    .clauses(&base.id)?
                    .into_iter()
                    .filter(|c| c.status != ClauseStatus::Dropped);
                for (rev, source) in (first_revision + 1..).zip(copied) {
                    let clause = Clause {
                        plan_id: plan_id.clone(),
                        id: source.id.clone(),
                        number: source.number,
                        title: source.title.clone(),
                        text: source.text.clone(),
                        topics: source.topics.clone(),
                        status: ClauseStatus::Proposed,
                        stances: Vec::new(),
                        version: 1,
                        create_revision: rev,
                        mod_revision: rev,
                        update_time: ctx.commit_time,
                        derived_from: Some(ClauseRef {
                            plan_id: base.id.clone(),
                            clause_id: source.id.clone(),
                            version: source.version,
                        }),
                    };
                    out.push(Revision {
                        clause_id: Some(clause.id.clone()),
                        clause_version: 1,
                        clause: Some(clause),
                        ..revision(rev, ChangeKind::ClauseCreated, plan_id)
                    });
                }
            }
            Ok(out)
        }
        Command::AddParty { plan_id, party } => {
            let mut plan = existing_plan(view, plan_id)?;
            if plan.party(&party.id).is_some() {
                return Err(Error::AlreadyExists(format!(
                    "party {} on plan {plan_id}",
                    party.id
                )));
            }
            if plan.parties.len() >= super::limits::MAX_PARTIES {
                return Err(Error::invalid(
                    "party",
                    format!("plan already has {} parties, the limit", plan.parties.len()),
                ));
            }
            plan.parties.push(Party {
                id: party.id.clone(),
                name: party.name.clone(),
                required: party.required,
                added_revision: first_revision,
            });
            plan.mod_revision = first_revision;
            Ok(vec![Revision {
                plan: Some(plan),
                ..revision(first_revision, ChangeKind::PartyAdded, plan_id)
            }])
        }
        Command::CreateClause {
            plan_id,
            clause_id,
            number,
            title,
            text,
            topics,
        } => {
            existing_plan(view, plan_id)?;
            if view.clause(plan_id, clause_id)?.is_some() {
                return Err(Error::AlreadyExists(format!(
                    "clause {plan_id}/{clause_id}"
                )));
            }
            let clause = Clause {
                plan_id: plan_id.clone(),
                id: clause_id.clone(),
                number: *number,
                title: title.clone(),
                text: text.clone(),
                topics: topics.clone(),
                status: ClauseStatus::Proposed,
                stances: Vec::new(),
                version: 1,
                create_revision: first_revision,
                mod_revision: first_revision,
                update_time: ctx.commit_time,
                derived_from: None,
            };
            Ok(vec![Revision {
                clause_id: Some(clause_id.clone()),
                clause_version: 1,
                clause: Some(clause),
                ..revision(first_revision, ChangeKind::ClauseCreated, plan_id)
            }])
        }
        Command::AmendClause {
            plan_id,
            clause_id,
            title,
            text,
            number,
            topics,
            expected_version,
        } => {
            let plan = existing_plan(view, plan_id)?;
            let previous = existing_clause(view, &plan, clause_id, *expected_version)?;
            let mut clause = next_version(&previous, first_revision, ctx);
            if let Some(title) = title {
                clause.title = title.clone();
            }
            if let Some(text) = text {
                clause.text = text.clone();
            }
            if let Some(number) = number {
                clause.number = *number;
            }
            if let Some(topics) = topics {
                clause.topics = topics.clone();
            }
            let grew = if text.is_some() {
                "text"
            } else if title.is_some() {
                "title"
            } else {
                "topics"
            };
            super::limits::clause_text(grew, &clause)?;
            Ok(vec![clause_revision(
                revision(first_revision, ChangeKind::ClauseAmended, plan_id),
                clause,
                previous,
                None,
            )])
        }
        Command::SetStance {
            plan_id,
            clause_id,
            party_id,
            position,
            note,
            quote,
            source_url,
            stated_at,
            expected_version,
        } => {
            let plan = existing_plan(view, plan_id)?;
            if plan.party(party_id).is_none() {
                return Err(Error::NotFound(format!(
                    "party {party_id} on plan {plan_id}"
                )));
            }
            let previous = existing_clause(view, &plan, clause_id, *expected_version)?;
            let mut clause = next_version(&previous, first_revision, ctx);
            let stance = Stance {
                party_id: party_id.clone(),
                position: *position,
                note: note.clone(),
                quote: quote.clone(),
                source_url: source_url.clone(),
                stated_at: *stated_at,
                mod_revision: first_revision,
            };
            match clause.stances.iter_mut().find(|s| s.party_id == *party_id) {
                Some(existing) => *existing = stance,
                None => clause.stances.push(stance),
            }
            let grew = if note.len() >= quote.len() {
                "note"
            } else {
                "quote"
            };
            super::limits::clause_text(grew, &clause)?;
            Ok(vec![clause_revision(
                revision(first_revision, ChangeKind::StanceSet, plan_id),
                clause,
                previous,
                Some(party_id.clone()),
            )])
        }
        Command::SetClauseStatus {
            plan_id,
            clause_id,
            status,
            expected_version,
        } => {
            let plan = existing_plan(view, plan_id)?;
            let previous = existing_clause(view, &plan, clause_id, *expected_version)?;
            let mut clause = next_version(&previous, first_revision, ctx);
            clause.status = *status;
            Ok(vec![clause_revision(
                revision(first_revision, ChangeKind::StatusChanged, plan_id),
                clause,
                previous,
                None,
            )])
        }
    }
}

fn existing_plan(view: &impl StateView, plan_id: &str) -> Result<Plan> {
    view.plan(plan_id)?
        .ok_or_else(|| Error::NotFound(format!("plan {plan_id}")))
}

/// The latest state of a clause of `plan` (already read by the caller), after the
/// optimistic-concurrency check.
fn existing_clause(
    view: &impl StateView,
    plan: &Plan,
    clause_id: &str,
    expected_version: u64,
) -> Result<Clause> {
    let plan_id = plan.id.as_str();
    let clause = view
        .clause(plan_id, clause_id)?
        .ok_or_else(|| Error::NotFound(format!("clause {plan_id}/{clause_id}")))?;
    if expected_version != 0 && expected_version != clause.version {
        return Err(Error::Conflict {
            what: format!("clause {plan_id}/{clause_id}"),
            expected: expected_version,
            actual: clause.version,
        });
    }
    Ok(clause)
}

fn next_version(previous: &Clause, revision: u64, ctx: &CommitContext<'_>) -> Clause {
    Clause {
        version: previous.version + 1,
        mod_revision: revision,
        update_time: ctx.commit_time,
        ..previous.clone()
    }
}

fn clause_revision(
    base: Revision,
    clause: Clause,
    previous: Clause,
    party_id: Option<String>,
) -> Revision {
    Revision {
        clause_id: Some(clause.id.clone()),
        clause_version: clause.version,
        clause: Some(clause),
        previous: Some(previous),
        party_id,
        ..base
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    #[derive(Default)]
    struct Memory {
        plans: HashMap<String, Plan>,
        clauses: HashMap<(String, String), Clause>,
    }

    impl StateView for Memory {
        fn plan(&self, plan_id: &str) -> Result<Option<Plan>> {
            Ok(self.plans.get(plan_id).cloned())
        }
        fn clause(&self, plan_id: &str, clause_id: &str) -> Result<Option<Clause>> {
            Ok(self
                .clauses
                .get(&(plan_id.to_string(), clause_id.to_string()))
                .cloned())
        }
        fn clauses(&self, plan_id: &str) -> Result<Vec<Clause>> {
            let mut out: Vec<Clause> = self
                .clauses
                .values()
                .filter(|c| c.plan_id == plan_id)
                .cloned()
                .collect();
            out.sort_by(|a, b| a.id.cmp(&b.id));
            Ok(out)
        }
    }

    impl Memory {
        fn apply(&mut self, write: Command, first: u64) -> Result<Vec<Revision>> {
            let ctx = CommitContext {
                author: "test",
                request_id: "",
                commit_time: Timestamp::default(),
            };
            let write = Write {
                command: write,
                reason: String::new(),
                source_url: String::new(),
            };
            let revs = execute(self, &write, first, &ctx)?;
            for rev in &revs {
                if let Some(plan) = &rev.plan {
                    self.plans.insert(plan.id.clone(), plan.clone());
                }
                if let Some(clause) = &rev.clause {
                    self.clauses
                        .insert((clause.plan_id.clone(), clause.id.clone()), clause.clone());
                }
            }
            Ok(revs)
        }
    }

    fn party(id: &str, required: bool) -> PartySpec {
        PartySpec {
            id: id.into(),
            name: id.into(),
            required,
        }
    }

    fn seeded() -> Memory {
        let mut m = Memory::default();
        m.apply(
            Command::CreatePlan {
                plan_id: "p".into(),
                title: "t".into(),
                description: String::new(),
                parties: vec![party("a", true), party("b", true)],
                derived_from: None,
            },
            1,
        )
        .unwrap();
        m.apply(
            Command::CreateClause {
                plan_id: "p".into(),
                clause_id: "c1".into(),
                number: 1,
                title: "one".into(),
                text: "first".into(),
                topics: vec![],
            },
            2,
        )
        .unwrap();
        m
    }

    fn stance(party_id: &str, position: Position, expected_version: u64) -> Command {
        Command::SetStance {
            plan_id: "p".into(),
            clause_id: "c1".into(),
            party_id: party_id.into(),
            position,
            note: String::new(),
            quote: String::new(),
            source_url: String::new(),
            stated_at: None,
            expected_version,
        }
    }

    #[test]
    fn stance_bumps_version_and_keeps_previous() {
        let mut m = seeded();
        let revs = m.apply(stance("a", Position::Support, 1), 3).unwrap();
        let rev = &revs[0];
        assert_eq!(rev.clause_version, 2);
        assert_eq!(rev.party_id.as_deref(), Some("a"));
        assert_eq!(rev.previous.as_ref().unwrap().version, 1);
        let clause = rev.clause.as_ref().unwrap();
        assert_eq!(clause.position_of("a"), Position::Support);
        assert_eq!(clause.position_of("b"), Position::Unknown);
        assert_eq!(clause.stance("a").unwrap().mod_revision, 3);
    }

    #[test]
    fn stale_expected_version_is_a_conflict() {
        let mut m = seeded();
        m.apply(stance("a", Position::Support, 1), 3).unwrap();
        let err = m.apply(stance("b", Position::Oppose, 1), 4).unwrap_err();
        assert_eq!(
            err,
            Error::Conflict {
                what: "clause p/c1".into(),
                expected: 1,
                actual: 2
            }
        );
    }

    #[test]
    fn unknown_party_plan_and_clause_are_not_found() {
        let mut m = seeded();
        assert!(matches!(
            m.apply(stance("zz", Position::Support, 0), 3),
            Err(Error::NotFound(_))
        ));
        let mut cmd = stance("a", Position::Support, 0);
        if let Command::SetStance { clause_id, .. } = &mut cmd {
            *clause_id = "nope".into();
        }
        assert!(matches!(m.apply(cmd, 3), Err(Error::NotFound(_))));
    }

    #[test]
    fn duplicate_creates_are_rejected() {
        let mut m = seeded();
        let err = m
            .apply(
                Command::CreateClause {
                    plan_id: "p".into(),
                    clause_id: "c1".into(),
                    number: 2,
                    title: "x".into(),
                    text: "y".into(),
                    topics: vec![],
                },
                3,
            )
            .unwrap_err();
        assert!(matches!(err, Error::AlreadyExists(_)));
    }

    #[test]
    fn derived_plan_copies_clauses_without_stances() {
        let mut m = seeded();
        m.apply(stance("a", Position::Support, 0), 3).unwrap();
        let revs = m
            .apply(
                Command::CreatePlan {
                    plan_id: "q".into(),
                    title: "derived".into(),
                    description: String::new(),
                    parties: vec![],
                    derived_from: Some("p".into()),
                },
                4,
            )
            .unwrap();
        assert_eq!(revs.len(), 2);
        assert_eq!(revs[0].plan.as_ref().unwrap().parties.len(), 2);
        let copy = revs[1].clause.as_ref().unwrap();
        assert_eq!(revs[1].revision, 5);
        assert_eq!(copy.plan_id, "q");
        assert!(copy.stances.is_empty());
        assert_eq!(
            copy.derived_from,
            Some(ClauseRef {
                plan_id: "p".into(),
                clause_id: "c1".into(),
                version: 2
            })
        );
    }

    #[test]
    fn party_added_later_is_hidden_at_earlier_revisions() {
        let mut m = seeded();
        m.apply(
            Command::AddParty {
                plan_id: "p".into(),
                party: party("c", false),
            },
            3,
        )
        .unwrap();
        let plan = m.plans["p"].clone();
        assert_eq!(plan.parties.len(), 3);
        assert_eq!(plan.at_revision(2).parties.len(), 2);
        assert_eq!(plan.at_revision(2).mod_revision, 1);
    }
}
