//! Foundation benchmarks: `cargo bench --bench foundation`. Prints one line per measurement
//! (median, min and max over the runs); docs/benchmarks.md records the figures.

use std::hint::black_box;
use std::path::Path;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use upkeep::versions::{Scheme, parse_all};

fn measure(name: &str, runs: usize, mut f: impl FnMut()) {
    f(); // warm-up
    let mut times: Vec<Duration> = (0..runs)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed()
        })
        .collect();
    times.sort();
    println!(
        "{name:<48} median {:>9.3} ms   min {:>9.3} ms   max {:>9.3} ms   ({runs} runs)",
        ms(times[runs / 2]),
        ms(times[0]),
        ms(times[runs - 1])
    );
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn main() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let now: DateTime<Utc> = DateTime::parse_from_rfc3339("2026-11-21T12:00:00Z")
        .unwrap()
        .with_timezone(&Utc);

    let example = root.join("examples/cluster-repo");
    measure("validate examples/cluster-repo", 200, || {
        let l = upkeep::model::load_repo(&example, now).unwrap();
        assert!(l.repo.is_some());
        black_box(l);
    });

    // Issue 17: sixteen per-minute windows once took 27-37 s (the "can never open" check grew
    // with the square of the occurrences); now one bounded sweep.
    let minutes = root.join("tests/corpus/many-per-minute-windows");
    measure("validate 16 per-minute windows", 20, || {
        let l = upkeep::model::load_repo(&minutes, now).unwrap();
        assert!(l.repo.is_some());
        black_box(l);
    });

    let tags =
        std::fs::read_to_string(root.join("tests/fixtures/releases/k3s-versions.txt")).unwrap();
    measure("parse + order the 896 real k3s tags", 200, || {
        let (mut ok, _) = parse_all(tags.lines(), Scheme::K3s);
        ok.sort();
        black_box(ok);
    });

    // Selection over 10,000 releases of one component (issue 3's target: under 5 ms).
    let releases: Vec<upkeep::select::Release> = (0..10_000u64)
        .map(|i| upkeep::select::Release {
            version: upkeep::versions::parse(
                &format!("v1.{}.{}", i / 100, i % 100),
                Scheme::Semver,
            )
            .unwrap(),
            published_at: Some(now - chrono::Duration::hours(10_000 - i as i64)),
            prerelease: false,
            draft: false,
        })
        .collect();
    let component = upkeep::model::Component {
        name: "bench".into(),
        version: upkeep::versions::parse("v1.10.0", Scheme::Semver).unwrap(),
        scheme: Scheme::Semver,
        track: upkeep::model::Track::Newest,
        sources: Default::default(),
        allowed: None,
        path_rule: upkeep::versions::PathRule {
            max_minor_step: Some(1),
            downgrade: upkeep::versions::Downgrade::Never,
        },
        runs: upkeep::model::Runs::Unknown,
    };
    let policy = upkeep::model::Policy::default();
    measure("select over 10,000 releases of one component", 100, || {
        let s = upkeep::select::select(&component, &policy, &releases, None, now);
        assert!(s.next.is_some());
        black_box(s);
    });

    let tmp = tempfile::tempdir().unwrap();
    let mut yaml =
        String::from("apiVersion: upkeep.dev/v1alpha1\nkind: DesiredVersions\ncomponents:\n");
    for i in 0..1000 {
        yaml.push_str(&format!(
            "  component-{i}:\n    version: v1.{}.{}\n    source:\n      githubReleases: example/component-{i}\n    allowed: \">=1.0.0, <2.0.0\"\n",
            i % 40,
            i % 7
        ));
    }
    std::fs::write(tmp.path().join("versions.yaml"), &yaml).unwrap();
    std::fs::create_dir(tmp.path().join("policies")).unwrap();
    std::fs::copy(
        example.join("policies/windows.yaml"),
        tmp.path().join("policies/windows.yaml"),
    )
    .unwrap();
    println!("(1,000-component versions.yaml: {} KiB)", yaml.len() / 1024);
    measure("validate a 1,000-component versions.yaml", 50, || {
        let l = upkeep::model::load_repo(tmp.path(), now).unwrap();
        assert_eq!(l.repo.as_ref().map(|r| r.components.len()), Some(1000));
        black_box(l);
    });
}
