//! The Helm chart and the install manifests on the real API server: schema, install,
//! upgrade, uninstall, a strict server-side dry run of the rendered YAML, and RBAC rules
//! proven one by one.

use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

use k8s_openapi::api::apps::v1::{DaemonSet, Deployment};
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Container, Pod, Secret, Service, ServiceAccount};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, PolicyRule, Role, RoleBinding};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{DeleteParams, ListParams, Patch, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Api, Client};
use serde_json::{Value, json};
use sluice_crds::{Auth, Cache, PolicyStatus, RateLimit};

use crate::chart::{
    self, CHART, Rendered, ToolRun, cluster_script, rendered_objects, strict_dry_run,
};
use crate::harness::{Cluster, Endpoint, apply, ingress_json};
use crate::support::{Echo, holds_within};

const SECOND: Duration = Duration::from_secs(1);

/// Every object of a rendered release exists in the API server (or, with `false`, none
/// does any more).
async fn assert_objects_exist(
    cluster: &Cluster,
    objects: &[Rendered],
    namespace: &str,
    exist: bool,
) {
    for object in objects {
        let api = cluster.api_for(object, namespace).await;
        let found = api
            .get_opt(&object.name)
            .await
            .unwrap_or_else(|error| panic!("get {} {}: {error}", object.kind, object.name));
        assert_eq!(
            found.is_some(),
            exist,
            "{} {} should {}exist",
            object.kind,
            object.name,
            if exist { "" } else { "no longer " }
        );
    }
}

fn kinds(objects: &[Rendered]) -> BTreeSet<&str> {
    objects.iter().map(|object| object.kind.as_str()).collect()
}

fn container(pod: &k8s_openapi::api::core::v1::PodSpec) -> &Container {
    pod.containers
        .iter()
        .find(|container| container.name == "sluice")
        .expect("the sluice container")
}

/// Installs the Prometheus Operator's ServiceMonitor and PrometheusRule CRDs (the real
/// ones, from its pinned Go module) so the chart's monitoring objects meet their schemas.
async fn install_monitoring_crds(cluster: &Cluster) {
    let fetched = cluster_script(["monitoring-crds"]).await;
    assert!(fetched.success, "{}", fetched.stderr);
    let folder = fetched.stdout;
    let crds: Api<CustomResourceDefinition> = Api::all(cluster.client.clone());
    for file in [
        "monitoring.coreos.com_servicemonitors.yaml",
        "monitoring.coreos.com_prometheusrules.yaml",
    ] {
        let text = std::fs::read_to_string(Path::new(folder.trim()).join(file)).expect("CRD file");
        for object in rendered_objects(&text) {
            apply(&crds, &object.name, object.body).await;
        }
    }
    for name in [
        "servicemonitors.monitoring.coreos.com",
        "prometheusrules.monitoring.coreos.com",
    ] {
        crate::harness::eventually(10 * SECOND, "the monitoring CRDs are served", async || {
            crds.get_opt(name)
                .await
                .ok()
                .flatten()
                .and_then(|crd| crd.status)
                .and_then(|status| status.conditions)
                .is_some_and(|conditions| {
                    conditions.iter().any(|condition| {
                        condition.type_ == "Established" && condition.status == "True"
                    })
                })
        })
        .await;
    }
}

/// `helm upgrade RELEASE` with these `--set` values (and nothing reused from before).
async fn upgrade(cluster: &Cluster, release: &str, namespace: &str, values: &[&str]) {
    let mut args = vec!["upgrade", release, CHART, "--namespace", namespace];
    for value in values {
        args.extend(["--set", value]);
    }
    let run = cluster.helm(&args).await;
    assert!(run.success, "helm upgrade --set {values:?}: {}", run.stderr);
}

/// Runs the pinned Prometheus rule checker (`e2e/cluster promrules`) on a rule file with
/// these groups.
async fn check_rules(cluster: &Cluster, name: &str, spec: &Value) -> ToolRun {
    let file = cluster.dir.join(format!("{name}.rules.yaml"));
    std::fs::write(&file, serde_yaml_ng::to_string(spec).expect("YAML")).expect("write rules");
    cluster_script([std::ffi::OsStr::new("promrules"), file.as_os_str()]).await
}

