//! The OCI registry source against the registry emulator (`upkeep_sim::registry`) over real
//! HTTP on 127.0.0.1: every page of a tag list, the anonymous token flow, private repositories
//! with and without credentials, first-seen dates across runs, and Helm's `_` for `+`. No test
//! here waits on the clock: times are given, or compared with instants taken around a run.

use std::fs;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use upkeep::check;
use upkeep::model::{self, ConfigRepo};
use upkeep::select::Reason;
use upkeep::sources::oci::{self, Credentials, Limits, Reference};
use upkeep::sources::{self, Live, NetConfig, Upstream};
use upkeep_sim::Fault;
use upkeep_sim::registry::{RegistrySim, TokenField};

fn t(s: &str) -> DateTime<Utc> {
    s.parse().unwrap()
}

fn net(cache: Option<&Path>, creds: Option<Credentials>) -> NetConfig {
    NetConfig {
        timeout: Duration::from_secs(5),
        backoff: Duration::from_millis(10),
        cache_dir: cache.map(Path::to_path_buf),
        registry_credentials: creds,
        ..NetConfig::default()
    }
}

fn client(cache: Option<&Path>, creds: Option<Credentials>) -> oci::Client {
    let cfg = net(cache, creds);
    oci::Client::new(
        &cfg,
        sources::cache::Cache::open(cfg.cache_dir.clone()),
        Arc::default(),
    )
    .unwrap()
}

fn load(dir: &Path, versions: &str, policy: Option<&str>) -> model::Loaded {
    fs::create_dir_all(dir.join("policies")).unwrap();
    fs::write(
        dir.join("versions.yaml"),
        format!("apiVersion: upkeep.dev/v1alpha1\nkind: DesiredVersions\ncomponents:\n{versions}"),
    )
    .unwrap();
    if let Some(p) = policy {
        fs::write(
            dir.join("policies/updates.yaml"),
            format!("apiVersion: upkeep.dev/v1alpha1\nkind: Policy\n{p}"),
        )
        .unwrap();
    }
    model::load_repo(dir, Utc::now()).unwrap()
}

fn repo(dir: &Path, versions: &str, policy: Option<&str>) -> ConfigRepo {
    let loaded = load(dir, versions, policy);
    loaded
        .repo
        .unwrap_or_else(|| panic!("{:?}", loaded.diagnostics))
}

/// `1.0.0` .. `1.{minors-1}.{patches-1}`, with cosign's companions of the first, `latest` and a
/// bare digest: the artifacts are never releases.
fn history(minors: u32, patches: u32) -> Vec<String> {
    let mut tags: Vec<String> = (0..minors)
        .flat_map(|m| (0..patches).map(move |p| format!("1.{m}.{p}")))
        .collect();
    let hex = "0123456789abcdef".repeat(4);
    for extra in [
        format!("sha256-{hex}.sig"),
        format!("sha256-{hex}.att"),
        format!("sha256-{hex}.sbom"),
        format!("sha256-{hex}"),
        hex.clone(),
        "latest".into(),
    ] {
        tags.push(extra);
    }
    tags
}

