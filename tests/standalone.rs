//! The real `sluice` binary in standalone mode, with real echo backends on 127.0.0.x and a
//! real HTTP client: routing rules, status codes, balancing, hot reload, bad input, and
//! snapshot swaps under load.

mod support;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use support::{
    Echo, INGRESS_CLASS, ManifestDir, Sluice, closed_port, send, send_with, service_yaml,
};

fn ingress(
    name: &str,
    created: &str,
    class: &str,
    annotations: &[(&str, &str)],
    spec: &str,
) -> String {
    let mut annotation_yaml = String::new();
    if !annotations.is_empty() {
        annotation_yaml.push_str("  annotations:\n");
        for (key, value) in annotations {
            annotation_yaml.push_str(&format!("    {key}: \"{value}\"\n"));
        }
    }
    format!(
        "---\napiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata:\n  name: {name}\n  namespace: default\n  creationTimestamp: \"{created}\"\n{annotation_yaml}spec:\n  ingressClassName: {class}\n{spec}"
    )
}

fn path(path: &str, kind: &str, service: &str) -> String {
    format!(
        "      - {{path: \"{path}\", pathType: {kind}, backend: {{service: {{name: {service}, port: {{number: 80}}}}}}}}\n"
    )
}

fn path_by_port_name(path: &str, kind: &str, service: &str) -> String {
    format!(
        "      - {{path: \"{path}\", pathType: {kind}, backend: {{service: {{name: {service}, port: {{name: http}}}}}}}}\n"
    )
}

/// One Service per echo listener, named after the role it plays in a test.
fn services(echo: &Echo, names: &[&str]) -> String {
    names
        .iter()
        .zip(&echo.addrs)
        .map(|(name, addr)| format!("---\n{}", service_yaml("default", name, 80, &[*addr], &[])))
        .collect()
}

