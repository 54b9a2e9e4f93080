//! Forwarding headers: what a client claims about itself (`X-Forwarded-*`, `Forwarded`,
//! `X-Real-IP`) and the URL overrides frameworks obey (`X-Original-URL`, `X-Rewrite-URL`).
//! From an untrusted peer they are replaced or removed before the backend sees them; from
//! a trusted proxy (`--trusted-proxies`) the chain is extended and the rest kept, as the
//! README documents.

use crate::Site;
use crate::cases::{Case, absent, header, run, target};

/// `GET /page` on the open host with these extra header lines.
fn public(headers: &str) -> String {
    format!("GET /page HTTP/1.1\r\nHost: public.test\r\n{headers}\r\n")
}

const FORGED: &str = "X-Forwarded-For: 1.2.3.4\r\nX-Forwarded-For: 5.6.7.8\r\nX-Forwarded-Proto: https\r\nX-Forwarded-Host: evil.example\r\nX-Forwarded-Port: 443\r\nX-Forwarded-Prefix: /evil\r\nForwarded: for=1.2.3.4;host=evil.example;proto=https\r\nX-Real-IP: 1.2.3.4\r\nX-Original-URL: /admin\r\nX-Rewrite-URL: /admin\r\nX-Forwarded-Scheme: https\r\nX-Forwarded-Ssl: on\r\nX-Host: evil.example\r\nX-Forwarded-Server: evil.example\r\nTrue-Client-IP: 1.2.3.4\r\nX-Client-IP: 1.2.3.4\r\nCF-Connecting-IP: 1.2.3.4\r\n";

fn untrusted_cases(port: u16) -> Vec<Case> {
    let port = port.to_string();
    let sluice_says = || {
        vec![
            header("x-forwarded-for", "127.0.0.1"),
            header("x-real-ip", "127.0.0.1"),
            header("x-forwarded-proto", "http"),
            header("x-forwarded-host", "public.test"),
            header("x-forwarded-port", port.clone()),
        ]
    };
    let mut all_replaced = sluice_says();
    all_replaced.extend([
        absent("forwarded"),
        absent("x-forwarded-prefix"),
        absent("x-original-url"),
        absent("x-rewrite-url"),
        absent("x-forwarded-scheme"),
        absent("x-forwarded-ssl"),
        absent("x-host"),
        absent("x-forwarded-server"),
        absent("true-client-ip"),
        absent("x-client-ip"),
        absent("cf-connecting-ip"),
    ]);
    vec![
        Case::new(
            "all-forged",
            "every forwarding header and URL override forged by a client that is no proxy",
            public(FORGED),
        )
        .answers(&[200])
        .reaches(all_replaced),
        Case::new(
            "forged-upper-case",
            "the same forgeries with upper-case names",
            public(&FORGED.to_ascii_uppercase()),
        )
        .answers(&[200])
        .reaches(sluice_says()),
        Case::new(
            "original-url-on-open-path",
            "X-Original-URL: /admin on the protected host's open path (IIS, Symfony and Spring route by it)",
            "GET /public/x HTTP/1.1\r\nHost: members.test\r\nX-Original-URL: /admin\r\nX-Rewrite-URL: /admin\r\n\r\n",
        )
        .answers(&[200])
        .reaches(vec![
            target("/public/x"),
            absent("x-original-url"),
            absent("x-rewrite-url"),
        ]),
        Case::new(
            "forwarded-host-names-protected-host",
            "X-Forwarded-Host and Forwarded naming the protected host on a request to the open one",
            public("X-Forwarded-Host: members.test\r\nForwarded: host=members.test\r\n"),
        )
        .answers(&[200])
        .reaches(vec![
            header("x-forwarded-host", "public.test"),
            absent("forwarded"),
        ]),
        Case::new(
            "client-certificate-headers-over-http",
            "ssl-client-verify and ssl-client-subject-dn forged over plain HTTP",
            public("ssl-client-verify: SUCCESS\r\nssl-client-subject-dn: CN=admin\r\nSSL-Client-Verify: SUCCESS\r\n"),
        )
        .answers(&[200])
        .reaches(vec![absent("ssl-client-verify"), absent("ssl-client-subject-dn")]),
    ]
}

