//! The config repository through git2: a bare mirror in the state directory, fetched
//! incrementally; files read from a commit; a commit made from a parent with one file replaced;
//! and pushes whose refusals are detected per ref (libgit2 returns Ok for a refused push).
//!
//! Also the one edit upkeep makes to a user's file: [`set_version`] changes the version scalar of
//! one component in `versions.yaml` and leaves every other byte as it was.

use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use git2::{Cred, FetchOptions, Oid, PushOptions, RemoteCallbacks, Repository, Signature};

use crate::model::files::VersionsFile;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("git: {op} in {path}: {message} (check the repository URL and the token's access)")]
    Git {
        op: &'static str,
        path: PathBuf,
        message: String,
    },
    #[error(
        "git: {op}: the git server refused the credentials (hint: the token (GITHUB_TOKEN or --github-token-file) is wrong, expired, or may not access this repository; it needs Contents: read and write)"
    )]
    Auth { op: &'static str },
    #[error(
        "the push of {refname} was refused: {reason} (protected branch, or someone pushed first)"
    )]
    PushRefused { refname: String, reason: String },
    #[error("branch {branch} is not on the remote (fetch first, or check the base branch's name)")]
    NoBranch { branch: String },
    #[error("upkeep never force-pushes {branch}: only its own upkeep/ branches")]
    ForceOutsideOwnBranches { branch: String },
    #[error("{file}: {message}")]
    Edit { file: String, message: String },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Who upkeep's commits are by.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Author {
    pub name: String,
    pub email: String,
}

impl Default for Author {
    fn default() -> Author {
        Author {
            name: "upkeep".into(),
            email: "upkeep@users.noreply.github.com".into(),
        }
    }
}

/// How the mirror talks to the remote.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// libgit2 (paths, `file://`, `http://`): this build of git2 has no TLS or SSH.
    Libgit2,
    /// The `git` command (`https://` and SSH remotes): the token goes in an HTTP header set
    /// through the environment (never on the command line), SSH uses the user's agent or
    /// `GIT_SSH_COMMAND`.
    GitCli,
}

impl Transport {
    /// libgit2 where it can, the git command for https and SSH.
    pub fn for_url(url: &str) -> Transport {
        if url.starts_with("https://")
            || url.starts_with("ssh://")
            || (url.contains('@') && url.contains(':') && !url.contains("://"))
        {
            Transport::GitCli
        } else {
            Transport::Libgit2
        }
    }
}

/// A bare mirror of the config repository.
pub struct GitRepo {
    repo: Repository,
    path: PathBuf,
    url: String,
    /// User and password (a token) for HTTPS; in memory only, never in the mirror's config.
    cred: Option<(String, String)>,
    pub transport: Transport,
    /// The SSH private key for SSH remotes (else the user's agent and ssh config).
    pub ssh_key: Option<PathBuf>,
}

impl std::fmt::Debug for GitRepo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The token never reaches logs.
        f.debug_struct("GitRepo")
            .field("path", &self.path)
            .field("url", &self.url)
            .finish_non_exhaustive()
    }
}

fn git<'a>(op: &'static str, path: &'a Path) -> impl Fn(git2::Error) -> Error + 'a {
    move |e| {
        // libgit2 words a refused token as "too many redirects or authentication replays".
        if e.code() == git2::ErrorCode::Auth || e.message().contains("authentication replays") {
            return Error::Auth { op };
        }
        Error::Git {
            op,
            path: path.to_path_buf(),
            message: e.message().to_string(),
        }
    }
}

/// `url` without a password in its user part, and the user and password taken out
/// (`https://user:secret@host/path` -> `https://host/path`, `("user", "secret")`). A URL with
/// a user but no password (`ssh://git@host/...`) is left as it is.
pub fn split_credentials(url: &str) -> (String, Option<(String, String)>) {
    let Some((scheme, rest)) = url.split_once("://") else {
        return (url.to_string(), None);
    };
    let authority_end = rest.find('/').unwrap_or(rest.len());
    let (authority, path) = rest.split_at(authority_end);
    let Some((userinfo, host)) = authority.rsplit_once('@') else {
        return (url.to_string(), None);
    };
    let Some((user, secret)) = userinfo.split_once(':') else {
        return (url.to_string(), None);
    };
    (
        format!("{scheme}://{host}{path}"),
        Some((user.to_string(), secret.to_string())),
    )
}

