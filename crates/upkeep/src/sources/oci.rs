//! OCI registries: a repository's tags through the OCI distribution API, for Helm charts kept in
//! a registry (`helmChart: {repository: oci://HOST/PATH, chart: C}` reads the repository
//! `PATH/C`, as Helm does) and for container images (`ociImage: HOST/NAME`).
//!
//! - Listing: `GET https://HOST/v2/NAME/tags/list?n=PAGE`, then every `Link: <...>; rel="next"`
//!   (relative or absolute, never to another host), bounded in pages, tags and bytes
//!   (opencontainers/distribution-spec `spec.md`, "Listing Tags").
//! - Auth: a `401` with `WWW-Authenticate: Bearer realm=...,service=...,scope=...` is answered by
//!   a token from the realm (`GET REALM?service=...&scope=...`, anonymously or with HTTP Basic
//!   credentials for the registry from `--registry-config`; `token` or `access_token` in the
//!   answer), and the request is sent again with `Authorization: Bearer` (distribution/distribution
//!   `docs/content/spec/auth/token.md`); a `Basic` challenge is answered with the credentials.
//!   Tokens and passwords are [`Secret`]s: never logged, never in an error message.
//! - Tags: cosign's signature, attestation and SBOM tags (`sha256-<hex>.sig`, `.att`, `.sbom`),
//!   the referrers-fallback tags (`sha256-<hex>`), bare digests and `latest` are dropped, and so
//!   is any tag outside the spec's grammar (at most 128 characters). A chart's `_` reads back as
//!   `+`: Helm pushes version `1.2.3+build` as tag `1.2.3_build` (helm/helm
//!   `pkg/registry/reference.go` `newReference`, read back in `pkg/registry/client.go` `Tags`).
//! - Dates: a registry gives none. A tag's release time is when upkeep first saw it, kept in the
//!   cache directory (one small JSON per repository, written atomically; an unreadable one is
//!   discarded with a warning). A tag seen for the first time is therefore as young as can be:
//!   its minimum release age counts from the run that saw it (dated at that run's `now`, see
//!   [`Listing::releases`]), however old it is upstream; on the first run with an empty cache,
//!   that holds for every tag, so enabling OCI sources delays proposals by the minimum age. Without
//!   a cache directory there is no time at all, and a release without one never passes an age
//!   gate (`select`'s `NoTimestamp`): a minimum age then holds OCI releases back, it never lets
//!   one through early. Without a minimum age, dates do not matter.
//! - Plain HTTP only for a registry on `localhost` or `127.0.0.0/8` (as Docker and
//!   go-containerregistry treat loopback registries); everything else is HTTPS.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use chrono::{DateTime, Utc};
use reqwest::Url;
use reqwest::header::{ACCEPT, AUTHORIZATION, HeaderMap, HeaderValue, LINK, WWW_AUTHENTICATE};
use serde::{Deserialize, Serialize};

use super::cache::{Cache, fnv1a, write_bytes_atomic};
use super::http::error_chain;
use super::{NetConfig, Secret, Stats, UpstreamRelease};

/// Docker Hub as image references name it; its API is at [`DOCKER_HUB_API`].
pub const DOCKER_HUB: &str = "docker.io";
/// Where Docker Hub's registry API answers.
pub const DOCKER_HUB_API: &str = "registry-1.docker.io";
/// A tag is at most this long (distribution-spec, "Pulling manifests").
pub const MAX_TAG_LEN: usize = 128;
/// A repository name with its registry is at most this long (the spec's note on clients).
const MAX_NAME_LEN: usize = 255;
/// One page of tags; a page of 1,000 tags of 128 characters is about 130 KB.
const MAX_PAGE_BYTES: usize = 8 * 1024 * 1024;
/// A token answer; JWTs run to a few kilobytes.
const MAX_TOKEN_BYTES: usize = 1024 * 1024;
/// What is read of an error answer (for its error code).
const MAX_ERROR_BYTES: usize = 64 * 1024;
/// The first-seen file of one repository.
const MAX_SEEN_BYTES: u64 = 32 * 1024 * 1024;
/// Bumped when the first-seen file format changes; older files are then discarded.
const SEEN_FORMAT: u32 = 1;
/// A Docker config file with credentials is small.
const MAX_CONFIG_BYTES: u64 = 4 * 1024 * 1024;

/// How much of a repository's listing is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Tags asked for per page (`n`); registries may answer fewer (and then link the rest).
    pub page_size: usize,
    /// More pages than this fail the source.
    pub max_pages: usize,
    /// More tags than this (after dropping signatures and the like) fail the source.
    pub max_tags: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            page_size: 1000,
            max_pages: 500,
            max_tags: 100_000,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(
        "`{reference}` is not an OCI repository: {detail} (hint: an image is HOST/NAME like ghcr.io/fluxcd/flux-cli; a chart is `helmChart: {{repository: oci://HOST/PATH, chart: NAME}}`)"
    )]
    BadReference { reference: String, detail: String },
    #[error(
        "OCI registry {registry} has no repository {repository} (404{}) (hint: check the name in versions.yaml; a chart in oci://HOST/PATH is the repository PATH/CHART)",
        code_suffix(code)
    )]
    NotFound {
        registry: String,
        repository: String,
        code: Option<String>,
    },
    #[error(
        "OCI registry {registry} refused to list the tags of {repository} without credentials (401{}) (hint: a private repository needs credentials for {registry} in the file given with --registry-config; registries answer the same for a repository that does not exist, so check the name too)",
        code_suffix(code)
    )]
    NeedsCredentials {
        registry: String,
        repository: String,
        code: Option<String>,
    },
    #[error(
        "OCI registry {registry} refused the credentials for {registry} while listing {repository} ({status}) (hint: check the entry for {registry} in the --registry-config file; the password or token may have expired or been revoked)"
    )]
    CredentialsRefused {
        registry: String,
        repository: String,
        status: u16,
    },
    #[error(
        "OCI registry {registry} denied listing the tags of {repository} ({status}{}){} (hint: the account may not read this repository, or the name is wrong)",
        code_suffix(code),
        if *with_credentials { " with the credentials from --registry-config" } else { "" }
    )]
    Denied {
        registry: String,
        repository: String,
        status: u16,
        code: Option<String>,
        with_credentials: bool,
    },
    #[error(
        "OCI registry {registry} asked for authentication upkeep cannot give while listing {repository}: {detail} (hint: upkeep answers Bearer token challenges, and Basic ones with credentials from --registry-config)"
    )]
    Challenge {
        registry: String,
        repository: String,
        detail: String,
    },
    #[error(
        "the token service of OCI registry {registry} ({realm}) gave no usable token for {repository}: {detail} (hint: the registry or its token service is failing or is not an OCI registry; upkeep tries again next run)"
    )]
    Token {
        registry: String,
        repository: String,
        realm: String,
        detail: String,
    },
    #[error(
        "OCI registry {registry} is rate limiting upkeep (429) while listing {repository} (hint: upkeep tries again next run; credentials in --registry-config often raise the limit)"
    )]
    RateLimited {
        registry: String,
        repository: String,
    },
    #[error("OCI registry {registry} answered {status}{} listing {repository}{}", code_suffix(code), if *status >= 500 { " (the registry failed; upkeep retried and tries again next run)" } else { "" })]
    Status {
        registry: String,
        repository: String,
        status: u16,
        code: Option<String>,
    },
    #[error(
        "OCI registry {registry} did not answer within {after:?} listing {repository} (hint: check the network, or raise --timeout)"
    )]
    Timeout {
        registry: String,
        repository: String,
        after: Duration,
    },
    #[error(
        "cannot reach OCI registry {registry} listing {repository}: {detail} (hint: check the registry's name and the network)"
    )]
    Transport {
        registry: String,
        repository: String,
        detail: String,
    },
    #[error(
        "OCI registry {registry}'s answer for {repository} is not a tag list: {detail} (hint: is {registry} an OCI registry?)"
    )]
    Parse {
        registry: String,
        repository: String,
        detail: String,
    },
    #[error(
        "OCI registry {registry}'s answer for {repository} is larger than {limit} bytes; refusing to read it"
    )]
    TooLarge {
        registry: String,
        repository: String,
        limit: usize,
    },
    #[error(
        "OCI registry {registry} lists more than {limit} pages of tags for {repository}; stopped there (hint: the registry pages very small or its next-page links never end; upkeep reads at most {limit} pages)"
    )]
    TooManyPages {
        registry: String,
        repository: String,
        limit: usize,
    },
    #[error(
        "OCI registry {registry} lists more than {limit} tags for {repository}; stopped there (hint: a repository of nightly or per-commit tags is not a release source; follow the project's releases with `githubReleases: owner/repo` instead)"
    )]
    TooManyTags {
        registry: String,
        repository: String,
        limit: usize,
    },
    #[error(
        "OCI registry {registry} sent a next-page link for {repository} that upkeep does not follow: {detail}"
    )]
    BadLink {
        registry: String,
        repository: String,
        detail: String,
    },
    #[error("cannot set up the HTTP client for OCI registries: {0}")]
    Client(String),
}