#[tokio::test]
async fn every_page_is_read_through_relative_and_absolute_links() {
    let reg = RegistrySim::start(0).await.unwrap();
    // 230 releases and 6 artifacts, at most 50 a page whatever upkeep asks: 5 pages.
    reg.set_page_cap(50);
    reg.set_tags("acme/app", &history(23, 10));
    let too_long = "9".repeat(oci::MAX_TAG_LEN + 1);
    reg.push_tag("acme/app", &too_long);
    let r = Reference::image(&format!("{}/acme/app", reg.host())).unwrap();
    let c = client(None, None);

    let (tags, invalid) = c.tags(&r).await.unwrap();
    assert_eq!(tags.len(), 230, "every page, artifacts dropped");
    assert_eq!(invalid, 1, "a tag over 128 characters is dropped");
    assert!(tags.iter().all(|t| t.starts_with("1.")), "{tags:?}");
    let n = reg.counters();
    assert_eq!(n.pages, 5);
    // One anonymous token for the whole listing: the first page's 401, then the token.
    assert_eq!((n.token_requests, n.unauthorized), (1, 1));

    // The same through absolute next-page links.
    reg.set_absolute_links(true);
    let (again, _) = c.tags(&r).await.unwrap();
    assert_eq!(again, tags);
    assert_eq!(reg.counters().pages, 10);

    // End to end: the newest release is found on the last page.
    let dir = tempfile::tempdir().unwrap();
    let cfg = repo(
        dir.path(),
        &format!(
            "  app:\n    version: 1.0.0\n    source: {{ociImage: {}/acme/app}}\n    allowed: \">=1.0.0, <2.0.0\"\n",
            reg.host()
        ),
        None,
    );
    let live = Arc::new(Live::new(&net(None, None)).unwrap());
    let report = check::run(live, &cfg, Utc::now(), 4, "live").await;
    let row = &report.components[0];
    assert_eq!(
        row.source.as_deref(),
        Some(&*format!("oci:{}/acme/app", reg.host()))
    );
    assert_eq!(row.releases_seen, 230, "{row:?}");
    assert_eq!(row.newest.as_deref(), Some("v1.22.9"));
}

#[tokio::test]
async fn the_anonymous_token_flow_takes_token_or_access_token_and_renews_an_expired_one() {
    let reg = RegistrySim::start(0).await.unwrap();
    reg.set_tags("acme/app", &["1.0.0", "1.1.0", "1.2.0"]);
    let r = Reference::image(&format!("oci://{}/acme/app", reg.host())).unwrap();
    let c = client(None, None);
    for field in [TokenField::AccessToken, TokenField::Token, TokenField::Both] {
        reg.set_token_field(field);
        let (tags, _) = c.tags(&r).await.unwrap();
        assert_eq!(tags, ["1.0.0", "1.1.0", "1.2.0"], "{field:?}");
    }

    // A token good for one request, pages of one tag: each page's 401 is answered anew.
    reg.set_page_cap(1);
    reg.set_token_uses(Some(1));
    let before = reg.counters();
    let (tags, _) = c.tags(&r).await.unwrap();
    assert_eq!(tags.len(), 3);
    let after = reg.counters();
    assert_eq!(after.pages - before.pages, 3);
    assert_eq!(after.token_requests - before.token_requests, 3);

    // A registry that fails once is asked again.
    reg.set_token_uses(None);
    reg.set_page_cap(100);
    reg.inject("/tags/list", Fault::Status(503), 1);
    assert_eq!(c.tags(&r).await.unwrap().0.len(), 3);

    // A repository the registry does not have: 404 NAME_UNKNOWN, said with the name.
    let missing = Reference::image(&format!("{}/acme/nope", reg.host())).unwrap();
    let e = c.tags(&missing).await.unwrap_err().to_string();
    assert!(
        e.contains("has no repository acme/nope") && e.contains("NAME_UNKNOWN"),
        "{e}"
    );
}