/// Whether the git command's `stderr` says the server refused the credentials.
fn refused_credentials(stderr: &str) -> bool {
    let s = stderr.to_ascii_lowercase();
    s.contains("authentication failed")
        || s.contains("could not read username")
        || s.contains("the requested url returned error: 401")
        || s.contains("the requested url returned error: 403")
}

/// Only upkeep's own branches may be force-pushed.
pub const OWN_PREFIX: &str = "upkeep/";

impl GitRepo {
    /// Open (or create) the mirror at `dir` for `url`: a local path, `file://`, or `http(s)://`
    /// (the token is sent as the password of user `x-access-token`, as GitHub expects).
    pub fn open(dir: &Path, url: &str, token: Option<String>) -> Result<GitRepo> {
        // Credentials written into the URL (`https://x-access-token:SECRET@github.com/...`)
        // are taken out of it: git would store the URL in mirror.git/config.
        let (url, in_url) = split_credentials(url);
        let url = url.as_str();
        let cred = token.map(|t| ("x-access-token".to_string(), t)).or(in_url);
        let repo = match Repository::open_bare(dir) {
            Ok(r) => r,
            Err(_) => {
                crate::create_private_dir(dir).map_err(|e| Error::Git {
                    op: "create the mirror",
                    path: dir.to_path_buf(),
                    message: e.to_string(),
                })?;
                Repository::init_bare(dir).map_err(git("create the mirror", dir))?
            }
        };
        match repo.find_remote("origin") {
            Ok(r) if r.url().ok() == Some(url) => {}
            Ok(_) => repo
                .remote_set_url("origin", url)
                .map_err(git("set the remote", dir))?,
            Err(_) => {
                repo.remote("origin", url)
                    .map_err(git("add the remote", dir))?;
            }
        }
        Ok(GitRepo {
            repo,
            path: dir.to_path_buf(),
            url: url.to_string(),
            cred,
            transport: Transport::for_url(url),
            ssh_key: None,
        })
    }

    /// `message` with the secret (if any) replaced by `***`.
    fn scrub(&self, message: String) -> String {
        match &self.cred {
            Some((_, secret)) if !secret.is_empty() => message.replace(secret.as_str(), "***"),
            _ => message,
        }
    }

    /// Run `git` on the mirror, the token (if any) as an `Authorization` header from the
    /// environment, so that it shows neither in process lists nor in errors.
    fn cli(&self, op: &'static str, args: &[&str]) -> Result<std::process::Output> {
        use base64::Engine;
        let mut c = std::process::Command::new("git");
        c.arg("--git-dir")
            .arg(&self.path)
            .args(args)
            .env("GIT_TERMINAL_PROMPT", "0");
        if let Some(k) = &self.ssh_key {
            c.env(
                "GIT_SSH_COMMAND",
                format!(
                    "ssh -i '{}' -o IdentitiesOnly=yes -o BatchMode=yes",
                    k.display().to_string().replace('\'', "")
                ),
            );
        }
        if let Some((user, secret)) = &self.cred {
            let basic =
                base64::engine::general_purpose::STANDARD.encode(format!("{user}:{secret}"));
            c.env("GIT_CONFIG_COUNT", "1")
                .env("GIT_CONFIG_KEY_0", "http.extraHeader")
                .env(
                    "GIT_CONFIG_VALUE_0",
                    format!("Authorization: Basic {basic}"),
                );
        }
        let out = c.output().map_err(|e| Error::Git {
            op,
            path: self.path.clone(),
            message: format!("cannot run git: {e}"),
        })?;
        Ok(out)
    }

    fn cli_ok(&self, op: &'static str, args: &[&str]) -> Result<()> {
        let out = self.cli(op, args)?;
        if out.status.success() {
            return Ok(());
        }
        let message = self.scrub(String::from_utf8_lossy(&out.stderr).trim().to_string());
        if refused_credentials(&message) {
            return Err(Error::Auth { op });
        }
        Err(Error::Git {
            op,
            path: self.path.clone(),
            message,
        })
    }

