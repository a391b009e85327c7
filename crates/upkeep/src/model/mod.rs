//! The desired state users write: `versions.yaml` and `policies/*.yaml`.
//!
//! - [`files`]: the file formats, as serde types with source positions ([`Sp`]); the JSON Schemas
//!   in `docs/schema/` are generated from them.
//! - [`load`]: reading a config repo safely (size, encoding, symlinks, YAML bombs).
//! - [`resolve`]: checking references and values, and turning the files into a [`ConfigRepo`] of
//!   plain data that the rest of the pipeline uses.

pub mod files;
pub mod load;
pub mod resolve;

use std::collections::BTreeSet;

use chrono::Duration;
use serde::Serialize;

use crate::versions::{Level, PathRule, Scheme, Version};
use crate::windows::{Freeze, Window};

pub use load::{Loaded, load_repo};

/// The API version of every file upkeep reads.
pub const API_VERSION: &str = "upkeep.dev/v1alpha1";
/// Files larger than this are refused before parsing.
pub const MAX_FILE_BYTES: u64 = 1024 * 1024;

/// A validated config repo: plain data, no positions, no I/O.
#[derive(Debug, Clone)]
pub struct ConfigRepo {
    pub cluster: Option<String>,
    pub components: Vec<Component>,
    pub windows: Vec<Window>,
    pub freezes: Vec<Freeze>,
    pub rules: Vec<UpdateRule>,
    pub pull_requests: PullRequestLimits,
    /// The minisign public key offline catalogs must be signed with.
    pub catalog_public_key: Option<String>,
    /// Validation checks from the policies.
    pub checks: Vec<Check>,
    pub rollouts: RolloutPolicy,
    /// Soak rules, in order (later ones override the fields they set).
    pub soak: Vec<SoakRule>,
    pub notifications: Notifications,
    pub maintenance: Vec<Maintenance>,
    pub reports: ReportsPolicy,
}

/// Policy `reports:`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReportsPolicy {
    pub monthly_on_dashboard: bool,
    pub tz: chrono_tz::Tz,
}

impl Default for ReportsPolicy {
    fn default() -> Self {
        ReportsPolicy {
            monthly_on_dashboard: false,
            tz: chrono_tz::UTC,
        }
    }
}

pub use files::{NotificationEvent, ProviderType};

/// A workload maintenance mode scales down.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Workload {
    /// `Deployment` or `StatefulSet`.
    pub kind: String,
    pub namespace: String,
    pub name: String,
}

impl std::fmt::Display for Workload {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}/{}", self.kind, self.namespace, self.name)
    }
}

/// One `maintenance:` entry.
#[derive(Debug, Clone, PartialEq)]
pub struct Maintenance {
    pub name: String,
    pub components: Selector,
    pub namespaces: Vec<String>,
    pub scale_down: Vec<Workload>,
}

/// What maintenance mode does around one rollout: every entry that covers the component.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MaintenancePlan {
    pub namespaces: Vec<String>,
    pub scale_down: Vec<Workload>,
}

impl MaintenancePlan {
    pub fn is_empty(&self) -> bool {
        self.namespaces.is_empty() && self.scale_down.is_empty()
    }
}

/// Where a secret is read from, at delivery time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Secret {
    File(String),
    Env(String),
}

/// A notification receiver.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Provider {
    pub name: String,
    pub kind: ProviderType,
    pub address: Option<String>,
    pub address_from: Option<Secret>,
    pub token_from: Option<Secret>,
}

/// Which events of which components a provider gets.
#[derive(Debug, Clone, PartialEq)]
pub struct Alert {
    pub name: String,
    pub provider: String,
    pub events: BTreeSet<NotificationEvent>,
    pub components: Selector,
}

/// Policy `notifications:`.
#[derive(Debug, Clone, PartialEq)]
pub struct Notifications {
    pub providers: Vec<Provider>,
    pub alerts: Vec<Alert>,
    pub window_lead_time: Duration,
}

impl Default for Notifications {
    fn default() -> Self {
        Notifications {
            providers: Vec::new(),
            alerts: Vec::new(),
            window_lead_time: Duration::hours(1),
        }
    }
}

pub use files::{OnRegression, Stage};

