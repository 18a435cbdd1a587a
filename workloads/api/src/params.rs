//! Parsing of everything a client puts in a URL or a header: ids, page size,
//! cursors, the read-your-writes minimum version, `If-Match` and the
//! `Idempotency-Key`. Pure: each parser returns the value or a [`Problem`]
//! that says which input was wrong and why.

use paystream_core::readmodel::Cursor;

use crate::problem::Problem;

/// Longest `Idempotency-Key` a client may send.
pub const MAX_IDEMPOTENCY_KEY: usize = 100;

/// Parses a path id: decimal digits only, no sign, not zero, fits in 64 bits.
pub fn id(what: &str, raw: &str) -> Result<u64, Problem> {
    if raw.is_empty() || !raw.bytes().all(|b| b.is_ascii_digit()) {
        return Err(Problem::bad_request(
            "invalid-id",
            format!("{what} {:?} must be a positive decimal integer", clip(raw)),
        ));
    }
    match raw.parse::<u64>() {
        Ok(0) => Err(Problem::bad_request(
            "invalid-id",
            format!("{what} must not be zero"),
        )),
        Ok(n) => Ok(n),
        Err(_) => Err(Problem::bad_request(
            "invalid-id",
            format!("{what} {:?} is larger than 18446744073709551615", clip(raw)),
        )),
    }
}

/// What a reader asks to see at least: the version of one purchase.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MinVersion {
    /// The purchase the version is about; `None` when the form was a bare
    /// version on a single-purchase read.
    pub purchase_id: Option<u64>,
    /// The smallest acceptable version.
    pub version: u64,
}

/// Parses `min_version` / `X-Min-Version`: `<version>` or the consistency
/// token `<purchase_id>:<version>` that writes return.
pub fn min_version(raw: &str) -> Result<MinVersion, Problem> {
    let bad = || {
        Problem::bad_request(
            "invalid-min-version",
            format!(
                "min_version {:?} must be <version> or <purchase_id>:<version>, positive integers",
                clip(raw)
            ),
        )
    };
    let number = |s: &str| -> Result<u64, Problem> {
        if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad());
        }
        match s.parse::<u64>() {
            Ok(n) if n > 0 => Ok(n),
            _ => Err(bad()),
        }
    };
    match raw.split_once(':') {
        None => Ok(MinVersion {
            purchase_id: None,
            version: number(raw)?,
        }),
        Some((id, v)) => Ok(MinVersion {
            purchase_id: Some(number(id)?),
            version: number(v)?,
        }),
    }
}

/// The consistency token a write returns: `<purchase_id>:<version>`.
pub fn consistency_token(purchase_id: u64, version: u64) -> String {
    format!("{purchase_id}:{version}")
}

/// Parses the page size: 1 to `max`, `default` when absent.
pub fn limit(raw: Option<&str>, default: u32, max: u32) -> Result<u32, Problem> {
    let Some(raw) = raw else {
        return Ok(default.clamp(1, max.max(1)));
    };
    match raw.parse::<u32>() {
        Ok(n) if (1..=max).contains(&n) && raw.bytes().all(|b| b.is_ascii_digit()) => Ok(n),
        _ => Err(Problem::bad_request(
            "invalid-limit",
            format!("limit {:?} must be an integer from 1 to {max}", clip(raw)),
        )),
    }
}

/// Parses an opaque page cursor.
pub fn cursor(raw: Option<&str>) -> Result<Option<Cursor>, Problem> {
    match raw {
        None => Ok(None),
        Some(raw) => Cursor::decode(raw)
            .filter(|c| c.id > 0)
            .map(Some)
            .ok_or_else(|| {
                Problem::bad_request(
                    "invalid-cursor",
                    format!("cursor {:?} is not a cursor this API returned", clip(raw)),
                )
            }),
    }
}

/// Checks an `Idempotency-Key`: 1 to [`MAX_IDEMPOTENCY_KEY`] visible ASCII
/// characters.
pub fn idempotency_key(raw: Option<&[u8]>) -> Result<&str, Problem> {
    let Some(raw) = raw else {
        return Err(Problem::bad_request(
            "missing-idempotency-key",
            "this request needs an Idempotency-Key header (1 to 100 visible ASCII characters); \
             a retry with the same key returns the first result",
        ));
    };
    let ok = !raw.is_empty()
        && raw.len() <= MAX_IDEMPOTENCY_KEY
        && raw.iter().all(|b| b.is_ascii_graphic());
    match std::str::from_utf8(raw) {
        Ok(s) if ok => Ok(s),
        _ => Err(Problem::bad_request(
            "invalid-idempotency-key",
            format!("Idempotency-Key must be 1 to {MAX_IDEMPOTENCY_KEY} visible ASCII characters"),
        )),
    }
}

