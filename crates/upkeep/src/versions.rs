//! Version schemes, ordering, update classification and upgrade paths.
//!
//! Everything here is a pure function over plain data: no I/O, no clock.
//!
//! Two schemes exist:
//! - [`Scheme::K3s`]: `vX.Y.Z+k3sN` and `vX.Y.Z-rcM+k3sN`, ordered by
//!   (major, minor, patch, pre-release, revision N as a number). The dash form that the
//!   system-upgrade-controller writes (`v1.33.4-k3s1`) is an alias of the `+` form.
//! - [`Scheme::Semver`]: `vX.Y.Z[-pre][+build]`, build metadata ignored for ordering.
//!
//! Odd historical k3s names are handled deliberately (see [`parse`]): `+k3s.1` maps to
//! revision 1 (early-2020 tags), while `+k3s` without a number and `+rk3s1` are rejected.

use std::cmp::Ordering;
use std::collections::BTreeMap;
use std::fmt;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// What went wrong parsing or planning versions.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    #[error("`{input}` is not a {scheme} version: {reason}")]
    Parse {
        input: String,
        scheme: Scheme,
        reason: &'static str,
    },
    #[error("{0}")]
    Path(#[from] PathError),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// How a component numbers its releases.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Scheme {
    /// `vX.Y.Z+k3sN` (k3s and RKE2-style builds); `+k3sN` is ordered as a number.
    K3s,
    /// Semantic versioning, with or without a leading `v`.
    Semver,
}

impl fmt::Display for Scheme {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Scheme::K3s => "k3s",
            Scheme::Semver => "semver",
        })
    }
}

/// One identifier of a pre-release (`rc1`, `alpha`, `2`), ordered naturally:
/// numeric identifiers sort below alphanumeric ones (as in SemVer), and digit runs inside
/// an identifier compare as numbers, so `rc2 < rc10`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct PreIdent(String);

impl Ord for PreIdent {
    fn cmp(&self, other: &Self) -> Ordering {
        let a_num = self.0.bytes().all(|b| b.is_ascii_digit());
        let b_num = other.0.bytes().all(|b| b.is_ascii_digit());
        match (a_num, b_num) {
            (true, true) => natural_cmp(&self.0, &other.0),
            (true, false) => Ordering::Less,
            (false, true) => Ordering::Greater,
            (false, false) => natural_cmp(&self.0, &other.0),
        }
    }
}

impl PartialOrd for PreIdent {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// Compare strings chunk by chunk: digit runs as numbers (ignoring leading zeros), the rest as bytes.
fn natural_cmp(a: &str, b: &str) -> Ordering {
    let (mut a, mut b) = (a.as_bytes(), b.as_bytes());
    loop {
        match (a.first(), b.first()) {
            (None, None) => return Ordering::Equal,
            (None, Some(_)) => return Ordering::Less,
            (Some(_), None) => return Ordering::Greater,
            (Some(x), Some(y)) if x.is_ascii_digit() && y.is_ascii_digit() => {
                let la = a.iter().take_while(|c| c.is_ascii_digit()).count();
                let lb = b.iter().take_while(|c| c.is_ascii_digit()).count();
                let (da, db) = (trim_zeros(&a[..la]), trim_zeros(&b[..lb]));
                let ord = da.len().cmp(&db.len()).then_with(|| da.cmp(db));
                if ord != Ordering::Equal {
                    return ord;
                }
                a = &a[la..];
                b = &b[lb..];
            }
            (Some(x), Some(y)) => {
                if x != y {
                    return x.cmp(y);
                }
                a = &a[1..];
                b = &b[1..];
            }
        }
    }
}

fn trim_zeros(d: &[u8]) -> &[u8] {
    let n = d.iter().take_while(|c| **c == b'0').count();
    &d[n.min(d.len().saturating_sub(1))..]
}

/// A parsed version. Equality and ordering ignore the original spelling, so
/// `v1.33.4-k3s1 == v1.33.4+k3s1`; `Display` gives the canonical form.
#[derive(Debug, Clone)]
pub struct Version {
    pub scheme: Scheme,
    pub major: u64,
    pub minor: u64,
    pub patch: u64,
    pre: Vec<PreIdent>,
    /// The `N` of `+k3sN`; `None` for semver.
    pub revision: Option<u64>,
    raw: String,
}

impl PartialEq for Version {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}
impl Eq for Version {}

impl std::hash::Hash for Version {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        (self.major, self.minor, self.patch, &self.pre, self.revision).hash(state);
    }
}

