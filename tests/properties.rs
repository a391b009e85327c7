//! upkeep's safety promise as a property over random histories (docs/properties.md):
//! never skip a minor, never downgrade, never start outside a window or in a freeze, never apply
//! or report twice, and proposals within their limits.
//!
//! A history is a random configuration (windows, freezes, limits, path rule) and a sequence of
//! events: time passing, releases appearing (patches, minors, majors, pre-releases, backports),
//! propose cycles, humans merging and closing pull requests, emergency labels, rollout looks,
//! node failures, and controller restarts (a look whose status was never saved, done again).
//! Every event runs the real decisions (`select`, `versions::plan_path`, `propose::plan`,
//! `propose::hold_until_applied`, `windows::decide`/`next_start`, `rollout::decide`) and every
//! invariant is checked after every step. A failure is shrunk (events removed while it still
//! fails) and printed with its seed.
//!
//! `UPKEEP_PROPERTY_HISTORIES` sets the count (default 100,000); `UPKEEP_PROPERTY_SEED` the
//! first seed. The histories through the emulators are in `tests/properties_emulated.rs`.

mod common;

use std::collections::BTreeSet;

use chrono::{DateTime, Duration, Utc};
use common::Rng;
use upkeep::cluster::{NodeState, Observed, PlanState};
use upkeep::forge::PullRequest;
use upkeep::model::{Component, Policy, PullRequestLimits, Sources, Track};
use upkeep::propose::{Action, Proposal, Runs};
use upkeep::rollout::{self, BackupState, Ctx, Effect, Phase, RolloutSpec, RolloutStatus};
use upkeep::select::Release;
use upkeep::versions::{self, Downgrade, PathRule, Scheme, Version};
use upkeep::windows::{self, Freeze, Kind, Override, Selector, Window};

/// The schedules windows are drawn from: weekly, nightly, hourly, per-minute, overlapping.
const SCHEDULES: &[(&str, i64)] = &[
    ("0 22 * * 6", 240),
    ("0 2 * * *", 120),
    ("30 1 * * 1-5", 90),
    ("0 * * * *", 20),
    ("*/7 * * * *", 3),
    ("0 21 * * 5,6", 300),
    ("15 3 1 * *", 60),
];

#[derive(Debug, Clone)]
struct Config {
    windows: Vec<Window>,
    freezes: Vec<Freeze>,
    limits: PullRequestLimits,
    max_minor_step: u64,
    prerelease: bool,
    soak: upkeep::model::SoakPolicy,
}

fn config(rng: &mut Rng, start: DateTime<Utc>) -> Config {
    let mut windows = Vec::new();
    for i in 0..rng.below(4) {
        let (cron, minutes) = SCHEDULES[rng.below(SCHEDULES.len() as u64) as usize];
        let kind = if rng.chance(70) {
            Kind::Allow
        } else {
            Kind::Deny
        };
        let tz = ["UTC", "Europe/Berlin", "America/New_York"][rng.below(3) as usize];
        let w = Window::new(
            &format!("w{i}"),
            kind,
            cron,
            Duration::minutes(minutes),
            windows::parse_tz(tz).expect("zone"),
            Selector::All,
        )
        .expect("schedule");
        windows.push(w);
    }
    let freezes = (0..rng.below(3))
        .map(|i| {
            let from = start + Duration::hours(rng.below(24 * 30) as i64);
            Freeze {
                name: format!("f{i}"),
                from,
                to: from + Duration::hours(1 + rng.below(24 * 5) as i64),
                components: Selector::All,
            }
        })
        .collect();
    Config {
        windows,
        freezes,
        limits: PullRequestLimits {
            concurrent: 1 + rng.below(3) as u32,
            hourly: 1 + rng.below(3) as u32,
            one_per_component: rng.chance(60),
        },
        max_minor_step: 1 + rng.below(2),
        prerelease: rng.chance(20),
        soak: upkeep::model::SoakPolicy {
            duration: Duration::minutes([0, 0, 120, 1440][rng.below(4) as usize]),
            on_regression: if rng.chance(50) {
                upkeep::model::OnRegression::Attention
            } else {
                upkeep::model::OnRegression::Rollback
            },
        },
    }
}

