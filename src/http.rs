//! Plain HTTP on the WebSocket port: the built-in routes.

use crate::handler::Response;
use crate::server::Metrics;

/// Serves `GET /healthz` and `GET /metrics`; anything else is `404`.
/// Applications add routes with [`Handler::on_http`](crate::Handler::on_http),
/// which is consulted first.
pub(crate) fn builtin_route(path: &str, metrics: &Metrics) -> Response {
    match path {
        "/healthz" => Response::new(200, "ok\n"),
        "/metrics" => Response::new(200, metrics.to_prometheus())
            .content_type("text/plain; version=0.0.4; charset=utf-8"),
        _ => Response::new(404, "not found\n"),
    }
}
