//! Conversions between protobuf messages and domain types, with validation at
//! the edge: a request becomes a domain [`Write`] only if every field is well
//! formed and within its limit, and the error names the field as the client
//! spelled it (proto names, e.g. `stated_at`, `changes[2].set_stance.note`).

use super::mask::{RevisionField, RevisionMask};
use crate::domain::{
    analysis, limits, ChangeKind, Clause, ClauseRef, ClauseStatus, Command, Consensus, Party,
    PartySpec, Plan, Position, Revision, Stance, Timestamp, Write,
};
use crate::error::{Error, Result};
use crate::pb;

/// A validated write and its idempotency key.
#[derive(Debug)]
pub struct WriteRequest {
    /// The write.
    pub write: Write,
    /// AIP-155 request id ("" = none).
    pub request_id: String,
    /// Which fields of the returned revision to fill (AIP-157).
    pub read_mask: RevisionMask,
}

/// A validated `Apply`: its writes, in order, and what applies to all of them.
#[derive(Debug)]
pub struct ApplyBatch {
    /// The changes.
    pub writes: Vec<Write>,
    /// AIP-155 request id ("" = none).
    pub request_id: String,
    /// Which fields of each returned revision to fill (AIP-157).
    pub read_mask: RevisionMask,
}

// ---- enums -----------------------------------------------------------------

/// A `Position` from a request field; UNSPECIFIED and unknown numbers are rejected.
pub fn position_from(field: &str, value: i32) -> Result<Position> {
    match pb::Position::try_from(value) {
        Ok(pb::Position::Unspecified) => Err(Error::invalid(
            field,
            "is required (POSITION_UNSPECIFIED given)",
        )),
        Ok(pb::Position::Unknown) => Ok(Position::Unknown),
        Ok(pb::Position::Support) => Ok(Position::Support),
        Ok(pb::Position::Conditional) => Ok(Position::Conditional),
        Ok(pb::Position::Amend) => Ok(Position::Amend),
        Ok(pb::Position::Oppose) => Ok(Position::Oppose),
        Ok(pb::Position::RedLine) => Ok(Position::RedLine),
        Err(_) => Err(Error::invalid(
            field,
            format!("unknown Position value {value}"),
        )),
    }
}

/// The protobuf form of a position.
pub fn position_to(value: Position) -> pb::Position {
    match value {
        Position::Unknown => pb::Position::Unknown,
        Position::Support => pb::Position::Support,
        Position::Conditional => pb::Position::Conditional,
        Position::Amend => pb::Position::Amend,
        Position::Oppose => pb::Position::Oppose,
        Position::RedLine => pb::Position::RedLine,
    }
}

/// A `ClauseStatus` from a request field; UNSPECIFIED and unknown numbers are rejected.
pub fn status_from(field: &str, value: i32) -> Result<ClauseStatus> {
    match pb::ClauseStatus::try_from(value) {
        Ok(pb::ClauseStatus::Unspecified) => Err(Error::invalid(
            field,
            "is required (CLAUSE_STATUS_UNSPECIFIED given)",
        )),
        Ok(pb::ClauseStatus::Proposed) => Ok(ClauseStatus::Proposed),
        Ok(pb::ClauseStatus::Negotiating) => Ok(ClauseStatus::Negotiating),
        Ok(pb::ClauseStatus::Bracketed) => Ok(ClauseStatus::Bracketed),
        Ok(pb::ClauseStatus::Agreed) => Ok(ClauseStatus::Agreed),
        Ok(pb::ClauseStatus::Dropped) => Ok(ClauseStatus::Dropped),
        Err(_) => Err(Error::invalid(
            field,
            format!("unknown ClauseStatus value {value}"),
        )),
    }
}

/// The protobuf form of a clause status.
pub fn status_to(value: ClauseStatus) -> pb::ClauseStatus {
    match value {
        ClauseStatus::Proposed => pb::ClauseStatus::Proposed,
        ClauseStatus::Negotiating => pb::ClauseStatus::Negotiating,
        ClauseStatus::Bracketed => pb::ClauseStatus::Bracketed,
        ClauseStatus::Agreed => pb::ClauseStatus::Agreed,
        ClauseStatus::Dropped => pb::ClauseStatus::Dropped,
    }
}

