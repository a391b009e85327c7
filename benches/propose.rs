//! One `upkeep propose` cycle over 50 components, 10 of which have an update, against the GitHub
//! emulator (releases and the forge over a real bare repository) on loopback: cold (empty cache
//! and mirror: 10 pushes, 10 PRs, the dashboard) and warm (nothing changed).
//!
//! Run with `cargo bench --bench propose`. Prints wall time, requests, write requests and the
//! peak RSS of the `upkeep propose` process. Figures go to docs/benchmarks.md. The simulator
//! runs in a second process (this binary with `--serve`), as in the sources bench.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use upkeep_sim::upstream::UpstreamSim;

mod common;
use common::get;

const COMPONENTS: usize = 50;
const UPDATES: usize = 10;

fn serve() {
    upkeep::sources::install_crypto_provider();
    let sim = UpstreamSim::start_in_thread().expect("simulator");
    let dir = tempfile::tempdir().expect("tempdir");
    let seed = dir.path().join("seed");
    std::fs::create_dir_all(seed.join("policies")).expect("mkdir");
    common::seed_components(&sim, &seed, COMPONENTS, UPDATES);
    std::fs::write(
        seed.join("policies/prs.yaml"),
        "apiVersion: upkeep.dev/v1alpha1\nkind: Policy\npullRequests:\n  concurrentLimit: 20\n  hourlyLimit: 20\n",
    )
    .expect("write");
    sim.enable_forge(&dir.path().join("forge"));
    let path = sim
        .with_forge(|f| f.create_repo("bench/config", Some(&seed), chrono::Utc::now()))
        .expect("forge")
        .expect("repo");
    println!("{} file://{}", sim.url(), path.display());
    let mut line = String::new();
    let _ = std::io::stdin().read_line(&mut line);
}

#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct Counters {
    requests: u64,
    writes: u64,
}

fn counters(url: &str) -> Counters {
    serde_json::from_str(&get(url, "/_sim/counters")).expect("counters")
}

fn main() {
    if std::env::args().any(|a| a == "--serve") {
        return serve();
    }
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let mut server = Command::new(std::env::current_exe().expect("exe"))
        .arg("--serve")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("start the simulator process");
    let mut line = String::new();
    BufReader::new(server.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("read");
    let mut parts = line.split_whitespace();
    let (url, clone) = (
        parts.next().unwrap_or("").to_string(),
        parts.next().unwrap_or("").to_string(),
    );
    let tmp = tempfile::tempdir().expect("tempdir");
    let run = || {
        let before = counters(&url);
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_upkeep"));
        cmd.args([
            "propose",
            "--repo-url",
            &clone,
            "--owner",
            "bench",
            "--name",
            "config",
            "--github-api-url",
            &url,
            "--now",
            "2026-11-21T12:00:00Z",
        ])
        .arg("--state-dir")
        .arg(tmp.path().join("state"))
        .arg("--cache-dir")
        .arg(tmp.path().join("cache"))
        .env_remove("GITHUB_TOKEN")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit());
        let m = common::measure(cmd);
        let after = counters(&url);
        (
            m,
            after.requests - before.requests,
            after.writes - before.writes,
        )
    };
    let cold = run();
    let warm = run();
    drop(server.stdin.take());
    let _ = server.wait();
    println!(
        "upkeep propose, {COMPONENTS} components, {UPDATES} with an update, loopback GitHub emulator"
    );
    for (name, (m, requests, writes)) in [("cold", &cold), ("warm", &warm)] {
        println!(
            "  {name}: {:>7.1} ms wall, {requests:>4} requests, {writes:>3} writes, peak RSS {:.1} MiB, exit {}",
            m.wall.as_secs_f64() * 1e3,
            m.max_rss_kib as f64 / 1024.0,
            m.exit
        );
    }
    assert_eq!(warm.2, 0, "a warm cycle writes nothing");
}
