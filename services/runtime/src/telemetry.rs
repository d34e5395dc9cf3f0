//! Logs (SPEC section 8): with `LOG_FORMAT=json`, one JSON object a line with `timestamp`,
//! `level`, `message`, `service`, and every field of the event and of the spans around it
//! (`correlationId`, `eventType`, `aggregateId` …) at the top level.

use std::fmt;

use serde_json::{Map, Value};
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::Layer;
use tracing_subscriber::filter::{LevelFilter, Targets};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::writer::MakeWriterExt as _;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt;

use crate::config::{LogFormat, LogLevel};

/// A span's fields, kept as JSON for the formatter.
#[derive(Debug, Default)]
struct SpanFields(Map<String, Value>);

struct JsonVisitor<'a>(&'a mut Map<String, Value>);

impl Visit for JsonVisitor<'_> {
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.0
            .insert(field.name().to_owned(), Value::String(format!("{value:?}")));
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0
            .insert(field.name().to_owned(), Value::String(value.to_owned()));
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.0.insert(field.name().to_owned(), Value::from(value));
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.0.insert(field.name().to_owned(), Value::from(value));
    }
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.0.insert(field.name().to_owned(), Value::from(value));
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.0.insert(field.name().to_owned(), Value::from(value));
    }
    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        let mut text = value.to_string();
        let mut source = value.source();
        while let Some(s) = source {
            text.push_str(": ");
            text.push_str(&s.to_string());
            source = s.source();
        }
        self.0.insert(field.name().to_owned(), Value::String(text));
    }
}

/// Records span fields into the span's extensions.
struct SpanFieldsLayer;

impl<S> Layer<S> for SpanFieldsLayer
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        if let Some(span) = ctx.span(id) {
            let mut fields = SpanFields::default();
            attrs.record(&mut JsonVisitor(&mut fields.0));
            span.extensions_mut().insert(fields);
        }
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, ctx: Context<'_, S>) {
        if let Some(span) = ctx.span(id)
            && let Some(fields) = span.extensions_mut().get_mut::<SpanFields>()
        {
            values.record(&mut JsonVisitor(&mut fields.0));
        }
    }
}

/// Writes each event as one JSON object.
struct JsonLines {
    service: &'static str,
}

impl<S, N> FormatEvent<S, N> for JsonLines
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let mut line = Map::new();
        line.insert(
            "timestamp".into(),
            Value::String(sagaflow_domain::time::format(&chrono::Utc::now())),
        );
        line.insert(
            "level".into(),
            Value::String(event.metadata().level().as_str().to_ascii_lowercase()),
        );
        line.insert("service".into(), Value::String(self.service.to_owned()));
        line.insert(
            "target".into(),
            Value::String(event.metadata().target().to_owned()),
        );
        if let Some(scope) = ctx.event_scope() {
            for span in scope.from_root() {
                if let Some(fields) = span.extensions().get::<SpanFields>() {
                    for (k, v) in &fields.0 {
                        // `otel.name`, `otel.kind` … are for the trace exporter.
                        if !k.starts_with("otel.") {
                            line.insert(k.clone(), v.clone());
                        }
                    }
                }
            }
        }
        event.record(&mut JsonVisitor(&mut line));
        let text = serde_json::to_string(&line).map_err(|_| fmt::Error)?;
        writeln!(writer, "{text}")
    }
}

/// The fields of a line in the `pretty` format, without the `otel.*` ones (they name the
/// exported span; the line says the same already).
struct PrettyFields;

struct PrettyVisitor<'a> {
    writer: Writer<'a>,
    first: bool,
    result: fmt::Result,
}

impl Visit for PrettyVisitor<'_> {
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        let name = field.name();
        if self.result.is_err() || name.starts_with("otel.") {
            return;
        }
        let gap = if self.first { "" } else { " " };
        self.first = false;
        self.result = if name == "message" {
            write!(self.writer, "{gap}{value:?}")
        } else {
            write!(self.writer, "{gap}{name}={value:?}")
        };
    }
}

impl<'w> FormatFields<'w> for PrettyFields {
    fn format_fields<R: tracing_subscriber::field::RecordFields>(
        &self,
        writer: Writer<'w>,
        fields: R,
    ) -> fmt::Result {
        let mut visitor = PrettyVisitor {
            writer,
            first: true,
            result: Ok(()),
        };
        fields.record(&mut visitor);
        visitor.result
    }
}

