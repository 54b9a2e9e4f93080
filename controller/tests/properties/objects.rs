//! Random sets of the objects the compiler reads, built from fuzzer input.
//!
//! Names, hosts, paths and values are drawn mostly from small pools, so objects refer to
//! one another (an Ingress names a Service that exists, an Auth names a Secret that holds
//! an htpasswd file) and the compiler goes deep; free text still reaches every field.

use std::collections::BTreeSet;
use std::sync::{Arc, LazyLock};

use arbitrary::Arbitrary;
use serde_json::{Map, Value, json};
use sluice_controller::compile::ClusterObjects;

/// Namespaces: most objects live in `shop`, so references resolve.
const NAMESPACES: &[&str] = &["shop", "shop", "shop", "blog"];

const NAMES: &[&str] = &[
    "web", "api", "admin", "tls", "tls-wild", "ca", "htpasswd", "jwks", "keys", "limits", "guard",
    "store", "missing", "",
];

const HOSTS: &[&str] = &[
    "shop.example",
    "Shop.Example",
    "api.shop.example",
    "*.shop.example",
    "*.example",
    "blog.example",
    "shop.example.",
    "1.2.3.4",
    "shop.example:80",
    "*",
    "a..b",
    "*.*.example",
    "under_score.example",
    "xn--bcher-kva.example",
    "",
];

const PATHS: &[&str] = &[
    "/",
    "/api",
    "/api/",
    "/admin",
    "/Admin",
    "/a/b",
    "//api",
    "/%61pi",
    "/a%2fb",
    "/a%2Fb",
    "/café",
    "/caf%C3%A9",
    "/a/../b",
    "/.",
    "/%2e%2e",
    "/x;y",
    "/{x}",
    "/a b",
    "/.well-known/acme-challenge/t",
    "/api/*",
    "(regex)",
    "api",
    "",
    "/%zz",
    "/%00",
];

const PATH_TYPES: &[&str] = &["Prefix", "Exact", "ImplementationSpecific", "", "Regex"];

const PORT_NAMES: &[&str] = &["http", "https", "grpc", "", "HTTP"];

const ADDRESSES: &[&str] = &[
    "10.0.0.1",
    "10.0.0.2",
    "10.0.0.1",
    "fd00::1",
    "::ffff:10.0.0.1",
    "10.0.0.256",
    "host.example",
    "",
];

/// Annotation names the compiler reads, and a few it does not.
pub const ANNOTATIONS: &[&str] = &[
    "sluice.dev/load-balance",
    "sluice.dev/hash-key",
    "sluice.dev/rate-limit",
    "sluice.dev/auth",
    "sluice.dev/cache",
    "sluice.dev/ssl-redirect",
    "sluice.dev/hsts",
    "sluice.dev/client-ca",
    "sluice.dev/backend-protocol",
    "sluice.dev/backend-ca",
    "sluice.dev/backend-sni",
    "sluice.dev/backend-tls-verify",
    "sluice.dev/websocket-idle-timeout",
    "sluice.dev/strict-paths",
    "sluice.dev/unknown",
    "kubernetes.io/ingress.class",
    "nginx.ingress.kubernetes.io/rewrite-target",
];

/// Annotation values: good ones for each annotation, near misses, and separators.
pub const ANNOTATION_WORDS: &[&str] = &[
    "round-robin",
    "least-request",
    "ewma",
    "hash",
    "header:X-User",
    "cookie:session",
    "client-ip",
    "header:",
    "cookie:a b",
    "limits",
    "guard",
    "store",
    "missing",
    "ca",
    "tls",
    "Limits",
    "ns/name",
    ",",
    " ",
    "true",
    "false",
    "TRUE",
    "max-age=600",
    "max-age=",
    "max-age=18446744073709551616",
    "; includeSubDomains",
    "; preload",
    ";",
    "HTTP",
    "HTTPS",
    "H2C",
    "GRPC",
    "GRPCS",
    "grpcs",
    "backend.shop.svc",
    "10.0.0.1",
    "::1",
    "-bad-",
    "3600s",
    "90m",
    "1h30m",
    "500ms",
    "0s",
    "169h",
    "30m1h",
    "18446744073709551615h",
    "99999999999999999999s",
    "sluice",
    "10.0.0.1=5",
    "10.0.0.2=1001",
    "fd00::1=1",
    "=",
    "\n",
    "é",
];

