//! Random rollout histories through the Kubernetes and GitHub emulators (docs/properties.md):
//! the real apply cycle (`apply::run`) on a simulated clock that crosses windows, while humans
//! merge one to three updates (k3s, Longhorn, Flux; a newer k3s merged mid-rollout), push to
//! main, and the cluster misbehaves (a node that never comes back, slow upgrades, a volume that
//! degrades, a chart that fails). After every cycle: no rollout left its window-wait outside a
//! window, at most one rollout holds the cluster, no node went down a version, a finished
//! rollout stays finished, no PR heard the same report twice, and every human commit is on main.
//!
//! `UPKEEP_ROLLOUT_HISTORIES` sets the count (default 48); `UPKEEP_PROPERTY_SEED` the first seed.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use chrono::{DateTime, Utc};
use common::Rng;
use upkeep::apply::{Options, Repo};
use upkeep::forge::{Forge as _, GitHub};
use upkeep::gitrepo::{Author, GitRepo};
use upkeep::rollout::Phase;
use upkeep::windows::{self, Override};
use upkeep_sim::clock::SimClock;
use upkeep_sim::kube::{ClusterFault, ClusterSpec, KubeOptions, KubeSim};
use upkeep_sim::upstream::UpstreamSim;

const REPO: &str = "homelab/cluster";
/// How far the simulated clock moves between two of upkeep's looks.
const STEP: Duration = Duration::from_secs(30);
/// How far it moves at a time while nobody but the cluster acts.
const IDLE_STEP: Duration = Duration::from_secs(60);
const TOKEN: &str = "ghp_rollouts";

/// The updates a human may merge: (component, from, to).
const UPDATES: [(&str, &str, &str); 3] = [
    ("k3s", "v1.33.4+k3s1", "v1.33.5+k3s1"),
    ("longhorn", "v1.9.1", "v1.10.2"),
    ("flux", "v2.6.4", "v2.7.0"),
];

struct World {
    kube: KubeSim,
    gh: UpstreamSim,
    dir: tempfile::TempDir,
    clone_url: String,
    rt: tokio::runtime::Runtime,
    /// The emulators stop with the history (or the next ones would share the cores with them).
    _stop: [upkeep_sim::Stopper; 2],
}

impl World {
    fn new(start: DateTime<Utc>) -> World {
        upkeep::sources::install_crypto_provider();
        let (kube, stop_kube) = KubeSim::start_until_stopped(KubeOptions {
            // Moved only by the history: by the apply cycles' looks and the idle time between.
            clock: SimClock::stepped(start),
            cluster: ClusterSpec::default(),
            ..KubeOptions::default()
        })
        .expect("kube");
        let (gh, stop_gh) = UpstreamSim::start_until_stopped().expect("github");
        gh.set_clock(kube.clock().clone());
        let dir = tempfile::tempdir().expect("tempdir");
        gh.enable_forge(&dir.path().join("forge"));
        gh.require_forge_token(TOKEN);
        gh.set_content_writes_per_minute(usize::MAX);
        let path = common::seed_example_repo(&gh, REPO);
        World {
            kube,
            gh,
            dir,
            clone_url: format!("file://{}", path.display()),
            rt: tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .expect("rt"),
            _stop: [stop_kube, stop_gh],
        }
    }

    fn git(&self) -> GitRepo {
        GitRepo::open(
            &self.dir.path().join("mirror.git"),
            &self.clone_url,
            Some(TOKEN.into()),
        )
        .expect("mirror")
    }

    fn forge(&self) -> GitHub {
        let _in = self.rt.enter();
        let mut f = GitHub::new(&self.gh.url(), REPO, Some(TOKEN)).expect("forge");
        f.write_interval = Duration::ZERO;
        f
    }

    /// A human opens and merges upkeep's PR for `component` `from` -> `to` (as `propose` would
    /// open it); false when main no longer says `from`.
    fn merge(&self, component: &str, from: &str, to: &str) -> bool {
        let git = self.git();
        git.fetch().expect("fetch");
        let tip = git.tip("main").expect("tip");
        let text = String::from_utf8(
            git.read_file(tip, "versions.yaml")
                .expect("read")
                .unwrap_or_default(),
        )
        .unwrap_or_default();
        let Ok(edited) = upkeep::gitrepo::set_version("versions.yaml", &text, component, from, to)
        else {
            return false;
        };
        let branch = upkeep::propose::branch_name(component, to);
        let c = git
            .commit_file(
                tip,
                "versions.yaml",
                edited.as_bytes(),
                &format!("chore({component}): update to {to}"),
                &Author::default(),
            )
            .expect("commit");
        git.push(c, &branch, true).expect("push");
        let forge = self.forge();
        let number = self
            .rt
            .block_on(forge.create_pull(
                &format!("{component}: {from} -> {to}"),
                &branch,
                "main",
                "report",
            ))
            .expect("pr")
            .number;
        let r = common::merge(&self.gh.url(), REPO, TOKEN, number);
        r.status().is_success()
    }