    fn callbacks(&self) -> RemoteCallbacks<'_> {
        let mut cb = RemoteCallbacks::new();
        let cred = self.cred.clone();
        cb.credentials(move |_url, _user, _allowed| match &cred {
            Some((user, secret)) => Cred::userpass_plaintext(user, secret),
            None => Err(git2::Error::from_str(
                "the remote asks for credentials and no token is set",
            )),
        });
        cb
    }

    /// Fetch every branch (`refs/remotes/origin/*`), pruning deleted ones.
    pub fn fetch(&self) -> Result<()> {
        if self.transport == Transport::GitCli {
            return self.cli_ok(
                "fetch",
                &[
                    "fetch",
                    "--prune",
                    "--quiet",
                    "origin",
                    "+refs/heads/*:refs/remotes/origin/*",
                ],
            );
        }
        let mut remote = self
            .repo
            .find_remote("origin")
            .map_err(git("find the remote", &self.path))?;
        let mut opts = FetchOptions::new();
        opts.remote_callbacks(self.callbacks());
        opts.prune(git2::FetchPrune::On);
        remote
            .fetch(
                &["+refs/heads/*:refs/remotes/origin/*"],
                Some(&mut opts),
                None,
            )
            .map_err(git("fetch", &self.path))
    }

    /// The remote branch's commit, as of the last fetch.
    pub fn tip(&self, branch: &str) -> Result<Oid> {
        self.repo
            .refname_to_id(&format!("refs/remotes/origin/{branch}"))
            .map_err(|_| Error::NoBranch {
                branch: branch.to_string(),
            })
    }

    pub fn remote_branch(&self, branch: &str) -> Option<Oid> {
        self.tip(branch).ok()
    }

    /// A commit's first parent.
    pub fn parent(&self, commit: Oid) -> Option<Oid> {
        self.repo.find_commit(commit).ok()?.parent_id(0).ok()
    }

    /// The bytes of `path` in `commit` (None when absent).
    pub fn read_file(&self, commit: Oid, path: &str) -> Result<Option<Vec<u8>>> {
        let tree = self
            .repo
            .find_commit(commit)
            .and_then(|c| c.tree())
            .map_err(git("read a commit", &self.path))?;
        match tree.get_path(Path::new(path)) {
            Ok(entry) => {
                let blob = self
                    .repo
                    .find_blob(entry.id())
                    .map_err(git("read a file", &self.path))?;
                Ok(Some(blob.content().to_vec()))
            }
            Err(_) => Ok(None),
        }
    }

    /// The paths of every file in `commit` whose name ends with one of `suffixes`.
    pub fn files(&self, commit: Oid, suffixes: &[&str]) -> Result<Vec<String>> {
        let tree = self
            .repo
            .find_commit(commit)
            .and_then(|c| c.tree())
            .map_err(git("read a commit", &self.path))?;
        let mut out = Vec::new();
        tree.walk(git2::TreeWalkMode::PreOrder, |dir, entry| {
            if entry.kind() == Some(git2::ObjectType::Blob)
                && let Ok(name) = entry.name()
                && suffixes.iter().any(|s| name.ends_with(s))
            {
                out.push(format!("{dir}{name}"));
            }
            git2::TreeWalkResult::Ok
        })
        .map_err(git("list files", &self.path))?;
        Ok(out)
    }

    /// Write the files under `subdir` (a cluster directory, "" for the root) of `commit` into
    /// `dest`, which is emptied first.
    pub fn extract(&self, commit: Oid, subdir: &str, dest: &Path) -> Result<()> {
        let io = |e: std::io::Error| Error::Git {
            op: "extract the config repo",
            path: dest.to_path_buf(),
            message: e.to_string(),
        };
        if dest.exists() {
            std::fs::remove_dir_all(dest).map_err(io)?;
        }
        std::fs::create_dir_all(dest).map_err(io)?;
        let tree = self
            .repo
            .find_commit(commit)
            .and_then(|c| c.tree())
            .map_err(git("read a commit", &self.path))?;
        let prefix = subdir.trim_matches('/');
        let mut failure = None;
        tree.walk(git2::TreeWalkMode::PreOrder, |root, entry| {
            let rel = format!("{root}{}", entry.name().unwrap_or(""));
            let inside =
                prefix.is_empty() || rel == prefix || rel.starts_with(&format!("{prefix}/"));
            let above = prefix.starts_with(&format!("{rel}/"));
            if !inside && !above {
                return git2::TreeWalkResult::Skip;
            }
            if entry.kind() == Some(git2::ObjectType::Blob) && inside {
                let out = dest.join(
                    rel.strip_prefix(prefix)
                        .unwrap_or(&rel)
                        .trim_start_matches('/'),
                );
                let r = self
                    .repo
                    .find_blob(entry.id())
                    .map_err(|e| std::io::Error::other(e.message().to_string()))
                    .and_then(|b| {
                        if let Some(p) = out.parent() {
                            std::fs::create_dir_all(p)?;
                        }
                        std::fs::write(&out, b.content())
                    });
                if let Err(e) = r {
                    failure = Some(e);
                    return git2::TreeWalkResult::Abort;
                }
            }
            git2::TreeWalkResult::Ok
        })
        .ok();
        match failure {
            Some(e) => Err(io(e)),
            None => Ok(()),
        }
    }

    /// A new commit on `parent` with `path` set to `bytes` (no branch moves).
    pub fn commit_file(
        &self,
        parent: Oid,
        path: &str,
        bytes: &[u8],
        message: &str,
        author: &Author,
    ) -> Result<Oid> {
        let e = git("commit", &self.path);
        let parent = self.repo.find_commit(parent).map_err(&e)?;
        let blob = self.repo.blob(bytes).map_err(&e)?;
        let tree =
            replace_in_tree(&self.repo, &parent.tree().map_err(&e)?, path, blob).map_err(&e)?;
        let tree = self.repo.find_tree(tree).map_err(&e)?;
        let sig = Signature::now(&author.name, &author.email).map_err(&e)?;
        self.repo
            .commit(None, &sig, &sig, message, &tree, &[&parent])
            .map_err(&e)
    }

    /// One commit on `parent` changing several files (each `path` replaced by its bytes).
    pub fn commit_files(
        &self,
        parent: Oid,
        files: &[(&str, &[u8])],
        message: &str,
        author: &Author,
    ) -> Result<Oid> {
        let e = git("commit", &self.path);
        let parent = self.repo.find_commit(parent).map_err(&e)?;
        let mut tree = parent.tree().map_err(&e)?;
        for (path, bytes) in files {
            let blob = self.repo.blob(bytes).map_err(&e)?;
            let id = replace_in_tree(&self.repo, &tree, path, blob).map_err(&e)?;
            tree = self.repo.find_tree(id).map_err(&e)?;
        }
        let sig = Signature::now(&author.name, &author.email).map_err(&e)?;
        self.repo
            .commit(None, &sig, &sig, message, &tree, &[&parent])
            .map_err(&e)
    }

    /// Every file of `commit` (paths with `/`), with its text when it is YAML, JSON, an env
    /// file or a `Kustomization`, valid UTF-8 and at most 2 MiB (what the layout reader reads).
    pub fn listing(&self, commit: Oid) -> Result<Vec<(String, Option<String>)>> {
        let tree = self
            .repo
            .find_commit(commit)
            .and_then(|c| c.tree())
            .map_err(git("read a commit", &self.path))?;
        let mut out = Vec::new();
        let mut total = 0usize;
        tree.walk(git2::TreeWalkMode::PreOrder, |dir, entry| {
            if out.len() >= 20_000 {
                return git2::TreeWalkResult::Abort;
            }
            if entry.kind() == Some(git2::ObjectType::Blob)
                && let Ok(name) = entry.name()
            {
                let path = format!("{dir}{name}");
                let lower = name.to_ascii_lowercase();
                let wanted = [".yaml", ".yml", ".json", ".env"]
                    .iter()
                    .any(|x| lower.ends_with(x))
                    || name == "Kustomization";
                let text = wanted
                    .then(|| self.repo.find_blob(entry.id()).ok())
                    .flatten()
                    .filter(|b| b.size() <= 2 * 1024 * 1024 && total + b.size() <= 128 << 20)
                    .and_then(|b| {
                        total += b.size();
                        String::from_utf8(b.content().to_vec()).ok()
                    });
                out.push((path, text));
            }
            git2::TreeWalkResult::Ok
        })
        .map_err(git("list files", &self.path))?;
        Ok(out)
    }

    pub fn message(&self, commit: Oid) -> Option<String> {
        self.repo
            .find_commit(commit)
            .ok()?
            .message()
            .ok()
            .map(str::to_string)
    }

    /// Push `commit` to `branch`. `force` is refused for anything but upkeep's own branches; a
    /// refusal by the remote (protection, a non-fast-forward) is an error, never a silent Ok.
    pub fn push(&self, commit: Oid, branch: &str, force: bool) -> Result<()> {
        if force && !branch.starts_with(OWN_PREFIX) {
            return Err(Error::ForceOutsideOwnBranches {
                branch: branch.to_string(),
            });
        }
        let e = git("push", &self.path);
        let local = format!("refs/heads/{branch}");
        self.repo
            .reference(&local, commit, true, "upkeep: branch to push")
            .map_err(&e)?;
        let spec = format!("{}{local}:{local}", if force { "+" } else { "" });
        if self.transport == Transport::GitCli {
            // --porcelain: one line per ref; `!` marks a refused one.
            let out = self.cli("push", &["push", "--porcelain", "origin", spec.as_str()])?;
            let text = String::from_utf8_lossy(&out.stdout);
            if let Some(line) = text.lines().find(|l| l.starts_with('!')) {
                let reason = line.split('\t').nth(2).unwrap_or(line).to_string();
                return Err(Error::PushRefused {
                    refname: local,
                    reason,
                });
            }
            if !out.status.success() {
                let message = self.scrub(String::from_utf8_lossy(&out.stderr).trim().to_string());
                return Err(Error::PushRefused {
                    refname: local,
                    reason: message,
                });
            }
            let _ = self.repo.reference(
                &format!("refs/remotes/origin/{branch}"),
                commit,
                true,
                "upkeep: pushed",
            );
            return Ok(());
        }
        let mut remote = self.repo.find_remote("origin").map_err(&e)?;
        let refused: std::cell::RefCell<Option<(String, String)>> = std::cell::RefCell::new(None);
        {
            let mut cb = self.callbacks();
            cb.push_update_reference(|r, status| {
                if let Some(s) = status {
                    *refused.borrow_mut() = Some((r.to_string(), s.to_string()));
                }
                Ok(())
            });
            let mut opts = PushOptions::new();
            opts.remote_callbacks(cb);
            let r = remote.push(&[spec.as_str()], Some(&mut opts));
            if let Err(err) = r {
                // A hook that declines the push may also fail the call as a whole.
                refused
                    .borrow_mut()
                    .get_or_insert((local.clone(), err.message().to_string()));
            }
        }
        let refused = refused.into_inner();
        if let Some((refname, reason)) = refused {
            return Err(Error::PushRefused { refname, reason });
        }
        // Keep the remote-tracking ref in step without another fetch.
        let _ = self.repo.reference(
            &format!("refs/remotes/origin/{branch}"),
            commit,
            true,
            "upkeep: pushed",
        );
        Ok(())
    }

    /// Delete a remote branch of upkeep's own (after its PR was closed).
    pub fn delete_branch(&self, branch: &str) -> Result<()> {
        if !branch.starts_with(OWN_PREFIX) {
            return Err(Error::ForceOutsideOwnBranches {
                branch: branch.to_string(),
            });
        }
        let e = git("delete a branch", &self.path);
        if self.transport == Transport::GitCli {
            self.cli_ok(
                "delete a branch",
                &[
                    "push",
                    "--quiet",
                    "origin",
                    &format!(":refs/heads/{branch}"),
                ],
            )?;
            if let Ok(mut r) = self
                .repo
                .find_reference(&format!("refs/remotes/origin/{branch}"))
            {
                let _ = r.delete();
            }
            return Ok(());
        }
        let mut remote = self.repo.find_remote("origin").map_err(&e)?;
        let mut opts = PushOptions::new();
        opts.remote_callbacks(self.callbacks());
        remote
            .push(&[format!(":refs/heads/{branch}").as_str()], Some(&mut opts))
            .map_err(&e)?;
        if let Ok(mut r) = self
            .repo
            .find_reference(&format!("refs/remotes/origin/{branch}"))
        {
            let _ = r.delete();
        }
        Ok(())
    }
}

