//! Bearer JSON Web Tokens: signatures checked against a JSON Web Key Set (from a Secret,
//! or fetched by [`super::jwks`]), then issuer, audience and the token's lifetime.
//!
//! Only asymmetric algorithms are ever accepted. The token's `alg` must be one the policy
//! allows *and* of the family of the key that verifies it, so neither `alg: none` nor an
//! HMAC token "signed" with a public key can pass.

use std::sync::Arc;

use http::HeaderMap;
use http::header::{AUTHORIZATION, HeaderName, HeaderValue};
pub use jsonwebtoken::Algorithm;
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, JwkSet, PublicKeyUse};
use jsonwebtoken::{AlgorithmFamily, DecodingKey, Validation};
use sha2::{Digest, Sha256};

/// Tolerated clock skew for `exp` and `nbf`, in seconds.
pub const CLOCK_SKEW_SECONDS: u64 = 60;

/// Tokens longer than this are refused unparsed (a header may be 64 KiB).
const MAX_TOKEN_BYTES: usize = 8 * 1024;

/// A claim copied to the upstream request longer than this is left out.
const MAX_CLAIM_HEADER_BYTES: usize = 4 * 1024;

/// Keys tried for one token without a matching `kid`: bounds the work a token can cause.
const MAX_KEYS_TRIED: usize = 8;

/// Smaller RSA keys are refused (ring would refuse every signature of theirs anyway).
const MIN_RSA_BITS: usize = 2048;

/// The bit length of a JWK's base64url modulus; 0 when it does not decode.
fn rsa_modulus_bits(modulus: &str) -> usize {
    use base64::Engine;
    let Ok(bytes) = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(modulus) else {
        return 0;
    };
    match bytes.iter().position(|byte| *byte != 0) {
        Some(first) => (bytes.len() - first) * 8 - bytes[first].leading_zeros() as usize,
        None => 0,
    }
}

/// Why a key set cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JwksError {
    #[error("not a JSON Web Key Set: {0}")]
    NotJwks(String),
    #[error("it holds no public signing key Sluice can use (RSA, EC P-256/P-384, Ed25519)")]
    NoUsableKey,
    #[error("key {index}: {why}")]
    BadKey { index: usize, why: String },
}

/// One public key of a set.
struct VerifyingKey {
    kid: Option<String>,
    family: AlgorithmFamily,
    /// The JWK's own `alg`, when it names one: then only that algorithm.
    algorithm: Option<Algorithm>,
    key: DecodingKey,
}

/// Public keys from a JWKS document. Compared by the document's digest.
pub struct KeySet {
    digest: [u8; 32],
    keys: Vec<VerifyingKey>,
}

impl PartialEq for KeySet {
    fn eq(&self, other: &Self) -> bool {
        self.digest == other.digest
    }
}

impl Eq for KeySet {}

impl std::fmt::Debug for KeySet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeySet")
            .field("keys", &self.keys.len())
            .finish_non_exhaustive()
    }
}

