//! The forge: pull requests, issues, labels and comments. [`Forge`] is what upkeep needs of
//! one; [`GitHub`] implements it through octocrab (GitHub.com, Enterprise, or the simulator), so
//! that Gitea or Forgejo can follow. Every request is retried with backoff on 5xx, transport
//! errors and timeouts; rate limits are waited out when short and reported when long.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use chrono::{DateTime, Utc};
use http::{HeaderMap, Method, StatusCode};
use http_body_util::BodyExt;
use serde_json::{Value, json};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    #[error(
        "{api}: the token was refused (401): check --github-token-file or GITHUB_TOKEN and its access to {repo}"
    )]
    Unauthorized { api: String, repo: String },
    #[error("{what} was not found (404) on {api}: check --owner/--name and the token's access")]
    NotFound { api: String, what: String },
    #[error("GitHub rate limit until {until}: left for the next cycle")]
    RateLimited { until: DateTime<Utc> },
    #[error("{method} {path} answered {status}: {message}")]
    Status {
        method: String,
        path: String,
        status: u16,
        message: String,
    },
    #[error("{method} {path}: {detail} (after retries; left for the next cycle)")]
    Transport {
        method: String,
        path: String,
        detail: String,
    },
    #[error("the forge answered something unreadable for {path}: {detail}")]
    Parse { path: String, detail: String },
    #[error(
        "{path} has more than {} items ({MAX_PAGES} pages of 100); upkeep reads no further and does not act on part of a list (hint: close or delete old `upkeep/` branches' pull requests, or ask for a bigger bound)",
        MAX_PAGES * 100
    )]
    TooMany { path: String },
    #[error("{0}")]
    Config(String),
}

impl Error {
    /// For metrics and logs: one label per variant.
    pub fn kind(&self) -> &'static str {
        match self {
            Error::Unauthorized { .. } => "unauthorized",
            Error::NotFound { .. } => "not_found",
            Error::RateLimited { .. } => "rate_limited",
            Error::Status { .. } => "status",
            Error::Transport { .. } => "transport",
            Error::Parse { .. } | Error::TooMany { .. } => "parse",
            Error::Config(_) => "config",
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A pull request as upkeep sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PullRequest {
    pub number: u64,
    pub title: String,
    pub body: String,
    /// `open` or `closed`.
    pub state: String,
    pub merged: bool,
    pub head: String,
    /// The commit the head branch pointed at when the list was read.
    pub head_sha: String,
    pub base: String,
    pub labels: Vec<String>,
    pub url: String,
    pub created_at: Option<DateTime<Utc>>,
}

impl PullRequest {
    pub fn is_open(&self) -> bool {
        self.state == "open"
    }
    /// Closed by a human without merging: "not this version".
    pub fn is_rejected(&self) -> bool {
        self.state == "closed" && !self.merged
    }
}

/// An issue (the dependency dashboard).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Issue {
    pub number: u64,
    pub title: String,
    pub body: String,
    pub state: String,
}

/// What upkeep needs of a forge. Used with static dispatch only.
#[allow(async_fn_in_trait)]
pub trait Forge {
    /// Every pull request whose head branch starts with `prefix`, in any state.
    async fn pulls(&self, prefix: &str) -> Result<Vec<PullRequest>>;
    async fn create_pull(
        &self,
        title: &str,
        head: &str,
        base: &str,
        body: &str,
    ) -> Result<PullRequest>;
    async fn update_pull(
        &self,
        number: u64,
        title: Option<&str>,
        body: Option<&str>,
        state: Option<&str>,
    ) -> Result<()>;
    async fn add_labels(&self, number: u64, labels: &[String]) -> Result<()>;
    /// Merge a pull request (squash), only if its head is still `sha`. A merge the branch's
    /// protection refuses (required reviews or checks) is an error with the forge's reason.
    async fn merge_pull(&self, number: u64, sha: &str) -> Result<()>;
    async fn comment(&self, number: u64, body: &str) -> Result<()>;
    async fn comments(&self, number: u64) -> Result<Vec<String>>;
    /// The open issue carrying `label`, if any.
    async fn find_issue(&self, label: &str) -> Result<Option<Issue>>;
    async fn create_issue(&self, title: &str, body: &str, labels: &[String]) -> Result<Issue>;
    async fn update_issue(&self, number: u64, body: &str) -> Result<()>;
}

/// Requests and writes made, for benchmarks and metrics.
#[derive(Debug, Default)]
pub struct Counters {
    pub requests: AtomicU64,
    pub writes: AtomicU64,
    /// Conditional list reads answered 304 (free of GitHub's rate limit).
    pub not_modified: AtomicU64,
    pub rate_remaining: crate::sources::RateRemaining,
}

/// GitHub's REST API for one repository.
pub struct GitHub {
    octo: octocrab::Octocrab,
    api: String,
    repo: String,
    pub retries: u32,
    pub backoff: Duration,
    pub max_wait: Duration,
    pub timeout: Duration,
    pub counters: Counters,
    /// The last answer to each list page with its ETag, so that a page read again is a
    /// conditional request: an unchanged one costs a 304, which GitHub does not count against the
    /// rate limit.
    pages: std::sync::Mutex<std::collections::HashMap<String, (String, Value)>>,
    /// The least time between two writes (see [`crate::sources::NetConfig::write_interval`]).
    pub write_interval: Duration,
    /// When the last write went out.
    last_write: std::sync::Mutex<Option<std::time::Instant>>,
}

/// Lists are read to the end, up to this many pages of 100; a longer one is an error, never cut
/// silently.
pub const MAX_PAGES: usize = 100;
/// Pages remembered for conditional reads; beyond this the memory starts over.
const MAX_REMEMBERED_PAGES: usize = 1_000;

impl GitHub {
    /// `api` like `https://api.github.com`; `repo` as `owner/name`.
    pub fn new(api: &str, repo: &str, token: Option<&str>) -> Result<GitHub> {
        let api = api.trim_end_matches('/').to_string();
        if !(api.starts_with("https://") || api.starts_with("http://")) {
            return Err(Error::Config(format!(
                "the GitHub API URL {api:?} must start with https:// (or http:// for a local server)"
            )));
        }
        let mut b = octocrab::Octocrab::builder()
            .base_uri(api.as_str())
            .map_err(|e| Error::Config(format!("the GitHub API URL {api:?}: {e}")))?
            .add_header(
                http::header::ACCEPT,
                "application/vnd.github+json".to_string(),
            )
            .add_header(
                http::HeaderName::from_static("x-github-api-version"),
                "2022-11-28".to_string(),
            );
        if let Some(t) = token {
            b = b.personal_token(t.to_string());
        }
        let octo = b
            .build()
            .map_err(|e| Error::Config(format!("cannot build the GitHub client: {e}")))?;
        Ok(GitHub {
            octo,
            api,
            repo: repo.to_string(),
            retries: 3,
            backoff: Duration::from_millis(500),
            max_wait: Duration::from_secs(10),
            timeout: Duration::from_secs(30),
            counters: Counters::default(),
            pages: Default::default(),
            write_interval: Duration::from_secs(1),
            last_write: Default::default(),
        })
    }