/// One commit on a branch that changed component versions in versions.yaml.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VersionChange {
    pub commit: String,
    pub at: DateTime<Utc>,
    /// The first line of the commit message.
    pub subject: String,
    /// (component, from, to) for each version that changed.
    pub changes: Vec<(String, String, String)>,
}

impl GitRepo {
    /// The commits on `branch` (its first-parent line, newest first, at most `max`, none older
    /// than `since`) that changed a version in the versions.yaml at `path`: what git
    /// remembers of every update, whatever the merge method.
    pub fn version_changes(
        &self,
        branch: &str,
        path: &str,
        since: DateTime<Utc>,
        max: usize,
    ) -> Result<Vec<VersionChange>> {
        let versions_of = |commit: Oid| -> std::collections::BTreeMap<String, String> {
            let text = self
                .read_file(commit, path)
                .ok()
                .flatten()
                .map(|b| String::from_utf8_lossy(&b).into_owned())
                .unwrap_or_default();
            crate::model::load::parse_yaml::<crate::model::files::VersionsFile>(path, &text)
                .map(|v| {
                    v.components
                        .0
                        .into_iter()
                        .map(|(k, e)| (k.value, e.version.value))
                        .collect()
                })
                .unwrap_or_default()
        };
        let mut out = Vec::new();
        let mut at = Some(self.tip(branch)?);
        for _ in 0..max {
            let Some(oid) = at else { break };
            let commit = self
                .repo
                .find_commit(oid)
                .map_err(git("read a commit", &self.path))?;
            let when = DateTime::from_timestamp(commit.time().seconds(), 0).unwrap_or_default();
            if when < since {
                break;
            }
            let parent = commit.parent_id(0).ok();
            let (now, before) = (
                versions_of(oid),
                parent.map(versions_of).unwrap_or_default(),
            );
            let changes: Vec<(String, String, String)> = now
                .iter()
                .filter_map(|(c, v)| {
                    let old = before.get(c)?;
                    (old != v).then(|| (c.clone(), old.clone(), v.clone()))
                })
                .collect();
            if !changes.is_empty() {
                out.push(VersionChange {
                    commit: oid.to_string(),
                    at: when,
                    subject: commit
                        .summary()
                        .ok()
                        .flatten()
                        .unwrap_or_default()
                        .to_string(),
                    changes,
                });
            }
            at = parent;
        }
        Ok(out)
    }
}

