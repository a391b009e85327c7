//! `upkeep check`: for every component, what exists upstream, what the policies allow next, and
//! the legal path to the newest.
//!
//! [`assess`] is pure (one component's fetched releases, its policy and `now` in, one report row
//! out); [`run`] fetches all components concurrently from any [`Upstream`] and assesses each as
//! soon as its releases arrive, so that only the report rows stay in memory.

use std::collections::HashMap;
use std::sync::Arc;

use chrono::{DateTime, Utc};

use crate::model::{Component, ConfigRepo, Policy, Track};
use crate::report::{CheckReport, ComponentReport, ReleaseReport, Status};
use crate::select::{self, Reason};
use crate::sources::{self, Fetched, Upstream};
use crate::versions::{self, Version};

/// One component's row, from what its source returned.
pub fn assess(
    c: &Component,
    policy: &Policy,
    fetched: Result<&Fetched, &sources::Error>,
    now: DateTime<Utc>,
) -> ComponentReport {
    let mut row = ComponentReport {
        name: c.name.clone(),
        current: c.version.raw().to_string(),
        current_tag: None,
        track: track_label(&c.track),
        status: Status::Failed,
        next: None,
        newest: None,
        path: Vec::new(),
        path_length: 0,
        reason: None,
        held: None,
        source: None,
        channel_latest: None,
        releases_seen: 0,
        rules: policy.rules.clone(),
        time_zone: None,
        minor_steps: match c.path_rule.max_minor_step {
            Some(1) => None,
            None => Some("this component's rule lets a hop skip minors (maxMinorStep: 0)".into()),
            Some(n) => Some(format!(
                "this component's rule lets a hop cross up to {n} minors (maxMinorStep: {n})"
            )),
        },
    };
    let f = match fetched {
        Ok(f) => f,
        Err(e) => {
            row.reason = Some(Reason::SourceFailed {
                source_kind: e.kind().to_string(),
                message: e.to_string(),
            });
            return row;
        }
    };
    row.source = Some(f.source.clone());
    row.current_tag = f
        .find(c.scheme, &c.version)
        .map(|u| u.tag.clone())
        .filter(|t| *t != row.current);
    let (mut releases, skipped) = f.releases_as(c.scheme);
    // As of `now` (`--now`), a release published later does not exist yet.
    releases.retain(|r| r.published_at.is_none_or(|t| t <= now));
    if skipped > 0 {
        tracing::debug!(
            component = c.name,
            skipped,
            "skipped tags that are not versions"
        );
    }
    row.releases_seen = releases.len();
    let channel_latest = match &f.channel_latest {
        Some(l) => match versions::parse(l, c.scheme) {
            Ok(v) => Some(v),
            Err(e) => {
                row.reason = Some(Reason::SourceFailed {
                    source_kind: "channel".into(),
                    message: format!("the channel's latest version is unreadable: {e}"),
                });
                return row;
            }
        },
        None => None,
    };
    row.channel_latest = channel_latest.as_ref().map(Version::to_string);
    let sel = select::select(c, policy, &releases, channel_latest.as_ref(), now);
    row.newest = sel.newest.as_ref().map(Version::to_string);
    row.path = sel.path.iter().map(Version::to_string).collect();
    row.path_length = sel.path.len();
    row.next = sel.next.as_ref().map(|r| {
        let up = f.find(c.scheme, &r.version);
        ReleaseReport {
            version: r.version.raw().to_string(),
            level: sel.level.unwrap_or(versions::Level::Patch),
            published_at: r.published_at,
            age_days: r.published_at.map(|t| (now - t).num_days()),
            prerelease: r.prerelease || r.version.is_prerelease(),
            url: up.and_then(|u| u.url.clone()),
            notes: up.and_then(|u| u.notes.clone()),
        }
    });
    row.status = match (&row.next, &sel.reason) {
        (Some(_), _) => Status::UpdateAvailable,
        (None, Some(Reason::UpToDate)) => Status::UpToDate,
        (None, Some(Reason::BlockedByPath { .. })) => Status::Blocked,
        (None, _) => Status::Held,
    };
    row.reason = sel.reason;
    row.held = sel.held;
    row
}

fn track_label(t: &Track) -> String {
    match t {
        Track::Newest => "newest".into(),
        Track::Channel(c) => format!("channel {c}"),
        Track::Line { major, minor } => format!("line v{major}.{minor}"),
    }
}

/// When each release was published: (component, tag) -> time.
pub type Published = std::collections::BTreeMap<(String, String), DateTime<Utc>>;

/// Fetch and assess every component of `repo`, at most `concurrency` at a time. Rows come back in
/// the order of `versions.yaml`.
pub async fn run<U: Upstream + 'static>(
    upstream: Arc<U>,
    repo: &ConfigRepo,
    now: DateTime<Utc>,
    concurrency: usize,
    origin: &str,
) -> CheckReport {
    run_with_dates(upstream, repo, now, concurrency, origin)
        .await
        .0
}

