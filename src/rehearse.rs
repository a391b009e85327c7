//! `upkeep rehearse`: the user's own repository, end to end, with no cluster and no network.
//!
//! The simulated cluster is bootstrapped from the repository as Flux would be (its FluxInstance
//! or flux-system Kustomization's sync path; the repository's own Kustomizations, HelmReleases,
//! OCIRepositories and Plans as git says; nodes at versions.yaml's k3s; Longhorn where its
//! HelmRelease puts it), the simulated GitHub holds the repository, and upkeep's own propose and
//! apply cycles run on a simulated clock that moves only when the rehearsal moves it: every
//! proposed pull request is merged, applied in the next window, validated and soaked, until
//! nothing more is proposed (bounded). What happened is said per component.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::json;

use upkeep::apply::{Options, Repo};
use upkeep::cluster::Running;
use upkeep::forge::{Forge, GitHub};
use upkeep::gitrepo::{Author, GitRepo};
use upkeep::model::ConfigRepo;
use upkeep::propose::{Cycle, Scope, Style};
use upkeep::rollout::Phase;
use upkeep::sources::catalog::Catalog;
use upkeep_sim::clock::SimClock;
use upkeep_sim::kube::{KubeOptions, KubeSim};
use upkeep_sim::upstream::UpstreamSim;

const REPO: &str = "you/cluster";
const TOKEN: &str = "ghp_rehearsal";
/// How far the simulated clock moves between two of upkeep's looks.
const STEP: Duration = Duration::from_secs(10);
/// At most this many propose-merge-apply rounds.
const ROUNDS: usize = 30;

/// What `upkeep rehearse` is asked.
pub struct Args {
    pub repo: PathBuf,
    pub subdir: String,
    pub offline: bool,
    pub json: bool,
    /// Where the rehearsal keeps its state (default: a temporary directory, removed after).
    pub dir: Option<PathBuf>,
}

/// One component's story.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Outcome {
    pub name: String,
    /// versions.yaml at the start, and at the end.
    pub from: String,
    pub to: String,
    /// `updated`, `current`, `refused` or `failed`.
    pub outcome: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The version running at the end (`unknown` when nothing says).
    pub cluster: String,
    /// The version git asks for at the end: where the repository carries it, else versions.yaml.
    pub git: String,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Report {
    pub components: Vec<Outcome>,
}

impl Report {
    /// Nothing failed, went below where it started, or left git and the cluster disagreeing
    /// (a component nothing in the cluster says anything of only where nothing was asked of it).
    pub fn ok(&self) -> bool {
        self.components.iter().all(|c| {
            let agree = if c.cluster == "unknown" {
                matches!(c.outcome.as_str(), "current" | "refused")
            } else {
                upkeep::layout::same_version(&c.cluster, &c.git)
            };
            c.outcome != "failed"
                && !(c.cluster != "unknown" && below(&c.cluster, &c.from))
                && agree
        })
    }
}

fn below(a: &str, b: &str) -> bool {
    let p = |v: &str| {
        upkeep::versions::parse(v, upkeep::versions::Scheme::K3s)
            .or_else(|_| upkeep::versions::parse(v, upkeep::versions::Scheme::Semver))
            .ok()
    };
    matches!((p(a), p(b)), (Some(x), Some(y)) if x < y)
}

/// Run the rehearsal; the exit code (0: nothing failed, downgraded or left disagreeing).
pub fn run(args: Args) -> i32 {
    upkeep::sources::install_crypto_provider();
    let (dir, _temp) = match &args.dir {
        Some(d) => (d.clone(), None),
        None => match tempfile_dir() {
            Ok(t) => (t.clone(), Some(TempDir(t))),
            Err(e) => {
                eprintln!("upkeep: cannot make a temporary directory: {e}");
                return 2;
            }
        },
    };
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("upkeep: {e}");
            return 2;
        }
    };
    match rt.block_on(rehearse(&args, &dir)) {
        Ok(report) => {
            print(&report, args.json);
            if report.ok() { 0 } else { 1 }
        }
        Err(e) => {
            eprintln!("upkeep: the rehearsal cannot run: {e}");
            2
        }
    }
}

