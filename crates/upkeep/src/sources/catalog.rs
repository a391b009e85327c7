//! The signed offline catalog: one JSON file listing, per component, its releases (versions,
//! timestamps, notes, links) and channel heads, with a detached minisign signature
//! (`<file>.minisig`) verified against a public key from the config. For air-gapped clusters and
//! the demo. An unsigned or badly signed catalog is refused.
//!
//! upkeep ships one, built from real upstream tags (`catalog/releases.json`), signed with the
//! project's key (`catalog/upkeep-catalog.pub`); `upkeep catalog export` writes a new one from the
//! live sources, to be signed with the standard `minisign` tool (see docs/sources.md).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::{Fetched, Upstream, UpstreamRelease};
use crate::model::{Component, ConfigRepo, Track};

pub const KIND: &str = "ReleaseCatalog";
/// A catalog of every release of dozens of components is a few megabytes.
pub const MAX_BYTES: u64 = 64 * 1024 * 1024;

const BUILTIN_JSON: &[u8] = include_bytes!("../../../../catalog/releases.json");
const BUILTIN_SIG: &str = include_str!("../../../../catalog/releases.json.minisig");
const BUILTIN_KEY: &str = include_str!("../../../../catalog/upkeep-catalog.pub");

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot read catalog {path}: {detail}")]
    Read { path: String, detail: String },
    #[error(
        "catalog {path} is unsigned: there is no {path}.minisig (hint: sign it with `minisign -S -m {path}`; upkeep never reads an unsigned catalog)"
    )]
    Unsigned { path: String },
    #[error(
        "catalog {path}: the signature does not verify with the configured public key: {detail} (hint: the file was changed after signing, or it was signed with another key; check `catalog.publicKey`)"
    )]
    BadSignature { path: String, detail: String },
    #[error(
        "invalid catalog public key: {detail} (hint: use the second line of the minisign .pub file, starting with RW)"
    )]
    BadKey { detail: String },
    #[error(
        "no public key to verify catalog {path} with (hint: set `catalog: {{publicKey: RW...}}` in a policy file or pass --catalog-public-key)"
    )]
    NoKey { path: String },
    #[error("catalog {path} is not a release catalog: {detail}")]
    Parse { path: String, detail: String },
    #[error(
        "component `{component}` is not in catalog {path} (it has: {known}) (hint: export a catalog that includes it with `upkeep catalog export`)"
    )]
    NoComponent {
        component: String,
        path: String,
        known: String,
    },
    #[error(
        "component `{component}` tracks channel `{channel}`, which catalog {path} does not list"
    )]
    NoChannel {
        component: String,
        channel: String,
        path: String,
    },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The catalog file format.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CatalogFile {
    /// Always `upkeep.dev/v1alpha1`.
    pub api_version: String,
    /// Always `ReleaseCatalog`.
    pub kind: String,
    pub generated_at: DateTime<Utc>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    pub components: BTreeMap<String, CatalogComponent>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CatalogComponent {
    /// Where the releases were read, e.g. `github:k3s-io/k3s`.
    pub source: String,
    /// Channel name to its latest version (k3s: `stable`, `latest`, `v1.33`, ...).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub channels: BTreeMap<String, String>,
    pub releases: Vec<UpstreamRelease>,
}

impl CatalogFile {
    pub fn new(generated_at: DateTime<Utc>) -> CatalogFile {
        CatalogFile {
            api_version: crate::model::API_VERSION.to_string(),
            kind: KIND.to_string(),
            generated_at,
            description: None,
            components: BTreeMap::new(),
        }
    }

    /// Pretty JSON with a final newline: stable bytes, so a re-export of unchanged data signs the
    /// same.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_default() + "\n"
    }
}

/// A verified catalog.
#[derive(Debug, Clone)]
pub struct Catalog {
    pub file: CatalogFile,
    /// Where it came from (a path, or `built-in`), for messages and the report.
    pub origin: String,
}

/// Read a public key given as the key line alone or as a whole `.pub` file.
pub fn parse_public_key(text: &str) -> Result<minisign_verify::PublicKey> {
    let line = text
        .lines()
        .map(str::trim)
        .rfind(|l| !l.is_empty() && !l.starts_with("untrusted comment:"))
        .unwrap_or("");
    minisign_verify::PublicKey::from_base64(line).map_err(|e| Error::BadKey {
        detail: format!("{e:?}"),
    })
}

impl Catalog {
    /// Verify `bytes` against `signature` (the `.minisig` text) and `public_key`, then parse.
    pub fn verify(
        bytes: &[u8],
        signature: &str,
        public_key: &str,
        origin: &str,
    ) -> Result<Catalog> {
        let key = parse_public_key(public_key)?;
        let bad = |detail: String| Error::BadSignature {
            path: origin.to_string(),
            detail,
        };
        let sig = minisign_verify::Signature::decode(signature)
            .map_err(|e| bad(format!("the .minisig file is malformed ({e:?})")))?;
        key.verify(bytes, &sig, false).map_err(|e| {
            bad(match e {
                minisign_verify::Error::UnexpectedKeyId => {
                    "it was signed with a different key".to_string()
                }
                minisign_verify::Error::UnexpectedAlgorithm => {
                    "legacy (non-prehashed) signatures are not accepted; re-sign with minisign 0.8 or newer".to_string()
                }
                other => format!("{other:?}"),
            })
        })?;
        let file: CatalogFile = serde_json::from_slice(bytes).map_err(|e| Error::Parse {
            path: origin.to_string(),
            detail: e.to_string(),
        })?;
        if file.api_version != crate::model::API_VERSION || file.kind != KIND {
            return Err(Error::Parse {
                path: origin.to_string(),
                detail: format!(
                    "apiVersion/kind are {}/{}, expected {}/{KIND}",
                    file.api_version,
                    file.kind,
                    crate::model::API_VERSION
                ),
            });
        }
        Ok(Catalog {
            file,
            origin: origin.to_string(),
        })
    }

