//! The Auth custom resource on the real API server: credentials from a Secret, status
//! conditions, rotation and a bad Secret, and a missing policy failing closed.

use std::time::Duration;

use base64::Engine;
use bytes::Bytes;
use k8s_openapi::api::core::v1::Secret;
use kube::Api;
use serde_json::json;
use sluice_crds::Auth;

use crate::harness::{Cluster, apply, eventually, ingress_json, policy_condition};
use crate::support::jwt::{ISSUER, JWKS, JWKS_OTHER, claims, now, rs256, sign};
use crate::support::{self, Sluice};

const SECOND: Duration = Duration::from_secs(1);

fn basic(user: &str, password: &str) -> String {
    let encoded = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
    format!("Basic {encoded}")
}

async fn status_with(sluice: &Sluice, host: &str, authorization: Option<&str>) -> u16 {
    let headers: Vec<(&str, &str)> = authorization
        .map(|value| vec![("authorization", value)])
        .unwrap_or_default();
    support::send(sluice.http, "GET", host, "/", &headers, Bytes::new())
        .await
        .map(|reply| reply.status)
        .unwrap_or(0)
}

/// `(status, reason)` of the Auth's condition `type_`.
fn condition(policy: &Auth, type_: &str) -> Option<(String, String)> {
    policy_condition(policy.status.as_ref(), type_)
}

