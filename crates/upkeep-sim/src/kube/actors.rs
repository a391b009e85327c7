//! The simulated controllers that make the emulated cluster behave: the system-upgrade-controller
//! (Plans -> cordon, drain, upgrade Jobs, node versions, Plan status), helm-controller
//! (HelmRelease chart versions, with Longhorn's refusal of minor skips and downgrades),
//! flux-operator (FluxInstance distribution versions), Flux's Kustomizations, k3s etcd snapshot
//! Jobs, and Longhorn's backups.
//!
//! [`step`] is one look at the cluster at simulated time `now`: a plain function over the store,
//! so tests can drive it without servers or timers. [`run`] calls it every tick. The controllers
//! keep their progress in the objects themselves (annotations under `sim.upkeep.dev/`), so a
//! restarted simulator resumes where it was.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::{Value, json};

use super::flux::{self, Artifact};
use super::patch::{label_selector_from_object, labels_match};
use super::seed::{self, digest, helm_snapshot};
use super::store::{Ctx, Gr, PatchKind, Store, gr, timestamp};
use super::{ClusterFault, Shared, Timings};
use upkeep::versions::{self, Scheme};

/// The simulated controllers, forever, one look per tick of real time (a running clock; a
/// stepped one is moved, and the controllers settled, by whoever moves it).
pub async fn run(shared: Arc<Shared>) {
    loop {
        tokio::time::sleep(shared.timings().tick).await;
        shared.look();
    }
}

/// One look at the cluster by every simulated controller. Returns the faults that happened (and
/// are used up).
pub fn step(
    store: &mut Store,
    now: DateTime<Utc>,
    faults: &[ClusterFault],
    t: &Timings,
) -> Vec<ClusterFault> {
    step_since(store, now, now, faults, t)
}

/// [`step`], knowing that the previous look was at `prev`: work that became possible in between
/// (a Plan created, a prepare satisfied) is dated from then, not from `now`, so simulated
/// durations do not depend on how often the controllers look.
pub fn step_since(
    store: &mut Store,
    prev: DateTime<Utc>,
    now: DateTime<Utc>,
    faults: &[ClusterFault],
    t: &Timings,
) -> Vec<ClusterFault> {
    step_with_sources(store, prev, now, faults, t, &Artifacts::new())
}

/// GitRepository artifacts by (namespace, name), as source-controller would serve them.
pub type Artifacts = std::collections::BTreeMap<(String, String), Artifact>;

/// [`step_since`], with the artifacts of the GitRepositories whose repository the emulator
/// can read: their Kustomizations are built and applied as kustomize-controller does.
pub fn step_with_sources(
    store: &mut Store,
    prev: DateTime<Utc>,
    now: DateTime<Utc>,
    faults: &[ClusterFault],
    t: &Timings,
    artifacts: &Artifacts,
) -> Vec<ClusterFault> {
    let mut w = World {
        store,
        prev: prev.min(now),
        now,
        faults,
        t,
        used: Vec::new(),
        artifacts,
    };
    w.suc();
    w.kustomize();
    w.helm();
    w.flux();
    w.kustomizations();
    w.snapshot_jobs();
    w.longhorn_rollout();
    w.longhorn_pdbs();
    w.longhorn_backup_target();
    w.longhorn_backups();
    w.disruption_controller();
    w.used
}

struct World<'a> {
    store: &'a mut Store,
    prev: DateTime<Utc>,
    now: DateTime<Utc>,
    faults: &'a [ClusterFault],
    t: &'a Timings,
    used: Vec<ClusterFault>,
    artifacts: &'a Artifacts,
}

fn s<'a>(v: &'a Value, p: &str) -> &'a str {
    v.pointer(p).and_then(Value::as_str).unwrap_or("")
}

fn name_ns(v: &Value) -> (String, String) {
    (
        s(v, "/metadata/name").to_string(),
        s(v, "/metadata/namespace").to_string(),
    )
}

fn since(v: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(v)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

fn elapsed(now: DateTime<Utc>, from: Option<DateTime<Utc>>) -> Duration {
    from.and_then(|f| (now - f).to_std().ok())
        .unwrap_or_default()
}

/// Set a condition, keeping `lastTransitionTime` when the status does not change.
pub fn set_condition(
    obj: &mut Value,
    kind: &str,
    status: &str,
    reason: &str,
    message: &str,
    now: DateTime<Utc>,
) {
    let generation = obj
        .pointer("/metadata/generation")
        .and_then(Value::as_i64)
        .unwrap_or(0);
    if !obj.get("status").is_some_and(Value::is_object) {
        obj["status"] = json!({});
    }
    let conds = obj["status"]
        .as_object_mut()
        .map(|m| m.entry("conditions").or_insert_with(|| json!([])));
    let Some(Value::Array(conds)) = conds else {
        return;
    };
    let new = json!({"type": kind, "status": status, "reason": reason, "message": message,
        "lastTransitionTime": timestamp(now), "observedGeneration": generation});
    match conds
        .iter_mut()
        .find(|c| c.get("type").and_then(Value::as_str) == Some(kind))
    {
        Some(c) => {
            let keep = c.get("status").and_then(Value::as_str) == Some(status);
            let ltt = c.get("lastTransitionTime").cloned();
            *c = new;
            if keep && let Some(l) = ltt {
                c["lastTransitionTime"] = l;
            }
        }
        None => conds.push(new),
    }
}

fn annotation<'a>(v: &'a Value, key: &str) -> Option<&'a str> {
    v.pointer("/metadata/annotations")?.get(key)?.as_str()
}

fn set_annotation(v: &mut Value, key: &str, value: Option<&str>) {
    if !v["metadata"]
        .get("annotations")
        .is_some_and(Value::is_object)
    {
        v["metadata"]["annotations"] = json!({});
    }
    if let Some(m) = v["metadata"]["annotations"].as_object_mut() {
        match value {
            Some(x) => {
                m.insert(key.into(), json!(x));
            }
            None => {
                m.remove(key);
            }
        }
        if m.is_empty()
            && let Some(meta) = v["metadata"].as_object_mut()
        {
            meta.remove("annotations");
        }
    }
}

/// SUC's `ttlSecondsAfterFinished` for its Jobs (`pkg/upgrade/job/job.go`).
const JOB_TTL: Duration = Duration::from_secs(900);

/// What a Plan asks of each node's Job.
struct PlanRules {
    /// Cordon first (`cordon`, or implied by `drain`).
    cordon: bool,
    drain: bool,
    /// `jobActiveDeadlineSecs` (SUC's default: 600 s).
    deadline: Duration,
    /// The Job waits in a `prepare` init container first.
    prepares: bool,
    /// Whether that prepare is satisfied, and since when (if known).
    prepared_at: Option<Option<DateTime<Utc>>>,
}

/// A node's progress through one Plan: `hash|phase|since|target`.
#[derive(Debug, Clone, PartialEq)]
struct Progress {
    hash: String,
    phase: String,
    since: Option<DateTime<Utc>>,
    target: String,
}

impl Progress {
    fn parse(s: &str) -> Option<Progress> {
        let mut p = s.split('|');
        Some(Progress {
            hash: p.next()?.to_string(),
            phase: p.next()?.to_string(),
            since: since(p.next()?),
            target: p.next()?.to_string(),
        })
    }
    fn render(&self, now: DateTime<Utc>) -> String {
        format!(
            "{}|{}|{}|{}",
            self.hash,
            self.phase,
            timestamp(self.since.unwrap_or(now)),
            self.target
        )
    }
}

fn progress_key(plan: &str) -> String {
    format!("sim.upkeep.dev/plan-{plan}")
}

fn k3s(v: &str) -> Option<versions::Version> {
    versions::parse(v, Scheme::K3s).ok()
}

fn job_name(plan: &str, node: &str, hash: &str) -> String {
    let mut n = format!(
        "apply-{plan}-on-{node}-with-{}",
        &hash[..hash.len().min(10)]
    );
    n.truncate(63);
    n.trim_end_matches('-').to_string()
}

