//! Ingress paths as written and request paths as clients spell them, on the real binary in
//! standalone mode: a path is guarded however either side encodes it.

mod support;

use std::time::Duration;

use bytes::Bytes;
use support::{Echo, INGRESS_CLASS, ManifestDir, Sluice, service_yaml};

/// Ingress `name` on host `paths.test` routing each of `paths` (Prefix) to Service `up`.
fn ingress(name: &str, created: &str, annotations: &str, paths: &[&str]) -> String {
    let paths: String = paths
        .iter()
        .map(|path| {
            format!(
                "      - {{path: \"{path}\", pathType: Prefix, backend: {{service: {{name: up, port: {{number: 80}}}}}}}}\n"
            )
        })
        .collect();
    format!(
        "---\napiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata:\n  name: {name}\n  namespace: default\n  creationTimestamp: \"{created}\"\n  annotations: {{{annotations}}}\nspec:\n  ingressClassName: sluice\n  rules:\n  - host: paths.test\n    http:\n      paths:\n{paths}"
    )
}

/// `Authorization` for Basic credentials.
fn basic_authorization(user: &str, password: &str) -> String {
    use base64::Engine;
    let encoded = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
    format!("Basic {encoded}")
}

/// The defect: `/café` was stored as written while requests arrive as `/caf%C3%A9`, so a
/// request for the guarded page matched the unguarded `/` of another Ingress and was
/// served without credentials. `/%61dmin` is the same defect the other way round.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn guarded_non_ascii_and_encoded_paths_are_guarded_for_their_requests() {
    let echo = Echo::start(&["127.0.0.191"]);
    let dir = ManifestDir::new("paths");
    dir.write("class.yaml", INGRESS_CLASS);
    let hash = bcrypt::hash("s3cret", 4).unwrap();
    let mut objects = service_yaml("default", "up", 80, &echo.addrs, &[]);
    objects += &format!(
        "---\napiVersion: v1\nkind: Secret\nmetadata:\n  name: htpasswd\n  namespace: default\nstringData:\n  auth: |\n    ada:{hash}\n"
    );
    objects += "---\napiVersion: sluice.dev/v1alpha1\nkind: Auth\nmetadata:\n  name: members\n  namespace: default\nspec:\n  basic: {secretRef: {name: htpasswd}, realm: shop}\n";
    objects += &ingress(
        "guarded",
        "2024-01-01T00:00:00Z",
        "sluice.dev/auth: members",
        &["/café", "/%61dmin"],
    );
    objects += &ingress("open", "2024-01-02T00:00:00Z", "", &["/"]);
    dir.write("objects.yaml", &objects);
    let sluice = Sluice::start(&dir.0, &[]).await;
    let get = |path: &'static str, headers: Vec<(&'static str, String)>| {
        let addr = sluice.http;
        async move {
            let headers: Vec<(&str, &str)> = headers
                .iter()
                .map(|(name, value)| (*name, value.as_str()))
                .collect();
            support::send(addr, "GET", "paths.test", path, &headers, Bytes::new())
                .await
                .unwrap()
        }
    };

    for path in [
        "/caf%C3%A9",
        "/caf%c3%a9",
        "/caf%C3%A9/menu",
        "/admin",
        "/%61dmin/users",
    ] {
        let refused = get(path, vec![]).await;
        assert_eq!(refused.status, 401, "{path}: {}", refused.body);
    }
    let passed = get(
        "/caf%C3%A9",
        vec![("authorization", basic_authorization("ada", "s3cret"))],
    )
    .await;
    assert_eq!(passed.status, 200, "{}", passed.body);
    assert_eq!(passed.echo()["uri"], "/caf%C3%A9");
    assert_eq!(get("/cafe", vec![]).await.status, 200, "the open route");

    // The path written other than requests spell it is served, and said so.
    let ready = sluice.admin_get("/readyz?verbose").await.unwrap();
    assert!(
        ready.body.contains(
            "Ingress default/guarded: spec.rules[0].http.paths[1].path: path \"/%61dmin\" is served as \"/admin\""
        ),
        "{}",
        ready.body
    );
    assert!(!ready.body.contains("paths[0].path"), "{}", ready.body);
}

/// `sluice check` names a path it serves other than as written, and one it refuses.
#[test]
fn check_reports_paths_served_canonical_and_paths_refused() {
    let dir = ManifestDir::new("paths-check");
    dir.write("class.yaml", INGRESS_CLASS);
    let mut objects = service_yaml("default", "up", 80, &[], &[]);
    objects += &ingress(
        "odd",
        "2024-01-01T00:00:00Z",
        "",
        &["/a//b", "/a/%2e%2e/etc", "/ok"],
    );
    dir.write("objects.yaml", &objects);
    let started = std::time::Instant::now();
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(["check", "--manifests"])
        .arg(&dir.0)
        .output()
        .unwrap();
    assert!(started.elapsed() < Duration::from_secs(30));
    let out = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(1), "{out}");
    assert!(
        out.contains(
            "Ingress default/odd: spec.rules[0].http.paths[0].path: path \"/a//b\" is served as \"/a/b\""
        ),
        "{out}"
    );
    assert!(
        out.lines().any(|line| line
            .starts_with("error: Ingress default/odd: spec.rules[0].http.paths[1].path: path \"/a/%2e%2e/etc\" is not valid")),
        "{out}"
    );
    assert!(
        out.contains("1 Ingresses of class \"sluice\" accepted"),
        "{out}"
    );
}
