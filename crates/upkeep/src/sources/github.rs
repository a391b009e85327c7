//! GitHub releases through octocrab: `GET /repos/{owner}/{repo}/releases`, all pages (`Link`
//! headers), drafts dropped, pre-releases flagged, notes kept (trimmed) for the PR report.
//!
//! Conditional requests: every page's ETag is cached with what was read from it; the next run
//! sends `If-None-Match`, and a `304` on the first page means the listing is unchanged, so an
//! unchanged repository costs exactly one request (which GitHub does not count against the rate
//! limit).
//!
//! Rate limits: a `403`/`429` with `Retry-After`, or with `x-ratelimit-remaining: 0` and
//! `x-ratelimit-reset`, or a secondary-rate-limit message, blocks the whole client until then. A
//! wait shorter than `max_wait` is waited out; a longer one fails this source (and every other
//! GitHub source of the run) at once with the time it may be tried again: upkeep never hammers.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use http::{HeaderMap, HeaderValue, StatusCode};
use http_body_util::BodyExt;
use serde::Deserialize;

use super::cache::{Cache, Page};
use super::http::error_chain;
use super::{MAX_NOTES_BYTES, NetConfig, Stats, UpstreamRelease, truncate_utf8};

pub const DEFAULT_API_URL: &str = "https://api.github.com";
/// Releases per page (GitHub's maximum).
const PER_PAGE: u32 = 100;
/// At most this many pages (10,000 releases) are read per repository.
const MAX_PAGES: usize = 100;
/// One page of 100 releases with long notes is a few megabytes at most.
const MAX_PAGE_BYTES: usize = 32 * 1024 * 1024;
/// GitHub asks clients to wait at least a minute after a secondary rate limit without a header.
const SECONDARY_WAIT: Duration = Duration::from_secs(60);

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(
        "GitHub rate limit: releases of {repo} not read; GitHub can be asked again at {until} (hint: set GITHUB_TOKEN for a higher limit; upkeep retries on its next run)"
    )]
    RateLimited { repo: String, until: DateTime<Utc> },
    #[error(
        "GitHub has no repository {repo} (404) (hint: check `githubReleases: owner/repo`; a private repository needs a token)"
    )]
    NotFound { repo: String },
    #[error(
        "GitHub refused the credentials (401) reading {repo} (hint: check GITHUB_TOKEN or --github-token-file; the token may have expired)"
    )]
    Unauthorized { repo: String },
    #[error("GitHub refused access to {repo} (403): {message}")]
    Forbidden { repo: String, message: String },
    #[error("GitHub answered {status} for {repo}{}", if *status >= 500 { " (upkeep retried; it tries again next run)" } else { "" })]
    Status { repo: String, status: u16 },
    #[error(
        "GitHub did not answer within {after:?} for {repo} (hint: check --github-api-url and the network)"
    )]
    Timeout { repo: String, after: Duration },
    #[error(
        "cannot reach GitHub for {repo}: {detail} (hint: check --github-api-url and the network)"
    )]
    Transport { repo: String, detail: String },
    #[error("GitHub's answer for {repo} is not a release list: {detail}")]
    Parse { repo: String, detail: String },
    #[error("GitHub's answer for {repo} is larger than {limit} bytes; refusing to read it")]
    TooLarge { repo: String, limit: usize },
    #[error(
        "invalid GitHub API URL `{url}`: {detail} (hint: like https://api.github.com or https://HOST/api/v3)"
    )]
    BadApiUrl { url: String, detail: String },
    #[error("`{repo}` is not owner/repo")]
    BadRepo { repo: String },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The fields of GitHub's `release` object that upkeep reads.
#[derive(Deserialize)]
struct GhRelease {
    tag_name: String,
    #[serde(default)]
    body: Option<String>,
    #[serde(default)]
    draft: bool,
    #[serde(default)]
    prerelease: bool,
    #[serde(default)]
    published_at: Option<DateTime<Utc>>,
    #[serde(default)]
    html_url: Option<String>,
}

