//! The complaint service's HTTP API (SPEC section 7, complaint part).

use std::sync::Arc;

use axum::extract::{Extension, RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, put};
use axum::{Json, Router};
use sagaflow_domain::complaint::Command;
use sagaflow_domain::values::{Category, Description, Reason, Resolution, Title, UserId};
use sagaflow_domain::{ComplaintView, DomainError, FieldError, Priority, Status};
use sagaflow_runtime::event_log::StoreError;
use sagaflow_runtime::http::{ApiError, JsonObject, PathId, RequestContext};

use crate::app::{AppError, Caller, ComplaintApp, NewComplaint};
use crate::read_model::{Cursor, ListFilter};

pub const DEFAULT_LIMIT: u32 = 50;
pub const MAX_LIMIT: u32 = 200;

pub fn routes(app: Arc<ComplaintApp>) -> Router {
    Router::new()
        .route("/api/complaints", get(list).post(create))
        .route("/api/complaints/{id}", get(get_one))
        .route("/api/complaints/{id}/assign", put(assign))
        .route("/api/complaints/{id}/process", put(process))
        .route("/api/complaints/{id}/close", put(close))
        .route("/api/complaints/{id}/compensate", put(compensate))
        .with_state(app)
}

impl From<AppError> for ApiError {
    fn from(e: AppError) -> Self {
        match e {
            AppError::Refused(DomainError::NotFound) => ApiError::not_found("complaint not found"),
            AppError::Refused(e @ DomainError::AlreadyExists) => {
                ApiError::invalid_transition(e.to_string())
            }
            AppError::Refused(e @ DomainError::InvalidTransition { .. }) => {
                ApiError::invalid_transition(e.to_string())
            }
            e @ AppError::VersionConflict { .. } => ApiError::version_conflict(e.to_string()),
            e @ AppError::IdempotencyKeyReused => ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "IDEMPOTENCY_KEY_REUSED",
                e.to_string(),
            ),
            AppError::Store(StoreError::Unavailable(e)) => {
                tracing::warn!(error = %e, "a backend is unavailable");
                ApiError::unavailable("the complaint store is unavailable; retry later")
            }
            AppError::Store(StoreError::Corrupt(e)) => ApiError::internal(e),
        }
    }
}

fn field(e: FieldError) -> ApiError {
    ApiError::invalid_field(&e.field, e.problem)
}

fn caller(ctx: &RequestContext) -> Caller {
    Caller {
        correlation_id: ctx.correlation_id.clone(),
        request_id: ctx.request_id.clone(),
        user_id: ctx.user_id.clone(),
        traceparent: ctx.traceparent.clone(),
    }
}

fn etag(version: u64) -> HeaderValue {
    HeaderValue::from_str(&format!("\"{version}\"")).unwrap_or(HeaderValue::from_static("\"0\""))
}

/// The view with its `ETag`.
fn answer(status: StatusCode, view: ComplaintView) -> Response {
    let tag = etag(view.version);
    let mut response = (status, Json(view)).into_response();
    response.headers_mut().insert(header::ETAG, tag);
    response
}

/// `If-Match`: `"3"`, `W/"3"`, `3` or `*` (any version).
fn if_match(headers: &HeaderMap) -> Result<Option<u64>, ApiError> {
    let Some(value) = headers.get(header::IF_MATCH) else {
        return Ok(None);
    };
    let bad = || {
        ApiError::invalid_field(
            "If-Match",
            "must be an ETag such as \"3\" (the complaint's version)",
        )
    };
    let text = value.to_str().map_err(|_| bad())?.trim();
    if text == "*" {
        return Ok(None);
    }
    let text = text.strip_prefix("W/").unwrap_or(text);
    let text = text
        .strip_prefix('"')
        .and_then(|t| t.strip_suffix('"'))
        .unwrap_or(text);
    text.parse::<u64>().map(Some).map_err(|_| bad())
}

