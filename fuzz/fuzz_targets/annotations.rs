//! The annotation parsers, reached through `compile`: the properties are in
//! controller/tests/properties/annotations.rs, shared with the in-tree property test.
#![no_main]

#[path = "../../controller/tests/properties/annotations.rs"]
mod annotations;
#[path = "../../controller/tests/properties/objects.rs"]
mod objects;

libfuzzer_sys::fuzz_target!(|input: annotations::AnnotationsInput| {
    annotations::check(&input);
});
