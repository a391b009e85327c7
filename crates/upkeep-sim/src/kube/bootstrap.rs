//! What bootstrapping Flux from a config repository creates, so that the emulator can start a
//! cluster from a user's repository: the GitRepository and Kustomization flux-operator makes
//! from a FluxInstance's `spec.sync` (or the flux-instance chart's `instance.sync`), those
//! `flux bootstrap` writes (`gotk-sync.yaml`: `flux-system` at the cluster's path), or, in
//! repositories bootstrapped by a script (onedr0p/cluster-template applies
//! `kubernetes/flux/config` by hand), the Flux Kustomizations no other one builds.
//!
//! Upstream: controlplaneio-fluxcd/flux-operator (the FluxInstance `sync` creates a
//! GitRepository and a Kustomization in the instance's namespace), fluxcd/flux2
//! `pkg/manifestgen/sync` (`gotk-sync.yaml`). This is the emulator's own reading, separate from
//! upkeep's (`upkeep::layout`), so that each checks the other.

use std::collections::BTreeMap;

use serde_json::Value;

use super::RepoBootstrap;

/// What a bootstrap created, and the Flux version it installed (when the repository says).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Found {
    pub bootstrap: RepoBootstrap,
    pub flux_version: Option<String>,
}

fn s<'a>(v: &'a Value, path: &[&str]) -> &'a str {
    let mut cur = v;
    for p in path {
        match cur.get(*p) {
            Some(n) => cur = n,
            None => return "",
        }
    }
    cur.as_str().unwrap_or("")
}

fn clean(p: &str) -> String {
    p.split('/')
        .filter(|x| !x.is_empty() && *x != ".")
        .collect::<Vec<_>>()
        .join("/")
}

/// A cluster bootstrapped from the checkout at `root` for the cluster directory `subdir` (what
/// `upkeep rehearse` and `upkeep sim serve --config-repo` start): Flux at the version the
/// repository installs (else `flux`, else v2.6.4), nodes at `k3s`, Longhorn and everything else
/// only where the repository's Flux objects put them. The GitRepositories to serve the
/// repository under are in the spec's `bootstrap.sources`. Err when the repository has no Flux
/// entry point at all.
pub fn cluster_from_repo(
    root: &std::path::Path,
    subdir: &str,
    k3s: Option<String>,
    flux: Option<String>,
) -> Result<super::ClusterSpec, String> {
    let files: BTreeMap<String, String> = upkeep::layout::Files::from_dir(root)
        .texts()
        .map(|(p, t)| (p.to_string(), t.to_string()))
        .collect();
    let found = read(&files, subdir);
    if found.bootstrap.kustomizations.is_empty() {
        return Err(format!(
            "no Flux entry point in {} (a FluxInstance with sync.path, the flux-instance chart, a flux-system Kustomization, or Flux Kustomizations)",
            root.join(subdir).display()
        ));
    }
    let flux = found
        .flux_version
        .filter(|v| {
            v.chars()
                .next()
                .is_some_and(|c| c.is_ascii_digit() || c == 'v')
        })
        .or(flux)
        .unwrap_or_else(|| "2.6.4".into());
    Ok(super::ClusterSpec {
        k3s_version: k3s.unwrap_or_else(|| super::ClusterSpec::default().k3s_version),
        flux_version: Some(flux),
        longhorn_version: None,
        bootstrap: Some(found.bootstrap),
        ..super::ClusterSpec::default()
    })
}

