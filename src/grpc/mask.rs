//! `read_mask` on the calls that return revisions (AIP-157 partial
//! responses): the writes, `Apply`, `ListRevisions` and `Watch`.
//!
//! A full `Revision` carries the clause before and after the change, about
//! 3 KB on the seeded plan. A script that only wants the new revision number,
//! or a dashboard that only wants to know which clause moved, names the
//! fields it wants and gets a message of a few dozen bytes, which is cheaper
//! to build, send and decode.
//!
//! Paths are top-level `Revision` field names, as in `update_mask`
//! (`clause_version`, not `clauseVersion`). A nested path such as
//! `clause.stances` is refused, not silently widened: the snapshots are
//! selected whole. Unset, empty or `*` means every field, so a request without
//! a mask gets exactly what it got before masks existed.

use prost_types::FieldMask;

use crate::error::{Error, Result};

/// The `Revision` fields a mask can name, in proto order.
const FIELDS: [&str; 14] = [
    "revision",
    "plan_id",
    "clause_id",
    "clause_version",
    "kind",
    "author",
    "reason",
    "source_url",
    "commit_time",
    "request_id",
    "clause",
    "previous",
    "plan",
    "party_id",
];

/// One `Revision` field a mask can select.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u16)]
pub enum RevisionField {
    Revision = 0,
    PlanId,
    ClauseId,
    ClauseVersion,
    Kind,
    Author,
    Reason,
    SourceUrl,
    CommitTime,
    RequestId,
    Clause,
    Previous,
    Plan,
    PartyId,
}

/// A validated `read_mask` over `Revision`: a set of top-level fields.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct RevisionMask(u16);

impl Default for RevisionMask {
    fn default() -> Self {
        RevisionMask::ALL
    }
}

impl RevisionMask {
    /// Every field: what an unset mask means.
    pub const ALL: RevisionMask = RevisionMask((1 << FIELDS.len()) - 1);

    /// Validates the request's `read_mask` (named `field` in errors).
    pub fn from_request(field: &str, mask: Option<&FieldMask>) -> Result<RevisionMask> {
        let Some(mask) = mask.filter(|m| !m.paths.is_empty()) else {
            return Ok(RevisionMask::ALL);
        };
        let mut bits = 0u16;
        for (i, path) in mask.paths.iter().enumerate() {
            if path == "*" {
                if mask.paths.len() > 1 {
                    return Err(Error::invalid(
                        format!("{field}.paths[{i}]"),
                        "'*' selects every field and cannot be combined with other paths",
                    ));
                }
                return Ok(RevisionMask::ALL);
            }
            let Some(index) = FIELDS.iter().position(|f| f == path) else {
                let hint = match path.split_once('.') {
                    Some((top, _)) if FIELDS.contains(&top) => {
                        format!("only top-level Revision fields can be selected; use {top:?}")
                    }
                    _ => format!("not a Revision field; allowed: {}", FIELDS.join(", ")),
                };
                return Err(Error::invalid(
                    format!("{field}.paths[{i}]"),
                    format!("{path:?}: {hint}"),
                ));
            };
            bits |= 1 << index;
        }
        Ok(RevisionMask(bits))
    }

    /// Whether the mask selects `field`.
    pub fn has(self, field: RevisionField) -> bool {
        self.0 & (1 << field as u16) != 0
    }

    /// Whether rendering needs the plan (for the stance order of the clause
    /// snapshots).
    pub fn needs_plan(self) -> bool {
        self.has(RevisionField::Clause) || self.has(RevisionField::Previous)
    }

    /// Whether this is the full mask.
    pub fn is_all(self) -> bool {
        self == RevisionMask::ALL
    }

    /// A small number naming this mask, for caching one encoding per mask.
    pub fn bits(self) -> u16 {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Error;

    fn mask(paths: &[&str]) -> Result<RevisionMask> {
        RevisionMask::from_request(
            "read_mask",
            Some(&FieldMask {
                paths: paths.iter().map(|p| p.to_string()).collect(),
            }),
        )
    }

    fn invalid_field(result: Result<RevisionMask>) -> (String, String) {
        match result {
            Err(Error::InvalidInput { field, reason }) => (field, reason),
            other => panic!("expected InvalidInput, got {other:?}"),
        }
    }

    #[test]
    fn unset_empty_and_star_select_every_field() {
        assert!(RevisionMask::from_request("read_mask", None)
            .unwrap()
            .is_all());
        assert!(mask(&[]).unwrap().is_all());
        assert!(mask(&["*"]).unwrap().is_all());
        assert_eq!(RevisionMask::ALL.bits().count_ones() as usize, FIELDS.len());
    }

    #[test]
    fn named_fields_are_selected_and_no_others() {
        let m = mask(&["revision", "clause_version", "party_id"]).unwrap();
        assert!(m.has(RevisionField::Revision));
        assert!(m.has(RevisionField::ClauseVersion));
        assert!(m.has(RevisionField::PartyId));
        assert!(!m.has(RevisionField::Clause));
        assert!(!m.has(RevisionField::Previous));
        assert!(!m.has(RevisionField::PlanId));
        assert!(!m.is_all());
    }

    #[test]
    fn every_field_name_maps_to_its_own_variant() {
        // FIELDS and RevisionField must stay in the same order.
        let variants = [
            RevisionField::Revision,
            RevisionField::PlanId,
            RevisionField::ClauseId,
            RevisionField::ClauseVersion,
            RevisionField::Kind,
            RevisionField::Author,
            RevisionField::Reason,
            RevisionField::SourceUrl,
            RevisionField::CommitTime,
            RevisionField::RequestId,
            RevisionField::Clause,
            RevisionField::Previous,
            RevisionField::Plan,
            RevisionField::PartyId,
        ];
        for (name, variant) in FIELDS.iter().zip(variants) {
            let m = mask(&[name]).unwrap();
            assert!(m.has(variant), "{name}");
            assert_eq!(m.bits().count_ones(), 1, "{name}");
        }
    }

    #[test]
    fn unknown_nested_and_mixed_star_paths_are_refused_by_index() {
        let (field, reason) = invalid_field(mask(&["revision", "clauseVersion"]));
        assert_eq!(field, "read_mask.paths[1]");
        assert!(reason.contains("allowed: revision, plan_id"), "{reason}");

        let (field, reason) = invalid_field(mask(&["clause.stances"]));
        assert_eq!(field, "read_mask.paths[0]");
        assert!(reason.contains("use \"clause\""), "{reason}");

        let (field, _) = invalid_field(mask(&["revision", "*"]));
        assert_eq!(field, "read_mask.paths[1]");
    }
}
