//! The cluster as upkeep reads it: what runs, not what was asked. [`observe`] reads nodes,
//! system-upgrade-controller Plans, PodDisruptionBudgets and their pods, HelmReleases,
//! FluxInstances, Kustomizations, Longhorn volumes and settings through the `kube` crate into
//! [`Observed`], plain data that the pure decisions (preflight, rollout, validation) work on.
//! Per-node versions are kept: a cluster can be mixed.

use std::path::Path;

use kube::api::{Api, DynamicObject, ListParams};
use kube::core::{ApiResource, GroupVersionKind};
use serde::Deserialize;
use serde::Serialize;
use serde_json::Value;

use crate::layout::route::Route;
use crate::versions::{self, Scheme, Version};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot read the kubeconfig {path}: {message} (pass --kubeconfig or set KUBECONFIG)")]
    Kubeconfig { path: String, message: String },
    #[error("{what}: {}", describe_parts(*.code, message))]
    Api {
        what: String,
        /// The HTTP status, when the API server answered.
        code: Option<u16>,
        message: String,
    },
}

impl Error {
    /// The error of `what` (`reading nodes`, ...) from kube's error, in words.
    pub fn from_kube(what: impl Into<String>, e: &kube::Error) -> Error {
        let (code, message) = parts(e);
        Error::Api {
            what: what.into(),
            code,
            message,
        }
    }
}

/// A kube error as the status the API server answered (if it did) and its message, without
/// kube's debug structures.
fn parts(e: &kube::Error) -> (Option<u16>, String) {
    match e {
        kube::Error::Api(r) => (Some(r.code), r.message.clone()),
        other => (None, crate::sources::http::error_chain(other)),
    }
}

fn describe_parts(code: Option<u16>, message: &str) -> String {
    match code {
        None => format!(
            "cannot reach the Kubernetes API: {message} (hint: is the cluster up, and does --kubeconfig or KUBECONFIG point at it?)"
        ),
        Some(401) => format!(
            "the Kubernetes API did not accept upkeep's credentials (401 {message}) (hint: the token in the kubeconfig, or the pod's service account token, is invalid or expired)"
        ),
        Some(403) => format!(
            "the Kubernetes API refused it (403): {message} (hint: check RBAC: deploy/manifests/upkeep.yaml grants what upkeep needs)"
        ),
        Some(c) => format!("the Kubernetes API answered {c}: {message}"),
    }
}

/// A kube error in words: what the API server said, or that it could not be reached, with the
/// likely cause (never kube's debug structures).
pub fn describe(e: &kube::Error) -> String {
    let (code, message) = parts(e);
    describe_parts(code, &message)
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A client from a kubeconfig file, or from the environment (in-cluster or `KUBECONFIG`).
pub async fn client(kubeconfig: Option<&Path>) -> Result<kube::Client> {
    let bad = |path: &str, e: String| Error::Kubeconfig {
        path: path.to_string(),
        message: e,
    };
    let cfg = match kubeconfig {
        Some(p) => {
            let kc = kube::config::Kubeconfig::read_from(p)
                .map_err(|e| bad(&p.display().to_string(), e.to_string()))?;
            kube::Config::from_custom_kubeconfig(kc, &Default::default())
                .await
                .map_err(|e| bad(&p.display().to_string(), e.to_string()))?
        }
        None => kube::Config::infer()
            .await
            .map_err(|e| bad("(inferred)", e.to_string()))?,
    };
    kube::Client::try_from(cfg).map_err(|e| bad("(client)", e.to_string()))
}

/// Where the platform's parts live. The defaults are upstream's; a cluster that installs them
/// elsewhere says so in the controller's configuration (and the RBAC follows, see deploy/).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct Namespaces {
    /// The system-upgrade-controller's namespace: upkeep's Plans go there (SUC watches only
    /// its own namespace).
    pub system_upgrade: String,
    /// Where the etcd snapshot Job runs.
    pub snapshots: String,
    /// Longhorn's namespace (its settings, volumes, backups).
    pub longhorn: String,
}

impl Default for Namespaces {
    fn default() -> Namespaces {
        Namespaces {
            system_upgrade: "system-upgrade".into(),
            snapshots: "kube-system".into(),
            longhorn: "longhorn-system".into(),
        }
    }
}

/// upkeep's own Plans: the server Plan, then the agent Plan.
pub const SERVER_PLAN: &str = "upkeep-server";
pub const AGENT_PLAN: &str = "upkeep-agent";