/// Read `files` (path -> text) for the cluster whose directory is `subdir`.
pub fn read(files: &BTreeMap<String, String>, subdir: &str) -> Found {
    let subdir = clean(subdir);
    let in_scope = |f: &str| subdir.is_empty() || f.starts_with(&format!("{subdir}/"));
    let mut docs: Vec<(String, Value)> = Vec::new();
    for (f, text) in files {
        let lower = f.to_ascii_lowercase();
        if !(lower.ends_with(".yaml") || lower.ends_with(".yml")) {
            continue;
        }
        if let Ok(all) = serde_saphyr::from_multiple::<Value>(text) {
            docs.extend(all.into_iter().map(|d| (f.clone(), d)));
        }
    }
    let mut found = Found::default();
    let mut sources: Vec<(String, String)> = Vec::new();
    let mut add_source = |ns: &str, name: &str| {
        let key = (ns.to_string(), name.to_string());
        if !sources.contains(&key) {
            sources.push(key);
        }
    };
    let mut kustomizations: Vec<(String, String, String, String)> = Vec::new();
    for (f, d) in docs.iter().filter(|(f, _)| in_scope(f)) {
        let kind = s(d, &["kind"]);
        if kind == "FluxInstance" {
            let ns = match s(d, &["metadata", "namespace"]) {
                "" => "flux-system",
                n => n,
            };
            let name = match s(d, &["spec", "sync", "name"]) {
                "" => ns,
                n => n,
            };
            let path = s(d, &["spec", "sync", "path"]);
            found.flux_version = Some(s(d, &["spec", "distribution", "version"]).to_string())
                .filter(|v| !v.is_empty());
            if !path.is_empty() {
                found.bootstrap.url = s(d, &["spec", "sync", "url"]).to_string();
                add_source(ns, name);
                kustomizations.push((ns.into(), name.into(), clean(path), name.into()));
            }
        } else if kind == "HelmRelease"
            && (s(d, &["spec", "chart", "spec", "chart"]) == "flux-instance"
                || s(d, &["spec", "chartRef", "name"]).contains("flux-instance"))
        {
            let ns = match s(d, &["metadata", "namespace"]) {
                "" => "flux-system",
                n => n,
            };
            // Inline values, else a values file beside it (configMapGenerator).
            let dir = f.rsplit_once('/').map_or("", |(d, _)| d);
            let values = d
                .pointer("/spec/values/instance")
                .filter(|i| !s(i, &["sync", "path"]).is_empty())
                .cloned()
                .or_else(|| {
                    docs.iter()
                        .filter(|(vf, _)| vf.starts_with(&format!("{dir}/")))
                        .find_map(|(_, v)| {
                            v.get("instance")
                                .filter(|i| !s(i, &["sync", "path"]).is_empty())
                                .cloned()
                        })
                });
            if let Some(i) = values {
                let name = match s(&i, &["sync", "name"]) {
                    "" => ns,
                    n => n,
                };
                found.flux_version =
                    Some(s(&i, &["distribution", "version"]).to_string()).filter(|v| !v.is_empty());
                found.bootstrap.url = s(&i, &["sync", "url"]).to_string();
                add_source(ns, name);
                kustomizations.push((
                    ns.into(),
                    name.into(),
                    clean(s(&i, &["sync", "path"])),
                    name.into(),
                ));
            }
        }
    }
    // Flux Kustomizations written here: flux-system (a `flux bootstrap`), and any that no other
    // Kustomization's path contains (applied by a bootstrap script).
    let written: Vec<(&String, &Value)> = docs
        .iter()
        .filter(|(f, d)| {
            in_scope(f)
                && s(d, &["kind"]) == "Kustomization"
                && s(d, &["apiVersion"]).starts_with("kustomize.toolkit.fluxcd.io/")
        })
        .map(|(f, d)| (f, d))
        .collect();
    let contains = |path: &str, file: &str| {
        let p = clean(path);
        p.is_empty() || file.starts_with(&format!("{p}/"))
    };
    if kustomizations.is_empty() {
        for (f, d) in &written {
            let others = written
                .iter()
                .any(|(of, od)| of != f && contains(s(od, &["spec", "path"]), f));
            if s(d, &["metadata", "name"]) == "flux-system" || !others {
                let ns = match s(d, &["metadata", "namespace"]) {
                    "" => "flux-system",
                    n => n,
                };
                let source = s(d, &["spec", "sourceRef", "name"]);
                add_source(ns, source);
                kustomizations.push((
                    ns.into(),
                    s(d, &["metadata", "name"]).into(),
                    clean(s(d, &["spec", "path"])),
                    source.into(),
                ));
            }
        }
    }
    // Every GitRepository the repository defines for itself is served from it too.
    for (_, d) in &docs {
        if s(d, &["kind"]) == "GitRepository" {
            let ns = match s(d, &["metadata", "namespace"]) {
                "" => "flux-system",
                n => n,
            };
            if found.bootstrap.url.is_empty() {
                found.bootstrap.url = s(d, &["spec", "url"]).to_string();
            }
            add_source(ns, s(d, &["metadata", "name"]));
        }
    }
    found.bootstrap.sources = sources;
    found.bootstrap.kustomizations = kustomizations;
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    fn files(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn a_flux_instance_a_chart_a_gotk_sync_and_a_bootstrap_script() {
        let fi = files(&[(
            "clusters/home/fi.yaml",
            "apiVersion: fluxcd.controlplane.io/v1\nkind: FluxInstance\nmetadata: {name: flux, namespace: flux-system}\nspec:\n  distribution: {version: 2.6.4}\n  sync: {url: https://x/r, path: clusters/home}\n",
        )]);
        let f = read(&fi, "");
        assert_eq!(f.flux_version.as_deref(), Some("2.6.4"));
        assert_eq!(
            f.bootstrap.kustomizations,
            vec![(
                "flux-system".into(),
                "flux-system".into(),
                "clusters/home".into(),
                "flux-system".into()
            )]
        );
        let chart = files(&[
            (
                "k/fi/hr.yaml",
                "apiVersion: helm.toolkit.fluxcd.io/v2\nkind: HelmRelease\nmetadata: {name: flux-instance, namespace: flux-system}\nspec:\n  chartRef: {kind: OCIRepository, name: flux-instance}\n",
            ),
            (
                "k/fi/helm/values.yaml",
                "instance:\n  distribution: {version: 2.7.0}\n  sync: {path: k/flux}\n",
            ),
        ]);
        let f = read(&chart, "");
        assert_eq!(f.flux_version.as_deref(), Some("2.7.0"));
        assert_eq!(f.bootstrap.kustomizations[0].2, "k/flux");
        let script = files(&[
            (
                "k/flux/config/cluster.yaml",
                "apiVersion: source.toolkit.fluxcd.io/v1\nkind: GitRepository\nmetadata: {name: home, namespace: flux-system}\nspec: {url: https://x/h}\n---\napiVersion: kustomize.toolkit.fluxcd.io/v1\nkind: Kustomization\nmetadata: {name: cluster, namespace: flux-system}\nspec:\n  path: ./k/flux\n  sourceRef: {kind: GitRepository, name: home}\n",
            ),
            (
                "k/flux/apps.yaml",
                "apiVersion: kustomize.toolkit.fluxcd.io/v1\nkind: Kustomization\nmetadata: {name: apps, namespace: flux-system}\nspec:\n  path: ./k/apps\n  sourceRef: {kind: GitRepository, name: home}\n",
            ),
        ]);
        let f = read(&script, "");
        assert_eq!(
            f.bootstrap.kustomizations,
            vec![(
                "flux-system".into(),
                "cluster".into(),
                "k/flux".into(),
                "home".into()
            )]
        );
        assert_eq!(
            f.bootstrap.sources,
            vec![("flux-system".into(), "home".into())]
        );
        assert_eq!(f.bootstrap.url, "https://x/h");
    }
}
