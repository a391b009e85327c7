//! The demo, black-box: the built binary tells the whole story and exits 0.

use std::process::Command;

/// `upkeep demo --dir` in a new directory: the directory and the process's output.
fn demo() -> (tempfile::TempDir, std::process::Output) {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = Command::new(env!("CARGO_BIN_EXE_upkeep"))
        .env("UPKEEP_FORGE_WRITE_INTERVAL_MS", "20")
        .args(["demo", "--dir"])
        .arg(dir.path())
        .output()
        .expect("upkeep demo");
    (dir, out)
}

#[test]
fn the_demo_tells_the_whole_story() {
    let (dir, out) = demo();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for step in [
        "opened PR #1: k3s: v1.33.4+k3s1 -> v1.33.12+k3s1",
        "you merge #1",
        "k3s rollout: WaitingForWindow",
        "the window opens",
        "Backup",
        "server-1: cordoned, upgrading",
        "agent-2: runs v1.33.12+k3s1, Ready, uncordoned",
        "k3s rollout: Succeeded",
        "report posted on #1: **Applied**",
        "longhorn: v1.9.1 -> v1.10.2",
        "healthy -> degraded",
        "Longhorn rollout: RequiresAttention",
        "revert committed on main",
        "Every step of the story happened.",
    ] {
        assert!(text.contains(step), "missing {step:?} in:\n{text}");
    }
    // The state is left for a look: the revert is in git.
    let log = Command::new("git")
        .arg("--git-dir")
        .arg(dir.path().join("forge/homelab/cluster.git"))
        .args(["log", "--format=%s", "main"])
        .output()
        .expect("git");
    assert!(String::from_utf8_lossy(&log.stdout).contains("revert(longhorn): v1.10.2 failed"));
}

mod common;

/// What deploy/ grants that the demo's story does not use, and where each is exercised (there,
/// tests/apply.rs and tests/run.rs hold every access against the same RBAC).
const NOT_IN_THE_DEMO: [(&str, &str, &str, &str); 24] = [
    // (namespace, group, resource, verb)
    ("", "", "nodes", "patch"), // uncordon after a halt: tests/apply.rs, a node that never comes back
    ("system-upgrade", "upgrade.cattle.io", "plans", "create"), // server-side apply creating a Plan needs create on a real API server
    ("system-upgrade", "upgrade.cattle.io", "plans", "delete"), // its own Plans retired once the user's in git are adopted: tests/apply.rs, adopted_plans_in_git_are_changed_through_git_and_held_through_flux_when_a_node_fails
    ("longhorn-system", "longhorn.io", "systembackups", "get"), // a backup target: tests/apply.rs
    ("longhorn-system", "longhorn.io", "systembackups", "create"), // idem
    (
        "flux-system",
        "fluxcd.controlplane.io",
        "fluxinstances",
        "patch",
    ), // Flux upgrades: tests/apply.rs
    ("upkeep-system", "coordination.k8s.io", "leases", "get"),  // leader election: tests/run.rs
    ("upkeep-system", "coordination.k8s.io", "leases", "create"),
    ("upkeep-system", "coordination.k8s.io", "leases", "update"),
    ("upkeep-system", "upkeep.dev", "upkeeprollouts", "patch"), // `upkeep apply --emergency` run as upkeep on an existing rollout: tests/apply.rs
    ("upkeep-system", "upkeep.dev", "rollouts", "list"), // moving the old CRD's objects: tests/apply.rs, rollouts_of_the_old_crd_are_moved_to_upkeeprollouts
    ("upkeep-system", "upkeep.dev", "rollouts", "delete"), // idem
    ("upkeep-system", "upkeep.dev", "upkeeprollouts", "delete"), // the dashboard's retry box (operate::retry; its CLI form: tests/apply.rs, a_retry_makes_a_new_attempt_while_git_still_asks_for_the_version)
    ("upkeep-system", "", "configmaps", "list"), // the controller watches for `upkeep reconcile`: tests/run.rs, reconcile_now_is_handled_at_once
    ("upkeep-system", "", "configmaps", "watch"), // idem
    ("upkeep-system", "", "configmaps", "patch"), // idem: the handled request
    ("", "", "pods", "list"),                    // PDB-covered pods: tests/apply.rs, cluster faults
    // Maintenance mode: tests/apply.rs, maintenance_mode_restores_the_exact_replicas.
    ("", "", "namespaces", "patch"),
    ("", "apps", "deployments", "get"),
    ("", "apps", "deployments", "patch"),
    ("", "apps", "statefulsets", "get"),
    ("", "apps", "statefulsets", "patch"),
    ("kube-system", "", "pods", "list"), // a failed snapshot Job's message: tests/apply.rs, etcd snapshots
    // The demo's Flux applies Longhorn's HelmRelease from git, so upkeep goes through git;
    // setting the chart version in the cluster is for releases Flux does not apply:
    // tests/apply.rs.
    (
        "longhorn-system",
        "helm.toolkit.fluxcd.io",
        "helmreleases",
        "patch",
    ),
];

/// The RBAC in deploy/manifests allows all the demo asked for, and grants nothing that no scenario
/// uses.
#[test]
fn deploys_rbac_is_exactly_what_upkeep_uses() {
    let (dir, out) = demo();
    assert!(out.status.success());
    let audit: Vec<upkeep_sim::kube::Access> = serde_json::from_str(
        &std::fs::read_to_string(dir.path().join("kube-audit.json")).expect("the demo's audit"),
    )
    .expect("json");
    let denied = common::rbac::denied(&audit);
    assert!(denied.is_empty(), "not allowed by deploy/: {denied:#?}");
    let unused: Vec<_> = common::rbac::grants()
        .into_iter()
        .filter(|g| {
            !audit.iter().any(|a| {
                a.group == g.group
                    && a.resource == g.resource
                    && a.verb == g.verb
                    && (g.namespace.is_empty() || g.namespace == a.namespace)
            })
        })
        .filter(|g| {
            !NOT_IN_THE_DEMO.iter().any(|(ns, group, res, verb)| {
                g.namespace == *ns && g.group == *group && g.resource == *res && g.verb == *verb
            })
        })
        .collect();
    assert!(
        unused.is_empty(),
        "deploy/ grants what no scenario uses (remove it, or say where it is used): {unused:#?}"
    );
}