    /// One apply cycle of at most `budget` of simulated time, as the controller runs it, the
    /// clock moving one [`STEP`] between two looks.
    fn apply(&self, budget: Duration) {
        self.kube.settle();
        let git = self.git();
        let config = self.config_on_main(&git, "checkout");
        let kc = self.dir.path().join("kubeconfig");
        self.kube.write_kubeconfig(&kc).expect("kubeconfig");
        let forge = self.forge();
        self.rt.block_on(async {
            let client = upkeep::cluster::client(Some(&kc)).await.expect("client");
            let repo = Repo {
                git: &git,
                forge: Some(&forge),
                base: "main".into(),
                subdir: String::new(),
                author: Author::default(),
            };
            let opts = Options {
                namespace: "upkeep-system".into(),
                only: None,
                emergency: false,
                timeout: chrono::Duration::minutes(60),
                budget,
                poll: Duration::from_millis(20),
                backup: true,
                agent_concurrency: 1,
                releases: Default::default(),
                drain: true,
                allow_degraded_volumes: false,
                namespaces: Default::default(),
                pace: self.kube.pace(STEP),
            };
            let clock = self.kube.clock().clone();
            // An apply that cannot run this time (a conflict, the API) is the next cycle's.
            let _ = upkeep::apply::run(&client, &repo, &config, &opts, &move || clock.now()).await;
        });
    }

    /// The windows and freezes main's policy says, to judge starts by.
    fn policy(&self) -> (Vec<windows::Window>, Vec<windows::Freeze>) {
        let c = self.config_on_main(&self.git(), "judge");
        (c.windows, c.freezes)
    }

    /// The config repository as main's tip has it, checked out into `dir`.
    fn config_on_main(&self, git: &GitRepo, dir: &str) -> upkeep::model::ConfigRepo {
        git.fetch().expect("fetch");
        let tip = git.tip("main").expect("tip");
        let checkout = self.dir.path().join(dir);
        git.extract(tip, "", &checkout).expect("extract");
        upkeep::model::load_repo(&checkout, self.kube.clock().now())
            .expect("load")
            .repo
            .expect("valid")
    }
}

/// What the last look saw of each rollout: phase.
type Seen = BTreeMap<String, String>;

fn rollouts(w: &World) -> Seen {
    w.kube
        .list("upkeep.dev", "upkeeprollouts")
        .iter()
        .map(|r| {
            (
                r["metadata"]["name"].as_str().unwrap_or("").to_string(),
                r["status"]["phase"]
                    .as_str()
                    .unwrap_or("Pending")
                    .to_string(),
            )
        })
        .collect()
}

fn phase(name: &str) -> Option<Phase> {
    serde_json::from_value(serde_json::Value::String(name.into())).ok()
}

fn node_versions(w: &World) -> BTreeMap<String, upkeep::versions::Version> {
    w.kube
        .list("", "nodes")
        .iter()
        .filter_map(|n| {
            let v = n["status"]["nodeInfo"]["kubeletVersion"].as_str()?;
            Some((
                n["metadata"]["name"].as_str()?.to_string(),
                upkeep::versions::parse(v, upkeep::versions::Scheme::K3s).ok()?,
            ))
        })
        .collect()
}

