//! What a human does to rollouts, the way `flux get` and `kubectl` users expect: list them with
//! their status and message, acknowledge a failure once it was looked at, and suspend or resume
//! a component (or everything).
//!
//! A suspension is recorded in the cluster, in the ConfigMap [`CONTROL`] of upkeep's namespace
//! (key `suspend.<component>`, or `suspend._all`, value `<who> at <time>: <reason>`), so that it
//! holds whoever runs `upkeep apply` or the controller; it acts like a freeze without an end: no
//! rollout of the component starts, one in flight stops after the node in progress, proposals go
//! on. To record one in git instead, add a freeze to `policies/`.
//!
//! A rollout that failed, needs attention or was reverted stays on the status page, in
//! `upkeep_rollout_phase` (so `UpkeepRolloutFailed` fires) and in `upkeep get` until a human
//! acknowledges it, even after versions.yaml moved on; one that is not finished stays too, even
//! when nothing drives it any more (`UpkeepRolloutStuck`). Acknowledging writes the annotation
//! [`ACKNOWLEDGED`] on the Rollout (who and when), which `kubectl annotate` can do as well.

use chrono::{DateTime, Utc};
use kube::api::{DynamicObject, ListParams, Patch, PatchParams};

use crate::rollout::Phase;

/// The annotation that records an acknowledgement: `<who> at <RFC 3339 time>`.
pub const ACKNOWLEDGED: &str = "upkeep.dev/acknowledged";

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(
        "there is no rollout `{name}` in namespace {namespace} (it has: {known}) (hint: `upkeep get` lists them)"
    )]
    NotFound {
        name: String,
        namespace: String,
        known: String,
    },
    #[error(
        "rollout {name} is {phase:?}, not failed: only a rollout that failed, needs attention or was reverted is acknowledged (hint: wait for it to end, or see docs/runbook.md)"
    )]
    NotFailed { name: String, phase: Phase },
    #[error("rollout {name} already ended ({phase:?}): there is nothing to start")]
    Finished { name: String, phase: Phase },
    #[error(
        "rollout {name} was reverted in git (commit {commit}): versions.yaml no longer asks for {version}, so a new attempt would have nothing to do (hint: to try again, revert that commit (`git revert {commit}`) or merge the update again; upkeep then makes a new rollout)"
    )]
    RevertedInGit {
        name: String,
        commit: String,
        version: String,
    },
    #[error("{what}: {}", crate::cluster::describe(source))]
    Api {
        what: String,
        #[source]
        source: kube::Error,
    },
}

