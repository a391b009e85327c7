//! What upkeep tells people: the check report as data (stable JSON, see docs/check.md and
//! docs/schema/check-report.schema.json) and its renderings (a terminal table, markdown). The
//! controller, the PR report and the dashboard reuse these structs.

use std::fmt::Write as _;

use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::select::Reason;
use crate::versions::Level;

pub const KIND: &str = "CheckReport";

/// The whole report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(title = "upkeep check report (upkeep check --output json)")]
pub struct CheckReport {
    /// Always `upkeep.dev/v1alpha1`.
    pub api_version: String,
    /// Always `CheckReport`.
    pub kind: String,
    /// The `now` that ages and gates were computed at.
    pub generated_at: DateTime<Utc>,
    /// `live`, or `catalog:<path>` / `catalog:built-in` for offline runs.
    pub origin: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster: Option<String>,
    pub summary: Summary,
    /// One row per component, in versions.yaml order.
    pub components: Vec<ComponentReport>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Summary {
    pub components: usize,
    pub up_to_date: usize,
    pub updates_available: usize,
    pub held: usize,
    pub blocked: usize,
    pub failed: usize,
}

/// Where a component stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum Status {
    /// Nothing newer may be reached.
    UpToDate,
    /// `next` may be proposed now.
    UpdateAvailable,
    /// Something newer exists but policy holds it (age, level, pin, pause); `reason` says which.
    Held,
    /// Something newer exists but no legal hop leads there.
    Blocked,
    /// The source could not be read.
    Failed,
}

impl Status {
    fn label(self) -> &'static str {
        match self {
            Status::UpToDate => "up to date",
            Status::UpdateAvailable => "update",
            Status::Held => "held",
            Status::Blocked => "blocked",
            Status::Failed => "source failed",
        }
    }
}

/// One component's row.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ComponentReport {
    pub name: String,
    /// The desired version as versions.yaml writes it.
    pub current: String,
    /// Upstream's spelling of `current` (its tag), when upstream has it and writes it otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current_tag: Option<String>,
    /// `newest`, `channel stable`, or `line v1.33`.
    pub track: String,
    pub status: Status,
    /// What may be proposed now.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next: Option<ReleaseReport>,
    /// The newest version the component may reach (after track, pin, range and ignore filters).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub newest: Option<String>,
    /// The legal hops from `current` to `newest`, ending with `newest`.
    pub path: Vec<String>,
    pub path_length: usize,
    /// Why nothing is proposed (absent when `next` is set).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<Reason>,
    /// When `next` is set but a bigger legal hop exists: why that hop waits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub held: Option<Reason>,
    /// Where the releases came from, e.g. `github:k3s-io/k3s`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channel_latest: Option<String>,
    /// Releases read from the source (drafts excluded).
    pub releases_seen: usize,
    /// The update rules that shaped this component's policy.
    pub rules: Vec<String>,
    /// The time zone its times are shown in (its window's; UTC when none covers it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time_zone: Option<String>,
    /// When the component's rule lets a hop cross more than one minor, in words (the default,
    /// one minor at a time, says nothing).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub minor_steps: Option<String>,
}

/// A release proposed as the next step.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ReleaseReport {
    /// As upstream spells it (its tag: `1.23.0`, `v1.36.1+k3s1`).
    pub version: String,
    /// revision, patch, minor or major, from the current version.
    pub level: Level,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub published_at: Option<DateTime<Utc>>,
    /// Whole days since publication at `generatedAt`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub age_days: Option<i64>,
    pub prerelease: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// Release notes (markdown, trimmed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notes: Option<String>,
}

impl CheckReport {
    pub fn new(
        now: DateTime<Utc>,
        origin: &str,
        cluster: Option<String>,
        components: Vec<ComponentReport>,
    ) -> CheckReport {
        let mut s = Summary {
            components: components.len(),
            ..Summary::default()
        };
        for c in &components {
            match c.status {
                Status::UpToDate => s.up_to_date += 1,
                Status::UpdateAvailable => s.updates_available += 1,
                Status::Held => s.held += 1,
                Status::Blocked => s.blocked += 1,
                Status::Failed => s.failed += 1,
            }
        }
        CheckReport {
            api_version: crate::model::API_VERSION.to_string(),
            kind: KIND.to_string(),
            generated_at: now,
            origin: origin.to_string(),
            cluster,
            summary: s,
            components,
        }
    }

    /// `upkeep check`'s exit code: 1 when a source failed, else 10 when an update is available,
    /// else 0.
    pub fn exit_code(&self) -> i32 {
        if self.summary.failed > 0 {
            1
        } else if self.summary.updates_available > 0 {
            10
        } else {
            0
        }
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_default() + "\n"
    }
}

