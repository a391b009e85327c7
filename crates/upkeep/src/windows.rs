//! Maintenance windows and freezes: when work may start. Pure functions over plain data.
//!
//! Semantics (the same as Argo CD's sync windows, plus freezes):
//! - a component that no window covers may be worked on at any time;
//! - if any `allow` window covers it, work may start only while one of them is active;
//! - an active `deny` window or an active freeze beats any allow window;
//! - a window is active iff `next_start_after(now - duration) <= now`.
//!
//! Schedules are the 5-field crontab form, evaluated in the window's IANA time zone.
//! Occurrences are computed in wall-clock time and then mapped to instants:
//! - a start in the *repeated* hour (autumn) opens once, at its first occurrence;
//! - a start in the *skipped* hour (spring) opens at the end of the gap
//!   (`30 2 * * *` in Europe/Amsterdam on the last Sunday of March opens at 03:00 CEST);
//! - the duration is elapsed time: a 4h window is four real hours even across a DST change.

use std::collections::BTreeSet;
use std::str::FromStr;

use chrono::{DateTime, Duration, NaiveDateTime, TimeZone, Utc};
use chrono_tz::Tz;
use serde::Serialize;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    #[error("invalid schedule `{expr}`: {reason}")]
    Schedule { expr: String, reason: String },
    #[error("unknown time zone `{0}`")]
    TimeZone(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Which components a window or freeze applies to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Selector {
    All,
    Names(BTreeSet<String>),
}

impl Selector {
    pub fn covers(&self, component: &str) -> bool {
        match self {
            Selector::All => true,
            Selector::Names(n) => n.contains(component),
        }
    }

    /// Whether every component `other` covers is also covered by `self`.
    pub fn includes(&self, other: &Selector) -> bool {
        match (self, other) {
            (Selector::All, _) => true,
            (Selector::Names(_), Selector::All) => false,
            (Selector::Names(a), Selector::Names(b)) => b.is_subset(a),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Allow,
    Deny,
}

/// A compiled maintenance window.
#[derive(Debug, Clone)]
pub struct Window {
    pub name: String,
    pub kind: Kind,
    /// The crontab expression as the user wrote it.
    pub crontab: String,
    schedule: cron::Schedule,
    pub duration: Duration,
    pub tz: Tz,
    pub components: Selector,
}

/// A compiled freeze: nothing starts in `[from, to)`.
#[derive(Debug, Clone)]
pub struct Freeze {
    pub name: String,
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
    pub components: Selector,
}

impl Freeze {
    pub fn is_active(&self, now: DateTime<Utc>) -> bool {
        self.from <= now && now < self.to
    }
}

/// The zone a component's times are shown in: that of the first allow window covering it (the
/// one its work waits for), else of any window covering it, else UTC.
pub fn zone_for(component: &str, windows: &[Window]) -> Tz {
    let covering = || windows.iter().filter(|w| w.components.covers(component));
    covering()
        .find(|w| w.kind == Kind::Allow)
        .or_else(|| covering().next())
        .map_or(Tz::UTC, |w| w.tz)
}

/// A time as people read it, in `tz` with its offset: `Sat 2026-11-28 22:00 CET (UTC+01:00)`;
/// in UTC, `Sat 2026-11-28 22:00 UTC`.
pub fn show(t: DateTime<Utc>, tz: Tz) -> String {
    let local = t.with_timezone(&tz);
    if tz == Tz::UTC {
        local.format("%a %Y-%m-%d %H:%M UTC").to_string()
    } else {
        local.format("%a %Y-%m-%d %H:%M %Z (UTC%:z)").to_string()
    }
}

/// [`show`] in the zone named `tz` (an IANA name; UTC when absent or unknown).
pub fn show_in(t: DateTime<Utc>, tz: Option<&str>) -> String {
    show(t, tz.and_then(|n| Tz::from_str(n).ok()).unwrap_or(Tz::UTC))
}

pub fn parse_tz(name: &str) -> Result<Tz> {
    Tz::from_str(name).map_err(|_| Error::TimeZone(name.to_string()))
}

/// Translate the 5-field crontab form (`min hour dom month dow`, Sunday = 0 or 7) into the
/// `cron` crate's form (seconds first, Sunday = 1).
pub fn crontab_to_cron(expr: &str) -> Result<String> {
    let bad = |reason: &str| Error::Schedule {
        expr: expr.to_string(),
        reason: reason.to_string(),
    };
    let e = expr.trim();
    let e = match e {
        "@hourly" => "0 * * * *",
        "@daily" | "@midnight" => "0 0 * * *",
        "@weekly" => "0 0 * * 0",
        "@monthly" => "0 0 1 * *",
        "@yearly" | "@annually" => "0 0 1 1 *",
        s if s.starts_with('@') => {
            return Err(bad(
                "only @hourly, @daily, @weekly, @monthly and @yearly are understood",
            ));
        }
        s => s,
    };
    let fields: Vec<&str> = e.split_whitespace().collect();
    if fields.len() != 5 {
        return Err(bad(&format!(
            "it has {} fields, crontab has 5",
            fields.len()
        )));
    }
    let unrestricted = |f: &str| f == "*" || f == "?";
    if !unrestricted(fields[2]) && !unrestricted(fields[4]) {
        return Err(bad(
            "it restricts both day-of-month and day-of-week, which crontab combines with OR; restrict only one",
        ));
    }
    const MONTHS: [&str; 12] = [
        "JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC",
    ];
    const DAYS: [&str; 7] = ["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"];
    let mut out = vec!["0".to_string()];
    for (i, spec) in [
        Field::new("minute", 0, 59),
        Field::new("hour", 0, 23),
        Field::new("day of month", 1, 31),
        Field {
            names: &MONTHS,
            ..Field::new("month", 1, 12)
        },
        Field {
            names: &DAYS,
            ..Field::new("day of week", 0, 7)
        },
    ]
    .iter()
    .enumerate()
    {
        let items = fields[i]
            .split(',')
            .map(|item| spec.item(item))
            .collect::<std::result::Result<Vec<_>, _>>()
            .map_err(|r| bad(&r))?;
        out.push(items.join(","));
    }
    Ok(out.join(" "))
}

/// One crontab field: its name, range and (for month and day of week) names.
struct Field {
    what: &'static str,
    lo: u32,
    hi: u32,
    names: &'static [&'static str],
}

impl Field {
    const fn new(what: &'static str, lo: u32, hi: u32) -> Self {
        Field {
            what,
            lo,
            hi,
            names: &[],
        }
    }

    /// A value as a number: digits in range, or a name (`JAN` is 1, `SUN` is 0).
    fn value(&self, s: &str) -> std::result::Result<u32, String> {
        let what = self.what;
        if s.is_empty() {
            return Err(format!("the {what} field has an empty part"));
        }
        if s.bytes().all(|b| b.is_ascii_digit()) {
            return match s.parse::<u32>() {
                Ok(v) if (self.lo..=self.hi).contains(&v) => Ok(v),
                _ if self.what == "day of week" => Err(format!(
                    "day of week `{s}` is out of range: use 0-7 (0 and 7 are Sunday) or a name like SAT"
                )),
                _ => Err(format!(
                    "{what} `{s}` is out of range {}-{}",
                    self.lo, self.hi
                )),
            };
        }
        let upper = s.to_ascii_uppercase();
        if let Some(i) = self.names.iter().position(|n| *n == upper) {
            return Ok(i as u32 + if self.what == "month" { 1 } else { 0 });
        }
        let shown: String = s
            .chars()
            .take(20)
            .collect::<String>()
            .escape_debug()
            .to_string();
        let special = if s.contains(['#', 'L', 'W']) {
            " (`L`, `W` and `#` are Quartz extensions, not crontab)"
        } else {
            ""
        };
        Err(match self.names.first().zip(self.names.last()) {
            Some((first, last)) => format!(
                "{what} `{shown}` is neither a number {}-{} nor a name {first}-{last}{special}",
                self.lo, self.hi
            ),
            None => format!(
                "{what} `{shown}` is not a number {}-{}{special}",
                self.lo, self.hi
            ),
        })
    }

    /// One comma-separated item (`*`, `5`, `1-5`, `*/15`, `MON-FRI/2`) in the cron crate's
    /// numbers: names become numbers, and crontab's day-of-week numbers (0-7, Sunday 0 or 7)
    /// become the crate's (1-7, Sunday 1). Messages quote the item as written.
    fn item(&self, item: &str) -> std::result::Result<String, String> {
        let what = self.what;
        let (base, step) = match item.split_once('/') {
            Some((b, s)) => (b, Some(s)),
            None => (item, None),
        };
        if let Some(st) = step
            && !st.parse::<u32>().is_ok_and(|n| n >= 1)
        {
            return Err(format!(
                "the {what} step `/{st}` must be a number of 1 or more"
            ));
        }
        let suffix = step.map(|s| format!("/{s}")).unwrap_or_default();
        let dow = what == "day of week";
        // crontab 0..=6 (Sun..Sat), 7 = Sun  ->  cron crate 1..=7 (Sun..Sat)
        let shift = |n: u32| {
            if !dow {
                n
            } else if n == 7 {
                1
            } else {
                n + 1
            }
        };
        if base == "*" || base == "?" {
            return Ok(format!("*{suffix}"));
        }
        let Some((a, b)) = base.split_once('-') else {
            return Ok(format!("{}{suffix}", shift(self.value(base)?)));
        };
        let (a, b) = (self.value(a)?, self.value(b)?);
        if a > b {
            let top = if dow { 6 } else { self.hi };
            let part = |x: u32, y: u32| {
                if x == y {
                    x.to_string()
                } else {
                    format!("{x}-{y}")
                }
            };
            return Err(format!(
                "the {what} range `{base}` runs backwards: crontab ranges go from low to high, so write it as `{},{}`",
                part(a, top),
                part(self.lo, b)
            ));
        }
        if dow && b == 7 {
            if step.is_some() {
                return Err(
                    "a stepped day-of-week range cannot end at 7; write Sunday as 0".to_string(),
                );
            }
            // `5-7` (Fri..Sun) becomes `6-7,1`
            return Ok(match a {
                0 => "1-7".to_string(),
                7 => "1".to_string(),
                a => format!("{}-7,1", a + 1),
            });
        }
        Ok(format!("{}-{}{suffix}", shift(a), shift(b)))
    }
}

pub fn parse_schedule(expr: &str) -> Result<cron::Schedule> {
    let c = crontab_to_cron(expr)?;
    cron::Schedule::from_str(&c).map_err(|e| Error::Schedule {
        expr: expr.to_string(),
        // The crate's message spans lines and shows its own 6-field form; keep its last line.
        // Its last line can be a bare `^` under an echo of that form: take the last line
        // that says something.
        reason: e
            .to_string()
            .lines()
            .rev()
            .map(str::trim)
            .find(|l| l.chars().any(char::is_alphanumeric) && !l.starts_with("0 "))
            .unwrap_or("the schedule is not understood")
            .to_string(),
    })
}

/// Map a wall-clock time in `tz` to an instant: the first one for a repeated time, the end of
/// the gap for a skipped time.
pub fn local_to_instant(tz: &Tz, local: NaiveDateTime) -> Option<DateTime<Utc>> {
    if let Some(d) = tz.from_local_datetime(&local).earliest() {
        return Some(d.with_timezone(&Utc));
    }
    // In a gap: the first whole minute after it that exists. Gaps are at most a few hours.
    (1..=24 * 60).find_map(|m| {
        tz.from_local_datetime(&(local + Duration::minutes(m)))
            .earliest()
            .map(|d| d.with_timezone(&Utc))
    })
}

impl Window {
    pub fn new(
        name: &str,
        kind: Kind,
        crontab: &str,
        duration: Duration,
        tz: Tz,
        components: Selector,
    ) -> Result<Self> {
        Ok(Window {
            name: name.to_string(),
            kind,
            crontab: crontab.to_string(),
            schedule: parse_schedule(crontab)?,
            duration,
            tz,
            components,
        })
    }

    /// Window starts strictly after `t`, as instants, in order.
    pub fn starts_after(&self, t: DateTime<Utc>) -> impl Iterator<Item = DateTime<Utc>> + '_ {
        // Begin a few hours early in wall-clock time so DST offsets cannot hide a start.
        let local = t.with_timezone(&self.tz).naive_local() - Duration::hours(4);
        let floating = Utc.from_utc_datetime(&local);
        let tz = self.tz;
        let mut last: Option<DateTime<Utc>> = None;
        self.schedule
            .after_owned(floating)
            .filter_map(move |occ| local_to_instant(&tz, occ.naive_utc()))
            .filter(move |s| {
                // Two skipped wall-clock times can map to the same instant: keep one.
                let fresh = last != Some(*s);
                last = Some(*s);
                fresh
            })
            .skip_while(move |s| *s <= t)
    }

    /// Argo CD's rule: active iff `next(now - duration) <= now`.
    pub fn is_active(&self, now: DateTime<Utc>) -> bool {
        self.starts_after(now - self.duration)
            .next()
            .is_some_and(|s| s <= now)
    }

    /// When the window, active at `now`, closes (the latest end of the occurrences open at `now`).
    pub fn active_until(&self, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.starts_after(now - self.duration)
            .take(100_000)
            .take_while(|s| *s <= now)
            .last()
            .map(|s| s + self.duration)
    }
}

/// Why work may or may not start now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "decision", rename_all = "camelCase")]
pub enum Decision {
    /// No window covers the component: any time is fine.
    #[serde(rename_all = "camelCase")]
    AnyTime,
    /// An allow window is open.
    #[serde(rename_all = "camelCase")]
    InWindow {
        window: String,
        closes: DateTime<Utc>,
    },
    /// An emergency override lets the work through outside windows.
    #[serde(rename_all = "camelCase")]
    Emergency,
    /// Allow windows cover the component and none is open; `next` is when work may start.
    #[serde(rename_all = "camelCase")]
    Wait { next: Option<DateTime<Utc>> },
    /// A deny window is open.
    #[serde(rename_all = "camelCase")]
    Denied {
        window: String,
        until: DateTime<Utc>,
    },
    /// A freeze is in force.
    #[serde(rename_all = "camelCase")]
    Frozen {
        freeze: String,
        until: DateTime<Utc>,
    },
}

impl Decision {
    pub fn allows_start(&self) -> bool {
        matches!(
            self,
            Decision::AnyTime | Decision::InWindow { .. } | Decision::Emergency
        )
    }
}

/// An emergency override from a labelled PR.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Override {
    pub emergency: bool,
    /// Whether the emergency also goes through freezes (policy decides).
    pub bypass_freezes: bool,
}

