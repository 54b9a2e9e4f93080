//! The Cache custom resource on the real API server: a policy accepted and programmed, an
//! annotated Ingress whose answers are stored and served again, a spec change applied
//! without a restart, and an invalid policy reported on its own status while the Ingress
//! naming it is still served (uncached: a cache fails open).

use std::time::Duration;

use bytes::Bytes;
use kube::Api;
use serde_json::json;
use sluice_crds::Cache;

use crate::harness::{Cluster, apply, eventually, ingress_json, policy_condition};
use crate::support::{self, Reply, Sluice};

const SECOND: Duration = Duration::from_secs(1);

async fn get(sluice: &Sluice, host: &str, path: &str) -> Option<Reply> {
    support::send(sluice.http, "GET", host, path, &[], Bytes::new())
        .await
        .ok()
}

fn cache_status(reply: &Reply) -> String {
    reply
        .headers
        .get("cache-status")
        .and_then(|value| value.to_str().ok())
        .unwrap_or("")
        .to_owned()
}

fn cache_json(ns: &str, name: &str, spec: serde_json::Value) -> serde_json::Value {
    json!({"apiVersion": "sluice.dev/v1alpha1", "kind": "Cache",
           "metadata": {"name": name, "namespace": ns}, "spec": spec})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a Kubernetes API server: run e2e/run"]
async fn e2e_14_a_cache_policy_stores_answers_and_a_bad_one_is_reported_not_fatal() {
    let cluster = Cluster::connect().await;
    let (ns, _echo) = cluster.namespace_with_web("cache", "127.0.0.173").await;
    let class = "e2e-cache";
    let caches: Api<Cache> = Api::namespaced(cluster.client.clone(), &ns);
    apply(
        &caches,
        "pages",
        cache_json(
            &ns,
            "pages",
            json!({"ttl": "60s", "key": ["method", "host", "path", "query"]}),
        ),
    )
    .await;
    // The API server applies the CRD's schema: a method the cache does not serve is refused.
    let refused = caches
        .patch(
            "posts",
            &kube::api::PatchParams::apply("sluice-e2e").force(),
            &kube::api::Patch::Apply(&cache_json(&ns, "posts", json!({"methods": ["POST"]}))),
        )
        .await
        .expect_err("a Cache of POSTs is refused");
    assert!(refused.to_string().contains("methods"), "{refused}");
    // Valid for the schema, refused by Sluice: the Redis layer without --redis-url.
    apply(
        &caches,
        "shared",
        cache_json(&ns, "shared", json!({"redis": {"enabled": true}})),
    )
    .await;

    let annotated = |name: &str, host: &str, policy: &str| {
        let mut ingress = ingress_json(&ns, name, class, host, &[("/", "web")], "http");
        ingress["metadata"]["annotations"] = json!({"sluice.dev/cache": policy});
        ingress
    };
    let ingresses = cluster.ingresses(&ns);
    apply(
        &ingresses,
        "cached",
        annotated("cached", "cached.e2e.test", "pages"),
    )
    .await;
    apply(
        &ingresses,
        "shared",
        annotated("shared", "shared.e2e.test", "shared"),
    )
    .await;
    let sluice = cluster
        .sluice(
            class,
            &["--leader-elect=false", "--publish-address", "203.0.113.14"],
        )
        .await;

    eventually(5 * SECOND, "the cached Ingress is served", async || {
        get(&sluice, "cached.e2e.test", "/first")
            .await
            .is_some_and(|reply| reply.status == 200)
    })
    .await;
    let hit = get(&sluice, "cached.e2e.test", "/first")
        .await
        .expect("answer");
    assert!(
        cache_status(&hit).starts_with("sluice; hit; ttl="),
        "{}",
        cache_status(&hit)
    );
    eventually(
        10 * SECOND,
        "Accepted and Programmed on the Cache",
        async || {
            caches.get("pages").await.ok().is_some_and(|policy| {
                let status = policy.status.as_ref();
                policy_condition(status, "Accepted") == Some(("True".into(), "Accepted".into()))
                    && policy_condition(status, "Programmed")
                        == Some(("True".into(), "Programmed".into()))
            })
        },
    )
    .await;

    // The invalid Cache: Accepted=False on its own status, its Ingress served uncached,
    // and the Ingress told why.
    eventually(10 * SECOND, "Accepted=False on the bad Cache", async || {
        caches.get("shared").await.ok().is_some_and(|policy| {
            policy_condition(policy.status.as_ref(), "Accepted")
                .is_some_and(|(status, _)| status == "False")
        })
    })
    .await;
    let uncached = get(&sluice, "shared.e2e.test", "/").await.expect("answer");
    assert_eq!(uncached.status, 200, "a bad Cache does not close the route");
    assert!(!uncached.headers.contains_key("cache-status"));
    eventually(
        10 * SECOND,
        "a PolicyNotAccepted Event on the Ingress",
        async || {
            cluster
                .events_about(&ns, "shared")
                .await
                .iter()
                .any(|event| event.reason.as_deref() == Some("PolicyNotAccepted"))
        },
    )
    .await;

    // A spec change through the API server takes effect without a restart: key on the
    // path only, and two queries share one entry.
    apply(
        &caches,
        "pages",
        cache_json(&ns, "pages", json!({"ttl": "60s", "key": ["path"]})),
    )
    .await;
    // A fresh path every attempt, so an entry stored by an earlier attempt proves nothing.
    let mut attempt = 0;
    let took = eventually(10 * SECOND, "the new key in force", async || {
        attempt += 1;
        let path = format!("/keyed-{attempt}");
        let Some(first) = get(&sluice, "cached.e2e.test", &format!("{path}?a=1")).await else {
            return false;
        };
        let Some(second) = get(&sluice, "cached.e2e.test", &format!("{path}?b=2")).await else {
            return false;
        };
        first.status == 200 && cache_status(&second).starts_with("sluice; hit")
    })
    .await;
    println!("Cache key change enforced {took:?} after the apply");
}
