//! upkeep: keeps a k3s cluster's platform up to date, safely, with git as the source of truth.
//!
//! The pipeline, and the module that owns each step (see docs/architecture.md):
//! desired state ([`model`], with built-in [`knowledge`]) -> version rules ([`versions`]) ->
//! upstream releases ([`sources`]) -> selection of the next step ([`select`], driven for every
//! component by [`check`]) -> what people read ([`report`]) -> schedule ([`windows`]); problems in
//! the config are reported as [`diag::Diagnostic`]s. [`sim`] simulates the outside world over
//! real HTTP for tests, benchmarks and the demo.

pub mod apply;
pub mod check;
pub mod cluster;
pub mod diag;
pub mod forge;
pub mod gitrepo;
pub mod history;
pub mod knowledge;
pub mod layout;
pub mod leader;
pub mod maintenance;
pub mod model;
pub mod monthly;
pub mod notify;
pub mod operate;
pub mod plan;
pub mod propose;
pub mod reconcile;
pub mod renovate;
pub mod report;
pub mod rollout;
pub mod route;
pub mod runconfig;
pub mod select;
pub mod server;
pub mod sources;
pub mod telemetry;
pub mod validate;
pub mod versions;
pub mod watch;
pub mod webhook;
pub mod windows;

/// Create `dir` (and missing parents) readable by its owner only (0700): state and cache
/// directories hold repository contents and answers that are nobody else's business. An
/// existing directory is left as it is (it may be one the user chose and shares).
pub fn create_private_dir(dir: &std::path::Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    if dir.is_dir() {
        return Ok(());
    }
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
}

/// Every JSON Schema upkeep publishes (docs/schema/), by file name.
pub fn schemas() -> Vec<(&'static str, String)> {
    let mut all: Vec<(&'static str, String)> = model::files::schemas().into();
    all.push(("check-report.schema.json", report::schema()));
    all
}
