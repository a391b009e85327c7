//! The live sources against the upstream simulator over real HTTP on 127.0.0.1: real tags,
//! pagination, ETags and 304s, rate limits and faults, the channel server and Helm indexes, and
//! exact selections on real release histories.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use serde_json::Value;
use upkeep::check;
use upkeep::model::{self, ConfigRepo};
use upkeep::report::Status;
use upkeep::sources::{self, Live, NetConfig, Secret, Upstream, github};
use upkeep_sim::Fault;
use upkeep_sim::upstream::{
    SimRelease, UpstreamSim, helm_index, releases_from_list, releases_from_tsv,
};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn fixture(name: &str) -> String {
    fs::read_to_string(root().join("tests/fixtures").join(name)).unwrap()
}

const NOW: &str = "2026-11-21T12:00:00Z";

fn now() -> DateTime<Utc> {
    NOW.parse().unwrap()
}

/// A simulator with the real histories of k3s, Longhorn and Flux, and a channel server.
async fn sim() -> UpstreamSim {
    let sim = UpstreamSim::start(0).await.unwrap();
    sim.set_releases(
        "k3s-io/k3s",
        releases_from_list(
            &fixture("releases/k3s-versions.txt"),
            upkeep::versions::Scheme::K3s,
        ),
    );
    sim.set_releases(
        "longhorn/longhorn",
        releases_from_tsv(&fixture("releases/longhorn-tags.tsv")),
    );
    sim.set_releases(
        "fluxcd/flux2",
        releases_from_tsv(&fixture("releases/flux2-tags.tsv")),
    );
    sim.set_channels(&[
        ("stable", "v1.33.12+k3s1"),
        ("latest", "v1.35.5+k3s1"),
        ("v1.32", "v1.32.13+k3s1"),
    ]);
    sim
}

fn net(sim: &UpstreamSim, cache: Option<&Path>) -> NetConfig {
    NetConfig {
        github_api_url: sim.url(),
        k3s_channel_url: Some(sim.url()),
        timeout: Duration::from_secs(5),
        backoff: Duration::from_millis(10),
        max_wait: Duration::from_secs(3),
        cache_dir: cache.map(Path::to_path_buf),
        ..NetConfig::default()
    }
}

fn repo(dir: &Path, versions: &str) -> ConfigRepo {
    fs::create_dir_all(dir.join("policies")).unwrap();
    fs::write(
        dir.join("versions.yaml"),
        format!("apiVersion: upkeep.dev/v1alpha1\nkind: DesiredVersions\ncomponents:\n{versions}"),
    )
    .unwrap();
    let loaded = model::load_repo(dir, now()).unwrap();
    loaded
        .repo
        .unwrap_or_else(|| panic!("{:?}", loaded.diagnostics))
}

// The served JSON matches GitHub's REST API description (tests/common/openapi.rs).
mod common;
use common::openapi::OpenApi;

#[tokio::test]
async fn served_releases_validate_against_githubs_openapi_schema() {
    let sim = sim().await;
    let api = OpenApi::load();
    let schema = api.0["paths"]["/repos/{owner}/{repo}/releases"]["get"]["responses"]["200"]
        ["content"]["application/json"]["schema"]
        .clone();
    let text = ua_get(format!(
        "{}/repos/longhorn/longhorn/releases?per_page=100",
        sim.url()
    ))
    .await
    .unwrap()
    .text()
    .await
    .unwrap();
    let body: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(body.as_array().unwrap().len(), 100);
    let mut errs = Vec::new();
    api.check(&schema, &body, "$", &mut errs);
    assert!(errs.is_empty(), "{errs:#?}");
    // The validator does catch a broken object.
    let mut bad = body[0].clone();
    bad.as_object_mut().unwrap().remove("tag_name");
    bad["draft"] = Value::String("no".into());
    let mut errs = Vec::new();
    api.check(&schema, &Value::Array(vec![bad]), "$", &mut errs);
    assert_eq!(errs.len(), 2, "{errs:#?}");
    // The error shape of a 404 too.
    let resp = ua_get(format!("{}/repos/no/such/releases", sim.url()))
        .await
        .unwrap();
    assert_eq!(resp.status(), 404);
    let body: Value = serde_json::from_str(&resp.text().await.unwrap()).unwrap();
    let mut errs = Vec::new();
    api.check(
        &api.0["components"]["schemas"]["basic-error"],
        &body,
        "$",
        &mut errs,
    );
    assert!(errs.is_empty(), "{errs:#?}");
}

