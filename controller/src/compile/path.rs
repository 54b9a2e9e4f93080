//! Ingress paths: validation, canonical form, path types and the keys they are stored under.
//!
//! A path is stored in the one spelling the data plane gives every request path
//! ([`canonical_path`]), so `/café` and a request for `/caf%C3%A9` meet; a path kept as
//! written would never match its requests, and they would fall through to a shorter,
//! perhaps unprotected, route.

use std::fmt;

use sluice_dataplane::canonical::{PathError, canonical_path};

use crate::error::CompileError;

/// How a path matches, as stored in the route table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum PathMatch {
    /// `pathType: Exact`.
    Exact,
    /// `pathType: Prefix` or `ImplementationSpecific`, matched element by element.
    Prefix,
}

impl fmt::Display for PathMatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            PathMatch::Exact => "Exact",
            PathMatch::Prefix => "Prefix",
        })
    }
}

/// A valid path with the key it is stored under.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PathRule {
    pub path_match: PathMatch,
    /// The canonical path, without trailing slashes for a prefix.
    pub key: String,
    /// Set when the path as written is not how requests for it arrive (`/%61dmin` is
    /// served as `/admin`): the route is kept, and the Ingress is told.
    pub warning: Option<CompileError>,
}

/// Validates one `HTTPIngressPath`'s path and type; `field` is the path item,
/// `spec.rules[i].http.paths[j]`.
///
/// A missing path means `/`: the API server only allows that for `ImplementationSpecific`,
/// where every common controller reads it as "everything".
pub(crate) fn compile_path(
    path: Option<&str>,
    path_type: &str,
    field: &str,
) -> Result<PathRule, CompileError> {
    let path_match = match path_type {
        "Exact" => PathMatch::Exact,
        // The field is required by the API, but manifests read from files may leave it out.
        "Prefix" | "ImplementationSpecific" | "" => PathMatch::Prefix,
        other => {
            return Err(CompileError::InvalidPath {
                field: format!("{field}.pathType"),
                path: path.unwrap_or("/").to_owned(),
                why: format!(
                    "pathType {other:?} is not one of Exact, Prefix, ImplementationSpecific"
                ),
            });
        }
    };
    let path = path.unwrap_or("/");
    let invalid = |why: &str| CompileError::InvalidPath {
        field: format!("{field}.path"),
        path: path.to_owned(),
        why: why.to_owned(),
    };
    validate(path).map_err(invalid)?;
    let canonical = canonical_path(path).map_err(|error| invalid(refusal(error)))?;
    let warning = (*canonical != raw_bytes_encoded(path)).then(|| CompileError::PathNotCanonical {
        field: format!("{field}.path"),
        path: path.to_owned(),
        canonical: canonical.clone().into_owned(),
    });
    let key = match path_match {
        PathMatch::Exact => canonical.into_owned(),
        PathMatch::Prefix => prefix_key(&canonical),
    };
    Ok(PathRule {
        path_match,
        key,
        warning,
    })
}

/// Rejects what `canonical_path` would quietly encode but that says the author meant
/// something else: a query or fragment, whitespace and control characters.
fn validate(path: &str) -> Result<(), &'static str> {
    if path.contains('?') || path.contains('#') {
        return Err("it must not contain ? or # (a query or fragment is not part of the path)");
    }
    if path.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return Err("it must not contain whitespace or control characters");
    }
    Ok(())
}

/// Why `canonical_path` refused a path, in the words of an Ingress path.
fn refusal(error: PathError) -> &'static str {
    match error {
        PathError::NotAbsolute => "it must start with /",
        PathError::DotSegment => {
            "it must not contain . or .. segments (also encoded, between encoded slashes or \
             before ;), which requests are refused for"
        }
        PathError::BadPercentEncoding => "it has a % that is not followed by two hex digits",
        PathError::EncodedControl => {
            "it has an encoded NUL, CR or LF (%00, %0D, %0A), which requests are refused for"
        }
    }
}

/// The path with only its raw bytes encoded as `canonical_path` encodes them (`é` is
/// `%C3%A9`), everything else as written. A path equal to its canonical form this way is
/// simply how requests for it arrive; any other difference (`%61` decoded, `%2f` in upper
/// case, `//` merged) means the path as written can never be what a request says.
fn raw_bytes_encoded(path: &str) -> String {
    let mut out = String::with_capacity(path.len());
    let mut one = [0u8; 4];
    for c in path.chars() {
        if matches!(c, '%' | '/') {
            out.push(c);
            continue;
        }
        // `canonical_path` alone decides the encoding; `/a` keeps `.` from being a segment.
        let probe = format!("/a{}", c.encode_utf8(&mut one));
        match canonical_path(&probe) {
            Ok(encoded) => out.push_str(encoded.get(2..).unwrap_or_default()),
            Err(_) => out.push(c),
        }
    }
    out
}

