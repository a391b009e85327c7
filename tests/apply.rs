//! Applying merged versions against the Kubernetes and GitHub emulators: a k3s patch rollout of
//! 1 server + 2 agents with an etcd snapshot and a report on the merged PR; a node that never
//! comes back (halt, uncordon, revert commit, attention); a window that is not open; and a
//! controller stopped mid-rollout that resumes without applying or backing up twice.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::json;
use upkeep::apply::{Options, Repo};
use upkeep::forge::GitHub;
use upkeep::gitrepo::{Author, GitRepo};
use upkeep::rollout::Phase;
use upkeep_sim::clock::SimClock;
use upkeep_sim::kube::{ClusterFault, ClusterSpec, KubeOptions, KubeSim};
use upkeep_sim::upstream::UpstreamSim;

mod common;

const REPO: &str = "homelab/cluster";
const TOKEN: &str = "ghp_apply";

/// Saturday 2026-11-21 22:30 in Amsterdam: inside the example's saturday-night window.
fn in_window() -> DateTime<Utc> {
    "2026-11-21T21:30:00Z".parse().unwrap_or_default()
}

struct World {
    /// How far the simulated clock moves between two of upkeep's looks.
    step: Duration,
    releases: std::collections::HashMap<String, Vec<upkeep::versions::Version>>,
    kube: KubeSim,
    gh: UpstreamSim,
    dir: tempfile::TempDir,
    clone_url: String,
}

/// Every scenario also checks deploy/'s RBAC: what upkeep asked of the API must be allowed.
impl Drop for World {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            let denied = common::rbac::denied(&self.kube.audit());
            assert!(
                denied.is_empty(),
                "deploy/manifests/upkeep.yaml does not allow: {denied:#?}"
            );
        }
    }
}

impl World {
    fn new(start: DateTime<Utc>) -> World {
        World::with_update(start, "k3s", "v1.33.4+k3s1", "v1.33.5+k3s1")
    }

    /// [`new`](Self::new) in the window, with `main` protected and the repository reached over
    /// smart HTTP, where the protected branch's hook runs: a revert push is refused.
    fn with_protected_main() -> World {
        let mut w = World::new(in_window());
        w.clone_url = format!("{}/git/{REPO}.git", w.gh.url());
        w.gh.with_forge(|f| f.protect(REPO, "main"))
            .expect("forge")
            .expect("protect");
        w
    }

    fn with_update(start: DateTime<Utc>, component: &str, from: &str, to: &str) -> World {
        World::with_cluster(start, ClusterSpec::default(), component, from, to)
    }

    fn with_cluster(
        start: DateTime<Utc>,
        cluster: ClusterSpec,
        component: &str,
        from: &str,
        to: &str,
    ) -> World {
        upkeep::sources::install_crypto_provider();
        let kube = KubeSim::start_in_thread(KubeOptions {
            // Moved only by the test: by `apply`'s looks and by `run_for`.
            clock: SimClock::stepped(start),
            cluster,
            ..KubeOptions::default()
        })
        .expect("kube");
        let gh = UpstreamSim::start_in_thread().expect("github");
        gh.set_clock(kube.clock().clone());
        let dir = tempfile::tempdir().expect("tempdir");
        gh.enable_forge(&dir.path().join("forge"));
        gh.require_forge_token(TOKEN);
        let path = common::seed_example_repo(&gh, REPO);
        let w = World {
            step: STEP,
            releases: Default::default(),
            kube,
            gh,
            dir,
            clone_url: format!("file://{}", path.display()),
        };
        w.merge_update(component, from, to);
        w
    }

    /// The user merges upkeep's PR for `component` `from` -> `to`.
    fn merge_update(&self, component: &str, from: &str, to: &str) {
        let number = self.open_update(component, from, to);
        let r = common::merge(&self.gh.url(), REPO, TOKEN, number);
        assert_eq!(r.status().as_u16(), 200);
    }

    /// upkeep's PR for `component` `from` -> `to`, as `upkeep propose` opens it; its number.
    fn open_update(&self, component: &str, from: &str, to: &str) -> u64 {
        let branch = upkeep::propose::branch_name(component, to);
        let git = self.git();
        git.fetch().expect("fetch");
        let tip = git.tip("main").expect("tip");
        let text = String::from_utf8(
            git.read_file(tip, "versions.yaml")
                .expect("read")
                .unwrap_or_default(),
        )
        .unwrap_or_default();
        let edited = upkeep::gitrepo::set_version("versions.yaml", &text, component, from, to)
            .expect("edit");
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
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("rt");
        rt.block_on(async {
            use upkeep::forge::Forge;
            self.forge()
                .create_pull(
                    &format!("{component}: {from} -> {to}"),
                    &branch,
                    "main",
                    "report",
                )
                .await
                .expect("pr")
                .number
        })
    }

    /// `upkeep` with `args` against this world's cluster, as a human runs it; (exit code,
    /// stdout, stderr). What it asks of the API is a human's, not upkeep's: upkeep's own accesses
    /// are checked first and the audit starts over after.
    fn cli(&self, args: &[&str]) -> (i32, String, String) {
        self.cli_with(args, &[])
    }

    /// [`cli`](Self::cli) with these environment variables.
    fn cli_with(&self, args: &[&str], envs: &[(&str, &str)]) -> (i32, String, String) {
        let denied = common::rbac::denied(&self.kube.audit());
        assert!(denied.is_empty(), "deploy/ does not allow: {denied:#?}");
        let kc = self.dir.path().join("kubeconfig");
        self.kube.write_kubeconfig(&kc).expect("kubeconfig");
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_upkeep"))
            .env("UPKEEP_FORGE_WRITE_INTERVAL_MS", "20")
            .envs(envs.iter().copied())
            .args(args)
            .arg("--kubeconfig")
            .arg(&kc)
            .output()
            .expect("upkeep");
        self.kube.clear_audit();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    /// `upkeep history` over the last ten years, with the config repository, and `extra`.
    fn history(&self, extra: &[&str]) -> (i32, String, String) {
        let state = self.dir.path().join("history-state");
        let mut args = vec![
            "history",
            "--repo-url",
            &self.clone_url,
            "--state-dir",
            state.to_str().unwrap_or_default(),
            "--since",
            "3650d",
        ];
        args.extend_from_slice(extra);
        self.cli(&args)
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
        let mut f = GitHub::new(&self.gh.url(), REPO, Some(TOKEN)).expect("forge");
        f.write_interval = std::time::Duration::from_millis(20);
        f
    }

    /// One apply cycle with at most `budget` of simulated time, the clock moving one `step`
    /// between two looks.
    fn apply(&self, budget: Duration) -> Vec<(String, Phase, String)> {
        self.apply_with(budget, false)
    }

    /// [`apply`](Self::apply), as `upkeep apply --emergency` when `emergency`.
    fn apply_with(&self, budget: Duration, emergency: bool) -> Vec<(String, Phase, String)> {
        self.kube.settle();
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("rt");
        rt.block_on(async {
            let git = self.git();
            git.fetch().expect("fetch");
            let tip = git.tip("main").expect("tip");
            let checkout = self.dir.path().join("checkout");
            git.extract(tip, "", &checkout).expect("extract");
            let config = upkeep::model::load_repo(&checkout, in_window())
                .expect("load")
                .repo
                .expect("valid");
            let kc = self.dir.path().join("kubeconfig");
            self.kube.write_kubeconfig(&kc).expect("kubeconfig");
            let client = upkeep::cluster::client(Some(&kc)).await.expect("client");
            let forge = self.forge();
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
                emergency,
                timeout: chrono::Duration::minutes(60),
                budget,
                poll: Duration::from_millis(20),
                backup: true,
                agent_concurrency: 1,
                releases: self.releases.clone(),
                drain: true,
                allow_degraded_volumes: false,
                namespaces: Default::default(),
                pace: self.kube.pace(self.step),
            };
            let clock = self.kube.clock().clone();
            upkeep::apply::run(&client, &repo, &config, &opts, &move || clock.now())
                .await
                .expect("apply")
        })
    }

    fn node_versions(&self) -> Vec<(String, String)> {
        self.kube
            .list("", "nodes")
            .iter()
            .map(|n| {
                (
                    n["metadata"]["name"].as_str().unwrap_or("").to_string(),
                    n["status"]["nodeInfo"]["kubeletVersion"]
                        .as_str()
                        .unwrap_or("")
                        .to_string(),
                )
            })
            .collect()
    }

    fn comments(&self) -> Vec<String> {
        self.gh
            .with_forge(|f| f.comments(REPO, 1))
            .unwrap_or_default()
    }