impl Ord for Version {
    fn cmp(&self, other: &Self) -> Ordering {
        (self.major, self.minor, self.patch)
            .cmp(&(other.major, other.minor, other.patch))
            .then_with(|| match (self.pre.is_empty(), other.pre.is_empty()) {
                (true, true) => Ordering::Equal,
                (true, false) => Ordering::Greater,
                (false, true) => Ordering::Less,
                (false, false) => self.pre.cmp(&other.pre),
            })
            .then_with(|| self.revision.cmp(&other.revision))
    }
}

impl PartialOrd for Version {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "v{}.{}.{}", self.major, self.minor, self.patch)?;
        if !self.pre.is_empty() {
            f.write_str("-")?;
            for (i, p) in self.pre.iter().enumerate() {
                if i > 0 {
                    f.write_str(".")?;
                }
                f.write_str(&p.0)?;
            }
        }
        if let Some(n) = self.revision {
            write!(f, "+k3s{n}")?;
        }
        Ok(())
    }
}

impl Serialize for Version {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl Version {
    /// The spelling this version was parsed from (e.g. an upstream tag), for use where the
    /// exact upstream name matters (image tags, release URLs).
    pub fn raw(&self) -> &str {
        &self.raw
    }

    /// The form the system-upgrade-controller writes: `+` replaced by `-` (`v1.33.4-k3s1`).
    pub fn dash_form(&self) -> String {
        self.to_string().replace('+', "-")
    }

    pub fn is_prerelease(&self) -> bool {
        !self.pre.is_empty()
    }

    /// Development builds (`-dev-20260517`, `-dev.3`): never candidates, whatever the policy says.
    pub fn is_dev(&self) -> bool {
        self.pre
            .iter()
            .any(|p| p.0 == "dev" || p.0.starts_with("dev-"))
    }

    /// `(major, minor)`: the release line this version belongs to.
    pub fn line(&self) -> (u64, u64) {
        (self.major, self.minor)
    }

