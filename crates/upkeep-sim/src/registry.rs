//! An OCI registry, served on 127.0.0.1: what upkeep's OCI source reads.
//!
//! - `GET /v2/`: the API version check; `GET /v2/<name>/tags/list?n=&last=`: a repository's tags
//!   in lexical order, `n` clamped to a page-size cap, `last` exclusive, and a relative `Link:
//!   <...>; rel="next"` while tags remain (opencontainers/distribution-spec `spec.md`, "Listing
//!   Tags"; distribution/distribution `registry/handlers/tags.go` `GetTags` and
//!   `registry/handlers/catalog.go` `createLinkEntry`).
//! - Token auth: a request without a valid bearer token is answered `401` with
//!   `WWW-Authenticate: Bearer realm="<this server>/token",service="...",scope="repository:<name>:pull"`
//!   (`error="invalid_token"` for a token it does not know, `error="insufficient_scope"` for one
//!   without access); `GET /token?service=&scope=` hands out `{"token", "access_token",
//!   "expires_in", "issued_at"}`, anonymously for public repositories and with HTTP Basic
//!   credentials for private ones (distribution/distribution `docs/content/spec/auth/token.md`,
//!   `registry/auth/token/accesscontroller.go` `challengeParams`).
//! - Or Basic auth on every request ([`RegistrySim::require_basic`]), as distribution's htpasswd
//!   access controller does (`Basic realm="Registry Realm"`).
//!
//! Counters tell how many requests, token requests, pages and 401s were served.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use serde_json::{Value, json};

use super::{Fault, fnv1a};

/// distribution's default `maxtags`: "Requesting n tags to the tags endpoint will return at most
/// MaxTags tags" (`configuration/configuration.go`, `defaultMaxTags`).
pub const DEFAULT_PAGE_CAP: usize = 1000;

/// Which fields the token endpoint answers with (the spec allows either, or both).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenField {
    Both,
    Token,
    AccessToken,
}

#[derive(Debug, Clone, Default)]
struct Repo {
    tags: BTreeSet<String>,
    /// `None`: public; else the users who may pull.
    readers: Option<BTreeSet<String>>,
}

struct Grant {
    repos: BTreeSet<String>,
    uses_left: Option<usize>,
}

struct Data {
    repos: BTreeMap<String, Repo>,
    users: HashMap<String, String>,
    tokens: HashMap<String, Grant>,
    issued: Vec<String>,
    page_cap: usize,
    absolute_links: bool,
    token_field: TokenField,
    token_uses: Option<usize>,
    basic_only: bool,
    faults: VecDeque<(String, Fault, usize)>,
}

#[derive(Default)]
struct Counters {
    requests: AtomicU64,
    token_requests: AtomicU64,
    pages: AtomicU64,
    unauthorized: AtomicU64,
}

/// What the registry answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RegistryCounters {
    pub requests: u64,
    pub token_requests: u64,
    /// `200` answers of `tags/list`.
    pub pages: u64,
    /// `401` answers (registry and token endpoint).
    pub unauthorized: u64,
}

struct Inner {
    data: Mutex<Data>,
    counters: Counters,
    base: String,
    service: String,
}

