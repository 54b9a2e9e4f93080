//! HTTP Basic credentials from htpasswd Secrets: hashes parsed once, verified off the
//! traffic threads, successful logins remembered briefly.

use std::collections::BTreeMap;
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use base64::Engine;
use http::HeaderMap;
use http::header::AUTHORIZATION;
use sha2::{Digest, Sha256};

use super::{CredentialError, single};

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

    pub(super) fn challenge(&self) -> String {
        format!("Basic realm=\"{}\", charset=\"UTF-8\"", self.realm)
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
pub(super) enum BasicVerdict {
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
    pub(super) async fn check(&self, headers: &HeaderMap) -> BasicVerdict {
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
