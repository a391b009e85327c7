//! Proposing updates: one pull request per component update, with a report a reviewer can
//! decide on in a minute, and a dependency-dashboard issue.
//!
//! The decisions are pure: [`proposals`] turns check rows into proposals (branch, title, commit
//! message, body), [`plan`] weighs them against the pull requests that exist and the limits, and
//! [`pr_body`] / [`dashboard`] render markdown from plain structs. [`run_cycle`] is the thin I/O
//! around them: fetch, load, check, plan, push, open or update, and the dashboard.

use std::fmt::Write as _;

use chrono::{DateTime, Utc};

use crate::forge::{Forge, PullRequest};
use crate::model::{ConfigRepo, PullRequestLimits};
use crate::report::{ComponentReport, md_escape};
use crate::versions::{Downgrade, Level};
use crate::windows::{self, Decision, Override};

/// Branches upkeep owns.
pub const BRANCH_PREFIX: &str = "upkeep/";
/// The dashboard issue's label.
pub const DASHBOARD_LABEL: &str = "upkeep/dashboard";
pub const DASHBOARD_TITLE: &str = "upkeep dependency dashboard";
/// Release notes longer than this are cut (with a link to the full notes).
pub const MAX_NOTES: usize = 4_000;

/// How proposals are written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Style {
    /// The conventional-commit type of upkeep's commits (`chore(k3s): update to ...`).
    pub commit_prefix: String,
    /// Labels on every PR; `upkeep/<kind>` (patch, minor, ...) is added to them.
    pub labels: Vec<String>,
}

impl Default for Style {
    fn default() -> Style {
        Style {
            commit_prefix: "chore".into(),
            labels: vec!["upkeep".into()],
        }
    }
}

/// One update to propose.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Proposal {
    pub component: String,
    pub from: String,
    pub to: String,
    pub level: Level,
    pub branch: String,
    pub title: String,
    pub commit_message: String,
    pub labels: Vec<String>,
    pub body: String,
}

/// The branch of an update: `upkeep/<component>-v<version>` with `+` written `-`, the same
/// however the version is spelled (`1.10.2`, `v1.10.2`), so apply finds the PR of a merge.
pub fn branch_name(component: &str, version: &str) -> String {
    let v: String = format!("v{}", version.trim_start_matches('v'))
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' || c == '-' {
                c
            } else {
                '-'
            }
        })
        .collect();
    format!("{BRANCH_PREFIX}{component}-{v}")
}

/// The cluster in the names several clusters of one repository would otherwise share: branches,
/// PR titles, the dashboard and rollouts. None for a config repository's root (one cluster: the
/// names stay as they always were); the cluster directory's `cluster:` from versions.yaml (or
/// the directory's name) when upkeep runs with `--subdir`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Scope(Option<String>);

impl Scope {
    pub fn new(subdir: &str, cluster: Option<&str>) -> Scope {
        let dir = subdir.trim_matches('/');
        if dir.is_empty() {
            return Scope(None);
        }
        let name = cluster
            .filter(|c| !c.trim().is_empty())
            .unwrap_or_else(|| dir.rsplit('/').next().unwrap_or(dir));
        let safe: String = name
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' || c == '.' {
                    c.to_ascii_lowercase()
                } else {
                    '-'
                }
            })
            .collect();
        Scope(Some(safe))
    }

    pub fn name(&self) -> Option<&str> {
        self.0.as_deref()
    }

    /// Where this scope's branches start: `upkeep/` or `upkeep/<cluster>/`.
    pub fn prefix(&self) -> String {
        match &self.0 {
            Some(c) => format!("{BRANCH_PREFIX}{c}/"),
            None => BRANCH_PREFIX.to_string(),
        }
    }

    /// Whether `branch` is one of this scope's (an unscoped root does not own other clusters').
    pub fn owns(&self, branch: &str) -> bool {
        match branch.strip_prefix(&self.prefix()) {
            Some(rest) => self.0.is_some() || !rest.contains('/') || rest.starts_with("revert-"),
            None => false,
        }
    }

    pub fn branch(&self, component: &str, version: &str) -> String {
        let unscoped = branch_name(component, version);
        match &self.0 {
            Some(_) => format!("{}{}", self.prefix(), &unscoped[BRANCH_PREFIX.len()..]),
            None => unscoped,
        }
    }

    pub fn is_branch_of(&self, branch: &str, component: &str) -> bool {
        branch
            .strip_prefix(&self.prefix())
            .and_then(|b| b.strip_prefix(component))
            .and_then(|b| b.strip_prefix('-'))
            .is_some_and(|v| {
                let v = v.strip_prefix('v').unwrap_or(v);
                v.starts_with(|c: char| c.is_ascii_digit())
            })
    }

    /// The component a branch of this scope updates.
    pub fn component_of(&self, branch: &str) -> String {
        branch
            .strip_prefix(&self.prefix())
            .and_then(|b| b.rsplit_once("-v"))
            .map_or(String::new(), |(c, _)| c.to_string())
    }

    /// A PR title: `[cluster] ...` in a scope.
    pub fn title(&self, title: &str) -> String {
        match &self.0 {
            Some(c) => format!("[{c}] {title}"),
            None => title.to_string(),
        }
    }

    /// A PR title without the scope's `[cluster] ` in front.
    pub fn untitled<'a>(&self, title: &'a str) -> &'a str {
        match &self.0 {
            Some(c) => title.strip_prefix(&format!("[{c}] ")).unwrap_or(title),
            None => title,
        }
    }

    pub fn dashboard_label(&self) -> String {
        match &self.0 {
            Some(c) => format!("{DASHBOARD_LABEL}-{c}"),
            None => DASHBOARD_LABEL.to_string(),
        }
    }

    pub fn dashboard_title(&self) -> String {
        match &self.0 {
            Some(c) => format!("{DASHBOARD_TITLE} ({c})"),
            None => DASHBOARD_TITLE.to_string(),
        }
    }

    /// The name of the rollout of `component` to `version` in this scope.
    pub fn rollout(&self, component: &str, version: &str) -> String {
        let unscoped = crate::rollout::rollout_name(component, version);
        match &self.0 {
            Some(c) => format!("{c}-{unscoped}"),
            None => unscoped,
        }
    }
}

#[cfg(test)]
mod scope_tests {
    use super::Scope;

    #[test]
    fn names_carry_the_cluster_only_in_a_cluster_directory() {
        let root = Scope::new("", Some("homelab"));
        assert_eq!(
            root.branch("k3s", "v1.33.5+k3s1"),
            "upkeep/k3s-v1.33.5-k3s1"
        );
        assert_eq!(root.rollout("k3s", "v1.33.5+k3s1"), "k3s-v1.33.5-k3s1");
        let staging = Scope::new("clusters/staging", None);
        assert_eq!(
            staging.branch("k3s", "v1.33.5+k3s1"),
            "upkeep/staging/k3s-v1.33.5-k3s1"
        );
        assert!(staging.is_branch_of("upkeep/staging/k3s-v1.33.5-k3s1", "k3s"));
        assert!(!root.is_branch_of("upkeep/staging/k3s-v1.33.5-k3s1", "k3s"));
        assert!(!root.owns("upkeep/staging/k3s-v1.33.5-k3s1"));
        assert!(!Scope::new("clusters/main", None).owns("upkeep/staging/k3s-v1"));
        assert_eq!(staging.title("k3s: a -> b"), "[staging] k3s: a -> b");
        assert_eq!(staging.untitled("[staging] k3s: a -> b"), "k3s: a -> b");
        assert_eq!(staging.dashboard_label(), "upkeep/dashboard-staging");
        assert_eq!(
            staging.rollout("k3s", "v1.33.5+k3s1"),
            "staging-k3s-v1.33.5-k3s1"
        );
        assert_eq!(
            staging.component_of("upkeep/staging/cert-manager-v1.2.3"),
            "cert-manager"
        );
        assert_eq!(
            Scope::new("clusters/main", Some("Main Cluster")).name(),
            Some("main-cluster")
        );
    }
}

/// What happens after merge, for the PR report: facts about the component and the schedule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AfterMerge {
    /// The next time work on the component may start, in the window's time zone, with the
    /// window's name and length; None when no window covers it (any time).
    pub window: Option<WindowInfo>,
    pub preflight: Vec<String>,
    pub backup: String,
    pub validation: Vec<String>,
    pub on_failure: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WindowInfo {
    pub name: String,
    pub starts: String,
    pub duration: String,
    pub time_zone: String,
    /// Frozen until, when a freeze holds the component.
    pub note: Option<String>,
}

