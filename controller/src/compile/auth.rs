//! `Auth` policies: validation into what the data plane enforces, with the credentials
//! read from Secrets in the policy's namespace.

use std::sync::Arc;
use std::time::Duration;

use ipnet::IpNet;
use sluice_crds::{Auth, Cidr, JwtAlgorithm, JwtAuth, SecretRef};
use sluice_dataplane::auth::jwt::{Algorithm, JwksEndpoint, JwtRules, KeySet};
use sluice_dataplane::auth::{ApiKeys, AuthPolicy, BasicCredentials, ForwardAuth, KeyLocation};
use sluice_dataplane::snapshot::ObjectRef;
use sluice_dataplane::upstream::parse_ca_bundle;

use super::tls::{CA_KEY, SecretIndex, secret_bytes};
use crate::error::CompileError;
use crate::redact::without_quoted_values;

/// The htpasswd key of a Basic-auth Secret (ingress-nginx's name for it).
const HTPASSWD_KEY: &str = "auth";

/// The key set of a JWT Secret.
const JWKS_KEY: &str = "jwks.json";

/// The last policy each Auth compiled to, with the spec it came from: when a Secret it reads
/// goes bad (but still exists) and the spec is unchanged, that policy keeps being enforced.
pub type LastGoodAuths =
    std::collections::BTreeMap<ObjectRef, (sluice_crds::AuthSpec, Arc<AuthPolicy>)>;

/// [`compile_auth`], falling back on the last good policy when the only problems are
/// unusable (not missing) Secrets: a bad edit to a Secret must not lock everyone out, nor
/// let everyone in.
pub(crate) fn compile_auth_or_last_good(
    object: &Auth,
    name: &ObjectRef,
    secrets: &SecretIndex<'_>,
    last_good: &LastGoodAuths,
    redis_configured: bool,
) -> (Option<AuthPolicy>, Vec<CompileError>) {
    match compile_auth(object, name, secrets, redis_configured) {
        Ok(policy) => (Some(policy), Vec::new()),
        Err(mut errors) => {
            let only_bad_secrets = errors
                .iter()
                .all(|error| matches!(error, CompileError::InvalidPolicySecret { .. }));
            let previous = last_good
                .get(name)
                .filter(|(spec, _)| only_bad_secrets && *spec == object.spec);
            let Some((_, policy)) = previous else {
                return (None, errors);
            };
            for error in &mut errors {
                if let CompileError::InvalidPolicySecret {
                    serving_last_good, ..
                } = error
                {
                    *serving_last_good = true;
                }
            }
            (Some(AuthPolicy::clone(policy)), errors)
        }
    }
}

