//! The simulators under load, on these 2 cores:
//!
//! 1. GETs per second: `upkeep sim serve` in its own process; 32 concurrent keep-alive HTTPS
//!    clients GET a node for 5 seconds.
//! 2. 1,000 open watches on nodes: all open, then one node changes; how long until every watch
//!    has the event, and the emulator's RSS with them open.
//! 3. A 500-node k3s rollout (3 servers, 497 agents; 90 s per node, agents 10 at a time) on the
//!    simulated clock at 3,600x: wall time against the ideal.
//!
//! Run with `cargo bench --bench sim`. Figures go to docs/benchmarks.md.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use upkeep_sim::clock::SimClock;
use upkeep_sim::kube::store::{Ctx, PatchKind, gr};
use upkeep_sim::kube::{ClusterSpec, KubeOptions, KubeSim, Timings};

struct Served {
    child: Child,
    kube: String,
    token: String,
    ca: String,
    _dir: tempfile::TempDir,
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn serve() -> Served {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut child = Command::new(env!("CARGO_BIN_EXE_upkeep"))
        .args(["sim", "serve", "--state-dir"])
        .arg(dir.path())
        .stdout(Stdio::piped())
        .spawn()
        .expect("upkeep sim serve");
    let out = child.stdout.take().expect("stdout");
    let mut kube = String::new();
    let mut token = String::new();
    for line in BufReader::new(out).lines().map_while(Result::ok) {
        if let Some(v) = line.strip_prefix("kubernetes=") {
            kube = v.to_string();
        }
        if let Some(v) = line.strip_prefix("token=") {
            token = v.to_string();
            break;
        }
    }
    let ca = std::fs::read_to_string(dir.path().join("ca.crt")).expect("ca");
    Served {
        child,
        kube,
        token,
        ca,
        _dir: dir,
    }
}

fn client(s: &Served) -> reqwest::Client {
    let ca = reqwest::Certificate::from_pem(s.ca.as_bytes()).expect("ca pem");
    reqwest::Client::builder()
        .add_root_certificate(ca)
        .pool_max_idle_per_host(64)
        .build()
        .expect("client")
}

fn rss_kib(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

fn raise_fd_limit() {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit with a valid pointer to an rlimit.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 {
            lim.rlim_cur = lim.rlim_max.min(65_536);
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        }
    }
}

async fn gets_per_second(s: &Served) {
    let c = client(s);
    let url = format!("{}/api/v1/nodes/server-1", s.kube);
    let done = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    // Warm up the connections.
    for _ in 0..64 {
        let _ = c.get(&url).bearer_auth(&s.token).send().await;
    }
    let secs = 5;
    let deadline = Instant::now() + Duration::from_secs(secs);
    let mut tasks = Vec::new();
    for _ in 0..32 {
        let (c, url, token, done, errors) = (
            c.clone(),
            url.clone(),
            s.token.clone(),
            done.clone(),
            errors.clone(),
        );
        tasks.push(tokio::spawn(async move {
            while Instant::now() < deadline {
                match c.get(&url).bearer_auth(&token).send().await {
                    Ok(r) if r.status().is_success() => {
                        let _ = r.bytes().await;
                        done.fetch_add(1, Ordering::Relaxed);
                    }
                    _ => {
                        errors.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
    let n = done.load(Ordering::Relaxed);
    println!(
        "GET /api/v1/nodes/server-1: {} requests in {secs} s = {:.0} GETs/s (32 keep-alive HTTPS clients, {} errors)",
        n,
        n as f64 / secs as f64,
        errors.load(Ordering::Relaxed)
    );
}

async fn watches(s: &Served) {
    let c = client(s);
    let list: serde_json::Value = c
        .get(format!("{}/api/v1/nodes", s.kube))
        .bearer_auth(&s.token)
        .send()
        .await
        .expect("list")
        .json()
        .await
        .expect("json");
    let rv = list["metadata"]["resourceVersion"]
        .as_str()
        .unwrap_or("0")
        .to_string();
    let n = 1_000;
    let got = Arc::new(AtomicU64::new(0));
    let opened = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..n {
        let c = reqwest::Client::builder()
            .add_root_certificate(reqwest::Certificate::from_pem(s.ca.as_bytes()).expect("ca"))
            .build()
            .expect("client");
        let (url, token, got, opened) = (
            format!("{}/api/v1/nodes?watch=true&resourceVersion={rv}", s.kube),
            s.token.clone(),
            got.clone(),
            opened.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let resp = match c.get(&url).bearer_auth(&token).send().await {
                Ok(r) => r,
                Err(_) => return,
            };
            opened.fetch_add(1, Ordering::Relaxed);
            let mut body = resp.bytes_stream();
            while let Some(Ok(chunk)) = body.next().await {
                if chunk.windows(8).any(|w| w == b"MODIFIED") {
                    got.fetch_add(1, Ordering::Relaxed);
                    return;
                }
            }
        }));
    }
    while opened.load(Ordering::Relaxed) < n && start.elapsed() < Duration::from_secs(60) {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let open_time = start.elapsed();
    let (rss, _) = rss_kib(s.child.id());
    let t = Instant::now();
    let _ = c
        .patch(format!("{}/api/v1/nodes/agent-1", s.kube))
        .bearer_auth(&s.token)
        .header("content-type", "application/merge-patch+json")
        .body(r#"{"metadata":{"labels":{"bench":"1"}}}"#)
        .send()
        .await;
    while got.load(Ordering::Relaxed) < opened.load(Ordering::Relaxed)
        && t.elapsed() < Duration::from_secs(30)
    {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    println!(
        "{} watches open in {:.2} s; one change reached {} of them in {:.0} ms; emulator RSS with them open: {:.1} MiB",
        opened.load(Ordering::Relaxed),
        open_time.as_secs_f64(),
        got.load(Ordering::Relaxed),
        t.elapsed().as_secs_f64() * 1000.0,
        rss as f64 / 1024.0
    );
    for t in tasks {
        t.abort();
    }
}

fn rollout() {
    let speed = 3_600.0;
    let opts = KubeOptions {
        clock: SimClock::new(chrono::Utc::now(), speed),
        cluster: ClusterSpec {
            servers: 3,
            agents: 497,
            volumes: 0,
            longhorn_version: None,
            flux_version: None,
            ..ClusterSpec::default()
        },
        timings: Timings {
            node_upgrade: Duration::from_secs(90),
            drain: Duration::from_secs(10),
            ..Timings::default()
        },
        ..KubeOptions::default()
    };
    let sim = KubeSim::start_in_thread(opts).expect("start");
    let plan = |name: &str, server: bool, concurrency: u64| {
        upkeep_sim::kube::seed::example_plan(name, "v1.33.5+k3s1", server, concurrency)
    };
    let start = Instant::now();
    let sim_start = sim.clock().now();
    {
        let mut s = sim.store();
        let ctx = Ctx::new(sim.clock().now(), "upkeep");
        let plans = gr("upgrade.cattle.io", "plans");
        s.patch(
            &plans,
            "system-upgrade",
            "server-plan",
            PatchKind::Apply { force: false },
            &plan("server-plan", true, 1),
            None,
            &ctx,
        )
        .expect("server plan");
        s.patch(
            &plans,
            "system-upgrade",
            "agent-plan",
            PatchKind::Apply { force: false },
            &plan("agent-plan", false, 10),
            None,
            &ctx,
        )
        .expect("agent plan");
    }
    let done = |sim: &KubeSim| {
        sim.list("", "nodes")
            .iter()
            .all(|n| n["status"]["nodeInfo"]["kubeletVersion"] == "v1.33.5+k3s1")
    };
    while !done(&sim) && start.elapsed() < Duration::from_secs(120) {
        std::thread::sleep(Duration::from_millis(20));
    }
    let wall = start.elapsed().as_secs_f64();
    // Simulated duration: from the Plans' creation to the last upgrade Job's completion.
    let last = sim
        .list("batch", "jobs")
        .iter()
        .filter_map(|j| {
            j["status"]["completionTime"]
                .as_str()
                .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
        })
        .max()
        .map(|t| t.with_timezone(&chrono::Utc))
        .unwrap_or(sim_start);
    let simulated = (last - sim_start).num_seconds();
    // Servers one at a time, then 497 agents 10 at a time, each 10 s drain + 90 s upgrade.
    let ideal = 3.0 * 90.0 + (497f64 / 10.0).ceil() * 100.0;
    println!(
        "500-node rollout (3 servers 1 at a time, 497 agents 10 at a time, 90 s/node): {wall:.2} s wall at {speed}x; {simulated} s simulated from the Plans to the last Job (ideal {ideal:.0} s, {:+.1}%)",
        (simulated as f64 / ideal - 1.0) * 100.0
    );
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    upkeep::sources::install_crypto_provider();
    raise_fd_limit();
    let s = serve();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(gets_per_second(&s));
    rt.block_on(watches(&s));
    drop(s);
    rollout();
}