impl KeySet {
    /// Parses a JWKS document. Keys for encryption (`use: enc`), symmetric keys (`kty:
    /// oct`: HMAC is never accepted) and key types Sluice cannot verify with are skipped; a
    /// set left with no key is an error, as is a malformed signing key.
    pub fn parse(document: &[u8]) -> Result<KeySet, JwksError> {
        let set: JwkSet = serde_json::from_slice(document)
            .map_err(|error| JwksError::NotJwks(error.to_string()))?;
        let mut keys = Vec::new();
        for (index, jwk) in set.keys.iter().enumerate() {
            if matches!(jwk.common.public_key_use, Some(ref use_) if *use_ != PublicKeyUse::Signature)
            {
                continue;
            }
            let family = match &jwk.algorithm {
                AlgorithmParameters::RSA(params) => {
                    if rsa_modulus_bits(&params.n) < MIN_RSA_BITS {
                        return Err(JwksError::BadKey {
                            index,
                            why: format!("RSA keys under {MIN_RSA_BITS} bits are refused"),
                        });
                    }
                    AlgorithmFamily::Rsa
                }
                AlgorithmParameters::EllipticCurve(params) => match params.curve {
                    EllipticCurve::P256 | EllipticCurve::P384 => AlgorithmFamily::Ec,
                    _ => continue,
                },
                AlgorithmParameters::OctetKeyPair(params) => match params.curve {
                    EllipticCurve::Ed25519 => AlgorithmFamily::Ed,
                    _ => continue,
                },
                _ => continue,
            };
            let algorithm = match jwk.common.key_algorithm {
                None => None,
                Some(named) => match named.to_string().parse::<Algorithm>() {
                    Ok(algorithm) if algorithm.family() == family => Some(algorithm),
                    // An encryption algorithm, or one of another family: not a signing key
                    // Sluice could use.
                    _ => continue,
                },
            };
            let key = DecodingKey::from_jwk(jwk).map_err(|error| JwksError::BadKey {
                index,
                why: error.to_string(),
            })?;
            keys.push(VerifyingKey {
                kid: jwk.common.key_id.clone(),
                family,
                algorithm,
                key,
            });
        }
        if keys.is_empty() {
            return Err(JwksError::NoUsableKey);
        }
        Ok(KeySet {
            digest: Sha256::digest(document).into(),
            keys,
        })
    }

    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// The keys to try for a token with this `kid` and `alg`: those with that `kid` (when
    /// the token names one and some key has it), else those without a `kid`; always of the
    /// algorithm's family.
    fn candidates<'a>(
        &'a self,
        kid: Option<&'a str>,
        algorithm: Algorithm,
    ) -> impl Iterator<Item = &'a VerifyingKey> {
        let named =
            kid.is_some_and(|kid| self.keys.iter().any(|key| key.kid.as_deref() == Some(kid)));
        self.keys.iter().filter(move |key| {
            let kid_fits = match (kid, key.kid.as_deref()) {
                (Some(wanted), Some(have)) => wanted == have,
                (Some(_), None) => !named,
                (None, _) => true,
            };
            kid_fits
                && key.family == algorithm.family()
                && key.algorithm.is_none_or(|only| only == algorithm)
        })
    }
}

/// Where a remote key set comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JwksEndpoint {
    /// An `https://` URL.
    pub uri: String,
    /// Trust anchors (DER) for its certificate; `None`: the public web roots.
    pub ca: Option<Arc<[Vec<u8>]>>,
}

// Hashed by URL alone (equal endpoints have equal URLs): a request's lookup must not hash
// the CA bundle. Comparing finds the same `Arc` first, so it does not compare bytes either.
impl std::hash::Hash for JwksEndpoint {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.uri.hash(state);
    }
}

impl JwksEndpoint {
    /// The URL without its query, for logs and metric labels (a query may carry a token).
    pub fn label(&self) -> &str {
        self.uri.split(['?', '#']).next().unwrap_or_default()
    }
}

/// A validated `spec.jwt`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JwtRules {
    pub issuer: String,
    pub audiences: Vec<String>,
    /// Never empty, never HMAC.
    pub algorithms: Vec<Algorithm>,
    /// Claim name → upstream header.
    pub claims_to_headers: Vec<(String, HeaderName)>,
    /// Refuse tokens whose `jti` is in the policy's Redis set.
    pub revocation: bool,
    /// Keys from a Secret.
    pub keys: Option<Arc<KeySet>>,
    /// Keys fetched from a URL.
    pub remote: Option<JwksEndpoint>,
    /// For `WWW-Authenticate: Bearer realm="…"`; a quoted-string-safe token.
    pub realm: String,
}

/// How a presented token fared.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenVerdict {
    /// Refused (`invalid_token`); `unknown_key`: no key fits its `kid`/`alg`, so the
    /// remote set may be worth fetching again.
    Invalid { unknown_key: bool },
    /// Valid: the claims (object) and the `jti` when it has one.
    Valid {
        claims: serde_json::Map<String, serde_json::Value>,
        jti: Option<String>,
    },
}

