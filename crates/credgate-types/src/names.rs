//! Names: the identifiers used in config, tokens, URLs and policy files.

/// Names used as identifiers in config, tokens and URLs.
pub fn is_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
}

/// A character that makes free text read otherwise than it says, or that no reader can see:
/// format characters (Unicode Cf: bidi marks and overrides, zero-width characters, the soft
/// hyphen, tag characters), private-use and unassigned code points, and the line and paragraph
/// separators U+2028/U+2029. An allow-list by category, not a list of known characters.
pub fn is_hidden_char(c: char) -> bool {
    use unicode_properties::{GeneralCategory as G, UnicodeGeneralCategory};
    matches!(
        c.general_category(),
        G::Format | G::PrivateUse | G::Unassigned | G::LineSeparator | G::ParagraphSeparator
    )
}

#[cfg(test)]
mod hidden_tests {
    use super::is_hidden_char;

    #[test]
    fn invisible_and_unassigned_characters_are_hidden_and_text_is_not() {
        for c in [
            '\u{061C}',
            '\u{00AD}',
            '\u{200B}',
            '\u{200E}',
            '\u{202E}',
            '\u{2066}',
            '\u{FEFF}',
            '\u{E0041}',
            '\u{E000}',
            '\u{2028}',
            '\u{2029}',
        ] {
            assert!(is_hidden_char(c), "U+{:04X}", c as u32);
        }
        for c in ['a', '长', '：', ' ', '1', '¥', '\u{3000}'] {
            assert!(!is_hidden_char(c), "U+{:04X}", c as u32);
        }
    }
}
