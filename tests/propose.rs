//! Proposing against the GitHub emulator and real bare repositories: first proposal, rerun (no
//! duplicates, no writes), supersede, a PR the user closed, limits, the dashboard, a push race,
//! each crash point (simulated by failing the next request: the cycle stops there, as a killed
//! process would), an invalid versions.yaml on the base branch, and --dry-run.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use upkeep::forge::GitHub;
use upkeep::gitrepo::{Author, GitRepo};
use upkeep::propose::{Action, Cycle, Outcome, Style};
use upkeep::sources::{Live, NetConfig};
use upkeep_sim::Fault;
use upkeep_sim::upstream::{SimRelease, UpstreamSim};

const REPO: &str = "homelab/cluster";
const TOKEN: &str = "ghp_test";

fn now() -> DateTime<Utc> {
    "2026-11-21T12:00:00Z".parse().unwrap_or_default()
}

const VERSIONS: &str = r#"# Our platform.
apiVersion: upkeep.dev/v1alpha1
kind: DesiredVersions
components:
  app:
    version: "v1.0.0"      # the app, quoted
    source:
      githubReleases: acme/app
  tool:
    version: v2.0.0
    source:
      githubReleases: acme/tool
"#;

struct World {
    sim: UpstreamSim,
    dir: tempfile::TempDir,
    clone_url: String,
}

fn release(tag: &str) -> SimRelease {
    SimRelease::new(
        tag,
        Some("2026-10-01T00:00:00Z".parse().unwrap_or_default()),
    )
}

impl World {
    fn new(limits: &str) -> World {
        upkeep::sources::install_crypto_provider();
        let sim = UpstreamSim::start_in_thread().expect("simulator");
        // The forge stamps pull requests on the tests' own time, not today's.
        sim.set_clock(upkeep_sim::clock::SimClock::stepped(now()));
        let dir = tempfile::tempdir().expect("tempdir");
        let seed = dir.path().join("seed");
        std::fs::create_dir_all(seed.join("policies")).expect("mkdir");
        std::fs::write(seed.join("versions.yaml"), VERSIONS).expect("write");
        std::fs::write(
            seed.join("policies/prs.yaml"),
            format!("apiVersion: upkeep.dev/v1alpha1\nkind: Policy\npullRequests:\n{limits}"),
        )
        .expect("write");
        sim.enable_forge(&dir.path().join("forge"));
        sim.require_forge_token(TOKEN);
        let path = sim
            .with_forge(|f| f.create_repo(REPO, Some(&seed), Utc::now()))
            .expect("forge")
            .expect("repo");
        sim.set_releases("acme/app", vec![release("v1.0.0"), release("v1.0.1")]);
        sim.set_releases("acme/tool", vec![release("v2.0.0"), release("v2.1.0")]);
        World {
            sim,
            dir,
            clone_url: format!("file://{}", path.display()),
        }
    }

    fn net(&self) -> NetConfig {
        NetConfig {
            github_api_url: self.sim.url(),
            github_token: None,
            cache_dir: None,
            retries: 1,
            backoff: std::time::Duration::from_millis(10),
            ..NetConfig::default()
        }
    }

    fn forge(&self) -> GitHub {
        let mut f = GitHub::new(&self.sim.url(), REPO, Some(TOKEN)).expect("forge");
        f.retries = 0;
        f.write_interval = std::time::Duration::from_millis(20);
        f
    }

    fn git(&self) -> GitRepo {
        GitRepo::open(&self.dir.path().join("mirror.git"), &self.clone_url, None).expect("mirror")
    }

    /// One cycle; returns what it did and planned (or the error that stopped it).
    fn cycle(&self, dry_run: bool) -> Result<(Outcome, Vec<Action>), String> {
        let rt = runtime();
        let forge = {
            let _in = rt.enter();
            self.forge()
        };
        self.cycle_on(&rt, &forge, dry_run)
    }