    fn main_log(&self) -> String {
        let bare = self
            .gh
            .with_forge(|f| f.repo_path(REPO))
            .flatten()
            .expect("path");
        let out = std::process::Command::new("git")
            .arg("--git-dir")
            .arg(&bare)
            .args(["log", "--format=%s", "main"])
            .output()
            .expect("git");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn main_file(&self) -> String {
        let bare = self
            .gh
            .with_forge(|f| f.repo_path(REPO))
            .flatten()
            .expect("path");
        let out = std::process::Command::new("git")
            .arg("--git-dir")
            .arg(&bare)
            .args(["show", "main:versions.yaml"])
            .output()
            .expect("git");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

/// How far the simulated clock moves between two looks, upkeep's or the test's.
const STEP: Duration = Duration::from_secs(10);

/// A cycle's budget that any rollout here ends within (simulated time; a cycle returns as soon
/// as its rollouts end or only wait for a window).
const UNTIL_DONE: Duration = Duration::from_secs(10 * 3600);

fn minutes(n: u64) -> Duration {
    Duration::from_secs(60 * n)
}

fn hours(n: u64) -> Duration {
    minutes(60 * n)
}

impl World {
    /// Let the cluster live on, a step at a time, until `done` holds (at most a simulated day).
    fn run_until(&self, what: &str, done: impl Fn(&World) -> bool) {
        for _ in 0..(24 * 3600 / STEP.as_secs()) {
            if done(self) {
                return;
            }
            self.kube.run_for(STEP, STEP);
        }
        assert!(done(self), "never, in a simulated day: {what}");
    }
}

fn phase_of(s: &[(String, Phase, String)], name: &str) -> Option<Phase> {
    s.iter().find(|(n, _, _)| n == name).map(|(_, p, _)| *p)
}

const K3S: &str = "k3s-v1.33.5-k3s1";

#[test]
fn a_k3s_patch_rollout_of_one_server_and_two_agents() {
    let w = World::new(in_window());
    let s = w.apply(UNTIL_DONE);
    assert_eq!(phase_of(&s, K3S), Some(Phase::Succeeded), "{s:?}");
    // Native to kubectl: `kubectl wait` reads the Ready condition, `kubectl get` shows it. What
    // kubectl asks is a human's, not upkeep's: check upkeep's accesses first.
    let denied = common::rbac::denied(&w.kube.audit());
    assert!(denied.is_empty(), "deploy/ does not allow: {denied:#?}");
    let kubectl = |args: &[&str]| {
        let out = std::process::Command::new("kubectl")
            .arg("--kubeconfig")
            .arg(w.dir.path().join("kubeconfig"))
            .args(args)
            .output()
            .expect("kubectl");
        assert!(out.status.success(), "kubectl {args:?}: {out:?}");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let waited = kubectl(&[
        "wait",
        "--for=condition=Ready",
        "-n",
        "upkeep-system",
        "--timeout=10s",
        &format!("upkeeprollout/{K3S}"),
    ]);
    assert!(waited.contains("condition met"), "{waited}");
    // `kubectl describe` shows the rollout's history (its events).
    let described = kubectl(&["describe", "ukr", "-n", "upkeep-system", K3S]);
    assert!(
        described.contains("Events:")
            && !described.contains("Events:  <none>")
            && described.contains("Succeeded"),
        "{described}"
    );
    let table = kubectl(&["get", "ukr", "-n", "upkeep-system"]);
    assert!(
        table.contains("READY") && table.contains("True") && table.contains("MESSAGE"),
        "{table}"
    );
    let r = w
        .kube
        .get("upkeep.dev", "upkeeprollouts", "upkeep-system", K3S)
        .expect("rollout");
    assert_eq!(
        r["status"]["observedGeneration"], r["metadata"]["generation"],
        "{r}"
    );
    w.kube.clear_audit();
    assert!(
        w.node_versions().iter().all(|(_, v)| v == "v1.33.5+k3s1"),
        "{:?}",
        w.node_versions()
    );
    let snaps = w.kube.list("k3s.cattle.io", "etcdsnapshotfiles");
    assert_eq!(snaps.len(), 1, "one backup");
    assert!(
        snaps[0]["spec"]["snapshotName"]
            .as_str()
            .unwrap_or("")
            .starts_with("upkeep-k3s-v1.33.5-k3s1")
    );
    let comments = w.comments();
    assert_eq!(comments.len(), 1, "{comments:?}");
    assert!(
        comments[0].contains("**Applied**: k3s v1.33.4+k3s1 → v1.33.5+k3s1")
            && comments[0].contains("| agent-2 | v1.33.5+k3s1 | Ready | 1m40s |"),
        "{}",
        comments[0]
    );
    let r = w
        .kube
        .get("upkeep.dev", "upkeeprollouts", "upkeep-system", K3S)
        .expect("rollout");
    assert_eq!(r["status"]["phase"], "Succeeded");
    assert!(r["status"]["backup"].is_string());
    // An Event per transition, regarding the Rollout: written through events.k8s.io, stored in
    // the one Event list that `kubectl get events` (core/v1) reads.
    let reasons: Vec<String> = w
        .kube
        .list("", "events")
        .iter()
        .filter(|e| e["involvedObject"]["name"] == K3S)
        .filter_map(|e| e["reason"].as_str().map(str::to_string))
        .collect();
    for r in [
        "WaitingForWindow",
        "Preflight",
        "Backup",
        "Applying",
        "Validating",
        "Succeeded",
    ] {
        assert!(reasons.iter().any(|x| x == r), "{r} in {reasons:?}");
    }
    // Another cycle: nothing to do, nothing posted again.
    let s = w.apply(minutes(50));
    assert_eq!(phase_of(&s, K3S), Some(Phase::Succeeded));
    assert_eq!(w.comments().len(), 1);
}

#[test]
fn a_node_that_never_comes_back_halts_reverts_and_asks_for_attention() {
    let w = World::new(in_window());
    w.kube.inject(ClusterFault::NodeNeverReady {
        node: "agent-1".into(),
    });
    // The next hop's PR, built on the version about to fail (as `upkeep propose` run alone,
    // without a view of the cluster, may open it), and an unrelated one.
    let next = w.open_update("k3s", "v1.33.5+k3s1", "v1.34.1+k3s1");
    let other = w.open_update("longhorn", "v1.9.1", "v1.9.2");
    let s = w.apply(UNTIL_DONE);
    assert_eq!(phase_of(&s, K3S), Some(Phase::RequiresAttention), "{s:?}");
    let log = w.main_log();
    assert!(
        log.lines()
            .next()
            .unwrap_or("")
            .starts_with("revert(k3s): v1.33.5+k3s1 failed: upgraded but not Ready: agent-1"),
        "{log}"
    );
    assert!(
        w.main_file().contains("version: v1.33.4+k3s1"),
        "versions.yaml reverted"
    );
    let comments = w.comments();
    assert!(
        comments
            .iter()
            .any(|c| c.contains("Failed, and needs a human") && c.contains("cannot be downgraded")),
        "{comments:?}"
    );
    // Halted (concurrency 0, so the node in progress finished), then released: the Plans
    // match no node any more, so SUC retries nothing; no other node started; nothing is left
    // cordoned.
    let plan = w
        .kube
        .get(
            "upgrade.cattle.io",
            "plans",
            "system-upgrade",
            "upkeep-agent",
        )
        .expect("plan");
    assert_eq!(
        plan["spec"]["nodeSelector"]["matchLabels"]["upkeep.dev/released"],
        "true"
    );
    assert_eq!(plan["spec"]["concurrency"], 0);
    assert!(
        w.kube
            .list("", "nodes")
            .iter()
            .all(|n| n["spec"]["unschedulable"].is_null())
    );
    // The PR built on the reverted version is closed, saying why; the other stays open.
    let state = |n: u64| {
        w.gh.with_forge(|f| f.pulls(REPO))
            .unwrap_or_default()
            .into_iter()
            .find(|p| p.0 == n)
            .map(|p| p.1)
            .unwrap_or_default()
    };
    assert_eq!(
        (state(next), state(other)),
        ("closed".into(), "open".into())
    );
    let said =
        w.gh.with_forge(|f| f.comments(REPO, next))
            .unwrap_or_default();
    assert!(
        said.iter()
            .any(|c| c.contains("built on k3s v1.33.5+k3s1, which failed and was reverted")),
        "{said:?}"
    );
    // A retry after a revert commit has nothing to do: it says how to ask for the version again.
    let (code, _, err) = w.cli(&["retry", K3S]);
    assert_eq!(code, 1);
    assert!(
        err.contains("was reverted in git") && err.contains("git revert"),
        "{err}"
    );
    // Restarting changes nothing: no second revert, no second comment.
    let before = (w.main_log(), w.comments().len());
    w.apply(minutes(20));
    assert_eq!((w.main_log(), w.comments().len()), before);
    assert_eq!(
        w.gh.with_forge(|f| f.comments(REPO, next))
            .unwrap_or_default()
            .len(),
        1
    );
}

/// Rollouts of the CRD before the rename (kind `Rollout`, which Argo Rollouts' plural shadows)
/// are moved to UpkeepRollouts with their status, and their old objects deleted: a failure
/// stays a failure, with conditions.
#[test]
fn rollouts_of_the_old_crd_are_moved_to_upkeeprollouts() {
    let w = World::new(in_window());
    let kc = w.dir.path().join("kubeconfig");
    w.kube.write_kubeconfig(&kc).expect("kubeconfig");
    let kubectl = |args: &[&str]| {
        let out = std::process::Command::new("kubectl")
            .arg("--kubeconfig")
            .arg(&kc)
            .args(args)
            .output()
            .expect("kubectl");
        assert!(out.status.success(), "kubectl {args:?}: {out:?}");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let root = env!("CARGO_MANIFEST_DIR");
    kubectl(&[
        "apply",
        "--server-side",
        "-f",
        &format!("{root}/tests/fixtures/rollouts.upkeep.dev-v0.yaml"),
    ]);
    let old = w.dir.path().join("old.yaml");
    std::fs::write(
        &old,
        "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: upkeep-system\n---\napiVersion: upkeep.dev/v1alpha1\nkind: Rollout\nmetadata:\n  name: longhorn-v1.10.2\n  namespace: upkeep-system\n  labels: {upkeep.dev/component: longhorn}\nspec:\n  component: longhorn\n  from: v1.9.1\n  to: v1.10.2\n  hops: [v1.10.2]\n",
    )
    .expect("write");
    kubectl(&["apply", "-f", &old.display().to_string()]);
    kubectl(&[
        "patch",
        "rollouts.upkeep.dev",
        "longhorn-v1.10.2",
        "-n",
        "upkeep-system",
        "--subresource=status",
        "--type=merge",
        "-p",
        r#"{"status":{"phase":"RequiresAttention","message":"volume pvc-1 degraded","baseline":{"readyNodes":["server-1"],"readyObjects":[],"volumes":[["pvc-1","healthy"]]}}}"#,
    ]);
    // That was a human's setup (kubectl); what upkeep asks from here on is checked against
    // deploy/'s RBAC.
    w.kube.clear_audit();
    w.apply(UNTIL_DONE);
    let moved = w
        .kube
        .get(
            "upkeep.dev",
            "upkeeprollouts",
            "upkeep-system",
            "longhorn-v1.10.2",
        )
        .expect("moved");
    assert_eq!(moved["status"]["phase"], "RequiresAttention", "{moved}");
    assert_eq!(
        moved["status"]["baseline"]["volumes"]["pvc-1"], "healthy",
        "{moved}"
    );
    assert_eq!(
        moved["metadata"]["labels"]["upkeep.dev/component"],
        "longhorn"
    );
    let stalled = moved["status"]["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|c| c["type"] == "Stalled")
        .cloned()
        .unwrap_or_default();
    assert_eq!(stalled["status"], "True", "{moved}");
    assert!(
        w.kube
            .get(
                "upkeep.dev",
                "rollouts",
                "upkeep-system",
                "longhorn-v1.10.2"
            )
            .is_none()
    );
}

#[test]
fn outside_a_window_nothing_starts() {
    // Saturday noon in Amsterdam: the window opens at 22:00.
    let w = World::new("2026-11-21T11:00:00Z".parse().unwrap_or_default());
    let s = w.apply(minutes(50));
    assert_eq!(phase_of(&s, K3S), Some(Phase::WaitingForWindow), "{s:?}");
    assert!(s[0].2.contains("next window"), "{s:?}");
    assert!(w.node_versions().iter().all(|(_, v)| v == "v1.33.4+k3s1"));
    assert!(w.kube.list("upgrade.cattle.io", "plans").is_empty());
    // The window opens: the rollout goes.
    w.kube.clock().advance_to(in_window());
    let s = w.apply(UNTIL_DONE);
    assert_eq!(phase_of(&s, K3S), Some(Phase::Succeeded), "{s:?}");
}

#[test]
fn a_controller_stopped_mid_rollout_resumes_without_doing_anything_twice() {
    let w = World::new(in_window());
    let s = w.apply(Duration::from_secs(90));
    let p = phase_of(&s, K3S);
    assert!(
        matches!(p, Some(Phase::Backup | Phase::Applying | Phase::Preflight)),
        "{s:?}"
    );
    let s = w.apply(UNTIL_DONE);
    assert_eq!(phase_of(&s, K3S), Some(Phase::Succeeded), "{s:?}");
    let jobs: Vec<_> = w
        .kube
        .list("batch", "jobs")
        .into_iter()
        .filter(|j| j["metadata"]["namespace"] == "kube-system")
        .collect();
    assert_eq!(jobs.len(), 1, "one snapshot Job");
    assert_eq!(
        w.kube.list("k3s.cattle.io", "etcdsnapshotfiles").len(),
        1,
        "one backup"
    );
    assert_eq!(w.comments().len(), 1, "one report");
}

#[test]
fn a_longhorn_minor_upgrade_and_a_flux_upgrade() {
    let w = World::with_update(in_window(), "longhorn", "v1.9.1", "v1.10.2");
    let s = w.apply(UNTIL_DONE);
    assert_eq!(
        phase_of(&s, "longhorn-v1.10.2"),
        Some(Phase::Succeeded),
        "{s:?}"
    );
    let hr = w
        .kube
        .get(
            "helm.toolkit.fluxcd.io",
            "helmreleases",
            "longhorn-system",
            "longhorn",
        )
        .expect("hr");
    assert_eq!(hr["status"]["history"][0]["chartVersion"], "1.10.2");
    assert!(w.comments()[0].contains("**Applied**: longhorn v1.9.1 → v1.10.2"));
    // Validated only once Longhorn's own upgrade was done: its manager rolls out for a simulated
    // minute after Helm returns, then writes current-longhorn-version.
    let at = |v: &serde_json::Value| {
        v.as_str()
            .and_then(|t| t.parse::<DateTime<Utc>>().ok())
            .unwrap_or_default()
    };
    let helm_done = at(&hr["status"]["conditions"][0]["lastTransitionTime"]);
    let r = w
        .kube
        .get(
            "upkeep.dev",
            "upkeeprollouts",
            "upkeep-system",
            "longhorn-v1.10.2",
        )
        .expect("rollout");
    let validated = at(&r["status"]["phaseSince"]);
    assert!(
        validated >= helm_done + chrono::Duration::seconds(60),
        "validated at {validated}, Helm done at {helm_done}"
    );
    let setting = w
        .kube
        .get(
            "longhorn.io",
            "settings",
            "longhorn-system",
            "current-longhorn-version",
        )
        .expect("setting");
    assert_eq!(setting["value"], "v1.10.2");

    let w = World::with_update(in_window(), "flux", "v2.6.4", "v2.7.0");
    let s = w.apply(UNTIL_DONE);
    assert_eq!(phase_of(&s, "flux-v2.7.0"), Some(Phase::Succeeded), "{s:?}");
    let fi = w
        .kube
        .get(
            "fluxcd.controlplane.io",
            "fluxinstances",
            "flux-system",
            "flux",
        )
        .expect("fi");
    assert!(
        fi["status"]["lastAppliedRevision"]
            .as_str()
            .unwrap_or("")
            .starts_with("v2.7.0@")
    );
}

#[test]
fn a_longhorn_upgrade_that_degrades_a_volume_needs_attention_and_one_that_fails_is_reverted() {
    let w = World::with_update(in_window(), "longhorn", "v1.9.1", "v1.10.2");
    w.kube.inject(ClusterFault::VolumeDegradesAfterUpgrade {
        volume: "pvc-00003dde-0000-4000-8000-000000000002".into(),
    });
    let s = w.apply(UNTIL_DONE);
    assert_eq!(
        phase_of(&s, "longhorn-v1.10.2"),
        Some(Phase::RequiresAttention),
        "{s:?}"
    );
    assert!(
        s[0].2
            .contains("less robust: pvc-00003dde-0000-4000-8000-000000000002 healthy -> degraded"),
        "{s:?}"
    );
    assert!(
        w.main_log()
            .lines()
            .next()
            .unwrap_or("")
            .starts_with("revert(longhorn): v1.10.2 failed"),
        "{}",
        w.main_log()
    );

    // The chart refuses the upgrade: nothing moved, so a plain revert is enough.
    let w = World::with_update(in_window(), "longhorn", "v1.9.1", "v1.10.2");
    w.kube.inject(ClusterFault::HelmUpgradeFails {
        release: "longhorn-system/longhorn".into(),
    });
    let s = w.apply(UNTIL_DONE);
    assert_eq!(
        phase_of(&s, "longhorn-v1.10.2"),
        Some(Phase::Reverted),
        "{s:?}"
    );
    assert!(w.main_file().contains("version: v1.9.1"));
    assert!(
        w.comments()
            .iter()
            .any(|c| c.contains("Failed and reverted") && c.contains("UpgradeFailed")),
        "{:?}",
        w.comments()
    );
}

impl World {
    fn label_pr(&self, label: &str) {
        let c = common::http();
        let r = c
            .post(format!("{}/repos/{REPO}/issues/1/labels", self.gh.url()))
            .header("authorization", format!("Bearer {TOKEN}"))
            .body(json!({"labels": [label]}).to_string())
            .send()
            .expect("label");
        assert_eq!(r.status().as_u16(), 200);
    }

    fn version_of(&self, node: &str) -> String {
        self.node_versions()
            .into_iter()
            .find(|(n, _)| n == node)
            .map(|(_, v)| v)
            .unwrap_or_default()
    }
}

#[test]
fn a_window_closing_mid_rollout_finishes_the_node_in_progress_and_resumes_in_the_next() {
    // Sunday 01:45 in Amsterdam: the Saturday-night window closes at 02:00. Nodes take 10
    // minutes each, so the server is done by about 01:56 and the first agent is in progress when
    // the window closes.
    let w = World::new("2026-11-22T00:45:00Z".parse().unwrap_or_default());
    w.kube.set_timings(upkeep_sim::kube::Timings {
        node_upgrade: Duration::from_secs(600),
        ..Default::default()
    });
    let s = w.apply(UNTIL_DONE);
    assert_eq!(phase_of(&s, K3S), Some(Phase::Applying), "{s:?}");
    assert!(s[0].2.starts_with("paused: the window closed"), "{s:?}");
    // Nodes in progress finish (uncordoned, no upgrade under way); then nothing new starts.
    let settled = |w: &World| {
        w.kube.list("", "nodes").iter().all(|n| {
            n["spec"]["unschedulable"].is_null()
                && n["metadata"]["annotations"]
                    .as_object()
                    .is_none_or(|a| !a.keys().any(|k| k.starts_with("sim.upkeep.dev/plan-")))
        })
    };
    w.run_until("the nodes in progress finished", settled);
    assert!(
        settled(&w),
        "the nodes in progress finished and were uncordoned"
    );
    let at_pause = w.node_versions();
    assert!(
        at_pause.iter().any(|(_, v)| v == "v1.33.4+k3s1"),
        "the window closed before the end: {at_pause:?}"
    );
    w.kube.run_for(minutes(5), STEP);
    assert_eq!(w.node_versions(), at_pause, "no new node started");
    assert!(
        w.comments()
            .iter()
            .any(|c| c.contains("The window closed mid-rollout")),
        "{:?}",
        w.comments()
    );
    // Next Saturday night it resumes and finishes.
    w.kube
        .clock()
        .advance_to("2026-11-28T21:30:00Z".parse().unwrap_or_default());
    let s = w.apply(UNTIL_DONE);
    assert_eq!(phase_of(&s, K3S), Some(Phase::Succeeded), "{s:?}");
    assert_eq!(w.version_of("agent-2"), "v1.33.5+k3s1");
}

#[test]
fn an_emergency_label_bypasses_windows_but_not_freezes() {
    let w = World::new("2026-11-21T11:00:00Z".parse().unwrap_or_default());
    w.label_pr("upkeep/emergency");
    let s = w.apply(UNTIL_DONE);
    assert_eq!(phase_of(&s, K3S), Some(Phase::Succeeded), "{s:?}");
    let r = w
        .kube
        .get("upkeep.dev", "upkeeprollouts", "upkeep-system", K3S)
        .expect("rollout");
    assert_eq!(r["spec"]["emergency"], true);

    // A rollout already waiting for its window: `--emergency` on it starts it now.
    let w = World::new("2026-11-21T11:00:00Z".parse().unwrap_or_default());
    let s = w.apply(minutes(20));
    assert_eq!(phase_of(&s, K3S), Some(Phase::WaitingForWindow), "{s:?}");
    let s = w.apply_with(UNTIL_DONE, true);
    assert_eq!(phase_of(&s, K3S), Some(Phase::Succeeded), "{s:?}");
    let r = w
        .kube
        .get("upkeep.dev", "upkeeprollouts", "upkeep-system", K3S)
        .expect("rollout");
    assert_eq!(r["spec"]["emergency"], true);

    // Saturday night in the year-end freeze: even an emergency waits.
    let w = World::new("2026-12-26T21:30:00Z".parse().unwrap_or_default());
    w.label_pr("upkeep/emergency");
    let s = w.apply(minutes(50));
    assert_eq!(phase_of(&s, K3S), Some(Phase::WaitingForWindow), "{s:?}");
    assert!(s[0].2.contains("frozen by year-end"), "{s:?}");
    assert!(w.node_versions().iter().all(|(_, v)| v == "v1.33.4+k3s1"));
}

/// The controller stopped after every single look (a zero budget: each cycle observes, decides
/// once, carries out the effects, saves, and exits), through a success and through a failure:
/// every transition is a restart point, and nothing happens twice.
#[test]
fn a_restart_at_every_transition_never_applies_backs_up_or_comments_twice() {
    let mut transitions = 0;
    for fault in [
        None,
        Some(ClusterFault::NodeNeverReady {
            node: "agent-2".into(),
        }),
    ] {
        let w = World::new(in_window());
        if let Some(f) = fault.clone() {
            w.kube.inject(f);
        }
        let mut phases = Vec::new();
        let mut cycles = 0;
        loop {
            cycles += 1;
            let s = w.apply(Duration::ZERO);
            let p = phase_of(&s, K3S).expect("a rollout");
            if phases.last() != Some(&p) {
                phases.push(p);
            }
            if p.is_terminal() || cycles > 2000 {
                break;
            }
            w.kube.run_for(STEP, STEP);
        }
        // Each phase seen was entered by one transition (the first from Pending), each in a
        // cycle of its own.
        transitions += phases.len();
        let jobs = w
            .kube
            .list("batch", "jobs")
            .into_iter()
            .filter(|j| j["metadata"]["namespace"] == "kube-system")
            .count();
        assert_eq!(jobs, 1, "one snapshot Job");
        assert_eq!(
            w.kube.list("k3s.cattle.io", "etcdsnapshotfiles").len(),
            1,
            "one backup"
        );
        assert_eq!(w.comments().len(), 1, "one report: {:?}", w.comments());
        match fault {
            None => assert_eq!(phases.last(), Some(&Phase::Succeeded), "{phases:?}"),
            Some(_) => {
                assert_eq!(phases.last(), Some(&Phase::RequiresAttention), "{phases:?}");
                assert_eq!(
                    w.main_log()
                        .lines()
                        .filter(|l| l.starts_with("revert("))
                        .count(),
                    1,
                    "one revert commit"
                );
            }
        }
        for p in [
            Phase::WaitingForWindow,
            Phase::Preflight,
            Phase::Backup,
            Phase::Applying,
        ] {
            assert!(phases.contains(&p), "{p:?} in {phases:?}");
        }
    }
    assert!(
        transitions >= 12,
        "every one of {transitions} transitions was a restart point"
    );
}

#[test]
fn a_revert_the_base_branch_refuses_becomes_a_pull_request() {
    let w = World::with_protected_main();
    w.kube.inject(ClusterFault::NodeNeverReady {
        node: "agent-1".into(),
    });
    let s = w.apply(UNTIL_DONE);
    assert_eq!(phase_of(&s, K3S), Some(Phase::RequiresAttention), "{s:?}");
    assert!(!w.main_log().contains("revert("), "main was not pushed to");
    let pulls = w.gh.with_forge(|f| f.pulls(REPO)).unwrap_or_default();
    assert!(
        pulls
            .iter()
            .any(|(_, state, head)| state == "open" && head == "upkeep/revert-k3s-v1.33.5-k3s1"),
        "{pulls:?}"
    );
    let r = w
        .kube
        .get("upkeep.dev", "upkeeprollouts", "upkeep-system", K3S)
        .expect("rollout");
    assert!(
        r["status"]["revert"]
            .as_str()
            .unwrap_or("")
            .starts_with('#'),
        "{}",
        r["status"]
    );
    // The PR is told the truth: versions.yaml still holds the failed version until the revert
    // pull request is merged.
    let revert_pr = r["status"]["revert"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let said = w.comments();
    let attention = said
        .iter()
        .find(|c| c.contains("Failed, and needs a human"))
        .cloned()
        .unwrap_or_default();
    assert!(
        attention.contains(&format!("opened the revert pull request {revert_pr}"))
            && !attention.contains("versions.yaml was reverted"),
        "{said:?}"
    );
}

/// A failed backup moved nothing, and the protected branch turned the revert into a PR: versions.yaml
/// still asks for the version, so `upkeep retry` makes a new attempt (a new object, a new backup).
#[test]
fn a_retry_makes_a_new_attempt_while_git_still_asks_for_the_version() {
    let w = World::with_protected_main();
    w.kube.inject(ClusterFault::EtcdSnapshotFails {
        message: "etcd: request timed out".into(),
    });
    let s = w.apply(hours(5));
    let phase = phase_of(&s, K3S);
    assert!(
        matches!(phase, Some(Phase::Reverted | Phase::RequiresAttention)),
        "{s:?}"
    );
    let first = w
        .kube
        .get("upkeep.dev", "upkeeprollouts", "upkeep-system", K3S)
        .expect("rollout");
    assert!(
        first["status"]["revert"]
            .as_str()
            .unwrap_or("")
            .starts_with('#'),
        "{first}"
    );
    let (code, out, err) = w.cli(&["retry", K3S]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("new attempt of k3s v1.33.5+k3s1"), "{out}");
    w.apply(minutes(20));
    let again = w
        .kube
        .get("upkeep.dev", "upkeeprollouts", "upkeep-system", K3S)
        .expect("a new attempt");
    assert_ne!(
        again["metadata"]["uid"], first["metadata"]["uid"],
        "{again}"
    );
    // Only a failure is retried.
    let (code, _, err) = w.cli(&["retry", "k3s-nope"]);
    assert_eq!(code, 1);
    assert!(err.contains("there is no rollout `k3s-nope`"), "{err}");
}

#[test]
fn a_two_hop_minor_path_is_applied_and_validated_hop_by_hop() {
    let mut w = World::with_update(in_window(), "k3s", "v1.33.4+k3s1", "v1.35.5+k3s1");
    let v = |s: &str| upkeep::versions::parse(s, upkeep::versions::Scheme::K3s).expect("version");
    w.releases.insert(
        "k3s".into(),
        vec![v("v1.34.7+k3s1"), v("v1.34.8+k3s1"), v("v1.35.5+k3s1")],
    );
    let s = w.apply(UNTIL_DONE);
    assert_eq!(
        phase_of(&s, "k3s-v1.35.5-k3s1"),
        Some(Phase::Succeeded),
        "{s:?}"
    );
    let r = w
        .kube
        .get(
            "upkeep.dev",
            "upkeeprollouts",
            "upkeep-system",
            "k3s-v1.35.5-k3s1",
        )
        .expect("rollout");
    assert_eq!(
        r["spec"]["hops"],
        json!(["v1.34.8+k3s1", "v1.35.5+k3s1"]),
        "never a minor skip"
    );
    assert!(w.node_versions().iter().all(|(_, v)| v == "v1.35.5+k3s1"));
    // Both hops ran through the Plans: the upgrade Jobs name both versions.
    let jobs: Vec<String> = w
        .kube
        .list("batch", "jobs")
        .iter()
        .filter_map(|j| {
            j["metadata"]["labels"]["upgrade.cattle.io/version"]
                .as_str()
                .map(str::to_string)
        })
        .collect();
    assert!(
        jobs.iter().any(|v| v == "v1.34.8-k3s1") && jobs.iter().any(|v| v == "v1.35.5-k3s1"),
        "{jobs:?}"
    );
}

/// Longhorn 1.8 on keeps its backup target in the `BackupTarget` `default`; the
/// `backup-target` setting is gone and means nothing.
#[test]
fn a_longhorn_upgrade_with_a_backup_target_takes_a_system_backup() {
    let backups = |w: &World| {
        w.kube
            .list("longhorn.io", "systembackups")
            .into_iter()
            .filter(|b| b["metadata"]["labels"]["upkeep.dev/rollout"] == "longhorn-v1.10.2")
            .collect::<Vec<_>>()
    };
    // An old-style setting on 1.9: no SystemBackup (Longhorn would refuse it), volume snapshots.
    let w = World::with_update(in_window(), "longhorn", "v1.9.1", "v1.10.2");
    {
        let mut s = w.kube.store();
        let ctx = upkeep_sim::kube::store::Ctx::new(Utc::now(), "test");
        s.create_with_status(
            &("longhorn.io".into(), "settings".into()),
            "longhorn-system",
            json!({"metadata": {"name": "backup-target"}, "value": "s3://backups@eu-west-1/", "status": {"applied": true}}),
            &ctx,
        )
        .expect("setting");
    }
    let s = w.apply(UNTIL_DONE);
    assert_eq!(
        phase_of(&s, "longhorn-v1.10.2"),
        Some(Phase::Succeeded),
        "{s:?}"
    );
    assert!(backups(&w).is_empty());
    assert_eq!(w.kube.list("longhorn.io", "snapshots").len(), 3);

    let w = World::with_update(in_window(), "longhorn", "v1.9.1", "v1.10.2");
    {
        let mut s = w.kube.store();
        let ctx = upkeep_sim::kube::store::Ctx::new(Utc::now(), "test");
        s.modify(
            &("longhorn.io".into(), "backuptargets".into()),
            "longhorn-system",
            "default",
            &ctx,
            |t| t["spec"]["backupTargetURL"] = json!("s3://backups@eu-west-1/"),
        )
        .expect("backup target");
    }
    let s = w.apply(UNTIL_DONE);
    assert_eq!(
        phase_of(&s, "longhorn-v1.10.2"),
        Some(Phase::Succeeded),
        "{s:?}"
    );
    let b = backups(&w);
    assert_eq!(b.len(), 1, "{b:?}");
    assert_eq!(b[0]["status"]["state"], "Ready");
    assert!(w.kube.list("longhorn.io", "snapshots").is_empty());
}

/// A tiny HTTP server on 127.0.0.1: `/healthz` answers `status`, `/api/v1/query` a Prometheus
/// vector holding `value`.
fn endpoints(status: u16, value: &'static str) -> String {
    use std::io::{Read, Write};
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = l.local_addr().expect("addr");
    std::thread::spawn(move || {
        for s in l.incoming() {
            let Ok(mut s) = s else { continue };
            let mut buf = [0u8; 4096];
            let n = s.read(&mut buf).unwrap_or(0);
            let req = String::from_utf8_lossy(&buf[..n]);
            let (code, body) = if req.starts_with("GET /api/v1/query") {
                (
                    200,
                    format!(
                        r#"{{"status":"success","data":{{"resultType":"vector","result":[{{"metric":{{}},"value":[1700000000,"{value}"]}}]}}}}"#
                    ),
                )
            } else {
                (status, "ok".to_string())
            };
            let _ = write!(
                s,
                "HTTP/1.1 {code} X\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    format!("http://{addr}")
}

impl World {
    fn add_checks(&self, base: &str) {
        let text = format!(
            "apiVersion: upkeep.dev/v1alpha1\nkind: Policy\nchecks:\n  - name: home\n    http: {{url: \"{base}/healthz\"}}\n  - name: errors\n    components: [k3s]\n    prometheus: {{url: \"{base}\", query: 'sum(rate(http_requests_total{{code=~\"5..\"}}[5m]))', max: 0.01}}\n"
        );
        self.gh
            .with_forge(|f| {
                f.commit_file(REPO, "main", "policies/checks.yaml", &text, "Add checks")
            })
            .expect("forge")
            .expect("commit");
    }
}

#[test]
fn http_and_prometheus_checks_from_policy_run_after_each_hop() {
    let w = World::new(in_window());
    w.add_checks(&endpoints(200, "0.001"));
    let s = w.apply(UNTIL_DONE);
    assert_eq!(phase_of(&s, K3S), Some(Phase::Succeeded), "{s:?}");
    let r = w
        .kube
        .get("upkeep.dev", "upkeeprollouts", "upkeep-system", K3S)
        .expect("rollout");
    let checks = r["status"]["checks"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let home = checks
        .iter()
        .find(|c| c["check"] == "home")
        .expect("home check");
    assert!(
        home["ok"] == true && home["detail"].as_str().unwrap_or("").contains(": 200, in "),
        "{home}"
    );
    let errors = checks
        .iter()
        .find(|c| c["check"] == "errors")
        .expect("errors check");
    assert!(
        errors["detail"]
            .as_str()
            .unwrap_or("")
            .contains("= 0.001 (wanted <= 0.01)"),
        "{errors}"
    );

    // An endpoint that fails after the upgrade fails the validation.
    let w = World::new(in_window());
    w.add_checks(&endpoints(503, "0.001"));
    let s = w.apply(UNTIL_DONE);
    assert_eq!(phase_of(&s, K3S), Some(Phase::RequiresAttention), "{s:?}");
    assert!(s[0].2.contains("/healthz: 503 (expected 200)"), "{s:?}");
    // And an error rate over the threshold too.
    let w = World::new(in_window());
    w.add_checks(&endpoints(200, "0.2"));
    let s = w.apply(UNTIL_DONE);
    assert!(s[0].2.contains("= 0.2 (wanted <= 0.01)"), "{s:?}");
}

#[test]
fn the_other_cluster_faults_lead_to_the_right_outcome() {
    // A Job that fails although its node upgraded: judged by the nodes, it succeeded, and the
    // node the failed Job left cordoned is uncordoned.
    let w = World::new(in_window());
    w.kube.inject(ClusterFault::JobFailsButUpgraded {
        node: "agent-2".into(),
    });
    let s = w.apply(UNTIL_DONE);
    assert_eq!(phase_of(&s, K3S), Some(Phase::Succeeded), "{s:?}");
    assert!(
        w.kube
            .list("", "nodes")
            .iter()
            .all(|n| n["spec"]["unschedulable"].is_null())
    );

    // An upgrade slower than the Job deadline: the Job fails, nothing moved, reverted.
    let w = World::new(in_window());
    w.kube.inject(ClusterFault::SlowUpgrade {
        node: Some("server-1".into()),
        seconds: 3600,
    });
    let s = w.apply(UNTIL_DONE);
    assert_eq!(phase_of(&s, K3S), Some(Phase::Reverted), "{s:?}");
    assert!(s[0].2.contains("an upgrade Job failed"), "{s:?}");
    assert!(w.main_file().contains("version: v1.33.4+k3s1"));
    assert!(
        w.kube
            .list("", "nodes")
            .iter()
            .all(|n| n["spec"]["unschedulable"].is_null()),
        "uncordoned: {s:?}"
    );

    // An agent whose upgrade outlasts the Job deadline: the rollout halts. No other node starts,
    // the node the failed Job left cordoned is uncordoned, and it leaves upkeep's Plans so that
    // SUC does not retry it when the failed Job's TTL runs out.
    let w = World::new(in_window());
    w.kube.inject(ClusterFault::SlowUpgrade {
        node: Some("agent-1".into()),
        seconds: 3600,
    });
    let s = w.apply(UNTIL_DONE);
    assert_eq!(phase_of(&s, K3S), Some(Phase::RequiresAttention), "{s:?}");
    assert_eq!(
        w.version_of("agent-2"),
        "v1.33.4+k3s1",
        "no node after the failure"
    );
    let cordoned = || {
        w.kube
            .list("", "nodes")
            .iter()
            .filter(|n| !n["spec"]["unschedulable"].is_null())
            .count()
    };
    assert_eq!(cordoned(), 0, "{s:?}");
    let jobs = || w.kube.list("batch", "jobs").len();
    let before = jobs();
    w.kube.run_for(minutes(30), STEP);
    assert_eq!((jobs(), cordoned()), (before, 0), "no retry after the TTL");
    assert_eq!(w.version_of("agent-2"), "v1.33.4+k3s1");

    // A PodDisruptionBudget that would block a drain: the preflight fails, nothing changes, and
    // the PR hears it once.
    let w = World::new(in_window());
    w.kube.inject(ClusterFault::PdbBlocksDrain {
        node: "agent-1".into(),
    });
    let s = w.apply(minutes(30));
    assert_eq!(phase_of(&s, K3S), Some(Phase::Preflight), "{s:?}");
    assert!(
        s[0].2
            .contains("default/critical-agent-1 (pods on agent-1)"),
        "{s:?}"
    );
    assert!(
        w.kube.list("upgrade.cattle.io", "plans").is_empty(),
        "nothing applied"
    );
    w.apply(minutes(10));
    let c = w.comments();
    assert_eq!(c.len(), 1, "{c:?}");
    assert!(c[0].contains("Preflight failed"));

    // API 500s on the Plans: retried on the next look.
    let w = World::new(in_window());
    w.kube.inject(ClusterFault::ApiError {
        path_contains: "/plans/upkeep-server".into(),
        method: Some("PATCH".into()),
        status: 500,
        times: 2,
    });
    let s = w.apply(UNTIL_DONE);
    assert_eq!(phase_of(&s, K3S), Some(Phase::Succeeded), "{s:?}");
}

/// What a real k3s server needs of a snapshot, and what upkeep does around it: a failed
/// snapshot fails the rollout at once (nothing applied); a rollout created again takes a new
/// snapshot of its own; a cluster on SQLite gets no backup and the report says so; another
/// k3s Plan on the nodes is refused before anything starts.
#[test]
fn etcd_snapshots_fail_fast_are_per_attempt_and_absent_on_sqlite() {
    let w = World::new(in_window());
    w.kube.inject(ClusterFault::EtcdSnapshotFails {
        message: "etcdserver: request timed out".into(),
    });
    let s = w.apply(hours(5));
    assert_eq!(phase_of(&s, K3S), Some(Phase::Reverted), "{s:?}");
    assert!(
        s[0].2.contains("the backup failed") && s[0].2.contains("request timed out"),
        "{s:?}"
    );
    let r = w
        .kube
        .get("upkeep.dev", "upkeeprollouts", "upkeep-system", K3S)
        .expect("rollout");
    let failed_at = r["status"]["phaseSince"].as_str().unwrap_or("").to_string();
    assert!(
        w.kube.list("upgrade.cattle.io", "plans").is_empty(),
        "nothing applied"
    );
    // Failed in minutes of simulated time, not after the hop timeout (60 min).
    let started = r["status"]["startedAt"].as_str().unwrap_or("");
    let took = failed_at.parse::<DateTime<Utc>>().unwrap_or_default()
        - started.parse::<DateTime<Utc>>().unwrap_or_default();
    assert!(took < chrono::Duration::minutes(30), "took {took}");

    // Retried: the human merges the same version again after fixing etcd; the old Rollout is
    // deleted, a new one takes a snapshot of its own.
    w.merge_update("k3s", "v1.33.4+k3s1", "v1.33.5+k3s1");
    w.kube
        .store()
        .delete(
            &("upkeep.dev".into(), "upkeeprollouts".into()),
            "upkeep-system",
            K3S,
        )
        .expect("delete");
    let s = w.apply(UNTIL_DONE);
    assert_eq!(phase_of(&s, K3S), Some(Phase::Succeeded), "{s:?}");
    let files = w.kube.list("k3s.cattle.io", "etcdsnapshotfiles");
    assert_eq!(files.len(), 2, "{files:?}");
    let r = w
        .kube
        .get("upkeep.dev", "upkeeprollouts", "upkeep-system", K3S)
        .expect("rollout");
    let ready: Vec<&serde_json::Value> = files
        .iter()
        .filter(|f| f["status"]["readyToUse"] == true)
        .collect();
    assert_eq!(ready.len(), 1);
    assert_eq!(r["status"]["backup"], ready[0]["spec"]["snapshotName"]);
    assert_eq!(
        w.kube
            .list("batch", "jobs")
            .iter()
            .filter(|j| j["metadata"]["namespace"] == "kube-system")
            .count(),
        2
    );

    // SQLite: no snapshot Job, and the report says there was no datastore backup.
    let w = World::with_cluster(
        in_window(),
        ClusterSpec {
            servers: 1,
            embedded_etcd: false,
            ..ClusterSpec::default()
        },
        "k3s",
        "v1.33.4+k3s1",
        "v1.33.5+k3s1",
    );
    let s = w.apply(UNTIL_DONE);
    assert_eq!(phase_of(&s, K3S), Some(Phase::Succeeded), "{s:?}");
    assert!(w.kube.list("k3s.cattle.io", "etcdsnapshotfiles").is_empty());
    let c = w.comments();
    assert!(
        c[0].contains("with no datastore backup (no embedded etcd)"),
        "{c:?}"
    );
    let r = w
        .kube
        .get("upkeep.dev", "upkeeprollouts", "upkeep-system", K3S)
        .expect("rollout");
    assert!(
        r["status"]["noBackup"]
            .as_str()
            .is_some_and(|m| m.starts_with("no datastore backup")),
        "{r}"
    );

    // The k3s docs' own Plans beside upkeep's: refused before anything starts.
    let w = World::new(in_window());
    {
        let mut st = w.kube.store();
        let ctx = upkeep_sim::kube::store::Ctx::new(Utc::now(), "kubectl");
        st.create(
            &("upgrade.cattle.io".into(), "plans".into()),
            "system-upgrade",
            upkeep_sim::kube::seed::example_plan("server-plan", "v1.33.4+k3s1", true, 1),
            &ctx,
        )
        .expect("plan");
    }
    let s = w.apply(minutes(30));
    assert_eq!(phase_of(&s, K3S), Some(Phase::Preflight), "{s:?}");
    assert!(s[0].2.contains("system-upgrade/server-plan"), "{s:?}");
    assert!(w.kube.list("k3s.cattle.io", "etcdsnapshotfiles").is_empty());
}

impl World {
    /// Commit `files` to the config repository's main branch, as a human pushing.
    fn push_files(&self, files: &[(&str, &str)], message: &str) {
        let git = self.git();
        git.fetch().expect("fetch");
        let mut tip = git.tip("main").expect("tip");
        for (path, text) in files {
            tip = git
                .commit_file(tip, path, text.as_bytes(), message, &Author::default())
                .expect("commit");
        }
        git.push(tip, "main", false).expect("push");
    }

    /// Flux's kustomize-controller reads the config repository (the GitRepository
    /// flux-system/flux-system), and `wait` until `done` holds of the cluster.
    fn flux_from_repo(&self) {
        let path = self.clone_url.trim_start_matches("file://").to_string();
        self.kube
            .serve_git("flux-system", "flux-system", std::path::Path::new(&path));
    }

    fn wait(&self, what: &str, done: impl Fn(&World) -> bool) {
        self.run_until(what, done);
    }

    /// Longhorn's HelmRelease in git (`infrastructure/longhorn.yaml`, chart 1.9.1), applied by
    /// the Flux Kustomization `infrastructure`; nothing else in the cluster's tree.
    fn longhorn_applied_by_flux(&self) {
        self.push_files(
            &[
                ("clusters/homelab/kustomization.yaml", "resources: []\n"),
                ("apps/kustomization.yaml", "resources: []\n"),
                (
                    "infrastructure/longhorn.yaml",
                    &longhorn_manifest("", "1.9.1"),
                ),
            ],
            "add the cluster's manifests",
        );
        self.flux_from_repo();
        self.wait("Flux applied the HelmRelease", |w| {
            w.longhorn_release()["metadata"]["labels"]["kustomize.toolkit.fluxcd.io/name"]
                == "infrastructure"
        });
    }

    /// The user's own k3s Plans ([`USER_PLANS`]) in git, which the Flux Kustomization
    /// `infrastructure` applies; Flux reads the repository from here on.
    fn user_plans_applied_by_flux(&self) {
        self.push_files(
            &[
                ("clusters/homelab/kustomization.yaml", "resources: []\n"),
                ("apps/kustomization.yaml", "resources: []\n"),
                (
                    "infrastructure/kustomization.yaml",
                    "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nresources:\n  - k3s-plans.yaml\n",
                ),
                ("infrastructure/k3s-plans.yaml", USER_PLANS),
            ],
            "the k3s Plans, in git",
        );
        self.flux_from_repo();
    }

    fn longhorn_release(&self) -> serde_json::Value {
        self.kube
            .get(
                "helm.toolkit.fluxcd.io",
                "helmreleases",
                "longhorn-system",
                "longhorn",
            )
            .expect("hr")
    }
}

/// The Longhorn HelmRelease as a Flux repository keeps it (the emulator's seeded one).
fn longhorn_manifest(annotations: &str, version: &str) -> String {
    format!(
        "apiVersion: helm.toolkit.fluxcd.io/v2\nkind: HelmRelease\nmetadata:\n  name: longhorn\n  namespace: longhorn-system\n{annotations}spec:\n  interval: 30m\n  chart:\n    spec:\n      chart: longhorn\n      version: {version}\n      sourceRef:\n        kind: HelmRepository\n        name: longhorn\n        namespace: flux-system\n  values:\n    defaultSettings:\n      nodeDrainPolicy: block-if-contains-last-replica\n"
    )
}

/// Flux applies the Longhorn HelmRelease from git with forced ownership on every reconcile (the
/// emulated kustomize-controller), so setting its version in the cluster would be taken back
/// (and the "downgrade" refused by Longhorn). upkeep applies it through Flux instead: in the
/// window, after preflight and backup, it commits the version to the manifest in git and asks
/// Flux to reconcile. Before the window nothing moves, in git or in the cluster; afterwards git
/// says what runs. A version git does not hold as a plain value is refused, naming the file.
#[test]
fn a_release_flux_applies_from_git_is_upgraded_through_git_in_the_window() {
    let saturday_noon: DateTime<Utc> = "2026-11-21T11:00:00Z".parse().unwrap_or_default();
    let w = World::with_update(saturday_noon, "longhorn", "v1.9.1", "v1.10.2");
    w.longhorn_applied_by_flux();
    let lh = "longhorn-v1.10.2";
    // Watched all along, not only afterwards: outside the window the release never asks for
    // anything but 1.9.1 (Flux reconciles it every 10 simulated minutes meanwhile).
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let seen = {
        let (kube, stop) = (w.kube.shared.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut seen = std::collections::BTreeSet::new();
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let v = kube
                    .store()
                    .try_get(
                        &("helm.toolkit.fluxcd.io".into(), "helmreleases".into()),
                        "longhorn-system",
                        "longhorn",
                    )
                    .map(|h| h["spec"]["chart"]["spec"]["version"].to_string());
                seen.extend(v);
                std::thread::sleep(Duration::from_millis(2));
            }
            seen
        })
    };
    let s = w.apply(minutes(50));
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let seen = seen.join().unwrap_or_default();
    assert_eq!(
        seen.into_iter().collect::<Vec<_>>(),
        vec!["\"1.9.1\"".to_string()]
    );
    assert_eq!(phase_of(&s, lh), Some(Phase::WaitingForWindow), "{s:?}");
    let git_version = |w: &World| {
        let git = w.git();
        git.fetch().expect("fetch");
        let tip = git.tip("main").expect("tip");
        String::from_utf8(
            git.read_file(tip, "infrastructure/longhorn.yaml")
                .expect("read")
                .unwrap_or_default(),
        )
        .unwrap_or_default()
    };
    assert!(
        git_version(&w).contains("version: 1.9.1"),
        "nothing committed before the window"
    );
    assert_eq!(
        w.longhorn_release()["spec"]["chart"]["spec"]["version"],
        "1.9.1",
        "nothing applied before the window"
    );

    w.kube.clock().advance_to(in_window());
    let s = w.apply(UNTIL_DONE);
    assert_eq!(phase_of(&s, lh), Some(Phase::Succeeded), "{s:?}");
    assert!(
        git_version(&w).contains("version: 1.10.2"),
        "git says what runs"
    );
    assert!(
        w.main_log()
            .contains("chore(longhorn): apply v1.10.2 through Flux"),
        "{}",
        w.main_log()
    );
    let hr = w.longhorn_release();
    assert_eq!(hr["spec"]["chart"]["spec"]["version"], "1.10.2");
    assert_eq!(hr["status"]["history"][0]["chartVersion"], "1.10.2");
    let managers = hr["metadata"]["managedFields"].to_string();
    assert!(
        !managers.contains("\"manager\":\"upkeep\""),
        "upkeep never wrote the release: {managers}"
    );
    let ks = w
        .kube
        .get(
            "kustomize.toolkit.fluxcd.io",
            "kustomizations",
            "flux-system",
            "infrastructure",
        )
        .expect("ks");
    assert_eq!(ks["status"]["conditions"][0]["status"], "True", "{ks}");
    let tip = {
        let git = w.git();
        git.tip("main").expect("tip").to_string()
    };
    assert_eq!(
        ks["status"]["lastAppliedRevision"],
        format!("main@sha1:{tip}")
    );

    // A version Flux substitutes (`${longhorn_version}`) is no plain value upkeep could change.
    let w = World::with_update(in_window(), "longhorn", "v1.9.1", "v1.10.2");
    w.push_files(
        &[
            ("clusters/homelab/kustomization.yaml", "resources: []\n"),
            ("apps/kustomization.yaml", "resources: []\n"),
            (
                "infrastructure/longhorn.yaml",
                &longhorn_manifest("", "${longhorn_version}"),
            ),
        ],
        "longhorn's version from a variable",
    );
    {
        let mut st = w.kube.store();
        let ctx = upkeep_sim::kube::store::Ctx::new(Utc::now(), "kubectl");
        st.modify(
            &(
                "kustomize.toolkit.fluxcd.io".into(),
                "kustomizations".into(),
            ),
            "flux-system",
            "infrastructure",
            &ctx,
            |k| k["spec"]["postBuild"] = json!({"substitute": {"longhorn_version": "1.9.1"}}),
        )
        .expect("postBuild");
    }
    w.flux_from_repo();
    w.wait("Flux applied the HelmRelease", |w| {
        w.longhorn_release()["metadata"]["labels"]["kustomize.toolkit.fluxcd.io/name"]
            == "infrastructure"
    });
    let s = w.apply(minutes(50));
    assert_eq!(phase_of(&s, lh), Some(Phase::Preflight), "{s:?}");
    let msg = &s[0].2;
    assert!(
        msg.contains("infrastructure/longhorn.yaml:")
            && msg.contains("Kustomization flux-system/infrastructure")
            && msg.contains("a variable"),
        "{msg}"
    );
    assert_eq!(
        w.longhorn_release()["spec"]["chart"]["spec"]["version"],
        "1.9.1"
    );
}

/// A HelmRelease whose chart comes from an OCIRepository (`spec.chartRef`) has no chart version
/// upkeep could set (the CRD refuses `chart` beside `chartRef`): refused in preflight, saying
/// where the version lives; nothing is written.
#[test]
fn a_release_with_a_chart_ref_is_refused_clearly() {
    let w = World::with_update(in_window(), "longhorn", "v1.9.1", "v1.10.2");
    {
        let mut st = w.kube.store();
        let ctx = upkeep_sim::kube::store::Ctx::new(Utc::now(), "kustomize-controller");
        st.modify(
            &("helm.toolkit.fluxcd.io".into(), "helmreleases".into()),
            "longhorn-system",
            "longhorn",
            &ctx,
            |h| {
                if let Some(spec) = h["spec"].as_object_mut() {
                    spec.remove("chart");
                    spec.insert(
                        "chartRef".into(),
                        json!({"kind": "OCIRepository", "name": "longhorn", "namespace": "flux-system"}),
                    );
                }
            },
        )
        .expect("chartRef");
    }
    let s = w.apply(minutes(30));
    assert_eq!(
        phase_of(&s, "longhorn-v1.10.2"),
        Some(Phase::Preflight),
        "{s:?}"
    );
    assert!(
        s[0].2
            .contains("takes its chart from OCIRepository/flux-system/longhorn (spec.chartRef)"),
        "{s:?}"
    );
    let hr = w.longhorn_release();
    assert!(hr["spec"]["chart"].is_null(), "{hr}");
    assert!(
        !hr["metadata"]["managedFields"]
            .to_string()
            .contains("\"upkeep\""),
        "upkeep wrote nothing: {hr}"
    );
}

/// The FluxInstance as a Flux repository keeps it (the emulator's seeded one).
fn flux_instance_manifest(version: &str) -> String {
    format!(
        "apiVersion: fluxcd.controlplane.io/v1\nkind: FluxInstance\nmetadata:\n  name: flux\n  namespace: flux-system\nspec:\n  distribution:\n    version: \"{version}\"\n    registry: ghcr.io/fluxcd\n    artifact: oci://ghcr.io/controlplaneio-fluxcd/flux-operator-manifests\n  components:\n    - source-controller\n    - kustomize-controller\n    - helm-controller\n    - notification-controller\n  cluster:\n    type: kubernetes\n    networkPolicy: true\n    domain: cluster.local\n  sync:\n    kind: GitRepository\n    url: https://github.com/example/homelab\n    ref: refs/heads/main\n    path: clusters/homelab\n"
    )
}

/// Flux upgrades itself through git too, and a failed patch upgrade is rolled back the same
/// way (another commit); a cluster rebuilt from the repository alone runs what git says.
#[test]
fn flux_is_upgraded_and_rolled_back_through_git_and_a_rebuild_runs_what_git_says() {
    let w = World::with_update(in_window(), "flux", "v2.6.4", "v2.6.5");
    w.push_files(
        &[
            (
                "clusters/homelab/kustomization.yaml",
                "resources:\n  - flux-instance.yaml\n",
            ),
            (
                "clusters/homelab/flux-instance.yaml",
                &flux_instance_manifest("2.6.4"),
            ),
            ("apps/kustomization.yaml", "resources: []\n"),
            (
                "infrastructure/longhorn.yaml",
                &longhorn_manifest("", "1.9.1"),
            ),
        ],
        "add the cluster's manifests",
    );
    w.flux_from_repo();
    let fi = |w: &World| {
        w.kube
            .get(
                "fluxcd.controlplane.io",
                "fluxinstances",
                "flux-system",
                "flux",
            )
            .expect("fi")
    };
    w.wait("Flux applied the FluxInstance", |w| {
        fi(w)["metadata"]["labels"]["kustomize.toolkit.fluxcd.io/name"] == "flux-system"
    });
    w.kube.inject(ClusterFault::FluxUpgradeFails);
    let s = w.apply(UNTIL_DONE);
    assert_eq!(phase_of(&s, "flux-v2.6.5"), Some(Phase::Reverted), "{s:?}");
    let log = w.main_log();
    assert!(
        log.contains("chore(flux): apply v2.6.5 through Flux"),
        "{log}"
    );
    assert!(
        log.contains("chore(flux): apply v2.6.4 through Flux"),
        "rolled back through git: {log}"
    );
    assert!(
        w.main_file().contains("version: v2.6.4"),
        "versions.yaml reverted"
    );
    w.wait("flux-operator runs 2.6.4 again, Ready", |w| {
        let f = fi(w);
        f["spec"]["distribution"]["version"] == "2.6.4"
            && f["status"]["conditions"]
                .to_string()
                .contains("ReconciliationSucceeded")
    });

    // Merged again (the fault is gone): it goes through.
    w.merge_update("flux", "v2.6.4", "v2.6.5");
    w.kube
        .store()
        .delete(
            &("upkeep.dev".into(), "upkeeprollouts".into()),
            "upkeep-system",
            "flux-v2.6.5",
        )
        .expect("delete");
    let s = w.apply(UNTIL_DONE);
    assert_eq!(phase_of(&s, "flux-v2.6.5"), Some(Phase::Succeeded), "{s:?}");
    assert!(
        fi(&w)["status"]["lastAppliedRevision"]
            .as_str()
            .is_some_and(|r| r.starts_with("v2.6.5@"))
    );

    // A new cluster from the repository alone: Flux applies what git says.
    let rebuilt = KubeSim::start_in_thread(KubeOptions {
        clock: SimClock::stepped(in_window()),
        ..KubeOptions::default()
    })
    .expect("kube");
    let path = w.clone_url.trim_start_matches("file://").to_string();
    rebuilt.serve_git("flux-system", "flux-system", std::path::Path::new(&path));
    for step in 0.. {
        let f = rebuilt
            .get(
                "fluxcd.controlplane.io",
                "fluxinstances",
                "flux-system",
                "flux",
            )
            .unwrap_or_default();
        if f["status"]["lastAppliedRevision"]
            .as_str()
            .is_some_and(|r| r.starts_with("v2.6.5@"))
        {
            break;
        }
        assert!(
            step < 60,
            "the rebuilt cluster never ran git's version in an hour: {f}"
        );
        rebuilt.run_for(minutes(1), STEP);
    }
}

impl World {
    /// A rollout's phase as the cluster stores it.
    fn stored_phase(&self, name: &str) -> String {
        self.kube
            .get("upkeep.dev", "upkeeprollouts", "upkeep-system", name)
            .map(|r| r["status"]["phase"].as_str().unwrap_or("").to_string())
            .unwrap_or_default()
    }

    fn stored_time(&self, name: &str, field: &str) -> DateTime<Utc> {
        self.kube
            .get("upkeep.dev", "upkeeprollouts", "upkeep-system", name)
            .and_then(|r| r["status"][field].as_str().and_then(|t| t.parse().ok()))
            .unwrap_or_default()
    }
}

/// A newer version merged while the older one rolls out: the older rollout ends as Superseded
/// and says so on its PR (it used to sit in its phase for ever), and the newer one takes over
/// from what the nodes run.
#[test]
fn a_newer_merge_supersedes_a_rollout_under_way() {
    let w = World::new(in_window());
    // Each node takes 500 simulated seconds: the first cycle ends with the rollout under way.
    w.kube.inject(ClusterFault::SlowUpgrade {
        node: None,
        seconds: 500,
    });
    let s = w.apply(minutes(15));
    let under_way = phase_of(&s, K3S);
    assert!(under_way.is_some_and(|p| p.holds_the_cluster()), "{s:?}");
    w.merge_update("k3s", "v1.33.5+k3s1", "v1.33.6+k3s1");
    let s = w.apply(UNTIL_DONE);
    assert_eq!(w.stored_phase(K3S), "Superseded");
    assert_eq!(
        phase_of(&s, "k3s-v1.33.6-k3s1"),
        Some(Phase::Succeeded),
        "{s:?}"
    );
    assert!(
        w.node_versions().iter().all(|(_, v)| v == "v1.33.6+k3s1"),
        "{:?}",
        w.node_versions()
    );
    let said: Vec<String> = w
        .comments()
        .into_iter()
        .filter(|c| c.contains("**Superseded.**"))
        .collect();
    assert_eq!(said.len(), 1, "{:?}", w.comments());
    assert!(
        said[0].contains("now asks for k3s v1.33.6+k3s1"),
        "{said:?}"
    );
    // Nothing more on the next cycle.
    w.apply(minutes(50));
    assert_eq!(
        w.comments()
            .iter()
            .filter(|c| c.contains("Superseded"))
            .count(),
        1
    );
}

/// Two components merged together take turns (versions.yaml's order): a Longhorn upgrade that
/// degrades a volume no longer fails the k3s rollout validated beside it, and a Flux rollout
/// is never validated while Longhorn's chart is mid-upgrade.
#[test]
fn rollouts_of_two_components_take_turns() {
    let w = World::new(in_window());
    w.merge_update("longhorn", "v1.9.1", "v1.10.2");
    w.kube.inject(ClusterFault::VolumeDegradesAfterUpgrade {
        volume: "pvc-00003dde-0000-4000-8000-000000000002".into(),
    });
    let s = w.apply(hours(15));
    assert_eq!(phase_of(&s, K3S), Some(Phase::Succeeded), "{s:?}");
    assert_eq!(
        phase_of(&s, "longhorn-v1.10.2"),
        Some(Phase::RequiresAttention),
        "{s:?}"
    );
    // Longhorn's chart was upgraded only once k3s had succeeded.
    let hr = w.longhorn_release();
    let upgraded: DateTime<Utc> = hr["status"]["conditions"][0]["lastTransitionTime"]
        .as_str()
        .and_then(|t| t.parse().ok())
        .unwrap_or_default();
    assert!(
        upgraded > w.stored_time(K3S, "phaseSince"),
        "longhorn upgraded at {upgraded}, k3s succeeded at {}",
        w.stored_time(K3S, "phaseSince")
    );

    let w = World::with_update(in_window(), "flux", "v2.6.4", "v2.7.0");
    w.merge_update("longhorn", "v1.9.1", "v1.10.2");
    let s = w.apply(hours(15));
    assert_eq!(phase_of(&s, "flux-v2.7.0"), Some(Phase::Succeeded), "{s:?}");
    assert_eq!(
        phase_of(&s, "longhorn-v1.10.2"),
        Some(Phase::Succeeded),
        "{s:?}"
    );
    assert!(
        w.stored_time("longhorn-v1.10.2", "phaseSince")
            > w.stored_time("flux-v2.7.0", "phaseSince"),
        "longhorn finished after flux"
    );
}

/// `upkeep history` joins the cluster's rollouts with the config repository's log, and each
/// answers when the other is gone.
#[test]
fn history_survives_the_loss_of_the_cluster_record_or_of_git() {
    let w = World::new(in_window());
    let s = w.apply(UNTIL_DONE);
    assert_eq!(phase_of(&s, K3S), Some(Phase::Succeeded), "{s:?}");
    let with_git = |extra: &[&str]| w.history(extra);
    let (code, out, err) = with_git(&["--output", "json"]);
    assert_eq!(code, 0, "{err}");
    let entries: serde_json::Value = serde_json::from_str(&out).expect("json");
    let k3s = &entries[0];
    assert_eq!(
        (
            k3s["component"].as_str(),
            k3s["from"].as_str(),
            k3s["to"].as_str(),
            k3s["outcome"].as_str(),
            k3s["source"].as_str(),
            k3s["pullRequest"].as_u64()
        ),
        (
            Some("k3s"),
            Some("v1.33.4+k3s1"),
            Some("v1.33.5+k3s1"),
            Some("Succeeded"),
            Some("cluster+git"),
            Some(1)
        ),
        "{out}"
    );
    assert!(
        k3s["durationSeconds"].as_i64().is_some_and(|d| d > 0),
        "{out}"
    );
    assert!(
        k3s["backup"]
            .as_str()
            .is_some_and(|b| b.starts_with("upkeep-k3s")),
        "{out}"
    );
    // Each node's time upgrading, from its SUC Job (kept in the status after the Job's TTL).
    let nodes: Vec<(&str, i64)> = k3s["nodes"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|n| Some((n["node"].as_str()?, n["seconds"].as_i64()?)))
                .collect()
        })
        .unwrap_or_default();
    assert_eq!(
        nodes.iter().map(|n| n.0).collect::<Vec<_>>(),
        ["agent-1", "agent-2", "server-1"],
        "{out}"
    );
    assert!(nodes.iter().all(|n| n.1 > 0), "{out}");
    let (_, table, _) = with_git(&["--time-zone", "Europe/Amsterdam"]);
    assert!(
        table.starts_with("STARTED") && table.contains("Succeeded"),
        "{table}"
    );
    let (_, md, _) = with_git(&["--output", "markdown", "--component", "k3s"]);
    assert!(md.contains("| k3s | v1.33.4+k3s1 | v1.33.5+k3s1 |"), "{md}");
    assert!(
        md.contains("agent-1 1m") && md.contains("server-1 1m"),
        "{md}"
    );
    // Without the repository: the cluster's record alone, and a note on stderr.
    let (code, out, err) = w.cli(&["history", "--output", "json", "--since", "3650d"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("\"source\": \"cluster\""), "{out}");
    assert!(err.contains("git's record is left out"), "{err}");
    // The rollout object is gone (a rebuilt cluster): git still knows the update.
    let deleted = std::process::Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(w.dir.path().join("kubeconfig"))
        .args(["-n", "upkeep-system", "delete", "ukr", K3S])
        .output()
        .expect("kubectl");
    assert!(deleted.status.success(), "{deleted:?}");
    w.kube.clear_audit();
    let (code, out, err) = with_git(&["--output", "json"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("\"source\": \"git\"") && out.contains("no rollout record"),
        "{out}"
    );
}

/// A policy with a soak of `duration` (`onRegression: on`) and two Prometheus checks against
/// `prom`: an error rate (validation and soak) and pod restarts (soak only: a node's restart
/// trips it right after a hop).
fn soak_policy(prom: &str, duration: &str, on: &str) -> String {
    format!(
        "apiVersion: upkeep.dev/v1alpha1\nkind: Policy\nsoak:\n  - name: watch\n    duration: {duration}\n    onRegression: {on}\nchecks:\n  - name: errors\n    prometheus: {{url: \"{prom}\", query: '{ERRORS}', max: 0.01}}\n  - name: restarts\n    during: [soak]\n    prometheus: {{url: \"{prom}\", query: '{RESTARTS}', max: 3}}\n"
    )
}

const ERRORS: &str = "sum(rate(http_requests_total{code=~\"5..\"}[5m])) or vector(0)";
const RESTARTS: &str = "sum(increase(kube_pod_container_status_restarts_total[5m]))";

impl World {
    /// Replace the tests' no-soak policy with `text`.
    fn set_policy(&self, text: &str) {
        self.gh
            .with_forge(|f| f.commit_file(REPO, "main", common::NO_SOAK_FILE, text, "Soak"))
            .expect("forge")
            .expect("commit");
    }

    fn rollout(&self, name: &str) -> serde_json::Value {
        self.kube
            .get("upkeep.dev", "upkeeprollouts", "upkeep-system", name)
            .unwrap_or_default()
    }

    /// One look at the rollouts after the simulated clock moved `minutes` on (stopped while the
    /// world is looked at, so that "30 minutes later" is exactly that).
    fn later(&self, mins: i64) -> Vec<(String, Phase, String)> {
        let t = self.kube.clock().now() + chrono::Duration::minutes(mins);
        self.kube.clock().advance_to(t);
        self.apply(minutes(50))
    }
}

#[test]
fn a_soak_regression_after_success_leads_to_the_policys_outcome() {
    let (prom, _stop) = upkeep_sim::prometheus::PrometheusSim::start_until_stopped().expect("prom");
    prom.set(ERRORS, 0.001);
    prom.set(RESTARTS, 0.0);

    // k3s validates and soaks for two hours: its PR hears when the soak ends, and the restart
    // check (soak only) has not run yet.
    let w = World::new(in_window());
    w.set_policy(&soak_policy(&prom.url(), "2h", "attention"));
    let s = w.apply(UNTIL_DONE);
    assert_eq!(phase_of(&s, K3S), Some(Phase::Soaking), "{s:?}");
    assert!(
        w.comments()[0].contains("Soaking for 2h until"),
        "{:?}",
        w.comments()
    );
    assert!(
        !prom.asked().iter().any(|q| q == RESTARTS),
        "{:?}",
        prom.asked()
    );
    // Half an hour on, both checks run and pass; the rollout still soaks.
    let s = w.later(30);
    assert_eq!(phase_of(&s, K3S), Some(Phase::Soaking), "{s:?}");
    assert!(prom.asked().iter().any(|q| q == RESTARTS));
    let soak = &w.rollout(K3S)["status"]["soak"];
    assert!(soak["looks"].as_u64().unwrap_or(0) >= 1, "{soak}");
    // The error rate rises: the policy says `attention`. Nothing is changed, versions.yaml still
    // asks for the new version, the PR, the events and the status say why.
    prom.set(ERRORS, 0.2);
    let s = w.later(30);
    assert_eq!(
        phase_of(&s, K3S),
        Some(Phase::Soaking),
        "one failed look: {s:?}"
    );
    let s = w.later(5);
    assert_eq!(phase_of(&s, K3S), Some(Phase::RequiresAttention), "{s:?}");
    let (_, _, msg) = s.iter().find(|x| x.0 == K3S).cloned().unwrap_or_default();
    assert!(msg.contains("regressed during the soak: errors:"), "{msg}");
    assert!(msg.contains("= 0.2 (wanted <= 0.01)"), "{msg}");
    assert!(w.main_file().contains("version: v1.33.5+k3s1"), "no revert");
    let said = w.comments();
    assert!(
        said.iter()
            .any(|c| c.contains("**Regression during the soak, needs a human.**")),
        "{said:?}"
    );
    assert!(!said.iter().any(|c| c.contains("**Soaked**")), "{said:?}");
    let soak = &w.rollout(K3S)["status"]["soak"];
    assert!(
        soak["regression"]
            .as_str()
            .unwrap_or("")
            .starts_with("errors:"),
        "{soak}"
    );
    let events = w.kube.list("", "events");
    assert!(
        events.iter().any(|e| e["involvedObject"]["name"] == K3S
            && e["reason"] == "RequiresAttention"
            && e["type"] == "Warning"
            && e["message"]
                .as_str()
                .unwrap_or("")
                .contains("regressed during the soak")),
        "{events:?}"
    );

    // The history keeps the soak's result.
    let (code, out, err) = w.cli(&["history", "--output", "json", "--since", "3650d"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("\"soak\": \"regressed: errors:"), "{out}");

    // A Flux patch can go back: with `rollback`, a regression rolls it back and reverts git.
    prom.set(ERRORS, 0.001);
    let w = World::with_update(in_window(), "flux", "v2.6.4", "v2.6.5");
    w.set_policy(&soak_policy(&prom.url(), "2h", "rollback"));
    let s = w.apply(UNTIL_DONE);
    assert_eq!(phase_of(&s, "flux-v2.6.5"), Some(Phase::Soaking), "{s:?}");
    prom.set(RESTARTS, 12.0);
    w.later(20);
    let s = w.later(5);
    assert_eq!(phase_of(&s, "flux-v2.6.5"), Some(Phase::Reverted), "{s:?}");
    assert!(
        w.main_file().contains("version: v2.6.4"),
        "{}",
        w.main_file()
    );
    assert!(w.main_log().contains("revert(flux)"), "{}", w.main_log());
    let fi = w
        .kube
        .get(
            "fluxcd.controlplane.io",
            "fluxinstances",
            "flux-system",
            "flux",
        )
        .expect("fi");
    assert_eq!(
        fi["spec"]["distribution"]["version"], "2.6.4",
        "rolled back: {fi}"
    );

    // Without a regression, the soak ends and the rollout succeeds: Succeeded means soaked.
    prom.set(RESTARTS, 0.0);
    let w = World::new(in_window());
    w.set_policy(&soak_policy(&prom.url(), "2h", "attention"));
    let s = w.apply(UNTIL_DONE);
    assert_eq!(phase_of(&s, K3S), Some(Phase::Soaking), "{s:?}");
    let s = w.later(60);
    assert_eq!(phase_of(&s, K3S), Some(Phase::Soaking), "{s:?}");
    let s = w.later(61);
    assert_eq!(phase_of(&s, K3S), Some(Phase::Succeeded), "{s:?}");
    assert!(
        w.comments()
            .iter()
            .any(|c| c.contains("**Soaked**: k3s v1.33.5+k3s1 ran 2h")),
        "{:?}",
        w.comments()
    );
}

impl World {
    /// `kubectl apply` of `yaml` as a human would (the audit starts over after).
    fn kubectl_apply(&self, yaml: &str) {
        let denied = common::rbac::denied(&self.kube.audit());
        assert!(denied.is_empty(), "deploy/ does not allow: {denied:#?}");
        let file = self.dir.path().join("objects.yaml");
        std::fs::write(&file, yaml).expect("write");
        self.kube
            .write_kubeconfig(&self.dir.path().join("kubeconfig"))
            .expect("kubeconfig");
        let out = std::process::Command::new("kubectl")
            .arg("--kubeconfig")
            .arg(self.dir.path().join("kubeconfig"))
            .args(["apply", "-f"])
            .arg(&file)
            .output()
            .expect("kubectl");
        assert!(out.status.success(), "kubectl apply: {out:?}");
        self.kube.clear_audit();
    }

    /// The media apps and a maintenance policy that scales them down around k3s rollouts.
    fn with_media_apps(&self) {
        self.kubectl_apply(
            "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: media\n---\napiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: jellyfin\n  namespace: media\nspec:\n  replicas: 3\n  selector: {matchLabels: {app: jellyfin}}\n  template:\n    metadata: {labels: {app: jellyfin}}\n    spec: {containers: [{name: j, image: jellyfin/jellyfin}]}\n---\napiVersion: apps/v1\nkind: StatefulSet\nmetadata:\n  name: db\n  namespace: media\nspec:\n  replicas: 2\n  serviceName: db\n  selector: {matchLabels: {app: db}}\n  template:\n    metadata: {labels: {app: db}}\n    spec: {containers: [{name: d, image: postgres}]}\n",
        );
        self.set_policy(&format!(
            "{}maintenance:\n  - name: quiet-media\n    components: [k3s]\n    namespaces: [media]\n    scaleDown: [Deployment/media/jellyfin, StatefulSet/media/db]\n",
            common::NO_SOAK
        ));
    }

    fn replicas(&self, plural: &str, name: &str) -> (i64, serde_json::Value) {
        let o = self
            .kube
            .get("apps", plural, "media", name)
            .unwrap_or_default();
        (
            o["spec"]["replicas"].as_i64().unwrap_or(-1),
            o["metadata"]["annotations"].clone(),
        )
    }
}

#[test]
fn maintenance_mode_restores_the_exact_replicas() {
    let back = |w: &World| {
        let (j, ja) = w.replicas("deployments", "jellyfin");
        let (d, da) = w.replicas("statefulsets", "db");
        let ns = w
            .kube
            .get("", "namespaces", "", "media")
            .unwrap_or_default();
        assert_eq!((j, d), (3, 2), "{ja} {da}");
        assert!(
            ja.get("upkeep.dev/replicas-before").is_none()
                && da.get("upkeep.dev/maintenance").is_none(),
            "{ja} {da}"
        );
        assert!(
            ns["metadata"]["labels"]
                .get("upkeep.dev/maintenance")
                .is_none(),
            "{ns}"
        );
    };
    // Success: down while the rollout changed the cluster, back after, exactly.
    let w = World::new(in_window());
    w.with_media_apps();
    let s = w.apply(UNTIL_DONE);
    assert_eq!(phase_of(&s, K3S), Some(Phase::Succeeded), "{s:?}");
    back(&w);
    let m = &w.rollout(K3S)["status"]["maintenance"];
    assert_eq!(
        m["done"],
        json!([
            "namespace media marked",
            "Deployment/media/jellyfin: 3 -> 0",
            "StatefulSet/media/db: 2 -> 0"
        ]),
        "{m}"
    );
    assert_eq!(
        m["restored"],
        json!([
            "Deployment/media/jellyfin: 0 -> 3",
            "StatefulSet/media/db: 0 -> 2",
            "namespace media unmarked"
        ]),
        "{m}"
    );

    // By hand: `upkeep maintenance enable`, `status`, `disable`.
    let checkout = w.dir.path().join("checkout");
    let repo = checkout.to_str().unwrap_or_default();
    let (code, out, err) = w.cli(&["maintenance", "enable", "--repo", repo]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("Deployment/media/jellyfin: 3 -> 0"), "{out}");
    let (code, out, err) = w.cli(&["maintenance", "status", "--repo", repo]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("namespace media: in maintenance (human since ")
            && out.contains("StatefulSet/media/db: scaled down to 0 by human (had 2)"),
        "{out}"
    );
    let (code, out, err) = w.cli(&["maintenance", "disable", "--repo", repo]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("StatefulSet/media/db: 0 -> 2"), "{out}");
    back(&w);
    let (code, _, err) = w.cli(&["maintenance", "status", "--repo", "/nonexistent"]);
    assert_eq!(code, 1);
    assert!(err.contains("/nonexistent"), "{err}");

    // The backup cannot be started (the API refuses the snapshot Job) after the apps went
    // down: they come back at once, and go down again when the retry goes on.
    let w = World::new(in_window());
    w.with_media_apps();
    w.kube.inject(ClusterFault::ApiError {
        path_contains: "/jobs".into(),
        method: Some("POST".into()),
        status: 500,
        times: 1000,
    });
    let s = w.apply(minutes(50));
    assert!(
        s.iter()
            .any(|(n, _, m)| n == K3S && m.starts_with("retrying: ")),
        "{s:?}"
    );
    back(&w);
    let m = &w.rollout(K3S)["status"]["maintenance"];
    assert!(m["restoredAt"].is_string(), "{m}");

    // Failure: a node that never comes back; the apps come back all the same.
    let w = World::new(in_window());
    w.with_media_apps();
    w.kube.inject(ClusterFault::NodeNeverReady {
        node: "agent-1".into(),
    });
    let s = w.apply(UNTIL_DONE);
    assert_eq!(phase_of(&s, K3S), Some(Phase::RequiresAttention), "{s:?}");
    back(&w);

    // Killed mid-rollout, while the apps are down: started again, it does not take 0 for what
    // they had.
    let w = World::new(in_window());
    w.with_media_apps();
    // One look at a time, the clock standing: the cycle that enters the change is the last.
    let mut s = w.apply(Duration::ZERO);
    let mut tries = 0;
    let changing = |s: &[(String, Phase, String)]| {
        matches!(phase_of(s, K3S), Some(Phase::Backup | Phase::Applying))
    };
    while !changing(&s) && tries < 50 {
        s = w.apply(Duration::ZERO);
        tries += 1;
    }
    assert!(changing(&s), "{s:?}");
    let (j, ja) = w.replicas("deployments", "jellyfin");
    assert_eq!(j, 0, "down while the rollout changes the cluster: {ja}");
    assert_eq!(ja["upkeep.dev/replicas-before"], "3");
    let s = w.apply(UNTIL_DONE);
    assert_eq!(phase_of(&s, K3S), Some(Phase::Succeeded), "{s:?}");
    back(&w);
}

#[test]
fn ended_rollouts_beyond_the_limit_are_pruned_once_git_holds_their_record() {
    let w = World::new(in_window());
    w.set_policy(&format!("{}rollouts:\n  keepEnded: 0\n", common::NO_SOAK));
    let s = w.apply(UNTIL_DONE);
    assert_eq!(phase_of(&s, K3S), Some(Phase::Succeeded), "{s:?}");
    // The rollout versions.yaml asks for stays, however low the limit.
    assert!(!w.rollout(K3S).is_null());
    w.merge_update("k3s", "v1.33.5+k3s1", "v1.33.6+k3s1");
    let s = w.apply(UNTIL_DONE);
    assert_eq!(
        phase_of(&s, "k3s-v1.33.6-k3s1"),
        Some(Phase::Succeeded),
        "{s:?}"
    );
    assert!(w.rollout(K3S).is_null(), "the older one is gone");
    // History still lists it, from git.
    let (code, out, err) = w.history(&["--output", "json"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("\"to\": \"v1.33.5+k3s1\"") && out.contains("\"source\": \"git\""),
        "{out}"
    );
}

/// A month of rollouts (a k3s patch and a Longhorn minor that succeed, then a Longhorn minor
/// that degrades a volume and needs a human), then `upkeep report --monthly` from the cluster's
/// record, git's log and the shipped catalog's release dates; posted on the dashboard once.
#[test]
fn the_monthly_report_matches_a_month_of_rollouts() {
    let w = World::new(in_window());
    let s = w.apply(UNTIL_DONE);
    assert_eq!(phase_of(&s, K3S), Some(Phase::Succeeded), "{s:?}");
    w.merge_update("longhorn", "v1.9.1", "v1.10.2");
    let s = w.apply(UNTIL_DONE);
    assert_eq!(
        phase_of(&s, "longhorn-v1.10.2"),
        Some(Phase::Succeeded),
        "{s:?}"
    );
    w.merge_update("longhorn", "v1.10.2", "v1.11.3");
    w.kube.inject(ClusterFault::VolumeDegradesAfterUpgrade {
        volume: "pvc-00003dde-0000-4000-8000-000000000002".into(),
    });
    let s = w.apply(UNTIL_DONE);
    assert_eq!(
        phase_of(&s, "longhorn-v1.11.3"),
        Some(Phase::RequiresAttention),
        "{s:?}"
    );

    let state = w.dir.path().join("report-state");
    let report = |extra: &[&str]| {
        let mut args: Vec<&str> = vec![
            "report",
            "--monthly",
            "--month",
            "2026-11",
            "--time-zone",
            "Europe/Amsterdam",
            "--offline",
            "--repo-url",
            &w.clone_url,
            "--state-dir",
            state.to_str().unwrap_or_default(),
        ];
        args.extend_from_slice(extra);
        w.cli_with(&args, &[("GITHUB_TOKEN", TOKEN)])
    };
    let (code, out, err) = report(&["--format", "json"]);
    assert_eq!(code, 0, "{err}");
    let m: serde_json::Value = serde_json::from_str(&out).expect("json");
    let tos = |k: &str| -> Vec<String> {
        m[k].as_array()
            .map(|a| {
                a.iter()
                    .map(|r| {
                        format!(
                            "{} {}",
                            r["component"].as_str().unwrap_or(""),
                            r["to"].as_str().unwrap_or("")
                        )
                    })
                    .collect()
            })
            .unwrap_or_default()
    };
    assert_eq!(
        tos("applied"),
        ["k3s v1.33.5+k3s1", "longhorn v1.10.2"],
        "{out}"
    );
    assert_eq!(tos("failed"), ["longhorn v1.11.3"], "{out}");
    assert!(
        m["failed"][0]["revert"].is_string(),
        "the revert commit: {out}"
    );
    // Saturday nights in November, Amsterdam time: October 31's runs 2 h into November, then
    // four whole ones.
    assert_eq!(m["windows"][0]["name"], "saturday-night");
    assert_eq!(m["windows"][0]["openHours"], 18.0, "{out}");
    // Release dates from the catalog (its k3s entries have none): Longhorn v1.10.2 was
    // published on 2026-01-28, applied on 2026-11-21.
    assert_eq!(
        m["applied"][1]["releasedAt"], "2026-01-28T00:32:41Z",
        "{out}"
    );
    assert!(
        m["applied"][1]["daysToApplied"]
            .as_f64()
            .is_some_and(|d| (297.0..298.0).contains(&d)),
        "{out}"
    );
    assert!(m["applied"][0]["daysToApplied"].is_null(), "{out}");
    let (code, md, err) = report(&[]);
    assert_eq!(code, 0, "{err}");
    assert!(md.starts_with("# Update report: November 2026"), "{md}");
    assert!(
        md.contains("- 2 updates applied, 1 failed or reverted"),
        "{md}"
    );
    let (code, page, err) = report(&["--format", "html"]);
    assert_eq!(code, 0, "{err}");
    assert!(page.contains("<svg") && page.contains("longhorn"), "{page}");
    // Posted on the dashboard once, however often it is run.
    let dashboard = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("rt")
        .block_on(async {
            use upkeep::forge::Forge;
            w.forge()
                .create_issue(
                    upkeep::propose::DASHBOARD_TITLE,
                    "dashboard",
                    &[upkeep::propose::DASHBOARD_LABEL.to_string()],
                )
                .await
                .expect("issue")
                .number
        });
    let post = [
        "--post",
        "--owner",
        "homelab",
        "--name",
        "cluster",
        "--github-api-url",
        &w.gh.url(),
    ];
    for _ in 0..2 {
        let (code, _, err) = report(&post);
        assert_eq!(code, 0, "{err}");
    }
    let said =
        w.gh.with_forge(|f| f.comments(REPO, dashboard))
            .unwrap_or_default();
    assert_eq!(said.len(), 1, "{said:?}");
    assert!(said[0].contains("<!-- upkeep:monthly-report=2026-11 -->"));
}

/// A protected base branch (issue 24): the in-window commit that applies a version through git
/// goes in as a pull request upkeep opens and merges at once; where the protection requires a
/// review, the hop fails at once with the reason instead of trying every look for the window.
#[test]
fn a_protected_base_branch_applies_through_a_pull_request_or_fails_at_once() {
    for reviews in [false, true] {
        let mut w = World::with_update(in_window(), "longhorn", "v1.9.1", "v1.10.2");
        w.longhorn_applied_by_flux();
        // From here on main takes no direct push (over smart HTTP, where the hook runs).
        w.clone_url = format!("{}/git/{REPO}.git", w.gh.url());
        w.gh.with_forge(|f| {
            if reviews {
                f.protect_with_reviews(REPO, "main")
            } else {
                f.protect(REPO, "main")
            }
        })
        .expect("forge")
        .expect("protect");
        let lh = "longhorn-v1.10.2";
        let s = w.apply(UNTIL_DONE);
        let pulls = w.gh.with_forge(|f| f.pulls(REPO)).unwrap_or_default();
        let apply_pr = pulls
            .iter()
            .find(|(_, _, head)| head == "upkeep/apply-longhorn-v1.10.2")
            .cloned();
        if reviews {
            let r = w.rollout(lh);
            assert_eq!(
                r["status"]["failure"]
                    .as_str()
                    .map(|f| f.contains("At least 1 approving review is required")),
                Some(true),
                "{}",
                r["status"]
            );
            assert!(
                matches!(
                    phase_of(&s, lh),
                    Some(Phase::RequiresAttention | Phase::Reverted)
                ),
                "{s:?}"
            );
            assert_eq!(
                apply_pr.map(|p| p.1),
                Some("closed".to_string()),
                "never left open: merged later, it would apply outside the window"
            );
            assert_eq!(
                w.longhorn_release()["spec"]["chart"]["spec"]["version"],
                "1.9.1",
                "nothing applied"
            );
        } else {
            assert_eq!(phase_of(&s, lh), Some(Phase::Succeeded), "{s:?}");
            assert_eq!(
                apply_pr.map(|p| p.1),
                Some("merged".to_string()),
                "{pulls:?}"
            );
            assert!(
                w.main_file_at("infrastructure/longhorn.yaml")
                    .contains("version: 1.10.2"),
                "git says what runs"
            );
            assert_eq!(
                w.longhorn_release()["status"]["history"][0]["chartVersion"],
                "1.10.2"
            );
        }
    }
}

impl World {
    fn main_file_at(&self, path: &str) -> String {
        let bare = self
            .gh
            .with_forge(|f| f.repo_path(REPO))
            .flatten()
            .expect("path");
        let out = std::process::Command::new("git")
            .arg("--git-dir")
            .arg(&bare)
            .args(["show", &format!("main:{path}")])
            .output()
            .expect("git");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

/// The user's own k3s Plans, as a cluster-template repository keeps them in git (a server Plan
/// and an agent Plan whose `prepare` waits for it, `version:` pinned).
const USER_PLANS: &str = "apiVersion: upgrade.cattle.io/v1\nkind: Plan\nmetadata:\n  name: controllers\n  namespace: system-upgrade\nspec:\n  # renovate: datasource=github-releases depName=k3s-io/k3s\n  version: v1.33.4+k3s1\n  upgrade:\n    image: rancher/k3s-upgrade\n  serviceAccountName: system-upgrade\n  concurrency: 1\n  cordon: true\n  nodeSelector:\n    matchExpressions:\n      - key: node-role.kubernetes.io/control-plane\n        operator: Exists\n---\napiVersion: upgrade.cattle.io/v1\nkind: Plan\nmetadata:\n  name: workers\n  namespace: system-upgrade\nspec:\n  version: v1.33.4+k3s1\n  serviceAccountName: system-upgrade\n  concurrency: 1\n  cordon: true\n  nodeSelector:\n    matchExpressions:\n      - key: node-role.kubernetes.io/control-plane\n        operator: DoesNotExist\n  prepare:\n    image: rancher/k3s-upgrade\n    args: [\"prepare\", \"controllers\"]\n  upgrade:\n    image: rancher/k3s-upgrade\n";

/// k3s Plans already in git are adopted: upkeep changes their `version` through git in the
/// window, creates none of its own and retires those it had (never two owners). When a node fails, it holds them as
/// it holds its own, through Flux: the Kustomization that applies them is suspended first (so
/// kustomize-controller does not take the hold back at its next reconcile), then the Plans go
/// to `concurrency: 0` and, released, select no node. An hour of Flux intervals later the hold
/// is still there; the failure says which Kustomization is suspended and how to go on.
#[test]
fn adopted_plans_in_git_are_changed_through_git_and_held_through_flux_when_a_node_fails() {
    let w = World::new(in_window());
    w.kube.inject(ClusterFault::NodeNeverReady {
        node: "agent-1".into(),
    });
    // upkeep's own Plans from an earlier rollout, before the user's were written in git.
    {
        let mut st = w.kube.store();
        let ctx = upkeep_sim::kube::store::Ctx::new(Utc::now(), "upkeep");
        for (name, server) in [("upkeep-server", true), ("upkeep-agent", false)] {
            st.create(
                &("upgrade.cattle.io".into(), "plans".into()),
                "system-upgrade",
                upkeep_sim::kube::seed::example_plan(name, "v1.33.4+k3s1", server, 0),
                &ctx,
            )
            .expect("plan");
        }
    }
    w.user_plans_applied_by_flux();
    let plan = |w: &World, name: &str| {
        w.kube
            .get("upgrade.cattle.io", "plans", "system-upgrade", name)
            .unwrap_or_default()
    };
    w.wait("Flux applied the Plans", |w| {
        plan(w, "workers")["metadata"]["labels"]["kustomize.toolkit.fluxcd.io/name"]
            == "infrastructure"
    });
    let s = w.apply(UNTIL_DONE);
    assert_eq!(phase_of(&s, K3S), Some(Phase::RequiresAttention), "{s:?}");
    // Changed through git, in place; no Plan of upkeep's beside the user's.
    let plans = w.main_file_at("infrastructure/k3s-plans.yaml");
    assert_eq!(plans.matches("version: v1.33.5+k3s1").count(), 2, "{plans}");
    assert!(plans.contains("# renovate: datasource"), "{plans}");
    assert!(
        w.kube
            .list("upgrade.cattle.io", "plans")
            .iter()
            .all(|p| !p["metadata"]["name"]
                .as_str()
                .unwrap_or("")
                .starts_with("upkeep-")),
        "no second owner"
    );
    let held = |w: &World| {
        let ks = w
            .kube
            .get(
                "kustomize.toolkit.fluxcd.io",
                "kustomizations",
                "flux-system",
                "infrastructure",
            )
            .unwrap_or_default();
        let workers = plan(w, "workers");
        (
            ks["spec"]["suspend"].clone(),
            ks["metadata"]["annotations"]["upkeep.dev/suspended-by"].clone(),
            workers["spec"]["concurrency"].clone(),
            workers["spec"]["nodeSelector"]["matchLabels"]["upkeep.dev/released"].clone(),
        )
    };
    let expected = (json!(true), json!(K3S), json!(0), json!("true"));
    assert_eq!(held(&w), expected);
    // Flux reconciles every 10 minutes: the hold stays.
    w.kube.run_for(hours(1), minutes(1));
    assert_eq!(held(&w), expected, "Flux took the hold back");
    let failure = w.rollout(K3S)["status"]["failure"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(
        failure.contains("flux resume kustomization infrastructure -n flux-system")
            && failure.contains("git's Plans still say v1.33.5+k3s1"),
        "{failure}"
    );
}

/// A hop applied through git that fails with nothing moved (the chart refused the upgrade) is
/// set back in git too: the manifest says what runs again, so helm-controller does not try the
/// failed version at its next reconcile, and upkeep does not later call its own change "moved
/// outside upkeep".
#[test]
fn a_failed_hop_through_git_with_nothing_moved_sets_the_manifest_back() {
    let w = World::with_update(in_window(), "longhorn", "v1.9.1", "v1.10.2");
    w.longhorn_applied_by_flux();
    w.kube.inject(ClusterFault::HelmUpgradeFails {
        release: "longhorn-system/longhorn".into(),
    });
    let s = w.apply(UNTIL_DONE);
    assert_eq!(
        phase_of(&s, "longhorn-v1.10.2"),
        Some(Phase::Reverted),
        "{s:?}"
    );
    assert!(
        w.main_file().contains("version: v1.9.1"),
        "versions.yaml reverted"
    );
    let manifest = w.main_file_at("infrastructure/longhorn.yaml");
    assert!(manifest.contains("version: 1.9.1"), "{manifest}");
    w.kube.run_for(minutes(30), minutes(1));
    assert_eq!(
        w.longhorn_release()["spec"]["chart"]["spec"]["version"],
        "1.9.1",
        "Flux applies what git says again"
    );
}

/// A rollout that ends with the user's k3s Plans still held through Flux (the window closed on
/// the last node, or the resume at its end failed) gives Flux its Kustomization back at the
/// next look: no suspension outlives the rollout that made it.
#[test]
fn a_suspension_never_outlives_the_rollout_that_made_it() {
    let w = World::new(in_window());
    w.user_plans_applied_by_flux();
    w.wait("Flux applied the Plans", |w| {
        w.kube
            .get("upgrade.cattle.io", "plans", "system-upgrade", "workers")
            .is_some_and(|p| {
                p["metadata"]["labels"]["kustomize.toolkit.fluxcd.io/name"] == "infrastructure"
            })
    });
    let s = w.apply(UNTIL_DONE);
    assert_eq!(phase_of(&s, K3S), Some(Phase::Succeeded), "{s:?}");
    let ks = |w: &World| {
        w.kube
            .get(
                "kustomize.toolkit.fluxcd.io",
                "kustomizations",
                "flux-system",
                "infrastructure",
            )
            .unwrap_or_default()
    };
    // As a hold left behind would leave it.
    {
        let mut st = w.kube.store();
        let ctx = upkeep_sim::kube::store::Ctx::new(Utc::now(), "upkeep");
        st.modify(
            &(
                "kustomize.toolkit.fluxcd.io".into(),
                "kustomizations".into(),
            ),
            "flux-system",
            "infrastructure",
            &ctx,
            |k| {
                k["spec"]["suspend"] = json!(true);
                k["metadata"]["annotations"]["upkeep.dev/suspended-by"] = json!(K3S);
            },
        )
        .expect("suspend");
    }
    w.apply(minutes(5));
    let k = ks(&w);
    assert_eq!(k["spec"]["suspend"], json!(false), "{k}");
    assert!(
        k["metadata"]["annotations"]["upkeep.dev/suspended-by"].is_null(),
        "{k}"
    );
}
