//! Notification receivers on 127.0.0.1: a Slack incoming webhook (`/slack/...`), a Discord
//! webhook (`/discord/...`), an ntfy topic (`/ntfy/<topic>`) and a generic webhook (any other
//! path). Each checks what the real one checks and answers as it does, and records what it got.
//!
//! - Slack ("Sending messages using incoming webhooks", api.slack.com): a JSON body with a
//!   non-empty `text` (or `blocks`/`attachments`); `200 ok` as text; a body that is not JSON is
//!   `400 invalid_payload`, one with nothing to show `400 no_text`.
//! - Discord (discord.com developers, "Execute Webhook"): `content` (at most 2,000 characters)
//!   or `embeds`; `204 No Content` without `?wait=true`; an empty message is `400 {"message":
//!   "Cannot send an empty message", "code": 50006}`, a longer one `400 {"content": ["Must be
//!   2000 or fewer in length."]}`.
//! - ntfy (binwiederhier/ntfy `server/server.go` `handlePublish`): the body is the message, the
//!   `Title`/`Priority`/`Tags` headers (or their `X-` forms) set the rest; the answer is the
//!   message as JSON; a protected topic without a token is `403 {"code": 40301, "http": 403,
//!   "error": "forbidden"}`, with a wrong one `401 {"code": 40101, ...}`; `Priority` must be
//!   1-5 or `min`/`low`/`default`/`high`/`max`/`urgent` (`400`, code 40007).
//!
//! Left out: Slack's and Discord's rate limits (a test injects a 429 with `Retry-After`
//! instead), attachments' rendering, ntfy's caching, attachments and e-mail.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde_json::json;

/// What a receiver got.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Received {
    pub path: String,
    /// Header names in lower case, with their values.
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Received {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_default()
    }
}

/// Answers to give instead of the real one, in order: (status, `Retry-After` seconds).
type Answers = VecDeque<(u16, Option<u64>)>;

#[derive(Default)]
struct Inner {
    received: Vec<Received>,
    /// Path prefix -> answers to give instead of the real one, in order (status, Retry-After).
    faults: Vec<(String, Answers)>,
    /// Path prefixes that never answer (a receiver that is down but accepts connections).
    hang: Vec<String>,
    /// ntfy topics that need this bearer token.
    ntfy_tokens: Vec<(String, String)>,
    /// Requests answered with a fault or left hanging (not recorded as received).
    refused: usize,
}

/// The receivers.
#[derive(Clone)]
pub struct ReceiverSim {
    inner: Arc<Mutex<Inner>>,
    url: String,
}

impl ReceiverSim {
    pub async fn start() -> std::io::Result<ReceiverSim> {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0)).await?;
        let url = format!("http://{}", listener.local_addr()?);
        let inner: Arc<Mutex<Inner>> = Arc::default();
        let app = axum::Router::new()
            .fallback(handle)
            .with_state(inner.clone());
        tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, app).await {
                tracing::error!(error = %e, "the receiver simulator stopped");
            }
        });
        Ok(ReceiverSim { inner, url })
    }

    /// [`start`](Self::start) on a runtime of its own, stopped when the [`crate::Stopper`] drops.
    pub fn start_until_stopped() -> std::io::Result<(ReceiverSim, crate::Stopper)> {
        crate::start_until_stopped(1, ReceiverSim::start)
    }

    pub fn url(&self) -> String {
        self.url.clone()
    }

    fn data(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Everything received (and accepted) so far, in order.
    pub fn received(&self) -> Vec<Received> {
        self.data().received.clone()
    }

    /// What was received under `prefix`.
    pub fn received_at(&self, prefix: &str) -> Vec<Received> {
        self.received()
            .into_iter()
            .filter(|r| r.path.starts_with(prefix))
            .collect()
    }

    /// How many requests got a fault or hung.
    pub fn refused(&self) -> usize {
        self.data().refused
    }

    /// The next `times` requests under `prefix` are answered `status` (with `Retry-After`).
    pub fn fail(&self, prefix: &str, status: u16, retry_after: Option<u64>, times: usize) {
        let mut d = self.data();
        let answers = std::iter::repeat_n((status, retry_after), times).collect();
        d.faults.push((prefix.to_string(), answers));
    }

    /// Requests under `prefix` are accepted and never answered.
    pub fn hang(&self, prefix: &str) {
        self.data().hang.push(prefix.to_string());
    }

    /// The ntfy topic `topic` needs `token`.
    pub fn protect_ntfy(&self, topic: &str, token: &str) {
        self.data()
            .ntfy_tokens
            .push((topic.to_string(), token.to_string()));
    }
}

fn err(status: StatusCode, body: serde_json::Value) -> Response {
    (status, axum::Json(body)).into_response()
}