/// A `Consensus` from a filter field; UNSPECIFIED and unknown numbers are rejected.
pub fn consensus_from(field: &str, value: i32) -> Result<Consensus> {
    match pb::Consensus::try_from(value) {
        Ok(pb::Consensus::Unspecified) => Err(Error::invalid(
            field,
            "CONSENSUS_UNSPECIFIED is not a consensus",
        )),
        Ok(pb::Consensus::Agreed) => Ok(Consensus::Agreed),
        Ok(pb::Consensus::Conditional) => Ok(Consensus::Conditional),
        Ok(pb::Consensus::Open) => Ok(Consensus::Open),
        Ok(pb::Consensus::Contested) => Ok(Consensus::Contested),
        Err(_) => Err(Error::invalid(
            field,
            format!("unknown Consensus value {value}"),
        )),
    }
}

/// The protobuf form of a consensus.
pub fn consensus_to(value: Consensus) -> pb::Consensus {
    match value {
        Consensus::Agreed => pb::Consensus::Agreed,
        Consensus::Conditional => pb::Consensus::Conditional,
        Consensus::Open => pb::Consensus::Open,
        Consensus::Contested => pb::Consensus::Contested,
    }
}

fn kind_to(value: ChangeKind) -> pb::ChangeKind {
    match value {
        ChangeKind::PlanCreated => pb::ChangeKind::PlanCreated,
        ChangeKind::PartyAdded => pb::ChangeKind::PartyAdded,
        ChangeKind::ClauseCreated => pb::ChangeKind::ClauseCreated,
        ChangeKind::ClauseAmended => pb::ChangeKind::ClauseAmended,
        ChangeKind::StanceSet => pb::ChangeKind::StanceSet,
        ChangeKind::StatusChanged => pb::ChangeKind::StatusChanged,
    }
}

// ---- timestamps ------------------------------------------------------------

/// Earliest accepted timestamp: 0001-01-01T00:00:00Z (the protobuf range).
const MIN_SECONDS: i64 = -62_135_596_800;
/// Latest accepted timestamp: 9999-12-31T23:59:59Z.
const MAX_SECONDS: i64 = 253_402_300_799;

/// A domain timestamp from a request field (must be in the protobuf range).
pub fn timestamp_from(field: &str, ts: &prost_types::Timestamp) -> Result<Timestamp> {
    if !(MIN_SECONDS..=MAX_SECONDS).contains(&ts.seconds) || !(0..1_000_000_000).contains(&ts.nanos)
    {
        return Err(Error::invalid(
            field,
            "is not a valid timestamp (years 0001 to 9999)",
        ));
    }
    Ok(Timestamp {
        seconds: ts.seconds,
        nanos: ts.nanos,
    })
}

/// The protobuf form of a timestamp.
pub fn timestamp_to(ts: Timestamp) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: ts.seconds,
        nanos: ts.nanos,
    }
}

// ---- domain -> protobuf ----------------------------------------------------

/// The protobuf form of a plan.
pub fn plan_to(plan: &Plan) -> pb::Plan {
    pb::Plan {
        plan_id: plan.id.clone(),
        title: plan.title.clone(),
        description: plan.description.clone(),
        parties: plan.parties.iter().map(party_to).collect(),
        create_revision: plan.create_revision,
        mod_revision: plan.mod_revision,
        derived_from_plan_id: plan.derived_from.clone().unwrap_or_default(),
    }
}

fn party_to(party: &Party) -> pb::Party {
    pb::Party {
        party_id: party.id.clone(),
        name: party.name.clone(),
        required: party.required,
    }
}

fn stance_to(stance: Stance) -> pb::Stance {
    pb::Stance {
        party_id: stance.party_id,
        position: position_to(stance.position) as i32,
        note: stance.note,
        quote: stance.quote,
        source_url: stance.source_url,
        stated_at: stance.stated_at.map(timestamp_to),
        mod_revision: stance.mod_revision,
    }
}

