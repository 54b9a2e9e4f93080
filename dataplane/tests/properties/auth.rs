//! The credential parsers of `Auth` policies, shared by the `auth` fuzz target and the
//! in-tree property test: htpasswd files, JSON Web Key Sets, and JWT verification against
//! a fixed key set.
//!
//! Properties: nothing panics; a parsed htpasswd file holds exactly its `user:hash` lines;
//! a parsed key set has a key; and no token is accepted unless an independent check (the
//! signature verified with ring directly against the set's public keys under the token's
//! own `alg`, then issuer, audience, `exp` and `nbf` read from the JSON as written) finds
//! it valid.

use std::sync::{Arc, LazyLock};

use arbitrary::Arbitrary;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, EncodingKey};
use serde_json::Value;
use sluice_dataplane::auth::jwt::{CLOCK_SKEW_SECONDS, JwtRules, KeySet, TokenVerdict};
use sluice_dataplane::auth::{BasicCredentials, PasswordHash};

use super::text::Text;

// Paths relative to this file, so the fuzz crate that includes it finds them too.
const JWKS: &[u8] = include_bytes!("../../src/auth/testdata/jwks.json");
const RSA_PEM: &[u8] = include_bytes!("../../src/auth/testdata/rsa.pem");
const RSA_OTHER_PEM: &[u8] = include_bytes!("../../src/auth/testdata/rsa-other.pem");
const EC_PEM: &[u8] = include_bytes!("../../src/auth/testdata/ec.pem");
const ED_PEM: &[u8] = include_bytes!("../../src/auth/testdata/ed25519.pem");

/// Spellings htpasswd lines are made of.
const HTPASSWD_WORDS: &[&str] = &[
    "ada",
    "bob",
    ":",
    "\n",
    "\r\n",
    "#",
    " ",
    "$2y$",
    "$2b$",
    "$2a$",
    "$2x$",
    "04$",
    "12$",
    "13$",
    "99$",
    "$2b$04$abcdefghijklmnopqrstuuyvPXIbu7xe6/CED2DzX8z6Si09MlzlW",
    "$5$rounds=1000$saltsalt$eNI.02a9Kos9UxzxjTLpNZ6kYHkRe9Z8OsGkDDoW/X2",
    "$6$saltsalt$pauPrmdmG4BTE9h2HPmywiw152IFch6BJCEsaY6D.PLTfpV8sqvXwWdyfsgVgozkYH9B80bAip/08R2BPH2xk/",
    "$6$rounds=200000$saltsalt$T2g6vJO3.bZ8NtDiRs1jsfyRiu7u1Yc0mrZH8m7qCvy/MOjYWZccMlGwKpD.jn43jrjRexNu56BgnfN1dbLdh0",
    "$5$",
    "$6$",
    "rounds=",
    "rounds=99999999999999999999999$",
    "$",
    "saltsalt",
    "$apr1$",
    "$1$",
    "{SHA}",
    "abcdefghijklmnopqrstuv",
    "./",
];

/// Spellings JSON Web Key Sets are made of.
const JWKS_WORDS: &[&str] = &[
    "{",
    "}",
    "[",
    "]",
    ",",
    ":",
    "\"",
    "{\"keys\":[",
    "]}",
    "\"kty\":",
    "\"RSA\"",
    "\"EC\"",
    "\"OKP\"",
    "\"oct\"",
    "\"kid\":",
    "\"use\":",
    "\"sig\"",
    "\"enc\"",
    "\"alg\":",
    "\"RS256\"",
    "\"ES256\"",
    "\"ES384\"",
    "\"EdDSA\"",
    "\"HS256\"",
    "\"RSA-OAEP\"",
    "\"crv\":",
    "\"P-256\"",
    "\"P-384\"",
    "\"P-521\"",
    "\"Ed25519\"",
    "\"X25519\"",
    "\"n\":",
    "\"e\":",
    "\"x\":",
    "\"y\":",
    "\"k\":",
    "\"AQAB\"",
    "\"AA\"",
    "\"\"",
    "null",
    "1",
    "\"2AyNVx0ki1Kk_s6q_GlCAyXMRpLCGRuacQw9VcIivegfTZ5eJCpKbADOdaRvqKEMiOpX4TnvQHtpnSZjums76KZ_dnARQ3osm1cD5BfNEyzvKwNG3IcSCkziaO0BhEERcxPES8XJdG3Yj2QmkyeOs5R5E06r4VfoSSa3Ntk4XoZKv54PKTkFYZnN-iAOdev0WCgawI3HTJv88JzqIwfwHVNG4RD6EGIjiNkInx025gT41z_-m2mXIEa4Zh9xs6hHyWjfeLIewK1SRM_LyIBdKO1FIkwDZ0P3J4APk5rxSpy4Pguv1X1OGJtOd9uGnzAw6JGWzYnu3J-R0ol2kGWmLw\"",
    "\"4ofLJ8KeB15DW03RtQM_B3qZWz9S6Cj6mGsHA98zsv8\"",
    "\"jGQLxFiVIC-5O237UaYZrf9UKCNTNFMNrO0SkbFkFZg\"",
    "\"31XNkEumZ6YNcrK6ZUj2v4K9KJX7NUfMdXHzgfl1ZIQ\"",
    "\"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA\"",
    "\"x5c\":[\"AAAA\"]",
    "\"key_ops\":[\"verify\"]",
];

