//! The web console (`GET /` and its assets under `/console/`), and the routes only it needs:
//! the saga figures, and the four services' readiness and dead letters, which the complaint
//! service fetches from its peers so that a browser needs to reach one address (an Ingress or a
//! port-forward) and nothing else.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{RawQuery, State};
use axum::http::{HeaderName, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use sagaflow_runtime::http::{ApiError, PathId, RequestContext};
use serde_json::{Value, json};

use crate::app::ComplaintApp;

/// The newest complaints the saga figures cover by default, and at most.
pub const DEFAULT_WINDOW: u32 = 500;
pub const MAX_WINDOW: u32 = 5000;

/// How long a peer may take to answer before the console reports it unreachable.
const PEER_TIMEOUT: Duration = Duration::from_secs(3);

/// Where each service answers, as seen from this one (`None`: not configured).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Peers {
    pub complaint: Option<String>,
    pub notification: Option<String>,
    pub audit: Option<String>,
    pub event_store: Option<String>,
}

/// The exchanges whose dead letters the console shows, with the service that owns each.
const OWNERS: [(&str, &str); 3] = [
    (crate::EXCHANGE, crate::SERVICE),
    ("notifications.events", "notification-service"),
    ("audit.events", "audit-service"),
];

impl Peers {
    fn all(&self) -> [(&'static str, Option<&str>); 4] {
        [
            (crate::SERVICE, self.complaint.as_deref()),
            ("notification-service", self.notification.as_deref()),
            ("audit-service", self.audit.as_deref()),
            ("event-store", self.event_store.as_deref()),
        ]
    }

    fn url_of(&self, service: &str) -> Option<&str> {
        self.all()
            .into_iter()
            .find(|(name, _)| *name == service)
            .and_then(|(_, url)| url)
    }
}

#[derive(Clone)]
struct Console {
    app: Arc<ComplaintApp>,
    peers: Arc<Peers>,
    client: reqwest::Client,
    correlation_header: HeaderName,
}

/// The console's files, built into the binary: it works offline and needs no CDN.
const ASSETS: [(&str, &str, &str); 3] = [
    (
        "app.js",
        "text/javascript; charset=utf-8",
        include_str!("../console/app.js"),
    ),
    (
        "app.css",
        "text/css; charset=utf-8",
        include_str!("../console/app.css"),
    ),
    (
        "icon.svg",
        "image/svg+xml",
        include_str!("../console/icon.svg"),
    ),
];
const INDEX: &str = include_str!("../console/index.html");

pub fn routes(app: Arc<ComplaintApp>, peers: Peers, correlation_header: HeaderName) -> Router {
    let client = reqwest::Client::builder()
        .timeout(PEER_TIMEOUT)
        .connect_timeout(PEER_TIMEOUT)
        .build()
        .unwrap_or_default();
    let state = Console {
        app,
        peers: Arc::new(peers),
        client,
        correlation_header,
    };
    Router::new()
        .route("/", get(index))
        .route("/console/{asset}", get(asset))
        .route("/api/sagas/summary", get(summary))
        .route("/api/console/services", get(services))
        .route("/api/console/audit/{aggregateId}", get(audit_trail))
        .route("/api/console/dlq/{exchange}", get(dead_letters))
        .route("/api/console/dlq/{exchange}/redrive", post(redrive))
        .with_state(state)
}

/// Headers of every console page and asset: nothing but this origin runs or loads.
fn page(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "no-cache"),
            (
                header::CONTENT_SECURITY_POLICY,
                "default-src 'self'; img-src 'self' data:; object-src 'none'; base-uri 'none'; frame-ancestors 'none'; form-action 'self'",
            ),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (header::REFERRER_POLICY, "no-referrer"),
        ],
        body,
    )
        .into_response()
}

async fn index() -> Response {
    page("text/html; charset=utf-8", INDEX)
}

async fn asset(PathId(name): PathId) -> Result<Response, ApiError> {
    ASSETS
        .iter()
        .find(|(n, _, _)| *n == name)
        .map(|(_, content_type, body)| page(content_type, body))
        .ok_or_else(|| ApiError::not_found(format!("the console has no file {name:?}")))
}