/// The facts of what applying `component` involves (pure; from the component and the policies).
pub fn after_merge(repo: &ConfigRepo, component: &str, now: DateTime<Utc>) -> AfterMerge {
    let downgrade = repo
        .component(component)
        .map_or(Downgrade::Never, |c| c.path_rule.downgrade);
    let decision = windows::decide(
        now,
        component,
        &repo.windows,
        &repo.freezes,
        Override::default(),
    );
    let window = match &decision {
        Decision::AnyTime => None,
        d => {
            let next = match d {
                Decision::Wait { next } => *next,
                // The start of the occurrence that is open (stable while it lasts, so a PR body
                // does not change every minute of a window).
                Decision::InWindow { window, .. } => repo
                    .windows
                    .iter()
                    .find(|w| w.name == *window)
                    .and_then(|w| w.starts_after(now - w.duration).next())
                    .filter(|s| *s <= now)
                    .or(Some(now)),
                Decision::Frozen { until, .. } | Decision::Denied { until, .. } => {
                    windows::next_start(
                        *until,
                        component,
                        &repo.windows,
                        &repo.freezes,
                        Override::default(),
                    )
                }
                _ => None,
            };
            let w = repo
                .windows
                .iter()
                .filter(|w| w.kind == windows::Kind::Allow && w.components.covers(component))
                .find(|w| next.is_some_and(|n| w.is_active(n)))
                .or_else(|| repo.windows.iter().find(|w| w.components.covers(component)));
            w.map(|w| WindowInfo {
                name: w.name.clone(),
                starts: next.map_or("not within a year".into(), |n| windows::show(n, w.tz)),
                duration: humantime(w.duration),
                time_zone: w.tz.to_string(),
                note: match d {
                    Decision::Frozen { freeze, until } => Some(format!(
                        "frozen by {freeze} until {}",
                        windows::show(*until, w.tz)
                    )),
                    _ => None,
                },
            })
        }
    };
    let (preflight, backup, validation) = match component {
        "k3s" => (
            vec![
                "all nodes Ready and none cordoned by someone else".into(),
                "the path from what runs to this version is legal (no minor skip, no downgrade)".into(),
                "the system-upgrade-controller is installed (its Plan CRD is served)".into(),
                "no PodDisruptionBudget with 0 allowed disruptions would block a drain".into(),
            ],
            "an etcd snapshot (`k3s etcd-snapshot save --name upkeep-<rollout>`) when the cluster runs embedded etcd".into(),
            vec![
                "every node Ready and on the target kubelet version (judged by nodes, not Job status)".into(),
                "the upgrade Plans complete".into(),
                "every Kustomization and HelmRelease that was Ready before is Ready".into(),
            ],
        ),
        "longhorn" => (
            vec![
                "no faulted volume (and no degraded one unless policy allows)".into(),
                "the Longhorn HelmRelease is Ready".into(),
                "the path is legal (Longhorn never skips a minor and never goes down)".into(),
            ],
            "a Longhorn SystemBackup when a backup target is set, else a snapshot per volume".into(),
            vec![
                "the HelmRelease Ready on the new chart version".into(),
                "every volume at least as robust as before".into(),
            ],
        ),
        "flux" => (
            vec!["the FluxInstance is Ready".into(), "the path is legal (no lower minor)".into()],
            "none needed: Flux's state lives in git".into(),
            vec![
                "the FluxInstance Ready on the new version".into(),
                "every Kustomization and HelmRelease that was Ready before is Ready".into(),
            ],
        ),
        _ => (
            vec!["the component's HelmRelease is Ready".into()],
            "none".into(),
            vec!["the HelmRelease Ready on the new version".into()],
        ),
    };
    let name = component;
    let on_failure = match downgrade {
        Downgrade::Never => format!(
            "{name} cannot be downgraded: a failure halts the rollout (no further nodes), reverts versions.yaml in git and asks for attention with the facts."
        ),
        Downgrade::WithinMinor => format!(
            "a failure halts, reverts versions.yaml in git and rolls {name} back where it can (patch downgrades work; a lower minor does not)."
        ),
        Downgrade::Allowed => {
            format!("a failure halts, reverts versions.yaml in git and rolls {name} back.")
        }
    };
    AfterMerge {
        window,
        preflight,
        backup,
        validation,
        on_failure,
    }
}

fn humantime(d: chrono::Duration) -> String {
    let m = d.num_minutes();
    match (m / 60, m % 60) {
        (0, m) => format!("{m}m"),
        (h, 0) => format!("{h}h"),
        (h, m) => format!("{h}h{m}m"),
    }
}

/// The markdown of a release's notes, made inert: quoted, HTML brackets escaped, mentions and
/// issue references neutralised ([`inert`]), and cut. `url` is shown only when it is an https
/// link on the source's own host ([`safe_url`]).
fn notes_block(notes: &str, url: Option<&str>) -> String {
    let mut text = notes.trim().to_string();
    let cut = crate::sources::truncate_utf8(&mut text, MAX_NOTES);
    let mut out = String::new();
    for line in text.lines() {
        let line = line.replace('<', "&lt;").replace('>', "&gt;");
        let _ = writeln!(out, "> {}", inert(&line));
    }
    if cut {
        let _ = writeln!(out, ">\n> *(cut; the full notes are at the link below)*");
    }
    if let Some(u) = url {
        let _ = writeln!(out, "\n[Full release notes]({})", u.replace(')', "%29"));
    }
    out
}

/// A line of upstream text that notifies and closes nothing on GitHub: `@user` and
/// `@org/team` mentions and issue references (`#1`, `owner/repo#3`, which after `Fixes` or
/// `Closes` would close an issue of this repository on merge) go into code spans, and a link to
/// anything but `https://` loses its link syntax. Text already in a code span is left alone.
pub fn inert(line: &str) -> String {
    let chars: Vec<char> = line.chars().collect();
    let word = |c: char| c.is_ascii_alphanumeric() || c == '_';
    let handle = |c: char| c.is_ascii_alphanumeric() || "-_/.".contains(c);
    let mut out = String::with_capacity(line.len() + 8);
    let mut in_code = false;
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c == '`' {
            in_code = !in_code;
            out.push(c);
            i += 1;
            continue;
        }
        if in_code {
            out.push(c);
            i += 1;
            continue;
        }
        let prev = i.checked_sub(1).map(|p| chars[p]);
        // @user, @org/team (not a@b.com)
        if c == '@'
            && prev.is_none_or(|p| !word(p))
            && chars.get(i + 1).is_some_and(|n| n.is_ascii_alphanumeric())
        {
            let mut j = i + 1;
            while j < chars.len() && handle(chars[j]) {
                j += 1;
            }
            while j > i + 1 && chars[j - 1] == '.' {
                j -= 1;
            }
            out.push('`');
            out.extend(&chars[i..j]);
            out.push('`');
            i = j;
            continue;
        }
        // #123, owner/repo#123
        if c == '#' && chars.get(i + 1).is_some_and(char::is_ascii_digit) {
            let before: String = out
                .chars()
                .rev()
                .take_while(|p| p.is_ascii_alphanumeric() || "-_./".contains(*p))
                .collect::<Vec<_>>()
                .into_iter()
                .rev()
                .collect();
            let is_repo = before.is_empty() || before.matches('/').count() == 1;
            if is_repo {
                let mut j = i + 1;
                while j < chars.len() && chars[j].is_ascii_digit() {
                    j += 1;
                }
                out.truncate(out.len() - before.len());
                out.push('`');
                out.push_str(&before);
                out.extend(&chars[i..j]);
                out.push('`');
                i = j;
                continue;
            }
        }
        // [text](target): only https targets stay links.
        if c == '(' && prev == Some(']') {
            let rest: String = chars[i + 1..].iter().take(8).collect();
            if !rest.to_ascii_lowercase().starts_with("https://") {
                out.push('\\');
            }
        }
        out.push(c);
        i += 1;
    }
    out
}

/// `url` when it is an https link on the host of `source` (`github:owner/repo`: under
/// `https://github.com/owner/repo/`; a catalog: on github.com; `helm:REPOSITORY#chart`: on the
/// repository's host); else nothing, so no upstream text decides where a reviewer goes.
pub fn safe_url(source: Option<&str>, url: &str) -> Option<String> {
    let host_of = |u: &str| -> Option<String> {
        let rest = u.strip_prefix("https://")?;
        Some(rest.split(['/', '?', '#']).next()?.to_ascii_lowercase())
    };
    let host = host_of(url)?;
    if url.len() > 2_000 || url.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return None;
    }
    let ok = match source {
        Some(s) if s.starts_with("github:") => {
            let repo = s.trim_start_matches("github:");
            url.starts_with(&format!("https://github.com/{repo}/"))
        }
        Some(s) if s.starts_with("helm:") => {
            let repository = s
                .trim_start_matches("helm:")
                .split('#')
                .next()
                .unwrap_or("");
            host_of(repository).is_some_and(|h| h == host)
        }
        _ => host == "github.com",
    };
    ok.then(|| url.to_string())
}

use crate::forge::cut as bounded;
/// GitHub refuses a pull request title over 256 characters and a body over 65,536. The
/// forge client cuts what it sends; proposals are cut the same way first, so that an open PR
/// compares equal to its proposal and is not rewritten on every cycle.
pub use crate::forge::{MAX_BODY, MAX_TITLE};

