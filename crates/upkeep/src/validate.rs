//! Checks over what runs: the preflight before a rollout may start, as a pure function over
//! [`Observed`]. (Validation against the pre-upgrade baseline builds on the same findings.)

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::cluster::{Observed, Running};
use crate::layout::route::Route;
use crate::model::Component;
use crate::versions::{self, Version};

/// One check and what it found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Finding {
    pub check: String,
    pub ok: bool,
    pub detail: String,
}

/// The preflight verdict: every check, and whether all passed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Verdict {
    pub ok: bool,
    pub findings: Vec<Finding>,
}

/// What policy lets through.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PreflightPolicy {
    /// Start a Longhorn upgrade with degraded (not faulted) volumes.
    pub allow_degraded_volumes: bool,
    /// The agent Plan drains its nodes (servers are only cordoned).
    pub drain: bool,
}

fn finding(check: &str, ok: bool, detail: impl Into<String>) -> Finding {
    Finding {
        check: check.to_string(),
        ok,
        detail: detail.into(),
    }
}

/// Whether draining the agents (what the agent Plan does; servers are only cordoned) can get
/// past the PodDisruptionBudgets. Longhorn's instance-manager PDBs do not count: Longhorn
/// removes each once its node is cordoned and its volumes are detached, unless the node holds
/// a volume's only replica.
fn drain_finding(observed: &Observed) -> Finding {
    let agents: Vec<&str> = observed
        .nodes
        .iter()
        .filter(|n| !n.server)
        .map(|n| n.name.as_str())
        .collect();
    let mut blocking: Vec<String> = observed
        .blocking_pdbs
        .iter()
        .filter(|p| !p.longhorn_instance_manager)
        .filter_map(|p| {
            let on: Vec<&str> = p
                .nodes
                .iter()
                .map(String::as_str)
                .filter(|n| agents.contains(n))
                .collect();
            (!on.is_empty())
                .then(|| format!("{}/{} (pods on {})", p.namespace, p.name, on.join(", ")))
        })
        .collect();
    blocking.extend(
        observed
            .volumes
            .iter()
            .filter(|v| v.replicas == 1 && agents.contains(&v.node.as_str()))
            .map(|v| {
                format!(
                    "Longhorn volume {} has one replica on {}: Longhorn keeps that node's instance-manager PodDisruptionBudget (give it more replicas, or set node-drain-policy)",
                    v.name, v.node
                )
            }),
    );
    let longhorn = observed
        .blocking_pdbs
        .iter()
        .filter(|p| p.longhorn_instance_manager)
        .count();
    finding(
        "drains",
        blocking.is_empty(),
        if !blocking.is_empty() {
            format!(
                "PodDisruptionBudgets with 0 allowed disruptions would block draining the agents: {}",
                blocking.join("; ")
            )
        } else if longhorn > 0 {
            format!(
                "no PodDisruptionBudget blocks a drain ({longhorn} Longhorn instance-manager PDBs, which Longhorn lifts once a node is cordoned)"
            )
        } else {
            "no PodDisruptionBudget blocks a drain".into()
        },
    )
}

