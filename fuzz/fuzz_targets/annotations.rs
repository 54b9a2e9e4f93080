//! The annotation parsers, reached through `compile`: the properties are in
//! controller/tests/properties/annotations.rs, shared with the in-tree property test.
#![no_main]

// Shared with the in-tree tests, which use parts the fuzz target does not.
#[allow(dead_code)]
#[path = "../../controller/tests/properties/annotations.rs"]
mod annotations;
#[allow(dead_code)]
#[path = "../../controller/tests/properties/objects.rs"]
mod objects;

libfuzzer_sys::fuzz_target!(|input: annotations::AnnotationsInput| {
    annotations::check(&input);
});
