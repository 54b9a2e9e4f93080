//! Names of the Kubernetes objects the controller reads, for status, events and logs.

use std::fmt;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use sluice_dataplane::snapshot::ObjectRef;

/// The namespace an object without `metadata.namespace` is taken to be in, as kubectl does
/// for manifests that leave it out.
pub const DEFAULT_NAMESPACE: &str = "default";

/// The kinds of object the compiler reads and can report on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ObjectKind {
    Ingress,
    IngressClass,
    Service,
    EndpointSlice,
    Secret,
    RateLimit,
    Auth,
    Cache,
}

impl ObjectKind {
    /// The Kubernetes `kind` string.
    pub fn as_str(self) -> &'static str {
        match self {
            ObjectKind::Ingress => "Ingress",
            ObjectKind::IngressClass => "IngressClass",
            ObjectKind::Service => "Service",
            ObjectKind::EndpointSlice => "EndpointSlice",
            ObjectKind::Secret => "Secret",
            ObjectKind::RateLimit => "RateLimit",
            ObjectKind::Auth => "Auth",
            ObjectKind::Cache => "Cache",
        }
    }
}

impl fmt::Display for ObjectKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One object by kind, namespace and name. Cluster-scoped objects have an empty namespace.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ObjectKey {
    pub kind: ObjectKind,
    pub namespace: String,
    pub name: String,
}

impl ObjectKey {
    pub fn new(kind: ObjectKind, namespace: impl Into<String>, name: impl Into<String>) -> Self {
        ObjectKey {
            kind,
            namespace: namespace.into(),
            name: name.into(),
        }
    }

    /// The key of an Ingress.
    pub fn ingress(object: &ObjectRef) -> Self {
        ObjectKey::new(ObjectKind::Ingress, &object.namespace, &object.name)
    }

    /// The key of a namespaced object from its metadata, with the namespace defaulted.
    pub fn from_meta(kind: ObjectKind, meta: &ObjectMeta) -> Self {
        let object = object_ref(meta);
        ObjectKey::new(kind, object.namespace, object.name)
    }

    /// The namespace and name, without the kind.
    pub fn object_ref(&self) -> ObjectRef {
        ObjectRef::new(&self.namespace, &self.name)
    }
}

impl fmt::Display for ObjectKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.namespace.is_empty() {
            write!(f, "{} {}", self.kind, self.name)
        } else {
            write!(f, "{} {}/{}", self.kind, self.namespace, self.name)
        }
    }
}

/// The namespace of a namespaced object, defaulted when it is left out.
pub fn namespace_of(meta: &ObjectMeta) -> &str {
    match meta.namespace.as_deref() {
        Some(namespace) if !namespace.is_empty() => namespace,
        _ => DEFAULT_NAMESPACE,
    }
}

/// The namespace and name of a namespaced object, with the namespace defaulted.
pub fn object_ref(meta: &ObjectMeta) -> ObjectRef {
    ObjectRef::new(namespace_of(meta), meta.name.as_deref().unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_names_kind_namespace_and_name() {
        let key = ObjectKey::new(ObjectKind::Ingress, "shop", "web");
        assert_eq!(key.to_string(), "Ingress shop/web");
        let class = ObjectKey::new(ObjectKind::IngressClass, "", "sluice");
        assert_eq!(class.to_string(), "IngressClass sluice");
    }

    #[test]
    fn keys_order_by_kind_then_namespace_then_name() {
        let mut keys = [
            ObjectKey::new(ObjectKind::Service, "a", "a"),
            ObjectKey::new(ObjectKind::Ingress, "b", "a"),
            ObjectKey::new(ObjectKind::Ingress, "a", "b"),
        ];
        keys.sort();
        let shown: Vec<String> = keys.iter().map(ToString::to_string).collect();
        assert_eq!(shown, ["Ingress a/b", "Ingress b/a", "Service a/a"]);
    }

    #[test]
    fn missing_namespace_defaults() {
        let meta = ObjectMeta {
            name: Some("web".into()),
            ..ObjectMeta::default()
        };
        assert_eq!(object_ref(&meta), ObjectRef::new("default", "web"));
        assert_eq!(
            ObjectKey::from_meta(ObjectKind::Service, &meta).to_string(),
            "Service default/web"
        );
    }
}