/// Whether `component` may go from what runs to `target` now. A failed preflight changes
/// nothing; its findings say what to fix.
pub fn preflight(
    component: &Component,
    target: &Version,
    observed: &Observed,
    policy: PreflightPolicy,
) -> Verdict {
    let mut f = Vec::new();
    let running = observed.running(component);
    match running.lowest(component.scheme) {
        None => f.push(finding(
            "path",
            false,
            format!("cannot tell which {} version runs", component.name),
        )),
        Some(from) => match versions::check_hop(&from, target, &component.path_rule) {
            Ok(()) => f.push(finding(
                "path",
                true,
                format!("{from} -> {target} is a legal step"),
            )),
            Err(e) => f.push(finding("path", false, e.to_string())),
        },
    }
    if let Running::Mixed { nodes } = &running {
        let list: Vec<String> = nodes.iter().map(|(n, v)| format!("{n} {v}")).collect();
        f.push(finding(
            "mixed",
            true,
            format!("the cluster is mixed: {}", list.join(", ")),
        ));
    }
    match component.name.as_str() {
        "k3s" => {
            let not_ready: Vec<&str> = observed
                .nodes
                .iter()
                .filter(|n| !n.ready)
                .map(|n| n.name.as_str())
                .collect();
            f.push(finding(
                "nodes ready",
                not_ready.is_empty() && !observed.nodes.is_empty(),
                if observed.nodes.is_empty() {
                    "no nodes".into()
                } else if not_ready.is_empty() {
                    format!("all {} nodes Ready", observed.nodes.len())
                } else {
                    format!("not Ready: {}", not_ready.join(", "))
                },
            ));
            let cordoned: Vec<&str> = observed
                .nodes
                .iter()
                .filter(|n| n.unschedulable)
                .map(|n| n.name.as_str())
                .collect();
            f.push(finding(
                "nodes schedulable",
                cordoned.is_empty(),
                if cordoned.is_empty() {
                    "no node is cordoned".into()
                } else {
                    format!(
                        "cordoned by someone else: {} (uncordon them, or finish that work first)",
                        cordoned.join(", ")
                    )
                },
            ));
            f.push(finding(
                "system-upgrade-controller",
                observed.suc_installed,
                if observed.suc_installed { "the Plan CRD is served".to_string() } else { "the Plan CRD (plans.upgrade.cattle.io) is not served: install the system-upgrade-controller".to_string() },
            ));
            // The user's Plans that carry the version in git are how it is applied (adopted);
            // any other Plan that upgrades k3s would fight.
            let adopted: Vec<String> = match observed.routes.get(&component.name) {
                Some(Route::Git { places }) => places.iter().map(|p| p.object.clone()).collect(),
                _ => Vec::new(),
            };
            let others: Vec<String> = observed
                .plans
                .iter()
                .filter(|p| !p.upkeeps() && p.image.contains("k3s-upgrade"))
                .filter(|p| !adopted.contains(&format!("Plan {}/{}", p.namespace, p.name)))
                .map(|p| format!("{}/{}", p.namespace, p.name))
                .collect();
            f.push(finding(
                "other k3s Plans",
                others.is_empty(),
                if others.is_empty() {
                    "no other Plan upgrades k3s".to_string()
                } else {
                    format!(
                        "another Plan upgrades k3s on these nodes and would fight upkeep's: {} (delete it: kubectl -n {} delete plan {}; upkeep's Plans are upkeep-server and upkeep-agent)",
                        others.join(", "),
                        others.first().and_then(|o| o.split('/').next()).unwrap_or(""),
                        others.iter().map(|o| o.rsplit('/').next().unwrap_or(o)).collect::<Vec<_>>().join(" ")
                    )
                },
            ));
            if policy.drain {
                f.push(drain_finding(observed));
            }
        }
        "longhorn" => {
            let faulted: Vec<&str> = observed
                .volumes
                .iter()
                .filter(|v| v.robustness == "faulted")
                .map(|v| v.name.as_str())
                .collect();
            let degraded: Vec<&str> = observed
                .volumes
                .iter()
                .filter(|v| v.robustness == "degraded")
                .map(|v| v.name.as_str())
                .collect();
            f.push(finding(
                "volumes not faulted",
                faulted.is_empty(),
                if faulted.is_empty() {
                    format!("{} volumes, none faulted", observed.volumes.len())
                } else {
                    format!("faulted: {}", faulted.join(", "))
                },
            ));
            f.push(finding(
                "volumes not degraded",
                degraded.is_empty() || policy.allow_degraded_volumes,
                if degraded.is_empty() {
                    "none degraded".to_string()
                } else {
                    format!(
                        "degraded: {}{}",
                        degraded.join(", "),
                        if policy.allow_degraded_volumes {
                            " (allowed by policy)"
                        } else {
                            ""
                        }
                    )
                },
            ));
            helm_ready(observed, component, &mut f);
        }
        "flux" => match observed.flux_instances.first() {
            Some(fi) => {
                f.push(ready_finding("FluxInstance ready", fi));
                if !observed.routes.contains_key("flux") {
                    f.push(flux_fight(fi, "spec.distribution.version"));
                }
            }
            None => f.push(finding(
                "FluxInstance ready",
                false,
                "no FluxInstance: upkeep upgrades Flux through flux-operator",
            )),
        },
        _ => helm_ready(observed, component, &mut f),
    }
    if let Some(r) = observed.routes.get(&component.name) {
        f.push(route_finding(r));
    }
    Verdict {
        ok: f.iter().all(|x| x.ok),
        findings: f,
    }
}

