//! The safety promise over random histories through the emulators (docs/properties.md): the
//! real propose cycle (`propose::Cycle`, `check::run`) against the GitHub emulator over
//! loopback HTTP and real git repositories, while releases appear, humans merge, close and push,
//! the forge fails (5xx, answers lost after acting, rate limits, self-referencing pages) and the
//! controller restarts with or without its state. After every step: no human commit lost,
//! main never rewritten, one open PR and one dashboard at most, no comment said twice in a row,
//! and after each cycle every open PR is a legal upgrade from what main says that changes
//! nothing but its component's version.
//!
//! `UPKEEP_EMULATED_HISTORIES` sets the count (default 1,000); `UPKEEP_PROPERTY_SEED` the
//! first seed.

mod common;

use std::path::PathBuf;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use common::Rng;
use upkeep::forge::GitHub;
use upkeep::gitrepo::{Author, GitRepo};
use upkeep::propose::{Cycle, Style};
use upkeep::sources::{Live, NetConfig};
use upkeep::versions::{self, Scheme};
use upkeep_sim::Fault;
use upkeep_sim::upstream::{SimRelease, UpstreamSim};

const TOKEN: &str = "ghp_property";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Event {
    /// Upstream of component 0 or 1 publishes: 0 patch, 1 minor, 2 major, 3 pre-release.
    Publish(u8, u8),
    /// upkeep's propose cycle.
    Cycle,
    /// A human merges (or closes) the n-th open pull request.
    Merge(u8),
    Close(u8),
    /// A human pushes a commit to main.
    Push,
    /// The forge's next answer of a kind goes wrong.
    Fault(u8),
    /// The controller restarts: a new client; with `true`, its state directory is gone too.
    Restart(bool),
}

fn event(rng: &mut Rng) -> Event {
    match rng.below(100) {
        0..=19 => Event::Publish(rng.below(2) as u8, rng.below(4) as u8),
        20..=54 => Event::Cycle,
        55..=66 => Event::Merge(rng.below(3) as u8),
        67..=71 => Event::Close(rng.below(3) as u8),
        72..=79 => Event::Push,
        80..=93 => Event::Fault(rng.below(6) as u8),
        _ => Event::Restart(rng.below(2) == 0),
    }
}

const COMPONENTS: [&str; 2] = ["app", "tool"];

struct History<'a> {
    sim: &'a UpstreamSim,
    rt: &'a tokio::runtime::Runtime,
    /// Made once: building an HTTP client reads the system's root certificates.
    http: &'a reqwest::blocking::Client,
    live: Arc<Live>,
    dir: tempfile::TempDir,
    repo: String,
    clone_url: String,
    /// Newest release per component (major, minor, patch).
    newest: [(u64, u64, u64); 2],
    state: u32,
    forge: GitHub,
    human: Vec<String>,
    main_tip: String,
    /// Whether the last cycle ran without an error.
    last_clean: bool,
}

fn now() -> DateTime<Utc> {
    "2026-11-21T12:00:00Z".parse().unwrap_or_default()
}