/// The token of an `Authorization: Bearer` header; `Err(())` when the request carries a
/// bearer token that cannot be one (too long, repeated header).
pub(super) fn bearer_token(headers: &HeaderMap) -> Result<Option<&str>, ()> {
    let mut values = headers.get_all(AUTHORIZATION).iter();
    let Some(first) = values.next() else {
        return Ok(None);
    };
    let is_bearer = |value: &HeaderValue| {
        value
            .as_bytes()
            .get(..7)
            .is_some_and(|scheme| scheme.eq_ignore_ascii_case(b"bearer "))
    };
    if values.next().is_some() {
        // Two Authorization headers: the upstream might read the other one.
        return if headers.get_all(AUTHORIZATION).iter().any(is_bearer) {
            Err(())
        } else {
            Ok(None)
        };
    }
    if !is_bearer(first) {
        return Ok(None);
    }
    let token = first.to_str().map_err(|_| ())?[7..].trim();
    if token.is_empty() || token.len() > MAX_TOKEN_BYTES {
        return Err(());
    }
    Ok(Some(token))
}

impl JwtRules {
    /// The validation for tokens of one family: this policy's issuer, audiences and
    /// allowed algorithms of that family; `exp`, `iss` and `aud` required, `nbf` checked.
    fn validation(&self, family: AlgorithmFamily) -> Validation {
        let mut validation = Validation::new_for_family(family);
        validation
            .algorithms
            .retain(|algorithm| self.algorithms.contains(algorithm));
        validation.set_issuer(&[self.issuer.as_str()]);
        validation.set_audience(&self.audiences);
        validation.set_required_spec_claims(&["exp", "iss", "aud"]);
        validation.validate_nbf = true;
        validation.leeway = CLOCK_SKEW_SECONDS;
        validation
    }

    /// Verifies `token` against `sets` (the Secret's keys, then the fetched ones).
    pub fn verify(&self, token: &str, sets: &[&KeySet]) -> TokenVerdict {
        super::jwt_ring::install();
        let invalid = TokenVerdict::Invalid { unknown_key: false };
        // `alg: none` (and any name jsonwebtoken does not know) fails here.
        let Ok(header) = jsonwebtoken::decode_header(token) else {
            return invalid;
        };
        // HMAC and anything else the policy does not name stop here, before any key is
        // looked at.
        if !self.algorithms.contains(&header.alg) {
            return invalid;
        }
        let validation = self.validation(header.alg.family());
        let mut tried = 0;
        for key in sets
            .iter()
            .flat_map(|set| set.candidates(header.kid.as_deref(), header.alg))
            .take(MAX_KEYS_TRIED)
        {
            tried += 1;
            match jsonwebtoken::decode::<serde_json::Map<String, serde_json::Value>>(
                token,
                &key.key,
                &validation,
            ) {
                // jsonwebtoken also takes an `iss` list naming the issuer; a token has one.
                Ok(data)
                    if data.claims.get("iss").and_then(|iss| iss.as_str())
                        != Some(self.issuer.as_str()) =>
                {
                    return invalid;
                }
                Ok(data) => {
                    let jti = data
                        .claims
                        .get("jti")
                        .and_then(|jti| jti.as_str())
                        .map(str::to_owned);
                    return TokenVerdict::Valid {
                        claims: data.claims,
                        jti,
                    };
                }
                Err(error) => {
                    use jsonwebtoken::errors::ErrorKind;
                    // A bad signature may mean another key fits; a bad claim means none
                    // will.
                    if !matches!(error.kind(), ErrorKind::InvalidSignature) {
                        return invalid;
                    }
                }
            }
        }
        // Worth fetching the remote set again: no key could even be tried, or the token
        // names a `kid` no set has (keys without a `kid` were tried and failed).
        let kid_unknown = header.kid.as_deref().is_some_and(|kid| {
            !sets
                .iter()
                .any(|set| set.keys.iter().any(|key| key.kid.as_deref() == Some(kid)))
        });
        TokenVerdict::Invalid {
            unknown_key: tried == 0 || kid_unknown,
        }
    }

