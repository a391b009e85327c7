//! What `upkeep validate` says about the repository's layout, before any merge: for each
//! component, where its version is carried (and whether upkeep can change it there), a
//! mapping that is ambiguous or names the wrong chart or image (an error, with the file and
//! line), a version in git that versions.yaml does not ask for (moved outside upkeep, by
//! Renovate or a human), and upkeep's own files inside a path Flux applies.

use super::{Reading, same_version};
use crate::diag::Diagnostic;
use crate::model::ConfigRepo;

/// Diagnostics about `repo`'s components in the repository read as `reading`. Paths are the
/// repository's (relative to its root).
pub fn check(reading: &Reading, repo: &ConfigRepo) -> Vec<Diagnostic> {
    let mut out = Vec::new();
    for n in &reading.layout.notes {
        let keep = !(n.message.contains("remote resource")
            || n.message.contains("is not taken into account")
            || n.message.contains("remote component"));
        if keep {
            out.push(n.clone());
        }
    }
    for o in &reading.layout.objects {
        if o.api_version.starts_with("upkeep.dev/") {
            out.push(
                Diagnostic::warning(
                    &o.file,
                    o.pos(),
                    format!(
                        "Flux applies this file ({} {}) as part of Kustomization {}: the cluster has no such kind, so that Kustomization fails",
                        o.kind,
                        o.name,
                        o.applied_by.as_ref().map(ToString::to_string).unwrap_or_default()
                    ),
                )
                .hint("add a kustomization.yaml listing what Flux should apply in that directory, so that versions.yaml and policies/ stay out of it"),
            );
        }
    }
    for c in &repo.components {
        let m = reading.carriers(&c.name, &c.runs);
        out.extend(m.problems.iter().cloned());
        let want = c.version.to_string();
        for carrier in &m.carriers {
            if let Err(why) = &carrier.edit {
                out.push(
                    Diagnostic::error(
                        &carrier.file,
                        carrier.pos,
                        format!(
                            "{} carries {}'s version ({}), but upkeep cannot change it there: {why}",
                            carrier.object,
                            c.name,
                            carrier.field.path()
                        ),
                    )
                    .hint("write a plain version (or one variable defined in git) there, or remove the component from versions.yaml"),
                );
            }
            if carrier.edit.is_err() {
                // Said above: not a place upkeep can change.
            } else if crate::versions::parse(&carrier.version(), c.scheme).is_err() {
                out.push(
                    Diagnostic::error(
                        &carrier.file,
                        carrier.pos,
                        format!(
                            "{} asks for {:?}, which is not one version of {} (a range follows every release by itself, outside any window)",
                            carrier.object,
                            crate::diag::Printable(&carrier.value).to_string(),
                            c.name
                        ),
                    )
                    .hint("write the exact version that runs there (versions.yaml's), and upkeep changes it in windows"),
                );
            } else if !same_version(&carrier.version(), &want) {
                out.push(
                    Diagnostic::warning(
                        &carrier.file,
                        carrier.pos,
                        format!(
                            "{} asks for {} {} in git, but versions.yaml asks for {want}: the manifest moved outside upkeep (Renovate, or an edit by hand), or a merged update is not applied yet",
                            carrier.object, c.name, carrier.value
                        ),
                    )
                    .hint("let upkeep own this field (extend the Renovate preset renovate/upkeep.json, see docs/relations.md), and set versions.yaml to what runs"),
                );
            }
        }
    }
    out
}

/// `file` (relative to the repository's root) as seen from the cluster directory `subdir`.
pub fn relative_to(subdir: &str, file: &str) -> String {
    let base: Vec<&str> = subdir.split('/').filter(|s| !s.is_empty()).collect();
    let target: Vec<&str> = file.split('/').filter(|s| !s.is_empty()).collect();
    let common = base.iter().zip(&target).take_while(|(a, b)| a == b).count();
    let mut parts: Vec<&str> = vec![".."; base.len() - common];
    parts.extend(&target[common..]);
    parts.join("/")
}

/// Diagnostics with their files made relative to the cluster directory (where `validate`'s
/// other diagnostics point).
pub fn relative(diags: Vec<Diagnostic>, subdir: &str) -> Vec<Diagnostic> {
    diags
        .into_iter()
        .map(|mut d| {
            if d.file != "." && d.file != "versions.yaml" {
                d.file = relative_to(subdir, &d.file);
            }
            d
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_from_a_cluster_directory() {
        assert_eq!(
            relative_to("clusters/staging", "apps/staging/x.yaml"),
            "../../apps/staging/x.yaml"
        );
        assert_eq!(
            relative_to("clusters/staging", "clusters/staging/apps.yaml"),
            "apps.yaml"
        );
        assert_eq!(relative_to("", "a/b.yaml"), "a/b.yaml");
    }
}
