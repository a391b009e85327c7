//! The controller's HTTP port: `/healthz`, `/readyz` (ready once the lease state is known and,
//! for the leader, the first reconcile ran), `/metrics` (Prometheus text), `/webhook` (GitHub
//! deliveries, see [`crate::webhook`]) and `/`, a small server-rendered status page.

use std::fmt::Write as _;
use std::sync::Arc;

use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use crate::reconcile::Shared;

pub fn router(shared: Arc<Shared>) -> axum::Router {
    axum::Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route(
            "/webhook",
            axum::routing::post(webhook)
                .layer(axum::extract::DefaultBodyLimit::max(WEBHOOK_BODY_LIMIT)),
        )
        .route("/", get(page))
        .with_state(shared)
}

async fn readyz(State(s): State<Arc<Shared>>) -> Response {
    match s.ready() {
        Ok(()) => (StatusCode::OK, "ready").into_response(),
        Err(why) => (StatusCode::SERVICE_UNAVAILABLE, why).into_response(),
    }
}

/// GitHub's deliveries are at most 25 MB; upkeep reads only `ref`, `action` and the base branch.
const WEBHOOK_BODY_LIMIT: usize = 25 * 1024 * 1024;

/// `POST /webhook`: a GitHub delivery. 401 without a valid signature (logged without the
/// payload), 202 when it woke the loop, 200 when it was not for upkeep.
async fn webhook(
    State(s): State<Arc<Shared>>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let Some(cfg) = &s.webhook else {
        return (
            StatusCode::NOT_FOUND,
            "webhooks are off: give upkeep a secret (UPKEEP_WEBHOOK_SECRET or --webhook-secret-file)\n",
        )
            .into_response();
    };
    let h = |n: &str| headers.get(n).and_then(|v| v.to_str().ok());
    // Headers come from whoever can reach the port: only a short, plain form reaches the logs.
    let plain = |v: &str| -> String {
        v.chars()
            .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
            .take(64)
            .collect()
    };
    let delivery = plain(h("x-github-delivery").unwrap_or("-"));
    let event = plain(h("x-github-event").unwrap_or(""));
    if let Err(e) = crate::webhook::verify(&cfg.secret, &body, h("x-hub-signature-256")) {
        tracing::warn!(%delivery, %event, bytes = body.len(), error = %e, "refused a webhook delivery");
        s.metrics
            .webhook_deliveries
            .get_or_create(&crate::telemetry::StatusLabel {
                status: "refused".into(),
            })
            .inc();
        return (StatusCode::UNAUTHORIZED, format!("{e}\n")).into_response();
    }
    let (code, outcome) = match crate::webhook::classify(&event, &body, &cfg.base) {
        Ok(crate::webhook::Trigger::Apply) => {
            s.poke(false);
            (StatusCode::ACCEPTED, "reconciling now".to_string())
        }
        Ok(crate::webhook::Trigger::Propose) => {
            s.poke(true);
            (StatusCode::ACCEPTED, "reconciling now".to_string())
        }
        Ok(crate::webhook::Trigger::Ignore(what)) => (StatusCode::OK, format!("ignored: {what}")),
        Err(e) => (StatusCode::BAD_REQUEST, e.to_string()),
    };
    tracing::info!(%delivery, %event, status = code.as_u16(), %outcome, "webhook delivery");
    s.metrics
        .webhook_deliveries
        .get_or_create(&crate::telemetry::StatusLabel {
            status: if code.is_success() {
                "accepted"
            } else {
                "bad_request"
            }
            .into(),
        })
        .inc();
    (code, format!("{outcome}\n")).into_response()
}

async fn metrics(State(s): State<Arc<Shared>>, headers: HeaderMap) -> Response {
    let accept = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok());
    let (body, content_type) = s.metrics.negotiate(accept);
    let mut r = body.into_response();
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
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
    let _ = write!(
        h,
        "<p>Leader: {}</p>",
        esc(st.leader.as_deref().unwrap_or("unknown"))
    );
    h.push_str("<h2>Components</h2><table><tr><th>Component</th><th>Desired</th><th>Next</th><th>Newest</th><th>Window</th></tr>");
    for c in &st.components {
        let window = st
            .schedule
            .iter()
            .find(|(n, _)| *n == c.name)
            .map_or("-", |(_, w)| w.as_str());
        let _ = write!(
            h,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            esc(&c.name),
            esc(&c.current),
            esc(c.next.as_ref().map_or("-", |n| n.version.as_str())),
            esc(c.newest.as_deref().unwrap_or("-")),
            esc(window)
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
