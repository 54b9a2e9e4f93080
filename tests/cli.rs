//! The `sluice` command line: `check`, `--version`, clear start-up errors, h2c, metrics,
//! and graceful shutdown on SIGTERM, each against the real binary.

mod support;

use std::process::Command;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use support::{Echo, INGRESS_CLASS, ManifestDir, Sluice, service_yaml};

const INGRESS: &str = "---\napiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata: {name: web, namespace: default}\nspec:\n  ingressClassName: sluice\n  rules:\n  - host: web.test\n    http:\n      paths:\n      - {path: /, pathType: Prefix, backend: {service: {name: web, port: {number: 80}}}}\n";

fn sluice() -> Command {
    Command::new(env!("CARGO_BIN_EXE_sluice"))
}

#[test]
fn version_names_the_package_version() {
    let output = sluice().arg("--version").output().unwrap();
    assert!(output.status.success());
    assert_eq!(
        String::from_utf8_lossy(&output.stdout).trim(),
        format!("sluice {}", env!("CARGO_PKG_VERSION"))
    );
}

#[test]
fn check_reports_each_objects_errors_and_exits_non_zero() {
    let dir = ManifestDir::new("check");
    dir.write("class.yaml", INGRESS_CLASS);
    dir.write(
        "web.yaml",
        &format!("{}{INGRESS}", service_yaml("default", "web", 80, &[], &[])),
    );
    let clean = sluice()
        .args(["check", "--manifests"])
        .arg(&dir.0)
        .output()
        .unwrap();
    let clean_out = String::from_utf8_lossy(&clean.stdout);
    assert!(clean.status.success(), "{clean_out}");
    assert!(
        clean_out.contains("1 Ingresses of class \"sluice\" accepted, 0 errors"),
        "{clean_out}"
    );

    let bad_port = INGRESS
        .replace("web\n", "bad\n")
        .replace("name: web,", "name: bad,")
        .replace("{number: 80}", "{name: nope}");
    dir.write("bad.yaml", &bad_port);
    dir.write("broken.yaml", "kind: [");
    let failed = sluice()
        .args(["check", "--manifests"])
        .arg(&dir.0)
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&failed.stdout);
    assert_eq!(failed.status.code(), Some(1), "{out}");
    assert!(
        out.lines().any(|l| l.starts_with(
            "error: Ingress default/bad: spec.rules[0].http.paths[0].backend.service"
        )),
        "{out}"
    );
    assert!(
        out.lines()
            .any(|l| l.contains("broken.yaml") && l.contains("not valid YAML")),
        "{out}"
    );
}