/// Spellings free-form tokens are made of.
const TOKEN_WORDS: &[&str] = &[
    ".",
    "..",
    "eyJ",
    "eyJhbGciOiJub25lIn0",
    "eyJhbGciOiJSUzI1NiJ9",
    "eyJhbGciOiJIUzI1NiJ9",
    "eyJ9",
    "e30",
    "=",
    "+",
    "/",
    "-",
    "_",
    " ",
    "AAAA",
];

/// A line-oriented htpasswd file, or any text.
#[derive(Debug, Clone, Arbitrary)]
pub struct HtpasswdInput {
    pub text: Text,
}

/// A JWKS document: made of JSON words, or free bytes.
#[derive(Debug, Clone, Arbitrary)]
pub enum JwksInput {
    Words(Text),
    Bytes(Vec<u8>),
    Keys(Vec<JwkInput>),
}

/// One key of a set, field by field.
#[derive(Debug, Clone, Arbitrary)]
pub struct JwkInput {
    pub fields: Vec<(u8, Text)>,
}

#[derive(Debug, Clone, Copy, Arbitrary)]
pub enum AlgChoice {
    Rs256,
    Rs384,
    Ps256,
    Es256,
    Es384,
    EdDsa,
    Hs256,
    None,
    Lower,
    Other(u8),
}

impl AlgChoice {
    fn json(self) -> String {
        match self {
            AlgChoice::Rs256 => "\"RS256\"".into(),
            AlgChoice::Rs384 => "\"RS384\"".into(),
            AlgChoice::Ps256 => "\"PS256\"".into(),
            AlgChoice::Es256 => "\"ES256\"".into(),
            AlgChoice::Es384 => "\"ES384\"".into(),
            AlgChoice::EdDsa => "\"EdDSA\"".into(),
            AlgChoice::Hs256 => "\"HS256\"".into(),
            AlgChoice::None => "\"none\"".into(),
            AlgChoice::Lower => "\"rs256\"".into(),
            AlgChoice::Other(n) => n.to_string(),
        }
    }
}

/// A JSON value for a header or claim field.
#[derive(Debug, Clone, Arbitrary)]
pub enum JsonChoice {
    Issuer,
    OtherIssuer,
    IssuerList,
    Audience,
    OtherAudience,
    AudienceList,
    Now(i32),
    Far(bool),
    Integer(i64),
    Float(f64),
    Text(String),
    Kid(u8),
    Alg(AlgChoice),
    Null,
    Object,
}

