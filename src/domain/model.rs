//! The nouns of the tracker: plans, parties, clauses, stances and revisions.
//!
//! A stored [`Clause`] keeps only the stances that were ever set (sparse); the
//! full view, one stance per party in the plan's party order with `Unknown` for
//! the rest, is [`Clause::stances_for`]. That is what lets a party added later
//! appear on every clause without bumping any clause's version.

use serde::{Deserialize, Serialize};

/// A point in time, as seconds and nanoseconds since the Unix epoch (UTC).
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct Timestamp {
    /// Whole seconds since the epoch.
    pub seconds: i64,
    /// Nanoseconds within the second, `0..1_000_000_000`.
    pub nanos: i32,
}

impl Timestamp {
    /// The current wall-clock time.
    pub fn now() -> Self {
        let since = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        Timestamp {
            seconds: since.as_secs() as i64,
            nanos: since.subsec_nanos() as i32,
        }
    }
}

/// A party's position on a clause.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub enum Position {
    /// No public position.
    #[default]
    Unknown,
    /// Supports the clause as drafted.
    Support,
    /// Supports with conditions.
    Conditional,
    /// Accepts the subject, wants changes.
    Amend,
    /// Opposes the clause.
    Oppose,
    /// Rejects it as non-negotiable.
    RedLine,
}

impl Position {
    /// Whether this position blocks agreement (OPPOSE or RED_LINE).
    pub fn is_opposed(self) -> bool {
        matches!(self, Position::Oppose | Position::RedLine)
    }
}

/// Editorial status of a clause.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub enum ClauseStatus {
    /// Put on the table.
    #[default]
    Proposed,
    /// Under discussion.
    Negotiating,
    /// Deferred to leaders.
    Bracketed,
    /// Agreed by the negotiators.
    Agreed,
    /// Taken out of the plan.
    Dropped,
}

/// Where the required parties stand on a clause, derived from their stances.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Consensus {
    /// Every required party supports.
    Agreed,
    /// All support or support with conditions; at least one conditional.
    Conditional,
    /// Nobody opposes, not everybody agrees yet.
    Open,
    /// Some required party opposes or holds a red line.
    Contested,
}

/// What a revision changed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ChangeKind {
    /// A plan was created.
    PlanCreated,
    /// A party was added to a plan.
    PartyAdded,
    /// A clause was created (also when copied into a derived plan).
    ClauseCreated,
    /// A clause's title, text, number or topics changed.
    ClauseAmended,
    /// One party's stance on one clause was set.
    StanceSet,
    /// A clause's editorial status changed.
    StatusChanged,
}

/// An actor whose stance is tracked on every clause of a plan.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Party {
    /// Slug, unique within the plan.
    pub id: String,
    /// Display name.
    pub name: String,
    /// Whether an agreement needs this party's consent.
    pub required: bool,
    /// The revision that added the party (reads at earlier revisions leave it out).
    pub added_revision: u64,
}

/// One negotiated document (a draft).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Plan {
    /// Slug, unique in the store.
    pub id: String,
    /// Title.
    pub title: String,
    /// Longer description.
    pub description: String,
    /// Parties in the order they were added.
    pub parties: Vec<Party>,
    /// The revision that created the plan.
    pub create_revision: u64,
    /// The last revision that changed the plan itself (not its clauses).
    pub mod_revision: u64,
    /// The plan this one was derived from.
    pub derived_from: Option<String>,
}

impl Plan {
    /// The plan as it stood at `revision`: parties added later are left out.
    pub fn at_revision(&self, revision: u64) -> Plan {
        let mut plan = self.clone();
        plan.parties.retain(|p| p.added_revision <= revision);
        plan.mod_revision = plan
            .parties
            .iter()
            .map(|p| p.added_revision)
            .chain([plan.create_revision])
            .max()
            .unwrap_or(plan.create_revision);
        plan
    }

    /// The party with this id, if the plan has it.
    pub fn party(&self, party_id: &str) -> Option<&Party> {
        self.parties.iter().find(|p| p.id == party_id)
    }
}

/// One party's position on one clause, with its evidence.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stance {
    /// The party.
    pub party_id: String,
    /// Its position.
    pub position: Position,
    /// Editor's note (e.g. "secondary source").
    pub note: String,
    /// A direct quote, if any.
    pub quote: String,
    /// Where the position was reported.
    pub source_url: String,
    /// When the party stated it.
    pub stated_at: Option<Timestamp>,
    /// The revision that set it (0 = never set).
    pub mod_revision: u64,
}

