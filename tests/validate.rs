//! `upkeep validate` against the example repo and the bad-input corpus in tests/corpus/.
//!
//! Each corpus case is a cluster directory; `expected` holds the exact diagnostics
//! (`file:line:column: severity: message (hint: ...)`), one per line. A `SETUP` file lists
//! inputs made at test time rather than committed (a 10 MB file, non-UTF-8 bytes, symlinks).
//! Run with `UPKEEP_BLESS=1` to rewrite the expected files after a deliberate change, then review
//! the diff.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use chrono::{DateTime, Utc};

fn now() -> DateTime<Utc> {
    DateTime::parse_from_rfc3339("2026-11-21T12:00:00Z")
        .unwrap()
        .with_timezone(&Utc)
}

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn copy_dir(from: &Path, to: &Path) {
    fs::create_dir_all(to).unwrap();
    for e in fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let name = e.file_name();
        if name == "expected" || name == "SETUP" {
            continue;
        }
        let dest = to.join(&name);
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &dest);
        } else {
            fs::copy(e.path(), dest).unwrap();
        }
    }
}

fn setup(dir: &Path, spec: &str) {
    for line in spec.lines().filter(|l| !l.trim().is_empty()) {
        let (what, rel) = line.split_once(' ').unwrap();
        let path = dir.join(rel);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        match what {
            "big" => {
                let mut s = String::from("apiVersion: upkeep.dev/v1alpha1\nkind: Policy\n");
                while s.len() < 10 * 1024 * 1024 {
                    s.push_str(
                        "# padding padding padding padding padding padding padding padding\n",
                    );
                }
                fs::write(path, s).unwrap();
            }
            "latin1" => {
                let mut b = b"apiVersion: upkeep.dev/v1alpha1\nkind: Policy\n# caf".to_vec();
                b.push(0xe9);
                b.extend_from_slice(b" au lait\n");
                fs::write(path, b).unwrap();
            }
            "symlink-outside" => std::os::unix::fs::symlink("/etc/passwd", path).unwrap(),
            "symlink-dangling" => std::os::unix::fs::symlink("does-not-exist.yaml", path).unwrap(),
            "symlink-loop" => std::os::unix::fs::symlink(path.file_name().unwrap(), &path).unwrap(),
            // A file whose name holds a terminal escape sequence (which colours text red).
            "escape-name" => {
                let name = format!("\u{1b}[31m{}", path.file_name().unwrap().to_string_lossy());
                fs::write(path.with_file_name(name), "").unwrap();
            }
            other => panic!("unknown SETUP action {other}"),
        }
    }
}

#[test]
fn corpus_cases_report_exact_locations_and_messages() {
    let corpus = root().join("tests/corpus");
    let bless = std::env::var_os("UPKEEP_BLESS").is_some();
    let mut cases: Vec<PathBuf> = fs::read_dir(&corpus)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_dir())
        .collect();
    cases.sort();
    assert!(
        cases.len() >= 40,
        "the corpus needs at least 40 cases, has {}",
        cases.len()
    );
    let mut failures = Vec::new();
    for case in &cases {
        let name = case.file_name().unwrap().to_string_lossy().to_string();
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("repo");
        copy_dir(case, &dir);
        if let Ok(spec) = fs::read_to_string(case.join("SETUP")) {
            setup(&dir, &spec);
        }
        let loaded = upkeep::model::load_repo(&dir, now()).unwrap();
        let got: String = loaded
            .diagnostics
            .iter()
            .map(|d| format!("{d}\n"))
            .collect();
        assert!(!got.is_empty(), "{name}: no diagnostic at all");
        for d in &loaded.diagnostics {
            assert!(
                d.line >= 1 && d.column >= 1,
                "{name}: diagnostic without a position: {d}"
            );
        }
        if loaded.errors() > 0 {
            assert!(
                loaded.repo.is_none(),
                "{name}: a repo with errors must not produce a model"
            );
        }
        let expected_path = case.join("expected");
        if bless {
            fs::write(&expected_path, &got).unwrap();
            continue;
        }
        let want = fs::read_to_string(&expected_path).unwrap_or_default();
        if got != want {
            failures.push(format!("== {name}\n-- expected:\n{want}-- got:\n{got}"));
        }
    }
    assert!(
        failures.is_empty(),
        "{} corpus cases differ:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn the_example_repo_is_valid_and_resolves() {
    let loaded = upkeep::model::load_repo(&root().join("examples/cluster-repo"), now()).unwrap();
    assert!(loaded.diagnostics.is_empty(), "{:?}", loaded.diagnostics);
    let repo = loaded.repo.unwrap();
    let names: Vec<_> = repo.components.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names, ["k3s", "flux", "longhorn"]);
    let k3s = repo.component("k3s").unwrap();
    assert_eq!(k3s.version.to_string(), "v1.33.4+k3s1");
    assert_eq!(k3s.track, upkeep::model::Track::Channel("stable".into()));
    assert_eq!(k3s.path_rule.max_minor_step, Some(1));
    assert_eq!(k3s.sources.github_releases.as_deref(), Some("k3s-io/k3s"));
    let p = repo.policy_for("k3s");
    assert!(p.emergency.allowed);
    assert_eq!(
        p.minimum_release_age
            .for_level(upkeep::versions::Level::Minor),
        chrono::Duration::days(14)
    );
    assert_eq!(
        p.minimum_release_age
            .for_level(upkeep::versions::Level::Patch),
        chrono::Duration::zero()
    );
    assert!(!repo.policy_for("longhorn").emergency.allowed);
    assert_eq!(repo.pull_requests.concurrent, 5);
    // Saturday 2026-11-21 22:30 in Amsterdam is inside the window; Friday is not.
    use upkeep::windows::{Decision, Override, decide};
    let sat = DateTime::parse_from_rfc3339("2026-11-21T22:30:00+01:00")
        .unwrap()
        .with_timezone(&Utc);
    assert!(matches!(
        decide(
            sat,
            "k3s",
            &repo.windows,
            &repo.freezes,
            Override::default()
        ),
        Decision::InWindow { .. }
    ));
    let xmas = DateTime::parse_from_rfc3339("2026-12-26T22:30:00+01:00")
        .unwrap()
        .with_timezone(&Utc);
    assert!(matches!(
        decide(
            xmas,
            "k3s",
            &repo.windows,
            &repo.freezes,
            Override::default()
        ),
        Decision::Frozen { .. }
    ));
}