    /// The upstream headers the token's claims give: strings as they are, numbers and
    /// booleans as JSON writes them, arrays of those joined with commas; objects, `null`,
    /// values that cannot be a header and overlong ones are left out.
    pub fn claim_headers(
        &self,
        claims: &serde_json::Map<String, serde_json::Value>,
    ) -> Vec<(HeaderName, HeaderValue)> {
        use serde_json::Value;
        let scalar = |value: &Value| match value {
            Value::String(text) => Some(text.clone()),
            Value::Number(number) => Some(number.to_string()),
            Value::Bool(flag) => Some(flag.to_string()),
            _ => None,
        };
        self.claims_to_headers
            .iter()
            .filter_map(|(claim, header)| {
                let text = match claims.get(claim)? {
                    Value::Array(items) => items
                        .iter()
                        .map(scalar)
                        .collect::<Option<Vec<_>>>()?
                        .join(","),
                    other => scalar(other)?,
                };
                if text.len() > MAX_CLAIM_HEADER_BYTES {
                    return None;
                }
                let value = HeaderValue::from_str(&text).ok()?;
                Some((header.clone(), value))
            })
            .collect()
    }

    /// `Bearer realm="…"`, with `error="invalid_token"` when a token was presented
    /// (RFC 6750 §3: no error code when the request had none).
    pub(super) fn challenge(&self, presented: bool) -> Option<HeaderValue> {
        let text = if presented {
            format!("Bearer realm=\"{}\", error=\"invalid_token\"", self.realm)
        } else {
            format!("Bearer realm=\"{}\"", self.realm)
        };
        HeaderValue::from_str(&text).ok()
    }

    /// The key sets to verify against now: the Secret's, then the fetched one.
    pub(super) fn key_sets<'a>(&'a self, fetched: Option<&'a KeySet>) -> Vec<&'a KeySet> {
        self.keys.as_deref().into_iter().chain(fetched).collect()
    }
}

/// The Redis set of revoked token ids of a policy: `sluice:auth:{namespace/name}:revoked-jti`
/// (the braces keep a policy's keys in one Redis Cluster slot, with its API key set).
pub fn revocation_key(policy: &crate::snapshot::ObjectRef) -> String {
    format!(
        "sluice:auth:{{{}/{}}}:revoked-jti",
        policy.namespace, policy.name
    )
}

/// Signing helpers for tests here and in the policy's tests.
#[cfg(test)]
pub(crate) mod testing {
    use jsonwebtoken::{EncodingKey, Header};
    use serde_json::{Value, json};

    pub const ISSUER: &str = "https://issuer.example";
    pub const JWKS: &[u8] = include_bytes!("testdata/jwks.json");

    pub fn now() -> u64 {
        jsonwebtoken::get_current_timestamp()
    }

    /// A token for `kid` (`rsa-1`, `rsa-2`, `ec-1`, `ed-1`) with `claims`.
    pub fn sign(algorithm: super::Algorithm, kid: &str, claims: &Value) -> String {
        super::super::jwt_ring::install();
        let key = match kid {
            "rsa-1" => EncodingKey::from_rsa_pem(include_bytes!("testdata/rsa.pem")),
            "rsa-2" => EncodingKey::from_rsa_pem(include_bytes!("testdata/rsa-other.pem")),
            "ec-1" => EncodingKey::from_ec_pem(include_bytes!("testdata/ec.pem")),
            _ => EncodingKey::from_ed_pem(include_bytes!("testdata/ed25519.pem")),
        }
        .unwrap();
        let mut header = Header::new(algorithm);
        header.kid = Some(kid.to_owned());
        jsonwebtoken::encode(&header, claims, &key).unwrap()
    }

    /// An HS256 token, kid `rsa-1`, whose "signature" is an HMAC keyed with `secret` (the
    /// RSA public key, in the key-confusion attack). Made by hand: Sluice's provider has no
    /// HMAC at all.
    pub fn hmac_forgery(secret: &[u8]) -> String {
        use base64::Engine;
        let b64 = |bytes: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
        let message = format!(
            "{}.{}",
            b64(br#"{"alg":"HS256","typ":"JWT","kid":"rsa-1"}"#),
            b64(good_claims().to_string().as_bytes())
        );
        let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret);
        let tag = ring::hmac::sign(&key, message.as_bytes());
        format!("{message}.{}", b64(tag.as_ref()))
    }

    /// Claims that pass the rules of [`rules`].
    pub fn good_claims() -> Value {
        json!({"iss": ISSUER, "aud": "shop", "sub": "ada", "exp": now() + 600, "jti": "t-1"})
    }
}

#[cfg(test)]
mod tests {
    use super::testing::*;
    use super::*;
    use base64::Engine;
    use serde_json::json;