async fn summary(State(c): State<Console>, RawQuery(raw): RawQuery) -> Result<Response, ApiError> {
    use sagaflow_runtime::http::query;
    let mut window = DEFAULT_WINDOW;
    for (name, value) in query::pairs(raw.as_deref())? {
        match name.as_str() {
            "window" => {
                window = query::number("window", &value, 1, u64::from(MAX_WINDOW))? as u32;
            }
            other => return Err(query::unknown(other, "window")),
        }
    }
    let summary = c.app.summary(window).await?;
    Ok(Json(json!({ "window": window, "summary": summary })).into_response())
}

/// What a peer answered: its status and JSON body, or why it did not.
enum Answer {
    Json(StatusCode, Value),
    Unreachable(String),
}

impl Console {
    /// `method` on `segments` under the peer at `base` (each segment percent-encoded).
    async fn call(
        &self,
        method: Method,
        base: &str,
        segments: &[&str],
        ctx: &RequestContext,
    ) -> Answer {
        let Some(url) = peer_url(base, segments) else {
            return Answer::Unreachable(format!(
                "{} is not an http(s) URL",
                sagaflow_runtime::config::redact(base)
            ));
        };
        let mut request = self.client.request(method, url);
        if let Ok(value) = HeaderValue::from_str(&ctx.correlation_id) {
            request = request.header(self.correlation_header.clone(), value);
        }
        match request.send().await {
            Err(e) => Answer::Unreachable(if e.is_timeout() {
                format!("no answer within {} s", PEER_TIMEOUT.as_secs())
            } else {
                // reqwest's error names the URL; the peers' URLs carry no secrets.
                format!("{}", e.without_url())
            }),
            Ok(r) => {
                let status = r.status();
                match r.json::<Value>().await {
                    Ok(body) => Answer::Json(status, body),
                    Err(e) => Answer::Unreachable(format!(
                        "answered {status} with a body that is not JSON: {}",
                        e.without_url()
                    )),
                }
            }
        }
    }
}

async fn services(
    State(c): State<Console>,
    Extension(ctx): Extension<RequestContext>,
) -> Json<Value> {
    let checks = c.peers.all().map(|(service, url)| {
        let c = c.clone();
        let ctx = ctx.clone();
        async move {
            let owned = OWNERS.iter().find(|(_, owner)| *owner == service);
            let Some(url) = url else {
                return json!({
                    "service": service,
                    "url": null,
                    "state": "not configured",
                    "detail": "this complaint service was not told where it runs",
                    "exchange": owned.map(|(e, _)| e),
                    "deadLetters": null,
                });
            };
            let ready = c.call(Method::GET, url, &["health", "ready"], &ctx).await;
            let (state, detail) = match ready {
                Answer::Json(s, _) if s.is_success() => ("ready", Value::Null),
                Answer::Json(s, body) if s == StatusCode::SERVICE_UNAVAILABLE => {
                    ("not ready", body["failing"].clone())
                }
                Answer::Json(s, body) => ("not ready", json!(format!("answered {s}: {body}"))),
                Answer::Unreachable(why) => ("unreachable", json!(why)),
            };
            let dead_letters = match owned {
                Some((exchange, _)) if state != "unreachable" => {
                    match c
                        .call(Method::GET, url, &["api", "dlq", exchange], &ctx)
                        .await
                    {
                        Answer::Json(s, body) if s.is_success() => {
                            json!(body["items"].as_array().map_or(0, Vec::len))
                        }
                        _ => Value::Null,
                    }
                }
                _ => Value::Null,
            };
            json!({
                "service": service,
                "url": sagaflow_runtime::config::redact(url),
                "state": state,
                "detail": detail,
                "exchange": owned.map(|(e, _)| e),
                "deadLetters": dead_letters,
            })
        }
    });
    let services = futures::future::join_all(checks).await;
    Json(json!({ "services": services }))
}

/// The service that owns `exchange`'s dead letters.
fn owner_of(exchange: &str) -> Result<&'static str, ApiError> {
    OWNERS
        .iter()
        .find(|(e, _)| *e == exchange)
        .map(|(_, owner)| *owner)
        .ok_or_else(|| {
            ApiError::not_found(format!(
                "no exchange {exchange:?}; the console shows complaints.events, notifications.events and audit.events"
            ))
        })
}