    /// The core `major.minor.patch-pre` as a `semver::Version`, for range checks.
    pub fn to_semver(&self) -> semver::Version {
        let pre = self
            .pre
            .iter()
            .map(|p| p.0.as_str())
            .collect::<Vec<_>>()
            .join(".");
        semver::Version {
            major: self.major,
            minor: self.minor,
            patch: self.patch,
            pre: semver::Prerelease::new(&pre).unwrap_or(semver::Prerelease::EMPTY),
            build: semver::BuildMetadata::EMPTY,
        }
    }
}

/// Parse a version string under a scheme.
pub fn parse(input: &str, scheme: Scheme) -> Result<Version> {
    let err = |reason| Error::Parse {
        input: input.to_string(),
        scheme,
        reason,
    };
    let s = input.trim();
    if s.is_empty() {
        return Err(err("it is empty"));
    }
    if s.len() > 128 {
        return Err(err("it is longer than 128 characters"));
    }
    if s.starts_with("tags/") {
        return Err(err("`tags/` is part of a ref name, not of a version"));
    }
    let body = s.strip_prefix('v').unwrap_or(s);
    let (before_build, build) = match body.split_once('+') {
        Some((a, b)) => (a, Some(b)),
        None => (body, None),
    };
    let (core, pre) = match before_build.split_once('-') {
        Some((a, b)) => (a, Some(b)),
        None => (before_build, None),
    };
    let mut nums = core.split('.');
    let mut num = |what| -> Result<u64> {
        let part = nums.next().ok_or_else(|| err(what))?;
        if part.is_empty() || !part.bytes().all(|b| b.is_ascii_digit()) {
            return Err(err("major, minor and patch must be numbers, like v1.33.4"));
        }
        if part.len() > 1 && part.starts_with('0') {
            return Err(err("numbers must not have leading zeros"));
        }
        part.parse::<u64>()
            .map_err(|_| err("a number is too large"))
    };
    let major = num("it needs three numbers, major.minor.patch")?;
    let minor = num("it needs three numbers, major.minor.patch")?;
    let patch = num("it needs three numbers, major.minor.patch")?;
    if nums.next().is_some() {
        return Err(err("it has more than three numbers"));
    }
    let mut pre = match pre {
        Some(p) => parse_pre(p)
            .ok_or_else(|| err("the pre-release must be dot-separated [0-9A-Za-z-] identifiers"))?,
        None => Vec::new(),
    };
    let revision = match scheme {
        Scheme::Semver => {
            if let Some(b) = build
                && (b.is_empty() || !b.split('.').all(valid_ident))
            {
                return Err(err(
                    "the build metadata after `+` must be dot-separated [0-9A-Za-z-] identifiers",
                ));
            }
            None
        }
        Scheme::K3s => match build {
            Some(b) => Some(
                k3s_revision(b)
                    .ok_or_else(|| err("the build must be `+k3sN` with N a number, like +k3s1"))?,
            ),
            None => {
                // The dash alias: `v1.33.4-k3s1` (SUC's form) means `v1.33.4+k3s1`.
                let joined: Vec<&str> = pre.iter().map(|p| p.0.as_str()).collect();
                match k3s_revision(&joined.join(".")) {
                    Some(n) => {
                        pre.clear();
                        Some(n)
                    }
                    _ => return Err(err("a k3s version ends in `+k3sN`, like v1.33.4+k3s1")),
                }
            }
        },
    };
    Ok(Version {
        scheme,
        major,
        minor,
        patch,
        pre,
        revision,
        raw: input.to_string(),
    })
}

fn valid_ident(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
}

fn parse_pre(p: &str) -> Option<Vec<PreIdent>> {
    p.split('.')
        .map(|i| valid_ident(i).then(|| PreIdent(i.to_string())))
        .collect()
}

/// `k3s1` -> 1, and the legacy dotted `k3s.1` -> 1. Anything else (`k3s`, `rk3s1`) -> None.
fn k3s_revision(b: &str) -> Option<u64> {
    let n = b.strip_prefix("k3s")?;
    let n = n.strip_prefix('.').unwrap_or(n);
    if n.is_empty() || !n.bytes().all(|c| c.is_ascii_digit()) || n.len() > 9 {
        return None;
    }
    n.parse().ok()
}

/// Parse many tags, keeping the ones that parse and the reasons for the rest.
pub fn parse_all<'a>(
    tags: impl IntoIterator<Item = &'a str>,
    scheme: Scheme,
) -> (Vec<Version>, Vec<Error>) {
    let mut ok = Vec::new();
    let mut bad = Vec::new();
    for t in tags {
        match parse(t, scheme) {
            Ok(v) => ok.push(v),
            Err(e) => bad.push(e),
        }
    }
    (ok, bad)
}

/// The versions that may ever be proposed, newest last: no development builds, pre-releases only
/// when allowed, each version once (aliases such as `v1.33.4-k3s1` / `v1.33.4+k3s1` collapse).
pub fn candidates(mut all: Vec<Version>, allow_prerelease: bool) -> Vec<Version> {
    all.retain(|v| !v.is_dev() && (allow_prerelease || !v.is_prerelease()));
    all.sort();
    all.dedup();
    all
}

/// How big a step an update is.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    /// Same x.y.z, another build or pre-release (`+k3s1 -> +k3s2`).
    Revision,
    Patch,
    Minor,
    Major,
}

impl fmt::Display for Level {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Level::Revision => "revision",
            Level::Patch => "patch",
            Level::Minor => "minor",
            Level::Major => "major",
        })
    }
}

/// The size of the step between two versions, in either direction.
pub fn classify(from: &Version, to: &Version) -> Level {
    if from.major != to.major {
        Level::Major
    } else if from.minor != to.minor {
        Level::Minor
    } else if from.patch != to.patch {
        Level::Patch
    } else {
        Level::Revision
    }
}

