//! The `upkeep` command line. Thin: parses arguments, calls the library, prints, picks the exit code.
//!
//! Exit codes: 0 success, 1 problems found (e.g. an invalid config repo, a failed source),
//! 2 usage errors; `check` exits 10 when updates are available.

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use clap::{Parser, Subcommand, ValueEnum};
use serde::Serialize;

use std::sync::Arc;
use std::time::Duration;

use upkeep::diag::{Diagnostic, Severity};
use upkeep::model::{self, ConfigRepo};
use upkeep::report;
use upkeep::sources::{self, NetConfig, catalog::Catalog};

#[derive(Debug, Parser)]
#[command(
    name = "upkeep",
    version,
    about = "Keeps a k3s cluster's platform up to date, safely, with git as the source of truth."
)]
pub struct Cli {
    /// Log lines on stderr as text (for people) or JSON, one object per line (for log
    /// collectors). Which lines: the UPKEEP_LOG filter, e.g. `info` or `upkeep=debug` (default:
    /// upkeep's progress for `apply` and `run`, warnings only for the other commands). Text is
    /// colored on a terminal unless NO_COLOR is set.
    #[arg(long, global = true, value_enum, env = "UPKEEP_LOG_FORMAT", default_value_t = Output::Text)]
    pub log_format: Output,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// The whole loop in under a minute, with no cluster and no network: simulated k3s, Flux and
    /// Longhorn, a simulated GitHub with the example config repository, the shipped catalog of
    /// real releases, and upkeep's own propose and apply cycles on a simulated clock. Exit 0 when
    /// every step of the story happened.
    Demo {
        /// Keep the demo's state here (default: a new temporary directory).
        #[arg(long, value_name = "DIR")]
        dir: Option<PathBuf>,
        /// Keep the simulators serving after the story, until interrupted (for kubectl).
        #[arg(long)]
        keep_serving: bool,
    },
    /// Print the Renovate preset that leaves to upkeep exactly the versions it owns (those of
    /// versions.yaml's components, wherever the repository carries them); extend it from your
    /// renovate.json. `--builtin` prints the shipped renovate/upkeep.json (k3s, Flux, Longhorn).
    RenovatePreset {
        /// The cluster directory holding versions.yaml.
        #[arg(long, default_value = ".")]
        repo: PathBuf,
        /// Only the built-in components (the shipped preset).
        #[arg(long)]
        builtin: bool,
    },
    /// Try upkeep on your own repository, with no cluster and no network: a simulated cluster
    /// bootstrapped from it as Flux would be (its FluxInstance or flux-system Kustomization,
    /// its Kustomizations, HelmReleases and Plans at the versions git says, nodes at
    /// versions.yaml's k3s) and a simulated GitHub holding it; upkeep's own propose and apply
    /// cycles then run on a simulated clock, every proposed pull request merged, applied in the
    /// next window, validated and soaked, until nothing more is proposed. Prints what happened
    /// per component. Exit 0 when nothing failed, went down a version, or left git and the
    /// cluster disagreeing; 1 otherwise; 2 when it cannot run.
    Rehearse {
        /// The repository (a checkout: the directory Flux reads).
        #[arg(long, default_value = ".")]
        repo: PathBuf,
        /// The cluster's directory in it, holding versions.yaml and policies/.
        #[arg(long, default_value = "")]
        subdir: String,
        /// Use only the shipped signed catalog of releases (the rehearsal always does; the flag
        /// says so explicitly).
        #[arg(long)]
        offline: bool,
        /// How to print what happened: text for people, JSON for tools.
        #[arg(long, short = 'o', value_enum, default_value_t = Output::Text)]
        output: Output,
        /// Keep the rehearsal's state here (default: a temporary directory, removed after).
        #[arg(long, value_name = "DIR")]
        dir: Option<PathBuf>,
    },
    /// Check a config repo (versions.yaml and policies/) and print every problem found.
    Validate {
        /// The cluster directory holding versions.yaml and policies/.
        #[arg(long, default_value = ".")]
        repo: PathBuf,
        /// How to print the problems: text for people, JSON for tools.
        #[arg(long, value_enum, default_value_t = Output::Text)]
        output: Output,
        /// Judge windows as of this time (RFC 3339) instead of now.
        #[arg(long, value_parser = parse_now)]
        now: Option<DateTime<Utc>>,
        /// The repository's root, read as Flux builds it to see where each version is carried
        /// (default: the nearest directory above --repo that holds .git, else --repo).
        #[arg(long, value_name = "DIR")]
        root: Option<PathBuf>,
    },
    /// Print the JSON Schemas of versions.yaml, policy files and the check report, or write them
    /// to a directory.
    Schema {
        /// Write the *.schema.json files here instead of printing them.
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Show, for every component, the releases upstream, the next legal step and the path to the
    /// newest. Exit 0: all up to date; 10: updates available; 1: a source failed or the config is
    /// invalid.
    Check {
        /// The cluster directory holding versions.yaml and policies/.
        #[arg(long, default_value = ".")]
        repo: PathBuf,
        /// How to print the report: a table for a terminal, JSON for tools, markdown for a PR.
        #[arg(long, value_enum, default_value_t = ReportFormat::Table)]
        output: ReportFormat,
        /// Read releases from the signed offline catalog instead of the network (the catalog
        /// shipped in upkeep unless --catalog names one).
        #[arg(long)]
        offline: bool,
        /// A signed catalog file (its signature is FILE.minisig); implies --offline.
        #[arg(long, value_name = "FILE")]
        catalog: Option<PathBuf>,
        /// The minisign public key of --catalog (default: `catalog.publicKey` from the policies).
        #[arg(long, value_name = "KEY", env = "UPKEEP_CATALOG_PUBLIC_KEY")]
        catalog_public_key: Option<String>,
        /// Compute ages and gates as of this time (RFC 3339) instead of now.
        #[arg(long, value_parser = parse_now)]
        now: Option<DateTime<Utc>>,
        #[command(flatten)]
        net: NetArgs,
    },
    /// One detection + proposal cycle: open or update one pull request per legal update, and the
    /// dependency dashboard. Exit 0: done; 1: something failed (it is retried next cycle) or
    /// versions.yaml on the base branch is invalid; 2: usage errors.
    Propose(Box<ProposeArgs>),
    /// What would be applied to the cluster: for every component what runs, what versions.yaml
    /// asks for, the path, when (the next window), and the preflight verdict right now. Exit 0:
    /// nothing to apply; 10: something to apply and its preflight passes; 1: a preflight fails
    /// or the cluster cannot be read.
    Plan(Box<PlanArgs>),
    /// One apply cycle now: for every component whose running version differs from versions.yaml
    /// on the base branch, create or resume its Rollout and drive it (respecting windows unless
    /// --emergency). Exit 0: nothing failed; 1: a rollout failed or needs attention.
    Apply(Box<ApplyArgs>),
    /// The controller: one level-triggered loop (fetch, detect and propose on its own interval,
    /// apply what was merged), woken early by signed GitHub webhooks or, for --repo, by a commit;
    /// replicas elect a leader on a Lease. Serves /healthz, /readyz, /metrics, /webhook and a
    /// status page on --listen. Stops on SIGTERM or SIGINT after the step in progress. Settings
    /// may come from a file (--config; docs/install.md lists them all).
    // A later value of a flag wins, so that the command line overrides --config's file.
    #[command(args_override_self = true)]
    Run(Box<RunArgs>),
    /// List the rollouts in the cluster with their phase and message, newest change first (as
    /// `flux get` does for Flux objects). Exit 0: none failed unacknowledged; 1: one did, or the
    /// cluster cannot be read.
    Get(ClusterArgs),
    /// Every update upkeep rolled out, newest first: when, from, to, how long, the outcome, the
    /// PR, the backup and the revert. Read from the cluster's rollouts and the config
    /// repository's git log (give --repo or --repo-url), so it survives the loss of either.
    History(Box<HistoryArgs>),
    /// The monthly update report: what was applied (and how long after its release), what
    /// failed and was reverted, window time, and what is behind and why; from the cluster's
    /// rollouts, the config repository's log and the releases upstream (or the catalog).
    Report(Box<ReportArgs>),
    /// Maintenance mode by hand, as the policy's `maintenance:` describes it (the controller
    /// enters and leaves it around each rollout on its own): `status` shows what is marked and
    /// scaled down, `enable` marks the namespaces and scales the workloads to 0 (recording
    /// their replicas on them), `disable` gives each back exactly what it had.
    Maintenance {
        /// `status`, `enable` or `disable`.
        #[arg(value_enum)]
        action: MaintenanceAction,
        /// The cluster directory holding versions.yaml and policies/.
        #[arg(long, default_value = ".")]
        repo: PathBuf,
        /// Only the entries that cover this component's rollouts (default: every entry).
        #[arg(long)]
        component: Option<String>,
        /// With `disable`: also give back what a rollout holds in maintenance (mid-upgrade, its
        /// apps come back before it ends).
        #[arg(long)]
        force: bool,
        #[command(flatten)]
        at: ClusterArgs,
    },
    /// Mark a failed rollout (Failed, Reverted, RequiresAttention) as looked at: it leaves the
    /// status page and the metrics, so its alert resolves; `upkeep get` still lists it. Records
    /// who and when in the `upkeep.dev/acknowledged` annotation (docs/runbook.md).
    Acknowledge {
        /// The rollout's name (`upkeep get` lists them).
        rollout: String,
        /// Who looked (default: $USER).
        #[arg(long, value_name = "NAME")]
        by: Option<String>,
        #[command(flatten)]
        at: ClusterArgs,
    },
    /// Try a failed rollout again: delete it so that the next reconcile (or `upkeep apply`)
    /// makes a new attempt with a new backup, when versions.yaml still asks for its version;
    /// after a revert commit, says how to ask for the version again.
    Retry {
        /// The rollout's name (`upkeep get` lists them).
        rollout: String,
        #[command(flatten)]
        at: ClusterArgs,
    },
    /// Check the installation, as `flux check` does: the Kubernetes API and the nodes, the
    /// UpkeepRollout CRD, the system-upgrade-controller, Flux's objects, Longhorn, and (with
    /// --owner and --name) that the GitHub token may push to the config repository. Exit 0: all
    /// good (warnings allowed); 1: something fails.
    Doctor {
        #[command(flatten)]
        at: ClusterArgs,
        #[command(flatten)]
        namespaces: NamespaceArgs,
        /// The config repository's owner on GitHub (with --name: check the token).
        #[arg(long, requires = "name")]
        owner: Option<String>,
        /// The config repository's name on GitHub.
        #[arg(long, requires = "owner")]
        name: Option<String>,
        #[command(flatten)]
        net: NetArgs,
    },
    /// Ask the controller for a reconcile now (detect, propose and apply), as `flux reconcile`
    /// does, and wait until it says it handled it. Exit 0: handled; 1: not within --wait.
    Reconcile {
        /// Seconds to wait for the controller (0: ask and return).
        #[arg(long, default_value_t = 60, value_name = "SECONDS")]
        wait: u64,
        #[command(flatten)]
        at: ClusterArgs,
    },
    /// Suspend a component (or --all): no rollout of it starts, one in flight stops after the
    /// node in progress, proposals go on. Recorded in the cluster (ConfigMap upkeep-control,
    /// with who, when and why) so the controller and `upkeep apply` both hold it; `upkeep resume`
    /// lifts it. To record a pause in git instead, add a freeze to policies/.
    Suspend {
        /// The component (as in versions.yaml).
        #[arg(required_unless_present = "all", conflicts_with = "all")]
        component: Option<String>,
        /// Everything upkeep applies.
        #[arg(long)]
        all: bool,
        /// Why (shown on the status page, in `upkeep get` and in the rollout's message).
        #[arg(long, default_value = "")]
        reason: String,
        /// Who (default: $USER).
        #[arg(long, value_name = "NAME")]
        by: Option<String>,
        #[command(flatten)]
        at: ClusterArgs,
    },
    /// Lift a suspension of a component (or --all).
    Resume {
        /// The component.
        #[arg(required_unless_present = "all", conflicts_with = "all")]
        component: Option<String>,
        /// The suspension of everything.
        #[arg(long)]
        all: bool,
        #[command(flatten)]
        at: ClusterArgs,
    },
    /// Print a shell completion script: `upkeep completions bash > /etc/bash_completion.d/upkeep`,
    /// `upkeep completions zsh > "${fpath[1]}/_upkeep"`, `upkeep completions fish >
    /// ~/.config/fish/completions/upkeep.fish`.
    Completions {
        /// The shell.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Offline release catalogs.
    #[command(subcommand)]
    Catalog(CatalogCommand),
    /// Simulators of the outside world, on 127.0.0.1, for trying upkeep without a network.
    #[command(subcommand)]
    Sim(SimCommand),
}

/// Where the Rollout objects are.
#[derive(Debug, Clone, clap::Args)]
pub struct ClusterArgs {
    /// The kubeconfig to use (default: $KUBECONFIG, ~/.kube/config, or in-cluster).
    #[arg(long, value_name = "FILE")]
    pub kubeconfig: Option<PathBuf>,
    /// The namespace of the Rollout objects.
    #[arg(long, default_value = "upkeep-system")]
    pub namespace: String,
    /// How to print the result.
    #[arg(long, value_enum, default_value_t = Output::Text)]
    pub output: Output,
}

/// Where the config repository is, on git and on the forge.
#[derive(Debug, Clone, clap::Args)]
pub struct RepoArgs {
    /// The config repository's git URL (http(s)://, ssh or file://).
    #[arg(long, value_name = "URL", conflicts_with = "repo")]
    pub repo_url: Option<String>,
    /// The config repository as a local git repository (path).
    #[arg(long, value_name = "PATH")]
    pub repo: Option<PathBuf>,
    /// The repository's owner on the forge.
    #[arg(long)]
    pub owner: String,
    /// The repository's name on the forge.
    #[arg(long)]
    pub name: String,
    /// The branch pull requests go to and versions are read from.
    #[arg(long, default_value = "main")]
    pub base: String,
    /// The cluster directory inside the repository (holding versions.yaml and policies/).
    #[arg(long, default_value = "")]
    pub subdir: String,
    /// Where the git mirror lives (default: $XDG_STATE_HOME/upkeep or ~/.local/state/upkeep).
    #[arg(long, value_name = "DIR", env = "UPKEEP_STATE_DIR")]
    pub state_dir: Option<PathBuf>,
    /// Who upkeep's commits are by, as `Name <email>`.
    #[arg(
        long,
        value_name = "AUTHOR",
        default_value = "upkeep <upkeep@users.noreply.github.com>"
    )]
    pub git_author: String,
    /// The SSH private key for an SSH repository URL (default: your SSH agent and config).
    #[arg(long, value_name = "FILE")]
    pub ssh_key: Option<PathBuf>,
}

