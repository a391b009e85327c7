//! The rollout of one component from what runs to what versions.yaml asks, as a persisted state
//! machine:
//!
//! `Pending -> WaitingForWindow -> Preflight -> Backup -> Applying -> Validating -> Soaking ->
//! Succeeded`, or `-> Failed -> Reverting -> Reverted`, or `RequiresAttention` where a machine
//! must not decide. A soak regression leads to `RequiresAttention`, or (policy `rollback`, where
//! the component can go back) to `Failed`.
//!
//! [`decide`] is pure: the rollout's spec and status and what the cluster shows now in, the next
//! status and the effects to carry out out. Every effect is idempotent (server-side apply, named
//! objects, keyed comments, a revert that checks the base branch first), so a controller killed
//! at any point and started again never applies twice, never takes two backups and never posts a
//! comment twice.

use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::cluster::{Observed, Running};
use crate::model::Component;
use crate::validate::{Finding, PreflightPolicy, preflight};
use crate::versions::{self, Downgrade, Version};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema, Default)]
pub enum Phase {
    #[default]
    Pending,
    WaitingForWindow,
    Preflight,
    Backup,
    Applying,
    Validating,
    /// Validated; the checks keep running for the policy's soak before the next hop starts or
    /// the rollout counts as `Succeeded` (which means soaked).
    Soaking,
    Succeeded,
    Failed,
    Reverting,
    Reverted,
    RequiresAttention,
    /// versions.yaml moved on (a newer version was merged, or the change was undone) before
    /// this rollout finished: it stopped where it was, and the rollout of what versions.yaml
    /// asks for now takes over from what the cluster runs.
    Superseded,
}

impl Phase {
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            Phase::Succeeded | Phase::Reverted | Phase::RequiresAttention | Phase::Superseded
        )
    }

    /// Whether a rollout in this phase has the cluster to itself: upkeep rolls out one
    /// component at a time, so that one rollout's validation never judges the cluster while
    /// another moves it (a Longhorn upgrade mid-way failing a Flux rollout, a volume degraded
    /// by one failing the other's baseline).
    pub fn holds_the_cluster(self) -> bool {
        matches!(
            self,
            Phase::Preflight
                | Phase::Backup
                | Phase::Applying
                | Phase::Validating
                | Phase::Soaking
                | Phase::Failed
                | Phase::Reverting
        )
    }
}

/// What a rollout waits for while `other` holds the cluster.
pub fn turn_text(other: &str) -> String {
    format!("waiting for rollout {other} to finish: upkeep rolls out one component at a time")
}

/// The end of a rollout that versions.yaml no longer asks for (`now_asks`: the version it asks
/// for now): it stops where it is, says so on its pull request, and the rollout of `now_asks`
/// (if that does not run yet) takes over from what the cluster runs. Nothing is undone: what
/// this rollout applied stays, and git already says where to go.
pub fn supersede(
    name: &str,
    spec: &RolloutSpec,
    st: &RolloutStatus,
    now_asks: &str,
    now: DateTime<Utc>,
) -> (RolloutStatus, Vec<Effect>) {
    let mut s = st.clone();
    let was = format!("{:?}", st.phase);
    set(
        &mut s,
        Phase::Superseded,
        format!(
            "superseded while {was}: versions.yaml now asks for {} {now_asks}",
            spec.component
        ),
        now,
    );
    // k3s under way: its Plans start no further node (the node in progress finishes), so
    // that the newer rollout takes the remaining nodes straight to the newer version.
    let mut fx = if spec.component == "k3s" && st.phase == Phase::Applying {
        vec![Effect::Pause]
    } else {
        Vec::new()
    };
    let key = "superseded";
    if spec.pull_request.is_some() && !s.posted.iter().any(|k| k == key) {
        fx.push(Effect::Comment {
            key: key.into(),
            body: format!(
                "{}\n**Superseded.** versions.yaml now asks for {} {now_asks}, so this rollout of {} stopped while it was {was} ({}). What it applied stays (a node being upgraded finishes); the rollout of {now_asks} takes over from what the cluster runs, and reports on its own pull request.",
                marker(name, key),
                spec.component,
                spec.to,
                st.message
            ),
        });
        s.posted.push(key.into());
    }
    (s, fx)
}

/// The custom resource's API group, version, kind and plural. The kind is `UpkeepRollout`, not
/// `Rollout`: Argo Rollouts serves `rollouts` too, and `kubectl get rollouts` would be ambiguous
/// where both run. Short name `ukr`, category `upkeep` (`kubectl get upkeep`).
pub const GROUP: &str = "upkeep.dev";
pub const VERSION: &str = "v1alpha1";
pub const KIND: &str = "UpkeepRollout";
pub const PLURAL: &str = "upkeeprollouts";
pub const CRD_NAME: &str = "upkeeprollouts.upkeep.dev";
/// The CRD of upkeep before the rename (kind `Rollout`); its objects are migrated.
pub const OLD_KIND: &str = "Rollout";
pub const OLD_PLURAL: &str = "rollouts";
pub const OLD_CRD_NAME: &str = "rollouts.upkeep.dev";

/// What a rollout is asked to do (the custom resource's spec).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema, kube::CustomResource)]
#[kube(
    group = "upkeep.dev",
    version = "v1alpha1",
    kind = "UpkeepRollout",
    plural = "upkeeprollouts",
    singular = "upkeeprollout",
    shortname = "ukr",
    category = "upkeep",
    namespaced,
    status = "RolloutStatus",
    printcolumn = r#"{"name": "Component", "type": "string", "jsonPath": ".spec.component"}"#,
    printcolumn = r#"{"name": "From", "type": "string", "jsonPath": ".spec.from"}"#,
    printcolumn = r#"{"name": "To", "type": "string", "jsonPath": ".spec.to"}"#,
    printcolumn = r#"{"name": "Phase", "type": "string", "jsonPath": ".status.phase"}"#,
    printcolumn = r#"{"name": "Ready", "type": "string", "jsonPath": ".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name": "Message", "type": "string", "jsonPath": ".status.message", "priority": 0}"#,
    printcolumn = r#"{"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct RolloutSpec {
    pub component: String,
    /// What ran when the rollout was created.
    pub from: String,
    /// What versions.yaml asks for.
    pub to: String,
    /// The legal hops from `from` to `to`, ending with `to`.
    pub hops: Vec<String>,
    /// The merged pull request that asked for it, for reports.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pull_request: Option<u64>,
    /// Apply outside windows (an emergency label on the merged PR).
    #[serde(default)]
    pub emergency: bool,
}

/// One node's result, for the report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NodeResult {
    pub name: String,
    pub version: String,
    pub ready: bool,
    /// Each upgrade of this node the rollout saw finish (k3s: from its SUC Job), kept after
    /// the Job is gone.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub upgrades: Vec<NodeUpgrade>,
}

/// One node's upgrade to one hop.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NodeUpgrade {
    pub version: String,
    pub started: DateTime<Utc>,
    pub finished: DateTime<Utc>,
}

impl NodeResult {
    /// Seconds this node spent upgrading, over every hop.
    pub fn upgrade_seconds(&self) -> Option<i64> {
        (!self.upgrades.is_empty()).then(|| {
            self.upgrades
                .iter()
                .map(|u| (u.finished - u.started).num_seconds())
                .sum()
        })
    }
}

/// The nodes as `o` shows them, with each upgrade to a hop of `spec` that finished: from the
/// upgrade Jobs while they exist, from `before` (what the status kept) once their TTL ran out.
fn node_results(spec: &RolloutSpec, before: &[NodeResult], o: &Observed) -> Vec<NodeResult> {
    o.nodes
        .iter()
        .map(|n| {
            let mut upgrades = before
                .iter()
                .find(|b| b.name == n.name)
                .map(|b| b.upgrades.clone())
                .unwrap_or_default();
            for hop in &spec.hops {
                let dash = hop.replace('+', "-");
                let done = o
                    .upgrade_jobs
                    .iter()
                    .filter(|j| j.node == n.name && j.version == dash && !j.failed)
                    .find_map(|j| Some((j.started?, j.completed?)));
                if let Some((started, finished)) = done
                    && !upgrades.iter().any(|u| u.version == *hop)
                {
                    upgrades.push(NodeUpgrade {
                        version: hop.clone(),
                        started,
                        finished,
                    });
                }
            }
            NodeResult {
                name: n.name.clone(),
                version: n.version.clone(),
                ready: n.ready,
                upgrades,
            }
        })
        .collect()
}

/// What the cluster looked like before the first change: validation compares with it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Baseline {
    pub ready_nodes: Vec<String>,
    /// `Kind/namespace/name` of the Flux objects that were Ready.
    pub ready_objects: Vec<String>,
    /// Volume name -> robustness.
    #[serde(default, deserialize_with = "volumes_map")]
    pub volumes: std::collections::BTreeMap<String, String>,
}

/// Volumes as a map, also from the list of pairs earlier versions stored.
fn volumes_map<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<std::collections::BTreeMap<String, String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Either {
        Map(std::collections::BTreeMap<String, String>),
        Pairs(Vec<(String, String)>),
    }
    Ok(match Either::deserialize(d)? {
        Either::Map(m) => m,
        Either::Pairs(p) => p.into_iter().collect(),
    })
}

/// A condition in the standard Kubernetes shape (`metav1.Condition`), so that `kubectl wait
/// --for=condition=Ready`, kstatus and Flux's health checks can read a rollout.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Condition {
    /// `Ready`, `Reconciling` or `Stalled`.
    #[serde(rename = "type")]
    pub type_: String,
    /// `True`, `False` or `Unknown`.
    pub status: String,
    /// The phase, in CamelCase.
    pub reason: String,
    pub message: String,
    pub last_transition_time: DateTime<Utc>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}

