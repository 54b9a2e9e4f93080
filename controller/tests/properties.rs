//! Property tests of the compiler: the annotation parsers over arbitrary annotation maps,
//! and `compile` over random object sets. Each property lives in `properties/` and is
//! shared with the cargo-fuzz target of the same name in `fuzz/` (see docs/security.md);
//! here each runs on inputs that `arbitrary` builds from random bytes, few enough that
//! `cargo test` stays fast.

#[path = "properties/annotations.rs"]
mod annotations;
#[path = "properties/compile.rs"]
mod compile;
#[path = "properties/objects.rs"]
mod objects;

use arbitrary::{Arbitrary, Unstructured};
use proptest::prelude::*;

/// Random bytes, as the fuzzer would hand them to a target.
fn fuzz_bytes(most: usize) -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(any::<u8>(), 0..most)
}

/// The input `arbitrary` builds from `bytes`, when it can build one.
fn input<T: for<'a> Arbitrary<'a>>(bytes: &[u8]) -> Option<T> {
    T::arbitrary_take_rest(Unstructured::new(bytes)).ok()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn annotation_errors_name_the_annotation(bytes in fuzz_bytes(512)) {
        if let Some(annotations) = input(&bytes) {
            annotations::check(&annotations);
        }
    }

    #[test]
    fn compile_is_deterministic_and_its_routes_reachable(bytes in fuzz_bytes(4096)) {
        if let Some(objects) = input(&bytes) {
            compile::check(&objects);
        }
    }
}