/// The JSON Schema of the report.
pub fn schema() -> String {
    serde_json::to_string_pretty(&schemars::schema_for!(CheckReport)).unwrap_or_default() + "\n"
}

/// Why nothing is proposed, in one short phrase (for the table's STATUS column).
fn short_reason(r: &ComponentReport) -> String {
    match &r.reason {
        None | Some(Reason::UpToDate) => r.status.label().to_string(),
        Some(Reason::Paused) => "paused".into(),
        Some(Reason::Pinned { .. }) => "pinned".into(),
        Some(Reason::NoSuchLine { what, .. }) => format!("{what} matches nothing"),
        Some(Reason::LevelNotProposed { level, .. }) => format!("{level} not proposed"),
        Some(Reason::TooYoung { .. }) => "too young".into(),
        Some(Reason::NoTimestamp { .. }) => "no release date".into(),
        Some(Reason::BlockedByPath { .. }) => "blocked by path".into(),
        Some(Reason::SourceFailed { .. }) => "source failed".into(),
    }
}

/// The full explanation, for the lines under the table and the markdown details.
pub fn explain(r: &ComponentReport) -> Option<String> {
    let text = match &r.reason {
        None => {
            let n = r.next.as_ref()?;
            let mut s = format!("{} -> {} ({})", r.current, n.version, n.level);
            if let Some(h) = &r.held {
                let why = explain_reason(h, r.time_zone.as_deref()).unwrap_or_default();
                let _ = write!(s, "; the bigger step waits: {why}");
            }
            if r.path_length > 1 || r.newest.as_deref() != Some(n.version.as_str()) {
                let _ = write!(
                    s,
                    "; the newest, {}, is {} away: {}",
                    r.newest.as_deref().unwrap_or("?"),
                    if r.path_length == 1 {
                        "1 hop".to_string()
                    } else {
                        format!("{} hops", r.path_length)
                    },
                    r.path.join(" -> ")
                );
            }
            s
        }
        Some(reason) => return explain_reason(reason, r.time_zone.as_deref()),
    };
    Some(match &r.minor_steps {
        Some(m) => format!("{text}; {m}"),
        None => text,
    })
}

/// A reason in words ("" when up to date), for PR reports and the dashboard; times in `tz`
/// (an IANA name; UTC when absent).
pub fn reason_text(reason: &Reason, tz: Option<&str>) -> String {
    explain_reason(reason, tz).unwrap_or_else(|| "up to date".into())
}

fn explain_reason(reason: &Reason, tz: Option<&str>) -> Option<String> {
    let text = match reason {
        Reason::UpToDate => return None,
        Reason::Paused => "updates are paused by policy".into(),
        Reason::Pinned { pin, newest } => {
            format!("pinned to {pin}; {newest} exists beyond the pin")
        }
        Reason::NoSuchLine { what, line, newest } => format!(
            "the {what} {line} matches no release{}",
            newest
                .as_ref()
                .map_or(String::new(), |n| format!(" (the newest is {n})"))
        ),
        Reason::LevelNotProposed { version, level } => format!(
            "the next legal step {version} is a {level} update, which the policy does not propose"
        ),
        Reason::TooYoung {
            version,
            eligible_at,
            ..
        } => format!(
            "{version} is younger than the minimum release age; eligible at {}",
            crate::windows::show_in(*eligible_at, tz)
        ),
        Reason::NoTimestamp { version } => {
            format!("{version} has no publication date, so it cannot pass the minimum release age")
        }
        Reason::BlockedByPath { detail } => format!("no legal upgrade path: {detail}"),
        Reason::SourceFailed { message, .. } => message.clone(),
    };
    Some(text)
}

/// Cut to `w` characters with an ellipsis.
fn fit(s: &str, w: usize) -> String {
    if s.chars().count() <= w {
        s.to_string()
    } else {
        let mut t: String = s.chars().take(w.saturating_sub(1)).collect();
        t.push('…');
        t
    }
}

/// Wrap words to `width` columns, continuation lines indented by `indent`.
fn wrap(text: &str, width: usize, indent: usize) -> String {
    let mut out = String::new();
    let mut col = 0;
    for word in text.split_whitespace() {
        let w = word.chars().count();
        if col > indent && col + 1 + w > width {
            out.push('\n');
            out.push_str(&" ".repeat(indent));
            col = indent;
        } else if col > 0 && col > indent {
            out.push(' ');
            col += 1;
        }
        out.push_str(&fit(word, width - indent));
        col += w.min(width - indent);
    }
    out
}