/// One node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeState {
    pub name: String,
    pub server: bool,
    pub etcd: bool,
    /// `status.nodeInfo.kubeletVersion`.
    pub version: String,
    pub ready: bool,
    pub unschedulable: bool,
    /// k3s' data directory on the node (`--data-dir` in the `k3s.io/node-args` annotation).
    pub data_dir: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PlanState {
    pub namespace: String,
    pub name: String,
    pub version: String,
    /// `spec.upgrade.image`.
    pub image: String,
    pub complete: bool,
    pub failed: Option<String>,
    pub applying: Vec<String>,
    /// Flux applies this Plan from git (kustomize-controller's labels).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub flux: Option<FluxManaged>,
}

impl PlanState {
    /// One of upkeep's own Plans (not another k3s Plan in the same namespace).
    pub fn upkeeps(&self) -> bool {
        self.name == SERVER_PLAN || self.name == AGENT_PLAN
    }
}

/// A PodDisruptionBudget that allows no disruption, and the nodes of the pods it guards.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct BlockingPdb {
    pub namespace: String,
    pub name: String,
    pub nodes: Vec<String>,
    /// One of Longhorn's instance-manager PDBs, which Longhorn removes itself once the node is
    /// cordoned and its volumes are detached (`syncInstanceManagerPDB`).
    pub longhorn_instance_manager: bool,
}

/// A Flux object's health (HelmRelease, Kustomization, FluxInstance).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Health {
    pub kind: String,
    pub namespace: String,
    pub name: String,
    /// Ready=True and observedGeneration == generation.
    pub ready: bool,
    pub reason: String,
    pub message: String,
    /// What runs: a HelmRelease's `history[0].chartVersion`, a FluxInstance's applied version.
    pub running: Option<String>,
    /// What is asked: the chart version or distribution version in the spec.
    pub desired: Option<String>,
    /// A HelmRelease's chart name: the one Helm installed (`status.history[0].chartName`),
    /// else `spec.chart.spec.chart`.
    pub chart: Option<String>,
    /// A HelmRelease's images in its values: (`repository`, `tag`) of each mapping that has both.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub images: Vec<(String, String)>,
    /// Flux applies this object from git (kustomize-controller's labels), and how.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub flux: Option<FluxManaged>,
    /// A HelmRelease's `spec.chartRef` (`Kind/namespace/name` of an OCIRepository or
    /// HelmChart): its chart version is not in the HelmRelease.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub chart_ref: Option<String>,
    /// A Kustomization's `spec.path` in its source.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// A Kustomization's `spec.sourceRef`, `Kind/namespace/name`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// A HelmRelease's `spec.targetNamespace`: where Helm installs the chart, when not the
    /// release's own namespace.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target_namespace: Option<String>,
    /// A suspended Kustomization's `upkeep.dev/suspended-by`: the rollout of upkeep's that
    /// suspended it to hold the k3s Plans it applies.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub suspended_by: Option<String>,
}

/// An object Flux's kustomize-controller applies from git.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct FluxManaged {
    /// The Kustomization that applies it, `namespace/name`.
    pub kustomization: String,
    /// kustomize-controller owns the version field (it sets it from git) and re-applies it
    /// on every reconcile: a version set by anyone else is taken back.
    pub owns_version: bool,
    /// `kustomize.toolkit.fluxcd.io/ssa: IfNotPresent`: Flux creates it and never updates it.
    pub if_not_present: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct UpgradeJob {
    pub plan: String,
    pub node: String,
    /// The version in the dash form the SUC writes.
    pub version: String,
    pub started: Option<chrono::DateTime<chrono::Utc>>,
    pub completed: Option<chrono::DateTime<chrono::Utc>>,
    pub failed: bool,
}

