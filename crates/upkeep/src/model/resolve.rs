//! Checking values and references across `versions.yaml` and `policies/`, and resolving them
//! (with the built-in component rules) into a [`ConfigRepo`]. Pure: no I/O.
//!
//! Every problem is collected, not just the first; a value that fails its own check does not
//! also produce follow-on complaints elsewhere.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, NaiveDate, NaiveDateTime, Utc};
use chrono_tz::Tz;

use super::files::{
    ComponentEntry, ComponentRuleEntry, FreezeEntry, PolicyFile, SourceEntry, Sp, UpdateEntry,
    VersionsFile, WindowEntry, WindowKind,
};
use super::load::VERSIONS_FILE;
use super::{
    API_VERSION, Component, ConfigRepo, Emergency, HelmChartSource, Pin, PullRequestLimits,
    ReleaseAge, Runs, Selector, Sources, Track, UpdateRule, parse_duration, suggest,
};
use crate::diag::{Diagnostic, Pos};
use crate::knowledge;
use crate::sources::oci;
use crate::versions::{self, Downgrade, PathRule, Scheme};
use crate::windows::{self, Freeze, Kind, Window};

/// The rules for one component after merging built-in and config-repo `componentRules`.
#[derive(Default, Clone)]
struct Rule {
    scheme: Option<Scheme>,
    track: Option<String>,
    source: Option<(String, Sp<SourceEntry>)>,
    path: Option<PathRule>,
}

impl Rule {
    fn overlay(&mut self, file: &str, e: &ComponentRuleEntry) {
        if let Some(s) = &e.scheme {
            self.scheme = Some(s.value);
        }
        if let Some(t) = &e.track {
            self.track = Some(t.value.clone());
        }
        if let Some(s) = &e.source {
            self.source = Some((file.to_string(), s.clone()));
        }
        if let Some(p) = &e.upgrade_path {
            self.path = Some(p.value);
        }
    }
}

struct Ctx<'a> {
    diags: &'a mut Vec<Diagnostic>,
    errors_before: usize,
}

impl Ctx<'_> {
    fn error(&mut self, file: &str, pos: Pos, msg: impl Into<String>, hint: impl Into<String>) {
        let hint = hint.into();
        let mut d = Diagnostic::error(file, pos, msg);
        if !hint.is_empty() {
            d = d.hint(hint);
        }
        self.diags.push(d);
    }
    fn warn(&mut self, file: &str, pos: Pos, msg: impl Into<String>, hint: impl Into<String>) {
        self.diags
            .push(Diagnostic::warning(file, pos, msg).hint(hint));
    }
    fn error_count(&self) -> usize {
        self.diags.iter().filter(|d| d.is_error()).count()
    }
    fn failed(&self) -> bool {
        self.error_count() > self.errors_before
    }
}

fn name_ok(n: &str) -> bool {
    let b = n.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        && b[0] != b'-'
        && b[b.len() - 1] != b'-'
}

const NAME_HINT: &str = "names use lowercase letters, digits and dashes, like cert-manager";

