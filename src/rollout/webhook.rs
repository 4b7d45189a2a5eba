//! Webhooks: a POST of JSON on each rollout event, from tasks of their own with a timeout and a
//! few retries with backoff, so a dead receiver never blocks or slows traffic; and the confirm
//! gate, one POST whose 2xx lets a rollout take its next step.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Uri, header};
use http_body_util::Full;

/// Each POST must be answered within this.
pub const TIMEOUT: Duration = Duration::from_secs(5);
/// Tries of an event delivery; between them 250 ms, 500 ms, 1 s ...
pub const TRIES: u32 = 4;
const FIRST_BACKOFF: Duration = Duration::from_millis(250);

type HookClient = crate::tls::outbound::OutboundClient<Full<Bytes>>;

/// The webhook client, built on first use: the system's TLS roots cost about a megabyte of
/// memory, which a weir without webhooks should not pay.
#[derive(Clone, Default)]
pub struct Hooks {
    client: Arc<OnceLock<HookClient>>,
}

impl Hooks {
    pub fn new() -> Hooks {
        Hooks::default()
    }

    fn client(&self) -> &HookClient {
        self.client.get_or_init(build_client)
    }

    /// One POST; the status code, or why there was none.
    async fn post(&self, url: &Uri, body: &Bytes) -> Result<u16, String> {
        let req = Request::post(url.clone())
            .header(header::CONTENT_TYPE, "application/json")
            .header(
                header::USER_AGENT,
                concat!("weir/", env!("CARGO_PKG_VERSION")),
            )
            .body(Full::new(body.clone()))
            .map_err(|e| e.to_string())?;
        match tokio::time::timeout(TIMEOUT, self.client().request(req)).await {
            Err(_) => Err(format!("no answer within {TIMEOUT:?}")),
            Ok(Err(e)) => Err(e.to_string()),
            Ok(Ok(r)) => Ok(r.status().as_u16()),
        }
    }

    /// Delivers `body` to `url` on a task of its own: up to [`TRIES`] tries until a 2xx.
    pub fn deliver(&self, url: Uri, body: Bytes) {
        let hooks = self.clone();
        tokio::spawn(async move {
            let mut backoff = FIRST_BACKOFF;
            for attempt in 1..=TRIES {
                let outcome = hooks.post(&url, &body).await;
                match outcome {
                    Ok(code) if (200..300).contains(&code) => return,
                    Ok(code) => {
                        tracing::warn!(%url, attempt, code, "webhook answered with an error")
                    }
                    Err(e) => tracing::warn!(%url, attempt, error = %e, "webhook failed"),
                }
                if attempt < TRIES {
                    tokio::time::sleep(backoff).await;
                    backoff *= 2;
                }
            }
            tracing::error!(%url, "webhook gave up after {TRIES} tries");
        });
    }

    /// The confirm gate: `true` when `url` answers 2xx to the POST; anything else holds.
    pub async fn confirm(&self, url: &Uri, body: Bytes) -> Result<(), String> {
        match self.post(url, &body).await {
            Ok(code) if (200..300).contains(&code) => Ok(()),
            Ok(code) => Err(format!("the confirm gate answered {code}")),
            Err(e) => Err(format!("the confirm gate failed: {e}")),
        }
    }
}

fn build_client() -> HookClient {
    crate::tls::outbound::outbound_client(
        "webhooks",
        TIMEOUT,
        crate::tls::outbound::Versions::Http1,
    )
}