/// Read one page of GitHub's release list (drafts dropped, notes trimmed).
pub fn parse_page(body: &[u8]) -> std::result::Result<Vec<UpstreamRelease>, String> {
    let list: Vec<GhRelease> = serde_json::from_slice(body).map_err(|e| e.to_string())?;
    Ok(list
        .into_iter()
        .filter(|r| !r.draft)
        .map(|r| UpstreamRelease {
            tag: r.tag_name,
            published_at: r.published_at,
            prerelease: r.prerelease,
            notes: r.body.filter(|b| !b.trim().is_empty()).map(|mut b| {
                if truncate_utf8(&mut b, MAX_NOTES_BYTES) {
                    b.push_str("\n\n…");
                }
                b
            }),
            url: r.html_url,
        })
        .collect())
}

/// The `rel="next"` URL of a `Link` header.
pub fn next_link(link: &str) -> Option<String> {
    link.split(',').find_map(|part| {
        let (url, params) = part.split_once(';')?;
        let is_next = params
            .split(';')
            .any(|p| p.trim().replace(' ', "") == "rel=\"next\"");
        let url = url.trim().strip_prefix('<')?.strip_suffix('>')?;
        is_next.then(|| url.to_string())
    })
}

/// What a rate-limit answer asks for: how long to wait.
pub fn rate_limit_wait(
    status: u16,
    headers: &HeaderMap,
    body: &str,
    now: DateTime<Utc>,
) -> Option<Duration> {
    if status != 403 && status != 429 {
        return None;
    }
    let h = |n: &str| headers.get(n).and_then(|v| v.to_str().ok()).map(str::trim);
    if let Some(secs) = h("retry-after").and_then(|v| v.parse::<u64>().ok()) {
        return Some(Duration::from_secs(secs));
    }
    if h("x-ratelimit-remaining") == Some("0")
        && let Some(reset) = h("x-ratelimit-reset").and_then(|v| v.parse::<i64>().ok())
    {
        let secs = (reset - now.timestamp()).max(0) as u64;
        return Some(Duration::from_secs(secs + 1));
    }
    let lower = body.to_ascii_lowercase();
    if status == 429 || lower.contains("secondary rate limit") || lower.contains("rate limit") {
        return Some(SECONDARY_WAIT);
    }
    None
}

enum Answer {
    Fresh {
        etag: Option<String>,
        next: Option<String>,
        body: Vec<u8>,
    },
    NotModified,
}

pub struct Client {
    octo: octocrab::Octocrab,
    api_url: String,
    cache: Arc<Cache>,
    stats: Arc<Stats>,
    timeout: Duration,
    retries: u32,
    backoff: Duration,
    max_wait: Duration,
    /// No request goes out before this instant (a rate limit is in force).
    blocked_until: std::sync::Mutex<Option<DateTime<Utc>>>,
}

impl Client {
    pub fn new(cfg: &NetConfig, cache: Arc<Cache>, stats: Arc<Stats>) -> super::Result<Client> {
        let api_url = cfg.github_api_url.trim_end_matches('/').to_string();
        let bad = |detail: String| Error::BadApiUrl {
            url: api_url.clone(),
            detail,
        };
        if !(api_url.starts_with("https://") || api_url.starts_with("http://")) {
            return Err(
                bad("it must start with https:// (or http:// for a local server)".into()).into(),
            );
        }
        let mut b = octocrab::Octocrab::builder()
            .base_uri(api_url.as_str())
            .map_err(|e| bad(e.to_string()))?
            .add_header(
                http::header::ACCEPT,
                "application/vnd.github+json".to_string(),
            )
            .add_header(
                http::HeaderName::from_static("x-github-api-version"),
                "2022-11-28".to_string(),
            )
            .set_connect_timeout(Some(cfg.timeout))
            .set_read_timeout(Some(cfg.timeout));
        if let Some(t) = &cfg.github_token {
            b = b.personal_token(t.expose().to_string());
        }
        let octo = b.build().map_err(|e| bad(error_chain(&e)))?;
        Ok(Client {
            octo,
            api_url,
            cache,
            stats,
            timeout: cfg.timeout,
            retries: cfg.retries,
            backoff: cfg.backoff,
            max_wait: cfg.max_wait,
            blocked_until: std::sync::Mutex::new(None),
        })
    }