impl Inner {
    fn data(&self) -> std::sync::MutexGuard<'_, Data> {
        self.data.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A running registry. Dropping it does not stop the server; it stops with its runtime.
#[derive(Clone)]
pub struct RegistrySim {
    inner: Arc<Inner>,
    pub addr: SocketAddr,
}

impl RegistrySim {
    /// Bind 127.0.0.1 (`port` 0 picks a free one) and serve on the current tokio runtime.
    pub async fn start(port: u16) -> std::io::Result<RegistrySim> {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
        let addr = listener.local_addr()?;
        let inner = Arc::new(Inner {
            data: Mutex::new(Data {
                repos: BTreeMap::new(),
                users: HashMap::new(),
                tokens: HashMap::new(),
                issued: Vec::new(),
                page_cap: DEFAULT_PAGE_CAP,
                absolute_links: false,
                token_field: TokenField::Both,
                token_uses: None,
                basic_only: false,
                faults: VecDeque::new(),
            }),
            counters: Counters::default(),
            base: format!("http://{addr}"),
            service: addr.to_string(),
        });
        let app = axum::Router::new()
            .fallback(handle)
            .with_state(inner.clone());
        tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, app).await {
                tracing::error!(error = %e, "the registry simulator stopped");
            }
        });
        Ok(RegistrySim { inner, addr })
    }

    /// [`start`](Self::start) on a runtime of its own, stopped when the [`crate::Stopper`] drops.
    pub fn start_until_stopped() -> std::io::Result<(RegistrySim, crate::Stopper)> {
        super::start_until_stopped(1, move || RegistrySim::start(0))
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        self.inner.base.clone()
    }

    /// The registry as image references name it: `127.0.0.1:PORT`.
    pub fn host(&self) -> String {
        self.addr.to_string()
    }

    /// Set a repository's tags (any order; served in lexical order).
    pub fn set_tags<S: AsRef<str>>(&self, repo: &str, tags: &[S]) {
        let mut d = self.inner.data();
        let r = d.repos.entry(repo.to_string()).or_default();
        r.tags = tags.iter().map(|t| t.as_ref().to_string()).collect();
    }

    /// Push one more tag.
    pub fn push_tag(&self, repo: &str, tag: &str) {
        self.inner
            .data()
            .repos
            .entry(repo.to_string())
            .or_default()
            .tags
            .insert(tag.to_string());
    }

    /// Make a repository private: only `readers` (see [`add_user`](Self::add_user)) get a token
    /// that may pull it.
    pub fn set_private(&self, repo: &str, readers: &[&str]) {
        self.inner
            .data()
            .repos
            .entry(repo.to_string())
            .or_default()
            .readers = Some(readers.iter().map(|s| s.to_string()).collect());
    }

    /// A user the token endpoint (or Basic auth) knows.
    pub fn add_user(&self, user: &str, password: &str) {
        self.inner
            .data()
            .users
            .insert(user.to_string(), password.to_string());
    }

    /// At most this many tags per page, whatever `n` asks (distribution's `maxtags`).
    pub fn set_page_cap(&self, n: usize) {
        self.inner.data().page_cap = n.max(1);
    }

    /// Write next-page links as absolute URLs (some registries do) instead of distribution's
    /// relative ones.
    pub fn set_absolute_links(&self, yes: bool) {
        self.inner.data().absolute_links = yes;
    }

    /// Which fields the token endpoint answers with.
    pub fn set_token_field(&self, f: TokenField) {
        self.inner.data().token_field = f;
    }

    /// Each token is good for this many registry requests, then `401 invalid_token` (a token
    /// that expires during a listing).
    pub fn set_token_uses(&self, n: Option<usize>) {
        self.inner.data().token_uses = n;
    }

    /// Require HTTP Basic credentials of a known user on every `/v2/` request (no token
    /// service), as distribution's htpasswd access controller does.
    pub fn require_basic(&self, yes: bool) {
        self.inner.data().basic_only = yes;
    }

    /// Answer the next `times` requests whose path contains `path_contains` with a fault
    /// (`Fault::Status`, `Fault::SelfLink`; others are ignored).
    pub fn inject(&self, path_contains: &str, fault: Fault, times: usize) {
        self.inner
            .data()
            .faults
            .push_back((path_contains.to_string(), fault, times));
    }

    /// Every bearer token handed out so far (to check that none leaks into a message).
    pub fn issued_tokens(&self) -> Vec<String> {
        self.inner.data().issued.clone()
    }

    pub fn counters(&self) -> RegistryCounters {
        let c = &self.inner.counters;
        RegistryCounters {
            requests: c.requests.load(Ordering::Relaxed),
            token_requests: c.token_requests.load(Ordering::Relaxed),
            pages: c.pages.load(Ordering::Relaxed),
            unauthorized: c.unauthorized.load(Ordering::Relaxed),
        }
    }
}