fn trusted_cases(port: u16) -> Vec<Case> {
    let port = port.to_string();
    vec![
        Case::new(
            "chain-extended",
            "a trusted proxy's X-Forwarded-For is extended with the peer; X-Real-IP names the client",
            public("X-Forwarded-For: 1.2.3.4\r\n"),
        )
        .answers(&[200])
        .reaches(vec![
            header("x-forwarded-for", "1.2.3.4, 127.0.0.1"),
            header("x-real-ip", "1.2.3.4"),
        ]),
        Case::new(
            "chain-of-two-fields",
            "two X-Forwarded-For fields are one chain, extended once",
            public("X-Forwarded-For: 1.2.3.4\r\nX-Forwarded-For: 5.6.7.8\r\n"),
        )
        .answers(&[200])
        .reaches(vec![
            header("x-forwarded-for", "1.2.3.4, 5.6.7.8, 127.0.0.1"),
            header("x-real-ip", "5.6.7.8"),
        ]),
        Case::new(
            "chain-with-garbage",
            "garbage in the chain stops the walk: the client is the peer, never what is left of it",
            public("X-Forwarded-For: 1.2.3.4, nonsense\r\n"),
        )
        .answers(&[200])
        .reaches(vec![
            header("x-forwarded-for", "1.2.3.4, nonsense, 127.0.0.1"),
            header("x-real-ip", "127.0.0.1"),
        ]),
        Case::new(
            "proto-host-port-kept",
            "a trusted proxy's X-Forwarded-Proto, -Host and -Port are kept",
            public("X-Forwarded-Proto: https\r\nX-Forwarded-Host: shop.example\r\nX-Forwarded-Port: 443\r\n"),
        )
        .answers(&[200])
        .reaches(vec![
            header("x-forwarded-proto", "https"),
            header("x-forwarded-host", "shop.example"),
            header("x-forwarded-port", "443"),
        ]),
        Case::new(
            "url-overrides-kept",
            "a trusted proxy's Forwarded and URL overrides are kept",
            public("Forwarded: for=1.2.3.4\r\nX-Original-URL: /page\r\n"),
        )
        .answers(&[200])
        .reaches(vec![
            header("forwarded", "for=1.2.3.4"),
            header("x-original-url", "/page"),
        ]),
        Case::new(
            "nothing-claimed",
            "without forwarding headers, even a trusted proxy gets Sluice's own",
            public(""),
        )
        .answers(&[200])
        .reaches(vec![
            header("x-forwarded-for", "127.0.0.1"),
            header("x-real-ip", "127.0.0.1"),
            header("x-forwarded-proto", "http"),
            header("x-forwarded-host", "public.test"),
            header("x-forwarded-port", port),
        ]),
        Case::new(
            "client-certificate-headers-from-trusted-proxy",
            "only Sluice vouches for client certificates, whoever the peer is",
            public("ssl-client-verify: SUCCESS\r\nssl-client-subject-dn: CN=admin\r\n"),
        )
        .answers(&[200])
        .reaches(vec![absent("ssl-client-verify"), absent("ssl-client-subject-dn")]),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarding_headers_from_untrusted_peers_are_replaced_or_removed() {
    let site = Site::start("forwarding-untrusted", &[]).await;
    run(
        &site,
        "forwarding-untrusted",
        &untrusted_cases(site.http().port()),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarding_headers_from_trusted_proxies_are_extended_or_kept() {
    let site = Site::start("forwarding-trusted", &["--trusted-proxies", "127.0.0.0/8"]).await;
    run(
        &site,
        "forwarding-trusted",
        &trusted_cases(site.http().port()),
    )
    .await;
}

/// Underscore look-alikes of the fields Sluice vouches for. CGI-style gateways (PHP-FPM,
/// WSGI, Rack, many Go and Node adapters) read `X_Forwarded_For` and `X-Forwarded-For` as
/// the same variable, so a look-alike the client wrote beside (or instead of) Sluice's
/// field can win at the backend. Sluice's Auth already removes look-alikes of the identity
/// fields it sets (`dataplane/src/auth/mod.rs`, `same_but_underscores`); these are the
/// proxy's own fields.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn underscore_look_alikes_of_vouched_fields_do_not_reach_the_backend() {
    let site = Site::start("look-alikes", &[]).await;
    let cases = vec![
        Case::new(
            "client-certificate-look-alikes",
            "ssl_client_verify and ssl_client_subject_dn, read as ssl-client-verify and ssl-client-subject-dn behind a CGI-style gateway",
            public("ssl_client_verify: SUCCESS\r\nssl_client_subject_dn: CN=admin\r\n"),
        )
        .answers(&[200])
        .reaches(vec![
            absent("ssl_client_verify"),
            absent("ssl_client_subject_dn"),
        ]),
        Case::new(
            "client-address-look-alikes",
            "x_forwarded_for and x_real_ip, read as the client's address behind a CGI-style gateway",
            public("X_Forwarded_For: 1.2.3.4\r\nX_Real_IP: 1.2.3.4\r\n"),
        )
        .answers(&[200])
        .reaches(vec![
            header("x-forwarded-for", "127.0.0.1"),
            absent("x_forwarded_for"),
            absent("x_real_ip"),
        ]),
        Case::new(
            "url-look-alikes",
            "x_forwarded_host, x_forwarded_proto and x_original_url, read as the request's URL behind a CGI-style gateway",
            public("X_Forwarded_Host: evil.example\r\nX_Forwarded_Proto: https\r\nX_Original_URL: /admin\r\n"),
        )
        .answers(&[200])
        .reaches(vec![
            absent("x_forwarded_host"),
            absent("x_forwarded_proto"),
            absent("x_original_url"),
        ]),
    ];
    run(&site, "look-alikes", &cases).await;
}
