//! The GitHub forge emulator over real HTTP: every endpoint of the OpenAPI subset answers in
//! GitHub's shapes, merges make real commits (checked with the git CLI), git works over smart
//! HTTP with branch protection, and faults (5xx, rate limits, push races) are scriptable.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::openapi::OpenApi;
use reqwest::blocking::Client;
use serde_json::{Value, json};
use upkeep_sim::Fault;
use upkeep_sim::upstream::{SimRelease, UpstreamSim};

const REPO: &str = "homelab/cluster";
const TOKEN: &str = "ghp_simulated_token";

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

struct Forge {
    sim: UpstreamSim,
    dir: tempfile::TempDir,
    http: Client,
}

impl Forge {
    fn new() -> Forge {
        upkeep::sources::install_crypto_provider();
        let sim = UpstreamSim::start_in_thread().expect("simulator");
        let dir = tempfile::tempdir().expect("tempdir");
        sim.enable_forge(&dir.path().join("forge"));
        sim.require_token(TOKEN);
        let seed = root().join("examples/cluster-repo");
        sim.with_forge(|f| f.create_repo(REPO, Some(&seed), chrono::Utc::now()))
            .expect("forge on")
            .expect("repo");
        sim.set_releases(
            "k3s-io/k3s",
            vec![
                SimRelease::new("v1.33.4+k3s1", None),
                SimRelease::new("v1.33.5+k3s1", None),
            ],
        );
        Forge {
            sim,
            dir,
            http: Client::builder()
                .user_agent("upkeep-test")
                .build()
                .expect("client"),
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.sim.url())
    }

    /// The repository over smart HTTP, the token written into the URL.
    fn url_with_token(&self) -> String {
        self.sim
            .url()
            .replace("http://", &format!("http://x-access-token:{TOKEN}@"))
            + "/git/homelab/cluster.git"
    }

    fn call(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        let m = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
        let mut rq = self
            .http
            .request(m, self.url(path))
            .header("authorization", format!("Bearer {TOKEN}"))
            .header("user-agent", "upkeep-test");
        if let Some(b) = body {
            rq = rq
                .header("content-type", "application/json")
                .body(serde_json::to_vec(&b).unwrap_or_default());
        }
        let resp = rq.send().expect("request");
        let status = resp.status().as_u16();
        let text = resp.text().unwrap_or_default();
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    /// A working clone made with the git CLI.
    fn clone(&self, url: &str) -> PathBuf {
        let work = self.dir.path().join(format!("work-{}", rand_suffix()));
        git(
            self.dir.path(),
            &["clone", "-q", url, &work.to_string_lossy()],
        );
        git(&work, &["config", "user.email", "t@example.com"]);
        git(&work, &["config", "user.name", "Test"]);
        work
    }

    fn file_url(&self) -> String {
        let (_, repo) = self.call("GET", &format!("/repos/{REPO}"), None);
        repo["clone_url"].as_str().expect("clone_url").to_string()
    }

    /// Push a branch that changes versions.yaml's k3s version.
    fn push_branch(&self, branch: &str, from: &str, to: &str) {
        let work = self.clone(&self.file_url());
        git(&work, &["checkout", "-q", "-b", branch]);
        let f = work.join("versions.yaml");
        let text = std::fs::read_to_string(&f).expect("read").replace(from, to);
        std::fs::write(&f, text).expect("write");
        git(
            &work,
            &["commit", "-qam", &format!("chore(k3s): update to {to}")],
        );
        git(&work, &["push", "-q", "origin", branch]);
    }
}

fn rand_suffix() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    N.fetch_add(1, Ordering::Relaxed)
}

fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .current_dir(dir)
        .args(args)
        .env("GIT_TERMINAL_PROMPT", "0")
        .output()
        .expect("git");
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn every_endpoint_answers_in_githubs_shapes() {
    let f = Forge::new();
    let api = OpenApi::load();
    let mut checked = std::collections::BTreeSet::new();
    let mut check = |method: &str, template: &str, status: u16, body: &Value| {
        let errs = api.violations(method, template, status, body);
        assert!(
            errs.is_empty(),
            "{method} {template} {status}: {errs:#?}\n{body}"
        );
        checked.insert(format!("{method} {template}"));
    };
    let (s, v) = f.call("GET", &format!("/repos/{REPO}"), None);
    assert_eq!(s, 200);
    check("GET", "/repos/{owner}/{repo}", s, &v);
    let (s, v) = f.call("GET", "/repos/no/such", None);
    check("GET", "/repos/{owner}/{repo}", s, &v);

    f.push_branch("upkeep/k3s-v1.33.5-k3s1", "v1.33.4+k3s1", "v1.33.5+k3s1");
    let pr = json!({"title": "k3s: v1.33.4+k3s1 -> v1.33.5+k3s1", "head": "upkeep/k3s-v1.33.5-k3s1", "base": "main", "body": "report"});
    let (s, v) = f.call("POST", &format!("/repos/{REPO}/pulls"), Some(pr.clone()));
    assert_eq!(s, 201, "{v}");
    check("POST", "/repos/{owner}/{repo}/pulls", s, &v);
    assert_eq!(v["number"], 1);
    assert_eq!(v["commits"], 1);
    assert_eq!(v["mergeable"], true);
    let (s, v) = f.call("POST", &format!("/repos/{REPO}/pulls"), Some(pr));
    assert_eq!(s, 422, "no duplicate PR for the same head");
    check("POST", "/repos/{owner}/{repo}/pulls", s, &v);
    let (s, v) = f.call(
        "GET",
        &format!("/repos/{REPO}/pulls?state=open&head=homelab:upkeep/k3s-v1.33.5-k3s1"),
        None,
    );
    check("GET", "/repos/{owner}/{repo}/pulls", s, &v);
    assert_eq!(v.as_array().map(Vec::len), Some(1));
    let (s, v) = f.call("GET", &format!("/repos/{REPO}/pulls/1"), None);
    check("GET", "/repos/{owner}/{repo}/pulls/{pull_number}", s, &v);
    let (s, v) = f.call(
        "PATCH",
        &format!("/repos/{REPO}/pulls/1"),
        Some(json!({"body": "updated report"})),
    );
    check("PATCH", "/repos/{owner}/{repo}/pulls/{pull_number}", s, &v);
    assert_eq!(v["body"], "updated report");
    let (s, v) = f.call(
        "POST",
        &format!("/repos/{REPO}/issues/1/labels"),
        Some(json!({"labels": ["upkeep", "upkeep/patch"]})),
    );
    check(
        "POST",
        "/repos/{owner}/{repo}/issues/{issue_number}/labels",
        s,
        &v,
    );
    assert_eq!(v.as_array().map(Vec::len), Some(2));
    let (s, v) = f.call(
        "POST",
        &format!("/repos/{REPO}/issues/1/comments"),
        Some(json!({"body": "applied"})),
    );
    check(
        "POST",
        "/repos/{owner}/{repo}/issues/{issue_number}/comments",
        s,
        &v,
    );
    let cid = v["id"].as_u64().expect("id");
    let (s, v) = f.call(
        "PATCH",
        &format!("/repos/{REPO}/issues/comments/{cid}"),
        Some(json!({"body": "applied (edited)"})),
    );
    check(
        "PATCH",
        "/repos/{owner}/{repo}/issues/comments/{comment_id}",
        s,
        &v,
    );
    let (s, v) = f.call("GET", &format!("/repos/{REPO}/issues/1/comments"), None);
    check(
        "GET",
        "/repos/{owner}/{repo}/issues/{issue_number}/comments",
        s,
        &v,
    );
    assert_eq!(v[0]["body"], "applied (edited)");
    let (s, v) = f.call("GET", &format!("/repos/{REPO}/pulls/1/merge"), None);
    assert_eq!(s, 404);
    check(
        "GET",
        "/repos/{owner}/{repo}/pulls/{pull_number}/merge",
        s,
        &v,
    );
    let sha = f
        .sim
        .with_forge(|x| x.branch_sha(REPO, "main"))
        .flatten()
        .expect("main");
    f.sim
        .with_forge(|x| x.set_status(REPO, &sha, "success", "ci/test", chrono::Utc::now()));
    f.sim
        .with_forge(|x| x.add_check_run(REPO, &sha, "build", Some("success"), chrono::Utc::now()));
    let (s, v) = f.call("GET", &format!("/repos/{REPO}/commits/main/status"), None);
    check("GET", "/repos/{owner}/{repo}/commits/{ref}/status", s, &v);
    assert_eq!(v["state"], "success");
    let (s, v) = f.call(
        "GET",
        &format!("/repos/{REPO}/commits/{sha}/check-runs"),
        None,
    );
    check(
        "GET",
        "/repos/{owner}/{repo}/commits/{ref}/check-runs",
        s,
        &v,
    );
    assert_eq!(v["total_count"], 1);
    let (s, v) = f.call(
        "PUT",
        &format!("/repos/{REPO}/pulls/1/merge"),
        Some(json!({"merge_method": "merge"})),
    );
    assert_eq!(s, 200, "{v}");
    check(
        "PUT",
        "/repos/{owner}/{repo}/pulls/{pull_number}/merge",
        s,
        &v,
    );
    let (s, v) = f.call("GET", &format!("/repos/{REPO}/pulls/1/merge"), None);
    assert_eq!(s, 204);
    check(
        "GET",
        "/repos/{owner}/{repo}/pulls/{pull_number}/merge",
        s,
        &v,
    );
    let (s, v) = f.call(
        "PUT",
        &format!("/repos/{REPO}/pulls/1/merge"),
        Some(json!({})),
    );
    assert_eq!(s, 405);
    check(
        "PUT",
        "/repos/{owner}/{repo}/pulls/{pull_number}/merge",
        s,
        &v,
    );
    let (s, v) = f.call("GET", &format!("/repos/{REPO}/pulls/1"), None);
    check("GET", "/repos/{owner}/{repo}/pulls/{pull_number}", s, &v);
    assert_eq!(v["merged"], true);

    let (s, v) = f.call("POST", &format!("/repos/{REPO}/issues"), Some(json!({"title": "Dependency dashboard", "body": "| a | b |", "labels": ["upkeep/dashboard"]})));
    check("POST", "/repos/{owner}/{repo}/issues", s, &v);
    let n = v["number"].as_u64().expect("number");
    assert_eq!(n, 2, "issues and pull requests share numbers, as on GitHub");
    let (s, v) = f.call(
        "GET",
        &format!("/repos/{REPO}/issues?labels=upkeep/dashboard&state=open"),
        None,
    );
    check("GET", "/repos/{owner}/{repo}/issues", s, &v);
    assert_eq!(v.as_array().map(Vec::len), Some(1));
    let (s, v) = f.call("GET", &format!("/repos/{REPO}/issues/{n}"), None);
    check("GET", "/repos/{owner}/{repo}/issues/{issue_number}", s, &v);
    let (s, v) = f.call(
        "PATCH",
        &format!("/repos/{REPO}/issues/{n}"),
        Some(json!({"body": "| a | c |"})),
    );
    check(
        "PATCH",
        "/repos/{owner}/{repo}/issues/{issue_number}",
        s,
        &v,
    );
    let (s, v) = f.call(
        "POST",
        &format!("/repos/{REPO}/issues"),
        Some(json!({"body": "no title"})),
    );
    assert_eq!(s, 422);
    check("POST", "/repos/{owner}/{repo}/issues", s, &v);

    for (path, template) in [
        (
            "/repos/k3s-io/k3s/releases",
            "/repos/{owner}/{repo}/releases",
        ),
        (
            "/repos/k3s-io/k3s/releases/latest",
            "/repos/{owner}/{repo}/releases/latest",
        ),
        (
            "/repos/k3s-io/k3s/releases/tags/v1.33.4%2Bk3s1",
            "/repos/{owner}/{repo}/releases/tags/{tag}",
        ),
        ("/repos/k3s-io/k3s/tags", "/repos/{owner}/{repo}/tags"),
        ("/rate_limit", "/rate_limit"),
    ] {
        let (s, v) = f.call("GET", path, None);
        assert_eq!(s, 200, "{path}: {v}");
        check("GET", template, s, &v);
    }
    let (_, latest) = f.call("GET", "/repos/k3s-io/k3s/releases/latest", None);
    assert_eq!(latest["tag_name"], "v1.33.5+k3s1");

    // Every path of the subset was exercised.
    let want: std::collections::BTreeSet<String> = api.0["paths"]
        .as_object()
        .into_iter()
        .flatten()
        .flat_map(|(p, ops)| {
            ops.as_object()
                .into_iter()
                .flatten()
                .map(move |(m, _)| format!("{} {p}", m.to_uppercase()))
        })
        .filter(|k| !k.starts_with("PARAMETERS"))
        .collect();
    let missing: Vec<&String> = want.difference(&checked).collect();
    assert!(missing.is_empty(), "not exercised: {missing:?}");
}

