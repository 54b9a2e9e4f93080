//! `Auth` policies on the request path: client networks, Basic credentials and API keys.
//!
//! The controller builds these from validated specs (parsing every hash once, at compile
//! time); a request only looks things up and verifies. Secrets never appear in errors,
//! logs or metrics.

use std::collections::{BTreeMap, HashSet};
use std::net::IpAddr;
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use base64::Engine;
use http::HeaderMap;
use http::header::{AUTHORIZATION, HeaderName, HeaderValue};
use ipnet::IpNet;
use sha2::{Digest, Sha256};

use crate::snapshot::ObjectRef;

/// A problem with credential material, found when a policy is built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CredentialError {
    #[error("line {line}: not `user:hash`")]
    NotUserColonHash { line: usize },
    #[error("line {line} (user {user}): {reason}")]
    UnsupportedHash {
        line: usize,
        user: String,
        reason: &'static str,
    },
    #[error("line {line}: user {user} appears twice")]
    DuplicateUser { line: usize, user: String },
    #[error("no credentials")]
    Empty,
}

/// A password hash Sluice accepts from htpasswd: bcrypt or SHA-crypt. Plain text, MD5
/// (`$apr1$`), SHA-1 (`{SHA}`) and DES crypt are refused when the policy is built.
#[derive(Clone, PartialEq, Eq)]
pub enum PasswordHash {
    Bcrypt(String),
    ShaCrypt(String),
}

impl std::fmt::Debug for PasswordHash {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Hashes are secret material too: never printed.
        match self {
            PasswordHash::Bcrypt(_) => f.write_str("Bcrypt(…)"),
            PasswordHash::ShaCrypt(_) => f.write_str("ShaCrypt(…)"),
        }
    }
}

/// The most expensive hashes accepted: each verification runs per login attempt, so an
/// htpasswd line must not be able to make one cost seconds. (`htpasswd -B` uses cost 5;
/// SHA-crypt's default is 5,000 rounds.)
const MAX_BCRYPT_COST: u32 = 12;
const MAX_SHA_CRYPT_ROUNDS: u64 = 100_000;

/// Longer passwords are refused unverified: SHA-crypt's work grows with the password's
/// length, and a header may be 64 KiB.
pub const MAX_PASSWORD_BYTES: usize = 1024;

impl PasswordHash {
    /// Checks the hash's format and cost, so a bad line is reported when the policy is built
    /// rather than failing (or slowing) every login.
    pub fn parse(hash: &str) -> Result<PasswordHash, &'static str> {
        if hash.starts_with("$2y$") || hash.starts_with("$2b$") || hash.starts_with("$2a$") {
            let parts = hash
                .parse::<bcrypt::HashParts>()
                .map_err(|_| "malformed bcrypt hash")?;
            if parts.get_cost() > MAX_BCRYPT_COST {
                return Err("bcrypt cost above 12 is refused (each login would take too long)");
            }
            Ok(PasswordHash::Bcrypt(hash.to_owned()))
        } else if hash.starts_with("$5$") || hash.starts_with("$6$") {
            sha_crypt::PasswordHashRef::new(hash).map_err(|_| "malformed SHA-crypt hash")?;
            let rounds = hash
                .split('$')
                .nth(2)
                .and_then(|field| field.strip_prefix("rounds="))
                .map(|rounds| rounds.parse::<u64>().unwrap_or(u64::MAX));
            if rounds.is_some_and(|rounds| rounds > MAX_SHA_CRYPT_ROUNDS) {
                return Err(
                    "SHA-crypt rounds above 100000 are refused (each login would take too long)",
                );
            }
            Ok(PasswordHash::ShaCrypt(hash.to_owned()))
        } else if hash.starts_with("$apr1$") || hash.starts_with("$1$") {
            Err("MD5 hashes are refused: use bcrypt (htpasswd -B)")
        } else if hash.starts_with("{SHA}") {
            Err("unsalted SHA-1 hashes are refused: use bcrypt (htpasswd -B)")
        } else {
            Err("plain text and DES crypt are refused: use bcrypt (htpasswd -B)")
        }
    }

    /// The slow part (bcrypt is meant to be): run it off the traffic threads.
    fn verify(&self, password: &[u8]) -> bool {
        use sha_crypt::PasswordVerifier;
        match self {
            PasswordHash::Bcrypt(hash) => bcrypt::verify(password, hash).unwrap_or(false),
            PasswordHash::ShaCrypt(hash) => sha_crypt::ShaCrypt::default()
                .verify_password(password, hash.as_str())
                .is_ok(),
        }
    }
}