/// Where `propose` and `run` read releases: the network, or a signed catalog.
#[derive(Debug, Clone, clap::Args)]
pub struct CatalogArgs {
    /// Read releases from the signed offline catalog instead of the network.
    #[arg(long)]
    pub offline: bool,
    /// A signed catalog file (implies --offline).
    #[arg(long, value_name = "FILE")]
    pub catalog: Option<PathBuf>,
    /// The minisign public key of --catalog (default: `catalog.publicKey` from the policies).
    #[arg(long, value_name = "KEY", env = "UPKEEP_CATALOG_PUBLIC_KEY")]
    pub catalog_public_key: Option<String>,
}

impl CatalogArgs {
    /// The catalog to read, or `None` for the live sources.
    fn catalog(&self) -> Option<Result<Catalog, String>> {
        if !(self.offline || self.catalog.is_some()) {
            return None;
        }
        Some(
            match &self.catalog {
                Some(path) => Catalog::load(path, self.catalog_public_key.as_deref()),
                None => Catalog::builtin(),
            }
            .map_err(|e| e.to_string()),
        )
    }
}

#[derive(Debug, Clone, clap::Args)]
pub struct ProposeArgs {
    #[command(flatten)]
    pub at: RepoArgs,
    /// How to print what was done (or, with --dry-run, planned).
    #[arg(long, value_enum, default_value_t = Output::Text)]
    pub output: Output,
    /// The forge hosting the repository.
    #[arg(long, value_enum, default_value_t = ForgeKind::Github)]
    pub forge: ForgeKind,
    /// Print what would be done (branches, titles, bodies) and change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Do not create or update the dependency-dashboard issue.
    #[arg(long)]
    pub no_dashboard: bool,
    /// The conventional-commit type of upkeep's commits (`chore(k3s): update to ...`).
    #[arg(long, default_value = "chore")]
    pub commit_prefix: String,
    /// Labels on every pull request (repeat; `upkeep/<kind>` is always added).
    #[arg(long = "label", value_name = "LABEL", default_values_t = vec!["upkeep".to_string()])]
    pub labels: Vec<String>,
    #[command(flatten)]
    pub releases: CatalogArgs,
    /// Judge ages, gates and windows as of this time (RFC 3339) instead of now.
    #[arg(long, value_parser = parse_now)]
    pub now: Option<DateTime<Utc>>,
    #[command(flatten)]
    pub net: NetArgs,
}

/// Where the platform's parts live, when not where upstream puts them.
#[derive(Debug, Clone, clap::Args)]
pub struct NamespaceArgs {
    /// The system-upgrade-controller's namespace: upkeep's Plans go there (SUC reads Plans
    /// only in its own namespace).
    #[arg(long, default_value = "system-upgrade", value_name = "NAMESPACE")]
    pub suc_namespace: String,
    /// Where the etcd snapshot Job runs before a k3s upgrade.
    #[arg(long, default_value = "kube-system", value_name = "NAMESPACE")]
    pub snapshot_namespace: String,
    /// Longhorn's namespace (its settings, volumes and backups).
    #[arg(long, default_value = "longhorn-system", value_name = "NAMESPACE")]
    pub longhorn_namespace: String,
}

impl NamespaceArgs {
    pub fn namespaces(&self) -> upkeep::cluster::Namespaces {
        upkeep::cluster::Namespaces {
            system_upgrade: self.suc_namespace.clone(),
            snapshots: self.snapshot_namespace.clone(),
            longhorn: self.longhorn_namespace.clone(),
        }
    }
}

#[derive(Debug, Clone, clap::Args)]
pub struct ApplyArgs {
    /// How to print the rollouts and what could not be applied.
    #[arg(long, value_enum, default_value_t = Output::Text)]
    pub output: Output,
    /// The config repository's git URL.
    #[arg(long, value_name = "URL", conflicts_with = "repo")]
    pub repo_url: Option<String>,
    /// The config repository as a local git repository (path).
    #[arg(long, value_name = "PATH")]
    pub repo: Option<PathBuf>,
    /// The repository's owner and name on the forge (for PR comments and revert PRs).
    #[arg(long, requires = "name")]
    pub owner: Option<String>,
    /// The repository's name on the forge (with --owner).
    #[arg(long, requires = "owner")]
    pub name: Option<String>,
    /// The branch versions.yaml is read from and reverts are committed to.
    #[arg(long, default_value = "main")]
    pub base: String,
    /// The cluster's directory inside the repository ("" for its root).
    #[arg(long, default_value = "")]
    pub subdir: String,
    /// Where the git mirror and checkouts are kept (default: $XDG_STATE_HOME/upkeep).
    #[arg(long, value_name = "DIR", env = "UPKEEP_STATE_DIR")]
    pub state_dir: Option<PathBuf>,
    /// The kubeconfig (default: KUBECONFIG, ~/.kube/config, or in-cluster).
    #[arg(long, value_name = "FILE")]
    pub kubeconfig: Option<PathBuf>,
    /// Only this component.
    #[arg(long)]
    pub component: Option<String>,
    /// Start outside windows (freezes still hold).
    #[arg(long)]
    pub emergency: bool,
    /// Take no backup before applying.
    #[arg(long)]
    pub no_backup: bool,
    /// The namespace of the Rollout objects.
    #[arg(long, default_value = "upkeep-system")]
    pub namespace: String,
    #[command(flatten)]
    pub namespaces: NamespaceArgs,
    /// Minutes one hop may take before it counts as failed (default: the policy's
    /// `rollouts.hopTimeout`, else 60).
    #[arg(long)]
    pub hop_timeout: Option<i64>,
    /// Seconds to drive rollouts in this cycle before returning (they resume next cycle).
    #[arg(long, default_value_t = 3600)]
    pub wait: u64,
    /// How many agent nodes upgrade at once (servers always go one at a time); default: the
    /// policy's `rollouts.agentConcurrency`, else 1.
    #[arg(long)]
    pub agent_concurrency: Option<u64>,
    /// Who upkeep's revert commits are by, as `Name <email>`.
    #[arg(
        long,
        value_name = "AUTHOR",
        default_value = "upkeep <upkeep@users.noreply.github.com>"
    )]
    pub git_author: String,
    /// The SSH private key for an SSH repository URL (default: your SSH agent and config).
    #[arg(long, value_name = "FILE")]
    pub ssh_key: Option<PathBuf>,
    #[command(flatten)]
    pub net: NetArgs,
}

#[derive(Debug, Clone, clap::Args)]
pub struct RunArgs {
    #[command(flatten)]
    pub at: RepoArgs,
    /// The kubeconfig (default: KUBECONFIG, ~/.kube/config, or in-cluster).
    #[arg(long, value_name = "FILE")]
    pub kubeconfig: Option<PathBuf>,
    /// Where Rollouts, Events and the Lease live.
    #[arg(long, default_value = "upkeep-system")]
    pub namespace: String,
    #[command(flatten)]
    pub namespaces: NamespaceArgs,
    /// Where /healthz, /readyz, /metrics, /webhook and the status page are served.
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub listen: std::net::SocketAddr,
    /// Seconds between reconciles when nothing wakes the loop (every 2 s at most while a
    /// rollout is under way).
    #[arg(long, default_value_t = 60, value_name = "SECONDS")]
    pub poll: u64,
    /// Seconds between release detections (and proposals).
    #[arg(long, default_value_t = 3600, value_name = "SECONDS")]
    pub detect_every: u64,
    /// Read these settings from a YAML file (kind ControllerConfig; keys are these flags in
    /// camelCase, see docs/install.md). Flags and environment variables override the file.
    #[arg(long, value_name = "FILE", env = "UPKEEP_CONFIG")]
    pub config: Option<PathBuf>,
    #[command(flatten)]
    pub releases: CatalogArgs,
    /// A file holding the GitHub webhook secret (default: the UPKEEP_WEBHOOK_SECRET variable).
    /// Without a secret, POST /webhook is off and the loop relies on --poll.
    #[arg(long, value_name = "FILE")]
    pub webhook_secret_file: Option<PathBuf>,
    /// Act without taking the Lease (one replica only, e.g. outside the cluster).
    #[arg(long)]
    pub no_leader_election: bool,
    /// The Lease (in --namespace) replicas elect their leader on.
    #[arg(long, default_value = "upkeep")]
    pub lease_name: String,
    /// Seconds a leader's lease lasts without renewal; a standby takes over after this long.
    #[arg(long, default_value_t = 15, value_name = "SECONDS")]
    pub lease_duration: u64,
    #[command(flatten)]
    pub net: NetArgs,
}