#[tokio::test]
async fn all_pages_are_read_and_an_unchanged_repo_costs_one_304() {
    let sim = sim().await;
    let cache = tempfile::tempdir().unwrap();
    let live = Live::new(&net(&sim, Some(cache.path()))).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let r = repo(dir.path(), "  longhorn:\n    version: v1.6.2\n");
    let c = &r.components[0];

    let cold = live.fetch(c, &sources::Run::default()).await.unwrap();
    assert_eq!(cold.source, "github:longhorn/longhorn");
    assert_eq!(cold.releases.len(), 416, "five pages of 100");
    assert_eq!(sim.counters().requests, 5);
    assert_eq!(live.stats.snapshot().requests, 5);
    assert!(
        cold.releases[0]
            .notes
            .as_deref()
            .unwrap()
            .contains("Release notes")
    );

    // Warm: one conditional request, answered 304; the same releases from the cache.
    let before = sim.counters();
    let warm = live.fetch(c, &sources::Run::default()).await.unwrap();
    assert_eq!(warm, cold);
    let after = sim.counters();
    assert_eq!(after.requests - before.requests, 1);
    assert_eq!(after.not_modified - before.not_modified, 1);

    // A new release changes page 1: all pages are asked again, the unchanged ones answer 304.
    sim.publish(
        "longhorn/longhorn",
        SimRelease::new("v1.12.2", Some("2026-11-01T00:00:00Z".parse().unwrap())),
    );
    let before = sim.counters();
    let fresh = live.fetch(c, &sources::Run::default()).await.unwrap();
    assert_eq!(fresh.releases.len(), 417);
    assert_eq!(fresh.releases[0].tag, "v1.12.2");
    assert_eq!(sim.counters().requests - before.requests, 5);

    // A new process with the same cache directory starts warm.
    let live2 = Live::new(&net(&sim, Some(cache.path()))).unwrap();
    let before = sim.counters();
    assert_eq!(
        live2.fetch(c, &sources::Run::default()).await.unwrap(),
        fresh
    );
    assert_eq!(sim.counters().requests - before.requests, 1);

    // A corrupt cache is discarded with a warning and costs a cold read, never a failure.
    for e in fs::read_dir(cache.path()).unwrap() {
        fs::write(e.unwrap().path(), b"\x00garbage").unwrap();
    }
    let live3 = Live::new(&net(&sim, Some(cache.path()))).unwrap();
    assert_eq!(
        live3.fetch(c, &sources::Run::default()).await.unwrap(),
        fresh
    );
}

#[tokio::test]
async fn server_errors_and_broken_answers_are_retried_then_reported() {
    let sim = sim().await;
    let live = Live::new(&net(&sim, None)).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let r = repo(dir.path(), "  flux:\n    version: v2.3.0\n");
    let c = &r.components[0];

    // One 500 and one truncated body: retried, then fine.
    sim.inject("/repos/fluxcd/flux2", Fault::Status(500), 1);
    sim.inject("/repos/fluxcd/flux2", Fault::Truncate, 1);
    let f = live.fetch(c, &sources::Run::default()).await.unwrap();
    assert_eq!(f.releases.len(), 214);

    // 500 on every try: the error names the status and the repository, after 1 + 2 retries.
    sim.inject("/repos/fluxcd/flux2", Fault::Status(502), 10);
    let before = sim.counters().requests;
    let e = live
        .fetch(c, &sources::Run::default())
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("502") && e.contains("fluxcd/flux2"), "{e}");
    assert_eq!(sim.counters().requests - before, 3);
}