fn code_suffix(code: &Option<String>) -> String {
    code.as_ref().map(|c| format!(" {c}")).unwrap_or_default()
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A repository in a registry: where a chart's or an image's tags are listed.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Reference {
    /// The registry as written (host and optional port, lowercase; Docker Hub as `docker.io`).
    pub registry: String,
    /// The repository's name in the registry, e.g. `controlplaneio-fluxcd/charts/flux-operator`.
    pub repository: String,
}

impl std::fmt::Display for Reference {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.registry, self.repository)
    }
}

impl Reference {
    /// An image repository, `HOST/NAME` with or without `oci://`; no tag, no digest. A first
    /// component without a `.` or `:` that is not `localhost` is not a host: `rancher/k3s` is
    /// `docker.io/rancher/k3s` and `nginx` is `docker.io/library/nginx`, as Docker reads them.
    pub fn image(text: &str) -> std::result::Result<Reference, String> {
        let raw = text.trim();
        let rest = raw.strip_prefix("oci://").unwrap_or(raw);
        if rest.is_empty() {
            return Err("it is empty".into());
        }
        if rest.contains('@') {
            return Err("it has a digest (`@...`): give the repository alone".into());
        }
        if rest.contains("://") {
            return Err("the only scheme allowed is oci://".into());
        }
        let (registry, name) = match rest.split_once('/') {
            Some((first, tail)) if is_host(first) => (first, tail),
            _ => (DOCKER_HUB, rest),
        };
        if name
            .rsplit('/')
            .next()
            .is_some_and(|last| last.contains(':'))
        {
            return Err("it has a tag (`:TAG`): give the repository alone".into());
        }
        Reference::new(registry, name)
    }

    /// A chart in a Helm OCI repository: `oci://HOST/PATH` and chart `C` is the repository
    /// `PATH/C` on `HOST`.
    pub fn chart(repository: &str, chart: &str) -> std::result::Result<Reference, String> {
        let rest = repository
            .trim()
            .strip_prefix("oci://")
            .ok_or("it does not start with oci://")?
            .trim_end_matches('/');
        let (host, path) = rest.split_once('/').unwrap_or((rest, ""));
        if path.contains(':') || path.contains('@') {
            return Err("a chart repository has no tag or digest".into());
        }
        let name = if path.is_empty() {
            chart.to_string()
        } else {
            format!("{path}/{chart}")
        };
        Reference::new(host, &name)
    }

    fn new(registry: &str, name: &str) -> std::result::Result<Reference, String> {
        let registry = normalize_registry(registry)
            .ok_or_else(|| format!("`{registry}` is not a registry host (HOST or HOST:PORT)"))?;
        let name = name.trim_end_matches('/');
        if name.is_empty() {
            return Err("it names no repository after the registry".into());
        }
        if let Some(bad) = name.split('/').find(|c| !name_component_ok(c)) {
            return Err(format!(
                "`{bad}` is not a repository name component (lowercase letters and digits, separated by `.`, `_`, `__` or dashes)"
            ));
        }
        let repository = if registry == DOCKER_HUB && !name.contains('/') {
            format!("library/{name}")
        } else {
            name.to_string()
        };
        if registry.len() + 1 + repository.len() > MAX_NAME_LEN {
            return Err(format!("it is longer than {MAX_NAME_LEN} characters"));
        }
        Ok(Reference {
            registry,
            repository,
        })
    }

    /// The host (and port) the registry API answers on.
    pub fn api_host(&self) -> &str {
        if self.registry == DOCKER_HUB {
            DOCKER_HUB_API
        } else {
            &self.registry
        }
    }

    /// Whether the registry is spoken to over plain HTTP: only on loopback.
    pub fn plain_http(&self) -> bool {
        is_loopback_host(self.api_host())
    }

    /// The key one run shares a listing under.
    pub fn key(&self) -> String {
        self.to_string()
    }

    fn tags_url(&self, page_size: usize) -> std::result::Result<Url, String> {
        let scheme = if self.plain_http() { "http" } else { "https" };
        let mut url = Url::parse(&format!(
            "{scheme}://{}/v2/{}/tags/list",
            self.api_host(),
            self.repository
        ))
        .map_err(|e| e.to_string())?;
        url.query_pairs_mut()
            .append_pair("n", &page_size.to_string());
        Ok(url)
    }
}

/// `distribution/reference`'s rule: a first path component is a host when it has a `.` or a
/// `:`, or is `localhost`.
fn is_host(first: &str) -> bool {
    first.contains('.') || first.contains(':') || first == "localhost"
}

/// `HOST[:PORT]`, lowercased, Docker Hub's aliases folded into `docker.io`.
fn normalize_registry(s: &str) -> Option<String> {
    let s = s.to_ascii_lowercase();
    let (host, port) = match s.rsplit_once(':') {
        Some((h, p)) => (h, Some(p)),
        None => (s.as_str(), None),
    };
    let host_ok = !host.is_empty()
        && host.len() <= 253
        && host
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || c == b'.' || c == b'-')
        && !host.starts_with(['.', '-'])
        && !host.ends_with(['.', '-']);
    let port_ok =
        port.is_none_or(|p| !p.is_empty() && p.len() <= 5 && p.bytes().all(|c| c.is_ascii_digit()));
    if !(host_ok && port_ok) {
        return None;
    }
    Some(match s.as_str() {
        "index.docker.io" | "registry-1.docker.io" | "registry.hub.docker.com" => {
            DOCKER_HUB.to_string()
        }
        _ => s,
    })
}

