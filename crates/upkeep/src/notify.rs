//! Notifications: telling people what upkeep does, in the spirit of Flux's
//! notification-controller (a `Provider` is where, an `Alert` is what).
//!
//! - [`notices`] (pure): what the cluster's rollouts, the windows and the sources imply, each
//!   with a stable id (`rollout/<name>/succeeded`, `window/<rollout>/<start>`, `source/<c>`).
//! - [`Ledger`] (pure, stored in the ConfigMap `upkeep-control`): the ids already handed to the
//!   sender. An id is recorded *before* it is sent, so a restart never sends it again (at most
//!   once: a controller killed mid-delivery loses that one, and says so in its log).
//! - [`payload`] (pure): the request each provider type takes.
//! - [`Sender`]: delivers in the background with retries and backoff, so a dead receiver never
//!   holds up a reconcile; secrets are read at delivery and never logged.

use std::collections::BTreeMap;
use std::time::Duration as StdDuration;

use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};

use crate::model::{Alert, NotificationEvent, Provider, ProviderType, Secret};
use crate::rollout::{Phase, RolloutSpec, RolloutStatus};
use crate::windows::{Freeze, Override, Window};

/// Every event, for an alert that lists none.
pub const ALL_EVENTS: &[NotificationEvent] = &[
    NotificationEvent::WindowOpeningSoon,
    NotificationEvent::RolloutStarted,
    NotificationEvent::RolloutSucceeded,
    NotificationEvent::RolloutFailed,
    NotificationEvent::NeedsAttention,
    NotificationEvent::SoakRegression,
    NotificationEvent::SourceFailing,
];

/// A rollout that ended longer ago than this tells nothing any more (a controller installed
/// next to old rollouts does not announce them).
pub const STALE: i64 = 24 * 3600;
/// How long a source fails before `sourceFailing`.
pub const SOURCE_FAILING_AFTER: i64 = 24 * 3600;
/// Ids are forgotten this long after they were sent.
pub const KEEP_DAYS: i64 = 60;
/// The longest message sent (Discord takes 2,000 characters; the title comes on top).
pub const MAX_MESSAGE: usize = 1500;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Info,
    Error,
}

/// One thing to tell.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Notice {
    /// Stable across looks and restarts: what the ledger remembers.
    pub id: String,
    pub event: NotificationEvent,
    pub component: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rollout: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pull_request: Option<u64>,
    pub severity: Severity,
    pub title: String,
    pub message: String,
    pub at: DateTime<Utc>,
}

/// A rollout as notices see it.
pub struct RolloutView<'a> {
    pub name: &'a str,
    pub spec: &'a RolloutSpec,
    pub status: &'a RolloutStatus,
}

/// What the windows and freezes are, for `windowOpeningSoon`.
pub struct Schedule<'a> {
    pub windows: &'a [Window],
    pub freezes: &'a [Freeze],
    pub lead: Duration,
}

