//! `upkeep run --config FILE`: the controller's settings from a YAML file (a ConfigMap in a
//! cluster). Every key is a flag of `upkeep run` in camelCase; the file is checked like the config
//! repo (unknown keys, wrong types, YAML bombs and oversized files are errors with
//! file:line:column). Precedence, highest first: a flag on the command line, its environment
//! variable, the file, the default. Secrets never go in the file: it may name files holding them
//! (`githubTokenFile`, `webhookSecretFile`), and `GITHUB_TOKEN` / `UPKEEP_WEBHOOK_SECRET` override
//! those.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::diag::{Diagnostic, Pos};

pub const API_VERSION: &str = "upkeep.dev/v1alpha1";
pub const KIND: &str = "ControllerConfig";
/// The file is a handful of lines; anything bigger is a mistake.
pub const MAX_BYTES: u64 = 64 * 1024;

/// The file's content. Keys mirror `upkeep run`'s flags (docs/install.md lists them).
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ControllerFile {
    pub api_version: String,
    pub kind: String,
    pub repo_url: Option<String>,
    pub repo: Option<PathBuf>,
    pub owner: Option<String>,
    pub name: Option<String>,
    pub base: Option<String>,
    pub subdir: Option<String>,
    pub state_dir: Option<PathBuf>,
    pub git_author: Option<String>,
    pub ssh_key: Option<PathBuf>,
    pub kubeconfig: Option<PathBuf>,
    pub namespace: Option<String>,
    pub suc_namespace: Option<String>,
    pub snapshot_namespace: Option<String>,
    pub longhorn_namespace: Option<String>,
    pub listen: Option<String>,
    pub poll: Option<u64>,
    pub detect_every: Option<u64>,
    pub offline: Option<bool>,
    pub webhook_secret_file: Option<PathBuf>,
    pub leader_election: Option<bool>,
    pub lease_name: Option<String>,
    pub lease_duration: Option<u64>,
    pub github_api_url: Option<String>,
    pub github_token_file: Option<PathBuf>,
    pub k3s_channel_url: Option<String>,
    pub cache_dir: Option<PathBuf>,
    pub timeout: Option<u64>,
    pub max_rate_limit_wait: Option<u64>,
    pub concurrency: Option<usize>,
    // Refused with a hint: secrets do not belong in a ConfigMap.
    github_token: Option<serde::de::IgnoredAny>,
    webhook_secret: Option<serde::de::IgnoredAny>,
}

/// Reads and checks the file.
pub fn load(path: &Path) -> Result<ControllerFile, Diagnostic> {
    let name = path.display().to_string();
    let err = |m: String| Diagnostic::error(&name, Pos::START, m);
    let meta = std::fs::metadata(path).map_err(|e| err(format!("cannot read: {e}")))?;
    if meta.len() > MAX_BYTES {
        return Err(err(format!(
            "the file is {} bytes, more than the {} KiB upkeep reads",
            meta.len(),
            MAX_BYTES / 1024
        ))
        .hint("the controller's settings are a few lines; is this the right file?"));
    }
    let bytes = std::fs::read(path).map_err(|e| err(format!("cannot read: {e}")))?;
    let text = String::from_utf8(bytes)
        .map_err(|_| err("the file is not UTF-8".into()).hint("save it as UTF-8"))?;
    parse(&name, &text)
}

