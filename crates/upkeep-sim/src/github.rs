//! The GitHub forge emulator: repositories backed by real bare git repositories on disk, pull
//! requests, issues, comments, labels, commit statuses and check runs, in the shapes of GitHub's
//! REST API description (tests validate every endpoint against the OpenAPI subset). Served by
//! the upstream simulator ([`super::upstream`]) next to the release API, so one base URL is
//! "GitHub".
//!
//! Git itself: each repository is a bare repo under the simulator's directory; clone, fetch and
//! push either by its path (`file://`, the repo JSON's `clone_url`) or over smart HTTP at
//! `<base>/git/<owner>/<name>.git` (served by `git http-backend`, so protected branches are
//! enforced by a pre-receive hook and a refused push is reported per ref, as on GitHub).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};

use chrono::{DateTime, SecondsFormat, Utc};
use git2::{Oid, Repository, Signature};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

/// An error answered as GitHub does: a status, a message, and for 422 the field errors.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{status}: {message}")]
pub struct ForgeError {
    pub status: u16,
    pub message: String,
    pub errors: Vec<Value>,
}

/// GitHub refuses a pull request or issue whose title is over 256 characters or whose body is
/// over 65,536: "Validation Failed" with a `custom` error on resource `Issue` (pull requests are
/// issues there) naming the field, as seen in bots' logs (docs/fidelity.md).
fn too_long(b: &Value) -> Result<()> {
    for (field, max) in [("title", 256), ("body", 65_536)] {
        if b[field].as_str().is_some_and(|t| t.chars().count() > max) {
            return Err(ForgeError::invalid(
                "Issue",
                field,
                "custom",
                Some(format!("{field} is too long (maximum is {max} characters)")),
            ));
        }
    }
    Ok(())
}

impl ForgeError {
    fn new(status: u16, message: impl Into<String>) -> ForgeError {
        ForgeError {
            status,
            message: message.into(),
            errors: Vec::new(),
        }
    }
    fn not_found() -> ForgeError {
        ForgeError::new(404, "Not Found")
    }
    fn invalid(resource: &str, field: &str, code: &str, message: Option<String>) -> ForgeError {
        let mut e = json!({"resource": resource, "field": field, "code": code});
        if let Some(m) = &message {
            e["message"] = json!(m);
        }
        ForgeError {
            status: 422,
            message: message.unwrap_or_else(|| "Validation Failed".into()),
            errors: vec![e],
        }
    }
    pub fn body(&self) -> Value {
        let mut b =
            json!({"message": self.message, "documentation_url": "https://docs.github.com/rest"});
        if self.status == 422 {
            b["message"] = json!("Validation Failed");
            b["errors"] = json!(self.errors);
        }
        b
    }
}

impl From<git2::Error> for ForgeError {
    fn from(e: git2::Error) -> ForgeError {
        ForgeError::new(500, format!("git: {}", e.message()))
    }
}

pub type Result<T, E = ForgeError> = std::result::Result<T, E>;

