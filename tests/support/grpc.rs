//! A real gRPC service for the tests, written with tonic's codegen-free server and client
//! APIs and hand-derived prost messages (no protoc needed).
//!
//! Service `test.Echo`:
//! - `Unary`: answers `echo: <text>`;
//! - `Count`: server streaming, `count` messages `<text> <i>`;
//! - `Chat`: bidirectional, answers each message as it arrives;
//! - `Fail`: fails with NOT_FOUND and a message;
//! - `Slow`: answers after `count` milliseconds.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::time::Duration;

use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::http::uri::PathAndQuery;
use hyper::service::service_fn;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;
use tonic::server::{ServerStreamingService, StreamingService, UnaryService};
use tonic::{Code, Request, Response, Status, Streaming};
use tonic_prost::ProstCodec;

/// The one message type of the service, both ways.
#[derive(Clone, PartialEq, prost::Message)]
pub struct EchoMessage {
    #[prost(string, tag = "1")]
    pub text: String,
    #[prost(uint32, tag = "2")]
    pub count: u32,
}

impl EchoMessage {
    pub fn new(text: &str, count: u32) -> Self {
        EchoMessage {
            text: text.to_owned(),
            count,
        }
    }
}

type Reply<T> = Pin<Box<dyn Future<Output = Result<Response<T>, Status>> + Send>>;
type MessageStream = Pin<Box<dyn Stream<Item = Result<EchoMessage, Status>> + Send>>;

struct Unary;

impl UnaryService<EchoMessage> for Unary {
    type Response = EchoMessage;
    type Future = Reply<EchoMessage>;

    fn call(&mut self, request: Request<EchoMessage>) -> Self::Future {
        let message = request.into_inner();
        Box::pin(async move {
            Ok(Response::new(EchoMessage::new(
                &format!("echo: {}", message.text),
                message.count,
            )))
        })
    }
}

struct Fail;

impl UnaryService<EchoMessage> for Fail {
    type Response = EchoMessage;
    type Future = Reply<EchoMessage>;

    fn call(&mut self, request: Request<EchoMessage>) -> Self::Future {
        let text = request.into_inner().text;
        Box::pin(async move { Err(Status::new(Code::NotFound, format!("no widget {text}"))) })
    }
}

struct Slow;

impl UnaryService<EchoMessage> for Slow {
    type Response = EchoMessage;
    type Future = Reply<EchoMessage>;

    fn call(&mut self, request: Request<EchoMessage>) -> Self::Future {
        let message = request.into_inner();
        Box::pin(async move {
            tokio::time::sleep(Duration::from_millis(u64::from(message.count))).await;
            Ok(Response::new(EchoMessage::new("slept", message.count)))
        })
    }
}

struct Count;

impl ServerStreamingService<EchoMessage> for Count {
    type Response = EchoMessage;
    type ResponseStream = MessageStream;
    type Future = Reply<MessageStream>;

    fn call(&mut self, request: Request<EchoMessage>) -> Self::Future {
        let message = request.into_inner();
        Box::pin(async move {
            let stream = futures_util::stream::iter(0..message.count)
                .map(move |i| Ok(EchoMessage::new(&format!("{} {i}", message.text), i)));
            Ok(Response::new(Box::pin(stream) as MessageStream))
        })
    }
}

struct Chat;

impl StreamingService<EchoMessage> for Chat {
    type Response = EchoMessage;
    type ResponseStream = MessageStream;
    type Future = Reply<MessageStream>;

    fn call(&mut self, request: Request<Streaming<EchoMessage>>) -> Self::Future {
        let incoming = request.into_inner();
        Box::pin(async move {
            let answers = incoming.map(|message| {
                message.map(|message| {
                    EchoMessage::new(&format!("heard {}", message.text), message.count)
                })
            });
            Ok(Response::new(Box::pin(answers) as MessageStream))
        })
    }
}