    /// Every release of `repo` (`owner/name`), newest first as GitHub lists them, drafts dropped.
    pub async fn releases(&self, repo: &str) -> Result<Vec<UpstreamRelease>> {
        let valid = repo.split('/').count() == 2
            && repo.split('/').all(|p| {
                !p.is_empty()
                    && p.chars()
                        .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
            });
        if !valid {
            return Err(Error::BadRepo {
                repo: repo.to_string(),
            });
        }
        let mut url = format!("{}/repos/{repo}/releases?per_page={PER_PAGE}", self.api_url);
        let mut out = Vec::new();
        // Once the first page is unchanged, later pages are taken from the cache when present.
        let mut unchanged = false;
        // A next-page link back to a page already read (a broken server or proxy) ends the
        // list instead of costing a request per page up to the limit.
        let mut seen = std::collections::HashSet::new();
        for page_no in 1..=MAX_PAGES {
            if !seen.insert(url.clone()) {
                tracing::warn!(
                    repo,
                    "a next-page link repeats a page already read; stopped there"
                );
                return Ok(out);
            }
            let cached = match self.cache.get(&url) {
                Some(p) if unchanged => {
                    out.extend(p.releases);
                    match p.next {
                        Some(n) => {
                            url = n;
                            continue;
                        }
                        None => return Ok(out),
                    }
                }
                other => other,
            };
            let answer = self
                .get(repo, &url, cached.as_ref().map(|p| p.etag.as_str()))
                .await?;
            let page = match (answer, cached) {
                (Answer::NotModified, Some(p)) => {
                    Stats::count(&self.stats.not_modified, 1);
                    unchanged = page_no == 1 || unchanged;
                    p
                }
                (Answer::NotModified, None) => {
                    // A 304 without a cached entry cannot be used: ask again unconditionally.
                    match self.get(repo, &url, None).await? {
                        Answer::Fresh { etag, next, body } => {
                            self.read_page(repo, &url, etag, next, &body)?
                        }
                        Answer::NotModified => {
                            return Err(Error::Status {
                                repo: repo.to_string(),
                                status: 304,
                            });
                        }
                    }
                }
                (Answer::Fresh { etag, next, body }, _) => {
                    self.read_page(repo, &url, etag, next, &body)?
                }
            };
            out.extend(page.releases);
            match page.next {
                Some(n) => url = n,
                None => return Ok(out),
            }
        }
        tracing::warn!(
            repo,
            pages = MAX_PAGES,
            "stopped reading releases after the page limit"
        );
        Ok(out)
    }

    fn read_page(
        &self,
        repo: &str,
        url: &str,
        etag: Option<String>,
        next: Option<String>,
        body: &[u8],
    ) -> Result<Page> {
        let releases = parse_page(body).map_err(|detail| Error::Parse {
            repo: repo.to_string(),
            detail,
        })?;
        // Follow only links to the same API: a server must not send the token elsewhere.
        let next = next.filter(|n| {
            let ok = n.starts_with(&format!("{}/", self.api_url));
            if !ok {
                tracing::warn!(repo, "ignoring a next-page link to another host");
            }
            ok
        });
        let page = Page::new(url, etag.as_deref().unwrap_or(""), next, releases);
        if etag.is_some() {
            self.cache.put(&page);
        }
        Ok(page)
    }

    /// Wait out (or refuse because of) a rate limit in force.
    async fn wait_for_limit(&self, repo: &str) -> Result<()> {
        let until = *self.blocked_until.lock().unwrap_or_else(|e| e.into_inner());
        let Some(until) = until else { return Ok(()) };
        let now = Utc::now();
        if until <= now {
            return Ok(());
        }
        let wait = (until - now).to_std().unwrap_or_default();
        if wait > self.max_wait {
            return Err(Error::RateLimited {
                repo: repo.to_string(),
                until,
            });
        }
        tracing::info!(repo, ?wait, "waiting for the GitHub rate limit to reset");
        tokio::time::sleep(wait).await;
        Ok(())
    }