/// One thing that happens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Event {
    /// Time passes (minutes).
    Wait(u32),
    /// Upstream publishes: 0 patch, 1 minor, 2 major, 3 pre-release, 4 backport patch.
    Publish(u8),
    /// upkeep's propose cycle.
    Propose,
    /// A human merges the n-th open pull request (modulo how many are open).
    Merge(u8),
    /// A human closes the n-th open pull request without merging.
    Close(u8),
    /// A human labels the rollout's PR `upkeep/emergency`.
    Emergency,
    /// The controller looks at the rollout once.
    Look,
    /// The controller is killed after a look's effects, before its status is saved.
    LookLost,
    /// The next node to upgrade never comes back Ready.
    NodeFails,
    /// A policy check fails at the next two validation or soak looks (an error rate rises).
    Regress,
}

fn event(rng: &mut Rng) -> Event {
    match rng.below(100) {
        0..=19 => Event::Wait([1, 7, 30, 90, 600, 1440, 4320][rng.below(7) as usize]),
        20..=29 => Event::Publish(rng.below(5) as u8),
        30..=44 => Event::Propose,
        45..=54 => Event::Merge(rng.below(4) as u8),
        55..=58 => Event::Close(rng.below(4) as u8),
        59..=60 => Event::Emergency,
        61..=92 => Event::Look,
        93..=95 => Event::LookLost,
        96..=97 => Event::NodeFails,
        _ => Event::Regress,
    }
}

const NODES: [(&str, bool); 3] = [("server-1", true), ("agent-1", false), ("agent-2", false)];

/// The model of the world the decisions run against: releases, git, the forge, the cluster.
struct World {
    cfg: Config,
    now: DateTime<Utc>,
    releases: Vec<Release>,
    /// versions.yaml on main.
    desired: Version,
    /// Every node's version (the cluster runs one version: upgrades complete within a look).
    nodes: Vec<String>,
    ready: Vec<bool>,
    fail_next: bool,
    /// A policy check fails at the next validation or soak looks (this many).
    regress_next: u32,
    /// upkeep's Plans: the version they upgrade to, and whether they start no new node.
    plan: Option<String>,
    held: bool,
    pulls: Vec<PullRequest>,
    /// The rollout of `desired`, when it differs from what runs (spec, status, created).
    rollout: Option<(String, RolloutSpec, RolloutStatus, DateTime<Utc>)>,
    /// Comment keys posted per rollout name (what the PR shows).
    posted: BTreeSet<(String, String)>,
    backups: BTreeSet<String>,
    emergency: bool,
    /// Phases a rollout reached, for the end-of-history checks.
    log: Vec<String>,
    /// Check `next_start` against `decide_now` after each wait (the costly check: every
    /// tenth history).
    check_windows: bool,
}

fn v(s: &str) -> Version {
    versions::parse(s, Scheme::K3s).expect("version")
}

fn k3s(at: &Version, max_minor_step: u64) -> Component {
    Component {
        name: "k3s".into(),
        version: at.clone(),
        scheme: Scheme::K3s,
        track: Track::Newest,
        sources: Sources::default(),
        allowed: None,
        path_rule: PathRule {
            max_minor_step: Some(max_minor_step),
            downgrade: Downgrade::Never,
        },
        runs: upkeep::model::Runs::K3s,
    }
}

impl World {
    fn new(cfg: Config, start: DateTime<Utc>) -> World {
        let first = v("v1.33.4+k3s1");
        World {
            cfg,
            now: start,
            releases: vec![Release {
                version: first.clone(),
                published_at: Some(start - Duration::days(30)),
                prerelease: false,
                draft: false,
            }],
            nodes: vec![first.to_string(); NODES.len()],
            ready: vec![true; NODES.len()],
            desired: first,
            fail_next: false,
            regress_next: 0,
            plan: None,
            held: false,
            pulls: Vec::new(),
            rollout: None,
            posted: BTreeSet::new(),
            backups: BTreeSet::new(),
            emergency: false,
            log: Vec::new(),
            check_windows: true,
        }
    }

