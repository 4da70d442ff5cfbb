//! The seeded plans, as TOML data compiled into the binary.
//!
//! Seeding goes through the normal write path (the same request validation
//! and the committer), with author `seed`, so it shows up in history like any
//! other change. It runs only on an empty store: a restart never re-seeds.

use serde::Deserialize;

use crate::domain::Write;
use crate::error::{Error, Result};
use crate::grpc::convert::WriteRequest;
use crate::pb;
use crate::store::CommitterHandle;

/// The author of seeded revisions.
pub const AUTHOR: &str = "seed";

/// The seed files, in load order.
const PLANS: &[(&str, &str)] = &[
    ("us-28-point.toml", include_str!("us-28-point.toml")),
    (
        "e3-counter-proposal.toml",
        include_str!("e3-counter-proposal.toml"),
    ),
];

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SeedFile {
    plan: SeedPlan,
    #[serde(default)]
    clauses: Vec<SeedClause>,
    #[serde(default)]
    statuses: Vec<SeedStatus>,
    #[serde(default)]
    amendments: Vec<SeedAmendment>,
    #[serde(default)]
    drafter: Option<SeedDrafter>,
    #[serde(default)]
    stances: Vec<SeedStance>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SeedStatus {
    clause: String,
    status: String,
    reason: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SeedAmendment {
    clause: String,
    text: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SeedPlan {
    plan_id: String,
    title: String,
    description: String,
    source_url: String,
    reason: String,
    #[serde(default)]
    derived_from_plan_id: String,
    #[serde(default)]
    parties: Vec<SeedParty>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SeedParty {
    party_id: String,
    name: String,
    required: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SeedClause {
    id: String,
    title: String,
    text: String,
    topics: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SeedDrafter {
    /// The drafting party, which supports its own text.
    party: String,
    /// The clauses it drafted (default: every clause of the file).
    #[serde(default)]
    clauses: Vec<String>,
    note: String,
    source_url: String,
    stated_at: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SeedStance {
    clause: String,
    party: String,
    position: String,
    note: String,
    source_url: String,
    stated_at: Option<String>,
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// `YYYY-MM-DD` as midnight UTC.
fn date(text: &str) -> Result<prost_types::Timestamp> {
    let parts: Vec<i64> = text.split('-').filter_map(|p| p.parse().ok()).collect();
    match parts[..] {
        [y, m, d] if (1..=12).contains(&m) && (1..=31).contains(&d) => Ok(prost_types::Timestamp {
            seconds: days_from_civil(y, m, d) * 86_400,
            nanos: 0,
        }),
        _ => Err(Error::Storage(format!(
            "seed date {text:?} is not YYYY-MM-DD"
        ))),
    }
}

fn position(text: &str) -> Result<pb::Position> {
    Ok(match text {
        "unknown" => pb::Position::Unknown,
        "support" => pb::Position::Support,
        "conditional" => pb::Position::Conditional,
        "amend" => pb::Position::Amend,
        "oppose" => pb::Position::Oppose,
        "red-line" => pb::Position::RedLine,
        other => {
            return Err(Error::Storage(format!(
                "seed position {other:?} is unknown"
            )))
        }
    })
}

fn checked<T>(request: T) -> Result<Write>
where
    WriteRequest: TryFrom<T, Error = Error>,
{
    WriteRequest::try_from(request)
        .map(|r| r.write)
        .map_err(|e| Error::Storage(format!("seed data is invalid: {e}")))
}

/// Every write of one seed file, in order, validated as a client's would be.
fn writes_of(name: &str, text: &str) -> Result<Vec<Write>> {
    let file: SeedFile =
        toml::from_str(text).map_err(|e| Error::Storage(format!("seed {name}: {e}")))?;
    let plan_id = file.plan.plan_id.clone();
    let plan_source_url = file.plan.source_url.clone();
    let mut writes = vec![checked(pb::CreatePlanRequest {
        plan_id: plan_id.clone(),
        title: file.plan.title,
        description: file.plan.description,
        parties: file
            .plan
            .parties
            .into_iter()
            .map(|p| pb::Party {
                party_id: p.party_id,
                name: p.name,
                required: p.required,
            })
            .collect(),
        derived_from_plan_id: file.plan.derived_from_plan_id,
        reason: file.plan.reason,
        source_url: file.plan.source_url,
        request_id: String::new(),
        read_mask: None,
    })?];
    for (i, clause) in file.clauses.iter().enumerate() {
        writes.push(checked(pb::CreateClauseRequest {
            plan_id: plan_id.clone(),
            clause_id: clause.id.clone(),
            number: i as u32 + 1,
            title: clause.title.clone(),
            text: clause.text.clone(),
            topics: clause.topics.clone(),
            reason: "Seed: point as reported in the leaked text".into(),
            source_url: String::new(),
            request_id: String::new(),
            read_mask: None,
        })?);
    }
    let stance = |clause: &str,
                  party: &str,
                  pos: pb::Position,
                  note: &str,
                  url: &str,
                  at: &Option<String>| {
        checked(pb::SetStanceRequest {
            plan_id: plan_id.clone(),
            clause_id: clause.to_string(),
            party_id: party.to_string(),
            position: pos as i32,
            note: note.to_string(),
            quote: String::new(),
            source_url: url.to_string(),
            stated_at: at.as_deref().map(date).transpose()?,
            expected_version: 0,
            reason: "Seed: reported stance".into(),
            request_id: String::new(),
            read_mask: None,
        })
    };
    for s in &file.statuses {
        let status = match s.status.as_str() {
            "negotiating" => pb::ClauseStatus::Negotiating,
            "bracketed" => pb::ClauseStatus::Bracketed,
            "agreed" => pb::ClauseStatus::Agreed,
            "dropped" => pb::ClauseStatus::Dropped,
            other => return Err(Error::Storage(format!("seed status {other:?} is unknown"))),
        };
        writes.push(checked(pb::SetClauseStatusRequest {
            plan_id: plan_id.clone(),
            clause_id: s.clause.clone(),
            status: status as i32,
            reason: s.reason.clone(),
            source_url: plan_source_url.clone(),
            ..Default::default()
        })?);
    }
    for a in &file.amendments {
        writes.push(checked(pb::AmendClauseRequest {
            plan_id: plan_id.clone(),
            clause_id: a.clause.clone(),
            text: a.text.clone(),
            update_mask: Some(prost_types::FieldMask {
                paths: vec!["text".into()],
            }),
            reason: "Seed: point as edited in this draft".into(),
            source_url: plan_source_url.clone(),
            ..Default::default()
        })?);
    }
    if let Some(drafter) = &file.drafter {
        let clauses: Vec<String> = if drafter.clauses.is_empty() {
            file.clauses.iter().map(|c| c.id.clone()).collect()
        } else {
            drafter.clauses.clone()
        };
        for clause in &clauses {
            writes.push(stance(
                clause,
                &drafter.party,
                pb::Position::Support,
                &drafter.note,
                &drafter.source_url,
                &drafter.stated_at,
            )?);
        }
    }
    for s in &file.stances {
        writes.push(stance(
            &s.clause,
            &s.party,
            position(&s.position)?,
            &s.note,
            &s.source_url,
            &s.stated_at,
        )?);
    }
    Ok(writes)
}

/// Loads every seed plan through the committer. Call only on an empty store.
pub async fn load(committer: &CommitterHandle) -> Result<u64> {
    let mut last = 0;
    for (name, text) in PLANS {
        for write in writes_of(name, text)? {
            let revs = committer.commit(write, AUTHOR, "").await?;
            last = revs.last().map_or(last, |r| r.revision);
        }
    }
    Ok(last)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{limits, Command};

    #[test]
    fn every_seed_file_is_valid() {
        for (name, text) in PLANS {
            let writes = writes_of(name, text).unwrap();
            assert!(writes.len() > 1, "{name}");
        }
    }

    #[test]
    fn us_plan_has_28_points_and_sourced_stances() {
        let writes = writes_of(PLANS[0].0, PLANS[0].1).unwrap();
        let clauses = writes
            .iter()
            .filter(|w| matches!(w.command, Command::CreateClause { .. }))
            .count();
        assert_eq!(clauses, 28);
        for w in &writes {
            if let Command::SetStance { source_url, .. } = &w.command {
                assert!(source_url.starts_with("https://"), "{w:?}");
                limits::url("source_url", source_url).unwrap();
            }
        }
    }

    #[test]
    fn dates_are_midnight_utc() {
        // 2025-11-20T00:00:00Z
        assert_eq!(date("2025-11-20").unwrap().seconds, 1_763_596_800);
        assert_eq!(date("1970-01-01").unwrap().seconds, 0);
        assert!(date("2025-13-01").is_err());
    }
}
