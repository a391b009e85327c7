//! `upkeep report --monthly`: the month's update report a runbook asks for: what was applied
//! (and how long after its release), what failed and was reverted, how much window time there
//! was and how much the rollouts took, and what is behind and why. Pure: the caller reads the
//! history (cluster and git), the releases and the check report; this builds and renders.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use chrono::{DateTime, Datelike, NaiveDate, TimeZone, Utc};
use chrono_tz::Tz;
use serde::Serialize;

use crate::history::Entry;
use crate::report::{ComponentReport, Status, md_escape};
use crate::windows::{Freeze, Kind, Window};

/// A calendar month.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Month {
    pub year: i32,
    pub month: u32,
}

impl Month {
    /// `2026-11`.
    pub fn parse(s: &str) -> Result<Month, String> {
        let bad = || format!("`{s}` is not a month like 2026-11");
        let (y, m) = s.trim().split_once('-').ok_or_else(bad)?;
        let year: i32 = y.parse().map_err(|_| bad())?;
        let month: u32 = m.parse().map_err(|_| bad())?;
        if !(1..=12).contains(&month) || !(2000..=2200).contains(&year) {
            return Err(bad());
        }
        Ok(Month { year, month })
    }

    /// The last complete month before `now` (in `tz`): the one a monthly report is about.
    pub fn previous(now: DateTime<Utc>, tz: Tz) -> Month {
        let local = now.with_timezone(&tz);
        if local.month() == 1 {
            Month {
                year: local.year() - 1,
                month: 12,
            }
        } else {
            Month {
                year: local.year(),
                month: local.month() - 1,
            }
        }
    }

    fn next(self) -> Month {
        if self.month == 12 {
            Month {
                year: self.year + 1,
                month: 1,
            }
        } else {
            Month {
                year: self.year,
                month: self.month + 1,
            }
        }
    }

    fn start_in(self, tz: Tz) -> DateTime<Utc> {
        let day = NaiveDate::from_ymd_opt(self.year, self.month, 1)
            .and_then(|d| d.and_hms_opt(0, 0, 0))
            .unwrap_or_default();
        tz.from_local_datetime(&day)
            .earliest()
            .map_or_else(|| Utc.from_utc_datetime(&day), |t| t.with_timezone(&Utc))
    }

    /// `[start, end)` in UTC, the month's midnights in `tz`.
    pub fn bounds(self, tz: Tz) -> (DateTime<Utc>, DateTime<Utc>) {
        (self.start_in(tz), self.next().start_in(tz))
    }

    pub fn label(self) -> String {
        NaiveDate::from_ymd_opt(self.year, self.month, 1)
            .map_or_else(String::new, |d| d.format("%B %Y").to_string())
    }
}

impl std::fmt::Display for Month {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}-{:02}", self.year, self.month)
    }
}

/// What the report is made of.
pub struct Inputs<'a> {
    pub month: Month,
    pub tz: Tz,
    pub cluster: Option<&'a str>,
    pub generated_at: DateTime<Utc>,
    /// The history (`history::entries`) from the month's start on.
    pub entries: &'a [Entry],
    /// (component, version) -> when upstream published it.
    pub published: &'a BTreeMap<(String, String), DateTime<Utc>>,
    pub windows: &'a [Window],
    pub freezes: &'a [Freeze],
    /// The check report's rows, for what is behind (empty when it was not read).
    pub components: &'a [ComponentReport],
}

/// One update of the month.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Row {
    #[serde(flatten)]
    pub entry: Entry,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub released_at: Option<DateTime<Utc>>,
    /// Days from the release to the end of its rollout.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub days_to_applied: Option<f64>,
}

/// A window's time in the month.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct WindowTime {
    pub name: String,
    pub open_hours: f64,
}

/// A component that is not on its newest version.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Behind {
    pub component: String,
    pub current: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub newest: Option<String>,
    pub status: Status,
    pub why: String,
}