/// The protobuf form of a clause, with one stance per party of `plan` (which
/// must be the plan as of the clause's revision) and the derived consensus.
pub fn clause_to(clause: &Clause, plan: &Plan) -> pb::Clause {
    pb::Clause {
        plan_id: clause.plan_id.clone(),
        clause_id: clause.id.clone(),
        number: clause.number,
        title: clause.title.clone(),
        text: clause.text.clone(),
        topics: clause.topics.clone(),
        status: status_to(clause.status) as i32,
        stances: clause
            .stances_for(plan)
            .into_iter()
            .map(stance_to)
            .collect(),
        consensus: consensus_to(clause.consensus(plan)) as i32,
        version: clause.version,
        create_revision: clause.create_revision,
        mod_revision: clause.mod_revision,
        update_time: Some(timestamp_to(clause.update_time)),
        derived_from: clause
            .derived_from
            .as_ref()
            .map(|r: &ClauseRef| pb::ClauseRef {
                plan_id: r.plan_id.clone(),
                clause_id: r.clause_id.clone(),
                version: r.version,
            }),
    }
}

/// The protobuf form of a revision; `plan` is the plan's latest state (its
/// parties are cut back to those that existed at the revision).
pub fn revision_to(rev: &Revision, plan: &Plan) -> pb::Revision {
    revision_masked(rev, Some(plan), RevisionMask::ALL)
        .expect("a full revision renders with its plan at hand")
}

/// The fields of `rev` that `mask` selects (AIP-157); the others keep their
/// defaults. The clause snapshots list stances in the plan's party order, so
/// `plan` is needed when the mask selects `clause` or `previous`
/// ([`RevisionMask::needs_plan`]); otherwise it may be `None`.
pub fn revision_masked(
    rev: &Revision,
    plan: Option<&Plan>,
    mask: RevisionMask,
) -> Result<pb::Revision> {
    use RevisionField as F;
    let pick = |field: F, value: &str| {
        if mask.has(field) {
            value.to_owned()
        } else {
            String::new()
        }
    };
    let snapshot = |field: F, clause: Option<&Clause>, at: u64| -> Result<Option<pb::Clause>> {
        match clause.filter(|_| mask.has(field)) {
            None => Ok(None),
            Some(clause) => {
                let plan = plan.ok_or_else(|| {
                    Error::Storage(format!(
                        "revision {} rendered without its plan",
                        rev.revision
                    ))
                })?;
                Ok(Some(clause_to(clause, &plan.at_revision(at))))
            }
        }
    };
    Ok(pb::Revision {
        revision: if mask.has(F::Revision) {
            rev.revision
        } else {
            0
        },
        plan_id: pick(F::PlanId, &rev.plan_id),
        clause_id: pick(F::ClauseId, rev.clause_id.as_deref().unwrap_or_default()),
        clause_version: if mask.has(F::ClauseVersion) {
            rev.clause_version
        } else {
            0
        },
        kind: if mask.has(F::Kind) {
            kind_to(rev.kind) as i32
        } else {
            0
        },
        author: pick(F::Author, &rev.author),
        reason: pick(F::Reason, &rev.reason),
        source_url: pick(F::SourceUrl, &rev.source_url),
        commit_time: mask
            .has(F::CommitTime)
            .then(|| timestamp_to(rev.commit_time)),
        request_id: pick(F::RequestId, &rev.request_id),
        clause: snapshot(F::Clause, rev.clause.as_ref(), rev.revision)?,
        previous: snapshot(
            F::Previous,
            rev.previous.as_ref(),
            rev.revision.saturating_sub(1),
        )?,
        plan: rev.plan.as_ref().filter(|_| mask.has(F::Plan)).map(plan_to),
        party_id: pick(F::PartyId, rev.party_id.as_deref().unwrap_or_default()),
    })
}

// ---- protobuf -> domain (validation) ---------------------------------------

fn meta(reason: &str, source_url: &str, request_id: &str, source_field: &str) -> Result<()> {
    limits::text("reason", reason, limits::MAX_REASON, false)?;
    limits::url(source_field, source_url)?;
    limits::request_id("request_id", request_id)
}