/// How far ahead `next_start` looks.
pub const HORIZON_DAYS: i64 = 400;
const MAX_CANDIDATES_PER_SOURCE: usize = 5_000;

/// Whether work on `component` may start at `now` (without computing the next opening).
pub fn decide_now(
    now: DateTime<Utc>,
    component: &str,
    windows: &[Window],
    freezes: &[Freeze],
    ov: Override,
) -> Decision {
    if let Some(f) = freezes
        .iter()
        .find(|f| f.components.covers(component) && f.is_active(now))
        && !(ov.emergency && ov.bypass_freezes)
    {
        return Decision::Frozen {
            freeze: f.name.clone(),
            until: f.to,
        };
    }
    if ov.emergency {
        return Decision::Emergency;
    }
    let covering = || windows.iter().filter(|w| w.components.covers(component));
    if let Some(w) = covering().find(|w| w.kind == Kind::Deny && w.is_active(now)) {
        return Decision::Denied {
            window: w.name.clone(),
            until: w.active_until(now).unwrap_or(now),
        };
    }
    let mut allows = covering().filter(|w| w.kind == Kind::Allow).peekable();
    if allows.peek().is_none() {
        return Decision::AnyTime;
    }
    let open = allows
        .filter_map(|w| w.active_until(now).map(|c| (w, c)))
        .max_by_key(|(_, c)| *c);
    match open {
        Some((w, closes)) => Decision::InWindow {
            window: w.name.clone(),
            closes,
        },
        None => Decision::Wait { next: None },
    }
}

