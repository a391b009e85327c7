//! The shipped offline catalog: built from the real tags in tests/fixtures/releases, signed, and
//! verified; and `check --offline` / `catalog` commands end to end.
//!
//! Regenerate catalog/releases.json with `UPKEEP_BLESS=1 cargo test --test catalog`, then sign it
//! with the project's key: `minisign -S -s KEY -m catalog/releases.json` (docs/sources.md).

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use chrono::{DateTime, Utc};
use upkeep::sources::UpstreamRelease;
use upkeep::sources::catalog::{Catalog, CatalogComponent, CatalogFile};
use upkeep::versions::{self, Scheme};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn fixture(name: &str) -> String {
    fs::read_to_string(root().join("tests/fixtures/releases").join(name)).unwrap()
}

fn url(repo: &str, tag: &str) -> String {
    format!(
        "https://github.com/{repo}/releases/tag/{}",
        tag.replace('+', "%2B")
    )
}

fn from_tsv(repo: &str, text: &str) -> (CatalogComponent, DateTime<Utc>) {
    let mut rels: Vec<UpstreamRelease> = text
        .lines()
        .filter_map(|l| l.split_once('\t'))
        .map(|(tag, date)| UpstreamRelease {
            tag: tag.trim().to_string(),
            published_at: Some(
                DateTime::parse_from_rfc3339(date.trim())
                    .unwrap()
                    .with_timezone(&Utc),
            ),
            prerelease: versions::parse(tag.trim(), Scheme::Semver)
                .map(|v| v.is_prerelease())
                .unwrap_or(false),
            notes: None,
            url: Some(url(repo, tag.trim())),
        })
        .collect();
    rels.sort_by(|a, b| b.published_at.cmp(&a.published_at).then(b.tag.cmp(&a.tag)));
    let newest = rels.iter().filter_map(|r| r.published_at).max().unwrap();
    (
        CatalogComponent {
            source: format!("github:{repo}"),
            channels: BTreeMap::new(),
            releases: rels,
        },
        newest,
    )
}

/// k3s: 896 tags without dates; channels computed like the channel server computes its per-minor
/// channels. `stable` is assumed to trail `latest` by one minor (see tests/fixtures/README.md).
fn k3s() -> CatalogComponent {
    let text = fixture("k3s-versions.txt");
    let tags: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    let mut vs: Vec<versions::Version> = tags
        .iter()
        .filter_map(|t| versions::parse(t, Scheme::K3s).ok())
        .collect();
    vs.sort();
    vs.reverse();
    // Odd historical names (`+k3s` without a number, `+rk3s1`) stay in the catalog as upstream
    // spelled them; `check` skips what it cannot read.
    let odd: Vec<&str> = tags
        .iter()
        .copied()
        .filter(|t| versions::parse(t, Scheme::K3s).is_err())
        .collect();
    let mut channels = BTreeMap::new();
    let releases_only: Vec<&versions::Version> = vs.iter().filter(|v| !v.is_prerelease()).collect();
    let latest = releases_only[0];
    channels.insert("latest".to_string(), latest.to_string());
    channels.insert("testing".to_string(), vs[0].to_string());
    for v in &releases_only {
        let (maj, min) = v.line();
        channels
            .entry(format!("v{maj}.{min}"))
            .or_insert_with(|| v.to_string());
    }
    let (lmaj, lmin) = latest.line();
    channels.insert(
        "stable".to_string(),
        channels[&format!("v{lmaj}.{}", lmin - 1)].clone(),
    );
    CatalogComponent {
        source: "github:k3s-io/k3s".into(),
        channels,
        releases: vs
            .iter()
            .map(|v| (v.raw(), v.is_prerelease()))
            .chain(odd.iter().map(|t| (*t, t.contains("-rc"))))
            .map(|(tag, prerelease)| UpstreamRelease {
                tag: tag.to_string(),
                published_at: None,
                prerelease,
                notes: None,
                url: Some(url("k3s-io/k3s", tag)),
            })
            .collect(),
    }
}

