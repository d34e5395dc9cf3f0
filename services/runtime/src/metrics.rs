//! Prometheus metrics (SPEC section 8): one registry per service, names and labels from the seed.

use std::time::Duration;

use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounterVec, Opts, Registry, TextEncoder,
};

/// The registry of one service, with the metrics every service has.
#[derive(Debug, Clone)]
pub struct Metrics {
    pub registry: Registry,
    pub service: &'static str,
    pub http: std::sync::Arc<HttpMetrics>,
    /// `events_published_total{event_type, service}`: events the service committed for
    /// publication (written to its outbox with the state change that caused them).
    pub events_published: IntCounterVec,
}

/// HTTP requests by route and status.
#[derive(Debug)]
pub struct HttpMetrics {
    service: &'static str,
    requests: IntCounterVec,
    duration: HistogramVec,
}

impl HttpMetrics {
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
        let registry = Registry::new();
        let requests = register(
            &registry,
            IntCounterVec::new(
                Opts::new(
                    "http_requests_total",
                    "HTTP requests served, by route and status",
                ),
                &["service", "method", "route", "status"],
            )?,
        )?;
        let duration = register(
            &registry,
            HistogramVec::new(
                HistogramOpts::new(
                    "http_request_duration_seconds",
                    "Time to serve an HTTP request",
                )
                .buckets(vec![
                    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                ]),
                &["service", "method", "route"],
            )?,
        )?;
        let events_published = register(
            &registry,
            IntCounterVec::new(
                Opts::new(
                    "events_published_total",
                    "Events committed for publication (outbox), by type",
                ),
                &["event_type", "service"],
            )?,
        )?;
        Ok(Self {
            registry,
            service,
            http: std::sync::Arc::new(HttpMetrics {
                service,
                requests,
                duration,
            }),
            events_published,
        })
    }

    pub fn event_published(&self, event_type: &str) {
        self.events_published
            .with_label_values(&[event_type, self.service])
            .inc();
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
