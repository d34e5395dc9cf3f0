//! The complaint service's use cases: commands go through the aggregate and the event log;
//! queries read the views. No HTTP here.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use sagaflow_domain::complaint::Command;
use sagaflow_domain::values::{Category, Description, Title, UserId};
use sagaflow_domain::{
    ComplaintProjection, ComplaintView, Context, DomainError, Envelope, Priority, decide, fold,
};
use sagaflow_runtime::event_log::{
    AppendError, AppendRequest, EventLog, ExpectedVersion, IdempotencyRecord, StoreError,
};
use sagaflow_runtime::metrics::Metrics;

use crate::projector::Projector;
use crate::read_model::{ComplaintViews, Cursor, ListFilter, Page};

/// How many times a command without `If-Match` is retried when another one wins the race.
const RACE_RETRIES: usize = 16;

/// A validated creation request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewComplaint {
    pub user_id: UserId,
    pub title: Title,
    pub description: Description,
    pub priority: Priority,
    pub category: Category,
}

impl NewComplaint {
    /// What tells a retry from a different request under the same idempotency key.
    fn fingerprint(&self) -> String {
        serde_json::json!([
            self.user_id.as_str(),
            self.title.as_str(),
            self.description.as_str(),
            self.priority.as_str(),
            self.category.as_str()
        ])
        .to_string()
    }
}

/// Who asks, for the events' metadata.
#[derive(Debug, Clone)]
pub struct Caller {
    pub correlation_id: String,
    pub request_id: String,
    pub user_id: Option<String>,
    /// The trace the command's events continue.
    pub traceparent: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error(transparent)]
    Refused(#[from] DomainError),
    #[error("the complaint is at version {actual}, not {expected}")]
    VersionConflict { expected: u64, actual: u64 },
    #[error("this Idempotency-Key was used for a different request")]
    IdempotencyKeyReused,
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// What a create answered.
#[derive(Debug, Clone)]
pub struct Created {
    pub view: ComplaintView,
    /// True when an earlier request with the same idempotency key created it.
    pub replayed: bool,
}

/// How long a complaint may stay unassigned, by priority (SPEC section 5).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Deadlines {
    pub low: std::time::Duration,
    pub medium: std::time::Duration,
    pub high: std::time::Duration,
    pub critical: std::time::Duration,
}

impl Default for Deadlines {
    /// CRITICAL 15 min, HIGH 1 h, MEDIUM 4 h, LOW 24 h.
    fn default() -> Self {
        let min = |m: u64| std::time::Duration::from_secs(60 * m);
        Self {
            low: min(24 * 60),
            medium: min(4 * 60),
            high: min(60),
            critical: min(15),
        }
    }
}

impl Deadlines {
    pub fn of(&self, p: Priority) -> std::time::Duration {
        match p {
            Priority::Low => self.low,
            Priority::Medium => self.medium,
            Priority::High => self.high,
            Priority::Critical => self.critical,
        }
    }
}

pub struct ComplaintApp {
    relay: std::sync::OnceLock<Arc<tokio::sync::Notify>>,
    log: Arc<dyn EventLog>,
    views: Arc<dyn ComplaintViews>,
    projector: Arc<Projector>,
    /// Woken after each append: the projector's task projects in the background.
    appended: Arc<tokio::sync::Notify>,
    /// The highest global position this process appended: queries wait for the views to
    /// include it, so a client reads what it was just answered.
    high_water: std::sync::atomic::AtomicU64,
    metrics: Metrics,
    clock: fn() -> DateTime<Utc>,
}

impl ComplaintApp {
    pub fn new(log: Arc<dyn EventLog>, views: Arc<dyn ComplaintViews>, metrics: Metrics) -> Self {
        let projector = Arc::new(Projector::new(log.clone(), views.clone()));
        Self {
            relay: std::sync::OnceLock::new(),
            log,
            views,
            projector,
            appended: Arc::new(tokio::sync::Notify::new()),
            high_water: std::sync::atomic::AtomicU64::new(0),
            metrics,
            clock: Utc::now,
        }
    }

    /// Notified after each append (the projector's task waits on it).
    pub fn appended(&self) -> Arc<tokio::sync::Notify> {
        self.appended.clone()
    }

