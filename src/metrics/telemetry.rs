//! The metrics of weir's own telemetry: access log lines written and lost, trace spans exported
//! and lost. Every label is resolved here, once, so the request path only adds to a handle.
//!
//! | name | type | labels |
//! | --- | --- | --- |
//! | `weir_access_log_lines_total` | counter: lines written | |
//! | `weir_access_log_dropped_total` | counter | reason (`queue_full`, `write_error`) |
//! | `weir_trace_spans_exported_total` | counter: spans the collector accepted | |
//! | `weir_trace_spans_dropped_total` | counter | reason (`queue_full`, `export_failed`) |

use prometheus::{IntCounter, IntCounterVec, Opts, Registry};

use crate::observe::access::AccessLogCounters;
use crate::observe::span_export::SpanCounters;

/// The handles the access log and the span exporter count with.
#[derive(Clone)]
pub struct Telemetry {
    pub access_log: AccessLogCounters,
    pub spans: SpanCounters,
}

impl Telemetry {
    pub fn register(registry: &Registry) -> prometheus::Result<Telemetry> {
        let counter = |name: &str, help: &str| -> prometheus::Result<IntCounter> {
            let c = IntCounter::new(name, help)?;
            registry.register(Box::new(c.clone()))?;
            Ok(c)
        };
        let by_reason = |name: &str, help: &str| -> prometheus::Result<IntCounterVec> {
            let c = IntCounterVec::new(Opts::new(name, help), &["reason"])?;
            registry.register(Box::new(c.clone()))?;
            Ok(c)
        };
        let lines = counter("weir_access_log_lines_total", "Access log lines written.")?;
        let lines_dropped = by_reason(
            "weir_access_log_dropped_total",
            "Access log lines lost: the queue was full (queue_full) or the write failed (write_error).",
        )?;
        let spans = counter(
            "weir_trace_spans_exported_total",
            "Trace spans the OTLP collector accepted.",
        )?;
        let spans_dropped = by_reason(
            "weir_trace_spans_dropped_total",
            "Trace spans lost: the queue was full (queue_full), or the export failed or was refused (export_failed).",
        )?;
        Ok(Telemetry {
            access_log: AccessLogCounters {
                written: lines,
                dropped_full: lines_dropped.with_label_values(&["queue_full"]),
                dropped_write_error: lines_dropped.with_label_values(&["write_error"]),
            },
            spans: SpanCounters {
                exported: spans,
                dropped_full: spans_dropped.with_label_values(&["queue_full"]),
                dropped_failed: spans_dropped.with_label_values(&["export_failed"]),
            },
        })
    }
}