fn idempotency_key(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    let Some(value) = headers.get("idempotency-key") else {
        return Ok(None);
    };
    let bad = || {
        ApiError::invalid_field(
            "Idempotency-Key",
            "must be 1 to 255 visible ASCII characters",
        )
    };
    let text = value.to_str().map_err(|_| bad())?.trim();
    if text.is_empty() || text.len() > 255 || !text.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(bad());
    }
    Ok(Some(text.to_owned()))
}

async fn create(
    State(app): State<Arc<ComplaintApp>>,
    Extension(ctx): Extension<RequestContext>,
    headers: HeaderMap,
    body: JsonObject,
) -> Result<Response, ApiError> {
    let key = idempotency_key(&headers)?;
    let new = NewComplaint {
        user_id: UserId::parse("userId", body.required_str("userId")?).map_err(field)?,
        title: Title::parse("title", body.required_str("title")?).map_err(field)?,
        description: Description::parse("description", body.required_str("description")?)
            .map_err(field)?,
        priority: Priority::parse("priority", &body.required_str("priority")?).map_err(field)?,
        category: Category::parse("category", body.required_str("category")?).map_err(field)?,
    };
    let created = app.create(new, key, &caller(&ctx)).await?;
    let location = HeaderValue::from_str(&format!("/api/complaints/{}", created.view.id))
        .map_err(|e| ApiError::internal(format!("a complaint id is not a header value: {e}")))?;
    let mut response = answer(StatusCode::CREATED, created.view);
    response.headers_mut().insert(header::LOCATION, location);
    if created.replayed {
        response
            .headers_mut()
            .insert("idempotent-replayed", HeaderValue::from_static("true"));
    }
    Ok(response)
}

async fn get_one(
    State(app): State<Arc<ComplaintApp>>,
    PathId(id): PathId,
) -> Result<Response, ApiError> {
    match app.get(&id).await? {
        Some(view) => Ok(answer(StatusCode::OK, view)),
        None => Err(ApiError::not_found("complaint not found")),
    }
}

async fn run(
    app: &ComplaintApp,
    id: &str,
    command: Command,
    headers: &HeaderMap,
    ctx: &RequestContext,
) -> Result<Response, ApiError> {
    let expected = if_match(headers)?;
    let view = app.execute(id, command, expected, &caller(ctx)).await?;
    Ok(answer(StatusCode::OK, view))
}

async fn assign(
    State(app): State<Arc<ComplaintApp>>,
    Extension(ctx): Extension<RequestContext>,
    PathId(id): PathId,
    headers: HeaderMap,
    body: JsonObject,
) -> Result<Response, ApiError> {
    let assigned_to =
        UserId::parse("assignedTo", body.required_str("assignedTo")?).map_err(field)?;
    run(&app, &id, Command::Assign { assigned_to }, &headers, &ctx).await
}

async fn process(
    State(app): State<Arc<ComplaintApp>>,
    Extension(ctx): Extension<RequestContext>,
    PathId(id): PathId,
    headers: HeaderMap,
    body: JsonObject,
) -> Result<Response, ApiError> {
    let resolution = body
        .optional_str("resolution")?
        .map(|r| Resolution::parse("resolution", r))
        .transpose()
        .map_err(field)?;
    run(&app, &id, Command::Process { resolution }, &headers, &ctx).await
}

async fn close(
    State(app): State<Arc<ComplaintApp>>,
    Extension(ctx): Extension<RequestContext>,
    PathId(id): PathId,
    headers: HeaderMap,
    body: JsonObject,
) -> Result<Response, ApiError> {
    let reason = body
        .optional_str("reason")?
        .map(|r| Reason::parse("reason", r))
        .transpose()
        .map_err(field)?;
    run(&app, &id, Command::Close { reason }, &headers, &ctx).await
}

async fn compensate(
    State(app): State<Arc<ComplaintApp>>,
    Extension(ctx): Extension<RequestContext>,
    PathId(id): PathId,
    headers: HeaderMap,
    body: JsonObject,
) -> Result<Response, ApiError> {
    let reason = Reason::parse("reason", body.required_str("reason")?).map_err(field)?;
    let failed_event_id = body.optional_str("failedEventId")?;
    run(
        &app,
        &id,
        Command::Compensate {
            reason,
            failed_event_id,
        },
        &headers,
        &ctx,
    )
    .await
}