/// `version` with a leading `v` exactly when `style` has one (versions.yaml's way of writing).
pub fn like(style: &str, version: &str) -> String {
    let bare = version.trim_start_matches('v');
    if style.starts_with('v') {
        format!("v{bare}")
    } else {
        bare.to_string()
    }
}

fn compare_url(source: Option<&str>, from: &str, to: &str) -> Option<String> {
    let repo = source?.strip_prefix("github:")?;
    let e = |v: &str| v.replace('+', "%2B");
    Some(format!(
        "https://github.com/{repo}/compare/{}...{}",
        e(from),
        e(to)
    ))
}

/// The PR report: what changes, why now, the path, the notes, and what happens after merge.
pub fn pr_body(row: &ComponentReport, after: &AfterMerge) -> String {
    let Some(next) = &row.next else {
        return String::new();
    };
    let mut out = String::new();
    let _ = writeln!(
        out,
        "<!-- upkeep:component={} to={} -->",
        row.name, next.version
    );
    let _ = writeln!(
        out,
        "## {}: {} → {}\n",
        md_escape(&row.name),
        md_escape(&row.current),
        md_escape(&next.version)
    );
    let _ = writeln!(out, "| Component | From | To | Kind | Released | Age |");
    let _ = writeln!(out, "|---|---|---|---|---|---|");
    let released = next
        .published_at
        .map_or("unknown".to_string(), |t| t.format("%Y-%m-%d").to_string());
    let age = next
        .age_days
        .map_or("-".to_string(), |d| format!("{d} days"));
    let _ = writeln!(
        out,
        "| {} | {} | {} | {} | {released} | {age} |\n",
        md_escape(&row.name),
        md_escape(&row.current),
        md_escape(&next.version),
        next.level
    );
    // The path runs from what versions.yaml says to the newest; this PR's version is its first
    // hop, or a step before it (a patch of the current line while a minor waits).
    let same = |a: &str, b: &str| a.trim_start_matches('v') == b.trim_start_matches('v');
    let on_path = row.path.first().is_some_and(|f| same(f, &next.version));
    let mut hops: Vec<String> = row
        .path
        .iter()
        .map(|v| format!("`{}`", v.replace('`', "'")))
        .collect();
    if !on_path && !row.path.is_empty() {
        hops.insert(0, format!("`{}`", next.version.replace('`', "'")));
    }
    if hops.len() > 1 {
        let _ = writeln!(
            out,
            "**Upgrade path.** This is hop 1 of {}: {} → {}. Each hop is its own pull request, applied and validated before the next is proposed.\n",
            hops.len(),
            md_escape(&row.current),
            hops.join(" → ")
        );
    }
    if let Some(m) = &row.minor_steps {
        let _ = writeln!(
            out,
            "**Minor steps.** Unlike upkeep's default of one minor per hop, {}.\n",
            md_escape(m)
        );
    }
    if let Some(h) = &row.held {
        let _ = writeln!(
            out,
            "**Why not further now.** {}\n",
            md_escape(&crate::report::reason_text(h, row.time_zone.as_deref()))
        );
    }
    let from_tag = row.current_tag.as_deref().unwrap_or(&row.current);
    if let Some(u) = compare_url(row.source.as_deref(), from_tag, &next.version) {
        let _ = writeln!(
            out,
            "[Compare {} ... {}]({u})\n",
            md_escape(&row.current),
            md_escape(&next.version)
        );
    }
    let _ = writeln!(out, "### Release notes\n");
    let url = next
        .url
        .as_deref()
        .and_then(|u| safe_url(row.source.as_deref(), u));
    match &next.notes {
        Some(n) if !n.trim().is_empty() => out.push_str(&notes_block(n, url.as_deref())),
        _ => {
            let _ = writeln!(
                out,
                "No release notes were published.{}",
                url.as_ref().map_or(String::new(), |u| format!(
                    " [Release]({})",
                    u.replace(')', "%29")
                ))
            );
        }
    }
    let _ = writeln!(out, "\n### What happens after merge\n");
    match &after.window {
        None => {
            let _ = writeln!(
                out,
                "- **When**: no maintenance window covers {}; it is applied on the next cycle after merge.",
                md_escape(&row.name)
            );
        }
        Some(w) => {
            let _ = writeln!(
                out,
                "- **When**: in the next window `{}`: {}, for {}{}.",
                w.name.replace('`', "'"),
                w.starts,
                w.duration,
                w.note
                    .as_ref()
                    .map_or(String::new(), |n| format!("; {}", md_escape(n)))
            );
        }
    }
    let _ = writeln!(out, "- **Preflight**: {}.", after.preflight.join("; "));
    let _ = writeln!(out, "- **Backup**: {}.", after.backup);
    let _ = writeln!(
        out,
        "- **Validation** against the pre-upgrade baseline: {}.",
        after.validation.join("; ")
    );
    let _ = writeln!(out, "- **If it fails**: {}", after.on_failure);
    let _ = writeln!(
        out,
        "\nClosing this pull request without merging means \"not this version\": upkeep will not propose {} again, and proposes a newer version when one appears.",
        md_escape(&next.version)
    );
    out
}

/// Proposals for every row with a next step.
pub fn proposals(
    rows: &[ComponentReport],
    repo: &ConfigRepo,
    style: &Style,
    scope: &Scope,
    now: DateTime<Utc>,
) -> Vec<Proposal> {
    rows.iter()
        .filter_map(|r| {
            let next = r.next.as_ref()?;
            let mut labels = style.labels.clone();
            labels.push(format!("upkeep/{}", next.level));
            // Upstream's tag (build suffixes and all), in versions.yaml's style for the `v`.
            let to = like(&r.current, &next.version);
            Some(Proposal {
                component: r.name.clone(),
                from: r.current.clone(),
                to: to.clone(),
                level: next.level,
                branch: scope.branch(&r.name, &to),
                title: bounded(
                    &scope.title(&format!("{}: {} -> {to}", r.name, r.current)),
                    MAX_TITLE,
                ),
                commit_message: format!("{}({}): update to {to}", style.commit_prefix, r.name),
                labels,
                body: bounded(&pr_body(r, &after_merge(repo, &r.name, now)), MAX_BODY),
            })
        })
        .collect()
}

/// The open pull requests of `component` whose update starts from `version` (read from the title
/// upkeep gave them, `<component>: <from> -> <to>`): they are built on it, and go stale when it is
/// reverted.
pub fn built_on(
    pulls: &[PullRequest],
    component: &crate::model::Component,
    version: &str,
    scope: &Scope,
) -> Vec<u64> {
    let parse = |v: &str| crate::versions::parse(v.trim(), component.scheme).ok();
    let Some(version) = parse(version) else {
        return Vec::new();
    };
    pulls
        .iter()
        .filter(|p| p.is_open() && scope.is_branch_of(&p.head, &component.name))
        .filter(|p| {
            scope
                .untitled(&p.title)
                .strip_prefix(&format!("{}: ", component.name))
                .and_then(|t| t.split_once(" -> "))
                .and_then(|(from, _)| parse(from))
                .is_some_and(|from| from == version)
        })
        .map(|p| p.number)
        .collect()
}

/// What the cluster runs of one component, as last seen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Runs {
    /// The lowest version running (for k3s, the version every node has reached).
    pub version: crate::versions::Version,
    /// The rollout to the desired version, while it has not succeeded: `rollout NAME is PHASE`.
    pub unfinished: Option<String>,
}

/// What the cluster runs, per component it says something of.
pub type Running = std::collections::HashMap<String, Runs>;

/// Hold back the proposals of components whose desired version is not applied yet (it does not
/// run, or its rollout has not succeeded): the next hop is proposed once the current one is
/// applied, since a PR opened while the previous hop is still rolling out would be built on a
/// version that may yet fail and be reverted. `running: None` knows nothing of the cluster
/// (`upkeep propose` alone), and holds nothing.
pub fn hold_until_applied(
    proposals: Vec<Proposal>,
    repo: &ConfigRepo,
    running: Option<&Running>,
) -> (Vec<Proposal>, Vec<Action>) {
    let Some(running) = running else {
        return (proposals, Vec::new());
    };
    let mut go = Vec::new();
    let mut held = Vec::new();
    for p in proposals {
        let why = repo.component(&p.component).and_then(|c| {
            let runs = running.get(&c.name)?;
            if runs.version < c.version {
                Some(format!(
                    "{} {} does not run in the cluster yet (it runs {}): the next update is proposed once it is applied",
                    c.name,
                    c.version.raw(),
                    runs.version.raw()
                ))
            } else {
                runs.unfinished.as_ref().map(|r| {
                    format!(
                        "{} {} is not applied yet ({r}): the next update is proposed once it is",
                        c.name,
                        c.version.raw()
                    )
                })
            }
        });
        match why {
            Some(why) => held.push(Action::Wait { why, proposal: p }),
            None => go.push(p),
        }
    }
    (go, held)
}