    fn rules(algorithms: &[Algorithm]) -> JwtRules {
        JwtRules {
            issuer: ISSUER.into(),
            audiences: vec!["shop".into(), "admin".into()],
            algorithms: algorithms.to_vec(),
            claims_to_headers: vec![
                ("sub".into(), HeaderName::from_static("x-user")),
                ("scope".into(), HeaderName::from_static("x-scope")),
                ("roles".into(), HeaderName::from_static("x-roles")),
                ("org".into(), HeaderName::from_static("x-org")),
            ],
            revocation: false,
            keys: Some(Arc::new(KeySet::parse(JWKS).unwrap())),
            remote: None,
            realm: "shop".into(),
        }
    }

    fn verify(rules: &JwtRules, token: &str) -> TokenVerdict {
        rules.verify(token, &rules.key_sets(None))
    }

    fn valid(verdict: &TokenVerdict) -> bool {
        matches!(verdict, TokenVerdict::Valid { .. })
    }

    #[test]
    fn tokens_signed_by_a_key_of_the_set_pass_with_each_allowed_algorithm() {
        let rules = rules(&[Algorithm::RS256, Algorithm::ES256, Algorithm::EdDSA]);
        for (algorithm, kid) in [
            (Algorithm::RS256, "rsa-1"),
            (Algorithm::ES256, "ec-1"),
            (Algorithm::EdDSA, "ed-1"),
        ] {
            let verdict = verify(&rules, &sign(algorithm, kid, &good_claims()));
            match verdict {
                TokenVerdict::Valid { claims, jti } => {
                    assert_eq!(claims["sub"], "ada", "{algorithm:?}");
                    assert_eq!(jti.as_deref(), Some("t-1"));
                }
                other => panic!("{algorithm:?}: {other:?}"),
            }
        }
        // `aud` as a list naming one of the audiences, and a token without a `kid`.
        let mut claims = good_claims();
        claims["aud"] = json!(["elsewhere", "admin"]);
        assert!(valid(&verify(
            &rules,
            &sign(Algorithm::RS256, "rsa-1", &claims)
        )));
        let mut header = jsonwebtoken::Header::new(Algorithm::ES256);
        header.kid = None;
        let key =
            jsonwebtoken::EncodingKey::from_ec_pem(include_bytes!("testdata/ec.pem")).unwrap();
        let no_kid = jsonwebtoken::encode(&header, &good_claims(), &key).unwrap();
        assert!(valid(&verify(&rules, &no_kid)));
    }

    #[test]
    fn lifetime_issuer_and_audience_are_enforced() {
        let rules = rules(&[Algorithm::RS256]);
        let with = |change: &dyn Fn(&mut serde_json::Value)| {
            let mut claims = good_claims();
            change(&mut claims);
            verify(&rules, &sign(Algorithm::RS256, "rsa-1", &claims))
        };
        let refused = TokenVerdict::Invalid { unknown_key: false };
        assert_eq!(with(&|c| c["exp"] = json!(now() - 120)), refused, "expired");
        assert!(
            valid(&with(&|c| c["exp"] = json!(now() - 10))),
            "within the clock skew"
        );
        assert_eq!(
            with(&|c| c["nbf"] = json!(now() + 600)),
            refused,
            "not yet valid"
        );
        assert!(valid(&with(&|c| c["nbf"] = json!(now() - 5))));
        assert_eq!(with(&|c| c["aud"] = json!("other")), refused, "audience");
        assert_eq!(
            with(&|c| c["iss"] = json!("https://evil.example")),
            refused,
            "issuer"
        );
        for claim in ["exp", "iss", "aud"] {
            assert_eq!(
                with(&|c| {
                    c.as_object_mut().unwrap().remove(claim);
                }),
                refused,
                "without {claim}"
            );
        }
        assert_eq!(
            with(&|c| c["exp"] = json!("tomorrow")),
            refused,
            "malformed exp"
        );
        assert_eq!(
            with(&|c| c["iss"] = json!([ISSUER, "https://evil.example"])),
            refused,
            "an issuer list, even one naming ours"
        );
    }