    /// Whether the token may push to the repository (`permissions.push` of `GET /repos/{repo}`).
    pub async fn may_push(&self) -> Result<bool> {
        let (_, v) = self.send(Method::GET, "", None).await?;
        Ok(v["permissions"]["push"].as_bool().unwrap_or(false))
    }

    /// The network settings of `--timeout`, `--max-rate-limit-wait` and the retries, as the
    /// release sources use them.
    pub fn with_net(mut self, net: &crate::sources::NetConfig) -> GitHub {
        self.timeout = net.timeout;
        self.max_wait = net.max_wait;
        self.retries = net.retries;
        self.backoff = net.backoff;
        self.write_interval = net.write_interval;
        self
    }

    fn url(&self, path: &str) -> String {
        format!("{}/repos/{}{path}", self.api, self.repo)
    }

    /// One request with retries. Returns the status and the JSON body (Null when empty).
    async fn send(&self, method: Method, path: &str, body: Option<&Value>) -> Result<(u16, Value)> {
        self.send_if(method, path, body, None)
            .await
            .map(|(s, v, _)| (s, v))
    }

    /// [`send`](Self::send), conditional on `etag` when given (a 304 comes back as such, with a
    /// null body); also returns the answer's ETag.
    async fn send_if(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
        etag: Option<&str>,
    ) -> Result<(u16, Value, Option<String>)> {
        let mut attempt = 0u32;
        loop {
            let r = self.once(method.clone(), path, body, etag).await;
            // A create (POST) is never repeated blindly: GitHub may have carried it out and
            // still answered 502 or not at all. `create` checks before it tries again.
            let repeatable = method != Method::POST || path.ends_with("/labels");
            if !repeatable || !uncertain(&r) || attempt >= self.retries {
                return r;
            }
            let wait = self.backoff.saturating_mul(1 << attempt.min(10));
            tracing::debug!(path, attempt, ?wait, "retrying a forge request");
            tokio::time::sleep(wait).await;
            attempt += 1;
        }
    }

