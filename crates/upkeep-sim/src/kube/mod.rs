//! The Kubernetes API emulator: an HTTP server on 127.0.0.1 that real `kubectl` and the `kube`
//! crate accept, backed by the in-memory [`store::Store`], with simulated controllers
//! ([`actors`]) that make the cluster behave like a small k3s cluster with the
//! system-upgrade-controller, Flux (flux-operator) and Longhorn, and scripted faults.
//!
//! What is served, and what is simplified, is documented in docs/simulator.md.

pub mod actors;
pub mod bootstrap;
pub mod flux;
pub mod kustomize;
pub mod patch;
pub mod schema;
pub mod seed;
pub mod store;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::clock::SimClock;
use patch::{fields_match, jsonpath, labels_match, parse_field_selector, parse_label_selector};
use store::{ApiError, Ctx, EventType, Gr, PatchKind, ResourceType, Store};

/// A scripted fault in the simulated cluster. From tests: [`KubeSim::inject`]; for `upkeep sim
/// serve`: a YAML list of these in the `--faults` file (`kind:` names the variant).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "camelCase", deny_unknown_fields)]
pub enum ClusterFault {
    /// The node upgrades but never reports Ready again.
    NodeNeverReady { node: String },
    /// Upgrading takes this many simulated seconds (every node, or just `node`).
    #[serde(rename_all = "camelCase")]
    SlowUpgrade {
        #[serde(default)]
        node: Option<String>,
        seconds: u64,
    },
    /// The upgrade Job fails although the node did upgrade (k3s restarted under it).
    JobFailsButUpgraded { node: String },
    /// A PodDisruptionBudget with no disruptions allowed guards a pod on this node, so a drain
    /// blocks.
    PdbBlocksDrain { node: String },
    /// The next etcd snapshot fails on the server with this message (k3s records a failed
    /// `ETCDSnapshotFile`, the CLI exits non-zero).
    EtcdSnapshotFails { message: String },
    /// flux-operator's next change of Flux's version fails (a controller never becomes healthy).
    FluxUpgradeFails,
    /// The HelmRelease (`namespace/name` or `name`) fails its next upgrade.
    HelmUpgradeFails { release: String },
    /// This Longhorn volume turns degraded after the next Longhorn upgrade.
    VolumeDegradesAfterUpgrade { volume: String },
    /// Requests whose path contains `pathContains` (and of `method`, if given) are answered
    /// with `status`, `times` times.
    #[serde(rename_all = "camelCase")]
    ApiError {
        path_contains: String,
        #[serde(default)]
        method: Option<String>,
        status: u16,
        #[serde(default = "one")]
        times: usize,
    },
    /// Requests whose path contains `pathContains` are answered after `millis` of real time.
    #[serde(rename_all = "camelCase")]
    ApiDelay {
        path_contains: String,
        millis: u64,
        #[serde(default = "one")]
        times: usize,
    },
    /// Watches whose path contains `pathContains` end after `afterEvents` events.
    #[serde(rename_all = "camelCase")]
    WatchDrops {
        path_contains: String,
        #[serde(default)]
        after_events: usize,
        #[serde(default = "one")]
        times: usize,
    },
}

fn one() -> usize {
    1
}

/// Timings of the simulated controllers, in simulated time.
#[derive(Debug, Clone)]
pub struct Timings {
    /// How long one node's k3s upgrade takes.
    pub node_upgrade: Duration,
    /// How long a drain takes when nothing blocks it.
    pub drain: Duration,
    /// How long a Helm upgrade or a Flux distribution change takes.
    pub helm_upgrade: Duration,
    pub flux_upgrade: Duration,
    /// How long an etcd snapshot Job takes.
    pub snapshot: Duration,
    /// How long longhorn-manager's own upgrade goes on after Helm returns.
    pub longhorn_manager: Duration,
    /// How often the controllers look at the cluster, in real time.
    pub tick: Duration,
}

impl Default for Timings {
    fn default() -> Timings {
        Timings {
            node_upgrade: Duration::from_secs(90),
            drain: Duration::from_secs(10),
            helm_upgrade: Duration::from_secs(60),
            flux_upgrade: Duration::from_secs(45),
            snapshot: Duration::from_secs(20),
            longhorn_manager: Duration::from_secs(60),
            tick: Duration::from_millis(10),
        }
    }
}

impl Timings {
    /// These timings with every simulated duration divided by `factor` (the tick unchanged):
    /// a cluster on real time whose work is quick, for tests of the controller binary, which
    /// lives on real time too.
    pub fn quicker(&self, factor: f64) -> Timings {
        let f = factor.max(0.001);
        Timings {
            node_upgrade: self.node_upgrade.div_f64(f),
            drain: self.drain.div_f64(f),
            helm_upgrade: self.helm_upgrade.div_f64(f),
            flux_upgrade: self.flux_upgrade.div_f64(f),
            snapshot: self.snapshot.div_f64(f),
            longhorn_manager: self.longhorn_manager.div_f64(f),
            tick: self.tick,
        }
    }
}

/// What the simulated cluster starts with.
#[derive(Debug, Clone)]
pub struct ClusterSpec {
    pub servers: usize,
    pub agents: usize,
    pub k3s_version: String,
    /// Install the system-upgrade-controller (its Plan CRD and namespace).
    pub suc: bool,
    /// Install Flux through flux-operator, at this version.
    pub flux_version: Option<String>,
    /// Install Longhorn through a HelmRelease, at this chart version, with this many volumes.
    pub longhorn_version: Option<String>,
    pub volumes: usize,
    /// Run etcd (snapshots possible) rather than sqlite.
    pub embedded_etcd: bool,
    /// Bootstrap Flux from a config repository (served with `serve_git`) instead of the
    /// example's fixed layout: no FluxInstance, Kustomizations or Longhorn are seeded; Flux
    /// applies what git says, and charts install as helm-controller would (Longhorn's objects
    /// appear when its chart is installed). `flux_version` labels Flux's controllers.
    pub bootstrap: Option<RepoBootstrap>,
}

/// What a bootstrap of Flux from a repository created (see [`bootstrap::read`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RepoBootstrap {
    /// The repository's URL, as its GitRepositories say.
    pub url: String,
    /// GitRepositories (namespace, name) that serve it.
    pub sources: Vec<(String, String)>,
    /// Kustomizations the bootstrap created: (namespace, name, path, GitRepository name).
    pub kustomizations: Vec<(String, String, String, String)>,
}

impl Default for ClusterSpec {
    fn default() -> ClusterSpec {
        ClusterSpec {
            servers: 1,
            agents: 2,
            k3s_version: "v1.33.4+k3s1".into(),
            suc: true,
            flux_version: Some("v2.6.4".into()),
            longhorn_version: Some("1.9.1".into()),
            volumes: 3,
            embedded_etcd: true,
            bootstrap: None,
        }
    }
}

/// How to start the emulator.
#[derive(Debug, Clone)]
pub struct KubeOptions {
    /// 0 picks a free port on 127.0.0.1.
    pub port: u16,
    /// The bearer token clients must send (a random one when None).
    pub token: Option<String>,
    pub clock: SimClock,
    pub cluster: ClusterSpec,
    pub timings: Timings,
    /// Run the simulated controllers.
    pub actors: bool,
    /// Keep state here across restarts (`kube.json`).
    pub state_dir: Option<PathBuf>,
    /// How often watches get a bookmark, in real time.
    pub bookmark_interval: Duration,
}

impl Default for KubeOptions {
    fn default() -> KubeOptions {
        KubeOptions {
            port: 0,
            token: None,
            clock: SimClock::real(),
            cluster: ClusterSpec::default(),
            timings: Timings::default(),
            actors: true,
            state_dir: None,
            bookmark_interval: Duration::from_secs(5),
        }
    }
}

