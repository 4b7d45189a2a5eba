//! The fleet's measurement source: instant queries against Prometheus's HTTP API
//! (`GET /api/v1/query`), which sums weir's own series over every replica. The queries
//! themselves are in [`super::Queries`]; this is the client, with a deadline per query and a
//! bounded answer, and [`Source::measure`], which turns an interval's answers into the same
//! `Measurement` the in-process probe gives.

use std::sync::OnceLock;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::{Request, Uri, header};
use http_body_util::{BodyExt, Empty, Limited};
use serde::Deserialize;

use super::Queries;
use crate::config::PrometheusSource;
use crate::metrics::Measurement;

/// The largest answer read from Prometheus (a handful of samples is expected).
const MAX_ANSWER_BYTES: usize = 1024 * 1024;

type PromClient = crate::tls::outbound::OutboundClient<Empty<Bytes>>;

#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    #[error("query `{query}` to {url}: no answer within {timeout:?}")]
    Timeout {
        query: String,
        url: String,
        timeout: Duration,
    },
    #[error("query `{query}` to {url}: {message}")]
    Failed {
        query: String,
        url: String,
        message: String,
    },
}

/// A Prometheus server, queried by the controller.
#[derive(Clone, Debug)]
pub struct Source {
    pub config: PrometheusSource,
}

#[derive(Deserialize)]
struct Answer {
    status: String,
    #[serde(default)]
    data: Option<Data>,
    #[serde(default)]
    error: Option<String>,
}

#[derive(Deserialize)]
#[serde(tag = "resultType", content = "result", rename_all = "lowercase")]
enum Data {
    Vector(Vec<Sample>),
    Scalar((f64, String)),
    Matrix(serde::de::IgnoredAny),
    String(serde::de::IgnoredAny),
}

#[derive(Deserialize)]
struct Sample {
    value: (f64, String),
}

fn client() -> &'static PromClient {
    static CLIENT: OnceLock<PromClient> = OnceLock::new();
    CLIENT.get_or_init(|| {
        crate::tls::outbound::outbound_client(
            "Prometheus queries",
            Duration::from_secs(5),
            crate::tls::outbound::Versions::Http1,
        )
    })
}

/// The values of an instant query's answer (`/api/v1/query`'s JSON): one per series of a vector,
/// the scalar's for a scalar; an error for anything else (a refused query says why).
pub fn values(body: &[u8]) -> Result<Vec<f64>, String> {
    let answer: Answer =
        serde_json::from_slice(body).map_err(|e| format!("not a Prometheus answer ({e})"))?;
    if answer.status != "success" {
        return Err(answer.error.unwrap_or(answer.status));
    }
    match answer.data {
        Some(Data::Vector(samples)) => samples
            .iter()
            .map(|s| number(&s.value.1).ok_or_else(|| format!("bad value `{}`", s.value.1)))
            .collect(),
        Some(Data::Scalar((_, v))) => {
            Ok(vec![number(&v).ok_or_else(|| format!("bad value `{v}`"))?])
        }
        _ => Err(String::from("expected an instant vector")),
    }
}

/// `text` percent-encoded for a query string (RFC 3986 unreserved characters kept).
fn encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len() * 3);
    for b in text.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(b as char)
            }
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// A sample's value as Prometheus writes it (`"42"`, `"NaN"`, `"+Inf"`).
fn number(text: &str) -> Option<f64> {
    match text {
        "NaN" => Some(f64::NAN),
        "+Inf" => Some(f64::INFINITY),
        "-Inf" => Some(f64::NEG_INFINITY),
        t => t.parse().ok(),
    }
}

impl Source {
    pub fn new(config: PrometheusSource) -> Source {
        Source { config }
    }