/// One rule from `soak:`; unset fields leave earlier rules' values alone.
#[derive(Debug, Clone, PartialEq)]
pub struct SoakRule {
    pub name: String,
    pub components: Selector,
    pub duration: Option<Duration>,
    pub on_regression: Option<OnRegression>,
}

/// The soak in force for one component.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SoakPolicy {
    /// Zero: no soak, a validated rollout succeeds at once.
    pub duration: Duration,
    pub on_regression: OnRegression,
}

impl Default for SoakPolicy {
    /// A day of watching (what runbooks ask: 24 to 48 hours), then a human decides.
    fn default() -> Self {
        SoakPolicy {
            duration: Duration::hours(24),
            on_regression: OnRegression::Attention,
        }
    }
}

/// How rollouts run (policy `rollouts:`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RolloutPolicy {
    pub agent_concurrency: u64,
    pub drain: bool,
    pub backup: bool,
    pub allow_degraded_volumes: bool,
    pub hop_timeout: Duration,
    /// How many ended rollout objects are kept in the cluster.
    pub keep_ended: usize,
}

impl Default for RolloutPolicy {
    fn default() -> Self {
        RolloutPolicy {
            agent_concurrency: 1,
            drain: true,
            backup: true,
            allow_degraded_volumes: false,
            hop_timeout: Duration::minutes(60),
            keep_ended: 50,
        }
    }
}

/// A validation check run after every hop of the rollouts of the components it covers.
#[derive(Debug, Clone, PartialEq)]
pub struct Check {
    pub name: String,
    pub components: crate::windows::Selector,
    pub kind: CheckKind,
    /// When it runs (validation, soak, or both).
    pub during: Vec<Stage>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum CheckKind {
    Http {
        url: String,
        expect_status: u16,
    },
    Prometheus {
        url: String,
        query: String,
        max: Option<f64>,
        min: Option<f64>,
    },
}

impl ConfigRepo {
    pub fn component(&self, name: &str) -> Option<&Component> {
        self.components.iter().find(|c| c.name == name)
    }

    /// What maintenance mode does around a rollout of `component` (`None`: every entry, as
    /// `upkeep maintenance enable` does).
    pub fn maintenance_for(&self, component: Option<&str>) -> MaintenancePlan {
        let mut p = MaintenancePlan::default();
        for m in self
            .maintenance
            .iter()
            .filter(|m| component.is_none_or(|c| m.components.covers(c)))
        {
            p.namespaces.extend(m.namespaces.iter().cloned());
            p.scale_down.extend(m.scale_down.iter().cloned());
        }
        p.namespaces.sort();
        p.namespaces.dedup();
        p.scale_down.sort();
        p.scale_down.dedup();
        p
    }

    /// The soak in force for a component: the default, then every matching `soak:` rule in
    /// order, later fields overriding earlier ones.
    pub fn soak_for(&self, component: &str) -> SoakPolicy {
        let mut p = SoakPolicy::default();
        for r in self.soak.iter().filter(|r| r.components.covers(component)) {
            if let Some(d) = r.duration {
                p.duration = d;
            }
            if let Some(o) = r.on_regression {
                p.on_regression = o;
            }
        }
        p
    }

    /// The update policy in force for a component: defaults, then every matching rule in order
    /// (files by name, rules in file order), later fields overriding earlier ones.
    pub fn policy_for(&self, component: &str) -> Policy {
        let mut p = Policy::default();
        for r in self.rules.iter().filter(|r| r.components.covers(component)) {
            r.apply_to(&mut p);
        }
        p
    }
}

/// One tracked component, resolved against the built-in knowledge.
#[derive(Debug, Clone)]
pub struct Component {
    pub name: String,
    pub version: Version,
    pub scheme: Scheme,
    pub track: Track,
    pub sources: Sources,
    pub allowed: Option<semver::VersionReq>,
    pub path_rule: PathRule,
    /// Where its version lives in the cluster and in git.
    pub runs: Runs,
}

/// Where a component's version lives: said in versions.yaml (`chart:`, `image:`, `release:`)
/// or known (k3s, Flux, Longhorn), never guessed from a name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum Runs {
    /// The nodes' k3s, upgraded by SUC Plans (upkeep's own, or the user's in git).
    K3s,
    /// Flux, installed by flux-operator: a FluxInstance, written or rendered by the
    /// flux-instance chart.
    Flux,
    /// A Helm chart's version: the HelmRelease of this chart (`release`: which one).
    Chart {
        chart: String,
        release: Option<String>,
    },
    /// An image's tag in a HelmRelease's values (or a workload's container).
    Image {
        image: String,
        release: Option<String>,
    },
    /// Not said: upkeep proposes its updates but cannot apply them.
    Unknown,
}