#[derive(Debug, Default)]
pub struct Counters {
    pub requests: AtomicU64,
    /// Bytes of the response bodies that have a known length (everything but watches).
    pub bytes_out: AtomicU64,
    /// LIST requests per resource plural, e.g. how many looks listed nodes.
    pub lists: Mutex<std::collections::BTreeMap<String, u64>>,
    pub writes: AtomicU64,
    pub watches_open: AtomicU64,
}

/// One kind of access, in RBAC's terms: `resource` carries the subresource (`rollouts/status`);
/// `namespace` is empty for cluster-wide requests.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
pub struct Access {
    pub verb: String,
    pub group: String,
    pub resource: String,
    pub namespace: String,
}

pub struct Shared {
    store: Mutex<Store>,
    pub clock: SimClock,
    token: String,
    faults: Mutex<Vec<(ClusterFault, usize)>>,
    pub timings: Mutex<Timings>,
    pub counters: Counters,
    /// Every (verb, group, resource, namespace) asked for, as RBAC would judge it.
    audit: Mutex<std::collections::BTreeSet<Access>>,
    bookmark_interval: Duration,
    base: String,
    ca_pem: String,
    /// GitRepositories (namespace, name) whose repository the emulator reads: a bare repository
    /// on disk, and the artifact last built from it.
    git_sources: Mutex<std::collections::BTreeMap<(String, String), GitSource>>,
    /// When the simulated controllers last looked (work that became possible since is dated
    /// from then).
    last_look: Mutex<Option<DateTime<Utc>>>,
}

/// A GitRepository served from a bare repository on disk.
#[derive(Debug, Clone)]
struct GitSource {
    path: PathBuf,
    artifact: Option<flux::Artifact>,
}

impl Shared {
    /// The artifacts of the GitRepositories the emulator reads, rebuilt when their branch
    /// moved (source-controller's job; I/O, so outside the pure `actors::step`).
    pub fn artifacts(&self) -> actors::Artifacts {
        let branches: Vec<((String, String), String)> = {
            let store = self.store();
            self.git_sources
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .keys()
                .map(|(ns, name)| {
                    let branch = store
                        .try_get(
                            &store::gr("source.toolkit.fluxcd.io", "gitrepositories"),
                            ns,
                            name,
                        )
                        .and_then(|r| r.pointer("/spec/ref/branch")?.as_str().map(str::to_string))
                        .unwrap_or_else(|| "main".into());
                    ((ns.clone(), name.clone()), branch)
                })
                .collect()
        };
        let mut sources = self.git_sources.lock().unwrap_or_else(|e| e.into_inner());
        let mut out = actors::Artifacts::new();
        for (key, branch) in branches {
            let Some(src) = sources.get_mut(&key) else {
                continue;
            };
            let tip = git2::Repository::open_bare(&src.path)
                .and_then(|r| r.refname_to_id(&format!("refs/heads/{branch}")))
                .map(|id| format!("{branch}@sha1:{id}"))
                .ok();
            let stale = src.artifact.as_ref().map(|a| &a.revision) != tip.as_ref();
            if stale {
                src.artifact = flux::artifact(&src.path, &branch).ok();
            }
            if let Some(a) = &src.artifact {
                out.insert(key, a.clone());
            }
        }
        out
    }

    pub fn store(&self) -> MutexGuard<'_, Store> {
        self.store.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// One look by every simulated controller at the clock's time (see [`actors::step_since`]).
    pub fn look(&self) {
        let timings = self.timings();
        let faults = self.cluster_faults();
        let artifacts = self.artifacts();
        let now = self.clock.now();
        let used = {
            let mut last = self.last_look.lock().unwrap_or_else(|e| e.into_inner());
            let prev = last.unwrap_or(now);
            let mut store = self.store();
            let used =
                actors::step_with_sources(&mut store, prev, now, &faults, &timings, &artifacts);
            *last = Some(now);
            used
        };
        for f in used {
            self.consume(&f);
        }
    }

    fn faults(&self) -> MutexGuard<'_, Vec<(ClusterFault, usize)>> {
        self.faults.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The standing cluster faults (not the request faults, which are consumed by requests).
    pub fn cluster_faults(&self) -> Vec<ClusterFault> {
        self.faults().iter().map(|(f, _)| f.clone()).collect()
    }

    /// Remove one standing cluster fault once it has happened.
    pub fn consume(&self, fault: &ClusterFault) {
        let mut f = self.faults();
        if let Some(i) = f.iter().position(|(x, _)| x == fault) {
            f.remove(i);
        }
    }

