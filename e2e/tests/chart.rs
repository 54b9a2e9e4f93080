//! The Helm chart on the e2e cluster: running the pinned helm, the release whose
//! ServiceAccount every e2e Sluice runs as, tokens minted through TokenRequest, and the
//! objects a rendered manifest names.

use std::path::{Path, PathBuf};
use std::process::Command;

use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::ServiceAccount;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::Api;
use kube::api::{DynamicObject, GroupVersionKind, PatchParams, PostParams};
use kube::discovery::Scope;
use serde_json::{Value, json};

use crate::harness::Cluster;

/// The release installed once per e2e cluster; every Sluice of the suite runs with its
/// ServiceAccount's token, so the suite passing is the proof that the chart's RBAC is
/// enough.
pub const RELEASE: &str = "sluice";
pub const RELEASE_NAMESPACE: &str = "sluice-system";
/// The chart's ServiceAccount and Lease names for release `sluice` (`<fullname>`,
/// `<fullname>-leader`); the Role grants `get`/`update` on that Lease only.
pub const SERVICE_ACCOUNT: &str = "sluice";
pub const LEASE: &str = "sluice-leader";
/// Cluster-scoped names carry the release namespace (`<fullname>-<namespace>`).
pub const CLUSTER_ROLE: &str = "sluice-sluice-system";

pub const CHART: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/charts/sluice");

/// What one run of `e2e/cluster` (helm, promrules, …) printed.
#[derive(Debug)]
pub struct ToolRun {
    pub success: bool,
    pub stdout: String,
    pub stderr: String,
}

