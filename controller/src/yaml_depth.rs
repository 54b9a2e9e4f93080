//! A bound on how deeply the documents of a YAML file nest, checked before they are parsed.
//!
//! serde_yaml_ng parses with libyaml (translated to Rust as unsafe-libyaml), whose scanner
//! rechecks every open flow collection (`[`, `{`) for each token: a flow collection nested
//! n deep takes time quadratic in n (a 40 KB line of `[` took 2 s, 100 KB took 12 s).
//! serde_yaml_ng collects every event of a document before its own depth limit (128)
//! applies, so that limit comes after the time is spent. This walks the same parser's
//! events and stops at the first one that is too deep, so the walk is linear in the text,
//! and the real parse never sees a document deep enough to be slow.

use std::marker::PhantomData;
use std::mem::MaybeUninit;

/// The deepest nesting of collections a manifest may have. Kubernetes objects nest about
/// ten deep; a generous bound keeps hand-written files working.
pub(crate) const MAX_DEPTH: usize = 64;

/// The 1-based number of the first document of `text` whose collections nest more than
/// `limit` deep, if any. A syntax error ends the walk: the parse that follows reports it,
/// and libyaml stops there too.
pub(crate) fn too_deep(text: &str, limit: usize) -> Option<usize> {
    let mut parser = EventParser::new(text)?;
    let mut document = 0;
    let mut depth = 0usize;
    loop {
        match parser.next()? {
            Event::StreamEnd => return None,
            Event::DocumentStart => {
                document += 1;
                depth = 0;
            }
            Event::Open => {
                depth += 1;
                if depth > limit {
                    return Some(document);
                }
            }
            Event::Close => depth = depth.saturating_sub(1),
            Event::Other => {}
        }
    }
}

/// The events the walk tells apart.
enum Event {
    StreamEnd,
    DocumentStart,
    /// A sequence or a mapping starts.
    Open,
    Close,
    Other,
}

/// A libyaml parser reading `'a` text, freed when dropped.
struct EventParser<'a> {
    /// Boxed: libyaml keeps pointers into the parser, so it must not move.
    raw: Box<MaybeUninit<unsafe_libyaml::yaml_parser_t>>,
    /// libyaml reads the text in place.
    _text: PhantomData<&'a str>,
}

impl<'a> EventParser<'a> {
    fn new(text: &'a str) -> Option<Self> {
        let mut raw = Box::new(MaybeUninit::<unsafe_libyaml::yaml_parser_t>::uninit());
        let size = u64::try_from(text.len()).ok()?;
        // SAFETY: `raw` is writable memory for a parser, which initialize fills in (and
        // frees what it allocated itself when it fails, leaving nothing to delete).
        if unsafe { unsafe_libyaml::yaml_parser_initialize(raw.as_mut_ptr()).fail } {
            return None;
        }
        // SAFETY: the parser is initialized; `text` outlives it (`'a`), is not moved, and
        // is only read. UTF-8 is what serde_yaml_ng sets, so both read the text alike.
        unsafe {
            unsafe_libyaml::yaml_parser_set_encoding(
                raw.as_mut_ptr(),
                unsafe_libyaml::YAML_UTF8_ENCODING,
            );
            unsafe_libyaml::yaml_parser_set_input_string(raw.as_mut_ptr(), text.as_ptr(), size);
        }
        Some(EventParser {
            raw,
            _text: PhantomData,
        })
    }

    /// The next event, or `None` on a syntax error.
    fn next(&mut self) -> Option<Event> {
        let mut event = MaybeUninit::<unsafe_libyaml::yaml_event_t>::uninit();
        // SAFETY: the parser is initialized and not yet deleted. On success the event is
        // filled in, read once and deleted before it goes out of scope; on failure libyaml
        // leaves nothing in it to delete.
        unsafe {
            if unsafe_libyaml::yaml_parser_parse(self.raw.as_mut_ptr(), event.as_mut_ptr()).fail {
                return None;
            }
            let kind = match (*event.as_ptr()).type_ {
                unsafe_libyaml::YAML_STREAM_END_EVENT => Event::StreamEnd,
                unsafe_libyaml::YAML_DOCUMENT_START_EVENT => Event::DocumentStart,
                unsafe_libyaml::YAML_SEQUENCE_START_EVENT
                | unsafe_libyaml::YAML_MAPPING_START_EVENT => Event::Open,
                unsafe_libyaml::YAML_SEQUENCE_END_EVENT
                | unsafe_libyaml::YAML_MAPPING_END_EVENT => Event::Close,
                _ => Event::Other,
            };
            unsafe_libyaml::yaml_event_delete(event.as_mut_ptr());
            Some(kind)
        }
    }
}

impl Drop for EventParser<'_> {
    fn drop(&mut self) {
        // SAFETY: built only by `new`, so initialized, and deleted only here.
        unsafe { unsafe_libyaml::yaml_parser_delete(self.raw.as_mut_ptr()) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    #[test]
    fn depth_is_counted_per_document_in_every_style() {
        let text = "a: [[1]]\n---\nb:\n  c:\n  - - x\n---\n{a: {b: [1]}}\n";
        assert_eq!(too_deep(text, 4), None);
        assert_eq!(
            too_deep(text, 3),
            Some(2),
            "b, c and two sequences are 4 deep"
        );
        assert_eq!(too_deep(text, 2), Some(1));
        assert_eq!(too_deep("", 1), None);
        assert_eq!(too_deep("# only a comment\n", 1), None);
        assert_eq!(
            too_deep("a: 1\n---\n---\nb: [[1]]\n", 2),
            Some(3),
            "an empty document counts as one, as serde_yaml_ng numbers them"
        );
    }

    #[test]
    fn a_syntax_error_ends_the_walk_without_a_verdict() {
        assert_eq!(too_deep("a: b: c\nd: [[[[[[", 2), None);
    }

    /// The defect: these took seconds (release build) to tens of seconds (debug) in
    /// serde_yaml_ng. The walk stops at depth 65, so each is refused in milliseconds.
    #[test]
    fn deep_flow_and_block_nesting_is_refused_quickly() {
        let deep = 50_000;
        for text in [
            format!("a: {}{}\n", "[".repeat(deep), "]".repeat(deep)),
            format!("a: {}1{}\n", "{a: ".repeat(deep), "}".repeat(deep)),
            format!("a: {}\n", "[".repeat(deep)),
            format!("a:\n{}x\n", "- ".repeat(deep)),
        ] {
            let started = Instant::now();
            assert_eq!(too_deep(&text, MAX_DEPTH), Some(1));
            let took = started.elapsed();
            assert!(took < Duration::from_secs(2), "{took:?}");
        }
    }
}