    /// One cycle through `forge`, made on `rt` (a controller keeps one for its life).
    fn cycle_on(
        &self,
        rt: &tokio::runtime::Runtime,
        forge: &GitHub,
        dry_run: bool,
    ) -> Result<(Outcome, Vec<Action>), String> {
        rt.block_on(async {
            let git = self.git();
            let live = Arc::new(Live::new(&self.net()).expect("live"));
            let c = Cycle {
                git: &git,
                forge,
                base: "main".into(),
                subdir: String::new(),
                scratch: self.dir.path().join("checkout"),
                style: Style::default(),
                author: Author::default(),
                dashboard: true,
                dry_run,
                running: None,
                rollouts: Vec::new(),
            };
            c.run(now(), |repo| async move {
                let r = upkeep::check::run(live, &repo, now(), 4, "live").await;
                (repo, r.components)
            })
            .await
        })
    }

    fn pulls(&self) -> Vec<(u64, String, String)> {
        self.sim.with_forge(|f| f.pulls(REPO)).unwrap_or_default()
    }

    fn bare(&self) -> PathBuf {
        self.sim
            .with_forge(|f| f.repo_path(REPO))
            .flatten()
            .expect("path")
    }

    fn git_cli(&self, args: &[&str]) -> String {
        let out = Command::new("git")
            .arg("--git-dir")
            .arg(self.bare())
            .args(args)
            .output()
            .expect("git");
        assert!(
            out.status.success(),
            "git {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn writes(&self) -> u64 {
        self.sim.counters().writes
    }

    fn forge_call(&self, method: &str, path: &str, body: serde_json::Value) -> serde_json::Value {
        let c = common::http();
        let r = c
            .request(
                reqwest::Method::from_bytes(method.as_bytes()).expect("m"),
                format!("{}/repos/{REPO}{path}", self.sim.url()),
            )
            .header("authorization", format!("Bearer {TOKEN}"))
            .header("content-type", "application/json")
            .body(body.to_string())
            .send()
            .expect("send");
        serde_json::from_str(&r.text().unwrap_or_default()).unwrap_or_default()
    }
}

impl World {
    /// `upkeep propose` against this world, with its own state directory.
    fn propose_cmd(&self) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_upkeep"));
        c.env("UPKEEP_FORGE_WRITE_INTERVAL_MS", "20");
        c.args([
            "propose",
            "--repo-url",
            &self.clone_url,
            "--owner",
            "homelab",
            "--name",
            "cluster",
        ])
        .args([
            "--github-api-url",
            &self.sim.url(),
            "--no-cache",
            "--now",
            "2026-11-21T12:00:00Z",
        ])
        .arg("--state-dir")
        .arg(self.dir.path().join("state"))
        .env("GITHUB_TOKEN", TOKEN);
        c
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("rt")
}

fn ok(r: Result<(Outcome, Vec<Action>), String>) -> Outcome {
    let (o, _) = r.expect("the cycle runs");
    assert!(o.errors.is_empty(), "{:?}", o.errors);
    o
}

const ROOMY: &str = "  concurrentLimit: 10\n  hourlyLimit: 10\n";

#[test]
fn first_proposal_then_a_rerun_changes_nothing() {
    let w = World::new(ROOMY);
    let o = ok(w.cycle(false));
    assert_eq!(o.opened.len(), 2);
    let pulls = w.pulls();
    assert_eq!(pulls.len(), 2);
    // The commit changes one scalar, byte for byte, with a conventional message.
    let diff = w.git_cli(&["diff", "main", "upkeep/app-v1.0.1", "--", "versions.yaml"]);
    assert!(diff.contains("-    version: \"v1.0.0\"      # the app, quoted\n+    version: \"v1.0.1\"      # the app, quoted"), "{diff}");
    assert_eq!(
        diff.lines()
            .filter(|l| l.starts_with('+') && !l.starts_with("+++"))
            .count(),
        1
    );
    let msg = w.git_cli(&["log", "-1", "--format=%s|%an", "upkeep/app-v1.0.1"]);
    assert_eq!(msg.trim(), "chore(app): update to v1.0.1|upkeep");
    // Titles, labels, the report.
    let pr = w.forge_call("GET", "/pulls/1", serde_json::json!({}));
    assert_eq!(pr["title"], "app: v1.0.0 -> v1.0.1");
    let labels: Vec<&str> = pr["labels"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|l| l["name"].as_str())
        .collect();
    assert_eq!(labels, vec!["upkeep", "upkeep/patch"]);
    assert!(
        pr["body"]
            .as_str()
            .unwrap_or("")
            .contains("What happens after merge")
    );
    let dash = o.dashboard.expect("dashboard");
    // Rerun: nothing written, nothing duplicated.
    let before = w.writes();
    let o2 = ok(w.cycle(false));
    assert!(
        o2.opened.is_empty() && o2.updated.is_empty() && o2.pushed.is_empty(),
        "{o2:?}"
    );
    assert_eq!(o2.dashboard, Some(dash));
    assert_eq!(w.writes(), before, "a warm cycle makes no write requests");
    assert_eq!(w.pulls().len(), 2);
}

/// A controller keeps its forge client: a cycle in which nothing changed reads the pull-request
/// list once, conditionally, and GitHub answers every read 304 (free of the rate limit).
#[test]
fn an_unchanged_cycle_reads_the_pr_list_once_and_only_conditionally() {
    use std::sync::atomic::Ordering::Relaxed;
    let w = World::new(ROOMY);
    let rt = runtime();
    let forge = {
        let _in = rt.enter();
        w.forge()
    };
    // The first cycle opens the PRs and the dashboard; the second reads them once as they are.
    ok(w.cycle_on(&rt, &forge, false));
    ok(w.cycle_on(&rt, &forge, false));
    let (requests, not_modified) = (
        forge.counters.requests.load(Relaxed),
        forge.counters.not_modified.load(Relaxed),
    );
    let sim_before = w.sim.counters();
    let o = ok(w.cycle_on(&rt, &forge, false));
    assert!(o.opened.is_empty() && o.updated.is_empty(), "{o:?}");
    let reads = forge.counters.requests.load(Relaxed) - requests;
    let unchanged = forge.counters.not_modified.load(Relaxed) - not_modified;
    // One page of pull requests, one of the dashboard issue: both unchanged.
    assert_eq!((reads, unchanged), (2, 2));
    assert_eq!(w.sim.counters().not_modified - sim_before.not_modified, 2);
}

#[test]
fn a_newer_version_supersedes_in_place_or_with_a_new_pr() {
    let w = World::new(ROOMY);
    ok(w.cycle(false));
    w.sim.publish("acme/app", release("v1.0.2"));
    let o = ok(w.cycle(false));
    assert_eq!(o.updated, vec![1], "one PR per component: updated in place");
    assert!(o.opened.is_empty());
    let pr = w.forge_call("GET", "/pulls/1", serde_json::json!({}));
    assert_eq!(pr["title"], "app: v1.0.0 -> v1.0.2");
    let file = w.git_cli(&["show", "upkeep/app-v1.0.1:versions.yaml"]);
    assert!(
        file.contains("\"v1.0.2\""),
        "the branch was rebuilt: {file}"
    );

    let w = World::new(&format!("{ROOMY}  onePerComponent: false\n"));
    ok(w.cycle(false));
    w.sim.publish("acme/app", release("v1.0.2"));
    let o = ok(w.cycle(false));
    assert_eq!(o.closed, vec![1]);
    assert_eq!(o.opened.len(), 1);
    let comments = w
        .sim
        .with_forge(|f| f.comments(REPO, 1))
        .unwrap_or_default();
    assert_eq!(comments.len(), 1);
    assert!(
        comments[0].starts_with(&format!("Superseded by #{}", o.opened[0])),
        "{comments:?}"
    );
}

#[test]
fn a_pr_closed_by_the_user_is_never_reopened() {
    let w = World::new(ROOMY);
    ok(w.cycle(false));
    w.forge_call("PATCH", "/pulls/1", serde_json::json!({"state": "closed"}));
    let o = ok(w.cycle(false));
    assert!(o.opened.is_empty() && o.updated.is_empty(), "{o:?}");
    assert!(
        o.skipped.iter().any(|s| s.contains("not this version")),
        "{o:?}"
    );
    // A newer version is proposed.
    w.sim.publish("acme/app", release("v1.0.2"));
    let o = ok(w.cycle(false));
    assert_eq!(o.opened.len(), 1);
    assert!(
        w.pulls()
            .iter()
            .any(|(_, s, head)| s == "open" && head == "upkeep/app-v1.0.2")
    );
}

/// The branch of a merged PR is deleted on the next cycle (as GitHub's "automatically delete
/// head branches" would); the branch of a PR the user closed stays, so it can be reopened.
#[test]
fn the_branch_of_a_merged_pr_is_deleted() {
    let w = World::new(ROOMY);
    ok(w.cycle(false));
    let pulls = w.pulls();
    assert_eq!(pulls.len(), 2, "{pulls:?}");
    let merged = &pulls[0].2;
    let closed = &pulls[1].2;
    let r = w.forge_call(
        "PUT",
        &format!("/pulls/{}/merge", pulls[0].0),
        serde_json::json!({"merge_method": "squash"}),
    );
    assert_eq!(r["merged"], serde_json::json!(true), "{r}");
    w.forge_call(
        "PATCH",
        &format!("/pulls/{}", pulls[1].0),
        serde_json::json!({"state": "closed"}),
    );
    let o = ok(w.cycle(false));
    assert_eq!(o.deleted, std::slice::from_ref(merged), "{o:?}");
    let branches = w.git_cli(&["branch", "--list", "upkeep/*"]);
    assert!(!branches.contains(merged.as_str()), "{branches}");
    assert!(branches.contains(closed.as_str()), "{branches}");
    let o = ok(w.cycle(false));
    assert!(o.deleted.is_empty(), "once: {o:?}");
}

#[test]
fn limits_hold_proposals_and_the_dashboard_says_so() {
    let w = World::new("  concurrentLimit: 1\n  hourlyLimit: 2\n");
    let o = ok(w.cycle(false));
    assert_eq!(o.opened.len(), 1);
    assert_eq!(o.waiting.len(), 1, "{o:?}");
    let dash = w.forge_call(
        "GET",
        &format!("/issues/{}", o.dashboard.expect("dashboard")),
        serde_json::json!({}),
    );
    let body = dash["body"].as_str().unwrap_or("");
    assert!(
        body.contains("upkeep pull requests are open (limit 1)"),
        "{body}"
    );
    assert!(body.contains("| app | v1.0.0 | v1.0.1 |"), "{body}");
    // The dashboard is edited only when its content changes.
    let before = w.writes();
    ok(w.cycle(false));
    assert_eq!(w.writes(), before);
    // A human ticks the box of the waiting proposal: the next cycle opens it past the limit,
    // says so on the dashboard, and the box is gone.
    let d = o.dashboard.expect("dashboard");
    let tick = body.replacen(
        "- [ ] <!-- upkeep:open-now=",
        "- [x] <!-- upkeep:open-now=",
        1,
    );
    assert_ne!(tick, body, "a box to tick: {body}");
    w.forge_call(
        "PATCH",
        &format!("/issues/{d}"),
        serde_json::json!({"body": tick}),
    );
    let o = ok(w.cycle(false));
    assert_eq!(o.opened.len(), 1, "{o:?}");
    assert_eq!(w.pulls().iter().filter(|p| p.1 == "open").count(), 2);
    let said = w
        .sim
        .with_forge(|f| f.comments(REPO, d))
        .unwrap_or_default();
    assert!(
        said.iter()
            .any(|c| c.contains("past the limits, as ticked on this dashboard")),
        "{said:?}"
    );
    let body = w.forge_call("GET", &format!("/issues/{d}"), serde_json::json!({}))["body"]
        .as_str()
        .unwrap_or("")
        .to_string();
    assert!(!body.contains("- [x]"), "{body}");
}

#[test]
fn a_push_race_rebuilds_the_branch_from_the_new_tip() {
    let w = World::new(ROOMY);
    // Someone commits to main while the cycle works (after its fetch, before it opens PRs).
    w.sim.inject_method(
        "POST",
        "/pulls",
        Fault::LandCommit {
            repo: REPO.into(),
            branch: "main".into(),
        },
        1,
    );
    ok(w.cycle(false));
    let main = w.git_cli(&["rev-parse", "main"]);
    let parent = w.git_cli(&["rev-parse", "upkeep/app-v1.0.1^"]);
    assert_ne!(main, parent, "the branch was made from the old tip");
    let o = ok(w.cycle(false));
    assert!(o.pushed.iter().any(|b| b == "upkeep/app-v1.0.1"), "{o:?}");
    assert_eq!(
        w.git_cli(&["rev-parse", "upkeep/app-v1.0.1^"]),
        w.git_cli(&["rev-parse", "main"])
    );
    assert!(
        w.git_cli(&["log", "--format=%s", "main"])
            .contains("pushed by a human"),
        "the human's commit is kept"
    );
    assert_eq!(w.pulls().len(), 2);
}

#[test]
fn every_crash_point_heals_on_the_next_run_without_duplicates() {
    // Between push and PR creation.
    let w = World::new(ROOMY);
    w.sim.inject_method("POST", "/pulls", Fault::Status(500), 1);
    let (o, _) = w.cycle(false).expect("runs");
    assert!(!o.errors.is_empty());
    assert!(
        w.git_cli(&["branch"]).contains("upkeep/"),
        "the branch was pushed"
    );
    let o = ok(w.cycle(false));
    assert_eq!(w.pulls().len(), 2, "{o:?}");
    // Between PR creation and labelling.
    let w = World::new(ROOMY);
    w.sim
        .inject_method("POST", "/labels", Fault::Status(502), 1);
    let (o, _) = w.cycle(false).expect("runs");
    assert!(!o.errors.is_empty());
    ok(w.cycle(false));
    assert_eq!(w.pulls().len(), 2);
    let pr = w.forge_call("GET", "/pulls/1", serde_json::json!({}));
    assert_eq!(
        pr["labels"].as_array().map(Vec::len),
        Some(2),
        "labels added on the next run"
    );
    // While editing the dashboard.
    let w = World::new(ROOMY);
    let dash = ok(w.cycle(false)).dashboard.expect("dashboard");
    w.sim.publish("acme/tool", release("v2.2.0"));
    w.sim
        .inject_method("PATCH", &format!("/issues/{dash}"), Fault::Status(503), 1);
    let (o, _) = w.cycle(false).expect("runs");
    assert!(o.errors.iter().any(|e| e.contains("dashboard")), "{o:?}");
    let o = ok(w.cycle(false));
    assert_eq!(o.dashboard, Some(dash));
    let issues = w.forge_call(
        "GET",
        "/issues?state=all&labels=upkeep/dashboard",
        serde_json::json!({}),
    );
    assert_eq!(issues.as_array().map(Vec::len), Some(1), "one dashboard");
    assert!(issues[0]["body"].as_str().unwrap_or("").contains("v2.2.0"));
    // A rate limit leaves the work for the next cycle.
    let w = World::new(ROOMY);
    w.sim
        .inject("/pulls", Fault::RateLimit { reset_in: 3600 }, 1);
    assert!(w.cycle(false).is_err_and(|e| e.contains("rate limit")));
    assert!(w.pulls().is_empty());
    ok(w.cycle(false));
    assert_eq!(w.pulls().len(), 2);
}

#[test]
fn an_invalid_versions_file_on_the_base_branch_opens_nothing_and_says_where() {
    let w = World::new(ROOMY);
    w.sim
        .with_forge(|f| {
            f.commit_file(
                REPO,
                "main",
                "versions.yaml",
                &VERSIONS.replace("kind: DesiredVersions", "kind: DesiredVersion"),
                "oops",
            )
        })
        .expect("forge")
        .expect("commit");
    let (o, actions) = w.cycle(false).expect("runs");
    assert!(o.invalid);
    assert!(actions.is_empty());
    assert!(w.pulls().is_empty());
    let dash = w.forge_call(
        "GET",
        &format!("/issues/{}", o.dashboard.expect("dashboard")),
        serde_json::json!({}),
    );
    let body = dash["body"].as_str().unwrap_or("");
    assert!(
        body.contains("versions.yaml:3:7"),
        "names file:line:column: {body}"
    );
}

#[test]
fn dry_run_touches_nothing() {
    let w = World::new(ROOMY);
    let (o, actions) = w.cycle(true).expect("runs");
    assert_eq!(actions.len(), 2);
    assert!(
        matches!(&actions[0], Action::Open(p) if p.title == "app: v1.0.0 -> v1.0.1" && p.body.contains("v1.0.1"))
    );
    assert_eq!(o, Outcome::default());
    assert_eq!(w.writes(), 0);
    assert!(!w.git_cli(&["branch"]).contains("upkeep/"));
    assert!(Path::new(&w.bare()).exists());
}

#[test]
fn the_cli_proposes_and_prints_what_it_did() {
    let w = World::new(ROOMY);
    let run = |extra: &[&str]| {
        let out = w.propose_cmd().args(extra).output().expect("upkeep");
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, out, err) = run(&["--dry-run"]);
    assert_eq!(code, Some(0), "{err}");
    assert!(
        out.contains("branch: upkeep/app-v1.0.1") && out.contains("title:  app: v1.0.0 -> v1.0.1"),
        "{out}"
    );
    assert!(w.pulls().is_empty());
    // The same plan as JSON, for tools.
    let (code, out, err) = run(&["--dry-run", "--output", "json"]);
    assert_eq!(code, Some(0), "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).expect("JSON");
    assert_eq!(v["dryRun"], true);
    assert!(
        v["actions"]
            .as_array()
            .is_some_and(|a| a.iter().any(|x| x["action"] == "open"
                && x["branch"] == "upkeep/app-v1.0.1"
                && x["title"] == "app: v1.0.0 -> v1.0.1")),
        "{out}"
    );
    assert!(w.pulls().is_empty());
    let (code, out, err) = run(&[]);
    assert_eq!(code, Some(0), "{err}");
    assert!(
        out.contains("opened #1") && out.contains("opened #2") && out.contains("dashboard: #3"),
        "{out}"
    );
    assert!(
        !err.contains(TOKEN) && !out.contains(TOKEN),
        "the token never shows"
    );
    // The forge is held to --timeout (and the retries), like the release sources.
    w.sim.inject(
        "/pulls",
        upkeep_sim::Fault::Delay(std::time::Duration::from_secs(30)),
        10,
    );
    let t = std::time::Instant::now();
    let (code, _, err) = run(&["--timeout", "1"]);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("no answer within 1s"), "{err}");
    assert!(
        t.elapsed() < std::time::Duration::from_secs(20),
        "{:?}",
        t.elapsed()
    );
}

/// Both transports over the emulator's smart HTTP with a token: libgit2 (http) and the git
/// command (what https and SSH remotes use). A refused push is an error with the reason, and a
/// force push outside upkeep/ is refused before anything is sent.
#[test]
fn pushes_are_checked_per_ref_on_both_transports() {
    use upkeep::gitrepo::Transport;
    for transport in [Transport::Libgit2, Transport::GitCli] {
        let w = World::new(ROOMY);
        let url = format!("{}/git/{REPO}.git", w.sim.url());
        let dir = w.dir.path().join(format!("m-{transport:?}"));
        // A wrong token is said as such on both transports (libgit2 words it "too many
        // redirects or authentication replays").
        let mut wrong = GitRepo::open(
            &w.dir.path().join(format!("w-{transport:?}")),
            &url,
            Some("ghp_wrong".into()),
        )
        .expect("open");
        wrong.transport = transport;
        let e = wrong
            .fetch()
            .map_err(|e| e.to_string())
            .err()
            .unwrap_or_default();
        assert!(
            e.contains("the git server refused the credentials") && !e.contains("ghp_wrong"),
            "{transport:?}: {e}"
        );
        let mut git = GitRepo::open(&dir, &url, Some(TOKEN.into())).expect("open");
        git.transport = transport;
        git.fetch().expect("fetch with the token");
        let tip = git.tip("main").expect("main");
        let c = git
            .commit_file(tip, "NOTE.md", b"hello\n", "docs: note", &Author::default())
            .expect("commit");
        git.push(c, "upkeep/note", true)
            .expect("push an own branch");
        assert!(
            w.git_cli(&["branch"]).contains("upkeep/note"),
            "{transport:?}"
        );
        assert!(matches!(
            git.push(c, "main", true),
            Err(upkeep::gitrepo::Error::ForceOutsideOwnBranches { .. })
        ));
        w.sim
            .with_forge(|f| f.protect(REPO, "main"))
            .expect("forge")
            .expect("protect");
        let refused = git.push(c, "main", false);
        assert!(
            matches!(&refused, Err(upkeep::gitrepo::Error::PushRefused { .. })),
            "{transport:?}: {refused:?}"
        );
        let text = format!("{refused:?}");
        assert!(!text.contains(TOKEN), "the token never shows: {text}");
        assert_ne!(
            w.git_cli(&["rev-parse", "main"]).trim(),
            c.to_string(),
            "main did not move"
        );
        // Without the token the fetch fails with a clear error.
        let mut anon = GitRepo::open(&w.dir.path().join(format!("a-{transport:?}")), &url, None)
            .expect("open");
        anon.transport = transport;
        assert!(anon.fetch().is_err());
    }
}

/// Real kills: the `upkeep propose` process is SIGKILLed while it waits on the forge right after
/// a step (push, PR creation), and the next run finishes the work without duplicates.
#[test]
fn killing_the_process_at_each_step_leaves_nothing_the_next_run_cannot_heal() {
    for (method, path, done) in [("POST", "/pulls", "pushed"), ("POST", "/labels", "opened")] {
        let w = World::new(ROOMY);
        let cmd = || {
            let mut c = w.propose_cmd();
            c.stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null());
            c
        };
        // The request after the step hangs; the process is killed while it waits.
        w.sim.inject_method(
            method,
            path,
            Fault::Delay(std::time::Duration::from_secs(30)),
            1,
        );
        let mut child = cmd().spawn().expect("upkeep");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        let reached = |w: &World| match done {
            "pushed" => w.git_cli(&["branch"]).contains("upkeep/"),
            _ => !w.pulls().is_empty(),
        };
        while !reached(&w) && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        assert!(reached(&w), "the step before the kill happened");
        std::thread::sleep(std::time::Duration::from_millis(100));
        let _ = child.kill();
        let _ = child.wait();
        let st = cmd().status().expect("rerun");
        assert!(st.success(), "{method} {path}");
        let pulls = w.pulls();
        assert_eq!(pulls.len(), 2, "{method} {path}: {pulls:?}");
        for (n, _, _) in pulls {
            let pr = w.forge_call("GET", &format!("/pulls/{n}"), serde_json::json!({}));
            assert_eq!(
                pr["labels"].as_array().map(Vec::len),
                Some(2),
                "{method} {path}: #{n} labelled"
            );
        }
    }
}

/// GitHub refuses a title over 256 characters (and a body over 65,536), and the emulator does
/// too; upkeep's forge client cuts what it sends to fit.
#[test]
fn titles_and_bodies_are_cut_to_what_github_takes() {
    let w = World::new(ROOMY);
    ok(w.cycle(false));
    let long = "t".repeat(300);
    let refused = w.forge_call("PATCH", "/pulls/1", serde_json::json!({"title": long}));
    assert!(
        refused["errors"][0]["message"]
            .as_str()
            .is_some_and(|m| m.contains("title is too long (maximum is 256 characters)")),
        "{refused}"
    );
    let rt = runtime();
    let forge = {
        let _in = rt.enter();
        w.forge()
    };
    rt.block_on(async {
        use upkeep::forge::Forge;
        forge
            .update_pull(1, Some(&long), Some(&"b".repeat(70_000)), None)
            .await
            .expect("cut to fit, then accepted");
    });
    let pr = w.forge_call("GET", "/pulls/1", serde_json::json!({}));
    assert_eq!(pr["title"].as_str().map(|t| t.chars().count()), Some(256));
    assert_eq!(pr["body"].as_str().map(|t| t.chars().count()), Some(65_536));
}