/// The conditions of a rollout in `status` (kstatus' reading): `Ready` is True once it
/// succeeded; `Reconciling` is True while it is under way or waiting; `Stalled` is True when it
/// failed, was reverted or needs a human. A condition keeps its `lastTransitionTime` while its
/// status stays the same.
pub fn conditions(
    status: &RolloutStatus,
    generation: Option<i64>,
    now: DateTime<Utc>,
) -> Vec<Condition> {
    let phase = status.phase;
    let failed = matches!(
        phase,
        Phase::Failed | Phase::Reverted | Phase::RequiresAttention | Phase::Reverting
    );
    let want = [
        ("Ready", phase == Phase::Succeeded),
        ("Reconciling", !phase.is_terminal() && !failed),
        ("Stalled", failed),
    ];
    want.iter()
        .map(|(t, on)| {
            let value = if *on { "True" } else { "False" };
            let since = status
                .conditions
                .iter()
                .find(|c| c.type_ == *t && c.status == value)
                .map_or(now, |c| c.last_transition_time);
            Condition {
                type_: (*t).to_string(),
                status: value.to_string(),
                reason: format!("{phase:?}"),
                message: status.message.clone(),
                last_transition_time: since,
                observed_generation: generation,
            }
        })
        .collect()
}

/// Where the rollout stands (the custom resource's status).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RolloutStatus {
    pub phase: Phase,
    /// The hop being applied (index into `spec.hops`).
    #[serde(default)]
    pub hop: usize,
    #[serde(default)]
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase_since: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub baseline: Option<Baseline>,
    /// The backup's name (an etcd snapshot, a Longhorn backup), once taken.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup: Option<String>,
    /// The backup being taken: a name unique to this attempt, so that a retried rollout never
    /// counts an older snapshot as its own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup_attempt: Option<String>,
    /// Why no backup was taken although backups are on (k3s without embedded etcd).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub no_backup: Option<String>,
    /// The checks of the last preflight or validation.
    #[serde(default)]
    pub checks: Vec<Finding>,
    #[serde(default)]
    pub nodes: Vec<NodeResult>,
    /// Why it failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure: Option<String>,
    /// The revert commit (or revert PR) made after a failure.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revert: Option<String>,
    /// Comments already posted, by key.
    #[serde(default)]
    pub posted: Vec<String>,
    /// The window closed mid-rollout: nodes in progress finish, no new node starts.
    #[serde(default)]
    pub paused: bool,
    /// How many times the rollout was paused by a closing window.
    #[serde(default)]
    pub pauses: u32,
    /// `Ready`, `Reconciling` and `Stalled`, from the phase (see [`conditions`]).
    #[serde(default)]
    pub conditions: Vec<Condition>,
    /// The `metadata.generation` of the spec this status was written for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// The soak of the last hop validated: when it started and ends, and how it went.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub soak: Option<Soak>,
    /// Maintenance mode around this rollout (policy `maintenance:`): what was scaled down and
    /// marked, and when it came back.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub maintenance: Option<crate::maintenance::Record>,
}

impl RolloutStatus {
    /// Whether this rollout has the cluster in maintenance now.
    pub fn in_maintenance(&self) -> bool {
        self.maintenance
            .as_ref()
            .is_some_and(|m| m.restored_at.is_none())
    }
}

/// How a soak stands.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Soak {
    /// The hop it watches (index into `spec.hops`).
    pub hop: usize,
    pub since: DateTime<Utc>,
    pub until: DateTime<Utc>,
    /// How many times the checks ran.
    #[serde(default)]
    pub looks: u32,
    /// How many looks in a row a check failed at (a regression at [`SOAK_FAILING_LOOKS`]).
    #[serde(default)]
    pub failing: u32,
    /// What regressed, if anything did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub regression: Option<String>,
}

/// How many looks in a row a check must fail at to be a regression: one failed look may be a
/// blip (a pod rescheduling, Prometheus restarting).
pub const SOAK_FAILING_LOOKS: u32 = 2;

impl Soak {
    /// The soak's result in words, for history and reports.
    pub fn result(&self) -> String {
        match &self.regression {
            Some(r) => format!("regressed: {r}"),
            None => format!(
                "{} checks over {}",
                self.looks,
                span_text(self.until - self.since)
            ),
        }
    }
}

/// A duration in the words a policy writes it: `24h`, `90m`, `2d`, `1h30m`.
pub fn span_text(d: chrono::Duration) -> String {
    let s = d.num_seconds().max(0);
    if s == 0 {
        return "0".into();
    }
    let (days, h, m, sec) = (s / 86_400, s % 86_400 / 3600, s % 3600 / 60, s % 60);
    if h == 0 && m == 0 && sec == 0 && days > 1 {
        return format!("{days}d");
    }
    let mut out = String::new();
    let hours = days * 24 + h;
    if hours > 0 {
        out.push_str(&format!("{hours}h"));
    }
    if m > 0 {
        out.push_str(&format!("{m}m"));
    }
    if sec > 0 {
        out.push_str(&format!("{sec}s"));
    }
    out
}

/// Something to do in the world.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effect {
    /// Take the backup named `name` (k3s: an etcd snapshot Job; Longhorn: a SystemBackup).
    Backup { name: String },
    /// Apply `version` of the component (SUC Plans, the HelmRelease's chart version, the
    /// FluxInstance's distribution version), server-side, as field manager `upkeep`.
    Apply { version: String },
    /// After a failure: start no further node (SUC Plans at `concurrency: 0`); nodes in
    /// progress finish.
    Halt,
    /// Once nothing is in progress after a halt: drop the failed nodes from upkeep's Plans (so
    /// SUC stops retrying them) and uncordon what the rollout cordoned.
    Release,
    /// The window closed: start no new node (nodes in progress finish); resumed by `Apply`.
    Pause,
    /// Uncordon the nodes the rollout left cordoned.
    Uncordon,
    /// Commit versions.yaml back to `version` on the base branch (a PR if the push is refused).
    Revert { version: String, message: String },
    /// Post a comment on the merged PR, once per key.
    Comment { key: String, body: String },
}

/// What [`decide`] knows besides the rollout.
pub struct Ctx<'a> {
    pub now: DateTime<Utc>,
    /// When the Rollout object was created: it names the backup, so that a restart between
    /// an effect and the saving of the status names the same backup, and a Rollout created
    /// again (a retry) takes a new one.
    pub created: DateTime<Utc>,
    pub component: &'a Component,
    pub observed: &'a Observed,
    /// Whether work may start now: a window is open, no window covers the component, or an
    /// emergency goes outside windows (never through a freeze unless policy says so).
    pub may_start: bool,
    /// What to say while waiting (the next window).
    pub waiting: String,
    /// Take backups before applying.
    pub backup: bool,
    /// How the backup of this attempt stands (looked up only in the Backup phase).
    pub backup_state: BackupState,
    /// How long one hop may take before it counts as failed.
    pub timeout: chrono::Duration,
    pub preflight: PreflightPolicy,
    /// The results of the policy's checks (HTTP, Prometheus), run by the caller in Validating
    /// (those `during: validation`) and in Soaking (those `during: soak`).
    pub extra_checks: Vec<Finding>,
    /// How long a validated hop soaks, and what a regression leads to.
    pub soak: crate::model::SoakPolicy,
}

/// How a backup stands.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum BackupState {
    /// Not taken yet, or still being taken.
    #[default]
    Pending,
    /// Ready: what to call it in reports.
    Ready(String),
    /// It failed (the snapshot Job failed, the backup reports an error): why.
    Failed(String),
}

/// The name of a rollout's backup for the attempt started at `now`: unique per attempt (a
/// rollout deleted and created again takes a new snapshot), at most 63 characters, and
/// ending in the time so that a truncated rollout name stays unique.
pub fn backup_name(rollout: &str, now: DateTime<Utc>) -> String {
    let stamp = now.format("%Y%m%d%H%M%S").to_string();
    let mut head = format!("upkeep-{rollout}");
    head.truncate(63 - stamp.len() - 1);
    format!("{}-{stamp}", head.trim_end_matches(['-', '.']))
}

/// A Kubernetes-safe name for the rollout of `component` to `version`.
pub fn rollout_name(component: &str, version: &str) -> String {
    let v: String = version
        .to_lowercase()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' {
                c
            } else {
                '-'
            }
        })
        .collect();
    format!("{component}-{}", v.trim_matches('-'))
}

fn set(status: &mut RolloutStatus, phase: Phase, message: impl Into<String>, now: DateTime<Utc>) {
    if status.phase != phase {
        status.phase_since = Some(now);
    }
    status.phase = phase;
    status.message = message.into();
}

/// Whether the component runs `version` everywhere, healthy.
/// How long after its upgrade Job failed a node may still come back at the new version: the
/// Job often fails as k3s restarts under it, before the kubelet reports the new version.
const JOB_FAILURE_GRACE: i64 = 120;