    fn running(&self) -> Version {
        self.nodes
            .iter()
            .filter_map(|n| versions::parse(n, Scheme::K3s).ok())
            .min()
            .unwrap_or_else(|| self.desired.clone())
    }

    fn publish(&mut self, kind: u8) {
        let newest = self
            .releases
            .iter()
            .filter(|r| !r.prerelease)
            .map(|r| r.version.clone())
            .max()
            .unwrap_or_else(|| v("v1.33.4+k3s1"));
        let (major, minor, patch) = (newest.major, newest.minor, newest.patch);
        let tag = match kind {
            0 => format!("v{major}.{minor}.{}+k3s1", patch + 1),
            1 => format!("v{major}.{}.0+k3s1", minor + 1),
            2 => format!("v{}.0.0+k3s1", major + 1),
            3 => format!("v{major}.{}.0-rc1+k3s1", minor + 1),
            _ => format!("v{major}.{}.{}+k3s1", minor.saturating_sub(1), patch + 7),
        };
        let Ok(version) = versions::parse(&tag, Scheme::K3s) else {
            return;
        };
        if self.releases.iter().any(|r| r.version == version) {
            return;
        }
        self.releases.push(Release {
            version,
            published_at: Some(self.now),
            prerelease: kind == 3,
            draft: false,
        });
    }

    fn open(&self) -> Vec<usize> {
        (0..self.pulls.len())
            .filter(|i| self.pulls[*i].is_open())
            .collect()
    }

    /// A propose cycle: select, proposals, hold, plan, and the forge's answer to each action.
    fn propose(&mut self) -> Result<(), String> {
        let component = k3s(&self.desired, self.cfg.max_minor_step);
        let policy = Policy {
            prerelease: self.cfg.prerelease,
            ..Policy::default()
        };
        let sel = upkeep::select::select(&component, &policy, &self.releases, None, self.now);
        let Some(next) = sel.next else {
            return Ok(());
        };
        // No downgrade, no skipped minor, no pre-release unless policy says so.
        if next.version <= self.desired {
            return Err(format!(
                "proposed {} at {}: not an upgrade",
                next.version, self.desired
            ));
        }
        versions::check_hop(&self.desired, &next.version, &component.path_rule)
            .map_err(|e| format!("proposed an illegal hop: {e}"))?;
        if next.prerelease && !self.cfg.prerelease {
            return Err(format!("proposed the pre-release {}", next.version));
        }
        let to = next.version.to_string();
        let proposal = Proposal {
            component: "k3s".into(),
            from: self.desired.to_string(),
            to: to.clone(),
            level: versions::classify(&self.desired, &next.version),
            branch: upkeep::propose::branch_name("k3s", &to),
            title: format!("k3s: {} -> {to}", self.desired),
            commit_message: String::new(),
            labels: Vec::new(),
            body: String::new(),
        };
        // The next hop waits for the current one to be applied.
        let repo = upkeep::model::ConfigRepo {
            cluster: None,
            components: vec![component.clone()],
            windows: Vec::new(),
            freezes: Vec::new(),
            rules: Vec::new(),
            pull_requests: self.cfg.limits,
            catalog_public_key: None,
            checks: Vec::new(),
            rollouts: Default::default(),
            soak: Vec::new(),
            notifications: Default::default(),
            maintenance: Vec::new(),
            reports: Default::default(),
        };
        let mut running = upkeep::propose::Running::new();
        running.insert(
            "k3s".into(),
            Runs {
                version: self.running(),
                unfinished: self
                    .rollout
                    .as_ref()
                    .filter(|(_, _, s, _)| s.phase != Phase::Succeeded)
                    .map(|(n, _, s, _)| format!("rollout {n} is {:?}", s.phase)),
            },
        );
        let (go, _held) =
            upkeep::propose::hold_until_applied(vec![proposal], &repo, Some(&running));
        if !go.is_empty() && (self.running() < self.desired || self.unfinished()) {
            return Err("proposed the next hop before the current one was applied".into());
        }
        let actions = upkeep::propose::plan(
            &go,
            &self.pulls,
            &self.cfg.limits,
            &upkeep::propose::Scope::default(),
            self.now,
        );
        let created_last_hour = |pulls: &[PullRequest], now| {
            pulls
                .iter()
                .filter(|p| p.created_at.is_some_and(|t| now - t < Duration::hours(1)))
                .count() as u32
        };
        for a in actions {
            match a {
                Action::Open(p) => {
                    if self
                        .pulls
                        .iter()
                        .any(|x| x.head == p.branch && x.is_rejected())
                    {
                        return Err(format!("reopened the rejected {}", p.branch));
                    }
                    self.new_pull(&p);
                }
                Action::Supersede { old, proposal } => {
                    self.new_pull(&proposal);
                    if let Some(o) = self.pulls.iter_mut().find(|x| x.number == old) {
                        o.state = "closed".into();
                    }
                }
                Action::Refresh {
                    number, proposal, ..
                } => {
                    if let Some(o) = self.pulls.iter_mut().find(|x| x.number == number) {
                        o.title = proposal.title.clone();
                        o.body = proposal.to.clone();
                    }
                }
                Action::Wait { .. } | Action::Skip { .. } => {}
            }
        }
        let open = self.open().len() as u32;
        if open > self.cfg.limits.concurrent.max(1) && !self.cfg.limits.one_per_component {
            return Err(format!(
                "{open} PRs open, limit {}",
                self.cfg.limits.concurrent
            ));
        }
        if self.cfg.limits.one_per_component && open > 1 {
            return Err(format!("{open} PRs open for one component"));
        }
        if created_last_hour(&self.pulls, self.now) > self.cfg.limits.hourly {
            return Err(format!(
                "{} PRs created within an hour, limit {}",
                created_last_hour(&self.pulls, self.now),
                self.cfg.limits.hourly
            ));
        }
        Ok(())
    }

