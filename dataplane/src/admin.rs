//! The admin listener: `/metrics`, `/healthz`, `/readyz`, and `POST /cache/purge` when
//! a purge token is configured.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http::header::{CONTENT_TYPE, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, watch};

use sha2::{Digest, Sha256};

use crate::cache::store::PurgeTarget;
use crate::live::{DataPlane, PurgeReport};
use crate::server::{Activity, ClientIo, ConnectionServer, ListenerConfig};

const PROMETHEUS_TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";
const PLAIN_TEXT: &str = "text/plain; charset=utf-8";

/// How the admin listener serves, and what it offers besides metrics and probes.
#[derive(Debug, Clone)]
pub struct AdminOptions {
    /// The bearer token `POST /cache/purge` needs; without one the endpoint does not exist.
    pub purge_token: Option<Arc<str>>,
    /// Header limits and the header-read, idle and drain deadlines: the traffic
    /// listeners' own, so a client gets no more patience here than there.
    pub listener: ListenerConfig,
    /// Connections open at once. More are closed as soon as they are accepted: every one
    /// holds a file descriptor the traffic listeners share, and the deadlines above free
    /// a held slot within the header-read timeout.
    pub max_connections: usize,
}

impl Default for AdminOptions {
    fn default() -> Self {
        AdminOptions {
            purge_token: None,
            listener: ListenerConfig::default(),
            max_connections: 64,
        }
    }
}

/// Serves the admin endpoints until `shutdown` completes; then open connections close
/// gracefully, within the drain timeout.
pub async fn serve_admin(
    listener: TcpListener,
    data_plane: Arc<DataPlane>,
    options: AdminOptions,
    shutdown: impl Future<Output = ()>,
) {
    // Compared as digests: equal-length inputs, so the comparison's time says nothing.
    let purge_token = options
        .purge_token
        .map(|token| Arc::new(<[u8; 32]>::from(Sha256::digest(token.as_bytes()))));
    let (drain, draining) = watch::channel(false);
    let server = Arc::new(ConnectionServer::new(&options.listener, draining, None));
    // Clamped: a semaphore panics beyond MAX_PERMITS.
    let slots = Arc::new(Semaphore::new(
        options.max_connections.clamp(1, Semaphore::MAX_PERMITS),
    ));
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    tracing::warn!(%error, "admin accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        // Refused rather than queued: a queue would hold the descriptors the cap is there
        // to bound. Probes retry, and a slot frees within the header-read timeout.
        let Ok(slot) = Arc::clone(&slots).try_acquire_owned() else {
            data_plane.metrics().admin_connections_refused.inc();
            tracing::debug!(client = %peer, "admin connection refused: too many open");
            drop(stream);
            continue;
        };
        let connection = serve_admin_client(
            Arc::clone(&server),
            stream,
            peer,
            Arc::clone(&data_plane),
            purge_token.clone(),
        );
        tokio::spawn(async move {
            connection.await;
            drop(slot);
        });
    }
    let _ = drain.send(true);
}

/// Serves one admin connection until it closes.
async fn serve_admin_client(
    server: Arc<ConnectionServer>,
    stream: TcpStream,
    peer: SocketAddr,
    data_plane: Arc<DataPlane>,
    purge_token: Option<Arc<[u8; 32]>>,
) {
    let handle = move |request: Request<Incoming>| {
        let data_plane = Arc::clone(&data_plane);
        let purge_token = purge_token.clone();
        async move {
            if request.uri().path() == "/cache/purge"
                && let Some(token) = purge_token
            {
                purge(&data_plane, &request, &token).await
            } else {
                answer(&data_plane, &request)
            }
        }
    };
    let io = ClientIo::new(stream, Arc::new(Activity::new()));
    server
        .serve(io, peer, None, |_| {}, move |_| handle.clone(), ())
        .await;
}

fn answer(data_plane: &DataPlane, request: &Request<Incoming>) -> Response<Full<Bytes>> {
    if request.method() != Method::GET && request.method() != Method::HEAD {
        return text(
            StatusCode::METHOD_NOT_ALLOWED,
            "only GET and HEAD\n".into(),
            "text/plain; charset=utf-8",
        );
    }
    match request.uri().path() {
        "/metrics" => text(
            StatusCode::OK,
            data_plane.metrics().encode(),
            PROMETHEUS_TEXT,
        ),
        "/healthz" => text(StatusCode::OK, "ok\n".into(), "text/plain; charset=utf-8"),
        "/readyz" => {
            let ready = data_plane.is_ready();
            let status = if ready {
                StatusCode::OK
            } else {
                StatusCode::SERVICE_UNAVAILABLE
            };
            let verbose = request.uri().query().is_some_and(|query| {
                query
                    .split('&')
                    .any(|pair| pair == "verbose" || pair.starts_with("verbose="))
            });
            let body = if verbose {
                readiness_report(data_plane, ready)
            } else if ready {
                "ok\n".into()
            } else {
                "not ready: no snapshot yet\n".into()
            };
            text(status, body, "text/plain; charset=utf-8")
        }
        _ => text(
            StatusCode::NOT_FOUND,
            "not found\n".into(),
            "text/plain; charset=utf-8",
        ),
    }
}