fn party_spec(field: &str, party: &pb::Party) -> Result<PartySpec> {
    limits::id(&format!("{field}.party_id"), &party.party_id)?;
    limits::text(
        &format!("{field}.name"),
        &party.name,
        limits::MAX_NAME,
        true,
    )?;
    Ok(PartySpec {
        id: party.party_id.clone(),
        name: party.name.clone(),
        required: party.required,
    })
}

fn number(field: &str, value: u32) -> Result<u32> {
    if value == 0 {
        Err(Error::invalid(field, "must be at least 1"))
    } else {
        Ok(value)
    }
}

impl TryFrom<pb::CreatePlanRequest> for WriteRequest {
    type Error = Error;

    fn try_from(req: pb::CreatePlanRequest) -> Result<Self> {
        limits::id("plan_id", &req.plan_id)?;
        limits::text("title", &req.title, limits::MAX_TITLE, true)?;
        limits::text("description", &req.description, limits::MAX_TEXT, false)?;
        limits::optional_id("derived_from_plan_id", &req.derived_from_plan_id)?;
        meta(&req.reason, &req.source_url, &req.request_id, "source_url")?;
        if req.parties.len() > limits::MAX_PARTIES {
            return Err(Error::invalid(
                "parties",
                format!("more than {} parties", limits::MAX_PARTIES),
            ));
        }
        let mut parties = Vec::with_capacity(req.parties.len());
        for (i, party) in req.parties.iter().enumerate() {
            let spec = party_spec(&format!("parties[{i}]"), party)?;
            if parties.iter().any(|p: &PartySpec| p.id == spec.id) {
                return Err(Error::invalid(
                    format!("parties[{i}].party_id"),
                    format!("party {:?} is listed twice", spec.id),
                ));
            }
            parties.push(spec);
        }
        if req.derived_from_plan_id == req.plan_id {
            return Err(Error::invalid(
                "derived_from_plan_id",
                "a plan cannot derive from itself",
            ));
        }
        let read_mask = RevisionMask::from_request("read_mask", req.read_mask.as_ref())?;
        Ok(WriteRequest {
            write: Write {
                command: Command::CreatePlan {
                    plan_id: req.plan_id,
                    title: req.title,
                    description: req.description,
                    parties,
                    derived_from: Some(req.derived_from_plan_id).filter(|s| !s.is_empty()),
                },
                reason: req.reason,
                source_url: req.source_url,
            },
            request_id: req.request_id,
            read_mask,
        })
    }
}

impl TryFrom<pb::AddPartyRequest> for WriteRequest {
    type Error = Error;

    fn try_from(req: pb::AddPartyRequest) -> Result<Self> {
        limits::id("plan_id", &req.plan_id)?;
        let party = req
            .party
            .as_ref()
            .ok_or_else(|| Error::invalid("party", "is required"))?;
        let party = party_spec("party", party)?;
        meta(&req.reason, &req.source_url, &req.request_id, "source_url")?;
        let read_mask = RevisionMask::from_request("read_mask", req.read_mask.as_ref())?;
        Ok(WriteRequest {
            write: Write {
                command: Command::AddParty {
                    plan_id: req.plan_id,
                    party,
                },
                reason: req.reason,
                source_url: req.source_url,
            },
            request_id: req.request_id,
            read_mask,
        })
    }
}

impl TryFrom<pb::CreateClauseRequest> for WriteRequest {
    type Error = Error;

    fn try_from(req: pb::CreateClauseRequest) -> Result<Self> {
        limits::id("plan_id", &req.plan_id)?;
        limits::id("clause_id", &req.clause_id)?;
        number("number", req.number)?;
        limits::text("title", &req.title, limits::MAX_TITLE, true)?;
        limits::text("text", &req.text, limits::MAX_TEXT, true)?;
        limits::topics("topics", &req.topics)?;
        meta(&req.reason, &req.source_url, &req.request_id, "source_url")?;
        let read_mask = RevisionMask::from_request("read_mask", req.read_mask.as_ref())?;
        Ok(WriteRequest {
            write: Write {
                command: Command::CreateClause {
                    plan_id: req.plan_id,
                    clause_id: req.clause_id,
                    number: req.number,
                    title: req.title,
                    text: req.text,
                    topics: req.topics,
                },
                reason: req.reason,
                source_url: req.source_url,
            },
            request_id: req.request_id,
            read_mask,
        })
    }
}