impl Error {
    /// For metrics and logs: one label per variant.
    pub fn kind(&self) -> &'static str {
        match self {
            Error::NotFound { .. } => "not_found",
            Error::NotFailed { .. } => "not_failed",
            Error::Finished { .. } => "finished",
            Error::RevertedInGit { .. } => "reverted_in_git",
            Error::Api { .. } => "kube",
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The ConfigMap holding upkeep's suspensions.
pub const CONTROL: &str = "upkeep-control";
/// The freeze name a suspension goes by in decisions and messages.
pub const SUSPENSION: &str = "suspension";
const ALL: &str = "_all";

fn key(component: Option<&str>) -> String {
    format!("suspend.{}", component.unwrap_or(ALL))
}

fn configmaps(client: &kube::Client, namespace: &str) -> kube::Api<DynamicObject> {
    kube::Api::namespaced_with(
        client.clone(),
        namespace,
        &kube::core::ApiResource::from_gvk_with_plural(
            &kube::core::GroupVersionKind::gvk("", "v1", "ConfigMap"),
            "configmaps",
        ),
    )
}

/// Server-side apply `fields` (`data`, `metadata.annotations`) to [`CONTROL`] as `manager`,
/// creating it when missing; `what` names the write in an error.
async fn apply_control(
    client: &kube::Client,
    namespace: &str,
    fields: serde_json::Value,
    manager: &str,
    what: &str,
) -> Result<()> {
    let mut obj = serde_json::json!({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": CONTROL, "namespace": namespace},
    });
    if let Some(d) = fields.get("data") {
        obj["data"] = d.clone();
    }
    if let Some(a) = fields.pointer("/metadata/annotations") {
        obj["metadata"]["annotations"] = a.clone();
    }
    configmaps(client, namespace)
        .patch(CONTROL, &PatchParams::apply(manager), &Patch::Apply(&obj))
        .await
        .map(|_| ())
        .map_err(|source| Error::Api {
            what: format!("{what} in ConfigMap {namespace}/{CONTROL}"),
            source,
        })
}

/// One value of [`CONTROL`]'s `data` (`None` when the ConfigMap or the key is missing).
pub async fn control_value(
    client: &kube::Client,
    namespace: &str,
    key: &str,
) -> Result<Option<String>> {
    Ok(control_data(client, namespace)
        .await?
        .get(key)
        .and_then(|v| v.as_str())
        .map(str::to_string))
}

/// [`CONTROL`]'s `data` (empty when the ConfigMap does not exist).
async fn control_data(
    client: &kube::Client,
    namespace: &str,
) -> Result<serde_json::Map<String, serde_json::Value>> {
    let cm = configmaps(client, namespace)
        .get_opt(CONTROL)
        .await
        .map_err(|source| Error::Api {
            what: format!("reading ConfigMap {namespace}/{CONTROL}"),
            source,
        })?;
    Ok(cm
        .and_then(|c| c.data.get("data").and_then(|d| d.as_object()).cloned())
        .unwrap_or_default())
}

/// Set one value of [`CONTROL`]'s `data`, owned by `manager` (server-side apply: the other
/// keys, owned by others, stay).
pub async fn set_control_value(
    client: &kube::Client,
    namespace: &str,
    key: &str,
    value: &str,
    manager: &str,
) -> Result<()> {
    apply_control(
        client,
        namespace,
        serde_json::json!({"data": {key: value}}),
        manager,
        &format!("writing {key}"),
    )
    .await
}

/// What is suspended: component (or `None` for everything) -> `who at time: reason`.
pub type Suspensions = std::collections::BTreeMap<Option<String>, String>;

/// The suspensions recorded in `namespace` (none when the ConfigMap does not exist).
pub async fn suspensions(client: &kube::Client, namespace: &str) -> Result<Suspensions> {
    Ok(control_data(client, namespace)
        .await?
        .into_iter()
        .filter_map(|(k, v)| {
            let c = k.strip_prefix("suspend.")?;
            let c = (c != ALL).then(|| c.to_string());
            Some((c, v.as_str().unwrap_or_default().to_string()))
        })
        .collect())
}

/// Suspensions as freezes without an end (a suspension is not a window question: it holds
/// until a human resumes).
pub fn as_freezes(s: &Suspensions, now: DateTime<Utc>) -> Vec<crate::windows::Freeze> {
    use crate::windows::{Freeze, Selector};
    s.keys()
        .map(|c| Freeze {
            name: SUSPENSION.to_string(),
            from: now - chrono::Duration::days(1),
            to: now + chrono::Duration::days(36_500),
            components: match c {
                None => Selector::All,
                Some(c) => Selector::Names([c.clone()].into()),
            },
        })
        .collect()
}

/// Why `component` is suspended, if it is (its own record, else everything's).
pub fn suspended<'a>(s: &'a Suspensions, component: &str) -> Option<&'a str> {
    s.get(&Some(component.to_string()))
        .or_else(|| s.get(&None))
        .map(String::as_str)
}

/// Suspend `component` (`None`: everything), by `who`, for `reason`.
pub async fn suspend(
    client: &kube::Client,
    namespace: &str,
    component: Option<&str>,
    who: &str,
    reason: &str,
    now: DateTime<Utc>,
) -> Result<String> {
    let record = format!(
        "{who} at {}: {}",
        now.to_rfc3339(),
        if reason.trim().is_empty() {
            "no reason given"
        } else {
            reason.trim()
        }
    );
    apply_control(
        client,
        namespace,
        serde_json::json!({"data": {key(component): record}}),
        "upkeep-cli",
        "recording the suspension",
    )
    .await?;
    Ok(record)
}

