//! Reading a JSON body the strict way: `application/json`, at most 64 KiB, an object, and every
//! field checked by name, so that each 400 says which field is wrong.

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use axum::http::header;
use serde_json::{Map, Value};

use super::error::ApiError;

/// The largest body a service reads (SPEC section 7).
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// A request body that is a JSON object. An empty body counts as `{}`.
#[derive(Debug, Clone, Default)]
pub struct JsonObject(pub Map<String, Value>);

fn is_json(content_type: &str) -> bool {
    let essence = content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    essence == "application/json"
        || (essence.starts_with("application/") && essence.ends_with("+json"))
}

impl<S: Send + Sync> FromRequest<S> for JsonObject {
    type Rejection = ApiError;

    async fn from_request(req: Request, _state: &S) -> Result<Self, ApiError> {
        let declared_len = req
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<usize>().ok());
        if declared_len.is_some_and(|n| n > MAX_BODY_BYTES) {
            return Err(ApiError::payload_too_large(MAX_BODY_BYTES));
        }
        let content_type = req
            .headers()
            .get(header::CONTENT_TYPE)
            .map(|v| v.to_str().unwrap_or("(not text)").to_owned());
        let bytes: Bytes = axum::body::to_bytes(req.into_body(), MAX_BODY_BYTES)
            .await
            .map_err(|_| ApiError::payload_too_large(MAX_BODY_BYTES))?;
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(Self::default());
        }
        match content_type.as_deref() {
            Some(t) if is_json(t) => {}
            other => return Err(ApiError::unsupported_media_type(other)),
        }
        match serde_json::from_slice::<Value>(&bytes) {
            Ok(Value::Object(map)) => Ok(Self(map)),
            Ok(other) => Err(ApiError::invalid_field(
                "body",
                format!("must be a JSON object, got {}", kind(&other)),
            )),
            Err(e) => Err(ApiError::malformed_json(e)),
        }
    }
}

/// The JSON kind of a value, for messages.
pub fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

impl JsonObject {
    /// A string field that must be there.
    pub fn required_str(&self, field: &str) -> Result<String, ApiError> {
        self.optional_str(field)?
            .ok_or_else(|| ApiError::invalid_field(field, "is required"))
    }

    /// A string field that may be absent or null.
    pub fn optional_str(&self, field: &str) -> Result<Option<String>, ApiError> {
        match self.0.get(field) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(other) => Err(ApiError::invalid_field(
                field,
                format!("must be a string, got {}", kind(other)),
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_content_types() {
        assert!(is_json("application/json"));
        assert!(is_json("Application/JSON; charset=utf-8"));
        assert!(is_json("application/merge-patch+json"));
        assert!(!is_json("text/plain"));
        assert!(!is_json("application/x-www-form-urlencoded"));
    }

    #[test]
    fn fields_name_themselves_in_errors() {
        let body = JsonObject(
            serde_json::json!({"a": "x", "b": 3, "c": null})
                .as_object()
                .cloned()
                .unwrap_or_default(),
        );
        assert_eq!(body.required_str("a").ok(), Some("x".to_owned()));
        let err = body.required_str("b").unwrap_err();
        assert_eq!(
            (err.field.as_deref(), err.code),
            (Some("b"), "VALIDATION_ERROR")
        );
        assert!(err.message.contains("must be a string, got a number"));
        assert_eq!(body.optional_str("c").ok(), Some(None));
        assert!(
            body.required_str("missing")
                .unwrap_err()
                .message
                .contains("is required")
        );
    }
}