/// Applies every object with a strict server-side dry run; the first refusal as an error.
async fn dry_run(cluster: &Cluster, objects: &[Rendered], namespace: &str) -> Result<(), String> {
    for object in objects {
        let api = cluster.api_for(object, namespace).await;
        api.patch(&object.name, &strict_dry_run(), &Patch::Apply(&object.body))
            .await
            .map_err(|error| format!("{} {}: {error}", object.kind, object.name))?;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a Kubernetes API server: run e2e/run"]
async fn e2e_10_the_helm_chart_installs_upgrades_and_uninstalls() {
    let cluster = Cluster::connect().await;

    // values.schema.json: a bad value fails the install before anything reaches the cluster.
    for (value, complaint) in [
        (
            "kind=StatefulSet",
            "at '/kind': value must be one of 'Deployment', 'DaemonSet'",
        ),
        ("service.type=External", "at '/service/type'"),
        (
            "controller.leaderElection.leaseDuration=soon",
            "at '/controller/leaderElection/leaseDuration'",
        ),
        ("containerPorts.http=70000", "at '/containerPorts/http'"),
        ("replicas=3", "additional properties 'replicas' not allowed"),
    ] {
        let run = cluster
            .helm(&[
                "install",
                "refused",
                CHART,
                "--namespace",
                "default",
                "--set",
                value,
            ])
            .await;
        assert!(!run.success, "--set {value} was accepted");
        assert!(
            run.stderr
                .contains("values don't meet the specifications of the schema"),
            "--set {value}: {}",
            run.stderr
        );
        assert!(
            run.stderr.contains(complaint),
            "--set {value}: {}",
            run.stderr
        );
        let said = run
            .stderr
            .lines()
            .find(|line| line.contains(complaint))
            .unwrap_or_default();
        println!("schema: --set {value} → {}", said.trim());
    }
    // Values the schema cannot judge alone are refused by the templates, with a reason.
    for (value, complaint) in [
        (
            "kind=DaemonSet,hostNetwork=true,hostPorts.enabled=true",
            "hostNetwork and hostPorts.enabled together",
        ),
        (
            "terminationGracePeriodSeconds=20",
            "must be longer than controller.shutdownDelay + controller.drainTimeout",
        ),
        (
            "controller.extraArgs={--lease-name=other}",
            "--lease-name is set by the chart",
        ),
    ] {
        let run = cluster
            .helm(&["template", "refused", CHART, "--set", value])
            .await;
        assert!(!run.success, "--set {value} was accepted");
        assert!(
            run.stderr.contains(complaint),
            "--set {value}: {}",
            run.stderr
        );
    }
    let listed = cluster.helm(&["list", "--all-namespaces", "--short"]).await;
    assert!(listed.success, "{}", listed.stderr);
    assert!(!listed.stdout.lines().any(|line| line == "refused"));

    // Install.
    let ns = format!("chart-{}", std::process::id());
    let release = "edge";
    let class = format!("e2e-chart-{}", std::process::id());
    let class_value = format!("ingressClass.name={class}");
    let install = cluster
        .helm(&[
            "install",
            release,
            CHART,
            "--namespace",
            &ns,
            "--create-namespace",
            "--set",
            &class_value,
        ])
        .await;
    assert!(install.success, "helm install: {}", install.stderr);
    let manifest = cluster
        .helm(&["get", "manifest", release, "--namespace", &ns])
        .await;
    let installed = rendered_objects(&manifest.stdout);
    assert_eq!(
        kinds(&installed),
        BTreeSet::from([
            "ClusterRole",
            "ClusterRoleBinding",
            "Deployment",
            "IngressClass",
            "PodDisruptionBudget",
            "Role",
            "RoleBinding",
            "Service",
            "ServiceAccount",
        ])
    );
    assert_objects_exist(&cluster, &installed, &ns, true).await;
    println!(
        "helm install: {} objects exist: {}",
        installed.len(),
        installed
            .iter()
            .map(|object| format!("{}/{}", object.kind, object.name))
            .collect::<Vec<_>>()
            .join(", ")
    );
    // (That the chart installs its CRDs is checked on the fresh cluster, where the first
    // release goes in: Cluster::release_identity.)

    // What the Deployment runs: non-root, read-only, no capabilities, probes, limits, and
    // the flags that tie it to this release.
    let deployments: Api<Deployment> = Api::namespaced(cluster.client.clone(), &ns);
    let deployment = deployments.get("edge-sluice").await.expect("Deployment");
    let pod = deployment
        .spec
        .and_then(|spec| spec.template.spec)
        .expect("pod spec");
    assert_eq!(pod.service_account_name.as_deref(), Some("edge-sluice"));
    let pod_security = pod.security_context.clone().expect("pod securityContext");
    assert_eq!(pod_security.run_as_non_root, Some(true));
    assert!(
        pod_security.sysctls.is_none(),
        "no sysctl on unprivileged ports"
    );
    let sluice = container(&pod);
    let security = sluice.security_context.clone().expect("securityContext");
    assert_eq!(security.read_only_root_filesystem, Some(true));
    assert_eq!(security.allow_privilege_escalation, Some(false));
    let capabilities = security.capabilities.expect("capabilities");
    assert_eq!(capabilities.drop, Some(vec!["ALL".to_owned()]));
    assert_eq!(
        capabilities.add, None,
        "no capability on unprivileged ports"
    );
    let probe_path = |probe: Option<&k8s_openapi::api::core::v1::Probe>| {
        probe
            .and_then(|probe| probe.http_get.as_ref())
            .and_then(|get| get.path.clone())
    };
    assert_eq!(
        probe_path(sluice.liveness_probe.as_ref()).as_deref(),
        Some("/healthz")
    );
    assert_eq!(
        probe_path(sluice.readiness_probe.as_ref()).as_deref(),
        Some("/readyz")
    );
    let resources = sluice.resources.clone().expect("resources");
    assert!(
        resources
            .requests
            .is_some_and(|requests| requests.contains_key("cpu"))
    );
    assert!(
        resources
            .limits
            .is_some_and(|limits| limits.contains_key("memory"))
    );
    let args = sluice.args.clone().unwrap_or_default();
    for wanted in [
        format!("--ingress-class={class}"),
        "--lease-name=edge-sluice-leader".to_owned(),
        format!("--publish-service={ns}/edge-sluice"),
        "--https-addr=0.0.0.0:8443".to_owned(),
    ] {
        assert!(args.contains(&wanted), "{wanted} missing from {args:?}");
    }
    assert!(
        pod.topology_spread_constraints
            .is_some_and(|spread| spread.len() == 2)
    );

    // RBAC: no wildcards anywhere, and the Lease rule names this release's Lease only.
    let cluster_role: Api<ClusterRole> = Api::all(cluster.client.clone());
    let rules = cluster_role
        .get(&format!("edge-sluice-{ns}"))
        .await
        .expect("ClusterRole")
        .rules
        .unwrap_or_default();
    for rule in &rules {
        let all = rule
            .verbs
            .iter()
            .chain(rule.resources.iter().flatten())
            .chain(rule.api_groups.iter().flatten());
        for word in all {
            assert_ne!(word, "*", "wildcard in {rule:?}");
        }
    }
    let role: Api<Role> = Api::namespaced(cluster.client.clone(), &ns);
    let lease_rules = role
        .get("edge-sluice")
        .await
        .expect("Role")
        .rules
        .unwrap_or_default();
    assert!(lease_rules.iter().any(|rule| {
        rule.resource_names.as_deref() == Some(&["edge-sluice-leader".to_owned()][..])
            && rule.verbs == ["get", "update"]
    }));

    // Upgrade: a DaemonSet on privileged ports through hostPorts.
    upgrade(
        &cluster,
        release,
        &ns,
        &[
            &class_value,
            "kind=DaemonSet,hostPorts.enabled=true,containerPorts.http=80,containerPorts.https=443",
        ],
    )
    .await;
    assert!(
        deployments
            .get_opt("edge-sluice")
            .await
            .expect("get")
            .is_none(),
        "the Deployment is gone"
    );
    let daemon_sets: Api<DaemonSet> = Api::namespaced(cluster.client.clone(), &ns);
    let pod = daemon_sets
        .get("edge-sluice")
        .await
        .expect("DaemonSet")
        .spec
        .and_then(|spec| spec.template.spec)
        .expect("pod spec");
    let sysctls = pod
        .security_context
        .clone()
        .and_then(|context| context.sysctls)
        .unwrap_or_default();
    assert!(
        sysctls.iter().any(
            |sysctl| sysctl.name == "net.ipv4.ip_unprivileged_port_start" && sysctl.value == "80"
        ),
        "{sysctls:?}"
    );
    let sluice = container(&pod);
    let added = sluice
        .security_context
        .clone()
        .and_then(|context| context.capabilities)
        .and_then(|capabilities| capabilities.add);
    assert_eq!(added, Some(vec!["NET_BIND_SERVICE".to_owned()]));
    let ports = sluice.ports.clone().unwrap_or_default();
    assert!(
        ports
            .iter()
            .any(|port| port.container_port == 80 && port.host_port == Some(80))
    );

    // Upgrade: back to a Deployment, autoscaled, a NodePort Service, and the Prometheus
    // Operator objects (their real CRDs installed first).
    install_monitoring_crds(&cluster).await;
    upgrade(&cluster, release, &ns, &[&class_value, "autoscaling.enabled=true,service.type=NodePort,serviceMonitor.enabled=true,prometheusRule.enabled=true"]).await;
    assert!(
        daemon_sets
            .get_opt("edge-sluice")
            .await
            .expect("get")
            .is_none()
    );
    assert!(
        deployments
            .get_opt("edge-sluice")
            .await
            .expect("get")
            .is_some()
    );
    let autoscalers: Api<HorizontalPodAutoscaler> = Api::namespaced(cluster.client.clone(), &ns);
    let autoscaler = autoscalers.get("edge-sluice").await.expect("HPA");
    let spec = autoscaler.spec.expect("HPA spec");
    assert_eq!((spec.min_replicas, spec.max_replicas), (Some(2), 10));
    let services: Api<Service> = Api::namespaced(cluster.client.clone(), &ns);
    let traffic = services.get("edge-sluice").await.expect("Service");
    assert_eq!(
        traffic.spec.and_then(|spec| spec.type_).as_deref(),
        Some("NodePort")
    );
    let manifest = cluster
        .helm(&["get", "manifest", release, "--namespace", &ns])
        .await;
    let upgraded = rendered_objects(&manifest.stdout);
    assert!(kinds(&upgraded).is_superset(&BTreeSet::from([
        "HorizontalPodAutoscaler",
        "ServiceMonitor",
        "PrometheusRule",
    ])));
    assert_objects_exist(&cluster, &upgraded, &ns, true).await;
    let rendered_deployment = upgraded
        .iter()
        .find(|object| object.kind == "Deployment")
        .expect("Deployment");
    assert!(
        rendered_deployment.body["spec"].get("replicas").is_none(),
        "the autoscaler owns the replica count"
    );
    // The ServiceMonitor scrapes the metrics Service, so the series' job is that Service's
    // name, which is what every alert selects.
    let monitor = upgraded
        .iter()
        .find(|object| object.kind == "ServiceMonitor")
        .expect("ServiceMonitor");
    let metrics_service = upgraded
        .iter()
        .find(|object| object.kind == "Service" && object.name == "edge-sluice-metrics")
        .expect("the metrics Service");
    let selected = monitor.body["spec"]["selector"]["matchLabels"]
        .as_object()
        .expect("matchLabels");
    for (key, value) in selected {
        assert_eq!(
            &metrics_service.body["metadata"]["labels"][key], value,
            "{key}"
        );
    }
    let traffic_service = upgraded
        .iter()
        .find(|object| object.kind == "Service" && object.name == "edge-sluice")
        .expect("the traffic Service");
    assert_ne!(
        traffic_service.body["metadata"]["labels"]["app.kubernetes.io/component"],
        json!("metrics"),
        "the ServiceMonitor does not scrape the traffic Service"
    );
    // The alerts as stored: PromQL and templates checked as Prometheus loads them.
    let rules_api = cluster
        .dynamic_api("monitoring.coreos.com/v1", "PrometheusRule", Some(&ns))
        .await;
    let stored = rules_api.get("edge-sluice").await.expect("PrometheusRule");
    let spec = stored.data["spec"].clone();
    let alerts: Vec<&str> = spec["groups"][0]["rules"]
        .as_array()
        .expect("rules")
        .iter()
        .filter_map(|rule| rule["alert"].as_str())
        .collect();
    for wanted in [
        "SluiceHighErrorRatio",
        "SluiceBackendWithoutEndpoints",
        "SluiceConfigErrors",
        "SluiceCertificateExpiresSoon",
    ] {
        assert!(alerts.contains(&wanted), "{wanted} missing from {alerts:?}");
    }
    for rule in spec["groups"][0]["rules"].as_array().expect("rules") {
        let expr = rule["expr"].as_str().expect("expr");
        assert!(expr.contains(r#"job="edge-sluice-metrics""#), "{expr}");
    }
    let checked = check_rules(&cluster, "alerts", &spec).await;
    assert!(checked.success, "{}{}", checked.stdout, checked.stderr);
    println!("promrules: {}", checked.stdout.trim());
    let mut broken = spec.clone();
    broken["groups"][0]["rules"][1]["expr"] =
        json!("max byy (backend) (sluice_backend_endpoints) == 0");
    let refused = check_rules(&cluster, "broken-alerts", &broken).await;
    assert!(
        !refused.success && refused.stdout.contains("parse error"),
        "{refused:?}"
    );
    let history = cluster
        .helm(&["history", release, "--namespace", &ns, "--output", "json"])
        .await;
    let revisions: Value = serde_json::from_str(&history.stdout).expect("helm history JSON");
    assert_eq!(revisions.as_array().map(Vec::len), Some(3));

    // Uninstall: every object goes.
    let uninstall = cluster
        .helm(&["uninstall", release, "--namespace", &ns])
        .await;
    assert!(uninstall.success, "helm uninstall: {}", uninstall.stderr);
    assert_objects_exist(&cluster, &upgraded, &ns, false).await;
    println!(
        "helm upgrade ×2 and uninstall: {} objects removed",
        upgraded.len()
    );

    // manifests/sluice.yaml: the committed install manifest, as `kubectl apply
    // --server-side --dry-run=server` with strict field validation would check it.
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/manifests/sluice.yaml"
    ))
    .expect("manifests/sluice.yaml");
    let objects = rendered_objects(&text);
    let (namespaces, rest): (Vec<_>, Vec<_>) = objects
        .into_iter()
        .partition(|object| object.kind == "Namespace");
    // A namespace made in a dry run does not exist for the next object: create it.
    for namespace in &namespaces {
        cluster.namespace_named(&namespace.name).await;
    }
    dry_run(&cluster, &rest, "sluice")
        .await
        .expect("manifests/sluice.yaml passes a strict server-side dry run");
    // Every option on at once, rendered and checked the same way.
    let everything = cluster
        .helm(&[
            "template",
            "full",
            CHART,
            "--namespace",
            &ns,
            "--set",
            "kind=DaemonSet,hostPorts.enabled=true,containerPorts.http=80,serviceMonitor.enabled=true,prometheusRule.enabled=true,ingressClass.default=true,controller.https.defaultCertificate=sluice/default-cert,controller.trustedProxies={10.0.0.0/8},controller.redis.existingSecret=redis,controller.cachePurge.existingSecret=purge,extraVolumes[0].name=scratch,extraVolumes[0].emptyDir.medium=Memory,extraVolumeMounts[0].name=scratch,extraVolumeMounts[0].mountPath=/scratch",
        ])
        .await;
    assert!(everything.success, "{}", everything.stderr);
    let mut everything = rendered_objects(&everything.stdout);
    // hostNetwork is the other DaemonSet shape (its host ports are the container's).
    let host_network = cluster
        .helm(&[
            "template",
            "edge-host",
            CHART,
            "--namespace",
            &ns,
            "--set",
            "kind=DaemonSet,hostNetwork=true,ingressClass.create=false,podLabels.team=edge,podDisruptionBudget.minAvailable=50%",
        ])
        .await;
    assert!(host_network.success, "{}", host_network.stderr);
    everything.extend(rendered_objects(&host_network.stdout));
    dry_run(&cluster, &everything, &ns)
        .await
        .expect("every option renders objects the API server accepts");
    // manifests/examples/: the annotated Ingress and the RateLimit (its CRD's schema and
    // CEL rules included).
    let mut examples = Vec::new();
    let folder = concat!(env!("CARGO_MANIFEST_DIR"), "/manifests/examples");
    let mut files: Vec<_> = std::fs::read_dir(folder)
        .expect("manifests/examples")
        .map(|entry| entry.expect("entry").path())
        .collect();
    files.sort();
    for file in files {
        examples.extend(rendered_objects(
            &std::fs::read_to_string(&file).expect("example"),
        ));
    }
    let (example_namespaces, examples): (Vec<_>, Vec<_>) = examples
        .into_iter()
        .partition(|object| object.kind == "Namespace");
    for namespace in &example_namespaces {
        cluster.namespace_named(&namespace.name).await;
    }
    assert!(kinds(&examples).is_superset(&BTreeSet::from(["Ingress", "RateLimit"])));
    dry_run(&cluster, &examples, "default")
        .await
        .expect("manifests/examples pass a strict server-side dry run");
    // The check can fail: a field the API does not know is refused.
    let mut broken: Vec<Rendered> = rest
        .iter()
        .filter(|object| object.kind == "Deployment")
        .cloned()
        .collect();
    broken[0].body["spec"]["template"]["spec"]["containers"][0]["livenessProbes"] = json!({});
    let refused = dry_run(&cluster, &broken, "sluice")
        .await
        .expect_err("an unknown field is refused");
    assert!(refused.contains("livenessProbes"), "{refused}");
    println!(
        "dry run (strict): manifests/sluice.yaml {} objects, the all-options render {} objects and manifests/examples {} objects accepted; an unknown field refused: {refused}",
        rest.len() + namespaces.len(),
        everything.len(),
        examples.len() + example_namespaces.len()
    );
}

/// What a Sluice running with one set of rules managed to do, within 10 s for each step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Probe {
    /// Served its Ingress (it became ready: every watch listed).
    served: bool,
    /// Led and wrote that Ingress's `status.loadBalancer`.
    ingress_status: bool,
    /// Posted an Event about a broken Ingress.
    event: bool,
    /// Wrote the RateLimit's conditions.
    policy_status: bool,
    /// Wrote the Auth's conditions.
    auth_status: bool,
    /// Wrote the Cache's conditions.
    cache_status: bool,
    /// Posted an Event saying the served Ingress's Cache does not exist (it is served
    /// uncached meanwhile).
    cache_missing: bool,
}

impl Probe {
    const WORKS: Probe = Probe {
        served: true,
        ingress_status: true,
        event: true,
        policy_status: true,
        auth_status: true,
        cache_status: true,
        cache_missing: false,
    };
    const NOT_SERVED: Probe = Probe {
        served: false,
        ingress_status: false,
        event: false,
        policy_status: false,
        auth_status: false,
        cache_status: false,
        cache_missing: false,
    };
    /// Serves, but never leads: no status, no Events.
    const NOT_LEADING: Probe = Probe {
        served: true,
        ingress_status: false,
        event: false,
        policy_status: false,
        auth_status: false,
        cache_status: false,
        cache_missing: false,
    };
}

/// Applies a ServiceAccount `probe-NAME` in the release namespace bound to exactly
/// `cluster_rules` (ClusterRole) and `lease_rules` (Role there), and returns a kubeconfig
/// holding its token.
async fn probe_identity(
    cluster: &Cluster,
    name: &str,
    cluster_rules: &[PolicyRule],
    lease_rules: &[PolicyRule],
) -> std::path::PathBuf {
    let account = format!("probe-{name}");
    let role_name = format!("sluice-probe-{name}");
    let release_ns = chart::RELEASE_NAMESPACE;
    let subject = json!([{"kind": "ServiceAccount", "name": account, "namespace": release_ns}]);
    let rbac = "rbac.authorization.k8s.io/v1";
    let client = cluster.client.clone();
    apply(
        &Api::<ServiceAccount>::namespaced(client.clone(), release_ns),
        &account,
        json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": account, "namespace": release_ns}}),
    )
    .await;
    apply(
        &Api::<ClusterRole>::all(client.clone()),
        &role_name,
        json!({"apiVersion": rbac, "kind": "ClusterRole", "metadata": {"name": role_name}, "rules": cluster_rules}),
    )
    .await;
    apply(
        &Api::<ClusterRoleBinding>::all(client.clone()),
        &role_name,
        json!({"apiVersion": rbac, "kind": "ClusterRoleBinding", "metadata": {"name": role_name},
               "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role_name},
               "subjects": subject}),
    )
    .await;
    apply(
        &Api::<Role>::namespaced(client.clone(), release_ns),
        &role_name,
        json!({"apiVersion": rbac, "kind": "Role", "metadata": {"name": role_name, "namespace": release_ns},
               "rules": lease_rules}),
    )
    .await;
    apply(
        &Api::<RoleBinding>::namespaced(client, release_ns),
        &role_name,
        json!({"apiVersion": rbac, "kind": "RoleBinding", "metadata": {"name": role_name, "namespace": release_ns},
               "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": role_name},
               "subjects": subject}),
    )
    .await;
    let kubeconfig = cluster.dir.join(format!("{account}.kubeconfig"));
    cluster
        .token_kubeconfig(release_ns, &account, &kubeconfig)
        .await;
    kubeconfig
}

