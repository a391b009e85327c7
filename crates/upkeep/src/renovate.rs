//! The Renovate preset that leaves to upkeep exactly the versions it owns: k3s, Flux, Longhorn
//! and each component versions.yaml tracks, wherever a repository carries them (Plans and
//! their variables, the FluxInstance or the flux-instance chart's values, HelmReleases and
//! OCIRepositories, image tags). Renovate keeps everything else. `renovate/upkeep.json` is this
//! preset for the built-in components; `upkeep renovate-preset --repo DIR` prints it for a
//! repository's own versions.yaml.

use serde_json::{Value, json};

use crate::model::{ConfigRepo, Runs};

/// The package names Renovate reports for a component's version (by manager: the `flux` and
/// `helm-values` managers, the common `# renovate: datasource=... depName=...` regex manager).
pub fn package_names(name: &str, runs: &Runs) -> Vec<String> {
    let chart = |c: &str| {
        vec![
            c.to_string(),
            // An OCI chart (docker datasource): any registry path ending in the chart's name.
            format!("/(^|/){}$/", regex_escape(c)),
        ]
    };
    match runs {
        Runs::K3s => vec![
            "k3s-io/k3s".into(),
            "rancher/k3s-upgrade".into(),
            "docker.io/rancher/k3s-upgrade".into(),
        ],
        Runs::Flux => vec![
            "controlplaneio-fluxcd/distribution".into(),
            "fluxcd/flux2".into(),
        ],
        Runs::Chart { chart: c, .. } => {
            let mut v = chart(c);
            if name == "longhorn" {
                v.push("longhorn/longhorn".into());
            }
            v
        }
        Runs::Image { image, .. } => {
            let bare = crate::layout::carriers::image_key(image);
            let mut v = vec![image.clone()];
            for alt in [bare.clone(), format!("docker.io/{bare}")] {
                if !v.contains(&alt) {
                    v.push(alt);
                }
            }
            v
        }
        Runs::Unknown => vec![name.to_string()],
    }
}

fn regex_escape(s: &str) -> String {
    s.chars()
        .flat_map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                vec![c]
            } else {
                vec!['\\', c]
            }
        })
        .collect()
}

/// The preset for `components` (name, how it runs).
pub fn preset(components: &[(String, Runs)]) -> Value {
    let rules: Vec<Value> = components
        .iter()
        .map(|(name, runs)| {
            json!({
                "description": format!("{name}: upkeep proposes it, applies it in a window, validates it and rolls it back (versions.yaml)"),
                "matchPackageNames": package_names(name, runs),
                "enabled": false,
            })
        })
        .collect();
    json!({
        "$schema": "https://docs.renovatebot.com/renovate-schema.json",
        "description": "Leave to upkeep the versions it owns (see upkeep's docs/relations.md); Renovate keeps everything else.",
        "packageRules": rules,
    })
}

/// The preset for the built-in components (the shipped `renovate/upkeep.json`).
pub fn builtin() -> Value {
    preset(&[
        ("k3s".into(), Runs::K3s),
        ("flux".into(), Runs::Flux),
        (
            "longhorn".into(),
            Runs::Chart {
                chart: "longhorn".into(),
                release: None,
            },
        ),
    ])
}

/// The preset for a repository's versions.yaml.
pub fn for_repo(repo: &ConfigRepo) -> Value {
    preset(
        &repo
            .components
            .iter()
            .map(|c| (c.name.clone(), c.runs.clone()))
            .collect::<Vec<_>>(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_preset_is_the_builtin_one() {
        let shipped: Value =
            serde_json::from_str(include_str!("../../../renovate/upkeep.json")).unwrap_or_default();
        assert_eq!(
            shipped,
            builtin(),
            "regenerate: upkeep renovate-preset --builtin > renovate/upkeep.json"
        );
    }

    #[test]
    fn an_image_component_names_its_repository() {
        let names = package_names(
            "system-upgrade-controller",
            &Runs::Image {
                image: "docker.io/rancher/system-upgrade-controller".into(),
                release: None,
            },
        );
        assert!(names.contains(&"rancher/system-upgrade-controller".to_string()));
        assert_eq!(
            package_names(
                "podinfo",
                &Runs::Chart {
                    chart: "podinfo".into(),
                    release: None
                }
            )[1],
            "/(^|/)podinfo$/"
        );
    }
}
