//! The k3s channel server: `GET <base>/v1-release/channels` answers a collection of channels
//! (`stable`, `latest`, `testing`, and one `vX.Y` per minor), each with its `latest` release.

use serde::Deserialize;

use super::http::{FetchError, Getter};

/// The public channel server.
pub const DEFAULT_URL: &str = "https://update.k3s.io";
/// The collection is a few kilobytes; anything near this is not a channel server.
const MAX_BYTES: usize = 4 * 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("k3s channel server {url}: {source}")]
    Fetch {
        url: String,
        #[source]
        source: FetchError,
    },
    #[error(
        "k3s channel server {url}: the answer is not a channel collection: {detail} (hint: the URL should be the server's base, like {DEFAULT_URL})"
    )]
    Parse { url: String, detail: String },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The channels of one server.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Channels(Vec<(String, String)>);

impl Channels {
    pub fn latest(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, l)| l.as_str())
    }
    pub fn names(&self) -> Vec<&str> {
        self.0.iter().map(|(n, _)| n.as_str()).collect()
    }
}

#[derive(Deserialize)]
struct Collection {
    data: Vec<Item>,
}

#[derive(Deserialize)]
struct Item {
    name: String,
    latest: String,
}

/// Read a channel collection document.
pub fn parse(body: &[u8]) -> std::result::Result<Channels, String> {
    let c: Collection = serde_json::from_slice(body).map_err(|e| e.to_string())?;
    Ok(Channels(
        c.data.into_iter().map(|i| (i.name, i.latest)).collect(),
    ))
}

pub struct Client {
    get: Getter,
}

impl Client {
    pub(crate) fn new(get: Getter) -> Client {
        Client { get }
    }

    pub async fn channels(&self, base: &str) -> Result<Channels> {
        let url = format!("{}/v1-release/channels", base.trim_end_matches('/'));
        let body = self
            .get
            .get(&url, MAX_BYTES)
            .await
            .map_err(|source| Error::Fetch {
                url: url.clone(),
                source,
            })?;
        parse(&body).map_err(|detail| Error::Parse { url, detail })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_collection_shape_of_the_real_server() {
        let body = br#"{"type":"collection","links":{"self":"https://update.k3s.io/v1-release/channels"},
          "actions":{},"resourceType":"channels","data":[
          {"id":"stable","type":"channel","links":{"self":"https://update.k3s.io/v1-release/channels/stable"},"name":"stable","latest":"v1.24.6+k3s1"},
          {"id":"latest","type":"channel","links":{"self":"x"},"name":"latest","latest":"v1.25.2+k3s1","latestRegexp":".*","excludeRegexp":"^[^+]+-"}]}"#;
        let ch = parse(body).unwrap();
        assert_eq!(ch.latest("stable"), Some("v1.24.6+k3s1"));
        assert_eq!(ch.latest("latest"), Some("v1.25.2+k3s1"));
        assert_eq!(ch.latest("testing"), None);
        assert_eq!(ch.names(), ["stable", "latest"]);
        assert!(parse(b"<html>").is_err());
    }
}