/// A directory removed when dropped.
struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn tempfile_dir() -> std::io::Result<PathBuf> {
    let d = std::env::temp_dir().join(format!(
        "upkeep-rehearse-{}-{}",
        std::process::id(),
        Utc::now().timestamp_nanos_opt().unwrap_or(0)
    ));
    upkeep::create_private_dir(&d)?;
    Ok(d)
}

fn print(r: &Report, json: bool) {
    let mut out = std::io::stdout().lock();
    if json {
        let _ = writeln!(
            out,
            "{}",
            serde_json::to_string_pretty(r).unwrap_or_default()
        );
        return;
    }
    let _ = writeln!(
        out,
        "{:<28} {:<16} {:<16} {:<9} {:<16} {:<16} REASON",
        "COMPONENT", "FROM", "TO", "OUTCOME", "CLUSTER", "GIT"
    );
    let p = |s: &str| upkeep::diag::Printable(s).to_string();
    for c in &r.components {
        let _ = writeln!(
            out,
            "{:<28} {:<16} {:<16} {:<9} {:<16} {:<16} {}",
            p(&c.name),
            p(&c.from),
            p(&c.to),
            c.outcome,
            p(&c.cluster),
            p(&c.git),
            p(c.reason.as_deref().unwrap_or(""))
        );
    }
    let _ = writeln!(
        out,
        "\n{}",
        if r.ok() {
            "The rehearsal passed: nothing failed, went down, or left git and the cluster disagreeing."
        } else {
            "The rehearsal found problems (see above)."
        }
    );
}

/// Load versions.yaml and policies/ of the cluster directory, or say why not.
fn load(dir: &Path, now: DateTime<Utc>) -> Result<ConfigRepo, String> {
    let loaded = upkeep::model::load_repo(dir, now).map_err(|e| e.to_string())?;
    match loaded.repo {
        Some(r) => Ok(r),
        None => Err(format!(
            "{} is not valid: {}",
            dir.display(),
            loaded
                .diagnostics
                .iter()
                .filter(|d| d.is_error())
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("; ")
        )),
    }
}

/// The emulators and upkeep's clients, around one repository.
struct World {
    clock: SimClock,
    gh: UpstreamSim,
    kube: KubeSim,
    git: GitRepo,
    forge: GitHub,
    dir: PathBuf,
    subdir: String,
    catalog: std::sync::Arc<Catalog>,
    /// Each rollout's last (phase, message) said, so that only changes are said.
    said: std::sync::Mutex<std::collections::BTreeMap<String, (Phase, String)>>,
    /// The commit last written to the apply checkout (written again only when main moved).
    extracted: std::sync::Mutex<Option<String>>,
    /// One Kubernetes client and one HTTP client for the whole rehearsal (each new one reads
    /// the system's certificates again).
    client: kube::Client,
    http: reqwest::Client,
}