/// The notices the current state implies (the ledger filters those already sent).
/// `failing`: component -> since when its release source fails.
pub fn notices(
    now: DateTime<Utc>,
    rollouts: &[RolloutView],
    schedule: &Schedule,
    failing: &BTreeMap<String, DateTime<Utc>>,
) -> Vec<Notice> {
    let mut out = Vec::new();
    for r in rollouts {
        let (spec, st) = (r.spec, r.status);
        let since = st.phase_since.unwrap_or(now);
        if st.phase.is_terminal() && (now - since).num_seconds() > STALE {
            continue;
        }
        let what = format!("{} {} → {}", spec.component, spec.from, spec.to);
        // The attempt's start in the id: a retried rollout (same name) is told again.
        let attempt = st.started_at.map_or(0, |t| t.timestamp());
        let mut push = |event, severity, title: String, message: String, at| {
            out.push(Notice {
                id: format!("rollout/{}/{attempt}/{}", r.name, event_word(event)),
                event,
                component: spec.component.clone(),
                rollout: Some(r.name.to_string()),
                pull_request: spec.pull_request,
                severity,
                title,
                message: bounded(&message),
                at,
            })
        };
        let started = !matches!(
            st.phase,
            Phase::Pending | Phase::WaitingForWindow | Phase::Preflight | Phase::Superseded
        );
        if started {
            push(
                NotificationEvent::RolloutStarted,
                Severity::Info,
                format!("Rolling out {what}"),
                format!(
                    "upkeep started the rollout of {what}{}.",
                    st.backup
                        .as_ref()
                        .map(|b| format!(" after the backup {b}"))
                        .unwrap_or_default()
                ),
                st.started_at.unwrap_or(since),
            );
        }
        if st.phase == Phase::Succeeded {
            push(
                NotificationEvent::RolloutSucceeded,
                Severity::Info,
                format!("Rolled out {what}"),
                format!(
                    "{} runs {}{}.",
                    spec.component,
                    spec.to,
                    st.soak
                        .as_ref()
                        .map(|k| format!(", soaked ({})", k.result()))
                        .unwrap_or_default()
                ),
                since,
            );
        }
        if let Some(why) = &st.failure {
            push(
                NotificationEvent::RolloutFailed,
                Severity::Error,
                format!("Rollout failed: {what}"),
                format!("{why}. Now: {:?}: {}", st.phase, st.message),
                since,
            );
        }
        if st.phase == Phase::RequiresAttention {
            push(
                NotificationEvent::NeedsAttention,
                Severity::Error,
                format!("Needs a human: {what}"),
                format!("{}. See docs/runbook.md.", st.message),
                since,
            );
        }
        if let Some(regression) = st.soak.as_ref().and_then(|k| k.regression.as_ref()) {
            push(
                NotificationEvent::SoakRegression,
                Severity::Error,
                format!("Regression during the soak: {what}"),
                regression.clone(),
                since,
            );
        }
        if st.phase == Phase::WaitingForWindow
            && let Some(t) = crate::windows::next_start(
                now,
                &spec.component,
                schedule.windows,
                schedule.freezes,
                Override {
                    emergency: spec.emergency,
                    bypass_freezes: false,
                },
            )
            && t > now
            && t - now <= schedule.lead
        {
            out.push(Notice {
                id: format!("window/{}/{}", r.name, t.timestamp()),
                event: NotificationEvent::WindowOpeningSoon,
                component: spec.component.clone(),
                rollout: Some(r.name.to_string()),
                pull_request: spec.pull_request,
                severity: Severity::Info,
                title: format!("Window opens soon for {what}"),
                message: format!(
                    "A maintenance window opens at {} (in {} min); upkeep will roll out {what} then.",
                    t.format("%Y-%m-%d %H:%M UTC"),
                    (t - now).num_minutes().max(1)
                ),
                at: now,
            });
        }
    }
    for (component, since) in failing {
        if (now - *since).num_seconds() >= SOURCE_FAILING_AFTER {
            out.push(Notice {
                id: source_id(component),
                event: NotificationEvent::SourceFailing,
                component: component.clone(),
                rollout: None,
                pull_request: None,
                severity: Severity::Error,
                title: format!("Release source failing: {component}"),
                message: format!(
                    "upkeep has not been able to read {component}'s releases since {}: nothing new is proposed for it. `upkeep check` says why.",
                    since.format("%Y-%m-%d %H:%M UTC")
                ),
                at: now,
            });
        }
    }
    out
}

/// The ledger id of a failing source (forgotten once it works again, so that a later failure
/// is told again).
pub fn source_id(component: &str) -> String {
    format!("source/{component}")
}

fn event_word(e: NotificationEvent) -> &'static str {
    match e {
        NotificationEvent::WindowOpeningSoon => "window",
        NotificationEvent::RolloutStarted => "started",
        NotificationEvent::RolloutSucceeded => "succeeded",
        NotificationEvent::RolloutFailed => "failed",
        NotificationEvent::NeedsAttention => "attention",
        NotificationEvent::SoakRegression => "soak-regression",
        NotificationEvent::SourceFailing => "source-failing",
    }
}

