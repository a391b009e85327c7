//! Helm repository indexes: `GET <repository>/index.yaml`, then one chart's versions with their
//! `created` timestamps.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::Deserialize;

use super::UpstreamRelease;
use super::http::{FetchError, Getter};

/// Big public indexes run to tens of megabytes; more than this is refused.
pub const MAX_BYTES: usize = 32 * 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("Helm repository {url}: {source}")]
    Fetch {
        url: String,
        #[source]
        source: FetchError,
    },
    #[error(
        "Helm repository {url}: index.yaml is not a Helm index: {detail} (hint: `repository` is the URL of the directory that holds index.yaml)"
    )]
    Parse { url: String, detail: String },
    #[error(
        "Helm repository {url} has no chart `{chart}`{} (hint: fix `helmChart.chart` in versions.yaml)",
        suggestion.as_ref().map(|s| format!("; did you mean `{s}`?")).unwrap_or_default()
    )]
    NoChart {
        url: String,
        chart: String,
        suggestion: Option<String>,
    },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A Helm repository's index: every chart's versions. Read once per run however many components
/// take charts from it.
#[derive(Debug, Deserialize)]
pub struct Index {
    #[serde(default)]
    entries: BTreeMap<String, Vec<ChartVersion>>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ChartVersion {
    version: String,
    #[serde(default)]
    created: Option<String>,
    #[serde(default)]
    deprecated: bool,
}

fn options() -> serde_saphyr::Options {
    let mut budget = serde_saphyr::Budget::default();
    budget.max_total_scalar_bytes = MAX_BYTES;
    budget.max_events = 20_000_000;
    budget.max_nodes = 5_000_000;
    budget.max_aliases = 1_000;
    let mut opts = serde_saphyr::options! { with_snippet: false };
    opts.budget = Some(budget);
    opts.alias_limits.max_total_replayed_events = 100_000;
    opts
}

/// The versions of `chart` in an index document, newest entries as the index lists them.
/// Deprecated chart versions are skipped.
pub fn parse(url: &str, body: &str, chart: &str) -> Result<Vec<UpstreamRelease>> {
    parse_index(url, body)?.chart(url, chart)
}

/// Read an index document.
pub fn parse_index(url: &str, body: &str) -> Result<Index> {
    serde_saphyr::from_str_with_options(body, options()).map_err(|e| Error::Parse {
        url: url.to_string(),
        detail: e.to_string(),
    })
}

impl Index {
    /// The versions of `chart` (read from `url`), newest entries as the index lists them.
    /// Deprecated chart versions are skipped.
    pub fn chart(&self, url: &str, chart: &str) -> Result<Vec<UpstreamRelease>> {
        let Some(versions) = self.entries.get(chart) else {
            return Err(Error::NoChart {
                url: url.to_string(),
                chart: chart.to_string(),
                suggestion: crate::model::suggest(chart, self.entries.keys().map(String::as_str))
                    .map(str::to_string),
            });
        };
        Ok(versions
            .iter()
            .filter(|v| !v.deprecated)
            .map(|v| UpstreamRelease {
                tag: v.version.clone(),
                published_at: v
                    .created
                    .as_deref()
                    .and_then(|c| DateTime::parse_from_rfc3339(c).ok())
                    .map(|d| d.with_timezone(&Utc)),
                prerelease: false,
                notes: None,
                url: None,
            })
            .collect())
    }
}

pub struct Client {
    get: Getter,
}

/// Whether a chart repository is an OCI registry (`oci://...`): it has no index, and its charts'
/// versions are the tags of the repository `PATH/CHART` ([`super::oci`]).
pub fn is_oci(repository: &str) -> bool {
    repository.starts_with("oci://")
}

/// Where a Helm repository's index is (not for an OCI registry: see [`is_oci`]).
pub fn index_url(repository: &str) -> String {
    format!("{}/index.yaml", repository.trim_end_matches('/'))
}

impl Client {
    pub(crate) fn new(get: Getter) -> Client {
        Client { get }
    }

    /// Fetch and read the index at `url` (see [`index_url`]).
    pub async fn index(&self, url: &str) -> Result<Index> {
        let body = self
            .get
            .get(url, MAX_BYTES)
            .await
            .map_err(|source| Error::Fetch {
                url: url.to_string(),
                source,
            })?;
        let text = String::from_utf8(body).map_err(|_| Error::Parse {
            url: url.to_string(),
            detail: "it is not UTF-8".into(),
        })?;
        parse_index(url, &text)
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn an_index_is_next_to_the_repository_and_oci_has_none() {
        assert_eq!(
            index_url("https://charts.longhorn.io/"),
            "https://charts.longhorn.io/index.yaml"
        );
        assert!(is_oci("oci://ghcr.io/stefanprodan/charts"));
        assert!(!is_oci("https://charts.longhorn.io"));
    }

    use super::*;

    const INDEX: &str = r#"apiVersion: v1
entries:
  longhorn:
  - apiVersion: v1
    appVersion: v1.9.1
    created: "2025-07-23T08:12:09.123456789Z"
    name: longhorn
    urls: [https://github.com/longhorn/charts/releases/download/longhorn-1.9.1/longhorn-1.9.1.tgz]
    version: 1.9.1
  - appVersion: v1.9.0
    created: "2025-06-01T00:00:00+02:00"
    name: longhorn
    version: 1.9.0
  - name: longhorn
    version: 1.0.0
    deprecated: true
generated: "2025-07-23T08:12:09Z"
"#;

    #[test]
    fn reads_versions_and_created_times() {
        let r = parse("u", INDEX, "longhorn").unwrap();
        assert_eq!(r.len(), 2);
        assert_eq!(r[0].tag, "1.9.1");
        assert_eq!(
            r[1].published_at.unwrap().to_rfc3339(),
            "2025-05-31T22:00:00+00:00"
        );
    }

    #[test]
    fn a_missing_chart_suggests_a_close_name() {
        let e = parse("u", INDEX, "longhron").unwrap_err().to_string();
        assert!(e.contains("did you mean `longhorn`"), "{e}");
    }

    #[test]
    fn garbage_is_refused() {
        assert!(matches!(parse("u", "a: [", "x"), Err(Error::Parse { .. })));
        let bomb = "a: &a [x, x, x, x, x, x, x, x, x]\nb: &b [*a, *a, *a, *a, *a, *a, *a, *a]\nc: &c [*b, *b, *b, *b, *b, *b, *b, *b]\nd: &d [*c, *c, *c, *c, *c, *c, *c, *c]\ne: &e [*d, *d, *d, *d, *d, *d, *d, *d]\nf: &f [*e, *e, *e, *e, *e, *e, *e, *e]\nentries: {x: *f}\n";
        assert!(parse("u", bomb, "x").is_err());
    }
}