const LIMIT_WORDS: &[&str] = &[
    "1s",
    "10s",
    "1m",
    "24h",
    "0s",
    "999999h",
    "1d",
    "s",
    "clientIP",
    "host",
    "path",
    "method",
    "header:X-Api-Key",
    "cookie:id",
    "header:",
    "ip",
];

const CACHE_WORDS: &[&str] = &[
    "60s",
    "1m",
    "8760h",
    "8761h",
    "0s",
    "1Mi",
    "64Mi",
    "1Gi",
    "1k",
    "0",
    "99999999999G",
    "10%",
    "50%",
    "51%",
    "method",
    "host",
    "path",
    "query",
    "header:Accept",
    "cookie:id",
    "header:",
    "user",
];

const AUTH_WORDS: &[&str] = &[
    "10.0.0.0/8",
    "::1/128",
    "10.0.0.1",
    "10.0.0.0/33",
    "0.0.0.0/0",
    "https://issuer.example",
    "https://issuer.example/keys",
    "http://auth.shop.svc/check",
    "https://",
    "shop",
    "X-User",
    "sub",
    "500ms",
    "0s",
    "99999s",
    "Authorization",
    "Host",
];

const HTPASSWD: &[&str] = &[
    "ada:$2b$04$abcdefghijklmnopqrstuuyvPXIbu7xe6/CED2DzX8z6Si09MlzlW\n",
    "bob:$5$rounds=1000$saltsalt$eNI.02a9Kos9UxzxjTLpNZ6kYHkRe9Z8OsGkDDoW/X2\n",
    "eve:$apr1$x$y\n",
    "# comment\n",
    "ada:plain\n",
    "",
];

const JWKS: &str = include_str!("../../../dataplane/src/auth/testdata/jwks.json");

/// Text built from a pool of words, single bytes and free strings.
#[derive(Debug, Clone, Arbitrary)]
pub enum Word {
    Pool(u8),
    Free(String),
}

#[derive(Debug, Clone, Default, Arbitrary)]
pub struct Words(pub Vec<Word>);

impl Words {
    pub fn render(&self, pool: &[&str]) -> String {
        self.0
            .iter()
            .map(|word| match word {
                Word::Pool(index) => pool[usize::from(*index) % pool.len()].to_owned(),
                Word::Free(text) => text.clone(),
            })
            .collect()
    }
}

/// One of a pool, or free text.
#[derive(Debug, Clone, Arbitrary)]
pub enum Pick {
    Pool(u8),
    Free(String),
}

