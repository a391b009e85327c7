//! `upkeep run`: one level-triggered loop. Each reconcile reads top-down like the pipeline:
//! fetch the config repo; detect and propose (on its own, slower interval); compare the merged
//! desired state with what runs and drive the rollouts; record what happened.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use tracing::Instrument;

use crate::apply::{Options, Repo};
use crate::forge::GitHub;
use crate::gitrepo::{Author, GitRepo};
use crate::leader::Leadership;
use crate::model::ConfigRepo;
use crate::propose::{Cycle, Style};
use crate::report::ComponentReport;
use crate::rollout::Phase;
use crate::sources::catalog::Catalog;
use crate::sources::{Fetched, Live, StatsSnapshot, Upstream};
use crate::telemetry::{
    ApiLabel, ComponentLabel, KindLabel, Metrics, OutcomeLabels, RolloutLabels, StatusLabel,
    StepLabels,
};
use crate::versions::Version;

/// What the status page (and `/api/status`) shows.
#[derive(Debug, Clone, Default, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Status {
    pub ready: bool,
    pub last_reconcile: Option<DateTime<Utc>>,
    /// Per component: what git asks, what upstream has, and why not further.
    pub components: Vec<ComponentReport>,
    /// Per component: the lowest version running in the cluster.
    pub running: std::collections::BTreeMap<String, String>,
    /// Per component: what versions.yaml on the base branch asks for, as of this reconcile.
    pub desired: std::collections::BTreeMap<String, String>,
    /// Per component that differs from versions.yaml with no rollout possible: why.
    pub blocked: std::collections::BTreeMap<String, String>,
    /// The nodes (k3s runs per node).
    pub nodes: Vec<crate::cluster::NodeState>,
    /// What a human suspended: component (or `(everything)`) -> who, when, why.
    pub suspended: std::collections::BTreeMap<String, String>,
    /// The rollouts that ended, newest first.
    pub history: Vec<crate::apply::HistoryEntry>,
    pub open_prs: Vec<OpenPr>,
    /// The rollouts in flight, and the failures nobody acknowledged yet.
    pub rollouts: Vec<RolloutView>,
    /// Per component: when work may start (open now, next opening, frozen).
    pub schedule: Vec<(String, String)>,
    /// Who holds the lease, as last seen.
    pub leader: Option<String>,
    pub errors: Vec<String>,
}

/// An open pull request of upkeep's.
#[derive(Debug, Clone, serde::Serialize)]
pub struct OpenPr {
    pub number: u64,
    pub title: String,
    pub url: String,
}

/// A rollout as the page shows it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct RolloutView {
    pub name: String,
    pub status: crate::rollout::RolloutStatus,
}

/// What the loop and the HTTP server share.
pub struct Shared {
    pub metrics: Metrics,
    pub status: Mutex<Status>,
    /// Wakes the loop before its poll interval ends (a webhook, a file change).
    pub wake: tokio::sync::Notify,
    /// Set with a wake when pull requests changed: detect and propose on this reconcile.
    pub want_propose: std::sync::atomic::AtomicBool,
    /// The webhook's secret and the branch it cares about; `None` turns `/webhook` off.
    pub webhook: Option<WebhookConfig>,
    /// Whether this replica may act.
    pub leadership: Arc<Leadership>,
    /// A reconcile `upkeep reconcile` asked for, to say handled once done.
    pub reconcile_request: Mutex<Option<String>>,
}

/// The webhook endpoint's settings. The secret is never printed.
pub struct WebhookConfig {
    pub secret: Vec<u8>,
    pub base: String,
}

impl std::fmt::Debug for WebhookConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhookConfig")
            .field("secret", &"<redacted>")
            .field("base", &self.base)
            .finish()
    }
}

impl Shared {
    pub fn new(
        metrics: Metrics,
        webhook: Option<WebhookConfig>,
        leadership: Arc<Leadership>,
    ) -> Shared {
        Shared {
            metrics,
            status: Mutex::default(),
            wake: tokio::sync::Notify::new(),
            want_propose: Default::default(),
            webhook,
            leadership,
            reconcile_request: Mutex::default(),
        }
    }

    /// `upkeep reconcile` asked (request `value`): detect, propose and apply now, then say so.
    pub fn request(&self, value: String) {
        tracing::info!(requested = %value, "reconcile requested");
        *self
            .reconcile_request
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = Some(value);
        self.poke(true);
    }

    /// Ready once the lease state is known and, for the leader, the first reconcile ran; a
    /// standby is ready as soon as it knows who leads.
    pub fn ready(&self) -> Result<(), &'static str> {
        if !self.leadership.known() {
            return Err("the lease has not been read yet");
        }
        if self.leadership.is_leader() && !self.status().ready {
            return Err("the first reconcile has not run yet");
        }
        Ok(())
    }

    /// Asks the loop to reconcile now (and to propose too when `propose`).
    pub fn poke(&self, propose: bool) {
        if propose {
            self.want_propose
                .store(true, std::sync::atomic::Ordering::SeqCst);
        }
        self.wake.notify_one();
    }

    pub fn status(&self) -> std::sync::MutexGuard<'_, Status> {
        self.status.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Where releases come from: the live sources (with their ETag cache) or the signed catalog.