impl UpgradeJob {
    /// Still running (neither completed nor failed).
    pub fn active(&self) -> bool {
        self.completed.is_none() && !self.failed
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct VolumeState {
    pub name: String,
    pub robustness: String,
    pub state: String,
    /// `spec.numberOfReplicas`.
    pub replicas: u64,
    /// The node it is attached to (`status.currentNodeID`).
    pub node: String,
}

/// Everything upkeep reads from the cluster, as plain data.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Observed {
    pub nodes: Vec<NodeState>,
    /// The Plan CRD is served (the system-upgrade-controller is installed).
    pub suc_installed: bool,
    pub plans: Vec<PlanState>,
    pub blocking_pdbs: Vec<BlockingPdb>,
    pub helm_releases: Vec<Health>,
    pub flux_instances: Vec<Health>,
    pub kustomizations: Vec<Health>,
    pub volumes: Vec<VolumeState>,
    /// Where Longhorn runs: its release's namespace, or the configured one.
    pub longhorn_namespace: String,
    /// `settings.longhorn.io/current-longhorn-version`.
    pub longhorn_version: Option<String>,
    /// Longhorn's backup target, when usable: the `BackupTarget` `default` when available
    /// (Longhorn 1.8 on, where the `backup-target` setting is gone), else that setting.
    pub longhorn_backup_target: Option<String>,
    /// Whether the `longhorn-manager` DaemonSet runs its current template everywhere (Longhorn's
    /// own upgrade goes on after Helm returns).
    pub longhorn_manager_rolled_out: Option<bool>,
    /// The system-upgrade-controller's upgrade Jobs: node, version, start and end.
    pub upgrade_jobs: Vec<UpgradeJob>,
    /// The `app.kubernetes.io/version` label of the GitRepository CRD (Flux's version).
    pub flux_crd_version: Option<String>,
    /// How each component's version reaches the cluster (by component), decided by the caller
    /// from the config repository's layout (not read from the cluster): see [`crate::route`].
    #[serde(skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub routes: std::collections::BTreeMap<String, Route>,
}

/// What runs of one component.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase", tag = "state")]
pub enum Running {
    /// One version everywhere.
    At { version: String },
    /// Nodes disagree (k3s): node name -> version.
    Mixed { nodes: Vec<(String, String)> },
    /// Nothing in the cluster says.
    Unknown,
}

impl Running {
    /// The lowest version running (for a mixed cluster, the one every node has reached).
    pub fn lowest(&self, scheme: Scheme) -> Option<Version> {
        match self {
            Running::At { version } => versions::parse(version, scheme).ok(),
            Running::Mixed { nodes } => nodes
                .iter()
                .filter_map(|(_, v)| versions::parse(v, scheme).ok())
                .min(),
            Running::Unknown => None,
        }
    }
}

fn v_prefixed(v: &str) -> String {
    if v.starts_with('v') {
        v.to_string()
    } else {
        format!("v{v}")
    }
}

impl Observed {
    /// What runs of a component: k3s from the nodes, Flux from its FluxInstance (or the CRD
    /// label), a chart from the one HelmRelease of that chart (Longhorn also from its
    /// `current-longhorn-version` setting), an image from its tag in that release's values.
    /// Never from a release that merely has the component's name.
    pub fn running(&self, c: &crate::model::Component) -> Running {
        use crate::model::Runs;
        match &c.runs {
            Runs::K3s => {
                let mut vs: Vec<(String, String)> = self
                    .nodes
                    .iter()
                    .map(|n| (n.name.clone(), n.version.clone()))
                    .collect();
                vs.sort();
                let first = vs.first().map(|(_, v)| v.clone());
                match first {
                    None => Running::Unknown,
                    Some(f) if vs.iter().all(|(_, v)| *v == f) => Running::At { version: f },
                    Some(_) => Running::Mixed { nodes: vs },
                }
            }
            Runs::Flux => self
                .flux_instances
                .iter()
                .find_map(|f| f.running.clone())
                .or_else(|| self.flux_crd_version.clone())
                .map_or(Running::Unknown, |v| Running::At {
                    version: v_prefixed(&v),
                }),
            Runs::Chart { chart, .. } => self
                .release_of(&c.runs)
                .and_then(|h| h.running.clone())
                .or_else(|| {
                    if chart == "longhorn" {
                        self.longhorn_version.clone()
                    } else {
                        None
                    }
                })
                .map_or(Running::Unknown, |v| Running::At {
                    version: v_prefixed(&v),
                }),
            Runs::Image { image, .. } => {
                let want = crate::layout::carriers::image_key(image);
                self.release_of(&c.runs)
                    .and_then(|h| {
                        h.images
                            .iter()
                            .find(|(r, _)| crate::layout::carriers::image_key(r) == want)
                            .map(|(_, t)| t.split('@').next().unwrap_or(t).to_string())
                    })
                    .map_or(Running::Unknown, |v| Running::At {
                        version: v_prefixed(&v),
                    })
            }
            Runs::Unknown => Running::Unknown,
        }
    }