/// How the chart's Lease is found when a probe starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum LeaseAtStart {
    /// Absent: leading starts with `create`, as on a fresh install.
    Absent,
    /// Present and free: leading starts with `update`, as after a restart.
    Free,
}

/// Runs Sluice with only `cluster_rules` and `lease_rules` on a namespace of its own: an
/// Ingress using a RateLimit, an Auth and a Cache, and a broken Ingress.
async fn probe_rules(
    cluster: &Cluster,
    name: &str,
    cluster_rules: &[PolicyRule],
    lease_rules: &[PolicyRule],
    lease: LeaseAtStart,
) -> Probe {
    let kubeconfig = probe_identity(cluster, name, cluster_rules, lease_rules).await;
    let ns = cluster.namespace(&format!("rbac-{name}")).await;
    let class = format!("e2e-rbac-{name}");
    let host = format!("{name}.rbac.e2e.test");
    let echo = Echo::start(&["127.0.0.161"]);
    cluster.service(&ns, "web").await;
    cluster
        .endpoints(&ns, "web", &[Endpoint::ready(echo.addrs[0])])
        .await;
    let policies: Api<RateLimit> = Api::namespaced(cluster.client.clone(), &ns);
    apply(
        &policies,
        "plenty",
        json!({"apiVersion": "sluice.dev/v1alpha1", "kind": "RateLimit",
               "metadata": {"name": "plenty", "namespace": ns},
               "spec": {"limits": [{"requests": 1000, "period": "1s"}]}}),
    )
    .await;
    let auths: Api<Auth> = Api::namespaced(cluster.client.clone(), &ns);
    apply(
        &auths,
        "anyone",
        json!({"apiVersion": "sluice.dev/v1alpha1", "kind": "Auth",
               "metadata": {"name": "anyone", "namespace": ns},
               "spec": {"ipAllow": ["0.0.0.0/0", "::/0"]}}),
    )
    .await;
    let caches: Api<Cache> = Api::namespaced(cluster.client.clone(), &ns);
    apply(
        &caches,
        "pages",
        json!({"apiVersion": "sluice.dev/v1alpha1", "kind": "Cache",
               "metadata": {"name": "pages", "namespace": ns},
               "spec": {}}),
    )
    .await;
    let mut web = ingress_json(&ns, "web", &class, &host, &[("/", "web")], "http");
    web["metadata"]["annotations"] = json!({"sluice.dev/rate-limit": "plenty",
        "sluice.dev/auth": "anyone", "sluice.dev/cache": "pages"});
    apply(&cluster.ingresses(&ns), "web", web).await;
    // A backend Service that does not exist: an error Event on this Ingress.
    cluster
        .ingress(&ns, "broken", &class, &host, &[("/broken", "nowhere")])
        .await;
    let leases: Api<Lease> = Api::namespaced(cluster.client.clone(), chart::RELEASE_NAMESPACE);
    match lease {
        LeaseAtStart::Absent => {
            // Absent already is fine.
            let _ = leases.delete(chart::LEASE, &DeleteParams::default()).await;
        }
        LeaseAtStart::Free => {
            if leases
                .get_opt(chart::LEASE)
                .await
                .expect("get Lease")
                .is_none()
            {
                let free: Lease =
                    serde_json::from_value(json!({"metadata": {"name": chart::LEASE}}))
                        .expect("Lease");
                leases
                    .create(&PostParams::default(), &free)
                    .await
                    .expect("create Lease");
            }
        }
    }

    let mut sluice = cluster.spawn_sluice_as(
        &kubeconfig,
        &class,
        &[
            "--publish-address",
            "203.0.113.61",
            "--lease-duration",
            "3s",
        ],
    );
    let within = 10 * SECOND;
    let served = holds_within(within, async || sluice.get(&host, "/").await.status == 200)
        .await
        .is_some();
    let mut probe = Probe {
        served,
        ..Probe::NOT_SERVED
    };
    if served {
        // All at once, so a probe missing several of them waits 10 s once, not for each.
        let _ = holds_within(within, async || {
            probe.ingress_status = cluster.status_ips(&ns, "web").await == ["203.0.113.61"];
            probe.event = !cluster.events_about(&ns, "broken").await.is_empty();
            probe.policy_status =
                accepted(policies.get("plenty").await.ok().and_then(|p| p.status));
            probe.auth_status = accepted(auths.get("anyone").await.ok().and_then(|p| p.status));
            probe.cache_status = accepted(caches.get("pages").await.ok().and_then(|p| p.status));
            probe.cache_missing = cluster
                .events_about(&ns, "web")
                .await
                .iter()
                .any(|event| event.reason.as_deref() == Some("PolicyNotFound"));
            probe == Probe::WORKS
        })
        .await;
    }
    // The first refusal Sluice logged, shortened to the API server's sentence.
    let refusal = sluice
        .log_events()
        .into_iter()
        .find_map(|event| {
            let text = event["error"].as_str().or(event["message"].as_str())?;
            let text = text.replace("\\\"", "\"");
            let start = text.find("is forbidden: ")?;
            let sentence = &text[start..];
            let end = [": Forbidden", "\", metadata"]
                .iter()
                .filter_map(|ending| sentence.find(ending))
                .min()
                .unwrap_or(sentence.len());
            Some(sentence[..end].to_owned())
        })
        .unwrap_or_default();
    // SIGTERM hands the Lease back for the next probe.
    assert_eq!(sluice.terminate(10 * SECOND), Some(0));
    println!("rbac probe {name}: {probe:?} {refusal}");
    probe
}

