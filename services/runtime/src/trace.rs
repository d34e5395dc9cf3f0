//! Traces (SPEC section 8): a span per request and per event handled, linked across services by
//! the W3C `traceparent` that travels in message headers, stream fields and the envelope's
//! metadata, and exported over OTLP/HTTP when `OTEL_EXPORTER_OTLP_ENDPOINT` names a collector.
//!
//! Without an exporter the spans still exist for the logs, and a service passes on the
//! `traceparent` it received unchanged, so the chain is not broken by a service that does not
//! export.

use std::collections::HashMap;

use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::trace::{TraceContextExt, TracerProvider as _};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{SdkTracer, SdkTracerProvider};
use tracing_opentelemetry::OpenTelemetrySpanExt;

use crate::config::TraceExport;

/// The provider of an exporting process; flushes what is buffered when shut down.
#[derive(Debug)]
pub struct Exporter {
    provider: SdkTracerProvider,
}

impl Exporter {
    /// A batching OTLP/HTTP exporter: the endpoint, protocol (`http/protobuf` by default),
    /// headers and timeout come from the standard `OTEL_EXPORTER_OTLP_*` variables; the
    /// resource's `service.name` from `OTEL_SERVICE_NAME`, else `service`.
    pub fn start(service: &str, export: &TraceExport) -> Result<(Self, SdkTracer), String> {
        use opentelemetry_otlp::WithExportConfig as _;
        let mut builder = opentelemetry_otlp::SpanExporter::builder().with_http();
        // The specification's default encoding; the exporter would pick JSON, since both are
        // built in.
        let chosen = [
            "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
            "OTEL_EXPORTER_OTLP_PROTOCOL",
        ]
        .iter()
        .any(|v| std::env::var(v).is_ok_and(|p| !p.trim().is_empty()));
        if !chosen {
            builder = builder.with_protocol(opentelemetry_otlp::Protocol::HttpBinary);
        }
        let exporter = builder
            .build()
            .map_err(|e| format!("{}: {e}", export.var))?;
        let mut resource = opentelemetry_sdk::Resource::builder();
        let named = std::env::var_os("OTEL_SERVICE_NAME").is_some()
            || std::env::var("OTEL_RESOURCE_ATTRIBUTES").is_ok_and(|a| {
                a.split(',')
                    .any(|kv| kv.trim().starts_with("service.name="))
            });
        if !named {
            resource = resource.with_service_name(service.to_owned());
        }
        let provider = SdkTracerProvider::builder()
            .with_batch_exporter(exporter)
            .with_resource(resource.build())
            .build();
        let tracer = provider.tracer("sagaflow");
        Ok((Self { provider }, tracer))
    }

    /// Exports what is still buffered (bounded by the exporter's timeout).
    pub fn shutdown(self) {
        if let Err(e) = self.provider.shutdown() {
            eprintln!("sagaflow: flushing traces: {e}");
        }
    }
}

/// The `traceparent` of `span` when traces are exported (and the span is recorded).
pub fn traceparent_of(span: &tracing::Span) -> Option<String> {
    let cx = span.context();
    let otel = cx.span();
    let sc = otel.span_context();
    sc.is_valid().then(|| {
        format!(
            "00-{}-{}-{:02x}",
            sc.trace_id(),
            sc.span_id(),
            sc.trace_flags().to_u8()
        )
    })
}

/// The target of spans that are for the logs only (a batch, a health probe, a scrape): the
/// exporter leaves them out.
pub const LOG_ONLY: &str = "sagaflow::log_only";

/// A W3C `traceparent` in its canonical form (`00-<trace id>-<parent id>-<flags>`, lowercase),
/// or `None` when it is not one: a version other than `00` is read as far as `00` defines it,
/// version `ff`, an all-zero id or a field of the wrong length or alphabet is refused.
pub fn canonical(traceparent: &str) -> Option<String> {
    let mut parts = traceparent.trim().split('-');
    let (version, trace, span, flags) =
        (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    let hex = |s: &str, len: usize| {
        s.len() == len
            && s.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    };
    let nonzero = |s: &str| s.bytes().any(|b| b != b'0');
    let ok = hex(version, 2)
        && version != "ff"
        && (version != "00" || parts.next().is_none())
        && hex(trace, 32)
        && nonzero(trace)
        && hex(span, 16)
        && nonzero(span)
        && hex(flags, 2);
    ok.then(|| format!("00-{trace}-{span}-{flags}"))
}

/// Whether a header value is a W3C `traceparent` this module can continue.
pub fn valid(traceparent: &str) -> bool {
    canonical(traceparent).is_some()
}

/// Makes the remote span `traceparent` names the parent of `span` (before the span is first
/// used), and answers what `span` passes on to the work it causes: its own `traceparent` when
/// traces are exported, else the one it continues, in canonical form. A malformed
/// `traceparent` is ignored.
pub fn continue_from(span: &tracing::Span, traceparent: Option<&str>) -> Option<String> {
    let incoming = traceparent.and_then(canonical);
    if let Some(t) = &incoming {
        let carrier = HashMap::from([("traceparent".to_owned(), t.clone())]);
        let _ = span.set_parent(TraceContextPropagator::new().extract(&carrier));
    }
    traceparent_of(span).or(incoming)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_well_formed_traceparents_are_continued() {
        assert!(valid(
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
        ));
        for bad in [
            "",
            "00-abc",
            "00-1-2-01",
            "00-+1-+2-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "zz-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-1",
        ] {
            assert!(!valid(bad), "{bad:?}");
        }
        // A later version is read as far as version 00 goes, and passed on as 00.
        assert_eq!(
            canonical(" 01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-more ").as_deref(),
            Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
        );
    }

    #[test]
    fn without_an_exporter_a_span_passes_on_what_it_received() {
        let span = tracing::info_span!("event");
        let t = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        assert_eq!(continue_from(&span, Some(t)).as_deref(), Some(t));
        assert_eq!(continue_from(&span, Some("garbage")), None);
        assert_eq!(continue_from(&span, None), None);
    }
}