    pub fn timings(&self) -> Timings {
        self.timings
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    fn take_request_fault(&self, method: &Method, path: &str, watch: bool) -> Option<ClusterFault> {
        let mut faults = self.faults();
        let i = faults.iter().position(|(f, left)| {
            *left > 0
                && match f {
                    ClusterFault::ApiError {
                        path_contains,
                        method: m,
                        ..
                    } => {
                        path.contains(path_contains.as_str())
                            && m.as_ref()
                                .is_none_or(|m| m.eq_ignore_ascii_case(method.as_str()))
                    }
                    ClusterFault::ApiDelay { path_contains, .. } => {
                        path.contains(path_contains.as_str())
                    }
                    ClusterFault::WatchDrops { path_contains, .. } => {
                        watch && path.contains(path_contains.as_str())
                    }
                    _ => false,
                }
        })?;
        faults[i].1 -= 1;
        let f = faults[i].0.clone();
        if faults[i].1 == 0 {
            faults.remove(i);
        }
        Some(f)
    }
}

/// How many looks [`KubeSim::settle`] takes at most at one instant (a chain of reactions:
/// a Plan makes a Job, the Job a cordon, ...).
const SETTLE_LOOKS: usize = 8;

/// A running Kubernetes API emulator.
#[derive(Clone)]
pub struct KubeSim {
    pub shared: Arc<Shared>,
    pub addr: SocketAddr,
}

impl KubeSim {
    /// Bind 127.0.0.1, seed the cluster (or load it from the state directory), start the
    /// simulated controllers and serve on the current tokio runtime.
    pub async fn start(opts: KubeOptions) -> std::io::Result<KubeSim> {
        let tcp = tokio::net::TcpListener::bind(("127.0.0.1", opts.port)).await?;
        let addr = tcp.local_addr()?;
        let certs = match &opts.state_dir {
            Some(d) => super::tls::SimCerts::load_or_generate(d),
            None => super::tls::SimCerts::generate(),
        }
        .map_err(std::io::Error::other)?;
        let listener = super::tls::TlsListener::new(
            tcp,
            certs.server_config().map_err(std::io::Error::other)?,
        )?;
        let token = opts.token.clone().unwrap_or_else(random_token);
        let mut store = Store::new();
        let state_file = opts.state_dir.as_ref().map(|d| d.join("kube.json"));
        let restored = match &state_file {
            Some(f) if f.exists() => {
                let text = std::fs::read_to_string(f)?;
                let v: Value = serde_json::from_str(&text).map_err(|e| {
                    std::io::Error::other(format!(
                        "{}: not a simulator state file: {e}",
                        f.display()
                    ))
                })?;
                store
                    .restore(&v)
                    .map_err(|e| std::io::Error::other(format!("{}: {e}", f.display())))?;
                true
            }
            _ => false,
        };
        if !restored {
            seed::seed(&mut store, &opts.cluster, opts.clock.now()).map_err(|e| {
                std::io::Error::other(format!("seeding the simulated cluster: {e}"))
            })?;
        }
        let shared = Arc::new(Shared {
            store: Mutex::new(store),
            clock: opts.clock.clone(),
            token,
            faults: Mutex::new(Vec::new()),
            timings: Mutex::new(opts.timings.clone()),
            counters: Counters::default(),
            audit: Mutex::default(),
            git_sources: Mutex::default(),
            last_look: Mutex::new(Some(opts.clock.now())),
            bookmark_interval: opts.bookmark_interval,
            base: format!("https://{addr}"),
            ca_pem: certs.ca_pem.clone(),
        });
        let app = axum::Router::new()
            .fallback(handle)
            .with_state(shared.clone());
        tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, app).await {
                tracing::error!(error = %e, "the Kubernetes emulator stopped");
            }
        });
        // On a stepped clock the controllers look only when the clock is moved (`run_for`,
        // `pace`): whatever the machine is busy with, they see the same instants.
        if opts.actors && !opts.clock.is_stepped() {
            tokio::spawn(actors::run(shared.clone()));
        }
        if let Some(f) = state_file {
            tokio::spawn(save_loop(shared.clone(), f));
        }
        Ok(KubeSim { shared, addr })
    }

    /// Start on a runtime of its own in a background thread (for synchronous tests and tools).
    pub fn start_in_thread(opts: KubeOptions) -> std::io::Result<KubeSim> {
        crate::start_in_thread(2, move || KubeSim::start(opts))
    }

    /// [`start_in_thread`](Self::start_in_thread), stopped when the [`crate::Stopper`] drops.
    pub fn start_until_stopped(opts: KubeOptions) -> std::io::Result<(KubeSim, crate::Stopper)> {
        crate::start_until_stopped(2, move || KubeSim::start(opts))
    }

    pub fn url(&self) -> String {
        self.shared.base.clone()
    }

    pub fn token(&self) -> &str {
        &self.shared.token
    }

    pub fn clock(&self) -> &SimClock {
        &self.shared.clock
    }

    /// The PEM of the certificate authority that signed the emulator's certificate.
    pub fn ca_pem(&self) -> &str {
        &self.shared.ca_pem
    }

    /// A kubeconfig for this emulator (HTTPS on loopback with its own CA, bearer token).
    pub fn kubeconfig(&self) -> String {
        use base64::Engine;
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: upkeep-sim\n  cluster:\n    server: {}\n    certificate-authority-data: {}\ncontexts:\n- name: upkeep-sim\n  context:\n    cluster: upkeep-sim\n    user: upkeep-sim\n    namespace: default\ncurrent-context: upkeep-sim\nusers:\n- name: upkeep-sim\n  user:\n    token: {}\n",
            self.url(),
            base64::engine::general_purpose::STANDARD.encode(&self.shared.ca_pem),
            self.shared.token
        )
    }

    /// Write the kubeconfig (mode 0600: it holds the token).
    pub fn write_kubeconfig(&self, path: &Path) -> std::io::Result<()> {
        write_private(path, self.kubeconfig().as_bytes())
    }

    pub fn store(&self) -> MutexGuard<'_, Store> {
        self.shared.store()
    }

    /// An object by group, resource, namespace and name.
    pub fn get(&self, group: &str, plural: &str, ns: &str, name: &str) -> Option<Value> {
        self.store().get(&store::gr(group, plural), ns, name).ok()
    }

    /// Every kind of access clients asked for so far (what an RBAC role must allow).
    pub fn audit(&self) -> Vec<Access> {
        self.shared
            .audit
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .cloned()
            .collect()
    }

    /// Forgets the accesses so far (e.g. a setup done with kubectl).
    pub fn clear_audit(&self) {
        self.shared
            .audit
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
    }

    pub fn list(&self, group: &str, plural: &str) -> Vec<Value> {
        self.store()
            .list(&store::gr(group, plural), None)
            .into_iter()
            .cloned()
            .collect()
    }

    /// Script a fault. Cluster faults stand until they happen once; request faults are used up
    /// by `times` matching requests.
    /// Serve the GitRepository `namespace/name` from the bare repository at `path` (the
    /// branch its `spec.ref.branch` names): its Kustomizations are then built from that
    /// repository and applied as kustomize-controller does.
    pub fn serve_git(&self, namespace: &str, name: &str, path: &Path) {
        self.shared
            .git_sources
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(
                (namespace.to_string(), name.to_string()),
                GitSource {
                    path: path.to_path_buf(),
                    artifact: None,
                },
            );
    }

    pub fn inject(&self, fault: ClusterFault) {
        if let ClusterFault::PdbBlocksDrain { node } = &fault {
            seed::blocking_pdb(&mut self.store(), node, self.shared.clock.now());
        }
        let times = match &fault {
            ClusterFault::ApiError { times, .. }
            | ClusterFault::ApiDelay { times, .. }
            | ClusterFault::WatchDrops { times, .. } => *times,
            _ => 1,
        };
        self.shared.faults().push((fault, times));
    }

    /// Let the simulated controllers act at the clock's present time until nothing more
    /// changes (bounded): what each reaction makes possible at the same instant happens too.
    pub fn settle(&self) {
        for _ in 0..SETTLE_LOOKS {
            let before = self.store().resource_version();
            self.shared.look();
            if self.store().resource_version() == before {
                return;
            }
        }
    }

    /// Move a stepped clock forward by `d`, in steps of at most `step`, the simulated
    /// controllers settling after each: simulated time that passes with nobody but the cluster
    /// acting (a test waiting for nodes, the demo's day of soak).
    pub fn run_for(&self, d: Duration, step: Duration) {
        let step = step.max(Duration::from_millis(1));
        let mut left = d;
        self.settle();
        while !left.is_zero() {
            let s = left.min(step);
            self.shared.clock.advance(s);
            self.settle();
            left -= s;
        }
    }

    /// Move the clock to `t` (if later) as [`run_for`](Self::run_for) does.
    pub fn run_until(&self, t: DateTime<Utc>, step: Duration) {
        let d = (t - self.shared.clock.now()).to_std().unwrap_or_default();
        self.run_for(d, step);
    }

    /// How upkeep's apply loop passes the time between two looks at this cluster: one `step`
    /// of the simulated clock, the simulated controllers settling after it. With a stepped
    /// clock, a rollout's story is the same however busy the machine is.
    pub fn pace(&self, step: Duration) -> upkeep::apply::Pace {
        self.pace_with(step, |_| {})
    }

    /// [`pace`](Self::pace), calling `after` once the cluster settled after each step (the
    /// demo tells what changed).
    pub fn pace_with(
        &self,
        step: Duration,
        after: impl Fn(&KubeSim) + Send + Sync + 'static,
    ) -> upkeep::apply::Pace {
        let sim = self.clone();
        upkeep::apply::Pace::Step(Arc::new(move || {
            sim.run_for(step, step);
            after(&sim);
        }))
    }

    pub fn set_timings(&self, t: Timings) {
        *self
            .shared
            .timings
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = t;
    }

    /// Save the state now (it is also saved every second while it changes).
    pub fn save(&self, dir: &Path) -> std::io::Result<()> {
        let snap = self.store().snapshot();
        write_atomic(
            &dir.join("kube.json"),
            &serde_json::to_vec(&snap).unwrap_or_default(),
        )
    }
}

/// Parse a faults file: a YAML list of [`ClusterFault`]s.
pub fn parse_faults(text: &str) -> Result<Vec<ClusterFault>, String> {
    serde_saphyr::from_str::<Vec<ClusterFault>>(text).map_err(|e| e.to_string())
}

async fn save_loop(shared: Arc<Shared>, file: PathBuf) {
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let snap = {
            let mut s = shared.store();
            if !s.dirty {
                continue;
            }
            s.dirty = false;
            s.snapshot()
        };
        if let Err(e) = write_atomic(&file, &serde_json::to_vec(&snap).unwrap_or_default()) {
            tracing::warn!(file = %file.display(), error = %e, "cannot save the simulated cluster");
        }
    }
}

pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(&tmp, path)
}

pub fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(bytes)
}

pub fn random_token() -> String {
    use std::hash::{BuildHasher, Hasher};
    let mut out = String::new();
    for i in 0..2u64 {
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u64(i);
        h.write_u128(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or(0),
        );
        out.push_str(&format!("{:016x}", h.finish()));
    }
    out
}

// ---------------------------------------------------------------------------------------------
// HTTP

fn json_response(status: StatusCode, v: &Value) -> Response {
    let mut r = (status, serde_json::to_vec(v).unwrap_or_default()).into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r
}