fn is_loopback_host(host_port: &str) -> bool {
    let host = host_port
        .rsplit_once(':')
        .map_or(host_port, |(h, _)| h)
        .trim_start_matches('[')
        .trim_end_matches(']');
    host == "localhost"
        || host == "::1"
        || host
            .parse::<std::net::Ipv4Addr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// One path component of a repository name: `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*`.
fn name_component_ok(c: &str) -> bool {
    let b = c.as_bytes();
    let alnum = |x: u8| x.is_ascii_lowercase() || x.is_ascii_digit();
    if b.is_empty() || !alnum(b[0]) || !alnum(b[b.len() - 1]) {
        return false;
    }
    let mut i = 0;
    while i < b.len() {
        if alnum(b[i]) {
            i += 1;
            continue;
        }
        let start = i;
        while i < b.len() && !alnum(b[i]) {
            i += 1;
        }
        let sep = &c[start..i];
        let ok = sep == "." || sep == "_" || sep == "__" || sep.bytes().all(|x| x == b'-');
        if !ok {
            return false;
        }
    }
    true
}

/// A tag as the distribution spec allows it: `[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}`.
pub fn valid_tag(t: &str) -> bool {
    let b = t.as_bytes();
    !b.is_empty()
        && b.len() <= MAX_TAG_LEN
        && (b[0].is_ascii_alphanumeric() || b[0] == b'_')
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || b"._-".contains(c))
}

/// A tag that is never a release: `latest`, cosign's `sha256-<hex>.sig`, `.att` and `.sbom`, the
/// referrers API's fallback tag `sha256-<hex>`, and a bare digest.
pub fn is_artifact_tag(t: &str) -> bool {
    if t == "latest" {
        return true;
    }
    let hex = |s: &str| s.len() >= 32 && s.bytes().all(|c| c.is_ascii_hexdigit());
    let stem = [".sig", ".att", ".sbom"]
        .iter()
        .find_map(|s| t.strip_suffix(s))
        .unwrap_or(t);
    if let Some((alg, digest)) = stem.split_once('-')
        && !alg.is_empty()
        && alg.len() <= 32
        && alg.bytes().all(|c| c.is_ascii_alphanumeric())
        && hex(digest)
    {
        return true;
    }
    hex(t)
}

/// A chart version from its tag: Helm writes SemVer's `+` as `_` in tags.
pub fn chart_version(tag: &str) -> String {
    tag.replace('_', "+")
}

/// The `rel="next"` URL of a `Link` header (RFC 8288: the relation may be quoted or not, and one
/// of several).
pub fn next_link(header: &str) -> Option<String> {
    let mut rest = header;
    loop {
        let start = rest.find('<')?;
        let end = start + rest[start..].find('>')?;
        let url = rest[start + 1..end].trim();
        let after = &rest[end + 1..];
        let params_end = after.find('<').unwrap_or(after.len());
        let is_next = after[..params_end].split(';').any(|p| {
            let p = p.trim().trim_end_matches(',').trim();
            p.split_once('=').is_some_and(|(k, v)| {
                k.trim().eq_ignore_ascii_case("rel")
                    && v.trim()
                        .trim_matches('"')
                        .split_ascii_whitespace()
                        .any(|r| r.eq_ignore_ascii_case("next"))
            })
        });
        if is_next && !url.is_empty() {
            return Some(url.to_string());
        }
        rest = &after[params_end..];
    }
}

/// The next page's URL: `link` resolved against the page it came with, which must stay on the
/// same scheme, host and port (a token is sent with it).
pub fn resolve_next(current: &Url, link: &str) -> std::result::Result<Url, String> {
    let next = current
        .join(link)
        .map_err(|e| format!("`{}` is not a URL: {e}", cut(link, 200)))?;
    if next.scheme() != current.scheme()
        || next.host_str() != current.host_str()
        || next.port_or_known_default() != current.port_or_known_default()
    {
        return Err(format!(
            "it points to another host ({}), and upkeep sends the registry's token to no other",
            next.host_str().unwrap_or("none")
        ));
    }
    if !next.username().is_empty() || next.password().is_some() {
        return Err("it carries credentials".into());
    }
    Ok(next)
}

fn cut(s: &str, max: usize) -> String {
    let mut s: String = s.chars().filter(|c| !c.is_control()).collect();
    super::truncate_utf8(&mut s, max);
    s
}

/// One authentication challenge of a `WWW-Authenticate` header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Challenge {
    /// Lowercase: `bearer`, `basic`.
    pub scheme: String,
    /// Parameter names lowercase, values unquoted.
    pub params: BTreeMap<String, String>,
}

/// The challenges of a `WWW-Authenticate` header (RFC 9110 section 11.6.1: a scheme, then
/// comma-separated `name=value` parameters, values tokens or quoted strings; several challenges
/// may share one header).
pub fn parse_challenges(header: &str) -> Vec<Challenge> {
    let b = header.as_bytes();
    let mut i = 0;
    let mut out = Vec::new();
    let is_tchar = |c: u8| c.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&c);
    let skip_ws = |i: &mut usize| {
        while *i < b.len() && (b[*i] == b' ' || b[*i] == b'\t') {
            *i += 1;
        }
    };
    let token = |i: &mut usize| -> String {
        let start = *i;
        while *i < b.len() && is_tchar(b[*i]) {
            *i += 1;
        }
        header[start..*i].to_string()
    };
    loop {
        while i < b.len() && (b[i] == b' ' || b[i] == b'\t' || b[i] == b',') {
            i += 1;
        }
        let scheme = token(&mut i);
        if scheme.is_empty() {
            break;
        }
        let mut ch = Challenge {
            scheme: scheme.to_ascii_lowercase(),
            params: BTreeMap::new(),
        };
        let mut first = true;
        loop {
            skip_ws(&mut i);
            let save = i;
            let name = token(&mut i);
            skip_ws(&mut i);
            if name.is_empty() || i >= b.len() || b[i] != b'=' {
                // Right after the scheme, a token68 (not used in challenges upkeep answers),
                // skipped whole; later, the next challenge's scheme.
                if first && !name.is_empty() {
                    while i < b.len() && b[i] != b',' {
                        i += 1;
                    }
                } else {
                    i = save;
                }
                break;
            }
            first = false;
            i += 1;
            skip_ws(&mut i);
            let value = if i < b.len() && b[i] == b'"' {
                i += 1;
                let mut v = Vec::new();
                while i < b.len() && b[i] != b'"' {
                    if b[i] == b'\\' && i + 1 < b.len() {
                        i += 1;
                    }
                    v.push(b[i]);
                    i += 1;
                }
                i += 1;
                String::from_utf8_lossy(&v).into_owned()
            } else {
                // A token by the grammar; read leniently up to the next comma or space, as
                // some servers leave URLs unquoted.
                let start = i;
                while i < b.len() && b[i] != b',' && b[i] != b' ' && b[i] != b'\t' {
                    i += 1;
                }
                header[start..i].to_string()
            };
            ch.params.insert(name.to_ascii_lowercase(), value);
            skip_ws(&mut i);
            if i < b.len() && b[i] == b',' {
                i += 1;
            } else {
                break;
            }
        }
        out.push(ch);
        if i >= b.len() {
            break;
        }
    }
    out
}

/// A user name and password (or personal access token) for one registry.
#[derive(Clone)]
pub struct Basic {
    pub username: String,
    pub password: Secret,
}

