//! `upkeep plan`: what would be applied to the cluster, per component: what runs, what
//! versions.yaml asks for, the path between (hop by hop), when work may start, and the preflight
//! verdict right now. Pure over the loaded config and one observation of the cluster; the CLI
//! reads both and prints [`text`] or the rows as JSON.

use std::fmt::Write as _;

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::cluster::{Observed, Running};
use crate::layout::Reading;
use crate::model::{Component, ConfigRepo};
use crate::route::decide;
use crate::validate::{PreflightPolicy, Verdict, preflight};
use crate::versions::{self, Version};
use crate::windows::{self, Decision, Override};

/// One component in `upkeep plan`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PlanRow {
    pub component: String,
    pub running: Running,
    pub desired: String,
    /// The hops from what runs to the desired version (empty when in step).
    pub path: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path_error: Option<String>,
    pub when: Decision,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub preflight: Option<Verdict>,
}

/// The plan of every component of `repo` against what `observed` runs; `releases` gives a
/// component's known releases, for a path of several hops. With the repository `reading` (as
/// Flux builds it), preflight judges each component by the way `apply` would take: through git
/// where the repository carries its version, as `apply` does.
pub fn rows(
    repo: &ConfigRepo,
    observed: &Observed,
    reading: Option<&Reading>,
    releases: &dyn Fn(&Component) -> Vec<Version>,
    now: DateTime<Utc>,
) -> Vec<PlanRow> {
    repo.components
        .iter()
        .map(|c| match reading {
            Some(r) => {
                let mut o = observed.clone();
                let mapping = r.carriers(&c.name, &c.runs);
                o.routes
                    .insert(c.name.clone(), decide(c, Some(&mapping), observed));
                row(repo, c, &o, releases, now)
            }
            None => row(repo, c, observed, releases, now),
        })
        .collect()
}

fn row(
    repo: &ConfigRepo,
    c: &Component,
    observed: &Observed,
    releases: &dyn Fn(&Component) -> Vec<Version>,
    now: DateTime<Utc>,
) -> PlanRow {
    let running = observed.running(c);
    let from = running.lowest(c.scheme);
    let mut row = PlanRow {
        component: c.name.clone(),
        running: running.clone(),
        desired: c.version.to_string(),
        path: Vec::new(),
        path_error: None,
        when: windows::decide(
            now,
            &c.name,
            &repo.windows,
            &repo.freezes,
            Override::default(),
        ),
        preflight: None,
    };
    let in_step = matches!(&running, Running::At { version } if versions::parse(version, c.scheme).ok().as_ref() == Some(&c.version));
    if in_step {
        return row;
    }
    match &from {
        None => row.path_error = Some(format!("cannot tell which {} version runs", c.name)),
        Some(from) => match versions::check_hop(from, &c.version, &c.path_rule) {
            Ok(()) => row.path = vec![c.version.to_string()],
            // A longer way may exist through the releases in between.
            Err(hop_err) => {
                match versions::plan_path(from, &c.version, &releases(c), &c.path_rule) {
                    Ok(p) if !p.is_empty() => {
                        row.path = p.iter().map(ToString::to_string).collect()
                    }
                    _ => row.path_error = Some(hop_err.to_string()),
                }
            }
        },
    }
    if let Some(first) = row
        .path
        .first()
        .and_then(|v| versions::parse(v, c.scheme).ok())
    {
        row.preflight = Some(preflight(
            c,
            &first,
            observed,
            PreflightPolicy {
                allow_degraded_volumes: repo.rollouts.allow_degraded_volumes,
                drain: repo.rollouts.drain,
            },
        ));
    }
    row
}

/// 1: a path or a preflight fails; 10: something to apply and its preflight passes; 0: in step.
pub fn exit_code(rows: &[PlanRow]) -> i32 {
    let failing = rows
        .iter()
        .any(|r| r.path_error.is_some() || r.preflight.as_ref().is_some_and(|v| !v.ok));
    let pending = rows.iter().any(|r| !r.path.is_empty());
    if failing {
        1
    } else if pending {
        10
    } else {
        0
    }
}

/// The plan in words, times in each component's window zone.
pub fn text(rows: &[PlanRow], repo: &ConfigRepo, now: DateTime<Utc>) -> String {
    let mut out = String::new();
    for r in rows {
        let running = match &r.running {
            Running::At { version } => version.clone(),
            Running::Mixed { nodes } => format!(
                "mixed ({})",
                nodes
                    .iter()
                    .map(|(n, v)| format!("{n} {v}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            Running::Unknown => "unknown".into(),
        };
        if r.path.is_empty() && r.path_error.is_none() {
            let _ = writeln!(out, "{}: {running}, as versions.yaml asks", r.component);
            continue;
        }
        let _ = writeln!(
            out,
            "{}: {running} -> {} ({})",
            r.component,
            r.desired,
            if r.path.len() > 1 {
                format!("{} hops: {}", r.path.len(), r.path.join(" -> "))
            } else {
                "1 hop".into()
            }
        );
        if let Some(e) = &r.path_error {
            let _ = writeln!(out, "  path: {e}");
        }
        let _ = writeln!(out, "  when: {}", when(r, repo, now));
        if let Some(v) = &r.preflight {
            let _ = writeln!(
                out,
                "  preflight: {}",
                if v.ok { "passes" } else { "FAILS" }
            );
            for f in &v.findings {
                let _ = writeln!(
                    out,
                    "    {} {}: {}",
                    if f.ok { "ok  " } else { "FAIL" },
                    f.check,
                    f.detail
                );
            }
        }
    }
    out
}

/// When work on the row's component may start, in words.
fn when(r: &PlanRow, repo: &ConfigRepo, now: DateTime<Utc>) -> String {
    let tz = windows::zone_for(&r.component, &repo.windows);
    let show = |t| windows::show(t, tz);
    match &r.when {
        Decision::AnyTime => "any time (no window covers it)".to_string(),
        Decision::InWindow { window, closes } => {
            format!("now: window {window} is open until {}", show(*closes))
        }
        Decision::Emergency => "now (emergency)".into(),
        Decision::Wait { next: Some(n) } => {
            match crate::propose::after_merge(repo, &r.component, now).window {
                Some(w) => format!(
                    "in the next window, {} {}, for {}",
                    w.name, w.starts, w.duration
                ),
                None => format!("in the next window, {}", show(*n)),
            }
        }
        Decision::Wait { next: None } => "no window opens within a year".into(),
        Decision::Denied { window, until } => {
            format!("after deny window {window}, {}", show(*until))
        }
        Decision::Frozen { freeze, until } => {
            format!("after freeze {freeze}, {}", show(*until))
        }
    }
}