fn set(h: &mut HeaderMap, name: &'static str, value: &str) {
    if let Ok(v) = HeaderValue::from_str(value) {
        h.insert(name, v);
    }
}

fn json_response(status: StatusCode, v: &Value) -> Response {
    let bytes = serde_json::to_vec(v).unwrap_or_default();
    let mut r = (status, bytes).into_response();
    set(r.headers_mut(), "content-type", "application/json");
    r
}

/// A distribution-spec error answer: `{"errors": [{"code", "message", "detail"}]}`.
fn spec_error(status: StatusCode, code: &str, message: &str, detail: Value) -> Response {
    let mut r = json_response(
        status,
        &json!({"errors": [{"code": code, "message": message, "detail": detail}]}),
    );
    set(
        r.headers_mut(),
        "docker-distribution-api-version",
        "registry/2.0",
    );
    r
}

/// The query's pairs, percent-decoded.
fn query_pairs(query: &str) -> Vec<(String, String)> {
    reqwest::Url::parse(&format!("http://x/?{query}"))
        .map(|u| u.query_pairs().into_owned().collect())
        .unwrap_or_default()
}

/// distribution-spec's `<name>`:
/// `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*(\/[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*)*`.
fn valid_name(name: &str) -> bool {
    let component = |c: &str| {
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
            let s = i;
            while i < b.len() && !alnum(b[i]) {
                i += 1;
            }
            let sep = &c[s..i];
            if !(sep == "." || sep == "_" || sep == "__" || sep.bytes().all(|x| x == b'-')) {
                return false;
            }
        }
        true
    };
    name.len() < 256 && name.split('/').all(component)
}

fn basic_user(inner: &Inner, headers: &HeaderMap) -> Result<Option<String>, ()> {
    let Some(v) = headers.get("authorization").and_then(|v| v.to_str().ok()) else {
        return Ok(None);
    };
    let Some(b64) = v.strip_prefix("Basic ") else {
        return Ok(None);
    };
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(b64.trim())
        .map_err(|_| ())?;
    let text = String::from_utf8(decoded).map_err(|_| ())?;
    let (u, p) = text.split_once(':').ok_or(())?;
    let d = inner.data();
    match d.users.get(u) {
        Some(pw) if pw == p => Ok(Some(u.to_string())),
        _ => Err(()),
    }
}

async fn handle(State(inner): State<Arc<Inner>>, req: Request) -> Response {
    inner.counters.requests.fetch_add(1, Ordering::Relaxed);
    let path = req.uri().path().to_string();
    let query = req.uri().query().unwrap_or("").to_string();
    let headers = req.headers().clone();
    let method = req.method().clone();
    let fault = {
        let mut d = inner.data();
        let i = d
            .faults
            .iter()
            .position(|(p, _, n)| *n > 0 && path.contains(p.as_str()));
        i.map(|i| {
            let f = d.faults[i].1.clone();
            d.faults[i].2 -= 1;
            if d.faults[i].2 == 0 {
                d.faults.remove(i);
            }
            f
        })
    };
    if let Some(Fault::Status(s)) = fault {
        return spec_error(
            StatusCode::from_u16(s).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            "UNKNOWN",
            "simulated failure",
            Value::Null,
        );
    }
    if method != axum::http::Method::GET && method != axum::http::Method::HEAD {
        return spec_error(
            StatusCode::METHOD_NOT_ALLOWED,
            "UNSUPPORTED",
            "the operation is unsupported",
            Value::Null,
        );
    }
    let resp = if path == "/token" {
        token(&inner, &query, &headers)
    } else if path == "/v2/" || path == "/v2" {
        match authorize(&inner, &headers, None) {
            Ok(()) => {
                let mut r = json_response(StatusCode::OK, &json!({}));
                set(
                    r.headers_mut(),
                    "docker-distribution-api-version",
                    "registry/2.0",
                );
                r
            }
            Err(r) => *r,
        }
    } else if let Some(name) = path
        .strip_prefix("/v2/")
        .and_then(|p| p.strip_suffix("/tags/list"))
    {
        tags(&inner, name, &path, &query, &headers, fault.as_ref())
    } else {
        spec_error(
            StatusCode::NOT_FOUND,
            "NOT_FOUND",
            "page not found",
            Value::Null,
        )
    };
    if resp.status() == StatusCode::UNAUTHORIZED {
        inner.counters.unauthorized.fetch_add(1, Ordering::Relaxed);
    }
    resp
}