fn build() -> CatalogFile {
    let mut newest = DateTime::<Utc>::MIN_UTC;
    let mut file = CatalogFile::new(newest);
    file.description = Some(
        "Built by upkeep's tests from real upstream tags (tests/fixtures/releases); k3s tags carry no dates"
            .into(),
    );
    file.components.insert("k3s".into(), k3s());
    for (name, repo, tsv) in [
        ("flux", "fluxcd/flux2", "flux2-tags.tsv"),
        ("longhorn", "longhorn/longhorn", "longhorn-tags.tsv"),
        (
            "system-upgrade-controller",
            "rancher/system-upgrade-controller",
            "system-upgrade-controller-tags.tsv",
        ),
        (
            "flux-operator",
            "controlplaneio-fluxcd/flux-operator",
            "flux-operator-tags.tsv",
        ),
    ] {
        let (c, at) = from_tsv(repo, &fixture(tsv));
        newest = newest.max(at);
        file.components.insert(name.into(), c);
    }
    file.generated_at = newest;
    file
}

#[test]
fn the_shipped_catalog_is_built_from_the_fixtures_and_signed() {
    let path = root().join("catalog/releases.json");
    let want = build().to_json();
    if std::env::var_os("UPKEEP_BLESS").is_some() {
        fs::write(&path, &want).unwrap();
        eprintln!(
            "wrote {}; now sign it (see the top of this file)",
            path.display()
        );
        return;
    }
    let have = fs::read_to_string(&path).unwrap();
    assert!(
        have == want,
        "catalog/releases.json is out of date: UPKEEP_BLESS=1 cargo test --test catalog, then sign it"
    );
    let c = Catalog::builtin().expect("the shipped catalog verifies with the shipped key");
    assert_eq!(c.file.components["k3s"].releases.len(), 896);
    assert_eq!(c.file.components["k3s"].channels["stable"], "v1.35.5+k3s1");
}