    fn unfinished(&self) -> bool {
        self.rollout
            .as_ref()
            .is_some_and(|(_, _, s, _)| s.phase != Phase::Succeeded)
    }

    fn new_pull(&mut self, p: &Proposal) {
        let number = self.pulls.len() as u64 + 1;
        self.pulls.push(PullRequest {
            number,
            title: p.title.clone(),
            body: p.to.clone(),
            state: "open".into(),
            merged: false,
            head: p.branch.clone(),
            head_sha: format!("sha{number}"),
            base: "main".into(),
            labels: Vec::new(),
            url: String::new(),
            created_at: Some(self.now),
        });
    }

    /// A human merges an open PR: versions.yaml takes its version when the PR was built on
    /// what main says (otherwise the merge conflicts and nothing happens).
    fn merge(&mut self, n: u8) {
        let open = self.open();
        if open.is_empty() {
            return;
        }
        let i = open[n as usize % open.len()];
        let to = self.pulls[i].body.clone();
        let from_ok = self.pulls[i]
            .title
            .split_once(": ")
            .and_then(|(_, t)| t.split_once(" -> "))
            .is_some_and(|(from, _)| from == self.desired.to_string());
        if !from_ok {
            return;
        }
        self.pulls[i].state = "closed".into();
        self.pulls[i].merged = true;
        self.desired = v(&to);
        self.emergency = false;
    }

    fn close(&mut self, n: u8) {
        let open = self.open();
        if let Some(i) = open.get(n as usize % open.len().max(1)) {
            self.pulls[*i].state = "closed".into();
        }
    }