/// Whether the component runs `version` everywhere, healthy (`Ok(false)`: not yet).
fn reached(
    c: &Component,
    version: &Version,
    o: &Observed,
    now: DateTime<Utc>,
) -> Result<bool, String> {
    match c.name.as_str() {
        "k3s" => {
            // A failed upgrade Job counts only for a node that did not reach the version after
            // the grace: judge by the node, not by the Job.
            let dash = version.to_string().replace('+', "-");
            let failed = o
                .upgrade_jobs
                .iter()
                .filter(|j| j.failed && j.version == dash)
                .filter(|j| {
                    j.completed
                        .is_none_or(|t| (now - t).num_seconds() >= JOB_FAILURE_GRACE)
                })
                .find(|j| {
                    !o.nodes.iter().any(|n| {
                        n.name == j.node
                            && versions::parse(&n.version, c.scheme).ok().as_ref() == Some(version)
                    })
                })
                .map(|j| {
                    let why = o
                        .plans
                        .iter()
                        .filter(|p| p.upkeeps() && p.name == j.plan)
                        .find_map(|p| p.failed.clone())
                        .unwrap_or_else(|| "Job failed".into());
                    format!("{} on {}: {why}", j.plan, j.node)
                });
            let all = !o.nodes.is_empty()
                && o.nodes
                    .iter()
                    .all(|n| versions::parse(&n.version, c.scheme).ok().as_ref() == Some(version));
            if all {
                let not_ready: Vec<&str> = o
                    .nodes
                    .iter()
                    .filter(|n| !n.ready)
                    .map(|n| n.name.as_str())
                    .collect();
                if !not_ready.is_empty() {
                    // A kubelet is NotReady for a moment as k3s restarts: wait out the grace
                    // after that node's upgrade Job ended before calling it a failure.
                    let fresh = not_ready.iter().any(|n| {
                        o.upgrade_jobs.iter().any(|j| {
                            j.node == *n
                                && j.version == dash
                                && j.completed
                                    .is_some_and(|t| (now - t).num_seconds() < JOB_FAILURE_GRACE)
                        })
                    });
                    if fresh {
                        return Ok(false);
                    }
                    return Err(format!("upgraded but not Ready: {}", not_ready.join(", ")));
                }
                return Ok(true);
            }
            match failed {
                Some(f) => Err(format!("an upgrade Job failed: {f}")),
                None => Ok(false),
            }
        }
        name => {
            let h = if name == "flux" {
                o.flux_instances.first()
            } else {
                o.release_of(&c.runs)
            };
            let Some(h) = h else {
                return Err(format!("no {name} release object"));
            };
            // An image's tag for an image component; the chart's or Flux's version otherwise.
            let running = match (&c.runs, o.running(c)) {
                (crate::model::Runs::Image { .. }, Running::At { version }) => {
                    versions::parse(&version, c.scheme).ok()
                }
                (crate::model::Runs::Image { .. }, _) => None,
                _ => h
                    .running
                    .as_deref()
                    .and_then(|v| versions::parse(v, c.scheme).ok()),
            };
            if running.as_ref() == Some(version) && h.ready {
                // Helm is done; Longhorn's own upgrade goes on: its manager rolls out, then
                // writes current-longhorn-version.
                if name == "longhorn" {
                    let manager = o
                        .longhorn_version
                        .as_deref()
                        .and_then(|v| versions::parse(v, c.scheme).ok());
                    return Ok(manager.as_ref() == Some(version)
                        && o.longhorn_manager_rolled_out != Some(false));
                }
                return Ok(true);
            }
            let desired_now = h
                .desired
                .as_deref()
                .map(|d| d.trim_start_matches('v') == version.to_string().trim_start_matches('v'))
                .unwrap_or(false);
            if !h.ready
                && desired_now
                && matches!(
                    h.reason.as_str(),
                    "UpgradeFailed"
                        | "InstallFailed"
                        | "BuildFailed"
                        | "ReconciliationFailed"
                        | "HealthCheckFailed"
                        | "RollbackSucceeded"
                )
            {
                return Err(format!("{} {}: {}", h.kind, h.reason, h.message));
            }
            Ok(false)
        }
    }
}

/// Validation against the baseline, once the component reports the hop: nodes, Flux objects and
/// volumes that were healthy are healthy.
fn validate(b: &Baseline, o: &Observed) -> Vec<Finding> {
    let mut f = Vec::new();
    let lost: Vec<&String> = b
        .ready_nodes
        .iter()
        .filter(|n| !o.nodes.iter().any(|x| &&x.name == n && x.ready))
        .collect();
    f.push(Finding {
        check: "nodes Ready".into(),
        ok: lost.is_empty(),
        detail: if lost.is_empty() {
            "every node that was Ready is Ready".into()
        } else {
            format!("no longer Ready: {}", join(&lost))
        },
    });
    let objects: Vec<String> = o
        .helm_releases
        .iter()
        .chain(&o.kustomizations)
        .chain(&o.flux_instances)
        .filter(|h| h.ready)
        .map(|h| format!("{}/{}/{}", h.kind, h.namespace, h.name))
        .collect();
    let lost: Vec<&String> = b
        .ready_objects
        .iter()
        .filter(|x| !objects.contains(x))
        .collect();
    f.push(Finding {
        check: "Flux objects Ready".into(),
        ok: lost.is_empty(),
        detail: if lost.is_empty() {
            format!(
                "{} Kustomizations, HelmReleases and FluxInstances Ready as before",
                b.ready_objects.len()
            )
        } else {
            format!("no longer Ready: {}", join(&lost))
        },
    });
    let rank = |r: &str| match r {
        "healthy" => 3,
        "degraded" => 2,
        "unknown" => 1,
        _ => 0,
    };
    let worse: Vec<String> = b
        .volumes
        .iter()
        .filter_map(|(name, was)| {
            let seen = o.volumes.iter().find(|v| &v.name == name);
            // Longhorn reports a detached volume's robustness as `unknown` (its workload is
            // scaled down, by maintenance mode say): that is not a loss of replicas.
            if seen.is_some_and(|v| v.state == "detached") {
                return None;
            }
            let now = seen.map_or("missing", |v| v.robustness.as_str());
            (rank(now) < rank(was)).then(|| format!("{name} {was} -> {now}"))
        })
        .collect();
    f.push(Finding {
        check: "volumes".into(),
        ok: worse.is_empty(),
        detail: if worse.is_empty() {
            format!("{} Longhorn volumes as robust as before", b.volumes.len())
        } else {
            format!("less robust: {}", worse.join(", "))
        },
    });
    f
}

fn join(v: &[&String]) -> String {
    v.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", ")
}

pub fn baseline(o: &Observed) -> Baseline {
    Baseline {
        ready_nodes: o
            .nodes
            .iter()
            .filter(|n| n.ready)
            .map(|n| n.name.clone())
            .collect(),
        ready_objects: o
            .helm_releases
            .iter()
            .chain(&o.kustomizations)
            .chain(&o.flux_instances)
            .filter(|h| h.ready)
            .map(|h| format!("{}/{}/{}", h.kind, h.namespace, h.name))
            .collect(),
        volumes: o
            .volumes
            .iter()
            .map(|v| (v.name.clone(), v.robustness.clone()))
            .collect(),
    }
}

fn marker(rollout: &str, key: &str) -> String {
    format!("<!-- upkeep:rollout={rollout} key={key} -->")
}