/// Whether the request may read `name` (`None`: the base endpoint); else the 401 to answer.
fn authorize(inner: &Inner, headers: &HeaderMap, name: Option<&str>) -> Result<(), Box<Response>> {
    let challenge = |error: Option<&str>| {
        let mut c = format!(
            "Bearer realm=\"{}/token\",service=\"{}\"",
            inner.base, inner.service
        );
        if let Some(n) = name {
            c.push_str(&format!(",scope=\"repository:{n}:pull\""));
        }
        if let Some(e) = error {
            c.push_str(&format!(",error=\"{e}\""));
        }
        let mut r = spec_error(
            StatusCode::UNAUTHORIZED,
            "UNAUTHORIZED",
            "authentication required",
            name.map_or(
                Value::Null,
                |n| json!([{"Type": "repository", "Class": "", "Name": n, "Action": "pull"}]),
            ),
        );
        set(r.headers_mut(), "www-authenticate", &c);
        r
    };
    if inner.data().basic_only {
        return match basic_user(inner, headers) {
            Ok(Some(_)) => Ok(()),
            _ => {
                let mut r = spec_error(
                    StatusCode::UNAUTHORIZED,
                    "UNAUTHORIZED",
                    "authentication required",
                    Value::Null,
                );
                set(
                    r.headers_mut(),
                    "www-authenticate",
                    "Basic realm=\"Registry Realm\"",
                );
                Err(Box::new(r))
            }
        };
    }
    let Some(token) = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
    else {
        return Err(Box::new(challenge(None)));
    };
    let mut d = inner.data();
    let Some(grant) = d.tokens.get_mut(token.trim()) else {
        return Err(Box::new(challenge(Some("invalid_token"))));
    };
    if let Some(left) = &mut grant.uses_left {
        if *left == 0 {
            return Err(Box::new(challenge(Some("invalid_token"))));
        }
        *left -= 1;
    }
    match name {
        Some(n) if !grant.repos.contains(n) => Err(Box::new(challenge(Some("insufficient_scope")))),
        _ => Ok(()),
    }
}

/// `GET /token?service=&scope=`: the intersection of what is asked and what the (anonymous or
/// Basic-authenticated) client may do; only `pull` is ever granted.
fn token(inner: &Inner, query: &str, headers: &HeaderMap) -> Response {
    inner
        .counters
        .token_requests
        .fetch_add(1, Ordering::Relaxed);
    let user = match basic_user(inner, headers) {
        Ok(u) => u,
        Err(()) => {
            return json_response(
                StatusCode::UNAUTHORIZED,
                &json!({"details": "incorrect username or password"}),
            );
        }
    };
    let pairs = query_pairs(query);
    let service = pairs.iter().find(|(k, _)| k == "service").map(|(_, v)| v);
    if service.is_some_and(|s| *s != inner.service) {
        return json_response(
            StatusCode::BAD_REQUEST,
            &json!({"details": "unknown service"}),
        );
    }
    let mut d = inner.data();
    let mut repos = BTreeSet::new();
    for (_, scope) in pairs.iter().filter(|(k, _)| k == "scope") {
        let mut parts = scope.splitn(3, ':');
        let (Some("repository"), Some(name), Some(actions)) =
            (parts.next(), parts.next(), parts.next())
        else {
            continue;
        };
        if !actions.split(',').any(|a| a == "pull") {
            continue;
        }
        let may = match d.repos.get(name).and_then(|r| r.readers.as_ref()) {
            None => true,
            Some(readers) => user.as_ref().is_some_and(|u| readers.contains(u)),
        };
        if may {
            repos.insert(name.to_string());
        }
    }
    let n = d.issued.len() as u64 + 1;
    let token = format!(
        "simtok-{n}-{:016x}",
        fnv1a(format!("{}/{n}/{repos:?}", inner.base).as_bytes())
    );
    d.issued.push(token.clone());
    let uses_left = d.token_uses;
    d.tokens.insert(token.clone(), Grant { repos, uses_left });
    let issued_at = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let body = match d.token_field {
        TokenField::Both => {
            json!({"token": token, "access_token": token, "expires_in": 300, "issued_at": issued_at})
        }
        TokenField::Token => json!({"token": token, "expires_in": 300, "issued_at": issued_at}),
        TokenField::AccessToken => {
            json!({"access_token": token, "expires_in": 300, "issued_at": issued_at})
        }
    };
    json_response(StatusCode::OK, &body)
}

