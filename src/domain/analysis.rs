//! Questions asked of a plan: where it stands (summary), what changed in a
//! clause (diff), and how a derived draft differs from its base (lineage).

use std::collections::{BTreeMap, HashMap};

use similar::{ChangeTag, TextDiff};

use super::model::{Clause, ClauseStatus, Consensus, Plan, Position};

/// One step of a word-level edit script.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Edit {
    /// Text present in both.
    Equal(String),
    /// Text only in the newer version.
    Insert(String),
    /// Text only in the older version.
    Delete(String),
}

/// A party whose position differs between two versions.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StanceChange {
    /// The party.
    pub party_id: String,
    /// Position in the older version.
    pub from: Position,
    /// Position in the newer version.
    pub to: Position,
}

/// What changed between two versions of a clause.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClauseDiff {
    /// Word-level edits of the text.
    pub text: Vec<Edit>,
    /// Word-level edits of the title.
    pub title: Vec<Edit>,
    /// Whether the title differs.
    pub title_changed: bool,
    /// Parties whose position changed, in the plan's party order.
    pub stances: Vec<StanceChange>,
}

/// Word-level edit script from `old` to `new` (whitespace kept with the words),
/// with neighbouring steps of the same kind merged.
pub fn word_diff(old: &str, new: &str) -> Vec<Edit> {
    let diff = TextDiff::from_words(old, new);
    let mut out: Vec<Edit> = Vec::new();
    for change in diff.iter_all_changes() {
        let text = change.value().to_string();
        match (change.tag(), out.last_mut()) {
            (ChangeTag::Equal, Some(Edit::Equal(s)))
            | (ChangeTag::Insert, Some(Edit::Insert(s)))
            | (ChangeTag::Delete, Some(Edit::Delete(s))) => s.push_str(&text),
            (ChangeTag::Equal, _) => out.push(Edit::Equal(text)),
            (ChangeTag::Insert, _) => out.push(Edit::Insert(text)),
            (ChangeTag::Delete, _) => out.push(Edit::Delete(text)),
        }
    }
    out
}

/// The diff between two versions of a clause; positions are compared for
/// every party of `plan` (unset = Unknown).
pub fn diff(from: &Clause, to: &Clause, plan: &Plan) -> ClauseDiff {
    let stances = plan
        .parties
        .iter()
        .filter_map(|p| {
            let (a, b) = (from.position_of(&p.id), to.position_of(&p.id));
            (a != b).then(|| StanceChange {
                party_id: p.id.clone(),
                from: a,
                to: b,
            })
        })
        .collect();
    ClauseDiff {
        text: word_diff(&from.text, &to.text),
        title: word_diff(&from.title, &to.title),
        title_changed: from.title != to.title,
        stances,
    }
}

/// One party's positions counted over the live (not dropped) clauses.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PartyTally {
    /// The party.
    pub party_id: String,
    /// Count of clauses per position.
    pub counts: BTreeMap<Position, u32>,
}

/// A clause some party opposes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Contested {
    /// The clause.
    pub clause_id: String,
    /// Its number.
    pub number: u32,
    /// Its title.
    pub title: String,
    /// Parties holding OPPOSE or RED_LINE, in the plan's party order.
    pub opposed_by: Vec<String>,
}

/// Where a plan stands.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Summary {
    /// Clauses not dropped.
    pub clause_count: u32,
    /// Every clause (dropped included) by status.
    pub by_status: BTreeMap<ClauseStatus, u32>,
    /// Live clauses by consensus.
    pub by_consensus: BTreeMap<Consensus, u32>,
    /// Per party, in the plan's party order.
    pub parties: Vec<PartyTally>,
    /// Live clauses that any party (required or not) opposes, by number.
    pub contested: Vec<Contested>,
}