/// The month's report.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Monthly {
    pub month: String,
    pub label: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cluster: Option<String>,
    pub generated_at: DateTime<Utc>,
    pub time_zone: String,
    pub applied: Vec<Row>,
    /// Failed, reverted, or needing a human.
    pub failed: Vec<Row>,
    pub superseded: usize,
    /// Still under way at the month's end (or now).
    pub unfinished: usize,
    /// Merged in git without a record in the cluster (a rebuilt cluster, or pruned).
    pub merged_only_in_git: usize,
    /// Median and longest days from release to applied.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub median_days_to_applied: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub longest_days_to_applied: Option<f64>,
    pub windows: Vec<WindowTime>,
    /// Hours the rollouts of the month took, start to end.
    pub rollout_hours: f64,
    pub behind: Vec<Behind>,
}

fn bare(v: &str) -> &str {
    v.trim_start_matches('v')
}

fn hours(d: chrono::Duration) -> f64 {
    (d.num_seconds() as f64 / 36.0).round() / 100.0
}

/// Build the month's report.
pub fn build(i: &Inputs) -> Monthly {
    let (start, end) = i.month.bounds(i.tz);
    let published: BTreeMap<(String, String), DateTime<Utc>> = i
        .published
        .iter()
        .map(|((c, v), t)| ((c.clone(), bare(v).to_string()), *t))
        .collect();
    let rows: Vec<Row> = i
        .entries
        .iter()
        .filter(|e| e.at().is_some_and(|t| t >= start && t < end))
        .map(|e| {
            let released_at = published
                .get(&(e.component.clone(), bare(&e.to).to_string()))
                .copied();
            let days_to_applied = match (released_at, e.ended_at) {
                (Some(r), Some(a)) if e.outcome == "Succeeded" && a >= r => {
                    Some(((a - r).num_minutes() as f64 / 144.0).round() / 10.0)
                }
                _ => None,
            };
            Row {
                entry: e.clone(),
                released_at,
                days_to_applied,
            }
        })
        .collect();
    let is = |r: &Row, o: &[&str]| o.contains(&r.entry.outcome.as_str());
    let mut applied: Vec<Row> = rows
        .iter()
        .filter(|r| is(r, &["Succeeded"]))
        .cloned()
        .collect();
    applied.sort_by_key(|r| r.entry.at());
    let mut failed: Vec<Row> = rows
        .iter()
        .filter(|r| is(r, &["Failed", "Reverting", "Reverted", "RequiresAttention"]))
        .cloned()
        .collect();
    failed.sort_by_key(|r| r.entry.at());
    let mut lags: Vec<f64> = applied.iter().filter_map(|r| r.days_to_applied).collect();
    lags.sort_by(f64::total_cmp);
    let median = (!lags.is_empty()).then(|| {
        let n = lags.len();
        if n % 2 == 1 {
            lags[n / 2]
        } else {
            ((lags[n / 2 - 1] + lags[n / 2]) * 5.0).round() / 10.0
        }
    });
    let rollout_time = rows
        .iter()
        .filter_map(|r| Some(r.entry.ended_at? - r.entry.started_at?))
        .fold(chrono::Duration::zero(), |a, b| a + b);
    let behind = i
        .components
        .iter()
        .filter(|c| c.status != Status::UpToDate)
        .map(|c| Behind {
            component: c.name.clone(),
            current: c.current.clone(),
            newest: c.newest.clone(),
            status: c.status,
            why: crate::report::explain(c).unwrap_or_default(),
        })
        .collect();
    Monthly {
        month: i.month.to_string(),
        label: i.month.label(),
        cluster: i.cluster.map(str::to_string),
        generated_at: i.generated_at,
        time_zone: i.tz.name().to_string(),
        superseded: rows.iter().filter(|r| is(r, &["Superseded"])).count(),
        unfinished: rows
            .iter()
            .filter(|r| r.entry.ended_at.is_none() && r.entry.source != "git")
            .count(),
        merged_only_in_git: rows.iter().filter(|r| r.entry.source == "git").count(),
        applied,
        failed,
        median_days_to_applied: median,
        longest_days_to_applied: lags.last().copied(),
        windows: i
            .windows
            .iter()
            .filter(|w| w.kind == Kind::Allow)
            .map(|w| WindowTime {
                name: w.name.clone(),
                open_hours: hours(crate::windows::open_time(w, start, end, i.freezes)),
            })
            .collect(),
        rollout_hours: hours(rollout_time),
        behind,
    }
}