    /// Read `path` and `path.minisig` and verify them with `public_key`.
    pub fn load(path: &Path, public_key: Option<&str>) -> Result<Catalog> {
        let shown = path.display().to_string();
        let read_err = |detail: String| Error::Read {
            path: shown.clone(),
            detail,
        };
        let meta = std::fs::metadata(path).map_err(|e| read_err(e.to_string()))?;
        if meta.len() > MAX_BYTES {
            return Err(read_err(format!("it is larger than {MAX_BYTES} bytes")));
        }
        let bytes = std::fs::read(path).map_err(|e| read_err(e.to_string()))?;
        let sig_path = sig_path(path);
        let sig = match std::fs::read_to_string(&sig_path) {
            Ok(s) => s,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(Error::Unsigned { path: shown });
            }
            Err(e) => return Err(read_err(format!("{}: {e}", sig_path.display()))),
        };
        let key = public_key.ok_or_else(|| Error::NoKey {
            path: shown.clone(),
        })?;
        Catalog::verify(&bytes, &sig, key, &shown)
    }

    /// The catalog shipped in the binary, built from real upstream tags.
    pub fn builtin() -> Result<Catalog> {
        Catalog::verify(BUILTIN_JSON, BUILTIN_SIG, BUILTIN_KEY, "built-in")
    }

    /// The project's catalog public key (for users who copy the shipped catalog).
    pub fn builtin_public_key() -> &'static str {
        BUILTIN_KEY
    }
}

/// `<file>.minisig`, where minisign writes the signature of `<file>`.
pub fn sig_path(path: &Path) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(".minisig");
    PathBuf::from(s)
}

impl Upstream for Catalog {
    async fn fetch(&self, c: &Component, _run: &super::Run) -> super::Result<Fetched> {
        let entry = self
            .file
            .components
            .get(&c.name)
            .ok_or_else(|| Error::NoComponent {
                component: c.name.clone(),
                path: self.origin.clone(),
                known: self
                    .file
                    .components
                    .keys()
                    .cloned()
                    .collect::<Vec<_>>()
                    .join(", "),
            })?;
        let channel_latest =
            match &c.track {
                Track::Channel(name) => Some(entry.channels.get(name).cloned().ok_or_else(
                    || Error::NoChannel {
                        component: c.name.clone(),
                        channel: name.clone(),
                        path: self.origin.clone(),
                    },
                )?),
                _ => None,
            };
        Ok(Fetched {
            source: format!("catalog:{}", entry.source),
            releases: entry.releases.clone(),
            channel_latest,
        })
    }
}

/// A catalog of every component of `repo`, read from `up` (normally the live sources). All or
/// nothing: any component that cannot be read fails the export, with every error listed.
pub async fn export<U: Upstream + 'static>(
    up: Arc<U>,
    repo: &ConfigRepo,
    now: DateTime<Utc>,
    concurrency: usize,
) -> std::result::Result<CatalogFile, Vec<super::Error>> {
    let results = super::fetch_each(up, &repo.components, concurrency, |c, fetched| {
        fetched.map(|f| {
            let channels = match (&c.track, f.channel_latest) {
                (Track::Channel(name), Some(latest)) => [(name.clone(), latest)].into(),
                _ => BTreeMap::new(),
            };
            (
                c.name.clone(),
                CatalogComponent {
                    source: f.source,
                    channels,
                    releases: f.releases,
                },
            )
        })
    })
    .await;
    let mut file = CatalogFile::new(now);
    file.description = Some(format!(
        "Exported by upkeep {} from the live sources",
        env!("CARGO_PKG_VERSION")
    ));
    let mut errors = Vec::new();
    for (r, c) in results.into_iter().zip(&repo.components) {
        match r {
            Some(Ok((name, entry))) => {
                file.components.insert(name, entry);
            }
            Some(Err(e)) => errors.push(e),
            None => errors.push(super::Error::NoSource {
                component: c.name.clone(),
            }),
        }
    }
    if errors.is_empty() {
        Ok(file)
    } else {
        Err(errors)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_builtin_catalog_verifies() {
        let c = Catalog::builtin().unwrap();
        assert!(c.file.components.contains_key("k3s"));
        assert!(c.file.components["k3s"].channels.contains_key("stable"));
    }

    #[test]
    fn a_changed_byte_breaks_the_signature() {
        let mut bytes = BUILTIN_JSON.to_vec();
        let i = bytes.iter().position(|b| *b == b'1').unwrap();
        bytes[i] = b'2';
        let e = Catalog::verify(&bytes, BUILTIN_SIG, BUILTIN_KEY, "x").unwrap_err();
        assert!(matches!(e, Error::BadSignature { .. }), "{e}");
    }

    #[test]
    fn keys_and_signatures_must_be_well_formed() {
        assert!(matches!(
            Catalog::verify(BUILTIN_JSON, BUILTIN_SIG, "RWnotakey", "x"),
            Err(Error::BadKey { .. })
        ));
        assert!(matches!(
            Catalog::verify(BUILTIN_JSON, "garbage", BUILTIN_KEY, "x"),
            Err(Error::BadSignature { .. })
        ));
    }
}
