//! The one error type of the domain and the store.
//!
//! Variants say what KIND of failure happened, not which library raised it; the
//! grpc layer maps each kind to a `tonic::Status` in one place
//! (`grpc::status`). Storage details are logged there, never sent to clients.

/// Everything that can go wrong below the gRPC edge.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// A request field is malformed, over a limit, or inconsistent.
    #[error("invalid {field}: {reason}")]
    InvalidInput {
        /// The request field at fault, as the client named it (e.g. `changes[2].note`).
        field: String,
        /// What is wrong with it, in words a user can act on.
        reason: String,
    },
    /// A plan, clause, party, version or revision does not exist.
    #[error("{0} not found")]
    NotFound(String),
    /// A create named an id that already exists.
    #[error("{0} already exists")]
    AlreadyExists(String),
    /// An optimistic-concurrency check failed.
    #[error("{what}: expected version {expected}, current version is {actual}")]
    Conflict {
        /// The clause whose version was checked.
        what: String,
        /// The version the client expected.
        expected: u64,
        /// The clause's current version.
        actual: u64,
    },
    /// A revision or position beyond what exists.
    #[error("{0}")]
    OutOfRange(String),
    /// No or unknown credentials.
    #[error("{0}")]
    Unauthenticated(String),
    /// Known caller, not allowed to do this.
    #[error("{0}")]
    PermissionDenied(String),
    /// A server-side cap was reached (request size, watchers).
    #[error("{0}")]
    ResourceExhausted(String),
    /// The server is shutting down or the committer is gone.
    #[error("{0}")]
    Unavailable(String),
    /// The embedded store failed or holds data it cannot read.
    #[error("storage failure: {0}")]
    Storage(String),
}

impl Error {
    /// Shorthand for [`Error::InvalidInput`].
    pub fn invalid(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Error::InvalidInput {
            field: field.into(),
            reason: reason.into(),
        }
    }

    /// Prefixes the field of an `InvalidInput` (used to name the failing change of a batch).
    pub fn within(self, prefix: &str) -> Self {
        match self {
            Error::InvalidInput { field, reason } => Error::InvalidInput {
                field: format!("{prefix}.{field}"),
                reason,
            },
            other => other,
        }
    }

    /// Names the failing change of an `Apply` batch (`changes[i]`) in the error.
    pub fn in_change(self, index: usize) -> Self {
        let at = format!("changes[{index}]");
        match self {
            Error::InvalidInput { .. } => self.within(&at),
            Error::NotFound(what) => Error::NotFound(format!("{at}: {what}")),
            Error::AlreadyExists(what) => Error::AlreadyExists(format!("{at}: {what}")),
            Error::Conflict {
                what,
                expected,
                actual,
            } => Error::Conflict {
                what: format!("{at}: {what}"),
                expected,
                actual,
            },
            other => other,
        }
    }
}

impl From<sled::Error> for Error {
    fn from(err: sled::Error) -> Self {
        Error::Storage(err.to_string())
    }
}

impl From<postcard::Error> for Error {
    fn from(err: postcard::Error) -> Self {
        Error::Storage(format!("undecodable record: {err}"))
    }
}

/// Result with the crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