#[tokio::test]
async fn a_slow_answer_times_out_with_a_clear_error() {
    let sim = sim().await;
    let cfg = NetConfig {
        timeout: Duration::from_millis(300),
        retries: 0,
        ..net(&sim, None)
    };
    let live = Live::new(&cfg).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let r = repo(dir.path(), "  flux:\n    version: v2.3.0\n");
    sim.inject(
        "/repos/fluxcd/flux2",
        Fault::Delay(Duration::from_secs(3)),
        1,
    );
    let t = Instant::now();
    let e = live
        .fetch(&r.components[0], &sources::Run::default())
        .await
        .unwrap_err();
    assert!(t.elapsed() < Duration::from_secs(3));
    assert!(
        matches!(e, sources::Error::Github(github::Error::Timeout { .. })),
        "{e}"
    );
}

#[tokio::test]
async fn rate_limits_are_waited_out_when_short_and_skip_every_github_source_when_long() {
    let sim = sim().await;
    let live = Live::new(&net(&sim, None)).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let r = repo(
        dir.path(),
        "  flux:\n    version: v2.3.0\n  longhorn:\n    version: v1.6.2\n",
    );

    // 429 with Retry-After: 1 is waited out (max_wait is 3 s).
    sim.inject(
        "/repos/fluxcd/flux2",
        Fault::TooManyRequests { retry_after: 1 },
        1,
    );
    let t = Instant::now();
    live.fetch(&r.components[0], &sources::Run::default())
        .await
        .unwrap();
    assert!(t.elapsed() >= Duration::from_millis(900));

    // A primary limit that resets in an hour: this source fails at once with the reset time, and
    // the next GitHub source is skipped without a request.
    sim.inject(
        "/repos/fluxcd/flux2",
        Fault::RateLimit { reset_in: 3600 },
        1,
    );
    let e = live
        .fetch(&r.components[0], &sources::Run::default())
        .await
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("rate limit") && e.contains("GITHUB_TOKEN"),
        "{e}"
    );
    let before = sim.counters().requests;
    let e2 = live
        .fetch(&r.components[1], &sources::Run::default())
        .await
        .unwrap_err()
        .to_string();
    assert!(e2.contains("rate limit") && e2.contains("longhorn"), "{e2}");
    assert_eq!(sim.counters().requests, before, "no request while limited");

    // A secondary limit without headers means at least a minute: skipped, not hammered.
    let live = Live::new(&net(&sim, None)).unwrap();
    sim.inject("/repos/fluxcd/flux2", Fault::SecondaryRateLimit, 5);
    let before = sim.counters().requests;
    let e = live
        .fetch(&r.components[0], &sources::Run::default())
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("rate limit"), "{e}");
    assert_eq!(sim.counters().requests - before, 1);
}

#[tokio::test]
async fn a_token_is_sent_when_given_and_its_absence_is_explained() {
    let sim = sim().await;
    sim.require_token("ghp_test_token_123");
    let dir = tempfile::tempdir().unwrap();
    let r = repo(dir.path(), "  flux:\n    version: v2.3.0\n");
    let anon = Live::new(&net(&sim, None)).unwrap();
    let e = anon
        .fetch(&r.components[0], &sources::Run::default())
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("401") && e.contains("GITHUB_TOKEN"), "{e}");
    let cfg = NetConfig {
        github_token: Some(Secret::new("ghp_test_token_123")),
        ..net(&sim, None)
    };
    let authed = Live::new(&cfg).unwrap();
    authed
        .fetch(&r.components[0], &sources::Run::default())
        .await
        .unwrap();
}