/// Users and their password hashes from an htpasswd file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BasicCredentials {
    /// Already checked to be a quoted-string-safe token.
    pub realm: String,
    pub users: BTreeMap<String, PasswordHash>,
}

impl BasicCredentials {
    /// Parses htpasswd text: `user:hash` per line; blank lines and `#` comments skipped.
    pub fn from_htpasswd(realm: &str, text: &str) -> Result<BasicCredentials, CredentialError> {
        let mut users = BTreeMap::new();
        for (index, line) in text.lines().enumerate() {
            let line_number = index + 1;
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let Some((user, hash)) = line.split_once(':') else {
                return Err(CredentialError::NotUserColonHash { line: line_number });
            };
            if user.is_empty() {
                return Err(CredentialError::NotUserColonHash { line: line_number });
            }
            let hash =
                PasswordHash::parse(hash).map_err(|reason| CredentialError::UnsupportedHash {
                    line: line_number,
                    user: user.to_owned(),
                    reason,
                })?;
            if users.insert(user.to_owned(), hash).is_some() {
                return Err(CredentialError::DuplicateUser {
                    line: line_number,
                    user: user.to_owned(),
                });
            }
        }
        if users.is_empty() {
            return Err(CredentialError::Empty);
        }
        Ok(BasicCredentials {
            realm: realm.to_owned(),
            users,
        })
    }

    fn challenge(&self) -> String {
        format!("Basic realm=\"{}\", charset=\"UTF-8\"", self.realm)
    }
}

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
}

impl std::fmt::Debug for ApiKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiKeys")
            .field("location", &self.location)
            .field("keys", &self.digests.len())
            .finish()
    }
}

impl ApiKeys {
    /// Each value is one key; empty values are refused.
    pub fn new<'a>(
        location: KeyLocation,
        keys: impl IntoIterator<Item = &'a [u8]>,
    ) -> Result<ApiKeys, CredentialError> {
        let digests: HashSet<[u8; 32]> = keys
            .into_iter()
            .filter(|key| !key.is_empty())
            .map(|key| Sha256::digest(key).into())
            .collect();
        if digests.is_empty() {
            return Err(CredentialError::Empty);
        }
        Ok(ApiKeys { location, digests })
    }

    /// The presented key, if the request carries one.
    /// The presented key, if the request carries exactly one (two are refused: the
    /// upstream might read the other).
    fn presented(&self, headers: &HeaderMap, query: Option<&str>) -> Option<Vec<u8>> {
        match &self.location {
            KeyLocation::Header(name) => {
                single(headers, name).map(|value| value.as_bytes().to_vec())
            }
            KeyLocation::Query(parameter) => {
                let mut values = query?.split('&').filter_map(|pair| {
                    let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
                    (name == parameter).then(|| percent_decode(value))
                });
                let first = values.next()?;
                values.next().is_none().then_some(first)
            }
        }
    }

    /// Whether the request carries the key's header or parameter at all.
    fn carried(&self, headers: &HeaderMap, query: Option<&str>) -> bool {
        match &self.location {
            KeyLocation::Header(name) => headers.contains_key(name),
            KeyLocation::Query(parameter) => query.is_some_and(|query| {
                query
                    .split('&')
                    .any(|pair| pair.split_once('=').map_or(pair, |(name, _)| name) == parameter)
            }),
        }
    }

    fn accepts(&self, key: &[u8]) -> bool {
        let digest: [u8; 32] = Sha256::digest(key).into();
        // Looked up by digest: timing can at most tell how a digest compares to the stored
        // ones, and aiming at a digest needs a SHA-256 preimage.
        self.digests.contains(&digest)
    }
}