/// The next status and the effects to carry out. `name` is the rollout's name.
pub fn decide(
    name: &str,
    spec: &RolloutSpec,
    st: &RolloutStatus,
    ctx: &Ctx,
) -> (RolloutStatus, Vec<Effect>) {
    let mut s = st.clone();
    let mut fx = Vec::new();
    let now = ctx.now;
    let c = ctx.component;
    let hop_version = spec
        .hops
        .get(s.hop)
        .cloned()
        .unwrap_or_else(|| spec.to.clone());
    let hop = versions::parse(&hop_version, c.scheme);
    let comment = |s: &mut RolloutStatus, fx: &mut Vec<Effect>, key: &str, body: String| {
        if spec.pull_request.is_some() && !s.posted.iter().any(|k| k == key) {
            fx.push(Effect::Comment {
                key: key.to_string(),
                body: format!("{}\n{body}", marker(name, key)),
            });
            s.posted.push(key.to_string());
        }
    };
    s.nodes = node_results(spec, &st.nodes, ctx.observed);
    match st.phase {
        Phase::Pending => {
            s.started_at = Some(now);
            let msg = if ctx.may_start {
                "a window is open".to_string()
            } else {
                ctx.waiting.clone()
            };
            set(&mut s, Phase::WaitingForWindow, msg, now);
        }
        Phase::WaitingForWindow => {
            if ctx.may_start {
                set(
                    &mut s,
                    Phase::Preflight,
                    "running the preflight checks",
                    now,
                );
            } else {
                s.message = ctx.waiting.clone();
            }
        }
        Phase::Preflight => {
            let Ok(target) = hop else {
                set(
                    &mut s,
                    Phase::RequiresAttention,
                    format!("{hop_version} is not a {} version", c.scheme),
                    now,
                );
                return (s, fx);
            };
            if !(ctx.may_start) {
                set(&mut s, Phase::WaitingForWindow, ctx.waiting.clone(), now);
                return (s, fx);
            }
            // The hop was applied already (upkeep stopped after applying it and before saving
            // that): carry on applying rather than judge the cluster mid-upgrade as a start.
            if already_applied(c, &hop_version, ctx.observed) {
                set(
                    &mut s,
                    Phase::Applying,
                    format!("applying {hop_version} (resumed: it was applied before a restart)"),
                    now,
                );
                fx.push(Effect::Apply {
                    version: hop_version.clone(),
                });
                return (s, fx);
            }
            let verdict = preflight(c, &target, ctx.observed, ctx.preflight);
            s.checks = verdict.findings.clone();
            if verdict.ok {
                if s.baseline.is_none() {
                    s.baseline = Some(baseline(ctx.observed));
                }
                let needs_backup =
                    ctx.backup && s.backup.is_none() && backup_applies(c, ctx.observed);
                if ctx.backup && c.name == "k3s" && !backup_applies(c, ctx.observed) {
                    s.checks.push(Finding {
                        check: "backup".into(),
                        ok: true,
                        detail: NO_DATASTORE_BACKUP.into(),
                    });
                    s.no_backup = Some(NO_DATASTORE_BACKUP.into());
                }
                if needs_backup {
                    let attempt = backup_name(name, ctx.created);
                    set(
                        &mut s,
                        Phase::Backup,
                        format!("taking the backup {attempt}"),
                        now,
                    );
                    fx.push(Effect::Backup {
                        name: attempt.clone(),
                    });
                    s.backup_attempt = Some(attempt);
                } else {
                    set(
                        &mut s,
                        Phase::Applying,
                        format!("applying {hop_version}"),
                        now,
                    );
                    fx.push(Effect::Apply {
                        version: hop_version.clone(),
                    });
                }
            } else {
                // A failed preflight changes nothing; it is reported once and retried.
                let failed: Vec<String> = verdict
                    .findings
                    .iter()
                    .filter(|f| !f.ok)
                    .map(|f| format!("{}: {}", f.check, f.detail))
                    .collect();
                s.message = format!("preflight failed: {}", failed.join("; "));
                comment(
                    &mut s,
                    &mut fx,
                    "preflight",
                    format!(
                        "**Preflight failed** for {} {}; nothing was changed. upkeep retries in the window.\n\n- {}",
                        c.name,
                        hop_version,
                        failed.join("\n- ")
                    ),
                );
            }
        }
        Phase::Backup => match &ctx.backup_state {
            BackupState::Ready(b) if !ctx.may_start => {
                // The window closed while the backup was taken: keep it, apply in the next.
                s.backup = Some(b.clone());
                set(&mut s, Phase::WaitingForWindow, ctx.waiting.clone(), now);
            }
            BackupState::Ready(b) => {
                s.backup = Some(b.clone());
                set(
                    &mut s,
                    Phase::Applying,
                    format!("applying {hop_version}"),
                    now,
                );
                fx.push(Effect::Apply {
                    version: hop_version.clone(),
                });
            }
            BackupState::Failed(why) => fail(
                &mut s,
                &mut fx,
                spec,
                c,
                format!("the backup failed: {why}"),
                now,
            ),
            BackupState::Pending => {
                if s.phase_since.is_some_and(|t| now - t > ctx.timeout) {
                    fail(
                        &mut s,
                        &mut fx,
                        spec,
                        c,
                        "the backup did not become ready in time",
                        now,
                    );
                } else {
                    // Re-issuing is harmless: the backup is a named object, unique to the attempt.
                    let attempt = s
                        .backup_attempt
                        .clone()
                        .unwrap_or_else(|| backup_name(name, ctx.created));
                    fx.push(Effect::Backup {
                        name: attempt.clone(),
                    });
                    s.backup_attempt = Some(attempt);
                }
            }
        },
        Phase::Applying => {
            let Ok(target) = hop else {
                fail(
                    &mut s,
                    &mut fx,
                    spec,
                    c,
                    format!("{hop_version} is not a version"),
                    now,
                );
                return (s, fx);
            };
            match reached(c, &target, ctx.observed, now) {
                Ok(true) => set(
                    &mut s,
                    Phase::Validating,
                    format!("validating {hop_version}"),
                    now,
                ),
                Ok(false) if c.name == "k3s" && !(ctx.may_start) => {
                    // The window closed mid-rollout: finish the nodes in progress, start no new
                    // node, resume in the next window.
                    if !s.paused {
                        s.paused = true;
                        s.pauses += 1;
                        fx.push(Effect::Pause);
                        let key = format!("paused-{}", s.pauses);
                        let upgraded: Vec<String> = s
                            .nodes
                            .iter()
                            .filter(|n| {
                                versions::parse(&n.version, c.scheme).ok().as_ref() == Some(&target)
                            })
                            .map(|n| n.name.clone())
                            .collect();
                        let body = format!(
                            "**The window closed mid-rollout.** Nodes in progress finish; no new node starts. On {hop_version} so far: {}. upkeep resumes in the next window ({}).",
                            if upgraded.is_empty() {
                                "none".to_string()
                            } else {
                                upgraded.join(", ")
                            },
                            ctx.waiting
                        );
                        comment(&mut s, &mut fx, &key, body);
                    }
                    s.message = format!("paused: the window closed; {}", ctx.waiting);
                }
                Ok(false) if !s.paused && s.phase_since.is_some_and(|t| now - t > ctx.timeout) => {
                    fail(
                        &mut s,
                        &mut fx,
                        spec,
                        c,
                        format!(
                            "{hop_version} was not reached within {}",
                            if ctx.timeout.num_seconds() % 60 == 0 {
                                format!("{} minutes", ctx.timeout.num_minutes())
                            } else {
                                format!("{} seconds", ctx.timeout.num_seconds())
                            }
                        ),
                        now,
                    );
                }
                Ok(false) => {
                    if s.paused {
                        // Resumed in a window: the hop's time starts again.
                        s.paused = false;
                        s.phase_since = Some(now);
                    }
                    // Keep the desired state asserted (idempotent): a restart never applies twice,
                    // it asserts the same version again.
                    fx.push(Effect::Apply {
                        version: hop_version.clone(),
                    });
                    s.message = format!("applying {hop_version}");
                }
                Err(why) => fail(&mut s, &mut fx, spec, c, why, now),
            }
        }
        Phase::Validating => {
            let checks = all_checks(&s, ctx);
            s.checks = checks.clone();
            let last = s.hop + 1 >= spec.hops.len();
            if let Some(bad) = checks.iter().find(|f| !f.ok) {
                fail(
                    &mut s,
                    &mut fx,
                    spec,
                    c,
                    format!("{hop_version} failed validation: {}", bad.detail),
                    now,
                );
            } else if ctx.soak.duration > chrono::Duration::zero() {
                let until = now + ctx.soak.duration;
                s.soak = Some(Soak {
                    hop: s.hop,
                    since: now,
                    until,
                    looks: 0,
                    failing: 0,
                    regression: None,
                });
                set(
                    &mut s,
                    Phase::Soaking,
                    format!(
                        "{hop_version} validated; soaking for {} until {}: the checks keep running",
                        span_text(ctx.soak.duration),
                        until.format("%Y-%m-%d %H:%M UTC")
                    ),
                    now,
                );
                if last {
                    let body = applied_report(spec, &s, ctx, &checks, Some(until));
                    comment(&mut s, &mut fx, "succeeded", body);
                }
            } else {
                next_hop(&mut s, &mut fx, spec, ctx, &hop_version, false);
                if last {
                    let body = applied_report(spec, &s, ctx, &checks, None);
                    comment(&mut s, &mut fx, "succeeded", body);
                }
            }
        }
        Phase::Soaking => {
            let checks = all_checks(&s, ctx);
            s.checks = checks.clone();
            let mut soak = s.soak.clone().unwrap_or(Soak {
                hop: s.hop,
                since: now,
                until: now + ctx.soak.duration,
                looks: 0,
                failing: 0,
                regression: None,
            });
            soak.looks += 1;
            let last = s.hop + 1 >= spec.hops.len();
            let back = last_good(spec, &s);
            let can_go_back = can_go_back(c, &back, &hop_version);
            let rollback =
                ctx.soak.on_regression == crate::model::OnRegression::Rollback && can_go_back;
            let bad = checks.iter().find(|f| !f.ok);
            soak.failing = if bad.is_some() { soak.failing + 1 } else { 0 };
            if soak.regression.is_some() && rollback {
                // Decided already; the rollback is a change, and waits for a window.
                if ctx.may_start {
                    let why = format!(
                        "{hop_version} regressed during the soak: {}",
                        soak.regression.clone().unwrap_or_default()
                    );
                    s.soak = Some(soak);
                    fail(&mut s, &mut fx, spec, c, why, now);
                } else {
                    s.message = format!(
                        "regressed during the soak; rolls back to {back} in the next window: {}",
                        ctx.waiting
                    );
                    s.soak = Some(soak);
                }
            } else if let Some(bad) = bad.filter(|_| soak.failing >= SOAK_FAILING_LOOKS) {
                let why = format!(
                    "{hop_version} regressed during the soak: {}: {}",
                    bad.check, bad.detail
                );
                soak.regression = Some(format!("{}: {}", bad.check, bad.detail));
                let watched = span_text(now - soak.since);
                s.soak = Some(soak);
                let key = format!("soak-regression-{}", s.hop);
                if rollback {
                    let when = if ctx.may_start {
                        "now".to_string()
                    } else {
                        format!("in the next window ({})", ctx.waiting)
                    };
                    comment(
                        &mut s,
                        &mut fx,
                        &key,
                        format!(
                            "**Regression during the soak** of {} {hop_version}, {watched} after it validated: {}: {}\n\nThe policy says `rollback`: upkeep rolls {} back to {back} {when} and reverts versions.yaml.",
                            c.name, bad.check, bad.detail, c.name
                        ),
                    );
                    if ctx.may_start {
                        fail(&mut s, &mut fx, spec, c, why, now);
                    } else {
                        s.message = format!(
                            "regressed during the soak; rolls back to {back} in the next window: {}",
                            ctx.waiting
                        );
                    }
                } else {
                    let outcome = if ctx.soak.on_regression == crate::model::OnRegression::Rollback
                    {
                        format!(
                            "The policy says `rollback`, but {} cannot go back from {hop_version} to {back}, so nothing was changed and versions.yaml still asks for {hop_version}: a human decides (docs/runbook.md).",
                            c.name
                        )
                    } else {
                        "The policy says `attention`: nothing was changed, versions.yaml still asks for it, and a human decides (roll forward with a fix, or revert the version in git where the component can go back; docs/runbook.md).".to_string()
                    };
                    comment(
                        &mut s,
                        &mut fx,
                        &key,
                        format!(
                            "**Regression during the soak, needs a human.** {} {hop_version}, {watched} after it validated: {}: {}\n\n{outcome}",
                            c.name, bad.check, bad.detail
                        ),
                    );
                    s.failure = Some(why.clone());
                    set(&mut s, Phase::RequiresAttention, why, now);
                }
            } else if let Some(bad) = bad {
                // One failed look is not yet a regression (a blip, a pod rescheduling).
                s.message = format!(
                    "soaking {hop_version}: {} failed ({}); a regression if it fails at the next look too",
                    bad.check, bad.detail
                );
                s.soak = Some(soak);
            } else if now >= soak.until {
                s.soak = Some(soak.clone());
                next_hop(&mut s, &mut fx, spec, ctx, &hop_version, true);
                if last {
                    comment(
                        &mut s,
                        &mut fx,
                        "soaked",
                        format!(
                            "**Soaked**: {} {} ran {} with every check passing ({} look{}). The rollout succeeded.",
                            c.name,
                            spec.to,
                            span_text(soak.until - soak.since),
                            soak.looks,
                            if soak.looks == 1 { "" } else { "s" }
                        ),
                    );
                }
            } else {
                s.message = format!(
                    "soaking {hop_version} until {}: {} checks pass",
                    soak.until.format("%Y-%m-%d %H:%M UTC"),
                    checks.len()
                );
                s.soak = Some(soak);
            }
        }
        Phase::Failed => {
            fx.push(Effect::Halt);
            if c.name == "k3s" {
                // Nodes in progress finish (killing a running upgrade Job would leave its node
                // half-done and cordoned); then the failed ones leave upkeep's Plans.
                let busy: Vec<&str> = ctx
                    .observed
                    .upgrade_jobs
                    .iter()
                    .filter(|j| j.active())
                    .map(|j| j.node.as_str())
                    .collect();
                let waited = s.phase_since.is_some_and(|t| now - t > ctx.timeout);
                if !busy.is_empty() && !waited {
                    s.message = format!(
                        "halted: no new node starts; waiting for {} to finish",
                        busy.join(", ")
                    );
                    return (s, fx);
                }
                if busy.is_empty() {
                    fx.push(Effect::Release);
                } else {
                    // Releasing now would make SUC delete those running Jobs: leave the Plans
                    // holding (no new node), the nodes to finish, and a human to look.
                    let why = s.failure.clone().unwrap_or_default();
                    s.failure = Some(format!(
                        "{why}; still upgrading after the halt: {} (the Plans hold; check these nodes)",
                        busy.join(", ")
                    ));
                }
            }
            // Roll back where the component supports it (Flux: a patch within the same minor).
            let back = last_good(spec, &s);
            if can_go_back(c, &back, &hop_version) {
                fx.push(Effect::Apply {
                    version: back.clone(),
                });
                s.message = format!("halted; rolling {} back to {back}", c.name);
            }
            set(
                &mut s,
                Phase::Reverting,
                "halted; reverting versions.yaml",
                now,
            );
        }
        Phase::Reverting => {
            let back_to = last_good(spec, &s);
            let why = s.failure.clone().unwrap_or_default();
            fx.push(Effect::Revert {
                version: back_to.clone(),
                message: format!("revert({}): {} failed: {why}", c.name, hop_version),
            });
            let irreversible = moved(c, ctx.observed, &back_to);
            let facts = s
                .nodes
                .iter()
                .map(|n| {
                    format!(
                        "{} runs {}{}",
                        n.name,
                        n.version,
                        if n.ready { "" } else { " (NotReady)" }
                    )
                })
                .collect::<Vec<_>>()
                .join("; ");
            if irreversible {
                let advice = match c.name.as_str() {
                    "k3s" => format!(
                        "k3s cannot be downgraded in place: the nodes are within the skew rules but mixed ({facts}). Fix the failing node (or restore the etcd snapshot `{}` with `k3s server --cluster-reset --cluster-reset-restore-path=...`), then set versions.yaml to what runs. See docs/runbook.md.",
                        s.backup.clone().unwrap_or_else(|| "none taken".into())
                    ),
                    "longhorn" => format!(
                        "Longhorn cannot be downgraded: check the volumes (`kubectl -n {} get volumes.longhorn.io`), let replicas rebuild, and see docs/runbook.md.",
                        match ctx.observed.longhorn_namespace.as_str() {
                            "" => "longhorn-system",
                            n => n,
                        }
                    ),
                    _ => "see docs/runbook.md.".to_string(),
                };
                set(
                    &mut s,
                    Phase::RequiresAttention,
                    format!("{why}; {advice}"),
                    now,
                );
                comment(
                    &mut s,
                    &mut fx,
                    "attention",
                    format!(
                        "**Failed, and needs a human.** {} {}: {why}\n\n{REVERT_SENTENCE} {advice}",
                        c.name, hop_version
                    ),
                );
            } else {
                // Nothing moved: the release object (or the manifest in git that carries it)
                // goes back to what runs too, or its controller would try the failed version
                // again at its next reconcile, and git would say what does not run. k3s'
                // Plans are held and released instead (a Plan set back would run every node).
                let refused = matches!(
                    ctx.observed.routes.get(&c.name),
                    Some(crate::route::Route::Refused { .. })
                );
                if c.name != "k3s" && !refused {
                    fx.push(Effect::Apply {
                        version: back_to.clone(),
                    });
                }
                set(
                    &mut s,
                    Phase::Reverted,
                    format!("{why}; reverted to {back_to}"),
                    now,
                );
                comment(
                    &mut s,
                    &mut fx,
                    "reverted",
                    format!(
                        "**Failed and reverted.** {} {}: {why}\n\nNothing had moved. {REVERT_SENTENCE}",
                        c.name, hop_version
                    ),
                );
            }
        }
        Phase::Succeeded | Phase::Reverted | Phase::RequiresAttention | Phase::Superseded => {}
    }
    (s, fx)
}