/// `sluice check` on `dir`: exit code, stdout and stderr.
fn check(dir: &ManifestDir) -> (Option<i32>, String, String) {
    let output = sluice()
        .args(["check", "--manifests"])
        .arg(&dir.0)
        .output()
        .unwrap();
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// The defect: serde's message for `password: 12345` quoted the number, so the Secret's
/// value was printed by `sluice check` (and logged, and listed on /readyz).
#[test]
fn check_never_shows_a_secret_value_but_names_the_object_and_field() {
    let dir = ManifestDir::new("check-secret");
    dir.write("class.yaml", INGRESS_CLASS);
    dir.write(
        "data.yaml",
        "apiVersion: v1\nkind: Secret\nmetadata: {name: creds, namespace: shop}\ndata: {password: 12345}\n",
    );
    dir.write(
        "string.yaml",
        "apiVersion: v1\nkind: Secret\nmetadata: {name: plain, namespace: shop}\nstringData:\n  token: 987654321\n",
    );
    dir.write(
        "base64.yaml",
        "apiVersion: v1\nkind: Secret\nmetadata: {name: coded, namespace: shop}\ndata:\n  key: \"hunter2!!\"\n",
    );
    dir.write(
        "tagged.yaml",
        "apiVersion: v1\nkind: Secret\nmetadata: {name: tagged, namespace: shop}\ndata:\n  key: !!int swordfish\n",
    );
    let (code, out, err) = check(&dir);
    assert_eq!(code, Some(1), "{out}");
    for value in ["12345", "987654321", "hunter2", "swordfish"] {
        assert!(!out.contains(value), "{value} in {out}");
        assert!(!err.contains(value), "{value} in {err}");
    }
    for (object, field) in [
        (
            "Secret \"creds\"",
            "data.password: expected a base64-encoded string, found a number",
        ),
        (
            "Secret \"plain\"",
            "stringData.token: expected a string, found a number",
        ),
        ("Secret \"coded\"", "data.key: is not valid base64"),
    ] {
        assert!(
            out.lines()
                .any(|line| line.contains(object) && line.contains(field)),
            "{object} {field}: {out}"
        );
    }
    assert!(
        out.lines()
            .any(|line| line.contains("tagged.yaml: document 1: not valid YAML")),
        "{out}"
    );
}

/// The defect: a document nested tens of thousands deep took seconds to parse (quadratic in
/// its depth) before the parser's own limit refused it; `run` re-reads it on every change.
#[test]
fn check_refuses_a_deeply_nested_document_quickly_and_compiles_the_rest() {
    let dir = ManifestDir::new("check-deep");
    dir.write("class.yaml", INGRESS_CLASS);
    dir.write(
        "web.yaml",
        &format!("{}{INGRESS}", service_yaml("default", "web", 80, &[], &[])),
    );
    let deep = 50_000;
    dir.write(
        "deep.yaml",
        &format!(
            "apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: c}}\n---\nkind: {}{}\n",
            "{a: ".repeat(deep),
            "}".repeat(deep)
        ),
    );
    let started = Instant::now();
    let (code, out, _) = check(&dir);
    let took = started.elapsed();
    assert!(took < Duration::from_secs(5), "{took:?}");
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.lines()
            .any(|line| line.contains("deep.yaml: document 2: collections nest more than 64 deep")),
        "{out}"
    );
    assert!(
        out.contains("1 Ingresses of class \"sluice\" accepted, 1 errors"),
        "{out}"
    );
}

/// The defect: an EndpointSlice port of 0, above 65535 or missing was dropped without a
/// word, so a Service whose endpoints never got traffic gave no reason.
#[test]
fn check_reports_an_unusable_endpoint_slice_port() {
    let dir = ManifestDir::new("check-port");
    dir.write("class.yaml", INGRESS_CLASS);
    let addr: std::net::SocketAddr = "127.0.0.1:8080".parse().unwrap();
    let objects =
        service_yaml("default", "web", 80, &[addr], &[]).replace("port: 8080}", "port: 0}");
    dir.write("web.yaml", &format!("{objects}{INGRESS}"));
    let (code, out, _) = check(&dir);
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.lines().any(|line| line.starts_with(
            "error: EndpointSlice default/web-0: ports[0].port: port 0 is not a port number from \
             1 to 65535; the slice's endpoints get no traffic for port \"http\" of Service default/web"
        )),
        "{out}"
    );
}

#[test]
fn run_without_a_source_says_what_is_missing() {
    let output = sluice()
        .args([
            "run",
            "--http-addr",
            "127.0.0.1:0",
            "--admin-addr",
            "127.0.0.1:0",
        ])
        .env_remove("KUBECONFIG")
        .env_remove("KUBERNETES_SERVICE_HOST")
        // No ~/.kube/config to fall back on either.
        .env("HOME", "/nonexistent")
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("--manifests"), "{stderr}");
    let missing = sluice()
        .args([
            "run",
            "--manifests",
            "/nonexistent/sluice",
            "--http-addr",
            "127.0.0.1:0",
        ])
        .output()
        .unwrap();
    assert!(!missing.status.success());
    assert!(String::from_utf8_lossy(&missing.stderr).contains("not a folder"));
}