#[test]
fn merges_are_real_commits_and_conflicts_are_refused() {
    let f = Forge::new();
    f.push_branch("b1", "v1.33.4+k3s1", "v1.33.5+k3s1");
    f.push_branch("b2", "v1.33.4+k3s1", "v1.33.6+k3s1");
    let (_, p1) = f.call(
        "POST",
        &format!("/repos/{REPO}/pulls"),
        Some(json!({"title": "one", "head": "b1", "base": "main"})),
    );
    let (_, p2) = f.call(
        "POST",
        &format!("/repos/{REPO}/pulls"),
        Some(json!({"title": "two", "head": "b2", "base": "main"})),
    );
    // A stale head sha is refused.
    let (s, _) = f.call(
        "PUT",
        &format!("/repos/{REPO}/pulls/{}/merge", p1["number"]),
        Some(json!({"sha": "0000000000000000000000000000000000000000"})),
    );
    assert_eq!(s, 409);
    let (s, m) = f.call(
        "PUT",
        &format!("/repos/{REPO}/pulls/{}/merge", p1["number"]),
        Some(json!({"merge_method": "squash"})),
    );
    assert_eq!(s, 200, "{m}");
    // b2 now conflicts with main.
    let (_, again) = f.call(
        "GET",
        &format!("/repos/{REPO}/pulls/{}", p2["number"]),
        None,
    );
    assert_eq!(again["mergeable"], false);
    let (s, _) = f.call(
        "PUT",
        &format!("/repos/{REPO}/pulls/{}/merge", p2["number"]),
        Some(json!({})),
    );
    assert_eq!(s, 405);
    let work = f.clone(&f.file_url());
    let log = git(&work, &["log", "--format=%P|%s", "-1"]);
    assert_eq!(
        log.trim()
            .split('|')
            .next()
            .map(|p| p.split_whitespace().count()),
        Some(1),
        "squash: one parent"
    );
    assert!(log.contains("one (#1)"), "{log}");
    assert!(
        std::fs::read_to_string(work.join("versions.yaml"))
            .unwrap_or_default()
            .contains("v1.33.5+k3s1")
    );
    // A plain merge has two parents.
    f.push_branch(
        "b3",
        "longhorn:\n    version: v1.9.1",
        "longhorn:\n    version: v1.10.2",
    );
    let (_, p3) = f.call(
        "POST",
        &format!("/repos/{REPO}/pulls"),
        Some(json!({"title": "three", "head": "b3", "base": "main"})),
    );
    let (s, _) = f.call(
        "PUT",
        &format!("/repos/{REPO}/pulls/{}/merge", p3["number"]),
        Some(json!({"merge_method": "merge"})),
    );
    assert_eq!(s, 200);
    git(&work, &["pull", "-q"]);
    let parents = git(&work, &["log", "--format=%P", "-1"]);
    assert_eq!(parents.split_whitespace().count(), 2, "merge: two parents");
    // Closing without merging, as a user does to say "not this version".
    let (s, v) = f.call(
        "PATCH",
        &format!("/repos/{REPO}/pulls/{}", p2["number"]),
        Some(json!({"state": "closed"})),
    );
    assert_eq!(s, 200);
    assert_eq!(v["merged"], false);
    assert_eq!(
        f.sim
            .with_forge(|x| x.pulls(REPO))
            .unwrap_or_default()
            .iter()
            .filter(|p| p.1 == "merged")
            .count(),
        2
    );
}