/// A copy of `tree` with the file at `path` (slash-separated) set to `blob`, keeping its mode.
pub fn replace_in_tree(
    repo: &Repository,
    tree: &git2::Tree<'_>,
    path: &str,
    blob: Oid,
) -> Result<Oid, git2::Error> {
    let (first, rest) = match path.split_once('/') {
        Some((a, b)) => (a, Some(b)),
        None => (path, None),
    };
    let mut tb = repo.treebuilder(Some(tree))?;
    match rest {
        None => {
            let mode = tree.get_name(first).map_or(0o100644, |e| e.filemode());
            tb.insert(first, blob, mode)?;
        }
        Some(rest) => {
            let sub = match tree.get_name(first) {
                Some(e) => repo.find_tree(e.id())?,
                None => repo.find_tree(repo.treebuilder(None)?.write()?)?,
            };
            let oid = replace_in_tree(repo, &sub, rest, blob)?;
            tb.insert(first, oid, 0o040000)?;
        }
    }
    tb.write()
}

/// Change `component`'s `version:` in a versions.yaml from `from` to `to`, in place: only the
/// scalar's text changes; comments, key order, quoting and indentation stay byte for byte.
pub fn set_version(
    file: &str,
    text: &str,
    component: &str,
    from: &str,
    to: &str,
) -> Result<String> {
    let fail = |message: String| Error::Edit {
        file: file.to_string(),
        message,
    };
    let parsed: VersionsFile = crate::model::load::parse_yaml(file, text)
        .map_err(|d| fail(format!("cannot read it: {}", d.message)))?;
    let entry = parsed
        .components
        .0
        .iter()
        .find(|(k, _)| k.value == component)
        .map(|(_, v)| v)
        .ok_or_else(|| fail(format!("no component {component:?}")))?;
    let pos = entry.version.pos;
    if entry.version.value != from {
        return Err(fail(format!(
            "{component} is at {} on the base branch, not {from}",
            entry.version.value
        )));
    }
    replace_scalar(text, pos, from, to).ok_or_else(|| {
        fail(format!(
            "the version of {component} at {}:{} is not written as plain text ({from}); edit it by hand",
            pos.line, pos.column
        ))
    })
}

