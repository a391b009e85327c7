//! The plain-HTTP side shared by the channel-server and Helm-index adapters (reqwest): one GET
//! with a total timeout, a size cap, and retries with doubling backoff on 5xx and transport errors.

use std::sync::Arc;
use std::time::Duration;

use super::{NetConfig, Stats};

/// Why a plain GET failed (after its retries).
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("HTTP {status}{}", retry_hint(*status))]
    Status { status: u16 },
    #[error(
        "no complete answer within {0:?} (hint: check the URL and the network, or raise --timeout)"
    )]
    Timeout(Duration),
    #[error("connection failed: {0}")]
    Transport(String),
    #[error("the response is larger than {limit} bytes; refusing to read it")]
    TooLarge { limit: usize },
}

fn retry_hint(status: u16) -> &'static str {
    match status {
        404 => " (not found: check the URL)",
        401 | 403 => " (access denied)",
        429 => " (rate limited: try again later)",
        500..=599 => " (the server failed; upkeep retried and will try again next cycle)",
        _ => "",
    }
}

#[derive(Clone)]
pub(crate) struct Getter {
    client: reqwest::Client,
    timeout: Duration,
    retries: u32,
    backoff: Duration,
    stats: Arc<Stats>,
}

impl Getter {
    pub(crate) fn new(cfg: &NetConfig, stats: Arc<Stats>) -> Result<Getter, FetchError> {
        let client = reqwest::Client::builder()
            .user_agent(concat!("upkeep/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(cfg.timeout)
            .build()
            .map_err(|e| FetchError::Transport(e.to_string()))?;
        Ok(Getter {
            client,
            timeout: cfg.timeout,
            retries: cfg.retries,
            backoff: cfg.backoff,
            stats,
        })
    }

    /// GET `url` and return its body (at most `limit` bytes).
    pub(crate) async fn get(&self, url: &str, limit: usize) -> Result<Vec<u8>, FetchError> {
        let mut attempt = 0;
        loop {
            let res = self.once(url, limit).await;
            let retryable = match &res {
                Err(FetchError::Status { status }) => *status >= 500,
                Err(FetchError::Timeout(_) | FetchError::Transport(_)) => true,
                _ => false,
            };
            if res.is_err() {
                Stats::count(&self.stats.errors, 1);
            }
            if !retryable || attempt >= self.retries {
                return res;
            }
            let wait = self.backoff.saturating_mul(1 << attempt.min(16));
            tracing::debug!(url, attempt, ?wait, "retrying after a failed GET");
            tokio::time::sleep(wait).await;
            attempt += 1;
        }
    }

    async fn once(&self, url: &str, limit: usize) -> Result<Vec<u8>, FetchError> {
        let fut = async {
            Stats::count(&self.stats.requests, 1);
            let mut resp = self
                .client
                .get(url)
                .send()
                .await
                .map_err(|e| FetchError::Transport(error_chain(&e)))?;
            let status = resp.status().as_u16();
            if !(200..300).contains(&status) {
                return Err(FetchError::Status { status });
            }
            let mut body = Vec::new();
            while let Some(chunk) = resp
                .chunk()
                .await
                .map_err(|e| FetchError::Transport(error_chain(&e)))?
            {
                Stats::count(&self.stats.bytes, chunk.len() as u64);
                if body.len() + chunk.len() > limit {
                    return Err(FetchError::TooLarge { limit });
                }
                body.extend_from_slice(&chunk);
            }
            Ok(body)
        };
        tokio::time::timeout(self.timeout, fut)
            .await
            .unwrap_or(Err(FetchError::Timeout(self.timeout)))
    }
}

/// An error with its causes, `a: b: c`, so that "error sending request" says why.
pub(crate) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let m = c.to_string();
        if !s.contains(&m) {
            s.push_str(": ");
            s.push_str(&m);
        }
        cur = c.source();
    }
    s
}