    /// The HelmRelease that carries a component's version: the one `release:` names (if it
    /// deploys the component's chart), else the only release of its chart (or using its
    /// image). `None` when there is none or several: never a guess by name.
    pub fn release_of(&self, runs: &crate::model::Runs) -> Option<&Health> {
        use crate::model::Runs;
        let named = |h: &&Health| {
            runs.release()
                .is_none_or(|(ns, n)| h.namespace == ns && h.name == n)
        };
        let mut found: Vec<&Health> = match runs {
            Runs::Chart { chart, .. } => self
                .helm_releases
                .iter()
                .filter(named)
                .filter(|h| h.chart.as_deref() == Some(chart.as_str()))
                .collect(),
            Runs::Image { image, .. } => {
                let want = crate::layout::carriers::image_key(image);
                self.helm_releases
                    .iter()
                    .filter(named)
                    .filter(|h| {
                        h.images
                            .iter()
                            .any(|(r, _)| crate::layout::carriers::image_key(r) == want)
                    })
                    .collect()
            }
            _ => Vec::new(),
        };
        (found.len() == 1).then(|| found.remove(0))
    }
}

/// Every `{repository, tag}` mapping in Helm values (bounded depth).
fn values_images(v: &Value, out: &mut Vec<(String, String)>, depth: usize) {
    if depth > 16 {
        return;
    }
    match v {
        Value::Object(m) => {
            if let (Some(r), Some(t)) = (
                m.get("repository").and_then(Value::as_str),
                m.get("tag").and_then(|t| {
                    t.as_str()
                        .map(str::to_string)
                        .or_else(|| t.as_f64().map(|f| f.to_string()))
                }),
            ) {
                out.push((r.to_string(), t));
            }
            for x in m.values() {
                values_images(x, out, depth + 1);
            }
        }
        Value::Array(a) => {
            for x in a {
                values_images(x, out, depth + 1);
            }
        }
        _ => {}
    }
}

fn s(v: &Value, p: &str) -> String {
    v.pointer(p)
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string()
}

fn condition<'a>(v: &'a Value, kind: &str) -> Option<&'a Value> {
    v.pointer("/status/conditions")?
        .as_array()?
        .iter()
        .find(|c| c["type"] == kind)
}

fn health(kind: &str, v: &Value) -> Health {
    let ready = condition(v, "Ready");
    let generation = v.pointer("/metadata/generation").and_then(Value::as_i64);
    // flux-operator's FluxInstance has no `status.observedGeneration`, only its Ready
    // condition's (controlplaneio-fluxcd/flux-operator: conditions only).
    let observed = v
        .pointer("/status/observedGeneration")
        .or_else(|| ready?.get("observedGeneration"))
        .and_then(Value::as_i64);
    Health {
        kind: kind.to_string(),
        namespace: s(v, "/metadata/namespace"),
        name: s(v, "/metadata/name"),
        ready: ready.is_some_and(|c| c["status"] == "True")
            && (generation.is_none() || generation == observed),
        reason: ready.map(|c| s(c, "/reason")).unwrap_or_default(),
        message: ready.map(|c| s(c, "/message")).unwrap_or_default(),
        running: None,
        desired: None,
        chart: None,
        images: Vec::new(),
        flux: None,
        chart_ref: None,
        path: None,
        source: None,
        target_namespace: None,
        suspended_by: None,
    }
}

/// Whether `manager` owns the field at `path` (`["spec", "chart", ...]`) per `managedFields`.
fn owns(v: &Value, manager: &str, path: &[&str]) -> bool {
    v.pointer("/metadata/managedFields")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter(|m| m["manager"] == manager)
        .any(|m| {
            let mut cur = &m["fieldsV1"];
            for p in path {
                match cur.get(format!("f:{p}")) {
                    Some(next) => cur = next,
                    None => return false,
                }
            }
            true
        })
}

/// How Flux manages an object whose version lives at `version_path`, if it does.
fn flux_managed(v: &Value, version_path: &[&str]) -> Option<FluxManaged> {
    let labels = v.pointer("/metadata/labels")?;
    let name = labels.get("kustomize.toolkit.fluxcd.io/name")?.as_str()?;
    let ns = labels
        .get("kustomize.toolkit.fluxcd.io/namespace")
        .and_then(Value::as_str)
        .unwrap_or("");
    Some(FluxManaged {
        kustomization: format!("{ns}/{name}"),
        owns_version: owns(v, "kustomize-controller", version_path),
        if_not_present: v
            .pointer("/metadata/annotations/kustomize.toolkit.fluxcd.io~1ssa")
            .and_then(Value::as_str)
            .is_some_and(|x| x.eq_ignore_ascii_case("IfNotPresent")),
    })
}

/// Where and what to read: a kind, in one namespace or all, filtered by labels.
struct Query<'a> {
    group: &'a str,
    version: &'a str,
    kind: &'a str,
    plural: &'a str,
    namespace: Option<&'a str>,
    labels: Option<String>,
}

impl<'a> Query<'a> {
    fn new(group: &'a str, version: &'a str, kind: &'a str, plural: &'a str) -> Query<'a> {
        Query {
            group,
            version,
            kind,
            plural,
            namespace: None,
            labels: None,
        }
    }
    fn ns(mut self, ns: &'a str) -> Query<'a> {
        self.namespace = Some(ns);
        self
    }
    fn labels(mut self, selector: String) -> Query<'a> {
        self.labels = Some(selector);
        self
    }
    fn api(&self, client: &kube::Client) -> Api<DynamicObject> {
        let gvk = GroupVersionKind::gvk(self.group, self.version, self.kind);
        let ar = ApiResource::from_gvk_with_plural(&gvk, self.plural);
        match self.namespace {
            Some(ns) => Api::namespaced_with(client.clone(), ns, &ar),
            None => Api::all_with(client.clone(), &ar),
        }
    }
    fn refused(&self, e: kube::Error) -> Error {
        Error::from_kube(
            format!(
                "reading {}.{}{}",
                self.plural,
                self.group,
                self.namespace
                    .map_or(String::new(), |n| format!(" in namespace {n}"))
            ),
            &e,
        )
    }
}

