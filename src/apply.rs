//! Applying merged versions: the I/O around [`crate::rollout::decide`]. One cycle reads the
//! desired state from the config repository, what runs from the cluster, creates a `Rollout`
//! custom resource per component that must move, and drives each: observe, decide, carry out the
//! effects (server-side apply as field manager `upkeep`, named backup objects, keyed comments, a
//! revert commit that checks the base branch first), persist the status. A restarted controller
//! resumes from the persisted status.

use std::time::Duration;

use chrono::{DateTime, Utc};
use kube::api::{Api, DynamicObject, Patch, PatchParams, PostParams};
use kube::core::{ApiResource, GroupVersionKind};
use serde_json::{Value, json};

use crate::cluster::{self, Observed};
use crate::forge::Forge;
use crate::gitrepo::{Author, GitRepo};
use crate::model::{Component, ConfigRepo};
use crate::rollout::{self, Ctx, Effect, Phase, RolloutSpec, RolloutStatus};
use crate::versions;
use crate::windows::{self, Decision, Override};

pub const FIELD_MANAGER: &str = "upkeep";
pub const SUC_NAMESPACE: &str = "system-upgrade";
pub const SERVER_PLAN: &str = "upkeep-server";
pub const AGENT_PLAN: &str = "upkeep-agent";

fn ar(group: &str, version: &str, kind: &str, plural: &str) -> ApiResource {
    ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(group, version, kind), plural)
}

fn rollouts(client: &kube::Client, ns: &str) -> Api<DynamicObject> {
    Api::namespaced_with(
        client.clone(),
        ns,
        &ar("upkeep.dev", "v1alpha1", "Rollout", "rollouts"),
    )
}

fn api_err(what: &str) -> impl Fn(kube::Error) -> String + '_ {
    move |e| format!("{what}: {e}")
}

/// Install the Rollout CRD and the namespace (idempotent).
pub async fn install(client: &kube::Client, ns: &str) -> Result<(), String> {
    let pp = PatchParams::apply(FIELD_MANAGER).force();
    let crds: Api<DynamicObject> = Api::all_with(
        client.clone(),
        &ar(
            "apiextensions.k8s.io",
            "v1",
            "CustomResourceDefinition",
            "customresourcedefinitions",
        ),
    );
    // Installed by deploy/ (Helm or the manifests) in a cluster, where upkeep may only read
    // them; created here when missing (a first `upkeep apply` from a laptop).
    let have_crd = crds
        .get_opt("rollouts.upkeep.dev")
        .await
        .map_err(api_err("reading the Rollout CRD"))?
        .is_some();
    if !have_crd {
        let crd: DynamicObject =
            serde_json::from_value(rollout::crd()).map_err(|e| e.to_string())?;
        crds.patch("rollouts.upkeep.dev", &pp, &Patch::Apply(&crd))
            .await
            .map_err(api_err("installing the Rollout CRD"))?;
    }
    let nss: Api<DynamicObject> =
        Api::all_with(client.clone(), &ar("", "v1", "Namespace", "namespaces"));
    if nss
        .get_opt(ns)
        .await
        .map_err(api_err("reading the namespace"))?
        .is_some()
    {
        return Ok(());
    }
    let ns_obj: DynamicObject = serde_json::from_value(
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}}),
    )
    .map_err(|e| e.to_string())?;
    nss.patch(ns, &pp, &Patch::Apply(&ns_obj))
        .await
        .map_err(api_err("creating the namespace"))?;
    Ok(())
}

/// Where the config repository and its pull requests are.
pub struct Repo<'a, F: Forge> {
    pub git: &'a GitRepo,
    pub forge: Option<&'a F>,
    pub base: String,
    pub subdir: String,
    pub author: Author,
}