fn level(l: LogLevel) -> Level {
    match l {
        LogLevel::Debug => Level::DEBUG,
        LogLevel::Info => Level::INFO,
        LogLevel::Warn => Level::WARN,
        LogLevel::Error => Level::ERROR,
    }
}

/// What `init` installed that must be flushed before the process exits.
#[derive(Debug, Default)]
pub struct Telemetry {
    traces: Option<crate::trace::Exporter>,
}

impl Telemetry {
    /// Flushes the spans still buffered.
    pub fn shutdown(self) {
        if let Some(t) = self.traces {
            t.shutdown();
        }
    }
}

fn otel_layer<S>(
    tracer: Option<opentelemetry_sdk::trace::SdkTracer>,
) -> Option<tracing_opentelemetry::OpenTelemetryLayer<S, opentelemetry_sdk::trace::SdkTracer>>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    tracer.map(|t| tracing_opentelemetry::layer().with_tracer(t))
}

/// Installs the global subscriber, on stderr, and the OTLP exporter when `traces` names one.
/// Calling it twice keeps the first one. Call it before the async runtime starts (the exporter
/// runs on a thread of its own).
pub fn init(
    service: &'static str,
    log_level: LogLevel,
    format: LogFormat,
    traces: Option<&crate::config::TraceExport>,
) -> Result<Telemetry, String> {
    let (exporter, tracer) = match traces {
        Some(export) => {
            let (e, t) = crate::trace::Exporter::start(service, export)?;
            (Some(e), Some(t))
        }
        None => (None, None),
    };
    // Logs follow LOG_LEVEL (at the writer); spans are exported from INFO whatever LOG_LEVEL
    // says, except the exporter's own work and spans kept for the logs (a batch, a probe).
    // (Per-layer filters on the log layers stalled sqlx's PostgreSQL pool at start, so the
    // log level is applied where lines are written.)
    let log_level = LevelFilter::from_level(level(log_level));
    let floor = if tracer.is_some() {
        log_level.max(LevelFilter::INFO)
    } else {
        log_level
    };
    // The exporter's own crates: their warnings are logged, their spans never exported (an
    // export would trace itself).
    let exporting_crates = [
        "opentelemetry",
        "opentelemetry_sdk",
        "opentelemetry_otlp",
        "opentelemetry-otlp",
        "reqwest",
    ];
    let enabled = Targets::new().with_default(floor).with_targets(
        ["sqlx", "hyper"]
            .into_iter()
            .chain(exporting_crates)
            .map(|t| (t, LevelFilter::WARN)),
    );
    let spans = Targets::new().with_default(LevelFilter::INFO).with_targets(
        [crate::trace::LOG_ONLY, "hyper", "hyper_util", "h2", "sqlx"]
            .into_iter()
            .chain(exporting_crates)
            .map(|t| (t, LevelFilter::OFF)),
    );
    let max = log_level.into_level().unwrap_or(Level::ERROR);
    let stderr = std::io::stderr.with_max_level(max);
    let result = match format {
        LogFormat::Json => tracing_subscriber::registry()
            .with(otel_layer(tracer).map(|l| l.with_filter(spans)))
            .with(SpanFieldsLayer)
            .with(
                tracing_subscriber::fmt::layer()
                    .with_writer(stderr)
                    .event_format(JsonLines { service }),
            )
            .with(enabled)
            .try_init(),
        LogFormat::Pretty => tracing_subscriber::registry()
            .with(otel_layer(tracer).map(|l| l.with_filter(spans)))
            .with(
                tracing_subscriber::fmt::layer()
                    .with_writer(stderr)
                    .fmt_fields(PrettyFields)
                    .compact(),
            )
            .with(enabled)
            .try_init(),
    };
    let exporter = match (result, exporter) {
        (Err(_), exporter) => {
            tracing::debug!("a log subscriber was already installed");
            // Nothing would reach this exporter.
            if let Some(e) = exporter {
                e.shutdown();
            }
            None
        }
        (Ok(()), exporter) => exporter,
    };
    if let (Some(export), Some(_)) = (traces, &exporter) {
        tracing::info!(endpoint = %crate::config::redact(&export.endpoint), "exporting traces over OTLP/HTTP");
    }
    Ok(Telemetry { traces: exporter })
}
