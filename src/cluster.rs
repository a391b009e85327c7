//! The cluster as upkeep reads it: what runs, not what was asked. [`observe`] reads nodes,
//! system-upgrade-controller Plans, PodDisruptionBudgets and their pods, HelmReleases,
//! FluxInstances, Kustomizations, Longhorn volumes and settings through the `kube` crate into
//! [`Observed`], plain data that the pure decisions (preflight, rollout, validation) work on.
//! Per-node versions are kept: a cluster can be mixed.

use std::path::Path;

use kube::api::{Api, DynamicObject, ListParams};
use kube::core::{ApiResource, GroupVersionKind};
use serde::Serialize;
use serde_json::Value;

use crate::versions::{self, Scheme, Version};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot read the kubeconfig {path}: {message} (pass --kubeconfig or set KUBECONFIG)")]
    Kubeconfig { path: String, message: String },
    #[error(
        "the Kubernetes API refused {what}: {message} (check RBAC: docs/architecture.md lists what upkeep reads)"
    )]
    Api { what: String, message: String },
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
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PlanState {
    pub namespace: String,
    pub name: String,
    pub version: String,
    pub complete: bool,
    pub failed: Option<String>,
    pub applying: Vec<String>,
}

/// A PodDisruptionBudget that allows no disruption, and the nodes of the pods it guards.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct BlockingPdb {
    pub namespace: String,
    pub name: String,
    pub nodes: Vec<String>,
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
    /// A HelmRelease's chart name.
    pub chart: Option<String>,
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

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct VolumeState {
    pub name: String,
    pub robustness: String,
    pub state: String,
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
    /// `settings.longhorn.io/current-longhorn-version`.
    pub longhorn_version: Option<String>,
    /// `settings.longhorn.io/backup-target`, when set.
    pub longhorn_backup_target: Option<String>,
    /// The system-upgrade-controller's upgrade Jobs: node, version, start and end.
    pub upgrade_jobs: Vec<UpgradeJob>,
    /// The `app.kubernetes.io/version` label of the GitRepository CRD (Flux's version).
    pub flux_crd_version: Option<String>,
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
    /// What runs of `component`: k3s from the nodes, Longhorn from its HelmRelease (or the
    /// `current-longhorn-version` setting), Flux from its FluxInstance (or the CRD label), any
    /// other component from a HelmRelease of its name.
    pub fn running(&self, component: &str) -> Running {
        match component {
            "k3s" => {
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
            "flux" => self
                .flux_instances
                .iter()
                .find_map(|f| f.running.clone())
                .or_else(|| self.flux_crd_version.clone())
                .map_or(Running::Unknown, |v| Running::At {
                    version: v_prefixed(&v),
                }),
            other => self
                .helm_release_of(other)
                .and_then(|h| h.running.clone())
                .or_else(|| {
                    if other == "longhorn" {
                        self.longhorn_version.clone()
                    } else {
                        None
                    }
                })
                .map_or(Running::Unknown, |v| Running::At {
                    version: v_prefixed(&v),
                }),
        }
    }

    /// The HelmRelease of a component: by chart name, else by release name.
    pub fn helm_release_of(&self, component: &str) -> Option<&Health> {
        self.helm_releases
            .iter()
            .find(|h| h.chart.as_deref() == Some(component))
            .or_else(|| self.helm_releases.iter().find(|h| h.name == component))
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
    let observed = v
        .pointer("/status/observedGeneration")
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
    }
}

/// Read a list of any kind as JSON; a kind that is not served is an empty list and `false`.
async fn list(
    client: &kube::Client,
    group: &str,
    version: &str,
    kind: &str,
    plural: &str,
) -> Result<(bool, Vec<Value>)> {
    let gvk = GroupVersionKind::gvk(group, version, kind);
    let ar = ApiResource::from_gvk_with_plural(&gvk, plural);
    let api: Api<DynamicObject> = Api::all_with(client.clone(), &ar);
    match api.list(&ListParams::default()).await {
        Ok(l) => Ok((
            true,
            l.items
                .into_iter()
                .filter_map(|o| serde_json::to_value(o).ok())
                .collect(),
        )),
        Err(kube::Error::Api(e)) if e.code == 404 => Ok((false, Vec::new())),
        Err(e) => Err(Error::Api {
            what: format!("listing {plural}.{group}"),
            message: e.to_string(),
        }),
    }
}

/// Read what runs.
pub async fn observe(client: &kube::Client) -> Result<Observed> {
    let mut o = Observed::default();
    let (_, nodes) = list(client, "", "v1", "Node", "nodes").await?;
    for n in &nodes {
        let labels = n
            .pointer("/metadata/labels")
            .cloned()
            .unwrap_or(Value::Null);
        let ready = condition(n, "Ready").is_some_and(|c| c["status"] == "True");
        o.nodes.push(NodeState {
            name: s(n, "/metadata/name"),
            server: labels
                .get("node-role.kubernetes.io/control-plane")
                .and_then(Value::as_str)
                == Some("true"),
            etcd: labels
                .get("node-role.kubernetes.io/etcd")
                .and_then(Value::as_str)
                == Some("true"),
            version: s(n, "/status/nodeInfo/kubeletVersion"),
            ready,
            unschedulable: n.pointer("/spec/unschedulable").and_then(Value::as_bool) == Some(true),
        });
    }
    o.nodes.sort_by(|a, b| a.name.cmp(&b.name));
    let (served, plans) = list(client, "upgrade.cattle.io", "v1", "Plan", "plans").await?;
    o.suc_installed = served;
    for p in &plans {
        let complete = condition(p, "Complete");
        o.plans.push(PlanState {
            namespace: s(p, "/metadata/namespace"),
            name: s(p, "/metadata/name"),
            version: s(p, "/spec/version"),
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
        });
    }
    if served {
        let (_, jobs) = list(client, "batch", "v1", "Job", "jobs").await?;
        let time = |j: &Value, p: &str| {
            j.pointer(p)
                .and_then(Value::as_str)
                .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
                .map(|t| t.with_timezone(&chrono::Utc))
        };
        o.upgrade_jobs = jobs
            .iter()
            .filter(|j| {
                j.pointer("/metadata/labels/upgrade.cattle.io~1plan")
                    .is_some()
            })
            .map(|j| UpgradeJob {
                plan: s(j, "/metadata/labels/upgrade.cattle.io~1plan"),
                node: s(j, "/metadata/labels/upgrade.cattle.io~1node"),
                version: s(j, "/metadata/labels/upgrade.cattle.io~1version"),
                started: time(j, "/status/startTime"),
                completed: time(j, "/status/completionTime"),
                failed: j
                    .pointer("/status/failed")
                    .and_then(Value::as_i64)
                    .unwrap_or(0)
                    > 0,
            })
            .collect();
    }
    let (_, pdbs) = list(
        client,
        "policy",
        "v1",
        "PodDisruptionBudget",
        "poddisruptionbudgets",
    )
    .await?;
    let blocking: Vec<&Value> = pdbs
        .iter()
        .filter(|p| {
            p.pointer("/status/disruptionsAllowed")
                .and_then(Value::as_i64)
                == Some(0)
        })
        .collect();
    if !blocking.is_empty() {
        let (_, pods) = list(client, "", "v1", "Pod", "pods").await?;
        for pdb in blocking {
            let sel = crate::sim::kube::patch::label_selector_from_object(
                pdb.pointer("/spec/selector").unwrap_or(&Value::Null),
            );
            let ns = s(pdb, "/metadata/namespace");
            let mut nodes: Vec<String> = pods
                .iter()
                .filter(|p| {
                    s(p, "/metadata/namespace") == ns
                        && crate::sim::kube::patch::labels_match(&sel, p)
                })
                .map(|p| s(p, "/spec/nodeName"))
                .filter(|n| !n.is_empty())
                .collect();
            nodes.sort();
            nodes.dedup();
            o.blocking_pdbs.push(BlockingPdb {
                namespace: ns,
                name: s(pdb, "/metadata/name"),
                nodes,
            });
        }
    }
    let (_, hrs) = list(
        client,
        "helm.toolkit.fluxcd.io",
        "v2",
        "HelmRelease",
        "helmreleases",
    )
    .await?;
    for h in &hrs {
        let mut x = health("HelmRelease", h);
        x.running = h
            .pointer("/status/history/0/chartVersion")
            .and_then(Value::as_str)
            .map(str::to_string);
        x.desired = Some(s(h, "/spec/chart/spec/version")).filter(|v| !v.is_empty());
        x.chart = Some(s(h, "/spec/chart/spec/chart")).filter(|v| !v.is_empty());
        o.helm_releases.push(x);
    }
    let (_, fis) = list(
        client,
        "fluxcd.controlplane.io",
        "v1",
        "FluxInstance",
        "fluxinstances",
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
        o.flux_instances.push(x);
    }
    let (_, ks) = list(
        client,
        "kustomize.toolkit.fluxcd.io",
        "v1",
        "Kustomization",
        "kustomizations",
    )
    .await?;
    o.kustomizations = ks.iter().map(|k| health("Kustomization", k)).collect();
    let (_, vols) = list(client, "longhorn.io", "v1beta2", "Volume", "volumes").await?;
    o.volumes = vols
        .iter()
        .map(|v| VolumeState {
            name: s(v, "/metadata/name"),
            robustness: s(v, "/status/robustness"),
            state: s(v, "/status/state"),
        })
        .collect();
    let (_, settings) = list(client, "longhorn.io", "v1beta2", "Setting", "settings").await?;
    o.longhorn_version = settings
        .iter()
        .find(|st| s(st, "/metadata/name") == "current-longhorn-version")
        .map(|st| s(st, "/value"))
        .filter(|v| !v.is_empty());
    o.longhorn_backup_target = settings
        .iter()
        .find(|st| s(st, "/metadata/name") == "backup-target")
        .map(|st| s(st, "/value"))
        .filter(|v| !v.is_empty());
    let (_, crds) = list(
        client,
        "apiextensions.k8s.io",
        "v1",
        "CustomResourceDefinition",
        "customresourcedefinitions",
    )
    .await?;
    o.flux_crd_version = crds
        .iter()
        .find(|c| s(c, "/metadata/name") == "gitrepositories.source.toolkit.fluxcd.io")
        .map(|c| s(c, "/metadata/labels/app.kubernetes.io~1version"))
        .filter(|v| !v.is_empty());
    Ok(o)
}
