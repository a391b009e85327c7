//! The controller's HTTP port: `/healthz`, `/readyz` (ready once the lease state is known and,
//! for the leader, the first reconcile ran), `/metrics` (Prometheus text), `/webhook` (GitHub
//! deliveries, see [`crate::webhook`]) and `/`, a small server-rendered status page.

use std::fmt::Write as _;
use std::sync::Arc;
use std::time::Duration;

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
        .route("/api/status", get(api_status))
        .with_state(shared)
}

/// What the port tolerates from whoever can reach it.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// A connection must send a request's headers within this (also when idle between
    /// requests); otherwise it is closed.
    pub header_timeout: Duration,
    /// A request's body must arrive within this; otherwise 408.
    pub body_timeout: Duration,
    /// Connections served at once; more are closed on arrival until one ends.
    pub max_connections: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            header_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(30),
            max_connections: 128,
        }
    }
}

/// Serve `app` on `listener` within `limits`, until the task is dropped. Each connection is
/// HTTP/1.1 with a header read timeout; a request body that drips is cut off by the handler
/// (see [`BodyTimeout`]).
pub async fn serve(listener: tokio::net::TcpListener, app: axum::Router, limits: Limits) {
    use hyper_util::rt::{TokioIo, TokioTimer};
    let app = app.layer(axum::Extension(BodyTimeout(limits.body_timeout)));
    let slots = Arc::new(tokio::sync::Semaphore::new(limits.max_connections.max(1)));
    let mut full_logged = false;
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(x) => x,
            Err(e) => {
                // Out of file descriptors and the like: wait instead of spinning.
                tracing::warn!(error = %e, "cannot accept a connection");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            if !full_logged {
                tracing::warn!(%peer, max = limits.max_connections, "too many connections: closing new ones until some end");
                full_logged = true;
            }
            drop(stream);
            continue;
        };
        full_logged = false;
        let svc = hyper_util::service::TowerToHyperService::new(app.clone());
        tokio::spawn(async move {
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(limits.header_timeout)
                .serve_connection(TokioIo::new(stream), svc);
            if let Err(e) = conn.await {
                tracing::debug!(%peer, error = %e, "connection ended");
            }
            drop(slot);
        });
    }
}

/// How long a handler waits for a request body (set by [`serve`]; none in a bare router).
#[derive(Debug, Clone, Copy)]
pub struct BodyTimeout(pub Duration);

async fn readyz(State(s): State<Arc<Shared>>) -> Response {
    match s.ready() {
        Ok(()) => (StatusCode::OK, "ready").into_response(),
        Err(why) => (StatusCode::SERVICE_UNAVAILABLE, why).into_response(),
    }
}

/// GitHub caps deliveries at 25 MB, but the events upkeep acts on are far smaller: a
/// `pull_request` payload is tens of KB (a body is at most 65,536 characters) and a `push` lists
/// at most 20 commits. Larger ones get 413, and the periodic cycle sees the change anyway.
pub const WEBHOOK_BODY_LIMIT: usize = 5 * 1024 * 1024;

