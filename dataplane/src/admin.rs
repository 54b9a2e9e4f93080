//! The admin listener: `/metrics`, `/healthz`, `/readyz`.

use std::future::Future;
use std::sync::Arc;

use bytes::Bytes;
use http::header::{CONTENT_TYPE, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;

use crate::live::DataPlane;

const PROMETHEUS_TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Serves the admin endpoints until `shutdown` completes.
pub async fn serve_admin(
    listener: TcpListener,
    data_plane: Arc<DataPlane>,
    shutdown: impl Future<Output = ()>,
) {
    let builder = auto::Builder::new(TokioExecutor::new());
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let (stream, _) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    tracing::warn!(%error, "admin accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => return,
        };
        let data_plane = Arc::clone(&data_plane);
        let service = service_fn(move |request| {
            let data_plane = Arc::clone(&data_plane);
            async move { Ok::<_, std::convert::Infallible>(answer(&data_plane, &request)) }
        });
        let connection = builder
            .serve_connection(TokioIo::new(stream), service)
            .into_owned();
        tokio::spawn(async move {
            let _ = connection.await;
        });
    }
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