/// Which downgrades a component tolerates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum Downgrade {
    /// Never go to a lower version (k3s, Longhorn).
    Never,
    /// Lower patches of the same minor are fine, a lower minor is not (Flux).
    WithinMinor,
    /// Any lower version may be applied.
    Allowed,
}

/// The upgrade-path rules of a component.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PathRule {
    /// The most minors one hop may advance: 1 (the default) never skips a minor; 0 means no
    /// limit (for a project whose upgrades may skip minors).
    #[serde(
        default = "one_minor",
        deserialize_with = "minor_step",
        skip_serializing_if = "Option::is_none"
    )]
    #[schemars(with = "Option<u64>")]
    pub max_minor_step: Option<u64>,
    /// Which downgrades are possible.
    pub downgrade: Downgrade,
}

impl PathRule {
    pub const ANY: PathRule = PathRule {
        max_minor_step: None,
        downgrade: Downgrade::Allowed,
    };
    /// A component without rules of its own: never skip a minor (most projects' upgrade guides
    /// say so; a rule opts out with `maxMinorStep: 0`), and never go down (a chart's migrations
    /// rarely run backwards; a rule opts in with `downgrade: allowed`).
    pub const DEFAULT: PathRule = PathRule {
        max_minor_step: Some(1),
        downgrade: Downgrade::Never,
    };
}

fn one_minor() -> Option<u64> {
    Some(1)
}

/// `maxMinorStep: 0` is "no limit".
fn minor_step<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> std::result::Result<Option<u64>, D::Error> {
    let n = u64::deserialize(d)?;
    Ok((n > 0).then_some(n))
}

/// Why a hop is not legal.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    #[error("{from} -> {to} is a downgrade, which this component cannot do")]
    Downgrade { from: String, to: String },
    #[error(
        "{from} -> {to} goes down a minor, which this component cannot do (patch downgrades only)"
    )]
    MinorDowngrade { from: String, to: String },
    #[error(
        "{from} -> {to} skips a minor: v{major}.{minor} must be applied in between, and no release of it is available"
    )]
    MissingLine {
        from: String,
        to: String,
        major: u64,
        minor: u64,
    },
    #[error(
        "{from} -> {to} crosses a major version with a step limit; upgrade to v{major}.0 first"
    )]
    MajorJump {
        from: String,
        to: String,
        major: u64,
    },
}

/// Whether `from -> to` may be applied in one step under `rule`.
pub fn check_hop(
    from: &Version,
    to: &Version,
    rule: &PathRule,
) -> std::result::Result<(), PathError> {
    let names = || (from.to_string(), to.to_string());
    if to < from {
        return match rule.downgrade {
            Downgrade::Allowed => Ok(()),
            Downgrade::WithinMinor if from.line() == to.line() => Ok(()),
            Downgrade::WithinMinor => {
                let (from, to) = names();
                Err(PathError::MinorDowngrade { from, to })
            }
            Downgrade::Never => {
                let (from, to) = names();
                Err(PathError::Downgrade { from, to })
            }
        };
    }
    let Some(step) = rule.max_minor_step else {
        return Ok(());
    };
    if to.major == from.major {
        if to.minor.saturating_sub(from.minor) <= step {
            return Ok(());
        }
        let (f, t) = names();
        return Err(PathError::MissingLine {
            from: f,
            to: t,
            major: from.major,
            minor: from.minor.saturating_add(step),
        });
    }
    // Across a major: only onto the first minor of the next major.
    if to.major == from.major.saturating_add(1) && to.minor < step {
        return Ok(());
    }
    let (f, t) = names();
    Err(PathError::MajorJump {
        from: f,
        to: t,
        major: from.major.saturating_add(1),
    })
}

/// [`check_hop`], knowing the releases that exist: with a minor-step limit, a major is entered
/// only from the newest minor of the major before (`v2.10 -> v3.0` skips `v2.11` when it
/// exists).
pub fn check_hop_among(
    from: &Version,
    to: &Version,
    rule: &PathRule,
    available: &[&Version],
) -> std::result::Result<(), PathError> {
    check_hop(from, to, rule)?;
    let Some(step) = rule.max_minor_step else {
        return Ok(());
    };
    if to.major > from.major
        && let Some(last) = available
            .iter()
            .filter(|v| v.major == from.major && !v.is_prerelease())
            .map(|v| v.minor)
            .max()
        && last > from.minor
    {
        return Err(PathError::MissingLine {
            from: from.to_string(),
            to: to.to_string(),
            major: from.major,
            minor: from.minor.saturating_add(step.min(last - from.minor)),
        });
    }
    Ok(())
}

