//! `upkeep check` against the upstream simulator on 127.0.0.1, cold (empty cache) and warm (every
//! GitHub source answers 304), in two shapes: 1,000 components with 50 GitHub releases each
//! (1,000 sources), and 1,000 components sharing 3 sources (two GitHub repositories and one Helm
//! index), which must cost 3 requests.
//!
//! Run with `cargo bench --bench sources`. Prints wall time, requests, 304s, bytes received and
//! the peak RSS of the `upkeep check` process (from wait4's rusage). Figures go to
//! docs/benchmarks.md.
//!
//! The simulator runs in a second process (this binary with `--serve`): a process started by a
//! large parent inherits the parent's peak RSS in its rusage, which would hide upkeep's own.

use std::fmt::Write as _;
use std::fs;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use chrono::{DateTime, Utc};
use upkeep_sim::upstream::{SimRelease, UpstreamSim};

mod common;
use common::get;

const COMPONENTS: usize = 1_000;
const RELEASES: usize = 50;

fn name(i: usize) -> String {
    format!("c{i:04}")
}

/// The simulator process: fill it, print its URL, serve until stdin closes.
fn serve() {
    let sim = UpstreamSim::start_in_thread().expect("start the simulator");
    let base: DateTime<Utc> = "2024-01-01T00:00:00Z".parse().unwrap();
    for i in 0..COMPONENTS {
        // 50 releases: v1.0.0 .. v1.9.4 (ten minors of five patches), a day apart.
        let releases = (0..RELEASES)
            .map(|j| {
                SimRelease::new(
                    &format!("v1.{}.{}", j / 5, j % 5),
                    Some(base + chrono::Duration::days(j as i64)),
                )
            })
            .collect();
        sim.set_releases(&format!("bench/{}", name(i)), releases);
    }
    // The shared sources: two GitHub repositories and one Helm index with the same history.
    let history: Vec<(String, String)> = (0..RELEASES)
        .map(|j| {
            let at = base + chrono::Duration::days(j as i64);
            (format!("v1.{}.{}", j / 5, j % 5), at.to_rfc3339())
        })
        .collect();
    for repo in ["bench/shared-a", "bench/shared-b"] {
        let releases = history
            .iter()
            .map(|(v, at)| SimRelease::new(v, at.parse().ok()))
            .collect();
        sim.set_releases(repo, releases);
    }
    let pairs: Vec<(&str, &str)> = history
        .iter()
        .map(|(v, at)| (v.as_str(), at.as_str()))
        .collect();
    sim.set_chart_index("bench", &upkeep_sim::upstream::helm_index("app", &pairs));
    // Let the simulator serialize every page once, so the runs measure upkeep, not the simulator.
    for i in 0..COMPONENTS {
        get(
            &sim.url(),
            &format!("/repos/bench/{}/releases?per_page=100", name(i)),
        );
    }
    println!("{}", sim.url());
    let mut line = String::new();
    let _ = std::io::stdin().read_line(&mut line);
}

#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct Counters {
    requests: u64,
    not_modified: u64,
    bytes_sent: u64,
}

fn counters(url: &str) -> Counters {
    serde_json::from_str(&get(url, "/_sim/counters")).expect("counters")
}

struct Run {
    wall: Duration,
    requests: u64,
    not_modified: u64,
    bytes: u64,
    max_rss_kib: i64,
    exit: i32,
}

fn run(url: &str, repo: &std::path::Path, cache: &std::path::Path) -> Run {
    let before = counters(url);
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_upkeep"));
    cmd.args(["check", "--output", "json", "--now", "2026-11-21T12:00:00Z"])
        .arg("--repo")
        .arg(repo)
        .arg("--cache-dir")
        .arg(cache)
        .env("UPKEEP_GITHUB_API_URL", url)
        .env_remove("GITHUB_TOKEN")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit());
    let m = common::measure(cmd);
    let after = counters(url);
    Run {
        wall: m.wall,
        requests: after.requests - before.requests,
        not_modified: after.not_modified - before.not_modified,
        bytes: after.bytes_sent - before.bytes_sent,
        max_rss_kib: m.max_rss_kib,
        exit: m.exit,
    }
}

