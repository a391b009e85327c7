//! Reading a config repo safely: every problem becomes a [`Diagnostic`] with a position, and no
//! input can make the loader panic, hang or exhaust memory.
//!
//! Guards: files over [`MAX_FILE_BYTES`] are refused before parsing; bytes must be UTF-8; symlinks
//! must stay inside the repo; YAML runs under a budget (alias bombs, deep nesting, huge scalars);
//! duplicate keys and unknown fields are errors.

use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use serde::de::DeserializeOwned;

use super::files::{PolicyFile, VersionsFile};
use super::{ConfigRepo, MAX_FILE_BYTES, suggest};
use crate::diag::{self, Diagnostic, Pos};

/// Problems that stop `load_repo` before any file is read (usage errors, exit code 2).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(
        "{0}: no such directory (hint: point --repo at a cluster directory holding versions.yaml)"
    )]
    NotFound(PathBuf),
    #[error(
        "{0}: not a directory (hint: point --repo at a cluster directory holding versions.yaml)"
    )]
    NotADirectory(PathBuf),
    #[error("{path}: cannot read: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The versions file's name inside a cluster directory.
pub const VERSIONS_FILE: &str = "versions.yaml";
/// The policies directory inside a cluster directory.
pub const POLICIES_DIR: &str = "policies";
/// More policy files than this is surely a mistake.
const MAX_POLICY_FILES: usize = 256;

/// A loaded config repo: the model when it is valid, and every problem found.
#[derive(Debug)]
pub struct Loaded {
    pub repo: Option<ConfigRepo>,
    pub diagnostics: Vec<Diagnostic>,
}

impl Loaded {
    pub fn errors(&self) -> usize {
        self.diagnostics.iter().filter(|d| d.is_error()).count()
    }
    pub fn warnings(&self) -> usize {
        self.diagnostics.len() - self.errors()
    }
}

/// Load and check the cluster directory at `root` (the directory holding `versions.yaml` and
/// `policies/`), judging windows from `now`.
pub fn load_repo(root: &Path, now: DateTime<Utc>) -> Result<Loaded> {
    let meta = fs::metadata(root).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => Error::NotFound(root.to_path_buf()),
        _ => Error::Io {
            path: root.to_path_buf(),
            source: e,
        },
    })?;
    if !meta.is_dir() {
        return Err(Error::NotADirectory(root.to_path_buf()));
    }
    let canon = fs::canonicalize(root).map_err(|e| Error::Io {
        path: root.to_path_buf(),
        source: e,
    })?;

    let mut diags = Vec::new();
    let versions = match read_text(&canon, VERSIONS_FILE) {
        Ok(Some(text)) => match parse_yaml::<VersionsFile>(VERSIONS_FILE, &text) {
            Ok(v) => {
                diags.extend(shared_versions(&v, &text));
                Some(v)
            }
            Err(d) => {
                diags.push(d);
                None
            }
        },
        Ok(None) => {
            diags.push(
                Diagnostic::error(VERSIONS_FILE, Pos::START, "versions.yaml is missing")
                    .hint("a cluster directory holds versions.yaml and policies/; see examples/cluster-repo"),
            );
            None
        }
        Err(d) => {
            diags.push(d);
            None
        }
    };

    let mut policies = Vec::new();
    let mut policies_ok = true;
    for rel in policy_files(&canon, &mut diags) {
        match read_text(&canon, &rel).and_then(|t| match t {
            Some(t) => parse_yaml::<PolicyFile>(&rel, &t).map(Some),
            None => Ok(None),
        }) {
            Ok(Some(p)) => policies.push((rel, p)),
            Ok(None) => {}
            Err(d) => {
                policies_ok = false;
                diags.push(d);
            }
        }
    }

    let repo = super::resolve::resolve(versions.as_ref(), &policies, now, &mut diags);
    let parsed_all = versions.is_some() && policies_ok;
    diag::sort(&mut diags);
    let has_errors = diags.iter().any(Diagnostic::is_error);
    Ok(Loaded {
        repo: repo.filter(|_| parsed_all && !has_errors),
        diagnostics: diags,
    })
}

