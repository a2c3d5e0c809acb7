//! Paged listings (SPEC section 6): `?limit=N&cursor=C` on lists that grow
//! without bound (queue, trace, quarantine).
//!
//! The body stays the JSON array it always was, so clients that read one
//! page keep working; the cursor of the next page travels in the
//! `X-Next-Cursor` header, and in `Link: <...>; rel="next"` (RFC 8288) for
//! generic HTTP tools. No header means the listing is complete. The cursor
//! is opaque: base64url of the store key of the last item sent, so the
//! next page starts strictly after it whatever was added or removed since.

use super::AdminError;
use axum::http::header::{HeaderMap, HeaderName, HeaderValue, LINK};
use base64::Engine;

/// Page size when the request gives none: bounds every answer.
pub const DEFAULT_LIMIT: usize = 1000;
/// The largest page a client may ask for.
pub const MAX_LIMIT: usize = 1000;
/// The header that carries the next page's cursor.
pub const NEXT_CURSOR: &str = "x-next-cursor";

/// One page of a listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listing<T> {
    /// The items, in listing order.
    pub items: Vec<T>,
    /// The store key the next page starts after, if more may follow.
    pub next: Option<String>,
}

/// The page size asked for, checked.
pub fn limit(asked: Option<usize>) -> Result<usize, AdminError> {
    match asked {
        None => Ok(DEFAULT_LIMIT),
        Some(0) => Err(AdminError::Invalid("limit: must be at least 1".into())),
        Some(n) if n > MAX_LIMIT => Err(AdminError::Invalid(format!("limit: at most {MAX_LIMIT}"))),
        Some(n) => Ok(n),
    }
}

/// The store key a client's cursor names.
pub fn decode_cursor(cursor: Option<&str>) -> Result<Option<String>, AdminError> {
    let Some(cursor) = cursor else { return Ok(None) };
    let invalid = || AdminError::Invalid("cursor: not a cursor this node gave out".into());
    if cursor.len() > 256 {
        return Err(invalid());
    }
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(cursor)
        .map_err(|_| invalid())?;
    String::from_utf8(bytes).map(Some).map_err(|_| invalid())
}

/// The cursor a client gets for a store key.
pub fn encode_cursor(key: &str) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(key)
}

/// `X-Next-Cursor` and `Link` for the page after `next`; `query` is the
/// request's other parameters, already encoded, for the link.
pub fn headers(path: &str, query: &str, limit: usize, next: Option<&str>) -> HeaderMap {
    let mut headers = HeaderMap::new();
    if let Some(key) = next {
        let cursor = encode_cursor(key);
        let separator = if query.is_empty() { "" } else { "&" };
        let link = format!("</api/v1/{path}?{query}{separator}limit={limit}&cursor={cursor}>; rel=\"next\"");
        if let (Ok(cursor), Ok(link)) = (HeaderValue::from_str(&cursor), HeaderValue::from_str(&link)) {
            headers.insert(HeaderName::from_static(NEXT_CURSOR), cursor);
            headers.insert(LINK, link);
        }
    }
    headers
}

/// Pages an in-memory list already in key order (backends without a paged
/// store: the tests').
pub fn slice<T>(items: Vec<T>, key: impl Fn(&T) -> String, after: Option<&str>, limit: usize) -> Listing<T> {
    let mut rest: Vec<T> = items
        .into_iter()
        .filter(|item| after.is_none_or(|after| key(item).as_str() > after))
        .collect();
    let more = rest.len() > limit;
    rest.truncate(limit);
    let next = if more { rest.last().map(&key) } else { None };
    Listing { items: rest, next }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_foreign_ones_are_refused() {
        let cursor = encode_cursor("01J0ABC");
        assert_eq!(decode_cursor(Some(&cursor)).unwrap().as_deref(), Some("01J0ABC"));
        assert!(decode_cursor(Some("!!")).is_err());
        assert!(decode_cursor(Some(&"A".repeat(300))).is_err());
        assert!(limit(Some(0)).is_err());
        assert!(limit(Some(MAX_LIMIT + 1)).is_err());
        assert_eq!(limit(None).unwrap(), DEFAULT_LIMIT);
    }
}