/// How to apply.
pub struct Options {
    pub namespace: String,
    pub only: Option<String>,
    pub emergency: bool,
    /// How long one hop may take before it counts as failed.
    pub timeout: chrono::Duration,
    /// How long this cycle drives rollouts before returning (they resume next cycle).
    pub budget: Duration,
    /// How often the cluster is looked at while driving.
    pub poll: Duration,
    pub backup: bool,
    /// How many agent nodes upgrade at once (servers go one at a time).
    pub agent_concurrency: u64,
    /// Known releases per component, for paths of several hops (a minor between what runs and
    /// what is asked); without them only a single legal hop is applied.
    pub releases: std::collections::HashMap<String, Vec<versions::Version>>,
    /// Drain agents before upgrading them.
    pub drain: bool,
    /// Start a Longhorn upgrade with degraded (not faulted) volumes.
    pub allow_degraded_volumes: bool,
}

impl Options {
    /// Options as the config repo's `rollouts:` policy says (callers may override fields).
    pub fn from_policy(p: &crate::model::RolloutPolicy, namespace: &str) -> Options {
        Options {
            namespace: namespace.to_string(),
            only: None,
            emergency: false,
            timeout: p.hop_timeout,
            budget: Duration::from_secs(3600),
            poll: Duration::from_secs(2),
            backup: p.backup,
            agent_concurrency: p.agent_concurrency,
            releases: Default::default(),
            drain: p.drain,
            allow_degraded_volumes: p.allow_degraded_volumes,
        }
    }
}

/// What a cycle did, per rollout: (name, phase, message).
pub type Summary = Vec<(String, Phase, String)>;

fn vfile(subdir: &str) -> String {
    let s = subdir.trim_matches('/');
    if s.is_empty() {
        "versions.yaml".into()
    } else {
        format!("{s}/versions.yaml")
    }
}

/// One apply cycle. `now` gives the (possibly simulated) time. Each rollout's name, phase and
/// message.
pub async fn run<F: Forge>(
    client: &kube::Client,
    repo: &Repo<'_, F>,
    config: &ConfigRepo,
    opts: &Options,
    now: &(dyn Fn() -> DateTime<Utc> + Sync),
) -> Result<Summary, String> {
    Ok(run_detailed(client, repo, config, opts, now)
        .await?
        .rollouts
        .into_iter()
        .map(|(name, st)| (name, st.phase, st.message))
        .collect())
}

/// What [`run_detailed`] found.
pub struct Applied {
    /// Each rollout's name and whole status (checks, nodes, backup), for metrics.
    pub rollouts: Vec<(String, RolloutStatus)>,
    /// upkeep's pull requests as listed for this cycle (empty when the forge could not say).
    pub pulls: Vec<crate::forge::PullRequest>,
}