pub(super) fn resolve(
    versions: Option<&VersionsFile>,
    policies: &[(String, PolicyFile)],
    now: DateTime<Utc>,
    diags: &mut Vec<Diagnostic>,
) -> Option<ConfigRepo> {
    let errors_before = diags.iter().filter(|d| d.is_error()).count();
    let mut cx = Ctx {
        diags,
        errors_before,
    };

    if let Some(v) = versions {
        header(
            &mut cx,
            VERSIONS_FILE,
            &v.api_version,
            &v.kind,
            "DesiredVersions",
        );
    }
    for (file, p) in policies {
        header(&mut cx, file, &p.api_version, &p.kind, "Policy");
    }

    let rules = component_rules(&mut cx, policies);
    if let Some(v) = versions
        && let Some(c) = &v.cluster
        && c.value.chars().any(crate::diag::hidden)
    {
        cx.error(
            VERSIONS_FILE,
            c.pos,
            "the cluster name holds control or bidirectional-text characters, which would go into pull request titles and the dashboard",
            "use plain text",
        );
    }
    let components: Vec<Component> = versions
        .map(|v| {
            v.components
                .0
                .iter()
                .filter_map(|(name, entry)| component(&mut cx, name, entry, &rules))
                .collect()
        })
        .unwrap_or_default();
    // Names for reference checks: every name written in versions.yaml, valid or not, so that a
    // bad version does not also make each reference to its component an error. Without a
    // parsed versions.yaml, references are not checked.
    let known: Option<BTreeSet<String>> = versions.map(|v| {
        v.components
            .0
            .iter()
            .map(|(n, _)| n.value.clone())
            .collect()
    });
    // Rules for a component versions.yaml does not have are most likely a typo.
    if let Some(known) = &known {
        for (file, p) in policies {
            for (name, _) in &p.component_rules.0 {
                if known.contains(&name.value) || !name_ok(name) {
                    continue;
                }
                let hint = match suggest(&name.value, known.iter().map(String::as_str)) {
                    Some(s) => format!("did you mean `{s}`?"),
                    None => {
                        "the rules apply once versions.yaml has a component of that name".into()
                    }
                };
                cx.warn(
                    file,
                    name.pos,
                    format!(
                        "componentRules for `{}`: versions.yaml has no component of that name",
                        name.value
                    ),
                    hint,
                );
            }
        }
    }
    if let Some(v) = versions
        && v.components.0.is_empty()
    {
        cx.warn(
            VERSIONS_FILE,
            v.kind.pos,
            "no components are tracked",
            "add k3s, flux, longhorn or your own under `components:`",
        );
    }

    let mut names = Names::default();
    let mut windows_out = Vec::new();
    let mut freezes_out = Vec::new();
    let mut rules_out = Vec::new();
    let mut limits: Option<(String, Pos, PullRequestLimits)> = None;
    let mut catalog_key: Option<(String, Pos, String)> = None;
    let mut checks_out: Vec<crate::model::Check> = Vec::new();
    let mut rollouts: Option<(String, Pos, crate::model::RolloutPolicy)> = None;
    let mut soak_out: Vec<crate::model::SoakRule> = Vec::new();
    let mut maintenance_out: Vec<crate::model::Maintenance> = Vec::new();
    let mut reports: Option<(String, Pos, crate::model::ReportsPolicy)> = None;
    let mut notifications = crate::model::Notifications::default();
    let mut lead_time: Option<(String, Pos)> = None;
    // Alerts name providers that may be defined in a later file: checked once all are read.
    let mut alert_refs: Vec<(String, Sp<String>)> = Vec::new();
    // Every provider written, valid or not: an alert naming an invalid one is not an error too.
    let mut declared: Vec<String> = Vec::new();
    for (file, p) in policies {
        if let Some(n) = &p.notifications {
            for e in &n.providers {
                names.check(&mut cx, "provider", file, &e.name);
                declared.push(e.name.value.clone());
                if let Some(pr) = provider(&mut cx, file, e) {
                    notifications.providers.push(pr);
                }
            }
            for e in &n.alerts {
                let sel = names.entry(
                    &mut cx,
                    "alert",
                    file,
                    &e.name,
                    e.components.as_deref(),
                    known.as_ref(),
                );
                if matches!(&e.events, Some(list) if list.is_empty()) {
                    cx.error(
                        file,
                        e.name.pos,
                        format!(
                            "alert `{}` has an empty `events` list: it would never send",
                            e.name.value
                        ),
                        "list the events it gets, or leave `events` out for all",
                    );
                    continue;
                }
                alert_refs.push((file.clone(), e.provider.clone()));
                if let Some(components) = sel {
                    notifications.alerts.push(crate::model::Alert {
                        name: e.name.value.clone(),
                        provider: e.provider.value.clone(),
                        events: match &e.events {
                            Some(list) => list.iter().map(|v| v.value).collect(),
                            None => crate::notify::ALL_EVENTS.iter().copied().collect(),
                        },
                        components,
                    });
                }
            }
            if let Some(t) = &n.window_lead_time {
                if let Some((first, at)) = &lead_time {
                    cx.error(
                        file,
                        t.pos,
                        format!(
                            "windowLeadTime is already set in {first}:{}:{}",
                            at.line, at.column
                        ),
                        "set it in one file only",
                    );
                } else {
                    lead_time = Some((file.clone(), t.pos));
                    match parse_duration(&t.value) {
                        Ok(d) if d <= chrono::Duration::days(7) => {
                            notifications.window_lead_time = d
                        }
                        Ok(_) => cx.error(
                            file,
                            t.pos,
                            format!("windowLeadTime {} is longer than 7 days", t.value),
                            "use at most 7d, e.g. 1h or 1d",
                        ),
                        Err(e) => cx.error(
                            file,
                            t.pos,
                            format!("windowLeadTime: `{}` is not a duration: {e}", t.value),
                            "e.g. 1h or 1d",
                        ),
                    }
                }
            }
        }
        for w in &p.windows {
            let sel = names.entry(
                &mut cx,
                "window",
                file,
                &w.name,
                w.components.as_deref(),
                known.as_ref(),
            );
            if let Some(win) = window(&mut cx, file, w, sel) {
                windows_out.push((file.clone(), w.name.pos, win));
            }
        }
        for f in &p.freezes {
            let sel = names.entry(
                &mut cx,
                "freeze",
                file,
                &f.name,
                f.components.as_deref(),
                known.as_ref(),
            );
            if let Some(fr) = freeze(&mut cx, file, f, sel) {
                freezes_out.push(fr);
            }
        }
        for u in &p.updates {
            let sel = names.entry(
                &mut cx,
                "update rule",
                file,
                &u.name,
                u.components.as_deref(),
                known.as_ref(),
            );
            if let Some(r) = update_rule(&mut cx, file, u, sel, &components) {
                rules_out.push(r);
            }
        }
        if let Some(pr) = &p.pull_requests {
            if let Some((first, at, _)) = &limits {
                cx.error(
                    file,
                    pr.pos,
                    format!(
                        "pullRequests is already set in {first}:{}:{}",
                        at.line, at.column
                    ),
                    "set pull-request limits in one file only",
                );
            } else {
                let d = PullRequestLimits::default();
                let l = PullRequestLimits {
                    concurrent: pr.concurrent_limit.unwrap_or(d.concurrent),
                    hourly: pr.hourly_limit.unwrap_or(d.hourly),
                    one_per_component: pr.one_per_component.unwrap_or(d.one_per_component),
                };
                if l.concurrent == 0 || l.hourly == 0 {
                    cx.error(
                        file,
                        pr.pos,
                        "a pull-request limit of 0 would never open a pull request",
                        "to stop proposals, set `paused: true` in an update rule",
                    );
                }
                limits = Some((file.clone(), pr.pos, l));
            }
        }
        if let Some(r) = &p.rollouts {
            if let Some((first, at, _)) = &rollouts {
                cx.error(
                    file,
                    r.pos,
                    format!(
                        "rollouts is already set in {first}:{}:{}",
                        at.line, at.column
                    ),
                    "set how rollouts run in one file only",
                );
            } else {
                let d = crate::model::RolloutPolicy::default();
                let mut out = crate::model::RolloutPolicy {
                    agent_concurrency: r
                        .agent_concurrency
                        .as_ref()
                        .map_or(d.agent_concurrency, |c| c.value),
                    drain: r.drain.as_ref().map_or(d.drain, |v| v.value),
                    backup: r.backup.as_ref().map_or(d.backup, |v| v.value),
                    allow_degraded_volumes: r
                        .allow_degraded_volumes
                        .as_ref()
                        .map_or(d.allow_degraded_volumes, |v| v.value),
                    hop_timeout: d.hop_timeout,
                    keep_ended: r.keep_ended.as_ref().map_or(d.keep_ended, |k| {
                        usize::try_from(k.value).unwrap_or(usize::MAX)
                    }),
                };
                if out.agent_concurrency == 0 {
                    let pos = r.agent_concurrency.as_ref().map_or(r.pos, |c| c.pos);
                    cx.error(
                        file,
                        pos,
                        "an agent concurrency of 0 would never upgrade an agent",
                        "use 1 or more",
                    );
                }
                if let Some(t) = &r.hop_timeout {
                    match crate::model::parse_duration(&t.value) {
                        Ok(d) if d > chrono::Duration::zero() => out.hop_timeout = d,
                        Ok(_) => cx.error(
                            file,
                            t.pos,
                            "the hop timeout must be longer than 0",
                            "e.g. 60m",
                        ),
                        Err(e) => {
                            cx.error(file, t.pos, format!("hopTimeout: {e}"), "e.g. 60m or 2h")
                        }
                    }
                }
                rollouts = Some((file.clone(), r.pos, out));
            }
        }
        for c in &p.checks {
            let sel = names.entry(
                &mut cx,
                "check",
                file,
                &c.name,
                c.components.as_deref(),
                known.as_ref(),
            );
            if let Some(chk) = check(&mut cx, file, c, sel) {
                checks_out.push(chk);
            }
        }
        if let Some(r) = &p.reports {
            if let Some((first, at, _)) = &reports {
                cx.error(
                    file,
                    r.pos,
                    format!(
                        "reports is already set in {first}:{}:{}",
                        at.line, at.column
                    ),
                    "set the reports in one file only",
                );
            } else {
                let mut out = crate::model::ReportsPolicy {
                    monthly_on_dashboard: r.monthly_on_dashboard.as_ref().is_some_and(|v| v.value),
                    ..Default::default()
                };
                if let Some(t) = &r.time_zone
                    && let Some(zone) = tz(&mut cx, file, t)
                {
                    out.tz = zone;
                }
                reports = Some((file.clone(), r.pos, out));
            }
        }
        for e in &p.maintenance {
            let sel = names.entry(
                &mut cx,
                "maintenance",
                file,
                &e.name,
                e.components.as_deref(),
                known.as_ref(),
            );
            let mut ok = true;
            for n in &e.namespaces {
                if !dns_label(&n.value) {
                    cx.error(
                        file,
                        n.pos,
                        format!(
                            "maintenance `{}`: `{}` is not a namespace name",
                            e.name.value, n.value
                        ),
                        "lowercase letters, digits and `-`, at most 63 characters",
                    );
                    ok = false;
                }
            }
            let mut workloads = Vec::new();
            for w in &e.scale_down {
                match workload(&w.value) {
                    Ok(x) => workloads.push(x),
                    Err(why) => {
                        cx.error(
                            file,
                            w.pos,
                            format!("maintenance `{}`: `{}` {why}", e.name.value, w.value),
                            "write Deployment/<namespace>/<name> or StatefulSet/<namespace>/<name>",
                        );
                        ok = false;
                    }
                }
            }
            if e.namespaces.is_empty() && e.scale_down.is_empty() {
                cx.warn(
                    file,
                    e.name.pos,
                    format!("maintenance `{}` does nothing", e.name.value),
                    "list `namespaces` to mark or `scaleDown` workloads",
                );
            }
            if let (Some(components), true) = (sel, ok) {
                maintenance_out.push(crate::model::Maintenance {
                    name: e.name.value.clone(),
                    components,
                    namespaces: e.namespaces.iter().map(|n| n.value.clone()).collect(),
                    scale_down: workloads,
                });
            }
        }
        for e in &p.soak {
            let sel = names.entry(
                &mut cx,
                "soak",
                file,
                &e.name,
                e.components.as_deref(),
                known.as_ref(),
            );
            let duration = match &e.duration {
                None => Some(None),
                Some(d) => match parse_duration(&d.value) {
                    Ok(v) if v > chrono::Duration::days(30) => {
                        cx.error(
                            file,
                            d.pos,
                            format!("soak `{}`: {} is longer than 30 days", e.name.value, d.value),
                            "a soak holds every later rollout; use at most 30d (24h to 48h is usual)",
                        );
                        None
                    }
                    Ok(v) => Some(Some(v)),
                    Err(err) => {
                        cx.error(
                            file,
                            d.pos,
                            format!(
                                "soak `{}`: `{}` is not a duration: {err}",
                                e.name.value, d.value
                            ),
                            "e.g. 24h, 2d, or 0 for no soak",
                        );
                        None
                    }
                },
            };
            if let (Some(components), Some(duration)) = (sel, duration) {
                soak_out.push(crate::model::SoakRule {
                    name: e.name.value.clone(),
                    components,
                    duration,
                    on_regression: e.on_regression.as_ref().map(|o| o.value),
                });
            }
        }
        if let Some(c) = &p.catalog {
            if let Some((first, at, _)) = &catalog_key {
                cx.error(
                    file,
                    c.pos,
                    format!(
                        "catalog is already set in {first}:{}:{}",
                        at.line, at.column
                    ),
                    "set the catalog key in one file only",
                );
            } else if crate::sources::catalog::parse_public_key(&c.public_key.value).is_err() {
                cx.error(
                    file,
                    c.public_key.pos,
                    "`publicKey` is not a minisign public key",
                    "use the second line of the minisign .pub file; it starts with RW",
                );
            } else {
                catalog_key = Some((file.clone(), c.pos, c.public_key.value.trim().to_string()));
            }
        }
    }

    let compiled: Vec<Window> = windows_out.iter().map(|(_, _, w)| w.clone()).collect();
    for (file, pos, w) in &windows_out {
        if w.kind != Kind::Allow {
            continue;
        }
        if w.starts_after(now).next().is_none() {
            cx.warn(
                file,
                *pos,
                format!(
                    "window `{}` never opens: its schedule has no future date",
                    w.name
                ),
                "check the day and month fields",
            );
        }
    }
    for never in windows::never_open(&compiled, now) {
        let Some((file, pos, w)) = windows_out.get(never.allow) else {
            continue;
        };
        let by: Vec<String> = never.by.iter().map(|b| format!("`{}`", b.name)).collect();
        let (noun, verb) = if by.len() == 1 {
            ("window", "covers")
        } else {
            ("windows", "cover")
        };
        cx.warn(
            file,
            *pos,
            format!(
                "allow window `{}` can never open: deny {noun} {} {verb} every one of its occurrences in the next {}",
                w.name,
                by.join(", "),
                windows::span(never.checked)
            ),
            "shift one of the schedules, or remove the deny window",
        );
    }

    for (file, r) in &alert_refs {
        if !declared.contains(&r.value) {
            let hint = match suggest(&r.value, declared.iter().map(String::as_str)) {
                Some(s) => format!("did you mean `{s}`?"),
                None => "define it under `notifications.providers`".to_string(),
            };
            cx.error(file, r.pos, format!("unknown provider `{}`", r.value), hint);
        }
    }

    if cx.failed() {
        return None;
    }
    Some(ConfigRepo {
        cluster: versions.and_then(|v| v.cluster.as_ref().map(|c| c.value.clone())),
        components,
        windows: compiled,
        freezes: freezes_out,
        rules: rules_out,
        pull_requests: limits.map(|(_, _, l)| l).unwrap_or_default(),
        catalog_public_key: catalog_key.map(|(_, _, k)| k),
        checks: checks_out,
        rollouts: rollouts.map(|(_, _, r)| r).unwrap_or_default(),
        soak: soak_out,
        notifications,
        maintenance: maintenance_out,
        reports: reports.map(|(_, _, r)| r).unwrap_or_default(),
    })
}

