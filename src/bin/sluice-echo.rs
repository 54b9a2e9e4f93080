//! A small HTTP backend for trying Sluice, its tests and benchmarks.
//!
//! It listens on every `--listen` address and answers each request with a JSON summary of
//! what it received (its own address, method, path, headers). Query parameters shape the
//! answer: `status=503` sets the status, `sleep_ms=200` delays the headers, `size=65536`
//! sends that many bytes instead of the summary. A request with a body gets it back,
//! streamed.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context;
use bytes::Bytes;
use clap::Parser;
use http_body_util::{Either, Full};
use hyper::body::{Body, Incoming};
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;

#[derive(Debug, Parser)]
#[command(
    name = "sluice-echo",
    version,
    about = "An HTTP echo backend for trying and testing Sluice"
)]
struct Args {
    /// Address to listen on; repeat for several backends in one process.
    #[arg(long = "listen", required = true)]
    listen: Vec<SocketAddr>,
    /// Name reported in every answer.
    #[arg(long, default_value = "echo")]
    name: String,
}

type EchoBody = Either<Full<Bytes>, Incoming>;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let mut servers = tokio::task::JoinSet::new();
    for addr in &args.listen {
        let listener = TcpListener::bind(addr)
            .await
            .with_context(|| format!("cannot listen on {addr}"))?;
        let local = listener.local_addr()?;
        println!("sluice-echo {} listening on {local}", args.name);
        servers.spawn(serve(listener, local, args.name.clone()));
    }
    tokio::select! {
        _ = servers.join_next() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
    Ok(())
}

async fn serve(listener: TcpListener, local: SocketAddr, name: String) {
    let builder = auto::Builder::new(TokioExecutor::new());
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let _ = stream.set_nodelay(true);
        let name = name.clone();
        let service = service_fn(move |request| answer(request, local, name.clone()));
        let connection = builder
            .serve_connection(TokioIo::new(stream), service)
            .into_owned();
        tokio::spawn(connection);
    }
}

async fn answer(
    request: Request<Incoming>,
    local: SocketAddr,
    name: String,
) -> Result<Response<EchoBody>, Infallible> {
    let query = request.uri().query().unwrap_or("");
    let param = |key: &str| {
        query
            .split('&')
            .filter_map(|pair| pair.split_once('='))
            .find(|(k, _)| *k == key)
            .and_then(|(_, v)| v.parse::<u64>().ok())
    };
    if let Some(sleep) = param("sleep_ms") {
        tokio::time::sleep(Duration::from_millis(sleep)).await;
    }
    let status = param("status")
        .and_then(|s| u16::try_from(s).ok())
        .and_then(|s| StatusCode::from_u16(s).ok())
        .unwrap_or(StatusCode::OK);
    let mut builder = Response::builder()
        .status(status)
        .header("x-echo-server", name.as_str())
        .header("x-echo-addr", local.to_string());
    if !request.body().is_end_stream() {
        let body = request.into_body();
        let response = builder
            .header("content-type", "application/octet-stream")
            .body(Either::Right(body));
        return Ok(response.unwrap_or_else(|_| Response::new(Either::Left(Full::default()))));
    }
    let body = if let Some(size) = param("size") {
        builder = builder.header("content-type", "application/octet-stream");
        Bytes::from(vec![b'x'; usize::try_from(size.min(64 << 20)).unwrap_or(0)])
    } else {
        builder = builder.header("content-type", "application/json");
        let headers: serde_json::Map<String, serde_json::Value> = request
            .headers()
            .iter()
            .map(|(k, v)| {
                (
                    k.as_str().to_owned(),
                    String::from_utf8_lossy(v.as_bytes()).into(),
                )
            })
            .collect();
        let summary = serde_json::json!({
            "server": name,
            "addr": local.to_string(),
            "method": request.method().as_str(),
            "uri": request.uri().to_string(),
            "version": format!("{:?}", request.version()),
            "headers": headers,
        });
        Bytes::from(summary.to_string())
    };
    Ok(builder
        .body(Either::Left(Full::new(body)))
        .unwrap_or_else(|_| Response::new(Either::Left(Full::default()))))
}
