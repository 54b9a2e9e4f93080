//! jsonwebtoken's cryptography on ring, the library rustls already uses here: one
//! implementation to trust and keep patched, and it is several times faster than the pure
//! Rust backends for RSA and P-256 verification (docs/benchmarks.md, section 8).
//!
//! HMAC is not provided at all, so no key can ever verify an `HS*` token, whatever a
//! policy or a key set says. Signing exists for tests and benchmarks that mint tokens.

use jsonwebtoken::crypto::{CryptoProvider, JwtSigner, JwtVerifier, KeyUtils};
use jsonwebtoken::errors::{Error, ErrorKind};
use jsonwebtoken::signature::{self, Signer, Verifier};
use jsonwebtoken::{Algorithm, AlgorithmFamily, DecodingKey, DecodingKeyKind, EncodingKey};
use ring::rand::SystemRandom;
use ring::signature::{self as ring_signature, RsaPublicKeyComponents, UnparsedPublicKey};

/// The provider Sluice installs for jsonwebtoken.
pub static PROVIDER: CryptoProvider = CryptoProvider {
    signer_factory: new_signer,
    verifier_factory: new_verifier,
    key_utils: KeyUtils::new_unimplemented(),
};

/// Makes [`PROVIDER`] jsonwebtoken's, once per process. Without it jsonwebtoken has no
/// backend (none of its crypto features is enabled) and panics on first use.
pub fn install() {
    static INSTALLED: std::sync::Once = std::sync::Once::new();
    INSTALLED.call_once(|| {
        // Fails only when a provider is installed already; then that one stays.
        let _ = PROVIDER.install_default();
    });
}

/// What a signature is checked with.
enum PublicKey {
    Rsa(&'static ring_signature::RsaParameters, RsaKey),
    Other(&'static dyn ring_signature::VerificationAlgorithm, Vec<u8>),
}

enum RsaKey {
    Components {
        n: Vec<u8>,
        e: Vec<u8>,
    },
    /// A PKCS#1 `RSAPublicKey`.
    Der(Vec<u8>),
}

struct RingVerifier {
    algorithm: Algorithm,
    key: PublicKey,
}

impl Verifier<Vec<u8>> for RingVerifier {
    fn verify(&self, message: &[u8], signature: &Vec<u8>) -> Result<(), signature::Error> {
        let checked = match &self.key {
            PublicKey::Rsa(parameters, RsaKey::Components { n, e }) => {
                RsaPublicKeyComponents { n, e }.verify(parameters, message, signature)
            }
            PublicKey::Rsa(parameters, RsaKey::Der(der)) => {
                UnparsedPublicKey::new(*parameters, der).verify(message, signature)
            }
            PublicKey::Other(algorithm, bytes) => {
                UnparsedPublicKey::new(*algorithm, bytes).verify(message, signature)
            }
        };
        checked.map_err(|_| signature::Error::new())
    }
}

impl JwtVerifier for RingVerifier {
    fn algorithm(&self) -> Algorithm {
        self.algorithm
    }
}

fn rsa_parameters(algorithm: Algorithm) -> Option<&'static ring_signature::RsaParameters> {
    Some(match algorithm {
        Algorithm::RS256 => &ring_signature::RSA_PKCS1_2048_8192_SHA256,
        Algorithm::RS384 => &ring_signature::RSA_PKCS1_2048_8192_SHA384,
        Algorithm::RS512 => &ring_signature::RSA_PKCS1_2048_8192_SHA512,
        Algorithm::PS256 => &ring_signature::RSA_PSS_2048_8192_SHA256,
        Algorithm::PS384 => &ring_signature::RSA_PSS_2048_8192_SHA384,
        Algorithm::PS512 => &ring_signature::RSA_PSS_2048_8192_SHA512,
        _ => return None,
    })
}

fn new_verifier(
    algorithm: &Algorithm,
    key: &DecodingKey,
) -> jsonwebtoken::errors::Result<Box<dyn JwtVerifier>> {
    // The key must be of the token's family: an RSA key never checks an EC signature, and
    // nothing checks HMAC.
    if key.family() != algorithm.family() || key.family() == AlgorithmFamily::Hmac {
        return Err(Error::from(ErrorKind::InvalidAlgorithm));
    }
    let public = match (algorithm, key.kind()) {
        (_, kind) if key.family() == AlgorithmFamily::Rsa => {
            let parameters =
                rsa_parameters(*algorithm).ok_or(Error::from(ErrorKind::InvalidAlgorithm))?;
            let rsa = match kind {
                DecodingKeyKind::RsaModulusExponent { n, e } => RsaKey::Components {
                    n: n.clone(),
                    e: e.clone(),
                },
                DecodingKeyKind::SecretOrDer(der) => RsaKey::Der(der.clone()),
            };
            PublicKey::Rsa(parameters, rsa)
        }
        (Algorithm::ES256, DecodingKeyKind::SecretOrDer(point)) => {
            PublicKey::Other(&ring_signature::ECDSA_P256_SHA256_FIXED, point.clone())
        }
        (Algorithm::ES384, DecodingKeyKind::SecretOrDer(point)) => {
            PublicKey::Other(&ring_signature::ECDSA_P384_SHA384_FIXED, point.clone())
        }
        (Algorithm::EdDSA, DecodingKeyKind::SecretOrDer(raw)) => {
            PublicKey::Other(&ring_signature::ED25519, raw.clone())
        }
        _ => return Err(Error::from(ErrorKind::InvalidAlgorithm)),
    };
    Ok(Box::new(RingVerifier {
        algorithm: *algorithm,
        key: public,
    }))
}

enum KeyPair {
    Rsa(
        &'static dyn ring_signature::RsaEncoding,
        ring_signature::RsaKeyPair,
    ),
    Ecdsa(ring_signature::EcdsaKeyPair),
    Ed25519(ring_signature::Ed25519KeyPair),
}

struct RingSigner {
    algorithm: Algorithm,
    key: KeyPair,
}

impl Signer<Vec<u8>> for RingSigner {
    fn try_sign(&self, message: &[u8]) -> Result<Vec<u8>, signature::Error> {
        let random = SystemRandom::new();
        match &self.key {
            KeyPair::Rsa(encoding, pair) => {
                let mut signature = vec![0; pair.public().modulus_len()];
                pair.sign(*encoding, &random, message, &mut signature)
                    .map_err(|_| signature::Error::new())?;
                Ok(signature)
            }
            KeyPair::Ecdsa(pair) => pair
                .sign(&random, message)
                .map(|signature| signature.as_ref().to_vec())
                .map_err(|_| signature::Error::new()),
            KeyPair::Ed25519(pair) => Ok(pair.sign(message).as_ref().to_vec()),
        }
    }
}

impl JwtSigner for RingSigner {
    fn algorithm(&self) -> Algorithm {
        self.algorithm
    }
}

fn rsa_encoding(algorithm: Algorithm) -> Option<&'static dyn ring_signature::RsaEncoding> {
    Some(match algorithm {
        Algorithm::RS256 => &ring_signature::RSA_PKCS1_SHA256,
        Algorithm::RS384 => &ring_signature::RSA_PKCS1_SHA384,
        Algorithm::RS512 => &ring_signature::RSA_PKCS1_SHA512,
        Algorithm::PS256 => &ring_signature::RSA_PSS_SHA256,
        Algorithm::PS384 => &ring_signature::RSA_PSS_SHA384,
        Algorithm::PS512 => &ring_signature::RSA_PSS_SHA512,
        _ => return None,
    })
}