/// Read a list as JSON; a kind that is not served is an empty list and `false`. Lists are
/// served from the API server's cache (`resourceVersion=0`): upkeep needs no quorum read.
async fn list(client: &kube::Client, q: Query<'_>) -> Result<(bool, Vec<Value>)> {
    let mut lp = ListParams::default().match_any();
    if let Some(l) = &q.labels {
        lp = lp.labels(l);
    }
    match q.api(client).list(&lp).await {
        Ok(l) => Ok((
            true,
            l.items
                .into_iter()
                .filter_map(|o| serde_json::to_value(o).ok())
                .collect(),
        )),
        Err(kube::Error::Api(e)) if e.code == 404 => Ok((false, Vec::new())),
        Err(e) => Err(q.refused(e)),
    }
}

/// Read one object; missing (or its kind not served) is `None`.
async fn get(client: &kube::Client, q: Query<'_>, name: &str) -> Result<Option<Value>> {
    match q.api(client).get_opt(name).await {
        Ok(o) => Ok(o.and_then(|o| serde_json::to_value(o).ok())),
        Err(kube::Error::Api(e)) if e.code == 404 => Ok(None),
        Err(e) => Err(q.refused(e)),
    }
}

/// A label selector object (`matchLabels`, `matchExpressions`) in the query-string form the API
/// takes; `None` for one that selects nothing (`null`) or cannot be written that way.
pub fn selector_string(sel: &Value) -> Option<String> {
    if !sel.is_object() {
        return None;
    }
    let mut parts = Vec::new();
    for (k, v) in sel
        .get("matchLabels")
        .and_then(Value::as_object)
        .into_iter()
        .flatten()
    {
        parts.push(format!("{k}={}", v.as_str()?));
    }
    for e in sel
        .get("matchExpressions")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let key = e.get("key")?.as_str()?;
        let values: Vec<&str> = e
            .get("values")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect();
        parts.push(match e.get("operator")?.as_str()? {
            "In" => format!("{key} in ({})", values.join(",")),
            "NotIn" => format!("{key} notin ({})", values.join(",")),
            "Exists" => key.to_string(),
            "DoesNotExist" => format!("!{key}"),
            _ => return None,
        });
    }
    Some(parts.join(","))
}

fn node_state(n: &Value) -> NodeState {
    let labels = n
        .pointer("/metadata/labels")
        .cloned()
        .unwrap_or(Value::Null);
    let label = |k: &str| labels.get(k).and_then(Value::as_str) == Some("true");
    let args: Vec<String> = serde_json::from_str(
        n.pointer("/metadata/annotations/k3s.io~1node-args")
            .and_then(Value::as_str)
            .unwrap_or("[]"),
    )
    .unwrap_or_default();
    let data_dir = args
        .iter()
        .enumerate()
        .find_map(|(i, a)| match a.as_str() {
            "--data-dir" | "-d" => args.get(i + 1).cloned(),
            _ => a.strip_prefix("--data-dir=").map(str::to_string),
        })
        .unwrap_or_else(|| "/var/lib/rancher/k3s".into());
    NodeState {
        name: s(n, "/metadata/name"),
        server: label("node-role.kubernetes.io/control-plane"),
        etcd: label("node-role.kubernetes.io/etcd"),
        version: s(n, "/status/nodeInfo/kubeletVersion"),
        ready: condition(n, "Ready").is_some_and(|c| c["status"] == "True"),
        unschedulable: n.pointer("/spec/unschedulable").and_then(Value::as_bool) == Some(true),
        data_dir,
    }
}

fn plan_state(p: &Value) -> PlanState {
    let complete = condition(p, "Complete");
    PlanState {
        namespace: s(p, "/metadata/namespace"),
        name: s(p, "/metadata/name"),
        version: s(p, "/spec/version"),
        image: s(p, "/spec/upgrade/image"),
        complete: complete.is_some_and(|c| c["status"] == "True"),
        failed: complete
            .filter(|c| c["reason"] == "JobFailed")
            .map(|c| s(c, "/message")),
        applying: p
            .pointer("/status/applying")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|x| x.as_str().map(str::to_string))
            .collect(),
        flux: flux_managed(p, &["spec", "version"]),
    }
}