/// [`run`], with each rollout's whole status and the pull requests it read.
pub async fn run_detailed<F: Forge>(
    client: &kube::Client,
    repo: &Repo<'_, F>,
    config: &ConfigRepo,
    opts: &Options,
    now: &(dyn Fn() -> DateTime<Utc> + Sync),
) -> Result<Applied, String> {
    install(client, &opts.namespace).await?;
    let api = rollouts(client, &opts.namespace);
    let observed = cluster::observe(client).await.map_err(|e| e.to_string())?;
    // Create the rollouts that are missing.
    let mut names = Vec::new();
    let merged = match repo.forge {
        Some(f) => f
            .pulls(crate::propose::BRANCH_PREFIX)
            .await
            .unwrap_or_default(),
        None => Vec::new(),
    };
    for c in config
        .components
        .iter()
        .filter(|c| opts.only.as_ref().is_none_or(|o| *o == c.name))
    {
        let running = observed.running(&c.name);
        let Some(from) = running.lowest(c.scheme) else {
            continue;
        };
        let in_step = matches!(&running, cluster::Running::At { .. }) && from == c.version;
        let name = rollout::rollout_name(&c.name, &c.version.to_string());
        let existing = api
            .get_opt(&name)
            .await
            .map_err(api_err("reading a rollout"))?;
        if existing.is_none() && in_step {
            continue;
        }
        if existing.is_none() {
            let hops = match versions::check_hop(&from, &c.version, &c.path_rule) {
                Ok(()) => vec![c.version.to_string()],
                // A longer way through the releases in between, hop by hop.
                Err(e) => {
                    let available = opts.releases.get(&c.name).map(Vec::as_slice).unwrap_or(&[]);
                    match versions::plan_path(&from, &c.version, available, &c.path_rule) {
                        Ok(p) if !p.is_empty() => p.iter().map(ToString::to_string).collect(),
                        _ => {
                            tracing::warn!(component = c.name, error = %e, "no legal path; nothing applied");
                            continue;
                        }
                    }
                }
            };
            let branch = crate::propose::branch_name(&c.name, &c.version.to_string());
            let pr = merged.iter().find(|p| p.merged && p.head == branch);
            let emergency = opts.emergency
                || pr.is_some_and(|p| p.labels.iter().any(|l| l == "upkeep/emergency"));
            let spec = RolloutSpec {
                component: c.name.clone(),
                from: from.to_string(),
                to: c.version.to_string(),
                hops,
                pull_request: pr.map(|p| p.number),
                emergency,
            };
            let obj: DynamicObject = serde_json::from_value(json!({
                "apiVersion": "upkeep.dev/v1alpha1", "kind": "Rollout",
                "metadata": {"name": name, "namespace": opts.namespace, "labels": {"upkeep.dev/component": c.name}},
                "spec": spec,
            }))
            .map_err(|e| e.to_string())?;
            match api.create(&PostParams::default(), &obj).await {
                Ok(_) => tracing::info!(rollout = name, "created"),
                Err(kube::Error::Api(e)) if e.code == 409 => {}
                Err(e) => return Err(format!("creating rollout {name}: {e}")),
            }
        }
        names.push((name, c.clone()));
    }
    // Drive them.
    let start = std::time::Instant::now();
    loop {
        let observed = cluster::observe(client).await.map_err(|e| e.to_string())?;
        let mut active = false;
        let mut waiting_only = true;
        for (name, c) in &names {
            let Some(obj) = api
                .get_opt(name)
                .await
                .map_err(api_err("reading a rollout"))?
            else {
                continue;
            };
            let spec: RolloutSpec = serde_json::from_value(obj.data["spec"].clone())
                .map_err(|e| format!("rollout {name}: {e}"))?;
            let status: RolloutStatus =
                serde_json::from_value(obj.data.get("status").cloned().unwrap_or(json!({})))
                    .unwrap_or_default();
            if status.phase.is_terminal() {
                continue;
            }
            let _span =
                tracing::info_span!("rollout", rollout = %name, component = %c.name).entered();
            let t = now();
            let decision = windows::decide(
                t,
                &c.name,
                &config.windows,
                &config.freezes,
                Override {
                    emergency: spec.emergency,
                    bypass_freezes: false,
                },
            );
            let backup_ready = if status.phase == Phase::Backup {
                backup_ready(client, &c.name, name, &observed).await
            } else {
                None
            };
            let ctx = Ctx {
                now: t,
                component: c,
                observed: &observed,
                may_start: decision.allows_start(),
                waiting: waiting_text(&decision),
                backup: opts.backup,
                backup_ready,
                timeout: opts.timeout,
                preflight: crate::validate::PreflightPolicy {
                    allow_degraded_volumes: opts.allow_degraded_volumes,
                },
                extra_checks: if status.phase == Phase::Validating {
                    run_checks(&config.checks, &c.name).await
                } else {
                    Vec::new()
                },
            };
            let (next, effects) = rollout::decide(name, &spec, &status, &ctx);
            let mut next = next;
            for fx in &effects {
                if let Err(e) = effect(
                    client,
                    repo,
                    c,
                    name,
                    &spec,
                    &observed,
                    fx,
                    &mut next,
                    opts.agent_concurrency,
                    opts.drain,
                )
                .await
                {
                    tracing::warn!(error = %e, "an effect failed; retried next look");
                    next = status.clone();
                    next.message = format!("retrying: {e}");
                    break;
                }
            }
            if next != status {
                api.patch_status(
                    name,
                    &PatchParams {
                        field_manager: Some(FIELD_MANAGER.into()),
                        ..Default::default()
                    },
                    &Patch::Merge(json!({"status": next})),
                )
                .await
                .map_err(api_err("saving a rollout's status"))?;
                if next.phase != status.phase {
                    tracing::info!(from = ?status.phase, to = ?next.phase, message = %next.message, "rollout phase");
                    if let Err(e) = event(client, &opts.namespace, &obj, &next, t).await {
                        tracing::warn!(error = %e, "cannot record an event");
                    }
                }
            }
            if !next.phase.is_terminal() {
                active = true;
                let waits = next.phase == Phase::WaitingForWindow
                    || (next.phase == Phase::Applying && next.paused);
                if !waits || ctx.may_start {
                    waiting_only = false;
                }
            }
        }
        if !active || waiting_only || start.elapsed() >= opts.budget {
            break;
        }
        tokio::time::sleep(opts.poll).await;
    }
    let mut out = Vec::new();
    for (name, _) in &names {
        if let Some(obj) = api
            .get_opt(name)
            .await
            .map_err(api_err("reading a rollout"))?
        {
            let st: RolloutStatus =
                serde_json::from_value(obj.data.get("status").cloned().unwrap_or(json!({})))
                    .unwrap_or_default();
            out.push((name.clone(), st));
        }
    }
    Ok(Applied {
        rollouts: out,
        pulls: merged,
    })
}