/// After a hop validated (and soaked): the next hop (in the next window when none is open), or
/// `Succeeded`.
fn next_hop(
    s: &mut RolloutStatus,
    fx: &mut Vec<Effect>,
    spec: &RolloutSpec,
    ctx: &Ctx,
    hop_version: &str,
    soaked: bool,
) {
    let now = ctx.now;
    let c = ctx.component;
    if s.hop + 1 < spec.hops.len() && !ctx.may_start {
        s.hop += 1;
        let msg = format!(
            "{} validated; hop {} of {} waits: {}",
            hop_version,
            s.hop + 1,
            spec.hops.len(),
            ctx.waiting
        );
        set(s, Phase::WaitingForWindow, msg, now);
    } else if s.hop + 1 < spec.hops.len() && soaked {
        // A day later the cluster is not the one the last preflight saw: check it again.
        s.hop += 1;
        let msg = format!(
            "hop {} of {}: running the preflight checks",
            s.hop + 1,
            spec.hops.len()
        );
        set(s, Phase::Preflight, msg, now);
    } else if s.hop + 1 < spec.hops.len() {
        s.hop += 1;
        let next = spec.hops[s.hop].clone();
        let msg = format!("applying {next} (hop {} of {})", s.hop + 1, spec.hops.len());
        set(s, Phase::Applying, msg, now);
        fx.push(Effect::Apply { version: next });
    } else {
        set(
            s,
            Phase::Succeeded,
            format!("{} runs {}", c.name, spec.to),
            now,
        );
        // A Job that failed although its node upgraded leaves the node cordoned.
        if ctx.observed.nodes.iter().any(|n| n.unschedulable) && c.name == "k3s" {
            fx.push(Effect::Uncordon);
        }
    }
}

/// The report of the last hop validated: what moved, the backup, the checks, each node (k3s);
/// and, when it soaks, until when.
fn applied_report(
    spec: &RolloutSpec,
    s: &RolloutStatus,
    ctx: &Ctx,
    checks: &[Finding],
    soaks_until: Option<DateTime<Utc>>,
) -> String {
    let now = ctx.now;
    let c = ctx.component;
    let took = s.started_at.map_or(String::new(), |t| {
        format!(" in {} min", (now - t).num_minutes())
    });
    let backup = match (&s.backup, &s.no_backup) {
        (Some(b), _) => format!(", after backup `{b}`"),
        (None, Some(_)) => ", with no datastore backup (no embedded etcd)".to_string(),
        (None, None) => String::new(),
    };
    let nodes: Vec<String> = s
        .nodes
        .iter()
        .map(|n| {
            let took = n
                .upgrades
                .iter()
                .find(|u| u.version == spec.to)
                .map(|u| (u.finished - u.started).num_seconds())
                .map_or("-".to_string(), |t| format!("{}m{:02}s", t / 60, t % 60));
            format!(
                "| {} | {} | {} | {took} |",
                n.name,
                n.version,
                if n.ready { "Ready" } else { "NotReady" }
            )
        })
        .collect();
    let checks: Vec<String> = checks
        .iter()
        .map(|f| format!("- ✓ {}: {}", f.check, f.detail))
        .collect();
    let soak = match soaks_until {
        Some(until) => format!(
            "\n\nSoaking for {} until {}: the checks keep running, and the rollout counts as succeeded once it has soaked.",
            span_text(ctx.soak.duration),
            until.format("%Y-%m-%d %H:%M UTC")
        ),
        None => String::new(),
    };
    format!(
        "**Applied**: {} {} → {}{took}{}.\n\n{}\n\n{}{soak}",
        c.name,
        spec.from,
        spec.to,
        backup,
        checks.join("\n"),
        if c.name == "k3s" {
            format!(
                "| Node | Version | State | Upgrade took |\n|---|---|---|---|\n{}",
                nodes.join("\n")
            )
        } else {
            String::new()
        }
    )
}

/// The baseline comparison and the policy's checks of this look.
fn all_checks(s: &RolloutStatus, ctx: &Ctx) -> Vec<Finding> {
    let mut checks = validate(
        s.baseline.as_ref().unwrap_or(&Baseline::default()),
        ctx.observed,
    );
    checks.extend(ctx.extra_checks.iter().cloned());
    checks
}

/// Whether `c` can be rolled back from `from` to `back` (Flux: within the same minor).
fn can_go_back(c: &Component, back: &str, from: &str) -> bool {
    match (
        versions::parse(back, c.scheme),
        versions::parse(from, c.scheme),
    ) {
        (Ok(b), Ok(h)) => match c.path_rule.downgrade {
            Downgrade::Allowed => true,
            Downgrade::WithinMinor => b.line() == h.line(),
            Downgrade::Never => false,
        },
        _ => false,
    }
}

pub(crate) fn fail(
    s: &mut RolloutStatus,
    fx: &mut Vec<Effect>,
    _spec: &RolloutSpec,
    c: &Component,
    why: impl Into<String>,
    now: DateTime<Utc>,
) {
    // Stop SUC starting another node now, not at the next look.
    if c.name == "k3s" {
        fx.push(Effect::Halt);
    }
    let why = why.into();
    s.failure = Some(why.clone());
    set(s, Phase::Failed, why, now);
}