/// Run a command: exit code, stdout, stderr.
fn output(cmd: &mut Command) -> (i32, String, String) {
    let out = cmd.env_remove("GITHUB_TOKEN").output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn upkeep(args: &[&str]) -> (i32, String, String) {
    output(
        Command::new(env!("CARGO_BIN_EXE_upkeep"))
            .env("UPKEEP_FORGE_WRITE_INTERVAL_MS", "20")
            .args(args)
            .env("UPKEEP_LOG", "warn"),
    )
}

/// A config repo at `dir` with these components (YAML lines under `components:`).
fn write_repo(dir: &Path, components: &str) {
    fs::create_dir_all(dir.join("policies")).unwrap();
    fs::write(
        dir.join("versions.yaml"),
        format!(
            "apiVersion: upkeep.dev/v1alpha1\nkind: DesiredVersions\ncomponents:\n{components}"
        ),
    )
    .unwrap();
}

/// A check report's JSON without where it came from, to compare online and offline answers.
fn comparable(text: &str) -> serde_json::Value {
    let mut v: serde_json::Value = serde_json::from_str(text).unwrap();
    v["origin"] = serde_json::Value::Null;
    for c in v["components"].as_array_mut().unwrap() {
        c["source"] = serde_json::Value::Null;
    }
    v
}

fn example() -> String {
    root().join("examples/cluster-repo").display().to_string()
}

const NOW: &str = "2026-11-21T12:00:00Z";

#[test]
fn check_offline_on_the_example_repo_prints_the_report_from_the_shipped_catalog() {
    let (code, out, err) = upkeep(&["check", "--repo", &example(), "--offline", "--now", NOW]);
    assert_eq!(code, 10, "updates are available: {out}{err}");
    for line in out.lines() {
        assert!(line.chars().count() <= 100, "too wide: {line:?}");
    }
    assert!(out.contains("COMPONENT"), "{out}");
    assert!(!out.contains('\x1b'), "no color when not on a terminal");
    assert!(
        out.contains("3 components: 0 up to date, 3 with an update"),
        "{out}"
    );

    let (code, json, _) = upkeep(&[
        "check",
        "--repo",
        &example(),
        "--offline",
        "--now",
        NOW,
        "--output",
        "json",
    ]);
    assert_eq!(code, 10);
    let v: serde_json::Value = serde_json::from_str(&json).expect("--output json parses");
    let rows = v["components"].as_array().unwrap();
    let row = |n: &str| rows.iter().find(|r| r["name"] == n).unwrap().clone();
    // k3s v1.33.4+k3s1 on stable (v1.35.5+k3s1): the minor hop to v1.34 has no release date
    // (k3s tags carry none) so it cannot pass the 14-day minor gate; the newest v1.33 patch is
    // next. The path to the newest takes every minor in turn.
    let k3s = row("k3s");
    assert_eq!(k3s["status"], "updateAvailable");
    assert_eq!(k3s["next"]["version"], "v1.33.12+k3s1", "{k3s}");
    assert_eq!(k3s["next"]["level"], "patch");
    assert_eq!(k3s["newest"], "v1.35.5+k3s1");
    assert_eq!(
        k3s["path"],
        serde_json::json!(["v1.34.8+k3s1", "v1.35.5+k3s1"])
    );
    assert_eq!(k3s["held"]["reason"], "noTimestamp");
    // Longhorn v1.9.1: one minor at a time, never a skip.
    let lh = row("longhorn");
    assert_eq!(lh["next"]["version"], "v1.10.2");
    assert_eq!(
        lh["path"],
        serde_json::json!(["v1.10.2", "v1.11.3", "v1.12.1"])
    );
    assert_eq!(row("flux")["next"]["version"], "v2.9.4");
}

#[test]
fn exit_codes_hold_zero_ten_and_one() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    fs::create_dir_all(dir.join("policies")).unwrap();
    let write = |versions: &str| {
        fs::write(
            dir.join("versions.yaml"),
            format!(
                "apiVersion: upkeep.dev/v1alpha1\nkind: DesiredVersions\ncomponents:\n{versions}"
            ),
        )
        .unwrap()
    };
    let d = dir.display().to_string();
    let run = || upkeep(&["check", "--repo", &d, "--offline", "--now", NOW]);
    write("  longhorn:\n    version: v1.10.2\n");
    let newest_longhorn = {
        let c = Catalog::builtin().unwrap();
        let mut vs: Vec<_> = c.file.components["longhorn"]
            .releases
            .iter()
            .filter_map(|r| versions::parse(&r.tag, Scheme::Semver).ok())
            .filter(|v| !v.is_prerelease() && !v.is_dev())
            .collect();
        vs.sort();
        vs.pop().unwrap().to_string()
    };
    let (code, out, _) = run();
    assert_eq!(code, 10, "{out}");
    write(&format!("  longhorn:\n    version: {newest_longhorn}\n"));
    let (code, out, _) = run();
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("up to date"), "{out}");
    write("  longhorn:\n    version: [broken\n");
    let (code, _, err) = run();
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("versions.yaml:"), "{err}");
}

/// Sign `file` as `minisign -S -m FILE` does (the signature next to it, `FILE.minisig`), with a
/// fresh unencrypted key pair, through the minisign library (no CLI needed); the public key line.
fn sign(_dir: &Path, file: &Path) -> String {
    let minisign::KeyPair { pk, sk } =
        minisign::KeyPair::generate_unencrypted_keypair().expect("a key pair");
    let data = fs::read(file).expect("read the file to sign");
    let sig = minisign::sign(
        Some(&pk),
        &sk,
        std::io::Cursor::new(data),
        Some("signed by upkeep's tests"),
        Some("signature from upkeep's tests"),
    )
    .expect("sign");
    fs::write(upkeep::sources::catalog::sig_path(file), sig.into_string()).expect("write");
    pk.to_base64()
}

