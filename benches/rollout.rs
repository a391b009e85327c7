//! A simulated 200-node k3s rollout driven by the real controller code (`apply::run`): 200
//! agent nodes (no server, so that every node goes c at a time and ceil(200/c)*T is the ideal),
//! per-node time T = 90 s, c = 10 at a time, on the simulated clock at
//! 60x. Reports the simulated duration against the ideal, the controller's CPU time and the peak
//! RSS.
//!
//! The emulator runs in this process on a runtime of its own (two worker threads); the controller
//! runs on the main thread in a current-thread runtime, so the main thread's CPU time
//! (RUSAGE_THREAD) is the controller's alone. Peak RSS is the whole process (controller and
//! emulator): see docs/benchmarks.md.
//!
//! Run with `cargo bench --bench rollout`.

use std::time::{Duration, Instant};

use upkeep::apply::{Options, Repo};
use upkeep::gitrepo::Author;
use upkeep::rollout::Phase;
use upkeep_sim::clock::SimClock;
use upkeep_sim::kube::{ClusterSpec, KubeOptions, KubeSim, Timings};

mod common;

const AGENTS: usize = 200;
const CONCURRENCY: u64 = 10;
const T: u64 = 90;
const SPEED: f64 = 60.0;

fn thread_cpu() -> Duration {
    // SAFETY: a zeroed rusage is valid for getrusage to fill in.
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: RUSAGE_THREAD on the calling thread with a valid pointer.
    unsafe { libc::getrusage(libc::RUSAGE_THREAD, &mut u) };
    Duration::from_secs(u.ru_utime.tv_sec as u64 + u.ru_stime.tv_sec as u64)
        + Duration::from_micros(u.ru_utime.tv_usec as u64 + u.ru_stime.tv_usec as u64)
}

fn peak_rss_mib() -> f64 {
    // SAFETY: as above, for the whole process.
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut u) };
    u.ru_maxrss as f64 / 1024.0
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    upkeep::sources::install_crypto_provider();
    let start: chrono::DateTime<chrono::Utc> = "2026-11-21T12:00:00Z".parse().expect("date");
    let kube = KubeSim::start_in_thread(KubeOptions {
        clock: SimClock::new(start, 1.0),
        cluster: ClusterSpec {
            servers: 0,
            agents: AGENTS,
            volumes: 0,
            longhorn_version: None,
            flux_version: None,
            ..ClusterSpec::default()
        },
        timings: Timings {
            node_upgrade: Duration::from_secs(T),
            drain: Duration::ZERO,
            ..Timings::default()
        },
        ..KubeOptions::default()
    })
    .expect("emulator");
    let dir = tempfile::tempdir().expect("tempdir");
    let (config, git) = common::k3s_update(dir.path(), start);
    let kc = dir.path().join("kubeconfig");
    kube.write_kubeconfig(&kc).expect("kubeconfig");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let clock = kube.clock().clone();
    let opts = Options {
        namespace: "upkeep-system".into(),
        only: None,
        emergency: false,
        timeout: chrono::Duration::hours(24),
        // Counted on the simulated clock, which runs SPEED times real time here: five minutes.
        budget: Duration::from_secs(300).mul_f64(SPEED),
        poll: Duration::from_millis(100),
        backup: false,
        agent_concurrency: CONCURRENCY,
        releases: Default::default(),
        drain: false,
        allow_degraded_volumes: false,
        namespaces: Default::default(),
        pace: Default::default(),
    };
    let cpu0 = thread_cpu();
    let wall = Instant::now();
    kube.clock().set_speed(SPEED);
    let sim0 = clock.now();
    let summary = rt.block_on(async {
        let client = upkeep::cluster::client(Some(&kc)).await.expect("client");
        let repo: Repo<'_, upkeep::forge::GitHub> = Repo {
            git: &git,
            forge: None,
            base: "main".into(),
            subdir: String::new(),
            author: Author::default(),
        };
        let c = clock.clone();
        upkeep::apply::run(&client, &repo, &config, &opts, &move || c.now())
            .await
            .expect("apply")
    });
    let wall = wall.elapsed();
    let cpu = thread_cpu() - cpu0;
    let sim = (clock.now() - sim0).num_seconds();
    assert_eq!(
        summary.first().map(|s| s.1),
        Some(Phase::Succeeded),
        "{summary:?}"
    );
    let waves = (AGENTS as u64).div_ceil(CONCURRENCY);
    let ideal = waves * T;
    let formula = 200u64.div_ceil(CONCURRENCY) * T;
    println!(
        "200-node k3s rollout ({AGENTS} nodes upgraded c = {CONCURRENCY} at a time, T = {T} s) at {SPEED}x: {sim} s simulated from the Rollout's creation to Succeeded; ideal ceil(200/c)*T = {ideal} s ({waves} waves; formula {formula} s): {:+.1}% controller overhead; {:.2} s wall; controller CPU {:.2} s; peak RSS {:.1} MiB (controller and emulator)",
        (sim as f64 / ideal as f64 - 1.0) * 100.0,
        wall.as_secs_f64(),
        cpu.as_secs_f64(),
        peak_rss_mib()
    );
}
