//! `Cache` policies through the real `sluice` binary in standalone mode, with a real HTTP
//! client, a real origin server on loopback and a real `redis-server`: what is stored and
//! served to whom, coalescing, stale serving, and the Redis layer shared by two replicas
//! with purges that reach both.

mod support;

use std::time::Duration;

use bytes::Bytes;
use support::origin::Origin;
use support::{INGRESS_CLASS, ManifestDir, Reply, Sluice, service_yaml};

/// A `Cache` named `name` in namespace default with this spec (YAML, indented two spaces).
fn cache(name: &str, spec: &str) -> String {
    format!(
        "---\napiVersion: sluice.dev/v1alpha1\nkind: Cache\nmetadata:\n  name: {name}\n  namespace: default\nspec:\n{spec}"
    )
}

/// An Ingress routing `host` to Service `origin`, cached by the Cache `policy`, plus
/// other annotations.
fn cached_ingress(host: &str, policy: &str, more: &[(&str, &str)]) -> String {
    let mut annotations = format!("    sluice.dev/cache: \"{policy}\"\n");
    for (key, value) in more {
        annotations.push_str(&format!("    {key}: \"{value}\"\n"));
    }
    format!(
        "---\napiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata:\n  name: {name}\n  namespace: default\n  annotations:\n{annotations}spec:\n  ingressClassName: sluice\n  rules:\n  - host: {host}\n    http:\n      paths:\n      - {{path: /, pathType: Prefix, backend: {{service: {{name: origin, port: {{number: 80}}}}}}}}\n",
        name = host.replace('.', "-"),
    )
}

async fn get(sluice: &Sluice, host: &str, path: &str, headers: &[(&str, &str)]) -> Reply {
    support::send(sluice.http, "GET", host, path, headers, Bytes::new())
        .await
        .expect("request through sluice")
}

fn cache_status(reply: &Reply) -> &str {
    reply
        .headers
        .get("cache-status")
        .and_then(|value| value.to_str().ok())
        .unwrap_or("")
}

fn is_hit(reply: &Reply) -> bool {
    cache_status(reply).starts_with("sluice; hit")
}

/// The series of one Cache policy's answers with `result`, in namespace default.
fn responses(policy: &str, result: &str) -> String {
    format!(
        r#"sluice_cache_responses_total{{namespace="default",policy="{policy}",result="{result}"}}"#
    )
}