/// `/aaa/` and `/aaa` are the same prefix; the root stays `/`.
fn prefix_key(path: &str) -> String {
    let trimmed = path.trim_end_matches('/');
    if trimmed.is_empty() {
        "/".to_owned()
    } else {
        trimmed.to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FIELD: &str = "spec.rules[0].http.paths[1]";

    fn rule(path: &str, path_type: &str) -> PathRule {
        compile_path(Some(path), path_type, FIELD).unwrap()
    }

    fn invalid(path: Option<&str>, path_type: &str) -> (String, String) {
        match compile_path(path, path_type, FIELD) {
            Err(CompileError::InvalidPath { field, why, .. }) => (field, why),
            other => panic!("expected InvalidPath, got {other:?}"),
        }
    }

    fn invalid_field(path: Option<&str>, path_type: &str) -> String {
        invalid(path, path_type).0
    }

    #[test]
    fn exact_paths_keep_the_path_as_written() {
        assert_eq!(
            rule("/aaa/", "Exact"),
            PathRule {
                path_match: PathMatch::Exact,
                key: "/aaa/".into(),
                warning: None,
            }
        );
    }

    #[test]
    fn prefix_paths_drop_trailing_slashes_but_root_stays() {
        assert_eq!(rule("/aaa/", "Prefix").key, "/aaa");
        assert_eq!(rule("/aaa", "Prefix").key, "/aaa");
        assert_eq!(rule("/", "Prefix").key, "/");
        assert_eq!(rule("/a/b/", "Prefix").path_match, PathMatch::Prefix);
    }

    #[test]
    fn implementation_specific_and_missing_type_are_prefix() {
        assert_eq!(
            rule("/x/", "ImplementationSpecific"),
            PathRule {
                path_match: PathMatch::Prefix,
                key: "/x".into(),
                warning: None,
            }
        );
        assert_eq!(rule("/x/", "").path_match, PathMatch::Prefix);
    }

    #[test]
    fn missing_path_means_root() {
        let rule = compile_path(None, "ImplementationSpecific", FIELD).unwrap();
        assert_eq!(rule.key, "/");
    }

    #[test]
    fn unknown_path_type_is_invalid_path_on_path_type() {
        assert_eq!(
            invalid_field(Some("/a"), "Regex"),
            "spec.rules[0].http.paths[1].pathType"
        );
    }

    #[test]
    fn paths_must_start_with_slash() {
        assert_eq!(
            invalid_field(Some("api"), "Prefix"),
            "spec.rules[0].http.paths[1].path"
        );
        invalid_field(Some(""), "Exact");
    }

    #[test]
    fn dot_segments_queries_and_whitespace_are_invalid() {
        for path in [
            "/a/../b", "/..", "/a/.", "/./a", "/a?b=1", "/a#top", "/a b", "/a\tb", "/a\u{7f}",
            "/a\nb",
        ] {
            assert_eq!(
                invalid_field(Some(path), "Prefix"),
                "spec.rules[0].http.paths[1].path",
                "{path:?} should be invalid"
            );
        }
    }

    #[test]
    fn what_requests_are_refused_for_is_an_invalid_path_with_the_reason() {
        for (path, reason) in [
            ("/a/%2e%2E/b", "segments"),
            ("/a/..;/b", "segments"),
            ("/a%2F..%2Fadmin", "segments"),
            ("/a\\..\\b", "segments"),
            ("/a%zz", "two hex digits"),
            ("/a%4", "two hex digits"),
            ("/a%00", "NUL"),
            ("/a%0d%0a", "NUL"),
        ] {
            let (field, why) = invalid(Some(path), "Prefix");
            assert_eq!(field, "spec.rules[0].http.paths[1].path", "{path}");
            assert!(why.contains(reason), "{path}: {why}");
        }
    }

    #[test]
    fn dots_inside_segments_are_fine() {
        assert_eq!(rule("/a.b/..c/", "Prefix").key, "/a.b/..c");
        assert_eq!(rule("/.well-known", "Exact").key, "/.well-known");
    }

    /// The defect: `/café` was stored raw while requests arrive as `/caf%C3%A9`, so they
    /// fell through to whatever shorter route there was.
    #[test]
    fn non_ascii_paths_are_stored_as_requests_arrive_without_a_warning() {
        for (written, key) in [
            ("/café", "/caf%C3%A9"),
            ("/caf%C3%A9/", "/caf%C3%A9"),
            ("/ü/x/", "/%C3%BC/x"),
            ("/a\\b", "/a%5Cb"),
            ("/{x}|^", "/%7Bx%7D%7C%5E"),
        ] {
            let rule = rule(written, "Prefix");
            assert_eq!(rule.key, key, "{written}");
            assert_eq!(rule.warning, None, "{written}");
        }
        assert_eq!(rule("/café", "Exact").key, "/caf%C3%A9");
    }

    #[test]
    fn paths_no_request_can_spell_as_written_are_served_canonical_with_a_warning() {
        for (written, path_type, key, canonical) in [
            ("/%61dmin", "Prefix", "/admin", "/admin"),
            ("/%61dmin/", "Exact", "/admin/", "/admin/"),
            ("/a%2fb", "Prefix", "/a%2Fb", "/a%2Fb"),
            ("/caf%c3%a9", "Prefix", "/caf%C3%A9", "/caf%C3%A9"),
            ("/a//b//", "Prefix", "/a/b", "/a/b/"),
            ("//", "Prefix", "/", "/"),
        ] {
            let rule = rule(written, path_type);
            assert_eq!(rule.key, key, "{written}");
            match rule.warning {
                Some(CompileError::PathNotCanonical {
                    field,
                    path,
                    canonical: served,
                }) => {
                    assert_eq!(field, "spec.rules[0].http.paths[1].path");
                    assert_eq!(path, written);
                    assert_eq!(served, canonical, "{written}");
                }
                other => panic!("{written}: expected PathNotCanonical, got {other:?}"),
            }
        }
    }
}