/// A Kubernetes namespace (or object) name: a DNS label.
fn dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

/// `Deployment/<namespace>/<name>` or `StatefulSet/<namespace>/<name>`.
fn workload(s: &str) -> Result<crate::model::Workload, String> {
    let parts: Vec<&str> = s.split('/').collect();
    let [kind, ns, name] = parts[..] else {
        return Err("is not Kind/namespace/name".into());
    };
    if kind != "Deployment" && kind != "StatefulSet" {
        return Err(format!(
            "names a {kind}: only a Deployment or a StatefulSet can be scaled down"
        ));
    }
    let name_ok = !name.is_empty()
        && name.len() <= 253
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.');
    if !dns_label(ns) || !name_ok {
        return Err("has a namespace or name Kubernetes does not allow".into());
    }
    Ok(crate::model::Workload {
        kind: kind.into(),
        namespace: ns.into(),
        name: name.into(),
    })
}

/// A notification provider: a URL (given, or from a secret) of the right scheme, and each
/// secret read from exactly one place.
fn provider(
    cx: &mut Ctx,
    file: &str,
    e: &crate::model::files::ProviderEntry,
) -> Option<crate::model::Provider> {
    use crate::model::files::ProviderType;
    let secret = |cx: &mut Ctx, what: &str, s: &Sp<crate::model::files::SecretSource>| match (
        &s.file, &s.env,
    ) {
        (Some(f), None) if f.value.starts_with('/') => {
            Some(crate::model::Secret::File(f.value.clone()))
        }
        (Some(f), None) => {
            cx.error(
                file,
                f.pos,
                format!(
                    "provider `{}`: {what}.file `{}` is not an absolute path",
                    e.name.value, f.value
                ),
                "e.g. /var/run/secrets/upkeep/slack-url (a mounted Secret)",
            );
            None
        }
        (None, Some(v))
            if !v.value.is_empty()
                && v.value
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_')
                && !v.value.starts_with(|c: char| c.is_ascii_digit()) =>
        {
            Some(crate::model::Secret::Env(v.value.clone()))
        }
        (None, Some(v)) => {
            cx.error(
                file,
                v.pos,
                format!(
                    "provider `{}`: `{}` is not an environment variable name",
                    e.name.value, v.value
                ),
                "letters, digits and `_`, e.g. UPKEEP_SLACK_WEBHOOK",
            );
            None
        }
        _ => {
            cx.error(
                file,
                s.pos,
                format!(
                    "provider `{}`: {what} needs exactly one of `file` and `env`",
                    e.name.value
                ),
                "e.g. `{file: /var/run/secrets/upkeep/slack-url}` or `{env: UPKEEP_SLACK_WEBHOOK}`",
            );
            None
        }
    };
    let address_from = match &e.address_from {
        Some(s) => Some(secret(cx, "addressFrom", s)?),
        None => None,
    };
    let token_from = match &e.token_from {
        Some(s) => Some(secret(cx, "tokenFrom", s)?),
        None => None,
    };
    match (&e.address, &address_from) {
        (Some(a), None) => {
            if !url_ok(&a.value, &["http://", "https://"]) {
                cx.error(
                    file,
                    a.pos,
                    format!(
                        "provider `{}`: `{}` is not an http(s) URL",
                        e.name.value, a.value
                    ),
                    "e.g. https://ntfy.sh/homelab-upgrades",
                );
                return None;
            }
            if matches!(e.type_.value, ProviderType::Slack | ProviderType::Discord) {
                cx.warn(
                    file,
                    a.pos,
                    format!(
                        "provider `{}`: a {:?} webhook URL holds its token, and here it is in git",
                        e.name.value, e.type_.value
                    ),
                    "move it to a Secret and use `addressFrom: {file: ...}` or `{env: ...}`",
                );
            }
        }
        (None, Some(_)) => {}
        (Some(a), Some(_)) => {
            cx.error(
                file,
                a.pos,
                format!(
                    "provider `{}` sets both `address` and `addressFrom`",
                    e.name.value
                ),
                "keep one",
            );
            return None;
        }
        (None, None) => {
            cx.error(
                file,
                e.name.pos,
                format!("provider `{}` has no address", e.name.value),
                "add `address: https://...` or `addressFrom: {file: ...}`",
            );
            return None;
        }
    }
    Some(crate::model::Provider {
        name: e.name.value.clone(),
        kind: e.type_.value,
        address: e.address.as_ref().map(|a| a.value.clone()),
        address_from,
        token_from,
    })
}

