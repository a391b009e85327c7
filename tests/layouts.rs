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
    // cert-manager's HelmRelease is in a file both clusters apply: never changed in one
    // cluster's window.
    for cl in ["production", "staging"] {
        let r = Reading::of_dir(&fixture("multi-cluster"), &format!("clusters/{cl}"));
        let m = r.carriers("cert-manager", &chart("cert-manager"));
        let other = if cl == "staging" {
            "production"
        } else {
            "staging"
        };
        assert!(
            m.problems.iter().any(|p| p.is_error()
                && p.file == "infrastructure/controllers/cert-manager.yaml"
                && p.message
                    .contains(&format!("the cluster of clusters/{other}"))),
            "{cl}: {:#?}",
            m.problems
        );
        // podinfo's version is in each cluster's own overlay: not shared.
        let m = r.carriers("podinfo", &chart("podinfo"));
        assert!(
            m.problems.iter().all(|p| !p.is_error()),
            "{:#?}",
            m.problems
        );
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

/// `upkeep rehearse --output json --offline` on `repo` (a copy in a temporary directory when
/// `edit` changes it), keeping its state in `state`: (exit code, report, stderr).
fn rehearse(
    repo: &std::path::Path,
    subdir: &str,
    state: &std::path::Path,
) -> (i32, serde_json::Value, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_upkeep"))
        .args([
            "rehearse",
            "--offline",
            "--output",
            "json",
            "--subdir",
            subdir,
        ])
        .arg("--repo")
        .arg(repo)
        .arg("--dir")
        .arg(state)
        .output()
        .expect("upkeep rehearse");
    let report = serde_json::from_slice(&out.stdout).unwrap_or_default();
    (
        out.status.code().unwrap_or(-1),
        report,
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// (outcome, cluster, git) of `name` in a rehearsal's report.
fn outcome(report: &serde_json::Value, name: &str) -> (String, String, String) {
    let c = report["components"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|c| c["name"] == name)
        .cloned()
        .unwrap_or_default();
    let s = |k: &str| c[k].as_str().unwrap_or("").to_string();
    (s("outcome"), s("cluster"), s("git"))
}

/// A copy of a fixture in a temporary directory, changed by `edit` (path, from, to).
fn copy_of(name: &str, edits: &[(&str, &str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = std::process::Command::new("cp")
        .arg("-r")
        .arg(fixture(name).join("."))
        .arg(dir.path())
        .output()
        .expect("cp");
    assert!(out.status.success(), "{out:?}");
    for (path, from, to) in edits {
        let p = dir.path().join(path);
        let text = std::fs::read_to_string(&p).expect("read");
        assert!(text.contains(from), "{path} has {from:?}");
        std::fs::write(&p, text.replacen(from, to, 1)).expect("write");
    }
    dir
}

/// One layout, end to end: each component proposed, merged, applied through git in a window,
/// validated and soaked; git and the cluster agree at the end.
fn rehearse_passes(repo: &str, subdir: &str, updated: &[&str], current: &[&str]) {
    let state = tempfile::tempdir().expect("tempdir");
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(repo);
    let (code, report, err) = rehearse(&root, subdir, state.path());
    assert_eq!(code, 0, "{repo}: {report:#}\n{err}");
    for name in updated {
        let (o, cluster, git) = outcome(&report, name);
        assert_eq!(o, "updated", "{repo} {name}: {report:#}");
        assert!(
            upkeep::layout::same_version(&cluster, &git),
            "{repo} {name}: {report:#}"
        );
    }
    for name in current {
        assert_eq!(
            outcome(&report, name).0,
            "current",
            "{repo} {name}: {report:#}"
        );
    }
}

#[test]
fn rehearse_passes_on_the_example() {
    rehearse_passes(
        "examples/cluster-repo",
        "",
        &["k3s", "flux", "longhorn"],
        &[],
    );
}

#[test]
fn rehearse_passes_on_home_ops_oci() {
    rehearse_passes(
        "tests/fixtures/layouts/home-ops-oci",
        "",
        &["k3s", "flux", "longhorn"],
        &[],
    );
}

#[test]
fn rehearse_passes_on_damacus_k3s() {
    rehearse_passes(
        "tests/fixtures/layouts/damacus-k3s",
        "",
        &["k3s", "flux", "longhorn"],
        &[],
    );
}

#[test]
fn rehearse_passes_on_cluster_template_k3s() {
    rehearse_passes(
        "tests/fixtures/layouts/cluster-template-k3s",
        "",
        &["k3s", "system-upgrade-controller"],
        &[],
    );
}

#[test]
fn rehearse_passes_on_a_cluster_of_multi_cluster() {
    rehearse_passes(
        "tests/fixtures/layouts/multi-cluster",
        "clusters/staging",
        &["k3s"],
        &["podinfo"],
    );
}

/// The two clusters of one repository keep their own branches, titles and rollouts.
#[test]
fn two_clusters_of_one_repository_never_share_branches() {
    let state = tempfile::tempdir().expect("tempdir");
    let (code, report, err) = rehearse(
        &fixture("multi-cluster"),
        "clusters/production",
        state.path(),
    );
    assert_eq!(code, 0, "{report:#}\n{err}");
    let bare = state.path().join("forge/you/cluster.git");
    let out = std::process::Command::new("git")
        .arg("--git-dir")
        .arg(&bare)
        .args(["for-each-ref", "--format=%(refname:short)", "refs/heads"])
        .output()
        .expect("git");
    let branches = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        branches
            .lines()
            .filter(|b| b.starts_with("upkeep/"))
            .all(|b| b.starts_with("upkeep/production/")),
        "{branches}"
    );
    assert!(err.contains("[production] k3s:"), "{err}");
    assert!(
        err.contains("production-k3s-v"),
        "rollouts carry the cluster: {err}"
    );
}

/// The unasked downgrade of issue 24: a component named like the app-template release of the
/// system-upgrade-controller, without `image:`. validate refuses the mapping (file and line);
/// the rehearsal refuses to apply it, and the app-template chart is never touched.
#[test]
fn a_component_named_like_an_app_template_release_is_refused_and_never_downgraded() {
    let dir = copy_of(
        "cluster-template-k3s",
        &[(
            "versions.yaml",
            "    image: docker.io/rancher/system-upgrade-controller\n",
            "",
        )],
    );
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_upkeep"))
        .args(["validate", "--repo"])
        .arg(dir.path())
        .arg("--root")
        .arg(dir.path())
        .output()
        .expect("validate");
    let said = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{said}");
    assert!(
        said.contains("kubernetes/apps/system-upgrade/system-upgrade-controller/app/helmrelease.yaml:2:1: error: HelmRelease system-upgrade/system-upgrade-controller is named like the component system-upgrade-controller but deploys the chart app-template"),
        "{said}"
    );
    let state = tempfile::tempdir().expect("tempdir");
    let (code, report, err) = rehearse(dir.path(), "", state.path());
    assert_eq!(code, 0, "{report:#}\n{err}");
    let (o, _, _) = outcome(&report, "system-upgrade-controller");
    assert_eq!(o, "refused", "{report:#}");
    let bare = state.path().join("forge/you/cluster.git");
    let show = std::process::Command::new("git")
        .arg("--git-dir")
        .arg(&bare)
        .args([
            "show",
            "main:kubernetes/apps/system-upgrade/system-upgrade-controller/app/helmrelease.yaml",
        ])
        .output()
        .expect("git");
    let hr = String::from_utf8_lossy(&show.stdout);
    assert!(
        hr.contains("version: 3.1.0") && hr.contains("tag: v0.13.4"),
        "{hr}"
    );
}

/// A manifest Renovate moved (the Longhorn chart bumped in git, versions.yaml not): validate
/// says it moved outside upkeep, and nothing is applied as a "downgrade".
#[test]
fn a_manifest_renovate_moved_is_said_as_such() {
    let dir = copy_of(
        "damacus-k3s",
        &[(
            "kubernetes/apps/storage/longhorn/app/HelmRelease.yaml",
            "version: 1.9.1",
            "version: 1.10.2",
        )],
    );
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_upkeep"))
        .args(["validate", "--repo"])
        .arg(dir.path())
        .arg("--root")
        .arg(dir.path())
        .output()
        .expect("validate");
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        said.contains("kubernetes/apps/storage/longhorn/app/HelmRelease.yaml:11:16: warning: HelmRelease storage/longhorn asks for longhorn 1.10.2 in git, but versions.yaml asks for v1.9.1: the manifest moved outside upkeep"),
        "{said}"
    );
    assert!(!said.contains("downgrade"), "{said}");
    // Rehearsed: Flux applied git's 1.10.2 at bootstrap; upkeep never calls that a downgrade,
    // proposes versions.yaml's way up to it, and ends with everything agreeing.
    let state = tempfile::tempdir().expect("tempdir");
    let (code, report, err) = rehearse(dir.path(), "", state.path());
    assert_eq!(code, 0, "{report:#}\n{err}");
    assert!(
        !err.contains("downgrade") && !err.contains("no legal path"),
        "{err}"
    );
}

/// `upkeep sim serve --config-repo DIR`, stopped when dropped.
struct Served {
    child: std::process::Child,
    kubeconfig: String,
    home: tempfile::TempDir,
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Served {
    fn start(repo: &std::path::Path) -> Served {
        use std::io::BufRead as _;
        let home = tempfile::tempdir().expect("tempdir");
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_upkeep"))
            .args(["sim", "serve", "--speed", "120", "--config-repo"])
            .arg(repo)
            .arg("--state-dir")
            .arg(home.path().join("sim"))
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("upkeep sim serve");
        let mut kubeconfig = String::new();
        for line in std::io::BufReader::new(child.stdout.take().expect("stdout"))
            .lines()
            .map_while(Result::ok)
        {
            if let Some(k) = line.strip_prefix("kubeconfig=") {
                kubeconfig = k.to_string();
                break;
            }
        }
        let served = Served {
            child,
            kubeconfig,
            home,
        };
        assert!(
            !served.kubeconfig.is_empty(),
            "sim serve printed no kubeconfig"
        );
        served
    }

    fn kubectl(&self, args: &[&str]) -> String {
        let out = std::process::Command::new("kubectl")
            .env("HOME", self.home.path())
            .arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .args(args)
            .output()
            .expect("kubectl");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Until Longhorn's volumes exist in `ns` (Flux reconciles on the playground's clock; wall
    /// time only bounds the wait).
    fn wait_for_volumes(&self, ns: &str) -> bool {
        for _ in 0..240 {
            if self
                .kubectl(&["get", "volumes.longhorn.io", "-n", ns, "-o", "name"])
                .contains('/')
            {
                return true;
            }
            std::thread::sleep(std::time::Duration::from_millis(500));
        }
        false
    }

    /// `upkeep plan --offline` of `repo` against the served cluster: its output.
    fn plan(&self, repo: &std::path::Path) -> String {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_upkeep"))
            .args([
                "plan",
                "--offline",
                "--now",
                "2026-11-21T12:00:00Z",
                "--repo",
            ])
            .arg(repo)
            .arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .output()
            .expect("upkeep plan");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

/// `upkeep sim serve --config-repo` bootstraps the playground's cluster from the user's
/// repository as Flux would (Longhorn lands where its Kustomization's `targetNamespace` puts
/// it), and `upkeep plan` against it reads git as `apply` will: a version Flux applies from git
/// is changed there in the window, never "FAIL Flux ownership".
#[test]
fn sim_serve_bootstraps_from_a_users_repository_and_plan_reads_its_git() {
    let repo = copy_of("home-ops-oci", &[]);
    let served = Served::start(repo.path());
    assert!(served.wait_for_volumes("storage"));
    let in_storage = served.kubectl(&[
        "get",
        "helmrelease",
        "longhorn",
        "-n",
        "storage",
        "-o",
        "name",
    ]);
    assert!(in_storage.contains("longhorn"), "{in_storage}");

    // The user asks for the next Longhorn; plan reads the repository beside versions.yaml.
    let versions = repo.path().join("versions.yaml");
    let text = std::fs::read_to_string(&versions).expect("read");
    std::fs::write(&versions, text.replace("v1.9.1", "v1.9.2")).expect("write");
    let text = served.plan(repo.path());
    assert!(!text.contains("Flux ownership"), "{text}");
    assert!(
        text.contains("applied through: git: upkeep changes")
            && text.contains("OCIRepository")
            && text.contains("longhorn"),
        "{text}"
    );
}

/// A HelmRelease with its own `spec.targetNamespace` installs there (helm-controller's
/// `GetReleaseNamespace`), not in the release's namespace: upkeep finds Longhorn's volumes (and
/// takes its backups) where Helm put them.
#[test]
fn longhorn_installed_into_a_release_target_namespace_is_found_there() {
    let repo = copy_of(
        "home-ops-oci",
        &[
            (
                "kubernetes/apps/storage/longhorn/app/helmrelease.yaml",
                "spec:\n  interval: 1h\n",
                "spec:\n  interval: 1h\n  targetNamespace: longhorn-system\n",
            ),
            (
                "kubernetes/apps/storage/longhorn/app/helmrelease.yaml",
                "  install:\n",
                "  install:\n    createNamespace: true\n",
            ),
            ("versions.yaml", "v1.9.1", "v1.9.2"),
        ],
    );
    let served = Served::start(repo.path());
    assert!(served.wait_for_volumes("longhorn-system"));
    let text = served.plan(repo.path());
    assert!(text.contains("3 volumes, none faulted"), "{text}");
}

/// A range where a version belongs (bjw-s' flux-instance values say `version: 2.x`) follows
/// every release by itself: `validate` says so as an error, naming the file, instead of calling
/// it a manifest "moved outside upkeep" with advice versions.yaml cannot follow.
#[test]
fn a_range_where_a_version_belongs_is_an_error_not_a_moved_manifest() {
    let dir = copy_of(
        "home-ops-oci",
        &[(
            "kubernetes/apps/flux-system/flux-instance/app/helmrelease.yaml",
            "version: 2.6.4",
            "version: 2.x",
        )],
    );
    let loaded = upkeep::model::load_repo(dir.path(), chrono::Utc::now()).expect("load");
    let repo = loaded.repo.expect("valid");
    let r = Reading::of_dir(dir.path(), "");
    let found = upkeep::layout::check::check(&r, &repo);
    assert!(
        found.iter().any(|d| d.is_error()
            && d.file.ends_with("flux-instance/app/helmrelease.yaml")
            && d.message
                .contains("\"2.x\", which is not one version of flux")),
        "{found:#?}"
    );
    assert!(
        found
            .iter()
            .all(|d| !d.message.contains("moved outside upkeep")),
        "{found:#?}"
    );
}

/// Flux installed without flux-operator (cluster-template's flux-manifests OCIRepository) is
/// not upgraded by upkeep: said at the OCIRepository, with what to do, never a loop on "no
/// FluxInstance".
#[test]
fn flux_from_the_flux_manifests_artifact_is_refused_with_what_to_do() {
    let r = Reading::of_dir(&fixture("cluster-template-k3s"), "");
    let m = r.carriers("flux", &Runs::Flux);
    assert!(m.carriers.is_empty());
    assert!(
        m.problems.iter().any(|p| p.is_error()
            && p.file == "kubernetes/flux/config/flux.yaml"
            && p.message.contains("flux-manifests OCI artifact")
            && p.hint
                .as_deref()
                .is_some_and(|h| h.contains("leave `flux` out of versions.yaml"))),
        "{:#?}",
        m.problems
    );
}

/// Two clusters whose Flux Kustomizations build the same overlay take the version from the
/// same place, whichever Kustomization file applies it: refused in both. A base only one
/// cluster takes its version from (the other patches it) is not shared.
#[test]
fn a_version_two_clusters_take_from_one_place_is_refused_and_a_patched_base_is_not() {
    let same = copy_of(
        "multi-cluster",
        &[(
            "clusters/staging/apps.yaml",
            "path: ./apps/staging",
            "path: ./apps/production",
        )],
    );
    for cl in ["production", "staging"] {
        let r = Reading::of_dir(same.path(), &format!("clusters/{cl}"));
        let m = r.carriers("podinfo", &chart("podinfo"));
        assert!(
            m.problems.iter().any(|p| p.is_error()
                && p.file == "apps/production/podinfo-values.yaml"
                && p.message.contains("takes its version from the same place")),
            "{cl}: {:#?}",
            m.problems
        );
    }
    // Production without its patch takes the base's version; staging patches it.
    let base = copy_of(
        "multi-cluster",
        &[
            (
                "apps/production/kustomization.yaml",
                "patches:\n  - path: podinfo-values.yaml\n    target:\n      kind: HelmRelease\n",
                "",
            ),
            (
                "apps/base/podinfo/release.yaml",
                "      chart: podinfo\n",
                "      chart: podinfo\n      version: \"6.9.0\"\n",
            ),
        ],
    );
    let r = Reading::of_dir(base.path(), "clusters/production");
    let m = r.carriers("podinfo", &chart("podinfo"));
    assert_eq!(m.carriers.len(), 1, "{:#?}", m.carriers);
    assert!(
        m.carriers[0].file.starts_with("apps/base/"),
        "{:#?}",
        m.carriers
    );
    assert!(
        m.problems.iter().all(|p| !p.is_error()),
        "{:#?}",
        m.problems
    );
}

/// An OCIRepository with both a tag and a semver range follows the range (source-controller's
/// `getArtifactRef`): upkeep never edits the tag it ignores.
#[test]
fn an_oci_repository_with_a_tag_and_a_range_is_read_as_the_range() {
    let dir = copy_of(
        "home-ops-oci",
        &[(
            "kubernetes/apps/storage/longhorn/app/ocirepository.yaml",
            "  ref:\n",
            "  ref:\n    semver: \">=1.9.0 <1.10.0\"\n",
        )],
    );
    let r = Reading::of_dir(dir.path(), "");
    let m = r.carriers("longhorn", &chart("longhorn"));
    assert!(m.carriers.is_empty(), "{:#?}", m.carriers);
    assert!(
        m.problems
            .iter()
            .any(|p| p.message.contains("follows the range")),
        "{:#?}",
        m.problems
    );
}

/// An OCI tag spells Helm's `+` as `_`: read as the version it is, not refused as a range.
#[test]
fn an_oci_tag_with_helms_underscore_is_read_as_its_version() {
    let dir = copy_of(
        "home-ops-oci",
        &[(
            "kubernetes/apps/storage/longhorn/app/ocirepository.yaml",
            "tag: 1.9.1",
            "tag: 1.9.1_up2",
        )],
    );
    let r = Reading::of_dir(dir.path(), "");
    let m = r.carriers("longhorn", &chart("longhorn"));
    assert_eq!(m.carriers.len(), 1, "{:#?}", m);
    assert_eq!(m.carriers[0].version(), "1.9.1+up2");
    let loaded = upkeep::model::load_repo(dir.path(), chrono::Utc::now()).expect("load");
    let repo = loaded.repo.expect("valid");
    let found = upkeep::layout::check::check(&r, &repo);
    assert!(
        found.iter().all(|d| !d.message.contains("not one version")),
        "{found:#?}"
    );
    assert!(
        upkeep::versions::parse(&m.carriers[0].version(), upkeep::versions::Scheme::Semver).is_ok()
    );
}
