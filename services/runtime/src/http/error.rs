//! The one error type every HTTP handler returns, rendered as SPEC section 7's JSON:
//! `{"error": {"code", "message", "correlationId", "field"?}}`.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::context;

/// An error answered to a client. Rejected input (4xx) and a failing backend (503) are kept
/// apart: only `unavailable` and `internal` are the server's fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{status} {code}: {message}")]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    /// The request field at fault, for a 400.
    pub field: Option<String>,
    /// Seconds, for a 503.
    pub retry_after: Option<u32>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            field: None,
            retry_after: None,
        }
    }

    /// 400 VALIDATION_ERROR naming `field`.
    pub fn invalid_field(field: &str, problem: impl std::fmt::Display) -> Self {
        Self {
            field: Some(field.to_owned()),
            ..Self::new(
                StatusCode::BAD_REQUEST,
                "VALIDATION_ERROR",
                format!("{field}: {problem}"),
            )
        }
    }

    /// 400 MALFORMED_JSON.
    pub fn malformed_json(problem: impl std::fmt::Display) -> Self {
        Self {
            field: Some("body".into()),
            ..Self::new(
                StatusCode::BAD_REQUEST,
                "MALFORMED_JSON",
                format!("the body is not valid JSON: {problem}"),
            )
        }
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "NOT_FOUND", message)
    }

    pub fn invalid_transition(message: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, "INVALID_TRANSITION", message)
    }

    pub fn version_conflict(message: impl Into<String>) -> Self {
        Self::new(StatusCode::PRECONDITION_FAILED, "VERSION_CONFLICT", message)
    }

    pub fn payload_too_large(limit: usize) -> Self {
        Self::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "PAYLOAD_TOO_LARGE",
            format!("the body is larger than {} KiB", limit / 1024),
        )
    }

    pub fn unsupported_media_type(got: Option<&str>) -> Self {
        Self::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "UNSUPPORTED_MEDIA_TYPE",
            match got {
                Some(t) => format!("the body must be application/json, not {t}"),
                None => "the body must be application/json (Content-Type is missing)".into(),
            },
        )
    }

    /// 503 with `Retry-After`: a backend the request needs does not answer.
    pub fn unavailable(message: impl Into<String>) -> Self {
        Self {
            retry_after: Some(1),
            ..Self::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "SERVICE_UNAVAILABLE",
                message,
            )
        }
    }

    /// 500: a bug or corrupt data. The details go to the log, not to the client.
    pub fn internal(message: impl Into<String>) -> Self {
        let message = message.into();
        tracing::error!(error = %message, "internal error");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "INTERNAL_ERROR",
            "internal error; see the service's log",
        )
    }

    pub fn method_not_allowed() -> Self {
        Self::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "METHOD_NOT_ALLOWED",
            "this route does not take that method",
        )
    }

    pub fn body(&self) -> serde_json::Value {
        let mut error = serde_json::json!({
            "code": self.code,
            "message": self.message,
            "correlationId": context::current_correlation_id(),
        });
        if let Some(field) = &self.field {
            error["field"] = serde_json::Value::String(field.clone());
        }
        serde_json::json!({ "error": error })
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (self.status, axum::Json(self.body())).into_response();
        if let Some(secs) = self.retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        response
    }
}
