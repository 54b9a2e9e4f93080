//! `compile` over random object sets: the properties are in
//! controller/tests/properties/compile.rs, shared with the in-tree property test.
#![no_main]

#[path = "../../controller/tests/properties/compile.rs"]
mod compile;
#[path = "../../controller/tests/properties/objects.rs"]
mod objects;

libfuzzer_sys::fuzz_target!(|input: compile::CompileInput| {
    compile::check(&input);
});
