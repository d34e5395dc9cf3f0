//! Query strings read strictly: percent-decoded pairs, numbers in range, errors naming the
//! parameter.

use super::error::ApiError;

/// Splits `a=1&b=2`, percent-decoding names and values.
pub fn pairs(raw: Option<&str>) -> Result<Vec<(String, String)>, ApiError> {
    raw.unwrap_or("")
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            Ok((decode(name)?, decode(value)?))
        })
        .collect()
}

/// An integer parameter within `min..=max`.
pub fn number(name: &str, value: &str, min: u64, max: u64) -> Result<u64, ApiError> {
    value
        .parse::<u64>()
        .ok()
        .filter(|n| (min..=max).contains(n))
        .ok_or_else(|| {
            ApiError::invalid_field(
                name,
                format!("must be an integer from {min} to {max}, got {value:?}"),
            )
        })
}

/// The error for a parameter a route does not take.
pub fn unknown(name: &str, allowed: &str) -> ApiError {
    ApiError::invalid_field(
        name,
        format!("is not a parameter of this route; use {allowed}"),
    )
}

fn decode(text: &str) -> Result<String, ApiError> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = bytes
                    .get(i + 1..i + 3)
                    .and_then(|h| std::str::from_utf8(h).ok())
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
                    .ok_or_else(|| {
                        ApiError::invalid_field("query", "has a malformed percent-escape")
                    })?;
                out.push(hex);
                i += 2;
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8(out)
        .map_err(|_| ApiError::invalid_field("query", "is not UTF-8 once decoded"))
}