fn error_response(e: &ApiError) -> Response {
    json_response(
        StatusCode::from_u16(e.code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
        &e.status(),
    )
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < b.len() => {
                match u8::from_str_radix(std::str::from_utf8(&b[i + 1..i + 3]).unwrap_or("zz"), 16)
                {
                    Ok(v) => {
                        out.push(v);
                        i += 2;
                    }
                    Err(_) => out.push(b'%'),
                }
            }
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

struct Query(Vec<(String, String)>);

impl Query {
    fn parse(q: &str) -> Query {
        Query(
            q.split('&')
                .filter(|kv| !kv.is_empty())
                .map(|kv| {
                    let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
                    (percent_decode(k), percent_decode(v))
                })
                .collect(),
        )
    }
    fn get(&self, k: &str) -> Option<&str> {
        self.0.iter().find(|(a, _)| a == k).map(|(_, v)| v.as_str())
    }
    fn flag(&self, k: &str) -> bool {
        matches!(self.get(k), Some("true" | "1"))
    }
}

/// What a request addresses.
struct Target {
    group: String,
    version: String,
    plural: String,
    namespace: Option<String>,
    name: Option<String>,
    sub: Option<String>,
}

fn parse_target(segs: &[&str]) -> Option<Target> {
    let (group, version, rest) = match segs {
        ["api", v, rest @ ..] => (String::new(), v.to_string(), rest),
        ["apis", g, v, rest @ ..] => (g.to_string(), v.to_string(), rest),
        _ => return None,
    };
    let s = |x: &&str| x.to_string();
    let t = match rest {
        ["namespaces", ns, plural, tail @ ..]
            if !(group.is_empty() && *plural == "status" && tail.is_empty()) =>
        {
            Target {
                group,
                version,
                plural: s(plural),
                namespace: Some(s(ns)),
                name: tail.first().map(s),
                sub: tail.get(1).map(s),
            }
        }
        [plural, tail @ ..] => Target {
            group,
            version,
            plural: s(plural),
            namespace: None,
            name: tail.first().map(s),
            sub: tail.get(1).map(s),
        },
        [] => return None,
    };
    Some(t)
}

async fn handle(State(shared): State<Arc<Shared>>, req: Request) -> Response {
    let r = handle_request(shared.clone(), req).await;
    if let Some(n) = http_body::Body::size_hint(r.body()).exact() {
        shared.counters.bytes_out.fetch_add(n, Ordering::Relaxed);
    }
    r
}

async fn handle_request(shared: Arc<Shared>, req: Request) -> Response {
    shared.counters.requests.fetch_add(1, Ordering::Relaxed);
    let path = req.uri().path().to_string();
    let method = req.method().clone();
    let query = Query::parse(req.uri().query().unwrap_or(""));
    let headers = req.headers().clone();
    if path == "/healthz" || path == "/readyz" || path == "/livez" {
        return (StatusCode::OK, "ok").into_response();
    }
    let auth = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if !constant_time_eq(
        auth.as_bytes(),
        format!("Bearer {}", shared.token).as_bytes(),
    ) {
        return error_response(&ApiError::new(401, "Unauthorized", "Unauthorized"));
    }
    let watch = query.flag("watch");
    let fault = shared.take_request_fault(&method, &path, watch);
    match &fault {
        Some(ClusterFault::ApiError { status, .. }) => {
            return error_response(&ApiError::new(
                *status,
                "InternalError",
                format!("simulated failure of {method} {path}"),
            ));
        }
        Some(ClusterFault::ApiDelay { millis, .. }) => {
            tokio::time::sleep(Duration::from_millis(*millis)).await;
        }
        _ => {}
    }
    let drop_after = match fault {
        Some(ClusterFault::WatchDrops { after_events, .. }) => Some(after_events),
        _ => None,
    };
    let body = match axum::body::to_bytes(req.into_body(), 3 * 1024 * 1024).await {
        Ok(b) => b,
        Err(_) => {
            return error_response(&ApiError::new(
                413,
                "RequestEntityTooLarge",
                "the request body is larger than 3 MiB",
            ));
        }
    };
    let segs: Vec<&str> = path
        .trim_matches('/')
        .split('/')
        .filter(|s| !s.is_empty())
        .collect();
    match segs.as_slice() {
        ["version"] => return json_response(StatusCode::OK, &version_info(&shared)),
        ["api"] => {
            return json_response(
                StatusCode::OK,
                &json!({"kind": "APIVersions", "versions": ["v1"],
                    "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": shared.base.trim_start_matches("https://")}]}),
            );
        }
        ["apis"] => return json_response(StatusCode::OK, &group_list(&shared.store())),
        ["api", v] => return resource_list(&shared.store(), "", v),
        ["apis", g, v] => return resource_list(&shared.store(), g, v),
        ["openapi", "v3"] => return json_response(StatusCode::OK, &openapi_index(&shared.store())),
        ["openapi", "v3", "api", v] => return openapi_group(&shared.store(), "", v),
        ["openapi", "v3", "apis", g, v] => return openapi_group(&shared.store(), g, v),
        ["openapi", ..] | ["swagger.json"] => {
            return error_response(&ApiError::new(
                404,
                "NotFound",
                "the simulator serves OpenAPI v3 discovery of PATCH parameters only (see docs/simulator.md)",
            ));
        }
        _ => {}
    }
    let Some(target) = parse_target(&segs) else {
        return error_response(&ApiError::new(
            404,
            "NotFound",
            format!("the server could not find the requested resource ({path})"),
        ));
    };
    let manager = query
        .get("fieldManager")
        .map(str::to_string)
        .unwrap_or_else(|| default_manager(&headers));
    let mut ctx = Ctx::new(shared.clock.now(), &manager);
    let (t, request_version) = {
        let s = shared.store();
        match s.resolve(&target.group, &target.version, &target.plural) {
            Ok(t) => (t.clone(), target.version.clone()),
            Err(e) => return error_response(&e),
        }
    };
    let g = storage_gr(&t);
    let ns = target.namespace.clone().unwrap_or_default();
    if t.namespaced && target.name.is_some() && target.namespace.is_none() {
        return error_response(&ApiError::new(
            404,
            "NotFound",
            format!(
                "{} is namespaced: use /namespaces/<ns>/{}",
                t.plural, t.plural
            ),
        ));
    }
    let verb = match (&method, &target.name) {
        (&Method::GET, None) if watch => "watch",
        (&Method::GET, None) => "list",
        (&Method::GET, Some(_)) => "get",
        (&Method::POST, _) => "create",
        (&Method::PUT, _) => "update",
        (&Method::PATCH, _) => "patch",
        (&Method::DELETE, Some(_)) => "delete",
        (&Method::DELETE, None) => "deletecollection",
        _ => "other",
    };
    if verb == "list" {
        *shared
            .counters
            .lists
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(t.plural.clone())
            .or_default() += 1;
    }
    if matches!(verb, "create" | "update" | "patch") {
        ctx.request = Some(store::Request {
            strict: query.get("fieldValidation") == Some("Strict"),
            patch: verb == "patch",
        });
    }
    shared
        .audit
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(Access {
            verb: verb.to_string(),
            group: target.group.clone(),
            resource: match &target.sub {
                Some(sub) => format!("{}/{sub}", t.plural),
                None => t.plural.clone(),
            },
            namespace: ns.clone(),
        });
    let dry_run = query.get("dryRun").is_some();
    let table = wants_table(&headers);
    let result: Result<Value, ApiError> = match (&method, &target.name) {
        (&Method::GET, None) if watch => {
            return watch_response(
                &shared,
                &t,
                &request_version,
                &target,
                &query,
                table,
                drop_after,
            );
        }
        (&Method::GET, None) => {
            let s = shared.store();
            list(
                &s,
                &t,
                &request_version,
                target.namespace.as_deref(),
                &query,
                table,
                ctx.now,
            )
        }
        (&Method::GET, Some(name)) => {
            let s = shared.store();
            s.get(&g, &ns, name).map(|o| {
                let o = with_version(o, &t, &request_version);
                if table {
                    table_for(&t, &[o], s.resource_version(), ctx.now, &query)
                } else {
                    o
                }
            })
        }
        (&Method::POST, None) => match parse_body(&body, &headers).map(|b| in_core_shape(&t, b)) {
            Ok(obj) => {
                shared.counters.writes.fetch_add(1, Ordering::Relaxed);
                if dry_run {
                    Ok(obj)
                } else {
                    let mut s = shared.store();
                    s.create(&g, &ns, obj, &ctx)
                        .map(|o| with_version(o, &t, &request_version))
                }
            }
            Err(e) => Err(e),
        },
        (&Method::PUT, Some(name)) => {
            match parse_body(&body, &headers).map(|b| in_core_shape(&t, b)) {
                Ok(obj) => {
                    shared.counters.writes.fetch_add(1, Ordering::Relaxed);
                    let mut s = shared.store();
                    s.replace(&g, &ns, name, obj, target.sub.as_deref(), &ctx)
                        .map(|o| with_version(o, &t, &request_version))
                }
                Err(e) => Err(e),
            }
        }
        (&Method::PATCH, Some(name)) => {
            let kind = match patch_kind(&headers, &query) {
                Ok(k) => k,
                Err(e) => return error_response(&e),
            };
            match parse_body(&body, &headers).map(|b| in_core_shape(&t, b)) {
                Ok(p) => {
                    shared.counters.writes.fetch_add(1, Ordering::Relaxed);
                    let mut s = shared.store();
                    s.patch(&g, &ns, name, kind, &p, target.sub.as_deref(), &ctx)
                        .map(|o| with_version(o, &t, &request_version))
                }
                Err(e) => Err(e),
            }
        }
        (&Method::DELETE, Some(name)) => {
            shared.counters.writes.fetch_add(1, Ordering::Relaxed);
            let mut s = shared.store();
            s.delete(&g, &ns, name)
                .map(|o| with_version(o, &t, &request_version))
        }
        (&Method::DELETE, None) => {
            shared.counters.writes.fetch_add(1, Ordering::Relaxed);
            let mut s = shared.store();
            let selected = match select(&s, &t, target.namespace.as_deref(), &query) {
                Ok(v) => v,
                Err(e) => return error_response(&e),
            };
            let mut deleted = Vec::new();
            for o in selected {
                let name = o
                    .pointer("/metadata/name")
                    .and_then(Value::as_str)
                    .unwrap_or("");
                let ons = o
                    .pointer("/metadata/namespace")
                    .and_then(Value::as_str)
                    .unwrap_or("");
                if let Ok(d) = s.delete(&g, ons, name) {
                    deleted.push(with_version(d, &t, &request_version));
                }
            }
            Ok(
                json!({"kind": format!("{}List", t.kind), "apiVersion": t.api_version(&request_version),
                "metadata": {"resourceVersion": s.resource_version().to_string()}, "items": deleted}),
            )
        }
        _ => Err(ApiError::new(
            405,
            "MethodNotAllowed",
            format!("{method} is not supported on {path}"),
        )),
    };
    match result {
        Ok(v) => {
            let status = if method == Method::POST {
                StatusCode::CREATED
            } else {
                StatusCode::OK
            };
            json_response(status, &v)
        }
        Err(e) => error_response(&e),
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn default_manager(headers: &HeaderMap) -> String {
    let ua = headers
        .get(header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("unknown");
    ua.split('/').next().unwrap_or("unknown").to_string()
}

fn patch_kind(headers: &HeaderMap, query: &Query) -> Result<PatchKind, ApiError> {
    let ct = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let ct = ct.split(';').next().unwrap_or("").trim();
    Ok(match ct {
        "application/merge-patch+json" => PatchKind::Merge,
        "application/json-patch+json" => PatchKind::Json,
        "application/strategic-merge-patch+json" => PatchKind::Strategic,
        "application/apply-patch+yaml" | "application/apply-patch+json" => PatchKind::Apply {
            force: query.flag("force"),
        },
        other => {
            return Err(ApiError::new(
                415,
                "UnsupportedMediaType",
                format!(
                    "the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml, application/strategic-merge-patch+json (got {other:?})"
                ),
            ));
        }
    })
}

fn parse_body(body: &Bytes, headers: &HeaderMap) -> Result<Value, ApiError> {
    if let Ok(v) = serde_json::from_slice::<Value>(body) {
        return Ok(v);
    }
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let yaml = content_type.contains("yaml");
    if content_type.contains("protobuf") || content_type.contains("cbor") {
        // As the API server does for a media type it does not serve.
        return Err(ApiError::new(
            415,
            "UnsupportedMediaType",
            format!(
                "the emulator reads JSON and YAML bodies only (got {content_type:?}); ask the client for application/json"
            ),
        ));
    }
    let text =
        std::str::from_utf8(body).map_err(|_| ApiError::bad_request("the body is not UTF-8"))?;
    if yaml {
        return serde_saphyr::from_str::<Value>(text)
            .map_err(|e| ApiError::bad_request(format!("the body is not valid YAML: {e}")));
    }
    Err(ApiError::bad_request(format!(
        "the body is not valid JSON (content type {content_type:?})"
    )))
}

fn wants_table(headers: &HeaderMap) -> bool {
    headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| {
            a.split(',')
                .next()
                .is_some_and(|first| first.contains("as=Table"))
        })
}

fn version_info(shared: &Shared) -> Value {
    let s = shared.store();
    let server_version = s
        .list(&store::gr("", "nodes"), None)
        .into_iter()
        .filter(|n| seed::is_server(n))
        .filter_map(|n| {
            n.pointer("/status/nodeInfo/kubeletVersion")
                .and_then(Value::as_str)
        })
        .filter_map(|v| upkeep::versions::parse(v, upkeep::versions::Scheme::K3s).ok())
        .min()
        .map(|v| v.raw().to_string())
        .unwrap_or_else(|| "v1.33.4+k3s1".into());
    let (major, minor) =
        match upkeep::versions::parse(&server_version, upkeep::versions::Scheme::K3s) {
            Ok(v) => (v.major.to_string(), v.minor.to_string()),
            Err(_) => ("1".into(), "33".into()),
        };
    json!({
        "major": major, "minor": minor, "gitVersion": server_version,
        "gitCommit": "0000000000000000000000000000000000000000", "gitTreeState": "clean",
        "buildDate": "2026-01-01T00:00:00Z", "goVersion": "go1.24.4", "compiler": "gc",
        "platform": "linux/amd64",
    })
}

fn group_list(s: &Store) -> Value {
    let mut groups: std::collections::BTreeMap<String, Vec<String>> = Default::default();
    for t in s.types().filter(|t| !t.group.is_empty()) {
        let e = groups.entry(t.group.clone()).or_default();
        for v in &t.versions {
            if !e.contains(v) {
                e.push(v.clone());
            }
        }
    }
    let items: Vec<Value> = groups
        .into_iter()
        .map(|(g, vs)| {
            let versions: Vec<Value> = vs
                .iter()
                .map(|v| json!({"groupVersion": format!("{g}/{v}"), "version": v}))
                .collect();
            json!({"name": g, "versions": versions, "preferredVersion": versions[0]})
        })
        .collect();
    json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": items})
}

fn resource_list(s: &Store, group: &str, version: &str) -> Response {
    let verbs = json!([
        "create",
        "delete",
        "deletecollection",
        "get",
        "list",
        "patch",
        "update",
        "watch"
    ]);
    let mut resources = Vec::new();
    for t in s
        .types()
        .filter(|t| t.group == group && t.versions.iter().any(|v| v == version))
    {
        let mut r = json!({"name": t.plural, "singularName": t.singular, "namespaced": t.namespaced,
            "kind": t.kind, "verbs": verbs});
        if !t.short_names.is_empty() {
            r["shortNames"] = json!(t.short_names);
        }
        if !t.categories.is_empty() {
            r["categories"] = json!(t.categories);
        }
        resources.push(r);
        if t.status {
            resources.push(
                json!({"name": format!("{}/status", t.plural), "singularName": "",
                "namespaced": t.namespaced, "kind": t.kind, "verbs": ["get", "patch", "update"]}),
            );
        }
    }
    if resources.is_empty() {
        return error_response(&ApiError::new(
            404,
            "NotFound",
            format!("the server could not find the requested resource ({group}/{version})"),
        ));
    }
    let gv = if group.is_empty() {
        version.to_string()
    } else {
        format!("{group}/{version}")
    };
    json_response(
        StatusCode::OK,
        &json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv, "resources": resources}),
    )
}

