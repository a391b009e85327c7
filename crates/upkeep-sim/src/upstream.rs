//! The upstream simulator: what upkeep's sources read, served on 127.0.0.1.
//!
//! - `GET /repos/{owner}/{repo}/releases?per_page=&page=`: GitHub's release list, in the shape of
//!   GitHub's REST API description (tests validate it against the OpenAPI schema), newest first,
//!   with `Link` pagination, a strong `ETag` per page and `304 Not Modified` for a matching
//!   `If-None-Match` (not counted against the rate limit, as on GitHub), and `x-ratelimit-*`
//!   headers.
//! - `GET /v1-release/channels`: a k3s channel server's collection; `GET
//!   /v1-release/channels/{name}` redirects to the release like the real one.
//! - `GET /helm/{name}/index.yaml`: a Helm repository index.
//!
//! Faults ([`FaultRule`]) are scripted per path; counters tell how many requests came in, how many
//! were answered 304 and how many body bytes went out (also at `GET /_sim/counters`, for a client
//! in another process).

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use chrono::{DateTime, Utc};
use serde_json::{Value, json};

use super::{Fault, FaultRule, fnv1a};

/// One release in the simulator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SimRelease {
    pub tag: String,
    pub published_at: Option<DateTime<Utc>>,
    pub prerelease: bool,
    pub draft: bool,
    pub body: Option<String>,
}

impl SimRelease {
    pub fn new(tag: &str, published_at: Option<DateTime<Utc>>) -> SimRelease {
        SimRelease {
            tag: tag.to_string(),
            published_at,
            prerelease: tag.contains("-rc") || tag.contains("-alpha") || tag.contains("-beta"),
            draft: false,
            body: Some(format!("## {tag}\n\nRelease notes of {tag}.")),
        }
    }
}

