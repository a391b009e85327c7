//! How a component's version reaches the cluster: through git (upkeep writes it where the
//! repository carries it, in the window, and Flux applies it), in the cluster (nothing in git
//! carries it and Flux does not own the field: upkeep sets it), or not at all (why, with the
//! file and line and what to change). Decided from the repository as Flux builds it
//! ([`crate::layout`]) and confirmed against what runs; a plain function over plain data.

use crate::cluster::Observed;
pub use crate::layout::route::{Place, Route};
use crate::layout::{Carrier, Field, Mapping};
use crate::model::{Component, Runs};

/// How `c`'s version reaches the cluster, given where the repository carries it (`None`: the
/// repository was not read) and what runs.
pub fn decide(c: &Component, mapping: Option<&Mapping>, o: &Observed) -> Route {
    let Some(m) = mapping else {
        return Route::Cluster;
    };
    if let Some(p) = m.problems.iter().find(|p| p.is_error()) {
        return Route::Refused { why: p.to_string() };
    }
    if m.carriers.is_empty() {
        if let Some(w) = m.problems.first() {
            return Route::Refused { why: w.to_string() };
        }
        return in_cluster(c, o);
    }
    let mut flux_applied = 0;
    for carrier in &m.carriers {
        if let Err(why) = &carrier.edit {
            return Route::Refused {
                why: format!(
                    "{}: {} ({}): upkeep cannot change {} there: {why}",
                    carrier.at(),
                    carrier.object,
                    carrier.field.path(),
                    c.name
                ),
            };
        }
        // A range (`2.x`, `>=1.9.0`, `*`) follows every release by itself, in no window: upkeep
        // writes exact versions and will not pin one silently.
        if crate::versions::parse(&carrier.version(), c.scheme).is_err() {
            return Route::Refused {
                why: format!(
                    "{}: {} ({}) asks for {:?}, which is not one version of {} (a range follows every release, outside any window): write the exact version that runs there, and upkeep changes it in windows",
                    carrier.at(),
                    carrier.object,
                    carrier.field.path(),
                    crate::diag::Printable(&carrier.value).to_string(),
                    c.name
                ),
            };
        }
        match live(carrier, c, o) {
            Live::Missing => {
                return Route::Refused {
                    why: format!(
                        "{} ({}) carries {}'s version in git, but the cluster has no such object: Flux has not applied it yet, or this is not the repository this cluster's Flux reads (check --repo-url and --subdir)",
                        carrier.object,
                        carrier.at(),
                        c.name
                    ),
                };
            }
            Live::FluxApplied => flux_applied += 1,
            Live::NotFlux => {}
        }
    }
    // What runs was not applied by Flux (made by hand, or by another tool): git's copy is not
    // what this cluster follows, and upkeep sets the version where it runs.
    if flux_applied == 0 {
        return in_cluster(c, o);
    }
    Route::Git {
        places: m.carriers.iter().map(Place::of).collect(),
    }
}

/// What the cluster has of the object a carrier describes.
enum Live {
    /// There, applied by Flux's kustomize-controller.
    FluxApplied,
    /// There, made otherwise.
    NotFlux,
    Missing,
}

fn live(carrier: &Carrier, c: &Component, o: &Observed) -> Live {
    let judge = |found: Option<bool>| match found {
        Some(true) => Live::FluxApplied,
        Some(false) => Live::NotFlux,
        None => Live::Missing,
    };
    match carrier.field {
        Field::PlanVersion => judge(
            o.plans
                .iter()
                .find(|p| p.namespace == carrier.namespace && p.name == carrier.name)
                .map(|p| p.flux.is_some()),
        ),
        Field::FluxDistribution | Field::FluxInstanceValues => {
            judge(o.flux_instances.first().map(|f| {
                f.flux.is_some()
                    || o.helm_releases.iter().any(|h| {
                        h.name == carrier.name
                            && h.namespace == carrier.namespace
                            && h.flux.is_some()
                    })
            }))
        }
        Field::ChartVersion | Field::OciTag | Field::ImageTag => {
            let hr = if carrier.kind == "HelmRelease" {
                o.helm_releases
                    .iter()
                    .find(|h| h.namespace == carrier.namespace && h.name == carrier.name)
            } else {
                o.release_of(&c.runs)
            };
            judge(hr.map(|h| h.flux.is_some()))
        }
    }
}

/// Nothing in git carries the version: upkeep sets it in the cluster, unless Flux owns the
/// field there (it would take it back) or it is not upkeep's to set.
fn in_cluster(c: &Component, o: &Observed) -> Route {
    let h = match &c.runs {
        Runs::K3s => return Route::Cluster,
        Runs::Unknown => {
            return Route::Refused {
                why: format!(
                    "upkeep does not know where {} runs: say `chart: <name>` (its version is that Helm chart's) or `image: <repository>` (its version is that image's tag in a HelmRelease's values) under {} in versions.yaml",
                    c.name, c.name
                ),
            };
        }
        Runs::Flux => o.flux_instances.first(),
        Runs::Chart { .. } | Runs::Image { .. } => o.release_of(&c.runs),
    };
    let Some(h) = h else {
        return Route::Cluster;
    };
    if let Some(f) = h
        .flux
        .as_ref()
        .filter(|f| f.owns_version && !f.if_not_present)
    {
        return Route::Refused {
            why: format!(
                "{} {}/{}: Flux applies its version from git (Kustomization {}) on every reconcile, but nothing in the repository upkeep reads carries it, so a version upkeep set in the cluster would be taken back; point upkeep at the repository Flux applies (--repo-url, --subdir), or annotate the object `kustomize.toolkit.fluxcd.io/ssa: IfNotPresent` in git (docs/relations.md)",
                h.kind, h.namespace, h.name, f.kustomization
            ),
        };
    }
    if let Some(r) = &h.chart_ref {
        return Route::Refused {
            why: format!(
                "HelmRelease {}/{} takes its chart from {r} (spec.chartRef), which is not in the repository upkeep reads: its version is that source's; keep the OCIRepository in the repository Flux applies",
                h.namespace, h.name
            ),
        };
    }
    if matches!(c.runs, Runs::Image { .. }) {
        return Route::Refused {
            why: format!(
                "{}'s image tag is in HelmRelease {}/{}'s values, which upkeep changes only through git, and the repository upkeep reads does not carry it",
                c.name, h.namespace, h.name
            ),
        };
    }
    Route::Cluster
}