impl Pick {
    pub fn from<'a>(&'a self, pool: &[&'a str]) -> &'a str {
        match self {
            Pick::Pool(index) => pool[usize::from(*index) % pool.len()],
            Pick::Free(text) => text,
        }
    }
}

#[derive(Debug, Clone, Arbitrary)]
pub struct Meta {
    pub namespace: u8,
    pub name: Pick,
    pub annotations: Vec<(Pick, Words)>,
    pub created: Option<u8>,
    pub resource_version: Option<u8>,
}

impl Meta {
    fn json(&self) -> Value {
        let mut meta = json!({
            "namespace": NAMESPACES[usize::from(self.namespace) % NAMESPACES.len()],
            "name": self.name.from(NAMES),
        });
        if !self.annotations.is_empty() {
            let annotations: Map<String, Value> = self
                .annotations
                .iter()
                .map(|(name, value)| {
                    (
                        name.from(ANNOTATIONS).to_owned(),
                        Value::from(value.render(ANNOTATION_WORDS)),
                    )
                })
                .collect();
            meta["annotations"] = Value::Object(annotations);
        }
        if let Some(created) = self.created {
            meta["creationTimestamp"] = Value::from(format!(
                "2026-01-01T00:{:02}:{:02}Z",
                created / 60 % 60,
                created % 60
            ));
        }
        if let Some(version) = self.resource_version {
            meta["resourceVersion"] = Value::from(version.to_string());
        }
        meta
    }
}

#[derive(Debug, Clone, Arbitrary)]
pub enum PortRef {
    Number(u16),
    Name(Pick),
    Both,
    Neither,
}

#[derive(Debug, Clone, Arbitrary)]
pub struct BackendInput {
    pub service: Pick,
    pub port: PortRef,
    pub resource: bool,
}

impl BackendInput {
    fn json(&self) -> Value {
        if self.resource {
            return json!({"resource": {"apiGroup": "x.example", "kind": "Bucket", "name": "b"}});
        }
        let port = match &self.port {
            PortRef::Number(number) => json!({"number": i32::from(*number % 9000)}),
            PortRef::Name(name) => json!({"name": name.from(PORT_NAMES)}),
            PortRef::Both => json!({"number": 80, "name": "http"}),
            PortRef::Neither => json!({}),
        };
        json!({"service": {"name": self.service.from(NAMES), "port": port}})
    }
}

#[derive(Debug, Clone, Arbitrary)]
pub struct PathInput {
    pub path: Option<Words>,
    pub path_type: u8,
    pub backend: BackendInput,
}

#[derive(Debug, Clone, Arbitrary)]
pub struct RuleInput {
    pub host: Option<Pick>,
    pub paths: Option<Vec<PathInput>>,
}

#[derive(Debug, Clone, Arbitrary)]
pub struct TlsInput {
    pub hosts: Option<Vec<Pick>>,
    pub secret: Option<Pick>,
}

#[derive(Debug, Clone, Copy, Arbitrary)]
pub enum ClassChoice {
    Field,
    Other,
    Legacy,
    Unset,
}

#[derive(Debug, Clone, Arbitrary)]
pub struct IngressInput {
    pub meta: Meta,
    pub class: ClassChoice,
    pub rules: Vec<RuleInput>,
    pub default_backend: Option<BackendInput>,
    pub tls: Vec<TlsInput>,
}

impl IngressInput {
    pub fn json(&self) -> Value {
        let mut meta = self.meta.json();
        let mut spec = Map::new();
        match self.class {
            ClassChoice::Field => {
                spec.insert("ingressClassName".into(), "sluice".into());
            }
            ClassChoice::Other => {
                spec.insert("ingressClassName".into(), "other".into());
            }
            ClassChoice::Legacy => {
                let annotations = meta["annotations"].as_object().cloned().unwrap_or_default();
                let mut annotations = annotations;
                annotations.insert("kubernetes.io/ingress.class".into(), "sluice".into());
                meta["annotations"] = Value::Object(annotations);
            }
            ClassChoice::Unset => {}
        }
        let rules: Vec<Value> = self
            .rules
            .iter()
            .map(|rule| {
                let mut value = Map::new();
                if let Some(host) = &rule.host {
                    value.insert("host".into(), host.from(HOSTS).into());
                }
                if let Some(paths) = &rule.paths {
                    let paths: Vec<Value> = paths
                        .iter()
                        .map(|path| {
                            let mut item = json!({
                                "pathType": PATH_TYPES[usize::from(path.path_type) % PATH_TYPES.len()],
                                "backend": path.backend.json(),
                            });
                            if let Some(text) = &path.path {
                                item["path"] = text.render(PATHS).into();
                            }
                            item
                        })
                        .collect();
                    value.insert("http".into(), json!({"paths": paths}));
                }
                Value::Object(value)
            })
            .collect();
        spec.insert("rules".into(), rules.into());
        if let Some(backend) = &self.default_backend {
            spec.insert("defaultBackend".into(), backend.json());
        }
        if !self.tls.is_empty() {
            let tls: Vec<Value> = self
                .tls
                .iter()
                .map(|item| {
                    let mut value = Map::new();
                    if let Some(hosts) = &item.hosts {
                        let hosts: Vec<&str> = hosts.iter().map(|h| h.from(HOSTS)).collect();
                        value.insert("hosts".into(), json!(hosts));
                    }
                    if let Some(secret) = &item.secret {
                        value.insert("secretName".into(), secret.from(NAMES).into());
                    }
                    Value::Object(value)
                })
                .collect();
            spec.insert("tls".into(), tls.into());
        }
        json!({"metadata": meta, "spec": spec})
    }
}

#[derive(Debug, Clone, Arbitrary)]
pub struct ServiceInput {
    pub meta: Meta,
    pub ports: Vec<(Option<Pick>, u16)>,
    pub external_name: bool,
}

#[derive(Debug, Clone, Arbitrary)]
pub struct EndpointInput {
    pub addresses: Vec<Pick>,
    pub ready: Option<bool>,
    pub serving: Option<bool>,
    pub terminating: Option<bool>,
}

#[derive(Debug, Clone, Arbitrary)]
pub struct SliceInput {
    pub meta: Meta,
    pub service: Option<Pick>,
    pub address_type: u8,
    pub ports: Vec<(Option<Pick>, Option<u16>)>,
    pub endpoints: Vec<EndpointInput>,
    pub weights: Option<Words>,
}

#[derive(Debug, Clone, Arbitrary)]
pub enum SecretData {
    /// A certificate and key made at start-up (0: shop.example and *.shop.example,
    /// 1: blog.example), or one's certificate with the other's key.
    Tls(u8),
    Ca,
    Htpasswd(Words),
    Jwks(bool),
    ApiKeys(Vec<(Pick, Pick)>),
    Junk(Vec<(Pick, String)>),
}

#[derive(Debug, Clone, Arbitrary)]
pub struct SecretInput {
    pub meta: Meta,
    pub data: SecretData,
}

#[derive(Debug, Clone, Arbitrary)]
pub struct LimitInput {
    pub requests: u8,
    pub period: Words,
    pub burst: Option<u8>,
    pub key: Option<Vec<Words>>,
}

#[derive(Debug, Clone, Arbitrary)]
pub struct RateLimitInput {
    pub meta: Meta,
    pub limits: Vec<LimitInput>,
    pub redis: bool,
    pub on_failure: u8,
    pub local_share: Option<u16>,
    pub headers: u8,
}

#[derive(Debug, Clone, Arbitrary)]
pub struct AuthSpecInput {
    pub basic: Option<(Pick, Option<String>)>,
    pub api_key: Option<(bool, Option<Pick>, bool)>,
    pub jwt: Option<JwtInput>,
    pub forward: Option<(Words, Words)>,
    pub ip_allow: Vec<Words>,
    pub ip_deny: Vec<Words>,
    pub require_all: bool,
    pub strip_credentials: bool,
}

/// `spec.jwt`: issuer, audiences, the JWKS Secret, the JWKS URL, algorithms.
#[derive(Debug, Clone, Arbitrary)]
pub struct JwtInput {
    pub issuer: Words,
    pub audiences: Vec<Words>,
    pub secret: Option<Pick>,
    pub uri: Option<Words>,
    pub algorithms: Vec<u8>,
}

#[derive(Debug, Clone, Arbitrary)]
pub struct AuthInput {
    pub meta: Meta,
    pub spec: AuthSpecInput,
}

#[derive(Debug, Clone, Arbitrary)]
pub struct CacheInput {
    pub meta: Meta,
    pub ttl: Option<Words>,
    pub respect_cache_control: bool,
    pub stale: (Option<Words>, Option<Words>),
    pub key: Option<Vec<Words>>,
    pub head_only: bool,
    pub sizes: (Option<Words>, Option<Words>),
    pub redis: Option<(bool, Words)>,
    pub bypass: Option<(Vec<Words>, Vec<Words>)>,
}

/// A set of objects as a fuzzer describes it.
#[derive(Debug, Clone, Arbitrary)]
pub struct ObjectsInput {
    pub ingresses: Vec<IngressInput>,
    pub services: Vec<ServiceInput>,
    pub slices: Vec<SliceInput>,
    pub secrets: Vec<SecretInput>,
    pub rate_limits: Vec<RateLimitInput>,
    pub auths: Vec<AuthInput>,
    pub caches: Vec<CacheInput>,
    pub default_class: bool,
}

struct Pair {
    cert: String,
    key: String,
}

fn pairs() -> &'static [Pair; 2] {
    static PAIRS: LazyLock<[Pair; 2]> = LazyLock::new(|| {
        let issue = |names: &[&str]| {
            let names: Vec<String> = names.iter().map(|name| (*name).to_owned()).collect();
            let generated =
                rcgen::generate_simple_self_signed(names).expect("a self-signed certificate");
            Pair {
                cert: generated.cert.pem(),
                key: generated.signing_key.serialize_pem(),
            }
        };
        [
            issue(&["shop.example", "*.shop.example"]),
            issue(&["blog.example"]),
        ]
    });
    &PAIRS
}