/// Counters of what the simulator answered.
#[derive(Debug, Default)]
pub struct Counters {
    pub requests: AtomicU64,
    pub not_modified: AtomicU64,
    pub bytes_sent: AtomicU64,
    /// POST, PATCH, PUT and DELETE requests to the API (git pushes are not counted).
    pub writes: AtomicU64,
    /// Git fetches and clones over smart HTTP (ref advertisements for git-upload-pack).
    pub git_fetches: AtomicU64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CountersSnapshot {
    pub requests: u64,
    pub not_modified: u64,
    pub bytes_sent: u64,
    pub writes: u64,
    pub git_fetches: u64,
}

#[derive(Default)]
struct Data {
    /// `owner/repo` -> releases, newest first.
    repos: HashMap<String, Vec<SimRelease>>,
    channels: Vec<(String, String)>,
    /// Helm repository name -> index.yaml text.
    charts: HashMap<String, String>,
    faults: VecDeque<FaultRule>,
    /// Serialized pages with their ETags, by (repo, per_page, page); dropped when a repo changes.
    pages: HashMap<(String, usize, usize), (Bytes, String)>,
    /// Requests left in the primary rate limit (304s are free).
    remaining: u64,
    token: Option<String>,
    /// The token the forge (pull requests, issues, git) requires, if other than `token`.
    forge_token: Option<String>,
    /// When each recent content-creating request (POST, PATCH, PUT, DELETE) arrived.
    writes_at: VecDeque<std::time::Instant>,
    /// The secondary limit on those, per minute (GitHub's, unless a test lifts it).
    writes_per_minute: Option<usize>,
}

/// GitHub's secondary rate limit on content-creating requests: "no more than 80
/// content-generating requests per minute" (docs.github.com, "Rate limits for the REST API").
pub const CONTENT_WRITES_PER_MINUTE: usize = 80;

struct Inner {
    data: Mutex<Data>,
    counters: Counters,
    base: String,
    forge: Mutex<Option<super::github::Forge>>,
    /// The clock the forge stamps pull requests, issues, comments and merges with (real time
    /// unless a story gives its own: see [`UpstreamSim::set_clock`]).
    clock: Mutex<Option<super::clock::SimClock>>,
}

impl Inner {
    fn now(&self) -> chrono::DateTime<Utc> {
        self.clock
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .map_or_else(Utc::now, |c| c.now())
    }
}

/// A running simulator. Dropping it does not stop the server; it stops with its runtime.
#[derive(Clone)]
pub struct UpstreamSim {
    inner: Arc<Inner>,
    pub addr: SocketAddr,
}

const RATE_LIMIT: u64 = 5_000;

impl UpstreamSim {
    /// Bind 127.0.0.1 (`port` 0 picks a free one) and serve on the current tokio runtime.
    pub async fn start(port: u16) -> std::io::Result<UpstreamSim> {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
        let addr = listener.local_addr()?;
        let inner = Arc::new(Inner {
            data: Mutex::new(Data {
                remaining: RATE_LIMIT,
                ..Data::default()
            }),
            counters: Counters::default(),
            base: format!("http://{addr}"),
            forge: Mutex::new(None),
            clock: Mutex::new(None),
        });
        let app = axum::Router::new()
            .fallback(handle)
            .with_state(inner.clone());
        tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, app).await {
                tracing::error!(error = %e, "the upstream simulator stopped");
            }
        });
        Ok(UpstreamSim { inner, addr })
    }

    /// Stamp what the forge records (pull requests, issues, comments, merges) with `clock`, so
    /// that a story on a simulated clock sees its own time there too ("opened an hour ago").
    /// Rate-limit resets stay on real time: they are about the client's real waiting.
    pub fn set_clock(&self, clock: super::clock::SimClock) {
        *self.inner.clock.lock().unwrap_or_else(|e| e.into_inner()) = Some(clock);
    }

    /// The time the forge stamps things with.
    pub fn now(&self) -> chrono::DateTime<Utc> {
        self.inner.now()
    }

    /// Start on a runtime of its own in a background thread (for synchronous tests and tools).
    pub fn start_in_thread() -> std::io::Result<UpstreamSim> {
        super::start_in_thread(1, move || UpstreamSim::start(0))
    }

    /// [`start_in_thread`](Self::start_in_thread), stopped when the [`crate::Stopper`] drops.
    pub fn start_until_stopped() -> std::io::Result<(UpstreamSim, crate::Stopper)> {
        super::start_until_stopped(1, move || UpstreamSim::start(0))
    }

    pub fn url(&self) -> String {
        self.inner.base.clone()
    }

    fn data(&self) -> std::sync::MutexGuard<'_, Data> {
        self.inner.data.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Set a repository's releases (any order; served newest first by publication order given).
    pub fn set_releases(&self, repo: &str, mut releases: Vec<SimRelease>) {
        releases.reverse();
        let mut d = self.data();
        d.pages.retain(|k, _| k.0 != repo);
        d.repos.insert(repo.to_string(), releases);
    }

    /// Publish one more release on top.
    pub fn publish(&self, repo: &str, release: SimRelease) {
        let mut d = self.data();
        d.pages.retain(|k, _| k.0 != repo);
        d.repos
            .entry(repo.to_string())
            .or_default()
            .insert(0, release);
    }

    pub fn set_channels(&self, channels: &[(&str, &str)]) {
        self.data().channels = channels
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect();
    }

    pub fn set_chart_index(&self, name: &str, index_yaml: &str) {
        self.data()
            .charts
            .insert(name.to_string(), index_yaml.to_string());
    }

    /// Require `Authorization: Bearer <token>` (or `token <token>`) on GitHub paths.
    pub fn require_token(&self, token: &str) {
        self.data().token = Some(token.to_string());
    }

    /// Require this token on the forge's endpoints and git (the release API stays as
    /// [`UpstreamSim::require_token`] says: public repositories can be read anonymously).
    pub fn require_forge_token(&self, token: &str) {
        self.data().forge_token = Some(token.to_string());
    }

    pub fn set_rate_limit_remaining(&self, n: u64) {
        self.data().remaining = n;
    }

    /// Lift (or set) the limit of content-creating requests per minute. GitHub's limit is per
    /// user; a test that plays many users through one emulator (the property histories) lifts
    /// it rather than wait.
    pub fn set_content_writes_per_minute(&self, n: usize) {
        self.data().writes_per_minute = Some(n);
    }

    pub fn inject(&self, path_contains: &str, fault: Fault, times: usize) {
        self.data().faults.push_back(FaultRule {
            path_contains: path_contains.to_string(),
            method: None,
            fault,
            times,
        });
    }

    /// A fault on requests of `method` (GET, POST, PATCH, PUT, DELETE) whose path contains
    /// `path_contains`.
    pub fn inject_method(&self, method: &str, path_contains: &str, fault: Fault, times: usize) {
        self.data().faults.push_back(FaultRule {
            path_contains: path_contains.to_string(),
            method: Some(method.to_string()),
            fault,
            times,
        });
    }

    /// Serve a forge (pull requests, issues, git) whose bare repositories live under `root`.
    pub fn enable_forge(&self, root: &std::path::Path) {
        let mut f = self.inner.forge.lock().unwrap_or_else(|e| e.into_inner());
        if f.is_none() {
            *f = Some(super::github::Forge::new(root));
        }
    }

    /// Serve a forge that keeps its state under `root` across restarts.
    pub fn enable_persistent_forge(&self, root: &std::path::Path) -> std::io::Result<()> {
        let forge = super::github::Forge::persistent(root)?;
        *self.inner.forge.lock().unwrap_or_else(|e| e.into_inner()) = Some(forge);
        Ok(())
    }

    /// Work on the forge (enabled with [`UpstreamSim::enable_forge`]; `None` if it is not).
    pub fn with_forge<T>(&self, f: impl FnOnce(&mut super::github::Forge) -> T) -> Option<T> {
        let mut g = self.inner.forge.lock().unwrap_or_else(|e| e.into_inner());
        g.as_mut().map(f)
    }

    pub fn counters(&self) -> CountersSnapshot {
        let c = &self.inner.counters;
        CountersSnapshot {
            requests: c.requests.load(Ordering::Relaxed),
            not_modified: c.not_modified.load(Ordering::Relaxed),
            bytes_sent: c.bytes_sent.load(Ordering::Relaxed),
            writes: c.writes.load(Ordering::Relaxed),
            git_fetches: c.git_fetches.load(Ordering::Relaxed),
        }
    }

    /// The JSON of one release, as the API serves it (for schema tests).
    pub fn release_json(&self, repo: &str, id: usize, r: &SimRelease) -> Value {
        release_json(&self.inner.base, repo, id, r)
    }
}