/// What to do about one proposal.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "action", rename_all = "camelCase")]
pub enum Action {
    /// Push the branch and open a pull request.
    Open(Proposal),
    /// An open PR exists for this component (at `branch`): bring its branch, title, body and
    /// labels to the proposal (a newer version supersedes in place with one PR per component).
    Refresh {
        number: u64,
        branch: String,
        proposal: Proposal,
    },
    /// Open the new PR, then close `old` with a comment linking it.
    Supersede { old: u64, proposal: Proposal },
    /// Limits hold it until a later cycle.
    Wait { proposal: Proposal, why: String },
    /// Not proposed: `why`.
    Skip { proposal: Proposal, why: String },
}

/// Weigh proposals against the PRs that exist (any state, upkeep's branches) and the limits.
pub fn plan(
    proposals: &[Proposal],
    existing: &[PullRequest],
    limits: &PullRequestLimits,
    scope: &Scope,
    now: DateTime<Utc>,
) -> Vec<Action> {
    let mut open = existing.iter().filter(|p| p.is_open()).count() as u32;
    let mut last_hour = existing
        .iter()
        .filter(|p| {
            p.created_at
                .is_some_and(|t| now - t < chrono::Duration::hours(1))
        })
        .count() as u32;
    let mut out = Vec::new();
    for p in proposals {
        let same = |x: &&PullRequest| x.head == p.branch;
        if let Some(r) = existing.iter().find(|x| same(x) && x.is_rejected()) {
            out.push(Action::Skip {
                proposal: p.clone(),
                why: format!("#{} was closed without merging: not this version", r.number),
            });
            continue;
        }
        if let Some(r) = existing.iter().find(|x| same(x) && x.merged) {
            out.push(Action::Skip {
                proposal: p.clone(),
                why: format!(
                    "#{} was merged; waiting for versions.yaml on the base branch to show it",
                    r.number
                ),
            });
            continue;
        }
        if let Some(r) = existing.iter().find(|x| same(x) && x.is_open()) {
            out.push(Action::Refresh {
                number: r.number,
                branch: r.head.clone(),
                proposal: p.clone(),
            });
            continue;
        }
        let older = existing
            .iter()
            .filter(|x| x.is_open() && scope.is_branch_of(&x.head, &p.component))
            .min_by_key(|x| x.number);
        if let Some(old) = older {
            if limits.one_per_component {
                out.push(Action::Refresh {
                    number: old.number,
                    branch: old.head.clone(),
                    proposal: p.clone(),
                });
            } else if last_hour >= limits.hourly {
                out.push(Action::Wait {
                    proposal: p.clone(),
                    why: format!(
                        "the hourly limit of {} new pull requests is reached",
                        limits.hourly
                    ),
                });
            } else {
                last_hour += 1;
                out.push(Action::Supersede {
                    old: old.number,
                    proposal: p.clone(),
                });
            }
            continue;
        }
        if open >= limits.concurrent {
            out.push(Action::Wait {
                proposal: p.clone(),
                why: format!(
                    "{open} upkeep pull requests are open (limit {})",
                    limits.concurrent
                ),
            });
        } else if last_hour >= limits.hourly {
            out.push(Action::Wait {
                proposal: p.clone(),
                why: format!(
                    "the hourly limit of {} new pull requests is reached",
                    limits.hourly
                ),
            });
        } else {
            open += 1;
            last_hour += 1;
            out.push(Action::Open(p.clone()));
        }
    }
    out
}

/// A box a human ticked on the dependency dashboard, acted on at the next reconcile (as
/// Renovate's dashboard checkboxes are).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
#[serde(tag = "action", content = "target", rename_all = "camelCase")]
pub enum Tick {
    /// Open the PR of this branch now, past the hourly and concurrent limits.
    OpenNow(String),
    /// Try this failed rollout again (`upkeep retry`).
    Retry(String),
    /// Start this rollout now, outside its window (`upkeep apply --emergency`).
    Emergency(String),
}

impl Tick {
    fn marker(&self) -> String {
        let (k, v) = match self {
            Tick::OpenNow(b) => ("open-now", b),
            Tick::Retry(r) => ("retry", r),
            Tick::Emergency(r) => ("emergency", r),
        };
        format!("<!-- upkeep:{k}={v} -->")
    }
}

/// The boxes ticked in a dashboard body (`- [x] <!-- upkeep:KIND=TARGET -->`). Only upkeep's
/// own markers count; a target is a branch or rollout name, nothing else.
pub fn ticked(body: &str) -> Vec<Tick> {
    let mut out: Vec<Tick> = body
        .lines()
        .filter_map(|l| {
            let l = l.trim_start();
            let rest = l
                .strip_prefix("- [x] ")
                .or_else(|| l.strip_prefix("- [X] "))?;
            let inner = rest.strip_prefix("<!-- upkeep:")?.split(" -->").next()?;
            let (kind, target) = inner.split_once('=')?;
            let plain = !target.is_empty()
                && target.len() <= 200
                && target
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_./+".contains(c));
            if !plain {
                return None;
            }
            match kind {
                "open-now" => Some(Tick::OpenNow(target.to_string())),
                "retry" => Some(Tick::Retry(target.to_string())),
                "emergency" => Some(Tick::Emergency(target.to_string())),
                _ => None,
            }
        })
        .collect();
    out.sort();
    out.dedup();
    out
}

/// Open now what a human ticked, past the limits: a proposal that waits only for the hourly or
/// concurrent limit becomes an opening.
pub fn open_ticked(actions: Vec<Action>, ticks: &[Tick]) -> Vec<Action> {
    actions
        .into_iter()
        .map(|a| match a {
            Action::Wait { proposal, .. }
                if ticks.contains(&Tick::OpenNow(proposal.branch.clone())) =>
            {
                Action::Open(proposal)
            }
            a => a,
        })
        .collect()
}

/// What the dashboard shows.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DashboardInput {
    pub rows: Vec<ComponentReport>,
    pub actions: Vec<Action>,
    /// Open PRs by component: (number, title).
    pub open: Vec<(String, u64, String)>,
    /// Per component, when work may next start (text).
    pub windows: Vec<(String, String)>,
    /// Problems worth a human's eye: invalid config, failed sources, failed pushes.
    pub errors: Vec<String>,
    /// Rollouts as the controller last saw them (name, phase, message), for their boxes.
    pub rollouts: Vec<(String, crate::rollout::Phase, String)>,
}

/// The dependency dashboard's body.
pub fn dashboard(d: &DashboardInput) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "<!-- upkeep:dashboard -->");
    let _ = writeln!(
        out,
        "This issue lists what upkeep tracks and what it is doing about it. upkeep edits it; your edits are overwritten, except the boxes you tick, which upkeep acts on at its next cycle and answers in a comment.\n"
    );
    if !d.errors.is_empty() {
        let _ = writeln!(out, "### Errors\n");
        for e in &d.errors {
            let _ = writeln!(out, "- {}", md_escape(e));
        }
        out.push('\n');
    }
    if !d.rows.is_empty() {
        let _ = writeln!(out, "### Components\n");
        let _ = writeln!(
            out,
            "| Component | Desired | Newest | Status | Pull request | Next window |"
        );
        let _ = writeln!(out, "|---|---|---|---|---|---|");
        for r in &d.rows {
            let pr = d
                .open
                .iter()
                .find(|(c, _, _)| *c == r.name)
                .map_or("-".to_string(), |(_, n, _)| format!("#{n}"));
            let win = d
                .windows
                .iter()
                .find(|(c, _)| *c == r.name)
                .map_or("-".to_string(), |(_, w)| md_escape(w));
            let status = match (&r.next, &r.reason) {
                (Some(n), _) => format!("update to {}", n.version),
                (None, Some(reason)) => crate::report::reason_text(reason, r.time_zone.as_deref()),
                (None, None) => "up to date".into(),
            };
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} | {pr} | {win} |",
                md_escape(&r.name),
                md_escape(&r.current),
                md_escape(r.newest.as_deref().unwrap_or("-")),
                md_escape(&status),
            );
        }
        out.push('\n');
    }
    let waiting: Vec<String> = d
        .actions
        .iter()
        .filter_map(|a| match a {
            // Only a limit can be passed by a human; a hop that waits for the one before, not.
            Action::Wait { proposal, why } if why.contains("limit") => Some(format!(
                "- [ ] {} {} → {}: waits ({}); tick to open it now",
                Tick::OpenNow(proposal.branch.clone()).marker(),
                md_escape(&proposal.component),
                md_escape(&proposal.to),
                md_escape(why)
            )),
            Action::Wait { proposal, why } => Some(format!(
                "- {} → {}: waits ({})",
                md_escape(&proposal.component),
                md_escape(&proposal.to),
                md_escape(why)
            )),
            Action::Skip { proposal, why } => Some(format!(
                "- {} → {}: not proposed ({})",
                md_escape(&proposal.component),
                md_escape(&proposal.to),
                md_escape(why)
            )),
            _ => None,
        })
        .collect();
    if !waiting.is_empty() {
        let _ = writeln!(out, "### Waiting\n\n{}\n", waiting.join("\n"));
    }
    let boxes: Vec<String> = d
        .rollouts
        .iter()
        .filter_map(|(name, phase, message)| {
            use crate::rollout::Phase;
            match phase {
                Phase::Failed | Phase::Reverted | Phase::RequiresAttention => Some(format!(
                    "- [ ] {} retry {} ({phase:?}: {})",
                    Tick::Retry(name.clone()).marker(),
                    md_escape(name),
                    md_escape(message)
                )),
                Phase::WaitingForWindow => Some(format!(
                    "- [ ] {} apply {} now, outside its window, as an emergency ({})",
                    Tick::Emergency(name.clone()).marker(),
                    md_escape(name),
                    md_escape(message)
                )),
                _ => None,
            }
        })
        .collect();
    if !boxes.is_empty() {
        let _ = writeln!(
            out,
            "### Rollouts\n\nTick a box: upkeep acts on it at its next reconcile and says so below.\n\n{}\n",
            boxes.join("\n")
        );
    }
    out
}

