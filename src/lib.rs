//! upkeep: keeps a k3s cluster's platform up to date, safely, with git as the source of truth.
//!
//! The pipeline, and the module that owns each step (see docs/architecture.md):
//! desired state ([`model`], with built-in [`knowledge`]) -> version rules ([`versions`]) ->
//! selection of the next step ([`select`]) -> schedule ([`windows`]); problems are reported as
//! [`diag::Diagnostic`]s.

pub mod cli;
pub mod diag;
pub mod knowledge;
pub mod model;
pub mod select;
pub mod versions;
pub mod windows;