impl RunArgs {
    /// The webhook secret: --webhook-secret-file, else UPKEEP_WEBHOOK_SECRET; `None` turns
    /// webhooks off.
    fn webhook_secret(&self) -> Result<Option<Vec<u8>>, String> {
        let secret = match &self.webhook_secret_file {
            Some(f) => std::fs::read_to_string(f)
                .map_err(|e| format!("cannot read the webhook secret file {}: {e}", f.display()))?
                .trim()
                .to_string(),
            None => std::env::var("UPKEEP_WEBHOOK_SECRET").unwrap_or_default(),
        };
        Ok(Some(secret.into_bytes()).filter(|s| !s.is_empty()))
    }
}

#[derive(Debug, Clone, clap::Args)]
pub struct PlanArgs {
    /// The cluster directory holding versions.yaml and policies/.
    #[arg(long, default_value = ".")]
    pub repo: PathBuf,
    #[command(flatten)]
    pub namespaces: NamespaceArgs,
    /// The kubeconfig (default: KUBECONFIG, ~/.kube/config, or in-cluster).
    #[arg(long, value_name = "FILE")]
    pub kubeconfig: Option<PathBuf>,
    /// How to print the plan: text for people, JSON for tools.
    #[arg(long, value_enum, default_value_t = Output::Text)]
    pub output: Output,
    /// Read releases (for multi-hop paths) from the signed offline catalog.
    #[arg(long)]
    pub offline: bool,
    /// Judge windows as of this time (RFC 3339) instead of now.
    #[arg(long, value_parser = parse_now)]
    pub now: Option<DateTime<Utc>>,
    /// The repository's root, read as Flux builds it to see where each version is carried, as
    /// `apply` will (default: the nearest directory above --repo that holds .git, else --repo).
    #[arg(long, value_name = "DIR")]
    pub root: Option<PathBuf>,
    #[command(flatten)]
    pub net: NetArgs,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ForgeKind {
    Github,
}

#[derive(Debug, Subcommand)]
pub enum SimCommand {
    /// A playground on 127.0.0.1 until interrupted: a Kubernetes API (a small k3s cluster with
    /// the system-upgrade-controller, Flux and Longhorn) that kubectl accepts, and GitHub's API
    /// (releases of the shipped catalog), a k3s channel server and Helm indexes. Prints
    /// `name=value` lines: github, kubernetes, kubeconfig, token.
    Serve(SimServeArgs),
}

#[derive(Debug, Clone, clap::Args)]
pub struct SimServeArgs {
    /// The port of the GitHub/channel/Helm simulator (0 picks a free one).
    #[arg(long, default_value_t = 0)]
    pub port: u16,
    /// The port of the Kubernetes API emulator (0 picks a free one).
    #[arg(long, default_value_t = 0)]
    pub kube_port: u16,
    /// k3s server (control-plane) nodes.
    #[arg(long, default_value_t = 1)]
    pub servers: usize,
    /// k3s agent nodes.
    #[arg(long, default_value_t = 2)]
    pub agents: usize,
    /// The k3s version every node starts on (default: versions.yaml's k3s with --config-repo,
    /// else v1.33.4+k3s1).
    #[arg(long)]
    pub k3s_version: Option<String>,
    /// A YAML list of faults to inject (see docs/simulator.md).
    #[arg(long, value_name = "FILE")]
    pub faults: Option<PathBuf>,
    /// Where to write the kubeconfig (default: kubeconfig in --state-dir, else in a new
    /// temporary directory).
    #[arg(long, value_name = "FILE")]
    pub kubeconfig_out: Option<PathBuf>,
    /// Keep the cluster's state here across restarts.
    #[arg(long, value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
    /// How much faster than real time the simulated clock runs.
    #[arg(long, default_value_t = 1.0)]
    pub speed: f64,
    /// Seed the forge's config repository (homelab/cluster) from this directory (a checkout of
    /// your repository) instead of the built-in copy of examples/cluster-repo, and bootstrap the
    /// cluster from it as Flux would: its FluxInstance or flux-system Kustomization, and the
    /// Kustomizations, HelmReleases and Plans they build, at the versions git says.
    #[arg(long, value_name = "DIR")]
    pub config_repo: Option<PathBuf>,
    /// The cluster's directory in --config-repo, holding versions.yaml and policies/.
    #[arg(long, default_value = "", requires = "config_repo")]
    pub subdir: String,
    /// Deliver the config repository's webhook events (push on merge, pull_request) here, e.g.
    /// `http://127.0.0.1:8080/webhook` of an `upkeep run`, signed with UPKEEP_WEBHOOK_SECRET.
    #[arg(long, value_name = "URL")]
    pub webhook_url: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum CatalogCommand {
    /// Write a catalog of every component's releases, read from the live sources. Sign it with
    /// `minisign -S -m FILE` before use.
    Export {
        /// The cluster directory holding versions.yaml and policies/.
        #[arg(long, default_value = ".")]
        repo: PathBuf,
        /// Where to write the catalog (JSON).
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
        #[command(flatten)]
        net: NetArgs,
    },
    /// Verify a catalog's signature and list what it holds.
    Verify {
        /// The catalog file; its signature is FILE.minisig. Without it, the shipped catalog.
        #[arg(value_name = "FILE")]
        catalog: Option<PathBuf>,
        /// The minisign public key (the RW... line).
        #[arg(long, value_name = "KEY", env = "UPKEEP_CATALOG_PUBLIC_KEY")]
        public_key: Option<String>,
    },
}

/// How upkeep reaches upstream.
#[derive(Debug, Clone, clap::Args)]
pub struct NetArgs {
    /// GitHub's REST API (GitHub Enterprise: https://HOST/api/v3).
    #[arg(long, env = "UPKEEP_GITHUB_API_URL", default_value = sources::github::DEFAULT_API_URL)]
    github_api_url: String,
    /// A file holding a GitHub token (default: the GITHUB_TOKEN variable; none is needed for
    /// public repositories, but it raises the rate limit from 60 to 5,000 requests an hour).
    #[arg(long, value_name = "FILE")]
    github_token_file: Option<PathBuf>,
    /// The k3s channel server, replacing the one in the component rules.
    #[arg(long, env = "UPKEEP_K3S_CHANNEL_URL")]
    k3s_channel_url: Option<String>,
    /// Where ETags and responses are cached (default: $XDG_CACHE_HOME/upkeep or ~/.cache/upkeep).
    #[arg(long, env = "UPKEEP_CACHE_DIR", value_name = "DIR")]
    cache_dir: Option<PathBuf>,
    /// Do not read or write the cache.
    #[arg(long)]
    no_cache: bool,
    /// A Docker-style config file with credentials for private OCI registries
    /// (`{"auths": {"ghcr.io": {"auth": "<base64 of user:password>"}}}`, or `username` and
    /// `password` in an entry; ~/.docker/config.json's format). Default: none, every registry is
    /// read anonymously.
    #[arg(long, value_name = "FILE")]
    registry_config: Option<PathBuf>,
    /// Seconds per request, including reading the answer.
    #[arg(long, default_value_t = 30, value_name = "SECONDS")]
    timeout: u64,
    /// Wait out a rate limit only when it resets within this many seconds; otherwise skip the
    /// source and say when to try again.
    #[arg(long, default_value_t = 60, value_name = "SECONDS")]
    max_rate_limit_wait: u64,
    /// Components fetched at once.
    #[arg(long, default_value_t = 16)]
    concurrency: usize,
    /// The least time between two writes to the forge (pull requests, comments, the
    /// dashboard), in milliseconds. GitHub asks for at least a second.
    #[arg(
        long,
        env = "UPKEEP_FORGE_WRITE_INTERVAL_MS",
        default_value_t = 1000,
        value_name = "MILLISECONDS"
    )]
    forge_write_interval_ms: u64,
}