#[tokio::test]
async fn a_private_repository_is_read_with_credentials_and_refused_clearly_without() {
    let reg = RegistrySim::start(0).await.unwrap();
    reg.set_tags("acme/secret", &["2.0.0", "2.1.0"]);
    reg.set_private("acme/secret", &["robot"]);
    reg.add_user("robot", "hunter2-pat");
    reg.add_user("other", "pw-of-other");
    let host = reg.host();
    let dir = tempfile::tempdir().unwrap();
    let cfg = repo(
        dir.path(),
        &format!("  secret:\n    version: 2.0.0\n    source: {{ociImage: {host}/acme/secret}}\n"),
        None,
    );
    let comp = &cfg.components[0];

    // Anonymous: the token has no access and the registry says 401 insufficient_scope.
    let live = Live::new(&net(None, None)).unwrap();
    let e = live
        .fetch(comp, &sources::Run::default())
        .await
        .unwrap_err();
    assert_eq!(e.kind(), "oci");
    let msg = e.to_string();
    assert!(
        msg.contains("without credentials")
            && msg.contains("acme/secret")
            && msg.contains(&format!("credentials for {host}"))
            && msg.contains("--registry-config"),
        "{msg}"
    );

    // Wrong password: the token service refuses it, and says which entry to fix.
    let mut wrong = Credentials::default();
    wrong.insert(&host, "robot", "not-the-password");
    let e = Live::new(&net(None, Some(wrong)))
        .unwrap()
        .fetch(comp, &sources::Run::default())
        .await
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("refused the credentials") && !e.contains("not-the-password"),
        "{e}"
    );

    // A user without access to the repository: denied, with credentials.
    let mut other = Credentials::default();
    other.insert(&host, "other", "pw-of-other");
    let e = Live::new(&net(None, Some(other)))
        .unwrap()
        .fetch(comp, &sources::Run::default())
        .await
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("denied") && e.contains("with the credentials"),
        "{e}"
    );

    // The right credentials, from a Docker config file as --registry-config reads it.
    let config = dir.path().join("config.json");
    let auth = "cm9ib3Q6aHVudGVyMi1wYXQ="; // base64 of robot:hunter2-pat
    fs::write(
        &config,
        format!(r#"{{"auths": {{"http://{host}/v2/": {{"auth": "{auth}"}}}}}}"#),
    )
    .unwrap();
    let creds = Credentials::from_file(&config).unwrap();
    let f = Live::new(&net(None, Some(creds)))
        .unwrap()
        .fetch(comp, &sources::Run::default())
        .await
        .unwrap();
    let tags: Vec<&str> = f.releases.iter().map(|r| r.tag.as_str()).collect();
    assert_eq!(tags, ["2.0.0", "2.1.0"]);

    // No error said any token the registry handed out.
    for token in reg.issued_tokens() {
        for m in [&msg, &e] {
            assert!(!m.contains(&token), "{m}");
        }
    }

    // A registry with Basic auth only (no token service): the same credentials, sent directly.
    reg.require_basic(true);
    let e = Live::new(&net(None, None))
        .unwrap()
        .fetch(comp, &sources::Run::default())
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("without credentials"), "{e}");
    let f = Live::new(&net(None, Some(Credentials::from_file(&config).unwrap())))
        .unwrap()
        .fetch(comp, &sources::Run::default())
        .await
        .unwrap();
    assert_eq!(f.releases.len(), 2);
}