fn upgrade_job(j: &Value) -> UpgradeJob {
    let time = |p: &str| {
        j.pointer(p)
            .and_then(Value::as_str)
            .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
            .map(|t| t.with_timezone(&chrono::Utc))
    };
    // A failed Job has no completionTime: it ended when its Failed condition turned true.
    let failed_at = condition(j, "Failed")
        .filter(|c| c["status"] == "True")
        .and_then(|c| c.get("lastTransitionTime"))
        .and_then(Value::as_str)
        .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
        .map(|t| t.with_timezone(&chrono::Utc));
    UpgradeJob {
        plan: s(j, "/metadata/labels/upgrade.cattle.io~1plan"),
        node: s(j, "/metadata/labels/upgrade.cattle.io~1node"),
        version: s(j, "/metadata/labels/upgrade.cattle.io~1version"),
        started: time("/status/startTime"),
        completed: time("/status/completionTime").or(failed_at),
        // Failed is the Job's condition, not `status.failed` (a count of failed pods): SUC's
        // Jobs retry (`backoffLimit: 2`), and one pod failing as k3s restarts is common.
        failed: failed_at.is_some(),
    }
}

/// The PodDisruptionBudgets that allow no disruption, with the nodes of the pods they guard.
/// A Longhorn instance-manager PDB names its node in its selector; for the others the pods it
/// selects are read, and only those.
async fn blocking_pdbs(client: &kube::Client) -> Result<Vec<BlockingPdb>> {
    let (_, pdbs) = list(
        client,
        Query::new(
            "policy",
            "v1",
            "PodDisruptionBudget",
            "poddisruptionbudgets",
        ),
    )
    .await?;
    let mut out = Vec::new();
    for pdb in &pdbs {
        if pdb
            .pointer("/status/disruptionsAllowed")
            .and_then(Value::as_i64)
            != Some(0)
        {
            continue;
        }
        let ns = s(pdb, "/metadata/namespace");
        let sel = pdb.pointer("/spec/selector").unwrap_or(&Value::Null);
        let im_node = sel
            .pointer("/matchLabels/longhorn.io~1component")
            .filter(|c| *c == "instance-manager")
            .and(sel.pointer("/matchLabels/longhorn.io~1node"))
            .and_then(Value::as_str);
        let mut nodes: Vec<String> = match (im_node, selector_string(sel)) {
            (Some(node), _) => vec![node.to_string()],
            (None, Some(labels)) => list(
                client,
                Query::new("", "v1", "Pod", "pods").ns(&ns).labels(labels),
            )
            .await?
            .1
            .iter()
            .map(|p| s(p, "/spec/nodeName"))
            .filter(|n| !n.is_empty())
            .collect(),
            (None, None) => Vec::new(),
        };
        nodes.sort();
        nodes.dedup();
        out.push(BlockingPdb {
            namespace: ns,
            name: s(pdb, "/metadata/name"),
            nodes,
            longhorn_instance_manager: im_node.is_some(),
        });
    }
    Ok(out)
}

