//! The Flux wiring upkeep can see in the config repository: for each component whose
//! HelmRelease (or, for Flux, FluxInstance) is defined in the repository, whether upkeep can
//! apply its version through git (a plain version it changes in place), and whether git and
//! versions.yaml agree. `upkeep validate` reports it; nothing here fails a rollout (the preflight
//! judges what Flux actually applies).

use std::path::Path;

use serde_json::Value;

use super::ConfigRepo;
use crate::diag::{Diagnostic, Pos};
use crate::gitrepo::{VersionField, set_manifest_version};

/// How many files and bytes are read at most: a config repository is small; anything bigger is
/// not read further (and said).
const MAX_FILES: usize = 2000;
const MAX_FILE_BYTES: u64 = 1024 * 1024;
const MAX_DEPTH: usize = 12;

/// Diagnostics about how `repo`'s components are wired to Flux in the files under `root`.
pub fn check(root: &Path, repo: &ConfigRepo) -> Vec<Diagnostic> {
    let mut files = Vec::new();
    walk(root, root, 0, &mut files);
    let mut out = Vec::new();
    if files.len() >= MAX_FILES {
        out.push(Diagnostic::warning(
            ".",
            Pos::START,
            format!("more than {MAX_FILES} YAML files: the Flux wiring was checked in the first {MAX_FILES} only"),
        ));
    }
    for (rel, text) in files {
        for doc in text.split("\n---") {
            let Ok(v) = serde_saphyr::from_str::<Value>(doc) else {
                continue;
            };
            let kind = v["kind"].as_str().unwrap_or("");
            let (name, ns) = (
                v["metadata"]["name"].as_str().unwrap_or(""),
                v["metadata"]["namespace"].as_str().unwrap_or(""),
            );
            let (component, field) = match kind {
                "FluxInstance" => ("flux".to_string(), VersionField::FluxDistribution),
                "HelmRelease" => (
                    v["spec"]["chart"]["spec"]["chart"]
                        .as_str()
                        .unwrap_or(name)
                        .to_string(),
                    VersionField::HelmChart,
                ),
                _ => continue,
            };
            let Some(c) = repo.components.iter().find(|c| c.name == component) else {
                continue;
            };
            let what = format!("{kind} {ns}/{name}");
            if v["metadata"]["annotations"]["kustomize.toolkit.fluxcd.io/ssa"]
                .as_str()
                .is_some_and(|x| x.eq_ignore_ascii_case("IfNotPresent"))
            {
                continue;
            }
            if v["spec"]["chartRef"].is_object() {
                out.push(
                    Diagnostic::warning(&rel, Pos::START, format!("{what} takes its chart from spec.chartRef, so upkeep cannot upgrade {component}: its version is the source's"))
                        .hint("upgrade it by changing the OCIRepository or HelmChart in git, and remove the component from versions.yaml"),
                );
                continue;
            }
            let version = c.version.to_string();
            match set_manifest_version(&rel, doc, (kind, ns, name), field, &version) {
                Ok(None) => {}
                Ok(Some(_)) => out.push(
                    Diagnostic::warning(&rel, Pos::START, format!("{what} asks for another {component} version than versions.yaml ({version})"))
                        .hint("git should say what runs: upkeep changes it here itself when it applies a merged update in a window; if you changed it by hand, change versions.yaml too"),
                ),
                Err(e) => out.push(
                    Diagnostic::warning(&rel, Pos::START, format!("{what}: upkeep cannot apply {component} through Flux: {e}"))
                        .hint("write the version as a plain value, or annotate the object `kustomize.toolkit.fluxcd.io/ssa: IfNotPresent` (docs/relations.md)"),
                ),
            }
        }
    }
    out
}

fn walk(root: &Path, dir: &Path, depth: usize, out: &mut Vec<(String, String)>) {
    if depth > MAX_DEPTH || out.len() >= MAX_FILES {
        return;
    }
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let mut entries: Vec<_> = entries.flatten().collect();
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        let path = e.path();
        let Ok(meta) = std::fs::symlink_metadata(&path) else {
            continue;
        };
        let name = e.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') || meta.file_type().is_symlink() {
            continue;
        }
        if meta.is_dir() {
            if depth == 0 && name == "policies" {
                continue;
            }
            walk(root, &path, depth + 1, out);
        } else if (name.ends_with(".yaml") || name.ends_with(".yml"))
            && !(depth == 0 && name == "versions.yaml")
            && meta.len() <= MAX_FILE_BYTES
            && let Ok(text) = std::fs::read_to_string(&path)
        {
            let rel = path
                .strip_prefix(root)
                .map_or(name.clone(), |p| p.display().to_string());
            out.push((rel, text));
            if out.len() >= MAX_FILES {
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_example_repository_is_wired_and_a_variable_is_not() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/cluster-repo");
        let repo = crate::model::load_repo(&root, chrono::Utc::now())
            .ok()
            .and_then(|l| l.repo);
        let Some(repo) = repo else {
            panic!("the example repository loads");
        };
        assert_eq!(check(&root, &repo), Vec::new());
        let dir = tempfile::tempdir().unwrap_or_else(|_| panic!());
        for (f, t) in [
            ("versions.yaml", std::fs::read_to_string(root.join("versions.yaml")).unwrap_or_default()),
            (
                "infra/longhorn.yaml",
                "apiVersion: helm.toolkit.fluxcd.io/v2\nkind: HelmRelease\nmetadata: {name: longhorn, namespace: longhorn-system}\nspec:\n  chart:\n    spec:\n      chart: longhorn\n      version: ${longhorn_version}\n".to_string(),
            ),
            (
                "infra/flux.yaml",
                "apiVersion: fluxcd.controlplane.io/v1\nkind: FluxInstance\nmetadata: {name: flux, namespace: flux-system}\nspec:\n  distribution:\n    version: 2.5.0\n".to_string(),
            ),
        ] {
            let p = dir.path().join(f);
            let _ = std::fs::create_dir_all(p.parent().unwrap_or(dir.path()));
            let _ = std::fs::write(p, t);
        }
        let said: Vec<String> = check(dir.path(), &repo)
            .iter()
            .map(|d| d.to_string())
            .collect();
        assert_eq!(said.len(), 2, "{said:?}");
        assert!(
            said.iter()
                .any(|d| d.contains("infra/longhorn.yaml") && d.contains("not a plain version")),
            "{said:?}"
        );
        assert!(
            said.iter()
                .any(|d| d.contains("infra/flux.yaml") && d.contains("another flux version")),
            "{said:?}"
        );
    }
}
