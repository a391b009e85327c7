//! Maintenance mode: what a runbook does around an upgrade. While a rollout changes the cluster,
//! the policy's namespaces carry the label and annotation `upkeep.dev/maintenance`, and its
//! workloads run 0 replicas; after (success, failure, a closed window, a supersede) each workload
//! gets back exactly the replicas it had.
//!
//! The record is kept on the objects themselves (`upkeep.dev/replicas-before` and
//! `upkeep.dev/maintenance` on the workload, written in the same patch as the scale), so a
//! controller killed in between neither loses the count nor takes 0 for it when it enters again.
//! Each entry says who put it there (`rollout/<name>` or `human`): a rollout restores only its
//! own; `upkeep maintenance enable` takes over what a rollout holds (its end then leaves it
//! down); `upkeep maintenance disable` restores a human's, and with `--force` everything.
//!
//! A workload Flux manages (a `kustomize.toolkit.fluxcd.io/name` or `helm.toolkit.fluxcd.io/name`
//! label) is left alone: Flux would scale it back at its next reconcile, and upkeep does not
//! fight Flux. Scale it in git, or leave `replicas` out of its manifest.

use chrono::{DateTime, Utc};
use kube::api::{Api, DynamicObject, Patch, PatchParams};
use kube::core::{ApiResource, GroupVersionKind};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::model::{MaintenancePlan, Workload};
use crate::rollout::Phase;

/// The label and annotation on namespaces, and the annotation naming who scaled a workload.
pub const MARK: &str = "upkeep.dev/maintenance";
/// The replicas a workload had before it was scaled down.
pub const BEFORE: &str = "upkeep.dev/replicas-before";
/// Who put things in maintenance by hand (`upkeep maintenance enable`).
pub const HUMAN: &str = "human";

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{what}: {}", crate::cluster::describe(.source))]
    Api {
        what: String,
        #[source]
        source: kube::Error,
    },
}

impl Error {
    /// The metric label of this error.
    pub fn kind(&self) -> &'static str {
        match self {
            Error::Api { .. } => "kube",
        }
    }
}

/// How a rollout's maintenance stands (in its status).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Record {
    pub entered_at: DateTime<Utc>,
    /// What was done, in words (`Deployment/media/jellyfin: 3 -> 0`, `namespace media marked`,
    /// `Deployment/apps/web: managed by Flux, left alone`).
    #[serde(default)]
    pub done: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restored_at: Option<DateTime<Utc>>,
    /// What coming back did.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub restored: Vec<String>,
}

/// Whether a rollout in `phase` (paused or not) has the cluster in maintenance: while it
/// changes it. Not in preflight (nothing changes yet, and a failed preflight retries all
/// window long), not while paused by a closed window, not in the soak (which watches the
/// cluster as it normally runs).
pub fn wanted(phase: Phase, paused: bool) -> bool {
    !paused
        && matches!(
            phase,
            Phase::Backup | Phase::Applying | Phase::Validating | Phase::Failed | Phase::Reverting
        )
}

/// Who a rollout is, in the marks.
pub fn by_rollout(name: &str) -> String {
    format!("rollout/{name}")
}

fn api(client: &kube::Client, w: &Workload) -> Api<DynamicObject> {
    let plural = if w.kind == "StatefulSet" {
        "statefulsets"
    } else {
        "deployments"
    };
    Api::namespaced_with(
        client.clone(),
        &w.namespace,
        &ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk("apps", "v1", &w.kind), plural),
    )
}

fn namespaces(client: &kube::Client) -> Api<DynamicObject> {
    Api::all_with(
        client.clone(),
        &ApiResource::from_gvk_with_plural(
            &GroupVersionKind::gvk("", "v1", "Namespace"),
            "namespaces",
        ),
    )
}

/// `name` through `api`, `None` when it does not exist; `what` names it in an error.
async fn read(
    api: &Api<DynamicObject>,
    name: &str,
    what: &str,
) -> Result<Option<DynamicObject>, Error> {
    api.get_opt(name)
        .await
        .map_err(err(format!("reading {what}")))
}

