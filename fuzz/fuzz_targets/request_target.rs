//! Request-target and Host normalisation: the property is in
//! dataplane/tests/properties/request_target.rs, shared with the in-tree property test.
#![no_main]

#[path = "../../dataplane/tests/properties/request_target.rs"]
mod request_target;
#[path = "../../dataplane/tests/properties/text.rs"]
mod text;

libfuzzer_sys::fuzz_target!(|input: request_target::RequestInput| {
    request_target::check(&input);
});