/// Basic credentials per registry, from a Docker-style config file. Prints only the hosts.
#[derive(Clone, Default)]
pub struct Credentials {
    by_registry: BTreeMap<String, Basic>,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("registries", &self.by_registry.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl Credentials {
    /// Add (or replace) the credentials for `registry` (a host, a URL like
    /// `https://index.docker.io/v1/`, or `docker.io`).
    pub fn insert(&mut self, registry: &str, username: &str, password: &str) -> bool {
        let Some(key) = config_key(registry) else {
            return false;
        };
        self.by_registry.insert(
            key,
            Basic {
                username: username.to_string(),
                password: Secret::new(password),
            },
        );
        true
    }

    /// The credentials for a registry as a [`Reference`] names it.
    pub fn get(&self, registry: &str) -> Option<&Basic> {
        self.by_registry.get(registry)
    }

    /// The registries credentials are held for.
    pub fn registries(&self) -> impl Iterator<Item = &str> {
        self.by_registry.keys().map(String::as_str)
    }

    /// Read a Docker config file (`~/.docker/config.json`'s format): `{"auths": {"ghcr.io":
    /// {"auth": "<base64 of user:password>"}}}`, or `username` and `password` in an entry.
    /// Entries without either (credential helpers, identity tokens) are skipped with a warning.
    /// No error message carries a value of the file.
    pub fn from_docker_config(text: &str) -> std::result::Result<Credentials, String> {
        let v: serde_json::Value = serde_json::from_str(text)
            .map_err(|e| format!("it is not JSON (line {}, column {})", e.line(), e.column()))?;
        let mut out = Credentials::default();
        let Some(obj) = v.as_object() else {
            return Err("it is not a JSON object".into());
        };
        let auths = match obj.get("auths") {
            None => return Ok(out),
            Some(serde_json::Value::Object(m)) => m,
            Some(_) => return Err("`auths` is not an object".into()),
        };
        for (key, entry) in auths {
            let field = |n: &str| {
                entry
                    .get(n)
                    .and_then(|x| x.as_str())
                    .filter(|s| !s.is_empty())
            };
            let pair = if let Some(auth) = field("auth") {
                let decoded = base64::engine::general_purpose::STANDARD
                    .decode(auth.trim())
                    .map_err(|_| format!("`auths.{key}.auth` is not base64"))?;
                let text = String::from_utf8(decoded)
                    .map_err(|_| format!("`auths.{key}.auth` is not UTF-8 once decoded"))?;
                let (u, p) = text.split_once(':').ok_or_else(|| {
                    format!("`auths.{key}.auth` is not base64 of `username:password`")
                })?;
                (u.to_string(), p.trim_end_matches('\0').to_string())
            } else if let (Some(u), Some(p)) = (field("username"), field("password")) {
                (u.to_string(), p.to_string())
            } else {
                tracing::warn!(
                    registry = %key,
                    "the registry config has no `auth` or `username`/`password` for this registry (credential helpers and identity tokens are not read); upkeep reads it anonymously"
                );
                continue;
            };
            if pair.0.is_empty() {
                return Err(format!("`auths.{key}` has an empty user name"));
            }
            if !out.insert(key, &pair.0, &pair.1) {
                return Err(format!("`auths.{key}`: `{key}` is not a registry host"));
            }
        }
        Ok(out)
    }

    /// [`from_docker_config`](Self::from_docker_config) of a file.
    pub fn from_file(path: &Path) -> std::result::Result<Credentials, String> {
        let say = |what: String| format!("registry config {}: {what}", path.display());
        let meta = std::fs::metadata(path).map_err(|e| say(e.to_string()))?;
        if meta.len() > MAX_CONFIG_BYTES {
            return Err(say(format!("larger than {MAX_CONFIG_BYTES} bytes")));
        }
        let text = std::fs::read_to_string(path).map_err(|e| say(e.to_string()))?;
        Credentials::from_docker_config(&text).map_err(say)
    }
}

/// A config file's key (`ghcr.io`, `https://index.docker.io/v1/`) as a registry name.
fn config_key(key: &str) -> Option<String> {
    let k = key.trim();
    let k = k
        .strip_prefix("https://")
        .or_else(|| k.strip_prefix("http://"))
        .unwrap_or(k);
    normalize_registry(k.split('/').next().unwrap_or(k))
}

/// What a listing is read as: chart versions (`_` read back as `+`) or image tags.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Chart,
    Image,
}

/// One tag and when upkeep first saw it (`None` without a cache directory).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tag {
    pub name: String,
    pub first_seen: Option<DateTime<Utc>>,
    /// First seen by this listing (not in the cache before).
    pub new: bool,
}

/// A repository's tags, every page read, signatures and the like dropped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listing {
    pub reference: Reference,
    /// In the registry's order (lexical).
    pub tags: Vec<Tag>,
    /// Tags dropped for being outside the spec's grammar (too long, odd characters).
    pub invalid: usize,
}

impl Listing {
    /// The tags as releases: a chart's `_` reads back as `+`; the release time is the first
    /// sighting, and for a tag this listing saw first, no later than `as_of` (the time the run
    /// judges releases at, taken before the listing): new is new as of then, not "after now".
    pub fn releases(&self, kind: Kind, as_of: Option<DateTime<Utc>>) -> Vec<UpstreamRelease> {
        self.tags
            .iter()
            .map(|t| UpstreamRelease {
                tag: match kind {
                    Kind::Chart => chart_version(&t.name),
                    Kind::Image => t.name.clone(),
                },
                published_at: match (t.first_seen, as_of) {
                    (Some(seen), Some(now)) if t.new => Some(seen.min(now)),
                    (seen, _) => seen,
                },
                prerelease: false,
                notes: None,
                url: None,
            })
            .collect()
    }
}

/// The first-seen times of a repository's tags: the tags still listed keep theirs, new ones get
/// `now`, tags no longer listed are forgotten (a tag deleted and pushed again is new again).
pub fn stamp(
    previous: &BTreeMap<String, DateTime<Utc>>,
    tags: &[String],
    now: DateTime<Utc>,
) -> BTreeMap<String, DateTime<Utc>> {
    tags.iter()
        .map(|t| (t.clone(), previous.get(t).copied().unwrap_or(now)))
        .collect()
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct SeenFile {
    format: u32,
    repository: String,
    first_seen: BTreeMap<String, DateTime<Utc>>,
}

/// How a request is authorized.
enum Auth {
    None,
    Bearer(Secret),
    Basic(Basic),
}

impl Auth {
    fn header(&self) -> Option<HeaderValue> {
        let text = match self {
            Auth::None => return None,
            Auth::Bearer(t) => format!("Bearer {}", t.expose()),
            Auth::Basic(b) => basic_header(b),
        };
        let mut v = HeaderValue::from_str(&text).ok()?;
        v.set_sensitive(true);
        Some(v)
    }
}

fn basic_header(b: &Basic) -> String {
    let raw = format!("{}:{}", b.username, b.password.expose());
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(raw)
    )
}

struct Answer {
    status: u16,
    headers: HeaderMap,
    body: Vec<u8>,
}

enum Fail {
    Timeout,
    Transport(String),
    TooLarge(usize),
}

/// Reads repositories' tags from OCI registries.
pub struct Client {
    http: reqwest::Client,
    credentials: Credentials,
    cache: Arc<Cache>,
    stats: Arc<Stats>,
    timeout: Duration,
    retries: u32,
    backoff: Duration,
    limits: Limits,
}