/// `POST /cache/purge?host=H&path=/p?q` removes one URL, `…&prefix=/p/` every path under
/// a prefix, from every Cache policy: this replica's memory, Redis, and through Redis the
/// memory of every other replica.
async fn purge(
    data_plane: &DataPlane,
    request: &Request<Incoming>,
    token: &[u8; 32],
) -> Response<Full<Bytes>> {
    let presented = request
        .headers()
        .get(http::header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Bearer "))
        .map(|value| <[u8; 32]>::from(Sha256::digest(value.trim().as_bytes())));
    if presented.as_ref() != Some(token) {
        let mut response = text(
            StatusCode::UNAUTHORIZED,
            "a valid bearer token is needed\n".into(),
            PLAIN_TEXT,
        );
        response.headers_mut().insert(
            http::header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Bearer realm=\"sluice-admin\""),
        );
        return response;
    }
    if request.method() != Method::POST {
        return text(
            StatusCode::METHOD_NOT_ALLOWED,
            "only POST\n".into(),
            PLAIN_TEXT,
        );
    }
    let target = match purge_target(request.uri().query().unwrap_or("")) {
        Ok(target) => target,
        Err(why) => return text(StatusCode::BAD_REQUEST, format!("{why}\n"), PLAIN_TEXT),
    };
    let report = data_plane.purge_cache(&target).await;
    tracing::info!(
        ?target,
        memory_keys = report.memory_keys,
        redis_keys = report.redis_keys,
        errors = report.errors.len(),
        "cache purge"
    );
    let status = if report.errors.is_empty() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    text(status, purge_report_json(&report), "application/json")
}

/// The purge a query names: `host` and either `path` (with its query, exact) or `prefix`,
/// both normalised as the request path is, so they name what the cache stored.
fn purge_target(query: &str) -> Result<PurgeTarget, String> {
    use crate::auth::api_key::{percent_decode, query_pairs};
    let mut host = None;
    let mut path = None;
    let mut prefix = None;
    for (name, value) in query_pairs(query).filter(|(name, _)| !name.is_empty()) {
        let value =
            String::from_utf8(percent_decode(value)).map_err(|_| format!("{name} is not UTF-8"))?;
        let slot = match name {
            "host" => &mut host,
            "path" => &mut path,
            "prefix" => &mut prefix,
            other => {
                return Err(format!(
                    "unknown parameter {other:?}: expected host, path or prefix"
                ));
            }
        };
        if slot.replace(value).is_some() {
            return Err(format!("{name} given twice"));
        }
    }
    let host = host.ok_or("host is needed")?;
    let host = crate::canonical::canonical_authority(&host)
        .map_err(|_| format!("{host:?} is not a host name"))?
        .host
        .into_owned();
    match (path, prefix) {
        (Some(path), None) => {
            let uri: http::Uri = path
                .parse()
                .map_err(|_| format!("{path:?} is not a path"))?;
            let normalized = crate::proxy::canonical_path_and_query(&uri)
                .filter(|_| uri.scheme().is_none() && path.starts_with('/'))
                .ok_or_else(|| format!("{path:?} is not a path"))?;
            Ok(PurgeTarget::Exact {
                host,
                path_and_query: normalized.as_str().to_owned(),
            })
        }
        (None, Some(prefix)) => {
            let normalized = crate::canonical::canonical_path(&prefix)
                .map_err(|_| format!("{prefix:?} is not a path"))?;
            Ok(PurgeTarget::Prefix {
                host,
                path_prefix: normalized.into_owned(),
            })
        }
        _ => Err("give exactly one of path (one URL) or prefix (every path under it)".into()),
    }
}

fn purge_report_json(report: &PurgeReport) -> String {
    let body = serde_json::json!({
        "memoryKeys": report.memory_keys,
        "redisKeys": report.redis_keys,
        "announced": report.announced,
        "errors": report.errors,
    });
    format!("{body}\n")
}

fn readiness_report(data_plane: &DataPlane, ready: bool) -> String {
    let live = data_plane.load();
    let report = data_plane.config_report();
    let mut out = format!(
        "ready: {}\nsnapshot generation: {}\nconfig problems: {}\n",
        if ready { "yes" } else { "no" },
        live.snapshot.generation,
        report.problems.len()
    );
    for problem in &report.problems {
        out.push_str("  ");
        out.push_str(problem);
        out.push('\n');
    }
    out
}

fn text(status: StatusCode, body: String, content_type: &'static str) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn purge_targets_are_read_and_normalised_like_requests() {
        assert_eq!(
            purge_target("host=Shop.Test&path=%2Fitems%2F%2F1%3Fpage%3D2"),
            Ok(PurgeTarget::Exact {
                host: "shop.test".into(),
                path_and_query: "/items/1?page=2".into(),
            })
        );
        assert_eq!(
            purge_target("prefix=/items/&host=shop.test"),
            Ok(PurgeTarget::Prefix {
                host: "shop.test".into(),
                path_prefix: "/items/".into(),
            })
        );
        for bad in [
            "",
            "host=shop.test",
            "path=/a",
            "host=shop.test&path=/a&prefix=/",
            "host=shop.test&path=a",
            "host=shop.test&path=http://x/a",
            "host=shop.test&prefix=/../etc",
            "host=a&host=b&path=/",
            "host=shop.test&path=/&other=1",
            "host=bad%20host&path=/",
        ] {
            assert!(purge_target(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn purge_reports_are_json() {
        let report = PurgeReport {
            memory_keys: 2,
            redis_keys: 3,
            announced: true,
            errors: vec!["shop/pages: \"down\"".into()],
        };
        let parsed: serde_json::Value = serde_json::from_str(&purge_report_json(&report)).unwrap();
        assert_eq!(parsed["memoryKeys"], 2);
        assert_eq!(parsed["redisKeys"], 3);
        assert_eq!(parsed["announced"], true);
        assert_eq!(parsed["errors"][0], "shop/pages: \"down\"");
    }
}
