//! Metrics in Prometheus format (prometheus-client): what `upkeep run` exposes on `/metrics`.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use std::sync::atomic::AtomicU64;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ComponentLabel {
    pub component: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RolloutLabels {
    pub rollout: String,
    pub component: String,
    pub phase: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabel {
    pub kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CheckLabels {
    pub rollout: String,
    pub check: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StatusLabel {
    /// `ok`, `not_modified` (a 304: the ETag matched) or `error`.
    pub status: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ApiLabel {
    /// `releases` (upstream release lookups) or `forge` (pull requests, comments).
    pub api: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StepLabels {
    pub component: String,
    pub step: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    pub component: String,
    pub outcome: String,
}

type Histograms<L> = Family<L, Histogram, fn() -> Histogram>;

fn long_histogram() -> Histogram {
    // From seconds to a long multi-node rollout.
    Histogram::new([
        1.0, 5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1200.0, 1800.0, 3600.0, 7200.0, 14400.0,
    ])
}

/// Every metric upkeep exposes.
pub struct Metrics {
    pub registry: Registry,
    /// 1 when an update is available for the component.
    pub updates_available: Family<ComponentLabel, Gauge>,
    /// 1 for the phase a rollout is in.
    pub rollout_phase: Family<RolloutLabels, Gauge>,
    pub reconcile_duration: Histogram,
    pub reconcile_errors: Family<KindLabel, Counter>,
    /// 1 passed, 0 failed, by rollout and check, from the last validation.
    pub check_result: Family<CheckLabels, Gauge>,
    pub last_success: Gauge<f64, AtomicU64>,
    pub upstream_requests: Family<StatusLabel, Counter>,
    pub rate_limit_remaining: Family<ApiLabel, Gauge>,
    /// How long each rollout took, from start to its end, by outcome.
    pub rollout_duration: Histograms<OutcomeLabels>,
    /// How long a rollout spent in each phase (preflight, backup, applying, validating, ...).
    pub step_duration: Histograms<StepLabels>,
    /// 1 while this replica holds the lease and may act.
    pub leader: Gauge,
    pub webhook_deliveries: Family<StatusLabel, Counter>,
    /// 1 when the component's release source failed at the last detection.
    pub source_failing: Family<ComponentLabel, Gauge>,
    /// Soaks that ended in a regression, per component.
    pub soak_regressions: Family<ComponentLabel, Counter>,
    /// Notifications per provider, `delivered` or `failed` (after every retry).
    pub notifications: Family<NotifyLabels, Counter>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct NotifyLabels {
    pub provider: String,
    pub result: String,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("upkeep");
        let updates_available = Family::<ComponentLabel, Gauge>::default();
        registry.register(
            "updates_available",
            "Whether an update is available, per component",
            updates_available.clone(),
        );
        let rollout_phase = Family::<RolloutLabels, Gauge>::default();
        registry.register(
            "rollout_phase",
            "The phase each rollout is in (1)",
            rollout_phase.clone(),
        );
        let reconcile_duration =
            Histogram::new([0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0]);
        registry.register(
            "reconcile_duration_seconds",
            "How long one reconcile took",
            reconcile_duration.clone(),
        );
        let reconcile_errors = Family::<KindLabel, Counter>::default();
        registry.register(
            "reconcile_errors",
            "Reconcile errors by kind",
            reconcile_errors.clone(),
        );
        let check_result = Family::<CheckLabels, Gauge>::default();
        registry.register(
            "validation_check_result",
            "The last result of each validation check (1 passed)",
            check_result.clone(),
        );
        let last_success = Gauge::<f64, AtomicU64>::default();
        registry.register(
            "last_successful_reconcile_timestamp_seconds",
            "When the last reconcile succeeded",
            last_success.clone(),
        );
        let upstream_requests = Family::<StatusLabel, Counter>::default();
        registry.register(
            "upstream_requests",
            "Requests to release sources, by status (ok, not_modified for a 304, error)",
            upstream_requests.clone(),
        );
        let rate_limit_remaining = Family::<ApiLabel, Gauge>::default();
        registry.register(
            "github_rate_limit_remaining",
            "What GitHub last said of the requests left this hour, by API use",
            rate_limit_remaining.clone(),
        );
        let rollout_duration: Histograms<OutcomeLabels> =
            Family::new_with_constructor(long_histogram);
        registry.register(
            "rollout_duration_seconds",
            "How long rollouts took from start to end, by outcome",
            rollout_duration.clone(),
        );
        let step_duration: Histograms<StepLabels> = Family::new_with_constructor(long_histogram);
        registry.register(
            "rollout_step_duration_seconds",
            "How long rollouts spent in each phase",
            step_duration.clone(),
        );
        let leader = Gauge::default();
        registry.register(
            "leader",
            "1 while this replica holds the lease and may act",
            leader.clone(),
        );
        let webhook_deliveries = Family::<StatusLabel, Counter>::default();
        registry.register(
            "webhook_deliveries",
            "GitHub webhook deliveries, by outcome (accepted, refused for a bad signature, bad_request)",
            webhook_deliveries.clone(),
        );
        let source_failing = Family::<ComponentLabel, Gauge>::default();
        registry.register(
            "source_failing",
            "Whether the component's release source failed at the last detection",
            source_failing.clone(),
        );
        // Every known label set starts at 0, so that rate() and absent() work from the first
        // scrape, before the first error.
        for kind in RECONCILE_ERROR_KINDS {
            drop(reconcile_errors.get_or_create(&KindLabel {
                kind: (*kind).into(),
            }));
        }
        for status in ["ok", "not_modified", "error"] {
            drop(upstream_requests.get_or_create(&StatusLabel {
                status: status.into(),
            }));
        }
        for status in ["accepted", "refused", "bad_request"] {
            drop(webhook_deliveries.get_or_create(&StatusLabel {
                status: status.into(),
            }));
        }
        let soak_regressions = Family::<ComponentLabel, Counter>::default();
        registry.register(
            "soak_regressions",
            "Soaks that ended in a regression (a check failed after a rollout validated)",
            soak_regressions.clone(),
        );
        let notifications = Family::<NotifyLabels, Counter>::default();
        registry.register(
            "notifications",
            "Notifications per provider, delivered or failed after every retry",
            notifications.clone(),
        );
        Metrics {
            registry,
            updates_available,
            rollout_phase,
            reconcile_duration,
            reconcile_errors,
            check_result,
            last_success,
            upstream_requests,
            rate_limit_remaining,
            rollout_duration,
            step_duration,
            leader,
            webhook_deliveries,
            source_failing,
            soak_regressions,
            notifications,
        }
    }

    /// The OpenMetrics text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }

    /// The exposition in the format `accept` asks for (a request's `Accept` header): OpenMetrics
    /// when it names `application/openmetrics-text` (as Prometheus does), else the Prometheus
    /// text format 0.0.4 (curl, promtool, older scrapers). Returns the body and its content type.
    pub fn negotiate(&self, accept: Option<&str>) -> (String, &'static str) {
        let open = self.encode();
        if accept.is_some_and(|a| a.contains("application/openmetrics-text")) {
            (open, OPENMETRICS)
        } else {
            (to_text_format(&open), TEXT_FORMAT)
        }
    }
}

/// The `kind` labels of `upkeep_reconcile_errors_total` (the reconcile's error kinds).
pub const RECONCILE_ERROR_KINDS: &[&str] = &["propose", "git", "config", "kube", "apply", "lease"];

pub const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
pub const TEXT_FORMAT: &str = "text/plain; version=0.0.4; charset=utf-8";

/// OpenMetrics text as the Prometheus text format 0.0.4: no `# EOF` or `# UNIT`; a counter's
/// `# TYPE` and `# HELP` name its `_total` samples; `info` and `stateset` become gauges.
pub fn to_text_format(open: &str) -> String {
    let mut out = String::with_capacity(open.len());
    let mut counters = std::collections::HashSet::new();
    for line in open.lines() {
        if line.starts_with("# TYPE ")
            && let Some(name) = line
                .strip_prefix("# TYPE ")
                .and_then(|l| l.strip_suffix(" counter"))
        {
            counters.insert(name.to_string());
        }
    }
    for line in open.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        let meta = ["# TYPE ", "# HELP "]
            .iter()
            .find_map(|p| line.strip_prefix(p).map(|rest| (*p, rest)));
        match meta {
            Some((p, rest)) => {
                let (name, tail) = rest.split_once(' ').unwrap_or((rest, ""));
                let name = if counters.contains(name) && !name.ends_with("_total") {
                    format!("{name}_total")
                } else {
                    name.to_string()
                };
                let tail = match tail {
                    "info" | "stateset" | "gaugehistogram" | "unknown" if p == "# TYPE " => {
                        "untyped"
                    }
                    t => t,
                };
                out.push_str(p);
                out.push_str(&name);
                if !tail.is_empty() {
                    out.push(' ');
                    out.push_str(tail);
                }
            }
            None => out.push_str(line),
        }
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_text_format_names_counters_by_their_samples_and_has_no_eof() {
        let m = Metrics::new();
        let (open, ct) = m.negotiate(Some(
            "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5",
        ));
        assert_eq!(ct, OPENMETRICS);
        assert!(open.ends_with("# EOF\n"));
        assert!(open.contains("# TYPE upkeep_reconcile_errors counter"));
        let (text, ct) = m.negotiate(None);
        assert_eq!(ct, TEXT_FORMAT);
        assert!(!text.contains("# EOF"));
        assert!(
            text.contains("# TYPE upkeep_reconcile_errors_total counter"),
            "{text}"
        );
        assert!(
            text.contains("upkeep_reconcile_errors_total{kind=\"git\"} 0"),
            "{text}"
        );
        assert!(
            text.contains("upkeep_webhook_deliveries_total{status=\"refused\"} 0"),
            "{text}"
        );
    }
}