impl Stance {
    /// The stance of a party that never stated one.
    pub fn unknown(party_id: &str) -> Stance {
        Stance {
            party_id: party_id.to_string(),
            ..Stance::default()
        }
    }
}

/// Where a clause of a derived plan came from.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClauseRef {
    /// The base plan.
    pub plan_id: String,
    /// The clause in the base plan.
    pub clause_id: String,
    /// Its version when copied.
    pub version: u64,
}

/// One point of a plan, at one version.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Clause {
    /// The plan.
    pub plan_id: String,
    /// Stable id, never changes.
    pub id: String,
    /// Displayed number, may change.
    pub number: u32,
    /// Short title.
    pub title: String,
    /// Summary text.
    pub text: String,
    /// Topic slugs.
    pub topics: Vec<String>,
    /// Editorial status.
    pub status: ClauseStatus,
    /// Stances that were set, in the order first set (sparse; see [`Clause::stances_for`]).
    pub stances: Vec<Stance>,
    /// 1 at creation, +1 per change.
    pub version: u64,
    /// The revision that created the clause.
    pub create_revision: u64,
    /// The revision of this version.
    pub mod_revision: u64,
    /// Commit time of this version.
    pub update_time: Timestamp,
    /// Set on clauses copied into a derived plan.
    pub derived_from: Option<ClauseRef>,
}

impl Clause {
    /// Bytes of free text the clause holds (what [`super::limits::MAX_CLAUSE_TEXT`] bounds).
    pub fn text_bytes(&self) -> usize {
        self.title.len()
            + self.text.len()
            + self.topics.iter().map(String::len).sum::<usize>()
            + self
                .stances
                .iter()
                .map(|s| s.note.len() + s.quote.len() + s.source_url.len())
                .sum::<usize>()
    }

    /// The stance set for `party_id`, if any.
    pub fn stance(&self, party_id: &str) -> Option<&Stance> {
        self.stances.iter().find(|s| s.party_id == party_id)
    }

    /// The position of `party_id` (`Unknown` if never set).
    pub fn position_of(&self, party_id: &str) -> Position {
        self.stance(party_id)
            .map_or(Position::Unknown, |s| s.position)
    }

    /// One stance per party of `plan`, in the plan's party order.
    pub fn stances_for(&self, plan: &Plan) -> Vec<Stance> {
        plan.parties
            .iter()
            .map(|party| {
                self.stance(&party.id)
                    .cloned()
                    .unwrap_or_else(|| Stance::unknown(&party.id))
            })
            .collect()
    }

    /// The consensus of `plan`'s required parties on this clause.
    pub fn consensus(&self, plan: &Plan) -> Consensus {
        super::consensus::derive(
            plan.parties
                .iter()
                .filter(|p| p.required)
                .map(|p| self.position_of(&p.id)),
        )
    }
}

/// One committed change. Kept forever.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Revision {
    /// Global, gap-free, starting at 1.
    pub revision: u64,
    /// The plan changed.
    pub plan_id: String,
    /// The clause changed (`None` on plan-level changes).
    pub clause_id: Option<String>,
    /// The clause's version after the change (0 on plan-level changes).
    pub clause_version: u64,
    /// What changed.
    pub kind: ChangeKind,
    /// Who committed it.
    pub author: String,
    /// Why.
    pub reason: String,
    /// Evidence for the change.
    pub source_url: String,
    /// When it was committed (non-decreasing along the log).
    pub commit_time: Timestamp,
    /// The client's idempotency key, if given.
    pub request_id: String,
    /// On `StanceSet`: whose stance.
    pub party_id: Option<String>,
    /// The clause after the change.
    pub clause: Option<Clause>,
    /// The plan after a plan-level change.
    pub plan: Option<Plan>,
    /// The clause before the change (absent on create). Not stored: the store
    /// derives it from the previous version's revision when it reads one back.
    #[serde(skip)]
    pub previous: Option<Clause>,
}

#[cfg(test)]
impl Revision {
    /// A plan-level revision `n` of plan `p` with every other field empty, for
    /// tests of the machinery that moves revisions (store, hub).
    pub(crate) fn bare(n: u64) -> Revision {
        Revision {
            revision: n,
            plan_id: "p".into(),
            clause_id: None,
            clause_version: 0,
            kind: ChangeKind::PlanCreated,
            author: String::new(),
            reason: String::new(),
            source_url: String::new(),
            commit_time: Timestamp::default(),
            request_id: String::new(),
            party_id: None,
            clause: None,
            plan: None,
            previous: None,
        }
    }
}
