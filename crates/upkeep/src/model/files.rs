//! The file formats, exactly as users write them. Every struct rejects unknown fields, and every
//! value a check may complain about carries its position ([`Sp`]).
//!
//! The JSON Schemas in `docs/schema/` are generated from these types (`upkeep schema`), and a test
//! fails when the checked-in copies drift.

use std::borrow::Cow;
use std::fmt;
use std::marker::PhantomData;

use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde::{Deserialize, Serialize};

use crate::diag::Pos;
use crate::versions::{Level, PathRule, Scheme};

/// A value with the position it was read from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sp<T> {
    pub value: T,
    pub pos: Pos,
}

impl<T> std::ops::Deref for Sp<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.value
    }
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Sp<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = serde_saphyr::Spanned::<T>::deserialize(d)?;
        Ok(Sp {
            value: s.value,
            pos: Pos {
                line: s.referenced.line(),
                column: s.referenced.column(),
            },
        })
    }
}

impl<T: JsonSchema> JsonSchema for Sp<T> {
    fn inline_schema() -> bool {
        T::inline_schema()
    }
    fn schema_name() -> Cow<'static, str> {
        T::schema_name()
    }
    fn schema_id() -> Cow<'static, str> {
        T::schema_id()
    }
    fn json_schema(generator: &mut SchemaGenerator) -> Schema {
        T::json_schema(generator)
    }
}

/// A YAML mapping whose order is kept and whose keys carry positions. Duplicate keys are
/// rejected by the parser before this sees them.
#[derive(Debug, Clone)]
pub struct OrderedMap<V>(pub Vec<(Sp<String>, V)>);

impl<V> Default for OrderedMap<V> {
    fn default() -> Self {
        OrderedMap(Vec::new())
    }
}

impl<'de, V: Deserialize<'de>> Deserialize<'de> for OrderedMap<V> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V2<V>(PhantomData<V>);
        impl<'de, V: Deserialize<'de>> Visitor<'de> for V2<V> {
            type Value = OrderedMap<V>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a mapping of names to entries")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut m: A) -> Result<Self::Value, A::Error> {
                let mut out = Vec::new();
                while let Some(k) = m.next_key::<Sp<String>>()? {
                    out.push((k, m.next_value()?));
                }
                Ok(OrderedMap(out))
            }
        }
        d.deserialize_map(V2(PhantomData))
    }
}

impl<V: JsonSchema> JsonSchema for OrderedMap<V> {
    fn schema_name() -> Cow<'static, str> {
        format!("Map_of_{}", V::schema_name()).into()
    }
    fn json_schema(generator: &mut SchemaGenerator) -> Schema {
        let v = generator.subschema_for::<V>();
        json_schema!({
            "type": "object",
            "propertyNames": { "pattern": NAME_PATTERN },
            "additionalProperties": v,
        })
    }
}

/// Component, window, freeze and rule names: lowercase letters, digits and dashes.
pub const NAME_PATTERN: &str = "^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$";

/// `versions.yaml`: the versions the cluster should run, and where each component's releases
/// come from.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
#[schemars(title = "upkeep desired versions (versions.yaml)")]
pub struct VersionsFile {
    /// Always `upkeep.dev/v1alpha1`.
    #[schemars(extend("enum" = ["upkeep.dev/v1alpha1"]))]
    pub api_version: Sp<String>,
    /// Always `DesiredVersions`.
    #[schemars(extend("enum" = ["DesiredVersions"]))]
    pub kind: Sp<String>,
    /// A name for the cluster, used in PR titles and the dashboard.
    #[serde(default)]
    pub cluster: Option<Sp<String>>,
    /// Tracked components by name. `k3s`, `flux` and `longhorn` are known to upkeep; any other
    /// component needs a `source`.
    pub components: OrderedMap<ComponentEntry>,
}

