//! API keys in a header or a query parameter, kept as SHA-256 digests.

use std::collections::HashSet;
use std::fmt::Write as _;

use http::HeaderMap;
use http::header::HeaderName;
use sha2::{Digest, Sha256};

use super::{CredentialError, single};

/// Where a request carries its API key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyLocation {
    Header(HeaderName),
    Query(String),
}

/// Valid API keys, kept as SHA-256 digests only.
#[derive(Clone, PartialEq, Eq)]
pub struct ApiKeys {
    pub location: KeyLocation,
    digests: HashSet<[u8; 32]>,
    /// Keys not among `digests` are looked up in the policy's Redis set.
    pub redis_set: bool,
}

/// Whether a presented key is valid.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum KeyLookup {
    Valid,
    Invalid,
    /// Not in memory: its digest (hex) is to be looked up in Redis.
    AskRedis(String),
}

impl std::fmt::Debug for ApiKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiKeys")
            .field("location", &self.location)
            .field("keys", &self.digests.len())
            .field("redis_set", &self.redis_set)
            .finish()
    }
}

impl ApiKeys {
    /// Each value is one key; empty values are refused. Without `redis_set`, some key is
    /// needed.
    pub fn new<'a>(
        location: KeyLocation,
        keys: impl IntoIterator<Item = &'a [u8]>,
        redis_set: bool,
    ) -> Result<ApiKeys, CredentialError> {
        let digests: HashSet<[u8; 32]> = keys
            .into_iter()
            .filter(|key| !key.is_empty())
            .map(|key| Sha256::digest(key).into())
            .collect();
        if digests.is_empty() && !redis_set {
            return Err(CredentialError::Empty);
        }
        Ok(ApiKeys {
            location,
            digests,
            redis_set,
        })
    }

    /// The presented key, if the request carries exactly one (two are refused: the
    /// upstream might read the other).
    pub(super) fn presented(&self, headers: &HeaderMap, query: Option<&str>) -> Option<Vec<u8>> {
        match &self.location {
            KeyLocation::Header(name) => {
                single(headers, name).map(|value| value.as_bytes().to_vec())
            }
            KeyLocation::Query(parameter) => {
                let mut values = query_pairs(query?)
                    .filter(|(name, _)| names_parameter(name, parameter))
                    .map(|(_, value)| percent_decode(value));
                let first = values.next()?;
                values.next().is_none().then_some(first)
            }
        }
    }

    /// Whether the request carries the key's header or parameter at all.
    pub(super) fn carried(&self, headers: &HeaderMap, query: Option<&str>) -> bool {
        match &self.location {
            KeyLocation::Header(name) => headers.contains_key(name),
            KeyLocation::Query(parameter) => query.is_some_and(|query| {
                query_pairs(query).any(|(name, _)| names_parameter(name, parameter))
            }),
        }
    }

    /// The query without the key's parameter (the others keep their order and encoding);
    /// `None` when it has no such parameter. An empty result means nothing is left.
    pub(super) fn query_without_key(&self, query: &str) -> Option<String> {
        let KeyLocation::Query(parameter) = &self.location else {
            return None;
        };
        let mut removed = false;
        let kept: Vec<&str> = query
            .split('&')
            .filter(|pair| {
                let is_key = names_parameter(pair_name(pair), parameter);
                removed |= is_key;
                !is_key
            })
            .collect();
        removed.then(|| kept.join("&"))
    }

    pub(super) fn lookup(&self, key: &[u8]) -> KeyLookup {
        let digest: [u8; 32] = Sha256::digest(key).into();
        // Looked up by digest: timing can at most tell how a digest compares to the stored
        // ones, and aiming at a digest needs a SHA-256 preimage.
        if self.digests.contains(&digest) {
            KeyLookup::Valid
        } else if self.redis_set {
            let mut hex = String::with_capacity(64);
            for byte in digest {
                let _ = write!(hex, "{byte:02x}");
            }
            KeyLookup::AskRedis(hex)
        } else {
            KeyLookup::Invalid
        }
    }
}

/// The Redis set of valid API key digests of a policy (`redisSet: true`):
/// `sluice:auth:{namespace/name}:api-keys`.
pub fn api_key_set(policy: &crate::snapshot::ObjectRef) -> String {
    format!(
        "sluice:auth:{{{}/{}}}:api-keys",
        policy.namespace, policy.name
    )
}

/// `name=value` pairs of a raw query string (a pair without `=` has an empty value).
pub(crate) fn query_pairs(query: &str) -> impl Iterator<Item = (&str, &str)> {
    query
        .split('&')
        .map(|pair| pair.split_once('=').unwrap_or((pair, "")))
}

/// Whether a raw parameter name is `parameter` once percent-decoded: `api%5Fkey` is
/// `api_key` to an upstream that decodes names, so it is one here too.
fn names_parameter(raw: &str, parameter: &str) -> bool {
    raw == parameter || (raw.contains(['%', '+']) && percent_decode(raw) == parameter.as_bytes())
}

fn pair_name(pair: &str) -> &str {
    pair.split_once('=').map_or(pair, |(name, _)| name)
}

pub(crate) fn percent_decode(value: &str) -> Vec<u8> {
    let bytes = value.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut index = 0;
    while index < bytes.len() {
        match bytes[index] {
            b'%' if index + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[index + 1..index + 3])
                    .ok()
                    .and_then(|hex| u8::from_str_radix(hex, 16).ok());
                match hex {
                    Some(byte) => {
                        out.push(byte);
                        index += 3;
                    }
                    None => {
                        out.push(b'%');
                        index += 1;
                    }
                }
            }
            b'+' => {
                out.push(b' ');
                index += 1;
            }
            byte => {
                out.push(byte);
                index += 1;
            }
        }
    }
    out
}
