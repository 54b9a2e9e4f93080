//! Tokens for the JWT tests, signed with the test keys of dataplane/src/auth/testdata
//! (made for tests only).

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};

pub const ISSUER: &str = "https://issuer.example";
pub const JWKS: &str = include_str!("../../dataplane/src/auth/testdata/jwks.json");
pub const JWKS_OTHER: &str = include_str!("../../dataplane/src/auth/testdata/jwks-other.json");

pub fn now() -> u64 {
    jsonwebtoken::get_current_timestamp()
}

pub fn claims(jti: &str) -> Value {
    json!({"iss": ISSUER, "aud": "shop", "sub": "ada", "scope": "read", "exp": now() + 600, "jti": jti})
}

pub fn sign(algorithm: Algorithm, kid: &str, claims: &Value) -> String {
    sluice_dataplane::auth::jwt_ring::install();
    let pem: &[u8] = match kid {
        "rsa-1" => include_bytes!("../../dataplane/src/auth/testdata/rsa.pem"),
        "rsa-2" => include_bytes!("../../dataplane/src/auth/testdata/rsa-other.pem"),
        "ec-1" => include_bytes!("../../dataplane/src/auth/testdata/ec.pem"),
        _ => include_bytes!("../../dataplane/src/auth/testdata/ed25519.pem"),
    };
    let key = match algorithm {
        Algorithm::ES256 => EncodingKey::from_ec_pem(pem),
        Algorithm::EdDSA => EncodingKey::from_ed_pem(pem),
        _ => EncodingKey::from_rsa_pem(pem),
    }
    .unwrap();
    let mut header = Header::new(algorithm);
    header.kid = Some(kid.to_owned());
    jsonwebtoken::encode(&header, claims, &key).unwrap()
}

pub fn rs256(claims: &Value) -> String {
    sign(Algorithm::RS256, "rsa-1", claims)
}

/// `alg: none`, and HS256 "signed" with the RSA public key as the HMAC secret.
pub fn forgeries() -> [String; 2] {
    use base64::Engine;
    let b64 = |bytes: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
    let body = b64(claims("t-forged").to_string().as_bytes());
    let none = format!(
        "{}.{body}.",
        b64(br#"{"alg":"none","typ":"JWT","kid":"rsa-1"}"#)
    );
    let public = include_bytes!("../../dataplane/src/auth/testdata/rsa-public.pem");
    let message = format!(
        "{}.{body}",
        b64(br#"{"alg":"HS256","typ":"JWT","kid":"rsa-1"}"#)
    );
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, public);
    let hmac = format!(
        "{message}.{}",
        b64(ring::hmac::sign(&key, message.as_bytes()).as_ref())
    );
    [none, hmac]
}