impl World<'_> {
    /// Where Longhorn runs: the namespace of its manager DaemonSet (the chart's release
    /// namespace), `longhorn-system` before it is installed.
    fn longhorn_ns(&self) -> String {
        self.store
            .list(&gr("apps", "daemonsets"), None)
            .into_iter()
            .find(|d| s(d, "/metadata/name") == "longhorn-manager")
            .map(|d| s(d, "/metadata/namespace").to_string())
            .unwrap_or_else(|| seed::LONGHORN_NAMESPACE.to_string())
    }

    fn ctx(&self, manager: &str) -> Ctx {
        Ctx::new(self.now, manager)
    }

    fn fault(&self, f: impl Fn(&ClusterFault) -> bool) -> Option<ClusterFault> {
        self.faults
            .iter()
            .find(|x| f(x) && !self.used.contains(x))
            .cloned()
    }

    // ----- system-upgrade-controller ---------------------------------------------------------

    fn suc(&mut self) {
        let plans: Vec<Value> = self
            .store
            .list(&gr("upgrade.cattle.io", "plans"), None)
            .into_iter()
            .cloned()
            .collect();
        let g = gr("upgrade.cattle.io", "plans");
        // Plans that prepare on another go after it, so they see it complete in the same step.
        let mut plans = plans;
        plans.sort_by_key(|p| p.pointer("/spec/prepare").is_some());
        for plan in plans {
            // Catch up within this step: a node that finished at t frees its slot at t, so the
            // next one starts then, however coarse the ticks (simulated timings stay exact).
            let (name, ns) = name_ns(&plan);
            for _ in 0..256 {
                let Some(current) = self.store.try_get(&g, &ns, &name).cloned() else {
                    break;
                };
                if !self.plan(&current) {
                    break;
                }
            }
        }
    }

    /// One pass over a Plan; true when a node started or finished.
    fn plan(&mut self, plan: &Value) -> bool {
        let (name, ns) = name_ns(plan);
        let ctx = self.ctx("system-upgrade-controller");
        let plans = gr("upgrade.cattle.io", "plans");
        let version = s(plan, "/spec/version").to_string();
        if version.is_empty() {
            let msg = if s(plan, "/spec/channel").is_empty() {
                "spec.version or spec.channel is required"
            } else {
                "the simulator does not resolve channels: set spec.version"
            };
            let now = self.now;
            let _ = self.store.modify(&plans, &ns, &name, &ctx, |p| {
                set_condition(p, "LatestResolved", "False", "Error", msg, now);
            });
            return false;
        }
        let Some(target) = k3s(&version) else {
            let now = self.now;
            let _ = self.store.modify(&plans, &ns, &name, &ctx, |p| {
                set_condition(
                    p,
                    "Validated",
                    "False",
                    "Error",
                    &format!("{version:?} is not a k3s version"),
                    now,
                );
            });
            return false;
        };
        let hash = plan_hash(plan);
        let selector =
            label_selector_from_object(plan.pointer("/spec/nodeSelector").unwrap_or(&Value::Null));
        // `concurrency: 0` keeps the nodes already applying and adds none (SUC's
        // `SelectConcurrentNodes`); upkeep pauses a rollout that way.
        let concurrency = plan
            .pointer("/spec/concurrency")
            .and_then(Value::as_u64)
            .unwrap_or(0) as usize;
        // Outside `spec.window` no Job is created, but only while nothing applies: a Plan
        // with nodes in progress goes on, and may even start the next node (`handlePlans`).
        let in_window = window_open(plan.pointer("/spec/window"), self.now);
        let cordon = plan
            .pointer("/spec/cordon")
            .and_then(Value::as_bool)
            .unwrap_or(false);
        let drain = plan.pointer("/spec/drain").is_some_and(|d| !d.is_null());
        let deadline = Duration::from_secs(
            plan.pointer("/spec/jobActiveDeadlineSecs")
                .and_then(Value::as_u64)
                .unwrap_or(600),
        );
        let waiting_for = match plan.pointer("/spec/prepare/args").and_then(Value::as_array) {
            Some(a) if a.first().and_then(Value::as_str) == Some("prepare") => {
                a.get(1).and_then(Value::as_str).map(str::to_string)
            }
            _ => None,
        };
        // k3s-upgrade's `prepare <plan>` (`upgrade.sh`: `prepare`, then
        // `verify_controlplane_versions`) waits until that plan exists and applies to no node,
        // then until every control-plane node's kubelet runs exactly this plan's version. It is
        // the Job's first init container: the node is already applying while it waits, and
        // the cordon (or drain) comes after it.
        let control_plane: Vec<String> = self
            .store
            .list(&gr("", "nodes"), None)
            .iter()
            .filter(|n| {
                n.pointer("/metadata/labels/node-role.kubernetes.io~1control-plane")
                    .is_some()
            })
            .map(|n| s(n, "/status/nodeInfo/kubeletVersion").replace('+', "-"))
            .collect();
        let servers_at_version = !control_plane.is_empty()
            && control_plane
                .iter()
                .all(|v| *v == version.replace('+', "-"));
        let prepared_at: Option<Option<DateTime<Utc>>> = match &waiting_for {
            None => Some(None),
            Some(other) => self.store.try_get(&plans, &ns, other).and_then(|o| {
                let idle = o
                    .pointer("/status/applying")
                    .and_then(Value::as_array)
                    .is_none_or(|a| a.is_empty());
                (idle && servers_at_version).then(|| {
                    o.pointer("/status/conditions")
                        .and_then(Value::as_array)
                        .and_then(|cs| {
                            cs.iter()
                                .find(|c| s(c, "/type") == "Complete" && s(c, "/status") == "True")
                        })
                        .and_then(|c| since(s(c, "/lastTransitionTime")))
                })
            }),
        };
        let rules = PlanRules {
            cordon: cordon || drain,
            drain,
            deadline,
            prepares: waiting_for.is_some(),
            prepared_at,
        };
        // Nothing starts before the plan existed; and a start with no slot freed in this step
        // happened no earlier than the previous look.
        let floor = since(s(plan, "/metadata/creationTimestamp"))
            .unwrap_or(self.prev)
            .max(self.prev)
            .min(self.now);
        let label = format!("plan.upgrade.cattle.io/{name}");
        let key = progress_key(&name);
        let mut nodes: Vec<Value> = self
            .store
            .list(&gr("", "nodes"), None)
            .into_iter()
            .filter(|n| labels_match(&selector, n))
            .map(|n| slim(n, &label, &key))
            .collect();
        nodes.sort_by(|a, b| s(a, "/metadata/name").cmp(s(b, "/metadata/name")));
        let mut applying: Vec<String> = Vec::new();
        let mut failed: Vec<(String, String)> = Vec::new();
        let mut done = 0usize;
        let mut changed = false;
        // When slots freed up during this pass (nodes that finished), earliest first.
        let mut freed: Vec<DateTime<Utc>> = Vec::new();
        let mut freed_all: Vec<DateTime<Utc>> = Vec::new();
        // Nodes in flight first. A node the Plan no longer selects is dropped from `applying`
        // and its running Job deleted as out of turn; the node stays cordoned (SUC uncordons
        // only when a Job completes).
        let selected: std::collections::HashSet<String> = nodes
            .iter()
            .map(|n| s(n, "/metadata/name").to_string())
            .collect();
        let in_flight: Vec<Value> = self
            .store
            .list(&gr("", "nodes"), None)
            .into_iter()
            .filter(|n| !selected.contains(s(n, "/metadata/name")) && annotation(n, &key).is_some())
            .map(|n| slim(n, &label, &key))
            .collect();
        for n in &in_flight {
            let node = s(n, "/metadata/name").to_string();
            if let Some(p) = annotation(n, &key).and_then(Progress::parse) {
                changed |= self.out_of_turn(&name, &ns, &node, &p);
            }
        }
        for n in &nodes {
            let node = s(n, "/metadata/name").to_string();
            if s(n, &format!("/metadata/labels/{}", label.replace('/', "~1"))) == hash {
                if selected.contains(&node) {
                    done += 1;
                }
                continue;
            }
            let Some(p) = annotation(n, &key).and_then(Progress::parse) else {
                continue;
            };
            match p.phase.as_str() {
                "failed" if p.hash == hash => {
                    // A failed node is never labelled, so it stays applying and holds its slot.
                    // Its Job is deleted after `ttlSecondsAfterFinished` (900 s), and SUC then
                    // creates it again: the node is retried.
                    let job = self
                        .store
                        .try_get(&gr("batch", "jobs"), &ns, &job_name(&name, &node, &hash))
                        .cloned();
                    let finished = job
                        .as_ref()
                        .and_then(|j| j.pointer("/status/conditions"))
                        .and_then(Value::as_array)
                        .and_then(|cs| cs.iter().find(|c| s(c, "/type") == "Failed"))
                        .and_then(|c| since(s(c, "/lastTransitionTime")));
                    if elapsed(self.now, finished) >= JOB_TTL || job.is_none() {
                        changed = true;
                        let at = finished.map_or(self.now, |f| {
                            f + chrono::Duration::from_std(JOB_TTL).unwrap_or_default()
                        });
                        self.start_node(
                            &name,
                            &ns,
                            &node,
                            &hash,
                            &version,
                            &rules,
                            at.min(self.now),
                        );
                        applying.push(node);
                        continue;
                    }
                    // Why: the failed Job's condition says.
                    let why = job
                        .as_ref()
                        .and_then(|j| j.pointer("/status/conditions"))
                        .and_then(Value::as_array)
                        .and_then(|cs| cs.iter().find(|c| s(c, "/type") == "Failed"))
                        .map(|c| s(c, "/message").to_string())
                        .unwrap_or_else(|| "Job has reached the specified backoff limit".into());
                    applying.push(node.clone());
                    failed.push((node, why))
                }
                "preparing" | "draining" | "upgrading" => {
                    if let Some((result, at)) = self.advance_node(&name, &ns, n, &p, &rules) {
                        changed = true;
                        freed.push(at);
                        freed_all.push(at);
                        if p.hash == hash {
                            match result {
                                Ok(()) => done += 1,
                                Err(why) => {
                                    applying.push(node.clone());
                                    failed.push((node, why))
                                }
                            }
                        }
                    } else {
                        applying.push(node);
                    }
                }
                _ => {}
            }
        }
        // Start new nodes up to the concurrency; a Plan with nothing applying only inside its
        // window.
        let was_applying = plan
            .pointer("/status/applying")
            .and_then(Value::as_array)
            .is_some_and(|a| !a.is_empty());
        if was_applying || in_window {
            for n in &nodes {
                if applying.len() >= concurrency {
                    break;
                }
                let node = s(n, "/metadata/name").to_string();
                let cur = self
                    .store
                    .try_get(&gr("", "nodes"), "", &node)
                    .map(|n| slim(n, &label, &key))
                    .unwrap_or(Value::Null);
                if s(
                    &cur,
                    &format!("/metadata/labels/{}", label.replace('/', "~1")),
                ) == hash
                {
                    continue;
                }
                if let Some(p) = annotation(&cur, &key).and_then(Progress::parse)
                    && (p.hash == hash || p.phase != "failed")
                {
                    continue;
                }
                let running = k3s(s(&cur, "/status/nodeInfo/kubeletVersion"));
                if running.as_ref() == Some(&target) {
                    // Nothing to do: the upgrade image exits at once.
                    let _ = self.store.modify(
                        &gr("", "nodes"),
                        "",
                        &node,
                        &self.ctx("system-upgrade-controller"),
                        |n| {
                            n["metadata"]["labels"][&label] = json!(hash);
                            set_annotation(n, &key, None);
                        },
                    );
                    done += 1;
                    continue;
                }
                freed.sort();
                let at = if freed.is_empty() {
                    floor
                } else {
                    freed.remove(0).max(floor)
                };
                changed = true;
                self.start_node(&name, &ns, &node, &hash, &version, &rules, at);
                applying.push(node);
            }
        }
        // SUC selects nothing (all done, or `concurrency: 0` with nothing applying): Complete.
        let complete = done == nodes.len() || (applying.is_empty() && concurrency == 0);
        let now = self.now;
        let completed_at = freed_all.iter().max().copied().unwrap_or(now);
        let dash = version.replace('+', "-");
        let _ = self.store.modify(&plans, &ns, &name, &ctx, |p| {
            if !p.get("status").is_some_and(Value::is_object) {
                p["status"] = json!({});
            }
            p["status"]["latestVersion"] = json!(dash);
            p["status"]["latestHash"] = json!(hash);
            if applying.is_empty() {
                if let Some(m) = p["status"].as_object_mut() {
                    m.remove("applying");
                }
            } else {
                p["status"]["applying"] = json!(applying);
            }
            set_condition(p, "LatestResolved", "True", "Version", "", now);
            set_condition(p, "Validated", "True", "PlanIsValid", "", now);
            if complete {
                set_condition(p, "Complete", "True", "Complete", "", completed_at);
            } else if let Some((node, why)) = failed.first() {
                set_condition(
                    p,
                    "Complete",
                    "False",
                    "JobFailed",
                    &format!("Job apply-{name} on {node} failed: {why}"),
                    now,
                );
            } else if rules.prepared_at.is_none() && !applying.is_empty() {
                set_condition(
                    p,
                    "Complete",
                    "False",
                    "Waiting",
                    &format!(
                        "waiting for plan {}",
                        waiting_for.clone().unwrap_or_default()
                    ),
                    now,
                );
            } else {
                set_condition(
                    p,
                    "Complete",
                    "False",
                    "SyncJob",
                    &format!("applying to {}", applying.join(", ")),
                    now,
                );
            }
        });
        changed
    }

    #[allow(clippy::too_many_arguments)]
    fn start_node(
        &mut self,
        plan: &str,
        ns: &str,
        node: &str,
        hash: &str,
        version: &str,
        rules: &PlanRules,
        at: DateTime<Utc>,
    ) {
        let ctx = self.ctx("system-upgrade-controller");
        let now = at;
        // The Job's init containers: `prepare` first, then `cordon` (or `drain`).
        let p = Progress {
            hash: hash.to_string(),
            phase: if rules.prepares {
                "preparing"
            } else {
                "draining"
            }
            .into(),
            since: Some(at),
            target: version.to_string(),
        };
        let key = progress_key(plan);
        let cordon = rules.cordon && !rules.prepares;
        let _ = self.store.modify(&gr("", "nodes"), "", node, &ctx, |n| {
            set_annotation(n, &key, Some(&p.render(now)));
            if cordon {
                cordon_node(n, now);
            }
        });
        let job = json!({
            "metadata": {"name": job_name(plan, node, hash), "namespace": ns,
                "labels": {"upgrade.cattle.io/plan": plan, "upgrade.cattle.io/node": node, "upgrade.cattle.io/version": version.replace('+', "-"),
                    format!("plan.upgrade.cattle.io/{plan}"): hash}},
            "spec": {"activeDeadlineSeconds": rules.deadline.as_secs(), "backoffLimit": 2, "ttlSecondsAfterFinished": JOB_TTL.as_secs(),
                "template": {"spec": {"nodeName": node, "serviceAccountName": "system-upgrade", "restartPolicy": "Never",
                    "containers": [{"name": "upgrade", "image": format!("rancher/k3s-upgrade:{}", version.replace('+', "-"))}]}}},
            "status": {"active": 1, "startTime": timestamp(now)}
        });
        let jobs = gr("batch", "jobs");
        let _ = self.store.delete(&jobs, ns, s(&job, "/metadata/name"));
        let _ = self.store.create_with_status(&jobs, ns, job, &ctx);
    }

    fn finish_job(&mut self, ns: &str, job: &str, ok: bool, reason: &str, message: &str) {
        let now = self.now;
        self.finish_job_at(ns, job, ok, reason, message, now);
    }

    fn finish_job_at(
        &mut self,
        ns: &str,
        job: &str,
        ok: bool,
        reason: &str,
        message: &str,
        now: DateTime<Utc>,
    ) {
        let _ = self.store.modify(
            &gr("batch", "jobs"),
            ns,
            job,
            &self.ctx("job-controller"),
            |j| {
                if let Some(m) = j["status"].as_object_mut() {
                    m.remove("active");
                }
                // Only a Job that succeeded gets a completionTime (the job-controller's rule).
                if ok {
                    j["status"]["completionTime"] = json!(timestamp(now));
                    j["status"]["succeeded"] = json!(1);
                    set_condition(j, "Complete", "True", "", "", now);
                } else {
                    j["status"]["failed"] = json!(1);
                    set_condition(j, "Failed", "True", reason, message, now);
                }
            },
        );
    }

    /// A node its Plan no longer selects, while its Job runs: SUC drops it from `applying` and
    /// deletes the Job as out of turn (`handle_upgrade.go`, `handle_batch.go`). Nothing
    /// uncordons the node: that happens only when a Job completes.
    fn out_of_turn(&mut self, plan: &str, ns: &str, node: &str, p: &Progress) -> bool {
        // Only a running Job is out of turn; a failed one stays until its TTL.
        if p.phase != "failed" {
            let _ = self
                .store
                .delete(&gr("batch", "jobs"), ns, &job_name(plan, node, &p.hash));
        }
        let key = progress_key(plan);
        let ctx = self.ctx("system-upgrade-controller");
        let _ = self.store.modify(&gr("", "nodes"), "", node, &ctx, |n| {
            set_annotation(n, &key, None);
        });
        true
    }

    /// Move one node's upgrade forward. `None`: still in progress; `Some(Ok)`: upgraded and
    /// labelled; `Some(Err(why))`: the Job failed.
    fn advance_node(
        &mut self,
        plan: &str,
        ns: &str,
        n: &Value,
        p: &Progress,
        rules: &PlanRules,
    ) -> Option<(Result<(), String>, DateTime<Utc>)> {
        let (drain, deadline) = (rules.drain, rules.deadline);
        let node = s(n, "/metadata/name").to_string();
        let key = progress_key(plan);
        let job = job_name(plan, &node, &p.hash);
        let ctx = self.ctx("system-upgrade-controller");
        let now = self.now;
        let age = elapsed(now, p.since);
        let fail = |w: &mut World, reason: &str, why: String| {
            w.finish_job(ns, &job, false, reason, &why);
            let f = Progress {
                phase: "failed".into(),
                ..p.clone()
            };
            let _ = w.store.modify(&gr("", "nodes"), "", &node, &ctx, |n| {
                set_annotation(n, &key, Some(&f.render(now)));
            });
            Some((Err(why), now))
        };
        if p.phase == "preparing" {
            let Some(prepared) = rules.prepared_at else {
                if age >= deadline {
                    return fail(
                        self,
                        "DeadlineExceeded",
                        "Job was active longer than specified deadline (waiting in prepare)".into(),
                    );
                }
                return None;
            };
            let at = prepared
                .unwrap_or(self.prev)
                .max(p.since.unwrap_or(now))
                .min(now);
            let next = Progress {
                phase: "draining".into(),
                since: Some(at),
                ..p.clone()
            };
            let cordon = rules.cordon;
            let _ = self.store.modify(&gr("", "nodes"), "", &node, &ctx, |n| {
                set_annotation(n, &key, Some(&next.render(now)));
                if cordon {
                    cordon_node(n, at);
                }
            });
            return self.advance_node(plan, ns, n, &next, rules);
        }
        if p.phase == "draining" {
            if drain {
                self.evict_workloads(&node);
            }
            if drain && self.drain_blocked(&node) {
                if age >= deadline {
                    return fail(
                        self,
                        "DeadlineExceeded",
                        format!(
                            "Job was active longer than specified deadline: the drain of {node} is blocked by a PodDisruptionBudget"
                        ),
                    );
                }
                return None;
            }
            if drain && age < self.t.drain {
                return None;
            }
            // The drain ended when it was due, not when this step noticed.
            let drained_at = p.since.unwrap_or(now)
                + chrono::Duration::from_std(if drain { self.t.drain } else { Duration::ZERO })
                    .unwrap_or_default();
            let next = Progress {
                phase: "upgrading".into(),
                since: Some(drained_at),
                ..p.clone()
            };
            let _ = self.store.modify(&gr("", "nodes"), "", &node, &ctx, |n| {
                set_annotation(n, &key, Some(&next.render(now)));
            });
            return self.advance_node(plan, ns, n, &next, rules);
        }
        // k3s-upgrade's `upgrade.sh` refuses a lower version; the node stays cordoned.
        let running = s(n, "/status/nodeInfo/kubeletVersion");
        if let (Some(r), Some(t)) = (k3s(running), k3s(&p.target))
            && r > t
        {
            return fail(
                self,
                "BackoffLimitExceeded",
                format!("refusing to downgrade from {running} to {}", p.target),
            );
        }
        let slow = self.fault(|f| matches!(f, ClusterFault::SlowUpgrade { node: n, .. } if n.as_deref().is_none_or(|x| x == node)));
        let takes = match &slow {
            Some(ClusterFault::SlowUpgrade { seconds, .. }) => Duration::from_secs(*seconds),
            _ => self.t.node_upgrade,
        };
        if takes > deadline && age >= deadline {
            return fail(
                self,
                "DeadlineExceeded",
                "Job was active longer than specified deadline".into(),
            );
        }
        if age < takes {
            return None;
        }
        let done_at =
            p.since.unwrap_or(now) + chrono::Duration::from_std(takes).unwrap_or_default();
        let never_ready =
            self.fault(|f| matches!(f, ClusterFault::NodeNeverReady { node: x } if *x == node));
        let job_fails = self
            .fault(|f| matches!(f, ClusterFault::JobFailsButUpgraded { node: x } if *x == node));
        let label = format!("plan.upgrade.cattle.io/{plan}");
        let target = p.target.clone();
        let hash = p.hash.clone();
        let ok = job_fails.is_none();
        let ready = never_ready.is_none();
        let _ = self.store.modify(&gr("", "nodes"), "", &node, &ctx, |n| {
            n["status"]["nodeInfo"]["kubeletVersion"] = json!(target);
            n["status"]["nodeInfo"]["kubeProxyVersion"] = json!(target);
            if ready {
                set_condition(n, "Ready", "True", "KubeletReady", "kubelet is posting ready status", now);
            } else {
                set_condition(n, "Ready", "False", "KubeletNotReady", "container runtime network not ready: NetworkReady=false reason:NetworkPluginNotReady", now);
            }
            if ok {
                n["metadata"]["labels"][&label] = json!(hash);
                set_annotation(n, &key, None);
                uncordon_node(n);
            }
        });
        for f in [never_ready, job_fails].into_iter().flatten() {
            self.used.push(f);
        }
        if ok {
            // The first pod dies as k3s restarts under it; the Job's retry finds the new binary
            // in place and succeeds (`backoffLimit: 2`): `status.failed` counts that pod.
            let _ = self.store.modify(
                &gr("batch", "jobs"),
                ns,
                &job,
                &self.ctx("job-controller"),
                |j| {
                    j["status"]["failed"] = json!(1);
                },
            );
            self.finish_job_at(ns, &job, true, "", "", done_at);
            Some((Ok(()), done_at))
        } else {
            fail(self, "BackoffLimitExceeded", "Job has reached the specified backoff limit (the node restarted k3s during the upgrade)".into())
        }
    }

    /// A drain evicts the workloads of the node; their Longhorn volumes detach and attach
    /// where the pods are scheduled again (another schedulable node).
    fn evict_workloads(&mut self, node: &str) {
        let ns = self.longhorn_ns();
        let ns = ns.as_str();
        let vols = gr("longhorn.io", "volumes");
        let attached: Vec<String> = self
            .store
            .list(&vols, Some(ns))
            .into_iter()
            .filter(|v| s(v, "/status/currentNodeID") == node)
            .map(|v| s(v, "/metadata/name").to_string())
            .collect();
        if attached.is_empty() {
            return;
        }
        let other = self
            .store
            .list(&gr("", "nodes"), None)
            .into_iter()
            .find(|n| {
                s(n, "/metadata/name") != node
                    && n.pointer("/spec/unschedulable") != Some(&json!(true))
            })
            .map(|n| s(n, "/metadata/name").to_string())
            .unwrap_or_default();
        let ctx = self.ctx("longhorn-manager");
        for v in attached {
            let _ = self.store.modify(&vols, ns, &v, &ctx, |vol| {
                vol["status"]["currentNodeID"] = json!(other);
            });
        }
    }

    fn drain_blocked(&self, node: &str) -> bool {
        let pdbs: Vec<&Value> = self
            .store
            .list(&gr("policy", "poddisruptionbudgets"), None)
            .into_iter()
            .filter(|p| {
                p.pointer("/status/disruptionsAllowed")
                    .and_then(Value::as_i64)
                    == Some(0)
            })
            .collect();
        self.store
            .list(&gr("", "pods"), None)
            .into_iter()
            .any(|pod| {
                s(pod, "/spec/nodeName") == node
                    && pdbs.iter().any(|pdb| {
                        s(pdb, "/metadata/namespace") == s(pod, "/metadata/namespace")
                            && labels_match(
                                &label_selector_from_object(
                                    pdb.pointer("/spec/selector").unwrap_or(&Value::Null),
                                ),
                                pod,
                            )
                    })
            })
    }

    // ----- helm-controller --------------------------------------------------------------------

    /// Objects of `g` whose new generation has been reconciling for `takes`: the first look
    /// marks them Progressing (`Ready=Unknown`), later looks hand them over once due.
    fn due_reconciles(
        &mut self,
        g: &Gr,
        manager: &str,
        progressing: &str,
        takes: Duration,
    ) -> Vec<(Value, i64)> {
        let key = format!("sim.upkeep.dev/{manager}-started");
        let all: Vec<Value> = self.store.list(g, None).into_iter().cloned().collect();
        let mut due = Vec::new();
        for obj in all {
            let generation = obj
                .pointer("/metadata/generation")
                .and_then(Value::as_i64)
                .unwrap_or(0);
            // flux-operator keeps no `status.observedGeneration`: only its Ready condition's.
            let observed = obj
                .pointer("/status/observedGeneration")
                .or_else(|| {
                    obj.pointer("/status/conditions")?
                        .as_array()?
                        .iter()
                        .find(|c| s(c, "/type") == "Ready")?
                        .get("observedGeneration")
                })
                .and_then(Value::as_i64)
                .unwrap_or(0);
            let started = annotation(&obj, &key).and_then(since);
            let now = self.now;
            match started {
                None if observed == generation => {}
                None => {
                    let (name, ns) = name_ns(&obj);
                    let _ = self.store.modify(g, &ns, &name, &self.ctx(manager), |o| {
                        set_annotation(o, &key, Some(&timestamp(now)));
                        set_condition(o, "Ready", "Unknown", "Progressing", progressing, now);
                    });
                }
                Some(t) if elapsed(now, Some(t)) >= takes => due.push((obj, generation)),
                Some(_) => {}
            }
        }
        due
    }

    /// The minor of the Flux the cluster runs (the version label flux-operator puts on the
    /// GitRepository CRD), if known.
    fn flux_minor(&self) -> Option<u64> {
        let crd = self.store.try_get(
            &gr("apiextensions.k8s.io", "customresourcedefinitions"),
            "",
            "gitrepositories.source.toolkit.fluxcd.io",
        )?;
        let v = s(crd, "/metadata/labels/app.kubernetes.io~1version");
        v.trim_start_matches('v').split('.').nth(1)?.parse().ok()
    }

    /// source-controller's OCIRepository: the artifact of `spec.ref` (`digest` > `semver` >
    /// `tag` > `latest`, as `getArtifactRef`), its revision `<tag>@sha256:<digest>`
    /// (`getRevision`). A semver range needs the registry's tags, which this emulator does not
    /// list: the source says so and is not Ready.
    fn oci_sources(&mut self) {
        let g = gr("source.toolkit.fluxcd.io", "ocirepositories");
        let all: Vec<Value> = self.store.list(&g, None).into_iter().cloned().collect();
        let now = self.now;
        for o in all {
            let (name, ns) = name_ns(&o);
            let url = s(&o, "/spec/url").to_string();
            let generation = o
                .pointer("/metadata/generation")
                .and_then(Value::as_i64)
                .unwrap_or(1);
            let wanted: Result<String, String> = if !s(&o, "/spec/ref/digest").is_empty() {
                Ok(s(&o, "/spec/ref/digest").to_string())
            } else if !s(&o, "/spec/ref/semver").is_empty() {
                Err(format!(
                    "failed to determine artifact digest: no match found for semver: {} (the emulator serves no registry tags)",
                    s(&o, "/spec/ref/semver")
                ))
            } else {
                let tag = match s(&o, "/spec/ref/tag") {
                    "" => "latest",
                    t => t,
                };
                Ok(format!("{tag}@sha256:{}", digest(&format!("{url}:{tag}"))))
            };
            let current = s(&o, "/status/artifact/revision").to_string();
            let observed = o
                .pointer("/status/observedGeneration")
                .and_then(Value::as_i64);
            if wanted.as_ref().ok() == Some(&current) && observed == Some(generation) {
                continue;
            }
            let ctx = self.ctx("source-controller");
            let _ = self.store.modify(&g, &ns, &name, &ctx, |x| {
                x["status"]["observedGeneration"] = json!(generation);
                match &wanted {
                    Ok(rev) => {
                        x["status"]["artifact"] = json!({"revision": rev, "digest": format!("sha256:{}", digest(rev)),
                            "url": format!("http://source-controller.flux-system.svc.cluster.local./ocirepository/{ns}/{name}/{}.tar.gz", digest(rev)),
                            "lastUpdateTime": timestamp(now)});
                        set_condition(x, "Ready", "True", "Succeeded", &format!("stored artifact for digest '{rev}'"), now);
                    }
                    Err(why) => set_condition(x, "Ready", "False", "OCIArtifactPullFailed", why, now),
                }
            });
        }
    }

    /// The chart a HelmRelease installs: (chart name, version asked, version as Helm records
    /// it). From `spec.chart.spec`, or from its `chartRef` source's artifact: an OCIRepository's
    /// tag (`_` read as `+`) with the digest's first 12 hex characters as build metadata, as
    /// helm-controller's `mutateChartWithSourceRevision` does; a HelmChart's `spec`.
    fn chart_of(&self, hr: &Value, ns: &str) -> Result<(String, String, String), String> {
        let Some(r) = hr.pointer("/spec/chartRef") else {
            let chart = s(hr, "/spec/chart/spec/chart").to_string();
            let v = s(hr, "/spec/chart/spec/version").to_string();
            return Ok((chart, v.clone(), v));
        };
        let kind = s(r, "/kind");
        let rns = match s(r, "/namespace") {
            "" => ns,
            n => n,
        };
        let rname = s(r, "/name");
        let plural = if kind == "OCIRepository" {
            "ocirepositories"
        } else {
            "helmcharts"
        };
        let Some(src) = self
            .store
            .try_get(&gr("source.toolkit.fluxcd.io", plural), rns, rname)
        else {
            return Err(format!(
                "could not get Source object: {plural}.source.toolkit.fluxcd.io \"{rname}\" not found"
            ));
        };
        if kind != "OCIRepository" {
            let v = s(src, "/spec/version").to_string();
            return Ok((s(src, "/spec/chart").to_string(), v.clone(), v));
        }
        let rev = s(src, "/status/artifact/revision");
        if rev.is_empty() {
            return Err(format!(
                "could not get Source object: {kind} '{rns}/{rname}' not ready"
            ));
        }
        let chart = s(src, "/spec/url")
            .trim_end_matches('/')
            .rsplit('/')
            .next()
            .unwrap_or("")
            .to_string();
        let (tag, hex) = rev.split_once("@sha256:").unwrap_or((rev, ""));
        let version = tag.replace('_', "+");
        let base = version.split('+').next().unwrap_or(&version).to_string();
        let recorded = if hex.len() >= 12 {
            format!("{base}+{}", &hex[..12])
        } else {
            base.clone()
        };
        Ok((chart, base, recorded))
    }

    fn helm(&mut self) {
        let hrs = gr("helm.toolkit.fluxcd.io", "helmreleases");
        self.oci_sources();
        // A chartRef source with a new artifact starts a reconcile of its release, as
        // helm-controller's watch on the source does.
        let now = self.now;
        let all: Vec<Value> = self.store.list(&hrs, None).into_iter().cloned().collect();
        for hr in &all {
            let (name, ns) = name_ns(hr);
            if hr.pointer("/spec/chartRef").is_none()
                || annotation(hr, "sim.upkeep.dev/helm-controller-started").is_some()
            {
                continue;
            }
            let Ok((_, _, recorded)) = self.chart_of(hr, &ns) else {
                continue;
            };
            if recorded != s(hr, "/status/lastAttemptedRevision")
                && !s(hr, "/status/lastAttemptedRevision").is_empty()
            {
                let _ = self
                    .store
                    .modify(&hrs, &ns, &name, &self.ctx("helm-controller"), |h| {
                        set_annotation(
                            h,
                            "sim.upkeep.dev/helm-controller-started",
                            Some(&timestamp(now)),
                        );
                        set_condition(
                            h,
                            "Ready",
                            "Unknown",
                            "Progressing",
                            "Running 'upgrade' action with timeout of 5m0s",
                            now,
                        );
                    });
            }
        }
        let takes = self.t.helm_upgrade;
        for (hr, generation) in self.due_reconciles(
            &hrs,
            "helm-controller",
            "Running 'upgrade' action with timeout of 5m0s",
            takes,
        ) {
            let (name, ns) = name_ns(&hr);
            let ctx = self.ctx("helm-controller");
            let now = self.now;
            let (chart, desired, recorded) = match self.chart_of(&hr, &ns) {
                Ok(x) => x,
                Err(msg) => {
                    let _ = self.store.modify(&hrs, &ns, &name, &ctx, |h| {
                        set_annotation(h, "sim.upkeep.dev/helm-controller-started", None);
                        h["status"]["observedGeneration"] = json!(generation);
                        set_condition(h, "Ready", "False", "SourceNotReady", &msg, now);
                    });
                    continue;
                }
            };
            // What runs is the newest deployed revision (a failed one is recorded above it);
            // Helm numbers every revision, failed ones too.
            let deployed = hr
                .pointer("/status/history")
                .and_then(Value::as_array)
                .and_then(|h| h.iter().find(|x| s(x, "/status") != "failed"))
                .cloned();
            let current = deployed
                .as_ref()
                .map(|d| s(d, "/chartVersion").to_string())
                .unwrap_or_default();
            let current_base = current.split('+').next().unwrap_or("").to_string();
            let revision = hr
                .pointer("/status/history/0/version")
                .and_then(Value::as_i64)
                .unwrap_or(0);
            let action = if deployed.is_none() {
                "install"
            } else {
                "upgrade"
            };
            let fault = self.fault(|f| matches!(f, ClusterFault::HelmUpgradeFails { release } if *release == name || *release == format!("{ns}/{name}")));
            let refusal = if chart == "longhorn" && revision > 0 {
                longhorn_refusal(&current_base, &desired)
            } else {
                None
            };
            // Helm installs into `spec.targetNamespace` (else the release's namespace), which
            // must exist unless `install.createNamespace` (helm-controller `install.go`).
            let install_ns = match s(&hr, "/spec/targetNamespace") {
                "" => ns.clone(),
                t => t.to_string(),
            };
            let missing_ns = action == "install"
                && hr.pointer("/spec/install/createNamespace") != Some(&json!(true))
                && self
                    .store
                    .try_get(&gr("", "namespaces"), "", &install_ns)
                    .is_none();
            let failure = match (&fault, refusal) {
                (Some(_), _) => Some("simulated failure".to_string()),
                (None, Some(r)) => Some(r),
                (None, None) if missing_ns => Some(format!(
                    "create: failed to create: namespaces \"{install_ns}\" not found"
                )),
                (None, None) => None,
            };
            if let Some(f) = fault {
                self.used.push(f);
            }
            let release = format!("{ns}/{name}.v{}", revision + 1);
            let verb = if action == "install" {
                "Install"
            } else {
                "Upgrade"
            };
            let _ = self.store.modify(&hrs, &ns, &name, &ctx, |h| {
                set_annotation(h, "sim.upkeep.dev/helm-controller-started", None);
                h["status"]["observedGeneration"] = json!(generation);
                h["status"]["lastAttemptedRevision"] = json!(recorded);
                h["status"]["lastAttemptedGeneration"] = json!(generation);
                match &failure {
                    Some(why) => {
                        // No `.vN` here, unlike the success message (helm-controller `upgrade.go`).
                        let msg = format!("Helm {action} failed for release {ns}/{name} with chart {chart}@{recorded}: pre-{action} hooks failed: 1 error occurred:\n\t* job {chart}-pre-{action} failed: {why}");
                        set_condition(h, "Ready", "False", &format!("{verb}Failed"), &msg, now);
                        set_condition(h, "Released", "False", &format!("{verb}Failed"), &msg, now);
                        // The default `upgrade.remediation.retries: 0`: no rollback, stalled.
                        set_condition(h, "Stalled", "True", "RetriesExceeded", &format!("Failed to {action} after 1 attempt(s)"), now);
                        h["status"]["failures"] = json!(h["status"]["failures"].as_i64().unwrap_or(0) + 1);
                        // Helm keeps the failed revision, and helm-controller records it first
                        // in the history (`status: failed`); the deployed one stays below it.
                        let mut history = h["status"]["history"].as_array().cloned().unwrap_or_default();
                        history.insert(0, helm_snapshot((&name, &ns), &chart, &recorded, revision + 1, now, "failed"));
                        history.truncate(5);
                        h["status"]["history"] = json!(history);
                    }
                    None => {
                        let msg = format!("Helm {action} succeeded for release {release} with chart {chart}@{recorded}");
                        set_condition(h, "Ready", "True", &format!("{verb}Succeeded"), &msg, now);
                        set_condition(h, "Released", "True", &format!("{verb}Succeeded"), &msg, now);
                        if let Some(Value::Array(cs)) = h["status"].get_mut("conditions") {
                            cs.retain(|c| c["type"] != "Stalled");
                        }
                        let mut history = h["status"]["history"].as_array().cloned().unwrap_or_default();
                        history.insert(0, helm_snapshot((&name, &ns), &chart, &recorded, revision + 1, now, "deployed"));
                        for old in history.iter_mut().skip(1) {
                            old["status"] = json!("superseded");
                        }
                        history.truncate(5);
                        h["status"]["history"] = json!(history);
                        if let Some(m) = h["status"].as_object_mut() {
                            m.remove("failures");
                        }
                    }
                }
            });
            if failure.is_none() {
                self.render(&hr, &chart, &desired, &ns);
            }
        }
    }

    /// What an installed or upgraded chart makes, for the charts the emulator knows:
    /// Longhorn's objects (or its manager's new image), and the flux-instance chart's
    /// FluxInstance (controlplaneio-fluxcd/charts `charts/flux-instance/templates/instance.yaml`).
    fn render(&mut self, hr: &Value, chart: &str, version: &str, hr_ns: &str) {
        // Helm installs into `spec.targetNamespace` when set, else the release's namespace
        // (helm-controller `api/v2` `GetReleaseNamespace`); values come from the release's.
        let ns = match s(hr, "/spec/targetNamespace") {
            "" => hr_ns,
            t => t,
        }
        .to_string();
        let ns = ns.as_str();
        // `install.createNamespace` creates the target namespace (helm-controller
        // `internal/action/install.go`, `CreateNamespace`); without it a missing namespace
        // fails the install as Helm does, and nothing is made.
        let namespaces = gr("", "namespaces");
        if self.store.try_get(&namespaces, "", ns).is_none() {
            if hr.pointer("/spec/install/createNamespace") != Some(&json!(true)) {
                return;
            }
            let ctx = self.ctx("helm-controller");
            let n = json!({"metadata": {"name": ns, "labels": {"kubernetes.io/metadata.name": ns}},
                "spec": {"finalizers": ["kubernetes"]}, "status": {"phase": "Active"}});
            let _ = self.store.create_with_status(&namespaces, "", n, &ctx);
        }
        match chart {
            "longhorn" => {
                let installed = self
                    .store
                    .list(&gr("apps", "daemonsets"), None)
                    .into_iter()
                    .any(|d| s(d, "/metadata/name") == "longhorn-manager");
                if installed {
                    self.longhorn_upgraded(version);
                } else {
                    let nodes: Vec<String> = {
                        let mut servers = Vec::new();
                        let mut agents = Vec::new();
                        for n in self.store.list(&gr("", "nodes"), None) {
                            let name = s(n, "/metadata/name").to_string();
                            if seed::is_server(n) {
                                servers.push(name)
                            } else {
                                agents.push(name)
                            }
                        }
                        servers.into_iter().chain(agents).collect()
                    };
                    let volumes = self
                        .store
                        .try_get(&gr("", "namespaces"), "", "kube-system")
                        .and_then(|n| annotation(n, "sim.upkeep.dev/longhorn-volumes"))
                        .and_then(|v| v.parse().ok())
                        .unwrap_or(3);
                    let ctx = self.ctx("longhorn-manager");
                    let _ = seed::longhorn_objects(self.store, ns, version, &nodes, volumes, &ctx);
                }
            }
            "flux-instance" => {
                let values = self.helm_values(hr, hr_ns);
                let i = values.get("instance").cloned().unwrap_or_else(|| json!({}));
                let or = |p: &str, d: &str| match s(&i, p) {
                    "" => d.to_string(),
                    v => v.to_string(),
                };
                let mut spec = json!({
                    "distribution": {
                        "version": or("/distribution/version", "2.x"),
                        "registry": or("/distribution/registry", "ghcr.io/fluxcd"),
                        "artifact": or("/distribution/artifact", "oci://ghcr.io/controlplaneio-fluxcd/flux-operator-manifests:latest"),
                    },
                    "components": i.get("components").cloned().unwrap_or_else(|| json!(["source-controller", "kustomize-controller", "helm-controller", "notification-controller"])),
                });
                if let Some(c) = i.get("cluster").and_then(Value::as_object) {
                    let kept: serde_json::Map<String, Value> = c
                        .iter()
                        .filter(|(_, v)| v.as_str() != Some(""))
                        .map(|(k, v)| (k.clone(), v.clone()))
                        .collect();
                    spec["cluster"] = Value::Object(kept);
                }
                if !s(&i, "/sync/url").is_empty() {
                    spec["sync"] = json!({"kind": or("/sync/kind", "GitRepository"), "url": s(&i, "/sync/url"),
                        "ref": s(&i, "/sync/ref"), "path": s(&i, "/sync/path"), "interval": or("/sync/interval", "1m")});
                }
                let hr_name = s(hr, "/metadata/name").to_string();
                let obj = json!({"apiVersion": "fluxcd.controlplane.io/v1", "kind": "FluxInstance",
                    "metadata": {"name": "flux", "namespace": ns, "labels": {
                        "helm.toolkit.fluxcd.io/name": hr_name, "helm.toolkit.fluxcd.io/namespace": hr_ns,
                        "app.kubernetes.io/managed-by": "Helm"}},
                    "spec": spec});
                let ctx = self.ctx("helm-controller");
                let _ = self.store.patch(
                    &gr("fluxcd.controlplane.io", "fluxinstances"),
                    ns,
                    "flux",
                    PatchKind::Apply { force: true },
                    &obj,
                    None,
                    &ctx,
                );
            }
            _ => {}
        }
    }

    /// A HelmRelease's values as helm-controller merges them: each `valuesFrom` in order
    /// (ConfigMap or Secret, `valuesKey` default `values.yaml`, missing ones skipped when
    /// `optional`), then `spec.values` on top (fluxcd/pkg `chartutil.ChartValuesFromReferences`).
    fn helm_values(&self, hr: &Value, ns: &str) -> Value {
        let mut merged = json!({});
        for r in hr
            .pointer("/spec/valuesFrom")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let kind = match s(r, "/kind") {
                "" => "ConfigMap",
                k => k,
            };
            let plural = if kind == "Secret" {
                "secrets"
            } else {
                "configmaps"
            };
            let key = match s(r, "/valuesKey") {
                "" => "values.yaml",
                k => k,
            };
            let Some(src) = self.store.try_get(&gr("", plural), ns, s(r, "/name")) else {
                continue;
            };
            let raw = s(
                src,
                &format!("/data/{}", key.replace('~', "~0").replace('/', "~1")),
            )
            .to_string();
            let text = if kind == "Secret" {
                use base64::Engine;
                base64::engine::general_purpose::STANDARD
                    .decode(raw.as_bytes())
                    .ok()
                    .and_then(|b| String::from_utf8(b).ok())
                    .unwrap_or_default()
            } else {
                raw
            };
            if let Ok(v) = serde_saphyr::from_str::<Value>(&text) {
                deep_merge(&mut merged, &v);
            }
        }
        if let Some(v) = hr.pointer("/spec/values") {
            deep_merge(&mut merged, v);
        }
        merged
    }

    /// Helm has upgraded the chart: the longhorn-manager DaemonSet now rolls out its new image
    /// node by node. Longhorn's own upgrade goes on after Helm returns (`longhorn_rollout`).
    fn longhorn_upgraded(&mut self, version: &str) {
        let ctx = self.ctx("helm-controller");
        let v = format!("v{}", version.trim_start_matches('v'));
        let now = self.now;
        let ns = self.longhorn_ns();
        let _ = self.store.modify(
            &gr("apps", "daemonsets"),
            &ns,
            "longhorn-manager",
            &ctx,
            |d| {
                d["spec"]["template"]["spec"]["containers"][0]["image"] =
                    json!(format!("longhornio/longhorn-manager:{v}"));
                d["metadata"]["labels"]["app.kubernetes.io/version"] = json!(v);
                d["status"]["updatedNumberScheduled"] = json!(0);
                set_annotation(d, "sim.upkeep.dev/rollout-started", Some(&timestamp(now)));
            },
        );
    }

    /// longhorn-manager after a chart upgrade (`upgrade.Upgrade` at manager start, then the
    /// instance-manager and engine-image controllers): once every manager pod runs the new image
    /// the DaemonSet reports it, `current-longhorn-version` is written, and the new engine
    /// image is deployed. Until then Longhorn is still upgrading, whatever Helm said.
    fn longhorn_rollout(&mut self) {
        let ns = self.longhorn_ns();
        let ns = ns.as_str();
        let ds = gr("apps", "daemonsets");
        let Some(d) = self.store.try_get(&ds, ns, "longhorn-manager").cloned() else {
            return;
        };
        let Some(started) = annotation(&d, "sim.upkeep.dev/rollout-started").and_then(since) else {
            return;
        };
        if elapsed(self.now, Some(started)) < self.t.longhorn_manager {
            return;
        }
        let version = s(&d, "/metadata/labels/app.kubernetes.io~1version").to_string();
        let ctx = self.ctx("longhorn-manager");
        let generation = d
            .pointer("/metadata/generation")
            .and_then(Value::as_i64)
            .unwrap_or(1);
        let _ = self.store.modify(&ds, ns, "longhorn-manager", &ctx, |d| {
            set_annotation(d, "sim.upkeep.dev/rollout-started", None);
            let desired = d["status"]["desiredNumberScheduled"].clone();
            d["status"]["updatedNumberScheduled"] = desired.clone();
            d["status"]["numberAvailable"] = desired.clone();
            d["status"]["numberReady"] = desired;
            d["status"]["observedGeneration"] = json!(generation);
        });
        let _ = self.store.modify(
            &gr("longhorn.io", "settings"),
            ns,
            "current-longhorn-version",
            &ctx,
            |st| {
                st["value"] = json!(version);
            },
        );
        let image = format!("longhornio/longhorn-engine:{version}");
        let _ = self.store.create_with_status(
            &gr("longhorn.io", "engineimages"),
            ns,
            json!({"metadata": {"name": format!("ei-{}", &digest(&image)[..8])}, "spec": {"image": image},
                "status": {"state": "deployed", "refCount": 0, "incompatible": false}}),
            &ctx,
        );
        if let Some(ClusterFault::VolumeDegradesAfterUpgrade { volume }) =
            self.fault(|f| matches!(f, ClusterFault::VolumeDegradesAfterUpgrade { .. }))
        {
            let now = self.now;
            let _ = self
                .store
                .modify(&gr("longhorn.io", "volumes"), ns, &volume, &ctx, |vol| {
                    vol["status"]["robustness"] = json!("degraded");
                    set_condition(
                        vol,
                        "Scheduled",
                        "False",
                        "ReplicaSchedulingFailure",
                        "replica on the upgraded node failed to rebuild",
                        now,
                    );
                });
            self.used
                .push(ClusterFault::VolumeDegradesAfterUpgrade { volume });
        }
    }

    /// longhorn-manager's instance-manager PodDisruptionBudgets (`syncInstanceManagerPDB`):
    /// one `minAvailable: 1` PDB per instance manager while its node is schedulable. Once the
    /// node is cordoned it is removed if `canDeleteInstanceManagerPDB` agrees: no volume still
    /// attached to the node, and (unless `node-drain-policy` is `always-allow`) no replica on
    /// it without a healthy copy elsewhere (here: a volume of one replica whose node it is).
    fn longhorn_pdbs(&mut self) {
        let ns = self.longhorn_ns();
        let ns = ns.as_str();
        let pdbs = gr("policy", "poddisruptionbudgets");
        let policy = self
            .store
            .try_get(&gr("longhorn.io", "settings"), ns, "node-drain-policy")
            .map(|st| s(st, "/value").to_string())
            .unwrap_or_default();
        let managers: Vec<(String, String)> = self
            .store
            .list(&gr("", "pods"), Some(ns))
            .into_iter()
            .filter(|p| s(p, "/metadata/labels/longhorn.io~1component") == "instance-manager")
            .map(|p| {
                (
                    s(p, "/metadata/name").to_string(),
                    s(p, "/spec/nodeName").to_string(),
                )
            })
            .collect();
        for (im, node) in managers {
            let cordoned = self
                .store
                .try_get(&gr("", "nodes"), "", &node)
                .is_some_and(|n| n.pointer("/spec/unschedulable") == Some(&json!(true)));
            let volumes = self.store.list(&gr("longhorn.io", "volumes"), Some(ns));
            let attached = volumes.iter().any(|v| {
                s(v, "/status/currentNodeID") == node && s(v, "/status/state") == "attached"
            });
            let last_replica = policy != "always-allow"
                && volumes.iter().any(|v| {
                    v.pointer("/spec/numberOfReplicas").and_then(Value::as_u64) == Some(1)
                        && s(v, "/status/currentNodeID") == node
                });
            let exists = self.store.try_get(&pdbs, ns, &im).is_some();
            let ctx = self.ctx("longhorn-manager");
            if cordoned && !attached && !last_replica && exists {
                let _ = self.store.delete(&pdbs, ns, &im);
            } else if !cordoned && !exists {
                let _ = self.store.create_with_status(
                    &pdbs,
                    ns,
                    seed::instance_manager_pdb(ns, &node),
                    &ctx,
                );
            }
        }
    }

    // ----- kube-controller-manager's disruption controller ------------------------------------

    /// Every PodDisruptionBudget's status from the pods it selects (`disruption.go`, `trySync`):
    /// expected pods, healthy (Ready) pods, desired healthy from `minAvailable` or
    /// `maxUnavailable` (a number or a percentage of the expected pods), and
    /// `disruptionsAllowed = currentHealthy - desiredHealthy`, never below 0.
    fn disruption_controller(&mut self) {
        let g = gr("policy", "poddisruptionbudgets");
        let all: Vec<Value> = self.store.list(&g, None).into_iter().cloned().collect();
        for pdb in all {
            let (name, ns) = name_ns(&pdb);
            let sel =
                label_selector_from_object(pdb.pointer("/spec/selector").unwrap_or(&Value::Null));
            let pods: Vec<&Value> = self
                .store
                .list(&gr("", "pods"), Some(&ns))
                .into_iter()
                .filter(|p| labels_match(&sel, p))
                .filter(|p| !matches!(s(p, "/status/phase"), "Succeeded" | "Failed"))
                .collect();
            let expected = pods.len() as i64;
            let healthy = pods
                .iter()
                .filter(|p| {
                    p.pointer("/metadata/deletionTimestamp").is_none()
                        && p.pointer("/status/conditions")
                            .and_then(Value::as_array)
                            .is_some_and(|cs| {
                                cs.iter()
                                    .any(|c| c["type"] == "Ready" && c["status"] == "True")
                            })
                })
                .count() as i64;
            let amount = |v: &Value| match v {
                Value::Number(n) => n.as_i64(),
                Value::String(p) => p
                    .strip_suffix('%')
                    .and_then(|p| p.parse::<i64>().ok())
                    .map(|p| (p * expected + 99) / 100),
                _ => None,
            };
            let desired = match (
                pdb.pointer("/spec/minAvailable"),
                pdb.pointer("/spec/maxUnavailable"),
            ) {
                (Some(m), _) => amount(m).unwrap_or(0),
                (None, Some(m)) => (expected - amount(m).unwrap_or(0)).max(0),
                (None, None) => 0,
            };
            let allowed = (healthy - desired).max(0);
            let generation = pdb
                .pointer("/metadata/generation")
                .and_then(Value::as_i64)
                .unwrap_or(1);
            let status = json!({"disruptionsAllowed": allowed, "currentHealthy": healthy, "desiredHealthy": desired,
                "expectedPods": expected, "observedGeneration": generation});
            let same = [
                "disruptionsAllowed",
                "currentHealthy",
                "desiredHealthy",
                "expectedPods",
                "observedGeneration",
            ]
            .iter()
            .all(|k| pdb["status"].get(*k) == status.get(*k));
            if !same {
                let _ =
                    self.store
                        .modify(&g, &ns, &name, &self.ctx("kube-controller-manager"), |p| {
                            for (k, v) in status.as_object().into_iter().flatten() {
                                p["status"][k] = v.clone();
                            }
                        });
            }
        }
    }

    // ----- flux-operator ----------------------------------------------------------------------

    fn flux(&mut self) {
        let fis = gr("fluxcd.controlplane.io", "fluxinstances");
        let takes = self.t.flux_upgrade;
        for (fi, _generation) in
            self.due_reconciles(&fis, "flux-operator", "Reconciliation in progress", takes)
        {
            let (name, ns) = name_ns(&fi);
            let ctx = self.ctx("flux-operator");
            let now = self.now;
            let current = s(&fi, "/status/lastAppliedRevision")
                .split('@')
                .next()
                .unwrap_or("")
                .to_string();
            let desired = resolve_flux_version(s(&fi, "/spec/distribution/version"), &current);
            let refusal = match (
                versions::parse(&current, Scheme::Semver),
                versions::parse(&desired, Scheme::Semver),
            ) {
                // flux-operator `builder.IsCompatibleVersion`: the major or the minor alone lower.
                (Ok(c), Ok(d)) if d.major < c.major || d.minor < c.minor => Some(format!(
                    "build failed: downgrading from {current} to {desired} is not supported, reinstall needed"
                )),
                (_, Err(e)) => Some(format!("invalid distribution version: {e}")),
                _ => None,
            };
            let changes = desired != current;
            let failure = if refusal.is_none() && changes {
                self.fault(|f| matches!(f, ClusterFault::FluxUpgradeFails))
            } else {
                None
            };
            if let Some(f) = failure {
                self.used.push(f);
                let now = self.now;
                let _ = self.store.modify(&fis, &ns, &name, &ctx, |f| {
                    set_annotation(f, "sim.upkeep.dev/flux-operator-started", None);
                    f["status"]["lastAttemptedRevision"] = json!(format!("{desired}@sha256:{}", digest(&desired)));
                    set_condition(f, "Ready", "False", "ReconciliationFailed",
                        "reconciliation failed: Deployment/flux-system/source-controller status: 'InProgress': timeout waiting for health check", now);
                });
                continue;
            }
            let rev = format!("{desired}@sha256:{}", digest(&desired));
            let _ = self.store.modify(&fis, &ns, &name, &ctx, |f| {
                set_annotation(f, "sim.upkeep.dev/flux-operator-started", None);
                f["status"]["lastAttemptedRevision"] = json!(rev);
                match &refusal {
                    Some(why) => {
                        set_condition(f, "Ready", "False", "BuildFailed", why, now);
                        set_condition(f, "Stalled", "True", "BuildFailed", why, now);
                    }
                    None => {
                        f["status"]["lastAppliedRevision"] = json!(rev);
                        set_condition(f, "Ready", "True", "ReconciliationSucceeded", "Reconciliation finished in 45s", now);
                        if let Some(Value::Array(cs)) = f["status"].get_mut("conditions") {
                            cs.retain(|c| c["type"] != "Stalled");
                        }
                        let mut history = f["status"]["history"].as_array().cloned().unwrap_or_default();
                        history.insert(0, json!({"digest": format!("sha256:{}", digest(&rev)), "firstReconciled": timestamp(now),
                            "lastReconciled": timestamp(now), "lastReconciledDuration": "45s", "lastReconciledStatus": "ReconciliationSucceeded",
                            "totalReconciliations": 1, "metadata": {"flux": desired}}));
                        history.truncate(5);
                        f["status"]["history"] = json!(history);
                    }
                }
            });
            if refusal.is_none() {
                let crd = gr("apiextensions.k8s.io", "customresourcedefinitions");
                let _ = self.store.modify(
                    &crd,
                    "",
                    "gitrepositories.source.toolkit.fluxcd.io",
                    &ctx,
                    |c| {
                        c["metadata"]["labels"]["app.kubernetes.io/version"] = json!(desired);
                    },
                );
                let deployments: Vec<(String, String)> = self
                    .store
                    .list(&gr("apps", "deployments"), Some(&ns))
                    .into_iter()
                    .filter(|d| s(d, "/metadata/labels/app.kubernetes.io~1part-of") == "flux")
                    .map(name_ns)
                    .collect();
                for (d, dns) in deployments {
                    let _ = self
                        .store
                        .modify(&gr("apps", "deployments"), &dns, &d, &ctx, |d| {
                            d["metadata"]["labels"]["app.kubernetes.io/version"] = json!(desired);
                        });
                }
            }
        }
    }

    /// The sourceRef of a Kustomization, as (namespace, name), when it has an artifact.
    fn source_of(&self, k: &Value) -> Option<(String, String)> {
        let (_, ns) = name_ns(k);
        let src_ns = match s(k, "/spec/sourceRef/namespace") {
            "" => ns,
            n => n.to_string(),
        };
        let key = (src_ns, s(k, "/spec/sourceRef/name").to_string());
        self.artifacts.contains_key(&key).then_some(key)
    }

    /// Flux objects the emulator cannot build (no artifact) only become Ready at their new
    /// generation.
    fn kustomizations(&mut self) {
        for g in [
            gr("kustomize.toolkit.fluxcd.io", "kustomizations"),
            gr("source.toolkit.fluxcd.io", "gitrepositories"),
            gr("source.toolkit.fluxcd.io", "helmrepositories"),
        ] {
            let stale: Vec<(String, String, i64)> = self
                .store
                .list(&g, None)
                .into_iter()
                .filter(|k| self.source_of(k).is_none())
                .filter_map(|k| {
                    let generation = k
                        .pointer("/metadata/generation")
                        .and_then(Value::as_i64)
                        .unwrap_or(0);
                    let observed = k
                        .pointer("/status/observedGeneration")
                        .and_then(Value::as_i64)
                        .unwrap_or(0);
                    (generation != observed).then(|| {
                        let (n, ns) = name_ns(k);
                        (n, ns, generation)
                    })
                })
                .collect();
            let now = self.now;
            for (name, ns, generation) in stale {
                let _ = self
                    .store
                    .modify(&g, &ns, &name, &self.ctx("kustomize-controller"), |k| {
                        set_condition(
                            k,
                            "Ready",
                            "True",
                            "ReconciliationSucceeded",
                            "Applied revision: main",
                            now,
                        );
                        k["status"]["observedGeneration"] = json!(generation);
                    });
            }
        }
    }

    // ----- Flux's source-controller and kustomize-controller ------------------------------------

    /// source-controller: a GitRepository whose repository the emulator reads carries its
    /// artifact's revision.
    fn sources(&mut self) {
        let g = gr("source.toolkit.fluxcd.io", "gitrepositories");
        let now = self.now;
        for ((ns, name), a) in self.artifacts {
            let Some(cur) = self.store.try_get(&g, ns, name) else {
                continue;
            };
            if s(cur, "/status/artifact/revision") == a.revision {
                continue;
            }
            let generation = cur
                .pointer("/metadata/generation")
                .and_then(Value::as_i64)
                .unwrap_or(1);
            let msg = format!("stored artifact for revision '{}'", a.revision);
            let _ = self
                .store
                .modify(&g, ns, name, &self.ctx("source-controller"), |r| {
                    r["status"]["artifact"] = json!({"revision": a.revision,
                        "lastUpdateTime": timestamp(now), "path": format!("gitrepository/{ns}/{name}/latest.tar.gz")});
                    r["status"]["observedGeneration"] = json!(generation);
                    set_condition(r, "Ready", "True", "Succeeded", &msg, now);
                });
        }
    }

    /// kustomize-controller: every Kustomization whose source has an artifact is built from its
    /// path, substituted, and applied (server-side, forced, as `kustomize-controller`) when its
    /// generation or revision changed, its interval passed, or a reconcile was requested;
    /// suspended ones are left alone.
    fn kustomize(&mut self) {
        self.sources();
        let g = gr("kustomize.toolkit.fluxcd.io", "kustomizations");
        let all: Vec<Value> = self.store.list(&g, None).into_iter().cloned().collect();
        for k in all {
            let Some(src) = self.source_of(&k) else {
                continue;
            };
            if k.pointer("/spec/suspend") == Some(&json!(true)) {
                continue;
            }
            let Some(a) = self.artifacts.get(&src) else {
                continue;
            };
            let (name, ns) = name_ns(&k);
            let generation = k
                .pointer("/metadata/generation")
                .and_then(Value::as_i64)
                .unwrap_or(1);
            let interval = flux::duration_secs(s(&k, "/spec/interval")).unwrap_or(600);
            let last = annotation(&k, "sim.upkeep.dev/kustomize-reconciled").and_then(since);
            let requested = k
                .pointer("/metadata/annotations/reconcile.fluxcd.io~1requestedAt")
                .and_then(Value::as_str)
                .map(str::to_string);
            let due = k
                .pointer("/status/observedGeneration")
                .and_then(Value::as_i64)
                != Some(generation)
                || s(&k, "/status/lastAttemptedRevision") != a.revision
                || last.is_none_or(|t| (self.now - t).num_seconds() >= interval as i64)
                || requested
                    .as_deref()
                    .is_some_and(|r| r != s(&k, "/status/lastHandledReconcileAt"));
            if !due {
                continue;
            }
            let result = self.apply_kustomization(&k, a);
            let now = self.now;
            let revision = a.revision.clone();
            let _ = self
                .store
                .modify(&g, &ns, &name, &self.ctx("kustomize-controller"), |k| {
                    set_annotation(
                        k,
                        "sim.upkeep.dev/kustomize-reconciled",
                        Some(&timestamp(now)),
                    );
                    k["status"]["observedGeneration"] = json!(generation);
                    k["status"]["lastAttemptedRevision"] = json!(revision);
                    if let Some(r) = &requested {
                        k["status"]["lastHandledReconcileAt"] = json!(r);
                    }
                    match &result {
                        Ok(entries) => {
                            k["status"]["lastAppliedRevision"] = json!(revision);
                            k["status"]["inventory"] = json!({"entries": entries});
                            set_condition(
                                k,
                                "Ready",
                                "True",
                                "ReconciliationSucceeded",
                                &format!("Applied revision: {revision}"),
                                now,
                            );
                        }
                        Err(why) => {
                            set_condition(k, "Ready", "False", "ReconciliationFailed", why, now);
                        }
                    }
                });
        }
    }

    /// Build, substitute and apply one Kustomization; its inventory entries, or why it failed.
    fn apply_kustomization(&mut self, k: &Value, a: &Artifact) -> Result<Vec<Value>, String> {
        let (kname, kns) = name_ns(k);
        let components: Vec<String> = k
            .pointer("/spec/components")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|c| c.as_str().map(str::to_string))
            .collect();
        let patches: Vec<Value> = k
            .pointer("/spec/patches")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        let docs = super::kustomize::flux_build(a, s(k, "/spec/path"), &components, &patches)
            .map_err(|e| format!("kustomize build failed: {e}"))?;
        let mut vars: std::collections::BTreeMap<String, String> = Default::default();
        for from in k
            .pointer("/spec/postBuild/substituteFrom")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let (kind, from_name) = (s(from, "/kind"), s(from, "/name"));
            let plural = if kind == "Secret" {
                "secrets"
            } else {
                "configmaps"
            };
            match self.store.try_get(&gr("", plural), &kns, from_name) {
                Some(o) => {
                    for (key, v) in o
                        .get("data")
                        .and_then(Value::as_object)
                        .into_iter()
                        .flatten()
                    {
                        let v = v.as_str().unwrap_or("");
                        let v = if kind == "Secret" {
                            use base64::Engine;
                            base64::engine::general_purpose::STANDARD
                                .decode(v)
                                .ok()
                                .and_then(|b| String::from_utf8(b).ok())
                                .unwrap_or_default()
                        } else {
                            v.to_string()
                        };
                        vars.insert(key.clone(), v);
                    }
                }
                None if from.get("optional") == Some(&json!(true)) => {}
                None => {
                    return Err(format!(
                        "post build failed: substitute from '{kind}/{from_name}' error: {plural} \"{from_name}\" not found"
                    ));
                }
            }
        }
        // `substitute` wins over `substituteFrom`.
        for (key, v) in k
            .pointer("/spec/postBuild/substitute")
            .and_then(Value::as_object)
            .into_iter()
            .flatten()
        {
            vars.insert(key.clone(), v.as_str().unwrap_or("").to_string());
        }
        // Substituted only when some variable is defined (fluxcd/pkg `SubstituteVariables`:
        // `len(vars) > 0`), strictly from kustomize-controller v1.9 (Flux 2.9) on, where
        // `StrictPostBuildSubstitutions` is on by default.
        let substitutes = k.pointer("/spec/postBuild").is_some() && !vars.is_empty();
        let strict = self.flux_minor().is_none_or(|m| m >= 9);
        let target_ns = s(k, "/spec/targetNamespace").to_string();
        let ctx = self.ctx("kustomize-controller");
        let mut entries = Vec::new();
        // Staged as fluxcd/pkg `ssa.ResourceManager.ApplyAllStaged` does: CustomResourceDefinitions
        // and Namespaces first, then everything else (a Kustomization in a namespace the same
        // build creates is applied after it).
        let mut docs = docs;
        docs.sort_by_key(|r| {
            !matches!(
                r.obj.get("kind").and_then(Value::as_str),
                Some("CustomResourceDefinition" | "Namespace")
            )
        });
        for super::kustomize::Res { file, obj: raw } in docs {
            let disabled = flux::flux_annotation(&raw, "substitute") == Some("disabled")
                || raw.pointer("/metadata/labels/kustomize.toolkit.fluxcd.io~1substitute")
                    == Some(&json!("disabled"));
            let obj: Value = if substitutes && !disabled {
                flux::try_substitute_value(&raw, &vars, strict).map_err(|e| {
                    format!(
                        "post build failed for '{}/{}': {e}",
                        s(&raw, "/kind"),
                        s(&raw, "/metadata/name")
                    )
                })?
            } else {
                raw
            };
            let kind = s(&obj, "/kind").to_string();
            let api = s(&obj, "/apiVersion").to_string();
            let group = api.rsplit_once('/').map_or("", |(g, _)| g).to_string();
            let Some(t) = self
                .store
                .types()
                .find(|t| t.kind == kind && t.group == group)
                .cloned()
            else {
                return Err(format!(
                    "{file}: no matches for kind \"{kind}\" in version \"{api}\""
                ));
            };
            // targetNamespace is the generated kustomization's `namespace:`, which names
            // Namespace objects too.
            let mut obj = obj;
            if kind == "Namespace" && !target_ns.is_empty() {
                obj["metadata"]["name"] = json!(target_ns);
            }
            let name = s(&obj, "/metadata/name").to_string();
            let ns = if !t.namespaced {
                String::new()
            } else if !target_ns.is_empty() {
                target_ns.clone()
            } else {
                match s(&obj, "/metadata/namespace") {
                    "" => kns.clone(),
                    n => n.to_string(),
                }
            };
            if t.namespaced {
                obj["metadata"]["namespace"] = json!(ns);
            }
            // kustomize-controller labels what it applies with its Kustomization.
            if !obj["metadata"]["labels"].is_object() {
                obj["metadata"]["labels"] = json!({});
            }
            obj["metadata"]["labels"]["kustomize.toolkit.fluxcd.io/name"] = json!(kname);
            obj["metadata"]["labels"]["kustomize.toolkit.fluxcd.io/namespace"] = json!(kns);
            let exists = self.store.try_get(&t.gr(), &ns, &name).is_some();
            if !(exists && flux::flux_annotation(&obj, "ssa") == Some("IfNotPresent")) {
                self.store
                    .patch(
                        &t.gr(),
                        &ns,
                        &name,
                        PatchKind::Apply { force: true },
                        &obj,
                        None,
                        &ctx,
                    )
                    .map_err(|e| format!("{kind}/{ns}/{name} dry-run failed: {}", e.message))?;
            }
            entries.push(flux::inventory_id(&obj, &ns));
        }
        Ok(entries)
    }

    // ----- k3s etcd snapshots and Longhorn backups --------------------------------------------

    fn snapshot_jobs(&mut self) {
        let jobs = gr("batch", "jobs");
        let pending: Vec<Value> = self
            .store
            .list(&jobs, None)
            .into_iter()
            .filter(|j| j.pointer("/status/conditions").is_none())
            .filter(|j| {
                let cmd = job_command(j);
                cmd.iter().any(|a| a == "etcd-snapshot")
            })
            .cloned()
            .collect();
        for j in pending {
            let (name, ns) = name_ns(&j);
            let created = since(s(&j, "/metadata/creationTimestamp"));
            if elapsed(self.now, created) < self.t.snapshot {
                continue;
            }
            let nodes: Vec<Value> = self
                .store
                .list(&gr("", "nodes"), None)
                .into_iter()
                .cloned()
                .collect();
            let fault = self.fault(|f| matches!(f, ClusterFault::EtcdSnapshotFails { .. }));
            match snapshot_run(&j, &nodes) {
                Ok((node, prefix)) if fault.is_some() => {
                    let Some(ClusterFault::EtcdSnapshotFails { message }) = fault else {
                        continue;
                    };
                    let snap = format!("{prefix}-{node}-{}", self.now.timestamp());
                    let ctx = self.ctx("k3s");
                    let _ = self.store.create_with_status(
                        &gr("k3s.cattle.io", "etcdsnapshotfiles"),
                        "",
                        json!({"metadata": {"name": format!("local-{snap}-{}", &digest(&snap)[..6])},
                            "spec": {"snapshotName": snap, "nodeName": node, "location": format!("file:///var/lib/rancher/k3s/server/db/snapshots/{snap}")},
                            "status": {"readyToUse": false, "creationTime": timestamp(self.now),
                                "error": {"time": timestamp(self.now), "message": message}}}),
                        &ctx,
                    );
                    self.job_pod(
                        &j,
                        &node,
                        Some(&format!(
                            "level=fatal msg=\"Error: see server log for details: {message}\""
                        )),
                    );
                    self.finish_job(
                        &ns,
                        &name,
                        false,
                        "BackoffLimitExceeded",
                        "Job has reached the specified backoff limit",
                    );
                    self.used.push(ClusterFault::EtcdSnapshotFails { message });
                }
                Ok((node, prefix)) => {
                    let snap = format!("{prefix}-{node}-{}", self.now.timestamp());
                    let ctx = self.ctx("k3s");
                    let _ = self.store.create_with_status(
                        &gr("k3s.cattle.io", "etcdsnapshotfiles"),
                        "",
                        json!({"metadata": {"name": format!("local-{snap}-{}", &digest(&snap)[..6])},
                            "spec": {"snapshotName": snap, "nodeName": node, "location": format!("file:///var/lib/rancher/k3s/server/db/snapshots/{snap}")},
                            "status": {"readyToUse": true, "size": "24576032", "creationTime": timestamp(self.now)}}),
                        &ctx,
                    );
                    self.job_pod(&j, &node, None);
                    self.finish_job(&ns, &name, true, "", "");
                }
                Err((node, why)) => {
                    self.job_pod(&j, &node, Some(&why));
                    self.finish_job(
                        &ns,
                        &name,
                        false,
                        "BackoffLimitExceeded",
                        "Job has reached the specified backoff limit",
                    );
                }
            }
        }
    }

    /// The pod a Job ran, terminated: the job-controller's labels, and the container's exit.
    /// With `terminationMessagePolicy: FallbackToLogsOnError` the kubelet puts the end of the
    /// log into the termination message, so a failure can be read without `kubectl logs`.
    fn job_pod(&mut self, job: &Value, node: &str, error: Option<&str>) {
        let (name, ns) = name_ns(job);
        let container = job
            .pointer("/spec/template/spec/containers/0")
            .cloned()
            .unwrap_or(Value::Null);
        let fallback = s(&container, "/terminationMessagePolicy") == "FallbackToLogsOnError";
        let mut terminated = json!({"exitCode": if error.is_some() { 1 } else { 0 },
            "reason": if error.is_some() { "Error" } else { "Completed" },
            "finishedAt": timestamp(self.now)});
        if let (Some(e), true) = (error, fallback) {
            terminated["message"] = json!(e);
        }
        let pod = json!({"metadata": {"name": format!("{name}-{}", &digest(&name)[..5]),
                "labels": {"job-name": name, "batch.kubernetes.io/job-name": name, "controller-uid": digest(&name)}},
            "spec": {"nodeName": node, "restartPolicy": "Never", "containers": [container]},
            "status": {"phase": if error.is_some() { "Failed" } else { "Succeeded" },
                "containerStatuses": [{"name": s(job, "/spec/template/spec/containers/0/name"), "ready": false, "restartCount": 0,
                    "image": s(job, "/spec/template/spec/containers/0/image"), "state": {"terminated": terminated}}]}});
        let ctx = self.ctx("job-controller");
        let _ = self
            .store
            .create_with_status(&gr("", "pods"), &ns, pod, &ctx);
    }

    /// Longhorn's backup target controller: the `BackupTarget` `default` (1.8 on) becomes
    /// available once it has a URL (the simulated store is always reachable).
    fn longhorn_backup_target(&mut self) {
        let g = gr("longhorn.io", "backuptargets");
        let ns = self.longhorn_ns();
        let ns = ns.as_str();
        let Some(t) = self.store.try_get(&g, ns, "default").cloned() else {
            return;
        };
        let available = !s(&t, "/spec/backupTargetURL").is_empty();
        if t.pointer("/status/available") != Some(&json!(available)) {
            let _ = self.store.modify(&g, ns, "default", &self.ctx("longhorn-manager"), |b| {
                b["status"]["available"] = json!(available);
                b["status"]["conditions"] = if available {
                    json!([])
                } else {
                    json!([{"type": "Unavailable", "status": "True", "reason": "", "message": "backup target URL is empty"}])
                };
            });
        }
    }

    /// Whether Longhorn has a usable backup target: the `BackupTarget` `default` when that
    /// kind holds it (1.8 on), else the `backup-target` setting.
    fn longhorn_target(&self) -> bool {
        let ns = self.longhorn_ns();
        let ns = ns.as_str();
        match self
            .store
            .try_get(&gr("longhorn.io", "backuptargets"), ns, "default")
        {
            Some(t) => t.pointer("/status/available") == Some(&json!(true)),
            None => self
                .store
                .try_get(&gr("longhorn.io", "settings"), ns, "backup-target")
                .is_some_and(|st| !s(st, "/value").is_empty()),
        }
    }

    fn longhorn_backups(&mut self) {
        let target = self.longhorn_target();
        for (plural, ready_field) in [("systembackups", "state"), ("snapshots", "readyToUse")] {
            let g = gr("longhorn.io", plural);
            let pending: Vec<(String, String)> = self
                .store
                .list(&g, None)
                .into_iter()
                .filter(|o| o.pointer(&format!("/status/{ready_field}")).is_none())
                .filter(|o| {
                    elapsed(self.now, since(s(o, "/metadata/creationTimestamp"))) >= self.t.snapshot
                })
                .map(name_ns)
                .collect();
            for (name, ons) in pending {
                let _ = self.store.modify(&g, &ons, &name, &self.ctx("longhorn-manager"), |o| {
                    if !o.get("status").is_some_and(Value::is_object) {
                        o["status"] = json!({});
                    }
                    if plural == "snapshots" {
                        o["status"]["readyToUse"] = json!(true);
                    } else if !target {
                        o["status"]["state"] = json!("Error");
                        o["status"]["lastSyncedAt"] = Value::Null;
                        o["status"]["conditions"] = json!([{"type": "Error", "status": "True", "message": "backup target is not set"}]);
                    } else {
                        o["status"]["state"] = json!("Ready");
                    }
                });
            }
        }
    }
}

