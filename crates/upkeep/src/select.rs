//! Selection: from a component's upstream releases and its policy, what may be proposed next, what
//! the newest reachable version is, the legal path there, and why nothing is proposed when nothing
//! is. Pure: releases and `now` come in as plain data.
//!
//! The next step is the highest release that is one legal hop from the current version, whose
//! level the policy proposes, and that is old enough. Because a hop never skips a minor where the
//! component's rules forbid it, proposing a k3s or Longhorn minor skip is impossible by
//! construction.

use chrono::{DateTime, Duration, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::model::{Component, Pin, Policy, Track};
use crate::versions::{self, Level, Version};

/// One upstream release, as a source reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Release {
    pub version: Version,
    /// When it was published; `None` when the source does not say (it then never passes an age gate).
    pub published_at: Option<DateTime<Utc>>,
    /// Marked as a pre-release upstream (GitHub's flag), whatever its version says.
    pub prerelease: bool,
    pub draft: bool,
}

/// Why nothing is proposed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "reason", rename_all = "camelCase")]
pub enum Reason {
    /// The current version is the newest candidate.
    UpToDate,
    /// Updates are paused by policy.
    Paused,
    /// A pin holds the component; `newest` is what exists beyond it.
    #[serde(rename_all = "camelCase")]
    Pinned { pin: String, newest: String },
    /// A pin or a tracked line that no release matches (`what`: `pin` or `track`).
    #[serde(rename_all = "camelCase")]
    NoSuchLine {
        what: String,
        line: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        newest: Option<String>,
    },
    /// The next legal step is a level the policy does not propose.
    #[serde(rename_all = "camelCase")]
    LevelNotProposed { version: String, level: Level },
    /// The next legal step is younger than the minimum release age.
    #[serde(rename_all = "camelCase")]
    TooYoung {
        version: String,
        published_at: DateTime<Utc>,
        eligible_at: DateTime<Utc>,
    },
    /// The next legal step has no publication time, so it cannot pass an age gate.
    #[serde(rename_all = "camelCase")]
    NoTimestamp { version: String },
    /// Newer versions exist but none is a legal hop from the current one.
    #[serde(rename_all = "camelCase")]
    BlockedByPath { detail: String },
    /// The component's upstream could not be read (set by `check`, never by [`select`]).
    #[serde(rename_all = "camelCase")]
    SourceFailed {
        source_kind: String,
        message: String,
    },
}

/// The outcome for one component.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Selection {
    pub current: Version,
    /// The newest version the component may reach (after track, pin, range and ignore filters).
    pub newest: Option<Version>,
    /// What to propose now, if anything.
    pub next: Option<Release>,
    /// The level of `next` (from `current`).
    pub level: Option<Level>,
    /// The legal hops from `current` to `newest` (ending with `newest`); empty when up to date or
    /// when no path exists.
    pub path: Vec<Version>,
    /// Why nothing is proposed, when `next` is `None`.
    pub reason: Option<Reason>,
    /// When `next` is not the highest legal hop: why that bigger hop waits (e.g. a minor that is
    /// too young while a patch is proposed).
    pub held: Option<Reason>,
}