/// One tracked component.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ComponentEntry {
    /// The version the cluster should run, e.g. `v1.33.4+k3s1`. upkeep's pull requests change
    /// this value and nothing else in the file.
    pub version: Sp<String>,
    /// What to follow upstream: a k3s channel (`stable`, `latest`, `testing`), one release line
    /// (`v1.33`), or `newest`. Default: `stable` for k3s, `newest` for the rest.
    #[serde(default)]
    pub track: Option<Sp<String>>,
    /// How versions are numbered. Default: from the built-in rules, else `semver`.
    #[serde(default)]
    pub scheme: Option<Sp<Scheme>>,
    /// Where releases come from. Default: from the built-in rules; required for other components.
    #[serde(default)]
    pub source: Option<Sp<SourceEntry>>,
    /// Only versions in this range are proposed, e.g. `>=1.9.0, <2.0.0`.
    #[serde(default)]
    pub allowed: Option<Sp<String>>,
    /// The Helm chart whose version this is (e.g. `cert-manager`): upkeep finds the HelmRelease
    /// of this chart (through `chart.spec.chart`, or the URL of its `chartRef` OCIRepository) and
    /// changes its version. Default: the chart of a `helmChart` or OCI chart source; `longhorn`
    /// for Longhorn.
    #[serde(default)]
    pub chart: Option<Sp<String>>,
    /// The image whose tag is this version (e.g. `docker.io/rancher/system-upgrade-controller`),
    /// for a component deployed by a generic chart such as app-template: upkeep changes the
    /// `tag` next to this `repository` in the HelmRelease's values.
    #[serde(default)]
    pub image: Option<Sp<String>>,
    /// Which HelmRelease (`namespace/name`), when several deploy the chart or the image.
    #[serde(default)]
    pub release: Option<Sp<String>>,
}

/// Upstream sources of releases; set one or more.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct SourceEntry {
    /// GitHub releases of `owner/repo`, e.g. `fluxcd/flux2`.
    #[serde(default)]
    pub github_releases: Option<Sp<String>>,
    /// A k3s channel server base URL, e.g. `https://update.k3s.io`.
    #[serde(default)]
    pub channel_server: Option<Sp<String>>,
    /// A chart in a Helm repository index, or in an OCI registry (`oci://`).
    #[serde(default)]
    pub helm_chart: Option<HelmChartEntry>,
    /// The tags of a container image repository in an OCI registry, e.g.
    /// `ghcr.io/fluxcd/flux-cli` (`oci://` may lead; no tag or digest). A registry gives no
    /// dates: a tag's release age counts from when upkeep first saw it.
    #[serde(default)]
    pub oci_image: Option<Sp<String>>,
}

#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct HelmChartEntry {
    /// The repository URL (the directory holding `index.yaml`), or an OCI registry path
    /// `oci://HOST/PATH` (the chart's versions are then the tags of `PATH/CHART`).
    pub repository: Sp<String>,
    /// The chart's name in that index.
    pub chart: Sp<String>,
}

/// A policy file in `policies/`. Any file may hold any of the sections.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
#[schemars(title = "upkeep policy (policies/*.yaml)")]
pub struct PolicyFile {
    /// Always `upkeep.dev/v1alpha1`.
    #[schemars(extend("enum" = ["upkeep.dev/v1alpha1"]))]
    pub api_version: Sp<String>,
    /// Always `Policy`.
    #[schemars(extend("enum" = ["Policy"]))]
    pub kind: Sp<String>,
    /// Maintenance windows: when applying may start.
    #[serde(default)]
    pub windows: Vec<WindowEntry>,
    /// Periods in which nothing starts.
    #[serde(default)]
    pub freezes: Vec<FreezeEntry>,
    /// Which updates are proposed, and how.
    #[serde(default)]
    pub updates: Vec<UpdateEntry>,
    /// Pull-request limits; at most one file may set them.
    #[serde(default)]
    pub pull_requests: Option<Sp<PullRequestsEntry>>,
    /// Overrides of the built-in component rules (scheme, sources, upgrade path), by component.
    #[serde(default)]
    pub component_rules: OrderedMap<ComponentRuleEntry>,
    /// The signed offline release catalog; at most one file may set it.
    #[serde(default)]
    pub catalog: Option<Sp<CatalogEntry>>,
    /// Checks run after every hop of a rollout, besides the built-in ones: an HTTP endpoint
    /// that must answer a status, or a Prometheus query that must stay within bounds.
    #[serde(default)]
    pub checks: Vec<CheckEntry>,
    /// How rollouts run; at most one file may set it.
    #[serde(default)]
    pub rollouts: Option<Sp<RolloutsEntry>>,
    /// How long a rollout is watched after it validated, and what a regression then leads to.
    /// Entries apply in order (files by name, then entries in file order); a later entry
    /// overrides only the fields it sets. Without any: 24h, then `attention`.
    #[serde(default)]
    pub soak: Vec<SoakEntry>,
    /// Where upkeep tells people what happens (Slack, Discord, ntfy, a webhook), and what.
    #[serde(default)]
    pub notifications: Option<Sp<NotificationsEntry>>,
    /// What to do around a rollout: namespaces to mark, workloads to scale down and back.
    #[serde(default)]
    pub maintenance: Vec<MaintenanceEntry>,
    /// Reports the controller makes on its own; at most one file may set it.
    #[serde(default)]
    pub reports: Option<Sp<ReportsEntry>>,
}

