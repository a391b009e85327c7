//! The controller idle: `upkeep run` over a config repository of 50 components that are all up to
//! date, against the emulators on loopback (GitHub releases and forge with git over smart HTTP;
//! the Kubernetes API). Measures, over a window after warm-up: CPU per reconcile, requests per
//! reconcile (git fetches, forge reads and writes, upstream release requests and how many were
//! 304s, Kubernetes API requests) and the process's RSS.
//!
//! Run with `cargo bench --bench idle`. Figures go to docs/benchmarks.md.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use upkeep_sim::clock::SimClock;
use upkeep_sim::kube::{KubeOptions, KubeSim};
use upkeep_sim::upstream::UpstreamSim;

mod common;

const COMPONENTS: usize = 50;
const POLL: u64 = 1;
const DETECT_EVERY: u64 = 10;
const WINDOW: Duration = Duration::from_secs(31);

fn metric(text: &str, prefix: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(prefix))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// utime + stime of `pid`, in seconds.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command (which may hold spaces) start after the last ')'.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    // utime and stime are fields 14 and 15 of stat, 12 and 13 after the ')'.
    (ticks(11) + ticks(12)) / hz
}

fn status_kib(pid: u32, key: &str) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with(key))
        .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        .unwrap_or(0.0)
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    upkeep::sources::install_crypto_provider();
    let dir = tempfile::tempdir().expect("tempdir");
    let gh = UpstreamSim::start_in_thread().expect("github");
    let seed = dir.path().join("seed");
    common::seed_components(&gh, &seed, COMPONENTS, 0);
    gh.enable_forge(&dir.path().join("forge"));
    gh.with_forge(|f| f.create_repo("bench/config", Some(&seed), chrono::Utc::now()))
        .expect("forge")
        .expect("repo");
    let kube = KubeSim::start_in_thread(KubeOptions {
        clock: SimClock::new(chrono::Utc::now(), 1.0),
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
    let mut child = Command::new(env!("CARGO_BIN_EXE_upkeep"))
        .args([
            "run",
            "--owner",
            "bench",
            "--name",
            "config",
            "--poll",
            &POLL.to_string(),
            "--detect-every",
            &DETECT_EVERY.to_string(),
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--repo-url",
            &format!("{}/git/bench/config.git", gh.url()),
            "--github-api-url",
            &gh.url(),
        ])
        .arg("--kubeconfig")
        .arg(&kc)
        .arg("--state-dir")
        .arg(dir.path().join("state"))
        .arg("--cache-dir")
        .arg(dir.path().join("cache"))
        .env_remove("GITHUB_TOKEN")
        .env("UPKEEP_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("upkeep run");
    let pid = child.id();
    let metrics = || {
        reqwest::blocking::get(format!("{base}/metrics"))
            .and_then(|r| r.text())
            .unwrap_or_default()
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    while metric(&metrics(), "upkeep_reconcile_duration_seconds_count") < 2.0 {
        assert!(Instant::now() < deadline, "the controller never reconciled");
        std::thread::sleep(Duration::from_millis(100));
    }
    // Warm: the mirror, the ETag cache and the TLS connections exist.
    std::thread::sleep(Duration::from_secs(2));
    // The controller's metrics, the GitHub and Kubernetes emulators' counters, and its CPU.
    let snapshot = || {
        (
            metrics(),
            gh.counters(),
            kube.shared
                .counters
                .requests
                .load(std::sync::atomic::Ordering::Relaxed),
            kube.shared
                .counters
                .bytes_out
                .load(std::sync::atomic::Ordering::Relaxed),
            cpu_seconds(pid),
        )
    };
    let (m0, g0, k0, kb0, c0) = snapshot();
    std::thread::sleep(WINDOW);
    let (m1, g1, k1, kb1, c1) = snapshot();
    let (rss, hwm) = (status_kib(pid, "VmRSS:"), status_kib(pid, "VmHWM:"));
    // SAFETY: signalling our own child.
    unsafe {
        libc::kill(pid as i32, libc::SIGTERM);
    }
    let _ = child.wait();
    let d = |p: &str| metric(&m1, p) - metric(&m0, p);
    let reconciles = d("upkeep_reconcile_duration_seconds_count");
    let errors = d("upkeep_reconcile_errors_total");
    let ok = d("upkeep_upstream_requests_total{status=\"ok\"}");
    let not_modified = d("upkeep_upstream_requests_total{status=\"not_modified\"}");
    let upstream = ok + not_modified + d("upkeep_upstream_requests_total{status=\"error\"}");
    let git_fetches = (g1.git_fetches - g0.git_fetches) as f64;
    let gh_requests = (g1.requests - g0.requests) as f64;
    let writes = g1.writes - g0.writes;
    let detections = upstream / COMPONENTS as f64;
    println!(
        "upkeep run, idle: {COMPONENTS} components up to date, poll {POLL} s, detect every {DETECT_EVERY} s, {} s window",
        WINDOW.as_secs()
    );
    println!("  reconciles:             {reconciles:.0} ({errors:.0} failed)");
    println!(
        "  CPU per reconcile:      {:.1} ms ({:.2} s over the window)",
        (c1 - c0) * 1e3 / reconciles.max(1.0),
        c1 - c0
    );
    println!(
        "  git fetches/reconcile:  {:.2}",
        git_fetches / reconciles.max(1.0)
    );
    println!(
        "  forge writes:           {writes} (GitHub emulator requests/reconcile, git and releases included: {:.1})",
        gh_requests / reconciles.max(1.0)
    );
    println!(
        "  upstream requests:      {upstream:.0} in {detections:.1} detections ({not_modified:.0} answered 304)"
    );
    println!(
        "  kube API requests/rec.: {:.1} ({:.1} KiB of responses)",
        (k1 - k0) as f64 / reconciles.max(1.0),
        (kb1 - kb0) as f64 / reconciles.max(1.0) / 1024.0
    );
    println!(
        "  RSS:                    {:.1} MiB now, {:.1} MiB peak",
        rss / 1024.0,
        hwm / 1024.0
    );
    assert_eq!(writes, 0, "an idle controller writes nothing to the forge");
    assert_eq!(errors, 0.0, "no reconcile failed");
}