/// `GET /v2/<name>/tags/list?n=&last=`, as distribution's `GetTags`.
fn tags(
    inner: &Inner,
    name: &str,
    path: &str,
    query: &str,
    headers: &HeaderMap,
    fault: Option<&Fault>,
) -> Response {
    if !valid_name(name) {
        return spec_error(
            StatusCode::BAD_REQUEST,
            "NAME_INVALID",
            "invalid repository name",
            json!({"name": name}),
        );
    }
    if let Err(r) = authorize(inner, headers, Some(name)) {
        return *r;
    }
    let pairs = query_pairs(query);
    let get = |k: &str| pairs.iter().find(|(x, _)| x == k).map(|(_, v)| v.as_str());
    let d = inner.data();
    let Some(repo) = d.repos.get(name) else {
        return spec_error(
            StatusCode::NOT_FOUND,
            "NAME_UNKNOWN",
            "repository name not known to registry",
            json!({"name": name}),
        );
    };
    let limit = match get("n") {
        None => None,
        Some(n) => match n.parse::<i64>() {
            Ok(n) if n >= 0 => Some((n as usize).min(d.page_cap)),
            _ => {
                return spec_error(
                    StatusCode::BAD_REQUEST,
                    "PAGINATION_NUMBER_INVALID",
                    "invalid number of results requested",
                    json!({"n": n}),
                );
            }
        },
    };
    let after: Vec<&String> = match get("last") {
        Some(last) => repo
            .tags
            .range::<str, _>((std::ops::Bound::Excluded(last), std::ops::Bound::Unbounded))
            .collect(),
        None => repo.tags.iter().collect(),
    };
    let take = limit.unwrap_or(after.len()).min(after.len());
    let page = &after[..take];
    let more = limit != Some(0) && take < after.len();
    let mut r = json_response(StatusCode::OK, &json!({"name": name, "tags": page}));
    set(
        r.headers_mut(),
        "docker-distribution-api-version",
        "registry/2.0",
    );
    if more && let Some(last) = page.last() {
        let mut next = reqwest::Url::parse(&format!("{}{path}", inner.base)).expect("own URL");
        // Go's url.Values.Encode sorts the keys: `last` before `n`.
        next.query_pairs_mut()
            .append_pair("last", last)
            .append_pair("n", &take.to_string());
        let link = if matches!(fault, Some(Fault::SelfLink)) {
            format!("{path}?{query}")
        } else if d.absolute_links {
            next.to_string()
        } else {
            format!("{}?{}", next.path(), next.query().unwrap_or(""))
        };
        set(r.headers_mut(), "link", &format!("<{link}>; rel=\"next\""));
    }
    inner.counters.pages.fetch_add(1, Ordering::Relaxed);
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_spec_grammar() {
        assert!(valid_name("controlplaneio-fluxcd/charts/flux-operator"));
        assert!(valid_name("a__b/c.d/e---f"));
        assert!(!valid_name("A/b"));
        assert!(!valid_name("a//b"));
        assert!(!valid_name("a___b"));
        assert!(!valid_name("-a"));
    }
}