/// The header's value when it appears exactly once.
fn single<'a>(headers: &'a HeaderMap, name: &HeaderName) -> Option<&'a HeaderValue> {
    let mut values = headers.get_all(name).iter();
    let first = values.next()?;
    values.next().is_none().then_some(first)
}

fn percent_decode(value: &str) -> Vec<u8> {
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

/// A validated `Auth` policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthPolicy {
    /// The policy object; a metrics label.
    pub name: ObjectRef,
    pub ip_deny: Vec<IpNet>,
    pub ip_allow: Vec<IpNet>,
    pub basic: Option<Arc<BasicCredentials>>,
    pub api_key: Option<Arc<ApiKeys>>,
    /// Every credential method must succeed (else one is enough).
    pub require_all: bool,
    pub strip_credentials: bool,
}

/// Which check decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AuthMethodLabel {
    Ip,
    Basic,
    ApiKey,
    None,
}

/// The outcome of [`AuthPolicy::authorize`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthDecision {
    /// Through; `method` is what let it (`None`: the policy has no credential method).
    Allow { method: AuthMethodLabel },
    /// 403: the client's network is not allowed.
    Forbidden,
    /// 401 with these `WWW-Authenticate` challenges; `method` is the one whose credentials
    /// the request carried and that failed (`None`: it carried none).
    Unauthorized {
        challenges: Vec<HeaderValue>,
        method: AuthMethodLabel,
    },
    /// 503: no password verification slot was free.
    Busy,
}

impl crate::metrics::AuthCounters {
    /// Counts one decision under the method that made it.
    pub fn count(&self, decision: &AuthDecision) {
        let index = |method: &AuthMethodLabel| match method {
            AuthMethodLabel::Ip => 0,
            AuthMethodLabel::Basic => 1,
            AuthMethodLabel::ApiKey => 2,
            AuthMethodLabel::None => 3,
        };
        match decision {
            AuthDecision::Allow { method } => {
                self.allowed[index(method)].inc();
            }
            AuthDecision::Forbidden => {
                self.forbidden.inc();
            }
            // Under the first method that failed.
            AuthDecision::Unauthorized { method, .. } => {
                let slot = match method {
                    AuthMethodLabel::Basic => 0,
                    AuthMethodLabel::ApiKey => 1,
                    AuthMethodLabel::Ip | AuthMethodLabel::None => 2,
                };
                self.unauthorized[slot].inc();
            }
            AuthDecision::Busy => {
                self.busy.inc();
            }
        }
    }
}

/// Remembers recent successful Basic logins, so a client that sends the same credentials on
/// every request does not cost a bcrypt run each time. Keyed by a digest of a per-process
/// random key, the user, the stored hash and the password; never the password itself.
struct LoginCache {
    seed: [u8; 32],
    logins: moka::sync::Cache<[u8; 32], ()>,
}

static LOGINS: LazyLock<LoginCache> = LazyLock::new(|| {
    let mut seed = [0u8; 32];
    for chunk in seed.chunks_mut(8) {
        chunk.copy_from_slice(&fastrand::u64(..).to_le_bytes());
    }
    LoginCache {
        seed,
        logins: moka::sync::Cache::builder()
            .max_capacity(10_000)
            .time_to_live(Duration::from_secs(300))
            .build(),
    }
});

impl LoginCache {
    fn key(&self, user: &str, hash: &PasswordHash, password: &[u8]) -> [u8; 32] {
        let stored = match hash {
            PasswordHash::Bcrypt(hash) | PasswordHash::ShaCrypt(hash) => hash.as_bytes(),
        };
        let mut digest = Sha256::new();
        digest.update(self.seed);
        for part in [user.as_bytes(), stored, password] {
            digest.update((part.len() as u64).to_le_bytes());
            digest.update(part);
        }
        digest.finalize().into()
    }
}

/// Password verifications running at once, across the process. Each is a blocking
/// thread's worth of hashing; beyond this, logins wait for nothing and get 503, so a flood
/// of guesses cannot queue up unbounded work.
static VERIFICATIONS: LazyLock<Arc<tokio::sync::Semaphore>> = LazyLock::new(|| {
    let cores = std::thread::available_parallelism().map_or(2, usize::from);
    Arc::new(tokio::sync::Semaphore::new(cores * 2))
});