fn htpasswd(ns: &str, text: &str) -> serde_json::Value {
    json!({
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "htpasswd", "namespace": ns},
        "stringData": {"auth": text},
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a Kubernetes API server: run e2e/run"]
async fn e2e_12_an_auth_policy_guards_an_ingress_and_a_missing_one_fails_closed() {
    let cluster = Cluster::connect().await;
    let (ns, _echo) = cluster.namespace_with_web("auth", "127.0.0.171").await;
    let class = "e2e-auth";
    let secrets: Api<Secret> = Api::namespaced(cluster.client.clone(), &ns);
    let first = bcrypt::hash("first-password", 4).expect("bcrypt");
    apply(
        &secrets,
        "htpasswd",
        htpasswd(&ns, &format!("ada:{first}\n")),
    )
    .await;
    let auths: Api<Auth> = Api::namespaced(cluster.client.clone(), &ns);
    apply(
        &auths,
        "members",
        json!({"apiVersion": "sluice.dev/v1alpha1", "kind": "Auth",
               "metadata": {"name": "members", "namespace": ns},
               "spec": {"basic": {"secretRef": {"name": "htpasswd"}, "realm": "members"}}}),
    )
    .await;
    // The API server applies the CRD's rules: an Auth with nothing in it is refused.
    let empty = auths
        .patch(
            "empty",
            &kube::api::PatchParams::apply("sluice-e2e").force(),
            &kube::api::Patch::Apply(&json!({"apiVersion": "sluice.dev/v1alpha1", "kind": "Auth",
                "metadata": {"name": "empty", "namespace": ns}, "spec": {}})),
        )
        .await
        .expect_err("an empty Auth is refused");
    assert!(
        empty.to_string().contains("needs at least one of"),
        "{empty}"
    );

    let annotated = |name: &str, host: &str, policy: &str| {
        let mut ingress = ingress_json(&ns, name, class, host, &[("/", "web")], "http");
        ingress["metadata"]["annotations"] = json!({"sluice.dev/auth": policy});
        ingress
    };
    apply(
        &cluster.ingresses(&ns),
        "guarded",
        annotated("guarded", "guarded.e2e.test", "members"),
    )
    .await;
    apply(
        &cluster.ingresses(&ns),
        "orphan",
        annotated("orphan", "orphan.e2e.test", "nowhere"),
    )
    .await;
    let sluice = cluster
        .sluice(
            class,
            &["--leader-elect=false", "--publish-address", "203.0.113.12"],
        )
        .await;
    let right = basic("ada", "first-password");
    eventually(5 * SECOND, "the guarded Ingress is served", async || {
        status_with(&sluice, "guarded.e2e.test", Some(&right)).await == 200
    })
    .await;
    assert_eq!(status_with(&sluice, "guarded.e2e.test", None).await, 401);
    assert_eq!(
        status_with(&sluice, "guarded.e2e.test", Some(&basic("ada", "guess"))).await,
        401
    );
    // A missing policy: 503, not open access, and an Event saying why.
    assert_eq!(
        status_with(&sluice, "orphan.e2e.test", Some(&right)).await,
        503
    );
    eventually(
        10 * SECOND,
        "a PolicyNotFound Event on the orphan",
        async || {
            cluster
                .events_about(&ns, "orphan")
                .await
                .iter()
                .any(|event| event.reason.as_deref() == Some("PolicyNotFound"))
        },
    )
    .await;
    eventually(
        10 * SECOND,
        "Accepted and Programmed on the Auth",
        async || {
            auths.get("members").await.ok().is_some_and(|policy| {
                condition(&policy, "Accepted") == Some(("True".into(), "Accepted".into()))
                    && condition(&policy, "Programmed")
                        == Some(("True".into(), "Programmed".into()))
            })
        },
    )
    .await;

    // A new password through the API server: served without a restart.
    let second = bcrypt::hash("second-password", 4).expect("bcrypt");
    apply(
        &secrets,
        "htpasswd",
        htpasswd(&ns, &format!("ada:{second}\n")),
    )
    .await;
    let rotated = basic("ada", "second-password");
    let took = eventually(5 * SECOND, "the rotated password is accepted", async || {
        status_with(&sluice, "guarded.e2e.test", Some(&rotated)).await == 200
    })
    .await;
    assert_eq!(
        status_with(&sluice, "guarded.e2e.test", Some(&right)).await,
        401,
        "the old password is refused"
    );
    println!("htpasswd rotation enforced {took:?} after the apply");

    // A bad edit (plain text): the last good credentials stay enforced, the Auth says why.
    apply(&secrets, "htpasswd", htpasswd(&ns, "ada:plain-text\n")).await;
    eventually(10 * SECOND, "InvalidSecret on the Auth", async || {
        auths.get("members").await.ok().is_some_and(|policy| {
            condition(&policy, "Accepted") == Some(("False".into(), "InvalidSecret".into()))
        })
    })
    .await;
    assert_eq!(
        status_with(&sluice, "guarded.e2e.test", Some(&rotated)).await,
        200
    );
    assert_eq!(
        status_with(
            &sluice,
            "guarded.e2e.test",
            Some(&basic("ada", "plain-text"))
        )
        .await,
        401
    );
}

fn jwks_secret(ns: &str, document: &str) -> serde_json::Value {
    json!({
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "jwks", "namespace": ns},
        "stringData": {"jwks.json": document},
    })
}

/// A JWT Auth with its key set in a Secret, through the real API server: accepted, tokens
/// verified with their claims sent upstream, and a rotated key set applied live.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a Kubernetes API server: run e2e/run"]
async fn e2e_13_a_jwt_auth_verifies_tokens_and_its_key_set_rotates_live() {
    let cluster = Cluster::connect().await;
    let (ns, _echo) = cluster.namespace_with_web("jwt", "127.0.0.172").await;
    let class = "e2e-jwt";
    let secrets: Api<Secret> = Api::namespaced(cluster.client.clone(), &ns);
    apply(&secrets, "jwks", jwks_secret(&ns, JWKS)).await;
    let auths: Api<Auth> = Api::namespaced(cluster.client.clone(), &ns);
    apply(
        &auths,
        "tokens",
        json!({"apiVersion": "sluice.dev/v1alpha1", "kind": "Auth",
               "metadata": {"name": "tokens", "namespace": ns},
               "spec": {"jwt": {"issuer": ISSUER, "audiences": ["shop"],
                                "jwksSecretRef": {"name": "jwks"},
                                "algorithms": ["RS256", "ES256"],
                                "claimsToHeaders": {"sub": "X-User"}}}}),
    )
    .await;
    let mut ingress = ingress_json(&ns, "api", class, "api.e2e.test", &[("/", "web")], "http");
    ingress["metadata"]["annotations"] = json!({"sluice.dev/auth": "tokens"});
    apply(&cluster.ingresses(&ns), "api", ingress).await;
    let sluice = cluster
        .sluice(
            class,
            &["--leader-elect=false", "--publish-address", "203.0.113.13"],
        )
        .await;
    let bearer = |token: &str| format!("Bearer {token}");
    let first = bearer(&rs256(&claims("e2e-1")));
    eventually(5 * SECOND, "a valid token is let through", async || {
        status_with(&sluice, "api.e2e.test", Some(&first)).await == 200
    })
    .await;
    let reply = support::send(
        sluice.http,
        "GET",
        "api.e2e.test",
        "/",
        &[("authorization", first.as_str()), ("x-user", "mallory")],
        Bytes::new(),
    )
    .await
    .expect("reply");
    assert_eq!(
        reply.echo()["headers"]["x-user"],
        "ada",
        "the claim, not the client's"
    );
    let es256 = bearer(&sign(
        jsonwebtoken::Algorithm::ES256,
        "ec-1",
        &claims("e2e-2"),
    ));
    assert_eq!(
        status_with(&sluice, "api.e2e.test", Some(&es256)).await,
        200
    );
    let mut expired = claims("e2e-3");
    expired["exp"] = json!(now() - 300);
    assert_eq!(
        status_with(&sluice, "api.e2e.test", Some(&bearer(&rs256(&expired)))).await,
        401
    );
    assert_eq!(status_with(&sluice, "api.e2e.test", None).await, 401);
    eventually(
        10 * SECOND,
        "Accepted and Programmed on the Auth",
        async || {
            auths.get("tokens").await.ok().is_some_and(|policy| {
                condition(&policy, "Accepted") == Some(("True".into(), "Accepted".into()))
                    && condition(&policy, "Programmed")
                        == Some(("True".into(), "Programmed".into()))
            })
        },
    )
    .await;

    // The issuer rotates its keys: the new set through the API server, no restart.
    apply(&secrets, "jwks", jwks_secret(&ns, JWKS_OTHER)).await;
    let rotated = bearer(&sign(
        jsonwebtoken::Algorithm::RS256,
        "rsa-2",
        &claims("e2e-4"),
    ));
    let took = eventually(
        5 * SECOND,
        "a token of the new key is accepted",
        async || status_with(&sluice, "api.e2e.test", Some(&rotated)).await == 200,
    )
    .await;
    assert_eq!(
        status_with(&sluice, "api.e2e.test", Some(&first)).await,
        401,
        "the old key is gone"
    );
    println!("JWKS Secret rotation enforced {took:?} after the apply");

    // A key set that is not one: the Auth says so, the last good set keeps working.
    apply(&secrets, "jwks", jwks_secret(&ns, "{\"keys\": 7}")).await;
    eventually(10 * SECOND, "InvalidSecret on the Auth", async || {
        auths.get("tokens").await.ok().is_some_and(|policy| {
            condition(&policy, "Accepted") == Some(("False".into(), "InvalidSecret".into()))
        })
    })
    .await;
    assert_eq!(
        status_with(&sluice, "api.e2e.test", Some(&rotated)).await,
        200
    );
}