/// Like [`decide_now`], and when work must wait, also when it may next start.
pub fn decide(
    now: DateTime<Utc>,
    component: &str,
    windows: &[Window],
    freezes: &[Freeze],
    ov: Override,
) -> Decision {
    match decide_now(now, component, windows, freezes, ov) {
        Decision::Wait { .. } => Decision::Wait {
            next: next_start(now, component, windows, freezes, ov),
        },
        d => d,
    }
}

/// A window's occurrences as half-open intervals `[start, end)` that can touch `[from, until]`,
/// in order, at most [`MAX_CANDIDATES_PER_SOURCE`] of them, with the instant up to which the
/// list is complete (`until`, or the last start when the cap cut it short).
struct Occurrences {
    spans: Vec<(DateTime<Utc>, DateTime<Utc>)>,
    known_until: DateTime<Utc>,
}

fn occurrences(w: &Window, from: DateTime<Utc>, until: DateTime<Utc>) -> Occurrences {
    let spans: Vec<_> = w
        .starts_after(from - w.duration)
        .take_while(|s| *s <= until)
        .take(MAX_CANDIDATES_PER_SOURCE)
        .map(|s| (s, s + w.duration))
        .filter(|(_, e)| *e > from)
        .collect();
    let known_until = match spans.last() {
        Some((s, _)) if spans.len() == MAX_CANDIDATES_PER_SOURCE => *s,
        _ => until,
    };
    Occurrences { spans, known_until }
}