fn take_fault(data: &mut Data, method: &str, path: &str) -> Option<Fault> {
    let i = data.faults.iter().position(|f| {
        // A trailing `$` anchors the match at the end of the path (`/issues$`: the list, not
        // `/issues/1/labels`).
        let hit = match f.path_contains.strip_suffix('$') {
            Some(end) => path.ends_with(end),
            None => path.contains(&f.path_contains),
        };
        f.times > 0
            && hit
            && f.method
                .as_ref()
                .is_none_or(|m| m.eq_ignore_ascii_case(method))
    })?;
    let rule = &mut data.faults[i];
    rule.times -= 1;
    let fault = rule.fault.clone();
    if rule.times == 0 {
        data.faults.remove(i);
    }
    Some(fault)
}

async fn handle(State(inner): State<Arc<Inner>>, req: Request) -> Response {
    let path = req.uri().path().to_string();
    if path == "/_sim/counters" {
        // The simulator's own control path: not counted, never faulted.
        let c = &inner.counters;
        return json_response(
            StatusCode::OK,
            &json!({
                "requests": c.requests.load(Ordering::Relaxed),
                "notModified": c.not_modified.load(Ordering::Relaxed),
                "bytesSent": c.bytes_sent.load(Ordering::Relaxed),
                "writes": c.writes.load(Ordering::Relaxed),
                "gitFetches": c.git_fetches.load(Ordering::Relaxed),
            }),
        );
    }
    inner.counters.requests.fetch_add(1, Ordering::Relaxed);
    let query = req.uri().query().unwrap_or("").to_string();
    let method = req.method().as_str().to_string();
    let headers = req.headers().clone();
    let body = match axum::body::to_bytes(req.into_body(), 64 * 1024 * 1024).await {
        Ok(b) => b,
        Err(_) => {
            return error(
                StatusCode::PAYLOAD_TOO_LARGE,
                "the request body is too large",
            );
        }
    };
    if path.starts_with("/git/") {
        if path.ends_with("/info/refs") && query.contains("service=git-upload-pack") {
            inner.counters.git_fetches.fetch_add(1, Ordering::Relaxed);
        }
        return git_http(&inner, &method, &path, &query, &headers, body).await;
    }
    // "Requests with no User-Agent header will be rejected" (docs.github.com, "Getting started
    // with the REST API"), with this plain-text 403.
    if !headers.contains_key(axum::http::header::USER_AGENT) {
        let mut r = Response::new(axum::body::Body::from(
            "Request forbidden by administrative rules. Please make sure your request has a User-Agent header (https://docs.github.com/en/rest/overview/resources-in-the-rest-api#user-agent-required). Check https://developer.github.com for other possible causes.\n",
        ));
        *r.status_mut() = StatusCode::FORBIDDEN;
        set(r.headers_mut(), "content-type", "text/plain; charset=utf-8");
        return r;
    }
    if method != "GET" && method != "HEAD" {
        inner.counters.writes.fetch_add(1, Ordering::Relaxed);
        let mut data = inner.data.lock().unwrap_or_else(|e| e.into_inner());
        let now = std::time::Instant::now();
        while data
            .writes_at
            .front()
            .is_some_and(|t| now.duration_since(*t) >= std::time::Duration::from_secs(60))
        {
            data.writes_at.pop_front();
        }
        if data.writes_at.len() >= data.writes_per_minute.unwrap_or(CONTENT_WRITES_PER_MINUTE) {
            return error(
                StatusCode::FORBIDDEN,
                "You have exceeded a secondary rate limit. Please wait a few minutes before you try again.",
            );
        }
        data.writes_at.push_back(now);
    }
    let fault = take_fault(
        &mut inner.data.lock().unwrap_or_else(|e| e.into_inner()),
        &method,
        &path,
    );
    if let Some(Fault::Delay(d)) = &fault {
        tokio::time::sleep(*d).await;
    }
    if let Some(Fault::LandCommit { repo, branch }) = &fault {
        let mut f = inner.forge.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(forge) = f.as_mut() {
            let n = Utc::now().timestamp_nanos_opt().unwrap_or(0);
            let _ = forge.commit_file(
                repo,
                branch,
                "NOTES.md",
                &format!("a human was here at {n}\n"),
                "docs: a note pushed by a human (simulated push race)",
            );
        }
    }
    let resp = match &fault {
        Some(Fault::Status(s)) => error(
            StatusCode::from_u16(*s).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            "simulated failure",
        ),
        Some(Fault::RateLimit { reset_in }) => {
            let mut r = error(
                StatusCode::FORBIDDEN,
                "API rate limit exceeded for 127.0.0.1.",
            );
            let reset = Utc::now().timestamp() + *reset_in as i64;
            set(
                r.headers_mut(),
                "x-ratelimit-limit",
                &RATE_LIMIT.to_string(),
            );
            set(r.headers_mut(), "x-ratelimit-remaining", "0");
            set(r.headers_mut(), "x-ratelimit-reset", &reset.to_string());
            r
        }
        Some(Fault::SecondaryRateLimit) => error(
            StatusCode::FORBIDDEN,
            "You have exceeded a secondary rate limit. Please wait a few minutes before you try again.",
        ),
        Some(Fault::TooManyRequests { retry_after }) => {
            let mut r = error(StatusCode::TOO_MANY_REQUESTS, "Too many requests");
            set(r.headers_mut(), "retry-after", &retry_after.to_string());
            r
        }
        Some(Fault::LostAnswer(s)) => {
            let _carried_out = forge_route(&inner, &method, &path, &query, &headers, &body);
            error(
                StatusCode::from_u16(*s).unwrap_or(StatusCode::BAD_GATEWAY),
                "simulated failure after the request was carried out",
            )
        }
        _ => match forge_route(&inner, &method, &path, &query, &headers, &body) {
            Some(r) => r,
            None => route(&inner, &path, &query, &headers),
        },
    };
    let mut resp = resp;
    if fault == Some(Fault::SelfLink) {
        let url = format!(
            "{}{}{}",
            inner.base,
            path,
            if query.is_empty() {
                String::new()
            } else {
                format!("?{query}")
            }
        );
        set(
            resp.headers_mut(),
            "link",
            &format!("<{url}>; rel=\"next\""),
        );
    }
    let resp = if fault == Some(Fault::Truncate) {
        truncate(resp).await
    } else {
        resp
    };
    if resp.status() == StatusCode::NOT_MODIFIED {
        inner.counters.not_modified.fetch_add(1, Ordering::Relaxed);
    }
    let len = http_body::Body::size_hint(resp.body()).lower();
    inner.counters.bytes_sent.fetch_add(len, Ordering::Relaxed);
    resp
}