impl Runs {
    /// `namespace/name` of the HelmRelease named in versions.yaml.
    pub fn release(&self) -> Option<(&str, &str)> {
        match self {
            Runs::Chart { release, .. } | Runs::Image { release, .. } => {
                release.as_deref().and_then(|r| r.split_once('/'))
            }
            _ => None,
        }
    }
}

/// What a component follows upstream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum Track {
    /// The newest release allowed by policy.
    Newest,
    /// A k3s channel server channel (`stable`, `latest`, `testing`).
    Channel(String),
    /// One release line: `v1.33` stays on 1.33.x.
    Line { major: u64, minor: u64 },
}

/// Where a component's releases come from.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Sources {
    /// `owner/repo` on GitHub (releases).
    pub github_releases: Option<String>,
    /// Base URL of a k3s channel server.
    pub channel_server: Option<String>,
    pub helm_chart: Option<HelmChartSource>,
    /// An image repository in an OCI registry, `HOST/NAME` (normalized: no `oci://`, Docker
    /// Hub as `docker.io/...`).
    pub oci_image: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HelmChartSource {
    pub repository: String,
    pub chart: String,
}

/// Which components a rule applies to (the same selector windows use).
pub use crate::windows::Selector;

/// How old a release must be, per level, before it is proposed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ReleaseAge {
    pub revision: Option<Duration>,
    pub patch: Option<Duration>,
    pub minor: Option<Duration>,
    pub major: Option<Duration>,
}

impl ReleaseAge {
    pub fn for_level(&self, level: Level) -> Duration {
        match level {
            Level::Revision => self.revision,
            Level::Patch => self.patch,
            Level::Minor => self.minor,
            Level::Major => self.major,
        }
        .unwrap_or_else(Duration::zero)
    }
}

/// A pin holds a component at one version or on one release line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pin {
    Exact(Version),
    Line { major: u64, minor: u64 },
}

impl Pin {
    pub fn allows(&self, v: &Version) -> bool {
        match self {
            Pin::Exact(p) => p == v,
            Pin::Line { major, minor } => v.line() == (*major, *minor),
        }
    }
}

/// One rule from `updates:`; unset fields leave earlier rules' values alone.
#[derive(Debug, Clone)]
pub struct UpdateRule {
    pub name: String,
    pub components: Selector,
    pub propose: Option<BTreeSet<Level>>,
    pub minimum_release_age: Option<ReleaseAge>,
    pub prerelease: Option<bool>,
    pub pin: Option<Pin>,
    pub ignore: Vec<Version>,
    pub emergency: Option<Emergency>,
    pub paused: Option<bool>,
}

impl UpdateRule {
    fn apply_to(&self, p: &mut Policy) {
        if let Some(v) = &self.propose {
            p.propose = v.clone();
        }
        if let Some(a) = self.minimum_release_age {
            // Per-level: a rule that sets only `minor` keeps the other levels' ages.
            let cur = &mut p.minimum_release_age;
            cur.revision = a.revision.or(cur.revision);
            cur.patch = a.patch.or(cur.patch);
            cur.minor = a.minor.or(cur.minor);
            cur.major = a.major.or(cur.major);
        }
        if let Some(v) = self.prerelease {
            p.prerelease = v;
        }
        if let Some(pin) = &self.pin {
            p.pin = Some(pin.clone());
        }
        p.ignore.extend(self.ignore.iter().cloned());
        if let Some(e) = &self.emergency {
            p.emergency = e.clone();
        }
        if let Some(v) = self.paused {
            p.paused = v;
        }
        p.rules.push(self.name.clone());
    }
}

/// Whether a merged update may apply outside windows when its PR carries a label.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Emergency {
    pub allowed: bool,
    pub label: String,
    pub bypass_freezes: bool,
}