/// The sequence of hops from `from` to `to` (excluding `from`, ending with `to`), using the
/// newest release of each intermediate line found in `available`. Callers pass only versions
/// that are candidates (no drafts, no dev builds, pre-releases only if allowed).
///
/// `v1.31.4+k3s1 -> v1.33.2+k3s1` with the k3s rule gives `[latest v1.32.x, v1.33.2+k3s1]`.
pub fn plan_path<'a>(
    from: &Version,
    to: &Version,
    available: impl IntoIterator<Item = &'a Version>,
    rule: &PathRule,
) -> std::result::Result<Vec<Version>, PathError> {
    // The newest stable release of each line, indexed once (paths can have many hops).
    let mut newest: BTreeMap<(u64, u64), &Version> = BTreeMap::new();
    for v in available.into_iter().filter(|v| !v.is_prerelease()) {
        let e = newest.entry(v.line()).or_insert(v);
        if v > *e {
            *e = v;
        }
    }
    let lines: Vec<&Version> = newest.values().copied().collect();
    let mut hops = Vec::new();
    let mut at = from.clone();
    // Each iteration advances at least one minor, so this terminates; the bound guards bad rules.
    for _ in 0..=1024 {
        match check_hop_among(&at, to, rule, &lines) {
            Ok(()) => {
                if at != *to {
                    hops.push(to.clone());
                }
                return Ok(hops);
            }
            Err(PathError::MissingLine { major, minor, .. }) => {
                let next =
                    newest
                        .get(&(major, minor))
                        .copied()
                        .ok_or_else(|| PathError::MissingLine {
                            from: from.to_string(),
                            to: to.to_string(),
                            major,
                            minor,
                        })?;
                hops.push(next.clone());
                at = next.clone();
            }
            Err(PathError::MajorJump { major, .. }) => {
                let next =
                    newest
                        .get(&(major, 0))
                        .copied()
                        .ok_or_else(|| PathError::MajorJump {
                            from: from.to_string(),
                            to: to.to_string(),
                            major,
                        })?;
                hops.push(next.clone());
                at = next.clone();
            }
            Err(e) => return Err(e),
        }
    }
    Err(PathError::MajorJump {
        from: from.to_string(),
        to: to.to_string(),
        major: to.major,
    })
}

/// The newest stable release of `major.minor` in `available`.
pub fn newest_in_line(available: &[Version], major: u64, minor: u64) -> Option<&Version> {
    available
        .iter()
        .filter(|v| v.major == major && v.minor == minor && !v.is_prerelease())
        .max()
}

/// A `semver`-style range (`>=1.9.0, <1.11.0`) checked against a version's core.
pub fn parse_range(input: &str) -> std::result::Result<semver::VersionReq, String> {
    // Allow `v` in front of numbers, which users copy from tags.
    let normalized: String = input
        .split(',')
        .map(|part| {
            let p = part.trim();
            let op_len = p.len() - p.trim_start_matches(|c: char| "<>=~^".contains(c)).len();
            let (op, rest) = p.split_at(op_len);
            format!("{op}{}", rest.trim().trim_start_matches('v'))
        })
        .collect::<Vec<_>>()
        .join(", ");
    semver::VersionReq::parse(&normalized).map_err(|e| e.to_string())
}