impl NetArgs {
    fn config(&self) -> Result<NetConfig, String> {
        let token = match &self.github_token_file {
            Some(f) => {
                let t = std::fs::read_to_string(f)
                    .map_err(|e| format!("cannot read the token file {}: {e}", f.display()))?;
                Some(t.trim().to_string())
            }
            None => std::env::var("GITHUB_TOKEN").ok(),
        }
        .filter(|t| !t.is_empty())
        .map(sources::Secret::new);
        Ok(NetConfig {
            github_api_url: self.github_api_url.clone(),
            github_token: token,
            k3s_channel_url: self.k3s_channel_url.clone(),
            timeout: Duration::from_secs(self.timeout.max(1)),
            max_wait: Duration::from_secs(self.max_rate_limit_wait),
            concurrency: self.concurrency.max(1),
            write_interval: Duration::from_millis(self.forge_write_interval_ms),
            cache_dir: if self.no_cache {
                None
            } else {
                self.cache_dir.clone().or_else(sources::cache::default_dir)
            },
            registry_credentials: self
                .registry_config
                .as_deref()
                .map(sources::oci::Credentials::from_file)
                .transpose()?,
            ..NetConfig::default()
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ReportFormat {
    Table,
    Json,
    Markdown,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Output {
    Text,
    Json,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum MaintenanceAction {
    /// Show what is in maintenance, by whom, and what each workload had.
    Status,
    /// Mark the namespaces and scale the workloads down, as `human`.
    Enable,
    /// Give every workload a human scaled down its replicas back and unmark the namespaces
    /// (`--force`: also what a rollout holds).
    Disable,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum HistoryOutput {
    Table,
    Json,
    Markdown,
}

#[derive(Debug, clap::Args)]
pub struct HistoryArgs {
    /// How far back (`30d`, `12h`, `2w`).
    #[arg(long, default_value = "30d", value_parser = parse_since)]
    pub since: chrono::Duration,
    /// Only this component.
    #[arg(long)]
    pub component: Option<String>,
    /// How to print it: an aligned table, JSON, or a Markdown table (for a report or an issue).
    #[arg(long, value_enum, default_value_t = HistoryOutput::Table)]
    pub output: HistoryOutput,
    /// Times are shown in this IANA zone (default: UTC).
    #[arg(long, value_name = "ZONE")]
    pub time_zone: Option<String>,
    #[command(flatten)]
    pub record: RecordArgs,
}

/// Where the two records of what happened are: the config repository's git log and the
/// cluster's rollout objects (`upkeep history`, `upkeep report`).
#[derive(Debug, Clone, clap::Args)]
pub struct RecordArgs {
    /// The config repository's git URL (for its log).
    #[arg(long, value_name = "URL", conflicts_with = "repo")]
    pub repo_url: Option<String>,
    /// The config repository as a local git repository (path).
    #[arg(long, value_name = "PATH")]
    pub repo: Option<PathBuf>,
    /// The branch whose log is read.
    #[arg(long, default_value = "main")]
    pub base: String,
    /// The cluster's directory inside the repository ("" for its root).
    #[arg(long, default_value = "")]
    pub subdir: String,
    /// Where the git mirror is kept (default: $XDG_STATE_HOME/upkeep).
    #[arg(long, value_name = "DIR", env = "UPKEEP_STATE_DIR")]
    pub state_dir: Option<PathBuf>,
    /// The kubeconfig to use (default: $KUBECONFIG, ~/.kube/config, or in-cluster).
    #[arg(long, value_name = "FILE")]
    pub kubeconfig: Option<PathBuf>,
    /// The namespace of the rollouts.
    #[arg(long, default_value = "upkeep-system")]
    pub namespace: String,
}

/// `upkeep report`.
#[derive(Debug, Clone, clap::Args)]
pub struct ReportArgs {
    /// The monthly update report (the only report for now).
    #[arg(long, required = true)]
    pub monthly: bool,
    /// Which month, as 2026-11 (default: the last complete month).
    #[arg(long, value_name = "YYYY-MM")]
    pub month: Option<String>,
    /// Markdown (with Mermaid charts, as GitHub renders them), one HTML page (with SVG
    /// charts), or JSON.
    #[arg(long, value_enum, default_value_t = MonthlyFormat::Markdown)]
    pub format: MonthlyFormat,
    /// Months and dates in this IANA zone (default: UTC).
    #[arg(long, value_name = "ZONE")]
    pub time_zone: Option<String>,
    /// Post the report (Markdown) on the dependency dashboard issue, once per month (posted
    /// again, the month's comment is edited); needs --owner, --name and GITHUB_TOKEN.
    #[arg(long, requires_all = ["owner", "name"])]
    pub post: bool,
    /// The repository's owner on the forge (for --post).
    #[arg(long)]
    pub owner: Option<String>,
    /// The repository's name on the forge (for --post).
    #[arg(long)]
    pub name: Option<String>,
    #[command(flatten)]
    pub record: RecordArgs,
    #[command(flatten)]
    pub releases: CatalogArgs,
    #[command(flatten)]
    pub net: NetArgs,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum MonthlyFormat {
    Markdown,
    Html,
    Json,
}

fn parse_since(s: &str) -> Result<chrono::Duration, String> {
    upkeep::model::parse_duration(s)
}

fn parse_now(s: &str) -> Result<DateTime<Utc>, String> {
    DateTime::parse_from_rfc3339(s)
        .map(|d| d.with_timezone(&Utc))
        .map_err(|e| format!("`{s}` is not an RFC 3339 time like 2026-11-21T22:00:00Z: {e}"))
}

/// `upkeep run --config FILE` (or UPKEEP_CONFIG): the file's settings spliced in as arguments
/// right after `run`, so that the command line overrides them.
fn with_config_file(argv: Vec<String>) -> Result<Vec<String>, i32> {
    let Some(run_at) = subcommand_at(&argv).filter(|i| argv[*i] == "run") else {
        return Ok(argv);
    };
    let rest = &argv[run_at + 1..];
    let path = rest
        .iter()
        .position(|a| a == "--config")
        .and_then(|i| rest.get(i + 1).cloned())
        .or_else(|| {
            rest.iter()
                .find_map(|a| a.strip_prefix("--config=").map(str::to_string))
        })
        .or_else(|| {
            std::env::var("UPKEEP_CONFIG")
                .ok()
                .filter(|v| !v.is_empty())
        });
    let Some(path) = path else {
        return Ok(argv);
    };
    let file = upkeep::runconfig::load(Path::new(&path)).map_err(|d| {
        eprintln!("upkeep: {d}");
        2
    })?;
    let args = file.to_args(&|v| std::env::var_os(v).is_some_and(|x| !x.is_empty()));
    Ok(upkeep::runconfig::splice(&argv, run_at, args))
}

/// Where the subcommand is in `argv`: the first argument after the global options.
fn subcommand_at(argv: &[String]) -> Option<usize> {
    let mut i = 1;
    while let Some(a) = argv.get(i) {
        match a.as_str() {
            "--log-format" => i += 2,
            a if a.starts_with("--log-format=") => i += 1,
            _ => return Some(i),
        }
    }
    None
}

/// Parse the process arguments and run; returns the exit code.
pub fn run() -> i32 {
    let argv = match with_config_file(std::env::args().collect()) {
        Ok(a) => a,
        Err(code) => return code,
    };
    let cli = match Cli::try_parse_from(argv) {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            return e.exit_code();
        }
    };
    // Work that takes a while says what it does (rollout phases, per node and hop); the quick
    // commands only warn.
    let busy = matches!(cli.command, Command::Apply(_) | Command::Run(_));
    init_tracing(
        cli.log_format,
        if busy { "warn,upkeep=info" } else { "warn" },
    );
    // One TLS crypto provider (ring) for every HTTP client the command makes (reqwest needs it
    // installed before its first client, even for http:// URLs).
    sources::install_crypto_provider();
    match cli.command {
        Command::Validate {
            repo,
            output,
            now,
            root,
        } => validate(&repo, root.as_deref(), output, now.unwrap_or_else(Utc::now)),
        Command::Schema { out } => schema(out.as_deref()),
        Command::Check {
            repo,
            output,
            offline,
            catalog,
            catalog_public_key,
            now,
            net,
        } => check(CheckArgs {
            repo,
            output,
            offline: offline || catalog.is_some(),
            catalog,
            catalog_public_key,
            now: now.unwrap_or_else(Utc::now),
            net,
        }),
        Command::Catalog(CatalogCommand::Export { repo, out, net }) => {
            catalog_export(&repo, &out, &net)
        }
        Command::Sim(SimCommand::Serve(args)) => sim_serve(&args),
        Command::Propose(args) => propose(&args),
        Command::Plan(args) => plan(&args),
        Command::Run(args) => run_controller(&args),
        Command::Demo { dir, keep_serving } => crate::demo::run(dir, keep_serving),
        Command::RenovatePreset { repo, builtin } => renovate_preset(&repo, builtin),
        Command::Rehearse {
            repo,
            subdir,
            offline,
            output,
            dir,
        } => crate::rehearse::run(crate::rehearse::Args {
            repo,
            subdir,
            offline,
            json: output == Output::Json,
            dir,
        }),
        Command::Apply(args) => apply(&args),
        Command::Get(at) => get(&at),
        Command::History(a) => history(&a),
        Command::Report(a) => monthly_report(&a),
        Command::Maintenance {
            action,
            repo,
            component,
            force,
            at,
        } => maintenance(action, &repo, component.as_deref(), force, &at),
        Command::Retry { rollout, at } => retry(&rollout, &at),
        Command::Reconcile { wait, at } => reconcile_now(wait, &at),
        Command::Doctor {
            at,
            namespaces,
            owner,
            name,
            net,
        } => doctor(&at, &namespaces, owner.zip(name), &net),
        Command::Suspend {
            component,
            all: _,
            reason,
            by,
            at,
        } => suspend(component.as_deref(), &reason, by, &at),
        Command::Resume {
            component,
            all: _,
            at,
        } => resume(component.as_deref(), &at),
        Command::Completions { shell } => {
            use clap::CommandFactory as _;
            clap_complete::generate(shell, &mut Cli::command(), "upkeep", &mut std::io::stdout());
            0
        }
        Command::Acknowledge { rollout, by, at } => acknowledge(&rollout, by, &at),
        Command::Catalog(CatalogCommand::Verify {
            catalog,
            public_key,
        }) => catalog_verify(catalog.as_deref(), public_key.as_deref()),
    }
}

/// Whether colors are welcome on stderr: a terminal, and no NO_COLOR (https://no-color.org).
fn colors() -> bool {
    use std::io::IsTerminal as _;
    std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}

fn init_tracing(format: Output, default: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("UPKEEP_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match format {
        Output::Text => builder.with_ansi(colors()).try_init(),
        // One JSON object per line, event fields at the top level, the span chain (reconcile,
        // rollout) as `spans`.
        Output::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .try_init(),
    };
}

#[derive(Serialize)]
struct ValidateReport<'a> {
    valid: bool,
    errors: usize,
    warnings: usize,
    diagnostics: &'a [Diagnostic],
}

fn validate(repo: &Path, root: Option<&Path>, output: Output, now: DateTime<Utc>) -> i32 {
    let mut loaded = match model::load_repo(repo, now) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("upkeep: {e}");
            return 2;
        }
    };
    // Where each component's version is carried, the repository read as Flux builds it.
    if let Some(r) = &loaded.repo {
        let (root, subdir) = repository_root(repo, root);
        let reading = upkeep::layout::Reading::of_dir(&root, &subdir);
        let found = upkeep::layout::check::check(&reading, r);
        loaded
            .diagnostics
            .extend(upkeep::layout::check::relative(found, &subdir));
    }
    let (errors, warnings) = (loaded.errors(), loaded.warnings());
    let mut out = std::io::stdout().lock();
    match output {
        Output::Json => {
            let report = ValidateReport {
                valid: errors == 0,
                errors,
                warnings,
                diagnostics: &loaded.diagnostics,
            };
            let _ = serde_json::to_writer_pretty(&mut out, &report);
            let _ = writeln!(out);
        }
        Output::Text => {
            let color = std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none();
            let prefix = if repo == Path::new(".") {
                String::new()
            } else {
                format!("{}/", repo.display())
            };
            for d in &loaded.diagnostics {
                let line = format!("{prefix}{d}");
                let _ = match (color, d.severity) {
                    (true, Severity::Error) => writeln!(
                        out,
                        "{}",
                        line.replacen(": error:", ": \x1b[31merror\x1b[0m:", 1)
                    ),
                    (true, Severity::Warning) => writeln!(
                        out,
                        "{}",
                        line.replacen(": warning:", ": \x1b[33mwarning\x1b[0m:", 1)
                    ),
                    _ => writeln!(out, "{line}"),
                };
            }
            let summary = match loaded.repo.as_ref().filter(|_| errors == 0) {
                Some(r) => format!(
                    "{}: valid: {}, {}, {}, {}{}",
                    repo.display(),
                    count(r.components.len(), "component"),
                    count(r.windows.len(), "window"),
                    count(r.freezes.len(), "freeze"),
                    count(r.rules.len(), "update rule"),
                    if warnings > 0 {
                        format!(", {}", count(warnings, "warning"))
                    } else {
                        String::new()
                    }
                ),
                None => format!(
                    "{}: invalid: {}, {}",
                    repo.display(),
                    count(errors, "error"),
                    count(warnings, "warning")
                ),
            };
            let _ = writeln!(out, "{summary}");
        }
    }
    if errors > 0 { 1 } else { 0 }
}

/// `1 window`, `2 windows`.
fn count(n: usize, what: &str) -> String {
    format!("{n} {what}{}", if n == 1 { "" } else { "s" })
}

fn schema(out: Option<&Path>) -> i32 {
    let schemas = upkeep::schemas();
    match out {
        None => {
            for (name, text) in &schemas {
                println!("# {name}\n{text}");
            }
            0
        }
        Some(dir) => {
            for (name, text) in &schemas {
                let path = dir.join(name);
                if let Err(e) =
                    std::fs::create_dir_all(dir).and_then(|_| std::fs::write(&path, text))
                {
                    eprintln!("upkeep: cannot write {}: {e}", path.display());
                    return 1;
                }
                println!("wrote {}", path.display());
            }
            0
        }
    }
}

/// Load a config repo for commands that need a valid one; on failure print the problems and
/// return the exit code.
fn renovate_preset(repo: &Path, builtin: bool) -> i32 {
    let preset = if builtin {
        upkeep::renovate::builtin()
    } else {
        match load_valid(repo, Utc::now()) {
            Ok(c) => upkeep::renovate::for_repo(&c),
            Err(code) => return code,
        }
    };
    println!(
        "{}",
        serde_json::to_string_pretty(&preset).unwrap_or_default()
    );
    0
}

/// The repository's root and the cluster directory in it: `root` when given, else the nearest
/// directory above `cluster` holding `.git` (a checkout), else `cluster` itself.
fn repository_root(cluster: &Path, root: Option<&Path>) -> (PathBuf, String) {
    let abs = std::fs::canonicalize(cluster).unwrap_or_else(|_| cluster.to_path_buf());
    let root = match root {
        Some(r) => std::fs::canonicalize(r).unwrap_or_else(|_| r.to_path_buf()),
        None => abs
            .ancestors()
            .find(|d| d.join(".git").exists())
            .map(Path::to_path_buf)
            .unwrap_or_else(|| abs.clone()),
    };
    let subdir = abs
        .strip_prefix(&root)
        .map(|p| p.to_string_lossy().replace('\\', "/"))
        .unwrap_or_default();
    (root, subdir)
}

fn load_valid(repo: &Path, now: DateTime<Utc>) -> Result<ConfigRepo, i32> {
    let loaded = model::load_repo(repo, now).map_err(|e| {
        eprintln!("upkeep: {e}");
        2
    })?;
    match loaded.repo {
        Some(r) => Ok(r),
        None => {
            for d in loaded.diagnostics.iter().filter(|d| d.is_error()) {
                eprintln!("{}/{d}", repo.display());
            }
            eprintln!(
                "upkeep: {} is invalid ({}); run `upkeep validate --repo {}`",
                repo.display(),
                count(loaded.errors(), "error"),
                repo.display()
            );
            Err(1)
        }
    }
}

/// `f` with a client of `at`'s cluster, on a runtime of its own; errors in words.
fn on_cluster<T, Fut>(at: &ClusterArgs, f: impl FnOnce(kube::Client) -> Fut) -> Result<T, String>
where
    Fut: std::future::Future<Output = Result<T, String>>,
{
    let rt = runtime().map_err(|_| "cannot start the async runtime".to_string())?;
    rt.block_on(async {
        let client = upkeep::cluster::client(at.kubeconfig.as_deref())
            .await
            .map_err(|e| e.to_string())?;
        f(client).await
    })
}

/// `upkeep history`: the cluster's rollouts joined with the config repository's log. Either
/// may be missing (a rebuilt cluster, no repository given): the other still answers, and what
/// could not be read is said on stderr. Exit 1 only when neither could be read.
fn history(a: &HistoryArgs) -> i32 {
    let now = Utc::now();
    let since = now - a.since;
    let tz = match zone_arg(a.time_zone.as_deref()) {
        Ok(tz) => tz,
        Err(code) => return code,
    };
    let entries = match history_entries(&a.record, since, a.component.as_deref()) {
        Ok(e) => e,
        Err(code) => return code,
    };
    match a.output {
        HistoryOutput::Table => print!("{}", upkeep::history::table(&entries, tz)),
        HistoryOutput::Markdown => print!("{}", upkeep::history::markdown(&entries, tz)),
        HistoryOutput::Json => println!(
            "{}",
            serde_json::to_string_pretty(&entries).unwrap_or_default()
        ),
    }
    0
}

/// The history since `since` (of `component`), from whichever records could be read.
fn history_entries(
    a: &RecordArgs,
    since: DateTime<Utc>,
    component: Option<&str>,
) -> Result<Vec<upkeep::history::Entry>, i32> {
    let (rollouts, changes) = read_records(a, since)?;
    Ok(upkeep::history::entries(
        rollouts.as_deref().unwrap_or_default(),
        changes.as_deref().unwrap_or_default(),
        since,
        component,
    ))
}

/// `--time-zone` (UTC without it); exit code 2 when it is not a zone.
fn zone_arg(tz: Option<&str>) -> Result<chrono_tz::Tz, i32> {
    match tz.map(upkeep::windows::parse_tz) {
        Some(Ok(tz)) => Ok(tz),
        Some(Err(e)) => {
            eprintln!("upkeep: --time-zone: {e}");
            Err(2)
        }
        None => Ok(chrono_tz::UTC),
    }
}

/// Both records of what happened since `since`: the cluster's rollouts and git's version
/// changes. Either may fail (said on stderr); exit code 1 when both do.
#[allow(clippy::type_complexity)]
fn read_records(
    a: &RecordArgs,
    since: DateTime<Utc>,
) -> Result<
    (
        Result<Vec<upkeep::history::RolloutRecord>, String>,
        Result<Vec<upkeep::gitrepo::VersionChange>, String>,
    ),
    i32,
> {
    let at = ClusterArgs {
        kubeconfig: a.kubeconfig.clone(),
        namespace: a.namespace.clone(),
        output: Output::Text,
    };
    let rollouts = on_cluster(&at, |c| async move {
        upkeep::history::read_rollouts(&c, &a.namespace).await
    });
    let changes = match (&a.repo_url, &a.repo) {
        (None, None) => Err(
            "no config repository given (--repo or --repo-url): git's record is left out"
                .to_string(),
        ),
        _ => record_git(a).and_then(|git| {
            git.version_changes(&a.base, &upkeep::apply::vfile(&a.subdir), since, 10_000)
                .map_err(|e| e.to_string())
        }),
    };
    if let (Err(k), Err(g)) = (&rollouts, &changes) {
        eprintln!("upkeep: cannot read the history: the cluster: {k}; git: {g}");
        return Err(1);
    }
    for (what, r) in [
        ("the cluster", rollouts.as_ref().err()),
        ("git", changes.as_ref().err()),
    ] {
        if let Some(e) = r {
            eprintln!("upkeep: {what}'s record is left out: {e}");
        }
    }
    Ok((rollouts, changes))
}

/// The config repository's mirror for the records, fetched.
fn record_git(a: &RecordArgs) -> Result<upkeep::gitrepo::GitRepo, String> {
    let url = repo_url(&a.repo_url, &a.repo)?;
    let token = std::env::var("GITHUB_TOKEN").ok().filter(|t| !t.is_empty());
    let mirror = state_dir(a.state_dir.as_deref())
        .join("history")
        .join("mirror.git");
    let git = upkeep::gitrepo::GitRepo::open(&mirror, &url, token).map_err(|e| e.to_string())?;
    git.fetch().map_err(|e| e.to_string())?;
    Ok(git)
}

/// `upkeep report --monthly`.
fn monthly_report(a: &ReportArgs) -> i32 {
    let now = Utc::now();
    let tz = match zone_arg(a.time_zone.as_deref()) {
        Ok(tz) => tz,
        Err(code) => return code,
    };
    let month = match a.month.as_deref().map(upkeep::monthly::Month::parse) {
        Some(Ok(m)) => m,
        Some(Err(e)) => {
            eprintln!("upkeep: --month: {e}");
            return 2;
        }
        None => upkeep::monthly::Month::previous(now, tz),
    };
    let (start, _) = month.bounds(tz);
    let entries = match history_entries(&a.record, start, None) {
        Ok(e) => e,
        Err(code) => return code,
    };
    // The config as the base branch has it now: windows, freezes, and what is behind.
    let config = (a.record.repo_url.is_some() || a.record.repo.is_some())
        .then(|| -> Result<ConfigRepo, String> {
            let git = record_git(&a.record)?;
            let dir = state_dir(a.record.state_dir.as_deref())
                .join("history")
                .join("checkout");
            let tip = git.tip(&a.record.base).map_err(|e| e.to_string())?;
            git.extract(tip, &a.record.subdir, &dir)
                .map_err(|e| e.to_string())?;
            upkeep::model::load_repo(&dir, now)
                .map_err(|e| e.to_string())?
                .repo
                .ok_or_else(|| {
                    format!(
                        "versions.yaml or policies/ on {} are invalid",
                        a.record.base
                    )
                })
        })
        .and_then(|r| {
            r.map_err(|e| eprintln!("upkeep: windows and what is behind are left out: {e}"))
                .ok()
        });
    let (check, published) = match &config {
        Some(c) => match releases_report(c, &a.releases, &a.net, now) {
            Ok(x) => (x.0.components, x.1),
            Err((_, e)) => {
                eprintln!("upkeep: release dates and what is behind are left out: {e}");
                (Vec::new(), Default::default())
            }
        },
        None => (Vec::new(), Default::default()),
    };
    let m = upkeep::monthly::build(&upkeep::monthly::Inputs {
        month,
        tz,
        cluster: config.as_ref().and_then(|c| c.cluster.as_deref()),
        generated_at: now,
        entries: &entries,
        published: &published,
        windows: config.as_ref().map_or(&[], |c| &c.windows),
        freezes: config.as_ref().map_or(&[], |c| &c.freezes),
        components: &check,
    });
    let text = match a.format {
        MonthlyFormat::Markdown => upkeep::monthly::markdown(&m),
        MonthlyFormat::Html => upkeep::monthly::html(&m),
        MonthlyFormat::Json => serde_json::to_string_pretty(&m).unwrap_or_default() + "\n",
    };
    print!("{text}");
    if a.post {
        let (Some(owner), Some(name)) = (&a.owner, &a.name) else {
            return 2;
        };
        let posted = runtime()
            .map_err(|_| "cannot start the async runtime".to_string())
            .and_then(|rt| {
                rt.block_on(async {
                    let token = std::env::var("GITHUB_TOKEN").ok().filter(|t| !t.is_empty());
                    let forge = upkeep::forge::GitHub::new(
                        &a.net.github_api_url,
                        &format!("{owner}/{name}"),
                        token.as_deref(),
                    )
                    .map_err(|e| e.to_string())?;
                    upkeep::monthly::post(
                        &forge,
                        &m,
                        &upkeep::propose::Scope::new(
                            &a.record.subdir,
                            config.as_ref().and_then(|c| c.cluster.as_deref()),
                        ),
                    )
                    .await
                })
            });
        match posted {
            Ok(upkeep::monthly::Posted::New(n)) => {
                eprintln!("upkeep: the report is on the dashboard (#{n})")
            }
            Ok(upkeep::monthly::Posted::Already(n)) => eprintln!(
                "upkeep: {}'s report was already on the dashboard (#{n}); nothing posted",
                m.month
            ),
            Err(e) => {
                eprintln!("upkeep: cannot post the report on the dashboard: {e}");
                return 1;
            }
        }
    }
    0
}

/// `upkeep maintenance`: the policy's maintenance mode, by hand.
fn maintenance(
    action: MaintenanceAction,
    repo: &Path,
    component: Option<&str>,
    force: bool,
    at: &ClusterArgs,
) -> i32 {
    let loaded = match upkeep::model::load_repo(repo, Utc::now()) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("upkeep: {e}");
            return 1;
        }
    };
    let Some(config) = loaded.repo else {
        for d in &loaded.diagnostics {
            eprintln!("{d}");
        }
        eprintln!(
            "upkeep: {} is invalid (upkeep validate --repo {} says more)",
            repo.display(),
            repo.display()
        );
        return 1;
    };
    let plan = config.maintenance_for(component);
    if plan.is_empty() {
        eprintln!(
            "upkeep: the policies in {} name no maintenance{}: add a `maintenance:` entry (docs/config.md)",
            repo.display(),
            component.map(|c| format!(" for {c}")).unwrap_or_default()
        );
        return 1;
    }
    let result = on_cluster(at, |c| async move {
        use upkeep::maintenance;
        match action {
            MaintenanceAction::Status => maintenance::status(&c, &plan).await,
            MaintenanceAction::Enable => {
                maintenance::enter(&c, &plan, maintenance::HUMAN, Utc::now()).await
            }
            MaintenanceAction::Disable => {
                let by = (!force).then_some(maintenance::HUMAN);
                maintenance::leave(&c, &plan, by).await
            }
        }
        .map_err(|e| e.to_string())
    });
    match result {
        Ok(lines) => {
            match at.output {
                Output::Json => println!(
                    "{}",
                    serde_json::to_string_pretty(&lines).unwrap_or_default()
                ),
                Output::Text => {
                    for l in &lines {
                        println!("{l}");
                    }
                    if lines.is_empty() {
                        println!("nothing to do");
                    }
                }
            }
            0
        }
        Err(e) => {
            eprintln!("upkeep: {e}");
            1
        }
    }
}

/// `upkeep get`.
fn get(at: &ClusterArgs) -> i32 {
    let rows = on_cluster(at, |c| async move {
        upkeep::operate::list(&c, &at.namespace)
            .await
            .map_err(|e| e.to_string())
    });
    match rows {
        Ok(rows) => {
            match at.output {
                Output::Json => println!(
                    "{}",
                    serde_json::to_string_pretty(&rows).unwrap_or_default()
                ),
                Output::Text if rows.is_empty() => {
                    println!("no rollouts in {}", at.namespace)
                }
                Output::Text => print!("{}", upkeep::operate::table(&rows)),
            }
            let failed = rows
                .iter()
                .any(|r| upkeep::operate::is_failure(r.phase) && r.acknowledged.is_none());
            i32::from(failed)
        }
        Err(e) => {
            eprintln!("upkeep: {e}");
            1
        }
    }
}

/// Who runs a command: `--by`, else $USER.
fn who(by: Option<String>) -> String {
    by.or_else(|| std::env::var("USER").ok())
        .filter(|w| !w.trim().is_empty())
        .unwrap_or_else(|| "someone".into())
}

/// `upkeep doctor`.
fn doctor(
    at: &ClusterArgs,
    namespaces: &NamespaceArgs,
    repo: Option<(String, String)>,
    net: &NetArgs,
) -> i32 {
    let cfg = match net.config() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("upkeep: {e}");
            return 2;
        }
    };
    let rt = match runtime() {
        Ok(rt) => rt,
        Err(code) => return code,
    };
    let _guard = rt.enter();
    let forge = match repo {
        Some((o, n)) => match upkeep::forge::GitHub::new(
            &cfg.github_api_url,
            &format!("{o}/{n}"),
            cfg.github_token.as_ref().map(|t| t.expose()),
        ) {
            Ok(f) => Some(f.with_net(&cfg)),
            Err(e) => {
                eprintln!("upkeep: {e}");
                return 2;
            }
        },
        None => None,
    };
    let checks = rt.block_on(async {
        let client = upkeep::cluster::client(at.kubeconfig.as_deref()).await;
        let facts = upkeep::operate::facts(
            client.as_ref().ok(),
            &namespaces.namespaces(),
            forge
                .as_ref()
                .map(|f| move || async move { f.may_push().await.map_err(|e| e.to_string()) }),
        )
        .await;
        let mut checks = upkeep::operate::judge(&facts);
        if let Err(e) = client {
            checks.insert(
                0,
                upkeep::operate::Check {
                    check: "kubeconfig",
                    verdict: upkeep::operate::Verdict::Fail,
                    detail: e.to_string(),
                },
            );
        }
        checks
    });
    let failed = checks
        .iter()
        .any(|c| c.verdict == upkeep::operate::Verdict::Fail);
    match at.output {
        Output::Json => println!(
            "{}",
            serde_json::to_string_pretty(&checks).unwrap_or_default()
        ),
        Output::Text => {
            for c in &checks {
                let mark = match c.verdict {
                    upkeep::operate::Verdict::Ok => "✔",
                    upkeep::operate::Verdict::Warn => "!",
                    upkeep::operate::Verdict::Fail => "✗",
                };
                println!("{mark} {}: {}", c.check, c.detail);
            }
        }
    }
    i32::from(failed)
}

