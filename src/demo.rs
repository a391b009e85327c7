//! `upkeep demo`: the whole loop in under a minute, with no cluster and no network. It starts the
//! simulators (a k3s cluster of 1 server and 2 agents with Flux and Longhorn; GitHub with the
//! example config repository), uses the shipped signed catalog of real releases, and runs
//! upkeep's own propose and apply cycles on a simulated clock, telling the story as it happens.

use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::json;

use upkeep::apply::{Options, Repo};
use upkeep::forge::{Forge, GitHub};
use upkeep::gitrepo::{Author, GitRepo};
use upkeep::propose::{Cycle, Style};
use upkeep::rollout::Phase;
use upkeep::sources::catalog::Catalog;
use upkeep_sim::clock::SimClock;
use upkeep_sim::kube::{ClusterFault, KubeOptions, KubeSim};
use upkeep_sim::upstream::UpstreamSim;

const REPO: &str = "homelab/cluster";
const TOKEN: &str = "ghp_demo";

struct Story {
    clock: SimClock,
    tz: chrono_tz::Tz,
    failures: Vec<String>,
}

impl Story {
    fn say(&self, text: &str) {
        let t = self
            .clock
            .now()
            .with_timezone(&self.tz)
            .format("%a %H:%M:%S");
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "[{t}] {text}");
    }
    fn expect(&mut self, ok: bool, what: &str) {
        if !ok {
            self.say(&format!("!! expected: {what}"));
            self.failures.push(what.to_string());
        }
    }
}

/// Run the story; the exit code is 0 when every step happened.
pub fn run(dir: Option<PathBuf>, keep_serving: bool) -> i32 {
    upkeep::sources::install_crypto_provider();
    let dir = dir.unwrap_or_else(|| {
        std::env::temp_dir().join(format!("upkeep-demo-{}", std::process::id()))
    });
    if let Err(e) = std::fs::create_dir_all(&dir) {
        eprintln!("upkeep: cannot create {}: {e}", dir.display());
        return 1;
    }
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("upkeep: {e}");
            return 1;
        }
    };
    match rt.block_on(story(&dir, keep_serving)) {
        Ok(0) => 0,
        Ok(n) => {
            eprintln!("upkeep: {n} step(s) of the story did not happen");
            1
        }
        Err(e) => {
            eprintln!("upkeep: the demo failed: {e}");
            1
        }
    }
}