/// Validates an `Auth` and loads its credentials. Every problem is returned, each naming
/// its field; the data plane never sees a half-valid policy.
pub(crate) fn compile_auth(
    object: &Auth,
    name: &ObjectRef,
    secrets: &SecretIndex<'_>,
    redis_configured: bool,
) -> Result<AuthPolicy, Vec<CompileError>> {
    let spec = &object.spec;
    let mut errors = Vec::new();
    let invalid = |field: &str, why: String| CompileError::InvalidPolicy {
        field: field.to_owned(),
        why,
    };
    let ip_allow = networks(&spec.ip_allow, "spec.ipAllow", &mut errors);
    let ip_deny = networks(&spec.ip_deny, "spec.ipDeny", &mut errors);

    let basic = spec.basic.as_ref().and_then(|basic| {
        let field = "spec.basic.secretRef";
        let text = secret_text(
            &basic.secret_ref,
            &name.namespace,
            field,
            HTPASSWD_KEY,
            secrets,
        )
        .map_err(|error| errors.push(error))
        .ok()?;
        let realm = basic.realm.as_deref().unwrap_or(name.name.as_str());
        if !realm
            .bytes()
            .all(|byte| (b' '..=b'~').contains(&byte) && byte != b'"' && byte != b'\\')
        {
            errors.push(invalid(
                "spec.basic.realm",
                "printable ASCII without quotes or backslashes".into(),
            ));
            return None;
        }
        BasicCredentials::from_htpasswd(realm, &text)
            .map(Arc::new)
            .map_err(|error| {
                errors.push(CompileError::InvalidPolicySecret {
                    field: field.to_owned(),
                    secret: basic.secret_ref.name.clone(),
                    why: format!("key {HTPASSWD_KEY:?}: {error}"),
                    serving_last_good: false,
                })
            })
            .ok()
    });

    let api_key = spec.api_key.as_ref().and_then(|api_key| {
        let field = "spec.apiKey.secretRef";
        let location = match (&api_key.header, &api_key.query) {
            (Some(header), None) => match http::HeaderName::from_bytes(header.as_bytes()) {
                Ok(header) => KeyLocation::Header(header),
                Err(_) => {
                    errors.push(invalid(
                        "spec.apiKey.header",
                        format!("{header:?} is not a header name"),
                    ));
                    return None;
                }
            },
            (None, Some(query)) if !query.is_empty() => KeyLocation::Query(query.clone()),
            _ => {
                errors.push(invalid(
                    "spec.apiKey",
                    "exactly one of header or query is needed".into(),
                ));
                return None;
            }
        };
        if api_key.secret_ref.is_none() && !api_key.redis_set {
            errors.push(invalid(
                "spec.apiKey",
                "needs secretRef, redisSet: true, or both".into(),
            ));
            return None;
        }
        if api_key.redis_set && !redis_configured {
            errors.push(invalid(
                "spec.apiKey.redisSet",
                "needs Sluice to run with --redis-url".into(),
            ));
            return None;
        }
        let secret = match &api_key.secret_ref {
            None => None,
            Some(reference) => match secrets.get(&name.namespace, &reference.name) {
                Some(secret) => Some((reference, secret)),
                None => {
                    errors.push(CompileError::PolicySecretNotFound {
                        field: field.to_owned(),
                        secret: reference.name.clone(),
                    });
                    return None;
                }
            },
        };
        // `data` as the API server keeps it, `stringData` as a standalone file may give it.
        let values = secret.iter().flat_map(|(_, secret)| {
            secret
                .data
                .iter()
                .flatten()
                .map(|(_, value)| value.0.as_slice())
                .chain(
                    secret
                        .string_data
                        .iter()
                        .flatten()
                        .map(|(_, value)| value.as_bytes()),
                )
        });
        ApiKeys::new(location, values, api_key.redis_set)
            .map(Arc::new)
            .map_err(|_| {
                errors.push(CompileError::InvalidPolicySecret {
                    field: field.to_owned(),
                    secret: secret
                        .map(|(reference, _)| reference.name.clone())
                        .unwrap_or_default(),
                    why: "it holds no key (every data value is one key)".into(),
                    serving_last_good: false,
                })
            })
            .ok()
    });

    let realm = spec
        .basic
        .as_ref()
        .and_then(|basic| basic.realm.clone())
        .unwrap_or_else(|| name.name.clone());
    let jwt = spec.jwt.as_ref().and_then(|jwt| {
        compile_jwt(jwt, name, &realm, secrets, redis_configured)
            .map(Arc::new)
            .map_err(|mut found| errors.append(&mut found))
            .ok()
    });
    let forward = spec
        .forward
        .as_ref()
        .and_then(|forward| forward_auth(forward, &mut errors))
        .map(Arc::new);

    if spec.require == sluice_crds::Require::All && spec.basic.is_some() && spec.jwt.is_some() {
        errors.push(invalid(
            "spec.require",
            "all cannot be met with both basic and jwt: they share the one Authorization header"
                .into(),
        ));
    }
    if let (Some(jwt), Some(forward)) = (&jwt, &forward) {
        for (claim, header) in &jwt.claims_to_headers {
            if forward.response_headers.contains(header) {
                errors.push(invalid(
                    &format!("spec.jwt.claimsToHeaders.{claim}"),
                    format!("{header} is also one of spec.forward.responseHeaders"),
                ));
            }
        }
    }
    let has_rules = spec.basic.is_some()
        || spec.api_key.is_some()
        || spec.jwt.is_some()
        || spec.forward.is_some()
        || !spec.ip_allow.is_empty()
        || !spec.ip_deny.is_empty();
    if !has_rules {
        errors.push(invalid(
            "spec",
            "an Auth needs at least one of basic, apiKey, jwt, forward, ipAllow or ipDeny".into(),
        ));
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    Ok(AuthPolicy {
        name: name.clone(),
        ip_deny,
        ip_allow,
        basic,
        api_key,
        jwt,
        forward,
        require_all: spec.require == sluice_crds::Require::All,
        strip_credentials: spec.strip_credentials,
    })
}

/// The longest service URL accepted, as the CRD says.
const MAX_FORWARD_URL: usize = 2048;
/// The most headers copied either way, as the CRD says.
const MAX_FORWARD_HEADERS: usize = 32;

/// `spec.forward`, every problem an error naming its field.
fn forward_auth(
    spec: &sluice_crds::ForwardAuth,
    errors: &mut Vec<CompileError>,
) -> Option<ForwardAuth> {
    let invalid = |field: &str, why: String| CompileError::InvalidPolicy {
        field: format!("spec.forward.{field}"),
        why,
    };
    let url = forward_url(&spec.url)
        .map_err(|why| errors.push(invalid("url", why)))
        .ok();
    let timeout = forward_timeout(&spec.timeout)
        .map_err(|why| errors.push(invalid("timeout", why)))
        .ok();
    let request_headers = forward_headers(&spec.request_headers, "requestHeaders", errors);
    let response_headers = forward_headers(&spec.response_headers, "responseHeaders", errors);
    Some(ForwardAuth {
        url: url?,
        timeout: timeout?,
        request_headers: request_headers?,
        response_headers: response_headers?,
    })
}

/// An absolute `http` or `https` URL with a host and no user info.
fn forward_url(text: &str) -> Result<http::Uri, String> {
    if text.len() > MAX_FORWARD_URL {
        return Err(format!("longer than {MAX_FORWARD_URL} characters"));
    }
    let url: http::Uri = text.parse().map_err(|_| format!("{text:?} is not a URL"))?;
    if !matches!(url.scheme_str(), Some("http" | "https")) {
        return Err(format!("{text:?} is not an http:// or https:// URL"));
    }
    let Some(authority) = url.authority() else {
        return Err(format!("{text:?} has no host"));
    };
    // Not echoed: user info holds a password.
    if authority.as_str().contains('@') {
        return Err(
            "user info (user:password@) is refused: Sluice does not send it, and a \
                    password does not belong in a spec"
                .into(),
        );
    }
    if authority.host().is_empty() {
        return Err(format!("{text:?} has no host"));
    }
    // The URI parser leaves a port unchecked; the connector would fail on every request.
    if authority.as_str().len() > authority.host().len() && authority.port_u16().is_none() {
        return Err(format!("{text:?} has no valid port"));
    }
    Ok(url)
}

/// `NNNms` or `NNs`, from 1 ms to 60 s.
fn forward_timeout(text: &str) -> Result<Duration, String> {
    let wrong = || format!("{text:?} is not like 500ms or 2s");
    let (number, unit) = text
        .find(|c: char| !c.is_ascii_digit())
        .map(|at| text.split_at(at))
        .ok_or_else(wrong)?;
    let number: u64 = number.parse().map_err(|_| wrong())?;
    let timeout = match unit {
        "ms" => Duration::from_millis(number),
        "s" => Duration::from_secs(number),
        _ => return Err(wrong()),
    };
    if timeout < Duration::from_millis(1) || timeout > ForwardAuth::MAX_TIMEOUT {
        return Err(format!("{text:?} is not between 1ms and 60s"));
    }
    Ok(timeout)
}

/// Header names to copy to or from the service: valid, each once, none that Sluice sets
/// itself or that describes one connection only.
fn forward_headers(
    names: &[sluice_crds::HeaderName],
    field: &str,
    errors: &mut Vec<CompileError>,
) -> Option<Vec<http::HeaderName>> {
    let before = errors.len();
    let invalid = |field: String, why: String| CompileError::InvalidPolicy { field, why };
    if names.len() > MAX_FORWARD_HEADERS {
        errors.push(invalid(
            format!("spec.forward.{field}"),
            format!("at most {MAX_FORWARD_HEADERS} headers"),
        ));
    }
    let mut parsed: Vec<http::HeaderName> = Vec::with_capacity(names.len());
    for (index, name) in names.iter().enumerate() {
        let at = format!("spec.forward.{field}[{index}]");
        let Ok(header) = http::HeaderName::from_bytes(name.0.as_bytes()) else {
            errors.push(invalid(at, format!("{:?} is not a header name", name.0)));
            continue;
        };
        if let Some(why) = ForwardAuth::reserved_header(&header) {
            errors.push(invalid(at, format!("{:?} cannot be copied: {why}", name.0)));
        } else if parsed.contains(&header) {
            // Listed twice, its values would be copied twice.
            errors.push(invalid(at, format!("{:?} is listed twice", name.0)));
        } else {
            parsed.push(header);
        }
    }
    (errors.len() == before).then_some(parsed)
}

/// CIDRs (or bare addresses, as /32 or /128), each bad one an error naming its index.
fn networks(cidrs: &[Cidr], field: &str, errors: &mut Vec<CompileError>) -> Vec<IpNet> {
    let mut parsed = Vec::with_capacity(cidrs.len());
    for (index, cidr) in cidrs.iter().enumerate() {
        let text = cidr.0.trim();
        let network = text
            .parse::<IpNet>()
            .or_else(|_| text.parse::<std::net::IpAddr>().map(IpNet::from));
        match network {
            // Clients are compared as IPv4 when they connect over IPv4 or as IPv4-mapped
            // IPv6, so a mapped network is kept as the IPv4 network it names.
            Ok(network) => parsed.push(unmapped(network).trunc()),
            Err(_) => errors.push(CompileError::InvalidPolicy {
                field: format!("{field}[{index}]"),
                why: format!("{text:?} is not a CIDR such as 10.0.0.0/8"),
            }),
        }
    }
    parsed
}

/// `::ffff:a.b.c.d/N` (N ≥ 96) as `a.b.c.d/(N-96)`; anything else as it is.
fn unmapped(network: IpNet) -> IpNet {
    if let IpNet::V6(v6) = network
        && let Some(v4) = v6.addr().to_ipv4_mapped()
        && v6.prefix_len() >= 96
        && let Ok(mapped) = ipnet::Ipv4Net::new(v4, v6.prefix_len() - 96)
    {
        return IpNet::V4(mapped);
    }
    network
}

/// The bytes under `key` of a Secret in `namespace`.
fn secret_value<'s>(
    reference: &SecretRef,
    namespace: &str,
    field: &str,
    key: &str,
    secrets: &SecretIndex<'s>,
) -> Result<&'s [u8], CompileError> {
    let secret = secrets.get(namespace, &reference.name).ok_or_else(|| {
        CompileError::PolicySecretNotFound {
            field: field.to_owned(),
            secret: reference.name.clone(),
        }
    })?;
    secret_bytes(secret, key).ok_or_else(|| CompileError::InvalidPolicySecret {
        field: field.to_owned(),
        secret: reference.name.clone(),
        why: format!("it has no key {key:?}"),
        serving_last_good: false,
    })
}

