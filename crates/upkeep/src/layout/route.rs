//! How a component's version reaches the cluster, as plain data (decided in `crate::route`).

use serde::Serialize;

use super::Carrier;

/// One place in git that carries the version, for reports.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Place {
    /// `Kind namespace/name`.
    pub object: String,
    pub field: String,
    /// `file:line:column` of the scalar upkeep changes (the variable's definition for a
    /// substituted value).
    pub at: String,
    /// The postBuild variable changed, and where it comes from.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub variable: Option<String>,
    /// The Flux Kustomization that applies it (`namespace/name`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kustomization: Option<String>,
    /// What git asks for now, as a version (an OCI tag's `_` read as `+`).
    pub value: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase", tag = "by")]
pub enum Route {
    /// Written in git, where these carry it; Flux applies it.
    Git { places: Vec<Place> },
    /// Set in the cluster by upkeep (its own Plans for k3s, a server-side apply of the field).
    Cluster,
    /// upkeep cannot apply it, and why.
    Refused { why: String },
}

impl Route {
    pub fn places(&self) -> &[Place] {
        match self {
            Route::Git { places } => places,
            _ => &[],
        }
    }
}

impl Place {
    pub fn of(c: &Carrier) -> Place {
        let (at, variable) = match &c.edit {
            Ok(e) => (
                format!(
                    "{}:{}:{}",
                    e.loc.file, e.loc.node.pos.line, e.loc.node.pos.column
                ),
                e.variable
                    .as_ref()
                    .map(|(name, from)| format!("{name} ({from})")),
            ),
            Err(_) => (c.at(), None),
        };
        Place {
            object: c.object.clone(),
            field: c.field.path().to_string(),
            at,
            variable,
            kustomization: c.applied_by.as_ref().map(ToString::to_string),
            value: c.version(),
        }
    }
}