    async fn once(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
        etag: Option<&str>,
    ) -> Result<(u16, Value, Option<String>)> {
        if method != Method::GET {
            self.space_writes().await;
        }
        let url = self.url(path);
        let m = method.to_string();
        self.counters.requests.fetch_add(1, Ordering::Relaxed);
        if method != Method::GET {
            self.counters.writes.fetch_add(1, Ordering::Relaxed);
        }
        let transport = |detail: String| Error::Transport {
            method: m.clone(),
            path: path.to_string(),
            detail,
        };
        let fut = async {
            let resp = match method {
                Method::POST => self.octo._post(url.as_str(), body).await,
                Method::PATCH => self.octo._patch(url.as_str(), body).await,
                Method::PUT => self.octo._put(url.as_str(), body).await,
                _ => {
                    let mut h = HeaderMap::new();
                    if let Some(v) = etag.and_then(|e| http::HeaderValue::from_str(e).ok()) {
                        h.insert(http::header::IF_NONE_MATCH, v);
                    }
                    self.octo._get_with_headers(url.as_str(), Some(h)).await
                }
            }
            .map_err(|e| transport(crate::sources::http::error_chain(&e)))?;
            let (parts, b) = resp.into_parts();
            let bytes = b
                .collect()
                .await
                .map_err(|e| {
                    transport(format!(
                        "the answer broke off: {}",
                        crate::sources::http::error_chain(&e)
                    ))
                })?
                .to_bytes();
            Ok::<_, Error>((parts.status, parts.headers, bytes))
        };
        let (status, headers, bytes) = tokio::time::timeout(self.timeout, fut)
            .await
            .map_err(|_| transport(format!("no answer within {:?}", self.timeout)))??;
        self.counters.rate_remaining.note(&headers);
        if status == StatusCode::NOT_MODIFIED && etag.is_some() {
            self.counters.not_modified.fetch_add(1, Ordering::Relaxed);
            return Ok((304, Value::Null, None));
        }
        let json: Value = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes).unwrap_or(Value::Null)
        };
        if status.is_success() {
            let tag = headers
                .get(http::header::ETAG)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string);
            return Ok((status.as_u16(), json, tag));
        }
        let message = json["message"].as_str().unwrap_or("").to_string();
        if let Some(until) = rate_limited(status, &headers, &message) {
            let wait = (until - Utc::now()).to_std().unwrap_or_default();
            if wait <= self.max_wait {
                tracing::info!(?wait, "waiting for the GitHub rate limit");
                tokio::time::sleep(wait).await;
                return Box::pin(self.once(method, path, body, etag)).await;
            }
            return Err(Error::RateLimited { until });
        }
        Err(match status.as_u16() {
            401 => Error::Unauthorized {
                api: self.api.clone(),
                repo: self.repo.clone(),
            },
            404 => Error::NotFound {
                api: self.api.clone(),
                what: format!("{}{path}", self.repo),
            },
            s => {
                let details: Vec<String> = json["errors"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|e| e["message"].as_str().map(str::to_string))
                    .collect();
                Error::Status {
                    method: m,
                    path: path.to_string(),
                    status: s,
                    message: if details.is_empty() {
                        message
                    } else {
                        format!("{message}: {}", details.join("; "))
                    },
                }
            }
        })
    }

    /// Wait until [`write_interval`](Self::write_interval) has passed since the last write.
    async fn space_writes(&self) {
        let wait = {
            let mut last = self.last_write.lock().unwrap_or_else(|e| e.into_inner());
            let now = std::time::Instant::now();
            let at = last.map_or(now, |l| (l + self.write_interval).max(now));
            *last = Some(at);
            at - now
        };
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
    }

    /// A create (POST). After an answer that leaves it unknown whether GitHub carried it out
    /// (a 5xx or no answer), `happened` looks for the result before the create is tried again,
    /// so a dashboard or a comment is never made twice. When it cannot tell, the error stands
    /// and the next cycle starts from what the forge shows.
    async fn create<T, F, Fut>(
        &self,
        path: &str,
        body: &Value,
        parse: fn(&Value) -> T,
        happened: F,
    ) -> Result<T>
    where
        F: Fn() -> Fut,
        Fut: std::future::Future<Output = Result<Option<T>>>,
    {
        let mut attempt = 0u32;
        loop {
            let r = self.send(Method::POST, path, Some(body)).await;
            if !uncertain(&r) || attempt >= self.retries {
                return r.map(|(_, v)| parse(&v));
            }
            tokio::time::sleep(self.backoff.saturating_mul(1 << attempt.min(10))).await;
            match happened().await {
                Ok(Some(done)) => {
                    tracing::info!(path, "a create that seemed to fail had been carried out");
                    return Ok(done);
                }
                Ok(None) => {}
                Err(_) => return r.map(|(_, v)| parse(&v)),
            }
            tracing::debug!(path, attempt, "the create did not happen; trying again");
            attempt += 1;
        }
    }

    /// A write whose answer is not needed.
    async fn write(&self, method: Method, path: &str, body: &Value) -> Result<()> {
        self.send(method, path, Some(body)).await.map(|_| ())
    }

    /// Every page of a list, each read conditionally on what it was last time; more than
    /// [`MAX_PAGES`] is an error.
    async fn list(&self, path: &str) -> Result<Vec<Value>> {
        let mut out = Vec::new();
        for page in 1..=MAX_PAGES {
            let sep = if path.contains('?') { '&' } else { '?' };
            let p = format!("{path}{sep}per_page=100&page={page}");
            let known = self
                .pages
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .get(&p)
                .cloned();
            let (status, v, etag) = self
                .send_if(Method::GET, &p, None, known.as_ref().map(|k| k.0.as_str()))
                .await?;
            let v = match (status, known, etag) {
                (304, Some((_, v)), _) => v,
                (_, _, Some(etag)) => {
                    let mut pages = self.pages.lock().unwrap_or_else(|e| e.into_inner());
                    if pages.len() >= MAX_REMEMBERED_PAGES {
                        pages.clear();
                    }
                    pages.insert(p, (etag, v.clone()));
                    v
                }
                _ => v,
            };
            let items = v.as_array().cloned().ok_or_else(|| Error::Parse {
                path: path.into(),
                detail: "not a list".into(),
            })?;
            let n = items.len();
            out.extend(items);
            if n < 100 {
                return Ok(out);
            }
        }
        Err(Error::TooMany { path: path.into() })
    }
}