impl Client {
    pub fn new(cfg: &NetConfig, cache: Arc<Cache>, stats: Arc<Stats>) -> Result<Client> {
        super::install_crypto_provider();
        let http = reqwest::Client::builder()
            .user_agent(concat!("upkeep/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(cfg.timeout)
            .build()
            .map_err(|e| Error::Client(error_chain(&e)))?;
        Ok(Client {
            http,
            credentials: cfg.registry_credentials.clone().unwrap_or_default(),
            cache,
            stats,
            timeout: cfg.timeout,
            retries: cfg.retries,
            backoff: cfg.backoff,
            limits: Limits::default(),
        })
    }

    /// The same client with other bounds (tests, small machines).
    pub fn with_limits(mut self, limits: Limits) -> Client {
        self.limits = limits;
        self
    }

    /// Every tag of `r` with its first sighting, stamped at `now` for tags new to the cache.
    pub async fn list(&self, r: &Reference, now: DateTime<Utc>) -> Result<Listing> {
        let (names, invalid) = self.tags(r).await?;
        let seen = self.first_seen(r, &names, now);
        let tags = names
            .into_iter()
            .map(|name| {
                let (first_seen, new) = match &seen {
                    Some((times, new)) => (times.get(&name).copied(), new.contains(&name)),
                    None => (None, false),
                };
                Tag {
                    name,
                    first_seen,
                    new,
                }
            })
            .collect();
        Ok(Listing {
            reference: r.clone(),
            tags,
            invalid,
        })
    }

    /// The first-seen times of `tags`, updated and written back, and which tags are new to the
    /// record; `None` without a cache.
    #[allow(clippy::type_complexity)]
    fn first_seen(
        &self,
        r: &Reference,
        tags: &[String],
        now: DateTime<Utc>,
    ) -> Option<(BTreeMap<String, DateTime<Utc>>, HashSet<String>)> {
        let path = self.seen_path(r)?;
        let previous = read_seen(&path, r).unwrap_or_default();
        let stamped = stamp(&previous, tags, now);
        let new = tags
            .iter()
            .filter(|t| !previous.contains_key(*t))
            .cloned()
            .collect();
        if stamped != previous {
            let file = SeenFile {
                format: SEEN_FORMAT,
                repository: r.key(),
                first_seen: stamped.clone(),
            };
            let written = serde_json::to_vec(&file)
                .map_err(std::io::Error::other)
                .and_then(|bytes| write_bytes_atomic(&path, &bytes));
            if let Err(e) = written {
                tracing::warn!(file = %path.display(), error = %e, "cannot record when the tags were first seen; new tags count as new again next run");
            }
        }
        Some((stamped, new))
    }

    fn seen_path(&self, r: &Reference) -> Option<PathBuf> {
        self.cache
            .file(&format!("oci-seen-{:016x}.json", fnv1a(r.key().as_bytes())))
    }

    /// Every tag of `r` (all pages), signatures, attestations, digests and `latest` dropped; and
    /// how many were dropped for being outside the tag grammar.
    pub async fn tags(&self, r: &Reference) -> Result<(Vec<String>, usize)> {
        let mut url =
            r.tags_url(self.limits.page_size.max(1))
                .map_err(|detail| Error::BadReference {
                    reference: r.key(),
                    detail,
                })?;
        let mut auth = Auth::None;
        let mut out = Vec::new();
        let mut unique = HashSet::new();
        let mut invalid = 0;
        let mut visited = HashSet::new();
        for _ in 0..self.limits.max_pages {
            if !visited.insert(url.to_string()) {
                tracing::warn!(repository = %r, "a next-page link repeats a page already read; stopped there");
                return Ok((out, invalid));
            }
            let answer = self.page(r, &url, &mut auth).await?;
            let list: TagList = serde_json::from_slice(&answer.body).map_err(|e| Error::Parse {
                registry: r.registry.clone(),
                repository: r.repository.clone(),
                detail: format!("not JSON of the form {{\"name\": ..., \"tags\": [...]}} ({e})"),
            })?;
            for t in list.tags.unwrap_or_default() {
                if !valid_tag(&t) {
                    invalid += 1;
                    continue;
                }
                if is_artifact_tag(&t) || !unique.insert(t.clone()) {
                    continue;
                }
                out.push(t);
                if out.len() > self.limits.max_tags {
                    return Err(Error::TooManyTags {
                        registry: r.registry.clone(),
                        repository: r.repository.clone(),
                        limit: self.limits.max_tags,
                    });
                }
            }
            let link = answer
                .headers
                .get_all(LINK)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .find_map(next_link);
            match link {
                None => {
                    if invalid > 0 {
                        tracing::debug!(repository = %r, invalid, "tags outside the OCI tag grammar were skipped");
                    }
                    return Ok((out, invalid));
                }
                Some(l) => {
                    url = resolve_next(&url, &l).map_err(|detail| Error::BadLink {
                        registry: r.registry.clone(),
                        repository: r.repository.clone(),
                        detail,
                    })?;
                }
            }
        }
        Err(Error::TooManyPages {
            registry: r.registry.clone(),
            repository: r.repository.clone(),
            limit: self.limits.max_pages,
        })
    }

    /// One page, authorized: a 401 is answered once per page (a token may expire between pages).
    async fn page(&self, r: &Reference, url: &Url, auth: &mut Auth) -> Result<Answer> {
        let mut answered = false;
        loop {
            let ans = self.send(r, url, auth.header(), MAX_PAGE_BYTES).await?;
            let code = || error_code(&ans.body);
            let e = |status: u16| (r.registry.clone(), r.repository.clone(), status);
            let creds = self.credentials.get(&r.registry);
            match ans.status {
                200..=299 => return Ok(ans),
                401 if !answered => {
                    answered = true;
                    let challenges: Vec<Challenge> = ans
                        .headers
                        .get_all(WWW_AUTHENTICATE)
                        .iter()
                        .filter_map(|v| v.to_str().ok())
                        .flat_map(parse_challenges)
                        .collect();
                    if let Some(b) = challenges.iter().find(|c| c.scheme == "bearer") {
                        *auth = Auth::Bearer(self.token(r, b).await?);
                    } else if challenges.iter().any(|c| c.scheme == "basic") {
                        let Some(c) = creds else {
                            return Err(Error::NeedsCredentials {
                                registry: r.registry.clone(),
                                repository: r.repository.clone(),
                                code: code(),
                            });
                        };
                        if !(url.scheme() == "https" || r.plain_http()) {
                            return Err(Error::Challenge {
                                registry: r.registry.clone(),
                                repository: r.repository.clone(),
                                detail: "Basic credentials are sent over HTTPS only".into(),
                            });
                        }
                        *auth = Auth::Basic(c.clone());
                    } else {
                        return Err(Error::Challenge {
                            registry: r.registry.clone(),
                            repository: r.repository.clone(),
                            detail: if challenges.is_empty() {
                                "a 401 without a WWW-Authenticate challenge".into()
                            } else {
                                format!(
                                    "only `{}` challenges",
                                    challenges
                                        .iter()
                                        .map(|c| cut(&c.scheme, 40))
                                        .collect::<Vec<_>>()
                                        .join(", ")
                                )
                            },
                        });
                    }
                }
                401 => {
                    let (registry, repository, status) = e(401);
                    return Err(match (&auth, creds) {
                        (Auth::Basic(_), _) => Error::CredentialsRefused {
                            registry,
                            repository,
                            status,
                        },
                        (_, Some(_)) => Error::Denied {
                            registry,
                            repository,
                            status,
                            code: code(),
                            with_credentials: true,
                        },
                        (_, None) => Error::NeedsCredentials {
                            registry,
                            repository,
                            code: code(),
                        },
                    });
                }
                403 => {
                    let (registry, repository, status) = e(403);
                    return Err(Error::Denied {
                        registry,
                        repository,
                        status,
                        code: code(),
                        with_credentials: creds.is_some(),
                    });
                }
                404 => {
                    return Err(Error::NotFound {
                        registry: r.registry.clone(),
                        repository: r.repository.clone(),
                        code: code(),
                    });
                }
                429 => {
                    return Err(Error::RateLimited {
                        registry: r.registry.clone(),
                        repository: r.repository.clone(),
                    });
                }
                status => {
                    return Err(Error::Status {
                        registry: r.registry.clone(),
                        repository: r.repository.clone(),
                        status,
                        code: code(),
                    });
                }
            }
        }
    }

    /// A bearer token from the challenge's realm, with the registry's Basic credentials if any.
    async fn token(&self, r: &Reference, ch: &Challenge) -> Result<Secret> {
        let realm_text = ch.params.get("realm").map(String::as_str).unwrap_or("");
        let fail = |detail: String| Error::Token {
            registry: r.registry.clone(),
            repository: r.repository.clone(),
            realm: cut(realm_text, 200),
            detail,
        };
        let mut realm = Url::parse(realm_text)
            .map_err(|_| fail("the challenge's realm is not a URL".into()))?;
        let realm_ok = match realm.scheme() {
            "https" => true,
            "http" => r.plain_http() && realm.host_str().is_some_and(is_loopback_host),
            _ => false,
        };
        if !realm_ok {
            return Err(fail(
                "the realm is not an https URL (plain http only for a registry on loopback)".into(),
            ));
        }
        if !realm.username().is_empty() || realm.password().is_some() {
            return Err(fail("the realm URL carries credentials".into()));
        }
        {
            let mut q = realm.query_pairs_mut();
            if let Some(s) = ch.params.get("service") {
                q.append_pair("service", s);
            }
            match ch.params.get("scope").filter(|s| !s.trim().is_empty()) {
                Some(scopes) => {
                    for s in scopes.split_ascii_whitespace() {
                        q.append_pair("scope", s);
                    }
                }
                None => {
                    q.append_pair("scope", &format!("repository:{}:pull", r.repository));
                }
            }
        }
        let creds = self.credentials.get(&r.registry);
        let auth = creds.map(|c| Auth::Basic(c.clone())).unwrap_or(Auth::None);
        let ans = self.send(r, &realm, auth.header(), MAX_TOKEN_BYTES).await?;
        match ans.status {
            200..=299 => {}
            401 | 403 if creds.is_some() => {
                return Err(Error::CredentialsRefused {
                    registry: r.registry.clone(),
                    repository: r.repository.clone(),
                    status: ans.status,
                });
            }
            401 | 403 => {
                return Err(Error::NeedsCredentials {
                    registry: r.registry.clone(),
                    repository: r.repository.clone(),
                    code: error_code(&ans.body),
                });
            }
            429 => {
                return Err(Error::RateLimited {
                    registry: r.registry.clone(),
                    repository: r.repository.clone(),
                });
            }
            s => return Err(fail(format!("it answered HTTP {s}"))),
        }
        #[derive(Deserialize)]
        struct TokenAnswer {
            #[serde(default)]
            token: Option<String>,
            #[serde(default)]
            access_token: Option<String>,
        }
        // serde's message could quote a value of the answer (the token): it is not repeated.
        let t: TokenAnswer = serde_json::from_slice(&ans.body)
            .map_err(|_| fail("the answer is not JSON with a `token` or `access_token`".into()))?;
        let token = t
            .token
            .filter(|t| !t.is_empty())
            .or(t.access_token.filter(|t| !t.is_empty()))
            .ok_or_else(|| fail("the answer has neither `token` nor `access_token`".into()))?;
        if !token.bytes().all(|c| c.is_ascii_graphic()) {
            return Err(fail("the token is not printable ASCII".into()));
        }
        Ok(Secret::new(token))
    }

    /// One GET with retries on 5xx, timeouts and transport errors; any other status is the
    /// caller's. The body is read up to `limit` bytes (less for an error answer).
    async fn send(
        &self,
        r: &Reference,
        url: &Url,
        auth: Option<HeaderValue>,
        limit: usize,
    ) -> Result<Answer> {
        let mut attempt = 0;
        loop {
            let res = self.once(url, auth.clone(), limit).await;
            let retry = match &res {
                Ok(a) => a.status >= 500,
                Err(Fail::Timeout | Fail::Transport(_)) => true,
                Err(Fail::TooLarge(_)) => false,
            };
            // A 401 is the token handshake, not a failure.
            if !matches!(&res, Ok(a) if a.status < 400 || a.status == 401) {
                Stats::count(&self.stats.errors, 1);
            }
            if !retry || attempt >= self.retries {
                return res.map_err(|f| match f {
                    Fail::Timeout => Error::Timeout {
                        registry: r.registry.clone(),
                        repository: r.repository.clone(),
                        after: self.timeout,
                    },
                    Fail::Transport(detail) => Error::Transport {
                        registry: r.registry.clone(),
                        repository: r.repository.clone(),
                        detail,
                    },
                    Fail::TooLarge(limit) => Error::TooLarge {
                        registry: r.registry.clone(),
                        repository: r.repository.clone(),
                        limit,
                    },
                });
            }
            let wait = self.backoff.saturating_mul(1 << attempt.min(16));
            tracing::debug!(repository = %r, attempt, ?wait, "retrying a registry request");
            tokio::time::sleep(wait).await;
            attempt += 1;
        }
    }

    async fn once(
        &self,
        url: &Url,
        auth: Option<HeaderValue>,
        limit: usize,
    ) -> std::result::Result<Answer, Fail> {
        let fut = async {
            Stats::count(&self.stats.requests, 1);
            let mut req = self
                .http
                .get(url.clone())
                .header(ACCEPT, "application/json");
            if let Some(a) = auth {
                req = req.header(AUTHORIZATION, a);
            }
            let mut resp = req
                .send()
                .await
                .map_err(|e| Fail::Transport(error_chain(&e)))?;
            let status = resp.status().as_u16();
            let headers = resp.headers().clone();
            let limit = if (200..300).contains(&status) {
                limit
            } else {
                MAX_ERROR_BYTES
            };
            let mut body = Vec::new();
            while let Some(chunk) = resp
                .chunk()
                .await
                .map_err(|e| Fail::Transport(error_chain(&e)))?
            {
                Stats::count(&self.stats.bytes, chunk.len() as u64);
                if body.len() + chunk.len() > limit {
                    if (200..300).contains(&status) {
                        return Err(Fail::TooLarge(limit));
                    }
                    break;
                }
                body.extend_from_slice(&chunk);
            }
            Ok(Answer {
                status,
                headers,
                body,
            })
        };
        tokio::time::timeout(self.timeout, fut)
            .await
            .unwrap_or(Err(Fail::Timeout))
    }
}

#[derive(Deserialize)]
struct TagList {
    #[serde(default)]
    tags: Option<Vec<String>>,
}

/// The first error code of a distribution-spec error body (`{"errors": [{"code": ...}]}`), if it
/// looks like one (uppercase letters and underscores, short).
fn error_code(body: &[u8]) -> Option<String> {
    let v: serde_json::Value = serde_json::from_slice(body).ok()?;
    let code = v.get("errors")?.get(0)?.get("code")?.as_str()?;
    (!code.is_empty()
        && code.len() <= 40
        && code.bytes().all(|c| c.is_ascii_uppercase() || c == b'_'))
    .then(|| code.to_string())
}

/// A repository's first-seen file, if it is sound; anything else is discarded with a warning.
fn read_seen(path: &Path, r: &Reference) -> Option<BTreeMap<String, DateTime<Utc>>> {
    let meta = std::fs::metadata(path).ok()?;
    let discard = |why: &str| {
        tracing::warn!(file = %path.display(), why, "discarding an unreadable first-seen record; its tags count as new");
        let _ = std::fs::remove_file(path);
        None
    };
    if meta.len() > MAX_SEEN_BYTES {
        return discard("too large");
    }
    let Ok(bytes) = std::fs::read(path) else {
        return discard("unreadable");
    };
    match serde_json::from_slice::<SeenFile>(&bytes) {
        Ok(f) if f.format == SEEN_FORMAT && f.repository == r.key() => Some(f.first_seen),
        Ok(_) => discard("written for another repository or by another upkeep version"),
        Err(_) => discard("not valid JSON"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }

    #[test]
    fn next_links_relative_absolute_and_among_others() {
        assert_eq!(
            next_link(r#"</v2/org/app/tags/list?last=1.2.3&n=100>; rel="next""#).as_deref(),
            Some("/v2/org/app/tags/list?last=1.2.3&n=100")
        );
        assert_eq!(
            next_link(r#"<https://ghcr.io/v2/a/b/tags/list?n=2&last=x>; rel=next"#).as_deref(),
            Some("https://ghcr.io/v2/a/b/tags/list?n=2&last=x")
        );
        assert_eq!(
            next_link(r#"</first>; rel="prev", </second>;title="x"; rel="last next""#).as_deref(),
            Some("/second")
        );
        assert_eq!(next_link(r#"</only>; rel="prev""#), None);
        assert_eq!(next_link("garbage"), None);
        assert_eq!(next_link(""), None);

        let page: Url = "https://ghcr.io/v2/a/b/tags/list?n=100".parse().unwrap();
        assert_eq!(
            resolve_next(&page, "/v2/a/b/tags/list?last=x&n=100")
                .unwrap()
                .as_str(),
            "https://ghcr.io/v2/a/b/tags/list?last=x&n=100"
        );
        assert_eq!(
            resolve_next(&page, "list?last=y").unwrap().as_str(),
            "https://ghcr.io/v2/a/b/tags/list?last=y"
        );
        assert_eq!(
            resolve_next(&page, "https://ghcr.io/v2/a/b/tags/list?last=z")
                .unwrap()
                .as_str(),
            "https://ghcr.io/v2/a/b/tags/list?last=z"
        );
        // Never to another host, scheme or port: the token would go with it.
        for bad in [
            "https://evil.example/v2/a/b/tags/list",
            "http://ghcr.io/v2/a/b/tags/list",
            "https://ghcr.io:8443/v2/a/b/tags/list",
            "//evil.example/x",
            "https://user:pw@ghcr.io/v2/a/b/tags/list",
        ] {
            assert!(resolve_next(&page, bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn challenges_are_parsed_with_quoted_commas() {
        let c = parse_challenges(
            r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:samalba/my-app:pull,push""#,
        );
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].scheme, "bearer");
        assert_eq!(c[0].params["realm"], "https://auth.docker.io/token");
        assert_eq!(c[0].params["service"], "registry.docker.io");
        assert_eq!(c[0].params["scope"], "repository:samalba/my-app:pull,push");

        let c = parse_challenges(
            r#"Basic realm="Registry Realm", Bearer realm=https://x/token , service = "a\"b",error="insufficient_scope""#,
        );
        assert_eq!(c.len(), 2);
        assert_eq!(c[0].scheme, "basic");
        assert_eq!(c[0].params["realm"], "Registry Realm");
        assert_eq!(c[1].scheme, "bearer");
        assert_eq!(c[1].params["realm"], "https://x/token");
        assert_eq!(c[1].params["service"], "a\"b");
        assert_eq!(c[1].params["error"], "insufficient_scope");

        assert_eq!(parse_challenges("").len(), 0);
        assert_eq!(parse_challenges("Negotiate abc==")[0].scheme, "negotiate");
        // Unterminated quotes and stray bytes do not panic.
        for junk in [
            r#"Bearer realm="x"#,
            "Bearer ,,,=,=",
            "=",
            "Bearer realm=",
            "\u{e9}",
        ] {
            let _ = parse_challenges(junk);
        }
    }

    #[test]
    fn chart_tags_read_underscore_as_plus() {
        assert_eq!(chart_version("1.2.3_build.7"), "1.2.3+build.7");
        assert_eq!(chart_version("v1.33.4_k3s1"), "v1.33.4+k3s1");
        let l = Listing {
            reference: Reference::image("ghcr.io/a/b").unwrap(),
            tags: vec![Tag {
                name: "0.20.0_1".into(),
                first_seen: None,
                new: false,
            }],
            invalid: 0,
        };
        assert_eq!(l.releases(Kind::Chart, None)[0].tag, "0.20.0+1");
        assert_eq!(l.releases(Kind::Image, None)[0].tag, "0.20.0_1");
        let (rs, skipped) = crate::sources::Fetched {
            source: "x".into(),
            releases: l.releases(Kind::Chart, None),
            channel_latest: None,
        }
        .releases_as(crate::versions::Scheme::Semver);
        assert_eq!((rs.len(), skipped), (1, 0));
    }

    #[test]
    fn signatures_attestations_digests_and_latest_are_not_releases() {
        let hex = "a".repeat(64);
        for t in [
            format!("sha256-{hex}.sig"),
            format!("sha256-{hex}.att"),
            format!("sha256-{hex}.sbom"),
            format!("sha256-{hex}"),
            format!("sha512-{}", "0".repeat(128)),
            hex.clone(),
            "latest".to_string(),
        ] {
            assert!(is_artifact_tag(&t), "{t}");
        }
        for t in [
            "v1.2.3",
            "1.2.3",
            "2.6.4-rc.1",
            "sha-abc1234",
            "main",
            "v1.33.4-k3s1",
        ] {
            assert!(!is_artifact_tag(t), "{t}");
        }
    }

    #[test]
    fn tags_are_bounded_by_the_spec_grammar() {
        assert!(valid_tag("v1.2.3"));
        assert!(valid_tag("_x"));
        assert!(valid_tag(&"a".repeat(128)));
        assert!(!valid_tag(&"a".repeat(129)));
        assert!(!valid_tag(""));
        assert!(!valid_tag("-x"));
        assert!(!valid_tag(".x"));
        assert!(!valid_tag("1.2.3+build"));
        assert!(!valid_tag("a b"));
        assert!(!valid_tag("v1\u{202e}"));
    }

    #[test]
    fn references_of_images_and_charts() {
        let r = Reference::image("ghcr.io/fluxcd/flux-cli").unwrap();
        assert_eq!(
            (r.registry.as_str(), r.repository.as_str()),
            ("ghcr.io", "fluxcd/flux-cli")
        );
        assert_eq!(
            Reference::image("oci://ghcr.io/fluxcd/flux-cli").unwrap(),
            r
        );
        assert_eq!(r.api_host(), "ghcr.io");
        assert!(!r.plain_http());
        assert_eq!(
            r.tags_url(50).unwrap().as_str(),
            "https://ghcr.io/v2/fluxcd/flux-cli/tags/list?n=50"
        );

        let hub = Reference::image("nginx").unwrap();
        assert_eq!(hub.to_string(), "docker.io/library/nginx");
        assert_eq!(hub.api_host(), "registry-1.docker.io");
        assert_eq!(
            Reference::image("rancher/system-upgrade-controller")
                .unwrap()
                .to_string(),
            "docker.io/rancher/system-upgrade-controller"
        );
        assert_eq!(
            Reference::image("index.docker.io/rancher/k3s")
                .unwrap()
                .to_string(),
            "docker.io/rancher/k3s"
        );
        let local = Reference::image("127.0.0.1:5000/a/b").unwrap();
        assert!(local.plain_http());
        assert!(Reference::image("localhost:5000/a").unwrap().plain_http());
        assert!(Reference::image("localhost/a").unwrap().plain_http());

        for bad in [
            "",
            "ghcr.io/a/b:v1",
            "ghcr.io/a/b@sha256:abc",
            "ghcr.io/A/b",
            "ghcr.io/a//b",
            "ghcr.io/a/-b",
            "https://ghcr.io/a/b",
            "bad_host.io:x/a",
        ] {
            assert!(Reference::image(bad).is_err(), "{bad}");
        }
        assert!(Reference::image(&format!("ghcr.io/{}", "a".repeat(250))).is_err());

        let c = Reference::chart(
            "oci://ghcr.io/controlplaneio-fluxcd/charts/",
            "flux-operator",
        )
        .unwrap();
        assert_eq!(
            c.to_string(),
            "ghcr.io/controlplaneio-fluxcd/charts/flux-operator"
        );
        assert_eq!(
            Reference::chart("oci://localhost:5000", "app")
                .unwrap()
                .to_string(),
            "localhost:5000/app"
        );
        assert!(Reference::chart("https://charts.example", "x").is_err());
        assert!(Reference::chart("oci://ghcr.io/x:1", "x").is_err());
    }

    #[test]
    fn docker_configs_give_basic_credentials_per_registry() {
        let b64 = base64::engine::general_purpose::STANDARD.encode("me:s3cret:with:colons");
        let text = format!(
            r#"{{"auths": {{"ghcr.io": {{"auth": "{b64}"}}, "https://index.docker.io/v1/": {{"username": "hub", "password": "pw"}}, "quay.io": {{"identitytoken": "x"}}}}, "credsStore": "desktop"}}"#
        );
        let c = Credentials::from_docker_config(&text).unwrap();
        let g = c.get("ghcr.io").unwrap();
        assert_eq!(
            (g.username.as_str(), g.password.expose()),
            ("me", "s3cret:with:colons")
        );
        assert_eq!(c.get("docker.io").unwrap().username, "hub");
        assert!(c.get("quay.io").is_none());
        assert!(!format!("{c:?}").contains("s3cret"));

        assert!(
            Credentials::from_docker_config("{}")
                .unwrap()
                .get("ghcr.io")
                .is_none()
        );
        let bad = r#"{"auths": {"ghcr.io": {"auth": "%%%notbase64-hunter2"}}}"#;
        let e = Credentials::from_docker_config(bad).unwrap_err();
        assert!(e.contains("ghcr.io") && !e.contains("hunter2"), "{e}");
        let e = Credentials::from_docker_config(r#"{"auths": "hunter2"}"#).unwrap_err();
        assert!(!e.contains("hunter2"), "{e}");
        let e = Credentials::from_docker_config("{\"auths\": {\"x\": hunter2}}").unwrap_err();
        assert!(!e.contains("hunter2"), "{e}");
    }

    #[test]
    fn first_seen_keeps_old_times_and_stamps_new_tags_now() {
        let t1 = t("2026-11-01T00:00:00Z");
        let t2 = t("2026-11-20T00:00:00Z");
        let first = stamp(&BTreeMap::new(), &["1.0.0".into(), "1.1.0".into()], t1);
        assert!(first.values().all(|d| *d == t1));
        let second = stamp(&first, &["1.1.0".into(), "1.2.0".into()], t2);
        assert_eq!(second["1.1.0"], t1);
        assert_eq!(second["1.2.0"], t2);
        assert!(
            !second.contains_key("1.0.0"),
            "a tag no longer listed is forgotten"
        );
    }

    #[test]
    fn a_tag_new_to_this_run_is_dated_no_later_than_the_runs_now() {
        let run_now = t("2026-11-20T12:00:00Z");
        let seen_now = t("2026-11-20T12:00:01Z");
        let older = t("2026-11-01T00:00:00Z");
        let l = Listing {
            reference: Reference::image("ghcr.io/a/b").unwrap(),
            tags: vec![
                Tag {
                    name: "1.0.0".into(),
                    first_seen: Some(older),
                    new: false,
                },
                Tag {
                    name: "1.1.0".into(),
                    first_seen: Some(seen_now),
                    new: true,
                },
            ],
            invalid: 0,
        };
        let at = |v: &[UpstreamRelease]| v.iter().map(|r| r.published_at).collect::<Vec<_>>();
        assert_eq!(
            at(&l.releases(Kind::Image, Some(run_now))),
            [Some(older), Some(run_now)]
        );
        assert_eq!(
            at(&l.releases(Kind::Image, None)),
            [Some(older), Some(seen_now)]
        );
        // A run judged later than the sighting keeps the sighting.
        let later = t("2026-11-21T00:00:00Z");
        assert_eq!(
            at(&l.releases(Kind::Image, Some(later))),
            [Some(older), Some(seen_now)]
        );
    }

    #[test]
    fn an_unreadable_first_seen_file_is_discarded() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::open(Some(dir.path().join("c")));
        let client = Client::new(&NetConfig::default(), cache, Arc::default()).unwrap();
        let r = Reference::image("ghcr.io/a/b").unwrap();
        let now = t("2026-11-01T00:00:00Z");
        let (seen, new) = client.first_seen(&r, &["1.0.0".into()], now).unwrap();
        assert_eq!(seen["1.0.0"], now);
        assert!(new.contains("1.0.0"));
        let path = client.seen_path(&r).unwrap();
        assert!(path.exists());
        // Read back unchanged a day later.
        let later = t("2026-11-02T00:00:00Z");
        let (seen, new) = client.first_seen(&r, &["1.0.0".into()], later).unwrap();
        assert_eq!(seen["1.0.0"], now);
        assert!(new.is_empty());
        // A damaged file: discarded, every tag new again (young, never old).
        std::fs::write(&path, b"{\"format\": 1, \"repo").unwrap();
        assert_eq!(
            client.first_seen(&r, &["1.0.0".into()], later).unwrap().0["1.0.0"],
            later
        );
        // Another repository's file under this name: discarded too.
        let other = SeenFile {
            format: SEEN_FORMAT,
            repository: "ghcr.io/x/y".into(),
            first_seen: BTreeMap::from([("1.0.0".to_string(), now)]),
        };
        std::fs::write(&path, serde_json::to_vec(&other).unwrap()).unwrap();
        let much_later = t("2026-12-01T00:00:00Z");
        assert_eq!(
            client
                .first_seen(&r, &["1.0.0".into()], much_later)
                .unwrap()
                .0["1.0.0"],
            much_later
        );

        // Without a cache directory there are no times at all.
        let none = Client::new(&NetConfig::default(), Cache::open(None), Arc::default()).unwrap();
        assert!(none.first_seen(&r, &["1.0.0".into()], now).is_none());
    }

    #[test]
    fn error_codes_are_taken_only_when_they_look_like_codes() {
        assert_eq!(
            error_code(br#"{"errors":[{"code":"NAME_UNKNOWN","message":"x"}]}"#).as_deref(),
            Some("NAME_UNKNOWN")
        );
        assert_eq!(error_code(br#"{"errors":[{"code":"<script>"}]}"#), None);
        assert_eq!(error_code(b"not json"), None);
    }
}
