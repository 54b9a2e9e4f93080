//! The errors the compiler reports against objects.
//!
//! An error does not name its own object: the compiler files every error under the
//! [`ObjectKey`](crate::object_key::ObjectKey) of the object it concerns, and status and
//! event writers post it on that object. Each error names the field it concerns instead.

use sluice_dataplane::snapshot::ObjectRef;

use crate::compile::PathMatch;

/// How much of an object an error takes out of service.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Severity {
    /// The whole object was left out of the snapshot (or kept at its last good form).
    Rejection,
    /// One rule, path, backend or endpoint was left out, cannot work, or is served other
    /// than as written; the rest serves.
    Partial,
    /// Nothing wrong by itself: says what is being served and why.
    Notice,
}

/// Something wrong with one field of one object.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CompileError {
    #[error("{field}: host {host:?} is not valid: {why}; the rule is ignored")]
    InvalidHost {
        field: String,
        host: String,
        why: String,
    },

    #[error("{field}: path {path:?} is not valid: {why}; the path is ignored")]
    InvalidPath {
        field: String,
        path: String,
        why: String,
    },

    /// The route is kept, under the one spelling requests for it arrive in: as written it
    /// could never match (`/%61dmin` is `/admin`, `/a//b` is `/a/b`).
    #[error(
        "{field}: path {path:?} is served as {canonical:?}, the form requests are matched in; \
         write it that way"
    )]
    PathNotCanonical {
        field: String,
        path: String,
        canonical: String,
    },

    /// Boxed: it is the largest error and would make every `Result` carrying one large.
    #[error("{0}")]
    PathConflict(Box<ConflictingPath>),

    #[error(
        "{field}: the default backend is already set by the older Ingress {winner}; this one is ignored"
    )]
    DefaultBackendConflict { field: String, winner: ObjectRef },

    #[error("{field}: {why}; the path is ignored")]
    InvalidBackend { field: String, why: String },

    #[error("{field}: {why}; the path is ignored")]
    UnsupportedBackend { field: String, why: String },

    #[error(
        "{field}: Service {service} does not exist; {}",
        if *.route_kept {
            "the route is kept and answers 503 until the Service has endpoints"
        } else {
            "the path is ignored, as its port name cannot be resolved without the Service"
        }
    )]
    ServiceNotFound {
        field: String,
        /// `namespace/name`.
        service: String,
        /// True when the port was given by number, so the route could be kept.
        route_kept: bool,
    },

    #[error("{field}: Service {service} has no port {port}; the path is ignored")]
    BackendPortNotFound {
        field: String,
        service: String,
        /// The port name or number as written.
        port: String,
    },

    #[error("{field}: value {value:?} is not valid: {why}; the Ingress is rejected")]
    InvalidAnnotation {
        field: String,
        value: String,
        why: String,
    },

    #[error("{field}: entry {entry:?} is not valid: {why}; the entry is ignored")]
    InvalidEndpointWeight {
        field: String,
        entry: String,
        why: String,
    },

    #[error("{field}: address {address:?} is not an IP address; it is ignored")]
    InvalidEndpointAddress { field: String, address: String },

    /// On the EndpointSlice: a port no connection can be made to. Its endpoints get no
    /// traffic on it, as before, but now someone is told.
    #[error(
        "{field}: {} is not a port number from 1 to 65535; the slice's endpoints get no \
         traffic for port {name:?} of Service {service}",
        .port.map_or_else(|| "a missing port".to_owned(), |port| format!("port {port}"))
    )]
    InvalidEndpointPort {
        field: String,
        /// The port's name as written (`""` when unnamed).
        name: String,
        port: Option<i32>,
        /// `namespace/name` of the Service the slice belongs to.
        service: String,
    },

    #[error(
        "serving the last good version of this Ingress (resourceVersion {}) until its errors are fixed",
        .resource_version.as_deref().unwrap_or("unknown")
    )]
    ServingLastGood { resource_version: Option<String> },

    #[error(
        "{field}: {kind} {name:?} does not exist in this namespace; the Ingress's routes {} until \
         it does",
        .without.routes()
    )]
    PolicyNotFound {
        field: String,
        kind: &'static str,
        name: String,
        without: WithoutPolicy,
    },

    #[error(
        "{field}: {kind} {name:?} is not valid (see its status); the Ingress's routes {} until \
         it is",
        .without.routes()
    )]
    PolicyNotAccepted {
        field: String,
        kind: &'static str,
        name: String,
        without: WithoutPolicy,
    },

    #[error(
        "{field}: Secret {secret:?} does not exist in this namespace; its hosts get the default \
         certificate"
    )]
    TlsSecretNotFound { field: String, secret: String },

    #[error(
        "{field}: Secret {secret:?} cannot be used: {why}; {}",
        if *.serving_last_good {
            "its last good certificate keeps serving"
        } else {
            "its hosts get the default certificate"
        }
    )]
    InvalidTlsSecret {
        field: String,
        secret: String,
        why: String,
        serving_last_good: bool,
    },

    #[error(
        "{field}: host {host:?} already has its certificate (or client CA) from the older \
         Ingress {winner}; this one's is not used for it"
    )]
    TlsHostConflict {
        field: String,
        host: String,
        winner: ObjectRef,
    },

    #[error("{field}: the certificate in Secret {secret:?} is not valid for host {host:?}")]
    CertificateHostMismatch {
        field: String,
        host: String,
        secret: String,
    },

    #[error(
        "{field}: client CA Secret {secret:?} cannot be used: {why}; the Ingress's routes \
         refuse every request (403) until it can"
    )]
    ClientCaUnavailable {
        field: String,
        secret: String,
        why: String,
    },

    /// On the policy object itself.
    #[error("{field}: {why}; the policy is not accepted")]
    InvalidPolicy { field: String, why: String },

    /// On the Ingress: `sluice.dev/auth` does not name an Auth. Not a rejection: the last
    /// good version could be unprotected, so the routes answer 503 instead.
    #[error("{field}: {why}; the Ingress's routes answer 503 until it names an Auth")]
    InvalidAuthAnnotation { field: String, why: String },

    /// On the Ingress: `sluice.dev/cache` does not name a Cache. Not a rejection, and the
    /// routes keep serving: a route without its cache loses speed, never protection.
    #[error("{field}: {why}; the Ingress's routes are served uncached until it names a Cache")]
    InvalidCacheAnnotation { field: String, why: String },

    /// On the policy object: a Secret it reads credentials from is missing.
    #[error(
        "{field}: Secret {secret:?} does not exist in the policy's namespace; the policy is not \
         accepted and routes naming it answer 503"
    )]
    PolicySecretNotFound { field: String, secret: String },

    /// On the policy object: a Secret it reads credentials from cannot be used.
    #[error(
        "{field}: Secret {secret:?} cannot be used: {why}; {}",
        if *.serving_last_good {
            "the policy's last good credentials keep being enforced"
        } else {
            "the policy is not accepted and routes naming it answer 503"
        }
    )]
    InvalidPolicySecret {
        field: String,
        secret: String,
        why: String,
        serving_last_good: bool,
    },

    #[error(
        "{field}: Secret {secret:?} does not exist in this namespace; the Ingress's routes \
         answer 503 until it does"
    )]
    BackendCaNotFound { field: String, secret: String },

    #[error(
        "{field}: Secret {secret:?} has no usable CA bundle: {why}; the Ingress's routes \
         answer 503 until it has"
    )]
    InvalidBackendCa {
        field: String,
        secret: String,
        why: String,
    },
}

