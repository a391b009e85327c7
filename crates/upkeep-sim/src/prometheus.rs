//! Prometheus' instant-query API (`GET /api/v1/query?query=...`), enough for upkeep's checks:
//! a test sets what a query evaluates to, and changes it over time (an error rate that rises
//! during a soak).
//!
//! Modelled on prometheus/prometheus `web/api/v1/api.go` (`(*API).query` and `respond`): the
//! envelope `{"status": "success", "data": {"resultType": "vector", "result": [...]}}`, each
//! sample `{"metric": {...}, "value": [<unix seconds>, "<value as a string>"]}`; a query that
//! matches no series is an empty vector (not an error, and not 0); a request without `query` is
//! 400 with `errorType: bad_data`. Left out: PromQL itself (a query is looked up by its text),
//! range queries, `time=` and `timeout=`, POST forms.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;

#[derive(Default)]
struct Inner {
    /// Query text -> the samples it returns (labels, value).
    series: HashMap<String, Vec<(serde_json::Value, String)>>,
    /// Every query asked, in order.
    asked: Vec<String>,
}

/// A Prometheus server on 127.0.0.1.
#[derive(Clone)]
pub struct PrometheusSim {
    inner: Arc<Mutex<Inner>>,
    url: String,
}

impl PrometheusSim {
    pub async fn start() -> std::io::Result<PrometheusSim> {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0)).await?;
        let url = format!("http://{}", listener.local_addr()?);
        let inner: Arc<Mutex<Inner>> = Arc::default();
        let app = axum::Router::new()
            .route("/api/v1/query", axum::routing::get(query))
            .with_state(inner.clone());
        tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, app).await {
                tracing::error!(error = %e, "the Prometheus simulator stopped");
            }
        });
        Ok(PrometheusSim { inner, url })
    }

    /// [`start`](Self::start) on a runtime of its own, stopped when the [`crate::Stopper`] drops.
    pub fn start_until_stopped() -> std::io::Result<(PrometheusSim, crate::Stopper)> {
        crate::start_until_stopped(1, PrometheusSim::start)
    }

    pub fn url(&self) -> String {
        self.url.clone()
    }

    fn data(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// From now on `query` evaluates to one sample of `value` (no labels).
    pub fn set(&self, query: &str, value: f64) {
        self.data()
            .series
            .insert(query.to_string(), vec![(json!({}), format_value(value))]);
    }

    /// From now on `query` matches no series (an empty vector).
    pub fn clear(&self, query: &str) {
        self.data().series.remove(query);
    }

    /// The queries asked so far, in order.
    pub fn asked(&self) -> Vec<String> {
        self.data().asked.clone()
    }
}

/// A sample value as Prometheus writes it: Go's `strconv.FormatFloat(v, 'f', -1, 64)`, with
/// `NaN`, `+Inf` and `-Inf` spelled out.
fn format_value(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v.is_infinite() {
        if v > 0.0 { "+Inf" } else { "-Inf" }.into()
    } else {
        format!("{v}")
    }
}

async fn query(
    State(inner): State<Arc<Mutex<Inner>>>,
    Query(params): Query<HashMap<String, String>>,
) -> Response {
    let Some(q) = params.get("query").filter(|q| !q.is_empty()) else {
        return (
            StatusCode::BAD_REQUEST,
            axum::Json(json!({
                "status": "error",
                "errorType": "bad_data",
                "error": "invalid parameter \"query\": unknown position: parse error: no expression found in input",
            })),
        )
            .into_response();
    };
    let now = chrono::Utc::now().timestamp_millis() as f64 / 1000.0;
    let mut d = inner.lock().unwrap_or_else(|e| e.into_inner());
    d.asked.push(q.clone());
    let result: Vec<serde_json::Value> = d
        .series
        .get(q)
        .map(|s| {
            s.iter()
                .map(|(metric, value)| json!({"metric": metric, "value": [now, value]}))
                .collect()
        })
        .unwrap_or_default();
    axum::Json(json!({
        "status": "success",
        "data": {"resultType": "vector", "result": result},
    }))
    .into_response()
}