/// One probe of e2e_11: a name, the rules of the ClusterRole and of the Role, the Lease
/// at the start, and what Sluice should manage.
type RuleCase = (
    &'static str,
    Vec<PolicyRule>,
    Vec<PolicyRule>,
    LeaseAtStart,
    Probe,
);

/// Whether a policy's status says `Accepted=True`.
fn accepted(status: Option<PolicyStatus>) -> bool {
    status.is_some_and(|status| {
        status
            .conditions
            .iter()
            .any(|condition| condition.type_ == "Accepted" && condition.status == "True")
    })
}

/// `rules` without the one `unwanted` picks out, which must exist.
fn without(rules: &[PolicyRule], unwanted: impl Fn(&PolicyRule) -> bool) -> Vec<PolicyRule> {
    let kept: Vec<PolicyRule> = rules
        .iter()
        .filter(|rule| !unwanted(rule))
        .cloned()
        .collect();
    assert_eq!(kept.len() + 1, rules.len(), "exactly one rule removed");
    kept
}

fn names(rule: &PolicyRule, resource: &str) -> bool {
    rule.resources
        .iter()
        .flatten()
        .any(|named| named == resource)
}

async fn client_from(path: &Path) -> Client {
    let config = Kubeconfig::read_from(path).expect("kubeconfig");
    let config = kube::Config::from_custom_kubeconfig(config, &KubeConfigOptions::default())
        .await
        .expect("config");
    Client::try_from(config).expect("client")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a Kubernetes API server: run e2e/run"]
async fn e2e_11_every_rule_of_the_charts_rbac_is_needed() {
    let cluster = Cluster::connect().await;

    // The identity every other test's Sluice ran with is the chart's ServiceAccount and no
    // more: it reads Ingresses but may not list Pods or write Secrets.
    let identity = client_from(&cluster.sluice_kubeconfig).await;
    Api::<k8s_openapi::api::networking::v1::Ingress>::all(identity.clone())
        .list(&ListParams::default().limit(1))
        .await
        .expect("the chart's identity lists Ingresses");
    let pods = Api::<Pod>::all(identity.clone())
        .list(&ListParams::default().limit(1))
        .await;
    assert!(
        matches!(&pods, Err(kube::Error::Api(status)) if status.code == 403),
        "{pods:?}"
    );
    let secret = Api::<Secret>::namespaced(identity, "default")
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": "written-by-sluice"}}))
                .expect("Secret"),
        )
        .await;
    assert!(
        matches!(&secret, Err(kube::Error::Api(status)) if status.code == 403),
        "{secret:?}"
    );

    let cluster_rules = Api::<ClusterRole>::all(cluster.client.clone())
        .get(chart::CLUSTER_ROLE)
        .await
        .expect("the chart's ClusterRole")
        .rules
        .unwrap_or_default();
    let lease_rules = Api::<Role>::namespaced(cluster.client.clone(), chart::RELEASE_NAMESPACE)
        .get(chart::RELEASE)
        .await
        .expect("the chart's Role")
        .rules
        .unwrap_or_default();

    // The probe passes with every rule...
    for (name, lease) in [
        ("all", LeaseAtStart::Absent),
        ("all-again", LeaseAtStart::Free),
    ] {
        assert_eq!(
            probe_rules(&cluster, name, &cluster_rules, &lease_rules, lease).await,
            Probe::WORKS
        );
    }
    // ...and fails with any one of them taken away: every rule of the chart, one at a time.
    let mut cases: Vec<RuleCase> = Vec::new();
    for (name, resource, expected) in [
        ("ingresses", "ingresses", Probe::NOT_SERVED),
        (
            "ingress-status",
            "ingresses/status",
            Probe {
                ingress_status: false,
                ..Probe::WORKS
            },
        ),
        ("services", "services", Probe::NOT_SERVED),
        ("endpointslices", "endpointslices", Probe::NOT_SERVED),
        ("secrets", "secrets", Probe::NOT_SERVED),
        (
            "events",
            "events",
            Probe {
                event: false,
                ..Probe::WORKS
            },
        ),
        ("ratelimits", "ratelimits", Probe::NOT_SERVED),
        // Without its watch the Auth is missing to Sluice: the route fails closed.
        ("auths", "auths", Probe::NOT_SERVED),
        (
            "auth-status",
            "auths/status",
            Probe {
                auth_status: false,
                ..Probe::WORKS
            },
        ),
        (
            "ratelimit-status",
            "ratelimits/status",
            Probe {
                policy_status: false,
                ..Probe::WORKS
            },
        ),
        // Without its watch the Cache is missing to Sluice too, but a cache fails open: the
        // route is served, uncached, and the Ingress is told.
        (
            "caches",
            "caches",
            Probe {
                cache_status: false,
                cache_missing: true,
                ..Probe::WORKS
            },
        ),
        (
            "cache-status",
            "caches/status",
            Probe {
                cache_status: false,
                ..Probe::WORKS
            },
        ),
    ] {
        cases.push((
            name,
            without(&cluster_rules, |rule| names(rule, resource)),
            lease_rules.clone(),
            LeaseAtStart::Free,
            expected,
        ));
    }
    let verb = |wanted: &'static str| {
        move |rule: &PolicyRule| rule.verbs.iter().any(|verb| verb == wanted)
    };
    cases.push((
        "lease-update",
        cluster_rules.clone(),
        without(&lease_rules, verb("update")),
        LeaseAtStart::Free,
        Probe::NOT_LEADING,
    ));
    cases.push((
        "lease-create",
        cluster_rules.clone(),
        without(&lease_rules, verb("create")),
        LeaseAtStart::Absent,
        Probe::NOT_LEADING,
    ));
    assert_eq!(
        cases.len(),
        cluster_rules.len() + lease_rules.len(),
        "a case for every rule of the chart"
    );
    for (name, cluster_rules, lease_rules, lease, expected) in cases {
        assert_eq!(
            probe_rules(&cluster, name, &cluster_rules, &lease_rules, lease).await,
            expected,
            "without the rule of {name}"
        );
    }
}