/// `text` with the scalar `from` that starts at `pos` (1-based line and column, in
/// characters; a quote is stepped over) replaced by `to`; `None` when `from` is not written
/// there as plain text.
fn replace_scalar(text: &str, pos: crate::diag::Pos, from: &str, to: &str) -> Option<String> {
    let line_start: usize = text
        .split_inclusive('\n')
        .take(usize::try_from(pos.line.saturating_sub(1)).unwrap_or(usize::MAX))
        .map(str::len)
        .sum();
    let line = text.get(line_start..)?;
    let col = line
        .char_indices()
        .nth(usize::try_from(pos.column.saturating_sub(1)).unwrap_or(usize::MAX))
        .map_or(line.len(), |(i, _)| i);
    let mut at = line_start + col;
    if matches!(text.get(at..)?.chars().next(), Some('"' | '\'')) {
        at += 1;
    }
    text.get(at..)?
        .starts_with(from)
        .then(|| format!("{}{to}{}", &text[..at], &text[at + from.len()..]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_are_taken_out_of_a_url() {
        assert_eq!(
            split_credentials("https://x-access-token:s3cr@t@github.com/o/r.git"),
            (
                "https://github.com/o/r.git".to_string(),
                Some(("x-access-token".to_string(), "s3cr@t".to_string()))
            )
        );
        for plain in [
            "https://github.com/o/r.git",
            "ssh://git@github.com/o/r.git",
            "git@github.com:o/r.git",
            "file:///tmp/r.git",
            "/tmp/r.git",
        ] {
            assert_eq!(split_credentials(plain), (plain.to_string(), None));
        }
    }

    const FILE: &str = r#"# Desired versions.
apiVersion: upkeep.dev/v1alpha1
kind: DesiredVersions
components:
  k3s:   {version: "v1.33.4+k3s1", track: stable}   # flow style, quoted
  flux:
    # comment above
    version: 'v2.6.4'    # single quotes
  longhorn:
    version:    v1.9.1   # plain, odd spacing
"#;

    #[test]
    fn only_the_scalar_changes() {
        let out = set_version("versions.yaml", FILE, "k3s", "v1.33.4+k3s1", "v1.33.5+k3s1")
            .unwrap_or_default();
        assert_eq!(out, FILE.replace("v1.33.4+k3s1", "v1.33.5+k3s1"));
        let out =
            set_version("versions.yaml", FILE, "flux", "v2.6.4", "v2.7.0").unwrap_or_default();
        assert_eq!(out, FILE.replace("'v2.6.4'", "'v2.7.0'"));
        let out =
            set_version("versions.yaml", FILE, "longhorn", "v1.9.1", "v1.10.2").unwrap_or_default();
        assert_eq!(out, FILE.replace("v1.9.1", "v1.10.2"));
    }

    #[test]
    fn refuses_what_it_cannot_edit_safely() {
        assert!(
            set_version("versions.yaml", FILE, "k3s", "v1.33.3+k3s1", "v1.33.5+k3s1").is_err(),
            "stale from"
        );
        assert!(set_version("versions.yaml", FILE, "nope", "v1", "v2").is_err());
        assert!(set_version("versions.yaml", "not: [yaml", "k3s", "v1", "v2").is_err());
    }
}