    /// Wakes `relay` after each commit.
    pub fn set_relay(&self, relay: Arc<tokio::sync::Notify>) {
        let _ = self.relay.set(relay);
    }

    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// Escalates every open complaint past its deadline, once: two scanners racing on one
    /// complaint meet at the event log's version check, and the loser's retry is refused.
    pub async fn escalate_due(&self, deadlines: &Deadlines) -> Result<usize, AppError> {
        let now = (self.clock)();
        let mut escalated = 0;
        for priority in Priority::ALL {
            let limit = deadlines.of(*priority);
            let before = now - chrono::Duration::from_std(limit).unwrap_or(chrono::Duration::MAX);
            for (id, created_ms) in self
                .views
                .due_for_escalation(*priority, before.timestamp_millis(), 500)
                .await?
            {
                let created = DateTime::from_timestamp_millis(created_ms).unwrap_or(now);
                let deadline =
                    created + chrono::Duration::from_std(limit).unwrap_or(chrono::Duration::MAX);
                // The escalation belongs to the saga that the complaint's creation started.
                let first = self.log.read_stream(&id, 1).await?;
                let first = first.first();
                let correlation_id =
                    first.map_or_else(|| id.clone(), |e| e.metadata.correlation_id.clone());
                // A span of its own, in the trace of the complaint's creation.
                let span = tracing::info_span!(
                    parent: None,
                    "escalation",
                    otel.name = "escalate",
                    otel.kind = "internal",
                    aggregateId = %id,
                    correlationId = %correlation_id,
                );
                let traceparent = sagaflow_runtime::trace::continue_from(
                    &span,
                    first.and_then(|e| e.metadata.traceparent.as_deref()),
                );
                let caller = Caller {
                    correlation_id,
                    request_id: format!("escalation:{id}"),
                    user_id: None,
                    traceparent,
                };
                match self
                    .execute(&id, Command::Escalate { deadline }, None, &caller)
                    .await
                {
                    Ok(_) => escalated += 1,
                    Err(AppError::Refused(e)) => {
                        tracing::debug!(aggregateId = %id, reason = %e, "not escalated")
                    }
                    Err(e) => return Err(e),
                }
            }
        }
        Ok(escalated)
    }

    pub fn projector(&self) -> Arc<Projector> {
        self.projector.clone()
    }

    pub fn log(&self) -> Arc<dyn EventLog> {
        self.log.clone()
    }

    pub fn views(&self) -> Arc<dyn ComplaintViews> {
        self.views.clone()
    }

    pub async fn create(
        &self,
        new: NewComplaint,
        idempotency_key: Option<String>,
        caller: &Caller,
    ) -> Result<Created, AppError> {
        let fingerprint = new.fingerprint();
        if let Some(key) = &idempotency_key
            && let Some(found) = self.log.find_idempotency_key(key).await?
        {
            return self.replay(found, &fingerprint).await;
        }
        // Ids are time-ordered (UUIDv7) throughout: every store indexes them, and a new id lands
        // at the end of its index instead of on a random page, so a commit writes a few pages
        // rather than one per row and index.
        let id = uuid::Uuid::now_v7().to_string();
        let command = Command::Create {
            complaint_id: id.clone(),
            user_id: new.user_id.clone(),
            title: new.title,
            description: new.description,
            priority: new.priority,
            category: new.category,
        };
        let caller = Caller {
            user_id: caller
                .user_id
                .clone()
                .or_else(|| Some(new.user_id.as_str().to_owned())),
            ..caller.clone()
        };
        let idempotency = idempotency_key.map(|key| IdempotencyRecord {
            key,
            stream_id: id.clone(),
            fingerprint,
        });
        match self
            .record(&id, Vec::new(), &command, None, &caller, idempotency)
            .await
        {
            Ok(view) => Ok(Created {
                view,
                replayed: false,
            }),
            Err(Recorded::DuplicateKey(found)) => {
                let fingerprint = found.fingerprint.clone();
                self.replay(found, &fingerprint).await
            }
            Err(Recorded::Failed(e)) => Err(e),
        }
    }

