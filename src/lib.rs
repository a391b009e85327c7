//! upkeep: keeps a k3s cluster's platform up to date, safely, with git as the source of truth.
//!
//! The pipeline, and the module that owns each step (see docs/architecture.md):
//! desired state ([`model`]) -> rules ([`versions`], [`knowledge`]) -> schedule ([`windows`]).

pub mod diag;
pub mod versions;
pub mod windows;
