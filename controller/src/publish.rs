//! From objects to a published snapshot: compile, diff against what is served, publish.
//!
//! Used by every object source (the YAML folder now, the Kubernetes API next). Publishing
//! only happens when something changed, and an unchanged route table or endpoint table is
//! passed on as the very same `Arc`, so the data plane can skip work.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Instant;

use prometheus_client::metrics::histogram::Histogram;
use sluice_dataplane::live::{ConfigReport, Publication};
use sluice_dataplane::snapshot::{BackendTable, RouteTable, Snapshot, TlsTable};
use tokio::sync::watch;

use crate::compile::{
    ClusterObjects, CompileOptions, Compiled, LastGood, compile, compile_backends,
};
use crate::error::CompileError;
use crate::object_key::{ObjectKey, ObjectKind};

/// Problems the endpoint fast lane found, by EndpointSlice.
pub type EndpointProblems = BTreeMap<ObjectKey, Vec<CompileError>>;

/// What one publish did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PublishSummary {
    /// The generation being served after this call.
    pub generation: u64,
    /// False when nothing changed and nothing was sent.
    pub published: bool,
    pub routes_changed: bool,
    pub problems: usize,
}

/// Compiles objects and publishes snapshots on a watch channel.
#[derive(Debug)]
pub struct Publisher {
    options: CompileOptions,
    sender: watch::Sender<Option<Publication>>,
    generation: u64,
    last_good: LastGood,
    /// Problems from the full compile (every kind but EndpointSlice) and from sources.
    route_problems: Vec<String>,
    /// Problems from the endpoint fast lane.
    endpoint_problems: Vec<String>,
    logged: BTreeSet<String>,
    /// Where the time of each full compile goes, when someone is watching.
    compile_seconds: Option<Histogram>,
}

impl Publisher {
    pub fn new(options: CompileOptions) -> (Self, watch::Receiver<Option<Publication>>) {
        let (sender, receiver) = watch::channel(None);
        let publisher = Publisher {
            options,
            sender,
            generation: 0,
            last_good: LastGood::default(),
            route_problems: Vec::new(),
            endpoint_problems: Vec::new(),
            logged: BTreeSet::new(),
            compile_seconds: None,
        };
        (publisher, receiver)
    }

    /// Records the duration of every full compile in `histogram`.
    pub fn record_compile_seconds(mut self, histogram: Histogram) -> Self {
        self.compile_seconds = Some(histogram);
        self
    }

    pub fn subscribe(&self) -> watch::Receiver<Option<Publication>> {
        self.sender.subscribe()
    }

    /// The snapshot being served, if any.
    pub fn current(&self) -> Option<Arc<Snapshot>> {
        self.sender
            .borrow()
            .as_ref()
            .map(|p| Arc::clone(&p.snapshot))
    }

    /// Compiles everything. `source_problems` are problems the source found before
    /// compiling (files that did not parse, say); they are reported with the rest.
    pub fn publish_all(
        &mut self,
        objects: &ClusterObjects,
        source_problems: Vec<String>,
    ) -> (Compiled, PublishSummary) {
        let started = Instant::now();
        let mut compiled = compile(objects, &self.last_good, &self.options);
        if let Some(histogram) = &self.compile_seconds {
            histogram.observe(started.elapsed().as_secs_f64());
        }
        self.last_good = compiled.last_good.clone();
        let (endpoint_problems, route_problems): (Vec<_>, Vec<_>) =
            problem_lines(&compiled.statuses)
                .partition(|(kind, _)| *kind == ObjectKind::EndpointSlice);
        self.route_problems = source_problems
            .into_iter()
            .chain(route_problems.into_iter().map(|(_, line)| line))
            .collect();
        self.endpoint_problems = endpoint_problems
            .into_iter()
            .map(|(_, line)| line)
            .collect();
        // The tables move into the snapshot; the caller reads statuses, not tables.
        let summary = self.send(
            Some((
                std::mem::take(&mut compiled.snapshot_routes),
                std::mem::take(&mut compiled.tls),
            )),
            std::mem::take(&mut compiled.backends),
        );
        (compiled, summary)
    }