async fn rehearse(args: &Args, dir: &Path) -> Result<Report, String> {
    if !args.offline {
        // Live sources would need the network; the shipped catalog is what a rehearsal can
        // always use. Said, not guessed: the rehearsal runs on the catalog.
        eprintln!(
            "upkeep: the rehearsal uses the shipped signed catalog of releases (as --offline)"
        );
    }
    let subdir = args.subdir.trim_matches('/').to_string();
    let cluster_dir = args.repo.join(&subdir);
    if !cluster_dir.join("versions.yaml").is_file() {
        return Err(format!(
            "{} has no versions.yaml (give the cluster's directory with --subdir)",
            cluster_dir.display()
        ));
    }
    let catalog = Catalog::builtin().map_err(|e| e.to_string())?;
    // The same story on every run: a month after the catalog was built, on the hour.
    let start = (catalog.file.generated_at + chrono::Duration::days(30))
        .date_naive()
        .and_hms_opt(9, 0, 0)
        .map(|t| t.and_utc())
        .unwrap_or(catalog.file.generated_at);
    let first = load(&cluster_dir, start)?;
    let w = world(args, dir, &subdir, &first, catalog, start).await?;
    let bad = w.flux_failures();
    if !bad.is_empty() {
        w.say(&format!(
            "after bootstrapping Flux from the repository{bad} (a real cluster would show the same)"
        ));
    }
    let reading = upkeep::layout::Reading::of_dir(&args.repo, &subdir);
    let mut refused: std::collections::BTreeMap<String, String> = Default::default();
    for c in &first.components {
        let m = reading.carriers(&c.name, &c.runs);
        if let Some(p) = m.problems.iter().find(|p| p.is_error()) {
            refused.insert(c.name.clone(), p.to_string());
        }
    }
    let mut failed: std::collections::BTreeMap<String, String> = Default::default();
    let mut blocked: std::collections::BTreeMap<String, String> = Default::default();
    let mut quiet: std::collections::BTreeMap<String, String> = Default::default();
    for _round in 0..ROUNDS {
        let rows = w.propose().await?;
        for r in &rows {
            if r.next.is_none() {
                let why = match &r.reason {
                    Some(reason) => reason_text(reason),
                    None => String::new(),
                };
                quiet.insert(r.name.clone(), why);
            }
        }
        let open: Vec<upkeep::forge::PullRequest> = w.open_pulls().await?;
        if open.is_empty() && !w.busy().await {
            break;
        }
        for p in &open {
            w.say(&format!("merge #{}: {}", p.number, p.title));
            w.merge(p.number).await?;
        }
        let applied = w.apply_until_settled().await?;
        for (name, phase, msg) in &applied.0 {
            if matches!(
                phase,
                Phase::RequiresAttention | Phase::Reverted | Phase::Failed
            ) {
                let component = name
                    .rsplit_once("-v")
                    .map_or(name.clone(), |(c, _)| c.to_string());
                let component = match Scope::new(&subdir, first.cluster.as_deref()).name() {
                    Some(s) => component.trim_start_matches(&format!("{s}-")).to_string(),
                    None => component,
                };
                failed.insert(component, format!("{name}: {phase:?}: {msg}"));
            }
        }
        blocked.extend(applied.1);
        // The next hour: pull-request limits are per hour.
        w.kube
            .run_for(Duration::from_secs(3600), Duration::from_secs(600));
    }
    let last = w.config_on_main(start)?;
    let final_reading = w.reading();
    let observed = w.observe().await?;
    if std::env::var_os("UPKEEP_REHEARSE_DEBUG").is_some() {
        eprintln!(
            "{}",
            serde_json::to_string_pretty(&observed).unwrap_or_default()
        );
        for r in w.kube.list("upkeep.dev", "upkeeprollouts") {
            eprintln!(
                "rollout {} {} {}",
                r["metadata"]["name"], r["status"]["phase"], r["status"]["message"]
            );
        }
    }
    let mut components = Vec::new();
    for c in &first.components {
        let to = last
            .components
            .iter()
            .find(|x| x.name == c.name)
            .map_or_else(|| c.version.to_string(), |x| x.version.to_string());
        let from = c.version.to_string();
        let cluster = match observed.running(c) {
            Running::At { version } => version,
            Running::Mixed { nodes } => nodes
                .iter()
                .map(|(n, v)| format!("{n}={v}"))
                .collect::<Vec<_>>()
                .join(","),
            Running::Unknown => "unknown".into(),
        };
        let carriers = final_reading.carriers(&c.name, &c.runs).carriers;
        let git = carriers
            .first()
            .map_or_else(|| to.clone(), |k| k.value.clone());
        let (outcome, reason) = if let Some(why) = failed.get(&c.name) {
            ("failed", Some(why.clone()))
        } else if let Some(why) = refused.get(&c.name).or_else(|| blocked.get(&c.name)) {
            ("refused", Some(why.clone()))
        } else if !upkeep::layout::same_version(&from, &to) {
            if upkeep::layout::same_version(&cluster, &to) {
                ("updated", None)
            } else {
                (
                    "failed",
                    Some(format!(
                        "versions.yaml asks for {to} but the cluster runs {cluster}{}",
                        w.flux_failures()
                    )),
                )
            }
        } else {
            (
                "current",
                quiet.get(&c.name).filter(|w| !w.is_empty()).cloned(),
            )
        };
        components.push(Outcome {
            name: c.name.clone(),
            from,
            to,
            outcome: outcome.into(),
            reason,
            cluster,
            git,
        });
    }
    drop(w);
    Ok(Report { components })
}