/// Resume `component` (`None`: everything); whether it was suspended.
pub async fn resume(
    client: &kube::Client,
    namespace: &str,
    component: Option<&str>,
) -> Result<bool> {
    let was = suspensions(client, namespace).await?;
    let k = component.map(str::to_string);
    if !was.contains_key(&k) {
        return Ok(false);
    }
    let patch = serde_json::json!({"data": {key(component): null}});
    configmaps(client, namespace)
        .patch(CONTROL, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .map_err(|source| Error::Api {
            what: format!("removing the suspension from ConfigMap {namespace}/{CONTROL}"),
            source,
        })?;
    Ok(true)
}

/// A failure a human should look at: it failed, needs attention, or was reverted.
pub fn is_failure(phase: Phase) -> bool {
    matches!(
        phase,
        Phase::Failed | Phase::Reverted | Phase::RequiresAttention
    )
}

/// Whether a rollout is shown (page, metrics, `upkeep get`): not finished, or a failure nobody
/// acknowledged. `current`: it is the rollout of what versions.yaml asks for now, which is shown
/// whatever its phase until acknowledged.
pub fn shown(phase: Phase, acknowledged: bool, current: bool) -> bool {
    if is_failure(phase) {
        return !acknowledged;
    }
    current || !phase.is_terminal()
}

/// One rollout as `upkeep get` lists it.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Row {
    pub name: String,
    pub component: String,
    pub from: String,
    pub to: String,
    pub phase: Phase,
    pub message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub phase_since: Option<DateTime<Utc>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub acknowledged: Option<String>,
}

/// The acknowledgement of `obj`, if any.
pub fn acknowledgement(obj: &DynamicObject) -> Option<String> {
    obj.metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(ACKNOWLEDGED))
        .cloned()
}

fn row_of(obj: &DynamicObject) -> Row {
    let status = crate::apply::status_of(obj);
    let spec = |k: &str| obj.data["spec"][k].as_str().unwrap_or_default().to_string();
    Row {
        name: obj.metadata.name.clone().unwrap_or_default(),
        component: spec("component"),
        from: spec("from"),
        to: spec("to"),
        phase: status.phase,
        message: status.message,
        phase_since: status.phase_since,
        acknowledged: acknowledgement(obj),
    }
}

/// Every Rollout in `namespace`, newest phase change first.
pub async fn list(client: &kube::Client, namespace: &str) -> Result<Vec<Row>> {
    let api = crate::apply::rollouts(client, namespace);
    let all = api
        .list(&ListParams::default())
        .await
        .map_err(|source| Error::Api {
            what: format!("listing the rollouts in {namespace}"),
            source,
        })?;
    let mut rows: Vec<Row> = all.items.iter().map(row_of).collect();
    rows.sort_by(|a, b| b.phase_since.cmp(&a.phase_since).then(a.name.cmp(&b.name)));
    Ok(rows)
}

/// The rollout `name`, or an error naming the ones that exist.
async fn get_rollout(client: &kube::Client, namespace: &str, name: &str) -> Result<DynamicObject> {
    let api = crate::apply::rollouts(client, namespace);
    let obj = api.get_opt(name).await.map_err(|source| Error::Api {
        what: format!("reading rollout {name}"),
        source,
    })?;
    if let Some(obj) = obj {
        return Ok(obj);
    }
    let known = list(client, namespace)
        .await
        .map(|rows| {
            rows.into_iter()
                .map(|r| r.name)
                .collect::<Vec<_>>()
                .join(", ")
        })
        .unwrap_or_default();
    Err(Error::NotFound {
        name: name.to_string(),
        namespace: namespace.to_string(),
        known: if known.is_empty() {
            "none".into()
        } else {
            known
        },
    })
}

/// Mark the failed rollout `name` as looked at, by `who`: it leaves the page, the metrics (its
/// alert resolves) and the default `upkeep get`. Acknowledging twice keeps the first record.
pub async fn acknowledge(
    client: &kube::Client,
    namespace: &str,
    name: &str,
    who: &str,
    now: DateTime<Utc>,
) -> Result<Row> {
    let api = crate::apply::rollouts(client, namespace);
    let obj = get_rollout(client, namespace, name).await?;
    let row = row_of(&obj);
    if !is_failure(row.phase) {
        return Err(Error::NotFailed {
            name: name.to_string(),
            phase: row.phase,
        });
    }
    if row.acknowledged.is_some() {
        return Ok(row);
    }
    let record = format!("{who} at {}", now.to_rfc3339());
    let patch = serde_json::json!({"metadata": {"annotations": {ACKNOWLEDGED: record}}});
    let obj = api
        .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .map_err(|source| Error::Api {
            what: format!("annotating rollout {name}"),
            source,
        })?;
    Ok(row_of(&obj))
}