    /// The endpoint fast lane: recomputes endpoints against the routes being served, and
    /// leaves the route table untouched. Falls back to nothing when nothing is served yet.
    /// Returns the endpoint problems by object with what was published.
    pub fn publish_endpoints(
        &mut self,
        objects: &ClusterObjects,
    ) -> Option<(EndpointProblems, PublishSummary)> {
        let current = self.current()?;
        let (backends, statuses) = compile_backends(objects, &current.routes);
        self.endpoint_problems = problem_lines(&statuses).map(|(_, line)| line).collect();
        Some((statuses, self.send(None, backends)))
    }

    /// Publishes new tables; `routes` is `None` on the endpoint fast lane (route and TLS
    /// tables unchanged).
    fn send(
        &mut self,
        routes: Option<(RouteTable, TlsTable)>,
        backends: BackendTable,
    ) -> PublishSummary {
        let problems: Vec<String> = self
            .route_problems
            .iter()
            .chain(self.endpoint_problems.iter())
            .cloned()
            .collect();
        self.log_new_problems(&problems);
        let report = ConfigReport { problems };
        let previous = self.sender.borrow().clone();
        let (routes, tls) = match routes {
            Some((routes, tls)) => (Some(routes), Some(tls)),
            None => (None, None),
        };
        let (snapshot_routes, routes_changed) = match (&previous, routes) {
            (Some(previous), Some(routes)) if *previous.snapshot.routes == routes => {
                (Arc::clone(&previous.snapshot.routes), false)
            }
            (_, Some(routes)) => (Arc::new(routes), true),
            (Some(previous), None) => (Arc::clone(&previous.snapshot.routes), false),
            (None, None) => (Arc::default(), true),
        };
        let snapshot_tls = match (&previous, tls) {
            (Some(previous), Some(tls)) if *previous.snapshot.tls == tls => {
                Arc::clone(&previous.snapshot.tls)
            }
            (_, Some(tls)) => Arc::new(tls),
            (Some(previous), None) => Arc::clone(&previous.snapshot.tls),
            (None, None) => Arc::default(),
        };
        let snapshot_backends = match &previous {
            Some(previous) if *previous.snapshot.backends == backends => {
                Arc::clone(&previous.snapshot.backends)
            }
            _ => Arc::new(backends),
        };
        let unchanged = previous.as_ref().is_some_and(|previous| {
            Arc::ptr_eq(&previous.snapshot.routes, &snapshot_routes)
                && Arc::ptr_eq(&previous.snapshot.tls, &snapshot_tls)
                && Arc::ptr_eq(&previous.snapshot.backends, &snapshot_backends)
                && *previous.report == report
        });
        let problem_count = report.problems.len();
        if unchanged {
            return PublishSummary {
                generation: self.generation,
                published: false,
                routes_changed: false,
                problems: problem_count,
            };
        }
        self.generation += 1;
        let snapshot = Snapshot {
            generation: self.generation,
            routes: snapshot_routes,
            backends: snapshot_backends,
            tls: snapshot_tls,
        };
        self.sender.send_replace(Some(Publication {
            snapshot: Arc::new(snapshot),
            report: Arc::new(report),
        }));
        PublishSummary {
            generation: self.generation,
            published: true,
            routes_changed,
            problems: problem_count,
        }
    }

    /// Logs each problem once, when it first appears.
    fn log_new_problems(&mut self, problems: &[String]) {
        let current: BTreeSet<String> = problems.iter().cloned().collect();
        for problem in current.difference(&self.logged) {
            tracing::warn!(problem = %problem, "configuration problem");
        }
        for solved in self.logged.difference(&current) {
            tracing::info!(problem = %solved, "configuration problem resolved");
        }
        self.logged = current;
    }
}