/// What one cycle did.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Outcome {
    pub opened: Vec<u64>,
    pub updated: Vec<u64>,
    pub closed: Vec<u64>,
    pub pushed: Vec<String>,
    pub waiting: Vec<String>,
    pub skipped: Vec<String>,
    pub errors: Vec<String>,
    pub dashboard: Option<u64>,
    pub invalid: bool,
    /// Boxes ticked on the dashboard that only the cluster can act on (retry, emergency).
    pub ticks: Vec<Tick>,
    /// Branches of merged pull requests deleted this cycle.
    pub deleted: Vec<String>,
}

/// The `upkeep/*` branches whose pull request was merged, as GitHub's "automatically delete
/// head branches" would delete them: only while the branch still points at the PR's head (a
/// commit pushed after the merge is a human's and stays), and never a branch of an open or a
/// closed-unmerged PR (a human may reopen it).
pub fn merged_branches(pulls: &[PullRequest], tip: impl Fn(&str) -> Option<String>) -> Vec<&str> {
    pulls
        .iter()
        .filter(|p| p.merged && p.head.starts_with(BRANCH_PREFIX) && !p.head_sha.is_empty())
        .filter(|p| tip(&p.head).is_some_and(|t| t == p.head_sha))
        .filter(|p| {
            !pulls
                .iter()
                .any(|o| o.head == p.head && o.number != p.number && !o.merged)
        })
        .map(|p| p.head.as_str())
        .collect()
}

/// Where the cycle works.
pub struct Cycle<'a, F: Forge> {
    pub git: &'a crate::gitrepo::GitRepo,
    pub forge: &'a F,
    pub base: String,
    /// The cluster directory inside the repository ("" for its root).
    pub subdir: String,
    /// A scratch directory to check the config repo out into.
    pub scratch: std::path::PathBuf,
    pub style: Style,
    pub author: crate::gitrepo::Author,
    pub dashboard: bool,
    pub dry_run: bool,
    /// What the cluster runs (see [`hold_until_applied`]); `None` when upkeep cannot see it.
    pub running: Option<Running>,
    /// The rollouts as the controller last saw them (name, phase, message): the dashboard gives
    /// them boxes (retry, emergency). Empty outside the controller.
    pub rollouts: Vec<(String, crate::rollout::Phase, String)>,
}

fn rel(subdir: &str, file: &str) -> String {
    let s = subdir.trim_matches('/');
    if s.is_empty() {
        file.to_string()
    } else {
        format!("{s}/{file}")
    }
}