async fn story(dir: &std::path::Path, keep_serving: bool) -> Result<usize, String> {
    let catalog = Catalog::builtin().map_err(|e| e.to_string())?;
    // The story is the same on every run, whatever the date and however busy the machine: it
    // starts a month after the catalog was built (every release in it old enough to propose),
    // half an hour before the example's Saturday-night window opens, on a clock that moves
    // only when the story moves it.
    let epoch = catalog.file.generated_at + chrono::Duration::days(30);
    let seed = dir.join("seed");
    upkeep_sim::write_example_repo(&seed).map_err(|e| e.to_string())?;
    let example = upkeep::model::load_repo(&seed, epoch)
        .map_err(|e| e.to_string())?
        .repo
        .ok_or("the example repo is invalid")?;
    let window = example.windows.first().ok_or("the example has no window")?;
    let tz = window.tz;
    let opens = upkeep::windows::next_start(
        epoch,
        "k3s",
        &example.windows,
        &example.freezes,
        Default::default(),
    )
    .ok_or("the example's window never opens")?;
    let start = opens - chrono::Duration::minutes(30);
    let clock = SimClock::stepped(start);
    let mut st = Story {
        clock: clock.clone(),
        tz,
        failures: Vec::new(),
    };

    // The world.
    let gh = UpstreamSim::start(0).await.map_err(|e| e.to_string())?;
    gh.set_clock(clock.clone());
    upkeep_sim::upstream::seed_from_catalog(&gh, &catalog.file);
    gh.enable_persistent_forge(&dir.join("forge"))
        .map_err(|e| e.to_string())?;
    gh.require_forge_token(TOKEN);
    let bare = gh
        .with_forge(|f| f.create_repo(REPO, Some(&seed), start))
        .ok_or("no forge")?
        .map_err(|e| e.to_string())?;
    let kube = KubeSim::start(KubeOptions {
        clock: clock.clone(),
        state_dir: None,
        ..KubeOptions::default()
    })
    .await
    .map_err(|e| e.to_string())?;
    // Flux reads the config repository (the emulated source- and kustomize-controller).
    kube.serve_git("flux-system", "flux-system", &bare);
    let kubeconfig = dir.join("kubeconfig");
    kube.write_kubeconfig(&kubeconfig)
        .map_err(|e| e.to_string())?;
    st.say(&format!(
        "a k3s cluster (1 server, 2 agents on v1.33.4+k3s1) with Flux v2.6.4 and Longhorn v1.9.1; its config repository {REPO}; releases from the shipped catalog (window `{}`: Saturdays 22:00 {tz}, 4h)",
        window.name
    ));

    let git = GitRepo::open(
        &dir.join("mirror.git"),
        &format!("file://{}", bare.display()),
        Some(TOKEN.into()),
    )
    .map_err(|e| e.to_string())?;
    let mut forge = GitHub::new(&gh.url(), REPO, Some(TOKEN)).map_err(|e| e.to_string())?;
    // The demo's forge is the local emulator; a real one gets the default second between writes.
    forge.write_interval = std::time::Duration::from_millis(50);
    let cat = std::sync::Arc::new(catalog);
    let narrator = std::sync::Arc::new(Narrator {
        clock: clock.clone(),
        tz,
        state: Default::default(),
    });

    // 1. Detect and propose.
    let propose = |now: DateTime<Utc>| {
        let cat = cat.clone();
        let cycle = Cycle {
            git: &git,
            forge: &forge,
            base: "main".into(),
            subdir: String::new(),
            scratch: dir.join("checkout"),
            style: Style::default(),
            author: Author::default(),
            dashboard: true,
            dry_run: false,
            running: None,
            rollouts: Vec::new(),
        };
        async move {
            cycle
                .run(now, |repo| async move {
                    let r = upkeep::check::run(cat, &repo, now, 8, "catalog:built-in").await;
                    (repo, r.components)
                })
                .await
        }
    };
    let (out, _) = propose(clock.now()).await?;
    let mut pulls = forge
        .pulls(upkeep::propose::BRANCH_PREFIX)
        .await
        .map_err(|e| e.to_string())?;
    pulls.sort_by_key(|p| p.number);
    for p in &pulls {
        st.say(&format!("opened PR #{}: {}", p.number, p.title));
    }
    for w in &out.waiting {
        st.say(&format!("waits: {w}"));
    }
    let k3s_pr = pulls
        .iter()
        .find(|p| p.head.starts_with("upkeep/k3s-"))
        .cloned();
    st.expect(k3s_pr.is_some(), "a pull request for a k3s patch");
    let Some(k3s_pr) = k3s_pr else {
        return Ok(st.failures.len());
    };

    // 2. The user merges the k3s patch.
    merge(&gh, k3s_pr.number).await?;
    st.say(&format!("you merge #{} ({})", k3s_pr.number, k3s_pr.title));

    // 3. Apply: it waits for the window, then runs.
    let apply = |budget: Duration| {
        let clock = clock.clone();
        let kube = kube.clone();
        let narrator = narrator.clone();
        let kubeconfig = kubeconfig.clone();
        let git = &git;
        let forge = &forge;
        async move {
            git.fetch().map_err(|e| e.to_string())?;
            let tip = git.tip("main").map_err(|e| e.to_string())?;
            git.extract(tip, "", &dir.join("checkout"))
                .map_err(|e| e.to_string())?;
            let config = upkeep::model::load_repo(&dir.join("checkout"), clock.now())
                .map_err(|e| e.to_string())?
                .repo
                .ok_or("invalid config")?;
            let client = upkeep::cluster::client(Some(&kubeconfig))
                .await
                .map_err(|e| e.to_string())?;
            let repo = Repo {
                git,
                forge: Some(forge),
                base: "main".into(),
                subdir: String::new(),
                author: Author::default(),
            };
            let mut opts = Options::from_policy(&config.rollouts, "upkeep-system");
            opts.budget = budget;
            let narrator = narrator.clone();
            opts.pace = kube.pace_with(STEP, move |k| narrator.look(k));
            let c = clock.clone();
            upkeep::apply::run(&client, &repo, &config, &opts, &move || c.now()).await
        }
    };
    let s = apply(minutes(50)).await?;
    if let Some((_, phase, msg)) = s.first() {
        st.say(&format!("k3s rollout: {phase:?}: {msg}"));
        st.expect(
            *phase == Phase::WaitingForWindow,
            "the rollout waits for the window",
        );
    }
    kube.run_until(opens, STEP);
    st.say("the window opens");
    narrator.start(&kube);
    let s = apply(minutes(300)).await?;
    narrator.stop();
    let phase = s.first().map(|x| x.1);
    st.say(&format!(
        "k3s rollout: {:?}: {}",
        phase.unwrap_or_default(),
        s.first().map(|x| x.2.as_str()).unwrap_or("")
    ));
    st.expect(
        phase == Some(Phase::Soaking),
        "the k3s rollout validates, then soaks",
    );
    let said = forge
        .comments(k3s_pr.number)
        .await
        .map_err(|e| e.to_string())?;
    if let Some(c) = said.iter().find(|c| c.contains("**Applied**")) {
        st.say(&format!(
            "report posted on #{}: {}",
            k3s_pr.number,
            c.lines().nth(1).unwrap_or("")
        ));
    } else {
        st.expect(false, "a report on the k3s pull request");
    }

    // A day later the soak is over: the checks kept passing.
    kube.run_for(Duration::from_secs(24 * 3600 + 60), minutes(10));
    st.say("a day passes; the checks keep passing");
    let s = apply(minutes(50)).await?;
    let phase = s.first().map(|x| x.1);
    st.say(&format!("k3s rollout: {:?}", phase.unwrap_or_default()));
    st.expect(
        phase == Some(Phase::Succeeded),
        "the k3s rollout succeeds once soaked",
    );
    let said = forge
        .comments(k3s_pr.number)
        .await
        .map_err(|e| e.to_string())?;
    st.expect(
        said.iter().any(|c| c.contains("**Soaked**")),
        "a soak report on the k3s pull request",
    );

    // 4. A Longhorn update whose validation fails.
    kube.run_for(minutes(60), minutes(10));
    let (_, _) = propose(clock.now()).await?;
    let pulls = forge
        .pulls(upkeep::propose::BRANCH_PREFIX)
        .await
        .map_err(|e| e.to_string())?;
    let lh = pulls
        .iter()
        .find(|p| p.head.starts_with("upkeep/longhorn-") && p.is_open())
        .cloned();
    st.expect(lh.is_some(), "a pull request for Longhorn");
    let Some(lh) = lh else {
        return Ok(st.failures.len());
    };
    st.say(&format!("opened PR #{}: {}", lh.number, lh.title));
    merge(&gh, lh.number).await?;
    st.say(&format!("you merge #{} ({})", lh.number, lh.title));
    let volume = kube
        .list("longhorn.io", "volumes")
        .first()
        .and_then(|v| v["metadata"]["name"].as_str().map(str::to_string))
        .unwrap_or_default();
    kube.inject(ClusterFault::VolumeDegradesAfterUpgrade {
        volume: volume.clone(),
    });
    st.say(&format!(
        "(the simulator will degrade volume {volume} after the upgrade)"
    ));
    // The window closed while k3s soaked: Longhorn waits for the next one.
    let s = apply(minutes(50)).await?;
    if let Some((_, phase, msg)) = s.iter().find(|x| x.0.starts_with("longhorn-")) {
        st.say(&format!("Longhorn rollout: {phase:?}: {msg}"));
    }
    let next = upkeep::windows::next_start(
        clock.now(),
        "longhorn",
        &example.windows,
        &example.freezes,
        Default::default(),
    )
    .ok_or("the example's window never opens again")?;
    kube.run_until(next, minutes(10));
    st.say("the next window opens");
    narrator.start(&kube);
    let s = apply(minutes(300)).await?;
    narrator.stop();
    let row = s.iter().find(|x| x.0.starts_with("longhorn-")).cloned();
    if let Some((_, phase, msg)) = &row {
        st.say(&format!("Longhorn rollout: {phase:?}: {msg}"));
    }
    st.expect(
        row.as_ref()
            .is_some_and(|r| r.1 == Phase::RequiresAttention),
        "the Longhorn rollout halts and asks for attention",
    );
    let log = std::process::Command::new("git")
        .arg("--git-dir")
        .arg(&bare)
        .args(["log", "--format=%h %s", "-3", "main"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    let revert = log
        .lines()
        .find(|l| l.contains("revert(longhorn)"))
        .map(str::to_string);
    st.expect(revert.is_some(), "a revert commit on main");
    if let Some(r) = &revert {
        st.say(&format!("revert committed on main: {r}"));
    }
    let said = forge.comments(lh.number).await.map_err(|e| e.to_string())?;
    st.expect(
        said.iter().any(|c| c.contains("needs a human")),
        "an attention report on the Longhorn pull request",
    );

    // What upkeep asked of the Kubernetes API, in RBAC's terms (tests/deploy.rs holds it against
    // deploy/'s ClusterRole).
    if let Ok(json) = serde_json::to_string_pretty(&kube.audit()) {
        let _ = std::fs::write(dir.join("kube-audit.json"), json);
    }

    // The end.
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "\nWhat happened, and where to look:");
    let _ = writeln!(
        out,
        "  git log:     git --git-dir {} log --oneline main",
        bare.display()
    );
    let _ = writeln!(out, "  PR comments: (below)");
    for n in [k3s_pr.number, lh.number] {
        for c in forge.comments(n).await.unwrap_or_default() {
            let first = c
                .lines()
                .find(|l| l.starts_with("**"))
                .unwrap_or("")
                .to_string();
            let _ = writeln!(out, "    #{n}: {first}");
        }
    }
    let _ = writeln!(
        out,
        "  kubectl:     kubectl --kubeconfig {} get ukr,nodes -A  (while `upkeep demo --keep-serving` runs)",
        kubeconfig.display()
    );
    let _ = writeln!(out, "  state:       {}", dir.display());
    let failures = st.failures.len();
    let _ = writeln!(
        out,
        "\n{}",
        if failures == 0 {
            "Every step of the story happened."
        } else {
            "Some steps did not happen (see `!!` above)."
        }
    );
    drop(out);
    if keep_serving {
        println!(
            "serving the simulators until interrupted (github={}, kubernetes={})",
            gh.url(),
            kube.url()
        );
        let _ = tokio::signal::ctrl_c().await;
    }
    Ok(failures)
}

async fn merge(gh: &UpstreamSim, number: u64) -> Result<(), String> {
    let c = reqwest::Client::builder()
        .user_agent("upkeep-demo")
        .build()
        .map_err(|e| e.to_string())?;
    let r = c
        .put(format!("{}/repos/{REPO}/pulls/{number}/merge", gh.url()))
        .header("authorization", format!("Bearer {TOKEN}"))
        .body(json!({"merge_method": "squash"}).to_string())
        .send()
        .await
        .map_err(|e| e.to_string())?;
    if r.status().is_success() {
        Ok(())
    } else {
        Err(format!("merging #{number}: {}", r.status()))
    }
}

/// How far the simulated clock moves between two of upkeep's looks.
const STEP: Duration = Duration::from_secs(10);

fn minutes(n: u64) -> Duration {
    Duration::from_secs(60 * n)
}

/// Tells what the cluster does while a rollout runs: Rollout phases, cordons, node versions,
/// chart versions and volume health. It looks after each step of the clock (upkeep's pace), so
/// it sees every change, on the story's clock.
struct Narrator {
    clock: SimClock,
    tz: chrono_tz::Tz,
    state: std::sync::Mutex<Narration>,
}

#[derive(Default)]
struct Narration {
    telling: bool,
    seen: std::collections::BTreeMap<String, String>,
}

impl Narrator {
    /// Record what is there now, and tell what changes from here on.
    fn start(&self, kube: &KubeSim) {
        let _ = self.changes(kube);
        self.lock().telling = true;
    }

    fn stop(&self) {
        self.lock().telling = false;
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Narration> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn look(&self, kube: &KubeSim) {
        if !self.lock().telling {
            return;
        }
        let lines = self.changes(kube);
        let t = self
            .clock
            .now()
            .with_timezone(&self.tz)
            .format("%a %H:%M:%S");
        let mut out = std::io::stdout().lock();
        for l in lines {
            let _ = writeln!(out, "[{t}]   {l}");
        }
    }

    /// What changed since the last look.
    fn changes(&self, kube: &KubeSim) -> Vec<String> {
        let mut st = self.lock();
        let seen = &mut st.seen;
        let mut lines = Vec::new();
        for r in kube.list("upkeep.dev", "upkeeprollouts") {
            let name = r["metadata"]["name"].as_str().unwrap_or("").to_string();
            let phase = r["status"]["phase"].as_str().unwrap_or("").to_string();
            let backup = r["status"]["backup"].as_str().unwrap_or("").to_string();
            if seen
                .insert(format!("rollout/{name}"), phase.clone())
                .as_deref()
                != Some(&phase)
                && !phase.is_empty()
            {
                lines.push(format!(
                    "{name}: {phase}{}",
                    if phase == "Applying" && !backup.is_empty() {
                        format!(" (backup: {backup})")
                    } else {
                        String::new()
                    }
                ));
            }
        }
        for n in kube.list("", "nodes") {
            let name = n["metadata"]["name"].as_str().unwrap_or("").to_string();
            let v = n["status"]["nodeInfo"]["kubeletVersion"]
                .as_str()
                .unwrap_or("")
                .to_string();
            let cordoned = n["spec"]["unschedulable"] == json!(true);
            let state = format!("{v}{}", if cordoned { " cordoned" } else { "" });
            if let Some(old) = seen.insert(format!("node/{name}"), state.clone())
                && old != state
            {
                lines.push(if cordoned {
                    format!("{name}: cordoned, upgrading")
                } else {
                    format!("{name}: runs {v}, Ready, uncordoned")
                });
            }
        }
        for v in kube.list("longhorn.io", "volumes") {
            let name = v["metadata"]["name"].as_str().unwrap_or("").to_string();
            let r = v["status"]["robustness"].as_str().unwrap_or("").to_string();
            if let Some(old) = seen.insert(format!("volume/{name}"), r.clone())
                && old != r
            {
                lines.push(format!("volume {name}: {old} -> {r}"));
            }
        }
        if let Some(h) = kube.get(
            "helm.toolkit.fluxcd.io",
            "helmreleases",
            "longhorn-system",
            "longhorn",
        ) {
            let v = h["status"]["history"][0]["chartVersion"]
                .as_str()
                .unwrap_or("")
                .to_string();
            if let Some(old) = seen.insert("chart".into(), v.clone())
                && old != v
            {
                lines.push(format!("Longhorn chart {old} -> {v}"));
            }
        }
        lines
    }
}