/// Parses and checks `text` (named `name` in diagnostics).
pub fn parse(name: &str, text: &str) -> Result<ControllerFile, Diagnostic> {
    let f: ControllerFile = crate::model::load::parse_yaml(name, text)?;
    let at_key = |key: &str| {
        text.lines()
            .enumerate()
            .find(|(_, l)| l.trim_start().starts_with(&format!("{key}:")))
            .map(|(i, l)| Pos {
                line: i as u64 + 1,
                column: (l.len() - l.trim_start().len()) as u64 + 1,
            })
            .unwrap_or(Pos::START)
    };
    if f.api_version != API_VERSION {
        return Err(Diagnostic::error(
            name,
            at_key("apiVersion"),
            format!("apiVersion is `{}`", f.api_version),
        )
        .hint(format!("use `apiVersion: {API_VERSION}`")));
    }
    if f.kind != KIND {
        return Err(
            Diagnostic::error(name, at_key("kind"), format!("kind is `{}`", f.kind))
                .hint(format!("use `kind: {KIND}`")),
        );
    }
    for (key, file_key, var) in [
        ("githubToken", "githubTokenFile", "GITHUB_TOKEN"),
        (
            "webhookSecret",
            "webhookSecretFile",
            "UPKEEP_WEBHOOK_SECRET",
        ),
    ] {
        let given = match key {
            "githubToken" => f.github_token.is_some(),
            _ => f.webhook_secret.is_some(),
        };
        if given {
            return Err(Diagnostic::error(
                name,
                at_key(key),
                format!("`{key}` holds a secret, and secrets do not belong in this file"),
            )
            .hint(format!(
                "mount a Secret and name its file with `{file_key}`, or set {var}"
            )));
        }
    }
    Ok(f)
}

impl ControllerFile {
    /// The file as `upkeep run` arguments, leaving out what the environment sets (`env_set`
    /// says whether a variable is set), since the environment overrides the file.
    pub fn to_args(&self, env_set: &dyn Fn(&str) -> bool) -> Vec<String> {
        let mut out = Vec::new();
        let mut opt = |flag: &str, env: Option<&str>, v: Option<String>| {
            if let Some(v) = v
                && !env.is_some_and(env_set)
            {
                out.push(format!("--{flag}"));
                out.push(v);
            }
        };
        let p = |p: &Option<PathBuf>| p.as_ref().map(|p| p.display().to_string());
        let n = |n: Option<u64>| n.map(|n| n.to_string());
        opt("repo-url", None, self.repo_url.clone());
        opt("repo", None, p(&self.repo));
        opt("owner", None, self.owner.clone());
        opt("name", None, self.name.clone());
        opt("base", None, self.base.clone());
        opt("subdir", None, self.subdir.clone());
        opt("state-dir", Some("UPKEEP_STATE_DIR"), p(&self.state_dir));
        opt("git-author", None, self.git_author.clone());
        opt("ssh-key", None, p(&self.ssh_key));
        opt("kubeconfig", None, p(&self.kubeconfig));
        opt("namespace", None, self.namespace.clone());
        opt("suc-namespace", None, self.suc_namespace.clone());
        opt("snapshot-namespace", None, self.snapshot_namespace.clone());
        opt("longhorn-namespace", None, self.longhorn_namespace.clone());
        opt("listen", None, self.listen.clone());
        opt("poll", None, n(self.poll));
        opt("detect-every", None, n(self.detect_every));
        opt(
            "webhook-secret-file",
            Some("UPKEEP_WEBHOOK_SECRET"),
            p(&self.webhook_secret_file),
        );
        opt("lease-name", None, self.lease_name.clone());
        opt("lease-duration", None, n(self.lease_duration));
        opt(
            "github-api-url",
            Some("UPKEEP_GITHUB_API_URL"),
            self.github_api_url.clone(),
        );
        opt(
            "github-token-file",
            Some("GITHUB_TOKEN"),
            p(&self.github_token_file),
        );
        opt(
            "k3s-channel-url",
            Some("UPKEEP_K3S_CHANNEL_URL"),
            self.k3s_channel_url.clone(),
        );
        opt("cache-dir", Some("UPKEEP_CACHE_DIR"), p(&self.cache_dir));
        opt("timeout", None, n(self.timeout));
        opt("max-rate-limit-wait", None, n(self.max_rate_limit_wait));
        opt("concurrency", None, self.concurrency.map(|c| c.to_string()));
        if self.offline == Some(true) {
            out.push("--offline".into());
        }
        if self.leader_election == Some(false) {
            out.push("--no-leader-election".into());
        }
        out
    }
}