/// Reports the controller makes on its own.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ReportsEntry {
    /// Post the last month's update report on the dependency dashboard, once, early each month.
    /// Default false.
    #[serde(default)]
    pub monthly_on_dashboard: Option<Sp<bool>>,
    /// The IANA time zone months and dates are read in, e.g. `Europe/Amsterdam`. Default UTC.
    #[serde(default)]
    pub time_zone: Option<Sp<String>>,
}

/// Maintenance mode around the rollouts of some components: while a rollout changes the
/// cluster (backup, apply, validation, a revert), the namespaces carry the label and annotation
/// `upkeep.dev/maintenance`, and the workloads run 0 replicas; after, each gets back exactly
/// the replicas it had.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct MaintenanceEntry {
    pub name: Sp<String>,
    /// Components whose rollouts put the cluster in maintenance; `["*"]` (the default) for all.
    #[serde(default)]
    pub components: Option<Vec<Sp<String>>>,
    /// Namespaces to label and annotate `upkeep.dev/maintenance` (for alert inhibition,
    /// dashboards, people).
    #[serde(default)]
    pub namespaces: Vec<Sp<String>>,
    /// Workloads to scale to 0 before and back after: `Deployment/<namespace>/<name>` or
    /// `StatefulSet/<namespace>/<name>`.
    #[serde(default)]
    pub scale_down: Vec<Sp<String>>,
}

/// Receivers and what each gets, in the spirit of Flux's notification-controller (`Provider` +
/// `Alert`). Providers and alerts may be spread over several files; names are unique.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct NotificationsEntry {
    #[serde(default)]
    pub providers: Vec<ProviderEntry>,
    #[serde(default)]
    pub alerts: Vec<AlertEntry>,
    /// How long before a window opens `windowOpeningSoon` is sent (when a rollout waits for
    /// it), e.g. `2h`. Default 1h; at most one file may set it.
    #[serde(default)]
    pub window_lead_time: Option<Sp<String>>,
}

/// Where notifications go.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum ProviderType {
    /// A Slack incoming webhook (`https://hooks.slack.com/services/...`).
    Slack,
    /// A Discord webhook (`https://discord.com/api/webhooks/...`).
    Discord,
    /// An ntfy topic (`https://ntfy.sh/<topic>`), optionally with an access token.
    Ntfy,
    /// Any URL: a JSON document per event, with `X-Upkeep-Event-Id` for deduplication.
    Generic,
}

/// A secret read at delivery time, never from the config repository itself.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct SecretSource {
    /// A file holding it (a mounted Secret), e.g. `/var/run/secrets/upkeep/slack-url`.
    #[serde(default)]
    pub file: Option<Sp<String>>,
    /// An environment variable holding it, e.g. `UPKEEP_SLACK_WEBHOOK`.
    #[serde(default)]
    pub env: Option<Sp<String>>,
}

/// A receiver.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ProviderEntry {
    pub name: Sp<String>,
    #[serde(rename = "type")]
    pub type_: Sp<ProviderType>,
    /// The URL, when it is not a secret (an ntfy topic, an internal webhook).
    #[serde(default)]
    pub address: Option<Sp<String>>,
    /// The URL from a secret (Slack and Discord webhook URLs carry their token).
    #[serde(default)]
    pub address_from: Option<Sp<SecretSource>>,
    /// A bearer token from a secret (ntfy access tokens, a generic webhook's).
    #[serde(default)]
    pub token_from: Option<Sp<SecretSource>>,
}