fn err(what: String) -> impl FnOnce(kube::Error) -> Error {
    move |source| Error::Api { what, source }
}

/// The Flux object that manages `obj`, if any.
fn flux_owner(obj: &DynamicObject) -> Option<String> {
    let labels = obj.metadata.labels.as_ref()?;
    labels
        .get("kustomize.toolkit.fluxcd.io/name")
        .map(|n| format!("Kustomization {n}"))
        .or_else(|| {
            labels
                .get("helm.toolkit.fluxcd.io/name")
                .map(|n| format!("HelmRelease {n}"))
        })
}

fn annotation(obj: &DynamicObject, key: &str) -> Option<String> {
    obj.metadata.annotations.as_ref()?.get(key).cloned()
}

/// Put `plan` in maintenance as `by` (idempotent: what is already in maintenance, by anyone, is
/// left as it is). What was done, in words.
pub async fn enter(
    client: &kube::Client,
    plan: &MaintenancePlan,
    by: &str,
    now: DateTime<Utc>,
) -> Result<Vec<String>, Error> {
    let mut done = Vec::new();
    for ns in &plan.namespaces {
        let api = namespaces(client);
        let Some(obj) = read(&api, ns, &format!("namespace {ns}")).await? else {
            done.push(format!("namespace {ns}: not found, skipped"));
            continue;
        };
        let value = format!(
            "{by} since {}",
            now.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
        );
        if let Some(already) = annotation(&obj, MARK) {
            // A human takes over what a rollout marked: the rollout's end leaves it then.
            if by == HUMAN && !already.starts_with(&format!("{HUMAN} since ")) {
                api.patch(
                    ns,
                    &PatchParams::default(),
                    &Patch::Merge(json!({"metadata": {"annotations": {MARK: value}}})),
                )
                .await
                .map_err(err(format!("marking namespace {ns}")))?;
                done.push(format!("namespace {ns}: taken over from {already}"));
            } else {
                done.push(format!(
                    "namespace {ns}: already in maintenance ({already})"
                ));
            }
            continue;
        }
        api.patch(
            ns,
            &PatchParams::default(),
            &Patch::Merge(
                json!({"metadata": {"labels": {MARK: "true"}, "annotations": {MARK: value}}}),
            ),
        )
        .await
        .map_err(err(format!("marking namespace {ns}")))?;
        done.push(format!("namespace {ns} marked"));
    }
    for w in &plan.scale_down {
        let api = api(client, w);
        let Some(obj) = read(&api, &w.name, &w.to_string()).await? else {
            done.push(format!("{w}: not found, skipped"));
            continue;
        };
        if let Some(owner) = flux_owner(&obj) {
            done.push(format!(
                "{w}: managed by Flux ({owner}), left alone (Flux would scale it back)"
            ));
            continue;
        }
        if let Some(already) = annotation(&obj, MARK) {
            if by == HUMAN && already != HUMAN {
                // Its count stays; only who gives it back changes.
                api.patch(
                    &w.name,
                    &PatchParams::default(),
                    &Patch::Merge(json!({"metadata": {"annotations": {MARK: HUMAN}}})),
                )
                .await
                .map_err(err(format!("taking over {w}")))?;
                done.push(format!("{w}: taken over from {already}"));
            } else {
                done.push(format!("{w}: already scaled down ({already})"));
            }
            continue;
        }
        let replicas = obj.data["spec"]["replicas"].as_i64().unwrap_or(1);
        // The count and the scale in one patch: never one without the other.
        api.patch(
            &w.name,
            &PatchParams::default(),
            &Patch::Merge(json!({
                "metadata": {"annotations": {BEFORE: replicas.to_string(), MARK: by}},
                "spec": {"replicas": 0},
            })),
        )
        .await
        .map_err(err(format!("scaling down {w}")))?;
        done.push(format!("{w}: {replicas} -> 0"));
    }
    Ok(done)
}

