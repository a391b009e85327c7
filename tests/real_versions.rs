//! Version rules against real upstream tag histories (tests/fixtures/releases/).

use upkeep::versions::{
    self, Downgrade, PathRule, Scheme, Version, candidates, parse, parse_all, plan_path,
};

fn fixture(name: &str) -> String {
    std::fs::read_to_string(format!(
        "{}/tests/fixtures/releases/{name}",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap()
}

fn k3s_tags() -> Vec<String> {
    fixture("k3s-versions.txt")
        .lines()
        .map(str::to_string)
        .collect()
}

fn tsv_tags(name: &str) -> Vec<String> {
    fixture(name)
        .lines()
        .filter_map(|l| l.split('\t').next())
        .map(str::to_string)
        .collect()
}

const K3S: PathRule = PathRule {
    max_minor_step: Some(1),
    downgrade: Downgrade::Never,
};
const LONGHORN: PathRule = PathRule {
    max_minor_step: Some(1),
    downgrade: Downgrade::Never,
};

/// An independent reading of a k3s tag, for cross-checking the order: numbers from a plain split.
fn oracle_key(tag: &str) -> (u64, u64, u64, u8, String, u64) {
    let t = tag
        .trim_start_matches('v')
        .replace("+k3s.", "+k3s")
        .replace("-k3s.", "+k3s");
    let (head, rev) = match t.rsplit_once("k3s") {
        Some((h, r)) => (
            h.trim_end_matches(['+', '-']).to_string(),
            r.parse::<u64>().unwrap(),
        ),
        None => unreachable!(),
    };
    let (core, pre) = head
        .split_once('-')
        .map(|(c, p)| (c.to_string(), p.to_string()))
        .unwrap_or((head.clone(), String::new()));
    let n: Vec<u64> = core.split('.').map(|x| x.parse().unwrap()).collect();
    // Pre-releases sort before the release; within them rc2 < rc10 (compare the number).
    let (stable, pre_key) = if pre.is_empty() {
        (1, String::new())
    } else {
        let letters: String = pre.chars().filter(|c| !c.is_ascii_digit()).collect();
        let digits: String = pre.chars().filter(|c| c.is_ascii_digit()).collect();
        (
            0,
            format!("{letters}{:09}", digits.parse::<u64>().unwrap_or(0)),
        )
    };
    (n[0], n[1], n[2], stable, pre_key, rev)
}

#[test]
fn all_896_k3s_tags_parse_or_are_rejected_deliberately() {
    let tags = k3s_tags();
    assert_eq!(tags.len(), 896);
    let (ok, bad) = parse_all(tags.iter().map(String::as_str), Scheme::K3s);
    let rejected: Vec<String> = bad.iter().map(|e| e.to_string()).collect();
    assert_eq!(
        rejected,
        [
            "`v1.18.20-rc1+k3s` is not a k3s version: the build must be `+k3sN` with N a number, like +k3s1",
            "`v1.22.17+k3s` is not a k3s version: the build must be `+k3sN` with N a number, like +k3s1",
            "`v1.23.12+rk3s1` is not a k3s version: the build must be `+k3sN` with N a number, like +k3s1",
        ]
    );
    assert_eq!(ok.len(), 893);
}

#[test]
fn k3s_order_matches_an_independent_reading() {
    let tags = k3s_tags();
    let (mut ok, _) = parse_all(tags.iter().map(String::as_str), Scheme::K3s);
    ok.sort();
    for pair in ok.windows(2) {
        let (a, b) = (oracle_key(pair[0].raw()), oracle_key(pair[1].raw()));
        assert!(
            a <= b,
            "{} sorted before {} but the oracle disagrees",
            pair[0].raw(),
            pair[1].raw()
        );
    }
    // The dash aliases collapse onto their + forms.
    let distinct = candidates(ok.clone(), true);
    let aliases = [
        "v1.17.0-k3s.1",
        "v1.17.2-k3s1",
        "v1.33.10-k3s1",
        "v1.34.6-k3s1",
        "v1.35.3-k3s1",
    ];
    assert_eq!(distinct.len(), ok.len() - aliases.len());
    assert_eq!(ok.last().unwrap().to_string(), "v1.36.1+k3s1");
}

#[test]
fn k3s_revisions_and_prereleases_in_real_history() {
    let tags = k3s_tags();
    let (ok, _) = parse_all(tags.iter().map(String::as_str), Scheme::K3s);
    let stable = candidates(ok.clone(), false);
    assert!(stable.iter().all(|v| !v.is_prerelease()));
    let v135: Vec<String> = stable
        .iter()
        .filter(|v| v.line() == (1, 35) && v.patch == 0)
        .map(|v| v.to_string())
        .collect();
    assert!(v135.contains(&"v1.35.0+k3s1".to_string()));
    assert_eq!(
        versions::newest_in_line(&stable, 1, 35).map(|v| v.line()),
        Some((1, 35))
    );
    // rc10-style numbering orders numerically wherever it appears.
    let all = candidates(ok, true);
    let pos = |s: &str| {
        all.iter()
            .position(|v| *v == parse(s, Scheme::K3s).unwrap())
            .unwrap()
    };
    assert!(pos("v1.36.0-rc1+k3s1") < pos("v1.36.0-rc3+k3s1"));
    assert!(pos("v1.36.0-rc3+k3s1") < pos("v1.36.1-rc1+k3s1"));
    assert!(pos("v1.36.1-rc1+k3s1") < pos("v1.36.1+k3s1"));
}

#[test]
fn k3s_minor_skip_becomes_hops_through_the_newest_patch_of_each_line() {
    let tags = k3s_tags();
    let (ok, _) = parse_all(tags.iter().map(String::as_str), Scheme::K3s);
    let stable = candidates(ok, false);
    let from = parse("v1.31.4+k3s1", Scheme::K3s).unwrap();
    let to = parse("v1.33.2+k3s1", Scheme::K3s).unwrap();
    let path = plan_path(&from, &to, &stable, &K3S).unwrap();
    let newest_132 = versions::newest_in_line(&stable, 1, 32).unwrap().clone();
    assert_eq!(path, vec![newest_132.clone(), to.clone()]);
    assert_eq!(path[0].line(), (1, 32));
    // Every hop of the path is itself legal.
    let mut at = from;
    for hop in &path {
        versions::check_hop(&at, hop, &K3S).unwrap();
        at = hop.clone();
    }
    // And the newest of all, from an old line, walks one minor at a time.
    let newest: Version = stable.last().unwrap().clone();
    let path = plan_path(
        &parse("v1.30.0+k3s1", Scheme::K3s).unwrap(),
        &newest,
        &stable,
        &K3S,
    )
    .unwrap();
    let lines: Vec<(u64, u64)> = path.iter().map(Version::line).collect();
    assert_eq!(lines, (31..=36).map(|m| (1, m)).collect::<Vec<_>>());
}

#[test]
fn longhorn_tags_dev_builds_are_never_candidates() {
    let tags = tsv_tags("longhorn-tags.tsv");
    let (ok, bad) = parse_all(tags.iter().map(String::as_str), Scheme::Semver);
    // `v0.3-rcN` (two numbers) and `tags/vX.Y.Z` (a ref prefix) are not versions.
    assert!(
        bad.iter().all(|e| {
            let s = e.to_string();
            s.starts_with("`v0.3-rc") || s.starts_with("`tags/")
        }),
        "{bad:?}"
    );
    let dev = ok.iter().filter(|v| v.is_dev()).count();
    assert!(dev > 100, "the fixture has many -dev- tags, found {dev}");
    for allow_pre in [false, true] {
        let c = candidates(ok.clone(), allow_pre);
        assert!(c.iter().all(|v| !v.raw().contains("-dev-")));
    }
    let stable = candidates(ok, false);
    assert_eq!(stable.last().unwrap().to_string(), "v1.12.1");
    // From v1.6.2 to v1.8.0: through the newest v1.7.x, never straight (the chart refuses it).
    let from = parse("v1.6.2", Scheme::Semver).unwrap();
    let to = parse("v1.8.0", Scheme::Semver).unwrap();
    assert!(versions::check_hop(&from, &to, &LONGHORN).is_err());
    let path = plan_path(&from, &to, &stable, &LONGHORN).unwrap();
    assert_eq!(path.len(), 2);
    assert_eq!(path[0], *versions::newest_in_line(&stable, 1, 7).unwrap());
    assert!(versions::check_hop(&to, &from, &LONGHORN).is_err());
}

#[test]
fn flux_tags_order_and_minor_downgrade_rule() {
    let tags = tsv_tags("flux2-tags.tsv");
    let (ok, bad) = parse_all(tags.iter().map(String::as_str), Scheme::Semver);
    assert!(bad.is_empty(), "{bad:?}");
    let stable = candidates(ok, false);
    assert_eq!(stable.last().unwrap().to_string(), "v2.9.4");
    let flux = PathRule {
        max_minor_step: None,
        downgrade: Downgrade::WithinMinor,
    };
    let v = |s| parse(s, Scheme::Semver).unwrap();
    assert_eq!(
        plan_path(&v("v2.3.0"), &v("v2.9.4"), &stable, &flux).unwrap(),
        vec![v("v2.9.4")]
    );
    assert!(versions::check_hop(&v("v2.8.3"), &v("v2.8.1"), &flux).is_ok());
    assert!(versions::check_hop(&v("v2.8.3"), &v("v2.7.5"), &flux).is_err());
}

fn releases(name: &str) -> Vec<upkeep::select::Release> {
    fixture(name)
        .lines()
        .filter_map(|l| l.split_once('\t'))
        .filter_map(|(tag, date)| {
            let version = parse(tag, Scheme::Semver).ok()?;
            let at = chrono::DateTime::parse_from_rfc3339(date)
                .ok()?
                .with_timezone(&chrono::Utc);
            Some(upkeep::select::Release {
                version,
                published_at: Some(at),
                prerelease: false,
                draft: false,
            })
        })
        .collect()
}

fn component(name: &str, version: &str, rule: PathRule) -> upkeep::model::Component {
    upkeep::model::Component {
        name: name.into(),
        version: parse(version, Scheme::Semver).unwrap(),
        scheme: Scheme::Semver,
        track: upkeep::model::Track::Newest,
        sources: Default::default(),
        allowed: None,
        path_rule: rule,
        runs: upkeep::model::Runs::Unknown,
    }
}

#[test]
fn selection_over_real_longhorn_and_flux_histories() {
    let now = chrono::DateTime::parse_from_rfc3339("2026-11-21T12:00:00Z")
        .unwrap()
        .with_timezone(&chrono::Utc);
    let policy = upkeep::model::Policy::default();
    let lh = component("longhorn", "v1.6.2", LONGHORN);
    let s = upkeep::select::select(&lh, &policy, &releases("longhorn-tags.tsv"), None, now);
    let next = s.next.unwrap().version;
    assert_eq!(
        next.line(),
        (1, 7),
        "Longhorn goes to the next minor only, got {next}"
    );
    assert!(!next.is_prerelease() && !next.is_dev());
    let lines: Vec<(u64, u64)> = s.path.iter().map(Version::line).collect();
    assert_eq!(lines, (7..=12).map(|m| (1, m)).collect::<Vec<_>>());
    assert_eq!(s.path.last().unwrap().to_string(), "v1.12.1");

    let flux = component(
        "flux",
        "v2.3.0",
        PathRule {
            max_minor_step: None,
            downgrade: Downgrade::WithinMinor,
        },
    );
    let s = upkeep::select::select(&flux, &policy, &releases("flux2-tags.tsv"), None, now);
    assert_eq!(s.next.unwrap().version.to_string(), "v2.9.4");
    assert_eq!(s.level, Some(upkeep::versions::Level::Minor));
}

/// Whatever the current version, the proposed next step and every hop of the path never skip a
/// minor of k3s or Longhorn, and never go down: checked from every real release as the start.
#[test]
fn a_minor_skip_is_never_proposed_from_any_real_k3s_or_longhorn_release() {
    let now = chrono::DateTime::parse_from_rfc3339("2026-11-21T12:00:00Z")
        .unwrap()
        .with_timezone(&chrono::Utc);
    let policy = upkeep::model::Policy {
        propose: [
            versions::Level::Revision,
            versions::Level::Patch,
            versions::Level::Minor,
            versions::Level::Major,
        ]
        .into(),
        ..upkeep::model::Policy::default()
    };
    let k3s: Vec<upkeep::select::Release> =
        parse_all(k3s_tags().iter().map(String::as_str), Scheme::K3s)
            .0
            .into_iter()
            .map(|version| upkeep::select::Release {
                version,
                published_at: None,
                prerelease: false,
                draft: false,
            })
            .collect();
    let longhorn = releases("longhorn-tags.tsv");
    for (scheme, rule, all) in [
        (Scheme::K3s, K3S, &k3s),
        (Scheme::Semver, LONGHORN, &longhorn),
    ] {
        let mut checked = 0;
        for start in all
            .iter()
            .filter(|r| !r.version.is_prerelease() && !r.version.is_dev())
        {
            let c = upkeep::model::Component {
                scheme,
                version: start.version.clone(),
                ..component("x", "v0.0.0", rule)
            };
            let s = upkeep::select::select(&c, &policy, all, None, now);
            // Up, same major, at most one minor further.
            let legal = |from: &Version, to: &Version| {
                let ((from_major, from_minor), (to_major, to_minor)) = (from.line(), to.line());
                to > from && to_major == from_major && to_minor <= from_minor + 1
            };
            if let Some(next) = &s.next {
                assert!(
                    legal(&start.version, &next.version),
                    "from {}: next {} skips a minor or goes down",
                    start.version,
                    next.version
                );
            }
            let mut prev = &start.version;
            for hop in &s.path {
                assert!(
                    legal(prev, hop),
                    "from {}: path hop {prev} -> {hop} skips a minor",
                    start.version
                );
                prev = hop;
            }
            checked += 1;
        }
        assert!(checked >= 40, "checked {checked} starts");
    }
}