fn authorized(data: &Data, headers: &HeaderMap) -> bool {
    let Some(t) = data.forge_token.as_ref().or(data.token.as_ref()) else {
        return true;
    };
    let auth = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    auth == format!("Bearer {t}") || auth == format!("token {t}")
}

/// The forge's API: pull requests, issues, comments, labels, statuses, check runs, the
/// repository, the rate limit, and the release look-ups by tag. Conditional GETs get 304s.
fn forge_route(
    inner: &Inner,
    method: &str,
    path: &str,
    query: &str,
    headers: &HeaderMap,
    body: &[u8],
) -> Option<Response> {
    let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
    let mut data = inner.data.lock().unwrap_or_else(|e| e.into_inner());
    let ours = matches!(
        parts.as_slice(),
        ["rate_limit"]
            | ["repos", _, _, "tags"]
            | ["repos", _, _, "releases", "latest"]
            | ["repos", _, _, "releases", "tags", _]
    );
    let answer: Option<(u16, Value)> = match parts.as_slice() {
        ["rate_limit"] if method == "GET" => {
            let reset = Utc::now().timestamp() + 3600;
            let core = json!({"limit": RATE_LIMIT, "remaining": data.remaining, "reset": reset, "used": RATE_LIMIT - data.remaining});
            Some((200, json!({"resources": {"core": core, "search": {"limit": 30, "remaining": 30, "reset": reset, "used": 0}}, "rate": core})))
        }
        ["repos", o, n, "tags"] if method == "GET" => data.repos.get(&format!("{o}/{n}")).map(|all| {
            let tags: Vec<Value> = all.iter().map(|r| json!({"name": r.tag, "node_id": format!("TAG_{}", r.tag),
                "commit": {"sha": format!("{:040x}", u128::from(fnv1a(r.tag.as_bytes()))), "url": format!("{}/repos/{o}/{n}/commits/{}", inner.base, r.tag)},
                "zipball_url": format!("{}/repos/{o}/{n}/zipball/{}", inner.base, r.tag), "tarball_url": format!("{}/repos/{o}/{n}/tarball/{}", inner.base, r.tag)})).collect();
            (200, Value::Array(tags))
        }),
        ["repos", o, n, "releases", "latest"] if method == "GET" => data.repos.get(&format!("{o}/{n}")).and_then(|all| {
            let i = all.iter().position(|r| !r.draft && !r.prerelease)?;
            Some((200, release_json(&inner.base, &format!("{o}/{n}"), all.len() - i, &all[i])))
        }),
        ["repos", o, n, "releases", "tags", tag] if method == "GET" => data.repos.get(&format!("{o}/{n}")).and_then(|all| {
            let tag = tag.replace("%2B", "+").replace("%2b", "+");
            let i = all.iter().position(|r| r.tag == tag)?;
            Some((200, release_json(&inner.base, &format!("{o}/{n}"), all.len() - i, &all[i])))
        }),
        _ => None,
    };
    let answer = match answer {
        Some(a) => Some(Ok(a)),
        None if ours => Some(Ok((
            404,
            json!({"message": "Not Found", "documentation_url": "https://docs.github.com/rest"}),
        ))),
        None => {
            if parts.first() != Some(&"repos") || parts.get(3) == Some(&"releases") {
                return None;
            }
            let mut f = inner.forge.lock().unwrap_or_else(|e| e.into_inner());
            let forge = f.as_mut()?;
            if !authorized(&data, headers) {
                return Some(error(StatusCode::UNAUTHORIZED, "Bad credentials"));
            }
            let answer = forge.handle(method, path, query, body, &inner.base, inner.now());
            send_deliveries(forge.take_deliveries());
            answer
        }
    };
    let (status, v) = match answer? {
        Ok(x) => x,
        Err(e) => (e.status, e.body()),
    };
    let bytes = if v.is_null() {
        Bytes::new()
    } else {
        Bytes::from(serde_json::to_vec(&v).unwrap_or_default())
    };
    let etag = format!("\"{:016x}\"", fnv1a(&bytes));
    let hit = method == "GET"
        && status == 200
        && headers
            .get(header::IF_NONE_MATCH)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.split(',').any(|e| e.trim() == etag));
    if !hit && parts.first() != Some(&"rate_limit") {
        data.remaining = data.remaining.saturating_sub(1);
    }
    let mut r = if hit {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        let mut r = (
            StatusCode::from_u16(status).unwrap_or(StatusCode::OK),
            bytes,
        )
            .into_response();
        if !v.is_null() {
            set(
                r.headers_mut(),
                "content-type",
                "application/json; charset=utf-8",
            );
        }
        r
    };
    let h = r.headers_mut();
    if method == "GET" {
        set(h, "etag", &etag);
    }
    set(h, "x-ratelimit-limit", &RATE_LIMIT.to_string());
    set(h, "x-ratelimit-remaining", &data.remaining.to_string());
    set(
        h,
        "x-ratelimit-reset",
        &(Utc::now().timestamp() + 3600).to_string(),
    );
    Some(r)
}