/// What changed on the nodes between two looks, in words (`agent-1: v1.33.4+k3s1 -> v1.33.5+k3s1,
/// Ready`), for progress on a terminal and in the logs.
pub fn node_changes(before: &[NodeResult], after: &[NodeResult]) -> Vec<String> {
    after
        .iter()
        .filter_map(|n| {
            let was = before.iter().find(|b| b.name == n.name)?;
            (was.version != n.version || was.ready != n.ready).then(|| {
                format!(
                    "{}: {}{}, {}",
                    n.name,
                    if was.version == n.version {
                        String::new()
                    } else {
                        format!("{} -> ", was.version)
                    },
                    n.version,
                    if n.ready { "Ready" } else { "NotReady" }
                )
            })
        })
        .collect()
}

/// Where a comment says how versions.yaml was put back: only known once the revert is done (a
/// commit on the base branch, or a revert pull request when the push was refused), so the
/// effect fills it in with [`revert_sentence`].
pub const REVERT_SENTENCE: &str = "{upkeep:revert}";

/// How versions.yaml was put back to `back_to`, from the rollout's `status.revert` (a commit,
/// `#N` for a revert pull request, or `... (already changed)`).
pub fn revert_sentence(revert: Option<&str>, back_to: &str) -> String {
    match revert {
        Some(r) if r.starts_with('#') => format!(
            "The base branch refused upkeep's push, so upkeep opened the revert pull request {r}: versions.yaml still asks for the failed version until it is merged (it puts {back_to} back)."
        ),
        Some(r) if r.ends_with("(already changed)") => format!(
            "versions.yaml had already been changed on the base branch, so upkeep left it as it is (it would have put {back_to} back)."
        ),
        Some(r) => format!(
            "versions.yaml was reverted to {back_to} (commit {}).",
            r.get(..12).unwrap_or(r)
        ),
        None => format!("versions.yaml is to be reverted to {back_to}."),
    }
}

/// The version to go back to: the last hop validated, else `from`.
pub(crate) fn last_good(spec: &RolloutSpec, s: &RolloutStatus) -> String {
    s.hop
        .checked_sub(1)
        .and_then(|i| spec.hops.get(i))
        .cloned()
        .unwrap_or_else(|| spec.from.clone())
}

/// Whether what runs has moved past `back_to` in a way the component cannot undo.
fn moved(c: &Component, o: &Observed, back_to: &str) -> bool {
    let Ok(back) = versions::parse(back_to, c.scheme) else {
        return true;
    };
    let running = o.running(c);
    let highest = match &running {
        Running::At { version } => versions::parse(version, c.scheme).ok(),
        Running::Mixed { nodes } => nodes
            .iter()
            .filter_map(|(_, v)| versions::parse(v, c.scheme).ok())
            .max(),
        Running::Unknown => None,
    };
    match (highest, c.path_rule.downgrade) {
        (Some(h), Downgrade::Never) => h > back,
        (Some(h), Downgrade::WithinMinor) => h.line() != back.line(),
        _ => false,
    }
}

/// What the report says of a k3s rollout on a cluster without embedded etcd.
pub const NO_DATASTORE_BACKUP: &str = "no datastore backup: k3s runs without embedded etcd (SQLite or an external datastore), which upkeep cannot snapshot; back up server/db/state.db (SQLite) or the external database yourself (docs/runbook.md)";

/// Whether `hop` was applied already: upkeep's Plans ask for it (k3s), or the release object
/// asks for it (charts, Flux).
fn already_applied(c: &Component, hop: &str, o: &Observed) -> bool {
    let bare = |v: &str| v.trim_start_matches('v').to_string();
    match c.name.as_str() {
        "k3s" => o.plans.iter().any(|p| p.upkeeps() && p.version == hop),
        "flux" => o
            .flux_instances
            .first()
            .and_then(|f| f.desired.as_deref())
            .is_some_and(|d| bare(d) == bare(hop)),
        _ => o
            .release_of(&c.runs)
            .and_then(|h| h.desired.as_deref())
            .is_some_and(|d| bare(d) == bare(hop)),
    }
}

fn backup_applies(c: &Component, o: &Observed) -> bool {
    match c.name.as_str() {
        "k3s" => o.nodes.iter().any(|n| n.etcd),
        "longhorn" => !o.volumes.is_empty(),
        _ => false,
    }
}