/// Select for one component. `channel_latest` is the channel's latest version when the component
/// tracks a k3s channel.
pub fn select(
    component: &Component,
    policy: &Policy,
    releases: &[Release],
    channel_latest: Option<&Version>,
    now: DateTime<Utc>,
) -> Selection {
    let current = component.version.clone();
    let cands = candidates(component, policy, releases, channel_latest, true);
    let newest = cands.last().map(|r| r.version.clone());
    let mut sel = Selection {
        current: current.clone(),
        newest: newest.clone(),
        next: None,
        level: None,
        path: Vec::new(),
        reason: None,
        held: None,
    };
    let Some(newest) = newest.filter(|n| *n > current) else {
        sel.reason = Some(
            no_such_line(component, policy, releases)
                .or_else(|| pinned(component, policy, releases, channel_latest))
                .unwrap_or(Reason::UpToDate),
        );
        return sel;
    };
    match versions::plan_path(
        &current,
        &newest,
        cands.iter().map(|r| &r.version),
        &component.path_rule,
    ) {
        Ok(p) => sel.path = p,
        Err(e) => {
            sel.reason = Some(Reason::BlockedByPath {
                detail: e.to_string(),
            })
        }
    }
    if policy.paused {
        sel.reason = Some(Reason::Paused);
        return sel;
    }
    // Legal single hops up from current, highest first.
    let known: Vec<&Version> = cands.iter().map(|r| &r.version).collect();
    let hops: Vec<&Release> = cands
        .iter()
        .rev()
        .filter(|r| {
            r.version > current
                && versions::check_hop_among(&current, &r.version, &component.path_rule, &known)
                    .is_ok()
        })
        .collect();
    let mut first_refusal = None;
    for r in &hops {
        let level = versions::classify(&current, &r.version);
        let verdict = if !policy.propose.contains(&level) {
            Err(Reason::LevelNotProposed {
                version: r.version.to_string(),
                level,
            })
        } else {
            age_gate(r, policy.minimum_release_age.for_level(level), now)
        };
        match verdict {
            Ok(()) => {
                sel.next = Some((*r).clone());
                sel.level = Some(level);
                sel.reason = None;
                sel.held = first_refusal;
                return sel;
            }
            Err(reason) => {
                first_refusal.get_or_insert(reason);
            }
        }
    }
    sel.reason = first_refusal.or(sel.reason).or_else(|| {
        Some(Reason::BlockedByPath {
            detail: format!("no release is a legal step from {current}"),
        })
    });
    sel
}

fn age_gate(r: &Release, min_age: Duration, now: DateTime<Utc>) -> Result<(), Reason> {
    if min_age.is_zero() {
        return Ok(());
    }
    match r.published_at {
        None => Err(Reason::NoTimestamp {
            version: r.version.to_string(),
        }),
        Some(t) if now - t >= min_age => Ok(()),
        Some(t) => Err(Reason::TooYoung {
            version: r.version.to_string(),
            published_at: t,
            eligible_at: t + min_age,
        }),
    }
}

/// A pinned or tracked line that no release belongs to: said, not taken for "up to date".
fn no_such_line(c: &Component, p: &Policy, releases: &[Release]) -> Option<Reason> {
    let newest = releases
        .iter()
        .filter(|r| !r.draft && !r.version.is_dev() && !r.prerelease && !r.version.is_prerelease())
        .map(|r| &r.version)
        .max()
        .map(ToString::to_string);
    let exists =
        |major: u64, minor: u64| releases.iter().any(|r| r.version.line() == (major, minor));
    let (what, major, minor) = match (&c.track, &p.pin) {
        (Track::Line { major, minor }, _) if !exists(*major, *minor) => ("track", *major, *minor),
        (_, Some(Pin::Line { major, minor })) if !exists(*major, *minor) => ("pin", *major, *minor),
        (_, Some(Pin::Exact(v))) if !releases.iter().any(|r| r.version == *v) => {
            return Some(Reason::NoSuchLine {
                what: "pin".into(),
                line: v.to_string(),
                newest,
            });
        }
        _ => return None,
    };
    Some(Reason::NoSuchLine {
        what: what.into(),
        line: format!("v{major}.{minor}"),
        newest,
    })
}

