//! `upkeep sim serve`: the playground on 127.0.0.1. A GitHub (releases from the shipped catalog,
//! and a forge holding the config repository `homelab/cluster`) and a Kubernetes API running a
//! small k3s cluster with the system-upgrade-controller, Flux and Longhorn simulated; it prints
//! where everything is, serves until `shutdown`, and saves the cluster in `state_dir`.

use std::io::Write as _;
use std::path::PathBuf;

use chrono::Utc;

use crate::kube::{ClusterSpec, KubeOptions, KubeSim};

/// What the playground is made of (`upkeep sim serve`'s flags).
#[derive(Debug, Clone)]
pub struct Playground {
    pub port: u16,
    pub kube_port: u16,
    pub servers: usize,
    pub agents: usize,
    /// The nodes' k3s (default: versions.yaml's k3s with `config_repo`, else v1.33.4+k3s1).
    pub k3s_version: Option<String>,
    pub faults: Option<PathBuf>,
    pub kubeconfig_out: Option<PathBuf>,
    pub state_dir: Option<PathBuf>,
    pub speed: f64,
    pub config_repo: Option<PathBuf>,
    /// The cluster's directory in `config_repo` (versions.yaml, policies/ and its Flux path).
    pub config_subdir: String,
    pub webhook_url: Option<String>,
    /// The secret webhook deliveries are signed with (needed with `webhook_url`).
    pub webhook_secret: String,
}

/// Why the playground could not start: a bad option (exit 2) or the world (exit 1).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    Usage(String),
    #[error("{0}")]
    Failed(String),
}

impl Error {
    /// The exit code for the CLI.
    pub fn code(&self) -> i32 {
        match self {
            Error::Usage(_) => 2,
            Error::Failed(_) => 1,
        }
    }
}