/// SUC's `latestHash`: a digest of the resolved version, the service account and the secrets
/// (upstream `DigestStatus`), not of the whole spec, so changing `concurrency`, `nodeSelector`
/// or `window` does not run nodes that are done again.
/// Helm's `MergeMaps`: maps merge recursively, anything else replaces.
fn deep_merge(into: &mut Value, from: &Value) {
    match (into, from) {
        (Value::Object(a), Value::Object(b)) => {
            for (k, v) in b {
                match a.get_mut(k) {
                    Some(x) if x.is_object() && v.is_object() => deep_merge(x, v),
                    _ => {
                        a.insert(k.clone(), v.clone());
                    }
                }
            }
        }
        (a, b) => *a = b.clone(),
    }
}

fn plan_hash(plan: &Value) -> String {
    let mut h = String::from(s(plan, "/spec/version"));
    h.push('\n');
    h.push_str(s(plan, "/spec/serviceAccountName"));
    if let Some(secrets) = plan.pointer("/spec/secrets") {
        h.push('\n');
        h.push_str(&secrets.to_string());
    }
    digest(&h)[..40].to_string()
}

/// Whether a Plan's `spec.window` (`days`, `startTime`, `endTime`, `timeZone`, as SUC reads
/// it with kured's `timewindow`) is open at `now`. No window: always. The day is today's (in the
/// window's zone), also after midnight in a window that wraps; no days, or a window that does not
/// parse, never opens (SUC logs an error and creates no Job). Days are English names or their
/// first two or three letters.
pub fn window_open(window: Option<&Value>, now: DateTime<Utc>) -> bool {
    use chrono::{Datelike, NaiveTime, Timelike};
    let Some(w) = window.filter(|w| w.is_object()) else {
        return true;
    };
    let tz: chrono_tz::Tz = match s(w, "/timeZone") {
        "" => chrono_tz::UTC,
        z => match z.parse() {
            Ok(tz) => tz,
            Err(_) => return false,
        },
    };
    let time = |k: &str| {
        let v = s(w, k);
        NaiveTime::parse_from_str(v, "%H:%M")
            .or_else(|_| NaiveTime::parse_from_str(v, "%H:%M:%S"))
            .ok()
    };
    let (Some(start), Some(end)) = (time("/startTime"), time("/endTime")) else {
        return false;
    };
    let local = now.with_timezone(&tz);
    let day_ok = |d: chrono::Weekday| {
        let days: Vec<String> = w
            .get("days")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .map(|d| d.to_ascii_lowercase())
            .collect();
        days.iter().any(|x| {
            let full = [
                "monday",
                "tuesday",
                "wednesday",
                "thursday",
                "friday",
                "saturday",
                "sunday",
            ][d.num_days_from_monday() as usize];
            (x.len() == 2 || x.len() == 3 || x.len() == full.len()) && full.starts_with(x.as_str())
        })
    };
    let t = NaiveTime::from_hms_opt(local.hour(), local.minute(), local.second())
        .unwrap_or(NaiveTime::MIN);
    if !day_ok(local.weekday()) {
        return false;
    }
    if start == end {
        t == start
    } else if start < end {
        t >= start && t < end
    } else {
        t >= start || t < end
    }
}