/// Hits, misses and expiry; `Vary` variants kept apart; `private` and `Set-Cookie` answers
/// never served to another client (and with `allowSetCookie`, stored without the cookie);
/// `Authorization` requests neither served what others stored nor stored for others; a
/// bypass header; 304 for conditional requests; HEAD answered from a stored GET.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cache_stores_what_may_be_shared_and_serves_it_to_the_right_clients() {
    let origin = Origin::start().await;
    let dir = ManifestDir::new("cache-semantics");
    dir.write("class.yaml", INGRESS_CLASS);
    let mut objects = service_yaml("default", "origin", 80, &[origin.addr], &[]);
    objects += &cache("pages", "  ttl: 60s\n  bypass: {headers: [X-Preview]}\n");
    objects += &cache("cookies", "  ttl: 60s\n  allowSetCookie: true\n");
    objects += &cached_ingress("shop.test", "pages", &[]);
    objects += &cached_ingress("cookies.test", "cookies", &[]);
    // Members send an API key (no Authorization header); the Auth policy strips it
    // before the cache sees the request.
    objects += "---\napiVersion: v1\nkind: Secret\nmetadata:\n  name: keys\n  namespace: default\nstringData:\n  ada: key-of-ada\n  bob: key-of-bob\n";
    objects += "---\napiVersion: sluice.dev/v1alpha1\nkind: Auth\nmetadata:\n  name: members\n  namespace: default\nspec:\n  apiKey: {header: X-Api-Key, secretRef: {name: keys}}\n";
    objects += &cached_ingress("members.test", "pages", &[("sluice.dev/auth", "members")]);
    dir.write("objects.yaml", &objects);
    let sluice = Sluice::start(&dir.0, &[]).await;
    let shop = |path: &'static str, headers: &'static [(&'static str, &'static str)]| {
        get(&sluice, "shop.test", path, headers)
    };

    // A miss is stored; the next request is a hit with the same body and an Age.
    let first = shop("/a?cc=max-age=2", &[]).await;
    assert_eq!(first.status, 200, "{}", first.body);
    assert_eq!(cache_status(&first), "sluice; fwd=uri-miss; stored");
    let second = shop("/a?cc=max-age=2", &[]).await;
    assert!(is_hit(&second), "{:?}", second.headers);
    assert_eq!(second.body, first.body);
    assert!(second.headers.contains_key("age"));
    assert_eq!(origin.count("/a?cc=max-age=2"), 1);
    // HEAD is answered from the stored GET, without a body.
    let head = support::send(
        sluice.http,
        "HEAD",
        "shop.test",
        "/a?cc=max-age=2",
        &[],
        Bytes::new(),
    )
    .await
    .unwrap();
    assert!(is_hit(&head), "{:?}", head.headers);
    assert_eq!(head.body, "");
    assert_eq!(origin.count("/a?cc=max-age=2"), 1);
    // Expiry: after max-age the entry is not served.
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let expired = shop("/a?cc=max-age=2", &[]).await;
    assert!(!is_hit(&expired), "{:?}", expired.headers);
    assert!(expired.body.contains("#2"), "{}", expired.body);
    assert_eq!(origin.count("/a?cc=max-age=2"), 2);

    // Vary: Accept-Encoding keeps one variant per encoding.
    let path = "/v?vary=Accept-Encoding";
    let gzip = &[("accept-encoding", "gzip")];
    let brotli = &[("accept-encoding", "br")];
    let first_gzip = shop(path, gzip).await;
    let first_brotli = shop(path, brotli).await;
    assert!(!is_hit(&first_brotli), "another variant is a miss");
    let again_gzip = shop(path, gzip).await;
    let again_brotli = shop(path, brotli).await;
    assert!(is_hit(&again_gzip) && is_hit(&again_brotli));
    assert_eq!(again_gzip.body, first_gzip.body);
    assert!(again_gzip.body.contains("enc=gzip"), "{}", again_gzip.body);
    assert_eq!(again_brotli.body, first_brotli.body);
    assert!(
        again_brotli.body.contains("enc=br"),
        "{}",
        again_brotli.body
    );
    assert_eq!(origin.count(path), 2);

    // private and Set-Cookie: every client goes to the origin and gets its own answer.
    for (path, detail) in [("/p?cc=private", "private"), ("/c?cookie=1", "set-cookie")] {
        let one = shop(path, &[]).await;
        let other = shop(path, &[]).await;
        assert_ne!(one.body, other.body, "{path}");
        assert_eq!(
            cache_status(&other),
            format!("sluice; fwd=uri-miss; detail={detail}")
        );
        assert_eq!(origin.count(path), 2, "{path}");
    }
    let first_cookie = get(&sluice, "shop.test", "/c?cookie=1", &[]).await;
    assert_eq!(first_cookie.headers["set-cookie"], "session=user3; Path=/");
    // allowSetCookie: stored, but the cookie went to its own client only.
    let owner = get(&sluice, "cookies.test", "/c2?cookie=1", &[]).await;
    assert_eq!(owner.headers["set-cookie"], "session=user1; Path=/");
    let next = get(&sluice, "cookies.test", "/c2?cookie=1", &[]).await;
    assert!(is_hit(&next), "{:?}", next.headers);
    assert!(
        !next.headers.contains_key("set-cookie"),
        "{:?}",
        next.headers
    );
    assert_eq!(next.body, owner.body);
    // A 304 that revalidates a stored entry hands its cookie to the client that asked,
    // and the freshened entry still carries none.
    let path = "/r?etag=r1&cookie=1&cc=max-age=1";
    get(&sluice, "cookies.test", path, &[]).await;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let revalidated = get(&sluice, "cookies.test", path, &[]).await;
    assert_eq!(revalidated.status, 200);
    assert!(
        cache_status(&revalidated).starts_with("sluice; fwd=stale; fwd-status=304"),
        "{}",
        cache_status(&revalidated)
    );
    assert_eq!(revalidated.headers["set-cookie"], "session=user2; Path=/");
    let after = get(&sluice, "cookies.test", path, &[]).await;
    assert!(is_hit(&after), "{}", cache_status(&after));
    assert!(
        !after.headers.contains_key("set-cookie"),
        "{:?}",
        after.headers
    );

    // Authorization: what others stored is not served to it, its own answer is not stored
    // for others, unless the answer says it may be shared.
    let stored = shop("/auth", &[]).await;
    assert!(cache_status(&stored).ends_with("stored"));
    let authorized = shop("/auth", &[("authorization", "Bearer someone")]).await;
    assert!(!is_hit(&authorized));
    assert_eq!(
        cache_status(&authorized),
        "sluice; fwd=uri-miss; detail=authorization"
    );
    assert_eq!(origin.count("/auth"), 2);
    assert!(
        is_hit(&shop("/auth", &[]).await),
        "the shared entry is still there"
    );
    let public = "/auth?cc=public,%20max-age=60";
    shop(public, &[("authorization", "Bearer someone")]).await;
    assert!(is_hit(
        &shop(public, &[("authorization", "Bearer other")]).await
    ));
    assert!(is_hit(&shop(public, &[]).await));
    assert_eq!(origin.count(public), 1);
    // A bypass header skips the cache altogether.
    let previewed = shop("/auth", &[("x-preview", "1")]).await;
    assert_eq!(
        cache_status(&previewed),
        "sluice; fwd=bypass; detail=header"
    );
    assert_eq!(origin.count("/auth"), 3);

    // Behind an Auth policy that strips the credentials, the client is still
    // authenticated: a personal answer is not stored, a public one is shared.
    let (ada, bob) = ("key-of-ada", "key-of-bob");
    let member = |path: &'static str, key: &'static str| {
        let sluice = &sluice;
        async move { get(sluice, "members.test", path, &[("x-api-key", key)]).await }
    };
    let personal = member("/mine", ada).await;
    assert_eq!(personal.status, 200, "{}", personal.body);
    assert_eq!(
        cache_status(&personal),
        "sluice; fwd=uri-miss; detail=authorization"
    );
    assert_ne!(member("/mine", bob).await.body, personal.body);
    assert_eq!(origin.count("/mine"), 2);
    member("/shared?cc=public,%20max-age=60", ada).await;
    assert!(is_hit(
        &member("/shared?cc=public,%20max-age=60", bob).await
    ));
    assert_eq!(origin.count("/shared?cc=public,%20max-age=60"), 1);

    // The Host as sent (its port too) is part of the key: an upstream that builds links
    // from it never has them served to clients that sent another.
    let plain = shop("/links", &[]).await;
    assert!(cache_status(&plain).ends_with("stored"));
    let ported = get(&sluice, "shop.test:6666", "/links", &[]).await;
    assert!(!is_hit(&ported), "{}", cache_status(&ported));
    assert!(is_hit(&shop("/links", &[]).await));
    // A GET with a body goes upstream: the body is not part of the key.
    let with_body = support::send(
        sluice.http,
        "GET",
        "shop.test",
        "/links",
        &[],
        Bytes::from("q"),
    )
    .await
    .unwrap();
    assert_eq!(cache_status(&with_body), "sluice; fwd=bypass; detail=body");

    // Conditional requests are answered with 304 from the cache.
    let tagged = "/e?etag=v1&public=1";
    let full = shop(tagged, &[]).await;
    assert_eq!(full.headers["etag"], "\"v1\"");
    let not_modified = shop(tagged, &[("if-none-match", "\"v1\"")]).await;
    assert_eq!(not_modified.status, 304, "{:?}", not_modified.headers);
    assert!(is_hit(&not_modified));
    assert_eq!(not_modified.body, "");
    assert_eq!(not_modified.headers["etag"], "\"v1\"");
    let since = shop(
        tagged,
        &[("if-modified-since", "Tue, 01 Dec 2026 11:00:00 GMT")],
    )
    .await;
    assert_eq!(since.status, 304);
    let changed = shop(tagged, &[("if-none-match", "\"v0\"")]).await;
    assert_eq!(
        (changed.status, changed.body.as_str()),
        (200, full.body.as_str())
    );
    assert_eq!(origin.count(tagged), 1);

    // A successful unsafe request drops what is stored for its URL (RFC 9111 §4.4).
    shop("/inv", &[]).await;
    assert!(is_hit(&shop("/inv", &[]).await));
    let posted = support::send(
        sluice.http,
        "POST",
        "shop.test",
        "/inv",
        &[],
        Bytes::from("x"),
    )
    .await
    .unwrap();
    assert_eq!(cache_status(&posted), "sluice; fwd=bypass; detail=method");
    let after_post = shop("/inv", &[]).await;
    assert!(!is_hit(&after_post), "{}", cache_status(&after_post));
    assert_eq!(origin.count("/inv"), 3);
    // A Range request is answered with the stored full response.
    let ranged = shop("/inv", &[("range", "bytes=0-3")]).await;
    assert!(
        is_hit(&ranged) && ranged.status == 200,
        "{:?}",
        ranged.headers
    );

    for (result, at_least) in [("hit", 10.0), ("miss", 10.0), ("bypass", 1.0)] {
        let value = sluice
            .metric(&responses("pages", result))
            .await
            .unwrap_or(0.0);
        assert!(value >= at_least, "{result}: {value}");
    }
    let stored_bytes = sluice
        .metric(r#"sluice_cache_stored_bytes{namespace="default",policy="pages"}"#)
        .await
        .unwrap_or(0.0);
    assert!(stored_bytes > 0.0, "{stored_bytes}");
}