/// `POST /webhook`: a GitHub delivery. 401 without a valid signature (logged without the
/// payload), 202 when it woke the loop, 200 when it was not for upkeep.
async fn webhook(
    State(s): State<Arc<Shared>>,
    timeout: Option<axum::Extension<BodyTimeout>>,
    headers: HeaderMap,
    body: axum::body::Body,
) -> Response {
    let Some(cfg) = &s.webhook else {
        return (
            StatusCode::NOT_FOUND,
            "webhooks are off: give upkeep a secret (UPKEEP_WEBHOOK_SECRET or --webhook-secret-file)\n",
        )
            .into_response();
    };
    let wait = timeout.map_or(Limits::default().body_timeout, |t| t.0.0);
    let body =
        match tokio::time::timeout(wait, axum::body::to_bytes(body, WEBHOOK_BODY_LIMIT)).await {
            Ok(Ok(b)) => b,
            Ok(Err(_)) => {
                return (
                    StatusCode::PAYLOAD_TOO_LARGE,
                    format!("the delivery is over {} MiB\n", WEBHOOK_BODY_LIMIT >> 20),
                )
                    .into_response();
            }
            Err(_) => {
                tracing::warn!(?wait, "a webhook body did not arrive in time");
                return (
                    StatusCode::REQUEST_TIMEOUT,
                    "the body did not arrive in time\n",
                )
                    .into_response();
            }
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

/// The status page: what an operator opens first.
async fn page(State(s): State<Arc<Shared>>) -> Response {
    let st = s.status().clone();
    let mut r = render_page(&st).into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    r
}

/// The same facts as the page, as JSON.
async fn api_status(State(s): State<Arc<Shared>>) -> Response {
    let st = s.status().clone();
    let mut r = serde_json::to_string_pretty(&st)
        .unwrap_or_default()
        .into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r
}

const STYLE: &str = "body{font-family:system-ui,sans-serif;margin:1.5em 2em;color:#222}\
h1{margin-bottom:.2em}h2{margin-top:1.4em;border-bottom:1px solid #ddd}\
table{border-collapse:collapse}td,th{padding:.25em .8em;text-align:left;vertical-align:top}\
tr:nth-child(even){background:#f6f6f6}.ok{color:#176f2c}.warn{color:#9a6700}.bad{color:#b3261e;font-weight:600}\
.box{border:2px solid #b3261e;background:#fdecea;padding:.6em 1em;margin:.8em 0}\
code{background:#eee;padding:0 .3em}.muted{color:#666}";

/// The CSS class of a rollout phase.
fn phase_class(phase: crate::rollout::Phase) -> &'static str {
    use crate::rollout::Phase;
    match phase {
        Phase::Succeeded => "ok",
        Phase::Failed | Phase::Reverted | Phase::Reverting | Phase::RequiresAttention => "bad",
        _ => "warn",
    }
}

/// The status page from the status (pure: tested without a server). Reloads itself every 30 s.
pub fn render_page(st: &crate::reconcile::Status) -> String {
    use crate::report::Status as S;
    let mut h = format!(
        "<!doctype html><html><head><meta charset=utf-8><meta http-equiv=refresh content=30><title>upkeep</title><style>{STYLE}</style></head><body><h1>upkeep</h1>"
    );
    let _ = write!(
        h,
        "<p class=muted>Last reconcile: {} &middot; leader: {} &middot; this page reloads every 30 s &middot; <a href=\"/api/status\">JSON</a> &middot; <a href=\"/metrics\">metrics</a></p>",
        st.last_reconcile.map_or("not yet".to_string(), |t| t
            .format("%Y-%m-%d %H:%M:%S UTC")
            .to_string()),
        esc(st.leader.as_deref().unwrap_or("unknown"))
    );
    if !st.errors.is_empty() {
        h.push_str("<div class=box><b>Errors</b><ul>");
        for e in &st.errors {
            let _ = write!(h, "<li>{}</li>", esc(e));
        }
        h.push_str("</ul></div>");
    }
    let failed: Vec<_> = st
        .rollouts
        .iter()
        .filter(|r| crate::operate::is_failure(r.status.phase))
        .collect();
    for r in &failed {
        let _ = write!(
            h,
            "<div class=box><b>{} is {:?}</b>: {}<br>What to do: follow the runbook (docs/runbook.md in upkeep's repository){}; once git and the cluster agree, <code>upkeep acknowledge {}</code>.</div>",
            esc(&r.name),
            r.status.phase,
            esc(&r.status.message),
            r.status
                .revert
                .as_deref()
                .map(|v| format!("; the revert: {}", esc(v)))
                .unwrap_or_default(),
            esc(&r.name)
        );
    }
    for (what, why) in &st.suspended {
        let _ = write!(
            h,
            "<div class=box><b>{} is suspended</b> by {}: nothing of it is applied until <code>upkeep resume {}</code>.</div>",
            esc(what),
            esc(why),
            if what == "(everything)" {
                "--all".to_string()
            } else {
                esc(what)
            }
        );
    }
    h.push_str("<h2>Components</h2><table><tr><th>Component</th><th>Runs</th><th>Git asks</th><th>Health</th><th>Next</th><th>When</th><th>Pull request</th></tr>");
    for c in &st.components {
        let window = st
            .schedule
            .iter()
            .find(|(n, _)| *n == c.name)
            .map_or("-", |(_, w)| w.as_str());
        let runs = st.running.get(&c.name).map_or("-", String::as_str);
        let asks = st.desired.get(&c.name).unwrap_or(&c.current);
        let same = |a: &str, b: &str| a.trim_start_matches('v') == b.trim_start_matches('v');
        let (class, health) = match (&c.status, st.blocked.get(&c.name)) {
            (_, Some(why)) => ("bad", format!("cannot follow git: {why}")),
            (S::Failed, _) => (
                "bad",
                crate::report::explain(c).unwrap_or_else(|| "source failed".into()),
            ),
            _ if runs != "-" && !same(runs, asks) => {
                ("warn", "rolling out what git asks".to_string())
            }
            _ if c.next.as_ref().is_some_and(|n| !same(&n.version, asks)) => {
                ("warn", "update available".to_string())
            }
            (S::UpToDate | S::UpdateAvailable, _) => ("ok", "up to date".to_string()),
            _ => (
                "muted",
                c.reason.as_ref().map_or("held".to_string(), |r| {
                    crate::report::reason_text(r, c.time_zone.as_deref())
                }),
            ),
        };
        let pr = st
            .open_prs
            .iter()
            .find(|p| p.title.starts_with(&format!("{}: ", c.name)))
            .map_or("-".to_string(), |p| {
                format!("<a href=\"{}\">#{}</a>", esc(&p.url), p.number)
            });
        let _ = write!(
            h,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td class={class}>{}</td><td>{}</td><td>{}</td><td>{pr}</td></tr>",
            esc(&c.name),
            esc(runs),
            esc(asks),
            esc(&health),
            esc(c
                .next
                .as_ref()
                .map(|n| n.version.as_str())
                .filter(|n| !same(n, asks) && !same(n, runs))
                .unwrap_or("-")),
            esc(window)
        );
    }
    h.push_str("</table>");
    if !st.nodes.is_empty() {
        h.push_str("<h2>Nodes</h2><table><tr><th>Node</th><th>Role</th><th>k3s</th><th>Ready</th><th>Schedulable</th></tr>");
        for n in &st.nodes {
            let _ = write!(
                h,
                "<tr><td>{}</td><td>{}</td><td>{}</td><td class={}>{}</td><td>{}</td></tr>",
                esc(&n.name),
                if n.server { "server" } else { "agent" },
                esc(&n.version),
                if n.ready { "ok" } else { "bad" },
                if n.ready { "Ready" } else { "NotReady" },
                if n.unschedulable { "cordoned" } else { "yes" }
            );
        }
        h.push_str("</table>");
    }
    h.push_str("<h2>Rollouts</h2>");
    if st.rollouts.is_empty() {
        h.push_str("<p class=muted>None in flight.</p>");
    } else {
        h.push_str("<table><tr><th>Rollout</th><th>Phase</th><th>Since</th><th>Hop</th><th>Nodes</th><th>Message</th></tr>");
        for r in &st.rollouts {
            let nodes = r
                .status
                .nodes
                .iter()
                .map(|n| {
                    format!(
                        "{} {}{}",
                        esc(&n.name),
                        esc(&n.version),
                        if n.ready { "" } else { " (NotReady)" }
                    )
                })
                .collect::<Vec<_>>()
                .join("<br>");
            let _ = write!(
                h,
                "<tr><td>{}</td><td class={}>{:?}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                esc(&r.name),
                phase_class(r.status.phase),
                r.status.phase,
                r.status.phase_since.map_or("-".to_string(), |t| t
                    .format("%Y-%m-%d %H:%M UTC")
                    .to_string()),
                r.status.hop + 1,
                if nodes.is_empty() {
                    "-".to_string()
                } else {
                    nodes
                },
                esc(&r.status.message)
            );
        }
        h.push_str("</table>");
    }
    if !st.history.is_empty() {
        h.push_str("<h2>Recent rollouts</h2><table><tr><th>Rollout</th><th>From</th><th>To</th><th>Outcome</th><th>Started</th><th>Ended</th><th>Took</th></tr>");
        let fmt = |t: Option<chrono::DateTime<chrono::Utc>>| {
            t.map_or("-".to_string(), |t| {
                t.format("%Y-%m-%d %H:%M UTC").to_string()
            })
        };
        for e in &st.history {
            let took = match (e.started_at, e.ended_at) {
                (Some(a), Some(b)) if b >= a => {
                    let m = (b - a).num_minutes();
                    if m >= 60 {
                        format!("{}h{:02}m", m / 60, m % 60)
                    } else {
                        format!("{m}m")
                    }
                }
                _ => "-".to_string(),
            };
            let _ = write!(
                h,
                "<tr><td>{}</td><td>{}</td><td>{}</td><td class={}>{:?}{}</td><td>{}</td><td>{}</td><td>{took}</td></tr>",
                esc(&e.name),
                esc(&e.from),
                esc(&e.to),
                phase_class(e.phase),
                e.phase,
                e.acknowledged
                    .as_deref()
                    .map(|a| format!(" (acknowledged by {})", esc(a)))
                    .unwrap_or_default(),
                fmt(e.started_at),
                fmt(e.ended_at)
            );
        }
        h.push_str("</table>");
    }
    h.push_str("<h2>Open pull requests</h2>");
    if st.open_prs.is_empty() {
        h.push_str("<p class=muted>None.</p>");
    } else {
        h.push_str("<ul>");
        for p in &st.open_prs {
            let _ = write!(
                h,
                "<li><a href=\"{}\">#{}</a> {}</li>",
                esc(&p.url),
                p.number,
                esc(&p.title)
            );
        }
        h.push_str("</ul>");
    }
    h.push_str("</body></html>");
    h
}

/// The port's limits over real TCP on 127.0.0.1. Each wait is bounded; a limit that did not
/// hold shows as a read that never ends (the bound), not as a slow test.
#[cfg(test)]
mod limits {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpStream;

    const BOUND: Duration = Duration::from_secs(10);

    async fn start(limits: Limits) -> std::net::SocketAddr {
        let shared = Arc::new(Shared::new(
            crate::telemetry::Metrics::new(),
            Some(crate::reconcile::WebhookConfig {
                secret: b"secret".to_vec(),
                base: "main".into(),
            }),
            Arc::new(crate::leader::Leadership::always()),
        ));
        let l = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = l.local_addr().expect("addr");
        tokio::spawn(serve(l, router(shared), limits));
        addr
    }

    /// What the peer sends until it closes; `None` when it is still open after [`BOUND`].
    async fn until_closed(s: &mut TcpStream) -> Option<String> {
        let mut buf = Vec::new();
        match tokio::time::timeout(BOUND, s.read_to_end(&mut buf)).await {
            Ok(_) => Some(String::from_utf8_lossy(&buf).into_owned()),
            Err(_) => None,
        }
    }

    fn short() -> Limits {
        Limits {
            header_timeout: Duration::from_millis(300),
            body_timeout: Duration::from_millis(300),
            max_connections: 2,
        }
    }

    #[tokio::test]
    async fn a_connection_that_sends_nothing_or_half_a_header_is_closed() {
        let addr = start(short()).await;
        let mut idle = TcpStream::connect(addr).await.expect("connect");
        assert!(
            until_closed(&mut idle).await.is_some(),
            "idle connection left open"
        );
        let mut slow = TcpStream::connect(addr).await.expect("connect");
        slow.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
            .await
            .expect("write");
        assert!(
            until_closed(&mut slow).await.is_some(),
            "half a header left open"
        );
    }

    #[tokio::test]
    async fn a_dripping_body_gets_408_and_a_large_one_413() {
        let addr = start(short()).await;
        let mut drip = TcpStream::connect(addr).await.expect("connect");
        drip.write_all(
            b"POST /webhook HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n{\"ref\"",
        )
        .await
        .expect("write");
        let answer = until_closed(&mut drip).await.expect("answered and closed");
        assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");

        let mut big = TcpStream::connect(addr).await.expect("connect");
        let n = WEBHOOK_BODY_LIMIT + 1024;
        let head = format!(
            "POST /webhook HTTP/1.1\r\nHost: x\r\nContent-Length: {n}\r\nConnection: close\r\n\r\n"
        );
        big.write_all(head.as_bytes()).await.expect("write");
        // The server may stop reading once it has refused: a failed write is fine.
        let _ = big.write_all(&vec![b'x'; n]).await;
        let answer = until_closed(&mut big).await.expect("answered and closed");
        assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    }

    #[tokio::test]
    async fn connections_past_the_limit_are_closed_until_one_ends() {
        let addr = start(Limits {
            header_timeout: Duration::from_secs(30),
            ..short()
        })
        .await;
        let first = TcpStream::connect(addr).await.expect("connect");
        let _second = TcpStream::connect(addr).await.expect("connect");
        // Let the server take both before the third arrives.
        tokio::time::sleep(Duration::from_millis(100)).await;
        let mut third = TcpStream::connect(addr).await.expect("connect");
        let _ = third
            .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            .await;
        let refused = until_closed(&mut third).await.expect("closed at once");
        assert!(refused.is_empty(), "{refused}");
        drop(first);
        let mut ok = String::new();
        for _ in 0..50 {
            let mut again = TcpStream::connect(addr).await.expect("connect");
            let _ = again
                .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                .await;
            ok = until_closed(&mut again).await.unwrap_or_default();
            if !ok.is_empty() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(ok.starts_with("HTTP/1.1 200"), "{ok}");
    }
}