/// Git's smart HTTP protocol for the forge's repositories, through `git http-backend` (so hooks
/// run: branch protection). Authentication: the token as the basic-auth password, as on GitHub.
/// Sends the forge's webhook deliveries in the background, in order, as GitHub does: signed
/// JSON with the event in `X-GitHub-Event`. A receiver that is down just misses them.
fn send_deliveries(deliveries: Vec<super::github::Delivery>) {
    if deliveries.is_empty() {
        return;
    }
    // reqwest builds its TLS config even for http:// receivers.
    upkeep::sources::install_crypto_provider();
    tokio::spawn(async move {
        static NEXT: AtomicU64 = AtomicU64::new(1);
        // GitHub's deliveries come from "GitHub-Hookshot/<id>" (docs.github.com, "Webhook
        // events and payloads", delivery headers).
        let client = reqwest::Client::builder()
            .user_agent("GitHub-Hookshot/upkeep-sim")
            .build()
            .unwrap_or_default();
        for d in deliveries {
            let body = serde_json::to_vec(&d.body).unwrap_or_default();
            let id = NEXT.fetch_add(1, Ordering::Relaxed);
            let sent = client
                .post(&d.url)
                .header("content-type", "application/json")
                .header("user-agent", "GitHub-Hookshot/upkeep-sim")
                .header("x-github-event", &d.event)
                .header("x-github-delivery", format!("sim-{id}"))
                .header(
                    "x-hub-signature-256",
                    upkeep::webhook::sign(&d.secret, &body),
                )
                .body(body)
                .send()
                .await;
            if let Err(e) = sent {
                tracing::debug!(url = %d.url, error = %e, "a webhook delivery failed");
            }
        }
    });
}

