//! Prometheus metrics (SPEC section 8): one registry per service, names and labels from the seed.

use std::sync::Arc;
use std::time::Duration;

use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
    TextEncoder,
};

const LATENCY_BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];
const SAGA_BUCKETS: [f64; 12] = [
    0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 30.0, 60.0, 300.0, 900.0, 3600.0, 86400.0,
];

/// The registry of one service, with every metric a service can have.
#[derive(Debug, Clone)]
pub struct Metrics {
    pub registry: Registry,
    pub service: &'static str,
    pub http: Arc<HttpMetrics>,
    /// `events_published_total{event_type, service}`: events the service committed for
    /// publication (written to its outbox with the state change that caused them).
    pub events_published: IntCounterVec,
    /// `events_relayed_total{event_type, service}`: outbox rows published to the bus and stream.
    pub events_relayed: IntCounterVec,
    /// `event_processing_duration_seconds{event_type, service, status}`.
    pub processing: HistogramVec,
    /// `events_consumed_total{queue, status}` (status: ok, duplicate, retried, dead_lettered).
    pub consumed: IntCounterVec,
    /// `saga_execution_duration_seconds{saga_type, status}`.
    pub saga: HistogramVec,
    /// `outbox_backlog{service}`: rows not yet relayed.
    pub outbox_backlog: IntGauge,
    /// `dlq_depth{queue}`: dead letters waiting in a DLQ.
    pub dlq_depth: IntGaugeVec,
    /// `queue_depth{queue, service}`: messages waiting in a queue the service consumes (its lag).
    pub queue_depth: IntGaugeVec,
    /// `event_store_append_duration_seconds{service}` and the archive's size.
    pub store_append: HistogramVec,
    pub store_events: IntGauge,
}

/// HTTP requests by route and status.
#[derive(Debug)]
pub struct HttpMetrics {
    service: &'static str,
    requests: IntCounterVec,
    duration: HistogramVec,
}

impl HttpMetrics {
    pub fn service(&self) -> &'static str {
        self.service
    }

    pub fn observe(&self, method: &str, route: &str, status: u16, elapsed: Duration) {
        let status = status.to_string();
        self.requests
            .with_label_values(&[self.service, method, route, &status])
            .inc();
        self.duration
            .with_label_values(&[self.service, method, route])
            .observe(elapsed.as_secs_f64());
    }
}

fn register<T: prometheus::core::Collector + Clone + 'static>(
    registry: &Registry,
    metric: T,
) -> prometheus::Result<T> {
    registry.register(Box::new(metric.clone()))?;
    Ok(metric)
}

impl Metrics {
    pub fn new(service: &'static str) -> prometheus::Result<Self> {
        let registry = Registry::new_custom(None, None)?;
        let r = &registry;
        let counter = |name: &str, help: &str, labels: &[&str]| {
            register(r, IntCounterVec::new(Opts::new(name, help), labels)?)
        };
        let histogram = |name: &str, help: &str, labels: &[&str], buckets: &[f64]| {
            register(
                r,
                HistogramVec::new(
                    HistogramOpts::new(name, help).buckets(buckets.to_vec()),
                    labels,
                )?,
            )
        };
        let service_label = |opts: Opts| opts.const_label("service", service);
        Ok(Self {
            service,
            http: Arc::new(HttpMetrics {
                service,
                requests: counter(
                    "http_requests_total",
                    "HTTP requests served, by route and status",
                    &["service", "method", "route", "status"],
                )?,
                duration: histogram(
                    "http_request_duration_seconds",
                    "Time to serve an HTTP request",
                    &["service", "method", "route"],
                    &LATENCY_BUCKETS,
                )?,
            }),
            events_published: counter(
                "events_published_total",
                "Events committed for publication (outbox), by type",
                &["event_type", "service"],
            )?,
            events_relayed: counter(
                "events_relayed_total",
                "Outbox rows published to the bus and the stream",
                &["event_type", "service"],
            )?,
            processing: histogram(
                "event_processing_duration_seconds",
                "Time to handle one consumed event",
                &["event_type", "service", "status"],
                &LATENCY_BUCKETS,
            )?,
            consumed: counter(
                "events_consumed_total",
                "Messages settled by consumers, by queue and outcome",
                &["queue", "status"],
            )?,
            saga: histogram(
                "saga_execution_duration_seconds",
                "Saga durations: created to completed, and each compensation",
                &["saga_type", "status"],
                &SAGA_BUCKETS,
            )?,
            outbox_backlog: register(
                r,
                IntGauge::with_opts(service_label(Opts::new(
                    "outbox_backlog",
                    "Outbox rows not yet relayed",
                )))?,
            )?,
            dlq_depth: register(
                r,
                IntGaugeVec::new(
                    Opts::new("dlq_depth", "Dead letters waiting in a DLQ"),
                    &["queue"],
                )?,
            )?,
            queue_depth: register(
                r,
                IntGaugeVec::new(
                    Opts::new(
                        "queue_depth",
                        "Messages waiting in a queue this service consumes (ready, delayed or in flight), or entries of a stream its group has not acknowledged",
                    ),
                    &["queue", "service"],
                )?,
            )?,
            store_append: histogram(
                "event_store_append_duration_seconds",
                "Time to archive one event",
                &["service"],
                &LATENCY_BUCKETS,
            )?,
            store_events: register(
                r,
                IntGauge::with_opts(service_label(Opts::new(
                    "event_store_events",
                    "Events in the archive",
                )))?,
            )?,
            registry,
        })
    }

    pub fn event_published(&self, event_type: &str) {
        self.events_published
            .with_label_values(&[event_type, self.service])
            .inc();
    }

    pub fn relayed(&self, event_type: &str) {
        self.events_relayed
            .with_label_values(&[event_type, self.service])
            .inc();
    }

    pub fn processed(&self, event_type: &str, status: &str, elapsed: Duration) {
        self.processing
            .with_label_values(&[event_type, self.service, status])
            .observe(elapsed.as_secs_f64());
    }

    pub fn settled(&self, queue: &str, status: &str) {
        self.consumed.with_label_values(&[queue, status]).inc();
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut out = Vec::new();
        if let Err(e) = TextEncoder::new().encode(&self.registry.gather(), &mut out) {
            tracing::error!(error = %e, "encoding metrics");
        }
        String::from_utf8(out).unwrap_or_default()
    }
}
