//! Applying merged versions: the I/O around [`crate::rollout::decide`]. One cycle reads the
//! desired state from the config repository, what runs from the cluster, creates a `Rollout`
//! custom resource per component that must move, and drives each: observe, decide, carry out the
//! effects (server-side apply as field manager `upkeep`, named backup objects, keyed comments, a
//! revert commit that checks the base branch first), persist the status. A restarted controller
//! resumes from the persisted status.

use std::time::Duration;

use chrono::{DateTime, Utc};
use kube::api::{Api, DynamicObject, ListParams, Patch, PatchParams, PostParams};
use kube::core::{ApiResource, GroupVersionKind};
use serde_json::{Value, json};

use crate::cluster::{self, AGENT_PLAN, Observed, SERVER_PLAN};
use crate::forge::Forge;
use crate::gitrepo::{Author, GitRepo};
use crate::model::{Component, ConfigRepo, Stage};
use crate::rollout::{self, Ctx, Effect, Phase, RolloutSpec, RolloutStatus};
use crate::versions;
use crate::windows::{self, Decision, Override};

pub const FIELD_MANAGER: &str = "upkeep";

fn ar(group: &str, version: &str, kind: &str, plural: &str) -> ApiResource {
    ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(group, version, kind), plural)
}

/// The UpkeepRollout objects of namespace `ns`.
pub fn rollouts(client: &kube::Client, ns: &str) -> Api<DynamicObject> {
    Api::namespaced_with(
        client.clone(),
        ns,
        &ar(
            rollout::GROUP,
            rollout::VERSION,
            rollout::KIND,
            rollout::PLURAL,
        ),
    )
}

fn api_err(what: &str) -> impl Fn(kube::Error) -> String + '_ {
    move |e| format!("{what}: {}", cluster::describe(&e))
}

/// Install the Rollout CRD and the namespace (idempotent).
pub async fn install(client: &kube::Client, ns: &str) -> Result<(), String> {
    let pp = PatchParams::apply(FIELD_MANAGER)
        .force()
        .validation_strict();
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
        .get_opt(rollout::CRD_NAME)
        .await
        .map_err(api_err("reading the UpkeepRollout CRD"))?
        .is_some();
    if !have_crd {
        let crd: DynamicObject =
            serde_json::from_value(rollout::crd()).map_err(|e| e.to_string())?;
        crds.patch(rollout::CRD_NAME, &pp, &Patch::Apply(&crd))
            .await
            .map_err(api_err("installing the UpkeepRollout CRD"))?;
    }
    let had_old = crds
        .get_opt(rollout::OLD_CRD_NAME)
        .await
        .map_err(api_err("reading the old Rollout CRD"))?
        .is_some();
    if had_old {
        migrate_old_rollouts(client, ns).await?;
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

/// Move the objects of the old `rollouts.upkeep.dev` CRD (kind `Rollout`) in `ns` to
/// `UpkeepRollout`s of the same name, spec, labels, annotations and status (with conditions),
/// then delete the old object, so that the history and a rollout in flight carry on. Idempotent:
/// an object already moved is only deleted. The old CRD itself is left for a human to delete
/// (`kubectl delete crd rollouts.upkeep.dev`, docs/install.md). Returns how many moved.
pub async fn migrate_old_rollouts(client: &kube::Client, ns: &str) -> Result<usize, String> {
    let old: Api<DynamicObject> = Api::namespaced_with(
        client.clone(),
        ns,
        &ar(
            rollout::GROUP,
            rollout::VERSION,
            rollout::OLD_KIND,
            rollout::OLD_PLURAL,
        ),
    );
    let new = rollouts(client, ns);
    let all = old
        .list(&ListParams::default())
        .await
        .map_err(api_err("listing the old Rollouts"))?;
    let mut moved = 0;
    for o in &all.items {
        let Some(name) = o.metadata.name.clone() else {
            continue;
        };
        if new
            .get_opt(&name)
            .await
            .map_err(api_err("reading an UpkeepRollout"))?
            .is_none()
        {
            let obj: DynamicObject = serde_json::from_value(json!({
                "apiVersion": format!("{}/{}", rollout::GROUP, rollout::VERSION),
                "kind": rollout::KIND,
                "metadata": {"name": name, "namespace": ns,
                    "labels": o.metadata.labels.clone().unwrap_or_default(),
                    "annotations": o.metadata.annotations.clone().unwrap_or_default()},
                "spec": o.data["spec"].clone(),
            }))
            .map_err(|e| e.to_string())?;
            let made = match new.create(&PostParams::default(), &obj).await {
                Ok(made) => Some(made),
                Err(kube::Error::Api(e)) if e.code == 409 => None,
                Err(e) => return Err(format!("moving rollout {name}: {}", cluster::describe(&e))),
            };
            if let Some(made) = made {
                let mut status = read_status(o)?;
                status.observed_generation = made.metadata.generation;
                status.conditions =
                    rollout::conditions(&status, made.metadata.generation, Utc::now());
                new.patch_status(
                    &name,
                    &PatchParams {
                        field_manager: Some(FIELD_MANAGER.into()),
                        ..Default::default()
                    },
                    &Patch::Merge(json!({ "status": status })),
                )
                .await
                .map_err(api_err("moving a rollout's status"))?;
            }
            moved += 1;
            tracing::info!(
                rollout = name,
                "moved from the old Rollout CRD to UpkeepRollout"
            );
        }
        match old.delete(&name, &Default::default()).await {
            Ok(_) => {}
            Err(kube::Error::Api(e)) if e.code == 404 => {}
            Err(e) => {
                return Err(format!(
                    "deleting the old Rollout {name}: {}",
                    cluster::describe(&e)
                ));
            }
        }
    }
    Ok(moved)
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
    /// Where SUC, the snapshot Job and Longhorn live.
    pub namespaces: cluster::Namespaces,
    /// How the time between two looks passes.
    pub pace: Pace,
}

/// How the drive loop passes the time between two looks at the cluster.
#[derive(Clone, Default)]
pub enum Pace {
    /// Sleep [`Options::poll`] of real time: the controller and `upkeep apply`.
    #[default]
    Sleep,
    /// Call this instead. A simulation moves its own clock and lets its cluster act, so that a
    /// story's outcome never depends on how busy the machine is (the `now` given to [`run`]
    /// reads that clock, and the cycle's budget is counted on it).
    Step(std::sync::Arc<dyn Fn() + Send + Sync>),
}

impl std::fmt::Debug for Pace {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Pace::Sleep => "Sleep",
            Pace::Step(_) => "Step",
        })
    }
}

impl Pace {
    async fn wait(&self, poll: Duration) {
        match self {
            Pace::Sleep => tokio::time::sleep(poll).await,
            Pace::Step(step) => {
                step();
                tokio::task::yield_now().await;
            }
        }
    }
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
            namespaces: cluster::Namespaces::default(),
            pace: Pace::Sleep,
        }
    }
}

/// What a cycle did, per rollout: (name, phase, message).
pub type Summary = Vec<(String, Phase, String)>;

/// The path of versions.yaml for the cluster directory `subdir` of the config repository.
pub fn vfile(subdir: &str) -> String {
    let s = subdir.trim_matches('/');
    if s.is_empty() {
        "versions.yaml".into()
    } else {
        format!("{s}/versions.yaml")
    }
}

/// A rollout object read: its name, spec and status.
pub type Seen = (String, RolloutSpec, RolloutStatus);

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
    /// What the cluster runs, per component it says something of.
    pub running: crate::propose::Running,
    /// The rollouts this look drove (the others in `rollouts` are shown, not driven).
    pub driven: Vec<String>,
    /// Components that differ from versions.yaml but get no rollout, and why (no legal path:
    /// after a revert a component cannot follow, say). The same every look until something
    /// changes, so the caller says it once ([`Blocked`] compares).
    pub blocked: Blocked,
    /// The nodes as this look saw them (name, version, Ready), for the status page.
    pub nodes: Vec<cluster::NodeState>,
    /// What a human suspended (`(everything)` for all): who, when, why.
    pub suspended: std::collections::BTreeMap<String, String>,
    /// The rollouts that ended, newest first (at most [`HISTORY`]).
    pub history: Vec<HistoryEntry>,
    /// Every rollout object in the namespace, with its spec and status (for notifications).
    pub all: Vec<Seen>,
}

/// How many ended rollouts the status page shows.
pub const HISTORY: usize = 10;

/// A rollout that ended, for the status page's short history.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct HistoryEntry {
    pub name: String,
    pub from: String,
    pub to: String,
    pub phase: Phase,
    pub started_at: Option<DateTime<Utc>>,
    pub ended_at: Option<DateTime<Utc>>,
    pub acknowledged: Option<String>,
}

/// What one look at the cluster found before driving: the rollouts to drive (with their
/// component), what runs, what cannot start and why, and the nodes.
struct Found {
    names: Vec<(String, Component)>,
    running: crate::propose::Running,
    blocked: Blocked,
    nodes: Vec<cluster::NodeState>,
}

/// Component -> why it gets no rollout.
pub type Blocked = std::collections::BTreeMap<String, String>;