/// The paths AmendClause accepts in its update mask (AIP-134).
pub const AMENDABLE: [&str; 4] = ["title", "text", "number", "topics"];

impl TryFrom<pb::AmendClauseRequest> for WriteRequest {
    type Error = Error;

    fn try_from(req: pb::AmendClauseRequest) -> Result<Self> {
        limits::id("plan_id", &req.plan_id)?;
        limits::id("clause_id", &req.clause_id)?;
        meta(&req.reason, &req.source_url, &req.request_id, "source_url")?;
        let mask = req.update_mask.clone().unwrap_or_default();
        if mask.paths.is_empty() {
            return Err(Error::invalid(
                "update_mask",
                "is required: name the fields to change (title, text, number, topics)",
            ));
        }
        let (mut title, mut text, mut num, mut topics) = (None, None, None, None);
        for path in &mask.paths {
            match path.as_str() {
                "title" => {
                    limits::text("title", &req.title, limits::MAX_TITLE, true)?;
                    title = Some(req.title.clone());
                }
                "text" => {
                    limits::text("text", &req.text, limits::MAX_TEXT, true)?;
                    text = Some(req.text.clone());
                }
                "number" => num = Some(number("number", req.number)?),
                "topics" => {
                    limits::topics("topics", &req.topics)?;
                    topics = Some(req.topics.clone());
                }
                "*" => return Err(Error::invalid(
                    "update_mask",
                    "wildcard '*' is not supported; list the fields (title, text, number, topics)",
                )),
                other => {
                    return Err(Error::invalid(
                        "update_mask",
                        format!(
                            "{other:?} cannot be amended; allowed paths: {}",
                            AMENDABLE.join(", ")
                        ),
                    ))
                }
            }
        }
        let read_mask = RevisionMask::from_request("read_mask", req.read_mask.as_ref())?;
        Ok(WriteRequest {
            write: Write {
                command: Command::AmendClause {
                    plan_id: req.plan_id,
                    clause_id: req.clause_id,
                    title,
                    text,
                    number: num,
                    topics,
                    expected_version: req.expected_version,
                },
                reason: req.reason,
                source_url: req.source_url,
            },
            request_id: req.request_id,
            read_mask,
        })
    }
}

impl TryFrom<pb::SetStanceRequest> for WriteRequest {
    type Error = Error;

    fn try_from(req: pb::SetStanceRequest) -> Result<Self> {
        limits::id("plan_id", &req.plan_id)?;
        limits::id("clause_id", &req.clause_id)?;
        limits::id("party_id", &req.party_id)?;
        let position = position_from("position", req.position)?;
        limits::text("note", &req.note, limits::MAX_NOTE, false)?;
        limits::text("quote", &req.quote, limits::MAX_NOTE, false)?;
        meta(&req.reason, &req.source_url, &req.request_id, "source_url")?;
        let stated_at = req
            .stated_at
            .as_ref()
            .map(|t| timestamp_from("stated_at", t))
            .transpose()?;
        let read_mask = RevisionMask::from_request("read_mask", req.read_mask.as_ref())?;
        Ok(WriteRequest {
            write: Write {
                command: Command::SetStance {
                    plan_id: req.plan_id,
                    clause_id: req.clause_id,
                    party_id: req.party_id,
                    position,
                    note: req.note,
                    quote: req.quote,
                    source_url: req.source_url.clone(),
                    stated_at,
                    expected_version: req.expected_version,
                },
                reason: req.reason,
                source_url: req.source_url,
            },
            request_id: req.request_id,
            read_mask,
        })
    }
}

impl TryFrom<pb::SetClauseStatusRequest> for WriteRequest {
    type Error = Error;

    fn try_from(req: pb::SetClauseStatusRequest) -> Result<Self> {
        limits::id("plan_id", &req.plan_id)?;
        limits::id("clause_id", &req.clause_id)?;
        let status = status_from("status", req.status)?;
        meta(&req.reason, &req.source_url, &req.request_id, "source_url")?;
        let read_mask = RevisionMask::from_request("read_mask", req.read_mask.as_ref())?;
        Ok(WriteRequest {
            write: Write {
                command: Command::SetClauseStatus {
                    plan_id: req.plan_id,
                    clause_id: req.clause_id,
                    status,
                    expected_version: req.expected_version,
                },
                reason: req.reason,
                source_url: req.source_url,
            },
            request_id: req.request_id,
            read_mask,
        })
    }
}