async fn world(
    args: &Args,
    dir: &Path,
    subdir: &str,
    config: &ConfigRepo,
    catalog: Catalog,
    start: DateTime<Utc>,
) -> Result<World, String> {
    let clock = SimClock::stepped(start);
    let gh = UpstreamSim::start(0).await.map_err(|e| e.to_string())?;
    gh.set_clock(clock.clone());
    upkeep_sim::upstream::seed_from_catalog(&gh, &catalog.file);
    gh.enable_persistent_forge(&dir.join("forge"))
        .map_err(|e| e.to_string())?;
    gh.require_forge_token(TOKEN);
    gh.set_content_writes_per_minute(usize::MAX);
    let bare = gh
        .with_forge(|f| f.create_repo(REPO, Some(&args.repo), start))
        .ok_or("no forge")?
        .map_err(|e| e.to_string())?;
    // Flux bootstrapped from the repository, as the emulator reads it.
    let version_of = |name: &str| {
        config
            .components
            .iter()
            .find(|c| c.name == name)
            .map(|c| c.version.to_string())
    };
    let spec = upkeep_sim::kube::bootstrap::cluster_from_repo(
        &args.repo,
        subdir,
        version_of("k3s"),
        version_of("flux"),
    )
    .map_err(|e| format!("{e}: nothing to rehearse"))?;
    let sources = spec
        .bootstrap
        .as_ref()
        .map(|b| b.sources.clone())
        .unwrap_or_default();
    let kube = KubeSim::start(KubeOptions {
        clock: clock.clone(),
        cluster: spec,
        ..KubeOptions::default()
    })
    .await
    .map_err(|e| e.to_string())?;
    for (ns, name) in &sources {
        kube.serve_git(ns, name, &bare);
    }
    // Flux applies what git says; charts install.
    kube.run_for(Duration::from_secs(30 * 60), Duration::from_secs(30));
    let kubeconfig = dir.join("kubeconfig");
    kube.write_kubeconfig(&kubeconfig)
        .map_err(|e| e.to_string())?;
    let git = GitRepo::open(
        &dir.join("mirror.git"),
        &format!("file://{}", bare.display()),
        Some(TOKEN.into()),
    )
    .map_err(|e| e.to_string())?;
    let mut forge = GitHub::new(&gh.url(), REPO, Some(TOKEN)).map_err(|e| e.to_string())?;
    forge.write_interval = Duration::ZERO;
    Ok(World {
        clock,
        gh,
        kube,
        git,
        forge,
        dir: dir.to_path_buf(),
        subdir: subdir.to_string(),
        catalog: std::sync::Arc::new(catalog),
        said: Default::default(),
        extracted: Default::default(),
        client: upkeep::cluster::client(Some(&kubeconfig))
            .await
            .map_err(|e| e.to_string())?,
        http: reqwest::Client::builder()
            .user_agent("upkeep-rehearse")
            .build()
            .map_err(|e| e.to_string())?,
    })
}

impl World {
    /// A line of progress on stderr, on the rehearsal's clock.
    fn say(&self, what: &str) {
        let t = self.clock.now().format("%Y-%m-%d %H:%M");
        eprintln!("[{t}] {}", upkeep::diag::Printable(what));
    }

