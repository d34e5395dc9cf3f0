//! The event store service (port 3008): the archive of every event of every aggregate, fed by
//! the Redis streams (consumer group `event-store`); streams by version, global order, replay,
//! and state rebuilt by folding the domain's own aggregate.
//!
//! - [`archive`]: the archive port, its embedded and MongoDB adapters, its conformance suite.
//! - [`http`]: routes and handlers.

pub mod archive;
pub mod http;

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use sagaflow_runtime::bus::MessageBus;
use sagaflow_runtime::bus::topology::{EVENT_STORE_GROUP, STREAMS};
use sagaflow_runtime::consumer::{Failure, Handler, Incoming, StreamConsumer};
use sagaflow_runtime::event_log::StoreError;
use sagaflow_runtime::http::health::{HealthState, check};
use sagaflow_runtime::metrics::Metrics;
use sagaflow_runtime::streams::StreamLog;
use sagaflow_runtime::tasks::Tasks;

use crate::archive::{Archive, SqliteArchive};

pub const SERVICE: &str = "event-store";
pub const DEFAULT_PORT: u16 = 3008;

/// Archives each event once.
struct Archiver {
    archive: Arc<dyn Archive>,
    metrics: Metrics,
    /// The highest version this process saw archived, per stream: an event whose predecessor
    /// is at or below it needs no lookup (an archived event is never removed, and a stream is
    /// archived without gaps). Other replicas archive too, so a miss asks the archive.
    archived: std::sync::Mutex<std::collections::HashMap<String, u64>>,
}

/// Streams the archiver remembers before it starts over (a miss costs one lookup).
const REMEMBERED: usize = 10_000;

impl Archiver {
    fn remembered(&self, aggregate_id: &str, version: u64) -> bool {
        self.archived
            .lock()
            .is_ok_and(|m| m.get(aggregate_id).is_some_and(|&v| v >= version))
    }

    fn remember<'a>(&self, archived: impl Iterator<Item = (&'a str, u64)>) {
        if let Ok(mut m) = self.archived.lock() {
            for (id, version) in archived {
                if m.len() >= REMEMBERED && !m.contains_key(id) {
                    m.clear();
                }
                let v = m.entry(id.to_owned()).or_insert(version);
                *v = (*v).max(version);
            }
        }
    }
}

#[async_trait]
impl Handler for Archiver {
    async fn handle(&self, incoming: &Incoming) -> Result<(), Failure> {
        self.handle_all(std::slice::from_ref(incoming))
            .await
            .pop()
            .unwrap_or_else(|| Err(Failure::Transient("no answer from the archive".into())))
    }

    /// Events of one aggregate are archived in version order, without gaps: an event whose
    /// predecessor is neither archived nor earlier in the batch waits for it (and is
    /// dead-lettered if it never comes). The others are archived in one commit.
    async fn handle_all(&self, batch: &[Incoming]) -> Vec<Result<(), Failure>> {
        let started = Instant::now();
        let transient_or_business = |e: StoreError| match e {
            StoreError::Corrupt(e) => Failure::Business(e),
            StoreError::Unavailable(e) => Failure::Transient(e),
        };
        let mut results: Vec<Option<Result<(), Failure>>> = vec![None; batch.len()];
        let mut accepted = Vec::with_capacity(batch.len());
        let mut in_batch = std::collections::HashSet::new();
        for (i, incoming) in batch.iter().enumerate() {
            let event = &incoming.envelope;
            let version = event.metadata.version;
            if version > 1
                && !in_batch.contains(&(event.aggregate_id.as_str(), version - 1))
                && !self.remembered(&event.aggregate_id, version - 1)
            {
                match self
                    .archive
                    .has_version(&event.aggregate_id, version - 1)
                    .await
                {
                    Ok(true) => {}
                    Ok(false) => {
                        results[i] = Some(Err(Failure::OutOfOrder(format!(
                            "waiting for version {} of {}",
                            version - 1,
                            event.aggregate_id
                        ))));
                        continue;
                    }
                    Err(e) => {
                        results[i] = Some(Err(transient_or_business(e)));
                        continue;
                    }
                }
            }
            in_batch.insert((event.aggregate_id.as_str(), version));
            accepted.push(i);
        }
        let events: Vec<sagaflow_domain::Envelope> = accepted
            .iter()
            .map(|&i| batch[i].envelope.clone())
            .collect();
        let appended = self.archive.append_all(&events).await;
        let took = started.elapsed().as_secs_f64();
        self.remember(
            accepted
                .iter()
                .zip(&appended)
                .filter(|(_, r)| r.is_ok())
                .map(|(&i, _)| {
                    let e = &batch[i].envelope;
                    (e.aggregate_id.as_str(), e.metadata.version)
                }),
        );
        for (i, result) in accepted.into_iter().zip(appended) {
            results[i] = Some(match result {
                Ok(new) => {
                    self.metrics
                        .store_append
                        .with_label_values(&[SERVICE])
                        .observe(took);
                    if new {
                        self.metrics.store_events.inc();
                    }
                    Ok(())
                }
                Err(e) => Err(transient_or_business(e)),
            });
        }
        results
            .into_iter()
            .map(|r| {
                r.unwrap_or_else(|| Err(Failure::Transient("no answer from the archive".into())))
            })
            .collect()
    }
}