async fn git_http(
    inner: &Inner,
    method: &str,
    path: &str,
    query: &str,
    headers: &HeaderMap,
    body: Bytes,
) -> Response {
    let root = {
        let f = inner.forge.lock().unwrap_or_else(|e| e.into_inner());
        match f.as_ref() {
            Some(f) => f.root().to_path_buf(),
            None => return error(StatusCode::NOT_FOUND, "Not Found"),
        }
    };
    let token = {
        let d = inner.data.lock().unwrap_or_else(|e| e.into_inner());
        d.forge_token.clone().or(d.token.clone())
    };
    if let Some(t) = token {
        use base64::Engine;
        let ok = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Basic "))
            .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b).ok())
            .and_then(|b| String::from_utf8(b).ok())
            .is_some_and(|up| up.split_once(':').is_some_and(|(_, p)| p == t));
        if !ok {
            let mut r = (StatusCode::UNAUTHORIZED, "authentication required").into_response();
            set(
                r.headers_mut(),
                "www-authenticate",
                "Basic realm=\"GitHub\"",
            );
            return r;
        }
    }
    let path_info = path.trim_start_matches("/git");
    if path_info.contains("..") {
        return error(StatusCode::BAD_REQUEST, "bad path");
    }
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let mut cmd = tokio::process::Command::new("git");
    cmd.arg("http-backend")
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("GIT_PROJECT_ROOT", &root)
        .env("GIT_HTTP_EXPORT_ALL", "1")
        .env("REQUEST_METHOD", method)
        .env("PATH_INFO", path_info)
        .env("QUERY_STRING", query)
        .env("CONTENT_TYPE", content_type)
        .env("CONTENT_LENGTH", body.len().to_string())
        .env("REMOTE_USER", "upkeep")
        .env("REMOTE_ADDR", "127.0.0.1")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    if let Some(p) = headers.get("git-protocol").and_then(|v| v.to_str().ok()) {
        cmd.env("GIT_PROTOCOL", p);
    }
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => {
            return error(
                StatusCode::INTERNAL_SERVER_ERROR,
                &format!("cannot run git http-backend: {e}"),
            );
        }
    };
    if let Some(mut stdin) = child.stdin.take() {
        use tokio::io::AsyncWriteExt;
        let _ = stdin.write_all(&body).await;
    }
    let out = match child.wait_with_output().await {
        Ok(o) => o,
        Err(e) => {
            return error(
                StatusCode::INTERNAL_SERVER_ERROR,
                &format!("git http-backend: {e}"),
            );
        }
    };
    cgi_response(&out.stdout)
}

/// Turn a CGI answer (headers, a blank line, the body) into a response.
fn cgi_response(out: &[u8]) -> Response {
    let split = out
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|i| (i, 4))
        .or_else(|| out.windows(2).position(|w| w == b"\n\n").map(|i| (i, 2)));
    let Some((i, n)) = split else {
        return error(StatusCode::BAD_GATEWAY, "git http-backend gave no headers");
    };
    let head = String::from_utf8_lossy(&out[..i]).into_owned();
    let mut r = Bytes::copy_from_slice(&out[i + n..]).into_response();
    for line in head.lines() {
        let Some((k, v)) = line.split_once(':') else {
            continue;
        };
        let v = v.trim();
        if k.eq_ignore_ascii_case("status") {
            let code = v
                .split_whitespace()
                .next()
                .and_then(|c| c.parse().ok())
                .unwrap_or(200);
            *r.status_mut() = StatusCode::from_u16(code).unwrap_or(StatusCode::OK);
        } else if let (Ok(name), Ok(value)) = (
            axum::http::HeaderName::from_bytes(k.trim().as_bytes()),
            HeaderValue::from_str(v),
        ) {
            r.headers_mut().insert(name, value);
        }
    }
    r
}

fn set(h: &mut HeaderMap, name: &'static str, value: &str) {
    if let Ok(v) = HeaderValue::from_str(value) {
        h.insert(name, v);
    }
}

fn error(status: StatusCode, message: &str) -> Response {
    let body = json!({
        "message": message,
        "documentation_url": "https://docs.github.com/rest",
        "status": status.as_u16().to_string(),
    });
    json_response(status, &body)
}

fn json_response(status: StatusCode, v: &Value) -> Response {
    let bytes = serde_json::to_vec(v).unwrap_or_default();
    let mut r = (status, bytes).into_response();
    set(
        r.headers_mut(),
        "content-type",
        "application/json; charset=utf-8",
    );
    r
}

fn route(inner: &Inner, path: &str, query: &str, headers: &HeaderMap) -> Response {
    let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
    match parts.as_slice() {
        ["repos", owner, repo, "releases"] => {
            releases(inner, &format!("{owner}/{repo}"), query, headers)
        }
        ["v1-release", "channels"] => channels(inner),
        ["v1-release", "channels", name] => channel_redirect(inner, name),
        ["helm", name, "index.yaml"] => {
            let data = inner.data.lock().unwrap_or_else(|e| e.into_inner());
            match data.charts.get(*name) {
                Some(text) => {
                    let mut r = (StatusCode::OK, text.clone()).into_response();
                    set(r.headers_mut(), "content-type", "text/yaml");
                    r
                }
                None => (StatusCode::NOT_FOUND, "404 page not found").into_response(),
            }
        }
        _ => error(StatusCode::NOT_FOUND, "Not Found"),
    }
}

fn query_param(query: &str, name: &str) -> Option<u64> {
    query
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .find(|(k, _)| *k == name)
        .and_then(|(_, v)| v.parse().ok())
}