/// Start the playground, print where everything is, serve until `shutdown`.
pub async fn serve(
    args: &Playground,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), Error> {
    let cat =
        upkeep::sources::catalog::Catalog::builtin().map_err(|e| Error::Failed(e.to_string()))?;
    let faults = match &args.faults {
        None => Vec::new(),
        Some(f) => std::fs::read_to_string(f)
            .map_err(|e| e.to_string())
            .and_then(|t| crate::kube::parse_faults(&t))
            .map_err(|e| {
                Error::Usage(format!(
                    "{}: not a faults file: {e} (see docs/simulator.md)",
                    f.display()
                ))
            })?,
    };
    if let Some(v) = &args.k3s_version
        && upkeep::versions::parse(v, upkeep::versions::Scheme::K3s).is_err()
    {
        return Err(Error::Usage(format!(
            "--k3s-version {v:?} is not a k3s version like v1.33.4+k3s1"
        )));
    }
    // A repository of the user's: the cluster is bootstrapped from it as Flux would be (its
    // FluxInstance or flux-system Kustomization, and what they build), as `upkeep rehearse` does.
    let cluster = match &args.config_repo {
        None => ClusterSpec {
            servers: args.servers,
            agents: args.agents,
            k3s_version: args
                .k3s_version
                .clone()
                .unwrap_or_else(|| ClusterSpec::default().k3s_version),
            ..ClusterSpec::default()
        },
        Some(root) => {
            let loaded = upkeep::model::load_repo(&root.join(&args.config_subdir), Utc::now())
                .map_err(|e| Error::Usage(format!("--config-repo: {e}")))?;
            let version_of = |name: &str| {
                loaded.repo.as_ref().and_then(|r| {
                    r.components
                        .iter()
                        .find(|c| c.name == name)
                        .map(|c| c.version.to_string())
                })
            };
            let k3s = args.k3s_version.clone().or_else(|| version_of("k3s"));
            let spec = crate::kube::bootstrap::cluster_from_repo(
                root,
                &args.config_subdir,
                k3s,
                version_of("flux"),
            )
            .map_err(|e| {
                Error::Usage(format!(
                    "--config-repo: {e}; the playground needs the directory Flux reads (add --subdir for a cluster's directory in it)"
                ))
            })?;
            ClusterSpec {
                servers: args.servers,
                agents: args.agents,
                ..spec
            }
        }
    };
    if args.webhook_url.is_some() && args.webhook_secret.is_empty() {
        return Err(Error::Usage(
            "--webhook-url needs UPKEEP_WEBHOOK_SECRET (the same secret `upkeep run` gets)".into(),
        ));
    }
    let scratch = std::env::temp_dir().join(format!("upkeep-sim-{}", std::process::id()));
    let kubeconfig = match (&args.kubeconfig_out, &args.state_dir) {
        (Some(p), _) => p.clone(),
        (None, Some(d)) => d.join("kubeconfig"),
        (None, None) => scratch.join("kubeconfig"),
    };
    let forge_root = args.state_dir.as_ref().unwrap_or(&scratch).join("forge");
    // With a state directory the token is kept too, so that kubeconfigs and clones keep working.
    let token = match &args.state_dir {
        Some(d) => match std::fs::read_to_string(d.join("token")) {
            Ok(t) if !t.trim().is_empty() => t.trim().to_string(),
            _ => {
                let t = crate::kube::random_token();
                crate::kube::write_private(&d.join("token"), t.as_bytes()).map_err(|e| {
                    Error::Failed(format!("cannot write {}: {e}", d.join("token").display()))
                })?;
                t
            }
        },
        None => crate::kube::random_token(),
    };
    let sim = crate::upstream::UpstreamSim::start(args.port)
        .await
        .map_err(|e| Error::Failed(format!("cannot listen on 127.0.0.1:{}: {e}", args.port)))?;
    crate::upstream::seed_from_catalog(&sim, &cat.file);
    sim.require_forge_token(&token);
    let repo = "homelab/cluster";
    sim.enable_persistent_forge(&forge_root)
        .map_err(|e| e.to_string())
        .and_then(|()| {
            if sim.with_forge(|f| f.has_repo(repo)).unwrap_or(false) {
                return Ok(());
            }
            let seed = match &args.config_repo {
                Some(d) => d.clone(),
                None => {
                    let d = forge_root.join(".seed");
                    crate::write_example_repo(&d).map_err(|e| e.to_string())?;
                    d
                }
            };
            sim.with_forge(|f| f.create_repo(repo, Some(&seed), Utc::now()).map(|_| ()))
                .unwrap_or(Ok(()))
                .map_err(|e| e.to_string())
        })
        .map_err(|e| {
            Error::Failed(format!(
                "cannot set up the simulated forge in {}: {e}",
                forge_root.display()
            ))
        })?;
    if let Some(url) = &args.webhook_url {
        sim.with_forge(|f| f.add_webhook(repo, url, args.webhook_secret.as_bytes()));
    }
    let clone = sim
        .with_forge(|f| f.repo_path(repo))
        .flatten()
        .unwrap_or_default();
    let opts = KubeOptions {
        port: args.kube_port,
        token: Some(token.clone()),
        clock: crate::clock::SimClock::new(Utc::now(), args.speed),
        cluster: cluster.clone(),
        state_dir: args.state_dir.clone(),
        ..KubeOptions::default()
    };
    let kube = KubeSim::start(opts)
        .await
        .map_err(|e| Error::Failed(format!("cannot start the Kubernetes emulator: {e}")))?;
    for f in faults {
        kube.inject(f);
    }
    // Flux's GitRepository `flux-system` (or those the repository's bootstrap names) is the
    // config repository: what Flux applies comes from it, as in a real cluster.
    if !clone.as_os_str().is_empty() {
        match &cluster.bootstrap {
            Some(b) => {
                for (ns, name) in &b.sources {
                    kube.serve_git(ns, name, &clone);
                }
            }
            None => kube.serve_git("flux-system", "flux-system", &clone),
        }
    }
    kube.write_kubeconfig(&kubeconfig)
        .map_err(|e| Error::Failed(format!("cannot write {}: {e}", kubeconfig.display())))?;
    let url = sim.url();
    // Whoever started us may stop reading after these lines; a closed stdout must not stop us.
    let mut out = std::io::stdout();
    let _ = writeln!(
        out,
        "github={url}\nrepo={repo}\nclone={}\ngit={url}/git/{repo}.git\nkubernetes={}\nkubeconfig={}\ntoken={}\n# try: kubectl --kubeconfig {} get nodes,plans -A\n#      git clone {}\n#      upkeep check --repo {} --github-api-url {url} --k3s-channel-url {url} --no-cache",
        clone.display(),
        kube.url(),
        kubeconfig.display(),
        kube.token(),
        kubeconfig.display(),
        clone.display(),
        match &args.config_repo {
            Some(r) => r.join(&args.config_subdir).display().to_string(),
            None => "examples/cluster-repo".into(),
        },
    );
    let _ = out.flush();
    // Until interrupted; then save the cluster so that --state-dir resumes exactly here.
    shutdown.await;
    if let Some(d) = &args.state_dir {
        kube.save(d).map_err(|e| {
            Error::Failed(format!(
                "cannot save the simulated cluster in {}: {e}",
                d.display()
            ))
        })?;
    }
    Ok(())
}