/// Change upkeep's Plans to match no node: nothing new starts; a node in progress finishes.
async fn halt_plans(
    client: &kube::Client,
    spec: &RolloutSpec,
    st: &RolloutStatus,
    concurrency: u64,
    drain: bool,
) -> Result<(), String> {
    let plans: Api<DynamicObject> = Api::namespaced_with(
        client.clone(),
        SUC_NAMESPACE,
        &ar("upgrade.cattle.io", "v1", "Plan", "plans"),
    );
    let hop = spec
        .hops
        .get(st.hop)
        .cloned()
        .unwrap_or_else(|| spec.to.clone());
    let pp = PatchParams::apply(FIELD_MANAGER).force();
    // Agents first: a server Plan that selects nothing may read as complete, and an agent Plan
    // still selecting nodes would then start on them.
    for (plan, server) in [(AGENT_PLAN, false), (SERVER_PLAN, true)] {
        let obj: DynamicObject =
            serde_json::from_value(plan_json(plan, &hop, server, true, concurrency, drain))
                .map_err(|e| e.to_string())?;
        plans
            .patch(plan, &pp, &Patch::Apply(&obj))
            .await
            .map_err(api_err("halting a Plan"))?;
    }
    Ok(())
}

/// Uncordon every cordoned node (preflight saw none cordoned before the rollout began).
async fn uncordon(client: &kube::Client, observed: &Observed) -> Result<(), String> {
    let nodes: Api<DynamicObject> = Api::all_with(client.clone(), &ar("", "v1", "Node", "nodes"));
    for n in observed.nodes.iter().filter(|n| n.unschedulable) {
        nodes
            .patch(
                &n.name,
                &PatchParams::default(),
                &Patch::Merge(json!({"spec": {"unschedulable": null}})),
            )
            .await
            .map_err(api_err("uncordoning a node"))?;
    }
    Ok(())
}

/// A Kubernetes Event for a transition, named after it so that a restart never records it twice.
async fn event(
    client: &kube::Client,
    ns: &str,
    rollout: &DynamicObject,
    st: &RolloutStatus,
    now: DateTime<Utc>,
) -> Result<(), String> {
    let name = rollout.metadata.name.clone().unwrap_or_default();
    let phase = format!("{:?}", st.phase);
    let warning = matches!(
        st.phase,
        Phase::Failed | Phase::Reverting | Phase::Reverted | Phase::RequiresAttention
    );
    let api: Api<DynamicObject> = Api::namespaced_with(
        client.clone(),
        ns,
        &ar("events.k8s.io", "v1", "Event", "events"),
    );
    let mut note = st.message.clone();
    crate::sources::truncate_utf8(&mut note, 1000);
    let ev: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "events.k8s.io/v1", "kind": "Event",
        "metadata": {"name": format!("{name}.{}.{}.{}", phase.to_lowercase(), st.hop, st.pauses), "namespace": ns},
        "eventTime": now.to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
        "reportingController": "upkeep.dev/controller",
        "reportingInstance": "upkeep",
        "action": "Transition",
        "reason": phase,
        "type": if warning { "Warning" } else { "Normal" },
        "note": note,
        "regarding": {"apiVersion": "upkeep.dev/v1alpha1", "kind": "Rollout", "name": name, "namespace": ns,
            "uid": rollout.metadata.uid.clone().unwrap_or_default()},
    }))
    .map_err(|e| e.to_string())?;
    match api.create(&PostParams::default(), &ev).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 409 => Ok(()),
        Err(e) => Err(e.to_string()),
    }
}

