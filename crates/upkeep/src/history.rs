//! `upkeep history`: every update upkeep proposed and rolled out, from two records that each
//! survive the loss of the other: the cluster's `UpkeepRollout` objects (when it started and
//! ended, the outcome, the backup, the revert) and the config repository's git log (when
//! versions.yaml changed, by which pull request, and the revert commits). Pure: the callers read
//! both; this joins, filters and renders.

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::gitrepo::VersionChange;

/// What the cluster remembers of one rollout.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RolloutRecord {
    pub name: String,
    pub component: String,
    pub from: String,
    pub to: String,
    pub phase: String,
    pub started_at: Option<DateTime<Utc>>,
    /// When it entered its current phase (its end, once it ended).
    pub phase_since: Option<DateTime<Utc>>,
    pub backup: Option<String>,
    pub revert: Option<String>,
    pub pull_request: Option<u64>,
    pub message: String,
    /// How the soak went (`24 checks over 24h`, `regressed: ...`), once one ran.
    pub soak: Option<String>,
    /// Each node's time upgrading (k3s).
    pub nodes: Vec<NodeTime>,
}

/// How long one node took to upgrade, over every hop.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeTime {
    pub node: String,
    pub seconds: i64,
}

/// One update in the history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Entry {
    pub component: String,
    pub from: String,
    pub to: String,
    /// When versions.yaml changed on the base branch (the merge).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub merged_at: Option<DateTime<Utc>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub commit: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pull_request: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub started_at: Option<DateTime<Utc>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ended_at: Option<DateTime<Utc>>,
    /// Seconds from start to end, once it ended.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub duration_seconds: Option<i64>,
    /// The rollout's phase (`Succeeded`, `Reverted`, ...), or what git alone can tell.
    pub outcome: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub backup: Option<String>,
    /// The revert commit (or revert PR) after a failure.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub revert: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rollout: Option<String>,
    /// How the soak went, once one ran.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub soak: Option<String>,
    /// Each node's time upgrading (k3s).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub nodes: Vec<NodeTime>,
    /// Where the entry comes from: `cluster`, `git`, or `cluster+git`.
    pub source: String,
}

impl Entry {
    /// When it happened, for ordering and `--since`.
    pub fn at(&self) -> Option<DateTime<Utc>> {
        self.started_at.or(self.merged_at)
    }
}

/// The pull request number a merge commit names: `... (#12)` (squash) or `Merge pull request
/// #12 from ...`.
fn pull_number(subject: &str) -> Option<u64> {
    let after = subject.rsplit_once("(#").map(|(_, r)| r).or_else(|| {
        subject
            .strip_prefix("Merge pull request #")
            .map(|r| r.split_once(' ').map_or(r, |(n, _)| n))
    })?;
    after
        .trim_end_matches(')')
        .split(|c: char| !c.is_ascii_digit())
        .next()?
        .parse()
        .ok()
}

/// Join the cluster's rollouts and git's version changes into one history, newest first,
/// since `since` and of `component` when given.
pub fn entries(
    rollouts: &[RolloutRecord],
    changes: &[VersionChange],
    since: DateTime<Utc>,
    component: Option<&str>,
) -> Vec<Entry> {
    let mut out: Vec<Entry> = rollouts
        .iter()
        .map(|r| Entry {
            component: r.component.clone(),
            from: r.from.clone(),
            to: r.to.clone(),
            merged_at: None,
            commit: None,
            pull_request: r.pull_request,
            started_at: r.started_at,
            ended_at: r.phase_since.filter(|_| is_end(&r.phase)),
            duration_seconds: match (r.started_at, r.phase_since) {
                (Some(s), Some(e)) if is_end(&r.phase) => Some((e - s).num_seconds()),
                _ => None,
            },
            outcome: r.phase.clone(),
            backup: r.backup.clone(),
            revert: r.revert.clone(),
            rollout: Some(r.name.clone()),
            soak: r.soak.clone(),
            nodes: r.nodes.clone(),
            source: "cluster".into(),
        })
        .collect();
    for ch in changes.iter().rev() {
        let revert = ch.subject.starts_with("revert(");
        for (c, from, to) in &ch.changes {
            if revert {
                // The revert of `from`: the rollout of `from` says so, or git alone does.
                match out
                    .iter_mut()
                    .rev()
                    .find(|e| e.component == *c && e.to == *from)
                {
                    Some(e) => {
                        e.revert.get_or_insert_with(|| ch.commit.clone());
                        if e.source == "git" {
                            e.outcome = "Reverted".into();
                        }
                    }
                    None => continue,
                }
                continue;
            }
            match out.iter_mut().find(|e| {
                e.component == *c && e.to == *to && e.merged_at.is_none() && e.source == "cluster"
            }) {
                Some(e) => {
                    e.merged_at = Some(ch.at);
                    e.commit = Some(ch.commit.clone());
                    e.pull_request = e.pull_request.or_else(|| pull_number(&ch.subject));
                    e.source = "cluster+git".into();
                }
                None => out.push(Entry {
                    component: c.clone(),
                    from: from.clone(),
                    to: to.clone(),
                    merged_at: Some(ch.at),
                    commit: Some(ch.commit.clone()),
                    pull_request: pull_number(&ch.subject),
                    started_at: None,
                    ended_at: None,
                    duration_seconds: None,
                    outcome: "merged (no rollout record in the cluster)".into(),
                    backup: None,
                    revert: None,
                    rollout: None,
                    soak: None,
                    nodes: Vec::new(),
                    source: "git".into(),
                }),
            }
        }
    }
    out.retain(|e| component.is_none_or(|c| e.component == c) && e.at().is_none_or(|t| t >= since));
    out.sort_by_key(|e| std::cmp::Reverse(e.at()));
    out
}