/// `upkeep reconcile`.
fn reconcile_now(wait: u64, at: &ClusterArgs) -> i32 {
    let done: Result<bool, String> = on_cluster(at, |client| async move {
        let value = upkeep::operate::request_reconcile(&client, &at.namespace, Utc::now())
            .await
            .map_err(|e| e.to_string())?;
        eprintln!("► asked the controller for a reconcile");
        if wait == 0 {
            return Ok(true);
        }
        let deadline = std::time::Instant::now() + Duration::from_secs(wait);
        loop {
            let handled = upkeep::operate::handled(&client, &at.namespace)
                .await
                .map_err(|e| e.to_string())?;
            if handled.is_some_and(|h| h >= value) {
                return Ok(true);
            }
            if std::time::Instant::now() >= deadline {
                return Ok(false);
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    });
    match done {
        Ok(true) if wait > 0 => {
            println!("✔ reconciled");
            0
        }
        Ok(true) => 0,
        Ok(false) => {
            eprintln!(
                "upkeep: the controller did not reconcile within {wait} s (hint: is it running and leading? `kubectl -n {} get pods,leases`)",
                at.namespace
            );
            1
        }
        Err(e) => {
            eprintln!("upkeep: {e}");
            1
        }
    }
}

/// `upkeep retry`.
fn retry(rollout: &str, at: &ClusterArgs) -> i32 {
    let done = on_cluster(at, |c| async move {
        upkeep::operate::retry(&c, &at.namespace, rollout)
            .await
            .map_err(|e| e.to_string())
    });
    match done {
        Ok(r) => {
            println!(
                "rollout {} ({:?}) removed: the next reconcile (or `upkeep apply`) makes a new attempt of {} {}, unless the cluster runs it already (close a revert pull request first, or merging it undoes the retry)",
                r.name, r.phase, r.component, r.to
            );
            0
        }
        Err(e) => {
            eprintln!("upkeep: {e}");
            1
        }
    }
}

/// `upkeep suspend`.
fn suspend(component: Option<&str>, reason: &str, by: Option<String>, at: &ClusterArgs) -> i32 {
    let who = who(by);
    let by = who.as_str();
    let done = on_cluster(at, |c| async move {
        upkeep::operate::suspend(&c, &at.namespace, component, by, reason, Utc::now())
            .await
            .map_err(|e| e.to_string())
    });
    match done {
        Ok(record) => {
            println!("suspended {}: {record}", component.unwrap_or("everything"));
            0
        }
        Err(e) => {
            eprintln!("upkeep: {e}");
            1
        }
    }
}

/// `upkeep resume`.
fn resume(component: Option<&str>, at: &ClusterArgs) -> i32 {
    let done = on_cluster(at, |c| async move {
        upkeep::operate::resume(&c, &at.namespace, component)
            .await
            .map_err(|e| e.to_string())
    });
    let what = component.unwrap_or("everything");
    match done {
        Ok(true) => {
            println!("resumed {what}");
            0
        }
        Ok(false) => {
            println!("{what} was not suspended");
            0
        }
        Err(e) => {
            eprintln!("upkeep: {e}");
            1
        }
    }
}

/// `upkeep acknowledge`.
fn acknowledge(rollout: &str, by: Option<String>, at: &ClusterArgs) -> i32 {
    let who = who(by);
    let by = who.as_str();
    let row = on_cluster(at, |c| async move {
        upkeep::operate::acknowledge(&c, &at.namespace, rollout, by, Utc::now())
            .await
            .map_err(|e| e.to_string())
    });
    match row {
        Ok(r) => {
            match at.output {
                Output::Json => {
                    println!("{}", serde_json::to_string_pretty(&r).unwrap_or_default())
                }
                Output::Text => println!(
                    "rollout {} ({:?}) acknowledged by {}",
                    r.name,
                    r.phase,
                    r.acknowledged.as_deref().unwrap_or(&who)
                ),
            }
            0
        }
        Err(e) => {
            eprintln!("upkeep: {e}");
            1
        }
    }
}

fn runtime() -> Result<tokio::runtime::Runtime, i32> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| {
            eprintln!("upkeep: cannot start the async runtime: {e}");
            1
        })
}

