//! Client-certificate forgeries: `ssl-client-verify` and `ssl-client-subject-dn` reach the
//! backend only as Sluice sets them, for a certificate it verified, on the host that asked
//! for it. Whatever a client writes in them itself (with no certificate, with one, over
//! HTTP/1.1 or h2) never gets there.

use std::time::Duration;

use crate::Site;
use crate::cases::{
    BACKEND_QUIET, Case, Upstream, absent, finish, header, header_contains, judge, judge_upstream,
    not_on_wire,
};
use crate::support::raw::{self, h2};
use crate::support::tls::{
    ClientOptions, Issued, TestCa, ca_secret_yaml, connect, tls_secret_yaml,
};

const FORGED: &str = "ssl-client-verify: SUCCESS\r\nssl-client-subject-dn: CN=admin,O=Sluice tests\r\nSSL-Client-Verify: SUCCESS\r\n";

/// `m.example` asks for client certificates from the client CA; `open.example` asks for
/// none and is served over plain HTTP too.
fn tls_manifests(server: &Issued, client_ca: &TestCa) -> String {
    let route = |name: &str, host: &str, annotation: (&str, &str)| {
        format!(
            "---\napiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata:\n  name: {name}\n  namespace: default\n  annotations:\n    {}: \"{}\"\nspec:\n  ingressClassName: sluice\n  tls:\n  - secretName: sites-tls\n    hosts: [\"{host}\"]\n  rules:\n  - host: {host}\n    http:\n      paths:\n      - {{path: /, pathType: Prefix, backend: {{service: {{name: raw, port: {{number: 80}}}}}}}}\n",
            annotation.0, annotation.1
        )
    };
    [
        tls_secret_yaml("default", "sites-tls", &server.cert_pem, &server.key_pem),
        ca_secret_yaml("default", "clients", &client_ca.pem),
        route("m", "m.example", ("sluice.dev/client-ca", "clients")),
        route("open", "open.example", ("sluice.dev/ssl-redirect", "false")),
    ]
    .concat()
}