fn check(
    cx: &mut Ctx,
    file: &str,
    c: &crate::model::files::CheckEntry,
    sel: Option<Selector>,
) -> Option<crate::model::Check> {
    use crate::model::CheckKind;
    let urls = ["http://", "https://"];
    let kind = match (&c.http, &c.prometheus) {
        (Some(h), None) => {
            if !url_ok(&h.url.value, &urls) {
                cx.error(
                    file,
                    h.url.pos,
                    format!("`{}` is not an http(s) URL", h.url.value),
                    "e.g. https://home.example/healthz",
                );
                return None;
            }
            let expect = h.expect_status.as_ref().map_or(200, |s| s.value);
            if !(100..=599).contains(&expect) {
                let pos = h.expect_status.as_ref().map_or(h.pos, |s| s.pos);
                cx.error(
                    file,
                    pos,
                    format!("{expect} is not an HTTP status"),
                    "use 100 to 599, e.g. 200",
                );
                return None;
            }
            CheckKind::Http {
                url: h.url.value.clone(),
                expect_status: expect,
            }
        }
        (None, Some(p)) => {
            if !url_ok(&p.url.value, &urls) {
                cx.error(
                    file,
                    p.url.pos,
                    format!("`{}` is not an http(s) URL", p.url.value),
                    "e.g. http://prometheus.monitoring:9090",
                );
                return None;
            }
            if p.max.is_none() && p.min.is_none() {
                cx.error(
                    file,
                    p.pos,
                    "a Prometheus check needs `max` or `min`",
                    "e.g. `max: 0.01` for an error rate",
                );
                return None;
            }
            CheckKind::Prometheus {
                url: p.url.value.trim_end_matches('/').to_string(),
                query: p.query.value.clone(),
                max: p.max.as_ref().map(|m| m.value),
                min: p.min.as_ref().map(|m| m.value),
            }
        }
        (Some(_), Some(_)) => {
            cx.error(
                file,
                c.name.pos,
                format!("check `{}` sets both `http` and `prometheus`", c.name.value),
                "split it into two checks",
            );
            return None;
        }
        (None, None) => {
            cx.error(
                file,
                c.name.pos,
                format!("check `{}` says nothing to check", c.name.value),
                "add `http: {url: ...}` or `prometheus: {url: ..., query: ..., max: ...}`",
            );
            return None;
        }
    };
    let during = match &c.during {
        None => vec![crate::model::Stage::Validation, crate::model::Stage::Soak],
        Some(list) if list.is_empty() => {
            cx.error(
                file,
                c.name.pos,
                format!(
                    "check `{}` has an empty `during` list: it would never run",
                    c.name.value
                ),
                "list `validation`, `soak` or both, or leave `during` out for both",
            );
            return None;
        }
        Some(list) => list.iter().map(|s| s.value).collect(),
    };
    Some(crate::model::Check {
        name: c.name.value.clone(),
        components: sel?,
        kind,
        during,
    })
}