/// The `*.yaml` / `*.yml` files directly in `policies/`, sorted by name, as repo-relative paths.
fn policy_files(root: &Path, diags: &mut Vec<Diagnostic>) -> Vec<String> {
    let dir = root.join(POLICIES_DIR);
    let Ok(meta) = fs::symlink_metadata(&dir) else {
        return Vec::new();
    };
    if meta.file_type().is_symlink() && !inside(root, &dir) {
        diags.push(
            Diagnostic::error(
                POLICIES_DIR,
                Pos::START,
                "policies/ is a symlink that points outside the repository",
            )
            .hint("keep policies inside the config repo so that git tracks them"),
        );
        return Vec::new();
    }
    let entries = match fs::read_dir(&dir) {
        Ok(e) => e,
        Err(e) => {
            diags.push(Diagnostic::error(
                POLICIES_DIR,
                Pos::START,
                format!("cannot read policies/: {e}"),
            ));
            return Vec::new();
        }
    };
    let mut names: Vec<String> = Vec::new();
    for e in entries.filter_map(|e| e.ok()) {
        let Some(n) = e.file_name().to_str().map(str::to_string) else {
            continue;
        };
        if n.starts_with('.') {
            continue;
        }
        let lower = n.to_ascii_lowercase();
        let yaml = lower.ends_with(".yaml") || lower.ends_with(".yml");
        let is_dir = e.file_type().is_ok_and(|t| t.is_dir());
        if n.ends_with(".yaml") || n.ends_with(".yml") {
            names.push(n);
        } else if yaml {
            // A policy upkeep would not read (a freeze in it would not hold): say so.
            diags.push(
                Diagnostic::warning(
                    &format!("{POLICIES_DIR}/{n}"),
                    Pos::START,
                    "this file is not read: policy files end in .yaml or .yml, in lower case",
                )
                .hint("rename it"),
            );
        } else if is_dir {
            diags.push(
                Diagnostic::warning(
                    &format!("{POLICIES_DIR}/{n}"),
                    Pos::START,
                    "files in subdirectories of policies/ are not read",
                )
                .hint("move the policy files directly into policies/"),
            );
        }
    }
    names.sort();
    if names.len() > MAX_POLICY_FILES {
        diags.push(Diagnostic::error(
            POLICIES_DIR,
            Pos::START,
            format!(
                "policies/ holds {} YAML files; upkeep reads at most {MAX_POLICY_FILES}",
                names.len()
            ),
        ));
        names.truncate(MAX_POLICY_FILES);
    }
    names
        .into_iter()
        .map(|n| format!("{POLICIES_DIR}/{n}"))
        .collect()
}

fn inside(root: &Path, p: &Path) -> bool {
    fs::canonicalize(p).is_ok_and(|c| c.starts_with(root))
}

/// Read a repo file as text. `Ok(None)` when it does not exist.
fn read_text(root: &Path, rel: &str) -> std::result::Result<Option<String>, Diagnostic> {
    let path = root.join(rel);
    let err = |msg: String| Diagnostic::error(rel, Pos::START, msg);
    let meta = match fs::symlink_metadata(&path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(err(format!("cannot read: {e}"))),
    };
    let meta = if meta.file_type().is_symlink() {
        let target = fs::canonicalize(&path).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => err("is a symlink to nothing (dangling)".into())
                .hint("remove the link or restore its target"),
            // ELOOP: the link leads back to itself, directly or through other links.
            _ if e.raw_os_error() == Some(40) => {
                err("is a symlink loop: following it leads back to a link already followed".into())
                    .hint("point the link at a real file")
            }
            _ => err(format!("is a symlink that cannot be followed: {e}")),
        })?;
        if !target.starts_with(root) {
            return Err(err(format!(
                "is a symlink that points outside the repository (to {})",
                target.display()
            ))
            .hint("upkeep reads only files inside the config repo; copy the file in instead"));
        }
        fs::metadata(&target).map_err(|e| err(format!("cannot read: {e}")))?
    } else {
        meta
    };
    if !meta.is_file() {
        return Err(err("is not a regular file".into()));
    }
    if meta.len() > MAX_FILE_BYTES {
        return Err(err(format!(
            "the file is {} bytes, more than the {} KiB upkeep reads",
            meta.len(),
            MAX_FILE_BYTES / 1024
        ))
        .hint("config files are small; is this the right file?"));
    }
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    fs::File::open(&path)
        .and_then(|f| f.take(MAX_FILE_BYTES + 1).read_to_end(&mut bytes))
        .map_err(|e| err(format!("cannot read: {e}")))?;
    if bytes.len() as u64 > MAX_FILE_BYTES {
        return Err(err(format!(
            "the file grew past {} KiB while being read",
            MAX_FILE_BYTES / 1024
        )));
    }
    decode(rel, bytes).map(Some)
}

/// UTF-8 (an optional BOM is dropped), or an error at the first bad byte.
pub fn decode(rel: &str, bytes: Vec<u8>) -> std::result::Result<String, Diagnostic> {
    match String::from_utf8(bytes) {
        Ok(s) => Ok(s.strip_prefix('\u{feff}').map(str::to_string).unwrap_or(s)),
        Err(e) => {
            let at = e.utf8_error().valid_up_to();
            let bytes = e.into_bytes();
            let pos = diag::pos_of_offset(&bytes, at);
            Err(Diagnostic::error(
                rel,
                pos,
                format!(
                    "the file is not UTF-8 (byte 0x{:02x} at offset {at})",
                    bytes[at]
                ),
            )
            .hint("save it as UTF-8"))
        }
    }
}