/// An Apply batch: its writes (each inheriting the batch's plan and reason) and its request id.
pub fn apply_from(req: pb::ApplyRequest) -> Result<ApplyBatch> {
    limits::id("plan_id", &req.plan_id)?;
    limits::text("reason", &req.reason, limits::MAX_REASON, false)?;
    limits::request_id("request_id", &req.request_id)?;
    let read_mask = RevisionMask::from_request("read_mask", req.read_mask.as_ref())?;
    if req.changes.is_empty() {
        return Err(Error::invalid(
            "changes",
            "is empty: give at least one change",
        ));
    }
    if req.changes.len() > limits::MAX_BATCH {
        return Err(Error::invalid(
            "changes",
            format!(
                "has {} changes; the limit is {}",
                req.changes.len(),
                limits::MAX_BATCH
            ),
        ));
    }
    let mut writes = Vec::with_capacity(req.changes.len());
    for (i, change) in req.changes.into_iter().enumerate() {
        let at = format!("changes[{i}]");
        let inherit = |plan_id: &mut String,
                       reason: &mut String,
                       request_id: &str,
                       read_mask: &Option<prost_types::FieldMask>,
                       name: &str| {
            let here = format!("{at}.{name}");
            if read_mask.as_ref().is_some_and(|m| !m.paths.is_empty()) {
                return Err(Error::invalid(
                    format!("{here}.read_mask"),
                    "set read_mask on the ApplyRequest, not on a change",
                ));
            }
            if !request_id.is_empty() {
                return Err(Error::invalid(
                    format!("{here}.request_id"),
                    "set request_id on the ApplyRequest, not on a change",
                ));
            }
            if plan_id.is_empty() {
                plan_id.clone_from(&req.plan_id);
            } else if *plan_id != req.plan_id {
                return Err(Error::invalid(
                    format!("{here}.plan_id"),
                    format!(
                        "{plan_id:?} differs from the batch's plan {:?}",
                        req.plan_id
                    ),
                ));
            }
            if reason.is_empty() {
                reason.clone_from(&req.reason);
            }
            Ok(here)
        };
        let (write, field) = match change.change {
            Some(pb::change::Change::CreateClause(mut c)) => {
                let here = inherit(&mut c.plan_id, &mut c.reason, &c.request_id.clone(), &c.read_mask.clone(), "create_clause")?;
                (WriteRequest::try_from(c), here)
            }
            Some(pb::change::Change::AmendClause(mut c)) => {
                let here = inherit(&mut c.plan_id, &mut c.reason, &c.request_id.clone(), &c.read_mask.clone(), "amend_clause")?;
                (WriteRequest::try_from(c), here)
            }
            Some(pb::change::Change::SetStance(mut c)) => {
                let here = inherit(&mut c.plan_id, &mut c.reason, &c.request_id.clone(), &c.read_mask.clone(), "set_stance")?;
                (WriteRequest::try_from(c), here)
            }
            Some(pb::change::Change::SetClauseStatus(mut c)) => {
                let here = inherit(&mut c.plan_id, &mut c.reason, &c.request_id.clone(), &c.read_mask.clone(), "set_clause_status")?;
                (WriteRequest::try_from(c), here)
            }
            None => return Err(Error::invalid(at, "names no change (set one of create_clause, amend_clause, set_stance, set_clause_status)")),
        };
        writes.push(write.map_err(|e| e.within(&field))?.write);
    }
    Ok(ApplyBatch {
        writes,
        request_id: req.request_id,
        read_mask,
    })
}

// ---- analysis -> protobuf --------------------------------------------------

/// One step of a word-level edit script.
pub fn edit_to(edit: analysis::Edit) -> pb::TextEdit {
    let (op, text) = match edit {
        analysis::Edit::Equal(t) => (pb::EditOp::Equal, t),
        analysis::Edit::Insert(t) => (pb::EditOp::Insert, t),
        analysis::Edit::Delete(t) => (pb::EditOp::Delete, t),
    };
    pb::TextEdit {
        op: op as i32,
        text,
    }
}

