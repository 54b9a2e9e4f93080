//! Standalone mode: a folder of YAML manifests stands in for the Kubernetes API.
//!
//! Every `*.yaml`/`*.yml` file below the folder may hold many documents of the kinds the
//! compiler reads. A file that does not parse keeps contributing the objects of its last
//! good version, and its problem is reported; other files are unaffected.

use std::collections::hash_map::Entry;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::hash::{DefaultHasher, Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{Secret, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::networking::v1::{Ingress, IngressClass};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::Deserialize;
use sluice_crds::{Auth, Cache, RateLimit};
use tokio::sync::mpsc;

use crate::compile::ClusterObjects;
use crate::error::ControllerError;
use crate::object_key::{DEFAULT_NAMESPACE, ObjectKey, ObjectKind};
use crate::publish::Publisher;
use crate::redact::without_quoted_values;
use crate::yaml_depth;

/// Why a manifest file was not taken.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ManifestError {
    #[error("{path}: cannot read: {why}")]
    Unreadable { path: String, why: String },
    #[error("{path}: document {document}: not valid YAML: {why}")]
    Syntax {
        path: String,
        document: usize,
        why: String,
    },
    #[error("{path}: document {document}: {kind} {name:?} does not match the {kind} schema: {why}")]
    Schema {
        path: String,
        document: usize,
        kind: String,
        name: String,
        why: String,
    },
    #[error("{path}: document {document}: needs apiVersion, kind and metadata.name")]
    MissingIdentity { path: String, document: usize },
    #[error(
        "{path}: document {document}: collections nest more than {limit} deep; the file is \
         not parsed"
    )]
    TooDeep {
        path: String,
        document: usize,
        limit: usize,
    },
}

/// A note about a file that was still taken (an ignored document, a duplicate object).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManifestNote(pub String);

/// The objects of one file.
#[derive(Debug, Clone, Default)]
struct FileObjects {
    ingresses: Vec<Arc<Ingress>>,
    ingress_classes: Vec<Arc<IngressClass>>,
    services: Vec<Arc<Service>>,
    endpoint_slices: Vec<Arc<EndpointSlice>>,
    secrets: Vec<Arc<Secret>>,
    rate_limits: Vec<Arc<RateLimit>>,
    auths: Vec<Arc<Auth>>,
    caches: Vec<Arc<Cache>>,
    notes: Vec<ManifestNote>,
}

#[derive(Debug)]
struct FileState {
    content_hash: u64,
    /// The objects of the last version that parsed, if any did.
    last_good: Option<FileObjects>,
    error: Option<ManifestError>,
}

/// What a load of the folder produced.
#[derive(Debug, Clone, Default)]
pub struct LoadedManifests {
    pub objects: ClusterObjects,
    /// One line per problem: files that did not parse, ignored documents, duplicates.
    pub problems: Vec<String>,
    /// True when some file had an error (its last good objects, if any, were used).
    pub has_errors: bool,
}

/// A folder of manifests, remembering each file's last good parse.
#[derive(Debug)]
pub struct ManifestFolder {
    root: PathBuf,
    files: BTreeMap<PathBuf, FileState>,
}

impl ManifestFolder {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        ManifestFolder {
            root: root.into(),
            files: BTreeMap::new(),
        }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Reads the folder again; files whose content did not change are not parsed again.
    pub fn load(&mut self) -> LoadedManifests {
        let mut problems = Vec::new();
        let paths = match manifest_paths(&self.root) {
            Ok(paths) => paths,
            Err(why) => {
                // Keep serving what was read before; a folder that vanished for a moment
                // (a ConfigMap volume swap, an editor) must not empty the route table.
                problems.push(format!("{}: cannot list: {why}", self.root.display()));
                return self.assemble(problems, true);
            }
        };
        let present: BTreeSet<PathBuf> = paths.iter().cloned().collect();
        self.files.retain(|path, _| present.contains(path));
        for path in paths {
            let shown = path.display().to_string();
            let text = match std::fs::read_to_string(&path) {
                Ok(text) => text,
                Err(error) => {
                    let state = self.files.entry(path).or_insert(FileState {
                        content_hash: 0,
                        last_good: None,
                        error: None,
                    });
                    state.error = Some(ManifestError::Unreadable {
                        path: shown,
                        why: error.to_string(),
                    });
                    continue;
                }
            };
            let content_hash = hash_text(&text);
            if self
                .files
                .get(&path)
                .is_some_and(|state| state.content_hash == content_hash)
            {
                continue;
            }
            let parsed = parse_file(&shown, &text);
            let state = self.files.entry(path).or_insert(FileState {
                content_hash,
                last_good: None,
                error: None,
            });
            state.content_hash = content_hash;
            match parsed {
                Ok(objects) => {
                    state.last_good = Some(objects);
                    state.error = None;
                }
                Err(error) => state.error = Some(error),
            }
        }
        let has_errors = self.files.values().any(|state| state.error.is_some());
        self.assemble(problems, has_errors)
    }