/// What a provider gets.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct AlertEntry {
    pub name: Sp<String>,
    /// The provider's name.
    pub provider: Sp<String>,
    /// The events it gets; default all.
    #[serde(default)]
    pub events: Option<Vec<Sp<NotificationEvent>>>,
    /// Components whose events it gets; `["*"]` (the default) for all.
    #[serde(default)]
    pub components: Option<Vec<Sp<String>>>,
}

/// Something upkeep tells people.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize, Serialize, JsonSchema,
)]
#[serde(rename_all = "camelCase")]
pub enum NotificationEvent {
    /// A window opens within the lead time and a rollout waits for it.
    WindowOpeningSoon,
    /// A rollout started changing the cluster (backup or apply).
    RolloutStarted,
    /// A rollout succeeded (and soaked).
    RolloutSucceeded,
    /// A rollout failed (validation, a node, a timeout, a soak regression).
    RolloutFailed,
    /// A rollout stopped and needs a human.
    NeedsAttention,
    /// A check failed during the soak.
    SoakRegression,
    /// A component's release source has failed for a day.
    SourceFailing,
}

/// A soak rule: after a hop validated, its checks keep running for `duration` before the next
/// hop starts or the rollout counts as `Succeeded`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct SoakEntry {
    pub name: Sp<String>,
    /// Components it covers; `["*"]` (the default) for all.
    #[serde(default)]
    pub components: Option<Vec<Sp<String>>>,
    /// How long to watch, e.g. `24h` or `2d`; `0` skips the soak. Default 24h.
    #[serde(default)]
    pub duration: Option<Sp<String>>,
    /// What a regression leads to: `attention` (stop, report, a human decides; the default) or
    /// `rollback` (roll back where the component can be, Flux within a minor, and revert
    /// versions.yaml; where it cannot, `attention`).
    #[serde(default)]
    pub on_regression: Option<Sp<OnRegression>>,
}

/// What a regression during the soak leads to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, JsonSchema, Default)]
#[serde(rename_all = "lowercase")]
pub enum OnRegression {
    /// Stop and ask a human (`RequiresAttention`); nothing is changed.
    #[default]
    Attention,
    /// Roll back where the component supports it and commit a revert of versions.yaml.
    Rollback,
}

/// When a check runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Stage {
    /// Once after each hop, before the next step.
    Validation,
    /// Throughout the soak that follows.
    Soak,
}

/// How rollouts run.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RolloutsEntry {
    /// How many k3s agents upgrade at once (servers always go one at a time). Default 1.
    #[serde(default)]
    pub agent_concurrency: Option<Sp<u64>>,
    /// Drain agents before upgrading them (servers are cordoned). Default true.
    #[serde(default)]
    pub drain: Option<Sp<bool>>,
    /// Take a backup (etcd snapshot, Longhorn backup) before applying. Default true.
    #[serde(default)]
    pub backup: Option<Sp<bool>>,
    /// Start a Longhorn upgrade with degraded (not faulted) volumes. Default false.
    #[serde(default)]
    pub allow_degraded_volumes: Option<Sp<bool>>,
    /// How long one hop may take before it counts as failed, e.g. `60m`. Default 60m.
    #[serde(default)]
    pub hop_timeout: Option<Sp<String>>,
    /// How many ended rollout objects the cluster keeps; older ones are deleted once git's log
    /// holds their merge (so `upkeep history` still lists them). Failures nobody acknowledged
    /// are always kept. Default 50.
    #[serde(default)]
    pub keep_ended: Option<Sp<u64>>,
}

/// One validation check (exactly one of `http` and `prometheus`).
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct CheckEntry {
    pub name: Sp<String>,
    /// Components whose rollouts run it; `["*"]` (the default) for all.
    #[serde(default)]
    pub components: Option<Vec<Sp<String>>>,
    #[serde(default)]
    pub http: Option<Sp<HttpCheckEntry>>,
    #[serde(default)]
    pub prometheus: Option<Sp<PrometheusCheckEntry>>,
    /// When it runs: `[validation, soak]` (the default), or one of them. An error-rate or restart
    /// query that a node's restart trips right after the hop suits `[soak]`.
    #[serde(default)]
    pub during: Option<Vec<Sp<Stage>>>,
}