/// At most [`MAX_MESSAGE`] characters, control characters out.
fn bounded(s: &str) -> String {
    let mut out: String = s
        .chars()
        .filter(|c| !c.is_control() || *c == '\n')
        .take(MAX_MESSAGE)
        .collect();
    if s.chars().count() > MAX_MESSAGE {
        out.push('…');
    }
    out
}

/// The providers that get `n`: every alert that covers its event and component.
pub fn route<'a>(n: &Notice, alerts: &'a [Alert]) -> Vec<&'a str> {
    let mut out: Vec<&str> = alerts
        .iter()
        .filter(|a| a.events.contains(&n.event) && a.components.covers(&n.component))
        .map(|a| a.provider.as_str())
        .collect();
    out.sort_unstable();
    out.dedup();
    out
}

/// The ids already handed to the sender, and when.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ledger(pub BTreeMap<String, DateTime<Utc>>);

impl Ledger {
    /// The notices not sent yet.
    pub fn unsent<'a>(&self, notices: &'a [Notice]) -> Vec<&'a Notice> {
        notices
            .iter()
            .filter(|n| !self.0.contains_key(&n.id))
            .collect()
    }

    pub fn record(&mut self, id: &str, now: DateTime<Utc>) {
        self.0.insert(id.to_string(), now);
    }

    /// Forget what is older than [`KEEP_DAYS`], and the failing sources that work again
    /// (`failing`: those failing now; `None` before this process looked at the sources, when a
    /// source's id must stay). Whether anything changed.
    pub fn prune(
        &mut self,
        now: DateTime<Utc>,
        failing: Option<&BTreeMap<String, DateTime<Utc>>>,
    ) -> bool {
        let before = self.0.len();
        self.0.retain(|id, at| {
            (now - *at).num_days() < KEEP_DAYS
                && id
                    .strip_prefix("source/")
                    .is_none_or(|c| failing.is_none_or(|f| f.contains_key(c)))
        });
        self.0.len() != before
    }
}

/// An HTTP request to a provider: method POST, these headers and body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Payload {
    pub content_type: &'static str,
    pub headers: Vec<(&'static str, String)>,
    pub body: Vec<u8>,
}

/// Slack's mrkdwn: `&`, `<` and `>` escaped, so that text from upstream cannot mention
/// (`<!channel>`) or link.
fn slack_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// ASCII for an HTTP header (ntfy's `Title`): other characters become `?`.
fn header_safe(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c == '→' {
                '>'
            } else if c.is_ascii() && !c.is_ascii_control() {
                c
            } else {
                '?'
            }
        })
        .take(200)
        .collect()
}

/// The request a provider of `kind` takes for `n`.
pub fn payload(kind: ProviderType, n: &Notice) -> Payload {
    let json = |v: serde_json::Value| serde_json::to_vec(&v).unwrap_or_default();
    match kind {
        ProviderType::Slack => Payload {
            content_type: "application/json",
            headers: Vec::new(),
            body: json(serde_json::json!({
                "username": "upkeep",
                "text": format!("*{}*\n{}", slack_escape(&n.title), slack_escape(&n.message)),
            })),
        },
        ProviderType::Discord => Payload {
            content_type: "application/json",
            headers: Vec::new(),
            body: json(serde_json::json!({
                "username": "upkeep",
                "content": format!("**{}**\n{}", n.title, n.message).chars().take(2000).collect::<String>(),
                "allowed_mentions": {"parse": []},
            })),
        },
        ProviderType::Ntfy => Payload {
            content_type: "text/plain; charset=utf-8",
            headers: vec![
                ("Title", header_safe(&n.title)),
                (
                    "Priority",
                    match n.severity {
                        Severity::Error => "high".into(),
                        Severity::Info => "default".into(),
                    },
                ),
                (
                    "Tags",
                    match n.severity {
                        Severity::Error => "warning".into(),
                        Severity::Info => "arrows_counterclockwise".into(),
                    },
                ),
            ],
            body: n.message.as_bytes().to_vec(),
        },
        ProviderType::Generic => Payload {
            content_type: "application/json",
            headers: vec![("X-Upkeep-Event-Id", n.id.clone())],
            body: serde_json::to_vec(n).unwrap_or_default(),
        },
    }
}