/// 100 concurrent requests for a cold key make exactly one upstream request; the others
/// wait for it and are answered from what it stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cache_coalesces_a_hundred_concurrent_misses_into_one_upstream_request() {
    let origin = Origin::start().await;
    let dir = ManifestDir::new("cache-coalescing");
    dir.write("class.yaml", INGRESS_CLASS);
    let mut objects = service_yaml("default", "origin", 80, &[origin.addr], &[]);
    objects += &cache("pages", "  ttl: 60s\n");
    objects += &cached_ingress("shop.test", "pages", &[]);
    dir.write("objects.yaml", &objects);
    let sluice = Sluice::start(&dir.0, &[]).await;

    let path = "/cold?delay=1000";
    let requests = (0..100).map(|_| get(&sluice, "shop.test", path, &[]));
    let replies = futures_util::future::join_all(requests).await;
    assert!(replies.iter().all(|reply| reply.status == 200));
    assert_eq!(origin.count(path), 1, "exactly one upstream request");
    let bodies: std::collections::BTreeSet<&str> =
        replies.iter().map(|reply| reply.body.as_str()).collect();
    assert_eq!(bodies.len(), 1, "{bodies:?}");
    let collapsed = replies
        .iter()
        .filter(|reply| cache_status(reply).contains("collapsed"))
        .count();
    assert_eq!(collapsed, 99);
    assert_eq!(
        sluice
            .metric(r#"sluice_cache_coalesced_waits_total{namespace="default",policy="pages"}"#)
            .await,
        Some(99.0)
    );
}