#[derive(Clone)]
pub enum Sources {
    Live(Arc<Live>),
    Catalog(Arc<Catalog>),
}

/// Remembers each component's releases as they pass, so that apply knows multi-hop paths.
struct Recording<U> {
    inner: Arc<U>,
    seen: Mutex<HashMap<String, Vec<Version>>>,
}

impl<U: Upstream> Upstream for Recording<U> {
    async fn fetch(
        &self,
        c: &crate::model::Component,
        run: &crate::sources::Run,
    ) -> crate::sources::Result<Fetched> {
        let f = self.inner.fetch(c, run).await;
        if let Ok(f) = &f {
            let versions = f
                .releases_as(c.scheme)
                .0
                .into_iter()
                .map(|r| r.version)
                .collect();
            self.seen
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(c.name.clone(), versions);
        }
        f
    }
}

async fn check_with<U: Upstream + 'static>(
    up: Arc<U>,
    repo: &ConfigRepo,
    now: DateTime<Utc>,
    origin: &str,
) -> Detected {
    let rec = Arc::new(Recording {
        inner: up,
        seen: Mutex::default(),
    });
    let (report, published) = crate::check::run_with_dates(rec.clone(), repo, now, 8, origin).await;
    let seen = std::mem::take(&mut *rec.seen.lock().unwrap_or_else(|e| e.into_inner()));
    (report.components, seen, published)
}

impl Sources {
    async fn check(&self, repo: &ConfigRepo, now: DateTime<Utc>) -> Detected {
        match self {
            Sources::Live(l) => check_with(l.clone(), repo, now, "live").await,
            Sources::Catalog(c) => check_with(c.clone(), repo, now, "catalog").await,
        }
    }

    fn stats(&self) -> Option<(StatsSnapshot, Option<u64>)> {
        match self {
            Sources::Live(l) => Some((l.stats.snapshot(), l.stats.rate_remaining.get())),
            Sources::Catalog(_) => None,
        }
    }
}

/// How the controller runs.
pub struct Config {
    pub git: GitRepo,
    pub forge: GitHub,
    pub base: String,
    pub subdir: String,
    pub state: std::path::PathBuf,
    pub kubeconfig: Option<std::path::PathBuf>,
    pub namespace: String,
    /// Where SUC, the snapshot Job and Longhorn live.
    pub namespaces: crate::cluster::Namespaces,
    pub author: Author,
    pub style: Style,
    /// How often the loop runs.
    pub poll: Duration,
    /// How often upstream is asked for new releases (and proposals made).
    pub detect_every: Duration,
    pub sources: Sources,
}

/// What the loop remembers between reconciles.
#[derive(Default)]
struct Memory {
    last_detect: Option<Instant>,
    /// Releases per component from the last detection (multi-hop paths for apply).
    releases: HashMap<String, Vec<Version>>,
    /// The source counters as last turned into metrics.
    stats: StatsSnapshot,
    phases: PhaseClock,
    /// The Kubernetes client, made once (its TLS connections are reused).
    client: Option<kube::Client>,
    /// A rollout is under way (not finished, not waiting for a window): look again soon.
    busy: bool,
    /// What the cluster ran at the last look; `None` before the first. Proposals wait for it.
    running: Option<crate::propose::Running>,
    /// Components that get no rollout, and why, as last said (each is logged when it changes).
    blocked: crate::apply::Blocked,
    /// The rollouts of the last look (name, phase, message), for the dashboard's boxes.
    rollouts: Vec<(String, Phase, String)>,
    /// Boxes ticked on the dashboard, to act on after this reconcile's look at the cluster.
    ticks: Vec<crate::propose::Tick>,
    /// The dashboard issue, to say there what was done about a box.
    dashboard: Option<u64>,
    /// The notification ids already handed to the sender (as last read from the cluster).
    ledger: Option<crate::notify::Ledger>,
    sender: Option<crate::notify::Sender>,
    /// Components whose release source fails, and since when (this process has seen it).
    failing_since: std::collections::BTreeMap<String, DateTime<Utc>>,
    /// The last detection's rows and release dates (for the monthly report).
    checked: Vec<ComponentReport>,
    published: crate::check::Published,
    /// The month whose report is on the dashboard (or was given up on), and when to try again
    /// after a failure.
    reported: Option<String>,
    report_retry: Option<DateTime<Utc>>,
}

/// How often the loop looks while a rollout is under way, whatever `poll` says: each look moves
/// a rollout by at most one step.
pub const BUSY_POLL: Duration = Duration::from_secs(2);

/// Turns the phases seen on successive reconciles into step and rollout durations.
#[derive(Default)]
pub struct PhaseClock {
    seen: HashMap<String, (Phase, DateTime<Utc>, DateTime<Utc>)>,
}

