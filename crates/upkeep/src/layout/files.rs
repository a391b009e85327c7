//! The files of a config repository, in memory: what Flux's source-controller would put in
//! its artifact, read once from a checkout with bounds (a hostile repository cannot make
//! upkeep read without end), and parsed on demand.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex};

use super::yaml::{self, Node};

/// Files larger than this are listed but not read.
const MAX_FILE_BYTES: u64 = 2 * 1024 * 1024;
/// At most this many files are listed.
const MAX_FILES: usize = 20_000;
/// At most this many bytes are read in all.
const MAX_TOTAL_BYTES: u64 = 128 * 1024 * 1024;
const MAX_DEPTH: usize = 24;

/// Paths relative to the repository's root, with `/` separators.
/// One file's documents, parsed once and shared.
type Parsed = Arc<Result<Vec<Node>, yaml::ParseError>>;

#[derive(Debug, Default)]
pub struct Files {
    /// Text of the files that were read (YAML, JSON, `.env`, and files named `Kustomization`).
    text: BTreeMap<String, String>,
    /// Every file listed, read or not.
    all: std::collections::BTreeSet<String>,
    /// Why some files were not read (too large, not UTF-8, over a limit).
    pub skipped: Vec<(String, String)>,
    parsed: Mutex<BTreeMap<String, Parsed>>,
}

fn readable(name: &str) -> bool {
    let lower = name.to_ascii_lowercase();
    [".yaml", ".yml", ".json", ".env"]
        .iter()
        .any(|e| lower.ends_with(e))
        || name == "Kustomization"
}

impl Files {
    /// The files of the checkout at `root` (dot-files and symbolic links are left out, as a
    /// checkout's `.git` must be).
    pub fn from_dir(root: &Path) -> Files {
        let mut f = Files::default();
        let mut total = 0u64;
        f.walk(root, root, 0, &mut total);
        f
    }

    /// Files given as (path, text), for tests and for what a forge serves.
    pub fn from_pairs<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> Files {
        let mut f = Files::default();
        for (p, t) in pairs {
            let p = normalize(p);
            f.all.insert(p.clone());
            f.text.insert(p, t.to_string());
        }
        f
    }

    /// Files listed by a git tree: (path, text when it was read).
    pub fn from_listing(listing: impl IntoIterator<Item = (String, Option<String>)>) -> Files {
        let mut f = Files::default();
        for (p, t) in listing {
            if p.split('/').any(|c| c.starts_with('.')) {
                continue;
            }
            f.all.insert(p.clone());
            if let Some(t) = t {
                f.text.insert(p, t);
            }
        }
        f
    }

    fn walk(&mut self, root: &Path, dir: &Path, depth: usize, total: &mut u64) {
        if depth > MAX_DEPTH || self.all.len() >= MAX_FILES {
            return;
        }
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        let mut entries: Vec<_> = entries.flatten().collect();
        entries.sort_by_key(|e| e.file_name());
        for e in entries {
            let path = e.path();
            let Ok(meta) = std::fs::symlink_metadata(&path) else {
                continue;
            };
            let name = e.file_name().to_string_lossy().into_owned();
            if name.starts_with('.') || meta.file_type().is_symlink() {
                continue;
            }
            let rel = path
                .strip_prefix(root)
                .map(|p| p.to_string_lossy().replace('\\', "/"))
                .unwrap_or_else(|_| name.clone());
            if meta.is_dir() {
                self.walk(root, &path, depth + 1, total);
                continue;
            }
            if self.all.len() >= MAX_FILES {
                self.skipped
                    .push((rel, format!("more than {MAX_FILES} files")));
                return;
            }
            self.all.insert(rel.clone());
            if !readable(&name) {
                continue;
            }
            if meta.len() > MAX_FILE_BYTES || *total + meta.len() > MAX_TOTAL_BYTES {
                self.skipped
                    .push((rel, format!("larger than {MAX_FILE_BYTES} bytes")));
                continue;
            }
            match std::fs::read(&path).map(String::from_utf8) {
                Ok(Ok(t)) => {
                    *total += meta.len();
                    self.text.insert(rel, t);
                }
                Ok(Err(_)) => self.skipped.push((rel, "not UTF-8 text".into())),
                Err(e) => self.skipped.push((rel, e.to_string())),
            }
        }
    }