/// Runs `e2e/cluster ARGS…` off the async workers.
pub async fn cluster_script<I, S>(args: I) -> ToolRun
where
    I: IntoIterator<Item = S>,
    S: AsRef<std::ffi::OsStr>,
{
    let mut command = Command::new(concat!(env!("CARGO_MANIFEST_DIR"), "/e2e/cluster"));
    command.args(args);
    let output = tokio::task::spawn_blocking(move || command.output())
        .await
        .expect("join")
        .expect("run e2e/cluster");
    ToolRun {
        success: output.status.success(),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

impl Cluster {
    /// Runs the pinned helm (`e2e/cluster helm`) against this cluster as the administrator.
    pub async fn helm(&self, args: &[&str]) -> ToolRun {
        let mut all: Vec<std::ffi::OsString> = vec![
            "helm".into(),
            "--kubeconfig".into(),
            self.kubeconfig.clone().into(),
        ];
        all.extend(args.iter().map(Into::into));
        cluster_script(all).await
    }

    /// Installs release [`RELEASE`] once per cluster (with the chart's default values)
    /// and returns a kubeconfig holding a token of its ServiceAccount.
    pub async fn release_identity(&self) -> PathBuf {
        let path = self.dir.join("chart-identity.kubeconfig");
        if path.exists() {
            return path;
        }
        // The cluster is fresh: the CRDs come from the chart's crds/ folder.
        let crds: Api<CustomResourceDefinition> = Api::all(self.client.clone());
        let crd = "ratelimits.sluice.dev";
        assert!(crds.get_opt(crd).await.expect("get CRD").is_none());
        let run = self
            .helm(&[
                "install",
                RELEASE,
                CHART,
                "--namespace",
                RELEASE_NAMESPACE,
                "--create-namespace",
            ])
            .await;
        assert!(run.success, "helm install {RELEASE}: {}", run.stderr);
        assert!(
            crds.get_opt(crd).await.expect("get CRD").is_some(),
            "helm install put the chart's CRDs in"
        );
        self.token_kubeconfig(RELEASE_NAMESPACE, SERVICE_ACCOUNT, &path)
            .await;
        path
    }

    /// Mints a token for a ServiceAccount (TokenRequest, one hour) and writes a kubeconfig
    /// that authenticates with it alone, with `namespace` as its namespace.
    pub async fn token_kubeconfig(&self, namespace: &str, account: &str, path: &Path) {
        let accounts: Api<ServiceAccount> = Api::namespaced(self.client.clone(), namespace);
        let request = TokenRequest {
            spec: TokenRequestSpec {
                audiences: Vec::new(),
                expiration_seconds: Some(3600),
                bound_object_ref: None,
            },
            ..TokenRequest::default()
        };
        let minted: TokenRequest = accounts
            .create_subresource("token", account, &PostParams::default(), &request)
            .await
            .unwrap_or_else(|error| panic!("TokenRequest for {namespace}/{account}: {error}"));
        let token = minted.status.expect("TokenRequest status").token;
        let admin: Value = serde_yaml_ng::from_str(
            &std::fs::read_to_string(&self.kubeconfig).expect("read the admin kubeconfig"),
        )
        .expect("parse the admin kubeconfig");
        let cluster = admin["clusters"][0].clone();
        let user = format!("system:serviceaccount:{namespace}:{account}");
        let kubeconfig = json!({
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [cluster],
            "users": [{"name": user, "user": {"token": token}}],
            "contexts": [{
                "name": user,
                "context": {"cluster": cluster["name"], "user": user, "namespace": namespace},
            }],
            "current-context": user,
        });
        // JSON is YAML: every kubeconfig reader takes it.
        std::fs::write(path, kubeconfig.to_string()).expect("write kubeconfig");
    }

    /// The API of the kind `api_version`/`kind` names, in `namespace` when it is namespaced.
    pub async fn dynamic_api(
        &self,
        api_version: &str,
        kind: &str,
        namespace: Option<&str>,
    ) -> Api<DynamicObject> {
        let (group, version) = api_version.rsplit_once('/').unwrap_or(("", api_version));
        let gvk = GroupVersionKind::gvk(group, version, kind);
        let (resource, capabilities) = kube::discovery::pinned_kind(&self.client, &gvk)
            .await
            .unwrap_or_else(|error| panic!("discover {api_version} {kind}: {error}"));
        match (capabilities.scope, namespace) {
            (Scope::Namespaced, Some(namespace)) => {
                Api::namespaced_with(self.client.clone(), namespace, &resource)
            }
            (Scope::Namespaced, None) => panic!("{kind} is namespaced: give a namespace"),
            (Scope::Cluster, _) => Api::all_with(self.client.clone(), &resource),
        }
    }

    /// The API of a rendered object: in its own namespace, else in `namespace` (where helm
    /// or kubectl would put it).
    pub async fn api_for(&self, object: &Rendered, namespace: &str) -> Api<DynamicObject> {
        let namespace = object.namespace.as_deref().unwrap_or(namespace);
        self.dynamic_api(&object.api_version, &object.kind, Some(namespace))
            .await
    }
}

/// One object of a rendered manifest.
#[derive(Debug, Clone)]
pub struct Rendered {
    pub api_version: String,
    pub kind: String,
    pub name: String,
    /// As rendered; helm fills in the release namespace for objects without one.
    pub namespace: Option<String>,
    pub body: Value,
}

/// The objects of a multi-document YAML stream, empty documents skipped.
pub fn rendered_objects(yaml: &str) -> Vec<Rendered> {
    let mut objects = Vec::new();
    for document in serde_yaml_ng::Deserializer::from_str(yaml) {
        let body: Value = serde::Deserialize::deserialize(document).expect("a YAML document");
        if body.is_null() {
            continue;
        }
        let text = |pointer: &str| body.pointer(pointer).and_then(Value::as_str);
        objects.push(Rendered {
            api_version: text("/apiVersion").expect("apiVersion").to_owned(),
            kind: text("/kind").expect("kind").to_owned(),
            name: text("/metadata/name").expect("metadata.name").to_owned(),
            namespace: text("/metadata/namespace").map(str::to_owned),
            body: body.clone(),
        });
    }
    objects
}

/// Server-side apply as `kubectl apply --server-side --dry-run=server` does it, with
/// strict field validation: unknown or duplicated fields are errors, not warnings.
pub fn strict_dry_run() -> PatchParams {
    PatchParams::apply("sluice-e2e")
        .force()
        .dry_run()
        .validation_strict()
}
