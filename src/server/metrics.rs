//! Counters kept by the loop and their Prometheus text rendering.

use std::collections::BTreeMap;
use std::fmt::Write;

/// Running totals since the server started. Read them through
/// [`Ctx::metrics`](crate::Ctx::metrics) or `GET /metrics`.
#[derive(Debug, Default, Clone)]
pub struct Metrics {
    /// TCP connections accepted.
    pub accepted: u64,
    /// Connections currently open as WebSockets.
    pub open: u64,
    /// WebSocket connections closed, by the code the application saw.
    pub closed_by_code: BTreeMap<u16, u64>,
    /// Upgrade requests refused (bad request, rejected by the application,
    /// timed out, over the connection limit).
    pub handshake_failures: u64,
    /// TLS handshakes that failed (an alert, garbage such as plain HTTP on
    /// the TLS port, a truncated hello); also counted in
    /// `handshake_failures`.
    pub tls_handshake_failures: u64,
    /// Plain HTTP requests served.
    pub http_requests: u64,
    /// Messages received.
    pub messages_in: u64,
    /// Messages queued for sending (one per recipient).
    pub messages_out: u64,
    /// Bytes read from sockets.
    pub bytes_in: u64,
    /// Bytes written to sockets.
    pub bytes_out: u64,
    /// Messages not delivered because a queue was over its cap.
    pub dropped_backpressure: u64,
    /// Handler callbacks that panicked.
    pub handler_panics: u64,
}

impl Metrics {
    /// Renders the counters in the Prometheus text exposition format.
    ///
    /// ```
    /// let text = wsloop::Metrics::default().to_prometheus();
    /// assert!(text.contains("wsloop_connections_open 0"));
    /// ```
    pub fn to_prometheus(&self) -> String {
        let mut out = String::with_capacity(1024);
        let mut metric = |name: &str, kind: &str, help: &str, value: u64| {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}"
            );
        };
        metric(
            "wsloop_connections_open",
            "gauge",
            "Open WebSocket connections.",
            self.open,
        );
        metric(
            "wsloop_connections_accepted_total",
            "counter",
            "TCP connections accepted.",
            self.accepted,
        );
        metric(
            "wsloop_handshake_failures_total",
            "counter",
            "Upgrade requests refused or timed out.",
            self.handshake_failures,
        );
        metric(
            "wsloop_tls_handshake_failures_total",
            "counter",
            "TLS handshakes that failed.",
            self.tls_handshake_failures,
        );
        metric(
            "wsloop_http_requests_total",
            "counter",
            "Plain HTTP requests served.",
            self.http_requests,
        );
        metric(
            "wsloop_messages_received_total",
            "counter",
            "Messages received.",
            self.messages_in,
        );
        metric(
            "wsloop_messages_sent_total",
            "counter",
            "Messages queued for sending, per recipient.",
            self.messages_out,
        );
        metric(
            "wsloop_bytes_received_total",
            "counter",
            "Bytes read from sockets.",
            self.bytes_in,
        );
        metric(
            "wsloop_bytes_sent_total",
            "counter",
            "Bytes written to sockets.",
            self.bytes_out,
        );
        metric(
            "wsloop_dropped_backpressure_total",
            "counter",
            "Messages not delivered because a queue was over its cap.",
            self.dropped_backpressure,
        );
        metric(
            "wsloop_handler_panics_total",
            "counter",
            "Handler callbacks that panicked.",
            self.handler_panics,
        );
        let _ = writeln!(
            out,
            "# HELP wsloop_connections_closed_total WebSocket connections closed, by close code."
        );
        let _ = writeln!(out, "# TYPE wsloop_connections_closed_total counter");
        for (code, count) in &self.closed_by_code {
            let _ = writeln!(
                out,
                "wsloop_connections_closed_total{{code=\"{code}\"}} {count}"
            );
        }
        out
    }
}