fn yaml_options() -> serde_saphyr::Options {
    let mut budget = serde_saphyr::Budget::default();
    budget.max_total_scalar_bytes = 4 * MAX_FILE_BYTES as usize;
    budget.max_aliases = 10_000;
    budget.max_depth = 64;
    let mut opts = serde_saphyr::options! { with_snippet: false };
    opts.budget = Some(budget);
    opts.alias_limits.max_total_replayed_events = 200_000;
    opts
}

/// Parse one YAML document into `T`, turning any error into a positioned diagnostic.
pub fn parse_yaml<T: DeserializeOwned>(
    rel: &str,
    text: &str,
) -> std::result::Result<T, Diagnostic> {
    if text.trim().is_empty()
        || text
            .lines()
            .all(|l| l.trim().is_empty() || l.trim_start().starts_with('#'))
    {
        return Err(Diagnostic::error(rel, Pos::START, "the file is empty")
            .hint("start it with `apiVersion: upkeep.dev/v1alpha1` and a `kind`"));
    }
    let value = serde_saphyr::from_str_with_options::<T>(text, yaml_options())
        .map_err(|e| yaml_diag(rel, &e))?;
    match foreign_tag(rel, text) {
        Some(d) => Err(d),
        None => Ok(value),
    }
}

/// Components whose version is a scalar shared through an anchor and an alias. A proposal
/// rewrites the version's text in place, so a PR for one component would change the other too.
fn shared_versions(v: &VersionsFile, text: &str) -> Vec<Diagnostic> {
    use granit_parser::{Event, Parser};
    use std::collections::{BTreeMap, BTreeSet};
    // The scalars under each anchor (an anchored scalar, or all scalars of an anchored mapping
    // or sequence), and the anchors of the collections open around the current event.
    let mut members: BTreeMap<usize, Vec<(u64, u64)>> = BTreeMap::new();
    let mut open: Vec<usize> = Vec::new();
    let mut shared: BTreeSet<(u64, u64)> = BTreeSet::new();
    for item in Parser::new_from_str(text) {
        let Ok((event, span)) = item else { break };
        let at = (span.start.line() as u64, span.start.col() as u64 + 1);
        match event {
            Event::Scalar(_, _, id, _) => {
                for a in open.iter().copied().chain([id]).filter(|a| *a > 0) {
                    members.entry(a).or_default().push(at);
                }
            }
            Event::MappingStart(_, id, _) | Event::SequenceStart(_, id, _) => open.push(id),
            Event::MappingEnd | Event::SequenceEnd => {
                open.pop();
            }
            Event::Alias(id) => {
                shared.extend(members.get(&id).into_iter().flatten().copied());
                shared.insert(at);
            }
            Event::StreamEnd => break,
            _ => {}
        }
    }
    // A whole mapping shared through an alias (or a `<<` merge) replays the same scalar.
    let mut seen = BTreeSet::new();
    for (_, e) in &v.components.0 {
        let at = (e.version.pos.line, e.version.pos.column);
        if !seen.insert(at) {
            shared.insert(at);
        }
    }
    v.components
        .0
        .iter()
        .filter(|(_, e)| shared.contains(&(e.version.pos.line, e.version.pos.column)))
        .map(|(name, e)| {
            Diagnostic::error(
                VERSIONS_FILE,
                e.version.pos,
                format!(
                    "the version of `{}` is shared with another value through a YAML anchor and alias: a pull request for `{}` would change both",
                    name.value, name.value
                ),
            )
            .hint("write each component's version out in full")
        })
        .collect()
}

/// The first YAML tag outside the core schema (`!foo`, `!!python/object`), as an error. serde
/// reads a tagged value as if the tag were not there, so a tag that means something to the
/// author (an include, a secret reference) would be silently dropped. Syntax errors are left to
/// the deserializer, which has already accepted `text`.
fn foreign_tag(rel: &str, text: &str) -> Option<Diagnostic> {
    use granit_parser::{Event, Parser};
    for item in Parser::new_from_str(text) {
        let (event, span) = item.ok()?;
        let tag = match &event {
            Event::Scalar(_, _, _, tag)
            | Event::SequenceStart(_, _, tag)
            | Event::MappingStart(_, _, tag) => tag.as_ref(),
            Event::StreamEnd => return None,
            _ => None,
        };
        if let Some(tag) = tag.filter(|t| t.core_suffix().is_none()) {
            let pos = Pos {
                line: span.start.line() as u64,
                column: span.start.col() as u64 + 1,
            };
            let written: String = tag.original().chars().take(80).collect();
            return Some(
                Diagnostic::error(
                    rel,
                    pos,
                    format!(
                        "unknown YAML tag `{}`: upkeep does not act on tags, so what it asks for would be silently ignored",
                        written.escape_debug()
                    ),
                )
                .hint("remove the tag and write the value itself"),
            );
        }
    }
    None
}