fn group_versions(s: &Store) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = Vec::new();
    for t in s.types() {
        for v in &t.versions {
            let gv = (t.group.clone(), v.clone());
            if !out.contains(&gv) {
                out.push(gv);
            }
        }
    }
    out.sort();
    out
}

fn gv_path(group: &str, version: &str) -> String {
    if group.is_empty() {
        format!("api/{version}")
    } else {
        format!("apis/{group}/{version}")
    }
}

/// `/openapi/v3`: where each group-version's document is.
fn openapi_index(s: &Store) -> Value {
    let rv = s.resource_version();
    let paths: serde_json::Map<String, Value> = group_versions(s)
        .into_iter()
        .map(|(g, v)| {
            let p = gv_path(&g, &v);
            let url = format!("/openapi/v3/{p}?hash={rv:016X}");
            (p, json!({"serverRelativeURL": url}))
        })
        .collect();
    json!({"paths": paths})
}

/// A group-version's OpenAPI v3 document, reduced to what kubectl reads: every resource's PATCH
/// operation with its GVK and query parameters, so that kubectl uses server-side field
/// validation instead of downloading schemas; and, for a custom resource, its schema as the
/// apiextensions-apiserver publishes it (builder.go, `buildKubeNative`: the CRD's
/// `openAPIV3Schema` with `apiVersion`, `kind` and `metadata` added and the GVK extension), which
/// `kubectl explain` reads. Built-in types' schemas are not served.
fn openapi_group(s: &Store, group: &str, version: &str) -> Response {
    let mut paths = serde_json::Map::new();
    let mut schemas = serde_json::Map::new();
    let param = |n: &str| json!({"name": n, "in": "query", "schema": {"type": "string", "uniqueItems": true}});
    for t in s
        .types()
        .filter(|t| t.group == group && t.versions.iter().any(|v| v == version))
    {
        let base = gv_path(group, version);
        let path = if t.namespaced {
            format!("/{base}/namespaces/{{namespace}}/{}/{{name}}", t.plural)
        } else {
            format!("/{base}/{}/{{name}}", t.plural)
        };
        let op = json!({
            "operationId": format!("patch{}", t.kind),
            "x-kubernetes-action": "patch",
            "x-kubernetes-group-version-kind": {"group": group, "version": version, "kind": t.kind},
            "parameters": [param("dryRun"), param("fieldManager"), param("fieldValidation"), param("force")],
            "responses": {"200": {"description": "OK"}},
        });
        paths.insert(path, json!({"patch": op}));
        if let Some(schema) = s.schema_of(&t.gr()) {
            let mut schema = (*schema).clone();
            if let Some(props) = schema
                .as_object_mut()
                .map(|o| o.entry("properties").or_insert_with(|| json!({})))
                .and_then(Value::as_object_mut)
            {
                props.insert("apiVersion".into(), json!({"type": "string", "description": "APIVersion defines the versioned schema of this representation of an object."}));
                props.insert("kind".into(), json!({"type": "string", "description": "Kind is a string value representing the REST resource this object represents."}));
                props.insert(
                    "metadata".into(),
                    json!({"type": "object", "description": "Standard object's metadata."}),
                );
            }
            schema["x-kubernetes-group-version-kind"] =
                json!([{"group": group, "version": version, "kind": t.kind}]);
            let reversed: Vec<&str> = group.split('.').rev().collect();
            schemas.insert(
                format!("{}.{version}.{}", reversed.join("."), t.kind),
                schema,
            );
        }
    }
    if paths.is_empty() {
        return error_response(&ApiError::new(
            404,
            "NotFound",
            format!("no OpenAPI document for {group}/{version}"),
        ));
    }
    json_response(
        StatusCode::OK,
        &json!({"openapi": "3.0.0", "info": {"title": "Kubernetes", "version": "v1.33.4+k3s1"},
            "paths": paths, "components": {"schemas": schemas}}),
    )
}