async fn served_by(sluice: &Sluice, host: &str, path: &str) -> String {
    let reply = sluice.get(host, path).await;
    assert_eq!(reply.status, 200, "{host}{path}: {}", reply.body);
    reply.echo_addr().expect("x-echo-addr")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_routing_rule_of_the_ingress_spec() {
    let names = [
        "exact",
        "prefix-aaa",
        "prefix-aaa-bbb",
        "wildcard",
        "any-host",
        "default",
        "older",
        "newer",
    ];
    let ips: Vec<String> = (2..10).map(|n| format!("127.0.0.{n}")).collect();
    let ip_refs: Vec<&str> = ips.iter().map(String::as_str).collect();
    let echo = Echo::start(&ip_refs);
    let by_name: BTreeMap<&str, String> = names
        .iter()
        .copied()
        .zip(echo.addrs.iter().map(ToString::to_string))
        .collect();

    let dir = ManifestDir::new("rules");
    dir.write("class.yaml", INGRESS_CLASS);
    dir.write("services.yaml", &services(&echo, &names));
    let mut ingresses = String::new();
    ingresses += &ingress(
        "rules",
        "2024-01-01T00:00:00Z",
        "sluice",
        &[],
        &format!(
            "  rules:\n  - host: foo.com\n    http:\n      paths:\n{}{}{}{}{}  - host: \"*.wild.com\"\n    http:\n      paths:\n{}",
            path("/foo", "Exact", "exact"),
            path("/aaa", "Exact", "exact"),
            path("/aaa", "Prefix", "prefix-aaa"),
            path("/aaa/bbb/", "Prefix", "prefix-aaa-bbb"),
            path("/conflict", "Prefix", "older"),
            path("/", "Prefix", "wildcard"),
        ),
    );
    ingresses += &ingress(
        "merged",
        "2025-01-01T00:00:00Z",
        "sluice",
        &[],
        &format!(
            "  rules:\n  - host: foo.com\n    http:\n      paths:\n{}{}",
            path_by_port_name("/merged", "Prefix", "any-host"),
            path("/conflict", "Prefix", "newer"),
        ),
    );
    ingresses += &ingress(
        "catch-all",
        "2024-06-01T00:00:00Z",
        "sluice",
        &[],
        &format!(
            "  defaultBackend: {{service: {{name: default, port: {{number: 80}}}}}}\n  rules:\n  - http:\n      paths:\n{}",
            path("/any", "Prefix", "any-host")
        ),
    );
    ingresses += &ingress(
        "not-ours",
        "2020-01-01T00:00:00Z",
        "nginx",
        &[],
        &format!(
            "  rules:\n  - host: foo.com\n    http:\n      paths:\n{}",
            path("/other", "Prefix", "exact")
        ),
    );
    dir.write("ingresses.yaml", &ingresses);
    let sluice = Sluice::start(&dir.0, &[]).await;

    let cases = [
        ("foo.com", "/foo", "exact"),
        ("foo.com", "/foo/", "default"),
        ("foo.com", "/FOO", "default"),
        ("foo.com", "/aaa", "exact"),
        ("foo.com", "/aaa/", "prefix-aaa"),
        ("foo.com", "/aaa/ccc", "prefix-aaa"),
        ("foo.com", "/aaaccc", "default"),
        ("foo.com", "/aaa/bbb", "prefix-aaa-bbb"),
        ("foo.com", "/aaa/bbb/ccc", "prefix-aaa-bbb"),
        ("foo.com", "/aaa/bbbccc", "prefix-aaa"),
        ("FOO.Com:8080", "/aaa/ccc", "prefix-aaa"),
        ("x.wild.com", "/anything", "wildcard"),
        ("wild.com", "/anything", "default"),
        ("a.b.wild.com", "/anything", "default"),
        ("foo.com", "/merged/x", "any-host"),
        ("foo.com", "/conflict", "older"),
        ("foo.com", "/other", "default"),
        ("unknown.example", "/any/thing", "any-host"),
        ("foo.com", "/any", "any-host"),
        ("unknown.example", "/", "default"),
    ];
    for (host, request_path, expected) in cases {
        assert_eq!(
            served_by(&sluice, host, request_path).await,
            by_name[expected],
            "{host}{request_path} should reach {expected}"
        );
    }

    let verbose = sluice.admin_get("/readyz?verbose").await.unwrap().body;
    assert!(
        verbose
            .lines()
            .any(|line| line.contains("Ingress default/merged") && line.contains("default/rules")),
        "the newer Ingress gets the conflict error: {verbose}"
    );
    assert!(
        !verbose.contains("not-ours"),
        "Ingresses of other classes are not reported: {verbose}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_codes_headers_and_streaming() {
    let echo = Echo::start(&["127.0.0.20"]);
    let dir = ManifestDir::new("status");
    dir.write("class.yaml", INGRESS_CLASS);
    let mut objects = service_yaml("default", "up", 80, &echo.addrs, &[]);
    objects += "---\n";
    objects += &service_yaml("default", "empty", 80, &[], &[]);
    objects += "---\n";
    objects += &service_yaml("default", "dead", 80, &[closed_port("127.0.0.21")], &[]);
    objects += &ingress(
        "web",
        "2024-01-01T00:00:00Z",
        "sluice",
        &[],
        &format!(
            "  rules:\n  - host: web.test\n    http:\n      paths:\n{}{}{}",
            path("/", "Prefix", "up"),
            path("/empty", "Prefix", "empty"),
            path("/dead", "Prefix", "dead"),
        ),
    );
    dir.write("objects.yaml", &objects);
    let sluice = Sluice::start(
        &dir.0,
        &[
            "--request-timeout",
            "300ms",
            "--max-request-body",
            "1024",
            "--via",
            "sluice",
        ],
    )
    .await;

    let not_found = sluice.get("nowhere.test", "/").await;
    assert_eq!(not_found.status, 404);
    assert_eq!(
        not_found.headers["content-type"],
        "text/plain; charset=utf-8"
    );
    assert!(not_found.body.contains("no route"));
    assert_eq!(sluice.get("web.test", "/empty").await.status, 503);
    assert_eq!(sluice.get("web.test", "/dead").await.status, 502);
    let timeout = sluice.get("web.test", "/slow?sleep_ms=3000").await;
    assert_eq!(timeout.status, 504, "{}", timeout.body);
    assert_eq!(sluice.get("web.test", "/a/../etc/passwd").await.status, 400);

    let too_big = send(
        sluice.http,
        "POST",
        "web.test",
        "/upload",
        &[],
        Bytes::from(vec![b'x'; 4096]),
    )
    .await
    .unwrap();
    assert_eq!(too_big.status, 413);
    let huge_header = "h".repeat(100 * 1024);
    let refused = send(
        sluice.http,
        "GET",
        "web.test",
        "/",
        &[("x-huge", &huge_header)],
        Bytes::new(),
    )
    .await
    .unwrap();
    assert_eq!(refused.status, 431);

    let reply = send(
        sluice.http,
        "GET",
        "web.test",
        "//q/%61b?a=1&b=%2F",
        &[
            ("connection", "x-secret"),
            ("x-secret", "1"),
            ("keep-alive", "timeout=5"),
            ("x-forwarded-for", "6.6.6.6"),
        ],
        Bytes::new(),
    )
    .await
    .unwrap();
    assert_eq!(reply.status, 200);
    let seen = reply.echo();
    assert_eq!(
        seen["uri"], "/q/ab?a=1&b=%2F",
        "path normalised once, query unchanged"
    );
    let headers = &seen["headers"];
    assert_eq!(headers["host"], "web.test");
    assert_eq!(
        headers["x-forwarded-for"], "127.0.0.1",
        "an untrusted client's X-Forwarded-For is replaced"
    );
    assert_eq!(headers["x-real-ip"], "127.0.0.1");
    assert_eq!(headers["x-forwarded-proto"], "http");
    assert_eq!(headers["x-forwarded-host"], "web.test");
    assert_eq!(headers["via"], "1.1 sluice");
    assert!(
        headers.get("x-secret").is_none(),
        "headers named in Connection are stripped"
    );
    assert!(headers.get("keep-alive").is_none());
    assert_eq!(reply.headers["via"], "1.1 sluice");

    // A large body streams through both ways unchanged.
    let sluice_big = Sluice::start(&dir.0, &[]).await;
    let payload: Vec<u8> = (0..4 * 1024 * 1024)
        .map(|i| b'a' + u8::try_from(i % 26).unwrap())
        .collect();
    let echoed = support::send(
        sluice_big.http,
        "POST",
        "web.test",
        "/upload",
        &[],
        Bytes::from(payload.clone()),
    )
    .await
    .unwrap();
    assert_eq!(echoed.status, 200);
    assert_eq!(echoed.body.len(), payload.len());
    assert!(
        echoed.body.as_bytes() == payload.as_slice(),
        "the body came back changed"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn balancing_hashing_readiness_and_ejection() {
    let echo = Echo::start(&["127.0.0.30", "127.0.0.31", "127.0.0.32", "127.0.0.33"]);
    let ready = &echo.addrs[..3];
    let not_ready = &echo.addrs[3..];
    let dead = closed_port("127.0.0.34");
    let dir = ManifestDir::new("balance");
    dir.write("class.yaml", INGRESS_CLASS);
    let mut objects = service_yaml("default", "pool", 80, ready, not_ready);
    objects += "---\n";
    let mut with_dead = ready.to_vec();
    with_dead.push(dead);
    objects += &service_yaml("default", "flaky", 80, &with_dead, &[]);
    for (name, annotations) in [
        ("rr", vec![]),
        (
            "hash",
            vec![
                ("sluice.dev/load-balance", "hash"),
                ("sluice.dev/hash-key", "header:X-User"),
            ],
        ),
        ("least", vec![("sluice.dev/load-balance", "least-request")]),
        ("ewma", vec![("sluice.dev/load-balance", "ewma")]),
    ] {
        objects += &ingress(
            name,
            "2024-01-01T00:00:00Z",
            "sluice",
            &annotations,
            &format!(
                "  rules:\n  - host: {name}.test\n    http:\n      paths:\n{}",
                path("/", "Prefix", "pool")
            ),
        );
    }
    objects += &ingress(
        "flaky",
        "2024-01-01T00:00:00Z",
        "sluice",
        &[],
        &format!(
            "  rules:\n  - host: flaky.test\n    http:\n      paths:\n{}",
            path("/", "Prefix", "flaky")
        ),
    );
    dir.write("objects.yaml", &objects);
    let sluice = Sluice::start(&dir.0, &[]).await;

    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    for _ in 0..30 {
        *counts
            .entry(served_by(&sluice, "rr.test", "/").await)
            .or_default() += 1;
    }
    let expected: BTreeMap<String, usize> = ready.iter().map(|a| (a.to_string(), 10)).collect();
    assert_eq!(
        counts, expected,
        "round robin is even and skips the not-ready endpoint"
    );

    for policy in ["least", "ewma"] {
        let mut seen: BTreeMap<String, usize> = BTreeMap::new();
        for _ in 0..60 {
            *seen
                .entry(served_by(&sluice, &format!("{policy}.test"), "/").await)
                .or_default() += 1;
        }
        assert!(
            !seen.contains_key(&not_ready[0].to_string()),
            "{policy}: {seen:?}"
        );
        assert!(
            seen.len() >= 2,
            "{policy} spreads sequential requests: {seen:?}"
        );
    }

    let mut users_per_endpoint: BTreeMap<String, usize> = BTreeMap::new();
    for user in 0..30 {
        let user = format!("user-{user}");
        let mut endpoints = std::collections::BTreeSet::new();
        for _ in 0..4 {
            let reply = send(
                sluice.http,
                "GET",
                "hash.test",
                "/",
                &[("x-user", &user)],
                Bytes::new(),
            )
            .await
            .unwrap();
            endpoints.insert(reply.echo_addr().unwrap());
        }
        assert_eq!(endpoints.len(), 1, "{user} always lands on one endpoint");
        *users_per_endpoint
            .entry(endpoints.into_iter().next().unwrap())
            .or_default() += 1;
    }
    assert!(
        users_per_endpoint.len() >= 2,
        "users spread over endpoints: {users_per_endpoint:?}"
    );

    // A dead endpoint: connection failures are retried elsewhere, then it is ejected.
    for _ in 0..60 {
        assert_eq!(sluice.get("flaky.test", "/").await.status, 200);
    }
    let metrics = sluice.admin_get("/metrics").await.unwrap().body;
    let value = |name: &str| -> u64 {
        metrics
            .lines()
            .find(|l| l.starts_with(name) && l.contains("backend=\"default/flaky:80\""))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("{name} missing in {metrics}"))
    };
    assert_eq!(value("sluice_endpoint_ejections_total"), 1);
    assert_eq!(
        value("sluice_upstream_connect_errors_total"),
        5,
        "ejected after 5 failures and not tried again"
    );
    assert_eq!(value("sluice_upstream_retries_total"), 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hot_reload_and_bad_input_keep_the_last_good_routes() {
    let echo = Echo::start(&["127.0.0.40", "127.0.0.41"]);
    let dir = ManifestDir::new("reload");
    dir.write("class.yaml", INGRESS_CLASS);
    dir.write("services.yaml", &services(&echo, &["one", "two"]));
    let first = ingress(
        "first",
        "2024-01-01T00:00:00Z",
        "sluice",
        &[],
        &format!(
            "  rules:\n  - host: app.test\n    http:\n      paths:\n{}",
            path("/v1", "Prefix", "one")
        ),
    );
    dir.write("first.yaml", &first);
    let sluice = Sluice::start(&dir.0, &[]).await;
    assert_eq!(sluice.get("app.test", "/v1").await.status, 200);
    assert_eq!(sluice.get("app.test", "/v2").await.status, 404);

    // A new file is served within a second.
    let second = ingress(
        "second",
        "2024-01-01T00:00:00Z",
        "sluice",
        &[],
        &format!(
            "  rules:\n  - host: app.test\n    http:\n      paths:\n{}",
            path("/v2", "Prefix", "two")
        ),
    );
    dir.write("second.yaml", &second);
    let took = sluice
        .eventually(Duration::from_secs(1), "new route served", || async {
            sluice.get("app.test", "/v2").await.status == 200
        })
        .await;
    println!("new route served after {took:?}");

    // A file that no longer parses: its last good routes keep serving, the problem is shown.
    dir.overwrite(
        "second.yaml",
        "apiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata: [broken\n",
    );
    sluice
        .eventually(Duration::from_secs(1), "problem reported", || async {
            sluice
                .admin_get("/readyz?verbose")
                .await
                .is_ok_and(|r| r.body.contains("second.yaml") && r.body.contains("last good"))
        })
        .await;
    assert_eq!(sluice.get("app.test", "/v2").await.status, 200);
    assert_eq!(sluice.get("app.test", "/v1").await.status, 200);
    assert_eq!(sluice.admin_get("/readyz").await.unwrap().status, 200);

    // An invalid object is rejected alone; the rest keeps serving.
    let bad = ingress(
        "bad",
        "2024-01-01T00:00:00Z",
        "sluice",
        &[("sluice.dev/load-balance", "fastest")],
        &format!(
            "  rules:\n  - host: bad.test\n    http:\n      paths:\n{}",
            path("/", "Prefix", "one")
        ),
    );
    dir.write("bad.yaml", &bad);
    sluice
        .eventually(
            Duration::from_secs(1),
            "invalid object reported",
            || async {
                sluice
                    .admin_get("/readyz?verbose")
                    .await
                    .is_ok_and(|r| r.body.contains("Ingress default/bad"))
            },
        )
        .await;
    assert_eq!(sluice.get("bad.test", "/").await.status, 404);
    assert_eq!(sluice.get("app.test", "/v1").await.status, 200);

    // Fixing the file applies the fix.
    dir.write("second.yaml", &second.replace("/v2", "/v3"));
    sluice
        .eventually(Duration::from_secs(1), "fixed file served", || async {
            sluice.get("app.test", "/v3").await.status == 200
        })
        .await;
    assert_eq!(sluice.get("app.test", "/v2").await.status, 404);
    let verbose = sluice.admin_get("/readyz?verbose").await.unwrap().body;
    assert!(!verbose.contains("second.yaml"), "{verbose}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_config_changes_under_load_fail_no_request() {
    let echo = Echo::start(&["127.0.0.50", "127.0.0.51", "127.0.0.52"]);
    let dir = ManifestDir::new("swap");
    dir.write("class.yaml", INGRESS_CLASS);
    dir.write(
        "services.yaml",
        &service_yaml("default", "pool", 80, &echo.addrs, &[]),
    );
    let routes = |change: usize| {
        ingress(
            "load",
            "2024-01-01T00:00:00Z",
            "sluice",
            &[],
            &format!(
                "  rules:\n  - host: load.test\n    http:\n      paths:\n{}{}",
                path("/", "Prefix", "pool"),
                path(&format!("/change-{change}"), "Prefix", "pool")
            ),
        )
    };
    dir.write("routes.yaml", &routes(0));
    let sluice = Arc::new(Sluice::start(&dir.0, &[]).await);

    let stop = Arc::new(AtomicBool::new(false));
    let ok = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let mut workers = Vec::new();
    for worker in 0..8 {
        let (stop, ok, failed, http) = (
            Arc::clone(&stop),
            Arc::clone(&ok),
            Arc::clone(&failed),
            sluice.http,
        );
        workers.push(tokio::spawn(async move {
            // One keep-alive client per worker: connections stay open across swaps.
            let client = support::shared_client();
            let mut sent = 0u64;
            while !stop.load(Ordering::Relaxed) && sent < 200_000 {
                sent += 1;
                // Every tenth request is slow, so some are in flight across a swap.
                let target = if sent.is_multiple_of(10) {
                    "/slow?sleep_ms=50"
                } else {
                    "/"
                };
                match send_with(&client, http, "GET", "load.test", target, &[], Bytes::new()).await
                {
                    Ok(reply) if reply.status == 200 => ok.fetch_add(1, Ordering::Relaxed),
                    other => {
                        eprintln!("worker {worker}: {other:?}");
                        failed.fetch_add(1, Ordering::Relaxed)
                    }
                };
            }
        }));
    }

    let start_generation = sluice.generation().await;
    for change in 1..=100 {
        dir.write("routes.yaml", &routes(change));
        sluice
            .wait_for_generation(start_generation + change as u64)
            .await;
    }
    stop.store(true, Ordering::Relaxed);
    for worker in workers {
        worker.await.unwrap();
    }
    let (ok, failed) = (ok.load(Ordering::Relaxed), failed.load(Ordering::Relaxed));
    println!("{ok} requests succeeded, {failed} failed across 100 snapshot swaps");
    assert_eq!(failed, 0);
    assert!(ok > 500, "the load ran: {ok}");
    assert_eq!(sluice.get("load.test", "/change-100").await.status, 200);
    let metrics = sluice.admin_get("/metrics").await.unwrap().body;
    let connections: i64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("sluice_active_connections "))
        .and_then(|v| v.parse().ok())
        .expect("active connections gauge");
    assert!(
        connections <= 10,
        "keep-alive connections were reused, not re-opened: {connections}"
    );
}

fn rate_limit(name: &str, spec: &str) -> String {
    format!(
        "---\napiVersion: sluice.dev/v1alpha1\nkind: RateLimit\nmetadata:\n  name: {name}\n  namespace: default\nspec:\n{spec}"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limits_missing_and_invalid_policies() {
    let echo = Echo::start(&["127.0.0.40"]);
    let dir = ManifestDir::new("ratelimit");
    dir.write("class.yaml", INGRESS_CLASS);
    let mut objects = service_yaml("default", "up", 80, &echo.addrs, &[]);
    objects += &rate_limit("ten", "  limits:\n  - {requests: 10, period: 1m}\n");
    objects += &rate_limit(
        "per-key",
        "  headers: legacy\n  limits:\n  - {requests: 1, period: 1m, key: [clientIP, \"header:X-Api-Key\"]}\n",
    );
    // Valid YAML and schema, but the redis backend needs --redis-url: not accepted.
    objects += &rate_limit(
        "needs-redis",
        "  backend: redis\n  limits:\n  - {requests: 1, period: 1m}\n",
    );
    objects += &annotated_route("limited", "limited.test", "ten", "sluice.dev/rate-limit");
    objects += &annotated_route("keyed", "keyed.test", "per-key", "sluice.dev/rate-limit");
    objects += &annotated_route(
        "missing",
        "missing.test",
        "nowhere",
        "sluice.dev/rate-limit",
    );
    objects += &annotated_route(
        "invalid",
        "invalid.test",
        "needs-redis",
        "sluice.dev/rate-limit",
    );
    dir.write("objects.yaml", &objects);
    let sluice = Sluice::start(&dir.0, &[]).await;

    // 15 quick requests against 10 per minute: exactly 10 pass.
    let mut replies = Vec::new();
    for _ in 0..15 {
        replies.push(sluice.get("limited.test", "/").await);
    }
    let statuses: Vec<u16> = replies.iter().map(|r| r.status).collect();
    assert_eq!(statuses, [[200; 10].as_slice(), &[429; 5]].concat());
    assert_eq!(replies[0].headers["ratelimit-policy"], r#""ten";q=10;w=60"#);
    assert_eq!(replies[0].headers["ratelimit"], r#""ten";r=9;t=6"#);
    let refused = &replies[10];
    assert_eq!(refused.headers["retry-after"], "6");
    assert_eq!(refused.headers["ratelimit"], r#""ten";r=0;t=60"#);
    assert!(
        refused.body.contains("429 too many requests"),
        "{}",
        refused.body
    );
    assert_eq!(
        sluice
            .metric(r#"sluice_rate_limit_decisions_total{namespace="default",policy="ten",result="limited"}"#)
            .await,
        Some(5.0)
    );

    // Composite keys: each API key has its own budget of one.
    let keyed = |key: &'static str| {
        let addr = sluice.http;
        async move {
            send(
                addr,
                "GET",
                "keyed.test",
                "/",
                &[("x-api-key", key)],
                Bytes::new(),
            )
            .await
            .unwrap()
        }
    };
    let alice = keyed("alice").await;
    assert_eq!(alice.status, 200);
    assert_eq!(alice.headers["x-ratelimit-limit"], "1");
    assert_eq!(alice.headers["x-ratelimit-remaining"], "0");
    assert_eq!(keyed("bob").await.status, 200);
    let again = keyed("alice").await;
    assert_eq!(again.status, 429);
    assert_eq!(again.headers["x-ratelimit-remaining"], "0");
    assert!(again.headers.get("ratelimit").is_none());

    // A missing or refused policy never leaves the route unprotected.
    for host in ["missing.test", "invalid.test"] {
        let reply = sluice.get(host, "/").await;
        assert_eq!(reply.status, 503, "{host}");
        assert!(reply.body.contains("policy"), "{host}: {}", reply.body);
    }
    let report = sluice.admin_get("/readyz?verbose").await.unwrap().body;
    for expected in [
        "RateLimit \"nowhere\" does not exist",
        "RateLimit \"needs-redis\" is not valid",
        "needs Sluice to run with --redis-url",
    ] {
        assert!(report.contains(expected), "{expected}: {report}");
    }
}

/// Requests to `host` from alternating Sluice processes; the statuses in order.
async fn spread(sluices: &[&Sluice], host: &str, count: usize) -> Vec<u16> {
    let mut statuses = Vec::new();
    for index in 0..count {
        statuses.push(sluices[index % sluices.len()].get(host, "/").await.status);
    }
    statuses
}

fn passed(statuses: &[u16]) -> usize {
    statuses.iter().filter(|status| **status == 200).count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn global_limits_in_redis_and_what_happens_when_redis_goes() {
    let mut redis = support::RedisServer::start();
    let echo = Echo::start(&["127.0.0.41"]);
    let dir = ManifestDir::new("ratelimit-redis");
    dir.write("class.yaml", INGRESS_CLASS);
    let mut objects = service_yaml("default", "up", 80, &echo.addrs, &[]);
    let policy = |failure: &str| {
        format!(
            "  backend: redis\n  onBackendFailure: {failure}\n  limits:\n  - {{requests: 10, period: 1m}}\n"
        )
    };
    objects += &rate_limit("open", &policy("allow"));
    objects += &rate_limit("closed", &policy("deny"));
    objects += &rate_limit(
        "shared",
        "  backend: redis\n  onBackendFailure: local\n  localShare: 3\n  limits:\n  - {requests: 9, period: 1m}\n",
    );
    objects += &ingress(
        "plain",
        "2024-01-01T00:00:00Z",
        "sluice",
        &[],
        &format!(
            "  rules:\n  - host: plain.test\n    http:\n      paths:\n{}",
            path("/", "Prefix", "up")
        ),
    );
    for (name, policy) in [("open", "open"), ("closed", "closed"), ("shared", "shared")] {
        objects += &ingress(
            name,
            "2024-01-01T00:00:00Z",
            "sluice",
            &[("sluice.dev/rate-limit", policy)],
            &format!(
                "  rules:\n  - host: {name}.test\n    http:\n      paths:\n{}",
                path("/", "Prefix", "up")
            ),
        );
    }
    dir.write("objects.yaml", &objects);
    let url = redis.url();
    let first = Sluice::start(&dir.0, &["--redis-url", &url]).await;
    let second = Sluice::start(&dir.0, &["--redis-url", &url]).await;
    let both = [&first, &second];

    // One budget across both replicas: 30 requests, exactly 10 pass.
    let statuses = spread(&both, "open.test", 30).await;
    assert_eq!(passed(&statuses), 10, "{statuses:?}");
    assert!(statuses[..10].iter().all(|s| *s == 200), "{statuses:?}");
    assert!(statuses[10..].iter().all(|s| *s == 429), "{statuses:?}");

    // Redis goes away.
    redis.stop();
    // Fail open: the exhausted policy now lets everything through.
    let statuses = spread(&both, "open.test", 10).await;
    assert_eq!(passed(&statuses), 10, "{statuses:?}");
    // With the breaker open no request waits for Redis: against a route without a policy,
    // measured alongside, the median costs under 5 ms more, and nothing nears the timeout.
    for sluice in both {
        assert_quick(sluice, 0).await;
    }
    // Fail closed.
    let closed = spread(&both, "closed.test", 4).await;
    assert_eq!(closed, [503; 4]);
    // Fall back to a local share: 9 / 3 = 3 per replica.
    for sluice in both {
        let statuses = spread(&[sluice], "shared.test", 6).await;
        assert_eq!(statuses, [200, 200, 200, 429, 429, 429]);
    }
    assert!(
        first
            .metric(r#"sluice_rate_limit_decisions_total{namespace="default",policy="closed",result="backend_error"}"#)
            .await
            .is_some_and(|errors| errors >= 2.0)
    );

    // Redis is back (empty): once each replica's breaker lets a probe through, the global
    // budget applies again.
    redis.restart();
    for sluice in both {
        support::eventually(Duration::from_secs(15), "Redis answers again", || async {
            sluice.get("closed.test", "/").await.status == 200
        })
        .await;
    }
    let statuses = spread(&both, "open.test", 16).await;
    assert_eq!(passed(&statuses), 10, "{statuses:?}");

    // A Redis that accepts but never answers: the first requests wait the timeout (50 ms);
    // three failures open the breaker, and from then on nobody waits.
    redis.freeze(true);
    let client = support::shared_client();
    let mut first_waits = Vec::new();
    for _ in 0..3 {
        let started = std::time::Instant::now();
        let reply = send_with(
            &client,
            first.http,
            "GET",
            "open.test",
            "/",
            &[],
            Bytes::new(),
        );
        assert_eq!(reply.await.unwrap().status, 200);
        first_waits.push(started.elapsed());
    }
    assert_quick(&first, 3).await;
    redis.freeze(false);
    assert!(
        first_waits[0] >= Duration::from_millis(40),
        "the first waits for the timeout: {first_waits:?}"
    );
}

/// Times requests to open.test (whose Redis is down) and to plain.test (no policy),
/// interleaved on one keep-alive connection each: the median costs under 5 ms more and no
/// request comes near the 50 ms Redis timeout. `skip` leading requests are not judged.
async fn assert_quick(sluice: &Sluice, skip: usize) {
    let client = support::shared_client();
    let mut limited = Vec::new();
    let mut plain = Vec::new();
    for _ in 0..(10 + skip) {
        for (host, times) in [("open.test", &mut limited), ("plain.test", &mut plain)] {
            let started = std::time::Instant::now();
            let reply = send_with(&client, sluice.http, "GET", host, "/", &[], Bytes::new());
            assert_eq!(reply.await.unwrap().status, 200, "{host}");
            times.push(started.elapsed());
        }
    }
    let mut limited = limited.split_off(skip);
    let median = |times: &mut Vec<Duration>| {
        times.sort();
        times[times.len() / 2]
    };
    let (with_redis_down, without) = (median(&mut limited), median(&mut plain));
    assert!(
        with_redis_down < without + Duration::from_millis(5),
        "median {with_redis_down:?} against {without:?} without a policy: {limited:?}"
    );
    assert!(
        limited.iter().all(|t| *t < Duration::from_millis(40)),
        "{limited:?}"
    );
}

/// `Authorization` for Basic credentials.
fn basic_authorization(user: &str, password: &str) -> String {
    use base64::Engine;
    let encoded = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
    format!("Basic {encoded}")
}

/// Ingress `name` routing `host` to Service `up`, naming `policy` in `annotation`.
fn annotated_route(name: &str, host: &str, policy: &str, annotation: &str) -> String {
    ingress(
        name,
        "2024-01-01T00:00:00Z",
        "sluice",
        &[(annotation, policy)],
        &format!(
            "  rules:\n  - host: {host}\n    http:\n      paths:\n{}",
            path("/", "Prefix", "up")
        ),
    )
}

/// Ingress `name` routing `host` to Service `up`, guarded by the Auth `policy`.
fn guarded_ingress(name: &str, host: &str, policy: &str) -> String {
    annotated_route(name, host, policy, "sluice.dev/auth")
}

/// A GET of `host` `path` with these headers.
async fn get_with(
    addr: std::net::SocketAddr,
    host: &str,
    path: &str,
    headers: Vec<(&'static str, String)>,
) -> support::Reply {
    let headers: Vec<(&str, &str)> = headers
        .iter()
        .map(|(name, value)| (*name, value.as_str()))
        .collect();
    support::send(addr, "GET", host, path, &headers, Bytes::new())
        .await
        .unwrap()
}

/// The series of one Auth policy's decisions by `method` with `result`, in namespace default.
fn auth_decisions(policy: &str, method: &str, result: &str) -> String {
    format!(
        r#"sluice_auth_decisions_total{{namespace="default",policy="{policy}",method="{method}",result="{result}"}}"#
    )
}

/// An Auth with Basic credentials and API keys, checked against real requests: 401 with a
/// challenge, the right credentials pass and are not forwarded, a missing Auth is a 503.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_basic_and_api_keys_guard_routes_and_missing_policies_fail_closed() {
    let echo = Echo::start(&["127.0.0.41"]);
    let dir = ManifestDir::new("auth");
    dir.write("class.yaml", INGRESS_CLASS);
    let hash = bcrypt::hash("s3cret", 4).unwrap();
    let mut objects = service_yaml("default", "up", 80, &echo.addrs, &[]);
    objects += &format!(
        "---\napiVersion: v1\nkind: Secret\nmetadata:\n  name: htpasswd\n  namespace: default\nstringData:\n  auth: |\n    ada:{hash}\n"
    );
    objects += "---\napiVersion: v1\nkind: Secret\nmetadata:\n  name: keys\n  namespace: default\nstringData:\n  ci: key-for-ci\n";
    objects += "---\napiVersion: sluice.dev/v1alpha1\nkind: Auth\nmetadata:\n  name: members\n  namespace: default\nspec:\n  basic: {secretRef: {name: htpasswd}, realm: shop}\n  apiKey: {header: X-Api-Key, secretRef: {name: keys}}\n";
    objects += "---\napiVersion: sluice.dev/v1alpha1\nkind: Auth\nmetadata:\n  name: office\n  namespace: default\nspec:\n  ipAllow: [203.0.113.0/24]\n  ipDeny: [203.0.113.66]\n";
    objects += &guarded_ingress("members", "members.test", "members");
    objects += "---\napiVersion: sluice.dev/v1alpha1\nkind: Auth\nmetadata:\n  name: by-query\n  namespace: default\nspec:\n  apiKey: {query: api_key, secretRef: {name: keys}}\n";
    objects += &guarded_ingress("office", "office.test", "office");
    objects += &guarded_ingress("by-query", "query.test", "by-query");
    objects += &guarded_ingress("orphan", "orphan.test", "nowhere");
    dir.write("objects.yaml", &objects);
    // The test client connects from 127.0.0.1, a trusted proxy: X-Forwarded-For names
    // the client the networks are checked against.
    let sluice = Sluice::start(&dir.0, &["--trusted-proxies", "127.0.0.0/8"]).await;
    let send = |host: &'static str, headers| get_with(sluice.http, host, "/", headers);
    let basic = |user: &str, password: &str| ("authorization", basic_authorization(user, password));

    let refused = send("members.test", vec![]).await;
    assert_eq!(refused.status, 401);
    assert_eq!(
        refused.headers["www-authenticate"],
        r#"Basic realm="shop", charset="UTF-8""#
    );
    let challenges: Vec<&str> = refused
        .headers
        .get_all("www-authenticate")
        .iter()
        .filter_map(|value| value.to_str().ok())
        .collect();
    assert_eq!(
        challenges,
        [
            r#"Basic realm="shop", charset="UTF-8""#,
            r#"ApiKey header="x-api-key""#
        ]
    );
    assert_eq!(refused.body, "401 unauthorized\n");
    for wrong in [basic("ada", "guess"), basic("bob", "s3cret")] {
        assert_eq!(send("members.test", vec![wrong]).await.status, 401);
    }
    let wrong_key = send("members.test", vec![("x-api-key", "nope".into())]).await;
    assert_eq!(wrong_key.status, 401);

    let passed = send("members.test", vec![basic("ada", "s3cret")]).await;
    assert_eq!(passed.status, 200, "{}", passed.body);
    let upstream_saw = passed.echo();
    assert!(
        upstream_saw["headers"].get("authorization").is_none(),
        "credentials are stripped: {upstream_saw}"
    );
    let by_key = send("members.test", vec![("x-api-key", "key-for-ci".into())]).await;
    assert_eq!(by_key.status, 200);
    assert!(by_key.echo()["headers"].get("x-api-key").is_none());

    // A key in the query passes, and the upstream never sees it.
    let by_query = support::send(
        sluice.http,
        "GET",
        "query.test",
        "/list?page=2&api_key=key-for-ci&sort=name",
        &[],
        Bytes::new(),
    )
    .await
    .unwrap();
    assert_eq!(by_query.status, 200, "{}", by_query.body);
    assert_eq!(by_query.echo()["uri"], "/list?page=2&sort=name");

    // Naming an Auth that does not exist closes the route instead of opening it.
    let orphan = send("orphan.test", vec![basic("ada", "s3cret")]).await;
    assert_eq!(orphan.status, 503);

    // Networks, with the client named by a trusted proxy.
    let from = |client: &str| vec![("x-forwarded-for", format!("198.51.100.1, {client}"))];
    assert_eq!(send("office.test", from("203.0.113.9")).await.status, 200);
    let denied = send("office.test", from("203.0.113.66")).await;
    assert_eq!(
        (denied.status, denied.body.as_str()),
        (403, "403 forbidden\n")
    );
    assert_eq!(send("office.test", from("192.0.2.1")).await.status, 403);
    // Without the header the client is the proxy itself, which is not in the network.
    assert_eq!(send("office.test", vec![]).await.status, 403);

    // Outcomes per policy and method; a 401 counts once, under the method whose
    // credentials the request carried (none: it carried none).
    for (series, expected) in [
        (auth_decisions("members", "basic", "allowed"), 1.0),
        (auth_decisions("members", "api_key", "allowed"), 1.0),
        (auth_decisions("members", "none", "unauthorized"), 1.0),
        (auth_decisions("members", "basic", "unauthorized"), 2.0),
        (auth_decisions("members", "api_key", "unauthorized"), 1.0),
        (auth_decisions("office", "ip", "allowed"), 1.0),
        (auth_decisions("office", "ip", "forbidden"), 3.0),
    ] {
        assert_eq!(sluice.metric(&series).await, Some(expected), "{series}");
    }
}

/// An authorization service on 127.0.0.1 for forward auth, answering by the `X-Token` it is
/// sent: `ada` passes as user ada, `anon` passes with no user, `bob` is forbidden, `browser`
/// is sent to sign in, `sleepy` answers after 3 s, anything else is 401. It keeps the
/// headers of every request, and stops with the test's runtime.
struct AuthService {
    addr: std::net::SocketAddr,
    seen: Arc<std::sync::Mutex<Vec<hyper::HeaderMap>>>,
}

impl AuthService {
    async fn start() -> AuthService {
        use http_body_util::Full;
        use hyper::Response;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
        let seen_by_server = Arc::clone(&seen);
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let seen = Arc::clone(&seen_by_server);
                let service = hyper::service::service_fn(
                    move |request: hyper::Request<hyper::body::Incoming>| {
                        let headers = request.headers().clone();
                        seen.lock().unwrap().push(headers.clone());
                        async move {
                            let token = headers.get("x-token").map(|value| value.as_bytes());
                            let answer = Response::builder();
                            let answer = match token {
                                Some(b"ada") => answer.header("x-user", "ada"),
                                Some(b"anon") => answer,
                                Some(b"bob") => answer.status(403),
                                Some(b"browser") => answer
                                    .status(302)
                                    .header(
                                        "location",
                                        format!(
                                            "https://sso.test/start?rd={}",
                                            headers["x-original-url"].to_str().unwrap()
                                        ),
                                    )
                                    .header("set-cookie", "csrf=abc; Path=/; HttpOnly"),
                                Some(b"sleepy") => {
                                    tokio::time::sleep(Duration::from_secs(3)).await;
                                    answer.header("x-user", "ada")
                                }
                                _ => answer
                                    .status(401)
                                    .header("www-authenticate", "Bearer realm=\"sso\""),
                            };
                            let body = Full::new(Bytes::from_static(b"the service's own body"));
                            Ok::<_, std::convert::Infallible>(answer.body(body).unwrap())
                        }
                    },
                );
                tokio::spawn(
                    hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), service),
                );
            }
        });
        AuthService { addr, seen }
    }

    fn asked(&self) -> usize {
        self.seen.lock().unwrap().len()
    }
}

/// An Auth with `forward`, against a real authorization service: its 2xx passes with the
/// header it sets (a client's copy never reaches the upstream), its 401, 403 and redirect
/// reach the client without its body, a service slower than the timeout is a 503, and with
/// `require: any` Basic or the service is enough.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forward_auth_asks_a_service_whose_answer_decides_and_fails_closed() {
    let service = AuthService::start().await;
    let echo = Echo::start(&["127.0.0.42"]);
    let dir = ManifestDir::new("forward-auth");
    dir.write("class.yaml", INGRESS_CLASS);
    let hash = bcrypt::hash("s3cret", 4).unwrap();
    let mut objects = service_yaml("default", "up", 80, &echo.addrs, &[]);
    objects += &format!(
        "---\napiVersion: v1\nkind: Secret\nmetadata:\n  name: htpasswd\n  namespace: default\nstringData:\n  auth: |\n    ada:{hash}\n"
    );
    let forward = format!(
        "  forward:\n    url: http://{}/verify?app=shop\n    timeout: 300ms\n    requestHeaders: [X-Token]\n    responseHeaders: [X-User]\n",
        service.addr
    );
    objects += &format!(
        "---\napiVersion: sluice.dev/v1alpha1\nkind: Auth\nmetadata:\n  name: sso\n  namespace: default\nspec:\n{forward}"
    );
    objects += &format!(
        "---\napiVersion: sluice.dev/v1alpha1\nkind: Auth\nmetadata:\n  name: either\n  namespace: default\nspec:\n  require: any\n  basic: {{secretRef: {{name: htpasswd}}, realm: shop}}\n{forward}"
    );
    for (name, host) in [("sso", "sso.test"), ("either", "either.test")] {
        objects += &guarded_ingress(name, host, name);
    }
    dir.write("objects.yaml", &objects);
    let sluice = Sluice::start(&dir.0, &[]).await;
    let send = |host: &'static str, path: &'static str, headers: &[(&'static str, &str)]| {
        let headers = headers
            .iter()
            .map(|(name, value)| (*name, (*value).to_owned()))
            .collect();
        get_with(sluice.http, host, path, headers)
    };

    // Allowed: the upstream gets the service's X-User, the service gets Sluice's account
    // of the request and not the client's forged one.
    let passed = send(
        "sso.test",
        "/orders?page=2",
        &[
            ("x-token", "ada"),
            ("x-user", "mallory"),
            ("x-forwarded-uri", "/public"),
            ("x-original-url", "http://evil.test/"),
        ],
    )
    .await;
    assert_eq!(passed.status, 200, "{}", passed.body);
    assert_eq!(passed.echo()["headers"]["x-user"], "ada");
    let asked = service.seen.lock().unwrap().last().cloned().unwrap();
    let values = |name: &str| -> Vec<String> {
        asked
            .get_all(name)
            .iter()
            .map(|value| value.to_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(values("x-forwarded-method"), ["GET"]);
    assert_eq!(values("x-forwarded-proto"), ["http"]);
    assert_eq!(values("x-forwarded-host"), ["sso.test"]);
    assert_eq!(values("x-forwarded-uri"), ["/orders?page=2"]);
    assert_eq!(values("x-forwarded-for"), ["127.0.0.1"]);
    assert_eq!(values("x-original-url"), ["http://sso.test/orders?page=2"]);
    assert_eq!(values("x-token"), ["ada"]);
    assert!(values("x-user").is_empty(), "only requestHeaders are sent");

    // A 2xx that sets no X-User: the client's own never reaches the upstream.
    let anonymous = send(
        "sso.test",
        "/",
        &[("x-token", "anon"), ("x-user", "mallory")],
    )
    .await;
    assert_eq!(anonymous.status, 200, "{}", anonymous.body);
    assert!(anonymous.echo()["headers"].get("x-user").is_none());

    // The service's 401 with its challenge, its 403 and its redirect; never its body.
    let refused = send("sso.test", "/", &[("x-user", "ada")]).await;
    assert_eq!(
        (refused.status, refused.body.as_str()),
        (401, "401 unauthorized\n")
    );
    assert_eq!(refused.headers["www-authenticate"], r#"Bearer realm="sso""#);
    let forbidden = send("sso.test", "/", &[("x-token", "bob")]).await;
    assert_eq!(
        (forbidden.status, forbidden.body.as_str()),
        (403, "403 forbidden\n")
    );
    let sign_in = send("sso.test", "/app", &[("x-token", "browser")]).await;
    assert_eq!(
        (sign_in.status, sign_in.body.as_str()),
        (302, "302 found\n")
    );
    assert_eq!(
        sign_in.headers["location"],
        "https://sso.test/start?rd=http://sso.test/app"
    );
    assert_eq!(sign_in.headers["set-cookie"], "csrf=abc; Path=/; HttpOnly");

    // Slower than the 300 ms timeout: 503 at the timeout, not after the service.
    let started = std::time::Instant::now();
    let slow = send("sso.test", "/", &[("x-token", "sleepy")]).await;
    assert_eq!(slow.status, 503, "{}", slow.body);
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );

    // `require: any`: Basic passes without asking the service, and still no client X-User
    // goes upstream; the service's pass is enough alone; neither gives both challenges.
    let asked_before = service.asked();
    let by_basic = send(
        "either.test",
        "/",
        &[
            ("authorization", &basic_authorization("ada", "s3cret")),
            ("x-user", "mallory"),
        ],
    )
    .await;
    assert_eq!(by_basic.status, 200, "{}", by_basic.body);
    assert!(by_basic.echo()["headers"].get("x-user").is_none());
    assert_eq!(service.asked(), asked_before, "Basic passed first");
    let by_service = send("either.test", "/", &[("x-token", "ada")]).await;
    assert_eq!(by_service.status, 200, "{}", by_service.body);
    assert_eq!(by_service.echo()["headers"]["x-user"], "ada");
    let neither = send("either.test", "/", &[]).await;
    assert_eq!(neither.status, 401);
    let challenges: Vec<&str> = neither
        .headers
        .get_all("www-authenticate")
        .iter()
        .filter_map(|value| value.to_str().ok())
        .collect();
    assert_eq!(
        challenges,
        [
            r#"Basic realm="shop", charset="UTF-8""#,
            r#"Bearer realm="sso""#
        ]
    );
    let wrong_password = send(
        "either.test",
        "/",
        &[("authorization", &basic_authorization("ada", "guess"))],
    )
    .await;
    assert_eq!(wrong_password.status, 401);

    for (series, expected) in [
        (auth_decisions("sso", "forward", "allowed"), 2.0),
        (auth_decisions("sso", "forward", "unauthorized"), 1.0),
        (auth_decisions("sso", "forward", "forbidden"), 1.0),
        (auth_decisions("sso", "forward", "redirected"), 1.0),
        (auth_decisions("sso", "forward", "error"), 1.0),
        (auth_decisions("either", "basic", "allowed"), 1.0),
        (auth_decisions("either", "forward", "allowed"), 1.0),
        (auth_decisions("either", "forward", "unauthorized"), 1.0),
        (auth_decisions("either", "basic", "unauthorized"), 1.0),
    ] {
        assert_eq!(sluice.metric(&series).await, Some(expected), "{series}");
    }
}

/// The JWT method with its key set in a Secret: each allowed algorithm passes, claims reach
/// the upstream (a client's forged copy does not), every kind of bad token gets 401 with
/// the bearer challenge, a jti revoked in a real Redis is refused, API keys kept in that
/// Redis pass once added, and with Redis gone both routes fail closed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_jwt_verifies_tokens_copies_claims_and_refuses_revoked_ones_in_redis() {
    use jsonwebtoken::Algorithm;
    use serde_json::json;
    use support::jwt::*;

    let mut redis = support::RedisServer::start();
    let echo = Echo::start(&["127.0.0.42"]);
    let dir = ManifestDir::new("auth-jwt");
    dir.write("class.yaml", INGRESS_CLASS);
    let mut objects = service_yaml("default", "up", 80, &echo.addrs, &[]);
    objects += &support::tls::opaque_secret_yaml("default", "jwks", "jwks.json", JWKS);
    objects += "---\napiVersion: v1\nkind: Secret\nmetadata:\n  name: keys\n  namespace: default\nstringData:\n  ci: key-for-ci\n";
    objects += &format!(
        "---\napiVersion: sluice.dev/v1alpha1\nkind: Auth\nmetadata:\n  name: tokens\n  namespace: default\nspec:\n  jwt:\n    issuer: {ISSUER}\n    audiences: [shop]\n    jwksSecretRef: {{name: jwks}}\n    algorithms: [RS256, ES256, EdDSA]\n    claimsToHeaders: {{sub: X-User, scope: X-Scope}}\n    revocationList: redis\n"
    );
    objects += &format!(
        "---\napiVersion: sluice.dev/v1alpha1\nkind: Auth\nmetadata:\n  name: both\n  namespace: default\nspec:\n  require: all\n  apiKey: {{header: X-Api-Key, secretRef: {{name: keys}}}}\n  jwt:\n    issuer: {ISSUER}\n    audiences: [shop]\n    jwksSecretRef: {{name: jwks}}\n"
    );
    objects += "---\napiVersion: sluice.dev/v1alpha1\nkind: Auth\nmetadata:\n  name: store\n  namespace: default\nspec:\n  apiKey: {header: X-Api-Key, redisSet: true}\n";
    for (name, host, policy) in [
        ("tokens", "tokens.test", "tokens"),
        ("both", "both.test", "both"),
        ("store", "store.test", "store"),
    ] {
        objects += &guarded_ingress(name, host, policy);
    }
    dir.write("objects.yaml", &objects);
    let redis_url = redis.url();
    let sluice = Sluice::start(&dir.0, &["--redis-url", &redis_url]).await;
    let send = |host: &'static str, headers| get_with(sluice.http, host, "/", headers);
    let bearer = |token: &str| ("authorization", format!("Bearer {token}"));

    let none = send("tokens.test", vec![]).await;
    assert_eq!(none.status, 401);
    assert_eq!(none.headers["www-authenticate"], r#"Bearer realm="tokens""#);

    // A forged X-User, its CGI look-alike, and a Connection header naming X-User (which
    // would make the hop-by-hop cleanup drop the value Sluice set).
    let passed = send(
        "tokens.test",
        vec![
            bearer(&rs256(&claims("t-1"))),
            ("x-user", "mallory".into()),
            ("x_user", "mallory".into()),
            ("connection", "x-user".into()),
        ],
    )
    .await;
    assert_eq!(passed.status, 200, "{}", passed.body);
    let upstream_saw = passed.echo();
    assert_eq!(upstream_saw["headers"]["x-user"], "ada", "{upstream_saw}");
    assert!(
        upstream_saw["headers"].get("x_user").is_none(),
        "{upstream_saw}"
    );
    assert_eq!(upstream_saw["headers"]["x-scope"], "read");
    assert!(
        upstream_saw["headers"].get("authorization").is_none(),
        "the token is stripped: {upstream_saw}"
    );
    for (algorithm, kid) in [(Algorithm::ES256, "ec-1"), (Algorithm::EdDSA, "ed-1")] {
        let reply = send(
            "tokens.test",
            vec![bearer(&sign(algorithm, kid, &claims("t-2")))],
        )
        .await;
        assert_eq!(reply.status, 200, "{algorithm:?}: {}", reply.body);
    }

    let with = |change: &dyn Fn(&mut serde_json::Value)| {
        let mut changed = claims("t-3");
        change(&mut changed);
        rs256(&changed)
    };
    let mut bad = vec![
        ("expired", with(&|c| c["exp"] = json!(now() - 300))),
        ("not yet valid", with(&|c| c["nbf"] = json!(now() + 300))),
        ("wrong audience", with(&|c| c["aud"] = json!("billing"))),
        (
            "wrong issuer",
            with(&|c| c["iss"] = json!("https://evil.example")),
        ),
        (
            "unknown key",
            sign(Algorithm::RS256, "rsa-2", &claims("t-4")),
        ),
        ("garbage", "not.a.token".to_owned()),
    ];
    let [none_alg, hmac] = forgeries();
    bad.push(("alg none", none_alg));
    bad.push(("HMAC with the public key", hmac));
    for (why, token) in &bad {
        let refused = send("tokens.test", vec![bearer(token)]).await;
        assert_eq!(refused.status, 401, "{why}");
        assert_eq!(
            refused.headers["www-authenticate"], r#"Bearer realm="tokens", error="invalid_token""#,
            "{why}"
        );
        assert_eq!(refused.body, "401 unauthorized\n", "{why}: no reason given");
    }

    // Revocation: a jti put in the policy's Redis set is refused from then on.
    let revoked = rs256(&claims("t-revoked"));
    assert_eq!(
        send("tokens.test", vec![bearer(&revoked)]).await.status,
        200
    );
    let added = std::process::Command::new("redis-cli")
        .args([
            "-u",
            &redis_url,
            "SADD",
            "sluice:auth:{default/tokens}:revoked-jti",
            "t-revoked",
        ])
        .output()
        .expect("redis-cli (package redis-tools, installed with redis-server)");
    assert!(added.status.success(), "{added:?}");
    assert_eq!(
        send("tokens.test", vec![bearer(&revoked)]).await.status,
        401
    );
    assert_eq!(
        send("tokens.test", vec![bearer(&rs256(&claims("t-5")))])
            .await
            .status,
        200
    );
    let without_jti = with(&|c| {
        c.as_object_mut().unwrap().remove("jti");
    });
    assert_eq!(
        send("tokens.test", vec![bearer(&without_jti)]).await.status,
        401,
        "a token that cannot be revoked is refused where revocation is on"
    );

    // `require: all`: the token alone is not enough.
    let token = rs256(&claims("t-6"));
    assert_eq!(send("both.test", vec![bearer(&token)]).await.status, 401);
    let both = send(
        "both.test",
        vec![bearer(&token), ("x-api-key", "key-for-ci".into())],
    )
    .await;
    assert_eq!(both.status, 200, "{}", both.body);

    // API keys kept in Redis, as SHA-256 digests: valid once added to the policy's set.
    let key = "key-from-the-store";
    let digest: String = ring::digest::digest(&ring::digest::SHA256, key.as_bytes())
        .as_ref()
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect();
    let with_key = || vec![("x-api-key", key.to_owned())];
    assert_eq!(send("store.test", with_key()).await.status, 401);
    let added = std::process::Command::new("redis-cli")
        .args([
            "-u",
            &redis_url,
            "SADD",
            "sluice:auth:{default/store}:api-keys",
            &digest,
        ])
        .output()
        .expect("redis-cli");
    assert!(added.status.success(), "{added:?}");
    let stored = send("store.test", with_key()).await;
    assert_eq!(stored.status, 200, "{}", stored.body);
    assert!(stored.echo()["headers"].get("x-api-key").is_none());
    assert_eq!(
        send("store.test", vec![("x-api-key", "another".into())])
            .await
            .status,
        401
    );

    // No Redis to ask: the routes fail closed rather than letting a revoked token (or an
    // unknown key) in.
    redis.stop();
    let unavailable = send("tokens.test", vec![bearer(&rs256(&claims("t-7")))]).await;
    assert_eq!(unavailable.status, 503, "{}", unavailable.body);
    assert_eq!(send("store.test", with_key()).await.status, 503);

    for (series, expected) in [
        (auth_decisions("tokens", "jwt", "allowed"), 5.0),
        (auth_decisions("tokens", "jwt", "unauthorized"), 10.0),
        (auth_decisions("tokens", "none", "unauthorized"), 1.0),
        (auth_decisions("tokens", "jwt", "error"), 1.0),
        (auth_decisions("both", "api_key", "allowed"), 1.0),
        (auth_decisions("store", "api_key", "allowed"), 1.0),
        (auth_decisions("store", "api_key", "unauthorized"), 2.0),
        (auth_decisions("store", "api_key", "error"), 1.0),
    ] {
        assert_eq!(sluice.metric(&series).await, Some(expected), "{series}");
    }
}

/// `jwksUri`: the key set is fetched over HTTPS (trusting the CA of `jwksCaSecretRef`) in
/// the background, kept when the server fails, and replaced without a restart when the
/// server rotates its keys (a token with an unknown `kid` asks for the refresh).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_jwt_keys_from_a_jwks_uri_rotate_without_a_restart_and_survive_a_failing_server() {
    use std::sync::Mutex;
    use support::jwt::*;

    let ca = support::tls::TestCa::new("jwks test CA");
    // What the JWKS server answers: a status and a document.
    let served = Arc::new(Mutex::new((200u16, JWKS.to_owned())));
    let fetches = Arc::new(AtomicU64::new(0));
    let server = {
        let served = Arc::clone(&served);
        let fetches = Arc::clone(&fetches);
        support::upstream_tls::serve_https(&ca, &["127.0.0.1"], move |_, _request| {
            let (status, body) = served.lock().unwrap().clone();
            fetches.fetch_add(1, Ordering::SeqCst);
            async move {
                let mut response = hyper::Response::new(tonic::body::Body::new(
                    http_body_util::Full::new(Bytes::from(body)),
                ));
                *response.status_mut() = hyper::StatusCode::from_u16(status).unwrap();
                response
            }
        })
        .await
    };
    let uri = format!("https://127.0.0.1:{}/jwks", server.addr.port());

    let echo = Echo::start(&["127.0.0.43"]);
    let dir = ManifestDir::new("auth-jwks-uri");
    dir.write("class.yaml", INGRESS_CLASS);
    let mut objects = service_yaml("default", "up", 80, &echo.addrs, &[]);
    objects += &support::tls::ca_secret_yaml("default", "jwks-ca", &ca.pem);
    objects += &format!(
        "---\napiVersion: sluice.dev/v1alpha1\nkind: Auth\nmetadata:\n  name: remote\n  namespace: default\nspec:\n  jwt:\n    issuer: {ISSUER}\n    audiences: [shop]\n    jwksUri: {uri}\n    jwksCaSecretRef: {{name: jwks-ca}}\n"
    );
    // A key server that never answers: tokens get 503 (no key to check them with yet), not
    // a 401 that would tell clients their token is bad.
    let silent = closed_port("127.0.0.1");
    objects += &format!(
        "---\napiVersion: sluice.dev/v1alpha1\nkind: Auth\nmetadata:\n  name: unreachable\n  namespace: default\nspec:\n  jwt:\n    issuer: {ISSUER}\n    audiences: [shop]\n    jwksUri: https://{silent}/jwks\n"
    );
    for name in ["remote", "unreachable"] {
        objects += &guarded_ingress(name, &format!("{name}.test"), name);
    }
    dir.write("objects.yaml", &objects);
    let sluice = Sluice::start(&dir.0, &[]).await;
    let status_with = |token: String| {
        let addr = sluice.http;
        async move {
            let authorization = format!("Bearer {token}");
            support::send(
                addr,
                "GET",
                "remote.test",
                "/",
                &[("authorization", authorization.as_str())],
                Bytes::new(),
            )
            .await
            .unwrap()
            .status
        }
    };
    let first_key = || rs256(&claims("t-1"));
    let second_key = || sign(jsonwebtoken::Algorithm::RS256, "rsa-2", &claims("t-2"));

    let took = sluice
        .eventually(Duration::from_secs(10), "the fetched key set", || async {
            status_with(first_key()).await == 200
        })
        .await;
    println!("jwksUri: first token accepted {took:?} after start");
    let series = format!(r#"sluice_auth_jwks_keys{{uri="{uri}"}}"#);
    assert_eq!(sluice.metric(&series).await, Some(3.0));
    let unreachable = support::send(
        sluice.http,
        "GET",
        "unreachable.test",
        "/",
        &[("authorization", &format!("Bearer {}", first_key()))],
        Bytes::new(),
    )
    .await
    .unwrap();
    assert_eq!(unreachable.status, 503, "{}", unreachable.body);

    // The server fails: the last good set stays in use.
    *served.lock().unwrap() = (500, "oops".into());
    let before = fetches.load(Ordering::SeqCst);
    assert_eq!(
        status_with(second_key()).await,
        401,
        "rsa-2 is not known yet"
    );
    let errors = format!(r#"sluice_auth_jwks_refresh_errors_total{{uri="{uri}"}}"#);
    sluice
        .eventually(Duration::from_secs(5), "a failed refresh", || async {
            sluice.metric(&errors).await.unwrap_or(0.0) >= 1.0
        })
        .await;
    assert!(
        fetches.load(Ordering::SeqCst) > before,
        "the unknown kid asked for a refresh"
    );
    assert_eq!(status_with(first_key()).await, 200, "last good keys kept");

    // The server rotates to rsa-2: the retry picks it up, no restart.
    *served.lock().unwrap() = (200, JWKS_OTHER.to_owned());
    let took = sluice
        .eventually(Duration::from_secs(10), "the rotated key set", || async {
            status_with(second_key()).await == 200
        })
        .await;
    println!("jwksUri: rotated key accepted {took:?} after the server changed");
    assert_eq!(status_with(first_key()).await, 401, "the old key is gone");
    assert!(
        server
            .server_names()
            .iter()
            .all(|name| name.is_empty() || name == "127.0.0.1")
    );
}
