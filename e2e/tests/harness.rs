//! The e2e side of the harness: a `kube` client for the API server `e2e/cluster up`
//! started, object builders, and the real `sluice` binary pointed at it.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use k8s_openapi::api::core::v1::{Namespace, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::api::networking::v1::Ingress;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Api, Client};
use serde_json::{Value, json};

pub use crate::support::eventually;
use crate::support::{Echo, Sluice};

/// The running control plane of this e2e run.
pub struct Cluster {
    pub dir: PathBuf,
    /// The administrator's kubeconfig: what the tests themselves use.
    pub kubeconfig: PathBuf,
    /// The Helm chart's ServiceAccount (release [`crate::chart::RELEASE`]): what every
    /// Sluice process of the suite runs as, so the suite proves the chart's RBAC.
    pub sluice_kubeconfig: PathBuf,
    pub client: Client,
}

impl Cluster {
    /// Connects to the cluster whose folder `SLUICE_E2E_DIR` names (`e2e/run` sets it).
    pub async fn connect() -> Cluster {
        let dir = PathBuf::from(
            std::env::var("SLUICE_E2E_DIR")
                .expect("SLUICE_E2E_DIR is not set: run the e2e tests with e2e/run"),
        );
        let kubeconfig = dir.join("kubeconfig");
        let config = Kubeconfig::read_from(&kubeconfig).expect("read the e2e kubeconfig");
        let config = kube::Config::from_custom_kubeconfig(config, &KubeConfigOptions::default())
            .await
            .expect("kubeconfig");
        let client = Client::try_from(config).expect("client");
        let mut cluster = Cluster {
            sluice_kubeconfig: PathBuf::new(),
            dir,
            kubeconfig,
            client,
        };
        cluster.sluice_kubeconfig = cluster.release_identity().await;
        cluster
    }

    /// Creates a namespace for one test. Namespaces are not deleted: without a
    /// controller-manager they would never finish terminating, and the cluster is torn
    /// down after the run anyway.
    pub async fn namespace(&self, prefix: &str) -> String {
        self.namespace_named(&format!("{prefix}-{}", std::process::id()))
            .await
    }

