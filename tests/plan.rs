//! `upkeep plan` against the Kubernetes emulator: what would be applied, when, and the preflight
//! verdict, read from a simulated cluster with real HTTPS and the kube crate.

use std::path::Path;
use std::process::Command;

use upkeep_sim::kube::{ClusterFault, KubeOptions, KubeSim};

fn cluster() -> KubeSim {
    upkeep::sources::install_crypto_provider();
    KubeSim::start_in_thread(KubeOptions::default()).expect("emulator")
}

fn config(dir: &Path, k3s: &str, longhorn: &str) -> std::path::PathBuf {
    let repo = dir.join("repo");
    std::fs::create_dir_all(repo.join("policies")).expect("mkdir");
    let ex = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/cluster-repo");
    let versions = std::fs::read_to_string(ex.join("versions.yaml"))
        .expect("read")
        .replace("v1.33.4+k3s1", k3s)
        .replace("v1.9.1", longhorn);
    std::fs::write(repo.join("versions.yaml"), versions).expect("write");
    for f in ["updates.yaml", "windows.yaml"] {
        std::fs::copy(ex.join("policies").join(f), repo.join("policies").join(f)).expect("copy");
    }
    repo
}

fn plan(sim: &KubeSim, dir: &Path, repo: &Path, extra: &[&str]) -> (i32, String) {
    let kc = dir.join("kubeconfig");
    sim.write_kubeconfig(&kc).expect("kubeconfig");
    let out = Command::new(env!("CARGO_BIN_EXE_upkeep"))
        .env("UPKEEP_FORGE_WRITE_INTERVAL_MS", "20")
        .args([
            "plan",
            "--offline",
            "--now",
            "2026-11-21T12:00:00Z",
            "--repo",
        ])
        .arg(repo)
        .arg("--kubeconfig")
        .arg(&kc)
        .args(extra)
        .output()
        .expect("upkeep");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
    )
}

#[test]
fn what_would_be_applied_when_and_the_preflight_verdict() {
    let sim = cluster();
    let dir = tempfile::tempdir().expect("tempdir");
    let repo = config(dir.path(), "v1.33.4+k3s1", "v1.9.1");
    let (code, out) = plan(&sim, dir.path(), &repo, &[]);
    assert_eq!(code, 0, "in step: {out}");
    assert!(
        out.contains("k3s: v1.33.4+k3s1, as versions.yaml asks"),
        "{out}"
    );

    let repo = config(dir.path(), "v1.33.5+k3s1", "v1.11.0");
    let (code, out) = plan(&sim, dir.path(), &repo, &[]);
    assert_eq!(code, 10, "{out}");
    assert!(
        out.contains("k3s: v1.33.4+k3s1 -> v1.33.5+k3s1 (1 hop)"),
        "{out}"
    );
    assert!(
        out.contains(
            "in the next window, saturday-night Sat 2026-11-21 22:00 CET (UTC+01:00), for 4h"
        ),
        "{out}"
    );
    assert!(
        out.contains("longhorn: v1.9.1 -> v1.11.0 (2 hops: v1.10.2 -> v1.11.0)"),
        "{out}"
    );
    assert!(out.contains("preflight: passes"), "{out}");

    // A PDB that would block a drain fails the k3s preflight and says which.
    sim.inject(ClusterFault::PdbBlocksDrain {
        node: "agent-1".into(),
    });
    let (code, out) = plan(&sim, dir.path(), &repo, &[]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("FAIL drains: PodDisruptionBudgets with 0 allowed disruptions would block draining the agents: default/critical-agent-1 (pods on agent-1)"), "{out}");

    // A mixed cluster is shown node by node; JSON carries the same.
    {
        let mut s = sim.store();
        let ctx = upkeep_sim::kube::store::Ctx::new(chrono::Utc::now(), "test");
        s.modify(&("".into(), "nodes".into()), "", "agent-2", &ctx, |n| {
            n["status"]["nodeInfo"]["kubeletVersion"] = serde_json::json!("v1.33.5+k3s1");
        })
        .expect("patch");
    }
    let (_, out) = plan(&sim, dir.path(), &repo, &["--output", "json"]);
    let rows: serde_json::Value = serde_json::from_str(&out).expect("json");
    assert_eq!(rows[0]["running"]["state"], "mixed");
    assert_eq!(
        rows[0]["running"]["nodes"][1],
        serde_json::json!(["agent-2", "v1.33.5+k3s1"])
    );
    assert_eq!(rows[0]["path"], serde_json::json!(["v1.33.5+k3s1"]));

    // A minor skip with no release in between is refused with the reason.
    let repo = config(dir.path(), "v1.35.0+k3s1", "v1.9.1");
    let (code, out) = plan(&sim, dir.path(), &repo, &[]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("k3s:") && out.contains("v1.35.0+k3s1"),
        "{out}"
    );
}

#[test]
fn an_unreachable_cluster_is_a_clear_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let repo = config(dir.path(), "v1.33.4+k3s1", "v1.9.1");
    let out = Command::new(env!("CARGO_BIN_EXE_upkeep"))
        .env("UPKEEP_FORGE_WRITE_INTERVAL_MS", "20")
        .args(["plan", "--repo"])
        .arg(&repo)
        .arg("--kubeconfig")
        .arg(dir.path().join("missing"))
        .output()
        .expect("upkeep");
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("cannot read the kubeconfig"),
        "{out:?}"
    );
}