/// What changed between two looks' [`Blocked`]: (component, why) newly blocked, and the
/// components no longer blocked. A situation that lasts is said once, not every reconcile.
pub fn blocked_changes(before: &Blocked, now: &Blocked) -> (Vec<(String, String)>, Vec<String>) {
    let new = now
        .iter()
        .filter(|(c, why)| before.get(*c) != Some(*why))
        .map(|(c, why)| (c.clone(), why.clone()))
        .collect();
    let gone = before
        .keys()
        .filter(|c| !now.contains_key(*c))
        .cloned()
        .collect();
    (new, gone)
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
    // A suspended component is frozen without an end, whoever drives (the controller or
    // `upkeep apply`).
    let suspensions = crate::operate::suspensions(client, &opts.namespace)
        .await
        .map_err(|e| e.to_string())?;
    let suspended_config;
    let config = if suspensions.is_empty() {
        config
    } else {
        let mut c = config.clone();
        c.freezes
            .extend(crate::operate::as_freezes(&suspensions, now()));
        suspended_config = c;
        &suspended_config
    };
    let d = Driver {
        client,
        repo,
        opts,
        api: rollouts(client, &opts.namespace),
        suspensions: &suspensions,
        reading: Default::default(),
        scope: crate::propose::Scope::new(&repo.subdir, config.cluster.as_deref()),
    };
    let pulls = match repo.forge {
        Some(f) => f
            .pulls(&d.scope.prefix())
            .await
            .unwrap_or_default()
            .into_iter()
            .filter(|p| d.scope.owns(&p.head))
            .collect(),
        None => Vec::new(),
    };
    let Found {
        names,
        mut running,
        blocked,
        nodes,
    } = d.create_missing(config, &pulls).await?;
    // One list of every rollout per cycle: those versions.yaml no longer asks for are ended
    // first; the driven ones are read again after driving and replace their copies.
    let mut all = d
        .api
        .list(&ListParams::default())
        .await
        .map_err(api_err("listing rollouts"))?
        .items;
    d.supersede_replaced(config, &names, &mut all, now())
        .await?;
    d.drive(config, &names, now).await?;
    let mut out = Vec::new();
    for (name, c) in &names {
        if let Some(obj) = d.get(name).await? {
            match all
                .iter_mut()
                .find(|o| o.metadata.name.as_deref() == Some(name))
            {
                Some(stale) => *stale = obj.clone(),
                None => all.push(obj.clone()),
            }
            let status = status_of(&obj);
            if status.phase != Phase::Succeeded
                && let Some(r) = running.get_mut(&c.name)
            {
                r.unfinished = Some(match &status.soak {
                    Some(soak) if status.phase == Phase::Soaking => format!(
                        "rollout {name} soaks until {}",
                        soak.until.format("%Y-%m-%d %H:%M UTC")
                    ),
                    _ => format!("rollout {name} is {:?}", status.phase),
                });
            }
            let acked = crate::operate::acknowledgement(&obj).is_some();
            if crate::operate::shown(status.phase, acked, true) {
                out.push((name.clone(), status));
            }
        }
    }
    // The others stay in sight while a human should look: a failure nobody acknowledged (after
    // a revert, versions.yaml no longer names it), or one left unfinished (stuck: a newer version
    // was merged while it ran).
    let mut history: Vec<HistoryEntry> = all
        .iter()
        .filter_map(|obj| {
            let st = status_of(obj);
            st.phase.is_terminal().then(|| HistoryEntry {
                name: obj.metadata.name.clone().unwrap_or_default(),
                from: obj.data["spec"]["from"].as_str().unwrap_or_default().into(),
                to: obj.data["spec"]["to"].as_str().unwrap_or_default().into(),
                phase: st.phase,
                started_at: st.started_at,
                ended_at: st.phase_since,
                acknowledged: crate::operate::acknowledgement(obj),
            })
        })
        .collect();
    history.sort_by_key(|e| std::cmp::Reverse(e.ended_at));
    history.truncate(HISTORY);
    for obj in &all {
        let Some(name) = obj.metadata.name.as_ref() else {
            continue;
        };
        if names.iter().any(|(n, _)| n == name) {
            continue;
        }
        let status = status_of(obj);
        let acked = crate::operate::acknowledgement(obj).is_some();
        if crate::operate::shown(status.phase, acked, false) {
            out.push((name.clone(), status));
        }
    }
    d.finish_maintenance(config, &names, &mut all, now())
        .await?;
    if let Err(e) = d.prune(config, &names, &all).await {
        tracing::warn!(error = %e, "cannot prune old rollouts; tried again next cycle");
    }
    let every = all
        .iter()
        .filter_map(|obj| {
            let spec = serde_json::from_value::<RolloutSpec>(obj.data["spec"].clone()).ok()?;
            Some((obj.metadata.name.clone()?, spec, read_status(obj).ok()?))
        })
        .collect();
    Ok(Applied {
        all: every,
        rollouts: out,
        pulls,
        running,
        driven: names.into_iter().map(|(n, _)| n).collect(),
        blocked,
        nodes,
        history,
        suspended: suspensions
            .into_iter()
            .map(|(c, why)| (c.unwrap_or_else(|| "(everything)".into()), why))
            .collect(),
    })
}

/// A Rollout's status; an empty one is `Pending`, one that cannot be read is an error (never
/// taken for `Pending`: that would start a finished rollout again).
fn read_status(obj: &DynamicObject) -> Result<RolloutStatus, String> {
    match obj.data.get("status") {
        None | Some(Value::Null) => Ok(RolloutStatus::default()),
        Some(v) => serde_json::from_value(v.clone()).map_err(|e| {
            format!(
                "rollout {}: its status cannot be read ({e}); fix or delete it",
                obj.metadata.name.as_deref().unwrap_or("")
            )
        }),
    }
}

/// A Rollout's status for showing it (`upkeep get`, `upkeep history`, the page): one that
/// cannot be read shows as `Pending`.
pub fn status_of(obj: &DynamicObject) -> RolloutStatus {
    read_status(obj).unwrap_or_default()
}

/// What one cycle works with: the cluster, the config repository and the options.
struct Driver<'a, 'r, F: Forge> {
    client: &'a kube::Client,
    repo: &'a Repo<'r, F>,
    opts: &'a Options,
    api: Api<DynamicObject>,
    suspensions: &'a crate::operate::Suspensions,
    /// The base branch's tip read as Flux builds it, by commit (read again when it moves).
    reading: std::sync::Mutex<Option<(String, std::sync::Arc<crate::layout::Reading>)>>,
    /// The cluster in shared names (branches, rollouts) when several share the repository.
    scope: crate::propose::Scope,
}

/// One rollout while it is driven: what it is and what the cluster shows.
struct Target<'a> {
    name: &'a str,
    spec: &'a RolloutSpec,
    component: &'a Component,
    observed: &'a Observed,
    scope: &'a crate::propose::Scope,
}

impl<F: Forge> Driver<'_, '_, F> {
    async fn get(&self, name: &str) -> Result<Option<DynamicObject>, String> {
        self.api
            .get_opt(name)
            .await
            .map_err(api_err("reading a rollout"))
    }

    fn ns(&self) -> &cluster::Namespaces {
        &self.opts.namespaces
    }

    /// The Rollout of every component that must move (created when missing), with its
    /// component; and what the cluster runs of each component.
    async fn create_missing(
        &self,
        config: &ConfigRepo,
        pulls: &[crate::forge::PullRequest],
    ) -> Result<Found, String> {
        let observed = cluster::observe(self.client, self.ns())
            .await
            .map_err(|e| e.to_string())?;
        let mut names = Vec::new();
        let mut runs = crate::propose::Running::new();
        let mut blocked = Blocked::new();
        for c in config
            .components
            .iter()
            .filter(|c| self.opts.only.as_ref().is_none_or(|o| *o == c.name))
        {
            let running = observed.running(c);
            let Some(from) = running.lowest(c.scheme) else {
                continue;
            };
            runs.insert(
                c.name.clone(),
                crate::propose::Runs {
                    version: from.clone(),
                    unfinished: None,
                },
            );
            let in_step = matches!(&running, cluster::Running::At { .. }) && from == c.version;
            let name = self.scope.rollout(&c.name, &c.version.to_string());
            let existing = self.get(&name).await?;
            // A version in git that versions.yaml does not ask for: the manifest moved outside
            // upkeep (Renovate, a human). Said as such, never taken for a downgrade.
            if existing.is_none()
                && let Some(why) = moved_outside(c, &from, &self.route(c, &observed))
            {
                blocked.insert(c.name.clone(), why);
                continue;
            }
            if existing.is_none() && in_step {
                continue;
            }
            if let Some(obj) = &existing
                && self.opts.emergency
            {
                self.mark_emergency(obj, &name).await?;
            }
            if existing.is_none() {
                let spec = match self.spec_for(c, &from, pulls) {
                    Ok(spec) => spec,
                    Err(why) => {
                        blocked.insert(c.name.clone(), why);
                        continue;
                    }
                };
                let obj: DynamicObject = serde_json::from_value(json!({
                    "apiVersion": format!("{}/{}", rollout::GROUP, rollout::VERSION), "kind": rollout::KIND,
                    "metadata": {"name": name, "namespace": self.opts.namespace, "labels": {"upkeep.dev/component": c.name}},
                    "spec": spec,
                }))
                .map_err(|e| e.to_string())?;
                match self.api.create(&PostParams::default(), &obj).await {
                    Ok(_) => tracing::info!(rollout = name, "created"),
                    Err(kube::Error::Api(e)) if e.code == 409 => {}
                    Err(e) => {
                        return Err(format!(
                            "creating rollout {name}: {}",
                            cluster::describe(&e)
                        ));
                    }
                }
            }
            names.push((name, c.clone()));
        }
        Ok(Found {
            names,
            running: runs,
            blocked,
            nodes: observed.nodes.clone(),
        })
    }

    /// `upkeep apply --emergency` on a rollout that exists: it may start outside windows from now
    /// on (freezes still hold). A finished rollout is left as it is ([`emergency_note`] says so).
    async fn mark_emergency(&self, obj: &DynamicObject, name: &str) -> Result<(), String> {
        let finished = read_status(obj).is_ok_and(|s| s.phase.is_terminal());
        if finished || obj.data["spec"]["emergency"] == json!(true) {
            return Ok(());
        }
        self.api
            .patch(
                name,
                &PatchParams::default(),
                &Patch::Merge(&json!({"spec": {"emergency": true}})),
            )
            .await
            .map_err(api_err("marking a rollout as an emergency"))?;
        tracing::info!(
            rollout = name,
            "marked as an emergency: it may start outside windows (freezes still hold)"
        );
        Ok(())
    }

    /// The spec of a new rollout of `c` from `from`: its hops (a legal path through the known
    /// releases), and the merged pull request that asked for it. `None`: no legal path.
    fn spec_for(
        &self,
        c: &Component,
        from: &versions::Version,
        pulls: &[crate::forge::PullRequest],
    ) -> Result<RolloutSpec, String> {
        let hops = match versions::check_hop(from, &c.version, &c.path_rule) {
            Ok(()) => vec![c.version.to_string()],
            // A longer way through the releases in between, hop by hop.
            Err(e) => {
                let available = self
                    .opts
                    .releases
                    .get(&c.name)
                    .map(Vec::as_slice)
                    .unwrap_or(&[]);
                match versions::plan_path(from, &c.version, available, &c.path_rule) {
                    Ok(p) if !p.is_empty() => p.iter().map(ToString::to_string).collect(),
                    _ => return Err(format!("no legal path; nothing applied: {e}")),
                }
            }
        };
        let branch = self.scope.branch(&c.name, &c.version.to_string());
        let pr = pulls.iter().find(|p| p.merged && p.head == branch);
        Ok(RolloutSpec {
            component: c.name.clone(),
            from: from.to_string(),
            to: c.version.to_string(),
            hops,
            pull_request: pr.map(|p| p.number),
            emergency: self.opts.emergency
                || pr.is_some_and(|p| p.labels.iter().any(|l| l == "upkeep/emergency")),
        })
    }

    /// Look, decide and act on every rollout until none is active, all only wait for a
    /// window, or the cycle's budget is spent.
    async fn drive(
        &self,
        config: &ConfigRepo,
        names: &[(String, Component)],
        now: &(dyn Fn() -> DateTime<Utc> + Sync),
    ) -> Result<(), String> {
        // The budget is counted on the clock the rollouts are judged by (the real one, or a
        // simulation's).
        let start = now();
        // Bounded however the clock behaves (a clock that does not move with the pace would
        // otherwise keep the budget from ever running out).
        let max_looks = (self.opts.budget.as_millis() / self.opts.poll.as_millis().max(1))
            .saturating_add(2)
            .min(u128::from(u32::MAX));
        let mut looks: u128 = 0;
        loop {
            looks += 1;
            let observed = cluster::observe(self.client, self.ns())
                .await
                .map_err(|e| e.to_string())?;
            let mut active = false;
            let mut waiting_only = true;
            let mut objs = Vec::new();
            for (name, c) in names {
                if let Some(obj) = self.get(name).await? {
                    objs.push((name, c, obj));
                }
            }
            // One rollout at a time: the one that holds the cluster, if any.
            let mut busy: Option<&String> = objs
                .iter()
                .find(|(_, _, o)| read_status(o).is_ok_and(|s| s.phase.holds_the_cluster()))
                .map(|(n, _, _)| *n);
            for (name, c, obj) in &objs {
                let other = busy.filter(|b| b != name).map(String::as_str);
                let Some((phase, may_start)) =
                    self.step(config, obj, c, &observed, now(), other).await?
                else {
                    continue;
                };
                if phase.0.holds_the_cluster() {
                    busy.get_or_insert(name);
                } else if busy == Some(name) {
                    busy = None;
                }
                if !phase.0.is_terminal() {
                    active = true;
                    // A soak is watched once per cycle (the controller's poll), not driven.
                    let soaking = phase.0 == Phase::Soaking;
                    let waits = phase.0 == Phase::WaitingForWindow
                        || (phase.0 == Phase::Applying && phase.1);
                    if !soaking && (!waits || may_start) {
                        waiting_only = false;
                    }
                }
            }
            let spent = (now() - start).to_std().unwrap_or_default();
            if !active || waiting_only || spent >= self.opts.budget || looks >= max_looks {
                return Ok(());
            }
            self.opts.pace.wait(self.opts.poll).await;
        }
    }