/// Try a failed rollout again: delete it, so that the next reconcile (or `upkeep apply`) makes
/// a new attempt of the same update, with a new backup. Only when versions.yaml still asks for
/// its version (the revert was refused and became a pull request, or someone changed the file
/// first); after a revert commit it says how to ask for the version again. Returns what was
/// deleted, with the revert pull request to close if there is one.
pub async fn retry(client: &kube::Client, namespace: &str, name: &str) -> Result<Row> {
    let api = crate::apply::rollouts(client, namespace);
    let obj = get_rollout(client, namespace, name).await?;
    let row = row_of(&obj);
    if !is_failure(row.phase) {
        return Err(Error::NotFailed {
            name: name.to_string(),
            phase: row.phase,
        });
    }
    let revert = obj.data["status"]["revert"].as_str().unwrap_or_default();
    if !revert.is_empty() && !revert.starts_with('#') && !revert.ends_with("(already changed)") {
        return Err(Error::RevertedInGit {
            name: name.to_string(),
            commit: revert.get(..12).unwrap_or(revert).to_string(),
            version: row.to.clone(),
        });
    }
    api.delete(name, &Default::default())
        .await
        .map_err(|source| Error::Api {
            what: format!("deleting rollout {name} for a new attempt"),
            source,
        })?;
    Ok(row)
}

/// Let the unfinished rollout `name` start outside its window from now on (as `upkeep apply
/// --emergency`; freezes still hold).
pub async fn emergency(client: &kube::Client, namespace: &str, name: &str) -> Result<()> {
    let api = crate::apply::rollouts(client, namespace);
    let obj = get_rollout(client, namespace, name).await?;
    let row = row_of(&obj);
    if row.phase.is_terminal() {
        return Err(Error::Finished {
            name: name.to_string(),
            phase: row.phase,
        });
    }
    let patch = serde_json::json!({"spec": {"emergency": true}});
    api.patch(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .map(|_| ())
        .map_err(|source| Error::Api {
            what: format!("marking rollout {name} as an emergency"),
            source,
        })
}

/// How one check of the installation came out (`upkeep doctor`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    Ok,
    Warn,
    Fail,
}

/// One check of the installation.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Check {
    pub check: &'static str,
    pub verdict: Verdict,
    pub detail: String,
}

/// What `upkeep doctor` found out, before judging it.
#[derive(Debug, Default)]
pub struct Facts {
    /// The cluster as observed, or why it could not be.
    pub cluster: Option<std::result::Result<crate::cluster::Observed, String>>,
    pub crd: bool,
    pub old_crd: bool,
    /// Whether the GitHub token may push to the config repository, or why it was refused;
    /// `None` when no repository was named.
    pub token: Option<std::result::Result<bool, String>>,
}