/// How long an allow window was open in `[from, until)`, less the freezes (a window's time in a
/// freeze cannot be used). At most [`MAX_CANDIDATES_PER_SOURCE`] occurrences are counted.
pub fn open_time(
    w: &Window,
    from: DateTime<Utc>,
    until: DateTime<Utc>,
    freezes: &[Freeze],
) -> Duration {
    let clipped: Vec<_> = occurrences(w, from, until)
        .spans
        .into_iter()
        .map(|(s, e)| (s.max(from), e.min(until)))
        .filter(|(s, e)| s < e)
        .collect();
    let frozen = union(freezes.iter().map(|f| (f.from, f.to)).collect());
    union(clipped)
        .into_iter()
        .map(|(s, e)| {
            let lost: Duration = frozen
                .iter()
                .map(|(fs, fe)| {
                    let (a, b) = (s.max(*fs), e.min(*fe));
                    if a < b { b - a } else { Duration::zero() }
                })
                .fold(Duration::zero(), |x, y| x + y);
            (e - s) - lost
        })
        .fold(Duration::zero(), |x, y| x + y)
}

/// The union of intervals, sorted and merged (touching intervals merge: `[a,b)` and `[b,c)`
/// cover `[a,c)` without a gap).
fn union(mut spans: Vec<(DateTime<Utc>, DateTime<Utc>)>) -> Vec<(DateTime<Utc>, DateTime<Utc>)> {
    spans.sort();
    let mut out: Vec<(DateTime<Utc>, DateTime<Utc>)> = Vec::with_capacity(spans.len());
    for (s, e) in spans {
        match out.last_mut() {
            Some(last) if s <= last.1 => last.1 = last.1.max(e),
            _ => out.push((s, e)),
        }
    }
    out
}

/// Membership of ascending instants in a sorted, merged union, in one pass.
struct Cursor<'a> {
    spans: &'a [(DateTime<Utc>, DateTime<Utc>)],
    at: usize,
}

impl<'a> Cursor<'a> {
    fn new(spans: &'a [(DateTime<Utc>, DateTime<Utc>)]) -> Self {
        Cursor { spans, at: 0 }
    }
    /// The merged interval holding `t`, if any. `t` must not decrease between calls.
    fn holding(&mut self, t: DateTime<Utc>) -> Option<(DateTime<Utc>, DateTime<Utc>)> {
        while self.spans.get(self.at).is_some_and(|(_, e)| *e <= t) {
            self.at += 1;
        }
        self.spans.get(self.at).copied().filter(|(s, _)| *s <= t)
    }
}

/// The first instant at or after `now` (within [`HORIZON_DAYS`]) at which work may start.
///
/// One sweep over the occurrences of the windows and freezes that cover the component: linear
/// in the occurrences (at most [`MAX_CANDIDATES_PER_SOURCE`] per window), however many windows
/// there are. When a window's cap cuts the look-ahead short, the answer is only given up to
/// there: `None` then means "not soon", never a wrong instant.
pub fn next_start(
    now: DateTime<Utc>,
    component: &str,
    windows: &[Window],
    freezes: &[Freeze],
    ov: Override,
) -> Option<DateTime<Utc>> {
    // Look a day ahead first, then a fortnight, then the whole horizon: the next start is
    // usually soon, and the occurrences up to a nearer horizon are all that decide it (an
    // occurrence that could cover an instant starts before it).
    for days in [1, 16, HORIZON_DAYS] {
        let (found, complete) = next_start_within(now, days, component, windows, freezes, ov);
        if found.is_some() || !complete {
            return found;
        }
    }
    None
}