fn yaml_diag(rel: &str, e: &serde_saphyr::Error) -> Diagnostic {
    let pos = e
        .location()
        .map(|l| Pos {
            line: l.line(),
            column: l.column(),
        })
        .unwrap_or(Pos::START);
    let full = e.to_string();
    let cut = [" (defined at line ", " at line "]
        .iter()
        .filter_map(|m| full.find(m))
        .min();
    let msg = match cut {
        Some(i) => full[..i].to_string(),
        None => full.clone(),
    };
    let d = |m: String| Diagnostic::error(rel, pos, m);
    if msg.starts_with("budget breached")
        || msg.contains("alias replay")
        || msg.contains("alias expansion")
    {
        return d(
            "the YAML expands to more than upkeep accepts (an alias bomb, or nesting too deep)"
                .into(),
        )
        .hint("config files need no more than a few anchors; write the values out");
    }
    if let Some(rest) = msg.strip_prefix("unknown field `") {
        let (field, expected) = split_expected(rest);
        let mut hint = format!("allowed here: {}", expected.join(", "));
        if let Some(s) = suggest(field, expected.iter().map(String::as_str)) {
            hint = format!("did you mean `{s}`? {hint}");
        }
        return d(format!("unknown field `{field}`")).hint(hint);
    }
    if let Some(rest) = msg.strip_prefix("unknown variant `") {
        let (v, expected) = split_expected(rest);
        return d(format!("unknown value `{v}`"))
            .hint(format!("use one of: {}", expected.join(", ")));
    }
    if let Some(rest) = msg.strip_prefix("duplicate mapping key: ") {
        let key = rest.split(',').next().unwrap_or(rest).trim();
        return d(format!("duplicate key `{key}`"))
            .hint("each key may appear once in a mapping; merge the two entries");
    }
    if let Some(rest) = msg.strip_prefix("missing field `") {
        let f = rest.trim_end_matches('`');
        return d(format!("missing field `{f}`")).hint(format!("add `{f}:`"));
    }
    if msg.starts_with("multiple YAML documents") {
        return d("the file holds more than one YAML document".into())
            .hint("use one document (no `---` between documents) per file");
    }
    if msg.contains("null") && msg.to_lowercase().contains("string") {
        return d("a value is missing here".into()).hint("write a value after the colon");
    }
    let typed = [
        (
            "invalid u8",
            "expected a whole number of 0 or more",
            "write a number like 5",
        ),
        (
            "invalid u16",
            "expected a whole number of 0 or more",
            "write a number like 5",
        ),
        (
            "invalid u32",
            "expected a whole number of 0 or more",
            "write a number like 5",
        ),
        (
            "invalid u64",
            "expected a whole number of 0 or more",
            "write a number like 5",
        ),
        (
            "invalid boolean",
            "expected true or false",
            "write true or false",
        ),
        (
            "expected mapping",
            "expected a mapping (`key: value` lines) here",
            "see docs/config.md for the file format",
        ),
        (
            "expected sequence",
            "expected a list here",
            "write a list like `[a, b]`",
        ),
        (
            "expected string",
            "expected a single value here, not a list or mapping",
            "write a plain value like v1.33.4+k3s1",
        ),
    ];
    if let Some((_, m, h)) = typed
        .iter()
        .find(|(p, _, _)| msg == *p || msg.starts_with(&format!("{p} ")))
    {
        return d((*m).to_string()).hint(*h);
    }
    let syntax = [
        "parsing",
        "unclosed",
        "indentation",
        "did not find",
        "not allowed",
        "found",
        "unexpected",
    ];
    if syntax.iter().any(|w| msg.contains(w)) {
        return d(format!("invalid YAML: {msg}"))
            .hint("check the indentation, quotes and brackets here");
    }
    d(msg)
}

/// `foo`, expected one of a, b, c` -> ("foo", [a, b, c])
fn split_expected(rest: &str) -> (&str, Vec<String>) {
    let (name, tail) = rest.split_once('`').unwrap_or((rest, ""));
    let list = tail
        .split_once("expected one of ")
        .or_else(|| tail.split_once("expected "))
        .map(|(_, l)| l)
        .unwrap_or("");
    let expected = list
        .split(',')
        .flat_map(|s| s.split(" or "))
        .map(|s| s.trim().trim_matches('`').to_string())
        .filter(|s| !s.is_empty())
        .collect();
    (name, expected)
}