fn header(cx: &mut Ctx, file: &str, api: &Sp<String>, kind: &Sp<String>, want: &str) {
    if api.value != API_VERSION {
        cx.error(
            file,
            api.pos,
            format!("apiVersion must be `{API_VERSION}`, not `{}`", api.value),
            format!("write `apiVersion: {API_VERSION}`"),
        );
    }
    if kind.value != want {
        let hint = match kind.value.as_str() {
            "Policy" => "policies belong in policies/*.yaml".to_string(),
            "DesiredVersions" => "the desired versions belong in versions.yaml".to_string(),
            _ => format!("write `kind: {want}`"),
        };
        cx.error(
            file,
            kind.pos,
            format!("kind must be `{want}` in this file, not `{}`", kind.value),
            hint,
        );
    }
}

/// Built-in rules, overlaid by the config repo's `componentRules` in file order.
fn component_rules(cx: &mut Ctx, policies: &[(String, PolicyFile)]) -> BTreeMap<String, Rule> {
    let mut out: BTreeMap<String, Rule> = BTreeMap::new();
    for (name, e) in knowledge::builtin() {
        out.entry(name.clone())
            .or_default()
            .overlay(knowledge::BUILTIN_PATH, e);
    }
    let mut seen: BTreeMap<String, (String, Pos)> = BTreeMap::new();
    for (file, p) in policies {
        for (name, e) in &p.component_rules.0 {
            if !name_ok(name) {
                cx.error(
                    file,
                    name.pos,
                    format!("`{}` is not a valid component name", name.value),
                    NAME_HINT,
                );
                continue;
            }
            if let Some((f, at)) = seen.get(&name.value) {
                cx.error(
                    file,
                    name.pos,
                    format!(
                        "componentRules for `{}` are already set in {f}:{}:{}",
                        name.value, at.line, at.column
                    ),
                    "merge them into one entry",
                );
                continue;
            }
            seen.insert(name.value.clone(), (file.clone(), name.pos));
            if let Some(s) = &e.source {
                sources(cx, file, s);
            }
            out.entry(name.value.clone()).or_default().overlay(file, e);
        }
    }
    out
}

fn component(
    cx: &mut Ctx,
    name: &Sp<String>,
    e: &super::files::ComponentEntry,
    rules: &BTreeMap<String, Rule>,
) -> Option<Component> {
    let f = VERSIONS_FILE;
    if !name_ok(name) {
        cx.error(
            f,
            name.pos,
            format!("`{}` is not a valid component name", name.value),
            NAME_HINT,
        );
        return None;
    }
    let rule = rules.get(&name.value).cloned().unwrap_or_default();
    let scheme = e
        .scheme
        .as_ref()
        .map(|s| s.value)
        .or(rule.scheme)
        .unwrap_or(Scheme::Semver);
    // Whitespace around a version (`"v2.6.4\t"`) would be trimmed here but not by the edit
    // of versions.yaml that a proposal makes: refuse it where it is written.
    if e.version.value.trim() != e.version.value.as_str() {
        cx.error(
            f,
            e.version.pos,
            format!(
                "component `{}`: the version {:?} has whitespace around it",
                name.value, e.version.value
            ),
            "write the version alone, without spaces, tabs or escapes",
        );
        return None;
    }
    let version = match versions::parse(&e.version, scheme) {
        Ok(v) => v,
        Err(err) => {
            let hint = match scheme {
                Scheme::K3s => "k3s versions look like v1.33.4+k3s1",
                Scheme::Semver => {
                    "versions look like v1.9.1; set `scheme:` if this component numbers differently"
                }
            };
            cx.error(
                f,
                e.version.pos,
                format!("component `{}`: {err}", name.value),
                hint,
            );
            return None;
        }
    };
    if version.is_dev() {
        cx.error(
            f,
            e.version.pos,
            format!(
                "component `{}`: {version} is a development build",
                name.value
            ),
            "desired versions must be releases",
        );
    }
    let src = match (&e.source, &rule.source) {
        (Some(s), _) => sources(cx, f, s),
        (None, Some((file, s))) => sources(cx, file, s),
        (None, None) => {
            cx.error(
                f,
                name.pos,
                format!("component `{}` has no source, and upkeep has no built-in rules for it", name.value),
                "add `source: {githubReleases: owner/repo}`, `source: {helmChart: {repository: URL, chart: NAME}}` or `source: {ociImage: HOST/NAME}`",
            );
            None
        }
    }?;
    let path_rule = rule.path.unwrap_or(PathRule::DEFAULT);
    let track_text = e
        .track
        .as_ref()
        .map(|t| (t.value.clone(), t.pos))
        .or_else(|| rule.track.clone().map(|t| (t, e.version.pos)))
        .unwrap_or_else(|| ("newest".into(), e.version.pos));
    let track = match parse_track(&track_text.0, scheme, src.channel_server.is_some()) {
        Ok(t) => t,
        Err(hint) => {
            cx.error(
                f,
                track_text.1,
                format!(
                    "component `{}`: cannot track `{}`",
                    name.value, track_text.0
                ),
                hint,
            );
            return None;
        }
    };
    if let Track::Line { major, minor } = track
        && (major, minor) < version.line()
        && path_rule.downgrade != Downgrade::Allowed
    {
        cx.error(
            f,
            track_text.1,
            format!(
                "component `{}`: track v{major}.{minor} is below the desired {version}",
                name.value
            ),
            format!(
                "{} cannot be downgraded; track v{}.{} or newer",
                name.value, version.major, version.minor
            ),
        );
    }
    let allowed = match &e.allowed {
        Some(a) => match versions::parse_range(a) {
            Ok(r) => {
                if !versions::in_range(&version, &r) {
                    cx.error(
                        f,
                        a.pos,
                        format!("component `{}`: the desired {version} is outside the allowed range `{}`", name.value, a.value),
                        "widen the range or change the version",
                    );
                }
                Some(r)
            }
            Err(err) => {
                cx.error(
                    f,
                    a.pos,
                    format!(
                        "component `{}`: `{}` is not a version range: {err}",
                        name.value, a.value
                    ),
                    "ranges look like `>=1.9.0, <2.0.0`",
                );
                None
            }
        },
        None => None,
    };
    let runs = runs_of(cx, f, &name.value, e, &src);
    Some(Component {
        name: name.value.clone(),
        version,
        scheme,
        track,
        sources: src,
        allowed,
        path_rule,
        runs,
    })
}