/// Answers one HTTP request as the `test.Echo` service, or 404 for another path.
pub async fn handle(request: hyper::Request<Incoming>) -> hyper::Response<tonic::body::Body> {
    let mut grpc = tonic::server::Grpc::new(ProstCodec::<EchoMessage, EchoMessage>::default());
    match request.uri().path() {
        "/test.Echo/Unary" => grpc.unary(Unary, request).await,
        "/test.Echo/Fail" => grpc.unary(Fail, request).await,
        "/test.Echo/Slow" => grpc.unary(Slow, request).await,
        "/test.Echo/Count" => grpc.server_streaming(Count, request).await,
        "/test.Echo/Chat" => grpc.streaming(Chat, request).await,
        _ => {
            let mut response =
                hyper::Response::new(tonic::body::Body::new(Full::new(Bytes::from_static(b"no"))));
            *response.status_mut() = hyper::StatusCode::NOT_FOUND;
            response
        }
    }
}

/// A gRPC server speaking h2c (prior knowledge) on 127.0.0.1, until the test ends.
pub async fn start_h2c_server() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let service =
                    service_fn(|request| async { Ok::<_, Infallible>(handle(request).await) });
                let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    addr
}

/// A gRPC client that talks h2c (prior knowledge) to `addr`.
pub struct EchoClient {
    grpc: tonic::client::Grpc<Client<HttpConnector, tonic::body::Body>>,
}

impl EchoClient {
    pub fn new(addr: SocketAddr) -> Self {
        let client = Client::builder(TokioExecutor::new())
            .http2_only(true)
            .build_http();
        let origin = format!("http://{addr}").parse().expect("origin");
        EchoClient {
            grpc: tonic::client::Grpc::with_origin(client, origin),
        }
    }

    fn codec() -> ProstCodec<EchoMessage, EchoMessage> {
        ProstCodec::default()
    }

    pub async fn unary(
        &mut self,
        method: &'static str,
        message: EchoMessage,
        timeout: Option<Duration>,
    ) -> Result<EchoMessage, Status> {
        self.grpc
            .ready()
            .await
            .map_err(|error| Status::unavailable(error.to_string()))?;
        let mut request = Request::new(message);
        if let Some(timeout) = timeout {
            request.set_timeout(timeout);
        }
        let path = PathAndQuery::from_static(method);
        self.grpc
            .unary(request, path, Self::codec())
            .await
            .map(Response::into_inner)
    }

    pub async fn count(&mut self, text: &str, count: u32) -> Result<Vec<EchoMessage>, Status> {
        self.grpc
            .ready()
            .await
            .map_err(|error| Status::unavailable(error.to_string()))?;
        let path = PathAndQuery::from_static("/test.Echo/Count");
        let mut stream = self
            .grpc
            .server_streaming(
                Request::new(EchoMessage::new(text, count)),
                path,
                Self::codec(),
            )
            .await?
            .into_inner();
        let mut messages = Vec::new();
        while let Some(message) = stream.message().await? {
            messages.push(message);
        }
        Ok(messages)
    }

    /// Opens `Chat`: what is sent on the returned sender goes out as it is sent.
    pub async fn chat(
        &mut self,
    ) -> Result<
        (
            tokio::sync::mpsc::Sender<EchoMessage>,
            Streaming<EchoMessage>,
        ),
        Status,
    > {
        self.grpc
            .ready()
            .await
            .map_err(|error| Status::unavailable(error.to_string()))?;
        let (sender, receiver) = tokio::sync::mpsc::channel::<EchoMessage>(4);
        let outgoing = futures_util::stream::unfold(receiver, |mut receiver| async move {
            receiver.recv().await.map(|message| (message, receiver))
        });
        let path = PathAndQuery::from_static("/test.Echo/Chat");
        let answers = self
            .grpc
            .streaming(Request::new(outgoing), path, Self::codec())
            .await?
            .into_inner();
        Ok((sender, answers))
    }
}
