//! For a config repository on local disk (`--repo PATH`): wake the loop as soon as the base
//! branch moves, instead of waiting for the next poll. git updates a ref by writing
//! `refs/heads/<base>.lock` and renaming it over the ref (or by rewriting `packed-refs`), so the
//! whole git directory is watched (inotify) and events are filtered by path and debounced.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use notify::{RecursiveMode, Watcher};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(
        "cannot watch {path} for changes: {message} (the loop still polls; raise fs.inotify.max_user_watches if it is the limit)"
    )]
    Watch { path: String, message: String },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// How long to wait for more events before waking the loop (a commit touches several files).
pub const DEBOUNCE: Duration = Duration::from_millis(300);

/// The git directory of a repository at `path`: `path/.git` for a working tree, else `path`.
pub fn git_dir(path: &Path) -> PathBuf {
    let dot = path.join(".git");
    if dot.is_dir() {
        dot
    } else {
        path.to_path_buf()
    }
}

/// Whether a change of `changed` (inside `git_dir`) may have moved `base`.
pub fn moves_base(git_dir: &Path, base: &str, changed: &Path) -> bool {
    let Ok(rel) = changed.strip_prefix(git_dir) else {
        return false;
    };
    let rel = rel.to_string_lossy();
    let branch = format!("refs/heads/{base}");
    rel == branch
        || rel == format!("{branch}.lock")
        || rel == "packed-refs"
        || rel == "packed-refs.lock"
}

/// Watches `repo` until the returned watcher is dropped, calling `wake` (debounced) when `base`
/// moves.
pub fn spawn(
    repo: &Path,
    base: &str,
    wake: impl Fn() + Send + Sync + 'static,
) -> Result<notify::RecommendedWatcher> {
    let dir = git_dir(repo);
    let dir = dir.canonicalize().unwrap_or(dir);
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<()>();
    let (d, b) = (dir.clone(), base.to_string());
    let mut watcher = notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
        if let Ok(ev) = res
            && ev.paths.iter().any(|p| moves_base(&d, &b, p))
        {
            let _ = tx.send(());
        }
    })
    .map_err(|e| Error::Watch {
        path: dir.display().to_string(),
        message: e.to_string(),
    })?;
    watcher
        .watch(&dir, RecursiveMode::Recursive)
        .map_err(|e| Error::Watch {
            path: dir.display().to_string(),
            message: e.to_string(),
        })?;
    let wake = Arc::new(wake);
    tokio::spawn(async move {
        while rx.recv().await.is_some() {
            tokio::time::sleep(DEBOUNCE).await;
            while rx.try_recv().is_ok() {}
            tracing::debug!("the base branch moved on disk");
            wake();
        }
    });
    Ok(watcher)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_base_branch_and_packed_refs_count() {
        let g = Path::new("/r/.git");
        for p in [
            "/r/.git/refs/heads/main",
            "/r/.git/refs/heads/main.lock",
            "/r/.git/packed-refs",
        ] {
            assert!(moves_base(g, "main", Path::new(p)), "{p}");
        }
        for p in [
            "/r/.git/refs/heads/upkeep/k3s",
            "/r/.git/refs/heads/mainline",
            "/r/.git/objects/ab/cdef",
            "/r/.git/index",
            "/elsewhere/refs/heads/main",
        ] {
            assert!(!moves_base(g, "main", Path::new(p)), "{p}");
        }
    }
}
