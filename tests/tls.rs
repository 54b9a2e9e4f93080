//! TLS termination with the real `sluice` binary and a real rustls client: SNI, default
//! and fallback certificates, rotation and bad Secrets, redirects and HSTS, client
//! certificates, ALPN h2, and hostile handshakes.

mod support;

use std::time::{Duration, Instant};

use support::tls::{
    ClientOptions, HttpsConnection, TestCa, ca_secret_yaml, connect, https_get, presented,
    tls_secret_yaml,
};
use support::{Echo, INGRESS_CLASS, ManifestDir, Sluice, send, service_yaml};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// An Ingress in `default` with one rule per host (all to Service `web`), TLS items
/// `(secret, hosts)` and annotations.
fn tls_ingress(
    name: &str,
    created: &str,
    hosts: &[&str],
    tls: &[(&str, &[&str])],
    annotations: &[(&str, &str)],
) -> String {
    let mut yaml = format!(
        "---\napiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata:\n  name: {name}\n  namespace: default\n  creationTimestamp: \"{created}\"\n"
    );
    if !annotations.is_empty() {
        yaml.push_str("  annotations:\n");
        for (key, value) in annotations {
            yaml.push_str(&format!("    {key}: \"{value}\"\n"));
        }
    }
    yaml.push_str("spec:\n  ingressClassName: sluice\n");
    if !tls.is_empty() {
        yaml.push_str("  tls:\n");
        for (secret, tls_hosts) in tls {
            yaml.push_str(&format!("  - secretName: {secret}\n"));
            if !tls_hosts.is_empty() {
                let quoted: Vec<String> = tls_hosts.iter().map(|h| format!("\"{h}\"")).collect();
                yaml.push_str(&format!("    hosts: [{}]\n", quoted.join(", ")));
            }
        }
    }
    yaml.push_str("  rules:\n");
    for host in hosts {
        yaml.push_str(&format!(
            "  - host: \"{host}\"\n    http:\n      paths:\n      - {{path: /, pathType: Prefix, backend: {{service: {{name: web, port: {{number: 80}}}}}}}}\n"
        ));
    }
    yaml
}

fn backend(echo: &Echo) -> String {
    format!(
        "{INGRESS_CLASS}---\n{}",
        service_yaml("default", "web", 80, &[echo.addrs[0]], &[])
    )
}

async fn start_https(dir: &ManifestDir, extra: &[&str]) -> Sluice {
    let mut args = vec!["--https-addr", "127.0.0.1:0"];
    args.extend_from_slice(extra);
    Sluice::start(&dir.0, &args).await
}

fn https_addr(sluice: &Sluice) -> std::net::SocketAddr {
    sluice.https.expect("sluice reports its HTTPS address")
}