fn when(t: Option<DateTime<Utc>>, tz: Tz) -> String {
    t.map_or("-".into(), |t| {
        t.with_timezone(&tz).format("%Y-%m-%d").to_string()
    })
}

fn days(d: Option<f64>) -> String {
    d.map_or("-".into(), |d| format!("{d} d"))
}

fn tz_of(m: &Monthly) -> Tz {
    m.time_zone.parse().unwrap_or(chrono_tz::UTC)
}

/// Updates applied and failed per component, in name order.
fn per_component(m: &Monthly) -> Vec<(String, usize, usize)> {
    let mut by: BTreeMap<String, (usize, usize)> = BTreeMap::new();
    for r in &m.applied {
        by.entry(r.entry.component.clone()).or_default().0 += 1;
    }
    for r in &m.failed {
        by.entry(r.entry.component.clone()).or_default().1 += 1;
    }
    by.into_iter().map(|(c, (a, f))| (c, a, f)).collect()
}

fn summary_lines(m: &Monthly) -> Vec<String> {
    let open: f64 = m.windows.iter().map(|w| w.open_hours).sum();
    let mut out = vec![
        format!(
            "{} update{} applied, {} failed or reverted, {} superseded{}.",
            m.applied.len(),
            if m.applied.len() == 1 { "" } else { "s" },
            m.failed.len(),
            m.superseded,
            if m.unfinished > 0 {
                format!(", {} still under way", m.unfinished)
            } else {
                String::new()
            }
        ),
        match (m.median_days_to_applied, m.longest_days_to_applied) {
            (Some(med), Some(max)) => {
                format!("From release to applied: {med} days (median), {max} at most.")
            }
            _ => "From release to applied: no release dates known.".into(),
        },
    ];
    if !m.windows.is_empty() {
        out.push(format!(
            "Maintenance windows were open {open} h (freezes deducted); rollouts took {} h of it.",
            m.rollout_hours
        ));
    }
    if m.merged_only_in_git > 0 {
        out.push(format!(
            "{} update{} merged in git with no record left in the cluster.",
            m.merged_only_in_git,
            if m.merged_only_in_git == 1 {
                " was"
            } else {
                "s were"
            }
        ));
    }
    out
}