#[tokio::test]
async fn helm_indexes_and_channels_feed_selection() {
    let sim = sim().await;
    sim.set_chart_index(
        "jetstack",
        &helm_index(
            "cert-manager",
            &[
                ("v1.18.2", "2025-07-01T00:00:00Z"),
                ("v1.18.3", "2025-08-01T00:00:00Z"),
                ("v1.19.0", "2026-11-20T00:00:00Z"),
                ("v2.0.0", "2026-10-01T00:00:00Z"),
            ],
        ),
    );
    let dir = tempfile::tempdir().unwrap();
    let url = format!("{}/helm/jetstack", sim.url());
    fs::create_dir_all(dir.path().join("policies")).unwrap();
    fs::write(
        dir.path().join("policies/updates.yaml"),
        "apiVersion: upkeep.dev/v1alpha1\nkind: Policy\nupdates:\n  - name: wait\n    components: [cert-manager]\n    minimumReleaseAge: {minor: 7d}\n",
    )
    .unwrap();
    let r = repo(
        dir.path(),
        &format!(
            "  cert-manager:\n    version: v1.18.2\n    source:\n      helmChart: {{repository: {url}, chart: cert-manager}}\n    allowed: \">=1.18.0, <2.0.0\"\n  k3s:\n    version: v1.31.4+k3s1\n"
        ),
    );
    let live = Arc::new(Live::new(&net(&sim, None)).unwrap());
    let report = check::run(live, &r, now(), 4, "live").await;
    let cm = &report.components[0];
    assert_eq!(
        cm.source.as_deref(),
        Some(&*format!("helm:{url}#cert-manager"))
    );
    // v1.19.0 is a day old (minor gate 7d), v2.0.0 is outside `allowed`: the patch is next.
    assert_eq!(cm.next.as_ref().unwrap().version, "v1.18.3");
    assert_eq!(cm.newest.as_deref(), Some("v1.19.0"));
    assert!(matches!(
        cm.held,
        Some(upkeep::select::Reason::TooYoung { .. })
    ));

    // k3s from v1.31.4+k3s1 on `stable` (v1.33.12+k3s1 here): never a minor skip.
    let k = &report.components[1];
    assert_eq!(k.channel_latest.as_deref(), Some("v1.33.12+k3s1"));
    assert_eq!(k.next.as_ref().unwrap().version, "v1.32.13+k3s1");
    assert_eq!(k.path, ["v1.32.13+k3s1", "v1.33.12+k3s1"]);
    assert_eq!(report.exit_code(), 10);

    // A chart that is not in the index, and an unknown channel, are named.
    let r = repo(
        dir.path(),
        &format!(
            "  cert-manager:\n    version: v1.18.2\n    source:\n      helmChart: {{repository: {url}, chart: cert-manger}}\n"
        ),
    );
    let live = Arc::new(Live::new(&net(&sim, None)).unwrap());
    let report = check::run(live, &r, now(), 4, "live").await;
    let msg = format!("{:?}", report.components[0].reason);
    assert!(msg.contains("did you mean `cert-manager`"), "{msg}");
}

#[tokio::test]
async fn exact_selections_on_real_histories() {
    let sim = sim().await;
    let dir = tempfile::tempdir().unwrap();
    let r = repo(
        dir.path(),
        "  k3s:\n    version: v1.31.4+k3s1\n  longhorn:\n    version: v1.6.2\n  flux:\n    version: v2.3.0\n",
    );
    sim.set_channels(&[("stable", "v1.35.5+k3s1")]);
    let live = Arc::new(Live::new(&net(&sim, None)).unwrap());
    let report = check::run(live, &r, now(), 4, "live").await;
    let row = |n: &str| report.components.iter().find(|c| c.name == n).unwrap();

    let k3s = row("k3s");
    assert_eq!(k3s.next.as_ref().unwrap().version, "v1.32.13+k3s1");
    assert_eq!(
        k3s.path,
        [
            "v1.32.13+k3s1",
            "v1.33.12+k3s1",
            "v1.34.8+k3s1",
            "v1.35.5+k3s1"
        ]
    );
    let lh = row("longhorn");
    assert_eq!(lh.next.as_ref().unwrap().version, "v1.7.3");
    assert_eq!(
        lh.path,
        [
            "v1.7.3", "v1.8.2", "v1.9.2", "v1.10.2", "v1.11.3", "v1.12.1"
        ]
    );
    assert_eq!(lh.status, Status::UpdateAvailable);
    // Flux allows minor steps of any size (flux-operator refuses only downgrades of a minor).
    let flux = row("flux");
    assert_eq!(flux.next.as_ref().unwrap().version, "v2.9.4");
    assert_eq!(flux.path_length, 1);
    assert!(
        flux.next
            .as_ref()
            .unwrap()
            .url
            .as_deref()
            .unwrap()
            .ends_with("/v2.9.4")
    );
}

