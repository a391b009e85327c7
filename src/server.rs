//! The controller's HTTP port: `/healthz`, `/readyz` (ready once the first reconcile ran),
//! `/metrics` (Prometheus text), and `/`, a small server-rendered status page.

use std::fmt::Write as _;
use std::sync::Arc;

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use crate::reconcile::Shared;

pub fn router(shared: Arc<Shared>) -> axum::Router {
    axum::Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/", get(page))
        .with_state(shared)
}

async fn readyz(State(s): State<Arc<Shared>>) -> Response {
    if s.status().ready {
        (StatusCode::OK, "ready").into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "the first reconcile has not run yet",
        )
            .into_response()
    }
}

async fn metrics(State(s): State<Arc<Shared>>) -> Response {
    let mut r = s.metrics.encode().into_response();
    if let Ok(v) = "application/openmetrics-text; version=1.0.0; charset=utf-8".parse() {
        r.headers_mut().insert(header::CONTENT_TYPE, v);
    }
    r
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

async fn page(State(s): State<Arc<Shared>>) -> Response {
    let st = s.status().clone();
    let mut h = String::from(
        "<!doctype html><html><head><meta charset=utf-8><title>upkeep</title><style>body{font-family:sans-serif;margin:2em}td,th{padding:.2em .8em;text-align:left}</style></head><body><h1>upkeep</h1>",
    );
    let _ = write!(
        h,
        "<p>Last reconcile: {}</p>",
        st.last_reconcile.map_or("not yet".to_string(), |t| t
            .format("%Y-%m-%d %H:%M:%S UTC")
            .to_string())
    );
    if !st.errors.is_empty() {
        let _ = write!(h, "<h2>Errors</h2><ul>");
        for e in &st.errors {
            let _ = write!(h, "<li>{}</li>", esc(e));
        }
        h.push_str("</ul>");
    }
    h.push_str("<h2>Components</h2><table><tr><th>Component</th><th>Desired</th><th>Next</th><th>Newest</th></tr>");
    for c in &st.components {
        let _ = write!(
            h,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            esc(&c.name),
            esc(&c.current),
            esc(c.next.as_ref().map_or("-", |n| n.version.as_str())),
            esc(c.newest.as_deref().unwrap_or("-"))
        );
    }
    h.push_str("</table><h2>Open pull requests</h2><ul>");
    for (n, t) in &st.open_prs {
        let _ = write!(h, "<li>#{n} {}</li>", esc(t));
    }
    h.push_str(
        "</ul><h2>Rollouts</h2><table><tr><th>Rollout</th><th>Phase</th><th>Message</th></tr>",
    );
    for (n, p, m) in &st.rollouts {
        let _ = write!(
            h,
            "<tr><td>{}</td><td>{}</td><td>{}</td></tr>",
            esc(n),
            esc(p),
            esc(m)
        );
    }
    h.push_str("</table></body></html>");
    let mut r = h.into_response();
    if let Ok(v) = "text/html; charset=utf-8".parse() {
        r.headers_mut().insert(header::CONTENT_TYPE, v);
    }
    r
}