    fn assemble(&self, mut problems: Vec<String>, has_errors: bool) -> LoadedManifests {
        let mut objects = ClusterObjects::default();
        // Which file each object came from first. Hashed: this runs over every object on
        // every change, and ordered keys are not needed here.
        let mut seen: HashMap<ObjectKey, &Path> = HashMap::new();
        for (path, state) in &self.files {
            let shown = path.display();
            if let Some(error) = &state.error {
                let kept = if state.last_good.is_some() {
                    "; serving its last good version"
                } else {
                    ""
                };
                problems.push(format!("{error}{kept}"));
            }
            let Some(file) = &state.last_good else {
                continue;
            };
            problems.extend(file.notes.iter().map(|note| note.0.clone()));
            let mut first = |kind: ObjectKind, meta: &ObjectMeta| {
                let key = ObjectKey::from_meta(kind, meta);
                let key = if kind == ObjectKind::IngressClass {
                    ObjectKey::new(kind, "", key.name)
                } else {
                    key
                };
                match seen.entry(key) {
                    Entry::Occupied(earlier) => {
                        problems.push(format!(
                            "{shown}: {} is also defined in {}; this copy is ignored",
                            earlier.key(),
                            earlier.get().display()
                        ));
                        false
                    }
                    Entry::Vacant(entry) => {
                        entry.insert(path);
                        true
                    }
                }
            };
            for item in &file.ingresses {
                if first(ObjectKind::Ingress, &item.metadata) {
                    objects.ingresses.push(Arc::clone(item));
                }
            }
            for item in &file.ingress_classes {
                if first(ObjectKind::IngressClass, &item.metadata) {
                    objects.ingress_classes.push(Arc::clone(item));
                }
            }
            for item in &file.services {
                if first(ObjectKind::Service, &item.metadata) {
                    objects.services.push(Arc::clone(item));
                }
            }
            for item in &file.endpoint_slices {
                if first(ObjectKind::EndpointSlice, &item.metadata) {
                    objects.endpoint_slices.push(Arc::clone(item));
                }
            }
            for item in &file.secrets {
                if first(ObjectKind::Secret, &item.metadata) {
                    objects.secrets.push(Arc::clone(item));
                }
            }
            for item in &file.rate_limits {
                if first(ObjectKind::RateLimit, &item.metadata) {
                    objects.rate_limits.push(Arc::clone(item));
                }
            }
            for item in &file.auths {
                if first(ObjectKind::Auth, &item.metadata) {
                    objects.auths.push(Arc::clone(item));
                }
            }
            for item in &file.caches {
                if first(ObjectKind::Cache, &item.metadata) {
                    objects.caches.push(Arc::clone(item));
                }
            }
        }
        LoadedManifests {
            objects,
            problems,
            has_errors,
        }
    }
}

fn hash_text(text: &str) -> u64 {
    let mut hasher = DefaultHasher::new();
    text.hash(&mut hasher);
    hasher.finish()
}

/// Every `*.yaml` / `*.yml` file below `root`, sorted, skipping hidden entries (editors'
/// swap files, Kubernetes ConfigMap volumes' `..data` links).
fn manifest_paths(root: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut found = Vec::new();
    let mut pending = vec![root.to_path_buf()];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir)? {
            let entry = entry?;
            let path = entry.path();
            let hidden = entry.file_name().to_string_lossy().starts_with('.');
            if hidden {
                continue;
            }
            let file_type = std::fs::metadata(&path).map(|m| m.file_type());
            match file_type {
                Ok(t) if t.is_dir() => pending.push(path),
                Ok(t) if t.is_file() => {
                    let yaml = path
                        .extension()
                        .is_some_and(|ext| ext == "yaml" || ext == "yml");
                    if yaml {
                        found.push(path);
                    }
                }
                _ => {}
            }
        }
    }
    found.sort();
    Ok(found)
}