impl JsonChoice {
    fn json(&self, now: u64) -> String {
        match self {
            JsonChoice::Issuer => Value::from(ISSUER).to_string(),
            JsonChoice::OtherIssuer => "\"https://issuer.example/\"".into(),
            JsonChoice::IssuerList => format!("[\"{ISSUER}\"]"),
            JsonChoice::Audience => "\"shop\"".into(),
            JsonChoice::OtherAudience => "\"shop \"".into(),
            JsonChoice::AudienceList => "[\"other\",\"shop\"]".into(),
            JsonChoice::Now(offset) => (now as i64 + i64::from(*offset)).to_string(),
            JsonChoice::Far(future) => {
                if *future {
                    (now + 100_000).to_string()
                } else {
                    (now - 100_000).to_string()
                }
            }
            JsonChoice::Integer(n) => n.to_string(),
            JsonChoice::Float(f) => Value::from(*f).to_string(),
            JsonChoice::Text(text) => Value::from(text.as_str()).to_string(),
            JsonChoice::Kid(n) => {
                Value::from(["rsa-1", "ec-1", "ed-1", "rsa-2", ""][usize::from(*n) % 5]).to_string()
            }
            JsonChoice::Alg(alg) => alg.json(),
            JsonChoice::Null => "null".into(),
            JsonChoice::Object => "{}".into(),
        }
    }
}

const FIELD_NAMES: &[&str] = &[
    "alg", "kid", "typ", "iss", "aud", "exp", "nbf", "jti", "sub", "crit", "jwk", "iat",
];

/// How a built token is signed.
#[derive(Debug, Clone, Copy, Arbitrary)]
pub enum Signer {
    /// With `ec-1` (ES256), which the key set holds.
    Ec,
    /// With `ed-1` (EdDSA), which the key set holds.
    Ed,
    /// A signature made at start-up with `rsa-1` (in the set) or `rsa-2` (not in it), over
    /// a fixed header and claims; the token is that presigned one.
    Presigned(u8),
    /// HMAC-SHA256 keyed with the JWKS document (a key-confusion attempt).
    Hmac,
    Empty,
    Garbage(u64),
}

/// A token built field by field, signed, then perhaps damaged.
#[derive(Debug, Clone, Arbitrary)]
pub struct BuiltToken {
    pub header: Vec<(u8, JsonChoice)>,
    pub claims: Vec<(u8, JsonChoice)>,
    pub signer: Signer,
    pub damage: Vec<Damage>,
}

#[derive(Debug, Clone, Copy, Arbitrary)]
pub enum Damage {
    FlipByte(u16),
    Truncate(u16),
    AppendDot,
    Pad,
    Space,
    SwapPayload,
}

#[derive(Debug, Clone, Arbitrary)]
pub enum TokenInput {
    Free(Text),
    Built(BuiltToken),
}

/// What the auth target is given.
#[derive(Debug, Clone, Arbitrary)]
pub enum AuthInput {
    Htpasswd(HtpasswdInput),
    Jwks(JwksInput),
    Token(TokenInput),
}

/// The fuzz and property entry point.
pub fn check(input: &AuthInput) {
    match input {
        AuthInput::Htpasswd(input) => check_htpasswd(&input.text.render(HTPASSWD_WORDS)),
        AuthInput::Jwks(input) => check_jwks(&jwks_document(input)),
        AuthInput::Token(input) => check_token(&token(input)),
    }
}

/// An htpasswd file parses to exactly its `user:hash` lines, or to an error naming a line
/// that exists.
pub fn check_htpasswd(text: &str) {
    let lines: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .collect();
    match BasicCredentials::from_htpasswd("realm", text) {
        Ok(credentials) => {
            assert_eq!(
                credentials.users.len(),
                lines.len(),
                "users and lines differ: {text:?}"
            );
            for line in lines {
                let (user, hash) = line
                    .split_once(':')
                    .expect("a line that parsed has a colon");
                assert!(
                    credentials.users.contains_key(user),
                    "{user:?} lost: {text:?}"
                );
                assert!(
                    PasswordHash::parse(hash).is_ok(),
                    "{hash:?} accepted: {text:?}"
                );
                assert!(
                    ["$2y$", "$2b$", "$2a$", "$5$", "$6$"]
                        .iter()
                        .any(|prefix| hash.starts_with(prefix)),
                    "a hash of a refused kind accepted: {hash:?}"
                );
            }
        }
        Err(error) => {
            use sluice_dataplane::auth::CredentialError;
            let line = match error {
                CredentialError::NotUserColonHash { line }
                | CredentialError::UnsupportedHash { line, .. }
                | CredentialError::DuplicateUser { line, .. } => line,
                CredentialError::Empty => {
                    assert!(lines.is_empty(), "Empty with lines {lines:?}");
                    return;
                }
            };
            assert!(
                (1..=text.lines().count()).contains(&line),
                "error names line {line} of {}: {text:?}",
                text.lines().count()
            );
        }
    }
}