/// `argv` with the file's arguments put right after the `run` subcommand (at index `at`), so
/// that the command line (later, and clap lets a later value win) overrides the file.
pub fn splice(argv: &[String], at: usize, file_args: Vec<String>) -> Vec<String> {
    let at = at.min(argv.len().saturating_sub(1));
    let mut out = argv[..=at].to_vec();
    out.extend(file_args);
    out.extend(argv[at + 1..].iter().cloned());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = "apiVersion: upkeep.dev/v1alpha1\nkind: ControllerConfig\nrepoUrl: https://github.com/me/cluster.git\nowner: me\nname: cluster\npoll: 30\noffline: true\nleaderElection: false\ngithubTokenFile: /etc/upkeep/token\n";

    #[test]
    fn a_file_becomes_run_arguments_and_the_environment_wins() {
        let f = parse("upkeep.yaml", GOOD).expect("valid");
        let args = f.to_args(&|_| false);
        assert_eq!(
            args,
            [
                "--repo-url",
                "https://github.com/me/cluster.git",
                "--owner",
                "me",
                "--name",
                "cluster",
                "--poll",
                "30",
                "--github-token-file",
                "/etc/upkeep/token",
                "--offline",
                "--no-leader-election"
            ]
        );
        let with_env = f.to_args(&|v| v == "GITHUB_TOKEN");
        assert!(!with_env.iter().any(|a| a == "--github-token-file"));
    }

    #[test]
    fn bad_files_are_refused_with_a_position_and_a_hint() {
        let e = parse("upkeep.yaml", &GOOD.replace("poll: 30", "pol: 30")).expect_err("typo");
        assert_eq!((e.line, e.message.as_str()), (6, "unknown field `pol`"));
        assert!(e.hint.unwrap_or_default().contains("did you mean `poll`"));
        let e = parse("upkeep.yaml", &GOOD.replace("poll: 30", "poll: soon")).expect_err("type");
        assert_eq!(e.line, 6);
        let e = parse("upkeep.yaml", &format!("{GOOD}githubToken: ghp_x\n")).expect_err("secret");
        assert_eq!(e.line, 10);
        assert!(e.message.contains("secret") && !e.message.contains("ghp_x"));
        let e = parse("upkeep.yaml", &GOOD.replace("ControllerConfig", "Other")).expect_err("kind");
        assert_eq!(e.line, 2);
        let bomb = "apiVersion: upkeep.dev/v1alpha1\nkind: ControllerConfig\na: &a [x,x,x,x,x,x,x,x,x,x]\nb: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a,*a]\nc: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b,*b]\nd: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c,*c]\ne: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d,*d]\nf: [*e,*e,*e,*e,*e,*e,*e,*e,*e,*e]\n";
        assert!(parse("upkeep.yaml", bomb).is_err());
    }

    #[test]
    fn oversized_missing_and_binary_files_are_refused_by_name() {
        let dir = std::env::temp_dir().join(format!("upkeep-runconfig-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("mkdir");
        let big = dir.join("big.yaml");
        std::fs::write(&big, "#".repeat(10 * 1024 * 1024)).expect("write");
        let e = load(&big).expect_err("10 MB");
        assert!(e.message.contains("more than the 64 KiB"), "{e}");
        let e = load(&dir.join("missing.yaml")).expect_err("missing");
        assert!(
            e.file.ends_with("missing.yaml") && e.message.contains("cannot read"),
            "{e}"
        );
        let bin = dir.join("bin.yaml");
        std::fs::write(&bin, [0xff, 0xfe, 0x00]).expect("write");
        assert!(load(&bin).expect_err("binary").message.contains("UTF-8"));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn file_arguments_go_right_after_run() {
        let argv: Vec<String> = ["upkeep", "--log-format", "json", "run", "--poll", "5"]
            .map(String::from)
            .into();
        assert_eq!(
            splice(&argv, 3, vec!["--poll".into(), "30".into()]),
            [
                "upkeep",
                "--log-format",
                "json",
                "run",
                "--poll",
                "30",
                "--poll",
                "5"
            ]
        );
    }
}