struct CheckArgs {
    repo: PathBuf,
    output: ReportFormat,
    offline: bool,
    catalog: Option<PathBuf>,
    catalog_public_key: Option<String>,
    now: DateTime<Utc>,
    net: NetArgs,
}

/// The check report of `repo` and when each release it read was published: from the catalog
/// (`--offline`, `--catalog`) or the live sources.
fn releases_report(
    repo: &ConfigRepo,
    cat: &CatalogArgs,
    net: &NetArgs,
    now: DateTime<Utc>,
) -> Result<(report::CheckReport, upkeep::check::Published), (i32, String)> {
    let rt = runtime().map_err(|c| (c, "cannot start the async runtime".to_string()))?;
    if cat.offline || cat.catalog.is_some() {
        let key = cat
            .catalog_public_key
            .clone()
            .or_else(|| repo.catalog_public_key.clone());
        let c = match &cat.catalog {
            Some(path) => Catalog::load(path, key.as_deref()),
            None => Catalog::builtin(),
        }
        .map_err(|e| (1, e.to_string()))?;
        let origin = format!("catalog:{}", c.origin);
        return Ok(rt.block_on(upkeep::check::run_with_dates(
            Arc::new(c),
            repo,
            now,
            16,
            &origin,
        )));
    }
    let cfg = net.config().map_err(|e| (2, e))?;
    // octocrab's client needs the runtime at construction.
    let _guard = rt.enter();
    let live = Arc::new(sources::Live::new(&cfg).map_err(|e| (2, e.to_string()))?);
    let out = rt.block_on(upkeep::check::run_with_dates(
        live.clone(),
        repo,
        now,
        cfg.concurrency,
        "live",
    ));
    let s = live.stats.snapshot();
    tracing::info!(
        requests = s.requests,
        not_modified = s.not_modified,
        bytes = s.bytes,
        "upstream requests"
    );
    Ok(out)
}

fn check(a: CheckArgs) -> i32 {
    let repo = match load_valid(&a.repo, a.now) {
        Ok(r) => r,
        Err(code) => return code,
    };
    let cat = CatalogArgs {
        offline: a.offline,
        catalog: a.catalog.clone(),
        catalog_public_key: a.catalog_public_key.clone(),
    };
    let report = match releases_report(&repo, &cat, &a.net, a.now) {
        Ok((r, _)) => r,
        Err((code, e)) => {
            eprintln!("upkeep: {e}");
            return code;
        }
    };
    let mut out = std::io::stdout().lock();
    let text = match a.output {
        ReportFormat::Json => report.to_json(),
        ReportFormat::Markdown => report::markdown(&report),
        ReportFormat::Table => {
            let color = std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none();
            report::table(&report, color)
        }
    };
    let _ = out.write_all(text.as_bytes());
    report.exit_code()
}

fn plan(a: &PlanArgs) -> i32 {
    let now = a.now.unwrap_or_else(Utc::now);
    let repo = match load_valid(&a.repo, now) {
        Ok(r) => r,
        Err(code) => return code,
    };
    let rt = match runtime() {
        Ok(rt) => rt,
        Err(code) => return code,
    };
    let observed = match rt.block_on(async {
        let c = upkeep::cluster::client(a.kubeconfig.as_deref()).await?;
        upkeep::cluster::observe(&c, &a.namespaces.namespaces()).await
    }) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("upkeep: {e}");
            return 1;
        }
    };
    // Multi-hop paths go through the releases in between, from the shipped catalog offline.
    let cat = if a.offline {
        Catalog::builtin().ok()
    } else {
        None
    };
    let releases = |c: &upkeep::model::Component| -> Vec<upkeep::versions::Version> {
        cat.as_ref()
            .and_then(|cat| {
                rt.block_on(upkeep::sources::Upstream::fetch(
                    cat,
                    c,
                    &Default::default(),
                ))
                .ok()
            })
            .map(|f| {
                f.releases_as(c.scheme)
                    .0
                    .into_iter()
                    .map(|r| r.version)
                    .collect()
            })
            .unwrap_or_default()
    };
    // Where git carries each version, as apply will read it (a version Flux applies from git is
    // changed there in the window, not fought over in the cluster).
    let (root, subdir) = repository_root(&a.repo, a.root.as_deref());
    let reading = upkeep::layout::Reading::of_dir(&root, &subdir);
    let rows = upkeep::plan::rows(&repo, &observed, Some(&reading), &releases, now);
    let mut out = std::io::stdout().lock();
    let _ = match a.output {
        Output::Json => writeln!(
            out,
            "{}",
            serde_json::to_string_pretty(&rows).unwrap_or_default()
        ),
        Output::Text => write!(out, "{}", upkeep::plan::text(&rows, &repo, now)),
    };
    upkeep::plan::exit_code(&rows)
}