fn meta_key(kind: &str, object: &Value) -> (String, String, String) {
    let text = |field: &str| {
        object["metadata"][field]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    };
    (kind.to_owned(), text("namespace"), text("name"))
}

/// Deserialises each object, keeping the first of any kind, namespace and name (the
/// compiler expects them unique, as any source's index keeps them).
fn typed<T: serde::de::DeserializeOwned>(
    kind: &str,
    values: Vec<Value>,
    seen: &mut BTreeSet<(String, String, String)>,
) -> Vec<Arc<T>> {
    values
        .into_iter()
        .filter(|value| seen.insert(meta_key(kind, value)))
        .filter_map(|value| serde_json::from_value(value).ok())
        .map(Arc::new)
        .collect()
}

fn words_list(list: &[Words], pool: &[&str]) -> Vec<String> {
    list.iter().map(|words| words.render(pool)).collect()
}

impl ObjectsInput {
    pub fn build(&self) -> ClusterObjects {
        let mut seen = BTreeSet::new();
        let policy = |kind: &str, meta: &Meta, spec: Value| {
            json!({
                "apiVersion": "sluice.dev/v1alpha1",
                "kind": kind,
                "metadata": meta.json(),
                "spec": spec,
            })
        };
        let ingresses = self.ingresses.iter().map(IngressInput::json).collect();
        let services = self
            .services
            .iter()
            .map(|service| {
                let ports: Vec<Value> = service
                    .ports
                    .iter()
                    .map(|(name, port)| {
                        let mut value = json!({"port": i32::from(*port % 9000)});
                        if let Some(name) = name {
                            value["name"] = name.from(PORT_NAMES).into();
                        }
                        value
                    })
                    .collect();
                let spec = if service.external_name {
                    json!({"type": "ExternalName", "externalName": "db.example", "ports": ports})
                } else {
                    json!({"ports": ports})
                };
                json!({"metadata": service.meta.json(), "spec": spec})
            })
            .collect();
        let slices = self
            .slices
            .iter()
            .map(|slice| {
                let mut meta = slice.meta.json();
                if let Some(service) = &slice.service {
                    meta["labels"] = json!({"kubernetes.io/service-name": service.from(NAMES)});
                }
                if let Some(weights) = &slice.weights {
                    let mut annotations =
                        meta["annotations"].as_object().cloned().unwrap_or_default();
                    annotations.insert(
                        "sluice.dev/endpoint-weights".into(),
                        weights.render(ANNOTATION_WORDS).into(),
                    );
                    meta["annotations"] = Value::Object(annotations);
                }
                let ports: Vec<Value> = slice
                    .ports
                    .iter()
                    .map(|(name, port)| {
                        let mut value = json!({"protocol": "TCP"});
                        if let Some(name) = name {
                            value["name"] = name.from(PORT_NAMES).into();
                        }
                        if let Some(port) = port {
                            value["port"] = i32::from(*port).into();
                        }
                        value
                    })
                    .collect();
                let endpoints: Vec<Value> = slice
                    .endpoints
                    .iter()
                    .map(|endpoint| {
                        let addresses: Vec<&str> = endpoint
                            .addresses
                            .iter()
                            .map(|a| a.from(ADDRESSES))
                            .collect();
                        let mut conditions = Map::new();
                        for (name, value) in [
                            ("ready", endpoint.ready),
                            ("serving", endpoint.serving),
                            ("terminating", endpoint.terminating),
                        ] {
                            if let Some(value) = value {
                                conditions.insert(name.into(), value.into());
                            }
                        }
                        json!({"addresses": addresses, "conditions": conditions})
                    })
                    .collect();
                json!({
                    "metadata": meta,
                    "addressType": (["IPv4", "IPv6", "FQDN"][usize::from(slice.address_type) % 3]),
                    "ports": ports,
                    "endpoints": endpoints,
                })
            })
            .collect();
        let secrets = self
            .secrets
            .iter()
            .map(|secret| {
                let pairs = pairs();
                let data: Map<String, Value> = match &secret.data {
                    SecretData::Tls(choice) => {
                        let (cert, key) = match choice % 3 {
                            0 => (&pairs[0].cert, &pairs[0].key),
                            1 => (&pairs[1].cert, &pairs[1].key),
                            _ => (&pairs[0].cert, &pairs[1].key),
                        };
                        [("tls.crt", cert), ("tls.key", key)]
                            .into_iter()
                            .map(|(k, v)| (k.to_owned(), Value::from(v.as_str())))
                            .collect()
                    }
                    SecretData::Ca => [("ca.crt".to_owned(), Value::from(pairs[0].cert.as_str()))]
                        .into_iter()
                        .collect(),
                    SecretData::Htpasswd(words) => {
                        [("auth".to_owned(), words.render(HTPASSWD).into())]
                            .into_iter()
                            .collect()
                    }
                    SecretData::Jwks(good) => {
                        let document = if *good { JWKS } else { "{\"keys\":[]}" };
                        [("jwks.json".to_owned(), Value::from(document))]
                            .into_iter()
                            .collect()
                    }
                    SecretData::ApiKeys(keys) => keys
                        .iter()
                        .map(|(name, key)| {
                            (name.from(NAMES).to_owned(), Value::from(key.from(NAMES)))
                        })
                        .collect(),
                    SecretData::Junk(entries) => entries
                        .iter()
                        .map(|(name, value)| {
                            (
                                name.from(&["tls.crt", "tls.key", "ca.crt", "auth", "jwks.json"])
                                    .to_owned(),
                                Value::from(value.as_str()),
                            )
                        })
                        .collect(),
                };
                json!({"metadata": secret.meta.json(), "stringData": data})
            })
            .collect();
        let rate_limits = self
            .rate_limits
            .iter()
            .map(|limit| {
                let limits: Vec<Value> = limit
                    .limits
                    .iter()
                    .map(|l| {
                        let mut value = json!({
                            "requests": u64::from(l.requests),
                            "period": l.period.render(LIMIT_WORDS),
                        });
                        if let Some(burst) = l.burst {
                            value["burst"] = u64::from(burst).into();
                        }
                        if let Some(key) = &l.key {
                            value["key"] = words_list(key, LIMIT_WORDS).into();
                        }
                        value
                    })
                    .collect();
                let mut spec = json!({
                    "limits": limits,
                    "backend": if limit.redis { "redis" } else { "local" },
                    "onBackendFailure": (["allow", "deny", "local"][usize::from(limit.on_failure) % 3]),
                    "headers": (["ietf", "legacy", "none"][usize::from(limit.headers) % 3]),
                });
                if let Some(share) = limit.local_share {
                    spec["localShare"] = u32::from(share).into();
                }
                policy("RateLimit", &limit.meta, spec)
            })
            .collect();
        let auths = self
            .auths
            .iter()
            .map(|auth| {
                let input = &auth.spec;
                let mut spec = Map::new();
                if let Some((secret, realm)) = &input.basic {
                    let mut basic = json!({"secretRef": {"name": secret.from(NAMES)}});
                    if let Some(realm) = realm {
                        basic["realm"] = realm.as_str().into();
                    }
                    spec.insert("basic".into(), basic);
                }
                if let Some((header, secret, redis)) = &input.api_key {
                    let mut api_key = if *header {
                        json!({"header": "X-Api-Key"})
                    } else {
                        json!({"query": "api_key"})
                    };
                    if let Some(secret) = secret {
                        api_key["secretRef"] = json!({"name": secret.from(NAMES)});
                    }
                    if *redis {
                        api_key["redisSet"] = true.into();
                    }
                    spec.insert("apiKey".into(), api_key);
                }
                if let Some(JwtInput {
                    issuer,
                    audiences,
                    secret,
                    uri,
                    algorithms,
                }) = &input.jwt
                {
                    let mut jwt = json!({
                        "issuer": issuer.render(AUTH_WORDS),
                        "audiences": words_list(audiences, AUTH_WORDS),
                    });
                    if let Some(secret) = secret {
                        jwt["jwksSecretRef"] = json!({"name": secret.from(NAMES)});
                    }
                    if let Some(uri) = uri {
                        jwt["jwksUri"] = uri.render(AUTH_WORDS).into();
                    }
                    if !algorithms.is_empty() {
                        const ALGORITHMS: &[&str] = &[
                            "RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384",
                            "EdDSA",
                        ];
                        let names: Vec<&str> = algorithms
                            .iter()
                            .map(|a| ALGORITHMS[usize::from(*a) % ALGORITHMS.len()])
                            .collect();
                        jwt["algorithms"] = json!(names);
                    }
                    spec.insert("jwt".into(), jwt);
                }
                if let Some((url, timeout)) = &input.forward {
                    spec.insert(
                        "forward".into(),
                        json!({
                            "url": url.render(AUTH_WORDS),
                            "timeout": timeout.render(AUTH_WORDS),
                            "requestHeaders": ["Authorization"],
                            "responseHeaders": ["X-User"],
                        }),
                    );
                }
                spec.insert(
                    "ipAllow".into(),
                    words_list(&input.ip_allow, AUTH_WORDS).into(),
                );
                spec.insert(
                    "ipDeny".into(),
                    words_list(&input.ip_deny, AUTH_WORDS).into(),
                );
                spec.insert(
                    "require".into(),
                    if input.require_all { "all" } else { "any" }.into(),
                );
                spec.insert("stripCredentials".into(), input.strip_credentials.into());
                policy("Auth", &auth.meta, Value::Object(spec))
            })
            .collect();
        let caches = self
            .caches
            .iter()
            .map(|cache| {
                let mut spec = json!({
                    "respectCacheControl": cache.respect_cache_control,
                    "methods": if cache.head_only { json!(["HEAD"]) } else { json!(["GET", "HEAD"]) },
                });
                let mut set = |field: &str, words: &Option<Words>| {
                    if let Some(words) = words {
                        spec[field] = words.render(CACHE_WORDS).into();
                    }
                };
                set("ttl", &cache.ttl);
                set("staleWhileRevalidate", &cache.stale.0);
                set("staleIfError", &cache.stale.1);
                set("maxObjectSize", &cache.sizes.0);
                if let Some(size) = &cache.sizes.1 {
                    spec["memory"] = json!({"maxSize": size.render(CACHE_WORDS)});
                }
                if let Some(key) = &cache.key {
                    spec["key"] = words_list(key, CACHE_WORDS).into();
                }
                if let Some((enabled, jitter)) = &cache.redis {
                    spec["redis"] = json!({"enabled": enabled, "ttlJitter": jitter.render(CACHE_WORDS)});
                }
                if let Some((headers, cookies)) = &cache.bypass {
                    spec["bypass"] = json!({
                        "headers": words_list(headers, CACHE_WORDS),
                        "cookies": words_list(cookies, CACHE_WORDS),
                    });
                }
                policy("Cache", &cache.meta, spec)
            })
            .collect();
        let classes = vec![
            json!({
                "metadata": {
                    "name": "sluice",
                    "annotations": {"ingressclass.kubernetes.io/is-default-class": self.default_class.to_string()},
                },
                "spec": {"controller": "sluice.dev/ingress-controller"},
            }),
            json!({"metadata": {"name": "other"}, "spec": {"controller": "example.com/other"}}),
        ];
        ClusterObjects {
            ingresses: typed("Ingress", ingresses, &mut seen),
            ingress_classes: typed("IngressClass", classes, &mut seen),
            services: typed("Service", services, &mut seen),
            endpoint_slices: typed("EndpointSlice", slices, &mut seen),
            secrets: typed("Secret", secrets, &mut seen),
            rate_limits: typed("RateLimit", rate_limits, &mut seen),
            auths: typed("Auth", auths, &mut seen),
            caches: typed("Cache", caches, &mut seen),
        }
    }
}