/// What the SUC reads of a node for one Plan (name, the Plan's label and progress annotation,
/// the kubelet version), so that a pass over 500 nodes does not copy 500 whole nodes.
fn slim(n: &Value, label: &str, key: &str) -> Value {
    let mut labels = serde_json::Map::new();
    if let Some(v) = n.pointer("/metadata/labels").and_then(|l| l.get(label)) {
        labels.insert(label.to_string(), v.clone());
    }
    let mut annotations = serde_json::Map::new();
    if let Some(v) = n.pointer("/metadata/annotations").and_then(|a| a.get(key)) {
        annotations.insert(key.to_string(), v.clone());
    }
    json!({"metadata": {"name": n.pointer("/metadata/name"), "labels": labels, "annotations": annotations},
        "status": {"nodeInfo": {"kubeletVersion": n.pointer("/status/nodeInfo/kubeletVersion")}}})
}

fn job_command(j: &Value) -> Vec<String> {
    j.pointer("/spec/template/spec/containers")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .flat_map(|c| {
            ["command", "args"].into_iter().flat_map(move |k| {
                c.get(k)
                    .and_then(Value::as_array)
                    .cloned()
                    .unwrap_or_default()
            })
        })
        .filter_map(|v| v.as_str().map(|s| s.to_string()))
        .flat_map(|s| s.split_whitespace().map(str::to_string).collect::<Vec<_>>())
        .collect()
}