/// [`next_start`] up to `days` ahead; also whether the occurrences were complete up to there
/// (false when a window's cap cut them short: looking further cannot tell more).
fn next_start_within(
    now: DateTime<Utc>,
    days: i64,
    component: &str,
    windows: &[Window],
    freezes: &[Freeze],
    ov: Override,
) -> (Option<DateTime<Utc>>, bool) {
    let horizon = now + Duration::days(days);
    let freezes_hold = !(ov.emergency && ov.bypass_freezes);
    let frozen = union(
        freezes
            .iter()
            .filter(|f| freezes_hold && f.components.covers(component) && f.to > now)
            .map(|f| (f.from, f.to))
            .collect(),
    );
    let mut candidates = vec![now];
    candidates.extend(frozen.iter().map(|(_, e)| *e));
    let mut known = horizon;
    let (mut allow, mut deny, mut any_allow) = (Vec::new(), Vec::new(), false);
    if !ov.emergency {
        for w in windows.iter().filter(|w| w.components.covers(component)) {
            let occ = occurrences(w, now, horizon);
            known = known.min(occ.known_until);
            match w.kind {
                Kind::Allow => {
                    any_allow = true;
                    candidates.extend(occ.spans.iter().map(|(s, _)| *s));
                    allow.extend(occ.spans);
                }
                Kind::Deny => {
                    candidates.extend(occ.spans.iter().map(|(_, e)| *e));
                    deny.extend(occ.spans);
                }
            }
        }
    }
    let (allow, deny) = (union(allow), union(deny));
    let (mut allow, mut deny, mut frozen) = (
        Cursor::new(&allow),
        Cursor::new(&deny),
        Cursor::new(&frozen),
    );
    candidates.retain(|t| *t >= now && *t <= known);
    candidates.sort();
    candidates.dedup();
    let found = candidates.into_iter().find(|t| {
        // Evaluate all three so each cursor sees every (ascending) candidate.
        let in_allow = allow.holding(*t).is_some();
        let opened = !any_allow || in_allow;
        let denied = deny.holding(*t).is_some();
        let is_frozen = frozen.holding(*t).is_some();
        opened && !denied && !is_frozen
    });
    (found, known >= horizon)
}

/// A look-ahead span in words: "400 days", "3 days", "17 hours", "40 minutes" (rounded down).
pub fn span(d: Duration) -> String {
    let plural = |n: i64, unit: &str| format!("{n} {unit}{}", if n == 1 { "" } else { "s" });
    if d.num_days() >= 1 {
        plural(d.num_days(), "day")
    } else if d.num_hours() >= 1 {
        plural(d.num_hours(), "hour")
    } else {
        plural(d.num_minutes(), "minute")
    }
}

/// An allow window that can never open, and why.
#[derive(Debug)]
pub struct NeverOpens<'a> {
    /// The index of the allow window in the slice given.
    pub allow: usize,
    /// The deny windows that cover all its components and, together, all its occurrences.
    pub by: Vec<&'a Window>,
    /// How far ahead that was checked (the horizon, or less when a schedule fires so often that
    /// the look-ahead was capped).
    pub checked: Duration,
}