/// Whether a Flux object is Ready, with its reason when not.
fn ready_finding(check: &str, h: &crate::cluster::Health) -> Finding {
    let state = if h.ready {
        "Ready".to_string()
    } else {
        format!("{} {}", h.reason, h.message)
    };
    finding(
        check,
        h.ready,
        format!("{}/{}: {state}", h.namespace, h.name),
    )
}

/// How the version gets to the cluster, as a preflight finding.
fn route_finding(r: &Route) -> Finding {
    match r {
        Route::Git { places } => finding(
            "applied through",
            true,
            format!(
                "git: upkeep changes {} in the window, and Flux applies it",
                places
                    .iter()
                    .map(|p| match &p.variable {
                        Some(v) => format!("the variable {v} at {} (used by {})", p.at, p.object),
                        None => format!("{} of {} at {}", p.field, p.object, p.at),
                    })
                    .collect::<Vec<_>>()
                    .join("; ")
            ),
        ),
        Route::Cluster => finding(
            "applied through",
            true,
            "the cluster: nothing in git carries the version, and Flux does not own it",
        ),
        Route::Refused { why } => finding("applied through", false, why.clone()),
    }
}

/// Whether upkeep setting the version of `h` (at `field`) in the cluster would fight Flux:
/// kustomize-controller applies that field from git with forced ownership on every reconcile
/// and would take the version back. Used when the repository was not read (`upkeep plan`
/// without a repository); otherwise the route says.
pub fn flux_fight(h: &crate::cluster::Health, field: &str) -> Finding {
    let Some(flux) = h
        .flux
        .as_ref()
        .filter(|f| f.owns_version && !f.if_not_present)
    else {
        return finding(
            "Flux ownership",
            true,
            match &h.flux {
                Some(f) => format!(
                    "{} {}/{} comes from Kustomization {} but its {field} is left to upkeep",
                    h.kind, h.namespace, h.name, f.kustomization
                ),
                None => format!(
                    "{} {}/{} is not applied by Flux",
                    h.kind, h.namespace, h.name
                ),
            },
        );
    };
    finding(
        "Flux ownership",
        false,
        format!(
            "{} {}/{}: Flux applies its {field} from git (Kustomization {}) on every reconcile; without the config repository upkeep cannot tell where git carries it (give the repository: --repo or --repo-url), and a version set in the cluster would be taken back",
            h.kind, h.namespace, h.name, flux.kustomization
        ),
    )
}