/// The installation's health from the facts (pure), in the spirit of `flux check`.
pub fn judge(f: &Facts) -> Vec<Check> {
    use Verdict::{Fail, Warn};
    let good = Verdict::Ok;
    let mut out = Vec::new();
    let mut say = |check, verdict, detail: String| {
        out.push(Check {
            check,
            verdict,
            detail,
        })
    };
    match &f.cluster {
        None => {}
        Some(Err(e)) => say("kubernetes", Fail, e.clone()),
        Some(std::result::Result::Ok(o)) => {
            let not_ready: Vec<&str> = o
                .nodes
                .iter()
                .filter(|n| !n.ready)
                .map(|n| n.name.as_str())
                .collect();
            say(
                "kubernetes",
                if not_ready.is_empty() { good } else { Warn },
                if not_ready.is_empty() {
                    format!("reachable; {} nodes, all Ready", o.nodes.len())
                } else {
                    format!("reachable; NotReady: {}", not_ready.join(", "))
                },
            );
            say(
                "crd",
                if f.crd { good } else { Warn },
                if f.crd {
                    format!("{} is installed", crate::rollout::CRD_NAME)
                } else {
                    format!(
                        "{} is not installed: apply deploy/crds/ (upkeep apply creates it where it may)",
                        crate::rollout::CRD_NAME
                    )
                },
            );
            if f.old_crd {
                say(
                    "old crd",
                    Warn,
                    format!(
                        "{} (before the rename) is still installed: upkeep moves its objects; then `kubectl delete crd {}`",
                        crate::rollout::OLD_CRD_NAME,
                        crate::rollout::OLD_CRD_NAME
                    ),
                );
            }
            say(
                "system-upgrade-controller",
                if o.suc_installed { good } else { Fail },
                if o.suc_installed {
                    "its Plan CRD is served; k3s upgrades go through it".into()
                } else {
                    "not found (plans.upgrade.cattle.io is not served): k3s cannot be upgraded; install it (docs/install.md)".into()
                },
            );
            let flux = o.kustomizations.len() + o.helm_releases.len() + o.flux_instances.len();
            say(
                "flux",
                if flux > 0 { good } else { Warn },
                if flux > 0 {
                    format!(
                        "{} Kustomizations, {} HelmReleases, {} FluxInstances",
                        o.kustomizations.len(),
                        o.helm_releases.len(),
                        o.flux_instances.len()
                    )
                } else {
                    "no Flux objects found: charts are set in the cluster, and Flux cannot be upgraded".into()
                },
            );
            say(
                "longhorn",
                good,
                o.longhorn_version.as_ref().map_or_else(
                    || "not installed (nothing to do)".to_string(),
                    |v| format!("{v} runs"),
                ),
            );
        }
    }
    match &f.token {
        None => {}
        Some(std::result::Result::Ok(true)) => say("github token", good, "valid; may push to the config repository".into()),
        Some(std::result::Result::Ok(false)) => say(
            "github token",
            Fail,
            "valid, but may not push to the config repository: give it Contents: read and write and Pull requests: read and write".into(),
        ),
        Some(Err(e)) => say("github token", Fail, e.clone()),
    }
    out
}

/// Gather the facts: the cluster (when `client` is given) and the token (when `forge` is).
pub async fn facts<
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = std::result::Result<bool, String>>,
>(
    client: Option<&kube::Client>,
    namespaces: &crate::cluster::Namespaces,
    token: Option<F>,
) -> Facts {
    let mut f = Facts::default();
    if let Some(client) = client {
        f.cluster = Some(
            crate::cluster::observe(client, namespaces)
                .await
                .map_err(|e| e.to_string()),
        );
        let crds: kube::Api<DynamicObject> = kube::Api::all_with(
            client.clone(),
            &kube::core::ApiResource::from_gvk_with_plural(
                &kube::core::GroupVersionKind::gvk(
                    "apiextensions.k8s.io",
                    "v1",
                    "CustomResourceDefinition",
                ),
                "customresourcedefinitions",
            ),
        );
        f.crd = matches!(crds.get_opt(crate::rollout::CRD_NAME).await, Ok(Some(_)));
        f.old_crd = matches!(
            crds.get_opt(crate::rollout::OLD_CRD_NAME).await,
            Ok(Some(_))
        );
    }
    if let Some(t) = token {
        f.token = Some(t().await);
    }
    f
}

/// The annotation of [`CONTROL`] by which `upkeep reconcile` asks for a reconcile now.
pub const REQUESTED: &str = "upkeep.dev/reconcile-requested-at";
/// The annotation by which the controller says which request it handled.
pub const HANDLED: &str = "upkeep.dev/reconcile-handled-at";

fn annotation(obj: Option<&DynamicObject>, key: &str) -> Option<String> {
    obj?.metadata.annotations.as_ref()?.get(key).cloned()
}

/// Ask the controller for a reconcile now (as `flux reconcile` does with an annotation): the
/// request's value, to wait for with [`handled`].
pub async fn request_reconcile(
    client: &kube::Client,
    namespace: &str,
    now: DateTime<Utc>,
) -> Result<String> {
    let value = now.to_rfc3339_opts(chrono::SecondsFormat::Nanos, true);
    apply_control(
        client,
        namespace,
        serde_json::json!({"metadata": {"annotations": {REQUESTED: value}}}),
        "upkeep-cli-reconcile",
        "asking for a reconcile",
    )
    .await?;
    Ok(value)
}