    #[test]
    fn alg_none_hmac_confusion_and_unlisted_algorithms_are_refused() {
        let rules = rules(&[Algorithm::RS256]);
        let b64 = |bytes: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
        let claims = good_claims().to_string();
        for header in [
            r#"{"alg":"none","typ":"JWT","kid":"rsa-1"}"#,
            r#"{"alg":"None","typ":"JWT"}"#,
        ] {
            let unsigned = format!("{}.{}.", b64(header.as_bytes()), b64(claims.as_bytes()));
            assert_eq!(
                verify(&rules, &unsigned),
                TokenVerdict::Invalid { unknown_key: false },
                "{header}"
            );
        }
        // HS256 "signed" with the RSA public key as the HMAC secret: the classic confusion.
        let public_pem = include_bytes!("testdata/rsa-public.pem");
        let forged = hmac_forgery(public_pem);
        assert_eq!(
            verify(&rules, &forged),
            TokenVerdict::Invalid { unknown_key: false }
        );
        // Even a policy naming every algorithm Sluice knows has no HMAC among them, and an
        // RS256 key never verifies an ES256 token.
        let every = super::super::jwt::tests::rules(&[
            Algorithm::RS256,
            Algorithm::PS256,
            Algorithm::ES256,
            Algorithm::EdDSA,
        ]);
        assert!(!valid(&verify(&every, &forged)));
        let mut header = jsonwebtoken::Header::new(Algorithm::ES256);
        header.kid = Some("rsa-1".into());
        let key =
            jsonwebtoken::EncodingKey::from_ec_pem(include_bytes!("testdata/ec.pem")).unwrap();
        let wrong_family = jsonwebtoken::encode(&header, &good_claims(), &key).unwrap();
        assert!(!valid(&verify(&every, &wrong_family)));
        // An allowed family, but not an allowed algorithm.
        assert_eq!(
            verify(&rules, &sign(Algorithm::ES256, "ec-1", &good_claims())),
            TokenVerdict::Invalid { unknown_key: false }
        );
        assert!(!valid(&verify(
            &rules,
            &sign(Algorithm::RS384, "rsa-1", &good_claims())
        )));
    }

    #[test]
    fn a_wrong_key_fails_and_an_unknown_one_asks_for_a_refresh() {
        let rules = rules(&[Algorithm::RS256]);
        // Signed by rsa-2, which the set lacks.
        assert_eq!(
            verify(&rules, &sign(Algorithm::RS256, "rsa-2", &good_claims())),
            TokenVerdict::Invalid { unknown_key: true }
        );
        // Claiming rsa-1 while signed by rsa-2: rsa-1 is tried and refuses it.
        let mut header = jsonwebtoken::Header::new(Algorithm::RS256);
        header.kid = Some("rsa-1".into());
        let key = jsonwebtoken::EncodingKey::from_rsa_pem(include_bytes!("testdata/rsa-other.pem"))
            .unwrap();
        let impostor = jsonwebtoken::encode(&header, &good_claims(), &key).unwrap();
        assert_eq!(
            verify(&rules, &impostor),
            TokenVerdict::Invalid { unknown_key: false }
        );
        let named = Arc::new(KeySet::parse(include_bytes!("testdata/jwks-other.json")).unwrap());
        let only_other = JwtRules {
            keys: Some(Arc::clone(&named)),
            ..rules.clone()
        };
        assert!(valid(&verify(
            &only_other,
            &sign(Algorithm::RS256, "rsa-2", &good_claims())
        )));
        assert_eq!(
            verify(
                &only_other,
                &sign(Algorithm::RS256, "rsa-1", &good_claims())
            ),
            TokenVerdict::Invalid { unknown_key: true }
        );
        // A set whose keys have no `kid`: they are tried for a token naming an unknown one,
        // and that still asks for a refresh (the issuer may have rotated).
        let mut unnamed: serde_json::Value = serde_json::from_slice(JWKS).unwrap();
        for key in unnamed["keys"].as_array_mut().unwrap() {
            key.as_object_mut().unwrap().remove("kid");
        }
        let unnamed = JwtRules {
            keys: Some(Arc::new(
                KeySet::parse(unnamed.to_string().as_bytes()).unwrap(),
            )),
            ..rules.clone()
        };
        assert!(valid(&verify(
            &unnamed,
            &sign(Algorithm::RS256, "rsa-1", &good_claims())
        )));
        assert_eq!(
            verify(&unnamed, &sign(Algorithm::RS256, "rsa-2", &good_claims())),
            TokenVerdict::Invalid { unknown_key: true }
        );
        // A token whose signature was altered.
        let token = sign(Algorithm::RS256, "rsa-1", &good_claims());
        let (head, _) = token.rsplit_once('.').unwrap();
        let tampered = format!("{head}.{}", "A".repeat(342));
        assert!(!valid(&verify(&rules, &tampered)));
    }