    fn repo(&self) -> Repo<'_, GitHub> {
        Repo {
            git: &self.git,
            forge: Some(&self.forge),
            base: "main".into(),
            subdir: self.subdir.clone(),
            author: Author::default(),
        }
    }

    /// One propose cycle on the catalog; the check's rows.
    async fn propose(&self) -> Result<Vec<upkeep::report::ComponentReport>, String> {
        let now = self.clock.now();
        let cycle = Cycle {
            git: &self.git,
            forge: &self.forge,
            base: "main".into(),
            subdir: self.subdir.clone(),
            scratch: self.dir.join("checkout"),
            style: Style::default(),
            author: Author::default(),
            dashboard: true,
            dry_run: false,
            running: None,
            rollouts: Vec::new(),
        };
        let cat = self.catalog.clone();
        let rows = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let keep = rows.clone();
        cycle
            .run(now, |repo| async move {
                let r = upkeep::check::run(cat, &repo, now, 8, "catalog:built-in").await;
                if let Ok(mut k) = keep.lock() {
                    *k = r.components.clone();
                }
                (repo, r.components)
            })
            .await?;
        let out = rows.lock().map(|r| r.clone()).unwrap_or_default();
        Ok(out)
    }

    async fn open_pulls(&self) -> Result<Vec<upkeep::forge::PullRequest>, String> {
        let cfg = self.config_on_main(self.clock.now())?;
        let scope = Scope::new(&self.subdir, cfg.cluster.as_deref());
        let mut pulls: Vec<_> = self
            .forge
            .pulls(&scope.prefix())
            .await
            .map_err(|e| e.to_string())?
            .into_iter()
            .filter(|p| p.is_open() && scope.owns(&p.head))
            .collect();
        pulls.sort_by_key(|p| p.number);
        Ok(pulls)
    }

    /// Flux objects that are not Ready, said after a failure (`; Flux: ...`).
    fn flux_failures(&self) -> String {
        let mut bad = Vec::new();
        for (g, p) in [
            ("kustomize.toolkit.fluxcd.io", "kustomizations"),
            ("helm.toolkit.fluxcd.io", "helmreleases"),
        ] {
            for o in self.kube.list(g, p) {
                let ready = o["status"]["conditions"]
                    .as_array()
                    .and_then(|cs| cs.iter().find(|c| c["type"] == "Ready"))
                    .cloned()
                    .unwrap_or_default();
                if ready["status"] == "False" {
                    bad.push(format!(
                        "{}/{}: {}",
                        o["metadata"]["namespace"].as_str().unwrap_or(""),
                        o["metadata"]["name"].as_str().unwrap_or(""),
                        ready["message"].as_str().unwrap_or("")
                    ));
                }
            }
        }
        if bad.is_empty() {
            String::new()
        } else {
            format!("; not Ready in Flux: {}", bad.join("; "))
        }
    }

    /// Whether a rollout is still under way.
    async fn busy(&self) -> bool {
        self.kube
            .list("upkeep.dev", "upkeeprollouts")
            .iter()
            .any(|r| {
                let p = r["status"]["phase"].as_str().unwrap_or("Pending");
                serde_json::from_value::<Phase>(json!(p)).is_ok_and(|p| !p.is_terminal())
            })
    }

    async fn merge(&self, number: u64) -> Result<(), String> {
        let r = self
            .http
            .put(format!(
                "{}/repos/{REPO}/pulls/{number}/merge",
                self.gh.url()
            ))
            .header("authorization", format!("Bearer {TOKEN}"))
            .body(json!({"merge_method": "squash"}).to_string())
            .send()
            .await
            .map_err(|e| e.to_string())?;
        // A PR that conflicts after another merge is proposed again next round.
        let _ = r.status();
        Ok(())
    }

    fn config_on_main(&self, now: DateTime<Utc>) -> Result<ConfigRepo, String> {
        self.git.fetch().map_err(|e| e.to_string())?;
        let tip = self.git.tip("main").map_err(|e| e.to_string())?;
        let checkout = self.dir.join("apply-checkout");
        let mut extracted = self.extracted.lock().unwrap_or_else(|e| e.into_inner());
        if extracted.as_deref() != Some(tip.to_string().as_str()) {
            self.git
                .extract(tip, &self.subdir, &checkout)
                .map_err(|e| e.to_string())?;
            *extracted = Some(tip.to_string());
        }
        load(&checkout, now)
    }

    fn reading(&self) -> upkeep::layout::Reading {
        let listing = self
            .git
            .tip("main")
            .ok()
            .and_then(|t| self.git.listing(t).ok())
            .unwrap_or_default();
        upkeep::layout::Reading::of_files(
            upkeep::layout::Files::from_listing(listing),
            &self.subdir,
        )
    }

    async fn observe(&self) -> Result<upkeep::cluster::Observed, String> {
        upkeep::cluster::observe(&self.client, &Default::default())
            .await
            .map_err(|e| e.to_string())
    }

    /// Apply cycles until no rollout is active: waiting for a window moves the clock to it, a
    /// soak is looked at every simulated hour. Each rollout's last (name, phase, message), and
    /// what could not start and why.
    #[allow(clippy::type_complexity)]
    async fn apply_until_settled(
        &self,
    ) -> Result<
        (
            Vec<(String, Phase, String)>,
            std::collections::BTreeMap<String, String>,
        ),
        String,
    > {
        let client = &self.client;
        let mut last: Vec<(String, Phase, String)> = Vec::new();
        let mut blocked = Default::default();
        let mut said = self.said.lock().map(|s| s.clone()).unwrap_or_default();
        let mut failing: std::collections::BTreeMap<(String, String), usize> = Default::default();
        let mut stuck: std::collections::BTreeMap<String, String> = Default::default();
        // About two months of simulated time at most.
        for _ in 0..1500 {
            let config = self.config_on_main(self.clock.now())?;
            let mut opts = Options::from_policy(&config.rollouts, "upkeep-system");
            opts.budget = Duration::from_secs(3600);
            opts.pace = self.kube.pace(STEP);
            opts.releases = releases(&self.catalog, &config).await;
            let c = self.clock.clone();
            let applied =
                upkeep::apply::run_detailed(client, &self.repo(), &config, &opts, &move || c.now())
                    .await?;
            blocked = applied.blocked.clone();
            last = applied
                .rollouts
                .iter()
                .map(|(n, s)| (n.clone(), s.phase, s.message.clone()))
                .collect();
            for (n, p, m) in &last {
                if said.get(n) != Some(&(*p, m.clone())) {
                    self.say(&format!("{n}: {p:?}: {m}"));
                    said.insert(n.clone(), (*p, m.clone()));
                }
                // A preflight that failed the same way in two windows will not pass in a
                // third: the rehearsal says so instead of waiting for ever.
                if *p == Phase::Preflight {
                    let n_seen = failing.entry((n.clone(), m.clone())).or_insert(0usize);
                    *n_seen += 1;
                    if *n_seen >= 2 {
                        let component = n.rsplit_once("-v").map_or(n.as_str(), |(c, _)| c);
                        stuck.insert(component.to_string(), m.clone());
                    }
                }
            }
            if !stuck.is_empty() {
                break;
            }
            let active: Vec<Phase> = applied
                .rollouts
                .iter()
                .map(|(_, s)| s.phase)
                .filter(|p| !p.is_terminal())
                .collect();
            if active.is_empty() {
                break;
            }
            if active.iter().all(|p| *p == Phase::Soaking) {
                self.kube
                    .run_for(Duration::from_secs(3600), Duration::from_secs(1800));
                continue;
            }
            let next = upkeep::windows::next_start(
                self.clock.now() + chrono::Duration::minutes(1),
                "k3s",
                &config.windows,
                &config.freezes,
                Default::default(),
            );
            match next {
                Some(t)
                    if active
                        .iter()
                        .all(|p| matches!(p, Phase::WaitingForWindow | Phase::Applying)) =>
                {
                    // Nobody acts until the window: the cluster lives on an hour at a time.
                    self.kube.run_until(t, Duration::from_secs(3600));
                }
                _ => self
                    .kube
                    .run_for(Duration::from_secs(600), Duration::from_secs(60)),
            }
        }
        if let Ok(mut s) = self.said.lock() {
            *s = said;
        }
        let mut blocked: std::collections::BTreeMap<String, String> = blocked;
        blocked.extend(stuck);
        Ok((last, blocked))
    }
}

