//! Upgrades: h2c and WebSocket handshakes to the protected host are checked like any
//! request, an h2c upgrade is never tunnelled (it would hand the client a raw connection
//! to the backend, past every per-request check), and a backend that declines an upgrade
//! leaves the client connection speaking HTTP/1.1, not a blind tunnel.

use crate::cases::{Case, absent, run, target};
use crate::support::raw::h2;
use crate::{SMUGGLED, Site, basic, credentials};

const H2C: &str = "Connection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQCAAAAAAIAAAAA\r\n";
const WEBSOCKET: &str = "Connection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n";

/// `GET /socket` to `host` with these extra header lines.
fn get(host: &str, headers: &str) -> String {
    format!("GET /socket HTTP/1.1\r\nHost: {host}\r\n{headers}\r\n")
}

fn cases() -> Vec<Case> {
    let authorized = format!("Authorization: {}\r\n", credentials());
    let mut h2c_then_preface = get("members.test", &format!("{H2C}{authorized}")).into_bytes();
    h2c_then_preface.extend_from_slice(h2::PREFACE);
    h2c_then_preface.extend(h2::settings(&[]));
    h2c_then_preface.extend(h2::headers(
        1,
        &[
            (":method", "GET"),
            (":scheme", "http"),
            (":authority", "members.test"),
            (":path", "/admin"),
        ],
        true,
    ));
    vec![
        Case::new(
            "h2c-without-credentials",
            "an h2c upgrade to the protected host without credentials",
            get("members.test", H2C),
        )
        .answers(&[401]),
        Case::new(
            "h2c-post-without-credentials",
            "an h2c upgrade with a body, to the protected host without credentials",
            format!(
                "POST /socket HTTP/1.1\r\nHost: members.test\r\n{H2C}Content-Length: 5\r\n\r\nhello"
            ),
        )
        .answers(&[401]),
        Case::new(
            "websocket-without-credentials",
            "a WebSocket handshake to the protected host without credentials",
            get("members.test", WEBSOCKET),
        )
        .answers(&[401]),
        Case::new(
            "websocket-with-wrong-credentials",
            "a WebSocket handshake to the protected host with a wrong password",
            get(
                "members.test",
                &format!("{WEBSOCKET}Authorization: {}\r\n", basic("ada", "guess")),
            ),
        )
        .answers(&[401]),
        Case::new(
            "h2c-with-credentials",
            "an authorised h2c upgrade is served as plain HTTP/1.1: no 101, no Upgrade at the backend",
            get("members.test", &format!("{H2C}{authorized}")),
        )
        .answers(&[200])
        .reaches(vec![
            target("/socket"),
            absent("upgrade"),
            absent("http2-settings"),
            absent("authorization"),
        ]),
        Case::new(
            "h2c-with-credentials-then-preface",
            "an authorised h2c upgrade followed at once by HTTP/2 frames for /admin: never a tunnel, the frames are not an HTTP/1.1 request",
            h2c_then_preface,
        )
        .answers(&[200, 400])
        .closes()
        .reaches(vec![target("/socket"), absent("upgrade")])
        .or()
        .answers(&[200])
        .closes()
        .reaches(vec![target("/socket"), absent("upgrade")]),
        Case::new(
            "websocket-declined-then-request",
            "a backend that answers a WebSocket handshake with 200 leaves the connection HTTP/1.1: what follows is checked as a request",
            format!("{}{SMUGGLED}", get("public.test", WEBSOCKET)),
        )
        .answers(&[200, 401])
        .reaches(vec![target("/socket")]),
        Case::new(
            "h2c-declined-then-request",
            "an h2c upgrade to the open host is not taken: what follows is checked as a request",
            format!("{}{SMUGGLED}", get("public.test", H2C)),
        )
        .answers(&[200, 401])
        .reaches(vec![target("/socket"), absent("upgrade")]),
        Case::new(
            "connect-to-protected-host",
            "CONNECT to the protected host: no tunnels through an ingress",
            "CONNECT members.test:443 HTTP/1.1\r\nHost: members.test:443\r\n\r\n",
        )
        .answers_one_of(&[400, 401, 405]),
        Case::new(
            "connect-to-open-host",
            "CONNECT to the open host: no tunnels through an ingress",
            "CONNECT public.test:80 HTTP/1.1\r\nHost: public.test:80\r\n\r\n",
        )
        .answers_one_of(&[400, 405]),
        Case::new(
            "websocket-over-http10",
            "an upgrade in HTTP/1.0, which has none: served plainly, Upgrade not passed on",
            format!(
                "GET /socket HTTP/1.0\r\nHost: public.test\r\n{WEBSOCKET}\r\n"
            ),
        )
        .answers(&[200])
        .reaches(vec![absent("upgrade")]),
        Case::new(
            "upgrade-without-connection-upgrade",
            "Upgrade: websocket without Connection: upgrade is no handshake: Upgrade not passed on",
            get("public.test", "Connection: keep-alive\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"),
        )
        .answers(&[200])
        .reaches(vec![absent("upgrade")]),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upgrades_are_checked_and_never_tunnelled_blindly() {
    let site = Site::start("upgrades", &[]).await;
    run(&site, "upgrades", &cases()).await;
    site.assert_still_serves("upgrades").await;
}
