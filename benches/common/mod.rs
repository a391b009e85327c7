//! What the benches share: a plain GET to a simulator, and running a process while measuring its
//! wall time and peak RSS.

#![allow(dead_code)]

use std::process::Command;
use std::time::{Duration, Instant};

/// A plain HTTP/1.0 GET over loopback; the body.
pub fn get(url: &str, path: &str) -> String {
    use std::io::{Read, Write};
    let addr = url.trim_start_matches("http://");
    let mut s = std::net::TcpStream::connect(addr).expect("connect to the simulator");
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").expect("write");
    let mut resp = String::new();
    s.read_to_string(&mut resp).expect("read");
    resp.split_once("\r\n\r\n")
        .map_or(String::new(), |(_, b)| b.to_string())
}

pub struct Measured {
    pub wall: Duration,
    pub max_rss_kib: i64,
    pub exit: i32,
}

/// Run `cmd` to its end; its wall time, peak RSS (from wait4's rusage) and exit code.
// The child is reaped by wait4 (which also returns its rusage), not by Child::wait.
#[allow(clippy::zombie_processes)]
pub fn measure(mut cmd: Command) -> Measured {
    let t = Instant::now();
    let child = cmd.spawn().expect("start upkeep");
    let pid = child.id() as libc::pid_t;
    let mut status = 0;
    // SAFETY: a zeroed rusage is a valid value for wait4 to fill in.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: waits for our own child; `status` and `usage` are valid for writes.
    let r = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    assert_eq!(r, pid, "wait4 failed");
    Measured {
        wall: t.elapsed(),
        max_rss_kib: usage.ru_maxrss,
        exit: if libc::WIFEXITED(status) {
            libc::WEXITSTATUS(status)
        } else {
            -1
        },
    }
}

/// A config repository seed of `n` components `cNN` at v1.2.0, each released on GitHub as
/// `bench/cNN` (v1.1.0, v1.2.0, and v1.2.1 for the first `updates`): writes `seed/versions.yaml`
/// and the releases into `sim`.
pub fn seed_components(
    sim: &upkeep_sim::upstream::UpstreamSim,
    seed: &std::path::Path,
    n: usize,
    updates: usize,
) {
    use std::fmt::Write as _;
    use upkeep_sim::upstream::SimRelease;
    std::fs::create_dir_all(seed).expect("mkdir");
    let mut versions =
        String::from("apiVersion: upkeep.dev/v1alpha1\nkind: DesiredVersions\ncomponents:\n");
    let old = Some("2026-01-01T00:00:00Z".parse().expect("date"));
    for i in 0..n {
        let name = format!("c{i:02}");
        let _ = write!(
            versions,
            "  {name}:\n    version: v1.2.0\n    source: {{githubReleases: bench/{name}}}\n"
        );
        let mut rel = vec![
            SimRelease::new("v1.1.0", old),
            SimRelease::new("v1.2.0", old),
        ];
        if i < updates {
            rel.push(SimRelease::new("v1.2.1", old));
        }
        sim.set_releases(&format!("bench/{name}"), rel);
    }
    std::fs::write(seed.join("versions.yaml"), versions).expect("write");
}

/// A config repository asking for k3s v1.33.5+k3s1 (no windows, no policies) in `dir/repo`,
/// loaded as of `now`, and a git mirror that is never fetched (for `apply::run` without a forge).
pub fn k3s_update(
    dir: &std::path::Path,
    now: chrono::DateTime<chrono::Utc>,
) -> (upkeep::model::ConfigRepo, upkeep::gitrepo::GitRepo) {
    let repo_dir = dir.join("repo");
    std::fs::create_dir_all(&repo_dir).expect("mkdir");
    std::fs::write(
        repo_dir.join("versions.yaml"),
        "apiVersion: upkeep.dev/v1alpha1\nkind: DesiredVersions\ncomponents:\n  k3s:\n    version: v1.33.5+k3s1\n",
    )
    .expect("write");
    let config = upkeep::model::load_repo(&repo_dir, now)
        .expect("load")
        .repo
        .expect("valid");
    let git = upkeep::gitrepo::GitRepo::open(&dir.join("mirror.git"), "file:///nonexistent", None)
        .expect("mirror");
    (config, git)
}