    async fn replay(
        &self,
        found: IdempotencyRecord,
        fingerprint: &str,
    ) -> Result<Created, AppError> {
        if found.fingerprint != fingerprint {
            return Err(AppError::IdempotencyKeyReused);
        }
        // The first request may have committed without its view being projected yet.
        self.projector.catch_up().await?;
        let view = self.view_after(&found.stream_id, 0).await?;
        Ok(Created {
            view,
            replayed: true,
        })
    }

    /// Runs a command on an existing complaint. With `if_match`, the complaint must be at that
    /// version; without, a lost race is retried against the newer state.
    pub async fn execute(
        &self,
        id: &str,
        command: Command,
        if_match: Option<u64>,
        caller: &Caller,
    ) -> Result<ComplaintView, AppError> {
        for _ in 0..RACE_RETRIES {
            let events = self.log.read_stream(id, 1).await?;
            if events.is_empty() {
                return Err(DomainError::NotFound.into());
            }
            let version = events.len() as u64;
            if let Some(expected) = if_match
                && expected != version
            {
                return Err(AppError::VersionConflict {
                    expected,
                    actual: version,
                });
            }
            match self
                .record(id, events, &command, if_match, caller, None)
                .await
            {
                Err(Recorded::Failed(AppError::VersionConflict { .. })) if if_match.is_none() => {
                    continue;
                }
                Err(Recorded::Failed(e)) => return Err(e),
                Err(Recorded::DuplicateKey(_)) => {
                    return Err(StoreError::Corrupt(
                        "an idempotency key where none was given".into(),
                    )
                    .into());
                }
                Ok(view) => return Ok(view),
            }
        }
        Err(StoreError::Unavailable(format!(
            "complaint {id} changed {RACE_RETRIES} times while this command was being decided; try again"
        ))
        .into())
    }

    /// Decides against the stream `history`, appends, and answers the view that includes the
    /// new events.
    async fn record(
        &self,
        id: &str,
        history: Vec<Envelope>,
        command: &Command,
        if_match: Option<u64>,
        caller: &Caller,
        idempotency: Option<IdempotencyRecord>,
    ) -> Result<ComplaintView, Recorded> {
        let state = fold(&history).map_err(|e| {
            AppError::Store(StoreError::Corrupt(format!(
                "complaint {id} cannot be folded: {e}"
            )))
        })?;
        let at = (self.clock)();
        let payloads = decide(&state, command, at).map_err(AppError::from)?;
        let ctx = Context {
            correlation_id: caller.correlation_id.clone(),
            causation_id: Some(caller.request_id.clone()),
            user_id: caller.user_id.clone(),
            at,
            traceparent: caller.traceparent.clone(),
        };
        let events: Vec<Envelope> = payloads
            .iter()
            .enumerate()
            .map(|(i, p)| {
                Envelope::new(
                    uuid::Uuid::now_v7().to_string(),
                    id,
                    state.version + 1 + i as u64,
                    p,
                    &ctx,
                )
            })
            .collect();
        let request = AppendRequest {
            stream_id: id.to_owned(),
            expected: ExpectedVersion(state.version),
            events: events.clone(),
            idempotency,
        };
        let appended = match self.log.append(request).await {
            Ok(done) => done,
            Err(AppendError::Conflict { actual, .. }) => {
                return Err(AppError::VersionConflict {
                    expected: if_match.unwrap_or(state.version),
                    actual,
                }
                .into());
            }
            Err(AppendError::DuplicateIdempotencyKey(found)) => {
                return Err(Recorded::DuplicateKey(found));
            }
            Err(AppendError::Invalid(e)) => {
                return Err(AppError::Store(StoreError::Corrupt(format!(
                    "an append was refused: {e}"
                )))
                .into());
            }
            Err(AppendError::Store(e)) => return Err(AppError::Store(e).into()),
        };
        if let Some(relay) = self.relay.get() {
            relay.notify_one();
        }
        self.high_water
            .fetch_max(appended.last_position, std::sync::atomic::Ordering::AcqRel);
        self.appended.notify_one();
        for e in &events {
            self.metrics.event_published(&e.event_type);
            tracing::info!(eventType = %e.event_type, aggregateId = %id, version = e.metadata.version, "event recorded");
        }
        self.answer(id, &history, &state, &events, appended.last_position)
            .await
            .map_err(Recorded::from)
    }

