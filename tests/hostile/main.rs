//! The hostile-input suite (issue 19): the real `sluice` binary in standalone mode, driven
//! over raw TCP and raw HTTP/2 frames, in front of a backend that records every byte that
//! reaches it. Every case names what it guards against and asserts both what the client
//! got (a status, or the connection closed) and what the backend received, or that it
//! received nothing.
//!
//! The site every theme starts: `members.test` is behind Basic auth (`ada`, `s3cret`)
//! except its open `/public` path; `public.test` is open; a hostless Ingress sends `/` of
//! any other host to the same backend. A request that slips past the Auth, the router or
//! the canonical request target shows up at the backend.
//!
//! Adding a case is one table entry in the theme's module (see `cases::Case`).

#[path = "../support/mod.rs"]
mod support;

mod cases;
mod connections;
mod forwarding;
mod framing;
mod headers;
mod hop_by_hop;
mod http2;
mod listeners;
mod paths;
mod slow;
mod tls;
mod upgrades;
mod uploads;

use std::net::SocketAddr;
use std::time::Duration;

use support::raw::{self, RawBackend};
use support::{INGRESS_CLASS, ManifestDir, Sluice, service_yaml};

pub const USER: &str = "ada";
pub const PASSWORD: &str = "s3cret";

/// Cases that time Sluice's deadlines to a fraction of a second hold this for reading;
/// the connection flood, which keeps both cores busy for seconds, holds it for writing, so
/// it never runs beside them.
pub static TIMED: tokio::sync::RwLock<()> = tokio::sync::RwLock::const_new(());

/// `Authorization` with the site's good Basic credentials.
pub fn credentials() -> String {
    basic(USER, PASSWORD)
}

/// `Authorization` for Basic credentials.
pub fn basic(user: &str, password: &str) -> String {
    use base64::Engine;
    let encoded = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
    format!("Basic {encoded}")
}

/// A request the backend must never see: the protected host's `/admin`, without
/// credentials. Smuggling cases hide it in bodies and after bodies.
pub const SMUGGLED: &str = "GET /admin HTTP/1.1\r\nHost: members.test\r\n\r\n";

/// Sluice in front of a raw backend, on the site's manifests.
pub struct Site {
    pub sluice: Sluice,
    pub backend: RawBackend,
    _dir: ManifestDir,
}

impl Site {
    /// Starts Sluice with `args` on the site's manifests.
    pub async fn start(name: &str, args: &[&str]) -> Site {
        Site::start_with(name, "", args).await
    }

    /// Starts Sluice with `args` on the site's manifests plus `extra` YAML (which may route
    /// to the Service `raw`, the backend). Header reads are cut off after 1 s and upstream
    /// answers after 3 s, so no case can hang; endpoints are never ejected, so the
    /// failures one case provokes cannot change the answers of the next. A flag in `args`
    /// replaces the default of the same name.
    pub async fn start_with(name: &str, extra: &str, args: &[&str]) -> Site {
        let backend = RawBackend::start();
        let dir = ManifestDir::new(&format!("hostile-{name}"));
        dir.write("class.yaml", INGRESS_CLASS);
        dir.write("site.yaml", &site_manifests(backend.addr));
        if !extra.is_empty() {
            dir.write("extra.yaml", extra);
        }
        let defaults = [
            ("--header-read-timeout", "1s"),
            ("--request-timeout", "3s"),
            ("--eject-after", "1000000"),
        ];
        let mut all: Vec<&str> = defaults
            .iter()
            .filter(|(flag, _)| !args.contains(flag))
            .flat_map(|(flag, value)| [*flag, *value])
            .collect();
        all.extend_from_slice(args);
        let sluice = Sluice::start(&dir.0, &all).await;
        Site {
            sluice,
            backend,
            _dir: dir,
        }
    }

    pub fn http(&self) -> SocketAddr {
        self.sluice.http
    }

    /// Panics unless an ordinary request is still served end to end: whatever a theme
    /// threw at Sluice, it did not crash or wedge it.
    pub async fn assert_still_serves(&self, theme: &str) {
        self.backend.reset();
        let exchange = raw::exchange(
            self.http(),
            b"GET /still-serving HTTP/1.1\r\nHost: public.test\r\n\r\n",
        )
        .await;
        assert_eq!(
            exchange.statuses(),
            [200],
            "{theme}: an ordinary request after the theme: {}",
            exchange.describe()
        );
        let view = self.backend.wait_for_requests(1, Duration::from_secs(2));
        assert!(
            view.requests
                .iter()
                .any(|request| request.target() == "/still-serving"),
            "{theme}: {}",
            view.describe()
        );
        let ready = self.sluice.admin_get("/readyz").await.map(|r| r.status);
        assert_eq!(ready, Ok(200), "{theme}: /readyz after the theme");
    }

    /// The Sluice process's resident memory, in KiB.
    pub fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.sluice.pid()))
            .expect("read /proc/PID/status");
        status
            .lines()
            .find_map(|line| line.strip_prefix("VmRSS:"))
            .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmRSS")
    }
}

/// An Ingress in `default` with one rule (for `host`, or any host) whose `paths` (Prefix)
/// go to the Service `raw`.
pub fn ingress(
    name: &str,
    host: Option<&str>,
    paths: &[&str],
    annotations: &[(&str, &str)],
) -> String {
    let mut yaml = format!(
        "---\napiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata:\n  name: {name}\n  namespace: default\n  creationTimestamp: \"2024-01-01T00:00:00Z\"\n"
    );
    if !annotations.is_empty() {
        yaml.push_str("  annotations:\n");
        for (key, value) in annotations {
            yaml.push_str(&format!("    {key}: \"{value}\"\n"));
        }
    }
    yaml.push_str("spec:\n  ingressClassName: sluice\n  rules:\n");
    match host {
        Some(host) => yaml.push_str(&format!("  - host: {host}\n    http:\n")),
        None => yaml.push_str("  - http:\n"),
    }
    yaml.push_str("      paths:\n");
    for path in paths {
        yaml.push_str(&format!(
            "      - {{path: \"{path}\", pathType: Prefix, backend: {{service: {{name: raw, port: {{number: 80}}}}}}}}\n"
        ));
    }
    yaml
}

fn site_manifests(backend: SocketAddr) -> String {
    let hash = bcrypt::hash(PASSWORD, 4).expect("bcrypt");
    let mut yaml = service_yaml("default", "raw", 80, &[backend], &[]);
    yaml += &format!(
        "---\napiVersion: v1\nkind: Secret\nmetadata: {{name: htpasswd, namespace: default}}\nstringData:\n  auth: |\n    {USER}:{hash}\n"
    );
    yaml += "---\napiVersion: sluice.dev/v1alpha1\nkind: Auth\nmetadata: {name: members, namespace: default}\nspec:\n  basic: {secretRef: {name: htpasswd}, realm: members}\n";
    yaml += &ingress(
        "members",
        Some("members.test"),
        &["/"],
        &[("sluice.dev/auth", "members")],
    );
    yaml += &ingress("members-public", Some("members.test"), &["/public"], &[]);
    yaml += &ingress("public", Some("public.test"), &["/"], &[]);
    yaml += &ingress("any-host", None, &["/"], &[]);
    yaml
}