impl<F: Forge> Cycle<'_, F> {
    /// One detection + proposal cycle. `check` turns the loaded config repo into report rows
    /// (live sources, a catalog, or a test's fixture). Errors that stop the cycle are returned;
    /// per-PR failures are collected in the outcome and retried next cycle.
    pub async fn run<C, Fut>(
        &self,
        now: DateTime<Utc>,
        check: C,
    ) -> Result<(Outcome, Vec<Action>), String>
    where
        C: FnOnce(ConfigRepo) -> Fut,
        Fut: std::future::Future<Output = (ConfigRepo, Vec<ComponentReport>)>,
    {
        let mut out = Outcome::default();
        self.git.fetch().map_err(|e| e.to_string())?;
        let tip = self.git.tip(&self.base).map_err(|e| e.to_string())?;
        self.git
            .extract(tip, &self.subdir, &self.scratch)
            .map_err(|e| e.to_string())?;
        let loaded = crate::model::load_repo(&self.scratch, now).map_err(|e| e.to_string())?;
        let Some(repo) = loaded.repo else {
            out.invalid = true;
            out.errors = loaded
                .diagnostics
                .iter()
                .filter(|d| d.is_error())
                .map(|d| {
                    format!(
                        "{} on {} is invalid: {}:{}:{}: {}",
                        rel(&self.subdir, "versions.yaml"),
                        self.base,
                        rel(&self.subdir, &d.file),
                        d.line,
                        d.column,
                        d.message
                    )
                })
                .collect();
            if self.dashboard && !self.dry_run {
                self.update_dashboard(
                    &DashboardInput {
                        errors: out.errors.clone(),
                        ..Default::default()
                    },
                    &mut out,
                    &Scope::new(&self.subdir, None),
                )
                .await;
            }
            return Ok((out, Vec::new()));
        };
        let limits = repo.pull_requests;
        let scope = Scope::new(&self.subdir, repo.cluster.as_deref());
        let (repo, rows) = check(repo).await;
        for r in &rows {
            if let Some(crate::select::Reason::SourceFailed { message, .. }) = &r.reason {
                out.errors
                    .push(format!("{}: the release source failed: {message}", r.name));
            }
        }
        let props = proposals(&rows, &repo, &self.style, &scope, now);
        let (props, held) = hold_until_applied(props, &repo, self.running.as_ref());
        let existing: Vec<PullRequest> = self
            .forge
            .pulls(&scope.prefix())
            .await
            .map_err(|e| e.to_string())?
            .into_iter()
            .filter(|p| scope.owns(&p.head))
            .collect();
        // What a human ticked on the dashboard since the last cycle.
        // The dashboard is read once per cycle: for the boxes, and to update it below.
        let dash = if self.dashboard {
            Some(self.forge.find_issue(&scope.dashboard_label()).await)
        } else {
            None
        };
        let ticks = match &dash {
            Some(Ok(Some(i))) => ticked(&i.body),
            _ => Vec::new(),
        };
        let mut actions = open_ticked(plan(&props, &existing, &limits, &scope, now), &ticks);
        actions.extend(held);
        out.ticks = ticks
            .iter()
            .filter(|t| !matches!(t, Tick::OpenNow(_)))
            .cloned()
            .collect();
        if self.dry_run {
            return Ok((out, actions));
        }
        let versions_path = rel(&self.subdir, "versions.yaml");
        let base_text = self
            .git
            .read_file(tip, &versions_path)
            .map_err(|e| e.to_string())?
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default();
        for a in &actions {
            let r = self
                .act(a, tip, &versions_path, &base_text, &existing, &mut out)
                .await;
            if let Err(e) = r {
                tracing::warn!(error = %e, "a proposal failed; it is retried next cycle");
                out.errors.push(e);
            }
        }
        self.delete_merged_branches(&existing, &mut out);
        if self.dashboard {
            let mut windows_text = Vec::new();
            for r in &rows {
                let a = after_merge(&repo, &r.name, now);
                if let Some(w) = a.window {
                    windows_text.push((r.name.clone(), format!("{} {}", w.name, w.starts)));
                }
            }
            // The list read above, unless this cycle opened, closed or changed a PR.
            let wrote = !(out.opened.is_empty() && out.closed.is_empty() && out.updated.is_empty());
            let listed = if wrote {
                self.forge
                    .pulls(&scope.prefix())
                    .await
                    .map(|ps| ps.into_iter().filter(|p| scope.owns(&p.head)).collect())
            } else {
                Ok(existing)
            };
            let open = listed
                .map(|ps| {
                    ps.into_iter()
                        .filter(|p| p.is_open())
                        .map(|p| (scope.component_of(&p.head), p.number, p.title))
                        .collect()
                })
                .unwrap_or_default();
            let input = DashboardInput {
                open: fix_components(open, &rows),
                rows,
                actions: actions.clone(),
                windows: windows_text,
                errors: out.errors.clone(),
                rollouts: self.rollouts.clone(),
            };
            self.update_dashboard_known(&input, &mut out, dash, &scope)
                .await;
            // Say what was done about each "open now" box, on the dashboard itself.
            if let Some(d) = out.dashboard {
                for t in &ticks {
                    let Tick::OpenNow(branch) = t else { continue };
                    let opened = actions
                        .iter()
                        .any(|a| matches!(a, Action::Open(p) if &p.branch == branch));
                    let said = if opened {
                        format!(
                            "Opened the pull request of `{branch}` past the limits, as ticked on this dashboard."
                        )
                    } else {
                        format!(
                            "The box for `{branch}` was ticked, but it has nothing to open any more (already open, merged, or no longer proposed)."
                        )
                    };
                    if let Err(e) = self.forge.comment(d, &said).await {
                        out.errors.push(format!("the dashboard: {e}"));
                    }
                }
            }
        }
        Ok((out, actions))
    }

    /// The commit a proposal needs on top of `tip`: reuse `existing` when it already is that.
    fn commit_for(
        &self,
        p: &Proposal,
        tip: git2::Oid,
        versions_path: &str,
        base_text: &str,
        existing: Option<git2::Oid>,
    ) -> Result<Option<git2::Oid>, String> {
        let edited =
            crate::gitrepo::set_version(versions_path, base_text, &p.component, &p.from, &p.to)
                .map_err(|e| e.to_string())?;
        if let Some(cur) = existing
            && self.git.parent(cur) == Some(tip)
            && self
                .git
                .read_file(cur, versions_path)
                .ok()
                .flatten()
                .as_deref()
                == Some(edited.as_bytes())
        {
            return Ok(None);
        }
        self.git
            .commit_file(
                tip,
                versions_path,
                edited.as_bytes(),
                &p.commit_message,
                &self.author,
            )
            .map(Some)
            .map_err(|e| e.to_string())
    }

    async fn ensure_branch(
        &self,
        p: &Proposal,
        branch: &str,
        tip: git2::Oid,
        versions_path: &str,
        base_text: &str,
        out: &mut Outcome,
    ) -> Result<(), String> {
        let cur = self.git.remote_branch(branch);
        if let Some(c) = self.commit_for(p, tip, versions_path, base_text, cur)? {
            self.git.push(c, branch, true).map_err(|e| e.to_string())?;
            out.pushed.push(branch.to_string());
        }
        Ok(())
    }

    async fn open(
        &self,
        p: &Proposal,
        tip: git2::Oid,
        versions_path: &str,
        base_text: &str,
        out: &mut Outcome,
    ) -> Result<u64, String> {
        self.ensure_branch(p, &p.branch, tip, versions_path, base_text, out)
            .await?;
        let pr = match self
            .forge
            .create_pull(&p.title, &p.branch, &self.base, &p.body)
            .await
        {
            Ok(pr) => pr,
            Err(e) => {
                // Created by a call whose answer was lost? Then it is there now.
                let again = self
                    .forge
                    .pulls(BRANCH_PREFIX)
                    .await
                    .map_err(|e| e.to_string())?;
                again
                    .into_iter()
                    .find(|x| x.head == p.branch && x.is_open())
                    .ok_or_else(|| format!("{}: {e}", p.title))?
            }
        };
        self.forge
            .add_labels(pr.number, &p.labels)
            .await
            .map_err(|e| e.to_string())?;
        out.opened.push(pr.number);
        Ok(pr.number)
    }

    fn delete_merged_branches(&self, pulls: &[PullRequest], out: &mut Outcome) {
        let tip = |b: &str| self.git.remote_branch(b).map(|o| o.to_string());
        for branch in merged_branches(pulls, tip) {
            match self.git.delete_branch(branch) {
                Ok(()) => {
                    tracing::info!(%branch, "deleted the branch of a merged pull request");
                    out.deleted.push(branch.to_string());
                }
                // Left for the next cycle; nothing depends on it.
                Err(e) => tracing::warn!(%branch, error = %e, "cannot delete a merged branch"),
            }
        }
    }

    async fn act(
        &self,
        a: &Action,
        tip: git2::Oid,
        versions_path: &str,
        base_text: &str,
        existing: &[PullRequest],
        out: &mut Outcome,
    ) -> Result<(), String> {
        match a {
            Action::Open(p) => {
                self.open(p, tip, versions_path, base_text, out).await?;
            }
            Action::Refresh {
                number,
                branch,
                proposal: p,
            } => {
                self.ensure_branch(p, branch, tip, versions_path, base_text, out)
                    .await?;
                let cur = existing.iter().find(|x| x.number == *number);
                let title = (cur.map(|c| c.title.as_str()) != Some(p.title.as_str()))
                    .then_some(p.title.as_str());
                let body = (cur.map(|c| c.body.as_str()) != Some(p.body.as_str()))
                    .then_some(p.body.as_str());
                if title.is_some() || body.is_some() {
                    self.forge
                        .update_pull(*number, title, body, None)
                        .await
                        .map_err(|e| e.to_string())?;
                    out.updated.push(*number);
                }
                let missing: Vec<String> = p
                    .labels
                    .iter()
                    .filter(|l| cur.is_none_or(|c| !c.labels.contains(l)))
                    .cloned()
                    .collect();
                if !missing.is_empty() {
                    self.forge
                        .add_labels(*number, &missing)
                        .await
                        .map_err(|e| e.to_string())?;
                }
            }
            Action::Supersede { old, proposal: p } => {
                let new = self.open(p, tip, versions_path, base_text, out).await?;
                let note = format!("Superseded by #{new} ({} → {}).", p.from, p.to);
                let said = self.forge.comments(*old).await.map_err(|e| e.to_string())?;
                if !said.contains(&note) {
                    self.forge
                        .comment(*old, &note)
                        .await
                        .map_err(|e| e.to_string())?;
                }
                self.forge
                    .update_pull(*old, None, None, Some("closed"))
                    .await
                    .map_err(|e| e.to_string())?;
                out.closed.push(*old);
            }
            Action::Wait { proposal, why } => {
                out.waiting.push(format!("{}: {why}", proposal.title))
            }
            Action::Skip { proposal, why } => {
                out.skipped.push(format!("{}: {why}", proposal.title))
            }
        }
        Ok(())
    }

    async fn update_dashboard(&self, input: &DashboardInput, out: &mut Outcome, scope: &Scope) {
        self.update_dashboard_known(input, out, None, scope).await;
    }

    /// [`update_dashboard`](Self::update_dashboard) with the issue as read earlier in the cycle
    /// (`None`: read it now). A read that failed is not taken for "no dashboard": that would
    /// open a second one.
    async fn update_dashboard_known(
        &self,
        input: &DashboardInput,
        out: &mut Outcome,
        known: Option<crate::forge::Result<Option<crate::forge::Issue>>>,
        scope: &Scope,
    ) {
        let body = dashboard(input);
        let r = async {
            let found = match known {
                Some(Ok(found)) => found,
                _ => self.forge.find_issue(&scope.dashboard_label()).await?,
            };
            match found {
                Some(i) if i.body == body => Ok(i.number),
                Some(i) => self
                    .forge
                    .update_issue(i.number, &body)
                    .await
                    .map(|_| i.number),
                None => self
                    .forge
                    .create_issue(&scope.dashboard_title(), &body, &[scope.dashboard_label()])
                    .await
                    .map(|i| i.number),
            }
        }
        .await;
        match r {
            Ok(n) => out.dashboard = Some(n),
            Err(e) => out.errors.push(format!("the dashboard: {e}")),
        }
    }
}