#[test]
fn a_user_catalog_must_be_signed_with_the_configured_key() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let cat = dir.join("catalog.json");
    let mut file = CatalogFile::new("2026-11-01T00:00:00Z".parse().unwrap());
    file.components.insert(
        "longhorn".into(),
        CatalogComponent {
            source: "github:longhorn/longhorn".into(),
            channels: BTreeMap::new(),
            releases: vec![UpstreamRelease {
                tag: "v1.9.2".into(),
                published_at: Some("2026-10-01T00:00:00Z".parse().unwrap()),
                prerelease: false,
                notes: Some("Fixes | pipes".into()),
                url: None,
            }],
        },
    );
    fs::write(&cat, file.to_json()).unwrap();
    let repo = dir.join("repo");
    write_repo(&repo, "  longhorn:\n    version: v1.9.1\n");
    let r = repo.display().to_string();
    let c = cat.display().to_string();

    // Unsigned: refused, and says how to sign.
    let (code, _, err) = upkeep(&["check", "--repo", &r, "--catalog", &c, "--now", NOW]);
    assert_eq!(code, 1);
    assert!(
        err.contains("unsigned") && err.contains("minisign -S"),
        "{err}"
    );

    let key = sign(dir, &cat);
    // Signed, but no key configured.
    let (code, _, err) = upkeep(&["check", "--repo", &r, "--catalog", &c, "--now", NOW]);
    assert_eq!(code, 1);
    assert!(err.contains("no public key"), "{err}");

    // The key from the policies.
    fs::write(
        repo.join("policies/catalog.yaml"),
        format!("apiVersion: upkeep.dev/v1alpha1\nkind: Policy\ncatalog:\n  publicKey: {key}\n"),
    )
    .unwrap();
    let (code, out, err) = upkeep(&[
        "check",
        "--repo",
        &r,
        "--catalog",
        &c,
        "--now",
        NOW,
        "--output",
        "markdown",
    ]);
    assert_eq!(code, 10, "{out}{err}");
    assert!(out.contains("| longhorn | v1.9.1 | v1.9.2 |"), "{out}");

    // The wrong key (the shipped one) and a tampered file are refused.
    let shipped = Catalog::builtin_public_key()
        .lines()
        .last()
        .unwrap()
        .to_string();
    let (code, _, err) = upkeep(&[
        "check",
        "--repo",
        &r,
        "--catalog",
        &c,
        "--now",
        NOW,
        "--catalog-public-key",
        &shipped,
    ]);
    assert_eq!(code, 1);
    assert!(err.contains("signed with a different key"), "{err}");
    let tampered = fs::read_to_string(&cat)
        .unwrap()
        .replace("v1.9.2", "v1.9.9");
    fs::write(&cat, tampered).unwrap();
    let (code, _, err) = upkeep(&["check", "--repo", &r, "--catalog", &c, "--now", NOW]);
    assert_eq!(code, 1);
    assert!(err.contains("does not verify"), "{err}");

    // `catalog verify` says the same.
    let (code, _, err) = upkeep(&["catalog", "verify", &c, "--public-key", &key]);
    assert_eq!(code, 1, "{err}");
    let (code, out, _) = upkeep(&["catalog", "verify"]);
    assert_eq!(code, 0);
    assert!(out.contains("k3s: 896 releases"), "{out}");
}