/// The outcome of one Basic check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BasicVerdict {
    Passed,
    Failed,
    /// No verification slot was free.
    Busy,
}

/// The user and password of an `Authorization: Basic` header.
fn basic_credentials(headers: &HeaderMap) -> Option<(String, Vec<u8>)> {
    let value = single(headers, &AUTHORIZATION)?.to_str().ok()?;
    let (scheme, encoded) = value.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()?;
    let colon = decoded.iter().position(|byte| *byte == b':')?;
    let user = String::from_utf8(decoded[..colon].to_vec()).ok()?;
    Some((user, decoded[colon + 1..].to_vec()))
}

impl BasicCredentials {
    async fn check(&self, headers: &HeaderMap) -> BasicVerdict {
        let Some((user, password)) = basic_credentials(headers) else {
            return BasicVerdict::Failed;
        };
        if password.len() > MAX_PASSWORD_BYTES {
            return BasicVerdict::Failed;
        }
        // An unknown user is checked against a real user's hash (same algorithm and cost),
        // so it takes as long as a wrong password.
        let (hash, known) = match self.users.get(&user) {
            Some(hash) => (hash.clone(), true),
            None => match self.users.values().next() {
                Some(decoy) => (decoy.clone(), false),
                None => return BasicVerdict::Failed,
            },
        };
        let cache_key = LOGINS.key(&user, &hash, &password);
        if known && LOGINS.logins.contains_key(&cache_key) {
            return BasicVerdict::Passed;
        }
        let Ok(slot) = Arc::clone(&VERIFICATIONS).try_acquire_owned() else {
            return BasicVerdict::Busy;
        };
        // The slot goes with the work: a client that disconnects does not free it early.
        let verified = tokio::task::spawn_blocking(move || {
            let verified = hash.verify(&password);
            drop(slot);
            verified
        })
        .await
        .unwrap_or(false);
        if verified && known {
            LOGINS.logins.insert(cache_key, ());
            BasicVerdict::Passed
        } else {
            BasicVerdict::Failed
        }
    }
}

impl AuthPolicy {
    /// Decides one request. `client` is the client address as `--trusted-proxies` resolved
    /// it; `query` the request's raw query string.
    pub async fn authorize(
        &self,
        client: IpAddr,
        headers: &HeaderMap,
        query: Option<&str>,
    ) -> AuthDecision {
        if self.ip_deny.iter().any(|network| network.contains(&client))
            || (!self.ip_allow.is_empty()
                && !self
                    .ip_allow
                    .iter()
                    .any(|network| network.contains(&client)))
        {
            return AuthDecision::Forbidden;
        }
        let any = !self.require_all;
        // The method whose credentials the request carried and failed: what a 401 is
        // counted under.
        let mut failed = AuthMethodLabel::None;
        let mut passed_by = None;
        if let Some(keys) = &self.api_key {
            match keys.presented(headers, query) {
                Some(key) if keys.accepts(&key) => passed_by = Some(AuthMethodLabel::ApiKey),
                presented => {
                    if presented.is_some() || keys.carried(headers, query) {
                        failed = AuthMethodLabel::ApiKey;
                    }
                    // With `all`, one failure decides: no password hashing for nothing.
                    if !any {
                        return self.unauthorized(failed);
                    }
                }
            }
        }
        if any && passed_by.is_some() {
            return AuthDecision::Allow {
                method: AuthMethodLabel::ApiKey,
            };
        }
        if let Some(basic) = &self.basic {
            match basic.check(headers).await {
                BasicVerdict::Passed => {
                    passed_by.get_or_insert(AuthMethodLabel::Basic);
                }
                BasicVerdict::Busy => return AuthDecision::Busy,
                BasicVerdict::Failed => {
                    if headers.contains_key(AUTHORIZATION) && failed == AuthMethodLabel::None {
                        failed = AuthMethodLabel::Basic;
                    }
                    return self.unauthorized(failed);
                }
            }
        }
        match passed_by {
            Some(method) => AuthDecision::Allow { method },
            None if self.api_key.is_none() && self.basic.is_none() => AuthDecision::Allow {
                method: if self.ip_allow.is_empty() && self.ip_deny.is_empty() {
                    AuthMethodLabel::None
                } else {
                    AuthMethodLabel::Ip
                },
            },
            None => self.unauthorized(failed),
        }
    }