/// A plan summary at `revision`.
pub fn summary_to(plan_id: &str, revision: u64, s: analysis::Summary) -> pb::PlanSummary {
    let count = |t: &analysis::PartyTally, p: Position| t.counts.get(&p).copied().unwrap_or(0);
    pb::PlanSummary {
        plan_id: plan_id.to_string(),
        revision,
        clause_count: s.clause_count,
        by_status: s
            .by_status
            .into_iter()
            .map(|(status, count)| pb::StatusCount {
                status: status_to(status) as i32,
                count,
            })
            .collect(),
        by_consensus: s
            .by_consensus
            .into_iter()
            .map(|(consensus, count)| pb::ConsensusCount {
                consensus: consensus_to(consensus) as i32,
                count,
            })
            .collect(),
        parties: s
            .parties
            .iter()
            .map(|t| pb::PartyTally {
                party_id: t.party_id.clone(),
                support: count(t, Position::Support),
                conditional: count(t, Position::Conditional),
                amend: count(t, Position::Amend),
                oppose: count(t, Position::Oppose),
                red_line: count(t, Position::RedLine),
                unknown: count(t, Position::Unknown),
            })
            .collect(),
        contested: s
            .contested
            .into_iter()
            .map(|c| pb::ContestedClause {
                clause_id: c.clause_id,
                number: c.number,
                title: c.title,
                opposed_by: c.opposed_by,
            })
            .collect(),
    }
}

/// One row of a plan comparison.
pub fn lineage_to(row: analysis::LineageRow) -> pb::LineageRow {
    let change = match row.change {
        analysis::Lineage::Unchanged => pb::LineageChange::LineageUnchanged,
        analysis::Lineage::Amended => pb::LineageChange::LineageAmended,
        analysis::Lineage::Renumbered => pb::LineageChange::LineageRenumbered,
        analysis::Lineage::Added => pb::LineageChange::LineageAdded,
        analysis::Lineage::Dropped => pb::LineageChange::LineageDropped,
    };
    pb::LineageRow {
        base_clause_id: row.base_clause_id,
        clause_id: row.clause_id,
        base_number: row.base_number,
        number: row.number,
        change: change as i32,
    }
}

#[cfg(test)]
mod tests {
    use prost_types::FieldMask;

    use super::*;

    fn stance_req() -> pb::SetStanceRequest {
        pb::SetStanceRequest {
            plan_id: "us-28-point".into(),
            clause_id: "p7".into(),
            party_id: "ukraine".into(),
            position: pb::Position::Oppose as i32,
            ..Default::default()
        }
    }

    fn field_of(err: Error) -> String {
        match err {
            Error::InvalidInput { field, .. } => field,
            other => panic!("expected InvalidInput, got {other:?}"),
        }
    }

    #[test]
    fn set_stance_rejects_unspecified_and_unknown_positions() {
        let mut req = stance_req();
        req.position = 0;
        assert_eq!(
            field_of(WriteRequest::try_from(req).unwrap_err()),
            "position"
        );
        let mut req = stance_req();
        req.position = 99;
        assert_eq!(
            field_of(WriteRequest::try_from(req).unwrap_err()),
            "position"
        );
        assert!(WriteRequest::try_from(stance_req()).is_ok());
    }

    #[test]
    fn set_stance_rejects_script_urls_and_bad_timestamps() {
        let mut req = stance_req();
        req.source_url = "javascript:alert(1)".into();
        assert_eq!(
            field_of(WriteRequest::try_from(req).unwrap_err()),
            "source_url"
        );
        let mut req = stance_req();
        req.stated_at = Some(prost_types::Timestamp {
            seconds: 0,
            nanos: -1,
        });
        assert_eq!(
            field_of(WriteRequest::try_from(req).unwrap_err()),
            "stated_at"
        );
    }