    fn observed(&self) -> Observed {
        Observed {
            nodes: NODES
                .iter()
                .zip(&self.nodes)
                .zip(&self.ready)
                .map(|(((name, server), version), ready)| NodeState {
                    name: (*name).into(),
                    server: *server,
                    etcd: *server,
                    version: version.clone(),
                    ready: *ready,
                    unschedulable: false,
                    data_dir: "/var/lib/rancher/k3s".into(),
                })
                .collect(),
            suc_installed: true,
            plans: Vec::<PlanState>::new(),
            ..Observed::default()
        }
    }

    /// The system-upgrade-controller between two looks: one node (servers first) reaches the
    /// Plans' version, unless the Plans are held.
    fn upgrade_one_node(&mut self) {
        let (Some(target), false) = (self.plan.clone(), self.held) else {
            return;
        };
        if let Some(i) = self.nodes.iter().position(|n| *n != target) {
            self.nodes[i] = target;
            if self.fail_next && !NODES[i].1 {
                self.ready[i] = false;
                self.fail_next = false;
            }
        }
    }

    /// One look at the rollout (created when versions.yaml asks for what does not run).
    fn look(&mut self, saved: bool) -> Result<(), String> {
        self.upgrade_one_node();
        let running = self.running();
        if self
            .rollout
            .as_ref()
            .is_none_or(|(_, s, _, _)| s.to != self.desired.to_string())
            && running < self.desired
        {
            // The spec: the legal path through the known releases, as `apply` builds it.
            let known: Vec<Version> = self.releases.iter().map(|r| r.version.clone()).collect();
            let rule = k3s(&self.desired, self.cfg.max_minor_step).path_rule;
            let hops = match versions::check_hop(&running, &self.desired, &rule) {
                Ok(()) => vec![self.desired.clone()],
                Err(_) => match versions::plan_path(&running, &self.desired, &known, &rule) {
                    Ok(p) if !p.is_empty() => p,
                    _ => return Ok(()),
                },
            };
            let mut prev = running.clone();
            for h in &hops {
                versions::check_hop(&prev, h, &rule)
                    .map_err(|e| format!("the path {prev} -> {h} skips: {e}"))?;
                prev = h.clone();
            }
            let name = rollout::rollout_name("k3s", &self.desired.to_string());
            let spec = RolloutSpec {
                component: "k3s".into(),
                from: running.to_string(),
                to: self.desired.to_string(),
                hops: hops.iter().map(ToString::to_string).collect(),
                pull_request: self.pulls.iter().find(|p| p.merged).map(|p| p.number),
                emergency: self.emergency,
            };
            self.rollout = Some((name, spec, RolloutStatus::default(), self.now));
        }
        let Some((name, mut spec, status, created)) = self.rollout.clone() else {
            return Ok(());
        };
        if status.phase.is_terminal() {
            return Ok(());
        }
        spec.emergency |= self.emergency;
        let decision = windows::decide_now(
            self.now,
            "k3s",
            &self.cfg.windows,
            &self.cfg.freezes,
            Override {
                emergency: spec.emergency,
                bypass_freezes: false,
            },
        );
        let may_start = decision.allows_start();
        let component = k3s(&self.desired, self.cfg.max_minor_step);
        let observed = self.observed();
        let attempt = rollout::backup_name(&name, created);
        let ctx = Ctx {
            now: self.now,
            created,
            component: &component,
            observed: &observed,
            may_start,
            waiting: "waiting".into(),
            backup: true,
            backup_state: if self.backups.contains(&attempt) {
                BackupState::Ready(attempt.clone())
            } else {
                BackupState::Pending
            },
            timeout: Duration::minutes(60),
            preflight: upkeep::validate::PreflightPolicy {
                allow_degraded_volumes: false,
                drain: true,
            },
            extra_checks: if self.regress_next > 0
                && matches!(status.phase, Phase::Validating | Phase::Soaking)
            {
                vec![upkeep::validate::Finding {
                    check: "errors".into(),
                    ok: false,
                    detail: "rate = 0.2 (wanted <= 0.01)".into(),
                }]
            } else {
                Vec::new()
            },
            soak: self.cfg.soak,
        };
        let (next, effects) = rollout::decide(&name, &spec, &status, &ctx);
        if saved && matches!(status.phase, Phase::Validating | Phase::Soaking) {
            self.regress_next = self.regress_next.saturating_sub(1);
        }

        // Succeeded means soaked: with a soak, only from Soaking, once it has run its course.
        let soak_on = self.cfg.soak.duration > Duration::zero();
        if next.phase == Phase::Succeeded && status.phase != Phase::Succeeded && soak_on {
            let done = status.phase == Phase::Soaking
                && status.soak.as_ref().is_some_and(|k| k.until <= self.now);
            if !done {
                return Err(format!(
                    "{name} succeeded from {:?} at {} without soaking {:?}",
                    status.phase, self.now, status.soak
                ));
            }
        }
        // The next hop waits for the soak.
        if status.phase == Phase::Soaking
            && effects.iter().any(|e| matches!(e, Effect::Apply { .. }))
            && status.soak.as_ref().is_some_and(|k| k.until > self.now)
            && next.phase != Phase::Failed
        {
            return Err(format!(
                "{name} applied the next hop mid-soak at {}",
                self.now
            ));
        }
        // A regression with `attention` changes nothing.
        if status.phase == Phase::Soaking
            && next.phase == Phase::RequiresAttention
            && effects
                .iter()
                .any(|e| matches!(e, Effect::Apply { .. } | Effect::Revert { .. }))
        {
            return Err(format!(
                "{name} changed something after a soak regression: {effects:?}"
            ));
        }

        // Never start outside a window or in a freeze.
        let started = matches!(status.phase, Phase::Pending | Phase::WaitingForWindow)
            && !matches!(next.phase, Phase::Pending | Phase::WaitingForWindow);
        if started && !may_start {
            return Err(format!(
                "{name} went {:?} -> {:?} at {} with no window open ({decision:?})",
                status.phase, next.phase, self.now
            ));
        }
        let frozen = self
            .cfg
            .freezes
            .iter()
            .any(|f| f.from <= self.now && self.now < f.to);
        for fx in &effects {
            match fx {
                Effect::Apply { version } => {
                    if !may_start {
                        return Err(format!(
                            "{name} applied {version} outside a window at {}",
                            self.now
                        ));
                    }
                    if frozen {
                        return Err(format!(
                            "{name} applied {version} in a freeze at {}",
                            self.now
                        ));
                    }
                    if !spec.hops.contains(version) {
                        return Err(format!("{name} applied {version}, not a hop of its path"));
                    }
                    if v(version) < running {
                        return Err(format!(
                            "{name} applied {version} below what runs ({running})"
                        ));
                    }
                    // The Plans now upgrade to it, a node per look.
                    self.plan = Some(version.clone());
                    self.held = false;
                }
                Effect::Pause | Effect::Halt => self.held = true,
                Effect::Backup { name: b } => {
                    if !may_start {
                        return Err(format!("{name} took a backup outside a window"));
                    }
                    self.backups.insert(b.clone());
                }
                // Reported once: the status remembers what was posted.
                Effect::Comment { key, .. }
                    if saved && !self.posted.insert((name.clone(), key.clone())) =>
                {
                    return Err(format!("{name} reported `{key}` twice"));
                }
                Effect::Revert { version, .. } if saved => {
                    if v(version) > self.desired {
                        return Err(format!("a revert to {version} moved versions.yaml up"));
                    }
                    self.desired = v(version);
                }
                _ => {}
            }
        }
        if saved {
            self.log.push(format!("{name} {:?}", next.phase));
            if let Some(r) = self.rollout.as_mut() {
                r.2 = next;
            }
            // A node that never came back is replaced by a human once the rollout ended.
            if self
                .rollout
                .as_ref()
                .is_some_and(|r| r.2.phase.is_terminal())
            {
                self.ready = vec![true; NODES.len()];
            }
        }
        Ok(())
    }