pub struct EventStoreService {
    pub archive: Arc<dyn Archive>,
    pub metrics: Metrics,
    sqlite: Option<SqliteArchive>,
    bus: Arc<dyn MessageBus>,
    streams: Arc<dyn StreamLog>,
    tasks: Tasks,
}

impl EventStoreService {
    /// Opens the archive under `dir` and starts reading both streams.
    /// Opens the archive: on MongoDB when `mongodb_url` is given (its database, else
    /// `event_store`), else under `dir`; then starts reading both streams.
    pub async fn open(
        dir: &std::path::Path,
        mongodb_url: Option<&str>,
        bus: Arc<dyn MessageBus>,
        streams: Arc<dyn StreamLog>,
        consumer_name: &str,
        reclaim_after: Duration,
        max_attempts: u32,
    ) -> Result<Self, StoreError> {
        let metrics = Metrics::new(SERVICE)
            .map_err(|e| StoreError::Unavailable(format!("registering metrics: {e}")))?;
        let (archive, sqlite): (Arc<dyn Archive>, Option<SqliteArchive>) = match mongodb_url {
            Some(url) => (
                Arc::new(
                    archive::mongo::MongoArchive::open(url, &archive::mongo::database_of(url))
                        .await?,
                ),
                None,
            ),
            None => {
                std::fs::create_dir_all(dir).map_err(|e| {
                    StoreError::Unavailable(format!("creating {}: {e}", dir.display()))
                })?;
                let sqlite = SqliteArchive::open(&dir.join("archive.db")).await?;
                (Arc::new(sqlite.clone()), Some(sqlite))
            }
        };
        metrics
            .store_events
            .set(i64::try_from(archive.count().await?).unwrap_or(i64::MAX));
        let handler: Arc<dyn Handler> = Arc::new(Archiver {
            archive: archive.clone(),
            metrics: metrics.clone(),
            archived: Default::default(),
        });
        let mut tasks = Tasks::default();
        for stream in STREAMS {
            let log = streams.clone();
            sagaflow_runtime::pipeline::watch_depth(
                &mut tasks,
                &metrics,
                stream.to_owned(),
                move || {
                    let log = log.clone();
                    async move { log.waiting(stream, EVENT_STORE_GROUP).await.ok() }
                },
            );
            tasks.spawn(
                StreamConsumer {
                    streams: streams.clone(),
                    stream: stream.to_owned(),
                    group: EVENT_STORE_GROUP.to_owned(),
                    consumer: consumer_name.to_owned(),
                    handler: handler.clone(),
                    min_idle: reclaim_after,
                    max_attempts,
                    attempts: Default::default(),
                    metrics: metrics.clone(),
                }
                .run(),
            );
        }
        Ok(Self {
            archive,
            metrics,
            sqlite,
            bus,
            streams,
            tasks,
        })
    }

    pub fn router(&self, correlation_header: axum::http::HeaderName) -> axum::Router {
        let archive = self.archive.clone();
        let bus = self.bus.clone();
        let streams = self.streams.clone();
        let health = HealthState {
            checks: Arc::new(vec![
                check("archive", move || {
                    let a = archive.clone();
                    async move { a.ping().await }
                }),
                check("message-bus", move || {
                    let b = bus.clone();
                    async move { b.ping().await }
                }),
                check("stream-log", move || {
                    let s = streams.clone();
                    async move { s.ping().await }
                }),
            ]),
            metrics: self.metrics.clone(),
        };
        let router = http::routes(self.archive.clone(), self.bus.clone())
            .merge(sagaflow_runtime::http::health::routes(health))
            .merge(sagaflow_runtime::http::openapi_route(include_str!(
                "../openapi.json"
            )));
        sagaflow_runtime::http::finish(router, correlation_header, &self.metrics)
    }

    pub async fn close(mut self) {
        self.tasks.stop().await;
        if let Some(s) = &self.sqlite {
            s.close().await;
        }
    }
}
