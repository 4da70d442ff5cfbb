//! Field limits and format rules (API.md "Errors"), checked before anything commits.
//!
//! Every function takes the field name as the client knows it, so the error it
//! returns can name that field in a `BadRequest` detail.

use super::model::Clause;
use crate::error::{Error, Result};

/// Longest id (a slug): `[a-z0-9][a-z0-9-]{0,62}`.
pub const MAX_ID: usize = 63;
/// Longest title, in characters.
pub const MAX_TITLE: usize = 300;
/// Longest clause text or plan description, in characters.
pub const MAX_TEXT: usize = 20_000;
/// Longest stance note or quote, in characters.
pub const MAX_NOTE: usize = 4_000;
/// Longest source URL, in characters.
pub const MAX_URL: usize = 2_048;
/// Most topics on one clause.
pub const MAX_TOPICS: usize = 32;
/// Longest reason, in characters.
pub const MAX_REASON: usize = 2_000;
/// Longest request id or author name, in characters.
pub const MAX_REQUEST_ID: usize = 128;
/// Longest party name, in characters.
pub const MAX_NAME: usize = 200;
/// Most parties on one plan.
pub const MAX_PARTIES: usize = 64;
/// Most changes in one Apply batch.
pub const MAX_BATCH: usize = 1_000;
/// Most bytes (UTF-8) of text one clause may hold in all: title, text, topics,
/// and every stance's note, quote and source URL. It bounds the largest record
/// the store writes, which keeps every write in sled's fsynced log (see
/// `store::SEGMENT_SIZE`); a clause with every party's stance at the field
/// limits would otherwise reach about 2.3 MB.
pub const MAX_CLAUSE_TEXT: usize = 128 * 1024;
/// Largest request, in bytes (enforced by the transport).
pub const MAX_REQUEST_BYTES: usize = 1024 * 1024;
/// Largest message the transport decodes at all (answers OUT_OF_RANGE past it).
pub const MAX_DECODED_BYTES: usize = 4 * MAX_REQUEST_BYTES;

/// Checks a slug id: `[a-z0-9][a-z0-9-]{0,62}`.
pub fn id(field: &str, value: &str) -> Result<()> {
    if value.is_empty() {
        return Err(Error::invalid(field, "is required"));
    }
    let bytes = value.as_bytes();
    let well_formed = bytes.len() <= MAX_ID
        && (bytes[0].is_ascii_lowercase() || bytes[0].is_ascii_digit())
        && bytes
            .iter()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-');
    if well_formed {
        Ok(())
    } else {
        Err(Error::invalid(
            field,
            format!("{value:?} is not a slug: use 1 to 63 of a-z, 0-9 and '-', starting with a letter or digit"),
        ))
    }
}

/// Checks an optional slug (empty is allowed).
pub fn optional_id(field: &str, value: &str) -> Result<()> {
    if value.is_empty() {
        Ok(())
    } else {
        id(field, value)
    }
}

/// Checks a free-text field's length in characters; `required` rejects empty or blank.
pub fn text(field: &str, value: &str, max: usize, required: bool) -> Result<()> {
    if required && value.trim().is_empty() {
        return Err(Error::invalid(field, "is required"));
    }
    let chars = value.chars().count();
    if chars > max {
        return Err(Error::invalid(
            field,
            format!("is {chars} characters long; the limit is {max}"),
        ));
    }
    if value
        .chars()
        .any(|c| c.is_control() && c != '\n' && c != '\t' && c != '\r')
    {
        return Err(Error::invalid(field, "contains control characters"));
    }
    Ok(())
}

/// Checks that a clause about to be committed holds at most [`MAX_CLAUSE_TEXT`]
/// bytes of text; `field` is the request field that added to it.
pub fn clause_text(field: &str, clause: &Clause) -> Result<()> {
    let bytes = clause.text_bytes();
    if bytes > MAX_CLAUSE_TEXT {
        return Err(Error::invalid(
            field,
            format!(
                "would make clause {}/{} hold {bytes} bytes of text (title, text, topics, \
                 and every stance's note, quote and source_url); the limit per clause is \
                 {MAX_CLAUSE_TEXT}",
                clause.plan_id, clause.id
            ),
        ));
    }
    Ok(())
}

