//! `compile` over random object sets: the properties are in
//! controller/tests/properties/compile.rs, shared with the in-tree property test.
#![no_main]

// Shared with the in-tree tests, which use parts the fuzz target does not.
#[allow(dead_code)]
#[path = "../../controller/tests/properties/compile.rs"]
mod compile;
#[allow(dead_code)]
#[path = "../../controller/tests/properties/objects.rs"]
mod objects;

libfuzzer_sys::fuzz_target!(|input: compile::CompileInput| {
    compile::check(&input);
});