const ANY_CERT: ClientOptions<'static> = ClientOptions {
    trust: None,
    alpn: &[],
    identity: None,
    tls12_only: false,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sni_picks_each_hosts_certificate_and_others_get_the_default() {
    let echo = Echo::start(&["127.0.0.1"]);
    let ca = TestCa::new("Sluice test CA");
    let a = ca.server(&["a.example"]);
    let b = ca.server(&["b.example"]);
    let wild = ca.server(&["*.wild.example"]);
    let default = ca.server(&["default.example"]);
    let dir = ManifestDir::new("tls-sni");
    dir.write("backend.yaml", &backend(&echo));
    dir.write(
        "secrets.yaml",
        &[
            tls_secret_yaml("default", "a-tls", &a.cert_pem, &a.key_pem),
            tls_secret_yaml("default", "b-tls", &b.cert_pem, &b.key_pem),
            tls_secret_yaml("default", "wild-tls", &wild.cert_pem, &wild.key_pem),
            tls_secret_yaml("default", "fallback", &default.cert_pem, &default.key_pem),
        ]
        .concat(),
    );
    dir.write(
        "ingress.yaml",
        &[
            tls_ingress(
                "a",
                "2024-01-01T00:00:00Z",
                &["a.example", "*.wild.example"],
                &[("a-tls", &["a.example"]), ("wild-tls", &["*.wild.example"])],
                &[],
            ),
            // No hosts in its TLS item: it covers the Ingress's rule hosts.
            tls_ingress(
                "b",
                "2024-01-02T00:00:00Z",
                &["b.example"],
                &[("b-tls", &[])],
                &[],
            ),
        ]
        .concat(),
    );
    let sluice = start_https(&dir, &["--default-ssl-certificate", "default/fallback"]).await;
    let addr = https_addr(&sluice);
    let trusted = ClientOptions {
        trust: Some(&ca),
        ..ANY_CERT
    };

    // Each name gets its own certificate, verified against the CA by the real client.
    for (sni, expected) in [
        ("a.example", &a),
        ("b.example", &b),
        ("x.wild.example", &wild),
        ("A.Example", &a),
    ] {
        let stream = connect(addr, Some(sni), &trusted)
            .await
            .unwrap_or_else(|e| panic!("{sni}: {e}"));
        assert_eq!(presented(&stream), expected.der, "{sni}");
    }
    // Unknown names, a name two labels under the wildcard, and no SNI: the default.
    for sni in [Some("unknown.example"), Some("y.x.wild.example"), None] {
        let stream = connect(addr, sni, &ANY_CERT).await.unwrap();
        assert_eq!(presented(&stream), default.der, "{sni:?}");
    }

    // HTTP over TLS reaches the backend, which is told the request came over https.
    let reply = https_get(addr, "a.example", "/hello", &trusted)
        .await
        .unwrap();
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(reply.echo()["headers"]["x-forwarded-proto"], "https");
    assert_eq!(reply.echo()["version"], "HTTP/1.1");

    // ALPN h2: the same route over HTTP/2.
    let h2 = ClientOptions {
        alpn: &[b"h2", b"http/1.1"],
        ..trusted
    };
    let stream = connect(addr, Some("b.example"), &h2).await.unwrap();
    assert_eq!(stream.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let mut connection = HttpsConnection::new(stream).await.unwrap();
    assert!(connection.is_h2());
    for _ in 0..3 {
        let reply = connection.get("b.example", "/h2", &[]).await.unwrap();
        assert_eq!(reply.status, 200, "{}", reply.body);
    }

    // TLS 1.2 still works for old clients.
    let tls12 = ClientOptions {
        tls12_only: true,
        ..trusted
    };
    let reply = https_get(addr, "a.example", "/", &tls12).await.unwrap();
    assert_eq!(reply.status, 200);

    let handshakes = |version: &'static str| {
        let sluice = &sluice;
        async move {
            sluice
                .metric(&format!(
                    "sluice_tls_handshakes_total{{version=\"{version}\"}}"
                ))
                .await
                .unwrap_or(0.0)
        }
    };
    assert!(handshakes("TLSv1.3").await >= 9.0);
    assert_eq!(handshakes("TLSv1.2").await, 1.0);
    let expiry = sluice
        .metric(
            "sluice_tls_certificate_expiry_timestamp_seconds{host=\"*.wild.example\",secret=\"default/wild-tls\"}",
        )
        .await
        .expect("an expiry series per host");
    assert!(expiry > 1.7e9, "{expiry}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_default_a_generated_certificate_answers() {
    let echo = Echo::start(&["127.0.0.1"]);
    let dir = ManifestDir::new("tls-fallback");
    dir.write("backend.yaml", &backend(&echo));
    dir.write(
        "ingress.yaml",
        &tls_ingress("plain", "2024-01-01T00:00:00Z", &["p.example"], &[], &[]),
    );
    let sluice = start_https(&dir, &[]).await;
    let stream = connect(https_addr(&sluice), Some("p.example"), &ANY_CERT)
        .await
        .unwrap();
    let leaf = presented(&stream);
    let text = String::from_utf8_lossy(leaf.as_ref()).into_owned();
    assert!(text.contains("sluice-default.invalid"), "not the fallback");
    // A host without TLS is served over HTTPS with it, and not redirected over HTTP.
    let reply = https_get(https_addr(&sluice), "p.example", "/", &ANY_CERT)
        .await
        .unwrap();
    assert_eq!(reply.status, 200);
    let plain = sluice.get("p.example", "/").await;
    assert_eq!(plain.status, 200);
    assert!(plain.headers.get("strict-transport-security").is_none());
}

/// Completes a TLS 1.3 handshake by hand and sends the request in the same segment as the
/// client's Finished, as resuming clients (and many others) do: rustls on the server then
/// holds the request's plaintext before the first read, where the socket shows nothing.
/// The answer's head, or what went wrong.
fn request_with_the_finished(
    addr: std::net::SocketAddr,
    config: &std::sync::Arc<rustls::ClientConfig>,
) -> Result<String, String> {
    use std::io::{Read, Write};
    let name = rustls::pki_types::ServerName::try_from("f.example").map_err(|e| e.to_string())?;
    let mut tls = rustls::ClientConnection::new(std::sync::Arc::clone(config), name)
        .map_err(|e| e.to_string())?;
    let mut tcp = std::net::TcpStream::connect(addr).map_err(|e| e.to_string())?;
    tcp.set_nodelay(true).map_err(|e| e.to_string())?;
    // Far below the header-read timeout (30 s): a request left unread waits that long.
    tcp.set_read_timeout(Some(Duration::from_secs(5)))
        .map_err(|e| e.to_string())?;
    while tls.is_handshaking() {
        while tls.wants_write() && tls.is_handshaking() {
            tls.write_tls(&mut tcp).map_err(|e| e.to_string())?;
        }
        if tls.is_handshaking() {
            tls.read_tls(&mut tcp).map_err(|e| e.to_string())?;
            tls.process_new_packets().map_err(|e| e.to_string())?;
        }
    }
    // The Finished is still queued: the request joins it, and both leave in one write.
    tls.writer()
        .write_all(b"GET / HTTP/1.1\r\nHost: f.example\r\nConnection: close\r\n\r\n")
        .map_err(|e| e.to_string())?;
    let mut flight = Vec::new();
    while tls.wants_write() {
        tls.write_tls(&mut flight).map_err(|e| e.to_string())?;
    }
    tcp.write_all(&flight).map_err(|e| e.to_string())?;
    let mut answer = Vec::new();
    while !answer.windows(4).any(|w| w == b"\r\n\r\n") {
        let read = tls
            .read_tls(&mut tcp)
            .map_err(|e| format!("no answer: {e}"))?;
        if read == 0 {
            return Err("closed before an answer".to_owned());
        }
        tls.process_new_packets().map_err(|e| e.to_string())?;
        let mut plain = [0u8; 4096];
        match tls.reader().read(&mut plain) {
            Ok(read) => answer.extend_from_slice(&plain[..read]),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(e.to_string()),
        }
    }
    Ok(String::from_utf8_lossy(&answer).into_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_sent_with_the_last_handshake_message_is_answered_at_once() {
    let echo = Echo::start(&["127.0.0.1"]);
    let ca = TestCa::new("Sluice coalesced request CA");
    let issued = ca.server(&["f.example"]);
    let dir = ManifestDir::new("tls-coalesced");
    dir.write("backend.yaml", &backend(&echo));
    dir.write(
        "secret.yaml",
        &tls_secret_yaml("default", "f-tls", &issued.cert_pem, &issued.key_pem),
    );
    dir.write(
        "ingress.yaml",
        &tls_ingress(
            "f",
            "2024-01-01T00:00:00Z",
            &["f.example"],
            &[("f-tls", &[])],
            &[],
        ),
    );
    let sluice = start_https(&dir, &[]).await;
    let addr = https_addr(&sluice);
    let config = std::sync::Arc::new(
        rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_root_certificates(ca.roots())
        .with_no_client_auth(),
    );
    // The first connection makes a full handshake, the second resumes its session.
    let answers = tokio::task::spawn_blocking(move || {
        (0..2)
            .map(|_| request_with_the_finished(addr, &config))
            .collect::<Vec<_>>()
    })
    .await
    .unwrap();
    for (index, answer) in answers.into_iter().enumerate() {
        let answer = answer.unwrap_or_else(|error| panic!("connection {index}: {error}"));
        assert!(
            answer.starts_with("HTTP/1.1 200"),
            "connection {index}: {answer}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotated_secret_is_served_without_a_restart_and_a_bad_one_keeps_the_last_good() {
    let echo = Echo::start(&["127.0.0.1"]);
    let ca = TestCa::new("Sluice rotation CA");
    let first = ca.server(&["r.example"]);
    let second = ca.server(&["r.example"]);
    let dir = ManifestDir::new("tls-rotate");
    dir.write("backend.yaml", &backend(&echo));
    dir.write(
        "secret.yaml",
        &tls_secret_yaml("default", "r-tls", &first.cert_pem, &first.key_pem),
    );
    dir.write(
        "ingress.yaml",
        &tls_ingress(
            "r",
            "2024-01-01T00:00:00Z",
            &["r.example"],
            &[("r-tls", &[])],
            &[],
        ),
    );
    let sluice = start_https(&dir, &[]).await;
    let addr = https_addr(&sluice);
    let trusted = ClientOptions {
        trust: Some(&ca),
        ..ANY_CERT
    };
    let stream = connect(addr, Some("r.example"), &trusted).await.unwrap();
    assert_eq!(presented(&stream), first.der);
    let mut kept = HttpsConnection::new(stream).await.unwrap();
    assert_eq!(kept.get("r.example", "/", &[]).await.unwrap().status, 200);

    // Rotate: new handshakes get the new certificate within a second.
    let rotated_at = Instant::now();
    dir.write(
        "secret.yaml",
        &tls_secret_yaml("default", "r-tls", &second.cert_pem, &second.key_pem),
    );
    loop {
        let stream = connect(addr, Some("r.example"), &trusted).await.unwrap();
        if presented(&stream) == second.der {
            break;
        }
        assert!(
            rotated_at.elapsed() < Duration::from_secs(1),
            "the rotated certificate was not served within a second"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The connection made before the rotation is still open and served.
    for _ in 0..3 {
        assert_eq!(kept.get("r.example", "/", &[]).await.unwrap().status, 200);
    }

    // A key that does not match: reported, and the last good certificate keeps serving.
    let stranger = ca.server(&["r.example"]);
    let generation = sluice.generation().await;
    dir.write(
        "secret.yaml",
        &tls_secret_yaml("default", "r-tls", &second.cert_pem, &stranger.key_pem),
    );
    sluice
        .eventually(
            Duration::from_secs(5),
            "the bad Secret is reported",
            || async {
                let verbose = sluice.admin_get("/readyz?verbose").await.unwrap().body;
                verbose.contains("Secret \"r-tls\" cannot be used")
                    && verbose.contains("does not belong to the first certificate")
                    && verbose.contains("its last good certificate keeps serving")
            },
        )
        .await;
    assert!(sluice.generation().await > generation);
    for _ in 0..3 {
        let stream = connect(addr, Some("r.example"), &trusted).await.unwrap();
        assert_eq!(presented(&stream), second.der);
    }
    assert_eq!(kept.get("r.example", "/", &[]).await.unwrap().status, 200);

    // Deleting the Secret withdraws the certificate: the host falls back.
    dir.write("secret.yaml", "");
    sluice
        .eventually(
            Duration::from_secs(5),
            "the certificate is withdrawn",
            || async {
                match connect(addr, Some("r.example"), &ANY_CERT).await {
                    Ok(stream) => presented(&stream) != second.der,
                    Err(_) => false,
                }
            },
        )
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_http_is_redirected_and_https_answers_carry_hsts() {
    let echo = Echo::start(&["127.0.0.1"]);
    let ca = TestCa::new("Sluice redirect CA");
    let secure = ca.server(&["s.example", "k.example", "h.example"]);
    let dir = ManifestDir::new("tls-redirect");
    dir.write("backend.yaml", &backend(&echo));
    dir.write(
        "secret.yaml",
        &tls_secret_yaml("default", "s-tls", &secure.cert_pem, &secure.key_pem),
    );
    dir.write(
        "ingress.yaml",
        &[
            tls_ingress(
                "s",
                "2024-01-01T00:00:00Z",
                &["s.example"],
                &[("s-tls", &[])],
                &[],
            ),
            tls_ingress(
                "k",
                "2024-01-02T00:00:00Z",
                &["k.example"],
                &[("s-tls", &[])],
                &[
                    ("sluice.dev/ssl-redirect", "false"),
                    ("sluice.dev/hsts", "false"),
                ],
            ),
            tls_ingress(
                "h",
                "2024-01-03T00:00:00Z",
                &["h.example"],
                &[("s-tls", &[])],
                &[("sluice.dev/hsts", "max-age=600; includeSubDomains")],
            ),
            tls_ingress("n", "2024-01-04T00:00:00Z", &["n.example"], &[], &[]),
        ]
        .concat(),
    );
    let sluice = start_https(
        &dir,
        &[
            "--https-redirect-port",
            "8443",
            "--trusted-proxies",
            "127.0.0.1/32",
        ],
    )
    .await;

    let redirected = sluice.get("s.example", "/shop/cart?item=1").await;
    assert_eq!(redirected.status, 308, "{}", redirected.body);
    assert_eq!(
        redirected.headers["location"],
        "https://s.example:8443/shop/cart?item=1"
    );
    // ACME http-01 challenges stay on plain HTTP, as cert-manager needs.
    let challenge = sluice
        .get("s.example", "/.well-known/acme-challenge/token")
        .await;
    assert_eq!(challenge.status, 200);
    // Redirect turned off; and a host without a certificate is never redirected.
    assert_eq!(sluice.get("k.example", "/").await.status, 200);
    assert_eq!(sluice.get("n.example", "/").await.status, 200);

    let addr = https_addr(&sluice);
    let trusted = ClientOptions {
        trust: Some(&ca),
        ..ANY_CERT
    };
    let hsts = |reply: &support::Reply| {
        reply
            .headers
            .get("strict-transport-security")
            .map(|v| v.to_str().unwrap().to_owned())
    };
    let reply = https_get(addr, "s.example", "/", &trusted).await.unwrap();
    assert_eq!(reply.status, 200);
    assert_eq!(hsts(&reply).as_deref(), Some("max-age=15724800"));
    let reply = https_get(addr, "k.example", "/", &trusted).await.unwrap();
    assert_eq!(hsts(&reply), None);
    let reply = https_get(addr, "h.example", "/", &trusted).await.unwrap();
    assert_eq!(
        hsts(&reply).as_deref(),
        Some("max-age=600; includeSubDomains")
    );
    // Never over plain HTTP.
    assert_eq!(hsts(&sluice.get("k.example", "/").await), None);
    // A trusted load balancer that terminated TLS itself is not redirected (that would
    // loop), and its clients get HSTS.
    let behind = send(
        sluice.http,
        "GET",
        "s.example",
        "/",
        &[("x-forwarded-proto", "https")],
        bytes::Bytes::new(),
    )
    .await
    .unwrap();
    assert_eq!(behind.status, 200, "{}", behind.body);
    assert_eq!(hsts(&behind).as_deref(), Some("max-age=15724800"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_certificates_are_required_and_their_subject_goes_upstream() {
    let echo = Echo::start(&["127.0.0.1"]);
    let server_ca = TestCa::new("Sluice server CA");
    let client_ca = TestCa::new("Sluice client CA");
    let other_ca = TestCa::new("Somebody else's CA");
    let server = server_ca.server(&["m.example", "open.example"]);
    let dir = ManifestDir::new("tls-mtls");
    dir.write("backend.yaml", &backend(&echo));
    dir.write(
        "secrets.yaml",
        &[
            tls_secret_yaml("default", "m-tls", &server.cert_pem, &server.key_pem),
            ca_secret_yaml("default", "clients", &client_ca.pem),
        ]
        .concat(),
    );
    dir.write(
        "ingress.yaml",
        &[
            tls_ingress(
                "m",
                "2024-01-01T00:00:00Z",
                &["m.example"],
                &[("m-tls", &["m.example"])],
                &[("sluice.dev/client-ca", "clients")],
            ),
            tls_ingress(
                "open",
                "2024-01-02T00:00:00Z",
                &["open.example"],
                &[("m-tls", &["open.example"])],
                &[],
            ),
            // Another Ingress's path on the protected host, without the annotation and
            // without the redirect: the host's client CA still applies.
            tls_ingress(
                "m-extra",
                "2024-01-04T00:00:00Z",
                &[],
                &[],
                &[("sluice.dev/ssl-redirect", "false")],
            )
            .replace(
                "  rules:\n",
                "  rules:\n  - host: m.example\n    http:\n      paths:\n      - {path: /extra, pathType: Prefix, backend: {service: {name: web, port: {number: 80}}}}\n",
            ),
            tls_ingress(
                "broken",
                "2024-01-03T00:00:00Z",
                &["broken.example"],
                &[],
                &[("sluice.dev/client-ca", "missing-ca")],
            ),
        ]
        .concat(),
    );
    let sluice = start_https(&dir, &[]).await;
    let addr = https_addr(&sluice);
    let alice = client_ca.client("alice");
    let mallory = other_ca.client("mallory");

    // With a certificate from the CA: served, and the backend learns who it is.
    let with_alice = ClientOptions {
        trust: Some(&server_ca),
        identity: Some(&alice),
        ..ANY_CERT
    };
    let reply = https_get(addr, "m.example", "/", &with_alice)
        .await
        .unwrap();
    assert_eq!(reply.status, 200, "{}", reply.body);
    let headers = &reply.echo()["headers"];
    let subject = headers["ssl-client-subject-dn"].as_str().unwrap();
    assert!(subject.contains("CN=alice"), "{subject}");
    assert!(subject.contains("O=Sluice tests"), "{subject}");
    assert_eq!(headers["ssl-client-verify"], "SUCCESS");

    // Alice's verified connection reused for a host that asks for no certificate: served,
    // but her identity is not vouched for there.
    let stream = connect(addr, Some("m.example"), &with_alice).await.unwrap();
    let mut alice_conn = HttpsConnection::new(stream).await.unwrap();
    let reply = alice_conn.get("open.example", "/", &[]).await.unwrap();
    assert_eq!(reply.status, 200, "{}", reply.body);
    let headers = &reply.echo()["headers"];
    assert!(headers.get("ssl-client-subject-dn").is_none(), "{headers}");
    assert!(headers.get("ssl-client-verify").is_none(), "{headers}");
    // And on the protected host, the other Ingress's path gets her identity too.
    let reply = alice_conn.get("m.example", "/extra", &[]).await.unwrap();
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert!(reply.echo()["headers"]["ssl-client-subject-dn"].is_string());

    // Without one, or with one from another CA: no request gets through.
    for (who, identity) in [("nobody", None), ("mallory", Some(&mallory))] {
        let options = ClientOptions {
            trust: Some(&server_ca),
            identity,
            ..ANY_CERT
        };
        let outcome = https_get(addr, "m.example", "/", &options).await;
        assert!(outcome.is_err(), "{who} got in: {outcome:?}");
    }
    sluice
        .eventually(
            Duration::from_secs(2),
            "client certificate failures are counted",
            || async {
                sluice
                    .metric("sluice_tls_handshake_failures_total{reason=\"client_certificate\"}")
                    .await
                    .unwrap_or(0.0)
                    >= 1.0
            },
        )
        .await;

    // A handshake for another host cannot be used to reach the protected one, and a
    // client cannot forge the identity headers.
    let plain = ClientOptions {
        trust: Some(&server_ca),
        ..ANY_CERT
    };
    let stream = connect(addr, Some("open.example"), &plain).await.unwrap();
    let mut fronted = HttpsConnection::new(stream).await.unwrap();
    let reply = fronted.get("m.example", "/", &[]).await.unwrap();
    assert_eq!(reply.status, 421, "{}", reply.body);
    let reply = fronted.get("m.example", "/extra", &[]).await.unwrap();
    assert_eq!(reply.status, 421, "{}", reply.body);
    let reply = fronted
        .get(
            "open.example",
            "/",
            &[
                ("ssl-client-subject-dn", "CN=admin"),
                ("ssl-client-verify", "SUCCESS"),
            ],
        )
        .await
        .unwrap();
    assert_eq!(reply.status, 200);
    let headers = &reply.echo()["headers"];
    assert!(headers.get("ssl-client-subject-dn").is_none(), "{headers}");
    assert!(headers.get("ssl-client-verify").is_none(), "{headers}");
    // Over plain HTTP the protected host only redirects to HTTPS.
    let plain_http = send(
        sluice.http,
        "GET",
        "m.example",
        "/",
        &[],
        bytes::Bytes::new(),
    )
    .await
    .unwrap();
    assert_eq!(plain_http.status, 308);
    // Without the redirect, plain HTTP to the protected host is refused, on any path.
    assert_eq!(sluice.get("m.example", "/extra").await.status, 403);

    // A client CA that does not exist shuts the Ingress's routes rather than opening them.
    assert_eq!(sluice.get("broken.example", "/").await.status, 403);
    let verbose = sluice.admin_get("/readyz?verbose").await.unwrap().body;
    assert!(
        verbose.contains("client CA Secret \"missing-ca\" cannot be used"),
        "{verbose}"
    );
}

/// Sluice serving one HTTPS host, `<name>.example`, with a certificate (Secret
/// `<name>-tls`) from a fresh CA, in front of one echo backend.
struct OneHost {
    sluice: Sluice,
    ca: TestCa,
    _echo: Echo,
    _dir: ManifestDir,
}

impl OneHost {
    async fn start(name: &str, extra: &[&str]) -> OneHost {
        let echo = Echo::start(&["127.0.0.1"]);
        let ca = TestCa::new(&format!("Sluice {name} CA"));
        let host = format!("{name}.example");
        let secret = format!("{name}-tls");
        let issued = ca.server(&[&host]);
        let dir = ManifestDir::new(&format!("tls-{name}"));
        dir.write("backend.yaml", &backend(&echo));
        dir.write(
            "secret.yaml",
            &tls_secret_yaml("default", &secret, &issued.cert_pem, &issued.key_pem),
        );
        dir.write(
            "ingress.yaml",
            &tls_ingress(
                name,
                "2024-01-01T00:00:00Z",
                &[&host],
                &[(&secret, &[])],
                &[],
            ),
        );
        let sluice = start_https(&dir, extra).await;
        OneHost {
            sluice,
            ca,
            _echo: echo,
            _dir: dir,
        }
    }
}

/// A ClientHello that offers only TLS 1.1 (no supported_versions extension).
fn tls11_client_hello() -> Vec<u8> {
    let mut body = vec![0x03, 0x02]; // client_version TLS 1.1
    body.extend_from_slice(&[0x11; 32]); // random
    body.push(0); // no session id
    // Suites Sluice does offer (ECDHE with AES-GCM), so only the version is wrong.
    body.extend_from_slice(&[0x00, 0x04, 0xc0, 0x2b, 0xc0, 0x2f]);
    body.extend_from_slice(&[0x01, 0x00]); // null compression
    // supported_groups [x25519] and signature_algorithms [ecdsa_p256_sha256, rsa_pss_sha256],
    // so that nothing but the version stands in the way.
    let extensions: [u8; 20] = [
        0x00, 0x0a, 0x00, 0x04, 0x00, 0x02, 0x00, 0x1d, //
        0x00, 0x0d, 0x00, 0x06, 0x00, 0x04, 0x04, 0x03, 0x08, 0x04, //
        0x00, 0x00,
    ];
    let extensions = &extensions[..18];
    body.extend_from_slice(&u16::try_from(extensions.len()).unwrap().to_be_bytes());
    body.extend_from_slice(extensions);
    let mut handshake = vec![0x01];
    handshake.extend_from_slice(&u32::try_from(body.len()).unwrap().to_be_bytes()[1..]);
    handshake.extend_from_slice(&body);
    let mut record = vec![0x16, 0x03, 0x01];
    record.extend_from_slice(&u16::try_from(handshake.len()).unwrap().to_be_bytes());
    record.extend_from_slice(&handshake);
    record
}

/// Reads until the server closes or `within` passes; returns what was read and whether
/// the server closed.
async fn read_until_closed(stream: &mut TcpStream, within: Duration) -> (Vec<u8>, bool) {
    let mut received = Vec::new();
    let deadline = Instant::now() + within;
    let mut buffer = [0u8; 4096];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, stream.read(&mut buffer)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return (received, true),
            Ok(Ok(read)) => received.extend_from_slice(&buffer[..read]),
            Err(_) => return (received, false),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn old_versions_garbage_and_slow_handshakes_do_not_hurt_other_connections() {
    let site = OneHost::start("g", &["--tls-handshake-timeout", "1s"]).await;
    let (sluice, ca) = (&site.sluice, &site.ca);
    let addr = https_addr(sluice);
    let trusted = ClientOptions {
        trust: Some(ca),
        ..ANY_CERT
    };

    // Slowloris: 20 connections that send half a record header and then nothing.
    let mut slow = Vec::new();
    for _ in 0..20 {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        stream.write_all(&[0x16, 0x03]).await.unwrap();
        slow.push(stream);
    }
    // A truncated ClientHello: a record that promises more than it sends.
    let mut truncated = TcpStream::connect(addr).await.unwrap();
    let hello = tls11_client_hello();
    truncated
        .write_all(&hello[..hello.len() / 2])
        .await
        .unwrap();

    // Meanwhile real clients are served at once.
    let started = Instant::now();
    for _ in 0..5 {
        let reply = https_get(addr, "g.example", "/", &trusted).await.unwrap();
        assert_eq!(reply.status, 200);
    }
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "good handshakes waited behind slow ones: {:?}",
        started.elapsed()
    );

    // TLS 1.1 is refused with a protocol_version alert (level 2, description 70).
    let mut old = TcpStream::connect(addr).await.unwrap();
    old.write_all(&tls11_client_hello()).await.unwrap();
    let (answer, closed) = read_until_closed(&mut old, Duration::from_secs(3)).await;
    assert!(closed, "a TLS 1.1 client was kept open");
    assert_eq!(answer.first(), Some(&0x15), "no alert: {answer:?}");
    assert_eq!(&answer[5..7], &[2, 70], "not protocol_version: {answer:?}");

    // Garbage (a plain HTTP request on the HTTPS port) is dropped.
    let mut garbage = TcpStream::connect(addr).await.unwrap();
    garbage
        .write_all(b"GET / HTTP/1.1\r\nHost: g.example\r\n\r\n")
        .await
        .unwrap();
    let (_, closed) = read_until_closed(&mut garbage, Duration::from_secs(3)).await;
    assert!(closed, "garbage kept the connection open");

    // The slow and truncated ones are cut off by the handshake timeout (1 s).
    let (_, closed) = read_until_closed(&mut truncated, Duration::from_secs(3)).await;
    assert!(
        closed,
        "a truncated ClientHello held its connection past the timeout"
    );
    for stream in &mut slow {
        let (_, closed) = read_until_closed(stream, Duration::from_secs(3)).await;
        assert!(closed, "a slowloris handshake outlived the timeout");
    }
    let failures = |reason: &'static str| {
        let sluice = &sluice;
        async move {
            sluice
                .metric(&format!(
                    "sluice_tls_handshake_failures_total{{reason=\"{reason}\"}}"
                ))
                .await
                .unwrap_or(0.0)
        }
    };
    assert_eq!(failures("timeout").await, 21.0);
    assert!(failures("incompatible").await >= 1.0);
    assert!(failures("malformed").await >= 1.0);
    // And the listener still works.
    let reply = https_get(addr, "g.example", "/", &trusted).await.unwrap();
    assert_eq!(reply.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handshakes_beyond_the_limit_are_refused_at_once_and_slots_come_back() {
    let site = OneHost::start(
        "o",
        &[
            "--worker-threads",
            "1",
            "--max-tls-handshakes",
            "2",
            "--tls-handshake-timeout",
            "1s",
        ],
    )
    .await;
    let (sluice, ca) = (&site.sluice, &site.ca);
    let addr = https_addr(sluice);
    let mut slow = Vec::new();
    for _ in 0..2 {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        stream.write_all(&[0x16, 0x03]).await.unwrap();
        slow.push(stream);
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    // Both slots are held: the next connection is closed without a handshake.
    let mut refused = TcpStream::connect(addr).await.unwrap();
    let _ = refused.write_all(&tls11_client_hello()).await;
    let (answer, closed) = read_until_closed(&mut refused, Duration::from_millis(500)).await;
    assert!(closed && answer.is_empty(), "not refused: {answer:?}");
    assert!(
        sluice
            .metric("sluice_tls_handshake_failures_total{reason=\"overloaded\"}")
            .await
            .unwrap_or(0.0)
            >= 1.0
    );
    // The slow ones time out and give their slots back.
    for stream in &mut slow {
        let (_, closed) = read_until_closed(stream, Duration::from_secs(3)).await;
        assert!(closed);
    }
    let trusted = ClientOptions {
        trust: Some(ca),
        ..ANY_CERT
    };
    let reply = https_get(addr, "o.example", "/", &trusted).await.unwrap();
    assert_eq!(reply.status, 200);
}