async fn handle(
    State(inner): State<Arc<Mutex<Inner>>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let path = uri.path().to_string();
    let hangs = {
        let mut d = inner.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((_, answers)) = d
            .faults
            .iter_mut()
            .find(|(p, a)| path.starts_with(p.as_str()) && !a.is_empty())
            && let Some((status, after)) = answers.pop_front()
        {
            d.refused += 1;
            let mut r = (
                StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
                "fault",
            )
                .into_response();
            if let Some(a) = after
                && let Ok(v) = a.to_string().parse()
            {
                r.headers_mut().insert("retry-after", v);
            }
            return r;
        }
        let hangs = d.hang.iter().any(|p| path.starts_with(p.as_str()));
        if hangs {
            d.refused += 1;
        }
        hangs
    };
    if hangs {
        std::future::pending::<()>().await;
    }
    if method != Method::POST && method != Method::PUT {
        return (StatusCode::METHOD_NOT_ALLOWED, "").into_response();
    }
    let text = String::from_utf8_lossy(&body).into_owned();
    let record = |inner: &Arc<Mutex<Inner>>| {
        let mut d = inner.lock().unwrap_or_else(|e| e.into_inner());
        d.received.push(Received {
            path: path.clone(),
            headers: headers
                .iter()
                .map(|(k, v)| {
                    (
                        k.as_str().to_string(),
                        v.to_str().unwrap_or_default().to_string(),
                    )
                })
                .collect(),
            body: text.clone(),
        });
    };
    if path.starts_with("/slack/") {
        let Ok(v) = serde_json::from_str::<serde_json::Value>(&text) else {
            return (StatusCode::BAD_REQUEST, "invalid_payload").into_response();
        };
        let shows = v["text"].as_str().is_some_and(|t| !t.trim().is_empty())
            || v["blocks"].as_array().is_some_and(|b| !b.is_empty())
            || v["attachments"].as_array().is_some_and(|a| !a.is_empty());
        if !shows {
            return (StatusCode::BAD_REQUEST, "no_text").into_response();
        }
        record(&inner);
        return (StatusCode::OK, "ok").into_response();
    }
    if path.starts_with("/discord/") {
        let Ok(v) = serde_json::from_str::<serde_json::Value>(&text) else {
            return err(
                StatusCode::BAD_REQUEST,
                json!({"message": "Cannot send an empty message", "code": 50006}),
            );
        };
        let content = v["content"].as_str().unwrap_or_default();
        if content.chars().count() > 2000 {
            return err(
                StatusCode::BAD_REQUEST,
                json!({"content": ["Must be 2000 or fewer in length."]}),
            );
        }
        if content.trim().is_empty() && v["embeds"].as_array().is_none_or(|e| e.is_empty()) {
            return err(
                StatusCode::BAD_REQUEST,
                json!({"message": "Cannot send an empty message", "code": 50006}),
            );
        }
        record(&inner);
        return StatusCode::NO_CONTENT.into_response();
    }
    if let Some(topic) = path.strip_prefix("/ntfy/") {
        let need = {
            let d = inner.lock().unwrap_or_else(|e| e.into_inner());
            d.ntfy_tokens
                .iter()
                .find(|(t, _)| t == topic)
                .map(|(_, k)| k.clone())
        };
        if let Some(token) = need {
            match headers.get("authorization").and_then(|v| v.to_str().ok()) {
                None => {
                    return err(
                        StatusCode::FORBIDDEN,
                        json!({"code": 40301, "http": 403, "error": "forbidden"}),
                    );
                }
                Some(a) if a != format!("Bearer {token}") => {
                    return err(
                        StatusCode::UNAUTHORIZED,
                        json!({"code": 40101, "http": 401, "error": "unauthorized"}),
                    );
                }
                Some(_) => {}
            }
        }
        let header = |n: &str| {
            headers
                .get(n)
                .or_else(|| headers.get(format!("x-{n}").as_str()))
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        };
        let priority = header("priority");
        if let Some(p) = &priority
            && ![
                "1", "2", "3", "4", "5", "min", "low", "default", "high", "max", "urgent",
            ]
            .contains(&p.as_str())
        {
            return err(
                StatusCode::BAD_REQUEST,
                json!({"code": 40007, "http": 400, "error": "invalid request: priority invalid"}),
            );
        }
        record(&inner);
        return axum::Json(json!({
            "id": "sim0000000001",
            "time": chrono::Utc::now().timestamp(),
            "event": "message",
            "topic": topic,
            "title": header("title"),
            "message": text,
        }))
        .into_response();
    }
    record(&inner);
    StatusCode::OK.into_response()
}
