//! Opaque page tokens (AIP-158): base64url of a small record holding where the
//! next page starts and a hash of the request's filters, so a token used with
//! different filters is rejected instead of silently paging something else.

use std::hash::{DefaultHasher, Hash, Hasher};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde::{de::DeserializeOwned, Deserialize, Serialize};

use crate::error::{Error, Result};

/// `page_size` 0 means this many.
pub const DEFAULT_PAGE_SIZE: usize = 100;
/// Larger page sizes are treated as this.
pub const MAX_PAGE_SIZE: usize = 1000;

/// The effective page size for a request's `page_size`.
pub fn page_size(requested: i32) -> Result<usize> {
    match requested {
        n if n < 0 => Err(Error::invalid("page_size", "must not be negative")),
        0 => Ok(DEFAULT_PAGE_SIZE),
        n => Ok((n as usize).min(MAX_PAGE_SIZE)),
    }
}

#[derive(Serialize, Deserialize)]
struct Envelope<C> {
    filters: u64,
    cursor: C,
}

/// A stable hash of the filters a listing was asked with.
pub fn filters_hash(filters: &impl Hash) -> u64 {
    let mut h = DefaultHasher::new();
    filters.hash(&mut h);
    h.finish()
}

/// Encodes a cursor for the next page.
pub fn encode<C: Serialize>(filters: u64, cursor: &C) -> String {
    let bytes = postcard::to_stdvec(&Envelope { filters, cursor }).unwrap_or_default();
    URL_SAFE_NO_PAD.encode(bytes)
}

/// Decodes a page token; `None` for the first page.
pub fn decode<C: DeserializeOwned>(token: &str, filters: u64) -> Result<Option<C>> {
    if token.is_empty() {
        return Ok(None);
    }
    let invalid = || Error::invalid("page_token", "is not a token this listing returned");
    let bytes = URL_SAFE_NO_PAD.decode(token).map_err(|_| invalid())?;
    let env: Envelope<C> = postcard::from_bytes(&bytes).map_err(|_| invalid())?;
    if env.filters != filters {
        return Err(Error::invalid(
            "page_token",
            "was issued for different filters; repeat the request with the same filters or start over",
        ));
    }
    Ok(Some(env.cursor))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_filter_binding() {
        let token = encode(7, &(3u64, "p4".to_string()));
        assert_eq!(
            decode::<(u64, String)>(&token, 7).unwrap(),
            Some((3, "p4".into()))
        );
        assert!(decode::<(u64, String)>(&token, 8).is_err());
        assert!(decode::<(u64, String)>("!!!", 7).is_err());
        assert!(decode::<(u64, String)>("", 7).unwrap().is_none());
    }

    #[test]
    fn page_sizes() {
        assert_eq!(page_size(0).unwrap(), DEFAULT_PAGE_SIZE);
        assert_eq!(page_size(5000).unwrap(), MAX_PAGE_SIZE);
        assert_eq!(page_size(7).unwrap(), 7);
        assert!(page_size(-1).is_err());
    }
}