    #[test]
    fn amend_needs_a_valid_mask() {
        let base = pb::AmendClauseRequest {
            plan_id: "p".into(),
            clause_id: "c".into(),
            title: "new".into(),
            ..Default::default()
        };
        assert_eq!(
            field_of(WriteRequest::try_from(base.clone()).unwrap_err()),
            "update_mask"
        );
        let mut bad = base.clone();
        bad.update_mask = Some(FieldMask {
            paths: vec!["status".into()],
        });
        assert_eq!(
            field_of(WriteRequest::try_from(bad).unwrap_err()),
            "update_mask"
        );
        let mut ok = base;
        ok.update_mask = Some(FieldMask {
            paths: vec!["title".into()],
        });
        let write = WriteRequest::try_from(ok).unwrap().write;
        match write.command {
            Command::AmendClause { title, text, .. } => {
                assert_eq!(title.as_deref(), Some("new"));
                assert_eq!(text, None);
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn apply_names_the_failing_change() {
        let mut bad = stance_req();
        bad.plan_id = String::new();
        bad.note = "x".repeat(limits::MAX_NOTE + 1);
        let req = pb::ApplyRequest {
            plan_id: "us-28-point".into(),
            changes: vec![
                pb::Change {
                    change: Some(pb::change::Change::SetStance(stance_req())),
                },
                pb::Change {
                    change: Some(pb::change::Change::SetStance(bad)),
                },
            ],
            ..Default::default()
        };
        assert_eq!(
            field_of(apply_from(req).unwrap_err()),
            "changes[1].set_stance.note"
        );
    }

    #[test]
    fn apply_changes_inherit_plan_and_reason() {
        let mut change = stance_req();
        change.plan_id = String::new();
        let req = pb::ApplyRequest {
            plan_id: "us-28-point".into(),
            reason: "batch".into(),
            changes: vec![pb::Change {
                change: Some(pb::change::Change::SetStance(change)),
            }],
            ..Default::default()
        };
        let writes = apply_from(req).unwrap().writes;
        assert_eq!(writes[0].command.plan_id(), "us-28-point");
        assert_eq!(writes[0].reason, "batch");
    }

    mod arbitrary {
        //! Arbitrary requests never panic validation and conversion.
        use proptest::prelude::*;
        use prost::Message;

        use super::super::*;

        fn text() -> impl Strategy<Value = String> {
            prop_oneof![
                "[a-z0-9-]{0,70}",
                ".{0,40}",
                Just("javascript:alert(1)".to_string()),
                Just("https://example.org/x".to_string()),
            ]
        }

        proptest! {
            #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

            #[test]
            fn set_stance_never_panics(
                plan_id in text(), clause_id in text(), party_id in text(),
                position in any::<i32>(), note in text(), url in text(),
                seconds in any::<i64>(), nanos in any::<i32>(), expected in any::<u64>(),
            ) {
                let req = pb::SetStanceRequest {
                    plan_id, clause_id, party_id, position, note,
                    source_url: url,
                    stated_at: Some(prost_types::Timestamp { seconds, nanos }),
                    expected_version: expected,
                    ..Default::default()
                };
                let _ = WriteRequest::try_from(req);
            }

            #[test]
            fn amend_never_panics(paths in proptest::collection::vec(text(), 0..5), number in any::<u32>(), topics in proptest::collection::vec(text(), 0..40)) {
                let req = pb::AmendClauseRequest {
                    plan_id: "p".into(),
                    clause_id: "c".into(),
                    number,
                    topics,
                    update_mask: Some(prost_types::FieldMask { paths }),
                    ..Default::default()
                };
                let _ = WriteRequest::try_from(req);
            }

            #[test]
            fn decoding_arbitrary_bytes_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
                if let Ok(req) = pb::ApplyRequest::decode(bytes.as_slice()) {
                    let _ = apply_from(req);
                }
                if let Ok(req) = pb::CreatePlanRequest::decode(bytes.as_slice()) {
                    let _ = WriteRequest::try_from(req);
                }
                if let Ok(req) = pb::CreateClauseRequest::decode(bytes.as_slice()) {
                    let _ = WriteRequest::try_from(req);
                }
                if let Ok(req) = pb::SetClauseStatusRequest::decode(bytes.as_slice()) {
                    let _ = WriteRequest::try_from(req);
                }
            }
        }
    }
}