/// Parses every document of one file. Any document that fails fails the whole file, so
/// a half-edited file never contributes half of its objects.
fn parse_file(path: &str, text: &str) -> Result<FileObjects, ManifestError> {
    // Deep nesting makes the parse itself slow, so it is refused before parsing.
    if let Some(document) = yaml_depth::too_deep(text, yaml_depth::MAX_DEPTH) {
        return Err(ManifestError::TooDeep {
            path: path.to_owned(),
            document,
            limit: yaml_depth::MAX_DEPTH,
        });
    }
    let mut objects = FileObjects::default();
    for (index, document) in serde_yaml_ng::Deserializer::from_str(text).enumerate() {
        let number = index + 1;
        // The document's kind is unknown until it parses, and a tagged scalar's message
        // quotes the scalar (`!!int hunter2`): values are left out of every syntax error.
        let value =
            serde_json::Value::deserialize(document).map_err(|error| ManifestError::Syntax {
                path: path.to_owned(),
                document: number,
                why: without_quoted_values(&error.to_string()),
            })?;
        if value.is_null() {
            continue;
        }
        add_document(path, number, value, &mut objects)?;
    }
    Ok(objects)
}

fn add_document(
    path: &str,
    number: usize,
    value: serde_json::Value,
    objects: &mut FileObjects,
) -> Result<(), ManifestError> {
    let text_field = |field: &str| value.get(field).and_then(|v| v.as_str()).map(str::to_owned);
    let (Some(api_version), Some(kind)) = (text_field("apiVersion"), text_field("kind")) else {
        return Err(ManifestError::MissingIdentity {
            path: path.to_owned(),
            document: number,
        });
    };
    if kind == "List" && api_version == "v1" {
        let items = value
            .get("items")
            .and_then(|v| v.as_array())
            .cloned()
            .unwrap_or_default();
        for item in items {
            add_document(path, number, item, objects)?;
        }
        return Ok(());
    }
    let name = value
        .pointer("/metadata/name")
        .and_then(|v| v.as_str())
        .unwrap_or_default()
        .to_owned();
    if name.is_empty() {
        return Err(ManifestError::MissingIdentity {
            path: path.to_owned(),
            document: number,
        });
    }
    fn typed<T: serde::de::DeserializeOwned>(
        value: serde_json::Value,
        path: &str,
        number: usize,
        kind: &str,
        name: &str,
    ) -> Result<T, ManifestError> {
        serde_json::from_value(value).map_err(|error| ManifestError::Schema {
            path: path.to_owned(),
            document: number,
            kind: kind.to_owned(),
            name: name.to_owned(),
            why: error.to_string(),
        })
    }
    match (api_version.as_str(), kind.as_str()) {
        ("networking.k8s.io/v1", "Ingress") => {
            let mut item: Ingress = typed(value, path, number, &kind, &name)?;
            default_namespace(&mut item.metadata);
            objects.ingresses.push(Arc::new(item));
        }
        ("networking.k8s.io/v1", "IngressClass") => {
            let item: IngressClass = typed(value, path, number, &kind, &name)?;
            objects.ingress_classes.push(Arc::new(item));
        }
        ("v1", "Service") => {
            let mut item: Service = typed(value, path, number, &kind, &name)?;
            default_namespace(&mut item.metadata);
            objects.services.push(Arc::new(item));
        }
        ("discovery.k8s.io/v1", "EndpointSlice") => {
            let mut item: EndpointSlice = typed(value, path, number, &kind, &name)?;
            default_namespace(&mut item.metadata);
            objects.endpoint_slices.push(Arc::new(item));
        }
        ("v1", "Secret") => {
            let mut item = secret(value, path, number, &name)?;
            default_namespace(&mut item.metadata);
            objects.secrets.push(Arc::new(item));
        }
        ("sluice.dev/v1alpha1", "RateLimit") => {
            let mut item: RateLimit = typed(value, path, number, &kind, &name)?;
            default_namespace(&mut item.metadata);
            objects.rate_limits.push(Arc::new(item));
        }
        ("sluice.dev/v1alpha1", "Auth") => {
            let mut item: Auth = typed(value, path, number, &kind, &name)?;
            default_namespace(&mut item.metadata);
            objects.auths.push(Arc::new(item));
        }
        ("sluice.dev/v1alpha1", "Cache") => {
            let mut item: Cache = typed(value, path, number, &kind, &name)?;
            default_namespace(&mut item.metadata);
            objects.caches.push(Arc::new(item));
        }
        _ => objects.notes.push(ManifestNote(format!(
            "{path}: document {number}: {api_version} {kind} {name:?} is not a kind Sluice reads; ignored"
        ))),
    }
    Ok(())
}

