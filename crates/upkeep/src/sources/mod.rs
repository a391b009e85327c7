//! Upstream sources of releases: what exists upstream for each component.
//!
//! Each source is a thin adapter with its own error type:
//! - [`github`]: GitHub releases through octocrab, with conditional requests (ETags) and rate-limit
//!   handling;
//! - [`channel`]: the k3s channel server (`/v1-release/channels`) through reqwest;
//! - [`helm`]: a Helm repository's `index.yaml`;
//! - [`oci`]: an OCI registry's tags (Helm charts in `oci://` repositories, container images),
//!   dated by when upkeep first saw them;
//! - [`catalog`]: a signed offline catalog (minisign), for air-gapped clusters and the demo.
//!
//! [`Upstream`] is the one trait the pipeline sees: "what does upstream have for this component".
//! [`Live`] answers from the network, [`catalog::Catalog`] from a verified file. Both return the
//! same [`Fetched`], so selection and the report never know which one ran.

pub mod cache;
pub mod catalog;
pub mod channel;
pub mod github;
pub mod helm;
pub(crate) mod http;
pub mod oci;

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::model::{Component, Track};
use crate::select::Release;
use crate::versions::{self, Scheme};

/// Release notes longer than this are cut (at a character boundary) when fetched.
pub const MAX_NOTES_BYTES: usize = 16 * 1024;

/// One upstream release as a source reports it, before it is read as a version of a scheme.
/// This is also the shape stored in the cache and in the offline catalog.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct UpstreamRelease {
    /// The tag or chart version, as upstream spells it (`v1.33.4+k3s1`, `1.9.1`).
    pub tag: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub published_at: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub prerelease: bool,
    /// Release notes (markdown), trimmed to [`MAX_NOTES_BYTES`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notes: Option<String>,
    /// Where a human reads the release.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
}

/// What upstream has for one component.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Fetched {
    /// Where the releases came from, e.g. `github:k3s-io/k3s` or `catalog:k3s`.
    pub source: String,
    pub releases: Vec<UpstreamRelease>,
    /// The tracked channel's latest version, when the component tracks a channel.
    pub channel_latest: Option<String>,
}

impl Fetched {
    /// The releases read as versions of `scheme`; tags that are not versions of the scheme (e.g.
    /// `tags/v1.2.3`, odd historical names) are skipped and counted.
    pub fn releases_as(&self, scheme: Scheme) -> (Vec<Release>, usize) {
        let mut skipped = 0;
        let out = self
            .releases
            .iter()
            .filter_map(|r| match versions::parse(&r.tag, scheme) {
                Ok(version) => Some(Release {
                    version,
                    published_at: r.published_at,
                    prerelease: r.prerelease,
                    draft: false,
                }),
                Err(_) => {
                    skipped += 1;
                    None
                }
            })
            .collect();
        (out, skipped)
    }

    /// The upstream record of a version (for its notes, date and link).
    pub fn find(&self, scheme: Scheme, v: &versions::Version) -> Option<&UpstreamRelease> {
        self.releases
            .iter()
            .find(|r| versions::parse(&r.tag, scheme).is_ok_and(|x| &x == v))
    }
}

/// Why a component's upstream could not be read.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Github(#[from] github::Error),
    #[error(transparent)]
    Channel(#[from] channel::Error),
    #[error(transparent)]
    Helm(#[from] helm::Error),
    #[error(transparent)]
    Oci(#[from] oci::Error),
    #[error(transparent)]
    Catalog(#[from] catalog::Error),
    #[error(
        "component `{component}` has no release source (hint: set `source: {{githubReleases: owner/repo}}`, `source: {{helmChart: ...}}` or `source: {{ociImage: HOST/NAME}}` in versions.yaml)"
    )]
    NoSource { component: String },
    #[error("cannot set up the HTTP client: {0}")]
    Client(http::FetchError),
    /// The one failure of a source that several components share (see [`Run`]).
    #[error(transparent)]
    Shared(Arc<Error>),
    #[error(
        "component `{component}` tracks channel `{channel}` but has no channel server (hint: set `source: {{channelServer: URL}}`)"
    )]
    NoChannelServer { component: String, channel: String },
    #[error(
        "the channel server has no channel `{channel}` (it has: {known}) (hint: fix `track:` of `{component}`)"
    )]
    UnknownChannel {
        component: String,
        channel: String,
        known: String,
    },
}