    fn block_until(&self, until: DateTime<Utc>) {
        let mut b = self.blocked_until.lock().unwrap_or_else(|e| e.into_inner());
        if b.is_none_or(|cur| cur < until) {
            *b = Some(until);
        }
    }

    /// One GET with retries: 5xx, transport errors and timeouts back off and retry; rate limits
    /// wait (up to `max_wait`) or fail.
    async fn get(&self, repo: &str, url: &str, etag: Option<&str>) -> Result<Answer> {
        let mut attempt = 0u32;
        loop {
            self.wait_for_limit(repo).await?;
            let res = self.once(repo, url, etag).await;
            if res.is_err() {
                Stats::count(&self.stats.errors, 1);
            }
            let retry = match &res {
                Err(Error::Status { status, .. }) => *status >= 500,
                Err(Error::Timeout { .. } | Error::Transport { .. }) => true,
                // The limit is recorded; the next round waits for it or gives up.
                Err(Error::RateLimited { .. }) => true,
                _ => false,
            };
            if !retry || attempt >= self.retries {
                return res;
            }
            if !matches!(res, Err(Error::RateLimited { .. })) {
                let wait = self.backoff.saturating_mul(1 << attempt.min(16));
                tracing::debug!(repo, attempt, ?wait, "retrying a GitHub request");
                tokio::time::sleep(wait).await;
            }
            attempt += 1;
        }
    }

    async fn once(&self, repo: &str, url: &str, etag: Option<&str>) -> Result<Answer> {
        let fut = async {
            let mut headers = HeaderMap::new();
            if let Some(e) = etag.and_then(|e| HeaderValue::from_str(e).ok()) {
                headers.insert(http::header::IF_NONE_MATCH, e);
            }
            Stats::count(&self.stats.requests, 1);
            let resp = self
                .octo
                ._get_with_headers(url, Some(headers))
                .await
                .map_err(|e| Error::Transport {
                    repo: repo.to_string(),
                    detail: error_chain(&e),
                })?;
            let (parts, body) = resp.into_parts();
            let status = parts.status;
            self.note_remaining(&parts.headers);
            if status == StatusCode::NOT_MODIFIED {
                return Ok(Answer::NotModified);
            }
            let body = self.read_body(repo, body).await?;
            let code = status.as_u16();
            if status.is_success() {
                let header = |n: &str| {
                    parts
                        .headers
                        .get(n)
                        .and_then(|v| v.to_str().ok())
                        .map(str::to_string)
                };
                return Ok(Answer::Fresh {
                    etag: header("etag"),
                    next: header("link").as_deref().and_then(next_link),
                    body,
                });
            }
            let text = String::from_utf8_lossy(&body);
            let now = Utc::now();
            if let Some(wait) = rate_limit_wait(code, &parts.headers, &text, now) {
                let until = now + chrono::Duration::from_std(wait).unwrap_or_default();
                self.block_until(until);
                tracing::warn!(repo, status = code, ?wait, "GitHub rate limit");
                return Err(Error::RateLimited {
                    repo: repo.to_string(),
                    until,
                });
            }
            let repo = repo.to_string();
            Err(match code {
                401 => Error::Unauthorized { repo },
                404 => Error::NotFound { repo },
                403 => Error::Forbidden {
                    repo,
                    message: github_message(&text),
                },
                status => Error::Status { repo, status },
            })
        };
        tokio::time::timeout(self.timeout, fut)
            .await
            .unwrap_or_else(|_| {
                Err(Error::Timeout {
                    repo: repo.to_string(),
                    after: self.timeout,
                })
            })
    }