/// A Secret document, with `data` and `stringData` read here rather than by serde: serde's
/// messages quote the value they fail on (``invalid type: integer `12345` ``, a base64
/// error's bad symbol), and no Secret value may reach an error, a log line or an Event.
/// Errors name the field and the type found, never the value.
fn secret(
    mut value: serde_json::Value,
    path: &str,
    number: usize,
    name: &str,
) -> Result<Secret, ManifestError> {
    let invalid = |why: String| ManifestError::Schema {
        path: path.to_owned(),
        document: number,
        kind: "Secret".to_owned(),
        name: name.to_owned(),
        why,
    };
    let (data, string_data) = match value.as_object_mut() {
        Some(fields) => (fields.remove("data"), fields.remove("stringData")),
        None => (None, None),
    };
    // What is left holds no Secret value, but its messages are cleaned all the same.
    let mut secret: Secret = serde_json::from_value(value)
        .map_err(|error| invalid(without_quoted_values(&error.to_string())))?;
    secret.data = secret_entries(data, "data", |value| match value {
        serde_json::Value::Null => Ok(ByteString(Vec::new())),
        serde_json::Value::String(text) => serde_json::from_value(serde_json::Value::String(text))
            .map_err(|_| "is not valid base64".to_owned()),
        other => Err(format!(
            "expected a base64-encoded string, found {}",
            json_type(&other)
        )),
    })
    .map_err(invalid)?;
    secret.string_data = secret_entries(string_data, "stringData", |value| match value {
        serde_json::Value::String(text) => Ok(text),
        other => Err(format!("expected a string, found {}", json_type(&other))),
    })
    .map_err(invalid)?;
    Ok(secret)
}

/// The entries of a Secret's `data` or `stringData` map, each converted by `entry`; an error
/// names the key (`data.password`) and says why, without the value.
fn secret_entries<T>(
    map: Option<serde_json::Value>,
    field: &str,
    entry: impl Fn(serde_json::Value) -> Result<T, String>,
) -> Result<Option<BTreeMap<String, T>>, String> {
    let entries = match map {
        None | Some(serde_json::Value::Null) => return Ok(None),
        Some(serde_json::Value::Object(entries)) => entries,
        Some(other) => {
            return Err(format!(
                "{field}: expected a map of keys to values, found {}",
                json_type(&other)
            ));
        }
    };
    let mut out = BTreeMap::new();
    for (key, value) in entries {
        let converted = entry(value)
            .map_err(|why| format!("{field}.{key}: {why} (Secret values are never shown)"))?;
        out.insert(key, converted);
    }
    Ok(Some(out))
}

/// The JSON type of a value, for messages that must not show the value.
fn json_type(value: &serde_json::Value) -> &'static str {
    match value {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "a boolean",
        serde_json::Value::Number(_) => "a number",
        serde_json::Value::String(_) => "a string",
        serde_json::Value::Array(_) => "a list",
        serde_json::Value::Object(_) => "a map",
    }
}

fn default_namespace(meta: &mut ObjectMeta) {
    if meta.namespace.as_deref().is_none_or(str::is_empty) {
        meta.namespace = Some(DEFAULT_NAMESPACE.to_owned());
    }
}

