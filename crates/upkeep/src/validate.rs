//! Checks over what runs: the preflight before a rollout may start, as a pure function over
//! [`Observed`]. (Validation against the pre-upgrade baseline builds on the same findings.)

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::cluster::{Observed, Running};
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
    let running = observed.running(&component.name);
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
            let others: Vec<String> = observed
                .plans
                .iter()
                .filter(|p| !p.upkeeps() && p.image.contains("k3s-upgrade"))
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
                        observed.plans.iter().find(|p| !p.upkeeps() && p.image.contains("k3s-upgrade")).map_or("", |p| p.namespace.as_str()),
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
            helm_ready(observed, "longhorn", &mut f);
        }
        "flux" => match observed.flux_instances.first() {
            Some(fi) => {
                f.push(ready_finding("FluxInstance ready", fi));
                f.push(flux_fight(fi, "spec.distribution.version", observed));
            }
            None => f.push(finding(
                "FluxInstance ready",
                false,
                "no FluxInstance: upkeep upgrades Flux through flux-operator",
            )),
        },
        other => helm_ready(observed, other, &mut f),
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

/// Whether upkeep setting the version of `h` (at `field`) would fight Flux: kustomize-controller
/// applies that field from git with forced ownership on every reconcile and would take the
/// version back (and, for Longhorn, the "downgrade" would be refused). Names the Kustomization,
/// the file in the config repository when it was found, and the change to make.
pub fn flux_fight(h: &crate::cluster::Health, field: &str, observed: &Observed) -> Finding {
    if let Some(file) = h.flux.as_ref().and_then(|f| f.through_git.as_ref()) {
        return finding(
            "Flux ownership",
            true,
            format!(
                "Flux applies the {field} of {} {}/{} from git: upkeep changes it in {file} in the window and asks Flux to reconcile",
                h.kind, h.namespace, h.name
            ),
        );
    }
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
    let key = format!("{}/{}/{}", h.kind, h.namespace, h.name);
    let file = observed
        .manifests
        .get(&key)
        .map_or(String::new(), |f| format!(", defined in {f}"));
    finding(
        "Flux ownership",
        false,
        format!(
            "{} {}/{}: Flux applies its {field} from git (Kustomization {}{file}) on every reconcile, and upkeep cannot change it there (the file is not in the config repository under the Kustomization's path, or the version in it is not a plain value), so a version upkeep set in the cluster would be taken back. Write the version as a plain value in that file in the config repository, or add the annotation `kustomize.toolkit.fluxcd.io/ssa: IfNotPresent` to the object in git (Flux then creates it and leaves its version to upkeep), or keep this component's version in git only and remove it from versions.yaml (docs/relations.md)",
            h.kind, h.namespace, h.name, flux.kustomization
        ),
    )
}

fn helm_ready(observed: &Observed, component: &str, f: &mut Vec<Finding>) {
    match observed.helm_release_of(component) {
        Some(h) => {
            f.push(ready_finding("HelmRelease ready", h));
            match &h.chart_ref {
                // The CRD refuses `chart` beside `chartRef` (a CEL rule): the version lives in
                // the source, which upkeep does not change (yet).
                Some(r) => f.push(finding(
                    "chart source",
                    false,
                    format!(
                        "HelmRelease {}/{} takes its chart from {r} (spec.chartRef), so its version is that source's (an OCIRepository's spec.ref.tag, a HelmChart's spec.version); upkeep upgrades charts only through spec.chart.spec.version. Upgrade it by changing the source in git, and remove {component} from versions.yaml",
                        h.namespace, h.name
                    ),
                )),
                None => f.push(flux_fight(h, "spec.chart.spec.version", observed)),
            }
        }
        None => f.push(finding(
            "HelmRelease ready",
            false,
            format!("no HelmRelease for {component}"),
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
            flux: None,
            chart_ref: None,
            path: None,
            source: None,
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
        // Flux applying the chart version from git: refused, naming the Kustomization and
        // the file; with `ssa: IfNotPresent` Flux leaves the version alone.
        o.volumes[0].robustness = "healthy".into();
        o.helm_releases[0].flux = Some(crate::cluster::FluxManaged {
            kustomization: "flux-system/infrastructure".into(),
            owns_version: true,
            if_not_present: false,
            through_git: None,
        });
        o.manifests.insert(
            "HelmRelease/longhorn-system/longhorn".into(),
            "infrastructure/longhorn.yaml".into(),
        );
        let verdict = preflight(&lh, &target, &o, PreflightPolicy::default());
        assert!(!verdict.ok);
        let said = format!("{verdict:?}");
        assert!(
            said.contains(
                "Kustomization flux-system/infrastructure, defined in infrastructure/longhorn.yaml"
            ),
            "{said}"
        );
        assert!(
            said.contains("kustomize.toolkit.fluxcd.io/ssa: IfNotPresent"),
            "{said}"
        );
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