/// Known releases per component, from the catalog: paths of several hops need them.
async fn releases(
    cat: &std::sync::Arc<Catalog>,
    config: &ConfigRepo,
) -> std::collections::HashMap<String, Vec<upkeep::versions::Version>> {
    let mut out = std::collections::HashMap::new();
    for c in &config.components {
        if let Ok(f) = upkeep::sources::Upstream::fetch(cat.as_ref(), c, &Default::default()).await
        {
            out.insert(
                c.name.clone(),
                f.releases_as(c.scheme)
                    .0
                    .into_iter()
                    .map(|r| r.version)
                    .collect(),
            );
        }
    }
    out
}

/// Why nothing is proposed, in words: the reason's message when it has one, else its name
/// (`upToDate` -> "up to date").
fn reason_text(r: &upkeep::select::Reason) -> String {
    let v = serde_json::to_value(r).unwrap_or_default();
    if let Some(m) = v.get("message").and_then(|m| m.as_str()) {
        return m.to_string();
    }
    let tag = match &v {
        serde_json::Value::String(s) => s.clone(),
        other => other
            .get("reason")
            .and_then(|x| x.as_str())
            .unwrap_or("")
            .to_string(),
    };
    let mut out = String::new();
    for c in tag.chars() {
        if c.is_ascii_uppercase() {
            out.push(' ');
            out.push(c.to_ascii_lowercase());
        } else {
            out.push(c);
        }
    }
    out
}