    #[test]
    fn key_sets_keep_signing_keys_only() {
        assert!(matches!(
            KeySet::parse(b"not json"),
            Err(JwksError::NotJwks(_))
        ));
        let hmac_only = br#"{"keys":[{"kty":"oct","k":"c2VjcmV0","alg":"HS256"}]}"#;
        assert_eq!(KeySet::parse(hmac_only), Err(JwksError::NoUsableKey));
        let set: serde_json::Value = serde_json::from_slice(JWKS).unwrap();
        let mut keys = set["keys"].as_array().unwrap().clone();
        keys[0]["use"] = json!("enc");
        keys.push(json!({"kty":"oct","k":"c2VjcmV0"}));
        let document = json!({ "keys": keys }).to_string();
        assert_eq!(KeySet::parse(document.as_bytes()).unwrap().len(), 2);
        // A 1024-bit modulus.
        let small = format!(
            r#"{{"keys":[{{"kty":"RSA","n":"{}","e":"AQAB"}}]}}"#,
            "w".repeat(171) + "Q"
        );
        match KeySet::parse(small.as_bytes()) {
            Err(JwksError::BadKey { index: 0, why }) => assert!(why.contains("2048"), "{why}"),
            other => panic!("{other:?}"),
        }
        assert_eq!(rsa_modulus_bits("AQAB"), 17);
        let broken = br#"{"keys":[{"kty":"RSA","n":"!!","e":"AQAB"}]}"#;
        assert!(matches!(
            KeySet::parse(broken),
            Err(JwksError::BadKey { index: 0, .. })
        ));
    }

    #[test]
    fn claims_become_headers_when_they_can_be_one() {
        let rules = rules(&[Algorithm::RS256]);
        let claims = json!({
            "sub": "ada", "scope": "read write", "roles": ["admin", 7, true],
            "org": {"id": 1},
        });
        let headers = rules.claim_headers(claims.as_object().unwrap());
        let text: Vec<(String, String)> = headers
            .iter()
            .map(|(name, value)| (name.to_string(), value.to_str().unwrap().to_owned()))
            .collect();
        assert_eq!(
            text,
            [
                ("x-user".to_owned(), "ada".to_owned()),
                ("x-scope".to_owned(), "read write".to_owned()),
                ("x-roles".to_owned(), "admin,7,true".to_owned()),
            ]
        );
        let injected = json!({"sub": "ada\r\nx-admin: yes"});
        assert!(
            rules
                .claim_headers(injected.as_object().unwrap())
                .is_empty()
        );
    }

    #[test]
    fn bearer_tokens_are_read_once_and_bounded() {
        let mut headers = HeaderMap::new();
        assert_eq!(bearer_token(&headers), Ok(None));
        headers.insert(AUTHORIZATION, HeaderValue::from_static("Basic YTpi"));
        assert_eq!(bearer_token(&headers), Ok(None));
        headers.insert(
            AUTHORIZATION,
            HeaderValue::from_static("bearer abc.def.ghi"),
        );
        assert_eq!(bearer_token(&headers), Ok(Some("abc.def.ghi")));
        headers.append(AUTHORIZATION, HeaderValue::from_static("Bearer other"));
        assert_eq!(bearer_token(&headers), Err(()));
        let long = format!("Bearer {}", "a".repeat(MAX_TOKEN_BYTES + 1));
        headers.insert(AUTHORIZATION, HeaderValue::from_str(&long).unwrap());
        assert_eq!(bearer_token(&headers), Err(()));
        headers.insert(AUTHORIZATION, HeaderValue::from_static("Bearer "));
        assert_eq!(bearer_token(&headers), Err(()));
    }
}