/// Whether a failed request may or may not have been carried out (worth a retry).
fn uncertain<T>(r: &Result<T>) -> bool {
    match r {
        Err(Error::Transport { .. }) => true,
        Err(Error::Status { status, .. }) => *status >= 500,
        _ => false,
    }
}

fn rate_limited(status: StatusCode, headers: &HeaderMap, message: &str) -> Option<DateTime<Utc>> {
    let h = |n: &str| headers.get(n).and_then(|v| v.to_str().ok());
    let now = Utc::now();
    if let Some(s) = h("retry-after").and_then(|v| v.parse::<i64>().ok()) {
        return Some(now + chrono::Duration::seconds(s));
    }
    if status == StatusCode::FORBIDDEN || status == StatusCode::TOO_MANY_REQUESTS {
        if h("x-ratelimit-remaining") == Some("0") {
            return h("x-ratelimit-reset")
                .and_then(|v| v.parse::<i64>().ok())
                .and_then(|t| DateTime::from_timestamp(t, 0))
                .or(Some(now + chrono::Duration::seconds(60)));
        }
        if message.contains("secondary rate limit") {
            return Some(now + chrono::Duration::seconds(60));
        }
    }
    None
}

fn pull_of(v: &Value) -> PullRequest {
    PullRequest {
        number: v["number"].as_u64().unwrap_or(0),
        title: v["title"].as_str().unwrap_or("").to_string(),
        body: v["body"].as_str().unwrap_or("").to_string(),
        state: v["state"].as_str().unwrap_or("").to_string(),
        merged: v["merged_at"].is_string() || v["merged"] == json!(true),
        head: v["head"]["ref"].as_str().unwrap_or("").to_string(),
        head_sha: v["head"]["sha"].as_str().unwrap_or("").to_string(),
        base: v["base"]["ref"].as_str().unwrap_or("").to_string(),
        labels: v["labels"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|l| l["name"].as_str().map(str::to_string))
            .collect(),
        url: v["html_url"].as_str().unwrap_or("").to_string(),
        created_at: v["created_at"]
            .as_str()
            .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
            .map(|t| t.with_timezone(&Utc)),
    }
}

fn issue_of(v: &Value) -> Issue {
    Issue {
        number: v["number"].as_u64().unwrap_or(0),
        title: v["title"].as_str().unwrap_or("").to_string(),
        body: v["body"].as_str().unwrap_or("").to_string(),
        state: v["state"].as_str().unwrap_or("").to_string(),
    }
}