/// The report as Markdown (GitHub renders the charts, written in Mermaid).
pub fn markdown(m: &Monthly) -> String {
    let tz = tz_of(m);
    let mut o = String::new();
    let _ = writeln!(
        o,
        "# Update report: {}{}\n",
        m.label,
        m.cluster
            .as_deref()
            .map(|c| format!(" ({})", md_escape(c)))
            .unwrap_or_default()
    );
    for l in summary_lines(m) {
        let _ = writeln!(o, "- {l}");
    }
    let slices: Vec<(&str, usize)> = [
        ("applied", m.applied.len()),
        ("failed or reverted", m.failed.len()),
        ("superseded", m.superseded),
    ]
    .into_iter()
    .filter(|(_, n)| *n > 0)
    .collect();
    if !slices.is_empty() {
        let _ = writeln!(o, "\n```mermaid\npie title Rollouts in {}", m.label);
        for (what, n) in slices {
            let _ = writeln!(o, "  \"{what}\" : {n}");
        }
        let _ = writeln!(o, "```");
    }
    let _ = writeln!(o, "\n## Applied\n");
    if m.applied.is_empty() {
        let _ = writeln!(o, "Nothing was applied this month.");
    } else {
        let _ = writeln!(
            o,
            "| date | component | from | to | took | released | release to applied | soak | PR |\n|---|---|---|---|---|---|---|---|---|"
        );
        for r in &m.applied {
            let e = &r.entry;
            let _ = writeln!(
                o,
                "| {} | {} | {} | {} | {} | {} | {} | {} | {} |",
                when(e.at(), tz),
                md_escape(&e.component),
                md_escape(&e.from),
                md_escape(&e.to),
                e.duration_seconds
                    .map_or("-".into(), |s| format!("{} min", s / 60)),
                when(r.released_at, tz),
                days(r.days_to_applied),
                md_escape(e.soak.as_deref().unwrap_or("-")),
                e.pull_request.map_or("-".into(), |n| format!("#{n}")),
            );
        }
    }
    let _ = writeln!(o, "\n## Failures and reverts\n");
    if m.failed.is_empty() {
        let _ = writeln!(o, "None.");
    } else {
        let _ = writeln!(
            o,
            "| date | component | from | to | outcome | revert | PR |\n|---|---|---|---|---|---|---|"
        );
        for r in &m.failed {
            let e = &r.entry;
            let _ = writeln!(
                o,
                "| {} | {} | {} | {} | {} | {} | {} |",
                when(e.at(), tz),
                md_escape(&e.component),
                md_escape(&e.from),
                md_escape(&e.to),
                md_escape(&e.outcome),
                md_escape(
                    &e.revert
                        .as_deref()
                        .map_or("-".into(), |c| c.chars().take(12).collect::<String>())
                ),
                e.pull_request.map_or("-".into(), |n| format!("#{n}")),
            );
        }
    }
    if !m.windows.is_empty() {
        let _ = writeln!(o, "\n## Windows\n\n| window | open |\n|---|---|");
        for w in &m.windows {
            let _ = writeln!(o, "| {} | {} h |", md_escape(&w.name), w.open_hours);
        }
    }
    let _ = writeln!(o, "\n## Behind, and why\n");
    if m.behind.is_empty() {
        let _ = writeln!(o, "Every component runs the newest version it may.");
    } else {
        let _ = writeln!(o, "| component | runs | newest | why |\n|---|---|---|---|");
        for b in &m.behind {
            let _ = writeln!(
                o,
                "| {} | {} | {} | {} |",
                md_escape(&b.component),
                md_escape(&b.current),
                md_escape(b.newest.as_deref().unwrap_or("-")),
                md_escape(&b.why)
            );
        }
    }
    let _ = writeln!(
        o,
        "\n<sub>Generated by upkeep at {} ({}).</sub>",
        m.generated_at.with_timezone(&tz).format("%Y-%m-%d %H:%M"),
        m.time_zone
    );
    o
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#39;")
}

/// A horizontal bar chart as inline SVG: one row per label, applied and failed side by side.
fn svg_bars(rows: &[(String, usize, usize)]) -> String {
    let max = rows.iter().map(|r| r.1.max(r.2)).max().unwrap_or(1).max(1) as f64;
    let (label_w, bar_w, row_h) = (120.0, 360.0, 28.0);
    let height = row_h * rows.len() as f64 + 30.0;
    let mut s = format!(
        r#"<svg xmlns="http://www.w3.org/2000/svg" role="img" aria-label="Updates per component" width="{}" height="{height}" font-family="sans-serif" font-size="12">"#,
        label_w + bar_w + 60.0
    );
    for (i, (c, a, f)) in rows.iter().enumerate() {
        let y = 10.0 + row_h * i as f64;
        let wa = bar_w * (*a as f64) / max;
        let wf = bar_w * (*f as f64) / max;
        let _ = write!(
            s,
            r##"<text x="0" y="{}">{}</text><rect x="{label_w}" y="{y}" width="{wa}" height="10" fill="#2e7d32"><title>{a} applied</title></rect><text x="{}" y="{}">{a}</text><rect x="{label_w}" y="{}" width="{wf}" height="10" fill="#c62828"><title>{f} failed</title></rect><text x="{}" y="{}">{f}</text>"##,
            y + 14.0,
            esc(c),
            label_w + wa + 4.0,
            y + 9.0,
            y + 12.0,
            label_w + wf + 4.0,
            y + 21.0,
        );
    }
    s.push_str("</svg>");
    s
}