/// When a pin is what keeps the component where it is: the pin and the newest version beyond it.
fn pinned(
    c: &Component,
    p: &Policy,
    releases: &[Release],
    channel_latest: Option<&Version>,
) -> Option<Reason> {
    let pin = p.pin.as_ref()?;
    let newest = candidates(c, p, releases, channel_latest, false)
        .pop()
        .filter(|r| r.version > c.version)?;
    let beyond = match pin {
        Pin::Exact(v) => newest.version > *v,
        Pin::Line { major, minor } => newest.version.line() > (*major, *minor),
    };
    if !beyond {
        return None;
    }
    Some(Reason::Pinned {
        pin: match pin {
            Pin::Exact(v) => v.to_string(),
            Pin::Line { major, minor } => format!("v{major}.{minor}"),
        },
        newest: newest.version.to_string(),
    })
}

/// Releases that may ever be proposed for this component, oldest first, one per version.
fn candidates(
    c: &Component,
    p: &Policy,
    releases: &[Release],
    channel_latest: Option<&Version>,
    apply_pin: bool,
) -> Vec<Release> {
    let mut out: Vec<Release> = releases
        .iter()
        .filter(|r| !r.draft && !r.version.is_dev())
        .filter(|r| p.prerelease || !(r.prerelease || r.version.is_prerelease()))
        .filter(|r| !p.ignore.contains(&r.version))
        .filter(|r| {
            c.allowed
                .as_ref()
                .is_none_or(|a| versions::in_range(&r.version, a))
        })
        .filter(|r| match &c.track {
            Track::Newest => true,
            Track::Line { major, minor } => r.version.line() == (*major, *minor),
            Track::Channel(_) => channel_latest.is_none_or(|l| r.version <= *l),
        })
        .filter(|r| match &p.pin {
            _ if !apply_pin => true,
            None => true,
            Some(Pin::Exact(v)) => r.version <= *v,
            // Up to the end of the pinned line: a pin ahead is reached through the lines between.
            Some(Pin::Line { major, minor }) => r.version.line() <= (*major, *minor),
        })
        .cloned()
        .collect();
    out.sort_by(|a, b| a.version.cmp(&b.version));
    // Keep one release per version (aliases collapse), preferring one with a timestamp.
    out.dedup_by(|later, earlier| {
        if later.version == earlier.version {
            if earlier.published_at.is_none() {
                earlier.published_at = later.published_at;
            }
            true
        } else {
            false
        }
    });
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{ReleaseAge, Sources};
    use crate::versions::{Downgrade, PathRule, Scheme, parse};

    fn t(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }
    fn rel(v: &str, scheme: Scheme, at: Option<&str>) -> Release {
        Release {
            version: parse(v, scheme).unwrap(),
            published_at: at.map(t),
            prerelease: false,
            draft: false,
        }
    }
    fn comp(name: &str, v: &str, scheme: Scheme, track: Track, rule: PathRule) -> Component {
        Component {
            name: name.into(),
            version: parse(v, scheme).unwrap(),
            scheme,
            track,
            sources: Sources::default(),
            allowed: None,
            path_rule: rule,
            runs: crate::model::Runs::Unknown,
        }
    }
    const STEP1: PathRule = PathRule {
        max_minor_step: Some(1),
        downgrade: Downgrade::Never,
    };
    const NOW: &str = "2026-11-21T12:00:00Z";

    fn k3s_releases() -> Vec<Release> {
        [
            ("v1.31.4+k3s1", "2025-01-01T00:00:00Z"),
            ("v1.31.5+k3s1", "2025-02-01T00:00:00Z"),
            ("v1.32.3+k3s1", "2025-03-01T00:00:00Z"),
            ("v1.32.4+k3s1", "2026-11-20T00:00:00Z"),
            ("v1.33.2+k3s1", "2026-11-01T00:00:00Z"),
        ]
        .iter()
        .map(|(v, at)| rel(v, Scheme::K3s, Some(at)))
        .collect()
    }

    #[test]
    fn a_component_without_rules_walks_one_minor_at_a_time_and_enters_a_major_from_its_last_minor()
    {
        let semver = |vs: &[&str]| -> Vec<Release> {
            vs.iter()
                .map(|v| rel(v, Scheme::Semver, Some("2026-01-01T00:00:00Z")))
                .collect()
        };
        // cert-manager: v1.12.0 -> v1.13.x, not v1.21.1.
        let c = comp(
            "cert-manager",
            "v1.12.0",
            Scheme::Semver,
            Track::Newest,
            PathRule::DEFAULT,
        );
        let s = select(
            &c,
            &Policy::default(),
            &semver(&["v1.12.0", "v1.13.0", "v1.13.6", "v1.14.5", "v1.21.1"]),
            None,
            t(NOW),
        );
        assert_eq!(
            s.next.map(|r| r.version.to_string()),
            Some("v1.13.6".into())
        );
        // traefik: v2.10.0 -> v2.11.x, then v3.0.x; never v2.10 -> v3.0.
        let mut p = Policy::default();
        p.propose.insert(versions::Level::Major);
        let c = comp(
            "traefik",
            "v2.10.0",
            Scheme::Semver,
            Track::Newest,
            PathRule::DEFAULT,
        );
        let s = select(
            &c,
            &p,
            &semver(&["v2.10.0", "v2.11.3", "v3.0.4"]),
            None,
            t(NOW),
        );
        assert_eq!(
            s.next.map(|r| r.version.to_string()),
            Some("v2.11.3".into())
        );
        let path: Vec<String> = s.path.iter().map(ToString::to_string).collect();
        assert_eq!(path, vec!["v2.11.3", "v3.0.4"]);
        // From the last minor, the major is one step.
        let c = comp(
            "traefik",
            "v2.11.3",
            Scheme::Semver,
            Track::Newest,
            PathRule::DEFAULT,
        );
        let s = select(
            &c,
            &p,
            &semver(&["v2.10.0", "v2.11.3", "v3.0.4"]),
            None,
            t(NOW),
        );
        assert_eq!(s.next.map(|r| r.version.to_string()), Some("v3.0.4".into()));
    }

    #[test]
    fn pins_and_tracks_that_match_nothing_are_said_and_a_pin_ahead_is_walked_to() {
        let line = |major, minor| Some(Pin::Line { major, minor });
        let policy = |pin| Policy {
            pin,
            ..Policy::default()
        };
        let c = comp("k3s", "v1.31.4+k3s1", Scheme::K3s, Track::Newest, STEP1);
        // A line no release belongs to: not "up to date", not "exists beyond the pin".
        let s = select(&c, &policy(line(1, 36)), &k3s_releases(), None, t(NOW));
        assert_eq!(
            s.next.map(|r| r.version.to_string()),
            Some("v1.32.4+k3s1".into())
        );
        let c5 = comp("k3s", "v1.33.2+k3s1", Scheme::K3s, Track::Newest, STEP1);
        let s = select(&c5, &policy(line(1, 36)), &k3s_releases(), None, t(NOW));
        assert_eq!(
            s.reason,
            Some(Reason::NoSuchLine {
                what: "pin".into(),
                line: "v1.36".into(),
                newest: Some("v1.33.2+k3s1".into())
            })
        );
        let t90 = comp(
            "k3s",
            "v1.33.2+k3s1",
            Scheme::K3s,
            Track::Line { major: 9, minor: 0 },
            STEP1,
        );
        let s = select(&t90, &Policy::default(), &k3s_releases(), None, t(NOW));
        assert!(
            matches!(s.reason, Some(Reason::NoSuchLine { ref what, .. }) if what == "track"),
            "{:?}",
            s.reason
        );
        // A pin two minors ahead: the way there goes through the line between.
        let c = comp("k3s", "v1.31.5+k3s1", Scheme::K3s, Track::Newest, STEP1);
        let s = select(&c, &policy(line(1, 33)), &k3s_releases(), None, t(NOW));
        assert_eq!(
            s.next.map(|r| r.version.to_string()),
            Some("v1.32.4+k3s1".into())
        );
        let path: Vec<String> = s.path.iter().map(ToString::to_string).collect();
        assert_eq!(path, vec!["v1.32.4+k3s1", "v1.33.2+k3s1"]);
    }

    #[test]
    fn a_pin_ahead_of_the_desired_version_is_accepted() {
        let dir = tempfile::tempdir().unwrap_or_else(|_| panic!());
        let _ = std::fs::create_dir_all(dir.path().join("policies"));
        let _ = std::fs::write(
            dir.path().join("versions.yaml"),
            "apiVersion: upkeep.dev/v1alpha1\nkind: DesiredVersions\ncomponents:\n  k3s:\n    version: v1.33.4+k3s1\n",
        );
        let _ = std::fs::write(
            dir.path().join("policies/pins.yaml"),
            "apiVersion: upkeep.dev/v1alpha1\nkind: Policy\nupdates:\n  - name: go-to\n    components: [k3s]\n    pin: v1.35.5+k3s1\n",
        );
        let loaded = crate::model::load_repo(dir.path(), t(NOW));
        let errors: Vec<String> = loaded
            .iter()
            .flat_map(|l| l.diagnostics.iter().map(ToString::to_string))
            .collect();
        assert!(errors.is_empty(), "{errors:?}");
    }

    #[test]
    fn proposes_the_newest_legal_hop_never_a_minor_skip() {
        let c = comp("k3s", "v1.31.4+k3s1", Scheme::K3s, Track::Newest, STEP1);
        let s = select(&c, &Policy::default(), &k3s_releases(), None, t(NOW));
        assert_eq!(s.next.unwrap().version.to_string(), "v1.32.4+k3s1");
        assert_eq!(s.level, Some(Level::Minor));
        let path: Vec<String> = s.path.iter().map(|v| v.to_string()).collect();
        assert_eq!(path, ["v1.32.4+k3s1", "v1.33.2+k3s1"]);
    }

    #[test]
    fn age_gates_fall_back_to_an_older_hop_and_say_why_when_none_passes() {
        let c = comp("k3s", "v1.31.4+k3s1", Scheme::K3s, Track::Newest, STEP1);
        let mut p = Policy {
            minimum_release_age: ReleaseAge {
                minor: Some(Duration::days(7)),
                ..Default::default()
            },
            ..Policy::default()
        };
        // v1.32.4 is one day old; v1.32.3 passes.
        let s = select(&c, &p, &k3s_releases(), None, t(NOW));
        assert_eq!(s.next.unwrap().version.to_string(), "v1.32.3+k3s1");
        assert!(
            matches!(&s.held, Some(Reason::TooYoung { version, .. }) if version == "v1.32.4+k3s1"),
            "{:?}",
            s.held
        );
        // Only patches: the newest v1.31.x.
        p.propose = [Level::Patch].into();
        let s = select(&c, &p, &k3s_releases(), None, t(NOW));
        assert_eq!(s.next.unwrap().version.to_string(), "v1.31.5+k3s1");
        // Nothing old enough: the reason names the newest legal hop and when it becomes eligible.
        let young = vec![rel(
            "v1.32.4+k3s1",
            Scheme::K3s,
            Some("2026-11-20T00:00:00Z"),
        )];
        p.propose = Policy::default().propose;
        let s = select(&c, &p, &young, None, t(NOW));
        assert_eq!(s.next, None);
        assert_eq!(
            s.reason,
            Some(Reason::TooYoung {
                version: "v1.32.4+k3s1".into(),
                published_at: t("2026-11-20T00:00:00Z"),
                eligible_at: t("2026-11-27T00:00:00Z"),
            })
        );
        let untimed = vec![rel("v1.32.4+k3s1", Scheme::K3s, None)];
        let s = select(&c, &p, &untimed, None, t(NOW));
        assert_eq!(
            s.reason,
            Some(Reason::NoTimestamp {
                version: "v1.32.4+k3s1".into()
            })
        );
    }

    #[test]
    fn up_to_date_paused_pinned_and_blocked() {
        let c = comp("k3s", "v1.33.2+k3s1", Scheme::K3s, Track::Newest, STEP1);
        let s = select(&c, &Policy::default(), &k3s_releases(), None, t(NOW));
        assert_eq!(s.reason, Some(Reason::UpToDate));

        let c = comp("k3s", "v1.31.4+k3s1", Scheme::K3s, Track::Newest, STEP1);
        let paused = Policy {
            paused: true,
            ..Policy::default()
        };
        assert_eq!(
            select(&c, &paused, &k3s_releases(), None, t(NOW)).reason,
            Some(Reason::Paused)
        );

        let pinned = Policy {
            pin: Some(Pin::Line {
                major: 1,
                minor: 31,
            }),
            ..Policy::default()
        };
        let s = select(&c, &pinned, &k3s_releases(), None, t(NOW));
        assert_eq!(s.next.unwrap().version.to_string(), "v1.31.5+k3s1");
        // At the top of the pinned line, the pin is the reason, naming what lies beyond it.
        let c5 = comp("k3s", "v1.31.5+k3s1", Scheme::K3s, Track::Newest, STEP1);
        let s = select(&c5, &pinned, &k3s_releases(), None, t(NOW));
        assert_eq!(
            s.reason,
            Some(Reason::Pinned {
                pin: "v1.31".into(),
                newest: "v1.33.2+k3s1".into()
            })
        );

        // Only v1.33 exists beyond the current line: no legal hop, the path says why.
        let gap = vec![rel(
            "v1.33.2+k3s1",
            Scheme::K3s,
            Some("2026-01-01T00:00:00Z"),
        )];
        let s = select(&c, &Policy::default(), &gap, None, t(NOW));
        assert_eq!(s.next, None);
        assert!(
            matches!(s.reason, Some(Reason::BlockedByPath { .. })),
            "{:?}",
            s.reason
        );
    }

    #[test]
    fn channel_tracking_stops_at_the_channel_latest() {
        let c = comp(
            "k3s",
            "v1.31.4+k3s1",
            Scheme::K3s,
            Track::Channel("stable".into()),
            STEP1,
        );
        let latest = parse("v1.31.5+k3s1", Scheme::K3s).unwrap();
        let s = select(
            &c,
            &Policy::default(),
            &k3s_releases(),
            Some(&latest),
            t(NOW),
        );
        assert_eq!(s.newest, Some(latest.clone()));
        assert_eq!(s.next.unwrap().version, latest);
    }

    #[test]
    fn drafts_dev_builds_and_prereleases_are_filtered() {
        let c = comp("longhorn", "v1.9.1", Scheme::Semver, Track::Newest, STEP1);
        let mut draft = rel("v1.9.3", Scheme::Semver, Some("2026-01-01T00:00:00Z"));
        draft.draft = true;
        let mut flagged = rel("v1.9.4", Scheme::Semver, Some("2026-01-01T00:00:00Z"));
        flagged.prerelease = true;
        let rs = vec![
            rel("v1.9.2", Scheme::Semver, Some("2026-01-01T00:00:00Z")),
            draft,
            flagged,
            rel("v1.10.0-rc1", Scheme::Semver, Some("2026-01-01T00:00:00Z")),
            rel(
                "v1.10.0-dev-20260101",
                Scheme::Semver,
                Some("2026-01-01T00:00:00Z"),
            ),
        ];
        let s = select(&c, &Policy::default(), &rs, None, t(NOW));
        assert_eq!(s.next.unwrap().version.to_string(), "v1.9.2");
        let pre = Policy {
            prerelease: true,
            ..Policy::default()
        };
        let s = select(&c, &pre, &rs, None, t(NOW));
        assert_eq!(s.next.unwrap().version.to_string(), "v1.10.0-rc1");
    }
}