fn helm_ready(observed: &Observed, component: &Component, f: &mut Vec<Finding>) {
    match observed.release_of(&component.runs) {
        Some(h) => {
            f.push(ready_finding("HelmRelease ready", h));
            if observed.routes.contains_key(&component.name) {
                return;
            }
            match &h.chart_ref {
                Some(r) => f.push(finding(
                    "chart source",
                    false,
                    format!(
                        "HelmRelease {}/{} takes its chart from {r} (spec.chartRef): its version is that source's; upkeep changes it there through git when it reads the repository (give --repo or --repo-url)",
                        h.namespace, h.name
                    ),
                )),
                None => f.push(flux_fight(h, "spec.chart.spec.version")),
            }
        }
        None if observed.routes.contains_key(&component.name) => {}
        None => f.push(finding(
            "HelmRelease ready",
            false,
            match &component.runs {
                crate::model::Runs::Chart { chart, release: Some(r) } => {
                    format!("no HelmRelease {r} of the chart {chart}")
                }
                crate::model::Runs::Chart { chart, .. } => format!(
                    "no single HelmRelease of the chart {chart} (none, or several: say which with `release:`)"
                ),
                crate::model::Runs::Image { image, .. } => {
                    format!("no single HelmRelease with the image {image} in its values")
                }
                _ => format!(
                    "upkeep does not know where {} runs (say `chart:` or `image:` in versions.yaml)",
                    component.name
                ),
            },
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::{BlockingPdb, Health, NodeState, VolumeState};
    use crate::versions::Scheme;

    fn k3s() -> Component {
        crate::rollout::tests::k3s_at("v1.33.4+k3s1")
    }

    fn node(name: &str, v: &str) -> NodeState {
        NodeState {
            name: name.into(),
            server: name.starts_with('s'),
            etcd: false,
            version: v.into(),
            ready: true,
            unschedulable: false,
            data_dir: "/var/lib/rancher/k3s".into(),
        }
    }

    const DRAIN: PreflightPolicy = PreflightPolicy {
        allow_degraded_volumes: false,
        drain: true,
    };

    fn cluster() -> Observed {
        Observed {
            nodes: vec![
                node("server-1", "v1.33.4+k3s1"),
                node("agent-1", "v1.33.4+k3s1"),
            ],
            suc_installed: true,
            ..Observed::default()
        }
    }

    fn v(s: &str) -> Version {
        versions::parse(s, Scheme::K3s).unwrap_or_else(|_| panic!())
    }

    #[test]
    fn a_healthy_cluster_passes() {
        let verdict = preflight(
            &k3s(),
            &v("v1.33.5+k3s1"),
            &cluster(),
            PreflightPolicy::default(),
        );
        assert!(verdict.ok, "{verdict:?}");
    }

    #[test]
    fn each_problem_fails_with_the_facts() {
        let target = v("v1.33.5+k3s1");
        let fails = |o: &Observed, t: &Version| {
            let verdict = preflight(&k3s(), t, o, DRAIN);
            assert!(!verdict.ok);
            verdict
                .findings
                .into_iter()
                .filter(|f| !f.ok)
                .map(|f| f.detail)
                .collect::<Vec<_>>()
                .join("; ")
        };
        let mut o = cluster();
        o.nodes[1].ready = false;
        assert!(fails(&o, &target).contains("not Ready: agent-1"));
        let mut o = cluster();
        o.nodes[0].unschedulable = true;
        assert!(fails(&o, &target).contains("cordoned by someone else: server-1"));
        let mut o = cluster();
        o.suc_installed = false;
        assert!(fails(&o, &target).contains("install the system-upgrade-controller"));
        let mut o = cluster();
        o.blocking_pdbs = vec![BlockingPdb {
            namespace: "default".into(),
            name: "db".into(),
            nodes: vec!["agent-1".into()],
            longhorn_instance_manager: false,
        }];
        assert!(fails(&o, &target).contains("default/db (pods on agent-1)"));
        let mut o = cluster();
        o.plans.push(crate::cluster::PlanState {
            namespace: "system-upgrade".into(),
            name: "server-plan".into(),
            version: String::new(),
            image: "rancher/k3s-upgrade".into(),
            complete: true,
            failed: None,
            applying: Vec::new(),
            flux: None,
        });
        assert!(
            fails(&o, &target).contains(
                "another Plan upgrades k3s on these nodes and would fight upkeep's: system-upgrade/server-plan"
            )
        );
        assert!(fails(&cluster(), &v("v1.35.0+k3s1")).contains("skips a minor"));
        assert!(fails(&cluster(), &v("v1.33.3+k3s1")).contains("downgrade"));
    }

    #[test]
    fn only_drained_nodes_and_pdbs_longhorn_does_not_lift_block_a_drain() {
        let target = v("v1.33.5+k3s1");
        let pdb = |name: &str, node: &str, longhorn: bool| BlockingPdb {
            namespace: "longhorn-system".into(),
            name: name.into(),
            nodes: vec![node.into()],
            longhorn_instance_manager: longhorn,
        };
        let mut o = cluster();
        // Longhorn keeps one on every node; it lifts it once the node is cordoned.
        o.blocking_pdbs = vec![
            pdb("instance-manager-a", "agent-1", true),
            pdb("instance-manager-s", "server-1", true),
        ];
        let verdict = preflight(&k3s(), &target, &o, DRAIN);
        assert!(verdict.ok, "{verdict:?}");
        assert!(
            verdict
                .findings
                .iter()
                .any(|f| f.detail.contains("2 Longhorn instance-manager PDBs")),
            "{verdict:?}"
        );
        // Servers are only cordoned, never drained.
        o.blocking_pdbs = vec![pdb("db", "server-1", false)];
        assert!(preflight(&k3s(), &target, &o, DRAIN).ok);
        // Without drain, no PDB matters.
        o.blocking_pdbs = vec![pdb("db", "agent-1", false)];
        assert!(!preflight(&k3s(), &target, &o, DRAIN).ok);
        assert!(preflight(&k3s(), &target, &o, PreflightPolicy::default()).ok);
        // A volume whose only replica is on an agent keeps that node's PDB.
        let mut o = cluster();
        o.volumes.push(VolumeState {
            name: "pvc-1".into(),
            robustness: "healthy".into(),
            state: "attached".into(),
            replicas: 1,
            node: "agent-1".into(),
        });
        let verdict = preflight(&k3s(), &target, &o, DRAIN);
        assert!(!verdict.ok);
        assert!(format!("{verdict:?}").contains("pvc-1 has one replica on agent-1"));
    }

    #[test]
    fn longhorn_volumes_and_release() {
        let mut lh = k3s();
        lh.name = "longhorn".into();
        lh.scheme = Scheme::Semver;
        lh.runs = crate::model::Runs::Chart {
            chart: "longhorn".into(),
            release: None,
        };
        let target = versions::parse("v1.10.2", Scheme::Semver).unwrap_or_else(|_| panic!());
        let mut o = Observed::default();
        o.helm_releases.push(Health {
            kind: "HelmRelease".into(),
            namespace: "longhorn-system".into(),
            name: "longhorn".into(),
            ready: true,
            reason: String::new(),
            message: String::new(),
            running: Some("1.9.1".into()),
            desired: Some("1.9.1".into()),
            chart: Some("longhorn".into()),
            images: Vec::new(),
            flux: None,
            chart_ref: None,
            path: None,
            source: None,
            target_namespace: None,
            suspended_by: None,
        });
        o.volumes.push(VolumeState {
            name: "pvc-1".into(),
            robustness: "degraded".into(),
            state: "attached".into(),
            replicas: 3,
            node: "agent-1".into(),
        });
        assert!(!preflight(&lh, &target, &o, PreflightPolicy::default()).ok);
        assert!(
            preflight(
                &lh,
                &target,
                &o,
                PreflightPolicy {
                    allow_degraded_volumes: true,
                    drain: false,
                }
            )
            .ok
        );
        // Flux applying the chart version from git, and the repository not read: refused,
        // naming the Kustomization; with `ssa: IfNotPresent` Flux leaves the version alone.
        o.volumes[0].robustness = "healthy".into();
        o.helm_releases[0].flux = Some(crate::cluster::FluxManaged {
            kustomization: "flux-system/infrastructure".into(),
            owns_version: true,
            if_not_present: false,
        });
        let verdict = preflight(&lh, &target, &o, PreflightPolicy::default());
        assert!(!verdict.ok);
        let said = format!("{verdict:?}");
        assert!(
            said.contains("Flux applies its spec.chart.spec.version from git (Kustomization flux-system/infrastructure)"),
            "{said}"
        );
        // Read from git, the route says: through git is fine, a refusal is said as such.
        o.routes.insert(
            "longhorn".into(),
            Route::Git {
                places: vec![crate::layout::route::Place {
                    object: "HelmRelease longhorn-system/longhorn".into(),
                    field: "spec.chart.spec.version".into(),
                    at: "infrastructure/longhorn.yaml:18:16".into(),
                    variable: None,
                    kustomization: Some("flux-system/infrastructure".into()),
                    value: "1.9.1".into(),
                }],
            },
        );
        let verdict = preflight(&lh, &target, &o, PreflightPolicy::default());
        assert!(verdict.ok, "{verdict:?}");
        assert!(format!("{verdict:?}").contains("spec.chart.spec.version of HelmRelease longhorn-system/longhorn at infrastructure/longhorn.yaml:18:16"));
        o.routes.insert(
            "longhorn".into(),
            Route::Refused {
                why: "x.yaml:1:1: no".into(),
            },
        );
        assert!(!preflight(&lh, &target, &o, PreflightPolicy::default()).ok);
        o.routes.clear();
        if let Some(f) = o.helm_releases[0].flux.as_mut() {
            f.if_not_present = true;
        }
        assert!(preflight(&lh, &target, &o, PreflightPolicy::default()).ok);
        o.helm_releases[0].flux = None;
        // A chart from an OCIRepository: refused, saying where the version lives.
        o.helm_releases[0].chart_ref = Some("OCIRepository/longhorn-system/longhorn".into());
        let said = format!(
            "{:?}",
            preflight(&lh, &target, &o, PreflightPolicy::default())
        );
        assert!(
            said.contains(
                "takes its chart from OCIRepository/longhorn-system/longhorn (spec.chartRef)"
            ),
            "{said}"
        );
        o.helm_releases[0].chart_ref = None;
        o.volumes[0].robustness = "faulted".into();
        assert!(
            !preflight(
                &lh,
                &target,
                &o,
                PreflightPolicy {
                    allow_degraded_volumes: true,
                    drain: false,
                }
            )
            .ok
        );
    }
}