    fn step(&mut self, e: Event) -> Result<(), String> {
        match e {
            Event::Wait(m) => self.now += Duration::minutes(i64::from(m)),
            Event::Publish(k) => self.publish(k),
            Event::Propose => self.propose()?,
            Event::Merge(n) => self.merge(n),
            Event::Close(n) => self.close(n),
            Event::Emergency => self.emergency = true,
            Event::Look => self.look(true)?,
            Event::LookLost => self.look(false)?,
            Event::NodeFails => self.fail_next = true,
            // A regression lasts two looks (one failed look is a blip).
            Event::Regress => self.regress_next = 2,
        }
        if self.check_windows && matches!(e, Event::Wait(_)) {
            windows_agree(&self.cfg, self.now)?;
        }
        // versions.yaml never goes down except by a revert, and the cluster never downgrades.
        Ok(())
    }
}

/// `next_start` and `decide_now` agree: the instant given allows a start, and "now" allows one
/// exactly when `next_start` says now; no start in a freeze or an active deny window.
fn windows_agree(cfg: &Config, now: DateTime<Utc>) -> Result<(), String> {
    let none = Override::default();
    let d = windows::decide_now(now, "k3s", &cfg.windows, &cfg.freezes, none);
    let frozen = cfg.freezes.iter().any(|f| f.from <= now && now < f.to);
    let denied = cfg
        .windows
        .iter()
        .any(|w| w.kind == Kind::Deny && w.is_active(now));
    if d.allows_start() && (frozen || denied) {
        return Err(format!("start allowed at {now} in a freeze or deny window"));
    }
    match windows::next_start(now, "k3s", &cfg.windows, &cfg.freezes, none) {
        Some(t) => {
            if t < now {
                return Err(format!("next start {t} is before {now}"));
            }
            if !windows::decide_now(t, "k3s", &cfg.windows, &cfg.freezes, none).allows_start() {
                return Err(format!("next start {t} does not allow a start"));
            }
            if (t == now) != d.allows_start() {
                return Err(format!(
                    "next start {t} at {now}, but decide_now says {d:?}"
                ));
            }
        }
        None if d.allows_start() => {
            return Err(format!("no next start at {now}, but a start is allowed"));
        }
        None => {}
    }
    Ok(())
}