/// A duration the phase clock measured.
#[derive(Debug, Clone, PartialEq)]
pub enum Measured {
    /// The rollout left `step` after `seconds`.
    Step { step: Phase, seconds: f64 },
    /// The rollout ended (`outcome`) `seconds` after it was first seen.
    Rollout { outcome: Phase, seconds: f64 },
}

impl PhaseClock {
    /// Record `phase` for `rollout` at `now`; returns what ended since the last look. Rollouts
    /// first seen already finished (as after a restart) measure nothing.
    pub fn observe(&mut self, rollout: &str, phase: Phase, now: DateTime<Utc>) -> Vec<Measured> {
        let secs = |from: DateTime<Utc>| (now - from).num_milliseconds().max(0) as f64 / 1000.0;
        let mut out = Vec::new();
        match self.seen.get(rollout).cloned() {
            None => {
                if !phase.is_terminal() {
                    self.seen.insert(rollout.to_string(), (phase, now, now));
                }
            }
            Some((prev, since, started)) if prev != phase => {
                out.push(Measured::Step {
                    step: prev,
                    seconds: secs(since),
                });
                if phase.is_terminal() {
                    out.push(Measured::Rollout {
                        outcome: phase,
                        seconds: secs(started),
                    });
                    self.seen.remove(rollout);
                } else {
                    self.seen.insert(rollout.to_string(), (phase, now, started));
                }
            }
            Some(_) => {}
        }
        out
    }
}

/// Run until `stop` turns true; the step in progress finishes first.
pub async fn run(cfg: Config, shared: Arc<Shared>, mut stop: tokio::sync::watch::Receiver<bool>) {
    let mut mem = Memory::default();
    loop {
        if shared.leadership.is_leader() {
            let t = Instant::now();
            let result = reconcile(&cfg, &shared, &mut mem)
                .instrument(tracing::info_span!("reconcile"))
                .await;
            record(&shared, result);
            shared
                .metrics
                .reconcile_duration
                .observe(t.elapsed().as_secs_f64());
        } else {
            tracing::debug!(holder = ?shared.leadership.holder(), "standing by: another replica leads");
        }
        shared.status().leader = shared.leadership.holder();
        // The gauge follows the leadership itself, which also runs out without a word.
        shared
            .metrics
            .leader
            .set(i64::from(shared.leadership.is_leader()));
        let wait = if mem.busy {
            cfg.poll.min(BUSY_POLL)
        } else {
            cfg.poll
        };
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = shared.wake.notified() => tracing::debug!("woken before the poll interval"),
            _ = stop.changed() => {}
        }
        if *stop.borrow() {
            tracing::info!("stopping: the last reconcile finished");
            return;
        }
    }
}