/// Read what runs: a list per kind upkeep judges, narrowed by namespace and labels, and single
/// objects by name; no CustomResourceDefinition list, no Pod list beyond what a blocking PDB
/// selects.
pub async fn observe(client: &kube::Client, ns: &Namespaces) -> Result<Observed> {
    let mut o = Observed::default();
    // Plans and Jobs before nodes: a Job seen failed is judged against nodes read after it, so a
    // node that upgraded as its Job failed is seen upgraded, not failed.
    // SUC reads Plans only in its own namespace.
    let (served, plans) = list(
        client,
        Query::new("upgrade.cattle.io", "v1", "Plan", "plans").ns(&ns.system_upgrade),
    )
    .await?;
    o.suc_installed = served;
    o.plans = plans.iter().map(plan_state).collect();
    if served {
        let (_, jobs) = list(
            client,
            Query::new("batch", "v1", "Job", "jobs")
                .ns(&ns.system_upgrade)
                .labels(format!(
                    "upgrade.cattle.io/plan in ({SERVER_PLAN},{AGENT_PLAN})"
                )),
        )
        .await?;
        o.upgrade_jobs = jobs.iter().map(upgrade_job).collect();
    }
    let (_, nodes) = list(client, Query::new("", "v1", "Node", "nodes")).await?;
    o.nodes = nodes.iter().map(node_state).collect();
    o.nodes.sort_by(|a, b| a.name.cmp(&b.name));
    o.blocking_pdbs = blocking_pdbs(client).await?;
    let (_, hrs) = list(
        client,
        Query::new(
            "helm.toolkit.fluxcd.io",
            "v2",
            "HelmRelease",
            "helmreleases",
        ),
    )
    .await?;
    for h in &hrs {
        let mut x = health("HelmRelease", h);
        x.target_namespace = Some(s(h, "/spec/targetNamespace")).filter(|t| !t.is_empty());
        // A chart from an OCIRepository is recorded with the artifact digest's first 12 hex
        // characters as build metadata (helm-controller `mutateChartWithSourceRevision`): the
        // version is what comes before.
        let from_oci =
            h.pointer("/spec/chartRef/kind").and_then(Value::as_str) == Some("OCIRepository");
        let plain = |v: &str| -> String {
            match v.split_once('+') {
                Some((base, meta))
                    if from_oci
                        && meta.len() == 12
                        && meta.chars().all(|c| c.is_ascii_hexdigit()) =>
                {
                    base.to_string()
                }
                _ => v.to_string(),
            }
        };
        // What runs: the newest snapshot Helm deployed. helm-controller records a failed
        // revision first in the history too (`status: failed`, `internal/reconcile` observing
        // every release), and a failed upgrade's chart is not what runs.
        let snapshots = h.pointer("/status/history").and_then(Value::as_array);
        x.running = snapshots
            .and_then(|all| {
                all.iter()
                    .find(|e| e.get("status").and_then(Value::as_str) != Some("failed"))
            })
            .and_then(|e| e.get("chartVersion"))
            .and_then(Value::as_str)
            .map(plain);
        x.chart = snapshots
            .and_then(|all| all.first())
            .and_then(|e| e.get("chartName"))
            .and_then(Value::as_str)
            .map(str::to_string)
            .filter(|v| !v.is_empty());
        x.desired = Some(s(h, "/spec/chart/spec/version"))
            .filter(|v| !v.is_empty())
            .or_else(|| {
                Some(plain(&s(h, "/status/lastAttemptedRevision")))
                    .filter(|v| from_oci && !v.is_empty())
            });
        x.chart = x
            .chart
            .take()
            .or_else(|| Some(s(h, "/spec/chart/spec/chart")).filter(|v| !v.is_empty()));
        if let Some(values) = h.pointer("/spec/values") {
            values_images(values, &mut x.images, 0);
        }
        x.flux = flux_managed(h, &["spec", "chart", "spec", "version"]);
        x.chart_ref = h.pointer("/spec/chartRef").map(|r| {
            let ns = match s(r, "/namespace") {
                n if n.is_empty() => s(h, "/metadata/namespace"),
                n => n.to_string(),
            };
            format!("{}/{ns}/{}", s(r, "/kind"), s(r, "/name"))
        });
        o.helm_releases.push(x);
    }
    let (_, fis) = list(
        client,
        Query::new(
            "fluxcd.controlplane.io",
            "v1",
            "FluxInstance",
            "fluxinstances",
        ),
    )
    .await?;
    for f in &fis {
        let mut x = health("FluxInstance", f);
        x.running = f
            .pointer("/status/lastAppliedRevision")
            .and_then(Value::as_str)
            .and_then(|r| r.split('@').next())
            .filter(|v| !v.is_empty())
            .map(str::to_string);
        x.desired = Some(s(f, "/spec/distribution/version")).filter(|v| !v.is_empty());
        x.flux = flux_managed(f, &["spec", "distribution", "version"]);
        o.flux_instances.push(x);
    }
    let (_, ks) = list(
        client,
        Query::new(
            "kustomize.toolkit.fluxcd.io",
            "v1",
            "Kustomization",
            "kustomizations",
        ),
    )
    .await?;
    o.kustomizations = ks
        .iter()
        .map(|k| Health {
            path: Some(s(k, "/spec/path")).filter(|p| !p.is_empty()),
            source: Some(format!(
                "{}/{}/{}",
                s(k, "/spec/sourceRef/kind"),
                match s(k, "/spec/sourceRef/namespace") {
                    n if n.is_empty() => s(k, "/metadata/namespace"),
                    n => n,
                },
                s(k, "/spec/sourceRef/name")
            )),
            suspended_by: Some(s(k, "/metadata/annotations/upkeep.dev~1suspended-by")).filter(
                |r| !r.is_empty() && k.pointer("/spec/suspend") == Some(&Value::Bool(true)),
            ),
            ..health("Kustomization", k)
        })
        .collect();
    // Longhorn lives where its one release installs it (the release's namespace, which a
    // Kustomization's targetNamespace may set, or the release's own `spec.targetNamespace`,
    // as helm-controller's `GetReleaseNamespace`), unless the configuration names another
    // namespace than upstream's default.
    o.longhorn_namespace = if ns.longhorn == Namespaces::default().longhorn {
        let lh: Vec<&Health> = o
            .helm_releases
            .iter()
            .filter(|h| h.chart.as_deref() == Some("longhorn"))
            .collect();
        match lh.as_slice() {
            [one] => one
                .target_namespace
                .clone()
                .unwrap_or_else(|| one.namespace.clone()),
            _ => ns.longhorn.clone(),
        }
    } else {
        ns.longhorn.clone()
    };
    let lh_ns = o.longhorn_namespace.clone();
    longhorn(client, &lh_ns, &mut o).await?;
    o.flux_crd_version = get(
        client,
        Query::new(
            "apiextensions.k8s.io",
            "v1",
            "CustomResourceDefinition",
            "customresourcedefinitions",
        ),
        "gitrepositories.source.toolkit.fluxcd.io",
    )
    .await?
    .map(|c| s(&c, "/metadata/labels/app.kubernetes.io~1version"))
    .filter(|v| !v.is_empty());
    Ok(o)
}

