//! Consensus is derived from the required parties' positions, never stored.
//!
//! - `Contested`: any required party opposes or holds a red line;
//! - `Agreed`: every required party supports;
//! - `Conditional`: every required party supports or supports with conditions;
//! - `Open`: otherwise (someone is unknown or wants amendments, nobody opposes).
//!
//! A plan with no required parties is `Open`: there is nobody whose consent
//! would make it agreed.

use super::model::{Consensus, Position};

/// Derives the consensus from the positions of the required parties.
pub fn derive(required_positions: impl IntoIterator<Item = Position>) -> Consensus {
    let positions: Vec<Position> = required_positions.into_iter().collect();
    if positions.is_empty() {
        return Consensus::Open;
    }
    if positions.iter().any(|p| p.is_opposed()) {
        Consensus::Contested
    } else if positions.iter().all(|p| *p == Position::Support) {
        Consensus::Agreed
    } else if positions
        .iter()
        .all(|p| matches!(p, Position::Support | Position::Conditional))
    {
        Consensus::Conditional
    } else {
        Consensus::Open
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Position::*;

    #[test]
    fn all_support_is_agreed() {
        assert_eq!(derive([Support, Support, Support]), Consensus::Agreed);
    }

    #[test]
    fn support_and_conditional_is_conditional() {
        assert_eq!(derive([Support, Conditional]), Consensus::Conditional);
        assert_eq!(derive([Conditional, Conditional]), Consensus::Conditional);
    }

    #[test]
    fn any_opposition_is_contested() {
        assert_eq!(derive([Support, Oppose]), Consensus::Contested);
        assert_eq!(derive([Support, Support, RedLine]), Consensus::Contested);
        assert_eq!(derive([Unknown, RedLine]), Consensus::Contested);
    }

    #[test]
    fn unknown_or_amend_without_opposition_is_open() {
        assert_eq!(derive([Support, Unknown]), Consensus::Open);
        assert_eq!(derive([Support, Amend]), Consensus::Open);
        assert_eq!(derive([Conditional, Amend]), Consensus::Open);
    }

    #[test]
    fn no_required_party_is_open() {
        assert_eq!(derive([]), Consensus::Open);
    }
}