/// Stale-while-revalidate: an expired entry is served at once and refreshed once in the
/// background. Stale-if-error: with the origin failing, or gone, the stale entry stands in
/// within its window, and the error comes through after it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cache_serves_stale_while_revalidating_and_when_the_upstream_fails() {
    let origin = Origin::start().await;
    let dir = ManifestDir::new("cache-stale");
    dir.write("class.yaml", INGRESS_CLASS);
    let mut objects = service_yaml("default", "origin", 80, &[origin.addr], &[]);
    // Two seconds, not one: the origin's `Date` has one-second resolution, so a refreshed
    // entry may arrive up to a second old; with a one-second TTL it could be stale again
    // before the check below sees it fresh, and a second refresh would be right.
    objects += &cache("pages", "  ttl: 2s\n  staleWhileRevalidate: 30s\n");
    objects += &cache("fallback", "  ttl: 1s\n  staleIfError: 2s\n");
    objects += &cached_ingress("swr.test", "pages", &[]);
    objects += &cached_ingress("sie.test", "fallback", &[]);
    dir.write("objects.yaml", &objects);
    let sluice = Sluice::start(&dir.0, &[]).await;

    // The refresh takes 1 s at the origin: an answer that waited for it would be new.
    let path = "/slow?delay=1000&etag=one";
    let first = get(&sluice, "swr.test", path, &[]).await;
    assert!(first.body.contains("#1"), "{}", first.body);
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let stale: Vec<Reply> =
        futures_util::future::join_all((0..10).map(|_| get(&sluice, "swr.test", path, &[]))).await;
    for reply in &stale {
        assert_eq!(reply.body, first.body, "served the stale entry at once");
        assert!(
            cache_status(reply).contains("detail=stale-while-revalidate"),
            "{}",
            cache_status(reply)
        );
        assert!(
            cache_status(reply).contains("ttl=-"),
            "{}",
            cache_status(reply)
        );
    }
    assert_eq!(
        sluice.metric(&responses("pages", "stale")).await,
        Some(10.0)
    );
    // One background refresh, revalidating with the stored ETag (the origin answers 304
    // after its delay); until it is done, requests keep getting the stale entry at once.
    support::eventually(
        Duration::from_secs(5),
        "the refreshed entry served",
        async || {
            let reply = get(&sluice, "swr.test", path, &[]).await;
            is_hit(&reply) && !cache_status(&reply).contains("ttl=-")
        },
    )
    .await;
    assert_eq!(
        origin.count(path),
        2,
        "refreshed once, not once per stale request"
    );
    assert_eq!(
        origin.conditions().last().cloned().flatten().as_deref(),
        Some("\"one\"")
    );

    // Stale-if-error.
    let path = "/fragile";
    let good = get(&sluice, "sie.test", path, &[]).await;
    assert_eq!(good.status, 200);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    origin.fail(true);
    let standing_in = get(&sluice, "sie.test", path, &[]).await;
    assert_eq!(
        (standing_in.status, standing_in.body.as_str()),
        (200, good.body.as_str())
    );
    assert!(
        cache_status(&standing_in).starts_with("sluice; fwd=stale; fwd-status=503; ttl=-"),
        "{}",
        cache_status(&standing_in)
    );
    // The origin gone altogether: still the stale entry, with no upstream status.
    origin.stop();
    tokio::time::sleep(Duration::from_millis(50)).await;
    let gone = get(&sluice, "sie.test", path, &[]).await;
    assert_eq!((gone.status, gone.body.as_str()), (200, good.body.as_str()));
    assert!(
        cache_status(&gone).starts_with("sluice; fwd=stale; ttl=-"),
        "{}",
        cache_status(&gone)
    );
    // After the window (1 s fresh + 2 s) the failure is the answer.
    tokio::time::sleep(Duration::from_millis(2000)).await;
    let failed = get(&sluice, "sie.test", path, &[]).await;
    // 502 for a refused connection, or 503 once passive health checks ejected the endpoint.
    assert!(
        matches!(failed.status, 502 | 503),
        "{} {:?} {}",
        failed.status,
        failed.headers,
        failed.body
    );
    assert!(
        !cache_status(&failed).contains("stale"),
        "{}",
        cache_status(&failed)
    );
}