/// Where a component's version lives, from `chart:`, `image:` and `release:` (checked), the
/// built-in knowledge, or its chart source.
fn runs_of(cx: &mut Ctx, f: &str, name: &str, e: &ComponentEntry, src: &Sources) -> Runs {
    let release = e.release.as_ref().and_then(|r| {
        let ok = r
            .value
            .split_once('/')
            .is_some_and(|(ns, n)| !ns.is_empty() && !n.is_empty() && !n.contains('/'));
        if !ok {
            cx.error(
                f,
                r.pos,
                format!("component `{name}`: release {:?} is not `namespace/name`", r.value),
                "write the HelmRelease as `namespace/name`, e.g. `release: cert-manager/cert-manager`",
            );
        }
        ok.then(|| r.value.clone())
    });
    if matches!(name, "k3s" | "flux") {
        for (field, pos) in [
            ("chart", e.chart.as_ref().map(|x| x.pos)),
            ("image", e.image.as_ref().map(|x| x.pos)),
            ("release", e.release.as_ref().map(|x| x.pos)),
        ] {
            if let Some(pos) = pos {
                cx.error(
                    f,
                    pos,
                    format!("component `{name}`: `{field}` does not apply: upkeep knows where {name} runs"),
                    "remove it",
                );
            }
        }
        return if name == "k3s" { Runs::K3s } else { Runs::Flux };
    }
    if let (Some(c), Some(i)) = (&e.chart, &e.image) {
        cx.error(
            f,
            i.pos,
            format!(
                "component `{name}`: both `chart: {}` and `image: {}`: say one",
                c.value, i.value
            ),
            "`chart` when the version is the chart's, `image` when it is an image tag in the release's values",
        );
    }
    if let Some(i) = &e.image {
        let bad = i.value.contains('@')
            || i.value
                .rsplit('/')
                .next()
                .is_some_and(|last| last.contains(':'));
        if bad || i.value.trim().is_empty() {
            cx.error(
                f,
                i.pos,
                format!(
                    "component `{name}`: image {:?} should be a repository without a tag or digest",
                    i.value
                ),
                "e.g. `image: docker.io/rancher/system-upgrade-controller`",
            );
        }
        return Runs::Image {
            image: i.value.clone(),
            release,
        };
    }
    let chart = e
        .chart
        .as_ref()
        .map(|c| c.value.clone())
        .or_else(|| src.helm_chart.as_ref().map(|h| h.chart.clone()))
        .or_else(|| (name == "longhorn").then(|| "longhorn".to_string()));
    match chart {
        Some(chart) => Runs::Chart { chart, release },
        None => {
            if let Some(r) = &e.release {
                cx.error(
                    f,
                    r.pos,
                    format!("component `{name}`: `release` without `chart` or `image`"),
                    "say which chart (`chart:`) or image (`image:`) in that release carries the version",
                );
            }
            Runs::Unknown
        }
    }
}

fn parse_track(t: &str, scheme: Scheme, has_channel_server: bool) -> Result<Track, String> {
    match t {
        "newest" => return Ok(Track::Newest),
        "stable" | "latest" | "testing" if scheme == Scheme::K3s && has_channel_server => {
            return Ok(Track::Channel(t.to_string()));
        }
        "latest" => return Ok(Track::Newest),
        "stable" | "testing" => {
            return Err("channels need a k3s channel server source (`source: {channelServer: URL}`); use `newest` or a line like `v1.9`".into());
        }
        _ => {}
    }
    let body = t.strip_prefix('v').unwrap_or(t);
    if let Some((a, b)) = body.split_once('.')
        && let (Ok(major), Ok(minor)) = (a.parse::<u64>(), b.parse::<u64>())
    {
        return Ok(Track::Line { major, minor });
    }
    Err(
        "track a channel (`stable`, `latest`, `testing`), a release line like `v1.33`, or `newest`"
            .into(),
    )
}

fn sources(cx: &mut Ctx, file: &str, s: &Sp<SourceEntry>) -> Option<Sources> {
    let errors = cx.error_count();
    let mut out = Sources::default();
    if s.github_releases.is_none()
        && s.channel_server.is_none()
        && s.helm_chart.is_none()
        && s.oci_image.is_none()
    {
        cx.error(
            file,
            s.pos,
            "the source names no upstream",
            "set githubReleases, channelServer, helmChart or ociImage",
        );
    }
    if let Some(g) = &s.github_releases {
        let ok = g.split_once('/').is_some_and(|(o, r)| {
            let part = |p: &str| {
                !p.is_empty()
                    && p.bytes()
                        .all(|c| c.is_ascii_alphanumeric() || b"-_.".contains(&c))
            };
            part(o) && part(r)
        });
        if ok {
            out.github_releases = Some(g.value.clone());
        } else {
            cx.error(
                file,
                g.pos,
                format!("`{}` is not a GitHub repository", g.value),
                "write it as owner/repo, like fluxcd/flux2",
            );
        }
    }
    if let Some(c) = &s.channel_server {
        if url_ok(c, &["http://", "https://"]) {
            out.channel_server = Some(c.value.trim_end_matches('/').to_string());
        } else {
            cx.error(
                file,
                c.pos,
                format!("`{}` is not an http(s) URL", c.value),
                "like https://update.k3s.io",
            );
        }
    }
    if let Some(h) = &s.helm_chart {
        if !url_ok(&h.repository, &["http://", "https://", "oci://"]) {
            cx.error(
                file,
                h.repository.pos,
                format!("`{}` is not a Helm repository URL", h.repository.value),
                "like https://charts.longhorn.io",
            );
        } else if h.repository.value.starts_with("oci://") {
            // The registry path alone (with a stand-in chart), then with the chart.
            if let Err(detail) = oci::Reference::chart(&h.repository, "chart") {
                cx.error(
                    file,
                    h.repository.pos,
                    format!(
                        "`{}` is not an OCI chart repository: {detail}",
                        h.repository.value
                    ),
                    "like oci://ghcr.io/controlplaneio-fluxcd/charts (the chart's versions are the tags of PATH/CHART)",
                );
            } else if name_ok(&h.chart)
                && let Err(detail) = oci::Reference::chart(&h.repository, &h.chart)
            {
                cx.error(
                    file,
                    h.chart.pos,
                    format!(
                        "chart `{}` in `{}` is not an OCI repository: {detail}",
                        h.chart.value, h.repository.value
                    ),
                    "a shorter registry path or chart name",
                );
            }
        }
        if !name_ok(&h.chart) {
            cx.error(
                file,
                h.chart.pos,
                format!("`{}` is not a chart name", h.chart.value),
                NAME_HINT,
            );
        }
        out.helm_chart = Some(HelmChartSource {
            repository: h.repository.value.trim_end_matches('/').to_string(),
            chart: h.chart.value.clone(),
        });
    }
    if let Some(i) = &s.oci_image {
        match oci::Reference::image(i) {
            Ok(r) => out.oci_image = Some(r.to_string()),
            Err(detail) => cx.error(
                file,
                i.pos,
                format!("`{}` is not an OCI image repository: {detail}", i.value),
                "like ghcr.io/fluxcd/flux-cli: the registry and the repository, without :TAG or @DIGEST",
            ),
        }
        if s.helm_chart.is_some() {
            cx.error(
                file,
                i.pos,
                "the source has both helmChart and ociImage",
                "say one: helmChart for a chart's versions, ociImage for an image's tags",
            );
        }
    }
    (cx.error_count() == errors).then_some(out)
}