fn jwks_document(input: &JwksInput) -> Vec<u8> {
    match input {
        JwksInput::Words(text) => text.bytes(JWKS_WORDS),
        JwksInput::Bytes(bytes) => bytes.clone(),
        JwksInput::Keys(keys) => {
            let keys: Vec<String> = keys
                .iter()
                .map(|key| {
                    let fields: Vec<String> = key
                        .fields
                        .iter()
                        .map(|(name, value)| {
                            let name = ["kty", "kid", "use", "alg", "crv", "n", "e", "x", "y", "k"]
                                [usize::from(*name) % 10];
                            format!(
                                "\"{name}\":{}",
                                String::from_utf8_lossy(&value.bytes(JWKS_WORDS))
                            )
                        })
                        .collect();
                    format!("{{{}}}", fields.join(","))
                })
                .collect();
            format!("{{\"keys\":[{}]}}", keys.join(",")).into_bytes()
        }
    }
}

/// A key set parses to at least one key, the same way twice.
pub fn check_jwks(document: &[u8]) {
    let first = KeySet::parse(document);
    if let Ok(set) = &first {
        assert!(!set.is_empty(), "an empty key set parsed");
    }
    assert_eq!(first, KeySet::parse(document), "parsed two ways");
}

const ISSUER: &str = "https://issuer.example";

fn key_set() -> &'static KeySet {
    static SET: LazyLock<KeySet> =
        LazyLock::new(|| KeySet::parse(JWKS).expect("the test key set parses"));
    &SET
}

fn rules() -> &'static JwtRules {
    static RULES: LazyLock<JwtRules> = LazyLock::new(|| JwtRules {
        issuer: ISSUER.into(),
        audiences: vec!["shop".into(), "admin".into()],
        algorithms: vec![
            Algorithm::RS256,
            Algorithm::PS256,
            Algorithm::ES256,
            Algorithm::EdDSA,
        ],
        claims_to_headers: Vec::new(),
        revocation: false,
        keys: Some(Arc::new(
            KeySet::parse(JWKS).expect("the test key set parses"),
        )),
        remote: None,
        realm: "fuzz".into(),
    });
    &RULES
}

/// Tokens signed once at start-up with the RSA keys (signing RSA per input is too slow to
/// fuzz): `rsa-1` is in the set, `rsa-2` is not.
fn presigned() -> &'static [String] {
    static TOKENS: LazyLock<Vec<String>> = LazyLock::new(|| {
        sluice_dataplane::auth::jwt_ring::install();
        let now = jsonwebtoken::get_current_timestamp();
        let mut tokens = Vec::new();
        for (pem, kid) in [(RSA_PEM, "rsa-1"), (RSA_OTHER_PEM, "rsa-2")] {
            let key = EncodingKey::from_rsa_pem(pem).expect("RSA key");
            for algorithm in [Algorithm::RS256, Algorithm::PS256, Algorithm::RS384] {
                for exp in [now + 100_000, now - 100_000] {
                    let header = format!("{{\"alg\":\"{algorithm:?}\",\"kid\":\"{kid}\"}}");
                    let claims = format!(
                        "{{\"iss\":\"{ISSUER}\",\"aud\":\"shop\",\"exp\":{exp},\"jti\":\"j\"}}"
                    );
                    let message = format!(
                        "{}.{}",
                        URL_SAFE_NO_PAD.encode(header),
                        URL_SAFE_NO_PAD.encode(claims)
                    );
                    let signature = jsonwebtoken::crypto::sign(message.as_bytes(), &key, algorithm)
                        .expect("RSA signs");
                    tokens.push(format!("{message}.{signature}"));
                }
            }
        }
        tokens
    });
    &TOKENS
}

fn json_object(fields: &[(u8, JsonChoice)], now: u64) -> String {
    let members: Vec<String> = fields
        .iter()
        .map(|(name, value)| {
            let name = FIELD_NAMES[usize::from(*name) % FIELD_NAMES.len()];
            format!("\"{name}\":{}", value.json(now))
        })
        .collect();
    format!("{{{}}}", members.join(","))
}