    /// One look at one rollout: decide, carry out the effects, save the status. Its phase (and
    /// whether it is paused) and whether work may start now; `None` when it is over.
    async fn step(
        &self,
        config: &ConfigRepo,
        obj: &DynamicObject,
        c: &Component,
        observed: &Observed,
        t: DateTime<Utc>,
        // Another rollout that holds the cluster: this one may not start (or leave preflight).
        other: Option<&str>,
    ) -> Result<Option<((Phase, bool), bool)>, String> {
        let name = obj.metadata.name.clone().unwrap_or_default();
        // One Rollout that cannot be read is skipped and said, not the end of the cycle.
        let read = serde_json::from_value::<RolloutSpec>(obj.data["spec"].clone())
            .map_err(|e| format!("rollout {name}: its spec cannot be read ({e}); fix or delete it"))
            .and_then(|spec| Ok((spec, read_status(obj)?)));
        let (spec, status) = match read {
            Ok(x) => x,
            Err(e) => {
                tracing::error!(error = %e, "a rollout upkeep cannot read");
                return Ok(None);
            }
        };
        if status.phase.is_terminal() {
            // Ended leaving the user's k3s Plans held through Flux after a success (the resume
            // at its end failed): resume now. After a failure the hold stays for a human.
            self.resume_after_end(c, &name, &spec, observed, status.phase)
                .await;
            // Ended while in maintenance (leaving failed at the last look): leave now.
            if status.in_maintenance() {
                let mut next = status.clone();
                self.maintain(config, &c.name, &name, &mut next, t).await;
                self.save(obj, &status, next, t).await?;
            }
            return Ok(None);
        }
        let _span = tracing::info_span!("rollout", rollout = %name, component = %c.name).entered();
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
        // How the version gets to the cluster: through git where the repository carries it
        // (as Flux builds it), else in the cluster, else refused with why (preflight says it).
        let routed;
        let observed = {
            let mut o = observed.clone();
            o.routes.insert(c.name.clone(), self.route(c, observed));
            routed = o;
            &routed
        };
        let target = Target {
            name: &name,
            spec: &spec,
            component: c,
            observed,
            scope: &self.scope,
        };
        let backup_state = if status.phase == Phase::Backup {
            self.backup_state(&target, status.backup_attempt.as_deref())
                .await
        } else {
            rollout::BackupState::Pending
        };
        let created = obj
            .metadata
            .creation_timestamp
            .as_ref()
            .and_then(|c| {
                let nanos = u32::try_from(c.0.subsec_nanosecond()).unwrap_or(0);
                DateTime::from_timestamp(c.0.as_second(), nanos)
            })
            .unwrap_or(t);
        // Waiting for its turn only before it has started; one already under way (from before
        // this rule, or started by a human) carries on.
        let turn = other.filter(|_| {
            matches!(
                status.phase,
                Phase::Pending | Phase::WaitingForWindow | Phase::Preflight
            )
        });
        let ctx = Ctx {
            now: t,
            created,
            component: c,
            observed,
            may_start: decision.allows_start() && turn.is_none(),
            waiting: match (turn, crate::operate::suspended(self.suspensions, &c.name)) {
                (Some(other), _) if decision.allows_start() => rollout::turn_text(other),
                (_, Some(why)) => format!(
                    "suspended by {why} (resume: upkeep resume {})",
                    if self.suspensions.contains_key(&None) {
                        "--all".to_string()
                    } else {
                        c.name.clone()
                    }
                ),
                (_, None) => waiting_text(&decision, windows::zone_for(&c.name, &config.windows)),
            },
            backup: self.opts.backup,
            backup_state,
            timeout: self.opts.timeout,
            preflight: crate::validate::PreflightPolicy {
                allow_degraded_volumes: self.opts.allow_degraded_volumes,
                drain: self.opts.drain,
            },
            extra_checks: match status.phase {
                Phase::Validating => run_checks(&config.checks, &c.name, Stage::Validation).await,
                Phase::Soaking => run_checks(&config.checks, &c.name, Stage::Soak).await,
                _ => Vec::new(),
            },
            soak: config.soak_for(&c.name),
        };
        let (mut next, mut effects) = rollout::decide(&name, &spec, &status, &ctx);
        // The apps go down before anything changes; when that cannot be done, nothing is.
        if let Err(e) = self
            .enter_maintenance(config, &c.name, &name, &mut next, t)
            .await
        {
            tracing::warn!(error = %e, "cannot enter maintenance mode; retried next look");
            next = status.clone();
            next.message = format!("retrying: {e}");
            // Some workloads may be down already: the record makes the leaving below (and at
            // later looks) give them back.
            next.maintenance = Some(crate::maintenance::Record {
                entered_at: t,
                done: vec![format!("partly: {e}")],
                restored_at: None,
                restored: Vec::new(),
            });
            effects.clear();
        }
        for fx in &effects {
            match self.effect(&target, fx, &mut next).await {
                Ok(()) => {}
                // A report that cannot be posted now does not hold the rollout back (nor undo
                // its transition); it is posted at the next look that still runs.
                Err(e) if matches!(fx, Effect::Comment { .. }) => {
                    tracing::warn!(error = %e, "a pull request comment failed; tried again later");
                    if let Effect::Comment { key, .. } = fx {
                        next.posted.retain(|k| k != key);
                    }
                }
                // Setting the release back to what runs after a failure with nothing moved is
                // best effort: it never turns the revert into another failure, nor loses the
                // revert already made (the release's controller retries the failed version
                // until a human sets it, as the comment says).
                Err(e) if matches!(fx, Effect::Apply { .. }) && next.phase == Phase::Reverted => {
                    tracing::warn!(error = %e, "cannot set the release back to what runs");
                }
                // Refused for good (the base branch's protection, a review required): the hop
                // fails now, with the reason, instead of trying again every look.
                Err(Fail::Refused(why)) => {
                    tracing::error!(error = %why, "the change was refused; the hop fails");
                    let kept = next.maintenance.clone();
                    next = status.clone();
                    next.maintenance = kept;
                    let mut ignored = Vec::new();
                    rollout::fail(&mut next, &mut ignored, &spec, c, why, t);
                    break;
                }
                Err(Fail::Retry(e)) => {
                    tracing::warn!(error = %e, "an effect failed; retried next look");
                    // What maintenance mode did this look is kept, so that it is undone.
                    let kept = next.maintenance.clone();
                    next = status.clone();
                    next.maintenance = kept;
                    next.message = format!("retrying: {e}");
                    break;
                }
            }
        }
        for change in rollout::node_changes(&status.nodes, &next.nodes) {
            tracing::info!(node = %change, "node");
        }
        // A rollout that ends while the user's k3s Plans are held through Flux (a window closed
        // as the last node finished, or a newer merge superseded it) gives Flux back its
        // Kustomization: no suspension outlives the rollout that made it.
        self.resume_after_end(c, &name, &spec, observed, next.phase)
            .await;
        self.maintain(config, &c.name, &name, &mut next, t).await;
        let next = self.save(obj, &status, next, t).await?;
        Ok(Some(((next.phase, next.paused), ctx.may_start)))
    }

    /// Delete the ended rollout objects beyond the policy's `keepEnded`, once git's log holds
    /// their merge ([`crate::history::prunable`]).
    async fn prune(
        &self,
        config: &ConfigRepo,
        names: &[(String, Component)],
        all: &[DynamicObject],
    ) -> Result<(), String> {
        let ended: Vec<crate::history::Ended> = all
            .iter()
            .filter_map(|obj| {
                let name = obj.metadata.name.clone()?;
                let st = read_status(obj).ok()?;
                (st.phase.is_terminal()
                    && !st.in_maintenance()
                    && !names.iter().any(|(n, _)| *n == name))
                .then(|| crate::history::Ended {
                    component: obj.data["spec"]["component"]
                        .as_str()
                        .unwrap_or_default()
                        .into(),
                    to: obj.data["spec"]["to"].as_str().unwrap_or_default().into(),
                    failed: crate::operate::is_failure(st.phase),
                    acknowledged: crate::operate::acknowledgement(obj).is_some(),
                    ended_at: st.phase_since,
                    name,
                })
            })
            .collect();
        let keep = config.rollouts.keep_ended;
        // Git's log is read only when something beyond the limit could go.
        if crate::history::beyond(&ended, keep).is_empty() {
            return Ok(());
        }
        let log = self
            .repo
            .git
            .version_changes(
                &self.repo.base,
                &vfile(&self.repo.subdir),
                DateTime::<Utc>::MIN_UTC,
                10_000,
            )
            .map_err(|e| e.to_string())?;
        for name in crate::history::prunable(&ended, keep, &log) {
            match self.api.delete(&name, &Default::default()).await {
                Ok(_) => tracing::info!(
                    rollout = %name,
                    keep,
                    "deleted an ended rollout beyond rollouts.keepEnded (git's log keeps its record)"
                ),
                Err(kube::Error::Api(e)) if e.code == 404 => {}
                Err(e) => {
                    return Err(format!(
                        "deleting rollout {name}: {}",
                        cluster::describe(&e)
                    ));
                }
            }
        }
        Ok(())
    }

