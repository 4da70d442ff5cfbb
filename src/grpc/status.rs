//! The one place where an [`Error`] becomes a `tonic::Status`.

use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};
use tracing::error;

use crate::error::Error;

impl From<Error> for Status {
    fn from(err: Error) -> Status {
        match err {
            Error::InvalidInput { field, reason } => {
                let message = format!("invalid {field}: {reason}");
                let details = ErrorDetails::with_bad_request_violation(field, reason);
                Status::with_error_details(Code::InvalidArgument, message, details)
            }
            Error::NotFound(_) => Status::not_found(err.to_string()),
            Error::AlreadyExists(_) => Status::already_exists(err.to_string()),
            Error::Conflict { .. } => Status::aborted(err.to_string()),
            Error::OutOfRange(_) => Status::out_of_range(err.to_string()),
            Error::Unauthenticated(m) => Status::unauthenticated(m),
            Error::PermissionDenied(m) => Status::permission_denied(m),
            Error::ResourceExhausted(m) => Status::resource_exhausted(m),
            Error::Unavailable(m) => Status::unavailable(m),
            Error::Storage(cause) => {
                // Storage details are for the operator's log, not for clients.
                error!(%cause, "storage failure");
                Status::internal("internal storage error; see the server log")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invalid_input_carries_a_bad_request_naming_the_field() {
        let status = Status::from(Error::invalid("note", "too long"));
        assert_eq!(status.code(), Code::InvalidArgument);
        let details = status.get_error_details();
        let bad = details.bad_request().expect("BadRequest detail");
        assert_eq!(bad.field_violations[0].field, "note");
        assert_eq!(bad.field_violations[0].description, "too long");
    }

    #[test]
    fn storage_details_are_not_sent() {
        let status = Status::from(Error::Storage("/secret/path: EIO".into()));
        assert_eq!(status.code(), Code::Internal);
        assert!(!status.message().contains("secret"));
    }

    #[test]
    fn conflict_is_aborted_and_names_the_current_version() {
        let status = Status::from(Error::Conflict {
            what: "clause p/c".into(),
            expected: 1,
            actual: 3,
        });
        assert_eq!(status.code(), Code::Aborted);
        assert!(status.message().contains("current version is 3"));
    }
}
