//! What one look at the cluster costs the Kubernetes API: requests and response bytes per look,
//! idle (`cluster::observe`, what every reconcile does) and busy (a look of `apply::run` while
//! a k3s rollout is in progress: observe, read the Rollout, save its status, re-assert the
//! Plans). The cluster: 3 servers and 20 agents on embedded etcd, Flux through flux-operator,
//! Longhorn with 20 volumes (so 23 instance managers, each with its pod and its
//! PodDisruptionBudget), the system-upgrade-controller.
//!
//! Run with `cargo bench --bench looks`. Figures go to docs/benchmarks.md.

use std::sync::atomic::Ordering;
use std::time::Duration;

use upkeep::apply::{Options, Repo};
use upkeep::gitrepo::Author;
use upkeep_sim::clock::SimClock;
use upkeep_sim::kube::{ClusterSpec, KubeOptions, KubeSim, Timings};

mod common;

const IDLE_LOOKS: u64 = 20;
const BUSY: Duration = Duration::from_secs(10);

/// (requests, bytes, node lists) served so far.
fn counts(kube: &KubeSim) -> (u64, u64, u64) {
    let c = &kube.shared.counters;
    let nodes = c
        .lists
        .lock()
        .map(|l| l.get("nodes").copied().unwrap_or(0))
        .unwrap_or(0);
    (
        c.requests.load(Ordering::Relaxed),
        c.bytes_out.load(Ordering::Relaxed),
        nodes,
    )
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
            servers: 3,
            agents: 20,
            volumes: 20,
            ..ClusterSpec::default()
        },
        timings: Timings {
            // The rollout stays in Applying for the whole measurement.
            node_upgrade: Duration::from_secs(3600),
            snapshot: Duration::from_secs(1),
            ..Timings::default()
        },
        ..KubeOptions::default()
    })
    .expect("emulator");
    let dir = tempfile::tempdir().expect("tempdir");
    let kc = dir.path().join("kubeconfig");
    kube.write_kubeconfig(&kc).expect("kubeconfig");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let client = rt
        .block_on(upkeep::cluster::client(Some(&kc)))
        .expect("client");
    let ns = upkeep::cluster::Namespaces::default();
    // Warm the connection.
    rt.block_on(upkeep::cluster::observe(&client, &ns))
        .expect("observe");
    let (r0, b0, _) = counts(&kube);
    for _ in 0..IDLE_LOOKS {
        rt.block_on(upkeep::cluster::observe(&client, &ns))
            .expect("observe");
    }
    let (r1, b1, _) = counts(&kube);
    println!(
        "idle look (cluster::observe; 23 nodes, 20 volumes, 23 Longhorn PDBs): {:.1} requests, {:.1} KiB per look",
        (r1 - r0) as f64 / IDLE_LOOKS as f64,
        (b1 - b0) as f64 / IDLE_LOOKS as f64 / 1024.0
    );

    let (config, git) = common::k3s_update(dir.path(), start);
    let opts = Options {
        namespace: "upkeep-system".into(),
        only: None,
        emergency: false,
        timeout: chrono::Duration::hours(24),
        budget: BUSY,
        poll: Duration::from_millis(100),
        backup: true,
        agent_concurrency: 2,
        releases: Default::default(),
        drain: true,
        allow_degraded_volumes: false,
        namespaces: Default::default(),
        pace: Default::default(),
    };
    let repo: Repo<'_, upkeep::forge::GitHub> = Repo {
        git: &git,
        forge: None,
        base: "main".into(),
        subdir: String::new(),
        author: Author::default(),
    };
    let (r0, b0, n0) = counts(&kube);
    let clock = kube.clock().clone();
    let summary = rt
        .block_on(upkeep::apply::run(
            &client,
            &repo,
            &config,
            &opts,
            &move || clock.now(),
        ))
        .expect("apply");
    let (r1, b1, n1) = counts(&kube);
    let looks = (n1 - n0).max(1);
    println!(
        "busy look (apply::run, a k3s rollout in progress, {} looks in {} s): {:.1} requests, {:.1} KiB per look; ended in {:?}",
        looks,
        BUSY.as_secs(),
        (r1 - r0) as f64 / looks as f64,
        (b1 - b0) as f64 / looks as f64 / 1024.0,
        summary.first().map(|s| s.1)
    );
}