fn parse_author(s: &str) -> Option<upkeep::gitrepo::Author> {
    match s.rsplit_once('<') {
        Some((name, email)) if email.ends_with('>') && !name.trim().is_empty() => {
            Some(upkeep::gitrepo::Author {
                name: name.trim().to_string(),
                email: email.trim_end_matches('>').trim().to_string(),
            })
        }
        _ => None,
    }
}

fn repo_url(url: &Option<String>, path: &Option<PathBuf>) -> Result<String, String> {
    match (url, path) {
        (Some(u), _) => Ok(u.clone()),
        (None, Some(p)) => std::fs::canonicalize(p)
            .map(|p| format!("file://{}", p.display()))
            .map_err(|e| format!("--repo {}: {e}", p.display())),
        (None, None) => {
            Err("say where the config repository is: --repo-url URL or --repo PATH".into())
        }
    }
}

/// What `propose` and `apply` share: the repository's URL, the commit author, the network
/// settings with the token, and the git mirror in the state directory (`slug` names it).
struct GitSetup {
    author: upkeep::gitrepo::Author,
    cfg: NetConfig,
    token: Option<String>,
    state: PathBuf,
    git: upkeep::gitrepo::GitRepo,
}

impl RepoArgs {
    fn git_setup(&self, net: &NetArgs) -> Result<GitSetup, i32> {
        git_setup(
            &self.repo_url,
            &self.repo,
            &self.git_author,
            net,
            self.state_dir.as_deref(),
            &format!("{}-{}", self.owner, self.name),
            self.ssh_key.as_deref(),
        )
    }

    /// The GitHub forge of this repository (exit code 2 on a bad URL).
    fn github(&self, cfg: &NetConfig, token: Option<&str>) -> Result<upkeep::forge::GitHub, i32> {
        upkeep::forge::GitHub::new(
            &cfg.github_api_url,
            &format!("{}/{}", self.owner, self.name),
            token,
        )
        .map(|f| f.with_net(cfg))
        .map_err(|e| {
            eprintln!("upkeep: {e}");
            2
        })
    }
}

fn git_setup(
    url: &Option<String>,
    path: &Option<PathBuf>,
    author: &str,
    net: &NetArgs,
    state_dir_arg: Option<&Path>,
    slug: &str,
    ssh_key: Option<&Path>,
) -> Result<GitSetup, i32> {
    let url = repo_url(url, path).map_err(|e| {
        eprintln!("upkeep: {e}");
        2
    })?;
    let Some(author) = parse_author(author) else {
        eprintln!("upkeep: --git-author {author:?} is not `Name <email>`");
        return Err(2);
    };
    let cfg = net.config().map_err(|e| {
        eprintln!("upkeep: {e}");
        2
    })?;
    let token = cfg.github_token.as_ref().map(|t| t.expose().to_string());
    let state = state_dir(state_dir_arg).join(slug);
    let mut git = upkeep::gitrepo::GitRepo::open(&state.join("mirror.git"), &url, token.clone())
        .map_err(|e| {
            eprintln!("upkeep: {e}");
            1
        })?;
    git.ssh_key = ssh_key.map(Path::to_path_buf);
    Ok(GitSetup {
        author,
        cfg,
        token,
        state,
        git,
    })
}

fn apply(a: &ApplyArgs) -> i32 {
    let slug = match (&a.owner, &a.name) {
        (Some(o), Some(n)) => format!("{o}-{n}"),
        _ => "local".into(),
    };
    let GitSetup {
        author,
        cfg,
        token,
        state,
        git,
    } = match git_setup(
        &a.repo_url,
        &a.repo,
        &a.git_author,
        &a.net,
        a.state_dir.as_deref(),
        &slug,
        a.ssh_key.as_deref(),
    ) {
        Ok(g) => g,
        Err(code) => return code,
    };
    let now = Utc::now();
    let config = match git
        .fetch()
        .and_then(|()| git.tip(&a.base))
        .and_then(|tip| git.extract(tip, &a.subdir, &state.join("checkout")))
    {
        Ok(()) => match load_valid(&state.join("checkout"), now) {
            Ok(r) => r,
            Err(code) => return code,
        },
        Err(e) => {
            eprintln!("upkeep: {e}");
            return 1;
        }
    };
    let releases = offline_releases(&config);
    let rt = match runtime() {
        Ok(rt) => rt,
        Err(code) => return code,
    };
    let _guard = rt.enter();
    let forge = match (&a.owner, &a.name) {
        (Some(o), Some(n)) => match upkeep::forge::GitHub::new(
            &cfg.github_api_url,
            &format!("{o}/{n}"),
            token.as_deref(),
        ) {
            Ok(f) => Some(f.with_net(&cfg)),
            Err(e) => {
                eprintln!("upkeep: {e}");
                return 2;
            }
        },
        _ => None,
    };
    let repo = upkeep::apply::Repo {
        git: &git,
        forge: forge.as_ref(),
        base: a.base.clone(),
        subdir: a.subdir.clone(),
        author,
    };
    let mut opts = upkeep::apply::Options::from_policy(&config.rollouts, &a.namespace);
    opts.only = a.component.clone();
    opts.namespaces = a.namespaces.namespaces();
    opts.emergency = a.emergency;
    opts.budget = Duration::from_secs(a.wait);
    opts.backup &= !a.no_backup;
    opts.releases = releases;
    if let Some(c) = a.agent_concurrency {
        opts.agent_concurrency = c.max(1);
    }
    if let Some(m) = a.hop_timeout {
        opts.timeout = chrono::Duration::minutes(m.max(1));
    }
    let result = rt.block_on(async {
        let client = upkeep::cluster::client(a.kubeconfig.as_deref())
            .await
            .map_err(|e| e.to_string())?;
        upkeep::apply::run_detailed(&client, &repo, &config, &opts, &Utc::now).await
    });
    match result {
        Ok(applied) => {
            let summary: Vec<_> = applied
                .rollouts
                .into_iter()
                .map(|(name, st)| (name, st.phase, st.message))
                .collect();
            let mut out = std::io::stdout().lock();
            let bad = summary.iter().any(|(_, phase, _)| {
                matches!(
                    phase,
                    upkeep::rollout::Phase::RequiresAttention
                        | upkeep::rollout::Phase::Reverted
                        | upkeep::rollout::Phase::Failed
                )
            });
            if a.output == Output::Json {
                let rollouts: Vec<_> = summary
                    .iter()
                    .map(|(name, phase, message)| {
                        let note = a
                            .emergency
                            .then(|| upkeep::apply::emergency_note(*phase, message))
                            .flatten();
                        serde_json::json!({"name": name, "phase": phase, "message": message, "emergencyNote": note})
                    })
                    .collect();
                let v = serde_json::json!({"rollouts": rollouts, "notApplied": applied.blocked});
                let _ = writeln!(
                    out,
                    "{}",
                    serde_json::to_string_pretty(&v).unwrap_or_default()
                );
                return i32::from(bad);
            }
            for (component, why) in &applied.blocked {
                let _ = writeln!(out, "{component}: not applied: {why}");
            }
            if summary.is_empty() && applied.blocked.is_empty() {
                let _ = writeln!(
                    out,
                    "nothing to apply: the cluster runs what versions.yaml asks"
                );
            }
            let mut bad = false;
            for (name, phase, message) in &summary {
                let _ = writeln!(out, "{name}: {phase:?}: {message}");
                if let Some(note) = a
                    .emergency
                    .then(|| upkeep::apply::emergency_note(*phase, message))
                    .flatten()
                {
                    let _ = writeln!(out, "  {note}");
                }
                bad |= matches!(
                    phase,
                    upkeep::rollout::Phase::RequiresAttention
                        | upkeep::rollout::Phase::Reverted
                        | upkeep::rollout::Phase::Failed
                );
            }
            i32::from(bad)
        }
        Err(e) => {
            eprintln!("upkeep: {e}");
            1
        }
    }
}

fn run_controller(a: &RunArgs) -> i32 {
    let GitSetup {
        author,
        cfg,
        token,
        state,
        git,
    } = match a.at.git_setup(&a.net) {
        Ok(g) => g,
        Err(code) => return code,
    };
    let secret = match a.webhook_secret() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("upkeep: {e}");
            return 2;
        }
    };
    let rt = match runtime() {
        Ok(rt) => rt,
        Err(code) => return code,
    };
    let _guard = rt.enter();
    let forge = match a.at.github(&cfg, token.as_deref()) {
        Ok(f) => f,
        Err(code) => return code,
    };
    // The live sources need the runtime (octocrab builds its client on it).
    let sources = match a.releases.catalog() {
        Some(cat) => cat.map(|c| upkeep::reconcile::Sources::Catalog(Arc::new(c))),
        None => sources::Live::new(&cfg)
            .map(|l| upkeep::reconcile::Sources::Live(Arc::new(l)))
            .map_err(|e| e.to_string()),
    };
    let sources = match sources {
        Ok(s) => s,
        Err(e) => {
            eprintln!("upkeep: {e}");
            return 1;
        }
    };
    let config = upkeep::reconcile::Config {
        git,
        forge,
        base: a.at.base.clone(),
        subdir: a.at.subdir.clone(),
        state,
        kubeconfig: a.kubeconfig.clone(),
        namespace: a.namespace.clone(),
        namespaces: a.namespaces.namespaces(),
        author,
        style: upkeep::propose::Style::default(),
        poll: Duration::from_secs(a.poll.max(1)),
        detect_every: Duration::from_secs(a.detect_every.max(1)),
        sources,
    };
    let serve = upkeep::reconcile::Serve {
        listen: a.listen,
        limits: upkeep::server::Limits::default(),
        webhook: secret.map(|secret| upkeep::reconcile::WebhookConfig {
            secret,
            base: a.at.base.clone(),
        }),
        lease: (!a.no_leader_election).then(|| upkeep::leader::Settings {
            namespace: a.namespace.clone(),
            name: a.lease_name.clone(),
            identity: upkeep::leader::Settings::default_identity(),
            duration: Duration::from_secs(a.lease_duration.max(1)),
        }),
        watch_repo: a.at.repo.clone(),
    };
    match rt.block_on(upkeep::reconcile::serve(config, serve, wait_for_signal())) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("upkeep: {e}");
            1
        }
    }
}

/// Every component's releases from the shipped catalog, for multi-hop paths.
fn offline_releases(
    config: &ConfigRepo,
) -> std::collections::HashMap<String, Vec<upkeep::versions::Version>> {
    let Ok(cat) = Catalog::builtin() else {
        return Default::default();
    };
    let rt = match tokio::runtime::Builder::new_current_thread().build() {
        Ok(rt) => rt,
        Err(_) => return Default::default(),
    };
    config
        .components
        .iter()
        .filter_map(|c| {
            let f = rt
                .block_on(upkeep::sources::Upstream::fetch(
                    &cat,
                    c,
                    &Default::default(),
                ))
                .ok()?;
            Some((
                c.name.clone(),
                f.releases_as(c.scheme)
                    .0
                    .into_iter()
                    .map(|r| r.version)
                    .collect(),
            ))
        })
        .collect()
}

fn state_dir(explicit: Option<&Path>) -> PathBuf {
    explicit.map(Path::to_path_buf).unwrap_or_else(|| {
        std::env::var_os("XDG_STATE_HOME")
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/state")))
            .unwrap_or_else(std::env::temp_dir)
            .join("upkeep")
    })
}