    /// Give back what ended rollouts that are no longer driven still hold in maintenance (one
    /// reverted or superseded while leaving failed).
    async fn finish_maintenance(
        &self,
        config: &ConfigRepo,
        names: &[(String, Component)],
        all: &mut [DynamicObject],
        t: DateTime<Utc>,
    ) -> Result<(), String> {
        for obj in all.iter_mut() {
            let Some(name) = obj.metadata.name.clone() else {
                continue;
            };
            if names.iter().any(|(n, _)| *n == name) {
                continue;
            }
            let Ok(status) = read_status(obj) else {
                continue;
            };
            if !status.in_maintenance() || !status.phase.is_terminal() {
                continue;
            }
            let component = obj.data["spec"]["component"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            let mut next = status.clone();
            self.maintain(config, &component, &name, &mut next, t).await;
            let saved = self.save(obj, &status, next, t).await?;
            obj.data["status"] = serde_json::to_value(&saved).unwrap_or_default();
        }
        Ok(())
    }

    /// Enter maintenance mode when `next` changes the cluster and it is not in it yet.
    async fn enter_maintenance(
        &self,
        config: &ConfigRepo,
        component: &str,
        name: &str,
        next: &mut RolloutStatus,
        t: DateTime<Utc>,
    ) -> Result<(), String> {
        let plan = config.maintenance_for(Some(component));
        if plan.is_empty()
            || !crate::maintenance::wanted(next.phase, next.paused)
            || next.in_maintenance()
        {
            return Ok(());
        }
        let done =
            crate::maintenance::enter(self.client, &plan, &crate::maintenance::by_rollout(name), t)
                .await
                .map_err(|e| format!("maintenance mode: {e}"))?;
        for d in &done {
            tracing::info!(what = %d, "maintenance mode");
        }
        next.maintenance = Some(crate::maintenance::Record {
            entered_at: t,
            done,
            restored_at: None,
            restored: Vec::new(),
        });
        Ok(())
    }

    /// Leave maintenance mode once `next` no longer changes the cluster (after the step's
    /// effects). What this rollout scaled down gets its replicas back, also a workload the
    /// policy no longer lists. A failure is retried at the next look.
    async fn maintain(
        &self,
        config: &ConfigRepo,
        component: &str,
        name: &str,
        next: &mut RolloutStatus,
        t: DateTime<Utc>,
    ) {
        if !next.in_maintenance() || crate::maintenance::wanted(next.phase, next.paused) {
            return;
        }
        let mut plan = config.maintenance_for(Some(component));
        // What the record says it touched, whatever the policy says now.
        if let Some(m) = &next.maintenance {
            for d in &m.done {
                let Some((what, _)) = d.split_once(':') else {
                    continue;
                };
                let mut parts = what.splitn(3, '/');
                if let (Some(kind), Some(ns), Some(n)) = (parts.next(), parts.next(), parts.next())
                    && !plan.scale_down.iter().any(|w| w.to_string() == what)
                {
                    plan.scale_down.push(crate::model::Workload {
                        kind: kind.into(),
                        namespace: ns.into(),
                        name: n.into(),
                    });
                }
            }
        }
        match crate::maintenance::leave(
            self.client,
            &plan,
            Some(&crate::maintenance::by_rollout(name)),
        )
        .await
        {
            Ok(done) => {
                for d in &done {
                    tracing::info!(what = %d, "maintenance mode over");
                }
                if let Some(m) = next.maintenance.as_mut() {
                    m.restored_at = Some(t);
                    m.restored = done;
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot leave maintenance mode; retried next look")
            }
        }
    }

    /// Save `next` as the rollout's status (with its conditions) when it changed, and log and
    /// record an event when its phase did. The status saved.
    async fn save(
        &self,
        obj: &DynamicObject,
        status: &RolloutStatus,
        mut next: RolloutStatus,
        t: DateTime<Utc>,
    ) -> Result<RolloutStatus, String> {
        let name = obj.metadata.name.clone().unwrap_or_default();
        next.observed_generation = obj.metadata.generation;
        next.conditions = rollout::conditions(&next, obj.metadata.generation, t);
        if next != *status {
            self.api
                .patch_status(
                    &name,
                    &PatchParams {
                        field_manager: Some(FIELD_MANAGER.into()),
                        ..Default::default()
                    },
                    &Patch::Merge(json!({"status": next})),
                )
                .await
                .map_err(api_err("saving a rollout's status"))?;
            if next.phase != status.phase {
                // A failure is a warning (and an error once a human must step in), so that a
                // log alert or `UPKEEP_LOG=warn` catches it.
                match next.phase {
                    Phase::RequiresAttention => {
                        tracing::error!(from = ?status.phase, to = ?next.phase, message = %next.message, "rollout phase")
                    }
                    Phase::Failed | Phase::Reverting | Phase::Reverted => {
                        tracing::warn!(from = ?status.phase, to = ?next.phase, message = %next.message, "rollout phase")
                    }
                    _ => {
                        tracing::info!(from = ?status.phase, to = ?next.phase, message = %next.message, "rollout phase")
                    }
                }
                if let Err(e) = event(self.client, &self.opts.namespace, obj, &next, t).await {
                    tracing::warn!(error = %e, "cannot record an event");
                }
            }
        }
        Ok(next)
    }

    /// End each rollout versions.yaml no longer asks for ([`rollout::supersede`]): one not
    /// finished, of a component whose current rollout is another (a newer version was merged
    /// while it ran) or whose desired version already runs (the change was undone). Without
    /// this it would sit in its last phase for ever and its PR would never hear the end.
    async fn supersede_replaced(
        &self,
        config: &ConfigRepo,
        names: &[(String, Component)],
        all: &mut [DynamicObject],
        t: DateTime<Utc>,
    ) -> Result<(), String> {
        let mut observed = None;
        for obj in all.iter_mut() {
            let Some(name) = obj.metadata.name.clone() else {
                continue;
            };
            let name = name.as_str();
            if names.iter().any(|(n, _)| n == name) {
                continue;
            }
            let (Ok(spec), Ok(status)) = (
                serde_json::from_value::<RolloutSpec>(obj.data["spec"].clone()),
                read_status(obj),
            ) else {
                continue;
            };
            let Some(c) = config.components.iter().find(|c| {
                c.name == spec.component && self.opts.only.as_ref().is_none_or(|o| *o == c.name)
            }) else {
                continue;
            };
            let asks = c.version.to_string();
            if status.phase.is_terminal() || asks == spec.to {
                continue;
            }
            if observed.is_none() {
                observed = Some(
                    cluster::observe(self.client, self.ns())
                        .await
                        .map_err(|e| e.to_string())?,
                );
            }
            let Some(seen) = observed.as_ref() else {
                continue;
            };
            let _span =
                tracing::info_span!("rollout", rollout = %name, component = %c.name).entered();
            let (mut next, effects) = rollout::supersede(name, &spec, &status, &asks, t);
            let target = Target {
                name,
                spec: &spec,
                component: c,
                observed: seen,
                scope: &self.scope,
            };
            let mut done = true;
            for fx in &effects {
                if let Err(e) = self.effect(&target, fx, &mut next).await {
                    // Ended only once its Plans are held and its PR told; again next cycle.
                    tracing::warn!(error = %e, "cannot end a superseded rollout yet");
                    done = false;
                }
            }
            if done {
                self.maintain(config, &c.name, name, &mut next, t).await;
                let saved = self.save(obj, &status, next, t).await?;
                obj.data["status"] = serde_json::to_value(&saved).unwrap_or_default();
            }
        }
        Ok(())
    }

    /// The base branch's tip, read as Flux builds it (`None` when git cannot be read: the
    /// component is then applied in the cluster, as without a repository).
    fn reading(&self) -> Option<std::sync::Arc<crate::layout::Reading>> {
        let tip = self.repo.git.tip(&self.repo.base).ok()?.to_string();
        let mut cache = self.reading.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((at, r)) = cache.as_ref()
            && *at == tip
        {
            return Some(r.clone());
        }
        let oid = self.repo.git.tip(&self.repo.base).ok()?;
        let listing = self.repo.git.listing(oid).ok()?;
        let r = std::sync::Arc::new(crate::layout::Reading::of_files(
            crate::layout::Files::from_listing(listing),
            &self.repo.subdir,
        ));
        *cache = Some((tip, r.clone()));
        Some(r)
    }

    /// How `c`'s version gets to the cluster (see [`crate::route`]).
    fn route(&self, c: &Component, observed: &Observed) -> crate::route::Route {
        let mapping = self.reading().map(|r| r.carriers(&c.name, &c.runs));
        crate::route::decide(c, mapping.as_ref(), observed)
    }

    /// Apply `version` through git: write it where the repository carries it (every carrier,
    /// keeping the files' spelling; nothing when git says it already) in one commit on the
    /// base branch, never forced, then ask Flux to reconcile the Kustomizations that apply
    /// them (and their source) now (`reconcile.fluxcd.io/requestedAt`, as `flux reconcile`
    /// does) instead of at their next interval.
    async fn apply_through_git(&self, t: &Target<'_>, version: &str) -> Result<(), Fail> {
        let git = self.repo.git;
        git.fetch().map_err(|e| e.to_string())?;
        let reading = self
            .reading()
            .ok_or_else(|| format!("cannot read {} of the config repository", self.repo.base))?;
        let mapping = reading.carriers(&t.component.name, &t.component.runs);
        // An OCI tag spells Helm's `+` as `_` (tags allow no `+`).
        let spelled: Vec<(&crate::layout::EditAt, String)> = mapping
            .carriers
            .iter()
            .filter(|c| !crate::layout::same_version(&c.version(), version))
            .filter_map(|c| {
                c.edit.as_ref().ok().map(|e| {
                    let v = match c.field {
                        crate::layout::Field::OciTag => version.replace('+', "_"),
                        _ => version.to_string(),
                    };
                    (e, v)
                })
            })
            .collect();
        let edits: Vec<(&crate::layout::EditAt, &str)> =
            spelled.iter().map(|(e, v)| (*e, v.as_str())).collect();
        let mut tip = git.tip(&self.repo.base).map_err(|e| e.to_string())?;
        if !edits.is_empty() {
            let changed =
                crate::layout::write_versions(&reading.files, &edits).map_err(|e| e.to_string())?;
            let places: Vec<String> = mapping
                .carriers
                .iter()
                .map(|c| format!("{} ({})", c.object, c.at()))
                .collect();
            let message = format!(
                "chore({}): apply {version} through Flux\n\nupkeep's rollout {} changes {} in the maintenance window.",
                t.component.name,
                t.name,
                places.join(", ")
            );
            let files: Vec<(&str, &[u8])> = changed
                .iter()
                .map(|(p, text)| (p.as_str(), text.as_bytes()))
                .collect();
            let commit = git
                .commit_files(tip, &files, &message, &self.repo.author)
                .map_err(|e| e.to_string())?;
            let built_on = tip;
            tip = match git.push(commit, &self.repo.base, false) {
                Ok(()) => commit,
                Err(e) => {
                    // Someone pushed first (a merge between our fetch and our push): build on
                    // the new tip at the next look. Otherwise the base branch refuses direct
                    // pushes (protection): the same change as a pull request upkeep merges
                    // now, in the window.
                    git.fetch().map_err(|e| e.to_string())?;
                    if git.tip(&self.repo.base).map_err(|e| e.to_string())? != built_on {
                        return Err(Fail::Retry(format!(
                            "{} moved while upkeep pushed ({e}); trying again on its new tip",
                            self.repo.base
                        )));
                    }
                    self.merge_through_pull(t, commit, &message, &e.to_string())
                        .await?
                }
            };
        }
        let token = tip.to_string();
        let mut requests: Vec<(String, String)> = Vec::new();
        // The user's k3s Plans held by an earlier halt or a window's end run again: the hold
        // taken back, the Kustomizations resumed (and asked to reconcile below).
        if t.component.name == "k3s" {
            for ks in self.resume_adopted_plans(t).await? {
                requests.push((format!("Kustomization/{ks}"), token.clone()));
            }
            self.retire_own_plans(t).await?;
        }
        for ks in mapping
            .carriers
            .iter()
            .filter_map(|c| c.applied_by.as_ref())
            .map(|k| format!("{}/{}", k.namespace, k.name))
        {
            if let Some(src) = t
                .observed
                .kustomizations
                .iter()
                .find(|k| format!("{}/{}", k.namespace, k.name) == ks)
                .and_then(|k| k.source.clone())
                && !requests.iter().any(|(o, _)| *o == src)
            {
                requests.insert(0, (src, token.clone()));
            }
            let object = format!("Kustomization/{ks}");
            if !requests.iter().any(|(o, _)| *o == object) {
                requests.push((object, token.clone()));
            }
        }
        for (object, token) in requests {
            self.request_reconcile(&object, &token).await?;
        }
        Ok(())
    }

    /// `commit` (on the base branch's tip) as a pull request of upkeep's, merged at once; the
    /// base branch's new tip. A forge that refuses the merge (required reviews or checks) or is
    /// missing refuses the change for good.
    async fn merge_through_pull(
        &self,
        t: &Target<'_>,
        commit: git2::Oid,
        message: &str,
        refused: &str,
    ) -> Result<git2::Oid, Fail> {
        let base = &self.repo.base;
        let Some(forge) = self.repo.forge else {
            return Err(Fail::Refused(format!(
                "{base} refused the commit that applies {} ({refused}), and no forge is configured to merge it as a pull request: allow upkeep to push to {base}, or give it the forge (docs/relations.md)",
                t.component.name
            )));
        };
        let branch = format!(
            "{}apply-{}",
            t.scope.prefix(),
            crate::rollout::rollout_name(&t.component.name, &t.spec.to)
        );
        self.repo
            .git
            .push(commit, &branch, true)
            .map_err(|e| e.to_string())?;
        let open = forge
            .pulls(&branch)
            .await
            .map_err(|e| e.to_string())?
            .into_iter()
            .find(|p| p.head == branch && p.is_open());
        let pr = match open {
            Some(p) => p,
            None => forge
                .create_pull(
                    message.lines().next().unwrap_or(message),
                    &branch,
                    base,
                    &format!(
                        "{message}\n\n{base} refuses direct pushes ({refused}), so upkeep applies this change through this pull request, in the maintenance window of rollout {}.",
                        t.name
                    ),
                )
                .await
                .map_err(|e| e.to_string())?,
        };
        match forge.merge_pull(pr.number, &commit.to_string()).await {
            Ok(()) => {}
            // Someone merged first ("Base branch was modified", or the head moved): the next
            // look builds on the new tip and merges again; the pull request stays.
            Err(crate::forge::Error::Status {
                status, message, ..
            }) if status == 409 || message.contains("Base branch was modified") => {
                return Err(Fail::Retry(format!(
                    "{base} moved while upkeep merged #{} ({message}); trying again on its new tip",
                    pr.number
                )));
            }
            Err(crate::forge::Error::Status {
                status: 403 | 405 | 409 | 422,
                message: why,
                ..
            }) => {
                // Merged later, it would apply outside the window: closed, saying why.
                let said = format!(
                    "upkeep cannot merge this pull request ({why}), and merged later it would apply {} {} outside the maintenance window: closed. The rollout {} fails and says so.",
                    t.component.name, t.spec.to, t.name
                );
                if let Err(e) = forge.comment(pr.number, &said).await {
                    tracing::warn!(error = %e, pr = pr.number, "cannot comment on the refused pull request");
                }
                forge
                    .update_pull(pr.number, None, None, Some("closed"))
                    .await
                    .map_err(|e| {
                        format!(
                            "closing the pull request #{} upkeep cannot merge: {e}",
                            pr.number
                        )
                    })?;
                return Err(Fail::Refused(format!(
                    "{base} is protected and the pull request #{} that applies {} {} cannot be merged by upkeep: {why} (closed, since merged later it would apply outside the window; let upkeep's token push to {base} or merge its own pull requests without a review; docs/relations.md)",
                    pr.number, t.component.name, t.spec.to
                )));
            }
            Err(e) => return Err(Fail::Retry(e.to_string())),
        }
        self.repo.git.fetch().map_err(|e| e.to_string())?;
        Ok(self.repo.git.tip(base).map_err(|e| e.to_string())?)
    }

    /// `reconcile.fluxcd.io/requestedAt: <token>` on a Flux object (`Kind/namespace/name`);
    /// the same token asks nothing new.
    async fn request_reconcile(&self, object: &str, token: &str) -> Result<(), String> {
        let mut parts = object.splitn(3, '/');
        let (Some(kind), Some(ns), Some(name)) = (parts.next(), parts.next(), parts.next()) else {
            return Ok(());
        };
        let r = match kind {
            "Kustomization" => ar(
                "kustomize.toolkit.fluxcd.io",
                "v1",
                "Kustomization",
                "kustomizations",
            ),
            "GitRepository" => ar(
                "source.toolkit.fluxcd.io",
                "v1",
                "GitRepository",
                "gitrepositories",
            ),
            _ => return Ok(()),
        };
        let api: Api<DynamicObject> = Api::namespaced_with(self.client.clone(), ns, &r);
        let patch =
            json!({"metadata": {"annotations": {"reconcile.fluxcd.io/requestedAt": token}}});
        let pp = PatchParams {
            field_manager: Some(FIELD_MANAGER.into()),
            ..Default::default()
        };
        api.patch(name, &pp, &Patch::Merge(&patch))
            .await
            .map(|_| ())
            .map_err(|e| format!("asking Flux to reconcile {object}: {e}"))
    }

    /// Carry out one effect. Each is idempotent: a restart repeats it harmlessly.
    async fn effect(
        &self,
        t: &Target<'_>,
        fx: &Effect,
        next: &mut RolloutStatus,
    ) -> Result<(), Fail> {
        if let Effect::Apply { version } = fx
            && let Some(crate::route::Route::Git { .. }) = t.observed.routes.get(&t.component.name)
        {
            return self.apply_through_git(t, version).await;
        }
        self.effect_retried(t, fx, next).await.map_err(Fail::Retry)
    }

    /// The effects whose failures are all retried at the next look.
    async fn effect_retried(
        &self,
        t: &Target<'_>,
        fx: &Effect,
        next: &mut RolloutStatus,
    ) -> Result<(), String> {
        // Holding and releasing concern Plans upkeep made; none made, nothing to hold.
        let k3s = t.component.name == "k3s" && t.observed.plans.iter().any(|p| p.upkeeps());
        // The user's own k3s Plans, adopted: applied by Flux from git, held through Flux.
        // Held as well as upkeep's own when both exist (Plans of upkeep's from before the user's
        // were adopted): no Plan may go on upgrading nodes after a halt.
        let adopted = t.component.name == "k3s"
            && matches!(
                t.observed.routes.get(&t.component.name),
                Some(crate::route::Route::Git { .. })
            );
        match fx {
            Effect::Pause | Effect::Halt if adopted => {
                let held = self.hold_adopted_plans(t, PlanMode::Hold).await?;
                if matches!(fx, Effect::Halt) {
                    note_held(next, &held, &t.spec.to);
                }
                Ok(())
            }
            Effect::Release if adopted => {
                self.hold_adopted_plans(t, PlanMode::Release).await?;
                self.uncordon(t.observed).await
            }
            Effect::Backup { name } if t.component.name == "longhorn" => {
                self.longhorn_backup(t, name).await
            }
            Effect::Backup { name } => self.etcd_snapshot(t, name).await,
            Effect::Apply { version } => match (
                t.component.name.as_str(),
                t.observed.routes.get(&t.component.name),
            ) {
                (_, Some(crate::route::Route::Refused { why })) => Err(why.clone()),
                ("k3s", _) => self.apply_plans(t, version, PlanMode::Run).await,
                ("flux", _) => self.set_flux_version(t, version).await,
                _ => self.set_chart_version(t, version).await,
            },
            Effect::Pause | Effect::Halt if k3s => {
                let hop = current_hop(t.spec, next);
                self.apply_plans(t, &hop, PlanMode::Hold).await
            }
            Effect::Release if k3s => {
                let hop = current_hop(t.spec, next);
                self.apply_plans(t, &hop, PlanMode::Release).await?;
                self.uncordon(t.observed).await
            }
            Effect::Release if t.component.name == "k3s" => self.uncordon(t.observed).await,
            Effect::Pause | Effect::Halt | Effect::Release => Ok(()),
            Effect::Uncordon => self.uncordon(t.observed).await,
            Effect::Revert { version, message } => {
                if next.revert.is_none() {
                    let done = revert(self.repo, t, version, message).await?;
                    close_built_on(self.repo, t, &done).await;
                    next.revert = Some(done);
                }
                Ok(())
            }
            Effect::Comment { key, body } => {
                let body = body.replace(
                    rollout::REVERT_SENTENCE,
                    &rollout::revert_sentence(
                        next.revert.as_deref(),
                        &rollout::last_good(t.spec, next),
                    ),
                );
                self.comment(t.name, t.spec, key, &body).await
            }
        }
    }

    // ----- backups --------------------------------------------------------------------------

    /// `k3s etcd-snapshot save` in a Job that can work on a real server: on a node with the
    /// etcd role, in the k3s-upgrade image of the version the node runs (the binary is
    /// `/opt/k3s` there), against the node's own data dir (the host's root mounted read-only at
    /// `/host`; the CLI reads the server token there) and the host network (it posts to the
    /// supervisor on 127.0.0.1:6443), tolerating every taint. The Job and the snapshot are named
    /// after the attempt.
    async fn etcd_snapshot(&self, t: &Target<'_>, backup: &str) -> Result<(), String> {
        let node = etcd_node(t.observed).ok_or("no node has the etcd role")?;
        let jobs: Api<DynamicObject> = Api::namespaced_with(
            self.client.clone(),
            &self.ns().snapshots,
            &ar("batch", "v1", "Job", "jobs"),
        );
        let job: DynamicObject =
            serde_json::from_value(snapshot_job(node, backup, t.name, &self.ns().snapshots))
                .map_err(|e| e.to_string())?;
        match jobs.create(&PostParams::default(), &job).await {
            Ok(_) => Ok(()),
            // Created by an earlier look at this attempt (the name is the attempt's).
            Err(kube::Error::Api(s)) if s.code == 409 => Ok(()),
            Err(e) => Err(format!(
                "creating the snapshot Job: {}",
                cluster::describe(&e)
            )),
        }
    }

    /// Longhorn: a SystemBackup where a backup target is available, else a Snapshot of every
    /// volume.
    async fn longhorn_backup(&self, t: &Target<'_>, backup: &str) -> Result<(), String> {
        let ns = &t.observed.longhorn_namespace;
        let create = |plural: &'static str, kind: &'static str, obj: Value| {
            let api: Api<DynamicObject> = Api::namespaced_with(
                self.client.clone(),
                ns,
                &ar("longhorn.io", "v1beta2", kind, plural),
            );
            async move {
                let obj: DynamicObject = serde_json::from_value(obj).map_err(|e| e.to_string())?;
                match api.create(&PostParams::default(), &obj).await {
                    Ok(_) => Ok(()),
                    Err(kube::Error::Api(s)) if s.code == 409 => Ok(()),
                    Err(e) => Err(format!(
                        "creating a Longhorn {kind}: {}",
                        crate::cluster::describe(&e)
                    )),
                }
            }
        };
        if t.observed.longhorn_backup_target.is_some() {
            return create("systembackups", "SystemBackup", json!({"apiVersion": "longhorn.io/v1beta2", "kind": "SystemBackup",
                "metadata": {"name": backup, "namespace": ns, "labels": {"upkeep.dev/rollout": t.name}},
                "spec": {"volumeBackupPolicy": "if-not-present"}}))
            .await;
        }
        for v in &t.observed.volumes {
            create("snapshots", "Snapshot", json!({"apiVersion": "longhorn.io/v1beta2", "kind": "Snapshot",
                "metadata": {"name": format!("{backup}-{}", v.name), "namespace": ns, "labels": {"upkeep.dev/rollout": t.name}},
                "spec": {"volume": v.name, "createSnapshot": true}}))
            .await?;
        }
        Ok(())
    }

    /// How the backup of this attempt stands: k3s' snapshot Job and its `ETCDSnapshotFile`;
    /// Longhorn's SystemBackup, or every volume's Snapshot.
    async fn backup_state(&self, t: &Target<'_>, attempt: Option<&str>) -> rollout::BackupState {
        use rollout::BackupState;
        let Some(attempt) = attempt else {
            return BackupState::Pending;
        };
        let ns = self.ns();
        let read = |group: &str, kind: &str, plural: &str, ns: Option<&str>| {
            let r = ar(
                group,
                if group == "longhorn.io" {
                    "v1beta2"
                } else {
                    "v1"
                },
                kind,
                plural,
            );
            match ns {
                Some(ns) => Api::<DynamicObject>::namespaced_with(self.client.clone(), ns, &r),
                None => Api::all_with(self.client.clone(), &r),
            }
        };
        match t.component.name.as_str() {
            "k3s" => {
                let job = snapshot_job_name(attempt);
                let jobs = read("batch", "Job", "jobs", Some(&ns.snapshots));
                if let Ok(Some(j)) = jobs.get_opt(&job).await
                    && let Some(why) = job_failure(&j)
                {
                    let said = self.pod_message(&ns.snapshots, &job).await;
                    return BackupState::Failed(format!(
                        "the etcd snapshot Job {}/{job} failed: {}{} (kubectl -n {} logs job/{job})",
                        ns.snapshots,
                        why,
                        said.map_or(String::new(), |m| format!(": {m}")),
                        ns.snapshots
                    ));
                }
                let files = read(
                    "k3s.cattle.io",
                    "ETCDSnapshotFile",
                    "etcdsnapshotfiles",
                    None,
                );
                let Ok(list) = files.list(&ListParams::default().match_any()).await else {
                    return BackupState::Pending;
                };
                snapshot_of(attempt, &list.items)
            }
            "longhorn" if t.observed.longhorn_backup_target.is_some() => {
                let api = read(
                    "longhorn.io",
                    "SystemBackup",
                    "systembackups",
                    Some(&t.observed.longhorn_namespace),
                );
                match api.get_opt(attempt).await {
                    Ok(Some(b)) if b.data["status"]["state"] == "Ready" => {
                        BackupState::Ready(format!("SystemBackup {attempt}"))
                    }
                    Ok(Some(b)) if b.data["status"]["state"] == "Error" => {
                        BackupState::Failed(format!(
                            "SystemBackup {attempt}: {}",
                            b.data["status"]["conditions"][0]["message"]
                                .as_str()
                                .unwrap_or("Error")
                        ))
                    }
                    _ => BackupState::Pending,
                }
            }
            "longhorn" => {
                let api = read(
                    "longhorn.io",
                    "Snapshot",
                    "snapshots",
                    Some(&t.observed.longhorn_namespace),
                );
                let lp = ListParams::default()
                    .match_any()
                    .labels(&format!("upkeep.dev/rollout={}", t.name));
                let Ok(list) = api.list(&lp).await else {
                    return BackupState::Pending;
                };
                let ready = list
                    .items
                    .iter()
                    .filter(|s| {
                        s.metadata
                            .name
                            .as_deref()
                            .is_some_and(|n| n.starts_with(attempt))
                            && s.data["status"]["readyToUse"] == json!(true)
                    })
                    .count();
                if ready == t.observed.volumes.len() && ready > 0 {
                    BackupState::Ready(format!("{ready} Longhorn snapshots {attempt}-*"))
                } else {
                    BackupState::Pending
                }
            }
            _ => BackupState::Pending,
        }
    }

    /// The termination message of the pod a Job ran (the end of its log, with
    /// `terminationMessagePolicy: FallbackToLogsOnError`).
    async fn pod_message(&self, ns: &str, job: &str) -> Option<String> {
        let pods: Api<DynamicObject> =
            Api::namespaced_with(self.client.clone(), ns, &ar("", "v1", "Pod", "pods"));
        let list = pods
            .list(
                &ListParams::default()
                    .match_any()
                    .labels(&format!("job-name={job}")),
            )
            .await
            .ok()?;
        let mut m = list.items.iter().find_map(|p| {
            p.data
                .pointer("/status/containerStatuses/0/state/terminated/message")
                .and_then(Value::as_str)
                .map(|m| m.trim().to_string())
        })?;
        crate::sources::truncate_utf8(&mut m, 500);
        Some(m)
    }

    // ----- the component's version ---------------------------------------------------------

    /// upkeep's two SUC Plans at `version`. The agent Plan starts no node (`concurrency: 0`)
    /// until every server runs the version, so no agent Job waits in `prepare` while the
    /// servers upgrade (such a Job would count as started when a window closes).
    async fn apply_plans(
        &self,
        t: &Target<'_>,
        version: &str,
        mode: PlanMode,
    ) -> Result<(), String> {
        let plans: Api<DynamicObject> = Api::namespaced_with(
            self.client.clone(),
            &self.ns().system_upgrade,
            &ar("upgrade.cattle.io", "v1", "Plan", "plans"),
        );
        let servers_done = t.observed.nodes.iter().filter(|n| n.server).all(|n| {
            versions::parse(&n.version, versions::Scheme::K3s).ok()
                == versions::parse(version, versions::Scheme::K3s).ok()
        });
        let pp = PatchParams::apply(FIELD_MANAGER)
            .force()
            .validation_strict();
        // Agents first when holding: a server Plan with nothing applying reads as complete.
        let order = match mode {
            PlanMode::Run => [(SERVER_PLAN, true), (AGENT_PLAN, false)],
            _ => [(AGENT_PLAN, false), (SERVER_PLAN, true)],
        };
        for (plan, server) in order {
            let concurrency = match mode {
                PlanMode::Run if server => 1,
                PlanMode::Run if servers_done => self.opts.agent_concurrency.max(1),
                _ => 0,
            };
            let p = plan_json(&PlanShape {
                name: plan,
                namespace: &self.ns().system_upgrade,
                version,
                server,
                concurrency,
                drain: self.opts.drain,
                release: mode == PlanMode::Release,
            });
            let obj: DynamicObject = serde_json::from_value(p).map_err(|e| e.to_string())?;
            plans
                .patch(plan, &pp, &Patch::Apply(&obj))
                .await
                .map_err(api_err("applying a Plan"))?;
        }
        Ok(())
    }

    /// Hold the user's own k3s Plans, which Flux applies from git: first suspend the
    /// Kustomizations that apply them (`spec.suspend: true`, as `flux suspend kustomization`
    /// does, marked `upkeep.dev/suspended-by`), so that kustomize-controller does not take the
    /// hold back at its next reconcile; then `concurrency: 0` on each Plan (SUC starts no node;
    /// one applying finishes) and, to release, a node selector that matches no node (SUC drops
    /// the nodes it was retrying). The Kustomizations applying them, `namespace/name`.
    async fn hold_adopted_plans(
        &self,
        t: &Target<'_>,
        mode: PlanMode,
    ) -> Result<Vec<String>, String> {
        // Every Plan that upgrades k3s, upkeep's own left from before included (patched as
        // they are: their version stays theirs).
        let plans: Vec<&crate::cluster::PlanState> = t
            .observed
            .plans
            .iter()
            .filter(|p| p.image.contains("k3s-upgrade"))
            .collect();
        let mut held: Vec<String> = plans
            .iter()
            .filter_map(|p| p.flux.as_ref().map(|f| f.kustomization.clone()))
            .collect();
        held.sort();
        held.dedup();
        let pp = PatchParams {
            field_manager: Some(FIELD_MANAGER.into()),
            ..Default::default()
        };
        let kustomizations = ar(
            "kustomize.toolkit.fluxcd.io",
            "v1",
            "Kustomization",
            "kustomizations",
        );
        for ks in &held {
            let Some((ns, name)) = ks.split_once('/') else {
                continue;
            };
            let api: Api<DynamicObject> =
                Api::namespaced_with(self.client.clone(), ns, &kustomizations);
            let patch = json!({"metadata": {"annotations": {SUSPENDED_BY: t.name}},
                "spec": {"suspend": true}});
            api.patch(name, &pp, &Patch::Merge(&patch))
                .await
                .map_err(api_err(
                    "suspending the Kustomization that applies the k3s Plans",
                ))?;
        }
        let plan_ar = ar("upgrade.cattle.io", "v1", "Plan", "plans");
        // Agents first: a server Plan with nothing applying reads as complete.
        let mut ordered = plans.clone();
        ordered.sort_by_key(|p| {
            t.observed
                .plans
                .iter()
                .position(|q| q.name == p.name)
                .map(std::cmp::Reverse)
        });
        for p in ordered {
            let api: Api<DynamicObject> =
                Api::namespaced_with(self.client.clone(), &p.namespace, &plan_ar);
            let patch = match mode {
                PlanMode::Release => json!({"spec": {"concurrency": 0,
                    "nodeSelector": {"matchLabels": {RELEASED_LABEL: "true"}}}}),
                _ => json!({"spec": {"concurrency": 0}}),
            };
            api.patch(&p.name, &pp, &Patch::Merge(&patch))
                .await
                .map_err(api_err("holding a k3s Plan"))?;
        }
        Ok(held)
    }

    /// When rollout `name` of k3s has ended well (`phase` Succeeded or Superseded) and a
    /// Kustomization is still suspended by it, resume it (best effort: tried again next look).
    async fn resume_after_end(
        &self,
        c: &Component,
        name: &str,
        spec: &RolloutSpec,
        observed: &Observed,
        phase: Phase,
    ) {
        if c.name != "k3s"
            || !matches!(phase, Phase::Succeeded | Phase::Superseded)
            || !observed
                .kustomizations
                .iter()
                .any(|k| k.suspended_by.as_deref() == Some(name))
        {
            return;
        }
        let target = Target {
            name,
            spec,
            component: c,
            observed,
            scope: &self.scope,
        };
        if let Err(e) = self.resume_adopted_plans(&target).await {
            tracing::warn!(error = %e, "cannot resume the Kustomization that applies the k3s Plans; tried again next look");
        }
    }

    /// Before the user's own k3s Plans run again (the next window, or a new rollout): take back
    /// what [`hold_adopted_plans`](Self::hold_adopted_plans) added (the node selector that
    /// matches nothing; `concurrency` is Flux's again at its next apply) and resume the
    /// Kustomizations upkeep suspended. The Kustomizations resumed.
    async fn resume_adopted_plans(&self, t: &Target<'_>) -> Result<Vec<String>, String> {
        let pp = PatchParams {
            field_manager: Some(FIELD_MANAGER.into()),
            ..Default::default()
        };
        let plan_ar = ar("upgrade.cattle.io", "v1", "Plan", "plans");
        for p in t
            .observed
            .plans
            .iter()
            .filter(|p| p.image.contains("k3s-upgrade") && !p.upkeeps())
        {
            let api: Api<DynamicObject> =
                Api::namespaced_with(self.client.clone(), &p.namespace, &plan_ar);
            let patch = json!({"spec": {"nodeSelector": {"matchLabels": {RELEASED_LABEL: null}}}});
            api.patch(&p.name, &pp, &Patch::Merge(&patch))
                .await
                .map_err(api_err("resuming a k3s Plan"))?;
        }
        let kustomizations = ar(
            "kustomize.toolkit.fluxcd.io",
            "v1",
            "Kustomization",
            "kustomizations",
        );
        let mut resumed = Vec::new();
        for k in t
            .observed
            .kustomizations
            .iter()
            .filter(|k| k.suspended_by.is_some())
        {
            let api: Api<DynamicObject> =
                Api::namespaced_with(self.client.clone(), &k.namespace, &kustomizations);
            let patch = json!({"metadata": {"annotations": {SUSPENDED_BY: null}},
                "spec": {"suspend": false}});
            api.patch(&k.name, &pp, &Patch::Merge(&patch))
                .await
                .map_err(api_err(
                    "resuming the Kustomization that applies the k3s Plans",
                ))?;
            resumed.push(format!("{}/{}", k.namespace, k.name));
        }
        Ok(resumed)
    }

    /// upkeep's own Plans, left from before the user's Plans in git were adopted, are deleted
    /// once no node applies them (deleting a Plan leaves its nodes as they are): never two
    /// owners of the nodes' k3s.
    async fn retire_own_plans(&self, t: &Target<'_>) -> Result<(), String> {
        let plan_ar = ar("upgrade.cattle.io", "v1", "Plan", "plans");
        for p in t
            .observed
            .plans
            .iter()
            .filter(|p| p.upkeeps() && p.applying.is_empty())
        {
            let api: Api<DynamicObject> =
                Api::namespaced_with(self.client.clone(), &p.namespace, &plan_ar);
            match api.delete(&p.name, &Default::default()).await {
                Ok(_) => {
                    tracing::info!(plan = %p.name, "deleted upkeep's own Plan: the Plans in git are adopted")
                }
                Err(kube::Error::Api(e)) if e.code == 404 => {}
                Err(e) => return Err(format!("deleting upkeep's Plan {}: {e}", p.name)),
            }
        }
        Ok(())
    }

    /// Server-side apply of the one field upkeep owns on the FluxInstance.
    async fn set_flux_version(&self, t: &Target<'_>, version: &str) -> Result<(), String> {
        let fi = t.observed.flux_instances.first().ok_or("no FluxInstance")?;
        let spec = json!({"distribution": {"version": version.trim_start_matches('v')}});
        self.apply_spec(
            fi,
            (
                "fluxcd.controlplane.io",
                "v1",
                "FluxInstance",
                "fluxinstances",
            ),
            spec,
        )
        .await
    }

    /// Server-side apply of the chart version on the component's HelmRelease.
    async fn set_chart_version(&self, t: &Target<'_>, version: &str) -> Result<(), String> {
        let name = &t.component.name;
        let h = t.observed.release_of(&t.component.runs).ok_or_else(|| {
            format!(
                "no HelmRelease for {name} (its chart's one release, or the one `release:` names)"
            )
        })?;
        let spec = json!({"chart": {"spec": {"version": version.trim_start_matches('v')}}});
        self.apply_spec(
            h,
            (
                "helm.toolkit.fluxcd.io",
                "v2",
                "HelmRelease",
                "helmreleases",
            ),
            spec,
        )
        .await
    }

    /// Server-side apply (forced, strict) of `spec` fields on the Flux object `o`, of the kind
    /// `(group, version, kind, plural)`.
    async fn apply_spec(
        &self,
        o: &cluster::Health,
        (group, version, kind, plural): (&str, &str, &str, &str),
        spec: Value,
    ) -> Result<(), String> {
        let api: Api<DynamicObject> = Api::namespaced_with(
            self.client.clone(),
            &o.namespace,
            &ar(group, version, kind, plural),
        );
        let obj = json!({"apiVersion": format!("{group}/{version}"), "kind": kind,
            "metadata": {"name": o.name, "namespace": o.namespace}, "spec": spec});
        let pp = PatchParams::apply(FIELD_MANAGER)
            .force()
            .validation_strict();
        api.patch(&o.name, &pp, &Patch::Apply(&obj))
            .await
            .map(|_| ())
            .map_err(|e| format!("setting the {kind} {}/{} version: {e}", o.namespace, o.name))
    }

    // ----- nodes and reports ----------------------------------------------------------------

    /// Uncordon the nodes upkeep's Plans cordoned (those with an upkeep upgrade Job; a node
    /// someone else cordoned meanwhile is left alone), except one whose Job still runs.
    async fn uncordon(&self, observed: &Observed) -> Result<(), String> {
        let nodes: Api<DynamicObject> =
            Api::all_with(self.client.clone(), &ar("", "v1", "Node", "nodes"));
        let busy: Vec<&str> = observed
            .upgrade_jobs
            .iter()
            .filter(|j| j.active())
            .map(|j| j.node.as_str())
            .collect();
        let ours: Vec<&str> = observed
            .upgrade_jobs
            .iter()
            .map(|j| j.node.as_str())
            .collect();
        for n in observed.nodes.iter().filter(|n| {
            n.unschedulable && ours.contains(&n.name.as_str()) && !busy.contains(&n.name.as_str())
        }) {
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

    /// A comment on the merged PR, once per key (found again by its marker after a restart).
    async fn comment(
        &self,
        rollout: &str,
        spec: &RolloutSpec,
        key: &str,
        body: &str,
    ) -> Result<(), String> {
        let (Some(forge), Some(pr)) = (self.repo.forge, spec.pull_request) else {
            return Ok(());
        };
        let marker = format!("<!-- upkeep:rollout={rollout} key={key} -->");
        let said = forge.comments(pr).await.map_err(|e| e.to_string())?;
        if said.iter().any(|b| b.contains(&marker)) {
            return Ok(());
        }
        forge.comment(pr, body).await.map_err(|e| e.to_string())
    }
}

/// The version of the hop in progress.
fn current_hop(spec: &RolloutSpec, st: &RolloutStatus) -> String {
    spec.hops
        .get(st.hop)
        .cloned()
        .unwrap_or_else(|| spec.to.clone())
}

/// What upkeep's Plans are asked to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PlanMode {
    /// Upgrade: servers one at a time, then the agents.
    Run,
    /// Start no new node (`concurrency: 0`, which SUC honours: nodes applying finish).
    Hold,
    /// Select no node: SUC drops the nodes it was retrying (their Jobs are over by now).
    Release,
}

/// The annotation on a Kustomization upkeep suspended to hold the k3s Plans it applies: the
/// rollout that did.
pub const SUSPENDED_BY: &str = "upkeep.dev/suspended-by";
/// The node label a released Plan selects (no node has it).
const RELEASED_LABEL: &str = "upkeep.dev/released";

/// Say in a halted rollout's failure where the user's own k3s Plans are held, and how on.
fn note_held(next: &mut RolloutStatus, held: &[String], to: &str) {
    if held.is_empty() {
        return;
    }
    let why = next.failure.clone().unwrap_or_default();
    if why.contains(SUSPENDED_BY) {
        return;
    }
    let resume = held
        .iter()
        .filter_map(|k| k.split_once('/'))
        .map(|(ns, name)| format!("`flux resume kustomization {name} -n {ns}`"))
        .collect::<Vec<_>>()
        .join(", ");
    next.failure = Some(format!(
        "{why}; your k3s Plans are held (concurrency 0, then a node selector that matches no node: `upkeep.dev/released`) and the Kustomization{} that appl{} them ({}) suspended by upkeep ({SUSPENDED_BY}), so that Flux does not start them again; git's Plans still say {to}: once the nodes are fixed, set versions.yaml to {to} and merge, and the next rollout takes the hold back and resumes {}; or {resume} and remove `upkeep.dev/released` from the Plans' nodeSelector yourself (docs/runbook.md)",
        if held.len() == 1 { "" } else { "s" },
        if held.len() == 1 { "ies" } else { "y" },
        held.join(", "),
        if held.len() == 1 { "it" } else { "them" },
    ));
}

/// The Job name of a snapshot attempt.
fn snapshot_job_name(attempt: &str) -> String {
    let mut n = format!("{attempt}-snapshot");
    if n.len() > 63 {
        n = attempt.to_string();
    }
    n
}

/// A server node with embedded etcd for the snapshot: a Ready one first.
fn etcd_node(o: &Observed) -> Option<&cluster::NodeState> {
    o.nodes.iter().filter(|n| n.etcd).max_by_key(|n| n.ready)
}

/// The snapshot Job for `attempt` on `node` (see [`Driver::etcd_snapshot`]).
fn snapshot_job(node: &cluster::NodeState, attempt: &str, rollout: &str, ns: &str) -> Value {
    let image = format!("rancher/k3s-upgrade:{}", node.version.replace('+', "-"));
    let data_dir = format!("/host{}", node.data_dir);
    json!({
        "apiVersion": "batch/v1", "kind": "Job",
        "metadata": {"name": snapshot_job_name(attempt), "namespace": ns, "labels": {"upkeep.dev/rollout": rollout}},
        "spec": {"backoffLimit": 0, "activeDeadlineSeconds": 600, "ttlSecondsAfterFinished": 86400,
            "template": {"metadata": {"labels": {"upkeep.dev/rollout": rollout}},
                "spec": {"nodeName": node.name, "restartPolicy": "Never", "hostNetwork": true, "hostPID": false,
                    "tolerations": [{"operator": "Exists"}],
                    "volumes": [{"name": "host-root", "hostPath": {"path": "/", "type": "Directory"}}],
                    "containers": [{"name": "snapshot", "image": image,
                        "command": ["/opt/k3s", "etcd-snapshot", "save", "--name", attempt, "--data-dir", data_dir],
                        "terminationMessagePolicy": "FallbackToLogsOnError",
                        "securityContext": {"runAsUser": 0, "readOnlyRootFilesystem": true},
                        "volumeMounts": [{"name": "host-root", "mountPath": "/host", "readOnly": true}]}]}}}
    })
}

/// Why a Job failed, if it did.
fn job_failure(j: &DynamicObject) -> Option<String> {
    j.data
        .pointer("/status/conditions")?
        .as_array()?
        .iter()
        .find(|c| c["type"] == "Failed" && c["status"] == "True")
        .map(|c| {
            let reason = c["reason"].as_str().unwrap_or("Failed");
            match c["message"].as_str() {
                Some(m) if !m.is_empty() => format!("{reason}: {m}"),
                _ => reason.to_string(),
            }
        })
}

/// The snapshot of `attempt` among the `ETCDSnapshotFile`s: k3s names it
/// `<attempt>-<node>-<unix time>` (so a prefix match alone would take `...k3s10`'s for
/// `...k3s1`'s); a file with `status.error` is a failed save.
fn snapshot_of(attempt: &str, files: &[DynamicObject]) -> rollout::BackupState {
    use rollout::BackupState;
    for f in files {
        let Some(name) = f.data["spec"]["snapshotName"].as_str() else {
            continue;
        };
        let node = f.data["spec"]["nodeName"].as_str().unwrap_or("");
        let ours = name
            .strip_prefix(attempt)
            .and_then(|r| r.strip_prefix('-'))
            .and_then(|r| r.strip_prefix(node))
            .and_then(|r| r.strip_prefix('-'))
            .is_some_and(|ts| !ts.is_empty() && ts.chars().all(|c| c.is_ascii_digit()));
        if !ours {
            continue;
        }
        if f.data["status"]["readyToUse"] == json!(true) {
            return BackupState::Ready(name.to_string());
        }
        if let Some(m) = f.data["status"]["error"]["message"].as_str() {
            return BackupState::Failed(format!("etcd snapshot {name}: {m}"));
        }
    }
    BackupState::Pending
}

/// What one of upkeep's Plans looks like.
struct PlanShape<'a> {
    name: &'a str,
    namespace: &'a str,
    version: &'a str,
    server: bool,
    concurrency: u64,
    drain: bool,
    /// Select no node.
    release: bool,
}

/// The canonical k3s Plans (the server Plan cordons one server at a time; the agent Plan
/// prepares on the server Plan, cordons and optionally drains), as upkeep owns them.
fn plan_json(p: &PlanShape) -> Value {
    let selector = if p.release {
        json!({"matchLabels": {"upkeep.dev/released": "true"}})
    } else {
        json!({"matchExpressions": [{"key": "node-role.kubernetes.io/control-plane",
            "operator": if p.server { "In" } else { "DoesNotExist" }, "values": if p.server { json!(["true"]) } else { json!([]) }}]})
    };
    let mut plan = json!({"apiVersion": "upgrade.cattle.io/v1", "kind": "Plan",
        "metadata": {"name": p.name, "namespace": p.namespace, "labels": {"app.kubernetes.io/managed-by": "upkeep"}},
        "spec": {"concurrency": p.concurrency, "cordon": true, "version": p.version, "serviceAccountName": "system-upgrade",
            "upgrade": {"image": "rancher/k3s-upgrade"}, "nodeSelector": selector}});
    if !p.server {
        plan["spec"]["prepare"] =
            json!({"image": "rancher/k3s-upgrade", "args": ["prepare", SERVER_PLAN]});
        if p.drain {
            plan["spec"]["drain"] = json!({"force": true, "ignoreDaemonSets": true, "deleteEmptydirData": true, "skipWaitForDeleteTimeout": 60});
        }
    }
    plan
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
        "regarding": {"apiVersion": format!("{}/{}", rollout::GROUP, rollout::VERSION), "kind": rollout::KIND, "name": name, "namespace": ns,
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
    stage: Stage,
) -> Vec<crate::validate::Finding> {
    use crate::model::CheckKind;
    use crate::validate::Finding;
    let covering: Vec<&crate::model::Check> = checks
        .iter()
        .filter(|c| c.components.covers(component) && c.during.contains(&stage))
        .collect();
    // No check, no HTTP client: building one loads the system's root certificates, which every
    // look of a validation or a soak would otherwise pay for nothing.
    if covering.is_empty() {
        return Vec::new();
    }
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
    for c in covering {
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
                    if body["status"] == "error" {
                        let mut why = format!(
                            "Prometheus answered {}: {}",
                            body["errorType"].as_str().unwrap_or("an error"),
                            body["error"].as_str().unwrap_or("")
                        );
                        crate::sources::truncate_utf8(&mut why, 300);
                        return Err(why);
                    }
                    // A query that matches no series is an empty vector, not 0 (an error rate
                    // with no 5xx series at all, say): say how to write it.
                    if body
                        .pointer("/data/result")
                        .and_then(Value::as_array)
                        .is_some_and(Vec::is_empty)
                    {
                        return Err("the query matched no series (where none means 0, end it with `or vector(0)`)".to_string());
                    }
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

/// What `--emergency` could not do for a rollout in `phase` (with its `message`), in words; `None`
/// when it took effect.
pub fn emergency_note(phase: Phase, message: &str) -> Option<String> {
    if phase.is_terminal() {
        return Some(format!(
            "--emergency changed nothing: this rollout already ended ({phase:?}); a new version in versions.yaml makes a new rollout"
        ));
    }
    (phase == Phase::WaitingForWindow && message.starts_with("frozen by")).then(|| {
        "--emergency starts work outside maintenance windows, not during a freeze: it waits for the freeze to end (or shorten the freeze in policies/)".to_string()
    })
}

/// Why a rollout waits, with times in `tz` (its window's zone).
fn waiting_text(d: &Decision, tz: chrono_tz::Tz) -> String {
    let show = |t: &DateTime<Utc>| crate::windows::show(*t, tz);
    match d {
        Decision::Wait { next: Some(n) } => format!("waiting for the next window, {}", show(n)),
        Decision::Wait { next: None } => "no window opens within a year".into(),
        Decision::Frozen { freeze, until } => {
            format!("frozen by {freeze} until {}", show(until))
        }
        Decision::Denied { window, until } => {
            format!("deny window {window} until {}", show(until))
        }
        _ => String::new(),
    }
}

/// Why an effect failed: to be tried again at the next look, or refused for good (the hop fails
/// now, with the reason, instead of trying every look for the whole window).
#[derive(Debug, thiserror::Error)]
enum Fail {
    #[error("{0}")]
    Retry(String),
    #[error("{0}")]
    Refused(String),
}

impl From<String> for Fail {
    fn from(s: String) -> Fail {
        Fail::Retry(s)
    }
}

/// Why `c` gets no rollout when git carries a version versions.yaml does not ask for: it runs
/// already (moved and applied outside upkeep), or Flux will apply it (moved, not yet applied).
fn moved_outside(
    c: &Component,
    running: &versions::Version,
    route: &crate::route::Route,
) -> Option<String> {
    let want = c.version.to_string();
    let place = route
        .places()
        .iter()
        .find(|p| !crate::layout::same_version(&p.value, &want))?;
    let runs = crate::layout::same_version(&place.value, &running.to_string());
    // Git still says what runs and versions.yaml asks for a legal step from it: the update a
    // human merged, waiting to be applied.
    if runs && versions::check_hop(running, &c.version, &c.path_rule).is_ok() {
        return None;
    }
    Some(if runs {
        format!(
            "moved outside upkeep: {} at {} asks for {}, which runs, but versions.yaml asks for {want}; set versions.yaml to {} (and let upkeep own this field: extend the Renovate preset renovate/upkeep.json, docs/relations.md)",
            place.object, place.at, place.value, place.value
        )
    } else {
        format!(
            "moved outside upkeep: {} at {} asks for {}, which versions.yaml ({want}) does not: Flux applies it outside any window; put it back or set versions.yaml to it (docs/relations.md)",
            place.object, place.at, place.value
        )
    })
}

/// Close, with a comment, the open pull requests built on the version just reverted (the next hop,
/// opened by a `upkeep propose` that could not see the cluster): they would move versions.yaml
/// from a version it no longer holds. upkeep proposes again from what runs. Best effort: a
/// failure is logged, never fails the rollout; a marker keeps a repeat from commenting twice.
async fn close_built_on<F: Forge>(repo: &Repo<'_, F>, t: &Target<'_>, reverted: &str) {
    let Some(forge) = repo.forge else {
        return;
    };
    let pulls = match forge.pulls(&t.scope.prefix()).await {
        Ok(p) => p,
        Err(e) => {
            tracing::warn!(error = %e, "cannot list the pull requests built on the reverted version");
            return;
        }
    };
    let marker = format!("<!-- upkeep:built-on-reverted rollout={} -->", t.name);
    for number in crate::propose::built_on(&pulls, t.component, &t.spec.to, t.scope) {
        let body = format!(
            "{marker}\nupkeep closed this pull request: it is built on {} {}, which failed and was reverted ({reverted}). versions.yaml no longer holds that version, so this update would not apply as written. upkeep proposes the next update again once the version in versions.yaml runs in the cluster.",
            t.component.name,
            crate::report::md_escape(&t.spec.to),
        );
        let said = forge.comments(number).await.unwrap_or_default();
        let r = async {
            if !said.iter().any(|b| b.contains(&marker)) {
                forge.comment(number, &body).await?;
            }
            forge.update_pull(number, None, None, Some("closed")).await
        }
        .await;
        match r {
            Ok(()) => tracing::info!(pull = number, "closed: built on the reverted version"),
            Err(e) => {
                tracing::warn!(pull = number, error = %e, "cannot close a pull request built on the reverted version")
            }
        }
    }
}

/// Put versions.yaml back to `back_to` on the base branch, unless someone already changed it.
/// A refused push (protection, a race) becomes a revert pull request instead. Never forced.
async fn revert<F: Forge>(
    repo: &Repo<'_, F>,
    t: &Target<'_>,
    back_to: &str,
    message: &str,
) -> Result<String, String> {
    let (c, failed) = (t.component, t.spec.to.as_str());
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
                t.scope.prefix(),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lasting_block_is_said_once() {
        let mut a = Blocked::new();
        a.insert("k3s".into(), "no legal path".into());
        let (new, gone) = blocked_changes(&Blocked::new(), &a);
        assert_eq!((new.len(), gone.len()), (1, 0));
        assert_eq!(blocked_changes(&a, &a), (vec![], vec![]));
        let (new, gone) = blocked_changes(&a, &Blocked::new());
        assert_eq!((new.len(), gone), (0, vec!["k3s".to_string()]));
    }

    #[test]
    fn emergency_says_why_it_could_not() {
        assert!(
            emergency_note(Phase::Succeeded, "")
                .is_some_and(|n| n.contains("already ended (Succeeded)"))
        );
        assert!(
            emergency_note(Phase::WaitingForWindow, "frozen by year-end until x")
                .is_some_and(|n| n.contains("not during a freeze"))
        );
        assert_eq!(emergency_note(Phase::Applying, "applying"), None);
        assert_eq!(
            emergency_note(Phase::WaitingForWindow, "waiting for the next window"),
            None
        );
    }

    fn file(name: &str, node: &str, ready: bool) -> DynamicObject {
        serde_json::from_value(
            json!({"apiVersion": "k3s.cattle.io/v1", "kind": "ETCDSnapshotFile",
            "metadata": {"name": format!("local-{name}")},
            "spec": {"snapshotName": name, "nodeName": node}, "status": {"readyToUse": ready}}),
        )
        .unwrap_or_else(|_| panic!())
    }

    #[test]
    fn a_snapshot_is_the_attempts_own_not_a_longer_names() {
        use rollout::BackupState;
        let a = "upkeep-k3s-v1.33.5-k3s1-20261121213000";
        let other = file(
            "upkeep-k3s-v1.33.5-k3s10-20261121213000-server-1-1763760600",
            "server-1",
            true,
        );
        assert_eq!(
            snapshot_of(a, std::slice::from_ref(&other)),
            BackupState::Pending
        );
        let older = file(
            "upkeep-k3s-v1.33.5-k3s1-20261114213000-server-1-1763155800",
            "server-1",
            true,
        );
        assert_eq!(snapshot_of(a, &[older]), BackupState::Pending);
        let ours = file(&format!("{a}-server-1-1763760600"), "server-1", true);
        assert!(matches!(
            snapshot_of(a, &[other, ours]),
            BackupState::Ready(_)
        ));
        let mut failed = file(&format!("{a}-server-1-1763760600"), "server-1", false);
        failed.data["status"]["error"] = json!({"message": "etcd: request timed out"});
        assert!(
            matches!(snapshot_of(a, &[failed]), BackupState::Failed(m) if m.contains("timed out"))
        );
    }

    #[test]
    fn the_snapshot_job_runs_the_nodes_own_k3s_against_its_data_dir() {
        let n = cluster::NodeState {
            name: "server-1".into(),
            server: true,
            etcd: true,
            version: "v1.33.4+k3s1".into(),
            ready: true,
            unschedulable: false,
            data_dir: "/srv/k3s".into(),
        };
        let j = snapshot_job(&n, "upkeep-x-1", "x", "kube-system");
        let c = &j["spec"]["template"]["spec"]["containers"][0];
        assert_eq!(c["image"], "rancher/k3s-upgrade:v1.33.4-k3s1");
        assert_eq!(c["command"][0], "/opt/k3s");
        assert!(
            c["command"]
                .to_string()
                .contains("\"--data-dir\",\"/host/srv/k3s\"")
        );
        assert_eq!(j["spec"]["template"]["spec"]["hostNetwork"], true);
        assert_eq!(j["spec"]["template"]["spec"]["nodeName"], "server-1");
    }
}
