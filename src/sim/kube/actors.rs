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

use super::patch::{label_selector_from_object, labels_match};
use super::seed::{self, digest, helm_snapshot};
use super::store::{Ctx, Gr, Store, gr, timestamp};
use super::{ClusterFault, Shared, Timings};
use crate::versions::{self, Scheme};

/// The simulated controllers, forever, one step per tick.
pub async fn run(shared: Arc<Shared>) {
    let mut prev = shared.clock.now();
    loop {
        let timings = shared.timings();
        tokio::time::sleep(timings.tick).await;
        let faults = shared.cluster_faults();
        let now = shared.clock.now();
        let used = {
            let mut store = shared.store();
            step_since(&mut store, prev, now, &faults, &timings)
        };
        prev = now;
        for f in used {
            shared.consume(&f);
        }
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
    let mut w = World {
        store,
        prev: prev.min(now),
        now,
        faults,
        t,
        used: Vec::new(),
    };
    w.suc();
    w.helm();
    w.flux();
    w.kustomizations();
    w.snapshot_jobs();
    w.longhorn_backups();
    w.used
}

struct World<'a> {
    store: &'a mut Store,
    prev: DateTime<Utc>,
    now: DateTime<Utc>,
    faults: &'a [ClusterFault],
    t: &'a Timings,
    used: Vec<ClusterFault>,
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
        let hash =
            digest(&serde_json::to_string(&plan["spec"]).unwrap_or_default())[..40].to_string();
        let selector =
            label_selector_from_object(plan.pointer("/spec/nodeSelector").unwrap_or(&Value::Null));
        let concurrency = plan
            .pointer("/spec/concurrency")
            .and_then(Value::as_u64)
            .unwrap_or(1)
            .max(1) as usize;
        let cordon = plan
            .pointer("/spec/cordon")
            .and_then(Value::as_bool)
            .unwrap_or(false);
        let drain = plan.pointer("/spec/drain").is_some_and(|d| !d.is_null());
        let deadline = Duration::from_secs(
            plan.pointer("/spec/jobActiveDeadlineSecs")
                .and_then(Value::as_u64)
                .unwrap_or(900),
        );
        let waiting_for = match plan.pointer("/spec/prepare/args").and_then(Value::as_array) {
            Some(a) if a.first().and_then(Value::as_str) == Some("prepare") => {
                a.get(1).and_then(Value::as_str).map(str::to_string)
            }
            _ => None,
        };
        // Whether the plan it prepares on is complete at this version, and since when. Like
        // k3s-upgrade's `prepare`, it also waits until every control-plane node runs the
        // version: a server plan that selects nothing (halted) is "complete" but prepares nothing.
        let servers_at_version = self
            .store
            .list(&gr("", "nodes"), None)
            .iter()
            .filter(|n| {
                n.pointer("/metadata/labels/node-role.kubernetes.io~1control-plane")
                    .is_some()
            })
            .all(|n| k3s(s(n, "/status/nodeInfo/kubeletVersion")).as_ref() == Some(&target));
        let prepared_at: Option<Option<DateTime<Utc>>> = match &waiting_for {
            None => Some(None),
            Some(other) => self.store.try_get(&plans, &ns, other).and_then(|o| {
                let c = o
                    .pointer("/status/conditions")
                    .and_then(Value::as_array)?
                    .iter()
                    .find(|c| s(c, "/type") == "Complete" && s(c, "/status") == "True")?;
                (s(o, "/spec/version") == version && servers_at_version)
                    .then(|| since(s(c, "/lastTransitionTime")))
            }),
        };
        let prepared = prepared_at.is_some();
        // Nothing starts before the plan existed or its prepare was satisfied; and a start with
        // no slot freed in this step happened no earlier than the previous look.
        let gate = [
            since(s(plan, "/metadata/creationTimestamp")),
            prepared_at.flatten(),
        ]
        .into_iter()
        .flatten()
        .max()
        .unwrap_or(self.prev)
        .min(self.now);
        let floor = gate.max(self.prev).min(self.now);
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
        // Nodes in flight first (also those of an older spec, and those the Plan no longer
        // selects: a node whose upgrade Job runs is finished, as with the real SUC).
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
        for n in nodes.iter().chain(&in_flight) {
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
                    // Why: the failed Job's condition says.
                    let why = self
                        .store
                        .try_get(&gr("batch", "jobs"), &ns, &job_name(&name, &node, &hash))
                        .and_then(|j| j.pointer("/status/conditions"))
                        .and_then(Value::as_array)
                        .and_then(|cs| cs.iter().find(|c| s(c, "/type") == "Failed"))
                        .map(|c| s(c, "/message").to_string())
                        .unwrap_or_else(|| "Job has reached the specified backoff limit".into());
                    failed.push((node, why))
                }
                "draining" | "upgrading" => {
                    if let Some((result, at)) =
                        self.advance_node(&name, &ns, n, &p, drain, deadline)
                    {
                        changed = true;
                        freed.push(at);
                        freed_all.push(at);
                        if p.hash == hash {
                            match result {
                                Ok(()) => done += 1,
                                Err(why) => failed.push((node, why)),
                            }
                        }
                    } else {
                        applying.push(node);
                    }
                }
                _ => {}
            }
        }
        // Start new nodes up to the concurrency.
        if prepared {
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
                self.start_node(
                    &name,
                    &ns,
                    &node,
                    &hash,
                    &version,
                    cordon || drain,
                    deadline,
                    at,
                );
                if running.is_some_and(|r| r > target) {
                    // k3s-upgrade refuses to go down; the node was cordoned first and stays so.
                    let why = format!(
                        "refusing to downgrade from {} to {version}",
                        s(&cur, "/status/nodeInfo/kubeletVersion")
                    );
                    self.finish_job(
                        &ns,
                        &job_name(&name, &node, &hash),
                        false,
                        "BackoffLimitExceeded",
                        &why,
                    );
                    let p = Progress {
                        hash: hash.clone(),
                        phase: "failed".into(),
                        since: Some(self.now),
                        target: version.clone(),
                    };
                    let now = self.now;
                    let _ = self.store.modify(
                        &gr("", "nodes"),
                        "",
                        &node,
                        &self.ctx("system-upgrade-controller"),
                        |n| {
                            set_annotation(n, &key, Some(&p.render(now)));
                        },
                    );
                    failed.push((node, why));
                    continue;
                }
                applying.push(node);
            }
        }
        let complete = done == nodes.len();
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
            } else if !prepared {
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
        cordon: bool,
        deadline: Duration,
        at: DateTime<Utc>,
    ) {
        let ctx = self.ctx("system-upgrade-controller");
        let now = at;
        let p = Progress {
            hash: hash.to_string(),
            phase: "draining".into(),
            since: Some(at),
            target: version.to_string(),
        };
        let key = progress_key(plan);
        let _ = self.store.modify(&gr("", "nodes"), "", node, &ctx, |n| {
            set_annotation(n, &key, Some(&p.render(now)));
            if cordon {
                cordon_node(n, now);
            }
        });
        let job = json!({
            "metadata": {"name": job_name(plan, node, hash), "namespace": ns,
                "labels": {"upgrade.cattle.io/plan": plan, "upgrade.cattle.io/node": node, "upgrade.cattle.io/version": version.replace('+', "-")}},
            "spec": {"activeDeadlineSeconds": deadline.as_secs(), "backoffLimit": 2,
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
                j["status"]["completionTime"] = json!(timestamp(now));
                if ok {
                    j["status"]["succeeded"] = json!(1);
                    set_condition(j, "Complete", "True", "", "", now);
                } else {
                    j["status"]["failed"] = json!(1);
                    set_condition(j, "Failed", "True", reason, message, now);
                }
            },
        );
    }

    /// Move one node's upgrade forward. `None`: still in progress; `Some(Ok)`: upgraded and
    /// labelled; `Some(Err(why))`: the Job failed.
    fn advance_node(
        &mut self,
        plan: &str,
        ns: &str,
        n: &Value,
        p: &Progress,
        drain: bool,
        deadline: Duration,
    ) -> Option<(Result<(), String>, DateTime<Utc>)> {
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
        if p.phase == "draining" {
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
            return self.advance_node(plan, ns, n, &next, drain, deadline);
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
            self.finish_job_at(ns, &job, true, "", "", done_at);
            Some((Ok(()), done_at))
        } else {
            fail(self, "BackoffLimitExceeded", "Job has reached the specified backoff limit (the node restarted k3s during the upgrade)".into())
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
            let observed = obj
                .pointer("/status/observedGeneration")
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

    fn helm(&mut self) {
        let hrs = gr("helm.toolkit.fluxcd.io", "helmreleases");
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
            let chart = s(&hr, "/spec/chart/spec/chart").to_string();
            let desired = s(&hr, "/spec/chart/spec/version").to_string();
            let current = s(&hr, "/status/history/0/chartVersion").to_string();
            let revision = hr
                .pointer("/status/history/0/version")
                .and_then(Value::as_i64)
                .unwrap_or(0);
            let fault = self.fault(|f| matches!(f, ClusterFault::HelmUpgradeFails { release } if *release == name || *release == format!("{ns}/{name}")));
            let refusal = if chart == "longhorn" {
                longhorn_refusal(&current, &desired)
            } else {
                None
            };
            let failure = match (&fault, refusal) {
                (Some(_), _) => Some("simulated failure".to_string()),
                (None, Some(r)) => Some(r),
                (None, None) => None,
            };
            if let Some(f) = fault {
                self.used.push(f);
            }
            let release = format!("{ns}/{name}.v{}", revision + 1);
            let _ = self.store.modify(&hrs, &ns, &name, &ctx, |h| {
                set_annotation(h, "sim.upkeep.dev/helm-controller-started", None);
                h["status"]["observedGeneration"] = json!(generation);
                h["status"]["lastAttemptedRevision"] = json!(desired);
                h["status"]["lastAttemptedGeneration"] = json!(generation);
                match &failure {
                    Some(why) => {
                        let msg = format!("Helm upgrade failed for release {release} with chart {chart}@{desired}: pre-upgrade hooks failed: 1 error occurred:\n\t* job {chart}-pre-upgrade failed: {why}");
                        set_condition(h, "Ready", "False", "UpgradeFailed", &msg, now);
                        set_condition(h, "Released", "False", "UpgradeFailed", &msg, now);
                        h["status"]["failures"] = json!(h["status"]["failures"].as_i64().unwrap_or(0) + 1);
                    }
                    None => {
                        let msg = format!("Helm upgrade succeeded for release {release} with chart {chart}@{desired}");
                        set_condition(h, "Ready", "True", "UpgradeSucceeded", &msg, now);
                        set_condition(h, "Released", "True", "UpgradeSucceeded", &msg, now);
                        let mut history = h["status"]["history"].as_array().cloned().unwrap_or_default();
                        history.insert(0, helm_snapshot(&chart, &desired, revision + 1, now, "deployed"));
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
            if failure.is_none() && chart == "longhorn" {
                self.longhorn_upgraded(&desired);
            }
        }
    }

    fn longhorn_upgraded(&mut self, version: &str) {
        let ctx = self.ctx("longhorn-manager");
        let v = format!("v{}", version.trim_start_matches('v'));
        let ns = seed::LONGHORN_NAMESPACE;
        let _ = self.store.modify(
            &gr("longhorn.io", "settings"),
            ns,
            "current-longhorn-version",
            &ctx,
            |st| {
                st["value"] = json!(v);
            },
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

    // ----- flux-operator ----------------------------------------------------------------------

    fn flux(&mut self) {
        let fis = gr("fluxcd.controlplane.io", "fluxinstances");
        let takes = self.t.flux_upgrade;
        for (fi, generation) in
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
                (Ok(c), Ok(d)) if (d.major, d.minor) < (c.major, c.minor) => Some(format!(
                    "downgrading from {current} to {desired} is not supported, reinstall needed"
                )),
                (_, Err(e)) => Some(format!("invalid distribution version: {e}")),
                _ => None,
            };
            let rev = format!("{desired}@sha256:{}", digest(&desired));
            let _ = self.store.modify(&fis, &ns, &name, &ctx, |f| {
                set_annotation(f, "sim.upkeep.dev/flux-operator-started", None);
                f["status"]["observedGeneration"] = json!(generation);
                f["status"]["lastAttemptedRevision"] = json!(rev);
                match &refusal {
                    Some(why) => set_condition(f, "Ready", "False", "BuildFailed", why, now),
                    None => {
                        f["status"]["lastAppliedRevision"] = json!(rev);
                        set_condition(f, "Ready", "True", "ReconciliationSucceeded", "Reconciliation finished in 45s", now);
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
                cmd.iter().any(|a| a == "etcd-snapshot") && cmd.iter().any(|a| a == "save")
            })
            .cloned()
            .collect();
        for j in pending {
            let (name, ns) = name_ns(&j);
            let created = since(s(&j, "/metadata/creationTimestamp"));
            if elapsed(self.now, created) < self.t.snapshot {
                continue;
            }
            let cmd = job_command(&j);
            let prefix = cmd
                .iter()
                .position(|a| a == "--name")
                .and_then(|i| cmd.get(i + 1).cloned())
                .or_else(|| {
                    cmd.iter()
                        .find_map(|a| a.strip_prefix("--name=").map(str::to_string))
                })
                .unwrap_or_else(|| "on-demand".into());
            let node = s(&j, "/spec/template/spec/nodeName").to_string();
            let servers: Vec<Value> = self
                .store
                .list(&gr("", "nodes"), None)
                .into_iter()
                .filter(|n| seed::is_server(n))
                .cloned()
                .collect();
            let node_obj = servers
                .iter()
                .find(|n| s(n, "/metadata/name") == node)
                .or(servers.first());
            let etcd = node_obj
                .is_some_and(|n| s(n, "/metadata/labels/node-role.kubernetes.io~1etcd") == "true");
            if !etcd {
                self.finish_job(
                    &ns,
                    &name,
                    false,
                    "BackoffLimitExceeded",
                    "etcd datastore disabled: snapshots need a server with embedded etcd",
                );
                continue;
            }
            let node = node_obj
                .map(|n| s(n, "/metadata/name").to_string())
                .unwrap_or_default();
            let snap = format!("{prefix}-{node}-{}", self.now.timestamp());
            let ctx = self.ctx("k3s");
            let _ = self.store.create_with_status(
                &gr("k3s.cattle.io", "etcdsnapshotfiles"),
                "",
                json!({"metadata": {"name": format!("local-{snap}")},
                    "spec": {"snapshotName": snap, "nodeName": node, "location": format!("file:///var/lib/rancher/k3s/server/db/snapshots/{snap}")},
                    "status": {"readyToUse": true, "size": "24576032", "creationTime": timestamp(self.now)}}),
                &ctx,
            );
            self.finish_job(&ns, &name, true, "", "");
        }
    }

    fn longhorn_backups(&mut self) {
        let ns = seed::LONGHORN_NAMESPACE;
        let target = self
            .store
            .try_get(&gr("longhorn.io", "settings"), ns, "backup-target")
            .map(|st| s(st, "/value").to_string())
            .unwrap_or_default();
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
            let target = target.clone();
            for (name, ons) in pending {
                let _ = self.store.modify(&g, &ons, &name, &self.ctx("longhorn-manager"), |o| {
                    if !o.get("status").is_some_and(Value::is_object) {
                        o["status"] = json!({});
                    }
                    if plural == "snapshots" {
                        o["status"]["readyToUse"] = json!(true);
                    } else if target.is_empty() {
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
    use crate::sim::kube::ClusterSpec;
    use crate::sim::kube::seed::seed;

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
        let ctx = Ctx::new(now, "upkeep");
        let _ = st.create(
            &plans,
            "system-upgrade",
            plan("server-plan", "v1.33.5+k3s1", true),
            &ctx,
        );
        let _ = st.create(
            &plans,
            "system-upgrade",
            plan("agent-plan", "v1.33.5+k3s1", false),
            &ctx,
        );
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

    #[test]
    fn a_node_in_progress_finishes_when_its_plan_stops_selecting_it() {
        let (mut st, now) = cluster();
        let plans = gr("upgrade.cattle.io", "plans");
        let ctx = Ctx::new(now, "upkeep");
        let mut p = plan("agent-plan", "v1.33.5+k3s1", false);
        if let Some(m) = p["spec"].as_object_mut() {
            m.remove("prepare");
        }
        let _ = st.create(&plans, "system-upgrade", p, &ctx);
        let t = Timings::default();
        step(&mut st, now, &[], &t);
        let a1 = st.get(&gr("", "nodes"), "", "agent-1").unwrap_or_default();
        assert_eq!(
            a1.pointer("/spec/unschedulable"),
            Some(&json!(true)),
            "agent-1 started"
        );
        // The Plan now selects no node (a paused or halted rollout).
        let _ = st.patch(
            &plans,
            "system-upgrade",
            "agent-plan",
            crate::sim::kube::store::PatchKind::Merge,
            &json!({"spec": {"nodeSelector": {"matchLabels": {"upkeep.dev/halted": "true"}}}}),
            None,
            &ctx,
        );
        run_until(&mut st, now, &[], |st| {
            st.get(&gr("", "nodes"), "", "agent-1")
                .is_ok_and(|n| s(&n, "/status/nodeInfo/kubeletVersion") == "v1.33.5+k3s1")
        });
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
            crate::sim::kube::store::PatchKind::Merge,
            &json!({"spec": {"chart": {"spec": {"version": "1.10.2"}}}}),
            None,
            &ctx,
        );
        let faults = [ClusterFault::VolumeDegradesAfterUpgrade { volume: "x".into() }];
        run_until(&mut st, now, &faults, |st| {
            st.get(&hrs, "longhorn-system", "longhorn")
                .is_ok_and(|h| s(&h, "/status/history/0/chartVersion") == "1.10.2")
        });
        let setting = st
            .get(
                &gr("longhorn.io", "settings"),
                "longhorn-system",
                "current-longhorn-version",
            )
            .unwrap_or_default();
        assert_eq!(s(&setting, "/value"), "v1.10.2");
        let _ = st.patch(
            &hrs,
            "longhorn-system",
            "longhorn",
            crate::sim::kube::store::PatchKind::Merge,
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
            s(&h, "/status/history/0/chartVersion"),
            "1.10.2",
            "what runs is unchanged"
        );
    }
}

#[cfg(test)]
mod timing_tests {
    use super::*;
    use crate::sim::kube::ClusterSpec;
    use crate::sim::kube::seed::seed;

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