impl Error {
    /// A short label for metrics and the report (`github`, `channel`, ...).
    pub fn kind(&self) -> &'static str {
        match self {
            Error::Github(_) => "github",
            Error::Channel(_) | Error::UnknownChannel { .. } | Error::NoChannelServer { .. } => {
                "channel"
            }
            Error::Helm(_) => "helm",
            Error::Oci(_) => "oci",
            Error::Catalog(_) => "catalog",
            Error::NoSource { .. } => "config",
            Error::Client(_) => "http",
            Error::Shared(e) => e.kind(),
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Where a component's releases come from. Sends and `Sync` so that many components are fetched
/// at once. `run` remembers what this run has fetched, so that a source several components share
/// is fetched once ([`Run::default`] when fetching one component alone).
pub trait Upstream: Send + Sync {
    fn fetch(
        &self,
        component: &Component,
        run: &Run,
    ) -> impl Future<Output = Result<Fetched>> + Send;
}

/// What one run (one `check`, one detection cycle, one export) shares between its components:
/// each GitHub repository, Helm index, OCI repository and channel server that more than one
/// component reads is
/// fetched once, and the others wait for that one fetch (as Renovate looks each package source up
/// once per run). A source is held only until the last component that reads it has it, so a run
/// of many distinct sources keeps no more in memory than before; the next run fetches again
/// (cheaply: the ETag cache makes an unchanged GitHub source a 304).
#[derive(Default)]
pub struct Run {
    releases: Memo<Vec<UpstreamRelease>>,
    indexes: Memo<helm::Index>,
    tags: Memo<oci::Listing>,
    channels: Memo<channel::Channels>,
    /// The time the run judges releases at (`check`'s `now`), when it has one: an OCI tag first
    /// seen in this run counts as released then, not a moment after.
    as_of: Option<DateTime<Utc>>,
}

impl Run {
    /// A run over `components`: counts how many read each source.
    pub fn new(components: &[Component]) -> Run {
        let run = Run::default();
        for c in components {
            if let Some(h) = &c.sources.helm_chart {
                if helm::is_oci(&h.repository) {
                    if let Ok(r) = oci::Reference::chart(&h.repository, &h.chart) {
                        run.tags.expect(&r.key());
                    }
                } else {
                    run.indexes.expect(&helm::index_url(&h.repository));
                }
            } else if let Some(image) = &c.sources.oci_image {
                if let Ok(r) = oci::Reference::image(image) {
                    run.tags.expect(&r.key());
                }
            } else if let Some(repo) = &c.sources.github_releases {
                run.releases.expect(repo);
            }
            if matches!(c.track, Track::Channel(_)) {
                run.channels
                    .expect(c.sources.channel_server.as_deref().unwrap_or_default());
            }
        }
        run
    }

    /// The same run, judging releases at `now` (see [`fetch_each_at`]).
    pub fn as_of(mut self, now: DateTime<Utc>) -> Run {
        self.as_of = Some(now);
        self
    }
}

type Shared<T> = Arc<tokio::sync::OnceCell<std::result::Result<Arc<T>, Arc<Error>>>>;

/// Single-flight results by source key, each kept until its last expected reader has it.
struct Memo<T> {
    entries: std::sync::Mutex<HashMap<String, (usize, Shared<T>)>>,
}

impl<T> Default for Memo<T> {
    fn default() -> Self {
        Memo {
            entries: std::sync::Mutex::new(HashMap::new()),
        }
    }
}

impl<T> Memo<T> {
    fn expect(&self, key: &str) {
        let mut m = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        m.entry(key.to_string()).or_default().0 += 1;
    }

    /// The value for `key`: fetched by the first reader, shared with the others. A key no
    /// component was counted for (or counted once) is fetched without being kept.
    async fn get<F, Fut>(&self, key: &str, fetch: F) -> Result<Arc<T>>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<T>>,
    {
        let cell = {
            let mut m = self.entries.lock().unwrap_or_else(|e| e.into_inner());
            match m.get_mut(key) {
                Some((readers, cell)) if *readers > 1 => {
                    *readers -= 1;
                    Some(cell.clone())
                }
                Some(_) => m.remove(key).map(|(_, cell)| cell),
                None => None,
            }
        };
        match cell {
            None => fetch().await.map(Arc::new),
            Some(cell) => cell
                .get_or_init(|| async { fetch().await.map(Arc::new).map_err(Arc::new) })
                .await
                .clone()
                .map_err(Error::Shared),
        }
    }
}

/// Counters of the network side of a run (for the report, the benchmark and metrics).
#[derive(Debug, Default)]
pub struct Stats {
    pub requests: AtomicU64,
    pub not_modified: AtomicU64,
    pub bytes: AtomicU64,
    pub errors: AtomicU64,
    /// What GitHub last said of the rate limit left.
    pub rate_remaining: RateRemaining,
}

/// The last `x-ratelimit-remaining` GitHub sent, for the metric; unknown until an answer has it.
#[derive(Debug)]
pub struct RateRemaining(AtomicU64);

impl Default for RateRemaining {
    fn default() -> Self {
        RateRemaining(AtomicU64::new(u64::MAX))
    }
}

impl RateRemaining {
    pub fn note(&self, headers: &::http::HeaderMap) {
        if let Some(n) = headers
            .get("x-ratelimit-remaining")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok())
        {
            self.0.store(n, Ordering::Relaxed);
        }
    }

    pub fn get(&self) -> Option<u64> {
        Some(self.0.load(Ordering::Relaxed)).filter(|n| *n != u64::MAX)
    }
}

impl Stats {
    pub fn snapshot(&self) -> StatsSnapshot {
        StatsSnapshot {
            requests: self.requests.load(Ordering::Relaxed),
            not_modified: self.not_modified.load(Ordering::Relaxed),
            bytes: self.bytes.load(Ordering::Relaxed),
            errors: self.errors.load(Ordering::Relaxed),
        }
    }
    pub(crate) fn count(field: &AtomicU64, n: u64) {
        field.fetch_add(n, Ordering::Relaxed);
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct StatsSnapshot {
    pub requests: u64,
    pub not_modified: u64,
    pub bytes: u64,
    pub errors: u64,
}

/// Network settings shared by the live sources.
#[derive(Debug, Clone)]
pub struct NetConfig {
    /// GitHub's REST API base URL (GitHub Enterprise: `https://HOST/api/v3`).
    pub github_api_url: String,
    /// A GitHub token; optional (unauthenticated requests get 60 per hour).
    pub github_token: Option<Secret>,
    /// Replaces every component's channel server URL when set (mirrors, tests).
    pub k3s_channel_url: Option<String>,
    /// Per request, including reading the body.
    pub timeout: std::time::Duration,
    /// Retries after a 5xx, a transport error or a short rate-limit wait.
    pub retries: u32,
    /// The first backoff; doubled on every retry.
    pub backoff: std::time::Duration,
    /// Rate-limit waits longer than this skip the source instead of waiting.
    pub max_wait: std::time::Duration,
    /// How many components are fetched at once.
    pub concurrency: usize,
    /// The least time between two writes to the forge. GitHub asks for "at least one second
    /// between each request" that creates content ("Best practices for using the REST API").
    pub write_interval: std::time::Duration,
    /// Where ETags and bodies are kept (and when each OCI tag was first seen); `None` disables
    /// the cache.
    pub cache_dir: Option<std::path::PathBuf>,
    /// Basic credentials per OCI registry (from a Docker-style config file, `--registry-config`);
    /// `None` reads every registry anonymously.
    pub registry_credentials: Option<oci::Credentials>,
}

impl Default for NetConfig {
    fn default() -> Self {
        NetConfig {
            write_interval: std::time::Duration::from_secs(1),
            github_api_url: github::DEFAULT_API_URL.to_string(),
            github_token: None,
            k3s_channel_url: None,
            timeout: std::time::Duration::from_secs(30),
            retries: 2,
            backoff: std::time::Duration::from_millis(500),
            max_wait: std::time::Duration::from_secs(60),
            concurrency: 16,
            cache_dir: None,
            registry_credentials: None,
        }
    }
}

/// A secret string that never prints.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Self {
        Secret(s.into())
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// The live sources: GitHub, channel servers, Helm indexes and OCI registries over the network.
pub struct Live {
    github: github::Client,
    channels: channel::Client,
    helm: helm::Client,
    oci: oci::Client,
    k3s_channel_url: Option<String>,
    pub stats: Arc<Stats>,
}

impl Live {
    pub fn new(cfg: &NetConfig) -> Result<Live> {
        install_crypto_provider();
        let stats = Arc::new(Stats::default());
        let cache = cache::Cache::open(cfg.cache_dir.clone());
        let get = http::Getter::new(cfg, stats.clone()).map_err(Error::Client)?;
        Ok(Live {
            github: github::Client::new(cfg, cache.clone(), stats.clone())?,
            channels: channel::Client::new(get.clone()),
            helm: helm::Client::new(get),
            oci: oci::Client::new(cfg, cache, stats.clone())?,
            k3s_channel_url: cfg.k3s_channel_url.clone(),
            stats,
        })
    }

    /// The tags of an OCI repository, read once per run however many components list it.
    async fn oci_listing(
        &self,
        reference: &str,
        r: Result<oci::Reference, String>,
        run: &Run,
    ) -> Result<Arc<oci::Listing>> {
        let r = r.map_err(|detail| oci::Error::BadReference {
            reference: reference.to_string(),
            detail,
        })?;
        run.tags
            .get(&r.key(), || async {
                Ok(self.oci.list(&r, chrono::Utc::now()).await?)
            })
            .await
    }

    async fn channel_latest(&self, c: &Component, name: &str, run: &Run) -> Result<String> {
        let base = self
            .k3s_channel_url
            .clone()
            .or_else(|| c.sources.channel_server.clone())
            .ok_or_else(|| Error::NoChannelServer {
                component: c.name.clone(),
                channel: name.to_string(),
            })?;
        let key = c.sources.channel_server.as_deref().unwrap_or_default();
        let channels = run
            .channels
            .get(key, || async { Ok(self.channels.channels(&base).await?) })
            .await?;
        channels
            .latest(name)
            .map(str::to_string)
            .ok_or_else(|| Error::UnknownChannel {
                component: c.name.clone(),
                channel: name.to_string(),
                known: channels.names().join(", "),
            })
    }
}

impl Upstream for Live {
    async fn fetch(&self, c: &Component, run: &Run) -> Result<Fetched> {
        let channel_latest = match &c.track {
            Track::Channel(name) => Some(self.channel_latest(c, name, run).await?),
            _ => None,
        };
        let (source, releases) = if let Some(h) = &c.sources.helm_chart
            && helm::is_oci(&h.repository)
        {
            let listing = self
                .oci_listing(
                    &h.repository,
                    oci::Reference::chart(&h.repository, &h.chart),
                    run,
                )
                .await?;
            (
                format!("helm:{}#{}", h.repository, h.chart),
                listing.releases(oci::Kind::Chart, run.as_of),
            )
        } else if let Some(h) = &c.sources.helm_chart {
            let url = helm::index_url(&h.repository);
            let index = run
                .indexes
                .get(&url, || async { Ok(self.helm.index(&url).await?) })
                .await?;
            (
                format!("helm:{}#{}", h.repository, h.chart),
                index.chart(&url, &h.chart)?,
            )
        } else if let Some(image) = &c.sources.oci_image {
            let listing = self
                .oci_listing(image, oci::Reference::image(image), run)
                .await?;
            (
                format!("oci:{}", listing.reference),
                listing.releases(oci::Kind::Image, run.as_of),
            )
        } else if let Some(repo) = &c.sources.github_releases {
            let releases = run
                .releases
                .get(repo, || async { Ok(self.github.releases(repo).await?) })
                .await?;
            (format!("github:{repo}"), Arc::unwrap_or_clone(releases))
        } else {
            return Err(Error::NoSource {
                component: c.name.clone(),
            });
        };
        Ok(Fetched {
            source,
            releases,
            channel_latest,
        })
    }
}

/// Fetch every component from `up`, at most `concurrency` at a time, and hand each result to `f`
/// as soon as it arrives (so that only `f`'s output stays in memory). Results come back in the
/// order of `components`; `None` where a task died.
pub async fn fetch_each<U, T, F>(
    up: Arc<U>,
    components: &[Component],
    concurrency: usize,
    f: F,
) -> Vec<Option<T>>
where
    U: Upstream + 'static,
    T: Send + 'static,
    F: Fn(&Component, Result<Fetched>) -> T + Send + Sync + 'static,
{
    fetch_each_at(up, components, concurrency, None, f).await
}

/// [`fetch_each`] for a run that judges releases at `as_of` (`check`'s `now`): a release a
/// source sees for the first time in this run (an OCI tag) is dated then, so that it is neither
/// dropped as "published after now" nor taken for older than it is.
pub async fn fetch_each_at<U, T, F>(
    up: Arc<U>,
    components: &[Component],
    concurrency: usize,
    as_of: Option<DateTime<Utc>>,
    f: F,
) -> Vec<Option<T>>
where
    U: Upstream + 'static,
    T: Send + 'static,
    F: Fn(&Component, Result<Fetched>) -> T + Send + Sync + 'static,
{
    use tracing::Instrument;
    let f = Arc::new(f);
    let mut run = Run::new(components);
    run.as_of = as_of;
    let run = Arc::new(run);
    let permits = Arc::new(tokio::sync::Semaphore::new(concurrency.max(1)));
    let mut tasks = tokio::task::JoinSet::new();
    for (i, c) in components.iter().enumerate() {
        let (c, up, f, permits, run) = (
            c.clone(),
            up.clone(),
            f.clone(),
            permits.clone(),
            run.clone(),
        );
        let span = tracing::info_span!("fetch", component = %c.name);
        tasks.spawn(
            async move {
                let _permit = permits.acquire_owned().await;
                let fetched = up.fetch(&c, &run).await;
                if let Err(e) = &fetched {
                    tracing::info!(error = %e, "source failed");
                }
                (i, f(&c, fetched))
            }
            .instrument(span),
        );
    }
    let mut out: Vec<Option<T>> = std::iter::repeat_with(|| None)
        .take(components.len())
        .collect();
    while let Some(done) = tasks.join_next().await {
        match done {
            Ok((i, t)) => out[i] = Some(t),
            Err(e) => tracing::error!(error = %e, "a fetch task failed"),
        }
    }
    out
}

/// rustls needs one process-wide crypto provider; upkeep uses ring (no C toolchain needed beyond
/// what ring builds). Installing twice is harmless.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// Cut `s` to at most `max` bytes at a character boundary; says whether it was cut.
pub fn truncate_utf8(s: &mut String, max: usize) -> bool {
    if s.len() <= max {
        return false;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s.truncate(end);
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn truncation_respects_char_boundaries() {
        let mut s = "ééé".to_string();
        assert!(truncate_utf8(&mut s, 3));
        assert_eq!(s, "é");
        let mut t = "abc".to_string();
        assert!(!truncate_utf8(&mut t, 3));
    }

    #[test]
    fn secrets_do_not_print() {
        let s = Secret::new("ghp_supersecret");
        assert!(!format!("{s:?}").contains("supersecret"));
    }

    #[test]
    fn releases_read_per_scheme_and_skip_odd_tags() {
        let f = Fetched {
            source: "x".into(),
            releases: ["v1.2.3", "tags/v1.2.4", "1.3.0"]
                .iter()
                .map(|t| UpstreamRelease {
                    tag: t.to_string(),
                    published_at: None,
                    prerelease: false,
                    notes: None,
                    url: None,
                })
                .collect(),
            channel_latest: None,
        };
        let (rs, skipped) = f.releases_as(Scheme::Semver);
        assert_eq!(rs.len(), 2);
        assert_eq!(skipped, 1);
    }
}
