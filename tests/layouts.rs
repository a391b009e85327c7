//! The repository layouts users have (tests/fixtures/layouts/, each modelled on a public one
//! named in its README), read the way Flux builds them: where each component's version is
//! written, and what upkeep refuses to guess.

use std::path::PathBuf;

use upkeep::layout::{Field, Reading};
use upkeep::model::Runs;

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/layouts")
        .join(name)
}

fn chart(c: &str) -> Runs {
    Runs::Chart {
        chart: c.into(),
        release: None,
    }
}

/// (object, field, value, file of the edit, variable) of each carrier.
fn carriers(
    r: &Reading,
    component: &str,
    runs: &Runs,
) -> Vec<(String, Field, String, String, Option<String>)> {
    r.carriers(component, runs)
        .carriers
        .into_iter()
        .map(|c| {
            let (file, var) = match &c.edit {
                Ok(e) => (e.loc.file.clone(), e.variable.as_ref().map(|v| v.0.clone())),
                Err(why) => (format!("not editable: {why}"), None),
            };
            (c.object, c.field, c.value, file, var)
        })
        .collect()
}

#[test]
fn cluster_template_k3s_plans_by_variable_and_the_controller_by_its_image_never_by_name() {
    let r = Reading::of_dir(&fixture("cluster-template-k3s"), "");
    assert!(
        r.layout
            .notes
            .iter()
            .all(|n| n.message.contains("remote resource")),
        "{:#?}",
        r.layout.notes
    );
    let k3s = carriers(&r, "k3s", &Runs::K3s);
    let ks = "kubernetes/apps/system-upgrade/k3s/ks.yaml".to_string();
    assert_eq!(
        k3s,
        vec![
            (
                "Plan system-upgrade/controllers".into(),
                Field::PlanVersion,
                "v1.33.4+k3s1".into(),
                ks.clone(),
                Some("KUBE_VERSION".into())
            ),
            (
                "Plan system-upgrade/workers".into(),
                Field::PlanVersion,
                "v1.33.4+k3s1".into(),
                ks,
                Some("KUBE_VERSION".into())
            ),
        ]
    );
    // The app-template release named like the component: never taken for it by name (the
    // unasked downgrade of issue 24), whether the component says nothing or names a chart.
    for runs in [Runs::Unknown, chart("system-upgrade-controller")] {
        let m = r.carriers("system-upgrade-controller", &runs);
        assert!(m.carriers.is_empty(), "{runs:?}: {:?}", m.carriers);
        let said: Vec<String> = m.problems.iter().map(ToString::to_string).collect();
        assert!(
            said.iter().any(|p| p.contains(
                "HelmRelease system-upgrade/system-upgrade-controller is named like the component system-upgrade-controller but deploys the chart app-template"
            ) && p.contains("kubernetes/apps/system-upgrade/system-upgrade-controller/app/helmrelease.yaml:2:1")
                && p.contains("image: docker.io/rancher/system-upgrade-controller")),
            "{said:#?}"
        );
    }
    // Said explicitly, the image's tag in the values is the version.
    let suc = carriers(
        &r,
        "system-upgrade-controller",
        &Runs::Image {
            image: "docker.io/rancher/system-upgrade-controller".into(),
            release: None,
        },
    );
    assert_eq!(
        suc,
        vec![(
            "HelmRelease system-upgrade/system-upgrade-controller".into(),
            Field::ImageTag,
            "v0.13.4".into(),
            "kubernetes/apps/system-upgrade/system-upgrade-controller/app/helmrelease.yaml".into(),
            None
        )]
    );
}

