//! End-to-end tests on a real kube-apiserver with etcd, started by `e2e/run`.
//!
//! Every test has its own namespace and IngressClass name, so the Sluice processes of
//! different tests never serve each other's Ingresses. They run one at a time: one test
//! stops the API server.

#[path = "../../tests/support/mod.rs"]
mod support;

mod auth;
mod cache;
mod chart;
mod harness;
mod install;

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use harness::{Cluster, Endpoint, Load, Scenario, apply, eventually, ingress_json, spread};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::networking::v1::Ingress;
use kube::Api;
use support::{Echo, Sluice};

const SECOND: Duration = Duration::from_secs(1);

async fn served(sluice: &Sluice, host: &str, path: &str) -> bool {
    sluice.get(host, path).await.status == 200
}

async fn status_of(sluice: &Sluice, host: &str, path: &str) -> u16 {
    sluice.get(host, path).await.status
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a Kubernetes API server: run e2e/run"]
async fn e2e_1_an_ingress_is_served_and_gets_its_load_balancer_status() {
    let cluster = Cluster::connect().await;
    let Scenario {
        ns, echo, sluice, ..
    } = cluster
        .scenario(
            "basic",
            "127.0.0.101",
            "basic.e2e.test",
            "/",
            &["--leader-elect=false", "--publish-address", "203.0.113.1"],
        )
        .await;
    let reply = sluice.get("basic.e2e.test", "/shop/items?page=2").await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.echo_addr(), Some(echo.addrs[0].to_string()));
    assert_eq!(reply.echo()["uri"], "/shop/items?page=2");
    assert_eq!(status_of(&sluice, "elsewhere.e2e.test", "/").await, 404);

    eventually(5 * SECOND, "status.loadBalancer is written", async || {
        cluster.status_ips(&ns, "web").await == ["203.0.113.1"]
    })
    .await;
    // Moved to another class: Sluice stops serving it and gives its status fields up.
    apply(
        &cluster.ingresses(&ns),
        "web",
        ingress_json(
            &ns,
            "web",
            "someone-else",
            "basic.e2e.test",
            &[("/", "web")],
            "http",
        ),
    )
    .await;
    eventually(5 * SECOND, "the address is taken back", async || {
        cluster.status_ips(&ns, "web").await.is_empty()
            && status_of(&sluice, "basic.e2e.test", "/").await == 404
    })
    .await;
    assert_eq!(
        sluice
            .metric("sluice_controller_watch_connected{kind=\"Ingress\"}")
            .await,
        Some(1.0)
    );
    // The write is counted once its response is in, which may be after the test sees it.
    eventually(5 * SECOND, "the status write is counted", async || {
        sluice
            .metric("sluice_controller_status_updates_total{result=\"ok\"}")
            .await
            .unwrap_or_default()
            >= 1.0
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a Kubernetes API server: run e2e/run"]
async fn e2e_2_changes_and_deletes_apply_within_a_second_and_other_classes_are_ignored() {
    let cluster = Cluster::connect().await;
    // The echo backend must live as long as the test: `..` would drop it at once.
    let Scenario {
        ns,
        class,
        sluice,
        echo: _echo,
    } = cluster
        .scenario(
            "change",
            "127.0.0.102",
            "change.e2e.test",
            "/v1",
            &["--leader-elect=false"],
        )
        .await;
    let class = class.as_str();
    assert_eq!(status_of(&sluice, "change.e2e.test", "/v2").await, 404);

    // Change the path: /v2 serves and /v1 stops, within a second of the write.
    cluster
        .ingress(&ns, "web", class, "change.e2e.test", &[("/v2", "web")])
        .await;
    let took = eventually(SECOND, "the changed path is served", async || {
        served(&sluice, "change.e2e.test", "/v2/x").await
            && status_of(&sluice, "change.e2e.test", "/v1").await == 404
    })
    .await;
    println!("path change served after {took:?}");

    // Delete: 404 within a second.
    cluster.delete_ingress(&ns, "web").await;
    let took = eventually(SECOND, "the deleted Ingress stops serving", async || {
        status_of(&sluice, "change.e2e.test", "/v2").await == 404
    })
    .await;
    println!("delete applied after {took:?}");

    // An Ingress of another class is ignored. A marker Ingress of ours written after it
    // proves the watch has delivered it by the time the marker serves.
    apply(
        &cluster.ingresses(&ns),
        "theirs",
        ingress_json(
            &ns,
            "theirs",
            "someone-else",
            "theirs.e2e.test",
            &[("/", "web")],
            "http",
        ),
    )
    .await;
    cluster
        .ingress(&ns, "marker", class, "marker.e2e.test", &[("/", "web")])
        .await;
    eventually(5 * SECOND, "the marker is served", async || {
        served(&sluice, "marker.e2e.test", "/").await
    })
    .await;
    assert_eq!(status_of(&sluice, "theirs.e2e.test", "/").await, 404);
}

/// Waits until Sluice serves a snapshot newer than `generation`.
async fn wait_for_generation_after(sluice: &Sluice, generation: u64) {
    eventually(5 * SECOND, "a new snapshot", async || {
        sluice.generation().await > generation
    })
    .await;
}

/// Reserves one port on the first IP and returns it, for endpoints that must share a port
/// (one EndpointSlice has one port list).
fn shared_port(ip: &str) -> u16 {
    support::closed_port(ip).port()
}

fn echo_on(ip: &str, port: u16) -> Echo {
    Echo::start_at(&[format!("{ip}:{port}")])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a Kubernetes API server: run e2e/run"]
async fn e2e_3_endpoints_scale_drain_and_roll_without_a_failed_request() {
    let cluster = Cluster::connect().await;
    let ns = cluster.namespace("endpoints").await;
    let class = "e2e-endpoints";
    let old_ips = [
        "127.0.0.111",
        "127.0.0.112",
        "127.0.0.113",
        "127.0.0.114",
        "127.0.0.115",
    ];
    let new_ips = [
        "127.0.0.121",
        "127.0.0.122",
        "127.0.0.123",
        "127.0.0.124",
        "127.0.0.125",
    ];
    let port = shared_port(old_ips[0]);
    let mut old: Vec<Option<Echo>> = old_ips.iter().map(|ip| Some(echo_on(ip, port))).collect();
    let new: Vec<Echo> = new_ips.iter().map(|ip| echo_on(ip, port)).collect();
    let old_addrs: Vec<SocketAddr> = old.iter().flatten().map(|echo| echo.addrs[0]).collect();
    let new_addrs: Vec<SocketAddr> = new.iter().map(|echo| echo.addrs[0]).collect();

    cluster.service(&ns, "web").await;
    cluster
        .endpoints(&ns, "web", &[Endpoint::ready(old_addrs[0])])
        .await;
    cluster
        .ingress(&ns, "web", class, "endpoints.e2e.test", &[("/", "web")])
        .await;
    // No retries: a request sent to an endpoint that is gone must show as a failure.
    let sluice = cluster
        .sluice(class, &["--leader-elect=false", "--retries", "0"])
        .await;
    eventually(5 * SECOND, "served by one endpoint", async || {
        served(&sluice, "endpoints.e2e.test", "/").await
    })
    .await;
    let generation_before = sluice.generation().await;

    // Scale up from 1 to 5: round robin reaches all five equally.
    let five: Vec<Endpoint> = old_addrs.iter().copied().map(Endpoint::ready).collect();
    cluster.endpoints(&ns, "web", &five).await;
    eventually(5 * SECOND, "all five endpoints get traffic", async || {
        spread(&sluice, "endpoints.e2e.test", "/", 25).await.len() == 5
    })
    .await;
    let counts = spread(&sluice, "endpoints.e2e.test", "/", 50).await;
    assert_eq!(counts.len(), 5, "{counts:?}");
    assert!(counts.values().all(|count| *count == 10), "{counts:?}");

    // One not ready: it gets nothing.
    let mut four = five.clone();
    four[2] = Endpoint::not_ready(old_addrs[2]);
    cluster.endpoints(&ns, "web", &four).await;
    eventually(
        5 * SECOND,
        "the not-ready endpoint is left out",
        async || {
            !spread(&sluice, "endpoints.e2e.test", "/", 20)
                .await
                .contains_key(&old_addrs[2].to_string())
        },
    )
    .await;
    let counts = spread(&sluice, "endpoints.e2e.test", "/", 40).await;
    assert_eq!(counts.len(), 4, "{counts:?}");
    assert!(!counts.contains_key(&old_addrs[2].to_string()));

    // Endpoint changes took the fast lane: new generations, but no full compile (which
    // logs "published snapshot") since the one before them.
    assert!(sluice.generation().await > generation_before);
    let full_compiles_after: Vec<_> = sluice
        .log_events()
        .into_iter()
        .filter(|event| {
            event["message"] == "published snapshot"
                && event["generation"].as_u64() > Some(generation_before)
        })
        .collect();
    assert!(
        full_compiles_after.is_empty(),
        "endpoint changes ran a full compile: {full_compiles_after:?}"
    );

    // Every endpoint terminating but still serving (a scale-down to zero in progress):
    // they keep answering until they leave the slice.
    let draining: Vec<Endpoint> = old_addrs
        .iter()
        .copied()
        .map(Endpoint::terminating)
        .collect();
    let before = sluice.generation().await;
    cluster.endpoints(&ns, "web", &draining).await;
    wait_for_generation_after(&sluice, before).await;
    let counts = spread(&sluice, "endpoints.e2e.test", "/", 25).await;
    assert_eq!(
        counts.len(),
        5,
        "terminating endpoints still serve: {counts:?}"
    );

    // A rolling replacement of every endpoint under steady load, as a Deployment rollout
    // does it: the new pod turns ready, the old one turns terminating (still serving),
    // leaves the slice, and exits once Sluice has applied its removal.
    // Back to ready: the same five addresses, so the same backend and no new snapshot.
    cluster.endpoints(&ns, "web", &five).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let load = Load::start(sluice.http, "endpoints.e2e.test", "/", 4);
    for step in 0..old_addrs.len() {
        let mut listed: Vec<Endpoint> = Vec::new();
        listed.extend(new_addrs[..=step].iter().copied().map(Endpoint::ready));
        listed.push(Endpoint::terminating(old_addrs[step]));
        listed.extend(old_addrs[step + 1..].iter().copied().map(Endpoint::ready));
        // Terminating while others are ready: out of rotation as soon as this applies.
        let before = sluice.generation().await;
        cluster.endpoints(&ns, "web", &listed).await;
        wait_for_generation_after(&sluice, before).await;
        // Requests already sent to it finish; then it leaves the slice (no change in
        // rotation, so no new snapshot) and exits.
        tokio::time::sleep(Duration::from_millis(100)).await;
        listed.retain(|endpoint| endpoint.addr != old_addrs[step]);
        cluster.endpoints(&ns, "web", &listed).await;
        tokio::time::sleep(Duration::from_millis(100)).await;
        old[step] = None;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let report = load.finish().await;
    println!(
        "rolling replacement: {} requests, {} failed",
        report.requests,
        report.failures.len()
    );
    assert!(report.requests > 100, "the load ran: {report:?}");
    assert!(report.failures.is_empty(), "{:?}", report.failures);
    let counts = spread(&sluice, "endpoints.e2e.test", "/", 25).await;
    let expected: BTreeSet<String> = new_addrs.iter().map(ToString::to_string).collect();
    assert_eq!(counts.keys().cloned().collect::<BTreeSet<_>>(), expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a Kubernetes API server: run e2e/run"]
async fn e2e_4_invalid_ingresses_get_events_and_the_rest_keeps_serving() {
    let cluster = Cluster::connect().await;
    let ns = cluster.namespace("invalid").await;
    let class = "e2e-invalid";
    let echo = Echo::start(&["127.0.0.131", "127.0.0.132"]);
    for (service, addr) in [("web", echo.addrs[0]), ("other", echo.addrs[1])] {
        cluster.service(&ns, service).await;
        cluster
            .endpoints(&ns, service, &[Endpoint::ready(addr)])
            .await;
    }
    cluster
        .ingress(&ns, "good", class, "good.e2e.test", &[("/", "web")])
        .await;
    let sluice = cluster
        .sluice(
            class,
            &["--leader-elect=false", "--publish-address", "203.0.113.1"],
        )
        .await;
    eventually(5 * SECOND, "the good Ingress is served", async || {
        served(&sluice, "good.e2e.test", "/").await
    })
    .await;

    // A port name the Service does not have, and the same host and path as the older
    // Ingress "good" pointing elsewhere. creationTimestamp has one-second resolution and
    // equal times fall back to names ("conflict" < "good"), so make "good" truly older.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    apply(
        &cluster.ingresses(&ns),
        "bad-port",
        ingress_json(
            &ns,
            "bad-port",
            class,
            "bad.e2e.test",
            &[("/", "web")],
            "nope",
        ),
    )
    .await;
    cluster
        .ingress(&ns, "conflict", class, "good.e2e.test", &[("/", "other")])
        .await;

    eventually(
        10 * SECOND,
        "an Event on the Ingress with the bad port",
        async || {
            cluster
                .events_about(&ns, "bad-port")
                .await
                .iter()
                .any(|event| {
                    event.reason.as_deref() == Some("BackendPortNotFound")
                        && event.type_.as_deref() == Some("Warning")
                        && event
                            .note
                            .as_deref()
                            .is_some_and(|note| note.contains("nope"))
                })
        },
    )
    .await;
    eventually(
        10 * SECOND,
        "an Event on the conflicting Ingress",
        async || {
            cluster
                .events_about(&ns, "conflict")
                .await
                .iter()
                .any(|event| {
                    event.reason.as_deref() == Some("PathConflict")
                        && event
                            .note
                            .as_deref()
                            .is_some_and(|note| note.contains(&format!("{ns}/good")))
                })
        },
    )
    .await;
    // Events of one compile are posted in one pass; give a stray one on "good" time to
    // show before checking there is none.
    tokio::time::sleep(SECOND).await;
    assert!(
        cluster.events_about(&ns, "good").await.is_empty(),
        "the good Ingress has nothing to report"
    );

    // The good route still answers, from its own backend.
    let reply = sluice.get("good.e2e.test", "/").await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.echo_addr(), Some(echo.addrs[0].to_string()));
    assert_eq!(status_of(&sluice, "bad.e2e.test", "/").await, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a Kubernetes API server: run e2e/run"]
async fn e2e_5_an_api_server_outage_loses_no_request_and_catches_up_after() {
    let cluster = Cluster::connect().await;
    let Scenario {
        ns,
        class,
        echo,
        sluice,
    } = cluster
        .scenario(
            "outage",
            "127.0.0.141",
            "outage.e2e.test",
            "/",
            &["--leader-elect=false"],
        )
        .await;
    let class = class.as_str();

    let load = Load::start(sluice.http, "outage.e2e.test", "/", 4);
    tokio::time::sleep(Duration::from_millis(300)).await;
    cluster.control("apiserver-stop").await;
    eventually(
        30 * SECOND,
        "the watch reports the disconnection",
        async || {
            sluice
                .metric("sluice_controller_watch_connected{kind=\"Ingress\"}")
                .await
                == Some(0.0)
        },
    )
    .await;
    // Traffic is fine, so the replica stays ready and alive.
    for _ in 0..10 {
        assert_eq!(sluice.admin_get("/readyz").await.map(|r| r.status), Ok(200));
        assert_eq!(
            sluice.admin_get("/healthz").await.map(|r| r.status),
            Ok(200)
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(
        sluice.log_events().iter().any(|event| event["message"]
            .as_str()
            .is_some_and(|message| message.starts_with("watch disconnected"))),
        "a log line says the watch is disconnected"
    );

    cluster.control("apiserver-start").await;
    let restarted = Instant::now();
    cluster
        .ingress(&ns, "after", class, "after.e2e.test", &[("/", "web")])
        .await;
    eventually(
        5 * SECOND,
        "a new Ingress is served after the restart",
        async || restarted.elapsed() < 5 * SECOND && served(&sluice, "after.e2e.test", "/").await,
    )
    .await;
    println!(
        "new Ingress served {:?} after the API server restart",
        restarted.elapsed()
    );
    if std::env::var_os("SLUICE_E2E_VERBOSE").is_some() {
        for line in sluice.log.lock().expect("log").iter() {
            println!("sluice: {line}");
        }
    }
    // The EndpointSlice watch caught up too: an endpoint added after the restart gets
    // traffic. One slice has one port list, so it listens on the first one's port.
    let second = echo_on("127.0.0.142", echo.addrs[0].port());
    cluster
        .endpoints(
            &ns,
            "web",
            &[
                Endpoint::ready(echo.addrs[0]),
                Endpoint::ready(second.addrs[0]),
            ],
        )
        .await;
    eventually(
        5 * SECOND,
        "the endpoint added after the restart is used",
        async || {
            spread(&sluice, "outage.e2e.test", "/", 10)
                .await
                .contains_key(&second.addrs[0].to_string())
        },
    )
    .await;
    eventually(
        15 * SECOND,
        "every watch reports connected again",
        async || {
            let mut all = true;
            for kind in [
                "Ingress",
                "IngressClass",
                "Service",
                "EndpointSlice",
                "Secret",
            ] {
                all &= sluice
                    .metric(&format!(
                        "sluice_controller_watch_connected{{kind=\"{kind}\"}}"
                    ))
                    .await
                    == Some(1.0);
            }
            all
        },
    )
    .await;
    let report = load.finish().await;
    println!(
        "API server outage: {} requests, {} failed",
        report.requests,
        report.failures.len()
    );
    assert!(report.requests > 100, "the load ran: {report:?}");
    assert!(report.failures.is_empty(), "{:?}", report.failures);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a Kubernetes API server: run e2e/run"]
async fn e2e_6_one_replica_leads_and_another_takes_over_when_it_dies() {
    let cluster = Cluster::connect().await;
    let ns = cluster.namespace("leader").await;
    let class = "e2e-leader";
    let lease_duration = Duration::from_secs(3);
    let echo = Echo::start(&["127.0.0.151"]);
    cluster.service(&ns, "web").await;
    cluster
        .endpoints(&ns, "web", &[Endpoint::ready(echo.addrs[0])])
        .await;
    cluster
        .ingress(&ns, "first", class, "leader.e2e.test", &[("/", "web")])
        .await;
    let replica = |identity: &'static str, address: &'static str| {
        cluster.spawn_sluice(
            class,
            // The chart's Lease in the release namespace (from the kubeconfig): the
            // only one its Role lets Sluice update.
            &[
                "--lease-duration",
                "3s",
                "--identity",
                identity,
                "--publish-address",
                address,
            ],
        )
    };
    let mut replicas = BTreeMap::from([
        (
            "replica-a",
            (replica("replica-a", "203.0.113.1"), "203.0.113.1"),
        ),
        (
            "replica-b",
            (replica("replica-b", "203.0.113.2"), "203.0.113.2"),
        ),
    ]);
    for (sluice, _) in replicas.values() {
        sluice.wait_ready().await;
        // Every replica serves traffic, leader or not.
        eventually(5 * SECOND, "each replica serves", async || {
            served(sluice, "leader.e2e.test", "/").await
        })
        .await;
    }

    let leases: Api<Lease> = Api::namespaced(cluster.client.clone(), chart::RELEASE_NAMESPACE);
    let holder = async || {
        leases
            .get_opt(chart::LEASE)
            .await
            .ok()
            .flatten()
            .and_then(|lease| lease.spec)
            .and_then(|spec| spec.holder_identity)
            .unwrap_or_default()
    };
    eventually(10 * SECOND, "someone holds the lease", async || {
        replicas.contains_key(holder().await.as_str())
    })
    .await;
    let leader = holder().await;
    eventually(
        5 * SECOND,
        "exactly the holder reports leading",
        async || {
            let mut leading = Vec::new();
            for (name, (sluice, _)) in &replicas {
                if sluice.metric("sluice_controller_leader").await == Some(1.0) {
                    leading.push(*name);
                }
            }
            leading == [leader.as_str()]
        },
    )
    .await;
    let leader_address = replicas[leader.as_str()].1;
    eventually(5 * SECOND, "the leader writes status", async || {
        cluster.status_ips(&ns, "first").await == [leader_address]
    })
    .await;
    // The follower does not write: the status stays the leader's.
    tokio::time::sleep(SECOND).await;
    assert_eq!(cluster.status_ips(&ns, "first").await, [leader_address]);

    // Kill the leader: no release, the lease must expire.
    let (mut dead, _) = replicas.remove(leader.as_str()).expect("leader");
    dead.kill();
    let killed = Instant::now();
    let (survivor_name, (survivor, survivor_address)) =
        replicas.into_iter().next().expect("survivor");
    cluster
        .ingress(
            &ns,
            "second",
            class,
            "leader.e2e.test",
            &[("/second", "web")],
        )
        .await;
    eventually(
        20 * SECOND,
        "the survivor takes over status writes",
        async || {
            cluster.status_ips(&ns, "second").await == [survivor_address]
                && cluster.status_ips(&ns, "first").await == [survivor_address]
        },
    )
    .await;
    let took = killed.elapsed();
    assert_eq!(holder().await, survivor_name);
    eventually(5 * SECOND, "the survivor reports leading", async || {
        survivor.metric("sluice_controller_leader").await == Some(1.0)
    })
    .await;
    println!(
        "takeover: status written by the survivor {took:?} after the leader was killed (lease {lease_duration:?})"
    );
    // Within one lease duration of the last renewal the follower saw, plus one retry
    // period to notice and a write.
    assert!(
        took <= lease_duration + 2 * SECOND,
        "takeover took {took:?} with a {lease_duration:?} lease"
    );

    // A clean shutdown hands the lease back at once instead of letting it expire.
    let mut survivor = survivor;
    assert_eq!(survivor.terminate(10 * SECOND), Some(0));
    assert_eq!(holder().await, "", "the lease was released on SIGTERM");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a Kubernetes API server: run e2e/run"]
async fn e2e_7_a_thousand_ingresses_converge() {
    let count: usize = std::env::var("SLUICE_E2E_SCALE")
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(1000);
    let cluster = Cluster::connect().await;
    let ns = cluster.namespace("scale").await;
    let class = "e2e-scale";
    let echo = Echo::start(&["127.0.0.161"]);
    cluster.service(&ns, "web").await;
    cluster
        .endpoints(&ns, "web", &[Endpoint::ready(echo.addrs[0])])
        .await;
    let sluice = cluster
        .sluice(
            class,
            &["--leader-elect=false", "--publish-address", "203.0.113.1"],
        )
        .await;

    let api = cluster.ingresses(&ns);
    let host = |index: usize| format!("h{index}.scale.e2e.test");
    let created = Instant::now();
    futures_util::stream::iter(0..count)
        .map(|index| {
            let api = api.clone();
            let ns = ns.clone();
            async move {
                let object: Ingress = serde_json::from_value(ingress_json(
                    &ns,
                    &format!("scale-{index}"),
                    class,
                    &host(index),
                    &[("/", "web")],
                    "http",
                ))
                .expect("Ingress");
                harness::create(&api, &object).await;
            }
        })
        .buffer_unordered(16)
        .collect::<()>()
        .await;
    let last_created = Instant::now();
    println!("created {count} Ingresses in {:?}", last_created - created);

    // Sweep the hosts not yet served until none is left.
    let client = support::shared_client();
    let mut waiting: Vec<usize> = (0..count).collect();
    let deadline = last_created + 120 * SECOND;
    while !waiting.is_empty() {
        assert!(
            Instant::now() < deadline,
            "{} of {count} Ingresses not served after 120 s",
            waiting.len()
        );
        let answers: Vec<(usize, bool)> = futures_util::stream::iter(waiting.clone())
            .map(|index| {
                let client = client.clone();
                let host = host(index);
                let addr = sluice.http;
                async move {
                    let reply = support::send_with(
                        &client,
                        addr,
                        "GET",
                        &host,
                        "/",
                        &[],
                        bytes::Bytes::new(),
                    )
                    .await;
                    (index, reply.is_ok_and(|reply| reply.status == 200))
                }
            })
            .buffer_unordered(16)
            .collect()
            .await;
        waiting = answers
            .into_iter()
            .filter_map(|(index, ok)| (!ok).then_some(index))
            .collect();
        if !waiting.is_empty() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    let converged = last_created.elapsed();
    println!("convergence: {count} Ingresses, last create to last route served: {converged:?}");
    assert!(
        sluice.metric("sluice_snapshot_routes").await >= Some(count as f64),
        "the snapshot holds every route"
    );
    let rss_kib = std::fs::read_to_string(format!("/proc/{}/status", sluice.pid()))
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find_map(|line| line.strip_prefix("VmRSS:"))
                .and_then(|value| {
                    value
                        .trim()
                        .trim_end_matches("kB")
                        .trim()
                        .parse::<u64>()
                        .ok()
                })
        })
        .unwrap_or_default();
    let compiles = sluice
        .metric("sluice_controller_compile_seconds_count")
        .await
        .unwrap_or_default();
    let compile_seconds = sluice
        .metric("sluice_controller_compile_seconds_sum")
        .await
        .unwrap_or_default();
    println!(
        "sluice with {count} Ingresses: RSS {} MiB, {compiles} full compiles, {:.1} ms each on average",
        rss_kib / 1024,
        1000.0 * compile_seconds / compiles.max(1.0)
    );
}

/// The committed CRDs, applied as a user would, then waited on until they are served.
async fn install_crds(cluster: &Cluster) {
    use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
    use serde::Deserialize;
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/manifests/crds/sluice.dev.yaml"
    );
    let text = std::fs::read_to_string(path).expect("manifests/crds/sluice.dev.yaml");
    let api: Api<CustomResourceDefinition> = Api::all(cluster.client.clone());
    for document in serde_yaml_ng::Deserializer::from_str(&text) {
        let crd = serde_json::Value::deserialize(document).expect("CRD YAML");
        let name = crd["metadata"]["name"].as_str().expect("name").to_owned();
        apply(&api, &name, crd).await;
        eventually(10 * SECOND, "the CRD is established", async || {
            api.get(&name).await.ok().is_some_and(|crd| {
                crd.status
                    .and_then(|status| status.conditions)
                    .unwrap_or_default()
                    .iter()
                    .any(|c| c.type_ == "Established" && c.status == "True")
            })
        })
        .await;
    }
}

fn rate_limit_json(namespace: &str, name: &str, spec: serde_json::Value) -> serde_json::Value {
    serde_json::json!({
        "apiVersion": "sluice.dev/v1alpha1",
        "kind": "RateLimit",
        "metadata": {"name": name, "namespace": namespace},
        "spec": spec,
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the API server that e2e/run starts"]
async fn e2e_8_rate_limit_crd_status_and_missing_policies() {
    use sluice_crds::RateLimit;
    let cluster = Cluster::connect().await;
    install_crds(&cluster).await;
    let ns = cluster.namespace("ratelimit").await;
    let class = "e2e-ratelimit";
    let echo = Echo::start(&["127.0.0.141"]);
    cluster.service(&ns, "web").await;
    cluster
        .endpoints(&ns, "web", &[Endpoint::ready(echo.addrs[0])])
        .await;
    let policies: Api<RateLimit> = Api::namespaced(cluster.client.clone(), &ns);

    // The CEL rule spanning fields is enforced by the real API server.
    let refused = policies
        .patch(
            "bad",
            &kube::api::PatchParams::apply("sluice-e2e").force(),
            &kube::api::Patch::Apply(&rate_limit_json(
                &ns,
                "bad",
                serde_json::json!({"limits": [{"requests": 1, "period": "1m"}], "localShare": 3}),
            )),
        )
        .await
        .expect_err("the API server refuses localShare without backend: redis");
    assert!(
        refused
            .to_string()
            .contains("localShare only applies to backend: redis"),
        "{refused}"
    );

    apply(
        &policies,
        "five",
        rate_limit_json(
            &ns,
            "five",
            serde_json::json!({"limits": [{"requests": 5, "period": "1m"}]}),
        ),
    )
    .await;
    // Valid for the API server, not for a Sluice without --redis-url.
    apply(
        &policies,
        "global",
        rate_limit_json(
            &ns,
            "global",
            serde_json::json!({"backend": "redis", "limits": [{"requests": 5, "period": "1m"}]}),
        ),
    )
    .await;
    for (name, host, policy) in [
        ("limited", "limited.e2e.test", "five"),
        ("orphan", "orphan.e2e.test", "missing"),
    ] {
        let mut ingress = ingress_json(&ns, name, class, host, &[("/", "web")], "http");
        ingress["metadata"]["annotations"] = serde_json::json!({"sluice.dev/rate-limit": policy});
        apply(&cluster.ingresses(&ns), name, ingress).await;
    }
    let sluice = cluster
        .sluice(
            class,
            &["--leader-elect=false", "--publish-address", "203.0.113.8"],
        )
        .await;

    // Every answer counts against the budget of five, the probes included.
    let mut statuses = Vec::new();
    eventually(10 * SECOND, "the limited route is served", async || {
        let status = status_of(&sluice, "limited.e2e.test", "/").await;
        if status != 404 {
            statuses.push(status);
        }
        status == 200
    })
    .await;
    for _ in 0..8 {
        statuses.push(status_of(&sluice, "limited.e2e.test", "/").await);
    }
    assert_eq!(
        statuses.iter().filter(|s| **s == 200).count(),
        5,
        "{statuses:?}"
    );
    assert_eq!(
        statuses.iter().filter(|s| **s == 429).count(),
        statuses.len() - 5
    );

    // An Ingress naming a policy that does not exist: 503 on its routes, and an Event.
    assert_eq!(status_of(&sluice, "orphan.e2e.test", "/").await, 503);
    eventually(10 * SECOND, "a PolicyNotFound Event", async || {
        cluster
            .events_about(&ns, "orphan")
            .await
            .iter()
            .any(|event| event.reason.as_deref() == Some("PolicyNotFound"))
    })
    .await;

    // The leader writes each policy's conditions.
    let condition = |policy: &RateLimit, type_: &str| {
        policy
            .status
            .as_ref()
            .and_then(|status| status.conditions.iter().find(|c| c.type_ == type_))
            .map(|c| (c.status.clone(), c.reason.clone()))
    };
    eventually(10 * SECOND, "conditions on both policies", async || {
        let (Ok(five), Ok(global)) = (policies.get("five").await, policies.get("global").await)
        else {
            return false;
        };
        condition(&five, "Accepted") == Some(("True".into(), "Accepted".into()))
            && condition(&five, "Programmed") == Some(("True".into(), "Programmed".into()))
            && five.status.as_ref().and_then(|s| s.observed_generation) == five.metadata.generation
            && condition(&global, "Accepted") == Some(("False".into(), "InvalidSpec".into()))
            && condition(&global, "Programmed") == Some(("False".into(), "Invalid".into()))
    })
    .await;
    let global = policies.get("global").await.unwrap();
    let message = &global.status.unwrap().conditions[0].message;
    assert!(message.contains("--redis-url"), "{message}");
}

fn tls_secret_json(
    namespace: &str,
    name: &str,
    cert_pem: &str,
    key_pem: &str,
) -> serde_json::Value {
    serde_json::json!({
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name, "namespace": namespace},
        "type": "kubernetes.io/tls",
        "stringData": {"tls.crt": cert_pem, "tls.key": key_pem},
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a Kubernetes API server: run e2e/run"]
async fn e2e_9_tls_secrets_rotate_without_a_restart_and_a_bad_one_keeps_the_last_good() {
    use support::tls::{ClientOptions, HttpsConnection, TestCa, connect, presented};

    let cluster = Cluster::connect().await;
    let ns = cluster.namespace("tls").await;
    let class = "e2e-tls";
    let host = "tls.e2e.test";
    let echo = Echo::start(&["127.0.0.141"]);
    cluster.service(&ns, "web").await;
    cluster
        .endpoints(&ns, "web", &[Endpoint::ready(echo.addrs[0])])
        .await;
    let ca = TestCa::new("Sluice e2e CA");
    let first = ca.server(&[host]);
    let second = ca.server(&[host]);
    let secrets: Api<k8s_openapi::api::core::v1::Secret> =
        Api::namespaced(cluster.client.clone(), &ns);
    apply(
        &secrets,
        "site-tls",
        tls_secret_json(&ns, "site-tls", &first.cert_pem, &first.key_pem),
    )
    .await;
    let mut ingress = ingress_json(&ns, "site", class, host, &[("/", "web")], "http");
    ingress["spec"]["tls"] = serde_json::json!([{"secretName": "site-tls", "hosts": [host]}]);
    apply(&cluster.ingresses(&ns), "site", ingress).await;

    let sluice = cluster
        .sluice(
            class,
            &["--leader-elect=false", "--https-addr", "127.0.0.1:0"],
        )
        .await;
    let https = sluice.https.expect("an HTTPS listener");
    let trusted = ClientOptions {
        trust: Some(&ca),
        ..ClientOptions::default()
    };
    eventually(
        5 * SECOND,
        "the Secret's certificate is served",
        async || match connect(https, Some(host), &trusted).await {
            Ok(stream) => presented(&stream) == first.der,
            Err(_) => false,
        },
    )
    .await;
    let stream = connect(https, Some(host), &trusted).await.unwrap();
    let mut kept = HttpsConnection::new(stream).await.unwrap();
    let reply = kept.get(host, "/", &[]).await.unwrap();
    assert_eq!(reply.status, 200, "{}", reply.body);
    // Plain HTTP to a host with a certificate is sent to HTTPS.
    assert_eq!(status_of(&sluice, host, "/").await, 308);

    // Rotation through the API server: new handshakes get the new certificate within a
    // second, the connection made before keeps working.
    let rotated = Instant::now();
    apply(
        &secrets,
        "site-tls",
        tls_secret_json(&ns, "site-tls", &second.cert_pem, &second.key_pem),
    )
    .await;
    eventually(
        SECOND,
        "the rotated certificate is served",
        async || match connect(https, Some(host), &trusted).await {
            Ok(stream) => presented(&stream) == second.der,
            Err(_) => false,
        },
    )
    .await;
    println!("rotation served {:?} after the apply", rotated.elapsed());
    for _ in 0..3 {
        assert_eq!(kept.get(host, "/", &[]).await.unwrap().status, 200);
    }

    // A key that does not match the certificate: an Event on the Ingress, and the last
    // good certificate keeps serving.
    let stranger = ca.server(&[host]);
    apply(
        &secrets,
        "site-tls",
        tls_secret_json(&ns, "site-tls", &second.cert_pem, &stranger.key_pem),
    )
    .await;
    eventually(
        10 * SECOND,
        "an InvalidSecret Event on the Ingress",
        async || {
            cluster.events_about(&ns, "site").await.iter().any(|event| {
                event.reason.as_deref() == Some("InvalidSecret")
                    && event.note.as_deref().is_some_and(|note| {
                        note.contains("site-tls") && note.contains("last good certificate")
                    })
            })
        },
    )
    .await;
    for _ in 0..3 {
        let stream = connect(https, Some(host), &trusted).await.unwrap();
        assert_eq!(presented(&stream), second.der);
    }
    assert_eq!(kept.get(host, "/", &[]).await.unwrap().status, 200);
}
