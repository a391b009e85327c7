//! The controller as a process: `upkeep run` against the emulators. Ready once the first
//! reconcile ran; a merged PR is applied on the next reconciles; metrics say so; the token never
//! reaches the logs; SIGTERM stops it cleanly.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use chrono::Utc;
use upkeep::sim::clock::SimClock;
use upkeep::sim::kube::{KubeOptions, KubeSim};
use upkeep::sim::upstream::UpstreamSim;

const REPO: &str = "homelab/cluster";
const TOKEN: &str = "ghp_run_secret";

fn get(url: &str) -> Option<(u16, String)> {
    let r = reqwest::blocking::get(url).ok()?;
    Some((r.status().as_u16(), r.text().unwrap_or_default()))
}

#[test]
fn the_controller_proposes_applies_and_reports_through_metrics() {
    upkeep::sources::install_crypto_provider();
    let dir = tempfile::tempdir().expect("tempdir");
    let gh = UpstreamSim::start_in_thread().expect("github");
    gh.enable_forge(&dir.path().join("forge"));
    gh.require_forge_token(TOKEN);
    // No windows: any time is fine, so the test does not depend on the day.
    let seed = dir.path().join("seed");
    std::fs::create_dir_all(&seed).expect("mkdir");
    std::fs::write(
        seed.join("versions.yaml"),
        "apiVersion: upkeep.dev/v1alpha1\nkind: DesiredVersions\ncomponents:\n  k3s:\n    version: v1.33.4+k3s1\n",
    )
    .expect("write");
    let bare = gh
        .with_forge(|f| f.create_repo(REPO, Some(&seed), Utc::now()))
        .expect("forge")
        .expect("repo");
    let kube = KubeSim::start_in_thread(KubeOptions {
        clock: SimClock::new(Utc::now(), 600.0),
        ..KubeOptions::default()
    })
    .expect("kube");
    let kc = dir.path().join("kubeconfig");
    kube.write_kubeconfig(&kc).expect("kubeconfig");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("port")
        .local_addr()
        .expect("addr")
        .port();
    let base = format!("http://127.0.0.1:{port}");
    let child = Command::new(env!("CARGO_BIN_EXE_upkeep"))
        .args([
            "run",
            "--owner",
            "homelab",
            "--name",
            "cluster",
            "--poll",
            "1",
            "--listen",
            &format!("127.0.0.1:{port}"),
        ])
        .arg("--repo-url")
        .arg(format!("file://{}", bare.display()))
        .args(["--github-api-url", &gh.url()])
        .arg("--kubeconfig")
        .arg(&kc)
        .arg("--state-dir")
        .arg(dir.path().join("state"))
        .env("GITHUB_TOKEN", TOKEN)
        .env("UPKEEP_LOG", "debug")
        .env("UPKEEP_LOG_FORMAT", "json")
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(dir.path().join("log")).expect("log"))
        .spawn()
        .expect("upkeep run");
    let wait = |what: &str, f: &dyn Fn() -> bool| {
        let deadline = Instant::now() + Duration::from_secs(60);
        while !f() {
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}: {}",
                std::fs::read_to_string(dir.path().join("log"))
                    .unwrap_or_default()
                    .lines()
                    .rev()
                    .take(15)
                    .collect::<Vec<_>>()
                    .join("\n")
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    wait("ready", &|| {
        get(&format!("{base}/readyz")).is_some_and(|(s, _)| s == 200)
    });
    assert_eq!(get(&format!("{base}/healthz")).map(|x| x.0), Some(200));
    // It proposed the k3s patch.
    wait("a pull request", &|| {
        !gh.with_forge(|f| f.pulls(REPO))
            .unwrap_or_default()
            .is_empty()
    });
    let (_, metrics) = get(&format!("{base}/metrics")).expect("metrics");
    assert!(
        metrics.contains("upkeep_updates_available{component=\"k3s\"} 1"),
        "{metrics}"
    );
    // Merge it: the controller applies it.
    let c = reqwest::blocking::Client::new();
    let r = c
        .put(format!("{}/repos/{REPO}/pulls/1/merge", gh.url()))
        .header("authorization", format!("Bearer {TOKEN}"))
        .body(r#"{"merge_method":"squash"}"#)
        .send()
        .expect("merge");
    assert_eq!(r.status().as_u16(), 200);
    wait("the rollout", &|| {
        get(&format!("{base}/metrics")).is_some_and(|(_, m)| m.contains("phase=\"Succeeded\"} 1"))
    });
    let rollout = kube
        .list("upkeep.dev", "rollouts")
        .into_iter()
        .next()
        .expect("a rollout");
    let to = rollout["spec"]["to"].as_str().unwrap_or("").to_string();
    assert_ne!(to, "v1.33.4+k3s1");
    assert!(
        kube.list("", "nodes")
            .iter()
            .all(|n| n["status"]["nodeInfo"]["kubeletVersion"] == to.as_str()),
        "every node on {to}"
    );
    let (_, page) = get(&format!("{base}/")).expect("page");
    assert!(
        page.contains(&upkeep::rollout::rollout_name("k3s", &to)) && page.contains("Succeeded"),
        "{page}"
    );
    // SIGTERM: the step in progress finishes, then exit 0.
    // SAFETY: signalling our own child.
    unsafe {
        libc::kill(child.id() as i32, libc::SIGTERM);
    }
    let out = child.wait_with_output().expect("wait");
    assert!(out.status.success(), "{out:?}");
    let logs = String::from_utf8_lossy(&out.stdout).into_owned()
        + &std::fs::read_to_string(dir.path().join("log")).unwrap_or_default();
    assert!(
        logs.contains("rollout phase"),
        "the logs tell the transitions: {logs}"
    );
    assert!(!logs.contains(TOKEN), "the token never reaches the logs");
    // UPKEEP_LOG_FORMAT=json: every stderr line is one JSON object, with the span chain.
    let stderr = std::fs::read_to_string(dir.path().join("log")).unwrap_or_default();
    let lines: Vec<serde_json::Value> = stderr
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    assert!(
        lines
            .iter()
            .all(|l| l["level"].is_string() && l["timestamp"].is_string())
    );
    assert!(
        lines.iter().any(|l| l["spans"]
            .as_array()
            .is_some_and(|s| s.iter().any(|s| s["name"] == "rollout"))),
        "rollout lines carry their span: {stderr}"
    );
}