    /// A successful answer that says the quota is spent blocks further requests until the reset.
    fn note_remaining(&self, headers: &HeaderMap) {
        self.stats.rate_remaining.note(headers);
        let h = |n: &str| headers.get(n).and_then(|v| v.to_str().ok());
        if h("x-ratelimit-remaining") == Some("0")
            && let Some(reset) = h("x-ratelimit-reset").and_then(|v| v.parse::<i64>().ok())
            && let Some(until) = DateTime::from_timestamp(reset, 0)
        {
            self.block_until(until);
        }
    }

    async fn read_body<B>(&self, repo: &str, mut body: B) -> Result<Vec<u8>>
    where
        B: http_body::Body<Data = bytes::Bytes> + Unpin,
        B::Error: std::error::Error,
    {
        let mut out = Vec::new();
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|e| Error::Transport {
                repo: repo.to_string(),
                detail: format!("the answer broke off: {}", error_chain(&e)),
            })?;
            if let Ok(data) = frame.into_data() {
                Stats::count(&self.stats.bytes, data.len() as u64);
                if out.len() + data.len() > MAX_PAGE_BYTES {
                    return Err(Error::TooLarge {
                        repo: repo.to_string(),
                        limit: MAX_PAGE_BYTES,
                    });
                }
                out.extend_from_slice(&data);
            }
        }
        Ok(out)
    }
}

/// GitHub's `{"message": ...}`, or the start of the body.
fn github_message(body: &str) -> String {
    #[derive(Deserialize)]
    struct M {
        message: String,
    }
    serde_json::from_str::<M>(body)
        .map(|m| m.message)
        .unwrap_or_else(|_| body.chars().take(200).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn link_headers() {
        let l = r#"<https://api.github.com/repositories/1/releases?per_page=100&page=2>; rel="next", <https://api.github.com/repositories/1/releases?per_page=100&page=9>; rel="last""#;
        assert_eq!(
            next_link(l).as_deref(),
            Some("https://api.github.com/repositories/1/releases?per_page=100&page=2")
        );
        assert_eq!(next_link(r#"<https://x/?page=1>; rel="prev""#), None);
        assert_eq!(next_link("garbage"), None);
    }

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn rate_limit_answers() {
        let now = DateTime::from_timestamp(1_000, 0).unwrap();
        let w = |s, h: &[(&'static str, &str)], b| rate_limit_wait(s, &headers(h), b, now);
        assert_eq!(
            w(429, &[("retry-after", "7")], ""),
            Some(Duration::from_secs(7))
        );
        assert_eq!(
            w(
                403,
                &[
                    ("x-ratelimit-remaining", "0"),
                    ("x-ratelimit-reset", "1100")
                ],
                ""
            ),
            Some(Duration::from_secs(101))
        );
        assert_eq!(
            w(
                403,
                &[],
                r#"{"message":"You have exceeded a secondary rate limit."}"#
            ),
            Some(SECONDARY_WAIT)
        );
        assert_eq!(
            w(403, &[], r#"{"message":"Resource not accessible"}"#),
            None
        );
        assert_eq!(w(500, &[("retry-after", "1")], ""), None);
    }

    #[test]
    fn pages_drop_drafts_and_keep_notes() {
        let body = br#"[
          {"tag_name":"v2","draft":true,"prerelease":false,"published_at":null,"body":"d"},
          {"tag_name":"v1.1.0-rc1","draft":false,"prerelease":true,"published_at":"2025-01-02T03:04:05Z","body":"  ","html_url":"https://github.com/o/r/releases/tag/v1.1.0-rc1"},
          {"tag_name":"v1.0.0","draft":false,"prerelease":false,"published_at":"2025-01-01T00:00:00Z","body":"Fixes"}]"#;
        let r = parse_page(body).unwrap();
        assert_eq!(r.len(), 2);
        assert!(r[0].prerelease && r[0].notes.is_none());
        assert_eq!(r[1].notes.as_deref(), Some("Fixes"));
        assert!(parse_page(b"{\"message\":\"x\"}").is_err());
    }
}