/// What a delivery attempt came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Attempt {
    Delivered,
    /// Try again after at least this long (a 5xx, a timeout, a 429's `Retry-After`).
    Retry(Option<StdDuration>, String),
    /// Trying again would not help (a 4xx, no address): why.
    GiveUp(String),
}

/// The wait before attempt `n` (1-based, after the first): 1 s, 2 s, 4 s, ... at most 60 s; a
/// receiver's `Retry-After` is taken when longer (also at most 60 s).
pub fn backoff(n: u32, asked: Option<StdDuration>) -> StdDuration {
    let base =
        StdDuration::from_secs(1u64 << n.saturating_sub(1).min(6)).min(StdDuration::from_secs(60));
    asked.map_or(base, |a| a.min(StdDuration::from_secs(60)).max(base))
}

/// How many times one notice is tried on one provider.
pub const ATTEMPTS: u32 = 6;

/// Read a secret; the error names where it was looked for, never what it holds.
pub fn read_secret(s: &Secret) -> Result<String, String> {
    let v = match s {
        Secret::File(p) => std::fs::read_to_string(p)
            .map_err(|e| format!("cannot read the secret file {p}: {}", e.kind()))?,
        Secret::Env(name) => std::env::var(name)
            .map_err(|_| format!("the environment variable {name} is not set"))?,
    };
    let v = v.trim().to_string();
    if v.is_empty() {
        return Err(match s {
            Secret::File(p) => format!("the secret file {p} is empty"),
            Secret::Env(name) => format!("the environment variable {name} is empty"),
        });
    }
    Ok(v)
}

/// One delivery: a notice for a provider.
#[derive(Debug, Clone)]
pub struct Delivery {
    pub notice: Notice,
    pub provider: Provider,
}

/// One attempt to deliver (the thin I/O).
pub async fn attempt(client: &reqwest::Client, d: &Delivery) -> Attempt {
    let p = &d.provider;
    let address = match (&p.address, &p.address_from) {
        (Some(a), _) => a.clone(),
        (None, Some(s)) => match read_secret(s) {
            Ok(a) => a,
            Err(e) => return Attempt::Retry(None, e),
        },
        (None, None) => return Attempt::GiveUp("no address".into()),
    };
    if !(address.starts_with("https://") || address.starts_with("http://")) {
        return Attempt::GiveUp("the address from the secret is not an http(s) URL".into());
    }
    let token = match &p.token_from {
        Some(s) => match read_secret(s) {
            Ok(t) => Some(t),
            Err(e) => return Attempt::Retry(None, e),
        },
        None => None,
    };
    let body = payload(p.kind, &d.notice);
    let mut req = client
        .post(&address)
        .header("content-type", body.content_type)
        .body(body.body);
    for (k, v) in body.headers {
        req = req.header(k, v);
    }
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    match req.send().await {
        Ok(r) if r.status().is_success() => Attempt::Delivered,
        Ok(r) => {
            let status = r.status().as_u16();
            let after = r
                .headers()
                .get("retry-after")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse::<f64>().ok())
                .filter(|s| s.is_finite() && *s >= 0.0)
                .map(StdDuration::from_secs_f64);
            let mut text = r.text().await.unwrap_or_default();
            crate::sources::truncate_utf8(&mut text, 200);
            let why = format!("HTTP {status}: {}", crate::diag::Printable(&text));
            if status == 429 || status == 408 || status >= 500 {
                Attempt::Retry(after, why)
            } else {
                Attempt::GiveUp(why)
            }
        }
        // Without the URL: a webhook URL carries its token.
        Err(e) => Attempt::Retry(None, crate::sources::http::error_chain(&e.without_url())),
    }
}

/// Delivers notices in the background: each in its own task (at most [`PARALLEL`] at once),
/// retried with [`backoff`] up to [`ATTEMPTS`] times; never blocks the caller.
#[derive(Clone)]
pub struct Sender {
    tx: tokio::sync::mpsc::UnboundedSender<Delivery>,
}

/// How many deliveries run at once.
pub const PARALLEL: usize = 8;