/// The k3s data directory of a node: `--data-dir` in the `k3s.io/node-args` annotation k3s
/// writes, else the default.
pub fn node_data_dir(node: &Value) -> String {
    let args: Vec<String> = serde_json::from_str(
        node.pointer("/metadata/annotations/k3s.io~1node-args")
            .and_then(Value::as_str)
            .unwrap_or("[]"),
    )
    .unwrap_or_default();
    flag_value(&args, &["--data-dir", "-d"]).unwrap_or_else(|| "/var/lib/rancher/k3s".into())
}

fn flag_value(args: &[String], names: &[&str]) -> Option<String> {
    args.iter().enumerate().find_map(|(i, a)| {
        names.iter().find_map(|n| {
            if a == n {
                args.get(i + 1).cloned()
            } else {
                a.strip_prefix(&format!("{n}=")).map(str::to_string)
            }
        })
    })
}

/// What running `k3s etcd-snapshot save` in this Job's pod does, as k3s would: the node it
/// ran on and the snapshot name prefix, or the node and the error it printed. It needs
/// (k3s `pkg/cli/etcdsnapshot`, `pkg/etcd`): a k3s binary that exists in the container (the
/// `rancher/k3s-upgrade` image keeps it at `/opt/k3s`, off PATH; `chroot /host` uses the
/// node's own), the server's data dir (the host's, through a hostPath mount or the chroot),
/// a server node with embedded etcd, and the host network (etcd listens on 127.0.0.1:2379).
fn snapshot_run(job: &Value, nodes: &[Value]) -> Result<(String, String), (String, String)> {
    let pod = job.pointer("/spec/template/spec").unwrap_or(&Value::Null);
    let selector = pod
        .get("nodeSelector")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    let node = match s(pod, "/nodeName") {
        "" => nodes.iter().find(|n| {
            selector
                .iter()
                .all(|(k, v)| n.pointer("/metadata/labels").and_then(|l| l.get(k)) == Some(v))
        }),
        name => nodes.iter().find(|n| s(n, "/metadata/name") == name),
    };
    let Some(node) = node else {
        return Err((String::new(), "no node matches the pod".into()));
    };
    let node_name = s(node, "/metadata/name").to_string();
    let err = |m: String| Err((node_name.clone(), m));
    let argv = job_command(job);
    let image = s(pod, "/containers/0/image");
    let repo = image.split([':', '@']).next().unwrap_or("");
    // hostPath mounts: container path -> host path.
    let volumes: Vec<(String, String)> = pod
        .pointer("/containers/0/volumeMounts")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|m| {
            let v = pod
                .get("volumes")?
                .as_array()?
                .iter()
                .find(|v| v["name"] == m["name"])?;
            Some((
                s(m, "/mountPath").to_string(),
                s(v, "/hostPath/path").to_string(),
            ))
        })
        .filter(|(_, h)| !h.is_empty())
        .collect();
    let to_host = |p: &str| {
        volumes.iter().find_map(|(m, h)| {
            let rest = p.strip_prefix(m.trim_end_matches('/'))?;
            (rest.is_empty() || rest.starts_with('/'))
                .then(|| format!("{}{rest}", h.trim_end_matches('/')).replace("//", "/"))
        })
    };
    let (binary, rest, chrooted) = match argv.first().map(String::as_str) {
        Some("chroot") => match argv.get(1).and_then(|r| to_host(r)) {
            Some(root) if root == "/" || root.is_empty() => (
                argv.get(2).cloned().unwrap_or_default(),
                &argv[3.min(argv.len())..],
                true,
            ),
            _ => {
                return err(format!(
                    "chroot: cannot change root directory to '{}': No such file or directory",
                    argv.get(1).map_or("", |x| x)
                ));
            }
        },
        Some(b) => (b.to_string(), &argv[1..], false),
        None => return err("no command".into()),
    };
    let found = if chrooted {
        matches!(binary.as_str(), "k3s" | "/usr/local/bin/k3s")
    } else {
        match repo.rsplit('/').next().unwrap_or("") {
            "k3s-upgrade" => binary == "/opt/k3s",
            "k3s" => matches!(binary.as_str(), "k3s" | "/bin/k3s"),
            _ => false,
        }
    };
    if !found {
        return err(format!(
            "exec: \"{binary}\": executable file not found in $PATH"
        ));
    }
    if !(rest.iter().any(|a| a == "etcd-snapshot")) {
        return err("not an etcd-snapshot command".into());
    }
    let wanted = node_data_dir(node);
    let data_dir =
        flag_value(rest, &["--data-dir", "-d"]).unwrap_or_else(|| "/var/lib/rancher/k3s".into());
    let on_host = if chrooted {
        Some(data_dir.clone())
    } else {
        to_host(&data_dir)
    };
    if on_host.as_deref() != Some(wanted.as_str()) {
        return err(format!(
            "level=fatal msg=\"Error: open {data_dir}/server/token: no such file or directory\""
        ));
    }
    if s(node, "/metadata/labels/node-role.kubernetes.io~1etcd") != "true" {
        return err(if seed::is_server(node) {
            "level=fatal msg=\"Error: etcd datastore disabled\"".into()
        } else {
            format!(
                "level=fatal msg=\"Error: open {data_dir}/server/token: no such file or directory\""
            )
        });
    }
    if pod.get("hostNetwork") != Some(&json!(true)) {
        return err("level=fatal msg=\"Error: etcd datastore is not started: context deadline exceeded: dial tcp 127.0.0.1:2379: connect: connection refused\"".into());
    }
    let prefix = flag_value(rest, &["--name"]).unwrap_or_else(|| "on-demand".into());
    Ok((node_name, prefix))
}