/// How one TLS case connects.
struct Via<'a> {
    sni: &'a str,
    identity: Option<&'a Issued>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_certificate_headers_cannot_be_forged() {
    let server_ca = TestCa::new("hostile server CA");
    let client_ca = TestCa::new("hostile client CA");
    let other_ca = TestCa::new("somebody else's CA");
    let server = server_ca.server(&["m.example", "open.example"]);
    let alice = client_ca.client("alice");
    let mallory = other_ca.client("mallory");
    let site = Site::start_with(
        "tls",
        &tls_manifests(&server, &client_ca),
        &["--https-addr", "127.0.0.1:0"],
    )
    .await;
    let https = site.sluice.https.expect("the HTTPS listener");

    let get =
        |host: &str, headers: &str| format!("GET /page HTTP/1.1\r\nHost: {host}\r\n{headers}\r\n");
    let no_certificate = Via {
        sni: "open.example",
        identity: None,
    };
    let as_alice = Via {
        sni: "m.example",
        identity: Some(&alice),
    };
    let cases: Vec<(Via, Case)> = vec![
        (
            no_certificate,
            Case::new(
                "no-certificate-forges-on-open-host",
                "a client with no certificate claims a verified one on a host that asks for none",
                get("open.example", FORGED),
            )
            .answers(&[200])
            .reaches(vec![absent("ssl-client-verify"), absent("ssl-client-subject-dn")]),
        ),
        (
            Via {
                sni: "open.example",
                identity: None,
            },
            Case::new(
                "no-certificate-fronts-protected-host",
                "a connection made for the open host, with forged headers, asking for the protected one",
                get("m.example", FORGED),
            )
            .answers(&[421]),
        ),
        (
            as_alice,
            Case::new(
                "verified-client-forges-another-subject",
                "a verified client claims another subject (and a failed verification): only its own verified subject arrives",
                get(
                    "m.example",
                    "ssl-client-subject-dn: CN=admin\r\nssl-client-verify: FAILED\r\n",
                ),
            )
            .answers(&[200])
            .reaches(vec![
                header_contains("ssl-client-subject-dn", "CN=alice"),
                header("ssl-client-verify", "SUCCESS"),
                not_on_wire("CN=admin"),
            ]),
        ),
        (
            Via {
                sni: "m.example",
                identity: Some(&alice),
            },
            Case::new(
                "verified-client-forges-on-open-host",
                "a verified connection reused for the open host: nothing is vouched for there, forged or not",
                get("open.example", FORGED),
            )
            .answers(&[200])
            .reaches(vec![absent("ssl-client-verify"), absent("ssl-client-subject-dn")]),
        ),
        (
            Via {
                sni: "m.example",
                identity: None,
            },
            Case::new(
                "no-certificate-on-protected-host",
                "no certificate where one is required, with forged headers: the handshake or the request fails",
                get("m.example", FORGED),
            )
            .answers_nothing()
            .or()
            .answers(&[403]),
        ),
        (
            Via {
                sni: "m.example",
                identity: Some(&mallory),
            },
            Case::new(
                "certificate-from-another-ca",
                "a certificate from another CA, with forged headers",
                get("m.example", FORGED),
            )
            .answers_nothing()
            .or()
            .answers(&[403]),
        ),
    ];

    let mut failures = Vec::new();
    let total = cases.len() + 2;
    for (via, case) in &cases {
        site.backend.reset();
        let options = ClientOptions {
            trust: Some(&server_ca),
            identity: via.identity,
            ..ClientOptions::default()
        };
        let exchange = match connect(https, Some(via.sni), &options).await {
            Ok(stream) => raw::exchange_on(stream, &case.request, None).await,
            // A refused handshake: no answer, connection closed.
            Err(_) => raw::Exchange {
                closed: true,
                closed_after: Some(Duration::ZERO),
                ..raw::Exchange::default()
            },
        };
        let view = site.backend.settle(BACKEND_QUIET, Duration::from_secs(2));
        failures.extend(judge("tls", case, &exchange, &view));
    }

    // The same forgery over plain HTTP to the open host.
    site.backend.reset();
    let plain = Case::new(
        "plain-http-forges",
        "forged client-certificate headers over plain HTTP",
        get("open.example", FORGED),
    )
    .answers(&[200])
    .reaches(vec![
        absent("ssl-client-verify"),
        absent("ssl-client-subject-dn"),
    ]);
    let exchange = raw::exchange(site.http(), &plain.request).await;
    let view = site.backend.settle(BACKEND_QUIET, Duration::from_secs(2));
    failures.extend(judge("tls", &plain, &exchange, &view));

    // And over h2 (ALPN), with no certificate.
    site.backend.reset();
    let options = ClientOptions {
        trust: Some(&server_ca),
        alpn: &[b"h2"],
        ..ClientOptions::default()
    };
    let stream = connect(https, Some("open.example"), &options)
        .await
        .expect("an h2 TLS connection");
    let mut connection = h2::Connection::start(stream).await;
    connection
        .send(&h2::headers(
            1,
            &[
                (":method", "GET"),
                (":scheme", "https"),
                (":authority", "open.example"),
                (":path", "/page"),
                ("ssl-client-verify", "SUCCESS"),
                ("ssl-client-subject-dn", "CN=admin"),
            ],
            true,
        ))
        .await
        .expect("send the request");
    let outcome = connection.outcome(1, Duration::from_secs(5)).await;
    let view = site.backend.settle(BACKEND_QUIET, Duration::from_secs(2));
    let status = match &outcome {
        h2::Outcome::Response { status, .. } => Some(*status),
        _ => None,
    };
    let stripped = Upstream::Requests(vec![vec![
        absent("ssl-client-verify"),
        absent("ssl-client-subject-dn"),
    ]]);
    match (status, judge_upstream(&stripped, &view)) {
        (Some(200), Ok(())) => println!("tls/h2-forges: ok: {}", view.describe()),
        (_, verdict) => {
            let failure = format!(
                "tls/h2-forges (forged client-certificate headers over h2 with no certificate):\n  expected: status 200 and {verdict:?}\n  the client got {outcome:?}\n  {}",
                view.describe()
            );
            println!("{failure}");
            failures.push(failure);
        }
    }
    finish("tls", total, &failures);
}