fn encode(q: &str) -> String {
    q.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Run the policy's checks that cover `component`; each result says what was seen and how long
/// it took.
pub async fn run_checks(
    checks: &[crate::model::Check],
    component: &str,
) -> Vec<crate::validate::Finding> {
    use crate::model::CheckKind;
    use crate::validate::Finding;
    let client = match reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
    {
        Ok(c) => c,
        Err(e) => {
            return vec![Finding {
                check: "policy checks".into(),
                ok: false,
                detail: format!("cannot make an HTTP client: {e}"),
            }];
        }
    };
    let mut out = Vec::new();
    for c in checks.iter().filter(|c| c.components.covers(component)) {
        let t = std::time::Instant::now();
        let (ok, what) = match &c.kind {
            CheckKind::Http { url, expect_status } => match client.get(url).send().await {
                Ok(r) if r.status().as_u16() == *expect_status => {
                    (true, format!("GET {url}: {}", r.status().as_u16()))
                }
                Ok(r) => (
                    false,
                    format!(
                        "GET {url}: {} (expected {expect_status})",
                        r.status().as_u16()
                    ),
                ),
                Err(e) => (
                    false,
                    format!("GET {url}: {}", crate::sources::http::error_chain(&e)),
                ),
            },
            CheckKind::Prometheus {
                url,
                query,
                max,
                min,
            } => {
                let q = format!("{url}/api/v1/query?query={}", encode(query));
                let value = async {
                    let r = client
                        .get(&q)
                        .send()
                        .await
                        .map_err(|e| crate::sources::http::error_chain(&e))?;
                    let body: Value =
                        serde_json::from_slice(&r.bytes().await.map_err(|e| e.to_string())?)
                            .map_err(|e| format!("not JSON: {e}"))?;
                    body.pointer("/data/result/0/value/1")
                        .and_then(Value::as_str)
                        .and_then(|v| v.parse::<f64>().ok())
                        .ok_or_else(|| "the query returned no value".to_string())
                }
                .await;
                match value {
                    Ok(v) => {
                        let over = max.is_some_and(|m| v > m);
                        let under = min.is_some_and(|m| v < m);
                        let bounds = [
                            min.map(|m| format!(">= {m}")),
                            max.map(|m| format!("<= {m}")),
                        ]
                        .into_iter()
                        .flatten()
                        .collect::<Vec<_>>()
                        .join(", ");
                        (!over && !under, format!("{query} = {v} (wanted {bounds})"))
                    }
                    Err(e) => (false, format!("{query}: {e}")),
                }
            }
        };
        out.push(Finding {
            check: c.name.clone(),
            ok,
            detail: format!("{what}, in {} ms", t.elapsed().as_millis()),
        });
    }
    out
}

fn waiting_text(d: &Decision) -> String {
    match d {
        Decision::Wait { next: Some(n) } => format!(
            "waiting for the next window, {}",
            n.format("%Y-%m-%d %H:%M UTC")
        ),
        Decision::Wait { next: None } => "no window opens within a year".into(),
        Decision::Frozen { freeze, until } => format!(
            "frozen by {freeze} until {}",
            until.format("%Y-%m-%d %H:%M UTC")
        ),
        Decision::Denied { window, until } => format!(
            "deny window {window} until {}",
            until.format("%Y-%m-%d %H:%M UTC")
        ),
        _ => String::new(),
    }
}

/// The backup taken for `rollout`, once ready: k3s' etcd snapshot; Longhorn's SystemBackup, or
/// every volume's Snapshot.
async fn backup_ready(
    client: &kube::Client,
    component: &str,
    rollout_name: &str,
    o: &Observed,
) -> Option<String> {
    let prefix = rollout::backup_name(rollout_name);
    match component {
        "k3s" => {
            let api: Api<DynamicObject> = Api::all_with(
                client.clone(),
                &ar(
                    "k3s.cattle.io",
                    "v1",
                    "ETCDSnapshotFile",
                    "etcdsnapshotfiles",
                ),
            );
            let list = api.list(&Default::default()).await.ok()?;
            list.items.iter().find_map(|o| {
                let name = o.data["spec"]["snapshotName"].as_str()?;
                (name.starts_with(&prefix) && o.data["status"]["readyToUse"] == json!(true))
                    .then(|| name.to_string())
            })
        }
        "longhorn" if o.longhorn_backup_target.is_some() => {
            let api: Api<DynamicObject> = Api::namespaced_with(
                client.clone(),
                LONGHORN_NAMESPACE,
                &ar("longhorn.io", "v1beta2", "SystemBackup", "systembackups"),
            );
            let b = api.get_opt(&prefix).await.ok()??;
            (b.data["status"]["state"] == "Ready").then(|| format!("SystemBackup {prefix}"))
        }
        "longhorn" => {
            let api: Api<DynamicObject> = Api::namespaced_with(
                client.clone(),
                LONGHORN_NAMESPACE,
                &ar("longhorn.io", "v1beta2", "Snapshot", "snapshots"),
            );
            let list = api
                .list(
                    &kube::api::ListParams::default()
                        .labels(&format!("upkeep.dev/rollout={rollout_name}")),
                )
                .await
                .ok()?;
            let ready = list
                .items
                .iter()
                .filter(|s| s.data["status"]["readyToUse"] == json!(true))
                .count();
            (ready == o.volumes.len() && ready > 0)
                .then(|| format!("{ready} Longhorn snapshots {prefix}-*"))
        }
        _ => None,
    }
}

pub const LONGHORN_NAMESPACE: &str = "longhorn-system";

fn plan_json(
    name: &str,
    version: &str,
    server: bool,
    halted: bool,
    concurrency: u64,
    drain: bool,
) -> Value {
    let mut p = crate::sim::kube::seed::example_plan(
        name,
        version,
        server,
        if server { 1 } else { concurrency.max(1) },
    );
    p["metadata"]["namespace"] = json!(SUC_NAMESPACE);
    if !server {
        p["spec"]["prepare"]["args"] = json!(["prepare", SERVER_PLAN]);
    }
    if !drain && let Some(spec) = p["spec"].as_object_mut() {
        spec.remove("drain");
    }
    if halted {
        // Match no node: the SUC starts nothing new.
        p["spec"]["nodeSelector"]["matchLabels"] = json!({"upkeep.dev/halted": "true"});
    }
    p
}

#[allow(clippy::too_many_arguments)]
async fn effect<F: Forge>(
    client: &kube::Client,
    repo: &Repo<'_, F>,
    c: &Component,
    name: &str,
    spec: &RolloutSpec,
    observed: &Observed,
    fx: &Effect,
    next: &mut RolloutStatus,
    concurrency: u64,
    drain: bool,
) -> Result<(), String> {
    let pp = PatchParams::apply(FIELD_MANAGER).force();
    match fx {
        Effect::Backup { name: backup } if c.name == "longhorn" => {
            let create = |api: Api<DynamicObject>, obj: Value| async move {
                let obj: DynamicObject = serde_json::from_value(obj).map_err(|e| e.to_string())?;
                match api.create(&PostParams::default(), &obj).await {
                    Ok(_) => Ok(()),
                    Err(kube::Error::Api(s)) if s.code == 409 => Ok(()),
                    Err(e) => Err(format!("creating a Longhorn backup: {e}")),
                }
            };
            if observed.longhorn_backup_target.is_some() {
                let api = Api::namespaced_with(
                    client.clone(),
                    LONGHORN_NAMESPACE,
                    &ar("longhorn.io", "v1beta2", "SystemBackup", "systembackups"),
                );
                create(api, json!({"apiVersion": "longhorn.io/v1beta2", "kind": "SystemBackup",
                    "metadata": {"name": backup, "namespace": LONGHORN_NAMESPACE, "labels": {"upkeep.dev/rollout": name}},
                    "spec": {"volumeBackupPolicy": "if-not-present"}}))
                    .await
            } else {
                for v in &observed.volumes {
                    let api = Api::namespaced_with(
                        client.clone(),
                        LONGHORN_NAMESPACE,
                        &ar("longhorn.io", "v1beta2", "Snapshot", "snapshots"),
                    );
                    create(api, json!({"apiVersion": "longhorn.io/v1beta2", "kind": "Snapshot",
                        "metadata": {"name": format!("{backup}-{}", v.name), "namespace": LONGHORN_NAMESPACE, "labels": {"upkeep.dev/rollout": name}},
                        "spec": {"volume": v.name, "createSnapshot": true}}))
                        .await?;
                }
                Ok(())
            }
        }
        Effect::Backup { name: backup } => {
            let server = observed
                .nodes
                .iter()
                .find(|n| n.etcd)
                .map(|n| n.name.clone())
                .unwrap_or_default();
            let jobs: Api<DynamicObject> = Api::namespaced_with(
                client.clone(),
                "kube-system",
                &ar("batch", "v1", "Job", "jobs"),
            );
            let job: DynamicObject = serde_json::from_value(json!({
                "apiVersion": "batch/v1", "kind": "Job",
                "metadata": {"name": format!("{backup}-snapshot").chars().take(63).collect::<String>(), "namespace": "kube-system", "labels": {"upkeep.dev/rollout": name}},
                "spec": {"backoffLimit": 0, "template": {"spec": {"nodeName": server, "restartPolicy": "Never", "hostNetwork": true,
                    "tolerations": [{"operator": "Exists"}],
                    "containers": [{"name": "snapshot", "image": "rancher/k3s-upgrade", "command": ["k3s", "etcd-snapshot", "save", "--name", backup],
                        "securityContext": {"privileged": true}}]}}}
            }))
            .map_err(|e| e.to_string())?;
            match jobs.create(&PostParams::default(), &job).await {
                Ok(_) => Ok(()),
                Err(kube::Error::Api(s)) if s.code == 409 => Ok(()),
                Err(e) => Err(format!("creating the snapshot Job: {e}")),
            }
        }
        Effect::Apply { version } => match c.name.as_str() {
            "k3s" => {
                let plans: Api<DynamicObject> = Api::namespaced_with(
                    client.clone(),
                    SUC_NAMESPACE,
                    &ar("upgrade.cattle.io", "v1", "Plan", "plans"),
                );
                for (plan, server) in [(SERVER_PLAN, true), (AGENT_PLAN, false)] {
                    let obj: DynamicObject = serde_json::from_value(plan_json(
                        plan,
                        version,
                        server,
                        false,
                        concurrency,
                        drain,
                    ))
                    .map_err(|e| e.to_string())?;
                    plans
                        .patch(plan, &pp, &Patch::Apply(&obj))
                        .await
                        .map_err(api_err("applying a Plan"))?;
                }
                Ok(())
            }
            "flux" => {
                let fi = observed.flux_instances.first().ok_or("no FluxInstance")?;
                let api: Api<DynamicObject> = Api::namespaced_with(
                    client.clone(),
                    &fi.namespace,
                    &ar(
                        "fluxcd.controlplane.io",
                        "v1",
                        "FluxInstance",
                        "fluxinstances",
                    ),
                );
                // Server-side apply of the one field upkeep owns (taken over from whoever set it).
                let obj = json!({"apiVersion": "fluxcd.controlplane.io/v1", "kind": "FluxInstance",
                    "metadata": {"name": fi.name, "namespace": fi.namespace},
                    "spec": {"distribution": {"version": version.trim_start_matches('v')}}});
                api.patch(&fi.name, &pp, &Patch::Apply(&obj))
                    .await
                    .map(|_| ())
                    .map_err(api_err("setting the FluxInstance version"))
            }
            other => {
                let h = observed
                    .helm_release_of(other)
                    .ok_or_else(|| format!("no HelmRelease for {other}"))?;
                let api: Api<DynamicObject> = Api::namespaced_with(
                    client.clone(),
                    &h.namespace,
                    &ar(
                        "helm.toolkit.fluxcd.io",
                        "v2",
                        "HelmRelease",
                        "helmreleases",
                    ),
                );
                let obj = json!({"apiVersion": "helm.toolkit.fluxcd.io/v2", "kind": "HelmRelease",
                    "metadata": {"name": h.name, "namespace": h.namespace},
                    "spec": {"chart": {"spec": {"version": version.trim_start_matches('v')}}}});
                api.patch(&h.name, &pp, &Patch::Apply(&obj))
                    .await
                    .map(|_| ())
                    .map_err(api_err("setting the HelmRelease chart version"))
            }
        },
        Effect::Pause => {
            if c.name == "k3s" {
                halt_plans(client, spec, next, concurrency, drain).await?;
            }
            Ok(())
        }
        Effect::Uncordon => uncordon(client, observed).await,
        Effect::Halt => {
            if c.name == "k3s" {
                halt_plans(client, spec, next, concurrency, drain).await?;
                // Uncordon what the rollout cordoned (preflight saw none cordoned before).
                uncordon(client, observed).await?;
            }
            Ok(())
        }
        Effect::Revert { version, message } => {
            if next.revert.is_some() {
                return Ok(());
            }
            next.revert = Some(revert(repo, c, &spec.to, version, message).await?);
            Ok(())
        }
        Effect::Comment { key, body } => {
            let (Some(forge), Some(pr)) = (repo.forge, spec.pull_request) else {
                return Ok(());
            };
            let marker = format!("<!-- upkeep:rollout={name} key={key} -->");
            let said = forge.comments(pr).await.map_err(|e| e.to_string())?;
            if said.iter().any(|b| b.contains(&marker)) {
                return Ok(());
            }
            forge.comment(pr, body).await.map_err(|e| e.to_string())
        }
    }
}

/// Put versions.yaml back to `back_to` on the base branch, unless someone already changed it.
/// A refused push (protection, a race) becomes a revert pull request instead. Never forced.
async fn revert<F: Forge>(
    repo: &Repo<'_, F>,
    c: &Component,
    failed: &str,
    back_to: &str,
    message: &str,
) -> Result<String, String> {
    let git = repo.git;
    git.fetch().map_err(|e| e.to_string())?;
    let tip = git.tip(&repo.base).map_err(|e| e.to_string())?;
    let path = vfile(&repo.subdir);
    let text = git
        .read_file(tip, &path)
        .map_err(|e| e.to_string())?
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default();
    let edited = match crate::gitrepo::set_version(&path, &text, &c.name, failed, back_to) {
        Ok(t) => t,
        // Not at the failed version any more: a human (or an earlier run) moved it already.
        Err(_) => return Ok(format!("{tip} (already changed)")),
    };
    let commit = git
        .commit_file(tip, &path, edited.as_bytes(), message, &repo.author)
        .map_err(|e| e.to_string())?;
    match git.push(commit, &repo.base, false) {
        Ok(()) => Ok(commit.to_string()),
        Err(e) => {
            tracing::warn!(error = %e, "the revert could not be pushed to the base branch; opening a pull request");
            let branch = format!(
                "{}revert-{}",
                crate::propose::BRANCH_PREFIX,
                rollout::rollout_name(&c.name, failed)
            );
            git.push(commit, &branch, true).map_err(|e| e.to_string())?;
            let forge = repo
                .forge
                .ok_or("the revert push was refused and no forge is configured to open a PR")?;
            let pr = forge
                .create_pull(
                    message.lines().next().unwrap_or(message),
                    &branch,
                    &repo.base,
                    &format!(
                        "{message}\n\nupkeep could not push this revert to {} ({e}).",
                        repo.base
                    ),
                )
                .await
                .map_err(|e| e.to_string())?;
            Ok(format!("#{}", pr.number))
        }
    }
}