fn cordon_node(n: &mut Value, now: DateTime<Utc>) {
    n["spec"]["unschedulable"] = json!(true);
    let mut taints = n["spec"]["taints"].as_array().cloned().unwrap_or_default();
    if !taints
        .iter()
        .any(|t| s(t, "/key") == "node.kubernetes.io/unschedulable")
    {
        taints.push(json!({"key": "node.kubernetes.io/unschedulable", "effect": "NoSchedule", "timeAdded": timestamp(now)}));
    }
    n["spec"]["taints"] = json!(taints);
}

fn uncordon_node(n: &mut Value) {
    if let Some(spec) = n["spec"].as_object_mut() {
        spec.remove("unschedulable");
        if let Some(Value::Array(t)) = spec.get_mut("taints") {
            t.retain(|t| s(t, "/key") != "node.kubernetes.io/unschedulable");
            if t.is_empty() {
                spec.remove("taints");
            }
        }
    }
}

/// Why Longhorn's chart would refuse `current -> desired`, mirroring its pre-upgrade check.
pub fn longhorn_refusal(current: &str, desired: &str) -> Option<String> {
    let c = versions::parse(current, Scheme::Semver).ok()?;
    let d = versions::parse(desired, Scheme::Semver).ok()?;
    let (cv, dv) = (
        format!("v{}", current.trim_start_matches('v')),
        format!("v{}", desired.trim_start_matches('v')),
    );
    if d < c {
        return Some(format!(
            "failed to upgrade since downgrading from {cv} to {dv} is not supported"
        ));
    }
    if d.major != c.major || d.minor > c.minor + 1 {
        return Some(format!(
            "failed to upgrade since upgrading from {cv} to {dv} for minor version is not supported"
        ));
    }
    None
}