/// Parses `If-Match`: one entity tag, `"<version>"` (or `W/"<version>"`, or
/// a bare number). `*` matches any version and is returned as `None`.
pub fn if_match(raw: Option<&[u8]>) -> Result<Option<u64>, Problem> {
    let Some(raw) = raw else { return Ok(None) };
    let s = std::str::from_utf8(raw).unwrap_or("").trim();
    if s == "*" {
        return Ok(None);
    }
    let tag = s.strip_prefix("W/").unwrap_or(s);
    let inner = tag
        .strip_prefix('"')
        .and_then(|t| t.strip_suffix('"'))
        .unwrap_or(tag);
    match inner.parse::<u64>() {
        Ok(v) if v > 0 && inner.bytes().all(|b| b.is_ascii_digit()) => Ok(Some(v)),
        _ => Err(Problem::bad_request(
            "invalid-if-match",
            "If-Match must be the purchase's ETag, a quoted version such as \"3\"",
        )),
    }
}

/// The strong entity tag of a purchase version.
pub fn etag(version: u64) -> String {
    format!("\"{version}\"")
}

/// Keeps echoed input short.
fn clip(s: &str) -> &str {
    match s.char_indices().nth(40) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_positive_decimal_u64() {
        assert_eq!(id("id", "42").ok(), Some(42));
        assert_eq!(id("id", "18446744073709551615").ok(), Some(u64::MAX));
        for bad in [
            "",
            "0",
            "-1",
            "+1",
            "1.5",
            "abc",
            "18446744073709551616",
            " 1",
            "1e3",
        ] {
            let p = id("purchase id", bad).err();
            assert_eq!(p.map(|p| p.status), Some(400), "{bad}");
        }
        let p = id("purchase id", "99999999999999999999999").err();
        assert!(p.is_some_and(|p| p.detail.contains("larger")));
    }

    #[test]
    fn min_version_forms() {
        assert_eq!(
            min_version("3").ok(),
            Some(MinVersion {
                purchase_id: None,
                version: 3
            })
        );
        assert_eq!(
            min_version("7:2").ok(),
            Some(MinVersion {
                purchase_id: Some(7),
                version: 2
            })
        );
        for bad in ["", "0", "x", "1:", ":1", "1:2:3", "-1"] {
            assert!(min_version(bad).is_err(), "{bad}");
        }
        assert_eq!(consistency_token(7, 2), "7:2");
    }

    #[test]
    fn limits_and_cursors() {
        assert_eq!(limit(None, 20, 100).ok(), Some(20));
        assert_eq!(limit(Some("100"), 20, 100).ok(), Some(100));
        for bad in ["0", "101", "-1", "x", "+5"] {
            assert!(limit(Some(bad), 20, 100).is_err(), "{bad}");
        }
        let c = Cursor { score: 5, id: 9 };
        assert_eq!(cursor(Some(&c.encode())).ok(), Some(Some(c)));
        assert_eq!(cursor(None).ok(), Some(None));
        assert!(cursor(Some("!!")).is_err());
        assert!(cursor(Some("bm90LWEtY3Vyc29y")).is_err());
    }

    #[test]
    fn idempotency_keys_and_if_match() {
        assert_eq!(idempotency_key(Some(b"abc-1")).ok(), Some("abc-1"));
        assert!(idempotency_key(None).is_err());
        assert!(idempotency_key(Some(b"")).is_err());
        assert!(idempotency_key(Some(b"has space")).is_err());
        assert!(idempotency_key(Some(&[b'a'; 101])).is_err());
        assert_eq!(if_match(Some(b"\"3\"")).ok(), Some(Some(3)));
        assert_eq!(if_match(Some(b"W/\"3\"")).ok(), Some(Some(3)));
        assert_eq!(if_match(Some(b"*")).ok(), Some(None));
        assert_eq!(if_match(None).ok(), Some(None));
        assert!(if_match(Some(b"\"x\"")).is_err());
        assert_eq!(etag(4), "\"4\"");
    }
}
