//! The response cache: for each URL, the ETag of its last 200 answer and what upkeep read from it
//! (the parsed, trimmed releases and the next page's URL), so that an unchanged source costs one
//! conditional request answered `304 Not Modified`.
//!
//! One small JSON file per URL in the cache directory, written atomically (temporary file, then
//! rename). Anything unreadable is discarded with a warning: the cache can only save requests,
//! never fail a run.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::UpstreamRelease;

/// Bumped when the entry format changes; older entries are then discarded.
const FORMAT: u32 = 1;
/// An entry larger than this is not ours (or is damaged).
const MAX_ENTRY_BYTES: u64 = 16 * 1024 * 1024;

/// One cached page of a listing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Page {
    pub format: u32,
    pub url: String,
    pub etag: String,
    pub next: Option<String>,
    pub releases: Vec<UpstreamRelease>,
}

impl Page {
    pub fn new(
        url: &str,
        etag: &str,
        next: Option<String>,
        releases: Vec<UpstreamRelease>,
    ) -> Page {
        Page {
            format: FORMAT,
            url: url.to_string(),
            etag: etag.to_string(),
            next,
            releases,
        }
    }
}

#[derive(Debug)]
pub struct Cache {
    dir: Option<PathBuf>,
}

impl Cache {
    /// A cache in `dir`, created when missing; `None` (or a directory that cannot be created)
    /// gives a cache that remembers nothing.
    pub fn open(dir: Option<PathBuf>) -> Arc<Cache> {
        let dir = dir.and_then(|d| match crate::create_private_dir(&d) {
            Ok(()) => Some(d),
            Err(e) => {
                tracing::warn!(dir = %d.display(), error = %e, "cannot create the cache directory; running without a cache");
                None
            }
        });
        Arc::new(Cache { dir })
    }

    fn path(&self, url: &str) -> Option<PathBuf> {
        let dir = self.dir.as_ref()?;
        Some(dir.join(format!("{:016x}.json", fnv1a(url.as_bytes()))))
    }

    /// A file of the cache directory for another kind of record (e.g. an OCI repository's
    /// first-seen times); `None` without a cache directory.
    pub(crate) fn file(&self, name: &str) -> Option<PathBuf> {
        Some(self.dir.as_ref()?.join(name))
    }

    /// The cached page for `url`, if there is a sound one.
    pub fn get(&self, url: &str) -> Option<Page> {
        let path = self.path(url)?;
        let meta = fs::metadata(&path).ok()?;
        let discard = |why: &str| {
            tracing::warn!(file = %path.display(), why, "discarding a corrupt cache entry");
            let _ = fs::remove_file(&path);
            None
        };
        if meta.len() > MAX_ENTRY_BYTES {
            return discard("too large");
        }
        let Ok(bytes) = fs::read(&path) else {
            return discard("unreadable");
        };
        match serde_json::from_slice::<Page>(&bytes) {
            Ok(p) if p.format == FORMAT && p.url == url => Some(p),
            Ok(_) => discard("written for another URL or by another upkeep version"),
            Err(_) => discard("not valid JSON"),
        }
    }

    /// Remember a page; failures are logged, never returned.
    pub fn put(&self, page: &Page) {
        let Some(path) = self.path(&page.url) else {
            return;
        };
        if let Err(e) = write_atomic(&path, page) {
            tracing::warn!(file = %path.display(), error = %e, "cannot write the cache entry");
        }
    }
}

fn write_atomic(path: &Path, page: &Page) -> std::io::Result<()> {
    let bytes = serde_json::to_vec(page).map_err(std::io::Error::other)?;
    write_bytes_atomic(path, &bytes)
}

/// Write `bytes` to `path` whole or not at all (a temporary file of this write's own, then a
/// rename).
pub(crate) fn write_bytes_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    // A name of this write's own: two writers of one URL (threads, or processes sharing the
    // cache) never share a temporary file; the last rename wins, whole.
    static WRITES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = WRITES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let tmp = path.with_extension(format!("tmp{}-{n}", std::process::id()));
    // No fsync: after a crash a torn entry fails to parse and is discarded, which costs one
    // unconditional request; syncing every entry would cost more than that on every run.
    let mut f = fs::File::create(&tmp)?;
    f.write_all(bytes)?;
    drop(f);
    fs::rename(&tmp, path).inspect_err(|_| {
        let _ = fs::remove_file(&tmp);
    })
}

/// FNV-1a, 64 bits: a stable file name for a URL (std's hasher may change between releases).
pub(crate) fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// `$XDG_CACHE_HOME/upkeep`, else `~/.cache/upkeep`.
pub fn default_dir() -> Option<PathBuf> {
    std::env::var_os("XDG_CACHE_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .map(|d| d.join("upkeep"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_discards_corruption() {
        let dir = tempfile::tempdir().unwrap();
        let c = Cache::open(Some(dir.path().join("c")));
        assert_eq!(c.get("http://x/1"), None);
        let p = Page::new("http://x/1", "\"abc\"", None, vec![]);
        c.put(&p);
        assert_eq!(c.get("http://x/1"), Some(p));
        let file = c.path("http://x/1").unwrap();
        fs::write(&file, b"{not json").unwrap();
        assert_eq!(c.get("http://x/1"), None);
        assert!(!file.exists(), "a corrupt entry is removed");
    }

    #[test]
    fn two_writers_of_one_url_never_collide() {
        let dir = tempfile::tempdir().unwrap();
        let c = std::sync::Arc::new(Cache::open(Some(dir.path().join("c"))));
        let path = c.path("http://x/same").unwrap();
        let writers: Vec<_> = (0..4)
            .map(|i| {
                let path = path.clone();
                std::thread::spawn(move || {
                    let p = Page::new("http://x/same", &format!("\"{i}\""), None, vec![]);
                    (0..50).all(|_| write_atomic(&path, &p).is_ok())
                })
            })
            .collect();
        for w in writers {
            assert!(w.join().unwrap(), "a write failed");
        }
        assert!(c.get("http://x/same").is_some(), "one whole entry is left");
    }

    #[test]
    fn an_uncreatable_directory_disables_the_cache() {
        let dir = tempfile::tempdir().unwrap();
        let blocker = dir.path().join("file");
        fs::write(&blocker, b"").unwrap();
        let c = Cache::open(Some(blocker.join("sub")));
        c.put(&Page::new("u", "e", None, vec![]));
        assert_eq!(c.get("u"), None);
    }
}