/// Checks an optional source URL: empty, or an absolute http(s) URL with a host.
pub fn url(field: &str, value: &str) -> Result<()> {
    if value.is_empty() {
        return Ok(());
    }
    if value.chars().count() > MAX_URL {
        return Err(Error::invalid(
            field,
            format!("is longer than {MAX_URL} characters"),
        ));
    }
    let lower = value.to_ascii_lowercase();
    let rest = lower
        .strip_prefix("https://")
        .or_else(|| lower.strip_prefix("http://"));
    let host_ok = rest.is_some_and(|r| {
        let host = r.split(['/', '?', '#']).next().unwrap_or("");
        !host.is_empty()
    });
    if !host_ok || value.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(Error::invalid(
            field,
            format!("{value:?} is not an absolute http:// or https:// URL"),
        ));
    }
    Ok(())
}

/// Checks a clause's topics: at most [`MAX_TOPICS`], each a slug, no repeats.
pub fn topics(field: &str, values: &[String]) -> Result<()> {
    if values.len() > MAX_TOPICS {
        return Err(Error::invalid(
            field,
            format!("has {} topics; the limit is {MAX_TOPICS}", values.len()),
        ));
    }
    for (i, topic) in values.iter().enumerate() {
        id(&format!("{field}[{i}]"), topic)?;
        if values[..i].contains(topic) {
            return Err(Error::invalid(
                format!("{field}[{i}]"),
                format!("topic {topic:?} is repeated"),
            ));
        }
    }
    Ok(())
}

/// Checks a request id (AIP-155): optional, printable, at most [`MAX_REQUEST_ID`] characters.
pub fn request_id(field: &str, value: &str) -> Result<()> {
    if value.chars().count() > MAX_REQUEST_ID {
        return Err(Error::invalid(
            field,
            format!("is longer than {MAX_REQUEST_ID} characters"),
        ));
    }
    if value.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return Err(Error::invalid(
            field,
            "must not contain spaces or control characters",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field_of(err: Error) -> String {
        match err {
            Error::InvalidInput { field, .. } => field,
            other => panic!("expected InvalidInput, got {other:?}"),
        }
    }

    #[test]
    fn slugs() {
        for ok in ["p1", "us-28-point", "0", &"a".repeat(63)] {
            assert!(id("plan_id", ok).is_ok(), "{ok}");
        }
        for bad in ["", "-a", "A", "a_b", "a b", "é", &"a".repeat(64), "p1\0"] {
            assert_eq!(
                field_of(id("plan_id", bad).unwrap_err()),
                "plan_id",
                "{bad}"
            );
        }
    }

    #[test]
    fn text_limits_count_characters_not_bytes() {
        assert!(text("title", &"é".repeat(MAX_TITLE), MAX_TITLE, true).is_ok());
        assert!(text("title", &"é".repeat(MAX_TITLE + 1), MAX_TITLE, true).is_err());
        assert!(text("title", "   ", MAX_TITLE, true).is_err());
        assert!(text("note", "", MAX_NOTE, false).is_ok());
        assert!(text("note", "a\u{7}b", MAX_NOTE, false).is_err());
        assert!(text("note", "line\nline", MAX_NOTE, false).is_ok());
    }

    #[test]
    fn urls_must_be_http_or_https() {
        for ok in [
            "",
            "https://example.org/a?b#c",
            "http://x.y",
            "HTTPS://EXAMPLE.ORG",
        ] {
            assert!(url("source_url", ok).is_ok(), "{ok}");
        }
        for bad in [
            "javascript:alert(1)",
            "ftp://x.y",
            "https://",
            "example.org",
            "https://a b",
            "data:text/html,x",
        ] {
            assert_eq!(
                field_of(url("source_url", bad).unwrap_err()),
                "source_url",
                "{bad}"
            );
        }
        let long = format!("https://example.org/{}", "a".repeat(MAX_URL));
        assert!(url("source_url", &long).is_err());
    }

    #[test]
    fn topics_are_slugs_without_repeats() {
        assert!(topics("topics", &["nato".into(), "security".into()]).is_ok());
        assert_eq!(
            field_of(topics("topics", &["nato".into(), "NATO".into()]).unwrap_err()),
            "topics[1]"
        );
        assert_eq!(
            field_of(topics("topics", &["nato".into(), "nato".into()]).unwrap_err()),
            "topics[1]"
        );
        let many: Vec<String> = (0..=MAX_TOPICS).map(|i| format!("t{i}")).collect();
        assert!(topics("topics", &many).is_err());
    }

    #[test]
    fn request_ids() {
        assert!(request_id("request_id", "").is_ok());
        assert!(request_id("request_id", "3f2a-uuid").is_ok());
        assert!(request_id("request_id", "a b").is_err());
        assert!(request_id("request_id", &"x".repeat(129)).is_err());
    }
}