/// The report as one self-contained HTML page (no scripts, no external resources).
pub fn html(m: &Monthly) -> String {
    let tz = tz_of(m);
    let title = format!(
        "Update report: {}{}",
        m.label,
        m.cluster
            .as_deref()
            .map(|c| format!(" ({c})"))
            .unwrap_or_default()
    );
    let mut o = format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{}</title><style>body{{font-family:sans-serif;max-width:60rem;margin:2rem auto;padding:0 1rem}}table{{border-collapse:collapse}}td,th{{border:1px solid #ccc;padding:.25rem .5rem;text-align:left}}.bad{{color:#c62828}}</style></head><body>\n<h1>{}</h1>\n<ul>",
        esc(&title),
        esc(&title)
    );
    for l in summary_lines(m) {
        let _ = write!(o, "<li>{}</li>", esc(&l));
    }
    o.push_str("</ul>\n");
    let per = per_component(m);
    if !per.is_empty() {
        let _ = writeln!(
            o,
            "<h2>Updates per component</h2><p>green: applied, red: failed</p>{}",
            svg_bars(&per)
        );
    }
    o.push_str("<h2>Applied</h2>\n");
    if m.applied.is_empty() {
        o.push_str("<p>Nothing was applied this month.</p>\n");
    } else {
        o.push_str("<table><tr><th>date</th><th>component</th><th>from</th><th>to</th><th>took</th><th>released</th><th>release to applied</th><th>soak</th><th>PR</th></tr>\n");
        for r in &m.applied {
            let e = &r.entry;
            let _ = writeln!(
                o,
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                when(e.at(), tz),
                esc(&e.component),
                esc(&e.from),
                esc(&e.to),
                e.duration_seconds
                    .map_or("-".into(), |s| format!("{} min", s / 60)),
                when(r.released_at, tz),
                days(r.days_to_applied),
                esc(e.soak.as_deref().unwrap_or("-")),
                e.pull_request.map_or("-".into(), |n| format!("#{n}")),
            );
        }
        o.push_str("</table>\n");
    }
    o.push_str("<h2>Failures and reverts</h2>\n");
    if m.failed.is_empty() {
        o.push_str("<p>None.</p>\n");
    } else {
        o.push_str("<table><tr><th>date</th><th>component</th><th>from</th><th>to</th><th>outcome</th><th>revert</th></tr>\n");
        for r in &m.failed {
            let e = &r.entry;
            let _ = writeln!(
                o,
                "<tr class=\"bad\"><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                when(e.at(), tz),
                esc(&e.component),
                esc(&e.from),
                esc(&e.to),
                esc(&e.outcome),
                esc(&e
                    .revert
                    .as_deref()
                    .map_or("-".into(), |c| c.chars().take(12).collect::<String>())),
            );
        }
        o.push_str("</table>\n");
    }
    if !m.windows.is_empty() {
        o.push_str("<h2>Windows</h2><table><tr><th>window</th><th>open</th></tr>\n");
        for w in &m.windows {
            let _ = writeln!(
                o,
                "<tr><td>{}</td><td>{} h</td></tr>",
                esc(&w.name),
                w.open_hours
            );
        }
        o.push_str("</table>\n");
    }
    o.push_str("<h2>Behind, and why</h2>\n");
    if m.behind.is_empty() {
        o.push_str("<p>Every component runs the newest version it may.</p>\n");
    } else {
        o.push_str("<table><tr><th>component</th><th>runs</th><th>newest</th><th>why</th></tr>\n");
        for b in &m.behind {
            let _ = writeln!(
                o,
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                esc(&b.component),
                esc(&b.current),
                esc(b.newest.as_deref().unwrap_or("-")),
                esc(&b.why)
            );
        }
        o.push_str("</table>\n");
    }
    let _ = write!(
        o,
        "<p><small>Generated by upkeep at {} ({}).</small></p>\n</body></html>\n",
        m.generated_at.with_timezone(&tz).format("%Y-%m-%d %H:%M"),
        esc(&m.time_zone)
    );
    o
}

/// The marker of the month's report comment on the dashboard (one per month: posted again, it
/// is edited, not repeated).
pub fn marker(m: &Monthly) -> String {
    format!("<!-- upkeep:monthly-report={} -->", m.month)
}

/// What posting on the dashboard came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Posted {
    /// Posted on this issue.
    New(u64),
    /// The month's report was on this issue already: nothing posted (never twice).
    Already(u64),
}