fn propose(a: &ProposeArgs) -> i32 {
    use upkeep::propose::{Action, Cycle};
    let now = a.now.unwrap_or_else(Utc::now);
    let GitSetup {
        author,
        cfg,
        token,
        state,
        git,
    } = match a.at.git_setup(&a.net) {
        Ok(g) => g,
        Err(code) => return code,
    };
    let rt = match runtime() {
        Ok(rt) => rt,
        Err(code) => return code,
    };
    let _guard = rt.enter();
    let forge = match a.at.github(&cfg, token.as_deref()) {
        Ok(f) => f,
        Err(code) => return code,
    };
    let cycle = Cycle {
        git: &git,
        forge: &forge,
        base: a.at.base.clone(),
        subdir: a.at.subdir.clone(),
        scratch: state.join("checkout"),
        style: upkeep::propose::Style {
            commit_prefix: a.commit_prefix.clone(),
            labels: a.labels.clone(),
        },
        author,
        dashboard: !a.no_dashboard,
        dry_run: a.dry_run,
        running: None,
        rollouts: Vec::new(),
    };
    let result = rt.block_on(async {
        if let Some(cat) = a.releases.catalog() {
            let cat = Arc::new(cat?);
            let origin = format!("catalog:{}", cat.origin);
            cycle
                .run(now, |repo| async move {
                    let report = upkeep::check::run(cat, &repo, now, 16, &origin).await;
                    (repo, report.components)
                })
                .await
        } else {
            let live = Arc::new(sources::Live::new(&cfg).map_err(|e| e.to_string())?);
            let concurrency = cfg.concurrency;
            cycle
                .run(now, |repo| async move {
                    let report = upkeep::check::run(live, &repo, now, concurrency, "live").await;
                    (repo, report.components)
                })
                .await
        }
    });
    let (outcome, actions) = match result {
        Ok(x) => x,
        Err(e) => {
            eprintln!("upkeep: {e}");
            return 1;
        }
    };
    let mut out = std::io::stdout().lock();
    if a.output == Output::Json {
        let v = if a.dry_run {
            serde_json::json!({ "dryRun": true, "actions": actions })
        } else {
            serde_json::json!({ "dryRun": false, "outcome": outcome, "actions": actions })
        };
        let _ = writeln!(
            out,
            "{}",
            serde_json::to_string_pretty(&v).unwrap_or_default()
        );
        for e in &outcome.errors {
            eprintln!("upkeep: {e}");
        }
        return i32::from(!a.dry_run && (outcome.invalid || !outcome.errors.is_empty()));
    }
    if a.dry_run {
        for act in &actions {
            let (what, p) = match act {
                Action::Open(p) => ("open".to_string(), p),
                Action::Refresh {
                    number,
                    branch,
                    proposal,
                } => (format!("update #{number} (branch {branch})"), proposal),
                Action::Supersede { old, proposal } => {
                    (format!("open, and close #{old} as superseded"), proposal)
                }
                Action::Wait { proposal, why } => (format!("wait: {why}"), proposal),
                Action::Skip { proposal, why } => (format!("skip: {why}"), proposal),
            };
            let _ = writeln!(
                out,
                "# {what}
branch: {}
title:  {}
commit: {}
labels: {}

{}
",
                p.branch,
                p.title,
                p.commit_message,
                p.labels.join(", "),
                p.body
            );
        }
        if actions.is_empty() {
            let _ = writeln!(out, "nothing to propose");
        }
        return 0;
    }
    for n in &outcome.opened {
        let _ = writeln!(out, "opened #{n}");
    }
    for n in &outcome.updated {
        let _ = writeln!(out, "updated #{n}");
    }
    for n in &outcome.closed {
        let _ = writeln!(out, "closed #{n} (superseded)");
    }
    for w in outcome.waiting.iter().chain(&outcome.skipped) {
        let _ = writeln!(out, "{w}");
    }
    if let Some(d) = outcome.dashboard {
        let _ = writeln!(out, "dashboard: #{d}");
    }
    for e in &outcome.errors {
        eprintln!("upkeep: {e}");
    }
    let c = &forge.counters;
    tracing::info!(
        requests = c.requests.load(std::sync::atomic::Ordering::Relaxed),
        writes = c.writes.load(std::sync::atomic::Ordering::Relaxed),
        "forge requests"
    );
    if outcome.invalid || !outcome.errors.is_empty() {
        1
    } else {
        0
    }
}

fn catalog_export(repo_dir: &Path, out: &Path, net: &NetArgs) -> i32 {
    let now = Utc::now();
    let repo = match load_valid(repo_dir, now) {
        Ok(r) => r,
        Err(code) => return code,
    };
    let cfg = match net.config() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("upkeep: {e}");
            return 2;
        }
    };
    let rt = match runtime() {
        Ok(rt) => rt,
        Err(code) => return code,
    };
    let _guard = rt.enter();
    let live = match sources::Live::new(&cfg) {
        Ok(l) => Arc::new(l),
        Err(e) => {
            eprintln!("upkeep: {e}");
            return 2;
        }
    };
    let file = rt.block_on(sources::catalog::export(live, &repo, now, cfg.concurrency));
    let file = match file {
        Ok(f) => f,
        Err(errors) => {
            for e in &errors {
                eprintln!("upkeep: {e}");
            }
            eprintln!(
                "upkeep: no catalog written: {} could not be read",
                count(errors.len(), "component")
            );
            return 1;
        }
    };
    if let Err(e) = write_atomic(out, file.to_json().as_bytes()) {
        eprintln!("upkeep: cannot write {}: {e}", out.display());
        return 1;
    }
    let releases: usize = file.components.values().map(|c| c.releases.len()).sum();
    println!(
        "wrote {} ({}, {})\nsign it: minisign -S -m {}",
        out.display(),
        count(file.components.len(), "component"),
        count(releases, "release"),
        out.display()
    );
    0
}

fn catalog_verify(path: Option<&Path>, key: Option<&str>) -> i32 {
    let cat = match path {
        Some(p) => Catalog::load(p, key),
        None => Catalog::builtin(),
    };
    match cat {
        Ok(c) => {
            println!(
                "{}: signature OK; generated {}",
                c.origin,
                c.file.generated_at.format("%Y-%m-%d %H:%M UTC")
            );
            for (name, comp) in &c.file.components {
                println!(
                    "  {name}: {} from {}",
                    count(comp.releases.len(), "release"),
                    comp.source
                );
            }
            0
        }
        Err(e) => {
            eprintln!("upkeep: {e}");
            1
        }
    }
}

/// Write through a temporary file and a rename, so a failure never leaves half a file.
fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.tmp{}", std::process::id()));
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(&tmp, path).inspect_err(|_| {
        let _ = std::fs::remove_file(&tmp);
    })
}

fn sim_serve(args: &SimServeArgs) -> i32 {
    let p = upkeep_sim::playground::Playground {
        port: args.port,
        kube_port: args.kube_port,
        servers: args.servers,
        agents: args.agents,
        k3s_version: args.k3s_version.clone(),
        faults: args.faults.clone(),
        kubeconfig_out: args.kubeconfig_out.clone(),
        state_dir: args.state_dir.clone(),
        speed: args.speed,
        config_repo: args.config_repo.clone(),
        config_subdir: args.subdir.clone(),
        webhook_url: args.webhook_url.clone(),
        webhook_secret: std::env::var("UPKEEP_WEBHOOK_SECRET").unwrap_or_default(),
    };
    let rt = match runtime() {
        Ok(rt) => rt,
        Err(code) => return code,
    };
    match rt.block_on(upkeep_sim::playground::serve(&p, wait_for_signal())) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("upkeep: {e}");
            e.code()
        }
    }
}

/// SIGINT or SIGTERM.
async fn wait_for_signal() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term => {}
    }
}

#[cfg(test)]
mod cli_tests {
    /// clap's own consistency checks (unique names, valid conflicts) over every subcommand.
    #[test]
    fn the_cli_is_consistent() {
        use clap::CommandFactory;
        super::Cli::command().debug_assert();
    }

    /// Every subcommand and every flag says what it is for in `--help`.
    #[test]
    fn every_command_and_flag_is_described() {
        use clap::CommandFactory;
        fn walk(c: &clap::Command, path: &str, missing: &mut Vec<String>) {
            for a in c.get_arguments() {
                let id = a.get_id().as_str();
                if matches!(id, "help" | "version") {
                    continue;
                }
                if a.get_help().is_none() && a.get_long_help().is_none() {
                    missing.push(format!("{path} --{id}"));
                }
            }
            for sub in c.get_subcommands() {
                let p = format!("{path} {}", sub.get_name());
                if sub.get_about().is_none() && sub.get_long_about().is_none() {
                    missing.push(p.clone());
                }
                walk(sub, &p, missing);
            }
        }
        let mut missing = Vec::new();
        walk(&super::Cli::command(), "upkeep", &mut missing);
        assert!(missing.is_empty(), "no help text: {missing:#?}");
    }

    #[test]
    fn completions_for_bash_zsh_and_fish_know_every_command() {
        use clap::CommandFactory;
        for (shell, marker) in [
            (clap_complete::Shell::Bash, "complete -F"),
            (clap_complete::Shell::Zsh, "#compdef upkeep"),
            (clap_complete::Shell::Fish, "complete -c upkeep"),
        ] {
            let mut out = Vec::new();
            clap_complete::generate(shell, &mut super::Cli::command(), "upkeep", &mut out);
            let text = String::from_utf8_lossy(&out);
            assert!(text.contains(marker), "{shell}: {text}");
            for cmd in ["acknowledge", "propose", "apply", "completions"] {
                assert!(text.contains(cmd), "{shell} lacks {cmd}");
            }
        }
    }

    #[test]
    fn only_the_run_subcommand_reads_a_config_file() {
        let v = |a: &[&str]| a.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(super::subcommand_at(&v(&["upkeep", "run"])), Some(1));
        assert_eq!(
            super::subcommand_at(&v(&["upkeep", "--log-format", "json", "run"])),
            Some(3)
        );
        assert_eq!(
            super::subcommand_at(&v(&[
                "upkeep",
                "--log-format=json",
                "propose",
                "--name",
                "run"
            ])),
            Some(2)
        );
        // `run` as another command's value is not the run subcommand: nothing is spliced.
        let argv = v(&[
            "upkeep",
            "propose",
            "--name",
            "run",
            "--config",
            "/nonexistent",
        ]);
        assert_eq!(super::with_config_file(argv.clone()).ok(), Some(argv));
    }

    /// Every command that pushes to the config repository takes an SSH key.
    #[test]
    fn every_pushing_command_takes_an_ssh_key() {
        use clap::Parser;
        let repo = [
            "--repo-url",
            "ssh://git@example.invalid/o/n",
            "--ssh-key",
            "/k",
        ];
        let at = ["--owner", "o", "--name", "n"];
        for cmd in [&["run"][..], &["propose"][..], &["apply"][..]] {
            let args: Vec<&str> = ["upkeep"]
                .iter()
                .chain(cmd)
                .chain(&repo)
                .chain(&at)
                .copied()
                .collect();
            let key = match super::Cli::try_parse_from(&args).map(|c| c.command) {
                Ok(super::Command::Run(a)) => a.at.ssh_key,
                Ok(super::Command::Propose(a)) => a.at.ssh_key,
                Ok(super::Command::Apply(a)) => a.ssh_key,
                other => panic!("{args:?}: {other:?}"),
            };
            assert_eq!(key.as_deref(), Some(std::path::Path::new("/k")), "{cmd:?}");
        }
    }
}
