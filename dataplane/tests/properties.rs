//! Property tests over what clients and upstreams send: the request target and Host, the
//! credential parsers, the caching rules. Each property lives in `properties/` and is
//! shared with the cargo-fuzz target of the same name in `fuzz/` (see docs/security.md);
//! here each runs on a few hundred inputs that `arbitrary` builds from random bytes, so
//! `cargo test` stays fast. The regression tests pin the inputs fuzzing found.

#[path = "properties/auth.rs"]
mod auth;
#[path = "properties/cache_control.rs"]
mod cache_control;
#[path = "properties/request_target.rs"]
mod request_target;
#[path = "properties/text.rs"]
mod text;

use arbitrary::{Arbitrary, Unstructured};
use proptest::prelude::*;

/// Random bytes, as the fuzzer would hand them to a target.
fn fuzz_bytes() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(any::<u8>(), 0..1024)
}

/// The input `arbitrary` builds from `bytes`, when it can build one.
fn input<T: for<'a> Arbitrary<'a>>(bytes: &[u8]) -> Option<T> {
    T::arbitrary_take_rest(Unstructured::new(bytes)).ok()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn request_targets_route_what_the_backend_receives(bytes in fuzz_bytes()) {
        if let Some(request) = input(&bytes) {
            request_target::check(&request);
        }
    }

    #[test]
    fn credential_parsers_never_panic_nor_accept_invalid_tokens(bytes in fuzz_bytes()) {
        if let Some(auth) = input(&bytes) {
            auth::check(&auth);
        }
    }

    #[test]
    fn caching_rules_cap_durations_and_read_lists_alike(bytes in fuzz_bytes()) {
        if let Some(cache) = input(&bytes) {
            cache_control::check(&cache);
        }
    }
}

/// A request of `version` for `uri` with these headers, through the request-target check.
fn check_request(version: http::Version, uri: &str, headers: &[(&str, &str)]) {
    let headers: Vec<(http::HeaderName, Vec<u8>)> = headers
        .iter()
        .map(|(name, value)| (name.parse().unwrap(), value.as_bytes().to_vec()))
        .collect();
    let request =
        request_target::request(http::Method::GET, version, uri.parse().unwrap(), &headers)
            .unwrap();
    request_target::check_request(&request);
}

#[test]
fn protected_route_is_reached_by_its_own_spellings() {
    use http::Version;
    let members = [("host", "members.test")];
    check_request(Version::HTTP_11, "/admin", &members);
    check_request(
        Version::HTTP_11,
        "/%61dmin/x",
        &[("host", "MEMBERS.test.:8080")],
    );
    check_request(Version::HTTP_11, "//admin//x", &members);
    check_request(Version::HTTP_2, "https://members.test/admin", &[]);
    check_request(Version::HTTP_11, "/x/../admin", &members);
    check_request(Version::HTTP_11, "/x%2F..%2Fadmin", &members);
    check_request(
        Version::HTTP_11,
        "/admin",
        &[("host", "x.test"), ("host", "members.test")],
    );
    check_request(Version::HTTP_11, "http://x.test/admin", &members);
    check_request(Version::HTTP_11, "/admin", &[("host", "members.test:abc")]);
}

// Found by the request_target fuzz target (docs/security.md, finding 1): a separator the
// router does not cut a path at, but a lenient backend does, routes a request for the
// protected `/admin` of members.test to its public `/` route. Each fails until the request
// path phase refuses (or routes by) such paths.

#[test]
fn raw_backslash_does_not_route_around_a_protected_prefix() {
    check_request(
        http::Version::HTTP_11,
        "/\\admin",
        &[("host", "members.test")],
    );
}

#[test]
fn encoded_backslash_does_not_route_around_a_protected_prefix() {
    check_request(
        http::Version::HTTP_11,
        "/%5Cadmin",
        &[("host", "members.test")],
    );
}

#[test]
fn encoded_slash_does_not_route_around_a_protected_prefix() {
    check_request(
        http::Version::HTTP_11,
        "/admin%2Fusers",
        &[("host", "members.test")],
    );
}

#[test]
fn path_parameter_does_not_route_around_a_protected_prefix() {
    check_request(
        http::Version::HTTP_11,
        "/admin;x",
        &[("host", "members.test")],
    );
}

#[test]
fn encoded_semicolon_does_not_route_around_a_protected_prefix() {
    check_request(
        http::Version::HTTP_11,
        "/admin%3B",
        &[("host", "members.test")],
    );
}

// Found by the cache_control fuzz target (docs/security.md, finding 2): an escaped quote
// inside a quoted string ends the string for Sluice's list splitter, so the directives
// after it are read as part of it and lost. Fails until `split_list` honours `\"`.

#[test]
fn escaped_quote_does_not_hide_the_directives_after_it() {
    let mut headers = http::HeaderMap::new();
    headers.insert(
        http::header::CACHE_CONTROL,
        http::HeaderValue::from_static(r#"no-cache="a\"b", no-store"#),
    );
    cache_control::check_cache_control(&headers);
    let parsed = sluice_dataplane::cache::semantics::CacheControl::parse(&headers);
    assert!(parsed.no_store, "no-store lost: {parsed:?}");
}

/// The token builder reaches acceptance: a well-formed token from each signer in the key
/// set passes, and the same token damaged does not.
#[test]
fn built_tokens_reach_acceptance() {
    use auth::{AlgChoice, BuiltToken, Damage, JsonChoice, Signer, TokenInput};
    let token = |alg: AlgChoice, kid: u8, signer: Signer, damage: Vec<Damage>| {
        TokenInput::Built(BuiltToken {
            // Field indexes into the builder's names: 0 alg, 1 kid, 3 iss, 4 aud, 5 exp.
            header: vec![(0, JsonChoice::Alg(alg)), (1, JsonChoice::Kid(kid))],
            claims: vec![
                (3, JsonChoice::Issuer),
                (4, JsonChoice::AudienceList),
                (5, JsonChoice::Far(true)),
            ],
            signer,
            damage,
        })
    };
    assert!(auth::accepted(&token(
        AlgChoice::Es256,
        1,
        Signer::Ec,
        vec![]
    )));
    assert!(auth::accepted(&token(
        AlgChoice::EdDsa,
        2,
        Signer::Ed,
        vec![]
    )));
    assert!(auth::accepted(&token(
        AlgChoice::Rs256,
        0,
        Signer::Presigned(0),
        vec![]
    )));
    // A NumericDate need not be whole (RFC 7519 §2): a fractional `nbf` in the past passes.
    let TokenInput::Built(mut fractional) = token(AlgChoice::Es256, 1, Signer::Ec, vec![]) else {
        unreachable!()
    };
    fractional.claims.push((6, JsonChoice::Float(1.0e-13)));
    assert!(auth::accepted(&TokenInput::Built(fractional)));
    assert!(!auth::accepted(&token(
        AlgChoice::Es256,
        1,
        Signer::Ec,
        vec![Damage::FlipByte(20)]
    )));
    assert!(!auth::accepted(&token(
        AlgChoice::Hs256,
        0,
        Signer::Hmac,
        vec![]
    )));
    assert!(!auth::accepted(&token(
        AlgChoice::None,
        0,
        Signer::Empty,
        vec![]
    )));
}