/// Sends a unit on `changes` whenever something below `root` may have changed.
/// The returned watcher must be kept alive. Falls back to polling where inotify is
/// unavailable.
pub fn watch_folder(
    root: &Path,
    changes: mpsc::UnboundedSender<()>,
) -> notify::Result<Box<dyn notify::Watcher + Send>> {
    use notify::Watcher as _;
    let handler = move |event: notify::Result<notify::Event>| {
        // Our own reads of the folder raise access events; reacting to them would reload
        // the folder in a loop.
        if event.is_ok_and(|event| !event.kind.is_access()) {
            let _ = changes.send(());
        }
    };
    match notify::recommended_watcher(handler.clone()) {
        Ok(mut watcher) => {
            watcher.watch(root, notify::RecursiveMode::Recursive)?;
            Ok(Box::new(watcher))
        }
        Err(error) => {
            tracing::warn!(%error, "file notifications unavailable; polling the manifest folder");
            let config = notify::Config::default().with_poll_interval(Duration::from_millis(250));
            let mut watcher = notify::PollWatcher::new(handler, config)?;
            watcher.watch(root, notify::RecursiveMode::Recursive)?;
            Ok(Box::new(watcher))
        }
    }
}

/// Serves the folder: loads it, publishes, and again after every change (debounced),
/// until the change feed ends.
pub async fn run_folder(
    mut folder: ManifestFolder,
    mut publisher: Publisher,
    debounce: Duration,
) -> Result<(), ControllerError> {
    let (changes_tx, mut changes) = mpsc::unbounded_channel();
    let _watcher =
        watch_folder(folder.root(), changes_tx).map_err(|error| ControllerError::Watch {
            path: folder.root().display().to_string(),
            why: error.to_string(),
        })?;
    loop {
        let loaded = folder.load();
        let (_, summary) = publisher.publish_all(&loaded.objects, loaded.problems);
        if summary.published {
            tracing::info!(
                generation = summary.generation,
                routes_changed = summary.routes_changed,
                problems = summary.problems,
                "published snapshot"
            );
        }
        if changes.recv().await.is_none() {
            return Ok(());
        }
        // Editors write in several steps; take them as one change.
        tokio::time::sleep(debounce).await;
        while changes.try_recv().is_ok() {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {name: web}
spec:
  ingressClassName: sluice
  rules:
  - host: a.example
    http:
      paths:
      - {path: /, pathType: Prefix, backend: {service: {name: web, port: {number: 80}}}}
---
# an empty document is fine
---
apiVersion: v1
kind: Service
metadata: {name: web, namespace: shop}
spec:
  ports: [{port: 80}]
---
apiVersion: v1
kind: ConfigMap
metadata: {name: other}
"#;

    #[test]
    fn parses_every_document_and_defaults_the_namespace() {
        let file = parse_file("good.yaml", GOOD).unwrap();
        assert_eq!(file.ingresses.len(), 1);
        assert_eq!(
            file.ingresses[0].metadata.namespace.as_deref(),
            Some("default")
        );
        assert_eq!(file.services[0].metadata.namespace.as_deref(), Some("shop"));
        assert_eq!(file.notes.len(), 1);
        assert!(file.notes[0].0.contains("ConfigMap"), "{:?}", file.notes);
    }

    #[test]
    fn policies_of_every_kind_are_read() {
        let text = r#"
apiVersion: sluice.dev/v1alpha1
kind: RateLimit
metadata: {name: api}
spec: {limits: [{requests: 10, period: 1s}]}
---
apiVersion: sluice.dev/v1alpha1
kind: Auth
metadata: {name: office, namespace: shop}
spec: {ipAllow: [10.0.0.0/8]}
---
apiVersion: sluice.dev/v1alpha1
kind: Cache
metadata: {name: pages}
spec: {ttl: 5m, bypass: {cookies: [session]}}
"#;
        let file = parse_file("policies.yaml", text).unwrap();
        assert!(file.notes.is_empty(), "{:?}", file.notes);
        assert_eq!(file.rate_limits.len(), 1);
        assert_eq!(file.auths.len(), 1);
        assert_eq!(file.caches.len(), 1);
        let cache = &file.caches[0];
        assert_eq!(cache.metadata.namespace.as_deref(), Some("default"));
        assert_eq!(cache.spec.ttl, "5m");
        // Left out, the defaults apply, as the API server would fill them in.
        assert_eq!(cache.spec.max_object_size, "1Mi");
        assert_eq!(cache.spec.memory.max_size, "64Mi");
        assert!(cache.spec.respect_cache_control);

        let wrong = "apiVersion: sluice.dev/v1alpha1\nkind: Cache\nmetadata: {name: c}\nspec: {methods: [POST]}\n";
        let error = parse_file("f.yaml", wrong).unwrap_err();
        assert!(
            error
                .to_string()
                .starts_with("f.yaml: document 1: Cache \"c\""),
            "{error}"
        );
    }

    #[test]
    fn a_bad_document_fails_the_whole_file_with_a_clear_error() {
        let broken = format!("{GOOD}\n---\nkind: [unclosed\n");
        assert!(matches!(
            parse_file("f.yaml", &broken),
            Err(ManifestError::Syntax { document: 5, .. })
        ));
        let wrong_type = "apiVersion: v1\nkind: Service\nmetadata: {name: s}\nspec: {ports: 7}\n";
        let error = parse_file("f.yaml", wrong_type).unwrap_err();
        assert!(matches!(error, ManifestError::Schema { .. }), "{error}");
        assert!(
            error
                .to_string()
                .starts_with("f.yaml: document 1: Service \"s\""),
            "{error}"
        );
        let anonymous = "apiVersion: v1\nkind: Service\nmetadata: {}\n";
        assert!(matches!(
            parse_file("f.yaml", anonymous),
            Err(ManifestError::MissingIdentity { .. })
        ));
    }

    #[test]
    fn secrets_read_data_and_string_data() {
        let text = "apiVersion: v1\nkind: Secret\nmetadata: {name: s}\ndata: {a: aGk=, empty: null}\nstringData: {b: there}\n";
        let file = parse_file("f.yaml", text).unwrap();
        let secret = &file.secrets[0];
        let data = secret.data.as_ref().unwrap();
        assert_eq!(data["a"].0, b"hi");
        assert!(data["empty"].0.is_empty());
        assert_eq!(secret.string_data.as_ref().unwrap()["b"], "there");
        assert_eq!(secret.metadata.namespace.as_deref(), Some("default"));
    }

    /// The defect: serde's messages quoted the value (``invalid type: integer `12345` ``),
    /// so a Secret's value landed in `sluice check` output, the log and /readyz.
    #[test]
    fn secret_values_never_appear_in_errors_which_name_the_field() {
        let secret = |rest: &str| {
            format!("apiVersion: v1\nkind: Secret\nmetadata: {{name: creds}}\n{rest}\n")
        };
        for (rest, field) in [
            (
                "data: {password: 12345}",
                "data.password: expected a base64-encoded string, found a number",
            ),
            (
                "data: {password: 12345.5}",
                "data.password: expected a base64-encoded string",
            ),
            (
                "data: {password: \"hunter2!!\"}",
                "data.password: is not valid base64",
            ),
            (
                "data: {password: [hunter2]}",
                "data.password: expected a base64-encoded string, found a list",
            ),
            (
                "stringData: {password: 12345}",
                "stringData.password: expected a string, found a number",
            ),
            (
                "stringData: {password: true}",
                "stringData.password: expected a string, found a boolean",
            ),
            (
                "data: hunter2",
                "data: expected a map of keys to values, found a string",
            ),
            ("type: 12345", "invalid type: integer (value not shown)"),
        ] {
            let error = parse_file("f.yaml", &secret(rest)).unwrap_err().to_string();
            assert!(
                error.starts_with("f.yaml: document 1: Secret \"creds\" does not match"),
                "{error}"
            );
            assert!(error.contains(field), "{rest}: {error}");
            for value in ["12345", "hunter2", "true"] {
                assert!(!error.contains(value), "{rest}: {error}");
            }
        }
        // A tagged scalar fails before the kind is known; its value is left out too.
        let error = parse_file("f.yaml", &secret("data: {password: !!int hunter2}"))
            .unwrap_err()
            .to_string();
        assert!(error.contains("expected an integer"), "{error}");
        assert!(!error.contains("hunter2"), "{error}");
    }

    /// The defect: a deeply nested document took seconds to parse (quadratic in its depth)
    /// before serde_yaml_ng's own depth limit refused it.
    #[test]
    fn a_deeply_nested_document_is_refused_quickly_and_other_files_still_load() {
        let dir = tempdir();
        std::fs::write(dir.join("a.yaml"), GOOD).unwrap();
        let deep = 40_000;
        std::fs::write(
            dir.join("deep.yaml"),
            format!(
                "{GOOD}\n---\nkind: {}{}\n",
                "[".repeat(deep),
                "]".repeat(deep)
            ),
        )
        .unwrap();
        let started = std::time::Instant::now();
        let loaded = ManifestFolder::new(&dir).load();
        let took = started.elapsed();
        assert!(took < Duration::from_secs(2), "{took:?}");
        assert!(loaded.has_errors);
        assert_eq!(loaded.objects.ingresses.len(), 1, "a.yaml still loads");
        let shown = dir.join("deep.yaml").display().to_string();
        assert!(
            loaded.problems.contains(&format!(
                "{shown}: document 5: collections nest more than 64 deep; the file is not parsed"
            )),
            "{:?}",
            loaded.problems
        );
        // 64 deep is still fine.
        let nested = format!(
            "apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: c}}\ndata: {}1{}\n",
            "[".repeat(63),
            "]".repeat(63)
        );
        assert!(parse_file("f.yaml", &nested).is_ok());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_broken_file_keeps_its_last_good_objects_and_others_are_unaffected() {
        let dir = tempdir();
        std::fs::write(dir.join("a.yaml"), GOOD).unwrap();
        std::fs::write(
            dir.join("b.yml"),
            GOOD.replace("name: web}", "name: other}"),
        )
        .unwrap();
        std::fs::write(dir.join("notes.txt"), "not yaml: [").unwrap();
        let mut folder = ManifestFolder::new(&dir);
        let first = folder.load();
        assert!(!first.has_errors, "{:?}", first.problems);
        assert_eq!(first.objects.ingresses.len(), 2);

        std::fs::write(dir.join("a.yaml"), "apiVersion: [").unwrap();
        let second = folder.load();
        assert!(second.has_errors);
        assert_eq!(
            second.objects.ingresses.len(),
            2,
            "last good objects of a.yaml are kept"
        );
        assert!(
            second
                .problems
                .iter()
                .any(|p| p.contains("a.yaml") && p.contains("serving its last good version")),
            "{:?}",
            second.problems
        );

        std::fs::remove_file(dir.join("a.yaml")).unwrap();
        let third = folder.load();
        assert!(!third.has_errors);
        assert_eq!(
            third.objects.ingresses.len(),
            1,
            "a deleted file's objects go away"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn duplicates_across_files_keep_the_first() {
        let dir = tempdir();
        std::fs::write(dir.join("a.yaml"), GOOD).unwrap();
        std::fs::write(dir.join("b.yaml"), GOOD).unwrap();
        let loaded = ManifestFolder::new(&dir).load();
        assert_eq!(loaded.objects.ingresses.len(), 1);
        assert!(
            loaded
                .problems
                .iter()
                .any(|p| p.contains("also defined in")),
            "{:?}",
            loaded.problems
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[tokio::test]
    async fn reading_the_folder_is_not_a_change_but_writing_is() {
        let dir = tempdir();
        std::fs::write(dir.join("a.yaml"), GOOD).unwrap();
        let (changes_tx, mut changes) = mpsc::unbounded_channel();
        let _watcher = watch_folder(&dir, changes_tx).unwrap();
        let mut folder = ManifestFolder::new(&dir);
        for _ in 0..3 {
            assert_eq!(folder.load().objects.ingresses.len(), 1);
        }
        let quiet = tokio::time::timeout(Duration::from_millis(300), changes.recv()).await;
        assert!(
            quiet.is_err(),
            "loading the folder must not look like a change"
        );

        std::fs::write(dir.join("b.yaml"), GOOD.replace("name: web}", "name: b}")).unwrap();
        let noticed = tokio::time::timeout(Duration::from_secs(5), changes.recv()).await;
        assert_eq!(noticed.ok().flatten(), Some(()), "a new file is a change");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    fn tempdir() -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "sluice-standalone-{}-{}",
            std::process::id(),
            fastrand_suffix()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn fastrand_suffix() -> u64 {
        use std::sync::atomic::{AtomicU64, Ordering};
        static NEXT: AtomicU64 = AtomicU64::new(0);
        NEXT.fetch_add(1, Ordering::Relaxed)
    }
}