fn url_ok(u: &str, schemes: &[&str]) -> bool {
    schemes.iter().any(|s| {
        u.strip_prefix(s)
            .is_some_and(|rest| !rest.is_empty() && !rest.contains(char::is_whitespace))
    })
}

fn selector(
    cx: &mut Ctx,
    file: &str,
    owner: &Sp<String>,
    list: Option<&[Sp<String>]>,
    known: Option<&BTreeSet<String>>,
) -> Option<Selector> {
    let Some(list) = list else {
        return Some(Selector::All);
    };
    if list.is_empty() {
        cx.error(
            file,
            owner.pos,
            format!("`{}` has an empty `components` list", owner.value),
            "list component names, or `[\"*\"]` for all",
        );
        return None;
    }
    let mut names = BTreeSet::new();
    let mut ok = true;
    for n in list {
        if n.value == "*" {
            return Some(Selector::All);
        }
        if let Some(known) = known
            && !known.contains(&n.value)
        {
            let hint = match suggest(&n.value, known.iter().map(String::as_str)) {
                Some(s) => format!("did you mean `{s}`?"),
                None => format!(
                    "versions.yaml tracks: {}",
                    known.iter().cloned().collect::<Vec<_>>().join(", ")
                ),
            };
            cx.error(
                file,
                n.pos,
                format!("unknown component `{}`", n.value),
                hint,
            );
            ok = false;
        }
        names.insert(n.value.clone());
    }
    ok.then_some(Selector::Names(names))
}

fn tz(cx: &mut Ctx, file: &str, t: &Sp<String>) -> Option<Tz> {
    match windows::parse_tz(&t.value) {
        Ok(z) => Some(z),
        Err(e) => {
            let hint = match suggest(&t.value, chrono_tz::TZ_VARIANTS.iter().map(|z| z.name())) {
                Some(s) => format!("did you mean `{s}`?"),
                None => "use an IANA name like Europe/Amsterdam or UTC".to_string(),
            };
            cx.error(file, t.pos, e.to_string(), hint);
            None
        }
    }
}

fn window(cx: &mut Ctx, file: &str, w: &WindowEntry, sel: Option<Selector>) -> Option<Window> {
    let zone = tz(cx, file, &w.time_zone);
    let duration = match parse_duration(&w.duration) {
        Ok(d) if d.is_zero() => {
            cx.error(
                file,
                w.duration.pos,
                format!(
                    "window `{}`: the duration must be longer than 0",
                    w.name.value
                ),
                "like 4h or 1h30m",
            );
            None
        }
        Ok(d) => Some(d),
        Err(e) => {
            cx.error(
                file,
                w.duration.pos,
                format!(
                    "window `{}`: `{}` is not a duration: {e}",
                    w.name.value, w.duration.value
                ),
                "like 4h or 1h30m",
            );
            None
        }
    };
    let kind = match w.kind.value {
        WindowKind::Allow => Kind::Allow,
        WindowKind::Deny => Kind::Deny,
    };
    match windows::parse_schedule(&w.schedule) {
        Ok(_) => {}
        Err(e) => {
            cx.error(
                file,
                w.schedule.pos,
                format!("window `{}`: {e}", w.name.value),
                "crontab form: minute hour day-of-month month day-of-week, e.g. `0 22 * * 6` (Saturdays 22:00)",
            );
            return None;
        }
    }
    let (zone, duration, sel) = (zone?, duration?, sel?);
    Window::new(&w.name, kind, &w.schedule, duration, zone, sel).ok()
}

fn freeze(cx: &mut Ctx, file: &str, f: &FreezeEntry, sel: Option<Selector>) -> Option<Freeze> {
    let zone = match &f.time_zone {
        Some(t) => Some(tz(cx, file, t)?),
        None => None,
    };
    let mut at = |s: &Sp<String>| match parse_instant(&s.value, zone) {
        Ok(t) => Some(t),
        Err(e) => {
            cx.error(
                file,
                s.pos,
                format!("freeze `{}`: `{}` {e}", f.name.value, s.value),
                "like 2026-12-20T00:00 with timeZone, or 2026-12-20T00:00:00+01:00",
            );
            None
        }
    };
    let (from, to) = (at(&f.from), at(&f.to));
    let (from, to) = (from?, to?);
    if to <= from {
        cx.error(
            file,
            f.to.pos,
            format!("freeze `{}` ends before it starts", f.name.value),
            "`to` must be after `from`",
        );
        return None;
    }
    Some(Freeze {
        name: f.name.value.clone(),
        from,
        to,
        components: sel?,
    })
}

/// RFC 3339 with an offset, or a date/date-time read in `tz`.
pub fn parse_instant(s: &str, tz: Option<Tz>) -> Result<DateTime<Utc>, String> {
    if let Ok(d) = DateTime::parse_from_rfc3339(s) {
        return Ok(d.with_timezone(&Utc));
    }
    let naive = [
        "%Y-%m-%dT%H:%M:%S",
        "%Y-%m-%dT%H:%M",
        "%Y-%m-%d %H:%M:%S",
        "%Y-%m-%d %H:%M",
    ]
    .iter()
    .find_map(|f| NaiveDateTime::parse_from_str(s, f).ok())
    .or_else(|| {
        NaiveDate::parse_from_str(s, "%Y-%m-%d")
            .ok()
            .and_then(|d| d.and_hms_opt(0, 0, 0))
    })
    .ok_or_else(|| "is not a date-time".to_string())?;
    let tz = tz.ok_or_else(|| "has no offset and the freeze has no timeZone".to_string())?;
    windows::local_to_instant(&tz, naive)
        .ok_or_else(|| "does not exist in that time zone".to_string())
}