/// Longhorn: volumes, the installed version, the backup target, the manager's rollout.
async fn longhorn(client: &kube::Client, ns: &str, o: &mut Observed) -> Result<()> {
    let (served, vols) = list(
        client,
        Query::new("longhorn.io", "v1beta2", "Volume", "volumes").ns(ns),
    )
    .await?;
    if !served {
        return Ok(());
    }
    o.volumes = vols
        .iter()
        .map(|v| VolumeState {
            name: s(v, "/metadata/name"),
            robustness: s(v, "/status/robustness"),
            state: s(v, "/status/state"),
            replicas: v
                .pointer("/spec/numberOfReplicas")
                .and_then(Value::as_u64)
                .unwrap_or(0),
            node: s(v, "/status/currentNodeID"),
        })
        .collect();
    let setting = |name: &'static str| async move {
        get(
            client,
            Query::new("longhorn.io", "v1beta2", "Setting", "settings").ns(ns),
            name,
        )
        .await
        .map(|st| st.map(|st| s(&st, "/value")).filter(|v| !v.is_empty()))
    };
    o.longhorn_version = setting("current-longhorn-version").await?;
    let target = get(
        client,
        Query::new("longhorn.io", "v1beta2", "BackupTarget", "backuptargets").ns(ns),
        "default",
    )
    .await?;
    o.longhorn_backup_target = match target {
        Some(t) => (t.pointer("/status/available") == Some(&Value::Bool(true)))
            .then(|| s(&t, "/spec/backupTargetURL"))
            .filter(|u| !u.is_empty()),
        None => setting("backup-target").await?,
    };
    o.longhorn_manager_rolled_out = get(
        client,
        Query::new("apps", "v1", "DaemonSet", "daemonsets").ns(ns),
        "longhorn-manager",
    )
    .await?
    .map(|d| daemonset_rolled_out(&d));
    Ok(())
}

/// `kubectl rollout status` for a DaemonSet: the controller saw the current generation and
/// every scheduled pod is updated and available.
fn daemonset_rolled_out(d: &Value) -> bool {
    let n = |p: &str| d.pointer(p).and_then(Value::as_i64).unwrap_or(0);
    n("/status/observedGeneration") >= n("/metadata/generation")
        && n("/status/updatedNumberScheduled") >= n("/status/desiredNumberScheduled")
        && n("/status/numberAvailable") >= n("/status/desiredNumberScheduled")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn selectors_in_query_form() {
        assert_eq!(
            selector_string(&json!({"matchLabels": {"app": "x"},
                "matchExpressions": [{"key": "tier", "operator": "In", "values": ["a", "b"]},
                    {"key": "gone", "operator": "DoesNotExist"}]})),
            Some("app=x,tier in (a,b),!gone".into())
        );
        assert_eq!(selector_string(&Value::Null), None);
        assert_eq!(selector_string(&json!({})), Some(String::new()));
    }

    #[test]
    fn the_data_dir_comes_from_the_node_args() {
        let n = json!({"metadata": {"name": "s1", "annotations":
            {"k3s.io/node-args": "[\"server\",\"--data-dir\",\"/srv/k3s\"]"}}});
        assert_eq!(node_state(&n).data_dir, "/srv/k3s");
        assert_eq!(node_state(&json!({})).data_dir, "/var/lib/rancher/k3s");
    }

    #[test]
    fn a_flux_instance_is_judged_by_its_ready_conditions_generation() {
        let fi = |cond_gen: i64| {
            json!({"metadata": {"generation": 2}, "status": {"conditions": [
            {"type": "Ready", "status": "True", "reason": "ReconciliationSucceeded", "observedGeneration": cond_gen}]}})
        };
        assert!(health("FluxInstance", &fi(2)).ready);
        assert!(
            !health("FluxInstance", &fi(1)).ready,
            "not yet at the new generation"
        );
    }

    #[test]
    fn a_daemonset_mid_rollout_is_not_rolled_out() {
        let d = |updated: i64| {
            json!({"metadata": {"generation": 2}, "status": {"observedGeneration": 2,
            "desiredNumberScheduled": 3, "updatedNumberScheduled": updated, "numberAvailable": 3}})
        };
        assert!(!daemonset_rolled_out(&d(1)));
        assert!(daemonset_rolled_out(&d(3)));
    }
}