/// How much of the ground the histories covered (so that a generator gone dull shows).
#[derive(Debug, Default)]
struct Coverage {
    pull_requests: usize,
    merged: usize,
    started: usize,
    succeeded: usize,
    failed: usize,
    reverted: usize,
    paused: usize,
    soaked: usize,
    regressed: usize,
}

/// Run a history; the first broken invariant, with the step it broke at.
fn run(seed: u64, events: &[Event]) -> Result<(), (usize, String)> {
    run_counting(seed, events, &mut Coverage::default())
}

fn run_counting(seed: u64, events: &[Event], cov: &mut Coverage) -> Result<(), (usize, String)> {
    let start: DateTime<Utc> = "2026-11-20T08:00:00Z".parse().unwrap_or_default();
    let mut rng = Rng::new(seed);
    let cfg = config(&mut rng, start);
    let mut w = World::new(cfg, start);
    w.check_windows = seed.is_multiple_of(10);
    for (i, e) in events.iter().enumerate() {
        w.step(*e).map_err(|m| (i, m))?;
    }
    cov.pull_requests += w.pulls.len();
    cov.merged += w.pulls.iter().filter(|p| p.merged).count();
    let reached = |p: &str| w.log.iter().filter(|l| l.ends_with(p)).count();
    cov.started += reached(" Preflight").min(1);
    cov.succeeded += reached(" Succeeded");
    cov.failed += reached(" Failed");
    cov.reverted += reached(" Reverted") + reached(" RequiresAttention");
    cov.paused += w.rollout.as_ref().map_or(0, |r| r.2.pauses as usize);
    cov.soaked += reached(" Soaking");
    cov.regressed += w.rollout.as_ref().map_or(0, |r| {
        usize::from(r.2.soak.as_ref().is_some_and(|k| k.regression.is_some()))
    });
    Ok(())
}