    /// Creates (or keeps) the namespace `name`.
    pub async fn namespace_named(&self, name: &str) -> String {
        let name = name.to_owned();
        let api: Api<Namespace> = Api::all(self.client.clone());
        apply(
            &api,
            &name,
            json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}),
        )
        .await;
        name
    }

    pub fn ingresses(&self, namespace: &str) -> Api<Ingress> {
        Api::namespaced(self.client.clone(), namespace)
    }

    pub fn services(&self, namespace: &str) -> Api<Service> {
        Api::namespaced(self.client.clone(), namespace)
    }

    pub fn slices(&self, namespace: &str) -> Api<EndpointSlice> {
        Api::namespaced(self.client.clone(), namespace)
    }

    /// Applies a selector-less Service with one port `http: 80`.
    pub async fn service(&self, namespace: &str, name: &str) {
        apply(
            &self.services(namespace),
            name,
            json!({
                "apiVersion": "v1",
                "kind": "Service",
                "metadata": {"name": name, "namespace": namespace},
                "spec": {"ports": [{"name": "http", "port": 80}]},
            }),
        )
        .await;
    }

    /// Applies the EndpointSlice `NAME-0` of Service `service` with these endpoints.
    pub async fn endpoints(&self, namespace: &str, service: &str, endpoints: &[Endpoint]) {
        let name = format!("{service}-0");
        apply(
            &self.slices(namespace),
            &name,
            slice_json(namespace, &name, service, endpoints),
        )
        .await;
    }

    /// Applies an Ingress of class `class` routing `host` + Prefix paths to Service ports
    /// named `http`.
    pub async fn ingress(
        &self,
        namespace: &str,
        name: &str,
        class: &str,
        host: &str,
        paths: &[(&str, &str)],
    ) {
        apply(
            &self.ingresses(namespace),
            name,
            ingress_json(namespace, name, class, host, paths, "http"),
        )
        .await;
    }

    pub async fn delete_ingress(&self, namespace: &str, name: &str) {
        self.ingresses(namespace)
            .delete(name, &DeleteParams::default())
            .await
            .expect("delete Ingress");
    }

    /// The Events whose `regarding` is this Ingress.
    pub async fn events_about(&self, namespace: &str, ingress: &str) -> Vec<Event> {
        let api: Api<Event> = Api::namespaced(self.client.clone(), namespace);
        api.list(&ListParams::default())
            .await
            .expect("list Events")
            .items
            .into_iter()
            .filter(|event| {
                event.regarding.as_ref().is_some_and(|regarding| {
                    regarding.kind.as_deref() == Some("Ingress")
                        && regarding.name.as_deref() == Some(ingress)
                })
            })
            .collect()
    }

    /// `status.loadBalancer.ingress[*].ip` of an Ingress.
    pub async fn status_ips(&self, namespace: &str, name: &str) -> Vec<String> {
        let ingress = self
            .ingresses(namespace)
            .get(name)
            .await
            .expect("get Ingress");
        ingress
            .status
            .and_then(|status| status.load_balancer)
            .and_then(|balancer| balancer.ingress)
            .unwrap_or_default()
            .into_iter()
            .filter_map(|entry| entry.ip)
            .collect()
    }

    /// Runs `e2e/cluster VERB DIR`: `apiserver-stop`, `apiserver-start`; off the async
    /// workers, which keep serving the test's load meanwhile.
    pub async fn control(&self, verb: &'static str) {
        let run = crate::chart::cluster_script([verb.as_ref(), self.dir.as_os_str()]).await;
        assert!(run.success, "e2e/cluster {verb} failed: {}", run.stderr);
    }

    /// A namespace `NAME-PID` with Service `web` on one echo backend at `ip`.
    pub async fn namespace_with_web(&self, name: &str, ip: &str) -> (String, Echo) {
        let ns = self.namespace(name).await;
        let echo = Echo::start(&[ip]);
        self.service(&ns, "web").await;
        self.endpoints(&ns, "web", &[Endpoint::ready(echo.addrs[0])])
            .await;
        (ns, echo)
    }

    /// The common start of a test: a namespace `NAME-PID`, Service `web` on one echo
    /// backend at `ip`, Ingress `web` of class `e2e-NAME` for `host` and Prefix `path`, and
    /// Sluice (with `sluice_args`) serving it.
    pub async fn scenario(
        &self,
        name: &str,
        ip: &str,
        host: &str,
        path: &str,
        sluice_args: &[&str],
    ) -> Scenario {
        let (ns, echo) = self.namespace_with_web(name, ip).await;
        let class = format!("e2e-{name}");
        self.ingress(&ns, "web", &class, host, &[(path, "web")])
            .await;
        let sluice = self.sluice(&class, sluice_args).await;
        eventually(
            Duration::from_secs(5),
            "the first Ingress is served",
            async || sluice.get(host, path).await.status == 200,
        )
        .await;
        Scenario {
            ns,
            class,
            echo,
            sluice,
        }
    }

    /// Starts `sluice run` against this cluster. `args` come after the common ones.
    pub async fn sluice(&self, class: &str, args: &[&str]) -> Sluice {
        let sluice = self.spawn_sluice(class, args);
        sluice.wait_ready().await;
        sluice
    }

    pub fn spawn_sluice(&self, class: &str, args: &[&str]) -> Sluice {
        self.spawn_sluice_as(&self.sluice_kubeconfig, class, args)
    }

    /// Starts `sluice run` with the identity of `kubeconfig`, without waiting for it.
    pub fn spawn_sluice_as(&self, kubeconfig: &Path, class: &str, args: &[&str]) -> Sluice {
        let mut all = vec![
            "--ingress-class".to_owned(),
            class.to_owned(),
            "--debounce".to_owned(),
            "50ms".to_owned(),
            "--dev-remap-endpoints".to_owned(),
            REMAP.to_owned(),
        ];
        all.extend(args.iter().map(|arg| (*arg).to_owned()));
        let kubeconfig = kubeconfig.display().to_string();
        Sluice::spawn(&all, &[("KUBECONFIG", kubeconfig.as_str())], &self.dir)
    }
}

/// What [`Cluster::scenario`] set up.
pub struct Scenario {
    pub ns: String,
    pub class: String,
    pub echo: Echo,
    pub sluice: Sluice,
}

/// One endpoint of an EndpointSlice and its conditions.
#[derive(Debug, Clone, Copy)]
pub struct Endpoint {
    pub addr: SocketAddr,
    pub ready: bool,
    pub serving: bool,
    pub terminating: bool,
}

impl Endpoint {
    pub fn ready(addr: SocketAddr) -> Endpoint {
        Endpoint {
            addr,
            ready: true,
            serving: true,
            terminating: false,
        }
    }

    pub fn not_ready(addr: SocketAddr) -> Endpoint {
        Endpoint {
            ready: false,
            serving: false,
            ..Endpoint::ready(addr)
        }
    }

    /// Shutting down but still answering, as a pod in its termination grace period.
    pub fn terminating(addr: SocketAddr) -> Endpoint {
        Endpoint {
            ready: false,
            serving: true,
            terminating: true,
            addr,
        }
    }
}

/// The API server refuses loopback endpoints, so 127.0.0.N is written as 192.0.2.N (a
/// documentation network nothing connects to) and Sluice, started with
/// `--dev-remap-endpoints`, maps it back.
pub const REMAP: &str = "192.0.2.0/24=127.0.0.0/24";

fn slice_address(addr: SocketAddr) -> String {
    match addr.ip() {
        std::net::IpAddr::V4(ip) if ip.octets()[..3] == [127, 0, 0] => {
            format!("192.0.2.{}", ip.octets()[3])
        }
        other => panic!("e2e backends listen on 127.0.0.N, not {other}"),
    }
}