fn token(input: &TokenInput) -> String {
    let built = match input {
        TokenInput::Free(text) => return text.render(TOKEN_WORDS),
        TokenInput::Built(built) => built,
    };
    let now = jsonwebtoken::get_current_timestamp();
    let message = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(json_object(&built.header, now)),
        URL_SAFE_NO_PAD.encode(json_object(&built.claims, now))
    );
    let sign = |pem: &[u8], algorithm: Algorithm| {
        let key = match algorithm {
            Algorithm::EdDSA => EncodingKey::from_ed_pem(pem),
            _ => EncodingKey::from_ec_pem(pem),
        }
        .expect("test key");
        jsonwebtoken::crypto::sign(message.as_bytes(), &key, algorithm).expect("signs")
    };
    sluice_dataplane::auth::jwt_ring::install();
    let mut token = match built.signer {
        Signer::Ec => format!("{message}.{}", sign(EC_PEM, Algorithm::ES256)),
        Signer::Ed => format!("{message}.{}", sign(ED_PEM, Algorithm::EdDSA)),
        Signer::Presigned(index) => {
            let tokens = presigned();
            tokens[usize::from(index) % tokens.len()].clone()
        }
        Signer::Hmac => {
            let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, JWKS);
            let tag = ring::hmac::sign(&key, message.as_bytes());
            format!("{message}.{}", URL_SAFE_NO_PAD.encode(tag.as_ref()))
        }
        Signer::Empty => format!("{message}."),
        Signer::Garbage(bits) => {
            format!("{message}.{}", URL_SAFE_NO_PAD.encode(bits.to_le_bytes()))
        }
    }
    .into_bytes();
    for damage in &built.damage {
        match *damage {
            Damage::FlipByte(at) if !token.is_empty() => {
                let at = usize::from(at) % token.len();
                token[at] ^= 1;
            }
            Damage::Truncate(at) => token.truncate(usize::from(at)),
            Damage::AppendDot => token.push(b'.'),
            Damage::Pad => token.extend_from_slice(b"=="),
            Damage::Space => token.insert(0, b' '),
            Damage::SwapPayload => {
                // The payload of this token under the signature of a presigned one.
                let donor = &presigned()[0];
                let text = String::from_utf8_lossy(&token).into_owned();
                let mut ours = text.split('.');
                let mut theirs = donor.split('.');
                if let (Some(header), Some(payload), Some(_), Some(signature)) =
                    (theirs.next(), ours.nth(1), theirs.next(), theirs.next())
                {
                    token = format!("{header}.{payload}.{signature}").into_bytes();
                }
            }
            Damage::FlipByte(_) => {}
        }
    }
    String::from_utf8_lossy(&token).into_owned()
}

/// Whether Sluice accepts the token `input` describes (for tests that the built tokens
/// reach acceptance at all, so the independent check is not vacuous).
pub fn accepted(input: &TokenInput) -> bool {
    let token = token(input);
    check_token(&token);
    matches!(
        rules().verify(&token, &[key_set()]),
        TokenVerdict::Valid { .. }
    )
}

/// No token is accepted unless the independent check finds it valid.
pub fn check_token(token: &str) {
    let before = jsonwebtoken::get_current_timestamp();
    let verdict = rules().verify(token, &[key_set()]);
    let TokenVerdict::Valid { claims, .. } = verdict else {
        return;
    };
    if let Err(why) = independently_valid(token, before) {
        panic!("token accepted, but {why}: {token:?} (claims {claims:?})");
    }
}

