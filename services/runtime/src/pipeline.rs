//! What a service needs from the event pipeline, and the wiring every producing or consuming
//! service repeats: its relay, its queue consumers, its health checks.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;

use crate::bus::MessageBus;
use crate::bus::topology::queues_of;
use crate::consumer::{Handler, QueueConsumer, RetryPolicy};
use crate::http::health::{ReadinessCheck, check};
use crate::metrics::Metrics;
use crate::outbox::Outbox;
use crate::relay::Relay;
use crate::streams::StreamLog;
use crate::tasks::Tasks;

/// The bus, the stream log and how the pipeline behaves.
#[derive(Clone)]
pub struct Pipeline {
    pub bus: Arc<dyn MessageBus>,
    pub streams: Arc<dyn StreamLog>,
    pub retry: RetryPolicy,
    /// The approximate cap of each stream.
    pub stream_max_len: Option<u64>,
    /// How often the relay looks at its outbox when nobody wakes it.
    pub relay_tick: Duration,
    /// Benchmarking only: no relay runs; outboxes fill and nothing is published.
    pub relays_paused: bool,
}

/// Where the embedded pipeline keeps its files, under a data directory.
pub fn embedded_dir(data_dir: &std::path::Path) -> std::path::PathBuf {
    data_dir.join("pipeline")
}

impl Pipeline {
    /// RabbitMQ and Redis; stream keys start with `stream_prefix` (several deployments can
    /// share one Redis). With `declare_topology` the default topology is declared; without, it
    /// is someone else's (an EventPipeline's), and a queue it has not declared yet is waited for.
    pub async fn real(
        rabbitmq_url: &str,
        redis_url: &str,
        stream_prefix: &str,
        retry: RetryPolicy,
        declare_topology: bool,
    ) -> Result<Self, String> {
        let bus = crate::bus::rabbitmq::RabbitBus::open(rabbitmq_url)
            .await
            .map_err(|e| format!("RabbitMQ: {e}"))?;
        if declare_topology {
            bus.declare(&crate::bus::topology::default_queues())
                .await
                .map_err(|e| format!("RabbitMQ: {e}"))?;
        }
        let streams = crate::streams::redis::RedisStreams::open(redis_url, stream_prefix)
            .await
            .map_err(|e| format!("Redis: {e}"))?;
        Ok(Self {
            bus: Arc::new(bus),
            streams: Arc::new(streams),
            retry,
            stream_max_len: Some(1_000_000),
            relay_tick: Duration::from_millis(200),
            relays_paused: false,
        })
    }

    /// The embedded bus and stream log under `data_dir/pipeline`, with the default topology
    /// declared.
    pub async fn embedded(
        data_dir: &std::path::Path,
        retry: RetryPolicy,
    ) -> Result<
        (
            Self,
            crate::bus::sqlite::SqliteBus,
            crate::streams::sqlite::SqliteStreams,
        ),
        String,
    > {
        let dir = embedded_dir(data_dir);
        std::fs::create_dir_all(&dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
        let bus = crate::bus::sqlite::SqliteBus::open(&dir.join("bus.db"))
            .await
            .map_err(|e| e.to_string())?;
        bus.declare(&crate::bus::topology::default_queues())
            .await
            .map_err(|e| e.to_string())?;
        let streams = crate::streams::sqlite::SqliteStreams::open(&dir.join("streams.db"))
            .await
            .map_err(|e| e.to_string())?;
        let pipeline = Self {
            bus: Arc::new(bus.clone()),
            streams: Arc::new(streams.clone()),
            retry,
            stream_max_len: Some(1_000_000),
            relay_tick: Duration::from_millis(200),
            relays_paused: false,
        };
        Ok((pipeline, bus, streams))
    }

    /// Starts the relay of `outbox`; the returned handle wakes it after a commit.
    pub fn start_relay(
        &self,
        tasks: &mut Tasks,
        outbox: Arc<dyn Outbox>,
        metrics: &Metrics,
    ) -> Arc<Notify> {
        let relay = Arc::new(Relay::new(
            outbox,
            self.bus.clone(),
            self.streams.clone(),
            self.stream_max_len,
            metrics.clone(),
        ));
        let waker = relay.waker();
        if self.relays_paused {
            tracing::warn!("relays paused: the outbox is recorded, not published");
        } else {
            tasks.spawn(relay.run(self.relay_tick));
        }
        waker
    }

    /// Starts one consumer per queue `service` reads in the default topology.
    pub fn start_consumers(
        &self,
        tasks: &mut Tasks,
        service: &str,
        handler: Arc<dyn Handler>,
        metrics: &Metrics,
    ) {
        for queue in queues_of(service) {
            self.watch_queue(tasks, queue.name.clone(), metrics);
            tasks.spawn(
                QueueConsumer {
                    bus: self.bus.clone(),
                    queue: queue.name,
                    handler: handler.clone(),
                    policy: self.retry,
                    metrics: metrics.clone(),
                }
                .run(),
            );
        }
    }

    /// Readiness checks of the bus and the stream log.
    pub fn checks(&self) -> Vec<Arc<dyn ReadinessCheck>> {
        let bus = self.bus.clone();
        let streams = self.streams.clone();
        vec![
            check("message-bus", move || {
                let b = bus.clone();
                async move { b.ping().await }
            }),
            check("stream-log", move || {
                let s = streams.clone();
                async move { s.ping().await }
            }),
        ]
    }

    /// Keeps `queue_depth` of a consumed queue current: how far its consumer is behind.
    fn watch_queue(&self, tasks: &mut Tasks, queue: String, metrics: &Metrics) {
        let bus = self.bus.clone();
        watch_depth(tasks, metrics, queue.clone(), move || {
            let (bus, queue) = (bus.clone(), queue.clone());
            async move { bus.depth(&queue).await.ok() }
        });
    }

    /// Keeps `dlq_depth` of `exchange`'s DLQ current.
    pub fn watch_dlq(&self, tasks: &mut Tasks, exchange: &'static str, metrics: &Metrics) {
        let bus = self.bus.clone();
        let gauge = metrics
            .dlq_depth
            .with_label_values(&[&crate::bus::topology::dlq_name(exchange)]);
        tasks.spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(5));
            loop {
                tick.tick().await;
                if let Ok(n) = bus.dead_letter_count(exchange).await {
                    gauge.set(i64::try_from(n).unwrap_or(i64::MAX));
                }
            }
        });
    }
}

/// Keeps `queue_depth{queue}` of this service current every 5 s with what `depth` reads: how
/// far its consumer of that queue, or stream, is behind. While the backend cannot tell
/// (`None`), the series is absent rather than stale.
pub fn watch_depth<F, Fut>(tasks: &mut Tasks, metrics: &Metrics, queue: String, depth: F)
where
    F: Fn() -> Fut + Send + 'static,
    Fut: std::future::Future<Output = Option<u64>> + Send,
{
    let (gauge, service) = (metrics.queue_depth.clone(), metrics.service);
    tasks.spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(5));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            match depth().await {
                Some(n) => gauge
                    .with_label_values(&[queue.as_str(), service])
                    .set(i64::try_from(n).unwrap_or(i64::MAX)),
                None => {
                    let _ = gauge.remove_label_values(&[queue.as_str(), service]);
                }
            }
        }
    });
}
