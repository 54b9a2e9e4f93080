//! Ingress paths: validation, path types and the keys they are stored under.

use std::fmt;

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
    pub key: String,
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
    if let Err(why) = validate(path) {
        return Err(CompileError::InvalidPath {
            field: format!("{field}.path"),
            path: path.to_owned(),
            why: why.to_owned(),
        });
    }
    let key = match path_match {
        PathMatch::Exact => path.to_owned(),
        PathMatch::Prefix => prefix_key(path),
    };
    Ok(PathRule { path_match, key })
}

/// Rejects what the data plane's normalised request paths can never contain, so such a
/// route would never match, or would match something other than what it says.
fn validate(path: &str) -> Result<(), &'static str> {
    if !path.starts_with('/') {
        return Err("it must start with /");
    }
    if path.contains("//") {
        return Err("it must not contain //");
    }
    if path.contains('?') || path.contains('#') {
        return Err("it must not contain ? or # (a query or fragment is not part of the path)");
    }
    if path.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return Err("it must not contain whitespace or control characters");
    }
    if path
        .split('/')
        .any(|segment| segment == "." || segment == "..")
    {
        return Err("it must not contain . or .. segments");
    }
    Ok(())
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

    fn invalid_field(path: Option<&str>, path_type: &str) -> String {
        match compile_path(path, path_type, FIELD) {
            Err(CompileError::InvalidPath { field, .. }) => field,
            other => panic!("expected InvalidPath, got {other:?}"),
        }
    }

    #[test]
    fn exact_paths_keep_the_path_as_written() {
        assert_eq!(
            rule("/aaa/", "Exact"),
            PathRule {
                path_match: PathMatch::Exact,
                key: "/aaa/".into()
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
                key: "/x".into()
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
    fn dot_segments_double_slashes_queries_and_whitespace_are_invalid() {
        for path in [
            "/a/../b", "/..", "/a/.", "/./a", "/a//b", "/a//", "/a?b=1", "/a#top", "/a b", "/a\tb",
            "/a\u{7f}", "/a\nb",
        ] {
            assert_eq!(
                invalid_field(Some(path), "Prefix"),
                "spec.rules[0].http.paths[1].path",
                "{path:?} should be invalid"
            );
        }
    }

    #[test]
    fn dots_inside_segments_are_fine() {
        assert_eq!(rule("/a.b/..c/", "Prefix").key, "/a.b/..c");
        assert_eq!(rule("/.well-known", "Exact").key, "/.well-known");
    }
}