fn new_signer(
    algorithm: &Algorithm,
    key: &EncodingKey,
) -> jsonwebtoken::errors::Result<Box<dyn JwtSigner>> {
    let invalid = |kind: ErrorKind| move |_| Error::from(kind);
    if key.family() != algorithm.family() {
        return Err(Error::from(ErrorKind::InvalidAlgorithm));
    }
    let der = key.as_bytes();
    if let Some(encoding) = rsa_encoding(*algorithm) {
        let pair = ring_signature::RsaKeyPair::from_der(der)
            .map_err(invalid(ErrorKind::InvalidRsaKey("not PKCS#1".into())))?;
        return Ok(Box::new(RingSigner {
            algorithm: *algorithm,
            key: KeyPair::Rsa(encoding, pair),
        }));
    }
    let pair = match algorithm {
        Algorithm::ES256 | Algorithm::ES384 => {
            let signing = if *algorithm == Algorithm::ES256 {
                &ring_signature::ECDSA_P256_SHA256_FIXED_SIGNING
            } else {
                &ring_signature::ECDSA_P384_SHA384_FIXED_SIGNING
            };
            KeyPair::Ecdsa(
                ring_signature::EcdsaKeyPair::from_pkcs8(signing, der, &SystemRandom::new())
                    .map_err(invalid(ErrorKind::InvalidEcdsaKey))?,
            )
        }
        Algorithm::EdDSA => KeyPair::Ed25519(
            ring_signature::Ed25519KeyPair::from_pkcs8_maybe_unchecked(der)
                .map_err(invalid(ErrorKind::InvalidEddsaKey))?,
        ),
        _ => return Err(Error::from(ErrorKind::InvalidAlgorithm)),
    };
    Ok(Box::new(RingSigner {
        algorithm: *algorithm,
        key: pair,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hmac_and_keys_of_another_family_get_no_verifier() {
        let secret = DecodingKey::from_secret(b"a shared secret").unwrap();
        for algorithm in [Algorithm::HS256, Algorithm::HS384, Algorithm::HS512] {
            assert!(new_verifier(&algorithm, &secret).is_err(), "{algorithm:?}");
        }
        let rsa = DecodingKey::from_rsa_components("sXch", "AQAB").unwrap();
        let ed =
            DecodingKey::from_ed_components("11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo").unwrap();
        for (algorithm, key) in [
            (Algorithm::HS256, &rsa),
            (Algorithm::ES256, &rsa),
            (Algorithm::EdDSA, &rsa),
            (Algorithm::RS256, &ed),
            (Algorithm::ES256, &ed),
        ] {
            assert!(new_verifier(&algorithm, key).is_err(), "{algorithm:?}");
        }
        assert!(new_verifier(&Algorithm::RS256, &rsa).is_ok());
        assert!(new_verifier(&Algorithm::EdDSA, &ed).is_ok());
        // No HMAC signing either.
        let key = EncodingKey::from_secret(b"a shared secret").unwrap();
        assert!(new_signer(&Algorithm::HS256, &key).is_err());
    }
}