/// The last request the controller handled.
pub async fn handled(client: &kube::Client, namespace: &str) -> Result<Option<String>> {
    let cm = configmaps(client, namespace)
        .get_opt(CONTROL)
        .await
        .map_err(|source| Error::Api {
            what: format!("reading ConfigMap {namespace}/{CONTROL}"),
            source,
        })?;
    Ok(annotation(cm.as_ref(), HANDLED))
}

/// Say that the request `value` was handled (the controller, after the reconcile it caused).
pub async fn mark_handled(client: &kube::Client, namespace: &str, value: &str) -> Result<()> {
    let patch = serde_json::json!({"metadata": {"annotations": {HANDLED: value}}});
    configmaps(client, namespace)
        .patch(CONTROL, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .map(|_| ())
        .map_err(|source| Error::Api {
            what: format!("recording the handled reconcile in ConfigMap {namespace}/{CONTROL}"),
            source,
        })
}

/// Watch [`CONTROL`] for reconcile requests and hand each new one to `on` until `stop` says
/// so. A request already handled when the controller starts is not repeated. Reconnects after
/// an error or the end of a watch (5 s apart), so it never busy-loops.
pub async fn watch_requests(
    client: kube::Client,
    namespace: String,
    on: impl Fn(String) + Send,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    use futures_util::StreamExt as _;
    use kube::api::{WatchEvent, WatchParams};
    let api = configmaps(&client, &namespace);
    let mut seen: Option<String> = None;
    loop {
        if *stop.borrow() {
            return;
        }
        let current = api.get_opt(CONTROL).await.ok().flatten();
        let (requested, done) = (
            annotation(current.as_ref(), REQUESTED),
            annotation(current.as_ref(), HANDLED),
        );
        if let Some(r) = requested.clone()
            && seen.as_ref() != Some(&r)
            && done.as_ref() != Some(&r)
        {
            on(r);
        }
        seen = requested.or(seen);
        let rv = current
            .as_ref()
            .and_then(|c| c.metadata.resource_version.clone())
            .unwrap_or_else(|| "0".into());
        let wp = WatchParams::default()
            .fields(&format!("metadata.name={CONTROL}"))
            .timeout(290);
        if let Ok(stream) = api.watch(&wp, &rv).await {
            let mut stream = std::pin::pin!(stream);
            loop {
                let next = tokio::select! {
                    e = stream.next() => e,
                    _ = stop.changed() => return,
                };
                let Some(Ok(event)) = next else { break };
                if let WatchEvent::Added(o) | WatchEvent::Modified(o) = event
                    && let Some(r) = annotation(Some(&o), REQUESTED)
                    && seen.as_ref() != Some(&r)
                {
                    seen = Some(r.clone());
                    on(r);
                }
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(std::time::Duration::from_secs(5)) => {}
            _ = stop.changed() => return,
        }
    }
}

/// Rows as a table for a terminal (`upkeep get`).
pub fn table(rows: &[Row]) -> String {
    use std::fmt::Write as _;
    let mut out = String::from("NAME\tCOMPONENT\tFROM\tTO\tPHASE\tMESSAGE\n");
    for r in rows {
        let mut message = r.message.replace(['\n', '\t'], " ");
        if let Some(a) = &r.acknowledged {
            let _ = write!(message, " (acknowledged by {a})");
        }
        let _ = writeln!(
            out,
            "{}\t{}\t{}\t{}\t{:?}\t{}",
            r.name, r.component, r.from, r.to, r.phase, message
        );
    }
    align(&out)
}

/// Tab-separated columns padded to their widest cell (the last column is left as is).
fn align(text: &str) -> String {
    let rows: Vec<Vec<&str>> = text.lines().map(|l| l.split('\t').collect()).collect();
    let cols = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..cols)
        .map(|i| {
            rows.iter()
                .filter_map(|r| r.get(i))
                .map(|c| c.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for r in rows {
        let last = r.len().saturating_sub(1);
        for (i, c) in r.iter().enumerate() {
            out.push_str(c);
            if i < last {
                let pad = widths[i] + 3 - c.chars().count();
                out.push_str(&" ".repeat(pad));
            }
        }
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failure_is_shown_until_acknowledged_and_an_unfinished_rollout_always() {
        for p in [Phase::Failed, Phase::Reverted, Phase::RequiresAttention] {
            assert!(shown(p, false, false), "{p:?}");
            assert!(!shown(p, true, true), "{p:?} acknowledged");
        }
        // Left behind in Backup when a newer version was merged: still shown (stuck).
        assert!(shown(Phase::Backup, false, false));
        assert!(shown(Phase::WaitingForWindow, false, false));
        // A success is shown while it is the current rollout, not after.
        assert!(shown(Phase::Succeeded, false, true));
        assert!(!shown(Phase::Succeeded, false, false));
    }

    #[test]
    fn a_suspension_is_a_freeze_of_its_component_or_of_everything() {
        let now = Utc::now();
        let mut s = Suspensions::new();
        s.insert(Some("k3s".into()), "ana at x: disk swap".into());
        let f = as_freezes(&s, now);
        let d = |c: &str, f: &[crate::windows::Freeze]| {
            crate::windows::decide(now, c, &[], f, Default::default())
        };
        assert!(
            matches!(d("k3s", &f), crate::windows::Decision::Frozen { freeze, .. } if freeze == SUSPENSION)
        );
        assert_eq!(d("longhorn", &f), crate::windows::Decision::AnyTime);
        assert_eq!(suspended(&s, "k3s"), Some("ana at x: disk swap"));
        assert_eq!(suspended(&s, "longhorn"), None);
        s.insert(None, "bo at y: holidays".into());
        assert!(matches!(
            d("longhorn", &as_freezes(&s, now)),
            crate::windows::Decision::Frozen { .. }
        ));
        assert_eq!(suspended(&s, "longhorn"), Some("bo at y: holidays"));
    }

    #[test]
    fn doctor_judges_each_part_and_says_what_to_do() {
        let f = Facts {
            cluster: Some(Err("cannot reach the Kubernetes API".into())),
            token: Some(Err("the token was refused (401)".into())),
            ..Facts::default()
        };
        let c = judge(&f);
        assert_eq!(c.len(), 2);
        assert!(c.iter().all(|c| c.verdict == Verdict::Fail));
        let f = Facts {
            cluster: Some(Ok(crate::cluster::Observed::default())),
            old_crd: true,
            token: Some(Ok(false)),
            ..Facts::default()
        };
        let c = judge(&f);
        let v = |name: &str| c.iter().find(|c| c.check == name).map(|c| c.verdict);
        assert_eq!(v("system-upgrade-controller"), Some(Verdict::Fail));
        assert_eq!(v("crd"), Some(Verdict::Warn));
        assert_eq!(v("old crd"), Some(Verdict::Warn));
        assert_eq!(v("github token"), Some(Verdict::Fail));
    }

    #[test]
    fn the_table_lines_up_and_says_who_acknowledged() {
        let row = |name: &str, phase, ack: Option<&str>| Row {
            name: name.into(),
            component: "k3s".into(),
            from: "v1.33.4+k3s1".into(),
            to: "v1.33.5+k3s1".into(),
            phase,
            message: "upgraded but\tnot Ready".into(),
            phase_since: None,
            acknowledged: ack.map(str::to_string),
        };
        let t = table(&[
            row(
                "k3s-v1.33.5-k3s1",
                Phase::RequiresAttention,
                Some("ana at x"),
            ),
            row("k3s-v1.33.6-k3s1", Phase::Backup, None),
        ]);
        let lines: Vec<&str> = t.lines().collect();
        assert!(lines[0].starts_with("NAME"));
        let col = |l: &str| {
            l.find("PHASE")
                .or_else(|| l.find("Requires"))
                .or_else(|| l.find("Backup"))
        };
        assert_eq!(col(lines[0]), col(lines[1]));
        assert_eq!(col(lines[1]), col(lines[2]));
        assert!(lines[1].ends_with("upgraded but not Ready (acknowledged by ana at x)"));
    }
}