    /// A 401 with one challenge per credential method.
    fn unauthorized(&self, method: AuthMethodLabel) -> AuthDecision {
        let mut challenges = Vec::new();
        if let Some(basic) = &self.basic
            && let Ok(value) = HeaderValue::from_str(&basic.challenge())
        {
            challenges.push(value);
        }
        if let Some(keys) = &self.api_key {
            let where_ = match &keys.location {
                KeyLocation::Header(name) => format!("ApiKey header=\"{name}\""),
                KeyLocation::Query(parameter) => format!("ApiKey query=\"{parameter}\""),
            };
            if let Ok(value) = HeaderValue::from_str(&where_) {
                challenges.push(value);
            }
        }
        AuthDecision::Unauthorized { challenges, method }
    }

    /// Removes the credentials this policy reads, so they do not reach the upstream.
    /// The path and query without the API key parameter, when the key is sent in the query
    /// and must not reach the upstream (nor its access log); `None` when nothing changes.
    pub fn strip_query(
        &self,
        path_and_query: &http::uri::PathAndQuery,
        passed: AuthMethodLabel,
    ) -> Option<http::uri::PathAndQuery> {
        let keys = self.api_key.as_ref()?;
        let KeyLocation::Query(parameter) = &keys.location else {
            return None;
        };
        if !self.strip_credentials && passed == AuthMethodLabel::ApiKey {
            return None;
        }
        let query = path_and_query.query()?;
        let kept: Vec<&str> = query
            .split('&')
            .filter(|pair| pair.split_once('=').map_or(*pair, |(name, _)| name) != parameter)
            .collect();
        if kept.len() == query.split('&').count() {
            return None;
        }
        let rebuilt = if kept.is_empty() {
            path_and_query.path().to_owned()
        } else {
            format!("{}?{}", path_and_query.path(), kept.join("&"))
        };
        rebuilt.parse().ok()
    }