/// Summarises `clauses` (all of `plan`, as of one revision).
pub fn summarize(plan: &Plan, clauses: &[Clause]) -> Summary {
    let mut summary = Summary {
        parties: plan
            .parties
            .iter()
            .map(|p| PartyTally {
                party_id: p.id.clone(),
                counts: BTreeMap::new(),
            })
            .collect(),
        ..Summary::default()
    };
    let mut ordered: Vec<&Clause> = clauses.iter().collect();
    ordered.sort_by(|a, b| (a.number, &a.id).cmp(&(b.number, &b.id)));
    for clause in ordered {
        *summary.by_status.entry(clause.status).or_default() += 1;
        if clause.status == ClauseStatus::Dropped {
            continue;
        }
        summary.clause_count += 1;
        *summary
            .by_consensus
            .entry(clause.consensus(plan))
            .or_default() += 1;
        for tally in &mut summary.parties {
            *tally
                .counts
                .entry(clause.position_of(&tally.party_id))
                .or_default() += 1;
        }
        let opposed_by: Vec<String> = plan
            .parties
            .iter()
            .filter(|p| clause.position_of(&p.id).is_opposed())
            .map(|p| p.id.clone())
            .collect();
        if !opposed_by.is_empty() {
            summary.contested.push(Contested {
                clause_id: clause.id.clone(),
                number: clause.number,
                title: clause.title.clone(),
                opposed_by,
            });
        }
    }
    summary
}

/// How a clause of a derived plan relates to its base.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Lineage {
    /// Same text, title, topics and number.
    Unchanged,
    /// Text, title or topics differ.
    Amended,
    /// Only the number differs.
    Renumbered,
    /// Only in the derived plan.
    Added,
    /// Absent from the derived plan, or dropped there.
    Dropped,
}

/// One row of a plan comparison.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LineageRow {
    /// The clause in the base plan ("" if added).
    pub base_clause_id: String,
    /// The clause in the derived plan ("" if absent there).
    pub clause_id: String,
    /// Its number in the base plan (0 if added).
    pub base_number: u32,
    /// Its number in the derived plan (0 if absent there).
    pub number: u32,
    /// The classification.
    pub change: Lineage,
}

