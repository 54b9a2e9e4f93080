//! Parser messages without the values they quote.
//!
//! serde and YAML messages quote the value they choke on (``invalid type: integer `12345` ``,
//! `invalid value: string "hunter2"`). Where that value may come from a Secret, the message
//! goes out with the quoted parts replaced, keeping what it says about types and positions.

/// What stands in for a quoted value.
const HIDDEN: &str = "(value not shown)";

/// `message` with every `` `…` `` and `"…"` span (backslash escapes honoured inside double
/// quotes) replaced by [`HIDDEN`]. An unclosed quote hides the rest of the message.
pub(crate) fn without_quoted_values(message: &str) -> String {
    let mut out = String::with_capacity(message.len());
    let mut chars = message.chars();
    while let Some(c) = chars.next() {
        match c {
            '`' => {
                for inner in chars.by_ref() {
                    if inner == '`' {
                        break;
                    }
                }
                out.push_str(HIDDEN);
            }
            '"' => {
                while let Some(inner) = chars.next() {
                    match inner {
                        '\\' => {
                            chars.next();
                        }
                        '"' => break,
                        _ => {}
                    }
                }
                out.push_str(HIDDEN);
            }
            other => out.push(other),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoted_values_are_hidden_and_the_rest_kept() {
        assert_eq!(
            without_quoted_values(
                "invalid type: integer `12345`, expected a string at line 3 column 7"
            ),
            "invalid type: integer (value not shown), expected a string at line 3 column 7"
        );
        assert_eq!(
            without_quoted_values(r#"invalid value: string "a\"b`c", expected an integer"#),
            "invalid value: string (value not shown), expected an integer"
        );
        assert_eq!(
            without_quoted_values("did not find expected ',' or ']'"),
            "did not find expected ',' or ']'"
        );
        assert_eq!(
            without_quoted_values("cut \"hunter2"),
            "cut (value not shown)"
        );
    }
}