fn age(r: &ComponentReport) -> String {
    match r.next.as_ref().and_then(|n| n.age_days) {
        Some(d) if d >= 365 => format!("{}y", d / 365),
        Some(d) => format!("{d}d"),
        None => "-".into(),
    }
}

/// Table width; every line of [`table`] fits it.
pub const TABLE_WIDTH: usize = 100;

/// The terminal table: one row per component, explanations underneath. `color` adds ANSI colors
/// to the status column (only when writing to a terminal).
pub fn table(report: &CheckReport, color: bool) -> String {
    const W: [usize; 7] = [14, 14, 14, 14, 8, 4, 4];
    let mut out = String::new();
    let status_w = TABLE_WIDTH - W.iter().sum::<usize>() - W.len();
    let _ = writeln!(
        out,
        "{:<14} {:<14} {:<14} {:<14} {:<8} {:>4} {:>4} STATUS",
        "COMPONENT", "CURRENT", "NEXT", "NEWEST", "KIND", "AGE", "PATH"
    );
    for r in &report.components {
        let status = fit(&short_reason(r), status_w);
        let status = if color {
            let code = match r.status {
                Status::UpToDate => "32",
                Status::UpdateAvailable => "33;1",
                Status::Held => "36",
                Status::Blocked => "35",
                Status::Failed => "31;1",
            };
            format!("\x1b[{code}m{status}\x1b[0m")
        } else {
            status
        };
        let line = format!(
            "{:<14} {:<14} {:<14} {:<14} {:<8} {:>4} {:>4} {}",
            fit(&r.name, 14),
            fit(&r.current, 14),
            fit(r.next.as_ref().map_or("-", |n| n.version.as_str()), 14),
            fit(r.newest.as_deref().unwrap_or("-"), 14),
            r.next
                .as_ref()
                .map_or("-".to_string(), |n| n.level.to_string()),
            age(r),
            r.path_length,
            status,
        );
        out.push_str(line.trim_end());
        out.push('\n');
    }
    let details: Vec<(String, String)> = report
        .components
        .iter()
        .filter_map(|r| explain(r).map(|e| (r.name.clone(), e)))
        .collect();
    if !details.is_empty() {
        out.push('\n');
        for (name, text) in details {
            let head = format!("{}: ", fit(&name, 30));
            let indent = 2;
            let body = wrap(&format!("{head}{text}"), TABLE_WIDTH, indent);
            out.push_str(&body);
            out.push('\n');
        }
    }
    let s = &report.summary;
    let _ = writeln!(
        out,
        "\n{} component{}: {} up to date, {} with an update, {} held, {} blocked, {} failed ({})",
        s.components,
        if s.components == 1 { "" } else { "s" },
        s.up_to_date,
        s.updates_available,
        s.held,
        s.blocked,
        s.failed,
        report.origin
    );
    out
}

/// Escape text for a markdown table cell or inline text: nothing a release name or a message
/// contains may break the table or inject markup.
pub fn md_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for ch in s.chars() {
        match ch {
            '|' | '\\' | '`' | '*' | '_' | '[' | ']' | '<' | '>' | '#' | '~' | '!' => {
                out.push('\\');
                out.push(ch);
            }
            '\n' | '\r' => out.push(' '),
            c => out.push(c),
        }
    }
    out
}