/// A pull request's commits, additions, deletions and changed files.
type MergeStats = (usize, usize, usize, usize);

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Pull {
    head: String,
    base: String,
    head_sha: String,
    base_sha: String,
    merged_at: Option<DateTime<Utc>>,
    merge_commit_sha: Option<String>,
    merged_by: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Issue {
    number: u64,
    id: u64,
    title: String,
    body: Option<String>,
    state: String,
    state_reason: Option<String>,
    labels: Vec<String>,
    user: String,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
    closed_at: Option<DateTime<Utc>>,
    pull: Option<Pull>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Comment {
    id: u64,
    issue: u64,
    body: String,
    user: String,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Status {
    id: u64,
    state: String,
    context: String,
    description: Option<String>,
    target_url: Option<String>,
    at: DateTime<Utc>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct CheckRun {
    id: u64,
    name: String,
    status: String,
    conclusion: Option<String>,
    at: DateTime<Utc>,
}

#[derive(Serialize, Deserialize)]
struct Repo {
    id: u64,
    owner: String,
    name: String,
    path: PathBuf,
    default_branch: String,
    protected: BTreeSet<String>,
    /// Protected branches whose pull requests need approving reviews before a merge (none
    /// here: upkeep's own PRs cannot be merged through the API).
    #[serde(default)]
    reviews_required: BTreeSet<String>,
    issues: BTreeMap<u64, Issue>,
    comments: Vec<Comment>,
    labels: BTreeMap<String, u64>,
    statuses: HashMap<String, Vec<Status>>,
    check_runs: HashMap<String, Vec<CheckRun>>,
    created_at: DateTime<Utc>,
}

/// Every repository of the emulated forge.
pub struct Forge {
    root: PathBuf,
    repos: BTreeMap<String, Repo>,
    next_id: u64,
    /// The user that API writes are made as.
    pub login: String,
    /// Save pull requests, issues and the rest to `<root>/forge.json` after every change.
    persist: bool,
    /// Webhooks per repository (`owner/name`): where to deliver, with which secret.
    hooks: BTreeMap<String, Vec<(String, Vec<u8>)>>,
    /// Deliveries waiting to be sent (see [`Forge::take_deliveries`]).
    outbox: Vec<Delivery>,
}

/// A webhook delivery, as GitHub sends it: `X-GitHub-Event: event`, the JSON `body`, signed with
/// `secret` in `X-Hub-Signature-256`.
#[derive(Debug, Clone)]
pub struct Delivery {
    pub url: String,
    pub secret: Vec<u8>,
    pub event: String,
    pub body: Value,
}

#[derive(Serialize, Deserialize)]
struct Saved {
    repos: BTreeMap<String, Repo>,
    next_id: u64,
}

fn ts(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

fn sig(name: &str) -> Result<Signature<'static>> {
    Ok(Signature::now(
        name,
        &format!("{name}@users.noreply.github.com"),
    )?)
}

impl Forge {
    /// A forge keeping its bare repositories under `root`.
    pub fn new(root: &Path) -> Forge {
        Forge {
            root: root.to_path_buf(),
            repos: BTreeMap::new(),
            next_id: 1,
            login: "upkeep-bot".into(),
            persist: false,
            hooks: BTreeMap::new(),
            outbox: Vec::new(),
        }
    }

    /// A forge that keeps its state under `root` across restarts: the bare repositories are
    /// there anyway, and pull requests, issues, comments, labels, statuses and check runs are
    /// saved to `root/forge.json` after every change and loaded here.
    pub fn persistent(root: &Path) -> std::io::Result<Forge> {
        let mut f = Forge::new(root);
        f.persist = true;
        let file = root.join("forge.json");
        if file.exists() {
            let saved: Saved = serde_json::from_str(&std::fs::read_to_string(&file)?)
                .map_err(|e| std::io::Error::other(format!("{}: {e}", file.display())))?;
            f.repos = saved.repos;
            f.next_id = saved.next_id;
        }
        Ok(f)
    }

    fn save(&self) {
        if !self.persist {
            return;
        }
        #[derive(Serialize)]
        struct SavedRef<'a> {
            repos: &'a BTreeMap<String, Repo>,
            next_id: u64,
        }
        let bytes = serde_json::to_vec(&SavedRef {
            repos: &self.repos,
            next_id: self.next_id,
        })
        .unwrap_or_default();
        if let Err(e) = crate::kube::write_atomic(&self.root.join("forge.json"), &bytes) {
            tracing::warn!(error = %e, "cannot save the forge's state");
        }
    }

    pub fn has_repo(&self, full: &str) -> bool {
        self.repos.contains_key(full)
    }

    /// Where the bare repositories live (`<root>/<owner>/<name>.git`).
    pub fn root(&self) -> &Path {
        &self.root
    }

    fn id(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }

    fn repo(&self, full: &str) -> Result<&Repo> {
        self.repos.get(full).ok_or_else(ForgeError::not_found)
    }

    fn repo_mut(&mut self, full: &str) -> Result<&mut Repo> {
        self.repos.get_mut(full).ok_or_else(ForgeError::not_found)
    }

    /// Create `owner/name` as a bare repository whose default branch holds the files under
    /// `seed` (a directory, copied recursively), committed once. Returns the bare repo's path.
    pub fn create_repo(
        &mut self,
        full: &str,
        seed: Option<&Path>,
        now: DateTime<Utc>,
    ) -> Result<PathBuf> {
        let (owner, name) = full
            .split_once('/')
            .ok_or_else(|| ForgeError::new(422, format!("{full:?} is not owner/name")))?;
        let path = self.root.join(owner).join(format!("{name}.git"));
        let repo = Repository::init_bare(&path)?;
        repo.set_head("refs/heads/main")?;
        if let Some(dir) = seed {
            let mut tb = repo.treebuilder(None)?;
            let tree = build_tree(&repo, dir, &mut tb)?;
            let tree = repo.find_tree(tree)?;
            let s = sig("upkeep-sim")?;
            repo.commit(
                Some("refs/heads/main"),
                &s,
                &s,
                "Initial commit",
                &tree,
                &[],
            )?;
        }
        install_hooks(&path).map_err(|e| ForgeError::new(500, format!("hooks: {e}")))?;
        let id = self.id();
        self.repos.insert(
            full.to_string(),
            Repo {
                id,
                owner: owner.into(),
                name: name.into(),
                path: path.clone(),
                default_branch: "main".into(),
                protected: BTreeSet::new(),
                reviews_required: BTreeSet::new(),
                issues: BTreeMap::new(),
                comments: Vec::new(),
                labels: BTreeMap::new(),
                statuses: HashMap::new(),
                check_runs: HashMap::new(),
                created_at: now,
            },
        );
        self.save();
        Ok(path)
    }

    /// The bare repository's path.
    pub fn repo_path(&self, full: &str) -> Option<PathBuf> {
        self.repos.get(full).map(|r| r.path.clone())
    }

    /// Refuse pushes to `branch` (a pre-receive hook, like GitHub's branch protection).
    pub fn protect(&mut self, full: &str, branch: &str) -> Result<()> {
        let r = self.repo_mut(full)?;
        r.protected.insert(branch.to_string());
        let list: Vec<String> = r.protected.iter().cloned().collect();
        std::fs::write(r.path.join("upkeep-protected"), list.join("\n") + "\n")
            .map_err(|e| ForgeError::new(500, e.to_string()))?;
        self.save();
        Ok(())
    }

    /// [`protect`](Self::protect), and require an approving review before a pull request to
    /// `branch` is merged (GitHub's "Require approvals"): a merge through the API is refused
    /// with 405, as GitHub refuses it.
    pub fn protect_with_reviews(&mut self, full: &str, branch: &str) -> Result<()> {
        self.protect(full, branch)?;
        let r = self.repo_mut(full)?;
        r.reviews_required.insert(branch.to_string());
        self.save();
        Ok(())
    }

    /// Someone else commits to `branch`: set `file` to `content` (for push races and human
    /// commits). Returns the new commit's sha.
    pub fn commit_file(
        &mut self,
        full: &str,
        branch: &str,
        file: &str,
        content: &str,
        message: &str,
    ) -> Result<String> {
        let r = self.repo(full)?;
        let repo = Repository::open_bare(&r.path)?;
        let refname = format!("refs/heads/{branch}");
        let parent = repo.find_reference(&refname)?.peel_to_commit()?;
        let blob = repo.blob(content.as_bytes())?;
        let tree = upkeep::gitrepo::replace_in_tree(&repo, &parent.tree()?, file, blob)?;
        let tree = repo.find_tree(tree)?;
        let s = sig("octocat")?;
        let oid = repo.commit(Some(&refname), &s, &s, message, &tree, &[&parent])?;
        Ok(oid.to_string())
    }

    pub fn branch_sha(&self, full: &str, branch: &str) -> Option<String> {
        let r = self.repos.get(full)?;
        let repo = Repository::open_bare(&r.path).ok()?;
        repo.refname_to_id(&format!("refs/heads/{branch}"))
            .ok()
            .map(|o| o.to_string())
    }

    /// Record a commit status (GitHub's statuses API is not in the subset upkeep uses, so tests
    /// set them here).
    pub fn set_status(
        &mut self,
        full: &str,
        sha: &str,
        state: &str,
        context: &str,
        now: DateTime<Utc>,
    ) -> Result<()> {
        let id = self.id();
        let r = self.repo_mut(full)?;
        let list = r.statuses.entry(sha.to_string()).or_default();
        list.retain(|s| s.context != context);
        list.push(Status {
            id,
            state: state.into(),
            context: context.into(),
            description: None,
            target_url: None,
            at: now,
        });
        Ok(())
    }

    pub fn add_check_run(
        &mut self,
        full: &str,
        sha: &str,
        name: &str,
        conclusion: Option<&str>,
        now: DateTime<Utc>,
    ) -> Result<()> {
        let id = self.id();
        let r = self.repo_mut(full)?;
        r.check_runs
            .entry(sha.to_string())
            .or_default()
            .push(CheckRun {
                id,
                name: name.into(),
                status: if conclusion.is_some() {
                    "completed".into()
                } else {
                    "in_progress".into()
                },
                conclusion: conclusion.map(str::to_string),
                at: now,
            });
        Ok(())
    }

    /// Every comment on an issue or pull request, oldest first (for test assertions).
    pub fn comments(&self, full: &str, number: u64) -> Vec<String> {
        self.repos
            .get(full)
            .map(|r| {
                r.comments
                    .iter()
                    .filter(|c| c.issue == number)
                    .map(|c| c.body.clone())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The numbers of the pull requests, with their state (`open`, `closed` or `merged`) and
    /// head branch (for test assertions).
    pub fn pulls(&self, full: &str) -> Vec<(u64, String, String)> {
        self.repos
            .get(full)
            .map(|r| {
                r.issues
                    .values()
                    .filter_map(|i| {
                        let p = i.pull.as_ref()?;
                        let state = if p.merged_at.is_some() {
                            "merged".to_string()
                        } else {
                            i.state.clone()
                        };
                        Some((i.number, state, p.head.clone()))
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Deliver `push` and `pull_request` events of `full` (`owner/name`) to `url`, signed with
    /// `secret`, as a repository webhook on GitHub would (pushes made through the API's merges;
    /// pushes over git are not delivered).
    pub fn add_webhook(&mut self, full: &str, url: &str, secret: &[u8]) {
        self.hooks
            .entry(full.to_string())
            .or_default()
            .push((url.to_string(), secret.to_vec()));
    }

    /// The deliveries made since the last call, oldest first.
    pub fn take_deliveries(&mut self) -> Vec<Delivery> {
        std::mem::take(&mut self.outbox)
    }

    fn deliver(&mut self, full: &str, event: &str, mut body: Value) {
        body["repository"] = json!({"full_name": full});
        body["sender"] = json!({"login": self.login});
        for (url, secret) in self.hooks.get(full).cloned().unwrap_or_default() {
            self.outbox.push(Delivery {
                url,
                secret,
                event: event.to_string(),
                body: body.clone(),
            });
        }
    }

    /// The events a successful API write makes.
    fn events_of(&mut self, method: &str, parts: &[&str], answer: &Value) {
        let (full, rest) = match parts {
            ["repos", o, n, rest @ ..] => (format!("{o}/{n}"), rest),
            _ => return,
        };
        if !self.hooks.contains_key(&full) {
            return;
        }
        let pr_event = |action: &str, pull: &Value| {
            json!({"action": action, "number": pull["number"], "pull_request": {
                "number": pull["number"], "merged": pull["merged"], "state": pull["state"],
                "base": {"ref": pull["base"]["ref"]}, "head": {"ref": pull["head"]["ref"]}}})
        };
        match (method, rest) {
            ("POST", ["pulls"]) => self.deliver(&full, "pull_request", pr_event("opened", answer)),
            ("PATCH", ["pulls", _]) => {
                let action = match answer["state"].as_str() {
                    Some("closed") => "closed",
                    _ => "edited",
                };
                self.deliver(&full, "pull_request", pr_event(action, answer));
            }
            ("PUT", ["pulls", num, "merge"]) => {
                let Some(pull) = num
                    .parse::<u64>()
                    .ok()
                    .and_then(|x| self.pull_json(&full, "", x, true).ok())
                else {
                    return;
                };
                let base = pull["base"]["ref"].as_str().unwrap_or("main").to_string();
                self.deliver(
                    &full,
                    "push",
                    json!({"ref": format!("refs/heads/{base}"), "after": answer["sha"]}),
                );
                self.deliver(&full, "pull_request", pr_event("closed", &pull));
            }
            _ => {}
        }
    }

    /// Answer one API request, or `None` if the path is not the forge's.
    pub fn handle(
        &mut self,
        method: &str,
        path: &str,
        query: &str,
        body: &[u8],
        base: &str,
        now: DateTime<Utc>,
    ) -> Option<Result<(u16, Value)>> {
        let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
        let q = |k: &str| query_get(query, k);
        let body = || -> Result<Value> {
            if body.is_empty() {
                return Ok(json!({}));
            }
            serde_json::from_slice(body)
                .map_err(|e| ForgeError::new(400, format!("Problems parsing JSON: {e}")))
        };
        let r = match (method, parts.as_slice()) {
            ("GET", ["repos", o, n]) => self.get_repo(&format!("{o}/{n}"), base).map(|v| (200, v)),
            ("GET", ["repos", o, n, "pulls"]) => self
                .list_pulls(&format!("{o}/{n}"), base, &q)
                .map(|v| (200, v)),
            ("POST", ["repos", o, n, "pulls"]) => body()
                .and_then(|b| self.create_pull(&format!("{o}/{n}"), base, &b, now))
                .map(|v| (201, v)),
            ("GET", ["repos", o, n, "pulls", num]) => num_of(num)
                .and_then(|x| self.pull_json(&format!("{o}/{n}"), base, x, true))
                .map(|v| (200, v)),
            ("PATCH", ["repos", o, n, "pulls", num]) => num_of(num)
                .and_then(|x| {
                    body().and_then(|b| self.update_pull(&format!("{o}/{n}"), base, x, &b, now))
                })
                .map(|v| (200, v)),
            ("GET", ["repos", o, n, "pulls", num, "merge"]) => num_of(num)
                .and_then(|x| self.merged(&format!("{o}/{n}"), x))
                .map(|m| {
                    if m {
                        (204, Value::Null)
                    } else {
                        (404, Value::Null)
                    }
                }),
            ("PUT", ["repos", o, n, "pulls", num, "merge"]) => num_of(num)
                .and_then(|x| body().and_then(|b| self.merge(&format!("{o}/{n}"), x, &b, now)))
                .map(|v| (200, v)),
            ("GET", ["repos", o, n, "issues"]) => self
                .list_issues(&format!("{o}/{n}"), base, &q)
                .map(|v| (200, v)),
            ("POST", ["repos", o, n, "issues"]) => body()
                .and_then(|b| self.create_issue(&format!("{o}/{n}"), base, &b, now))
                .map(|v| (201, v)),
            ("PATCH", ["repos", o, n, "issues", "comments", id]) => num_of(id)
                .and_then(|x| {
                    body().and_then(|b| self.update_comment(&format!("{o}/{n}"), base, x, &b, now))
                })
                .map(|v| (200, v)),
            ("GET", ["repos", o, n, "issues", num]) => num_of(num)
                .and_then(|x| self.issue_json(&format!("{o}/{n}"), base, x))
                .map(|v| (200, v)),
            ("PATCH", ["repos", o, n, "issues", num]) => num_of(num)
                .and_then(|x| {
                    body().and_then(|b| self.update_issue(&format!("{o}/{n}"), base, x, &b, now))
                })
                .map(|v| (200, v)),
            ("GET", ["repos", o, n, "issues", num, "comments"]) => num_of(num)
                .and_then(|x| self.list_comments(&format!("{o}/{n}"), base, x, &q))
                .map(|v| (200, v)),
            ("POST", ["repos", o, n, "issues", num, "comments"]) => num_of(num)
                .and_then(|x| {
                    body().and_then(|b| self.create_comment(&format!("{o}/{n}"), base, x, &b, now))
                })
                .map(|v| (201, v)),
            ("POST", ["repos", o, n, "issues", num, "labels"]) => num_of(num)
                .and_then(|x| {
                    body().and_then(|b| self.add_labels(&format!("{o}/{n}"), base, x, &b, now))
                })
                .map(|v| (200, v)),
            ("GET", ["repos", o, n, "commits", rf, "status"]) => self
                .combined_status(&format!("{o}/{n}"), base, rf)
                .map(|v| (200, v)),
            ("GET", ["repos", o, n, "commits", rf, "check-runs"]) => self
                .check_runs_json(&format!("{o}/{n}"), base, rf)
                .map(|v| (200, v)),
            _ => return None,
        };
        if method != "GET"
            && let Ok((_, v)) = &r
        {
            self.events_of(method, &parts, v);
            self.save();
        }
        Some(r)
    }

    fn get_repo(&self, full: &str, base: &str) -> Result<Value> {
        let r = self.repo(full)?;
        let mut v = repo_json(base, r);
        // GitHub adds what the token may do for an authenticated request (the forge token is
        // the owner's: everything).
        v["permissions"] =
            json!({"admin": true, "maintain": true, "push": true, "triage": true, "pull": true});
        let open = r.issues.values().filter(|i| i.state == "open").count();
        v["open_issues"] = json!(open);
        v["open_issues_count"] = json!(open);
        Ok(v)
    }

    fn sha_of(&self, r: &Repo, rf: &str) -> Option<String> {
        let repo = Repository::open_bare(&r.path).ok()?;
        if let Ok(o) = repo.refname_to_id(&format!("refs/heads/{rf}")) {
            return Some(o.to_string());
        }
        repo.revparse_single(rf).ok().map(|o| o.id().to_string())
    }

    fn list_pulls(
        &self,
        full: &str,
        base: &str,
        q: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Value> {
        let r = self.repo(full)?;
        let state = q("state").unwrap_or_else(|| "open".into());
        let head = q("head").map(|h| h.split_once(':').map(|(_, b)| b.to_string()).unwrap_or(h));
        let base_filter = q("base");
        let mut items: Vec<&Issue> = r
            .issues
            .values()
            .filter(|i| i.pull.is_some())
            .filter(|i| state == "all" || i.state == state)
            .filter(|i| {
                head.as_ref()
                    .is_none_or(|h| i.pull.as_ref().is_some_and(|p| &p.head == h))
            })
            .filter(|i| {
                base_filter
                    .as_ref()
                    .is_none_or(|b| i.pull.as_ref().is_some_and(|p| &p.base == b))
            })
            .collect();
        if q("direction").as_deref() != Some("asc") {
            items.reverse();
        }
        let items = page(items, q);
        items
            .into_iter()
            .map(|i| self.pull_of(r, base, i, false))
            .collect::<Result<Vec<_>>>()
            .map(Value::Array)
    }

    fn create_pull(
        &mut self,
        full: &str,
        base: &str,
        b: &Value,
        now: DateTime<Utc>,
    ) -> Result<Value> {
        let title = b["title"].as_str().unwrap_or("").to_string();
        let head = b["head"].as_str().unwrap_or("");
        let head = head
            .split_once(':')
            .map(|(_, h)| h)
            .unwrap_or(head)
            .to_string();
        let base_branch = b["base"].as_str().unwrap_or("").to_string();
        if title.is_empty() {
            return Err(ForgeError::invalid(
                "PullRequest",
                "title",
                "missing_field",
                None,
            ));
        }
        too_long(b)?;
        let (head_sha, base_sha) = {
            let r = self.repo(full)?;
            let repo = Repository::open_bare(&r.path)?;
            let h = repo
                .refname_to_id(&format!("refs/heads/{head}"))
                .map_err(|_| ForgeError::invalid("PullRequest", "head", "invalid", None))?;
            let bs = repo
                .refname_to_id(&format!("refs/heads/{base_branch}"))
                .map_err(|_| ForgeError::invalid("PullRequest", "base", "invalid", None))?;
            if h == bs || repo.graph_descendant_of(bs, h).unwrap_or(false) {
                return Err(ForgeError::invalid(
                    "PullRequest",
                    "",
                    "custom",
                    Some(format!("No commits between {base_branch} and {head}")),
                ));
            }
            if r.issues.values().any(|i| {
                i.state == "open"
                    && i.pull
                        .as_ref()
                        .is_some_and(|p| p.head == head && p.base == base_branch)
            }) {
                return Err(ForgeError::invalid(
                    "PullRequest",
                    "",
                    "custom",
                    Some(format!(
                        "A pull request already exists for {}:{head}.",
                        r.owner
                    )),
                ));
            }
            (h.to_string(), bs.to_string())
        };
        let pull = Some(Pull {
            head,
            base: base_branch,
            head_sha,
            base_sha,
            merged_at: None,
            merge_commit_sha: None,
            merged_by: None,
        });
        let number = self.new_issue(full, title, b, Vec::new(), pull, now)?;
        self.pull_json(full, base, number, true)
    }

    fn pull_json(&self, full: &str, base: &str, number: u64, full_form: bool) -> Result<Value> {
        let r = self.repo(full)?;
        let i = r
            .issues
            .get(&number)
            .filter(|i| i.pull.is_some())
            .ok_or_else(ForgeError::not_found)?;
        self.pull_of(r, base, i, full_form)
    }

    fn pull_of(&self, r: &Repo, base: &str, i: &Issue, full_form: bool) -> Result<Value> {
        let p = i.pull.as_ref().ok_or_else(ForgeError::not_found)?;
        let api = format!("{base}/repos/{}/{}", r.owner, r.name);
        let html = format!("https://github.com/{}/{}", r.owner, r.name);
        let n = i.number;
        // A live head/base follows the branches while the PR is open.
        let (head_sha, base_sha) = if i.state == "open" {
            (
                self.sha_of(r, &p.head).unwrap_or(p.head_sha.clone()),
                self.sha_of(r, &p.base).unwrap_or(p.base_sha.clone()),
            )
        } else {
            (p.head_sha.clone(), p.base_sha.clone())
        };
        let repo = repo_json(base, r);
        let mut v = json!({
            "url": format!("{api}/pulls/{n}"), "id": i.id, "node_id": format!("PR_{}", i.id),
            "html_url": format!("{html}/pull/{n}"), "diff_url": format!("{html}/pull/{n}.diff"),
            "patch_url": format!("{html}/pull/{n}.patch"), "issue_url": format!("{api}/issues/{n}"),
            "commits_url": format!("{api}/pulls/{n}/commits"), "review_comments_url": format!("{api}/pulls/{n}/comments"),
            "review_comment_url": format!("{api}/pulls/comments{{/number}}"), "comments_url": format!("{api}/issues/{n}/comments"),
            "statuses_url": format!("{api}/statuses/{head_sha}"), "number": n, "state": i.state, "locked": false,
            "title": i.title, "user": user(base, &i.user), "body": i.body,
            "labels": i.labels.iter().map(|l| label_json(base, r, l)).collect::<Vec<_>>(),
            "milestone": null_v(), "active_lock_reason": null_v(),
            "created_at": ts(i.created_at), "updated_at": ts(i.updated_at), "closed_at": i.closed_at.map(ts),
            "merged_at": p.merged_at.map(ts), "merge_commit_sha": p.merge_commit_sha,
            "assignee": null_v(), "assignees": [], "requested_reviewers": [], "requested_teams": [],
            "author_association": "OWNER", "auto_merge": null_v(), "draft": false,
        });
        v["head"] = json!({"label": format!("{}:{}", r.owner, p.head), "ref": p.head, "sha": head_sha, "user": user(base, &r.owner), "repo": repo.clone()});
        v["base"] = json!({"label": format!("{}:{}", r.owner, p.base), "ref": p.base, "sha": base_sha, "user": user(base, &r.owner), "repo": repo});
        let link = |h: String| json!({"href": h});
        v["_links"] = json!({
            "self": link(format!("{api}/pulls/{n}")), "html": link(format!("{html}/pull/{n}")),
            "issue": link(format!("{api}/issues/{n}")), "comments": link(format!("{api}/issues/{n}/comments")),
            "review_comments": link(format!("{api}/pulls/{n}/comments")), "review_comment": link(format!("{api}/pulls/comments{{/number}}")),
            "commits": link(format!("{api}/pulls/{n}/commits")), "statuses": link(format!("{api}/statuses/{head_sha}")),
        });
        if full_form {
            let (mergeable, stats) = self.merge_info(r, &p.base, &p.head, i.state == "open");
            v["merged"] = json!(p.merged_at.is_some());
            v["mergeable"] = mergeable.map_or(Value::Null, Value::Bool);
            v["rebaseable"] = mergeable.map_or(Value::Null, Value::Bool);
            v["mergeable_state"] = json!(match mergeable {
                Some(true) => "clean",
                Some(false) => "dirty",
                None => "unknown",
            });
            v["merged_by"] = p.merged_by.as_ref().map_or(Value::Null, |u| user(base, u));
            v["comments"] = json!(r.comments.iter().filter(|c| c.issue == n).count());
            v["review_comments"] = json!(0);
            v["maintainer_can_modify"] = json!(false);
            v["commits"] = json!(stats.0);
            v["additions"] = json!(stats.1);
            v["deletions"] = json!(stats.2);
            v["changed_files"] = json!(stats.3);
        }
        Ok(v)
    }

    /// Whether `head` merges cleanly into `base`, and (commits, additions, deletions, files).
    fn merge_info(
        &self,
        r: &Repo,
        base: &str,
        head: &str,
        open: bool,
    ) -> (Option<bool>, (usize, usize, usize, usize)) {
        let f = || -> Result<(Option<bool>, MergeStats)> {
            let repo = Repository::open_bare(&r.path)?;
            let b = repo
                .find_reference(&format!("refs/heads/{base}"))?
                .peel_to_commit()?;
            let h = repo
                .find_reference(&format!("refs/heads/{head}"))?
                .peel_to_commit()?;
            let mb = repo.merge_base(b.id(), h.id())?;
            let mut walk = repo.revwalk()?;
            walk.push(h.id())?;
            walk.hide(mb)?;
            let commits = walk.count();
            let diff = repo.diff_tree_to_tree(
                Some(&repo.find_commit(mb)?.tree()?),
                Some(&h.tree()?),
                None,
            )?;
            let st = diff.stats()?;
            let mergeable = if open {
                Some(!repo.merge_commits(&b, &h, None)?.has_conflicts())
            } else {
                None
            };
            Ok((
                mergeable,
                (commits, st.insertions(), st.deletions(), st.files_changed()),
            ))
        };
        f().unwrap_or((None, (0, 0, 0, 0)))
    }

    fn update_pull(
        &mut self,
        full: &str,
        base: &str,
        n: u64,
        b: &Value,
        now: DateTime<Utc>,
    ) -> Result<Value> {
        too_long(b)?;
        let r = self.repo_mut(full)?;
        let i = r
            .issues
            .get_mut(&n)
            .filter(|i| i.pull.is_some())
            .ok_or_else(ForgeError::not_found)?;
        if let Some(t) = b["title"].as_str() {
            i.title = t.to_string();
        }
        if b.get("body").is_some() {
            i.body = b["body"].as_str().map(str::to_string);
        }
        if let Some(s) = b["state"].as_str() {
            set_state(i, s, now)?;
        }
        i.updated_at = now;
        self.pull_json(full, base, n, true)
    }

    fn merged(&self, full: &str, n: u64) -> Result<bool> {
        let r = self.repo(full)?;
        let i = r
            .issues
            .get(&n)
            .filter(|i| i.pull.is_some())
            .ok_or_else(ForgeError::not_found)?;
        Ok(i.pull.as_ref().is_some_and(|p| p.merged_at.is_some()))
    }

    /// Merge a pull request with a real merge (two parents) or squash (one) commit.
    fn merge(&mut self, full: &str, n: u64, b: &Value, now: DateTime<Utc>) -> Result<Value> {
        let login = self.login.clone();
        let r = self.repo_mut(full)?;
        let i = r
            .issues
            .get(&n)
            .filter(|i| i.pull.is_some())
            .cloned()
            .ok_or_else(ForgeError::not_found)?;
        let p = i.pull.clone().ok_or_else(ForgeError::not_found)?;
        if i.state != "open" {
            return Err(ForgeError::new(405, "Pull Request is not mergeable"));
        }
        if r.reviews_required.contains(&p.base) {
            return Err(ForgeError::new(
                405,
                "At least 1 approving review is required by reviewers with write access.",
            ));
        }
        let repo = Repository::open_bare(&r.path)?;
        let base_ref = format!("refs/heads/{}", p.base);
        let bc = repo.find_reference(&base_ref)?.peel_to_commit()?;
        let hc = repo
            .find_reference(&format!("refs/heads/{}", p.head))?
            .peel_to_commit()?;
        if let Some(want) = b["sha"].as_str()
            && want != hc.id().to_string()
        {
            return Err(ForgeError::new(
                409,
                "Head branch was modified. Review and try the merge again.",
            ));
        }
        let mut index = repo.merge_commits(&bc, &hc, None)?;
        if index.has_conflicts() {
            return Err(ForgeError::new(405, "Pull Request is not mergeable"));
        }
        let tree = repo.find_tree(index.write_tree_to(&repo)?)?;
        let s = sig(&login)?;
        let method = b["merge_method"].as_str().unwrap_or("merge");
        let title = b["commit_title"].as_str().map(str::to_string);
        let message = b["commit_message"].as_str().map(str::to_string);
        let oid: Oid = match method {
            "merge" => {
                let t = title.unwrap_or_else(|| {
                    format!("Merge pull request #{n} from {}/{}", r.owner, p.head)
                });
                let m = format!("{t}\n\n{}", message.unwrap_or(i.title.clone()));
                repo.commit(Some(&base_ref), &s, &s, &m, &tree, &[&bc, &hc])?
            }
            "squash" | "rebase" => {
                let t = title.unwrap_or_else(|| format!("{} (#{n})", i.title));
                let m = match message {
                    Some(m) if !m.is_empty() => format!("{t}\n\n{m}"),
                    _ => t,
                };
                repo.commit(Some(&base_ref), &s, &s, &m, &tree, &[&bc])?
            }
            other => {
                return Err(ForgeError::invalid(
                    "PullRequest",
                    "merge_method",
                    "invalid",
                    Some(format!("{other:?} is not a merge method")),
                ));
            }
        };
        let i = r.issues.get_mut(&n).ok_or_else(ForgeError::not_found)?;
        i.state = "closed".into();
        i.closed_at = Some(now);
        i.updated_at = now;
        if let Some(p) = i.pull.as_mut() {
            p.merged_at = Some(now);
            p.merge_commit_sha = Some(oid.to_string());
            p.merged_by = Some(login);
            p.head_sha = hc.id().to_string();
            p.base_sha = bc.id().to_string();
        }
        Ok(
            json!({"sha": oid.to_string(), "merged": true, "message": "Pull Request successfully merged"}),
        )
    }

    fn list_issues(
        &self,
        full: &str,
        base: &str,
        q: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Value> {
        let r = self.repo(full)?;
        let state = q("state").unwrap_or_else(|| "open".into());
        let labels: Vec<String> = q("labels")
            .map(|l| {
                l.split(',')
                    .map(|s| s.trim().to_string())
                    .filter(|s| !s.is_empty())
                    .collect()
            })
            .unwrap_or_default();
        let mut items: Vec<&Issue> = r
            .issues
            .values()
            .filter(|i| state == "all" || i.state == state)
            .filter(|i| labels.iter().all(|l| i.labels.contains(l)))
            .collect();
        if q("direction").as_deref() != Some("asc") {
            items.reverse();
        }
        Ok(Value::Array(
            page(items, q)
                .into_iter()
                .map(|i| issue_of(base, r, i))
                .collect(),
        ))
    }

    fn create_issue(
        &mut self,
        full: &str,
        base: &str,
        b: &Value,
        now: DateTime<Utc>,
    ) -> Result<Value> {
        let title = b["title"].as_str().unwrap_or("").to_string();
        if title.is_empty() {
            return Err(ForgeError::invalid("Issue", "title", "missing_field", None));
        }
        let labels = label_names(b.get("labels"));
        for l in &labels {
            self.ensure_label(full, l)?;
        }
        let number = self.new_issue(full, title, b, labels, None, now)?;
        self.issue_json(full, base, number)
    }

    /// Open an issue (a pull request with `pull`) under the next number, shared by both kinds.
    fn new_issue(
        &mut self,
        full: &str,
        title: String,
        b: &Value,
        labels: Vec<String>,
        pull: Option<Pull>,
        now: DateTime<Utc>,
    ) -> Result<u64> {
        let id = self.id();
        let login = self.login.clone();
        let r = self.repo_mut(full)?;
        let number = r.issues.keys().next_back().copied().unwrap_or(0) + 1;
        r.issues.insert(
            number,
            Issue {
                number,
                id,
                title,
                body: b["body"].as_str().map(str::to_string),
                state: "open".into(),
                state_reason: None,
                labels,
                user: login,
                created_at: now,
                updated_at: now,
                closed_at: None,
                pull,
            },
        );
        Ok(number)
    }

    fn ensure_label(&mut self, full: &str, name: &str) -> Result<()> {
        if self.repo(full)?.labels.contains_key(name) {
            return Ok(());
        }
        let id = self.id();
        self.repo_mut(full)?.labels.insert(name.to_string(), id);
        Ok(())
    }

    fn issue_json(&self, full: &str, base: &str, n: u64) -> Result<Value> {
        let r = self.repo(full)?;
        let i = r.issues.get(&n).ok_or_else(ForgeError::not_found)?;
        Ok(issue_of(base, r, i))
    }

    fn update_issue(
        &mut self,
        full: &str,
        base: &str,
        n: u64,
        b: &Value,
        now: DateTime<Utc>,
    ) -> Result<Value> {
        let labels = b.get("labels").map(|l| label_names(Some(l)));
        for l in labels.iter().flatten() {
            self.ensure_label(full, l)?;
        }
        let r = self.repo_mut(full)?;
        let i = r.issues.get_mut(&n).ok_or_else(ForgeError::not_found)?;
        if let Some(t) = b["title"].as_str() {
            i.title = t.to_string();
        }
        if b.get("body").is_some() {
            i.body = b["body"].as_str().map(str::to_string);
        }
        if let Some(s) = b["state"].as_str() {
            set_state(i, s, now)?;
            i.state_reason = b["state_reason"].as_str().map(str::to_string);
        }
        if let Some(l) = labels {
            i.labels = l;
        }
        i.updated_at = now;
        self.issue_json(full, base, n)
    }

    fn list_comments(
        &self,
        full: &str,
        base: &str,
        n: u64,
        q: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Value> {
        let r = self.repo(full)?;
        r.issues.get(&n).ok_or_else(ForgeError::not_found)?;
        let items: Vec<&Comment> = r.comments.iter().filter(|c| c.issue == n).collect();
        Ok(Value::Array(
            page(items, q)
                .into_iter()
                .map(|c| comment_json(base, r, c))
                .collect(),
        ))
    }

    fn create_comment(
        &mut self,
        full: &str,
        base: &str,
        n: u64,
        b: &Value,
        now: DateTime<Utc>,
    ) -> Result<Value> {
        let text = comment_body(b)?;
        let id = self.id();
        let login = self.login.clone();
        let r = self.repo_mut(full)?;
        let i = r.issues.get_mut(&n).ok_or_else(ForgeError::not_found)?;
        i.updated_at = now;
        let c = Comment {
            id,
            issue: n,
            body: text,
            user: login,
            created_at: now,
            updated_at: now,
        };
        r.comments.push(c.clone());
        Ok(comment_json(base, r, &c))
    }

    fn update_comment(
        &mut self,
        full: &str,
        base: &str,
        id: u64,
        b: &Value,
        now: DateTime<Utc>,
    ) -> Result<Value> {
        let text = comment_body(b)?;
        let r = self.repo_mut(full)?;
        let c = r
            .comments
            .iter_mut()
            .find(|c| c.id == id)
            .ok_or_else(ForgeError::not_found)?;
        c.body = text;
        c.updated_at = now;
        let c = c.clone();
        Ok(comment_json(base, r, &c))
    }

    fn add_labels(
        &mut self,
        full: &str,
        base: &str,
        n: u64,
        b: &Value,
        now: DateTime<Utc>,
    ) -> Result<Value> {
        let names = match b {
            Value::Array(_) => label_names(Some(b)),
            _ => label_names(b.get("labels")),
        };
        if names.is_empty() {
            return Err(ForgeError::invalid(
                "Label",
                "labels",
                "missing_field",
                None,
            ));
        }
        for l in &names {
            self.ensure_label(full, l)?;
        }
        let r = self.repo_mut(full)?;
        let i = r.issues.get_mut(&n).ok_or_else(ForgeError::not_found)?;
        for l in names {
            if !i.labels.contains(&l) {
                i.labels.push(l);
            }
        }
        i.updated_at = now;
        let labels = i.labels.clone();
        Ok(Value::Array(
            labels.iter().map(|l| label_json(base, r, l)).collect(),
        ))
    }

    fn combined_status(&self, full: &str, base: &str, rf: &str) -> Result<Value> {
        let r = self.repo(full)?;
        let sha = self
            .sha_of(r, rf)
            .ok_or_else(|| ForgeError::new(404, format!("No commit found for SHA: {rf}")))?;
        let api = format!("{base}/repos/{}/{}", r.owner, r.name);
        let list = r.statuses.get(&sha).cloned().unwrap_or_default();
        let state = if list
            .iter()
            .any(|s| s.state == "failure" || s.state == "error")
        {
            "failure"
        } else if !list.is_empty() && list.iter().all(|s| s.state == "success") {
            "success"
        } else {
            "pending"
        };
        let statuses: Vec<Value> = list.iter().map(|s| json!({
            "url": format!("{api}/statuses/{sha}"), "avatar_url": "https://avatars.githubusercontent.com/u/1?v=4",
            "id": s.id, "node_id": format!("SC_{}", s.id), "state": s.state, "description": s.description,
            "target_url": s.target_url, "context": s.context, "created_at": ts(s.at), "updated_at": ts(s.at),
        })).collect();
        let mut min = repo_json(base, r);
        if let Some(m) = min.as_object_mut() {
            m.retain(|k, _| MINIMAL_REPO_KEYS.contains(&k.as_str()));
        }
        Ok(
            json!({"state": state, "statuses": statuses, "sha": sha, "total_count": list.len(),
            "repository": min, "commit_url": format!("{api}/commits/{sha}"), "url": format!("{api}/commits/{sha}/status")}),
        )
    }

    fn check_runs_json(&self, full: &str, base: &str, rf: &str) -> Result<Value> {
        let r = self.repo(full)?;
        let sha = self
            .sha_of(r, rf)
            .ok_or_else(|| ForgeError::new(404, format!("No commit found for SHA: {rf}")))?;
        let api = format!("{base}/repos/{}/{}", r.owner, r.name);
        let runs: Vec<Value> = r.check_runs.get(&sha).cloned().unwrap_or_default().iter().map(|c| json!({
            "id": c.id, "head_sha": sha, "node_id": format!("CR_{}", c.id), "external_id": null_v(),
            "url": format!("{api}/check-runs/{}", c.id), "html_url": format!("https://github.com/{}/{}/runs/{}", r.owner, r.name, c.id),
            "details_url": null_v(), "status": c.status, "conclusion": c.conclusion, "started_at": ts(c.at),
            "completed_at": c.conclusion.as_ref().map(|_| ts(c.at)), "name": c.name, "check_suite": {"id": 1},
            "output": {"title": null_v(), "summary": null_v(), "text": null_v(), "annotations_count": 0, "annotations_url": format!("{api}/check-runs/{}/annotations", c.id)},
            "app": null_v(), "pull_requests": [],
        })).collect();
        Ok(json!({"total_count": runs.len(), "check_runs": runs}))
    }
}

fn comment_body(b: &Value) -> Result<String> {
    match b["body"].as_str() {
        Some(t) if !t.is_empty() => Ok(t.to_string()),
        _ => Err(ForgeError::invalid(
            "IssueComment",
            "body",
            "missing_field",
            None,
        )),
    }
}

fn set_state(i: &mut Issue, s: &str, now: DateTime<Utc>) -> Result<()> {
    match s {
        "open" => {
            if i.pull.as_ref().is_some_and(|p| p.merged_at.is_some()) {
                return Err(ForgeError::invalid(
                    "PullRequest",
                    "state",
                    "invalid",
                    Some("a merged pull request cannot be reopened".into()),
                ));
            }
            i.state = "open".into();
            i.closed_at = None;
        }
        "closed" => {
            if i.state != "closed" {
                i.closed_at = Some(now);
            }
            i.state = "closed".into();
        }
        other => {
            return Err(ForgeError::invalid(
                "Issue",
                "state",
                "invalid",
                Some(format!("{other:?} is not open or closed")),
            ));
        }
    }
    Ok(())
}

fn null_v() -> Value {
    Value::Null
}

fn num_of(s: &str) -> Result<u64> {
    s.parse().map_err(|_| ForgeError::not_found())
}

fn query_get(query: &str, k: &str) -> Option<String> {
    query
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .find(|(a, _)| *a == k)
        .map(|(_, v)| {
            v.replace("%3A", ":")
                .replace("%3a", ":")
                .replace("%2C", ",")
                .replace("%2c", ",")
                .replace("%2F", "/")
                .replace("%2f", "/")
                .replace('+', " ")
        })
}

fn page<T>(items: Vec<T>, q: &dyn Fn(&str) -> Option<String>) -> Vec<T> {
    let per = q("per_page")
        .and_then(|v| v.parse::<usize>().ok())
        .unwrap_or(30)
        .clamp(1, 100);
    let p = q("page")
        .and_then(|v| v.parse::<usize>().ok())
        .unwrap_or(1)
        .max(1);
    items
        .into_iter()
        .skip((p - 1).saturating_mul(per))
        .take(per)
        .collect()
}

fn label_names(v: Option<&Value>) -> Vec<String> {
    v.and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|l| {
            l.as_str()
                .map(str::to_string)
                .or_else(|| l["name"].as_str().map(str::to_string))
        })
        .collect()
}

fn label_json(base: &str, r: &Repo, name: &str) -> Value {
    let id = r.labels.get(name).copied().unwrap_or(0);
    json!({"id": id, "node_id": format!("LA_{id}"), "url": format!("{base}/repos/{}/{}/labels/{}", r.owner, r.name, name.replace('/', "%2F")),
        "name": name, "description": null_v(), "color": "ededed", "default": false})
}

fn issue_of(base: &str, r: &Repo, i: &Issue) -> Value {
    let api = format!("{base}/repos/{}/{}", r.owner, r.name);
    let n = i.number;
    let mut v = json!({
        "id": i.id, "node_id": format!("I_{}", i.id), "url": format!("{api}/issues/{n}"), "repository_url": api,
        "labels_url": format!("{api}/issues/{n}/labels{{/name}}"), "comments_url": format!("{api}/issues/{n}/comments"),
        "events_url": format!("{api}/issues/{n}/events"), "html_url": format!("https://github.com/{}/{}/issues/{n}", r.owner, r.name),
        "number": n, "state": i.state, "state_reason": i.state_reason, "title": i.title, "body": i.body, "user": user(base, &i.user),
        "labels": i.labels.iter().map(|l| label_json(base, r, l)).collect::<Vec<_>>(), "assignee": null_v(), "assignees": [],
        "milestone": null_v(), "locked": false, "active_lock_reason": null_v(),
        "comments": r.comments.iter().filter(|c| c.issue == n).count(),
        "closed_at": i.closed_at.map(ts), "created_at": ts(i.created_at), "updated_at": ts(i.updated_at),
        "author_association": "OWNER",
    });
    if let Some(p) = &i.pull {
        v["pull_request"] = json!({"url": format!("{api}/pulls/{n}"), "html_url": format!("https://github.com/{}/{}/pull/{n}", r.owner, r.name),
            "diff_url": format!("https://github.com/{}/{}/pull/{n}.diff", r.owner, r.name), "patch_url": format!("https://github.com/{}/{}/pull/{n}.patch", r.owner, r.name),
            "merged_at": p.merged_at.map(ts)});
    }
    v
}

fn comment_json(base: &str, r: &Repo, c: &Comment) -> Value {
    let api = format!("{base}/repos/{}/{}", r.owner, r.name);
    json!({"id": c.id, "node_id": format!("IC_{}", c.id), "url": format!("{api}/issues/comments/{}", c.id),
        "html_url": format!("https://github.com/{}/{}/issues/{}#issuecomment-{}", r.owner, r.name, c.issue, c.id),
        "issue_url": format!("{api}/issues/{}", c.issue), "body": c.body, "user": user(base, &c.user),
        "created_at": ts(c.created_at), "updated_at": ts(c.updated_at), "author_association": "OWNER"})
}

/// A `simple-user`.
pub fn user(base: &str, login: &str) -> Value {
    let u = format!("{base}/users/{login}");
    let id = crate::fnv1a(login.as_bytes()) % 1_000_000;
    json!({
        "login": login, "id": id, "node_id": format!("U_{id}"), "avatar_url": format!("https://avatars.githubusercontent.com/u/{id}?v=4"),
        "gravatar_id": "", "url": u, "html_url": format!("https://github.com/{login}"), "followers_url": format!("{u}/followers"),
        "following_url": format!("{u}/following{{/other_user}}"), "gists_url": format!("{u}/gists{{/gist_id}}"),
        "starred_url": format!("{u}/starred{{/owner}}{{/repo}}"), "subscriptions_url": format!("{u}/subscriptions"),
        "organizations_url": format!("{u}/orgs"), "repos_url": format!("{u}/repos"), "events_url": format!("{u}/events{{/privacy}}"),
        "received_events_url": format!("{u}/received_events"), "type": if login.ends_with("bot") { "Bot" } else { "User" }, "site_admin": false,
    })
}

const MINIMAL_REPO_KEYS: &[&str] = &[
    "id",
    "node_id",
    "name",
    "full_name",
    "owner",
    "private",
    "html_url",
    "description",
    "fork",
    "url",
    "archive_url",
    "assignees_url",
    "blobs_url",
    "branches_url",
    "collaborators_url",
    "comments_url",
    "commits_url",
    "compare_url",
    "contents_url",
    "contributors_url",
    "deployments_url",
    "downloads_url",
    "events_url",
    "forks_url",
    "git_commits_url",
    "git_refs_url",
    "git_tags_url",
    "hooks_url",
    "issue_comment_url",
    "issue_events_url",
    "issues_url",
    "keys_url",
    "labels_url",
    "languages_url",
    "merges_url",
    "milestones_url",
    "notifications_url",
    "pulls_url",
    "releases_url",
    "stargazers_url",
    "statuses_url",
    "subscribers_url",
    "subscription_url",
    "tags_url",
    "teams_url",
    "trees_url",
];

/// A `full-repository` (also a valid `repository`); `clone_url` is the bare repository's
/// `file://` URL, `git_url` its smart-HTTP URL on the simulator.
fn repo_json(base: &str, r: &Repo) -> Value {
    let api = format!("{base}/repos/{}/{}", r.owner, r.name);
    let mut v = json!({
        "id": r.id, "node_id": format!("R_{}", r.id), "name": r.name, "full_name": format!("{}/{}", r.owner, r.name),
        "owner": user(base, &r.owner), "private": true, "html_url": format!("https://github.com/{}/{}", r.owner, r.name),
        "description": "A config repository served by the upkeep simulator", "fork": false, "url": api,
        "clone_url": format!("file://{}", r.path.display()), "git_url": format!("{base}/git/{}/{}.git", r.owner, r.name),
        "ssh_url": format!("git@github.com:{}/{}.git", r.owner, r.name), "svn_url": format!("https://github.com/{}/{}", r.owner, r.name),
    });
    let counts = json!({
        "mirror_url": null_v(), "homepage": null_v(), "language": null_v(), "default_branch": r.default_branch,
        "forks": 0, "forks_count": 0, "stargazers_count": 0, "watchers": 0, "watchers_count": 0, "size": 1,
        "open_issues": 0, "open_issues_count": 0, "network_count": 0, "subscribers_count": 1,
        "has_issues": true, "has_projects": false, "has_wiki": false, "has_pages": false, "has_downloads": false,
        "has_discussions": false, "archived": false, "disabled": false, "visibility": "private", "license": null_v(),
        "pushed_at": ts(r.created_at), "created_at": ts(r.created_at), "updated_at": ts(r.created_at),
        "allow_merge_commit": true, "allow_squash_merge": true, "allow_rebase_merge": false,
    });
    if let (Some(m), Value::Object(c)) = (v.as_object_mut(), counts) {
        m.extend(c);
    }
    for (k, suffix) in [
        ("archive_url", "/{archive_format}{/ref}"),
        ("assignees_url", "/assignees{/user}"),
        ("blobs_url", "/git/blobs{/sha}"),
        ("branches_url", "/branches{/branch}"),
        ("collaborators_url", "/collaborators{/collaborator}"),
        ("comments_url", "/comments{/number}"),
        ("commits_url", "/commits{/sha}"),
        ("compare_url", "/compare/{base}...{head}"),
        ("contents_url", "/contents/{+path}"),
        ("contributors_url", "/contributors"),
        ("deployments_url", "/deployments"),
        ("downloads_url", "/downloads"),
        ("events_url", "/events"),
        ("forks_url", "/forks"),
        ("git_commits_url", "/git/commits{/sha}"),
        ("git_refs_url", "/git/refs{/sha}"),
        ("git_tags_url", "/git/tags{/sha}"),
        ("hooks_url", "/hooks"),
        ("issue_comment_url", "/issues/comments{/number}"),
        ("issue_events_url", "/issues/events{/number}"),
        ("issues_url", "/issues{/number}"),
        ("keys_url", "/keys{/key_id}"),
        ("labels_url", "/labels{/name}"),
        ("languages_url", "/languages"),
        ("merges_url", "/merges"),
        ("milestones_url", "/milestones{/number}"),
        (
            "notifications_url",
            "/notifications{?since,all,participating}",
        ),
        ("pulls_url", "/pulls{/number}"),
        ("releases_url", "/releases{/id}"),
        ("stargazers_url", "/stargazers"),
        ("statuses_url", "/statuses/{sha}"),
        ("subscribers_url", "/subscribers"),
        ("subscription_url", "/subscription"),
        ("tags_url", "/tags"),
        ("teams_url", "/teams"),
        ("trees_url", "/git/trees{/sha}"),
    ] {
        v[k] = json!(format!("{api}{suffix}"));
    }
    v
}

fn build_tree(repo: &Repository, dir: &Path, tb: &mut git2::TreeBuilder<'_>) -> Result<Oid> {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .map_err(|e| ForgeError::new(500, format!("{}: {e}", dir.display())))?
        .filter_map(|e| e.ok())
        .collect();
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        let name = e.file_name().to_string_lossy().into_owned();
        if name == ".git" {
            continue;
        }
        let p = e.path();
        if p.is_dir() {
            let mut sub = repo.treebuilder(None)?;
            let oid = build_tree(repo, &p, &mut sub)?;
            tb.insert(&name, oid, 0o040000)?;
        } else {
            let bytes = std::fs::read(&p)
                .map_err(|e| ForgeError::new(500, format!("{}: {e}", p.display())))?;
            let oid = repo.blob(&bytes)?;
            tb.insert(&name, oid, 0o100644)?;
        }
    }
    Ok(tb.write()?)
}

/// A pre-receive hook refusing updates of the branches listed in `upkeep-protected` (used when
/// pushing over the simulator's smart HTTP, like GitHub's branch protection).
fn install_hooks(bare: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let hook = bare.join("hooks").join("pre-receive");
    std::fs::create_dir_all(bare.join("hooks"))?;
    std::fs::write(
        &hook,
        "#!/bin/sh\n# Branch protection of the upkeep simulator.\nstatus=0\nwhile read old new ref; do\n  b=${ref#refs/heads/}\n  if [ -f upkeep-protected ] && grep -qx \"$b\" upkeep-protected; then\n    echo \"error: GH006: Protected branch update failed for $ref.\" >&2\n    status=1\n  fi\ndone\nexit $status\n",
    )?;
    std::fs::set_permissions(&hook, std::fs::Permissions::from_mode(0o755))?;
    // http-backend refuses pushes unless told to take them.
    let cfg = bare.join("config");
    let mut text = std::fs::read_to_string(&cfg)?;
    if !text.contains("receivepack") {
        text.push_str("[http]\n\treceivepack = true\n");
        std::fs::write(&cfg, text)?;
    }
    Ok(())
}