/// GitHub refuses a title over 256 characters and a body or comment over 65,536: cut them (with
/// `…`) rather than have the write refused.
pub fn cut(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_string();
    }
    let mut t: String = s.chars().take(max.saturating_sub(1)).collect();
    t.push('…');
    t
}
pub const MAX_TITLE: usize = 256;
pub const MAX_BODY: usize = 65_536;
const TITLE: usize = MAX_TITLE;
const BODY: usize = MAX_BODY;

fn enc(s: &str) -> String {
    s.replace('%', "%25")
        .replace('/', "%2F")
        .replace(':', "%3A")
        .replace(',', "%2C")
        .replace(' ', "%20")
        .replace('+', "%2B")
}

impl Forge for GitHub {
    async fn pulls(&self, prefix: &str) -> Result<Vec<PullRequest>> {
        let all = self.list("/pulls?state=all").await?;
        Ok(all
            .iter()
            .map(pull_of)
            .filter(|p| p.head.starts_with(prefix))
            .collect())
    }

    async fn create_pull(
        &self,
        title: &str,
        head: &str,
        base: &str,
        body: &str,
    ) -> Result<PullRequest> {
        let b = json!({"title": cut(title, TITLE), "head": head, "base": base, "body": cut(body, BODY)});
        self.create("/pulls", &b, pull_of, || async {
            let open = self.pulls(head).await?;
            Ok(open.into_iter().find(|p| p.head == head && p.is_open()))
        })
        .await
    }

    async fn update_pull(
        &self,
        number: u64,
        title: Option<&str>,
        body: Option<&str>,
        state: Option<&str>,
    ) -> Result<()> {
        let mut b = json!({});
        if let Some(t) = title {
            b["title"] = json!(cut(t, TITLE));
        }
        if let Some(x) = body {
            b["body"] = json!(cut(x, BODY));
        }
        if let Some(s) = state {
            b["state"] = json!(s);
        }
        self.write(Method::PATCH, &format!("/pulls/{number}"), &b)
            .await
    }

    async fn add_labels(&self, number: u64, labels: &[String]) -> Result<()> {
        self.write(
            Method::POST,
            &format!("/issues/{number}/labels"),
            &json!({"labels": labels}),
        )
        .await
    }

    async fn merge_pull(&self, number: u64, sha: &str) -> Result<()> {
        self.write(
            Method::PUT,
            &format!("/pulls/{number}/merge"),
            &json!({"merge_method": "squash", "sha": sha}),
        )
        .await
    }

    async fn comment(&self, number: u64, body: &str) -> Result<()> {
        let body = cut(body, BODY);
        let path = format!("/issues/{number}/comments");
        // Done if the newest comment is this one: the same words twice in a row add nothing.
        self.create(
            &path,
            &json!({"body": body}),
            |_| (),
            || async {
                let all = self.comments(number).await?;
                Ok(all.last().filter(|b| **b == body).map(|_| ()))
            },
        )
        .await
    }

    async fn comments(&self, number: u64) -> Result<Vec<String>> {
        let all = self.list(&format!("/issues/{number}/comments")).await?;
        Ok(all
            .iter()
            .filter_map(|c| c["body"].as_str().map(str::to_string))
            .collect())
    }

    async fn find_issue(&self, label: &str) -> Result<Option<Issue>> {
        let all = self
            .list(&format!("/issues?state=open&labels={}", enc(label)))
            .await?;
        Ok(all
            .iter()
            .filter(|i| i.get("pull_request").is_none())
            .map(issue_of)
            .min_by_key(|i| i.number))
    }

    async fn create_issue(&self, title: &str, body: &str, labels: &[String]) -> Result<Issue> {
        let title = cut(title, TITLE);
        let b = json!({"title": title, "body": cut(body, BODY), "labels": labels});
        self.create("/issues", &b, issue_of, || async {
            let Some(label) = labels.first() else {
                return Err(Error::Config(
                    "an issue without a label cannot be looked for".into(),
                ));
            };
            let open = self
                .list(&format!("/issues?state=open&labels={}", enc(label)))
                .await?;
            Ok(open
                .iter()
                .filter(|i| i.get("pull_request").is_none() && i["title"] == title.as_str())
                .map(issue_of)
                .next())
        })
        .await
    }

    async fn update_issue(&self, number: u64, body: &str) -> Result<()> {
        self.write(
            Method::PATCH,
            &format!("/issues/{number}"),
            &json!({"body": cut(body, BODY)}),
        )
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn titles_and_bodies_fit_what_github_takes() {
        assert_eq!(cut(&"é".repeat(300), TITLE).chars().count(), TITLE);
        assert_eq!(cut("short", TITLE), "short");
        assert_eq!(cut(&"x".repeat(70_000), BODY).chars().count(), BODY);
    }
}
