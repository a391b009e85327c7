//! How the config repository is laid out, read the way Flux builds it: which objects carry
//! each component's version, where exactly that is written (a file, a line, a postBuild
//! variable's definition), and the in-place edit that changes it.
//!
//! It sits on the model's floor: plain functions over the repository's files (read once from a
//! checkout into [`Files`]), no cluster and no network. `upkeep validate`, `plan`, `apply` and
//! `rehearse` all read the repository through it.
//!
//! - [`yaml`]: YAML with positions, and the one in-place scalar edit;
//! - [`files`]: the repository's files, bounded;
//! - [`build`]: kustomize and Flux Kustomizations, as Flux builds them;
//! - [`subst`]: postBuild variables;
//! - [`carriers`]: component -> the fields that carry its version.

pub mod build;
pub mod carriers;
pub mod check;
pub mod files;
pub mod route;
pub mod subst;
pub mod yaml;

use std::path::Path;

pub use build::{KsId, Layout, Loc, Obj};
pub use carriers::{Carrier, EditAt, Field, Mapping};
pub use files::Files;

use crate::model::Runs;

/// A repository read for one cluster.
#[derive(Debug)]
pub struct Reading {
    pub files: Files,
    pub layout: Layout,
    /// The cluster's directory ("" for the root).
    pub subdir: String,
    /// The other clusters of the same repository (their directory, and their reading), read
    /// once when first asked.
    shared: std::sync::OnceLock<Vec<(String, Layout)>>,
}

impl Reading {
    /// Read the checkout at `root` for the cluster in `subdir`.
    pub fn of_dir(root: &Path, subdir: &str) -> Reading {
        Reading::of_files(Files::from_dir(root), subdir)
    }

    pub fn of_files(files: Files, subdir: &str) -> Reading {
        let layout = build::read(&files, subdir);
        Reading {
            files,
            layout,
            subdir: files::normalize(subdir),
            shared: std::sync::OnceLock::new(),
        }
    }

    /// Where `component` (which `runs` as said) carries its version. A place that another
    /// cluster's Flux tree takes the same version from is an error: changing it in this
    /// cluster's window would change that cluster at once, outside its window and its preflight.
    pub fn carriers(&self, component: &str, runs: &Runs) -> Mapping {
        let mut m = carriers::carriers(&self.files, &self.layout, component, runs);
        let mut shared = Vec::new();
        for c in &m.carriers {
            let Ok(edit) = &c.edit else { continue };
            let mut who: Vec<String> = Vec::new();
            for (path, layout) in self.others() {
                let theirs = carriers::carriers(&self.files, layout, component, runs);
                let same = theirs.carriers.iter().any(|o| match &o.edit {
                    Ok(e) => e.loc.file == edit.loc.file && e.loc.node.start == edit.loc.node.start,
                    Err(_) => o.file == c.file && o.pos == c.pos,
                });
                if same {
                    who.push(format!("the cluster of {path}"));
                }
            }
            if !who.is_empty() {
                shared.push(
                    crate::diag::Diagnostic::error(
                        &edit.loc.file,
                        edit.loc.pos(),
                        format!(
                            "{} carries {component}'s version here, and {} takes its version from the same place: changing it in this cluster's window would change that cluster at once, outside its window and without its preflight or backup",
                            c.object,
                            who.join(" and ")
                        ),
                    )
                    .hint("give each cluster its own version: a patch or a postBuild variable in each cluster's directory, or a file per cluster"),
                );
            }
        }
        m.problems.extend(shared);
        m
    }

    /// The other clusters of the repository (Flux entry points outside this cluster's
    /// directory), each read as its own: a whole-repository reading would build a Kustomization
    /// two clusters share only once.
    fn others(&self) -> &[(String, Layout)] {
        self.shared.get_or_init(|| {
            if self.subdir.is_empty() {
                return Vec::new();
            }
            let within =
                |a: &str, b: &str| b.is_empty() || a == b || a.starts_with(&format!("{b}/"));
            let paths: std::collections::BTreeSet<String> = build::read(&self.files, "")
                .entries
                .into_iter()
                .map(|(path, _)| path)
                .filter(|p| !within(p, &self.subdir) && !within(&self.subdir, p))
                .collect();
            paths
                .into_iter()
                .map(|p| {
                    let l = build::read(&self.files, &p);
                    (p, l)
                })
                .collect()
        })
    }
}