fn update_rule(
    cx: &mut Ctx,
    file: &str,
    u: &UpdateEntry,
    sel: Option<Selector>,
    components: &[Component],
) -> Option<UpdateRule> {
    let errors = cx.error_count();
    let rule_name = &u.name.value;
    let covered: Vec<&Component> = match &sel {
        Some(s) => components.iter().filter(|c| s.covers(&c.name)).collect(),
        None => Vec::new(),
    };
    if let Some(p) = &u.propose
        && p.is_empty()
    {
        cx.error(
            file,
            u.name.pos,
            format!("update rule `{rule_name}`: `propose` is empty"),
            "to stop proposals, set `paused: true`",
        );
    }
    let age = u.minimum_release_age.as_ref().and_then(|a| {
        let mut out = ReleaseAge::default();
        let mut ok = true;
        for (slot, text) in [
            (&mut out.revision, &a.revision),
            (&mut out.patch, &a.patch),
            (&mut out.minor, &a.minor),
            (&mut out.major, &a.major),
        ] {
            if let Some(t) = text {
                match parse_duration(t) {
                    Ok(d) => *slot = Some(d),
                    Err(e) => {
                        ok = false;
                        cx.error(
                            file,
                            a.pos,
                            format!("update rule `{rule_name}`: `{t}` is not a duration: {e}"),
                            "like 3d or 12h",
                        );
                    }
                }
            }
        }
        ok.then_some(out)
    });
    let pin = u
        .pin
        .as_ref()
        .and_then(|p| pin(cx, file, rule_name, p, &sel, &covered));
    let mut ignore = Vec::new();
    for i in u.ignore.iter().flatten() {
        let schemes: BTreeSet<Scheme> = covered.iter().map(|c| c.scheme).collect();
        let schemes = if schemes.is_empty() {
            [Scheme::Semver, Scheme::K3s].into()
        } else {
            schemes
        };
        match schemes
            .iter()
            .find_map(|s| versions::parse(&i.value, *s).ok())
        {
            Some(v) => ignore.push(v),
            None => cx.error(
                file,
                i.pos,
                format!(
                    "update rule `{rule_name}`: cannot ignore `{}`: it is not a version",
                    i.value
                ),
                "list exact versions, like v1.9.0",
            ),
        }
    }
    let emergency = u.emergency.as_ref().map(|e| {
        let d = Emergency::default();
        let label = e
            .label
            .as_ref()
            .map(|l| (l.value.trim().to_string(), l.pos));
        if let Some((l, pos)) = &label
            && l.is_empty()
        {
            cx.error(
                file,
                *pos,
                format!("update rule `{rule_name}`: the emergency label is empty"),
                "e.g. upkeep/emergency",
            );
        }
        Emergency {
            allowed: e.allowed.unwrap_or(true),
            label: label.map(|l| l.0).unwrap_or(d.label),
            bypass_freezes: e.bypass_freezes.unwrap_or(d.bypass_freezes),
        }
    });
    if cx.error_count() > errors {
        return None;
    }
    Some(UpdateRule {
        name: rule_name.clone(),
        components: sel?,
        propose: u
            .propose
            .as_ref()
            .map(|p| p.iter().map(|l| l.value).collect()),
        minimum_release_age: age,
        prerelease: u.prerelease,
        pin,
        ignore,
        emergency,
        paused: u.paused,
    })
}

fn pin(
    cx: &mut Ctx,
    file: &str,
    rule: &str,
    p: &Sp<String>,
    sel: &Option<Selector>,
    covered: &[&Component],
) -> Option<Pin> {
    if matches!(sel, Some(Selector::All)) {
        cx.error(
            file,
            p.pos,
            format!("update rule `{rule}`: a pin needs `components:` naming what it pins"),
            "pins apply to named components, e.g. components: [k3s]",
        );
        return None;
    }
    let mut result = None;
    for c in covered {
        let parsed = match parse_track(&p.value, c.scheme, false) {
            Ok(Track::Line { major, minor }) => Ok(Pin::Line { major, minor }),
            _ => versions::parse(&p.value, c.scheme)
                .map(Pin::Exact)
                .map_err(|e| e.to_string()),
        };
        let pin = match parsed {
            Ok(pin) => pin,
            Err(e) => {
                cx.error(
                    file,
                    p.pos,
                    format!("update rule `{rule}`: cannot pin `{}`: {e}", c.name),
                    "pin a version like v1.33.4+k3s1 or a line like v1.33",
                );
                return None;
            }
        };
        // A pin ahead is fine (the path to it goes through the lines between); one below is
        // refused only where the component cannot go down.
        let below = match &pin {
            Pin::Exact(v) => (*v < c.version
                && versions::check_hop(&c.version, v, &c.path_rule).is_err())
            .then(|| v.to_string()),
            Pin::Line { major, minor } => {
                let lower = (*major, *minor) < c.version.line();
                (lower && c.path_rule.downgrade != Downgrade::Allowed)
                    .then(|| format!("v{major}.{minor}"))
            }
        };
        if let Some(target) = below {
            cx.error(
                file,
                p.pos,
                format!("update rule `{rule}`: pins `{}` to {target}, below the desired {} in versions.yaml", c.name, c.version),
                format!("{} cannot be downgraded; pin {} or newer", c.name, c.version),
            );
            return None;
        }
        result = Some(pin);
    }
    result
}

/// Names must be valid and unique per kind across all policy files.
#[derive(Default)]
struct Names(BTreeMap<(&'static str, String), (String, Pos)>);

impl Names {
    /// Check a window's, freeze's or rule's name, and resolve the components it covers.
    fn entry(
        &mut self,
        cx: &mut Ctx,
        what: &'static str,
        file: &str,
        name: &Sp<String>,
        components: Option<&[Sp<String>]>,
        known: Option<&BTreeSet<String>>,
    ) -> Option<Selector> {
        self.check(cx, what, file, name);
        selector(cx, file, name, components, known)
    }

    fn check(&mut self, cx: &mut Ctx, what: &'static str, file: &str, n: &Sp<String>) {
        if !name_ok(n) {
            cx.error(
                file,
                n.pos,
                format!("`{}` is not a valid {what} name", n.value),
                NAME_HINT,
            );
            return;
        }
        match self.0.get(&(what, n.value.clone())) {
            Some((f, at)) => cx.error(
                file,
                n.pos,
                format!(
                    "{what} `{}` is already defined at {f}:{}:{}",
                    n.value, at.line, at.column
                ),
                format!("give each {what} its own name"),
            ),
            None => {
                self.0
                    .insert((what, n.value.clone()), (file.to_string(), n.pos));
            }
        }
    }
}