/// Whether `v` satisfies `range` (pre-releases are compared by their core version).
pub fn in_range(v: &Version, range: &semver::VersionReq) -> bool {
    let mut core = v.to_semver();
    core.pre = semver::Prerelease::EMPTY;
    range.matches(&core)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn k(s: &str) -> Version {
        parse(s, Scheme::K3s).unwrap()
    }
    fn sv(s: &str) -> Version {
        parse(s, Scheme::Semver).unwrap()
    }
    const K3S: PathRule = PathRule {
        max_minor_step: Some(1),
        downgrade: Downgrade::Never,
    };
    const FLUX: PathRule = PathRule {
        max_minor_step: None,
        downgrade: Downgrade::WithinMinor,
    };

    #[test]
    fn k3s_revision_is_numeric() {
        assert!(k("v1.35.0+k3s10") > k("v1.35.0+k3s2"));
        assert!(k("v1.35.0+k3s3") > k("v1.35.0+k3s1"));
        assert!(k("v1.35.1+k3s1") > k("v1.35.0+k3s3"));
    }

    #[test]
    fn dash_form_is_an_alias() {
        assert_eq!(k("v1.33.4-k3s1"), k("v1.33.4+k3s1"));
        assert_eq!(k("v1.33.4-k3s1").to_string(), "v1.33.4+k3s1");
        assert_eq!(k("v1.33.4+k3s1").dash_form(), "v1.33.4-k3s1");
        assert!(!k("v1.33.4-k3s1").is_prerelease());
        assert_eq!(k("v1.33.4-k3s1").raw(), "v1.33.4-k3s1");
    }

    #[test]
    fn prereleases_sort_before_release_and_naturally() {
        assert!(k("v1.33.0-rc1+k3s1") < k("v1.33.0+k3s1"));
        assert!(k("v1.33.0-rc2+k3s1") < k("v1.33.0-rc10+k3s1"));
        assert!(k("v1.33.0-alpha1+k3s1") < k("v1.33.0-rc1+k3s1"));
        assert!(k("v1.33.0-rc1+k3s1") < k("v1.33.0-rc1+k3s2"));
        assert!(k("v1.32.9+k3s1") < k("v1.33.0-rc1+k3s1"));
        assert!(sv("v1.0.0-rc.2") < sv("v1.0.0-rc.10"));
        assert!(sv("1.0.0-1") < sv("1.0.0-alpha"));
    }

    #[test]
    fn odd_k3s_names_are_mapped_or_rejected_deliberately() {
        assert_eq!(k("v1.17.0+k3s.1"), k("v1.17.0+k3s1"));
        assert_eq!(k("v1.17.0-k3s.1"), k("v1.17.0+k3s1"));
        assert!(parse("v1.22.17+k3s", Scheme::K3s).is_err());
        assert!(parse("v1.23.12+rk3s1", Scheme::K3s).is_err());
        assert!(parse("v1.33.4", Scheme::K3s).is_err());
        assert!(k("v1.21.4-engine0+k3s1").is_prerelease());
    }

    #[test]
    fn parse_errors_say_why() {
        let e = parse("1.2", Scheme::Semver).unwrap_err().to_string();
        assert_eq!(
            e,
            "`1.2` is not a semver version: it needs three numbers, major.minor.patch"
        );
        let e = parse("latest", Scheme::K3s).unwrap_err().to_string();
        assert_eq!(
            e,
            "`latest` is not a k3s version: major, minor and patch must be numbers, like v1.33.4"
        );
        assert!(parse("v01.2.3", Scheme::Semver).is_err());
        assert!(parse("v1.2.3-", Scheme::Semver).is_err());
        assert!(parse("v1.2.3+", Scheme::Semver).is_err());
        assert!(parse("v99999999999999999999.1.1", Scheme::Semver).is_err());
        assert!(parse("tags/v1.0.0", Scheme::Semver).is_err());
    }

    #[test]
    fn dev_builds_are_recognised() {
        assert!(sv("v1.13.0-dev-20260517").is_dev());
        assert!(!sv("v1.13.0-rc1").is_dev());
    }

    #[test]
    fn classify_levels() {
        assert_eq!(
            classify(&k("v1.33.4+k3s1"), &k("v1.33.4+k3s2")),
            Level::Revision
        );
        assert_eq!(
            classify(&k("v1.33.4+k3s1"), &k("v1.33.5+k3s1")),
            Level::Patch
        );
        assert_eq!(
            classify(&k("v1.33.4+k3s1"), &k("v1.34.1+k3s1")),
            Level::Minor
        );
        assert_eq!(classify(&sv("v1.9.0"), &sv("v2.0.0")), Level::Major);
    }

    #[test]
    fn hops() {
        assert!(check_hop(&k("v1.33.4+k3s1"), &k("v1.34.1+k3s1"), &K3S).is_ok());
        assert!(matches!(
            check_hop(&k("v1.33.4+k3s1"), &k("v1.35.1+k3s1"), &K3S),
            Err(PathError::MissingLine { minor: 34, .. })
        ));
        assert!(matches!(
            check_hop(&k("v1.33.4+k3s2"), &k("v1.33.4+k3s1"), &K3S),
            Err(PathError::Downgrade { .. })
        ));
        assert!(check_hop(&sv("v2.3.2"), &sv("v2.3.0"), &FLUX).is_ok());
        assert!(matches!(
            check_hop(&sv("v2.3.0"), &sv("v2.2.9"), &FLUX),
            Err(PathError::MinorDowngrade { .. })
        ));
        assert!(check_hop(&sv("v2.3.0"), &sv("v2.6.0"), &FLUX).is_ok());
    }

    #[test]
    fn plan_fills_skipped_minors_with_the_newest_patch() {
        let avail: Vec<_> = [
            "v1.31.4+k3s1",
            "v1.32.0+k3s1",
            "v1.32.5+k3s1",
            "v1.32.6-rc1+k3s1",
            "v1.32.5+k3s2",
            "v1.33.0+k3s1",
            "v1.33.2+k3s1",
        ]
        .iter()
        .map(|s| k(s))
        .collect();
        let path = plan_path(&k("v1.31.4+k3s1"), &k("v1.33.2+k3s1"), &avail, &K3S).unwrap();
        let names: Vec<_> = path.iter().map(|v| v.to_string()).collect();
        assert_eq!(names, ["v1.32.5+k3s2", "v1.33.2+k3s1"]);
        let none = plan_path(&k("v1.31.4+k3s1"), &k("v1.31.4+k3s1"), &avail, &K3S).unwrap();
        assert!(none.is_empty());
        let gap = plan_path(&k("v1.29.1+k3s1"), &k("v1.31.4+k3s1"), &avail, &K3S).unwrap_err();
        assert_eq!(
            gap.to_string(),
            "v1.29.1+k3s1 -> v1.31.4+k3s1 skips a minor: v1.30 must be applied in between, and no release of it is available"
        );
    }

    #[test]
    fn major_crossing_with_step_rule() {
        let rule = PathRule {
            max_minor_step: Some(1),
            downgrade: Downgrade::Never,
        };
        assert!(check_hop(&sv("v1.9.3"), &sv("v2.0.1"), &rule).is_ok());
        assert!(check_hop(&sv("v1.9.3"), &sv("v2.1.0"), &rule).is_err());
        let avail = vec![sv("v2.0.0"), sv("v2.0.2"), sv("v2.1.0")];
        let p = plan_path(&sv("v1.9.3"), &sv("v2.1.0"), &avail, &rule).unwrap();
        assert_eq!(p, vec![sv("v2.0.2"), sv("v2.1.0")]);
    }

    #[test]
    fn huge_numbers_do_not_overflow() {
        let big = sv("v1.18446744073709551615.0");
        assert!(check_hop(&sv("v1.0.0"), &big, &K3S_LIKE).is_err());
        assert!(plan_path(&sv("v1.0.0"), &big, &[], &K3S_LIKE).is_err());
        let huge_major = sv("v18446744073709551615.0.0");
        assert!(check_hop(&huge_major, &huge_major, &K3S_LIKE).is_ok());
    }
    const K3S_LIKE: PathRule = PathRule {
        max_minor_step: Some(1),
        downgrade: Downgrade::Never,
    };

    #[test]
    fn ranges_accept_v_prefixes() {
        let r = parse_range(">=v1.9.0, <1.11.0").unwrap();
        assert!(in_range(&sv("v1.10.3"), &r));
        assert!(!in_range(&sv("v1.11.0"), &r));
        assert!(in_range(&k("v1.10.3+k3s2"), &r));
        assert!(parse_range("banana").is_err());
    }
}