#[test]
fn git_over_smart_http_with_a_token_and_a_protected_branch() {
    let f = Forge::new();
    let url = f.url_with_token();
    let work = f.clone(&url);
    assert!(work.join("versions.yaml").exists());
    // Without the token: refused.
    let out = Command::new("git")
        .args([
            "ls-remote",
            &format!("{}/git/homelab/cluster.git", f.sim.url()),
        ])
        .env("GIT_TERMINAL_PROMPT", "0")
        .output()
        .expect("git");
    assert!(!out.status.success());
    // A branch pushes fine; main is protected.
    git(&work, &["checkout", "-q", "-b", "upkeep/x"]);
    std::fs::write(work.join("x.txt"), "x\n").expect("write");
    git(&work, &["add", "x.txt"]);
    git(&work, &["commit", "-qm", "x"]);
    git(&work, &["push", "-q", "origin", "upkeep/x"]);
    f.sim
        .with_forge(|x| x.protect(REPO, "main"))
        .expect("forge")
        .expect("protect");
    git(&work, &["checkout", "-q", "main"]);
    git(&work, &["merge", "-q", "upkeep/x"]);
    let out = Command::new("git")
        .current_dir(&work)
        .args(["push", "origin", "main"])
        .output()
        .expect("git");
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("Protected branch"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // git2 sees the refusal per ref through the push-update-reference callback (a refused push
    // still returns Ok from libgit2).
    let repo = git2::Repository::open(&work).expect("open");
    let mut remote = repo.remote_anonymous(&url).expect("remote");
    let mut refused: Vec<(String, String)> = Vec::new();
    {
        let mut cb = git2::RemoteCallbacks::new();
        cb.push_update_reference(|r, status| {
            if let Some(s) = status {
                refused.push((r.to_string(), s.to_string()));
            }
            Ok(())
        });
        let mut opts = git2::PushOptions::new();
        opts.remote_callbacks(cb);
        let r = remote.push(&["refs/heads/main:refs/heads/main"], Some(&mut opts));
        // libgit2 may also fail the whole push when the pre-receive hook declines it.
        let _ = r;
    }
    assert_eq!(refused.len(), 1, "{refused:?}");
    assert_eq!(refused[0].0, "refs/heads/main");
}

#[test]
fn faults_on_forge_paths_and_a_push_race() {
    let f = Forge::new();
    f.sim.inject_method("POST", "/pulls", Fault::Status(502), 1);
    f.push_branch("b1", "v1.33.4+k3s1", "v1.33.5+k3s1");
    let body = json!({"title": "one", "head": "b1", "base": "main"});
    let (s, _) = f.call("POST", &format!("/repos/{REPO}/pulls"), Some(body.clone()));
    assert_eq!(s, 502);
    assert!(
        f.sim
            .with_forge(|x| x.pulls(REPO))
            .unwrap_or_default()
            .is_empty(),
        "nothing half-made"
    );
    let (s, _) = f.call("GET", &format!("/repos/{REPO}/pulls"), None);
    assert_eq!(s, 200, "a GET is not hit by a POST fault");
    let (s, _) = f.call("POST", &format!("/repos/{REPO}/pulls"), Some(body));
    assert_eq!(s, 201);
    f.sim.inject("/issues", Fault::SecondaryRateLimit, 1);
    let (s, v) = f.call("GET", &format!("/repos/{REPO}/issues"), None);
    assert_eq!(s, 403);
    assert!(
        v["message"]
            .as_str()
            .unwrap_or("")
            .contains("secondary rate limit")
    );
    // Someone pushes to main while a client works: the branch tip moves.
    let before = f.sim.with_forge(|x| x.branch_sha(REPO, "main")).flatten();
    f.sim.inject(
        "/repos/homelab/cluster",
        Fault::LandCommit {
            repo: REPO.into(),
            branch: "main".into(),
        },
        1,
    );
    let (s, _) = f.call("GET", &format!("/repos/{REPO}"), None);
    assert_eq!(s, 200);
    let after = f.sim.with_forge(|x| x.branch_sha(REPO, "main")).flatten();
    assert_ne!(before, after);
    // Conditional requests: an unchanged list costs a free 304.
    let resp = f
        .http
        .get(f.url(&format!("/repos/{REPO}/pulls")))
        .header("authorization", format!("Bearer {TOKEN}"))
        .send()
        .expect("get");
    let etag = resp
        .headers()
        .get("etag")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let remaining = resp
        .headers()
        .get("x-ratelimit-remaining")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let again = f
        .http
        .get(f.url(&format!("/repos/{REPO}/pulls")))
        .header("authorization", format!("Bearer {TOKEN}"))
        .header("if-none-match", &etag)
        .send()
        .expect("get");
    assert_eq!(again.status().as_u16(), 304);
    assert_eq!(
        again
            .headers()
            .get("x-ratelimit-remaining")
            .and_then(|v| v.to_str().ok()),
        Some(remaining.as_str())
    );
    let (s, _) = f.call("GET", "/repos/homelab/cluster/pulls", None);
    assert_eq!(s, 200);
    let bad = f
        .http
        .get(f.url(&format!("/repos/{REPO}/pulls")))
        .header("authorization", "Bearer wrong")
        .send()
        .expect("get");
    assert_eq!(bad.status().as_u16(), 401);
    assert_eq!(f.sim.counters().writes, 2, "the two POSTs");
}

/// GitHub refuses a request without a User-Agent and more than 80 content-creating requests a
/// minute; the forge client sends one, spaces its writes, and never repeats a create that
/// GitHub carried out but answered with a 502 (a second dashboard, a doubled comment).
#[test]
fn the_forge_client_writes_as_github_asks() {
    use upkeep::forge::{Forge as _, GitHub};
    let f = Forge::new();
    let bare = Client::new()
        .get(f.url(&format!("/repos/{REPO}/pulls")))
        .header("authorization", format!("Bearer {TOKEN}"))
        .send()
        .expect("get");
    assert_eq!(bare.status().as_u16(), 403, "no User-Agent, no answer");
    assert!(
        bare.text()
            .unwrap_or_default()
            .contains("User-Agent header")
    );

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let _in = rt.enter();
    let mut gh = GitHub::new(&f.sim.url(), REPO, Some(TOKEN)).expect("client");
    gh.backoff = std::time::Duration::from_millis(10);
    gh.write_interval = std::time::Duration::from_millis(0);
    let count = |path: &str| {
        let (_, v) = f.call("GET", &format!("/repos/{REPO}{path}"), None);
        v.as_array().map_or(0, Vec::len)
    };

    // The answers are lost after GitHub acted: each create happens once, and says so.
    f.sim
        .inject_method("POST", "/issues", Fault::LostAnswer(502), 1);
    let labels = ["upkeep/dashboard".to_string()];
    let dash = rt
        .block_on(gh.create_issue("Dependency dashboard", "body", &labels))
        .expect("created once");
    assert_eq!(count("/issues?state=all"), 1, "one dashboard");
    assert_eq!(dash.number, 1);
    f.sim
        .inject_method("POST", "/comments", Fault::LostAnswer(502), 1);
    rt.block_on(gh.comment(dash.number, "hello"))
        .expect("commented");
    assert_eq!(count("/issues/1/comments"), 1, "one comment");
    f.push_branch("upkeep/k3s-v1.33.5+k3s1", "v1.33.4+k3s1", "v1.33.5+k3s1");
    f.sim
        .inject_method("POST", "/pulls", Fault::LostAnswer(502), 1);
    let pr = rt
        .block_on(gh.create_pull("k3s", "upkeep/k3s-v1.33.5+k3s1", "main", "body"))
        .expect("opened once");
    assert_eq!(count("/pulls?state=all"), 1, "one pull request");
    assert_eq!(pr.head, "upkeep/k3s-v1.33.5+k3s1");
    // A create that really failed is tried again.
    f.sim
        .inject_method("POST", "/comments", Fault::Status(502), 1);
    rt.block_on(gh.comment(dash.number, "again"))
        .expect("retried");
    assert_eq!(count("/issues/1/comments"), 2);

    // Writes are spaced: three comments at one a second take two seconds at least.
    gh.write_interval = std::time::Duration::from_secs(1);
    let start = std::time::Instant::now();
    for i in 0..3 {
        rt.block_on(gh.comment(dash.number, &format!("spaced {i}")))
            .expect("comment");
    }
    assert!(start.elapsed() >= std::time::Duration::from_secs(2));

    // Unspaced, the emulator holds the client to GitHub's 80 a minute.
    gh.write_interval = std::time::Duration::ZERO;
    gh.retries = 0;
    let refused = (0..upkeep_sim::upstream::CONTENT_WRITES_PER_MINUTE)
        .map(|i| rt.block_on(gh.comment(dash.number, &format!("burst {i}"))))
        .find_map(Result::err)
        .expect("the burst is refused before its end");
    assert!(refused.to_string().contains("rate limit"), "{refused}");
}

/// A token written into `--repo-url` is used, but it reaches no file: the mirror's git config
/// holds the URL without it, and the directories upkeep creates are its owner's only.
#[test]
fn credentials_in_the_repo_url_stay_out_of_files() {
    use std::os::unix::fs::PermissionsExt;
    let f = Forge::new();
    let url = f.url_with_token();
    let state = f.dir.path().join("state/homelab-cluster");
    let mirror = state.join("mirror.git");
    let git = upkeep::gitrepo::GitRepo::open(&mirror, &url, None).expect("mirror");
    git.fetch().expect("the URL's credentials are used");
    let config = std::fs::read_to_string(mirror.join("config")).expect("config");
    assert!(!config.contains(TOKEN), "{config}");
    assert!(config.contains("/git/homelab/cluster.git"), "{config}");
    assert!(!format!("{git:?}").contains(TOKEN));
    for dir in [f.dir.path().join("state"), state, mirror] {
        let mode = std::fs::metadata(&dir).expect("dir").permissions().mode() & 0o777;
        assert_eq!(mode, 0o700, "{}", dir.display());
    }
    // A mirror made by an older upkeep, with the token in its config, loses it.
    let old = f.dir.path().join("old.git");
    git2::Repository::init_bare(&old)
        .and_then(|r| r.remote("origin", &url).map(|_| ()))
        .expect("old mirror");
    upkeep::gitrepo::GitRepo::open(&old, &url, None).expect("reopened");
    let config = std::fs::read_to_string(old.join("config")).expect("config");
    assert!(!config.contains(TOKEN), "{config}");
}