#[test]
fn home_ops_oci_flux_instance_chart_oci_charts_target_namespace_and_a_configmap_variable() {
    let r = Reading::of_dir(&fixture("home-ops-oci"), "");
    assert!(r.layout.notes.is_empty(), "{:#?}", r.layout.notes);
    assert_eq!(
        carriers(&r, "flux", &Runs::Flux),
        vec![(
            "HelmRelease flux-system/flux-instance".into(),
            Field::FluxInstanceValues,
            "2.6.4".into(),
            "kubernetes/apps/flux-system/flux-instance/app/helmrelease.yaml".into(),
            None
        )]
    );
    assert_eq!(
        carriers(&r, "longhorn", &chart("longhorn")),
        vec![(
            "OCIRepository storage/longhorn (chart of HelmRelease storage/longhorn)".into(),
            Field::OciTag,
            "1.9.1".into(),
            "kubernetes/apps/storage/longhorn/app/ocirepository.yaml".into(),
            None
        )]
    );
    let k3s = carriers(&r, "k3s", &Runs::K3s);
    assert_eq!(k3s.len(), 2, "{k3s:#?}");
    for c in &k3s {
        assert_eq!(c.2, "v1.33.4+k3s1");
        assert_eq!(c.3, "kubernetes/apps/system-upgrade/k3s-version.yaml");
        assert_eq!(c.4.as_deref(), Some("KUBE_VERSION"));
    }
}

#[test]
fn damacus_k3s_values_behind_a_generator_longhorn_in_storage_and_pinned_plans() {
    let r = Reading::of_dir(&fixture("damacus-k3s"), "");
    assert!(
        r.layout
            .notes
            .iter()
            .all(|n| n.message.contains("configurations") || n.message.contains("not taken")),
        "{:#?}",
        r.layout.notes
    );
    assert_eq!(
        carriers(&r, "flux", &Runs::Flux),
        vec![(
            "HelmRelease flux-system/flux-instance".into(),
            Field::FluxInstanceValues,
            "2.6.4".into(),
            "kubernetes/apps/flux-system/flux-instance/app/helm/values.yaml".into(),
            None
        )]
    );
    assert_eq!(
        carriers(&r, "longhorn", &chart("longhorn")),
        vec![(
            "HelmRelease storage/longhorn".into(),
            Field::ChartVersion,
            "1.9.1".into(),
            "kubernetes/apps/storage/longhorn/app/HelmRelease.yaml".into(),
            None
        )]
    );
    let k3s = carriers(&r, "k3s", &Runs::K3s);
    assert_eq!(
        k3s.iter()
            .map(|c| (c.0.as_str(), c.2.as_str(), c.4.is_none()))
            .collect::<Vec<_>>(),
        vec![
            ("Plan system-upgrade/controllers", "v1.33.4+k3s1", true),
            ("Plan system-upgrade/workers", "v1.33.4+k3s1", true)
        ]
    );
}

#[test]
fn multi_cluster_each_cluster_reads_its_own_tree_and_the_root_reads_both_as_ambiguous() {
    for cl in ["production", "staging"] {
        let r = Reading::of_dir(&fixture("multi-cluster"), &format!("clusters/{cl}"));
        assert!(r.layout.notes.is_empty(), "{cl}: {:#?}", r.layout.notes);
        assert_eq!(
            carriers(&r, "podinfo", &chart("podinfo")),
            vec![(
                "HelmRelease podinfo/podinfo".into(),
                Field::ChartVersion,
                "6.9.0".into(),
                format!("apps/{cl}/podinfo-values.yaml"),
                None
            )],
            "{cl}: the version is the overlay's patch"
        );
        assert!(r.carriers("k3s", &Runs::K3s).absent);
    }
    let root = Reading::of_dir(&fixture("multi-cluster"), "");
    let m = root.carriers("podinfo", &chart("podinfo"));
    assert!(m.carriers.is_empty());
    assert!(
        m.problems.iter().any(|p| p
            .message
            .contains("2 HelmReleases deploy the chart podinfo")),
        "{:#?}",
        m.problems
    );
}

#[test]
fn the_example_repository() {
    let r = Reading::of_dir(
        &PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("examples/cluster-repo"),
        "",
    );
    assert!(r.layout.notes.is_empty(), "{:#?}", r.layout.notes);
    assert_eq!(
        carriers(&r, "flux", &Runs::Flux),
        vec![(
            "FluxInstance flux-system/flux".into(),
            Field::FluxDistribution,
            "2.6.4".into(),
            "clusters/homelab/flux-instance.yaml".into(),
            None
        )]
    );
    assert_eq!(
        carriers(&r, "longhorn", &chart("longhorn")),
        vec![(
            "HelmRelease longhorn-system/longhorn".into(),
            Field::ChartVersion,
            "1.9.1".into(),
            "infrastructure/longhorn.yaml".into(),
            None
        )]
    );
    assert!(r.carriers("k3s", &Runs::K3s).absent);
}