/// Whether two spellings name the same version (`v1.9.1` and `1.9.1`).
pub fn same_version(a: &str, b: &str) -> bool {
    a.trim_start_matches('v') == b.trim_start_matches('v')
}

/// `to` in the spelling of `like`: with a leading `v` when `like` has one, without otherwise.
pub fn spelled_like(like: &str, to: &str) -> String {
    let bare = to.trim_start_matches('v');
    if like.starts_with('v') {
        format!("v{bare}")
    } else {
        bare.to_string()
    }
}

/// Why an edit could not be made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EditError {
    #[error("{file}:{line}:{column}: cannot change the version there: {why}")]
    Scalar {
        file: String,
        line: u64,
        column: u64,
        why: yaml::EditError,
    },
    #[error("{file}: not in the repository")]
    Missing { file: String },
}

/// Write `to` at each of `edits` (several may be in one file; the same place twice is written
/// once). The new text of every file changed, by path. Nothing is written when one fails.
pub fn write_versions(
    files: &Files,
    edits: &[(&EditAt, &str)],
) -> Result<std::collections::BTreeMap<String, String>, EditError> {
    use std::collections::BTreeMap;
    let mut by_file: BTreeMap<&str, Vec<(&EditAt, &str)>> = BTreeMap::new();
    for (e, to) in edits {
        let list = by_file.entry(e.loc.file.as_str()).or_default();
        if !list
            .iter()
            .any(|(x, _)| x.loc.node.start == e.loc.node.start)
        {
            list.push((e, to));
        }
    }
    let mut out = BTreeMap::new();
    for (file, mut list) in by_file {
        let mut text = files
            .text(file)
            .ok_or_else(|| EditError::Missing {
                file: file.to_string(),
            })?
            .to_string();
        // From the end of the file, so that earlier offsets stay right.
        list.sort_by_key(|(e, _)| std::cmp::Reverse(e.loc.node.start));
        for (e, to) in list {
            let old = e.loc.node.as_str().unwrap_or("");
            let version = old
                .strip_prefix(e.prefix.as_str())
                .and_then(|v| v.strip_suffix(e.suffix.as_str()))
                .unwrap_or(old);
            let new = format!("{}{}{}", e.prefix, spelled_like(version, to), e.suffix);
            text = yaml::replace(&text, &e.loc.node, &new).map_err(|why| EditError::Scalar {
                file: file.to_string(),
                line: e.loc.node.pos.line,
                column: e.loc.node.pos.column,
                why,
            })?;
        }
        out.insert(file.to_string(), text);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_are_written_in_the_files_spelling() {
        let files =
            Files::from_pairs([("a.yaml", "spec:\n  one: v1.9.1 # keep\n  two: \"1.9.1\"\n")]);
        let docs = yaml::parse_stream(files.text("a.yaml").unwrap_or("")).unwrap_or_default();
        let at = |k: &str| EditAt {
            loc: Loc {
                file: "a.yaml".into(),
                node: docs[0]
                    .at(&["spec", k])
                    .cloned()
                    .unwrap_or_else(|| docs[0].clone()),
                inline: None,
            },
            prefix: String::new(),
            suffix: String::new(),
            variable: None,
        };
        let (one, two) = (at("one"), at("two"));
        let out = write_versions(&files, &[(&one, "1.10.2"), (&two, "v1.10.2")]).expect("edit");
        assert_eq!(
            out["a.yaml"],
            "spec:\n  one: v1.10.2 # keep\n  two: \"1.10.2\"\n"
        );
        assert!(same_version("v1.2.3", "1.2.3"));
    }
}
