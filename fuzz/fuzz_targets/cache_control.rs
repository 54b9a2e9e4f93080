//! Cache-Control, Age, Expires/Date and Vary: the properties are in
//! dataplane/tests/properties/cache_control.rs, shared with the in-tree property test.
#![no_main]

#[path = "../../dataplane/tests/properties/cache_control.rs"]
mod cache_control;
#[path = "../../dataplane/tests/properties/text.rs"]
mod text;

libfuzzer_sys::fuzz_target!(|input: cache_control::CacheInput| {
    cache_control::check(&input);
});