fn with_version(mut o: Value, t: &ResourceType, version: &str) -> Value {
    if is_events_v1(t) {
        o = events::core_to_v1(o);
    }
    if let Some(m) = o.as_object_mut() {
        m.insert("apiVersion".into(), json!(t.api_version(version)));
    }
    o
}

/// A body written through `events.k8s.io` is stored in the core shape.
fn in_core_shape(t: &ResourceType, body: Value) -> Value {
    if is_events_v1(t) {
        events::v1_to_core(body)
    } else {
        body
    }
}

fn is_events_v1(t: &ResourceType) -> bool {
    t.group == "events.k8s.io" && t.plural == "events"
}

/// Where a type's objects are stored: `events.k8s.io` Events are the core Event list seen in
/// another shape (kubernetes `pkg/registry/events/rest/storage_events.go` serves them from the
/// core event storage).
fn storage_gr(t: &ResourceType) -> Gr {
    if is_events_v1(t) {
        (String::new(), "events".to_string())
    } else {
        t.gr()
    }
}

/// The two shapes of one Event (kubernetes `pkg/apis/events/v1/conversion.go`,
/// `Convert_v1_Event_To_core_Event`, `Convert_core_Event_To_v1_Event`).
mod events {
    use serde_json::Value;

    /// core/v1 field, events.k8s.io/v1 field.
    const RENAMES: [(&str, &str); 7] = [
        ("involvedObject", "regarding"),
        ("message", "note"),
        ("source", "deprecatedSource"),
        ("firstTimestamp", "deprecatedFirstTimestamp"),
        ("lastTimestamp", "deprecatedLastTimestamp"),
        ("count", "deprecatedCount"),
        ("reportingComponent", "reportingController"),
    ];

    fn rename(mut o: Value, to_v1: bool) -> Value {
        if let Some(m) = o.as_object_mut() {
            for (core, v1) in RENAMES {
                let (from, to) = if to_v1 { (core, v1) } else { (v1, core) };
                if let Some(x) = m.remove(from) {
                    m.insert(to.to_string(), x);
                }
            }
            m.insert("kind".into(), Value::String("Event".into()));
        }
        o
    }

    pub fn core_to_v1(o: Value) -> Value {
        rename(o, true)
    }

    pub fn v1_to_core(o: Value) -> Value {
        let mut o = rename(o, false);
        if let Some(m) = o.as_object_mut() {
            m.remove("apiVersion");
        }
        o
    }
}

fn select(
    s: &Store,
    t: &ResourceType,
    ns: Option<&str>,
    query: &Query,
) -> Result<Vec<Value>, ApiError> {
    let labels = parse_label_selector(query.get("labelSelector").unwrap_or(""))
        .map_err(|e| ApiError::bad_request(format!("unable to parse requirement: {e}")))?;
    let fields = parse_field_selector(query.get("fieldSelector").unwrap_or(""))
        .map_err(|e| ApiError::bad_request(format!("unable to parse field selector: {e}")))?;
    Ok(s.list(&storage_gr(t), ns)
        .into_iter()
        .filter(|o| labels_match(&labels, o) && fields_match(&fields, o))
        .cloned()
        .collect())
}