/// `GET url` must answer `expectStatus` (default 200).
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct HttpCheckEntry {
    pub url: Sp<String>,
    #[serde(default)]
    pub expect_status: Option<Sp<u16>>,
}

/// A Prometheus instant query (`GET <url>/api/v1/query?query=...`) whose first value must be at
/// most `max` and at least `min` (at least one of them).
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct PrometheusCheckEntry {
    /// The Prometheus server, e.g. `http://prometheus.monitoring:9090`.
    pub url: Sp<String>,
    pub query: Sp<String>,
    #[serde(default)]
    pub max: Option<Sp<f64>>,
    #[serde(default)]
    pub min: Option<Sp<f64>>,
}

/// How offline release catalogs are verified.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct CatalogEntry {
    /// The minisign public key that signs the catalog (the `RW...` line of the `.pub` file).
    pub public_key: Sp<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum WindowKind {
    /// Work may start only inside allow windows (when any covers the component).
    Allow,
    /// No work starts while a deny window is active; deny beats allow.
    Deny,
}

/// A maintenance window.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct WindowEntry {
    pub name: Sp<String>,
    pub kind: Sp<WindowKind>,
    /// When the window opens, in the 5-field crontab form (`minute hour day-of-month month
    /// day-of-week`, Sunday = 0 or 7), e.g. `0 22 * * 6` for Saturdays at 22:00.
    pub schedule: Sp<String>,
    /// How long it stays open, e.g. `4h` or `1h30m`.
    pub duration: Sp<String>,
    /// The IANA time zone the schedule is read in, e.g. `Europe/Amsterdam`.
    pub time_zone: Sp<String>,
    /// Components it covers; `["*"]` (the default) for all.
    #[serde(default)]
    pub components: Option<Vec<Sp<String>>>,
}

/// A freeze: nothing starts between `from` and `to`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct FreezeEntry {
    pub name: Sp<String>,
    /// Start, `2026-12-20T00:00` (read in `timeZone`) or RFC 3339 with an offset.
    pub from: Sp<String>,
    /// End (exclusive), same forms as `from`.
    pub to: Sp<String>,
    /// The IANA time zone for `from` and `to` without an offset.
    #[serde(default)]
    pub time_zone: Option<Sp<String>>,
    /// Components it covers; `["*"]` (the default) for all.
    #[serde(default)]
    pub components: Option<Vec<Sp<String>>>,
    /// Why, shown in reports.
    #[serde(default)]
    pub reason: Option<String>,
}

/// An update rule. Rules apply in order (files by name, then rules in file order); a later rule
/// overrides only the fields it sets.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct UpdateEntry {
    pub name: Sp<String>,
    /// Components it applies to; `["*"]` (the default) for all.
    #[serde(default)]
    pub components: Option<Vec<Sp<String>>>,
    /// Which update levels are proposed. Default: `[revision, patch, minor]`.
    #[serde(default)]
    pub propose: Option<Vec<Sp<Level>>>,
    /// How old a release must be before it is proposed: one duration for all levels (`3d`), or
    /// per level (`{minor: 14d}`).
    #[serde(default)]
    pub minimum_release_age: Option<Sp<ReleaseAgeEntry>>,
    /// Whether pre-releases may be proposed. Default: false. Development builds never are.
    #[serde(default)]
    pub prerelease: Option<bool>,
    /// Hold the component at a version (`v1.33.4+k3s1`) or on a release line (`v1.33`).
    #[serde(default)]
    pub pin: Option<Sp<String>>,
    /// Versions never to propose.
    #[serde(default)]
    pub ignore: Option<Vec<Sp<String>>>,
    /// Whether a merged update may apply outside windows when its PR carries a label.
    #[serde(default)]
    pub emergency: Option<EmergencyEntry>,
    /// Stop proposing and starting updates (work in progress finishes safely).
    #[serde(default)]
    pub paused: Option<bool>,
}