fn record(shared: &Shared, result: Result<(), (&'static str, String)>) {
    match result {
        Ok(()) => {
            shared
                .metrics
                .last_success
                .set(Utc::now().timestamp() as f64);
            let mut st = shared.status();
            st.ready = true;
            st.last_reconcile = Some(Utc::now());
        }
        Err((kind, e)) => {
            tracing::warn!(kind, error = %e, "reconcile failed");
            shared
                .metrics
                .reconcile_errors
                .get_or_create(&KindLabel {
                    kind: kind.to_string(),
                })
                .inc();
            let mut st = shared.status();
            st.ready = true;
            st.errors = vec![e];
        }
    }
}

/// Stops a reconcile between steps once the lease is lost.
fn still_leader(shared: &Shared) -> Result<(), (&'static str, String)> {
    if shared.leadership.is_leader() {
        Ok(())
    } else {
        Err((
            "lease",
            "the lease was lost: stopped before the next step".into(),
        ))
    }
}

/// How `upkeep run` serves, besides what it reconciles.
pub struct Serve {
    /// Where `/healthz`, `/readyz`, `/metrics`, `/webhook`, `/api/status` and the page are.
    pub listen: std::net::SocketAddr,
    /// `None` turns `/webhook` off.
    pub webhook: Option<WebhookConfig>,
    /// Elect a leader on this Lease; `None`: this replica always acts.
    pub lease: Option<crate::leader::Settings>,
    /// A config repository on local disk, watched so that a commit wakes the loop.
    pub watch_repo: Option<std::path::PathBuf>,
    /// Timeouts and the connection limit of the HTTP port.
    pub limits: crate::server::Limits,
}

/// The controller: the HTTP server, the leader election, the watch for `upkeep reconcile`
/// requests and the local repository, and the loop, until `shutdown` resolves (the step in
/// progress finishes; the lease is held until the loop has stopped, then given up).
pub async fn serve(
    cfg: Config,
    s: Serve,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), String> {
    let leadership = Arc::new(if s.lease.is_some() {
        Leadership::default()
    } else {
        Leadership::always()
    });
    let shared = Arc::new(Shared::new(Metrics::new(), s.webhook, leadership.clone()));
    let listener = tokio::net::TcpListener::bind(s.listen)
        .await
        .map_err(|e| format!("cannot listen on {}: {e}", s.listen))?;
    let app = crate::server::router(shared.clone());
    tokio::spawn(crate::server::serve(listener, app, s.limits));
    let (tx, rx) = tokio::sync::watch::channel(false);
    // The election stops only after the loop: the lease is held until the last step ends.
    let (election_tx, election_rx) = tokio::sync::watch::channel(false);
    let election = match s.lease {
        None => {
            shared.metrics.leader.set(1);
            None
        }
        Some(settings) => {
            let client = crate::cluster::client(cfg.kubeconfig.as_deref())
                .await
                .map_err(|e| e.to_string())?;
            // The Lease lives in the namespace; outside a cluster it may not exist yet.
            crate::apply::install(&client, &cfg.namespace).await?;
            // `upkeep reconcile` asks through a ConfigMap annotation.
            let sh = shared.clone();
            tokio::spawn(crate::operate::watch_requests(
                client.clone(),
                cfg.namespace.clone(),
                move |v| sh.request(v),
                election_rx.clone(),
            ));
            let sh = shared.clone();
            Some(tokio::spawn(crate::leader::run(
                client,
                settings,
                leadership,
                move |leading| {
                    sh.metrics.leader.set(i64::from(leading));
                    if leading {
                        sh.poke(false);
                    }
                },
                election_rx,
            )))
        }
    };
    tokio::spawn(async move {
        shutdown.await;
        let _ = tx.send(true);
    });
    // A repository on local disk is watched: a commit to the base branch wakes the loop.
    let _watcher = s.watch_repo.as_ref().and_then(|path| {
        let sh = shared.clone();
        crate::watch::spawn(path, &cfg.base, move || sh.poke(false))
            .inspect_err(|e| tracing::warn!(error = %e, "not watching the repository"))
            .ok()
    });
    run(cfg, shared, rx).await;
    let _ = election_tx.send(true);
    if let Some(e) = election {
        let _ = e.await;
    }
    Ok(())
}

/// One reconcile, top-down. Errors carry a kind for the metric label.
async fn reconcile(
    cfg: &Config,
    shared: &Shared,
    mem: &mut Memory,
) -> Result<(), (&'static str, String)> {
    let now = Utc::now();
    let request = shared
        .reconcile_request
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .take();
    // 1. Detect and propose, on the slower interval (or when pull requests changed).
    let asked = shared
        .want_propose
        .swap(false, std::sync::atomic::Ordering::SeqCst);
    let due = asked
        || mem
            .last_detect
            .is_none_or(|t| t.elapsed() >= cfg.detect_every);
    // A proposal waits for what the cluster runs, so the first detection follows the first look.
    let detect = due && mem.running.is_some();
    if due && !detect {
        shared
            .want_propose
            .store(true, std::sync::atomic::Ordering::SeqCst);
    }
    let propose_error = if detect {
        detect_and_propose(cfg, shared, mem, now).await
    } else {
        None
    };
    still_leader(shared)?;
    // 2. Read the merged desired state (one fetch per reconcile: a proposal cycle that went well
    // has just fetched).
    let config = desired(cfg, detect && propose_error.is_none(), now)?;
    {
        let mut st = shared.status();
        st.schedule = schedule(&config, now);
        st.desired = config
            .components
            .iter()
            .map(|c| (c.name.clone(), c.version.raw().to_string()))
            .collect();
    }
    // 3. Compare with what runs and drive the rollouts (one look: the loop is the poll).
    still_leader(shared)?;
    let applied = drive(cfg, mem, &config).await?;
    let (new, gone) = crate::apply::blocked_changes(&mem.blocked, &applied.blocked);
    for (component, why) in new {
        tracing::warn!(
            component,
            why,
            "versions.yaml and the cluster differ, and no rollout can start"
        );
    }
    for component in gone {
        tracing::info!(component, "no longer blocked");
    }
    mem.blocked = applied.blocked.clone();
    mem.rollouts = applied
        .rollouts
        .iter()
        .map(|(n, r)| (n.clone(), r.phase, r.message.clone()))
        .collect();
    act_on_ticks(cfg, mem).await;
    if let (Some(value), Some(client)) = (&request, &mem.client)
        && let Err(e) = crate::operate::mark_handled(client, &cfg.namespace, value).await
    {
        tracing::warn!(error = %e, "cannot say the requested reconcile was handled");
    }
    if mem.running.replace(applied.running.clone()).is_none() && due {
        shared.wake.notify_one();
    }
    // 4. Tell (in the background) and record what happened.
    notify(cfg, shared, mem, &config, &applied.all, now).await;
    monthly_on_dashboard(cfg, mem, &config, &applied.all, now).await;
    record_rollouts(shared, mem, &applied.rollouts, &applied.driven);
    record_status(cfg, shared, applied);
    match propose_error {
        Some(e) => Err(("propose", e)),
        None => Ok(()),
    }
}

/// Early each month, the last month's report on the dependency dashboard (policy `reports:
/// monthlyOnDashboard`), once: the dashboard's comments say whether it is there already, so a
/// restart never posts it twice.
async fn monthly_on_dashboard(
    cfg: &Config,
    mem: &mut Memory,
    config: &ConfigRepo,
    all: &[crate::apply::Seen],
    now: DateTime<Utc>,
) {
    use crate::monthly::{Month, Posted};
    if !config.reports.monthly_on_dashboard
        || mem.checked.is_empty()
        || mem.report_retry.is_some_and(|t| now < t)
    {
        return;
    }
    let tz = config.reports.tz;
    let month = Month::previous(now, tz);
    if mem.reported.as_deref() == Some(month.to_string().as_str()) {
        return;
    }
    let (start, _) = month.bounds(tz);
    let records: Vec<crate::history::RolloutRecord> = all
        .iter()
        .map(|(name, spec, status)| crate::history::record_from(name, spec, status))
        .collect();
    let changes = cfg
        .git
        .version_changes(&cfg.base, &crate::apply::vfile(&cfg.subdir), start, 10_000)
        .unwrap_or_default();
    let entries = crate::history::entries(&records, &changes, start, None);
    let m = crate::monthly::build(&crate::monthly::Inputs {
        month,
        tz,
        cluster: config.cluster.as_deref(),
        generated_at: now,
        entries: &entries,
        published: &mem.published,
        windows: &config.windows,
        freezes: &config.freezes,
        components: &mem.checked,
    });
    let scope = crate::propose::Scope::new(&cfg.subdir, config.cluster.as_deref());
    match crate::monthly::post(&cfg.forge, &m, &scope).await {
        Ok(Posted::New(n)) => {
            tracing::info!(month = %month, issue = n, "the monthly report is on the dashboard");
            mem.reported = Some(month.to_string());
        }
        Ok(Posted::Already(_)) => mem.reported = Some(month.to_string()),
        Err(e) => {
            tracing::warn!(error = %e, month = %month, "cannot post the monthly report; trying again in an hour");
            mem.report_retry = Some(now + chrono::Duration::hours(1));
        }
    }
}

/// Hand the notices the state implies, and that were not handed over before, to the sender.
/// Each id is recorded in the cluster first (so a restart never sends it again); when that
/// record cannot be written, nothing is sent this time. Never blocks on a receiver.
async fn notify(
    cfg: &Config,
    shared: &Shared,
    mem: &mut Memory,
    config: &ConfigRepo,
    all: &[crate::apply::Seen],
    now: DateTime<Utc>,
) {
    use crate::notify::{Delivery, Ledger, RolloutView, Schedule};
    let n = &config.notifications;
    if n.alerts.is_empty() {
        return;
    }
    let Some(client) = mem.client.clone() else {
        return;
    };
    let views: Vec<RolloutView> = all
        .iter()
        .map(|(name, spec, status)| RolloutView { name, spec, status })
        .collect();
    let schedule = Schedule {
        windows: &config.windows,
        freezes: &config.freezes,
        lead: n.window_lead_time,
    };
    let notices = crate::notify::notices(now, &views, &schedule, &mem.failing_since);
    let routed: Vec<(&crate::notify::Notice, Vec<&str>)> = notices
        .iter()
        .map(|x| (x, crate::notify::route(x, &n.alerts)))
        .filter(|(_, p)| !p.is_empty())
        .collect();
    let known = mem.ledger.clone().unwrap_or_default();
    if routed.iter().all(|(x, _)| known.0.contains_key(&x.id)) && mem.ledger.is_some() {
        return;
    }
    // Something new (or the first look): read the ledger as the cluster has it.
    let mut ledger: Ledger = match crate::notify::load_ledger(&client, &cfg.namespace).await {
        Ok(l) => l,
        Err(e) => {
            tracing::warn!(error = %e, "cannot read the notification ledger; notifying later");
            return;
        }
    };
    // Until this process has read the sources, it does not know which work again.
    let failing = (!mem.checked.is_empty()).then_some(&mem.failing_since);
    let pruned = ledger.prune(now, failing);
    let unsent: Vec<&(&crate::notify::Notice, Vec<&str>)> = routed
        .iter()
        .filter(|(x, _)| !ledger.0.contains_key(&x.id))
        .collect();
    for (x, _) in &unsent {
        ledger.record(&x.id, now);
    }
    if (!unsent.is_empty() || pruned)
        && let Err(e) = crate::notify::save_ledger(&client, &cfg.namespace, &ledger).await
    {
        tracing::warn!(error = %e, "cannot record notifications; sending them later");
        mem.ledger = None;
        return;
    }
    mem.ledger = Some(ledger);
    let sender = mem.sender.get_or_insert_with(|| {
        let counter = shared.metrics.notifications.clone();
        crate::notify::Sender::spawn(move |provider, ok| {
            counter
                .get_or_create(&crate::telemetry::NotifyLabels {
                    provider: provider.to_string(),
                    result: if ok { "delivered" } else { "failed" }.into(),
                })
                .inc();
        })
    });
    for (x, providers) in unsent {
        for name in providers {
            if let Some(p) = n.providers.iter().find(|p| p.name == *name) {
                tracing::info!(id = %x.id, provider = %p.name, "notifying");
                sender.send(Delivery {
                    notice: (*x).clone(),
                    provider: p.clone(),
                });
            }
        }
    }
}

/// Carry out the dashboard's ticked boxes that need the cluster (retry, emergency), each once,
/// and say on the dashboard what came of it.
async fn act_on_ticks(cfg: &Config, mem: &mut Memory) {
    use crate::forge::Forge as _;
    use crate::propose::Tick;
    let ticks = std::mem::take(&mut mem.ticks);
    let Some(client) = mem.client.clone() else {
        return;
    };
    for t in ticks {
        let said = match &t {
            Tick::Retry(name) => match crate::operate::retry(&client, &cfg.namespace, name).await {
                Ok(r) => format!(
                    "Retried `{}` as ticked on this dashboard: the next reconcile makes a new attempt of {} {}.",
                    r.name, r.component, r.to
                ),
                Err(e) => {
                    format!("The retry of `{name}` ticked on this dashboard was not done: {e}")
                }
            },
            Tick::Emergency(name) => {
                match crate::operate::emergency(&client, &cfg.namespace, name).await {
                    Ok(()) => format!(
                        "`{name}` may now start outside its window (an emergency), as ticked on this dashboard; freezes still hold."
                    ),
                    Err(e) => format!(
                        "The emergency for `{name}` ticked on this dashboard was not done: {e}"
                    ),
                }
            }
            Tick::OpenNow(_) => continue,
        };
        tracing::info!(tick = ?t, result = %said, "dashboard box");
        if let Some(d) = mem.dashboard
            && let Err(e) = cfg.forge.comment(d, &said).await
        {
            tracing::warn!(error = %e, "cannot say on the dashboard what came of a box");
        }
    }
}

/// The config repository as merged on the base branch.
fn desired(
    cfg: &Config,
    fetched: bool,
    now: DateTime<Utc>,
) -> Result<ConfigRepo, (&'static str, String)> {
    if !fetched {
        cfg.git.fetch().map_err(|e| ("git", e.to_string()))?;
    }
    let tip = cfg.git.tip(&cfg.base).map_err(|e| ("git", e.to_string()))?;
    let checkout = cfg.state.join("apply-checkout");
    cfg.git
        .extract(tip, &cfg.subdir, &checkout)
        .map_err(|e| ("git", e.to_string()))?;
    crate::model::load_repo(&checkout, now)
        .map_err(|e| ("config", e.to_string()))?
        .repo
        .ok_or((
            "config",
            format!("versions.yaml on {} is invalid", cfg.base),
        ))
}

/// One look at every rollout: create what is missing, move each by a step.
async fn drive(
    cfg: &Config,
    mem: &mut Memory,
    config: &ConfigRepo,
) -> Result<crate::apply::Applied, (&'static str, String)> {
    let client = match &mem.client {
        Some(c) => c.clone(),
        None => {
            let c = crate::cluster::client(cfg.kubeconfig.as_deref())
                .await
                .map_err(|e| ("kube", e.to_string()))?;
            mem.client = Some(c.clone());
            c
        }
    };
    let repo = Repo {
        git: &cfg.git,
        forge: Some(&cfg.forge),
        base: cfg.base.clone(),
        subdir: cfg.subdir.clone(),
        author: cfg.author.clone(),
    };
    let mut opts = Options::from_policy(&config.rollouts, &cfg.namespace);
    opts.budget = Duration::ZERO;
    opts.namespaces = cfg.namespaces.clone();
    opts.releases = mem.releases.clone();
    crate::apply::run_detailed(&client, &repo, config, &opts, &Utc::now)
        .instrument(tracing::info_span!("rollouts"))
        .await
        .map_err(|e| ("apply", e))
}

/// The status page's rollouts and open pull requests (as apply listed them), and the forge's
/// rate limit.
fn record_status(cfg: &Config, shared: &Shared, applied: crate::apply::Applied) {
    if let Some(n) = cfg.forge.counters.rate_remaining.get() {
        shared
            .metrics
            .rate_limit_remaining
            .get_or_create(&ApiLabel {
                api: "forge".into(),
            })
            .set(n as i64);
    }
    let mut st = shared.status();
    st.rollouts = applied
        .rollouts
        .into_iter()
        .map(|(name, status)| RolloutView { name, status })
        .collect();
    st.open_prs = applied
        .pulls
        .into_iter()
        .filter(|p| p.is_open())
        .map(|p| OpenPr {
            number: p.number,
            title: p.title,
            url: p.url,
        })
        .collect();
    st.running = applied
        .running
        .into_iter()
        .map(|(c, r)| (c, r.version.raw().to_string()))
        .collect();
    st.blocked = applied.blocked;
    st.nodes = applied.nodes;
    st.suspended = applied.suspended;
    st.history = applied.history;
}

/// What one detection found: the report rows and each component's releases.
type Detected = (
    Vec<ComponentReport>,
    HashMap<String, Vec<Version>>,
    crate::check::Published,
);

/// Detection and proposals. A failed proposal never holds back applying what was merged; it is
/// tried again on the next reconcile.
async fn detect_and_propose(
    cfg: &Config,
    shared: &Shared,
    mem: &mut Memory,
    now: DateTime<Utc>,
) -> Option<String> {
    let found: Arc<Mutex<Detected>> = Arc::default();
    let cycle = Cycle {
        git: &cfg.git,
        forge: &cfg.forge,
        base: cfg.base.clone(),
        subdir: cfg.subdir.clone(),
        scratch: cfg.state.join("checkout"),
        style: cfg.style.clone(),
        author: cfg.author.clone(),
        dashboard: true,
        dry_run: false,
        running: mem.running.clone(),
        rollouts: mem.rollouts.clone(),
    };
    let sources = cfg.sources.clone();
    let sink = found.clone();
    let proposed = cycle
        .run(now, |repo| async move {
            let (rows, releases, published) = sources.check(&repo, now).await;
            *sink.lock().unwrap_or_else(|e| e.into_inner()) = (rows.clone(), releases, published);
            (repo, rows)
        })
        .instrument(tracing::info_span!("propose"))
        .await;
    let (rows, releases, published) =
        std::mem::take(&mut *found.lock().unwrap_or_else(|e| e.into_inner()));
    if !releases.is_empty() {
        mem.releases = releases;
        mem.published = published;
        mem.checked = rows.clone();
    }
    if let Some((stats, remaining)) = cfg.sources.stats() {
        let delta = |now: u64, then: u64| now.saturating_sub(then);
        let ok = delta(stats.requests, mem.stats.requests)
            .saturating_sub(delta(stats.not_modified, mem.stats.not_modified))
            .saturating_sub(delta(stats.errors, mem.stats.errors));
        for (status, n) in [
            ("ok", ok),
            (
                "not_modified",
                delta(stats.not_modified, mem.stats.not_modified),
            ),
            ("error", delta(stats.errors, mem.stats.errors)),
        ] {
            shared
                .metrics
                .upstream_requests
                .get_or_create(&StatusLabel {
                    status: status.into(),
                })
                .inc_by(n);
        }
        mem.stats = stats;
        if let Some(n) = remaining {
            shared
                .metrics
                .rate_limit_remaining
                .get_or_create(&ApiLabel {
                    api: "releases".into(),
                })
                .set(n as i64);
        }
    }
    for r in &rows {
        if matches!(r.reason, Some(crate::select::Reason::SourceFailed { .. })) {
            mem.failing_since.entry(r.name.clone()).or_insert(now);
        } else {
            mem.failing_since.remove(&r.name);
        }
        shared
            .metrics
            .updates_available
            .get_or_create(&ComponentLabel {
                component: r.name.clone(),
            })
            .set(i64::from(r.next.is_some()));
        shared
            .metrics
            .source_failing
            .get_or_create(&ComponentLabel {
                component: r.name.clone(),
            })
            .set(i64::from(matches!(
                r.reason,
                Some(crate::select::Reason::SourceFailed { .. })
            )));
    }
    match proposed {
        Ok((outcome, _)) => {
            mem.last_detect = Some(Instant::now());
            mem.ticks = outcome.ticks;
            mem.dashboard = outcome.dashboard.or(mem.dashboard);
            let mut st = shared.status();
            st.components = rows;
            st.errors = outcome.errors;
            None
        }
        Err(e) => {
            shared.status().components = rows;
            Some(e)
        }
    }
}

fn record_rollouts(
    shared: &Shared,
    mem: &mut Memory,
    summary: &[(String, crate::rollout::RolloutStatus)],
    driven: &[String],
) {
    shared.metrics.rollout_phase.clear();
    shared.metrics.check_result.clear();
    let now = Utc::now();
    // Under way, or just moved into waiting (a rollout that starts in an open window passes
    // through WaitingForWindow for one look): look again soon.
    mem.busy = summary.iter().any(|(name, r)| {
        // A soak is looked at on the usual poll, not every two seconds.
        if r.phase == Phase::Soaking
            && !mem
                .phases
                .seen
                .get(name)
                .is_none_or(|(p, ..)| *p != r.phase)
        {
            return false;
        }
        if !driven.contains(name) {
            return false;
        }
        let moved = mem
            .phases
            .seen
            .get(name)
            .is_none_or(|(p, ..)| *p != r.phase);
        !r.phase.is_terminal() && (r.phase != Phase::WaitingForWindow || moved)
    });
    for (name, r) in summary {
        let phase = &r.phase;
        for f in &r.checks {
            shared
                .metrics
                .check_result
                .get_or_create(&crate::telemetry::CheckLabels {
                    rollout: name.clone(),
                    check: f.check.clone(),
                })
                .set(i64::from(f.ok));
        }
        let component = name.split('-').next().unwrap_or("").to_string();
        shared
            .metrics
            .rollout_phase
            .get_or_create(&RolloutLabels {
                rollout: name.clone(),
                component: component.clone(),
                phase: format!("{phase:?}"),
            })
            .set(1);
        let was_soaking = mem
            .phases
            .seen
            .get(name)
            .is_some_and(|(p, ..)| *p == Phase::Soaking);
        if was_soaking
            && *phase != Phase::Soaking
            && r.soak.as_ref().is_some_and(|k| k.regression.is_some())
        {
            shared
                .metrics
                .soak_regressions
                .get_or_create(&ComponentLabel {
                    component: component.clone(),
                })
                .inc();
        }
        for m in mem.phases.observe(name, *phase, now) {
            match m {
                Measured::Step { step, seconds } => shared
                    .metrics
                    .step_duration
                    .get_or_create(&StepLabels {
                        component: component.clone(),
                        step: format!("{step:?}"),
                    })
                    .observe(seconds),
                Measured::Rollout { outcome, seconds } => shared
                    .metrics
                    .rollout_duration
                    .get_or_create(&OutcomeLabels {
                        component: component.clone(),
                        outcome: format!("{outcome:?}"),
                    })
                    .observe(seconds),
            }
        }
    }
}

/// When work may start on each component, in words, for the status page.
pub fn schedule(config: &ConfigRepo, now: DateTime<Utc>) -> Vec<(String, String)> {
    use crate::windows::{Decision, Override, decide};
    config
        .components
        .iter()
        .map(|c| {
            let tz = crate::windows::zone_for(&c.name, &config.windows);
            let fmt = |t: DateTime<Utc>| crate::windows::show(t, tz);
            let d = decide(
                now,
                &c.name,
                &config.windows,
                &config.freezes,
                Override::default(),
            );
            let words = match d {
                Decision::AnyTime => "any time (no window covers it)".to_string(),
                Decision::InWindow { window, closes } => {
                    format!("now: {window} is open until {}", fmt(closes))
                }
                Decision::Emergency => "now (emergency)".to_string(),
                Decision::Wait { next: Some(t) } => format!("next window opens {}", fmt(t)),
                Decision::Wait { next: None } => "no window opens within 400 days".to_string(),
                Decision::Denied { window, until } => {
                    format!("denied by {window} until {}", fmt(until))
                }
                Decision::Frozen { freeze, until } => {
                    format!("frozen ({freeze}) until {}", fmt(until))
                }
            };
            (c.name.clone(), words)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000 + s, 0).unwrap_or_default()
    }

    #[test]
    fn the_status_page_shows_each_components_times_in_its_windows_zone() {
        let dir = std::env::temp_dir().join(format!("upkeep-schedule-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let write = |p: &str, t: &str| {
            let _ = std::fs::create_dir_all(dir.join("policies"));
            let _ = std::fs::write(dir.join(p), t);
        };
        write(
            "versions.yaml",
            "apiVersion: upkeep.dev/v1alpha1\nkind: DesiredVersions\ncomponents:\n  k3s:\n    version: v1.33.4+k3s1\n  flux:\n    version: v2.6.4\n",
        );
        write(
            "policies/windows.yaml",
            "apiVersion: upkeep.dev/v1alpha1\nkind: Policy\nwindows:\n  - name: sat\n    kind: allow\n    schedule: \"0 22 * * 6\"\n    duration: 4h\n    timeZone: Europe/Amsterdam\n    components: [k3s]\n",
        );
        let now = "2026-11-20T12:00:00Z".parse().unwrap_or_default();
        let repo = crate::model::load_repo(&dir, now).ok().and_then(|l| l.repo);
        let _ = std::fs::remove_dir_all(&dir);
        let Some(repo) = repo else {
            panic!("the repo loads")
        };
        let s = schedule(&repo, now);
        assert_eq!(
            s,
            [
                (
                    "k3s".to_string(),
                    "next window opens Sat 2026-11-21 22:00 CET (UTC+01:00)".to_string()
                ),
                (
                    "flux".to_string(),
                    "any time (no window covers it)".to_string()
                ),
            ]
        );
    }

    #[test]
    fn the_phase_clock_measures_steps_and_whole_rollouts() {
        let mut c = PhaseClock::default();
        assert!(c.observe("k3s-a", Phase::Preflight, at(0)).is_empty());
        assert!(c.observe("k3s-a", Phase::Preflight, at(5)).is_empty());
        assert_eq!(
            c.observe("k3s-a", Phase::Applying, at(10)),
            vec![Measured::Step {
                step: Phase::Preflight,
                seconds: 10.0
            }]
        );
        assert_eq!(
            c.observe("k3s-a", Phase::Succeeded, at(70)),
            vec![
                Measured::Step {
                    step: Phase::Applying,
                    seconds: 60.0
                },
                Measured::Rollout {
                    outcome: Phase::Succeeded,
                    seconds: 70.0
                }
            ]
        );
        // Finished rollouts are forgotten and not measured again.
        assert!(c.observe("k3s-a", Phase::Succeeded, at(80)).is_empty());
        assert!(c.seen.is_empty());
    }
}
