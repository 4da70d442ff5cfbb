//! Plans, clauses, stances, revisions and the rules between them. Pure Rust: no
//! I/O, no tonic, no sled. Writes are [`command::Command`]s executed against a
//! [`command::StateView`]; consensus is derived, never stored.

pub mod analysis;
pub mod command;
pub mod consensus;
pub mod limits;
pub mod model;

pub use command::{execute, Command, CommitContext, PartySpec, StateView, Write};
pub use model::{
    ChangeKind, Clause, ClauseRef, ClauseStatus, Consensus, Party, Plan, Position, Revision,
    Stance, Timestamp,
};
