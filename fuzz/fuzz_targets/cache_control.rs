//! Cache-Control, Age, Expires/Date and Vary: the properties are in
//! dataplane/tests/properties/cache_control.rs, shared with the in-tree property test.
#![no_main]

// Shared with the in-tree tests, which use parts the fuzz target does not.
#[allow(dead_code)]
#[path = "../../dataplane/tests/properties/cache_control.rs"]
mod cache_control;
#[allow(dead_code)]
#[path = "../../dataplane/tests/properties/text.rs"]
mod text;

libfuzzer_sys::fuzz_target!(|input: cache_control::CacheInput| {
    cache_control::check(&input);
});