/// Minimum release age: a duration for every level, or one per level.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReleaseAgeEntry {
    pub revision: Option<String>,
    pub patch: Option<String>,
    pub minor: Option<String>,
    pub major: Option<String>,
}

impl JsonSchema for ReleaseAgeEntry {
    fn schema_name() -> Cow<'static, str> {
        "ReleaseAge".into()
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        let d = json_schema!({ "type": "string", "pattern": DURATION_PATTERN });
        json_schema!({
            "description": "A duration for every level (`3d`), or one per level (`{minor: 14d}`).",
            "anyOf": [
                d,
                {
                    "type": "object",
                    "additionalProperties": false,
                    "properties": { "revision": d, "patch": d, "minor": d, "major": d }
                }
            ]
        })
    }
}

/// Durations: `0`, or numbers with units s, m, h, d, w (`4h`, `1h30m`, `7d`).
pub const DURATION_PATTERN: &str = "^(0|([0-9]+[smhdw])+)$";

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ReleaseAgeLevels {
    revision: Option<String>,
    patch: Option<String>,
    minor: Option<String>,
    major: Option<String>,
}

impl<'de> Deserialize<'de> for ReleaseAgeEntry {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = ReleaseAgeEntry;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str(
                    "a duration like `7d`, or a mapping of levels to durations like `{minor: 14d}`",
                )
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<Self::Value, E> {
                let s = Some(s.to_string());
                Ok(ReleaseAgeEntry {
                    revision: s.clone(),
                    patch: s.clone(),
                    minor: s.clone(),
                    major: s,
                })
            }
            fn visit_u64<E: de::Error>(self, n: u64) -> Result<Self::Value, E> {
                self.visit_str(&n.to_string())
            }
            fn visit_map<A: MapAccess<'de>>(self, m: A) -> Result<Self::Value, A::Error> {
                let l = ReleaseAgeLevels::deserialize(de::value::MapAccessDeserializer::new(m))?;
                Ok(ReleaseAgeEntry {
                    revision: l.revision,
                    patch: l.patch,
                    minor: l.minor,
                    major: l.major,
                })
            }
        }
        d.deserialize_any(V)
    }
}

/// The emergency override.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct EmergencyEntry {
    /// Whether the override is honoured. Default: true when this block is present.
    #[serde(default)]
    pub allowed: Option<bool>,
    /// The PR label that asks for it. Default: `upkeep/emergency`.
    #[serde(default)]
    pub label: Option<Sp<String>>,
    /// Whether it also goes through freezes. Default: false.
    #[serde(default)]
    pub bypass_freezes: Option<bool>,
}

/// Pull-request limits.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct PullRequestsEntry {
    /// Most upkeep PRs open at once. Default: 10.
    #[serde(default)]
    pub concurrent_limit: Option<u32>,
    /// Most upkeep PRs opened per hour. Default: 2.
    #[serde(default)]
    pub hourly_limit: Option<u32>,
    /// When a newer version supersedes an open PR, update that PR in place (true, the default)
    /// or open a new one and close the old.
    #[serde(default)]
    pub one_per_component: Option<bool>,
}

/// Rules about a component that upkeep knows by name (built in for k3s, Flux and Longhorn).
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ComponentRuleEntry {
    /// What the component is, for reports.
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default)]
    pub scheme: Option<Sp<Scheme>>,
    /// The default `track`.
    #[serde(default)]
    pub track: Option<Sp<String>>,
    /// The default upstream sources.
    #[serde(default)]
    pub source: Option<Sp<SourceEntry>>,
    /// Which hops are legal.
    #[serde(default)]
    pub upgrade_path: Option<Sp<PathRule>>,
    /// What a failed upgrade means for this component, for PR reports.
    #[serde(default)]
    pub on_failure: Option<String>,
}

/// The JSON Schemas of the two file formats, as pretty JSON.
pub fn schemas() -> [(&'static str, String); 2] {
    let versions = schemars::schema_for!(VersionsFile);
    let policy = schemars::schema_for!(PolicyFile);
    let pretty = |s: &Schema| serde_json::to_string_pretty(s).unwrap_or_default() + "\n";
    [
        ("versions.schema.json", pretty(&versions)),
        ("policy.schema.json", pretty(&policy)),
    ]
}