/// Classifies every clause of `derived` against `base` (clauses of plan
/// `base_plan_id`). A derived clause is matched to the base clause its
/// `derived_from` names, else to the base clause with the same id. Rows are
/// ordered by base number, then added clauses by their number.
pub fn compare(base_plan_id: &str, base: &[Clause], derived: &[Clause]) -> Vec<LineageRow> {
    let base_by_id: HashMap<&str, &Clause> = base.iter().map(|c| (c.id.as_str(), c)).collect();
    let mut matched: HashMap<&str, &Clause> = HashMap::new();
    let mut added: Vec<&Clause> = Vec::new();
    for clause in derived {
        let origin = match &clause.derived_from {
            Some(r) if r.plan_id == base_plan_id => Some(r.clause_id.as_str()),
            _ => Some(clause.id.as_str()),
        };
        match origin.and_then(|id| base_by_id.get(id)) {
            Some(b) if !matched.contains_key(b.id.as_str()) => {
                matched.insert(b.id.as_str(), clause);
            }
            _ => added.push(clause),
        }
    }
    let mut base_sorted: Vec<&Clause> = base.iter().collect();
    base_sorted.sort_by(|a, b| (a.number, &a.id).cmp(&(b.number, &b.id)));
    let mut rows = Vec::new();
    for b in base_sorted {
        let row = match matched.get(b.id.as_str()) {
            None => LineageRow {
                base_clause_id: b.id.clone(),
                clause_id: String::new(),
                base_number: b.number,
                number: 0,
                change: Lineage::Dropped,
            },
            Some(d) => {
                let change = if d.status == ClauseStatus::Dropped {
                    Lineage::Dropped
                } else if d.text != b.text || d.title != b.title || d.topics != b.topics {
                    Lineage::Amended
                } else if d.number != b.number {
                    Lineage::Renumbered
                } else {
                    Lineage::Unchanged
                };
                LineageRow {
                    base_clause_id: b.id.clone(),
                    clause_id: d.id.clone(),
                    base_number: b.number,
                    number: d.number,
                    change,
                }
            }
        };
        rows.push(row);
    }
    added.sort_by(|a, b| (a.number, &a.id).cmp(&(b.number, &b.id)));
    rows.extend(added.into_iter().map(|d| LineageRow {
        base_clause_id: String::new(),
        clause_id: d.id.clone(),
        base_number: 0,
        number: d.number,
        change: if d.status == ClauseStatus::Dropped {
            Lineage::Dropped
        } else {
            Lineage::Added
        },
    }));
    rows
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::model::{ClauseRef, Party, Stance, Timestamp};

    fn clause(plan: &str, id: &str, number: u32, text: &str) -> Clause {
        Clause {
            plan_id: plan.into(),
            id: id.into(),
            number,
            title: format!("title {id}"),
            text: text.into(),
            topics: vec![],
            status: ClauseStatus::Proposed,
            stances: vec![],
            version: 1,
            create_revision: 1,
            mod_revision: 1,
            update_time: Timestamp::default(),
            derived_from: None,
        }
    }

    fn plan() -> Plan {
        let party = |id: &str, required| Party {
            id: id.into(),
            name: id.into(),
            required,
            added_revision: 1,
        };
        Plan {
            id: "p".into(),
            title: "t".into(),
            description: String::new(),
            parties: vec![party("a", true), party("b", true), party("e", false)],
            create_revision: 1,
            mod_revision: 1,
            derived_from: None,
        }
    }

    fn with(mut c: Clause, party: &str, position: Position) -> Clause {
        c.stances.push(Stance {
            party_id: party.into(),
            position,
            ..Stance::default()
        });
        c
    }

    #[test]
    fn word_diff_marks_changed_words() {
        let edits = word_diff("army capped at 600,000", "army capped at 800,000");
        assert_eq!(
            edits,
            vec![
                Edit::Equal("army capped at ".into()),
                Edit::Delete("600,000".into()),
                Edit::Insert("800,000".into()),
            ]
        );
    }

    #[test]
    fn diff_lists_position_changes() {
        let plan = plan();
        let from = with(clause("p", "c", 1, "x"), "a", Position::Support);
        let to = with(
            with(clause("p", "c", 1, "x"), "a", Position::Oppose),
            "e",
            Position::Amend,
        );
        let d = diff(&from, &to, &plan);
        assert!(!d.title_changed);
        assert_eq!(
            d.stances,
            vec![
                StanceChange {
                    party_id: "a".into(),
                    from: Position::Support,
                    to: Position::Oppose
                },
                StanceChange {
                    party_id: "e".into(),
                    from: Position::Unknown,
                    to: Position::Amend
                },
            ]
        );
    }

    #[test]
    fn summary_counts_and_lists_opposition() {
        let plan = plan();
        let mut dropped = with(clause("p", "c3", 3, "z"), "a", Position::Oppose);
        dropped.status = ClauseStatus::Dropped;
        let clauses = vec![
            with(
                with(clause("p", "c1", 1, "x"), "a", Position::Support),
                "b",
                Position::Support,
            ),
            with(
                with(clause("p", "c2", 2, "y"), "a", Position::RedLine),
                "e",
                Position::Oppose,
            ),
            dropped,
        ];
        let s = summarize(&plan, &clauses);
        assert_eq!(s.clause_count, 2);
        assert_eq!(s.by_status[&ClauseStatus::Proposed], 2);
        assert_eq!(s.by_status[&ClauseStatus::Dropped], 1);
        assert_eq!(s.by_consensus[&Consensus::Agreed], 1);
        assert_eq!(s.by_consensus[&Consensus::Contested], 1);
        assert_eq!(s.parties[0].counts[&Position::Support], 1);
        assert_eq!(s.parties[0].counts[&Position::RedLine], 1);
        assert_eq!(s.parties[2].counts[&Position::Unknown], 1);
        assert_eq!(s.contested.len(), 1);
        assert_eq!(
            s.contested[0].opposed_by,
            vec!["a".to_string(), "e".to_string()]
        );
    }

    #[test]
    fn compare_classifies_every_clause() {
        let base = vec![
            clause("us", "p1", 1, "same"),
            clause("us", "p2", 2, "old"),
            clause("us", "p3", 3, "gone"),
            clause("us", "p4", 4, "moved"),
        ];
        let derive = |c: &Clause| {
            let mut d = c.clone();
            d.plan_id = "e3".into();
            d.derived_from = Some(ClauseRef {
                plan_id: "us".into(),
                clause_id: c.id.clone(),
                version: 1,
            });
            d
        };
        let mut amended = derive(&base[1]);
        amended.text = "new".into();
        let mut renumbered = derive(&base[3]);
        renumbered.number = 3;
        let derived = vec![
            derive(&base[0]),
            amended,
            renumbered,
            clause("e3", "x1", 9, "fresh"),
        ];
        let rows = compare("us", &base, &derived);
        let changes: Vec<(String, Lineage)> = rows
            .iter()
            .map(|r| (format!("{}>{}", r.base_clause_id, r.clause_id), r.change))
            .collect();
        assert_eq!(
            changes,
            vec![
                ("p1>p1".into(), Lineage::Unchanged),
                ("p2>p2".into(), Lineage::Amended),
                ("p3>".into(), Lineage::Dropped),
                ("p4>p4".into(), Lineage::Renumbered),
                (">x1".into(), Lineage::Added),
            ]
        );
    }
}