impl Sender {
    /// Start the sender on the current runtime. `done` hears each delivery's end (provider,
    /// delivered or not), for metrics.
    pub fn spawn(done: impl Fn(&str, bool) + Send + Sync + 'static) -> Sender {
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Delivery>();
        let done = std::sync::Arc::new(done);
        tokio::spawn(async move {
            let client = match reqwest::Client::builder()
                .timeout(StdDuration::from_secs(10))
                .user_agent(concat!("upkeep/", env!("CARGO_PKG_VERSION")))
                .build()
            {
                Ok(c) => c,
                Err(e) => {
                    tracing::error!(error = %e, "cannot make an HTTP client: no notifications");
                    return;
                }
            };
            let slots = std::sync::Arc::new(tokio::sync::Semaphore::new(PARALLEL));
            while let Some(d) = rx.recv().await {
                let (client, slots, done) = (client.clone(), slots.clone(), done.clone());
                tokio::spawn(async move {
                    let Ok(_slot) = slots.acquire_owned().await else {
                        return;
                    };
                    let span = tracing::info_span!("notify", provider = %d.provider.name, id = %d.notice.id);
                    let ok = tracing::Instrument::instrument(deliver(&client, &d), span).await;
                    done(&d.provider.name, ok);
                });
            }
        });
        Sender { tx }
    }

    /// Hand a delivery over (returns at once).
    pub fn send(&self, d: Delivery) {
        if self.tx.send(d).is_err() {
            tracing::error!("the notification sender stopped; a notification is lost");
        }
    }
}

/// Try a delivery until it is delivered, refused, or out of attempts; whether it was delivered.
async fn deliver(client: &reqwest::Client, d: &Delivery) -> bool {
    for n in 1..=ATTEMPTS {
        match attempt(client, d).await {
            Attempt::Delivered => {
                tracing::info!(provider = %d.provider.name, id = %d.notice.id, "notification delivered");
                return true;
            }
            Attempt::GiveUp(why) => {
                tracing::warn!(provider = %d.provider.name, id = %d.notice.id, why, "notification refused; not tried again");
                return false;
            }
            Attempt::Retry(after, why) if n < ATTEMPTS => {
                let wait = backoff(n, after);
                tracing::debug!(provider = %d.provider.name, id = %d.notice.id, why, wait_ms = wait.as_millis() as u64, "notification not delivered; trying again");
                tokio::time::sleep(wait).await;
            }
            Attempt::Retry(_, why) => {
                tracing::warn!(provider = %d.provider.name, id = %d.notice.id, why, attempts = ATTEMPTS, "notification not delivered; giving up");
            }
        }
    }
    false
}

/// The ledger's key in the ConfigMap `upkeep-control`.
pub const LEDGER_KEY: &str = "notified";

/// The ledger as stored (empty when there is none yet or it cannot be read: then at worst a
/// recent notice is sent again, never one older than [`STALE`]).
pub async fn load_ledger(client: &kube::Client, namespace: &str) -> Result<Ledger, String> {
    let text = crate::operate::control_value(client, namespace, LEDGER_KEY)
        .await
        .map_err(|e| e.to_string())?;
    Ok(text
        .and_then(|t| serde_json::from_str(&t).ok())
        .unwrap_or_default())
}