impl Default for Emergency {
    fn default() -> Self {
        Emergency {
            allowed: false,
            label: "upkeep/emergency".to_string(),
            bypass_freezes: false,
        }
    }
}

/// The effective update policy of one component.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    pub propose: BTreeSet<Level>,
    pub minimum_release_age: ReleaseAge,
    pub prerelease: bool,
    pub pin: Option<Pin>,
    pub ignore: Vec<Version>,
    pub emergency: Emergency,
    pub paused: bool,
    /// Names of the rules that shaped this policy, in order.
    pub rules: Vec<String>,
}

impl Default for Policy {
    /// Without rules: propose revisions, patches and minors; majors need an explicit rule.
    fn default() -> Self {
        Policy {
            propose: [Level::Revision, Level::Patch, Level::Minor].into(),
            minimum_release_age: ReleaseAge::default(),
            prerelease: false,
            pin: None,
            ignore: Vec::new(),
            emergency: Emergency::default(),
            paused: false,
            rules: Vec::new(),
        }
    }
}

/// Pull-request limits (Renovate's defaults: 10 open, 2 per hour).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PullRequestLimits {
    pub concurrent: u32,
    pub hourly: u32,
    /// Update one PR per component in place when a newer version supersedes it.
    pub one_per_component: bool,
}

impl Default for PullRequestLimits {
    fn default() -> Self {
        PullRequestLimits {
            concurrent: 10,
            hourly: 2,
            one_per_component: true,
        }
    }
}

/// Parse a duration such as `90s`, `30m`, `4h`, `1h30m`, `7d` or `2w` (or `0`).
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let t = s.trim();
    if t.starts_with('-') {
        return Err("a duration cannot be negative".into());
    }
    if t == "0" {
        return Ok(Duration::zero());
    }
    let mut total: i64 = 0;
    let mut digits = String::new();
    let mut any = false;
    for c in t.chars() {
        if c.is_ascii_digit() {
            digits.push(c);
            continue;
        }
        let unit: i64 = match c {
            's' => 1,
            'm' => 60,
            'h' => 3600,
            'd' => 86_400,
            'w' => 604_800,
            _ => {
                return Err(format!(
                    "unknown unit `{c}`: use s, m, h, d or w, like 4h or 1h30m"
                ));
            }
        };
        if digits.is_empty() {
            return Err("each unit needs a number before it, like 4h or 1h30m".into());
        }
        let n: i64 = digits
            .parse()
            .map_err(|_| "the number is too large".to_string())?;
        total = n
            .checked_mul(unit)
            .and_then(|x| total.checked_add(x))
            .filter(|x| *x <= 100 * 365 * 86_400)
            .ok_or_else(|| "the duration is longer than 100 years".to_string())?;
        digits.clear();
        any = true;
    }
    if !digits.is_empty() || !any {
        return Err("a duration needs a unit, like 4h, 30m or 7d".into());
    }
    Ok(Duration::seconds(total))
}

/// The closest of `candidates` to `word`, if it is close enough to be a likely typo.
pub fn suggest<'a>(word: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    let limit = (word.chars().count() / 3).max(1);
    candidates
        .into_iter()
        .map(|c| (levenshtein(word, c), c))
        .filter(|(d, _)| *d <= limit)
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

fn levenshtein(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.to_lowercase().chars().collect();
    let b: Vec<char> = b.to_lowercase().chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.iter().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            cur[j + 1] = (prev[j] + usize::from(ca != cb))
                .min(prev[j + 1] + 1)
                .min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("4h").unwrap(), Duration::hours(4));
        assert_eq!(parse_duration("1h30m").unwrap(), Duration::minutes(90));
        assert_eq!(parse_duration("7d").unwrap(), Duration::days(7));
        assert_eq!(parse_duration("0").unwrap(), Duration::zero());
        assert!(parse_duration("-1h").is_err());
        assert!(parse_duration("4").is_err());
        assert!(parse_duration("4x").is_err());
        assert!(parse_duration("h").is_err());
        assert!(parse_duration("99999999999999999999h").is_err());
    }

    #[test]
    fn suggestions() {
        assert_eq!(
            suggest("longhron", ["k3s", "flux", "longhorn"]),
            Some("longhorn")
        );
        assert_eq!(suggest("zzz", ["k3s", "flux"]), None);
    }
}