impl CompileError {
    /// A short CamelCase reason for Kubernetes Events and status conditions.
    pub fn reason(&self) -> &'static str {
        match self {
            CompileError::InvalidHost { .. } => "InvalidHost",
            CompileError::InvalidPath { .. } => "InvalidPath",
            CompileError::PathNotCanonical { .. } => "PathNotCanonical",
            CompileError::PathConflict(_) => "PathConflict",
            CompileError::DefaultBackendConflict { .. } => "DefaultBackendConflict",
            CompileError::InvalidBackend { .. } => "InvalidBackend",
            CompileError::UnsupportedBackend { .. } => "UnsupportedBackend",
            CompileError::ServiceNotFound { .. } => "ServiceNotFound",
            CompileError::BackendPortNotFound { .. } => "BackendPortNotFound",
            // Both are a bad `sluice.dev/*` annotation to whoever reads the event.
            CompileError::InvalidAnnotation { .. } | CompileError::InvalidEndpointWeight { .. } => {
                "InvalidAnnotation"
            }
            CompileError::InvalidEndpointAddress { .. } => "InvalidEndpointAddress",
            CompileError::InvalidEndpointPort { .. } => "InvalidEndpointPort",
            CompileError::ServingLastGood { .. } => "ServingLastGood",
            CompileError::PolicyNotFound { .. } => "PolicyNotFound",
            CompileError::PolicyNotAccepted { .. } => "PolicyNotAccepted",
            CompileError::InvalidPolicy { .. } => "InvalidSpec",
            CompileError::InvalidAuthAnnotation { .. }
            | CompileError::InvalidCacheAnnotation { .. } => "InvalidAnnotation",
            CompileError::PolicySecretNotFound { .. } => "SecretNotFound",
            CompileError::InvalidPolicySecret { .. } => "InvalidSecret",
            CompileError::TlsSecretNotFound { .. } => "SecretNotFound",
            CompileError::InvalidTlsSecret { .. } => "InvalidSecret",
            CompileError::TlsHostConflict { .. } => "TlsHostConflict",
            CompileError::CertificateHostMismatch { .. } => "CertificateHostMismatch",
            CompileError::ClientCaUnavailable { .. } => "ClientCaUnavailable",
            CompileError::BackendCaNotFound { .. } => "BackendCANotFound",
            CompileError::InvalidBackendCa { .. } => "InvalidBackendCA",
        }
    }

    /// Whether the error takes the whole object out or only a part of it.
    pub fn severity(&self) -> Severity {
        match self {
            CompileError::InvalidAnnotation { .. }
            | CompileError::InvalidPolicy { .. }
            | CompileError::PolicySecretNotFound { .. }
            | CompileError::InvalidPolicySecret { .. } => Severity::Rejection,
            CompileError::ServingLastGood { .. } => Severity::Notice,
            CompileError::InvalidHost { .. }
            | CompileError::InvalidPath { .. }
            | CompileError::PathNotCanonical { .. }
            | CompileError::PathConflict(_)
            | CompileError::DefaultBackendConflict { .. }
            | CompileError::InvalidBackend { .. }
            | CompileError::UnsupportedBackend { .. }
            | CompileError::ServiceNotFound { .. }
            | CompileError::BackendPortNotFound { .. }
            | CompileError::InvalidEndpointWeight { .. }
            | CompileError::InvalidEndpointAddress { .. }
            | CompileError::InvalidEndpointPort { .. }
            | CompileError::PolicyNotFound { .. }
            | CompileError::PolicyNotAccepted { .. }
            | CompileError::InvalidAuthAnnotation { .. }
            | CompileError::InvalidCacheAnnotation { .. }
            | CompileError::TlsSecretNotFound { .. }
            | CompileError::InvalidTlsSecret { .. }
            | CompileError::TlsHostConflict { .. }
            | CompileError::CertificateHostMismatch { .. }
            | CompileError::ClientCaUnavailable { .. } => Severity::Partial,
            CompileError::BackendCaNotFound { .. } | CompileError::InvalidBackendCa { .. } => {
                Severity::Partial
            }
        }
    }

    /// True when the whole object was rejected.
    pub fn is_rejection(&self) -> bool {
        self.severity() == Severity::Rejection
    }

    /// The path of the field the error concerns, such as
    /// `spec.rules[0].http.paths[1].backend.service.port.name`.
    pub fn field(&self) -> Option<&str> {
        match self {
            CompileError::InvalidHost { field, .. }
            | CompileError::InvalidPath { field, .. }
            | CompileError::PathNotCanonical { field, .. }
            | CompileError::DefaultBackendConflict { field, .. }
            | CompileError::InvalidBackend { field, .. }
            | CompileError::UnsupportedBackend { field, .. }
            | CompileError::ServiceNotFound { field, .. }
            | CompileError::BackendPortNotFound { field, .. }
            | CompileError::InvalidAnnotation { field, .. }
            | CompileError::InvalidEndpointWeight { field, .. }
            | CompileError::InvalidEndpointAddress { field, .. }
            | CompileError::InvalidEndpointPort { field, .. }
            | CompileError::PolicyNotFound { field, .. }
            | CompileError::PolicyNotAccepted { field, .. }
            | CompileError::InvalidPolicy { field, .. }
            | CompileError::InvalidAuthAnnotation { field, .. }
            | CompileError::InvalidCacheAnnotation { field, .. }
            | CompileError::PolicySecretNotFound { field, .. }
            | CompileError::InvalidPolicySecret { field, .. }
            | CompileError::TlsSecretNotFound { field, .. }
            | CompileError::InvalidTlsSecret { field, .. }
            | CompileError::TlsHostConflict { field, .. }
            | CompileError::CertificateHostMismatch { field, .. }
            | CompileError::ClientCaUnavailable { field, .. } => Some(field),
            CompileError::BackendCaNotFound { field, .. }
            | CompileError::InvalidBackendCa { field, .. } => Some(field),
            CompileError::PathConflict(conflict) => Some(&conflict.field),
            CompileError::ServingLastGood { .. } => None,
        }
    }
}