/// The keys in Redis matching `pattern`, by `redis-cli --scan`.
fn redis_keys(url: &str, pattern: &str) -> Vec<String> {
    let output = std::process::Command::new("redis-cli")
        .args(["-u", url, "--scan", "--pattern", pattern])
        .output()
        .expect("redis-cli (package redis-tools, installed with redis-server)");
    assert!(output.status.success(), "{output:?}");
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(str::to_owned)
        .collect()
}

/// Two Sluice processes sharing one Redis: a response cached through one is a hit through
/// the other; a purge through one removes it from Redis and from both memories; with Redis
/// gone both keep serving from memory.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cache_in_redis_is_shared_by_two_replicas_and_purged_from_both() {
    let mut redis = support::RedisServer::start();
    let origin = Origin::start().await;
    let dir = ManifestDir::new("cache-redis");
    dir.write("class.yaml", INGRESS_CLASS);
    let mut objects = service_yaml("default", "origin", 80, &[origin.addr], &[]);
    objects += &cache(
        "pages",
        "  ttl: 60s\n  redis: {enabled: true, ttlJitter: 10%}\n",
    );
    objects += &cached_ingress("shop.test", "pages", &[]);
    dir.write("objects.yaml", &objects);
    let token_file = dir.0.join("purge-token");
    std::fs::write(&token_file, "a-purge-token-for-tests\n").unwrap();
    let token_path = token_file.display().to_string();
    let args = [
        "--redis-url",
        &redis.url(),
        "--cache-purge-token-file",
        &token_path,
    ];
    let first = Sluice::start(&dir.0, &args).await;
    let second = Sluice::start(&dir.0, &args).await;

    let stored = get(&first, "shop.test", "/items/1", &[]).await;
    assert!(cache_status(&stored).ends_with("stored"));
    // The write to Redis happens behind the answer.
    let url = redis.url();
    support::eventually(Duration::from_secs(5), "the entry in Redis", async || {
        redis_keys(&url, "sluice:cache:{default/pages}:*").len() == 2
    })
    .await;
    let through_second = get(&second, "shop.test", "/items/1", &[]).await;
    assert!(is_hit(&through_second), "{}", cache_status(&through_second));
    assert_eq!(through_second.body, stored.body);
    assert_eq!(origin.count("/items/1"), 1);
    get(&first, "shop.test", "/items/2", &[]).await;
    get(&first, "shop.test", "/about", &[]).await;
    support::eventually(
        Duration::from_secs(5),
        "three entries in Redis",
        async || {
            // Three entries and the host's index.
            redis_keys(&url, "sluice:cache:{default/pages}:*").len() == 4
        },
    )
    .await;
    assert!(is_hit(&get(&second, "shop.test", "/items/2", &[]).await));

    // The purge endpoint needs its token.
    let purge = |sluice: &Sluice, query: &str, token: &str| {
        let authorization = format!("Bearer {token}");
        let (addr, query) = (sluice.admin, query.to_owned());
        async move {
            support::send(
                addr,
                "POST",
                "admin",
                &format!("/cache/purge?{query}"),
                &[("authorization", &authorization)],
                Bytes::new(),
            )
            .await
            .unwrap()
        }
    };
    let refused = purge(
        &first,
        "host=shop.test&path=/items/1",
        "wrong-token-wrong-token",
    )
    .await;
    assert_eq!(refused.status, 401);
    let bad = purge(&first, "host=shop.test", "a-purge-token-for-tests").await;
    assert_eq!(bad.status, 400, "{}", bad.body);

    // Exact purge through the first replica: gone from Redis and from both memories. The
    // first request after it is a miss that stores body #2; had the second replica kept
    // #1 in memory it would still serve #1.
    let purged = purge(
        &first,
        "host=shop.test&path=/items/1",
        "a-purge-token-for-tests",
    )
    .await;
    assert_eq!(purged.status, 200, "{}", purged.body);
    let report: serde_json::Value = serde_json::from_str(&purged.body).unwrap();
    assert_eq!(report["memoryKeys"], 1, "{report}");
    assert_eq!(report["redisKeys"], 1, "{report}");
    assert_eq!(report["announced"], true, "{report}");
    support::eventually(
        Duration::from_secs(5),
        "the purge reaches the other replica",
        async || {
            let reply = get(&second, "shop.test", "/items/1", &[]).await;
            !reply.body.contains("#1")
        },
    )
    .await;
    assert_eq!(origin.count("/items/1"), 2);
    // The second replica's new entry reaches Redis, and the first serves it from there.
    support::eventually(
        Duration::from_secs(5),
        "the new entry in Redis",
        async || redis_keys(&url, "sluice:cache:{default/pages}:*").len() == 4,
    )
    .await;
    let after = get(&first, "shop.test", "/items/1", &[]).await;
    assert!(is_hit(&after), "{}", cache_status(&after));
    assert!(after.body.contains("#2"), "{}", after.body);

    // A prefix purge through the second replica.
    let purged = purge(
        &second,
        "host=shop.test&prefix=/items/",
        "a-purge-token-for-tests",
    )
    .await;
    assert_eq!(purged.status, 200, "{}", purged.body);
    support::eventually(
        Duration::from_secs(5),
        "both /items/ entries purged everywhere",
        async || {
            let one = get(&first, "shop.test", "/items/2", &[]).await;
            !is_hit(&one)
        },
    )
    .await;
    assert_eq!(origin.count("/items/2"), 2);
    assert!(
        is_hit(&get(&second, "shop.test", "/about", &[]).await),
        "outside the prefix"
    );

    // Redis gone: each replica serves what it holds in memory, and misses still work.
    redis.stop();
    assert!(is_hit(&get(&first, "shop.test", "/about", &[]).await));
    let miss = get(&second, "shop.test", "/new", &[]).await;
    assert_eq!(miss.status, 200);
    let hit = get(&second, "shop.test", "/new", &[]).await;
    assert!(is_hit(&hit), "{}", cache_status(&hit));
    let errors = second
        .metric(r#"sluice_cache_redis_errors_total{namespace="default",policy="pages"}"#)
        .await
        .unwrap_or(0.0);
    assert!(errors >= 1.0, "{errors}");
}
