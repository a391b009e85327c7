//! The demo, black-box: the built binary tells the whole story and exits 0.

use std::process::Command;

#[test]
fn the_demo_tells_the_whole_story() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = Command::new(env!("CARGO_BIN_EXE_upkeep"))
        .args(["demo", "--dir"])
        .arg(dir.path())
        .output()
        .expect("upkeep demo");
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