/// The allow windows whose every occurrence within the horizon is covered by deny windows that
/// cover all its components. Each window's occurrences are computed once, and each allow window
/// is judged in one sweep: linear in the occurrences, bounded by [`MAX_CANDIDATES_PER_SOURCE`]
/// per window (a budget, so a schedule that fires every minute cannot hang `validate`).
pub fn never_open(windows: &[Window], now: DateTime<Utc>) -> Vec<NeverOpens<'_>> {
    let horizon = now + Duration::days(HORIZON_DAYS);
    let mut out = Vec::new();
    let mut deny_occ: Vec<Option<Occurrences>> = windows.iter().map(|_| None).collect();
    // Deny occurrences must reach past the end of the last allow occurrence judged.
    let longest = windows
        .iter()
        .filter(|w| w.kind == Kind::Allow)
        .map(|w| w.duration)
        .max()
        .unwrap_or_default();
    for (i, a) in windows.iter().enumerate() {
        if a.kind != Kind::Allow {
            continue;
        }
        let denies: Vec<usize> = (0..windows.len())
            .filter(|d| {
                windows[*d].kind == Kind::Deny && windows[*d].components.includes(&a.components)
            })
            .collect();
        if denies.is_empty() {
            continue;
        }
        let mine = occurrences(a, now, horizon);
        let mut known = mine.known_until;
        let mut covered = Vec::new();
        for d in &denies {
            let occ = deny_occ[*d]
                .get_or_insert_with(|| occurrences(&windows[*d], now, horizon + longest));
            known = known.min(occ.known_until);
            covered.extend(occ.spans.iter().copied());
        }
        let covered = union(covered);
        let mut cursor = Cursor::new(&covered);
        let mut judged = 0;
        let mut all_blocked = true;
        for (s, e) in mine.spans.iter().filter(|(s, _)| *s >= now) {
            if *e > known {
                break;
            }
            judged += 1;
            if cursor.holding(*s).is_none_or(|(_, end)| end < *e) {
                all_blocked = false;
                break;
            }
        }
        if all_blocked && judged > 0 {
            out.push(NeverOpens {
                allow: i,
                by: denies.iter().map(|d| &windows[*d]).collect(),
                checked: known - now,
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_show_in_the_components_window_zone_with_the_offset() {
        let t: DateTime<Utc> = "2026-11-28T21:00:00Z".parse().unwrap_or_default();
        let berlin = win(Kind::Allow, "0 22 * * 6", 4, "Europe/Berlin");
        let tokyo = win(Kind::Deny, "0 1 * * *", 1, "Asia/Tokyo");
        assert_eq!(
            show(t, zone_for("k3s", &[tokyo.clone(), berlin])),
            "Sat 2026-11-28 22:00 CET (UTC+01:00)"
        );
        assert_eq!(
            show(t, zone_for("k3s", &[tokyo])),
            "Sun 2026-11-29 06:00 JST (UTC+09:00)"
        );
        assert_eq!(show(t, zone_for("k3s", &[])), "Sat 2026-11-28 21:00 UTC");
        assert_eq!(
            show_in(t, Some("nowhere/atall")),
            "Sat 2026-11-28 21:00 UTC"
        );
    }
    use chrono::TimeZone;

    fn utc(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }
    fn win(kind: Kind, cron: &str, hours: i64, tz: &str) -> Window {
        Window::new(
            "w",
            kind,
            cron,
            Duration::hours(hours),
            parse_tz(tz).unwrap(),
            Selector::All,
        )
        .unwrap()
    }

    #[test]
    fn crontab_translation() {
        assert_eq!(crontab_to_cron("0 22 * * 6").unwrap(), "0 0 22 * * 7");
        assert_eq!(crontab_to_cron("0 22 * * 0").unwrap(), "0 0 22 * * 1");
        assert_eq!(crontab_to_cron("0 22 * * 7").unwrap(), "0 0 22 * * 1");
        assert_eq!(crontab_to_cron("0 2 * * 1-5").unwrap(), "0 0 2 * * 2-6");
        assert_eq!(crontab_to_cron("0 2 * * 5-7").unwrap(), "0 0 2 * * 6-7,1");
        assert_eq!(crontab_to_cron("0 2 * * */2").unwrap(), "0 0 2 * * */2");
        assert_eq!(crontab_to_cron("0 2 * * SAT,SUN").unwrap(), "0 0 2 * * 7,1");
        assert_eq!(crontab_to_cron("0 2 * * MON-7").unwrap(), "0 0 2 * * 2-7,1");
        assert_eq!(crontab_to_cron("0 2 * mar-may *").unwrap(), "0 0 2 * 3-5 *");
        assert_eq!(crontab_to_cron("@weekly").unwrap(), "0 0 0 * * 1");
        assert!(crontab_to_cron("0 0 22 * * 6").is_err());
        assert!(crontab_to_cron("0 22 1 * 6").is_err());
        assert!(crontab_to_cron("0 22 * * 8").is_err());
        assert_eq!(
            parse_schedule("61 22 * * 6").unwrap_err().to_string(),
            "invalid schedule `61 22 * * 6`: minute `61` is out of range 0-59"
        );
        assert!(parse_schedule("0 22 * 13 *").is_err());
        assert!(parse_schedule("*/0 22 * * *").is_err());
        assert!(parse_schedule("0 22 * JAN-MAR SAT").is_ok());
        // Messages speak crontab, in the user's own spelling, never the crate's internal form.
        let reason = |e: &str| match parse_schedule(e) {
            Err(Error::Schedule { reason, .. }) => reason,
            other => format!("{other:?}"),
        };
        assert_eq!(
            reason("0 22 * * 6-1"),
            "the day of week range `6-1` runs backwards: crontab ranges go from low to high, so write it as `6,0-1`"
        );
        assert_eq!(
            reason("0 22 * * FRI-MON"),
            "the day of week range `FRI-MON` runs backwards: crontab ranges go from low to high, so write it as `5-6,0-1`"
        );
        assert_eq!(
            reason("50-10 * * * *"),
            "the minute range `50-10` runs backwards: crontab ranges go from low to high, so write it as `50-59,0-10`"
        );
        assert_eq!(
            reason("0 22 * * 1#2"),
            "day of week `1#2` is neither a number 0-7 nor a name SUN-SAT (`L`, `W` and `#` are Quartz extensions, not crontab)"
        );
        assert_eq!(reason("0 2x * * *"), "hour `2x` is not a number 0-23");
        assert_eq!(
            reason("0 22 * JANX *"),
            "month `JANX` is neither a number 1-12 nor a name JAN-DEC"
        );
    }

    #[test]
    fn weekday_numbers_mean_what_crontab_means() {
        // 2026-11-21 is a Saturday.
        let w = win(Kind::Allow, "0 22 * * 6", 4, "UTC");
        let next = w.starts_after(utc("2026-11-16T00:00:00Z")).next().unwrap();
        assert_eq!(next, utc("2026-11-21T22:00:00Z"));
        let sun = win(Kind::Allow, "0 3 * * 0", 1, "UTC");
        assert_eq!(
            sun.starts_after(utc("2026-11-16T00:00:00Z"))
                .next()
                .unwrap(),
            utc("2026-11-22T03:00:00Z")
        );
    }

    #[test]
    fn active_iff_next_of_now_minus_duration_is_not_after_now() {
        let w = win(Kind::Allow, "0 22 * * 6", 4, "UTC");
        assert!(!w.is_active(utc("2026-11-21T21:59:59Z")));
        assert!(w.is_active(utc("2026-11-21T22:00:00Z")));
        assert!(w.is_active(utc("2026-11-22T01:59:59Z")));
        assert!(!w.is_active(utc("2026-11-22T02:00:00Z")));
        assert_eq!(
            w.active_until(utc("2026-11-21T23:00:00Z")),
            Some(utc("2026-11-22T02:00:00Z"))
        );
    }

    #[test]
    fn windows_cross_midnight() {
        let w = win(Kind::Allow, "0 23 * * 5", 3, "Europe/Amsterdam"); // Fri 23:00 - Sat 02:00
        assert!(w.is_active(utc("2026-11-21T00:30:00Z"))); // Sat 01:30 CET
        assert!(!w.is_active(utc("2026-11-21T01:00:00Z"))); // Sat 02:00 CET
    }

    #[test]
    fn amsterdam_spring_forward_skipped_hour_opens_at_end_of_gap() {
        // 2026-03-29: 02:00 CET -> 03:00 CEST. A 02:30 start does not exist that day.
        let w = win(Kind::Allow, "30 2 * * *", 2, "Europe/Amsterdam");
        let starts: Vec<_> = w
            .starts_after(utc("2026-03-27T12:00:00Z"))
            .take(3)
            .collect();
        assert_eq!(
            starts,
            [
                utc("2026-03-28T01:30:00Z"), // 02:30 CET
                utc("2026-03-29T01:00:00Z"), // 03:00 CEST, the end of the gap
                utc("2026-03-30T00:30:00Z"), // 02:30 CEST
            ]
        );
        // Elapsed duration: open 2 real hours from 03:00 CEST.
        assert!(w.is_active(utc("2026-03-29T02:59:00Z")));
        assert!(!w.is_active(utc("2026-03-29T03:00:00Z")));
    }

    #[test]
    fn amsterdam_fall_back_repeated_hour_opens_once() {
        // 2026-10-25: 03:00 CEST -> 02:00 CET; 02:30 happens twice.
        let w = win(Kind::Allow, "30 2 * * *", 1, "Europe/Amsterdam");
        let starts: Vec<_> = w
            .starts_after(utc("2026-10-24T12:00:00Z"))
            .take(2)
            .collect();
        assert_eq!(
            starts,
            [utc("2026-10-25T00:30:00Z"), utc("2026-10-26T01:30:00Z")]
        );
        assert!(w.is_active(utc("2026-10-25T01:15:00Z")));
        // The second 02:30 (CET, 01:30Z) is not a new opening.
        assert!(!w.is_active(utc("2026-10-25T01:45:00Z")));
    }

    #[test]
    fn new_york_transitions() {
        // 2026-03-08 02:00 EST -> 03:00 EDT; 2026-11-01 02:00 EDT -> 01:00 EST.
        let w = win(Kind::Allow, "15 2 * * *", 1, "America/New_York");
        let s: Vec<_> = w
            .starts_after(utc("2026-03-07T12:00:00Z"))
            .take(2)
            .collect();
        assert_eq!(
            s,
            [utc("2026-03-08T07:00:00Z"), utc("2026-03-09T06:15:00Z")]
        );
        let r = win(Kind::Allow, "30 1 * * *", 1, "America/New_York");
        let s: Vec<_> = r
            .starts_after(utc("2026-10-31T12:00:00Z"))
            .take(2)
            .collect();
        assert_eq!(
            s,
            [utc("2026-11-01T05:30:00Z"), utc("2026-11-02T06:30:00Z")]
        );
        // A window across the change keeps its real length: 22:00 EDT + 6h = 03:00 EST.
        let long = win(Kind::Allow, "0 22 * * 6", 6, "America/New_York");
        assert_eq!(
            long.active_until(utc("2026-11-01T03:00:00Z")),
            Some(utc("2026-11-01T08:00:00Z"))
        );
    }

    #[test]
    fn decisions() {
        let sat = win(Kind::Allow, "0 22 * * 6", 4, "UTC");
        let mut deny = win(Kind::Deny, "0 23 * * 6", 1, "UTC");
        deny.name = "d".into();
        let freeze = Freeze {
            name: "year-end".into(),
            from: utc("2026-12-20T00:00:00Z"),
            to: utc("2027-01-04T00:00:00Z"),
            components: Selector::All,
        };
        let ws = vec![sat.clone(), deny];
        let fs = vec![freeze];
        let none = Override::default();
        assert_eq!(
            decide(utc("2026-11-21T10:00:00Z"), "k3s", &[], &[], none),
            Decision::AnyTime
        );
        assert_eq!(
            decide(utc("2026-11-21T10:00:00Z"), "k3s", &ws, &fs, none),
            Decision::Wait {
                next: Some(utc("2026-11-21T22:00:00Z"))
            }
        );
        assert!(matches!(
            decide(utc("2026-11-21T22:30:00Z"), "k3s", &ws, &fs, none),
            Decision::InWindow { .. }
        ));
        assert_eq!(
            decide(utc("2026-11-21T23:30:00Z"), "k3s", &ws, &fs, none),
            Decision::Denied {
                window: "d".into(),
                until: utc("2026-11-22T00:00:00Z")
            }
        );
        // Frozen beats an open allow window; the next start is the first window after the freeze.
        let in_freeze = utc("2026-12-26T22:30:00Z");
        assert!(matches!(
            decide(in_freeze, "k3s", &ws, &fs, none),
            Decision::Frozen { .. }
        ));
        assert_eq!(
            next_start(utc("2026-12-21T00:00:00Z"), "k3s", &ws, &fs, none),
            Some(utc("2027-01-09T22:00:00Z"))
        );
        // Emergency bypasses windows but not freezes, unless policy says so.
        let em = Override {
            emergency: true,
            bypass_freezes: false,
        };
        assert_eq!(
            decide(utc("2026-11-21T10:00:00Z"), "k3s", &ws, &fs, em),
            Decision::Emergency
        );
        assert!(matches!(
            decide(in_freeze, "k3s", &ws, &fs, em),
            Decision::Frozen { .. }
        ));
        let em2 = Override {
            emergency: true,
            bypass_freezes: true,
        };
        assert_eq!(decide(in_freeze, "k3s", &ws, &fs, em2), Decision::Emergency);
    }

    #[test]
    fn windows_only_apply_to_their_components() {
        let mut w = win(Kind::Allow, "0 22 * * 6", 4, "UTC");
        w.components = Selector::Names(["longhorn".to_string()].into());
        let now = utc("2026-11-21T10:00:00Z");
        assert_eq!(
            decide(now, "k3s", &[w.clone()], &[], Override::default()),
            Decision::AnyTime
        );
        assert!(matches!(
            decide(now, "longhorn", &[w], &[], Override::default()),
            Decision::Wait { next: Some(_) }
        ));
    }

    #[test]
    fn a_schedule_with_no_date_ends_quickly() {
        let w = win(Kind::Allow, "0 0 30 2 *", 1, "UTC"); // 30 February
        assert_eq!(w.starts_after(utc("2026-11-21T00:00:00Z")).next(), None);
        assert!(!w.is_active(utc("2026-11-21T00:00:00Z")));
        assert_eq!(
            next_start(
                utc("2026-11-21T00:00:00Z"),
                "k3s",
                &[w],
                &[],
                Override::default()
            ),
            None
        );
    }

    #[test]
    fn an_allow_window_inside_a_deny_window_never_opens() {
        let allow = win(Kind::Allow, "0 22 * * 6", 2, "UTC");
        let deny = win(Kind::Deny, "0 21 * * 6", 4, "UTC");
        let now = Utc.with_ymd_and_hms(2026, 11, 1, 0, 0, 0).unwrap();
        let both = [allow.clone(), deny.clone()];
        let never = never_open(&both, now);
        assert_eq!(never.len(), 1);
        assert_eq!((never[0].allow, never[0].by.len()), (0, 1));
        assert_eq!(never[0].checked, Duration::days(HORIZON_DAYS));
        let partial = win(Kind::Deny, "0 23 * * 6", 4, "UTC");
        assert!(never_open(&[allow.clone(), partial], now).is_empty());
        assert_eq!(
            next_start(now, "k3s", &[allow, deny], &[], Override::default()),
            None
        );
    }

    /// The sweep in `next_start` agrees with a minute-by-minute scan of `decide_now` over
    /// overlapping, touching and per-minute windows and a freeze.
    #[test]
    fn next_start_agrees_with_a_minute_by_minute_scan() {
        let now = utc("2026-11-27T21:17:00Z");
        let freeze = Freeze {
            name: "f".into(),
            from: utc("2026-11-28T22:00:00Z"),
            to: utc("2026-11-28T23:30:00Z"),
            components: Selector::All,
        };
        let mins = |m: i64| Duration::minutes(m);
        let cases: Vec<Vec<Window>> = vec![
            vec![win(Kind::Allow, "0 22 * * 6", 4, "UTC")],
            vec![
                win(Kind::Allow, "0 22 * * *", 4, "Europe/Berlin"),
                win(Kind::Deny, "0 21 * * 5,6", 2, "UTC"),
                win(Kind::Deny, "0 23 * * 5,6", 1, "UTC"),
            ],
            vec![
                Window::new(
                    "a",
                    Kind::Allow,
                    "* * * * *",
                    mins(1),
                    Tz::UTC,
                    Selector::All,
                )
                .unwrap(),
                Window::new(
                    "d",
                    Kind::Deny,
                    "0-58 * * * *",
                    mins(1),
                    Tz::UTC,
                    Selector::All,
                )
                .unwrap(),
            ],
            vec![win(Kind::Deny, "0 * * * *", 1, "UTC")],
        ];
        for ws in &cases {
            let fast = next_start(
                now,
                "k3s",
                ws,
                std::slice::from_ref(&freeze),
                Override::default(),
            );
            let slow = (0..8 * 24 * 60).map(|m| now + mins(m)).find(|t| {
                decide_now(
                    *t,
                    "k3s",
                    ws,
                    std::slice::from_ref(&freeze),
                    Override::default(),
                )
                .allows_start()
            });
            assert_eq!(fast, slow, "{ws:?}");
        }
    }

    /// Sixteen per-minute windows: the check is bounded by its occurrence budget, and says how
    /// far it looked.
    #[test]
    fn per_minute_windows_are_judged_within_a_budget() {
        let now = utc("2026-11-27T21:17:00Z");
        let mut ws = Vec::new();
        for i in 0..8 {
            let every = format!("{i}-59/8 * * * *");
            ws.push(
                Window::new(
                    "d",
                    Kind::Deny,
                    &every,
                    Duration::minutes(1),
                    Tz::UTC,
                    Selector::All,
                )
                .unwrap(),
            );
            ws.push(
                Window::new(
                    "a",
                    Kind::Allow,
                    "* * * * *",
                    Duration::minutes(1),
                    Tz::UTC,
                    Selector::All,
                )
                .unwrap(),
            );
        }
        let never = never_open(&ws, now);
        assert_eq!(never.len(), 8);
        assert!(never[0].checked >= Duration::days(3) && never[0].checked < Duration::days(4));
        assert_eq!(span(never[0].checked), "3 days");
        assert_eq!(next_start(now, "k3s", &ws, &[], Override::default()), None);
    }
}