impl<'a> History<'a> {
    fn new(shared: &'a Shared) -> History<'a> {
        let Shared {
            sim,
            rt,
            http,
            live,
        } = shared;
        // Each run (a shrinking try too) gets repositories of its own on the shared emulator.
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
        let seed = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = tempfile::tempdir().expect("tempdir");
        let repo = format!("homelab/h{seed}");
        let source = |c: &str| format!("acme/{c}-{seed}");
        let seeded = dir.path().join("seed");
        std::fs::create_dir_all(seeded.join("policies")).expect("mkdir");
        let mut versions =
            String::from("apiVersion: upkeep.dev/v1alpha1\nkind: DesiredVersions\ncomponents:\n");
        for c in COMPONENTS {
            versions.push_str(&format!(
                "  {c}:\n    version: v1.0.0\n    source:\n      githubReleases: {}\n",
                source(c)
            ));
            sim.set_releases(&source(c), vec![release("v1.0.0")]);
        }
        std::fs::write(seeded.join("versions.yaml"), versions).expect("write");
        let path = sim
            .with_forge(|f| f.create_repo(&repo, Some(&seeded), Utc::now()))
            .expect("forge")
            .expect("repo");
        let forge = {
            let _in = rt.enter();
            client(sim, &repo)
        };
        let main_tip = sim
            .with_forge(|f| f.branch_sha(&repo, "main"))
            .flatten()
            .unwrap_or_default();
        History {
            sim,
            rt,
            http,
            live: live.clone(),
            dir,
            clone_url: format!("file://{}", path.display()),
            repo,
            newest: [(1, 0, 0); 2],
            state: 0,
            forge,
            human: Vec::new(),
            main_tip,
            last_clean: false,
        }
    }

    fn source(&self, i: usize) -> String {
        format!("acme/{}-{}", COMPONENTS[i], &self.repo["homelab/h".len()..])
    }

    fn publish(&mut self, i: usize, kind: u8) {
        let (ma, mi, pa) = self.newest[i];
        let (tag, next) = match kind {
            0 => (format!("v{ma}.{mi}.{}", pa + 1), Some((ma, mi, pa + 1))),
            1 => (format!("v{ma}.{}.0", mi + 1), Some((ma, mi + 1, 0))),
            2 => (format!("v{}.0.0", ma + 1), Some((ma + 1, 0, 0))),
            _ => (format!("v{ma}.{}.0-rc.1", mi + 1), None),
        };
        if let Some(n) = next {
            self.newest[i] = n;
        }
        self.sim.publish(&self.source(i), release(&tag));
    }

    fn cycle(&self) -> Result<upkeep::propose::Outcome, String> {
        let git = GitRepo::open(
            &self.dir.path().join(format!("state-{}", self.state)),
            &self.clone_url,
            None,
        )
        .map_err(|e| e.to_string())?;
        let live = self.live.clone();
        self.rt.block_on(async {
            let c = Cycle {
                git: &git,
                forge: &self.forge,
                base: "main".into(),
                subdir: String::new(),
                scratch: self.dir.path().join("checkout"),
                style: Style::default(),
                author: Author::default(),
                dashboard: true,
                dry_run: false,
                running: None,
                rollouts: Vec::new(),
            };
            c.run(now(), |repo| async move {
                let r = upkeep::check::run(live, &repo, now(), 2, "live").await;
                (repo, r.components)
            })
            .await
            .map(|(o, _)| o)
        })
    }

    fn call(&self, method: &str, path: &str, body: serde_json::Value) {
        let _ = self
            .http
            .request(
                reqwest::Method::from_bytes(method.as_bytes()).expect("method"),
                format!("{}/repos/{}{path}", self.sim.url(), self.repo),
            )
            .header("authorization", format!("Bearer {TOKEN}"))
            .body(body.to_string())
            .send();
    }

    /// A GET of this repository's `path` on the emulator, as JSON.
    fn get(&self, path: &str) -> Result<serde_json::Value, String> {
        self.http
            .get(format!("{}/repos/{}{path}", self.sim.url(), self.repo))
            .header("authorization", format!("Bearer {TOKEN}"))
            .send()
            .and_then(|r| r.json())
            .map_err(|e| e.to_string())
    }

    fn open_pulls(&self) -> Vec<(u64, String)> {
        self.sim
            .with_forge(|f| f.pulls(&self.repo))
            .unwrap_or_default()
            .into_iter()
            .filter(|(_, s, _)| s == "open")
            .map(|(n, _, head)| (n, head))
            .collect()
    }

    fn step(&mut self, e: Event) -> Result<(), String> {
        let mut cycled = false;
        match e {
            Event::Publish(i, k) => self.publish(usize::from(i), k),
            Event::Cycle => {
                cycled = self.cycle().is_ok_and(|o| o.errors.is_empty());
                self.last_clean = cycled;
            }
            Event::Merge(n) | Event::Close(n) => {
                let open = self.open_pulls();
                if let Some((number, _)) = open.get(usize::from(n) % open.len().max(1)) {
                    if matches!(e, Event::Merge(_)) {
                        let body = serde_json::json!({"merge_method": "squash"});
                        self.call("PUT", &format!("/pulls/{number}/merge"), body);
                    } else {
                        let body = serde_json::json!({"state": "closed"});
                        self.call("PATCH", &format!("/pulls/{number}"), body);
                    }
                }
            }
            Event::Push => {
                let n = self.human.len();
                let sha = self
                    .sim
                    .with_forge(|f| {
                        f.commit_file(
                            &self.repo,
                            "main",
                            "NOTES.md",
                            &format!("note {n}\n"),
                            "docs: a human's note",
                        )
                    })
                    .expect("forge")
                    .map_err(|e| format!("human push: {e}"))?;
                self.human.push(sha);
            }
            Event::Fault(k) => {
                let (method, path, fault) = match k {
                    0 => ("POST", "/pulls$", Fault::LostAnswer(502)),
                    1 => ("POST", "/issues$", Fault::LostAnswer(502)),
                    2 => ("POST", "/comments$", Fault::LostAnswer(502)),
                    3 => ("POST", "/pulls$", Fault::Status(502)),
                    4 => ("GET", "/pulls", Fault::RateLimit { reset_in: 3600 }),
                    _ => ("GET", "/pulls", Fault::SelfLink),
                };
                // Anchored at the end, or one repository's fault could hit another's path.
                let path = match path.strip_suffix('$') {
                    Some(p) => format!("{}{p}$", self.repo),
                    None => format!("{}{path}", self.repo),
                };
                self.sim.inject_method(method, &path, fault, 1);
            }
            Event::Restart(lose_state) => {
                let _in = self.rt.enter();
                self.forge = client(self.sim, &self.repo);
                if lose_state {
                    self.state += 1;
                }
            }
        }
        self.check(cycled)
    }

    /// Every invariant, on the forge's own records.
    fn check(&mut self, after_cycle: bool) -> Result<(), String> {
        let path: PathBuf = self
            .sim
            .with_forge(|f| f.repo_path(&self.repo))
            .flatten()
            .ok_or("no repository")?;
        let git = git2::Repository::open_bare(&path).map_err(|e| e.to_string())?;
        let main = git
            .refname_to_id("refs/heads/main")
            .map_err(|e| e.to_string())?;
        let descends = |sha: &str| {
            git2::Oid::from_str(sha)
                .is_ok_and(|o| o == main || git.graph_descendant_of(main, o).unwrap_or(false))
        };
        if !descends(&self.main_tip) {
            return Err(format!("main was rewritten: {} is gone", self.main_tip));
        }
        if let Some(lost) = self.human.iter().find(|h| !descends(h)) {
            return Err(format!("the human commit {lost} is no longer on main"));
        }
        self.main_tip = main.to_string();

        let open = self.open_pulls();
        for c in COMPONENTS {
            let mine = open
                .iter()
                .filter(|(_, head)| head.starts_with(&format!("upkeep/{c}-")))
                .count();
            if mine > 1 {
                return Err(format!("{mine} open pull requests for {c}: {open:?}"));
            }
        }
        for n in 1..=40 {
            let said = self
                .sim
                .with_forge(|f| f.comments(&self.repo, n))
                .unwrap_or_default();
            if let Some(w) = said.windows(2).find(|w| w[0] == w[1]) {
                return Err(format!("#{n} was told the same twice: {:?}", w[0]));
            }
        }
        let dashboards = self
            .get("/issues?state=all&labels=upkeep/dashboard")?
            .as_array()
            .map_or(0, Vec::len);
        if dashboards > 1 {
            return Err(format!("{dashboards} dashboards"));
        }
        let read = |rev: &str| -> Option<String> {
            let obj = git.revparse_single(&format!("{rev}:versions.yaml")).ok()?;
            let blob = obj.as_blob()?;
            Some(String::from_utf8_lossy(blob.content()).into_owned())
        };
        let main_text = read("refs/heads/main").ok_or("no versions.yaml on main")?;
        if after_cycle {
            // What each open PR proposes, from its title (`c: from -> to`; a PR refreshed in
            // place keeps its first branch name).
            let listed = self.get("/pulls?state=open&per_page=100")?;
            for p in listed.as_array().into_iter().flatten() {
                let number = p["number"].as_u64().unwrap_or(0);
                let head = p["head"]["ref"].as_str().unwrap_or("").to_string();
                let title = p["title"].as_str().unwrap_or("");
                let Some((c, to)) = title
                    .split_once(": ")
                    .and_then(|(c, rest)| Some((c, rest.split_once(" -> ")?.1)))
                else {
                    return Err(format!(
                        "#{number}'s title {title:?} is not `c: from -> to`"
                    ));
                };
                let to = to.to_string();
                let from = main_text
                    .split(&format!("  {c}:\n    version: "))
                    .nth(1)
                    .and_then(|r| r.lines().next())
                    .ok_or(format!("{c} is not in versions.yaml"))?
                    .to_string();
                let (f, t) = (
                    versions::parse(&from, Scheme::Semver).map_err(|e| e.to_string())?,
                    versions::parse(&to, Scheme::Semver).map_err(|e| e.to_string())?,
                );
                if t <= f || t.is_prerelease() {
                    return Err(format!("#{number} proposes {c} {from} -> {to}"));
                }
                let rule = versions::PathRule {
                    max_minor_step: Some(1),
                    downgrade: versions::Downgrade::Never,
                };
                versions::check_hop(&f, &t, &rule)
                    .map_err(|e| format!("#{number} {c} {from} -> {to}: {e}"))?;
                // The branch changes that version and nothing else.
                let head_text = read(&format!("refs/heads/{head}")).unwrap_or_default();
                let want = upkeep::gitrepo::set_version("versions.yaml", &main_text, c, &from, &to)
                    .map_err(|e| e.to_string())?;
                if head_text != want {
                    return Err(format!(
                        "#{number}'s versions.yaml is not main's with {c} at {to}:\n{head_text}"
                    ));
                }
            }
        }
        Ok(())
    }
}

fn client(sim: &UpstreamSim, repo: &str) -> GitHub {
    let mut f = GitHub::new(&sim.url(), repo, Some(TOKEN)).expect("client");
    f.retries = 1;
    f.backoff = std::time::Duration::from_millis(1);
    f.write_interval = std::time::Duration::ZERO;
    f.max_wait = std::time::Duration::ZERO;
    f
}

fn release(tag: &str) -> SimRelease {
    SimRelease::new(
        tag,
        Some("2026-10-01T00:00:00Z".parse().unwrap_or_default()),
    )
}

fn history(seed: u64) -> Vec<Event> {
    let mut rng = Rng::new(seed ^ 0x5EED);
    // Something to propose from the start, then a random history.
    let mut events = vec![Event::Publish(0, 0), Event::Publish(1, 1)];
    let n = 4 + rng.below(8);
    events.extend((0..n).map(|_| event(&mut rng)));
    events
}

/// What the histories share: the emulator, a runtime, the clients.
struct Shared {
    sim: UpstreamSim,
    rt: tokio::runtime::Runtime,
    http: reqwest::blocking::Client,
    live: Arc<Live>,
}

fn run(shared: &Shared, events: &[Event]) -> Result<(), (usize, String)> {
    run_counting(shared, events, &mut Coverage::default())
}

/// How much the histories did (so that a generator or an emulator gone quiet shows).
#[derive(Debug, Default)]
struct Coverage {
    cycles: usize,
    clean_cycles: usize,
    opened: usize,
    merged: usize,
    faults: usize,
}

fn run_counting(
    shared: &Shared,
    events: &[Event],
    cov: &mut Coverage,
) -> Result<(), (usize, String)> {
    // Each history starts with a full rate limit (the emulator's is shared).
    shared.sim.set_rate_limit_remaining(5_000);
    let mut h = History::new(shared);
    for (i, e) in events.iter().enumerate() {
        h.step(*e).map_err(|m| (i, m))?;
        match e {
            Event::Cycle => {
                cov.cycles += 1;
                cov.clean_cycles += usize::from(h.last_clean);
            }
            Event::Fault(_) => cov.faults += 1,
            _ => {}
        }
    }
    let pulls = shared
        .sim
        .with_forge(|f| f.pulls(&h.repo))
        .unwrap_or_default();
    cov.opened += pulls.len();
    cov.merged += pulls.iter().filter(|(_, s, _)| s == "merged").count();
    Ok(())
}

// Two halves, so that the test harness runs them on both cores.
#[test]
fn the_safety_promise_holds_through_the_emulators_first_half() {
    let (first, count) = common::half("UPKEEP_EMULATED_HISTORIES", 1_000, 0);
    histories(first, count);
}

#[test]
fn the_safety_promise_holds_through_the_emulators_second_half() {
    let (first, count) = common::half("UPKEEP_EMULATED_HISTORIES", 1_000, 1);
    histories(first, count);
}

fn histories(first: u64, count: u64) {
    if count == 0 {
        return;
    }
    upkeep::sources::install_crypto_provider();
    let sim = UpstreamSim::start_in_thread().expect("simulator");
    let dir = tempfile::tempdir().expect("tempdir");
    sim.enable_forge(&dir.path().join("forge"));
    sim.require_forge_token(TOKEN);
    // Each history is a user of its own on GitHub, whose secondary limit is per user.
    sim.set_content_writes_per_minute(usize::MAX);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let net = NetConfig {
        github_api_url: sim.url(),
        cache_dir: None,
        retries: 1,
        backoff: std::time::Duration::from_millis(1),
        ..NetConfig::default()
    };
    let live = {
        let _in = rt.enter();
        Arc::new(Live::new(&net).expect("live"))
    };
    let shared = Shared {
        sim,
        rt,
        http: common::http(),
        live,
    };
    let mut steps = 0;
    let mut cov = Coverage::default();
    for seed in first..first + count {
        let events = history(seed);
        steps += events.len();
        if let Err((at, why)) = run_counting(&shared, &events, &mut cov) {
            // Shrink: nothing after the failing step, then drop events while it still fails
            // (each try is a fresh repository).
            let mut small = events[..=at.min(events.len() - 1)].to_vec();
            let mut i = 0;
            while i < small.len() {
                let mut fewer = small.clone();
                fewer.remove(i);
                if run(&shared, &fewer).is_err() {
                    small = fewer;
                } else {
                    i += 1;
                }
            }
            panic!(
                "seed {seed}: {why} (at step {at})\nshrunk to {} events: {small:?}\nreplay: UPKEEP_PROPERTY_SEED={seed} UPKEEP_EMULATED_HISTORIES=1 cargo test --test properties_emulated",
                small.len()
            );
        }
    }
    println!(
        "{count} histories, {steps} steps through the emulators, every invariant held; {cov:?}"
    );
    // Most cycles run clean (a fault spoils one), and PRs are opened and merged.
    assert!(cov.clean_cycles * 2 >= cov.cycles, "{cov:?}");
    assert!(
        cov.opened as u64 >= count && cov.merged as u64 >= count / 10,
        "{cov:?}"
    );
}