/// Parses the list's query string; an unknown parameter is refused, so a typo never silently
/// lists everything.
fn list_query(raw: Option<&str>) -> Result<(ListFilter, u32, Option<Cursor>), ApiError> {
    let mut filter = ListFilter::default();
    let mut limit = DEFAULT_LIMIT;
    let mut cursor = None;
    let pairs = sagaflow_runtime::http::query::pairs(raw)?;
    for (name, value) in pairs {
        match name.as_str() {
            "status" => filter.status = Some(Status::parse("status", &value).map_err(field)?),
            "priority" => {
                filter.priority = Some(Priority::parse("priority", &value).map_err(field)?)
            }
            "category" => {
                filter.category = Some(
                    Category::parse("category", value)
                        .map_err(field)?
                        .into_inner(),
                )
            }
            "assignedTo" => {
                filter.assigned_to = Some(
                    UserId::parse("assignedTo", value)
                        .map_err(field)?
                        .into_inner(),
                )
            }
            "userId" => {
                filter.user_id = Some(UserId::parse("userId", value).map_err(field)?.into_inner())
            }
            "limit" => {
                limit = value
                    .parse::<u32>()
                    .ok()
                    .filter(|l| (1..=MAX_LIMIT).contains(l))
                    .ok_or_else(|| {
                        ApiError::invalid_field(
                            "limit",
                            format!("must be an integer from 1 to {MAX_LIMIT}, got {value:?}"),
                        )
                    })?;
            }
            "cursor" => {
                cursor = Some(Cursor::decode(&value).ok_or_else(|| {
                    ApiError::invalid_field(
                        "cursor",
                        "is not a cursor this API gave (use nextCursor as it is)",
                    )
                })?);
            }
            other => {
                return Err(ApiError::invalid_field(
                    other,
                    "is not a filter; use status, priority, category, assignedTo, userId, limit or cursor",
                ));
            }
        }
    }
    Ok((filter, limit, cursor))
}

async fn list(
    State(app): State<Arc<ComplaintApp>>,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    let (filter, limit, cursor) = list_query(raw.as_deref())?;
    let page = app.list(&filter, limit, cursor).await?;
    Ok(Json(serde_json::json!({
        "items": page.items,
        "nextCursor": page.next.map(Cursor::encode),
    }))
    .into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn if_match_forms() {
        let mut h = HeaderMap::new();
        assert_eq!(if_match(&h).ok(), Some(None));
        for (text, want) in [
            ("\"3\"", Some(3)),
            ("W/\"4\"", Some(4)),
            ("5", Some(5)),
            ("*", None),
        ] {
            h.insert(header::IF_MATCH, HeaderValue::from_static(text));
            assert_eq!(if_match(&h).ok(), Some(want), "{text}");
        }
        h.insert(header::IF_MATCH, HeaderValue::from_static("\"abc\""));
        assert_eq!(if_match(&h).unwrap_err().field.as_deref(), Some("If-Match"));
    }

    #[test]
    fn list_query_parses_and_names_bad_parameters() {
        let (f, limit, cursor) =
            list_query(Some("status=OPEN&category=home%20%26%20garden&limit=10")).unwrap();
        assert_eq!(
            (f.status, f.category.as_deref(), limit, cursor),
            (Some(Status::Open), Some("home & garden"), 10, None)
        );
        for (q, name) in [
            ("limit=0", "limit"),
            ("limit=201", "limit"),
            ("limit=x", "limit"),
            ("status=open", "status"),
            ("cursor=zz", "cursor"),
            ("staus=OPEN", "staus"),
            ("category=%zz", "query"),
        ] {
            assert_eq!(
                list_query(Some(q)).unwrap_err().field.as_deref(),
                Some(name),
                "{q}"
            );
        }
    }
}
