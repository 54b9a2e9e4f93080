//! Request-target and Host normalisation: the property is in
//! dataplane/tests/properties/request_target.rs, shared with the in-tree property test.
#![no_main]

// Shared with the in-tree tests, which use parts the fuzz target does not.
#[allow(dead_code)]
#[path = "../../dataplane/tests/properties/request_target.rs"]
mod request_target;
#[allow(dead_code)]
#[path = "../../dataplane/tests/properties/text.rs"]
mod text;

libfuzzer_sys::fuzz_target!(|input: request_target::RequestInput| {
    request_target::check(&input);
});