#[tokio::test]
async fn a_failing_source_marks_only_its_rows() {
    let sim = sim().await;
    let dir = tempfile::tempdir().unwrap();
    let r = repo(
        dir.path(),
        "  flux:\n    version: v2.3.0\n  longhorn:\n    version: v1.6.2\n    source: {githubReleases: longhorn/gone}\n",
    );
    let live = Arc::new(Live::new(&net(&sim, None)).unwrap());
    let report = check::run(live, &r, now(), 4, "live").await;
    assert_eq!(report.components[0].status, Status::UpdateAvailable);
    assert_eq!(report.components[1].status, Status::Failed);
    assert_eq!(report.exit_code(), 1);
    let table = upkeep::report::table(&report, false);
    assert!(table.contains("source failed"), "{table}");
    assert!(
        table.contains("GitHub has no repository longhorn/gone"),
        "{table}"
    );
}

#[test]
fn the_cli_reads_github_through_the_flags_and_env() {
    let sim = UpstreamSim::start_in_thread().unwrap();
    sim.set_releases(
        "longhorn/longhorn",
        releases_from_tsv(&fixture("releases/longhorn-tags.tsv")),
    );
    let dir = tempfile::tempdir().unwrap();
    repo(dir.path(), "  longhorn:\n    version: v1.6.2\n");
    let token = dir.path().join("token");
    fs::write(&token, "ghp_cli_secret_987\n").unwrap();
    sim.require_token("ghp_cli_secret_987");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_upkeep"))
        .env("UPKEEP_FORGE_WRITE_INTERVAL_MS", "20")
        .args(["check", "--output", "json", "--now", NOW, "--repo"])
        .arg(dir.path())
        .arg("--github-token-file")
        .arg(&token)
        .arg("--cache-dir")
        .arg(dir.path().join("cache"))
        .env("UPKEEP_GITHUB_API_URL", sim.url())
        .env("UPKEEP_LOG", "debug")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(10), "{stdout}{stderr}");
    let v: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(v["components"][0]["next"]["version"], "v1.7.3");
    assert!(
        !stderr.contains("ghp_cli_secret_987") && !stdout.contains("ghp_cli_secret_987"),
        "the token never reaches the logs"
    );
}