fn list(
    s: &Store,
    t: &ResourceType,
    version: &str,
    ns: Option<&str>,
    query: &Query,
    table: bool,
    now: DateTime<Utc>,
) -> Result<Value, ApiError> {
    let items: Vec<Value> = select(s, t, ns, query)?
        .into_iter()
        .map(|o| with_version(o, t, version))
        .collect();
    if table {
        return Ok(table_for(t, &items, s.resource_version(), now, query));
    }
    Ok(json!({
        "kind": format!("{}List", t.kind), "apiVersion": t.api_version(version),
        "metadata": {"resourceVersion": s.resource_version().to_string()}, "items": items,
    }))
}

/// Kubernetes' `duration.HumanDuration`, as `kubectl get` shows ages.
pub fn human_duration(d: chrono::Duration) -> String {
    let s = d.num_seconds();
    if s < -1 {
        return "<invalid>".into();
    }
    let s = s.max(0);
    let (m, h) = (s / 60, s / 3600);
    if s < 120 {
        format!("{s}s")
    } else if m < 10 {
        if s % 60 == 0 {
            format!("{m}m")
        } else {
            format!("{m}m{}s", s % 60)
        }
    } else if m < 180 {
        format!("{m}m")
    } else if h < 8 {
        if m % 60 == 0 {
            format!("{h}h")
        } else {
            format!("{h}h{}m", m % 60)
        }
    } else if h < 48 {
        format!("{h}h")
    } else if h < 24 * 8 {
        if h % 24 == 0 {
            format!("{}d", h / 24)
        } else {
            format!("{}d{}h", h / 24, h % 24)
        }
    } else if h < 24 * 365 * 2 {
        format!("{}d", h / 24)
    } else if h < 24 * 365 * 8 {
        format!("{}y{}d", h / 24 / 365, (h / 24) % 365)
    } else {
        format!("{}y", h / 24 / 365)
    }
}

fn age(o: &Value, now: DateTime<Utc>) -> String {
    o.pointer("/metadata/creationTimestamp")
        .and_then(Value::as_str)
        .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
        .map(|t| human_duration(now - t.with_timezone(&Utc)))
        .unwrap_or_else(|| "<unknown>".into())
}

fn condition<'a>(o: &'a Value, kind: &str) -> Option<&'a Value> {
    o.pointer("/status/conditions")
        .and_then(Value::as_array)?
        .iter()
        .find(|c| c.get("type").and_then(Value::as_str) == Some(kind))
}

fn node_status(n: &Value) -> String {
    let ready = condition(n, "Ready")
        .and_then(|c| c.get("status"))
        .and_then(Value::as_str);
    let mut s = if ready == Some("True") {
        "Ready".to_string()
    } else {
        "NotReady".to_string()
    };
    if n.pointer("/spec/unschedulable").and_then(Value::as_bool) == Some(true) {
        s.push_str(",SchedulingDisabled");
    }
    s
}

fn node_roles(n: &Value) -> String {
    let mut roles: Vec<&str> = n
        .pointer("/metadata/labels")
        .and_then(Value::as_object)
        .into_iter()
        .flatten()
        .filter_map(|(k, _)| k.strip_prefix("node-role.kubernetes.io/"))
        .collect();
    roles.sort();
    if roles.is_empty() {
        "<none>".into()
    } else {
        roles.join(",")
    }
}

fn cell_text(values: Vec<Value>) -> Value {
    let parts: Vec<String> = values
        .into_iter()
        .map(|v| match v {
            Value::String(s) => s,
            Value::Null => String::new(),
            other => other.to_string(),
        })
        .collect();
    if parts.is_empty() {
        Value::Null
    } else {
        json!(parts.join(","))
    }
}

/// A `meta.k8s.io/v1` Table, as `kubectl get` asks for.
fn table_for(
    t: &ResourceType,
    items: &[Value],
    rv: u64,
    now: DateTime<Utc>,
    query: &Query,
) -> Value {
    let col = |name: &str, kind: &str, prio: i64| json!({"name": name, "type": kind, "format": if name == "Name" {"name"} else {""}, "description": "", "priority": prio});
    type CellFn = Box<dyn Fn(&Value) -> Value>;
    let name_cell: CellFn =
        Box::new(|o: &Value| o.pointer("/metadata/name").cloned().unwrap_or(Value::Null));
    let age_cell = move |o: &Value| json!(age(o, now));
    let (defs, cells): (Vec<Value>, Vec<CellFn>) = match (t.group.as_str(), t.plural.as_str()) {
        ("", "nodes") => (
            vec![
                col("Name", "string", 0),
                col("Status", "string", 0),
                col("Roles", "string", 0),
                col("Age", "string", 0),
                col("Version", "string", 0),
            ],
            vec![
                name_cell,
                Box::new(|o| json!(node_status(o))),
                Box::new(|o| json!(node_roles(o))),
                Box::new(age_cell),
                Box::new(|o| {
                    o.pointer("/status/nodeInfo/kubeletVersion")
                        .cloned()
                        .unwrap_or(Value::Null)
                }),
            ],
        ),
        ("", "pods") => (
            vec![
                col("Name", "string", 0),
                col("Status", "string", 0),
                col("Age", "string", 0),
                col("Node", "string", 1),
            ],
            vec![
                name_cell,
                Box::new(|o| {
                    o.pointer("/status/phase")
                        .cloned()
                        .unwrap_or(json!("Pending"))
                }),
                Box::new(age_cell),
                Box::new(|o| o.pointer("/spec/nodeName").cloned().unwrap_or(Value::Null)),
            ],
        ),
        ("batch", "jobs") => (
            vec![
                col("Name", "string", 0),
                col("Status", "string", 0),
                col("Age", "string", 0),
            ],
            vec![
                name_cell,
                Box::new(|o| {
                    json!(if condition(o, "Complete").is_some() {
                        "Complete"
                    } else if condition(o, "Failed").is_some() {
                        "Failed"
                    } else {
                        "Running"
                    })
                }),
                Box::new(age_cell),
            ],
        ),
        _ if !t.columns.is_empty() => {
            let mut defs = vec![col("Name", "string", 0)];
            let mut cells: Vec<CellFn> = vec![name_cell];
            for c in &t.columns {
                defs.push(json!({"name": c.name, "type": if c.kind == "date" {"string"} else {c.kind.as_str()}, "format": "", "description": c.description, "priority": c.priority}));
                let path = c.json_path.clone();
                if c.kind == "date" {
                    cells.push(Box::new(move |o| {
                        let v = jsonpath(o, &path);
                        match v
                            .first()
                            .and_then(Value::as_str)
                            .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
                        {
                            Some(t) => json!(human_duration(now - t.with_timezone(&Utc))),
                            None => Value::Null,
                        }
                    }));
                } else {
                    cells.push(Box::new(move |o| cell_text(jsonpath(o, &path))));
                }
            }
            (defs, cells)
        }
        _ => (
            vec![col("Name", "string", 0), col("Age", "string", 0)],
            vec![name_cell, Box::new(age_cell)],
        ),
    };
    let include = query.get("includeObject").unwrap_or("Metadata");
    let rows: Vec<Value> = items
        .iter()
        .map(|o| {
            let object = match include {
                "Object" => o.clone(),
                "None" => Value::Null,
                _ => json!({"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": o.get("metadata").cloned().unwrap_or(json!({}))}),
            };
            json!({"cells": cells.iter().map(|f| f(o)).collect::<Vec<_>>(), "object": object})
        })
        .collect();
    json!({"kind": "Table", "apiVersion": "meta.k8s.io/v1", "metadata": {"resourceVersion": rv.to_string()},
        "columnDefinitions": defs, "rows": rows})
}