pub async fn save_ledger(
    client: &kube::Client,
    namespace: &str,
    ledger: &Ledger,
) -> Result<(), String> {
    let text = serde_json::to_string(ledger).map_err(|e| e.to_string())?;
    crate::operate::set_control_value(client, namespace, LEDGER_KEY, &text, "upkeep-notify")
        .await
        .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rollout::Soak;

    fn t(s: &str) -> DateTime<Utc> {
        s.parse().unwrap_or_default()
    }

    fn spec() -> RolloutSpec {
        RolloutSpec {
            component: "k3s".into(),
            from: "v1.33.4+k3s1".into(),
            to: "v1.33.5+k3s1".into(),
            hops: vec!["v1.33.5+k3s1".into()],
            pull_request: Some(7),
            emergency: false,
        }
    }

    fn ids(n: &[Notice]) -> Vec<String> {
        n.iter().map(|n| n.id.clone()).collect()
    }

    fn empty() -> Schedule<'static> {
        Schedule {
            windows: &[],
            freezes: &[],
            lead: Duration::hours(1),
        }
    }

    #[test]
    fn each_state_implies_its_notices_with_stable_ids() {
        let now = t("2026-11-21T22:00:00Z");
        let spec = spec();
        let st = |phase, failure: Option<&str>| RolloutStatus {
            phase,
            failure: failure.map(str::to_string),
            phase_since: Some(now),
            started_at: Some(now - Duration::minutes(20)),
            ..Default::default()
        };
        let view = |s| RolloutView {
            name: "k3s-v1.33.5-k3s1",
            spec: &spec,
            status: s,
        };
        let failing = BTreeMap::new();
        let waiting = st(Phase::WaitingForWindow, None);
        assert!(notices(now, &[view(&waiting)], &empty(), &failing).is_empty());
        let applying = st(Phase::Applying, None);
        assert_eq!(
            ids(&notices(now, &[view(&applying)], &empty(), &failing)),
            ["rollout/k3s-v1.33.5-k3s1/1795297200/started"]
        );
        let done = st(Phase::Succeeded, None);
        assert_eq!(
            ids(&notices(now, &[view(&done)], &empty(), &failing)),
            [
                "rollout/k3s-v1.33.5-k3s1/1795297200/started",
                "rollout/k3s-v1.33.5-k3s1/1795297200/succeeded"
            ]
        );
        let mut attention = st(Phase::RequiresAttention, Some("errors: 0.2"));
        attention.soak = Some(Soak {
            hop: 0,
            since: now - Duration::hours(2),
            until: now + Duration::hours(22),
            looks: 3,
            failing: 2,
            regression: Some("errors: 0.2".into()),
        });
        let n = notices(now, &[view(&attention)], &empty(), &failing);
        assert_eq!(
            ids(&n),
            [
                "rollout/k3s-v1.33.5-k3s1/1795297200/started",
                "rollout/k3s-v1.33.5-k3s1/1795297200/failed",
                "rollout/k3s-v1.33.5-k3s1/1795297200/attention",
                "rollout/k3s-v1.33.5-k3s1/1795297200/soak-regression"
            ]
        );
        assert!(n.iter().skip(1).all(|n| n.severity == Severity::Error));
        // A day later it is old news: a controller installed next to it says nothing.
        assert!(
            notices(
                now + Duration::hours(25),
                &[view(&done)],
                &empty(),
                &failing
            )
            .is_empty()
        );
        // A source failing for a day, once.
        let failing = BTreeMap::from([("flux".to_string(), now - Duration::hours(25))]);
        assert_eq!(ids(&notices(now, &[], &empty(), &failing)), ["source/flux"]);
        let young = BTreeMap::from([("flux".to_string(), now - Duration::hours(2))]);
        assert!(notices(now, &[], &empty(), &young).is_empty());
    }

    #[test]
    fn a_window_opening_within_the_lead_time_is_told_once_per_opening() {
        let w = Window::new(
            "sat",
            crate::windows::Kind::Allow,
            "0 22 * * 6",
            Duration::hours(4),
            crate::windows::parse_tz("UTC").expect("tz"),
            crate::windows::Selector::All,
        )
        .expect("window");
        let windows = [w];
        let schedule = Schedule {
            windows: &windows,
            freezes: &[],
            lead: Duration::hours(1),
        };
        let spec = spec();
        let waiting = RolloutStatus {
            phase: Phase::WaitingForWindow,
            ..Default::default()
        };
        let view = [RolloutView {
            name: "k3s-v1.33.5-k3s1",
            spec: &spec,
            status: &waiting,
        }];
        let none = BTreeMap::new();
        assert!(notices(t("2026-11-21T20:30:00Z"), &view, &schedule, &none).is_empty());
        let n = notices(t("2026-11-21T21:15:00Z"), &view, &schedule, &none);
        assert_eq!(ids(&n), ["window/k3s-v1.33.5-k3s1/1795298400"]);
        assert!(n[0].message.contains("(in 45 min)"), "{}", n[0].message);
        // Ten minutes later, the same opening: the same id.
        let again = notices(t("2026-11-21T21:25:00Z"), &view, &schedule, &none);
        assert_eq!(ids(&again), ids(&n));
    }

    #[test]
    fn the_ledger_forgets_old_ids_and_sources_that_work_again() {
        let now = t("2026-11-21T22:00:00Z");
        let mut l = Ledger::default();
        l.record("rollout/a/started", now - Duration::days(61));
        l.record("rollout/b/started", now);
        l.record("source/flux", now);
        l.record("source/k3s", now);
        let failing = BTreeMap::from([("k3s".to_string(), now - Duration::days(2))]);
        // Before this process read the sources, a failing source's id stays.
        let mut early = l.clone();
        early.prune(now, None);
        assert!(early.0.contains_key("source/flux"));
        assert!(l.prune(now, Some(&failing)));
        assert_eq!(
            l.0.keys().cloned().collect::<Vec<_>>(),
            ["rollout/b/started", "source/k3s"]
        );
        assert!(!l.prune(now, Some(&failing)));
    }

    #[test]
    fn payloads_escape_what_upstream_wrote_and_mention_no_one() {
        let n = Notice {
            id: "rollout/x/failed".into(),
            event: NotificationEvent::RolloutFailed,
            component: "k3s".into(),
            rollout: Some("x".into()),
            pull_request: None,
            severity: Severity::Error,
            title: "Rollout failed: k3s a → b".into(),
            message: "<!channel> @everyone & more".into(),
            at: t("2026-11-21T22:00:00Z"),
        };
        let slack: serde_json::Value =
            serde_json::from_slice(&payload(ProviderType::Slack, &n).body).expect("json");
        assert_eq!(
            slack["text"],
            "*Rollout failed: k3s a → b*\n&lt;!channel&gt; @everyone &amp; more"
        );
        let discord: serde_json::Value =
            serde_json::from_slice(&payload(ProviderType::Discord, &n).body).expect("json");
        assert_eq!(discord["allowed_mentions"]["parse"], serde_json::json!([]));
        let ntfy = payload(ProviderType::Ntfy, &n);
        assert!(
            ntfy.headers
                .contains(&("Title", "Rollout failed: k3s a > b".into()))
        );
        assert!(ntfy.headers.contains(&("Priority", "high".into())));
        let generic = payload(ProviderType::Generic, &n);
        assert!(
            generic
                .headers
                .contains(&("X-Upkeep-Event-Id", "rollout/x/failed".into()))
        );
        let v: serde_json::Value = serde_json::from_slice(&generic.body).expect("json");
        assert_eq!(v["event"], "rolloutFailed");
        assert_eq!(v["severity"], "error");
    }

    #[test]
    fn backoff_doubles_and_honours_retry_after_within_a_minute() {
        let s = StdDuration::from_secs;
        assert_eq!(
            (1..=6).map(|n| backoff(n, None)).collect::<Vec<_>>(),
            [s(1), s(2), s(4), s(8), s(16), s(32)]
        );
        assert_eq!(backoff(1, Some(s(5))), s(5));
        assert_eq!(backoff(1, Some(s(3600))), s(60));
        assert_eq!(backoff(20, None), s(60));
    }

    #[test]
    fn a_secret_error_says_where_never_what() {
        let e = read_secret(&Secret::Env("UPKEEP_TEST_NO_SUCH_VARIABLE".into())).unwrap_err();
        assert_eq!(
            e,
            "the environment variable UPKEEP_TEST_NO_SUCH_VARIABLE is not set"
        );
        let dir = tempfile::tempdir().expect("dir");
        let p = dir.path().join("url");
        std::fs::write(&p, "https://hooks.example/T0/B0/secret\n").expect("write");
        let path = p.to_string_lossy().to_string();
        assert_eq!(
            read_secret(&Secret::File(path.clone())).as_deref(),
            Ok("https://hooks.example/T0/B0/secret")
        );
        std::fs::write(&p, " \n").expect("write");
        assert!(
            read_secret(&Secret::File(path))
                .unwrap_err()
                .ends_with("is empty")
        );
    }
}