/// A rollout object that ended, as pruning sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ended {
    pub name: String,
    pub component: String,
    pub to: String,
    pub failed: bool,
    pub acknowledged: bool,
    pub ended_at: Option<DateTime<Utc>>,
}

/// The ended rollouts beyond the newest `keep` that may go once git holds them (not a failure
/// nobody acknowledged).
pub fn beyond(ended: &[Ended], keep: usize) -> Vec<&Ended> {
    let mut sorted: Vec<&Ended> = ended.iter().collect();
    sorted.sort_by_key(|e| std::cmp::Reverse(e.ended_at));
    sorted
        .into_iter()
        .skip(keep)
        .filter(|e| !e.failed || e.acknowledged)
        .collect()
}

/// The ended rollout objects to delete: beyond the newest `keep`, those whose merge git's log
/// holds (so history still lists them); never a failure nobody acknowledged.
pub fn prunable(ended: &[Ended], keep: usize, log: &[VersionChange]) -> Vec<String> {
    beyond(ended, keep)
        .into_iter()
        .filter(|e| {
            log.iter().any(|ch| {
                !ch.subject.starts_with("revert(")
                    && ch
                        .changes
                        .iter()
                        .any(|(c, _, to)| *c == e.component && *to == e.to)
            })
        })
        .map(|e| e.name.clone())
        .collect()
}

/// What the cluster remembers of one `UpkeepRollout` object.
pub fn record_of(obj: &kube::api::DynamicObject) -> RolloutRecord {
    let status = crate::apply::status_of(obj);
    let spec = |k: &str| obj.data["spec"][k].as_str().unwrap_or_default().to_string();
    record_from(
        obj.metadata.name.as_deref().unwrap_or_default(),
        &crate::rollout::RolloutSpec {
            component: spec("component"),
            from: spec("from"),
            to: spec("to"),
            hops: Vec::new(),
            pull_request: obj.data["spec"]["pullRequest"].as_u64(),
            emergency: false,
        },
        &status,
    )
}

/// The record of a rollout read already.
pub fn record_from(
    name: &str,
    spec: &crate::rollout::RolloutSpec,
    status: &crate::rollout::RolloutStatus,
) -> RolloutRecord {
    let status = status.clone();
    RolloutRecord {
        name: name.to_string(),
        component: spec.component.clone(),
        from: spec.from.clone(),
        to: spec.to.clone(),
        phase: format!("{:?}", status.phase),
        started_at: status.started_at,
        phase_since: status.phase_since,
        backup: status.backup,
        revert: status.revert,
        pull_request: spec.pull_request,
        soak: status.soak.as_ref().map(crate::rollout::Soak::result),
        nodes: status
            .nodes
            .iter()
            .filter_map(|n| {
                Some(NodeTime {
                    node: n.name.clone(),
                    seconds: n.upgrade_seconds()?,
                })
            })
            .collect(),
        message: status.message,
    }
}

/// Every rollout the cluster keeps in `namespace` (the thin I/O of `upkeep history`).
pub async fn read_rollouts(
    client: &kube::Client,
    namespace: &str,
) -> Result<Vec<RolloutRecord>, String> {
    let all = crate::apply::rollouts(client, namespace)
        .list(&kube::api::ListParams::default())
        .await
        .map_err(|e| {
            format!(
                "cannot list the rollouts in {namespace}: {}",
                crate::cluster::describe(&e)
            )
        })?;
    Ok(all.items.iter().map(record_of).collect())
}

fn is_end(phase: &str) -> bool {
    matches!(
        phase,
        "Succeeded" | "Reverted" | "RequiresAttention" | "Superseded"
    )
}

