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
    pub upstream_requests: Family<KindLabel, Counter>,
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
        let upstream_requests = Family::<KindLabel, Counter>::default();
        registry.register(
            "upstream_requests",
            "Requests to release sources, by outcome (ok, not_modified)",
            upstream_requests.clone(),
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
        }
    }

    /// The text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}
