//! `upkeep run`: one level-triggered loop. Each reconcile reads top-down like the pipeline:
//! fetch the config repo; detect and propose (on its own, slower interval); compare the merged
//! desired state with what runs and drive the rollouts; record what happened.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};

use crate::apply::{Options, Repo};
use crate::forge::GitHub;
use crate::gitrepo::{Author, GitRepo};
use crate::propose::{Cycle, Style};
use crate::report::ComponentReport;
use crate::sources::catalog::Catalog;
use crate::telemetry::{ComponentLabel, KindLabel, Metrics, RolloutLabels};

/// What the status page shows.
#[derive(Debug, Clone, Default)]
pub struct Status {
    pub ready: bool,
    pub last_reconcile: Option<DateTime<Utc>>,
    pub components: Vec<ComponentReport>,
    pub open_prs: Vec<(u64, String)>,
    pub rollouts: Vec<(String, String, String)>,
    pub errors: Vec<String>,
}

/// What the loop and the HTTP server share.
pub struct Shared {
    pub metrics: Metrics,
    pub status: Mutex<Status>,
}

impl Shared {
    pub fn status(&self) -> std::sync::MutexGuard<'_, Status> {
        self.status.lock().unwrap_or_else(|e| e.into_inner())
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
    pub author: Author,
    pub style: Style,
    /// How often the loop runs.
    pub poll: Duration,
    /// How often upstream is asked for new releases (and proposals made).
    pub detect_every: Duration,
    pub catalog: Arc<Catalog>,
}

/// Run until `stop` turns true; the step in progress finishes first.
pub async fn run(cfg: Config, shared: Arc<Shared>, mut stop: tokio::sync::watch::Receiver<bool>) {
    let mut last_detect: Option<Instant> = None;
    loop {
        let span = tracing::info_span!("reconcile");
        let _e = span.enter();
        let t = Instant::now();
        match reconcile(&cfg, &shared, &mut last_detect).await {
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
        shared
            .metrics
            .reconcile_duration
            .observe(t.elapsed().as_secs_f64());
        drop(_e);
        tokio::select! {
            _ = tokio::time::sleep(cfg.poll) => {}
            _ = stop.changed() => {}
        }
        if *stop.borrow() {
            tracing::info!("stopping: the last reconcile finished");
            return;
        }
    }
}

/// One reconcile, top-down. Errors carry a kind for the metric label.
async fn reconcile(
    cfg: &Config,
    shared: &Shared,
    last_detect: &mut Option<Instant>,
) -> Result<(), (&'static str, String)> {
    let now = Utc::now();
    let mut propose_error: Option<String> = None;
    // Detect and propose on the slower interval.
    if last_detect.is_none_or(|t| t.elapsed() >= cfg.detect_every) {
        let rows: Arc<Mutex<Vec<ComponentReport>>> = Arc::default();
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
        };
        let cat = cfg.catalog.clone();
        let sink = rows.clone();
        let proposed = cycle
            .run(now, |repo| async move {
                let r = crate::check::run(cat, &repo, now, 8, "catalog").await;
                *sink.lock().unwrap_or_else(|e| e.into_inner()) = r.components.clone();
                (repo, r.components)
            })
            .await;
        // A failed proposal never holds back applying what was merged.
        // A failed proposal never holds back applying what was merged; it is tried again on the
        // next reconcile.
        let (outcome, _) = match proposed {
            Ok(x) => {
                *last_detect = Some(Instant::now());
                x
            }
            Err(e) => {
                propose_error = Some(e);
                Default::default()
            }
        };
        let rows = rows.lock().unwrap_or_else(|e| e.into_inner()).clone();
        for r in &rows {
            shared
                .metrics
                .updates_available
                .get_or_create(&ComponentLabel {
                    component: r.name.clone(),
                })
                .set(i64::from(r.next.is_some()));
        }
        let mut st = shared.status();
        st.components = rows;
        st.errors = outcome.errors.clone();
    }
    // Apply what was merged.
    cfg.git.fetch().map_err(|e| ("git", e.to_string()))?;
    let tip = cfg.git.tip(&cfg.base).map_err(|e| ("git", e.to_string()))?;
    let checkout = cfg.state.join("apply-checkout");
    cfg.git
        .extract(tip, &cfg.subdir, &checkout)
        .map_err(|e| ("git", e.to_string()))?;
    let config = crate::model::load_repo(&checkout, now)
        .map_err(|e| ("config", e.to_string()))?
        .repo
        .ok_or((
            "config",
            format!("versions.yaml on {} is invalid", cfg.base),
        ))?;
    let client = crate::cluster::client(cfg.kubeconfig.as_deref())
        .await
        .map_err(|e| ("kube", e.to_string()))?;
    let repo = Repo {
        git: &cfg.git,
        forge: Some(&cfg.forge),
        base: cfg.base.clone(),
        subdir: cfg.subdir.clone(),
        author: cfg.author.clone(),
    };
    let mut opts = Options::from_policy(&config.rollouts, &cfg.namespace);
    // One look per reconcile: the loop is the poll.
    opts.budget = Duration::ZERO;
    let summary = crate::apply::run(&client, &repo, &config, &opts, &Utc::now)
        .await
        .map_err(|e| ("apply", e))?;
    shared.metrics.rollout_phase.clear();
    for (name, phase, _) in &summary {
        let component = name.split('-').next().unwrap_or("").to_string();
        shared
            .metrics
            .rollout_phase
            .get_or_create(&RolloutLabels {
                rollout: name.clone(),
                component,
                phase: format!("{phase:?}"),
            })
            .set(1);
    }
    let prs = {
        use crate::forge::Forge;
        cfg.forge
            .pulls(crate::propose::BRANCH_PREFIX)
            .await
            .unwrap_or_default()
    };
    let mut st = shared.status();
    st.rollouts = summary
        .into_iter()
        .map(|(n, p, m)| (n, format!("{p:?}"), m))
        .collect();
    st.open_prs = prs
        .into_iter()
        .filter(|p| p.is_open())
        .map(|p| (p.number, p.title))
        .collect();
    match propose_error {
        Some(e) => Err(("propose", e)),
        None => Ok(()),
    }
}
