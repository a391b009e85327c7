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
        }
    }

    /// The text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}