/// `2.8.x` resolves to the running patch when on 2.8, else to `.0`; exact versions stay.
fn resolve_flux_version(spec: &str, current: &str) -> String {
    let bare = spec.trim_start_matches('v');
    if let Some(line) = bare.strip_suffix(".x") {
        let cur = current.trim_start_matches('v');
        if cur.starts_with(&format!("{line}.")) {
            return format!("v{cur}");
        }
        return format!("v{line}.0");
    }
    format!("v{bare}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kube::ClusterSpec;
    use crate::kube::seed::seed;

    fn cluster() -> (Store, DateTime<Utc>) {
        let mut st = Store::new();
        let now = Utc::now();
        let _ = seed(&mut st, &ClusterSpec::default(), now);
        (st, now)
    }

    fn plan(name: &str, version: &str, server: bool) -> Value {
        seed::example_plan(name, version, server, 1)
    }

    fn run_until(
        st: &mut Store,
        mut now: DateTime<Utc>,
        faults: &[ClusterFault],
        done: impl Fn(&Store) -> bool,
    ) -> DateTime<Utc> {
        let t = Timings::default();
        for _ in 0..2000 {
            step(st, now, faults, &t);
            if done(st) {
                return now;
            }
            now += chrono::Duration::seconds(5);
        }
        panic!("the simulated cluster never got there");
    }

    /// The canonical server and agent Plans (the agent's prepares on the server's) at `version`.
    fn canonical_plans(st: &mut Store, now: DateTime<Utc>, version: &str) {
        let ctx = Ctx::new(now, "upkeep");
        for (name, server) in [("server-plan", true), ("agent-plan", false)] {
            let _ = st.create(
                &gr("upgrade.cattle.io", "plans"),
                "system-upgrade",
                plan(name, version, server),
                &ctx,
            );
        }
    }

    fn versions_of(st: &Store) -> Vec<String> {
        st.list(&gr("", "nodes"), None)
            .iter()
            .map(|n| s(n, "/status/nodeInfo/kubeletVersion").to_string())
            .collect()
    }

    #[test]
    fn servers_then_agents_one_at_a_time() {
        let (mut st, now) = cluster();
        let plans = gr("upgrade.cattle.io", "plans");
        canonical_plans(&mut st, now, "v1.33.5+k3s1");
        let mut max_cordoned = 0;
        let t = Timings::default();
        let mut now = now;
        let mut server_done_at = None;
        let mut first_agent_start = None;
        for _ in 0..200 {
            step(&mut st, now, &[], &t);
            let nodes: Vec<Value> = st
                .list(&gr("", "nodes"), None)
                .into_iter()
                .cloned()
                .collect();
            let cordoned = nodes
                .iter()
                .filter(|n| n.pointer("/spec/unschedulable").is_some())
                .count();
            max_cordoned = max_cordoned.max(cordoned);
            if server_done_at.is_none()
                && s(&nodes[nodes.len() - 1], "/status/nodeInfo/kubeletVersion") == "v1.33.5+k3s1"
            {
                server_done_at = Some(now);
            }
            if first_agent_start.is_none()
                && nodes[..2]
                    .iter()
                    .any(|n| n.pointer("/spec/unschedulable").is_some())
            {
                first_agent_start = Some(now);
            }
            now += chrono::Duration::seconds(5);
        }
        assert_eq!(versions_of(&st), vec!["v1.33.5+k3s1"; 3]);
        assert_eq!(max_cordoned, 1, "concurrency 1 across both plans' turns");
        assert!(
            first_agent_start >= server_done_at,
            "agents wait for the server plan"
        );
        let p = st
            .get(&plans, "system-upgrade", "agent-plan")
            .unwrap_or_default();
        assert_eq!(s(&p, "/status/latestVersion"), "v1.33.5-k3s1");
        assert!(p.pointer("/status/applying").is_none());
        let jobs = st.list(&gr("batch", "jobs"), Some("system-upgrade"));
        assert_eq!(jobs.len(), 3);
    }

    #[test]
    fn a_blocking_pdb_holds_the_drain_until_the_deadline() {
        let (mut st, now) = cluster();
        blocking(&mut st, now);
        let ctx = Ctx::new(now, "upkeep");
        let mut p = plan("agent-plan", "v1.33.5+k3s1", false);
        p["spec"]["jobActiveDeadlineSecs"] = json!(300);
        if let Some(m) = p["spec"].as_object_mut() {
            m.remove("prepare");
        }
        let _ = st.create(&gr("upgrade.cattle.io", "plans"), "system-upgrade", p, &ctx);
        run_until(&mut st, now, &[], |st| {
            st.get(
                &gr("upgrade.cattle.io", "plans"),
                "system-upgrade",
                "agent-plan",
            )
            .ok()
            .and_then(|p| p.pointer("/status/conditions").cloned())
            .is_some_and(|c| c.to_string().contains("JobFailed"))
        });
        let a1 = st.get(&gr("", "nodes"), "", "agent-1").unwrap_or_default();
        assert_eq!(s(&a1, "/status/nodeInfo/kubeletVersion"), "v1.33.4+k3s1");
        assert_eq!(
            a1.pointer("/spec/unschedulable"),
            Some(&json!(true)),
            "left cordoned, as the real SUC does"
        );
    }

    fn blocking(st: &mut Store, now: DateTime<Utc>) {
        seed::blocking_pdb(st, "agent-1", now);
    }

    /// An agent Plan without `prepare`, started on agent-1 by one step.
    fn agent_started(st: &mut Store, now: DateTime<Utc>) {
        let mut p = plan("agent-plan", "v1.33.5+k3s1", false);
        if let Some(m) = p["spec"].as_object_mut() {
            m.remove("prepare");
        }
        let ctx = Ctx::new(now, "upkeep");
        let _ = st.create(&gr("upgrade.cattle.io", "plans"), "system-upgrade", p, &ctx);
        step(st, now, &[], &Timings::default());
        let a1 = st.get(&gr("", "nodes"), "", "agent-1").unwrap_or_default();
        assert_eq!(
            a1.pointer("/spec/unschedulable"),
            Some(&json!(true)),
            "agent-1 started"
        );
    }

    fn patch_plan(st: &mut Store, now: DateTime<Utc>, patch: Value) {
        let _ = st.patch(
            &gr("upgrade.cattle.io", "plans"),
            "system-upgrade",
            "agent-plan",
            crate::kube::store::PatchKind::Merge,
            &patch,
            None,
            &Ctx::new(now, "upkeep"),
        );
    }

    #[test]
    fn a_node_its_plan_stops_selecting_loses_its_job_and_stays_cordoned() {
        let (mut st, now) = cluster();
        agent_started(&mut st, now);
        // The Plan now selects no node (how upkeep used to pause and halt).
        patch_plan(
            &mut st,
            now,
            json!({"spec": {"nodeSelector": {"matchLabels": {"upkeep.dev/halted": "true"}}}}),
        );
        let later = now + chrono::Duration::seconds(600);
        step(&mut st, later, &[], &Timings::default());
        let a1 = st.get(&gr("", "nodes"), "", "agent-1").unwrap_or_default();
        assert_eq!(s(&a1, "/status/nodeInfo/kubeletVersion"), "v1.33.4+k3s1");
        assert_eq!(
            a1.pointer("/spec/unschedulable"),
            Some(&json!(true)),
            "left cordoned, as the real SUC does"
        );
        assert!(
            st.list(&gr("batch", "jobs"), Some("system-upgrade"))
                .is_empty(),
            "the out-of-turn Job is deleted"
        );
        let p = st
            .get(
                &gr("upgrade.cattle.io", "plans"),
                "system-upgrade",
                "agent-plan",
            )
            .unwrap_or_default();
        assert!(p.pointer("/status/applying").is_none());
    }

    #[test]
    fn concurrency_zero_lets_the_node_in_progress_finish_and_starts_no_other() {
        let (mut st, now) = cluster();
        agent_started(&mut st, now);
        let hash = st
            .get(
                &gr("upgrade.cattle.io", "plans"),
                "system-upgrade",
                "agent-plan",
            )
            .map(|p| s(&p, "/status/latestHash").to_string())
            .unwrap_or_default();
        patch_plan(&mut st, now, json!({"spec": {"concurrency": 0}}));
        run_until(&mut st, now, &[], |st| {
            st.get(&gr("", "nodes"), "", "agent-1")
                .is_ok_and(|n| s(&n, "/status/nodeInfo/kubeletVersion") == "v1.33.5+k3s1")
        });
        let later = now + chrono::Duration::seconds(3600);
        step(&mut st, later, &[], &Timings::default());
        let a2 = st.get(&gr("", "nodes"), "", "agent-2").unwrap_or_default();
        assert_eq!(
            s(&a2, "/status/nodeInfo/kubeletVersion"),
            "v1.33.4+k3s1",
            "no new node"
        );
        let a1 = st.get(&gr("", "nodes"), "", "agent-1").unwrap_or_default();
        assert!(
            a1.pointer("/spec/unschedulable").is_none(),
            "uncordoned when done"
        );
        let p = st
            .get(
                &gr("upgrade.cattle.io", "plans"),
                "system-upgrade",
                "agent-plan",
            )
            .unwrap_or_default();
        assert_eq!(
            s(&p, "/status/latestHash"),
            hash,
            "concurrency is not in the hash"
        );
        // Resumed: the next node starts.
        patch_plan(&mut st, later, json!({"spec": {"concurrency": 1}}));
        step(&mut st, later, &[], &Timings::default());
        let a2 = st.get(&gr("", "nodes"), "", "agent-2").unwrap_or_default();
        assert_eq!(a2.pointer("/spec/unschedulable"), Some(&json!(true)));
    }

    #[test]
    fn plan_windows_gate_new_jobs_only() {
        let at = |t: &str| t.parse::<DateTime<Utc>>().unwrap_or_default();
        let w = json!({"days": ["saturday", "sun"], "startTime": "22:00", "endTime": "02:00", "timeZone": "Europe/Amsterdam"});
        // Saturday 2026-11-21 22:30 and Sunday 01:30 in Amsterdam (UTC+1).
        assert!(window_open(Some(&w), at("2026-11-21T21:30:00Z")));
        assert!(window_open(Some(&w), at("2026-11-22T00:30:00Z")));
        assert!(!window_open(Some(&w), at("2026-11-21T20:30:00Z")));
        // As kured reads it, the day is today's: Monday 01:00 is not in a Saturday/Sunday window.
        assert!(!window_open(Some(&w), at("2026-11-23T00:00:00Z")));
        assert!(window_open(None, at("2026-11-24T00:00:00Z")));
        let bad = json!({"days": ["monday"], "startTime": "25:99", "endTime": "02:00"});
        assert!(!window_open(Some(&bad), at("2026-11-24T00:00:00Z")));
        let no_days = json!({"startTime": "00:00", "endTime": "23:59"});
        assert!(!window_open(Some(&no_days), at("2026-11-24T12:00:00Z")));
    }

    /// A Job as upkeep built it before it was checked against k3s: `k3s` off PATH in the
    /// untagged k3s-upgrade image, no host mount, no host network.
    fn naive_snapshot_job(node: &str) -> Value {
        json!({"metadata": {"name": "snap", "namespace": "kube-system"},
            "spec": {"template": {"spec": {"nodeName": node, "containers": [{"name": "snapshot",
                "image": "rancher/k3s-upgrade", "command": ["k3s", "etcd-snapshot", "save", "--name", "p"]}]}}}})
    }

    fn working_snapshot_job(node: &str) -> Value {
        json!({"metadata": {"name": "snap", "namespace": "kube-system"},
            "spec": {"template": {"spec": {"nodeName": node, "hostNetwork": true,
                "volumes": [{"name": "host", "hostPath": {"path": "/"}}],
                "containers": [{"name": "snapshot", "image": "rancher/k3s-upgrade:v1.33.4-k3s1",
                    "command": ["/opt/k3s", "etcd-snapshot", "save", "--name", "p", "--data-dir", "/host/var/lib/rancher/k3s"],
                    "volumeMounts": [{"name": "host", "mountPath": "/host"}]}]}}}})
    }

    #[test]
    fn an_etcd_snapshot_job_needs_what_k3s_needs() {
        let now = Utc::now();
        let server = seed::node("server-1", true, "v1.33.4+k3s1", true, now);
        let agent = seed::node("agent-1", false, "v1.33.4+k3s1", false, now);
        let sqlite = seed::node("server-1", true, "v1.33.4+k3s1", false, now);
        let nodes = [server.clone(), agent];
        let err = |j: &Value, nodes: &[Value]| {
            snapshot_run(j, nodes)
                .err()
                .map(|e| e.1)
                .unwrap_or_default()
        };
        assert!(err(&naive_snapshot_job("server-1"), &nodes).contains("executable file not found"));
        assert_eq!(
            snapshot_run(&working_snapshot_job("server-1"), &nodes),
            Ok(("server-1".into(), "p".into()))
        );
        // Without the host's data dir there is no server token.
        let mut j = working_snapshot_job("server-1");
        j["spec"]["template"]["spec"]["volumes"] = json!([]);
        assert!(err(&j, &nodes).contains("server/token: no such file"));
        // Off the host network the supervisor on 127.0.0.1:6443 is not there.
        let mut j = working_snapshot_job("server-1");
        j["spec"]["template"]["spec"]["hostNetwork"] = json!(false);
        assert!(err(&j, &nodes).contains("127.0.0.1"));
        // On an agent there is no server token; on SQLite no etcd.
        assert!(err(&working_snapshot_job("agent-1"), &nodes).contains("server/token"));
        assert!(
            err(&working_snapshot_job("server-1"), &[sqlite]).contains("etcd datastore disabled")
        );
        // A node with its own --data-dir.
        let mut custom = server;
        custom["metadata"]["annotations"]["k3s.io/node-args"] =
            json!("[\"server\",\"--data-dir\",\"/srv/k3s\"]");
        assert!(err(&working_snapshot_job("server-1"), &[custom.clone()]).contains("server/token"));
        let mut j = working_snapshot_job("server-1");
        j["spec"]["template"]["spec"]["containers"][0]["command"][6] = json!("/host/srv/k3s");
        assert!(snapshot_run(&j, &[custom]).is_ok());
    }

    #[test]
    fn longhorn_lifts_an_instance_manager_pdb_once_its_node_is_cordoned_and_drained() {
        let (mut st, now) = cluster();
        step(&mut st, now, &[], &Timings::default());
        let pdbs = gr("policy", "poddisruptionbudgets");
        let im = seed::instance_manager_name("agent-1");
        let pdb = st.get(&pdbs, "longhorn-system", &im).unwrap_or_default();
        assert_eq!(pdb["spec"]["minAvailable"], 1);
        // The disruption controller: one Ready pod, one needed.
        assert_eq!(
            (
                pdb["status"]["expectedPods"].clone(),
                pdb["status"]["currentHealthy"].clone(),
                pdb["status"]["disruptionsAllowed"].clone()
            ),
            (json!(1), json!(1), json!(0))
        );
        // Cordoned with a volume still attached: kept.
        let ctx = Ctx::new(now, "test");
        let _ = st.modify(&gr("", "nodes"), "", "agent-1", &ctx, |n| {
            cordon_node(n, now)
        });
        step(&mut st, now, &[], &Timings::default());
        assert!(
            st.list(&gr("longhorn.io", "volumes"), Some("longhorn-system"))
                .iter()
                .any(|v| s(v, "/status/currentNodeID") == "agent-1"),
            "a volume is attached to agent-1"
        );
        assert!(
            st.get(&pdbs, "longhorn-system", &im).is_ok(),
            "kept while attached"
        );
        // Drained: its volumes moved, the PDB goes; uncordoned, it comes back.
        let mut w = World {
            store: &mut st,
            prev: now,
            now,
            faults: &[],
            t: &Timings::default(),
            used: Vec::new(),
            artifacts: &Artifacts::new(),
        };
        w.evict_workloads("agent-1");
        step(&mut st, now, &[], &Timings::default());
        assert!(st.get(&pdbs, "longhorn-system", &im).is_err(), "lifted");
        let _ = st.modify(&gr("", "nodes"), "", "agent-1", &ctx, uncordon_node);
        step(&mut st, now, &[], &Timings::default());
        assert!(st.get(&pdbs, "longhorn-system", &im).is_ok(), "back");
    }

    #[test]
    fn an_agent_job_waits_in_prepare_applying_and_uncordoned() {
        let (mut st, now) = cluster();
        let plans = gr("upgrade.cattle.io", "plans");
        canonical_plans(&mut st, now, "v1.33.5+k3s1");
        step(&mut st, now, &[], &Timings::default());
        let agent = st
            .get(&plans, "system-upgrade", "agent-plan")
            .unwrap_or_default();
        assert_eq!(
            agent["status"]["applying"],
            json!(["agent-1"]),
            "its Job exists, in prepare"
        );
        let a1 = st.get(&gr("", "nodes"), "", "agent-1").unwrap_or_default();
        assert!(
            a1.pointer("/spec/unschedulable").is_none(),
            "the cordon comes after prepare"
        );
        run_until(&mut st, now, &[], |st| {
            st.get(&gr("", "nodes"), "", "agent-1")
                .is_ok_and(|n| n.pointer("/spec/unschedulable").is_some())
        });
        let server = st.get(&gr("", "nodes"), "", "server-1").unwrap_or_default();
        assert_eq!(
            s(&server, "/status/nodeInfo/kubeletVersion"),
            "v1.33.5+k3s1"
        );
    }

    #[test]
    fn k3s_upgrade_refuses_a_lower_version_and_leaves_the_node_cordoned() {
        let (mut st, now) = cluster();
        let ctx = Ctx::new(now, "upkeep");
        let _ = st.create(
            &gr("upgrade.cattle.io", "plans"),
            "system-upgrade",
            plan("server-plan", "v1.33.3+k3s1", true),
            &ctx,
        );
        run_until(&mut st, now, &[], |st| {
            st.get(
                &gr("upgrade.cattle.io", "plans"),
                "system-upgrade",
                "server-plan",
            )
            .is_ok_and(|p| {
                p.to_string()
                    .contains("refusing to downgrade from v1.33.4+k3s1")
            })
        });
        let s1 = st.get(&gr("", "nodes"), "", "server-1").unwrap_or_default();
        assert_eq!(s(&s1, "/status/nodeInfo/kubeletVersion"), "v1.33.4+k3s1");
        assert_eq!(s1.pointer("/spec/unschedulable"), Some(&json!(true)));
    }

    #[test]
    fn longhorn_refuses_minor_skips_and_downgrades() {
        assert_eq!(longhorn_refusal("1.9.1", "1.10.2"), None);
        assert_eq!(longhorn_refusal("1.9.1", "1.9.2"), None);
        assert!(longhorn_refusal("1.6.2", "1.8.0").is_some_and(|m| {
            m.contains("upgrading from v1.6.2 to v1.8.0 for minor version is not supported")
        }));
        assert!(longhorn_refusal("1.9.1", "1.9.0").is_some());
        assert_eq!(resolve_flux_version("2.8.x", "v2.8.3"), "v2.8.3");
        assert_eq!(resolve_flux_version("2.9.x", "v2.8.3"), "v2.9.0");
    }

    #[test]
    fn helm_release_upgrade_and_failure() {
        let (mut st, now) = cluster();
        let hrs = gr("helm.toolkit.fluxcd.io", "helmreleases");
        let ctx = Ctx::new(now, "upkeep");
        let _ = st.patch(
            &hrs,
            "longhorn-system",
            "longhorn",
            crate::kube::store::PatchKind::Merge,
            &json!({"spec": {"chart": {"spec": {"version": "1.10.2"}}}}),
            None,
            &ctx,
        );
        let faults = [ClusterFault::VolumeDegradesAfterUpgrade { volume: "x".into() }];
        run_until(&mut st, now, &faults, |st| {
            st.get(&hrs, "longhorn-system", "longhorn")
                .is_ok_and(|h| s(&h, "/status/history/0/chartVersion") == "1.10.2")
        });
        let setting = |st: &Store| {
            st.get(
                &gr("longhorn.io", "settings"),
                "longhorn-system",
                "current-longhorn-version",
            )
            .map(|x| s(&x, "/value").to_string())
            .unwrap_or_default()
        };
        // Helm is done, Longhorn is not: its manager DaemonSet still rolls out.
        assert_eq!(setting(&st), "v1.9.1");
        let ds = st
            .get(
                &gr("apps", "daemonsets"),
                "longhorn-system",
                "longhorn-manager",
            )
            .unwrap_or_default();
        assert_eq!(ds["status"]["updatedNumberScheduled"], 0);
        run_until(&mut st, now, &faults, |st| setting(st) == "v1.10.2");
        let ds = st
            .get(
                &gr("apps", "daemonsets"),
                "longhorn-system",
                "longhorn-manager",
            )
            .unwrap_or_default();
        assert_eq!(ds["status"]["updatedNumberScheduled"], 3);
        let _ = st.patch(
            &hrs,
            "longhorn-system",
            "longhorn",
            crate::kube::store::PatchKind::Merge,
            &json!({"spec": {"chart": {"spec": {"version": "1.12.1"}}}}),
            None,
            &ctx,
        );
        run_until(&mut st, now, &[], |st| {
            st.get(&hrs, "longhorn-system", "longhorn")
                .is_ok_and(|h| h.to_string().contains("UpgradeFailed"))
        });
        let h = st
            .get(&hrs, "longhorn-system", "longhorn")
            .unwrap_or_default();
        assert_eq!(
            (
                s(&h, "/status/history/0/status"),
                s(&h, "/status/history/1/chartVersion"),
                s(&h, "/status/history/1/status")
            ),
            ("failed", "1.10.2", "deployed"),
            "the failed revision first; what runs, deployed, below it"
        );
    }
}

#[cfg(test)]
mod timing_tests {
    use super::*;
    use crate::kube::ClusterSpec;
    use crate::kube::seed::seed;

    /// However coarse the steps, simulated durations come out exact.
    #[test]
    fn coarse_steps_keep_simulated_time_exact() {
        let mut st = Store::new();
        let t0 = DateTime::parse_from_rfc3339("2026-11-21T00:00:00Z")
            .map(|t| t.with_timezone(&Utc))
            .unwrap_or_default();
        let spec = ClusterSpec {
            servers: 3,
            agents: 47,
            volumes: 0,
            longhorn_version: None,
            flux_version: None,
            ..ClusterSpec::default()
        };
        let _ = seed(&mut st, &spec, t0);
        let ctx = Ctx::new(t0, "upkeep");
        let plans = gr("upgrade.cattle.io", "plans");
        let mut server = tests_plan("server-plan", true);
        server["spec"]["concurrency"] = json!(1);
        let mut agent = tests_plan("agent-plan", false);
        agent["spec"]["concurrency"] = json!(10);
        let _ = st.create(&plans, "system-upgrade", server, &ctx);
        let _ = st.create(&plans, "system-upgrade", agent, &ctx);
        let t = Timings::default();
        let mut now = t0;
        let all_done = |st: &Store| {
            st.list(&gr("", "nodes"), None)
                .iter()
                .all(|n| s(n, "/status/nodeInfo/kubeletVersion") == "v1.33.5+k3s1")
        };
        let mut steps = 0;
        while !all_done(&st) && steps < 1000 {
            step(&mut st, now, &[], &t);
            now += chrono::Duration::seconds(1);
            steps += 1;
        }
        let fine = now - t0;
        // The same with steps of 7 minutes.
        let mut st2 = Store::new();
        let _ = seed(&mut st2, &spec, t0);
        let _ = st2.create(
            &plans,
            "system-upgrade",
            {
                let mut p = tests_plan("server-plan", true);
                p["spec"]["concurrency"] = json!(1);
                p
            },
            &ctx,
        );
        let _ = st2.create(
            &plans,
            "system-upgrade",
            {
                let mut p = tests_plan("agent-plan", false);
                p["spec"]["concurrency"] = json!(10);
                p
            },
            &ctx,
        );
        let mut now2 = t0;
        let mut prev2 = t0;
        for _ in 0..100 {
            step_since(&mut st2, prev2, now2, &[], &t);
            prev2 = now2;
            if all_done(&st2) {
                break;
            }
            now2 += chrono::Duration::seconds(420);
        }
        // Ideal: 3 servers x 90 s, then 5 waves of (10 s drain + 90 s); plus one step for the
        // agents to notice the server plan completed.
        assert!(
            fine.num_seconds() <= 3 * 90 + 5 * 100 + 5,
            "fine steps: {fine}"
        );
        let labels = |st: &Store| {
            st.list(&gr("batch", "jobs"), None)
                .iter()
                .filter_map(|j| {
                    j.pointer("/status/completionTime")
                        .and_then(Value::as_str)
                        .map(str::to_string)
                })
                .max()
        };
        let fine_end = labels(&st).unwrap_or_default();
        let coarse_end = labels(&st2).unwrap_or_default();
        let parse = |x: &str| {
            DateTime::parse_from_rfc3339(x)
                .map(|t| t.with_timezone(&Utc))
                .unwrap_or_default()
        };
        let drift = (parse(&coarse_end) - parse(&fine_end)).num_seconds();
        assert!(
            drift.abs() <= 1,
            "coarse steps end when fine ones do: {fine_end} vs {coarse_end}"
        );
    }

    fn tests_plan(name: &str, server: bool) -> Value {
        seed::example_plan(name, "v1.33.5+k3s1", server, 1)
    }
}
