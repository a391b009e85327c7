//! Simulators of what upkeep talks to, served over real HTTP on 127.0.0.1, for tests, benchmarks
//! and the demo.
//!
//! - [`upstream`]: GitHub's release API (pagination, ETags and 304s, rate-limit headers), a k3s
//!   channel server and Helm repository indexes, with scripted faults.
//! - [`registry`]: an OCI registry (tag listing with pagination, token and Basic auth).

pub mod clock;
pub mod github;
pub mod kube;
pub mod playground;
pub mod prometheus;
pub mod receiver;
pub mod registry;
pub mod tls;
pub mod upstream;

use std::time::Duration;

/// The example config repository (examples/cluster-repo), embedded so that `upkeep sim serve`
/// and the demo can seed a forge anywhere.
pub const EXAMPLE_REPO: &[(&str, &str)] = &[
    (
        "versions.yaml",
        include_str!("../../../examples/cluster-repo/versions.yaml"),
    ),
    (
        "policies/updates.yaml",
        include_str!("../../../examples/cluster-repo/policies/updates.yaml"),
    ),
    (
        "policies/windows.yaml",
        include_str!("../../../examples/cluster-repo/policies/windows.yaml"),
    ),
    (
        "clusters/homelab/kustomization.yaml",
        include_str!("../../../examples/cluster-repo/clusters/homelab/kustomization.yaml"),
    ),
    (
        "clusters/homelab/flux-instance.yaml",
        include_str!("../../../examples/cluster-repo/clusters/homelab/flux-instance.yaml"),
    ),
    (
        "clusters/homelab/infrastructure.yaml",
        include_str!("../../../examples/cluster-repo/clusters/homelab/infrastructure.yaml"),
    ),
    (
        "infrastructure/kustomization.yaml",
        include_str!("../../../examples/cluster-repo/infrastructure/kustomization.yaml"),
    ),
    (
        "infrastructure/longhorn.yaml",
        include_str!("../../../examples/cluster-repo/infrastructure/longhorn.yaml"),
    ),
    (
        "apps/kustomization.yaml",
        include_str!("../../../examples/cluster-repo/apps/kustomization.yaml"),
    ),
];

/// Write the embedded example config repository into `dir`.
pub fn write_example_repo(dir: &std::path::Path) -> std::io::Result<()> {
    for (path, text) in EXAMPLE_REPO {
        let p = dir.join(path);
        if let Some(parent) = p.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::write(p, text)?;
    }
    Ok(())
}

/// A scripted failure, served instead of (or around) the real answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    /// Answer with this status and a small JSON error body.
    Status(u16),
    /// GitHub's primary rate limit: 403 with `x-ratelimit-remaining: 0` and a reset this many
    /// seconds from now.
    RateLimit { reset_in: u64 },
    /// GitHub's secondary rate limit: 403 with the message and no headers.
    SecondaryRateLimit,
    /// 429 with `Retry-After`.
    TooManyRequests { retry_after: u64 },
    /// Send the headers and half of the body, then break the connection.
    Truncate,
    /// Answer normally, after this delay.
    Delay(Duration),
    /// Answer normally, but with a `Link: rel="next"` that points back at the same page (a
    /// broken proxy or server).
    SelfLink,
    /// Carry the request out, then answer with this status instead of the result: a gateway
    /// that gave up after the backend acted (GitHub's 502 on a POST that did create).
    LostAnswer(u16),
    /// Before answering, someone else pushes a commit to `branch` of the forge's `repo`
    /// (`owner/name`): a push race for whoever fetched before.
    LandCommit { repo: String, branch: String },
}

/// A fault on requests whose path contains `path_contains` (ends with it, when it ends in `$`),
/// for the next `times` of them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FaultRule {
    pub path_contains: String,
    /// Only requests of this method (any when `None`).
    pub method: Option<String>,
    pub fault: Fault,
    pub times: usize,
}

/// FNV-1a, for stable ETags and simulated digests (not for security).
pub fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// Run a simulator on a tokio runtime of its own in a background thread (for synchronous tests
/// and tools): `start` binds and spawns the servers; the runtime lives as long as the process.
pub fn start_in_thread<T, F, Fut>(workers: usize, start: F) -> std::io::Result<T>
where
    T: Send + 'static,
    F: FnOnce() -> Fut + Send + 'static,
    Fut: std::future::Future<Output = std::io::Result<T>>,
{
    let (sim, stopper) = start_until_stopped(workers, start)?;
    std::mem::forget(stopper);
    Ok(sim)
}

/// Stops a simulator started by [`start_until_stopped`] when dropped: its runtime ends, and with
/// it the servers and the simulated controllers (tests that start many simulators, one after
/// another, would otherwise keep them all running).
pub struct Stopper(Option<tokio::sync::oneshot::Sender<()>>);

impl Drop for Stopper {
    fn drop(&mut self) {
        if let Some(tx) = self.0.take() {
            let _ = tx.send(());
        }
    }
}

/// [`start_in_thread`], with a [`Stopper`] that ends the simulator when dropped.
pub fn start_until_stopped<T, F, Fut>(workers: usize, start: F) -> std::io::Result<(T, Stopper)>
where
    T: Send + 'static,
    F: FnOnce() -> Fut + Send + 'static,
    Fut: std::future::Future<Output = std::io::Result<T>>,
{
    let (tx, rx) = std::sync::mpsc::channel();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    std::thread::spawn(move || {
        let rt = match tokio::runtime::Builder::new_multi_thread()
            .worker_threads(workers)
            .enable_all()
            .build()
        {
            Ok(rt) => rt,
            Err(e) => {
                let _ = tx.send(Err(e));
                return;
            }
        };
        rt.block_on(async move {
            let _ = tx.send(start().await);
            let _ = stopped.await;
        });
        rt.shutdown_background();
    });
    let sim = rx
        .recv()
        .map_err(|_| std::io::Error::other("the simulator's thread ended before it started"))??;
    Ok((sim, Stopper(Some(stop))))
}