/// One random history; the first broken invariant.
fn history(seed: u64) -> Result<String, String> {
    let mut rng = Rng::new(seed);
    // Somewhere in the week around the example's Saturday-night window (Amsterdam 22:00-02:00).
    let window: DateTime<Utc> = "2026-11-21T21:00:00Z".parse().unwrap_or_default();
    let start = window + chrono::Duration::minutes(rng.below(12 * 60) as i64 - 9 * 60);
    let w = World::new(start);
    let mut merged = Vec::new();
    for (i, u) in UPDATES.iter().enumerate() {
        if i == 0 || rng.below(2) == 0 {
            merged.push(*u);
        }
    }
    for (c, from, to) in &merged {
        if !w.merge(c, from, to) {
            return Err(format!("cannot merge {c}"));
        }
    }
    match rng.below(6) {
        0 => w.kube.inject(ClusterFault::NodeNeverReady {
            node: "agent-1".into(),
        }),
        1 => w.kube.inject(ClusterFault::SlowUpgrade {
            node: None,
            seconds: 400,
        }),
        2 => w.kube.inject(ClusterFault::VolumeDegradesAfterUpgrade {
            volume: "pvc-00003dde-0000-4000-8000-000000000002".into(),
        }),
        3 => w.kube.inject(ClusterFault::HelmUpgradeFails {
            release: "longhorn-system/longhorn".into(),
        }),
        _ => {}
    }
    let (windows, freezes) = w.policy();
    let allowed_between = |a: DateTime<Utc>, b: DateTime<Utc>| {
        windows::next_start(a, "k3s", &windows, &freezes, Override::default())
            .is_some_and(|t| t <= b)
    };
    let mut seen: Seen = BTreeMap::new();
    let mut nodes = node_versions(&w);
    let mut human = Vec::new();
    let mut newer_merged = false;
    for cycle in 0..(8 + rng.below(8)) {
        // Some idle time (the controller's other work, nobody looking), then a cycle: the
        // history crosses into (or out of) the window.
        w.kube
            .run_for(Duration::from_secs(60 * rng.below(40)), IDLE_STEP);
        let before = w.kube.clock().now();
        w.apply(Duration::from_secs(60 * (9 + rng.below(24))));
        let after = w.kube.clock().now();
        let now_seen = rollouts(&w);
        for (name, p) in &now_seen {
            let was = seen.get(name).map_or("Pending", String::as_str);
            let (Some(was_p), Some(p_now)) = (phase(was), phase(p)) else {
                continue;
            };
            // Left the wait only where a window allowed it (the window judged over the cycle).
            let waiting = |x: Phase| matches!(x, Phase::Pending | Phase::WaitingForWindow);
            if waiting(was_p) && p_now.holds_the_cluster() && !allowed_between(before, after) {
                return Err(format!(
                    "cycle {cycle}: {name} went {was} -> {p} between {before} and {after}, outside any window"
                ));
            }
            if was_p.is_terminal() && p_now != was_p {
                return Err(format!(
                    "cycle {cycle}: {name} went {was} -> {p} after it ended"
                ));
            }
        }
        let holding: Vec<&String> = now_seen
            .iter()
            .filter(|(_, p)| phase(p).is_some_and(Phase::holds_the_cluster))
            .map(|(n, _)| n)
            .collect();
        if holding.len() > 1 {
            return Err(format!(
                "cycle {cycle}: {holding:?} hold the cluster together"
            ));
        }
        let now_nodes = node_versions(&w);
        for (n, v) in &now_nodes {
            if nodes.get(n).is_some_and(|old| v < old) {
                return Err(format!("cycle {cycle}: {n} went down to {v}"));
            }
        }
        nodes = now_nodes;
        seen = now_seen;
        // No report twice on any PR.
        for number in 1..=6 {
            let said =
                w.gh.with_forge(|f| f.comments(REPO, number))
                    .unwrap_or_default();
            let markers: Vec<&str> = said
                .iter()
                .filter_map(|c| c.lines().next().filter(|l| l.starts_with("<!-- upkeep:")))
                .collect();
            let unique: BTreeSet<&&str> = markers.iter().collect();
            if unique.len() != markers.len() {
                return Err(format!(
                    "cycle {cycle}: #{number} heard a report twice: {markers:?}"
                ));
            }
        }
        // Humans push; sometimes a newer k3s is merged mid-rollout.
        if rng.below(4) == 0 {
            let n = human.len();
            let sha =
                w.gh.with_forge(|f| {
                    f.commit_file(REPO, "main", "NOTES.md", &format!("{n}\n"), "docs: a note")
                })
                .expect("forge")
                .map_err(|e| e.to_string())?;
            human.push(sha);
        }
        if !newer_merged && rng.below(6) == 0 {
            newer_merged = w.merge("k3s", "v1.33.5+k3s1", "v1.33.6+k3s1");
        }
        let main =
            w.gh.with_forge(|f| f.branch_sha(REPO, "main"))
                .flatten()
                .unwrap_or_default();
        let path =
            w.gh.with_forge(|f| f.repo_path(REPO))
                .flatten()
                .ok_or("no repo")?;
        let repo = git2::Repository::open_bare(&path).map_err(|e| e.to_string())?;
        let tip = git2::Oid::from_str(&main).map_err(|e| e.to_string())?;
        for h in &human {
            let h = git2::Oid::from_str(h).map_err(|e| e.to_string())?;
            if h != tip && !repo.graph_descendant_of(tip, h).unwrap_or(false) {
                return Err(format!("cycle {cycle}: the human commit {h} left main"));
            }
        }
    }
    Ok(format!("{seen:?}"))
}

// Two halves, so that the test harness runs them side by side.
#[test]
fn rollouts_keep_the_promise_over_random_histories_first_half() {
    let (first, count) = common::half("UPKEEP_ROLLOUT_HISTORIES", 48, 0);
    histories(first, count);
}

#[test]
fn rollouts_keep_the_promise_over_random_histories_second_half() {
    let (first, count) = common::half("UPKEEP_ROLLOUT_HISTORIES", 48, 1);
    histories(first, count);
}

fn histories(first: u64, count: u64) {
    let mut ends: BTreeMap<String, usize> = BTreeMap::new();
    for seed in first..first + count {
        match history(seed) {
            Ok(end) => {
                for p in [
                    "Succeeded",
                    "RequiresAttention",
                    "Reverted",
                    "Superseded",
                    "WaitingForWindow",
                ] {
                    *ends.entry(p.into()).or_default() += end.matches(p).count();
                }
            }
            Err(why) => panic!(
                "seed {seed}: {why}\nreplay: UPKEEP_PROPERTY_SEED={seed} UPKEEP_ROLLOUT_HISTORIES=2 cargo test --test properties_rollouts first_half"
            ),
        }
    }
    println!("{count} rollout histories, every invariant held; rollouts ended: {ends:?}");
}
