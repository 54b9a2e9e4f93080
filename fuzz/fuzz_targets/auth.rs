//! htpasswd, JWKS and JWT parsing: the properties are in dataplane/tests/properties/auth.rs,
//! shared with the in-tree property test.
#![no_main]

// Shared with the in-tree tests, which use parts the fuzz target does not.
#[allow(dead_code)]
#[path = "../../dataplane/tests/properties/auth.rs"]
mod auth;
#[allow(dead_code)]
#[path = "../../dataplane/tests/properties/text.rs"]
mod text;

libfuzzer_sys::fuzz_target!(|input: auth::AuthInput| {
    auth::check(&input);
});