impl Console {
    /// Sends `method path` to `owner` and passes its answer on as it came (status and JSON),
    /// or answers 503 naming it when it is not configured or does not answer.
    async fn forward(
        &self,
        owner: &'static str,
        method: Method,
        segments: &[&str],
        ctx: &RequestContext,
    ) -> Result<Response, ApiError> {
        let url = self.peers.url_of(owner).ok_or_else(|| {
            ApiError::unavailable(format!(
                "{owner} is not configured here (see NOTIFICATION_SERVICE_URL, AUDIT_SERVICE_URL and EVENT_STORE_SERVICE_URL)"
            ))
        })?;
        match self.call(method, url, segments, ctx).await {
            Answer::Json(status, body) => Ok((status, Json(body)).into_response()),
            Answer::Unreachable(why) => {
                tracing::warn!(service = owner, error = %why, "a peer did not answer the console");
                Err(ApiError::unavailable(format!(
                    "{owner} did not answer: {why}"
                )))
            }
        }
    }
}

/// The audit service's whole trail of an aggregate (the complaint's view holds only the
/// compensation marks).
async fn audit_trail(
    State(c): State<Console>,
    Extension(ctx): Extension<RequestContext>,
    PathId(id): PathId,
) -> Result<Response, ApiError> {
    let segments = ["api", "audit", "trail", id.as_str()];
    c.forward("audit-service", Method::GET, &segments, &ctx)
        .await
}

/// `segments` appended to the peer's base URL, each percent-encoded as one path segment.
fn peer_url(base: &str, segments: &[&str]) -> Option<reqwest::Url> {
    let mut url = reqwest::Url::parse(base).ok()?;
    url.path_segments_mut()
        .ok()?
        .pop_if_empty()
        .extend(segments);
    Some(url)
}

async fn dead_letters(
    State(c): State<Console>,
    Extension(ctx): Extension<RequestContext>,
    PathId(exchange): PathId,
) -> Result<Response, ApiError> {
    let owner = owner_of(&exchange)?;
    c.forward(owner, Method::GET, &["api", "dlq", &exchange], &ctx)
        .await
}

async fn redrive(
    State(c): State<Console>,
    Extension(ctx): Extension<RequestContext>,
    PathId(exchange): PathId,
) -> Result<Response, ApiError> {
    let owner = owner_of(&exchange)?;
    c.forward(
        owner,
        Method::POST,
        &["api", "dlq", &exchange, "redrive"],
        &ctx,
    )
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_owner_is_a_peer_and_unknown_services_have_no_url() {
        let peers = Peers {
            complaint: Some("http://c".into()),
            notification: Some("http://n".into()),
            audit: None,
            event_store: Some("http://e".into()),
        };
        for (_, owner) in OWNERS {
            assert!(peers.all().iter().any(|(name, _)| *name == owner));
        }
        assert_eq!(peers.url_of("notification-service"), Some("http://n"));
        assert_eq!(peers.url_of("audit-service"), None);
        assert_eq!(peers.url_of("nobody"), None);
    }

    #[test]
    fn path_segments_are_escaped() {
        let url = |id: &str| {
            peer_url("http://audit:3007", &["api", "audit", "trail", id]).map(String::from)
        };
        let base = "http://audit:3007/api/audit/trail/";
        assert_eq!(url("a-b_c.d~9"), Some(format!("{base}a-b_c.d~9")));
        assert_eq!(url("a/b?c d"), Some(format!("{base}a%2Fb%3Fc%20d")));
        assert_eq!(url("é"), Some(format!("{base}%C3%A9")));
        assert_eq!(
            peer_url("http://n:3006/", &["health", "ready"]).map(String::from),
            Some("http://n:3006/health/ready".into())
        );
        assert_eq!(peer_url("not a url", &["x"]), None);
    }

    #[test]
    fn the_page_links_only_assets_that_exist() {
        for link in INDEX.split("/console/").skip(1) {
            let name: String = link.chars().take_while(|c| *c != '"').collect();
            assert!(
                ASSETS.iter().any(|(n, _, _)| *n == name),
                "index.html links /console/{name}, which is not served"
            );
        }
    }
}