/// One component's source in the shared shape: a third each on two repositories and a chart.
fn shared_source(i: usize, url: &str) -> String {
    match i % 3 {
        0 => "{githubReleases: bench/shared-a}".to_string(),
        1 => "{githubReleases: bench/shared-b}".to_string(),
        _ => format!("{{helmChart: {{repository: \"{url}/helm/bench\", chart: app}}}}"),
    }
}

/// Write a config repository of `COMPONENTS` components at v1.2.0 with the given sources; run
/// `upkeep check` cold and warm against it.
fn scenario(url: &str, dir: &std::path::Path, source: impl Fn(usize) -> String) -> (Run, Run) {
    let repo = dir.join("repo");
    fs::create_dir_all(repo.join("policies")).unwrap();
    let mut versions =
        String::from("apiVersion: upkeep.dev/v1alpha1\nkind: DesiredVersions\ncomponents:\n");
    for i in 0..COMPONENTS {
        let _ = write!(
            versions,
            "  {}:\n    version: v1.2.0\n    source: {}\n",
            name(i),
            source(i)
        );
    }
    fs::write(repo.join("versions.yaml"), versions).unwrap();
    let cache = dir.join("cache");
    let cold = run(url, &repo, &cache);
    let warm = run(url, &repo, &cache);
    (cold, warm)
}

fn print(title: &str, runs: [(&str, &Run); 2]) {
    println!("{title}");
    for (name, r) in runs {
        println!(
            "  {name}: {:>7.1} ms wall, {:>5} requests ({} answered 304), {:>9} bytes received, peak RSS {:.1} MiB, exit {}",
            r.wall.as_secs_f64() * 1e3,
            r.requests,
            r.not_modified,
            r.bytes,
            r.max_rss_kib as f64 / 1024.0,
            r.exit
        );
    }
}

fn main() {
    if std::env::args().any(|a| a == "--serve") {
        return serve();
    }
    let mut server = Command::new(std::env::current_exe().unwrap())
        .arg("--serve")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("start the simulator process");
    let mut url = String::new();
    BufReader::new(server.stdout.take().unwrap())
        .read_line(&mut url)
        .unwrap();
    let url = url.trim().to_string();

    let tmp = tempfile::tempdir().unwrap();
    let (cold, warm) = scenario(&url, &tmp.path().join("own"), |i| {
        format!("{{githubReleases: bench/{}}}", name(i))
    });
    let (shared_cold, shared_warm) =
        scenario(&url, &tmp.path().join("shared"), |i| shared_source(i, &url));
    drop(server.stdin.take());
    let _ = server.wait();
    print(
        &format!(
            "upkeep check, {COMPONENTS} components x {RELEASES} GitHub releases, one source each, loopback simulator"
        ),
        [("cold", &cold), ("warm", &warm)],
    );
    print(
        &format!(
            "upkeep check, {COMPONENTS} components over 3 sources (2 GitHub repositories, 1 Helm index) of {RELEASES} releases"
        ),
        [("cold", &shared_cold), ("warm", &shared_warm)],
    );
    assert_eq!(cold.exit, 10, "every component has an update");
    assert_eq!(warm.requests, COMPONENTS as u64, "one request per source");
    assert_eq!(warm.not_modified, COMPONENTS as u64, "all 304");
    assert_eq!(shared_cold.exit, 10, "every component has an update");
    assert_eq!(shared_cold.requests, 3, "one request per source");
    assert_eq!(shared_warm.requests, 3, "one request per source");
    assert_eq!(shared_warm.not_modified, 2, "the GitHub sources answer 304");
}