#[tokio::test]
async fn first_seen_dates_persist_across_runs_and_a_new_tag_is_young() {
    let reg = RegistrySim::start(0).await.unwrap();
    reg.set_tags("acme/app", &["1.0.0", "1.0.1", "1.1.0"]);
    let r = Reference::image(&format!("{}/acme/app", reg.host())).unwrap();
    let cache = tempfile::tempdir().unwrap();
    let dates = |l: &oci::Listing| -> Vec<(String, Option<DateTime<Utc>>)> {
        l.tags
            .iter()
            .map(|t| (t.name.clone(), t.first_seen))
            .collect()
    };

    // Run 1 (its own process: a new client on the same cache directory).
    let t1 = t("2026-11-01T00:00:00Z");
    let first = client(Some(cache.path()), None).list(&r, t1).await.unwrap();
    assert!(first.tags.iter().all(|x| x.first_seen == Some(t1) && x.new));

    // Run 2, 20 days later, after a push: the old tags keep their first sighting.
    reg.push_tag("acme/app", "1.2.0");
    let t2 = t("2026-11-21T00:00:00Z");
    let second = client(Some(cache.path()), None).list(&r, t2).await.unwrap();
    assert_eq!(
        dates(&second),
        [
            ("1.0.0".to_string(), Some(t1)),
            ("1.0.1".to_string(), Some(t1)),
            ("1.1.0".to_string(), Some(t1)),
            ("1.2.0".to_string(), Some(t2)),
        ]
    );
    assert_eq!(
        second.tags.iter().filter(|x| x.new).count(),
        1,
        "only 1.2.0 is new"
    );

    // Without a cache directory there are no dates at all.
    let bare = client(None, None).list(&r, t2).await.unwrap();
    assert!(bare.tags.iter().all(|x| x.first_seen.is_none()));

    // Through `check` with a minimum age: the tags first seen now are too young; the dates
    // persist from one run to the next.
    let dir = tempfile::tempdir().unwrap();
    let versions = format!(
        "  app:\n    version: 1.0.0\n    source: {{ociImage: {}/acme/app}}\n",
        reg.host()
    );
    let policy = "updates:\n  - name: wait\n    components: [app]\n    minimumReleaseAge: 3d\n";
    let cfg = repo(dir.path(), &versions, Some(policy));
    let cache2 = tempfile::tempdir().unwrap();
    let run_at = Utc::now();
    let live = Arc::new(Live::new(&net(Some(cache2.path()), None)).unwrap());
    let report = check::run(live, &cfg, run_at, 4, "live").await;
    let row = &report.components[0];
    assert!(row.next.is_none(), "{row:?}");
    match &row.reason {
        Some(Reason::TooYoung {
            published_at,
            eligible_at,
            ..
        }) => {
            // New in this run: dated at the run's `now`, not a moment after (which would read
            // as "published later" and hide it).
            assert_eq!(*published_at, run_at);
            assert_eq!(*eligible_at, run_at + chrono::Duration::days(3));
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(row.releases_seen, 4);

    // The next run (a new process) reads the first sightings back: the instant run 1 saw the
    // tags (recorded as the clock said then; run 1 reported them at its `now`, just before),
    // not this run's `now`.
    let again_at = Utc::now();
    let live = Arc::new(Live::new(&net(Some(cache2.path()), None)).unwrap());
    let report = check::run(live, &cfg, again_at, 4, "live").await;
    match &report.components[0].reason {
        Some(Reason::TooYoung { published_at, .. }) => {
            assert!(
                run_at <= *published_at && *published_at < again_at,
                "{published_at}"
            )
        }
        other => panic!("{other:?}"),
    }

    // Without a cache there is no date: a minimum age holds the release back.
    let live = Arc::new(Live::new(&net(None, None)).unwrap());
    let report = check::run(live, &cfg, Utc::now(), 4, "live").await;
    assert!(
        matches!(
            report.components[0].reason,
            Some(Reason::NoTimestamp { .. })
        ),
        "{:?}",
        report.components[0].reason
    );

    // A damaged record is discarded: every tag is new (young) again, never old.
    for e in fs::read_dir(cache2.path()).unwrap() {
        fs::write(e.unwrap().path(), b"{\"format\": 1, \"repos").unwrap();
    }
    let third_at = Utc::now();
    let live = Arc::new(Live::new(&net(Some(cache2.path()), None)).unwrap());
    let report = check::run(live, &cfg, third_at, 4, "live").await;
    match &report.components[0].reason {
        Some(Reason::TooYoung { published_at, .. }) => assert_eq!(*published_at, third_at),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn a_chart_in_an_oci_repository_with_a_plus_version() {
    let reg = RegistrySim::start(0).await.unwrap();
    // Helm pushes 0.21.0+up1.2.3 as the tag 0.21.0_up1.2.3.
    reg.set_tags(
        "charts/flux-operator",
        &[
            "0.20.0",
            "0.21.0_up1.2.3",
            "sha256-0123456789abcdef0123456789abcdef.sig",
        ],
    );
    let dir = tempfile::tempdir().unwrap();
    let repository = format!("oci://{}/charts", reg.host());
    let cfg = repo(
        dir.path(),
        &format!(
            "  flux-operator:\n    version: 0.20.0\n    source:\n      helmChart: {{repository: {repository}, chart: flux-operator}}\n"
        ),
        None,
    );
    let live = Arc::new(Live::new(&net(None, None)).unwrap());
    let report = check::run(live, &cfg, Utc::now(), 4, "live").await;
    let row = &report.components[0];
    assert_eq!(
        row.source.as_deref(),
        Some(&*format!("helm:{repository}#flux-operator"))
    );
    assert_eq!(
        row.next.as_ref().map(|n| n.version.as_str()),
        Some("0.21.0+up1.2.3"),
        "{row:?}"
    );
    assert_eq!(row.releases_seen, 2);
}

#[tokio::test]
async fn a_repository_shared_by_components_is_listed_once_per_run() {
    let reg = RegistrySim::start(0).await.unwrap();
    reg.set_tags("acme/app", &["1.0.0", "1.0.1"]);
    let host = reg.host();
    let dir = tempfile::tempdir().unwrap();
    // The same repository, written two ways: one listing.
    let cfg = repo(
        dir.path(),
        &format!(
            "  a:\n    version: 1.0.0\n    source: {{ociImage: {host}/acme/app}}\n  b:\n    version: 1.0.0\n    source: {{ociImage: \"oci://{host}/acme/app\"}}\n"
        ),
        None,
    );
    let live = Arc::new(Live::new(&net(None, None)).unwrap());
    let report = check::run(live, &cfg, Utc::now(), 4, "live").await;
    for row in &report.components {
        assert_eq!(row.next.as_ref().map(|n| n.version.as_str()), Some("1.0.1"));
    }
    assert_eq!(reg.counters().pages, 1);
    assert_eq!(reg.counters().token_requests, 1);
}

#[tokio::test]
async fn bounds_fail_clearly_and_a_looping_link_is_not_followed() {
    let reg = RegistrySim::start(0).await.unwrap();
    reg.set_tags("acme/nightly", &history(10, 10));
    reg.set_page_cap(10);
    let r = Reference::image(&format!("{}/acme/nightly", reg.host())).unwrap();

    let pages = client(None, None).with_limits(Limits {
        page_size: 10,
        max_pages: 3,
        max_tags: 1_000,
    });
    let e = pages.tags(&r).await.unwrap_err().to_string();
    assert!(e.contains("more than 3 pages"), "{e}");
    assert_eq!(reg.counters().pages, 3);

    let tags = client(None, None).with_limits(Limits {
        page_size: 10,
        max_pages: 100,
        max_tags: 25,
    });
    let e = tags.tags(&r).await.unwrap_err().to_string();
    assert!(
        e.contains("more than 25 tags") && e.contains("githubReleases"),
        "{e}"
    );

    // A next-page link back to the same page: one request, what it had, no loop.
    let before = reg.counters().pages;
    reg.inject("/v2/acme/nightly/tags/list", Fault::SelfLink, 1_000);
    let (got, _) = client(None, None).tags(&r).await.unwrap();
    assert_eq!(
        got.len(),
        9,
        "the first page: ten tags, one of them a bare digest"
    );
    assert_eq!(reg.counters().pages - before, 1);
}

#[test]
fn oci_sources_are_checked_with_file_line_and_column() {
    let dir = tempfile::tempdir().unwrap();
    let loaded = load(
        dir.path(),
        "  app:\n    version: 1.0.0\n    source: {ociImage: \"ghcr.io/acme/app:v1\"}\n  chart:\n    version: 1.0.0\n    source:\n      helmChart: {repository: \"oci://ghcr.io/Acme\", chart: app}\n  both:\n    version: 1.0.0\n    source:\n      helmChart: {repository: \"oci://ghcr.io/acme\", chart: app}\n      ociImage: ghcr.io/acme/app\n  fine:\n    version: 1.0.0\n    source:\n      helmChart: {repository: \"oci://ghcr.io/controlplaneio-fluxcd/charts\", chart: flux-operator}\n",
        None,
    );
    let text: Vec<String> = loaded.diagnostics.iter().map(|d| d.to_string()).collect();
    let find = |needle: &str| {
        text.iter()
            .find(|d| d.contains(needle))
            .unwrap_or_else(|| panic!("no `{needle}` in {text:#?}"))
            .clone()
    };
    assert!(
        find("is not an OCI image repository").starts_with("versions.yaml:6:24: error:"),
        "{text:#?}"
    );
    assert!(find("it has a tag").contains("without :TAG"), "{text:#?}");
    assert!(
        find("is not an OCI chart repository").starts_with("versions.yaml:10:31:"),
        "{text:#?}"
    );
    assert!(
        find("both helmChart and ociImage").starts_with("versions.yaml:15:17:"),
        "{text:#?}"
    );
    // An OCI chart source is no longer a warning that upkeep cannot read it.
    assert!(
        !text.iter().any(|d| d.contains("does not read yet")),
        "{text:#?}"
    );
    assert_eq!(text.len(), 3, "{text:#?}");
}