#[test]
fn presets_validate_with_the_example_versions() {
    let presets = root().join("policies/presets");
    let mut n = 0;
    for e in fs::read_dir(&presets).unwrap() {
        let p = e.unwrap().path();
        let tmp = tempfile::tempdir().unwrap();
        fs::copy(
            root().join("examples/cluster-repo/versions.yaml"),
            tmp.path().join("versions.yaml"),
        )
        .unwrap();
        fs::create_dir(tmp.path().join("policies")).unwrap();
        fs::copy(&p, tmp.path().join("policies").join(p.file_name().unwrap())).unwrap();
        let loaded = upkeep::model::load_repo(tmp.path(), now()).unwrap();
        assert!(
            loaded.diagnostics.is_empty(),
            "{}: {:?}",
            p.display(),
            loaded.diagnostics
        );
        n += 1;
    }
    assert!(n >= 1);
}

fn upkeep_cmd(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_upkeep"))
        .env("UPKEEP_FORGE_WRITE_INTERVAL_MS", "20")
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn cli_exit_codes_and_outputs() {
    let example = root().join("examples/cluster-repo");
    let (code, out, _) = upkeep_cmd(&["validate", "--repo", example.to_str().unwrap()]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("valid: 3 components"), "{out}");

    let bad = root().join("tests/corpus/several-problems-at-once");
    let (code, out, _) = upkeep_cmd(&[
        "validate",
        "--repo",
        bad.to_str().unwrap(),
        "--now",
        "2026-11-21T12:00:00Z",
    ]);
    assert_eq!(code, 1);
    let first = out.lines().next().unwrap();
    assert!(
        first.starts_with(&format!("{}/policies/freezes.yaml:", bad.display())),
        "{first}"
    );
    assert!(
        out.trim_end().ends_with("invalid: 8 errors, 0 warnings"),
        "{out}"
    );

    let (code, out, _) = upkeep_cmd(&[
        "validate",
        "--repo",
        bad.to_str().unwrap(),
        "--output",
        "json",
    ]);
    assert_eq!(code, 1);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["valid"], false);
    assert_eq!(v["diagnostics"][0]["file"], "policies/freezes.yaml");
    assert!(v["diagnostics"][0]["line"].as_u64().unwrap() >= 1);

    let (code, _, err) = upkeep_cmd(&["validate", "--repo", "/nonexistent/upkeep"]);
    assert_eq!(code, 2);
    assert!(err.contains("no such directory"), "{err}");
    let (code, _, _) = upkeep_cmd(&["validate", "--no-such-flag"]);
    assert_eq!(code, 2);
    let (code, _, err) = upkeep_cmd(&["validate", "--now", "yesterday"]);
    assert_eq!(code, 2, "{err}");
}

#[test]
fn checked_in_json_schemas_match_the_types() {
    for (name, text) in upkeep::schemas() {
        let path = root().join("docs/schema").join(name);
        let on_disk = fs::read_to_string(&path).unwrap_or_default();
        assert!(
            on_disk == text,
            "{} is out of date: run `cargo run -- schema --out docs/schema`",
            path.display()
        );
    }
}

#[test]
fn config_repo_component_rules_override_the_built_ins() {
    let tmp = tempfile::tempdir().unwrap();
    fs::write(
        tmp.path().join("versions.yaml"),
        "apiVersion: upkeep.dev/v1alpha1\nkind: DesiredVersions\ncomponents:\n  flux:\n    version: v2.6.4\n  longhorn:\n    version: v1.9.1\n",
    )
    .unwrap();
    fs::create_dir(tmp.path().join("policies")).unwrap();
    fs::write(
        tmp.path().join("policies/rules.yaml"),
        "apiVersion: upkeep.dev/v1alpha1\nkind: Policy\ncomponentRules:\n  longhorn:\n    source:\n      helmChart:\n        repository: https://charts.longhorn.io\n        chart: longhorn\n  flux:\n    upgradePath:\n      maxMinorStep: 1\n      downgrade: never\n",
    )
    .unwrap();
    let loaded = upkeep::model::load_repo(tmp.path(), now()).unwrap();
    assert!(loaded.diagnostics.is_empty(), "{:?}", loaded.diagnostics);
    let repo = loaded.repo.unwrap();
    let lh = repo.component("longhorn").unwrap();
    assert_eq!(lh.sources.helm_chart.as_ref().unwrap().chart, "longhorn");
    assert_eq!(
        lh.sources.github_releases, None,
        "an overriding source replaces the built-in one"
    );
    assert_eq!(
        lh.path_rule.max_minor_step,
        Some(1),
        "fields not overridden keep their built-in value"
    );
    let flux = repo.component("flux").unwrap();
    assert_eq!(flux.path_rule.downgrade, upkeep::versions::Downgrade::Never);
    assert_eq!(
        flux.sources.github_releases.as_deref(),
        Some("fluxcd/flux2")
    );
}