    /// The values of an instant query at `at` (one per series of a vector; none when the
    /// vector is empty).
    pub async fn query(&self, query: &str, at: SystemTime) -> Result<Vec<f64>, QueryError> {
        let base = self.config.url.to_string();
        let fail = |message: String| QueryError::Failed {
            query: query.to_owned(),
            url: base.clone(),
            message,
        };
        let time = at
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs_f64();
        let uri: Uri = format!(
            "{}/api/v1/query?query={}&time={time:.3}",
            base.trim_end_matches('/'),
            encode(query)
        )
        .parse()
        .map_err(|e: http::uri::InvalidUri| fail(e.to_string()))?;
        let req = Request::get(uri)
            .header(
                header::USER_AGENT,
                concat!("weir/", env!("CARGO_PKG_VERSION")),
            )
            .header(header::ACCEPT, "application/json")
            .body(Empty::new())
            .map_err(|e| fail(e.to_string()))?;
        let timeout = self.config.timeout;
        tokio::time::timeout(timeout, async {
            let resp = client()
                .request(req)
                .await
                .map_err(|e| fail(e.to_string()))?;
            let status = resp.status();
            let body = Limited::new(resp.into_body(), MAX_ANSWER_BYTES)
                .collect()
                .await
                .map_err(|e| fail(format!("reading the answer: {e}")))?
                .to_bytes();
            values(&body).map_err(|e| fail(format!("HTTP {status}: {e}")))
        })
        .await
        .map_err(|_| QueryError::Timeout {
            query: query.to_owned(),
            url: base.clone(),
            timeout,
        })?
    }

    /// The single value of `query` at `at`: 0 for an empty vector (no series: nothing counted).
    async fn one(&self, query: &str, at: SystemTime) -> Result<f64, QueryError> {
        let values = self.query(query, at).await?;
        Ok(values
            .first()
            .copied()
            .filter(|v| v.is_finite())
            .unwrap_or(0.0))
    }

    /// Whether every replica that is up serves status generation `generation` or newer, and
    /// how many are up.
    pub async fn serving(
        &self,
        q: &Queries,
        generation: u64,
        at: SystemTime,
    ) -> Result<(bool, u64), QueryError> {
        let up = self.one(&q.replicas_up, at).await? as u64;
        let serving = self
            .one(&Queries::at_generation(&q.replicas_serving, generation), at)
            .await? as u64;
        Ok((up > 0 && serving >= up, up))
    }

    /// Replicas whose own fast-fail rolled the canary back.
    pub async fn fast_failed(&self, q: &Queries, at: SystemTime) -> Result<u64, QueryError> {
        Ok(self.one(&q.fast_failed, at).await? as u64)
    }

    /// The canary's requests, failures and p99 over the `window` that ends at `at`, summed over
    /// every replica. `increase` extrapolates to the window's edges, so counts are rounded.
    pub async fn measure(
        &self,
        q: &Queries,
        window: Duration,
        at: SystemTime,
    ) -> Result<Measurement, QueryError> {
        let requests = self
            .one(&Queries::windowed(&q.requests, window), at)
            .await?;
        let failures = self
            .one(&Queries::windowed(&q.failures, window), at)
            .await?;
        let p99 = self
            .query(&Queries::windowed(&q.p99, window), at)
            .await?
            .first()
            .copied()
            .filter(|v| v.is_finite() && *v >= 0.0)
            .map(Duration::from_secs_f64);
        let requests = requests.round().max(0.0) as u64;
        Ok(Measurement {
            requests,
            failures: (failures.round().max(0.0) as u64).min(requests),
            p99,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queries_are_encoded_and_values_read_as_prometheus_writes_them() {
        assert_eq!(
            encode("sum(x{a=\"b\"})[30s]"),
            "sum%28x%7Ba%3D%22b%22%7D%29%5B30s%5D"
        );
        assert_eq!(number("NaN").map(f64::is_nan), Some(true));
        assert_eq!(number("+Inf"), Some(f64::INFINITY));
        assert_eq!(number("12.5"), Some(12.5));
        assert_eq!(number("x"), None);
    }
}
