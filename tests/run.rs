//! The controller as a process: `upkeep run` against the emulators (GitHub with releases from the
//! shipped catalog, read live; the Kubernetes API). Ready once the lease is known and the first
//! reconcile ran; a merged PR is applied; metrics say so; a signed webhook starts a rollout at
//! once and a bad one is refused; two replicas share one lease; a restart mid-rollout resumes;
//! settings come from a config file; secrets never reach the logs; SIGTERM stops it cleanly.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use chrono::Utc;
use upkeep_sim::clock::SimClock;
use upkeep_sim::kube::{KubeOptions, KubeSim};
use upkeep_sim::upstream::UpstreamSim;

mod common;

const REPO: &str = "homelab/cluster";
const TOKEN: &str = "ghp_run_secret";
const HOOK_SECRET: &str = "whsec_do_not_log_me";

fn get(url: &str) -> Option<(u16, String)> {
    let r = reqwest::blocking::get(url).ok()?;
    Some((r.status().as_u16(), r.text().unwrap_or_default()))
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("port")
        .local_addr()
        .expect("addr")
        .port()
}

/// The emulators and a config repository holding k3s v1.33.4+k3s1 (and `policies`).
struct World {
    dir: tempfile::TempDir,
    gh: UpstreamSim,
    kube: KubeSim,
    kubeconfig: PathBuf,
    bare: PathBuf,
}

impl World {
    /// A world whose cluster's work is `quicker` times quicker than the defaults (a node's
    /// upgrade takes 90 s / quicker). Its clock is real time, as the controller's is: the
    /// controller under test judges windows and timeouts on the system clock.
    fn new(quicker: f64, policies: Option<&str>) -> World {
        upkeep::sources::install_crypto_provider();
        let dir = tempfile::tempdir().expect("tempdir");
        let gh = UpstreamSim::start_in_thread().expect("github");
        gh.enable_forge(&dir.path().join("forge"));
        gh.require_forge_token(TOKEN);
        // Upstream releases (GitHub and the k3s channel server) from the shipped catalog: the
        // controller reads them live, with its ETag cache.
        let catalog = upkeep::sources::catalog::Catalog::builtin().expect("catalog");
        upkeep_sim::upstream::seed_from_catalog(&gh, &catalog.file);
        let seed = dir.path().join("seed");
        std::fs::create_dir_all(seed.join("policies")).expect("mkdir");
        std::fs::write(
            seed.join("versions.yaml"),
            "apiVersion: upkeep.dev/v1alpha1\nkind: DesiredVersions\ncomponents:\n  k3s:\n    version: v1.33.4+k3s1\n",
        )
        .expect("write");
        std::fs::write(seed.join(common::NO_SOAK_FILE), common::NO_SOAK).expect("write");
        if let Some(p) = policies {
            std::fs::write(seed.join("policies/windows.yaml"), p).expect("write");
        }
        let bare = gh
            .with_forge(|f| f.create_repo(REPO, Some(&seed), Utc::now()))
            .expect("forge")
            .expect("repo");
        let kube = KubeSim::start_in_thread(KubeOptions {
            clock: SimClock::new(Utc::now(), 1.0),
            timings: upkeep_sim::kube::Timings::default().quicker(quicker),
            ..KubeOptions::default()
        })
        .expect("kube");
        let kubeconfig = dir.path().join("kubeconfig");
        kube.write_kubeconfig(&kubeconfig).expect("kubeconfig");
        World {
            dir,
            gh,
            kube,
            kubeconfig,
            bare,
        }
    }

    /// The flags that say where everything is (a 10 s lease: renewals late on a busy machine
    /// do not let it lapse).
    fn flags(&self, state: &str) -> Vec<String> {
        self.flags_with_lease(state, 10)
    }

    /// [`flags`](Self::flags) with a lease of `secs` seconds (the election's own tests).
    fn flags_with_lease(&self, state: &str, secs: u64) -> Vec<String> {
        let lease = secs.to_string();
        let mut v: Vec<String> = [
            "--owner",
            "homelab",
            "--name",
            "cluster",
            "--lease-duration",
            lease.as_str(),
            "--poll",
            "1",
        ]
        .map(String::from)
        .into();
        v.extend([
            "--repo-url".into(),
            format!("file://{}", self.bare.display()),
            "--github-api-url".into(),
            self.gh.url(),
            "--k3s-channel-url".into(),
            self.gh.url(),
            "--kubeconfig".into(),
            self.kubeconfig.display().to_string(),
            "--state-dir".into(),
            self.dir.path().join(state).display().to_string(),
        ]);
        v
    }

    /// `upkeep run` with `args` (after `run`), logging JSON at debug level to a file.
    fn spawn(&self, name: &str, args: &[String], envs: &[(&str, &str)]) -> Proc {
        let port = free_port();
        let log = self.dir.path().join(format!("{name}.log"));
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_upkeep"));
        cmd.env("UPKEEP_FORGE_WRITE_INTERVAL_MS", "20");
        cmd.arg("run")
            .args(args)
            .arg("--listen")
            .arg(format!("127.0.0.1:{port}"))
            .env("GITHUB_TOKEN", TOKEN)
            .env("UPKEEP_LOG", "debug")
            .env("UPKEEP_LOG_FORMAT", "json")
            .env_remove("UPKEEP_WEBHOOK_SECRET")
            .env_remove("UPKEEP_CONFIG")
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log).expect("log"));
        for (k, v) in envs {
            cmd.env(k, v);
        }
        Proc {
            child: Some(cmd.spawn().expect("upkeep run")),
            base: format!("http://127.0.0.1:{port}"),
            log,
        }
    }

    fn merge(&self, number: u64) {
        let r = common::merge(&self.gh.url(), REPO, TOKEN, number);
        assert_eq!(r.status().as_u16(), 200);
    }

    fn pulls(&self) -> Vec<(u64, String, String)> {
        self.gh.with_forge(|f| f.pulls(REPO)).unwrap_or_default()
    }

    fn rollout(&self) -> Option<serde_json::Value> {
        self.kube
            .list("upkeep.dev", "upkeeprollouts")
            .into_iter()
            .next()
    }

    fn phase(&self) -> String {
        self.rollout()
            .and_then(|r| r["status"]["phase"].as_str().map(str::to_string))
            .unwrap_or_default()
    }

    fn lease_holder(&self) -> String {
        self.kube
            .get("coordination.k8s.io", "leases", "upkeep-system", "upkeep")
            .and_then(|l| l["spec"]["holderIdentity"].as_str().map(str::to_string))
            .unwrap_or_default()
    }
}

/// One `upkeep run` process.
struct Proc {
    child: Option<Child>,
    base: String,
    log: PathBuf,
}

impl Proc {
    fn get(&self, path: &str) -> Option<(u16, String)> {
        get(&format!("{}{path}", self.base))
    }

    fn metrics(&self) -> String {
        self.get("/metrics").map(|x| x.1).unwrap_or_default()
    }

    fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// The log lines above debug level, for failure messages.
    fn tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text
            .lines()
            .filter(|l| !l.contains("\"level\":\"DEBUG\"") && !l.contains("\"level\":\"TRACE\""))
            .collect();
        lines[lines.len().saturating_sub(15)..].join("\n")
    }

    fn wait(&self, what: &str, f: &dyn Fn() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(90);
        while !f() {
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}: {}",
                self.tail()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn signal(&self, sig: i32) {
        // SAFETY: signalling our own child.
        unsafe {
            libc::kill(self.pid() as i32, sig);
        }
    }

    /// SIGTERM, then the exit status and every line logged.
    fn stop(mut self) -> (std::process::ExitStatus, String) {
        self.signal(libc::SIGTERM);
        let out = self
            .child
            .take()
            .expect("running")
            .wait_with_output()
            .expect("wait");
        let logs = String::from_utf8_lossy(&out.stdout).into_owned()
            + &std::fs::read_to_string(&self.log).unwrap_or_default();
        (out.status, logs)
    }

    fn kill(mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Some(c) = self.child.as_mut() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// The value of the first sample line starting with `prefix`.
fn sample(metrics: &str, prefix: &str) -> Option<f64> {
    metrics
        .lines()
        .find(|l| l.starts_with(prefix))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

#[test]
fn the_controller_proposes_applies_and_reports_through_metrics() {
    let w = World::new(600.0, None);
    // Installed as a user would: deploy/'s CRD and manifests with kubectl.
    let root = env!("CARGO_MANIFEST_DIR");
    let out = Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(&w.kubeconfig)
        .args(["apply", "--server-side", "-f"])
        .arg(format!("{root}/deploy/crds/upkeeprollouts.upkeep.dev.yaml"))
        .arg("-f")
        .arg(format!("{root}/deploy/manifests/upkeep.yaml"))
        .output()
        .expect("kubectl");
    assert!(out.status.success(), "kubectl apply: {out:?}");
    assert!(
        w.kube
            .get("apps", "deployments", "upkeep-system", "upkeep")
            .is_some()
    );
    w.kube.clear_audit();
    let p = w.spawn("run", &w.flags("state"), &[]);
    p.wait("ready", &|| p.get("/readyz").is_some_and(|(s, _)| s == 200));
    assert_eq!(p.get("/healthz").map(|x| x.0), Some(200));
    // Without a secret, webhooks are off.
    let r = common::http()
        .post(format!("{}/webhook", p.base))
        .body("{}")
        .send()
        .expect("post");
    assert_eq!(r.status().as_u16(), 404);
    // It proposed the k3s patch, from releases read live.
    p.wait("a pull request", &|| !w.pulls().is_empty());
    p.wait("metrics of the detection", &|| {
        p.metrics()
            .contains("upkeep_updates_available{component=\"k3s\"} 1")
    });
    let m = p.metrics();
    assert!(
        sample(&m, "upkeep_upstream_requests_total{status=\"ok\"}").is_some_and(|n| n >= 1.0),
        "{m}"
    );
    assert!(
        sample(&m, "upkeep_github_rate_limit_remaining{api=\"releases\"}").is_some(),
        "{m}"
    );
    assert_eq!(sample(&m, "upkeep_leader "), Some(1.0), "{m}");
    // The Prometheus text format unless OpenMetrics is asked for, as promtool reads it; the
    // error counters exist from the start.
    assert_eq!(
        sample(&m, "upkeep_reconcile_errors_total{kind=\"git\"}"),
        Some(0.0),
        "{m}"
    );
    let mut check = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool is installed (.ci/run installs it)");
    {
        use std::io::Write as _;
        let mut stdin = check.stdin.take().expect("stdin");
        stdin.write_all(m.as_bytes()).expect("write");
    }
    let checked = check.wait_with_output().expect("promtool");
    assert!(
        checked.status.success(),
        "promtool check metrics: {}{}\n{m}",
        String::from_utf8_lossy(&checked.stdout),
        String::from_utf8_lossy(&checked.stderr)
    );
    let open = common::http()
        .get(format!("{}/metrics", p.base))
        .header(
            "accept",
            "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5",
        )
        .send()
        .expect("scrape");
    assert!(
        open.headers()["content-type"]
            .to_str()
            .unwrap_or_default()
            .starts_with("application/openmetrics-text")
    );
    assert!(open.text().unwrap_or_default().ends_with("# EOF\n"));
    // Merge it: the controller applies it.
    w.merge(1);
    p.wait("the rollout", &|| {
        p.metrics().contains("phase=\"Succeeded\"} 1")
    });
    let to = w.rollout().expect("a rollout")["spec"]["to"]
        .as_str()
        .unwrap_or("")
        .to_string();
    assert_ne!(to, "v1.33.4+k3s1");
    assert!(
        w.kube
            .list("", "nodes")
            .iter()
            .all(|n| n["status"]["nodeInfo"]["kubeletVersion"] == to.as_str()),
        "every node on {to}"
    );
    let m = p.metrics();
    for prefix in [
        "upkeep_rollout_duration_seconds_count{component=\"k3s\",outcome=\"Succeeded\"} 1",
        "upkeep_rollout_step_duration_seconds_count{component=\"k3s\",step=\"Applying\"}",
        "upkeep_github_rate_limit_remaining{api=\"forge\"}",
        "upkeep_last_successful_reconcile_timestamp_seconds",
        "upkeep_reconcile_duration_seconds_count",
        "upkeep_validation_check_result{rollout=\"k3s-",
    ] {
        assert!(m.contains(prefix), "{prefix} in {m}");
    }
    assert!(
        m.lines()
            .filter(|l| l.starts_with("upkeep_validation_check_result"))
            .all(|l| l.ends_with(" 1")),
        "every validation check passed: {m}"
    );
    // The status page, as a real browser renders it (headless Chromium), and the same facts as
    // JSON.
    let page = browse(&w, &format!("{}/", p.base));
    assert!(
        page.contains(&upkeep::rollout::rollout_name("k3s", &to))
            && page.contains("Succeeded")
            && page.contains("any time"),
        "{page}"
    );
    for node in ["server-1", "agent-1", "agent-2"] {
        assert!(page.contains(node), "per node: {page}");
    }
    assert!(
        page.contains("up to date") && page.contains("Runs") && page.contains("Git asks"),
        "{page}"
    );
    let (_, json) = p.get("/api/status").expect("api");
    let v: serde_json::Value = serde_json::from_str(&json).expect("JSON");
    assert_eq!(v["running"]["k3s"], to.as_str(), "{json}");
    assert_eq!(v["nodes"].as_array().map(Vec::len), Some(3), "{json}");
    // SIGTERM: the step in progress finishes, then exit 0, and the lease is given up.
    let (status, logs) = p.stop();
    // Everything it asked of the API is allowed by deploy/'s RBAC, and with deploy/ installed it
    // wrote neither the CRD nor the namespace.
    let audit = w.kube.audit();
    assert!(
        common::rbac::denied(&audit).is_empty(),
        "{:#?}",
        common::rbac::denied(&audit)
    );
    assert!(
        !audit.iter().any(|a| matches!(
            a.resource.as_str(),
            "customresourcedefinitions" | "namespaces"
        ) && matches!(a.verb.as_str(), "create" | "patch" | "update")),
        "{audit:#?}"
    );
    assert!(status.success(), "{status:?}");
    assert_eq!(w.lease_holder(), "", "released on the way out");
    assert!(
        logs.contains("rollout phase"),
        "the logs tell the transitions: {logs}"
    );
    assert!(!logs.contains(TOKEN), "the token never reaches the logs");
    // UPKEEP_LOG_FORMAT=json: every stderr line is one JSON object, with the span chain.
    let stderr = std::fs::read_to_string(p_log(&w, "run")).unwrap_or_default();
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

fn p_log(w: &World, name: &str) -> PathBuf {
    w.dir.path().join(format!("{name}.log"))
}

/// A window open at any time (it opens every hour for two hours).
const ALWAYS_OPEN: &str = "apiVersion: upkeep.dev/v1alpha1\nkind: Policy\nwindows:\n  - name: always\n    kind: allow\n    schedule: \"0 * * * *\"\n    duration: 2h\n    timeZone: UTC\n";

#[test]
fn a_signed_webhook_starts_the_rollout_at_once_and_bad_ones_are_refused() {
    // Real time on the simulated clock, so that "at once" is measured on it.
    let w = World::new(1.0, Some(ALWAYS_OPEN));
    std::fs::write(w.dir.path().join("hook-secret"), format!("{HOOK_SECRET}\n")).expect("write");
    // Every setting from a config file; one command-line flag overrides it (--listen, given by
    // spawn, beats the file's port 1).
    let flags = w.flags("state");
    let mut yaml = String::from(
        "apiVersion: upkeep.dev/v1alpha1\nkind: ControllerConfig\nlisten: 127.0.0.1:1\npoll: 3600\ndetectEvery: 3600\n",
    );
    yaml.push_str(&format!(
        "webhookSecretFile: {}\n",
        w.dir.path().join("hook-secret").display()
    ));
    for pair in flags.chunks(2).filter(|p| p[0] != "--poll") {
        let key = pair[0].trim_start_matches("--");
        let camel: String = key
            .split('-')
            .enumerate()
            .map(|(i, s)| {
                if i == 0 {
                    s.to_string()
                } else {
                    s[..1].to_uppercase() + &s[1..]
                }
            })
            .collect();
        yaml.push_str(&format!("{camel}: \"{}\"\n", pair[1]));
    }
    let yaml = yaml.replace("leaseDuration: \"2\"", "leaseDuration: 2");
    let file = w.dir.path().join("upkeep.yaml");
    std::fs::write(&file, &yaml).expect("write");
    let p = w.spawn(
        "hook",
        &["--config".into(), file.display().to_string()],
        &[],
    );
    // The GitHub emulator delivers the repository's events to upkeep, signed, as GitHub does.
    w.gh.with_forge(|f| {
        f.add_webhook(REPO, &format!("{}/webhook", p.base), HOOK_SECRET.as_bytes())
    });
    p.wait("ready", &|| p.get("/readyz").is_some_and(|(s, _)| s == 200));
    p.wait("a pull request", &|| !w.pulls().is_empty());
    let client = common::http();
    let deliver = |sig: Option<&str>, body: &str| {
        let mut r = client
            .post(format!("{}/webhook", p.base))
            .header("x-github-event", "push")
            .header("x-github-delivery", "d-1")
            .body(body.to_string());
        if let Some(s) = sig {
            r = r.header("x-hub-signature-256", s);
        }
        r.send().expect("deliver").status().as_u16()
    };
    let marker = "payload-marker-7f3a";
    let body = format!(r#"{{"ref":"refs/heads/main","after":"{marker}"}}"#);
    // Missing, malformed and wrong signatures: 401, nothing happens.
    assert_eq!(deliver(None, &body), 401);
    assert_eq!(deliver(Some("sha256=nothex"), &body), 401);
    let wrong = upkeep::webhook::sign(b"another secret", body.as_bytes());
    assert_eq!(deliver(Some(&wrong), &body), 401);
    // A signed delivery that is not about the base branch is acknowledged and ignored.
    let other = r#"{"ref":"refs/heads/feature"}"#;
    let signed = upkeep::webhook::sign(HOOK_SECRET.as_bytes(), other.as_bytes());
    assert_eq!(deliver(Some(&signed), other), 200);
    // The merge: GitHub (the emulator) sends the push event, and the rollout starts at once,
    // although the next poll is an hour away (a minute bounds "at once" on a busy machine).
    let sent = w.kube.clock().now();
    w.merge(1);
    p.wait("the rollout", &|| w.rollout().is_some());
    let created = w.rollout().expect("rollout")["metadata"]["creationTimestamp"]
        .as_str()
        .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
        .expect("creationTimestamp")
        .with_timezone(&Utc);
    let took = created - sent;
    assert!(
        took < chrono::Duration::seconds(60),
        "the rollout started {took} (simulated) after the webhook"
    );
    // With the next poll an hour away, the rollout still moves: while one is under way the loop
    // looks every few seconds.
    p.wait("the rollout to get past its preflight", &|| {
        matches!(
            w.phase().as_str(),
            "Backup" | "Applying" | "Validating" | "Succeeded"
        )
    });
    let m = p.metrics();
    assert_eq!(
        sample(&m, "upkeep_webhook_deliveries_total{status=\"refused\"}"),
        Some(3.0),
        "{m}"
    );
    assert!(
        sample(&m, "upkeep_webhook_deliveries_total{status=\"accepted\"}").unwrap_or(0.0) >= 2.0,
        "{m}"
    );
    let (status, logs) = p.stop();
    assert!(status.success());
    assert!(logs.contains("refused a webhook delivery"), "{logs}");
    assert!(
        logs.lines().any(|l| l.contains("\"webhook delivery\"")
            && l.contains("\"event\":\"push\"")
            && l.contains("\"status\":202")
            && l.contains("sim-")),
        "the emulator's push delivery was accepted: {logs}"
    );
    for secret in [HOOK_SECRET, TOKEN, marker] {
        assert!(!logs.contains(secret), "{secret} reached the logs");
    }
}

#[test]
fn a_bad_config_file_is_refused_with_its_position() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("upkeep.yaml");
    std::fs::write(
        &file,
        "apiVersion: upkeep.dev/v1alpha1\nkind: ControllerConfig\nowner: me\npol: 30\n",
    )
    .expect("write");
    let out = Command::new(env!("CARGO_BIN_EXE_upkeep"))
        .env("UPKEEP_FORGE_WRITE_INTERVAL_MS", "20")
        .args(["run", "--config"])
        .arg(&file)
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("upkeep.yaml:4:1")
            && err.contains("unknown field `pol`")
            && err.contains("poll"),
        "{err}"
    );
}

#[test]
fn two_replicas_share_one_lease_and_the_standby_takes_over() {
    let w = World::new(60.0, None);
    let a = w.spawn("a", &w.flags_with_lease("state-a", 2), &[]);
    let b = w.spawn("b", &w.flags_with_lease("state-b", 2), &[]);
    for p in [&a, &b] {
        p.wait("ready", &|| p.get("/readyz").is_some_and(|(s, _)| s == 200));
    }
    let leader_of = |p: &Proc| sample(&p.metrics(), "upkeep_leader ");
    a.wait("one leader", &|| {
        leader_of(&a).unwrap_or(0.0) + leader_of(&b).unwrap_or(0.0) == 1.0
    });
    a.wait("a pull request", &|| !w.pulls().is_empty());
    // A few more reconciles: still one PR (the standby never proposes).
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(w.pulls().len(), 1, "{:?}", w.pulls());
    let (leader, standby) = if leader_of(&a) == Some(1.0) {
        (a, b)
    } else {
        (b, a)
    };
    assert!(w.lease_holder().ends_with(&format!("_{}", leader.pid())));
    assert_eq!(leader_of(&standby), Some(0.0));
    // The leader dies without a word (no release): the standby takes over after the lease
    // expires and applies the merged update.
    leader.kill();
    w.merge(1);
    standby.wait("the standby to lead", &|| leader_of(&standby) == Some(1.0));
    assert!(w.lease_holder().ends_with(&format!("_{}", standby.pid())));
    standby.wait("the rollout", &|| w.phase() == "Succeeded");
    let (status, _) = standby.stop();
    assert!(status.success());
}

#[test]
fn a_controller_killed_mid_rollout_resumes_it_after_a_restart() {
    let w = World::new(30.0, None);
    let p = w.spawn("first", &w.flags("state"), &[]);
    p.wait("a pull request", &|| !w.pulls().is_empty());
    w.merge(1);
    p.wait("the rollout to be under way", &|| {
        matches!(w.phase().as_str(), "Backup" | "Applying")
    });
    p.kill();
    let phase_at_kill = w.phase();
    assert!(phase_at_kill != "Succeeded", "{phase_at_kill}");
    let q = w.spawn("second", &w.flags("state"), &[]);
    q.wait("the rollout to finish", &|| w.phase() == "Succeeded");
    // One success report on the PR, however many lifetimes drove the rollout.
    let comments = w.gh.with_forge(|f| f.comments(REPO, 1)).unwrap_or_default();
    let mut unique = comments.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(
        unique.len(),
        comments.len(),
        "no duplicate comment: {comments:#?}"
    );
    let (status, _) = q.stop();
    assert!(status.success());
}

#[test]
fn a_commit_to_a_local_repository_wakes_the_controller_at_once() {
    let w = World::new(1.0, None);
    let work = w.dir.path().join("work");
    let git = |args: &[&str]| {
        let out = Command::new("git")
            .args(["-c", "user.name=Ops", "-c", "user.email=ops@example.com"])
            .args(args)
            .current_dir(&work)
            .output()
            .expect("git");
        assert!(out.status.success(), "git {args:?}: {out:?}");
    };
    std::fs::create_dir_all(&work).expect("mkdir");
    git(&["clone", "-q", &w.bare.display().to_string(), "."]);
    // The local clone instead of the URL; a poll far away, so only the watch can wake it.
    let mut flags = w.flags("state");
    let at = flags.iter().position(|f| f == "--repo-url").expect("flag");
    flags[at] = "--repo".into();
    flags[at + 1] = work.display().to_string();
    let at = flags.iter().position(|f| f == "--poll").expect("flag");
    flags[at + 1] = "3600".into();
    flags.extend(["--detect-every".into(), "3600".into()]);
    let p = w.spawn("watch", &flags, &[]);
    p.wait("ready", &|| p.get("/readyz").is_some_and(|(s, _)| s == 200));
    assert!(w.rollout().is_none());
    let versions = work.join("versions.yaml");
    let text = std::fs::read_to_string(&versions).expect("read");
    std::fs::write(&versions, text.replace("v1.33.4+k3s1", "v1.33.5+k3s1")).expect("write");
    git(&["commit", "-qam", "k3s v1.33.5+k3s1 by hand"]);
    p.wait("the rollout", &|| w.rollout().is_some());
    assert_eq!(
        w.rollout().expect("rollout")["spec"]["to"].as_str(),
        Some("v1.33.5+k3s1")
    );
    let (status, logs) = p.stop();
    assert!(status.success());
    assert!(logs.contains("the base branch moved on disk"), "{logs}");
}

#[test]
fn a_leader_that_cannot_renew_its_lease_stops_acting() {
    let w = World::new(60.0, None);
    let p = w.spawn("lonely", &w.flags_with_lease("state", 2), &[]);
    p.wait("ready", &|| p.get("/readyz").is_some_and(|(s, _)| s == 200));
    let leader = || sample(&p.metrics(), "upkeep_leader ");
    let reconciles =
        || sample(&p.metrics(), "upkeep_reconcile_duration_seconds_count").unwrap_or(0.0);
    assert_eq!(leader(), Some(1.0));
    // The API refuses every Lease request for a while (an apiserver or network problem).
    w.kube.inject(upkeep_sim::kube::ClusterFault::ApiError {
        path_contains: "/leases".into(),
        method: None,
        status: 503,
        times: 1_000_000,
    });
    p.wait("the leader to stand down", &|| leader() == Some(0.0));
    // No more reconciles once it stood down (one in flight may still finish: wait until the
    // count holds still, however slow the machine).
    let mut stopped_at = reconciles();
    for _ in 0..30 {
        std::thread::sleep(Duration::from_secs(2));
        let now = reconciles();
        if now == stopped_at {
            break;
        }
        stopped_at = now;
    }
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(reconciles(), stopped_at, "no reconcile without the lease");
    let (status, logs) = p.stop();
    assert!(status.success());
    assert!(
        logs.contains("lost the lease") || logs.contains("leader election"),
        "{logs}"
    );
}

/// The next hop's pull request opens once the current hop runs in the cluster, not as soon as
/// its PR is merged: a PR built on a version still rolling out may be built on one that fails
/// and is reverted.
#[test]
fn the_next_hop_is_proposed_once_the_current_one_runs() {
    let w = World::new(60.0, None);
    let mut flags = w.flags("state");
    flags.extend(["--detect-every".into(), "1".into()]);
    let p = w.spawn("run", &flags, &[]);
    p.wait("a pull request", &|| !w.pulls().is_empty());
    let first = w.pulls();
    assert_eq!(first.len(), 1, "{first:?}");
    w.merge(1);
    let dashboard = || -> String {
        let text = common::http()
            .get(format!("{}/repos/{REPO}/issues?state=open", w.gh.url()))
            .header("authorization", format!("Bearer {TOKEN}"))
            .send()
            .and_then(|r| r.text())
            .unwrap_or_default();
        serde_json::from_str::<serde_json::Value>(&text)
            .ok()
            .and_then(|v| v.as_array().cloned())
            .unwrap_or_default()
            .iter()
            .filter_map(|i| i["body"].as_str().map(str::to_string))
            .collect()
    };
    let pulls = || -> Vec<(String, String)> {
        let text = common::http()
            .get(format!("{}/repos/{REPO}/pulls?state=all", w.gh.url()))
            .header("authorization", format!("Bearer {TOKEN}"))
            .send()
            .and_then(|r| r.text())
            .unwrap_or_default();
        serde_json::from_str::<serde_json::Value>(&text)
            .ok()
            .and_then(|v| v.as_array().cloned())
            .unwrap_or_default()
            .iter()
            .map(|p| {
                let s = |k: &str| p[k].as_str().unwrap_or_default().to_string();
                (s("state"), s("title"))
            })
            .collect()
    };
    // While the rollout runs, detections keep happening, and the next hop waits (the dashboard
    // says why).
    let said_why = std::cell::Cell::new(false);
    p.wait("the rollout to succeed", &|| {
        let open: Vec<_> = pulls().into_iter().filter(|(s, _)| s == "open").collect();
        assert!(
            open.is_empty(),
            "no next hop while the rollout runs: {open:?}"
        );
        said_why.set(said_why.get() || dashboard().contains("does not run in the cluster yet"));
        w.phase() == "Succeeded"
    });
    assert!(
        said_why.get(),
        "the dashboard said why the next hop waited: {}",
        dashboard()
    );
    // Then the next hop: from the version that now runs.
    p.wait("the next hop", &|| pulls().iter().any(|(s, _)| s == "open"));
    let to = w.rollout().expect("a rollout")["spec"]["to"]
        .as_str()
        .unwrap_or("")
        .to_string();
    let next = pulls();
    assert!(
        next.iter()
            .any(|(s, t)| s == "open" && t.starts_with(&format!("k3s: {to} -> "))),
        "{next:?}"
    );
    p.kill();
}

/// `url` as headless Chromium renders it (the DOM after scripts ran); also writes a screenshot
/// next to the world's files, to show the page is drawn.
fn browse(w: &World, url: &str) -> String {
    let shot = w.dir.path().join("status-page.png");
    let chromium = |extra: &[String]| {
        Command::new("chromium")
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
            ])
            .arg(format!(
                "--user-data-dir={}",
                w.dir.path().join("chromium").display()
            ))
            .args(extra)
            .arg(url)
            .output()
            .expect("chromium is installed (.ci/run installs it)")
    };
    let out = chromium(&[
        format!("--screenshot={}", shot.display()),
        "--window-size=1280,900".into(),
    ]);
    assert!(out.status.success(), "chromium --screenshot: {out:?}");
    let png = std::fs::read(&shot).expect("a screenshot");
    assert!(
        png.starts_with(b"\x89PNG") && png.len() > 10_000,
        "{} bytes",
        png.len()
    );
    if let Ok(dir) = std::env::var("UPKEEP_SCREENSHOT_DIR") {
        let _ = std::fs::copy(&shot, std::path::Path::new(&dir).join("status-page.png"));
    }
    let out = chromium(&["--dump-dom".into()]);
    assert!(out.status.success(), "chromium --dump-dom: {out:?}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `upkeep` with `args` against the world's cluster; (exit code, stdout, stderr).
fn upkeep_cli(w: &World, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_upkeep"))
        .env("UPKEEP_FORGE_WRITE_INTERVAL_MS", "20")
        .args(args)
        .arg("--kubeconfig")
        .arg(&w.kubeconfig)
        .output()
        .expect("upkeep");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Run `promtool test rules` with deploy/monitoring's rules on series taken from `metrics`
/// (every `upkeep_rollout_phase` sample, held for 5 hours) and the expected alerts; promtool's
/// output when it fails.
fn promtool_rule_test(dir: &std::path::Path, metrics: &str, expect: &[(&str, &str, &str)]) {
    let root = env!("CARGO_MANIFEST_DIR");
    let rule: serde_json::Value = serde_saphyr::from_str(
        &std::fs::read_to_string(format!("{root}/deploy/monitoring/prometheusrule.yaml"))
            .expect("rules"),
    )
    .expect("yaml");
    let groups = &rule["spec"]["groups"];
    std::fs::write(
        dir.join("rules.yaml"),
        serde_json::json!({ "groups": groups }).to_string(),
    )
    .expect("write");
    let series: Vec<serde_json::Value> = metrics
        .lines()
        .filter(|l| l.starts_with("upkeep_rollout_phase{"))
        .filter_map(|l| l.rsplit_once(' '))
        .map(|(s, v)| serde_json::json!({"series": s, "values": format!("{v}x300")}))
        .collect();
    // The annotations as Prometheus renders them for these labels.
    let rule_of = |alert: &str| {
        groups[0]["rules"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|r| r["alert"] == alert)
            .cloned()
            .expect("the alert exists")
    };
    let tests: Vec<serde_json::Value> = expect
        .iter()
        .map(|(alert, eval_time, rollout)| {
            let r = rule_of(alert);
            let line = metrics
                .lines()
                .find(|l| {
                    l.starts_with("upkeep_rollout_phase{")
                        && l.contains(&format!("rollout=\"{rollout}\""))
                })
                .unwrap_or_else(|| panic!("{rollout} in {metrics}"));
            let label = |k: &str| {
                line.split(&format!("{k}=\""))
                    .nth(1)
                    .and_then(|x| x.split('"').next())
                    .unwrap_or_default()
                    .to_string()
            };
            let (component, phase) = (label("component"), label("phase"));
            let render = |t: &serde_json::Value| {
                t.as_str()
                    .unwrap_or_default()
                    .replace("{{ $labels.rollout }}", rollout)
                    .replace("{{ $labels.component }}", &component)
                    .replace("{{ $labels.phase }}", &phase)
            };
            serde_json::json!({
                "eval_time": eval_time,
                "alertname": alert,
                "exp_alerts": [{
                    "exp_labels": {"rollout": rollout, "component": component, "phase": phase,
                        "severity": r["labels"]["severity"]},
                    "exp_annotations": {"summary": render(&r["annotations"]["summary"]),
                        "description": render(&r["annotations"]["description"])},
                }],
            })
        })
        .collect();
    let test = serde_json::json!({
        "rule_files": ["rules.yaml"],
        "evaluation_interval": "1m",
        "tests": [{"interval": "1m", "input_series": series, "alert_rule_test": tests}],
    });
    std::fs::write(dir.join("test.yaml"), test.to_string()).expect("write");
    let out = Command::new("promtool")
        .args(["test", "rules", "test.yaml"])
        .current_dir(dir)
        .output()
        .expect("promtool is installed (.ci/run installs it)");
    assert!(
        out.status.success(),
        "promtool test rules: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A failed rollout stays on the page, in the metrics (so UpkeepRolloutFailed fires) and in
/// `upkeep get` after the revert moved versions.yaml on, until a human acknowledges it; one left
/// unfinished that nothing drives any more stays too (UpkeepRolloutStuck).
#[test]
fn a_failed_or_stuck_rollout_stays_visible_until_acknowledged_and_its_alert_fires() {
    // The controller times hops in real time: a node that never comes back fails in 5 s.
    let w = World::new(
        600.0,
        Some("apiVersion: upkeep.dev/v1alpha1\nkind: Policy\nrollouts:\n  hopTimeout: 5s\n"),
    );
    w.kube
        .inject(upkeep_sim::kube::ClusterFault::NodeNeverReady {
            node: "agent-1".into(),
        });
    let p = w.spawn("run", &w.flags("state"), &[]);
    p.wait("a pull request", &|| !w.pulls().is_empty());
    w.merge(1);
    p.wait("the rollout to need attention and be reverted", &|| {
        w.phase() == "RequiresAttention"
            && w.rollout()
                .is_some_and(|r| !r["status"]["revert"].is_null())
    });
    let failed = w.rollout().expect("rollout")["metadata"]["name"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    // A rollout left in Backup of a component versions.yaml no longer tracks (nothing drives it
    // any more; one replaced by a newer merge ends as Superseded instead, tests/apply.rs).
    let leftover = w.dir.path().join("leftover.yaml");
    std::fs::write(
        &leftover,
        "apiVersion: upkeep.dev/v1alpha1\nkind: UpkeepRollout\nmetadata:\n  name: traefik-v3.1.0\n  namespace: upkeep-system\nspec:\n  component: traefik\n  from: v3.0.0\n  to: v3.1.0\n  hops: [v3.1.0]\n",
    )
    .expect("write");
    let kubectl = |args: &[&str]| {
        let out = Command::new("kubectl")
            .arg("--kubeconfig")
            .arg(&w.kubeconfig)
            .args(args)
            .output()
            .expect("kubectl");
        assert!(out.status.success(), "kubectl {args:?}: {out:?}");
    };
    kubectl(&["apply", "-f", &leftover.display().to_string()]);
    kubectl(&[
        "patch",
        "ukr",
        "traefik-v3.1.0",
        "-n",
        "upkeep-system",
        "--subresource=status",
        "--type=merge",
        "-p",
        r#"{"status":{"phase":"Backup","message":"taking a Longhorn system backup"}}"#,
    ]);
    // Well after the revert, both are still reported.
    p.wait("both rollouts in the metrics", &|| {
        let m = p.metrics();
        m.contains(&format!(
            "rollout=\"{failed}\",component=\"k3s\",phase=\"RequiresAttention\"}} 1"
        )) && m.contains("rollout=\"traefik-v3.1.0\",component=\"traefik\",phase=\"Backup\"} 1")
    });
    std::thread::sleep(Duration::from_secs(3));
    let m = p.metrics();
    assert!(m.contains(&format!("rollout=\"{failed}\"")), "{m}");
    let page = browse(&w, &format!("{}/", p.base));
    assert!(
        page.contains(&failed) && page.contains("RequiresAttention"),
        "{page}"
    );
    // The failure says what to do: the runbook, and how to acknowledge it.
    assert!(
        page.contains(&format!("upkeep acknowledge {failed}")) && page.contains("runbook"),
        "{page}"
    );
    assert!(page.contains("traefik-v3.1.0"), "{page}");
    // The alerts select them, as Prometheus evaluates the shipped rules.
    promtool_rule_test(
        w.dir.path(),
        &m,
        &[
            ("UpkeepRolloutFailed", "2m", &failed),
            ("UpkeepRolloutStuck", "3h5m", "traefik-v3.1.0"),
        ],
    );
    // `upkeep get` lists them and exits 1 while a failure is unacknowledged.
    let (code, out, err) = upkeep_cli(&w, &["get"]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(
        out.contains(&failed) && out.contains("RequiresAttention"),
        "{out}"
    );
    assert!(
        out.contains("traefik-v3.1.0") && out.contains("Backup"),
        "{out}"
    );
    // Only a failure is acknowledged; a typo is named with what exists.
    let (code, _, err) = upkeep_cli(&w, &["acknowledge", "traefik-v3.1.0"]);
    assert_eq!(code, 1);
    assert!(err.contains("is Backup, not failed"), "{err}");
    let (code, _, err) = upkeep_cli(&w, &["acknowledge", "k3s-nope"]);
    assert_eq!(code, 1);
    assert!(
        err.contains("there is no rollout `k3s-nope`") && err.contains(&failed),
        "{err}"
    );
    let (code, out, err) = upkeep_cli(&w, &["acknowledge", &failed, "--by", "ana"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("acknowledged by ana at"), "{out}");
    p.wait("the acknowledged failure to leave the metrics", &|| {
        !p.metrics().contains(&format!("rollout=\"{failed}\""))
    });
    // Off the page's "needs a human" part; in its short history, with who acknowledged it.
    let (_, page) = p.get("/").expect("page");
    assert!(
        !page.contains(&format!("<b>{failed} is RequiresAttention")),
        "{page}"
    );
    assert!(
        page.contains("Recent rollouts") && page.contains("acknowledged by ana at"),
        "{page}"
    );
    let (code, out, _) = upkeep_cli(&w, &["get", "--output", "json"]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("\"acknowledged\": \"ana at"), "{out}");
    // k3s cannot follow the revert (a downgrade): said once, not on every reconcile.
    let log = std::fs::read_to_string(&p.log).unwrap_or_default();
    let said = log
        .lines()
        .filter(|l| l.contains("no rollout can start"))
        .collect::<Vec<_>>();
    assert_eq!(said.len(), 1, "{said:#?}");
    assert!(said[0].contains("is a downgrade"), "{}", said[0]);
    p.kill();
}

/// What a wrong kubeconfig gets: an unreachable API and a refused token are named as such, with
/// the likely cause, never as RBAC and never as kube's debug structures.
#[test]
fn an_unreachable_api_and_a_bad_token_are_said_as_such() {
    let w = World::new(60.0, None);
    let good = std::fs::read_to_string(&w.kubeconfig).expect("kubeconfig");
    let server = good
        .lines()
        .find_map(|l| l.trim().strip_prefix("server: "))
        .expect("a server line")
        .to_string();
    let token = good
        .lines()
        .find_map(|l| l.trim().strip_prefix("token: "))
        .expect("a token line")
        .to_string();
    let run = |kubeconfig: &str| {
        let path = w.dir.path().join("other-kubeconfig");
        std::fs::write(&path, kubeconfig).expect("write");
        let out = Command::new(env!("CARGO_BIN_EXE_upkeep"))
            .env("UPKEEP_FORGE_WRITE_INTERVAL_MS", "20")
            .args(["get", "--kubeconfig"])
            .arg(&path)
            .output()
            .expect("upkeep");
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let closed = free_port();
    let (code, err) = run(&good.replace(&server, &format!("https://127.0.0.1:{closed}")));
    assert_eq!(code, Some(1));
    assert!(err.contains("cannot reach the Kubernetes API"), "{err}");
    assert!(
        !err.contains("RBAC") && !err.contains("ErrorResponse"),
        "{err}"
    );
    let (code, err) = run(&good.replace(&token, "not-the-token"));
    assert_eq!(code, Some(1));
    assert!(
        err.contains("did not accept upkeep's credentials (401"),
        "{err}"
    );
    assert!(
        !err.contains("RBAC") && !err.contains("ErrorResponse"),
        "{err}"
    );
}

/// `upkeep apply --output json` prints the rollouts and what could not be applied, for tools;
/// `kubectl get rollouts,nodes -A` (the demo's hint) is a command kubectl takes.
#[test]
fn apply_prints_json_when_asked() {
    let w = World::new(60.0, None);
    let out = Command::new(env!("CARGO_BIN_EXE_upkeep"))
        .env("UPKEEP_FORGE_WRITE_INTERVAL_MS", "20")
        .args(["apply", "--output", "json", "--wait", "0", "--repo-url"])
        .arg(format!("file://{}", w.bare.display()))
        .arg("--kubeconfig")
        .arg(&w.kubeconfig)
        .arg("--state-dir")
        .arg(w.dir.path().join("apply-state"))
        .env("GITHUB_TOKEN", TOKEN)
        .output()
        .expect("upkeep apply");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_str(&text).expect("JSON");
    assert_eq!(v["rollouts"], serde_json::json!([]), "{text}");
    assert_eq!(v["notApplied"], serde_json::json!({}), "{text}");
    let k = Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(&w.kubeconfig)
        .args(["get", "upkeeprollouts,nodes", "-A"])
        .output()
        .expect("kubectl");
    assert!(k.status.success(), "{k:?}");
    assert!(
        String::from_utf8_lossy(&k.stdout).contains("agent-1"),
        "{k:?}"
    );
}

/// `upkeep suspend k3s` holds a merged update (the rollout waits, saying who suspended it and
/// why), the status page says so, and `upkeep resume k3s` lets it run.
#[test]
fn a_suspended_component_is_not_applied_until_resumed() {
    let w = World::new(60.0, None);
    let p = w.spawn("run", &w.flags("state"), &[]);
    p.wait("a pull request", &|| !w.pulls().is_empty());
    let (code, out, err) = upkeep_cli(
        &w,
        &[
            "suspend",
            "k3s",
            "--reason",
            "disk swap on server-1",
            "--by",
            "ana",
        ],
    );
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("suspended k3s: ana at"), "{out}");
    w.merge(1);
    p.wait("the rollout to wait for the suspension", &|| {
        w.phase() == "WaitingForWindow"
            && w.rollout().is_some_and(|r| {
                r["status"]["message"]
                    .as_str()
                    .is_some_and(|m| m.contains("suspended by ana at") && m.contains("disk swap"))
            })
    });
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(w.phase(), "WaitingForWindow");
    assert!(
        w.kube
            .list("", "nodes")
            .iter()
            .all(|n| n["status"]["nodeInfo"]["kubeletVersion"] == "v1.33.4+k3s1"),
        "nothing was applied"
    );
    let (_, page) = p.get("/").expect("page");
    assert!(
        page.contains("k3s is suspended") && page.contains("upkeep resume k3s"),
        "{page}"
    );
    let (code, out, _) = upkeep_cli(&w, &["resume", "k3s"]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("resumed k3s"), "{out}");
    p.wait("the rollout after the resume", &|| w.phase() == "Succeeded");
    let (code, out, _) = upkeep_cli(&w, &["resume", "k3s"]);
    assert_eq!(code, 0);
    assert!(out.contains("k3s was not suspended"), "{out}");
    p.kill();
}

/// `upkeep doctor` checks the installation like `flux check`: all good in the emulated cluster
/// with the right token; a refused token fails and says so.
#[test]
fn doctor_checks_the_installation_and_the_token() {
    let w = World::new(60.0, None);
    let doctor = |token: &str| {
        let out = Command::new(env!("CARGO_BIN_EXE_upkeep"))
            .env("UPKEEP_FORGE_WRITE_INTERVAL_MS", "20")
            .args(["doctor", "--owner", "homelab", "--name", "cluster"])
            .arg("--github-api-url")
            .arg(w.gh.url())
            .arg("--kubeconfig")
            .arg(&w.kubeconfig)
            .env("GITHUB_TOKEN", token)
            .output()
            .expect("upkeep doctor");
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    };
    let (code, out) = doctor(TOKEN);
    assert_eq!(code, Some(0), "{out}");
    for line in [
        "✔ kubernetes: reachable; 3 nodes, all Ready",
        "✔ system-upgrade-controller",
        "✔ flux",
        "✔ github token: valid; may push",
    ] {
        assert!(out.contains(line), "{line} in {out}");
    }
    let (code, out) = doctor("ghp_wrong");
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.contains("✗ github token") && out.contains("refused"),
        "{out}"
    );
    assert!(!out.contains("ghp_wrong"), "{out}");
}

/// `upkeep reconcile` asks a controller that would otherwise wait an hour, and returns once the
/// controller says it handled the request.
#[test]
fn reconcile_now_is_handled_at_once() {
    let w = World::new(60.0, None);
    let mut flags = w.flags("state");
    for pair in flags.chunks_mut(2) {
        if pair[0] == "--poll" {
            pair[1] = "3600".into();
        }
    }
    flags.extend(["--detect-every".into(), "3600".into()]);
    let p = w.spawn("run", &flags, &[]);
    p.wait("ready", &|| p.get("/readyz").is_some_and(|(s, _)| s == 200));
    // Polling and detection are an hour apart: only the request makes it reconcile now.
    let before = p.metrics();
    let (code, out, err) = upkeep_cli(&w, &["reconcile", "--wait", "30"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("reconciled"), "{out}");
    let log = std::fs::read_to_string(&p.log).unwrap_or_default();
    assert!(log.contains("reconcile requested"), "{log}");
    assert_ne!(
        sample(&p.metrics(), "upkeep_reconcile_duration_seconds_count"),
        sample(&before, "upkeep_reconcile_duration_seconds_count")
    );
    // The watch and the handled mark are within deploy/'s RBAC.
    let denied = common::rbac::denied(&w.kube.audit());
    assert!(denied.is_empty(), "{denied:#?}");
    p.kill();
}

/// The dependency dashboard's box "apply now as an emergency" on a rollout that waits for its
/// window: ticked by a human, acted on at the next reconcile, and answered on the dashboard.
#[test]
fn a_ticked_emergency_box_starts_a_waiting_rollout() {
    let closed = "apiVersion: upkeep.dev/v1alpha1\nkind: Policy\nwindows:\n  - name: new-year\n    kind: allow\n    schedule: \"0 3 1 1 *\"\n    duration: 1h\n    timeZone: UTC\n";
    let w = World::new(60.0, Some(closed));
    let mut flags = w.flags("state");
    flags.extend(["--detect-every".into(), "1".into()]);
    let p = w.spawn("run", &flags, &[]);
    p.wait("a pull request", &|| !w.pulls().is_empty());
    w.merge(1);
    let issue = |n: u64| -> serde_json::Value {
        let text = common::http()
            .get(format!("{}/repos/{REPO}/issues/{n}", w.gh.url()))
            .header("authorization", format!("Bearer {TOKEN}"))
            .send()
            .and_then(|r| r.text())
            .unwrap_or_default();
        serde_json::from_str(&text).unwrap_or_default()
    };
    let dashboard = || -> Option<(u64, String)> {
        (1..6).find_map(|n| {
            let i = issue(n);
            let body = i["body"].as_str()?.to_string();
            body.contains("<!-- upkeep:dashboard -->")
                .then_some((n, body))
        })
    };
    p.wait("the emergency box on the dashboard", &|| {
        dashboard().is_some_and(|(_, b)| b.contains("<!-- upkeep:emergency="))
    });
    assert_eq!(w.phase(), "WaitingForWindow");
    let (n, body) = dashboard().expect("dashboard");
    let ticked = body.replacen(
        "- [ ] <!-- upkeep:emergency=",
        "- [x] <!-- upkeep:emergency=",
        1,
    );
    let r = common::http()
        .patch(format!("{}/repos/{REPO}/issues/{n}", w.gh.url()))
        .header("authorization", format!("Bearer {TOKEN}"))
        .body(serde_json::json!({"body": ticked}).to_string())
        .send()
        .expect("tick");
    assert!(r.status().is_success());
    p.wait("the rollout, started as an emergency", &|| {
        w.phase() == "Succeeded"
    });
    let said = w.gh.with_forge(|f| f.comments(REPO, n)).unwrap_or_default();
    assert!(
        said.iter()
            .any(|c| c.contains("may now start outside its window")),
        "{said:?}"
    );
    p.kill();
}

/// Receivers of every kind: each notification is delivered once, a flaky receiver gets it after
/// retries, a dead one neither holds up the rollout nor gets anything twice, and a restart of the
/// controller sends nothing again. The secrets never reach the log.
#[test]
fn notifications_are_delivered_once_across_a_restart_and_a_dead_receiver_holds_nothing_up() {
    let (rx, _stop) = upkeep_sim::receiver::ReceiverSim::start_until_stopped().expect("receivers");
    rx.protect_ntfy("upgrades", "tk_ntfysecret");
    rx.hang("/dead/");
    rx.fail("/flaky/", 503, None, 2);
    let slack_url = format!("{}/slack/T0/B0/slacksecret", rx.url());
    let policy = format!(
        "apiVersion: upkeep.dev/v1alpha1\nkind: Policy\nnotifications:\n  providers:\n    - name: team\n      type: slack\n      addressFrom: {{env: UPKEEP_TEST_SLACK}}\n    - name: chat\n      type: discord\n      addressFrom: {{file: DISCORD_FILE}}\n    - name: phone\n      type: ntfy\n      address: {base}/ntfy/upgrades\n      tokenFrom: {{env: UPKEEP_TEST_NTFY}}\n    - name: audit\n      type: generic\n      address: {base}/flaky/hook\n    - name: down\n      type: generic\n      address: {base}/dead/hook\n  alerts:\n    - name: everything\n      provider: team\n    - name: chat-failures\n      provider: chat\n      events: [rolloutStarted, rolloutSucceeded]\n    - name: phone\n      provider: phone\n      events: [rolloutSucceeded]\n    - name: audit\n      provider: audit\n    - name: down\n      provider: down\nreports:\n  monthlyOnDashboard: true\n",
        base = rx.url()
    );
    let dir = tempfile::tempdir().expect("dir");
    let discord_file = dir.path().join("discord-url");
    std::fs::write(
        &discord_file,
        format!("{}/discord/123/discordsecret\n", rx.url()),
    )
    .expect("write");
    let policy = policy.replace("DISCORD_FILE", &discord_file.display().to_string());
    let w = World::new(600.0, Some(&policy));
    let envs = [
        ("UPKEEP_TEST_SLACK", slack_url.as_str()),
        ("UPKEEP_TEST_NTFY", "tk_ntfysecret"),
    ];
    let p = w.spawn("first", &w.flags("state"), &envs);
    p.wait("a pull request", &|| !w.pulls().is_empty());
    w.merge(1);
    // The rollout runs to its end while the dead receiver has not answered once.
    p.wait("the rollout", &|| w.phase() == "Succeeded");
    p.wait("the notifications", &|| {
        rx.received_at("/slack/").len() >= 2
            && rx.received_at("/discord/").len() >= 2
            && !rx.received_at("/ntfy/").is_empty()
            && rx.received_at("/flaky/").len() >= 2
    });
    assert!(
        !p.metrics()
            .contains("upkeep_notifications_total{provider=\"down\",result=\"failed\"} 1"),
        "still trying the dead receiver in the background"
    );
    let ids = |prefix: &str| -> Vec<String> {
        rx.received_at(prefix)
            .iter()
            .map(|r| {
                r.header("x-upkeep-event-id")
                    .unwrap_or_default()
                    .to_string()
            })
            .collect()
    };
    let name = w.rollout().expect("rollout")["metadata"]["name"]
        .as_str()
        .unwrap_or("")
        .to_string();
    let got = ids("/flaky/");
    assert!(
        got.len() == 2
            && got[0].starts_with(&format!("rollout/{name}/"))
            && got[0].ends_with("/started")
            && got[1].ends_with("/succeeded"),
        "each once, after two 503s: {got:?}"
    );
    assert!(
        rx.refused() >= 4,
        "two 503s, and the dead receiver holds a request per notice"
    );
    let slack = rx.received_at("/slack/");
    assert!(
        slack[1].json()["text"]
            .as_str()
            .unwrap_or("")
            .starts_with("*Rolled out k3s v1.33.4+k3s1 → "),
        "{slack:?}"
    );
    let ntfy = rx.received_at("/ntfy/");
    assert_eq!(ntfy.len(), 1, "only what its alert asks for: {ntfy:?}");
    assert_eq!(
        ntfy[0].header("authorization"),
        Some("Bearer tk_ntfysecret")
    );
    assert!(
        ntfy[0]
            .header("title")
            .unwrap_or("")
            .starts_with("Rolled out k3s")
    );
    // A restart (the state directory gone too): nothing is sent again.
    let (_, logs) = p.stop();
    let before = rx.received().len();
    let q = w.spawn("second", &w.flags("state-2"), &envs);
    q.wait("three reconciles", &|| {
        sample(&q.metrics(), "upkeep_reconcile_duration_seconds_count").is_some_and(|n| n >= 3.0)
    });
    assert_eq!(rx.received().len(), before, "{:?}", rx.received());
    // Last month's report is on the dashboard, once, although two controllers ran.
    let month = upkeep::monthly::Month::previous(Utc::now(), chrono_tz::UTC).to_string();
    let marker = format!("<!-- upkeep:monthly-report={month} -->");
    let reports: Vec<String> = (1..10)
        .flat_map(|n| w.gh.with_forge(|f| f.comments(REPO, n)).unwrap_or_default())
        .filter(|c| c.contains(&marker))
        .collect();
    assert_eq!(reports.len(), 1, "{reports:?}");
    assert!(reports[0].contains("# Update report: "), "{}", reports[0]);
    let (_, more) = q.stop();
    for secret in ["slacksecret", "discordsecret", "tk_ntfysecret"] {
        assert!(
            !logs.contains(secret) && !more.contains(secret),
            "{secret} in the log"
        );
    }
    let denied = common::rbac::denied(&w.kube.audit());
    assert!(denied.is_empty(), "deploy/ does not allow: {denied:#?}");
}