fn duration(e: &Entry) -> String {
    e.duration_seconds.map_or("-".into(), seconds)
}

fn seconds(s: i64) -> String {
    if s >= 3600 {
        format!("{}h{:02}m", s / 3600, s % 3600 / 60)
    } else {
        format!("{}m{:02}s", s / 60, s % 60)
    }
}

/// Each node's upgrade time, `server-1 1m40s, agent-1 2m05s`.
fn node_times(e: &Entry) -> String {
    if e.nodes.is_empty() {
        return "-".into();
    }
    e.nodes
        .iter()
        .map(|n| format!("{} {}", n.node, seconds(n.seconds)))
        .collect::<Vec<_>>()
        .join(", ")
}

fn time(t: Option<DateTime<Utc>>, tz: chrono_tz::Tz) -> String {
    t.map_or("-".into(), |t| {
        t.with_timezone(&tz).format("%Y-%m-%d %H:%M").to_string()
    })
}

fn short(s: &Option<String>) -> String {
    s.as_deref()
        .map_or("-".into(), |c| c.chars().take(12).collect())
}

/// The history as an aligned table (times in `tz`).
pub fn table(entries: &[Entry], tz: chrono_tz::Tz) -> String {
    let mut rows: Vec<[String; 10]> = vec![[
        "STARTED".to_string(),
        "COMPONENT".into(),
        "FROM".into(),
        "TO".into(),
        "DURATION".into(),
        "OUTCOME".into(),
        "PR".into(),
        "BACKUP".into(),
        "REVERT".into(),
        "SOAK".into(),
    ]];
    for e in entries {
        rows.push([
            time(e.at(), tz),
            e.component.clone(),
            e.from.clone(),
            e.to.clone(),
            duration(e),
            e.outcome.clone(),
            e.pull_request.map_or("-".into(), |n| format!("#{n}")),
            e.backup.clone().unwrap_or_else(|| "-".into()),
            short(&e.revert),
            e.soak.clone().unwrap_or_else(|| "-".into()),
        ]);
    }
    let widths: Vec<usize> = (0..10)
        .map(|i| rows.iter().map(|r| r[i].chars().count()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for r in &rows {
        let line: Vec<String> = r
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        out.push_str(line.join("  ").trim_end());
        out.push('\n');
    }
    if entries.is_empty() {
        out.push_str("(no updates in this period)\n");
    }
    out
}

/// The history as a Markdown table (for a report or an issue).
pub fn markdown(entries: &[Entry], tz: chrono_tz::Tz) -> String {
    let cell = |s: &str| s.replace('|', "\\|");
    let mut out = String::from(
        "| started | component | from | to | duration | outcome | PR | backup | revert | soak | nodes |\n|---|---|---|---|---|---|---|---|---|---|---|\n",
    );
    for e in entries {
        out.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |\n",
            time(e.at(), tz),
            cell(&e.component),
            cell(&e.from),
            cell(&e.to),
            duration(e),
            cell(&e.outcome),
            e.pull_request.map_or("-".into(), |n| format!("#{n}")),
            cell(e.backup.as_deref().unwrap_or("-")),
            cell(&short(&e.revert)),
            cell(e.soak.as_deref().unwrap_or("-")),
            cell(&node_times(e)),
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> DateTime<Utc> {
        s.parse().unwrap_or_default()
    }

    fn rollout(name: &str, c: &str, from: &str, to: &str, phase: &str) -> RolloutRecord {
        RolloutRecord {
            name: name.into(),
            component: c.into(),
            from: from.into(),
            to: to.into(),
            phase: phase.into(),
            started_at: Some(t("2026-11-21T21:30:00Z")),
            phase_since: Some(t("2026-11-21T21:52:30Z")),
            backup: Some("upkeep-k3s-snap".into()),
            revert: None,
            pull_request: None,
            message: String::new(),
            soak: None,
            nodes: Vec::new(),
        }
    }

    #[test]
    fn only_ended_rollouts_beyond_the_limit_with_their_merge_in_git_are_pruned() {
        let e = |name: &str, to: &str, failed, acknowledged, at: &str| Ended {
            name: name.into(),
            component: "k3s".into(),
            to: to.into(),
            failed,
            acknowledged,
            ended_at: Some(t(at)),
        };
        let ended = [
            e("new", "v3", false, false, "2026-11-21T00:00:00Z"),
            e("old", "v2", false, false, "2026-11-14T00:00:00Z"),
            e("failed", "v1", true, false, "2026-11-07T00:00:00Z"),
            e("seen", "v0", true, true, "2026-11-01T00:00:00Z"),
            e("unknown", "v9", false, false, "2026-10-01T00:00:00Z"),
        ];
        let log = [
            change("2026-11-20T00:00:00Z", "update (#3)", "k3s", "v2", "v3"),
            change("2026-11-13T00:00:00Z", "update (#2)", "k3s", "v1", "v2"),
            change("2026-11-06T00:00:00Z", "update (#1)", "k3s", "v0", "v1"),
            change("2026-10-30T00:00:00Z", "update (#0)", "k3s", "vx", "v0"),
            change(
                "2026-10-01T00:00:00Z",
                "revert(k3s): v9 failed",
                "k3s",
                "v8",
                "v9",
            ),
        ];
        // The newest stays; a failure nobody acknowledged stays; one git does not know stays.
        assert_eq!(prunable(&ended, 1, &log), ["old", "seen"]);
        assert!(prunable(&ended, 5, &log).is_empty());
    }

    fn change(at: &str, subject: &str, c: &str, from: &str, to: &str) -> VersionChange {
        VersionChange {
            commit: format!("c0ffee{}", subject.len()),
            at: t(at),
            subject: subject.into(),
            changes: vec![(c.into(), from.into(), to.into())],
        }
    }

    #[test]
    fn the_cluster_and_git_join_and_each_survives_the_loss_of_the_other() {
        let since = t("2026-11-01T00:00:00Z");
        let rollouts = [
            rollout(
                "k3s-v1.33.5-k3s1",
                "k3s",
                "v1.33.4+k3s1",
                "v1.33.5+k3s1",
                "Succeeded",
            ),
            rollout(
                "longhorn-v1.10.2",
                "longhorn",
                "v1.9.1",
                "v1.10.2",
                "RequiresAttention",
            ),
        ];
        let changes = [
            change(
                "2026-11-22T08:00:00Z",
                "revert(longhorn): v1.10.2 failed: degraded",
                "longhorn",
                "v1.10.2",
                "v1.9.1",
            ),
            change(
                "2026-11-21T20:00:00Z",
                "longhorn: v1.9.1 -> v1.10.2 (#4)",
                "longhorn",
                "v1.9.1",
                "v1.10.2",
            ),
            change(
                "2026-11-21T19:00:00Z",
                "Merge pull request #3 from homelab/upkeep/k3s-v1.33.5+k3s1",
                "k3s",
                "v1.33.4+k3s1",
                "v1.33.5+k3s1",
            ),
            change(
                "2026-11-02T10:00:00Z",
                "flux: v2.6.3 -> v2.6.4 (#1)",
                "flux",
                "v2.6.3",
                "v2.6.4",
            ),
        ];
        let both = entries(&rollouts, &changes, since, None);
        assert_eq!(both.len(), 3);
        let k3s = both.iter().find(|e| e.component == "k3s").expect("k3s");
        assert_eq!(
            (k3s.source.as_str(), k3s.pull_request, k3s.duration_seconds),
            ("cluster+git", Some(3), Some(1350))
        );
        let lh = both
            .iter()
            .find(|e| e.component == "longhorn")
            .expect("longhorn");
        assert_eq!(lh.pull_request, Some(4));
        assert!(lh.revert.is_some(), "{lh:?}");
        let flux = both.iter().find(|e| e.component == "flux").expect("flux");
        assert_eq!(flux.source, "git");
        // The cluster lost: git still tells what changed, and the revert.
        let git_only = entries(&[], &changes, since, None);
        assert_eq!(git_only.len(), 3);
        let lh = git_only
            .iter()
            .find(|e| e.component == "longhorn")
            .expect("lh");
        assert_eq!(lh.outcome, "Reverted");
        // Git lost: the cluster still tells the outcome.
        let cluster_only = entries(&rollouts, &[], since, Some("k3s"));
        assert_eq!(cluster_only.len(), 1);
        assert_eq!(cluster_only[0].outcome, "Succeeded");
        // --since.
        assert_eq!(
            entries(&[], &changes, t("2026-11-10T00:00:00Z"), None).len(),
            2
        );
        let text = table(&both, chrono_tz::Europe::Amsterdam);
        assert!(text.starts_with("STARTED"), "{text}");
        assert!(text.contains("22m30s") && text.contains("#3"), "{text}");
        let md = markdown(&both, chrono_tz::UTC);
        assert!(
            md.contains(
                "| 2026-11-21 21:30 | k3s | v1.33.4+k3s1 | v1.33.5+k3s1 | 22m30s | Succeeded | #3 |"
            ),
            "{md}"
        );
    }

    #[test]
    fn pull_numbers_come_from_merge_and_squash_subjects() {
        assert_eq!(pull_number("k3s: a -> b (#12)"), Some(12));
        assert_eq!(
            pull_number("Merge pull request #7 from o/upkeep/x"),
            Some(7)
        );
        assert_eq!(pull_number("chore(k3s): update to v1"), None);
    }
}