/// The independent check: three base64url segments, an allowed asymmetric `alg`, a
/// signature ring verifies with one of the set's public keys, `iss` the issuer, `aud`
/// naming an audience, a NumericDate `exp` not past, an `nbf` (if any) not future.
fn independently_valid(token: &str, now: u64) -> Result<(), String> {
    let segments: Vec<&str> = token.split('.').collect();
    let [header, payload, signature] = segments[..] else {
        return Err(format!("{} segments", segments.len()));
    };
    let decode = |segment: &str| {
        URL_SAFE_NO_PAD
            .decode(segment)
            .map_err(|error| format!("a segment is not base64url ({error})"))
    };
    let header: Value = serde_json::from_slice(&decode(header)?)
        .map_err(|error| format!("the header is not JSON ({error})"))?;
    let claims: Value = serde_json::from_slice(&decode(payload)?)
        .map_err(|error| format!("the claims are not JSON ({error})"))?;
    let signature = decode(signature)?;
    let message = &token.as_bytes()[..token.rfind('.').expect("three segments")];
    let alg = header.get("alg").and_then(Value::as_str).unwrap_or("");
    if !matches!(alg, "RS256" | "PS256" | "ES256" | "EdDSA") {
        return Err(format!("alg {alg:?} is not allowed"));
    }
    if !public_keys()
        .iter()
        .any(|key| key.verifies(alg, message, &signature))
    {
        return Err(format!("no key of the set verifies the {alg} signature"));
    }
    if claims.get("iss").and_then(Value::as_str) != Some(ISSUER) {
        return Err(format!("iss is {:?}", claims.get("iss")));
    }
    let audience_ok = match claims.get("aud") {
        Some(Value::String(aud)) => aud == "shop" || aud == "admin",
        Some(Value::Array(auds)) => auds
            .iter()
            .any(|aud| aud.as_str().is_some_and(|a| a == "shop" || a == "admin")),
        _ => false,
    };
    if !audience_ok {
        return Err(format!("aud is {:?}", claims.get("aud")));
    }
    let skew = CLOCK_SKEW_SECONDS + 2;
    match claims.get("exp").and_then(numeric_date) {
        Some(exp) if exp.saturating_add(skew) >= now => {}
        exp => return Err(format!("exp is {exp:?} at {now}")),
    }
    match claims.get("nbf") {
        None => {}
        Some(nbf) => match numeric_date(nbf) {
            Some(nbf) if nbf <= now + skew + 2 => {}
            _ => return Err(format!("nbf is {nbf:?} at {now}")),
        },
    }
    Ok(())
}

/// A NumericDate (RFC 7519 §2: seconds, not necessarily whole), rounded to seconds.
fn numeric_date(value: &Value) -> Option<u64> {
    value.as_u64().or_else(|| {
        value
            .as_f64()
            .filter(|seconds| seconds.is_finite() && *seconds >= 0.0 && *seconds < u64::MAX as f64)
            .map(|seconds| seconds.round() as u64)
    })
}

/// A public key of the test set, read straight from the JWKS document.
enum PublicKey {
    Rsa { n: Vec<u8>, e: Vec<u8> },
    P256(Vec<u8>),
    Ed25519(Vec<u8>),
}

impl PublicKey {
    fn verifies(&self, alg: &str, message: &[u8], signature: &[u8]) -> bool {
        use ring::signature::{self, RsaPublicKeyComponents, UnparsedPublicKey};
        match (self, alg) {
            (PublicKey::Rsa { n, e }, "RS256" | "PS256") => {
                let parameters = if alg == "RS256" {
                    &signature::RSA_PKCS1_2048_8192_SHA256
                } else {
                    &signature::RSA_PSS_2048_8192_SHA256
                };
                RsaPublicKeyComponents { n, e }
                    .verify(parameters, message, signature)
                    .is_ok()
            }
            (PublicKey::P256(point), "ES256") => {
                UnparsedPublicKey::new(&signature::ECDSA_P256_SHA256_FIXED, point)
                    .verify(message, signature)
                    .is_ok()
            }
            (PublicKey::Ed25519(key), "EdDSA") => UnparsedPublicKey::new(&signature::ED25519, key)
                .verify(message, signature)
                .is_ok(),
            _ => false,
        }
    }
}

fn public_keys() -> &'static [PublicKey] {
    static KEYS: LazyLock<Vec<PublicKey>> = LazyLock::new(|| {
        let document: Value = serde_json::from_slice(JWKS).expect("JSON");
        let field = |key: &Value, name: &str| {
            URL_SAFE_NO_PAD
                .decode(key[name].as_str().expect("a key field"))
                .expect("base64url")
        };
        document["keys"]
            .as_array()
            .expect("keys")
            .iter()
            .map(|key| match key["kty"].as_str() {
                Some("RSA") => PublicKey::Rsa {
                    n: field(key, "n"),
                    e: field(key, "e"),
                },
                Some("EC") => {
                    let mut point = vec![4];
                    point.extend(field(key, "x"));
                    point.extend(field(key, "y"));
                    PublicKey::P256(point)
                }
                _ => PublicKey::Ed25519(field(key, "x")),
            })
            .collect()
    });
    &KEYS
}