fn releases(inner: &Inner, repo: &str, query: &str, headers: &HeaderMap) -> Response {
    let mut data = inner.data.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(t) = &data.token {
        let auth = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        if auth != format!("Bearer {t}") && auth != format!("token {t}") {
            return error(StatusCode::UNAUTHORIZED, "Bad credentials");
        }
    }
    let Some(all) = data.repos.get(repo) else {
        return error(StatusCode::NOT_FOUND, "Not Found");
    };
    let per_page = query_param(query, "per_page").unwrap_or(30).clamp(1, 100) as usize;
    let page = query_param(query, "page").unwrap_or(1).max(1) as usize;
    let pages = all.len().div_ceil(per_page).max(1);
    let key = (repo.to_string(), per_page, page);
    let (body, etag) = match data.pages.get(&key) {
        Some(hit) => hit.clone(),
        None => {
            let items: Vec<Value> = all
                .iter()
                .enumerate()
                .skip((page - 1).saturating_mul(per_page))
                .take(per_page)
                .map(|(i, r)| release_json(&inner.base, repo, all.len() - i, r))
                .collect();
            let body = Bytes::from(serde_json::to_vec(&items).unwrap_or_default());
            let etag = format!("\"{:016x}\"", fnv1a(&body));
            data.pages.insert(key, (body.clone(), etag.clone()));
            (body, etag)
        }
    };
    let reset = Utc::now().timestamp() + 3600;
    let conditional_hit = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|e| e.trim() == etag));
    if !conditional_hit {
        data.remaining = data.remaining.saturating_sub(1);
    }
    let remaining = data.remaining;
    drop(data);
    let mut r = if conditional_hit {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        let mut r = (StatusCode::OK, body).into_response();
        set(
            r.headers_mut(),
            "content-type",
            "application/json; charset=utf-8",
        );
        r
    };
    let h = r.headers_mut();
    set(h, "etag", &etag);
    set(h, "x-ratelimit-limit", &RATE_LIMIT.to_string());
    set(h, "x-ratelimit-remaining", &remaining.to_string());
    set(h, "x-ratelimit-reset", &reset.to_string());
    let link = |p: usize, rel: &str| {
        format!(
            "<{}/repos/{repo}/releases?per_page={per_page}&page={p}>; rel=\"{rel}\"",
            inner.base
        )
    };
    let mut links = Vec::new();
    if page < pages {
        links.push(link(page + 1, "next"));
        links.push(link(pages, "last"));
    }
    if page > 1 {
        links.push(link(1, "first"));
        links.push(link(page - 1, "prev"));
    }
    if !links.is_empty() {
        set(h, "link", &links.join(", "));
    }
    r
}

/// A release object with every field GitHub's schema requires.
pub fn release_json(base: &str, repo: &str, id: usize, r: &SimRelease) -> Value {
    let api = format!("{base}/repos/{repo}/releases/{id}");
    let html = format!(
        "https://github.com/{repo}/releases/tag/{}",
        r.tag.replace('+', "%2B")
    );
    let created = r
        .published_at
        .unwrap_or_else(|| DateTime::from_timestamp(0, 0).unwrap_or_default());
    json!({
        "url": api,
        "html_url": html,
        "assets_url": format!("{api}/assets"),
        "upload_url": format!("https://uploads.github.com/repos/{repo}/releases/{id}/assets{{?name,label}}"),
        "tarball_url": format!("{base}/repos/{repo}/tarball/{}", r.tag),
        "zipball_url": format!("{base}/repos/{repo}/zipball/{}", r.tag),
        "id": id,
        "node_id": format!("RE_{id}"),
        "tag_name": r.tag,
        "target_commitish": "main",
        "name": r.tag,
        "body": r.body,
        "draft": r.draft,
        "prerelease": r.prerelease,
        "immutable": false,
        "created_at": created.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        "published_at": if r.draft { Value::Null } else {
            r.published_at.map_or(Value::Null, |t| Value::String(t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)))
        },
        "updated_at": Value::Null,
        "author": user(base),
        "assets": [],
    })
}

fn user(base: &str) -> Value {
    let u = format!("{base}/users/release-bot");
    json!({
        "login": "release-bot",
        "id": 1,
        "node_id": "U_1",
        "avatar_url": "https://avatars.githubusercontent.com/u/1?v=4",
        "gravatar_id": "",
        "url": u,
        "html_url": "https://github.com/release-bot",
        "followers_url": format!("{u}/followers"),
        "following_url": format!("{u}/following{{/other_user}}"),
        "gists_url": format!("{u}/gists{{/gist_id}}"),
        "starred_url": format!("{u}/starred{{/owner}}{{/repo}}"),
        "subscriptions_url": format!("{u}/subscriptions"),
        "organizations_url": format!("{u}/orgs"),
        "repos_url": format!("{u}/repos"),
        "events_url": format!("{u}/events{{/privacy}}"),
        "received_events_url": format!("{u}/received_events"),
        "type": "Bot",
        "site_admin": false,
    })
}