/// One line per error, `Kind namespace/name: message`, with the kind for partitioning.
pub fn problem_lines(
    statuses: &BTreeMap<ObjectKey, Vec<CompileError>>,
) -> impl Iterator<Item = (ObjectKind, String)> + '_ {
    statuses.iter().flat_map(|(key, errors)| {
        errors
            .iter()
            .map(move |error| (key.kind, format!("{key}: {error}")))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compile::fixtures::{backend, endpoint_slice, ingress, path, rule, service};
    use serde_json::json;

    fn objects(addresses: &[&str]) -> ClusterObjects {
        let endpoints = addresses
            .iter()
            .map(|address| json!({ "addresses": [address], "conditions": { "ready": true } }))
            .collect();
        ClusterObjects {
            ingresses: vec![Arc::new(ingress(
                "shop",
                "web",
                json!({}),
                json!({
                    "ingressClassName": "sluice",
                    "rules": [rule(Some("shop.example"), vec![path("/", "Prefix", backend("web", 80))])],
                }),
            ))],
            services: vec![Arc::new(service("shop", "web", &[(Some("http"), 80)]))],
            endpoint_slices: vec![Arc::new(endpoint_slice(
                "shop",
                "web-1",
                "web",
                "IPv4",
                &[(Some("http"), 8080)],
                endpoints,
            ))],
            ..ClusterObjects::default()
        }
    }

    fn served(receiver: &watch::Receiver<Option<Publication>>) -> Arc<Snapshot> {
        Arc::clone(&receiver.borrow().as_ref().expect("published").snapshot)
    }

    #[test]
    fn nothing_is_published_when_nothing_changed() {
        let (mut publisher, receiver) = Publisher::new(CompileOptions::default());
        assert!(
            receiver.borrow().is_none(),
            "nothing before the first compile"
        );
        let (_, first) = publisher.publish_all(&objects(&["10.0.0.1"]), Vec::new());
        assert!(first.published && first.routes_changed);
        assert_eq!(first.generation, 1);
        let (_, again) = publisher.publish_all(&objects(&["10.0.0.1"]), Vec::new());
        assert!(!again.published);
        assert_eq!(served(&receiver).generation, 1);
    }

    #[test]
    fn an_endpoint_change_keeps_the_route_table() {
        let (mut publisher, receiver) = Publisher::new(CompileOptions::default());
        publisher.publish_all(&objects(&["10.0.0.1"]), Vec::new());
        let before = served(&receiver);

        // Through a full compile: equal routes are passed on as the same Arc.
        let (_, summary) = publisher.publish_all(&objects(&["10.0.0.1", "10.0.0.2"]), Vec::new());
        assert!(summary.published && !summary.routes_changed);
        let after = served(&receiver);
        assert!(Arc::ptr_eq(&before.routes, &after.routes));
        assert_ne!(before.backends, after.backends);
        assert_eq!(after.generation, 2);

        // Through the fast lane: only the backend table is computed.
        let (problems, summary) = publisher
            .publish_endpoints(&objects(&["10.0.0.3"]))
            .expect("something is served");
        assert!(problems.values().all(Vec::is_empty), "{problems:?}");
        assert!(summary.published && !summary.routes_changed);
        let fast = served(&receiver);
        assert!(Arc::ptr_eq(&before.routes, &fast.routes));
        let endpoints: Vec<String> = fast
            .backends
            .backends
            .values()
            .flat_map(|b| b.endpoints.iter().map(|e| e.addr.to_string()))
            .collect();
        assert_eq!(endpoints, ["10.0.0.3:8080"]);
    }

    #[test]
    fn the_fast_lane_waits_for_a_first_full_compile() {
        let (mut publisher, receiver) = Publisher::new(CompileOptions::default());
        assert!(
            publisher
                .publish_endpoints(&objects(&["10.0.0.1"]))
                .is_none()
        );
        assert!(receiver.borrow().is_none());
    }

    #[test]
    fn problems_are_published_with_the_snapshot() {
        let (mut publisher, receiver) = Publisher::new(CompileOptions::default());
        let mut broken = objects(&["10.0.0.1"]);
        Arc::make_mut(&mut broken.ingresses[0])
            .spec
            .as_mut()
            .unwrap()
            .rules
            .as_mut()
            .unwrap()[0]
            .host = Some("bad host".into());
        publisher.publish_all(&broken, vec!["folder/x.yaml: not valid YAML".into()]);
        let report = Arc::clone(&receiver.borrow().as_ref().unwrap().report);
        assert_eq!(report.problems.len(), 2, "{:?}", report.problems);
        assert_eq!(report.problems[0], "folder/x.yaml: not valid YAML");
        assert!(
            report.problems[1].starts_with("Ingress shop/web: spec.rules[0].host"),
            "{:?}",
            report.problems
        );
    }
}