/// Post the month's report (Markdown) on the dependency dashboard issue, once.
pub async fn post(
    forge: &impl crate::forge::Forge,
    m: &Monthly,
    scope: &crate::propose::Scope,
) -> Result<Posted, String> {
    let label = scope.dashboard_label();
    let issue = forge
        .find_issue(&label)
        .await
        .map_err(|e| e.to_string())?
        .ok_or_else(|| {
            format!(
                "no open issue labelled {label} (upkeep propose opens the dependency dashboard)"
            )
        })?;
    let mark = marker(m);
    let said = forge
        .comments(issue.number)
        .await
        .map_err(|e| e.to_string())?;
    if said.iter().any(|c| c.contains(&mark)) {
        return Ok(Posted::Already(issue.number));
    }
    forge
        .comment(issue.number, &format!("{mark}\n{}", markdown(m)))
        .await
        .map_err(|e| e.to_string())?;
    Ok(Posted::New(issue.number))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> DateTime<Utc> {
        s.parse().unwrap_or_default()
    }

    fn entry(c: &str, from: &str, to: &str, outcome: &str, start: &str, mins: i64) -> Entry {
        let s = t(start);
        Entry {
            component: c.into(),
            from: from.into(),
            to: to.into(),
            merged_at: None,
            commit: None,
            pull_request: Some(1),
            started_at: Some(s),
            ended_at: Some(s + chrono::Duration::minutes(mins)),
            duration_seconds: Some(mins * 60),
            outcome: outcome.into(),
            backup: None,
            revert: None,
            rollout: None,
            soak: None,
            nodes: Vec::new(),
            source: "cluster+git".into(),
        }
    }

    #[test]
    fn months_parse_bound_and_default_to_the_last_complete_one() {
        let m = Month::parse("2026-11").expect("month");
        let (s, e) = m.bounds(chrono_tz::Europe::Amsterdam);
        assert_eq!(
            (s, e),
            (t("2026-10-31T23:00:00Z"), t("2026-11-30T23:00:00Z"))
        );
        assert_eq!(m.label(), "November 2026");
        assert!(Month::parse("2026-13").is_err() && Month::parse("11/2026").is_err());
        assert_eq!(
            Month::previous(t("2027-01-05T00:00:00Z"), chrono_tz::UTC),
            Month {
                year: 2026,
                month: 12
            }
        );
    }

    #[test]
    fn the_month_counts_what_happened_in_it_and_how_long_after_release() {
        let entries = [
            entry(
                "k3s",
                "v1.33.4+k3s1",
                "v1.33.5+k3s1",
                "Succeeded",
                "2026-11-07T21:30:00Z",
                25,
            ),
            entry(
                "longhorn",
                "v1.9.1",
                "v1.9.2",
                "RequiresAttention",
                "2026-11-14T21:30:00Z",
                40,
            ),
            entry(
                "flux",
                "v2.6.4",
                "v2.7.0",
                "Succeeded",
                "2026-11-21T21:30:00Z",
                5,
            ),
            entry(
                "k3s",
                "v1.33.3+k3s1",
                "v1.33.4+k3s1",
                "Succeeded",
                "2026-10-31T21:30:00Z",
                25,
            ),
        ];
        let published = BTreeMap::from([
            (
                ("k3s".to_string(), "v1.33.5+k3s1".to_string()),
                t("2026-11-01T00:00:00Z"),
            ),
            (
                ("flux".to_string(), "2.7.0".to_string()),
                t("2026-11-11T00:00:00Z"),
            ),
        ]);
        let w = Window::new(
            "saturday-night",
            Kind::Allow,
            "0 22 * * 6",
            chrono::Duration::hours(4),
            chrono_tz::UTC,
            crate::windows::Selector::All,
        )
        .expect("window");
        let freeze = Freeze {
            name: "f".into(),
            from: t("2026-11-28T00:00:00Z"),
            to: t("2026-12-05T00:00:00Z"),
            components: crate::windows::Selector::All,
        };
        let m = build(&Inputs {
            month: Month::parse("2026-11").expect("month"),
            tz: chrono_tz::UTC,
            cluster: Some("homelab"),
            generated_at: t("2026-12-01T08:00:00Z"),
            entries: &entries,
            published: &published,
            windows: &[w],
            freezes: &[freeze],
            components: &[],
        });
        assert_eq!(m.applied.len(), 2, "October's is not November's");
        assert_eq!(m.failed.len(), 1);
        assert_eq!(m.applied[0].days_to_applied, Some(6.9));
        assert_eq!(m.applied[1].days_to_applied, Some(10.9));
        assert_eq!(m.median_days_to_applied, Some(8.9));
        // October 31's window runs 2 h into November; then 7, 14, 21 (28 is frozen): 2 + 3 x 4 h.
        assert_eq!(m.windows[0].open_hours, 14.0);
        assert_eq!(m.rollout_hours, 1.17);
        let md = markdown(&m);
        assert!(
            md.starts_with("# Update report: November 2026 (homelab)"),
            "{md}"
        );
        assert!(
            md.contains("- 2 updates applied, 1 failed or reverted, 0 superseded."),
            "{md}"
        );
        assert!(
            md.contains("```mermaid\npie title Rollouts in November 2026\n  \"applied\" : 2\n  \"failed or reverted\" : 1\n```"),
            "{md}"
        );
        assert!(
            md.contains(
                "| 2026-11-07 | k3s | v1.33.4+k3s1 | v1.33.5+k3s1 | 25 min | 2026-11-01 | 6.9 d |"
            ),
            "{md}"
        );
        let page = html(&m);
        assert!(
            page.contains("<svg") && page.contains("<title>1 failed</title>"),
            "{page}"
        );
        assert!(!page.contains("<script"));
    }

    #[test]
    fn text_from_outside_cannot_break_the_page_or_the_table() {
        let mut e = entry(
            "k3s",
            "v1",
            "v2<script>|x",
            "Succeeded",
            "2026-11-07T21:30:00Z",
            1,
        );
        e.soak = Some("regressed: <b>|".into());
        let m = build(&Inputs {
            month: Month::parse("2026-11").expect("month"),
            tz: chrono_tz::UTC,
            cluster: None,
            generated_at: t("2026-12-01T08:00:00Z"),
            entries: &[e],
            published: &BTreeMap::new(),
            windows: &[],
            freezes: &[],
            components: &[],
        });
        let page = html(&m);
        assert!(
            !page.contains("<script>") && page.contains("v2&lt;script&gt;|x"),
            "{page}"
        );
        let md = markdown(&m);
        assert!(md.contains("v2\\<script\\>\\|x"), "{md}");
    }
}