    /// The view a command answers, without waiting for the projector: the command folded the
    /// stream already. A new complaint's view is that fold (no other service knows of it
    /// yet); an existing one's is its stored view, which holds what other services added, with
    /// the new events applied, provided the view had reached the history the command decided
    /// on. Otherwise the command waits for the projector to include its events.
    async fn answer(
        &self,
        id: &str,
        history: &[Envelope],
        state: &sagaflow_domain::ComplaintState,
        events: &[Envelope],
        position: u64,
    ) -> Result<ComplaintView, AppError> {
        let stored = if history.is_empty() {
            Some(ComplaintProjection::default())
        } else {
            self.views
                .load(&[id.to_owned()])
                .await?
                .remove(id)
                .map(|stored| stored.projection)
                .filter(|p| p.state.version == state.version)
        };
        if let Some(projection) = stored {
            return view_with(id, projection, events);
        }
        match self.view_after(id, position).await {
            Ok(view) => Ok(view),
            Err(e) => {
                // The command is committed; answer from the stream itself rather than fail it.
                tracing::warn!(error = %e, aggregateId = %id, "read model behind; answering from the stream");
                view_with(
                    id,
                    ComplaintProjection::default(),
                    history.iter().chain(events),
                )
            }
        }
    }

    /// Waits until the views include every event this process appended.
    async fn read_own_writes(&self) -> Result<(), AppError> {
        let target = self.high_water.load(std::sync::atomic::Ordering::Acquire);
        Ok(self.projector.catch_up_to(target).await?)
    }

    /// The view of `id` once the projection has reached `position`.
    async fn view_after(&self, id: &str, position: u64) -> Result<ComplaintView, AppError> {
        self.projector.catch_up_to(position).await?;
        self.views
            .get(id)
            .await?
            .ok_or(AppError::Refused(DomainError::NotFound))
    }

    /// A complaint's view, including whatever this process answered about it. A view not
    /// found may be a complaint another replica created a moment ago: the views catch up on
    /// the log before the answer is "none".
    pub async fn get(&self, id: &str) -> Result<Option<ComplaintView>, AppError> {
        self.read_own_writes().await?;
        if let Some(view) = self.views.get(id).await? {
            return Ok(Some(view));
        }
        if self.projector.catch_up().await? == 0 {
            return Ok(None);
        }
        Ok(self.views.get(id).await?)
    }

    pub async fn list(
        &self,
        filter: &ListFilter,
        limit: u32,
        cursor: Option<Cursor>,
    ) -> Result<Page, AppError> {
        self.read_own_writes().await?;
        Ok(self.views.list(filter, limit, cursor).await?)
    }

    /// The figures of the newest `window` complaints' sagas.
    pub async fn summary(&self, window: u32) -> Result<sagaflow_domain::SagaSummary, AppError> {
        self.read_own_writes().await?;
        let mut views = Vec::new();
        let mut cursor = None;
        while views.len() < window as usize {
            let want = (window as usize - views.len()).min(200) as u32;
            let page = self
                .views
                .list(&ListFilter::default(), want, cursor)
                .await?;
            views.extend(page.items);
            match page.next {
                Some(next) => cursor = Some(next),
                None => break,
            }
        }
        Ok(sagaflow_domain::SagaSummary::of(&views))
    }
}

/// The view of `projection` with `events` applied.
fn view_with<'a>(
    id: &str,
    mut projection: ComplaintProjection,
    events: impl IntoIterator<Item = &'a Envelope>,
) -> Result<ComplaintView, AppError> {
    let corrupt = |e: String| AppError::Store(StoreError::Corrupt(format!("complaint {id}: {e}")));
    for event in events {
        projection
            .apply(event)
            .map_err(|e| corrupt(e.to_string()))?;
    }
    projection
        .view()
        .ok_or_else(|| corrupt("an empty stream after an append".into()))
}

/// Why `record` did not answer a view.
enum Recorded {
    DuplicateKey(IdempotencyRecord),
    Failed(AppError),
}

impl From<AppError> for Recorded {
    fn from(e: AppError) -> Self {
        Recorded::Failed(e)
    }
}
