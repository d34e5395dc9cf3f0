//! The projector: folds the event log, in commit order, into the complaint views.
//!
//! It is the only writer of the read model. Calls are serialised; one call catches up on
//! everything committed so far, so commands that finish together share one view update.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use sagaflow_domain::AggregateType;
use sagaflow_runtime::event_log::{EventLog, StoreError};

use crate::read_model::{ComplaintViews, StoredProjection};

const BATCH: usize = 512;

pub struct Projector {
    log: Arc<dyn EventLog>,
    views: Arc<dyn ComplaintViews>,
    /// The checkpoint as last saved; only read or moved under `lock`.
    reached: AtomicU64,
    lock: tokio::sync::Mutex<bool>,
}

impl Projector {
    pub fn new(log: Arc<dyn EventLog>, views: Arc<dyn ComplaintViews>) -> Self {
        Self {
            log,
            views,
            reached: AtomicU64::new(0),
            lock: tokio::sync::Mutex::new(false),
        }
    }

    /// The global position the views include.
    pub fn position(&self) -> u64 {
        self.reached.load(Ordering::Acquire)
    }

    /// Makes the views include at least global position `target`.
    pub async fn catch_up_to(&self, target: u64) -> Result<(), StoreError> {
        if self.position() >= target {
            return Ok(());
        }
        let mut loaded = self.lock.lock().await;
        // Whoever held the lock before may have projected it already: then one round of the
        // many commands waiting here served them all.
        if *loaded && self.position() >= target {
            return Ok(());
        }
        self.rounds(&mut loaded, Some(target)).await.map(|_| ())
    }

    /// Applies another service's event about complaint `id` (a notification, an audit mark) to
    /// its view. Returns the projection, and whether the event was new to it; `None` when the
    /// complaint does not exist.
    pub async fn apply_external(
        &self,
        id: &str,
        event: &sagaflow_domain::Envelope,
    ) -> Result<Option<(bool, sagaflow_domain::ComplaintProjection)>, StoreError> {
        let mut all = self
            .apply_external_all(&[(id.to_owned(), event.clone())])
            .await?;
        Ok(all.pop().flatten())
    }

    /// [`apply_external`](Self::apply_external) for a batch, in order: the views are loaded
    /// once and saved in one transaction. One answer per event.
    pub async fn apply_external_all(
        &self,
        events: &[(String, sagaflow_domain::Envelope)],
    ) -> Result<Vec<Option<(bool, sagaflow_domain::ComplaintProjection)>>, StoreError> {
        self.catch_up().await?;
        let _guard = self.lock.lock().await;
        let ids: Vec<String> = events.iter().map(|(id, _)| id.clone()).collect();
        let mut views = self.views.load(&ids).await?;
        let mut changed = HashSet::new();
        let mut answers = Vec::with_capacity(events.len());
        for (id, event) in events {
            let Some(stored) = views.get_mut(id) else {
                answers.push(None);
                continue;
            };
            let applied = stored.projection.apply_external(event);
            if applied {
                changed.insert(id.clone());
            }
            answers.push(Some((applied, stored.projection.clone())));
        }
        let updates: Vec<(String, StoredProjection)> = views
            .into_iter()
            .filter(|(id, _)| changed.contains(id))
            .collect();
        if !updates.is_empty() {
            self.views.save(&updates, self.position()).await?;
        }
        Ok(answers)
    }

    /// Applies every event committed so far; returns how many it read.
    pub async fn catch_up(&self) -> Result<usize, StoreError> {
        let mut loaded = self.lock.lock().await;
        self.rounds(&mut loaded, None).await
    }

    /// Projects batches until nothing is left, or until `target` is reached.
    async fn rounds(&self, loaded: &mut bool, target: Option<u64>) -> Result<usize, StoreError> {
        if !*loaded {
            self.reached
                .store(self.views.checkpoint().await?, Ordering::Release);
            *loaded = true;
        }
        let mut total = 0;
        loop {
            let from = self.position();
            let batch = self.log.read_all(from, BATCH).await?;
            let Some(last) = batch.last().map(|p| p.position) else {
                return Ok(total);
            };
            let ids: Vec<String> = batch
                .iter()
                .filter(|p| p.envelope.aggregate() == Some(AggregateType::Complaint))
                .map(|p| p.envelope.aggregate_id.clone())
                .collect();
            let mut views = self.views.load(&ids).await?;
            let mut changed = HashSet::new();
            for p in &batch {
                if p.envelope.aggregate() != Some(AggregateType::Complaint) {
                    continue;
                }
                let id = &p.envelope.aggregate_id;
                let stored = views.entry(id.clone()).or_insert_with(|| StoredProjection {
                    seq: p.position,
                    projection: Default::default(),
                });
                let applied = stored.projection.apply(&p.envelope).map_err(|e| {
                    StoreError::Corrupt(format!("complaint {id} cannot be projected: {e}"))
                })?;
                if applied {
                    changed.insert(id.clone());
                }
            }
            let updates: Vec<(String, StoredProjection)> = views
                .into_iter()
                .filter(|(id, _)| changed.contains(id))
                .collect();
            self.views.save_projected(&updates, last).await?;
            self.reached.store(last, Ordering::Release);
            total += batch.len();
            tracing::debug!(events = batch.len(), position = last, "projected");
            if target.is_some_and(|t| last >= t) {
                return Ok(total);
            }
        }
    }
}