    pub fn text(&self, path: &str) -> Option<&str> {
        self.text.get(path).map(String::as_str)
    }

    pub fn exists(&self, path: &str) -> bool {
        self.all.contains(path)
    }

    /// Whether `dir` holds any file.
    pub fn is_dir(&self, dir: &str) -> bool {
        if dir.is_empty() {
            return !self.all.is_empty();
        }
        let prefix = format!("{dir}/");
        self.all
            .range(prefix.clone()..)
            .next()
            .is_some_and(|p| p.starts_with(&prefix))
    }

    /// Files under `dir` (recursively), in lexical order.
    pub fn under<'a>(&'a self, dir: &str) -> impl Iterator<Item = &'a str> + 'a {
        let prefix = if dir.is_empty() {
            String::new()
        } else {
            format!("{dir}/")
        };
        self.all
            .range(prefix.clone()..)
            .take_while(move |p| p.starts_with(&prefix))
            .map(String::as_str)
    }

    /// Every file that was read, with its text.
    pub fn texts(&self) -> impl Iterator<Item = (&str, &str)> {
        self.text.iter().map(|(p, t)| (p.as_str(), t.as_str()))
    }

    /// The YAML documents of `path`, parsed once.
    pub fn docs(&self, path: &str) -> Option<Arc<Result<Vec<Node>, yaml::ParseError>>> {
        let text = self.text.get(path)?;
        let mut cache = self.parsed.lock().unwrap_or_else(|e| e.into_inner());
        Some(
            cache
                .entry(path.to_string())
                .or_insert_with(|| Arc::new(yaml::parse_stream(text)))
                .clone(),
        )
    }
}

/// `a/./b/../c` -> `a/c`; leading `./` and `/` dropped.
pub fn normalize(p: &str) -> String {
    join("", p)
}

/// `rel` resolved against the directory `dir`; `None`-free: `..` above the root stays at the
/// root, as kustomize-controller's secure join does.
pub fn join(dir: &str, rel: &str) -> String {
    let mut parts: Vec<&str> = if rel.starts_with('/') {
        Vec::new()
    } else {
        dir.split('/')
            .filter(|p| !p.is_empty() && *p != ".")
            .collect()
    };
    for p in rel.split('/') {
        match p {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            x => parts.push(x),
        }
    }
    parts.join("/")
}

/// The directory part of a path ("" at the root).
pub fn parent(path: &str) -> &str {
    path.rsplit_once('/').map_or("", |(d, _)| d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_join_like_a_secure_join() {
        assert_eq!(join("a/b", "../c/./d.yaml"), "a/c/d.yaml");
        assert_eq!(join("a", "../../x"), "x");
        assert_eq!(normalize("./clusters/main/"), "clusters/main");
        assert_eq!(parent("a/b/c.yaml"), "a/b");
        assert_eq!(parent("c.yaml"), "");
    }

    #[test]
    fn a_checkout_is_read_with_bounds() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let w = |p: &str, t: &[u8]| {
            let p = dir.path().join(p);
            let _ = std::fs::create_dir_all(p.parent().unwrap_or(dir.path()));
            let _ = std::fs::write(p, t);
        };
        w("a/k.yaml", b"kind: A\n");
        w("a/notes.md", b"hello");
        w(".git/config", b"secret");
        w("b/bin.yaml", &[0xff, 0xfe]);
        let f = Files::from_dir(dir.path());
        assert_eq!(f.text("a/k.yaml"), Some("kind: A\n"));
        assert!(f.exists("a/notes.md") && f.text("a/notes.md").is_none());
        assert!(!f.exists(".git/config"));
        assert_eq!(f.skipped.len(), 1);
        assert!(f.is_dir("a") && !f.is_dir("c"));
        assert_eq!(f.under("a").count(), 2);
    }
}