/// The report as markdown (the PR report and the dashboard build on the same rows).
pub fn markdown(report: &CheckReport) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "## upkeep check\n");
    let _ = writeln!(
        out,
        "| Component | Current | Next | Newest | Kind | Released | Path | Status |"
    );
    let _ = writeln!(out, "|---|---|---|---|---|---|---|---|");
    for r in &report.components {
        let next = match &r.next {
            Some(n) => match &n.url {
                Some(u) => format!("[{}]({})", md_escape(&n.version), u.replace(')', "%29")),
                None => md_escape(&n.version),
            },
            None => "-".into(),
        };
        let released = r
            .next
            .as_ref()
            .and_then(|n| n.published_at)
            .map_or("-".to_string(), |t| {
                format!("{} ({})", t.format("%Y-%m-%d"), age(r))
            });
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} | {} | {} |",
            md_escape(&r.name),
            md_escape(&r.current),
            next,
            md_escape(r.newest.as_deref().unwrap_or("-")),
            r.next
                .as_ref()
                .map_or("-".to_string(), |n| n.level.to_string()),
            released,
            r.path_length,
            md_escape(&short_reason(r)),
        );
    }
    let details: Vec<String> = report
        .components
        .iter()
        .filter_map(|r| {
            explain(r).map(|e| format!("- **{}**: {}", md_escape(&r.name), md_escape(&e)))
        })
        .collect();
    if !details.is_empty() {
        let _ = writeln!(out, "\n{}", details.join("\n"));
    }
    let s = &report.summary;
    let _ = writeln!(
        out,
        "\n{} up to date, {} with an update, {} held, {} blocked, {} failed. Checked {} from `{}`.",
        s.up_to_date,
        s.updates_available,
        s.held,
        s.blocked,
        s.failed,
        report.generated_at.format("%Y-%m-%d %H:%M UTC"),
        report.origin.replace('`', "'"),
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(name: &str, status: Status, reason: Option<Reason>) -> ComponentReport {
        ComponentReport {
            name: name.into(),
            current: "v1.33.4+k3s1".into(),
            current_tag: None,
            track: "newest".into(),
            status,
            next: None,
            newest: Some("v1.35.10+k3s12".into()),
            path: vec!["v1.34.8+k3s1".into(), "v1.35.10+k3s12".into()],
            path_length: 2,
            reason,
            held: None,
            source: None,
            channel_latest: None,
            releases_seen: 0,
            rules: vec![],
            time_zone: None,
            minor_steps: None,
        }
    }

    fn sample() -> CheckReport {
        let mut update = row("k3s", Status::UpdateAvailable, None);
        update.next = Some(ReleaseReport {
            version: "v1.33.12+k3s1".into(),
            level: Level::Patch,
            published_at: Some("2026-11-01T00:00:00Z".parse().unwrap()),
            age_days: Some(20),
            prerelease: false,
            url: Some("https://github.com/k3s-io/k3s/releases/tag/v1.33.12%2Bk3s1".into()),
            notes: None,
        });
        let failed = row(
            "a-component-with-a-very-long-name",
            Status::Failed,
            Some(Reason::SourceFailed {
                source_kind: "github".into(),
                message: "GitHub answered 503 for owner/repo | with a pipe and a very long message that goes on and on well past the width of any terminal anyone uses".into(),
            }),
        );
        let held = row(
            "longhorn",
            Status::Held,
            Some(Reason::TooYoung {
                version: "v1.10.0".into(),
                published_at: "2026-11-20T00:00:00Z".parse().unwrap(),
                eligible_at: "2026-12-04T00:00:00Z".parse().unwrap(),
            }),
        );
        CheckReport::new(
            "2026-11-21T12:00:00Z".parse().unwrap(),
            "live",
            None,
            vec![update, failed, held],
        )
    }

    #[test]
    fn the_table_fits_100_columns_and_colors_only_when_asked() {
        let r = sample();
        let plain = table(&r, false);
        for line in plain.lines() {
            assert!(line.chars().count() <= TABLE_WIDTH, "{line:?}");
        }
        assert!(!plain.contains('\x1b'));
        assert!(plain.contains("a-component-w… v1.33.4+k3s1"), "{plain}");
        assert!(plain.contains("longhorn: v1.10.0 is younger than the minimum release age; eligible at Fri 2026-12-04 00:00 UTC"), "{plain}");
        let colored = table(&r, true);
        assert!(
            colored.contains("\x1b[31;1msource failed\x1b[0m"),
            "{colored}"
        );
    }

    #[test]
    fn markdown_escapes_what_upstream_sends() {
        let md = markdown(&sample());
        assert!(md.contains("owner/repo \\| with a pipe"), "{md}");
        assert!(
            md.contains(
                "[v1.33.12+k3s1](https://github.com/k3s-io/k3s/releases/tag/v1.33.12%2Bk3s1)"
            ),
            "{md}"
        );
        // Every table row has the same number of unescaped pipes.
        let rows: Vec<&str> = md.lines().filter(|l| l.starts_with('|')).collect();
        let pipes = |l: &str| l.replace("\\|", "").matches('|').count();
        assert!(rows.iter().all(|l| pipes(l) == 9), "{rows:#?}");
        assert_eq!(md_escape("a*b_[c]<d>`e`"), "a\\*b\\_\\[c\\]\\<d\\>\\`e\\`");
    }

    #[test]
    fn exit_codes_and_json_round_trip() {
        let r = sample();
        assert_eq!(r.exit_code(), 1, "a failed source wins");
        let back: CheckReport = serde_json::from_str(&r.to_json()).unwrap();
        assert_eq!(back, r);
        let ok = CheckReport::new(r.generated_at, "live", None, vec![r.components[0].clone()]);
        assert_eq!(ok.exit_code(), 10);
        let none = CheckReport::new(r.generated_at, "live", None, vec![r.components[2].clone()]);
        assert_eq!(none.exit_code(), 0);
    }
}