/// Take `plan` out of maintenance, where `by` put it (`None`: whoever did). Each workload gets
/// back the replicas recorded on it. What was done, in words.
pub async fn leave(
    client: &kube::Client,
    plan: &MaintenancePlan,
    by: Option<&str>,
) -> Result<Vec<String>, Error> {
    let mut done = Vec::new();
    for w in &plan.scale_down {
        let api = api(client, w);
        let Some(obj) = read(&api, &w.name, &w.to_string()).await? else {
            continue;
        };
        let Some(who) = annotation(&obj, MARK) else {
            continue;
        };
        if by.is_some_and(|b| b != who) {
            continue;
        }
        let Some(before) = annotation(&obj, BEFORE).and_then(|b| b.parse::<i64>().ok()) else {
            done.push(format!(
                "{w}: no {BEFORE} annotation; set its replicas yourself"
            ));
            continue;
        };
        api.patch(
            &w.name,
            &PatchParams::default(),
            &Patch::Merge(json!({
                "metadata": {"annotations": {BEFORE: null, MARK: null}},
                "spec": {"replicas": before},
            })),
        )
        .await
        .map_err(err(format!("scaling {w} back")))?;
        done.push(format!("{w}: 0 -> {before}"));
    }
    for ns in &plan.namespaces {
        let api = namespaces(client);
        let Some(obj) = read(&api, ns, &format!("namespace {ns}")).await? else {
            continue;
        };
        let Some(mark) = annotation(&obj, MARK) else {
            continue;
        };
        if by.is_some_and(|b| !mark.starts_with(&format!("{b} since "))) {
            continue;
        }
        api.patch(
            ns,
            &PatchParams::default(),
            &Patch::Merge(
                json!({"metadata": {"labels": {MARK: null}, "annotations": {MARK: null}}}),
            ),
        )
        .await
        .map_err(err(format!("unmarking namespace {ns}")))?;
        done.push(format!("namespace {ns} unmarked"));
    }
    Ok(done)
}

/// How each namespace and workload of `plan` stands, in words (for `upkeep maintenance status`).
pub async fn status(client: &kube::Client, plan: &MaintenancePlan) -> Result<Vec<String>, Error> {
    let mut out = Vec::new();
    for ns in &plan.namespaces {
        let obj = read(&namespaces(client), ns, &format!("namespace {ns}")).await?;
        out.push(match obj {
            None => format!("namespace {ns}: not found"),
            Some(o) => match annotation(&o, MARK) {
                Some(m) => format!("namespace {ns}: in maintenance ({m})"),
                None => format!("namespace {ns}: normal"),
            },
        });
    }
    for w in &plan.scale_down {
        let obj = read(&api(client, w), &w.name, &w.to_string()).await?;
        out.push(match obj {
            None => format!("{w}: not found"),
            Some(o) => {
                let replicas = o.data["spec"]["replicas"].as_i64().unwrap_or(1);
                match (annotation(&o, MARK), annotation(&o, BEFORE)) {
                    (Some(m), Some(b)) => {
                        format!("{w}: scaled down to {replicas} by {m} (had {b})")
                    }
                    _ => match flux_owner(&o) {
                        Some(owner) => format!(
                            "{w}: {replicas} replicas (managed by Flux, {owner}: left alone)"
                        ),
                        None => format!("{w}: {replicas} replicas"),
                    },
                }
            }
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maintenance_lasts_while_a_rollout_changes_the_cluster() {
        for p in [
            Phase::Backup,
            Phase::Applying,
            Phase::Validating,
            Phase::Failed,
            Phase::Reverting,
        ] {
            assert!(wanted(p, false), "{p:?}");
        }
        assert!(!wanted(Phase::Applying, true), "paused: the apps come back");
        for p in [
            Phase::Pending,
            Phase::WaitingForWindow,
            Phase::Preflight,
            Phase::Soaking,
            Phase::Succeeded,
            Phase::Reverted,
            Phase::RequiresAttention,
            Phase::Superseded,
        ] {
            assert!(!wanted(p, false), "{p:?}");
        }
    }
}