    /// With `stripCredentials: false` the credentials of the method that let the request
    /// through (`passed`) go upstream; those of other methods never do, since nothing
    /// checked them.
    pub fn strip(&self, headers: &mut HeaderMap, passed: AuthMethodLabel) {
        let keep = |method| !self.strip_credentials && passed == method;
        if self.basic.is_some() && !keep(AuthMethodLabel::Basic) {
            headers.remove(AUTHORIZATION);
        }
        if let Some(keys) = &self.api_key
            && let KeyLocation::Header(name) = &keys.location
            && !keep(AuthMethodLabel::ApiKey)
        {
            headers.remove(name);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn basic_header(user: &str, password: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        let encoded =
            base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
        headers.insert(
            AUTHORIZATION,
            HeaderValue::from_str(&format!("Basic {encoded}")).unwrap(),
        );
        headers
    }

    fn open_policy() -> AuthPolicy {
        AuthPolicy {
            name: ObjectRef::new("shop", "members"),
            ip_deny: Vec::new(),
            ip_allow: Vec::new(),
            basic: None,
            api_key: None,
            require_all: false,
            strip_credentials: true,
        }
    }

    const CLIENT: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(10, 1, 2, 3));

    #[test]
    fn htpasswd_takes_bcrypt_and_sha_crypt_and_refuses_the_rest() {
        let bcrypt = bcrypt::hash("s3cret", 4).unwrap();
        let sha512 = "$6$saltstring$svn8UoSVapNtMuq1ukKS4tPQd8iKwSMHWjl/O817G3uBnIFNjnQJuesI68u4OTLiBFdcbYEdFCoEOfaS35inz1";
        let text = format!("# team\nada:{bcrypt}\n\nbob:{sha512}\n");
        let credentials = BasicCredentials::from_htpasswd("shop", &text).unwrap();
        assert_eq!(credentials.users.len(), 2);
        assert!(matches!(credentials.users["ada"], PasswordHash::Bcrypt(_)));
        assert!(credentials.users["bob"].verify(b"Hello world!"));
        assert!(!credentials.users["bob"].verify(b"hello world!"));

        for (line, reason) in [
            ("eve:plaintext", "plain text"),
            ("eve:$apr1$abc$def", "MD5"),
            ("eve:{SHA}qUqP5cyxm6YcTAhz05Hph5gvu9M=", "SHA-1"),
            ("eve:$2y$10$short", "malformed bcrypt"),
        ] {
            let error = BasicCredentials::from_htpasswd("r", line).unwrap_err();
            assert!(error.to_string().contains(reason), "{line}: {error}");
            let secret = line.split_once(':').unwrap().1;
            assert!(!error.to_string().contains(secret), "{error}");
        }
        assert_eq!(
            BasicCredentials::from_htpasswd("r", "no colon here").unwrap_err(),
            CredentialError::NotUserColonHash { line: 1 }
        );
        assert_eq!(
            BasicCredentials::from_htpasswd("r", &format!("a:{bcrypt}\na:{bcrypt}")).unwrap_err(),
            CredentialError::DuplicateUser {
                line: 2,
                user: "a".into()
            }
        );
        assert_eq!(
            BasicCredentials::from_htpasswd("r", "# nothing\n").unwrap_err(),
            CredentialError::Empty
        );
        // Hashes never show in debug output.
        assert!(!format!("{credentials:?}").contains("$2"));
    }

    #[tokio::test]
    async fn basic_credentials_pass_only_with_the_right_password() {
        let hash = bcrypt::hash("s3cret", 4).unwrap();
        let policy = AuthPolicy {
            basic: Some(Arc::new(
                BasicCredentials::from_htpasswd("shop", &format!("ada:{hash}")).unwrap(),
            )),
            ..open_policy()
        };
        assert_eq!(
            policy
                .authorize(CLIENT, &basic_header("ada", "s3cret"), None)
                .await,
            AuthDecision::Allow {
                method: AuthMethodLabel::Basic
            }
        );
        // Again, from the login cache.
        assert!(matches!(
            policy
                .authorize(CLIENT, &basic_header("ada", "s3cret"), None)
                .await,
            AuthDecision::Allow { .. }
        ));
        for headers in [
            basic_header("ada", "wrong"),
            basic_header("bob", "s3cret"),
            HeaderMap::new(),
        ] {
            match policy.authorize(CLIENT, &headers, None).await {
                AuthDecision::Unauthorized { challenges, .. } => assert_eq!(
                    challenges,
                    [HeaderValue::from_static(
                        "Basic realm=\"shop\", charset=\"UTF-8\""
                    )]
                ),
                other => panic!("{other:?}"),
            }
        }
    }

    #[tokio::test]
    async fn api_keys_in_a_header_or_the_query() {
        let keys = ApiKeys::new(
            KeyLocation::Header(HeaderName::from_static("x-api-key")),
            [b"k-123".as_slice(), b"k-456".as_slice()],
        )
        .unwrap();
        let policy = AuthPolicy {
            api_key: Some(Arc::new(keys)),
            ..open_policy()
        };
        let mut headers = HeaderMap::new();
        headers.insert("x-api-key", HeaderValue::from_static("k-456"));
        assert!(matches!(
            policy.authorize(CLIENT, &headers, None).await,
            AuthDecision::Allow {
                method: AuthMethodLabel::ApiKey
            }
        ));
        headers.insert("x-api-key", HeaderValue::from_static("k-789"));
        assert!(matches!(
            policy.authorize(CLIENT, &headers, None).await,
            AuthDecision::Unauthorized { .. }
        ));
        let mut stripped = headers.clone();
        policy.strip(&mut stripped, AuthMethodLabel::ApiKey);
        assert!(stripped.get("x-api-key").is_none());
        // Two keys: the upstream might read the other one.
        let mut two = HeaderMap::new();
        two.append("x-api-key", HeaderValue::from_static("k-456"));
        two.append("x-api-key", HeaderValue::from_static("k-789"));
        assert!(matches!(
            policy.authorize(CLIENT, &two, None).await,
            AuthDecision::Unauthorized {
                method: AuthMethodLabel::ApiKey,
                ..
            }
        ));

        let by_query = AuthPolicy {
            api_key: Some(Arc::new(
                ApiKeys::new(KeyLocation::Query("api_key".into()), [b"a b/c".as_slice()]).unwrap(),
            )),
            ..open_policy()
        };
        let empty = HeaderMap::new();
        assert!(matches!(
            by_query
                .authorize(CLIENT, &empty, Some("x=1&api_key=a+b%2Fc"))
                .await,
            AuthDecision::Allow { .. }
        ));
        assert!(matches!(
            by_query
                .authorize(CLIENT, &empty, Some("api_key=a+b"))
                .await,
            AuthDecision::Unauthorized { .. }
        ));
        assert!(matches!(
            by_query
                .authorize(CLIENT, &empty, Some("api_key=a+b%2Fc&api_key=x"))
                .await,
            AuthDecision::Unauthorized { .. }
        ));
        assert!(ApiKeys::new(KeyLocation::Query("k".into()), [b"".as_slice()]).is_err());
    }

    #[test]
    fn hashes_too_costly_to_verify_per_login_are_refused() {
        let cheap = bcrypt::hash("pw", 4).unwrap();
        assert!(PasswordHash::parse(&cheap).is_ok());
        let costly = cheap.replacen("$04$", "$13$", 1);
        assert!(
            PasswordHash::parse(&costly)
                .unwrap_err()
                .contains("cost above 12")
        );
        let rounds = "$6$rounds=10000$saltstringsaltst$OW1/O6BYHV6BcXZu8QVeXbDWra3Oeqh0sbHbbMCVNSnCM/UrjmM0Dp8vOuZeHBy/YTBmSK6H9qs/y3RnOaw5v.";
        assert!(PasswordHash::parse(rounds).is_ok());
        let too_many = rounds.replace("rounds=10000", "rounds=200000");
        assert!(
            PasswordHash::parse(&too_many)
                .unwrap_err()
                .contains("rounds above")
        );
    }

    #[tokio::test]
    async fn overlong_passwords_and_repeated_headers_are_refused_unverified() {
        let hash = bcrypt::hash("pw", 4).unwrap();
        let policy = AuthPolicy {
            basic: Some(Arc::new(
                BasicCredentials::from_htpasswd("r", &format!("ada:{hash}")).unwrap(),
            )),
            ..open_policy()
        };
        let long = "x".repeat(MAX_PASSWORD_BYTES + 1);
        assert!(matches!(
            policy
                .authorize(CLIENT, &basic_header("ada", &long), None)
                .await,
            AuthDecision::Unauthorized { .. }
        ));
        let mut twice = basic_header("ada", "pw");
        let second = twice.get(AUTHORIZATION).unwrap().clone();
        twice.append(AUTHORIZATION, second);
        assert!(matches!(
            policy.authorize(CLIENT, &twice, None).await,
            AuthDecision::Unauthorized {
                method: AuthMethodLabel::Basic,
                ..
            }
        ));
        // An unknown user is verified against a real user's hash, and fails.
        assert!(matches!(
            policy
                .authorize(CLIENT, &basic_header("eve", "pw"), None)
                .await,
            AuthDecision::Unauthorized { .. }
        ));
    }

    #[test]
    fn a_key_in_the_query_is_removed_from_the_upstream_uri() {
        let policy = AuthPolicy {
            api_key: Some(Arc::new(
                ApiKeys::new(KeyLocation::Query("api_key".into()), [b"k".as_slice()]).unwrap(),
            )),
            ..open_policy()
        };
        let strip = |uri: &str| {
            policy
                .strip_query(&uri.parse().unwrap(), AuthMethodLabel::ApiKey)
                .map(|stripped| stripped.to_string())
        };
        assert_eq!(strip("/a?x=1&api_key=k&y=2").as_deref(), Some("/a?x=1&y=2"));
        assert_eq!(strip("/a?api_key=k").as_deref(), Some("/a"));
        assert_eq!(strip("/a?x=1"), None);
        assert_eq!(strip("/a"), None);
        let kept = AuthPolicy {
            strip_credentials: false,
            ..policy.clone()
        };
        assert_eq!(
            kept.strip_query(&"/a?api_key=k".parse().unwrap(), AuthMethodLabel::ApiKey),
            None
        );
    }

    #[test]
    fn credentials_go_upstream_only_when_asked_and_only_those_that_passed() {
        let keys = ApiKeys::new(
            KeyLocation::Header(HeaderName::from_static("x-api-key")),
            [b"key".as_slice()],
        )
        .unwrap();
        let hash = bcrypt::hash("pw", 4).unwrap();
        let keep = AuthPolicy {
            basic: Some(Arc::new(
                BasicCredentials::from_htpasswd("r", &format!("ada:{hash}")).unwrap(),
            )),
            api_key: Some(Arc::new(keys)),
            strip_credentials: false,
            ..open_policy()
        };
        let mut headers = basic_header("admin", "unchecked");
        headers.insert("x-api-key", HeaderValue::from_static("key"));
        keep.strip(&mut headers, AuthMethodLabel::ApiKey);
        assert!(
            headers.get("x-api-key").is_some(),
            "the key that passed stays"
        );
        assert!(
            headers.get(AUTHORIZATION).is_none(),
            "unchecked Basic never goes upstream"
        );
        let strip = AuthPolicy {
            strip_credentials: true,
            ..keep
        };
        strip.strip(&mut headers, AuthMethodLabel::ApiKey);
        assert!(headers.get("x-api-key").is_none());
    }

    #[tokio::test]
    async fn networks_are_checked_before_credentials() {
        let network = |text: &str| text.parse::<IpNet>().unwrap();
        let policy = AuthPolicy {
            ip_allow: vec![network("10.0.0.0/8")],
            ip_deny: vec![network("10.9.0.0/16")],
            ..open_policy()
        };
        let none = HeaderMap::new();
        assert_eq!(
            policy.authorize(CLIENT, &none, None).await,
            AuthDecision::Allow {
                method: AuthMethodLabel::Ip
            }
        );
        for client in ["10.9.1.1", "192.0.2.1"] {
            assert_eq!(
                policy.authorize(client.parse().unwrap(), &none, None).await,
                AuthDecision::Forbidden,
                "{client}"
            );
        }
    }

    #[tokio::test]
    async fn require_all_needs_every_method_and_any_needs_one() {
        let hash = bcrypt::hash("pw", 4).unwrap();
        let any = AuthPolicy {
            basic: Some(Arc::new(
                BasicCredentials::from_htpasswd("r", &format!("ada:{hash}")).unwrap(),
            )),
            api_key: Some(Arc::new(
                ApiKeys::new(
                    KeyLocation::Header(HeaderName::from_static("x-api-key")),
                    [b"key".as_slice()],
                )
                .unwrap(),
            )),
            ..open_policy()
        };
        let all = AuthPolicy {
            require_all: true,
            ..any.clone()
        };
        let mut both = basic_header("ada", "pw");
        both.insert("x-api-key", HeaderValue::from_static("key"));
        let only_basic = basic_header("ada", "pw");
        let mut only_key = HeaderMap::new();
        only_key.insert("x-api-key", HeaderValue::from_static("key"));
        let allowed = |decision: AuthDecision| matches!(decision, AuthDecision::Allow { .. });
        assert!(allowed(any.authorize(CLIENT, &only_basic, None).await));
        assert!(allowed(any.authorize(CLIENT, &only_key, None).await));
        assert!(allowed(all.authorize(CLIENT, &both, None).await));
        assert!(!allowed(all.authorize(CLIENT, &only_basic, None).await));
        match all.authorize(CLIENT, &only_key, None).await {
            AuthDecision::Unauthorized { challenges, .. } => assert_eq!(challenges.len(), 2),
            other => panic!("{other:?}"),
        }
    }
}
