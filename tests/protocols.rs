//! The upstream-side protocols through the real `sluice` binary in standalone mode: gRPC
//! (h2c and over TLS), WebSocket, TLS to upstreams, and server-sent events. Every server
//! and client is real and on 127.0.0.1.

mod support;

use std::convert::Infallible;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::StreamExt;
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use support::grpc::{EchoClient, EchoMessage};
use support::tls::{TestCa, ca_secret_yaml};
use support::upstream_tls::start_tls_upstream;
use support::websocket::{connect, connect_h2, round_trip, start_echo_server};
use support::{INGRESS_CLASS, ManifestDir, Sluice, service_yaml};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;
use tonic::Code;

/// An Ingress in `default` with the given annotations and rules.
fn ingress(name: &str, annotations: &[(&str, &str)], rules: &str) -> String {
    let mut yaml = format!(
        "---\napiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata:\n  name: {name}\n  namespace: default\n"
    );
    if !annotations.is_empty() {
        yaml.push_str("  annotations:\n");
        for (key, value) in annotations {
            yaml.push_str(&format!("    {key}: \"{value}\"\n"));
        }
    }
    yaml.push_str(&format!(
        "spec:\n  ingressClassName: sluice\n  rules:\n{rules}"
    ));
    yaml
}

/// One rule: `host` (or none) with `paths` as (path, service).
fn rule(host: Option<&str>, paths: &[(&str, &str)]) -> String {
    let mut yaml = match host {
        Some(host) => format!("  - host: {host}\n    http:\n      paths:\n"),
        None => "  - http:\n      paths:\n".to_owned(),
    };
    for (path, service) in paths {
        yaml.push_str(&format!(
            "      - {{path: \"{path}\", pathType: Prefix, backend: {{service: {{name: {service}, port: {{number: 80}}}}}}}}\n"
        ));
    }
    yaml
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_calls_errors_and_deadlines_through_sluice() {
    let grpc = support::grpc::start_h2c_server().await;
    let dir = ManifestDir::new("grpc");
    dir.write("class.yaml", INGRESS_CLASS);
    let mut objects = service_yaml("default", "echo", 80, &[grpc], &[]);
    objects += "---\n";
    objects += &service_yaml("default", "nothing", 80, &[], &[]);
    objects += &ingress(
        "grpc",
        &[("sluice.dev/backend-protocol", "GRPC")],
        &rule(None, &[("/test.Echo", "echo"), ("/test.Empty", "nothing")]),
    );
    dir.write("objects.yaml", &objects);
    // A short request timeout, to show that a longer grpc-timeout wins on gRPC routes; a
    // short body timeout, to show it ends with the upstream's answer (a streaming client
    // may go quiet for longer).
    let sluice = Sluice::start(
        &dir.0,
        &["--request-timeout", "1s", "--client-body-timeout", "1s"],
    )
    .await;
    let mut client = EchoClient::new(sluice.http);

    let reply = client
        .unary("/test.Echo/Unary", EchoMessage::new("hello", 7), None)
        .await
        .expect("unary call");
    assert_eq!(reply, EchoMessage::new("echo: hello", 7));

    let counted = client.count("tick", 5).await.expect("server streaming");
    let texts: Vec<&str> = counted.iter().map(|m| m.text.as_str()).collect();
    assert_eq!(texts, ["tick 0", "tick 1", "tick 2", "tick 3", "tick 4"]);

    // Each answer arrives before the next message is sent: both directions stream.
    let (sender, mut answers) = client.chat().await.expect("bidirectional call");
    for i in 0..10u32 {
        if i == 5 {
            tokio::time::sleep(Duration::from_millis(1600)).await;
        }
        sender
            .send(EchoMessage::new(&format!("line {i}"), i))
            .await
            .expect("send");
        let answer = tokio::time::timeout(Duration::from_secs(5), answers.message())
            .await
            .expect("answer in time")
            .expect("stream ok")
            .expect("an answer");
        assert_eq!(answer, EchoMessage::new(&format!("heard line {i}"), i));
    }
    drop(sender);
    let end = tokio::time::timeout(Duration::from_secs(5), answers.message())
        .await
        .expect("end in time");
    assert!(matches!(end, Ok(None)), "{end:?}");

    let failed = client
        .unary("/test.Echo/Fail", EchoMessage::new("42", 0), None)
        .await
        .expect_err("the server fails this call");
    assert_eq!(failed.code(), Code::NotFound);
    assert_eq!(failed.message(), "no widget 42");

    // A deadline shorter than the call: Sluice gives up at the deadline.
    let started = Instant::now();
    let late = client
        .unary(
            "/test.Echo/Slow",
            EchoMessage::new("", 3000),
            Some(Duration::from_millis(300)),
        )
        .await
        .expect_err("past its deadline");
    assert_eq!(late.code(), Code::DeadlineExceeded, "{late:?}");
    assert!(started.elapsed() < Duration::from_millis(2500));

    // A deadline longer than --request-timeout: the call may take its time.
    let slow = client
        .unary(
            "/test.Echo/Slow",
            EchoMessage::new("", 1500),
            Some(Duration::from_secs(5)),
        )
        .await
        .expect("within its own deadline");
    assert_eq!(slow.text, "slept");

    // Without a deadline, --request-timeout applies, and the 504 arrives gRPC-shaped.
    let timed_out = client
        .unary("/test.Echo/Slow", EchoMessage::new("", 1500), None)
        .await
        .expect_err("past --request-timeout");
    assert_eq!(timed_out.code(), Code::DeadlineExceeded);

    let unavailable = client
        .unary("/test.Empty/Unary", EchoMessage::new("", 0), None)
        .await
        .expect_err("no endpoints");
    assert_eq!(unavailable.code(), Code::Unavailable);
    assert!(
        unavailable.message().contains("no ready endpoints"),
        "{unavailable:?}"
    );
    println!("gRPC: unary, server streaming, 10 bidi exchanges, status, deadlines passed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_tunnels_survive_snapshot_changes_and_close_when_idle() {
    let echo = start_echo_server().await;
    let dir = ManifestDir::new("websocket");
    dir.write("class.yaml", INGRESS_CLASS);
    dir.write(
        "services.yaml",
        &service_yaml("default", "ws", 80, &[echo], &[]),
    );
    let routes = |change: usize| {
        let mut yaml = ingress(
            "ws",
            &[],
            &rule(
                Some("ws.test"),
                &[("/", "ws"), (&format!("/change-{change}"), "ws")],
            ),
        );
        yaml += &ingress(
            "idle",
            &[("sluice.dev/websocket-idle-timeout", "1s")],
            &rule(Some("idle.test"), &[("/", "ws")]),
        );
        yaml
    };
    dir.write("routes.yaml", &routes(0));
    let sluice = Sluice::start(&dir.0, &[]).await;

    // WebSocket over HTTP/2 (RFC 8441) reaches the same HTTP/1.1 backend.
    let mut over_h2 = connect_h2(sluice.http, "ws.test", "/chat-h2").await;
    for i in 0..100 {
        round_trip(&mut over_h2, &format!("h2 message {i}")).await;
    }
    drop(over_h2);

    let mut socket = connect(sluice.http, "ws.test", "/chat").await;
    for i in 0..1000 {
        round_trip(&mut socket, &format!("message {i}")).await;
    }
    assert_eq!(sluice.metric("sluice_upgraded_tunnels").await, Some(1.0));

    let start_generation = sluice.generation().await;
    for change in 1..=100 {
        dir.write("routes.yaml", &routes(change));
        sluice
            .wait_for_generation(start_generation + change as u64)
            .await;
        round_trip(&mut socket, &format!("after change {change}")).await;
    }
    assert_ne!(
        sluice.get("ws.test", "/change-100").await.status,
        404,
        "the last change is served"
    );

    // A 1 s idle timeout closes a quiet tunnel; the other, with the default, stays.
    let mut quiet = connect(sluice.http, "idle.test", "/").await;
    round_trip(&mut quiet, "once").await;
    let started = Instant::now();
    let ended = tokio::time::timeout(Duration::from_secs(5), quiet.next())
        .await
        .expect("the idle tunnel is closed within 5 s");
    assert!(
        matches!(ended, None | Some(Err(_)) | Some(Ok(Message::Close(_)))),
        "{ended:?}"
    );
    let waited = started.elapsed();
    assert!(waited >= Duration::from_millis(900), "{waited:?}");
    round_trip(&mut socket, "still here").await;
    support::eventually(Duration::from_secs(5), "one tunnel left", async || {
        sluice.metric("sluice_upgraded_tunnels").await == Some(1.0)
    })
    .await;
    println!(
        "WebSocket: 1000 round trips, 100 snapshot changes, idle tunnel closed after {waited:?}"
    );
}

/// An HTTP/2 WebSocket's response body ends with its headers, so its stream no longer
/// counts as a request; the tunnel must still keep its connection from being closed as
/// idle (and then dropped at the idle close's hard deadline).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http2_websocket_keeps_its_connection_open_past_the_idle_timeout() {
    let echo = start_echo_server().await;
    let dir = ManifestDir::new("websocket-idle-connection");
    dir.write("class.yaml", INGRESS_CLASS);
    dir.write(
        "services.yaml",
        &service_yaml("default", "ws", 80, &[echo], &[]),
    );
    dir.write(
        "routes.yaml",
        &ingress("ws", &[], &rule(Some("ws.test"), &[("/", "ws")])),
    );
    let sluice = Sluice::start(
        &dir.0,
        &["--client-idle-timeout", "1s", "--header-read-timeout", "1s"],
    )
    .await;
    let mut over_h2 = connect_h2(sluice.http, "ws.test", "/chat-h2").await;
    round_trip(&mut over_h2, "before").await;
    // Past the idle timeout and the idle close's hard deadline after it, twice over.
    tokio::time::sleep(Duration::from_secs(4)).await;
    round_trip(&mut over_h2, "after four quiet seconds").await;
    assert_eq!(sluice.metric("sluice_upgraded_tunnels").await, Some(1.0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_upstreams_are_verified_against_the_configured_ca_and_name() {
    let ca = TestCa::new("sluice test CA");
    let other_ca = TestCa::new("someone else's CA");
    let upstream = start_tls_upstream(&ca, &["backend.internal", "tls-web.default.svc"]).await;
    let dir = ManifestDir::new("upstream-tls");
    dir.write("class.yaml", INGRESS_CLASS);
    let mut objects = service_yaml("default", "tls-web", 80, &[upstream.addr], &[]);
    objects += &ca_secret_yaml("default", "good-ca", &ca.pem);
    objects += &ca_secret_yaml("default", "wrong-ca", &other_ca.pem);
    let https = ("sluice.dev/backend-protocol", "HTTPS");
    let sni = ("sluice.dev/backend-sni", "backend.internal");
    objects += &ingress(
        "verified",
        &[https, ("sluice.dev/backend-ca", "good-ca"), sni],
        &rule(Some("verified.test"), &[("/", "tls-web")]),
    );
    objects += &ingress(
        "default-sni",
        &[https, ("sluice.dev/backend-ca", "good-ca")],
        &rule(Some("default-sni.test"), &[("/", "tls-web")]),
    );
    objects += &ingress(
        "wrong-ca",
        &[https, ("sluice.dev/backend-ca", "wrong-ca"), sni],
        &rule(Some("wrong.test"), &[("/", "tls-web")]),
    );
    // The right CA, but a name the certificate does not have.
    objects += &ingress(
        "wrong-name",
        &[
            https,
            ("sluice.dev/backend-ca", "good-ca"),
            ("sluice.dev/backend-sni", "not-in-the-cert.example"),
        ],
        &rule(Some("wrong-name.test"), &[("/", "tls-web")]),
    );
    objects += &ingress(
        "insecure",
        &[
            https,
            ("sluice.dev/backend-tls-verify", "false"),
            ("sluice.dev/backend-sni", "not-in-the-cert.example"),
        ],
        &rule(Some("insecure.test"), &[("/", "tls-web")]),
    );
    objects += &ingress(
        "missing-ca",
        &[https, ("sluice.dev/backend-ca", "nope")],
        &rule(Some("missing.test"), &[("/", "tls-web")]),
    );
    objects += &ingress(
        "grpcs",
        &[
            ("sluice.dev/backend-protocol", "GRPCS"),
            ("sluice.dev/backend-ca", "good-ca"),
            sni,
        ],
        &rule(None, &[("/test.Echo", "tls-web")]),
    );
    dir.write("objects.yaml", &objects);
    let sluice = Sluice::start(&dir.0, &[]).await;

    let verified = sluice.get("verified.test", "/").await;
    assert_eq!(verified.status, 200, "{}", verified.body);
    assert_eq!(
        verified.body, "tls ok h2",
        "HTTPS offers h2 and the upstream took it"
    );
    let default_sni = sluice.get("default-sni.test", "/").await;
    assert_eq!(default_sni.status, 200, "{}", default_sni.body);
    let wrong = sluice.get("wrong.test", "/").await;
    assert_eq!(wrong.status, 502, "{}", wrong.body);
    let wrong_name = sluice.get("wrong-name.test", "/").await;
    assert_eq!(wrong_name.status, 502, "{}", wrong_name.body);
    let insecure = sluice.get("insecure.test", "/").await;
    assert_eq!(insecure.status, 200, "{}", insecure.body);
    let missing = sluice.get("missing.test", "/").await;
    assert_eq!(missing.status, 503, "{}", missing.body);
    let verbose = sluice
        .admin_get("/readyz?verbose")
        .await
        .expect("readyz")
        .body;
    assert!(
        verbose
            .lines()
            .any(|line| line.contains("default/missing-ca")
                && line.contains("Secret \"nope\" does not exist")),
        "{verbose}"
    );

    let mut client = EchoClient::new(sluice.http);
    let reply = client
        .unary("/test.Echo/Unary", EchoMessage::new("over tls", 1), None)
        .await
        .expect("GRPCS unary call");
    assert_eq!(reply.text, "echo: over tls");
    assert_eq!(
        client.count("s", 3).await.expect("GRPCS streaming").len(),
        3
    );

    let names = upstream.server_names();
    for expected in [
        "backend.internal",
        "tls-web.default.svc",
        "not-in-the-cert.example",
    ] {
        assert!(
            names.iter().any(|name| name == expected),
            "SNI {expected} not seen: {names:?}"
        );
    }
    assert!(
        !names.iter().any(|name| name.starts_with("127.")),
        "the endpoint IP is never the SNI: {names:?}"
    );
    println!("upstream TLS: verified, wrong CA 502, verify off, missing CA 503; SNI {names:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_sent_events_stream_without_buffering() {
    // The upstream sends an event only when the test says so.
    let (event_senders, mut new_streams) = mpsc::channel::<mpsc::Sender<Bytes>>(1);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let upstream = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let event_senders = event_senders.clone();
            let service = service_fn(move |_request| {
                let event_senders = event_senders.clone();
                async move {
                    let (events, receiver) = mpsc::channel::<Bytes>(4);
                    let _ = event_senders.send(events).await;
                    let body = futures_util::stream::unfold(receiver, |mut receiver| async move {
                        receiver
                            .recv()
                            .await
                            .map(|event| (Ok::<_, Infallible>(Frame::data(event)), receiver))
                    });
                    let response = hyper::Response::builder()
                        .header("content-type", "text/event-stream")
                        .body(StreamBody::new(body))
                        .expect("response");
                    Ok::<_, Infallible>(response)
                }
            });
            tokio::spawn(
                hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection_with_upgrades(TokioIo::new(stream), service)
                    .into_owned(),
            );
        }
    });
    let dir = ManifestDir::new("sse");
    dir.write("class.yaml", INGRESS_CLASS);
    let mut objects = service_yaml("default", "events", 80, &[upstream], &[]);
    objects += &ingress(
        "events",
        &[],
        &rule(Some("events.test"), &[("/", "events")]),
    );
    dir.write("objects.yaml", &objects);
    let sluice = Sluice::start(&dir.0, &[]).await;

    let client = support::shared_client();
    let request = hyper::Request::builder()
        .uri(format!("http://{}/stream", sluice.http))
        .header("host", "events.test")
        .header("accept", "text/event-stream")
        .body(http_body_util::Full::new(Bytes::new()))
        .expect("request");
    let response = tokio::time::timeout(Duration::from_secs(5), client.request(request))
        .await
        .expect("headers in time")
        .expect("response");
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    let events = tokio::time::timeout(Duration::from_secs(5), new_streams.recv())
        .await
        .expect("the upstream got the request")
        .expect("sender");
    let mut body = response.into_body();
    let mut next_event = async || {
        let frame = tokio::time::timeout(Duration::from_secs(2), body.frame())
            .await
            .expect("the event arrives while the upstream holds the next one back")
            .expect("a frame")
            .expect("body ok");
        frame.into_data().expect("data")
    };
    for n in 0..3 {
        let event = Bytes::from(format!("data: event {n}\n\n"));
        events.send(event.clone()).await.expect("send event");
        // The next event is sent only after this one has reached the client.
        assert_eq!(next_event().await, event);
    }
    println!("SSE: 3 events, each delivered before the next was sent");
}