/// The UTF-8 text under `key` of a Secret in `namespace`.
fn secret_text(
    reference: &SecretRef,
    namespace: &str,
    field: &str,
    key: &str,
    secrets: &SecretIndex<'_>,
) -> Result<String, CompileError> {
    let bytes = secret_value(reference, namespace, field, key, secrets)?;
    String::from_utf8(bytes.to_vec()).map_err(|_| CompileError::InvalidPolicySecret {
        field: field.to_owned(),
        secret: reference.name.clone(),
        why: format!("key {key:?} is not UTF-8 text"),
        serving_last_good: false,
    })
}

/// Why a claim cannot be copied into `header`, if it cannot: what an authorization service
/// may not set either, and the credentials themselves.
fn claim_target_refusal(header: &http::HeaderName) -> Option<&'static str> {
    use http::header::{AUTHORIZATION, COOKIE, PROXY_AUTHORIZATION};
    ForwardAuth::reserved_header(header).or_else(|| {
        [AUTHORIZATION, COOKIE, PROXY_AUTHORIZATION]
            .contains(header)
            .then_some("a credential header")
    })
}

/// Validates `spec.jwt` and loads the Secret's key set and the `jwksUri`'s CA.
fn compile_jwt(
    jwt: &JwtAuth,
    name: &ObjectRef,
    realm: &str,
    secrets: &SecretIndex<'_>,
    redis_configured: bool,
) -> Result<JwtRules, Vec<CompileError>> {
    let mut errors = Vec::new();
    let invalid = |field: &str, why: String| CompileError::InvalidPolicy {
        field: field.to_owned(),
        why,
    };
    if jwt.issuer.trim().is_empty() {
        errors.push(invalid("spec.jwt.issuer", "must not be empty".into()));
    }
    if jwt.audiences.is_empty() || jwt.audiences.iter().any(|audience| audience.is_empty()) {
        errors.push(invalid(
            "spec.jwt.audiences",
            "at least one, none empty".into(),
        ));
    }
    let mut algorithms = Vec::new();
    for algorithm in &jwt.algorithms {
        let algorithm = match algorithm {
            JwtAlgorithm::RS256 => Algorithm::RS256,
            JwtAlgorithm::RS384 => Algorithm::RS384,
            JwtAlgorithm::RS512 => Algorithm::RS512,
            JwtAlgorithm::PS256 => Algorithm::PS256,
            JwtAlgorithm::PS384 => Algorithm::PS384,
            JwtAlgorithm::PS512 => Algorithm::PS512,
            JwtAlgorithm::ES256 => Algorithm::ES256,
            JwtAlgorithm::ES384 => Algorithm::ES384,
            JwtAlgorithm::EdDSA => Algorithm::EdDSA,
        };
        if !algorithms.contains(&algorithm) {
            algorithms.push(algorithm);
        }
    }
    if algorithms.is_empty() {
        errors.push(invalid(
            "spec.jwt.algorithms",
            "at least one algorithm".into(),
        ));
    }

    let mut claims_to_headers = Vec::new();
    for (claim, header) in &jwt.claims_to_headers {
        let field = format!("spec.jwt.claimsToHeaders.{claim}");
        match http::HeaderName::from_bytes(header.0.as_bytes()) {
            Err(_) => errors.push(invalid(
                &field,
                format!("{:?} is not a header name", header.0),
            )),
            Ok(header) if claim_target_refusal(&header).is_some() => errors.push(invalid(
                &field,
                format!(
                    "{header} cannot be set from a claim: {}",
                    claim_target_refusal(&header).unwrap_or_default()
                ),
            )),
            Ok(header) if claims_to_headers.iter().any(|(_, taken)| *taken == header) => {
                errors.push(invalid(&field, format!("{header} is set by another claim")))
            }
            Ok(_) if claim.is_empty() => errors.push(invalid(&field, "empty claim name".into())),
            Ok(header) => claims_to_headers.push((claim.clone(), header)),
        }
    }

    let revocation = jwt.revocation_list.is_some();
    if revocation && !redis_configured {
        errors.push(invalid(
            "spec.jwt.revocationList",
            "redis needs Sluice to run with --redis-url".into(),
        ));
    }

    let keys = jwt.jwks_secret_ref.as_ref().and_then(|reference| {
        let field = "spec.jwt.jwksSecretRef";
        let document = secret_value(reference, &name.namespace, field, JWKS_KEY, secrets)
            .map_err(|error| errors.push(error))
            .ok()?;
        KeySet::parse(document)
            .map(Arc::new)
            .map_err(|error| {
                // A JSON parser's message quotes what it choked on: a key's `d` or `k`.
                errors.push(CompileError::InvalidPolicySecret {
                    field: field.to_owned(),
                    secret: reference.name.clone(),
                    why: format!(
                        "key {JWKS_KEY:?}: {}",
                        without_quoted_values(&error.to_string())
                    ),
                    serving_last_good: false,
                })
            })
            .ok()
    });

    let remote = jwt.jwks_uri.as_ref().and_then(|uri| {
        let field = "spec.jwt.jwksUri";
        let parsed = uri.parse::<http::Uri>().ok().filter(|parsed| {
            parsed.scheme_str() == Some("https") && parsed.host().is_some_and(|h| !h.is_empty())
        });
        let Some(parsed) = parsed else {
            errors.push(invalid(field, format!("{uri:?} is not an https:// URL")));
            return None;
        };
        // The URL is logged and labels metrics: no credentials in it.
        if parsed
            .authority()
            .is_some_and(|authority| authority.as_str().contains('@'))
        {
            errors.push(invalid(
                field,
                "user info (user:password@) is refused: it would be logged".into(),
            ));
            return None;
        }
        let ca = match &jwt.jwks_ca_secret_ref {
            None => None,
            Some(reference) => {
                let field = "spec.jwt.jwksCaSecretRef";
                let pem = secret_value(reference, &name.namespace, field, CA_KEY, secrets)
                    .map_err(|error| errors.push(error))
                    .ok()?;
                match parse_ca_bundle(pem) {
                    Ok(certificates) => Some(Arc::from(certificates)),
                    Err(error) => {
                        errors.push(CompileError::InvalidPolicySecret {
                            field: field.to_owned(),
                            secret: reference.name.clone(),
                            why: format!("key {CA_KEY:?}: {error}"),
                            serving_last_good: false,
                        });
                        return None;
                    }
                }
            }
        };
        Some(JwksEndpoint {
            uri: uri.clone(),
            ca,
        })
    });
    if jwt.jwks_ca_secret_ref.is_some() && jwt.jwks_uri.is_none() {
        errors.push(invalid(
            "spec.jwt.jwksCaSecretRef",
            "only applies with jwksUri".into(),
        ));
    }
    if jwt.jwks_secret_ref.is_none() && jwt.jwks_uri.is_none() {
        errors.push(invalid("spec.jwt", "needs jwksSecretRef or jwksUri".into()));
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    Ok(JwtRules {
        issuer: jwt.issuer.clone(),
        audiences: jwt.audiences.clone(),
        algorithms,
        claims_to_headers,
        revocation,
        keys,
        remote,
        realm: realm.to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::ByteString;
    use k8s_openapi::api::core::v1::Secret;
    use serde_json::json;
    use std::collections::BTreeMap;

    fn auth(spec: serde_json::Value) -> Auth {
        crate::compile::fixtures::policy("Auth", "members", spec)
    }

    fn secret(name: &str, data: &[(&str, &str)]) -> Secret {
        Secret {
            metadata: kube::api::ObjectMeta {
                name: Some(name.into()),
                namespace: Some("shop".into()),
                ..Default::default()
            },
            data: Some(
                data.iter()
                    .map(|(key, value)| ((*key).to_owned(), ByteString(value.as_bytes().to_vec())))
                    .collect::<BTreeMap<_, _>>(),
            ),
            ..Default::default()
        }
    }

    fn compile(
        spec: serde_json::Value,
        secrets: &[Secret],
    ) -> Result<AuthPolicy, Vec<CompileError>> {
        let index = SecretIndex::new(secrets.iter());
        compile_auth(
            &auth(spec),
            &ObjectRef::new("shop", "members"),
            &index,
            true,
        )
    }

    #[test]
    fn a_full_policy_compiles_with_its_credentials() {
        let hash = bcrypt::hash("pw", 4).unwrap();
        let secrets = [
            secret("htpasswd", &[("auth", &format!("ada:{hash}\n"))]),
            secret("keys", &[("ci", "k-1"), ("bot", "k-2")]),
        ];
        let policy = compile(
            json!({
                "basic": {"secretRef": {"name": "htpasswd"}, "realm": "shop"},
                "apiKey": {"header": "X-Api-Key", "secretRef": {"name": "keys"}},
                "ipAllow": ["10.0.0.0/8", "192.0.2.7", "::ffff:198.51.100.0/120"],
                "ipDeny": ["10.9.0.1/16"],
                "require": "all",
            }),
            &secrets,
        )
        .unwrap();
        assert_eq!(
            policy.ip_allow,
            [
                "10.0.0.0/8".parse::<IpNet>().unwrap(),
                "192.0.2.7/32".parse().unwrap(),
                "198.51.100.0/24".parse().unwrap()
            ]
        );
        assert_eq!(policy.ip_deny, ["10.9.0.0/16".parse::<IpNet>().unwrap()]);
        assert_eq!(policy.basic.as_ref().unwrap().realm, "shop");
        assert!(policy.basic.as_ref().unwrap().users.contains_key("ada"));
        assert_eq!(
            policy.api_key.as_ref().unwrap().location,
            KeyLocation::Header(http::HeaderName::from_static("x-api-key"))
        );
        assert!(policy.require_all);
        assert!(policy.strip_credentials);
    }

    #[test]
    fn each_problem_is_reported_with_its_field() {
        let errors = compile(
            json!({
                "basic": {"secretRef": {"name": "missing"}},
                "apiKey": {"query": "api_key", "secretRef": {"name": "plain"}},
                "ipAllow": ["10.0.0.0/33"],
                "jwt": {"issuer": " ", "audiences": ["shop"], "jwksUri": "https://issuer.example/jwks",
                        "claimsToHeaders": {"sub": "Host"}},
            }),
            &[secret("plain", &[("ci", "")])],
        )
        .unwrap_err();
        let text: Vec<String> = errors.iter().map(ToString::to_string).collect();
        let joined = text.join("\n");
        for wanted in [
            "spec.ipAllow[0]",
            "spec.basic.secretRef",
            "spec.apiKey.secretRef",
            "spec.jwt.issuer",
            "spec.jwt.claimsToHeaders.sub",
        ] {
            assert!(joined.contains(wanted), "{wanted} in {joined}");
        }
        assert!(
            !joined.contains("ci"),
            "Secret contents stay out of messages"
        );
    }

    /// serde_json's message quoted the JWKS text it choked on, which may be a private key.
    #[test]
    fn a_jwks_that_does_not_parse_is_reported_without_its_contents() {
        let errors = compile(
            json!({"jwt": {"issuer": "https://issuer.example", "audiences": ["shop"],
                           "jwksSecretRef": {"name": "jwks"}}}),
            &[secret(
                "jwks",
                &[("jwks.json", r#"{"keys": "d-is-hunter2"}"#)],
            )],
        )
        .unwrap_err();
        let message = errors[0].to_string();
        assert!(message.contains("spec.jwt.jwksSecretRef"), "{message}");
        assert!(message.contains("not a JSON Web Key Set"), "{message}");
        assert!(!message.contains("hunter2"), "{message}");
        assert_eq!(errors[0].reason(), "InvalidSecret");
    }

    #[test]
    fn plain_text_htpasswd_is_refused_without_echoing_it() {
        let errors = compile(
            json!({"basic": {"secretRef": {"name": "htpasswd"}}}),
            &[secret("htpasswd", &[("auth", "ada:hunter2")])],
        )
        .unwrap_err();
        let message = errors[0].to_string();
        assert!(message.contains("plain text"), "{message}");
        assert!(!message.contains("hunter2"), "{message}");
        assert_eq!(errors[0].reason(), "InvalidSecret");
    }

    #[test]
    fn a_bad_secret_keeps_the_last_good_credentials_and_a_missing_one_does_not() {
        let hash = bcrypt::hash("pw", 4).unwrap();
        let spec = json!({"basic": {"secretRef": {"name": "htpasswd"}}});
        let name = ObjectRef::new("shop", "members");
        let object = auth(spec.clone());
        let good = [secret("htpasswd", &[("auth", &format!("ada:{hash}"))])];
        let index = SecretIndex::new(good.iter());
        let (policy, errors) =
            compile_auth_or_last_good(&object, &name, &index, &LastGoodAuths::new(), true);
        assert!(errors.is_empty());
        let policy = Arc::new(policy.unwrap());
        let last_good =
            LastGoodAuths::from([(name.clone(), (object.spec.clone(), Arc::clone(&policy)))]);

        // Edited to plain text: still enforced with ada's bcrypt hash, and reported.
        let bad = [secret("htpasswd", &[("auth", "ada:hunter2")])];
        let index = SecretIndex::new(bad.iter());
        let (kept, errors) = compile_auth_or_last_good(&object, &name, &index, &last_good, true);
        assert_eq!(kept.as_ref(), Some(policy.as_ref()));
        assert!(
            errors[0]
                .to_string()
                .contains("last good credentials keep being enforced")
        );
        assert_eq!(errors[0].reason(), "InvalidSecret");

        // The spec changed meanwhile: the old credentials no longer describe it.
        let changed = auth(json!({"basic": {"secretRef": {"name": "htpasswd"}, "realm": "new"}}));
        let (none, _) = compile_auth_or_last_good(&changed, &name, &index, &last_good, true);
        assert!(none.is_none());

        // Deleted: withdrawn, so the routes fail closed (503).
        let index = SecretIndex::new(std::iter::empty());
        let (none, errors) = compile_auth_or_last_good(&object, &name, &index, &last_good, true);
        assert!(none.is_none());
        assert_eq!(errors[0].reason(), "SecretNotFound");
    }

    #[test]
    fn the_realm_defaults_to_the_policy_name() {
        let hash = bcrypt::hash("pw", 4).unwrap();
        let policy = compile(
            json!({"basic": {"secretRef": {"name": "htpasswd"}}, "stripCredentials": false}),
            &[secret("htpasswd", &[("auth", &format!("ada:{hash}"))])],
        )
        .unwrap();
        assert_eq!(policy.basic.unwrap().realm, "members");
        assert!(!policy.strip_credentials);
    }

    const JWKS: &str = include_str!("../../../dataplane/src/auth/testdata/jwks.json");

    #[test]
    fn jwt_rules_load_their_key_set_and_refuse_what_they_cannot_enforce() {
        let spec = |extra: serde_json::Value| {
            let mut jwt = json!({
                "issuer": "https://issuer.example",
                "audiences": ["shop"],
                "jwksSecretRef": {"name": "jwks"},
                "algorithms": ["RS256", "ES256", "RS256"],
                "claimsToHeaders": {"sub": "X-User", "scope": "x-scope"},
            });
            for (key, value) in extra.as_object().unwrap() {
                jwt[key] = value.clone();
            }
            json!({ "jwt": jwt })
        };
        let jwks = secret("jwks", &[("jwks.json", JWKS)]);
        let policy = compile(spec(json!({})), std::slice::from_ref(&jwks)).unwrap();
        let rules = policy.jwt.as_ref().unwrap();
        assert_eq!(rules.algorithms, [Algorithm::RS256, Algorithm::ES256]);
        assert_eq!(rules.keys.as_ref().unwrap().len(), 3);
        assert_eq!(
            rules.claims_to_headers,
            [
                ("scope".to_owned(), http::HeaderName::from_static("x-scope")),
                ("sub".to_owned(), http::HeaderName::from_static("x-user")),
            ]
        );
        assert_eq!(rules.realm, "members");
        assert!(!rules.revocation);
        assert!(rules.remote.is_none());

        let problems = |spec: serde_json::Value, secrets: &[Secret], redis: bool| {
            let index = SecretIndex::new(secrets.iter());
            let errors = compile_auth(
                &auth(spec),
                &ObjectRef::new("shop", "members"),
                &index,
                redis,
            )
            .unwrap_err();
            errors
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("\n")
        };
        let cases = [
            (
                spec(json!({"revocationList": "redis"})),
                false,
                "spec.jwt.revocationList: redis needs Sluice to run with --redis-url",
            ),
            (
                spec(json!({"claimsToHeaders": {"sub": "X-User", "name": "x-user"}})),
                true,
                "is set by another claim",
            ),
            (
                spec(json!({"claimsToHeaders": {"sub": "Authorization"}})),
                true,
                "authorization cannot be set from a claim: a credential header",
            ),
            (
                spec(json!({"claimsToHeaders": {"sub": "X-Forwarded-For"}})),
                true,
                "x-forwarded-for cannot be set from a claim: Sluice sets this header itself",
            ),
            (
                spec(json!({"claimsToHeaders": {"sub": "Proxy-Authenticate"}})),
                true,
                "proxy-authenticate cannot be set from a claim: a hop-by-hop header",
            ),
            (
                spec(
                    json!({"jwksSecretRef": null, "jwksUri": "https://user:hunter2@issuer.example/keys"}),
                ),
                true,
                "spec.jwt.jwksUri: user info (user:password@) is refused",
            ),
            (
                spec(json!({"jwksCaSecretRef": {"name": "ca"}})),
                true,
                "spec.jwt.jwksCaSecretRef: only applies with jwksUri",
            ),
            (
                spec(json!({"jwksSecretRef": null, "jwksUri": "http://issuer.example/keys"})),
                true,
                "spec.jwt.jwksUri: \"http://issuer.example/keys\" is not an https:// URL",
            ),
            (
                spec(
                    json!({"jwksUri": "https://issuer.example/keys", "jwksCaSecretRef": {"name": "missing-ca"}}),
                ),
                true,
                "spec.jwt.jwksCaSecretRef: Secret \"missing-ca\" does not exist",
            ),
        ];
        for (spec, redis, wanted) in cases {
            let text = problems(spec, std::slice::from_ref(&jwks), redis);
            assert!(text.contains(wanted), "{wanted:?} in {text}");
            assert!(!text.contains("hunter2"), "{text}");
        }
        // Policy-wide: `all` with Basic and JWT (one Authorization header cannot carry
        // both), and a header both a claim and the authorization service would set.
        let mut both = spec(json!({}));
        both["basic"] = json!({"secretRef": {"name": "htpasswd"}});
        both["require"] = json!("all");
        let htpasswd = secret(
            "htpasswd",
            &[("auth", &format!("ada:{}", bcrypt::hash("pw", 4).unwrap()))],
        );
        let text = problems(both, &[jwks.clone(), htpasswd], true);
        assert!(
            text.contains("spec.require: all cannot be met with both basic and jwt"),
            "{text}"
        );
        let mut overlap = spec(json!({}));
        overlap["forward"] =
            json!({"url": "http://auth.shop.svc/check", "responseHeaders": ["X-User"]});
        let text = problems(overlap, std::slice::from_ref(&jwks), true);
        assert!(
            text.contains(
                "spec.jwt.claimsToHeaders.sub: x-user is also one of spec.forward.responseHeaders"
            ),
            "{text}"
        );
        // A key set that is not one, or holds only an HMAC secret, is the Secret's problem.
        for (document, wanted) in [
            ("[]", "not a JSON Web Key Set"),
            (
                r#"{"keys":[{"kty":"oct","k":"c2VjcmV0"}]}"#,
                "no public signing key",
            ),
        ] {
            let text = problems(
                spec(json!({})),
                &[secret("jwks", &[("jwks.json", document)])],
                true,
            );
            assert!(
                text.contains("spec.jwt.jwksSecretRef") && text.contains(wanted),
                "{wanted:?} in {text}"
            );
            assert!(!text.contains("c2VjcmV0"), "key material stays out: {text}");
        }
        // The remote form, with a CA for its server.
        let ca = rcgen::generate_simple_self_signed(vec!["issuer.example".to_owned()]).unwrap();
        let remote = compile(
            spec(
                json!({"jwksSecretRef": null, "jwksUri": "https://issuer.example/keys",
                        "jwksCaSecretRef": {"name": "ca"}}),
            ),
            &[secret("ca", &[("ca.crt", &ca.cert.pem())])],
        )
        .unwrap();
        let endpoint = remote.jwt.as_ref().unwrap().remote.clone().unwrap();
        assert_eq!(endpoint.uri, "https://issuer.example/keys");
        assert_eq!(endpoint.ca.unwrap().len(), 1);
    }

    #[test]
    fn a_jwks_secret_gone_bad_keeps_the_last_good_key_set() {
        let object = auth(json!({"jwt": {
            "issuer": "https://issuer.example", "audiences": ["shop"],
            "jwksSecretRef": {"name": "jwks"},
        }}));
        let name = ObjectRef::new("shop", "members");
        let good = [secret("jwks", &[("jwks.json", JWKS)])];
        let index = SecretIndex::new(good.iter());
        let (policy, errors) =
            compile_auth_or_last_good(&object, &name, &index, &LastGoodAuths::new(), true);
        assert!(errors.is_empty(), "{errors:?}");
        let policy = Arc::new(policy.unwrap());
        let last_good: LastGoodAuths = [(name.clone(), (object.spec.clone(), Arc::clone(&policy)))]
            .into_iter()
            .collect();
        let broken = [secret("jwks", &[("jwks.json", "{")])];
        let index = SecretIndex::new(broken.iter());
        let (kept, errors) = compile_auth_or_last_good(&object, &name, &index, &last_good, true);
        assert_eq!(kept.as_ref(), Some(policy.as_ref()));
        assert!(
            errors.iter().any(|error| matches!(
                error,
                CompileError::InvalidPolicySecret {
                    serving_last_good: true,
                    ..
                }
            )),
            "{errors:?}"
        );
    }

    #[test]
    fn a_forward_policy_compiles_with_its_url_timeout_and_headers() {
        let policy = compile(
            json!({"forward": {
                "url": "https://auth.shop.svc:9091/verify?app=shop",
                "timeout": "2s",
                "requestHeaders": ["Cookie", "Authorization"],
                "responseHeaders": ["X-User", "Remote-Groups"],
            }}),
            &[],
        )
        .unwrap();
        let forward = policy.forward.unwrap();
        assert_eq!(forward.url, "https://auth.shop.svc:9091/verify?app=shop");
        assert_eq!(forward.timeout, Duration::from_secs(2));
        assert_eq!(forward.request_headers, ["cookie", "authorization"]);
        assert_eq!(forward.response_headers, ["x-user", "remote-groups"]);

        let defaults = compile(json!({"forward": {"url": "http://auth"}}), &[]).unwrap();
        let forward = defaults.forward.unwrap();
        assert_eq!(forward.timeout, Duration::from_millis(500));
        assert!(forward.request_headers.is_empty() && forward.response_headers.is_empty());

        for (text, timeout) in [
            ("1ms", Duration::from_millis(1)),
            ("60000ms", Duration::from_secs(60)),
            ("60s", Duration::from_secs(60)),
        ] {
            assert_eq!(forward_timeout(text), Ok(timeout), "{text}");
        }
    }

    #[test]
    fn forward_problems_are_reported_with_their_fields() {
        let errors = compile(
            json!({"forward": {
                "url": "ftp://auth.shop.svc/",
                "timeout": "61s",
                "requestHeaders": ["Cookie", "Host", "X-Forwarded-Uri", "cookie", "Connection"],
                "responseHeaders": ["X-User", "Transfer-Encoding", "bad header"],
            }}),
            &[],
        )
        .unwrap_err();
        let fields: Vec<&str> = errors.iter().filter_map(CompileError::field).collect();
        assert_eq!(
            fields,
            [
                "spec.forward.url",
                "spec.forward.timeout",
                "spec.forward.requestHeaders[1]",
                "spec.forward.requestHeaders[2]",
                "spec.forward.requestHeaders[3]",
                "spec.forward.requestHeaders[4]",
                "spec.forward.responseHeaders[1]",
                "spec.forward.responseHeaders[2]",
            ]
        );
        assert!(errors.iter().all(|error| error.reason() == "InvalidSpec"));
        let text: Vec<String> = errors.iter().map(ToString::to_string).collect();
        assert!(
            text[2].contains("Sluice sets this header itself"),
            "{}",
            text[2]
        );
        assert!(
            text[3].contains("Sluice sets this header itself"),
            "{}",
            text[3]
        );
        assert!(text[4].contains("listed twice"), "{}", text[4]);
        assert!(text[5].contains("hop-by-hop"), "{}", text[5]);

        for (url, why) in [
            ("https://", "not a URL"),
            ("/verify", "not an http:// or https:// URL"),
            ("http://auth.shop.svc:port/", "no valid port"),
            ("http://auth.shop.svc:99999/", "no valid port"),
        ] {
            let errors = compile(json!({"forward": {"url": url}}), &[]).unwrap_err();
            assert_eq!(errors[0].field(), Some("spec.forward.url"), "{url}");
            assert!(errors[0].to_string().contains(why), "{url}: {}", errors[0]);
        }
        let long = format!("http://auth/{}", "a".repeat(2048));
        assert!(compile(json!({"forward": {"url": long}}), &[]).is_err());
        for timeout in [
            "0ms",
            "0s",
            "1m",
            "500",
            "ms",
            "1.5s",
            "-1s",
            "99999999999999999999s",
        ] {
            let errors = compile(
                json!({"forward": {"url": "http://auth", "timeout": timeout}}),
                &[],
            )
            .unwrap_err();
            assert_eq!(errors[0].field(), Some("spec.forward.timeout"), "{timeout}");
        }
    }

    #[test]
    fn a_password_in_the_service_url_is_refused_without_echoing_it() {
        let errors = compile(
            json!({"forward": {"url": "https://ada:hunter2@auth.shop.svc/verify"}}),
            &[],
        )
        .unwrap_err();
        let message = errors[0].to_string();
        assert!(
            message.starts_with("spec.forward.url: user info"),
            "{message}"
        );
        assert!(!message.contains("hunter2"), "{message}");
    }

    #[test]
    fn api_keys_may_live_in_redis_when_sluice_has_one() {
        let spec = json!({"apiKey": {"header": "X-Api-Key", "redisSet": true}});
        let policy = compile(spec.clone(), &[]).unwrap();
        assert!(policy.api_key.as_ref().unwrap().redis_set);
        let index = SecretIndex::new([].iter());
        let errors = compile_auth(
            &auth(spec),
            &ObjectRef::new("shop", "members"),
            &index,
            false,
        )
        .unwrap_err();
        assert_eq!(
            errors[0].to_string(),
            "spec.apiKey.redisSet: needs Sluice to run with --redis-url; the policy is not accepted"
        );
        let neither = compile(json!({"apiKey": {"header": "X-Api-Key"}}), &[]).unwrap_err();
        assert!(
            neither[0]
                .to_string()
                .starts_with("spec.apiKey: needs secretRef, redisSet: true, or both"),
            "{}",
            neither[0]
        );
    }
}