/// Component names for open PRs, by matching their branch to the rows (names may contain '-').
fn fix_components(
    open: Vec<(String, u64, String)>,
    rows: &[ComponentReport],
) -> Vec<(String, u64, String)> {
    open.into_iter()
        .map(|(c, n, t)| {
            let name = rows
                .iter()
                .map(|r| r.name.as_str())
                .find(|name| t.starts_with(&format!("{name}: ")))
                .map_or(c, str::to_string);
            (name, n, t)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::{ReleaseReport, Status};

    fn example_repo() -> ConfigRepo {
        let repo = crate::model::load_repo(
            &std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/cluster-repo"),
            now(),
        )
        .ok()
        .and_then(|l| l.repo);
        let Some(repo) = repo else {
            panic!("the example repo loads")
        };
        repo
    }

    fn row(name: &str, current: &str, next: Option<&str>) -> ComponentReport {
        ComponentReport {
            name: name.into(),
            current: current.into(),
            current_tag: None,
            track: "newest".into(),
            status: if next.is_some() {
                Status::UpdateAvailable
            } else {
                Status::UpToDate
            },
            next: next.map(|v| ReleaseReport {
                version: v.into(),
                level: Level::Patch,
                published_at: DateTime::parse_from_rfc3339("2026-11-01T10:00:00Z")
                    .ok()
                    .map(|t| t.with_timezone(&Utc)),
                age_days: Some(20),
                prerelease: false,
                url: Some(format!("https://github.com/k3s-io/k3s/releases/tag/{v}")),
                notes: Some(
                    "## Changes\n- Fixes <b>everything</b> | really\n# Not a heading here".into(),
                ),
            }),
            newest: next.map(str::to_string),
            path: next.map(|v| vec![v.to_string()]).unwrap_or_default(),
            path_length: usize::from(next.is_some()),
            reason: None,
            held: None,
            source: Some("github:k3s-io/k3s".into()),
            channel_latest: None,
            releases_seen: 10,
            rules: vec![],
            time_zone: None,
            minor_steps: None,
        }
    }

    fn prop(c: &str, v: &str) -> Proposal {
        Proposal {
            component: c.into(),
            from: "v1".into(),
            to: v.into(),
            level: Level::Patch,
            branch: branch_name(c, v),
            title: format!("{c}: v1 -> {v}"),
            commit_message: String::new(),
            labels: vec!["upkeep".into()],
            body: String::new(),
        }
    }

    #[test]
    fn only_merged_branches_that_still_point_at_the_merged_head_are_deleted() {
        let pulls = [
            pr(1, "upkeep/k3s-v1.33.5+k3s1", "closed", true),
            pr(2, "upkeep/flux-v2.7.0", "closed", true),
            pr(3, "upkeep/longhorn-v1.10.0", "closed", false),
            pr(4, "upkeep/app-v1.0.1", "open", false),
            pr(5, "feature/x", "closed", true),
            pr(6, "upkeep/tool-v2.0.0", "closed", true),
            pr(7, "upkeep/tool-v2.0.0", "open", false),
        ];
        let tip = |b: &str| match b {
            // A human pushed to this one after the merge.
            "upkeep/flux-v2.7.0" => Some("a-later-commit".to_string()),
            b => Some(format!("sha-{b}")),
        };
        assert_eq!(merged_branches(&pulls, tip), ["upkeep/k3s-v1.33.5+k3s1"]);
        assert!(merged_branches(&pulls, |_| None).is_empty(), "already gone");
    }

    fn pr(n: u64, head: &str, state: &str, merged: bool) -> PullRequest {
        PullRequest {
            number: n,
            title: String::new(),
            body: String::new(),
            state: state.into(),
            merged,
            head: head.into(),
            head_sha: format!("sha-{head}"),
            base: "main".into(),
            labels: vec![],
            url: String::new(),
            created_at: DateTime::parse_from_rfc3339("2026-11-01T00:00:00Z")
                .ok()
                .map(|t| t.with_timezone(&Utc)),
        }
    }

    fn now() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2026-11-21T12:00:00Z")
            .map(|t| t.with_timezone(&Utc))
            .unwrap_or_default()
    }

    #[test]
    fn branch_names_are_git_safe() {
        assert_eq!(
            branch_name("k3s", "v1.33.5+k3s1"),
            "upkeep/k3s-v1.33.5-k3s1"
        );
    }

    #[test]
    fn plan_opens_refreshes_supersedes_and_respects_rejections() {
        let limits = PullRequestLimits::default();
        let a = plan(&[prop("k3s", "v2")], &[], &limits, &Scope::default(), now());
        assert!(matches!(&a[..], [Action::Open(_)]));
        // Rerun: the PR exists.
        let a = plan(
            &[prop("k3s", "v2")],
            &[pr(1, "upkeep/k3s-v2", "open", false)],
            &limits,
            &Scope::default(),
            now(),
        );
        assert!(matches!(&a[..], [Action::Refresh { number: 1, .. }]));
        // A newer version: in place with one PR per component, else a new PR closing the old.
        let a = plan(
            &[prop("k3s", "v3")],
            &[pr(1, "upkeep/k3s-v2", "open", false)],
            &limits,
            &Scope::default(),
            now(),
        );
        assert!(
            matches!(&a[..], [Action::Refresh { number: 1, branch, .. }] if branch == "upkeep/k3s-v2")
        );
        let two = PullRequestLimits {
            one_per_component: false,
            ..limits
        };
        let a = plan(
            &[prop("k3s", "v3")],
            &[pr(1, "upkeep/k3s-v2", "open", false)],
            &two,
            &Scope::default(),
            now(),
        );
        assert!(matches!(&a[..], [Action::Supersede { old: 1, .. }]));
        // Closed without merging: never again.
        let a = plan(
            &[prop("k3s", "v2")],
            &[pr(1, "upkeep/k3s-v2", "closed", false)],
            &limits,
            &Scope::default(),
            now(),
        );
        assert!(matches!(&a[..], [Action::Skip { why, .. }] if why.contains("not this version")));
        // ... but a newer version is proposed.
        let a = plan(
            &[prop("k3s", "v3")],
            &[pr(1, "upkeep/k3s-v2", "closed", false)],
            &limits,
            &Scope::default(),
            now(),
        );
        assert!(matches!(&a[..], [Action::Open(_)]));
        // k3s-extra is not k3s.
        let a = plan(
            &[prop("k3s", "v3")],
            &[pr(1, "upkeep/k3s-extra-v2", "open", false)],
            &limits,
            &Scope::default(),
            now(),
        );
        assert!(matches!(&a[..], [Action::Open(_)]), "{a:?}");
    }

    #[test]
    fn a_pr_is_built_on_the_version_its_title_starts_from() {
        let repo = example_repo();
        let Some(k3s) = repo.component("k3s") else {
            panic!()
        };
        let mut a = pr(1, "upkeep/k3s-v1.34.1-k3s1", "open", false);
        a.title = "k3s: v1.33.5+k3s1 -> v1.34.1+k3s1".into();
        let mut closed = a.clone();
        closed.number = 2;
        closed.state = "closed".into();
        let mut other = a.clone();
        other.number = 3;
        other.title = "k3s: v1.33.4+k3s1 -> v1.33.5+k3s1".into();
        let mut extra = a.clone();
        extra.number = 4;
        extra.head = "upkeep/k3s-extra-v1.34.1".into();
        let pulls = [a, closed, other, extra];
        assert_eq!(
            built_on(&pulls, k3s, "v1.33.5+k3s1", &Scope::default()),
            [1]
        );
        assert_eq!(
            built_on(&pulls, k3s, "nonsense", &Scope::default()),
            Vec::<u64>::new()
        );
    }

    #[test]
    fn the_next_hop_waits_until_the_current_one_runs() {
        let repo = example_repo();
        let v = |s: &str, scheme| crate::versions::parse(s, scheme).unwrap_or_else(|_| panic!());
        use crate::versions::Scheme;
        let props = vec![prop("longhorn", "v1.10.2"), prop("k3s", "v1.33.5+k3s1")];
        // Nothing known of the cluster (`upkeep propose` alone): nothing waits.
        let (go, held) = hold_until_applied(props.clone(), &repo, None);
        assert_eq!((go.len(), held.len()), (2, 0));
        // versions.yaml asks for longhorn v1.9.1, the cluster still runs v1.8.2: it waits;
        // k3s runs what is asked, and one the cluster says nothing of is not held either.
        let runs = |version, unfinished: Option<&str>| Runs {
            version,
            unfinished: unfinished.map(str::to_string),
        };
        let mut running = Running::new();
        running.insert("longhorn".into(), runs(v("v1.8.2", Scheme::Semver), None));
        running.insert("k3s".into(), runs(v("v1.33.4+k3s1", Scheme::K3s), None));
        let (go, held) = hold_until_applied(props.clone(), &repo, Some(&running));
        assert_eq!(
            go.iter().map(|p| p.component.as_str()).collect::<Vec<_>>(),
            ["k3s"]
        );
        assert!(
            matches!(&held[..], [Action::Wait { proposal, why }]
                if proposal.component == "longhorn"
                && why.contains("longhorn v1.9.1 does not run in the cluster yet (it runs v1.8.2)")),
            "{held:?}"
        );
        // Running, but its rollout is still validating: it waits.
        running.insert(
            "longhorn".into(),
            runs(
                v("v1.9.1", Scheme::Semver),
                Some("rollout longhorn-v1.9.1 is Validating"),
            ),
        );
        let (_, held) = hold_until_applied(props.clone(), &repo, Some(&running));
        assert!(
            matches!(&held[..], [Action::Wait { why, .. }]
                if why.contains("longhorn v1.9.1 is not applied yet (rollout longhorn-v1.9.1 is Validating)")),
            "{held:?}"
        );
        // Once it runs and its rollout is done (or it runs something newer, which upkeep cannot
        // take back), it is proposed.
        running.insert("longhorn".into(), runs(v("v1.9.1", Scheme::Semver), None));
        assert_eq!(
            hold_until_applied(props.clone(), &repo, Some(&running))
                .0
                .len(),
            2
        );
        running.insert("longhorn".into(), runs(v("v1.10.2", Scheme::Semver), None));
        assert_eq!(hold_until_applied(props, &repo, Some(&running)).0.len(), 2);
    }

    #[test]
    fn ticked_boxes_are_read_from_upkeeps_own_markers_only() {
        let body = "- [x] <!-- upkeep:open-now=upkeep/app-v1.0.1 --> app\n- [ ] <!-- upkeep:retry=k3s-v1 --> no\n  - [X] <!-- upkeep:emergency=k3s-v1.33.5-k3s1 --> yes\n- [x] <!-- upkeep:retry=bad name --> spaces\n- [x] <!-- other:retry=x -->\n- [x] <!-- upkeep:delete=x -->";
        assert_eq!(
            ticked(body),
            [
                Tick::OpenNow("upkeep/app-v1.0.1".into()),
                Tick::Emergency("k3s-v1.33.5-k3s1".into())
            ]
        );
        let waits = vec![Action::Wait {
            proposal: prop("app", "v1.0.1"),
            why: "the hourly limit of 2 new pull requests is reached".into(),
        }];
        let got = open_ticked(waits.clone(), &ticked(body));
        assert!(matches!(&got[..], [Action::Open(_)]), "{got:?}");
        assert_eq!(open_ticked(waits.clone(), &[]), waits);
    }

    #[test]
    fn upstream_text_notifies_and_closes_nothing() {
        assert_eq!(
            inert("thanks @octocat and @fluxcd/maintainers."),
            "thanks `@octocat` and `@fluxcd/maintainers`."
        );
        assert_eq!(
            inert("Fixes #1, Closes #2, resolves owner/repo#3"),
            "Fixes `#1`, Closes `#2`, resolves `owner/repo#3`"
        );
        assert_eq!(
            inert("mail a@b.com about (#12)"),
            "mail a@b.com about (`#12`)"
        );
        assert_eq!(inert("in code `@x #4` stays"), "in code `@x #4` stays");
        assert_eq!(
            inert("[x](javascript:alert(1)) [y](https://ok)"),
            "[x]\\(javascript:alert(1)) [y](https://ok)"
        );
        assert_eq!(inert("## Heading #not-a-ref"), "## Heading #not-a-ref");
        let src = Some("github:k3s-io/k3s");
        assert!(safe_url(src, "https://github.com/k3s-io/k3s/releases/tag/v1").is_some());
        assert!(safe_url(src, "javascript:alert(1)").is_none());
        assert!(safe_url(src, "https://github.com/evil/k3s/releases").is_none());
        assert!(safe_url(src, "http://github.com/k3s-io/k3s/x").is_none());
        assert!(
            safe_url(
                Some("helm:https://charts.longhorn.io#longhorn"),
                "https://charts.longhorn.io/x"
            )
            .is_some()
        );
        assert!(
            safe_url(
                Some("helm:https://charts.longhorn.io#longhorn"),
                "https://evil.example/x"
            )
            .is_none()
        );
        assert_eq!(
            bounded(&"x".repeat(300), MAX_TITLE).chars().count(),
            MAX_TITLE
        );
    }

    #[test]
    fn plan_respects_limits() {
        let limits = PullRequestLimits {
            concurrent: 3,
            hourly: 2,
            one_per_component: true,
        };
        let props: Vec<Proposal> = (0..4).map(|i| prop(&format!("c{i}"), "v2")).collect();
        let a = plan(&props, &[], &limits, &Scope::default(), now());
        let opened = a.iter().filter(|x| matches!(x, Action::Open(_))).count();
        assert_eq!(opened, 2, "two per hour");
        let mut recent = pr(9, "upkeep/other-v1", "open", false);
        recent.created_at = Some(now() - chrono::Duration::minutes(10));
        let existing = vec![
            recent,
            pr(10, "upkeep/x-v1", "open", false),
            pr(11, "upkeep/y-v1", "open", false),
        ];
        let a = plan(&props, &existing, &limits, &Scope::default(), now());
        assert!(a.iter().all(|x| matches!(x, Action::Wait { .. })), "{a:?}");
    }

    #[test]
    fn versions_are_proposed_as_upstream_tags_them_in_versions_yamls_style() {
        let repo = example_repo();
        let mut longhorn = row("longhorn", "1.9.1", Some("v1.10.2"));
        longhorn.current_tag = Some("v1.9.1".into());
        longhorn.source = Some("github:longhorn/longhorn".into());
        let kured = row("kured", "1.23.0", Some("1.24.0"));
        let from_k3s = row("kubernetes", "v1.36.0+k3s1", Some("v1.36.1+k3s1"));
        let p = proposals(
            &[longhorn.clone(), kured, from_k3s],
            &repo,
            &Style::default(),
            &Scope::default(),
            now(),
        );
        let got: Vec<(&str, &str, &str, &str)> = p
            .iter()
            .map(|p| {
                (
                    p.from.as_str(),
                    p.to.as_str(),
                    p.title.as_str(),
                    p.branch.as_str(),
                )
            })
            .collect();
        assert_eq!(
            got,
            vec![
                (
                    "1.9.1",
                    "1.10.2",
                    "longhorn: 1.9.1 -> 1.10.2",
                    "upkeep/longhorn-v1.10.2"
                ),
                (
                    "1.23.0",
                    "1.24.0",
                    "kured: 1.23.0 -> 1.24.0",
                    "upkeep/kured-v1.24.0"
                ),
                (
                    "v1.36.0+k3s1",
                    "v1.36.1+k3s1",
                    "kubernetes: v1.36.0+k3s1 -> v1.36.1+k3s1",
                    "upkeep/kubernetes-v1.36.1-k3s1"
                ),
            ]
        );
        // The one-line edit keeps the file's style; the compare link uses upstream's tags.
        let text = "apiVersion: upkeep.dev/v1alpha1\nkind: DesiredVersions\ncomponents:\n  longhorn:\n    version: 1.9.1\n";
        let edited =
            crate::gitrepo::set_version("versions.yaml", text, "longhorn", &p[0].from, &p[0].to);
        assert_eq!(edited.ok(), Some(text.replace("1.9.1", "1.10.2")));
        assert!(
            p[0].body
                .contains("https://github.com/longhorn/longhorn/compare/v1.9.1...v1.10.2"),
            "{}",
            p[0].body
        );
    }

    #[test]
    fn the_path_in_a_pr_starts_with_the_prs_own_version() {
        let repo = example_repo();
        // A patch of the current line first, while the minors wait.
        let mut r = row("k3s", "v1.33.4+k3s1", Some("v1.33.12+k3s1"));
        r.path = vec!["v1.34.8+k3s1".into(), "v1.35.5+k3s1".into()];
        let body = pr_body(&r, &after_merge(&repo, "k3s", now()));
        assert!(
            body.contains("This is hop 1 of 3: v1.33.4+k3s1 → `v1.33.12+k3s1` → `v1.34.8+k3s1` → `v1.35.5+k3s1`"),
            "{body}"
        );
        // The PR's version is the path's first hop.
        r.next = row("k3s", "v1.33.4+k3s1", Some("v1.34.8+k3s1")).next;
        let body = pr_body(&r, &after_merge(&repo, "k3s", now()));
        assert!(
            body.contains("This is hop 1 of 2: v1.33.4+k3s1 → `v1.34.8+k3s1` → `v1.35.5+k3s1`"),
            "{body}"
        );
    }

    #[test]
    fn a_pr_body_is_the_same_all_through_an_open_window() {
        let repo = example_repo();
        let at = |t: &str| t.parse::<DateTime<Utc>>().unwrap_or_default();
        // Saturday 2026-11-21, 22:30 and 23:45 in Amsterdam: the same window occurrence.
        let a = after_merge(&repo, "k3s", at("2026-11-21T21:30:00Z"));
        let b = after_merge(&repo, "k3s", at("2026-11-21T22:45:00Z"));
        assert_eq!(a, b);
        let r = row("k3s", "v1.33.4+k3s1", Some("v1.33.5+k3s1"));
        assert_eq!(pr_body(&r, &a), pr_body(&r, &b));
    }

    #[test]
    fn the_pr_report() {
        let repo = example_repo();
        let mut r = row("k3s", "v1.33.4+k3s1", Some("v1.33.5+k3s1"));
        r.path = vec!["v1.33.5+k3s1".into(), "v1.34.1+k3s1".into()];
        r.path_length = 2;
        let body = pr_body(&r, &after_merge(&repo, "k3s", now()));
        insta::assert_snapshot!(body);
        assert!(!body.contains("<b>"), "HTML in notes is made inert");
    }

    #[test]
    fn the_dashboard() {
        let rows = vec![
            row("k3s", "v1.33.4+k3s1", Some("v1.33.5+k3s1")),
            row("flux", "v2.6.4", None),
        ];
        let d = DashboardInput {
            rows,
            actions: vec![Action::Wait {
                proposal: prop("longhorn", "v1.10.2"),
                why: "the hourly limit of 2 new pull requests is reached".into(),
            }],
            open: vec![("k3s".into(), 3, "k3s: v1.33.4+k3s1 -> v1.33.5+k3s1".into())],
            windows: vec![(
                "k3s".into(),
                "saturday-night Sat 2026-11-21 22:00 (Europe/Amsterdam)".into(),
            )],
            errors: vec!["cert-manager: the release source failed: 503".into()],
            rollouts: vec![
                (
                    "longhorn-v1.9.2".into(),
                    crate::rollout::Phase::RequiresAttention,
                    "volume pvc-1 degraded".into(),
                ),
                (
                    "k3s-v1.33.5-k3s1".into(),
                    crate::rollout::Phase::WaitingForWindow,
                    "waiting for the next window".into(),
                ),
            ],
        };
        insta::assert_snapshot!(dashboard(&d));
    }
}
