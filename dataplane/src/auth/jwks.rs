//! Key sets fetched from a `jwksUri`: one background task per URL fetches it when first
//! needed and refreshes it, so a request only reads the last good set (never waits on the
//! network). A failed refresh keeps the last good set; an unknown `kid` asks for an early
//! refresh, at most every [`MIN_FORCED_INTERVAL`].

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use arc_swap::ArcSwapOption;
use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Limited};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use tokio::sync::Notify;

use super::jwt::{JwksEndpoint, KeySet};
use crate::balance::BalancerClock;
use crate::snapshot::UpstreamVerify;

/// How often a good set is fetched again.
pub const REFRESH_INTERVAL: Duration = Duration::from_secs(300);
/// The longest wait between attempts while fetches fail (they start at 1 s and double).
const MAX_RETRY_INTERVAL: Duration = Duration::from_secs(60);
/// An unknown `kid` triggers a refresh at most this often.
pub const MIN_FORCED_INTERVAL: Duration = Duration::from_secs(30);
/// One fetch, connection included.
const FETCH_TIMEOUT: Duration = Duration::from_secs(10);
/// Larger documents are refused.
const MAX_DOCUMENT_BYTES: usize = 1024 * 1024;

/// The counters of one URL's fetches.
#[derive(Debug, Clone, Default)]
pub struct JwksCounters {
    pub refreshes: Counter,
    pub errors: Counter,
    /// Keys in the set in use (0 before the first good fetch).
    pub keys: Gauge,
}

/// The fetched key set of one endpoint, shared by every policy naming it.
pub struct RemoteJwks {
    pub endpoint: JwksEndpoint,
    keys: ArcSwapOption<KeySet>,
    wake: Arc<Notify>,
    clock: BalancerClock,
    /// Clock milliseconds of the last refresh a request asked for (0: never).
    last_forced_ms: AtomicU64,
}

impl std::fmt::Debug for RemoteJwks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RemoteJwks")
            .field("uri", &self.endpoint.uri)
            .finish_non_exhaustive()
    }
}

impl Drop for RemoteJwks {
    fn drop(&mut self) {
        // The task holds only a weak reference: wake it so it sees that and ends.
        self.wake.notify_one();
    }
}

impl RemoteJwks {
    /// Starts fetching `endpoint` in the background. Must run inside a tokio runtime.
    pub fn start(endpoint: JwksEndpoint, counters: JwksCounters) -> Arc<RemoteJwks> {
        let wake = Arc::new(Notify::new());
        let remote = Arc::new(RemoteJwks {
            endpoint,
            keys: ArcSwapOption::empty(),
            wake: Arc::clone(&wake),
            clock: BalancerClock::new(),
            last_forced_ms: AtomicU64::new(0),
        });
        tokio::spawn(refresh_loop(Arc::downgrade(&remote), wake, counters));
        remote
    }

    /// The last good set, if a fetch has succeeded yet.
    pub fn keys(&self) -> Option<Arc<KeySet>> {
        self.keys.load_full()
    }

    /// Asks for an early refresh (a token named a key the set lacks); rate limited, never
    /// waited for.
    pub fn refresh_soon(&self) {
        // Until a first fetch succeeds the task retries on its own schedule; a request now
        // would only use up the allowance meant for a key rotation.
        if self.keys.load().is_none() {
            return;
        }
        let now = self.clock.now_ms().max(1);
        let last = self.last_forced_ms.load(Ordering::Acquire);
        let interval = u64::try_from(MIN_FORCED_INTERVAL.as_millis()).unwrap_or(u64::MAX);
        if last != 0 && now.saturating_sub(last) < interval {
            return;
        }
        if self
            .last_forced_ms
            .compare_exchange(last, now, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
        {
            self.wake.notify_one();
        }
    }
}

/// The fetched sets the routes of a snapshot use, by endpoint.
pub type RemoteKeySets = HashMap<JwksEndpoint, Arc<RemoteJwks>>;

async fn refresh_loop(remote: Weak<RemoteJwks>, wake: Arc<Notify>, counters: JwksCounters) {
    let mut retry = Duration::from_secs(1);
    loop {
        let Some(current) = remote.upgrade() else {
            break;
        };
        let endpoint = current.endpoint.clone();
        drop(current);
        let outcome = fetch(&endpoint).await;
        let Some(current) = remote.upgrade() else {
            break;
        };
        let wait = match outcome {
            Ok(set) => {
                counters.refreshes.inc();
                counters
                    .keys
                    .set(i64::try_from(set.len()).unwrap_or(i64::MAX));
                let changed = current.keys.load().as_deref().is_none_or(|old| *old != set);
                if changed {
                    tracing::info!(uri = endpoint.label(), keys = set.len(), "JWKS loaded");
                    current.keys.store(Some(Arc::new(set)));
                }
                retry = Duration::from_secs(1);
                REFRESH_INTERVAL
            }
            Err(error) => {
                counters.errors.inc();
                tracing::warn!(uri = endpoint.label(), %error, retry_in = ?retry,
                    "JWKS fetch failed; the last good key set (if any) stays in use");
                let wait = retry;
                retry = (retry * 2).min(MAX_RETRY_INTERVAL);
                wait
            }
        };
        drop(current);
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = wake.notified() => {}
        }
    }
    // No route names this endpoint any more.
    counters.keys.set(0);
}

/// Why a fetch failed.
#[derive(Debug, thiserror::Error)]
enum FetchError {
    #[error("{0}")]
    Setup(String),
    #[error("no answer within {FETCH_TIMEOUT:?}")]
    Timeout,
    #[error("request failed: {0}")]
    Request(String),
    #[error("answered {0}")]
    Status(http::StatusCode),
    #[error("body: {0}")]
    Body(String),
    #[error("{0}")]
    Keys(#[from] super::jwt::JwksError),
}

async fn fetch(endpoint: &JwksEndpoint) -> Result<KeySet, FetchError> {
    let uri: http::Uri = endpoint
        .uri
        .parse()
        .map_err(|_| FetchError::Setup("not a URL".into()))?;
    let connector = https_connector(endpoint)?;
    let client = Client::builder(TokioExecutor::new()).build::<_, Empty<Bytes>>(connector);
    let request = http::Request::get(uri)
        .header(
            http::header::ACCEPT,
            "application/json, application/jwk-set+json",
        )
        .header(http::header::USER_AGENT, "sluice")
        .body(Empty::new())
        .map_err(|error| FetchError::Setup(error.to_string()))?;
    let work = async {
        let response = client
            .request(request)
            .await
            .map_err(|error| FetchError::Request(error.to_string()))?;
        if !response.status().is_success() {
            return Err(FetchError::Status(response.status()));
        }
        let body = Limited::new(response.into_body(), MAX_DOCUMENT_BYTES)
            .collect()
            .await
            .map_err(|error| FetchError::Body(error.to_string()))?
            .to_bytes();
        Ok(KeySet::parse(&body)?)
    };
    tokio::time::timeout(FETCH_TIMEOUT, work)
        .await
        .map_err(|_| FetchError::Timeout)?
}

fn https_connector(
    endpoint: &JwksEndpoint,
) -> Result<
    hyper_rustls::HttpsConnector<hyper_util::client::legacy::connect::HttpConnector>,
    FetchError,
> {
    let verify = match &endpoint.ca {
        None => UpstreamVerify::PublicRoots,
        Some(certificates) => UpstreamVerify::Ca(Arc::clone(certificates)),
    };
    let config = crate::upstream::verifying_config(&verify).map_err(FetchError::Setup)?;
    Ok(hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(config)
        .https_only()
        .enable_http1()
        .build())
}