/// The Rollout CRD (`upkeep.dev/v1alpha1`), generated from the types above.
pub fn crd() -> serde_json::Value {
    use kube::CustomResourceExt as _;
    let mut v = serde_json::to_value(UpkeepRollout::crd()).unwrap_or_default();
    // `kubectl explain` reads the descriptions; say what the object is.
    if let Some(schema) = v.pointer_mut("/spec/versions/0/schema/openAPIV3Schema") {
        schema["description"] = serde_json::json!(
            "One update upkeep applies: a component's rollout from what runs to what versions.yaml asks, hop by hop, with a backup, validation and, on failure, a revert. docs/apply.md"
        );
    }
    v
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::cluster::NodeState;
    use crate::model::{Sources, Track};
    use crate::versions::{PathRule, Scheme};

    #[test]
    fn node_changes_say_what_moved() {
        let n = |name: &str, v: &str, ready| NodeResult {
            name: name.into(),
            version: v.into(),
            ready,
            upgrades: Vec::new(),
        };
        let before = [n("a", "v1", true), n("b", "v1", true)];
        let after = [n("a", "v2", false), n("b", "v1", true)];
        assert_eq!(node_changes(&before, &after), ["a: v1 -> v2, NotReady"]);
        let later = [n("a", "v2", true), n("b", "v1", true)];
        assert_eq!(node_changes(&after, &later), ["a: v2, Ready"]);
    }

    fn k3s() -> Component {
        k3s_at("v1.33.5+k3s1")
    }

    /// k3s tracked at `version`, with the built-in path rule (one minor per hop, no downgrade).
    pub(crate) fn k3s_at(version: &str) -> Component {
        Component {
            name: "k3s".into(),
            version: versions::parse(version, Scheme::K3s).unwrap_or_else(|_| panic!()),
            scheme: Scheme::K3s,
            track: Track::Newest,
            sources: Sources::default(),
            allowed: None,
            path_rule: PathRule {
                max_minor_step: Some(1),
                downgrade: Downgrade::Never,
            },
            runs: crate::model::Runs::K3s,
        }
    }

    fn cluster(versions: &[&str]) -> Observed {
        Observed {
            nodes: versions
                .iter()
                .enumerate()
                .map(|(i, v)| NodeState {
                    name: format!("n{i}"),
                    server: i == 0,
                    etcd: i == 0,
                    version: v.to_string(),
                    ready: true,
                    unschedulable: false,
                    data_dir: "/var/lib/rancher/k3s".into(),
                })
                .collect(),
            suc_installed: true,
            ..Observed::default()
        }
    }

    #[test]
    fn a_validated_hop_soaks_before_the_next_hop_and_a_regression_follows_policy() {
        use crate::model::{OnRegression, SoakPolicy};
        let t0: DateTime<Utc> = "2026-11-21T21:30:00Z".parse().unwrap_or_default();
        let two = RolloutSpec {
            from: "v1.32.9+k3s1".into(),
            to: "v1.33.5+k3s1".into(),
            hops: vec!["v1.33.0+k3s1".into(), "v1.33.5+k3s1".into()],
            ..spec()
        };
        let c = k3s();
        let o = cluster(&["v1.33.0+k3s1", "v1.33.0+k3s1"]);
        let look = |st: &RolloutStatus,
                    now: DateTime<Utc>,
                    may_start: bool,
                    soak: SoakPolicy,
                    checks: Vec<Finding>| {
            let ctx = Ctx {
                now,
                created: t0,
                component: &c,
                observed: &o,
                may_start,
                waiting: "next window Sat 22:00".into(),
                backup: false,
                backup_state: BackupState::Pending,
                timeout: chrono::Duration::minutes(60),
                preflight: PreflightPolicy::default(),
                extra_checks: checks,
                soak,
            };
            decide("k3s-v1.33.5-k3s1", &two, st, &ctx)
        };
        let day = SoakPolicy::default();
        let validating = RolloutStatus {
            phase: Phase::Validating,
            ..Default::default()
        };
        // The first hop validated: it soaks a day, and the next hop waits.
        let (s, fx) = look(&validating, t0, true, day, Vec::new());
        assert_eq!((s.phase, s.hop), (Phase::Soaking, 0));
        assert!(s.phase.holds_the_cluster());
        assert!(fx.is_empty(), "no report before the last hop: {fx:?}");
        assert_eq!(
            s.soak.as_ref().map(|k| k.until),
            Some(t0 + chrono::Duration::hours(24))
        );
        let (s, fx) = look(&s, t0 + chrono::Duration::hours(23), true, day, Vec::new());
        assert_eq!((s.phase, s.hop, fx.len()), (Phase::Soaking, 0, 0));
        // Soaked, outside a window: the next hop waits for one; in a window it starts.
        let after = t0 + chrono::Duration::hours(24);
        let (w, _) = look(&s, after, false, day, Vec::new());
        assert_eq!((w.phase, w.hop), (Phase::WaitingForWindow, 1));
        let (a, fx) = look(&s, after, true, day, Vec::new());
        assert_eq!(
            (a.phase, a.hop),
            (Phase::Preflight, 1),
            "a day later: preflight again"
        );
        assert!(fx.is_empty(), "{fx:?}");
        assert_eq!(s.soak.as_ref().map(|k| k.looks), Some(1));

        // A regression: k3s cannot go back, so even `rollback` asks a human, and versions.yaml
        // is left alone (no Revert, no Apply).
        let bad = vec![Finding {
            check: "errors".into(),
            ok: false,
            detail: "rate = 0.2 (wanted <= 0.01)".into(),
        }];
        let rollback = SoakPolicy {
            on_regression: OnRegression::Rollback,
            ..day
        };
        let at = |h| t0 + chrono::Duration::hours(h);
        let (once, fx) = look(&s, at(2), true, rollback, bad.clone());
        assert_eq!(
            (once.phase, fx.len()),
            (Phase::Soaking, 0),
            "one failed look is a blip"
        );
        let (r, fx) = look(&once, at(3), true, rollback, bad.clone());
        assert_eq!(r.phase, Phase::RequiresAttention);
        assert!(
            r.message.contains("regressed during the soak: errors:"),
            "{}",
            r.message
        );
        assert!(
            matches!(&fx[..], [Effect::Comment { key, body }] if key == "soak-regression-0" && body.contains("cannot go back")),
            "{fx:?}"
        );
        assert_eq!(
            r.soak
                .as_ref()
                .and_then(|k| k.regression.clone())
                .as_deref(),
            Some("errors: rate = 0.2 (wanted <= 0.01)")
        );
        // No soak at all: a validated last hop succeeds at once.
        let last = RolloutStatus {
            phase: Phase::Validating,
            hop: 1,
            ..Default::default()
        };
        let none = SoakPolicy {
            duration: chrono::Duration::zero(),
            ..day
        };
        let (s, _) = look(&last, t0, true, none, Vec::new());
        assert_eq!(s.phase, Phase::Succeeded);
        assert_eq!(span_text(chrono::Duration::minutes(90)), "1h30m");
        assert_eq!(span_text(chrono::Duration::days(2)), "2d");
        assert_eq!(span_text(chrono::Duration::hours(24)), "24h");
    }

    #[test]
    fn a_soak_rollback_waits_for_a_window_and_a_detached_volume_is_no_regression() {
        use crate::model::{OnRegression, SoakPolicy};
        let t0: DateTime<Utc> = "2026-11-22T12:00:00Z".parse().unwrap_or_default();
        let mut flux = k3s();
        flux.name = "flux".into();
        flux.scheme = Scheme::Semver;
        flux.path_rule = PathRule {
            max_minor_step: Some(1),
            downgrade: Downgrade::WithinMinor,
        };
        let patch = RolloutSpec {
            component: "flux".into(),
            from: "v2.6.4".into(),
            to: "v2.6.5".into(),
            hops: vec!["v2.6.5".into()],
            pull_request: Some(3),
            emergency: false,
        };
        let mut o = Observed::default();
        o.volumes.push(crate::cluster::VolumeState {
            name: "pvc-1".into(),
            robustness: "unknown".into(),
            state: "detached".into(),
            replicas: 3,
            node: String::new(),
        });
        let soaking = RolloutStatus {
            phase: Phase::Soaking,
            baseline: Some(Baseline {
                volumes: [("pvc-1".to_string(), "healthy".to_string())].into(),
                ..Default::default()
            }),
            soak: Some(Soak {
                hop: 0,
                since: t0,
                until: t0 + chrono::Duration::hours(24),
                looks: 1,
                failing: 1,
                regression: None,
            }),
            ..Default::default()
        };
        let look = |st: &RolloutStatus, may_start: bool, bad: bool| {
            let ctx = Ctx {
                now: t0 + chrono::Duration::hours(2),
                created: t0,
                component: &flux,
                observed: &o,
                may_start,
                waiting: "next window Sat 22:00".into(),
                backup: false,
                backup_state: BackupState::Pending,
                timeout: chrono::Duration::minutes(60),
                preflight: PreflightPolicy::default(),
                extra_checks: vec![Finding {
                    check: "errors".into(),
                    ok: !bad,
                    detail: "rate".into(),
                }],
                soak: SoakPolicy {
                    on_regression: OnRegression::Rollback,
                    ..SoakPolicy::default()
                },
            };
            decide("flux-v2.6.5", &patch, st, &ctx)
        };
        // A volume detached (its workload scaled down) reads `unknown`: not a regression.
        let (ok, _) = look(&soaking, false, false);
        assert_eq!(ok.phase, Phase::Soaking);
        assert!(ok.checks.iter().all(|f| f.ok), "{:?}", ok.checks);
        // A regression outside a window: decided, said, and rolled back in the next window.
        let (waits, fx) = look(&soaking, false, true);
        assert_eq!(waits.phase, Phase::Soaking);
        assert!(
            waits
                .message
                .contains("rolls back to v2.6.4 in the next window"),
            "{}",
            waits.message
        );
        assert!(
            matches!(&fx[..], [Effect::Comment { body, .. }] if body.contains("in the next window")),
            "{fx:?}"
        );
        let (later, fx) = look(&waits, false, false);
        assert_eq!(
            (later.phase, fx.len()),
            (Phase::Soaking, 0),
            "recovered or not, no change outside a window"
        );
        let (rolls, _) = look(&later, true, false);
        assert_eq!(rolls.phase, Phase::Failed);
    }

    #[test]
    fn a_superseded_rollout_ends_holds_its_plans_and_says_so_once() {
        let t: DateTime<Utc> = "2026-11-28T22:30:00Z".parse().unwrap_or_default();
        let applying = RolloutStatus {
            phase: Phase::Applying,
            message: "applying v1.33.5+k3s1".into(),
            ..Default::default()
        };
        let (s, fx) = supersede("k3s-v1.33.5-k3s1", &spec(), &applying, "v1.33.6+k3s1", t);
        assert_eq!(s.phase, Phase::Superseded);
        assert!(s.phase.is_terminal() && !s.phase.holds_the_cluster());
        assert_eq!(
            s.message,
            "superseded while Applying: versions.yaml now asks for k3s v1.33.6+k3s1"
        );
        assert!(matches!(fx[0], Effect::Pause), "{fx:?}");
        assert!(
            matches!(&fx[1], Effect::Comment { key, body } if key == "superseded" && body.contains("**Superseded.**")),
            "{fx:?}"
        );
        // Said once: a second pass (a restart before the status was saved is covered by the
        // comment's marker) posts nothing more.
        let (_, again) = supersede("k3s-v1.33.5-k3s1", &spec(), &s, "v1.33.6+k3s1", t);
        assert!(!again.iter().any(|f| matches!(f, Effect::Comment { .. })));
        // Waiting for a window: nothing to hold.
        let waiting = RolloutStatus {
            phase: Phase::WaitingForWindow,
            ..Default::default()
        };
        let (_, fx) = supersede("k3s-v1.33.5-k3s1", &spec(), &waiting, "v1.33.6+k3s1", t);
        assert!(!fx.iter().any(|f| matches!(f, Effect::Pause)));
    }

    fn spec() -> RolloutSpec {
        RolloutSpec {
            component: "k3s".into(),
            from: "v1.33.4+k3s1".into(),
            to: "v1.33.5+k3s1".into(),
            hops: vec!["v1.33.5+k3s1".into()],
            pull_request: Some(7),
            emergency: false,
        }
    }

    fn step(
        st: &RolloutStatus,
        o: &Observed,
        may_start: bool,
        backup_ready: Option<&str>,
    ) -> (RolloutStatus, Vec<Effect>) {
        let c = k3s();
        let ctx = Ctx {
            now: Utc::now(),
            created: "2026-11-21T21:30:00Z".parse().unwrap_or_default(),
            component: &c,
            observed: o,
            may_start,
            waiting: "next window Sat 22:00".into(),
            backup: true,
            backup_state: backup_ready
                .map_or(BackupState::Pending, |b| BackupState::Ready(b.into())),
            timeout: chrono::Duration::minutes(60),
            preflight: PreflightPolicy::default(),
            extra_checks: Vec::new(),
            soak: crate::model::SoakPolicy {
                duration: chrono::Duration::zero(),
                ..Default::default()
            },
        };
        decide("k3s-v1.33.5-k3s1", &spec(), st, &ctx)
    }

    #[test]
    fn the_happy_path_with_a_backup() {
        let before = cluster(&["v1.33.4+k3s1", "v1.33.4+k3s1"]);
        let (s, fx) = step(&RolloutStatus::default(), &before, false, None);
        assert_eq!((s.phase, fx.len()), (Phase::WaitingForWindow, 0));
        let (s, _) = step(&s, &before, false, None);
        assert_eq!(s.phase, Phase::WaitingForWindow, "no window: no start");
        let (s, _) = step(&s, &before, true, None);
        assert_eq!(s.phase, Phase::Preflight);
        let (s, fx) = step(&s, &before, true, None);
        assert_eq!(s.phase, Phase::Backup);
        assert!(
            matches!(&fx[..], [Effect::Backup { name }] if name.starts_with("upkeep-k3s-v1.33.5-k3s1-2")),
            "{fx:?}"
        );
        // Looked at again, the same attempt is asked for, not a new one.
        let (_, again) = step(&s, &before, true, None);
        assert_eq!(again, fx);
        let (s, fx) = step(&s, &before, true, Some("upkeep-k3s-v1.33.5-k3s1-n0-1"));
        assert_eq!(s.phase, Phase::Applying);
        assert_eq!(
            fx,
            vec![Effect::Apply {
                version: "v1.33.5+k3s1".into()
            }]
        );
        let mid = cluster(&["v1.33.5+k3s1", "v1.33.4+k3s1"]);
        let (s, _) = step(&s, &mid, false, None);
        assert_eq!(
            s.phase,
            Phase::Applying,
            "a closing window does not abandon a rollout in flight"
        );
        let after = cluster(&["v1.33.5+k3s1", "v1.33.5+k3s1"]);
        let (s, _) = step(&s, &after, true, None);
        assert_eq!(s.phase, Phase::Validating);
        let (s, fx) = step(&s, &after, true, None);
        assert_eq!(s.phase, Phase::Succeeded);
        assert!(matches!(&fx[..], [Effect::Comment { key, .. }] if key == "succeeded"));
        // Terminal: nothing more, ever; the comment is not posted twice.
        let (s2, fx) = step(&s, &after, true, None);
        assert_eq!((s2.phase, fx.len()), (Phase::Succeeded, 0));
    }

    #[test]
    fn a_node_that_never_comes_back_needs_attention() {
        let before = cluster(&["v1.33.4+k3s1", "v1.33.4+k3s1"]);
        let mut s = RolloutStatus {
            phase: Phase::Applying,
            baseline: Some(baseline(&before)),
            phase_since: Some(Utc::now()),
            ..Default::default()
        };
        let mut bad = cluster(&["v1.33.5+k3s1", "v1.33.5+k3s1"]);
        bad.nodes[1].ready = false;
        let fx;
        (s, fx) = step(&s, &bad, true, None);
        assert_eq!(s.phase, Phase::Failed, "{s:?}");
        assert_eq!(
            fx,
            vec![Effect::Halt],
            "SUC starts no further node from now on"
        );
        let (s, fx) = step(&s, &bad, true, None);
        assert_eq!(
            (s.phase, fx),
            (Phase::Reverting, vec![Effect::Halt, Effect::Release])
        );
        let (s, fx) = step(&s, &bad, true, None);
        assert_eq!(s.phase, Phase::RequiresAttention);
        assert!(
            matches!(&fx[0], Effect::Revert { version, message } if version == "v1.33.4+k3s1" && message.starts_with("revert(k3s): v1.33.5+k3s1 failed: upgraded but not Ready: n1"))
        );
        assert!(s.message.contains("cannot be downgraded"), "{}", s.message);
    }

    #[test]
    fn a_failed_preflight_changes_nothing_and_reports_once() {
        let mut o = cluster(&["v1.33.4+k3s1"]);
        o.suc_installed = false;
        let s = RolloutStatus {
            phase: Phase::Preflight,
            ..Default::default()
        };
        let (s, fx) = step(&s, &o, true, None);
        assert_eq!(s.phase, Phase::Preflight);
        assert!(matches!(&fx[..], [Effect::Comment { key, .. }] if key == "preflight"));
        let (_, fx) = step(&s, &o, true, None);
        assert!(fx.is_empty(), "once");
    }

    #[test]
    fn flux_rolls_back_a_failed_patch_but_not_a_minor() {
        let mut flux = k3s();
        flux.name = "flux".into();
        flux.scheme = Scheme::Semver;
        flux.path_rule = PathRule {
            max_minor_step: Some(1),
            downgrade: Downgrade::WithinMinor,
        };
        let o = Observed::default();
        fn ctx<'a>(c: &'a Component, o: &'a Observed) -> Ctx<'a> {
            Ctx {
                now: Utc::now(),
                created: Utc::now(),
                component: c,
                observed: o,
                may_start: true,
                waiting: String::new(),
                backup: false,
                backup_state: BackupState::Pending,
                timeout: chrono::Duration::minutes(60),
                preflight: PreflightPolicy::default(),
                extra_checks: Vec::new(),
                soak: crate::model::SoakPolicy {
                    duration: chrono::Duration::zero(),
                    ..Default::default()
                },
            }
        }
        let failed = RolloutStatus {
            phase: Phase::Failed,
            ..Default::default()
        };
        let patch = RolloutSpec {
            component: "flux".into(),
            from: "v2.6.4".into(),
            to: "v2.6.5".into(),
            hops: vec!["v2.6.5".into()],
            pull_request: None,
            emergency: false,
        };
        let (_, fx) = decide("flux-v2.6.5", &patch, &failed, &ctx(&flux, &o));
        assert_eq!(
            fx,
            vec![
                Effect::Halt,
                Effect::Apply {
                    version: "v2.6.4".into()
                }
            ]
        );
        let minor = RolloutSpec {
            to: "v2.7.0".into(),
            hops: vec!["v2.7.0".into()],
            ..patch
        };
        let (_, fx) = decide("flux-v2.7.0", &minor, &failed, &ctx(&flux, &o));
        assert_eq!(
            fx,
            vec![Effect::Halt],
            "a lower minor is refused by flux-operator"
        );
    }

    #[test]
    fn a_backup_is_named_per_attempt_and_fits_a_kubernetes_name() {
        let t0: DateTime<Utc> = "2026-11-21T21:30:00Z".parse().unwrap_or_default();
        let a = backup_name("k3s-v1.33.5-k3s1", t0);
        assert_eq!(a, "upkeep-k3s-v1.33.5-k3s1-20261121213000");
        assert_ne!(
            a,
            backup_name("k3s-v1.33.5-k3s1", t0 + chrono::Duration::seconds(1))
        );
        let long = backup_name(&"x".repeat(80), t0);
        assert!(
            long.len() <= 63 && long.ends_with("-20261121213000"),
            "{long}"
        );
    }

    #[test]
    fn a_failed_backup_fails_the_rollout_at_once() {
        let before = cluster(&["v1.33.4+k3s1"]);
        let s = RolloutStatus {
            phase: Phase::Backup,
            phase_since: Some(Utc::now()),
            backup_attempt: Some("upkeep-k3s-x-1".into()),
            ..Default::default()
        };
        let c = k3s();
        let ctx = Ctx {
            now: Utc::now(),
            created: "2026-11-21T21:30:00Z".parse().unwrap_or_default(),
            component: &c,
            observed: &before,
            may_start: true,
            waiting: String::new(),
            backup: true,
            backup_state: BackupState::Failed("exec: \"k3s\": not found".into()),
            timeout: chrono::Duration::minutes(60),
            preflight: PreflightPolicy::default(),
            extra_checks: Vec::new(),
            soak: crate::model::SoakPolicy {
                duration: chrono::Duration::zero(),
                ..Default::default()
            },
        };
        let (s, fx) = decide("k3s-v1.33.5-k3s1", &spec(), &s, &ctx);
        assert_eq!(s.phase, Phase::Failed);
        assert!(
            s.message.contains("the backup failed: exec"),
            "{}",
            s.message
        );
        assert_eq!(fx, vec![Effect::Halt]);
    }

    #[test]
    fn a_halt_lets_the_node_in_progress_finish_before_releasing() {
        let mut o = cluster(&["v1.33.5+k3s1", "v1.33.4+k3s1"]);
        o.upgrade_jobs.push(crate::cluster::UpgradeJob {
            plan: "upkeep-agent".into(),
            node: "n1".into(),
            version: "v1.33.5-k3s1".into(),
            started: Some(Utc::now()),
            completed: None,
            failed: false,
        });
        let failed = RolloutStatus {
            phase: Phase::Failed,
            phase_since: Some(Utc::now()),
            ..Default::default()
        };
        let (s, fx) = step(&failed, &o, true, None);
        assert_eq!((s.phase, fx), (Phase::Failed, vec![Effect::Halt]));
        assert!(s.message.contains("waiting for n1"), "{}", s.message);
        o.upgrade_jobs[0].completed = Some(Utc::now());
        let (s, fx) = step(&s, &o, true, None);
        assert_eq!(
            (s.phase, fx),
            (Phase::Reverting, vec![Effect::Halt, Effect::Release])
        );
    }

    #[test]
    fn nothing_starts_outside_a_window_after_a_backup_or_between_hops() {
        let before = cluster(&["v1.33.4+k3s1", "v1.33.4+k3s1"]);
        // The backup became ready after the window closed: kept, applied in the next window.
        let s = RolloutStatus {
            phase: Phase::Backup,
            phase_since: Some(Utc::now()),
            backup_attempt: Some("upkeep-x".into()),
            ..Default::default()
        };
        let (s, fx) = step(&s, &before, false, Some("upkeep-x-n0-1"));
        assert_eq!((s.phase, fx.len()), (Phase::WaitingForWindow, 0));
        assert_eq!(s.backup.as_deref(), Some("upkeep-x-n0-1"));
        let (s, _) = step(&s, &before, true, None);
        let (s, fx) = step(&s, &before, true, None);
        assert_eq!(s.phase, Phase::Applying, "no second backup: {s:?}");
        assert!(matches!(&fx[..], [Effect::Apply { .. }]));
        // A validated hop with another to go, the window closed: the next hop waits.
        let c = k3s();
        let two = RolloutSpec {
            hops: vec!["v1.33.5+k3s1".into(), "v1.34.1+k3s1".into()],
            to: "v1.34.1+k3s1".into(),
            ..spec()
        };
        let after = cluster(&["v1.33.5+k3s1", "v1.33.5+k3s1"]);
        let validating = RolloutStatus {
            phase: Phase::Validating,
            baseline: Some(baseline(&after)),
            ..Default::default()
        };
        let ctx = Ctx {
            now: Utc::now(),
            created: Utc::now(),
            component: &c,
            observed: &after,
            may_start: false,
            waiting: "next window Sat 22:00".into(),
            backup: true,
            backup_state: BackupState::Pending,
            timeout: chrono::Duration::minutes(60),
            preflight: PreflightPolicy::default(),
            extra_checks: Vec::new(),
            soak: crate::model::SoakPolicy {
                duration: chrono::Duration::zero(),
                ..Default::default()
            },
        };
        let (s, fx) = decide("k3s-v1.34.1-k3s1", &two, &validating, &ctx);
        assert_eq!((s.phase, s.hop, fx.len()), (Phase::WaitingForWindow, 1, 0));
    }

    #[test]
    fn a_hop_applied_before_a_restart_is_resumed_not_preflighted() {
        let mut mid = cluster(&["v1.33.5+k3s1", "v1.33.4+k3s1"]);
        mid.nodes[1].unschedulable = true;
        mid.plans.push(crate::cluster::PlanState {
            namespace: "system-upgrade".into(),
            name: "upkeep-agent".into(),
            version: "v1.33.5+k3s1".into(),
            image: "rancher/k3s-upgrade".into(),
            complete: false,
            failed: None,
            applying: vec!["n1".into()],
            flux: None,
        });
        let s = RolloutStatus {
            phase: Phase::Preflight,
            ..Default::default()
        };
        let (s, fx) = step(&s, &mid, true, None);
        assert_eq!(s.phase, Phase::Applying, "{s:?}");
        assert!(matches!(&fx[..], [Effect::Apply { .. }]));
    }

    #[test]
    fn names_are_kubernetes_safe() {
        assert_eq!(rollout_name("k3s", "v1.33.5+k3s1"), "k3s-v1.33.5-k3s1");
    }
}