/// Components that share a repository, a chart index or a channel server fetch it once per run,
/// however many there are (as Renovate looks each package source up once); the next run fetches
/// again, so a channel that moved between runs is seen by a long-lived controller.
#[tokio::test]
async fn a_shared_source_is_fetched_once_per_run() {
    let sim = sim().await;
    sim.set_chart_index(
        "charts",
        &helm_index(
            "app",
            &[
                ("1.0.0", "2025-07-01T00:00:00Z"),
                ("1.0.1", "2025-08-01T00:00:00Z"),
            ],
        ),
    );
    sim.set_releases(
        "acme/tools",
        vec![
            SimRelease::new("v2.0.0", Some("2025-01-01T00:00:00Z".parse().unwrap())),
            SimRelease::new("v2.0.1", Some("2025-02-01T00:00:00Z".parse().unwrap())),
        ],
    );
    let dir = tempfile::tempdir().unwrap();
    let helm = format!("{}/helm/charts", sim.url());
    let r = repo(
        dir.path(),
        &format!(
            "  a:\n    version: 1.0.0\n    source: {{helmChart: {{repository: {helm}, chart: app}}}}\n  b:\n    version: 1.0.0\n    source: {{helmChart: {{repository: {helm}/, chart: app}}}}\n  c:\n    version: v2.0.0\n    source: {{githubReleases: acme/tools}}\n  d:\n    version: v2.0.0\n    source: {{githubReleases: acme/tools}}\n  k3s:\n    version: v1.33.4+k3s1\n    track: stable\n  k3s-b:\n    version: v1.33.4+k3s1\n    track: latest\n    scheme: k3s\n    source: {{githubReleases: k3s-io/k3s, channelServer: https://update.k3s.io}}\n"
        ),
    );
    let live = Arc::new(Live::new(&net(&sim, None)).unwrap());
    let before = sim.counters().requests;
    let report = check::run(live.clone(), &r, now(), 4, "live").await;
    for row in &report.components {
        assert!(
            row.reason
                .as_ref()
                .is_none_or(|r| !matches!(r, upkeep::select::Reason::SourceFailed { .. })),
            "{row:?}"
        );
    }
    let pages = |repo: &str| -> u64 {
        // k3s' real history is more than one page of 100.
        let n = releases_from_list(
            &fixture("releases/k3s-versions.txt"),
            upkeep::versions::Scheme::K3s,
        )
        .len();
        if repo == "k3s" {
            n.div_ceil(100) as u64
        } else {
            1
        }
    };
    // One index, one repository, one channel collection, and k3s' release pages once.
    assert_eq!(sim.counters().requests - before, 3 + pages("k3s"));
    assert_eq!(
        report.components[1]
            .next
            .as_ref()
            .map(|n| n.version.as_str()),
        Some("1.0.1")
    );
    assert_eq!(
        report.components[3]
            .next
            .as_ref()
            .map(|n| n.version.as_str()),
        Some("v2.0.1")
    );
    assert_eq!(
        report.components[4].channel_latest.as_deref(),
        Some("v1.33.12+k3s1")
    );

    // The next run on the same sources reads the channel server again.
    sim.set_channels(&[("stable", "v1.34.8+k3s1"), ("latest", "v1.35.5+k3s1")]);
    let report = check::run(live, &r, now(), 4, "live").await;
    assert_eq!(
        report.components[4].channel_latest.as_deref(),
        Some("v1.34.8+k3s1")
    );
}

/// A next-page link that points back at the page (a broken server or proxy) costs one request,
/// not one per page up to the limit.
#[tokio::test]
async fn a_next_page_link_to_the_same_page_is_not_followed() {
    let sim = sim().await;
    sim.set_releases(
        "acme/loop",
        vec![SimRelease::new(
            "v1.0.0",
            Some("2025-01-01T00:00:00Z".parse().unwrap()),
        )],
    );
    sim.inject(
        "/repos/acme/loop/releases",
        upkeep_sim::Fault::SelfLink,
        1_000,
    );
    let dir = tempfile::tempdir().unwrap();
    let r = repo(
        dir.path(),
        "  tool:\n    version: v1.0.0\n    source: {githubReleases: acme/loop}\n",
    );
    let live = Live::new(&net(&sim, None)).unwrap();
    let before = sim.counters().requests;
    let f = live
        .fetch(&r.components[0], &sources::Run::default())
        .await
        .unwrap();
    assert_eq!(f.releases.len(), 1);
    assert_eq!(sim.counters().requests - before, 1);
}

/// A GET with a User-Agent, as GitHub requires of every client.
async fn ua_get(url: String) -> reqwest::Result<reqwest::Response> {
    reqwest::Client::builder()
        .user_agent("upkeep-test")
        .build()?
        .get(url)
        .send()
        .await
}