fn channels(inner: &Inner) -> Response {
    let data = inner.data.lock().unwrap_or_else(|e| e.into_inner());
    let base = format!("{}/v1-release/channels", inner.base);
    let items: Vec<Value> = data
        .channels
        .iter()
        .map(|(name, latest)| {
            let mut v = json!({
                "id": name, "type": "channel", "name": name, "latest": latest,
                "links": {"self": format!("{base}/{name}")},
            });
            if name == "latest" {
                v["latestRegexp"] = json!(".*");
                v["excludeRegexp"] = json!("^[^+]+-");
            }
            v
        })
        .collect();
    json_response(
        StatusCode::OK,
        &json!({
            "type": "collection",
            "links": {"self": base},
            "actions": {},
            "resourceType": "channels",
            "data": items,
        }),
    )
}

fn channel_redirect(inner: &Inner, name: &str) -> Response {
    let data = inner.data.lock().unwrap_or_else(|e| e.into_inner());
    match data.channels.iter().find(|(n, _)| n == name) {
        Some((_, latest)) => {
            let mut r = StatusCode::FOUND.into_response();
            set(
                r.headers_mut(),
                "location",
                &format!("https://github.com/k3s-io/k3s/releases/tag/{latest}"),
            );
            r
        }
        None => error(StatusCode::NOT_FOUND, "channel not found"),
    }
}

/// A body that sends its first half and then fails, so the connection breaks mid-answer.
struct Truncated(Option<Bytes>);

impl http_body::Body for Truncated {
    type Data = Bytes;
    type Error = std::io::Error;
    fn poll_frame(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, std::io::Error>>> {
        Poll::Ready(Some(match self.0.take() {
            Some(b) => Ok(http_body::Frame::data(b)),
            None => Err(std::io::Error::other("simulated truncation")),
        }))
    }
}

async fn truncate(resp: Response) -> Response {
    let (mut parts, body) = resp.into_parts();
    let bytes = axum::body::to_bytes(body, usize::MAX)
        .await
        .unwrap_or_default();
    let half = bytes.slice(..bytes.len() / 2);
    parts.headers.insert(
        header::CONTENT_LENGTH,
        HeaderValue::from(bytes.len().max(1) as u64),
    );
    Response::from_parts(parts, Body::new(Truncated(Some(half))))
}

/// Releases from `tag<TAB>date` lines (the fixture format), oldest first.
pub fn releases_from_tsv(text: &str) -> Vec<SimRelease> {
    let mut out: Vec<SimRelease> = text
        .lines()
        .filter_map(|l| {
            let (tag, date) = l.split_once('\t')?;
            let at = DateTime::parse_from_rfc3339(date.trim()).ok()?;
            Some(SimRelease::new(tag.trim(), Some(at.with_timezone(&Utc))))
        })
        .collect();
    out.sort_by_key(|r| r.published_at);
    out
}

/// Serve every GitHub-sourced component of a release catalog (releases and notes) and its k3s
/// channels, so that the live sources can be exercised with real data and no network.
pub fn seed_from_catalog(sim: &UpstreamSim, catalog: &upkeep::sources::catalog::CatalogFile) {
    let mut channels: Vec<(String, String)> = Vec::new();
    for comp in catalog.components.values() {
        let Some(repo) = comp.source.strip_prefix("github:") else {
            continue;
        };
        // Catalogs list newest first; the simulator takes oldest first.
        let releases = comp
            .releases
            .iter()
            .rev()
            .map(|r| SimRelease {
                tag: r.tag.clone(),
                published_at: r.published_at,
                prerelease: r.prerelease,
                draft: false,
                body: r.notes.clone(),
            })
            .collect();
        sim.set_releases(repo, releases);
        channels.extend(comp.channels.iter().map(|(a, b)| (a.clone(), b.clone())));
    }
    let pairs: Vec<(&str, &str)> = channels
        .iter()
        .map(|(a, b)| (a.as_str(), b.as_str()))
        .collect();
    sim.set_channels(&pairs);
}

/// Undated releases from a list of tags, one per line (the k3s fixture format), ordered by version
/// under `scheme`; lines that are not versions of it are left out.
pub fn releases_from_list(text: &str, scheme: upkeep::versions::Scheme) -> Vec<SimRelease> {
    let mut vs: Vec<upkeep::versions::Version> = text
        .lines()
        .filter_map(|l| upkeep::versions::parse(l.trim(), scheme).ok())
        .collect();
    vs.sort();
    vs.iter().map(|v| SimRelease::new(v.raw(), None)).collect()
}

/// A Helm index for `chart` with these versions (`version`, `created`).
pub fn helm_index(chart: &str, versions: &[(&str, &str)]) -> String {
    let mut s = format!("apiVersion: v1\nentries:\n  {chart}:\n");
    for (v, created) in versions {
        s.push_str(&format!(
            "  - apiVersion: v2\n    name: {chart}\n    version: \"{v}\"\n    appVersion: \"{v}\"\n    created: \"{created}\"\n    urls: [\"https://charts.example/{chart}-{v}.tgz\"]\n"
        ));
    }
    s.push_str("generated: \"2026-01-01T00:00:00Z\"\n");
    s
}