#[test]
fn an_exported_catalog_signed_with_minisign_gives_the_same_answers_offline() {
    use upkeep_sim::upstream::{UpstreamSim, releases_from_list, releases_from_tsv};
    let sim = UpstreamSim::start_in_thread().unwrap();
    sim.set_releases(
        "k3s-io/k3s",
        releases_from_list(&fixture("k3s-versions.txt"), Scheme::K3s),
    );
    sim.set_releases(
        "longhorn/longhorn",
        releases_from_tsv(&fixture("longhorn-tags.tsv")),
    );
    sim.set_releases(
        "fluxcd/flux2",
        releases_from_tsv(&fixture("flux2-tags.tsv")),
    );
    sim.set_channels(&[("stable", "v1.34.8+k3s1"), ("latest", "v1.35.5+k3s1")]);

    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let repo = dir.join("repo");
    write_repo(
        &repo,
        "  k3s:\n    version: v1.32.1+k3s1\n  longhorn:\n    version: v1.8.0\n  flux:\n    version: v2.5.0\n",
    );
    let online = |args: &[&str]| {
        output(
            Command::new(env!("CARGO_BIN_EXE_upkeep"))
                .env("UPKEEP_FORGE_WRITE_INTERVAL_MS", "20")
                .args(args)
                .arg("--repo")
                .arg(&repo)
                .arg("--no-cache")
                .env("UPKEEP_GITHUB_API_URL", sim.url())
                .env("UPKEEP_K3S_CHANNEL_URL", sim.url()),
        )
    };
    let cat = dir.join("exported.json");
    let c = cat.display().to_string();
    let (code, out, err) = online(&["catalog", "export", "--out", &c]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("minisign -S -m"), "{out}");
    let key = sign(dir, &cat);

    let (code, live, err) = online(&["check", "--output", "json", "--now", NOW]);
    assert_eq!(code, 10, "{err}");
    let (code, offline, err) = upkeep(&[
        "check",
        "--repo",
        &repo.display().to_string(),
        "--catalog",
        &c,
        "--catalog-public-key",
        &key,
        "--output",
        "json",
        "--now",
        NOW,
    ]);
    assert_eq!(code, 10, "{err}");
    assert_eq!(comparable(&live), comparable(&offline));
    let v = comparable(&offline);
    assert_eq!(v["components"][0]["next"]["version"], "v1.33.12+k3s1");
    assert_eq!(v["components"][0]["newest"], "v1.34.8+k3s1");

    // All or nothing: one unreadable component, no file.
    write_repo(
        &repo,
        "  longhorn:\n    version: v1.8.0\n  gone:\n    version: v1.0.0\n    source: {githubReleases: nobody/gone}\n",
    );
    let partial = dir.join("partial.json");
    let (code, _, err) = online(&["catalog", "export", "--out", &partial.display().to_string()]);
    assert_eq!(code, 1);
    assert!(
        err.contains("nobody/gone") && err.contains("no catalog written"),
        "{err}"
    );
    assert!(!partial.exists());
    assert_eq!(
        fs::read_dir(dir)
            .unwrap()
            .filter(|e| e
                .as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .contains("tmp"))
            .count(),
        0,
        "no temporary file left behind"
    );
}

#[test]
fn sim_serve_answers_like_the_shipped_catalog() {
    use std::io::{BufRead, BufReader};
    use std::process::Stdio;
    let mut server = Command::new(env!("CARGO_BIN_EXE_upkeep"))
        .env("UPKEEP_FORGE_WRITE_INTERVAL_MS", "20")
        .args(["sim", "serve", "--port", "0"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut url = String::new();
    BufReader::new(server.stdout.take().unwrap())
        .read_line(&mut url)
        .unwrap();
    let url = url.trim().trim_start_matches("github=").to_string();
    assert!(url.starts_with("http://127.0.0.1:"), "{url}");
    let ex = example();
    let (code, online, err) = upkeep(&[
        "check",
        "--repo",
        &ex,
        "--now",
        NOW,
        "--output",
        "json",
        "--no-cache",
        "--github-api-url",
        &url,
        "--k3s-channel-url",
        &url,
    ]);
    let _ = server.kill();
    let _ = server.wait();
    assert_eq!(code, 10, "{online}{err}");
    let (_, offline, _) = upkeep(&[
        "check",
        "--repo",
        &ex,
        "--offline",
        "--now",
        NOW,
        "--output",
        "json",
    ]);
    assert_eq!(comparable(&online), comparable(&offline));
}