/// [`run`], and when each release it read was published (for the monthly report).
pub async fn run_with_dates<U: Upstream + 'static>(
    upstream: Arc<U>,
    repo: &ConfigRepo,
    now: DateTime<Utc>,
    concurrency: usize,
    origin: &str,
) -> (CheckReport, Published) {
    let policies: HashMap<String, Policy> = repo
        .components
        .iter()
        .map(|c| (c.name.clone(), repo.policy_for(&c.name)))
        .collect();
    let policies = Arc::new(policies);
    let rows = {
        let policies = policies.clone();
        sources::fetch_each_at(
            upstream,
            &repo.components,
            concurrency,
            Some(now),
            move |c, fetched| {
                let policy = policies.get(&c.name).cloned().unwrap_or_default();
                let dates: Vec<(String, DateTime<Utc>)> = fetched
                    .as_ref()
                    .map(|f| {
                        f.releases
                            .iter()
                            .filter_map(|r| Some((r.tag.clone(), r.published_at?)))
                            .collect()
                    })
                    .unwrap_or_default();
                (assess(c, &policy, fetched.as_ref(), now), dates)
            },
        )
        .await
    };
    let mut published = Published::new();
    let rows: Vec<Option<ComponentReport>> = rows
        .into_iter()
        .zip(&repo.components)
        .map(|(row, c)| {
            row.map(|(r, dates)| {
                for (tag, t) in dates {
                    published.insert((c.name.clone(), tag), t);
                }
                r
            })
        })
        .collect();
    let components: Vec<ComponentReport> = rows
        .into_iter()
        .zip(&repo.components)
        .map(|(row, c)| {
            row.unwrap_or_else(|| {
                let mut r = assess(
                    c,
                    &policies[&c.name],
                    Err(&sources::Error::NoSource {
                        component: c.name.clone(),
                    }),
                    now,
                );
                r.reason = Some(Reason::SourceFailed {
                    source_kind: "internal".into(),
                    message: "the check of this component stopped unexpectedly".into(),
                });
                r
            })
        })
        .collect();
    let components = components
        .into_iter()
        .map(|mut row: ComponentReport| {
            let tz = crate::windows::zone_for(&row.name, &repo.windows);
            if tz != chrono_tz::Tz::UTC {
                row.time_zone = Some(tz.name().to_string());
            }
            row
        })
        .collect();
    (
        CheckReport::new(now, origin, repo.cluster.clone(), components),
        published,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sources::UpstreamRelease;

    #[test]
    fn a_rule_that_lets_hops_skip_minors_is_said() {
        let release = |tag: &str| UpstreamRelease {
            tag: tag.into(),
            published_at: "2026-01-01T00:00:00Z".parse().ok(),
            prerelease: false,
            notes: None,
            url: None,
        };
        let f = Fetched {
            source: "test".into(),
            releases: ["v1.0.0", "v1.1.0", "v1.2.0", "v1.3.0"]
                .map(release)
                .to_vec(),
            channel_latest: None,
        };
        let mut c = crate::rollout::tests::k3s_at("v1.33.4+k3s1");
        c.name = "tool".into();
        c.scheme = crate::versions::Scheme::Semver;
        c.version = crate::versions::parse("v1.0.0", c.scheme).unwrap_or_else(|_| panic!());
        let now = "2026-06-01T00:00:00Z".parse().unwrap_or_default();
        c.path_rule = crate::versions::PathRule::DEFAULT;
        let row = assess(&c, &Policy::default(), Ok(&f), now);
        assert_eq!(
            row.next.as_ref().map(|n| n.version.as_str()),
            Some("v1.1.0")
        );
        assert_eq!(row.minor_steps, None);
        c.path_rule.max_minor_step = None;
        let row = assess(&c, &Policy::default(), Ok(&f), now);
        assert_eq!(
            row.next.as_ref().map(|n| n.version.as_str()),
            Some("v1.3.0")
        );
        let said = crate::report::explain(&row).unwrap_or_default();
        assert!(
            said.ends_with("this component's rule lets a hop skip minors (maxMinorStep: 0)"),
            "{said}"
        );
        c.path_rule.max_minor_step = Some(2);
        let row = assess(&c, &Policy::default(), Ok(&f), now);
        assert_eq!(
            row.next.as_ref().map(|n| n.version.as_str()),
            Some("v1.2.0")
        );
        assert!(
            row.minor_steps
                .is_some_and(|m| m.contains("up to 2 minors"))
        );
    }

    #[test]
    fn releases_after_now_do_not_exist_yet() {
        let at = |t: &str| t.parse::<DateTime<Utc>>().unwrap_or_default();
        let release = |tag: &str, t: &str| UpstreamRelease {
            tag: tag.into(),
            published_at: Some(at(t)),
            prerelease: false,
            notes: None,
            url: None,
        };
        let f = Fetched {
            source: "test".into(),
            releases: vec![
                release("v1.33.5+k3s1", "2026-09-01T00:00:00Z"),
                release("v1.33.6+k3s1", "2026-10-01T00:00:00Z"),
            ],
            channel_latest: None,
        };
        let c = crate::rollout::tests::k3s_at("v1.33.4+k3s1");
        let row = assess(&c, &Policy::default(), Ok(&f), at("2026-09-15T00:00:00Z"));
        assert_eq!(
            row.next.as_ref().map(|n| n.version.as_str()),
            Some("v1.33.5+k3s1")
        );
        assert_eq!(row.newest.as_deref(), Some("v1.33.5+k3s1"));
        assert_eq!(row.releases_seen, 1);
        assert!(row.next.is_some_and(|n| n.age_days.is_some_and(|d| d >= 0)));
    }
}