async fn started(name: &str, echo: &Echo) -> (ManifestDir, Sluice) {
    started_with(name, echo, &[]).await
}

async fn started_with(name: &str, echo: &Echo, extra: &[&str]) -> (ManifestDir, Sluice) {
    let dir = ManifestDir::new(name);
    dir.write("class.yaml", INGRESS_CLASS);
    dir.write(
        "web.yaml",
        &format!(
            "{}{INGRESS}",
            service_yaml("default", "web", 80, &echo.addrs, &[])
        ),
    );
    let sluice = Sluice::start(&dir.0, extra).await;
    (dir, sluice)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2c_with_prior_knowledge_is_served() {
    let echo = Echo::start(&["127.0.0.60"]);
    // HTTP/2 sends the URI's authority (Sluice's address), so route without a host.
    let dir = ManifestDir::new("h2c");
    dir.write("class.yaml", INGRESS_CLASS);
    let hostless = INGRESS.replace("  - host: web.test\n    http:", "  - http:");
    dir.write(
        "web.yaml",
        &format!(
            "{}{hostless}",
            service_yaml("default", "web", 80, &echo.addrs, &[])
        ),
    );
    let sluice = Sluice::start(&dir.0, &[]).await;
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new())
        .http2_only(true)
        .build_http();
    let request = hyper::Request::get(format!("http://{}/h2?x=1", sluice.http))
        .body(Full::new(Bytes::new()))
        .unwrap();
    let response = client.request(request).await.unwrap();
    assert_eq!(response.version(), hyper::Version::HTTP_2);
    assert_eq!(response.status(), 200);
    let body = response.into_body().collect().await.unwrap().to_bytes();
    let seen: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(seen["uri"], "/h2?x=1");
    assert_eq!(
        seen["headers"]["host"],
        sluice.http.to_string(),
        ":authority becomes Host upstream"
    );
    assert_eq!(seen["version"], "HTTP/1.1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_requests_by_route_not_by_path() {
    let echo = Echo::start(&["127.0.0.61"]);
    let (_dir, sluice) = started("metrics", &echo).await;
    for n in 0..5 {
        assert_eq!(
            sluice.get("web.test", &format!("/unique/{n}")).await.status,
            200
        );
    }
    assert_eq!(sluice.get("nowhere.test", "/").await.status, 404);
    let metrics = sluice.admin_get("/metrics").await.unwrap();
    assert_eq!(
        metrics.headers["content-type"],
        "text/plain; version=0.0.4; charset=utf-8"
    );
    let text = metrics.body;
    let has = |needle: &str| text.lines().any(|l| l.starts_with(needle));
    assert!(
        has(
            r#"sluice_http_requests_total{namespace="default",ingress="web",host="web.test",method="GET",status="2xx"} 5"#
        ),
        "{text}"
    );
    assert!(
        has(
            r#"sluice_http_requests_total{namespace="",ingress="",host="",method="GET",status="4xx"} 1"#
        ),
        "{text}"
    );
    assert!(
        has(
            r#"sluice_http_request_duration_seconds_count{namespace="default",ingress="web",host="web.test"} 5"#
        ),
        "{text}"
    );
    assert!(
        has(r#"sluice_backend_endpoints{backend="default/web:80"} 1"#),
        "{text}"
    );
    assert!(has("sluice_snapshot_generation 1"), "{text}");
    assert!(has("sluice_snapshot_apply_seconds_count 1"), "{text}");
    assert!(!text.contains("/unique/"), "raw paths never become labels");
    assert_eq!(sluice.admin_get("/healthz").await.unwrap().status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_in_flight_requests_and_refuses_new_ones() {
    let echo = Echo::start(&["127.0.0.62"]);
    let (_dir, sluice) = started("drain", &echo).await;
    let http = sluice.http;
    let in_flight = tokio::spawn(async move {
        support::send(
            http,
            "GET",
            "web.test",
            "/slow?sleep_ms=1500",
            &[],
            Bytes::new(),
        )
        .await
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let signalled = Instant::now();
    sluice.send_sigterm();
    tokio::time::sleep(Duration::from_millis(200)).await;

    assert!(
        tokio::net::TcpStream::connect(http).await.is_err(),
        "no new connections while draining"
    );
    let ready = sluice.admin_get("/readyz").await.unwrap();
    assert_eq!(ready.status, 503, "not ready while draining");

    let reply = in_flight
        .await
        .unwrap()
        .expect("the in-flight request finishes");
    assert_eq!(reply.status, 200);
    let mut sluice = sluice;
    let exit = sluice.wait_exit(Duration::from_secs(10));
    assert_eq!(exit, Some(0), "exits cleanly after draining");
    assert!(signalled.elapsed() >= Duration::from_millis(1000));
}

/// Kubernetes removes a terminating pod's endpoints while it already has its SIGTERM: with
/// `--shutdown-delay` Sluice keeps taking new connections meanwhile, reporting not ready.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shutdown_delay_keeps_serving_new_connections_after_sigterm() {
    let echo = Echo::start(&["127.0.0.63"]);
    let (_dir, mut sluice) =
        started_with("shutdown-delay", &echo, &["--shutdown-delay", "1500ms"]).await;
    let signalled = Instant::now();
    sluice.send_sigterm();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let ready = sluice.admin_get("/readyz").await.unwrap();
    assert_eq!(ready.status, 503, "not ready from the SIGTERM on");
    // A new connection (support::send opens one per request) is still served.
    let reply = support::send(sluice.http, "GET", "web.test", "/", &[], Bytes::new())
        .await
        .expect("served during the shutdown delay");
    assert_eq!(reply.status, 200);
    assert!(signalled.elapsed() < Duration::from_millis(1500));
    let exit = sluice.wait_exit(Duration::from_secs(10));
    assert_eq!(exit, Some(0));
    assert!(
        signalled.elapsed() >= Duration::from_millis(1500),
        "listeners stay open for the whole delay"
    );
}

#[test]
fn the_shipped_examples_compile_without_errors() {
    let examples = concat!(env!("CARGO_MANIFEST_DIR"), "/examples");
    let output = sluice()
        .args(["check", "--manifests", examples])
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{out}");
    assert!(
        out.contains("2 Ingresses of class \"sluice\" accepted, 0 errors"),
        "{out}"
    );
}

#[test]
fn the_readme_shows_the_current_help_text() {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    for args in [
        vec!["--help"],
        vec!["run", "--help"],
        vec!["check", "--help"],
        vec!["crds", "--help"],
    ] {
        let output = sluice().args(&args).output().unwrap();
        let help = String::from_utf8_lossy(&output.stdout);
        let block = format!("$ sluice {}\n{}", args.join(" "), help);
        assert!(
            readme.contains(&block),
            "README.md is missing the current output of `sluice {}`:\n{block}",
            args.join(" ")
        );
    }
}

/// CI fails when the committed CRDs drift from the Rust types.
#[test]
fn committed_crds_match_the_types() {
    let output = sluice().arg("crds").output().unwrap();
    assert!(output.status.success());
    let printed = String::from_utf8(output.stdout).unwrap();
    // The install manifests and the Helm chart (which installs `crds/` before anything else)
    // carry the same generated file.
    for committed in [
        "manifests/crds/sluice.dev.yaml",
        "charts/sluice/crds/sluice.dev.yaml",
    ] {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(committed);
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(
            printed == text,
            "{committed} is stale: run `cargo run -- crds > {committed}`"
        );
    }
    assert!(printed.contains("name: ratelimits.sluice.dev"));
    assert!(printed.contains("name: auths.sluice.dev"));
    assert!(printed.contains("name: caches.sluice.dev"));
    assert!(printed.contains("x-kubernetes-validations"));
}

/// Sluice routing `web.test` to one echo backend on `ip`, started with `extra`.
async fn web_test(ip: &str, name: &str, extra: &[&str]) -> (Sluice, Echo, ManifestDir) {
    let echo = Echo::start(&[ip]);
    let dir = ManifestDir::new(name);
    dir.write("class.yaml", INGRESS_CLASS);
    dir.write(
        "web.yaml",
        &format!(
            "{}{INGRESS}",
            service_yaml("default", "web", 80, &echo.addrs, &[])
        ),
    );
    let sluice = Sluice::start(&dir.0, extra).await;
    (sluice, echo, dir)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_and_slow_clients_are_cut_off() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (sluice, _echo, _dir) =
        web_test("127.0.0.63", "idle", &["--header-read-timeout", "400ms"]).await;

    // An idle keep-alive connection, after one request.
    let mut idle = tokio::net::TcpStream::connect(sluice.http).await.unwrap();
    idle.write_all(b"GET / HTTP/1.1\r\nhost: web.test\r\n\r\n")
        .await
        .unwrap();
    let mut buffer = vec![0u8; 64 * 1024];
    let read = idle.read(&mut buffer).await.unwrap();
    assert!(String::from_utf8_lossy(&buffer[..read]).starts_with("HTTP/1.1 200"));
    // A slow client that never finishes its headers.
    let mut slow = tokio::net::TcpStream::connect(sluice.http).await.unwrap();
    slow.write_all(b"GET / HTTP/1.1\r\nhost: web.test\r\nx-slow: ")
        .await
        .unwrap();

    let started = Instant::now();
    for (name, stream) in [("idle", &mut idle), ("slow", &mut slow)] {
        let closed = tokio::time::timeout(Duration::from_secs(5), async {
            loop {
                match stream.read(&mut buffer).await {
                    Ok(0) | Err(_) => return,
                    Ok(_) => continue,
                }
            }
        })
        .await;
        assert!(closed.is_ok(), "the {name} connection was not closed");
    }
    assert!(
        started.elapsed() >= Duration::from_millis(300),
        "closed by the timeout, not at once"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_http2_connections_are_closed_but_busy_ones_are_not() {
    let (sluice, _echo, _dir) =
        web_test("127.0.0.64", "idle-h2", &["--client-idle-timeout", "1s"]).await;
    let open_h2c = || async {
        let stream = tokio::net::TcpStream::connect(sluice.http).await.unwrap();
        let (sender, connection) = hyper::client::conn::http2::handshake(
            TokioExecutor::new(),
            hyper_util::rt::TokioIo::new(stream),
        )
        .await
        .unwrap();
        (sender, tokio::spawn(connection))
    };
    let get = |path: &str| {
        hyper::Request::builder()
            .uri(format!("http://web.test{path}"))
            .body(http_body_util::Empty::<Bytes>::new())
            .unwrap()
    };

    // One request, then nothing: the server ends the connection (GOAWAY) after ~1 s.
    let (mut idle, idle_connection) = open_h2c().await;
    assert_eq!(idle.send_request(get("/")).await.unwrap().status(), 200);
    let started = Instant::now();
    let ended = tokio::time::timeout(Duration::from_secs(5), idle_connection).await;
    assert!(ended.is_ok(), "the idle HTTP/2 connection was kept open");
    assert!(
        started.elapsed() >= Duration::from_millis(800),
        "closed before the idle timeout: {:?}",
        started.elapsed()
    );

    // A request that takes longer than the idle timeout is not cut off, and the
    // connection serves the next one.
    let (mut busy, busy_connection) = open_h2c().await;
    let slow = busy.send_request(get("/?sleep_ms=1800")).await.unwrap();
    assert_eq!(slow.status(), 200);
    let body = slow.into_body().collect().await.unwrap().to_bytes();
    assert!(!body.is_empty());
    assert_eq!(busy.send_request(get("/")).await.unwrap().status(), 200);
    assert!(!busy_connection.is_finished());
}