/// What the routes of an Ingress do while a policy it names is missing or not accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum WithoutPolicy {
    /// They answer 503: serving them without an Auth or a RateLimit would open them.
    Unavailable,
    /// They are served as if the policy were not named: without a Cache a route is only
    /// slower, so failing open is safe.
    Served,
}

impl WithoutPolicy {
    /// What the routes do, as the end of an error message.
    fn routes(self) -> &'static str {
        match self {
            WithoutPolicy::Unavailable => "answer 503",
            WithoutPolicy::Served => "are served without it",
        }
    }
}

/// A path that another route already holds: same host, same match kind, same normalised
/// path, different target.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "{field}: {path_match} path {path:?} on {} is already routed by Ingress {winner} at \
     {winner_field}; this path is ignored",
    host_label(.host)
)]
pub struct ConflictingPath {
    /// The path item that lost, `spec.rules[i].http.paths[j]`.
    pub field: String,
    /// The host as written (lower case), empty for rules without a host.
    pub host: String,
    pub path_match: PathMatch,
    /// The normalised path.
    pub path: String,
    /// The Ingress whose route was kept (this one, for a conflict within one Ingress).
    pub winner: ObjectRef,
    /// The path item of the route that was kept.
    pub winner_field: String,
}

fn host_label(host: &str) -> String {
    if host.is_empty() {
        "rules without a host".to_owned()
    } else {
        format!("host {host}")
    }
}