/// An EndpointSlice; every endpoint must share one port, as in a real slice.
pub fn slice_json(namespace: &str, name: &str, service: &str, endpoints: &[Endpoint]) -> Value {
    let port = endpoints
        .first()
        .map_or(80, |endpoint| endpoint.addr.port());
    assert!(
        endpoints
            .iter()
            .all(|endpoint| endpoint.addr.port() == port),
        "one port per slice"
    );
    let listed: Vec<Value> = endpoints
        .iter()
        .map(|endpoint| {
            json!({
                "addresses": [slice_address(endpoint.addr)],
                "conditions": {
                    "ready": endpoint.ready,
                    "serving": endpoint.serving,
                    "terminating": endpoint.terminating,
                },
            })
        })
        .collect();
    json!({
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": {"kubernetes.io/service-name": service},
        },
        "addressType": "IPv4",
        "ports": [{"name": "http", "port": port, "protocol": "TCP"}],
        "endpoints": listed,
    })
}

/// An Ingress with one host; each path goes to `(path, service)` on port name `port_name`.
pub fn ingress_json(
    namespace: &str,
    name: &str,
    class: &str,
    host: &str,
    paths: &[(&str, &str)],
    port_name: &str,
) -> Value {
    let paths: Vec<Value> = paths
        .iter()
        .map(|(path, service)| {
            json!({
                "path": path,
                "pathType": "Prefix",
                "backend": {"service": {"name": service, "port": {"name": port_name}}},
            })
        })
        .collect();
    json!({
        "apiVersion": "networking.k8s.io/v1",
        "kind": "Ingress",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "ingressClassName": class,
            "rules": [{"host": host, "http": {"paths": paths}}],
        },
    })
}

/// Server-side apply as the test's own field manager.
pub async fn apply<K>(api: &Api<K>, name: &str, object: Value)
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    api.patch(
        name,
        &PatchParams::apply("sluice-e2e").force(),
        &Patch::Apply(&object),
    )
    .await
    .unwrap_or_else(|error| panic!("apply {name}: {error}"));
}

/// Creates without apply, for bulk creation where the object is known to be new.
pub async fn create<K>(api: &Api<K>, object: &K)
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + serde::Serialize + std::fmt::Debug,
{
    api.create(&PostParams::default(), object)
        .await
        .unwrap_or_else(|error| panic!("create: {error}"));
}

/// Counts how often each echo address answered `count` requests for `host` + `path`.
pub async fn spread(
    sluice: &Sluice,
    host: &str,
    path: &str,
    count: usize,
) -> BTreeMap<String, usize> {
    let mut seen = BTreeMap::new();
    for _ in 0..count {
        let reply = sluice.get(host, path).await;
        assert_eq!(reply.status, 200, "{host}{path}: {}", reply.body);
        *seen
            .entry(reply.echo_addr().unwrap_or_default())
            .or_insert(0) += 1;
    }
    seen
}

/// Steady load through Sluice from a few keep-alive clients, counting every answer that
/// is not a 200 (and every transport error) as a failure.
pub struct Load {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    workers: Vec<tokio::task::JoinHandle<(usize, Vec<String>)>>,
}

/// What a [`Load`] saw.
#[derive(Debug)]
pub struct LoadReport {
    pub requests: usize,
    pub failures: Vec<String>,
}

impl Load {
    pub fn start(addr: SocketAddr, host: &str, path: &str, workers: usize) -> Load {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let workers = (0..workers)
            .map(|_| {
                let stop = std::sync::Arc::clone(&stop);
                let host = host.to_owned();
                let path = path.to_owned();
                tokio::spawn(async move {
                    let client = crate::support::shared_client();
                    let mut requests = 0;
                    let mut failures = Vec::new();
                    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                        requests += 1;
                        let reply = crate::support::send_with(
                            &client,
                            addr,
                            "GET",
                            &host,
                            &path,
                            &[],
                            bytes::Bytes::new(),
                        )
                        .await;
                        match reply {
                            Ok(reply) if reply.status == 200 => {}
                            Ok(reply) => failures.push(format!("{}: {}", reply.status, reply.body)),
                            Err(error) => failures.push(error),
                        }
                        // Bounded rate: about 200 requests/s per worker at most.
                        tokio::time::sleep(Duration::from_millis(5)).await;
                    }
                    (requests, failures)
                })
            })
            .collect();
        Load { stop, workers }
    }

    pub async fn finish(self) -> LoadReport {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let mut report = LoadReport {
            requests: 0,
            failures: Vec::new(),
        };
        for worker in self.workers {
            let (requests, failures) = worker.await.expect("load worker");
            report.requests += requests;
            report.failures.extend(failures);
        }
        report
    }
}

/// `(status, reason)` of the condition `type_` in a policy's status.
pub fn policy_condition(
    status: Option<&sluice_crds::PolicyStatus>,
    type_: &str,
) -> Option<(String, String)> {
    status?
        .conditions
        .iter()
        .find(|condition| condition.type_ == type_)
        .map(|condition| (condition.status.clone(), condition.reason.clone()))
}