fn history(seed: u64) -> Vec<Event> {
    let mut rng = Rng::new(seed ^ 0xA5A5_5A5A);
    let n = 5 + rng.below(40);
    (0..n).map(|_| event(&mut rng)).collect()
}

/// The smallest history (events removed one chunk, then one event, at a time) that still fails.
fn shrink(seed: u64, events: Vec<Event>) -> Vec<Event> {
    shrink_while(events, |fewer| run(seed, fewer).is_err())
}

/// Remove events (halving chunks down to single events) as long as `fails` still holds.
fn shrink_while(mut events: Vec<Event>, fails: impl Fn(&[Event]) -> bool) -> Vec<Event> {
    let mut chunk = events.len() / 2;
    while chunk >= 1 {
        let mut i = 0;
        while i + chunk <= events.len() {
            let mut fewer = events.clone();
            fewer.drain(i..i + chunk);
            if fails(&fewer) {
                events = fewer;
            } else {
                i += 1;
            }
        }
        chunk /= 2;
    }
    events
}

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.replace(['_', ','], "").parse().ok())
        .unwrap_or(default)
}

#[test]
fn the_safety_promise_holds_over_random_histories() {
    let count = env("UPKEEP_PROPERTY_HISTORIES", 100_000);
    let first = env("UPKEEP_PROPERTY_SEED", 1);
    let mut steps = 0usize;
    let mut cov = Coverage::default();
    for seed in first..first + count {
        let events = history(seed);
        steps += events.len();
        if let Err((at, why)) = run_counting(seed, &events, &mut cov) {
            let small = shrink(seed, events);
            let (at_small, why_small) = run(seed, &small).err().unwrap_or((at, why.clone()));
            let start: DateTime<Utc> = "2026-11-20T08:00:00Z".parse().unwrap_or_default();
            panic!(
                "seed {seed}: {why} (at step {at})\nshrunk to {} events, failing at step {at_small}: {why_small}\nconfig: {:#?}\nevents: {small:?}\nreplay: UPKEEP_PROPERTY_SEED={seed} UPKEEP_PROPERTY_HISTORIES=1 cargo test --test properties",
                small.len(),
                config(&mut Rng::new(seed), start),
            );
        }
    }
    println!("{count} histories, {steps} steps, every invariant held; {cov:?}");
    // The generator reaches the interesting places (not a proof, a smoke alarm).
    if count >= 10_000 {
        for (what, n) in [
            ("merged pull requests", cov.merged),
            ("rollouts started", cov.started),
            ("rollouts succeeded", cov.succeeded),
            ("rollouts failed", cov.failed),
            ("windows closing mid-rollout", cov.paused),
        ] {
            assert!(
                n as u64 >= count / 1000,
                "only {n} {what} in {count} histories: {cov:?}"
            );
        }
    }
}

/// The shrinker finds a small reproduction: a deliberately broken invariant (no rollout may
/// ever reach Preflight) fails within a few events.
#[test]
fn a_failure_is_shrunk_to_a_few_events() {
    let broken = |seed: u64, events: &[Event]| -> bool {
        let start: DateTime<Utc> = "2026-11-20T08:00:00Z".parse().unwrap_or_default();
        let mut rng = Rng::new(seed);
        let mut w = World::new(config(&mut rng, start), start);
        for e in events {
            let _ = w.step(*e);
            if w.log.iter().any(|l| l.ends_with("Preflight")) {
                return true;
            }
        }
        false
    };
    let (seed, events) = (1..10_000u64)
        .map(|s| (s, history(s)))
        .find(|(s, e)| broken(*s, e))
        .expect("some history reaches Preflight");
    let small = shrink_while(events.clone(), |fewer| broken(seed, fewer));
    assert!(small.len() <= 8 && small.len() < events.len(), "{small:?}");
    assert!(small.contains(&Event::Propose) || small.iter().any(|e| matches!(e, Event::Merge(_))));
}