/// Operational failures of the controller (as opposed to problems with objects, which are
/// [`CompileError`]s reported on the objects themselves).
#[derive(Debug, thiserror::Error)]
pub enum ControllerError {
    #[error("cannot watch {path} for changes: {why}")]
    Watch { path: String, why: String },
    #[error("every watch of the Kubernetes API ended")]
    WatchesEnded,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_start_with_the_field() {
        let error = CompileError::BackendPortNotFound {
            field: "spec.rules[0].http.paths[1].backend.service.port.name".into(),
            service: "shop/web".into(),
            port: "http".into(),
        };
        assert_eq!(
            error.to_string(),
            "spec.rules[0].http.paths[1].backend.service.port.name: Service shop/web has no \
             port http; the path is ignored"
        );
        assert_eq!(error.reason(), "BackendPortNotFound");
        assert_eq!(
            error.field(),
            Some("spec.rules[0].http.paths[1].backend.service.port.name")
        );
    }

    #[test]
    fn only_invalid_annotation_rejects_the_object() {
        let rejection = CompileError::InvalidAnnotation {
            field: "metadata.annotations[sluice.dev/load-balance]".into(),
            value: "random".into(),
            why: "unknown".into(),
        };
        assert!(rejection.is_rejection());
        let partial = CompileError::InvalidPath {
            field: "spec.rules[0].http.paths[0].path".into(),
            path: "a".into(),
            why: "must start with /".into(),
        };
        assert_eq!(partial.severity(), Severity::Partial);
        assert!(!partial.is_rejection());
        let notice = CompileError::ServingLastGood {
            resource_version: Some("42".into()),
        };
        assert_eq!(notice.severity(), Severity::Notice);
        assert!(notice.to_string().contains("resourceVersion 42"));
        assert_eq!(notice.field(), None);
    }

    #[test]
    fn a_missing_policy_says_what_its_routes_do_meanwhile() {
        let missing = |kind, without| CompileError::PolicyNotFound {
            field: "metadata.annotations[sluice.dev/x]".into(),
            kind,
            name: "p".into(),
            without,
        };
        assert_eq!(
            missing("Auth", WithoutPolicy::Unavailable).to_string(),
            "metadata.annotations[sluice.dev/x]: Auth \"p\" does not exist in this namespace; \
             the Ingress's routes answer 503 until it does"
        );
        assert_eq!(
            missing("Cache", WithoutPolicy::Served).to_string(),
            "metadata.annotations[sluice.dev/x]: Cache \"p\" does not exist in this namespace; \
             the Ingress's routes are served without it until it does"
        );
        let refused = CompileError::PolicyNotAccepted {
            field: "metadata.annotations[sluice.dev/cache]".into(),
            kind: "Cache",
            name: "p".into(),
            without: WithoutPolicy::Served,
        };
        assert!(
            refused
                .to_string()
                .ends_with("is not valid (see its status); the Ingress's routes are served without it until it is"),
            "{refused}"
        );
        assert_eq!(refused.severity(), Severity::Partial);
    }

    #[test]
    fn path_conflict_names_the_winner_and_host() {
        let error = CompileError::PathConflict(Box::new(ConflictingPath {
            field: "spec.rules[0].http.paths[0]".into(),
            host: String::new(),
            path_match: PathMatch::Prefix,
            path: "/api".into(),
            winner: ObjectRef::new("shop", "old"),
            winner_field: "spec.rules[2].http.paths[0]".into(),
        }));
        let message = error.to_string();
        assert!(message.contains("Ingress shop/old at spec.rules[2].http.paths[0]"));
        assert!(message.starts_with(
            "spec.rules[0].http.paths[0]: Prefix path \"/api\" on rules without a host"
        ));
        assert_eq!(error.field(), Some("spec.rules[0].http.paths[0]"));
        assert_eq!(error.reason(), "PathConflict");
    }
}