#[allow(clippy::too_many_arguments)]
fn watch_response(
    shared: &Arc<Shared>,
    t: &ResourceType,
    version: &str,
    target: &Target,
    query: &Query,
    table: bool,
    drop_after: Option<usize>,
) -> Response {
    let labels = match parse_label_selector(query.get("labelSelector").unwrap_or("")) {
        Ok(l) => l,
        Err(e) => return error_response(&ApiError::bad_request(e)),
    };
    let fields = match parse_field_selector(query.get("fieldSelector").unwrap_or("")) {
        Ok(f) => f,
        Err(e) => return error_response(&ApiError::bad_request(e)),
    };
    let rv_param = query.get("resourceVersion").unwrap_or("").to_string();
    let bookmarks = query.flag("allowWatchBookmarks");
    let timeout = query
        .get("timeoutSeconds")
        .and_then(|s| s.parse::<u64>().ok())
        .map(Duration::from_secs)
        .unwrap_or(Duration::from_secs(1800));
    let gr: Gr = storage_gr(t);
    let ns = target.namespace.clone();
    let name = target.name.clone();
    let matches = move |e: &store::Event| {
        e.gr == gr
            && ns.as_ref().is_none_or(|n| &e.namespace == n)
            && name.as_ref().is_none_or(|n| {
                e.object.pointer("/metadata/name").and_then(Value::as_str) == Some(n)
            })
            && labels_match(&labels, &e.object)
            && fields_match(&fields, &e.object)
    };
    let (rx, initial, last_rv): (_, Vec<Value>, u64) = {
        let s = shared.store();
        let rx = s.subscribe();
        let now = shared.clock.now();
        let mut initial = Vec::new();
        let rv = s.resource_version();
        if rv_param.is_empty() || rv_param == "0" {
            for o in s.list(&storage_gr(t), target.namespace.as_deref()) {
                let e = store::Event {
                    rv,
                    gr: storage_gr(t),
                    namespace: String::new(),
                    kind: EventType::Added,
                    object: o.clone(),
                };
                let e = store::Event {
                    namespace: o
                        .pointer("/metadata/namespace")
                        .and_then(Value::as_str)
                        .unwrap_or("")
                        .to_string(),
                    ..e
                };
                if matches(&e) {
                    initial.push(event_json(t, version, &e, table, now, query));
                }
            }
        } else {
            let from = rv_param.parse::<u64>().unwrap_or(0);
            match s.events_since(from) {
                Ok(events) => {
                    for e in events.iter().filter(|e| matches(e)) {
                        initial.push(event_json(t, version, e, table, now, query));
                    }
                }
                Err(e) => {
                    initial.push(json!({"type": "ERROR", "object": e.status()}));
                }
            }
        }
        (rx, initial, rv)
    };
    let expired = initial.iter().any(|e| e["type"] == "ERROR");
    shared.counters.watches_open.fetch_add(1, Ordering::Relaxed);
    let state = WatchState {
        shared: shared.clone(),
        rx,
        pending: initial.into(),
        last_rv,
        matches: Box::new(matches),
        t: t.clone(),
        version: version.to_string(),
        table,
        include: query.get("includeObject").unwrap_or("Metadata").to_string(),
        bookmarks,
        deadline: tokio::time::Instant::now() + timeout,
        sent: 0,
        drop_after,
        done: expired,
    };
    let stream = futures_util::stream::unfold(state, |mut st| async move {
        let line = st.next().await?;
        let mut bytes = serde_json::to_vec(&line).unwrap_or_default();
        bytes.push(b'\n');
        Some((Ok::<Bytes, Infallible>(Bytes::from(bytes)), st))
    });
    let mut r = Response::new(Body::from_stream(stream));
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r.headers_mut().insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("no-cache, private"),
    );
    r
}

fn event_json(
    t: &ResourceType,
    version: &str,
    e: &store::Event,
    table: bool,
    now: DateTime<Utc>,
    query: &Query,
) -> Value {
    let obj = with_version(e.object.clone(), t, version);
    let obj = if table {
        table_for(t, &[obj], e.rv, now, query)
    } else {
        obj
    };
    json!({"type": e.kind.as_str(), "object": obj})
}

struct WatchState {
    shared: Arc<Shared>,
    rx: tokio::sync::broadcast::Receiver<Arc<store::Event>>,
    pending: std::collections::VecDeque<Value>,
    last_rv: u64,
    matches: Box<dyn Fn(&store::Event) -> bool + Send>,
    t: ResourceType,
    version: String,
    table: bool,
    include: String,
    bookmarks: bool,
    deadline: tokio::time::Instant,
    sent: usize,
    drop_after: Option<usize>,
    done: bool,
}

impl Drop for WatchState {
    fn drop(&mut self) {
        self.shared
            .counters
            .watches_open
            .fetch_sub(1, Ordering::Relaxed);
    }
}

impl WatchState {
    async fn next(&mut self) -> Option<Value> {
        if let Some(d) = self.drop_after
            && self.sent >= d
        {
            return None;
        }
        if let Some(v) = self.pending.pop_front() {
            self.sent += 1;
            return Some(v);
        }
        if self.done {
            return None;
        }
        let query = Query(vec![("includeObject".into(), self.include.clone())]);
        loop {
            let bookmark = tokio::time::sleep(self.shared.bookmark_interval);
            tokio::select! {
                r = self.rx.recv() => match r {
                    Ok(e) => {
                        if e.rv <= self.last_rv || !(self.matches)(&e) {
                            continue;
                        }
                        self.last_rv = e.rv;
                        self.sent += 1;
                        return Some(event_json(&self.t, &self.version, &e, self.table, self.shared.clock.now(), &query));
                    }
                    // Too far behind, or the store is gone: end the watch; the client lists again.
                    Err(_) => return None,
                },
                _ = bookmark, if self.bookmarks => {
                    let rv = self.shared.store().resource_version().max(self.last_rv);
                    return Some(json!({"type": "BOOKMARK", "object": {
                        "kind": self.t.kind, "apiVersion": self.t.api_version(&self.version),
                        "metadata": {"resourceVersion": rv.to_string()}}}));
                }
                _ = tokio::time::sleep_until(self.deadline) => return None,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn human_durations_match_kubectl() {
        let d = chrono::Duration::seconds;
        assert_eq!(human_duration(d(5)), "5s");
        assert_eq!(human_duration(d(150)), "2m30s");
        assert_eq!(human_duration(d(3600)), "60m");
        assert_eq!(human_duration(d(4 * 3600 + 60)), "4h1m");
        assert_eq!(human_duration(d(30 * 3600)), "30h");
        assert_eq!(human_duration(d(3 * 86400)), "3d");
        assert_eq!(human_duration(d(20 * 86400)), "20d");
    }

    #[test]
    fn paths_address_resources() {
        let t = parse_target(&["api", "v1", "namespaces", "default", "pods", "p", "status"]);
        assert!(
            matches!(t, Some(Target { ref plural, ref namespace, ref name, ref sub, .. })
            if plural == "pods" && namespace.as_deref() == Some("default") && name.as_deref() == Some("p") && sub.as_deref() == Some("status"))
        );
        let t = parse_target(&["api", "v1", "namespaces", "default", "status"]);
        assert!(
            matches!(t, Some(Target { ref plural, ref name, ref sub, .. })
            if plural == "namespaces" && name.as_deref() == Some("default") && sub.as_deref() == Some("status"))
        );
        let t = parse_target(&["apis", "upgrade.cattle.io", "v1", "plans"]);
        assert!(
            matches!(t, Some(Target { ref group, ref namespace, .. }) if group == "upgrade.cattle.io" && namespace.is_none())
        );
        assert_eq!(percent_decode("a%3Db%2Cc+d"), "a=b,c d");
    }

    #[test]
    fn faults_parse_from_yaml() {
        let f = parse_faults(
            "- kind: nodeNeverReady\n  node: agent-1\n- kind: apiError\n  pathContains: /plans\n  status: 500\n  times: 2\n",
        );
        assert_eq!(
            f,
            Ok(vec![
                ClusterFault::NodeNeverReady {
                    node: "agent-1".into()
                },
                ClusterFault::ApiError {
                    path_contains: "/plans".into(),
                    method: None,
                    status: 500,
                    times: 2
                }
            ])
        );
        assert!(parse_faults("- kind: nope\n").is_err());
    }
}
